use super::testing::{ram, Driver, F_INDIRECT, F_NEXT, F_WRITE, RAM};
use super::*;
use crate::used::UsedBatch;
use vm_memory::Bytes;

const RING: u64 = 0x1000;
const BUF: u64 = 0x10000;

fn region(addr: u64, len: u32, writable: bool) -> Region {
    Region {
        addr: GuestAddress(addr),
        len,
        writable,
    }
}

#[test]
fn a_chain_comes_as_its_regions_in_order() {
    let mem = ram();
    let mut d = Driver::new(&mem, RING, 16);
    let head = d.chain(&[
        (BUF, 12, false),
        (BUF + 0x100, 60, false),
        (BUF + 0x200, 1, true),
    ]);
    let mut q = d.queue(false);
    let mut c = Chain::default();
    assert!(q.pop(&mem, &mut c).unwrap());
    assert_eq!(c.id, head);
    assert_eq!(
        c.regions,
        [
            region(BUF, 12, false),
            region(BUF + 0x100, 60, false),
            region(BUF + 0x200, 1, true)
        ]
    );
    assert!(!c.cut);
    assert!(!q.pop(&mem, &mut c).unwrap(), "nothing more is available");
}

#[test]
fn indirect_tables_are_followed() {
    let mem = ram();
    let table = BUF + 0x1000;
    for (i, (addr, len, flags)) in [(BUF, 12u32, F_NEXT), (BUF + 0x100, 60, F_WRITE)]
        .into_iter()
        .enumerate()
    {
        let at = GuestAddress(table + 16 * i as u64);
        mem.write_obj(addr, at).unwrap();
        mem.write_obj(len, GuestAddress(at.0 + 8)).unwrap();
        mem.write_obj(flags, GuestAddress(at.0 + 12)).unwrap();
        mem.write_obj(i as u16 + 1, GuestAddress(at.0 + 14))
            .unwrap();
    }
    let mut d = Driver::new(&mem, RING, 16);
    let head = d.raw_chain(&[(table, 32, F_INDIRECT, 0)]);
    let mut q = d.queue(false);
    let mut c = Chain::default();
    assert!(q.pop(&mem, &mut c).unwrap());
    assert_eq!(c.id, head);
    assert_eq!(
        c.regions,
        [region(BUF, 12, false), region(BUF + 0x100, 60, true)]
    );
    assert!(!c.cut);
}

#[test]
fn loops_and_indexes_outside_the_table_cut_a_chain() {
    let mem = ram();
    let mut d = Driver::new(&mem, RING, 16);
    // A descriptor that names itself as the next one: the walk stops after a ring's worth.
    d.raw_chain(&[(BUF, 10, F_NEXT, 0)]);
    // A next index past the table.
    d.raw_chain(&[(BUF, 10, F_NEXT, 99)]);
    let mut q = d.queue(false);
    let mut c = Chain::default();
    assert!(q.pop(&mem, &mut c).unwrap());
    assert_eq!(c.regions.len(), 16);
    assert!(c.cut);
    assert!(q.pop(&mem, &mut c).unwrap());
    assert_eq!(c.regions.len(), 1);
    assert!(c.cut);
}

#[test]
fn chains_put_back_come_again_in_order() {
    let mem = ram();
    let mut d = Driver::new(&mem, RING, 16);
    let heads: Vec<u16> = (0..3)
        .map(|i| d.chain(&[(BUF + i * 64, 64, true)]))
        .collect();
    let mut q = d.queue(false);
    let mut c = Chain::default();
    assert_eq!(q.available(&mem).unwrap(), 3);
    for _ in 0..2 {
        q.pop(&mem, &mut c).unwrap();
    }
    assert_eq!(q.available(&mem).unwrap(), 1);
    q.unpop(2);
    assert_eq!(q.available(&mem).unwrap(), 3);
    let mut again = Vec::new();
    while q.pop(&mem, &mut c).unwrap() {
        again.push(c.id);
    }
    assert_eq!(again, heads);
}

