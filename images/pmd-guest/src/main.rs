//! The virtio-lab guest image.
//!
//! Ring 0 (emulated instruction by instruction on this project's nested KVM, so kept to a few
//! dozen instructions, all in `boot.rs`) loads a GDT, a TSS, an IDT and static page tables,
//! enters long mode and `iretq`s to ring 3 with IOPL=3. Ring 3 runs natively: it zeroes
//! .bss, fills the IDT, reads the PVH start_info and runs the testpmd-like application of
//! the `pmd` crate, whose verdict it writes to the exit port.
//!
//! Built for `x86_64-unknown-none`. A host build is a stub that says so.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod guest;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "pmd-guest is a guest image: build it with \
         `cargo build -p pmd-guest --release --target x86_64-unknown-none` (or `make images`)"
    );
    std::process::exit(2);
}
