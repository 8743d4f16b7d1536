//! The packet-spec format: every field, every default, every error.
use super::*;
use etherparse::{LinkExtHeader, NetHeaders, PacketHeaders, TransportHeader};

const HEAD: &str = r#"
[defaults]
eth = { src = "02:00:00:00:00:01", dst = "02:00:00:00:00:02" }
ipv4 = { src = "10.0.0.1", dst = "10.0.0.2" }
"#;

fn build(text: &str) -> Result<Vec<Frame>, Error> {
    parse_str(Path::new("spec.toml"), text)
}

fn err(text: &str) -> String {
    build(text).unwrap_err().to_string()
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testcases/specs/example.toml")
}

#[test]
fn udp_ipv4_frame_matches_hand_checked_bytes() {
    let frames = build(&format!(
        "{HEAD}\n[[frame]]\nipv4 = {{}}\nudp = {{ src-port = 1234, dst-port = 5678 }}\n\
         payload = \"hi\"\n"
    ))
    .unwrap();
    assert_eq!(frames.len(), 1);
    #[rustfmt::skip]
    let mut want = vec![
        // Ethernet: dst, src, IPv4.
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
        // IPv4: v4 ihl 5, tos 0, total 30, id 0, DF, ttl 64, UDP, checksum 0x26cd
        // (~(0x4500+0x001e+0x4000+0x4011+0x0a00+0x0001+0x0a00+0x0002) = ~0xd932).
        0x45, 0x00, 0x00, 0x1e, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x26, 0xcd,
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02,
        // UDP: 1234 -> 5678, length 10, checksum 0x686e (pseudo header 0x141e + header
        // and data 0x8373 = 0x9791, complemented).
        0x04, 0xd2, 0x16, 0x2e, 0x00, 0x0a, 0x68, 0x6e,
        // "hi"
        0x68, 0x69,
    ];
    want.resize(60, 0); // padded to the Ethernet minimum
    assert_eq!(frames[0].data, want);
    assert_eq!(frames[0].ts, Duration::ZERO);

    // And etherparse agrees, checksums included.
    let h = PacketHeaders::from_ethernet_slice(&frames[0].data).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = h.net else {
        panic!("not IPv4: {:?}", h.net)
    };
    assert_eq!(ip.source, [10, 0, 0, 1]);
    assert_eq!(ip.destination, [10, 0, 0, 2]);
    assert_eq!(ip.time_to_live, 64);
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    let Some(TransportHeader::Udp(udp)) = h.transport else {
        panic!("not UDP: {:?}", h.transport)
    };
    assert_eq!((udp.source_port, udp.destination_port), (1234, 5678));
    let payload = h.payload.slice();
    assert_eq!(payload, b"hi", "the padding is not payload");
    assert_eq!(udp.checksum, udp.calc_checksum_ipv4(&ip, payload).unwrap());
}

#[test]
fn vlan_tag_sits_between_the_macs_and_the_ethertype() {
    let frames = build(&format!(
        "{HEAD}\n[[frame]]\neth = {{ vlan = {{ id = 100, pcp = 5 }} }}\nipv4 = {{}}\n\
         udp = {{ src-port = 1, dst-port = 2 }}\n\
         [[frame]]\neth = {{ vlan = {{ id = 4095, dei = true }}, ethertype = 0x88b5 }}\n\
         payload-hex = \"cafe\"\n"
    ))
    .unwrap();
    let f = &frames[0].data;
    assert_eq!(&f[12..14], &[0x81, 0x00], "TPID");
    assert_eq!(&f[14..16], &[0xa0, 0x64], "TCI: pcp 5, dei 0, vid 100");
    assert_eq!(&f[16..18], &[0x08, 0x00], "inner ethertype");
    assert_eq!(f[18], 0x45, "IPv4 follows the tag");
    let h = PacketHeaders::from_ethernet_slice(f).unwrap();
    let [LinkExtHeader::Vlan(tag)] = h.link_exts.as_slice() else {
        panic!("one VLAN tag: {:?}", h.link_exts)
    };
    assert_eq!((tag.vlan_id.value(), tag.pcp.value()), (100, 5));
    assert!(matches!(h.transport, Some(TransportHeader::Udp(_))));

    let raw = &frames[1].data;
    assert_eq!(
        &raw[12..20],
        &[0x81, 0x00, 0x1f, 0xff, 0x88, 0xb5, 0xca, 0xfe]
    );
    assert_eq!(raw.len(), 60);
}

