//! The driver side of a packed virtqueue (virtio 1.2, 2.8, VIRTIO_F_RING_PACKED), on a
//! [`PackedRing`].
//!
//! The driver makes descriptors available in ring order: a chain takes consecutive slots,
//! each marked available by AVAIL/USED bits that follow the driver's wrap counter (it flips
//! each time the driver passes the ring's end). The device writes one used descriptor per
//! chain at its own used position, which moves by the chain's descriptor count; the
//! driver, reading used descriptors in the same order, moves by the count it remembers for
//! the buffer ID the descriptor names (2.8.6). Buffer IDs come from a free list; in order
//! (VIRTIO_F_IN_ORDER, 2.8.8) a chain's ID is its first slot, chains are freed in ring
//! order, and one used descriptor may return a batch of them: it names the batch's last
//! chain and the device's used position moves past the whole batch.
//!
//! Chains added between two [`PackedQueue::kick_prepare`] calls stay invisible to the
//! device as the split layout's do: the first one's head flags, which the device must see
//! before it looks further, are written only when the batch is published, after every
//! other descriptor of the batch (2.8.6: a chain's first descriptor is made available
//! last, after a write barrier).

pub mod ring;
#[cfg(test)]
mod tests;

use alloc::vec::Vec;

use super::{writable_bytes, BadUsed, Batch, Buf, Error, Used, UsedBatch};
use crate::hal::{Dma, Hal};
use crate::transport::QueueAddrs;
pub use ring::{
    avail_bits, is_used, layout, off_wrap, ring_bytes, Desc, PackedRing, DESC_F_AVAIL,
    DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_USED, DESC_F_WRITE, DESC_LEN, EVENT_F_DESC,
    EVENT_F_DISABLE, EVENT_F_ENABLE, EVENT_WRAP,
};

/// A place in the ring: a slot and the wrap counter of the lap it is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pos {
    slot: u16,
    wrap: bool,
}

impl Pos {
    /// The first slot of the first lap: wrap counters start at 1 (2.8.1).
    const START: Pos = Pos {
        slot: 0,
        wrap: true,
    };

    /// `n` slots further on in a ring of `size` (`n <= size`).
    fn advance(&mut self, n: u16, size: u16) {
        let next = u32::from(self.slot) + u32::from(n);
        if next >= u32::from(size) {
            self.slot = (next - u32::from(size)) as u16;
            self.wrap = !self.wrap;
        } else {
            self.slot = next as u16;
        }
    }

    /// The position as a number modulo twice the size: laps alternate wrap counters, so
    /// two laps tell every position apart.
    fn linear(self, size: u16) -> u32 {
        u32::from(self.slot) + if self.wrap { 0 } else { u32::from(size) }
    }
}

pub struct PackedQueue<'a, H: Hal> {
    hal: &'a H,
    index: u16,
    ring: PackedRing,
    /// Ring slots not holding a chain in flight.
    num_free: u16,
    /// Chains added and not yet popped.
    in_flight: u16,
    /// Where the driver puts its next descriptor.
    next_avail: Pos,
    /// Where the device writes its next used descriptor.
    next_used: Pos,
    /// Slots taken by the chain of each buffer ID, 0 when the ID is not in flight.
    chain_len: Vec<u16>,
    /// Device-writable bytes of the chain of each buffer ID.
    writable: Vec<u32>,
    /// Buffer IDs not in flight (not in order: in order an ID is its chain's first slot).
    free_ids: Vec<u16>,
    /// The head slot of the first chain added since the last publish, and the flags that
    /// make it available.
    unpublished: Option<(u16, u16)>,
    /// Slots made available since the last notification decision.
    added: u32,
    /// Indirect descriptor tables, one per buffer ID, each `indirect_max` long.
    indirect: Option<(Dma, u16)>,
    event_idx: bool,
    in_order: bool,
    /// In order: the batch the last used descriptor returned, being handed out.
    batch: Batch,
}

