use super::*;

use crate::net::rss::{hash_type, Report};
use crate::net::steering::{MqError, Pick, DEFAULT_KEY};

const ALL: u64 = features::CTRL_RX | features::CTRL_VLAN | features::CTRL_MAC_ADDR;
const MQ_ALL: u64 = features::MQ | features::RSS | features::HASH_REPORT;

/// A command of the filter classes (the steering it cannot touch).
fn rx_cmd(
    f: &mut RxFilter,
    negotiated: u64,
    class: u8,
    cmd: u8,
    data: &[u8],
) -> Result<Effect, Refusal> {
    handle(f, &mut Steering::new(1), negotiated, class, cmd, data)
}

/// A device of 4 pairs whose driver set up `ready` of them.
fn steering(ready: u16) -> Steering {
    let mut s = Steering::new(4);
    s.set_ready(ready);
    s
}

fn mq(s: &mut Steering, negotiated: u64, cmd: u8, data: &[u8]) -> Result<Effect, Refusal> {
    handle(
        &mut RxFilter::new(false),
        s,
        negotiated,
        class::MQ,
        cmd,
        data,
    )
}

fn rss_config(types: u32, table: &[u16], unclassified: u16, max_tx_vq: u16, key: &[u8]) -> Vec<u8> {
    let mut b = types.to_le_bytes().to_vec();
    b.extend((table.len() as u16 - 1).to_le_bytes());
    b.extend(unclassified.to_le_bytes());
    table.iter().for_each(|q| b.extend(q.to_le_bytes()));
    b.extend(max_tx_vq.to_le_bytes());
    b.push(key.len() as u8);
    b.extend(key);
    b
}

fn hash_config(types: u32, key: &[u8]) -> Vec<u8> {
    let mut b = types.to_le_bytes().to_vec();
    b.extend([0; 8]);
    b.push(key.len() as u8);
    b.extend(key);
    b
}

/// An IPv4 TCP frame of Microsoft's first verification vector: 66.9.149.187:2794 ->
/// 161.142.100.80:1766 (IPv4 hash 0x323e8fc2, with the ports 0x51ccc178).
fn vector_frame() -> Vec<u8> {
    let mut f = vec![0x02; 12];
    f.extend([0x08, 0x00, 0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0]);
    f.extend([66, 9, 149, 187, 161, 142, 100, 80]);
    f.extend(2794u16.to_be_bytes());
    f.extend(1766u16.to_be_bytes());
    f.extend([0; 16]);
    f
}

fn table(macs: &[[u8; 6]]) -> Vec<u8> {
    let mut v = (macs.len() as u32).to_le_bytes().to_vec();
    for m in macs {
        v.extend_from_slice(m);
    }
    v
}

#[test]
fn commands_change_the_filter() {
    let mut f = RxFilter::new(true);
    assert_eq!(rx_cmd(&mut f, ALL, 0, 0, &[0]), Ok(Effect::None));
    assert!(!f.promisc);
    assert_eq!(rx_cmd(&mut f, ALL, 0, 1, &[1]), Ok(Effect::None));
    assert!(f.allmulti);
    let mut data = table(&[[2, 0, 0, 0, 0, 1]]);
    data.extend(table(&[[1, 0, 0x5e, 0, 0, 1], [1, 0, 0x5e, 0, 0, 2]]));
    assert_eq!(rx_cmd(&mut f, ALL, 1, 0, &data), Ok(Effect::None));
    assert_eq!((f.unicast.len(), f.multicast.len()), (1, 2));
    assert_eq!(
        rx_cmd(&mut f, ALL, 1, 1, &[2, 0, 0, 0, 0, 9]),
        Ok(Effect::Mac([2, 0, 0, 0, 0, 9]))
    );
    assert_eq!(
        rx_cmd(&mut f, ALL, 2, 0, &100u16.to_le_bytes()),
        Ok(Effect::None)
    );
}

