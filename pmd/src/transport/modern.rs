//! The virtio 1.x PCI transport (virtio spec 4.1.4): common, notify, ISR and device
//! configuration structures found through vendor-specific capabilities, in memory BARs.

use alloc::vec::Vec;

use super::{Error, Kind, QueueAddrs, Transport};
use crate::hal::{Hal, Width};
use crate::pci::{self, Bar, ConfigSpace};

/// `cfg_type` values of `struct virtio_pci_cap`.
pub mod cfg_type {
    pub const COMMON: u8 = 1;
    pub const NOTIFY: u8 = 2;
    pub const ISR: u8 = 3;
    pub const DEVICE: u8 = 4;
}

/// Offsets in `struct virtio_pci_common_cfg`.
mod common {
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    pub const DEVICE_FEATURE: u64 = 0x04;
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    pub const DRIVER_FEATURE: u64 = 0x0c;
    pub const NUM_QUEUES: u64 = 0x12;
    pub const MSIX_CONFIG: u64 = 0x10;
    pub const DEVICE_STATUS: u64 = 0x14;
    pub const CONFIG_GENERATION: u64 = 0x15;
    pub const QUEUE_SELECT: u64 = 0x16;
    pub const QUEUE_SIZE: u64 = 0x18;
    pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
    pub const QUEUE_ENABLE: u64 = 0x1c;
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
    pub const QUEUE_DESC: u64 = 0x20;
    pub const QUEUE_DRIVER: u64 = 0x28;
    pub const QUEUE_DEVICE: u64 = 0x30;
}

pub struct ModernTransport<'a, H: Hal> {
    hal: &'a H,
    common: u64,
    device: u64,
    notify_base: u64,
    notify_multiplier: u32,
    num_queues: u16,
    queue_notify: Vec<u64>,
}

impl<'a, H: Hal> ModernTransport<'a, H> {
    /// Finds the virtio structures of the function at `cfg`, enables memory decoding and bus
    /// mastering.
    pub fn probe(hal: &'a H, cfg: &ConfigSpace<'a, H>) -> Result<Self, Error> {
        let mut found: [Option<(u8, u32)>; 5] = [None; 5];
        let mut notify_multiplier = 0;
        cfg.for_each_capability(|ptr, id| {
            if id != pci::CAP_ID_VENDOR {
                return;
            }
            // struct virtio_pci_cap: id, next, len, cfg_type | bar, id, padding | offset.
            let ty = (cfg.read32(ptr) >> 24) as u8;
            let bar = cfg.read32(ptr + 4) as u8;
            let offset = cfg.read32(ptr + 8);
            // The first capability of each type is the preferred one (4.1.4).
            if (1..=4).contains(&ty) && found[usize::from(ty)].is_none() {
                found[usize::from(ty)] = Some((bar, offset));
                if ty == cfg_type::NOTIFY {
                    notify_multiplier = cfg.read32(ptr + 16);
                }
            }
        })?;
        // Each configuration read costs two VM exits: read each BAR once.
        let mut bars: [Option<Bar>; 6] = [None; 6];
        let mut locate = |ty: u8| -> Result<u64, Error> {
            let (bar, offset) =
                found[usize::from(ty)].ok_or(Error::MissingCapability { cfg_type: ty })?;
            let decoded = match bars.get(usize::from(bar)).copied().flatten() {
                Some(b) => b,
                None => {
                    let b = cfg.bar(bar)?;
                    if let Some(slot) = bars.get_mut(usize::from(bar)) {
                        *slot = Some(b);
                    }
                    b
                }
            };
            match decoded {
                Bar::Memory { addr } => Ok(addr + u64::from(offset)),
                Bar::Io { .. } => Err(Error::CapabilityNotInMemoryBar { cfg_type: ty, bar }),
            }
        };
        let common = locate(cfg_type::COMMON)?;
        let notify_base = locate(cfg_type::NOTIFY)?;
        let device = locate(cfg_type::DEVICE)?;
        locate(cfg_type::ISR)?;
        cfg.enable(pci::COMMAND_MEMORY | pci::COMMAND_BUS_MASTER);
        Ok(Self {
            hal,
            common,
            device,
            notify_base,
            notify_multiplier,
            num_queues: 0,
            queue_notify: Vec::new(),
        })
    }

    /// Guest-physical address of the common configuration structure: for a driver that
    /// accesses its registers at odd offsets and widths on purpose ([`crate::hostile`]).
    #[doc(hidden)]
    pub fn common_addr(&self) -> u64 {
        self.common
    }

    /// Guest-physical address of the device configuration structure (see `common_addr`).
    #[doc(hidden)]
    pub fn device_addr(&self) -> u64 {
        self.device
    }

