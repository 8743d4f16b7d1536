//! A fake platform for unit tests: guest memory is one host buffer handed out by a bump
//! allocator, port and MMIO writes (and full barriers) are recorded in order, and port
//! reads answer from a small PCI bus of fake functions. No KVM, no device model: what the
//! driver writes is read back byte by byte, and what a device would write is written by
//! the test, or by a [`FakeDevice`] attached to the bus (which runs whenever the driver
//! waits).

use alloc::alloc::{alloc, dealloc, Layout};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::ptr::NonNull;

use crate::hal::{Dma, Hal, Width};
use crate::pci::Bdf;

/// Guest-physical address of the first byte of fake memory.
pub const MEM_BASE: u64 = 0x10_0000;
/// What fresh memory holds: the driver must initialise what it reads.
pub const POISON: u8 = 0xa5;

/// Something the driver did to the platform, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Pio {
        port: u16,
        width: Width,
        value: u32,
    },
    Mmio {
        addr: u64,
        width: Width,
        value: u64,
    },
    /// A full barrier (`Hal::mb`).
    Mb,
}

/// A PCI function on the fake bus 0.
#[derive(Clone, Copy, Debug)]
pub struct Function {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    /// Bit 7: a multi-function device (function 0 only).
    pub header_type: u8,
}

/// A device model on the fake bus, written from the spec for a test.
pub trait FakeDevice {
    /// The dword at `offset` of function `bdf`'s configuration space, if it is this
    /// device's function.
    fn config_read(&mut self, bdf: Bdf, offset: u16) -> Option<u32>;
    /// A read of `addr`, if it is in this device's registers.
    fn mmio_read(&mut self, hal: &FakeHal, addr: u64, width: Width) -> Option<u64>;
    /// A write of `addr`; `false` when it is not this device's.
    fn mmio_write(&mut self, hal: &FakeHal, addr: u64, width: Width, value: u64) -> bool;
    /// A port read (a harness register, say), if it is this device's.
    fn pio_read(&mut self, port: u16, width: Width) -> Option<u32> {
        let _ = (port, width);
        None
    }
    /// The driver waits (`Hal::relax`): the device does its work.
    fn poll(&mut self, hal: &FakeHal) {
        let _ = hal;
    }
}

pub struct FakeHal {
    mem: NonNull<u8>,
    layout: Layout,
    next: Cell<usize>,
    accesses: RefCell<Vec<Access>>,
    functions: Vec<Function>,
    devices: RefCell<Vec<Rc<RefCell<dyn FakeDevice>>>>,
    /// The last value written to CONFIG_ADDRESS (0xcf8).
    config_address: Cell<u32>,
}

