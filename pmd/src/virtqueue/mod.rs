//! The driver side of a virtqueue (virtio 1.x, 2.6): one type, [`Virtqueue`], whatever
//! ring layout is behind it.
//!
//! The datapath (rx, tx, the control queue) is written against what every layout offers:
//! add a chain of buffers (directly, or through an indirect table), decide whether the
//! device wants a notification, take back the chains the device used, count free room.
//! Chains are named by an id in `0..size` that comes back with the used chain, so the
//! caller keeps its per-chain state (an mbuf) in a table of `size` slots.
//!
//! Two layouts: split ([`split`], 2.7) and packed ([`packed`], VIRTIO_F_RING_PACKED, 2.8).
//! Either may run in order (VIRTIO_F_IN_ORDER, 2.7.9 and 2.8.8): the device then uses
//! chains in the order they were made available and may return a batch of them with one
//! used entry naming the batch's last chain. An in-order queue takes descriptors in ring
//! order and frees them in order (no free-list walk), and hands a batch back chain by
//! chain, oldest first ([`Virtqueue::pop_used`]) or whole ([`Virtqueue::pop_used_batch`]).
//! Code that pokes at a layout's internals on purpose (the hostile driver) uses the
//! layout's own types ([`split::ring::SplitRing`], [`packed::ring::PackedRing`]).

#[cfg(test)]
mod in_order_tests;
pub mod packed;
pub mod split;
#[cfg(test)]
pub(crate) mod testdev;
#[cfg(test)]
mod tests;

use crate::hal::Hal;
use crate::transport::QueueAddrs;
pub use packed::PackedQueue;
pub use split::SplitQueue;

/// Largest queue size the virtio spec allows (split rings; packed ones allow the same).
pub const MAX_SIZE: u16 = 32768;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("queue size {0} is not a power of two between 1 and 32768")]
    BadSize(u16),
    #[error("packed queue size {0} is not between 1 and 32768")]
    BadPackedSize(u16),
    #[error("out of DMA memory for a {0}-entry queue")]
    NoMemory(u16),
}

/// One buffer of a descriptor chain.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub paddr: u64,
    pub len: u32,
    /// The device writes this buffer (rx); otherwise it reads it (tx).
    pub device_writes: bool,
}

/// A chain the device returned: the id [`Virtqueue::add`] gave it and the number of bytes
/// the device wrote into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    pub id: u16,
    pub len: u32,
}

/// A used entry that names no chain in flight (a device bug), as the device wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadUsed {
    pub id: u32,
    pub len: u32,
}

/// What one used entry returned: `count` chains, the oldest first, the last of which is
/// `last`. Without VIRTIO_F_IN_ORDER `count` is 1; in order the chains before `last` count
/// as written in full (their device-writable bytes), as the spec says of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsedBatch {
    pub count: u16,
    pub last: Used,
}

/// The rest of an in-order batch being handed out chain by chain.
#[derive(Clone, Copy, Debug, Default)]
struct Batch {
    /// Chains of the batch not handed out yet.
    left: u16,
    /// The length the used entry gave, for the batch's last chain.
    last_len: u32,
}

impl Batch {
    /// Counts one chain handed out and returns its length: the used entry's for the
    /// batch's last chain, `writable` (all the chain's device-writable bytes) for the ones
    /// it skipped.
    fn next_len(&mut self, writable: u32) -> u32 {
        self.left -= 1;
        if self.left == 0 {
            self.last_len
        } else {
            writable
        }
    }
}

/// Bytes the device may write into `bufs`: what an in-order batch's skipped chains count
/// as written.
fn writable_bytes(bufs: &[Buf]) -> u32 {
    bufs.iter()
        .filter(|b| b.device_writes)
        .fold(0u32, |n, b| n.saturating_add(b.len))
}

/// Which ring layout a queue uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// Descriptor table, available ring, used ring (2.7).
    #[default]
    Split,
    /// One descriptor ring with wrap counters, and two event suppression structures
    /// (2.8, VIRTIO_F_RING_PACKED).
    Packed,
}

/// How a queue is set up, from the negotiated features.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub layout: Layout,
    /// Notification suppression through event indexes (VIRTIO_F_EVENT_IDX) rather than
    /// flags.
    pub event_idx: bool,
    /// Entries of the indirect table each chain may use (VIRTIO_F_INDIRECT_DESC); 0 for no
    /// indirect tables.
    pub indirect: u16,
    /// The device uses chains in the order they were made available
    /// (VIRTIO_F_IN_ORDER).
    pub in_order: bool,
}

