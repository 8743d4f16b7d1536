//! The virtio 1.x PCI transport, device side (virtio spec 4.1): the common configuration
//! structure, notifications, the ISR, the device configuration window and MSI-X.
//!
//! BAR layout, as QEMU's virtio-pci lays it out so drivers see a familiar device:
//! BAR1 holds the MSI-X table (0x000) and PBA (0x800); BAR4 (64-bit) holds the common
//! configuration (0x0000), the ISR (0x1000), the device configuration (0x2000) and the
//! notification area (0x3000, one 4-byte slot per queue). A transitional device also has the
//! legacy interface in an I/O BAR0 ([`legacy`]).

mod legacy;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU16, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::msix::Msix;
use crate::pci::{BarKind, BarRegion, PciConfig, PciDevice, PciIds, CAP_ID_MSIX, CAP_ID_VENDOR};
use crate::queue::{self, DeviceQueue, Layout, RingAddresses, RingConfig};
use crate::virtio::{
    features, status, Activation, ActiveQueue, Health, Interrupt, Memory, MsiSink, VirtioDevice,
};

pub const LEGACY_BAR: u8 = 0;
pub const LEGACY_BAR_SIZE: u64 = 0x40;
pub const MSIX_BAR: u8 = 1;
pub const MSIX_BAR_SIZE: u64 = 0x1000;
const MSIX_PBA_OFFSET: u64 = 0x800;
pub const MODERN_BAR: u8 = 4;
pub const MODERN_BAR_SIZE: u64 = 0x4000;
const COMMON_OFFSET: u64 = 0x0000;
const ISR_OFFSET: u64 = 0x1000;
const DEVICE_OFFSET: u64 = 0x2000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
pub const NOTIFY_MULTIPLIER: u32 = 4;
const REGION_SIZE: u64 = 0x1000;

/// MSI-X "no vector".
pub const NO_VECTOR: u16 = 0xffff;

const VIRTIO_VENDOR: u16 = 0x1af4;
/// Modern devices have PCI device ID 0x1040 + virtio device type.
const MODERN_DEVICE_BASE: u16 = 0x1040;
/// Transitional devices have 0x1000 + virtio device type - 1 (net: 0x1000).
const TRANSITIONAL_DEVICE_BASE: u16 = 0x0fff;

/// How the transport presents itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// A transitional device: PCI ID 0x1000 + type - 1 and the legacy interface in an I/O
    /// BAR0, beside the modern one.
    pub transitional: bool,
    /// The queue size is fixed at the device's maximum: writes of another size are refused,
    /// as QEMU's fixed 256 and every legacy device do.
    pub fixed_queue_size: bool,
}

/// `cfg_type` of the virtio vendor capabilities.
mod cfg_type {
    pub const COMMON: u8 = 1;
    pub const NOTIFY: u8 = 2;
    pub const ISR: u8 = 3;
    pub const DEVICE: u8 = 4;
}

/// Fields of `struct virtio_pci_common_cfg`, by offset.
mod common {
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    pub const DEVICE_FEATURE: u64 = 0x04;
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    pub const DRIVER_FEATURE: u64 = 0x0c;
    pub const MSIX_CONFIG: u64 = 0x10;
    pub const NUM_QUEUES: u64 = 0x12;
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

/// Driver-visible state of one queue before activation.
#[derive(Clone, Copy, Debug)]
struct QueueConfig {
    max_size: u16,
    size: u16,
    enabled: bool,
    desc: u64,
    driver: u64,
    device: u64,
}

impl QueueConfig {
    fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            enabled: false,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }
}

/// Interrupt delivery for an active device: ISR bits and MSI-X vectors.
struct PciInterrupt {
    msix: Mutex<Msix>,
    sink: Arc<dyn MsiSink>,
    isr: AtomicU8,
    config_vector: AtomicU16,
    queue_vectors: Vec<AtomicU16>,
}

impl PciInterrupt {
    fn signal(&self, vector: u16) {
        if vector == NO_VECTOR {
            // No INTx line here: a driver without vectors polls (or reads the ISR).
            return;
        }
        let msg = self
            .msix
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .trigger(vector);
        if let Some(msg) = msg {
            self.sink.send(msg);
        }
    }
}

