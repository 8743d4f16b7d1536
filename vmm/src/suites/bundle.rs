//! Bug bundles: everything needed to run a run again, somewhere else, and to tell whether it
//! did the same.
//!
//! `vlab run ... --record DIR` writes DIR/:
//! - `bundle.toml`: the whole configuration (the same `[guest]` and `[device]` tables as a
//!   case file, fault seeds included), the versions that ran it (vlab's version and the
//!   SHA-256 of its binary and of the guest image), and what came out (exit code,
//!   negotiated features, output frame count and SHA-256);
//! - `in.pcap` (a copy of the input), `out.pcap` (the output), `serial.log` (the guest's log).
//!
//! `vlab replay DIR` runs the configuration again on `in.pcap` and reports `identical`, or
//! the first divergence: the frame, the field, the recorded and the new value. Nothing in a
//! bundle names a path outside it, so it replays on any machine with vlab.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{
    BackendKind, DeviceArgs, GuestArgs, Input, MachineKind, Mode, Output, PortConfig, RunConfig,
};
use crate::run::RunReport;
use crate::suites::compare::{first_difference, Difference};

/// Bumped when the format changes in a way an older vlab cannot read.
pub const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("writing the bundle description: {0}")]
    Write(#[from] toml::ser::Error),
    #[error("{path}: bundle format {found}, this vlab reads format {FORMAT}")]
    Format { path: PathBuf, found: u32 },
    #[error("{path}: {what} '{value}' is not known to this vlab")]
    Value {
        path: PathBuf,
        what: &'static str,
        value: String,
    },
    #[error(transparent)]
    Pcap(#[from] device_model::pcap::Error),
    #[error("replaying: {0}")]
    Run(#[from] crate::run::Error),
}

/// `bundle.toml`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Description {
    pub format: u32,
    pub vlab_version: String,
    pub vlab_sha256: String,
    /// The guest image's, for the KVM machine.
    pub guest_image_sha256: Option<String>,
    pub machine: String,
    pub mode: String,
    pub backend: BackendKind,
    /// Whether traffic went through a TAP (its name is chosen afresh on replay).
    pub tap: bool,
    pub ram_mib: u64,
    pub timeout_secs: u64,
    /// Whether in.pcap is part of the bundle (modes with input).
    pub input: bool,
    pub guest: GuestArgs,
    pub device: DeviceArgs,
    pub result: Recorded,
}

/// What the recorded run produced.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Recorded {
    pub exit_code: u32,
    /// Features the driver accepted, by name.
    pub negotiated: Vec<String>,
    pub output_frames: u64,
    pub output_sha256: Option<String>,
}

fn sha256_file(path: &Path) -> Result<String, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(hex(&Sha256::digest(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn feature_names(bits: u64) -> Vec<String> {
    device_model::net::features::NAMES
        .iter()
        .filter(|(_, b)| bits & b != 0)
        .map(|(n, _)| n.to_string())
        .collect()
}

/// Where a run that records into `dir` writes its output: straight into the bundle.
pub fn output_path(dir: &Path) -> PathBuf {
    dir.join("out.pcap")
}

/// Writes the bundle of a finished run of `cfg` into `dir` (created if needed). The run's
/// output must already be at [`output_path`] when it has one.
pub fn record(
    dir: &Path,
    cfg: &RunConfig,
    report: &RunReport,
    image: Option<&Path>,
) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let input = match &cfg.port().input {
        Input::Pcap(p) => {
            let to = dir.join("in.pcap");
            if p != &to {
                std::fs::copy(p, &to).map_err(io(p))?;
            }
            true
        }
        _ => false,
    };
    let serial = dir.join("serial.log");
    std::fs::write(&serial, &report.serial).map_err(io(&serial))?;
    let out = output_path(dir);
    let exe = std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))?;
    let desc = Description {
        format: FORMAT,
        vlab_version: env!("CARGO_PKG_VERSION").to_string(),
        vlab_sha256: sha256_file(&exe)?,
        guest_image_sha256: image.map(sha256_file).transpose()?,
        machine: cfg.machine.name().to_string(),
        mode: cfg.mode.name().to_string(),
        backend: cfg.port().backend.kind(),
        tap: cfg.port().backend.tap().is_some(),
        ram_mib: cfg.ram >> 20,
        timeout_secs: cfg.timeout.as_secs(),
        input,
        guest: cfg.guest.clone(),
        device: cfg.port().device.clone(),
        result: Recorded {
            exit_code: report.exit_code,
            negotiated: feature_names(report.features),
            output_frames: report.output_frames,
            output_sha256: out.is_file().then(|| sha256_file(&out)).transpose()?,
        },
    };
    let path = dir.join("bundle.toml");
    let text = format!(
        "# A vlab bug bundle: `vlab replay {}` runs it again.\n{}",
        dir.display(),
        toml::to_string(&desc)?
    );
    std::fs::write(&path, text).map_err(io(&path))
}

/// Reads `dir/bundle.toml`.
pub fn load(dir: &Path) -> Result<Description, Error> {
    let path = dir.join("bundle.toml");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let desc: Description = toml::from_str(&text).map_err(|source| Error::Parse {
        path: path.clone(),
        source,
    })?;
    if desc.format != FORMAT {
        return Err(Error::Format {
            path,
            found: desc.format,
        });
    }
    Ok(desc)
}

