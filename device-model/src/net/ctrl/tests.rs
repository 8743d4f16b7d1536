use super::*;

const ALL: u64 = features::CTRL_RX | features::CTRL_VLAN | features::CTRL_MAC_ADDR;

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
    assert_eq!(handle(&mut f, ALL, 0, 0, &[0]), Ok(Effect::None));
    assert!(!f.promisc);
    assert_eq!(handle(&mut f, ALL, 0, 1, &[1]), Ok(Effect::None));
    assert!(f.allmulti);
    let mut data = table(&[[2, 0, 0, 0, 0, 1]]);
    data.extend(table(&[[1, 0, 0x5e, 0, 0, 1], [1, 0, 0x5e, 0, 0, 2]]));
    assert_eq!(handle(&mut f, ALL, 1, 0, &data), Ok(Effect::None));
    assert_eq!((f.unicast.len(), f.multicast.len()), (1, 2));
    assert_eq!(
        handle(&mut f, ALL, 1, 1, &[2, 0, 0, 0, 0, 9]),
        Ok(Effect::Mac([2, 0, 0, 0, 0, 9]))
    );
    assert_eq!(
        handle(&mut f, ALL, 2, 0, &100u16.to_le_bytes()),
        Ok(Effect::None)
    );
}

#[test]
fn malformed_and_unsupported_commands_are_refused() {
    let mut f = RxFilter::new(true);
    assert!(matches!(
        handle(&mut f, ALL, 0, 0, &[]),
        Err(Refusal::BadData { .. })
    ));
    assert!(matches!(
        handle(&mut f, ALL, 0, 0, &[1, 1]),
        Err(Refusal::BadData { .. })
    ));
    // A table claiming more entries than it carries.
    let mut data = 3u32.to_le_bytes().to_vec();
    data.extend_from_slice(&[0; 12]);
    assert!(matches!(
        handle(&mut f, ALL, 1, 0, &data),
        Err(Refusal::BadData { .. })
    ));
    // A count that overflows.
    let data = u32::MAX.to_le_bytes();
    assert!(matches!(
        handle(&mut f, ALL, 1, 0, &data),
        Err(Refusal::BadData { .. })
    ));
    assert!(matches!(
        handle(&mut f, ALL, 2, 0, &5000u16.to_le_bytes()),
        Err(Refusal::BadData { .. })
    ));
    assert_eq!(
        handle(&mut f, ALL, 3, 0, &[]),
        Err(Refusal::Unsupported { class: 3, cmd: 0 })
    );
    assert_eq!(
        handle(&mut f, ALL, 0, 9, &[1]),
        Err(Refusal::Unsupported { class: 0, cmd: 9 })
    );
    assert!(matches!(
        handle(&mut f, 0, 0, 0, &[1]),
        Err(Refusal::NotNegotiated { .. })
    ));
    assert!(f.promisc, "nothing refused changed the filter");
}
