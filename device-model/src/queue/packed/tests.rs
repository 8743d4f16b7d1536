//! The packed ring's device side against a driver written by hand ([`PackedDriver`]) in
//! plain guest RAM: descriptors byte by byte, wrap counters over many laps, lists and
//! indirect tables, used descriptors, event suppression both ways, hostile lists.

use super::*;
use crate::queue::testing::{ram, step, Driver, PackedDriver, PackedUsed, RAM};
use crate::queue::{build, RingConfig};
use crate::used::UsedBatch;

const RING: u64 = 0x1000;
const BUF: u64 = 0x20000;
const TABLE: u64 = 0x80000;

fn region(addr: u64, len: u32, writable: bool) -> Region {
    Region {
        addr: GuestAddress(addr),
        len,
        writable,
    }
}

fn pos(slot: u16, wrap: bool) -> Pos {
    Pos { slot, wrap }
}

/// Pops the next chain, which must be there.
fn pop(q: &mut PackedQueue, mem: &Memory) -> Chain {
    let mut c = Chain::default();
    assert!(q.pop(mem, &mut c).unwrap(), "a chain is available");
    c
}

#[test]
fn a_descriptor_is_read_field_by_field_little_endian() {
    let b = [
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // addr
        0x44, 0x33, 0x22, 0x11, // len
        0x66, 0x55, // id
        0x83, 0x80, // flags: USED | AVAIL | WRITE | NEXT
    ];
    let d = Desc::from_bytes(b);
    assert_eq!(
        d,
        Desc {
            addr: 0x0102_0304_0506_0708,
            len: 0x1122_3344,
            id: 0x5566,
            flags: DESC_F_USED | DESC_F_AVAIL | DESC_F_WRITE | DESC_F_NEXT,
        }
    );
    assert_eq!(d.to_bytes(), b);

    // What the device reads from the ring is what lies there.
    let mem = ram();
    let mut drv = PackedDriver::new(&mem, RING, 8);
    mem.write_slice(&b, GuestAddress(RING)).unwrap();
    assert_eq!(drv.desc(0), d);
    // Both bits set: used in lap 1, not available. Bits 7 and 15 as the driver sets them.
    let mut q = drv.queue(false);
    let mut c = Chain::default();
    assert!(!q.pop(&mem, &mut c).unwrap());
    assert!(is_available(DESC_F_AVAIL, true));
    assert!(!is_available(DESC_F_AVAIL | DESC_F_USED, true));
    assert!(is_available(DESC_F_USED, false));
    assert!(!is_available(0, false) && !is_available(0, true));
    let id = drv.chain(&[(BUF, 0x1234, true)]);
    let c = pop(&mut q, &mem);
    assert_eq!(
        (c.id, c.regions.as_slice()),
        (id, &[region(BUF, 0x1234, true)][..])
    );
}

#[test]
fn a_list_comes_as_its_regions_with_the_id_of_its_last_descriptor() {
    let mem = ram();
    let mut drv = PackedDriver::new(&mem, RING, 8);
    drv.chain(&[
        (BUF, 12, false),
        (BUF + 0x100, 60, false),
        (BUF + 0x200, 7, true),
    ]);
    // IDs that differ per descriptor: only the last one's counts (2.8.6).
    drv.raw_chain(&[(BUF, 1, DESC_F_NEXT), (BUF + 1, 2, 0)], 5);
    drv.write_desc(
        3,
        Desc {
            id: 9,
            ..drv.desc(3)
        },
    );
    let mut q = drv.queue(false);
    let c = pop(&mut q, &mem);
    assert_eq!(c.id, 0);
    assert_eq!(
        c.regions,
        [
            region(BUF, 12, false),
            region(BUF + 0x100, 60, false),
            region(BUF + 0x200, 7, true)
        ]
    );
    assert!(!c.cut);
    assert_eq!(q.next_avail(), pos(3, true));
    let c = pop(&mut q, &mem);
    assert_eq!((c.id, c.regions.len(), c.cut), (5, 2, false));
    assert_eq!(q.available(&mem).unwrap(), 0);
    assert!(!q.pop(&mem, &mut Chain::default()).unwrap());
}

