//! Receive-side scaling and hash reports (virtio 1.2, 5.1.6.4.3 and 5.1.6.5.7): what the
//! device can do (read from its configuration), what the application asks for, the
//! configuration this driver sends for it, and the bytes of the two commands that carry
//! it (VIRTIO_NET_CTRL_MQ_RSS_CONFIG and VIRTIO_NET_CTRL_MQ_HASH_CONFIG).
//!
//! The indirection table names receive queues by their number k (receiveq k + 1, the
//! device's queue 2k), as the spec, Linux and DPDK do.

use alloc::vec::Vec;

/// Hash types (`VIRTIO_NET_HASH_TYPE_*`): the bits of `hash_types` and
/// `supported_hash_types`.
pub mod hash_type {
    pub const IPV4: u32 = 1 << 0;
    pub const TCPV4: u32 = 1 << 1;
    pub const UDPV4: u32 = 1 << 2;
    pub const IPV6: u32 = 1 << 3;
    pub const TCPV6: u32 = 1 << 4;
    pub const UDPV6: u32 = 1 << 5;
    pub const IP_EX: u32 = 1 << 6;
    pub const TCP_EX: u32 = 1 << 7;
    pub const UDP_EX: u32 = 1 << 8;
    /// Every type the spec defines.
    pub const ALL: u32 = 0x1ff;

    /// The application's names for them (testpmd's, with `-ex` for the IPv6 extension
    /// header variants), in bit order.
    pub const NAMES: [(u32, &str); 9] = [
        (IPV4, "ipv4"),
        (TCPV4, "tcp4"),
        (UDPV4, "udp4"),
        (IPV6, "ipv6"),
        (TCPV6, "tcp6"),
        (UDPV6, "udp6"),
        (IP_EX, "ipv6-ex"),
        (TCP_EX, "tcp6-ex"),
        (UDP_EX, "udp6-ex"),
    ];
}

/// What a received frame's hash was computed over (`VIRTIO_NET_HASH_REPORT_*`, the
/// `hash_report` field of the v1 header with hash): 0 is none, 1 to 9 follow
/// [`hash_type::NAMES`] in order.
pub mod report {
    pub const NONE: u16 = 0;
    pub const IPV4: u16 = 1;
    pub const TCPV4: u16 = 2;
    pub const UDPV4: u16 = 3;
    pub const IPV6: u16 = 4;
    pub const TCPV6: u16 = 5;
    pub const UDPV6: u16 = 6;
    pub const IPV6_EX: u16 = 7;
    pub const TCPV6_EX: u16 = 8;
    pub const UDPV6_EX: u16 = 9;
}

/// Length of the key this driver uses (what every device takes: 5.1.4.2 has
/// `rss_max_key_size` at least 40; DPDK's VIRTIO_NET_RSS_KEY_SIZE).
pub const KEY_LEN: usize = 40;

/// The key used when the application gives none: the Toeplitz key of Microsoft's RSS
/// verification suite, DPDK's default for virtio (`rss_intel_key`).
pub const DEFAULT_KEY: [u8; KEY_LEN] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// Length of the default indirection table when the device takes it (DPDK's
/// VIRTIO_NET_RSS_RETA_SIZE; 5.1.4.2 has `rss_max_indirection_table_length` at least 128).
pub const DEFAULT_TABLE_LEN: usize = 128;

/// Longest indirection table this driver sends (one control command's data holds it).
pub const MAX_TABLE_LEN: usize = 512;

/// What the device can do, from its configuration (valid with VIRTIO_NET_F_RSS or
/// VIRTIO_NET_F_HASH_REPORT).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    /// `rss_max_key_size`.
    pub max_key: u8,
    /// `rss_max_indirection_table_length` (meaningful with VIRTIO_NET_F_RSS only).
    pub max_table: u16,
    /// `supported_hash_types`.
    pub hash_types: u32,
}

/// What the application asks for; `None` takes the driver's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// Hash types to enable. Default: every type the device supports.
    pub hash_types: Option<u32>,
    /// Toeplitz key. Default: [`DEFAULT_KEY`].
    pub key: Option<Vec<u8>>,
    /// Indirection table (receive queue numbers), a power of two long. Default: the
    /// receive queues round robin, [`DEFAULT_TABLE_LEN`] entries (fewer when the device
    /// takes fewer).
    pub table: Option<Vec<u16>>,
    /// Receive queue for frames no enabled hash type covers. Default: 0.
    pub unclassified: Option<u16>,
}

