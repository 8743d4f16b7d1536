//! Input captures written as text: a TOML packet spec, built into Ethernet frames with
//! `etherparse` and written as a pcap file.
//!
//! A spec says what each frame is (addresses, ports, flags, payload); `etherparse` fills in
//! what follows from that: ethertypes, IP lengths and protocol numbers, and the IPv4 header,
//! UDP, TCP and ICMP checksums. The same spec always gives the same bytes, timestamps
//! included, so a case's `in.pcap` can be reviewed as text and rebuilt at will.
//!
//! # Example
//!
//! ```toml
//! [defaults]
//! eth  = { src = "02:00:00:00:00:01", dst = "02:00:00:00:00:02" }
//! ipv4 = { src = "10.0.0.1", dst = "10.0.0.2" }
//!
//! # frame 0: UDP with a text payload, padded to 60 bytes; at 0 µs
//! [[frame]]
//! ipv4 = {}
//! udp = { src-port = 1234, dst-port = 5678 }
//! payload = "hello"
//!
//! # frame 1: five VLAN-tagged TCP SYNs over IPv6; at 1000, 2000, ... 5000 µs
//! [[frame]]
//! eth = { vlan = { id = 100, pcp = 3 } }
//! ipv6 = { src = "fd00::1", dst = "fd00::2" }
//! tcp = { src-port = 40000, dst-port = 80, seq = 1, flags = ["syn"] }
//! repeat = 5
//! ```
//!
//! `testcases/specs/example.toml` shows every key.
//!
//! # Format
//!
//! Keys are kebab-case; a key the format does not know is an error (with its line and
//! column), as is a value of the wrong type.
//!
//! `[defaults]`, all optional, supplies what a frame leaves out:
//! - `eth = { src, dst }`: MAC addresses, written `02:00:00:00:00:01`;
//! - `ipv4 = { src, dst, ttl = 64 }`, `ipv6 = { src, dst, hop-limit = 64 }`;
//! - `ts-step-us = 1000`: the gap between frames without an explicit `ts`;
//! - `pad-to = 60`: the length short frames are padded to.
//!
//! Each `[[frame]]` table (numbered from 0 in error messages) is one frame, or `repeat`
//! identical ones:
//! - `eth = { src, dst, vlan, ethertype }` (the table and its keys are optional when
//!   `[defaults]` has the addresses). `vlan = { id, pcp = 0, dei = false }` adds an 802.1Q tag.
//!   `ethertype = 0x88b5` makes a frame with no network layer: the payload follows the
//!   Ethernet header (and tag) directly.
//! - At most one network layer:
//!   - `ipv4 = { src, dst, ttl, id = 0, df = true, dscp = 0, ecn = 0, protocol }`;
//!   - `ipv6 = { src, dst, hop-limit, traffic-class = 0, flow-label = 0, next-header }`;
//!   - `arp = { op = "request" | "reply", sender-ip, target-ip, sender-mac, target-mac }`
//!     (Ethernet/IPv4 ARP; `sender-mac` defaults to `eth.src`, `target-mac` to
//!     `00:00:00:00:00:00` in a request and to `eth.dst` in a reply). An ARP frame has no
//!     payload.
//!
//!   `protocol` / `next-header` is the IP payload's protocol number, given only when the
//!   frame has no transport layer below.
//! - At most one transport layer, under `ipv4` or `ipv6`:
//!   - `udp = { src-port, dst-port }`;
//!   - `tcp = { src-port, dst-port, seq = 0, ack-num = 0, window = 65535, urgent-ptr = 0,
//!     flags = [] }`, flags from `fin syn rst psh ack urg ece cwr ns`;
//!   - `icmpv4 = { type = "echo-request" | "echo-reply", id = 0, seq = 0 }` (under `ipv4`),
//!     `icmpv6 = { ... }` likewise (under `ipv6`).
//! - At most one payload: `payload = "text"` (its UTF-8 bytes), `payload-hex = "de ad be ef"`
//!   (whitespace ignored) or `payload-len = N` (filler: byte *i* is `i mod 256`). None is an
//!   empty payload.
//! - `pad-to = N`: zero bytes are appended until the frame is N bytes long, like a NIC does
//!   to reach Ethernet's 60-byte minimum (the default, from `[defaults]`); `pad-to = 0`
//!   leaves short frames short. A longer frame is not cut.
//! - `repeat = N` (default 1): the frame N times, `ts-step-us` apart.
//! - `ts = N`: the frame's timestamp in microseconds. Without it, a frame comes
//!   `ts-step-us` after the previous one (the first at 0). Timestamps may not go backwards.
//!
//! A frame may be at most [`MAX_FRAME`] bytes, the device's largest.
//!
//! `[random]` adds seeded random frames after the listed ones (`ts-step-us` apart), a mix
//! nobody tuned a case to (`crate::suites::random_frames`): `seed`, `frames`, and optionally
//! `min-size = 60`, `max-size = 1514`, and the shares `vlan = 0.2`, `broadcast = 0.1`,
//! `multicast = 0.1`. The same seed gives the same bytes everywhere.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use device_model::pcap::{self, Frame, PcapOut};
use etherparse::{
    ArpEthIpv4Packet, ArpOperation, ArpPacket, EtherType, Ethernet2Header, IpDscp, IpEcn,
    IpHeaders, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder, SingleVlanHeader,
    TcpHeader, VlanHeader, VlanId, VlanPcp,
};
use pcap_file::TsResolution;
use pmd::testpmd::config::parse_mac;
use serde::Deserialize;

