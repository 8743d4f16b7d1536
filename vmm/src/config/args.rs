//! The settings of a run that both the command line (`vlab run --...`) and a case file
//! (`[guest]` and `[device]` tables) give: one definition, so the two cannot drift apart.
//!
//! [`GuestArgs`] become the guest application's command line (`pmd::testpmd::Config`);
//! [`DeviceArgs`] configure the virtio-net device and its transport.

use std::time::Duration;

use clap::{Args, ValueEnum};
use device_model::fault::{FaultConfig, ShrinkRx};
use device_model::net::{features, LinkFlap, NetConfig, DEFAULT_MAX_FRAME, MAX_FRAME_LIMIT};
use device_model::virtio_pci::Options;
use serde::{Deserialize, Serialize};

/// Which virtio interface the guest's driver uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Memory BARs found through virtio capabilities (virtio 1.x).
    #[default]
    Modern,
    /// The I/O BAR of a transitional device, through port I/O (as DPDK without uio).
    Legacy,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Modern => "modern",
            Transport::Legacy => "legacy",
        }
    }
}

/// The guest application's port setup. Unset values take the application's defaults
/// (testpmd's: promiscuous on, rings of 256, bursts of 32, every feature asked for).
#[derive(Clone, Debug, Default, Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GuestArgs {
    /// Rx and tx ring size the driver asks for (a power of two, 1-32768).
    #[arg(long, value_parser = ring_size)]
    #[serde(default, deserialize_with = "de_ring")]
    pub ring: Option<u16>,
    /// Frames per rx/tx burst (1-512).
    #[arg(long, value_parser = burst)]
    #[serde(default, deserialize_with = "de_burst")]
    pub burst: Option<u16>,
    /// txonly: number of frames to send.
    #[arg(long)]
    pub pkts: Option<u64>,
    /// txonly: frame size in bytes, without FCS (50-1518).
    #[arg(long, value_parser = frame_size)]
    #[serde(default, deserialize_with = "de_frame_size")]
    pub size: Option<u16>,
    /// Virtio interface the driver uses.
    #[arg(long, value_enum)]
    pub transport: Option<Transport>,
    /// Ask for mergeable rx buffers (VIRTIO_NET_F_MRG_RXBUF).
    #[arg(long, value_name = "BOOL")]
    pub mrg: Option<bool>,
    /// Ask for packed virtqueues (VIRTIO_F_RING_PACKED; default: yes when offered). The
    /// legacy transport cannot carry them and uses split rings.
    #[arg(long, value_name = "BOOL")]
    pub packed: Option<bool>,
    /// Ask for in-order use of buffers (VIRTIO_F_IN_ORDER; default: yes when offered).
    #[arg(long, value_name = "BOOL")]
    pub in_order: Option<bool>,
    /// Receive queues per port, as testpmd's --rxq (needs MQ beyond 1).
    #[arg(long, value_name = "N")]
    pub rxq: Option<u16>,
    /// Transmit queues per port, as testpmd's --txq.
    #[arg(long, value_name = "N")]
    pub txq: Option<u16>,
    /// RSS: the 40-byte Toeplitz key in hex (VIRTIO_NET_F_RSS).
    #[arg(long, value_name = "HEX")]
    pub rss_key: Option<String>,
    /// RSS: hash types (ipv4,tcp4,udp4,ipv6,tcp6,udp6,ipv6-ex,tcp6-ex,udp6-ex, or none).
    #[arg(long, value_name = "TYPE,...")]
    pub rss_types: Option<String>,
    /// RSS: the indirection table, rx queue per entry (a power of two of them).
    #[arg(long, value_name = "Q,...")]
    pub reta: Option<String>,
    /// RSS: where frames no hash type covers go.
    #[arg(long, value_name = "Q")]
    pub rss_unclassified: Option<u16>,
    /// With several ports, where a frame received on one goes (testpmd's paired,
    /// chained, loop).
    #[arg(long, value_name = "TOPOLOGY")]
    pub port_topology: Option<String>,
    /// Print a line per received frame: port, queue, length, and the RSS hash.
    #[arg(long, value_name = "BOOL")]
    pub verbose: Option<bool>,
    /// Ask for VIRTIO_F_EVENT_IDX (notification suppression by index; flags without it).
    #[arg(long, value_name = "BOOL")]
    pub event_idx: Option<bool>,
    /// Ask for indirect descriptors (VIRTIO_F_INDIRECT_DESC) for multi-segment tx.
    #[arg(long, value_name = "BOOL")]
    pub indirect: Option<bool>,
    /// Ask for the control queue and its commands (CTRL_VQ, CTRL_RX, CTRL_VLAN, CTRL_MAC_ADDR).
    #[arg(long, value_name = "BOOL")]
    pub ctrl: Option<bool>,
    /// Promiscuous mode (testpmd's default is on); needs the control queue to turn off.
    #[arg(long, value_name = "BOOL")]
    pub promisc: Option<bool>,
    /// All-multicast mode.
    #[arg(long, value_name = "BOOL")]
    pub allmulti: Option<bool>,
    /// MAC addresses to accept besides the port's own: unicast ones fill the unicast table,
    /// multicast ones the multicast table.
    #[arg(long, value_name = "MAC,...", value_delimiter = ',', value_parser = mac_addr)]
    #[serde(default, deserialize_with = "de_macs")]
    pub mac_add: Vec<String>,
    /// Set the port's MAC address through the control queue.
    #[arg(long, value_name = "MAC", value_parser = mac_addr)]
    #[serde(default, deserialize_with = "de_mac")]
    pub mac_set: Option<String>,
    /// VLAN IDs to accept (enables VLAN filtering).
    #[arg(long, value_name = "VID,...", value_delimiter = ',', value_parser = vlan_id)]
    #[serde(default, deserialize_with = "de_vids")]
    pub vlan_filter: Vec<u16>,
    /// Strip VLAN tags on receive, in software (the TCI goes into the mbuf).
    #[arg(long, value_name = "BOOL")]
    pub vlan_strip: Option<bool>,
    /// Insert a VLAN tag with this TCI on transmit, in software.
    #[arg(long, value_name = "TCI")]
    pub vlan_insert: Option<u16>,
    /// Rx buffer size (mbuf data room) in bytes: small ones make frames span buffers.
    #[arg(long, value_name = "BYTES")]
    pub rxbuf: Option<u16>,
    /// Mbuf headroom in bytes; the PMD refuses one smaller than the virtio-net header.
    #[arg(long, value_name = "BYTES")]
    pub headroom: Option<u16>,
    /// Re-segment every transmitted frame into pieces of this many bytes (scattered tx).
    #[arg(long, value_name = "BYTES")]
    pub txsplit: Option<u16>,
    /// Follow the link state through configuration-change interrupts.
    #[arg(long, value_name = "BOOL")]
    pub lsc: Option<bool>,
    /// Stop after receiving this many frames (for VMMs without vlab's harness ports).
    #[arg(long, value_name = "N")]
    pub expect: Option<u64>,
    /// Send control command CLASS.CMD with hex DATA and report the device's answer
    /// (e.g. 3.0, or 1.0:ffffffff for a MAC table that claims more than it carries).
    #[arg(long, value_name = "CLASS.CMD[:DATA]")]
    pub ctrl_probe: Option<String>,
    /// Accept these feature bits (hex) even if the device did not offer them.
    #[arg(long, value_name = "HEX")]
    pub force_features: Option<String>,
    /// Write this size to queue 0 first and report what the device reads back.
    #[arg(long, value_name = "N")]
    pub probe_queue_size: Option<u16>,
    /// Stop after forwarding a frame of this ethertype (hex): an end marker for VMMs without
    /// vlab's harness ports.
    #[arg(long, value_name = "HEX")]
    pub end_ethertype: Option<String>,
    /// hostile: seed of the abuse sequence (the same seed gives the same abuses).
    #[arg(long, value_name = "N")]
    #[serde(default)]
    pub seed: Option<u64>,
    /// hostile: how many abuses before the final traffic.
    #[arg(long, value_name = "N")]
    #[serde(default)]
    pub rounds: Option<u32>,
}

