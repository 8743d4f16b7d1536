//! Used entries, written in batches.
//!
//! A receive path that spreads a frame over several buffers (VIRTIO_NET_F_MRG_RXBUF) must
//! publish them together: a driver reads `num_buffers` from the first and expects the rest
//! to be there (Linux's `receive_mergeable`). Publishing once per batch also keeps the used
//! index's cache line from bouncing between device and driver on every frame. How a batch
//! is written and made visible is the ring's business ([`DeviceQueue::add_used`],
//! [`DeviceQueue::publish_used`]); a batch counts its entries for the datapath's budget.

use crate::queue::{DeviceQueue, Error, Memory};

/// Used entries staged on a queue but not yet published.
#[derive(Debug, Default)]
pub struct UsedBatch {
    count: u16,
}

impl UsedBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries staged so far.
    pub fn len(&self) -> u16 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Stages one used entry on `q`; the driver cannot see it until [`UsedBatch::publish`].
    pub fn push(
        &mut self,
        q: &mut dyn DeviceQueue,
        mem: &Memory,
        id: u16,
        len: u32,
    ) -> Result<(), Error> {
        q.add_used(mem, id, len)?;
        self.count += 1;
        Ok(())
    }

    /// Makes the entries visible at once. Returns whether the driver asked to be interrupted
    /// for them (used_event, or the no-interrupt flag without VIRTIO_F_EVENT_IDX).
    pub fn publish(self, q: &mut dyn DeviceQueue, mem: &Memory) -> Result<bool, Error> {
        if self.count == 0 {
            return Ok(false);
        }
        q.publish_used(mem)
    }
}
