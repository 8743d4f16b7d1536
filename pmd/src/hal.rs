//! The hardware abstraction the driver is written against.
//!
//! A guest implements it with `in`/`out` instructions, volatile pointer accesses and an
//! identity-mapped memory pool; the in-process machine implements it with calls into the
//! VMM's bus and a window of the guest memory mapping. The driver never dereferences a
//! physical address itself: it only touches memory it obtained from [`Hal::dma_alloc`].

use core::ptr::NonNull;
use core::sync::atomic::{fence, Ordering};

/// Width of a port or MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    U8,
    U16,
    U32,
    U64,
}

impl Width {
    /// Size of an access of this width, in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            Width::U8 => 1,
            Width::U16 => 2,
            Width::U32 => 4,
            Width::U64 => 8,
        }
    }
}

/// A block of memory shared with the device: `vaddr` is where the driver reads and writes
/// it, `paddr` is the address the device is given.
#[derive(Clone, Copy, Debug)]
pub struct Dma {
    pub paddr: u64,
    pub vaddr: NonNull<u8>,
    pub len: usize,
}

/// Platform services for the driver.
///
/// # Safety
///
/// An implementation promises that every [`Dma`] returned by [`Hal::dma_alloc`] is valid for
/// reads and writes of `len` bytes at `vaddr` for as long as the `Hal` lives, overlaps no
/// other allocation, and that the device sees the same bytes at `paddr`. The contents are
/// unspecified: the driver initialises what it reads.
pub unsafe trait Hal {
    /// Allocates memory the device can reach. Never freed: the driver allocates its rings
    /// and mbuf pools once, at start-up. Not zeroed: touching every page of a pool at
    /// start-up costs a page fault each, in a guest a costly one.
    fn dma_alloc(&self, len: usize, align: usize) -> Option<Dma>;

    /// Reads an I/O port.
    fn pio_read(&self, port: u16, width: Width) -> u32;
    /// Writes an I/O port.
    fn pio_write(&self, port: u16, width: Width, value: u32);
    /// Writes a string of bytes to one 8-bit port (`rep outsb` where the platform has it).
    fn pio_write_bytes(&self, port: u16, bytes: &[u8]) {
        for &b in bytes {
            self.pio_write(port, Width::U8, u32::from(b));
        }
    }

    /// Reads a device register mapped at guest-physical `paddr`.
    fn mmio_read(&self, paddr: u64, width: Width) -> u64;
    /// Writes a device register mapped at guest-physical `paddr`.
    fn mmio_write(&self, paddr: u64, width: Width, value: u64);

    /// Full barrier: orders earlier loads and stores before later ones (virtio's `mb()`).
    fn mb(&self) {
        fence(Ordering::SeqCst);
    }
    /// Read barrier (virtio's `rmb()`).
    fn rmb(&self) {
        fence(Ordering::Acquire);
    }
    /// Write barrier (virtio's `wmb()`).
    fn wmb(&self) {
        fence(Ordering::Release);
    }

    /// Called in every busy-wait loop of the driver and its application. A guest just
    /// pauses; a host thread may use it to notice that its run was stopped.
    fn relax(&self) {
        core::hint::spin_loop();
    }

    /// Whether interrupts reach this driver: in a guest, whether it has a local APIC;
    /// on a host thread, whether the machine records MSI messages for it.
    fn interrupts_available(&self) -> bool {
        false
    }

    /// How many interrupts with APIC vector `vector` have arrived so far (wrapping). The
    /// driver compares counts rather than taking interrupts: it polls even for these.
    fn interrupt_count(&self, vector: u8) -> u32 {
        let _ = vector;
        0
    }

    /// A monotonic cycle counter, for the application's rate figures only; never for a
    /// verdict. Zero where the platform has none.
    fn cycles(&self) -> u64 {
        0
    }
}
