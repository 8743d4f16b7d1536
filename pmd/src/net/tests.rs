//! Finding the n-th port on a fake PCI bus, and the queue and vector plan of a port.

use super::*;
use alloc::string::ToString;

use crate::mbuf::MbufPool;
use crate::testing::{FakeHal, Function};

fn function(device: u8, function: u8, vendor: u16, id: u16, header_type: u8) -> Function {
    Function {
        bdf: Bdf {
            bus: 0,
            device,
            function,
        },
        vendor,
        device: id,
        header_type,
    }
}

/// A host bridge, a transitional virtio-net at 00:02.0, a multi-function device at 00:03
/// with a virtio block function and a modern virtio-net, and a lone function 00:04.1 that
/// a scan never reaches (its device has no function 0).
fn bus() -> FakeHal {
    FakeHal::with_functions(
        1 << 16,
        &[
            function(0, 0, 0x8086, 0x29c0, 0),
            function(2, 0, VIRTIO_VENDOR, DEVICE_ID_TRANSITIONAL, 0),
            function(3, 0, VIRTIO_VENDOR, 0x1001, 0x80),
            function(3, 1, VIRTIO_VENDOR, DEVICE_ID_MODERN, 0),
            function(4, 1, VIRTIO_VENDOR, DEVICE_ID_MODERN, 0),
        ],
    )
}

#[test]
fn port_n_is_the_nth_virtio_net_function_in_bus_order() {
    let hal = bus();
    let at = |device, function| Bdf {
        bus: 0,
        device,
        function,
    };
    assert_eq!(
        find_function(&hal, 0),
        Ok((at(2, 0), DEVICE_ID_TRANSITIONAL))
    );
    assert_eq!(find_function(&hal, 1), Ok((at(3, 1), DEVICE_ID_MODERN)));
    assert_eq!(
        find_function(&hal, 2),
        Err(Error::NoSuchPort { port: 2, found: 2 })
    );
    assert_eq!(
        find_function(&FakeHal::new(4096), 0),
        Err(Error::NoDevice),
        "an empty bus"
    );
}

#[test]
fn port_0_still_says_there_is_no_device_as_before() {
    assert_eq!(
        Error::NoDevice.to_string(),
        "no virtio-net PCI function (1af4:1041 or 1af4:1000) on bus 0"
    );
}

#[test]
fn a_port_beyond_the_vector_plan_is_refused_before_touching_the_bus() {
    let hal = bus();
    let pool = MbufPool::new(&hal, 4, 128, 256).unwrap();
    hal.take_accesses();
    let e = Port::open(&hal, &pool, irq::MAX_PORTS, &PortConfig::default()).err();
    assert_eq!(e, Some(Error::TooManyPorts(irq::MAX_PORTS)));
    assert!(hal.take_accesses().is_empty());
}

#[test]
fn queue_pairs_are_numbered_as_virtio_net_numbers_its_queues() {
    assert_eq!((rx_queue(0), tx_queue(0), ctrl_queue(1)), (0, 1, 2));
    assert_eq!((rx_queue(3), tx_queue(3), ctrl_queue(4)), (6, 7, 8));
    // The queues of every pair a port sets up have vectors of their own, and so has the
    // control queue of a device with no more pairs than that.
    assert!(ctrl_queue(MAX_QUEUE_PAIRS) < irq::MAX_QUEUE_VECTORS);
    assert_eq!(MAX_QUEUE_PAIRS, 15);
}

#[test]
fn the_negotiated_features_pick_the_ring_path() {
    use features::*;
    let o = queue_options(VERSION_1 | RING_PACKED | IN_ORDER | RING_EVENT_IDX, false);
    assert_eq!(
        (o.layout, o.in_order, o.event_idx, o.indirect),
        (Layout::Packed, true, true, 0)
    );
    let o = queue_options(VERSION_1 | IN_ORDER, false);
    assert_eq!(
        (o.layout, o.in_order, o.event_idx),
        (Layout::Split, true, false)
    );
    assert_eq!(queue_options(VERSION_1, false), Options::default());
    // Forced on the legacy interface, bits 34 and 35 never reach the device.
    let o = queue_options(RING_PACKED | IN_ORDER | RING_EVENT_IDX, true);
    assert_eq!(
        (o.layout, o.in_order, o.event_idx),
        (Layout::Split, false, true)
    );
}

#[test]
fn the_features_line_names_every_feature_asked_for_in_bit_order() {
    let names: alloc::vec::Vec<&str> = features::NAMES
        .iter()
        .filter(|(bit, _)| features::ALL & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(
        names.len(),
        features::NAMES.len(),
        "every name is a feature asked for"
    );
    assert_eq!(
        names[names.len() - 4..],
        ["RING_PACKED", "IN_ORDER", "HASH_REPORT", "RSS"]
    );
    assert_eq!(
        (features::RING_PACKED, features::IN_ORDER),
        (1 << 34, 1 << 35)
    );
    assert_eq!(
        (features::MQ, features::HASH_REPORT, features::RSS),
        (1 << 22, 1 << 57, 1 << 60)
    );
    // In bit order, so the features line reads as the spec lists them.
    let bits: alloc::vec::Vec<u64> = features::NAMES.iter().map(|(b, _)| *b).collect();
    assert!(bits.windows(2).all(|w| w[0] < w[1]));
}
