//! One transmit queue: frames become descriptor chains (through an indirect table when
//! they have several segments and the device takes them), and their mbufs are freed when
//! the device returns them: one by one by chain id, or in order (VIRTIO_F_IN_ORDER) a
//! whole batch at a time from the oldest sent.

use alloc::vec::Vec;

use super::posted::Posted;
use super::{vlan, Stats};
use crate::hal::Hal;
use crate::mbuf::Mbuf;
use crate::virtqueue::{Buf, Virtqueue};

pub(super) struct TxQueue<'a, H: Hal> {
    pub vq: Virtqueue<'a, H>,
    /// The frames in flight.
    posted: Posted<'a>,
    /// Scratch: the buffers of the frame being queued.
    bufs: Vec<Buf>,
    /// Scratch: the chain id of each frame of the burst (`None`: dropped).
    heads: Vec<Option<u16>>,
}

impl<'a, H: Hal> TxQueue<'a, H> {
    pub fn new(vq: Virtqueue<'a, H>) -> Self {
        Self {
            posted: Posted::new(vq.size(), vq.in_order()),
            bufs: Vec::new(),
            heads: Vec::new(),
            vq,
        }
    }

    /// Frees the mbufs of every transmitted frame the device has returned.
    pub fn cleanup(&mut self, stats: &mut Stats) {
        if self.vq.in_order() {
            // As DPDK's `virtio_xmit_cleanup_inorder`: a used entry may return a batch,
            // the oldest frames sent, freed together.
            while let Some(batch) = self.vq.pop_used_batch() {
                stats.oerrors += match batch {
                    Ok(b) => u64::from(self.posted.free_batch(b.count, b.last.id)),
                    Err(_) => 1,
                };
            }
            return;
        }
        while let Some(used) = self.vq.pop_used() {
            if !used.is_ok_and(|u| self.posted.take(u.id).is_some()) {
                stats.oerrors += 1;
            }
        }
    }

    /// Queues as many frames from the front of `pkts` as the ring takes; they leave `pkts`.
    /// Returns how many left (queued, or dropped and counted in `oerrors`) and whether the
    /// device must be notified. The caller cleans up first.
    ///
    /// The header goes in the first segment's headroom (what DPDK calls "can push"); a
    /// frame of several segments becomes a descriptor chain, through an indirect table when
    /// there are tables, so it takes one ring slot. Frames flagged for VLAN insertion get
    /// their tag here, in software.
    pub fn burst(
        &mut self,
        pkts: &mut Vec<Mbuf<'a>>,
        hdr_len: usize,
        stats: &mut Stats,
    ) -> (usize, bool) {
        self.heads.clear();
        let indirect_max = self.vq.indirect_max();
        for m in pkts.iter_mut() {
            let segs = m.nb_segs();
            let indirect = segs > 1 && segs <= indirect_max;
            let slots = if indirect { 1 } else { segs };
            if slots > self.vq.num_free() {
                if slots > self.vq.size() {
                    // Could never fit: drop rather than stall the queue.
                    stats.oerrors += 1;
                    self.heads.push(None);
                    continue;
                }
                break;
            }
            if m.ol_flags() & vlan::TX_VLAN != 0 && !vlan::insert(m) {
                stats.oerrors += 1;
                self.heads.push(None);
                continue;
            }
            let Some(hdr) = m.prepend(hdr_len) else {
                // The application used up the headroom `open` checked for.
                stats.oerrors += 1;
                self.heads.push(None);
                continue;
            };
            hdr.fill(0);
            self.bufs.clear();
            self.bufs.extend(m.segs().map(|s| Buf {
                paddr: s.data_paddr(),
                len: s.len() as u32,
                device_writes: false,
            }));
            let head = if indirect {
                self.vq.add_indirect(&self.bufs)
            } else {
                self.vq.add(&self.bufs)
            };
            match head {
                Some(h) => {
                    if segs > 1 {
                        stats.tx_multiseg += 1;
                        stats.tx_indirect += u64::from(indirect);
                    }
                    stats.opackets += 1;
                    stats.obytes += (m.pkt_len() - hdr_len) as u64;
                    self.heads.push(Some(h));
                }
                None => {
                    stats.oerrors += 1;
                    self.heads.push(None);
                }
            }
        }
        let count = self.heads.len();
        for (m, head) in pkts.drain(..count).zip(self.heads.iter()) {
            if let Some(h) = *head {
                self.posted.put(h, m);
            }
        }
        let kick = self.heads.iter().any(Option::is_some) && self.vq.kick_prepare();
        (count, kick)
    }
}
