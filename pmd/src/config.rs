//! The guest application's settings, read from the kernel command line (`key=value`
//! words): what [`crate::testpmd`] and its hostile mode ([`crate::hostile`]) both run by.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use crate::hal::Hal;
use crate::mbuf::MbufPool;
use crate::net::rss::{self, hash_type};
use crate::net::{features, irq, MAX_QUEUE_PAIRS};
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

/// Where a frame received on a port goes, as testpmd's `--port-topology`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Ports in pairs: 0 <-> 1, 2 <-> 3; with an odd number the last forwards to itself.
    Paired,
    /// Each port to the next, the last to the first: 0 -> 1 -> ... -> 0.
    Chained,
    /// Each port to itself.
    Loop,
}

impl Topology {
    pub fn name(self) -> &'static str {
        match self {
            Topology::Paired => "paired",
            Topology::Chained => "chained",
            Topology::Loop => "loop",
        }
    }

    /// The port a frame received on port `rx` of `ports` leaves by (DPDK's
    /// `fwd_topology_tx_port_get`); one port forwards to itself whatever the topology.
    pub fn tx_port(self, rx: u8, ports: u8) -> u8 {
        match self {
            Topology::Paired if rx % 2 == 1 => rx - 1,
            Topology::Paired if rx + 1 < ports => rx + 1,
            Topology::Chained => (rx + 1) % ports.max(1),
            Topology::Paired | Topology::Loop => rx,
        }
    }
}

/// One forwarding stream: what testpmd's `fwd_stream` is, a receive queue of one port and
/// the transmit queue its frames leave by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream {
    pub rx_port: u8,
    pub rx_queue: u16,
    pub tx_port: u8,
    pub tx_queue: u16,
}

/// The streams of `ports` ports with `queues` queue pairs each, in the fixed order the one
/// forwarding loop serves them: port 0's queues 0, 1, ..., then port 1's, and so on. Rx
/// queue k of a port goes to tx queue k of the port the topology names.
pub fn streams(ports: u8, queues: u16, topology: Topology) -> Vec<Stream> {
    let mut v = Vec::with_capacity(usize::from(ports) * usize::from(queues));
    for rx_port in 0..ports {
        for q in 0..queues {
            v.push(Stream {
                rx_port,
                rx_queue: q,
                tx_port: topology.tx_port(rx_port, ports),
                tx_queue: q,
            });
        }
    }
    v
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
    /// Virtio-net functions to drive, the first ones on the bus (testpmd's ports).
    pub ports: u8,
    /// Where frames received on a port go (testpmd `--port-topology`).
    pub topology: Topology,
    /// Receive queues per port (testpmd `--rxq`).
    pub rxq: u16,
    /// Transmit queues per port (testpmd `--txq`); equal to `rxq`.
    pub txq: u16,
    /// Hashing and steering (with VIRTIO_NET_F_RSS, or the hash alone with
    /// VIRTIO_NET_F_HASH_REPORT): what `rss-key`, `rss-types`, `reta` and
    /// `rss-unclassified` asked for.
    pub rss: rss::Request,
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
    /// Log PCI details (function, BARs) and one line per received frame (testpmd's
    /// `set verbose 1`).
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
            ports: 1,
            topology: Topology::Paired,
            rxq: 1,
            txq: 1,
            rss: rss::Request::default(),
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
    /// Words that are fine alone but not together.
    Conflict(String),
}

impl fmt::Display for ConfigError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownKey(k) => write!(f, "unknown setting '{k}'"),
            ConfigError::BadValue { key, value, why } => {
                write!(f, "bad value '{value}' for '{key}': {why}")
            }
            ConfigError::Conflict(why) => f.write_str(why),
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

fn queues<'a>(key: &'a str, value: &'a str) -> Result<u16, ConfigError<'a>> {
    let n: u16 = number(key, value)?;
    if n == 0 || n > MAX_QUEUE_PAIRS {
        return Err(ConfigError::BadValue {
            key,
            value,
            why: "a port has 1 to 15 queues each way",
        });
    }
    Ok(n)
}

/// A receive queue number in an RSS word.
fn rx_queue<'a>(key: &'a str, value: &'a str) -> Result<u16, ConfigError<'a>> {
    let n: u16 = number(key, value)?;
    if n >= MAX_QUEUE_PAIRS {
        return Err(ConfigError::BadValue {
            key,
            value,
            why: "a receive queue is 0 to 14",
        });
    }
    Ok(n)
}

