//! A virtio-net port: device discovery, the virtio initialisation sequence (3.1.1), the burst
//! API of a DPDK ethdev (`rx_burst`, `tx_burst`, per queue), the control queue, multiqueue
//! and receive-side scaling ([`rss`]), link state, and DPDK's software VLAN offloads.
//!
//! A port is the n-th virtio-net function on the bus; it holds its queue pairs as a list
//! (virtio-net's queues 2k and 2k + 1 are pair k; the control queue comes after the last
//! pair the device has, `max_virtqueue_pairs`, whether the driver uses them all or not)
//! and takes its interrupts on vectors of its own ([`irq`]).

mod ctrl;
#[cfg(test)]
pub(crate) mod fake_dev;
pub mod irq;
#[cfg(test)]
mod mq_tests;
#[cfg(test)]
mod path_tests;
mod posted;
pub mod rss;
mod rx;
#[cfg(test)]
mod tests;
mod tx;
mod vlan;

use alloc::vec::Vec;

use crate::hal::Hal;
use crate::mbuf::{Mbuf, MbufPool};
use crate::msix;
use crate::pci::{self, Bdf, ConfigSpace};
use crate::transport::{self, status, AnyTransport, Kind, Transport};
use crate::virtqueue::{self, Layout, Options, Virtqueue};
pub use ctrl::{class as ctrl_class, cmd as ctrl_cmd, CtrlError};
pub use irq::config_vector;
use rss::Steering;
use rx::{RxParams, RxQueue};
use tx::TxQueue;
pub use vlan::TX_VLAN;

pub const VIRTIO_VENDOR: u16 = 0x1af4;
/// Modern (virtio 1.x only) network device ID.
pub const DEVICE_ID_MODERN: u16 = 0x1041;
/// Transitional network device ID (legacy and modern interfaces).
pub const DEVICE_ID_TRANSITIONAL: u16 = 0x1000;

/// Feature bits this driver knows (virtio 1.x, 5.1.3 and 6).
pub mod features {
    pub const MTU: u64 = 1 << 3;
    pub const MAC: u64 = 1 << 5;
    pub const MRG_RXBUF: u64 = 1 << 15;
    pub const STATUS: u64 = 1 << 16;
    pub const CTRL_VQ: u64 = 1 << 17;
    pub const CTRL_RX: u64 = 1 << 18;
    pub const CTRL_VLAN: u64 = 1 << 19;
    /// Several queue pairs, steered automatically or by RSS (5.1.6.5.5).
    pub const MQ: u64 = 1 << 22;
    pub const CTRL_MAC_ADDR: u64 = 1 << 23;
    pub const ANY_LAYOUT: u64 = 1 << 27;
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    pub const VERSION_1: u64 = 1 << 32;
    /// Packed virtqueues (2.8); needs VERSION_1, so never on the legacy interface.
    pub const RING_PACKED: u64 = 1 << 34;
    /// The device uses buffers in the order they were made available (2.7.9, 2.8.8).
    pub const IN_ORDER: u64 = 1 << 35;
    /// The receive header carries the frame's hash and what it covers (5.1.6.4.3).
    pub const HASH_REPORT: u64 = 1 << 57;
    /// Receive-side scaling: the driver configures the hash and the indirection table
    /// (5.1.6.5.7).
    pub const RSS: u64 = 1 << 60;

    /// Features that only make sense with the control queue (5.1.3.1).
    pub const NEEDS_CTRL_VQ: u64 = CTRL_RX | CTRL_VLAN | CTRL_MAC_ADDR | MQ | RSS | HASH_REPORT;

    /// Every feature this driver can use.
    pub const ALL: u64 = MTU
        | MAC
        | MRG_RXBUF
        | STATUS
        | CTRL_VQ
        | CTRL_RX
        | CTRL_VLAN
        | CTRL_MAC_ADDR
        | ANY_LAYOUT
        | RING_INDIRECT_DESC
        | RING_EVENT_IDX
        | VERSION_1
        | RING_PACKED
        | IN_ORDER
        | MQ
        | HASH_REPORT
        | RSS;

    /// Names, for the log, in bit order.
    pub const NAMES: [(u64, &str); 17] = [
        (MTU, "MTU"),
        (MAC, "MAC"),
        (MRG_RXBUF, "MRG_RXBUF"),
        (STATUS, "STATUS"),
        (CTRL_VQ, "CTRL_VQ"),
        (CTRL_RX, "CTRL_RX"),
        (CTRL_VLAN, "CTRL_VLAN"),
        (MQ, "MQ"),
        (CTRL_MAC_ADDR, "CTRL_MAC_ADDR"),
        (ANY_LAYOUT, "ANY_LAYOUT"),
        (RING_INDIRECT_DESC, "INDIRECT_DESC"),
        (RING_EVENT_IDX, "EVENT_IDX"),
        (VERSION_1, "VERSION_1"),
        (RING_PACKED, "RING_PACKED"),
        (IN_ORDER, "IN_ORDER"),
        (HASH_REPORT, "HASH_REPORT"),
        (RSS, "RSS"),
    ];
}

