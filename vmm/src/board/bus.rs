//! The port-I/O and MMIO buses both machines dispatch guest accesses to.
//!
//! Ports: COM1 at 0x3f8, PCI configuration at 0xcf8/0xcfc, the exit port and the harness
//! block (`pmd::harness`). MMIO: the PCI BARs. Accesses nothing claims read as all ones and
//! are otherwise ignored, as on a real bus; they are counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use device_model::virtio::Memory;
use pmd::harness::{reg, CONSOLE_MAX, EXIT_PORT, HARNESS_PORT, SERIAL_PORT};
use vm_memory::{Bytes, GuestAddress};

use crate::board::harness::Harness;
use crate::board::pci_bus::{PciBus, CONFIG_ADDRESS, IO_WINDOW_START};
use crate::board::serial::Uart;

/// What a port write asks of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PioEffect {
    Continue,
    /// The guest wrote its exit code.
    Exit(u32),
}

pub struct Bus {
    mem: Arc<Memory>,
    serial: Mutex<Uart>,
    /// Guest-physical address of the next harness console string.
    console_addr: AtomicU64,
    pub harness: Arc<Harness>,
    pci: Mutex<PciBus>,
    unclaimed: AtomicU64,
}

fn value(data: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    let n = data.len().min(4);
    b[..n].copy_from_slice(&data[..n]);
    u32::from_le_bytes(b)
}

impl Bus {
    pub fn new(mem: Arc<Memory>, serial: Uart, harness: Arc<Harness>, pci: PciBus) -> Self {
        Self {
            mem,
            serial: Mutex::new(serial),
            console_addr: AtomicU64::new(0),
            harness,
            pci: Mutex::new(pci),
            unclaimed: AtomicU64::new(0),
        }
    }

    pub fn pci(&self) -> MutexGuard<'_, PciBus> {
        self.pci.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serial(&self) -> MutexGuard<'_, Uart> {
        self.serial.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accesses that no device claimed.
    pub fn unclaimed(&self) -> u64 {
        self.unclaimed.load(Ordering::Relaxed)
    }

    fn unclaimed_access(&self, what: &str, addr: u64, len: usize) {
        self.unclaimed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("unclaimed {len}-byte {what} at {addr:#x}");
    }

    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        match port {
            SERIAL_PORT..=0x3ff => {
                let mut s = self.serial();
                for b in data.iter_mut() {
                    *b = s.read((port - SERIAL_PORT) as u8);
                }
            }
            CONFIG_ADDRESS..=0xcff => self.pci().pio_read(port, data),
            p if self.harness.range().contains(&p) => {
                let v = self.harness.read(p).to_le_bytes();
                for (i, b) in data.iter_mut().enumerate() {
                    *b = v.get(i).copied().unwrap_or(0);
                }
            }
            p if p >= IO_WINDOW_START && self.pci().bar_read(true, u64::from(p), data) => {}
            _ => {
                data.fill(0xff);
                self.unclaimed_access("port read", u64::from(port), data.len());
            }
        }
    }

    pub fn pio_write(&self, port: u16, data: &[u8]) -> PioEffect {
        match port {
            SERIAL_PORT..=0x3ff => {
                let mut s = self.serial();
                // `rep outsb` arrives as one access of several bytes: a string for THR.
                for &b in data {
                    if let Err(e) = s.write((port - SERIAL_PORT) as u8, b) {
                        tracing::debug!("serial: {e:?}");
                    }
                }
            }
            CONFIG_ADDRESS..=0xcff => self.pci().pio_write(port, data),
            EXIT_PORT => {
                let code = value(data);
                self.harness.exit(code);
                return PioEffect::Exit(code);
            }
            p if p == HARNESS_PORT + reg::CONSOLE_ADDR => {
                self.console_addr
                    .store(u64::from(value(data)), Ordering::Relaxed);
            }
            p if p == HARNESS_PORT + reg::CONSOLE_WRITE => self.console_write(value(data)),
            p if self.harness.range().contains(&p) => {
                self.harness.write(p, value(data));
            }
            p if p >= IO_WINDOW_START && self.pci().bar_write(true, u64::from(p), data) => {}
            _ => self.unclaimed_access("port write", u64::from(port), data.len()),
        }
        PioEffect::Continue
    }

    /// Appends `len` bytes of guest memory at the console address to the serial output,
    /// as if the guest had written them to the UART. Out-of-RAM or oversized strings are
    /// dropped and counted.
    fn console_write(&self, len: u32) {
        let addr = self.console_addr.load(Ordering::Relaxed);
        if len > CONSOLE_MAX {
            self.unclaimed_access("console string (too long)", addr, len as usize);
            return;
        }
        let mut buf = vec![0u8; len as usize];
        if self.mem.read_slice(&mut buf, GuestAddress(addr)).is_err() {
            self.unclaimed_access("console string (outside RAM)", addr, buf.len());
            return;
        }
        let mut s = self.serial();
        let w = s.writer_mut();
        let _ = std::io::Write::write_all(w, &buf);
    }

    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        if !self.pci().bar_read(false, addr, data) {
            data.fill(0xff);
            self.unclaimed_access("MMIO read", addr, data.len());
        }
    }

    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        if !self.pci().bar_write(false, addr, data) {
            self.unclaimed_access("MMIO write", addr, data.len());
        }
    }
}
