//! Packet buffers ("mbufs", after DPDK's `rte_mbuf`) from a fixed pool in DMA memory.
//!
//! Each element is `[headroom | data room]`; the metadata lives beside it in ordinary memory.
//! The headroom is where the driver puts the virtio-net header on transmit, and where the
//! device writes it on receive, so neither direction copies a frame. An [`Mbuf`] borrows its
//! pool and goes back to it when dropped.

use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::ptr::NonNull;

use crate::hal::Hal;

/// DPDK's default headroom (RTE_PKTMBUF_HEADROOM).
pub const DEFAULT_HEADROOM: u16 = 128;
/// DPDK's default data room (RTE_MBUF_DEFAULT_DATAROOM).
pub const DEFAULT_DATA_ROOM: u16 = 2048;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("an mbuf pool needs at least one element")]
    Empty,
    #[error("mbuf element of {headroom}+{data_room} bytes is too large")]
    TooLarge { headroom: u16, data_room: u16 },
    #[error("out of DMA memory for {count} mbufs of {elt} bytes")]
    NoMemory { count: u32, elt: usize },
}

/// "No next segment".
const NO_SEG: u32 = u32::MAX;

struct Meta {
    paddr: u64,
    vaddr: NonNull<u8>,
    data_off: Cell<u16>,
    /// Bytes of data in this segment.
    data_len: Cell<u16>,
    /// Bytes in the whole chain (meaningful in a head segment).
    pkt_len: Cell<u32>,
    nb_segs: Cell<u16>,
    next: Cell<u32>,
    vlan_tci: Cell<u16>,
    ol_flags: Cell<u16>,
    /// The device's hash of a received frame (DPDK's `hash.rss`).
    rss_hash: Cell<u32>,
    /// What the hash covers (the virtio header's `hash_report`).
    hash_report: Cell<u16>,
}

/// `ol_flags` bits.
pub mod flags {
    /// The VLAN tag was stripped into `vlan_tci` (DPDK's RTE_MBUF_F_RX_VLAN_STRIPPED).
    pub const RX_VLAN_STRIPPED: u16 = 1 << 0;
    /// `rss_hash` and `hash_report` hold the device's hash (DPDK's RTE_MBUF_F_RX_RSS_HASH).
    pub const RX_RSS_HASH: u16 = 1 << 2;
}

/// A fixed set of equally sized packet buffers.
pub struct MbufPool {
    metas: Vec<Meta>,
    free: RefCell<Vec<u32>>,
    headroom: u16,
    buf_len: u16,
}

impl MbufPool {
    /// Allocates `count` buffers of `headroom + data_room` bytes each.
    pub fn new<H: Hal>(hal: &H, count: u32, headroom: u16, data_room: u16) -> Result<Self, Error> {
        if count == 0 {
            return Err(Error::Empty);
        }
        let buf_len = headroom.checked_add(data_room).ok_or(Error::TooLarge {
            headroom,
            data_room,
        })?;
        // Cache-line aligned elements, like DPDK's mempool.
        let elt = (usize::from(buf_len) + 63) & !63;
        let total = elt
            .checked_mul(count as usize)
            .ok_or(Error::NoMemory { count, elt })?;
        let dma = hal
            .dma_alloc(total, 4096)
            .ok_or(Error::NoMemory { count, elt })?;
        let metas = (0..count as usize)
            .map(|i| Meta {
                paddr: dma.paddr + (i * elt) as u64,
                // SAFETY: `i * elt < total`, inside the block the Hal gave us.
                vaddr: unsafe { NonNull::new_unchecked(dma.vaddr.as_ptr().add(i * elt)) },
                data_off: Cell::new(headroom),
                data_len: Cell::new(0),
                pkt_len: Cell::new(0),
                nb_segs: Cell::new(1),
                next: Cell::new(NO_SEG),
                vlan_tci: Cell::new(0),
                ol_flags: Cell::new(0),
                rss_hash: Cell::new(0),
                hash_report: Cell::new(0),
            })
            .collect();
        // Handed out lowest index first, so runs are reproducible.
        let free = (0..count).rev().collect();
        Ok(Self {
            metas,
            free: RefCell::new(free),
            headroom,
            buf_len,
        })
    }

