//! Faults of the harness itself, seen from outside: a datapath thread that panics, SIGINT
//! and SIGTERM during a run, a vhost-user backend process stopped by a signal. Each time
//! vlab exits non-zero with one line naming what failed, the output capture is valid and
//! holds every frame captured until then, and no TAP device is left behind.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    backend, case_pcap, interface_exists, spawn_endless_txonly, spawn_vlab, stderr, stdout, unique,
    vlab, wait, Reaped, HARNESS_FAILURE,
};
use device_model::pcap::{self, Frame};

/// Every frame of a capture that must be valid.
fn frames(path: &Path) -> Vec<Frame> {
    pcap::read(path, usize::MAX)
        .unwrap_or_else(|e| panic!("a valid capture: {e}"))
        .frames
}

fn signal(child: &Reaped, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.0.id()).unwrap();
    // SAFETY: kill(2) on a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// Waits until the run has written its first frames: the output's temporary file beside
/// the destination has grown past the pcap header.
fn wait_for_traffic(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let grown = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.metadata().is_ok_and(|m| m.len() > 4096));
        if grown {
            return;
        }
        assert!(Instant::now() < deadline, "no traffic in 20 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_datapath_panic_fails_the_run_and_keeps_the_frames_before_it() {
    let input = case_pcap("basic/io-mixed");
    let sent = frames(&input);
    for machine in ["inprocess", "kvm"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.pcap");
        let o = vlab(&[
            "run",
            "--mode",
            "io",
            "-q",
            "--machine",
            machine,
            "--panic-after",
            "5",
            "--pcap-in",
            input.to_str().unwrap(),
            "--pcap-out",
            out.to_str().unwrap(),
        ]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(HARNESS_FAILURE), "{machine}: {err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("vlab: error: stopped because the backend failed: the datapath thread panicked: injected by --panic-after 5"),
            "{machine}: {err}"
        );
        assert!(
            last.ends_with(&format!(
                "{} keeps the 5 frames captured before",
                out.display()
            )),
            "{machine}: {err}"
        );
        assert_eq!(
            frames(&out),
            sent[..5],
            "{machine}: the first five, as sent"
        );
    }
}

#[test]
fn sigint_and_sigterm_stop_a_run_and_keep_a_valid_capture() {
    for (machine, sig, code, name) in [
        ("kvm", libc::SIGINT, 130, "SIGINT"),
        ("inprocess", libc::SIGTERM, 143, "SIGTERM"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.pcap");
        // Far more frames than the test waits for: only the signal ends it.
        let run = spawn_endless_txonly(&[
            "--size",
            "64",
            "--machine",
            machine,
            "--pcap-out",
            out.to_str().unwrap(),
        ]);
        wait_for_traffic(dir.path());
        signal(&run, sig);
        let t = Instant::now();
        let o = wait(run, 20);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{machine}: {err}");
        assert!(
            err.contains(&format!("vlab: error: interrupted by {name}: ")),
            "{machine}: {err}"
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let kept = frames(&out);
        assert!(!kept.is_empty(), "{machine}: frames before the signal");
        assert!(kept.iter().all(|f| f.data.len() == 64), "{machine}");
        assert!(
            err.contains(&format!("keeps the {} frames captured before", kept.len())),
            "{machine}: the message counts the frames kept: {err}"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.pcap"], "{machine}: no temporary file left");
    }
}

#[test]
fn sigterm_during_a_tap_run_removes_the_tap() {
    let name = unique("s");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.pcap");
    let run = spawn_endless_txonly(&["--tap", &name, "--pcap-out", out.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !interface_exists(&name) {
        assert!(Instant::now() < deadline, "the TAP never appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    signal(&run, libc::SIGTERM);
    let o = wait(run, 20);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(143), "{err}");
    assert!(err.contains("interrupted by SIGTERM"), "{err}");
    assert!(!interface_exists(&name), "the TAP vlab created is gone");
    // What the harness captured on the TAP before the signal, as a valid capture.
    assert!(frames(&out).iter().all(|f| f.data.len() == 64));
}

#[test]
fn the_vhost_user_backend_flushes_and_removes_its_socket_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("b.sock");
    let out = dir.path().join("out.pcap");

    // Stopped while nobody is connected: it ends at once, with an empty but valid capture.
    let idle = backend(&sock, &["--pcap-out", out.to_str().unwrap()]);
    signal(&idle, libc::SIGTERM);
    let o = wait(idle, 5);
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    assert!(stdout(&o).contains("stopped by SIGTERM"), "{}", stdout(&o));
    assert!(!sock.exists(), "the socket is removed");
    assert_eq!(frames(&out), []);

    // Stopped mid-run: the output keeps what the guest sent, and the frontend's run fails
    // naming the backend.
    let b = backend(&sock, &["--pcap-out", out.to_str().unwrap()]);
    let run = spawn_endless_txonly(&[
        "--backend",
        "vhost-user",
        "--socket",
        sock.to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_millis(500));
    signal(&b, libc::SIGTERM);
    let o = wait(b, 10);
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    assert!(!sock.exists(), "the socket is removed");
    let kept = frames(&out);
    assert!(!kept.is_empty() && kept.iter().all(|f| f.data.len() == 64));
    assert!(
        stdout(&o).contains(&format!("out={}", kept.len())),
        "{}",
        stdout(&o)
    );
    let r = wait(run, 10);
    assert_eq!(r.status.code(), Some(HARNESS_FAILURE));
    assert!(
        stderr(&r).contains("vhost-user backend: the backend closed its connection"),
        "{}",
        stderr(&r)
    );
}

#[test]
fn sigint_stops_a_suite_and_reports_what_ran() {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testcases");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let run = spawn_vlab(&[
        "test",
        suite.to_str().unwrap(),
        "--jobs",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    signal(&run, libc::SIGINT);
    let o = wait(run, 30);
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let text = report.to_string();
    assert!(
        text.contains("not run: interrupted by SIGINT"),
        "the jobs left are reported as not run"
    );
    assert!(
        stdout(&o).contains("PASS "),
        "some verdicts came before: {}",
        stdout(&o)
    );
}
