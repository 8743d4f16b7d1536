//! A port on the fake virtio-net function: multiqueue negotiation, the queues it enables,
//! the control commands it sends (byte by byte), the header with hash, and per-queue
//! bursts.

use alloc::rc::Rc;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use super::fake_dev::{Command, FakeNet, Input};
use super::rss::{self, hash_type, report, Steering};
use super::*;
use crate::mbuf::{flags, MbufPool};
use crate::testing::FakeHal;

const BASE: u64 = features::VERSION_1 | features::CTRL_VQ | features::MAC | features::STATUS;
const BAR: u64 = 0xc000_0000;

fn bdf(device: u8) -> Bdf {
    Bdf {
        bus: 0,
        device,
        function: 0,
    }
}

/// A fake bus with one virtio-net function offering `offered` and `max_pairs` pairs.
fn bus(offered: u64, max_pairs: u16) -> (FakeHal, Rc<RefCell<FakeNet>>) {
    let hal = FakeHal::new(4 << 20);
    let dev = Rc::new(RefCell::new(FakeNet::new(
        bdf(2),
        BAR,
        offered,
        max_pairs,
        64,
    )));
    hal.attach(dev.clone());
    (hal, dev)
}

fn pool(hal: &FakeHal) -> MbufPool {
    MbufPool::new(hal, 256, 128, 512).unwrap()
}

fn cfg(pairs: u16) -> PortConfig {
    PortConfig {
        rx_ring: 16,
        tx_ring: 16,
        queue_pairs: pairs,
        ..PortConfig::default()
    }
}

fn mq(data: &[u8], cmd: u8) -> Command {
    Command {
        class: ctrl::class::MQ,
        cmd,
        data: data.to_vec(),
    }
}

#[test]
fn with_mq_the_pairs_asked_for_are_set_up_and_enabled_by_vq_pairs_set() {
    for packed in [0, features::RING_PACKED] {
        let (hal, dev) = bus(BASE | features::MQ | packed, 4);
        let pool = pool(&hal);
        let port = Port::open(&hal, &pool, 0, &cfg(2)).unwrap();
        assert_eq!((port.queue_pairs(), port.max_queue_pairs()), (2, 4));
        assert_ne!(port.features() & features::MQ, 0);
        let d = dev.borrow();
        // Pairs 0 and 1, and the control queue after the device's four pairs.
        assert_eq!(d.enabled(), [0, 1, 2, 3, 8], "packed {packed:#x}");
        // class VIRTIO_NET_CTRL_MQ, command VQ_PAIRS_SET, le16 2.
        assert_eq!(d.commands, [mq(&[2, 0], 0)]);
        assert_eq!(d.status & status::DRIVER_OK, status::DRIVER_OK);
        // Each receive queue was filled.
        assert_eq!(pool.available(), 256 - 2 * 16);
    }
}

#[test]
fn one_pair_with_mq_is_still_said_and_all_of_them_up_to_the_plan() {
    let (hal, dev) = bus(BASE | features::MQ, 1);
    let pool = pool(&hal);
    Port::open(&hal, &pool, 0, &cfg(1)).unwrap();
    assert_eq!(dev.borrow().commands, [mq(&[1, 0], 0)]);

    let (hal, dev) = bus(BASE | features::MQ, 16);
    let pool = MbufPool::new(&hal, 1024, 128, 256).unwrap();
    let port = Port::open(&hal, &pool, 0, &cfg(MAX_QUEUE_PAIRS)).unwrap();
    assert_eq!(port.queue_pairs(), 15);
    let d = dev.borrow();
    assert_eq!(d.commands, [mq(&[15, 0], 0)]);
    assert_eq!(d.enabled().len(), 31);
    assert_eq!(
        d.enabled().last(),
        Some(&32),
        "the control queue after 16 pairs"
    );
}

#[test]
fn without_mq_a_port_has_one_pair_and_sends_nothing() {
    let (hal, dev) = bus(BASE, 1);
    let pool = pool(&hal);
    let port = Port::open(&hal, &pool, 0, &cfg(1)).unwrap();
    assert_eq!((port.queue_pairs(), port.max_queue_pairs()), (1, 1));
    assert_eq!(port.hdr_len(), NET_HDR_LEN);
    assert!(port.steering().is_none());
    let d = dev.borrow();
    assert_eq!(d.enabled(), [0, 1, 2]);
    assert!(d.commands.is_empty());
}

