//! The memory of a packed virtqueue (virtio 1.2, 2.8), without any driver policy: where the
//! descriptor ring and the two event suppression structures sit, and one accessor for each
//! field. [`super::PackedQueue`] drives a ring through it.
//!
//! The ring lives in one DMA block: the descriptor ring (16 bytes per entry, 16-byte
//! aligned, 2.8.10.1), then the driver event suppression structure (the driver area, 4
//! bytes) and the device event suppression structure (the device area, 4 bytes), each
//! 4-byte aligned because the ring before them is a multiple of 16 bytes. A descriptor's
//! flags are its only field the other side polls: they are stored with release and loaded
//! with acquire, so the rest of the descriptor is ordered around them. Every slot is taken
//! modulo the ring size (any size from 1 to 32768, not only powers of two), so no accessor
//! reaches outside the block.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU16, AtomicU32, Ordering};

use crate::hal::{Dma, Hal};
use crate::transport::QueueAddrs;
use crate::virtqueue::{Error, MAX_SIZE};

pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
pub const DESC_F_INDIRECT: u16 = 4;
/// The driver's wrap counter when it makes the descriptor available; the device's when
/// it writes a used descriptor.
pub const DESC_F_AVAIL: u16 = 1 << 7;
/// The inverse of the driver's wrap counter when available; the device's wrap counter
/// when used.
pub const DESC_F_USED: u16 = 1 << 15;

/// Event suppression flags (`desc_event_flags`, 2.8.14).
pub const EVENT_F_ENABLE: u16 = 0;
pub const EVENT_F_DISABLE: u16 = 1;
/// Notify at the descriptor `off_wrap` names (only with VIRTIO_F_EVENT_IDX).
pub const EVENT_F_DESC: u16 = 2;
/// The wrap counter's bit in `off_wrap`; the offset is the 15 bits below it.
pub const EVENT_WRAP: u16 = 1 << 15;

/// Bytes of one descriptor, in the ring and in an indirect table.
pub const DESC_LEN: usize = 16;
/// Bytes of an event suppression structure.
pub const EVENT_LEN: usize = 4;
/// Alignment of the descriptor ring (and of the block).
pub const ALIGN: usize = 16;

/// One packed descriptor (`struct pvirtq_desc`), in CPU byte order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub id: u16,
    pub flags: u16,
}

/// A descriptor as it lies in memory: little endian.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawDesc {
    addr: u64,
    len: u32,
    id: u16,
    flags: u16,
}

impl Desc {
    fn from_raw(r: RawDesc) -> Self {
        Self {
            addr: u64::from_le(r.addr),
            len: u32::from_le(r.len),
            id: u16::from_le(r.id),
            flags: u16::from_le(r.flags),
        }
    }

    /// Writes the whole descriptor at `p` (an indirect table entry: the device reads it
    /// only after the ring descriptor pointing at the table is made available).
    ///
    /// # Safety
    ///
    /// `p` points to 16 writable bytes aligned to 8 that no Rust reference covers.
    pub(crate) unsafe fn write_to(self, p: *mut u8) {
        let raw = RawDesc {
            addr: self.addr.to_le(),
            len: self.len.to_le(),
            id: self.id.to_le(),
            flags: self.flags.to_le(),
        };
        // SAFETY: as the caller promises.
        unsafe { p.cast::<RawDesc>().write_volatile(raw) }
    }
}

/// Offset of the driver area (driver event suppression) in a `size`-entry ring.
pub const fn driver_offset(size: u16) -> usize {
    DESC_LEN * size as usize
}

/// Offset of the device area (device event suppression).
pub const fn device_offset(size: u16) -> usize {
    driver_offset(size) + EVENT_LEN
}

/// The size in bytes of the DMA block a ring of `size` entries needs.
pub const fn ring_bytes(size: u16) -> usize {
    device_offset(size) + EVENT_LEN
}

/// Where the three parts of a `size`-entry ring starting at device address `base` lie.
/// Wrapping: a caller may ask where a ring placed anywhere would be.
pub fn layout(base: u64, size: u16) -> QueueAddrs {
    QueueAddrs {
        desc: base,
        avail: base.wrapping_add(driver_offset(size) as u64),
        used: base.wrapping_add(device_offset(size) as u64),
    }
}

/// `off_wrap` of an event suppression structure: slot `off` in the lap with wrap counter
/// `wrap`.
pub const fn off_wrap(off: u16, wrap: bool) -> u16 {
    (off & !EVENT_WRAP) | if wrap { EVENT_WRAP } else { 0 }
}

/// The AVAIL and USED bits of a descriptor made available in the lap with driver wrap
/// counter `wrap` (2.8.1: AVAIL equal to it, USED not).
pub const fn avail_bits(wrap: bool) -> u16 {
    if wrap {
        DESC_F_AVAIL
    } else {
        DESC_F_USED
    }
}

