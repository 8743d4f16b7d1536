//! The rx and tx queues on every ring path (split or packed, in order or not) against the
//! test device: mergeable frames spread over several buffers and refilled, scattered
//! frames sent as chains and through indirect tables, in-order batches freed together.

use alloc::vec::Vec;

use super::rx::{RxParams, RxQueue};
use super::tx::TxQueue;
use super::{Stats, NET_HDR_LEN, NET_HDR_LEN_HASH};
use crate::mbuf::{Mbuf, MbufPool};
use crate::testing::FakeHal;
use crate::virtqueue::testdev::{Avail, TestDevice};
use crate::virtqueue::{Layout, Options, Virtqueue};

const MEM: usize = 1 << 21;

/// (layout, in order), as DPDK names its paths: split, split in-order, packed, packed
/// in-order.
const PATHS: [(Layout, bool); 4] = [
    (Layout::Split, false),
    (Layout::Split, true),
    (Layout::Packed, false),
    (Layout::Packed, true),
];

fn vq(
    hal: &FakeHal,
    index: u16,
    size: u16,
    path: (Layout, bool),
    indirect: u16,
) -> Virtqueue<'_, FakeHal> {
    let opts = Options {
        layout: path.0,
        event_idx: true,
        indirect,
        in_order: path.1,
    };
    Virtqueue::new(hal, index, size, opts).expect("a queue")
}

const MRG: RxParams = RxParams {
    hdr_len: NET_HDR_LEN,
    mergeable: true,
    vlan_strip: false,
    hash_report: false,
};