#[test]
fn malformed_and_unsupported_commands_are_refused() {
    let mut f = RxFilter::new(true);
    assert!(matches!(
        rx_cmd(&mut f, ALL, 0, 0, &[]),
        Err(Refusal::BadData { .. })
    ));
    assert!(matches!(
        rx_cmd(&mut f, ALL, 0, 0, &[1, 1]),
        Err(Refusal::BadData { .. })
    ));
    // A table claiming more entries than it carries.
    let mut data = 3u32.to_le_bytes().to_vec();
    data.extend_from_slice(&[0; 12]);
    assert!(matches!(
        rx_cmd(&mut f, ALL, 1, 0, &data),
        Err(Refusal::BadData { .. })
    ));
    // A count that overflows.
    let data = u32::MAX.to_le_bytes();
    assert!(matches!(
        rx_cmd(&mut f, ALL, 1, 0, &data),
        Err(Refusal::BadData { .. })
    ));
    assert!(matches!(
        rx_cmd(&mut f, ALL, 2, 0, &5000u16.to_le_bytes()),
        Err(Refusal::BadData { .. })
    ));
    assert_eq!(
        rx_cmd(&mut f, ALL, 3, 0, &[]),
        Err(Refusal::Unsupported { class: 3, cmd: 0 })
    );
    assert_eq!(
        rx_cmd(&mut f, ALL, 0, 9, &[1]),
        Err(Refusal::Unsupported { class: 0, cmd: 9 })
    );
    assert!(matches!(
        rx_cmd(&mut f, 0, 0, 0, &[1]),
        Err(Refusal::NotNegotiated { .. })
    ));
    assert!(f.promisc, "nothing refused changed the filter");
}

#[test]
fn vq_pairs_set_enables_pairs_within_the_device_and_the_driver_set_up() {
    let mut s = steering(3);
    assert_eq!(s.enabled(), 1, "one pair until the driver asks");
    assert_eq!(
        mq(&mut s, MQ_ALL, 0, &3u16.to_le_bytes()),
        Ok(Effect::Pairs(3))
    );
    assert_eq!(s.enabled(), 3);
    assert_eq!(
        mq(&mut s, MQ_ALL, 0, &1u16.to_le_bytes()),
        Ok(Effect::Pairs(1))
    );
    assert_eq!(s.enabled(), 1);
    let refused = |s: &mut Steering, data: &[u8]| match mq(s, MQ_ALL, 0, data) {
        Err(Refusal::BadData {
            class: 4,
            cmd: 0,
            why,
        }) => why,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        refused(&mut s, &0u16.to_le_bytes()),
        BadData::Mq(MqError::Pairs { pairs: 0, max: 4 })
    );
    assert_eq!(
        refused(&mut s, &5u16.to_le_bytes()),
        BadData::Mq(MqError::Pairs { pairs: 5, max: 4 })
    );
    assert_eq!(
        refused(&mut s, &4u16.to_le_bytes()),
        BadData::Mq(MqError::NotSetUp { pairs: 4, ready: 3 })
    );
    assert_eq!(refused(&mut s, &[2]), BadData::PairsLength(1), "truncated");
    assert_eq!(refused(&mut s, &[2, 0, 0]), BadData::PairsLength(3));
    assert_eq!(s.enabled(), 1, "nothing refused changed the pairs");
    assert!(matches!(
        mq(&mut s, features::RSS, 0, &2u16.to_le_bytes()),
        Err(Refusal::NotNegotiated { .. })
    ));
    assert_eq!(
        mq(&mut s, MQ_ALL, 3, &[]),
        Err(Refusal::Unsupported { class: 4, cmd: 3 })
    );
    assert_eq!(s.enabled(), 1);
}

#[test]
fn rss_config_enables_max_tx_vq_pairs_and_steers_by_the_table() {
    let mut s = steering(4);
    let table: Vec<u16> = (0..128).map(|i| i % 4).collect();
    let data = rss_config(hash_type::TCPV4, &table, 1, 4, &DEFAULT_KEY);
    assert_eq!(mq(&mut s, MQ_ALL, 1, &data), Ok(Effect::Pairs(4)));
    assert_eq!(s.enabled(), 4);
    // 0x51ccc178: slot 0x78 of the table, queue 0x78 % 4 = 0.
    let pick = s.pick(&vector_frame());
    assert_eq!(
        pick,
        Pick {
            pair: 0,
            hash: 0x51cc_c178,
            report: Report::Tcpv4
        }
    );
    // A table of one queue sends everything there.
    let data = rss_config(hash_type::TCPV4, &[2], 3, 4, &DEFAULT_KEY);
    assert_eq!(mq(&mut s, MQ_ALL, 1, &data), Ok(Effect::Pairs(4)));
    assert_eq!(s.pick(&vector_frame()).pair, 2);
    // Not covered by the hash types: the unclassified queue, no hash.
    let data = rss_config(hash_type::UDPV4, &[2], 3, 4, &DEFAULT_KEY);
    mq(&mut s, MQ_ALL, 1, &data).unwrap();
    assert_eq!(
        s.pick(&vector_frame()),
        Pick {
            pair: 3,
            hash: 0,
            report: Report::None
        }
    );
    // With RSS in force, VQ_PAIRS_SET may not strand a queue the table names.
    assert!(matches!(
        mq(&mut s, MQ_ALL, 0, &3u16.to_le_bytes()),
        Err(Refusal::BadData {
            why: BadData::Mq(MqError::RssQueue { pairs: 3, queue: 3 }),
            ..
        })
    ));
    assert_eq!(s.enabled(), 4);
}

