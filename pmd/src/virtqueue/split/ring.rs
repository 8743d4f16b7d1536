//! The memory of a split virtqueue (virtio 1.x, 2.7), without any driver policy: where the
//! descriptor table, the available ring and the used ring sit, and one accessor for each
//! field. [`super::SplitQueue`] drives a ring through it; the hostile driver writes whatever
//! it likes through it.
//!
//! The ring lives in one DMA block laid out as the legacy interface requires (descriptor
//! table, available ring, then the used ring on the next 4 KiB boundary), so one layout
//! serves every transport. Fields the device writes are read with acquire (indexes) or
//! relaxed (flags, events) atomic loads, fields the driver publishes are stored the same
//! way: the device is another thread or another CPU. Every index is taken modulo the ring
//! size, so no accessor reaches outside the block.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU16, Ordering};

use crate::hal::{Dma, Hal};
use crate::transport::QueueAddrs;
use crate::virtqueue::{Error, MAX_SIZE};

pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
pub const DESC_F_INDIRECT: u16 = 4;
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
pub const USED_F_NO_NOTIFY: u16 = 1;

/// Bytes of one descriptor, in the ring and in an indirect table.
pub const DESC_LEN: usize = 16;

pub(crate) const PAGE: usize = 4096;

/// One descriptor (`struct virtq_desc`), in CPU byte order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

/// A descriptor as it lies in memory: little endian.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawDesc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

impl Desc {
    fn to_raw(self) -> RawDesc {
        RawDesc {
            addr: self.addr.to_le(),
            len: self.len.to_le(),
            flags: self.flags.to_le(),
            next: self.next.to_le(),
        }
    }

    fn from_raw(r: RawDesc) -> Self {
        Self {
            addr: u64::from_le(r.addr),
            len: u32::from_le(r.len),
            flags: u16::from_le(r.flags),
            next: u16::from_le(r.next),
        }
    }

    /// Writes the descriptor at `p`, which must be valid for a 16-byte write.
    ///
    /// # Safety
    ///
    /// `p` points to 16 writable bytes aligned to 8 (a descriptor table or indirect table
    /// entry) that no Rust reference covers.
    pub(crate) unsafe fn write_to(self, p: *mut u8) {
        // SAFETY: as the caller promises.
        unsafe { p.cast::<RawDesc>().write_volatile(self.to_raw()) }
    }
}

const fn align_up(x: usize, a: usize) -> usize {
    (x + a - 1) & !(a - 1)
}

/// Offset of the used ring of a `size`-entry ring: the first 4 KiB boundary after the
/// descriptor table and the available ring.
pub const fn used_offset(size: u16) -> usize {
    let n = size as usize;
    align_up(DESC_LEN * n + 6 + 2 * n, PAGE)
}

/// The size in bytes of the DMA block a ring of `size` entries needs.
pub const fn ring_bytes(size: u16) -> usize {
    used_offset(size) + align_up(6 + 8 * size as usize, PAGE)
}

/// Where the three parts of a `size`-entry ring starting at device address `base` lie.
/// Wrapping: a caller may ask where a ring placed anywhere would be.
pub fn layout(base: u64, size: u16) -> QueueAddrs {
    QueueAddrs {
        desc: base,
        avail: base.wrapping_add((DESC_LEN * usize::from(size)) as u64),
        used: base.wrapping_add(used_offset(size) as u64),
    }
}

/// Byte offsets of the fields, from the start of the block.
mod off {
    pub const AVAIL_FLAGS: usize = 0;
    pub const AVAIL_IDX: usize = 2;
    pub const AVAIL_RING: usize = 4;
    pub const USED_FLAGS: usize = 0;
    pub const USED_IDX: usize = 2;
    pub const USED_RING: usize = 4;
}

/// One split ring in DMA memory.
pub struct SplitRing {
    dma: Dma,
    size: u16,
    desc: NonNull<u8>,
    avail: NonNull<u8>,
    used: NonNull<u8>,
}

impl SplitRing {
    /// Allocates a ring of `size` entries (a power of two up to [`MAX_SIZE`]), zeroed: no
    /// flags, indexes and events at 0.
    pub fn new<H: Hal>(hal: &H, size: u16) -> Result<Self, Error> {
        if size == 0 || size > MAX_SIZE || !size.is_power_of_two() {
            return Err(Error::BadSize(size));
        }
        let dma = hal
            .dma_alloc(ring_bytes(size), PAGE)
            .ok_or(Error::NoMemory(size))?;
        let base = dma.vaddr.as_ptr();
        // SAFETY: `ring_bytes` covers the descriptor table at 0, the avail ring at 16 * size
        // and the used ring at `used_offset`; the block is ours for the driver's lifetime
        // (Hal contract), so these pointers stay in bounds and valid.
        let (desc, avail, used) = unsafe {
            (
                NonNull::new_unchecked(base),
                NonNull::new_unchecked(base.add(DESC_LEN * usize::from(size))),
                NonNull::new_unchecked(base.add(used_offset(size))),
            )
        };
        let mut ring = Self {
            dma,
            size,
            desc,
            avail,
            used,
        };
        ring.clear();
        Ok(ring)
    }