#[test]
fn wrap_counters_hold_over_many_laps_of_odd_sizes() {
    let mem = ram();
    for (size, ops) in [(1u16, 2_000u32), (7, 100_000), (255, 20_000), (256, 20_000)] {
        let mut drv = PackedDriver::new(&mem, RING, size);
        let mut q = drv.queue(true);
        let mut c = Chain::default();
        let mut laps = 0u32;
        for i in 0..ops {
            // Lists of 1 to 3 descriptors (as many as fit), used out of order in pairs.
            let n = (i % 3 + 1).min(u32::from(size)) as usize;
            let bufs: Vec<_> = (0..n)
                .map(|k| (BUF + 64 * k as u64, 64 + k as u32, true))
                .collect();
            let before = drv.next_avail();
            let id = drv.chain(&bufs);
            if drv.next_avail().wrap != before.wrap {
                laps += 1;
            }
            assert!(q.pop(&mem, &mut c).unwrap(), "size {size} op {i}");
            assert_eq!((c.id, c.regions.len(), c.cut), (id, n, false));
            assert_eq!(q.next_avail(), drv.next_avail(), "size {size} op {i}");
            assert!(!q.pop(&mem, &mut c).unwrap());
            q.add_used(&mem, id, 10 + i % 50).unwrap();
            q.publish_used(&mem).unwrap();
            assert_eq!(drv.used(), [(id, 10 + i % 50)], "size {size} op {i}");
            assert_eq!(q.next_used(), drv.next_used());
        }
        assert!(laps > 100, "size {size}: only {laps} laps");
    }
}

#[test]
fn buffers_used_out_of_order_move_the_used_position_by_their_own_length() {
    let mem = ram();
    let mut drv = PackedDriver::new(&mem, RING, 5);
    let mut q = drv.queue(false);
    for _ in 0..4 {
        let a = drv.chain(&[(BUF, 8, true), (BUF + 8, 8, true)]);
        let b = drv.chain(&[(BUF + 16, 8, true)]);
        pop(&mut q, &mem);
        pop(&mut q, &mem);
        // B first: its descriptor goes where A's first was, and the position moves by 1.
        q.add_used(&mem, b, 3).unwrap();
        q.add_used(&mem, a, 16).unwrap();
        assert!(q.publish_used(&mem).unwrap());
        assert_eq!(drv.used(), [(b, 3), (a, 16)]);
        assert_eq!(q.next_used(), drv.next_used());
        assert_eq!(q.next_used(), q.next_avail());
    }
}

#[test]
fn used_descriptors_are_written_byte_for_byte() {
    let mem = ram();
    let mut drv = PackedDriver::new(&mem, RING, 2);
    let mut q = drv.queue(false);
    let a = drv.chain(&[(BUF, 100, true), (BUF + 0x100, 100, true)]);
    pop(&mut q, &mem);
    q.add_used(&mem, a, 0x0102_0304).unwrap();
    assert_eq!(
        drv.desc(0).flags,
        DESC_F_AVAIL | DESC_F_NEXT | DESC_F_WRITE,
        "nothing written before the publish"
    );
    q.publish_used(&mem).unwrap();
    let mut b = [0u8; 16];
    mem.read_slice(&mut b, GuestAddress(RING)).unwrap();
    let mut want = BUF.to_le_bytes().to_vec(); // the address is left as the driver wrote it
    want.extend([0x04, 0x03, 0x02, 0x01]); // len
    want.extend(a.to_le_bytes()); // id
    want.extend((DESC_F_USED | DESC_F_AVAIL | DESC_F_WRITE).to_le_bytes());
    assert_eq!(b[..], want[..]);
    assert_eq!(q.next_used(), pos(0, false), "two descriptors: one lap");
    assert_eq!(drv.used(), [(a, 0x0102_0304)]);

    // In the second lap a used descriptor has AVAIL and USED clear; without a length,
    // WRITE too.
    let b2 = drv.chain(&[(BUF, 1, false)]);
    pop(&mut q, &mem);
    q.add_used(&mem, b2, 0).unwrap();
    q.publish_used(&mem).unwrap();
    let d = drv.desc(0);
    assert_eq!((d.id, d.len, d.flags), (b2, 0, 0));
    assert_eq!(drv.used(), [(b2, 0)]);
}