/// Offsets in `struct virtio_net_config` (virtio 1.2, 5.1.4).
pub mod config {
    pub const MAC: u16 = 0;
    pub const STATUS: u16 = 6;
    /// le16, valid with VIRTIO_NET_F_MQ or VIRTIO_NET_F_RSS.
    pub const MAX_VIRTQUEUE_PAIRS: u16 = 8;
    pub const MTU: u16 = 10;
    /// u8, valid with VIRTIO_NET_F_RSS or VIRTIO_NET_F_HASH_REPORT (after le32 `speed` at
    /// 12 and u8 `duplex` at 16).
    pub const RSS_MAX_KEY_SIZE: u16 = 17;
    /// le16, valid with VIRTIO_NET_F_RSS.
    pub const RSS_MAX_INDIRECTION_TABLE_LENGTH: u16 = 18;
    /// le32, valid with VIRTIO_NET_F_RSS or VIRTIO_NET_F_HASH_REPORT.
    pub const SUPPORTED_HASH_TYPES: u16 = 20;
}

const NET_S_LINK_UP: u16 = 1;

/// `struct virtio_net_hdr_v1`: with VERSION_1 or MRG_RXBUF `num_buffers` is present.
pub const NET_HDR_LEN: usize = 12;
/// The legacy header without `num_buffers`.
pub const NET_HDR_LEN_LEGACY: usize = 10;
/// The v1 header with hash (VIRTIO_NET_F_HASH_REPORT): `struct virtio_net_hdr_v1` and le32
/// `hash_value`, le16 `hash_report`, le16 `padding_reserved`.
pub const NET_HDR_LEN_HASH: usize = 20;

/// Offsets of fields in the virtio-net header.
pub mod hdr {
    /// le16, with VERSION_1 or MRG_RXBUF.
    pub const NUM_BUFFERS: usize = 10;
    /// le32, with HASH_REPORT.
    pub const HASH_VALUE: usize = 12;
    /// le16, with HASH_REPORT.
    pub const HASH_REPORT: usize = 16;
}

/// Entries of each tx indirect table: the most segments one frame may have that way.
pub const MAX_TX_SEGS: u16 = 32;

/// Most queue pairs a port sets up: the rx and tx queues of 15 pairs are 30 queues, and
/// each has an interrupt vector of its own ([`irq::MAX_QUEUE_VECTORS`]).
pub const MAX_QUEUE_PAIRS: u16 = (irq::MAX_QUEUE_VECTORS - 1) / 2;

/// The device's receive queue of pair `pair`.
pub const fn rx_queue(pair: u16) -> u16 {
    2 * pair
}

/// The device's transmit queue of pair `pair`.
pub const fn tx_queue(pair: u16) -> u16 {
    2 * pair + 1
}

/// The device's control queue, after `pairs` queue pairs.
pub const fn ctrl_queue(pairs: u16) -> u16 {
    2 * pairs
}

/// Whether a PCI vendor and device ID are a virtio-net function (modern or transitional).
pub fn is_virtio_net(vendor: u16, device: u16) -> bool {
    vendor == VIRTIO_VENDOR && (device == DEVICE_ID_MODERN || device == DEVICE_ID_TRANSITIONAL)
}

