//! Frames for txonly mode: Ethernet/IPv4/UDP, addressed as DPDK testpmd's txonly engine does
//! (198.18.0.1:9 -> 198.18.0.2:9), each carrying its sequence number so reordering and loss
//! show in a capture.

/// Destination MAC of generated frames (testpmd's default peer address for port 0).
pub const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x00];
const SRC_IP: [u8; 4] = [198, 18, 0, 1];
const DST_IP: [u8; 4] = [198, 18, 0, 2];
const UDP_PORT: u16 = 9;

/// Writes frame number `seq` into `frame` (its length is the frame size, at least 42).
pub fn build(frame: &mut [u8], src_mac: [u8; 6], seq: u64) {
    let len = frame.len();
    debug_assert!(len >= 42);
    frame[0..6].copy_from_slice(&PEER_MAC);
    frame[6..12].copy_from_slice(&src_mac);
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());

    let ip_len = (len - 14) as u16;
    let ip = &mut frame[14..34];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
    ip[6..8].copy_from_slice(&0u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&SRC_IP);
    ip[16..20].copy_from_slice(&DST_IP);
    let csum = ipv4_checksum(ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());

    let udp_len = ip_len - 20;
    let udp = &mut frame[34..42];
    udp[0..2].copy_from_slice(&UDP_PORT.to_be_bytes());
    udp[2..4].copy_from_slice(&UDP_PORT.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    // A zero UDP checksum means "none" over IPv4.
    udp[6..8].fill(0);

    let payload = &mut frame[42..];
    let tag = seq.to_be_bytes();
    for (i, b) in payload.iter_mut().enumerate() {
        *b = if i < 8 {
            tag[i]
        } else {
            (i as u8) ^ (seq as u8)
        };
    }
}

/// The one's-complement sum of a 20-byte IPv4 header whose checksum field is zero.
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checksum_verifies_to_zero() {
        let mut f = [0u8; 64];
        build(&mut f, [2, 0, 0, 0, 0, 1], 7);
        // Summing a header including its checksum gives 0xffff, i.e. a complement of 0.
        assert_eq!(ipv4_checksum(&f[14..34]), 0);
        assert_eq!(&f[42..50], &7u64.to_be_bytes());
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 50);
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 30);
    }

    #[test]
    fn known_checksum() {
        // Wikipedia's IPv4 header checksum example.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&h), 0xb861);
    }
}