impl Interrupt for PciInterrupt {
    fn queue(&self, queue: u16) {
        self.isr.fetch_or(1, Ordering::AcqRel);
        if let Some(v) = self.queue_vectors.get(usize::from(queue)) {
            self.signal(v.load(Ordering::Acquire));
        }
    }

    fn config_changed(&self) {
        self.isr.fetch_or(2, Ordering::AcqRel);
        self.signal(self.config_vector.load(Ordering::Acquire));
    }
}

/// Counters of driver behaviour the transport refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Register accesses at offsets or widths the spec does not define.
    pub bad_accesses: u64,
    /// Writes the spec forbids at that point (queue fields of an enabled queue, features
    /// after FEATURES_OK, bad queue sizes).
    pub refused_writes: u64,
    /// Feature sets refused at FEATURES_OK.
    pub refused_features: u64,
}

/// A virtio device of type `D` on the PCI transport.
pub struct VirtioPciDevice<D: VirtioDevice> {
    config: PciConfig,
    msix_cap: u16,
    device: D,
    mem: Arc<Memory>,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    queue_select: u16,
    queues: Vec<QueueConfig>,
    kicks: Vec<EventFd>,
    interrupt: Arc<PciInterrupt>,
    health: Arc<Health>,
    options: Options,
    /// The driver uses the legacy interface (it touched BAR0 since the last reset).
    legacy: bool,
    pub stats: TransportStats,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating a queue notification eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("device has {0} queues; the transport supports 1 to 64")]
    QueueCount(usize),
}

fn vendor_cap(ty: u8, bar: u8, offset: u64, length: u64, extra: &[u8]) -> Vec<u8> {
    let mut c = vec![CAP_ID_VENDOR, 0, (16 + extra.len()) as u8, ty, bar, 0, 0, 0];
    c.extend_from_slice(&(offset as u32).to_le_bytes());
    c.extend_from_slice(&(length as u32).to_le_bytes());
    c.extend_from_slice(extra);
    c
}