/// The `nth` virtio-net function on bus 0 (0 is the first, in bus order) and its device
/// ID. Scans no further than that function.
pub fn find_function<H: Hal>(hal: &H, nth: u8) -> Result<(Bdf, u16), Error> {
    let mut seen = 0u8;
    pci::find_on_bus0(hal, |bdf, vendor, device| {
        if !is_virtio_net(vendor, device) {
            return None;
        }
        if seen == nth {
            return Some((bdf, device));
        }
        seen += 1;
        None
    })
    .ok_or(if seen == 0 {
        Error::NoDevice
    } else {
        Error::NoSuchPort {
            port: nth,
            found: seen,
        }
    })
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("no virtio-net PCI function (1af4:1041 or 1af4:1000) on bus 0")]
    NoDevice,
    #[error("no port {port}: bus 0 has {found} virtio-net PCI functions, ports 0 to {last}", last = .found - 1)]
    NoSuchPort { port: u8, found: u8 },
    #[error("port {0}: interrupt vectors are planned for {max} ports", max = irq::MAX_PORTS)]
    TooManyPorts(u8),
    #[error("the virtio-net function is modern-only (1af4:1041): it has no legacy interface")]
    NotTransitional,
    #[error(transparent)]
    Transport(#[from] transport::Error),
    #[error(transparent)]
    Pci(#[from] pci::Error),
    #[error("MSI-X for link-state interrupts: {0}")]
    Msix(#[from] msix::Error),
    #[error(transparent)]
    Queue(#[from] virtqueue::Error),
    #[error("device does not offer VIRTIO_F_VERSION_1 (features {0:#x})")]
    NotVersion1(u64),
    #[error("device refused features {0:#x} (FEATURES_OK did not stick)")]
    FeaturesRefused(u64),
    #[error("device has {0} queues, a net port needs {1}")]
    TooFewQueues(u16, u32),
    #[error("{asked} queue pairs asked for, but the device offers {max}{why}", why = if *.multiqueue { "" } else { " (neither VIRTIO_NET_F_MQ nor VIRTIO_NET_F_RSS is negotiated)" })]
    TooManyQueuePairs {
        asked: u16,
        max: u16,
        multiqueue: bool,
    },
    #[error("{0} queue pairs asked for: a port sets up 1 to {MAX_QUEUE_PAIRS}")]
    QueuePairsOutOfPlan(u16),
    #[error("the device's max_virtqueue_pairs is {0}, outside 1 to 32768")]
    BadMaxQueuePairs(u16),
    #[error("RSS settings asked for, but neither VIRTIO_NET_F_RSS nor VIRTIO_NET_F_HASH_REPORT is negotiated")]
    RssNotNegotiated,
    #[error("an indirection table or unclassified queue asked for, but VIRTIO_NET_F_RSS is not negotiated (only VIRTIO_NET_F_HASH_REPORT)")]
    SteeringNeedsRss,
    #[error("RSS: {0}")]
    Rss(#[from] rss::Error),
    #[error("control command {what}: {err}")]
    Ctrl { what: &'static str, err: CtrlError },
    #[error("mbuf headroom {headroom} is smaller than the {needed}-byte virtio-net header")]
    HeadroomTooSmall { headroom: u16, needed: usize },
    #[error("ring size {0} is not a power of two between 1 and 32768")]
    BadRingSize(u16),
    #[error("queue {queue}: the device offers size {size}, not a usable ring size")]
    DeviceRingSize { queue: u16, size: u16 },
    #[error("link-state interrupts asked for, but no interrupts reach this driver")]
    NoInterrupts,
    #[error("the device did not accept MSI-X vector {0} for configuration changes")]
    ConfigVectorRefused(u16),
    #[error("the device set DEVICE_NEEDS_RESET when the driver set DRIVER_OK (status {0:#x})")]
    DeviceNeedsReset(u8),
}

impl Error {
    /// Whether the application asked for what cannot be had (a configuration error, as
    /// opposed to a device that does not work).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Error::HeadroomTooSmall { .. }
                | Error::TooManyQueuePairs { .. }
                | Error::QueuePairsOutOfPlan(_)
                | Error::RssNotNegotiated
                | Error::SteeringNeedsRss
                | Error::Rss(_)
        )
    }
}

/// What the application asks of the port.
#[derive(Clone, Debug)]
pub struct PortConfig {
    pub transport: Kind,
    pub rx_ring: u16,
    pub tx_ring: u16,
    /// Queue pairs to set up (1 to [`MAX_QUEUE_PAIRS`], at most what the device offers).
    pub queue_pairs: u16,
    /// Hashing and steering, sent when the device has VIRTIO_NET_F_RSS (or
    /// VIRTIO_NET_F_HASH_REPORT alone, for the hash and key); the defaults when empty.
    pub rss: rss::Request,
    /// Features the driver would like; the port negotiates the intersection with the
    /// device's offer (VERSION_1 is required on the modern interface).
    pub features: u64,
    /// Take configuration-change interrupts and follow the link state.
    pub lsc: bool,
    /// Strip VLAN tags on receive into the mbuf (DPDK's software VLAN strip).
    pub vlan_strip: bool,
    /// Feature bits to accept even if the device did not offer them (misbehaving on
    /// purpose, to see the device refuse).
    pub force_features: u64,
    /// Size to write to queue 0 before the real setup, reading back what the device keeps.
    pub probe_queue_size: Option<u16>,
}

impl Default for PortConfig {
    fn default() -> Self {
        Self {
            transport: Kind::Modern,
            rx_ring: 256,
            tx_ring: 256,
            queue_pairs: 1,
            rss: rss::Request::default(),
            features: features::ALL,
            lsc: false,
            vlan_strip: false,
            force_features: 0,
            probe_queue_size: None,
        }
    }
}

/// Port counters, named as DPDK's `rte_eth_stats`, plus link events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub ipackets: u64,
    pub ibytes: u64,
    /// Received frames dropped because the device returned something malformed.
    pub ierrors: u64,
    /// Times the rx ring could not be refilled because the pool was empty.
    pub rx_nombuf: u64,
    pub opackets: u64,
    pub obytes: u64,
    /// Transmitted frames the driver could not hand to the device, or that the device
    /// returned malformed.
    pub oerrors: u64,
    pub link_down: u64,
    pub link_up: u64,
    /// Frames received in more than one buffer (mergeable rx).
    pub rx_multiseg: u64,
    /// Frames sent as a chain of several buffers, and how many of those went through an
    /// indirect table.
    pub tx_multiseg: u64,
    pub tx_indirect: u64,
}

/// A ring size the port changed from what was asked, for the application to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingAdjusted {
    pub queue: u16,
    pub asked: u16,
    pub used: u16,
}

/// One receive and one transmit queue: pair k is the device's queues 2k and 2k + 1.
struct QueuePair<'a, H: Hal> {
    rx: RxQueue<'a, H>,
    tx: TxQueue<'a, H>,
}

