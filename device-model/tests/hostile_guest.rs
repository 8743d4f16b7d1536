//! The device under a driver that breaks the rules: every test here plays the driver by
//! hand, through the transport's registers and rings written straight into guest memory,
//! and checks the spec's answer, the counters, and that nothing panics or hangs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use device_model::endpoint::{PcapSource, Sink, SinkError};
use device_model::net::{Net, NetConfig, NetStats};
use device_model::pcap::Frame;
use device_model::pci::PciDevice;
use device_model::virtio::{status, Memory, MsiMessage, MsiSink};
use device_model::virtio_pci::{Options, VirtioPciDevice, MODERN_BAR, NOTIFY_OFFSET};
use vm_memory::{Bytes, GuestAddress};

const RAM: usize = 1 << 20;
const VERSION_1: u64 = 1 << 32;
const EVENT_IDX: u64 = 1 << 29;
const MAC: u64 = 1 << 5;

struct NoMsi;
impl MsiSink for NoMsi {
    fn send(&self, _: MsiMessage) {}
}

/// A sink that keeps what it is given.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Vec<u8>>>>);
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

struct Rig {
    dev: VirtioPciDevice<Net>,
    mem: Arc<Memory>,
    stats: Arc<NetStats>,
    out: Capture,
}

/// Ring addresses used by the tests: queue q's descriptors at 0x10000 * (q + 1).
fn desc_addr(q: u16) -> u64 {
    0x10000 * (u64::from(q) + 1)
}
fn avail_addr(q: u16) -> u64 {
    desc_addr(q) + 0x4000
}
fn used_addr(q: u16) -> u64 {
    desc_addr(q) + 0x8000
}
const SIZE: u16 = 8;

impl Rig {
    fn new(input: Vec<Vec<u8>>) -> Self {
        let mem = Arc::new(Memory::from_ranges(&[(GuestAddress(0), RAM)]).unwrap());
        let frames = input
            .into_iter()
            .map(|data| Frame {
                ts: Duration::ZERO,
                data,
            })
            .collect();
        let out = Capture::default();
        let net = Net::new(
            NetConfig::default(),
            Box::new(PcapSource::new(frames)),
            Box::new(out.clone()),
        );
        let stats = net.stats();
        let mut dev =
            VirtioPciDevice::new(net, mem.clone(), Arc::new(NoMsi), Options::default()).unwrap();
        // As firmware would: BAR4 at 0xd0000000.
        dev.config_write(0x20, &0xd000_0000u32.to_le_bytes());
        Self {
            dev,
            mem,
            stats,
            out,
        }
    }

    fn w(&mut self, off: u64, v: u64, len: usize) {
        self.dev.bar_write(MODERN_BAR, off, &v.to_le_bytes()[..len]);
    }

