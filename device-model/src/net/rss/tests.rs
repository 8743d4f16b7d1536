//! The Toeplitz hash against the published verification vectors (Microsoft's "Verifying
//! the RSS Hash Calculation", the key and addresses NIC vendors test with), the field
//! selection of section 5.1.6.4.3.1, and the configuration's parsing.

use super::*;

/// The verification key.
const KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// (destination, source, IPv4 only, IPv4 with TCP), as the table gives them.
const V4: [(&str, u16, &str, u16, u32, u32); 5] = [
    (
        "161.142.100.80",
        1766,
        "66.9.149.187",
        2794,
        0x323e8fc2,
        0x51ccc178,
    ),
    (
        "65.69.140.83",
        4739,
        "199.92.111.2",
        14230,
        0xd718262a,
        0xc626b0ea,
    ),
    (
        "12.22.207.184",
        38024,
        "24.19.198.95",
        12898,
        0xd2d0a5de,
        0x5c2b394a,
    ),
    (
        "209.142.163.6",
        2217,
        "38.27.205.30",
        48228,
        0x82989176,
        0xafc7327f,
    ),
    (
        "202.188.127.2",
        1303,
        "153.39.163.191",
        44251,
        0x5d1809c5,
        0x10e828a2,
    ),
];

/// (destination, source, IPv6 only, IPv6 with TCP).
const V6: [(&str, u16, &str, u16, u32, u32); 3] = [
    (
        "3ffe:2501:200:3::1",
        1766,
        "3ffe:2501:200:1fff::7",
        2794,
        0x2cc18cd5,
        0x40207d3d,
    ),
    (
        "ff02::1",
        4739,
        "3ffe:501:8::260:97ff:fe40:efab",
        14230,
        0x0f0c461c,
        0xdde51bbf,
    ),
    (
        "fe80::200:f8ff:fe21:67cf",
        38024,
        "3ffe:1900:4545:3:200:f8ff:fe21:67cf",
        44251,
        0x4b61e985,
        0x02d1feef,
    ),
];

#[test]
fn the_hash_matches_the_published_ipv4_vectors() {
    for (dst, dport, src, sport, ip, tcp) in V4 {
        let (src, dst) = (src.parse().unwrap(), dst.parse().unwrap());
        let only = Tuple::V4 {
            src,
            dst,
            ports: None,
        };
        let with = Tuple::V4 {
            src,
            dst,
            ports: Some((sport, dport)),
        };
        assert_eq!(toeplitz(&KEY, &only.bytes()), ip, "{src} -> {dst}");
        assert_eq!(
            toeplitz(&KEY, &with.bytes()),
            tcp,
            "{src}:{sport} -> {dst}:{dport}"
        );
    }
}

#[test]
fn the_hash_matches_the_published_ipv6_vectors() {
    for (dst, dport, src, sport, ip, tcp) in V6 {
        let (src, dst) = (src.parse().unwrap(), dst.parse().unwrap());
        let only = Tuple::V6 {
            src,
            dst,
            ports: None,
        };
        let with = Tuple::V6 {
            src,
            dst,
            ports: Some((sport, dport)),
        };
        assert_eq!(toeplitz(&KEY, &only.bytes()), ip, "{src} -> {dst}");
        assert_eq!(
            toeplitz(&KEY, &with.bytes()),
            tcp,
            "{src}:{sport} -> {dst}:{dport}"
        );
    }
}