pub struct Port<'a, H: Hal> {
    hal: &'a H,
    /// Which virtio-net function of the bus this is (0 the first).
    id: u8,
    transport: AnyTransport<'a, H>,
    pool: &'a MbufPool,
    features: u64,
    hdr_len: usize,
    mac: [u8; 6],
    mtu: Option<u16>,
    /// The queue pairs set up, pair k at index k.
    pairs: Vec<QueuePair<'a, H>>,
    /// Queue pairs the device has (`max_virtqueue_pairs`; 1 without MQ or RSS).
    max_pairs: u16,
    /// What hashing and steering was configured.
    steering: Option<Steering>,
    ctrl: Option<ctrl::CtrlQueue<'a, H>>,
    lsc: bool,
    irq_seen: u32,
    link_up: bool,
    vlan_strip: bool,
    pub stats: Stats,
    pub adjusted: Vec<RingAdjusted>,
    /// What queue 0 read back after `PortConfig::probe_queue_size` was written.
    pub probed_queue_size: Option<u16>,
}

impl<'a, H: Hal> Port<'a, H> {
    /// Opens port `id`: finds the `id`-th virtio-net function on the bus (0 the first),
    /// initialises it and fills its rx rings.
    pub fn open(hal: &'a H, pool: &'a MbufPool, id: u8, cfg: &PortConfig) -> Result<Self, Error> {
        for size in [cfg.rx_ring, cfg.tx_ring] {
            if size == 0 || size > virtqueue::MAX_SIZE || !size.is_power_of_two() {
                return Err(Error::BadRingSize(size));
            }
        }
        if cfg.queue_pairs == 0 || cfg.queue_pairs > MAX_QUEUE_PAIRS {
            return Err(Error::QueuePairsOutOfPlan(cfg.queue_pairs));
        }
        if id >= irq::MAX_PORTS {
            return Err(Error::TooManyPorts(id));
        }
        let (bdf, device) = find_function(hal, id)?;
        if cfg.transport == Kind::Legacy && device != DEVICE_ID_TRANSITIONAL {
            return Err(Error::NotTransitional);
        }
        let cfg_space = ConfigSpace::new(hal, bdf);
        if cfg.lsc {
            if !hal.interrupts_available() {
                return Err(Error::NoInterrupts);
            }
            // Before the legacy probe: enabling MSI-X moves the legacy device configuration.
            msix::enable(
                hal,
                &cfg_space,
                irq::CONFIG_MSIX_ENTRY,
                irq::config_vector(id),
            )?;
        }
        let mut transport = AnyTransport::probe(hal, &cfg_space, cfg.transport)?;
        let legacy = cfg.transport == Kind::Legacy;

        // 3.1.1: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues, DRIVER_OK.
        transport.reset();
        transport.add_status(status::ACKNOWLEDGE);
        transport.add_status(status::DRIVER);
        let offered = transport.device_features();
        if !legacy && offered & features::VERSION_1 == 0 {
            transport.add_status(status::FAILED);
            return Err(Error::NotVersion1(offered));
        }
        let mut wanted = cfg.features;
        if legacy {
            // The legacy interface has 32 feature bits and no VERSION_1: no packed rings
            // (they need VERSION_1), no IN_ORDER (bit 35).
            wanted &= 0xffff_ffff;
        }
        let mut negotiated = offered & wanted;
        if negotiated & features::CTRL_VQ == 0 {
            // 5.1.3.1: the control-queue features need the control queue.
            negotiated &= !features::NEEDS_CTRL_VQ;
        }
        let negotiated = negotiated | cfg.force_features;
        transport.set_driver_features(negotiated);
        if !legacy {
            transport.add_status(status::FEATURES_OK);
            if transport.status() & status::FEATURES_OK == 0 {
                transport.add_status(status::FAILED);
                return Err(Error::FeaturesRefused(negotiated));
            }
        }
        // What the device sees: forced bits above 31 never reach a legacy device.
        let effective = if legacy {
            negotiated & 0xffff_ffff
        } else {
            negotiated
        };
        let hdr_len = if effective & features::HASH_REPORT != 0 {
            NET_HDR_LEN_HASH
        } else if negotiated & (features::VERSION_1 | features::MRG_RXBUF) != 0 {
            NET_HDR_LEN
        } else {
            NET_HDR_LEN_LEGACY
        };
        if usize::from(pool.headroom()) < hdr_len {
            transport.add_status(status::FAILED);
            return Err(Error::HeadroomTooSmall {
                headroom: pool.headroom(),
                needed: hdr_len,
            });
        }
        let (max_pairs, steering) = match plan_queues(&transport, effective, cfg) {
            Ok(plan) => plan,
            Err(e) => {
                transport.add_status(status::FAILED);
                return Err(e);
            }
        };
        let pairs_wanted = cfg.queue_pairs;
        let has_ctrl = negotiated & features::CTRL_VQ != 0;
        let needed = 2 * u32::from(max_pairs) + u32::from(has_ctrl);
        if u32::from(transport.num_queues()) < needed {
            transport.add_status(status::FAILED);
            return Err(Error::TooFewQueues(transport.num_queues(), needed));
        }

        let probed_queue_size = cfg
            .probe_queue_size
            .map(|size| transport.set_queue_size(rx_queue(0), size));
        let opts = queue_options(negotiated, legacy);
        let tx_opts = Options {
            indirect: if negotiated & features::RING_INDIRECT_DESC != 0 {
                MAX_TX_SEGS
            } else {
                0
            },
            ..opts
        };
        let mut adjusted = Vec::new();
        let mut make_queue = |t: &mut AnyTransport<'a, H>, q: u16, asked: u16, o: Options| {
            let size = agree_size(t, q, asked, o.layout, &mut adjusted)?;
            let vq = Virtqueue::new(hal, q, size, o)?;
            // Polled: no interrupt for used buffers.
            t.setup_queue(q, size, vq.addrs(), msix::NO_VECTOR)?;
            Ok::<_, Error>(vq)
        };
        let mut pairs = Vec::with_capacity(usize::from(pairs_wanted));
        for pair in 0..pairs_wanted {
            let rx = make_queue(&mut transport, rx_queue(pair), cfg.rx_ring, opts)?;
            let tx = make_queue(&mut transport, tx_queue(pair), cfg.tx_ring, tx_opts)?;
            pairs.push(QueuePair {
                rx: RxQueue::new(rx, cfg.rx_ring),
                tx: TxQueue::new(tx),
            });
        }
        let ctrl = if has_ctrl {
            // Any size the device offers will do for the control queue: ask for that. It
            // comes after every pair the device has, used or not.
            let q = ctrl_queue(max_pairs);
            let max = transport.queue_max_size(q);
            let vq = make_queue(&mut transport, q, max, opts)?;
            Some(ctrl::CtrlQueue::new(hal, vq)?)
        } else {
            None
        };
        if cfg.lsc {
            let entry = irq::CONFIG_MSIX_ENTRY;
            let got = transport.set_config_vector(entry);
            if got != entry {
                transport.add_status(status::FAILED);
                return Err(Error::ConfigVectorRefused(entry));
            }
        }

