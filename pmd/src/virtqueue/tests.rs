//! The driver's virtqueue against a fake platform ([`crate::testing::FakeHal`]): what it
//! writes is read back from fake guest memory byte by byte, and a few lines of fake device
//! (below) take chains from the available ring and return them in the used ring.

use alloc::vec::Vec;

use super::split::{
    layout, need_event, ring_bytes, used_offset, AVAIL_F_NO_INTERRUPT, DESC_F_INDIRECT,
    DESC_F_NEXT, DESC_F_WRITE, USED_F_NO_NOTIFY,
};
use super::{BadUsed, Buf, Error, Layout, Options, Used, Virtqueue};
use crate::testing::{Access, FakeHal, POISON};
use crate::transport::QueueAddrs;

/// Fake memory for one test: rings and indirect tables of a few small queues.
const MEM: usize = 1 << 20;

fn opts(event_idx: bool, indirect: u16) -> Options {
    Options {
        layout: Layout::Split,
        event_idx,
        indirect,
        in_order: false,
    }
}

fn queue(hal: &FakeHal, size: u16, event_idx: bool) -> Virtqueue<'_, FakeHal> {
    Virtqueue::new(hal, 1, size, opts(event_idx, 0)).expect("a queue")
}

/// A device-readable buffer of `len` bytes at `paddr`.
fn out(paddr: u64, len: u32) -> Buf {
    Buf {
        paddr,
        len,
        device_writes: false,
    }
}

/// A device-writable buffer.
fn inb(paddr: u64, len: u32) -> Buf {
    Buf {
        paddr,
        len,
        device_writes: true,
    }
}

/// A descriptor as the device reads it: (addr, len, flags, next).
type RawDesc = (u64, u32, u16, u16);

fn desc_at(hal: &FakeHal, paddr: u64) -> RawDesc {
    let b = hal.read(paddr, 16);
    (
        u64::from_le_bytes(b[0..8].try_into().unwrap()),
        u32::from_le_bytes(b[8..12].try_into().unwrap()),
        u16::from_le_bytes([b[12], b[13]]),
        u16::from_le_bytes([b[14], b[15]]),
    )
}

/// The 16 bytes a descriptor must be in memory.
fn desc_bytes(addr: u64, len: u32, flags: u16, next: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&addr.to_le_bytes());
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&next.to_le_bytes());
    v
}

/// The device side of a split ring, as far as these tests need one.
struct Device {
    addrs: QueueAddrs,
    size: u16,
    last_avail: u16,
    used_idx: u16,
}

impl Device {
    fn new(q: &Virtqueue<'_, FakeHal>) -> Self {
        Self {
            addrs: q.addrs(),
            size: q.size(),
            last_avail: 0,
            used_idx: 0,
        }
    }

    fn avail_idx(&self, hal: &FakeHal) -> u16 {
        hal.read_u16(self.addrs.avail + 2)
    }

    fn avail_flags(&self, hal: &FakeHal) -> u16 {
        hal.read_u16(self.addrs.avail)
    }

    fn used_event(&self, hal: &FakeHal) -> u16 {
        hal.read_u16(self.addrs.avail + 4 + 2 * u64::from(self.size))
    }

    fn set_avail_event(&self, hal: &FakeHal, idx: u16) {
        hal.write_u16(self.addrs.used + 4 + 8 * u64::from(self.size), idx);
    }

    fn set_used_flags(&self, hal: &FakeHal, flags: u16) {
        hal.write_u16(self.addrs.used, flags);
    }

    /// The next head the driver made available, if any.
    fn pop_avail(&mut self, hal: &FakeHal) -> Option<u16> {
        if self.last_avail == self.avail_idx(hal) {
            return None;
        }
        let slot = u64::from(self.last_avail % self.size);
        self.last_avail = self.last_avail.wrapping_add(1);
        Some(hal.read_u16(self.addrs.avail + 4 + 2 * slot))
    }

