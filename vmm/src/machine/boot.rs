//! Loading a PVH guest: the ELF image (linux-loader), its command line and the
//! `hvm_start_info` block with a memory map (xenbits' PVH boot protocol).

use std::fs::File;
use std::path::{Path, PathBuf};

use device_model::virtio::Memory;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_start_info};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{load_cmdline, Cmdline, KernelLoader};
use vm_memory::GuestAddress;

use crate::board::layout;

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("guest image {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("guest image {path}: {why}")]
    Elf { path: PathBuf, why: String },
    #[error("guest image {path}: not a PVH image (it has no XEN_ELFNOTE_PHYS32_ENTRY note)")]
    NotPvh { path: PathBuf },
    #[error("kernel command line ({len} bytes): {why}")]
    Cmdline { len: usize, why: String },
    #[error("writing the PVH start_info: {0}")]
    StartInfo(#[source] linux_loader::configurator::Error),
}

/// What is wrong with an image linux-loader refused, in words for the user.
fn elf_problem(e: &linux_loader::loader::Error) -> String {
    use linux_loader::loader::elf::Error as E;
    use linux_loader::loader::Error as L;
    match e {
        L::Elf(E::InvalidElfMagicNumber) => "not an ELF file (bad magic number)".into(),
        L::Elf(E::BigEndianElfOnLittle) => "a big-endian ELF; x86 guests are little-endian".into(),
        L::Elf(E::InvalidEntryAddress) => format!(
            "its entry point is below {:#x}, where a PVH image must be loaded",
            layout::HIMEM_START
        ),
        L::Elf(E::ReadElfHeader) => "too short for an ELF header".into(),
        L::Elf(E::ReadKernelImage | E::InvalidProgramHeaderAddress) | L::MemoryOverflow => {
            "a segment does not fit in guest RAM (or the file ends inside one)".into()
        }
        L::Elf(other) => format!("not a loadable 64-bit ELF ({other})"),
        other => format!("not a loadable 64-bit ELF ({other})"),
    }
}

/// Where to start the vCPU.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// 32-bit protected-mode entry point.
    pub rip: u64,
    /// Guest-physical address of `hvm_start_info`, passed in EBX.
    pub start_info: u64,
}

/// Loads `image` into `mem`, writes `cmdline` and the start_info. Guest RAM is `ram` bytes.
pub fn load_pvh(mem: &Memory, ram: u64, image: &Path, cmdline: &str) -> Result<Entry, Error> {
    let p = || image.to_owned();
    let mut file = File::open(image).map_err(|source| Error::Open { path: p(), source })?;
    let loaded = Elf::load(
        mem,
        None,
        &mut file,
        Some(GuestAddress(layout::HIMEM_START)),
    )
    .map_err(|e| Error::Elf {
        path: p(),
        why: elf_problem(&e),
    })?;
    let PvhBootCapability::PvhEntryPresent(entry) = loaded.pvh_boot_cap else {
        return Err(Error::NotPvh { path: p() });
    };

    let cmdline_err = |why: String| Error::Cmdline {
        len: cmdline.len(),
        why,
    };
    let mut cl = Cmdline::new(layout::CMDLINE_MAX).map_err(|e| cmdline_err(e.to_string()))?;
    cl.insert_str(cmdline)
        .map_err(|e| cmdline_err(e.to_string()))?;
    load_cmdline(mem, GuestAddress(layout::CMDLINE), &cl)
        .map_err(|e| cmdline_err(e.to_string()))?;

    let memmap = [
        hvm_memmap_table_entry {
            addr: 0,
            size: ram,
            type_: E820_RAM,
            reserved: 0,
        },
        hvm_memmap_table_entry {
            addr: layout::PCI_MMIO_START,
            size: layout::PCI_MMIO_SIZE,
            type_: E820_RESERVED,
            reserved: 0,
        },
    ];
    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: layout::CMDLINE,
        memmap_paddr: layout::MEMMAP,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let mut params = BootParams::new(&start_info, GuestAddress(layout::START_INFO));
    params.set_sections(&memmap, GuestAddress(layout::MEMMAP));
    PvhBootConfigurator::write_bootparams(&params, mem).map_err(Error::StartInfo)?;
    Ok(Entry {
        rip: entry.0,
        start_info: layout::START_INFO,
    })
}
