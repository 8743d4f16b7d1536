//! The packed queue against a fake platform: what the driver writes is read back from
//! fake guest memory byte by byte, and the test device ([`crate::virtqueue::testdev`])
//! takes chains and writes used descriptors the way the spec says a device does.

use alloc::vec::Vec;

use super::*;
use crate::testing::{Access, FakeHal, POISON};
use crate::virtqueue::testdev::{desc_at, laps, Avail, Elem, TestDevice};
use crate::virtqueue::{Layout, Options, Virtqueue};

const MEM: usize = 1 << 20;

fn opts(event_idx: bool, indirect: u16, in_order: bool) -> Options {
    Options {
        layout: Layout::Packed,
        event_idx,
        indirect,
        in_order,
    }
}

fn queue(hal: &FakeHal, size: u16, event_idx: bool) -> Virtqueue<'_, FakeHal> {
    Virtqueue::new(hal, 1, size, opts(event_idx, 0, false)).expect("a queue")
}

fn out(paddr: u64, len: u32) -> Buf {
    Buf {
        paddr,
        len,
        device_writes: false,
    }
}

fn inb(paddr: u64, len: u32) -> Buf {
    Buf {
        paddr,
        len,
        device_writes: true,
    }
}

/// The 16 bytes a packed descriptor must be in memory.
fn desc_bytes(addr: u64, len: u32, id: u16, flags: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&addr.to_le_bytes());
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v
}

/// Available in the first lap (driver wrap counter 1).
const A1: u16 = DESC_F_AVAIL;

#[test]
fn the_ring_is_the_descriptor_ring_then_the_driver_and_device_areas() {
    for size in [1u16, 7, 255, 256, 32768] {
        let n = u64::from(size);
        assert_eq!(ring_bytes(size) as u64, 16 * n + 8);
        let a = layout(0x1_0000, size);
        assert_eq!(
            (a.desc, a.avail, a.used),
            (0x1_0000, 0x1_0000 + 16 * n, 0x1_0004 + 16 * n)
        );
    }
    let hal = FakeHal::new(MEM);
    // Something before it, so the allocator has to align.
    hal.dma_alloc(3, 1).unwrap();
    let q = queue(&hal, 7, false);
    let a = q.addrs();
    assert_eq!((a.desc % 16, a.avail % 4, a.used % 4), (0, 0, 0));
    assert_eq!((a.avail - a.desc, a.used - a.avail), (7 * 16, 4));
    assert_eq!(q.layout(), Layout::Packed);
    assert_eq!(
        layout(u64::MAX - 15, 1).avail,
        0,
        "placement wraps, never panics"
    );
}

#[test]
fn a_new_queue_is_zeroed_whatever_memory_held() {
    let hal = FakeHal::new(MEM);
    let q = queue(&hal, 255, true);
    let a = q.addrs();
    // Zero: no descriptor is available or used in a first lap, both areas say ENABLE.
    let ring = hal.read(a.desc, ring_bytes(255));
    assert!(ring.iter().all(|&b| b == 0));
    assert_eq!(
        hal.read(a.used + 4, 1)[0],
        POISON,
        "memory past the ring is untouched"
    );
    assert_eq!(
        (
            q.num_free(),
            q.in_flight(),
            q.index(),
            q.size(),
            q.in_order()
        ),
        (255, 0, 1, 255, false)
    );
    assert_eq!(q.indirect_max(), 0);
}

#[test]
fn any_size_to_32768_is_a_packed_size() {
    let hal = FakeHal::new(MEM);
    for size in [0, 32769, 65535] {
        assert_eq!(
            Virtqueue::new(&hal, 0, size, opts(false, 0, false)).err(),
            Some(Error::BadPackedSize(size))
        );
    }
    for size in [1, 3, 100, 255] {
        assert_eq!(queue(&hal, size, false).size(), size);
    }
    let small = FakeHal::new(4096);
    assert_eq!(
        Virtqueue::new(&small, 0, 256, opts(false, 0, false)).err(),
        Some(Error::NoMemory(256))
    );
    assert_eq!(
        Virtqueue::new(&small, 0, 2, opts(false, 1024, false)).err(),
        Some(Error::NoMemory(2)),
        "the ring fits, its indirect tables do not"
    );
}

