//! PCI bus 0: configuration mechanism #1 (0xCF8 address, 0xCFC-0xCFF data), a host bridge,
//! and the routing of memory BARs to their functions. `vlab` plays firmware and assigns BAR
//! addresses before the guest starts; a guest may move them, and the routes follow.

use std::sync::{Arc, Mutex};

use device_model::pci::{BarKind, PciConfig, PciDevice, PciIds};

pub const CONFIG_ADDRESS: u16 = 0xcf8;
pub const CONFIG_DATA: u16 = 0xcfc;
/// Where I/O BARs go (legacy virtio interfaces): the top of the port space, as on a PC.
pub const IO_WINDOW_START: u16 = 0xc000;
pub const IO_WINDOW_END: u32 = 0x1_0000;

/// A PCI function on the bus, shared with whoever else needs it (the VMM keeps the
/// virtio-net function to shut its backend down).
pub type SharedDevice = Arc<Mutex<dyn PciDevice>>;

#[derive(Clone, Copy, Debug)]
struct Route {
    io: bool,
    start: u64,
    len: u64,
    slot: usize,
    bar: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("PCI bus 0 is full (32 devices)")]
    Full,
    #[error("no room for a {size:#x}-byte BAR in the PCI MMIO window")]
    WindowFull { size: u64 },
    #[error("no room for a {size:#x}-byte I/O BAR in the PCI I/O window")]
    IoWindowFull { size: u64 },
}

/// The PCI host bridge at 00:00.0, so the bus looks like a real one to a guest.
struct HostBridge(PciConfig);

impl PciDevice for HostBridge {
    fn config_read(&mut self, offset: u16) -> u32 {
        self.0.read(offset)
    }
    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.0.write(offset, data);
    }
    fn bars(&self) -> Vec<device_model::pci::BarRegion> {
        Vec::new()
    }
    fn bar_read(&mut self, _bar: u8, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn bar_write(&mut self, _bar: u8, _offset: u64, _data: &[u8]) {}
}

pub struct PciBus {
    address: u32,
    slots: Vec<SharedDevice>,
    routes: Vec<Route>,
    next_mmio: u64,
    mmio_end: u64,
    next_io: u32,
    routes_changed: bool,
}

fn lock(d: &SharedDevice) -> std::sync::MutexGuard<'_, dyn PciDevice + 'static> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}

impl PciBus {
    /// A bus with a host bridge; BARs are allocated from `[mmio_start, mmio_start + size)`.
    pub fn new(mmio_start: u64, mmio_size: u64) -> Self {
        let bridge = HostBridge(PciConfig::new(PciIds {
            // QEMU's generic PCIe host bridge (gpex): a well-known, driverless ID.
            vendor: 0x1b36,
            device: 0x0008,
            class: 0x06,
            subclass: 0x00,
            prog_if: 0,
            revision: 0,
            subsystem_vendor: 0x1af4,
            subsystem: 0x1100,
        }));
        Self {
            address: 0,
            slots: vec![Arc::new(Mutex::new(bridge))],
            routes: Vec::new(),
            next_mmio: mmio_start,
            mmio_end: mmio_start + mmio_size,
            next_io: u32::from(IO_WINDOW_START),
            routes_changed: false,
        }
    }

    /// Plugs `dev` into the next free slot and assigns its memory BARs, as firmware would.
    /// Returns the device number.
    pub fn add(&mut self, dev: SharedDevice) -> Result<u8, Error> {
        if self.slots.len() >= 32 {
            return Err(Error::Full);
        }
        let slot = self.slots.len();
        {
            let mut d = lock(&dev);
            for bar in d.bars() {
                let off = 0x10 + 4 * u16::from(bar.index);
                if bar.kind == BarKind::Io {
                    let size = bar.size as u32;
                    let addr = (self.next_io + size - 1) & !(size - 1);
                    if addr + size > IO_WINDOW_END {
                        return Err(Error::IoWindowFull { size: bar.size });
                    }
                    self.next_io = addr + size;
                    d.config_write(off, &addr.to_le_bytes());
                    continue;
                }
                let addr = (self.next_mmio + bar.size - 1) & !(bar.size - 1);
                if addr + bar.size > self.mmio_end {
                    return Err(Error::WindowFull { size: bar.size });
                }
                self.next_mmio = addr + bar.size;
                d.config_write(off, &(addr as u32).to_le_bytes());
                if bar.kind == BarKind::Mem64 {
                    d.config_write(off + 4, &((addr >> 32) as u32).to_le_bytes());
                }
            }
        }
        self.slots.push(dev);
        self.refresh_routes(slot);
        Ok(slot as u8)
    }