fn ring_size(s: &str) -> Result<u16, String> {
    let n: u16 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number from 1 to 32768"))?;
    if n == 0 || n > 32768 || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two from 1 to 32768"));
    }
    Ok(n)
}

fn burst(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(n) if (1..=512).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' is not a burst size from 1 to 512")),
    }
}

fn frame_size(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(n) if (50..=1518).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' is not a frame size from 50 to 1518 bytes")),
    }
}

/// A MAC address as the guest parses it.
fn mac_addr(s: &str) -> Result<String, String> {
    match pmd::testpmd::config::parse_mac(s) {
        Some(_) => Ok(s.to_string()),
        None => Err(format!(
            "'{s}' is not a MAC address (six hex bytes like 02:00:00:00:00:01)"
        )),
    }
}

fn vlan_id(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(n) if n < 4096 => Ok(n),
        _ => Err(format!("'{s}' is not a VLAN ID from 0 to 4095")),
    }
}

// A case file's values go through the command line's own parsers: the same rules and
// messages, and serde's error then names the key and its line.

/// Deserializes a `T` and checks it with `parse`.
fn checked<'de, D, T, U>(d: D, parse: fn(&str) -> Result<U, String>) -> Result<U, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + ToString,
{
    let v = T::deserialize(d)?;
    parse(&v.to_string()).map_err(serde::de::Error::custom)
}