#[test]
fn a_chain_takes_consecutive_slots_byte_by_byte_and_its_head_is_made_available_last() {
    let hal = FakeHal::new(MEM);
    let mut q = queue(&hal, 8, false);
    let mut dev = TestDevice::new(&q);
    let a = q.addrs();
    let id = q.add(&[out(0x1000, 12), out(0x2000, 1500), inb(0x3000, 1)]);
    assert_eq!(id, Some(0));
    // Everything but the head's flags is written; every descriptor carries the ID.
    let mut expected = desc_bytes(0x1000, 12, 0, 0);
    expected.extend(desc_bytes(0x2000, 1500, 0, A1 | DESC_F_NEXT));
    expected.extend(desc_bytes(0x3000, 1, 0, A1 | DESC_F_WRITE));
    assert_eq!(hal.read(a.desc, 48), expected);
    assert_eq!(dev.pop_avail(&hal), None, "nothing visible before the kick");
    assert_eq!((q.num_free(), q.in_flight()), (5, 1));
    hal.take_accesses();
    assert!(q.kick_prepare(), "ENABLE: notify");
    // A full barrier between the flag store and the look at the device's area, and no
    // register access: notifying is the transport's business.
    assert_eq!(hal.take_accesses(), [Access::Mb]);
    assert_eq!(
        hal.read(a.desc, 16),
        desc_bytes(0x1000, 12, 0, A1 | DESC_F_NEXT)
    );
    let got = dev.pop_avail(&hal).unwrap();
    assert_eq!((got.id, got.slots, got.indirect), (0, 3, false));
    assert_eq!(
        got.elems,
        [
            Elem {
                addr: 0x1000,
                len: 12,
                write: false
            },
            Elem {
                addr: 0x2000,
                len: 1500,
                write: false
            },
            Elem {
                addr: 0x3000,
                len: 1,
                write: true
            },
        ]
    );
    // The next chain starts at slot 3 with the next free ID.
    assert_eq!(q.add(&[out(0x4000, 60)]), Some(1));
    assert_eq!(hal.read(a.desc + 48, 16), desc_bytes(0x4000, 60, 1, 0));
}

#[test]
fn chains_added_together_become_visible_together_at_the_kick() {
    let hal = FakeHal::new(MEM);
    let mut q = queue(&hal, 8, false);
    let mut dev = TestDevice::new(&q);
    let a = q.addrs();
    let first = q.add(&[out(0x1000, 1), out(0x1100, 1)]).unwrap();
    let second = q.add(&[out(0x2000, 2), out(0x2100, 2)]).unwrap();
    // The second head's flags are written at once: the device cannot reach slot 2 before
    // slot 0, whose flags wait for the kick.
    assert_eq!(desc_at(&hal, a.desc).3, 0);
    assert_eq!(desc_at(&hal, a.desc + 32).3, A1 | DESC_F_NEXT);
    assert_eq!(dev.pop_avail(&hal), None);
    assert!(q.kick_prepare());
    assert_eq!(dev.pop_avail(&hal).unwrap().id, first);
    assert_eq!(dev.pop_avail(&hal).unwrap().id, second);
    assert_eq!(dev.pop_avail(&hal), None);
}