/// An Ethernet frame around an IPv4 header and 8 bytes of transport header.
fn v4_frame(src: &str, dst: &str, proto: u8, sport: u16, dport: u16, frag: u16) -> Vec<u8> {
    let mut f = vec![0x02; 12];
    f.extend([0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 28, 0, 0];
    ip.extend(frag.to_be_bytes());
    ip.extend([64, proto, 0, 0]);
    ip.extend(src.parse::<Ipv4Addr>().unwrap().octets());
    ip.extend(dst.parse::<Ipv4Addr>().unwrap().octets());
    f.extend(ip);
    f.extend(sport.to_be_bytes());
    f.extend(dport.to_be_bytes());
    f.extend([0; 4]);
    f
}

/// An Ethernet frame around an IPv6 header, `ext` extension headers (already chained: the
/// first byte of each names the next), and 8 bytes of transport header.
fn v6_frame(src: &str, dst: &str, next: u8, ext: &[u8], sport: u16, dport: u16) -> Vec<u8> {
    let mut f = vec![0x02; 12];
    f.extend([0x86, 0xdd]);
    f.extend([0x60, 0, 0, 0, 0, 0, next, 64]);
    f.extend(src.parse::<Ipv6Addr>().unwrap().octets());
    f.extend(dst.parse::<Ipv6Addr>().unwrap().octets());
    f.extend(ext);
    f.extend(sport.to_be_bytes());
    f.extend(dport.to_be_bytes());
    f.extend([0; 4]);
    f
}

#[test]
fn frames_hash_as_their_tuples_do() {
    use hash_type as t;
    let (dst, dport, src, sport, ip, tcp) = V4[0];
    let f = v4_frame(src, dst, IPPROTO_TCP, sport, dport, 0);
    let cfg = |types| RssConfig {
        hash_types: types,
        table: (0..128).map(|i| i % 4).collect(),
        unclassified: 3,
        max_tx_vq: 4,
        key: KEY.to_vec(),
    };
    assert_eq!(
        cfg(t::TCPV4).steer(&f),
        ((tcp & 127) as u16 % 4, tcp, Report::Tcpv4)
    );
    assert_eq!(cfg(t::IPV4 | t::UDPV4).steer(&f).1, ip);
    assert_eq!(cfg(t::IPV4 | t::UDPV4).steer(&f).2, Report::Ipv4);
    // No type covers it: the unclassified queue, no hash.
    assert_eq!(cfg(t::UDPV4 | t::IPV6).steer(&f), (3, 0, Report::None));
    // A fragment is hashed by addresses only, even with TCPv4 on.
    let frag = v4_frame(src, dst, IPPROTO_TCP, sport, dport, 0x2000);
    assert_eq!(cfg(t::TCPV4).steer(&frag), (3, 0, Report::None));
    assert_eq!(cfg(t::TCPV4 | t::IPV4).steer(&frag).2, Report::Ipv4);
    // UDP takes the same fields.
    let udp = v4_frame(src, dst, IPPROTO_UDP, sport, dport, 0);
    assert_eq!(cfg(t::UDPV4).steer(&udp).1, tcp);
    // A VLAN tag in front changes nothing.
    let mut tagged = f[..12].to_vec();
    tagged.extend([0x81, 0x00, 0x00, 0x05]);
    tagged.extend(&f[12..]);
    assert_eq!(cfg(t::TCPV4).steer(&tagged).1, tcp);
    // A runt or a non-IP frame is unclassified, never a panic.
    for bad in [&f[..20], &f[..34], &[0u8; 0][..], &[0x02; 14][..]] {
        let (_, hash, _) = cfg(t::ALL).steer(bad);
        assert!(hash == 0 || bad.len() >= 34);
    }
}

#[test]
fn ipv6_extension_headers_pick_the_ex_addresses() {
    use hash_type as t;
    let (dst, dport, src, sport, ip, tcp) = V6[0];
    // Destination options with a home address option (type 201, 16 bytes), padded to 24.
    let home: Ipv6Addr = V6[1].2.parse().unwrap();
    let mut dopt = vec![IPPROTO_TCP, 2, 201, 16];
    dopt.extend(home.octets());
    dopt.extend([1, 2, 0, 0]); // PadN
    let f = v6_frame(src, dst, 60, &dopt, sport, dport);
    let plain = RssConfig {
        hash_types: t::TCPV6,
        table: vec![0],
        unclassified: 0,
        max_tx_vq: 1,
        key: KEY.to_vec(),
    };
    // Without the _EX types the extension header is walked past, not used.
    assert_eq!(plain.steer(&f), (0, tcp, Report::Tcpv6));
    let ex = RssConfig {
        hash_types: t::TCP_EX | t::TCPV6,
        ..plain.clone()
    };
    let want = Tuple::V6 {
        src: home,
        dst: dst.parse().unwrap(),
        ports: Some((sport, dport)),
    };
    assert_eq!(
        ex.steer(&f),
        (0, toeplitz(&KEY, &want.bytes()), Report::Tcpv6Ex)
    );
    // IP_EX without a transport type: addresses only.
    let ip_ex = RssConfig {
        hash_types: t::IP_EX,
        ..plain.clone()
    };
    let want = Tuple::V6 {
        src: home,
        dst: dst.parse().unwrap(),
        ports: None,
    };
    assert_eq!(ip_ex.steer(&f).1, toeplitz(&KEY, &want.bytes()));
    // No extension headers: _EX falls back to the plain addresses, reported as _EX.
    let bare = v6_frame(src, dst, IPPROTO_TCP, &[], sport, dport);
    assert_eq!(ex.steer(&bare), (0, tcp, Report::Tcpv6Ex));
    let v6only = RssConfig {
        hash_types: t::IPV6,
        ..plain
    };
    assert_eq!(v6only.steer(&bare), (0, ip, Report::Ipv6));
}

fn config_bytes(types: u32, table: &[u16], unclassified: u16, key: &[u8]) -> Vec<u8> {
    config_bytes_for(types, table, unclassified, 2, key)
}

fn config_bytes_for(
    types: u32,
    table: &[u16],
    unclassified: u16,
    max_tx_vq: u16,
    key: &[u8],
) -> Vec<u8> {
    let mut b = types.to_le_bytes().to_vec();
    b.extend((table.len() as u16 - 1).to_le_bytes());
    b.extend(unclassified.to_le_bytes());
    for q in table {
        b.extend(q.to_le_bytes());
    }
    b.extend(max_tx_vq.to_le_bytes());
    b.push(key.len() as u8);
    b.extend(key);
    b
}

#[test]
fn the_configuration_parses_and_refuses_what_the_spec_forbids() {
    let good = config_bytes(hash_type::TCPV4, &[0, 1, 0, 1], 1, &KEY);
    let cfg = RssConfig::parse(&good, 2).unwrap();
    assert_eq!(cfg.table, [0, 1, 0, 1]);
    assert_eq!((cfg.unclassified, cfg.max_tx_vq, cfg.key.len()), (1, 2, 40));
    assert_eq!(cfg.highest_queue(), 1);
    assert_eq!(
        RssConfig::parse(&config_bytes(1, &[0, 1, 0], 0, &KEY), 2),
        Err(Error::TableLength(3))
    );
    assert_eq!(
        RssConfig::parse(&config_bytes(1, &[0; 256], 0, &KEY), 2),
        Err(Error::TableLength(256))
    );
    assert_eq!(
        RssConfig::parse(&config_bytes(1, &[0, 2], 0, &KEY), 2),
        Err(Error::Queue { queue: 2, pairs: 2 })
    );
    assert_eq!(
        RssConfig::parse(&config_bytes(1, &[0, 1], 2, &KEY), 2),
        Err(Error::Queue { queue: 2, pairs: 2 }),
        "the unclassified queue too"
    );
    // The queues must be among the pairs max_tx_vq enables, not only the device's.
    assert_eq!(
        RssConfig::parse(&config_bytes_for(1, &[0, 1], 0, 1, &KEY), 4),
        Err(Error::Queue { queue: 1, pairs: 1 })
    );
    for max_tx_vq in [0, 3] {
        assert_eq!(
            RssConfig::parse(&config_bytes_for(1, &[0], 0, max_tx_vq, &KEY), 2),
            Err(Error::MaxTxVq {
                max_tx_vq,
                pairs: 2
            })
        );
    }
    assert_eq!(
        RssConfig::parse(&config_bytes(1 << 9, &[0], 0, &KEY), 2),
        Err(Error::HashTypes(1 << 9))
    );
    assert_eq!(
        RssConfig::parse(&config_bytes(1, &[0], 0, &[0; 41]), 2),
        Err(Error::KeyLength(41))
    );
    assert_eq!(
        RssConfig::parse(&config_bytes(1, &[0], 0, &[]), 2),
        Err(Error::EmptyKey(1))
    );
    // No hash types: no key needed, every frame is unclassified.
    assert!(RssConfig::parse(&config_bytes(0, &[0], 1, &[]), 2).is_ok());
    let mut long = good.clone();
    long.push(0);
    assert_eq!(RssConfig::parse(&long, 2), Err(Error::Trailing(1)));
    // Every truncation is an error, never a panic.
    for n in 0..good.len() {
        assert_eq!(RssConfig::parse(&good[..n], 2), Err(Error::Short(n)), "{n}");
    }
}

fn hash_config_bytes(types: u32, key: &[u8]) -> Vec<u8> {
    let mut b = types.to_le_bytes().to_vec();
    b.extend([0; 8]);
    b.push(key.len() as u8);
    b.extend(key);
    b
}

#[test]
fn the_hash_configuration_parses_and_hashes_without_steering() {
    use hash_type as t;
    let good = hash_config_bytes(t::TCPV4 | t::IPV4, &KEY);
    let cfg = HashConfig::parse(&good).unwrap();
    assert_eq!((cfg.hash_types, cfg.key.len()), (t::TCPV4 | t::IPV4, 40));
    let (dst, dport, src, sport, _, tcp) = V4[2];
    let f = v4_frame(src, dst, IPPROTO_TCP, sport, dport, 0);
    assert_eq!(cfg.hash(&f), (tcp, Report::Tcpv4));
    assert_eq!(cfg.hash(&[0u8; 20]), (0, Report::None));
    // Reserved bytes are ignored.
    let mut reserved = good.clone();
    reserved[5] = 0xff;
    assert_eq!(HashConfig::parse(&reserved), Ok(cfg));
    assert_eq!(
        HashConfig::parse(&hash_config_bytes(1 << 12, &KEY)),
        Err(Error::HashTypes(1 << 12))
    );
    assert_eq!(
        HashConfig::parse(&hash_config_bytes(1, &[7; 41])),
        Err(Error::KeyLength(41))
    );
    let mut long = good.clone();
    long.extend([0, 0]);
    assert_eq!(HashConfig::parse(&long), Err(Error::Trailing(2)));
    for n in 0..good.len() {
        assert_eq!(HashConfig::parse(&good[..n]), Err(Error::Short(n)), "{n}");
    }
}