#[test]
fn a_batch_is_seen_at_once_its_first_descriptor_written_last() {
    let mem = ram();
    let mut drv = PackedDriver::new(&mem, RING, 8);
    let mut q = drv.queue(false);
    let ids: Vec<u16> = (0..3)
        .map(|i| drv.chain(&[(BUF + 64 * i, 64, true)]))
        .collect();
    let mut batch = UsedBatch::new();
    for &id in &ids {
        pop(&mut q, &mem);
        batch.push(&mut q, &mem, id, 64).unwrap();
    }
    assert!(drv.used().is_empty(), "nothing visible before the publish");
    assert!(batch.publish(&mut q, &mem).unwrap());
    assert_eq!(drv.used(), [(ids[0], 64), (ids[1], 64), (ids[2], 64)]);
}

#[test]
fn indirect_tables_are_followed_and_take_one_slot() {
    let mem = ram();
    let mut drv = PackedDriver::new(&mem, RING, 4);
    let id = drv.indirect(
        TABLE,
        &[
            (BUF, 12, false),
            (BUF + 0x100, 60, true),
            (BUF + 0x200, 4, true),
        ],
    );
    // NEXT, an ID and wrap bits inside a table are ignored.
    mem.write_obj(
        DESC_F_NEXT | DESC_F_AVAIL | DESC_F_WRITE,
        GuestAddress(TABLE + 16 + 14),
    )
    .unwrap();
    mem.write_obj(77u16, GuestAddress(TABLE + 12)).unwrap();
    let mut q = drv.queue(false);
    let c = pop(&mut q, &mem);
    assert_eq!(c.id, id);
    assert_eq!(
        c.regions,
        [
            region(BUF, 12, false),
            region(BUF + 0x100, 60, true),
            region(BUF + 0x200, 4, true)
        ]
    );
    assert!(!c.cut);
    assert_eq!(q.next_avail(), pos(1, true));
    q.add_used(&mem, id, 64).unwrap();
    q.publish_used(&mem).unwrap();
    assert_eq!(drv.used(), [(id, 64)]);
    assert_eq!(q.next_used(), pos(1, true));
}

#[test]
fn in_order_buffers_the_device_only_read_share_one_used_descriptor() {
    let mem = ram();
    let mut drv = PackedDriver::new(&mem, RING, 16);
    let mut q = drv.queue_in_order(false);
    assert!(q.in_order());
    // Transmit lists of 2, 1 and 3 descriptors: nothing written, all used completely.
    let ids = [
        drv.chain(&[(BUF, 12, false), (BUF + 0x100, 60, false)]),
        drv.chain(&[(BUF, 72, false)]),
        drv.chain(&[
            (BUF, 12, false),
            (BUF + 0x100, 30, false),
            (BUF + 0x200, 30, false),
        ]),
    ];
    for &id in &ids {
        let c = pop(&mut q, &mem);
        q.add_used(&mem, c.id, 0).unwrap();
        assert_eq!(c.id, id);
    }
    assert!(q.publish_used(&mem).unwrap());
    let d = drv.desc(0);
    assert_eq!(
        (d.id, d.len, d.flags),
        (ids[2], 0, DESC_F_AVAIL | DESC_F_USED)
    );
    assert_eq!(
        drv.used_descs(true),
        [PackedUsed {
            id: ids[2],
            len: 0,
            flags: DESC_F_AVAIL | DESC_F_USED,
            ids: ids.to_vec()
        }]
    );
    assert_eq!(q.next_used(), pos(6, true), "past all six descriptors");
    // The slots the batch skipped still hold the driver's descriptors.
    assert_eq!(drv.desc(2).flags, DESC_F_AVAIL);

    // Receive buffers: a frame over two full buffers and part of a third, then one that
    // is partly written: each keeps its used descriptor (drivers read every one).
    let rx: Vec<u16> = (0..4)
        .map(|i| drv.chain(&[(BUF + 0x1000 * i, 100, true)]))
        .collect();
    for (i, len) in [100, 100, 62, 40].into_iter().enumerate() {
        let c = pop(&mut q, &mem);
        assert_eq!(c.id, rx[i]);
        q.add_used(&mem, c.id, len).unwrap();
    }
    // A buffer the device only read folds into the entry of the one after it.
    let last = [
        drv.chain(&[(BUF, 60, false)]),
        drv.chain(&[(BUF, 100, true)]),
    ];
    for (&id, len) in last.iter().zip([0, 0]) {
        pop(&mut q, &mem);
        q.add_used(&mem, id, len).unwrap();
    }
    q.publish_used(&mem).unwrap();
    let bits = DESC_F_AVAIL | DESC_F_USED;
    let one = |id: u16, len: u32| PackedUsed {
        id,
        len,
        flags: bits | if len > 0 { DESC_F_WRITE } else { 0 },
        ids: vec![id],
    };
    assert_eq!(
        drv.used_descs(true),
        [
            one(rx[0], 100),
            one(rx[1], 100),
            one(rx[2], 62),
            one(rx[3], 40),
            PackedUsed {
                ids: last.to_vec(),
                ..one(last[1], 0)
            },
        ]
    );
    assert_eq!(q.next_used(), pos(12, true));
    assert_eq!(drv.next_used(), q.next_used());
}

