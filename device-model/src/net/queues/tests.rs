use super::*;

#[test]
fn one_pair_and_the_control_queue_after_it() {
    let l = QueueLayout::offered(1, features::CTRL_VQ);
    assert_eq!((l.pairs(), l.len(), l.ctrl()), (1, 3, Some(2)));
    assert_eq!(
        (0..4).map(|i| l.role(i)).collect::<Vec<_>>(),
        [Some(Role::Rx(0)), Some(Role::Tx(0)), Some(Role::Ctrl), None]
    );
    let l = QueueLayout::offered(1, 0);
    assert_eq!((l.len(), l.ctrl(), l.ctrl_index()), (2, None, 2));
    assert_eq!(l.role(2), None);
}

#[test]
fn the_control_queue_follows_the_pairs_in_use() {
    let offered = QueueLayout::offered(4, features::CTRL_VQ);
    assert_eq!((offered.len(), offered.ctrl()), (9, Some(8)));
    assert_eq!(offered.role(7), Some(Role::Tx(3)));
    // Without VIRTIO_NET_F_MQ the driver uses the first pair, and the control queue is 2.
    let single = QueueLayout::in_use(4, features::CTRL_VQ);
    assert_eq!((single.pairs(), single.ctrl()), (1, Some(2)));
    let multi = QueueLayout::in_use(4, features::CTRL_VQ | features::MQ);
    assert_eq!((multi.pairs(), multi.ctrl()), (4, Some(8)));
    // RSS alone makes every pair usable too (5.1.2).
    let rss = QueueLayout::in_use(4, features::CTRL_VQ | features::RSS);
    assert_eq!((rss.pairs(), rss.ctrl()), (4, Some(8)));
    assert_eq!((QueueLayout::rx(3), QueueLayout::tx(3)), (6, 7));
}

#[test]
fn pairs_are_kept_within_the_transports_queues() {
    assert_eq!(QueueLayout::offered(0, 0).pairs(), 1);
    let most = QueueLayout::offered(u16::MAX, features::CTRL_VQ);
    assert_eq!(most.pairs(), QueueLayout::MAX_PAIRS);
    assert!(most.len() <= 64);
}

#[test]
fn queues_are_named_by_role() {
    let names: Vec<String> = [
        Role::Rx(0),
        Role::Tx(0),
        Role::Rx(2),
        Role::Tx(2),
        Role::Ctrl,
    ]
    .iter()
    .map(Role::to_string)
    .collect();
    assert_eq!(names, ["rx", "tx", "rx2", "tx2", "ctrl"]);
}
