//! The virtio-net device (virtio 1.x, 5.1): its configuration space, the features it offers,
//! link state, and the datapath it starts when the driver sets DRIVER_OK.
//!
//! With more than one queue pair ([`NetConfig::max_queue_pairs`]) the device offers
//! multiqueue, RSS and hash reports; which pair a received frame goes to is
//! [`steering`]'s business.
//!
//! The configuration space (`struct virtio_net_config`, little endian):
//!
//! | offset | field | |
//! |---|---|---|
//! | 0 | `mac[6]` | |
//! | 6 | `status` le16 | VIRTIO_NET_S_LINK_UP |
//! | 8 | `max_virtqueue_pairs` le16 | the pairs the device has |
//! | 10 | `mtu` le16 | `max_frame - 18` |
//! | 12 | `speed` le32 | 0xffffffff, unknown (no VIRTIO_NET_F_SPEED_DUPLEX) |
//! | 16 | `duplex` u8 | 0xff, unknown |
//! | 17 | `rss_max_key_size` u8 | 40 |
//! | 18 | `rss_max_indirection_table_length` le16 | 128 |
//! | 20 | `supported_hash_types` le32 | every type ([`rss::hash_type::ALL`]) |
//!
//! The space is 24 bytes when VIRTIO_NET_F_RSS or VIRTIO_NET_F_HASH_REPORT is offered, 12
//! otherwise (bytes past it read as zero).

mod chain;
mod ctrl;
pub(crate) mod datapath;
mod dataplane;
pub mod filter;
mod queues;
pub mod rss;
pub mod steering;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::endpoint::{NullSink, NullSource, Sink, Source};
use crate::fault::{FaultConfig, FaultCounters, FaultStats, Faulty};
use crate::virtio::{self, ActivateError, Activation, Interrupt, VirtioDevice};
use datapath::{ControlPath, Datapath, DatapathEnd, EngineParts};

pub use chain::{ChainError, CtrlError};
pub use ctrl::{BadData, Refusal, TableError};
pub use dataplane::{Dataplane, DataplaneError};
pub use queues::{QueueLayout, QueuePair, Role};

/// Virtio device type of a network card.
pub const DEVICE_TYPE: u16 = 1;

/// virtio-net feature bits (5.1.3) and the transport bits a net device cares about.
pub mod features {
    pub const MTU: u64 = 1 << 3;
    pub const MAC: u64 = 1 << 5;
    pub const MRG_RXBUF: u64 = 1 << 15;
    pub const STATUS: u64 = 1 << 16;
    pub const CTRL_VQ: u64 = 1 << 17;
    pub const CTRL_RX: u64 = 1 << 18;
    pub const CTRL_VLAN: u64 = 1 << 19;
    /// Multiqueue: the driver may enable every queue pair (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET);
    /// offered when the device has more than one.
    pub const MQ: u64 = 1 << 22;
    pub const CTRL_MAC_ADDR: u64 = 1 << 23;
    pub const ANY_LAYOUT: u64 = 1 << 27;
    /// The receive header carries the frame's hash (5.1.6.4.3); offered with [`MQ`].
    pub const HASH_REPORT: u64 = 1 << 57;
    /// Receive-side scaling (5.1.6.5.7); offered with [`MQ`].
    pub const RSS: u64 = 1 << 60;

    /// Features that need the control queue (5.1.3.1).
    pub const NEEDS_CTRL_VQ: u64 = CTRL_RX | CTRL_VLAN | CTRL_MAC_ADDR | MQ | RSS | HASH_REPORT;

    /// Features offered only when the device has more than one queue pair.
    pub const MULTIQUEUE: u64 = MQ | RSS | HASH_REPORT;

    /// What the rust backend offers by default: everything it implements (the
    /// [`MULTIQUEUE`] ones only on a device with several queue pairs).
    pub const DEFAULT: u64 = MTU
        | MAC
        | MRG_RXBUF
        | STATUS
        | CTRL_VQ
        | CTRL_RX
        | CTRL_VLAN
        | CTRL_MAC_ADDR
        | ANY_LAYOUT
        | MQ
        | RSS
        | HASH_REPORT
        | crate::virtio::features::RING_INDIRECT_DESC
        | crate::virtio::features::RING_EVENT_IDX
        | crate::virtio::features::VERSION_1
        | crate::virtio::features::RING_PACKED
        | crate::virtio::features::IN_ORDER;