#[test]
fn more_pairs_than_the_device_offers_is_a_configuration_error() {
    let (hal, dev) = bus(BASE, 1);
    let pool = pool(&hal);
    let e = Port::open(&hal, &pool, 0, &cfg(2)).err().unwrap();
    assert_eq!(
        e,
        Error::TooManyQueuePairs {
            asked: 2,
            max: 1,
            multiqueue: false
        }
    );
    assert!(e.is_config());
    assert_eq!(
        e.to_string(),
        "2 queue pairs asked for, but the device offers 1 (neither VIRTIO_NET_F_MQ nor VIRTIO_NET_F_RSS is negotiated)"
    );
    let d = dev.borrow();
    assert_eq!(d.status & status::FAILED, status::FAILED);
    assert!(d.enabled().is_empty(), "refused before any queue is set up");
    drop(d);

    let (hal, _) = bus(BASE | features::MQ, 2);
    let pool = super::mq_tests::pool(&hal);
    let e = Port::open(&hal, &pool, 0, &cfg(3)).err().unwrap();
    assert_eq!(
        e.to_string(),
        "3 queue pairs asked for, but the device offers 2"
    );
    // Beyond the vector plan: refused before the bus is touched.
    assert_eq!(
        Port::open(&hal, &pool, 0, &cfg(16)).err(),
        Some(Error::QueuePairsOutOfPlan(16))
    );
    assert_eq!(
        Port::open(&hal, &pool, 0, &cfg(0)).err(),
        Some(Error::QueuePairsOutOfPlan(0))
    );
}

#[test]
fn a_device_whose_max_pairs_is_out_of_range_is_refused() {
    let (hal, dev) = bus(BASE | features::MQ, 1);
    dev.borrow_mut().config[8..10].copy_from_slice(&0u16.to_le_bytes());
    let pool = pool(&hal);
    assert_eq!(
        Port::open(&hal, &pool, 0, &cfg(1)).err(),
        Some(Error::BadMaxQueuePairs(0))
    );
}

#[test]
fn a_refused_vq_pairs_set_fails_the_port() {
    let (hal, dev) = bus(BASE | features::MQ, 2);
    dev.borrow_mut().refuse.push((4, 0));
    let pool = pool(&hal);
    let e = Port::open(&hal, &pool, 0, &cfg(2)).err().unwrap();
    assert_eq!(
        e,
        Error::Ctrl {
            what: "VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET",
            err: CtrlError::Refused { class: 4, cmd: 0 }
        }
    );
    assert!(!e.is_config(), "the device's fault");
    assert_eq!(dev.borrow().status & status::FAILED, status::FAILED);
}

#[test]
fn with_rss_the_default_configuration_follows_vq_pairs_set_byte_by_byte() {
    let (hal, dev) = bus(BASE | features::MQ | features::RSS, 4);
    let pool = pool(&hal);
    let port = Port::open(&hal, &pool, 0, &cfg(4)).unwrap();
    let d = dev.borrow();
    assert_eq!(d.commands.len(), 2);
    assert_eq!(d.commands[0], mq(&[4, 0], 0));
    let c = &d.commands[1];
    assert_eq!((c.class, c.cmd), (4, 1), "VIRTIO_NET_CTRL_MQ_RSS_CONFIG");
    let mut want = vec![
        0xff, 0x01, 0x00, 0x00, // hash_types: every type the device supports
        0x7f, 0x00, // indirection_table_mask: 128 entries
        0x00, 0x00, // unclassified_queue 0
    ];
    for i in 0..128u16 {
        want.extend_from_slice(&(i % 4).to_le_bytes());
    }
    want.extend_from_slice(&[0x04, 0x00, 40]); // max_tx_vq 4, hash_key_length 40
    want.extend_from_slice(&rss::DEFAULT_KEY);
    assert_eq!(c.data, want);
    assert!(matches!(port.steering(), Some(Steering::Rss(r)) if r.max_tx_vq == 4));
    // RSS alone leaves the header as it is.
    assert_eq!(port.hdr_len(), NET_HDR_LEN);
}

#[test]
fn an_rss_request_is_sent_as_asked() {
    let (hal, dev) = bus(BASE | features::MQ | features::RSS, 2);
    let pool = pool(&hal);
    let key: Vec<u8> = (0..40).collect();
    let c = PortConfig {
        rss: rss::Request {
            hash_types: Some(hash_type::TCPV4 | hash_type::UDPV6),
            key: Some(key.clone()),
            table: Some(vec![1, 1, 0, 1]),
            unclassified: Some(1),
        },
        ..cfg(2)
    };
    Port::open(&hal, &pool, 0, &c).unwrap();
    let d = dev.borrow();
    let mut want = vec![
        0x22, 0, 0, 0, // tcp4 | udp6
        3, 0, // mask: 4 entries
        1, 0, // unclassified_queue 1
        1, 0, 1, 0, 0, 0, 1, 0, // the table
        2, 0, // max_tx_vq
        40,
    ];
    want.extend_from_slice(&key);
    assert_eq!(d.commands[1], mq(&want, 1));
}

#[test]
fn rss_without_mq_enables_the_pairs_through_its_configuration_alone() {
    let (hal, dev) = bus(BASE | features::RSS, 2);
    let pool = pool(&hal);
    let port = Port::open(&hal, &pool, 0, &cfg(2)).unwrap();
    assert_eq!(port.queue_pairs(), 2);
    let d = dev.borrow();
    assert_eq!(d.enabled(), [0, 1, 2, 3, 4]);
    assert_eq!(
        d.commands.len(),
        1,
        "no VQ_PAIRS_SET without VIRTIO_NET_F_MQ"
    );
    let c = &d.commands[0];
    assert_eq!((c.class, c.cmd), (4, 1));
    assert_eq!(c.data[8 + 256..8 + 256 + 3], [2, 0, 40], "max_tx_vq 2");
}

