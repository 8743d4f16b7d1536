//! Pcap-driven cases: `<suite>/<case>/case.toml` beside an optional `in.pcap`.
//!
//! A case says what the guest does (mode and settings); the test harness (`tests/cases.rs`)
//! runs it on the in-process machine and on the KVM machine, checks what the mode promises
//! (io returns the input unchanged, macswap with its MACs swapped, txonly sends what it was
//! asked to), snapshots the decoded output and requires both machines to agree byte for byte.

pub mod mixed;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use device_model::pcap::{self, Frame};
use serde::Deserialize;
use vmm::run::{GuestArgs, Input, MachineKind, Mode, Output, RunConfig, RunReport};

/// Directory holding the suites.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// `case.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseSpec {
    /// What the case shows, in a sentence.
    pub description: String,
    /// io, macswap, rxonly or txonly.
    pub mode: String,
    #[serde(default)]
    pub guest: GuestSpec,
}

/// The guest application's settings; unset ones take the application's defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    pub burst: Option<u16>,
    pub ring: Option<u16>,
    pub pkts: Option<u64>,
    pub size: Option<u16>,
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
    #[error("{path}: mode '{mode}' is not one of io, macswap, rxonly, txonly")]
    Mode { path: PathBuf, mode: String },
    #[error("{path}: mode {mode} needs an in.pcap beside the case file")]
    NoInput { path: PathBuf, mode: String },
    #[error(transparent)]
    Pcap(#[from] pcap::Error),
    #[error("running {case} on {machine}: {source}")]
    Run {
        case: String,
        machine: &'static str,
        #[source]
        source: vmm::run::Error,
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
        let mode = match spec.mode.as_str() {
            "io" => Mode::Io,
            "macswap" => Mode::MacSwap,
            "rxonly" => Mode::RxOnly,
            "txonly" => Mode::TxOnly,
            other => {
                return Err(Error::Mode {
                    path,
                    mode: other.to_string(),
                })
            }
        };
        if mode != Mode::TxOnly && !dir.join("in.pcap").is_file() {
            return Err(Error::NoInput {
                path,
                mode: spec.mode.clone(),
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

    /// The input frames (none for a case without in.pcap).
    pub fn input(&self) -> Result<Vec<Frame>, Error> {
        match self.input_path() {
            Some(p) => Ok(pcap::read(&p, usize::MAX)?.frames),
            None => Ok(Vec::new()),
        }
    }

    fn guest_args(&self) -> GuestArgs {
        let d = GuestArgs::default();
        let g = &self.spec.guest;
        GuestArgs {
            mode: self.mode,
            burst: g.burst.unwrap_or(d.burst),
            ring: g.ring.unwrap_or(d.ring),
            pkts: g.pkts.unwrap_or(d.pkts),
            size: g.size.unwrap_or(d.size),
        }
    }

    /// Runs the case on `machine`, writing the output capture under `out_dir`.
    pub fn run(&self, machine: MachineKind, out_dir: &Path) -> Result<CaseRun, Error> {
        let out = out_dir.join(format!("{}.pcap", machine.name()));
        let cfg = RunConfig {
            machine,
            input: match self.input_path() {
                Some(p) => Input::Pcap(p),
                None => Input::None,
            },
            output: Output::Pcap(out.clone()),
            guest: self.guest_args(),
            timeout: Duration::from_secs(60),
            ..RunConfig::default()
        };
        let report = vmm::run::run(&cfg, Instant::now()).map_err(|source| Error::Run {
            case: self.name.clone(),
            machine: machine.name(),
            source,
        })?;
        let bytes = std::fs::read(&out).map_err(|source| Error::Io {
            path: out.clone(),
            source,
        })?;
        let frames = pcap::parse(&out, &bytes, usize::MAX)?.frames;
        Ok(CaseRun {
            report,
            pcap: bytes,
            frames,
        })
    }
}

/// What one machine produced for a case.
#[derive(Debug)]
pub struct CaseRun {
    pub report: RunReport,
    /// The output capture, as written.
    pub pcap: Vec<u8>,
    pub frames: Vec<Frame>,
}

impl CaseRun {
    /// The snapshot: the verdict and counters, then one decoded line per output frame.
    pub fn snapshot(&self) -> String {
        let r = &self.report;
        let c = &r.counters;
        let mut s = format!(
            "guest exit code: {}\ninput frames: {}\ndelivered to guest: {}\noutput frames: {}\n\
             device drops: rx {} tx {}; malformed chains: rx {} tx {}\n\n",
            r.exit_code,
            r.input_frames,
            c.rx_delivered,
            r.output_frames,
            c.rx_dropped,
            c.tx_dropped,
            c.rx_malformed,
            c.tx_malformed
        );
        s.push_str(&vmm::decode::frames(
            self.frames.iter().map(|f| f.data.as_slice()),
        ));
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
    let same_len = || {
        if out.len() != input.len() {
            return Err(format!("{} frames in, {} out", input.len(), out.len()));
        }
        Ok(())
    };
    match case.mode {
        Mode::Io => {
            same_len()?;
            for (i, (a, b)) in input.iter().zip(out).enumerate() {
                if a != b {
                    return Err(format!(
                        "frame {i} differs from the input (bytes or timestamp)"
                    ));
                }
            }
        }
        Mode::MacSwap => {
            same_len()?;
            for (i, (a, b)) in input.iter().zip(out).enumerate() {
                let mut want = a.data.clone();
                for k in 0..6 {
                    want.swap(k, k + 6);
                }
                if b.data != want || b.ts != a.ts {
                    return Err(format!("frame {i} is not the input with its MACs swapped"));
                }
            }
        }
        Mode::RxOnly => {
            if !out.is_empty() {
                return Err(format!("rxonly transmitted {} frames", out.len()));
            }
            if run.report.counters.rx_delivered != input.len() as u64 {
                return Err(format!(
                    "{} frames in, {} delivered",
                    input.len(),
                    run.report.counters.rx_delivered
                ));
            }
        }
        Mode::TxOnly => {
            let want = case.guest_args();
            if out.len() as u64 != want.pkts {
                return Err(format!("asked for {} frames, got {}", want.pkts, out.len()));
            }
            if let Some((i, f)) = out
                .iter()
                .enumerate()
                .find(|(_, f)| f.data.len() != usize::from(want.size))
            {
                return Err(format!(
                    "frame {i} is {} bytes, not {}",
                    f.data.len(),
                    want.size
                ));
            }
        }
    }
    Ok(())
}
