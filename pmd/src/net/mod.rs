//! A virtio-net port: device discovery, the virtio initialisation sequence (3.1.1), the burst
//! API of a DPDK ethdev (`rx_burst`, `tx_burst`), the control queue, link state, and DPDK's
//! software VLAN offloads.

mod ctrl;
mod vlan;

use alloc::vec::Vec;

use crate::hal::Hal;
use crate::mbuf::{Mbuf, MbufPool};
use crate::msix;
use crate::pci::{self, ConfigSpace};
use crate::transport::{self, status, AnyTransport, Kind, Transport};
use crate::virtqueue::{self, Buf, SplitQueue};
pub use ctrl::{class as ctrl_class, cmd as ctrl_cmd, CtrlError};
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
    pub const CTRL_MAC_ADDR: u64 = 1 << 23;
    pub const ANY_LAYOUT: u64 = 1 << 27;
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    pub const VERSION_1: u64 = 1 << 32;

    /// Features that only make sense with the control queue.
    pub const NEEDS_CTRL_VQ: u64 = CTRL_RX | CTRL_VLAN | CTRL_MAC_ADDR;

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
        | VERSION_1;

    /// Names, for the log.
    pub const NAMES: [(u64, &str); 12] = [
        (MTU, "MTU"),
        (MAC, "MAC"),
        (MRG_RXBUF, "MRG_RXBUF"),
        (STATUS, "STATUS"),
        (CTRL_VQ, "CTRL_VQ"),
        (CTRL_RX, "CTRL_RX"),
        (CTRL_VLAN, "CTRL_VLAN"),
        (CTRL_MAC_ADDR, "CTRL_MAC_ADDR"),
        (ANY_LAYOUT, "ANY_LAYOUT"),
        (RING_INDIRECT_DESC, "INDIRECT_DESC"),
        (RING_EVENT_IDX, "EVENT_IDX"),
        (VERSION_1, "VERSION_1"),
    ];
}

/// Offsets in `struct virtio_net_config`.
mod config {
    pub const MAC: u16 = 0;
    pub const STATUS: u16 = 6;
    pub const MTU: u16 = 10;
}

const NET_S_LINK_UP: u16 = 1;

/// `struct virtio_net_hdr_v1`: with VERSION_1 or MRG_RXBUF `num_buffers` is present.
pub const NET_HDR_LEN: usize = 12;
/// The legacy header without `num_buffers`.
pub const NET_HDR_LEN_LEGACY: usize = 10;

/// APIC vector of the configuration-change interrupt (link state).
pub const CONFIG_VECTOR: u8 = 0x40;
/// MSI-X table entry used for it.
const CONFIG_MSIX_ENTRY: u16 = 0;
/// Entries of each tx indirect table: the most segments one frame may have that way.
pub const MAX_TX_SEGS: u16 = 32;

const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
const CTRL_QUEUE: u16 = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("no virtio-net PCI function (1af4:1041 or 1af4:1000) on bus 0")]
    NoDevice,
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
    TooFewQueues(u16, u16),
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

