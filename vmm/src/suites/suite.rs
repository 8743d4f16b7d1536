//! Suites: every case on every transport it names, every datapath that applies to it, on
//! both machines and every backend in scope and available here, with one verdict per
//! (case, transport, path, backend).
//!
//! The checks are the ones `cargo test -p testcases` makes, from the same functions:
//! - rust on the case's own path (its reference, the first of [`Case::paths`]): the
//!   in-process run ends with the exit code the case expects, keeps its mode's promise and
//!   its expected counters, matches its stored snapshot (`out.<transport>.snap`), and the
//!   KVM machine gives the same capture, guest log and exit code, byte for byte;
//! - rust on any other path (on KVM), and any other backend on every path: the reference's
//!   verdict and output (`vlab compare`). One snapshot per case: the output does not depend
//!   on the path.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::config::args::Transport;
use crate::config::{BackendKind, MachineKind, RingPath};
use crate::suites::case::{check_mode, Case, CaseRun};
use crate::suites::compare::compare_with;

/// The in-process rust run of `case`, checked against what the case expects.
pub fn reference(case: &Case, transport: Transport, dir: &Path) -> Result<CaseRun, String> {
    let input = case.input().map_err(|e| e.to_string())?;
    let local = case
        .run(MachineKind::InProcess, transport, dir)
        .map_err(|e| e.to_string())?;
    let want = case.spec.expect.exit;
    if local.report.exit_code != want {
        return Err(format!(
            "in-process guest exit code {}, the case expects {want}\n--- guest log\n{}",
            local.report.exit_code,
            String::from_utf8_lossy(&local.report.serial)
        ));
    }
    if want == 0 {
        // A port's promise holds for one port; with several, the topology decides where
        // frames go and the snapshot says what came out of each.
        if case.spec.port.is_empty() {
            check_mode(case, &input, &local).map_err(|e| format!("in-process: {e}"))?;
        }
    }
    case.spec
        .expect
        .counters
        .check(&local.report)
        .map_err(|e| format!("in-process: {e}"))?;
    Ok(local)
}

/// The KVM machine must give what the in-process one gave (`local`), byte for byte.
pub fn same_on_kvm(
    case: &Case,
    transport: Transport,
    local: &CaseRun,
    dir: &Path,
) -> Result<(), String> {
    let kvm = case
        .run(MachineKind::Kvm, transport, dir)
        .map_err(|e| e.to_string())?;
    if kvm.pcap != local.pcap {
        let first = kvm
            .frames
            .iter()
            .zip(&local.frames)
            .position(|(a, b)| a != b)
            .unwrap_or(kvm.frames.len().min(local.frames.len()));
        return Err(format!(
            "KVM and in-process captures differ: {} vs {} frames, first difference at frame {first}",
            kvm.frames.len(),
            local.frames.len()
        ));
    }
    if kvm.report.serial != local.report.serial {
        return Err(format!(
            "KVM and in-process guest logs differ:\n--- kvm\n{}\n--- in-process\n{}",
            String::from_utf8_lossy(&kvm.report.serial),
            String::from_utf8_lossy(&local.report.serial)
        ));
    }
    if kvm.report.exit_code != local.report.exit_code {
        return Err(format!(
            "exit codes differ: kvm {} in-process {}",
            kvm.report.exit_code, local.report.exit_code
        ));
    }
    Ok(())
}

/// The rust backend's in-process runs of each case and transport on the case's own path,
/// made once and shared by every job judged against them.
#[derive(Default)]
pub struct References {
    runs: Mutex<HashMap<CaseOn, Arc<OnceLock<Reference>>>>,
}

/// A case by name, on a transport.
type CaseOn = (String, Transport);

/// A reference run, or why it could not be made.
type Reference = Result<Arc<CaseRun>, String>;

impl References {
    /// The reference run of `case` over `transport`, made on first use (jobs that need it
    /// at the same time wait for the one making it).
    pub fn get(&self, case: &Case, transport: Transport) -> Reference {
        let cell = self
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((case.name.clone(), transport))
            .or_default()
            .clone();
        cell.get_or_init(|| {
            let dir = tempfile::tempdir().map_err(|e| format!("a scratch directory: {e}"))?;
            case.run(MachineKind::InProcess, transport, dir.path())
                .map(Arc::new)
                .map_err(|e| format!("the reference run: {e}"))
        })
        .clone()
    }
}

