//! What a virtio device type (net, ...) implements, and what its transport gives it when the
//! driver sets DRIVER_OK: guest memory, ready queues with their kick eventfds, and a way to
//! interrupt the driver.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use crate::queue::DeviceQueue;
/// Guest memory as the device sees it.
pub use crate::queue::Memory;

/// Transport-level feature bits (virtio 1.x, 6).
pub mod features {
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    pub const VERSION_1: u64 = 1 << 32;
    /// The packed virtqueue layout (2.8).
    pub const RING_PACKED: u64 = 1 << 34;
    /// Buffers are used in the order they were made available (split and packed rings'
    /// "In-order use of descriptors").
    pub const IN_ORDER: u64 = 1 << 35;
}

/// Device status bits (virtio 1.x, 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const DEVICE_NEEDS_RESET: u8 = 64;
    pub const FAILED: u8 = 128;
}

/// An MSI message, as programmed in an MSI-X table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    pub addr: u64,
    pub data: u32,
}

/// Where MSI messages go: KVM (irqfd or KVM_SIGNAL_MSI) in the VMM, a counter in tests.
pub trait MsiSink: Send + Sync {
    fn send(&self, msg: MsiMessage);
}

/// How an active device interrupts its driver; the transport maps it to MSI-X vectors.
pub trait Interrupt: Send + Sync {
    /// Used buffers were added to queue `queue`.
    fn queue(&self, queue: u16);
    /// The device configuration changed.
    fn config_changed(&self);
}

/// Shared between a device, its datapath and its transport: lets the datapath report that
/// the driver broke the rules so the transport shows DEVICE_NEEDS_RESET (2.1.2).
#[derive(Debug, Default)]
pub struct Health {
    needs_reset: AtomicBool,
    errors: AtomicU64,
}

impl Health {
    /// Records a driver error that the device cannot recover from without a reset.
    pub fn fail(&self, what: &str) {
        tracing::warn!("device needs reset: {what}");
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.needs_reset.store(true, Ordering::Release);
    }

    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::Acquire)
    }

    /// How many times the device has been failed since creation.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub(crate) fn clear(&self) {
        self.needs_reset.store(false, Ordering::Release);
    }
}

/// One queue the driver enabled, ready for the device side.
pub struct ActiveQueue {
    /// Its queue index.
    pub index: u16,
    pub queue: Box<dyn DeviceQueue>,
    /// Signalled when the driver notifies the queue.
    pub kick: EventFd,
}

/// Everything a device gets when the driver sets DRIVER_OK.
pub struct Activation {
    pub mem: Arc<Memory>,
    /// Features the driver accepted.
    pub features: u64,
    /// Indexed by queue number; `None` for queues the driver did not enable.
    pub queues: Vec<Option<ActiveQueue>>,
    pub interrupt: Arc<dyn Interrupt>,
    pub health: Arc<Health>,
}

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("queue {0} is required but was not enabled by the driver")]
    QueueNotEnabled(u16),
    #[error("could not start the datapath: {0}")]
    Datapath(String),
    #[error("the device is already active")]
    AlreadyActive,
}

/// A virtio device type behind a transport.
pub trait VirtioDevice: Send {
    /// Virtio device ID (1 for net).
    fn device_type(&self) -> u16;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Features offered to the driver.
    fn features(&self) -> u64;
    /// Whether the driver's accepted `features` are consistent (their dependencies met);
    /// the transport has already checked they were offered.
    fn features_consistent(&self, features: u64) -> bool {
        let _ = features;
        true
    }
    /// Reads the device-specific configuration. Out-of-range bytes read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration. Read-only fields ignore writes.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Changes whenever the device configuration changes (the transport's
    /// `config_generation`).
    fn config_generation(&self) -> u8;
    /// Starts the device's datapath.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;
    /// Stops the datapath and returns to the state before activation.
    fn reset(&mut self);
}