#[test]
fn used_descriptors_come_back_in_any_order_and_the_driver_skips_by_chain_length() {
    let hal = FakeHal::new(MEM);
    let mut q = queue(&hal, 8, true);
    let mut dev = TestDevice::new(&q);
    let a = q.add(&[out(0x1000, 10), out(0x1100, 10)]).unwrap();
    let b = q
        .add(&[out(0x2000, 10), out(0x2100, 10), out(0x2200, 10)])
        .unwrap();
    let c = q.add(&[inb(0x3000, 2048)]).unwrap();
    assert_eq!((a, b, c), (0, 1, 2));
    assert_eq!(q.num_free(), 2);
    q.kick_prepare();
    let chains: Vec<Avail> = core::iter::from_fn(|| dev.pop_avail(&hal)).collect();
    assert_eq!(chains.iter().map(|x| x.id).collect::<Vec<_>>(), [a, b, c]);
    // b, c, a: used descriptors at slots 0, 3 and 4.
    dev.give_back(&hal, &chains[1], 0);
    dev.give_back(&hal, &chains[2], 1514);
    dev.give_back(&hal, &chains[0], 0);
    assert_eq!(dev.used_pos(), (6, true));
    assert_eq!(q.pop_used(), Some(Ok(Used { id: b, len: 0 })));
    assert_eq!(q.num_free(), 5);
    assert_eq!(q.pop_used(), Some(Ok(Used { id: c, len: 1514 })));
    assert_eq!(q.pop_used(), Some(Ok(Used { id: a, len: 0 })));
    assert_eq!(q.pop_used(), None);
    assert_eq!((q.num_free(), q.in_flight()), (8, 0));
    // The next chain goes on at slot 6 and wraps into the second lap.
    let d = q
        .add(&[out(0x4000, 1), out(0x4100, 1), out(0x4200, 1)])
        .unwrap();
    q.kick_prepare();
    let got = dev.pop_avail(&hal).unwrap();
    assert_eq!((got.id, got.slots), (d, 3));
    assert_eq!(dev.avail_pos(), (1, false));
    // Slot 0 of the second lap: AVAIL clear, USED set.
    assert_eq!(desc_at(&hal, q.addrs().desc).3, DESC_F_USED);
}

#[test]
fn a_used_length_counts_without_the_write_flag_as_qemu_writes_it() {
    // QEMU's device writes used descriptors with AVAIL/USED only, never WRITE (2.8.3 has
    // it set WRITE when it wrote the buffer, 2.8.4 calls the length reserved without it):
    // the length of a chain the device may write is what it wrote all the same.
    let hal = FakeHal::new(MEM);
    let mut q = queue(&hal, 4, false);
    let mut dev = TestDevice::new(&q).without_write_flag();
    let rx = q.add(&[inb(0x1000, 100)]).unwrap();
    let tx = q.add(&[out(0x2000, 60)]).unwrap();
    q.kick_prepare();
    let got: Vec<Avail> = core::iter::from_fn(|| dev.pop_avail(&hal)).collect();
    dev.give_back(&hal, &got[0], 60);
    assert_eq!(desc_at(&hal, q.addrs().desc).3, DESC_F_AVAIL | DESC_F_USED);
    assert_eq!(q.pop_used(), Some(Ok(Used { id: rx, len: 60 })));
    // Without WRITE the length of a chain the device could only read stays reserved.
    let d = q.addrs().desc + 16;
    hal.write(d + 8, &77u32.to_le_bytes());
    hal.write_u16(d + 12, tx);
    hal.write_u16(d + 14, DESC_F_AVAIL | DESC_F_USED);
    assert_eq!(q.pop_used(), Some(Ok(Used { id: tx, len: 0 })));
    assert_eq!(q.pop_used(), None);

    // In order, a batch's last chain takes the length as well; the ones skipped count as
    // written in full.
    let mut q = Virtqueue::new(&hal, 1, 4, opts(false, 0, true)).unwrap();
    let mut dev = TestDevice::new(&q).without_write_flag();
    let first = q.add(&[inb(0x1000, 100)]).unwrap();
    let last = q.add(&[inb(0x2000, 100)]).unwrap();
    q.kick_prepare();
    let got: Vec<Avail> = core::iter::from_fn(|| dev.pop_avail(&hal)).collect();
    dev.give_back_batch(&hal, &got, 30);
    assert_eq!(
        q.pop_used(),
        Some(Ok(Used {
            id: first,
            len: 100
        }))
    );
    assert_eq!(q.pop_used(), Some(Ok(Used { id: last, len: 30 })));
    assert_eq!(q.pop_used(), None);
}

