//! The transport's registers against a fake device type: what a driver reads and writes in
//! the common configuration, the ISR and the legacy I/O BAR, and what the device is given.

use std::sync::Mutex;

use vm_memory::GuestAddress;

use super::*;
use crate::virtio::{ActivateError, MsiMessage};

const NET: u64 = 1 << 5;
const CTRL: u64 = 1 << 17;
/// Needs CTRL: the fake device refuses it alone, as virtio-net does.
const NEEDS_CTRL: u64 = 1 << 18;
const OFFERED: u64 = NET | CTRL | NEEDS_CTRL | features::RING_EVENT_IDX | features::VERSION_1;
const MAX_SIZES: [u16; 3] = [256, 256, 64];

/// Register offsets of `struct virtio_pci_common_cfg`.
mod reg {
    pub const DFSELECT: u64 = 0x00;
    pub const DF: u64 = 0x04;
    pub const GFSELECT: u64 = 0x08;
    pub const GF: u64 = 0x0c;
    pub const MSIX: u64 = 0x10;
    pub const NUMQ: u64 = 0x12;
    pub const STATUS: u64 = 0x14;
    pub const SELECT: u64 = 0x16;
    pub const SIZE: u64 = 0x18;
    pub const VECTOR: u64 = 0x1a;
    pub const ENABLE: u64 = 0x1c;
    pub const NOFF: u64 = 0x1e;
    pub const DESC: u64 = 0x20;
    pub const DRIVER: u64 = 0x28;
    pub const DEVICE: u64 = 0x30;
}

/// What the fake device was given and asked.
#[derive(Default)]
struct Seen {
    activations: Vec<Activation>,
    resets: usize,
}

struct Fake {
    seen: Arc<Mutex<Seen>>,
    offered: u64,
}

impl VirtioDevice for Fake {
    fn device_type(&self) -> u16 {
        1
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        MAX_SIZES.to_vec()
    }
    fn features(&self) -> u64 {
        self.offered
    }
    fn features_consistent(&self, f: u64) -> bool {
        f & NEEDS_CTRL == 0 || f & CTRL != 0
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = 0xc0 + offset as u8 + i as u8;
        }
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    fn config_generation(&self) -> u8 {
        7
    }
    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        self.seen.lock().unwrap().activations.push(a);
        Ok(())
    }
    fn reset(&mut self) {
        self.seen.lock().unwrap().resets += 1;
    }
}

struct NoMsi;
impl MsiSink for NoMsi {
    fn send(&self, _: MsiMessage) {}
}

struct Rig {
    dev: VirtioPciDevice<Fake>,
    seen: Arc<Mutex<Seen>>,
}

fn rig(options: Options) -> Rig {
    rig_offering(options, OFFERED)
}

