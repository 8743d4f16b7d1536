//! The device's side of the control queue (virtio 1.x, 5.1.6.5): decoding commands and
//! answering VIRTIO_NET_OK or VIRTIO_NET_ERR, as QEMU's `virtio_net_handle_ctrl` does.

use super::features;
use super::filter::RxFilter;

pub mod class {
    pub const RX: u8 = 0;
    pub const MAC: u8 = 1;
    pub const VLAN: u8 = 2;
}
mod cmd {
    pub const RX_PROMISC: u8 = 0;
    pub const RX_ALLMULTI: u8 = 1;
    pub const MAC_TABLE_SET: u8 = 0;
    pub const MAC_ADDR_SET: u8 = 1;
    pub const VLAN_ADD: u8 = 0;
    pub const VLAN_DEL: u8 = 1;
}

pub const OK: u8 = 0;
pub const ERR: u8 = 1;

/// What a command changed beyond the filter.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    /// VIRTIO_NET_CTRL_MAC_ADDR_SET: the device's MAC is now this.
    Mac([u8; 6]),
}

/// Why a command was answered VIRTIO_NET_ERR.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("class {class} command {cmd} needs {feature}, which was not negotiated")]
    NotNegotiated {
        class: u8,
        cmd: u8,
        feature: &'static str,
    },
    #[error("class {class} command {cmd} is not supported")]
    Unsupported { class: u8, cmd: u8 },
    #[error("class {class} command {cmd}: {why}")]
    BadData { class: u8, cmd: u8, why: String },
}

fn need(negotiated: u64, bit: u64, name: &'static str, class: u8, cmd: u8) -> Result<(), Refusal> {
    if negotiated & bit == 0 {
        return Err(Refusal::NotNegotiated {
            class,
            cmd,
            feature: name,
        });
    }
    Ok(())
}

/// Reads one `struct virtio_net_ctrl_mac` (le32 count, then count MACs) from the front of
/// `data`, returning the table and the rest.
fn mac_table(data: &[u8]) -> Result<(Vec<[u8; 6]>, &[u8]), String> {
    let n = data
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("the table ends before its entry count")?;
    let bytes = n.checked_mul(6).ok_or("entry count overflows")?;
    let body = data
        .get(4..4 + bytes)
        .ok_or_else(|| format!("{n} entries need {bytes} bytes, {} left", data.len() - 4))?;
    let macs = body
        .chunks_exact(6)
        .map(|c| [c[0], c[1], c[2], c[3], c[4], c[5]])
        .collect();
    Ok((macs, &data[4 + bytes..]))
}

/// Carries out one command on `filter`; `data` is everything after the class and command
/// bytes.
pub fn handle(
    filter: &mut RxFilter,
    negotiated: u64,
    class: u8,
    cmd: u8,
    data: &[u8],
) -> Result<Effect, Refusal> {
    let bad = |why: String| Refusal::BadData { class, cmd, why };
    match (class, cmd) {
        (class::RX, cmd::RX_PROMISC | cmd::RX_ALLMULTI) => {
            need(
                negotiated,
                features::CTRL_RX,
                "VIRTIO_NET_F_CTRL_RX",
                class,
                cmd,
            )?;
            let [on] = data else {
                return Err(bad(format!(
                    "{} bytes of data, the command takes 1",
                    data.len()
                )));
            };
            let on = *on != 0;
            if cmd == cmd::RX_PROMISC {
                filter.promisc = on;
            } else {
                filter.allmulti = on;
            }
            Ok(Effect::None)
        }
        (class::MAC, cmd::MAC_TABLE_SET) => {
            need(
                negotiated,
                features::CTRL_RX,
                "VIRTIO_NET_F_CTRL_RX",
                class,
                cmd,
            )?;
            let (uni, rest) = mac_table(data).map_err(|e| bad(format!("unicast table: {e}")))?;
            let (multi, rest) =
                mac_table(rest).map_err(|e| bad(format!("multicast table: {e}")))?;
            if !rest.is_empty() {
                return Err(bad(format!("{} bytes after the two tables", rest.len())));
            }
            filter.set_table(false, uni);
            filter.set_table(true, multi);
            Ok(Effect::None)
        }
        (class::MAC, cmd::MAC_ADDR_SET) => {
            need(
                negotiated,
                features::CTRL_MAC_ADDR,
                "VIRTIO_NET_F_CTRL_MAC_ADDR",
                class,
                cmd,
            )?;
            let mac: [u8; 6] = data
                .try_into()
                .map_err(|_| bad(format!("{} bytes of data, a MAC is 6", data.len())))?;
            Ok(Effect::Mac(mac))
        }
        (class::VLAN, cmd::VLAN_ADD | cmd::VLAN_DEL) => {
            need(
                negotiated,
                features::CTRL_VLAN,
                "VIRTIO_NET_F_CTRL_VLAN",
                class,
                cmd,
            )?;
            let vid: [u8; 2] = data
                .try_into()
                .map_err(|_| bad(format!("{} bytes of data, a VLAN ID is 2", data.len())))?;
            let vid = u16::from_le_bytes(vid);
            if !filter.set_vlan(vid, cmd == cmd::VLAN_ADD) {
                return Err(bad(format!("VLAN ID {vid} is not below 4096")));
            }
            Ok(Effect::None)
        }
        _ => Err(Refusal::Unsupported { class, cmd }),
    }
}

#[cfg(test)]
mod tests {
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
}