#[test]
fn in_order_a_split_ring_gets_one_used_entry_per_batch_and_its_index_counts_buffers() {
    let mem = ram();
    let mut d = Driver::new(&mem, RING, 8);
    let mut q = d.queue_in_order(false);
    let heads: Vec<u16> = (0..3)
        .map(|i| d.chain(&[(BUF + 64 * i, 64, false)]))
        .collect();
    for _ in 0..3 {
        let c = pop_split(&mut q, &mem);
        q.add_used(&mem, c.id, 0).unwrap();
    }
    q.publish_used(&mem).unwrap();
    assert_eq!(d.used_idx(), 3, "the used index moves past the whole batch");
    assert_eq!(d.used_batches(), [(heads[2], 0, heads.clone())]);

    // Receive buffers keep their entries; read-only ones after them batch again, the
    // entry in the slot of the batch's first buffer.
    let rx: Vec<u16> = (0..3)
        .map(|i| d.chain(&[(BUF + 0x1000 * i, 64, true)]))
        .collect();
    let ro: Vec<u16> = (0..3)
        .map(|i| d.chain(&[(BUF + 64 * i, 64, false)]))
        .collect();
    for len in [64, 64, 10, 0, 0, 0] {
        let c = pop_split(&mut q, &mem);
        q.add_used(&mem, c.id, len).unwrap();
    }
    q.publish_used(&mem).unwrap();
    assert_eq!(d.used_idx(), 9);
    assert_eq!(
        d.used_batches(),
        [
            (rx[0], 64, vec![rx[0]]),
            (rx[1], 64, vec![rx[1]]),
            (rx[2], 10, vec![rx[2]]),
            (ro[2], 0, ro.clone())
        ]
    );

    // Without in order every buffer has its entry.
    let mut d = Driver::new(&mem, RING + 0x2000, 8);
    let mut q = d.queue(false);
    let heads: Vec<u16> = (0..3)
        .map(|i| d.chain(&[(BUF + 64 * i, 64, false)]))
        .collect();
    for _ in 0..3 {
        let c = pop_split(&mut q, &mem);
        q.add_used(&mem, c.id, 0).unwrap();
    }
    q.publish_used(&mem).unwrap();
    assert_eq!(d.used(), heads.iter().map(|&h| (h, 0)).collect::<Vec<_>>());
}

fn pop_split(q: &mut crate::queue::SplitQueue, mem: &Memory) -> Chain {
    let mut c = Chain::default();
    assert!(q.pop(mem, &mut c).unwrap());
    c
}

