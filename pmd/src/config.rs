//! The guest application's settings, read from the kernel command line (`key=value`
//! words): what [`crate::testpmd`] and its hostile mode ([`crate::hostile`]) both run by.

use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use crate::hal::Hal;
use crate::mbuf::MbufPool;
use crate::net::features;
use crate::sprintln;
use crate::transport::Kind;

/// Forwarding mode, as testpmd's `--forward-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward every received frame unchanged.
    Io,
    /// Forward every received frame with source and destination MAC swapped.
    MacSwap,
    /// Receive and free.
    RxOnly,
    /// Transmit `pkts` generated UDP frames of `size` bytes; receive nothing.
    TxOnly,
    /// Abuse the device with malformed rings and registers for `rounds` rounds, then
    /// forward normally ([`crate::hostile`]).
    Hostile,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Io => "io",
            Mode::MacSwap => "macswap",
            Mode::RxOnly => "rxonly",
            Mode::TxOnly => "txonly",
            Mode::Hostile => "hostile",
        }
    }
}

impl FromStr for Mode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "io" => Ok(Mode::Io),
            "macswap" => Ok(Mode::MacSwap),
            "rxonly" => Ok(Mode::RxOnly),
            "txonly" => Ok(Mode::TxOnly),
            "hostile" => Ok(Mode::Hostile),
            _ => Err(()),
        }
    }
}

/// Smallest frame txonly builds: Ethernet + IPv4 + UDP headers and the 8-byte sequence
/// number.
pub const MIN_TX_SIZE: u16 = 50;
/// Largest frame txonly builds: a full 1500-byte MTU frame with a VLAN tag's room.
pub const MAX_TX_SIZE: u16 = 1518;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    /// Frames per rx/tx burst (testpmd `--burst`).
    pub burst: u16,
    /// Rx ring size (testpmd `--rxd`).
    pub rxd: u16,
    /// Tx ring size (testpmd `--txd`).
    pub txd: u16,
    /// txonly: frames to send.
    pub pkts: u64,
    /// txonly: frame size in bytes, without FCS.
    pub size: u16,
    /// Mbufs in the pool; 0 picks enough for both rings and a few bursts.
    pub mbufs: u32,
    /// Which interface of the device to drive.
    pub transport: Kind,
    /// Features to ask for (the port negotiates what the device also offers).
    pub features: u64,
    /// `packed=1` was given: asked for packed rings rather than taking them when offered,
    /// so a transport that cannot carry them is worth a word.
    pub packed_asked: bool,
    /// Promiscuous mode (testpmd's default is on). Sent when the device has CTRL_RX.
    pub promisc: bool,
    /// All-multicast mode.
    pub allmulti: bool,
    /// Extra MAC addresses to accept: unicast ones go to the unicast table, multicast ones
    /// to the multicast table (testpmd `mac_addr add` / `mcast_addr add`).
    pub mac_add: Vec<[u8; 6]>,
    /// A new MAC address for the port (testpmd `mac_addr set`).
    pub mac_set: Option<[u8; 6]>,
    /// VLAN IDs to accept (testpmd `rx_vlan add`); empty leaves filtering off.
    pub vlan_filter: Vec<u16>,
    /// Strip VLAN tags on receive (testpmd `vlan set strip on`).
    pub vlan_strip: bool,
    /// Insert this TCI on transmit (testpmd `tx_vlan set`).
    pub vlan_insert: Option<u16>,
    /// Mbuf data room in bytes: the size of each rx buffer after the headroom.
    pub rxbuf: u16,
    /// Mbuf headroom in bytes; must hold the virtio-net header.
    pub headroom: u16,
    /// Re-segment transmitted frames into pieces of this many bytes (0: as they are).
    pub txsplit: u16,
    /// Follow the link state through configuration-change interrupts.
    pub lsc: bool,
    /// Stop after receiving this many frames (for VMMs without the vlab harness).
    pub expect: u64,
    /// Send this control command (class, command, data) and report the answer: a driver
    /// that sends what the device may refuse.
    pub ctrl_probe: Option<(u8, u8, Vec<u8>)>,
    /// Accept these feature bits whether the device offered them or not: a driver that
    /// breaks negotiation.
    pub force_features: u64,
    /// Write this size to queue 0 first and report what the device reads back.
    pub probe_queue_size: Option<u16>,
    /// Log PCI details (function, BARs).
    pub verbose: bool,
    /// Stop after forwarding a frame of this ethertype: the end marker a harness without
    /// vlab's ports (QEMU's) sends after the input.
    pub end_ethertype: Option<u16>,
    /// hostile: seed of the abuse sequence.
    pub seed: u64,
    /// hostile: how many abuses.
    pub rounds: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Io,
            burst: 32,
            rxd: 256,
            txd: 256,
            pkts: 0,
            size: 64,
            mbufs: 0,
            transport: Kind::Modern,
            features: features::ALL,
            packed_asked: false,
            promisc: true,
            allmulti: false,
            mac_add: Vec::new(),
            mac_set: None,
            vlan_filter: Vec::new(),
            vlan_strip: false,
            vlan_insert: None,
            rxbuf: crate::mbuf::DEFAULT_DATA_ROOM,
            headroom: crate::mbuf::DEFAULT_HEADROOM,
            txsplit: 0,
            lsc: false,
            expect: 0,
            ctrl_probe: None,
            force_features: 0,
            probe_queue_size: None,
            verbose: false,
            end_ethertype: None,
            seed: 1,
            rounds: 100,
        }
    }
}