impl Request {
    /// Whether anything that only RSS (not a hash report alone) can do was asked for.
    pub fn steers(&self) -> bool {
        self.table.is_some() || self.unclassified.is_some()
    }

    /// Whether anything at all was asked for.
    pub fn is_empty(&self) -> bool {
        *self == Request::default()
    }
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("hash types {asked:#x} include {missing:#x}, which the device does not support (it supports {supported:#x})", missing = .asked & !.supported)]
    HashTypes { asked: u32, supported: u32 },
    #[error("a {len}-byte hash key is longer than the device's rss_max_key_size {max}")]
    KeyTooLong { len: usize, max: u8 },
    #[error("an empty hash key")]
    EmptyKey,
    #[error("an indirection table of {0} entries: its length must be a power of two from 1 to {MAX_TABLE_LEN}")]
    TableLength(usize),
    #[error("an indirection table of {len} entries is longer than the device's rss_max_indirection_table_length {max}")]
    TableTooLong { len: usize, max: u16 },
    #[error("receive queue {queue} in the RSS configuration, but only {queues} receive queues are set up")]
    NoSuchQueue { queue: u16, queues: u16 },
    #[error("the device's rss_max_indirection_table_length is 0: no indirection table fits")]
    DeviceTableEmpty,
}

/// The default indirection table: `queues` receive queues round robin over `len` entries.
pub fn default_table(len: usize, queues: u16) -> Vec<u16> {
    (0..len)
        .map(|i| (i % usize::from(queues.max(1))) as u16)
        .collect()
}

/// The hash types and key a request comes to on a device with `caps`, checked.
fn hash_and_key(req: &Request, caps: &Caps) -> Result<(u32, Vec<u8>), Error> {
    let supported = caps.hash_types & hash_type::ALL;
    let hash_types = req.hash_types.unwrap_or(supported);
    if hash_types & !supported != 0 {
        return Err(Error::HashTypes {
            asked: hash_types,
            supported,
        });
    }
    let key = req.key.clone().unwrap_or_else(|| DEFAULT_KEY.to_vec());
    if key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if key.len() > usize::from(caps.max_key) {
        return Err(Error::KeyTooLong {
            len: key.len(),
            max: caps.max_key,
        });
    }
    Ok((hash_types, key))
}

/// `struct virtio_net_rss_config`, resolved: what VIRTIO_NET_CTRL_MQ_RSS_CONFIG sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RssConfig {
    pub hash_types: u32,
    /// Receive queue numbers; a power of two long (`indirection_table_mask` + 1).
    pub table: Vec<u16>,
    pub unclassified: u16,
    /// Transmit queues the driver uses (`max_tx_vq`): the queue pairs set up.
    pub max_tx_vq: u16,
    pub key: Vec<u8>,
}

impl RssConfig {
    /// The configuration `req` comes to with `queues` queue pairs on a device with `caps`.
    pub fn resolve(req: &Request, caps: &Caps, queues: u16) -> Result<Self, Error> {
        let (hash_types, key) = hash_and_key(req, caps)?;
        let table = match &req.table {
            Some(t) => {
                if t.is_empty() || t.len() > MAX_TABLE_LEN || !t.len().is_power_of_two() {
                    return Err(Error::TableLength(t.len()));
                }
                if t.len() > usize::from(caps.max_table) {
                    return Err(Error::TableTooLong {
                        len: t.len(),
                        max: caps.max_table,
                    });
                }
                t.clone()
            }
            None => {
                // The largest power of two the device takes, up to the default length.
                let max = usize::from(caps.max_table).min(DEFAULT_TABLE_LEN);
                if max == 0 {
                    return Err(Error::DeviceTableEmpty);
                }
                let len = 1 << max.ilog2();
                default_table(len, queues)
            }
        };
        let unclassified = req.unclassified.unwrap_or(0);
        for &queue in table.iter().chain([&unclassified]) {
            if queue >= queues {
                return Err(Error::NoSuchQueue { queue, queues });
            }
        }
        Ok(Self {
            hash_types,
            table,
            unclassified,
            max_tx_vq: queues,
            key,
        })
    }