#[test]
fn used_entries_appear_only_when_published() {
    let mem = ram();
    let mut d = Driver::new(&mem, RING, 4);
    let heads: Vec<u16> = (0..3)
        .map(|i| d.chain(&[(BUF + i * 64, 64, true)]))
        .collect();
    let mut q = d.queue(false);
    let mut c = Chain::default();
    let mut batch = UsedBatch::new();
    for (i, _) in heads.iter().enumerate() {
        q.pop(&mem, &mut c).unwrap();
        batch.push(&mut q, &mem, c.id, 10 * i as u32).unwrap();
    }
    assert_eq!(batch.len(), 3);
    assert_eq!(
        d.used_idx(),
        0,
        "nothing visible before the batch is published"
    );
    assert!(
        batch.publish(&mut q, &mem).unwrap(),
        "no suppression: interrupt"
    );
    assert_eq!(d.used(), [(heads[0], 0), (heads[1], 10), (heads[2], 20)]);
    assert_eq!(
        q.position(),
        RingPosition {
            next_avail: 3,
            next_used: 3
        }
    );
    // An empty batch writes nothing and asks for no interrupt.
    assert!(!UsedBatch::new().publish(&mut q, &mem).unwrap());
    assert_eq!(d.used_idx(), 3);
}

#[test]
fn used_entries_wrap_around_the_ring() {
    let mem = ram();
    let mut d = Driver::new(&mem, RING, 4);
    let mut q = d.queue(false);
    let mut c = Chain::default();
    let mut seen = Vec::new();
    for round in 0..3u64 {
        for i in 0..3 {
            let head = d.chain(&[(BUF + 64 * (round * 3 + i), 64, true)]);
            assert!(q.pop(&mem, &mut c).unwrap());
            assert_eq!(c.id, head);
            q.add_used(&mem, c.id, 1).unwrap();
        }
        q.publish_used(&mem).unwrap();
        seen.extend(d.used());
    }
    assert_eq!(seen.len(), 9);
    assert_eq!(d.used_idx(), 9);
}

#[test]
fn without_event_idx_the_no_interrupt_flag_suppresses_interrupts() {
    let mem = ram();
    let mut d = Driver::new(&mem, RING, 16);
    d.chain(&[(BUF, 64, true)]);
    d.chain(&[(BUF + 64, 64, true)]);
    let mut q = d.queue(false);
    let mut c = Chain::default();
    d.set_avail_flags(1);
    q.pop(&mem, &mut c).unwrap();
    q.add_used(&mem, c.id, 0).unwrap();
    assert!(!q.publish_used(&mem).unwrap());
    d.set_avail_flags(0);
    q.pop(&mem, &mut c).unwrap();
    q.add_used(&mem, c.id, 0).unwrap();
    assert!(q.publish_used(&mem).unwrap());
}

#[test]
fn with_event_idx_the_driver_is_interrupted_when_its_event_is_published() {
    let mem = ram();
    let mut d = Driver::new(&mem, RING, 16);
    for i in 0..8 {
        d.chain(&[(BUF + 64 * i, 64, true)]);
    }
    let mut q = d.queue(true);
    assert!(q.event_idx());
    let mut c = Chain::default();
    // The driver wants to hear once the used index passes 4 (entry 4 is used).
    d.set_used_event(4);
    let mut publish = |n: usize| {
        for _ in 0..n {
            q.pop(&mem, &mut c).unwrap();
            q.add_used(&mem, c.id, 0).unwrap();
        }
        q.publish_used(&mem).unwrap()
    };
    assert!(!publish(2), "entries 0 and 1");
    assert!(!publish(2), "entries 2 and 3");
    assert!(publish(3), "entries 4 to 6 include the event");
    assert!(!publish(1), "entry 7 is past it");
}