    /// Names for feature lists in configuration files and messages.
    pub const NAMES: [(&str, u64); 17] = [
        ("mtu", MTU),
        ("mac", MAC),
        ("mrg_rxbuf", MRG_RXBUF),
        ("status", STATUS),
        ("ctrl_vq", CTRL_VQ),
        ("ctrl_rx", CTRL_RX),
        ("ctrl_vlan", CTRL_VLAN),
        ("ctrl_mac_addr", CTRL_MAC_ADDR),
        ("any_layout", ANY_LAYOUT),
        ("indirect_desc", crate::virtio::features::RING_INDIRECT_DESC),
        ("event_idx", crate::virtio::features::RING_EVENT_IDX),
        ("version_1", crate::virtio::features::VERSION_1),
        ("ring_packed", crate::virtio::features::RING_PACKED),
        ("in_order", crate::virtio::features::IN_ORDER),
        ("mq", MQ),
        ("rss", RSS),
        ("hash_report", HASH_REPORT),
    ];

    /// The bit called `name` in [`NAMES`].
    pub fn by_name(name: &str) -> Option<u64> {
        NAMES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
    }
}

/// `struct virtio_net_config` offsets (see the module's table).
pub mod config {
    pub const MAC: usize = 0;
    pub const STATUS: usize = 6;
    pub const MAX_VIRTQUEUE_PAIRS: usize = 8;
    pub const MTU: usize = 10;
    pub const SPEED: usize = 12;
    pub const DUPLEX: usize = 16;
    pub const RSS_MAX_KEY_SIZE: usize = 17;
    pub const RSS_MAX_INDIRECTION_TABLE_LENGTH: usize = 18;
    pub const SUPPORTED_HASH_TYPES: usize = 20;
    /// Without RSS and hash reports: up to the MTU.
    pub const SIZE: usize = 12;
    /// With them: up to `supported_hash_types`.
    pub const SIZE_RSS: usize = 24;
}

const NET_S_LINK_UP: u16 = 1;

/// `struct virtio_net_hdr_v1` (VERSION_1 or MRG_RXBUF: `num_buffers` is present).
pub const NET_HDR_LEN: usize = 12;
/// The legacy header, without `num_buffers`.
pub const NET_HDR_LEN_LEGACY: usize = 10;
/// `struct virtio_net_hdr_v1_hash` (VIRTIO_NET_F_HASH_REPORT): the v1 header, then le32
/// `hash_value`, le16 `hash_report` and le16 `padding_reserved`.
pub const NET_HDR_LEN_HASH: usize = 20;

/// Offsets in the header.
pub mod hdr {
    pub const NUM_BUFFERS: usize = 10;
    pub const HASH_VALUE: usize = 12;
    pub const HASH_REPORT: usize = 16;
}

/// Header size for a negotiated feature set (both directions).
pub fn hdr_len(negotiated: u64) -> usize {
    if negotiated & features::HASH_REPORT != 0 {
        NET_HDR_LEN_HASH
    } else if negotiated & (virtio::features::VERSION_1 | features::MRG_RXBUF) != 0 {
        NET_HDR_LEN
    } else {
        NET_HDR_LEN_LEGACY
    }
}

/// Take the link down once `after` frames were delivered, and up again `down_for` later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkFlap {
    pub after: u64,
    pub down_for: Duration,
}

/// How the device presents itself.
#[derive(Clone, Debug)]
pub struct NetConfig {
    pub mac: [u8; 6],
    /// Maximum size of each queue.
    pub queue_size: u16,
    /// Queue pairs the device has (`max_virtqueue_pairs`, 1 to [`QueueLayout::MAX_PAIRS`]).
    /// With more than one it offers VIRTIO_NET_F_MQ, VIRTIO_NET_F_RSS and
    /// VIRTIO_NET_F_HASH_REPORT (those of them [`NetConfig::features`] has).
    pub max_queue_pairs: u16,
    /// Largest frame (without FCS) the device carries in either direction. With
    /// VIRTIO_NET_F_MTU the device reports `max_frame - 18` as its MTU.
    pub max_frame: usize,
    /// Features offered to the driver.
    pub features: u64,
    /// CPU the datapath thread runs on; `None` leaves it to the scheduler.
    pub datapath_cpu: Option<usize>,
    pub link_flap: Option<LinkFlap>,
    /// Deliver nothing from the source until [`NetShared::open_input`]: a harness opens it
    /// when the guest says its port is set up, so no frame meets a half-programmed filter
    /// and every run sees the same frames. Off, frames flow from DRIVER_OK.
    pub hold_input: bool,
    /// Faults the rust backend injects (none by default).
    pub faults: FaultConfig,
}

