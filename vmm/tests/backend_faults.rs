//! Backends that are missing, busy, refuse, die or offer too little: each run fails with one
//! clear error naming the backend and the step, a non-zero status, nothing half-written,
//! and no TAP or child process left behind. Also the vhost-user backend process
//! (`vlab vhost-user-backend`) seen from outside: its output when its frontend dies.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    assert_fails, backend, interface_exists, spawn_endless_txonly, stderr, unique, vlab, wait,
};

fn case_pcap(name: &str) -> std::path::PathBuf {
    common::case_pcap(&format!("basic/{name}"))
}

#[test]
fn an_absent_vhost_user_socket_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nobody.sock");
    let o = vlab(&[
        "run",
        "--mode",
        "io",
        "-q",
        "--backend",
        "vhost-user",
        "--socket",
        sock.to_str().unwrap(),
    ]);
    assert_fails(
        &o,
        &format!(
            "vhost-user backend: connecting to {}: no such socket",
            sock.display()
        ),
    );
}

#[test]
fn a_socket_nobody_listens_on_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("stale.sock");
    // Bound and closed: the file stays, nothing accepts.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let o = vlab(&[
        "run",
        "--mode",
        "io",
        "-q",
        "--backend",
        "vhost-user",
        "--socket",
        sock.to_str().unwrap(),
    ]);
    assert_fails(&o, "vhost-user backend: connecting: ");
    assert!(stderr(&o).contains("Connection refused"), "{}", stderr(&o));
}

#[test]
fn a_backend_without_a_needed_feature_fails_negotiation() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("b.sock");
    let b = backend(&sock, &["--withhold", "mrg_rxbuf"]);
    let o = vlab(&[
        "run",
        "--mode",
        "io",
        "-q",
        "--backend",
        "vhost-user",
        "--socket",
        sock.to_str().unwrap(),
    ]);
    assert_fails(
        &o,
        "vhost-user backend: feature negotiation: the run needs mrg_rxbuf, which the backend \
         does not offer (it offers any_layout, indirect_desc, event_idx, version_1, ring_packed, \
         in_order)",
    );
    // The backend sees its frontend go and ends by itself.
    assert_eq!(wait(b, 10).status.code(), Some(0));
    // Offering less on our side too, the same pair works.
    let b = backend(&sock, &["--withhold", "mrg_rxbuf"]);
    let o = vlab(&[
        "run",
        "--mode",
        "txonly",
        "--pkts",
        "10",
        "-q",
        "--backend",
        "vhost-user",
        "--socket",
        sock.to_str().unwrap(),
        "--withhold",
        "mrg_rxbuf",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(wait(b, 10).status.code(), Some(0));
}

#[test]
fn a_backend_that_dies_mid_run_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("dies.sock");
    let mut b = backend(&sock, &[]);
    // A run far longer than the test: only the backend's death can end it early.
    let run = spawn_endless_txonly(&[
        "--timeout",
        "60",
        "--backend",
        "vhost-user",
        "--socket",
        sock.to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_millis(500));
    b.0.kill().unwrap();
    let t = Instant::now();
    let o = wait(run, 20);
    assert_fails(
        &o,
        "stopped because the backend failed: vhost-user backend: the backend closed its \
         connection during the run",
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "noticed in {:?}",
        t.elapsed()
    );
}

#[test]
fn the_backend_flushes_its_output_when_its_frontend_dies() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("f.sock");
    let out = dir.path().join("out.pcap");
    let b = backend(&sock, &["--pcap-out", out.to_str().unwrap()]);
    let mut run = spawn_endless_txonly(&[
        "--backend",
        "vhost-user",
        "--socket",
        sock.to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_millis(500));
    run.0.kill().unwrap();
    let o = wait(b, 10);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let cap = device_model::pcap::read(&out, usize::MAX).expect("a complete pcap");
    assert!(!cap.frames.is_empty());
    assert!(cap.frames.iter().all(|f| f.data.len() == 64));
    assert!(!sock.exists(), "the backend removes its socket");
}

#[test]
fn a_busy_tap_is_named_and_left_alone() {
    let name = unique("b");
    let held = device_model::tap::Tap::open(&name, 12, 1518).expect("creating a TAP");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.pcap");
    let o = vlab(&[
        "run",
        "--mode",
        "io",
        "-q",
        "--tap",
        &name,
        "--pcap-in",
        case_pcap("io-mixed").to_str().unwrap(),
        "--pcap-out",
        out.to_str().unwrap(),
    ]);
    assert_fails(
        &o,
        &format!("TAP {name} is busy: another process has it open"),
    );
    assert!(!out.exists(), "nothing half-written");
    assert!(interface_exists(&name), "the holder's TAP is untouched");
    drop(held);
    assert!(!interface_exists(&name));
}

#[test]
fn a_missing_backend_tap_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("t.sock");
    let b = backend(&sock, &[]);
    let name = unique("m");
    let out = dir.path().join("out.pcap");
    let o = vlab(&[
        "run",
        "--mode",
        "io",
        "-q",
        "--backend",
        "vhost-user",
        "--socket",
        sock.to_str().unwrap(),
        "--tap",
        &name,
        "--pcap-in",
        case_pcap("io-mixed").to_str().unwrap(),
        "--pcap-out",
        out.to_str().unwrap(),
    ]);
    assert_fails(&o, &format!("packet socket on {name}: no such interface"));
    assert!(!out.exists(), "nothing half-written");
    assert_eq!(wait(b, 10).status.code(), Some(0));
}