    /// Takes a buffer with empty data at the default headroom.
    pub fn alloc(&self) -> Option<Mbuf<'_>> {
        let idx = self.free.borrow_mut().pop()?;
        let m = &self.metas[idx as usize];
        m.data_off.set(self.headroom);
        m.data_len.set(0);
        m.pkt_len.set(0);
        m.nb_segs.set(1);
        m.next.set(NO_SEG);
        m.vlan_tci.set(0);
        m.ol_flags.set(0);
        m.rss_hash.set(0);
        m.hash_report.set(0);
        Some(Mbuf { pool: self, idx })
    }

    /// Buffers currently free.
    pub fn available(&self) -> usize {
        self.free.borrow().len()
    }

    pub fn capacity(&self) -> usize {
        self.metas.len()
    }

    pub fn headroom(&self) -> u16 {
        self.headroom
    }

    /// Headroom plus data room: the size of every buffer.
    pub fn buf_len(&self) -> u16 {
        self.buf_len
    }

    /// Data room: what a buffer holds after its headroom.
    pub fn data_room(&self) -> u16 {
        self.buf_len - self.headroom
    }
}

/// One segment of a packet, as [`Mbuf::segs`] yields them.
#[derive(Clone, Copy)]
pub struct Seg<'a> {
    meta: &'a Meta,
}

impl<'a> Seg<'a> {
    pub fn len(&self) -> usize {
        usize::from(self.meta.data_len.get())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Device address of the segment's first data byte.
    pub fn data_paddr(&self) -> u64 {
        self.meta.paddr + u64::from(self.meta.data_off.get())
    }

    pub fn data(&self) -> &'a [u8] {
        // SAFETY: data_off + data_len stay within the element (every setter checks), and a
        // segment reachable from an `Mbuf` the driver owns is not being written by the
        // device (buffers go to the device only inside a queue's bookkeeping).
        unsafe {
            core::slice::from_raw_parts(
                self.meta
                    .vaddr
                    .as_ptr()
                    .add(usize::from(self.meta.data_off.get())),
                self.len(),
            )
        }
    }
}

/// A packet: one buffer, or a chain of them. Dropping it returns every segment to its pool.
pub struct Mbuf<'p> {
    pool: &'p MbufPool,
    idx: u32,
}