/// The case on backend `target` and datapath `path` must give the rust backend's verdict
/// and output on its own path: in-process, but the KVM guest for vhost-kernel (which runs
/// only where the host has vhost-net) and for rust on another path.
pub fn on_backend(
    case: &Case,
    transport: Transport,
    target: BackendKind,
    path: Option<RingPath>,
    refs: &References,
    dir: &Path,
) -> Result<(), String> {
    if let Some(why) = target.unavailable() {
        return Err(format!("{target} cannot run here: {why}"));
    }
    let machine = match target {
        BackendKind::VhostKernel | BackendKind::Rust => MachineKind::Kvm,
        _ => MachineKind::InProcess,
    };
    let reference = refs.get(case, transport)?;
    let outcomes = compare_with(case, &reference, transport, machine, &[target], path, dir)
        .map_err(|e| e.to_string())?;
    match outcomes.first() {
        Some((_, o)) if o.ok() => Ok(()),
        Some((_, o)) => Err(format!("{target}: {o}")),
        None => Err("no outcome".into()),
    }
}

/// The snapshot file of `case` on `transport` (insta's format: a header between two `---`
/// lines, then the snapshot).
pub fn snapshot_path(case: &Case, transport: Transport) -> std::path::PathBuf {
    case.dir.join(format!("out.{}.snap", transport.name()))
}

/// Compares `snapshot` with the stored one; names the first line that differs.
pub fn check_snapshot(case: &Case, transport: Transport, snapshot: &str) -> Result<(), String> {
    let path = snapshot_path(case, transport);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (record it with `cargo insta test -p testcases --accept`)",
            path.display()
        )
    })?;
    let body = text
        .strip_prefix("---\n")
        .and_then(|rest| rest.split_once("\n---\n"))
        .map(|(_, body)| body)
        .ok_or_else(|| format!("{}: not an insta snapshot", path.display()))?;
    let (want, got) = (body.trim_end(), snapshot.trim_end());
    if want == got {
        return Ok(());
    }
    let (n, w, g) = want
        .lines()
        .chain(std::iter::repeat(""))
        .zip(got.lines().chain(std::iter::repeat("")))
        .enumerate()
        .find(|(_, (w, g))| w != g)
        .map(|(n, (w, g))| (n + 1, w, g))
        .unwrap_or((0, "", ""));
    Err(format!(
        "the snapshot differs from {} at line {n}:\n  stored: {w}\n  now:    {g}\n\
         (review with `cargo insta test -p testcases --review`)",
        path.display()
    ))
}

/// One verdict of a suite run.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// `<suite>/<case>`.
    pub case: String,
    pub transport: Transport,
    pub path: RingPath,
    pub backend: BackendKind,
    pub outcome: Outcome,
    pub duration: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    /// Not run, and why: out of scope for the case, or not available on this machine.
    Skipped(String),
}

impl Verdict {
    /// `suite/case::transport::path::backend`, as the cargo test trials are named.
    pub fn name(&self) -> String {
        verdict_name(&self.case, self.transport, self.path, self.backend)
    }
}

/// `suite/case::transport::path::backend`.
pub fn verdict_name(
    case: &str,
    transport: Transport,
    path: RingPath,
    backend: BackendKind,
) -> String {
    format!("{case}::{}::{path}::{}", transport.name(), backend.name())
}

/// What a suite run covers.
#[derive(Default)]
pub struct Plan {
    /// Backends to run besides rust (which always runs: it is the reference).
    pub targets: Vec<BackendKind>,
    /// Run only verdicts whose name contains one of these (all when empty).
    pub filters: Vec<String>,
    /// Times each job runs; its verdict passes only if every run passes.
    pub repeat: u32,
    /// The reference runs the jobs are judged against.
    pub refs: References,
}

/// One unit of work: a case on a transport, datapath and backend.
#[derive(Clone, Copy)]
pub struct Job<'a> {
    pub case: &'a Case,
    pub transport: Transport,
    pub path: RingPath,
    /// Whether `path` is the case's own (its snapshot's).
    pub reference: bool,
    pub backend: BackendKind,
    pub repeat: u32,
    refs: &'a References,
}

