//! The legacy virtio PCI interface (virtio 1.x, 4.1.4.8): registers in an I/O BAR, reached
//! with port I/O, as DPDK's virtio PMD does when no uio module maps memory BARs. Features are
//! 32 bits (no VERSION_1), there is no FEATURES_OK step, queue sizes are fixed by the device
//! and each ring sits at one page frame in the legacy layout.

use alloc::vec::Vec;

use super::{Error, Kind, QueueAddrs, Transport};
use crate::hal::{Hal, Width};
use crate::msix::NO_VECTOR;
use crate::pci::{self, Bar, ConfigSpace};

/// Register offsets in the I/O BAR.
mod reg {
    pub const HOST_FEATURES: u16 = 0x00;
    pub const GUEST_FEATURES: u16 = 0x04;
    pub const QUEUE_PFN: u16 = 0x08;
    pub const QUEUE_NUM: u16 = 0x0c;
    pub const QUEUE_SEL: u16 = 0x0e;
    pub const QUEUE_NOTIFY: u16 = 0x10;
    pub const STATUS: u16 = 0x12;
    /// Present only while MSI-X is enabled; the device configuration follows them.
    pub const MSIX_CONFIG: u16 = 0x14;
    pub const MSIX_QUEUE: u16 = 0x16;
    pub const CONFIG: u16 = 0x14;
    pub const CONFIG_MSIX: u16 = 0x18;
}

const PAGE: u64 = 4096;

pub struct LegacyTransport<'a, H: Hal> {
    hal: &'a H,
    base: u16,
    msix_enabled: bool,
    num_queues: u16,
    sizes: Vec<u16>,
}

impl<'a, H: Hal> LegacyTransport<'a, H> {
    /// Uses BAR0, which a transitional device makes its legacy I/O BAR. Enables I/O decoding
    /// and bus mastering. Whether MSI-X is enabled decides where the device configuration
    /// sits, so enable it (or not) before probing.
    pub fn probe(hal: &'a H, cfg: &ConfigSpace<'a, H>) -> Result<Self, Error> {
        let base = match cfg.bar(0)? {
            Bar::Io { port } if port != 0 => port,
            _ => return Err(Error::NoLegacyBar),
        };
        cfg.enable(pci::COMMAND_IO | pci::COMMAND_BUS_MASTER);
        let msix_enabled = cfg
            .find_capability(pci::CAP_ID_MSIX)?
            .is_some_and(|cap| cfg.read16(cap + 2) & 0x8000 != 0);
        Ok(Self {
            hal,
            base,
            msix_enabled,
            num_queues: 0,
            sizes: Vec::new(),
        })
    }

    /// The I/O BAR's first port: for a driver that accesses its registers at odd offsets
    /// and widths on purpose ([`crate::hostile`]).
    #[doc(hidden)]
    pub fn io_base(&self) -> u16 {
        self.base
    }

    fn r(&self, off: u16, width: Width) -> u32 {
        self.hal.pio_read(self.base + off, width)
    }

    fn w(&self, off: u16, width: Width, v: u32) {
        self.hal.pio_write(self.base + off, width, v)
    }

    fn queue_num(&self, queue: u16) -> u16 {
        self.w(reg::QUEUE_SEL, Width::U16, u32::from(queue));
        self.r(reg::QUEUE_NUM, Width::U16) as u16
    }
}

impl<H: Hal> Transport for LegacyTransport<'_, H> {
    fn reset(&mut self) {
        self.set_status(0);
        while self.status() != 0 {
            self.hal.relax();
        }
        // The legacy interface has no queue count: a queue exists while its size is non-zero.
        self.sizes.clear();
        let mut q = 0;
        while q < 64 {
            let n = self.queue_num(q);
            if n == 0 {
                break;
            }
            self.sizes.push(n);
            q += 1;
        }
        self.num_queues = q;
    }

    fn status(&self) -> u8 {
        self.r(reg::STATUS, Width::U8) as u8
    }

    fn set_status(&mut self, status: u8) {
        self.w(reg::STATUS, Width::U8, u32::from(status));
    }

    fn device_features(&self) -> u64 {
        u64::from(self.r(reg::HOST_FEATURES, Width::U32))
    }

    fn set_driver_features(&mut self, features: u64) {
        self.w(reg::GUEST_FEATURES, Width::U32, features as u32);
    }

    fn num_queues(&self) -> u16 {
        self.num_queues
    }

    fn queue_max_size(&self, queue: u16) -> u16 {
        self.sizes.get(usize::from(queue)).copied().unwrap_or(0)
    }

    fn set_queue_size(&mut self, queue: u16, _size: u16) -> u16 {
        // QUEUE_NUM is read-only: the legacy size is the device's.
        self.queue_max_size(queue)
    }

    fn setup_queue(
        &mut self,
        queue: u16,
        size: u16,
        addrs: QueueAddrs,
        msix_vector: u16,
    ) -> Result<(), Error> {
        let num_queues = self.num_queues;
        if queue >= num_queues {
            return Err(Error::NoSuchQueue { queue, num_queues });
        }
        let got = self.queue_max_size(queue);
        if got != size {
            return Err(Error::QueueSizeRefused { queue, size, got });
        }
        // 2.7.2 legacy layout: descriptors, available ring, then the used ring on the next
        // page; the device is told only the first page frame.
        let n = u64::from(size);
        let used = (addrs.desc + 16 * n + 6 + 2 * n + PAGE - 1) & !(PAGE - 1);
        let pfn = addrs.desc / PAGE;
        if addrs.desc % PAGE != 0
            || addrs.avail != addrs.desc + 16 * n
            || addrs.used != used
            || pfn > u64::from(u32::MAX)
        {
            return Err(Error::LegacyLayout { queue });
        }
        self.w(reg::QUEUE_SEL, Width::U16, u32::from(queue));
        if self.msix_enabled {
            self.w(reg::MSIX_QUEUE, Width::U16, u32::from(msix_vector));
        }
        self.w(reg::QUEUE_PFN, Width::U32, pfn as u32);
        Ok(())
    }

    fn set_config_vector(&mut self, vector: u16) -> u16 {
        if !self.msix_enabled {
            return NO_VECTOR;
        }
        self.w(reg::MSIX_CONFIG, Width::U16, u32::from(vector));
        self.r(reg::MSIX_CONFIG, Width::U16) as u16
    }

    fn kind(&self) -> Kind {
        Kind::Legacy
    }

    fn notify(&self, queue: u16) {
        self.w(reg::QUEUE_NOTIFY, Width::U16, u32::from(queue));
    }

    fn read_config(&self, offset: u16, buf: &mut [u8]) {
        let base = if self.msix_enabled {
            reg::CONFIG_MSIX
        } else {
            reg::CONFIG
        };
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.r(base + offset + i as u16, Width::U8) as u8;
        }
    }
}
