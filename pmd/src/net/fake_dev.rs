//! A modern virtio-net PCI function for unit tests, on [`FakeHal`]'s bus: the capabilities
//! of 4.1.4 in one memory BAR, the common configuration registers, the device
//! configuration (with `max_virtqueue_pairs` and the RSS fields of 5.1.4), a control queue
//! that records every command and answers it, receive queues it delivers queued frames to
//! (with the hash header when VIRTIO_NET_F_HASH_REPORT is negotiated), transmit queues it
//! captures, and a harness block. Written from the spec, not from the driver.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::hal::Width;
use crate::harness::{self, reg, status, SIGNATURE};
use crate::pci::Bdf;
use crate::testing::{FakeDevice, FakeHal};
use crate::transport::QueueAddrs;
use crate::virtqueue::testdev::TestDevice;
use crate::virtqueue::Layout;

use super::{features, NET_HDR_LEN, NET_HDR_LEN_HASH};

const COMMON: u64 = 0x0;
const NOTIFY: u64 = 0x1000;
const NOTIFY_MULTIPLIER: u32 = 4;
const ISR: u64 = 0x2000;
const DEVICE: u64 = 0x3000;
const BAR_LEN: u64 = 0x4000;
const DRIVER_OK: u8 = 4;
const FEATURES_OK: u8 = 8;

/// A command the control queue received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Command {
    pub class: u8,
    pub cmd: u8,
    pub data: Vec<u8>,
}

/// A frame waiting to be delivered to receive queue `queue` (the pair's number), with the
/// hash the device reports for it.
#[derive(Clone, Debug)]
pub(crate) struct Input {
    pub queue: u16,
    pub frame: Vec<u8>,
    pub hash: u32,
    pub report: u16,
}

#[derive(Default)]
pub(crate) struct Queue {
    pub size: u16,
    pub max: u16,
    pub enabled: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
    dev: Option<TestDevice>,
}

pub(crate) struct FakeNet {
    pub bdf: Bdf,
    bar: u64,
    /// Which harness block this port has (`None`: none).
    pub harness: Option<u8>,
    pub offered: u64,
    /// The device configuration, `struct virtio_net_config` (24 bytes).
    pub config: [u8; 24],
    dfsel: u32,
    drfsel: u32,
    pub driver_features: u64,
    pub status: u8,
    msix_config: u16,
    qsel: u16,
    pub queues: Vec<Queue>,
    pub commands: Vec<Command>,
    /// Commands answered VIRTIO_NET_ERR: (class, cmd).
    pub refuse: Vec<(u8, u8)>,
    pub input: VecDeque<Input>,
    pub delivered: u32,
    /// Frames the driver transmitted, without their header: (tx queue's pair, frame).
    pub output: Vec<(u16, Vec<u8>)>,
}