fn hash_types<'a>(key: &'a str, value: &'a str) -> Result<u32, ConfigError<'a>> {
    match value {
        "none" => return Ok(0),
        "all" => return Ok(hash_type::ALL),
        _ => {}
    }
    let mut types = 0;
    for name in value.split(',') {
        let (bit, _) = hash_type::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .ok_or(ConfigError::BadValue {
                key,
                value: name,
                why: "hash types are ipv4, tcp4, udp4, ipv6, tcp6, udp6, ipv6-ex, tcp6-ex, udp6-ex (a comma list), all or none",
            })?;
        types |= bit;
    }
    Ok(types)
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
                "mq" => feature(&mut c, key, value, features::MQ)?,
                "rss" => feature(&mut c, key, value, features::RSS)?,
                "hash-report" => feature(&mut c, key, value, features::HASH_REPORT)?,
                "ports" => {
                    c.ports = number(key, value)?;
                    if c.ports == 0 || c.ports > irq::MAX_PORTS {
                        return Err(ConfigError::BadValue {
                            key,
                            value,
                            why: "1 to 4 ports",
                        });
                    }
                }
                "port-topology" => {
                    c.topology = match value {
                        "paired" => Topology::Paired,
                        "chained" => Topology::Chained,
                        "loop" => Topology::Loop,
                        _ => {
                            return Err(ConfigError::BadValue {
                                key,
                                value,
                                why: "topologies are paired, chained and loop",
                            })
                        }
                    }
                }
                "rxq" => c.rxq = queues(key, value)?,
                "txq" => c.txq = queues(key, value)?,
                "rss-key" => {
                    let bytes = hex(value).filter(|b| b.len() == rss::KEY_LEN);
                    c.rss.key = Some(bytes.ok_or(ConfigError::BadValue {
                        key,
                        value,
                        why: "an RSS key is 40 bytes: 80 hex digits",
                    })?);
                }
                "rss-types" => c.rss.hash_types = Some(hash_types(key, value)?),
                "reta" => {
                    let table = value
                        .split(',')
                        .map(|q| rx_queue(key, q))
                        .collect::<Result<Vec<u16>, _>>()?;
                    if !table.len().is_power_of_two() || table.len() > rss::MAX_TABLE_LEN {
                        return Err(ConfigError::BadValue {
                            key,
                            value,
                            why: "an indirection table has a power of two of entries, 1 to 512",
                        });
                    }
                    c.rss.table = Some(table);
                }
                "rss-unclassified" => c.rss.unclassified = Some(rx_queue(key, value)?),
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
        c.check()?;
        Ok(c)
    }

    /// The checks that take several words.
    fn check(&self) -> Result<(), ConfigError<'static>> {
        if self.rxq != self.txq {
            return Err(ConfigError::Conflict(format!(
                "rxq={} and txq={} differ: rx queue k forwards to tx queue k of the peer port, so give both the same number",
                self.rxq, self.txq
            )));
        }
        let queues = self
            .rss
            .table
            .iter()
            .flatten()
            .chain(&self.rss.unclassified);
        if let Some(q) = queues.max().filter(|&&q| q >= self.rxq) {
            return Err(ConfigError::Conflict(format!(
                "the RSS settings name receive queue {q}, but rxq={} sets up queues 0 to {}",
                self.rxq,
                self.rxq - 1
            )));
        }
        Ok(())
    }

    /// The streams the forwarding loop serves, in its order.
    pub fn streams(&self) -> Vec<Stream> {
        streams(self.ports, self.rxq, self.topology)
    }

    /// The line to log when the port cannot use what was asked of its rings: packed rings
    /// asked for explicitly on the legacy interface, which has no VERSION_1.
    pub fn ring_note(&self) -> Option<&'static str> {
        (self.packed_asked && self.transport == Kind::Legacy)
            .then_some("packed rings need VERSION_1; the legacy transport uses split rings")
    }

    /// Mbufs to allocate, one pool for every port (as testpmd's per-socket pool): what was
    /// asked, or every rx and tx ring plus room for bursts in flight, counting the segments
    /// a split frame takes.
    pub fn pool_size(&self) -> u32 {
        if self.mbufs != 0 {
            return self.mbufs;
        }
        let segs = if self.txsplit > 0 {
            u32::from(MAX_TX_SIZE).div_ceil(u32::from(self.txsplit)) + 1
        } else {
            1
        };
        let rings = u32::from(self.ports) * u32::from(self.rxq);
        let tx_rings = u32::from(self.ports) * u32::from(self.txq);
        u32::from(self.rxd) * rings
            + (u32::from(self.txd) * tx_rings + 4 * u32::from(self.burst)) * segs
            + 64
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
    use alloc::string::ToString;
    use alloc::vec;

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
    fn streams_follow_dpdks_topologies_port_by_port_queue_by_queue() {
        // The port each port's frames leave by, for 1 to 4 ports.
        let peers = |t: Topology| -> Vec<Vec<u8>> {
            (1..=4u8)
                .map(|n| (0..n).map(|p| t.tx_port(p, n)).collect())
                .collect()
        };
        assert_eq!(
            peers(Topology::Paired),
            [vec![0], vec![1, 0], vec![1, 0, 2], vec![1, 0, 3, 2]],
            "0 <-> 1, 2 <-> 3; an odd last port pairs with itself"
        );
        assert_eq!(
            peers(Topology::Chained),
            [vec![0], vec![1, 0], vec![1, 2, 0], vec![1, 2, 3, 0]]
        );
        assert_eq!(
            peers(Topology::Loop),
            [vec![0], vec![0, 1], vec![0, 1, 2], vec![0, 1, 2, 3]]
        );
        for t in [Topology::Paired, Topology::Chained, Topology::Loop] {
            for ports in 1..=4u8 {
                for queues in [1u16, 2, 4] {
                    let s = streams(ports, queues, t);
                    assert_eq!(s.len(), usize::from(ports) * usize::from(queues));
                    for (i, st) in s.iter().enumerate() {
                        // Port by port, queue by queue: the one loop's fixed order.
                        let (p, q) = (i / usize::from(queues), i % usize::from(queues));
                        assert_eq!(
                            *st,
                            Stream {
                                rx_port: p as u8,
                                rx_queue: q as u16,
                                tx_port: t.tx_port(p as u8, ports),
                                tx_queue: q as u16,
                            },
                            "{t:?} {ports} ports {queues} queues"
                        );
                    }
                    // Every port transmits on every queue exactly once.
                    for p in 0..ports {
                        let mut tx: Vec<u16> = s
                            .iter()
                            .filter(|st| st.tx_port == p)
                            .map(|st| st.tx_queue)
                            .collect();
                        tx.sort_unstable();
                        assert_eq!(tx, (0..queues).collect::<Vec<_>>(), "{t:?} port {p}");
                    }
                }
            }
        }
        let c = Config::parse("ports=2 rxq=2 txq=2 port-topology=chained").unwrap();
        assert_eq!(c.streams(), streams(2, 2, Topology::Chained));
        assert_eq!(Config::parse("").unwrap().streams().len(), 1);
    }

    #[test]
    fn queue_port_and_rss_words_as_testpmd_spells_them() {
        let c = Config::parse("ports=3 port-topology=loop rxq=4 txq=4").unwrap();
        assert_eq!(
            (c.ports, c.topology, c.rxq, c.txq),
            (3, Topology::Loop, 4, 4)
        );
        let d = Config::default();
        assert_eq!(
            (d.ports, d.topology, d.rxq, d.txq),
            (1, Topology::Paired, 1, 1)
        );
        assert!(d.rss.is_empty());
        let bad = |s| Config::parse(s).unwrap_err().to_string();
        assert_eq!(
            bad("rxq=2"),
            "rxq=2 and txq=1 differ: rx queue k forwards to tx queue k of the peer port, so give both the same number"
        );
        assert_eq!(
            bad("rxq=16 txq=16"),
            "bad value '16' for 'rxq': a port has 1 to 15 queues each way"
        );
        assert_eq!(bad("ports=5"), "bad value '5' for 'ports': 1 to 4 ports");
        assert_eq!(bad("ports=0"), "bad value '0' for 'ports': 1 to 4 ports");
        assert!(bad("port-topology=ring").contains("paired, chained and loop"));

        let key =
            "6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa";
        let c = Config::parse(&alloc::format!(
            "rxq=2 txq=2 rss-key={key} rss-types=ipv4,tcp4,udp6-ex reta=0,1,1,0 rss-unclassified=1"
        ))
        .unwrap();
        assert_eq!(c.rss.key.as_deref(), Some(&rss::DEFAULT_KEY[..]));
        assert_eq!(
            c.rss.hash_types,
            Some(hash_type::IPV4 | hash_type::TCPV4 | hash_type::UDP_EX)
        );
        assert_eq!(c.rss.table, Some(alloc::vec![0, 1, 1, 0]));
        assert_eq!(c.rss.unclassified, Some(1));
        assert_eq!(
            Config::parse("rss-types=none").unwrap().rss.hash_types,
            Some(0)
        );
        assert_eq!(
            Config::parse("rss-types=all").unwrap().rss.hash_types,
            Some(hash_type::ALL)
        );
        assert!(bad("rss-key=00ff").contains("80 hex digits"));
        assert!(bad("rss-types=ipv4,sctp4").starts_with("bad value 'sctp4' for 'rss-types'"));
        assert!(bad("reta=0,0,0").contains("power of two"));
        assert_eq!(
            bad("reta=0,1"),
            "the RSS settings name receive queue 1, but rxq=1 sets up queues 0 to 0"
        );
        assert!(bad("rxq=2 txq=2 rss-unclassified=2").contains("receive queue 2"));
        // The features the port asks for, and how to turn them off.
        let all = features::MQ | features::RSS | features::HASH_REPORT;
        assert_eq!(Config::default().features & all, all);
        let c = Config::parse("mq=0 rss=0 hash-report=0").unwrap();
        assert_eq!(c.features & all, 0);
    }

    #[test]
    fn the_pool_grows_with_ports_and_queues_and_one_port_keeps_its_size() {
        assert_eq!(Config::default().pool_size(), 256 + 256 + 4 * 32 + 64);
        let c = Config::parse("ports=2 rxq=2 txq=2").unwrap();
        assert_eq!(c.pool_size(), 4 * 256 + 4 * 256 + 4 * 32 + 64);
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