impl<'p> Mbuf<'p> {
    fn meta(&self) -> &'p Meta {
        &self.pool.metas[self.idx as usize]
    }

    /// Length of the data in the first segment.
    pub fn len(&self) -> usize {
        usize::from(self.meta().data_len.get())
    }

    pub fn is_empty(&self) -> bool {
        self.pkt_len() == 0
    }

    /// Length of the whole packet, every segment.
    pub fn pkt_len(&self) -> usize {
        self.meta().pkt_len.get() as usize
    }

    pub fn nb_segs(&self) -> u16 {
        self.meta().nb_segs.get()
    }

    /// The segments, first to last.
    pub fn segs(&self) -> impl Iterator<Item = Seg<'p>> + 'p {
        let metas = &self.pool.metas;
        let mut next = self.idx;
        core::iter::from_fn(move || {
            let meta = metas.get(next as usize)?;
            next = meta.next.get();
            Some(Seg { meta })
        })
    }

    /// Appends the packet `tail` (all its segments) after the last segment of this one.
    pub fn append_seg(&mut self, tail: Mbuf<'p>) {
        debug_assert!(core::ptr::eq(self.pool, tail.pool));
        let mut last = self.meta();
        while let Some(m) = self.pool.metas.get(last.next.get() as usize) {
            last = m;
        }
        let head = self.meta();
        head.nb_segs.set(head.nb_segs.get() + tail.nb_segs());
        head.pkt_len.set(head.pkt_len.get() + tail.pkt_len() as u32);
        last.next.set(tail.idx);
        // The chain now owns the tail's segments.
        core::mem::forget(tail);
    }

    /// Copies the whole packet into `out` (replacing its contents).
    pub fn copy_to(&self, out: &mut Vec<u8>) {
        out.clear();
        for s in self.segs() {
            out.extend_from_slice(s.data());
        }
    }

    /// Bytes free before the data.
    pub fn headroom(&self) -> usize {
        usize::from(self.meta().data_off.get())
    }

    /// Bytes free after the first segment's data.
    pub fn tailroom(&self) -> usize {
        usize::from(self.pool.buf_len) - self.headroom() - self.len()
    }

    /// Device address of the first data byte.
    pub fn data_paddr(&self) -> u64 {
        self.meta().paddr + u64::from(self.meta().data_off.get())
    }

    /// Device address of the start of the buffer (headroom included).
    pub fn buf_paddr(&self) -> u64 {
        self.meta().paddr
    }

    /// Size of the whole buffer (headroom included).
    pub fn buf_len(&self) -> usize {
        usize::from(self.pool.buf_len)
    }

    /// Offset of the data from the start of the buffer.
    pub fn data_off(&self) -> usize {
        self.headroom()
    }

    fn bytes_mut(&mut self, off: usize, len: usize) -> &mut [u8] {
        debug_assert!(off + len <= self.buf_len());
        // SAFETY: `off + len <= buf_len`, inside this element; `&mut self` makes this the
        // only view, and the device does not write a buffer the driver owns.
        unsafe { core::slice::from_raw_parts_mut(self.meta().vaddr.as_ptr().add(off), len) }
    }

    /// The whole first buffer, headroom included (where the device put the header).
    pub fn buffer(&self) -> &[u8] {
        // SAFETY: the element is `buf_len` bytes; the device does not write a buffer the
        // driver owns.
        unsafe { core::slice::from_raw_parts(self.meta().vaddr.as_ptr(), self.buf_len()) }
    }

    /// The first segment's data.
    pub fn data(&self) -> &[u8] {
        Seg { meta: self.meta() }.data()
    }

    /// The first segment's data.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let (off, len) = (self.headroom(), self.len());
        self.bytes_mut(off, len)
    }

    /// Changes the first segment's length by `new - old`, keeping `pkt_len` in step.
    fn set_seg_len(&self, len: usize) {
        let m = self.meta();
        let old = u32::from(m.data_len.get());
        m.data_len.set(len as u16);
        m.pkt_len.set(m.pkt_len.get() - old + len as u32);
    }

    /// Sets the first segment's data to `len` bytes at offset `off` of the buffer. `false`,
    /// changing nothing, when that does not fit.
    pub fn set_data(&mut self, off: usize, len: usize) -> bool {
        if off.checked_add(len).is_none_or(|end| end > self.buf_len()) {
            return false;
        }
        self.meta().data_off.set(off as u16);
        self.set_seg_len(len);
        true
    }

    /// Grows the first segment by `len` bytes at its end and returns them.
    pub fn append(&mut self, len: usize) -> Option<&mut [u8]> {
        if len > self.tailroom() {
            return None;
        }
        let end = self.headroom() + self.len();
        self.set_seg_len(self.len() + len);
        Some(self.bytes_mut(end, len))
    }

    /// Grows the data by `len` bytes at the front and returns them.
    pub fn prepend(&mut self, len: usize) -> Option<&mut [u8]> {
        if len > self.headroom() {
            return None;
        }
        let off = self.headroom() - len;
        self.meta().data_off.set(off as u16);
        self.set_seg_len(self.len() + len);
        Some(self.bytes_mut(off, len))
    }

    /// Removes `len` bytes from the front of the first segment.
    pub fn adj(&mut self, len: usize) -> bool {
        if len > self.len() {
            return false;
        }
        let m = self.meta();
        m.data_off.set(m.data_off.get() + len as u16);
        self.set_seg_len(self.len() - len);
        true
    }

    /// VLAN TCI stripped from, or to be inserted into, this packet.
    pub fn vlan_tci(&self) -> u16 {
        self.meta().vlan_tci.get()
    }

    pub fn set_vlan_tci(&mut self, tci: u16) {
        self.meta().vlan_tci.set(tci);
    }

    pub fn ol_flags(&self) -> u16 {
        self.meta().ol_flags.get()
    }

    pub fn set_ol_flags(&mut self, f: u16) {
        self.meta().ol_flags.set(f);
    }

    /// The device's hash of this received frame; meaningful when `ol_flags` has
    /// [`flags::RX_RSS_HASH`].
    pub fn rss_hash(&self) -> u32 {
        self.meta().rss_hash.get()
    }

    /// What [`Mbuf::rss_hash`] was computed over (`VIRTIO_NET_HASH_REPORT_*`).
    pub fn hash_report(&self) -> u16 {
        self.meta().hash_report.get()
    }

    /// Records the device's hash and flags the mbuf.
    pub fn set_rss_hash(&mut self, hash: u32, report: u16) {
        let m = self.meta();
        m.rss_hash.set(hash);
        m.hash_report.set(report);
        m.ol_flags.set(m.ol_flags.get() | flags::RX_RSS_HASH);
    }
}