#[test]
fn in_order_buffers_put_back_are_not_part_of_a_batch() {
    let mem = ram();
    let mut drv = PackedDriver::new(&mem, RING, 8);
    let mut q = drv.queue_in_order(false);
    let ids: Vec<u16> = (0..3)
        .map(|i| drv.chain(&[(BUF + 64 * i, 64, true)]))
        .collect();
    let c = pop(&mut q, &mem);
    q.add_used(&mem, c.id, 64).unwrap();
    pop(&mut q, &mem);
    pop(&mut q, &mem);
    q.unpop(2);
    assert_eq!(q.next_avail(), pos(1, true));
    q.publish_used(&mem).unwrap();
    assert_eq!(drv.used_descs(true)[0].ids, [ids[0]]);
    assert_eq!(pop(&mut q, &mem).id, ids[1]);
}

#[test]
fn the_driver_event_structure_decides_interrupts() {
    let mem = ram();
    let mut drv = PackedDriver::new(&mem, RING, 4);
    let mut q = drv.queue(false);
    let use_one = |drv: &mut PackedDriver, q: &mut PackedQueue| {
        let id = drv.chain(&[(BUF, 64, true)]);
        pop(q, &mem);
        q.add_used(&mem, id, 1).unwrap();
        let irq = q.publish_used(&mem).unwrap();
        drv.used();
        irq
    };
    assert!(use_one(&mut drv, &mut q), "ENABLE");
    drv.set_driver_event(EVENT_F_DISABLE, 0);
    assert!(!use_one(&mut drv, &mut q), "DISABLE");
    // DESC without VIRTIO_F_RING_EVENT_IDX is not valid: taken as ENABLE.
    drv.set_driver_event(EVENT_F_DESC, 0x7fff);
    assert!(use_one(&mut drv, &mut q));
    drv.set_driver_event(3, 0);
    assert!(use_one(&mut drv, &mut q), "the reserved value interrupts");

    // With event indexes: only when the descriptor at off_wrap is used, wrap counter
    // included.
    let mut drv = PackedDriver::new(&mem, RING, 4);
    let mut q = drv.queue(true);
    let event = |slot: u16, wrap: bool| slot | if wrap { WRAP_BIT } else { 0 };
    drv.set_driver_event(EVENT_F_DESC, event(2, true));
    let mut hits = Vec::new();
    for i in 0..12 {
        hits.push(use_one(&mut drv, &mut q));
        if i == 4 {
            // Slot 1 of the second lap (wrap counter 0) is used next.
            drv.set_driver_event(EVENT_F_DESC, event(1, false));
        }
    }
    assert_eq!(
        hits,
        [false, false, true, false, false, true, false, false, false, false, false, false]
    );
    // A batch that passes over the event: one interrupt. Three laps are done: the fourth
    // has wrap counter 0, and the event is in it.
    drv.set_driver_event(EVENT_F_DESC, event(1, false));
    let ids: Vec<u16> = (0..3).map(|_| drv.chain(&[(BUF, 64, true)])).collect();
    for &id in &ids {
        pop(&mut q, &mem);
        q.add_used(&mem, id, 1).unwrap();
    }
    assert_eq!(q.next_used(), pos(0, false));
    assert!(q.publish_used(&mem).unwrap());
    assert_eq!(q.next_used(), pos(3, false));
    drv.used();
    // The same event one lap on (wrap counter 1) is not among the next ones.
    drv.set_driver_event(EVENT_F_DESC, event(1, false));
    assert!(!use_one(&mut drv, &mut q), "slot 3: past the event");
    drv.set_driver_event(EVENT_F_DESC, event(1, true));
    assert!(!use_one(&mut drv, &mut q), "slot 0 of the next lap");
    assert!(use_one(&mut drv, &mut q), "slot 1 of the next lap");
    drv.set_driver_event(EVENT_F_DISABLE, 0);
    assert!(!use_one(&mut drv, &mut q));
}

