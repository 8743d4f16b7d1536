//! A virtio-net port: device discovery, the virtio initialisation sequence (3.1.1), and the
//! burst API of a DPDK ethdev (`rx_burst`, `tx_burst`) over one rx and one tx queue.

use alloc::vec::Vec;

use crate::hal::Hal;
use crate::mbuf::{Mbuf, MbufPool};
use crate::pci::{self, ConfigSpace};
use crate::transport::modern::ModernTransport;
use crate::transport::{self, status, Transport};
use crate::virtqueue::{self, Buf, SplitQueue};

pub const VIRTIO_VENDOR: u16 = 0x1af4;
/// Modern (virtio 1.x only) network device ID.
pub const DEVICE_ID_MODERN: u16 = 0x1041;
/// Transitional network device ID.
pub const DEVICE_ID_TRANSITIONAL: u16 = 0x1000;

/// Feature bits this driver knows (virtio 1.x, 5.1.3 and 6).
pub mod features {
    pub const MTU: u64 = 1 << 3;
    pub const MAC: u64 = 1 << 5;
    pub const MRG_RXBUF: u64 = 1 << 15;
    pub const STATUS: u64 = 1 << 16;
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    pub const VERSION_1: u64 = 1 << 32;
}

/// Offsets in `struct virtio_net_config`.
mod config {
    pub const MAC: u16 = 0;
    pub const STATUS: u16 = 6;
}

const NET_S_LINK_UP: u16 = 1;

/// Size of `struct virtio_net_hdr_v1` (with `num_buffers`, always present in virtio 1.x).
pub const NET_HDR_LEN: usize = 12;

const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("no virtio-net PCI function (1af4:1041 or 1af4:1000) on bus 0")]
    NoDevice,
    #[error(transparent)]
    Transport(#[from] transport::Error),
    #[error(transparent)]
    Pci(#[from] pci::Error),
    #[error(transparent)]
    Queue(#[from] virtqueue::Error),
    #[error("device does not offer VIRTIO_F_VERSION_1 (features {0:#x})")]
    NotVersion1(u64),
    #[error("device refused features {0:#x} (FEATURES_OK did not stick)")]
    FeaturesRefused(u64),
    #[error("device has {0} queues, a net port needs 2")]
    TooFewQueues(u16),
    #[error("mbuf headroom {headroom} is smaller than the {needed}-byte virtio-net header")]
    HeadroomTooSmall { headroom: u16, needed: usize },
    #[error("ring size {0} is not a power of two between 1 and 32768")]
    BadRingSize(u16),
}

/// What the application asks of the port.
#[derive(Clone, Copy, Debug)]
pub struct PortConfig {
    pub rx_ring: u16,
    pub tx_ring: u16,
    /// Features the driver would like; the port negotiates the intersection with the
    /// device's offer (VERSION_1 is required).
    pub features: u64,
}

impl Default for PortConfig {
    fn default() -> Self {
        Self {
            rx_ring: 256,
            tx_ring: 256,
            features: features::VERSION_1
                | features::MAC
                | features::STATUS
                | features::RING_EVENT_IDX,
        }
    }
}

/// Port counters, named as DPDK's `rte_eth_stats`.
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
}

/// Something the port noticed that the application should log: ring sizes it adjusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingAdjusted {
    pub queue: u16,
    pub asked: u16,
    pub used: u16,
}

pub struct Port<'a, H: Hal> {
    hal: &'a H,
    transport: ModernTransport<'a, H>,
    pool: &'a MbufPool,
    features: u64,
    mac: [u8; 6],
    rx: SplitQueue,
    rx_slots: Vec<Option<Mbuf<'a>>>,
    tx: SplitQueue,
    tx_slots: Vec<Option<Mbuf<'a>>>,
    pub stats: Stats,
    pub adjusted: Vec<RingAdjusted>,
}

impl<'a, H: Hal> Port<'a, H> {
    /// Finds the first virtio-net function, initialises it and fills its rx ring.
    pub fn open(hal: &'a H, pool: &'a MbufPool, cfg: &PortConfig) -> Result<Self, Error> {
        if usize::from(pool.headroom()) < NET_HDR_LEN {
            return Err(Error::HeadroomTooSmall {
                headroom: pool.headroom(),
                needed: NET_HDR_LEN,
            });
        }
        for size in [cfg.rx_ring, cfg.tx_ring] {
            if size == 0 || size > virtqueue::MAX_SIZE || !size.is_power_of_two() {
                return Err(Error::BadRingSize(size));
            }
        }
        let bdf = pci::find_on_bus0(hal, |bdf, vendor, device| {
            (vendor == VIRTIO_VENDOR
                && (device == DEVICE_ID_MODERN || device == DEVICE_ID_TRANSITIONAL))
                .then_some(bdf)
        })
        .ok_or(Error::NoDevice)?;
        let cfg_space = ConfigSpace::new(hal, bdf);
        let mut transport = ModernTransport::probe(hal, &cfg_space)?;

        // 3.1.1: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues, DRIVER_OK.
        transport.reset();
        transport.add_status(status::ACKNOWLEDGE);
        transport.add_status(status::DRIVER);
        let offered = transport.device_features();
        if offered & features::VERSION_1 == 0 {
            transport.add_status(status::FAILED);
            return Err(Error::NotVersion1(offered));
        }
        let negotiated = offered & cfg.features;
        transport.set_driver_features(negotiated);
        transport.add_status(status::FEATURES_OK);
        if transport.status() & status::FEATURES_OK == 0 {
            transport.add_status(status::FAILED);
            return Err(Error::FeaturesRefused(negotiated));
        }
        if transport.num_queues() < 2 {
            transport.add_status(status::FAILED);
            return Err(Error::TooFewQueues(transport.num_queues()));
        }

        let event_idx = negotiated & features::RING_EVENT_IDX != 0;
        let mut adjusted = Vec::new();
        let mut make_queue = |t: &mut ModernTransport<'a, H>, q: u16, asked: u16| {
            let max = t.queue_max_size(q);
            let size = if asked > max {
                // A device may fix its queue size lower than asked (QEMU's is 256):
                // fall back to what it offers.
                adjusted.push(RingAdjusted {
                    queue: q,
                    asked,
                    used: max,
                });
                max
            } else {
                asked
            };
            let vq = SplitQueue::new(hal, q, size, event_idx)?;
            t.setup_queue(q, size, vq.addrs())?;
            Ok::<_, Error>(vq)
        };
        let rx = make_queue(&mut transport, RX_QUEUE, cfg.rx_ring)?;
        let tx = make_queue(&mut transport, TX_QUEUE, cfg.tx_ring)?;