    /// The command data, little endian: le32 hash_types, le16 indirection_table_mask,
    /// le16 unclassified_queue, le16 indirection_table[mask + 1], le16 max_tx_vq,
    /// u8 hash_key_length, u8 hash_key_data[].
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(13 + 2 * self.table.len() + self.key.len());
        v.extend_from_slice(&self.hash_types.to_le_bytes());
        v.extend_from_slice(&((self.table.len() - 1) as u16).to_le_bytes());
        v.extend_from_slice(&self.unclassified.to_le_bytes());
        for q in &self.table {
            v.extend_from_slice(&q.to_le_bytes());
        }
        v.extend_from_slice(&self.max_tx_vq.to_le_bytes());
        v.push(self.key.len() as u8);
        v.extend_from_slice(&self.key);
        v
    }
}

/// `struct virtio_net_hash_config`, resolved: what VIRTIO_NET_CTRL_MQ_HASH_CONFIG sends to
/// a device with VIRTIO_NET_F_HASH_REPORT and without VIRTIO_NET_F_RSS (5.1.6.5.6.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashConfig {
    pub hash_types: u32,
    pub key: Vec<u8>,
}

impl HashConfig {
    /// The configuration `req` comes to on a device with `caps`; a request that steers
    /// (a table, an unclassified queue) needs RSS, checked by the caller.
    pub fn resolve(req: &Request, caps: &Caps) -> Result<Self, Error> {
        let (hash_types, key) = hash_and_key(req, caps)?;
        Ok(Self { hash_types, key })
    }

    /// The command data, little endian: le32 hash_types, le16 reserved[4] (zero),
    /// u8 hash_key_length, u8 hash_key_data[].
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(13 + self.key.len());
        v.extend_from_slice(&self.hash_types.to_le_bytes());
        v.extend_from_slice(&[0; 8]);
        v.push(self.key.len() as u8);
        v.extend_from_slice(&self.key);
        v
    }
}

/// What the port configured for hashing, for the application to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Steering {
    /// VIRTIO_NET_CTRL_MQ_RSS_CONFIG was sent.
    Rss(RssConfig),
    /// VIRTIO_NET_CTRL_MQ_HASH_CONFIG was sent: hashes reported, queues not chosen by them.
    HashOnly(HashConfig),
}

impl Steering {
    pub fn hash_types(&self) -> u32 {
        match self {
            Steering::Rss(c) => c.hash_types,
            Steering::HashOnly(c) => c.hash_types,
        }
    }

    pub fn key(&self) -> &[u8] {
        match self {
            Steering::Rss(c) => &c.key,
            Steering::HashOnly(c) => &c.key,
        }
    }
}

