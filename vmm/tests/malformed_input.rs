//! The malformed-input corpus (`testcases/malformed/`): bad captures and bad case files,
//! each given to every command that reads it. Each must get exit status 70 and one error
//! that names the file and says what `expected.toml` says, never a panic, and no output.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{case_dir, case_pcap, stderr, vlab, HARNESS_FAILURE};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    pcap: BTreeMap<String, PcapExpect>,
    case: BTreeMap<String, CaseExpect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PcapExpect {
    /// What `vlab run` says of it.
    error: String,
    /// `vlab pcap show` reads it: a valid capture whose frames only the device refuses.
    #[serde(default)]
    show: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseExpect {
    error: String,
    /// The line of the case file the error points at.
    line: Option<u32>,
    /// Whether the case gets an input capture beside it.
    #[serde(default = "yes")]
    input: bool,
}

fn yes() -> bool {
    true
}

fn corpus() -> PathBuf {
    case_dir("malformed")
}

fn expected() -> Expected {
    let path = corpus().join("expected.toml");
    toml::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Exit status 70, one line naming `file` and saying `error`, no panic.
fn assert_refused(what: &str, o: &std::process::Output, file: &Path, error: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(HARNESS_FAILURE), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    let first = err.lines().next().unwrap_or_default();
    let start = format!("vlab: error: {}: ", file.display());
    assert!(first.starts_with(&start), "{what}: names the file: {err}");
    assert!(err.contains(error), "{what}: expected {error:?} in: {err}");
}

#[test]
fn every_file_of_the_corpus_is_listed_and_every_listed_file_exists() {
    let e = expected();
    let listed: Vec<String> = e.pcap.keys().cloned().collect();
    assert_eq!(names(&corpus().join("pcap")), listed, "malformed/pcap/");
    let listed: Vec<String> = e.case.keys().cloned().collect();
    assert_eq!(names(&corpus().join("cases")), listed, "malformed/cases/");
}

#[test]
fn every_bad_capture_gets_one_clear_error_from_every_command() {
    for (name, e) in expected().pcap {
        let file = corpus().join("pcap").join(&name);
        let f = file.to_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.pcap");
        for machine in ["inprocess", "kvm"] {
            let o = vlab(&[
                "run",
                "--mode",
                "io",
                "-q",
                "--machine",
                machine,
                "--pcap-in",
                f,
                "--pcap-out",
                out.to_str().unwrap(),
            ]);
            assert_refused(&format!("{name}: run on {machine}"), &o, &file, &e.error);
            assert_eq!(o.stderr.iter().filter(|&&b| b == b'\n').count(), 1);
        }
        let sock = dir.path().join("b.sock");
        let o = vlab(&[
            "vhost-user-backend",
            "--socket",
            sock.to_str().unwrap(),
            "--pcap-in",
            f,
            "--pcap-out",
            out.to_str().unwrap(),
        ]);
        assert_refused(&format!("{name}: vhost-user-backend"), &o, &file, &e.error);
        assert_eq!(names(dir.path()), Vec::<String>::new(), "{name}: no output");

        let o = vlab(&["pcap", "show", f]);
        if e.show {
            assert_eq!(o.status.code(), Some(0), "{name}: show: {}", stderr(&o));
        } else {
            // `pcap show` takes any frame size: only the file's own faults count.
            let o_err = stderr(&o);
            assert_eq!(
                o.status.code(),
                Some(HARNESS_FAILURE),
                "{name}: show: {o_err}"
            );
            assert!(o_err.contains(&e.error), "{name}: show: {o_err}");
        }
    }
}

#[test]
fn every_bad_case_file_gets_an_error_naming_the_file_key_and_line() {
    let input = case_pcap("basic/io-mixed");
    for (name, e) in expected().case {
        let root = tempfile::tempdir().unwrap();
        let case = root.path().join("bad").join(name.trim_end_matches(".toml"));
        std::fs::create_dir_all(&case).unwrap();
        let file = case.join("case.toml");
        std::fs::copy(corpus().join("cases").join(&name), &file).unwrap();
        if e.input {
            std::fs::copy(&input, case.join("in.pcap")).unwrap();
        }
        for command in ["test", "compare"] {
            let o = vlab(&[command, case.to_str().unwrap()]);
            assert_refused(&format!("{name}: vlab {command}"), &o, &file, &e.error);
            if let Some(line) = e.line {
                let at = format!("at line {line}, column");
                assert!(stderr(&o).contains(&at), "{name}: {}", stderr(&o));
            }
        }
    }
}