impl<D: VirtioDevice> VirtioPciDevice<D> {
    /// Wraps `device`. Its BARs start unassigned: the VMM programs them as firmware would.
    pub fn new(
        device: D,
        mem: Arc<Memory>,
        sink: Arc<dyn MsiSink>,
        options: Options,
    ) -> Result<Self, Error> {
        let max_sizes = device.queue_max_sizes();
        if max_sizes.is_empty() || max_sizes.len() > 64 {
            return Err(Error::QueueCount(max_sizes.len()));
        }
        let num_queues = max_sizes.len() as u16;
        let mut config = PciConfig::new(if options.transitional {
            PciIds {
                vendor: VIRTIO_VENDOR,
                device: TRANSITIONAL_DEVICE_BASE + device.device_type(),
                class: 0x02,
                subclass: 0x00,
                prog_if: 0,
                // Transitional devices have revision 0 and the device type as subsystem ID
                // (4.1.2.3).
                revision: 0,
                subsystem_vendor: VIRTIO_VENDOR,
                subsystem: device.device_type(),
            }
        } else {
            PciIds {
                vendor: VIRTIO_VENDOR,
                device: MODERN_DEVICE_BASE + device.device_type(),
                class: 0x02,
                subclass: 0x00,
                prog_if: 0,
                // Modern-only devices have revision 1 or higher (4.1.2.1).
                revision: 1,
                subsystem_vendor: VIRTIO_VENDOR,
                subsystem: 0x40,
            }
        });
        if options.transitional {
            config.add_bar(LEGACY_BAR, BarKind::Io, LEGACY_BAR_SIZE, 0);
        }
        config.add_bar(MSIX_BAR, BarKind::Mem32, MSIX_BAR_SIZE, 0);
        config.add_bar(MODERN_BAR, BarKind::Mem64, MODERN_BAR_SIZE, 0);
        let vectors = num_queues + 1;
        let msix_body = {
            let mut c = vec![CAP_ID_MSIX, 0];
            c.extend_from_slice(&(vectors - 1).to_le_bytes());
            c.extend_from_slice(&u32::from(MSIX_BAR).to_le_bytes());
            c.extend_from_slice(&(MSIX_PBA_OFFSET as u32 | u32::from(MSIX_BAR)).to_le_bytes());
            c
        };
        let msix_cap = u16::from(config.add_capability(&msix_body));
        // Message Control: MSI-X Enable (bit 15) and Function Mask (bit 14) are writable.
        config.set_writable(msix_cap, 0xc000 << 16);
        let bar = MODERN_BAR;
        config.add_capability(&vendor_cap(cfg_type::COMMON, bar, COMMON_OFFSET, 0x38, &[]));
        config.add_capability(&vendor_cap(
            cfg_type::NOTIFY,
            bar,
            NOTIFY_OFFSET,
            u64::from(num_queues) * u64::from(NOTIFY_MULTIPLIER),
            &NOTIFY_MULTIPLIER.to_le_bytes(),
        ));
        config.add_capability(&vendor_cap(cfg_type::ISR, bar, ISR_OFFSET, 1, &[]));
        config.add_capability(&vendor_cap(
            cfg_type::DEVICE,
            bar,
            DEVICE_OFFSET,
            REGION_SIZE,
            &[],
        ));

        let kicks = (0..num_queues)
            .map(|_| EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd))
            .collect::<Result<Vec<_>, _>>()?;
        let interrupt = Arc::new(PciInterrupt {
            msix: Mutex::new(Msix::new(vectors)),
            sink,
            isr: AtomicU8::new(0),
            config_vector: AtomicU16::new(NO_VECTOR),
            queue_vectors: (0..num_queues).map(|_| AtomicU16::new(NO_VECTOR)).collect(),
        });
        Ok(Self {
            config,
            msix_cap,
            device,
            mem,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            queue_select: 0,
            queues: max_sizes.into_iter().map(QueueConfig::new).collect(),
            kicks,
            interrupt,
            health: Arc::new(Health::default()),
            options,
            legacy: false,
            stats: TransportStats::default(),
        })
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// Device status as the driver reads it.
    pub fn status(&self) -> u8 {
        let mut s = self.status;
        if self.health.needs_reset() {
            s |= status::DEVICE_NEEDS_RESET;
        }
        s
    }

    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Guest-physical address of each queue's notification slot with the eventfd a write
    /// there signals, for the VMM to register as ioeventfds. Empty while BAR4 is unassigned.
    pub fn notifiers(&self) -> Vec<(u64, &EventFd)> {
        let Some(bar) = self
            .config
            .bars()
            .into_iter()
            .find(|b| b.index == MODERN_BAR)
        else {
            return Vec::new();
        };
        if bar.addr == 0 {
            return Vec::new();
        }
        self.kicks
            .iter()
            .enumerate()
            .map(|(q, e)| {
                let addr = bar.addr + NOTIFY_OFFSET + q as u64 * u64::from(NOTIFY_MULTIPLIER);
                (addr, e)
            })
            .collect()
    }

    fn reset(&mut self) {
        self.device.reset();
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.status = 0;
        self.queue_select = 0;
        for q in &mut self.queues {
            *q = QueueConfig::new(q.max_size);
        }
        self.interrupt.isr.store(0, Ordering::Release);
        self.interrupt
            .config_vector
            .store(NO_VECTOR, Ordering::Release);
        for v in &self.interrupt.queue_vectors {
            v.store(NO_VECTOR, Ordering::Release);
        }
        for k in &self.kicks {
            // Drain a stale count so the next activation starts quiet.
            let _ = k.read();
        }
        self.health.clear();
        self.legacy = false;
    }

    /// A modern driver must accept VERSION_1; a legacy one cannot see it (32 feature bits).
    fn features_acceptable(&self, f: u64) -> bool {
        let offered = self.device.features();
        let offered_ok = if self.legacy {
            f & !(offered & 0xffff_ffff) == 0
        } else {
            f & !offered == 0 && f & features::VERSION_1 != 0
        };
        offered_ok && self.device.features_consistent(f)
    }

