//! Which receive queue pair a frame goes to, and the hash its header reports
//! (virtio 1.2, 5.1.6.5.6 multiqueue, 5.1.6.5.7 RSS, 5.1.6.4.3 hash reports).
//!
//! The driver starts with one queue pair in use; VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, or the
//! `max_tx_vq` of VIRTIO_NET_CTRL_MQ_RSS_CONFIG, enables more, up to the pairs whose queues
//! it set up before DRIVER_OK. Then:
//!
//! - **RSS** (after RSS_CONFIG): the Toeplitz hash of the configured types and key picks
//!   an entry of the indirection table; a frame no enabled type covers goes to the
//!   unclassified queue ([`RssConfig::steer`]).
//! - **Automatic steering** (multiqueue without RSS, 5.1.6.5.6). The spec has the device
//!   deliver a flow on the receive queue of the pair the driver last transmitted that flow
//!   on. This device makes the rule deterministic:
//!   - a flow is the unordered pair of endpoints (IP address and, for TCP and UDP, port)
//!     and the protocol, so a flow's replies and a forwarded frame's copies are one flow;
//!   - every transmitted IPv4 or IPv6 frame records its flow and its pair (the newest
//!     record wins; at most [`FLOW_MEMORY`] flows are kept, the oldest forgotten first);
//!   - a received frame of a recorded flow goes to that pair (if still enabled);
//!   - any other IP frame goes to pair `toeplitz(DEFAULT_KEY, tuple) % enabled`, the
//!     tuple being the frame's source and destination addresses and, for TCP and UDP, its
//!     source and destination ports, in that order (the input of RSS's TCPv4/UDPv4/IPv4
//!     and v6 types; the key is DPDK's and Microsoft's verification key, [`DEFAULT_KEY`]);
//!   - a frame that is not IP (ARP, ...) goes to pair 0.
//!
//!   So the first frames of a flow are spread by a fixed function of their headers, and
//!   what the driver then transmits moves the flow, as the spec asks. A run is
//!   reproducible when the guest transmits each flow on the pair it received it on (the
//!   forwarding modes do), or when the order of its transmits and the input's frames does
//!   not depend on timing.
//! - **Hash reports** (VIRTIO_NET_F_HASH_REPORT): the hash RSS computed, or with
//!   VIRTIO_NET_CTRL_MQ_HASH_CONFIG (no RSS) the hash of those types and key, which then
//!   steers nothing. Automatic steering's own hash is never reported. Before the driver
//!   configured a hash, frames report none.
//!
//! Commands are checked whole before anything changes: a refused one leaves the state as
//! it was.

use std::collections::{HashMap, VecDeque};

use super::rss::{self, hash_type, HashConfig, Report, RssConfig};

/// Flows automatic steering remembers.
pub const FLOW_MEMORY: usize = 4096;

/// The key of the fixed function: DPDK's default RSS key (`rss_intel_key`), the key of
/// Microsoft's verification suite.
pub const DEFAULT_KEY: [u8; rss::MAX_KEY] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// The tuples automatic steering hashes: addresses and ports, without the IPv6 extension
/// header variants.
const AUTO_TYPES: u32 = hash_type::IPV4
    | hash_type::TCPV4
    | hash_type::UDPV4
    | hash_type::IPV6
    | hash_type::TCPV6
    | hash_type::UDPV6;

/// Where a frame goes and what its header reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    /// The queue pair (its receive queue is 2 * `pair`).
    pub pair: u16,
    pub hash: u32,
    pub report: Report,
}

impl Pick {
    /// The first pair, no hash: where every frame goes with one pair in use and no hash
    /// configured.
    pub const FIRST: Pick = Pick {
        pair: 0,
        hash: 0,
        report: Report::None,
    };
}

/// Why a multiqueue command was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MqError {
    #[error("{pairs} queue pairs: the device has 1 to {max}")]
    Pairs { pairs: u16, max: u16 },
    #[error("{pairs} queue pairs, but the driver set up the queues of {ready} only")]
    NotSetUp { pairs: u16, ready: u16 },
    #[error("{pairs} queue pairs, but the RSS indirection table in force names queue {queue}")]
    RssQueue { pairs: u16, queue: u16 },
    #[error("RSS configuration: {0}")]
    Rss(#[source] rss::Error),
    #[error("hash configuration: {0}")]
    Hash(#[source] rss::Error),
}

/// A flow, the same in both directions: the protocol (what the hash covered) and its two
/// endpoints, the smaller first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Flow {
    kind: u8,
    ends: [[u8; 18]; 2],
}

impl Flow {
    fn of(frame: &[u8]) -> Option<Self> {
        let (tuple, report) = rss::select(frame, AUTO_TYPES)?;
        let end = |addr: &[u8], port: u16| {
            let mut e = [0u8; 18];
            e[..addr.len()].copy_from_slice(addr);
            e[16..].copy_from_slice(&port.to_be_bytes());
            e
        };
        let (a, b) = match tuple {
            rss::Tuple::V4 { src, dst, ports } => {
                let (sp, dp) = ports.unwrap_or((0, 0));
                (end(&src.octets(), sp), end(&dst.octets(), dp))
            }
            rss::Tuple::V6 { src, dst, ports } => {
                let (sp, dp) = ports.unwrap_or((0, 0));
                (end(&src.octets(), sp), end(&dst.octets(), dp))
            }
        };
        Some(Self {
            kind: report as u8,
            ends: if a <= b { [a, b] } else { [b, a] },
        })
    }
}