/// The configuration a bundle describes, reading from the bundle and writing to `out`.
pub fn config(dir: &Path, desc: &Description, out: &Path) -> Result<RunConfig, Error> {
    let bad = |what, value: &str| Error::Value {
        path: dir.join("bundle.toml"),
        what,
        value: value.to_string(),
    };
    let machine = match desc.machine.as_str() {
        "kvm" => MachineKind::Kvm,
        "inprocess" => MachineKind::InProcess,
        m => return Err(bad("machine", m)),
    };
    let mode: Mode = desc.mode.parse().map_err(|()| bad("mode", &desc.mode))?;
    Ok(RunConfig {
        machine,
        mode,
        guest: desc.guest.clone(),
        ports: vec![PortConfig {
            device: desc.device.clone(),
            // Bundles before rust-tap had a name said `rust` with `tap = true`.
            backend: match (desc.backend, desc.tap) {
                (BackendKind::Rust, true) => BackendKind::RustTap,
                (kind, _) => kind,
            }
            .standalone(),
            input: if desc.input {
                Input::Pcap(dir.join("in.pcap"))
            } else {
                Input::None
            },
            output: Output::Pcap(out.to_path_buf()),
        }],
        ram: desc.ram_mib << 20,
        timeout: Duration::from_secs(desc.timeout_secs),
        ..RunConfig::default()
    })
}

/// What a replay found.
#[derive(Debug)]
pub enum Replay {
    Identical,
    /// The guest's verdict differs.
    ExitCode {
        recorded: u32,
        now: u32,
    },
    /// The first output frame that differs.
    Output(Difference),
    /// Same frames, but the guest's log differs at this line.
    Log {
        line: usize,
        recorded: String,
        now: String,
    },
}

/// Where a bundle runs again: by default where it was recorded.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayOn {
    pub backend: Option<BackendKind>,
    pub machine: Option<MachineKind>,
}

/// A replay's verdict, and where it ran.
#[derive(Debug)]
pub struct Replayed {
    pub verdict: Replay,
    pub backend: BackendKind,
    pub machine: MachineKind,
    /// Whether it ran on another backend than the recorded one: then, as `vlab compare`
    /// does, the guest's verdict and the output are compared, not its log (a vhost
    /// backend's run ends on an end marker the guest is told of).
    pub elsewhere: bool,
    /// Faults the recorded run had that only the rust backend injects, left out here.
    pub not_reproducible: Vec<&'static str>,
}

/// Runs the bundle in `dir` again, where `on` says, and compares.
pub fn replay(dir: &Path, on: ReplayOn) -> Result<(Description, Replayed), Error> {
    let desc = load(dir)?;
    let scratch = tempfile::tempdir().map_err(|source| Error::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let out = scratch.path().join("out.pcap");
    let mut cfg = config(dir, &desc, &out)?;
    let recorded_on = cfg.port().backend.kind();
    if let Some(m) = on.machine {
        cfg.machine = m;
    }
    let mut not_reproducible = Vec::new();
    if let Some(kind) = on.backend.filter(|k| *k != recorded_on) {
        let port = cfg.port_mut();
        port.backend = kind.standalone();
        if kind != BackendKind::Rust {
            let (device, faults) = port.device.without_rust_faults();
            port.device = device;
            not_reproducible = faults;
        }
    }
    let backend = cfg.port().backend.kind();
    let done = |verdict| Replayed {
        verdict,
        backend,
        machine: cfg.machine,
        elsewhere: backend != recorded_on,
        not_reproducible: not_reproducible.clone(),
    };
    let report = crate::run::run(&cfg, std::time::Instant::now())?;
    if report.exit_code != desc.result.exit_code {
        let recorded = desc.result.exit_code;
        let now = report.exit_code;
        let r = done(Replay::ExitCode { recorded, now });
        return Ok((desc, r));
    }
    let read = |p: &Path| -> Result<Vec<device_model::pcap::Frame>, Error> {
        if p.is_file() {
            Ok(device_model::pcap::read(p, usize::MAX)?.frames)
        } else {
            Ok(Vec::new())
        }
    };
    let (recorded, now) = (read(&output_path(dir))?, read(&out)?);
    if let Some(d) = first_difference(&recorded, &now) {
        let r = done(Replay::Output(d));
        return Ok((desc, r));
    }
    if backend != recorded_on {
        let r = done(Replay::Identical);
        return Ok((desc, r));
    }
    let log_path = dir.join("serial.log");
    let log = std::fs::read(&log_path).map_err(|source| Error::Io {
        path: log_path,
        source,
    })?;
    let (a, b) = (
        String::from_utf8_lossy(&log),
        String::from_utf8_lossy(&report.serial),
    );
    if let Some((line, (r, n))) = a
        .lines()
        .chain(std::iter::repeat(""))
        .zip(b.lines().chain(std::iter::repeat("")))
        .take(a.lines().count().max(b.lines().count()))
        .enumerate()
        .find(|(_, (r, n))| r != n)
    {
        let r = done(Replay::Log {
            line: line + 1,
            recorded: r.to_string(),
            now: n.to_string(),
        });
        return Ok((desc, r));
    }
    let r = done(Replay::Identical);
    Ok((desc, r))
}