/// Deserializes a list of `T`, each checked with `parse`.
fn checked_list<'de, D, T, U>(
    d: D,
    parse: fn(&str) -> Result<U, String>,
) -> Result<Vec<U>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + ToString,
{
    Vec::<T>::deserialize(d)?
        .iter()
        .map(|v| parse(&v.to_string()).map_err(serde::de::Error::custom))
        .collect()
}

fn de_ring<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    checked::<D, u16, u16>(d, ring_size).map(Some)
}

fn de_burst<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    checked::<D, u16, u16>(d, burst).map(Some)
}

fn de_frame_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    checked::<D, u16, u16>(d, frame_size).map(Some)
}

fn de_mac<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked::<D, String, String>(d, mac_addr).map(Some)
}

fn de_macs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    checked_list::<D, String, String>(d, mac_addr)
}

fn de_vids<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    checked_list::<D, u16, u16>(d, vlan_id)
}

fn de_probability<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    checked::<D, f64, f64>(d, probability).map(Some)
}

impl GuestArgs {
    /// Whether the guest asks for link-state interrupts (the KVM machine then needs an
    /// interrupt controller).
    pub fn wants_interrupts(&self) -> bool {
        self.lsc == Some(true)
    }

    /// The `key=value` words the guest application parses, after `mode=...`.
    pub fn cmdline_words(&self) -> Vec<String> {
        let mut w = Vec::new();
        let b = |v: bool| if v { "1" } else { "0" };
        macro_rules! put {
            ($key:literal, $v:expr) => {
                if let Some(v) = $v {
                    w.push(format!(concat!($key, "={}"), v));
                }
            };
        }
        put!("ring", self.ring);
        put!("burst", self.burst);
        put!("pkts", self.pkts);
        put!("size", self.size);
        put!("transport", self.transport.map(Transport::name));
        put!("mrg", self.mrg.map(b));
        put!("packed", self.packed.map(b));
        put!("in-order", self.in_order.map(b));
        put!("rxq", self.rxq);
        put!("txq", self.txq);
        put!("rss-key", self.rss_key.as_ref());
        put!("rss-types", self.rss_types.as_ref());
        put!("reta", self.reta.as_ref());
        put!("rss-unclassified", self.rss_unclassified);
        put!("port-topology", self.port_topology.as_ref());
        put!("verbose", self.verbose.map(b));
        put!("event-idx", self.event_idx.map(b));
        put!("indirect", self.indirect.map(b));
        put!("ctrl", self.ctrl.map(b));
        put!("promisc", self.promisc.map(b));
        put!("allmulti", self.allmulti.map(b));
        if !self.mac_add.is_empty() {
            w.push(format!("mac-add={}", self.mac_add.join(",")));
        }
        put!("mac-set", self.mac_set.as_ref());
        if !self.vlan_filter.is_empty() {
            let v: Vec<String> = self.vlan_filter.iter().map(u16::to_string).collect();
            w.push(format!("vlan-filter={}", v.join(",")));
        }
        put!("vlan-strip", self.vlan_strip.map(b));
        put!("vlan-insert", self.vlan_insert);
        put!("rxbuf", self.rxbuf);
        put!("headroom", self.headroom);
        put!("txsplit", self.txsplit);
        put!("lsc", self.lsc.map(b));
        put!("expect", self.expect);
        put!("ctrl-probe", self.ctrl_probe.as_ref());
        put!("force-features", self.force_features.as_ref());
        put!("probe-queue-size", self.probe_queue_size);
        put!("end-ethertype", self.end_ethertype.as_ref());
        put!("seed", self.seed);
        put!("rounds", self.rounds);
        w
    }
}