    /// The descriptors of the chain at `head`, in order (not following indirect tables).
    fn chain(&self, hal: &FakeHal, head: u16) -> Vec<(u16, RawDesc)> {
        let mut v = Vec::new();
        let mut i = head;
        loop {
            assert!(i < self.size, "descriptor {i} out of range");
            let d = desc_at(hal, self.addrs.desc + 16 * u64::from(i));
            v.push((i, d));
            assert!(v.len() <= usize::from(self.size), "the chain loops");
            if d.2 & DESC_F_NEXT == 0 {
                return v;
            }
            i = d.3;
        }
    }

    /// Returns a chain: writes the used entry, then the index.
    fn push_used(&mut self, hal: &FakeHal, id: u32, len: u32) {
        let slot = u64::from(self.used_idx % self.size);
        let at = self.addrs.used + 4 + 8 * slot;
        hal.write_u32(at, id);
        hal.write_u32(at + 4, len);
        self.used_idx = self.used_idx.wrapping_add(1);
        hal.write_u16(self.addrs.used + 2, self.used_idx);
    }

    /// Takes every available chain and returns it with `len` bytes written.
    fn serve_all(&mut self, hal: &FakeHal, len: u32) -> Vec<u16> {
        let mut heads = Vec::new();
        while let Some(h) = self.pop_avail(hal) {
            self.push_used(hal, u32::from(h), len);
            heads.push(h);
        }
        heads
    }
}

#[test]
fn ring_sizes_follow_the_legacy_layout() {
    for shift in 0..=15 {
        let size = 1u16 << shift;
        let n = usize::from(size);
        let used = used_offset(size);
        assert_eq!(used % 4096, 0);
        assert!(used >= 16 * n + 6 + 2 * n && used < 16 * n + 6 + 2 * n + 4096);
        assert_eq!(ring_bytes(size), used + (6 + 8 * n).next_multiple_of(4096));
        let a = layout(0x1_0000, size);
        assert_eq!(a.avail, 0x1_0000 + 16 * n as u64);
        assert_eq!(a.used, 0x1_0000 + used as u64);
    }
    assert_eq!(ring_bytes(256), 0x3000);
    assert_eq!(
        layout(u64::MAX - 0xfff, 1).used,
        0,
        "placement wraps, never panics"
    );
}

#[test]
fn a_new_queue_is_initialised_whatever_memory_held() {
    let hal = FakeHal::new(MEM);
    let q = queue(&hal, 8, true);
    let a = q.addrs();
    assert_eq!(a.desc % 4096, 0);
    assert_eq!((a.avail - a.desc, a.used - a.desc), (128, 4096));
    // Flags, indexes and events start at zero; free descriptors chain through `next`.
    assert_eq!(hal.read(a.avail, 6 + 2 * 8), [0; 22]);
    assert_eq!(hal.read(a.used, 6 + 8 * 8), [0; 70]);
    for i in 0..8u16 {
        assert_eq!(
            desc_at(&hal, a.desc + 16 * u64::from(i)),
            (0, 0, 0, (i + 1) % 8)
        );
    }
    assert!(!hal.read(a.desc, ring_bytes(8)).contains(&POISON));
    assert_eq!(
        (q.num_free(), q.in_flight(), q.index(), q.size()),
        (8, 0, 1, 8)
    );
    assert_eq!(q.indirect_max(), 0);
}

#[test]
fn bad_sizes_and_short_memory_are_errors() {
    let hal = FakeHal::new(MEM);
    for size in [0, 3, 100, 65535] {
        assert_eq!(
            Virtqueue::new(&hal, 0, size, opts(false, 0)).err(),
            Some(Error::BadSize(size))
        );
    }
    let small = FakeHal::new(8192);
    assert_eq!(
        Virtqueue::new(&small, 0, 256, opts(false, 0)).err(),
        Some(Error::NoMemory(256))
    );
    // The ring fits, its indirect tables do not.
    assert_eq!(
        Virtqueue::new(&small, 0, 2, opts(false, 1024)).err(),
        Some(Error::NoMemory(2))
    );
}