impl FakeNet {
    /// Function `bdf` with its BAR at `bar`, offering `offered` and `max_pairs` queue
    /// pairs (a control queue after them), queues of up to `queue_max` entries, and RSS
    /// limits of a 40-byte key, a 128-entry table and every hash type.
    pub fn new(bdf: Bdf, bar: u64, offered: u64, max_pairs: u16, queue_max: u16) -> Self {
        let mut config = [0u8; 24];
        config[..6].copy_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x50 + bdf.device]);
        config[6..8].copy_from_slice(&1u16.to_le_bytes());
        config[8..10].copy_from_slice(&max_pairs.to_le_bytes());
        config[10..12].copy_from_slice(&1500u16.to_le_bytes());
        config[17] = 40;
        config[18..20].copy_from_slice(&128u16.to_le_bytes());
        config[20..24].copy_from_slice(&0x1ffu32.to_le_bytes());
        let queues = (0..2 * max_pairs + 1)
            .map(|_| Queue {
                max: queue_max,
                size: queue_max,
                ..Queue::default()
            })
            .collect();
        Self {
            bdf,
            bar,
            harness: None,
            offered,
            config,
            dfsel: 0,
            drfsel: 0,
            driver_features: 0,
            status: 0,
            msix_config: 0xffff,
            qsel: 0,
            queues,
            commands: Vec::new(),
            refuse: Vec::new(),
            input: VecDeque::new(),
            delivered: 0,
            output: Vec::new(),
        }
    }

    fn ctrl_index(&self) -> usize {
        self.queues.len() - 1
    }

    fn cap(&self, offset: u16) -> Option<u32> {
        // struct virtio_pci_cap: vndr, next, len, cfg_type | bar | offset | length, and the
        // notify multiplier after the notify capability.
        let caps: [(u16, u16, u8, u64, u64); 4] = [
            (0x40, 0x50, 1, COMMON, 0x38),
            (0x50, 0x64, 2, NOTIFY, 0x1000),
            (0x64, 0x74, 3, ISR, 4),
            (0x74, 0, 4, DEVICE, 24),
        ];
        for (at, next, ty, off, len) in caps {
            let cap_len: u32 = if ty == 2 { 20 } else { 16 };
            match offset.checked_sub(at) {
                Some(0) => {
                    return Some(0x09 | u32::from(next) << 8 | cap_len << 16 | u32::from(ty) << 24)
                }
                Some(4) => return Some(0),
                Some(8) => return Some(off as u32),
                Some(12) => return Some(len as u32),
                Some(16) if ty == 2 => return Some(NOTIFY_MULTIPLIER),
                _ => {}
            }
        }
        None
    }

    fn reset(&mut self) {
        self.status = 0;
        self.driver_features = 0;
        self.msix_config = 0xffff;
        for q in &mut self.queues {
            *q = Queue {
                max: q.max,
                size: q.max,
                ..Queue::default()
            };
        }
    }

    fn layout(&self) -> Layout {
        if self.driver_features & features::RING_PACKED != 0 {
            Layout::Packed
        } else {
            Layout::Split
        }
    }

    fn hdr_len(&self) -> usize {
        if self.driver_features & features::HASH_REPORT != 0 {
            NET_HDR_LEN_HASH
        } else {
            NET_HDR_LEN
        }
    }

    /// The device side of queue `q`, once the driver enabled it.
    fn queue_dev(&mut self, q: usize) -> Option<&mut TestDevice> {
        let layout = self.layout();
        let queue = self.queues.get_mut(q).filter(|q| q.enabled)?;
        let addrs = QueueAddrs {
            desc: queue.desc,
            avail: queue.driver,
            used: queue.device,
        };
        let size = queue.size;
        Some(
            queue
                .dev
                .get_or_insert_with(|| TestDevice::at(addrs, size, layout)),
        )
    }

    fn serve_ctrl(&mut self, hal: &FakeHal) {
        let q = self.ctrl_index();
        loop {
            let Some(dev) = self.queue_dev(q) else {
                return;
            };
            let Some(a) = dev.pop_avail(hal) else {
                return;
            };
            let mut bytes = Vec::new();
            for e in a.elems.iter().filter(|e| !e.write) {
                bytes.extend(hal.read(e.addr, e.len as usize));
            }
            let ack = a
                .elems
                .iter()
                .rev()
                .find(|e| e.write)
                .expect("an ack buffer");
            let c = Command {
                class: bytes[0],
                cmd: bytes[1],
                data: bytes[2..].to_vec(),
            };
            let refused = self.refuse.contains(&(c.class, c.cmd));
            hal.write(ack.addr, &[u8::from(refused)]);
            self.commands.push(c);
            if let Some(dev) = self.queue_dev(q) {
                dev.give_back(hal, &a, 1);
            }
        }
    }

    fn deliver(&mut self, hal: &FakeHal) {
        let hdr_len = self.hdr_len();
        while let Some(input) = self.input.front() {
            let q = 2 * usize::from(input.queue);
            let (frame, hash, report) = (input.frame.clone(), input.hash, input.report);
            let Some(dev) = self.queue_dev(q) else {
                return;
            };
            let Some(a) = dev.pop_avail(hal) else {
                return;
            };
            let e = a.elems[0];
            let mut bytes = alloc::vec![0u8; hdr_len];
            bytes[10..12].copy_from_slice(&1u16.to_le_bytes());
            if hdr_len == NET_HDR_LEN_HASH {
                bytes[12..16].copy_from_slice(&hash.to_le_bytes());
                bytes[16..18].copy_from_slice(&report.to_le_bytes());
            }
            bytes.extend_from_slice(&frame);
            assert!(bytes.len() <= e.len as usize, "the frame fits one buffer");
            hal.write(e.addr, &bytes);
            dev.give_back(hal, &a, bytes.len() as u32);
            self.input.pop_front();
            self.delivered += 1;
        }
    }

    fn capture(&mut self, hal: &FakeHal) {
        let hdr_len = self.hdr_len();
        for pair in 0..self.ctrl_index() / 2 {
            while let Some(dev) = self.queue_dev(2 * pair + 1) {
                let Some(a) = dev.pop_avail(hal) else {
                    break;
                };
                let mut bytes = Vec::new();
                for e in &a.elems {
                    bytes.extend(hal.read(e.addr, e.len as usize));
                }
                assert!(
                    bytes[..hdr_len].iter().all(|&b| b == 0),
                    "a zero header of {hdr_len} bytes"
                );
                dev.give_back(hal, &a, 0);
                self.output.push((pair as u16, bytes[hdr_len..].to_vec()));
            }
        }
    }

    fn common_read(&self, off: u64) -> u64 {
        let q = self.queues.get(usize::from(self.qsel));
        match off {
            0x00 => u64::from(self.dfsel),
            0x04 => (self.offered >> (32 * self.dfsel.min(1))) & 0xffff_ffff,
            0x08 => u64::from(self.drfsel),
            0x0c => (self.driver_features >> (32 * self.drfsel.min(1))) & 0xffff_ffff,
            0x10 => u64::from(self.msix_config),
            0x12 => self.queues.len() as u64,
            0x14 => u64::from(self.status),
            0x15 => 0,
            0x16 => u64::from(self.qsel),
            0x18 => q.map_or(0, |q| u64::from(q.size)),
            0x1a => 0xffff,
            0x1c => q.map_or(0, |q| u64::from(q.enabled)),
            0x1e => u64::from(self.qsel),
            _ => 0,
        }
    }

    fn common_write(&mut self, off: u64, v: u64) {
        let qsel = usize::from(self.qsel);
        let half = |old: u64, hi: bool| {
            if hi {
                (old & 0xffff_ffff) | v << 32
            } else {
                (old & !0xffff_ffff) | v
            }
        };
        match off {
            0x00 => self.dfsel = v as u32,
            0x08 => self.drfsel = v as u32,
            0x0c => {
                let shift = 32 * self.drfsel.min(1);
                self.driver_features =
                    (self.driver_features & !(0xffff_ffff << shift)) | v << shift;
            }
            0x10 => self.msix_config = v as u16,
            0x14 => {
                if v == 0 {
                    self.reset();
                } else {
                    let mut s = v as u8;
                    if s & FEATURES_OK != 0 && self.driver_features & !self.offered != 0 {
                        s &= !FEATURES_OK;
                    }
                    self.status = s;
                }
            }
            0x16 => self.qsel = v as u16,
            _ => {
                let Some(q) = self.queues.get_mut(qsel) else {
                    return;
                };
                match off {
                    0x18 => q.size = (v as u16).min(q.max),
                    0x1c => q.enabled = v == 1,
                    0x20 | 0x24 => q.desc = half(q.desc, off == 0x24),
                    0x28 | 0x2c => q.driver = half(q.driver, off == 0x2c),
                    0x30 | 0x34 => q.device = half(q.device, off == 0x34),
                    _ => {}
                }
            }
        }
    }

    /// The queues the driver enabled.
    pub fn enabled(&self) -> Vec<u16> {
        (0..self.queues.len() as u16)
            .filter(|&q| self.queues[usize::from(q)].enabled)
            .collect()
    }
}

