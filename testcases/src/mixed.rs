//! The frames of `basic/io-mixed/in.pcap`: every size class from 60 to 1518 bytes, over UDP,
//! TCP, IPv6, ARP and a VLAN tag, built with `etherparse` so the committed capture can be
//! regenerated (and is checked to be) from this code.

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

/// The capture's frames, one millisecond apart.
pub fn frames() -> Vec<Frame> {
    let mut data = vec![arp_request()];
    data.extend(UDP_SIZES.iter().enumerate().map(|(i, &s)| udp4(s, i)));
    data.push(tcp4(66, 1));
    data.push(tcp4(1514, 2));
    data.push(udp6(200, 3));
    data.push(udp6(1514, 4));
    data.push(vlan_udp4(64, 100, 5));
    data.push(vlan_udp4(1518, 4094, 6));
    data.into_iter()
        .enumerate()
        .map(|(i, data)| Frame {
            ts: Duration::new(1_700_000_000, 0) + Duration::from_millis(i as u64),
            data,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_span_60_to_1518() {
        let f = frames();
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

    /// The committed capture is exactly what this module builds.
    #[test]
    fn committed_capture_matches_the_generator() {
        let path = crate::root().join("basic/io-mixed/in.pcap");
        let cap = device_model::pcap::read(&path, usize::MAX).expect("in.pcap reads");
        assert_eq!(cap.frames, frames());
    }
}