impl Drop for Mbuf<'_> {
    fn drop(&mut self) {
        let mut free = self.pool.free.borrow_mut();
        let mut idx = self.idx;
        // A chain is at most pool-sized: bound the walk so a corrupted link cannot loop.
        for _ in 0..self.pool.metas.len() {
            let Some(m) = self.pool.metas.get(idx as usize) else {
                break;
            };
            let next = m.next.get();
            m.next.set(NO_SEG);
            free.push(idx);
            idx = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hal::{Dma, Width};
    use alloc::vec;

    /// DMA from the heap: enough for driver-only tests.
    struct HeapHal;
    // SAFETY: every block is a fresh, leaked, zeroed allocation of `len` bytes.
    unsafe impl Hal for HeapHal {
        fn dma_alloc(&self, len: usize, _align: usize) -> Option<Dma> {
            let b = alloc::boxed::Box::leak(vec![0u8; len].into_boxed_slice());
            let vaddr = NonNull::new(b.as_mut_ptr())?;
            Some(Dma {
                paddr: vaddr.as_ptr() as u64,
                vaddr,
                len,
            })
        }
        fn pio_read(&self, _: u16, _: Width) -> u32 {
            0
        }
        fn pio_write(&self, _: u16, _: Width, _: u32) {}
        fn mmio_read(&self, _: u64, _: Width) -> u64 {
            0
        }
        fn mmio_write(&self, _: u64, _: Width, _: u64) {}
    }

    #[test]
    fn chains_count_their_segments_and_free_them_all() {
        let pool = MbufPool::new(&HeapHal, 4, 16, 64).unwrap();
        let mut a = pool.alloc().unwrap();
        a.append(10).unwrap().fill(1);
        let mut b = pool.alloc().unwrap();
        b.append(20).unwrap().fill(2);
        let mut c = pool.alloc().unwrap();
        c.append(5).unwrap().fill(3);
        b.append_seg(c);
        a.append_seg(b);
        assert_eq!((a.nb_segs(), a.pkt_len(), a.len()), (3, 35, 10));
        let lens: Vec<usize> = a.segs().map(|s| s.len()).collect();
        assert_eq!(lens, vec![10, 20, 5]);
        let mut all = Vec::new();
        a.copy_to(&mut all);
        assert_eq!(all[9..12], [1, 2, 2]);
        a.prepend(4).unwrap().fill(9);
        assert_eq!(a.pkt_len(), 39);
        assert_eq!(pool.available(), 1);
        drop(a);
        assert_eq!(pool.available(), 4);
    }

    #[test]
    fn edits_that_do_not_fit_change_nothing() {
        let pool = MbufPool::new(&HeapHal, 1, 16, 64).unwrap();
        let mut m = pool.alloc().unwrap();
        assert!(m.append(65).is_none());
        assert!(m.prepend(17).is_none());
        assert!(!m.set_data(70, 20));
        assert!(!m.adj(1));
        assert_eq!((m.len(), m.pkt_len(), m.headroom()), (0, 0, 16));
    }
}
