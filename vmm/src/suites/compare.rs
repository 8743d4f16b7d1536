//! Differential runs: one case on several backends, each output against the rust backend's.
//!
//! The rust backend is the reference: the others must give the same guest verdict and the
//! same output frames, byte for byte and with the same timestamps. A case can put a backend
//! out of scope with a reason (`[out-of-scope]` in case.toml); a backend this machine cannot
//! run (no /dev/vhost-net) is reported as unavailable, with why.

use std::fmt;
use std::path::Path;

use device_model::pcap::Frame;

use crate::config::{BackendKind, MachineKind, RingPath, Transport};
use crate::suites::case::{Case, CaseRun, Error};

/// Where two outputs first part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// Index of the first frame that differs (or is missing on one side).
    pub frame: usize,
    pub field: String,
    pub reference: String,
    pub other: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frame {}: {}: rust {} vs {}",
            self.frame, self.field, self.reference, self.other
        )
    }
}

/// The first difference between two outputs, by frame and then by field: timestamp,
/// length, destination and source MAC, the two bytes after them (ethertype or TPID), then
/// the first differing byte.
pub fn first_difference(reference: &[Frame], other: &[Frame]) -> Option<Difference> {
    let diff = |frame, field: &str, a: String, b: String| {
        Some(Difference {
            frame,
            field: field.to_string(),
            reference: a,
            other: b,
        })
    };
    for (i, (a, b)) in reference.iter().zip(other).enumerate() {
        if a == b {
            continue;
        }
        let (x, y) = (&a.data, &b.data);
        if x.len() != y.len() {
            return diff(i, "length", x.len().to_string(), y.len().to_string());
        }
        let fields: [(&str, std::ops::Range<usize>); 3] = [
            ("destination MAC", 0..6),
            ("source MAC", 6..12),
            ("ethertype/TPID", 12..14),
        ];
        for (name, r) in fields {
            if let (Some(p), Some(q)) = (x.get(r.clone()), y.get(r)) {
                if p != q {
                    let show = |v: &[u8]| {
                        if name.ends_with("MAC") {
                            crate::suites::decode::mac(v)
                        } else {
                            format!("0x{}", hex(v))
                        }
                    };
                    return diff(i, name, show(p), show(q));
                }
            }
        }
        if let Some(k) = x.iter().zip(y.iter()).position(|(p, q)| p != q) {
            return diff(
                i,
                &format!("byte {k}"),
                format!("0x{:02x}", x[k]),
                format!("0x{:02x}", y[k]),
            );
        }
        return diff(i, "timestamp", format!("{:?}", a.ts), format!("{:?}", b.ts));
    }
    if reference.len() != other.len() {
        let i = reference.len().min(other.len());
        return diff(
            i,
            "frame count",
            reference.len().to_string(),
            other.len().to_string(),
        );
    }
    None
}

fn hex(v: &[u8]) -> String {
    v.iter().map(|x| format!("{x:02x}")).collect()
}

/// What one backend did with one case.
#[derive(Debug)]
pub enum Outcome {
    /// Same verdict and the same output as the rust backend.
    Same { exit_code: u32, frames: usize },
    /// The guest's verdict differs.
    Verdict { reference: u32, other: u32 },
    /// Same verdict, different output.
    Differs(Difference),
    /// The case says the backend does not apply, and why.
    OutOfScope(String),
    /// This machine cannot run it, and why.
    Unavailable(String),
    /// The run itself failed.
    Failed(String),
}

impl Outcome {
    /// Whether the outcome is acceptable (not an unexplained difference or failure).
    pub fn ok(&self) -> bool {
        matches!(self, Outcome::Same { .. } | Outcome::OutOfScope(_))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Same { exit_code, frames } => write!(
                f,
                "same as rust (guest exit code {exit_code}, {frames} frames out)"
            ),
            Outcome::Verdict { reference, other } => {
                write!(f, "DIFFERS: guest exit code: rust {reference} vs {other}")
            }
            Outcome::Differs(d) => write!(f, "DIFFERS: {d}"),
            Outcome::OutOfScope(why) => write!(f, "out of scope: {why}"),
            Outcome::Unavailable(why) => write!(f, "UNAVAILABLE here: {why}"),
            Outcome::Failed(why) => write!(f, "FAILED: {why}"),
        }
    }
}

/// Compares `other` with the rust backend's `reference` run.
pub fn judge(reference: &CaseRun, other: &CaseRun) -> Outcome {
    let (r, o) = (reference.report.exit_code, other.report.exit_code);
    if r != o {
        return Outcome::Verdict {
            reference: r,
            other: o,
        };
    }
    if let Some(d) = first_difference(&reference.frames, &other.frames) {
        return Outcome::Differs(d);
    }
    // Every further port's output too, named by its port.
    for (k, (r, o)) in reference.ports.iter().zip(&other.ports).enumerate() {
        if let Some(mut d) = first_difference(r, o) {
            d.field = format!("port {}: {}", k + 1, d.field);
            return Outcome::Differs(d);
        }
    }
    Outcome::Same {
        exit_code: o,
        frames: other.frames.len() + other.ports.iter().map(Vec::len).sum::<usize>(),
    }
}

