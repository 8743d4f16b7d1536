//! The driver side of a split virtqueue (virtio 1.x, 2.7), on a [`SplitRing`].
//!
//! Free descriptors are chained through their `next` fields; a chain's id is its head
//! descriptor. The driver fills the available ring ahead of the index it publishes, and
//! decides whether to notify as Linux's `virtqueue_kick_prepare` does.
//!
//! In order (VIRTIO_F_IN_ORDER, 2.7.9) the `next` fields never change from `i + 1`: chains
//! take consecutive descriptors in table order and the device returns them in that order,
//! so freeing a chain is a count, not a walk (DPDK's `vq_ring_free_inorder`). A used
//! entry may stand for a batch: it names the batch's last chain, sits where the batch's
//! first would, and the used index moves past the whole batch.

pub mod ring;

use alloc::vec::Vec;

use super::{writable_bytes, BadUsed, Batch, Buf, Error, Used, UsedBatch};
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
    /// Chains added and not yet popped.
    in_flight: u16,
    /// Length of the chain headed by each descriptor, 0 when not a head in flight.
    chain_len: Vec<u16>,
    /// Device-writable bytes of the chain headed by each descriptor.
    writable: Vec<u32>,
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
    in_order: bool,
    /// In order: the batch the last used entry returned, being handed out.
    batch: Batch,
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
            in_flight: 0,
            chain_len: alloc::vec![0; usize::from(size)],
            writable: alloc::vec![0; usize::from(size)],
            avail_idx: 0,
            published_idx: 0,
            kicked_idx: 0,
            last_used: 0,
            indirect: None,
            seen_used: 0,
            event_idx,
            in_order: false,
            batch: Batch::default(),
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

    /// Relies on the device using chains in order (VIRTIO_F_IN_ORDER). The free
    /// descriptors chain through `next` in table order, as [`SplitQueue::new`] left them,
    /// and stay so: they are taken and freed in that order.
    pub fn with_in_order(mut self) -> Self {
        self.in_order = true;
        self
    }

    pub fn in_order(&self) -> bool {
        self.in_order
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

    /// Chains handed to the device and not yet popped.
    pub fn in_flight(&self) -> u16 {
        self.in_flight
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
        self.in_flight += 1;
        self.chain_len[usize::from(head)] = count;
        self.writable[usize::from(head)] = writable_bytes(bufs);
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
        self.writable[usize::from(head)] = writable_bytes(bufs);
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
    /// as `Err`. In order, the chains of a batch come back one per call, oldest first.
    pub fn pop_used(&mut self) -> Option<Result<Used, BadUsed>> {
        if self.in_order {
            if self.batch.left == 0 {
                if let Err(bad) = self.start_batch()? {
                    return Some(Err(bad));
                }
            }
            return Some(Ok(self.hand_out_oldest()));
        }
        if !self.has_used() {
            return None;
        }
        let (id, len) = self.ring.used_entry(self.last_used);
        self.consume_used(1);
        Some(if self.free_chain(id) {
            Ok(Used { id: id as u16, len })
        } else {
            Err(BadUsed { id, len })
        })
    }

    /// Takes every chain the next used entry returned (the rest of the current batch
    /// first), and frees them.
    pub fn pop_used_batch(&mut self) -> Option<Result<UsedBatch, BadUsed>> {
        if !self.in_order {
            return self
                .pop_used()
                .map(|r| r.map(|last| UsedBatch { count: 1, last }));
        }
        if self.batch.left == 0 {
            if let Err(bad) = self.start_batch()? {
                return Some(Err(bad));
            }
        }
        let count = self.batch.left;
        let mut last = self.hand_out_oldest();
        while self.batch.left > 0 {
            last = self.hand_out_oldest();
        }
        Some(Ok(UsedBatch { count, last }))
    }

    /// Moves past `n` used-ring entries, and keeps interrupts off with EVENT_IDX.
    fn consume_used(&mut self, n: u16) {
        self.last_used = self.last_used.wrapping_add(n);
        if self.event_idx {
            self.suppress_interrupts();
        }
    }

    /// In order: reads the next used entry and makes the chains it returned the current
    /// batch: the oldest in flight up to the one it names, as many as the used index
    /// moved past. An entry naming no chain in flight, or a batch larger than the device
    /// published, frees nothing and comes back as `Err` (the entry is skipped).
    fn start_batch(&mut self) -> Option<Result<(), BadUsed>> {
        if !self.has_used() {
            return None;
        }
        let (id, len) = self.ring.used_entry(self.last_used);
        let published = self.seen_used.wrapping_sub(self.last_used);
        match self.batch_len(id) {
            Some(count) if count <= published => {
                self.consume_used(count);
                self.batch = Batch {
                    left: count,
                    last_len: len,
                };
                Some(Ok(()))
            }
            _ => {
                self.consume_used(1);
                Some(Err(BadUsed { id, len }))
            }
        }
    }

    /// In order: how many chains, oldest first, up to and including the one headed by
    /// `id`; `None` when no chain in flight has that head.
    fn batch_len(&self, id: u32) -> Option<u16> {
        let mask = self.size() - 1;
        let mut head = self.oldest();
        for k in 1..=self.in_flight {
            let n = self.chain_len[usize::from(head)];
            if n == 0 {
                return None;
            }
            if u32::from(head) == id {
                return Some(k);
            }
            head = head.wrapping_add(n) & mask;
        }
        None
    }

    /// In order: the head of the oldest chain in flight, where the free descriptors end.
    fn oldest(&self) -> u16 {
        self.free_head.wrapping_add(self.num_free) & (self.size() - 1)
    }

    /// In order: frees the oldest chain of the current batch and returns it.
    fn hand_out_oldest(&mut self) -> Used {
        let head = self.oldest();
        let h = usize::from(head);
        self.num_free += core::mem::take(&mut self.chain_len[h]);
        self.in_flight -= 1;
        Used {
            id: head,
            len: self.batch.next_len(self.writable[h]),
        }
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
        self.in_flight -= 1;
        true
    }
}

/// Whether a device that asked to be told at `event` must be told now that the index
/// moved from `old` to `new` (virtio's `vring_need_event`): whether `event` lies in
/// `[old, new)`, in wrapping 16-bit arithmetic.
pub const fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}
