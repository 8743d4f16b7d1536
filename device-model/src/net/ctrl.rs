//! The device's side of the control queue (virtio 1.x, 5.1.6.5): decoding commands and
//! answering VIRTIO_NET_OK or VIRTIO_NET_ERR, as QEMU's `virtio_net_handle_ctrl` does.
//!
//! The multiqueue class (5.1.6.5.6, 5.1.6.5.7), on [`Steering`]:
//! - VQ_PAIRS_SET, le16 pairs: 1 to `max_virtqueue_pairs`, and no more than the pairs
//!   whose queues the driver set up, nor fewer than an RSS table in force names; needs
//!   VIRTIO_NET_F_MQ.
//! - RSS_CONFIG, `struct virtio_net_rss_config` ([`RssConfig::parse`](super::rss::RssConfig::parse)):
//!   steering by RSS over the `max_tx_vq` pairs it enables; needs VIRTIO_NET_F_RSS.
//! - HASH_CONFIG, `struct virtio_net_hash_config`: the hash reported, nothing steered by
//!   it; needs VIRTIO_NET_F_HASH_REPORT.
//!
//! A refused command (VIRTIO_NET_ERR) changes nothing.

use super::features;
use super::filter::RxFilter;
use super::steering::{MqError, Steering};

pub mod class {
    pub const RX: u8 = 0;
    pub const MAC: u8 = 1;
    pub const VLAN: u8 = 2;
    pub const MQ: u8 = 4;
}
pub mod cmd {
    pub const RX_PROMISC: u8 = 0;
    pub const RX_ALLMULTI: u8 = 1;
    pub const MAC_TABLE_SET: u8 = 0;
    pub const MAC_ADDR_SET: u8 = 1;
    pub const VLAN_ADD: u8 = 0;
    pub const VLAN_DEL: u8 = 1;
    pub const MQ_VQ_PAIRS_SET: u8 = 0;
    pub const MQ_RSS_CONFIG: u8 = 1;
    pub const MQ_HASH_CONFIG: u8 = 2;
}

pub const OK: u8 = 0;
pub const ERR: u8 = 1;

/// What a command changed beyond the filter.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    /// VIRTIO_NET_CTRL_MAC_ADDR_SET: the device's MAC is now this.
    Mac([u8; 6]),
    /// VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET or RSS_CONFIG: this many queue pairs are in use.
    Pairs(u16),
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
    BadData { class: u8, cmd: u8, why: BadData },
}

/// What is wrong with a command's data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadData {
    #[error("{0} bytes of data, the command takes 1")]
    NotOneByte(usize),
    #[error("unicast table: {0}")]
    Unicast(TableError),
    #[error("multicast table: {0}")]
    Multicast(TableError),
    #[error("{0} bytes after the two tables")]
    AfterTables(usize),
    #[error("{0} bytes of data, a MAC is 6")]
    MacLength(usize),
    #[error("{0} bytes of data, a VLAN ID is 2")]
    VlanIdLength(usize),
    #[error("VLAN ID {0} is not below 4096")]
    VlanId(u16),
    #[error("{0} bytes of data, a queue pair count is 2")]
    PairsLength(usize),
    #[error(transparent)]
    Mq(#[from] MqError),
}

/// What is wrong with a `struct virtio_net_ctrl_mac`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("the table ends before its entry count")]
    NoCount,
    #[error("entry count overflows")]
    CountOverflows,
    #[error("{entries} entries need {bytes} bytes, {left} left")]
    Short {
        entries: usize,
        bytes: usize,
        left: usize,
    },
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
fn mac_table(data: &[u8]) -> Result<(Vec<[u8; 6]>, &[u8]), TableError> {
    let n = data
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or(TableError::NoCount)?;
    let bytes = n.checked_mul(6).ok_or(TableError::CountOverflows)?;
    let body = data.get(4..4 + bytes).ok_or_else(|| TableError::Short {
        entries: n,
        bytes,
        left: data.len() - 4,
    })?;
    let macs = body
        .chunks_exact(6)
        .map(|c| [c[0], c[1], c[2], c[3], c[4], c[5]])
        .collect();
    Ok((macs, &data[4 + bytes..]))
}

/// Carries out one command on `filter` or `steering`; `data` is everything after the class
/// and command bytes.
pub fn handle(
    filter: &mut RxFilter,
    steering: &mut Steering,
    negotiated: u64,
    class: u8,
    cmd: u8,
    data: &[u8],
) -> Result<Effect, Refusal> {
    let bad = |why: BadData| Refusal::BadData { class, cmd, why };
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
                return Err(bad(BadData::NotOneByte(data.len())));
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
            let (uni, rest) = mac_table(data).map_err(|e| bad(BadData::Unicast(e)))?;
            let (multi, rest) = mac_table(rest).map_err(|e| bad(BadData::Multicast(e)))?;
            if !rest.is_empty() {
                return Err(bad(BadData::AfterTables(rest.len())));
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
                .map_err(|_| bad(BadData::MacLength(data.len())))?;
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
                .map_err(|_| bad(BadData::VlanIdLength(data.len())))?;
            let vid = u16::from_le_bytes(vid);
            if !filter.set_vlan(vid, cmd == cmd::VLAN_ADD) {
                return Err(bad(BadData::VlanId(vid)));
            }
            Ok(Effect::None)
        }
        (class::MQ, cmd::MQ_VQ_PAIRS_SET) => {
            need(negotiated, features::MQ, "VIRTIO_NET_F_MQ", class, cmd)?;
            let pairs: [u8; 2] = data
                .try_into()
                .map_err(|_| bad(BadData::PairsLength(data.len())))?;
            let pairs = u16::from_le_bytes(pairs);
            steering.set_pairs(pairs).map_err(|e| bad(BadData::Mq(e)))?;
            Ok(Effect::Pairs(pairs))
        }
        (class::MQ, cmd::MQ_RSS_CONFIG) => {
            need(negotiated, features::RSS, "VIRTIO_NET_F_RSS", class, cmd)?;
            let pairs = steering
                .configure_rss(data)
                .map_err(|e| bad(BadData::Mq(e)))?;
            Ok(Effect::Pairs(pairs))
        }
        (class::MQ, cmd::MQ_HASH_CONFIG) => {
            need(
                negotiated,
                features::HASH_REPORT,
                "VIRTIO_NET_F_HASH_REPORT",
                class,
                cmd,
            )?;
            steering
                .configure_hash(data)
                .map_err(|e| bad(BadData::Mq(e)))?;
            Ok(Effect::None)
        }
        _ => Err(Refusal::Unsupported { class, cmd }),
    }
}

#[cfg(test)]
mod tests;
