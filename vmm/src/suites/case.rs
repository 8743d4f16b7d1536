//! Pcap-driven cases: `<suite>/<case>/case.toml` beside an optional input: `in.pcap`, or
//! `in.toml`, a packet spec (`crate::suites::pcap_spec`) built into a pcap for each run.
//!
//! A case says what the guest does (mode and port setup), how the device presents itself,
//! and on which transports it runs. The test harness (`tests/cases.rs`) runs it on the
//! in-process machine and on the KVM machine for each transport, checks what the mode
//! promises (io returns what the device delivered, macswap with its MACs swapped, txonly
//! sends what it was asked to), snapshots the guest log and the decoded output, and requires
//! both machines to agree byte for byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{
    BackendKind, DeviceArgs, GuestArgs, Input, MachineKind, Mode, Output, PortConfig, RingPath,
    RunConfig, Transport,
};
use crate::run::RunReport;
use device_model::pcap::{self, Frame};
use serde::Deserialize;

/// `case.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CaseSpec {
    /// What the case shows, in a sentence.
    pub description: String,
    /// io, macswap, rxonly, txonly or hostile.
    #[serde(deserialize_with = "de_mode")]
    pub mode: Mode,
    /// Transports to run on (default: both). The device is transitional unless
    /// `device.modern-only` is set.
    #[serde(default = "both_transports")]
    pub transports: Vec<Transport>,
    /// Datapaths to run on (default: every one that applies; see [`RingPath::applies`]).
    #[serde(default)]
    pub paths: Option<Vec<RingPath>>,
    /// The guest's port setup (`vlab run`'s guest flags).
    #[serde(default)]
    pub guest: GuestArgs,
    /// The device (`vlab run`'s device flags).
    #[serde(default)]
    pub device: DeviceArgs,
    #[serde(default)]
    pub expect: Expect,
    /// Backends the case does not apply to, each with the reason (rust-tap, vhost-kernel,
    /// vhost-user): `vlab compare` and the suites report them instead of running them.
    #[serde(default)]
    pub out_of_scope: BTreeMap<BackendKind, String>,
    /// Ports after the first (`[[port]]`): the guest gets a virtio-net function for each.
    #[serde(default)]
    pub port: Vec<CasePort>,
}

/// A further port of a case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CasePort {
    /// Its input beside case.toml: a capture, or a packet spec if it ends in `.toml`.
    pub input: Option<String>,
    /// Its backend, when the case pins one (default: the backend under test, as port 0).
    pub backend: Option<BackendKind>,
    /// Its device (the same keys as `[device]`).
    #[serde(default)]
    pub device: DeviceArgs,
}

fn de_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
    let name = String::deserialize(d)?;
    name.parse().map_err(|()| {
        serde::de::Error::custom(format!(
            "mode '{name}' is not one of io, macswap, rxonly, txonly, hostile"
        ))
    })
}

fn both_transports() -> Vec<Transport> {
    vec![Transport::Modern, Transport::Legacy]
}

/// What the case expects beyond its snapshot.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The guest's exit code (default 0: every check passed).
    #[serde(default)]
    pub exit: u32,
    /// Counters of the rust backend's run that must have these values.
    #[serde(default)]
    pub counters: ExpectCounters,
}

/// `[expect.counters]`: the device's counters after the run (unset ones are not checked).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExpectCounters {
    pub input_frames: Option<u64>,
    pub delivered: Option<u64>,
    pub output_frames: Option<u64>,
    pub filtered: Option<u64>,
    pub rx_dropped: Option<u64>,
    pub tx_dropped: Option<u64>,
    pub rx_malformed: Option<u64>,
    pub tx_malformed: Option<u64>,
    pub ctrl_ok: Option<u64>,
    pub ctrl_err: Option<u64>,
    pub sent_while_link_down: Option<u64>,
    pub refused_feature_sets: Option<u64>,
    pub refused_writes: Option<u64>,
    pub bad_accesses: Option<u64>,
    pub device_needs_reset: Option<u64>,
}

