//! The generated input captures: built with `etherparse`, so every committed `in.pcap` that
//! is not a foreign capture can be regenerated from this code (`cargo run -p testcases --bin
//! gen-inputs`), and a test checks that it is.
//!
//! - [`mixed`]: every size class from 60 to 1518 bytes, over UDP, TCP, IPv6, ARP, VLAN;
//! - [`filter`]: one frame for each way a receive filter can decide;
//! - [`vlan`]: tagged and untagged frames for the VLAN offloads;
//! - [`jumbo`]: frames beyond 1518 bytes, up to a 9000-byte MTU.

use std::time::Duration;

use device_model::pcap::Frame;
use etherparse::{PacketBuilder, VlanId};

const A: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x0a, 0x01];
const B: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x0b, 0x02];
/// Frame sizes around every power of two and the MTU's edges.
const UDP_SIZES: [usize; 20] = [
    60, 64, 65, 100, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1000, 1023, 1024, 1025, 1499,
    1500, 1514,
];

fn payload(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + seed * 13) as u8).collect()
}

fn udp4(size: usize, seed: usize) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(A, B)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(4000 + seed as u16, 5000);
    let len = size - b.size(0);
    let mut out = Vec::with_capacity(size);
    b.write(&mut out, &payload(len, seed))
        .expect("writing to a Vec cannot fail");
    out
}

fn tcp4(size: usize, seed: usize) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(B, A)
        .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
        .tcp(80, 40000, 1000 + seed as u32, 65535);
    let len = size - b.size(0);
    let mut out = Vec::with_capacity(size);
    b.write(&mut out, &payload(len, seed))
        .expect("writing to a Vec cannot fail");
    out
}

fn udp6(size: usize, seed: usize) -> Vec<u8> {
    let src = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let dst = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let b = PacketBuilder::ethernet2(A, B)
        .ipv6(src, dst, 64)
        .udp(546, 547);
    let len = size - b.size(0);
    let mut out = Vec::with_capacity(size);
    b.write(&mut out, &payload(len, seed))
        .expect("writing to a Vec cannot fail");
    out
}

fn vlan_udp4(size: usize, vid: u16, seed: usize) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(A, B)
        .single_vlan(VlanId::try_new(vid).expect("vid < 4096"))
        .ipv4([10, 0, 1, 1], [10, 0, 1, 2], 64)
        .udp(7, 7);
    let len = size - b.size(0);
    let mut out = Vec::with_capacity(size);
    b.write(&mut out, &payload(len, seed))
        .expect("writing to a Vec cannot fail");
    out
}

/// A broadcast ARP request for 10.0.0.2, padded to the 60-byte minimum.
fn arp_request() -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&A);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&A);
    f.extend_from_slice(&[10, 0, 0, 1]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 0, 0, 2]);
    f.resize(60, 0);
    f
}

/// Frames one millisecond apart.
fn stamp(data: Vec<Vec<u8>>) -> Vec<Frame> {
    data.into_iter()
        .enumerate()
        .map(|(i, data)| Frame {
            ts: Duration::new(1_700_000_000, 0) + Duration::from_millis(i as u64),
            data,
        })
        .collect()
}

fn udp_to(dst: [u8; 6], vlan: Option<u16>, size: usize, seed: usize) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(A, dst);
    let len;
    let mut out = Vec::with_capacity(size);
    match vlan {
        Some(v) => {
            let b = b
                .single_vlan(VlanId::try_new(v).expect("vid < 4096"))
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(5353, 5353);
            len = size - b.size(0);
            b.write(&mut out, &payload(len, seed))
                .expect("writing to a Vec cannot fail");
        }
        None => {
            let b = b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(5353, 5353);
            len = size - b.size(0);
            b.write(&mut out, &payload(len, seed))
                .expect("writing to a Vec cannot fail");
        }
    }
    out
}

/// The MAC the rust backend gives its device.
pub const OWN_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// Unicast addresses the filter cases add, set, or leave out.
pub const TABLE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
pub const STRANGER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xbb];
pub const NEW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];
/// Multicast groups: one the table cases add (mDNS), one they do not (all-hosts).
pub const TABLE_MCAST: [u8; 6] = [0x01, 0x00, 0x5e, 0, 0, 0xfb];
pub const OTHER_MCAST: [u8; 6] = [0x01, 0x00, 0x5e, 0, 0, 0x01];

/// One frame for each way a receive filter can decide: own MAC, a table MAC, a stranger,
/// broadcast, multicast in and out of the table, IPv6 multicast, VLANs 100 and 200, the
/// address a case sets, a tagged broadcast.
pub fn filter() -> Vec<Frame> {
    stamp(vec![
        udp_to(OWN_MAC, None, 80, 0),
        udp_to(TABLE_MAC, None, 81, 1),
        udp_to(STRANGER_MAC, None, 82, 2),
        arp_request(),
        udp_to(TABLE_MCAST, None, 84, 4),
        udp_to(OTHER_MCAST, None, 85, 5),
        udp_to([0x33, 0x33, 0, 0, 0, 1], None, 86, 6),
        udp_to(OWN_MAC, Some(100), 87, 7),
        udp_to(OWN_MAC, Some(200), 88, 8),
        udp_to(NEW_MAC, None, 89, 9),
        udp_to([0xff; 6], Some(100), 90, 10),
    ])
}

