//! What the tests that run `vlab` from outside share. Each test binary uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// vlab's exit status when vlab itself fails (bad input, a failed backend, a timeout).
pub const HARNESS_FAILURE: i32 = 70;

pub fn vlab_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vlab"))
}

pub fn vlab(args: &[&str]) -> Output {
    vlab_cmd().args(args).output().expect("vlab runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stdout then stderr, for messages.
pub fn both(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// `testcases/<suite>/<case>`.
pub fn case_dir(suite_case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testcases")
        .join(suite_case)
}

/// `testcases/<suite>/<case>/in.pcap`.
pub fn case_pcap(suite_case: &str) -> PathBuf {
    case_dir(suite_case).join("in.pcap")
}

/// A child process killed (and reaped) when dropped, whatever the test did.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