#[test]
fn short_frames_are_padded_to_pad_to() {
    let frames = build(&format!(
        "{HEAD}\n\
         [[frame]]\neth = {{ ethertype = 0x88b5 }}\npayload = \"x\"\n\
         [[frame]]\neth = {{ ethertype = 0x88b5 }}\npayload = \"x\"\npad-to = 0\n\
         [[frame]]\neth = {{ ethertype = 0x88b5 }}\npayload = \"x\"\npad-to = 100\n\
         [[frame]]\neth = {{ ethertype = 0x88b5 }}\npayload-len = 80\npad-to = 64\n"
    ))
    .unwrap();
    let lens: Vec<usize> = frames.iter().map(|f| f.data.len()).collect();
    assert_eq!(lens, [60, 15, 100, 94]);
    assert_eq!(frames[0].data[14], b'x');
    assert!(frames[0].data[15..].iter().all(|&b| b == 0), "zero padding");
    // A file-wide pad-to in [defaults].
    let frames = build(&format!(
        "{HEAD}pad-to = 0\n[[frame]]\neth = {{ ethertype = 0x88b5 }}\n"
    ))
    .unwrap();
    assert_eq!(frames[0].data.len(), 14);
}

#[test]
fn repeat_copies_frames_a_step_apart() {
    let frames = build(&format!(
        "{HEAD}ts-step-us = 250\n\
         [[frame]]\nipv4 = {{}}\nudp = {{ src-port = 1, dst-port = 2 }}\nrepeat = 3\n\
         [[frame]]\nts = 10000\nipv4 = {{}}\nudp = {{ src-port = 3, dst-port = 4 }}\n\
         repeat = 2\n\
         [[frame]]\neth = {{ ethertype = 0x88b5 }}\n"
    ))
    .unwrap();
    let ts: Vec<u128> = frames.iter().map(|f| f.ts.as_micros()).collect();
    assert_eq!(ts, [0, 250, 500, 10000, 10250, 10500]);
    assert_eq!(frames[0].data, frames[1].data);
    assert_eq!(frames[1].data, frames[2].data);
    assert_ne!(frames[2].data, frames[3].data);
    assert_eq!(frames[3].data, frames[4].data);
}

#[test]
fn output_is_byte_identical_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for name in ["a.pcap", "b.pcap"] {
        let out = dir.path().join(name);
        write(&parse(&example()).unwrap(), &out).unwrap();
        files.push(std::fs::read(&out).unwrap());
    }
    assert_eq!(files[0], files[1]);
    // What was written reads back as what was built.
    let cap = pcap::read(&dir.path().join("a.pcap"), MAX_FRAME).unwrap();
    assert_eq!(cap.frames, parse(&example()).unwrap());
}

#[test]
fn example_spec_builds_what_it_says() {
    let frames = parse(&example()).unwrap();
    assert_eq!(frames.len(), 17);
    let ts: Vec<u128> = frames.iter().map(|f| f.ts.as_micros()).collect();
    assert_eq!(
        ts,
        [
            0, 5000, 6000, 7000, 8000, 9000, 10000, 11000, 12000, 13000, 14000, 15000, 16000,
            17000, 18000, 19000, 1_000_000
        ]
    );
    let lens: Vec<usize> = frames.iter().map(|f| f.data.len()).collect();
    assert_eq!(lens[15], 22, "the unpadded tagged runt");
    assert_eq!(lens[16], 9000, "the jumbo frame");
    // Every IP frame parses, with right checksums.
    for (i, f) in frames.iter().enumerate() {
        let h = PacketHeaders::from_ethernet_slice(&f.data)
            .unwrap_or_else(|e| panic!("frame {i}: {e}"));
        if let Some(NetHeaders::Ipv4(ip, _)) = &h.net {
            assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "frame {i}");
        }
        let payload = h.payload.slice();
        match (&h.net, &h.transport) {
            (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Udp(u))) => {
                assert_eq!(
                    u.checksum,
                    u.calc_checksum_ipv4(ip, payload).unwrap(),
                    "{i}"
                )
            }
            (Some(NetHeaders::Ipv6(ip, _)), Some(TransportHeader::Udp(u))) => {
                assert_eq!(
                    u.checksum,
                    u.calc_checksum_ipv6(ip, payload).unwrap(),
                    "{i}"
                )
            }
            (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Tcp(t))) => {
                assert_eq!(
                    t.checksum,
                    t.calc_checksum_ipv4(ip, payload).unwrap(),
                    "{i}"
                )
            }
            (_, Some(TransportHeader::Icmpv4(icmp))) => {
                let mut again = icmp.clone();
                again.update_checksum(payload);
                assert_eq!(icmp.checksum, again.checksum, "frame {i}");
            }
            _ => {}
        }
    }
}

