//! A hand-driven virtio-net device: the registers, rings and guest memory a test plays the
//! driver with.
#![allow(dead_code)]

pub mod hostile;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use device_model::endpoint::{PcapSource, Sink, SinkError, Source};
use device_model::net::{Net, NetConfig, NetStats};
use device_model::pcap::Frame;
use device_model::pci::PciDevice;
use device_model::virtio::{status, Memory, MsiMessage, MsiSink};
use device_model::virtio_pci::{Options, VirtioPciDevice, MODERN_BAR, NOTIFY_OFFSET};
use vm_memory::{Bytes, GuestAddress};

pub const RAM: usize = 1 << 20;
pub const VERSION_1: u64 = 1 << 32;
pub const EVENT_IDX: u64 = 1 << 29;
pub const MAC: u64 = 1 << 5;

/// Keeps every MSI message the device sends.
#[derive(Default)]
pub struct Msis(pub Mutex<Vec<MsiMessage>>);
impl MsiSink for Msis {
    fn send(&self, m: MsiMessage) {
        self.0.lock().unwrap().push(m);
    }
}

/// Drops every MSI message.
pub struct NoMsi;
impl MsiSink for NoMsi {
    fn send(&self, _: MsiMessage) {}
}

/// Input frames, as a pcap source takes them.
pub fn frames(input: Vec<Vec<u8>>) -> Vec<Frame> {
    input
        .into_iter()
        .map(|data| Frame {
            ts: Duration::ZERO,
            data,
        })
        .collect()
}

/// A sink that keeps what it is given.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<Vec<u8>>>>);
impl Sink for Capture {
    fn put(&mut self, frame: &[u8]) -> Result<(), SinkError> {
        self.0.lock().unwrap().push(frame.to_vec());
        Ok(())
    }
    fn frames(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

pub struct Rig {
    pub dev: VirtioPciDevice<Net>,
    pub mem: Arc<Memory>,
    pub stats: Arc<NetStats>,
    pub out: Capture,
}

/// Ring addresses used by the tests: queue q's descriptors at 0x10000 * (q + 1).
pub fn desc_addr(q: u16) -> u64 {
    0x10000 * (u64::from(q) + 1)
}
pub fn avail_addr(q: u16) -> u64 {
    desc_addr(q) + 0x4000
}
pub fn used_addr(q: u16) -> u64 {
    desc_addr(q) + 0x8000
}
pub const SIZE: u16 = 8;

impl Rig {
    pub fn new(input: Vec<Vec<u8>>) -> Self {
        Self::with_msi(input, Arc::new(NoMsi))
    }

    /// A rig whose MSI messages go to `msi`.
    pub fn with_msi(input: Vec<Vec<u8>>, msi: Arc<dyn MsiSink>) -> Self {
        let mem = Arc::new(Memory::from_ranges(&[(GuestAddress(0), RAM)]).unwrap());
        Self::on(
            mem,
            Box::new(PcapSource::new(frames(input))),
            NetConfig::default(),
            Options::default(),
            msi,
        )
    }

    /// A rig on guest memory `mem` (any layout), with a device configured by `cfg` and
    /// `options` whose frames come from `source`.
    pub fn on(
        mem: Arc<Memory>,
        source: Box<dyn Source>,
        cfg: NetConfig,
        options: Options,
        msi: Arc<dyn MsiSink>,
    ) -> Self {
        let out = Capture::default();
        let net = Net::new(cfg, source, Box::new(out.clone()));
        let stats = net.stats();
        let mut dev = VirtioPciDevice::new(net, mem.clone(), msi, options).unwrap();
        // As firmware would: BAR4 at 0xd0000000.
        dev.config_write(0x20, &0xd000_0000u32.to_le_bytes());
        Self {
            dev,
            mem,
            stats,
            out,
        }
    }

    pub fn w(&mut self, off: u64, v: u64, len: usize) {
        self.dev.bar_write(MODERN_BAR, off, &v.to_le_bytes()[..len]);
    }

    pub fn r(&mut self, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.dev.bar_read(MODERN_BAR, off, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    pub fn status(&mut self) -> u8 {
        self.r(0x14, 1) as u8
    }

    /// Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK; returns the status read back.
    pub fn negotiate(&mut self, features: u64) -> u8 {
        self.w(0x14, 0, 1);
        self.w(0x14, 1, 1);
        self.w(0x14, 3, 1);
        for sel in 0..2u64 {
            self.w(0x08, sel, 4);
            self.w(0x0c, (features >> (32 * sel)) & 0xffff_ffff, 4);
        }
        self.w(0x14, 0xb, 1);
        self.status()
    }

    pub fn queue(&mut self, q: u16, size: u16, desc: u64, avail: u64, used: u64) {
        self.w(0x16, u64::from(q), 2);
        self.w(0x18, u64::from(size), 2);
        for (off, v) in [(0x20, desc), (0x28, avail), (0x30, used)] {
            self.w(off, v & 0xffff_ffff, 4);
            self.w(off + 4, v >> 32, 4);
        }
        self.w(0x1c, 1, 2);
    }

    pub fn start(&mut self) {
        assert_eq!(
            self.negotiate(VERSION_1 | MAC) & status::FEATURES_OK,
            status::FEATURES_OK
        );
        for q in 0..2 {
            self.queue(q, SIZE, desc_addr(q), avail_addr(q), used_addr(q));
        }
        self.w(0x14, 0xf, 1);
    }

    pub fn desc(&self, q: u16, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let a = GuestAddress(desc_addr(q) + 16 * u64::from(i));
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem.write_slice(&d, a).unwrap();
    }

    /// Puts `heads` in the avail ring and sets its index to `idx`, then notifies.
    pub fn offer(&mut self, q: u16, heads: &[u16], idx: u16) {
        for (k, h) in heads.iter().enumerate() {
            let slot = GuestAddress(avail_addr(q) + 4 + 2 * (k as u64 % u64::from(SIZE)));
            self.mem.write_obj(*h, slot).unwrap();
        }
        self.mem
            .write_obj(idx, GuestAddress(avail_addr(q) + 2))
            .unwrap();
        self.w(NOTIFY_OFFSET + 4 * u64::from(q), u64::from(q), 2);
    }

    pub fn used_idx(&self, q: u16) -> u16 {
        self.mem.read_obj(GuestAddress(used_addr(q) + 2)).unwrap()
    }

    pub fn used_elem(&self, q: u16, k: u16) -> (u32, u32) {
        let a = used_addr(q) + 4 + 8 * u64::from(k % SIZE);
        (
            self.mem.read_obj(GuestAddress(a)).unwrap(),
            self.mem.read_obj(GuestAddress(a + 4)).unwrap(),
        )
    }

    /// Waits (bounded) until the device has returned `n` chains on queue `q`.
    pub fn wait_used(&self, q: u16, n: u16) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.used_idx(q) < n {
            assert!(
                Instant::now() < deadline,
                "queue {q}: device returned {} of {n}",
                self.used_idx(q)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