impl Plan {
    /// The jobs for `cases`, in order.
    pub fn jobs<'a>(&'a self, cases: &'a [Case]) -> Vec<Job<'a>> {
        let mut jobs = Vec::new();
        for case in cases {
            for &transport in &case.spec.transports {
                for (k, path) in case.paths(transport).into_iter().enumerate() {
                    let backends = std::iter::once(BackendKind::Rust).chain(
                        self.targets
                            .iter()
                            .copied()
                            .filter(|t| *t != BackendKind::Rust),
                    );
                    for backend in backends {
                        let name = verdict_name(&case.name, transport, path, backend);
                        if self.filters.is_empty()
                            || self.filters.iter().any(|f| name.contains(f.as_str()))
                        {
                            jobs.push(Job {
                                case,
                                transport,
                                path,
                                reference: k == 0,
                                backend,
                                repeat: self.repeat.max(1),
                                refs: &self.refs,
                            });
                        }
                    }
                }
            }
        }
        jobs
    }
}

impl Job<'_> {
    /// Runs the job to its verdict.
    pub fn run(&self) -> Verdict {
        let t0 = Instant::now();
        let outcome = self.outcome();
        self.verdict(outcome, t0.elapsed())
    }

    /// The verdict of a job skipped for `why`.
    fn not_run(&self, why: String) -> Verdict {
        self.verdict(Outcome::Skipped(why), Duration::ZERO)
    }

    fn verdict(&self, outcome: Outcome, duration: Duration) -> Verdict {
        Verdict {
            case: self.case.name.clone(),
            transport: self.transport,
            path: self.path,
            backend: self.backend,
            outcome,
            duration,
        }
    }

    fn outcome(&self) -> Outcome {
        if let Some(why) = self.case.spec.out_of_scope.get(&self.backend) {
            return Outcome::Skipped(format!("out of scope: {why}"));
        }
        if let Some(why) = self.backend.unavailable() {
            return Outcome::Skipped(format!("unavailable here: {why}"));
        }
        for k in 1..=self.repeat {
            match self.once() {
                Outcome::Fail(why) if self.repeat > 1 => {
                    return Outcome::Fail(format!("repetition {k} of {}: {why}", self.repeat))
                }
                Outcome::Pass => {}
                other => return other,
            }
        }
        Outcome::Pass
    }

    /// One run of the job.
    fn once(&self) -> Outcome {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => return Outcome::Fail(format!("a scratch directory: {e}")),
        };
        let r = match self.backend {
            BackendKind::Rust if self.reference => reference(self.case, self.transport, dir.path())
                .and_then(|local| {
                    check_snapshot(self.case, self.transport, &local.snapshot())?;
                    same_on_kvm(self.case, self.transport, &local, dir.path())
                }),
            t => on_backend(
                self.case,
                self.transport,
                t,
                Some(self.path),
                self.refs,
                dir.path(),
            ),
        };
        match r {
            Ok(()) => Outcome::Pass,
            Err(e) => Outcome::Fail(e),
        }
    }
}

/// Runs `jobs` on `parallel` threads; `done` sees each verdict as it comes. Returns the
/// verdicts in job order.
pub fn run_jobs(
    jobs: &[Job<'_>],
    parallel: usize,
    done: &(dyn Fn(&Verdict) + Sync),
) -> Vec<Verdict> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let verdicts: Mutex<Vec<Option<Verdict>>> = Mutex::new(vec![None; jobs.len()]);
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, jobs.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else {
                    break;
                };
                let v = match crate::signals::received() {
                    // Stopped: the jobs left are reported, not run.
                    Some(sig) => job.not_run(format!("not run: interrupted by {sig}")),
                    None => job.run(),
                };
                done(&v);
                verdicts.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(v);
            });
        }
    });
    verdicts
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

/// Counts per backend.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub pass: usize,
    pub fail: usize,
    pub skipped: usize,
}

/// Pass/fail/skipped per backend, in [`BackendKind::ALL`] order (backends with no verdict left
/// out).
pub fn counts(verdicts: &[Verdict]) -> Vec<(BackendKind, Counts)> {
    BackendKind::ALL
        .into_iter()
        .filter_map(|t| {
            let mut c = Counts::default();
            for v in verdicts.iter().filter(|v| v.backend == t) {
                match v.outcome {
                    Outcome::Pass => c.pass += 1,
                    Outcome::Fail(_) => c.fail += 1,
                    Outcome::Skipped(_) => c.skipped += 1,
                }
            }
            (c != Counts::default()).then_some((t, c))
        })
        .collect()
}

