//! One readable line per frame: what snapshots store and `vlab pcap show` prints.
//!
//! `#0003 len=98 52:54:00:12:34:56 > 02:00:00:00:00:00 vlan=100 IPv4 198.18.0.1 > 198.18.0.2 UDP 9 > 9 crc=5f1d3a2b`
//!
//! The CRC-32 covers the whole frame, so two lines are equal only when the frames are.

use std::fmt::Write as _;

use etherparse::{LaxLinkExtSlice, LaxNetSlice, LaxSlicedPacket, LinkSlice, TransportSlice};

/// `aa:bb:cc:dd:ee:ff` (any number of bytes).
pub(crate) fn mac(m: &[u8]) -> String {
    m.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Decodes frame number `index`.
pub fn frame_line(index: usize, frame: &[u8]) -> String {
    let mut s = format!("#{index:04} len={}", frame.len());
    let crc = crc32fast::hash(frame);
    let Ok(p) = LaxSlicedPacket::from_ethernet(frame) else {
        let _ = write!(s, " (shorter than an Ethernet header) crc={crc:08x}");
        return s;
    };
    if let Some(LinkSlice::Ethernet2(eth)) = &p.link {
        let _ = write!(s, " {} > {}", mac(&eth.source()), mac(&eth.destination()));
    }
    for ext in &p.link_exts {
        match ext {
            LaxLinkExtSlice::Vlan(v) => {
                let _ = write!(
                    s,
                    " vlan={} pcp={}",
                    v.vlan_identifier().value(),
                    v.priority_code_point().value()
                );
            }
            LaxLinkExtSlice::Macsec(_) => s.push_str(" macsec"),
        }
    }
    match &p.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let _ = write!(s, " IPv4 {} > {}", h.source_addr(), h.destination_addr());
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let _ = write!(s, " IPv6 {} > {}", h.source_addr(), h.destination_addr());
        }
        Some(LaxNetSlice::Arp(_)) => s.push_str(" ARP"),
        None => {
            let ty = match p.link_exts.last() {
                Some(LaxLinkExtSlice::Vlan(v)) => Some(v.ether_type()),
                _ => match &p.link {
                    Some(LinkSlice::Ethernet2(eth)) => Some(eth.ether_type()),
                    _ => None,
                },
            };
            if let Some(ty) = ty {
                let _ = write!(s, " type=0x{:04x}", ty.0);
            }
        }
    }
    match &p.transport {
        Some(TransportSlice::Udp(u)) => {
            let _ = write!(s, " UDP {} > {}", u.source_port(), u.destination_port());
        }
        Some(TransportSlice::Tcp(t)) => {
            let _ = write!(s, " TCP {} > {}", t.source_port(), t.destination_port());
        }
        Some(TransportSlice::Icmpv4(_)) => s.push_str(" ICMP"),
        Some(TransportSlice::Icmpv6(_)) => s.push_str(" ICMPv6"),
        Some(TransportSlice::Igmp(_)) => s.push_str(" IGMP"),
        None => {}
    }
    let _ = write!(s, " crc={crc:08x}");
    s
}

/// Decodes every frame, one line each, newline-terminated.
pub fn frames<'a>(frames: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut out = String::new();
    for (i, f) in frames.into_iter().enumerate() {
        out.push_str(&frame_line(i, f));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_frame() {
        let mut f = vec![0u8; 60];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 0]);
        f[6..12].copy_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&46u16.to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[198, 18, 0, 1]);
        f[30..34].copy_from_slice(&[198, 18, 0, 2]);
        f[34..36].copy_from_slice(&9u16.to_be_bytes());
        f[36..38].copy_from_slice(&9u16.to_be_bytes());
        f[38..40].copy_from_slice(&26u16.to_be_bytes());
        let line = frame_line(3, &f);
        assert_eq!(
            line,
            format!(
                "#0003 len=60 52:54:00:12:34:56 > 02:00:00:00:00:00 IPv4 198.18.0.1 > 198.18.0.2 UDP 9 > 9 crc={:08x}",
                crc32fast::hash(&f)
            )
        );
    }

    #[test]
    fn runt_and_unknown_ethertype() {
        assert!(
            frame_line(0, &[1, 2, 3]).starts_with("#0000 len=3 (shorter than an Ethernet header)")
        );
        let mut f = vec![0u8; 20];
        f[12..14].copy_from_slice(&[0x88, 0xb5]);
        assert!(frame_line(1, &f).contains(" type=0x88b5 "));
    }
}