#[test]
fn the_device_event_structure_asks_for_kicks_by_flag_or_by_descriptor() {
    let mem = ram();
    let mut drv = PackedDriver::new(&mem, RING, 4);
    let mut q = drv.queue(false);
    q.disable_notification(&mem).unwrap();
    assert_eq!(drv.device_event().1, EVENT_F_DISABLE);
    assert!(!q.enable_notification(&mem).unwrap());
    assert_eq!(drv.device_event(), (0, EVENT_F_ENABLE));
    // A list made available meanwhile: the device must look again before it sleeps.
    drv.chain(&[(BUF, 64, true)]);
    assert!(q.enable_notification(&mem).unwrap());

    let mut drv = PackedDriver::new(&mem, RING + 0x1000, 3);
    let mut q = drv.queue(true);
    assert!(!q.enable_notification(&mem).unwrap());
    assert_eq!(drv.device_event(), (WRAP_BIT, EVENT_F_DESC));
    for _ in 0..4 {
        let id = drv.chain(&[(BUF, 64, true)]);
        pop(&mut q, &mem);
        q.add_used(&mem, id, 0).unwrap();
        q.publish_used(&mem).unwrap();
    }
    assert!(!q.enable_notification(&mem).unwrap());
    assert_eq!(
        drv.device_event(),
        (1, EVENT_F_DESC),
        "the next descriptor: slot 1 of the second lap"
    );
    q.disable_notification(&mem).unwrap();
    assert_eq!(drv.device_event(), (1, EVENT_F_DISABLE));
}

#[test]
fn a_list_longer_than_the_ring_is_cut_after_a_ring_worth() {
    let mem = ram();
    let mut drv = PackedDriver::new(&mem, RING, 8);
    // Every descriptor says NEXT: the walk would go round the ring for ever.
    let descs: Vec<_> = (0..8).map(|i| (BUF + 64 * i, 64, DESC_F_NEXT)).collect();
    drv.raw_chain(&descs, 3);
    let mut q = drv.queue(false);
    let c = pop(&mut q, &mem);
    assert!(c.cut);
    assert_eq!(c.regions.len(), 8);
    assert_eq!(q.next_avail(), pos(0, false));
    assert!(!q.pop(&mem, &mut Chain::default()).unwrap());
}

#[test]
fn hostile_lists_are_cut_never_followed_further() {
    let mem = ram();
    let mut drv = PackedDriver::new(&mem, RING, 16);
    let mut q = drv.queue(false);
    let next = |drv: &mut PackedDriver, q: &mut PackedQueue, descs: &[(u64, u32, u16)]| {
        drv.raw_chain(descs, 1);
        pop(q, &mem)
    };
    // A list whose second descriptor is not available (its flags from a used lap).
    drv.raw_chain(&[(BUF, 8, DESC_F_NEXT)], 1);
    let c = pop(&mut q, &mem);
    assert!(c.cut);
    assert_eq!(c.regions, [region(BUF, 8, false)]);
    // An indirect descriptor inside a list, with NEXT, or after another descriptor.
    let table = |n: u32| (TABLE, 16 * n, DESC_F_INDIRECT);
    mem.write_slice(&Desc::default().to_bytes(), GuestAddress(TABLE))
        .unwrap();
    assert!(next(&mut drv, &mut q, &[(BUF, 8, DESC_F_NEXT), table(1)]).cut);
    assert!(
        next(
            &mut drv,
            &mut q,
            &[(TABLE, 16, DESC_F_INDIRECT | DESC_F_NEXT), (BUF, 8, 0)]
        )
        .cut
    );
    // Tables that are empty, not whole descriptors, too long, outside RAM, or that nest.
    assert!(next(&mut drv, &mut q, &[table(0)]).cut);
    assert!(next(&mut drv, &mut q, &[(TABLE, 20, DESC_F_INDIRECT)]).cut);
    assert!(next(&mut drv, &mut q, &[(TABLE, 16 * 65_536, DESC_F_INDIRECT)]).cut);
    assert!(next(&mut drv, &mut q, &[(RAM - 16, 32, DESC_F_INDIRECT)]).cut);
    assert!(next(&mut drv, &mut q, &[(u64::MAX - 15, 32, DESC_F_INDIRECT)]).cut);
    let nested = Desc {
        addr: TABLE,
        len: 16,
        id: 0,
        flags: DESC_F_INDIRECT,
    };
    mem.write_slice(&nested.to_bytes(), GuestAddress(TABLE))
        .unwrap();
    let c = next(&mut drv, &mut q, &[table(1)]);
    assert!(c.cut && c.regions.is_empty(), "a table in a table");
    // More than 4 GiB in one list.
    let c = next(
        &mut drv,
        &mut q,
        &[(BUF, u32::MAX, DESC_F_NEXT), (BUF, 2, 0)],
    );
    assert!(c.cut);
    // Buffers outside RAM and of zero length are the datapath's to refuse: they come as
    // they are.
    let c = next(&mut drv, &mut q, &[(RAM + 0x1000, 0, DESC_F_WRITE)]);
    assert!(!c.cut);
    assert_eq!(c.regions, [region(RAM + 0x1000, 0, true)]);
    assert!(!q.pop(&mem, &mut Chain::default()).unwrap());
    q.check_available(&mem).unwrap();
}