/// Runs `case` over `transport` on `machine` with the rust backend on the case's own
/// datapath, and then with each of `targets` on `path` (`None`: the case's own; the rust
/// backend is then the reference and not run twice); returns the reference run and each
/// target's outcome. Outputs go to `out_dir`.
pub fn compare_case(
    case: &Case,
    transport: Transport,
    machine: MachineKind,
    targets: &[BackendKind],
    path: Option<RingPath>,
    out_dir: &Path,
) -> Result<(CaseRun, Vec<(BackendKind, Outcome)>), Error> {
    let reference = case.run_on(machine, transport, BackendKind::Rust, None, out_dir)?;
    compare_with(case, &reference, transport, machine, targets, path, out_dir)
        .map(|outcomes| (reference, outcomes))
}

/// Runs `case` with each of `targets` on `path` and judges each against `reference`.
pub fn compare_with(
    case: &Case,
    reference: &CaseRun,
    transport: Transport,
    machine: MachineKind,
    targets: &[BackendKind],
    path: Option<RingPath>,
    out_dir: &Path,
) -> Result<Vec<(BackendKind, Outcome)>, Error> {
    let mut outcomes = Vec::new();
    let rerun = |t: &&BackendKind| **t != BackendKind::Rust || path.is_some();
    for &t in targets.iter().filter(rerun) {
        let outcome = if let Some(why) = case.spec.out_of_scope.get(&t) {
            Outcome::OutOfScope(why.clone())
        } else if let Some(why) = t.unavailable() {
            Outcome::Unavailable(why)
        } else {
            match case.run_on(machine, transport, t, path, out_dir) {
                Ok(run) => judge(reference, &run),
                Err(e) => Outcome::Failed(e.to_string()),
            }
        };
        outcomes.push((t, outcome));
    }
    Ok(outcomes)
}

/// Tallies of a comparison over many cases.
#[derive(Debug, Default)]
pub struct Tally {
    pub same: usize,
    pub out_of_scope: usize,
    pub unavailable: usize,
    pub differ: usize,
    pub failed: usize,
}

impl Tally {
    pub fn add(&mut self, o: &Outcome) {
        match o {
            Outcome::Same { .. } => self.same += 1,
            Outcome::OutOfScope(_) => self.out_of_scope += 1,
            Outcome::Unavailable(_) => self.unavailable += 1,
            Outcome::Verdict { .. } | Outcome::Differs(_) => self.differ += 1,
            Outcome::Failed(_) => self.failed += 1,
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} same as rust, {} differ, {} failed, {} out of scope, {} unavailable",
            self.same, self.differ, self.failed, self.out_of_scope, self.unavailable
        )
    }
}

/// The cases under `path`: a case directory, a suite of them, or a directory of suites.
pub fn load_cases(path: &Path) -> Result<Vec<Case>, Error> {
    let name_of = |p: &Path, depth: usize| {
        let parts: Vec<String> = p
            .components()
            .rev()
            .take(depth)
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        parts.into_iter().rev().collect::<Vec<_>>().join("/")
    };
    if path.join("case.toml").is_file() {
        return Ok(vec![Case::load(name_of(path, 2), path.to_path_buf())?]);
    }
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut dirs: Vec<_> = std::fs::read_dir(path)
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    if dirs.iter().any(|d| d.join("case.toml").is_file()) {
        return dirs
            .into_iter()
            .filter(|d| d.join("case.toml").is_file())
            .map(|d| Case::load(name_of(&d, 2), d))
            .collect();
    }
    crate::suites::case::discover(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::backend::unique_tap_name;
    use std::time::Duration;

    fn f(data: &[u8]) -> Frame {
        Frame {
            ts: Duration::from_micros(5),
            data: data.to_vec(),
        }
    }

    fn frame(dst: u8, ty: u16, byte: u8) -> Frame {
        let mut d = vec![dst; 6];
        d.extend([2, 0, 0, 0, 0, 1]);
        d.extend(ty.to_be_bytes());
        d.extend([byte; 46]);
        f(&d)
    }

    #[test]
    fn names_the_first_differing_frame_and_field() {
        let a = vec![frame(1, 0x800, 0), frame(1, 0x800, 0), frame(1, 0x800, 0)];
        assert_eq!(first_difference(&a, &a), None);
        let mut b = a.clone();
        b[1] = frame(2, 0x800, 0);
        let d = first_difference(&a, &b).unwrap();
        assert_eq!(
            d.to_string(),
            "frame 1: destination MAC: rust 01:01:01:01:01:01 vs 02:02:02:02:02:02"
        );
        b[1] = frame(1, 0x86dd, 0);
        assert_eq!(first_difference(&a, &b).unwrap().field, "ethertype/TPID");
        b[1] = frame(1, 0x800, 7);
        let d = first_difference(&a, &b).unwrap();
        assert_eq!((d.field.as_str(), d.other.as_str()), ("byte 14", "0x07"));
        b[1] = a[1].clone();
        b[1].ts = Duration::from_micros(6);
        assert_eq!(first_difference(&a, &b).unwrap().field, "timestamp");
        let d = first_difference(&a, &a[..2]).unwrap();
        assert_eq!((d.frame, d.field.as_str()), (2, "frame count"));
        let mut c = a.clone();
        c[0].data.pop();
        assert_eq!(first_difference(&a, &c).unwrap().field, "length");
    }

    #[test]
    fn tap_names_are_unique_and_fit_ifnamsiz() {
        let a = unique_tap_name();
        let b = unique_tap_name();
        assert_ne!(a, b);
        assert!(a.len() <= 15, "{a}");
    }
}