fn rig_offering(options: Options, offered: u64) -> Rig {
    let mem = Arc::new(Memory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let fake = Fake {
        seen: seen.clone(),
        offered,
    };
    let dev = VirtioPciDevice::new(fake, mem, Arc::new(NoMsi), options).unwrap();
    Rig { dev, seen }
}

impl Rig {
    fn w(&mut self, off: u64, v: u64, len: usize) {
        self.dev.bar_write(MODERN_BAR, off, &v.to_le_bytes()[..len]);
    }

    fn r(&mut self, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.dev.bar_read(MODERN_BAR, off, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    fn lw(&mut self, off: u64, v: u64, len: usize) {
        self.dev.bar_write(LEGACY_BAR, off, &v.to_le_bytes()[..len]);
    }

    fn lr(&mut self, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.dev.bar_read(LEGACY_BAR, off, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    fn status(&mut self) -> u8 {
        self.r(reg::STATUS, 1) as u8
    }

    fn driver_features(&mut self, f: u64) {
        for sel in 0..2 {
            self.w(reg::GFSELECT, sel, 4);
            self.w(reg::GF, (f >> (32 * sel)) & 0xffff_ffff, 4);
        }
    }

    /// ACKNOWLEDGE, DRIVER, the features, FEATURES_OK; returns the status read back.
    fn negotiate(&mut self, f: u64) -> u8 {
        self.w(reg::STATUS, 1, 1);
        self.w(reg::STATUS, 3, 1);
        self.driver_features(f);
        self.w(reg::STATUS, 0xb, 1);
        self.status()
    }

    /// Programs queue `q` with rings at `base` and enables it.
    fn queue(&mut self, q: u16, size: u16, base: u64) {
        self.w(reg::SELECT, u64::from(q), 2);
        self.w(reg::SIZE, u64::from(size), 2);
        self.w(reg::DESC, base, 8);
        self.w(reg::DRIVER, base + 0x1000, 8);
        self.w(reg::DEVICE, base + 0x2000, 8);
        self.w(reg::ENABLE, 1, 2);
    }

    fn activations(&self) -> usize {
        self.seen.lock().unwrap().activations.len()
    }
}

#[test]
fn device_features_are_read_through_the_select_window() {
    let mut r = rig(Options::default());
    assert_eq!(r.r(reg::DF, 4), OFFERED & 0xffff_ffff);
    r.w(reg::DFSELECT, 1, 4);
    assert_eq!(r.r(reg::DFSELECT, 4), 1);
    assert_eq!(r.r(reg::DF, 4), OFFERED >> 32);
    r.w(reg::DFSELECT, 2, 4);
    assert_eq!(r.r(reg::DF, 4), 0, "no feature bits beyond 63");
    // The window is read-only.
    r.w(reg::DF, 0xffff_ffff, 4);
    r.w(reg::DFSELECT, 0, 4);
    assert_eq!(r.r(reg::DF, 4), OFFERED & 0xffff_ffff);
}

#[test]
fn driver_features_are_written_through_the_select_window_until_features_ok() {
    let mut r = rig(Options::default());
    r.w(reg::GFSELECT, 0, 4);
    r.w(reg::GF, NET, 4);
    r.w(reg::GFSELECT, 1, 4);
    r.w(reg::GF, features::VERSION_1 >> 32, 4);
    assert_eq!(r.r(reg::GF, 4), 1);
    r.w(reg::GFSELECT, 0, 4);
    assert_eq!(r.r(reg::GF, 4), NET);
    assert_eq!(r.dev.driver_features(), NET | features::VERSION_1);
    r.w(reg::GFSELECT, 2, 4);
    r.w(reg::GF, 1, 4);
    assert_eq!(r.r(reg::GF, 4), 0);
    assert_eq!(r.dev.stats.refused_writes, 1, "no window beyond bit 63");

    r.w(reg::STATUS, 1, 1);
    r.w(reg::STATUS, 3, 1);
    r.w(reg::STATUS, 0xb, 1);
    assert_eq!(r.status() & status::FEATURES_OK, status::FEATURES_OK);
    r.w(reg::GFSELECT, 0, 4);
    r.w(reg::GF, 0, 4);
    assert_eq!(
        r.dev.stats.refused_writes, 2,
        "features are fixed after FEATURES_OK"
    );
    assert_eq!(r.dev.driver_features(), NET | features::VERSION_1);
}

#[test]
fn features_ok_is_refused_for_features_not_offered_inconsistent_or_without_version_1() {
    for bad in [
        NET,
        NET | features::VERSION_1 | features::RING_INDIRECT_DESC,
        NEEDS_CTRL | features::VERSION_1,
    ] {
        let mut r = rig(Options::default());
        assert_eq!(r.negotiate(bad), 3, "{bad:#x}: FEATURES_OK does not stick");
        assert_eq!(r.dev.stats.refused_features, 1);
        // DRIVER_OK without FEATURES_OK: the device needs a reset, and is not started.
        r.w(reg::STATUS, 0x7, 1);
        assert_eq!(r.status(), 0x7 | status::DEVICE_NEEDS_RESET);
        assert_eq!(r.activations(), 0);
    }
    let mut r = rig(Options::default());
    let good = NEEDS_CTRL | CTRL | features::VERSION_1;
    assert_eq!(r.negotiate(good), 0xb);
    assert_eq!(r.dev.stats.refused_features, 0);
}

#[test]
fn status_bits_are_only_cleared_by_a_reset() {
    let mut r = rig(Options::default());
    assert_eq!(r.negotiate(NET | features::VERSION_1), 0xb);
    r.w(reg::STATUS, 1, 1);
    assert_eq!(r.status(), 0xb);
    r.w(reg::MSIX, 0, 2);
    r.queue(0, 128, 0x10000);
    r.w(reg::STATUS, 0, 1);
    assert_eq!(r.status(), 0);
    assert_eq!(r.dev.driver_features(), 0);
    assert_eq!(r.seen.lock().unwrap().resets, 1);
    r.w(reg::SELECT, 0, 2);
    assert_eq!(r.r(reg::ENABLE, 2), 0, "queues are disabled again");
    assert_eq!(r.r(reg::SIZE, 2), 256, "sizes back at the maximum");
    assert_eq!(r.r(reg::DESC, 8), 0);
    assert_eq!(r.r(reg::MSIX, 2), u64::from(NO_VECTOR));
}

#[test]
fn the_queues_are_numbered_and_a_nonexistent_one_reads_as_absent() {
    let mut r = rig(Options::default());
    assert_eq!(r.r(reg::NUMQ, 2), 3);
    for (q, max) in MAX_SIZES.iter().enumerate() {
        r.w(reg::SELECT, q as u64, 2);
        assert_eq!(r.r(reg::SELECT, 2), q as u64);
        assert_eq!(r.r(reg::SIZE, 2), u64::from(*max));
        assert_eq!(r.r(reg::NOFF, 2), q as u64);
    }
    r.w(reg::SELECT, 3, 2);
    assert_eq!(r.r(reg::SELECT, 2), 3);
    assert_eq!(
        r.r(reg::SIZE, 2),
        0,
        "queue_size 0: the queue is unavailable"
    );
    assert_eq!(r.r(reg::ENABLE, 2), 0);
    assert_eq!(r.r(reg::VECTOR, 2), u64::from(NO_VECTOR));
    r.w(reg::SIZE, 16, 2);
    r.w(reg::ENABLE, 1, 2);
    r.w(reg::VECTOR, 0, 2);
    r.w(reg::DESC, 0x1000, 8);
    assert_eq!(r.dev.stats.refused_writes, 4);
    assert_eq!(r.dev.stats.bad_accesses, 0);
    assert_eq!(r.r(reg::DESC, 8), 0);
    assert_eq!(
        r.dev.stats.bad_accesses, 1,
        "a nonexistent queue has no addresses"
    );
}

#[test]
fn queue_fields_are_writable_until_the_queue_is_enabled() {
    let mut r = rig(Options::default());
    r.w(reg::SELECT, 2, 2);
    for bad in [0, 48, 128] {
        r.w(reg::SIZE, bad, 2);
    }
    assert_eq!(
        r.dev.stats.refused_writes, 3,
        "0, not a power of 2, above the maximum"
    );
    r.w(reg::SIZE, 32, 2);
    assert_eq!(r.r(reg::SIZE, 2), 32);
    // The addresses, as two halves or whole.
    r.w(reg::DESC, 0x1234_5000, 4);
    r.w(reg::DESC + 4, 0x1, 4);
    assert_eq!(r.r(reg::DESC, 8), 0x1_1234_5000);
    assert_eq!(r.r(reg::DESC + 4, 4), 0x1);
    r.w(reg::DRIVER, 0x2000, 8);
    r.w(reg::DEVICE + 4, 0x2, 8);
    assert_eq!(
        r.dev.stats.refused_writes, 4,
        "an 8-byte write at the upper half"
    );
    r.w(reg::ENABLE, 0, 2);
    assert_eq!(r.dev.stats.refused_writes, 5, "only 1 may be written");
    assert_eq!(r.r(reg::ENABLE, 2), 0);
    r.w(reg::ENABLE, 1, 2);
    assert_eq!(r.r(reg::ENABLE, 2), 1);
    r.w(reg::SIZE, 16, 2);
    r.w(reg::DESC, 0, 8);
    r.w(reg::ENABLE, 1, 2);
    assert_eq!(r.dev.stats.refused_writes, 8, "an enabled queue is fixed");
    assert_eq!((r.r(reg::SIZE, 2), r.r(reg::DESC, 8)), (32, 0x1_1234_5000));
    assert_eq!(r.r(reg::DRIVER, 8), 0x2000);
}

#[test]
fn a_fixed_queue_size_refuses_any_other() {
    let mut r = rig(Options {
        fixed_queue_size: true,
        ..Options::default()
    });
    r.w(reg::SIZE, 128, 2);
    assert_eq!(r.dev.stats.refused_writes, 1);
    r.w(reg::SIZE, 256, 2);
    assert_eq!(r.dev.stats.refused_writes, 1);
}

#[test]
fn driver_ok_activates_the_device_with_the_queues_the_driver_enabled() {
    let mut r = rig(Options::default());
    assert_eq!(
        r.negotiate(NET | features::VERSION_1 | features::RING_EVENT_IDX),
        0xb
    );
    r.queue(0, 128, 0x10000);
    r.queue(2, 16, 0x20000);
    r.w(reg::STATUS, 0xf, 1);
    assert_eq!(r.status(), 0xf);
    let seen = r.seen.lock().unwrap();
    let [a] = &seen.activations[..] else {
        panic!("one activation");
    };
    assert_eq!(
        a.features,
        NET | features::VERSION_1 | features::RING_EVENT_IDX
    );
    assert_eq!(a.queues.len(), 3);
    assert!(a.queues[1].is_none());
    let q0 = a.queues[0].as_ref().unwrap();
    assert_eq!(q0.index, 0);
    assert_eq!((q0.queue.size(), q0.queue.max_size()), (128, 256));
    assert_eq!(
        q0.queue.addresses(),
        RingAddresses {
            desc: 0x10000,
            driver: 0x11000,
            device: 0x12000
        }
    );
    assert!(q0.queue.ready() && q0.queue.event_idx());
    let q2 = a.queues[2].as_ref().unwrap();
    assert_eq!((q2.index, q2.queue.size()), (2, 16));
}

#[test]
fn rings_outside_memory_make_the_device_need_a_reset_instead_of_starting() {
    let mut r = rig(Options::default());
    assert_eq!(r.negotiate(NET | features::VERSION_1), 0xb);
    r.queue(0, 256, (1 << 20) - 0x1000);
    r.w(reg::STATUS, 0xf, 1);
    assert_eq!(r.status(), 0xf | status::DEVICE_NEEDS_RESET);
    assert_eq!(r.activations(), 0);
    assert_eq!(r.dev.health().errors(), 1);
}

#[test]
fn kicks_signal_the_queues_eventfd() {
    let mut r = rig(Options::default());
    assert_eq!(r.negotiate(NET | features::VERSION_1), 0xb);
    r.queue(1, 64, 0x10000);
    r.w(reg::STATUS, 0xf, 1);
    r.w(NOTIFY_OFFSET + 4, 1, 2);
    r.w(NOTIFY_OFFSET + 4, 1, 2);
    let seen = r.seen.lock().unwrap();
    let q1 = seen.activations[0].queues[1].as_ref().unwrap();
    assert_eq!(q1.kick.read().unwrap(), 2);
    drop(seen);
    // Past the last queue's slot.
    r.w(NOTIFY_OFFSET + 4 * 3, 3, 2);
    assert_eq!(r.dev.stats.bad_accesses, 1);
}

#[test]
fn reading_the_isr_acknowledges_it() {
    let mut r = rig(Options::default());
    assert_eq!(r.negotiate(NET | features::VERSION_1), 0xb);
    r.queue(0, 64, 0x10000);
    r.w(reg::STATUS, 0xf, 1);
    let irq = r.seen.lock().unwrap().activations[0].interrupt.clone();
    assert_eq!(r.r(ISR_OFFSET, 1), 0);
    irq.queue(0);
    assert_eq!(r.r(ISR_OFFSET, 1), 1, "bit 0: a queue");
    assert_eq!(r.r(ISR_OFFSET, 1), 0, "read, cleared");
    irq.queue(0);
    irq.config_changed();
    assert_eq!(r.r(ISR_OFFSET, 1), 3, "bit 1: the configuration");
    assert_eq!(r.r(ISR_OFFSET, 1), 0);
}

#[test]
fn odd_accesses_to_the_common_configuration_are_counted_and_ignored() {
    let mut r = rig(Options::default());
    assert_eq!(r.r(reg::DF, 2), 0, "a 2-byte read of a 4-byte field");
    r.w(reg::STATUS, 0xf, 2);
    assert_eq!(r.status(), 0, "a 2-byte write of the 1-byte status");
    r.w(0x38, 1, 4);
    assert_eq!(r.dev.stats.bad_accesses, 3);
    // The device configuration window is the device's.
    assert_eq!(r.r(DEVICE_OFFSET + 2, 2), 0xc3c2);
    assert_eq!(r.r(0x15, 1), 7, "config_generation");
}

#[test]
fn the_legacy_interface_has_its_registers_in_the_io_bar() {
    let mut r = rig(Options {
        transitional: true,
        ..Options::default()
    });
    assert_eq!(
        r.lr(0x00, 4),
        OFFERED & 0xffff_ffff,
        "host features: 32 bits"
    );
    r.lw(0x12, 1, 1);
    r.lw(0x12, 3, 1);
    r.lw(0x04, NET, 4);
    assert_eq!(r.lr(0x04, 4), NET);
    r.lw(0x0e, 2, 2);
    assert_eq!(r.lr(0x0e, 2), 2);
    assert_eq!(r.lr(0x0c, 2), 64, "the queue size is the device's");
    // Queue 2 at page 0x10: descriptors, available ring, used ring on the next page.
    r.lw(0x08, 0x10, 4);
    assert_eq!(r.lr(0x08, 4), 0x10);
    r.w(reg::SELECT, 2, 2);
    assert_eq!(r.r(reg::DESC, 8), 0x10000);
    assert_eq!(r.r(reg::DRIVER, 8), 0x10000 + 16 * 64);
    assert_eq!(r.r(reg::DEVICE, 8), 0x11000);
    assert_eq!(r.r(reg::ENABLE, 2), 1);
    // Without MSI-X the device configuration starts at 0x14.
    assert_eq!(r.lr(0x14, 1), 0xc0);
    // No FEATURES_OK: DRIVER_OK activates with the features as they are.
    r.lw(0x12, 0x7, 1);
    assert_eq!(r.lr(0x12, 1), 0x7);
    assert_eq!(r.activations(), 1);
    r.lw(0x10, 2, 2);
    let irq = {
        let seen = r.seen.lock().unwrap();
        let q = seen.activations[0].queues[2].as_ref().unwrap();
        assert_eq!(q.kick.read().unwrap(), 1, "QUEUE_NOTIFY kicks");
        seen.activations[0].interrupt.clone()
    };
    irq.queue(2);
    assert_eq!(r.lr(0x13, 1), 1, "ISR");
    assert_eq!(r.lr(0x13, 1), 0, "read, cleared");
    // Features cannot change while the driver runs.
    r.lw(0x04, 0, 4);
    assert_eq!(r.lr(0x04, 4), NET);
    assert_eq!(r.dev.stats.refused_writes, 1);
    // A reset through the legacy status.
    r.lw(0x12, 0, 1);
    assert_eq!(r.lr(0x12, 1), 0);
    assert_eq!(r.lr(0x08, 4), 0, "queues disabled");
}

#[test]
fn a_legacy_driver_accepting_features_not_offered_makes_the_device_need_a_reset() {
    let mut r = rig(Options {
        transitional: true,
        ..Options::default()
    });
    r.lw(0x04, NET | 1, 4);
    r.lw(0x12, 0x7, 1);
    assert_eq!(r.lr(0x12, 1) as u8, 0x7 | status::DEVICE_NEEDS_RESET);
    assert_eq!(r.activations(), 0);
    assert_eq!(r.dev.stats.refused_features, 1);
}

#[test]
fn a_modern_only_device_has_no_legacy_interface() {
    let mut r = rig(Options::default());
    assert_eq!(r.lr(0x00, 4), 0);
    r.lw(0x12, 0x7, 1);
    assert_eq!(r.status(), 0);
}

const PACKED: u64 = features::RING_PACKED | features::IN_ORDER;

#[test]
fn a_driver_that_negotiated_packed_rings_gets_them_in_any_size() {
    let mut r = rig_offering(Options::default(), OFFERED | PACKED);
    r.w(reg::DFSELECT, 1, 4);
    assert_eq!(
        r.r(reg::DF, 4),
        (OFFERED | PACKED) >> 32,
        "bits 34 and 35 offered"
    );
    let f = NET | features::VERSION_1 | features::RING_EVENT_IDX | PACKED;
    // Before FEATURES_OK a size must still be a power of 2.
    r.w(reg::SELECT, 0, 2);
    r.w(reg::SIZE, 100, 2);
    assert_eq!(r.dev.stats.refused_writes, 1);
    assert_eq!(r.negotiate(f), 0xb);
    r.queue(0, 100, 0x10000);
    r.queue(2, 7, 0x20000);
    assert_eq!(r.dev.stats.refused_writes, 1, "any size up to the maximum");
    r.w(reg::SELECT, 1, 2);
    r.w(reg::SIZE, 0, 2);
    r.w(reg::SIZE, 257, 2);
    assert_eq!(r.dev.stats.refused_writes, 3, "but 0 and above the maximum");
    r.w(reg::STATUS, 0xf, 1);
    assert_eq!(r.status(), 0xf);
    let seen = r.seen.lock().unwrap();
    let a = &seen.activations[0];
    assert_eq!(a.features, f);
    let q0 = a.queues[0].as_ref().unwrap();
    assert_eq!(q0.queue.layout(), Layout::Packed);
    assert_eq!((q0.queue.size(), q0.queue.max_size()), (100, 256));
    assert_eq!(
        q0.queue.addresses(),
        RingAddresses {
            desc: 0x10000,
            driver: 0x11000,
            device: 0x12000
        }
    );
    assert_eq!(
        q0.queue.position().next_avail,
        1 << 15,
        "wrap counters start at 1"
    );
    assert_eq!(a.queues[2].as_ref().unwrap().queue.size(), 7);
}

#[test]
fn without_packed_rings_negotiated_the_rings_are_split() {
    let mut r = rig_offering(Options::default(), OFFERED | PACKED);
    assert_eq!(
        r.negotiate(NET | features::VERSION_1 | features::IN_ORDER),
        0xb
    );
    r.queue(0, 64, 0x10000);
    r.w(reg::STATUS, 0xf, 1);
    let seen = r.seen.lock().unwrap();
    let q0 = seen.activations[0].queues[0].as_ref().unwrap();
    assert_eq!(q0.queue.layout(), Layout::Split);
}

#[test]
fn features_ok_is_refused_for_packed_rings_or_in_order_the_device_did_not_offer() {
    for extra in [features::RING_PACKED, features::IN_ORDER, PACKED] {
        let mut r = rig(Options::default());
        assert_eq!(
            r.negotiate(NET | features::VERSION_1 | extra),
            3,
            "{extra:#x}"
        );
        assert_eq!(r.dev.stats.refused_features, 1);
        // Sizes stay powers of 2: nothing was negotiated.
        r.w(reg::SELECT, 0, 2);
        r.w(reg::SIZE, 100, 2);
        assert_eq!(r.dev.stats.refused_writes, 1);
    }
}

#[test]
fn a_legacy_driver_never_sees_nor_gets_packed_rings() {
    let mut r = rig_offering(
        Options {
            transitional: true,
            ..Options::default()
        },
        OFFERED | PACKED,
    );
    assert_eq!(
        r.lr(0x00, 4),
        OFFERED & 0xffff_ffff,
        "32 bits: no bit 34 or 35"
    );
    // A driver that wrote the modern window first, then went legacy: refused.
    r.driver_features(NET | features::RING_PACKED);
    r.lw(0x12, 0x7, 1);
    assert_eq!(
        r.lr(0x12, 1) as u8 & status::DEVICE_NEEDS_RESET,
        status::DEVICE_NEEDS_RESET
    );
    assert_eq!(r.activations(), 0);
    // A plain legacy driver: split rings.
    r.lw(0x12, 0, 1);
    r.lw(0x12, 3, 1);
    r.lw(0x04, NET, 4);
    r.lw(0x0e, 0, 2);
    r.lw(0x08, 0x10, 4);
    r.lw(0x12, 0x7, 1);
    let seen = r.seen.lock().unwrap();
    let q0 = seen.activations[0].queues[0].as_ref().unwrap();
    assert_eq!(q0.queue.layout(), Layout::Split);
    assert_eq!(seen.activations[0].features, NET);
}
