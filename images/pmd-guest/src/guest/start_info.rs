//! Reading the PVH `hvm_start_info` the VMM left for us.

/// `hvm_start_info` (xen/include/public/arch-x86/hvm/start_info.h), version 1.
#[repr(C)]
#[derive(Clone, Copy)]
struct HvmStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    type_: u32,
    reserved: u32,
}

const MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;
const MAX_CMDLINE: usize = 4096;

/// What the image needs from the start_info.
pub struct Info {
    pub cmdline: &'static str,
    /// Free RAM after the image: [free_start, free_end).
    pub free_start: u64,
    pub free_end: u64,
}

extern "C" {
    static __image_end: u8;
}

/// Decodes the start_info at `paddr`.
///
/// # Safety
///
/// `paddr` must be the address the VMM passed in EBX, identity mapped and not written while
/// the returned references live.
pub unsafe fn read(paddr: u64) -> Result<Info, &'static str> {
    // SAFETY: per the caller's contract the structure is mapped at `paddr`.
    let si = unsafe { (paddr as *const HvmStartInfo).read_volatile() };
    if si.magic != MAGIC {
        return Err("wrong magic");
    }
    let cmdline = if si.cmdline_paddr == 0 {
        ""
    } else {
        let p = si.cmdline_paddr as *const u8;
        // SAFETY: the VMM wrote a NUL-terminated string there; we read at most
        // MAX_CMDLINE bytes of identity-mapped RAM.
        let bytes = unsafe { core::slice::from_raw_parts(p, MAX_CMDLINE) };
        let len = bytes
            .iter()
            .position(|&b| b == 0)
            .ok_or("command line not terminated")?;
        core::str::from_utf8(&bytes[..len]).map_err(|_| "command line is not UTF-8")?
    };
    let image_end = core::ptr::addr_of!(__image_end) as u64;
    let mut free_end = 0;
    for i in 0..si.memmap_entries.min(128) as usize {
        // SAFETY: the VMM wrote `memmap_entries` entries at `memmap_paddr`.
        let e = unsafe {
            (si.memmap_paddr as *const MemmapEntry)
                .add(i)
                .read_volatile()
        };
        if e.type_ == E820_RAM && e.addr <= image_end && image_end < e.addr.saturating_add(e.size) {
            free_end = e.addr + e.size;
        }
    }
    if free_end == 0 {
        return Err("no RAM entry covers the image");
    }
    Ok(Info {
        cmdline,
        free_start: image_end,
        free_end,
    })
}