/// Why a command line was refused. Carries the offending word so the message names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError<'a> {
    UnknownKey(&'a str),
    BadValue {
        key: &'a str,
        value: &'a str,
        why: &'static str,
    },
}

impl fmt::Display for ConfigError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownKey(k) => write!(f, "unknown setting '{k}'"),
            ConfigError::BadValue { key, value, why } => {
                write!(f, "bad value '{value}' for '{key}': {why}")
            }
        }
    }
}

fn number<'a, T: FromStr>(key: &'a str, value: &'a str) -> Result<T, ConfigError<'a>> {
    value.parse().map_err(|_| ConfigError::BadValue {
        key,
        value,
        why: "not a number in range",
    })
}

fn flag<'a>(key: &'a str, value: &'a str) -> Result<bool, ConfigError<'a>> {
    match value {
        "1" | "on" | "true" => Ok(true),
        "0" | "off" | "false" => Ok(false),
        _ => Err(ConfigError::BadValue {
            key,
            value,
            why: "use 0 or 1",
        }),
    }
}

/// Bytes from hex digits ("" is no bytes).
fn hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        // Exactly two hex digits (from_str_radix alone would take "+f").
        if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn mac<'a>(key: &'a str, value: &'a str) -> Result<[u8; 6], ConfigError<'a>> {
    parse_mac(value).ok_or(ConfigError::BadValue {
        key,
        value,
        why: "a MAC address is six hex bytes like 02:00:00:00:00:01",
    })
}

fn feature<'a>(
    c: &mut Config,
    key: &'a str,
    value: &'a str,
    bits: u64,
) -> Result<(), ConfigError<'a>> {
    if flag(key, value)? {
        c.features |= bits;
    } else {
        c.features &= !bits;
    }
    Ok(())
}

fn ring<'a>(key: &'a str, value: &'a str) -> Result<u16, ConfigError<'a>> {
    let n: u16 = number(key, value)?;
    if n == 0 || n > 32768 || !n.is_power_of_two() {
        return Err(ConfigError::BadValue {
            key,
            value,
            why: "a ring size is a power of two from 1 to 32768",
        });
    }
    Ok(n)
}

