//! In-order queues (VIRTIO_F_IN_ORDER) of both layouts against the test device: chains
//! take descriptors in ring order, and one used entry may return a batch.

use alloc::vec::Vec;

use super::testdev::{desc_at, laps, Avail, TestDevice};
use super::{BadUsed, Buf, Layout, Options, Used, UsedBatch, Virtqueue};
use crate::testing::FakeHal;

const MEM: usize = 1 << 20;
const LAYOUTS: [Layout; 2] = [Layout::Split, Layout::Packed];

fn queue(hal: &FakeHal, layout: Layout, size: u16, in_order: bool) -> Virtqueue<'_, FakeHal> {
    let opts = Options {
        layout,
        event_idx: true,
        indirect: 4,
        in_order,
    };
    Virtqueue::new(hal, 2, size, opts).expect("a queue")
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

/// Every chain the device can take now.
fn take_all(dev: &mut TestDevice, hal: &FakeHal) -> Vec<Avail> {
    core::iter::from_fn(|| dev.pop_avail(hal)).collect()
}

#[test]
fn chains_take_descriptors_in_ring_order_and_free_them_without_a_walk() {
    for layout in LAYOUTS {
        let hal = FakeHal::new(MEM);
        let mut q = queue(&hal, layout, 8, true);
        let mut dev = TestDevice::new(&q);
        assert!(q.in_order());
        let ids = [
            q.add(&[out(0x1000, 1)]).unwrap(),
            q.add(&[out(0x2000, 1), out(0x2100, 1)]).unwrap(),
            q.add_indirect(&[out(0x3000, 1), out(0x3100, 1)]).unwrap(),
        ];
        // The first descriptor of each chain: consecutive, whatever was freed before.
        assert_eq!(ids, [0, 1, 3], "{layout:?}");
        q.kick_prepare();
        let got = take_all(&mut dev, &hal);
        dev.give_back_batch(&hal, &got, 0);
        while q.pop_used().is_some() {}
        assert_eq!(q.num_free(), 8);
        // A free list would hand out 0 again; in order the ring goes on at 4.
        assert_eq!(q.add(&[out(0x4000, 1), out(0x4100, 1)]), Some(4));
        assert_eq!(q.add(&[out(0x5000, 1), out(0x5100, 1)]), Some(6));
        assert_eq!(q.add(&[out(0x6000, 1)]), Some(0), "round the end");
        if layout == Layout::Split {
            // Split: every `next` is still `i + 1` (0 for the last), as 2.7.9 asks.
            for i in 0..8u16 {
                let next = desc_at(&hal, q.addrs().desc + 16 * u64::from(i)).3;
                assert_eq!(next, (i + 1) % 8, "descriptor {i}");
            }
        }
    }
}

#[test]
fn a_batch_comes_back_with_one_used_entry_naming_its_last_chain() {
    for layout in LAYOUTS {
        let hal = FakeHal::new(MEM);
        let mut q = queue(&hal, layout, 8, true);
        let mut dev = TestDevice::new(&q);
        let a = q.add(&[inb(0x1000, 100)]).unwrap();
        let b = q.add(&[inb(0x2000, 200), inb(0x2100, 50)]).unwrap();
        let c = q.add(&[out(0x3000, 14), inb(0x3100, 300)]).unwrap();
        q.kick_prepare();
        let got = take_all(&mut dev, &hal);
        if layout == Layout::Split {
            // The used entries the batch skips are never read: garbage there is harmless.
            for slot in 1..3 {
                hal.write_u32(dev.addrs.used + 4 + 8 * slot, 0xdead);
            }
        }
        dev.give_back_batch(&hal, &got, 77);
        // Oldest first; the skipped chains count as written in full, the last has the
        // entry's length.
        assert_eq!(q.pop_used(), Some(Ok(Used { id: a, len: 100 })));
        assert_eq!(q.in_flight(), 2, "{layout:?}");
        assert_eq!(q.pop_used(), Some(Ok(Used { id: b, len: 250 })));
        assert_eq!(q.pop_used(), Some(Ok(Used { id: c, len: 77 })));
        assert_eq!(q.pop_used(), None);
        assert_eq!((q.num_free(), q.in_flight()), (8, 0));
        // The next used entries are read where the device writes them after the batch.
        let d = q.add(&[inb(0x4000, 64)]).unwrap();
        let e = q.add(&[inb(0x5000, 64), inb(0x5100, 64)]).unwrap();
        q.kick_prepare();
        let got = take_all(&mut dev, &hal);
        dev.give_back(&hal, &got[0], 5);
        dev.give_back(&hal, &got[1], 6);
        assert_eq!(q.pop_used(), Some(Ok(Used { id: d, len: 5 })));
        assert_eq!(q.pop_used(), Some(Ok(Used { id: e, len: 6 })));
        assert_eq!(q.pop_used(), None);
    }
}