/// Writes `frame` into the posted rx buffers `bufs` as a device with mergeable buffers
/// does: a header whose `num_buffers` counts the buffers used, then the frame, each
/// buffer filled before the next. Returns the bytes written into each.
fn write_frame(hal: &FakeHal, bufs: &[Avail], frame: &[u8]) -> Vec<u32> {
    let mut bytes = alloc::vec![0u8; NET_HDR_LEN];
    bytes[10..12].copy_from_slice(&(bufs.len() as u16).to_le_bytes());
    bytes.extend_from_slice(frame);
    let mut lens = Vec::new();
    let mut rest = &bytes[..];
    for (k, b) in bufs.iter().enumerate() {
        let e = b.elems[0];
        assert!(e.write, "rx buffers are device-writable");
        let n = rest.len().min(e.len as usize);
        assert!(n > 0 || k == 0, "more buffers than the frame needs");
        hal.write(e.addr, &rest[..n]);
        rest = &rest[n..];
        lens.push(n as u32);
    }
    assert!(rest.is_empty(), "the frame fits the buffers");
    lens
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

fn bytes_of(m: &Mbuf<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    m.copy_to(&mut v);
    v
}

#[test]
fn mergeable_frames_spread_over_buffers_on_every_path() {
    for path in PATHS {
        let hal = FakeHal::new(MEM);
        // Small buffers: 128 bytes after a 64-byte headroom.
        let pool = MbufPool::new(&hal, 64, 64, 128).unwrap();
        let mut rx = RxQueue::new(vq(&hal, 0, 16, path, 0), 16);
        let mut dev = TestDevice::new(&rx.vq);
        let mut stats = Stats::default();
        assert!(rx.refill(&pool, NET_HDR_LEN, &mut stats), "{path:?}: kick");
        assert_eq!(pool.available(), 48);
        let mut out = Vec::new();
        for round in 0..40u8 {
            // 300 bytes and a 12-byte header take three buffers of 140; 100 take one.
            let big = frame(300, round);
            let small = frame(100, round);
            let bufs: Vec<Avail> = (0..4).map(|_| dev.pop_avail(&hal).unwrap()).collect();
            let lens = write_frame(&hal, &bufs[..3], &big);
            assert_eq!(lens, [140, 140, 32]);
            let lens2 = write_frame(&hal, &bufs[3..], &small);
            if path.1 && round % 2 == 1 {
                // In order: one used entry for the first two buffers (full), then the rest.
                dev.give_back_batch(&hal, &bufs[..2], 140);
                dev.give_back(&hal, &bufs[2], lens[2]);
            } else {
                for (b, &len) in bufs.iter().zip(&lens) {
                    dev.give_back(&hal, b, len);
                }
            }
            dev.give_back(&hal, &bufs[3], lens2[0]);
            out.clear();
            assert_eq!(
                rx.burst(&mut out, 32, MRG, &mut stats),
                2,
                "{path:?} round {round}"
            );
            assert_eq!((out[0].nb_segs(), out[1].nb_segs()), (3, 1));
            assert_eq!(bytes_of(&out[0]), big);
            assert_eq!(bytes_of(&out[1]), small);
            out.clear();
            // Refilled: the ring is full again, the pool back where it was.
            rx.refill(&pool, NET_HDR_LEN, &mut stats);
            assert_eq!(rx.vq.num_free(), 0);
            assert_eq!(pool.available(), 48);
        }
        assert_eq!(stats.ipackets, 80);
        assert_eq!(stats.rx_multiseg, 40);
        assert_eq!((stats.ierrors, stats.rx_nombuf), (0, 0));
    }
}

#[test]
fn frames_from_a_packed_device_that_never_sets_write_in_used_descriptors_are_received() {
    // QEMU's virtio-net with packed=on: used descriptors without WRITE, their lengths the
    // bytes written all the same. Taking those lengths for 0 dropped every frame.
    for path in [(Layout::Packed, false), (Layout::Packed, true)] {
        let hal = FakeHal::new(MEM);
        let pool = MbufPool::new(&hal, 32, 64, 128).unwrap();
        let mut rx = RxQueue::new(vq(&hal, 0, 8, path, 0), 8);
        let mut dev = TestDevice::new(&rx.vq).without_write_flag();
        let mut stats = Stats::default();
        let mut out = Vec::new();
        for round in 0..10u8 {
            rx.refill(&pool, NET_HDR_LEN, &mut stats);
            let big = frame(300, round);
            let small = frame(60, round);
            let bufs: Vec<Avail> = (0..4).map(|_| dev.pop_avail(&hal).unwrap()).collect();
            let lens = write_frame(&hal, &bufs[..3], &big);
            let lens2 = write_frame(&hal, &bufs[3..], &small);
            for (b, &len) in bufs.iter().zip(lens.iter().chain(&lens2)) {
                dev.give_back(&hal, b, len);
            }
            out.clear();
            assert_eq!(
                rx.burst(&mut out, 32, MRG, &mut stats),
                2,
                "{path:?} round {round}"
            );
            assert_eq!(bytes_of(&out[0]), big, "{path:?} round {round}");
            assert_eq!(bytes_of(&out[1]), small, "{path:?} round {round}");
        }
        out.clear();
        assert_eq!((stats.ipackets, stats.ierrors), (20, 0), "{path:?}");
    }
}

#[test]
fn a_frame_whose_buffers_are_not_all_back_finishes_in_a_later_burst() {
    for path in PATHS {
        let hal = FakeHal::new(MEM);
        let pool = MbufPool::new(&hal, 32, 64, 128).unwrap();
        let mut rx = RxQueue::new(vq(&hal, 0, 8, path, 0), 8);
        let mut dev = TestDevice::new(&rx.vq);
        let mut stats = Stats::default();
        rx.refill(&pool, NET_HDR_LEN, &mut stats);
        let big = frame(200, 3);
        let bufs: Vec<Avail> = (0..2).map(|_| dev.pop_avail(&hal).unwrap()).collect();
        let lens = write_frame(&hal, &bufs, &big);
        dev.give_back(&hal, &bufs[0], lens[0]);
        let mut out = Vec::new();
        assert_eq!(rx.burst(&mut out, 32, MRG, &mut stats), 0, "{path:?}");
        dev.give_back(&hal, &bufs[1], lens[1]);
        assert_eq!(rx.burst(&mut out, 32, MRG, &mut stats), 1, "{path:?}");
        assert_eq!(bytes_of(&out[0]), big);
    }
}

#[test]
fn a_merged_frame_takes_its_hash_from_the_first_buffers_20_byte_header_on_every_path() {
    const HASHED: RxParams = RxParams {
        hdr_len: NET_HDR_LEN_HASH,
        hash_report: true,
        ..MRG
    };
    for path in PATHS {
        let hal = FakeHal::new(MEM);
        let pool = MbufPool::new(&hal, 32, 64, 128).unwrap();
        let mut rx = RxQueue::new(vq(&hal, 0, 8, path, 0), 8);
        let mut dev = TestDevice::new(&rx.vq);
        let mut stats = Stats::default();
        rx.refill(&pool, NET_HDR_LEN_HASH, &mut stats);
        // 200 bytes after a 20-byte header: 148 + 72 in buffers of 148.
        let big = frame(200, 5);
        let bufs: Vec<Avail> = (0..2).map(|_| dev.pop_avail(&hal).unwrap()).collect();
        assert_eq!(bufs[0].elems[0].len, 148);
        let mut first = alloc::vec![0u8; NET_HDR_LEN_HASH];
        first[10..12].copy_from_slice(&2u16.to_le_bytes());
        first[12..16].copy_from_slice(&0x8765_4321u32.to_le_bytes());
        first[16..18].copy_from_slice(&super::rss::report::UDPV4.to_le_bytes());
        first[18..20].copy_from_slice(&[0xee, 0xee]); // padding the driver ignores
        first.extend_from_slice(&big[..128]);
        hal.write(bufs[0].elems[0].addr, &first);
        hal.write(bufs[1].elems[0].addr, &big[128..]);
        dev.give_back(&hal, &bufs[0], 148);
        dev.give_back(&hal, &bufs[1], 72);
        let mut out = Vec::new();
        assert_eq!(rx.burst(&mut out, 32, HASHED, &mut stats), 1, "{path:?}");
        assert_eq!(bytes_of(&out[0]), big, "{path:?}");
        assert_eq!(out[0].nb_segs(), 2);
        assert_eq!(
            (out[0].rss_hash(), out[0].hash_report()),
            (0x8765_4321, super::rss::report::UDPV4)
        );
        assert_ne!(out[0].ol_flags() & crate::mbuf::flags::RX_RSS_HASH, 0);
        assert_eq!(stats.ierrors, 0);
    }
}

/// A frame of `segs` segments of `seg` bytes each, with the headroom for the header.
fn scattered<'p>(pool: &'p MbufPool, segs: usize, seg: usize, seed: u8) -> Mbuf<'p> {
    let mut head: Option<Mbuf<'p>> = None;
    for k in 0..segs {
        let mut m = pool.alloc().unwrap();
        m.append(seg)
            .unwrap()
            .copy_from_slice(&frame(seg, seed ^ k as u8));
        match head.as_mut() {
            Some(h) => h.append_seg(m),
            None => head = Some(m),
        }
    }
    head.unwrap()
}