    /// Guest-physical address of the notification area (see `common_addr`).
    #[doc(hidden)]
    pub fn notify_addr(&self) -> u64 {
        self.notify_base
    }

    fn read(&self, offset: u64, width: Width) -> u64 {
        self.hal.mmio_read(self.common + offset, width)
    }

    fn write(&self, offset: u64, width: Width, value: u64) {
        self.hal.mmio_write(self.common + offset, width, value)
    }

    /// 64-bit fields are written as two 32-bit halves, low first, which every device must
    /// accept (4.1.3.1) and which is what Linux and DPDK do.
    fn write64(&self, offset: u64, value: u64) {
        self.write(offset, Width::U32, value & 0xffff_ffff);
        self.write(offset + 4, Width::U32, value >> 32);
    }
}

impl<H: Hal> Transport for ModernTransport<'_, H> {
    fn reset(&mut self) {
        self.set_status(0);
        // 4.1.4.3.2: the driver must wait for the status to read back 0.
        while self.status() != 0 {
            self.hal.relax();
        }
        self.queue_notify.clear();
        // Fixed for the device's lifetime; every MMIO read is a VM exit, so read it once.
        self.num_queues = self.read(common::NUM_QUEUES, Width::U16) as u16;
    }

    fn status(&self) -> u8 {
        self.read(common::DEVICE_STATUS, Width::U8) as u8
    }

    fn set_status(&mut self, status: u8) {
        self.write(common::DEVICE_STATUS, Width::U8, u64::from(status));
    }

    fn device_features(&self) -> u64 {
        let mut features = 0;
        for select in 0..2u64 {
            self.write(common::DEVICE_FEATURE_SELECT, Width::U32, select);
            features |= self.read(common::DEVICE_FEATURE, Width::U32) << (32 * select);
        }
        features
    }

    fn set_driver_features(&mut self, features: u64) {
        for select in 0..2u64 {
            self.write(common::DRIVER_FEATURE_SELECT, Width::U32, select);
            self.write(
                common::DRIVER_FEATURE,
                Width::U32,
                (features >> (32 * select)) & 0xffff_ffff,
            );
        }
    }

    fn num_queues(&self) -> u16 {
        self.num_queues
    }

    fn queue_max_size(&self, queue: u16) -> u16 {
        if queue >= self.num_queues() {
            return 0;
        }
        self.write(common::QUEUE_SELECT, Width::U16, u64::from(queue));
        self.read(common::QUEUE_SIZE, Width::U16) as u16
    }

    fn set_queue_size(&mut self, queue: u16, size: u16) -> u16 {
        self.write(common::QUEUE_SELECT, Width::U16, u64::from(queue));
        self.write(common::QUEUE_SIZE, Width::U16, u64::from(size));
        self.read(common::QUEUE_SIZE, Width::U16) as u16
    }

    fn set_config_vector(&mut self, vector: u16) -> u16 {
        self.write(common::MSIX_CONFIG, Width::U16, u64::from(vector));
        self.read(common::MSIX_CONFIG, Width::U16) as u16
    }

    fn kind(&self) -> Kind {
        Kind::Modern
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
        // After `reset` every queue is disabled, and `set_queue_size` agreed on `size`.
        let _ = size;
        self.write(common::QUEUE_SELECT, Width::U16, u64::from(queue));
        self.write(
            common::QUEUE_MSIX_VECTOR,
            Width::U16,
            u64::from(msix_vector),
        );
        self.write64(common::QUEUE_DESC, addrs.desc);
        self.write64(common::QUEUE_DRIVER, addrs.avail);
        self.write64(common::QUEUE_DEVICE, addrs.used);
        let notify_off = self.read(common::QUEUE_NOTIFY_OFF, Width::U16);
        let notify = self.notify_base + notify_off * u64::from(self.notify_multiplier);
        let slot = usize::from(queue);
        if self.queue_notify.len() <= slot {
            self.queue_notify.resize(slot + 1, 0);
        }
        self.queue_notify[slot] = notify;
        self.write(common::QUEUE_ENABLE, Width::U16, 1);
        Ok(())
    }

    fn notify(&self, queue: u16) {
        if let Some(&addr) = self.queue_notify.get(usize::from(queue)) {
            self.hal.mmio_write(addr, Width::U16, u64::from(queue));
        }
    }

    fn read_config(&self, offset: u16, buf: &mut [u8]) {
        loop {
            let before = self.read(common::CONFIG_GENERATION, Width::U8);
            for (i, b) in buf.iter_mut().enumerate() {
                *b = self
                    .hal
                    .mmio_read(self.device + u64::from(offset) + i as u64, Width::U8)
                    as u8;
            }
            if self.read(common::CONFIG_GENERATION, Width::U8) == before {
                return;
            }
        }
    }
}