/// A driver-side virtqueue.
pub enum Virtqueue<'a, H: Hal> {
    Split(SplitQueue<'a, H>),
    Packed(PackedQueue<'a, H>),
}

macro_rules! dispatch {
    ($self:ident, $q:ident => $e:expr) => {
        match $self {
            Virtqueue::Split($q) => $e,
            Virtqueue::Packed($q) => $e,
        }
    };
}

impl<'a, H: Hal> Virtqueue<'a, H> {
    /// Allocates and initialises queue `index` of `size` entries (up to [`MAX_SIZE`]; a
    /// power of two for a split ring) laid out and set up as `opts` says.
    pub fn new(hal: &'a H, index: u16, size: u16, opts: Options) -> Result<Self, Error> {
        match opts.layout {
            Layout::Split => {
                let mut q = SplitQueue::new(hal, index, size, opts.event_idx)?;
                if opts.indirect > 0 {
                    q = q.with_indirect(opts.indirect)?;
                }
                if opts.in_order {
                    q = q.with_in_order();
                }
                Ok(Virtqueue::Split(q))
            }
            Layout::Packed => {
                let mut q = PackedQueue::new(hal, index, size, opts.event_idx)?;
                if opts.indirect > 0 {
                    q = q.with_indirect(opts.indirect)?;
                }
                if opts.in_order {
                    q = q.with_in_order();
                }
                Ok(Virtqueue::Packed(q))
            }
        }
    }

    /// The queue's ring layout.
    pub fn layout(&self) -> Layout {
        match self {
            Virtqueue::Split(_) => Layout::Split,
            Virtqueue::Packed(_) => Layout::Packed,
        }
    }

    /// Whether the device uses chains in order (VIRTIO_F_IN_ORDER): [`Virtqueue::pop_used`]
    /// then returns them in the order they were added.
    pub fn in_order(&self) -> bool {
        dispatch!(self, q => q.in_order())
    }

    /// The queue's index on its device.
    pub fn index(&self) -> u16 {
        dispatch!(self, q => q.index())
    }

    /// Entries in the ring.
    pub fn size(&self) -> u16 {
        dispatch!(self, q => q.size())
    }

    /// Where the device finds the ring: descriptor area, driver area (split: the available
    /// ring; packed: the driver event suppression structure), device area (split: the used
    /// ring; packed: the device event suppression structure).
    pub fn addrs(&self) -> QueueAddrs {
        dispatch!(self, q => q.addrs())
    }

    /// Descriptors free: a chain of `n` buffers fits when `n <= num_free()`, an indirect
    /// chain when `num_free() >= 1`.
    pub fn num_free(&self) -> u16 {
        dispatch!(self, q => q.num_free())
    }

    /// Chains handed to the device and not yet returned.
    pub fn in_flight(&self) -> u16 {
        dispatch!(self, q => q.in_flight())
    }

    /// Longest chain [`Virtqueue::add_indirect`] takes (0 without indirect tables).
    pub fn indirect_max(&self) -> u16 {
        dispatch!(self, q => q.indirect_max())
    }

    /// Adds a chain made of `bufs`, not yet visible to the device (see
    /// [`Virtqueue::kick_prepare`]). Returns its id, or `None` when it does not fit.
    pub fn add(&mut self, bufs: &[Buf]) -> Option<u16> {
        dispatch!(self, q => q.add(bufs))
    }

    /// Adds a chain through an indirect table: one ring descriptor whatever its length.
    /// `None` without indirect tables, when the chain is longer than a table or nothing is
    /// free.
    pub fn add_indirect(&mut self, bufs: &[Buf]) -> Option<u16> {
        dispatch!(self, q => q.add_indirect(bufs))
    }

    /// Makes every chain added so far visible to the device and says whether the device
    /// asked to be notified of them (with EVENT_IDX: whether its event index was crossed).
    /// The caller notifies through the transport.
    pub fn kick_prepare(&mut self) -> bool {
        dispatch!(self, q => q.kick_prepare())
    }

    /// Asks the device not to interrupt for used chains: a poll-mode driver looks itself.
    pub fn suppress_interrupts(&mut self) {
        dispatch!(self, q => q.suppress_interrupts())
    }

    /// Takes the next chain the device returned, if any, and frees its descriptors. In
    /// order, chains come back oldest first, one per call even when one used entry
    /// returned several.
    pub fn pop_used(&mut self) -> Option<Result<Used, BadUsed>> {
        dispatch!(self, q => q.pop_used())
    }

    /// Takes everything the next used entry returned, if any, and frees its descriptors:
    /// in order a whole batch (what is left of it when [`Virtqueue::pop_used`] began
    /// handing it out), otherwise one chain.
    pub fn pop_used_batch(&mut self) -> Option<Result<UsedBatch, BadUsed>> {
        dispatch!(self, q => q.pop_used_batch())
    }
}