        let mut mac = [0x02, 0, 0, 0, 0, 0x01];
        if negotiated & features::MAC != 0 {
            transport.read_config(config::MAC, &mut mac);
        }
        let mtu = (negotiated & features::MTU != 0).then(|| {
            let mut b = [0u8; 2];
            transport.read_config(config::MTU, &mut b);
            u16::from_le_bytes(b)
        });
        transport.add_status(status::DRIVER_OK);
        // 2.1.2: a device that cannot go on with what the driver set says so here.
        let s = transport.status();
        if s & status::DEVICE_NEEDS_RESET != 0 {
            transport.add_status(status::FAILED);
            return Err(Error::DeviceNeedsReset(s));
        }

        let mut port = Self {
            hal,
            id,
            transport,
            pool,
            features: negotiated,
            hdr_len,
            mac,
            mtu,
            pairs,
            max_pairs,
            steering: None,
            ctrl,
            lsc: cfg.lsc,
            irq_seen: hal.interrupt_count(irq::config_vector(id)),
            link_up: true,
            vlan_strip: cfg.vlan_strip,
            stats: Stats::default(),
            adjusted,
            probed_queue_size,
        };
        port.link_up = port.read_link();
        for p in &mut port.pairs {
            p.rx.vq.suppress_interrupts();
            p.tx.vq.suppress_interrupts();
        }
        for pair in 0..port.pairs.len() {
            port.refill_rx(pair);
        }
        // With every receive queue filled: enable the pairs, then configure the hash.
        if let Err(e) = port.configure_queues(effective, steering) {
            port.transport.add_status(status::FAILED);
            return Err(e);
        }
        Ok(port)
    }

    /// Sends what the multiqueue class needs, as DPDK's `virtio_dev_start` and Linux's
    /// `virtnet_set_queues` do: VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET with the pairs set up when
    /// VIRTIO_NET_F_MQ is negotiated (whatever their number), then the RSS configuration
    /// (whose `max_tx_vq` says the same) or, with a hash report but no RSS, the hash
    /// configuration.
    fn configure_queues(
        &mut self,
        effective: u64,
        steering: Option<Steering>,
    ) -> Result<(), Error> {
        if effective & features::MQ != 0 {
            let n = self.queue_pairs();
            self.ctrl_send(
                None,
                ctrl::class::MQ,
                ctrl::cmd::MQ_VQ_PAIRS_SET,
                &n.to_le_bytes(),
            )
            .map_err(|err| Error::Ctrl {
                what: "VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET",
                err,
            })?;
        }
        let Some(steering) = steering else {
            return Ok(());
        };
        let (cmd, what, data) = match &steering {
            Steering::Rss(c) => (
                ctrl::cmd::MQ_RSS_CONFIG,
                "VIRTIO_NET_CTRL_MQ_RSS_CONFIG",
                c.encode(),
            ),
            Steering::HashOnly(c) => (
                ctrl::cmd::MQ_HASH_CONFIG,
                "VIRTIO_NET_CTRL_MQ_HASH_CONFIG",
                c.encode(),
            ),
        };
        self.ctrl_send(None, ctrl::class::MQ, cmd, &data)
            .map_err(|err| Error::Ctrl { what, err })?;
        self.steering = Some(steering);
        Ok(())
    }

    /// Which port this is: the index of its virtio-net function on the bus.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Queue pairs set up: the burst functions take queues 0 to this less one.
    pub fn queue_pairs(&self) -> u16 {
        self.pairs.len() as u16
    }

    /// Queue pairs the device has (`max_virtqueue_pairs`; 1 without VIRTIO_NET_F_MQ and
    /// VIRTIO_NET_F_RSS).
    pub fn max_queue_pairs(&self) -> u16 {
        self.max_pairs
    }

    /// The hashing and steering configured (with VIRTIO_NET_F_RSS or
    /// VIRTIO_NET_F_HASH_REPORT).
    pub fn steering(&self) -> Option<&Steering> {
        self.steering.as_ref()
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn features(&self) -> u64 {
        self.features
    }

    pub fn transport(&self) -> Kind {
        self.transport.kind()
    }

    /// Size of the virtio-net header on this port (10, 12, or 20 with hash reports).
    pub fn hdr_len(&self) -> usize {
        self.hdr_len
    }

    /// The device's MTU, when it offers VIRTIO_NET_F_MTU.
    pub fn mtu(&self) -> Option<u16> {
        self.mtu
    }

    /// Size of the rx rings (every pair's is the same).
    pub fn rx_ring_size(&self) -> u16 {
        self.pairs[0].rx.vq.size()
    }

    /// Size of the tx rings (every pair's is the same).
    pub fn tx_ring_size(&self) -> u16 {
        self.pairs[0].tx.vq.size()
    }

    fn read_link(&self) -> bool {
        if self.features & features::STATUS == 0 {
            return true;
        }
        let mut s = [0u8; 2];
        self.transport.read_config(config::STATUS, &mut s);
        u16::from_le_bytes(s) & NET_S_LINK_UP != 0
    }

    /// The link state as last seen.
    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// Looks for a configuration-change interrupt; when one came, rereads the link state.
    /// Returns the new state when it changed.
    pub fn poll_link(&mut self) -> Option<bool> {
        if !self.lsc {
            return None;
        }
        let n = self.hal.interrupt_count(irq::config_vector(self.id));
        if n == self.irq_seen {
            return None;
        }
        self.irq_seen = n;
        let up = self.read_link();
        if up == self.link_up {
            return None;
        }
        self.link_up = up;
        if up {
            self.stats.link_up += 1;
        } else {
            self.stats.link_down += 1;
        }
        Some(up)
    }

    /// Posts fresh mbufs on the rx ring of pair `pair` and tells the device when it asks.
    fn refill_rx(&mut self, pair: usize) {
        let rx = &mut self.pairs[pair].rx;
        if rx.refill(self.pool, self.hdr_len, &mut self.stats) {
            self.transport.notify(rx.vq.index());
        }
    }

    /// Receives up to `max` frames from receive queue `queue` into `out` (appended);
    /// returns how many. With mergeable buffers a frame arrives as a chain of mbufs; with
    /// hash reports each carries the device's hash ([`crate::mbuf::flags::RX_RSS_HASH`]). A
    /// queue that is not set up has nothing.
    pub fn rx_burst(&mut self, queue: u16, out: &mut Vec<Mbuf<'a>>, max: usize) -> usize {
        let q = usize::from(queue);
        let params = RxParams {
            hdr_len: self.hdr_len,
            mergeable: self.features & features::MRG_RXBUF != 0,
            vlan_strip: self.vlan_strip,
            hash_report: self.hdr_len == NET_HDR_LEN_HASH,
        };
        let Some(pair) = self.pairs.get_mut(q) else {
            return 0;
        };
        let n = pair.rx.burst(out, max, params, &mut self.stats);
        self.refill_rx(q);
        n
    }

    /// Frees the mbufs of every transmitted frame the device has returned.
    pub fn tx_cleanup(&mut self) {
        for p in &mut self.pairs {
            p.tx.cleanup(&mut self.stats);
        }
    }

    /// Frames handed to the device and not yet returned.
    pub fn tx_in_flight(&self) -> u16 {
        self.pairs
            .iter()
            .fold(0, |n, p| n.saturating_add(p.tx.vq.in_flight()))
    }

    /// Queues as many frames from the front of `pkts` as transmit queue `queue` takes;
    /// they leave `pkts`. Returns how many left (queued, or dropped and counted in
    /// `oerrors`); a queue that is not set up takes none.
    ///
    /// The header goes in the first segment's headroom (what DPDK calls "can push"); a
    /// frame of several segments becomes a descriptor chain, through an indirect table when
    /// VIRTIO_F_INDIRECT_DESC is on, so it takes one ring slot. Frames flagged for VLAN
    /// insertion get their tag here, in software.
    pub fn tx_burst(&mut self, queue: u16, pkts: &mut Vec<Mbuf<'a>>) -> usize {
        let Some(pair) = self.pairs.get_mut(usize::from(queue)) else {
            return 0;
        };
        let tx = &mut pair.tx;
        tx.cleanup(&mut self.stats);
        let (count, kick) = tx.burst(pkts, self.hdr_len, &mut self.stats);
        if kick {
            self.transport.notify(tx.vq.index());
        }
        count
    }
}