/// Whether `flags` mark a descriptor the device used in the lap with used wrap counter
/// `wrap` (2.8.1: AVAIL and USED both equal to it).
pub const fn is_used(flags: u16, wrap: bool) -> bool {
    let avail = flags & DESC_F_AVAIL != 0;
    let used = flags & DESC_F_USED != 0;
    avail == used && used == wrap
}

/// One packed ring in DMA memory.
pub struct PackedRing {
    dma: Dma,
    size: u16,
}

impl PackedRing {
    /// Allocates a ring of `size` entries (1 to [`MAX_SIZE`]), zeroed: no descriptor is
    /// available or used in the first lap (whose wrap counters are 1), both event
    /// suppression structures say ENABLE at offset 0.
    pub fn new<H: Hal>(hal: &H, size: u16) -> Result<Self, Error> {
        if size == 0 || size > MAX_SIZE {
            return Err(Error::BadPackedSize(size));
        }
        let dma = hal
            .dma_alloc(ring_bytes(size), ALIGN)
            .ok_or(Error::NoMemory(size))?;
        let mut ring = Self { dma, size };
        ring.clear();
        Ok(ring)
    }

    /// Zeroes the whole block, as after [`PackedRing::new`].
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

    /// Where slot `i` (modulo the size) starts.
    fn slot(&self, i: u16) -> NonNull<u8> {
        let at = DESC_LEN * usize::from(i % self.size);
        // SAFETY: `at + 16 <= 16 * size`, inside the block.
        unsafe { NonNull::new_unchecked(self.dma.vaddr.as_ptr().add(at)) }
    }

    fn flags_atomic(&self, i: u16) -> &AtomicU16 {
        // SAFETY: the flags are the last 2 bytes of a 16-byte aligned slot inside the block;
        // the memory is shared with the device, hence atomic access.
        unsafe { AtomicU16::from_ptr(self.slot(i).as_ptr().add(14).cast()) }
    }

    /// Writes the address, length and buffer ID of slot `i`, leaving its flags alone: the
    /// device does not look at a slot whose flags do not make it available.
    pub fn write_body(&mut self, i: u16, addr: u64, len: u32, id: u16) {
        let p = self.slot(i).as_ptr();
        // SAFETY: the first 14 bytes of a 16-byte aligned slot inside the block.
        unsafe {
            p.cast::<u64>().write_volatile(addr.to_le());
            p.add(8).cast::<u32>().write_volatile(len.to_le());
            p.add(12).cast::<u16>().write_volatile(id.to_le());
        }
    }

    /// Stores the flags of slot `i` with release: everything written before (this
    /// descriptor's body, the rest of its chain) is visible to a device that sees them.
    pub fn set_flags(&mut self, i: u16, flags: u16) {
        self.flags_atomic(i).store(flags.to_le(), Ordering::Release);
    }

    /// The flags of slot `i`, loaded with acquire: the id and length the device wrote
    /// before them are readable afterwards.
    pub fn flags(&self, i: u16) -> u16 {
        u16::from_le(self.flags_atomic(i).load(Ordering::Acquire))
    }

    /// Writes the whole of slot `i`, flags last (with release).
    pub fn write_desc(&mut self, i: u16, d: Desc) {
        self.write_body(i, d.addr, d.len, d.id);
        self.set_flags(i, d.flags);
    }

    /// Reads slot `i` (modulo the size).
    pub fn read_desc(&self, i: u16) -> Desc {
        // SAFETY: a 16-byte aligned slot inside the block.
        let raw = unsafe { self.slot(i).as_ptr().cast::<RawDesc>().read_volatile() };
        Desc::from_raw(raw)
    }

    fn event(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: `offset` is `driver_offset` or `device_offset`, 4-byte aligned (the
        // ring before them is a multiple of 16 bytes in a 16-aligned block) with 4 bytes
        // inside the block; shared with the device, hence atomic access.
        unsafe { AtomicU32::from_ptr(self.dma.vaddr.as_ptr().add(offset).cast()) }
    }

    /// Writes the driver event suppression structure (`off_wrap`, then `flags`, in
    /// memory order) in one store, so the device never sees the flags of one setting with
    /// the offset of another.
    pub fn set_driver_event(&mut self, flags: u16, off_wrap: u16) {
        let v = u32::from(off_wrap) | u32::from(flags) << 16;
        self.event(driver_offset(self.size))
            .store(v.to_le(), Ordering::Release);
    }

    /// The driver event suppression structure as last written: (flags, off_wrap).
    pub fn driver_event(&self) -> (u16, u16) {
        split_event(self.event(driver_offset(self.size)).load(Ordering::Relaxed))
    }

    /// The device event suppression structure, read in one load: (flags, off_wrap).
    pub fn device_event(&self) -> (u16, u16) {
        split_event(self.event(device_offset(self.size)).load(Ordering::Relaxed))
    }
}

/// (flags, off_wrap) of an event suppression structure loaded as one little-endian u32.
fn split_event(raw: u32) -> (u16, u16) {
    let v = u32::from_le(raw);
    ((v >> 16) as u16, v as u16)
}