/// The summary table, then every failure with its message.
pub fn summary(verdicts: &[Verdict], elapsed: Duration) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<13} {:>5} {:>5} {:>8}",
        "backend", "pass", "fail", "skipped"
    );
    for (t, c) in counts(verdicts) {
        let _ = writeln!(
            s,
            "{:<13} {:>5} {:>5} {:>8}",
            t.name(),
            c.pass,
            c.fail,
            c.skipped
        );
    }
    // Why whole backends were skipped, once each.
    let mut reasons: Vec<(BackendKind, &str)> = Vec::new();
    for v in verdicts {
        if let Outcome::Skipped(why) = &v.outcome {
            if why.starts_with("unavailable") && !reasons.iter().any(|(t, _)| *t == v.backend) {
                reasons.push((v.backend, why));
            }
        }
    }
    for (t, why) in reasons {
        let _ = writeln!(s, "{t}: {why}");
    }
    let failed: Vec<&Verdict> = verdicts
        .iter()
        .filter(|v| matches!(v.outcome, Outcome::Fail(_)))
        .collect();
    for v in &failed {
        if let Outcome::Fail(why) = &v.outcome {
            let _ = writeln!(s, "\nFAIL {}: {why}", v.name());
        }
    }
    let _ = writeln!(
        s,
        "\nvlab test: {} verdicts in {:.1} s: {}",
        verdicts.len(),
        elapsed.as_secs_f64(),
        if failed.is_empty() {
            "all passed".to_string()
        } else {
            format!("{} FAILED", failed.len())
        }
    );
    s
}

/// JUnit XML: one test suite per case suite, one test case per verdict.
pub fn junit(verdicts: &[Verdict], elapsed: Duration) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new("vlab test");
    report.set_time(elapsed);
    let mut suites: Vec<TestSuite> = Vec::new();
    for v in verdicts {
        let suite_name = v.case.split('/').next().unwrap_or_default().to_string();
        if suites.last().is_none_or(|s| s.name.as_str() != suite_name) {
            suites.push(TestSuite::new(suite_name));
        }
        let status = match &v.outcome {
            Outcome::Pass => TestCaseStatus::success(),
            Outcome::Fail(why) => {
                let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                st.set_message(why.lines().next().unwrap_or_default());
                st.set_description(why.as_str());
                st
            }
            Outcome::Skipped(why) => {
                let mut st = TestCaseStatus::skipped();
                st.set_message(why.as_str());
                st
            }
        };
        let mut tc = TestCase::new(v.name(), status);
        tc.set_classname(v.case.as_str());
        tc.set_time(v.duration);
        if let Some(s) = suites.last_mut() {
            s.add_test_case(tc);
        }
    }
    report.add_test_suites(suites);
    report
        .to_string()
        .unwrap_or_else(|e| format!("<!-- {e} -->"))
}

/// JSON: every verdict, and the counts per backend.
pub fn json(verdicts: &[Verdict], elapsed: Duration) -> serde_json::Value {
    let list: Vec<serde_json::Value> = verdicts
        .iter()
        .map(|v| {
            let (outcome, message) = match &v.outcome {
                Outcome::Pass => ("pass", None),
                Outcome::Fail(m) => ("fail", Some(m.as_str())),
                Outcome::Skipped(m) => ("skipped", Some(m.as_str())),
            };
            serde_json::json!({
                "name": v.name(),
                "case": v.case,
                "transport": v.transport.name(),
                "backend": v.backend.name(),
                "outcome": outcome,
                "message": message,
                "seconds": v.duration.as_secs_f64(),
            })
        })
        .collect();
    let per_backend: serde_json::Map<String, serde_json::Value> = counts(verdicts)
        .into_iter()
        .map(|(t, c)| {
            (
                t.name().to_string(),
                serde_json::json!({"pass": c.pass, "fail": c.fail, "skipped": c.skipped}),
            )
        })
        .collect();
    serde_json::json!({
        "passed": verdicts.iter().all(|v| !matches!(v.outcome, Outcome::Fail(_))),
        "seconds": elapsed.as_secs_f64(),
        "backends": per_backend,
        "verdicts": list,
    })
}
