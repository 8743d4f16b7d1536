//! Seeded random traffic: a mix of frames nobody tuned a test to, the same bytes for the
//! same seed on every machine. UDP and TCP over IPv4, UDP over IPv6, ARP and raw Ethernet,
//! of every size in a range, to unicast, broadcast and multicast addresses, a share of them
//! VLAN-tagged; built with `etherparse`, payloads random. A packet spec's `[random]` table
//! asks for it (`vmm::suites::pcap_spec`).

use device_model::fault::Rng;
use etherparse::{PacketBuilder, VlanId};

/// What a random capture holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    pub seed: u64,
    pub frames: usize,
    /// Frame sizes, inclusive, before padding to 60 bytes (a frame too small for its headers
    /// is made as large as they need).
    pub min_size: usize,
    pub max_size: usize,
    /// Shares of the frames, each in [0, 1]: tagged with a random VLAN, sent to the
    /// broadcast address, sent to a multicast address (the rest go to unicast ones).
    pub vlan: f64,
    pub broadcast: f64,
    pub multicast: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            seed: 1,
            frames: 1000,
            min_size: 60,
            max_size: 1514,
            vlan: 0.2,
            broadcast: 0.1,
            multicast: 0.1,
        }
    }
}

/// The frame kinds, in the order a roll picks them, with their weights out of 20.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Udp4,
    Tcp4,
    Udp6,
    Arp,
    Raw,
}

const KINDS: [(Kind, u64); 5] = [
    (Kind::Udp4, 8),
    (Kind::Tcp4, 6),
    (Kind::Udp6, 4),
    (Kind::Arp, 1),
    (Kind::Raw, 1),
];
/// An ethertype for frames with no network layer (IEEE 802 local experimental 2; 0x88b5 is
/// vlab's end marker).
const RAW_ETHERTYPE: u16 = 0x88b6;
const MIN_FRAME: usize = 60;

struct Roll(Rng);

impl Roll {
    fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        for x in &mut b {
            *x = self.0.next_u64() as u8;
        }
        b
    }

    fn fill(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.0.next_u64() as u8).collect()
    }

    fn kind(&mut self) -> Kind {
        let total: u64 = KINDS.iter().map(|(_, w)| w).sum();
        let mut r = self.below(total);
        for (k, w) in KINDS {
            if r < w {
                return k;
            }
            r -= w;
        }
        Kind::Raw
    }
}

/// The frames of `mix`.
pub fn generate(mix: &Mix) -> Vec<Vec<u8>> {
    let mut roll = Roll(Rng::new(mix.seed));
    (0..mix.frames).map(|_| frame(&mut roll, mix)).collect()
}