impl<'a, H: Hal> PackedQueue<'a, H> {
    /// Allocates and initialises queue `index` of `size` entries (1 to 32768, any
    /// number). With `event_idx` the device may ask for notifications at a given
    /// descriptor (VIRTIO_F_EVENT_IDX).
    pub fn new(hal: &'a H, index: u16, size: u16, event_idx: bool) -> Result<Self, Error> {
        let ring = PackedRing::new(hal, size)?;
        Ok(Self {
            hal,
            index,
            ring,
            num_free: size,
            in_flight: 0,
            next_avail: Pos::START,
            next_used: Pos::START,
            chain_len: alloc::vec![0; usize::from(size)],
            writable: alloc::vec![0; usize::from(size)],
            // Popped from the end: IDs go out from 0 up.
            free_ids: (0..size).rev().collect(),
            unpublished: None,
            added: 0,
            indirect: None,
            event_idx,
            in_order: false,
            batch: Batch::default(),
        })
    }

    /// Gives every buffer ID an indirect table of `max` entries (VIRTIO_F_INDIRECT_DESC),
    /// used by [`PackedQueue::add_indirect`].
    pub fn with_indirect(mut self, max: u16) -> Result<Self, Error> {
        let size = self.size();
        let len = usize::from(size) * usize::from(max) * DESC_LEN;
        let dma = self.hal.dma_alloc(len, 16).ok_or(Error::NoMemory(size))?;
        self.indirect = Some((dma, max));
        Ok(self)
    }

    /// Relies on the device using chains in order (VIRTIO_F_IN_ORDER): IDs are first
    /// slots, no free list.
    pub fn with_in_order(mut self) -> Self {
        self.in_order = true;
        self.free_ids = Vec::new();
        self
    }

    pub fn in_order(&self) -> bool {
        self.in_order
    }

    /// Longest chain [`PackedQueue::add_indirect`] takes (0 without indirect tables).
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

    /// A buffer ID for a chain starting at the next slot.
    fn take_id(&mut self) -> Option<u16> {
        if self.in_order {
            Some(self.next_avail.slot)
        } else {
            self.free_ids.pop()
        }
    }

    /// Adds a chain made of `bufs` in consecutive slots (not yet visible to the device:
    /// see [`PackedQueue::kick_prepare`]). Returns its buffer ID, or `None` when fewer than
    /// `bufs.len()` slots are free.
    pub fn add(&mut self, bufs: &[Buf]) -> Option<u16> {
        let count = u16::try_from(bufs.len()).ok()?;
        if count == 0 || count > self.num_free {
            return None;
        }
        let id = self.take_id()?;
        let head = self.next_avail;
        let mut head_flags = 0;
        for (k, b) in bufs.iter().enumerate() {
            let mut flags = avail_bits(self.next_avail.wrap);
            if b.device_writes {
                flags |= DESC_F_WRITE;
            }
            if k + 1 < bufs.len() {
                flags |= DESC_F_NEXT;
            }
            // The spec asks for the ID in the last descriptor only; every one carries it.
            let slot = self.next_avail.slot;
            self.ring.write_body(slot, b.paddr, b.len, id);
            if k == 0 {
                head_flags = flags;
            } else {
                // Past the head: the device reads these only once the head is available.
                self.ring.set_flags(slot, flags);
            }
            self.next_avail.advance(1, self.size());
        }
        self.made_available(id, head.slot, head_flags, count, writable_bytes(bufs));
        Some(id)
    }

    /// Adds a chain through the indirect table of its buffer ID: one ring slot whatever
    /// its length. `None` when no slot is free, there are no indirect tables, or the chain
    /// is longer than a table.
    pub fn add_indirect(&mut self, bufs: &[Buf]) -> Option<u16> {
        let (table, max) = self.indirect?;
        let n = u16::try_from(bufs.len()).ok()?;
        if n == 0 || n > max || self.num_free == 0 {
            return None;
        }
        let id = self.take_id()?;
        let offset = usize::from(id) * usize::from(max) * DESC_LEN;
        for (k, b) in bufs.iter().enumerate() {
            // In a table WRITE is the only flag a driver may set and the ID is reserved
            // (2.8.7): entries simply follow each other.
            let d = Desc {
                addr: b.paddr,
                len: b.len,
                id: 0,
                flags: if b.device_writes { DESC_F_WRITE } else { 0 },
            };
            // SAFETY: entry k < max of table `id` lies within the `size * max * 16` bytes
            // of the indirect block (16-byte aligned), which the device reads only after
            // the ring descriptor pointing at it is made available.
            unsafe { d.write_to(table.vaddr.as_ptr().add(offset + DESC_LEN * k)) };
        }
        let head = self.next_avail.slot;
        let len = u32::from(n) * DESC_LEN as u32;
        self.ring
            .write_body(head, table.paddr + offset as u64, len, id);
        let flags = avail_bits(self.next_avail.wrap) | DESC_F_INDIRECT;
        self.next_avail.advance(1, self.size());
        self.made_available(id, head, flags, 1, writable_bytes(bufs));
        Some(id)
    }

