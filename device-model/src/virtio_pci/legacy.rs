//! The legacy interface of a transitional device (virtio 1.x, 4.1.4.8): registers in I/O
//! BAR0. Features are the low 32 bits, queues sit at one page frame in the legacy layout,
//! their size is the device's, and there is no FEATURES_OK step.

use std::sync::atomic::Ordering;

use super::{VirtioDevice, VirtioPciDevice, NO_VECTOR};

/// Register offsets.
mod reg {
    pub const HOST_FEATURES: u64 = 0x00;
    pub const GUEST_FEATURES: u64 = 0x04;
    pub const QUEUE_PFN: u64 = 0x08;
    pub const QUEUE_NUM: u64 = 0x0c;
    pub const QUEUE_SEL: u64 = 0x0e;
    pub const QUEUE_NOTIFY: u64 = 0x10;
    pub const STATUS: u64 = 0x12;
    pub const ISR: u64 = 0x13;
    /// While MSI-X is enabled these two come next and the device configuration moves
    /// from 0x14 to 0x18.
    pub const MSIX_CONFIG: u64 = 0x14;
    pub const MSIX_QUEUE: u64 = 0x16;
}

const PAGE: u64 = 4096;

impl<D: VirtioDevice> VirtioPciDevice<D> {
    fn msix_enabled(&self) -> bool {
        self.interrupt
            .msix
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .enabled()
    }

    fn legacy_config_base(&self) -> u64 {
        if self.msix_enabled() {
            0x18
        } else {
            0x14
        }
    }

    pub(super) fn legacy_read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let config = self.legacy_config_base();
        if offset >= config {
            self.device.read_config(offset - config, data);
            return;
        }
        let qs = usize::from(self.queue_select);
        let q = self.queues.get(qs).copied();
        let v: u64 = match (offset, data.len()) {
            (reg::HOST_FEATURES, 4) => self.device.features() & 0xffff_ffff,
            (reg::GUEST_FEATURES, 4) => self.driver_features & 0xffff_ffff,
            (reg::QUEUE_PFN, 4) => q.filter(|q| q.enabled).map_or(0, |q| q.desc / PAGE),
            (reg::QUEUE_NUM, 2) => q.map_or(0, |q| u64::from(q.max_size)),
            (reg::QUEUE_SEL, 2) => u64::from(self.queue_select),
            (reg::STATUS, 1) => u64::from(self.status()),
            (reg::ISR, 1) => u64::from(self.interrupt.isr.swap(0, Ordering::AcqRel)),
            (reg::MSIX_CONFIG, 2) if self.msix_enabled() => {
                u64::from(self.interrupt.config_vector.load(Ordering::Acquire))
            }
            (reg::MSIX_QUEUE, 2) if self.msix_enabled() => self
                .interrupt
                .queue_vectors
                .get(qs)
                .map_or(u64::from(NO_VECTOR), |v| {
                    u64::from(v.load(Ordering::Acquire))
                }),
            _ => {
                self.bad_access("legacy read", offset, data.len());
                return;
            }
        };
        data.copy_from_slice(&v.to_le_bytes()[..data.len()]);
    }

    pub(super) fn legacy_write(&mut self, offset: u64, data: &[u8]) {
        let config = self.legacy_config_base();
        // Only an access to something the legacy interface has makes this a legacy driver:
        // an odd access the device ignores must not change how DRIVER_OK judges the
        // features. Found by tests/proptest_hostile.rs: after a modern setup whose
        // FEATURES_OK was refused, a stray 4-byte write at BAR0+1 let DRIVER_OK activate
        // the device by the legacy rules instead of setting DEVICE_NEEDS_RESET.
        if offset >= config
            || matches!(
                (offset, data.len()),
                (reg::GUEST_FEATURES | reg::QUEUE_PFN, 4)
                    | (
                        reg::QUEUE_SEL | reg::QUEUE_NOTIFY | reg::MSIX_CONFIG | reg::MSIX_QUEUE,
                        2
                    )
                    | (reg::STATUS, 1)
            )
        {
            self.legacy = true;
        }
        if offset >= config {
            self.device.write_config(offset - config, data);
            return;
        }
        let mut raw = [0u8; 8];
        raw[..data.len().min(8)].copy_from_slice(&data[..data.len().min(8)]);
        let v = u64::from_le_bytes(raw);
        let qs = usize::from(self.queue_select);
        let running = self.status & super::status::DRIVER_OK != 0;
        match (offset, data.len()) {
            (reg::GUEST_FEATURES, 4) if !running => self.driver_features = v,
            (reg::QUEUE_PFN, 4) if !running => match self.queues.get_mut(qs) {
                Some(q) => {
                    // 2.7.2's legacy layout: the used ring starts on the page after the
                    // descriptors and the available ring. PFN 0 disables the queue.
                    let n = u64::from(q.max_size);
                    q.size = q.max_size;
                    q.desc = v * PAGE;
                    q.driver = q.desc + 16 * n;
                    q.device = (q.driver + 6 + 2 * n + PAGE - 1) & !(PAGE - 1);
                    q.enabled = v != 0;
                }
                None => self.stats.refused_writes += 1,
            },
            (reg::QUEUE_SEL, 2) => self.queue_select = v as u16,
            (reg::QUEUE_NOTIFY, 2) => match self.kicks.get(v as usize) {
                Some(k) => {
                    let _ = k.write(1);
                }
                None => self.bad_access("legacy notify", offset, data.len()),
            },
            (reg::STATUS, 1) => self.set_status(v as u8),
            (reg::MSIX_CONFIG, 2) if self.msix_enabled() => {
                let vector = self.valid_vector(v as u16);
                self.interrupt
                    .config_vector
                    .store(vector, Ordering::Release);
            }
            (reg::MSIX_QUEUE, 2) if self.msix_enabled() => {
                let vector = self.valid_vector(v as u16);
                match self.interrupt.queue_vectors.get(qs) {
                    Some(q) => q.store(vector, Ordering::Release),
                    None => self.stats.refused_writes += 1,
                }
            }
            (reg::GUEST_FEATURES | reg::QUEUE_PFN, 4) => self.stats.refused_writes += 1,
            _ => self.bad_access("legacy write", offset, data.len()),
        }
    }
}