/// The Ethernet MTU's frame: 1500 bytes of payload, a 14-byte header, a VLAN tag.
pub const DEFAULT_MAX_FRAME: usize = 1518;
/// Largest frame the device may be configured for: a 9000-byte MTU jumbo with a VLAN tag,
/// and some room.
pub const MAX_FRAME_LIMIT: usize = 16 * 1024;

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            queue_size: 256,
            max_queue_pairs: 1,
            max_frame: DEFAULT_MAX_FRAME,
            features: features::DEFAULT,
            datapath_cpu: None,
            link_flap: None,
            hold_input: false,
            faults: FaultConfig::default(),
        }
    }
}

/// Datapath counters, readable while the datapath runs.
#[derive(Debug)]
pub struct NetStats {
    /// Frames taken from the source.
    pub source_frames: AtomicU64,
    /// Frames placed in the guest's rx ring.
    pub rx_delivered: AtomicU64,
    /// The same per queue pair (receiveq k + 1 at index k).
    pub rx_delivered_per_queue: Vec<AtomicU64>,
    pub rx_bytes: AtomicU64,
    /// Frames dropped because the guest's rx buffers were too small for them.
    pub rx_dropped: AtomicU64,
    /// Frames the receive filter rejected (control-queue settings).
    pub rx_filtered: AtomicU64,
    /// Rx chains the driver built wrong (a device-readable buffer, memory outside RAM).
    pub rx_malformed: AtomicU64,
    /// Frames the guest transmitted and the sink took.
    pub tx_frames: AtomicU64,
    /// The same per queue pair (transmitq k + 1 at index k).
    pub tx_frames_per_queue: Vec<AtomicU64>,
    pub tx_bytes: AtomicU64,
    /// Transmitted frames dropped for being larger than the device's maximum frame.
    pub tx_dropped: AtomicU64,
    /// Tx chains the driver built wrong (write-only buffers, shorter than the header,
    /// memory outside RAM).
    pub tx_malformed: AtomicU64,
    /// Frames the guest transmitted while the link was down.
    pub tx_while_link_down: AtomicU64,
    /// Control commands answered OK and answered ERR.
    pub ctrl_ok: AtomicU64,
    pub ctrl_err: AtomicU64,
    /// Notifications (kicks) received from the driver, per queue index: each pair's rx and
    /// tx, then the control queue (a slot for it whether or not the device has one).
    pub kicks: Vec<AtomicU64>,
    /// Interrupts the datapath raised.
    pub interrupts: AtomicU64,
    /// Set once every source frame was delivered or dropped and the source has ended.
    pub input_drained: AtomicBool,
    /// What the injected faults did.
    pub faults: Arc<FaultStats>,
    /// Why the datapath stopped on its own (a sink that could not write), if it did.
    failure: Mutex<Option<String>>,
}

/// A plain copy of [`NetStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub source_frames: u64,
    pub rx_delivered: u64,
    /// Per queue pair, as [`NetStats::rx_delivered_per_queue`].
    pub rx_delivered_per_queue: Vec<u64>,
    pub rx_bytes: u64,
    pub rx_dropped: u64,
    pub rx_filtered: u64,
    pub rx_malformed: u64,
    pub tx_frames: u64,
    /// Per queue pair, as [`NetStats::tx_frames_per_queue`].
    pub tx_frames_per_queue: Vec<u64>,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
    pub tx_malformed: u64,
    pub tx_while_link_down: u64,
    pub ctrl_ok: u64,
    pub ctrl_err: u64,
    /// Per queue index, as [`NetStats::kicks`].
    pub kicks: Vec<u64>,
    pub interrupts: u64,
    pub input_drained: bool,
    pub faults: FaultCounters,
}

/// Counters for one queue pair and the control queue.
impl Default for NetStats {
    fn default() -> Self {
        Self::new(1)
    }
}