    /// Books a chain of `count` slots from `head` as buffer `id`, its descriptors written
    /// but for the head's flags: written now when an earlier unpublished chain keeps the
    /// device from reaching it, at the next publish otherwise.
    fn made_available(&mut self, id: u16, head: u16, flags: u16, count: u16, writable: u32) {
        self.chain_len[usize::from(id)] = count;
        self.writable[usize::from(id)] = writable;
        self.num_free -= count;
        self.in_flight += 1;
        self.added = self.added.saturating_add(u32::from(count));
        if self.unpublished.is_none() {
            self.unpublished = Some((head, flags));
        } else {
            self.ring.set_flags(head, flags);
        }
    }

    /// Makes every chain added so far visible to the device.
    fn publish(&mut self) {
        if let Some((head, flags)) = self.unpublished.take() {
            // Release: every descriptor added since the last publish is written before the
            // one store that lets the device reach them.
            self.ring.set_flags(head, flags);
        }
    }

    /// Makes every chain added so far visible to the device, and says whether the device
    /// asked to be notified of them (2.8.10: its event suppression structure).
    pub fn kick_prepare(&mut self) -> bool {
        self.publish();
        // The flag stores must be visible before the device's suppression is read.
        self.hal.mb();
        let added = core::mem::take(&mut self.added);
        if added == 0 {
            return false;
        }
        let (flags, off_wrap) = self.ring.device_event();
        match flags {
            EVENT_F_DISABLE => false,
            EVENT_F_DESC if self.event_idx => self.event_crossed(off_wrap, added),
            // ENABLE, DESC without EVENT_IDX and reserved values: notify rather than risk
            // a device waiting forever.
            _ => true,
        }
    }

    /// Whether the descriptor `off_wrap` names is among the last `added` made available:
    /// the packed ring's `vring_need_event`, on positions counted over two laps so that
    /// the wrap counter tells laps apart.
    fn event_crossed(&self, off_wrap: u16, added: u32) -> bool {
        let size = self.size();
        let two_laps = 2 * u32::from(size);
        let off = off_wrap & !EVENT_WRAP;
        if added >= two_laps || off >= size {
            // Every position was passed, or the event names no slot.
            return true;
        }
        let event = Pos {
            slot: off,
            wrap: off_wrap & EVENT_WRAP != 0,
        }
        .linear(size);
        let new = self.next_avail.linear(size);
        // The event lies in [new - added, new): `new - event - 1 < added`, modulo two laps.
        (new + 2 * two_laps - event - 1) % two_laps < added
    }

    /// Asks the device not to notify used buffers: a poll-mode driver looks itself.
    pub fn suppress_interrupts(&mut self) {
        self.ring.set_driver_event(EVENT_F_DISABLE, 0);
    }

    /// Asks the device to notify the next used buffer: with EVENT_IDX at the descriptor
    /// it writes next (DESC), otherwise any (ENABLE).
    pub fn enable_interrupts(&mut self) {
        if self.event_idx {
            let at = off_wrap(self.next_used.slot, self.next_used.wrap);
            self.ring.set_driver_event(EVENT_F_DESC, at);
        } else {
            self.ring.set_driver_event(EVENT_F_ENABLE, 0);
        }
    }

    /// The used descriptor at the device's used position, if it wrote one there in this
    /// lap.
    fn used_desc(&self) -> Option<Desc> {
        let at = self.next_used;
        if !is_used(self.ring.flags(at.slot), at.wrap) {
            return None;
        }
        // The acquire load of the flags orders this read after the device's writes.
        Some(self.ring.read_desc(at.slot))
    }

    /// Frees buffer `id`'s chain of `count` slots.
    fn release(&mut self, id: u16, count: u16) {
        self.chain_len[usize::from(id)] = 0;
        self.num_free += count;
        self.in_flight -= 1;
        if !self.in_order {
            self.free_ids.push(id);
        }
    }

