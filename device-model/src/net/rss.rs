//! Receive-side scaling (VIRTIO_NET_F_RSS, VIRTIO_NET_F_HASH_REPORT; virtio 1.2 section
//! 5.1.6.4.3 and 5.1.6.5.7): the Toeplitz hash over a frame's addresses and ports, which
//! fields the configured hash types select, and the queue the indirection table gives.
//!
//! Everything here is a pure function of the frame and the configuration, so steering is
//! deterministic, and the hash is checked against the verification vectors every NIC
//! vendor tests with (Microsoft's "Verifying the RSS Hash Calculation").

use std::net::{Ipv4Addr, Ipv6Addr};

/// Hash types the driver can enable (`VIRTIO_NET_RSS_HASH_TYPE_*`).
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
    /// Every type this device supports (what it reports in `supported_hash_types`).
    pub const ALL: u32 = 0x1ff;
}

/// What the hash was computed over (`VIRTIO_NET_HASH_REPORT_*`, the v1 header's
/// `hash_report`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Report {
    None = 0,
    Ipv4 = 1,
    Tcpv4 = 2,
    Udpv4 = 3,
    Ipv6 = 4,
    Tcpv6 = 5,
    Udpv6 = 6,
    Ipv6Ex = 7,
    Tcpv6Ex = 8,
    Udpv6Ex = 9,
}

/// Largest Toeplitz key the device accepts (`rss_max_key_size`).
pub const MAX_KEY: usize = 40;
/// Largest indirection table (`rss_max_indirection_table_length`).
pub const MAX_TABLE: usize = 128;

/// The Toeplitz hash of `input` under `key`: for every set bit of the input, the 32 key
/// bits starting at that bit position are XORed into the result. Key bits past the end of
/// the key read as zero.
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let key_bit = |i: usize| -> u32 {
        key.get(i / 8)
            .map_or(0, |b| u32::from((b >> (7 - i % 8)) & 1))
    };
    // The 32-bit window of the key at bit 0, slid one bit per input bit.
    let mut window = (0..32).fold(0u32, |w, i| (w << 1) | key_bit(i));
    let mut hash = 0;
    for (n, byte) in input.iter().enumerate() {
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                hash ^= window;
            }
            window = (window << 1) | key_bit(n * 8 + bit + 32);
        }
    }
    hash
}

/// The fields a hash is taken over, as they appear on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tuple {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ports: Option<(u16, u16)>,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        ports: Option<(u16, u16)>,
    },
}

impl Tuple {
    /// The hash input: source address, destination address, then source and destination
    /// port when the type covers them, all in network order.
    pub fn bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(36);
        let ports = match self {
            Tuple::V4 { src, dst, ports } => {
                v.extend(src.octets());
                v.extend(dst.octets());
                ports
            }
            Tuple::V6 { src, dst, ports } => {
                v.extend(src.octets());
                v.extend(dst.octets());
                ports
            }
        };
        if let Some((s, d)) = ports {
            v.extend(s.to_be_bytes());
            v.extend(d.to_be_bytes());
        }
        v
    }
}

/// What a frame offers for hashing, parsed once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Parsed {
    v4: Option<(Ipv4Addr, Ipv4Addr)>,
    v6: Option<(Ipv6Addr, Ipv6Addr)>,
    /// IPv6 addresses with the home address option and a type 2 routing header applied.
    v6_ex: Option<(Ipv6Addr, Ipv6Addr)>,
    tcp: Option<(u16, u16)>,
    udp: Option<(u16, u16)>,
}

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

fn parse(frame: &[u8]) -> Parsed {
    let mut p = Parsed::default();
    let mut at = 12;
    let mut ethertype = be16(frame, at);
    // One or two VLAN tags (802.1Q, 802.1ad) before the payload's ethertype.
    for _ in 0..2 {
        if matches!(ethertype, Some(0x8100 | 0x88a8)) {
            at += 4;
            ethertype = be16(frame, at);
        }
    }
    let l3 = at + 2;
    match ethertype {
        Some(0x0800) => parse_v4(frame, l3, &mut p),
        Some(0x86dd) => parse_v6(frame, l3, &mut p),
        _ => {}
    }
    p
}

