//! The driver side of a split virtqueue (virtio 1.x, 2.7), on a [`SplitRing`].
//!
//! Free descriptors are chained through their `next` fields; a chain's id is its head
//! descriptor. The driver fills the available ring ahead of the index it publishes, and
//! decides whether to notify as Linux's `virtqueue_kick_prepare` does.

pub mod ring;

use alloc::vec::Vec;

use super::{BadUsed, Buf, Error, Used};
use crate::hal::{Dma, Hal};
use crate::transport::QueueAddrs;
pub use ring::{
    layout, ring_bytes, used_offset, Desc, SplitRing, AVAIL_F_NO_INTERRUPT, DESC_F_INDIRECT,
    DESC_F_NEXT, DESC_F_WRITE, DESC_LEN, USED_F_NO_NOTIFY,
};

pub struct SplitQueue<'a, H: Hal> {
    hal: &'a H,
    index: u16,
    ring: SplitRing,
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

impl<'a, H: Hal> SplitQueue<'a, H> {
    /// Allocates and initialises queue `index` of `size` entries. With `event_idx` the
    /// `used_event`/`avail_event` fields suppress notifications (VIRTIO_F_EVENT_IDX);
    /// otherwise the ring flags do.
    pub fn new(hal: &'a H, index: u16, size: u16, event_idx: bool) -> Result<Self, Error> {
        let ring = SplitRing::new(hal, size)?;
        let mut q = Self {
            hal,
            index,
            ring,
            free_head: 0,
            num_free: size,
            chain_len: alloc::vec![0; usize::from(size)],
            avail_idx: 0,
            published_idx: 0,
            kicked_idx: 0,
            last_used: 0,
            indirect: None,
            seen_used: 0,
            event_idx,
        };
        for i in 0..size {
            q.ring.write_desc(
                i,
                Desc {
                    next: (i + 1) % size,
                    ..Desc::default()
                },
            );
        }
        Ok(q)
    }

    /// Gives every ring descriptor an indirect table of `max` entries
    /// (VIRTIO_F_INDIRECT_DESC), used by [`SplitQueue::add_indirect`].
    pub fn with_indirect(mut self, max: u16) -> Result<Self, Error> {
        let size = self.size();
        let len = usize::from(size) * usize::from(max) * DESC_LEN;
        let dma = self.hal.dma_alloc(len, 16).ok_or(Error::NoMemory(size))?;
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
        self.ring.size()
    }

    pub fn addrs(&self) -> QueueAddrs {
        self.ring.addrs()
    }

    pub fn num_free(&self) -> u16 {
        self.num_free
    }

    /// Chains handed to the device and not yet returned.
    pub fn in_flight(&self) -> u16 {
        self.avail_idx.wrapping_sub(self.last_used)
    }

    /// Adds a chain made of `bufs` to the available ring (not yet visible to the device:
    /// see [`SplitQueue::kick_prepare`]). Returns its id (the head descriptor), or `None` when
    /// the queue has fewer than `bufs.len()` free descriptors.
    pub fn add(&mut self, bufs: &[Buf]) -> Option<u16> {
        let count = u16::try_from(bufs.len()).ok()?;
        if count == 0 || count > self.num_free {
            return None;
        }
        let head = self.free_head;
        let mut i = head;
        for (k, b) in bufs.iter().enumerate() {
            let next = self.ring.read_desc(i).next;
            let last = k + 1 == bufs.len();
            let mut flags = if b.device_writes { DESC_F_WRITE } else { 0 };
            if !last {
                flags |= DESC_F_NEXT;
            }
            self.ring.write_desc(
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
        self.ring.set_avail_entry(self.avail_idx, head);
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
        let offset = usize::from(head) * usize::from(max) * DESC_LEN;
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
            // of the indirect block (16-byte aligned), which the device reads only after
            // `publish`.
            unsafe { d.write_to(table.vaddr.as_ptr().add(offset + DESC_LEN * k)) };
        }
        self.add(&[Buf {
            paddr: base,
            len: u32::from(n) * DESC_LEN as u32,
            device_writes: false,
        }])?;
        // `add` wrote a plain descriptor: mark it indirect.
        let mut d = self.ring.read_desc(head);
        d.flags = DESC_F_INDIRECT;
        self.ring.write_desc(head, d);
        Some(head)
    }

    /// Makes every chain added so far visible to the device.
    fn publish(&mut self) {
        if self.published_idx != self.avail_idx {
            // Release: the descriptors and ring entries are written before the index.
            self.ring.set_avail_idx(self.avail_idx);
            self.published_idx = self.avail_idx;
        }
    }

    /// Whether the device asked to be notified of what was published since the last call
    /// (Linux's `virtqueue_kick_prepare`).
    fn should_notify(&mut self) -> bool {
        // The index store must be visible before the device's suppression field is read.
        self.hal.mb();
        let old = self.kicked_idx;
        let new = self.published_idx;
        self.kicked_idx = new;
        if old == new {
            return false;
        }
        if self.event_idx {
            need_event(self.ring.avail_event(), new, old)
        } else {
            self.ring.used_flags() & USED_F_NO_NOTIFY == 0
        }
    }

    /// Makes every chain added so far visible to the device, and says whether the device
    /// asked to be notified of them.
    pub fn kick_prepare(&mut self) -> bool {
        self.publish();
        self.should_notify()
    }

    /// Asks the device not to interrupt: a poll-mode driver reads the used ring itself.
    pub fn suppress_interrupts(&mut self) {
        if self.event_idx {
            // The device interrupts when an entry it publishes is at `used_event`. Half the
            // index space ahead of what was consumed is never among them: the device is at
            // most a ring (<= 32768) ahead of the driver. Behind would not do: the device
            // reads `used_event` after publishing, and by then the driver may already have
            // consumed into the batch. Refreshed on every pop, so it never comes round.
            self.ring
                .set_used_event(self.last_used.wrapping_add(0x8000));
        } else {
            self.ring.set_avail_flags(AVAIL_F_NO_INTERRUPT);
        }
    }

    /// Whether the device has returned a chain that has not been popped yet.
    fn has_used(&mut self) -> bool {
        if self.seen_used == self.last_used {
            self.seen_used = self.ring.used_idx();
        }
        self.seen_used != self.last_used
    }

    /// Takes the next used-ring entry, if the device has written one, and frees its chain.
    /// An entry that names no chain in flight (a device bug) frees nothing and comes back
    /// as `Err`.
    pub fn pop_used(&mut self) -> Option<Result<Used, BadUsed>> {
        if !self.has_used() {
            return None;
        }
        let (id, len) = self.ring.used_entry(self.last_used);
        self.last_used = self.last_used.wrapping_add(1);
        if self.event_idx {
            self.suppress_interrupts();
        }
        Some(if self.free_chain(id) {
            Ok(Used { id: id as u16, len })
        } else {
            Err(BadUsed { id, len })
        })
    }

    /// Returns the chain headed by `head` to the free list. `false` when `head` is not the
    /// head of a chain in flight: nothing is freed then.
    fn free_chain(&mut self, head: u32) -> bool {
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
            tail = self.ring.read_desc(tail).next & (self.size() - 1);
        }
        let mut d = self.ring.read_desc(tail);
        d.next = self.free_head;
        self.ring.write_desc(tail, d);
        self.free_head = head;
        self.num_free += count;
        true
    }
}

/// Whether a device that asked to be told at `event` must be told now that the index
/// moved from `old` to `new` (virtio's `vring_need_event`): whether `event` lies in
/// `[old, new)`, in wrapping 16-bit arithmetic.
pub const fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}