/// Control-queue commands (5.1.6.5). Each checks its feature first, as DPDK does: a
/// command the device never offered is not sent.
impl<'a, H: Hal> Port<'a, H> {
    fn ctrl_send(
        &mut self,
        needs: Option<(u64, &'static str)>,
        class: u8,
        cmd: u8,
        data: &[u8],
    ) -> Result<(), CtrlError> {
        if let Some((f, name)) = needs {
            if self.features & f == 0 {
                return Err(CtrlError::NotNegotiated(name));
            }
        }
        let transport = &self.transport;
        let ctrl = self.ctrl.as_mut().ok_or(CtrlError::NoControlQueue)?;
        ctrl.send(|q| transport.notify(q), class, cmd, data)
    }

    /// Promiscuous mode on or off (VIRTIO_NET_CTRL_RX_PROMISC).
    pub fn set_promiscuous(&mut self, on: bool) -> Result<(), CtrlError> {
        let rx = Some((features::CTRL_RX, "VIRTIO_NET_F_CTRL_RX"));
        self.ctrl_send(rx, ctrl::class::RX, ctrl::cmd::RX_PROMISC, &[u8::from(on)])
    }

    /// All-multicast mode on or off (VIRTIO_NET_CTRL_RX_ALLMULTI).
    pub fn set_allmulticast(&mut self, on: bool) -> Result<(), CtrlError> {
        let rx = Some((features::CTRL_RX, "VIRTIO_NET_F_CTRL_RX"));
        self.ctrl_send(rx, ctrl::class::RX, ctrl::cmd::RX_ALLMULTI, &[u8::from(on)])
    }

    /// Replaces the unicast and multicast MAC filter tables (VIRTIO_NET_CTRL_MAC_TABLE_SET).
    pub fn set_mac_table(
        &mut self,
        unicast: &[[u8; 6]],
        multicast: &[[u8; 6]],
    ) -> Result<(), CtrlError> {
        let mut data = Vec::with_capacity(8 + 6 * (unicast.len() + multicast.len()));
        for table in [unicast, multicast] {
            data.extend_from_slice(&(table.len() as u32).to_le_bytes());
            for mac in table {
                data.extend_from_slice(mac);
            }
        }
        let rx = Some((features::CTRL_RX, "VIRTIO_NET_F_CTRL_RX"));
        self.ctrl_send(rx, ctrl::class::MAC, ctrl::cmd::MAC_TABLE_SET, &data)
    }

    /// Changes the port's own MAC address (VIRTIO_NET_CTRL_MAC_ADDR_SET).
    pub fn set_mac_addr(&mut self, mac: [u8; 6]) -> Result<(), CtrlError> {
        let f = Some((features::CTRL_MAC_ADDR, "VIRTIO_NET_F_CTRL_MAC_ADDR"));
        self.ctrl_send(f, ctrl::class::MAC, ctrl::cmd::MAC_ADDR_SET, &mac)?;
        self.mac = mac;
        Ok(())
    }

    /// Adds or removes VLAN `vid` from the device's VLAN filter (VIRTIO_NET_CTRL_VLAN).
    pub fn vlan_filter(&mut self, vid: u16, on: bool) -> Result<(), CtrlError> {
        let f = Some((features::CTRL_VLAN, "VIRTIO_NET_F_CTRL_VLAN"));
        let c = if on {
            ctrl::cmd::VLAN_ADD
        } else {
            ctrl::cmd::VLAN_DEL
        };
        self.ctrl_send(f, ctrl::class::VLAN, c, &vid.to_le_bytes())
    }

    /// Sends any command, unchecked: for probing what a device supports.
    pub fn ctrl_command(&mut self, class: u8, cmd: u8, data: &[u8]) -> Result<(), CtrlError> {
        self.ctrl_send(None, class, cmd, data)
    }
}

/// How many queue pairs the device has and what to configure for hashing, from the
/// features the device sees (`effective`) and what the application asked: checked before
/// any queue is set up, so a request the device cannot take fails early.
fn plan_queues<H: Hal>(
    t: &AnyTransport<'_, H>,
    effective: u64,
    cfg: &PortConfig,
) -> Result<(u16, Option<Steering>), Error> {
    let multiqueue = effective & (features::MQ | features::RSS) != 0;
    let max_pairs = if multiqueue {
        let mut b = [0u8; 2];
        t.read_config(config::MAX_VIRTQUEUE_PAIRS, &mut b);
        let n = u16::from_le_bytes(b);
        if !(ctrl::MQ_VQ_PAIRS_MIN..=ctrl::MQ_VQ_PAIRS_MAX).contains(&n) {
            return Err(Error::BadMaxQueuePairs(n));
        }
        n
    } else {
        1
    };
    if cfg.queue_pairs > max_pairs {
        return Err(Error::TooManyQueuePairs {
            asked: cfg.queue_pairs,
            max: max_pairs,
            multiqueue,
        });
    }
    let rss = effective & features::RSS != 0;
    let hash_report = effective & features::HASH_REPORT != 0;
    if !rss && !hash_report {
        if !cfg.rss.is_empty() {
            return Err(Error::RssNotNegotiated);
        }
        return Ok((max_pairs, None));
    }
    if !rss && cfg.rss.steers() {
        return Err(Error::SteeringNeedsRss);
    }
    let caps = read_rss_caps(t);
    let steering = if rss {
        Steering::Rss(rss::RssConfig::resolve(&cfg.rss, &caps, cfg.queue_pairs)?)
    } else {
        Steering::HashOnly(rss::HashConfig::resolve(&cfg.rss, &caps)?)
    };
    Ok((max_pairs, Some(steering)))
}

/// The device's RSS limits (valid with VIRTIO_NET_F_RSS or VIRTIO_NET_F_HASH_REPORT).
fn read_rss_caps<H: Hal>(t: &AnyTransport<'_, H>) -> rss::Caps {
    // The three fields follow each other: read them in one generation-checked pass.
    let mut b = [0u8; 7];
    t.read_config(config::RSS_MAX_KEY_SIZE, &mut b);
    rss::Caps {
        max_key: b[0],
        max_table: u16::from_le_bytes([b[1], b[2]]),
        hash_types: u32::from_le_bytes([b[3], b[4], b[5], b[6]]),
    }
}

/// How the port's queues are laid out and used, from the negotiated features, as DPDK's
/// PMD picks its rx/tx paths: packed or split, in order or not, event indexes or flags.
/// Forced bits above 31 do not count on the legacy interface, which cannot carry them to
/// the device. No indirect tables (the tx queue adds them).
fn queue_options(negotiated: u64, legacy: bool) -> Options {
    let ring = if legacy {
        negotiated & 0xffff_ffff
    } else {
        negotiated
    };
    Options {
        layout: if ring & features::RING_PACKED != 0 {
            Layout::Packed
        } else {
            Layout::Split
        },
        event_idx: ring & features::RING_EVENT_IDX != 0,
        indirect: 0,
        in_order: ring & features::IN_ORDER != 0,
    }
}

/// Decides queue `q`'s size: what was asked, within what the device allows. A device may
/// offer less (its maximum) or fix its size; either way the port warns (through
/// `adjusted`) and goes on with the device's size, as DPDK's virtio PMD does. A packed
/// ring's size need not be a power of two.
fn agree_size<H: Hal>(
    t: &mut AnyTransport<'_, H>,
    q: u16,
    asked: u16,
    layout: Layout,
    adjusted: &mut Vec<RingAdjusted>,
) -> Result<u16, Error> {
    let max = t.queue_max_size(q);
    let want = asked.min(max);
    let got = t.set_queue_size(q, want);
    let power_of_two = got.is_power_of_two() || layout == Layout::Packed;
    if got == 0 || got > virtqueue::MAX_SIZE || !power_of_two {
        return Err(Error::DeviceRingSize {
            queue: q,
            size: got,
        });
    }
    if got != asked {
        adjusted.push(RingAdjusted {
            queue: q,
            asked,
            used: got,
        });
    }
    Ok(got)
}