/// What the application asks of the port.
#[derive(Clone, Copy, Debug)]
pub struct PortConfig {
    pub transport: Kind,
    pub rx_ring: u16,
    pub tx_ring: u16,
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

pub struct Port<'a, H: Hal> {
    hal: &'a H,
    transport: AnyTransport<'a, H>,
    pool: &'a MbufPool,
    features: u64,
    hdr_len: usize,
    mac: [u8; 6],
    mtu: Option<u16>,
    rx: SplitQueue,
    rx_slots: Vec<Option<Mbuf<'a>>>,
    /// Buffers kept posted: what the application asked for, even when the device made the
    /// ring larger, so the rx ring never takes more of the pool than was planned.
    rx_target: u16,
    /// A mergeable frame whose later buffers the device has not returned yet.
    rx_partial: Option<(Mbuf<'a>, u16)>,
    tx: SplitQueue,
    tx_slots: Vec<Option<Mbuf<'a>>>,
    tx_bufs: Vec<Buf>,
    tx_heads: Vec<Option<u16>>,
    ctrl: Option<ctrl::CtrlQueue>,
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
    /// Finds the first virtio-net function, initialises it and fills its rx ring.
    pub fn open(hal: &'a H, pool: &'a MbufPool, cfg: &PortConfig) -> Result<Self, Error> {
        for size in [cfg.rx_ring, cfg.tx_ring] {
            if size == 0 || size > virtqueue::MAX_SIZE || !size.is_power_of_two() {
                return Err(Error::BadRingSize(size));
            }
        }
        let (bdf, device) = pci::find_on_bus0(hal, |bdf, vendor, device| {
            (vendor == VIRTIO_VENDOR
                && (device == DEVICE_ID_MODERN || device == DEVICE_ID_TRANSITIONAL))
                .then_some((bdf, device))
        })
        .ok_or(Error::NoDevice)?;
        if cfg.transport == Kind::Legacy && device != DEVICE_ID_TRANSITIONAL {
            return Err(Error::NotTransitional);
        }
        let cfg_space = ConfigSpace::new(hal, bdf);
        if cfg.lsc {
            if !hal.interrupts_available() {
                return Err(Error::NoInterrupts);
            }
            // Before the legacy probe: enabling MSI-X moves the legacy device configuration.
            msix::enable(hal, &cfg_space, CONFIG_MSIX_ENTRY, CONFIG_VECTOR)?;
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
            // The legacy interface has 32 feature bits and no VERSION_1.
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
        let hdr_len = if negotiated & (features::VERSION_1 | features::MRG_RXBUF) != 0 {
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
        let has_ctrl = negotiated & features::CTRL_VQ != 0;
        let needed = if has_ctrl { 3 } else { 2 };
        if transport.num_queues() < needed {
            transport.add_status(status::FAILED);
            return Err(Error::TooFewQueues(transport.num_queues(), needed));
        }

        let probed_queue_size = cfg
            .probe_queue_size
            .map(|size| transport.set_queue_size(RX_QUEUE, size));
        let event_idx = negotiated & features::RING_EVENT_IDX != 0;
        let mut adjusted = Vec::new();
        let mut make_queue = |t: &mut AnyTransport<'a, H>, q: u16, asked: u16| {
            let size = agree_size(t, q, asked, &mut adjusted)?;
            let vq = SplitQueue::new(hal, q, size, event_idx)?;
            t.setup_queue(q, size, vq.addrs())?;
            Ok::<_, Error>(vq)
        };
        let rx = make_queue(&mut transport, RX_QUEUE, cfg.rx_ring)?;
        let mut tx = make_queue(&mut transport, TX_QUEUE, cfg.tx_ring)?;
        if negotiated & features::RING_INDIRECT_DESC != 0 {
            tx = tx.with_indirect(hal, MAX_TX_SEGS)?;
        }
        let ctrl = if has_ctrl {
            // Any size the device offers will do for the control queue: ask for that.
            let max = transport.queue_max_size(CTRL_QUEUE);
            let vq = make_queue(&mut transport, CTRL_QUEUE, max)?;
            Some(ctrl::CtrlQueue::new(hal, vq)?)
        } else {
            None
        };
        if cfg.lsc {
            let got = transport.set_config_vector(CONFIG_MSIX_ENTRY);
            if got != CONFIG_MSIX_ENTRY {
                transport.add_status(status::FAILED);
                return Err(Error::ConfigVectorRefused(CONFIG_MSIX_ENTRY));
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

        let rx_slots = (0..rx.size()).map(|_| None).collect();
        let tx_slots = (0..tx.size()).map(|_| None).collect();
        let mut port = Self {
            hal,
            transport,
            pool,
            features: negotiated,
            hdr_len,
            mac,
            mtu,
            rx_target: rx.size().min(cfg.rx_ring),
            rx,
            rx_slots,
            rx_partial: None,
            tx,
            tx_slots,
            tx_bufs: Vec::new(),
            tx_heads: Vec::new(),
            ctrl,
            lsc: cfg.lsc,
            irq_seen: hal.interrupt_count(CONFIG_VECTOR),
            link_up: true,
            vlan_strip: cfg.vlan_strip,
            stats: Stats::default(),
            adjusted,
            probed_queue_size,
        };
        port.link_up = port.read_link();
        port.rx.suppress_interrupts();
        port.tx.suppress_interrupts();
        port.refill_rx();
        Ok(port)
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

    /// Size of the virtio-net header on this port (10 or 12 bytes).
    pub fn hdr_len(&self) -> usize {
        self.hdr_len
    }

    /// The device's MTU, when it offers VIRTIO_NET_F_MTU.
    pub fn mtu(&self) -> Option<u16> {
        self.mtu
    }

    pub fn rx_ring_size(&self) -> u16 {
        self.rx.size()
    }

    pub fn tx_ring_size(&self) -> u16 {
        self.tx.size()
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
        let n = self.hal.interrupt_count(CONFIG_VECTOR);
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

    /// Posts a fresh mbuf for every free rx descriptor. The device writes the virtio-net
    /// header into the headroom, just before where the frame starts.
    fn refill_rx(&mut self) {
        let mut added = false;
        while self.rx.size() - self.rx.num_free() < self.rx_target {
            let Some(m) = self.pool.alloc() else {
                self.stats.rx_nombuf += 1;
                break;
            };
            let start = m.data_off() - self.hdr_len;
            let buf = Buf {
                paddr: m.buf_paddr() + start as u64,
                len: (m.buf_len() - start) as u32,
                device_writes: true,
            };
            let Some(head) = self.rx.add(&[buf]) else {
                break;
            };
            self.rx_slots[usize::from(head)] = Some(m);
            added = true;
        }
        if added {
            self.rx.publish();
            if self.rx.should_notify(self.hal) {
                self.transport.notify(self.rx.index());
            }
        }
    }

    /// The next buffer the device returned, with the byte count it wrote. Chains the
    /// driver did not post (a device bug) are counted and skipped.
    fn pop_rx(&mut self) -> Option<(Mbuf<'a>, usize)> {
        loop {
            let used = self.rx.pop_used()?;
            let slot = usize::try_from(used.id).ok();
            if self.rx.free_chain(used.id) {
                if let Some(m) = slot.and_then(|s| self.rx_slots[s].take()) {
                    return Some((m, used.len as usize));
                }
            }
            self.stats.ierrors += 1;
        }
    }

    /// Sets `m` to the `len` bytes the device wrote at the buffer start it was posted with.
    fn place(&self, m: &mut Mbuf<'a>, skip: usize, len: usize) -> bool {
        let start = m.data_off() - self.hdr_len;
        len >= skip && m.set_data(start + skip, len - skip)
    }

    /// Receives up to `max` frames into `out` (appended); returns how many. With mergeable
    /// buffers a frame arrives as a chain of mbufs.
    pub fn rx_burst(&mut self, out: &mut Vec<Mbuf<'a>>, max: usize) -> usize {
        let mrg = self.features & features::MRG_RXBUF != 0;
        let mut n = 0;
        while n < max {
            let (mut head, mut remaining) = match self.rx_partial.take() {
                Some(p) => p,
                None => {
                    let Some((mut m, len)) = self.pop_rx() else {
                        break;
                    };
                    let num_buffers = if mrg && len >= NET_HDR_LEN {
                        // `num_buffers`, the header's last field.
                        let at = m.data_off() - self.hdr_len + 10;
                        let b = m.buffer();
                        u16::from_le_bytes([b[at], b[at + 1]])
                    } else {
                        1
                    };
                    if !self.place(&mut m, self.hdr_len, len)
                        || num_buffers == 0
                        || num_buffers > self.rx.size()
                    {
                        self.stats.ierrors += 1;
                        continue;
                    }
                    (m, num_buffers - 1)
                }
            };
            let mut broken = false;
            while remaining > 0 {
                let Some((mut seg, len)) = self.pop_rx() else {
                    break;
                };
                if !self.place(&mut seg, 0, len) {
                    broken = true;
                }
                head.append_seg(seg);
                remaining -= 1;
            }
            if remaining > 0 {
                // The rest of the frame is not back yet: finish it in a later burst.
                self.rx_partial = Some((head, remaining));
                break;
            }
            if broken {
                self.stats.ierrors += 1;
                continue;
            }
            if self.vlan_strip {
                vlan::strip(&mut head);
            }
            if head.nb_segs() > 1 {
                self.stats.rx_multiseg += 1;
            }
            self.stats.ipackets += 1;
            self.stats.ibytes += head.pkt_len() as u64;
            out.push(head);
            n += 1;
        }
        self.refill_rx();
        n
    }

    /// Frees the mbufs of every transmitted frame the device has returned.
    pub fn tx_cleanup(&mut self) {
        while let Some(used) = self.tx.pop_used() {
            let slot = usize::try_from(used.id).ok();
            if !self.tx.free_chain(used.id) || slot.and_then(|s| self.tx_slots[s].take()).is_none()
            {
                self.stats.oerrors += 1;
            }
        }
    }

    /// Frames handed to the device and not yet returned.
    pub fn tx_in_flight(&self) -> u16 {
        self.tx.in_flight()
    }

    /// Queues as many frames from the front of `pkts` as the tx ring takes; they leave
    /// `pkts`. Returns how many left (queued, or dropped and counted in `oerrors`).
    ///
    /// The header goes in the first segment's headroom (what DPDK calls "can push"); a
    /// frame of several segments becomes a descriptor chain, through an indirect table when
    /// VIRTIO_F_INDIRECT_DESC is on, so it takes one ring slot. Frames flagged for VLAN
    /// insertion get their tag here, in software.
    pub fn tx_burst(&mut self, pkts: &mut Vec<Mbuf<'a>>) -> usize {
        self.tx_cleanup();
        self.tx_heads.clear();
        let indirect_max = self.tx.indirect_max();
        for m in pkts.iter_mut() {
            let segs = m.nb_segs();
            let indirect = segs > 1 && segs <= indirect_max;
            let slots = if indirect { 1 } else { segs };
            if slots > self.tx.num_free() {
                if slots > self.tx.size() {
                    // Could never fit: drop rather than stall the queue.
                    self.stats.oerrors += 1;
                    self.tx_heads.push(None);
                    continue;
                }
                break;
            }
            if m.ol_flags() & vlan::TX_VLAN != 0 && !vlan::insert(m) {
                self.stats.oerrors += 1;
                self.tx_heads.push(None);
                continue;
            }
            let Some(hdr) = m.prepend(self.hdr_len) else {
                // The application used up the headroom `open` checked for.
                self.stats.oerrors += 1;
                self.tx_heads.push(None);
                continue;
            };
            hdr.fill(0);
            self.tx_bufs.clear();
            self.tx_bufs.extend(m.segs().map(|s| Buf {
                paddr: s.data_paddr(),
                len: s.len() as u32,
                device_writes: false,
            }));
            let head = if indirect {
                self.tx.add_indirect(&self.tx_bufs)
            } else {
                self.tx.add(&self.tx_bufs)
            };
            match head {
                Some(h) => {
                    if segs > 1 {
                        self.stats.tx_multiseg += 1;
                        self.stats.tx_indirect += u64::from(indirect);
                    }
                    self.stats.opackets += 1;
                    self.stats.obytes += (m.pkt_len() - self.hdr_len) as u64;
                    self.tx_heads.push(Some(h));
                }
                None => {
                    self.stats.oerrors += 1;
                    self.tx_heads.push(None);
                }
            }
        }
        let count = self.tx_heads.len();
        for (m, head) in pkts.drain(..count).zip(self.tx_heads.iter()) {
            if let Some(h) = *head {
                self.tx_slots[usize::from(h)] = Some(m);
            }
        }
        if self.tx_heads.iter().any(Option::is_some) {
            self.tx.publish();
            if self.tx.should_notify(self.hal) {
                self.transport.notify(self.tx.index());
            }
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
        ctrl.send(self.hal, |q| transport.notify(q), class, cmd, data)
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

/// Decides queue `q`'s size: what was asked, within what the device allows. A device may
/// offer less (its maximum) or fix its size; either way the port warns (through
/// `adjusted`) and goes on with the device's size, as DPDK's virtio PMD does.
fn agree_size<H: Hal>(
    t: &mut AnyTransport<'_, H>,
    q: u16,
    asked: u16,
    adjusted: &mut Vec<RingAdjusted>,
) -> Result<u16, Error> {
    let max = t.queue_max_size(q);
    let want = asked.min(max);
    let got = t.set_queue_size(q, want);
    if got == 0 || got > virtqueue::MAX_SIZE || !got.is_power_of_two() {
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
