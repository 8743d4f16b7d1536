//! Virtio transports: how the driver reaches a device's status, features, queues and
//! configuration. The net driver is written against [`Transport`]; the modern PCI transport
//! is one implementation.

pub mod modern;

use crate::pci;

/// Device status bits (virtio 1.x, 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const DEVICE_NEEDS_RESET: u8 = 64;
    pub const FAILED: u8 = 128;
}

/// Where a split virtqueue's three parts live, in device (guest-physical) addresses.
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
    /// Programs and enables queue `queue` with `size` entries at `addrs`.
    fn setup_queue(&mut self, queue: u16, size: u16, addrs: QueueAddrs) -> Result<(), Error>;
    /// Tells the device that queue `queue` has new buffers.
    fn notify(&self, queue: u16);
    /// Reads the device-specific configuration, `buf.len()` bytes from `offset`, retrying
    /// until the configuration generation is stable.
    fn read_config(&self, offset: u16, buf: &mut [u8]);
}