#[test]
fn a_chain_is_laid_out_byte_by_byte_and_published_by_the_kick() {
    let hal = FakeHal::new(MEM);
    let mut q = queue(&hal, 8, false);
    let a = q.addrs();
    let id = q.add(&[out(0x1000, 12), out(0x2000, 1500), inb(0x3000, 1)]);
    assert_eq!(id, Some(0));
    let table = hal.read(a.desc, 48);
    let mut expected = desc_bytes(0x1000, 12, DESC_F_NEXT, 1);
    expected.extend(desc_bytes(0x2000, 1500, DESC_F_NEXT, 2));
    // The last descriptor keeps its free-list link; without NEXT the device ignores it.
    expected.extend(desc_bytes(0x3000, 1, DESC_F_WRITE, 3));
    assert_eq!(table, expected);
    assert_eq!(hal.read_u16(a.avail + 4), 0, "slot 0 names head 0");
    // Not visible before the kick.
    assert_eq!(hal.read_u16(a.avail + 2), 0);
    assert_eq!((q.num_free(), q.in_flight()), (5, 1));
    hal.take_accesses();
    assert!(q.kick_prepare(), "no NO_NOTIFY flag: notify");
    assert_eq!(hal.read_u16(a.avail + 2), 1);
    // A full barrier between the index store and the look at the device's flags, and no
    // register access: notifying is the transport's business.
    assert_eq!(hal.take_accesses(), [Access::Mb]);
    // The next chain starts where the free list went on.
    assert_eq!(q.add(&[out(0x4000, 60)]), Some(3));
    assert_eq!(hal.read_u16(a.avail + 6), 3);
}

#[test]
fn used_chains_come_back_by_id_and_free_their_descriptors_in_any_order() {
    let hal = FakeHal::new(MEM);
    let mut q = queue(&hal, 8, true);
    let mut dev = Device::new(&q);
    let a = q.add(&[out(0x1000, 10), out(0x1100, 10)]).unwrap();
    let b = q
        .add(&[out(0x2000, 10), out(0x2100, 10), out(0x2200, 10)])
        .unwrap();
    let c = q.add(&[inb(0x3000, 2048)]).unwrap();
    assert_eq!(q.num_free(), 2);
    q.kick_prepare();
    let heads: Vec<u16> = core::iter::from_fn(|| dev.pop_avail(&hal)).collect();
    assert_eq!(heads, [a, b, c]);
    assert_eq!(dev.chain(&hal, b).len(), 3);
    // Out of order: b, c, then a.
    for (id, len) in [(b, 0), (c, 1514), (a, 0)] {
        dev.push_used(&hal, u32::from(id), len);
    }
    assert_eq!(q.pop_used(), Some(Ok(Used { id: b, len: 0 })));
    assert_eq!(q.num_free(), 5);
    assert_eq!(q.pop_used(), Some(Ok(Used { id: c, len: 1514 })));
    assert_eq!(q.pop_used(), Some(Ok(Used { id: a, len: 0 })));
    assert_eq!(q.pop_used(), None);
    assert_eq!((q.num_free(), q.in_flight()), (8, 0));
    // Every descriptor is free again, exactly once: one chain takes them all.
    let bufs: Vec<Buf> = (0..8).map(|k| out(0x8000 + 0x100 * k, 1)).collect();
    let all = q.add(&bufs).unwrap();
    assert_eq!(q.num_free(), 0);
    q.kick_prepare();
    let head = dev.pop_avail(&hal).unwrap();
    assert_eq!(head, all);
    let mut seen: Vec<u16> = dev.chain(&hal, head).iter().map(|(i, _)| *i).collect();
    let addrs: Vec<u64> = dev.chain(&hal, head).iter().map(|(_, d)| d.0).collect();
    assert_eq!(addrs, bufs.iter().map(|b| b.paddr).collect::<Vec<_>>());
    seen.sort_unstable();
    assert_eq!(seen, (0..8).collect::<Vec<_>>());
}

