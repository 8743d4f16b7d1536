//! The driver side of a split virtqueue (virtio 1.x, 2.7).
//!
//! The ring lives in one DMA block laid out as the legacy interface requires (descriptor
//! table, available ring, then the used ring on the next 4 KiB boundary), so one layout
//! serves every transport. Free descriptors are chained through their `next` fields.
//! Indexes the device publishes are read with acquire loads, indexes the driver publishes
//! are stored with release stores; the device is another thread or another CPU.

use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU16, Ordering};

use crate::hal::{Dma, Hal};
use crate::transport::QueueAddrs;

pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
pub const DESC_F_INDIRECT: u16 = 4;
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
pub const USED_F_NO_NOTIFY: u16 = 1;

/// Largest queue size the virtio spec allows for split rings.
pub const MAX_SIZE: u16 = 32768;

const PAGE: usize = 4096;

#[repr(C)]
#[derive(Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("queue size {0} is not a power of two between 1 and 32768")]
    BadSize(u16),
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

/// One used-ring entry as the device wrote it. `id` is not validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    pub id: u32,
    pub len: u32,
}

/// The size in bytes of the DMA block a queue of `size` entries needs.
pub const fn ring_bytes(size: u16) -> usize {
    let n = size as usize;
    align_up(16 * n + 6 + 2 * n, PAGE) + align_up(6 + 8 * n, PAGE)
}

const fn align_up(x: usize, a: usize) -> usize {
    (x + a - 1) & !(a - 1)
}

pub struct SplitQueue {
    index: u16,
    size: u16,
    desc: NonNull<Desc>,
    avail: NonNull<u8>,
    used: NonNull<u8>,
    addrs: QueueAddrs,
    free_head: u16,
    num_free: u16,
    /// Length of the chain headed by each descriptor, 0 when not a head in flight.
    chain_len: Vec<u16>,
    /// The avail index the driver has filled up to (published or not).
    avail_idx: u16,
    /// The avail index the device was last told about.
    published_idx: u16,
    /// The avail index at the last notification decision.
    kicked_idx: u16,
    last_used: u16,
    /// Indirect descriptor tables, one per ring descriptor, each `indirect_max` long.
    indirect: Option<(Dma, u16)>,
    /// The device's used index as last read: entries up to it can be popped without
    /// another load of the shared index.
    seen_used: u16,
    event_idx: bool,
}

impl SplitQueue {
    /// Allocates and initialises a queue of `size` entries. With `event_idx` the
    /// `used_event`/`avail_event` fields suppress notifications (VIRTIO_F_EVENT_IDX);
    /// otherwise the ring flags do.
    pub fn new<H: Hal>(hal: &H, index: u16, size: u16, event_idx: bool) -> Result<Self, Error> {
        if size == 0 || size > MAX_SIZE || !size.is_power_of_two() {
            return Err(Error::BadSize(size));
        }
        let n = usize::from(size);
        let dma = hal
            .dma_alloc(ring_bytes(size), PAGE)
            .ok_or(Error::NoMemory(size))?;
        let used_off = align_up(16 * n + 6 + 2 * n, PAGE);
        let base = dma.vaddr.as_ptr();
        // SAFETY: the block is `ring_bytes(size)` long and ours; the rings' flags, indexes
        // and event fields must start at zero.
        unsafe { base.write_bytes(0, ring_bytes(size)) };
        // SAFETY: `ring_bytes` covers the descriptor table at 0, the avail ring at 16 * n and
        // the used ring at `used_off`; the block is ours for the driver's lifetime (Hal
        // contract), so these pointers stay in bounds and valid.
        let (desc, avail, used) = unsafe {
            (
                NonNull::new_unchecked(base.cast::<Desc>()),
                NonNull::new_unchecked(base.add(16 * n)),
                NonNull::new_unchecked(base.add(used_off)),
            )
        };
        let addrs = QueueAddrs {
            desc: dma.paddr,
            avail: dma.paddr + 16 * n as u64,
            used: dma.paddr + used_off as u64,
        };
        let mut q = Self {
            index,
            size,
            desc,
            avail,
            used,
            addrs,
            free_head: 0,
            num_free: size,
            chain_len: alloc::vec![0; n],
            avail_idx: 0,
            published_idx: 0,
            kicked_idx: 0,
            last_used: 0,
            indirect: None,
            seen_used: 0,
            event_idx,
        };
        for i in 0..size {
            q.write_desc(
                i,
                Desc {
                    addr: 0,
                    len: 0,
                    flags: 0,
                    next: (i + 1) % size,
                },
            );
        }
        Ok(q)
    }

