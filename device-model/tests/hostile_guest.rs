//! The device under a driver that breaks the rules: every test here plays the driver by
//! hand, through the transport's registers and rings written straight into guest memory,
//! and checks the spec's answer, the counters, and that nothing panics or hangs.

mod common;

use std::time::{Duration, Instant};

use common::*;
use device_model::pci::PciDevice;
use device_model::virtio::status;
use device_model::virtio_pci::{MODERN_BAR, NOTIFY_OFFSET};
use vm_memory::{Bytes, GuestAddress};

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