#[test]
fn module_doc_example_builds() {
    let doc: String = include_str!("mod.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .skip_while(|l| l.trim() != "```toml")
        .skip(1)
        .take_while(|l| l.trim() != "```")
        .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
        .collect();
    let frames = build(&doc).unwrap();
    let ts: Vec<u128> = frames.iter().map(|f| f.ts.as_micros()).collect();
    assert_eq!(ts, [0, 1000, 2000, 3000, 4000, 5000]);
    assert_eq!(frames[0].data.len(), 60);
    assert_eq!(&frames[1].data[12..14], &[0x81, 0x00]);
}

#[test]
fn layers_come_out_as_specified() {
    let frames = build(&format!(
        "{HEAD}\n\
         [[frame]]\nipv4 = {{}}\n\
         tcp = {{ src-port = 40000, dst-port = 80, seq = 7, ack-num = 9, window = 512, \
         flags = [\"syn\", \"ack\"] }}\n\
         [[frame]]\nipv6 = {{ src = \"fd00::1\", dst = \"fd00::2\", hop-limit = 9 }}\n\
         icmpv6 = {{ type = \"echo-reply\", id = 3, seq = 4 }}\n\
         [[frame]]\neth = {{ dst = \"ff:ff:ff:ff:ff:ff\" }}\n\
         arp = {{ op = \"request\", sender-ip = \"10.0.0.1\", target-ip = \"10.0.0.2\" }}\n"
    ))
    .unwrap();
    let h = PacketHeaders::from_ethernet_slice(&frames[0].data).unwrap();
    let Some(TransportHeader::Tcp(t)) = h.transport else {
        panic!("not TCP")
    };
    assert_eq!((t.sequence_number, t.acknowledgment_number), (7, 9));
    assert!(t.syn && t.ack && !t.fin && !t.rst && !t.psh);
    assert_eq!(t.window_size, 512);

    let h = PacketHeaders::from_ethernet_slice(&frames[1].data).unwrap();
    let Some(NetHeaders::Ipv6(ip, _)) = &h.net else {
        panic!("not IPv6")
    };
    assert_eq!(ip.hop_limit, 9);
    let Some(TransportHeader::Icmpv6(icmp)) = &h.transport else {
        panic!("not ICMPv6")
    };
    assert_eq!(
        icmp.icmp_type,
        etherparse::Icmpv6Type::EchoReply(etherparse::IcmpEchoHeader { id: 3, seq: 4 })
    );

    let h = PacketHeaders::from_ethernet_slice(&frames[2].data).unwrap();
    let Some(NetHeaders::Arp(arp)) = &h.net else {
        panic!("not ARP")
    };
    let arp = arp.try_eth_ipv4().unwrap();
    assert_eq!(arp.operation, ArpOperation::REQUEST);
    assert_eq!(arp.sender_mac, [2, 0, 0, 0, 0, 1], "eth.src by default");
    assert_eq!(arp.target_mac, [0; 6]);
    assert_eq!(arp.target_ipv4, [10, 0, 0, 2]);
    assert_eq!(frames[2].data.len(), 60);
}

#[test]
fn bad_mac_names_file_frame_and_field() {
    assert_eq!(
        err(&format!(
            "{HEAD}[[frame]]\nipv4 = {{ protocol = 253 }}\n\
             [[frame]]\neth = {{ src = \"02:00:00:00:00\" }}\nipv4 = {{ protocol = 253 }}\n"
        )),
        "spec.toml: frame 1: eth.src: '02:00:00:00:00' is not a MAC address \
         (six hex bytes like 02:00:00:00:00:01)"
    );
    for bad in [
        "02:00:00:00:00:0g",
        "2:00:00:00:00:01",
        "02-00-00-00-00-01",
        "02:00:00:00:00:01:00",
        "+2:00:00:00:00:01",
    ] {
        assert!(
            err(&format!(
                "{HEAD}[[frame]]\neth = {{ dst = \"{bad}\", ethertype = 1 }}\n"
            ))
            .starts_with(&format!(
                "spec.toml: frame 0: eth.dst: '{bad}' is not a MAC"
            )),
            "{bad}"
        );
    }
    assert_eq!(
        err("[defaults]\neth = { src = \"me\" }\n"),
        "spec.toml: defaults: eth.src: 'me' is not a MAC address \
         (six hex bytes like 02:00:00:00:00:01)"
    );
    assert_eq!(
        err("[[frame]]\neth = { dst = \"02:00:00:00:00:02\" }\nipv4 = {}\n"),
        "spec.toml: frame 0: eth.src: missing: give it in the frame or in [defaults.eth]"
    );
}

#[test]
fn bad_ip_names_file_frame_and_field() {
    let mut spec = HEAD.to_string();
    for _ in 0..3 {
        spec += "[[frame]]\nipv4 = {}\nudp = { src-port = 1, dst-port = 2 }\n";
    }
    spec += "[[frame]]\nipv4 = { src = \"10.0.0.300\" }\nudp = { src-port = 1, dst-port = 2 }\n";
    assert_eq!(
        err(&spec),
        "spec.toml: frame 3: ipv4.src: '10.0.0.300' is not an IPv4 address"
    );
    assert_eq!(
        err(&format!(
            "{HEAD}[[frame]]\nipv6 = {{ src = \"fd00::1\", dst = \"10.0.0.1\" }}\n\
             udp = {{ src-port = 1, dst-port = 2 }}\n"
        )),
        "spec.toml: frame 0: ipv6.dst: '10.0.0.1' is not an IPv6 address"
    );
    assert_eq!(
        err("[defaults]\nipv4 = { dst = \"nowhere\" }\n"),
        "spec.toml: defaults: ipv4.dst: 'nowhere' is not an IPv4 address"
    );
}

#[test]
fn unknown_key_keeps_line_and_column() {
    let e = err(&format!(
        "{HEAD}[[frame]]\nipv4 = {{}}\nudp = {{ src-port = 1, dst-port = 2, colour = 3 }}\n"
    ));
    assert!(
        e.starts_with("spec.toml: line 7, column 37: unknown field `colour`"),
        "{e}"
    );
    assert!(!e.contains('\n'), "one line: {e}");
    let e = err("[[frames]]\n");
    assert!(
        e.starts_with("spec.toml: line 1, column 3: unknown field `frames`"),
        "{e}"
    );
    let e = err("[[frame]]\nipv4 = { src = \n");
    assert!(e.starts_with("spec.toml: line 2, column "), "{e}");
    let e = err("[[frame]]\ntcp = { src-port = 1, dst-port = 2, flags = [\"syn\", \"yes\"] }\n");
    assert!(e.starts_with("spec.toml: line 2, column "), "{e}");
    assert!(e.contains("unknown variant `yes`"), "{e}");
}

#[test]
fn ipv4_and_ipv6_together_are_refused() {
    assert_eq!(
        err(&format!(
            "{HEAD}[[frame]]\nipv4 = {{}}\nipv6 = {{ src = \"::1\", dst = \"::2\" }}\n\
             udp = {{ src-port = 1, dst-port = 2 }}\n"
        )),
        "spec.toml: frame 0: ipv4 and ipv6 are both given; a frame has at most one of \
         ipv4, ipv6 and arp"
    );
}

#[test]
fn payload_too_large_for_the_largest_frame_is_refused() {
    // 14 + 20 + 8 + 16342 = 16384 bytes fits exactly; one more does not.
    let spec = |len: usize| {
        format!(
            "{HEAD}[[frame]]\nipv4 = {{}}\nudp = {{ src-port = 1, dst-port = 2 }}\n\
             payload-len = {len}\n"
        )
    };
    assert_eq!(build(&spec(16342)).unwrap()[0].data.len(), 16384);
    assert_eq!(
        err(&spec(16343)),
        "spec.toml: frame 0: payload-len: the frame would be 16385 bytes, more than the \
         16384-byte limit"
    );
    assert_eq!(
        err(&spec(1 << 40)),
        "spec.toml: frame 0: payload-len: 1099511627776 bytes do not fit in a 16384-byte \
         frame"
    );
    let big_text = "x".repeat(20000);
    assert!(err(&format!(
        "{HEAD}[[frame]]\neth = {{ ethertype = 0x88b5 }}\npayload = \"{big_text}\"\n"
    ))
    .starts_with("spec.toml: frame 0: payload: 20000 bytes do not fit"));
}

#[test]
fn other_mistakes_are_named() {
    let cases: &[(&str, &str)] = &[
        (
            "[[frame]]\neth = { ethertype = 0x800 }\nipv4 = {}\n",
            "frame 0: eth.ethertype: given with ipv4, which sets the ethertype itself",
        ),
        (
            "[[frame]]\n",
            "frame 0: no network layer: give one of ipv4, ipv6 and arp, or eth.ethertype",
        ),
        (
            "[[frame]]\neth = { ethertype = 0x88b5 }\nudp = { src-port = 1, dst-port = 2 }\n",
            "frame 0: udp: needs ipv4 or ipv6",
        ),
        (
            "[[frame]]\nipv4 = {}\nudp = { src-port = 1, dst-port = 2 }\n\
             tcp = { src-port = 1, dst-port = 2 }\n",
            "frame 0: udp and tcp are both given",
        ),
        (
            "[[frame]]\nipv4 = {}\nicmpv6 = { type = \"echo-request\" }\n",
            "frame 0: icmpv6: needs ipv6",
        ),
        ("[[frame]]\nipv4 = {}\n", "frame 0: ipv4.protocol: missing"),
        (
            "[[frame]]\nipv4 = { protocol = 17 }\nudp = { src-port = 1, dst-port = 2 }\n",
            "frame 0: ipv4.protocol: given with udp, which sets it itself",
        ),
        (
            "[[frame]]\nipv4 = { protocol = 253 }\npayload = \"a\"\npayload-len = 3\n",
            "frame 0: payload and payload-len are both given",
        ),
        (
            "[[frame]]\neth = { ethertype = 0x88b5 }\npayload-hex = \"abc\"\n",
            "frame 0: payload-hex: 3 hex digits is an odd number",
        ),
        (
            "[[frame]]\neth = { ethertype = 0x88b5 }\npayload-hex = \"ab xz\"\n",
            "frame 0: payload-hex: 'x' at character 3 is not a hex digit",
        ),
        (
            "[[frame]]\neth = { ethertype = 0x88b5, vlan = { id = 4096 } }\n",
            "frame 0: eth.vlan.id: 4096 is out of range 0..=4095",
        ),
        (
            "[[frame]]\neth = { ethertype = 0x88b5, vlan = { id = 1, pcp = 8 } }\n",
            "frame 0: eth.vlan.pcp: 8 is out of range 0..=7",
        ),
        (
            "[[frame]]\narp = { op = \"reply\", sender-ip = \"1.2.3.4\", target-ip = \"x\" }\n",
            "frame 0: arp.target-ip: 'x' is not an IPv4 address",
        ),
        (
            "[[frame]]\narp = { op = \"reply\", sender-ip = \"1.2.3.4\", target-ip = \"1.2.3.5\" }\n\
             payload = \"no\"\n",
            "frame 0: payload: an ARP frame has no payload",
        ),
        (
            "[[frame]]\nts = 500\neth = { ethertype = 0x88b5 }\n\
             [[frame]]\nts = 400\neth = { ethertype = 0x88b5 }\n",
            "frame 1: ts: 400 µs is earlier than the previous frame's 500 µs",
        ),
        (
            "[[frame]]\neth = { ethertype = 0x88b5 }\nrepeat = 0\n",
            "frame 0: repeat: must be at least 1",
        ),
        (
            "[[frame]]\neth = { ethertype = 0x88b5 }\nrepeat = 2000000\n",
            "frame 0: repeat: 2000000 copies would take the capture past 1048576 frames",
        ),
        (
            "[[frame]]\neth = { ethertype = 0x88b5 }\npad-to = 20000\n",
            "frame 0: pad-to: 20000 is more than the 16384-byte frame limit",
        ),
        (
            "[[frame]]\nts = 4294967296000000\neth = { ethertype = 0x88b5 }\n",
            "frame 0: ts: the timestamp would pass",
        ),
    ];
    for (frame, want) in cases {
        let e = err(&format!("{HEAD}{frame}"));
        assert!(
            e.starts_with(&format!("spec.toml: {want}")),
            "{frame}\n  gave: {e}\n  want: {want}"
        );
    }
}

#[test]
fn errors_name_the_spec_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let e = parse(&missing).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: ", missing.display())), "{e}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("{HEAD}[[frame]]\nipv4 = {{ src = \"1.2.3\" }}\n"),
    )
    .unwrap();
    assert_eq!(
        parse(&bad).unwrap_err().to_string(),
        format!(
            "{}: frame 0: ipv4.src: '1.2.3' is not an IPv4 address",
            bad.display()
        )
    );
}

#[test]
fn write_leaves_nothing_behind_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("missing-dir").join("out.pcap");
    let frames = build(&format!(
        "{HEAD}[[frame]]\neth = {{ ethertype = 0x88b5 }}\n"
    ))
    .unwrap();
    assert!(write(&frames, &out).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
