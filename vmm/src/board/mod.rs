//! What both machines share: guest RAM, the buses, the serial port, the harness ports and
//! the virtio-net PCI function with its backend.

pub mod bus;
pub mod harness;
pub mod layout;
pub mod pci_bus;
pub mod serial;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use std::fs::File;
use std::os::fd::FromRawFd;

use device_model::net::{Backend, Net, NetConfig, NetStats};
use device_model::virtio::{Memory, MsiMessage, MsiSink};
use device_model::virtio_pci::{Options, VirtioPciDevice};
use vm_memory::{FileOffset, GuestAddress};

use self::bus::Bus;
use self::harness::{Harness, HarnessPort};

use self::serial::Echo;
use crate::board::pci_bus::PciBus;

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
    #[error("creating a memfd of {ram} bytes for guest RAM: {source}")]
    Memfd {
        ram: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the virtio-net function: {0}")]
    Net(#[from] device_model::virtio_pci::Error),
    #[error("plugging the virtio-net function: {0}")]
    Pci(#[from] crate::board::pci_bus::Error),
    #[error("{functions} virtio-net functions but {backends} backends")]
    Backends { functions: usize, backends: usize },
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

/// One virtio-net function as the board is built with it.
#[derive(Clone, Debug)]
pub struct NetPortConfig {
    pub net: NetConfig,
    pub transport: Options,
}

/// Everything a board is built from besides its backends and interrupt sink.
#[derive(Clone, Debug)]
pub struct BoardConfig {
    /// Guest RAM in bytes.
    pub ram: u64,
    /// The virtio-net functions, in slot order.
    pub nets: Vec<NetPortConfig>,
}

/// One virtio-net function on the board.
pub struct NetPort {
    pub function: Arc<Mutex<NetFunction>>,
    pub stats: Arc<NetStats>,
}

impl NetPort {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, NetFunction> {
        self.function.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Board {
    pub mem: Arc<Memory>,
    pub bus: Arc<Bus>,
    /// The virtio-net functions, in slot order (at least one).
    pub nets: Vec<NetPort>,
    pub serial_log: Arc<Mutex<Vec<u8>>>,
    pub ram: u64,
}

/// Guest RAM of `ram` bytes at address 0, in a memfd: a vhost-user backend maps the same
/// pages from the descriptor.
pub fn guest_memory(ram: u64) -> Result<Arc<Memory>, Error> {
    if !(layout::MIN_RAM..=layout::MAX_RAM).contains(&ram) || ram % 4096 != 0 {
        return Err(Error::RamSize {
            ram,
            min: layout::MIN_RAM,
            max: layout::MAX_RAM,
        });
    }
    let memfd = |source| Error::Memfd { ram, source };
    // SAFETY: memfd_create reads a NUL-terminated name, which the literal is.
    let fd = unsafe { libc::memfd_create(c"vlab-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(ram).map_err(memfd)?;
    let mem = Memory::from_ranges_with_files([(
        GuestAddress(0),
        ram as usize,
        Some(FileOffset::new(file, 0)),
    )])
    .map_err(|source| Error::Memory { ram, source })?;
    Ok(Arc::new(mem))
}

impl Board {
    /// A board on guest RAM `mem` (from [`guest_memory`]) with a virtio-net function per
    /// entry of `cfg.nets`, whose data queues the backend of the same index serves.
    pub fn new(
        cfg: &BoardConfig,
        mem: Arc<Memory>,
        backends: Vec<Backend>,
        msi: Arc<dyn MsiSink>,
        echo: Echo,
    ) -> Result<Self, Error> {
        if backends.len() != cfg.nets.len() || backends.is_empty() {
            return Err(Error::Backends {
                functions: cfg.nets.len(),
                backends: backends.len(),
            });
        }
        let mut pci = PciBus::new(layout::PCI_MMIO_START, layout::PCI_MMIO_SIZE);
        let mut nets = Vec::new();
        let mut blocks = Vec::new();
        for (port, backend) in cfg.nets.iter().zip(backends) {
            let net = Net::with_backend(port.net.clone(), backend);
            let stats = net.stats();
            blocks.push(HarnessPort {
                stats: stats.clone(),
                shared: net.shared(),
            });
            let function = VirtioPciDevice::new(net, mem.clone(), msi.clone(), port.transport)?;
            let function = Arc::new(Mutex::new(function));
            pci.add(function.clone())?;
            nets.push(NetPort { function, stats });
        }
        let (uart, serial_log) = serial::uart(echo);
        let harness = Arc::new(Harness::new(blocks));
        let bus = Arc::new(Bus::new(mem.clone(), uart, harness, pci));
        Ok(Self {
            mem,
            bus,
            nets,
            serial_log,
            ram: cfg.ram,
        })
    }

    /// The first virtio-net function (the only one of a one-port run).
    pub fn net(&self) -> std::sync::MutexGuard<'_, NetFunction> {
        self.nets[0].lock()
    }

    /// Everything the guest printed so far.
    pub fn serial_log(&self) -> Vec<u8> {
        self.serial_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
