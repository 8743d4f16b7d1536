//! What the tests that run `vlab` from outside share. Each test binary uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// `vlab ARGS` in the background, its output piped.
pub fn spawn_vlab(args: &[&str]) -> Reaped {
    let child = vlab_cmd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vlab runs");
    Reaped(child)
}

/// `vlab run --mode txonly` with `extra`, sending far more frames than any test waits for
/// (only a kill, a signal or a failure ends it), in the background.
pub fn spawn_endless_txonly(extra: &[&str]) -> Reaped {
    let mut args = vec!["run", "--mode", "txonly", "--pkts", "1000000000", "-q"];
    args.extend_from_slice(extra);
    spawn_vlab(&args)
}

/// A child process killed (and reaped) when dropped, whatever the test did.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A name unique to this test process and `tag`, short enough for an interface.
pub fn unique(tag: &str) -> String {
    format!("vf{tag}{}", std::process::id() % 1_000_000)
}

pub fn interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// `vlab vhost-user-backend --socket SOCK` with `extra`, once it listens.
pub fn backend(sock: &Path, extra: &[&str]) -> Reaped {
    let child = vlab_cmd()
        .args(["vhost-user-backend", "--socket", sock.to_str().unwrap()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vlab vhost-user-backend starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "the backend never listened");
        std::thread::sleep(Duration::from_millis(5));
    }
    Reaped(child)
}

/// Waits for `child` at most `secs`, then returns its output. Both pipes are drained while
/// it runs: a child with more to say than a pipe holds (a suite's verdict lines) would
/// otherwise block on its writes and never end.
pub fn wait(mut child: Reaped, secs: u64) -> Output {
    fn drain<R: std::io::Read + Send + 'static>(
        pipe: Option<R>,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let out = drain(child.0.stdout.take());
    let err = drain(child.0.stderr.take());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the process did not end in {secs} s"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

pub fn assert_fails(o: &Output, message: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(HARNESS_FAILURE), "stderr: {err}");
    assert!(err.contains(message), "expected {message:?} in: {err}");
}
