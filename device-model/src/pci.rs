//! PCI configuration space of a type-0 function: IDs, command register, BARs with sizing, and
//! a capability list. Only bits the PCI spec makes writable can be written.

/// Vendor-specific capability ID.
pub const CAP_ID_VENDOR: u8 = 0x09;
/// MSI-X capability ID.
pub const CAP_ID_MSIX: u8 = 0x11;

const COMMAND: usize = 0x04;
const STATUS_CAPABILITIES: u32 = 1 << 20;
const BAR0: usize = 0x10;
const CAPABILITIES_POINTER: usize = 0x34;
const FIRST_CAPABILITY: u8 = 0x40;
const CONFIG_SIZE: usize = 256;

/// Command register bits a device lets the driver change: I/O, memory, bus master and
/// INTx disable.
const COMMAND_WRITABLE: u32 = 0x0007 | 0x0400;

/// Kind of a base address register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Mem32,
    /// Takes this BAR and the next one.
    Mem64,
}

/// A BAR as currently programmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarRegion {
    pub index: u8,
    pub kind: BarKind,
    pub addr: u64,
    pub size: u64,
}

/// Identity of a function.
#[derive(Clone, Copy, Debug)]
pub struct PciIds {
    pub vendor: u16,
    pub device: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub revision: u8,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
}

/// What a VMM's PCI bus talks to.
pub trait PciDevice: Send {
    /// Reads the 32-bit configuration register containing `offset`.
    fn config_read(&mut self, offset: u16) -> u32;
    /// Writes `data` (1, 2 or 4 bytes, not crossing a dword) at `offset`.
    fn config_write(&mut self, offset: u16, data: &[u8]);
    /// BARs as currently programmed (address 0 means unassigned).
    fn bars(&self) -> Vec<BarRegion>;
    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]);
    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]);
}

/// The 256-byte configuration space and the write masks that protect it.
pub struct PciConfig {
    regs: [u32; CONFIG_SIZE / 4],
    writable: [u32; CONFIG_SIZE / 4],
    bars: [Option<(BarKind, u64)>; 6],
    last_cap: Option<u8>,
    next_cap: u8,
}

impl PciConfig {
    pub fn new(ids: PciIds) -> Self {
        let mut regs = [0u32; CONFIG_SIZE / 4];
        regs[0] = u32::from(ids.vendor) | u32::from(ids.device) << 16;
        regs[2] = u32::from(ids.revision)
            | u32::from(ids.prog_if) << 8
            | u32::from(ids.subclass) << 16
            | u32::from(ids.class) << 24;
        regs[0x2c / 4] = u32::from(ids.subsystem_vendor) | u32::from(ids.subsystem) << 16;
        let mut writable = [0u32; CONFIG_SIZE / 4];
        writable[COMMAND / 4] = COMMAND_WRITABLE;
        // Interrupt line: scratch for the OS.
        writable[0x3c / 4] = 0xff;
        Self {
            regs,
            writable,
            bars: [None; 6],
            last_cap: None,
            next_cap: FIRST_CAPABILITY,
        }
    }

    /// Declares BAR `index` of `size` bytes (a power of two) at `addr`.
    ///
    /// # Panics
    /// On a VMM programming error (bad index or size): never on guest input.
    pub fn add_bar(&mut self, index: u8, kind: BarKind, size: u64, addr: u64) {
        let i = usize::from(index);
        assert!(
            i < 6 && size.is_power_of_two(),
            "bad BAR {index} size {size:#x}"
        );
        assert!(
            kind != BarKind::Mem64 || i < 5,
            "64-bit BAR{index} has no upper half"
        );
        let (min, type_bits) = match kind {
            BarKind::Io => (4, 0x1),
            BarKind::Mem32 => (16, 0x0),
            BarKind::Mem64 => (16, 0x4),
        };
        let size = size.max(min);
        self.bars[i] = Some((kind, size));
        let mask = !(size - 1);
        self.writable[BAR0 / 4 + i] =
            (mask as u32) & !(if kind == BarKind::Io { 0x3 } else { 0xf });
        self.regs[BAR0 / 4 + i] = (addr as u32 & self.writable[BAR0 / 4 + i]) | type_bits;
        if kind == BarKind::Mem64 {
            self.writable[BAR0 / 4 + i + 1] = (mask >> 32) as u32;
            self.regs[BAR0 / 4 + i + 1] = (addr >> 32) as u32;
        }
    }

    /// Appends a capability. `body` starts with the capability ID; its "next" byte is filled
    /// in here. Returns the capability's offset.
    ///
    /// # Panics
    /// When the capabilities overflow the configuration space (a VMM programming error).
    pub fn add_capability(&mut self, body: &[u8]) -> u8 {
        let off = self.next_cap;
        let end = usize::from(off) + body.len();
        assert!(
            body.len() >= 2 && end <= CONFIG_SIZE,
            "capability does not fit"
        );
        for (i, &b) in body.iter().enumerate() {
            self.set_byte(usize::from(off) + i, b);
        }
        self.set_byte(usize::from(off) + 1, 0);
        match self.last_cap {
            None => {
                self.set_byte(CAPABILITIES_POINTER, off);
                self.regs[1] |= STATUS_CAPABILITIES;
            }
            Some(prev) => self.set_byte(usize::from(prev) + 1, off),
        }
        self.last_cap = Some(off);
        self.next_cap = ((end + 3) & !3) as u8;
        off
    }

