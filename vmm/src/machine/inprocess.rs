//! The in-process machine: the `pmd` crate on a host thread, with a [`Hal`] that reaches the
//! board directly. Port and MMIO accesses call the same bus a vCPU exit would; DMA memory is
//! a window of the same guest RAM mapping the device model uses.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use device_model::virtio::Memory;
use pmd::hal::{Dma, Hal, Width};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::{pin, supervise, Error};
use crate::board::bus::Bus;
use crate::board::layout;
use crate::board::{Board, MsiCounter};

/// Unwinds the driver thread out of whatever loop it is in when the run is stopped.
struct StopRequested;

struct InProcessHal {
    bus: Arc<Bus>,
    irq: Arc<MsiCounter>,
    /// Keeps the mapping behind `host_base` alive.
    _mem: Arc<Memory>,
    host_base: NonNull<u8>,
    dma_start: u64,
    dma_end: u64,
    next: Cell<u64>,
    stop: Arc<AtomicBool>,
}

impl InProcessHal {
    /// Built on the driver thread: the HAL is not `Send` (its allocator is a `Cell`).
    fn new(bus: Arc<Bus>, irq: Arc<MsiCounter>, mem: Arc<Memory>, stop: Arc<AtomicBool>) -> Self {
        let dma_start = layout::INPROCESS_DMA_START;
        let region = mem
            .find_region(GuestAddress(dma_start))
            .expect("RAM covers the in-process DMA window (checked by `run`)");
        let dma_end = region.start_addr().0 + region.len();
        let host = mem
            .get_host_address(GuestAddress(dma_start))
            .expect("the DMA window start is inside RAM");
        Self {
            bus,
            irq,
            _mem: mem,
            host_base: NonNull::new(host).expect("mmap never returns null"),
            dma_start,
            dma_end,
            next: Cell::new(dma_start),
            stop,
        }
    }

    fn check_stop(&self) {
        // Not while unwinding already: a destructor on the way out (a port that resets its
        // device) reaches the HAL too, and a second unwind from it would abort the process.
        // Found by tests/harness_faults.rs (SIGINT during `vlab test`).
        if self.stop.load(Ordering::Relaxed) && !std::thread::panicking() {
            std::panic::resume_unwind(Box::new(StopRequested));
        }
    }
}

fn bytes(width: Width) -> usize {
    width.bytes()
}

// SAFETY: `dma_alloc` hands out disjoint, aligned pieces of [dma_start, dma_end), one region
// of the board's guest RAM mapping, which `_mem` keeps mapped for the HAL's lifetime; the
// device sees the same bytes at the same guest-physical addresses.
unsafe impl Hal for InProcessHal {
    fn dma_alloc(&self, len: usize, align: usize) -> Option<Dma> {
        let align = align.max(1) as u64;
        let start = self.next.get().checked_add(align - 1)? & !(align - 1);
        let end = start.checked_add(len as u64)?;
        if end > self.dma_end {
            return None;
        }
        self.next.set(end);
        let offset = (start - self.dma_start) as usize;
        // SAFETY: `offset + len` stays within the region that starts at `host_base`.
        let vaddr = unsafe { NonNull::new_unchecked(self.host_base.as_ptr().add(offset)) };
        Some(Dma {
            paddr: start,
            vaddr,
            len,
        })
    }

    fn pio_read(&self, port: u16, width: Width) -> u32 {
        self.check_stop();
        let mut data = [0u8; 4];
        let n = bytes(width).min(4);
        self.bus.pio_read(port, &mut data[..n]);
        u32::from_le_bytes(data)
    }

    fn pio_write(&self, port: u16, width: Width, value: u32) {
        self.check_stop();
        let n = bytes(width).min(4);
        // The exit port's effect is read from the harness after the thread returns.
        let _ = self.bus.pio_write(port, &value.to_le_bytes()[..n]);
    }

    fn pio_write_bytes(&self, port: u16, data: &[u8]) {
        self.check_stop();
        let _ = self.bus.pio_write(port, data);
    }

    fn mmio_read(&self, paddr: u64, width: Width) -> u64 {
        self.check_stop();
        let mut data = [0u8; 8];
        self.bus.mmio_read(paddr, &mut data[..bytes(width)]);
        u64::from_le_bytes(data)
    }

    fn mmio_write(&self, paddr: u64, width: Width, value: u64) {
        self.check_stop();
        self.bus
            .mmio_write(paddr, &value.to_le_bytes()[..bytes(width)]);
    }

    fn relax(&self) {
        self.check_stop();
        std::hint::spin_loop();
    }

    fn interrupts_available(&self) -> bool {
        true
    }

    fn interrupt_count(&self, vector: u8) -> u32 {
        self.irq.count(vector)
    }
}

/// Runs the testpmd application described by `cmdline` on a host thread against `board`,
/// whose MSI messages `irq` counts. Returns the exit code the application wrote to the exit
/// port.
pub fn run(
    board: &Board,
    irq: Arc<MsiCounter>,
    cmdline: &str,
    timeout: Duration,
    guest_cpu: Option<usize>,
) -> Result<u32, Error> {
    if board.ram <= layout::INPROCESS_DMA_START {
        return Err(Error::DriverPanicked(format!(
            "the in-process machine needs more than {} MiB of RAM",
            layout::INPROCESS_DMA_START >> 20
        )));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (bus, mem, hal_stop) = (board.bus.clone(), board.mem.clone(), stop.clone());
    let harness = board.bus.harness.clone();
    let cmdline = cmdline.to_owned();
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("vlab-pmd".into())
        .spawn(move || {
            pin(guest_cpu);
            let hal = InProcessHal::new(bus, irq, mem, hal_stop);
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                let code = pmd::testpmd::run(&hal, &cmdline);
                pmd::harness::exit(&hal, code);
            }));
            let result = match r {
                Ok(()) => harness.exit_code().ok_or_else(|| {
                    Error::DriverPanicked("the driver returned without an exit code".into())
                }),
                Err(p) if p.is::<StopRequested>() => Err(Error::DriverPanicked("stopped".into())),
                Err(p) => Err(Error::DriverPanicked(device_model::panic::message(&*p))),
            };
            let _ = tx.send(result);
        })
        .map_err(|e| Error::DriverPanicked(format!("spawning the driver thread: {e}")))?;
    let r = supervise(&rx, &super::port_stats(board), timeout, || {
        stop.store(true, Ordering::Relaxed)
    });
    if r.is_ok() || !matches!(r, Err(Error::Unresponsive(_))) {
        let _ = thread.join();
    }
    r
}