impl ExpectCounters {
    /// Names the first counter of `r` that is not what the case expects.
    pub fn check(&self, r: &RunReport) -> Result<(), String> {
        let c = &r.counters;
        let t = &r.transport;
        let pairs = [
            ("input-frames", self.input_frames, r.input_frames as u64),
            ("delivered", self.delivered, c.rx_delivered),
            ("output-frames", self.output_frames, r.output_frames),
            ("filtered", self.filtered, c.rx_filtered),
            ("rx-dropped", self.rx_dropped, c.rx_dropped),
            ("tx-dropped", self.tx_dropped, c.tx_dropped),
            ("rx-malformed", self.rx_malformed, c.rx_malformed),
            ("tx-malformed", self.tx_malformed, c.tx_malformed),
            ("ctrl-ok", self.ctrl_ok, c.ctrl_ok),
            ("ctrl-err", self.ctrl_err, c.ctrl_err),
            (
                "sent-while-link-down",
                self.sent_while_link_down,
                c.tx_while_link_down,
            ),
            (
                "refused-feature-sets",
                self.refused_feature_sets,
                t.refused_features,
            ),
            ("refused-writes", self.refused_writes, t.refused_writes),
            ("bad-accesses", self.bad_accesses, t.bad_accesses),
            (
                "device-needs-reset",
                self.device_needs_reset,
                r.device_errors,
            ),
        ];
        for (name, want, got) in pairs {
            if let Some(want) = want {
                if want != got {
                    return Err(format!("counter {name} is {got}, the case expects {want}"));
                }
            }
        }
        Ok(())
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
    #[error("{path}: {source}")]
    Toml {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{path}: mode {mode} needs an in.pcap or in.toml beside the case file")]
    NoInput { path: PathBuf, mode: String },
    #[error(transparent)]
    Pcap(#[from] pcap::Error),
    #[error(transparent)]
    Spec(#[from] crate::suites::pcap_spec::Error),
    #[error("running {case} on {machine}: {source}")]
    Run {
        case: String,
        machine: &'static str,
        #[source]
        source: crate::run::Error,
    },
}

/// One case on disk.
#[derive(Debug)]
pub struct Case {
    /// `<suite>/<case>`.
    pub name: String,
    pub dir: PathBuf,
    pub spec: CaseSpec,
    pub mode: Mode,
}

impl Case {
    /// Reads and checks `dir/case.toml`.
    pub fn load(name: String, dir: PathBuf) -> Result<Self, Error> {
        let path = dir.join("case.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let spec: CaseSpec = toml::from_str(&text).map_err(|source| Error::Toml {
            path: path.clone(),
            source,
        })?;
        let mode = spec.mode;
        if mode != Mode::TxOnly && !dir.join("in.pcap").is_file() && !dir.join("in.toml").is_file()
        {
            return Err(Error::NoInput {
                path,
                mode: mode.name().to_string(),
            });
        }
        Ok(Self {
            name,
            dir,
            spec,
            mode,
        })
    }

    pub fn input_path(&self) -> Option<PathBuf> {
        let p = self.dir.join("in.pcap");
        p.is_file().then_some(p)
    }

    /// The packet spec the input is built from, if the case has one instead of a pcap.
    pub fn spec_path(&self) -> Option<PathBuf> {
        let p = self.dir.join("in.toml");
        (p.is_file() && self.input_path().is_none()).then_some(p)
    }

    /// The input frames (none for a case without input).
    pub fn input(&self) -> Result<Vec<Frame>, Error> {
        if let Some(spec) = self.spec_path() {
            return Ok(crate::suites::pcap_spec::parse(&spec)?);
        }
        match self.input_path() {
            Some(p) => Ok(pcap::read(&p, usize::MAX)?.frames),
            None => Ok(Vec::new()),
        }
    }

    /// The input as a pcap file: `in.pcap`, or the spec built into `out_dir`.
    fn input_file(&self, out_dir: &Path) -> Result<Option<PathBuf>, Error> {
        let Some(spec) = self.spec_path() else {
            return Ok(self.input_path());
        };
        let built = out_dir.join(format!("{}-in.pcap", self.name.replace('/', "_")));
        if !built.is_file() {
            crate::suites::pcap_spec::write(&crate::suites::pcap_spec::parse(&spec)?, &built)?;
        }
        Ok(Some(built))
    }

    /// The datapaths the case runs on over `transport`, the reference (the one its own
    /// settings give: the first) first.
    pub fn paths(&self, transport: Transport) -> Vec<RingPath> {
        let s = &self.spec;
        RingPath::ALL
            .into_iter()
            .filter(|p| p.applies(self.mode, &s.guest, &s.device, transport))
            .filter(|p| s.paths.as_ref().is_none_or(|list| list.contains(p)))
            .collect()
    }

    /// Runs the case on `machine` over `transport` with the rust backend, writing the
    /// output capture under `out_dir`.
    pub fn run(
        &self,
        machine: MachineKind,
        transport: Transport,
        out_dir: &Path,
    ) -> Result<CaseRun, Error> {
        self.run_on(machine, transport, BackendKind::Rust, None, out_dir)
    }

    /// Runs the case on `machine` over `transport` with backend `target`, on datapath
    /// `path` (`None`: the one the case's settings give).
    pub fn run_on(
        &self,
        machine: MachineKind,
        transport: Transport,
        target: BackendKind,
        path: Option<RingPath>,
        out_dir: &Path,
    ) -> Result<CaseRun, Error> {
        let out = out_dir.join(format!(
            "{}-{}-{}-{}.pcap",
            machine.name(),
            transport.name(),
            path.map_or("own".into(), RingPath::name),
            target.name()
        ));
        let mut guest = GuestArgs {
            transport: Some(transport),
            ..self.spec.guest.clone()
        };
        if let Some(p) = path {
            p.apply(&mut guest);
        }
        let mut ports = vec![PortConfig {
            device: self.spec.device.clone(),
            backend: target.standalone(),
            input: match self.input_file(out_dir)? {
                Some(p) => Input::Pcap(p),
                None => Input::None,
            },
            output: Output::Pcap(out.clone()),
        }];
        let mut outs = vec![out];
        for (k, extra) in self.spec.port.iter().enumerate() {
            let k = k + 1;
            let out = outs[0].with_extension(format!("port{k}.pcap"));
            ports.push(PortConfig {
                device: extra.device.clone(),
                backend: extra.backend.unwrap_or(target).standalone(),
                input: match &extra.input {
                    Some(name) => Input::Pcap(self.port_input(name, k, out_dir)?),
                    None => Input::None,
                },
                output: Output::Pcap(out.clone()),
            });
            outs.push(out);
        }
        let cfg = RunConfig {
            machine,
            mode: self.mode,
            guest,
            ports,
            timeout: Duration::from_secs(60),
            ..RunConfig::default()
        };
        let report = crate::run::run(&cfg, Instant::now()).map_err(|source| Error::Run {
            case: match path {
                Some(p) => format!("{} ({}, {p}, {target})", self.name, transport.name()),
                None => format!("{} ({}, {target})", self.name, transport.name()),
            },
            machine: machine.name(),
            source,
        })?;
        let mut captures = Vec::new();
        for out in &outs {
            let bytes = std::fs::read(out).map_err(|source| Error::Io {
                path: out.clone(),
                source,
            })?;
            let frames = pcap::parse(out, &bytes, usize::MAX)?.frames;
            captures.push((bytes, frames));
        }
        let (pcap, frames) = captures.remove(0);
        Ok(CaseRun {
            report,
            pcap,
            frames,
            ports: captures.into_iter().map(|(_, f)| f).collect(),
        })
    }

    /// Port `k`'s input `name` beside case.toml as a capture (a packet spec is built into
    /// `out_dir`).
    fn port_input(&self, name: &str, k: usize, out_dir: &Path) -> Result<PathBuf, Error> {
        let path = self.dir.join(name);
        if !name.ends_with(".toml") {
            return Ok(path);
        }
        let built = out_dir.join(format!("{}-port{k}-in.pcap", self.name.replace('/', "_")));
        if !built.is_file() {
            crate::suites::pcap_spec::write(&crate::suites::pcap_spec::parse(&path)?, &built)?;
        }
        Ok(built)
    }
}

/// What one machine produced for a case.
#[derive(Debug)]
pub struct CaseRun {
    pub report: RunReport,
    /// Port 0's output capture, as written.
    pub pcap: Vec<u8>,
    pub frames: Vec<Frame>,
    /// The output of every further port, in port order.
    pub ports: Vec<Vec<Frame>>,
}

impl CaseRun {
    /// The snapshot: the verdict and the device's counters, the guest's log, then one
    /// decoded line per output frame. Everything in it is the same on every run.
    pub fn snapshot(&self) -> String {
        let r = &self.report;
        let c = &r.counters;
        let mut s = format!(
            "guest exit code: {}\ninput frames: {}\ndelivered to guest: {}\noutput frames: {}\n\
             filtered: {}; dropped: rx {} tx {}; malformed chains: rx {} tx {}\n\
             control commands: {} ok, {} refused; sent while link down: {}\n\
             transport: {} refused writes, {} refused feature sets, {} bad accesses; \
             DEVICE_NEEDS_RESET {} times\n\n",
            r.exit_code,
            r.input_frames,
            c.rx_delivered,
            r.output_frames,
            c.rx_filtered,
            c.rx_dropped,
            c.tx_dropped,
            c.rx_malformed,
            c.tx_malformed,
            c.ctrl_ok,
            c.ctrl_err,
            c.tx_while_link_down,
            r.transport.refused_writes,
            r.transport.refused_features,
            r.transport.bad_accesses,
            r.device_errors,
        );
        let f = &c.faults;
        // Only the frame faults: their counts follow from the seed; how many publishes were
        // delayed or interrupts withheld depends on timing.
        if f.dropped + f.duplicated + f.reordered > 0 {
            s.insert_str(
                s.len() - 1,
                &format!(
                    "faults: {} dropped, {} duplicated, {} reordered\n",
                    f.dropped, f.duplicated, f.reordered
                ),
            );
        }
        s.push_str("--- guest log\n");
        s.push_str(&String::from_utf8_lossy(&r.serial));
        s.push_str("--- output\n");
        s.push_str(&crate::suites::decode::frames(
            self.frames.iter().map(|f| f.data.as_slice()),
        ));
        for (k, frames) in self.ports.iter().enumerate() {
            let p = &self.report.ports[k + 1];
            s.push_str(&format!(
                "--- port {}: {} input frames, {} delivered, {} output frames\n",
                k + 1,
                p.input_frames,
                p.counters.rx_delivered,
                p.output_frames
            ));
            s.push_str(&crate::suites::decode::frames(
                frames.iter().map(|f| f.data.as_slice()),
            ));
        }
        s
    }
}

/// Every case under `root`: directories two levels down (`suite/case`) with a case.toml,
/// sorted by name.
pub fn discover(root: &Path) -> Result<Vec<Case>, Error> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let mut cases = Vec::new();
    let mut suites: Vec<_> = std::fs::read_dir(root)
        .map_err(io(root))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    suites.sort();
    for suite in suites {
        let mut dirs: Vec<_> = std::fs::read_dir(&suite)
            .map_err(io(&suite))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("case.toml").is_file())
            .collect();
        dirs.sort();
        for dir in dirs {
            let name = format!(
                "{}/{}",
                suite.file_name().unwrap_or_default().to_string_lossy(),
                dir.file_name().unwrap_or_default().to_string_lossy()
            );
            cases.push(Case::load(name, dir)?);
        }
    }
    Ok(cases)
}

/// What the case's mode promises about its output, given its input. Returns a description
/// of the first broken promise.
pub fn check_mode(case: &Case, input: &[Frame], run: &CaseRun) -> Result<(), String> {
    let out = &run.frames;
    let c = &run.report.counters;
    let g = &case.spec.guest;
    // Frames the device filtered or dropped never reached the guest; frames the guest's
    // VLAN offloads rewrote differ from the input by design. The snapshot says what came
    // out of those; here the count must still add up.
    let f = &c.faults;
    let unchanged = c.rx_filtered == 0
        && c.rx_dropped == 0
        && f.dropped + f.duplicated + f.reordered == 0
        && g.vlan_strip != Some(true)
        && g.vlan_insert.is_none();
    let all_through = || {
        // Injected faults drop input frames and add copies before the device sees them.
        let seen = (input.len() as u64 + f.duplicated).saturating_sub(f.dropped);
        if c.rx_delivered + c.rx_filtered + c.rx_dropped != seen {
            return Err(format!(
                "{} frames in ({} after faults), {} delivered, {} filtered, {} dropped",
                input.len(),
                seen,
                c.rx_delivered,
                c.rx_filtered,
                c.rx_dropped
            ));
        }
        Ok(())
    };
    match case.mode {
        Mode::Io | Mode::MacSwap if !unchanged => {
            all_through()?;
            // The device drops what it cannot send (a tag pushed a frame over the maximum).
            if out.len() as u64 + c.tx_dropped != c.rx_delivered {
                return Err(format!(
                    "{} frames delivered, {} out, {} dropped on tx",
                    c.rx_delivered,
                    out.len(),
                    c.tx_dropped
                ));
            }
        }
        Mode::Io | Mode::MacSwap if g.rxq.unwrap_or(1) > 1 => {
            // Several queues: each frame comes back once, grouped by the queue it was
            // steered to (rx queue k goes out tx queue k), so the promise is on the bytes,
            // whatever the order (the stamps follow the output's order).
            let swap = |d: &[u8]| {
                let mut d = d.to_vec();
                if case.mode == Mode::MacSwap && d.len() >= 12 {
                    for k in 0..6 {
                        d.swap(k, k + 6);
                    }
                }
                d
            };
            let mut want: Vec<Vec<u8>> = input.iter().map(|f| swap(&f.data)).collect();
            let mut got: Vec<Vec<u8>> = out.iter().map(|f| f.data.clone()).collect();
            want.sort();
            got.sort();
            if want != got {
                return Err(format!(
                    "{} frames in, {} out: not the same frames, in any order",
                    input.len(),
                    out.len()
                ));
            }
        }
        Mode::Io | Mode::MacSwap => {
            if out.len() != input.len() {
                return Err(format!("{} frames in, {} out", input.len(), out.len()));
            }
            for (i, (a, b)) in input.iter().zip(out).enumerate() {
                let mut want = a.clone();
                if case.mode == Mode::MacSwap {
                    for k in 0..6 {
                        want.data.swap(k, k + 6);
                    }
                }
                if *b != want {
                    return Err(format!(
                        "frame {i} is not the input{} (bytes or timestamp)",
                        if case.mode == Mode::MacSwap {
                            " with its MACs swapped"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
        Mode::RxOnly => {
            if !out.is_empty() {
                return Err(format!("rxonly transmitted {} frames", out.len()));
            }
            all_through()?;
        }
        Mode::TxOnly => {
            let pkts = g.pkts.unwrap_or(0);
            let vlan = if g.vlan_insert.is_some() { 4 } else { 0 };
            let size = usize::from(g.size.unwrap_or(64)) + vlan;
            if out.len() as u64 != pkts {
                return Err(format!("asked for {pkts} frames, got {}", out.len()));
            }
            if let Some((i, f)) = out.iter().enumerate().find(|(_, f)| f.data.len() != size) {
                return Err(format!("frame {i} is {} bytes, not {size}", f.data.len()));
            }
        }
        // The abuse decides what goes out (the snapshot shows it); every input frame must
        // still be accounted for.
        Mode::Hostile => all_through()?,
    }
    Ok(())
}
