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

struct Meta {
    paddr: u64,
    vaddr: NonNull<u8>,
    data_off: Cell<u16>,
    data_len: Cell<u16>,
    vlan_tci: Cell<u16>,
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
                vlan_tci: Cell::new(0),
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
        m.vlan_tci.set(0);
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
}

/// One packet buffer. Dropping it returns it to its pool.
pub struct Mbuf<'p> {
    pool: &'p MbufPool,
    idx: u32,
}

impl Mbuf<'_> {
    fn meta(&self) -> &Meta {
        &self.pool.metas[self.idx as usize]
    }

    /// Length of the packet data.
    pub fn len(&self) -> usize {
        usize::from(self.meta().data_len.get())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes free before the data.
    pub fn headroom(&self) -> usize {
        usize::from(self.meta().data_off.get())
    }

    /// Bytes free after the data.
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

    fn bytes(&self, off: usize, len: usize) -> &[u8] {
        debug_assert!(off + len <= self.buf_len());
        // SAFETY: `off + len <= buf_len`, inside this element; while the driver owns an
        // `Mbuf` the device does not write it (a buffer is handed to the device only by
        // moving its `Mbuf` into a queue).
        unsafe { core::slice::from_raw_parts(self.meta().vaddr.as_ptr().add(off), len) }
    }

    fn bytes_mut(&mut self, off: usize, len: usize) -> &mut [u8] {
        debug_assert!(off + len <= self.buf_len());
        // SAFETY: as `bytes`; `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(self.meta().vaddr.as_ptr().add(off), len) }
    }

    pub fn data(&self) -> &[u8] {
        self.bytes(self.headroom(), self.len())
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        self.bytes_mut(self.headroom(), self.len())
    }

    /// Sets the data to `len` bytes at offset `off` of the buffer. `false`, changing
    /// nothing, when that does not fit.
    pub fn set_data(&mut self, off: usize, len: usize) -> bool {
        if off.checked_add(len).is_none_or(|end| end > self.buf_len()) {
            return false;
        }
        self.meta().data_off.set(off as u16);
        self.meta().data_len.set(len as u16);
        true
    }

    /// Grows the data by `len` bytes at the end and returns them.
    pub fn append(&mut self, len: usize) -> Option<&mut [u8]> {
        if len > self.tailroom() {
            return None;
        }
        let end = self.headroom() + self.len();
        self.meta().data_len.set((self.len() + len) as u16);
        Some(self.bytes_mut(end, len))
    }

    /// Grows the data by `len` bytes at the front and returns them.
    pub fn prepend(&mut self, len: usize) -> Option<&mut [u8]> {
        if len > self.headroom() {
            return None;
        }
        let off = self.headroom() - len;
        self.meta().data_off.set(off as u16);
        self.meta().data_len.set((self.len() + len) as u16);
        Some(self.bytes_mut(off, len))
    }

    /// Removes `len` bytes from the front of the data.
    pub fn adj(&mut self, len: usize) -> bool {
        if len > self.len() {
            return false;
        }
        let m = self.meta();
        m.data_off.set(m.data_off.get() + len as u16);
        m.data_len.set(m.data_len.get() - len as u16);
        true
    }

    /// VLAN TCI stripped from, or to be inserted into, this packet.
    pub fn vlan_tci(&self) -> u16 {
        self.meta().vlan_tci.get()
    }

    pub fn set_vlan_tci(&mut self, tci: u16) {
        self.meta().vlan_tci.set(tci);
    }
}

impl Drop for Mbuf<'_> {
    fn drop(&mut self) {
        self.pool.free.borrow_mut().push(self.idx);
    }
}
