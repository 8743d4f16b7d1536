//! One receive queue: the mbufs posted to it, their refill, and the burst that turns used
//! buffers into frames (merged over several buffers with VIRTIO_NET_F_MRG_RXBUF). In order
//! (VIRTIO_F_IN_ORDER) the posted mbufs come back oldest first, as DPDK's
//! `virtio_recv_pkts_inorder` takes them; a used entry may stand for a batch of buffers,
//! all but the last of which the device filled.

use alloc::vec::Vec;

use super::posted::Posted;
use super::{hdr, vlan, Stats, NET_HDR_LEN, NET_HDR_LEN_HASH};
use crate::hal::Hal;
use crate::mbuf::{Mbuf, MbufPool};
use crate::virtqueue::{Buf, Virtqueue};

/// What a receive queue needs to know of its port.
#[derive(Clone, Copy, Debug)]
pub(super) struct RxParams {
    /// Size of the virtio-net header the device writes before each frame.
    pub hdr_len: usize,
    /// Frames may span several buffers (VIRTIO_NET_F_MRG_RXBUF).
    pub mergeable: bool,
    /// Strip VLAN tags into the mbuf.
    pub vlan_strip: bool,
    /// The header carries the frame's hash (VIRTIO_NET_F_HASH_REPORT): read it into the
    /// mbuf.
    pub hash_report: bool,
}

pub(super) struct RxQueue<'a, H: Hal> {
    pub vq: Virtqueue<'a, H>,
    /// The mbufs posted.
    posted: Posted<'a>,
    /// Buffers kept posted: what the application asked for, even when the device made the
    /// ring larger, so the rx ring never takes more of the pool than was planned.
    target: u16,
    /// A mergeable frame whose later buffers the device has not returned yet.
    partial: Option<(Mbuf<'a>, u16)>,
}

impl<'a, H: Hal> RxQueue<'a, H> {
    /// A queue on `vq` that keeps up to `asked` buffers posted.
    pub fn new(vq: Virtqueue<'a, H>, asked: u16) -> Self {
        Self {
            posted: Posted::new(vq.size(), vq.in_order()),
            target: vq.size().min(asked),
            partial: None,
            vq,
        }
    }

    /// Posts a fresh mbuf for every free rx descriptor. The device writes the virtio-net
    /// header into the headroom, just before where the frame starts. Returns whether the
    /// device must be notified.
    pub fn refill(&mut self, pool: &'a MbufPool, hdr_len: usize, stats: &mut Stats) -> bool {
        let mut added = false;
        while self.vq.size() - self.vq.num_free() < self.target {
            let Some(m) = pool.alloc() else {
                stats.rx_nombuf += 1;
                break;
            };
            let start = m.data_off() - hdr_len;
            let buf = Buf {
                paddr: m.buf_paddr() + start as u64,
                len: (m.buf_len() - start) as u32,
                device_writes: true,
            };
            let Some(id) = self.vq.add(&[buf]) else {
                break;
            };
            self.posted.put(id, m);
            added = true;
        }
        added && self.vq.kick_prepare()
    }

    /// The next buffer the device returned, with the byte count it wrote. Chains the
    /// driver did not post (a device bug) are counted and skipped.
    fn pop(&mut self, stats: &mut Stats) -> Option<(Mbuf<'a>, usize)> {
        loop {
            if let Ok(used) = self.vq.pop_used()? {
                if let Some(m) = self.posted.take(used.id) {
                    return Some((m, used.len as usize));
                }
            }
            stats.ierrors += 1;
        }
    }

    /// Receives up to `max` frames into `out` (appended); returns how many. With mergeable
    /// buffers a frame arrives as a chain of mbufs. The caller refills afterwards.
    pub fn burst(
        &mut self,
        out: &mut Vec<Mbuf<'a>>,
        max: usize,
        p: RxParams,
        stats: &mut Stats,
    ) -> usize {
        let mut n = 0;
        while n < max {
            let (mut head, mut remaining) = match self.partial.take() {
                Some(partial) => partial,
                None => {
                    let Some((mut m, len)) = self.pop(stats) else {
                        break;
                    };
                    let at = m.data_off() - p.hdr_len;
                    let num_buffers = if p.mergeable && len >= NET_HDR_LEN {
                        le16(m.buffer(), at + hdr::NUM_BUFFERS)
                    } else {
                        1
                    };
                    // The v1 header with hash: `hash_value` and `hash_report` after
                    // `num_buffers`. A frame the device did not hash reports none.
                    let hash = (p.hash_report && len >= NET_HDR_LEN_HASH).then(|| {
                        let b = m.buffer();
                        (
                            le32(b, at + hdr::HASH_VALUE),
                            le16(b, at + hdr::HASH_REPORT),
                        )
                    });
                    if !place(&mut m, p.hdr_len, p.hdr_len, len)
                        || num_buffers == 0
                        || num_buffers > self.vq.size()
                    {
                        stats.ierrors += 1;
                        continue;
                    }
                    if let Some((value, report)) = hash {
                        if report != super::rss::report::NONE {
                            m.set_rss_hash(value, report);
                        }
                    }
                    (m, num_buffers - 1)
                }
            };
            let mut broken = false;
            while remaining > 0 {
                let Some((mut seg, len)) = self.pop(stats) else {
                    break;
                };
                if !place(&mut seg, p.hdr_len, 0, len) {
                    broken = true;
                }
                head.append_seg(seg);
                remaining -= 1;
            }
            if remaining > 0 {
                // The rest of the frame is not back yet: finish it in a later burst.
                self.partial = Some((head, remaining));
                break;
            }
            if broken {
                stats.ierrors += 1;
                continue;
            }
            if p.vlan_strip {
                vlan::strip(&mut head);
            }
            if head.nb_segs() > 1 {
                stats.rx_multiseg += 1;
            }
            stats.ipackets += 1;
            stats.ibytes += head.pkt_len() as u64;
            out.push(head);
            n += 1;
        }
        n
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Sets `m` to the `len` bytes the device wrote at the buffer start it was posted with
/// (`hdr_len` before its data offset), less the first `skip`.
fn place(m: &mut Mbuf<'_>, hdr_len: usize, skip: usize, len: usize) -> bool {
    let start = m.data_off() - hdr_len;
    len >= skip && m.set_data(start + skip, len - skip)
}