#[test]
fn a_descriptor_made_available_out_of_order_is_not_seen() {
    let mem = ram();
    let drv = PackedDriver::new(&mem, RING, 8);
    let mut q = drv.queue(false);
    // Slot 1 available, slot 0 not: the device only looks at slot 0.
    drv.write_desc(
        1,
        Desc {
            addr: BUF,
            len: 64,
            id: 1,
            flags: DESC_F_AVAIL,
        },
    );
    assert!(!q.pop(&mem, &mut Chain::default()).unwrap());
    assert_eq!(q.available(&mem).unwrap(), 0);
    q.check_available(&mem).unwrap();
    assert!(!q.enable_notification(&mem).unwrap());
}

#[test]
fn a_driver_that_marks_a_lap_ahead_cannot_make_the_device_loop() {
    let mem = ram();
    let drv = PackedDriver::new(&mem, RING, 4);
    let mut q = drv.queue(false);
    // Every slot available: the device takes one ring's worth per lap and counts at most
    // that.
    for slot in 0..4 {
        drv.write_desc(
            slot,
            Desc {
                addr: BUF,
                len: 8,
                id: slot,
                flags: DESC_F_AVAIL,
            },
        );
    }
    assert_eq!(q.available(&mem).unwrap(), 4);
    let mut c = Chain::default();
    for _ in 0..4 {
        assert!(q.pop(&mem, &mut c).unwrap());
    }
    assert!(
        !q.pop(&mem, &mut c).unwrap(),
        "lap two wants the other bits"
    );
    for slot in 0..4 {
        q.add_used(&mem, slot, 0).unwrap();
    }
    q.publish_used(&mem).unwrap();
    // The driver marks every slot available in lap two before it read a used one.
    for slot in 0..4 {
        drv.write_desc(
            slot,
            Desc {
                addr: BUF,
                len: 8,
                id: slot,
                flags: DESC_F_USED,
            },
        );
    }
    assert_eq!(q.available(&mem).unwrap(), 4);
    for _ in 0..4 {
        assert!(q.pop(&mem, &mut c).unwrap());
    }
    // Used entries for IDs the device never took: written one descriptor each, no panic.
    for id in [9, 9, 9, 9, 9, 9] {
        q.add_used(&mem, id, 0).unwrap();
    }
    q.publish_used(&mem).unwrap();
    assert_eq!(
        q.next_used(),
        pos(2, true),
        "six descriptors on from lap two"
    );
}