#[test]
fn a_full_ring_takes_nothing_more_and_an_empty_one_gives_nothing() {
    let hal = FakeHal::new(MEM);
    let mut q = Virtqueue::new(&hal, 0, 4, opts(true, 4)).unwrap();
    let mut dev = Device::new(&q);
    assert_eq!(q.pop_used(), None, "nothing used yet");
    assert_eq!(q.add(&[]), None, "an empty chain");
    assert_eq!(q.add(&[out(0, 1); 5]), None, "longer than the ring");
    let ids: Vec<u16> = (0..4).map(|k| q.add(&[out(k, 1)]).unwrap()).collect();
    assert_eq!(ids, [0, 1, 2, 3]);
    assert_eq!(q.num_free(), 0);
    assert_eq!(q.add(&[out(0, 1)]), None);
    assert_eq!(
        q.add_indirect(&[out(0, 1), out(1, 1)]),
        None,
        "no descriptor left"
    );
    assert!(q.kick_prepare());
    assert!(!q.kick_prepare(), "nothing new since the last kick");
    assert_eq!(q.pop_used(), None, "all in flight, none used");
    // One back: room for one chain of one.
    dev.pop_avail(&hal);
    dev.push_used(&hal, 0, 0);
    assert_eq!(q.pop_used(), Some(Ok(Used { id: 0, len: 0 })));
    assert_eq!(q.add(&[out(0, 1), out(1, 1)]), None);
    assert_eq!(q.add(&[out(9, 1)]), Some(0));
    assert_eq!((q.num_free(), q.in_flight()), (0, 4));
}

#[test]
fn entries_naming_no_chain_in_flight_free_nothing() {
    let hal = FakeHal::new(MEM);
    let mut q = queue(&hal, 8, false);
    let mut dev = Device::new(&q);
    let head = q.add(&[out(0x1000, 1), out(0x2000, 1)]).unwrap();
    q.kick_prepare();
    dev.pop_avail(&hal);
    // Out of range, the chain's second descriptor, a descriptor never used, then the
    // real one, then the real one again.
    for id in [8, 1, 5, u32::from(head), u32::from(head)] {
        dev.push_used(&hal, id, 7);
    }
    for id in [8, 1, 5] {
        assert_eq!(q.pop_used(), Some(Err(BadUsed { id, len: 7 })));
        assert_eq!(q.num_free(), 6);
    }
    assert_eq!(q.pop_used(), Some(Ok(Used { id: head, len: 7 })));
    assert_eq!(q.num_free(), 8);
    assert_eq!(
        q.pop_used(),
        Some(Err(BadUsed {
            id: u32::from(head),
            len: 7
        }))
    );
    assert_eq!(q.num_free(), 8, "a chain is freed once");
}

#[test]
fn indirect_chains_take_one_slot_and_their_tables_are_laid_out_byte_by_byte() {
    let hal = FakeHal::new(MEM);
    let mut q = Virtqueue::new(&hal, 1, 8, opts(false, 4)).unwrap();
    let mut dev = Device::new(&q);
    assert_eq!(q.indirect_max(), 4);
    let first = q.add(&[out(0x5000, 1)]).unwrap();
    let bufs = [out(0x1000, 12), out(0x2000, 100), inb(0x3000, 64)];
    let head = q.add_indirect(&bufs).unwrap();
    assert_eq!((first, head), (0, 1));
    assert_eq!(q.num_free(), 6, "one ring descriptor for three buffers");
    q.kick_prepare();
    dev.pop_avail(&hal);
    assert_eq!(dev.pop_avail(&hal), Some(head));
    let chain = dev.chain(&hal, head);
    assert_eq!(chain.len(), 1);
    let (table, len, flags, _) = chain[0].1;
    assert_eq!((len, flags), (48, DESC_F_INDIRECT));
    // Each ring descriptor has a table of its own: head 1's is the second.
    let tables = table - 4 * 16;
    assert_eq!(table % 16, 0);
    let mut expected = desc_bytes(0x1000, 12, DESC_F_NEXT, 1);
    expected.extend(desc_bytes(0x2000, 100, DESC_F_NEXT, 2));
    expected.extend(desc_bytes(0x3000, 64, DESC_F_WRITE, 0));
    assert_eq!(hal.read(table, 48), expected);
    // Too long for a table, or empty: refused, nothing taken.
    assert_eq!(q.add_indirect(&[out(0, 1); 5]), None);
    assert_eq!(q.add_indirect(&[]), None);
    assert_eq!(q.num_free(), 6);
    // Returned: its one descriptor is free again and the next indirect chain reuses it,
    // with the same table.
    dev.push_used(&hal, u32::from(head), 64);
    assert_eq!(q.pop_used(), Some(Ok(Used { id: head, len: 64 })));
    assert_eq!(q.num_free(), 7);
    let again = q.add_indirect(&[out(0x7000, 5), out(0x7100, 6)]).unwrap();
    assert_eq!(again, head);
    assert_eq!(
        hal.read(table, 32),
        [
            desc_bytes(0x7000, 5, DESC_F_NEXT, 1),
            desc_bytes(0x7100, 6, 0, 0)
        ]
        .concat()
    );
    // Head 2's table follows head 1's.
    let next = q.add_indirect(&[out(0x9000, 1)]).unwrap();
    assert_eq!(next, 2);
    assert_eq!(
        hal.read(tables + 2 * 4 * 16, 16),
        desc_bytes(0x9000, 1, 0, 0)
    );
}