impl NetStats {
    /// Counters for a device of `pairs` queue pairs.
    pub fn new(pairs: u16) -> Self {
        let layout = QueueLayout::offered(pairs, features::CTRL_VQ);
        let queues = usize::from(layout.len());
        let per_pair = || (0..layout.pairs()).map(|_| AtomicU64::default()).collect();
        Self {
            source_frames: AtomicU64::default(),
            rx_delivered: AtomicU64::default(),
            rx_delivered_per_queue: per_pair(),
            rx_bytes: AtomicU64::default(),
            rx_dropped: AtomicU64::default(),
            rx_filtered: AtomicU64::default(),
            rx_malformed: AtomicU64::default(),
            tx_frames: AtomicU64::default(),
            tx_frames_per_queue: per_pair(),
            tx_bytes: AtomicU64::default(),
            tx_dropped: AtomicU64::default(),
            tx_malformed: AtomicU64::default(),
            tx_while_link_down: AtomicU64::default(),
            ctrl_ok: AtomicU64::default(),
            ctrl_err: AtomicU64::default(),
            kicks: (0..queues).map(|_| AtomicU64::default()).collect(),
            interrupts: AtomicU64::default(),
            input_drained: AtomicBool::default(),
            faults: Arc::default(),
            failure: Mutex::default(),
        }
    }

    pub fn snapshot(&self) -> NetCounters {
        let g = |a: &AtomicU64| a.load(Ordering::Acquire);
        NetCounters {
            source_frames: g(&self.source_frames),
            rx_delivered: g(&self.rx_delivered),
            rx_delivered_per_queue: self.rx_delivered_per_queue.iter().map(g).collect(),
            rx_bytes: g(&self.rx_bytes),
            rx_dropped: g(&self.rx_dropped),
            rx_filtered: g(&self.rx_filtered),
            rx_malformed: g(&self.rx_malformed),
            tx_frames: g(&self.tx_frames),
            tx_frames_per_queue: self.tx_frames_per_queue.iter().map(g).collect(),
            tx_bytes: g(&self.tx_bytes),
            tx_dropped: g(&self.tx_dropped),
            tx_malformed: g(&self.tx_malformed),
            tx_while_link_down: g(&self.tx_while_link_down),
            ctrl_ok: g(&self.ctrl_ok),
            ctrl_err: g(&self.ctrl_err),
            kicks: self.kicks.iter().map(g).collect(),
            interrupts: g(&self.interrupts),
            input_drained: self.input_drained.load(Ordering::Acquire),
            faults: self.faults.snapshot(),
        }
    }

    /// Why the datapath failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_failure(&self, why: String) {
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        f.get_or_insert(why);
    }
}

/// What the configuration space shows and the datapath changes: the MAC (a driver may set
/// it) and the link state (the host may flap it). Shared by the transport's thread and the
/// datapath's.
pub struct NetShared {
    mac: Mutex<[u8; 6]>,
    link_up: AtomicBool,
    /// The driver read the status field while the link was down.
    down_seen: AtomicBool,
    input_open: AtomicBool,
    generation: AtomicU8,
    interrupt: Mutex<Option<Arc<dyn Interrupt>>>,
}

impl NetShared {
    /// The state at power-on: the configured MAC, link up, the input held if asked.
    pub fn new(cfg: &NetConfig) -> Arc<Self> {
        Arc::new(Self {
            mac: Mutex::new(cfg.mac),
            link_up: AtomicBool::new(true),
            down_seen: AtomicBool::new(false),
            input_open: AtomicBool::new(!cfg.hold_input),
            generation: AtomicU8::new(0),
            interrupt: Mutex::new(None),
        })
    }