impl FakeHal {
    /// `len` bytes of fake guest memory (page aligned), no PCI functions.
    pub fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len, 4096).expect("a valid layout");
        // SAFETY: `len` is non-zero in every test; the block is freed in `drop`.
        let p = unsafe { alloc(layout) };
        let mem = NonNull::new(p).expect("host memory for the fake guest");
        // SAFETY: the block is `len` bytes, ours.
        unsafe { p.write_bytes(POISON, len) };
        Self {
            mem,
            layout,
            next: Cell::new(0),
            accesses: RefCell::new(Vec::new()),
            functions: Vec::new(),
            devices: RefCell::new(Vec::new()),
            config_address: Cell::new(0),
        }
    }

    /// The same, with these PCI functions on bus 0.
    pub fn with_functions(len: usize, functions: &[Function]) -> Self {
        let mut hal = Self::new(len);
        hal.functions = functions.to_vec();
        hal
    }

    /// Puts `dev` on the bus, after the functions and devices already there.
    pub fn attach(&self, dev: Rc<RefCell<dyn FakeDevice>>) {
        self.devices.borrow_mut().push(dev);
    }

    /// What the driver wrote to the serial port so far (and forgets every access).
    pub fn console(&self) -> alloc::string::String {
        let bytes: Vec<u8> = self
            .take_accesses()
            .into_iter()
            .filter_map(|a| match a {
                Access::Pio {
                    port: crate::harness::SERIAL_PORT,
                    value,
                    ..
                } => Some(value as u8),
                _ => None,
            })
            .collect();
        alloc::string::String::from_utf8(bytes).expect("a UTF-8 log")
    }

    /// Everything recorded so far, and forgets it.
    pub fn take_accesses(&self) -> Vec<Access> {
        core::mem::take(&mut *self.accesses.borrow_mut())
    }

    fn at(&self, paddr: u64, len: usize) -> *mut u8 {
        let off = paddr
            .checked_sub(MEM_BASE)
            .and_then(|o| usize::try_from(o).ok())
            .filter(|&o| o + len <= self.layout.size())
            .unwrap_or_else(|| panic!("{len} bytes at {paddr:#x} are outside fake memory"));
        // SAFETY: `off + len` is inside the block (checked above).
        unsafe { self.mem.as_ptr().add(off) }
    }

    /// Reads `len` bytes at guest-physical `paddr`.
    pub fn read(&self, paddr: u64, len: usize) -> Vec<u8> {
        let p = self.at(paddr, len);
        // SAFETY: `at` checked the range; the driver is not running while a test reads.
        (0..len)
            .map(|i| unsafe { p.add(i).read_volatile() })
            .collect()
    }

    /// Writes `bytes` at guest-physical `paddr`, as a device would.
    pub fn write(&self, paddr: u64, bytes: &[u8]) {
        let p = self.at(paddr, bytes.len());
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: `at` checked the range.
            unsafe { p.add(i).write_volatile(b) };
        }
    }

    pub fn read_u16(&self, paddr: u64) -> u16 {
        let b = self.read(paddr, 2);
        u16::from_le_bytes([b[0], b[1]])
    }

    pub fn write_u16(&self, paddr: u64, v: u16) {
        self.write(paddr, &v.to_le_bytes());
    }

    pub fn write_u32(&self, paddr: u64, v: u32) {
        self.write(paddr, &v.to_le_bytes());
    }

    fn config_read(&self) -> u32 {
        let a = self.config_address.get();
        let bdf = Bdf {
            bus: (a >> 16) as u8,
            device: ((a >> 11) & 0x1f) as u8,
            function: ((a >> 8) & 7) as u8,
        };
        for d in self.devices.borrow().iter() {
            if let Some(v) = d.borrow_mut().config_read(bdf, (a & 0xfc) as u16) {
                return v;
            }
        }
        let Some(f) = self.functions.iter().find(|f| f.bdf == bdf) else {
            return u32::MAX;
        };
        match a & 0xfc {
            0x00 => u32::from(f.vendor) | u32::from(f.device) << 16,
            0x0c => u32::from(f.header_type) << 16,
            _ => 0,
        }
    }
}

impl Drop for FakeHal {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.mem.as_ptr(), self.layout) }
    }
}

// SAFETY: every `Dma` is a disjoint range of the one block this `FakeHal` owns until it is
// dropped, at `MEM_BASE` plus its offset; the "device" (the test) reads the same bytes.
unsafe impl Hal for FakeHal {
    fn dma_alloc(&self, len: usize, align: usize) -> Option<Dma> {
        let start = self.next.get().next_multiple_of(align);
        let end = start.checked_add(len)?;
        if end > self.layout.size() {
            return None;
        }
        self.next.set(end);
        Some(Dma {
            paddr: MEM_BASE + start as u64,
            // SAFETY: `start < end <= size`: inside the block.
            vaddr: unsafe { NonNull::new_unchecked(self.mem.as_ptr().add(start)) },
            len,
        })
    }

    fn pio_read(&self, port: u16, width: Width) -> u32 {
        match (port, width) {
            (0xcfc, Width::U32) => self.config_read(),
            _ => {
                for d in self.devices.borrow().iter() {
                    if let Some(v) = d.borrow_mut().pio_read(port, width) {
                        return v;
                    }
                }
                u32::MAX
            }
        }
    }

    fn pio_write(&self, port: u16, width: Width, value: u32) {
        if port == 0xcf8 && width == Width::U32 {
            self.config_address.set(value);
        }
        self.accesses
            .borrow_mut()
            .push(Access::Pio { port, width, value });
    }

    fn mmio_read(&self, paddr: u64, width: Width) -> u64 {
        for d in self.devices.borrow().iter() {
            if let Some(v) = d.borrow_mut().mmio_read(self, paddr, width) {
                return v;
            }
        }
        u64::MAX
    }

    fn mmio_write(&self, addr: u64, width: Width, value: u64) {
        self.accesses
            .borrow_mut()
            .push(Access::Mmio { addr, width, value });
        for d in self.devices.borrow().iter() {
            if d.borrow_mut().mmio_write(self, addr, width, value) {
                return;
            }
        }
    }

    fn relax(&self) {
        for d in self.devices.borrow().iter() {
            d.borrow_mut().poll(self);
        }
    }

    fn mb(&self) {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        self.accesses.borrow_mut().push(Access::Mb);
    }
}
