//! Automatic steering: the fixed function before a flow is transmitted, the flow memory
//! after, and its bounds.

use super::*;
use crate::net::rss::toeplitz;

/// An Ethernet frame around an IPv4 header (protocol `proto`) and 8 bytes of transport
/// header.
fn v4(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = vec![0x02; 12];
    f.extend([0x08, 0x00, 0x45, 0, 0, 28, 0, 0, 0, 0, 64, proto, 0, 0]);
    f.extend(src);
    f.extend(dst);
    f.extend(sport.to_be_bytes());
    f.extend(dport.to_be_bytes());
    f.extend([0; 4]);
    f
}

/// Microsoft's verification vectors (source, destination, TCP hash under the default key).
type Vector = ([u8; 4], u16, [u8; 4], u16, u32);
const VECTORS: [Vector; 5] = [
    (
        [66, 9, 149, 187],
        2794,
        [161, 142, 100, 80],
        1766,
        0x51ccc178,
    ),
    (
        [199, 92, 111, 2],
        14230,
        [65, 69, 140, 83],
        4739,
        0xc626b0ea,
    ),
    (
        [24, 19, 198, 95],
        12898,
        [12, 22, 207, 184],
        38024,
        0x5c2b394a,
    ),
    (
        [38, 27, 205, 30],
        48228,
        [209, 142, 163, 6],
        2217,
        0xafc7327f,
    ),
    (
        [153, 39, 163, 191],
        44251,
        [202, 188, 127, 2],
        1303,
        0x10e828a2,
    ),
];

fn pairs(n: u16) -> Steering {
    let mut s = Steering::new(8);
    s.set_ready(n);
    s.set_pairs(n).unwrap();
    s
}

#[test]
fn before_any_transmit_a_flow_goes_to_its_tuples_hash_modulo_the_pairs() {
    for n in [2, 3, 4, 8] {
        let s = pairs(n);
        for (src, sport, dst, dport, hash) in VECTORS {
            let tcp = v4(src, dst, 6, sport, dport);
            assert_eq!(s.pick(&tcp).pair, (hash % u32::from(n)) as u16);
            // The same tuple over UDP: the same function.
            assert_eq!(
                s.pick(&v4(src, dst, 17, sport, dport)).pair,
                s.pick(&tcp).pair
            );
            // No report without a configured hash.
            assert_eq!((s.pick(&tcp).hash, s.pick(&tcp).report), (0, Report::None));
        }
    }
    // Another protocol: the addresses alone.
    let s = pairs(4);
    let (src, _, dst, _, _) = VECTORS[0];
    let want = toeplitz(&DEFAULT_KEY, &[src, dst].concat()) % 4;
    assert_eq!(s.pick(&v4(src, dst, 1, 0, 0)).pair, want as u16);
    // Not IP: pair 0.
    assert_eq!(s.pick(&[0xff; 60]).pair, 0);
    assert_eq!(s.pick(&[]).pair, 0);
}

#[test]
fn the_same_input_always_steers_the_same_way() {
    let frames: Vec<Vec<u8>> = (0..64u16)
        .map(|i| {
            v4(
                [10, 0, (i * 7) as u8, i as u8],
                [10, 0, 1, 1],
                17,
                1024 + 37 * i,
                53,
            )
        })
        .collect();
    let run = || {
        let s = pairs(4);
        frames.iter().map(|f| s.pick(f).pair).collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first, run());
    // The function spreads: every pair gets some of 64 flows.
    for pair in 0..4 {
        assert!(first.contains(&pair), "{first:?}");
    }
}

#[test]
fn a_flow_follows_the_pair_the_driver_last_transmitted_it_on() {
    let mut s = pairs(4);
    let (src, sport, dst, dport, hash) = VECTORS[1];
    let incoming = v4(src, dst, 6, sport, dport);
    let by_hash = (hash % 4) as u16;
    assert_eq!(s.pick(&incoming).pair, by_hash);
    // The driver answers on another pair: the flow moves there, both directions.
    let other = (by_hash + 1) % 4;
    let reply = v4(dst, src, 6, dport, sport);
    s.transmitted(&reply, other);
    assert_eq!(s.pick(&incoming).pair, other);
    assert_eq!(s.pick(&reply).pair, other);
    // The last transmit wins.
    s.transmitted(&incoming, 3);
    assert_eq!(s.pick(&incoming).pair, 3);
    // Other flows are not moved: same addresses, another port.
    let neighbour = v4(src, dst, 6, sport + 1, dport);
    let h = toeplitz(
        &DEFAULT_KEY,
        &[
            &src[..],
            &dst,
            &(sport + 1).to_be_bytes(),
            &dport.to_be_bytes(),
        ]
        .concat(),
    );
    assert_eq!(s.pick(&neighbour).pair, (h % 4) as u16);
    // A pair no longer enabled is not used: back to the fixed function.
    s.set_pairs(2).unwrap();
    assert_eq!(s.pick(&incoming).pair, (hash % 2) as u16);
    s.set_pairs(4).unwrap();
    assert_eq!(s.pick(&incoming).pair, 3, "remembered while disabled");
}

#[test]
fn the_flow_memory_is_bounded_and_forgets_the_oldest_first() {
    let mut s = pairs(2);
    let flow = |i: usize| {
        v4(
            [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
            [10, 9, 9, 9],
            17,
            7,
            7,
        )
    };
    let by_hash = |s: &Steering, i: usize| {
        let h = rss::hash(AUTO_TYPES, &DEFAULT_KEY, &flow(i)).unwrap().0;
        let _ = s;
        (h % 2) as u16
    };
    for i in 0..=FLOW_MEMORY {
        s.transmitted(&flow(i), 1 - by_hash(&s, i));
    }
    assert_eq!(s.flows.pair.len(), FLOW_MEMORY);
    assert_eq!(s.flows.order.len(), FLOW_MEMORY);
    // The first flow was forgotten, the second is remembered.
    assert_eq!(s.pick(&flow(0)).pair, by_hash(&s, 0));
    assert_eq!(s.pick(&flow(1)).pair, 1 - by_hash(&s, 1));
}

#[test]
fn with_one_pair_or_under_rss_nothing_is_learned() {
    let mut one = Steering::new(4);
    let f = v4([1, 2, 3, 4], [5, 6, 7, 8], 6, 1, 2);
    one.transmitted(&f, 0);
    assert!(one.flows.pair.is_empty());
    assert!(one.is_trivial());
    let mut served = Steering::new(1);
    served.serve(3);
    assert_eq!(served.enabled(), 3);
    served.transmitted(&f, 2);
    assert_eq!(served.pick(&f).pair, 2);
}
