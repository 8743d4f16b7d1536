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
    let mut b = [0xffu8; 14];
    n.read_config(0, &mut b);
    assert_eq!(b[..6], cfg.mac);
    assert_eq!(b[6..8], [1, 0], "link up");
    assert_eq!(b[8..10], [2, 0], "max_virtqueue_pairs");
    assert_eq!(u16::from_le_bytes([b[10], b[11]]), 1500, "MTU");
    assert_eq!(b[12..], [0, 0], "nothing past the end");
    let mut one = [0u8; 2];
    net(NetConfig::default()).read_config(8, &mut one);
    assert_eq!(one, [1, 0]);
}

#[test]
fn kicks_are_counted_per_queue() {
    assert_eq!(NetStats::default().kicks.len(), 3);
    assert_eq!(NetStats::new(2).kicks.len(), 5);
    let s = net(NetConfig::default()).stats();
    s.kicks[2].fetch_add(4, Ordering::Relaxed);
    assert_eq!(s.snapshot().kicks, [0, 0, 4]);
}