#[test]
fn hostile_rss_configs_are_refused_and_change_nothing() {
    let mut s = steering(2);
    let good = rss_config(hash_type::TCPV4, &[0, 1], 0, 2, &DEFAULT_KEY);
    mq(&mut s, MQ_ALL, 1, &good).unwrap();
    let before = s.rss().cloned();
    let bad = [
        // A table not a power of two.
        rss_config(hash_type::TCPV4, &[0, 1, 0], 0, 2, &DEFAULT_KEY),
        // A table entry, or the unclassified queue, beyond the pairs enabled.
        rss_config(hash_type::TCPV4, &[0, 2], 0, 2, &DEFAULT_KEY),
        rss_config(hash_type::TCPV4, &[0, 1], 1, 1, &DEFAULT_KEY),
        rss_config(hash_type::TCPV4, &[0, 1], 2, 2, &DEFAULT_KEY),
        // More pairs than the driver set up, or none.
        rss_config(hash_type::TCPV4, &[0, 1], 0, 3, &DEFAULT_KEY),
        rss_config(hash_type::TCPV4, &[0], 0, 0, &DEFAULT_KEY),
        // A key longer than rss_max_key_size, hash types not offered.
        rss_config(hash_type::TCPV4, &[0, 1], 0, 2, &[1; 41]),
        rss_config(1 << 9, &[0, 1], 0, 2, &DEFAULT_KEY),
        // Truncated, and too long.
        good[..good.len() - 1].to_vec(),
        good[..3].to_vec(),
        [good.as_slice(), &[0]].concat(),
    ];
    for data in &bad {
        match mq(&mut s, MQ_ALL, 1, data) {
            Err(Refusal::BadData {
                class: 4,
                cmd: 1,
                why: BadData::Mq(MqError::Rss(_)),
            }) => {}
            other => panic!("{other:?} for {data:02x?}"),
        }
        assert_eq!(s.rss().cloned(), before, "nothing changed");
        assert_eq!(s.enabled(), 2);
    }
    assert!(matches!(
        mq(&mut s, features::MQ | features::HASH_REPORT, 1, &good),
        Err(Refusal::NotNegotiated { .. })
    ));
}

#[test]
fn hash_config_reports_the_hash_and_steers_nothing() {
    let mut s = steering(2);
    mq(&mut s, MQ_ALL, 0, &2u16.to_le_bytes()).unwrap();
    let data = hash_config(hash_type::IPV4, &DEFAULT_KEY);
    assert_eq!(mq(&mut s, MQ_ALL, 2, &data), Ok(Effect::None));
    let pick = s.pick(&vector_frame());
    assert_eq!((pick.hash, pick.report), (0x323e_8fc2, Report::Ipv4));
    // The pair is automatic steering's: the 5-tuple's hash, modulo the pairs.
    assert_eq!(pick.pair, (0x51cc_c178u32 % 2) as u16);
    for bad in [
        hash_config(1 << 10, &DEFAULT_KEY),
        hash_config(hash_type::IPV4, &[0; 41]),
        hash_config(hash_type::IPV4, &[]),
        data[..12].to_vec(),
    ] {
        assert!(matches!(
            mq(&mut s, MQ_ALL, 2, &bad),
            Err(Refusal::BadData {
                why: BadData::Mq(MqError::Hash(_)),
                ..
            })
        ));
        assert_eq!(s.pick(&vector_frame()), pick, "nothing changed");
    }
    assert!(matches!(
        mq(&mut s, features::MQ | features::RSS, 2, &data),
        Err(Refusal::NotNegotiated { .. })
    ));
}
