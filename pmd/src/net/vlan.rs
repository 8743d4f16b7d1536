//! DPDK's software VLAN offloads for virtio (`virtio_rx_stripping`, `rte_vlan_insert`):
//! virtio-net has no VLAN offload, so the PMD moves the 802.1Q tag between the frame and
//! the mbuf itself.

use crate::mbuf::{flags, Mbuf};

/// `ol_flags` bit asking the PMD to insert `vlan_tci` on transmit (DPDK's
/// RTE_MBUF_F_TX_VLAN).
pub const TX_VLAN: u16 = 1 << 1;
const TPID: [u8; 2] = [0x81, 0x00];

/// Removes an 802.1Q tag into `vlan_tci` and flags the mbuf. Frames without one (or whose
/// first segment is too short to hold it) are left as they are.
pub fn strip(m: &mut Mbuf<'_>) {
    let d = m.data_mut();
    if d.len() < 18 || d[12..14] != TPID {
        return;
    }
    let tci = u16::from_be_bytes([d[14], d[15]]);
    // Slide the two MAC addresses over the tag, then drop the 4 bytes in front.
    d.copy_within(0..12, 4);
    m.adj(4);
    m.set_vlan_tci(tci);
    m.set_ol_flags(m.ol_flags() | flags::RX_VLAN_STRIPPED);
}

/// Inserts an 802.1Q tag carrying `vlan_tci` after the MAC addresses. `false` when the
/// first segment has no room (4 bytes of headroom and the 12 bytes of MACs).
pub fn insert(m: &mut Mbuf<'_>) -> bool {
    if m.len() < 12 || m.prepend(4).is_none() {
        return false;
    }
    let tci = m.vlan_tci().to_be_bytes();
    let d = m.data_mut();
    d.copy_within(4..16, 0);
    d[12..14].copy_from_slice(&TPID);
    d[14..16].copy_from_slice(&tci);
    m.set_ol_flags(m.ol_flags() & !TX_VLAN);
    true
}