#[test]
fn indirect_chains_take_one_slot_and_their_tables_are_laid_out_byte_by_byte() {
    let hal = FakeHal::new(MEM);
    let mut q = Virtqueue::new(&hal, 1, 8, opts(false, 4, false)).unwrap();
    let mut dev = TestDevice::new(&q);
    assert_eq!(q.indirect_max(), 4);
    let first = q.add(&[out(0x5000, 1)]).unwrap();
    let bufs = [out(0x1000, 12), out(0x2000, 100), inb(0x3000, 64)];
    let id = q.add_indirect(&bufs).unwrap();
    assert_eq!((first, id), (0, 1));
    assert_eq!(q.num_free(), 6, "one slot for three buffers");
    let (table, len, rid, flags) = desc_at(&hal, q.addrs().desc + 16);
    // INDIRECT alone (no NEXT, no WRITE), the table's length in bytes, the buffer ID.
    assert_eq!((len, rid, flags), (48, id, A1 | DESC_F_INDIRECT));
    assert_eq!(table % 16, 0);
    // In the table only WRITE; IDs reserved (0); entries simply follow each other.
    let mut expected = desc_bytes(0x1000, 12, 0, 0);
    expected.extend(desc_bytes(0x2000, 100, 0, 0));
    expected.extend(desc_bytes(0x3000, 64, 0, DESC_F_WRITE));
    assert_eq!(hal.read(table, 48), expected);
    q.kick_prepare();
    let plain = dev.pop_avail(&hal).unwrap();
    let got = dev.pop_avail(&hal).unwrap();
    assert!(got.indirect);
    assert_eq!((got.id, got.slots, got.elems.len()), (id, 1, 3));
    // Too long for a table, or empty: refused, nothing taken.
    assert_eq!(q.add_indirect(&[out(0, 1); 5]), None);
    assert_eq!(q.add_indirect(&[]), None);
    assert_eq!(q.num_free(), 6);
    // Each ID has a table of its own: ID 2's follows ID 1's.
    let next = q.add_indirect(&[out(0x9000, 1)]).unwrap();
    assert_eq!(next, 2);
    let (table2, ..) = desc_at(&hal, q.addrs().desc + 32);
    assert_eq!(table2, table + 4 * 16);
    assert_eq!(hal.read(table2, 16), desc_bytes(0x9000, 1, 0, 0));
    // Returned, the indirect one first: its ID and so its table are the next reused.
    dev.give_back(&hal, &got, 64);
    dev.give_back(&hal, &plain, 0);
    assert_eq!(q.pop_used(), Some(Ok(Used { id, len: 64 })));
    assert_eq!(q.pop_used(), Some(Ok(Used { id: first, len: 0 })));
    q.kick_prepare();
    dev.serve_all(&hal, 0);
    assert_eq!(q.pop_used(), Some(Ok(Used { id: next, len: 0 })));
    assert_eq!(q.num_free(), 8);
    assert_eq!(q.add_indirect(&[out(0xa000, 1)]), Some(next));
}

#[test]
fn a_full_ring_takes_nothing_more_and_an_empty_one_gives_nothing() {
    for size in [3u16, 4] {
        let hal = FakeHal::new(MEM);
        let mut q = Virtqueue::new(&hal, 0, size, opts(true, 4, false)).unwrap();
        let mut dev = TestDevice::new(&q);
        assert_eq!(q.pop_used(), None, "nothing used yet");
        assert_eq!(q.add(&[]), None, "an empty chain");
        assert_eq!(
            q.add(&alloc::vec![out(0, 1); usize::from(size) + 1]),
            None,
            "longer than the ring"
        );
        for k in 0..size {
            assert_eq!(q.add(&[out(u64::from(k), 1)]), Some(k));
        }
        assert_eq!(q.num_free(), 0);
        assert_eq!(q.add(&[out(0, 1)]), None);
        assert_eq!(
            q.add_indirect(&[out(0, 1), out(1, 1)]),
            None,
            "no slot left"
        );
        assert!(q.kick_prepare());
        assert!(!q.kick_prepare(), "nothing new since the last kick");
        assert_eq!(q.pop_used(), None, "all in flight, none used");
        // One back: room for one chain of one, in the next lap's first slot.
        let a = dev.pop_avail(&hal).unwrap();
        dev.give_back(&hal, &a, 0);
        assert_eq!(q.pop_used(), Some(Ok(Used { id: 0, len: 0 })));
        assert_eq!(q.add(&[out(0, 1), out(1, 1)]), None);
        assert_eq!(q.add(&[out(9, 1)]), Some(0));
        assert_eq!((q.num_free(), q.in_flight()), (0, size));
        assert_eq!(
            desc_at(&hal, q.addrs().desc).3,
            DESC_F_AVAIL | DESC_F_USED,
            "unpublished: still the device's used descriptor"
        );
        q.kick_prepare();
        assert_eq!(desc_at(&hal, q.addrs().desc).3, DESC_F_USED, "lap 2");
    }
}

