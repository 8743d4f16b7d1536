//! Generated frames (testpmd's txonly mode, and the hostile driver's traffic):
//! Ethernet/IPv4/UDP, addressed as DPDK testpmd's txonly engine does
//! (198.18.0.1:9 -> 198.18.0.2:9). Each carries its sequence number (the first 8 payload
//! bytes, and the IPv4 identification) so reordering and loss show in a capture.
//!
//! As in testpmd, a frame is a copy of a template built once; per frame only the sequence
//! number and the IPv4 checksum change.

use alloc::vec::Vec;

/// Destination MAC of generated frames (testpmd's default peer address for port 0).
pub const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x00];
const SRC_IP: [u8; 4] = [198, 18, 0, 1];
const DST_IP: [u8; 4] = [198, 18, 0, 2];
const UDP_PORT: u16 = 9;
const IP: usize = 14;
const PAYLOAD: usize = 42;

/// A txonly frame of one size.
pub struct Template {
    frame: Vec<u8>,
}

impl Template {
    /// A template of `size` bytes (at least 50: headers and the sequence number) from
    /// `src_mac`.
    pub fn new(size: usize, src_mac: [u8; 6]) -> Self {
        let mut frame = alloc::vec![0u8; size.max(PAYLOAD + 8)];
        let len = frame.len();
        frame[0..6].copy_from_slice(&PEER_MAC);
        frame[6..12].copy_from_slice(&src_mac);
        frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip_len = (len - IP) as u16;
        let ip = &mut frame[IP..IP + 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&SRC_IP);
        ip[16..20].copy_from_slice(&DST_IP);
        let udp = &mut frame[34..42];
        udp[0..2].copy_from_slice(&UDP_PORT.to_be_bytes());
        udp[2..4].copy_from_slice(&UDP_PORT.to_be_bytes());
        udp[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
        // UDP checksum 0: "none" over IPv4. The payload is a fixed pattern.
        for (i, b) in frame[PAYLOAD..].iter_mut().enumerate() {
            *b = i as u8;
        }
        Self { frame }
    }

    pub fn len(&self) -> usize {
        self.frame.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }

    /// Writes frame number `seq` into `out` (which is `self.len()` bytes).
    pub fn fill(&self, out: &mut [u8], seq: u64) {
        out.copy_from_slice(&self.frame);
        out[PAYLOAD..PAYLOAD + 8].copy_from_slice(&seq.to_be_bytes());
        let ip = &mut out[IP..IP + 20];
        ip[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
        let csum = ipv4_checksum(ip);
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
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
    fn frames_carry_their_number_and_a_valid_checksum() {
        let t = Template::new(64, [2, 0, 0, 0, 0, 1]);
        let mut f = [0u8; 64];
        t.fill(&mut f, 7);
        // Summing a header including its checksum gives 0xffff, i.e. a complement of 0.
        assert_eq!(ipv4_checksum(&f[14..34]), 0);
        assert_eq!(&f[42..50], &7u64.to_be_bytes());
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 7, "IPv4 identification");
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 50, "IPv4 total length");
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 30, "UDP length");
        assert_eq!(f[50], 8, "pattern after the sequence number");
        t.fill(&mut f, 8);
        assert_eq!(ipv4_checksum(&f[14..34]), 0);
        assert_eq!(&f[42..50], &8u64.to_be_bytes());
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