    /// Zeroes the whole block, as after [`SplitRing::new`].
    pub fn clear(&mut self) {
        // SAFETY: the block is `ring_bytes(size)` long and ours; the device does not use it
        // while a driver (re)initialises a queue.
        unsafe {
            self.dma
                .vaddr
                .as_ptr()
                .write_bytes(0, ring_bytes(self.size))
        };
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// The device addresses of the three parts.
    pub fn addrs(&self) -> QueueAddrs {
        layout(self.dma.paddr, self.size)
    }

    fn mask(&self, i: u16) -> usize {
        usize::from(i & (self.size - 1))
    }

    /// Writes descriptor `i` (modulo the size).
    pub fn write_desc(&mut self, i: u16, d: Desc) {
        let at = DESC_LEN * self.mask(i);
        // SAFETY: entry `i mod size` lies inside the descriptor table, 16-byte aligned.
        unsafe { d.write_to(self.desc.as_ptr().add(at)) }
    }

    /// Reads descriptor `i` (modulo the size).
    pub fn read_desc(&self, i: u16) -> Desc {
        let at = DESC_LEN * self.mask(i);
        // SAFETY: as `write_desc`.
        let raw = unsafe { self.desc.as_ptr().add(at).cast::<RawDesc>().read_volatile() };
        Desc::from_raw(raw)
    }

    fn avail_u16(&self, offset: usize) -> &AtomicU16 {
        debug_assert!(offset + 2 <= 6 + 2 * usize::from(self.size) && offset % 2 == 0);
        // SAFETY: callers pass even offsets within the 6 + 2 * size bytes of the avail ring;
        // the memory is shared with the device, hence atomic access.
        unsafe { AtomicU16::from_ptr(self.avail.as_ptr().add(offset).cast()) }
    }

    fn used_u16(&self, offset: usize) -> &AtomicU16 {
        debug_assert!(offset + 2 <= 6 + 8 * usize::from(self.size) && offset % 2 == 0);
        // SAFETY: as `avail_u16`, within the 6 + 8 * size bytes of the used ring.
        unsafe { AtomicU16::from_ptr(self.used.as_ptr().add(offset).cast()) }
    }

    /// Puts `head` in available-ring slot `slot` (modulo the size); the device sees it once
    /// the index covers it.
    pub fn set_avail_entry(&mut self, slot: u16, head: u16) {
        let at = off::AVAIL_RING + 2 * self.mask(slot);
        self.avail_u16(at).store(head.to_le(), Ordering::Relaxed);
    }

    /// Publishes `idx` as the available index (a release store: what was written before is
    /// visible to a device that sees the index).
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.avail_u16(off::AVAIL_IDX)
            .store(idx.to_le(), Ordering::Release);
    }

    /// The available ring's flags (VRING_AVAIL_F_NO_INTERRUPT).
    pub fn set_avail_flags(&mut self, flags: u16) {
        self.avail_u16(off::AVAIL_FLAGS)
            .store(flags.to_le(), Ordering::Relaxed);
    }

    /// `used_event`, after the available ring (VIRTIO_F_EVENT_IDX).
    pub fn set_used_event(&mut self, idx: u16) {
        let at = off::AVAIL_RING + 2 * usize::from(self.size);
        self.avail_u16(at).store(idx.to_le(), Ordering::Relaxed);
    }

    /// The used index the device published (an acquire load: the entries below it are
    /// readable once it is seen).
    pub fn used_idx(&self) -> u16 {
        u16::from_le(self.used_u16(off::USED_IDX).load(Ordering::Acquire))
    }

    /// The used ring's flags (VRING_USED_F_NO_NOTIFY).
    pub fn used_flags(&self) -> u16 {
        u16::from_le(self.used_u16(off::USED_FLAGS).load(Ordering::Relaxed))
    }

    /// `avail_event`, after the used ring (VIRTIO_F_EVENT_IDX).
    pub fn avail_event(&self) -> u16 {
        let at = off::USED_RING + 8 * usize::from(self.size);
        u16::from_le(self.used_u16(at).load(Ordering::Relaxed))
    }

    /// Used-ring entry `slot` (modulo the size) as the device wrote it: (id, len). Read it
    /// only below an index [`SplitRing::used_idx`] returned.
    pub fn used_entry(&self, slot: u16) -> (u32, u32) {
        let at = off::USED_RING + 8 * self.mask(slot);
        // SAFETY: `at + 8` is within the used ring; the acquire load of the used index orders
        // this read after the device's write of the entry.
        let (id, len) = unsafe {
            let p = self.used.as_ptr().add(at).cast::<u32>();
            (p.read_volatile(), p.add(1).read_volatile())
        };
        (u32::from_le(id), u32::from_le(len))
    }
}
