//! The guest-physical address map every machine uses.
//!
//! ```text
//! 0x0000_6000  PVH start_info, then its memory map
//! 0x0000_7000  kernel command line (up to 4 KiB)
//! 0x0010_0000  guest image (the ELF's physical addresses)
//! ...          RAM up to the configured size
//! 0xd000_0000  PCI MMIO window (BARs), 256 MiB
//! ```
//! The MMIO window sits below 4 GiB, above RAM, and inside the guest's identity map; 64-bit
//! guest code reaches it through registers, never an absolute 32-bit displacement (which the
//! CPU would sign-extend).

pub const START_INFO: u64 = 0x6000;
pub const MEMMAP: u64 = 0x6100;
pub const CMDLINE: u64 = 0x7000;
pub const CMDLINE_MAX: usize = 0x1000;
/// Where the ELF loader may place the image (nothing below it).
pub const HIMEM_START: u64 = 0x10_0000;

pub const PCI_MMIO_START: u64 = 0xd000_0000;
pub const PCI_MMIO_SIZE: u64 = 0x1000_0000;

/// Largest RAM that fits below the MMIO window.
pub const MAX_RAM: u64 = PCI_MMIO_START;
/// Smallest RAM a guest can run in.
pub const MIN_RAM: u64 = 32 << 20;

/// Where the in-process machine's driver takes its DMA memory from: above the area a guest
/// image would occupy, up to the end of RAM.
pub const INPROCESS_DMA_START: u64 = 16 << 20;