/// The virtio-net device and its transport, as the host presents them.
#[derive(Clone, Debug, Default, Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeviceArgs {
    /// Features the device does not offer (names: mtu, mac, mrg_rxbuf, status, ctrl_vq,
    /// ctrl_rx, ctrl_vlan, ctrl_mac_addr, any_layout, indirect_desc, event_idx, version_1,
    /// and those the device model adds: ring_packed, in_order, ...).
    #[arg(long, value_name = "FEATURE,...", value_delimiter = ',')]
    #[serde(default)]
    pub withhold: Vec<String>,
    /// Queue pairs the device offers (1-8, `max_virtqueue_pairs`; with more than one it
    /// offers VIRTIO_NET_F_MQ).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=8))]
    pub queues: Option<u16>,
    /// Maximum queue size the device offers.
    #[arg(long, value_name = "N", value_parser = ring_size)]
    #[serde(default, deserialize_with = "de_ring")]
    pub queue_size: Option<u16>,
    /// The device refuses any queue size but its maximum (as QEMU's fixed 256).
    #[arg(long)]
    #[serde(default)]
    pub fixed_queue_size: bool,
    /// Largest frame in bytes without FCS (default 1518; jumbo up to 16384). The MTU the
    /// device reports is 18 less.
    #[arg(long, value_name = "BYTES")]
    pub max_frame: Option<usize>,
    /// A modern-only device (PCI 1af4:1041, no legacy I/O BAR) instead of a transitional one.
    #[arg(long)]
    #[serde(default)]
    pub modern_only: bool,
    /// Take the link down after N delivered frames, and up again MS milliseconds later.
    #[arg(long, value_name = "N[:MS]", value_parser = link_flap)]
    #[serde(
        default,
        deserialize_with = "de_link_flap",
        serialize_with = "ser_link_flap"
    )]
    pub link_flap: Option<LinkFlap>,
    /// Seed of the fault injection: the same seed and input make the same faults.
    #[arg(long, value_name = "N", help_heading = "Faults (rust backend)")]
    pub fault_seed: Option<u64>,
    /// Drop each input frame with probability P (0-1) before the guest sees it.
    #[arg(long, value_name = "P", value_parser = probability, help_heading = "Faults (rust backend)")]
    #[serde(default, deserialize_with = "de_probability")]
    pub drop: Option<f64>,
    /// Deliver each input frame twice with probability P.
    #[arg(long, value_name = "P", value_parser = probability, help_heading = "Faults (rust backend)")]
    #[serde(default, deserialize_with = "de_probability")]
    pub duplicate: Option<f64>,
    /// Swap each input frame with the next with probability P.
    #[arg(long, value_name = "P", value_parser = probability, help_heading = "Faults (rust backend)")]
    #[serde(default, deserialize_with = "de_probability")]
    pub reorder: Option<f64>,
    /// Publish each batch of used entries this many microseconds late.
    #[arg(long, value_name = "US", help_heading = "Faults (rust backend)")]
    pub delay_used_us: Option<u64>,
    /// Withhold each queue interrupt the driver asked for with probability P.
    #[arg(long, value_name = "P", value_parser = probability, help_heading = "Faults (rust backend)")]
    #[serde(default, deserialize_with = "de_probability")]
    pub withhold_interrupts: Option<f64>,
    /// After N delivered frames use at most B of the rx buffers posted, as if the ring had
    /// B entries.
    #[arg(long, value_name = "N:B", value_parser = shrink_rx, help_heading = "Faults (rust backend)")]
    #[serde(
        default,
        deserialize_with = "de_shrink_rx",
        serialize_with = "ser_shrink_rx"
    )]
    pub shrink_rx: Option<ShrinkRx>,
    /// A fault of vlab itself: the datapath thread panics once N frames have gone to the
    /// output (the run must fail naming it and keep those N frames).
    #[arg(long, value_name = "N", help_heading = "Faults (rust backend)")]
    pub panic_after: Option<u64>,
}

impl DeviceArgs {
    /// These settings without the faults only vlab's rust datapath injects (every fault
    /// is one), and the names of those that were set.
    pub fn without_rust_faults(&self) -> (DeviceArgs, Vec<&'static str>) {
        let mut d = self.clone();
        let mut named = Vec::new();
        let mut take = |set: bool, name| {
            if set {
                named.push(name);
            }
        };
        take(d.drop.take().is_some(), "--drop");
        take(d.duplicate.take().is_some(), "--duplicate");
        take(d.reorder.take().is_some(), "--reorder");
        take(d.delay_used_us.take().is_some(), "--delay-used-us");
        take(
            d.withhold_interrupts.take().is_some(),
            "--withhold-interrupts",
        );
        take(d.shrink_rx.take().is_some(), "--shrink-rx");
        take(d.link_flap.take().is_some(), "--link-flap");
        take(d.panic_after.take().is_some(), "--panic-after");
        d.fault_seed = None;
        (d, named)
    }
}