#[test]
fn vhost_kernel_without_vhost_net_names_the_device_and_removes_its_tap() {
    let name = unique("k");
    let o = vlab(&[
        "run",
        "--mode",
        "io",
        "-q",
        "--backend",
        "vhost-kernel",
        "--tap",
        &name,
        "--pcap-in",
        case_pcap("io-mixed").to_str().unwrap(),
    ]);
    if Path::new("/dev/vhost-net").exists() {
        // A host with vhost-net: the same command simply works.
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    } else {
        assert_fails(&o, "vhost-kernel backend: opening /dev/vhost-net: ");
    }
    assert!(!interface_exists(&name), "the TAP it created is gone");
}

#[test]
fn a_rust_tap_run_forwards_and_removes_its_tap() {
    let name = unique("r");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.pcap");
    let input = case_pcap("io-mixed");
    let o = vlab(&[
        "run",
        "--mode",
        "io",
        "-q",
        "--tap",
        &name,
        "--pcap-in",
        input.to_str().unwrap(),
        "--pcap-out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let a = device_model::pcap::read(&input, usize::MAX).unwrap().frames;
    let b = device_model::pcap::read(&out, usize::MAX).unwrap().frames;
    assert_eq!(a, b, "through the TAP and back, byte for byte");
    assert!(!interface_exists(&name));
}

#[test]
fn an_external_backends_run_reports_the_guests_figures_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("x.sock");
    let out = dir.path().join("out.pcap");
    let input = case_pcap("io-mixed");
    let b = backend(
        &sock,
        &[
            "--pcap-in",
            input.to_str().unwrap(),
            "--pcap-out",
            out.to_str().unwrap(),
        ],
    );
    let o = vlab(&[
        "run",
        "--mode",
        "io",
        "-q",
        "--backend",
        "vhost-user",
        "--socket",
        sock.to_str().unwrap(),
    ]);
    let summary = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{summary}{}", stderr(&o));
    let frames = device_model::pcap::read(&input, usize::MAX)
        .unwrap()
        .frames
        .len();
    assert!(
        summary.contains(&format!(
            "backend=vhost-user (external: figures from the guest's port statistics) \
             received={n} sent={n} errors=0 (the guest's counts include the end marker)",
            n = frames + 1
        )),
        "{summary}"
    );
    assert_eq!(wait(b, 10).status.code(), Some(0));
}
