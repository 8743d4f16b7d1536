//! PCI configuration space through configuration mechanism #1 (ports 0xCF8/0xCFC), and the
//! pieces of it a virtio driver needs: finding a function, reading BARs, walking capabilities.

use core::cell::Cell;

use crate::hal::{Hal, Width};

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;

pub const VENDOR_ID: u16 = 0x00;
pub const DEVICE_ID: u16 = 0x02;
pub const COMMAND: u16 = 0x04;
pub const STATUS: u16 = 0x06;
pub const HEADER_TYPE: u16 = 0x0e;
pub const BAR0: u16 = 0x10;
pub const CAPABILITIES_POINTER: u16 = 0x34;

pub const COMMAND_IO: u16 = 1 << 0;
pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
pub const STATUS_CAPABILITIES: u16 = 1 << 4;

pub const CAP_ID_VENDOR: u8 = 0x09;
pub const CAP_ID_MSIX: u8 = 0x11;

/// Bus/device/function of a PCI function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bdf {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl core::fmt::Display for Bdf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("PCI {bdf}: BAR{bar} is not implemented")]
    NoBar { bdf: Bdf, bar: u8 },
    #[error("PCI {bdf}: BAR{bar} is a 64-bit BAR with no upper half")]
    Bar64AtEnd { bdf: Bdf, bar: u8 },
    #[error("PCI {bdf}: capability list loops or leaves the configuration space")]
    BadCapabilityList { bdf: Bdf },
}

/// One decoded base address register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bar {
    Memory { addr: u64 },
    Io { port: u16 },
}

/// Configuration-space access to one function.
pub struct ConfigSpace<'a, H: Hal> {
    hal: &'a H,
    pub bdf: Bdf,
    /// Where [`ConfigSpace::bar`] places a BAR it finds unassigned.
    windows: Cell<Windows>,
}

impl<'a, H: Hal> ConfigSpace<'a, H> {
    pub fn new(hal: &'a H, bdf: Bdf) -> Self {
        Self {
            hal,
            bdf,
            windows: Cell::new(Windows::PC),
        }
    }

    fn select(&self, offset: u16) {
        let addr = 0x8000_0000
            | u32::from(self.bdf.bus) << 16
            | u32::from(self.bdf.device & 0x1f) << 11
            | u32::from(self.bdf.function & 0x7) << 8
            | u32::from(offset & 0xfc);
        self.hal.pio_write(CONFIG_ADDRESS, Width::U32, addr);
    }

    pub fn read32(&self, offset: u16) -> u32 {
        self.select(offset);
        self.hal.pio_read(CONFIG_DATA, Width::U32)
    }

    pub fn read16(&self, offset: u16) -> u16 {
        (self.read32(offset) >> ((offset & 2) * 8)) as u16
    }

    pub fn read8(&self, offset: u16) -> u8 {
        (self.read32(offset) >> ((offset & 3) * 8)) as u8
    }

    pub fn write32(&self, offset: u16, value: u32) {
        self.select(offset);
        self.hal.pio_write(CONFIG_DATA, Width::U32, value);
    }

    pub fn write16(&self, offset: u16, value: u16) {
        self.select(offset);
        self.hal
            .pio_write(CONFIG_DATA + (offset & 2), Width::U16, u32::from(value));
    }

    /// Reads BAR `bar` as the firmware or VMM left it; one left unassigned (zero) is given
    /// an address first, the way firmware does. A VMM that assigns BARs itself (vlab) leaves
    /// nothing to do; QEMU booting a PVH kernel with qboot leaves them all at zero.
    pub fn bar(&self, bar: u8) -> Result<Bar, Error> {
        let b = self.read_bar(bar)?;
        let unassigned = match b {
            Bar::Memory { addr } => addr == 0,
            Bar::Io { port } => port == 0,
        };
        if !unassigned {
            return Ok(b);
        }
        self.assign(bar, matches!(b, Bar::Io { .. }))?;
        self.read_bar(bar)
    }

    /// Sizes BAR `bar` (all ones written, the mask read back) and places it aligned to its
    /// size in the windows. A BAR the windows cannot hold stays unassigned.
    fn assign(&self, bar: u8, io: bool) -> Result<(), Error> {
        let off = BAR0 + u16::from(bar) * 4;
        let low = self.read32(off);
        let wide = !io && (low >> 1) & 3 == 2;
        let cmd = self.read16(COMMAND);
        // No decoding while the BAR goes through all ones.
        self.write16(COMMAND, cmd & !(COMMAND_IO | COMMAND_MEMORY));
        self.write32(off, u32::MAX);
        let mut mask = u64::from(self.read32(off) & if io { !3 } else { !0xf });
        mask |= if wide {
            self.write32(off + 4, u32::MAX);
            u64::from(self.read32(off + 4)) << 32
        } else if io {
            0xffff_ffff_ffff_0000
        } else {
            0xffff_ffff_0000_0000
        };
        let size = (!mask).wrapping_add(1);
        let mut w = self.windows.get();
        let place = if size == 0 || size > 1 << 32 {
            None
        } else if io {
            let mut next = u64::from(w.io);
            let a = Windows::take(&mut next, u64::from(w.io_end), size);
            w.io = next as u32;
            a
        } else {
            Windows::take(&mut w.mem, w.mem_end, size)
        };
        self.windows.set(w);
        let a = place.unwrap_or(0);
        self.write32(off, a as u32);
        if wide {
            self.write32(off + 4, (a >> 32) as u32);
        }
        self.write16(COMMAND, cmd);
        Ok(())
    }

