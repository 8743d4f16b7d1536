//! A virtqueue as the device sees it, whatever the ring's layout.
//!
//! The datapath works on [`DeviceQueue`]: it takes available buffer chains as lists of guest
//! memory regions, hands buffers back as used (id and length, staged and then published as a
//! batch, which also decides whether the driver wants an interrupt), and turns the driver's
//! notifications on and off. How a ring stores its descriptors and indexes stays behind the
//! trait: [`SplitQueue`] serves split rings (virtio 1.2, 2.7) over `virtio-queue`;
//! [`PackedQueue`] serves packed rings (2.8), which `virtio-queue` has no device side for.
//! [`Layout`] chooses between them: packed when the driver negotiated VIRTIO_F_RING_PACKED.
//!
//! With VIRTIO_F_IN_ORDER ([`RingConfig::in_order`]) both return a batch of buffers with one
//! used entry, as the spec allows ("In-order use of descriptors" of either layout; 2.8.8 for
//! packed rings), where no driver can be misled: a run of buffers the device only read
//! (transmit and other device-readable buffers: nothing written, the length says nothing)
//! folds into the entry of the buffer after it. A buffer the device wrote into (a receive
//! buffer) keeps its own entry. The spec would let a completely filled one be skipped too
//! ("assumed to have been used ... completely"), but drivers in use read every receive
//! entry: DPDK's virtio PMD reads each used ring entry's length on its in-order receive
//! path of split rings, and turns in-order receive off for packed rings; and the devices
//! they meet (QEMU, DPDK's vhost) write them all.
//!
//! Everything read from a ring is guest input: an implementation checks what it reads against
//! guest RAM and the ring's size, and reports what the driver got wrong as an [`Error`] for
//! which [`Error::is_driver_error`] holds.

pub mod packed;
pub mod split;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use vm_memory::{GuestAddress, GuestMemoryMmap};

pub use packed::PackedQueue;
pub use split::SplitQueue;

/// Guest memory as the device sees it.
pub type Memory = GuestMemoryMmap<()>;

/// How a ring lays out its descriptors and indexes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// Descriptor table, available ring, used ring (virtio 1.2, 2.7).
    #[default]
    Split,
    /// One descriptor ring with wrap counters, and the driver's and the device's event
    /// suppression structures (2.8, VIRTIO_F_RING_PACKED).
    Packed,
}

/// The three areas of a ring as the driver programs them (`queue_desc`, `queue_driver`,
/// `queue_device`, 4.1.4.3): for a split ring the descriptor table, the available ring and
/// the used ring; for a packed ring the descriptor ring and the driver's and the device's
/// event suppression structures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingAddresses {
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

/// What a queue is built from when the driver sets DRIVER_OK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    pub layout: Layout,
    /// The most entries the device allows.
    pub max_size: u16,
    /// The entries the driver chose.
    pub size: u16,
    pub addresses: RingAddresses,
    /// VIRTIO_F_EVENT_IDX was negotiated: notifications are suppressed by event indexes
    /// rather than flags.
    pub event_idx: bool,
    /// VIRTIO_F_IN_ORDER was negotiated: buffers are used in the order they were made
    /// available, and a batch may be returned with one used entry.
    pub in_order: bool,
}

/// Where the device is in a ring: what vhost's SET_VRING_BASE and GET_VRING_BASE carry.
/// A split ring's free-running indexes; a packed ring's slots (below the ring's size) with
/// the wrap counter of their lap in bit 15 (vhost-user's VRING_BASE encoding for packed
/// rings, as QEMU and DPDK use it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingPosition {
    /// The next available entry the device takes.
    pub next_avail: u16,
    /// The next used entry the device writes.
    pub next_used: u16,
}

/// One guest memory region of a buffer chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub addr: GuestAddress,
    pub len: u32,
    /// Device-writable (the driver's VIRTQ_DESC_F_WRITE); device-readable otherwise.
    pub writable: bool,
}

