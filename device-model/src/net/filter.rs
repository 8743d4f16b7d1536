//! Receive filtering, as the virtio spec describes it (5.1.6.5.1, 5.1.6.5.2) and QEMU's
//! `receive_filter()` implements it: promiscuous mode, broadcast, all-multicast, the MAC
//! tables with their overflow flags, the device's own MAC, and the VLAN table.

/// Entries per MAC table beyond which the table "overflows" and matches everything of its
/// kind (QEMU's MAC_TABLE_ENTRIES).
pub const MAC_TABLE_ENTRIES: usize = 64;
const VLAN_IDS: usize = 4096;

/// The receive filter state a driver programs through the control queue.
#[derive(Clone, Debug)]
pub struct RxFilter {
    pub promisc: bool,
    pub allmulti: bool,
    pub unicast: Vec<[u8; 6]>,
    pub multicast: Vec<[u8; 6]>,
    pub unicast_overflow: bool,
    pub multicast_overflow: bool,
    vlans: Vec<bool>,
}

impl RxFilter {
    /// The state after reset. Promiscuous is on, as QEMU starts (a driver turns it off if it
    /// wants filtering). With VLAN filtering (VIRTIO_NET_F_CTRL_VLAN negotiated) no VLAN is
    /// accepted until added; without it every VLAN is.
    pub fn new(vlan_filtering: bool) -> Self {
        Self {
            promisc: true,
            allmulti: false,
            unicast: Vec::new(),
            multicast: Vec::new(),
            unicast_overflow: false,
            multicast_overflow: false,
            vlans: vec![!vlan_filtering; VLAN_IDS],
        }
    }

    pub fn set_vlan(&mut self, vid: u16, on: bool) -> bool {
        match self.vlans.get_mut(usize::from(vid)) {
            Some(v) => {
                *v = on;
                true
            }
            None => false,
        }
    }

    /// Replaces a table; more than [`MAC_TABLE_ENTRIES`] entries overflow it instead.
    pub fn set_table(&mut self, multicast: bool, macs: Vec<[u8; 6]>) {
        let overflow = macs.len() > MAC_TABLE_ENTRIES;
        let (table, flag) = if multicast {
            (&mut self.multicast, &mut self.multicast_overflow)
        } else {
            (&mut self.unicast, &mut self.unicast_overflow)
        };
        *flag = overflow;
        *table = if overflow { Vec::new() } else { macs };
    }

    /// Whether a frame for a device whose address is `own` passes.
    pub fn accepts(&self, frame: &[u8], own: [u8; 6]) -> bool {
        if self.promisc {
            return true;
        }
        if frame.len() >= 16 && frame[12..14] == [0x81, 0x00] {
            let vid = u16::from_be_bytes([frame[14], frame[15]]) & 0xfff;
            if !self.vlans[usize::from(vid)] {
                return false;
            }
        }
        let Some(dst) = frame.get(..6) else {
            return false;
        };
        if dst[0] & 1 != 0 {
            if dst == [0xff; 6] {
                return true;
            }
            self.allmulti || self.multicast_overflow || self.multicast.iter().any(|m| m == dst)
        } else {
            self.unicast_overflow || dst == own || self.unicast.iter().any(|m| m == dst)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn frame(dst: [u8; 6], vlan: Option<u16>) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 9]);
        if let Some(v) = vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(60, 0);
        f
    }

    #[test]
    fn without_promiscuous_only_what_is_asked_for_passes() {
        let mut f = RxFilter::new(true);
        f.promisc = false;
        let other = [2, 0, 0, 0, 0, 7];
        let mcast = [0x01, 0x00, 0x5e, 0, 0, 1];
        assert!(f.accepts(&frame(OWN, None), OWN));
        assert!(f.accepts(&frame([0xff; 6], None), OWN), "broadcast");
        assert!(!f.accepts(&frame(other, None), OWN));
        assert!(!f.accepts(&frame(mcast, None), OWN));
        f.set_table(false, vec![other]);
        f.set_table(true, vec![mcast]);
        assert!(f.accepts(&frame(other, None), OWN));
        assert!(f.accepts(&frame(mcast, None), OWN));
        assert!(!f.accepts(&frame([0x01, 0, 0x5e, 0, 0, 2], None), OWN));
        f.allmulti = true;
        assert!(f.accepts(&frame([0x01, 0, 0x5e, 0, 0, 2], None), OWN));
    }

    #[test]
    fn overflowing_tables_match_everything_of_their_kind() {
        let mut f = RxFilter::new(false);
        f.promisc = false;
        f.set_table(false, (0..65).map(|i| [2, 0, 0, 0, 1, i]).collect());
        assert!(f.unicast_overflow && f.unicast.is_empty());
        assert!(f.accepts(&frame([2, 9, 9, 9, 9, 9], None), OWN));
        assert!(!f.accepts(&frame([0x01, 0, 0x5e, 0, 0, 2], None), OWN));
    }

    #[test]
    fn vlan_table_applies_with_vlan_filtering_only() {
        let mut f = RxFilter::new(true);
        f.promisc = false;
        assert!(!f.accepts(&frame(OWN, Some(100)), OWN));
        assert!(
            f.accepts(&frame(OWN, None), OWN),
            "untagged frames are not VLAN filtered"
        );
        f.set_vlan(100, true);
        assert!(f.accepts(&frame(OWN, Some(100)), OWN));
        assert!(
            f.accepts(&frame(OWN, Some(0x2064)), OWN),
            "PCP bits do not matter"
        );
        assert!(!f.set_vlan(4096, true));
        let open = RxFilter::new(false);
        let mut open = open;
        open.promisc = false;
        assert!(open.accepts(&frame(OWN, Some(7)), OWN));
    }
}
