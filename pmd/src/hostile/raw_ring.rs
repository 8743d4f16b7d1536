//! One split ring written by hand: descriptors, available slots and indexes exactly as an
//! abuse wants them, through the split layout's own accessors ([`SplitRing`]). Rings are
//! in the legacy layout, so either interface takes them.

use core::sync::atomic::{fence, Ordering};

use crate::hal::Hal;
use crate::transport::QueueAddrs;
use crate::virtqueue::split::{Desc, SplitRing};
pub(super) use crate::virtqueue::split::{DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};

pub(super) struct Ring {
    ring: SplitRing,
    /// The avail index as far as this driver filled it.
    pub(super) next_avail: u16,
    /// Used entries already taken.
    next_used: u16,
}

impl Ring {
    /// A zeroed ring of `size` entries (a power of two); `None` when DMA memory is short.
    pub(super) fn alloc<H: Hal>(hal: &H, size: u16) -> Option<Self> {
        let ring = SplitRing::new(hal, size).ok()?;
        Some(Self {
            ring,
            next_avail: 0,
            next_used: 0,
        })
    }

    pub(super) fn size(&self) -> u16 {
        self.ring.size()
    }

    /// Zeroes the ring and starts its indexes again, for a device set up afresh.
    pub(super) fn clear(&mut self) {
        self.ring.clear();
        self.next_avail = 0;
        self.next_used = 0;
    }

    pub(super) fn addrs(&self) -> QueueAddrs {
        self.ring.addrs()
    }

    /// Writes descriptor `i` (modulo the size).
    pub(super) fn desc(&mut self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        self.ring.write_desc(
            i,
            Desc {
                addr,
                len,
                flags,
                next,
            },
        );
    }

    /// Puts `head` in the next avail slot without telling the device.
    pub(super) fn stage(&mut self, head: u16) {
        self.ring.set_avail_entry(self.next_avail, head);
        self.next_avail = self.next_avail.wrapping_add(1);
    }

    /// Publishes `idx` as the avail index.
    pub(super) fn set_avail_idx(&mut self, idx: u16) {
        // Descriptors and slots are written before the index.
        fence(Ordering::Release);
        self.ring.set_avail_idx(idx);
    }

    /// Stages `head` and publishes it.
    pub(super) fn offer(&mut self, head: u16) {
        self.stage(head);
        self.set_avail_idx(self.next_avail);
    }

    /// Takes the next used entry, if the device has published one.
    pub(super) fn take_used(&mut self) -> Option<(u32, u32)> {
        if self.ring.used_idx() == self.next_used {
            return None;
        }
        let e = self.ring.used_entry(self.next_used);
        self.next_used = self.next_used.wrapping_add(1);
        Some(e)
    }
}