impl FakeDevice for FakeNet {
    fn config_read(&mut self, bdf: Bdf, offset: u16) -> Option<u32> {
        if bdf != self.bdf {
            return None;
        }
        Some(match offset {
            0x00 => 0x1af4 | 0x1041 << 16,
            0x04 => 1 << 20, // status: a capability list
            0x10 => self.bar as u32,
            0x34 => 0x40,
            _ => self.cap(offset).unwrap_or(0),
        })
    }

    fn mmio_read(&mut self, _hal: &FakeHal, addr: u64, width: Width) -> Option<u64> {
        let off = addr.checked_sub(self.bar).filter(|&o| o < BAR_LEN)?;
        Some(if off >= DEVICE {
            let at = (off - DEVICE) as usize;
            (0..width.bytes()).fold(0u64, |v, i| {
                v | u64::from(*self.config.get(at + i).unwrap_or(&0)) << (8 * i)
            })
        } else if off < NOTIFY {
            self.common_read(off - COMMON)
        } else {
            0
        })
    }

    fn mmio_write(&mut self, hal: &FakeHal, addr: u64, _width: Width, value: u64) -> bool {
        let Some(off) = addr.checked_sub(self.bar).filter(|&o| o < BAR_LEN) else {
            return false;
        };
        if off < NOTIFY {
            self.common_write(off - COMMON, value);
        } else if off < ISR {
            self.poll(hal);
        }
        true
    }

    fn pio_read(&mut self, port: u16, _width: Width) -> Option<u32> {
        let base = harness::harness_base(self.harness?);
        let off = port
            .checked_sub(base)
            .filter(|&o| o < harness::HARNESS_LEN)?;
        Some(match off {
            reg::SIGNATURE => SIGNATURE,
            reg::STATUS if self.input.is_empty() => status::INPUT_DRAINED,
            reg::RX_DELIVERED => self.delivered,
            _ => 0,
        })
    }

    fn poll(&mut self, hal: &FakeHal) {
        if self.status & DRIVER_OK == 0 {
            return;
        }
        self.serve_ctrl(hal);
        self.deliver(hal);
        self.capture(hal);
    }
}
