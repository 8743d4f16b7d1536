//! Virtio transports: how the driver reaches a device's status, features, queues and
//! configuration. The net driver is written against [`Transport`]; the modern PCI transport
//! (memory BARs found through capabilities) and the legacy one (an I/O BAR, what DPDK uses
//! without uio) implement it, and [`AnyTransport`] holds whichever the port chose.

pub mod legacy;
pub mod modern;

use crate::hal::Hal;
use crate::pci::{self, ConfigSpace};

/// Device status bits (virtio 1.x, 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const DEVICE_NEEDS_RESET: u8 = 64;
    pub const FAILED: u8 = 128;
}

/// Where a virtqueue's three parts live, in device (guest-physical) addresses: the
/// descriptor area, the driver area and the device area (for a split ring: descriptor
/// table, available ring, used ring).
#[derive(Clone, Copy, Debug)]
pub struct QueueAddrs {
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error(transparent)]
    Pci(#[from] pci::Error),
    #[error("virtio capability {cfg_type} is missing")]
    MissingCapability { cfg_type: u8 },
    #[error("virtio capability {cfg_type} points at BAR{bar}, which is not a memory BAR")]
    CapabilityNotInMemoryBar { cfg_type: u8, bar: u8 },
    #[error("queue {queue} does not exist (the device has {num_queues})")]
    NoSuchQueue { queue: u16, num_queues: u16 },
    #[error("device did not accept queue {queue} size {size}, it reads back {got}")]
    QueueSizeRefused { queue: u16, size: u16, got: u16 },
    #[error("the legacy interface needs the ring of queue {queue} at one page-aligned address in legacy layout")]
    LegacyLayout { queue: u16 },
    #[error("the function has no legacy I/O BAR (BAR0): it is not a transitional device")]
    NoLegacyBar,
}

/// Which interface of a (transitional) device the driver uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Modern,
    Legacy,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Modern => "modern",
            Kind::Legacy => "legacy",
        }
    }
}

/// What the net driver needs from a virtio transport.
pub trait Transport {
    /// Writes 0 to the status and waits until the device reads back 0. Must come first.
    fn reset(&mut self);
    fn status(&self) -> u8;
    fn set_status(&mut self, status: u8);
    /// ORs `bits` into the device status.
    fn add_status(&mut self, bits: u8) {
        let s = self.status();
        self.set_status(s | bits);
    }
    fn device_features(&self) -> u64;
    fn set_driver_features(&mut self, features: u64);
    fn num_queues(&self) -> u16;
    /// Largest size the device accepts for queue `queue`; 0 when the queue does not exist.
    fn queue_max_size(&self, queue: u16) -> u16;
    /// Asks for `size` entries in queue `queue` and returns what the device reads back: a
    /// device may fix its size (QEMU's 256; every legacy device).
    fn set_queue_size(&mut self, queue: u16, size: u16) -> u16;
    /// Programs and enables queue `queue` (its size set before) with its rings at `addrs`
    /// and its used-buffer interrupts on MSI-X table entry `msix_vector`
    /// ([`crate::msix::NO_VECTOR`] for none: a polled queue).
    fn setup_queue(
        &mut self,
        queue: u16,
        size: u16,
        addrs: QueueAddrs,
        msix_vector: u16,
    ) -> Result<(), Error>;
    /// Points configuration-change interrupts at MSI-X table entry `vector` and returns
    /// what the device reads back (NO_VECTOR when it refused).
    fn set_config_vector(&mut self, vector: u16) -> u16;
    /// Which interface this is.
    fn kind(&self) -> Kind;
    /// Tells the device that queue `queue` has new buffers.
    fn notify(&self, queue: u16);
    /// Reads the device-specific configuration, `buf.len()` bytes from `offset`, retrying
    /// until the configuration generation is stable.
    fn read_config(&self, offset: u16, buf: &mut [u8]);
}

/// The transport a port drives, chosen at probe time.
pub enum AnyTransport<'a, H: Hal> {
    Modern(modern::ModernTransport<'a, H>),
    Legacy(legacy::LegacyTransport<'a, H>),
}

impl<'a, H: Hal> AnyTransport<'a, H> {
    /// Opens the function at `cfg` through the interface `kind`.
    pub fn probe(hal: &'a H, cfg: &ConfigSpace<'a, H>, kind: Kind) -> Result<Self, Error> {
        Ok(match kind {
            Kind::Modern => AnyTransport::Modern(modern::ModernTransport::probe(hal, cfg)?),
            Kind::Legacy => AnyTransport::Legacy(legacy::LegacyTransport::probe(hal, cfg)?),
        })
    }
}

macro_rules! dispatch {
    ($self:ident, $t:ident => $e:expr) => {
        match $self {
            AnyTransport::Modern($t) => $e,
            AnyTransport::Legacy($t) => $e,
        }
    };
}

impl<H: Hal> Transport for AnyTransport<'_, H> {
    fn reset(&mut self) {
        dispatch!(self, t => t.reset())
    }
    fn status(&self) -> u8 {
        dispatch!(self, t => t.status())
    }
    fn set_status(&mut self, status: u8) {
        dispatch!(self, t => t.set_status(status))
    }
    fn device_features(&self) -> u64 {
        dispatch!(self, t => t.device_features())
    }
    fn set_driver_features(&mut self, features: u64) {
        dispatch!(self, t => t.set_driver_features(features))
    }
    fn num_queues(&self) -> u16 {
        dispatch!(self, t => t.num_queues())
    }
    fn queue_max_size(&self, queue: u16) -> u16 {
        dispatch!(self, t => t.queue_max_size(queue))
    }
    fn set_queue_size(&mut self, queue: u16, size: u16) -> u16 {
        dispatch!(self, t => t.set_queue_size(queue, size))
    }
    fn setup_queue(
        &mut self,
        queue: u16,
        size: u16,
        addrs: QueueAddrs,
        msix_vector: u16,
    ) -> Result<(), Error> {
        dispatch!(self, t => t.setup_queue(queue, size, addrs, msix_vector))
    }
    fn set_config_vector(&mut self, vector: u16) -> u16 {
        dispatch!(self, t => t.set_config_vector(vector))
    }
    fn kind(&self) -> Kind {
        dispatch!(self, t => t.kind())
    }
    fn notify(&self, queue: u16) {
        dispatch!(self, t => t.notify(queue))
    }
    fn read_config(&self, offset: u16, buf: &mut [u8]) {
        dispatch!(self, t => t.read_config(offset, buf))
    }
}