    pub fn mac(&self) -> [u8; 6] {
        *self.mac.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_mac(&self, mac: [u8; 6]) {
        *self.mac.lock().unwrap_or_else(|e| e.into_inner()) = mac;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn link_up(&self) -> bool {
        self.link_up.load(Ordering::Acquire)
    }

    /// Whether the driver has read the link status since the link went down.
    pub(crate) fn down_seen(&self) -> bool {
        self.down_seen.load(Ordering::Acquire)
    }

    /// Lets the source's frames flow (see [`NetConfig::hold_input`]).
    pub fn open_input(&self) {
        self.input_open.store(true, Ordering::Release);
    }

    pub fn input_open(&self) -> bool {
        self.input_open.load(Ordering::Acquire)
    }

    /// Sets the link state as the host sees it; on a change, bumps the configuration
    /// generation and raises the configuration-change interrupt (5.1.4.2).
    pub fn set_link(&self, up: bool) {
        self.change_link(up, true);
    }

    /// [`NetShared::set_link`], with the interrupt only if `notify` (a fault may withhold it).
    pub(crate) fn change_link(&self, up: bool, notify: bool) {
        if self.link_up.swap(up, Ordering::AcqRel) == up {
            return;
        }
        // The configuration changed either way; only the interrupt may be withheld.
        self.down_seen.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        if !notify {
            return;
        }
        let irq = self
            .interrupt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(irq) = irq {
            irq.config_changed();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the rust backend's datapath thread panicked: {0}")]
    DatapathPanicked(String),
    #[error("the rust backend's datapath failed: {0}")]
    Datapath(String),
    #[error("the endpoint was lost when an earlier datapath failed")]
    EndpointLost,
}

struct Running {
    stop: Arc<AtomicBool>,
    /// The datapath, or the control queue's thread beside a vhost backend (none without a
    /// control queue).
    thread: Option<JoinHandle<DatapathEnd>>,
}

/// Who serves the rx and tx queues.
pub enum Backend {
    /// The rust datapath, between a source and a sink.
    Rust {
        source: Box<dyn Source>,
        sink: Box<dyn Sink>,
    },
    /// A vhost backend (kernel or user); this process serves the control queue only.
    Vhost(Box<dyn Dataplane>),
}

/// A virtio-net device: its configuration space and control queue here, its data queues
/// served by the rust datapath or a vhost backend.
pub struct Net {
    cfg: NetConfig,
    shared: Arc<NetShared>,
    /// The rust datapath's endpoints while it is not running.
    endpoints: Option<(Box<dyn Source>, Box<dyn Sink>)>,
    vhost: Option<Box<dyn Dataplane>>,
    running: Option<Running>,
    stats: Arc<NetStats>,
}

impl Net {
    /// A device served by the rust datapath between `source` and `sink`.
    pub fn new(cfg: NetConfig, source: Box<dyn Source>, sink: Box<dyn Sink>) -> Self {
        Self::with_backend(cfg, Backend::Rust { source, sink })
    }

    pub fn with_backend(cfg: NetConfig, backend: Backend) -> Self {
        let shared = NetShared::new(&cfg);
        let stats = Arc::new(NetStats::new(cfg.max_queue_pairs));
        let (endpoints, vhost) = match backend {
            Backend::Rust { source, sink } => {
                let source: Box<dyn Source> = if cfg.faults.touches_frames() {
                    Box::new(Faulty::new(
                        source,
                        cfg.faults.clone(),
                        stats.faults.clone(),
                    ))
                } else {
                    source
                };
                (Some((source, sink)), None)
            }
            Backend::Vhost(v) => (None, Some(v)),
        };
        Self {
            cfg,
            shared,
            endpoints,
            vhost,
            running: None,
            stats,
        }
    }

    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// Queue pairs the device has (`max_virtqueue_pairs`): as configured, and no more than
    /// a vhost backend serves.
    pub fn max_pairs(&self) -> u16 {
        let pairs = self.cfg.max_queue_pairs.clamp(1, QueueLayout::MAX_PAIRS);
        match &self.vhost {
            Some(v) => pairs.min(v.max_pairs().max(1)),
            None => pairs,
        }
    }

    /// The features the device offers before a vhost backend has its say: the configured
    /// ones, the multiqueue ones only with several pairs and the control queue.
    fn own_features(&self) -> u64 {
        let mut f = self.cfg.features;
        if f & features::CTRL_VQ == 0 || self.max_pairs() < 2 {
            f &= !features::MULTIQUEUE;
        }
        if f & features::MQ == 0 {
            // RSS and hash reports come with multiqueue on this device.
            f &= !(features::RSS | features::HASH_REPORT);
        }
        f
    }

    pub fn stats(&self) -> Arc<NetStats> {
        self.stats.clone()
    }

    /// The MAC and link state, for the host side to read and change.
    pub fn shared(&self) -> Arc<NetShared> {
        self.shared.clone()
    }

    /// Stops the datapath. Returns the sink, for the caller to finish whether or not the
    /// datapath failed (it holds every frame written until then; a vhost backend's output
    /// is not ours: an empty sink), and the datapath's failure, if it had one.
    pub fn shutdown(&mut self) -> (Box<dyn Sink>, Result<(), Error>) {
        let stopped = self.stop();
        // Closing the session (the vhost-net descriptor, the vhost-user connection) tells the
        // backend the device is gone.
        let vhost = self.vhost.take();
        let sink = match (vhost, self.endpoints.take()) {
            (None, Some((_, sink))) => Ok(sink),
            (None, None) => Err(Error::EndpointLost),
            (Some(_), _) => Ok(Box::<NullSink>::default() as Box<dyn Sink>),
        };
        let failed = match (stopped, self.stats.failure()) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(why)) => Err(Error::Datapath(why)),
            (Ok(()), None) => Ok(()),
        };
        match sink {
            Ok(sink) => (sink, failed),
            Err(lost) => (Box::<NullSink>::default(), failed.and(Err(lost))),
        }
    }

    /// Stops a running datapath and takes the endpoints back.
    fn stop(&mut self) -> Result<(), Error> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        running.stop.store(true, Ordering::Release);
        if let Some(vhost) = self.vhost.as_mut() {
            if let Err(e) = vhost.stop() {
                self.stats.set_failure(e.to_string());
            }
        }
        let Some(thread) = running.thread else {
            return Ok(());
        };
        match thread.join() {
            Ok(end) => {
                // The control path beside a vhost backend had no endpoints of ours.
                if self.vhost.is_none() {
                    self.endpoints = Some((end.source, end.sink));
                }
                Ok(())
            }
            Err(panic) => {
                let msg = crate::panic::message(&*panic);
                self.stats
                    .set_failure(format!("datapath thread panicked: {msg}"));
                Err(Error::DatapathPanicked(msg))
            }
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u16 {
        DEVICE_TYPE
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        let layout = QueueLayout::offered(self.max_pairs(), self.cfg.features);
        vec![self.cfg.queue_size; usize::from(layout.len())]
    }

    /// The configured features (the multiqueue ones with several pairs), less what a vhost
    /// backend cannot serve (see [`Dataplane::offer`]).
    fn features(&self) -> u64 {
        let f = self.own_features();
        match &self.vhost {
            Some(v) => v.offer(f),
            None => f,
        }
    }

    /// 5.1.3.1: the control-queue features need VIRTIO_NET_F_CTRL_VQ.
    fn features_consistent(&self, f: u64) -> bool {
        f & features::CTRL_VQ != 0 || f & features::NEEDS_CTRL_VQ == 0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut space = [0u8; config::SIZE_RSS];
        let offered = self.features();
        space[config::MAC..config::MAC + 6].copy_from_slice(&self.shared.mac());
        let status = if self.shared.link_up() {
            NET_S_LINK_UP
        } else {
            let s = config::STATUS as u64;
            if offset < s + 2 && s < offset + data.len() as u64 {
                self.shared.down_seen.store(true, Ordering::Release);
            }
            0
        };
        space[config::STATUS..config::STATUS + 2].copy_from_slice(&status.to_le_bytes());
        let pairs = QueueLayout::offered(self.max_pairs(), self.cfg.features).pairs();
        space[config::MAX_VIRTQUEUE_PAIRS..config::MAX_VIRTQUEUE_PAIRS + 2]
            .copy_from_slice(&pairs.to_le_bytes());
        let mtu = (self.cfg.max_frame.saturating_sub(18)).min(usize::from(u16::MAX)) as u16;
        space[config::MTU..config::MTU + 2].copy_from_slice(&mtu.to_le_bytes());
        let size = if offered & (features::RSS | features::HASH_REPORT) != 0 {
            space[config::SPEED..config::SPEED + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            space[config::DUPLEX] = 0xff;
            space[config::RSS_MAX_KEY_SIZE] = rss::MAX_KEY as u8;
            let table = config::RSS_MAX_INDIRECTION_TABLE_LENGTH;
            space[table..table + 2].copy_from_slice(&(rss::MAX_TABLE as u16).to_le_bytes());
            let types = config::SUPPORTED_HASH_TYPES;
            space[types..types + 4].copy_from_slice(&rss::hash_type::ALL.to_le_bytes());
            config::SIZE_RSS
        } else {
            config::SIZE
        };
        let space = &space[..size];
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| space.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // A modern driver sets the MAC through the control queue; the rest is read-only.
        tracing::debug!(
            "virtio-net: ignored {}-byte config write at {offset:#x}",
            data.len()
        );
    }

    fn config_generation(&self) -> u8 {
        self.shared.generation.load(Ordering::Acquire)
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        if self.running.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let layout = QueueLayout::in_use(self.max_pairs(), a.features);
        let mut queues = a.queues;
        let mut take = |index: u16| queues.get_mut(usize::from(index)).and_then(Option::take);
        let mut pairs = Vec::with_capacity(usize::from(layout.pairs()));
        // The first pair is required; with multiqueue the driver may set up fewer pairs than
        // the device has (it cannot enable the others: see `steering`). The pairs served are
        // the first ones with both queues.
        let mut gap = None;
        for pair in 0..layout.pairs() {
            let (rx, tx) = (QueueLayout::rx(pair), QueueLayout::tx(pair));
            match (take(rx), take(tx), pair) {
                (Some(rx), Some(tx), _) if gap.is_none() => pairs.push(QueuePair { rx, tx }),
                (None, _, 0) => return Err(ActivateError::QueueNotEnabled(rx)),
                (Some(_), None, 0) => return Err(ActivateError::QueueNotEnabled(tx)),
                (None, None, _) => {
                    gap.get_or_insert(pair);
                }
                (_, _, _) => {
                    let first = *gap.get_or_insert(pair);
                    tracing::warn!(
                        "virtio-net: pair {pair}'s queues are not served: the driver did not \
                         set up both queues of pair {first}"
                    );
                }
            }
        }
        // A control queue the driver enabled is served even if it did not negotiate
        // VIRTIO_NET_F_CTRL_VQ (its commands then need features it does not have).
        let ctrl = take(layout.ctrl_index());
        if let (Some(index), None) = (layout.ctrl(), &ctrl) {
            return Err(ActivateError::QueueNotEnabled(index));
        }
        *self
            .shared
            .interrupt
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(a.interrupt.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let parts = |source, sink| EngineParts {
            mem: a.mem.clone(),
            negotiated: a.features,
            interrupt: a.interrupt.clone(),
            health: a.health.clone(),
            source,
            sink,
            stats: self.stats.clone(),
            shared: self.shared.clone(),
        };
        let thread = if let Some(vhost) = self.vhost.as_mut() {
            if let Err(e) = vhost.start(
                &a.mem,
                a.features,
                &pairs,
                a.interrupt.clone(),
                self.stats.clone(),
            ) {
                // A host-side failure, not the driver's: it ends the run.
                self.stats.set_failure(e.to_string());
                let _ = vhost.stop();
                return Err(ActivateError::Datapath(e.to_string()));
            }
            let Some(ctrl) = ctrl else {
                self.running = Some(Running { stop, thread: None });
                return Ok(());
            };
            let cp = ControlPath::new(
                parts(Box::new(NullSource), Box::<NullSink>::default()),
                ctrl,
                pairs.len() as u16,
                stop.clone(),
                &self.cfg,
            );
            std::thread::Builder::new()
                .name("vlab-net-ctrl".into())
                .spawn(move || cp.run())
        } else {
            let Some((source, sink)) = self.endpoints.take() else {
                return Err(ActivateError::Datapath(
                    "the endpoint was lost earlier".into(),
                ));
            };
            let dp = Datapath::new(parts(source, sink), pairs, ctrl, stop.clone(), &self.cfg);
            let cpu = self.cfg.datapath_cpu;
            std::thread::Builder::new()
                .name("vlab-net".into())
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        if let Err(e) = crate::affinity::pin_current_thread(cpu) {
                            tracing::warn!("datapath: cannot pin to CPU {cpu}: {e}");
                        }
                    }
                    dp.run()
                })
        };
        let thread = thread.map_err(|e| ActivateError::Datapath(e.to_string()))?;
        self.running = Some(Running {
            stop,
            thread: Some(thread),
        });
        Ok(())
    }

    fn reset(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!("virtio-net reset: {e}");
        }
        *self
            .shared
            .interrupt
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        *self.shared.mac.lock().unwrap_or_else(|e| e.into_inner()) = self.cfg.mac;
        self.stats.input_drained.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests;