#[test]
fn pop_used_batch_takes_what_is_left_of_a_batch() {
    for layout in LAYOUTS {
        let hal = FakeHal::new(MEM);
        let mut q = queue(&hal, layout, 8, true);
        let mut dev = TestDevice::new(&q);
        let ids: Vec<u16> = (0..6).map(|k| q.add(&[out(k, 1)]).unwrap()).collect();
        q.kick_prepare();
        let got = take_all(&mut dev, &hal);
        dev.give_back_batch(&hal, &got[..4], 0);
        dev.give_back(&hal, &got[4], 0);
        dev.give_back(&hal, &got[5], 0);
        assert_eq!(q.pop_used(), Some(Ok(Used { id: ids[0], len: 0 })));
        let rest = UsedBatch {
            count: 3,
            last: Used { id: ids[3], len: 0 },
        };
        assert_eq!(q.pop_used_batch(), Some(Ok(rest)));
        assert_eq!(q.num_free(), 6);
        for &id in &ids[4..] {
            let one = UsedBatch {
                count: 1,
                last: Used { id, len: 0 },
            };
            assert_eq!(q.pop_used_batch(), Some(Ok(one)));
        }
        assert_eq!(q.pop_used_batch(), None);
        assert_eq!((q.num_free(), q.in_flight()), (8, 0));
    }
}

#[test]
fn out_of_order_queues_return_batches_of_one() {
    for layout in LAYOUTS {
        let hal = FakeHal::new(MEM);
        let mut q = queue(&hal, layout, 8, false);
        let mut dev = TestDevice::new(&q);
        let a = q.add(&[out(1, 1)]).unwrap();
        let b = q.add(&[out(2, 1)]).unwrap();
        q.kick_prepare();
        let got = take_all(&mut dev, &hal);
        dev.give_back(&hal, &got[1], 0);
        dev.give_back(&hal, &got[0], 0);
        for id in [b, a] {
            let one = UsedBatch {
                count: 1,
                last: Used { id, len: 0 },
            };
            assert_eq!(q.pop_used_batch(), Some(Ok(one)));
        }
    }
}

#[test]
fn used_entries_naming_no_chain_in_flight_are_rejected() {
    for layout in LAYOUTS {
        let hal = FakeHal::new(MEM);
        let mut q = queue(&hal, layout, 8, true);
        let mut dev = TestDevice::new(&q);
        let a = q.add(&[out(1, 1), out(2, 1)]).unwrap();
        let b = q.add(&[out(3, 1)]).unwrap();
        q.kick_prepare();
        let got = take_all(&mut dev, &hal);
        // Slot 1 is the middle of chain a, 5 heads nothing: neither names a chain.
        for bad in [1u16, 5] {
            dev.used(&hal, bad, 9, 1, 1);
            assert_eq!(
                q.pop_used(),
                Some(Err(BadUsed {
                    id: u32::from(bad),
                    len: 9
                })),
                "{layout:?}"
            );
            assert_eq!(q.num_free(), 5, "nothing freed");
        }
        if layout == Layout::Split {
            // b's head, but the used index moved by one where the batch is two.
            dev.used(&hal, b, 9, 1, 1);
            assert_eq!(
                q.pop_used(),
                Some(Err(BadUsed {
                    id: u32::from(b),
                    len: 9
                }))
            );
            assert_eq!(q.num_free(), 5, "nothing freed");
            // The device makes it right: an entry whose index covers the batch.
            dev.used(&hal, b, 9, 2, 0);
        } else {
            dev.give_back_batch(&hal, &got, 9);
        }
        let both = UsedBatch {
            count: 2,
            last: Used { id: b, len: 9 },
        };
        assert_eq!(q.pop_used_batch(), Some(Ok(both)), "{layout:?}");
        assert_eq!((q.num_free(), q.in_flight(), a), (8, 0, 0));
    }
}

#[test]
fn in_order_split_indexes_wrap_around() {
    laps(Layout::Split, 8, true, 50_000);
    laps(Layout::Split, 4, false, 50_000);
}
