//! Property tests: the device under a hostile driver's generated scenarios (see
//! `common/hostile.rs` for what a scenario is and which properties each run checks).
//!
//! `cargo test -p device-model --test proptest_hostile` runs 256 cases (PROPTEST_CASES=N for
//! more); `make fuzz` runs the same harness on a million mutated scenarios.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::hostile::{self, GuardedRam, RESET_LIMIT};
use common::*;
use device_model::virtio::status;
use proptest::prelude::*;
use proptest::test_runner::Config;
use vm_memory::{Bytes, GuestAddress};

fn config() -> Config {
    Config {
        // A failing case is printed (minimised); nothing is written next to the sources.
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// No panic, no hang, no write outside RAM or outside what the driver made writable,
    /// every chain accounted for, DEVICE_NEEDS_RESET when (and only when) it is due.
    #[test]
    fn the_device_survives_hostile_rings(s in hostile::scenario()) {
        thread_local! {
            static RAM: std::cell::RefCell<GuardedRam> = std::cell::RefCell::new(GuardedRam::new());
        }
        let wd = hostile::watchdog();
        wd.arm(Duration::from_secs(20), format!("{s:?}"));
        let report = RAM.with(|ram| hostile::run(&s, &mut ram.borrow_mut()));
        wd.disarm();
        prop_assert!(report.violations.is_empty(), "{:#?}\n{:?}", report.violations, report);
    }
}

/// A driver on another CPU feeds the rx queue one-byte buffers as fast as the device takes
/// them (it sees where the device is from the frames landing in the buffers), so a frame
/// takes 1512 buffers and one pass of the datapath could go on for as long as frames wait.
/// The datapath must neither overflow its batch of used entries (u16) nor keep a reset
/// waiting: it publishes at most a ring's worth of entries per batch and then looks at its
/// stop flag.
#[test]
fn a_racing_driver_cannot_keep_the_datapath_busy_or_overflow_it() {
    const N: u16 = 32768;
    const DESC: u64 = 0x10_0000;
    const AVAIL: u64 = 0x18_0000;
    const USED: u64 = 0x1a_0000;
    const BUFS: u64 = 0x20_0000;
    const MARK: u8 = 0xee;
    let mem =
        Arc::new(device_model::virtio::Memory::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap());
    let input = vec![vec![0x5a; 1500]; 400];
    let cfg = device_model::net::NetConfig {
        queue_size: N,
        ..Default::default()
    };
    let mut rig = Rig::on(
        mem.clone(),
        Box::new(device_model::endpoint::PcapSource::new(frames(input))),
        cfg,
        device_model::virtio_pci::Options::default(),
        Arc::new(NoMsi),
    );
    let mrg = 1u64 << 15;
    assert_eq!(
        rig.negotiate(VERSION_1 | mrg) & status::FEATURES_OK,
        status::FEATURES_OK
    );
    rig.queue(0, N, DESC, AVAIL, USED);
    rig.queue(1, SIZE, 0x30_0000, 0x30_1000, 0x30_2000);
    for i in 0..u64::from(N) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&(BUFS + i).to_le_bytes());
        d[8..12].copy_from_slice(&1u32.to_le_bytes());
        d[12..14].copy_from_slice(&2u16.to_le_bytes());
        mem.write_slice(&d, GuestAddress(DESC + 16 * i)).unwrap();
        mem.write_obj(i as u16, GuestAddress(AVAIL + 4 + 2 * i))
            .unwrap();
        mem.write_obj(MARK, GuestAddress(BUFS + i)).unwrap();
    }
    mem.store(N, GuestAddress(AVAIL + 2), Ordering::Release)
        .unwrap();
    rig.w(0x14, 0xf, 1);

    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let (mem, stop) = (mem.clone(), stop.clone());
        std::thread::spawn(move || {
            // `seen`: buffers the device has written (it is at least that far); `posted`:
            // buffers published. Keep posted within a ring of seen, so the device never
            // runs dry and never sees more than a ring outstanding.
            let (mut seen, mut posted) = (0u64, u64::from(N));
            while !stop.load(Ordering::Relaxed) {
                loop {
                    let at = GuestAddress(BUFS + seen % u64::from(N));
                    if mem.read_obj::<u8>(at).unwrap() == MARK {
                        break;
                    }
                    mem.write_obj(MARK, at).unwrap();
                    seen += 1;
                }
                while posted < seen + u64::from(N) - 1 {
                    let slot = posted % u64::from(N);
                    mem.write_obj(slot as u16, GuestAddress(AVAIL + 4 + 2 * slot))
                        .unwrap();
                    posted += 1;
                }
                mem.store(posted as u16, GuestAddress(AVAIL + 2), Ordering::Release)
                    .unwrap();
            }
        })
    };
    rig.w(NOTIFY_OFFSET_RX, 0, 2);
    std::thread::sleep(Duration::from_millis(300));

    // Reset on a helper thread, so a datapath that never stops fails the test instead of
    // hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let t = Instant::now();
    let resetter = std::thread::spawn(move || {
        rig.w(0x14, 0, 1);
        let _ = tx.send(());
        rig
    });
    let stopped = rx.recv_timeout(RESET_LIMIT).is_ok();
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
    let rig = resetter.join().unwrap();
    assert_eq!(rig.stats.failure(), None, "the datapath failed");
    assert!(
        stopped,
        "the reset did not return within {RESET_LIMIT:?} while the driver kept feeding buffers (it returned {took:?} after the driver stopped)"
    );
    let s = rig.stats.snapshot();
    assert!(s.rx_delivered > 0, "the device delivered nothing: {s:?}");
}

const NOTIFY_OFFSET_RX: u64 = device_model::virtio_pci::NOTIFY_OFFSET;