#[test]
fn position_carries_the_wrap_counters_and_another_device_side_continues_there() {
    let mem = ram();
    let mut drv = PackedDriver::new(&mem, RING, 7);
    let mut q = drv.queue(false);
    assert_eq!(
        q.position(),
        RingPosition {
            next_avail: WRAP_BIT,
            next_used: WRAP_BIT
        }
    );
    for _ in 0..4 {
        let id = drv.chain(&[(BUF, 8, true), (BUF + 8, 8, true)]);
        pop(&mut q, &mem);
        q.add_used(&mem, id, 16).unwrap();
        q.publish_used(&mem).unwrap();
        assert_eq!(drv.used(), [(id, 16)]);
    }
    // Eight descriptors in a ring of seven: slot 1 of the second lap (wrap counter 0).
    let at = q.position();
    assert_eq!(
        at,
        RingPosition {
            next_avail: 1,
            next_used: 1
        }
    );
    let id = drv.chain(&[(BUF, 8, true)]);
    let mut other = drv.queue(false);
    other.set_position(at);
    assert_eq!(other.position(), at);
    assert_eq!(pop(&mut other, &mem).id, id);
    other.add_used(&mem, id, 8).unwrap();
    other.publish_used(&mem).unwrap();
    assert_eq!(drv.used(), [(id, 8)]);
    // Round trips, slots past the ring's end taken modulo its size.
    for v in [0u16, 6, WRAP_BIT | 6, WRAP_BIT] {
        other.set_position(RingPosition {
            next_avail: v,
            next_used: v,
        });
        assert_eq!(other.position().next_avail, v);
    }
    assert_eq!(Pos::decode(WRAP_BIT | 9, 7), pos(2, true));
    assert_eq!(Pos::decode(9, 7).encode(), 2);
}

#[test]
fn putting_chains_back_crosses_the_wrap_boundary() {
    let mem = ram();
    let mut drv = PackedDriver::new(&mem, RING, 3);
    let mut q = drv.queue(false);
    let a = drv.chain(&[(BUF, 8, true), (BUF, 8, true)]);
    let c = pop(&mut q, &mem);
    q.add_used(&mem, c.id, 16).unwrap();
    q.publish_used(&mem).unwrap();
    drv.used();
    let b = drv.chain(&[(BUF, 8, true), (BUF, 8, true)]);
    assert_eq!(pop(&mut q, &mem).id, b);
    assert_eq!(q.next_avail(), pos(1, false));
    assert_eq!(q.available(&mem).unwrap(), 0);
    q.unpop(1);
    assert_eq!(q.next_avail(), pos(2, true));
    assert_eq!(q.available(&mem).unwrap(), 1);
    assert_eq!(pop(&mut q, &mem).id, b);
    assert_ne!(a, b);
    assert_eq!(step(pos(2, true), 3), pos(0, false));
}

#[test]
fn rings_are_built_and_reset_as_the_transport_asks() {
    let mem = ram();
    let drv = PackedDriver::new(&mem, RING, 100);
    let cfg = drv.config(true, true);
    let mut q = build(&cfg, &mem).unwrap();
    assert_eq!(q.layout(), Layout::Packed);
    assert_eq!((q.size(), q.max_size()), (100, 128));
    assert_eq!(q.addresses(), cfg.addresses);
    assert!(q.ready() && q.event_idx());
    q.reset();
    assert!(!q.ready() && !q.event_idx());
    assert_eq!(q.size(), q.max_size());
    assert_eq!(q.position().next_avail, WRAP_BIT);

    let err = |f: &dyn Fn(&mut RingConfig)| {
        let mut c = cfg;
        f(&mut c);
        build(&c, &mem).err().expect("refused").to_string()
    };
    assert!(err(&|c| c.size = 0).starts_with("size 0: "));
    assert!(err(&|c| c.size = 129).starts_with("size 129: "));
    assert!(!err(&|c| c.max_size = 40_000).is_empty());
    assert!(err(&|c| c.addresses.desc += 8).starts_with("descriptor ring 0x1008: "));
    assert!(err(&|c| c.addresses.driver += 2).starts_with("driver event suppression "));
    assert!(err(&|c| c.addresses.device += 1).starts_with("device event suppression "));
    assert!(err(&|c| c.addresses.device = RAM).starts_with("rings at desc 0x1000 "));
    assert!(err(&|c| c.addresses.desc = RAM - 0x400).starts_with("rings at desc 0xffc00 "));
    let mut c = cfg;
    c.max_size = MAX_SIZE;
    c.size = MAX_SIZE;
    c.addresses.desc = 0;
    c.addresses.driver = RAM - 8;
    c.addresses.device = RAM - 4;
    assert_eq!(build(&c, &mem).unwrap().size(), MAX_SIZE);
}