    /// Lets the driver write the bits `mask` of the dword at `offset` (capability fields).
    pub fn set_writable(&mut self, offset: u16, mask: u32) {
        if let Some(w) = self.writable.get_mut(usize::from(offset) / 4) {
            *w = mask;
        }
    }

    fn set_byte(&mut self, off: usize, b: u8) {
        let shift = (off % 4) * 8;
        let r = &mut self.regs[off / 4];
        *r = (*r & !(0xff << shift)) | u32::from(b) << shift;
    }

    pub fn read(&self, offset: u16) -> u32 {
        self.regs.get(usize::from(offset) / 4).copied().unwrap_or(0)
    }

    /// Applies a guest write; bits outside the write mask keep their value. Accesses that
    /// are not 1, 2 or 4 bytes or cross a dword are ignored.
    pub fn write(&mut self, offset: u16, data: &[u8]) {
        let off = usize::from(offset);
        let len = data.len();
        if !matches!(len, 1 | 2 | 4) || off % 4 + len > 4 || off >= CONFIG_SIZE {
            return;
        }
        let shift = (off % 4) * 8;
        let mut value = 0u32;
        for (i, &b) in data.iter().enumerate() {
            value |= u32::from(b) << (8 * i);
        }
        let lane = if len == 4 {
            u32::MAX
        } else {
            ((1u32 << (8 * len)) - 1) << shift
        };
        let mask = self.writable[off / 4] & lane;
        let r = &mut self.regs[off / 4];
        *r = (*r & !mask) | ((value << shift) & mask);
    }

    /// The command register's memory-space enable bit.
    pub fn memory_enabled(&self) -> bool {
        self.regs[COMMAND / 4] & 0x2 != 0
    }

    /// The command register's I/O-space enable bit.
    pub fn io_enabled(&self) -> bool {
        self.regs[COMMAND / 4] & 0x1 != 0
    }

    /// Every declared BAR with its current address.
    pub fn bars(&self) -> Vec<BarRegion> {
        self.bars
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let (kind, size) = (*b)?;
                let low = u64::from(self.regs[BAR0 / 4 + i]);
                let addr = match kind {
                    BarKind::Io => low & !0x3,
                    BarKind::Mem32 => low & !0xf,
                    BarKind::Mem64 => (low & !0xf) | u64::from(self.regs[BAR0 / 4 + i + 1]) << 32,
                };
                Some(BarRegion {
                    index: i as u8,
                    kind,
                    addr,
                    size,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> PciIds {
        PciIds {
            vendor: 0x1af4,
            device: 0x1041,
            class: 2,
            subclass: 0,
            prog_if: 0,
            revision: 1,
            subsystem_vendor: 0x1af4,
            subsystem: 1,
        }
    }

    #[test]
    fn bar_sizing_reads_back_the_size_mask() {
        let mut c = PciConfig::new(ids());
        c.add_bar(4, BarKind::Mem64, 0x4000, 0xd000_0000);
        assert_eq!(c.read(0x20), 0xd000_0004);
        c.write(0x20, &u32::MAX.to_le_bytes());
        c.write(0x24, &u32::MAX.to_le_bytes());
        assert_eq!(c.read(0x20), 0xffff_c004);
        assert_eq!(c.read(0x24), 0xffff_ffff);
        c.write(0x20, &0xe000_0000u32.to_le_bytes());
        c.write(0x24, &0u32.to_le_bytes());
        assert_eq!(c.bars()[0].addr, 0xe000_0000);
    }

    #[test]
    fn read_only_fields_ignore_writes() {
        let mut c = PciConfig::new(ids());
        c.write(0, &[0, 0, 0, 0]);
        assert_eq!(c.read(0), 0x1041_1af4);
        c.write(4, &[0xff, 0xff]);
        assert_eq!(c.read(4) & 0xffff, 0x0407);
        // Unaligned or oversized accesses change nothing.
        c.write(3, &[1, 2]);
        c.write(0x3c, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(c.read(0x3c), 0);
    }

    #[test]
    fn capabilities_are_chained() {
        let mut c = PciConfig::new(ids());
        let a = c.add_capability(&[CAP_ID_VENDOR, 0, 16, 1, 4, 0, 0, 0]);
        let b = c.add_capability(&[CAP_ID_MSIX, 0, 0, 0]);
        assert_eq!(c.read(0x34) as u8, a);
        assert_eq!((c.read(u16::from(a)) >> 8) as u8, b);
        assert_eq!((c.read(u16::from(b)) >> 8) as u8, 0);
        assert_ne!(c.read(4) & STATUS_CAPABILITIES, 0);
    }
}