/// Tagged (VLAN 100 with priority 3, VLAN 4094) and untagged frames, small and full size.
pub fn vlan() -> Vec<Frame> {
    let mut pcp = udp_to(B, Some(100), 128, 1);
    // Priority 3 in the TCI's top bits.
    pcp[14] |= 3 << 5;
    stamp(vec![
        udp4(64, 0),
        pcp,
        udp_to(B, Some(4094), 1518, 2),
        udp4(1514, 3),
        udp_to(B, Some(1), 60, 4),
    ])
}

/// Frames past the standard MTU: just over, around buffer sizes, up to a 9000-byte MTU
/// (9018 with a VLAN tag), with a small one between.
pub fn jumbo() -> Vec<Frame> {
    stamp(vec![
        udp4(64, 0),
        udp4(1519, 1),
        udp4(2048, 2),
        udp4(2049, 3),
        udp4(4000, 4),
        udp4(60, 5),
        udp4(8192, 6),
        udp4(9014, 7),
        udp_to(B, Some(42), 9018, 8),
    ])
}

/// The mixed capture's frames.
pub fn mixed() -> Vec<Frame> {
    let mut data = vec![arp_request()];
    data.extend(UDP_SIZES.iter().enumerate().map(|(i, &s)| udp4(s, i)));
    data.push(tcp4(66, 1));
    data.push(tcp4(1514, 2));
    data.push(udp6(200, 3));
    data.push(udp6(1514, 4));
    data.push(vlan_udp4(64, 100, 5));
    data.push(vlan_udp4(1518, 4094, 6));
    stamp(data)
}

/// Builds the frames of one capture.
pub type Generator = fn() -> Vec<Frame>;

/// Which cases' `in.pcap` each generator writes.
pub const GENERATED: &[(&str, Generator)] = &[
    ("basic/io-mixed", mixed),
    ("basic/macswap-mixed", mixed),
    ("basic/rxonly-mixed", mixed),
    ("basic/io-small-ring", mixed),
    ("features/mrg-small-buffers", mixed),
    ("features/mrg-off-small-buffers", mixed),
    ("features/scattered-tx-indirect", mixed),
    ("features/scattered-tx-direct", mixed),
    ("features/jumbo-mergeable", jumbo),
    ("features/jumbo-big-buffers", jumbo),
    ("features/jumbo-no-room", jumbo),
    ("features/promisc-off", filter),
    ("features/allmulti", filter),
    ("features/mac-table", filter),
    ("features/mac-table-overflow", filter),
    ("features/mac-set", filter),
    ("features/vlan-filter", filter),
    ("features/ctrl-unsupported", filter),
    ("features/ctrl-malformed", filter),
    ("features/ctrl-short", filter),
    ("features/no-ctrl-queue", filter),
    ("features/vlan-strip", vlan),
    ("features/vlan-insert", vlan),
    ("features/vlan-strip-insert", vlan),
    ("features/ring-fixed-256", mixed),
    ("features/ring-smaller", mixed),
    ("features/ring-larger", mixed),
    ("features/headroom-too-small", mixed),
    ("features/headroom-legacy-header", mixed),
    ("features/headroom-modern-header", mixed),
    ("features/link-flap", mixed),
    ("features/event-idx-off", mixed),
    ("features/feature-not-offered", mixed),
    ("features/ring-not-power-of-two", mixed),
    ("features/ring-packed-any-size", mixed),
    ("features/modern-only-device", mixed),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_span_60_to_1518() {
        let f = mixed();
        let sizes: Vec<usize> = f.iter().map(|f| f.data.len()).collect();
        assert_eq!(sizes.iter().min(), Some(&60));
        assert_eq!(sizes.iter().max(), Some(&1518));
        assert_eq!(sizes.len(), 27);
        assert_eq!(f[1].data.len(), 60);
        assert_eq!(
            &f[26].data[12..14],
            &[0x81, 0x00],
            "last frame is VLAN tagged"
        );
    }

    /// Every committed generated capture is exactly what this module builds.
    #[test]
    fn committed_captures_match_their_generators() {
        for (case, gen) in GENERATED {
            let path = crate::root().join(case).join("in.pcap");
            let cap = device_model::pcap::read(&path, usize::MAX)
                .unwrap_or_else(|e| panic!("{e} (run `cargo run -p testcases --bin gen-inputs`)"));
            assert!(
                cap.frames == gen(),
                "{} differs from its generator",
                path.display()
            );
        }
    }

    #[test]
    fn jumbo_and_vlan_inputs_are_what_they_say() {
        let j: Vec<usize> = jumbo().iter().map(|f| f.data.len()).collect();
        assert_eq!(j, vec![64, 1519, 2048, 2049, 4000, 60, 8192, 9014, 9018]);
        let v = vlan();
        assert_eq!(&v[1].data[12..16], &[0x81, 0x00, 0x60, 100]);
        assert_eq!(filter().len(), 11);
    }
}