use crate::suites::random_frames::{self, Mix};

/// The largest frame a spec may describe: the device's limit.
pub const MAX_FRAME: usize = device_model::net::MAX_FRAME_LIMIT;
/// Short frames are padded to this length unless the spec says otherwise.
pub const DEFAULT_PAD_TO: usize = 60;
/// Microseconds between frames that have no `ts`, unless `[defaults]` says otherwise.
pub const DEFAULT_TS_STEP_US: u64 = 1000;
/// At most this many frames (after `repeat`) in one spec.
pub const MAX_FRAMES: usize = 1 << 20;
const DEFAULT_HOP_LIMIT: u8 = 64;
/// The last microsecond a classic pcap timestamp (32-bit seconds) can hold.
const MAX_TS_US: u64 = (u32::MAX as u64 + 1) * 1_000_000 - 1;
/// A classic pcap file header and record header.
const PCAP_FILE_HEADER: u64 = 24;
const PCAP_RECORD_HEADER: u64 = 16;

/// Where in a spec a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The `[defaults]` table.
    Defaults,
    /// The `[[frame]]` table with this index, from 0.
    Frame(usize),
    /// The `[random]` table.
    Random,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Defaults => write!(f, "defaults"),
            Place::Frame(i) => write!(f, "frame {i}"),
            Place::Random => write!(f, "random"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Bad TOML, an unknown key or a value of the wrong type.
    #[error("{path}: line {line}, column {column}: {message}")]
    Toml {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// Like [`Error::Toml`], for the rare error toml cannot place.
    #[error("{path}: {message}")]
    TomlUnplaced { path: PathBuf, message: String },
    /// A value that is not what its key needs.
    #[error("{path}: {place}: {field}: {why}")]
    Field {
        path: PathBuf,
        place: Place,
        field: &'static str,
        why: String,
    },
    /// Keys that cannot go together, or a frame missing a layer.
    #[error("{path}: {place}: {why}")]
    Frame {
        path: PathBuf,
        place: Place,
        why: String,
    },
    #[error(transparent)]
    Pcap(#[from] pcap::Error),
}

/// Reads the spec at `path` and builds its frames.
pub fn parse(path: &Path) -> Result<Vec<Frame>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_str(path, &text)
}

/// Builds the frames of the spec `text`; `path` only names it in errors.
pub fn parse_str(path: &Path, text: &str) -> Result<Vec<Frame>, Error> {
    let spec: SpecFile = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
    let defaults = Defaults::resolve(
        &Ctx {
            path,
            place: Place::Defaults,
        },
        &spec.defaults,
    )?;
    let mut frames: Vec<Frame> = Vec::new();
    let mut file_bytes = PCAP_FILE_HEADER;
    let mut next_us: u64 = 0;
    let mut last_us: Option<u64> = None;
    for (index, f) in spec.frame.iter().enumerate() {
        let ctx = Ctx {
            path,
            place: Place::Frame(index),
        };
        let data = build_frame(&ctx, &defaults, f)?;

        let repeat = f.repeat.unwrap_or(1);
        if repeat == 0 {
            return Err(ctx.field("repeat", "must be at least 1"));
        }
        if repeat > MAX_FRAMES - frames.len() {
            return Err(ctx.field(
                "repeat",
                format!(
                    "{repeat} copies would take the capture past {MAX_FRAMES} frames \
                     ({} so far)",
                    frames.len()
                ),
            ));
        }
        file_bytes = (PCAP_RECORD_HEADER + data.len() as u64)
            .checked_mul(repeat as u64)
            .and_then(|b| b.checked_add(file_bytes))
            .filter(|&b| b <= pcap::MAX_FILE_BYTES)
            .ok_or_else(|| {
                ctx.field(
                    "repeat",
                    format!(
                        "{repeat} copies of {} bytes would take the capture past {} bytes",
                        data.len(),
                        pcap::MAX_FILE_BYTES
                    ),
                )
            })?;

        let start = match f.ts {
            Some(ts) => {
                if let Some(last) = last_us.filter(|&last| ts < last) {
                    return Err(ctx.field(
                        "ts",
                        format!("{ts} µs is earlier than the previous frame's {last} µs"),
                    ));
                }
                ts
            }
            None => next_us,
        };
        for k in 0..repeat as u64 {
            let us = k
                .checked_mul(defaults.ts_step_us)
                .and_then(|d| d.checked_add(start))
                .filter(|&us| us <= MAX_TS_US)
                .ok_or_else(|| {
                    ctx.field(
                        if k == 0 { "ts" } else { "repeat" },
                        format!(
                            "the timestamp would pass {MAX_TS_US} µs, the last a pcap file \
                             can hold"
                        ),
                    )
                })?;
            frames.push(Frame {
                ts: Duration::from_micros(us),
                data: data.clone(),
            });
            last_us = Some(us);
        }
        // Saturates: a frame after one at the very last timestamp fails the check above.
        next_us = last_us.unwrap_or(start).saturating_add(defaults.ts_step_us);
    }
    if let Some(r) = &spec.random {
        let ctx = Ctx {
            path,
            place: Place::Random,
        };
        let mix = r.resolve(&ctx, MAX_FRAMES - frames.len())?;
        for (k, data) in random_frames::generate(&mix).into_iter().enumerate() {
            let us = (k as u64)
                .checked_mul(defaults.ts_step_us)
                .and_then(|d| d.checked_add(next_us))
                .filter(|&us| us <= MAX_TS_US)
                .ok_or_else(|| {
                    ctx.field(
                        "frames",
                        format!("the timestamps would pass {MAX_TS_US} µs"),
                    )
                })?;
            file_bytes += PCAP_RECORD_HEADER + data.len() as u64;
            if file_bytes > pcap::MAX_FILE_BYTES {
                return Err(ctx.field(
                    "frames",
                    format!("the capture would pass {} bytes", pcap::MAX_FILE_BYTES),
                ));
            }
            frames.push(Frame {
                ts: Duration::from_micros(us),
                data,
            });
        }
    }
    Ok(frames)
}

/// Writes `frames` as a pcap file (microsecond timestamps) at `out`. The file appears only
/// when complete: on any error nothing is left at `out`.
pub fn write(frames: &[Frame], out: &Path) -> Result<(), Error> {
    let mut pcap = PcapOut::create(out, TsResolution::MicroSecond)?;
    for f in frames {
        pcap.write(f.ts, &f.data)?;
    }
    pcap.commit()?;
    Ok(())
}

fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> Error {
    let message = e.message().trim().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            Error::Toml {
                path: path.to_owned(),
                line,
                column,
                message,
            }
        }
        None => Error::TomlUnplaced {
            path: path.to_owned(),
            message,
        },
    }
}