#[test]
fn notifications_are_asked_for_by_flag_or_by_event_index() {
    let mem = ram();
    let mut d = Driver::new(&mem, RING, 16);
    let mut q = d.queue(false);
    q.disable_notification(&mem).unwrap();
    assert_eq!(d.used_flags(), 1, "VRING_USED_F_NO_NOTIFY");
    assert!(!q.enable_notification(&mem).unwrap());
    assert_eq!(d.used_flags(), 0);
    // A chain made available meanwhile: the device must look again before it sleeps.
    d.chain(&[(BUF, 64, true)]);
    assert!(q.enable_notification(&mem).unwrap());

    let mut d = Driver::new(&mem, RING + 0x1000, 16);
    let mut q = d.queue(true);
    let mut c = Chain::default();
    d.chain(&[(BUF, 64, true)]);
    q.pop(&mem, &mut c).unwrap();
    assert!(!q.enable_notification(&mem).unwrap());
    assert_eq!(d.avail_event(), 1, "a kick wanted for the next entry");
    assert_eq!(d.used_flags(), 0, "no flag with event indexes");
}

#[test]
fn an_available_index_more_than_a_ring_ahead_is_the_drivers_error() {
    let mem = ram();
    let d = Driver::new(&mem, RING, 16);
    let mut q = d.queue(false);
    q.check_available(&mem).unwrap();
    d.set_avail_idx(16);
    q.check_available(&mem).unwrap();
    d.set_avail_idx(17);
    let mut c = Chain::default();
    assert!(!q.pop(&mem, &mut c).unwrap());
    let e = q.check_available(&mem).unwrap_err();
    assert!(e.is_driver_error());
    assert_eq!(
        e.to_string(),
        "available index 17 is 17 entries ahead in a 16-entry ring"
    );
    assert_eq!(q.available(&mem).unwrap(), 17);
}

#[test]
fn position_and_reset() {
    let mem = ram();
    let d = Driver::new(&mem, RING, 16);
    let mut q = d.queue(true);
    let at = RingPosition {
        next_avail: 65530,
        next_used: 65529,
    };
    q.set_position(at);
    assert_eq!(q.position(), at);
    assert!(q.ready());
    q.reset();
    assert!(!q.ready());
    assert!(!q.event_idx());
    assert_eq!(q.position(), RingPosition::default());
    assert_eq!(q.size(), q.max_size());
}

fn config(size: u16, desc: u64) -> RingConfig {
    RingConfig {
        layout: Layout::Split,
        max_size: 256,
        size,
        addresses: RingAddresses {
            desc,
            driver: desc + 0x1000,
            device: desc + 0x2000,
        },
        event_idx: true,
        in_order: false,
    }
}

#[test]
fn rings_are_built_from_what_the_driver_programmed() {
    let mem = ram();
    let q = build(&config(64, 0x4000), &mem).unwrap();
    assert_eq!(q.layout(), Layout::Split);
    assert_eq!((q.size(), q.max_size()), (64, 256));
    assert_eq!(q.addresses(), config(64, 0x4000).addresses);
    assert!(q.ready() && q.event_idx());
    assert_eq!(q.position(), RingPosition::default());
}

#[test]
fn bad_ring_settings_are_refused_with_what_was_wrong() {
    let mem = ram();
    let err = |cfg: RingConfig| build(&cfg, &mem).err().unwrap().to_string();
    assert!(err(config(3, 0x4000)).starts_with("size 3: "));
    assert!(err(config(512, 0x4000)).starts_with("size 512: "));
    assert!(err(config(64, 0x4008)).starts_with("descriptor table 0x4008: "));
    let mut odd_avail = config(64, 0x4000);
    odd_avail.addresses.driver += 1;
    assert!(err(odd_avail).starts_with("available ring 0x5001: "));
    assert_eq!(
        err(config(64, RAM - 0x1000)),
        "rings at desc 0xff000 avail 0x100000 used 0x101000 (size 64) are not inside guest \
         memory"
    );
    let mut no_queue = config(64, 0x4000);
    no_queue.max_size = 3;
    assert!(build(&no_queue, &mem).is_err());
}