impl Config {
    /// Parses whitespace-separated `key=value` words. Words without `=` (a boot loader's
    /// own flags) are ignored; unknown keys and bad values are errors.
    pub fn parse(cmdline: &str) -> Result<Self, ConfigError<'_>> {
        let mut c = Config::default();
        for word in cmdline.split_ascii_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            match key {
                "mode" => {
                    c.mode = value.parse().map_err(|_| ConfigError::BadValue {
                        key,
                        value,
                        why: "modes are io, macswap, rxonly, txonly, hostile",
                    })?
                }
                "burst" => {
                    c.burst = number(key, value)?;
                    if c.burst == 0 || c.burst > 512 {
                        return Err(ConfigError::BadValue {
                            key,
                            value,
                            why: "a burst is 1 to 512 frames",
                        });
                    }
                }
                "ring" => {
                    c.rxd = ring(key, value)?;
                    c.txd = c.rxd;
                }
                "rxd" => c.rxd = ring(key, value)?,
                "txd" => c.txd = ring(key, value)?,
                "pkts" => c.pkts = number(key, value)?,
                "size" => {
                    c.size = number(key, value)?;
                    if !(MIN_TX_SIZE..=MAX_TX_SIZE).contains(&c.size) {
                        return Err(ConfigError::BadValue {
                            key,
                            value,
                            why: "txonly frames are 50 to 1518 bytes",
                        });
                    }
                }
                "mbufs" => c.mbufs = number(key, value)?,
                "transport" => {
                    c.transport = match value {
                        "modern" => Kind::Modern,
                        "legacy" => Kind::Legacy,
                        _ => {
                            return Err(ConfigError::BadValue {
                                key,
                                value,
                                why: "transports are modern and legacy",
                            })
                        }
                    }
                }
                "mrg" => feature(&mut c, key, value, features::MRG_RXBUF)?,
                "event-idx" => feature(&mut c, key, value, features::RING_EVENT_IDX)?,
                "packed" => {
                    feature(&mut c, key, value, features::RING_PACKED)?;
                    c.packed_asked = c.features & features::RING_PACKED != 0;
                }
                "in-order" => feature(&mut c, key, value, features::IN_ORDER)?,
                "indirect" => feature(&mut c, key, value, features::RING_INDIRECT_DESC)?,
                "ctrl" => feature(
                    &mut c,
                    key,
                    value,
                    features::CTRL_VQ
                        | features::CTRL_RX
                        | features::CTRL_VLAN
                        | features::CTRL_MAC_ADDR,
                )?,
                "mtu" => feature(&mut c, key, value, features::MTU)?,
                "status" => feature(&mut c, key, value, features::STATUS)?,
                "promisc" => c.promisc = flag(key, value)?,
                "allmulti" => c.allmulti = flag(key, value)?,
                "mac-add" => {
                    for m in value.split(',') {
                        c.mac_add.push(mac(key, m)?);
                    }
                }
                "mac-set" => c.mac_set = Some(mac(key, value)?),
                "vlan-filter" => {
                    for v in value.split(',') {
                        let vid: u16 = number(key, v)?;
                        if vid > 4095 {
                            return Err(ConfigError::BadValue {
                                key,
                                value: v,
                                why: "a VLAN ID is 0 to 4095",
                            });
                        }
                        c.vlan_filter.push(vid);
                    }
                }
                "vlan-strip" => c.vlan_strip = flag(key, value)?,
                "vlan-insert" => c.vlan_insert = Some(number(key, value)?),
                "rxbuf" => {
                    c.rxbuf = number(key, value)?;
                    if c.rxbuf < 64 {
                        return Err(ConfigError::BadValue {
                            key,
                            value,
                            why: "an rx buffer holds at least 64 bytes",
                        });
                    }
                }
                "headroom" => c.headroom = number(key, value)?,
                "txsplit" => c.txsplit = number(key, value)?,
                "lsc" => c.lsc = flag(key, value)?,
                "expect" => c.expect = number(key, value)?,
                "ctrl-probe" => {
                    let bad = ConfigError::BadValue {
                        key,
                        value,
                        why: "give CLASS.COMMAND[:HEXDATA], e.g. 3.0 or 1.0:ff000000",
                    };
                    let (cc, data) = value.split_once(':').unwrap_or((value, ""));
                    let (a, b) = cc.split_once('.').ok_or(bad.clone())?;
                    let bytes = hex(data).ok_or(bad.clone())?;
                    c.ctrl_probe = Some((
                        a.parse().map_err(|_| bad.clone())?,
                        b.parse().map_err(|_| bad)?,
                        bytes,
                    ));
                }
                "force-features" => {
                    c.force_features = u64::from_str_radix(value.trim_start_matches("0x"), 16)
                        .map_err(|_| ConfigError::BadValue {
                            key,
                            value,
                            why: "feature bits in hex, e.g. 0x10000000000",
                        })?;
                }
                "probe-queue-size" => c.probe_queue_size = Some(number(key, value)?),
                "seed" => c.seed = number(key, value)?,
                "rounds" => c.rounds = number(key, value)?,
                "verbose" => c.verbose = flag(key, value)?,
                "end-ethertype" => {
                    c.end_ethertype = Some(
                        u16::from_str_radix(value.trim_start_matches("0x"), 16).map_err(|_| {
                            ConfigError::BadValue {
                                key,
                                value,
                                why: "an ethertype in hex, e.g. 88b5",
                            }
                        })?,
                    )
                }
                _ => return Err(ConfigError::UnknownKey(key)),
            }
        }
        Ok(c)
    }

    /// The line to log when the port cannot use what was asked of its rings: packed rings
    /// asked for explicitly on the legacy interface, which has no VERSION_1.
    pub fn ring_note(&self) -> Option<&'static str> {
        (self.packed_asked && self.transport == Kind::Legacy)
            .then_some("packed rings need VERSION_1; the legacy transport uses split rings")
    }

    /// Mbufs to allocate: what was asked, or both rings plus room for bursts in flight,
    /// counting the segments a split frame takes.
    pub fn pool_size(&self) -> u32 {
        if self.mbufs != 0 {
            return self.mbufs;
        }
        let segs = if self.txsplit > 0 {
            u32::from(MAX_TX_SIZE).div_ceil(u32::from(self.txsplit)) + 1
        } else {
            1
        };
        u32::from(self.rxd) + (u32::from(self.txd) + 4 * u32::from(self.burst)) * segs + 64
    }

    /// The mbuf pool this configuration asks for; `None` (said on the console) when DMA
    /// memory is short.
    pub fn mbuf_pool<H: Hal>(&self, hal: &H) -> Option<MbufPool> {
        match MbufPool::new(hal, self.pool_size(), self.headroom, self.rxbuf) {
            Ok(p) => Some(p),
            Err(e) => {
                sprintln!(hal, "vlab-pmd: mbuf pool: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_rings_and_in_order_are_asked_for_by_default_and_can_be_turned_off() {
        let c = Config::parse("mode=io").unwrap();
        let both = features::RING_PACKED | features::IN_ORDER;
        assert_eq!(c.features & both, both);
        assert!(!c.packed_asked);
        let c = Config::parse("packed=0 in-order=0").unwrap();
        assert_eq!(c.features & both, 0);
        let c = Config::parse("packed=0 in-order=1").unwrap();
        assert_eq!(c.features & both, features::IN_ORDER);
        assert!(Config::parse("packed=2").is_err());
        assert!(Config::parse("in_order=1").is_err(), "kebab-case only");
    }

    #[test]
    fn only_packed_rings_asked_for_on_legacy_are_worth_a_line() {
        let note = |s| Config::parse(s).unwrap().ring_note();
        assert_eq!(
            note("transport=legacy packed=1"),
            Some("packed rings need VERSION_1; the legacy transport uses split rings")
        );
        assert_eq!(
            note("transport=legacy"),
            None,
            "the default: silently split"
        );
        assert_eq!(note("transport=legacy packed=1 packed=0"), None);
        assert_eq!(note("transport=modern packed=1"), None);
    }
}