    fn r(&mut self, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.dev.bar_read(MODERN_BAR, off, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    fn status(&mut self) -> u8 {
        self.r(0x14, 1) as u8
    }

    /// Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK; returns the status read back.
    fn negotiate(&mut self, features: u64) -> u8 {
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

    fn queue(&mut self, q: u16, size: u16, desc: u64, avail: u64, used: u64) {
        self.w(0x16, u64::from(q), 2);
        self.w(0x18, u64::from(size), 2);
        for (off, v) in [(0x20, desc), (0x28, avail), (0x30, used)] {
            self.w(off, v & 0xffff_ffff, 4);
            self.w(off + 4, v >> 32, 4);
        }
        self.w(0x1c, 1, 2);
    }

    fn start(&mut self) {
        assert_eq!(
            self.negotiate(VERSION_1 | MAC) & status::FEATURES_OK,
            status::FEATURES_OK
        );
        for q in 0..2 {
            self.queue(q, SIZE, desc_addr(q), avail_addr(q), used_addr(q));
        }
        self.w(0x14, 0xf, 1);
    }

    fn desc(&self, q: u16, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let a = GuestAddress(desc_addr(q) + 16 * u64::from(i));
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem.write_slice(&d, a).unwrap();
    }

    /// Puts `heads` in the avail ring and sets its index to `idx`, then notifies.
    fn offer(&mut self, q: u16, heads: &[u16], idx: u16) {
        for (k, h) in heads.iter().enumerate() {
            let slot = GuestAddress(avail_addr(q) + 4 + 2 * (k as u64 % u64::from(SIZE)));
            self.mem.write_obj(*h, slot).unwrap();
        }
        self.mem
            .write_obj(idx, GuestAddress(avail_addr(q) + 2))
            .unwrap();
        self.w(NOTIFY_OFFSET + 4 * u64::from(q), u64::from(q), 2);
    }

    fn used_idx(&self, q: u16) -> u16 {
        self.mem.read_obj(GuestAddress(used_addr(q) + 2)).unwrap()
    }

    fn used_elem(&self, q: u16, k: u16) -> (u32, u32) {
        let a = used_addr(q) + 4 + 8 * u64::from(k % SIZE);
        (
            self.mem.read_obj(GuestAddress(a)).unwrap(),
            self.mem.read_obj(GuestAddress(a + 4)).unwrap(),
        )
    }

    /// Waits (bounded) until the device has returned `n` chains on queue `q`.
    fn wait_used(&self, q: u16, n: u16) {
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

#[test]
fn features_the_device_did_not_offer_are_refused() {
    let mut rig = Rig::new(vec![]);
    // Bit 40 is offered by nobody.
    let s = rig.negotiate(VERSION_1 | (1 << 40));
    assert_eq!(s & status::FEATURES_OK, 0, "FEATURES_OK must not stick");
    assert_eq!(rig.dev.stats.refused_features, 1);
    // A modern device needs VERSION_1.
    let s = rig.negotiate(MAC);
    assert_eq!(s & status::FEATURES_OK, 0);
    // CTRL_RX (bit 18) without CTRL_VQ (bit 17): offered, but inconsistent (5.1.3.1).
    let s = rig.negotiate(VERSION_1 | (1 << 18));
    assert_eq!(s & status::FEATURES_OK, 0);
    assert_eq!(rig.dev.stats.refused_features, 3);
    // What it offers is accepted.
    let s = rig.negotiate(VERSION_1 | MAC | EVENT_IDX);
    assert_eq!(s & status::FEATURES_OK, status::FEATURES_OK);
}

#[test]
fn bad_queue_sizes_are_refused_and_read_back_unchanged() {
    let mut rig = Rig::new(vec![]);
    rig.negotiate(VERSION_1);
    rig.w(0x16, 0, 2);
    let max = rig.r(0x18, 2);
    assert_eq!(max, 256);
    rig.w(0x18, 100, 2);
    assert_eq!(rig.r(0x18, 2), 256, "not a power of two");
    rig.w(0x18, 2048, 2);
    assert_eq!(rig.r(0x18, 2), 256, "above the maximum");
    rig.w(0x18, 0, 2);
    assert_eq!(rig.r(0x18, 2), 256, "zero");
    rig.w(0x18, 64, 2);
    assert_eq!(rig.r(0x18, 2), 64);
    assert_eq!(rig.dev.stats.refused_writes, 3);
    // A queue that does not exist reads as size 0 and takes no writes.
    rig.w(0x16, 7, 2);
    assert_eq!(rig.r(0x18, 2), 0);
    rig.w(0x18, 64, 2);
    assert_eq!(rig.r(0x18, 2), 0);
}

#[test]
fn odd_accesses_are_ignored_not_fatal() {
    let mut rig = Rig::new(vec![]);
    let before = rig.dev.stats.bad_accesses;
    // Wrong widths, unaligned offsets, past the structure, 8-byte status.
    rig.w(0x14, 0xff, 8);
    rig.w(0x13, 1, 1);
    rig.w(0x39, 1, 2);
    rig.w(0xfff, 1, 1);
    let _ = rig.r(0x1, 4);
    let _ = rig.r(0x12, 4);
    assert_eq!(rig.dev.stats.bad_accesses - before, 6);
    assert_eq!(rig.status(), 0, "none of that reached the status");
    // Device config beyond the structure reads as zero; writes are ignored.
    rig.dev.bar_write(MODERN_BAR, 0x2000 + 500, &[1, 2, 3, 4]);
    assert_eq!(rig.r(0x2000 + 500, 4), 0);
    // Other BARs and notify slots of queues that do not exist.
    rig.dev.bar_write(3, 0, &[1, 2, 3, 4]);
    rig.w(NOTIFY_OFFSET + 4 * 40, 40, 2);
}

#[test]
fn rings_outside_ram_make_the_device_need_a_reset() {
    let mut rig = Rig::new(vec![]);
    rig.negotiate(VERSION_1);
    rig.queue(0, SIZE, desc_addr(0), avail_addr(0), used_addr(0));
    rig.queue(1, SIZE, 0xffff_0000_0000, avail_addr(1), used_addr(1));
    rig.w(0x14, 0xf, 1);
    assert_ne!(rig.status() & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(rig.dev.health().errors(), 1);
    // A reset clears it.
    rig.w(0x14, 0, 1);
    assert_eq!(rig.status(), 0);
}

#[test]
fn driver_ok_without_features_ok_needs_a_reset() {
    let mut rig = Rig::new(vec![]);
    rig.w(0x14, 1, 1);
    rig.w(0x14, 3, 1);
    rig.w(0x14, 7, 1);
    assert_ne!(rig.status() & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn hostile_tx_chains_are_returned_and_counted() {
    let mut rig = Rig::new(vec![]);
    rig.start();
    let tx = 1;
    let buf = 0x80000;
    rig.mem.write_slice(&[0u8; 12], GuestAddress(buf)).unwrap();
    rig.mem
        .write_slice(&[0xab; 60], GuestAddress(buf + 12))
        .unwrap();
    // 0: a good 72-byte chain (header + 60 bytes).
    rig.desc(tx, 0, buf, 72, 0, 0);
    // 1: a buffer outside guest RAM.
    rig.desc(tx, 1, 0x7fff_ffff_0000, 72, 0, 0);
    // 2: a write-only buffer on tx.
    rig.desc(tx, 2, buf, 72, 2, 0);
    // 3: a chain shorter than the header.
    rig.desc(tx, 3, buf, 4, 0, 0);
    // 4 -> 4: a loop.
    rig.desc(tx, 4, buf, 72, 1, 4);
    // 5: a buffer that straddles the end of RAM.
    rig.desc(tx, 5, RAM as u64 - 8, 72, 0, 0);
    rig.offer(tx, &[0, 1, 2, 3, 4, 5], 6);
    rig.wait_used(tx, 6);
    let out = rig.out.0.lock().unwrap().clone();
    assert_eq!(out, vec![vec![0xab; 60]], "only the good frame goes out");
    let s = rig.stats.snapshot();
    assert_eq!(
        s.tx_malformed, 5,
        "outside RAM, write-only, short, loop, straddling"
    );
    assert_eq!(s.tx_dropped, 0);
    for k in 0..6 {
        assert_eq!(
            rig.used_elem(tx, k),
            (u32::from(k), 0),
            "every chain comes back, length 0"
        );
    }
    // Still alive and serving: a good chain after all that.
    rig.offer(tx, &[0, 1, 2, 3, 4, 5, 0], 7);
    rig.wait_used(tx, 7);
    assert_eq!(rig.out.0.lock().unwrap().len(), 2);
    assert_eq!(rig.status() & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn an_avail_index_jump_needs_a_reset() {
    let mut rig = Rig::new(vec![]);
    rig.start();
    // The driver claims 100 new chains in an 8-entry ring.
    rig.offer(1, &[], 100);
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.status() & status::DEVICE_NEEDS_RESET == 0 {
        assert!(Instant::now() < deadline, "DEVICE_NEEDS_RESET never set");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(rig.used_idx(1), 0, "nothing served");
    assert!(rig.out.0.lock().unwrap().is_empty());
    // Reset and start again: the device serves a good chain.
    rig.start();
    assert_eq!(rig.status() & status::DEVICE_NEEDS_RESET, 0);
    rig.mem
        .write_slice(&[0u8; 72], GuestAddress(0x80000))
        .unwrap();
    rig.desc(1, 0, 0x80000, 72, 0, 0);
    rig.offer(1, &[0], 1);
    rig.wait_used(1, 1);
    assert_eq!(rig.out.0.lock().unwrap().len(), 1);
}

#[test]
fn hostile_rx_chains_do_not_lose_frames() {
    let frame = vec![0x11u8; 100];
    let mut rig = Rig::new(vec![frame.clone(), vec![0x22; 1500]]);
    rig.start();
    let rx = 0;
    // 0: device-readable buffer in an rx chain: returned empty, the frame waits.
    rig.desc(rx, 0, 0x90000, 2048, 0, 0);
    // 1: a good buffer takes the first frame.
    rig.desc(rx, 1, 0x90000, 2048, 2, 0);
    // 2: too small for the 1500-byte frame: the frame is dropped, the buffer kept.
    rig.desc(rx, 2, 0x91000, 200, 2, 0);
    // 3 -> 3: a loop, returned empty.
    rig.desc(rx, 3, 0x92000, 2048, 2 | 1, 3);
    rig.offer(rx, &[3, 0, 1, 2], 4);
    rig.wait_used(rx, 3);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(rig.used_idx(rx), 3, "the small buffer is not consumed");
    assert_eq!(rig.used_elem(rx, 0), (3, 0));
    assert_eq!(rig.used_elem(rx, 1), (0, 0));
    assert_eq!(rig.used_elem(rx, 2), (1, 112));
    let mut got = vec![0u8; 100];
    rig.mem
        .read_slice(&mut got, GuestAddress(0x90000 + 12))
        .unwrap();
    assert_eq!(got, frame);
    let num_buffers: u16 = rig.mem.read_obj(GuestAddress(0x90000 + 10)).unwrap();
    assert_eq!(num_buffers, 1);
    let s = rig.stats.snapshot();
    assert_eq!((s.rx_malformed, s.rx_delivered, s.rx_dropped), (2, 1, 1));
    assert!(s.input_drained);
}
