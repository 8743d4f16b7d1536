use super::*;

fn net(cfg: NetConfig) -> Net {
    Net::new(cfg, Box::new(NullSource), Box::<NullSink>::default())
}

#[test]
fn the_transport_gets_each_pairs_queues_and_the_control_queue() {
    assert_eq!(net(NetConfig::default()).queue_max_sizes(), [256; 3]);
    let no_ctrl = NetConfig {
        features: features::DEFAULT & !features::CTRL_VQ & !features::NEEDS_CTRL_VQ,
        ..NetConfig::default()
    };
    assert_eq!(net(no_ctrl).queue_max_sizes(), [256; 2]);
    let two = NetConfig {
        max_queue_pairs: 2,
        queue_size: 64,
        ..NetConfig::default()
    };
    assert_eq!(net(two).queue_max_sizes(), [64; 5]);
}

#[test]
fn the_configuration_space_shows_mac_link_pairs_and_mtu() {
    let cfg = NetConfig {
        max_queue_pairs: 2,
        ..NetConfig::default()
    };
    let n = net(cfg.clone());
    let mut b = [0xffu8; 26];
    n.read_config(0, &mut b);
    assert_eq!(b[..6], cfg.mac);
    assert_eq!(b[6..8], [1, 0], "link up");
    assert_eq!(b[8..10], [2, 0], "max_virtqueue_pairs");
    assert_eq!(u16::from_le_bytes([b[10], b[11]]), 1500, "MTU");
    assert_eq!(b[12..17], [0xff; 5], "speed and duplex unknown");
    assert_eq!(b[17], 40, "rss_max_key_size");
    assert_eq!(b[18..20], [128, 0], "rss_max_indirection_table_length");
    assert_eq!(b[20..24], [0xff, 0x01, 0, 0], "supported_hash_types");
    assert_eq!(b[24..], [0, 0], "nothing past the end");
    // A field read alone, and across the end.
    let mut types = [0u8; 4];
    n.read_config(20, &mut types);
    assert_eq!(u32::from_le_bytes(types), rss::hash_type::ALL);
    let mut across = [0xffu8; 4];
    n.read_config(22, &mut across);
    assert_eq!(across, [0, 0, 0, 0]);
    // One pair: no RSS nor hash report, the space ends after the MTU.
    let mut one = [0xffu8; 14];
    net(NetConfig::default()).read_config(0, &mut one);
    assert_eq!(one[8..10], [1, 0]);
    assert_eq!(one[12..], [0, 0], "nothing past the end");
    // Without RSS and hash reports (withheld), the same.
    let plain = NetConfig {
        features: features::DEFAULT & !features::RSS & !features::HASH_REPORT,
        ..cfg
    };
    let mut b = [0xffu8; 24];
    net(plain).read_config(0, &mut b);
    assert_eq!(b[8..10], [2, 0]);
    assert_eq!(b[12..], [0; 12]);
}

#[test]
fn multiqueue_rss_and_hash_reports_are_offered_with_several_pairs() {
    let family = features::MQ | features::RSS | features::HASH_REPORT;
    assert_eq!(net(NetConfig::default()).features() & family, 0);
    let cfg = NetConfig {
        max_queue_pairs: 4,
        ..NetConfig::default()
    };
    assert_eq!(net(cfg.clone()).features() & family, family);
    // Withheld by name, as `--withhold` does.
    for (name, left) in [
        ("mq", 0),
        ("rss", features::MQ | features::HASH_REPORT),
        ("hash_report", features::MQ | features::RSS),
    ] {
        let bit = features::by_name(name).unwrap();
        let c = NetConfig {
            features: features::DEFAULT & !bit,
            ..cfg.clone()
        };
        assert_eq!(net(c).features() & family, left, "{name} withheld");
    }
    // They need the control queue.
    let no_ctrl = NetConfig {
        features: features::DEFAULT & !features::CTRL_VQ,
        ..cfg.clone()
    };
    assert_eq!(net(no_ctrl).features() & family, 0);
    let n = net(cfg);
    assert!(!n.features_consistent(features::MQ));
    assert!(n.features_consistent(features::MQ | features::CTRL_VQ));
    assert_eq!(
        hdr_len(features::HASH_REPORT | virtio::features::VERSION_1),
        20
    );
    assert_eq!(hdr_len(features::MQ | virtio::features::VERSION_1), 12);
}

#[test]
fn kicks_are_counted_per_queue() {
    assert_eq!(NetStats::default().kicks.len(), 3);
    assert_eq!(NetStats::new(2).kicks.len(), 5);
    let two = NetStats::new(2).snapshot();
    assert_eq!(two.rx_delivered_per_queue, [0, 0]);
    assert_eq!(two.tx_frames_per_queue, [0, 0]);
    let s = net(NetConfig::default()).stats();
    s.kicks[2].fetch_add(4, Ordering::Relaxed);
    assert_eq!(s.snapshot().kicks, [0, 0, 4]);
}