    /// Whether any BAR moved since the last call (the KVM machine then re-registers its
    /// ioeventfds).
    pub fn take_routes_changed(&mut self) -> bool {
        std::mem::take(&mut self.routes_changed)
    }

    fn refresh_routes(&mut self, slot: usize) {
        let before: Vec<Route> = self
            .routes
            .iter()
            .filter(|r| r.slot == slot)
            .copied()
            .collect();
        self.routes.retain(|r| r.slot != slot);
        for bar in lock(&self.slots[slot]).bars() {
            let io = bar.kind == BarKind::Io;
            let limit = if io {
                u64::from(IO_WINDOW_END)
            } else {
                u64::MAX
            };
            // Unassigned BARs, and BARs mid-sizing (all ones), are not routed.
            if bar.addr == 0 || bar.addr.checked_add(bar.size).is_none_or(|end| end > limit) {
                continue;
            }
            self.routes.push(Route {
                io,
                start: bar.addr,
                len: bar.size,
                slot,
                bar: bar.index,
            });
        }
        let after: Vec<Route> = self
            .routes
            .iter()
            .filter(|r| r.slot == slot)
            .copied()
            .collect();
        if before.len() != after.len()
            || before
                .iter()
                .zip(&after)
                .any(|(a, b)| a.start != b.start || a.bar != b.bar)
        {
            self.routes_changed = true;
        }
    }

    /// The function selected by the address register, and the register offset.
    fn selected(&self) -> Option<(usize, u16)> {
        let a = self.address;
        let enabled = a & 0x8000_0000 != 0;
        let bus = (a >> 16) & 0xff;
        let device = ((a >> 11) & 0x1f) as usize;
        let function = (a >> 8) & 0x7;
        if !enabled || bus != 0 || function != 0 || device >= self.slots.len() {
            return None;
        }
        Some((device, (a & 0xfc) as u16))
    }

    pub fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        match port {
            CONFIG_ADDRESS if data.len() == 4 => data.copy_from_slice(&self.address.to_le_bytes()),
            CONFIG_DATA..=0xcff => {
                let lane = usize::from(port - CONFIG_DATA);
                let value = match self.selected() {
                    Some((slot, reg)) => lock(&self.slots[slot]).config_read(reg),
                    // No function there: all ones, as the bus would answer.
                    None => u32::MAX,
                };
                let bytes = value.to_le_bytes();
                for (i, b) in data.iter_mut().enumerate() {
                    *b = bytes.get(lane + i).copied().unwrap_or(0xff);
                }
            }
            _ => data.fill(0xff),
        }
    }

    pub fn pio_write(&mut self, port: u16, data: &[u8]) {
        match port {
            CONFIG_ADDRESS if data.len() == 4 => {
                self.address = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            }
            CONFIG_DATA..=0xcff => {
                let lane = port - CONFIG_DATA;
                if usize::from(lane) + data.len() > 4 {
                    return;
                }
                if let Some((slot, reg)) = self.selected() {
                    lock(&self.slots[slot]).config_write(reg + lane, data);
                    self.refresh_routes(slot);
                }
            }
            _ => {}
        }
    }

    fn route(&self, io: bool, addr: u64) -> Option<(Route, u64)> {
        self.routes
            .iter()
            .find(|r| r.io == io && addr >= r.start && addr - r.start < r.len)
            .map(|r| (*r, addr - r.start))
    }

    /// Reads a memory (`io` false) or I/O BAR. Returns `false` when no BAR covers `addr`.
    pub fn bar_read(&self, io: bool, addr: u64, data: &mut [u8]) -> bool {
        let Some((r, off)) = self.route(io, addr) else {
            return false;
        };
        lock(&self.slots[r.slot]).bar_read(r.bar, off, data);
        true
    }

    /// Writes a memory or I/O BAR. Returns `false` when no BAR covers `addr`.
    pub fn bar_write(&self, io: bool, addr: u64, data: &[u8]) -> bool {
        let Some((r, off)) = self.route(io, addr) else {
            return false;
        };
        lock(&self.slots[r.slot]).bar_write(r.bar, off, data);
        true
    }
}