#[test]
fn descriptors_naming_no_buffer_in_flight_free_nothing() {
    let hal = FakeHal::new(MEM);
    let mut q = queue(&hal, 8, false);
    let mut dev = TestDevice::new(&q);
    let id = q.add(&[out(0x1000, 1), out(0x2000, 1)]).unwrap();
    q.kick_prepare();
    dev.pop_avail(&hal);
    // Out of range, then an ID never used, each one slot: the driver steps one slot past
    // each. Then the real one, then the real one again.
    for bad_id in [8u16, 5, id, id] {
        dev.used(&hal, bad_id, 7, 1, 1);
    }
    for bad_id in [8, 5] {
        assert_eq!(q.pop_used(), Some(Err(BadUsed { id: bad_id, len: 7 })));
        assert_eq!(q.num_free(), 6);
    }
    assert_eq!(q.pop_used(), Some(Ok(Used { id, len: 7 })));
    assert_eq!(q.num_free(), 8);
    // The chain took two slots: the driver looks at slot 4, where nothing is used.
    assert_eq!(q.pop_used(), None);
    assert_eq!(q.num_free(), 8, "a chain is freed once");
    // A used descriptor from the wrong lap is not used.
    let d = q.addrs().desc;
    hal.write_u16(d + 4 * 16 + 14, 0);
    assert_eq!(q.pop_used(), None);
    // The same slot used in lap 1 but naming a freed ID.
    hal.write_u16(d + 4 * 16 + 12, id);
    hal.write_u16(d + 4 * 16 + 14, DESC_F_AVAIL | DESC_F_USED);
    assert_eq!(q.pop_used(), Some(Err(BadUsed { id: 0, len: 0 })));
}

#[test]
fn wrap_counters_hold_over_many_laps_of_any_size() {
    for (size, rounds) in [(256u16, 20_000), (255, 20_000), (7, 100_000), (1, 5_000)] {
        laps(Layout::Packed, size, false, rounds);
        laps(Layout::Packed, size, true, rounds);
    }
}

#[test]
fn interrupts_are_disabled_or_asked_for_at_the_next_used_descriptor() {
    for event_idx in [false, true] {
        let hal = FakeHal::new(MEM);
        let mut q = queue(&hal, 7, event_idx);
        let mut dev = TestDevice::new(&q);
        q.suppress_interrupts();
        assert_eq!(dev.driver_event(&hal), (EVENT_F_DISABLE, 0));
        // Nine chains through a ring of seven: the next used slot is 2 in lap 2.
        for _ in 0..9 {
            q.add(&[inb(0x1000, 64)]).unwrap();
            q.kick_prepare();
            dev.serve_all(&hal, 60);
            q.pop_used().unwrap().unwrap();
        }
        assert_eq!(
            dev.driver_event(&hal).0,
            EVENT_F_DISABLE,
            "left alone by pops"
        );
        let Virtqueue::Packed(p) = &mut q else {
            unreachable!()
        };
        p.enable_interrupts();
        let expected = if event_idx {
            (EVENT_F_DESC, 2)
        } else {
            (EVENT_F_ENABLE, 0)
        };
        assert_eq!(dev.driver_event(&hal), expected);
    }
}