#[test]
fn a_queue_without_indirect_tables_refuses_indirect_chains() {
    let hal = FakeHal::new(MEM);
    let mut q = queue(&hal, 8, false);
    assert_eq!(q.add_indirect(&[out(0x1000, 1), out(0x2000, 1)]), None);
    assert_eq!(q.num_free(), 8);
}

#[test]
fn the_16_bit_indexes_wrap_around() {
    let hal = FakeHal::new(MEM);
    let mut q = queue(&hal, 4, true);
    let mut dev = Device::new(&q);
    let mut published = 0u16;
    let mut wrapped = 0;
    // Past 65535 three times, in batches of 1 or 2 chains of 1 or 2 buffers.
    for round in 0u32..140_000 {
        let batch = 1 + round % 2;
        let mut ids = Vec::new();
        for k in 0..batch {
            let bufs = [out(u64::from(round), k), inb(u64::from(k), round)];
            let n = 1 + (round + k) as usize % 2;
            ids.push(q.add(&bufs[..n]).expect("room: everything was returned"));
        }
        q.kick_prepare();
        let before = published;
        published = published.wrapping_add(batch as u16);
        if published < before {
            wrapped += 1;
        }
        assert_eq!(dev.avail_idx(&hal), published);
        assert_eq!(q.in_flight(), batch as u16);
        let heads = dev.serve_all(&hal, round);
        assert_eq!(
            heads, ids,
            "round {round}: slots follow the index modulo the size"
        );
        for id in ids {
            assert_eq!(q.pop_used(), Some(Ok(Used { id, len: round })));
        }
        assert_eq!(q.pop_used(), None);
        assert_eq!(hal.read_u16(dev.addrs.used + 2), published);
        // used_event stays half the index space ahead of what was taken.
        assert_eq!(dev.used_event(&hal), published.wrapping_add(0x8000));
        assert_eq!((q.num_free(), q.in_flight()), (4, 0));
    }
    assert_eq!(wrapped, 3);
}

/// What `vring_need_event` must say, written as the spec puts it: the device asked to be
/// told when the index passes `event`, and the new chains are slots `old..new`.
fn event_in_batch(event: u16, old: u16, new: u16) -> bool {
    let mut i = old;
    while i != new {
        if i == event {
            return true;
        }
        i = i.wrapping_add(1);
    }
    false
}

#[test]
fn need_event_is_vring_need_event() {
    // Linux's own examples of the formula, and the edges.
    assert!(need_event(0, 1, 0));
    assert!(!need_event(1, 1, 0), "event at the new index: not yet");
    assert!(need_event(65535, 0, 65535), "across the wrap");
    assert!(need_event(65535, 2, 65534));
    assert!(!need_event(3, 2, 65534));
    assert!(!need_event(5, 5, 5), "nothing new");
    for old in [0u16, 1, 100, 65530, 65535] {
        for k in 0..6u16 {
            let new = old.wrapping_add(k);
            for d in 0..10u16 {
                let event = old.wrapping_add(d).wrapping_sub(2);
                assert_eq!(
                    need_event(event, new, old),
                    event_in_batch(event, old, new),
                    "event {event} old {old} new {new}"
                );
            }
        }
    }
}