/// Writes the names of `types` as a comma list ("none" for no type).
pub fn write_types(f: &mut impl core::fmt::Write, types: u32) -> core::fmt::Result {
    let mut first = true;
    for (bit, name) in hash_type::NAMES {
        if types & bit != 0 {
            if !first {
                f.write_char(',')?;
            }
            f.write_str(name)?;
            first = false;
        }
    }
    if first {
        f.write_str("none")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::{String, ToString};
    use alloc::vec;

    const CAPS: Caps = Caps {
        max_key: 40,
        max_table: 128,
        hash_types: hash_type::ALL,
    };

    #[test]
    fn the_rss_config_command_is_the_spec_struct_byte_by_byte() {
        let c = RssConfig {
            hash_types: hash_type::IPV4 | hash_type::TCPV4 | hash_type::UDP_EX,
            table: vec![0, 1, 2, 0x0102],
            unclassified: 3,
            max_tx_vq: 4,
            key: vec![0xaa, 0xbb, 0xcc],
        };
        let want: &[u8] = &[
            0x03, 0x01, 0x00, 0x00, // hash_types 0x103
            0x03, 0x00, // indirection_table_mask: 4 entries
            0x03, 0x00, // unclassified_queue
            0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x02, 0x01, // indirection_table
            0x04, 0x00, // max_tx_vq
            0x03, // hash_key_length
            0xaa, 0xbb, 0xcc, // hash_key_data
        ];
        assert_eq!(c.encode(), want);
    }

    #[test]
    fn the_default_rss_config_is_dpdks_key_and_a_round_robin_table() {
        let c = RssConfig::resolve(&Request::default(), &CAPS, 3).unwrap();
        let bytes = c.encode();
        assert_eq!(bytes.len(), 4 + 2 + 2 + 2 * 128 + 2 + 1 + 40);
        assert_eq!(bytes[..8], [0xff, 0x01, 0, 0, 0x7f, 0, 0, 0]);
        let table: Vec<u16> = bytes[8..8 + 256]
            .chunks(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(table[..7], [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(table[127], 127 % 3);
        assert_eq!(bytes[264..267], [3, 0, 40], "max_tx_vq 3, a 40-byte key");
        assert_eq!(bytes[267..], DEFAULT_KEY);
        assert_eq!(DEFAULT_KEY[..4], [0x6d, 0x5a, 0x56, 0xda]);
    }

    #[test]
    fn the_default_table_fits_a_device_that_takes_fewer_entries() {
        for (max, len) in [(128, 128), (512, 128), (100, 64), (1, 1)] {
            let caps = Caps {
                max_table: max,
                ..CAPS
            };
            let c = RssConfig::resolve(&Request::default(), &caps, 4).unwrap();
            assert_eq!(c.table.len(), len, "device max {max}");
            assert_eq!(c.table, default_table(len, 4));
        }
        let none = Caps {
            max_table: 0,
            ..CAPS
        };
        assert_eq!(
            RssConfig::resolve(&Request::default(), &none, 1),
            Err(Error::DeviceTableEmpty)
        );
        assert_eq!(default_table(8, 1), [0; 8]);
        assert_eq!(default_table(4, 2), [0, 1, 0, 1]);
        assert_eq!(default_table(8, 4), [0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn a_request_the_device_or_the_queues_cannot_take_is_refused_with_its_numbers() {
        let r = |req: Request, queues| RssConfig::resolve(&req, &CAPS, queues);
        let table = |t: &[u16]| Request {
            table: Some(t.to_vec()),
            ..Request::default()
        };
        assert_eq!(
            r(table(&[0, 1, 2]), 4),
            Err(Error::TableLength(3)),
            "not a power of two"
        );
        assert_eq!(
            r(table(&[0; 256]), 4),
            Err(Error::TableTooLong { len: 256, max: 128 })
        );
        assert_eq!(
            r(table(&[0, 4]), 4),
            Err(Error::NoSuchQueue {
                queue: 4,
                queues: 4
            })
        );
        let unclassified = Request {
            unclassified: Some(2),
            ..Request::default()
        };
        assert_eq!(
            r(unclassified, 2),
            Err(Error::NoSuchQueue {
                queue: 2,
                queues: 2
            })
        );
        let long_key = Request {
            key: Some(vec![1; 41]),
            ..Request::default()
        };
        assert_eq!(r(long_key, 1), Err(Error::KeyTooLong { len: 41, max: 40 }));
        let caps = Caps {
            hash_types: hash_type::IPV4 | hash_type::IPV6,
            ..CAPS
        };
        let tcp = Request {
            hash_types: Some(hash_type::IPV4 | hash_type::TCPV4),
            ..Request::default()
        };
        let e = RssConfig::resolve(&tcp, &caps, 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "hash types 0x3 include 0x2, which the device does not support (it supports 0x9)"
        );
        // The default takes what the device supports, and nothing it does not know.
        let odd = Caps {
            hash_types: 0xffff_ffff,
            ..CAPS
        };
        let c = RssConfig::resolve(&Request::default(), &odd, 1).unwrap();
        assert_eq!(c.hash_types, hash_type::ALL);
    }

    #[test]
    fn the_hash_config_command_is_the_spec_struct_byte_by_byte() {
        let req = Request {
            hash_types: Some(hash_type::TCPV6 | hash_type::IPV6),
            key: Some(vec![1, 2, 3, 4]),
            ..Request::default()
        };
        let c = HashConfig::resolve(&req, &CAPS).unwrap();
        assert_eq!(
            c.encode(),
            [0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]
        );
    }

    #[test]
    fn hash_types_are_named_in_bit_order() {
        let mut s = String::new();
        write_types(
            &mut s,
            hash_type::UDP_EX | hash_type::IPV4 | hash_type::TCPV6,
        )
        .unwrap();
        assert_eq!(s, "ipv4,tcp6,udp6-ex");
        s.clear();
        write_types(&mut s, 0).unwrap();
        assert_eq!(s, "none");
        let bits: Vec<u32> = hash_type::NAMES.iter().map(|(b, _)| *b).collect();
        assert_eq!(bits, (0..9).map(|i| 1 << i).collect::<Vec<_>>());
    }
}