#[test]
fn the_device_area_decides_the_kick() {
    for event_idx in [false, true] {
        let hal = FakeHal::new(MEM);
        let mut q = queue(&hal, 8, event_idx);
        let mut dev = TestDevice::new(&q);
        let mut kick = |dev: &mut TestDevice, flags: u16, off_wrap: u16| {
            dev.set_device_event(&hal, flags, off_wrap);
            q.add(&[out(0x1000, 1)]).unwrap();
            let k = q.kick_prepare();
            dev.serve_all(&hal, 0);
            while q.pop_used().is_some() {}
            k
        };
        assert!(kick(&mut dev, EVENT_F_ENABLE, 0));
        assert!(!kick(&mut dev, EVENT_F_DISABLE, 0));
        assert!(kick(&mut dev, 3, 0), "reserved: notify");
        // Published slot 3 of lap 1: DESC at it notifies; at slot 5 only with EVENT_IDX
        // (without, DESC is not a valid setting and the driver notifies).
        assert!(kick(&mut dev, EVENT_F_DESC, off_wrap(3, true)));
        assert_eq!(kick(&mut dev, EVENT_F_DESC, off_wrap(5, true)), !event_idx);
        // An offset beyond the ring names no slot: notify.
        assert!(kick(&mut dev, EVENT_F_DESC, off_wrap(8, true)));
        dev.set_device_event(&hal, EVENT_F_ENABLE, 0);
        assert!(
            !q.kick_prepare(),
            "nothing new: no kick whatever the device says"
        );
    }
}

/// Whether (slot `off`, wrap `wrap`) is among the `n` positions before (`slot`, `wrap`)
/// in a ring of `size`, walking back one by one.
fn passed(size: u16, mut slot: u16, mut wrap: bool, n: u32, off: u16, ev_wrap: bool) -> bool {
    for _ in 0..n {
        if slot == 0 {
            slot = size;
            wrap = !wrap;
        }
        slot -= 1;
        if slot == off && wrap == ev_wrap {
            return true;
        }
    }
    false
}

#[test]
fn with_event_idx_the_kick_comes_only_when_the_event_descriptor_is_made_available() {
    for size in [7u16, 8] {
        let hal = FakeHal::new(MEM);
        let mut q = queue(&hal, size, true);
        let mut dev = TestDevice::new(&q);
        let (mut kicks, mut quiet) = (0, 0);
        for round in 0u32..20_000 {
            let (slot, wrap) = dev.avail_pos();
            // An event anywhere within a lap and a half around the batch, either lap.
            let off = ((round / 2) % (u32::from(size) + 2)) as u16;
            let ev_wrap = if round % 3 == 0 { wrap } else { !wrap };
            dev.set_device_event(&hal, EVENT_F_DESC, off_wrap(off, ev_wrap));
            let mut n = 0;
            for k in 0..1 + round % 3 {
                let len = 1 + (round + k) % 2;
                let bufs = [out(1, 1), out(2, 2)];
                q.add(&bufs[..len as usize]).unwrap();
                n += len;
            }
            let kick = q.kick_prepare();
            let (new_slot, new_wrap) = {
                let mut s = u32::from(slot) + n;
                let mut w = wrap;
                if s >= u32::from(size) {
                    s -= u32::from(size);
                    w = !w;
                }
                (s as u16, w)
            };
            let expected = off >= size || passed(size, new_slot, new_wrap, n, off, ev_wrap);
            assert_eq!(
                kick, expected,
                "round {round}: event ({off}, {ev_wrap}), published {n} from ({slot}, {wrap})"
            );
            if kick {
                kicks += 1;
            } else {
                quiet += 1;
            }
            dev.serve_all(&hal, 0);
            while q.pop_used().is_some() {}
        }
        assert!(
            kicks > 2_000 && quiet > 2_000,
            "{kicks} kicks, {quiet} quiet"
        );
    }
}