    fn set_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        // Only a reset clears status bits (2.1.1).
        let mut new = old | value;
        if new & status::FEATURES_OK != 0
            && old & status::FEATURES_OK == 0
            && !self.features_acceptable(self.driver_features)
        {
            tracing::warn!(
                "refusing driver features {:#x} (offered {:#x})",
                self.driver_features,
                self.device.features()
            );
            self.stats.refused_features += 1;
            new &= !status::FEATURES_OK;
        }
        if new & status::DRIVER_OK != 0 && old & status::DRIVER_OK == 0 {
            if self.legacy {
                // The legacy interface has no FEATURES_OK: features are checked here.
                if self.features_acceptable(self.driver_features) {
                    self.activate();
                } else {
                    self.stats.refused_features += 1;
                    self.health
                        .fail("legacy driver accepted features the device did not offer");
                }
            } else if new & status::FEATURES_OK == 0 {
                self.health.fail("DRIVER_OK without FEATURES_OK");
            } else {
                self.activate();
            }
        }
        self.status = new;
    }

    fn activate(&mut self) {
        let event_idx = self.driver_features & features::RING_EVENT_IDX != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, qc) in self.queues.iter().enumerate() {
            if !qc.enabled {
                queues.push(None);
                continue;
            }
            let q = match self.build_queue(qc, event_idx) {
                Ok(q) => q,
                Err(e) => {
                    self.health.fail(&format!("queue {i}: {e}"));
                    return;
                }
            };
            let kick = match self.kicks[i].try_clone() {
                Ok(k) => k,
                Err(e) => {
                    self.health
                        .fail(&format!("queue {i}: cloning its eventfd: {e}"));
                    return;
                }
            };
            queues.push(Some(ActiveQueue {
                index: i as u16,
                queue: q,
                kick,
            }));
        }
        let activation = Activation {
            mem: self.mem.clone(),
            features: self.driver_features,
            queues,
            interrupt: self.interrupt.clone(),
            health: self.health.clone(),
        };
        if let Err(e) = self.device.activate(activation) {
            self.health.fail(&format!("activation: {e}"));
        }
    }

    fn build_queue(
        &self,
        qc: &QueueConfig,
        event_idx: bool,
    ) -> Result<Box<dyn DeviceQueue>, queue::Error> {
        let f = self.driver_features;
        // A legacy driver sees 32 feature bits: its rings are split whatever it wrote.
        let layout = if f & features::RING_PACKED != 0 && !self.legacy {
            Layout::Packed
        } else {
            Layout::Split
        };
        let cfg = RingConfig {
            layout,
            max_size: qc.max_size,
            size: qc.size,
            addresses: RingAddresses {
                desc: qc.desc,
                driver: qc.driver,
                device: qc.device,
            },
            event_idx,
            in_order: f & features::IN_ORDER != 0 && !self.legacy,
        };
        queue::build(&cfg, &self.mem)
    }

    fn selected(&self) -> Option<&QueueConfig> {
        self.queues.get(usize::from(self.queue_select))
    }

    fn common_read(&mut self, offset: u64, len: usize) -> Option<u64> {
        let q = self.selected().copied();
        let qv = self
            .interrupt
            .queue_vectors
            .get(usize::from(self.queue_select))
            .map(|v| v.load(Ordering::Acquire));
        let half = |v: u64, upper: bool| if upper { v >> 32 } else { v & 0xffff_ffff };
        let v = match (offset, len) {
            (common::DEVICE_FEATURE_SELECT, 4) => u64::from(self.device_feature_select),
            (common::DEVICE_FEATURE, 4) => match self.device_feature_select {
                0 | 1 => half(self.device.features(), self.device_feature_select == 1),
                _ => 0,
            },
            (common::DRIVER_FEATURE_SELECT, 4) => u64::from(self.driver_feature_select),
            (common::DRIVER_FEATURE, 4) => match self.driver_feature_select {
                0 | 1 => half(self.driver_features, self.driver_feature_select == 1),
                _ => 0,
            },
            (common::MSIX_CONFIG, 2) => {
                u64::from(self.interrupt.config_vector.load(Ordering::Acquire))
            }
            (common::NUM_QUEUES, 2) => self.queues.len() as u64,
            (common::DEVICE_STATUS, 1) => u64::from(self.status()),
            (common::CONFIG_GENERATION, 1) => u64::from(self.device.config_generation()),
            (common::QUEUE_SELECT, 2) => u64::from(self.queue_select),
            (common::QUEUE_SIZE, 2) => q.map_or(0, |q| u64::from(q.size)),
            (common::QUEUE_MSIX_VECTOR, 2) => u64::from(qv.unwrap_or(NO_VECTOR)),
            (common::QUEUE_ENABLE, 2) => q.map_or(0, |q| u64::from(q.enabled)),
            (common::QUEUE_NOTIFY_OFF, 2) => u64::from(self.queue_select),
            (o, 4 | 8) if (common::QUEUE_DESC..common::QUEUE_DEVICE + 8).contains(&o) => {
                let q = q?;
                let field = match o & !7 {
                    common::QUEUE_DESC => q.desc,
                    common::QUEUE_DRIVER => q.driver,
                    _ => q.device,
                };
                match (o % 8, len) {
                    (0, 8) => field,
                    (0, 4) => half(field, false),
                    (4, 4) => half(field, true),
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some(v)
    }

    fn common_write(&mut self, offset: u64, data: &[u8]) -> bool {
        let mut raw = [0u8; 8];
        raw[..data.len()].copy_from_slice(data);
        let v = u64::from_le_bytes(raw);
        let qs = usize::from(self.queue_select);
        let queue_writable = self
            .queues
            .get(qs)
            .is_some_and(|q| !q.enabled && self.status & status::DRIVER_OK == 0);
        match (offset, data.len()) {
            (common::DEVICE_FEATURE_SELECT, 4) => self.device_feature_select = v as u32,
            (common::DRIVER_FEATURE_SELECT, 4) => self.driver_feature_select = v as u32,
            (common::DRIVER_FEATURE, 4) => {
                if self.status & status::FEATURES_OK != 0 || self.driver_feature_select > 1 {
                    self.stats.refused_writes += 1;
                } else {
                    let shift = 32 * self.driver_feature_select;
                    self.driver_features =
                        (self.driver_features & !(0xffff_ffffu64 << shift)) | (v << shift);
                }
            }
            (common::MSIX_CONFIG, 2) => {
                let vector = self.valid_vector(v as u16);
                self.interrupt
                    .config_vector
                    .store(vector, Ordering::Release);
            }
            (common::DEVICE_STATUS, 1) => self.set_status(v as u8),
            (common::QUEUE_SELECT, 2) => self.queue_select = v as u16,
            (common::QUEUE_SIZE, 2) => {
                let size = v as u16;
                // A packed ring's size need not be a power of 2 (2.8.10.1: "does not have to
                // be a power of 2 unless enforced by the transport"); the driver sets
                // sizes after FEATURES_OK, so the layout is known.
                let packed = self.status & status::FEATURES_OK != 0
                    && self.driver_features & features::RING_PACKED != 0;
                let ok = self.queues.get(qs).is_some_and(|q| {
                    (size.is_power_of_two() || packed && size != 0)
                        && size <= q.max_size
                        && (!self.options.fixed_queue_size || size == q.max_size)
                });
                if queue_writable && ok {
                    self.queues[qs].size = size;
                } else {
                    tracing::warn!("refusing queue {qs} size {size}");
                    self.stats.refused_writes += 1;
                }
            }
            (common::QUEUE_MSIX_VECTOR, 2) => {
                let vector = self.valid_vector(v as u16);
                match self.interrupt.queue_vectors.get(qs) {
                    Some(q) => q.store(vector, Ordering::Release),
                    None => self.stats.refused_writes += 1,
                }
            }
            (common::QUEUE_ENABLE, 2) => {
                // Only 1 may be written; disabling goes through reset (4.1.4.3.2).
                if queue_writable && v == 1 {
                    self.queues[qs].enabled = true;
                } else {
                    self.stats.refused_writes += 1;
                }
            }
            (o, 4 | 8) if (common::QUEUE_DESC..common::QUEUE_DEVICE + 8).contains(&o) => {
                if !queue_writable || (o % 8 == 4 && data.len() == 8) {
                    self.stats.refused_writes += 1;
                    return true;
                }
                let q = &mut self.queues[qs];
                let field = match o & !7 {
                    common::QUEUE_DESC => &mut q.desc,
                    common::QUEUE_DRIVER => &mut q.driver,
                    _ => &mut q.device,
                };
                *field = match (o % 8, data.len()) {
                    (0, 8) => v,
                    (0, _) => (*field & !0xffff_ffff) | v,
                    _ => (*field & 0xffff_ffff) | v << 32,
                };
            }
            _ => return false,
        }
        true
    }

    /// A vector the table has, or NO_VECTOR: how a device reports it could not allocate
    /// (4.1.4.3.1 / 4.1.5.1.2).
    fn valid_vector(&self, v: u16) -> u16 {
        let n = self
            .interrupt
            .msix
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        if v < n {
            v
        } else {
            NO_VECTOR
        }
    }

    fn modern_read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match offset / REGION_SIZE {
            0 => match self.common_read(offset, data.len()) {
                Some(v) => data.copy_from_slice(&v.to_le_bytes()[..data.len()]),
                None => self.bad_access("read", offset, data.len()),
            },
            // Reading the ISR acknowledges it (4.1.4.5).
            1 if offset == ISR_OFFSET => {
                data[0] = self.interrupt.isr.swap(0, Ordering::AcqRel);
            }
            2 => self.device.read_config(offset - DEVICE_OFFSET, data),
            _ => {}
        }
    }

    fn modern_write(&mut self, offset: u64, data: &[u8]) {
        match offset / REGION_SIZE {
            0 => {
                if !self.common_write(offset, data) {
                    self.bad_access("write", offset, data.len());
                }
            }
            2 => self.device.write_config(offset - DEVICE_OFFSET, data),
            3 => {
                let q = (offset - NOTIFY_OFFSET) / u64::from(NOTIFY_MULTIPLIER);
                match self.kicks.get(q as usize) {
                    Some(k) => {
                        let _ = k.write(1);
                    }
                    None => self.bad_access("notify", offset, data.len()),
                }
            }
            _ => self.bad_access("write", offset, data.len()),
        }
    }

    fn bad_access(&mut self, what: &str, offset: u64, len: usize) {
        self.stats.bad_accesses += 1;
        tracing::debug!("virtio-pci: ignored {len}-byte {what} at BAR4+{offset:#x}");
    }
}

impl<D: VirtioDevice> PciDevice for VirtioPciDevice<D> {
    fn config_read(&mut self, offset: u16) -> u32 {
        self.config.read(offset)
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data);
        if offset & !3 == self.msix_cap {
            let control = self.config.read(self.msix_cap) >> 16;
            let sent = self
                .interrupt
                .msix
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set_control(control & 0x8000 != 0, control & 0x4000 != 0);
            sent.into_iter().for_each(|m| self.interrupt.sink.send(m));
        }
    }

    fn bars(&self) -> Vec<BarRegion> {
        self.config.bars()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        match bar {
            MSIX_BAR => {
                let msix = self
                    .interrupt
                    .msix
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if offset < MSIX_PBA_OFFSET {
                    msix.read_table(offset, data);
                } else {
                    msix.read_pba(offset - MSIX_PBA_OFFSET, data);
                }
            }
            MODERN_BAR => self.modern_read(offset, data),
            LEGACY_BAR if self.options.transitional => self.legacy_read(offset, data),
            _ => data.fill(0),
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        match bar {
            MSIX_BAR if offset < MSIX_PBA_OFFSET => {
                let sent = self
                    .interrupt
                    .msix
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write_table(offset, data);
                sent.into_iter().for_each(|m| self.interrupt.sink.send(m));
            }
            MODERN_BAR => self.modern_write(offset, data),
            LEGACY_BAR if self.options.transitional => self.legacy_write(offset, data),
            _ => {}
        }
    }
}