/// An available buffer chain as the device found it. Reused from chain to chain: a queue
/// fills it in [`DeviceQueue::pop`].
#[derive(Clone, Debug, Default)]
pub struct Chain {
    /// What the used entry for this chain names: the head descriptor's index in a split
    /// ring, the buffer ID in a packed one.
    pub id: u16,
    /// The chain's regions in chain order, indirect tables followed. Their addresses are
    /// the driver's: nothing has checked them against guest memory yet.
    pub regions: Vec<Region>,
    /// The walk stopped before the chain's end: the chain loops, is longer than the ring
    /// allows, or points outside its descriptor table (or at an unreadable indirect table).
    pub cut: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `virtio-queue` refused a value or could not read the ring.
    #[error(transparent)]
    Ring(#[from] virtio_queue::Error),
    #[error("size {size}: {source}")]
    Size {
        size: u16,
        #[source]
        source: virtio_queue::Error,
    },
    #[error("{area} {addr:#x}: {source}")]
    Address {
        /// Which area: "descriptor table", "available ring", ...
        area: &'static str,
        addr: u64,
        #[source]
        source: virtio_queue::Error,
    },
    #[error(
        "rings at desc {desc:#x} avail {driver:#x} used {device:#x} (size {size}) are not \
         inside guest memory"
    )]
    OutsideMemory {
        desc: u64,
        driver: u64,
        device: u64,
        size: u16,
    },
    /// The used side (or the suppression fields read beside it) is out of reach.
    #[error("used ring at {addr:#x}: {source}")]
    UsedRing {
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// Reading the descriptor ring failed (it was inside guest memory when the ring was set
    /// up: the memory changed under it).
    #[error("descriptor ring at {addr:#x}: {source}")]
    DescRing {
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// A packed ring's event suppression structure is out of reach.
    #[error("{area} at {addr:#x}: {source}")]
    Suppression {
        /// "driver event suppression" or "device event suppression".
        area: &'static str,
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// The driver published more available entries than the ring holds (2.7.13.3).
    #[error("available index {idx} is {ahead} entries ahead in a {size}-entry ring")]
    AvailAhead { idx: u16, ahead: u16, size: u16 },
}

impl Error {
    /// Whether the driver broke the ring's rules (the device then needs a reset), rather
    /// than the ring being out of the device's reach.
    pub fn is_driver_error(&self) -> bool {
        matches!(self, Error::AvailAhead { .. })
    }
}

/// The device side of a virtqueue.
///
/// Used entries are staged with [`DeviceQueue::add_used`], invisible to the driver, and
/// made visible together by [`DeviceQueue::publish_used`]: a frame spread over several
/// buffers appears at once, and the driver's index (or first flag) is written once per
/// batch.
pub trait DeviceQueue: Send {
    fn layout(&self) -> Layout;
    /// The most entries the device allows.
    fn max_size(&self) -> u16;
    /// The ring's entries.
    fn size(&self) -> u16;
    /// The ring's areas in guest-physical memory.
    fn addresses(&self) -> RingAddresses;
    /// Whether the driver enabled the queue (and the device may use it).
    fn ready(&self) -> bool;
    /// Whether notifications are suppressed by event indexes (VIRTIO_F_EVENT_IDX).
    fn event_idx(&self) -> bool;
    /// Forgets the driver's set-up, as a device reset does: not ready, no addresses, the
    /// positions back at 0, nothing staged.
    fn reset(&mut self);

    /// Where the device is in the ring, to hand the ring to another device side (vhost's
    /// SET_VRING_BASE) or to take it back (GET_VRING_BASE).
    fn position(&self) -> RingPosition;
    /// Continues at `at` (what [`DeviceQueue::position`] of the ring's last device side
    /// said).
    fn set_position(&mut self, at: RingPosition);

    /// Takes the next available chain into `chain`. `Ok(false)`: the driver has made
    /// nothing more available (or, see [`DeviceQueue::check_available`], broke the rules).
    fn pop(&mut self, mem: &Memory, chain: &mut Chain) -> Result<bool, Error>;
    /// Puts back the last `n` chains taken, which have no used entry: the next pops take
    /// them again, in the same order.
    fn unpop(&mut self, n: u16);
    /// How many chains the driver has made available that the device has not taken. More
    /// than the ring's size when the driver broke the rules.
    fn available(&self, mem: &Memory) -> Result<u16, Error>;
    /// Called when [`DeviceQueue::pop`] found nothing: fails with an error for which
    /// [`Error::is_driver_error`] holds when that is because the driver broke the ring's
    /// rules.
    fn check_available(&self, mem: &Memory) -> Result<(), Error>;

    /// Stages the used entry of chain `id`, `len` bytes written into it; the driver cannot
    /// see it until [`DeviceQueue::publish_used`].
    fn add_used(&mut self, mem: &Memory, id: u16, len: u32) -> Result<(), Error>;
    /// Makes the staged used entries visible. Returns whether the driver asked to be
    /// notified of them (its event index among them with VIRTIO_F_EVENT_IDX, no
    /// suppression flag without).
    fn publish_used(&mut self, mem: &Memory) -> Result<bool, Error>;

    /// Asks the driver to notify the device of new available chains. Returns whether some
    /// arrived since the device last looked: the device must look again before it sleeps.
    fn enable_notification(&mut self, mem: &Memory) -> Result<bool, Error>;
    /// Asks the driver not to notify the device (the device polls meanwhile).
    fn disable_notification(&mut self, mem: &Memory) -> Result<(), Error>;
}

/// The device side of the ring `cfg` describes, checked against `mem`.
pub fn build(cfg: &RingConfig, mem: &Memory) -> Result<Box<dyn DeviceQueue>, Error> {
    match cfg.layout {
        Layout::Split => Ok(Box::new(SplitQueue::new(cfg, mem)?)),
        Layout::Packed => Ok(Box::new(PackedQueue::new(cfg, mem)?)),
    }
}

/// A chain the device took and has not returned: what its used entry needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Popped {
    pub id: u16,
    /// Descriptors it took in the ring: a packed ring's used position moves by as many.
    pub descs: u16,
    /// Its device-writable bytes: what a driver takes as written for a buffer an in-order
    /// batch skips.
    pub writable: u32,
}

/// The chains taken and not yet used, oldest first.
#[derive(Debug, Default)]
pub(crate) struct InFlight(std::collections::VecDeque<Popped>);

impl InFlight {
    pub fn push(&mut self, p: Popped) {
        self.0.push_back(p);
    }

    /// Takes chain `id`: the oldest one (in order, the only one a device may use next), or
    /// the oldest with that ID.
    pub fn take(&mut self, id: u16) -> Option<Popped> {
        match self.0.front() {
            Some(p) if p.id == id => self.0.pop_front(),
            _ => {
                let at = self.0.iter().position(|p| p.id == id)?;
                self.0.remove(at)
            }
        }
    }

    /// Forgets the newest chain (put back in the ring).
    pub fn unpop(&mut self) -> Option<Popped> {
        self.0.pop_back()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// A used entry staged for publishing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Staged {
    pub id: u16,
    pub len: u32,
    /// What the ring knew of the chain when it was taken; `None` for an ID it never
    /// handed out.
    pub popped: Option<Popped>,
}

impl Staged {
    /// Whether the entry must be written, rather than folded into the next one's: always
    /// out of order, and in order unless something comes after it and the buffer is one
    /// the device only read (no device-writable bytes, nothing written: see the module's
    /// documentation for why a filled receive buffer is not skipped).
    pub fn ends_batch(&self, in_order: bool, last: bool) -> bool {
        !in_order || last || self.len != 0 || self.popped.is_none_or(|p| p.writable != 0)
    }

    /// Descriptors the entry's chain took in the ring.
    pub fn descs(&self) -> u16 {
        self.popped.map_or(1, |p| p.descs)
    }
}

/// The device-writable bytes of `regions`, saturating.
pub(crate) fn writable_bytes(regions: &[Region]) -> u32 {
    regions
        .iter()
        .filter(|r| r.writable)
        .fold(0u32, |n, r| n.saturating_add(r.len))
}