// ---- The file as serde sees it. Addresses stay strings so errors can name the frame. ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SpecFile {
    #[serde(default)]
    defaults: DefaultsSpec,
    #[serde(default)]
    frame: Vec<FrameSpec>,
    random: Option<RandomSpec>,
}

/// `[random]`: seeded random frames after the listed ones (see `random_frames`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RandomSpec {
    seed: u64,
    frames: usize,
    min_size: Option<usize>,
    max_size: Option<usize>,
    vlan: Option<f64>,
    broadcast: Option<f64>,
    multicast: Option<f64>,
}

impl RandomSpec {
    /// The mix, checked; at most `room` frames.
    fn resolve(&self, ctx: &Ctx, room: usize) -> Result<Mix, Error> {
        let d = Mix::default();
        if self.frames == 0 || self.frames > room {
            return Err(ctx.field(
                "frames",
                format!("must be 1 to {room} (a spec holds at most {MAX_FRAMES} frames)"),
            ));
        }
        let min_size = self.min_size.unwrap_or(d.min_size);
        let max_size = self.max_size.unwrap_or(d.max_size);
        if !(DEFAULT_PAD_TO..=MAX_FRAME).contains(&min_size) {
            return Err(ctx.field(
                "min-size",
                format!("{min_size} is not in {DEFAULT_PAD_TO}..={MAX_FRAME}"),
            ));
        }
        if !(min_size..=MAX_FRAME).contains(&max_size) {
            return Err(ctx.field(
                "max-size",
                format!(
                    "{max_size} is not in {min_size}..={MAX_FRAME} (min-size..=the largest frame)"
                ),
            ));
        }
        let share = |field: &'static str, v: Option<f64>, default: f64| match v {
            None => Ok(default),
            Some(p) if (0.0..=1.0).contains(&p) => Ok(p),
            Some(p) => Err(ctx.field(field, format!("{p} is not a share in 0..=1"))),
        };
        Ok(Mix {
            seed: self.seed,
            frames: self.frames,
            min_size,
            max_size,
            vlan: share("vlan", self.vlan, d.vlan)?,
            broadcast: share("broadcast", self.broadcast, d.broadcast)?,
            multicast: share("multicast", self.multicast, d.multicast)?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct DefaultsSpec {
    #[serde(default)]
    eth: EthDefaults,
    #[serde(default)]
    ipv4: Ipv4Defaults,
    #[serde(default)]
    ipv6: Ipv6Defaults,
    ts_step_us: Option<u64>,
    pad_to: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct EthDefaults {
    src: Option<String>,
    dst: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Ipv4Defaults {
    src: Option<String>,
    dst: Option<String>,
    ttl: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Ipv6Defaults {
    src: Option<String>,
    dst: Option<String>,
    hop_limit: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FrameSpec {
    ts: Option<u64>,
    repeat: Option<usize>,
    pad_to: Option<usize>,
    #[serde(default)]
    eth: EthSpec,
    ipv4: Option<Ipv4Spec>,
    ipv6: Option<Ipv6Spec>,
    arp: Option<ArpSpec>,
    udp: Option<UdpSpec>,
    tcp: Option<TcpSpec>,
    icmpv4: Option<IcmpSpec>,
    icmpv6: Option<IcmpSpec>,
    payload: Option<String>,
    payload_hex: Option<String>,
    payload_len: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct EthSpec {
    src: Option<String>,
    dst: Option<String>,
    vlan: Option<VlanSpec>,
    ethertype: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct VlanSpec {
    id: u16,
    #[serde(default)]
    pcp: u8,
    #[serde(default)]
    dei: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Ipv4Spec {
    src: Option<String>,
    dst: Option<String>,
    ttl: Option<u8>,
    id: Option<u16>,
    df: Option<bool>,
    dscp: Option<u8>,
    ecn: Option<u8>,
    protocol: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Ipv6Spec {
    src: Option<String>,
    dst: Option<String>,
    hop_limit: Option<u8>,
    traffic_class: Option<u8>,
    flow_label: Option<u32>,
    next_header: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ArpSpec {
    op: ArpOp,
    sender_mac: Option<String>,
    sender_ip: String,
    target_mac: Option<String>,
    target_ip: String,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ArpOp {
    Request,
    Reply,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct UdpSpec {
    src_port: u16,
    dst_port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TcpSpec {
    src_port: u16,
    dst_port: u16,
    #[serde(default)]
    seq: u32,
    #[serde(default)]
    ack_num: u32,
    #[serde(default = "default_window")]
    window: u16,
    #[serde(default)]
    urgent_ptr: u16,
    #[serde(default)]
    flags: Vec<TcpFlag>,
}

fn default_window() -> u16 {
    u16::MAX
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum TcpFlag {
    Fin,
    Syn,
    Rst,
    Psh,
    Ack,
    Urg,
    Ece,
    Cwr,
    Ns,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct IcmpSpec {
    #[serde(rename = "type")]
    kind: EchoKind,
    #[serde(default)]
    id: u16,
    #[serde(default)]
    seq: u16,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum EchoKind {
    EchoRequest,
    EchoReply,
}

// ---- Checking and building. ----

/// The spec being built and the place in it, for errors.
struct Ctx<'a> {
    path: &'a Path,
    place: Place,
}

impl Ctx<'_> {
    fn field(&self, field: &'static str, why: impl Into<String>) -> Error {
        Error::Field {
            path: self.path.to_owned(),
            place: self.place,
            field,
            why: why.into(),
        }
    }

    fn frame(&self, why: impl Into<String>) -> Error {
        Error::Frame {
            path: self.path.to_owned(),
            place: self.place,
            why: why.into(),
        }
    }

    /// Parses an optional value of `field`; `what` names what it must be.
    fn parse_opt<T>(
        &self,
        field: &'static str,
        given: Option<&str>,
        parse: fn(&str) -> Option<T>,
        what: &str,
    ) -> Result<Option<T>, Error> {
        given
            .map(|s| parse(s).ok_or_else(|| self.field(field, format!("'{s}' is not {what}"))))
            .transpose()
    }

    /// The value of `field`: given in the frame, else from `[defaults]`, else an error.
    fn resolve<T>(
        &self,
        field: &'static str,
        given: Option<&str>,
        default: Option<T>,
        parse: fn(&str) -> Option<T>,
        what: &str,
    ) -> Result<T, Error> {
        let table = field.split('.').next().unwrap_or(field);
        self.parse_opt(field, given, parse, what)?
            .or(default)
            .ok_or_else(|| {
                self.field(
                    field,
                    format!("missing: give it in the frame or in [defaults.{table}]"),
                )
            })
    }

    /// Which of `keys` (name, present) are present: none or one, or an error.
    fn one_of(
        &self,
        keys: &[(&'static str, bool)],
        rule: &str,
    ) -> Result<Option<&'static str>, Error> {
        let given: Vec<&'static str> = keys.iter().filter(|k| k.1).map(|k| k.0).collect();
        match given.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            [a, b, ..] => Err(self.frame(format!("{a} and {b} are both given; {rule}"))),
        }
    }
}

const MAC_WHAT: &str = "a MAC address (six hex bytes like 02:00:00:00:00:01)";
const IPV4_WHAT: &str = "an IPv4 address";
const IPV6_WHAT: &str = "an IPv6 address";

fn parse_addr<T: FromStr>(s: &str) -> Option<T> {
    s.parse().ok()
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let mut digits = Vec::with_capacity(s.len());
    for (at, c) in s.chars().enumerate() {
        if c.is_whitespace() {
            continue;
        }
        let d = c
            .to_digit(16)
            .ok_or_else(|| format!("'{c}' at character {at} is not a hex digit"))?;
        digits.push(d as u8);
    }
    if digits.len() % 2 != 0 {
        return Err(format!(
            "{} hex digits is an odd number; each byte takes two",
            digits.len()
        ));
    }
    Ok(digits.chunks(2).map(|p| (p[0] << 4) | p[1]).collect())
}

/// `[defaults]`, checked.
struct Defaults {
    eth_src: Option<[u8; 6]>,
    eth_dst: Option<[u8; 6]>,
    ipv4_src: Option<Ipv4Addr>,
    ipv4_dst: Option<Ipv4Addr>,
    ttl: u8,
    ipv6_src: Option<Ipv6Addr>,
    ipv6_dst: Option<Ipv6Addr>,
    hop_limit: u8,
    ts_step_us: u64,
    pad_to: usize,
}

impl Defaults {
    fn resolve(ctx: &Ctx<'_>, d: &DefaultsSpec) -> Result<Self, Error> {
        let pad_to = d.pad_to.unwrap_or(DEFAULT_PAD_TO);
        check_pad_to(ctx, pad_to)?;
        Ok(Self {
            eth_src: ctx.parse_opt("eth.src", d.eth.src.as_deref(), parse_mac, MAC_WHAT)?,
            eth_dst: ctx.parse_opt("eth.dst", d.eth.dst.as_deref(), parse_mac, MAC_WHAT)?,
            ipv4_src: ctx.parse_opt("ipv4.src", d.ipv4.src.as_deref(), parse_addr, IPV4_WHAT)?,
            ipv4_dst: ctx.parse_opt("ipv4.dst", d.ipv4.dst.as_deref(), parse_addr, IPV4_WHAT)?,
            ttl: d.ipv4.ttl.unwrap_or(DEFAULT_HOP_LIMIT),
            ipv6_src: ctx.parse_opt("ipv6.src", d.ipv6.src.as_deref(), parse_addr, IPV6_WHAT)?,
            ipv6_dst: ctx.parse_opt("ipv6.dst", d.ipv6.dst.as_deref(), parse_addr, IPV6_WHAT)?,
            hop_limit: d.ipv6.hop_limit.unwrap_or(DEFAULT_HOP_LIMIT),
            ts_step_us: d.ts_step_us.unwrap_or(DEFAULT_TS_STEP_US),
            pad_to,
        })
    }
}

fn check_pad_to(ctx: &Ctx<'_>, pad_to: usize) -> Result<(), Error> {
    if pad_to > MAX_FRAME {
        return Err(ctx.field(
            "pad-to",
            format!("{pad_to} is more than the {MAX_FRAME}-byte frame limit"),
        ));
    }
    Ok(())
}

fn out_of_range(value: impl std::fmt::Display, max: impl std::fmt::Display) -> String {
    format!("{value} is out of range 0..={max}")
}

/// The frame's network layer.
enum Net<'a> {
    Ipv4(&'a Ipv4Spec),
    Ipv6(&'a Ipv6Spec),
    Arp(&'a ArpSpec),
    /// No network layer: the payload follows the Ethernet header, with this ethertype.
    Raw(u16),
}

/// The frame's transport layer.
enum Transport<'a> {
    Udp(&'a UdpSpec),
    Tcp(&'a TcpSpec),
    Icmpv4(&'a IcmpSpec),
    Icmpv6(&'a IcmpSpec),
}

fn build_frame(ctx: &Ctx<'_>, d: &Defaults, f: &FrameSpec) -> Result<Vec<u8>, Error> {
    let src = ctx.resolve(
        "eth.src",
        f.eth.src.as_deref(),
        d.eth_src,
        parse_mac,
        MAC_WHAT,
    )?;
    let dst = ctx.resolve(
        "eth.dst",
        f.eth.dst.as_deref(),
        d.eth_dst,
        parse_mac,
        MAC_WHAT,
    )?;
    let vlan = f
        .eth
        .vlan
        .as_ref()
        .map(|v| vlan_header(ctx, v))
        .transpose()?;
    let (payload, payload_key) = payload(ctx, f)?;
    let pad_to = f.pad_to.unwrap_or(d.pad_to);
    check_pad_to(ctx, pad_to)?;

    let net_key = ctx.one_of(
        &[
            ("ipv4", f.ipv4.is_some()),
            ("ipv6", f.ipv6.is_some()),
            ("arp", f.arp.is_some()),
        ],
        "a frame has at most one of ipv4, ipv6 and arp",
    )?;
    let transport_key = ctx.one_of(
        &[
            ("udp", f.udp.is_some()),
            ("tcp", f.tcp.is_some()),
            ("icmpv4", f.icmpv4.is_some()),
            ("icmpv6", f.icmpv6.is_some()),
        ],
        "a frame has at most one of udp, tcp, icmpv4 and icmpv6",
    )?;
    let net = match (&f.ipv4, &f.ipv6, &f.arp) {
        (Some(v4), ..) => Some(Net::Ipv4(v4)),
        (_, Some(v6), _) => Some(Net::Ipv6(v6)),
        (.., Some(arp)) => Some(Net::Arp(arp)),
        _ => None,
    };
    let net = match (net, f.eth.ethertype) {
        (Some(net), None) => net,
        (None, Some(ethertype)) => Net::Raw(ethertype),
        (Some(_), Some(_)) => {
            return Err(ctx.field(
                "eth.ethertype",
                format!(
                    "given with {}, which sets the ethertype itself",
                    net_key.unwrap_or_default()
                ),
            ))
        }
        (None, None) => {
            return Err(ctx.frame(
                "no network layer: give one of ipv4, ipv6 and arp, or eth.ethertype for a \
                 frame without one",
            ))
        }
    };
    let transport = match (&f.udp, &f.tcp, &f.icmpv4, &f.icmpv6) {
        (Some(u), ..) => Some(Transport::Udp(u)),
        (_, Some(t), ..) => Some(Transport::Tcp(t)),
        (_, _, Some(i), _) => Some(Transport::Icmpv4(i)),
        (.., Some(i)) => Some(Transport::Icmpv6(i)),
        _ => None,
    };
    if let (Some(t), Net::Raw(_) | Net::Arp(_)) = (transport_key, &net) {
        return Err(ctx.field(t, "needs ipv4 or ipv6"));
    }

    let eth = PacketBuilder::ethernet2(src, dst);
    let mut out = Vec::with_capacity(pad_to.max(64 + payload.len()));
    let ip = match net {
        Net::Ipv4(spec) => IpHeaders::Ipv4(
            ipv4_header(ctx, d, spec, transport_key)?,
            Default::default(),
        ),
        Net::Ipv6(spec) => IpHeaders::Ipv6(
            ipv6_header(ctx, d, spec, transport_key)?,
            Default::default(),
        ),
        Net::Arp(spec) => {
            if let Some(key) = payload_key {
                return Err(ctx.field(key, "an ARP frame has no payload (pad-to makes it longer)"));
            }
            let arp = arp_packet(ctx, spec, src, dst)?;
            let written = match vlan {
                Some(v) => eth.vlan(VlanHeader::Single(v)).arp(arp).write(&mut out),
                None => eth.arp(arp).write(&mut out),
            };
            written.map_err(|e| ctx.frame(format!("building the frame: {e}")))?;
            return finish(ctx, out, pad_to, payload_key);
        }
        Net::Raw(ethertype) => {
            // No network layer for PacketBuilder to follow: the headers, by etherparse's
            // own types.
            let ether_type = EtherType(ethertype);
            let eth = Ethernet2Header {
                source: src,
                destination: dst,
                ether_type: if vlan.is_some() {
                    EtherType::VLAN_TAGGED_FRAME
                } else {
                    ether_type
                },
            };
            out.extend_from_slice(&eth.to_bytes());
            if let Some(mut tag) = vlan {
                tag.ether_type = ether_type;
                out.extend_from_slice(&tag.to_bytes());
            }
            out.extend_from_slice(&payload);
            return finish(ctx, out, pad_to, payload_key);
        }
    };
    let (is_v4, protocol) = match &ip {
        IpHeaders::Ipv4(h, _) => (true, h.protocol),
        IpHeaders::Ipv6(h, _) => (false, h.next_header),
    };
    let step = match vlan {
        Some(v) => eth.vlan(VlanHeader::Single(v)).ip(ip),
        None => eth.ip(ip),
    };
    let written = match transport {
        Some(Transport::Udp(u)) => step.udp(u.src_port, u.dst_port).write(&mut out, &payload),
        Some(Transport::Tcp(t)) => step.tcp_header(tcp_header(t)).write(&mut out, &payload),
        Some(Transport::Icmpv4(i)) => {
            if !is_v4 {
                return Err(ctx.field("icmpv4", "needs ipv4 (icmpv6 goes with ipv6)"));
            }
            match i.kind {
                EchoKind::EchoRequest => step.icmpv4_echo_request(i.id, i.seq),
                EchoKind::EchoReply => step.icmpv4_echo_reply(i.id, i.seq),
            }
            .write(&mut out, &payload)
        }
        Some(Transport::Icmpv6(i)) => {
            if is_v4 {
                return Err(ctx.field("icmpv6", "needs ipv6 (icmpv4 goes with ipv4)"));
            }
            match i.kind {
                EchoKind::EchoRequest => step.icmpv6_echo_request(i.id, i.seq),
                EchoKind::EchoReply => step.icmpv6_echo_reply(i.id, i.seq),
            }
            .write(&mut out, &payload)
        }
        // No transport layer: `protocol` / `next-header` was given (ip_protocol checked).
        None => step.write(&mut out, protocol, &payload),
    };
    written.map_err(|e| match payload_key {
        Some(key) => ctx.field(key, format!("building the frame: {e}")),
        None => ctx.frame(format!("building the frame: {e}")),
    })?;
    finish(ctx, out, pad_to, payload_key)
}

/// Checks the built frame's size and pads it.
fn finish(
    ctx: &Ctx<'_>,
    mut out: Vec<u8>,
    pad_to: usize,
    payload_key: Option<&'static str>,
) -> Result<Vec<u8>, Error> {
    if out.len() > MAX_FRAME {
        return Err(ctx.field(
            payload_key.unwrap_or("payload"),
            format!(
                "the frame would be {} bytes, more than the {MAX_FRAME}-byte limit",
                out.len()
            ),
        ));
    }
    if out.len() < pad_to {
        out.resize(pad_to, 0);
    }
    Ok(out)
}

/// The payload bytes, and which key gave them.
fn payload(ctx: &Ctx<'_>, f: &FrameSpec) -> Result<(Vec<u8>, Option<&'static str>), Error> {
    let key = ctx.one_of(
        &[
            ("payload", f.payload.is_some()),
            ("payload-hex", f.payload_hex.is_some()),
            ("payload-len", f.payload_len.is_some()),
        ],
        "give one of payload, payload-hex and payload-len",
    )?;
    let bytes = match (&f.payload, &f.payload_hex, f.payload_len) {
        (Some(text), ..) => text.as_bytes().to_vec(),
        (_, Some(hex), _) => parse_hex(hex).map_err(|why| ctx.field("payload-hex", why))?,
        (.., Some(len)) => {
            if len > MAX_FRAME {
                return Err(ctx.field(
                    "payload-len",
                    format!("{len} bytes do not fit in a {MAX_FRAME}-byte frame"),
                ));
            }
            (0..len).map(|i| i as u8).collect()
        }
        _ => Vec::new(),
    };
    if bytes.len() > MAX_FRAME {
        return Err(ctx.field(
            key.unwrap_or("payload"),
            format!(
                "{} bytes do not fit in a {MAX_FRAME}-byte frame",
                bytes.len()
            ),
        ));
    }
    Ok((bytes, key))
}

fn vlan_header(ctx: &Ctx<'_>, v: &VlanSpec) -> Result<SingleVlanHeader, Error> {
    Ok(SingleVlanHeader {
        pcp: VlanPcp::try_new(v.pcp)
            .map_err(|_| ctx.field("eth.vlan.pcp", out_of_range(v.pcp, VlanPcp::MAX_U8)))?,
        drop_eligible_indicator: v.dei,
        vlan_id: VlanId::try_new(v.id)
            .map_err(|_| ctx.field("eth.vlan.id", out_of_range(v.id, VlanId::MAX_U16)))?,
        // Set by the builder (or below, for a raw ethertype).
        ether_type: EtherType(0),
    })
}

/// Checks `protocol` (or `next-header`) against the transport layer.
fn ip_protocol(
    ctx: &Ctx<'_>,
    field: &'static str,
    given: Option<u8>,
    transport_key: Option<&'static str>,
    ip: &str,
) -> Result<IpNumber, Error> {
    match (given, transport_key) {
        (Some(_), Some(t)) => {
            Err(ctx.field(field, format!("given with {t}, which sets it itself")))
        }
        (None, None) => Err(ctx.field(
            field,
            format!(
                "missing: a frame with {ip} but no udp, tcp, icmpv4 or icmpv6 needs the \
                 protocol number of its payload"
            ),
        )),
        // The builder sets the protocol of a transport layer.
        (p, _) => Ok(IpNumber(p.unwrap_or_default())),
    }
}

fn ipv4_header(
    ctx: &Ctx<'_>,
    d: &Defaults,
    s: &Ipv4Spec,
    transport_key: Option<&'static str>,
) -> Result<Ipv4Header, Error> {
    let src = ctx.resolve(
        "ipv4.src",
        s.src.as_deref(),
        d.ipv4_src,
        parse_addr,
        IPV4_WHAT,
    )?;
    let dst = ctx.resolve(
        "ipv4.dst",
        s.dst.as_deref(),
        d.ipv4_dst,
        parse_addr,
        IPV4_WHAT,
    )?;
    let dscp = s.dscp.unwrap_or(0);
    let ecn = s.ecn.unwrap_or(0);
    Ok(Ipv4Header {
        dscp: IpDscp::try_new(dscp)
            .map_err(|_| ctx.field("ipv4.dscp", out_of_range(dscp, IpDscp::MAX_U8)))?,
        ecn: IpEcn::try_new(ecn)
            .map_err(|_| ctx.field("ipv4.ecn", out_of_range(ecn, IpEcn::MAX_U8)))?,
        identification: s.id.unwrap_or(0),
        dont_fragment: s.df.unwrap_or(true),
        time_to_live: s.ttl.unwrap_or(d.ttl),
        protocol: ip_protocol(ctx, "ipv4.protocol", s.protocol, transport_key, "ipv4")?,
        source: src.octets(),
        destination: dst.octets(),
        // Lengths and the checksum are the builder's.
        ..Default::default()
    })
}

fn ipv6_header(
    ctx: &Ctx<'_>,
    d: &Defaults,
    s: &Ipv6Spec,
    transport_key: Option<&'static str>,
) -> Result<Ipv6Header, Error> {
    let src = ctx.resolve(
        "ipv6.src",
        s.src.as_deref(),
        d.ipv6_src,
        parse_addr,
        IPV6_WHAT,
    )?;
    let dst = ctx.resolve(
        "ipv6.dst",
        s.dst.as_deref(),
        d.ipv6_dst,
        parse_addr,
        IPV6_WHAT,
    )?;
    let flow_label = s.flow_label.unwrap_or(0);
    Ok(Ipv6Header {
        traffic_class: s.traffic_class.unwrap_or(0),
        flow_label: Ipv6FlowLabel::try_new(flow_label).map_err(|_| {
            ctx.field(
                "ipv6.flow-label",
                out_of_range(flow_label, Ipv6FlowLabel::MAX_U32),
            )
        })?,
        hop_limit: s.hop_limit.unwrap_or(d.hop_limit),
        next_header: ip_protocol(
            ctx,
            "ipv6.next-header",
            s.next_header,
            transport_key,
            "ipv6",
        )?,
        source: src.octets(),
        destination: dst.octets(),
        // The payload length is the builder's.
        ..Default::default()
    })
}

fn arp_packet(
    ctx: &Ctx<'_>,
    s: &ArpSpec,
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
) -> Result<ArpPacket, Error> {
    let (operation, target_mac) = match s.op {
        ArpOp::Request => (ArpOperation::REQUEST, [0; 6]),
        ArpOp::Reply => (ArpOperation::REPLY, eth_dst),
    };
    let sender_ip: Ipv4Addr = ctx.resolve(
        "arp.sender-ip",
        Some(&s.sender_ip),
        None,
        parse_addr,
        IPV4_WHAT,
    )?;
    let target_ip: Ipv4Addr = ctx.resolve(
        "arp.target-ip",
        Some(&s.target_ip),
        None,
        parse_addr,
        IPV4_WHAT,
    )?;
    Ok(ArpEthIpv4Packet {
        operation,
        sender_mac: ctx
            .parse_opt(
                "arp.sender-mac",
                s.sender_mac.as_deref(),
                parse_mac,
                MAC_WHAT,
            )?
            .unwrap_or(eth_src),
        sender_ipv4: sender_ip.octets(),
        target_mac: ctx
            .parse_opt(
                "arp.target-mac",
                s.target_mac.as_deref(),
                parse_mac,
                MAC_WHAT,
            )?
            .unwrap_or(target_mac),
        target_ipv4: target_ip.octets(),
    }
    .into())
}

fn tcp_header(t: &TcpSpec) -> TcpHeader {
    let mut h = TcpHeader::new(t.src_port, t.dst_port, t.seq, t.window);
    h.acknowledgment_number = t.ack_num;
    h.urgent_pointer = t.urgent_ptr;
    for flag in &t.flags {
        match flag {
            TcpFlag::Fin => h.fin = true,
            TcpFlag::Syn => h.syn = true,
            TcpFlag::Rst => h.rst = true,
            TcpFlag::Psh => h.psh = true,
            TcpFlag::Ack => h.ack = true,
            TcpFlag::Urg => h.urg = true,
            TcpFlag::Ece => h.ece = true,
            TcpFlag::Cwr => h.cwr = true,
            TcpFlag::Ns => h.ns = true,
        }
    }
    h
}

#[cfg(test)]
mod tests;