    fn read_bar(&self, bar: u8) -> Result<Bar, Error> {
        let bdf = self.bdf;
        if bar > 5 {
            return Err(Error::NoBar { bdf, bar });
        }
        let offset = BAR0 + u16::from(bar) * 4;
        let low = self.read32(offset);
        if low & 1 == 1 {
            return Ok(Bar::Io {
                port: (low & 0xfffc) as u16,
            });
        }
        let addr = u64::from(low & !0xf);
        match (low >> 1) & 3 {
            0 => Ok(Bar::Memory { addr }),
            2 if bar < 5 => {
                let high = u64::from(self.read32(offset + 4));
                Ok(Bar::Memory {
                    addr: addr | high << 32,
                })
            }
            2 => Err(Error::Bar64AtEnd { bdf, bar }),
            _ => Err(Error::NoBar { bdf, bar }),
        }
    }

    /// Sets bits in the command register.
    pub fn enable(&self, bits: u16) {
        let cmd = self.read16(COMMAND);
        self.write16(COMMAND, cmd | bits);
    }

    /// Walks the capability list, calling `f(offset, id)` for each entry. A list that loops or
    /// points outside the header gives an error instead of spinning.
    pub fn for_each_capability(&self, mut f: impl FnMut(u16, u8)) -> Result<(), Error> {
        if self.read16(STATUS) & STATUS_CAPABILITIES == 0 {
            return Ok(());
        }
        let mut ptr = u16::from(self.read8(CAPABILITIES_POINTER)) & !3;
        // The callback may read more of each capability; the walk itself reads one dword
        // per entry (id and next pointer).
        // A capability takes at least 4 bytes of the 192 after the header: 48 entries at most.
        for _ in 0..48 {
            if ptr == 0 {
                return Ok(());
            }
            if ptr < 0x40 {
                break;
            }
            let header = self.read16(ptr);
            f(ptr, header as u8);
            ptr = (header >> 8) & !3;
        }
        Err(Error::BadCapabilityList { bdf: self.bdf })
    }
}

impl<H: Hal> ConfigSpace<'_, H> {
    /// Offset of the first capability with ID `id`.
    pub fn find_capability(&self, id: u8) -> Result<Option<u16>, Error> {
        let mut found = None;
        self.for_each_capability(|ptr, cap| {
            if cap == id && found.is_none() {
                found = Some(ptr);
            }
        })?;
        Ok(found)
    }
}

/// Address ranges a driver may give unassigned BARs, as firmware would.
#[derive(Clone, Copy, Debug)]
pub struct Windows {
    pub mem: u64,
    pub mem_end: u64,
    pub io: u32,
    pub io_end: u32,
}

impl Windows {
    /// The PC's 32-bit PCI hole above 3 GiB and the top quarter of the port space, where a
    /// q35 machine's firmware would put them.
    pub const PC: Windows = Windows {
        mem: 0xc000_0000,
        mem_end: 0xfec0_0000,
        io: 0xc000,
        io_end: 0x1_0000,
    };

    fn take(next: &mut u64, end: u64, size: u64) -> Option<u64> {
        let addr = next.checked_add(size - 1)? & !(size - 1);
        let top = addr.checked_add(size)?;
        (top <= end).then(|| {
            *next = top;
            addr
        })
    }
}

impl<H: Hal> ConfigSpace<'_, H> {
    /// The raw BAR registers, for logs.
    pub fn raw_bars(&self) -> [u32; 6] {
        core::array::from_fn(|i| self.read32(BAR0 + 4 * i as u16))
    }
}

/// Calls `f` for every function on bus 0 that answers, with its vendor and device IDs, until
/// `f` returns `Some`.
pub fn find_on_bus0<H: Hal, T>(
    hal: &H,
    mut f: impl FnMut(Bdf, u16, u16) -> Option<T>,
) -> Option<T> {
    for device in 0..32u8 {
        for function in 0..8u8 {
            let bdf = Bdf {
                bus: 0,
                device,
                function,
            };
            let cfg = ConfigSpace::new(hal, bdf);
            let id = cfg.read32(VENDOR_ID);
            let vendor = id as u16;
            if vendor == 0xffff {
                if function == 0 {
                    break;
                }
                continue;
            }
            if let Some(found) = f(bdf, vendor, (id >> 16) as u16) {
                return Some(found);
            }
            // Functions other than 0 exist only on multi-function devices.
            if function == 0 && cfg.read8(HEADER_TYPE) & 0x80 == 0 {
                break;
            }
        }
    }
    None
}
