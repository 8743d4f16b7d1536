//! The mbufs a queue handed to the device, found again when their chains come back.
//!
//! Without VIRTIO_F_IN_ORDER the device returns chains in any order, so each mbuf waits in
//! the slot of its chain id. In order the device returns them as they were posted, so the
//! mbufs wait in a FIFO and the oldest is the one returned, as DPDK's in-order paths
//! (`virtio_recv_pkts_inorder`, `virtio_xmit_cleanup_inorder`) take their cookies in ring
//! order: a whole batch is freed from the front without a lookup per chain.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::mbuf::Mbuf;

pub(super) enum Posted<'a> {
    /// By chain id.
    ById(Vec<Option<Mbuf<'a>>>),
    /// Oldest first, with the chain id each went with.
    InOrder(VecDeque<(u16, Mbuf<'a>)>),
}

impl<'a> Posted<'a> {
    /// Room for the chains of a queue of `size`, which returns them in order or not.
    pub fn new(size: u16, in_order: bool) -> Self {
        if in_order {
            Posted::InOrder(VecDeque::with_capacity(usize::from(size)))
        } else {
            Posted::ById((0..size).map(|_| None).collect())
        }
    }

    /// Keeps `m`, posted as chain `id` (an id the queue gave, below its size).
    pub fn put(&mut self, id: u16, m: Mbuf<'a>) {
        match self {
            Posted::ById(slots) => slots[usize::from(id)] = Some(m),
            Posted::InOrder(fifo) => fifo.push_back((id, m)),
        }
    }

    /// The mbuf posted as chain `id`, which the device returned; `None` when nothing
    /// waits for that id. In order it is the oldest: anything else is left in place.
    pub fn take(&mut self, id: u16) -> Option<Mbuf<'a>> {
        match self {
            Posted::ById(slots) => slots.get_mut(usize::from(id))?.take(),
            Posted::InOrder(fifo) => {
                if fifo.front()?.0 != id {
                    return None;
                }
                fifo.pop_front().map(|(_, m)| m)
            }
        }
    }

    /// In order: frees the `count` oldest mbufs, a batch the device returned whose last
    /// chain is `last`. Returns how many of them were missing or out of place (0 when the
    /// batch is what was posted).
    pub fn free_batch(&mut self, count: u16, last: u16) -> u16 {
        let Posted::InOrder(fifo) = self else {
            return u16::from(count != 1 || self.take(last).is_none());
        };
        let n = usize::from(count).min(fifo.len());
        let last_ok = n > 0 && fifo[n - 1].0 == last;
        fifo.drain(..n);
        count - n as u16 + u16::from(!last_ok)
    }
}