/// The flows automatic steering remembers, each with the pair it was last transmitted on.
#[derive(Debug, Default)]
struct Flows {
    pair: HashMap<Flow, u16>,
    /// Insertion order, to forget the oldest first.
    order: VecDeque<Flow>,
}

impl Flows {
    fn record(&mut self, flow: Flow, pair: u16) {
        if let Some(p) = self.pair.get_mut(&flow) {
            *p = pair;
            return;
        }
        if self.order.len() >= FLOW_MEMORY {
            if let Some(old) = self.order.pop_front() {
                self.pair.remove(&old);
            }
        }
        self.pair.insert(flow, pair);
        self.order.push_back(flow);
    }
}

/// The multiqueue state of a device: the pairs in use, the RSS or hash configuration, the
/// flows automatic steering learned.
#[derive(Debug)]
pub struct Steering {
    /// `max_virtqueue_pairs`.
    max: u16,
    /// Pairs whose queues the driver set up: the most it can enable.
    ready: u16,
    /// Pairs in use.
    enabled: u16,
    rss: Option<RssConfig>,
    hash: Option<HashConfig>,
    flows: Flows,
}

impl Steering {
    /// The state at DRIVER_OK of a device with `max` queue pairs: the first pair in use,
    /// no hash configured.
    pub fn new(max: u16) -> Self {
        Self {
            max: max.max(1),
            ready: 1,
            enabled: 1,
            rss: None,
            hash: None,
            flows: Flows::default(),
        }
    }

    /// The driver set up the queues of `ready` pairs (the first ones).
    pub fn set_ready(&mut self, ready: u16) {
        self.ready = ready.clamp(1, self.max);
        self.enabled = self.enabled.min(self.ready);
    }

    /// Uses `pairs` pairs, all set up (a vhost-user backend serving the rings it was given,
    /// with no control queue of its own).
    pub fn serve(&mut self, pairs: u16) {
        self.max = self.max.max(pairs);
        self.set_ready(pairs);
        self.enabled = self.ready;
    }

    /// Pairs in use: the receive queues frames go to, the transmit queues served.
    pub fn enabled(&self) -> u16 {
        self.enabled
    }

    pub fn rss(&self) -> Option<&RssConfig> {
        self.rss.as_ref()
    }

    /// VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET.
    pub fn set_pairs(&mut self, pairs: u16) -> Result<(), MqError> {
        if pairs == 0 || pairs > self.max {
            return Err(MqError::Pairs {
                pairs,
                max: self.max,
            });
        }
        if pairs > self.ready {
            return Err(MqError::NotSetUp {
                pairs,
                ready: self.ready,
            });
        }
        if let Some(queue) = self.rss.as_ref().map(RssConfig::highest_queue) {
            if queue >= pairs {
                return Err(MqError::RssQueue { pairs, queue });
            }
        }
        self.enabled = pairs;
        Ok(())
    }

    /// VIRTIO_NET_CTRL_MQ_RSS_CONFIG: steering by RSS from now on, over the `max_tx_vq`
    /// pairs it enables.
    pub fn configure_rss(&mut self, data: &[u8]) -> Result<u16, MqError> {
        let cfg = RssConfig::parse(data, self.ready).map_err(MqError::Rss)?;
        let pairs = cfg.max_tx_vq;
        self.enabled = pairs;
        self.rss = Some(cfg);
        self.hash = None;
        Ok(pairs)
    }

    /// VIRTIO_NET_CTRL_MQ_HASH_CONFIG: hashes reported, frames steered automatically (RSS,
    /// if it was on, is off: as QEMU does).
    pub fn configure_hash(&mut self, data: &[u8]) -> Result<(), MqError> {
        let cfg = HashConfig::parse(data).map_err(MqError::Hash)?;
        self.hash = Some(cfg);
        self.rss = None;
        Ok(())
    }

    /// Where `frame` goes, and its hash.
    pub fn pick(&self, frame: &[u8]) -> Pick {
        if let Some(rss) = &self.rss {
            let (pair, hash, report) = rss.steer(frame);
            // The commands keep the table within the enabled pairs; a frame never goes to
            // a disabled one all the same.
            let pair = if pair < self.enabled { pair } else { 0 };
            return Pick { pair, hash, report };
        }
        let (hash, report) = match &self.hash {
            Some(h) => h.hash(frame),
            None => (0, Report::None),
        };
        let pair = self.automatic(frame);
        Pick { pair, hash, report }
    }

    /// Whether picking needs the frame at all (anything but "pair 0, no hash").
    pub fn is_trivial(&self) -> bool {
        self.enabled == 1 && self.rss.is_none() && self.hash.is_none()
    }

    fn automatic(&self, frame: &[u8]) -> u16 {
        if self.enabled == 1 {
            return 0;
        }
        if let Some(&pair) = Flow::of(frame).and_then(|f| self.flows.pair.get(&f)) {
            if pair < self.enabled {
                return pair;
            }
        }
        match rss::hash(AUTO_TYPES, &DEFAULT_KEY, frame) {
            Some((hash, _)) => (hash % u32::from(self.enabled)) as u16,
            None => 0,
        }
    }

    /// The driver transmitted `frame` on pair `pair`: automatic steering follows.
    pub fn transmitted(&mut self, frame: &[u8], pair: u16) {
        if self.ready == 1 || self.rss.is_some() {
            return;
        }
        if let Some(flow) = Flow::of(frame) {
            self.flows.record(flow, pair);
        }
    }
}

#[cfg(test)]
mod tests;