fn parse_v4(frame: &[u8], l3: usize, p: &mut Parsed) {
    let Some(h) = frame.get(l3..l3 + 20) else {
        return;
    };
    let ihl = usize::from(h[0] & 0xf) * 4;
    if h[0] >> 4 != 4 || ihl < 20 {
        return;
    }
    p.v4 = Some((
        Ipv4Addr::new(h[12], h[13], h[14], h[15]),
        Ipv4Addr::new(h[16], h[17], h[18], h[19]),
    ));
    // A fragment (more fragments, or an offset) carries no ports to hash, or not the
    // first fragment's: hash it by its addresses only.
    let frag = u16::from_be_bytes([h[6], h[7]]);
    if frag & 0x3fff != 0 {
        return;
    }
    ports(frame, l3 + ihl, h[9], p);
}

fn parse_v6(frame: &[u8], l3: usize, p: &mut Parsed) {
    let Some(h) = frame.get(l3..l3 + 40) else {
        return;
    };
    if h[0] >> 4 != 6 {
        return;
    }
    let addr = |b: &[u8]| Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap_or([0; 16]));
    let (src, dst) = (addr(&h[8..24]), addr(&h[24..40]));
    p.v6 = Some((src, dst));
    let (mut home, mut routed) = (src, dst);
    let mut next = h[6];
    let mut at = l3 + 40;
    // Walk the extension headers (at most a handful, as NICs do) to the transport.
    for _ in 0..8 {
        match next {
            // Hop-by-hop, routing, destination options: (next, length in 8 bytes - 1).
            0 | 43 | 60 => {
                let (Some(&n), Some(&len)) = (frame.get(at), frame.get(at + 1)) else {
                    return;
                };
                let end = at + (usize::from(len) + 1) * 8;
                let Some(ext) = frame.get(at..end) else {
                    return;
                };
                if next == 43 && ext.get(2) == Some(&2) && ext.len() >= 24 {
                    // Routing header type 2: the home address of the destination.
                    routed = addr(&ext[8..24]);
                }
                if next == 60 {
                    home = home_address(ext).unwrap_or(home);
                }
                next = n;
                at = end;
            }
            // A fragment header: no ports to hash.
            44 => {
                p.v6_ex = Some((home, routed));
                return;
            }
            _ => break,
        }
    }
    p.v6_ex = Some((home, routed));
    ports(frame, at, next, p);
}

/// The home address option (type 201) of a destination options header, if present.
fn home_address(ext: &[u8]) -> Option<Ipv6Addr> {
    let mut at = 2;
    while at < ext.len() {
        match ext[at] {
            0 => at += 1, // Pad1
            201 if ext.get(at + 1) == Some(&16) => {
                let b: [u8; 16] = ext.get(at + 2..at + 18)?.try_into().ok()?;
                return Some(Ipv6Addr::from(b));
            }
            _ => at += 2 + usize::from(*ext.get(at + 1)?),
        }
    }
    None
}

