//! What both machines share: guest RAM, the buses, the serial port, the harness ports and
//! the virtio-net PCI function with its backend.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use device_model::endpoint::{Sink, Source};
use device_model::net::{Net, NetConfig, NetStats};
use device_model::virtio::{Memory, MsiMessage, MsiSink};
use device_model::virtio_pci::{Options, VirtioPciDevice};
use vm_memory::GuestAddress;

use crate::bus::Bus;
use crate::harness::Harness;
use crate::layout;
use crate::pci_bus::PciBus;
use crate::serial::{self, Echo};

pub type NetFunction = VirtioPciDevice<Net>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("guest RAM of {ram} bytes: must be {min} to {max} bytes, a multiple of 4 KiB")]
    RamSize { ram: u64, min: u64, max: u64 },
    #[error("allocating {ram} bytes of guest RAM: {source}")]
    Memory {
        ram: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("creating the virtio-net function: {0}")]
    Net(#[from] device_model::virtio_pci::Error),
    #[error("plugging the virtio-net function: {0}")]
    Pci(#[from] crate::pci_bus::Error),
}

/// Counts MSI messages by vector: the in-process machine's interrupt controller. The
/// driver thread reads the counts (`Hal::interrupt_count`) instead of taking interrupts.
#[derive(Debug)]
pub struct MsiCounter {
    counts: [AtomicU32; 256],
}

impl Default for MsiCounter {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

impl MsiCounter {
    pub fn count(&self, vector: u8) -> u32 {
        self.counts[usize::from(vector)].load(Ordering::Acquire)
    }
}

impl MsiSink for MsiCounter {
    fn send(&self, msg: MsiMessage) {
        // x86 MSI: the vector is the low byte of the data.
        self.counts[(msg.data & 0xff) as usize].fetch_add(1, Ordering::AcqRel);
    }
}

/// Everything a board is built from besides its endpoints and interrupt sink.
#[derive(Clone, Debug)]
pub struct BoardConfig {
    /// Guest RAM in bytes.
    pub ram: u64,
    pub net: NetConfig,
    pub transport: Options,
}

pub struct Board {
    pub mem: Arc<Memory>,
    pub bus: Arc<Bus>,
    pub net: Arc<Mutex<NetFunction>>,
    pub net_stats: Arc<NetStats>,
    pub serial_log: Arc<Mutex<Vec<u8>>>,
    pub ram: u64,
}

impl Board {
    pub fn new(
        cfg: &BoardConfig,
        source: Box<dyn Source>,
        sink: Box<dyn Sink>,
        msi: Arc<dyn MsiSink>,
        echo: Echo,
    ) -> Result<Self, Error> {
        let ram = cfg.ram;
        if !(layout::MIN_RAM..=layout::MAX_RAM).contains(&ram) || ram % 4096 != 0 {
            return Err(Error::RamSize {
                ram,
                min: layout::MIN_RAM,
                max: layout::MAX_RAM,
            });
        }
        let mem = Memory::from_ranges(&[(GuestAddress(0), ram as usize)])
            .map_err(|source| Error::Memory { ram, source })?;
        let mem = Arc::new(mem);
        let net = Net::new(cfg.net.clone(), source, sink);
        let net_stats = net.stats();
        let net_shared = net.shared();
        let net = VirtioPciDevice::new(net, mem.clone(), msi, cfg.transport)?;
        let net = Arc::new(Mutex::new(net));
        let mut pci = PciBus::new(layout::PCI_MMIO_START, layout::PCI_MMIO_SIZE);
        pci.add(net.clone())?;
        let (uart, serial_log) = serial::uart(echo);
        let harness = Arc::new(Harness::new(net_stats.clone(), net_shared));
        let bus = Arc::new(Bus::new(mem.clone(), uart, harness, pci));
        Ok(Self {
            mem,
            bus,
            net,
            net_stats,
            serial_log,
            ram,
        })
    }

    pub fn net(&self) -> std::sync::MutexGuard<'_, NetFunction> {
        self.net.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything the guest printed so far.
    pub fn serial_log(&self) -> Vec<u8> {
        self.serial_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
