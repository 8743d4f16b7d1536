//! Device side of the used ring, written in batches.
//!
//! `virtio-queue` publishes the used index after every entry. A receive path that spreads a
//! frame over several buffers (VIRTIO_NET_F_MRG_RXBUF) must publish them together: a driver
//! reads `num_buffers` from the first and expects the rest to be there (Linux's
//! `receive_mergeable`). Publishing once per batch also keeps the index's cache line from
//! bouncing between device and driver on every frame. The available side stays with
//! `virtio-queue`.

use std::num::Wrapping;
use std::sync::atomic::Ordering;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use crate::virtio::Memory;

const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;

#[derive(Debug, thiserror::Error)]
#[error("used ring at {addr:#x}: {source}")]
pub struct Error {
    addr: u64,
    #[source]
    source: vm_memory::GuestMemoryError,
}

/// Used entries written but not yet published.
#[derive(Debug)]
pub struct UsedBatch {
    start: u16,
    count: u16,
}

impl UsedBatch {
    /// Starts a batch at `q`'s next used slot.
    pub fn new(q: &Queue) -> Self {
        Self {
            start: q.next_used(),
            count: 0,
        }
    }

    /// Entries written so far.
    pub fn len(&self) -> u16 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes one used entry; the driver cannot see it until [`UsedBatch::publish`].
    pub fn push(&mut self, q: &Queue, mem: &Memory, head: u16, len: u32) -> Result<(), Error> {
        let slot = self.start.wrapping_add(self.count) % q.size();
        let addr = q.used_ring() + 4 + 8 * u64::from(slot);
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        mem.write_slice(&elem, GuestAddress(addr))
            .map_err(|source| Error { addr, source })?;
        self.count += 1;
        Ok(())
    }

    /// Forgets the last `n` entries written (a frame that did not fit after all).
    pub fn rollback(&mut self, n: u16) {
        self.count -= n.min(self.count);
    }

    /// Makes the entries visible with one release store of the used index. Returns whether
    /// the driver asked to be interrupted for them (used_event, or the no-interrupt flag
    /// without VIRTIO_F_EVENT_IDX).
    pub fn publish(self, q: &mut Queue, mem: &Memory) -> Result<bool, Error> {
        if self.count == 0 {
            return Ok(false);
        }
        let old = self.start;
        let new = old.wrapping_add(self.count);
        let idx_addr = q.used_ring() + 2;
        mem.store(new.to_le(), GuestAddress(idx_addr), Ordering::Release)
            .map_err(|source| Error {
                addr: idx_addr,
                source,
            })?;
        q.set_next_used(new);
        // The index store must be visible before the driver's suppression field is read.
        std::sync::atomic::fence(Ordering::SeqCst);
        let avail = q.avail_ring();
        if q.event_idx_enabled() {
            let at = avail + 4 + 2 * u64::from(q.size());
            let event: u16 = mem
                .load(GuestAddress(at), Ordering::Relaxed)
                .map(u16::from_le)
                .map_err(|source| Error { addr: at, source })?;
            // vring_need_event(): is `event` among the entries just published?
            let (e, n, o) = (Wrapping(event), Wrapping(new), Wrapping(old));
            Ok(n - e - Wrapping(1) < n - o)
        } else {
            let flags: u16 = mem
                .load(GuestAddress(avail), Ordering::Relaxed)
                .map(u16::from_le)
                .map_err(|source| Error {
                    addr: avail,
                    source,
                })?;
            Ok(flags & VRING_AVAIL_F_NO_INTERRUPT == 0)
        }
    }
}