fn frame(roll: &mut Roll, mix: &Mix) -> Vec<u8> {
    let kind = roll.kind();
    let size = roll.range(mix.min_size, mix.max_size.max(mix.min_size));
    let tagged = roll.0.chance(mix.vlan);
    let vid = 1 + roll.below(4094) as u16;
    let to_all = roll.0.chance(mix.broadcast);
    let to_group = !to_all && roll.0.chance(mix.multicast);
    let mut src: [u8; 6] = roll.bytes();
    src[0] = (src[0] & 0xfc) | 0x02; // locally administered unicast
    let dst = if to_all {
        [0xff; 6]
    } else if to_group {
        let low: [u8; 3] = roll.bytes();
        match kind {
            Kind::Udp6 => [0x33, 0x33, 0xff, low[0], low[1], low[2]],
            _ => [0x01, 0x00, 0x5e, low[0] & 0x7f, low[1], low[2]],
        }
    } else {
        let mut d: [u8; 6] = roll.bytes();
        d[0] = (d[0] & 0xfc) | 0x02;
        d
    };
    let eth = PacketBuilder::ethernet2(src, dst);
    let vlan = VlanId::try_new(vid).expect("1..=4094 is a VLAN id");
    let mut out = Vec::with_capacity(size.max(MIN_FRAME));
    // The builders of each kind differ in type; `build!` writes one with a payload that
    // brings the frame to `size` (or none, where the headers alone are larger).
    macro_rules! build {
        ($b:expr) => {{
            let b = $b;
            let len = size.saturating_sub(b.size(0));
            b.write(&mut out, &roll.fill(len))
                .expect("writing to a Vec cannot fail");
        }};
    }
    match (kind, tagged) {
        (Kind::Udp4, false) => build!(eth
            .ipv4(roll.bytes(), roll.bytes(), 64)
            .udp(roll.below(65536) as u16, roll.below(65536) as u16)),
        (Kind::Udp4, true) => build!(eth
            .single_vlan(vlan)
            .ipv4(roll.bytes(), roll.bytes(), 64)
            .udp(roll.below(65536) as u16, roll.below(65536) as u16)),
        (Kind::Tcp4, false) => build!(eth.ipv4(roll.bytes(), roll.bytes(), 64).tcp(
            roll.below(65536) as u16,
            roll.below(65536) as u16,
            roll.0.next_u64() as u32,
            65535
        )),
        (Kind::Tcp4, true) => build!(eth
            .single_vlan(vlan)
            .ipv4(roll.bytes(), roll.bytes(), 64)
            .tcp(
                roll.below(65536) as u16,
                roll.below(65536) as u16,
                roll.0.next_u64() as u32,
                65535
            )),
        (Kind::Udp6, false) => build!(eth
            .ipv6(roll.bytes(), roll.bytes(), 64)
            .udp(roll.below(65536) as u16, roll.below(65536) as u16)),
        (Kind::Udp6, true) => build!(eth
            .single_vlan(vlan)
            .ipv6(roll.bytes(), roll.bytes(), 64)
            .udp(roll.below(65536) as u16, roll.below(65536) as u16)),
        (Kind::Arp, _) | (Kind::Raw, _) => {
            out.extend_from_slice(&dst);
            out.extend_from_slice(&src);
            if tagged {
                out.extend_from_slice(&0x8100u16.to_be_bytes());
                out.extend_from_slice(&vid.to_be_bytes());
            }
            if let Kind::Arp = kind {
                // An Ethernet/IPv4 request: hardware and protocol types and sizes, opcode 1.
                out.extend_from_slice(&0x0806u16.to_be_bytes());
                out.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
                out.extend_from_slice(&src);
                out.extend_from_slice(&roll.bytes::<4>());
                out.extend_from_slice(&[0; 6]);
                out.extend_from_slice(&roll.bytes::<4>());
            } else {
                out.extend_from_slice(&RAW_ETHERTYPE.to_be_bytes());
                let len = size.saturating_sub(out.len());
                out.extend_from_slice(&roll.fill(len));
            }
        }
    }
    if out.len() < MIN_FRAME {
        out.resize(MIN_FRAME, 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(seed: u64) -> Mix {
        Mix {
            seed,
            frames: 2000,
            ..Mix::default()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_frames_and_another_seed_others() {
        assert_eq!(generate(&mix(3)), generate(&mix(3)));
        assert_ne!(generate(&mix(3)), generate(&mix(4)));
    }

    #[test]
    fn frames_span_the_sizes_and_the_mix_asked_for() {
        let frames = generate(&mix(9));
        assert_eq!(frames.len(), 2000);
        assert!(frames.iter().all(|f| (60..=1518).contains(&f.len())));
        assert!(frames.iter().any(|f| f.len() <= 64));
        assert!(frames.iter().any(|f| f.len() >= 1500));
        let count = |p: &dyn Fn(&Vec<u8>) -> bool| frames.iter().filter(|f| p(f)).count();
        let tagged = count(&|f| f[12..14] == [0x81, 0x00]);
        let broadcast = count(&|f| f[..6] == [0xff; 6]);
        let multicast = count(&|f| f[0] & 1 == 1 && f[..6] != [0xff; 6]);
        // 20%, 10% and 9% (10% of the 90% not broadcast) of 2000, within a wide margin.
        assert!((300..500).contains(&tagged), "{tagged} tagged");
        assert!((120..280).contains(&broadcast), "{broadcast} broadcast");
        assert!((100..260).contains(&multicast), "{multicast} multicast");
        // Every IPv4 frame etherparse built carries a valid header checksum.
        for f in &frames {
            if let Ok(p) = etherparse::SlicedPacket::from_ethernet(f) {
                if let Some(etherparse::NetSlice::Ipv4(ip)) = p.net {
                    let h = ip.header().to_header();
                    assert_eq!(h.header_checksum, h.calc_header_checksum());
                }
            }
        }
    }
}
