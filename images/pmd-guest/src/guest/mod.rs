//! Everything that exists only in the guest build.

mod boot;
mod heap;
mod platform;
mod start_info;

use core::fmt::Write as _;

use platform::GuestHal;
use pmd::harness::{self, exit};
use pmd::sprintln;

/// Ring-3 entry, called by `boot.rs` on the user stack with .bss zeroed.
#[no_mangle]
extern "C" fn guest_main(start_info: u64) -> ! {
    boot::fill_idt();
    let hal = GuestHal::new();
    // SAFETY: the VMM put a PVH start_info at this address (EBX at entry) and identity
    // maps it; nothing writes it while we read.
    let info = unsafe { start_info::read(start_info) };
    let code = match info {
        Ok(info) => {
            heap::init(info.free_start, info.free_end);
            hal.set_dma_window(heap::dma_window());
            pmd::testpmd::run(&hal, info.cmdline)
        }
        Err(why) => {
            sprintln!(&hal, "vlab-guest: bad PVH start_info: {why}");
            exit::BAD_CONFIG
        }
    };
    finish(&hal, code)
}

fn finish(hal: &GuestHal, code: u32) -> ! {
    harness::exit(hal, code);
    // The VMM stops the vCPU on the exit port; should it not, spin (HLT is ring 0 only).
    loop {
        core::hint::spin_loop();
    }
}

/// Called in ring 3 (through `boot.rs`'s exception return) after a CPU exception.
#[no_mangle]
extern "C" fn guest_exception(vector: u64, error: u64, rip: u64, cr2: u64) -> ! {
    let hal = GuestHal::new();
    sprintln!(
        &hal,
        "vlab-guest: CPU exception {vector} (error code {error:#x}) at RIP {rip:#x}, CR2 {cr2:#x}"
    );
    finish(&hal, exit::CPU_EXCEPTION)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let hal = GuestHal::new();
    let mut c = pmd::console::Console::new(&hal);
    let _ = writeln!(c, "vlab-guest: panic: {info}");
    finish(&hal, exit::PANIC)
}