        let mut mac = [0u8; 6];
        if negotiated & features::MAC != 0 {
            transport.read_config(config::MAC, &mut mac);
        } else {
            // Without VIRTIO_NET_F_MAC the driver picks one: locally administered.
            mac = [0x02, 0, 0, 0, 0, 0x01];
        }
        transport.add_status(status::DRIVER_OK);

        let rx_slots = (0..rx.size()).map(|_| None).collect();
        let tx_slots = (0..tx.size()).map(|_| None).collect();
        let mut port = Self {
            hal,
            transport,
            pool,
            features: negotiated,
            mac,
            rx,
            rx_slots,
            tx,
            tx_slots,
            stats: Stats::default(),
            adjusted,
        };
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

    pub fn rx_ring_size(&self) -> u16 {
        self.rx.size()
    }

    pub fn tx_ring_size(&self) -> u16 {
        self.tx.size()
    }

    /// Link state from the device configuration (up when VIRTIO_NET_F_STATUS is off).
    pub fn link_up(&self) -> bool {
        if self.features & features::STATUS == 0 {
            return true;
        }
        let mut s = [0u8; 2];
        self.transport.read_config(config::STATUS, &mut s);
        u16::from_le_bytes(s) & NET_S_LINK_UP != 0
    }

    /// Posts a fresh mbuf for every free rx descriptor. The device writes the virtio-net
    /// header into the headroom, just before where the frame starts.
    fn refill_rx(&mut self) {
        let mut added = false;
        while self.rx.num_free() > 0 {
            let Some(m) = self.pool.alloc() else {
                self.stats.rx_nombuf += 1;
                break;
            };
            let start = m.data_off() - NET_HDR_LEN;
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

    /// Receives up to `max` frames into `out` (appended); returns how many.
    pub fn rx_burst(&mut self, out: &mut Vec<Mbuf<'a>>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Some(used) = self.rx.pop_used() else {
                break;
            };
            let slot = usize::try_from(used.id).ok();
            if !self.rx.free_chain(used.id) {
                // An id the driver never posted, or posted and already returned.
                self.stats.ierrors += 1;
                continue;
            }
            let Some(mut m) = slot.and_then(|s| self.rx_slots[s].take()) else {
                self.stats.ierrors += 1;
                continue;
            };
            let len = used.len as usize;
            let start = m.data_off() - NET_HDR_LEN;
            if len < NET_HDR_LEN || !m.set_data(start + NET_HDR_LEN, len - NET_HDR_LEN) {
                self.stats.ierrors += 1;
                continue;
            }
            self.stats.ipackets += 1;
            self.stats.ibytes += m.len() as u64;
            out.push(m);
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
    pub fn tx_burst(&mut self, pkts: &mut Vec<Mbuf<'a>>) -> usize {
        self.tx_cleanup();
        // One descriptor per frame: the header goes in the headroom (what DPDK calls
        // "can push"), so no frame needs a separate header descriptor.
        let count = pkts.len().min(usize::from(self.tx.num_free()));
        let mut queued = false;
        for mut m in pkts.drain(..count) {
            let Some(hdr) = m.prepend(NET_HDR_LEN) else {
                // The application used up the headroom `open` checked for.
                self.stats.oerrors += 1;
                continue;
            };
            hdr.fill(0);
            let buf = Buf {
                paddr: m.data_paddr(),
                len: m.len() as u32,
                device_writes: false,
            };
            let Some(head) = self.tx.add(&[buf]) else {
                self.stats.oerrors += 1;
                continue;
            };
            self.stats.opackets += 1;
            self.stats.obytes += (m.len() - NET_HDR_LEN) as u64;
            self.tx_slots[usize::from(head)] = Some(m);
            queued = true;
        }
        if queued {
            self.tx.publish();
            if self.tx.should_notify(self.hal) {
                self.transport.notify(self.tx.index());
            }
        }
        count
    }
}