#[test]
fn scattered_frames_go_as_chains_or_through_indirect_tables_on_every_path() {
    for path in PATHS {
        for indirect in [0u16, 32] {
            let hal = FakeHal::new(MEM);
            let pool = MbufPool::new(&hal, 256, 64, 256).unwrap();
            let mut tx = TxQueue::new(vq(&hal, 1, 16, path, indirect));
            let mut dev = TestDevice::new(&tx.vq);
            let mut stats = Stats::default();
            for round in 0..50u8 {
                let mut pkts: Vec<Mbuf<'_>> = (0..4)
                    .map(|k| scattered(&pool, 1 + k % 3, 60, round))
                    .collect();
                let expected: Vec<Vec<u8>> = pkts.iter().map(bytes_of).collect();
                let (sent, _) = tx.burst(&mut pkts, NET_HDR_LEN, &mut stats);
                assert_eq!(sent, 4, "{path:?} indirect {indirect} round {round}");
                let got: Vec<Avail> = core::iter::from_fn(|| dev.pop_avail(&hal)).collect();
                assert_eq!(got.len(), 4);
                for (a, want) in got.iter().zip(&expected) {
                    // Header first (in the first segment's headroom), then the frame.
                    let mut data = Vec::new();
                    for e in &a.elems {
                        assert!(!e.write);
                        data.extend(hal.read(e.addr, e.len as usize));
                    }
                    assert_eq!(&data[..NET_HDR_LEN], [0; NET_HDR_LEN]);
                    assert_eq!(&data[NET_HDR_LEN..], &want[..]);
                    let multi = a.elems.len() > 1;
                    assert_eq!(a.indirect, multi && indirect > 0);
                }
                if path.1 {
                    // In order: everything back with one used entry, freed at once.
                    dev.give_back_batch(&hal, &got, 0);
                } else {
                    for a in got.iter().rev() {
                        dev.give_back(&hal, a, 0);
                    }
                }
                tx.cleanup(&mut stats);
                assert_eq!(tx.vq.in_flight(), 0);
                assert_eq!(pool.available(), 256, "every mbuf freed");
            }
            assert_eq!((stats.opackets, stats.oerrors), (200, 0));
            assert_eq!(stats.tx_multiseg, 50 * 2);
            let via_tables = if indirect > 0 { 100 } else { 0 };
            assert_eq!(stats.tx_indirect, via_tables);
        }
    }
}

#[test]
fn in_order_tx_counts_a_batch_that_names_no_frame_sent() {
    for layout in [Layout::Split, Layout::Packed] {
        let hal = FakeHal::new(MEM);
        let pool = MbufPool::new(&hal, 16, 64, 256).unwrap();
        let mut tx = TxQueue::new(vq(&hal, 1, 8, (layout, true), 0));
        let mut dev = TestDevice::new(&tx.vq);
        let mut stats = Stats::default();
        let mut pkts: Vec<Mbuf<'_>> = (0..2).map(|k| scattered(&pool, 1, 60, k)).collect();
        tx.burst(&mut pkts, NET_HDR_LEN, &mut stats);
        let got: Vec<Avail> = core::iter::from_fn(|| dev.pop_avail(&hal)).collect();
        // An entry naming a slot no frame went in: an error, nothing freed.
        dev.used(&hal, 5, 0, 1, 1);
        tx.cleanup(&mut stats);
        assert_eq!(
            (stats.oerrors, pool.available(), tx.vq.in_flight()),
            (1, 14, 2)
        );
        let _ = got;
    }
}
