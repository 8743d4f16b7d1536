//! Four queue pairs with RSS, end to end on the in-process machine: seeded random frames
//! (UDP and TCP over IPv4 and IPv6, ARP, raw, some VLAN-tagged) all come back, each exactly
//! once; every frame the guest saw carries the hash the published-vector-checked Toeplitz
//! implementation gives for it under the driver's key and types, and arrived on the queue
//! the driver's default table names for that hash (entry `hash % 128` holds `entry % 4`).
//! Frames no hash type covers (ARP, raw) arrive without a hash, on the unclassified queue 0.

use std::time::Duration;

use device_model::net::rss::{self, hash_type};
use device_model::pcap::Frame;
use vmm::suites::random_frames::{generate, Mix};

mod common;

use common::{both, vlab};

/// DPDK's default RSS key, which the PMD sends (the Microsoft verification key).
const KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

#[test]
fn rss_steers_every_frame_to_the_queue_its_hash_names() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pcap");
    let out = dir.path().join("out.pcap");
    let frames: Vec<Frame> = generate(&Mix {
        seed: 61,
        frames: 300,
        vlan: 0.1,
        ..Mix::default()
    })
    .into_iter()
    .enumerate()
    .map(|(i, data)| Frame {
        ts: Duration::from_micros(i as u64 * 10),
        data,
    })
    .collect();
    vmm::suites::pcap_spec::write(&frames, &input).unwrap();
    let o = vlab(&[
        "run",
        "--machine",
        "inprocess",
        "--mode",
        "io",
        "--queues",
        "4",
        "--rxq",
        "4",
        "--txq",
        "4",
        "--verbose",
        "true",
        "--pcap-in",
        input.to_str().unwrap(),
        "--pcap-out",
        out.to_str().unwrap(),
    ]);
    let text = both(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    // Every frame back, exactly once (grouped by queue, so in another order).
    let mut sent: Vec<Vec<u8>> = frames.iter().map(|f| f.data.clone()).collect();
    let mut got: Vec<Vec<u8>> = device_model::pcap::read(&out, usize::MAX)
        .unwrap()
        .frames
        .into_iter()
        .map(|f| f.data)
        .collect();
    sent.sort();
    got.sort();
    assert_eq!(got, sent, "{text}");
    // What the guest printed per frame, against what the hash says.
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("port 0/queue "))
        .collect();
    assert_eq!(lines.len(), frames.len(), "{text}");
    let mut hashed = 0;
    for line in lines {
        let queue: u16 = field(line, "port 0/queue ", ":").parse().unwrap();
        let src = field(line, "src=", " ");
        let len: usize = field(line, "length=", " ").parse().unwrap();
        // The frames this line may be about: the same source MAC and length (random MACs
        // make that one frame, nearly always); one of them must match what it shows.
        let candidates: Vec<&Frame> = frames
            .iter()
            .filter(|f| f.data.len() == len && mac(&f.data[6..12]) == src.to_lowercase())
            .collect();
        assert!(!candidates.is_empty(), "no input frame for {line}");
        let shown = line.contains("RSS hash=").then(|| {
            (
                u32::from_str_radix(field(line, "RSS hash=0x", " "), 16).unwrap(),
                field(line, "hash type=", " ").parse::<u16>().unwrap(),
            )
        });
        let fits = |f: &&Frame| match rss::hash(hash_type::ALL, &KEY, &f.data) {
            Some((hash, report)) => {
                shown == Some((hash, report as u16)) && u32::from(queue) == (hash & 127) % 4
            }
            None => shown.is_none() && queue == 0,
        };
        assert!(
            candidates.iter().any(fits),
            "{line}: expected {:?}",
            candidates
                .iter()
                .map(|f| rss::hash(hash_type::ALL, &KEY, &f.data))
                .collect::<Vec<_>>()
        );
        hashed += usize::from(shown.is_some());
    }
    // The mix is mostly UDP and TCP: most frames were hashed, over all four queues.
    assert!(hashed > 250, "{hashed} of 300 hashed");
    for q in 0..4 {
        assert!(
            text.contains(&format!("port 0/queue {q}:")),
            "queue {q} unused"
        );
    }
}

/// The text between `start` and the next `end` (or the line's end).
fn field<'a>(line: &'a str, start: &str, end: &str) -> &'a str {
    let rest = &line[line
        .find(start)
        .unwrap_or_else(|| panic!("{start} in {line}"))
        + start.len()..];
    rest.split(end).next().unwrap_or(rest).trim()
}

fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