fn ports(frame: &[u8], l4: usize, proto: u8, p: &mut Parsed) {
    let (Some(s), Some(d)) = (be16(frame, l4), be16(frame, l4 + 2)) else {
        return;
    };
    match proto {
        IPPROTO_TCP => p.tcp = Some((s, d)),
        IPPROTO_UDP => p.udp = Some((s, d)),
        _ => {}
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Which tuple the enabled `types` select for `frame`, and what the hash will report
/// (section 5.1.6.4.3.1: TCP before UDP before addresses only, extension-header variants
/// first for IPv6).
pub fn select(frame: &[u8], types: u32) -> Option<(Tuple, Report)> {
    use hash_type as t;
    let p = parse(frame);
    let on = |bit: u32| types & bit != 0;
    if let Some((src, dst)) = p.v4 {
        let v4 = |ports| Tuple::V4 { src, dst, ports };
        return match (p.tcp, p.udp) {
            (Some(tcp), _) if on(t::TCPV4) => Some((v4(Some(tcp)), Report::Tcpv4)),
            (_, Some(udp)) if on(t::UDPV4) => Some((v4(Some(udp)), Report::Udpv4)),
            _ if on(t::IPV4) => Some((v4(None), Report::Ipv4)),
            _ => None,
        };
    }
    let (src, dst) = p.v6?;
    let (home, routed) = p.v6_ex.unwrap_or((src, dst));
    let v6 = |src, dst, ports| Tuple::V6 { src, dst, ports };
    match (p.tcp, p.udp) {
        (Some(tcp), _) if on(t::TCP_EX) => Some((v6(home, routed, Some(tcp)), Report::Tcpv6Ex)),
        (Some(tcp), _) if on(t::TCPV6) => Some((v6(src, dst, Some(tcp)), Report::Tcpv6)),
        (_, Some(udp)) if on(t::UDP_EX) => Some((v6(home, routed, Some(udp)), Report::Udpv6Ex)),
        (_, Some(udp)) if on(t::UDPV6) => Some((v6(src, dst, Some(udp)), Report::Udpv6)),
        _ if on(t::IP_EX) => Some((v6(home, routed, None), Report::Ipv6Ex)),
        _ if on(t::IPV6) => Some((v6(src, dst, None), Report::Ipv6)),
        _ => None,
    }
}

/// The hash of `frame` for the enabled `types` under `key`, and what it covers; `None` when
/// no enabled type covers the frame.
pub fn hash(types: u32, key: &[u8], frame: &[u8]) -> Option<(u32, Report)> {
    let (tuple, report) = select(frame, types)?;
    Some((toeplitz(key, &tuple.bytes()), report))
}

/// The driver's RSS configuration (VIRTIO_NET_CTRL_MQ_RSS_CONFIG).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RssConfig {
    pub hash_types: u32,
    /// Receive queue indexes (of queue pairs); its length is a power of two.
    pub table: Vec<u16>,
    /// Where frames no enabled type covers go.
    pub unclassified: u16,
    /// Queue pairs the driver uses from now on (`max_tx_vq`): the command enables them.
    pub max_tx_vq: u16,
    pub key: Vec<u8>,
}

/// The driver's hash configuration without RSS (VIRTIO_NET_CTRL_MQ_HASH_CONFIG): what the
/// hash covers and its key, for the hash report only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashConfig {
    pub hash_types: u32,
    pub key: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("the configuration is {0} bytes, shorter than its fields")]
    Short(usize),
    #[error("{0} bytes after the configuration's last field")]
    Trailing(usize),
    #[error("indirection table length {0} is not a power of two of at most {MAX_TABLE}")]
    TableLength(usize),
    #[error("hash key of {0} bytes: the device takes at most {MAX_KEY}")]
    KeyLength(usize),
    #[error("hash types {0:#x} need a key, and the key is empty")]
    EmptyKey(u32),
    #[error("hash types {0:#x} include ones the device does not support")]
    HashTypes(u32),
    #[error("max_tx_vq {max_tx_vq}: the driver can use 1 to {pairs} queue pairs")]
    MaxTxVq { max_tx_vq: u16, pairs: u16 },
    #[error("queue {queue} in the configuration, but only {pairs} queue pairs")]
    Queue { queue: u16, pairs: u16 },
}