    /// Gives every ring descriptor an indirect table of `max` entries
    /// (VIRTIO_F_INDIRECT_DESC), used by [`SplitQueue::add_indirect`].
    pub fn with_indirect<H: Hal>(mut self, hal: &H, max: u16) -> Result<Self, Error> {
        let len = usize::from(self.size) * usize::from(max) * 16;
        let dma = hal.dma_alloc(len, 16).ok_or(Error::NoMemory(self.size))?;
        self.indirect = Some((dma, max));
        Ok(self)
    }

    /// Longest chain [`SplitQueue::add_indirect`] takes (0 without indirect tables).
    pub fn indirect_max(&self) -> u16 {
        self.indirect.map_or(0, |(_, max)| max)
    }

    pub fn index(&self) -> u16 {
        self.index
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    pub fn addrs(&self) -> QueueAddrs {
        self.addrs
    }

    pub fn num_free(&self) -> u16 {
        self.num_free
    }

    /// Chains handed to the device and not yet returned.
    pub fn in_flight(&self) -> u16 {
        self.avail_idx.wrapping_sub(self.last_used)
    }

    fn write_desc(&mut self, i: u16, d: Desc) {
        debug_assert!(i < self.size);
        // SAFETY: `i < size`, so the entry is inside the descriptor table.
        unsafe { self.desc.as_ptr().add(usize::from(i)).write_volatile(d) }
    }

    fn read_desc(&self, i: u16) -> Desc {
        // SAFETY: callers pass `i < size`, inside the descriptor table.
        unsafe { self.desc.as_ptr().add(usize::from(i)).read_volatile() }
    }

    fn avail_u16(&self, offset: usize) -> &AtomicU16 {
        // SAFETY: offsets used are within the 6 + 2 * size bytes of the avail ring and 2-byte
        // aligned; the memory is shared with the device, hence atomic access.
        unsafe { AtomicU16::from_ptr(self.avail.as_ptr().add(offset).cast()) }
    }

    fn used_u16(&self, offset: usize) -> &AtomicU16 {
        // SAFETY: as `avail_u16`, within the 6 + 8 * size bytes of the used ring.
        unsafe { AtomicU16::from_ptr(self.used.as_ptr().add(offset).cast()) }
    }

    /// Adds a chain made of `bufs` to the available ring (not yet visible to the device:
    /// see [`SplitQueue::publish`]). Returns the head descriptor, or `None` when the queue
    /// has fewer than `bufs.len()` free descriptors.
    pub fn add(&mut self, bufs: &[Buf]) -> Option<u16> {
        let count = u16::try_from(bufs.len()).ok()?;
        if count == 0 || count > self.num_free {
            return None;
        }
        let head = self.free_head;
        let mut i = head;
        for (k, b) in bufs.iter().enumerate() {
            let next = self.read_desc(i).next;
            let last = k + 1 == bufs.len();
            let mut flags = if b.device_writes { DESC_F_WRITE } else { 0 };
            if !last {
                flags |= DESC_F_NEXT;
            }
            self.write_desc(
                i,
                Desc {
                    addr: b.paddr,
                    len: b.len,
                    flags,
                    next,
                },
            );
            if !last {
                i = next;
            } else {
                self.free_head = next;
            }
        }
        self.num_free -= count;
        self.chain_len[usize::from(head)] = count;
        let slot = 4 + 2 * usize::from(self.avail_idx & (self.size - 1));
        self.avail_u16(slot).store(head, Ordering::Relaxed);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        Some(head)
    }

    /// Adds a chain through the indirect table of the next free descriptor: it takes one
    /// ring descriptor whatever its length. `None` when there is no free descriptor, no
    /// indirect table, or the chain is longer than the table.
    pub fn add_indirect(&mut self, bufs: &[Buf]) -> Option<u16> {
        let (table, max) = self.indirect?;
        let n = u16::try_from(bufs.len()).ok()?;
        if n == 0 || n > max || self.num_free == 0 {
            return None;
        }
        let head = self.free_head;
        let offset = usize::from(head) * usize::from(max) * 16;
        let base = table.paddr + offset as u64;
        for (k, b) in bufs.iter().enumerate() {
            let last = k + 1 == bufs.len();
            let mut flags = if b.device_writes { DESC_F_WRITE } else { 0 };
            if !last {
                flags |= DESC_F_NEXT;
            }
            let d = Desc {
                addr: b.paddr,
                len: b.len,
                flags,
                next: if last { 0 } else { k as u16 + 1 },
            };
            // SAFETY: entry k < max of table `head` lies within the `size * max * 16` bytes
            // of the indirect block, which the device reads only after `publish`.
            unsafe {
                table
                    .vaddr
                    .as_ptr()
                    .add(offset + 16 * k)
                    .cast::<Desc>()
                    .write_volatile(d)
            };
        }
        self.add(&[Buf {
            paddr: base,
            len: u32::from(n) * 16,
            device_writes: false,
        }])?;
        // `add` wrote a plain descriptor: mark it indirect.
        let mut d = self.read_desc(head);
        d.flags = DESC_F_INDIRECT;
        self.write_desc(head, d);
        Some(head)
    }

    /// Makes every chain added so far visible to the device.
    pub fn publish(&mut self) {
        if self.published_idx != self.avail_idx {
            // Release: the descriptors and ring entries are written before the index.
            self.avail_u16(2).store(self.avail_idx, Ordering::Release);
            self.published_idx = self.avail_idx;
        }
    }

    /// Whether the device asked to be notified of what was published since the last call
    /// (Linux's `virtqueue_kick_prepare`).
    pub fn should_notify<H: Hal>(&mut self, hal: &H) -> bool {
        // The index store must be visible before the device's suppression field is read.
        hal.mb();
        let old = self.kicked_idx;
        let new = self.published_idx;
        self.kicked_idx = new;
        if old == new {
            return false;
        }
        if self.event_idx {
            let event = self
                .used_u16(4 + 8 * usize::from(self.size))
                .load(Ordering::Relaxed);
            new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            self.used_u16(0).load(Ordering::Relaxed) & USED_F_NO_NOTIFY == 0
        }
    }

    /// Asks the device not to interrupt: a poll-mode driver reads the used ring itself.
    pub fn suppress_interrupts(&mut self) {
        if self.event_idx {
            // The device interrupts when an entry it publishes is at `used_event`. Half the
            // index space ahead of what was consumed is never among them: the device is at
            // most a ring (<= 32768) ahead of the driver. Behind would not do: the device
            // reads `used_event` after publishing, and by then the driver may already have
            // consumed into the batch. Refreshed on every pop, so it never comes round.
            let offset = 4 + 2 * usize::from(self.size);
            self.avail_u16(offset)
                .store(self.last_used.wrapping_add(0x8000), Ordering::Relaxed);
        } else {
            self.avail_u16(0)
                .store(AVAIL_F_NO_INTERRUPT, Ordering::Relaxed);
        }
    }

    /// Whether the device has returned a chain that has not been popped yet.
    pub fn has_used(&mut self) -> bool {
        if self.seen_used == self.last_used {
            self.seen_used = self.used_u16(2).load(Ordering::Acquire);
        }
        self.seen_used != self.last_used
    }

    /// Takes the next used-ring entry, if the device has written one.
    pub fn pop_used(&mut self) -> Option<Used> {
        if !self.has_used() {
            return None;
        }
        let off = 4 + 8 * usize::from(self.last_used & (self.size - 1));
        // SAFETY: `off + 8` is within the used ring; the acquire load of the used index in `has_used` orders
        // this read after the device's write of the entry.
        let (id, len) = unsafe {
            let p = self.used.as_ptr().add(off).cast::<u32>();
            (p.read_volatile(), p.add(1).read_volatile())
        };
        self.last_used = self.last_used.wrapping_add(1);
        if self.event_idx {
            self.suppress_interrupts();
        }
        Some(Used {
            id: u32::from_le(id),
            len: u32::from_le(len),
        })
    }

    /// Returns the chain headed by `head` to the free list. `false` when `head` is not the
    /// head of a chain in flight (a device bug): nothing is freed then.
    pub fn free_chain(&mut self, head: u32) -> bool {
        let Some(&count) = usize::try_from(head)
            .ok()
            .and_then(|h| self.chain_len.get(h))
        else {
            return false;
        };
        if count == 0 {
            return false;
        }
        let head = head as u16;
        self.chain_len[usize::from(head)] = 0;
        let mut tail = head;
        for _ in 1..count {
            tail = self.read_desc(tail).next & (self.size - 1);
        }
        let mut d = self.read_desc(tail);
        d.next = self.free_head;
        self.write_desc(tail, d);
        self.free_head = head;
        self.num_free += count;
        true
    }
}