#[test]
fn what_the_device_cannot_take_is_refused_before_any_queue_is_set_up() {
    let reta = rss::Request {
        table: Some(vec![0, 1]),
        ..rss::Request::default()
    };
    let with = |offered, pairs, req: &rss::Request| {
        let (hal, dev) = bus(offered, 2);
        let pool = pool(&hal);
        let c = PortConfig {
            rss: req.clone(),
            ..cfg(pairs)
        };
        let e = Port::open(&hal, &pool, 0, &c).err();
        assert_eq!(dev.borrow().enabled().is_empty(), e.is_some());
        e
    };
    assert_eq!(
        with(BASE | features::MQ, 2, &reta),
        Some(Error::RssNotNegotiated)
    );
    assert_eq!(
        with(BASE | features::MQ | features::HASH_REPORT, 2, &reta),
        Some(Error::SteeringNeedsRss)
    );
    assert_eq!(
        with(BASE | features::MQ | features::RSS, 1, &reta),
        Some(Error::Rss(rss::Error::NoSuchQueue {
            queue: 1,
            queues: 1
        }))
    );
    let types = rss::Request {
        hash_types: Some(hash_type::IPV4),
        ..rss::Request::default()
    };
    let e = with(BASE | features::RSS, 1, &types);
    assert_eq!(e, None, "a hash type the device supports");
}

#[test]
fn hash_reports_alone_configure_the_hash_and_lengthen_the_header() {
    let (hal, dev) = bus(BASE | features::HASH_REPORT, 1);
    let pool = pool(&hal);
    let port = Port::open(&hal, &pool, 0, &cfg(1)).unwrap();
    assert_eq!(port.hdr_len(), NET_HDR_LEN_HASH);
    let d = dev.borrow();
    // VIRTIO_NET_CTRL_MQ_HASH_CONFIG: le32 hash_types, le16 reserved[4], key.
    let mut want = vec![0xff, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40];
    want.extend_from_slice(&rss::DEFAULT_KEY);
    assert_eq!(d.commands, [mq(&want, 2)]);
    assert!(matches!(port.steering(), Some(Steering::HashOnly(_))));
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(3) ^ seed).collect()
}

fn bytes_of(m: &Mbuf<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    m.copy_to(&mut v);
    v
}

#[test]
fn the_hash_header_is_read_into_the_mbuf_and_a_zero_one_goes_out() {
    let (hal, dev) = bus(
        BASE | features::MQ | features::RSS | features::HASH_REPORT,
        2,
    );
    let pool = pool(&hal);
    let mut port = Port::open(&hal, &pool, 0, &cfg(2)).unwrap();
    assert_eq!(port.hdr_len(), 20);
    let inputs = [
        (1, frame(60, 1), 0xdead_beef, report::TCPV4),
        (1, frame(61, 2), 0, report::NONE),
        (0, frame(62, 3), 0x0102_0304, report::UDPV6_EX),
    ];
    for (queue, f, hash, report) in &inputs {
        dev.borrow_mut().input.push_back(Input {
            queue: *queue,
            frame: f.clone(),
            hash: *hash,
            report: *report,
        });
    }
    hal.relax();
    let mut out = Vec::new();
    assert_eq!(port.rx_burst(1, &mut out, 32), 2);
    assert_eq!(port.rx_burst(1, &mut out, 32), 0);
    assert_eq!(port.rx_burst(0, &mut out, 32), 1);
    assert_eq!(port.rx_burst(7, &mut out, 32), 0, "no such queue");
    for (m, (_, f, hash, report)) in out.iter().zip(&inputs) {
        assert_eq!(bytes_of(m), *f, "the frame after a 20-byte header");
        let hashed = *report != report::NONE;
        assert_eq!(m.ol_flags() & flags::RX_RSS_HASH != 0, hashed);
        if hashed {
            assert_eq!((m.rss_hash(), m.hash_report()), (*hash, *report));
        }
    }
    // Out on queue 1: the header is 20 zero bytes (the fake checks), then the frame.
    let mut tx = vec![out.remove(0)];
    assert_eq!(port.tx_burst(1, &mut tx), 1);
    hal.relax();
    assert_eq!(dev.borrow().output, [(1, inputs[0].1.clone())]);
    let mut none = Vec::new();
    assert_eq!(port.tx_burst(2, &mut none), 0, "no such queue");
    assert_eq!(port.stats.ipackets, 3);
}

#[test]
fn without_hash_reports_a_frame_carries_no_hash() {
    let (hal, dev) = bus(BASE | features::RSS, 1);
    let pool = pool(&hal);
    let mut port = Port::open(&hal, &pool, 0, &cfg(1)).unwrap();
    dev.borrow_mut().input.push_back(Input {
        queue: 0,
        frame: frame(64, 9),
        hash: 0x1234,
        report: report::IPV4,
    });
    hal.relax();
    let mut out = Vec::new();
    assert_eq!(port.rx_burst(0, &mut out, 32), 1);
    assert_eq!(out[0].ol_flags() & flags::RX_RSS_HASH, 0);
    assert_eq!(bytes_of(&out[0]), frame(64, 9));
}