/// Little-endian fields of a command's data, each read checked.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn bytes(&self, at: usize, n: usize) -> Result<&[u8], Error> {
        at.checked_add(n)
            .and_then(|end| self.0.get(at..end))
            .ok_or(Error::Short(self.0.len()))
    }
    fn u8(&self, at: usize) -> Result<u8, Error> {
        Ok(self.bytes(at, 1)?[0])
    }
    fn u16(&self, at: usize) -> Result<u16, Error> {
        let b = self.bytes(at, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&self, at: usize) -> Result<u32, Error> {
        let b = self.bytes(at, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// The key (`hash_key_length` at `at`, the key after it), which must end the data.
    fn key(&self, at: usize, types: u32) -> Result<Vec<u8>, Error> {
        let len = usize::from(self.u8(at)?);
        if len > MAX_KEY {
            return Err(Error::KeyLength(len));
        }
        let key = self.bytes(at + 1, len)?.to_vec();
        let end = at + 1 + len;
        if self.0.len() > end {
            return Err(Error::Trailing(self.0.len() - end));
        }
        if key.is_empty() && types != 0 {
            return Err(Error::EmptyKey(types));
        }
        Ok(key)
    }
}

fn check_types(types: u32) -> Result<u32, Error> {
    if types & !hash_type::ALL != 0 {
        return Err(Error::HashTypes(types));
    }
    Ok(types)
}

impl RssConfig {
    /// Parses `struct virtio_net_rss_config` (little endian): hash_types u32,
    /// indirection_table_mask u16, unclassified_queue u16, indirection_table[mask + 1] u16,
    /// max_tx_vq u16, hash_key_length u8, hash_key_data, and nothing after. `max_tx_vq`
    /// must be 1 to `pairs` (the pairs the driver can use), and every queue named must be
    /// below `max_tx_vq` (the pairs it enables).
    pub fn parse(data: &[u8], pairs: u16) -> Result<Self, Error> {
        let f = Fields(data);
        let hash_types = check_types(f.u32(0)?)?;
        let len = usize::from(f.u16(4)?) + 1;
        if !len.is_power_of_two() || len > MAX_TABLE {
            return Err(Error::TableLength(len));
        }
        let unclassified = f.u16(6)?;
        let table = (0..len)
            .map(|i| f.u16(8 + 2 * i))
            .collect::<Result<Vec<_>, _>>()?;
        let at = 8 + 2 * len;
        let max_tx_vq = f.u16(at)?;
        let key = f.key(at + 2, hash_types)?;
        if max_tx_vq == 0 || max_tx_vq > pairs {
            return Err(Error::MaxTxVq { max_tx_vq, pairs });
        }
        for &queue in table.iter().chain([&unclassified]) {
            if queue >= max_tx_vq {
                return Err(Error::Queue {
                    queue,
                    pairs: max_tx_vq,
                });
            }
        }
        Ok(Self {
            hash_types,
            table,
            unclassified,
            max_tx_vq,
            key,
        })
    }

    /// The receive queue pair for `frame`, its hash and what the hash covers.
    pub fn steer(&self, frame: &[u8]) -> (u16, u32, Report) {
        match hash(self.hash_types, &self.key, frame) {
            Some((hash, report)) => {
                let slot = hash as usize & (self.table.len() - 1);
                (self.table[slot], hash, report)
            }
            None => (self.unclassified, 0, Report::None),
        }
    }

    /// The highest queue pair the configuration names.
    pub fn highest_queue(&self) -> u16 {
        self.table
            .iter()
            .copied()
            .chain([self.unclassified])
            .max()
            .unwrap_or(0)
    }
}

impl HashConfig {
    /// Parses `struct virtio_net_hash_config` (little endian): hash_types u32, reserved
    /// `u16[4]` (ignored), hash_key_length u8, hash_key_data, and nothing after.
    pub fn parse(data: &[u8]) -> Result<Self, Error> {
        let f = Fields(data);
        let hash_types = check_types(f.u32(0)?)?;
        let key = f.key(12, hash_types)?;
        Ok(Self { hash_types, key })
    }

    /// The hash of `frame` and what it covers (0 and [`Report::None`] when no enabled
    /// type covers it).
    pub fn hash(&self, frame: &[u8]) -> (u32, Report) {
        hash(self.hash_types, &self.key, frame).unwrap_or((0, Report::None))
    }
}

#[cfg(test)]
mod tests;