    /// Takes the next used descriptor, if the device has written one, and frees its
    /// chain. A descriptor that names no buffer in flight (a device bug) frees nothing and
    /// comes back as `Err`; the driver moves one slot past it. In order, the chains of a
    /// batch come back one per call, oldest first.
    pub fn pop_used(&mut self) -> Option<Result<Used, BadUsed>> {
        if self.in_order {
            if self.batch.left == 0 {
                if let Err(bad) = self.start_batch()? {
                    return Some(Err(bad));
                }
            }
            return Some(Ok(self.hand_out_oldest()));
        }
        let d = self.used_desc()?;
        let count = self.chain_len.get(usize::from(d.id)).copied().unwrap_or(0);
        if count == 0 {
            self.next_used.advance(1, self.size());
            return Some(Err(bad(d)));
        }
        let len = self.written(d);
        self.next_used.advance(count, self.size());
        self.release(d.id, count);
        Some(Ok(Used { id: d.id, len }))
    }

    /// Takes every chain the next used descriptor returned (the rest of the current batch
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

    /// In order: reads the next used descriptor and makes the chains it returned the
    /// current batch: the oldest in flight up to the one it names. The device's used
    /// position moves past all their slots. A descriptor naming no chain in flight frees
    /// nothing and comes back as `Err`.
    fn start_batch(&mut self) -> Option<Result<(), BadUsed>> {
        let d = self.used_desc()?;
        match self.batch_len(d.id) {
            Some((chains, slots)) => {
                self.next_used.advance(slots, self.size());
                self.batch = Batch {
                    left: chains,
                    last_len: self.written(d),
                };
                Some(Ok(()))
            }
            None => {
                self.next_used.advance(1, self.size());
                Some(Err(bad(d)))
            }
        }
    }

    /// In order: how many chains, oldest first, up to and including buffer `id`, and how
    /// many slots they take; `None` when no chain in flight has that ID.
    fn batch_len(&self, id: u16) -> Option<(u16, u16)> {
        let mut head = self.oldest();
        let mut slots = 0u16;
        for k in 1..=self.in_flight {
            let n = self.chain_len[usize::from(head.slot)];
            if n == 0 {
                return None;
            }
            slots += n;
            if head.slot == id {
                return Some((k, slots));
            }
            head.advance(n, self.size());
        }
        None
    }

    /// In order: the first slot of the oldest chain in flight, where the free slots end.
    fn oldest(&self) -> Pos {
        let mut p = self.next_avail;
        p.advance(self.num_free, self.size());
        p
    }

    /// The bytes used descriptor `d` says the device wrote into the chain it names (a
    /// chain in flight): its length when the device set WRITE in it or when the chain has
    /// device-writable buffers, and 0 (reserved) for a descriptor without WRITE returning
    /// a chain the device could only read.
    ///
    /// 2.8.3 has a device mark with WRITE a used descriptor whose buffer it wrote, and
    /// 2.8.4 calls the length reserved without it; but QEMU's device (`hw/virtio/virtio.c`,
    /// `virtqueue_packed_fill_desc`) writes used descriptors with the AVAIL/USED bits
    /// only, never WRITE, and the drivers it was written with take the length as it is
    /// (Linux's `virtqueue_get_buf_ctx_packed`, DPDK's `virtqueue_dequeue_burst_rx_packed`).
    /// Going by WRITE alone took every frame QEMU received for an empty one and dropped it.
    fn written(&self, d: Desc) -> u32 {
        let writable = self.writable.get(usize::from(d.id)).copied().unwrap_or(0);
        if d.flags & DESC_F_WRITE != 0 || writable > 0 {
            d.len
        } else {
            0
        }
    }

    /// In order: frees the oldest chain of the current batch and returns it.
    fn hand_out_oldest(&mut self) -> Used {
        let id = self.oldest().slot;
        let count = self.chain_len[usize::from(id)];
        self.release(id, count);
        Used {
            id,
            len: self.batch.next_len(self.writable[usize::from(id)]),
        }
    }
}

/// A used descriptor naming no chain in flight, as the device wrote it.
fn bad(d: Desc) -> BadUsed {
    BadUsed {
        id: u32::from(d.id),
        len: d.len,
    }
}
