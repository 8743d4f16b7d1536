//! The guest's [`Hal`]: port I/O instructions (allowed in ring 3 by IOPL=3), volatile
//! accesses for MMIO (identity mapped), and DMA memory from the window after the heap.

use core::arch::asm;
use core::cell::Cell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, Ordering};

use pmd::hal::{Dma, Hal, Width};
use pmd::harness::{reg, CONSOLE_MAX, HARNESS_PORT, SERIAL_PORT, SIGNATURE};

/// Whether the VMM has the harness console: unknown until first used.
static HARNESS_CONSOLE: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const PRESENT: u8 = 1;
const ABSENT: u8 = 2;

pub struct GuestHal {
    next: Cell<u64>,
    end: Cell<u64>,
}

impl GuestHal {
    pub fn new() -> Self {
        Self {
            next: Cell::new(0),
            end: Cell::new(0),
        }
    }

    pub fn set_dma_window(&self, (start, end): (u64, u64)) {
        self.next.set(start);
        self.end.set(end);
    }

    fn harness_console(&self) -> bool {
        match HARNESS_CONSOLE.load(Ordering::Relaxed) {
            PRESENT => true,
            ABSENT => false,
            _ => {
                let present = self.pio_read(HARNESS_PORT + reg::SIGNATURE, Width::U32) == SIGNATURE;
                HARNESS_CONSOLE.store(if present { PRESENT } else { ABSENT }, Ordering::Relaxed);
                present
            }
        }
    }
}

// SAFETY: DMA blocks are disjoint pieces of the RAM window after the heap, identity mapped
// (so `paddr` is what the device sees).
unsafe impl Hal for GuestHal {
    fn dma_alloc(&self, len: usize, align: usize) -> Option<Dma> {
        let align = align.max(1) as u64;
        let start = self.next.get().checked_add(align - 1)? & !(align - 1);
        let end = start.checked_add(len as u64)?;
        if end > self.end.get() {
            return None;
        }
        self.next.set(end);
        let vaddr = NonNull::new(start as *mut u8)?;
        Some(Dma {
            paddr: start,
            vaddr,
            len,
        })
    }

    fn pio_read(&self, port: u16, width: Width) -> u32 {
        // SAFETY: IOPL=3 lets ring 3 use `in`; the port belongs to the VMM, which emulates it.
        unsafe {
            match width {
                Width::U8 => {
                    let v: u8;
                    asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags));
                    u32::from(v)
                }
                Width::U16 => {
                    let v: u16;
                    asm!("in ax, dx", out("ax") v, in("dx") port, options(nomem, nostack, preserves_flags));
                    u32::from(v)
                }
                Width::U32 | Width::U64 => {
                    let v: u32;
                    asm!("in eax, dx", out("eax") v, in("dx") port, options(nomem, nostack, preserves_flags));
                    v
                }
            }
        }
    }

    fn pio_write(&self, port: u16, width: Width, value: u32) {
        // SAFETY: as `pio_read`.
        unsafe {
            match width {
                Width::U8 => {
                    asm!("out dx, al", in("dx") port, in("al") value as u8, options(nomem, nostack, preserves_flags))
                }
                Width::U16 => {
                    asm!("out dx, ax", in("dx") port, in("ax") value as u16, options(nomem, nostack, preserves_flags))
                }
                Width::U32 | Width::U64 => {
                    asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
                }
            }
        }
    }

    fn pio_write_bytes(&self, port: u16, bytes: &[u8]) {
        // Every exit costs tens of microseconds on a nested KVM, and `rep outsb` exits once
        // per byte there: console text goes through the harness console (two exits per
        // string) when the VMM has one, through the UART otherwise (QEMU).
        if port == SERIAL_PORT && self.harness_console() {
            for chunk in bytes.chunks(CONSOLE_MAX as usize) {
                self.pio_write(
                    HARNESS_PORT + reg::CONSOLE_ADDR,
                    Width::U32,
                    chunk.as_ptr() as u32,
                );
                self.pio_write(
                    HARNESS_PORT + reg::CONSOLE_WRITE,
                    Width::U32,
                    chunk.len() as u32,
                );
            }
            return;
        }
        // SAFETY: `rep outsb` reads `bytes.len()` bytes from `bytes` and writes the port.
        unsafe {
            asm!(
                "rep outsb",
                in("dx") port,
                inout("rsi") bytes.as_ptr() => _,
                inout("rcx") bytes.len() => _,
                options(nostack, preserves_flags, readonly)
            );
        }
    }

    fn mmio_read(&self, paddr: u64, width: Width) -> u64 {
        // SAFETY: `paddr` is a device register inside a BAR the driver found; the identity
        // map covers it and the access exits to the VMM.
        unsafe {
            match width {
                Width::U8 => u64::from((paddr as *const u8).read_volatile()),
                Width::U16 => u64::from((paddr as *const u16).read_volatile()),
                Width::U32 => u64::from((paddr as *const u32).read_volatile()),
                Width::U64 => (paddr as *const u64).read_volatile(),
            }
        }
    }

    fn mmio_write(&self, paddr: u64, width: Width, value: u64) {
        // SAFETY: as `mmio_read`.
        unsafe {
            match width {
                Width::U8 => (paddr as *mut u8).write_volatile(value as u8),
                Width::U16 => (paddr as *mut u16).write_volatile(value as u16),
                Width::U32 => (paddr as *mut u32).write_volatile(value as u32),
                Width::U64 => (paddr as *mut u64).write_volatile(value),
            }
        }
    }

    fn interrupts_available(&self) -> bool {
        super::boot::apic_enabled()
    }

    fn interrupt_count(&self, vector: u8) -> u32 {
        super::boot::interrupt_count(vector)
    }

    fn cycles(&self) -> u64 {
        // SAFETY: `rdtsc` is unprivileged unless CR4.TSD is set, which this guest never sets.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
}