fn probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("'{s}' is not a probability from 0 to 1")),
    }
}

fn shrink_rx(s: &str) -> Result<ShrinkRx, String> {
    let bad = || format!("'{s}' is not N:B (frames, then rx buffers, at least 1)");
    let (n, b) = s.split_once(':').ok_or_else(bad)?;
    let buffers: u16 = b.parse().map_err(|_| bad())?;
    if buffers == 0 {
        return Err(bad());
    }
    Ok(ShrinkRx {
        after: n.parse().map_err(|_| bad())?,
        buffers,
    })
}

fn de_shrink_rx<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ShrinkRx>, D::Error> {
    let s = String::deserialize(d)?;
    shrink_rx(&s).map(Some).map_err(serde::de::Error::custom)
}

fn link_flap(s: &str) -> Result<LinkFlap, String> {
    let bad = || format!("'{s}' is not N or N:MS (frames, then milliseconds down)");
    let (n, ms) = match s.split_once(':') {
        Some((n, ms)) => (n, ms.parse::<u64>().map_err(|_| bad())?),
        None => (s, 10),
    };
    Ok(LinkFlap {
        after: n.parse().map_err(|_| bad())?,
        down_for: Duration::from_millis(ms),
    })
}

fn ser_link_flap<S: serde::Serializer>(v: &Option<LinkFlap>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(f) => s.serialize_str(&format!("{}:{}", f.after, f.down_for.as_millis())),
        None => s.serialize_none(),
    }
}

fn ser_shrink_rx<S: serde::Serializer>(v: &Option<ShrinkRx>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(r) => s.serialize_str(&format!("{}:{}", r.after, r.buffers)),
        None => s.serialize_none(),
    }
}

fn de_link_flap<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<LinkFlap>, D::Error> {
    let s = String::deserialize(d)?;
    link_flap(&s).map(Some).map_err(serde::de::Error::custom)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("unknown feature '{0}' (known: {known})", known = feature_names())]
    UnknownFeature(String),
    #[error("{0} queue pairs: the device offers 1 to 8")]
    Queues(u16),
    #[error("max frame {0} is outside 64..={MAX_FRAME_LIMIT}")]
    MaxFrame(usize),
    #[error("fault {0}: {1}")]
    Fault(&'static str, String),
}

/// The names `--withhold` takes, as the device model spells them.
fn feature_names() -> String {
    features::NAMES
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

impl DeviceArgs {
    /// The device configuration these settings describe, on top of `base`.
    pub fn apply(&self, mut net: NetConfig) -> Result<(NetConfig, Options), Error> {
        for name in &self.withhold {
            let bit = features::by_name(name).ok_or_else(|| Error::UnknownFeature(name.clone()))?;
            net.features &= !bit;
        }
        if let Some(q) = self.queue_size {
            net.queue_size = q;
        }
        if let Some(pairs) = self.queues {
            if !(1..=8).contains(&pairs) {
                return Err(Error::Queues(pairs));
            }
            net.max_queue_pairs = pairs;
        }
        let max_frame = self.max_frame.unwrap_or(DEFAULT_MAX_FRAME);
        if !(64..=MAX_FRAME_LIMIT).contains(&max_frame) {
            return Err(Error::MaxFrame(max_frame));
        }
        net.max_frame = max_frame;
        net.link_flap = self.link_flap;
        for (name, p) in [
            ("drop", self.drop),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
            ("withhold-interrupts", self.withhold_interrupts),
        ] {
            if let Some(p) = p {
                probability(&p.to_string()).map_err(|why| Error::Fault(name, why))?;
            }
        }
        net.faults = FaultConfig {
            seed: self.fault_seed.unwrap_or(0),
            drop: self.drop.unwrap_or(0.0),
            duplicate: self.duplicate.unwrap_or(0.0),
            reorder: self.reorder.unwrap_or(0.0),
            delay_used: self.delay_used_us.map(Duration::from_micros),
            withhold_interrupts: self.withhold_interrupts.unwrap_or(0.0),
            shrink_rx: self.shrink_rx,
            panic_after: self.panic_after,
        };
        let opts = Options {
            transitional: !self.modern_only,
            fixed_queue_size: self.fixed_queue_size,
        };
        Ok((net, opts))
    }
}