#[test]
fn with_event_idx_the_kick_comes_only_when_avail_event_is_crossed() {
    let hal = FakeHal::new(MEM);
    let mut q = queue(&hal, 8, true);
    let mut dev = Device::new(&q);
    let mut old = 0u16;
    let (mut kicks, mut quiet, mut wrapped) = (0, 0, 0);
    // Past the wrap, with the event before, at, inside and after each batch.
    for round in 0u32..66_000 {
        let batch = 1 + (round % 4) as u16;
        let new = old.wrapping_add(batch);
        let event = old.wrapping_add((round % 7) as u16).wrapping_sub(1);
        dev.set_avail_event(&hal, event);
        for _ in 0..batch {
            q.add(&[out(0x1000, 64)]).unwrap();
        }
        let kick = q.kick_prepare();
        assert_eq!(
            kick,
            event_in_batch(event, old, new),
            "round {round}: event {event}, published {old}..{new}"
        );
        if kick {
            kicks += 1;
        } else {
            quiet += 1;
        }
        // Nothing new: no kick whatever the event says.
        dev.set_avail_event(&hal, new);
        assert!(!q.kick_prepare());
        dev.serve_all(&hal, 0);
        while q.pop_used().is_some() {}
        if new < old {
            wrapped += 1;
        }
        old = new;
    }
    assert_eq!(wrapped, 2, "the index went round");
    assert!(kicks > 10_000 && quiet > 10_000);
}

#[test]
fn without_event_idx_the_used_flags_decide_and_avail_flags_suppress() {
    let hal = FakeHal::new(MEM);
    let mut q = queue(&hal, 8, false);
    let dev = Device::new(&q);
    q.suppress_interrupts();
    assert_eq!(dev.avail_flags(&hal), AVAIL_F_NO_INTERRUPT);
    assert_eq!(
        dev.used_event(&hal),
        0,
        "no event index without the feature"
    );
    dev.set_used_flags(&hal, USED_F_NO_NOTIFY);
    q.add(&[out(0x1000, 1)]).unwrap();
    assert!(!q.kick_prepare(), "the device said not to notify");
    // The device's avail_event means nothing without the feature.
    dev.set_avail_event(&hal, 1);
    dev.set_used_flags(&hal, 0);
    q.add(&[out(0x1000, 1)]).unwrap();
    assert!(q.kick_prepare());
    assert_eq!(dev.avail_idx(&hal), 2);
}

#[test]
fn with_event_idx_interrupts_are_suppressed_by_used_event_not_flags() {
    let hal = FakeHal::new(MEM);
    let mut q = queue(&hal, 8, true);
    let mut dev = Device::new(&q);
    q.suppress_interrupts();
    assert_eq!(dev.avail_flags(&hal), 0);
    assert_eq!(dev.used_event(&hal), 0x8000);
    for _ in 0..3 {
        q.add(&[inb(0x1000, 64)]).unwrap();
    }
    q.kick_prepare();
    dev.serve_all(&hal, 60);
    q.pop_used().unwrap().unwrap();
    assert_eq!(dev.used_event(&hal), 0x8001, "refreshed on every pop");
    q.pop_used().unwrap().unwrap();
    q.pop_used().unwrap().unwrap();
    assert_eq!(dev.used_event(&hal), 0x8003);
    // The flags are the device's to ignore: untouched.
    assert_eq!(dev.avail_flags(&hal), 0);
}

#[test]
fn the_used_index_is_read_once_per_batch() {
    let hal = FakeHal::new(MEM);
    let mut q = queue(&hal, 8, false);
    let mut dev = Device::new(&q);
    for _ in 0..4 {
        q.add(&[inb(0x1000, 64)]).unwrap();
    }
    q.kick_prepare();
    dev.serve_all(&hal, 1);
    // Rewind the published used index behind the driver's back: the entries it already
    // saw stay poppable, then it looks again and finds nothing new.
    assert!(q.pop_used().is_some());
    hal.write_u16(dev.addrs.used + 2, 1);
    assert!(q.pop_used().is_some());
    assert!(q.pop_used().is_some());
    assert!(q.pop_used().is_some());
    hal.write_u16(dev.addrs.used + 2, 4);
    assert_eq!(q.pop_used(), None);
}
