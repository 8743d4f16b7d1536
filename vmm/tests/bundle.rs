//! Bug bundles from the outside: a faulty run recorded, moved elsewhere and replayed
//! identically; a bundle whose recorded output or seed was changed replays with the first
//! divergence named. And determinism: the same case gives the same bytes run after run.

mod common;

use std::path::{Path, PathBuf};

use common::{both as text, vlab};

fn mixed() -> PathBuf {
    common::case_pcap("basic/io-mixed")
}

/// Records an io run of the mixed case on `machine` into `dir`, with `extra` flags.
fn record(dir: &Path, machine: &str, extra: &[&str]) {
    let input = mixed();
    let mut args = vec![
        "run",
        "--mode",
        "io",
        "-q",
        "--machine",
        machine,
        "--pcap-in",
        input.to_str().unwrap(),
        "--record",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = vlab(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// Records a run with every frame fault on into `dir`.
fn record_faulty(dir: &Path, machine: &str) {
    let faults = [
        "--fault-seed",
        "6",
        "--drop",
        "0.15",
        "--duplicate",
        "0.15",
        "--reorder",
        "0.15",
    ];
    record(dir, machine, &faults);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_recorded_faulty_run_replays_identically_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let here = tmp.path().join("recorded");
    record_faulty(&here, "kvm");
    for f in ["bundle.toml", "in.pcap", "out.pcap", "serial.log"] {
        assert!(here.join(f).is_file(), "{f} in the bundle");
    }
    let desc = std::fs::read_to_string(here.join("bundle.toml")).unwrap();
    for key in [
        "fault-seed = 6",
        "guest-image-sha256 = \"",
        "vlab-sha256 = \"",
        "negotiated = [",
    ] {
        assert!(desc.contains(key), "{key} in {desc}");
    }
    // Another directory stands for another machine: nothing in the bundle points outside it.
    let there = tmp.path().join("elsewhere");
    copy_dir(&here, &there);
    std::fs::remove_dir_all(&here).unwrap();
    let o = vlab(&["replay", there.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("identical (exit code 0, 29 frames out)"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_changed_output_or_seed_replays_with_the_first_divergence() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    record_faulty(&dir, "inprocess");
    // Frame 5's first destination-MAC byte, as recorded, changed: 24-byte file header, then
    // per frame a 16-byte record header and the bytes.
    let out = dir.join("out.pcap");
    let frames = device_model::pcap::read(&out, usize::MAX).unwrap().frames;
    let mut bytes = std::fs::read(&out).unwrap();
    let at = 24 + frames[..5].iter().map(|f| 16 + f.data.len()).sum::<usize>() + 16;
    bytes[at] ^= 0xff;
    std::fs::write(&out, &bytes).unwrap();
    let o = vlab(&["replay", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("DIVERGES at frame 5: destination MAC: recorded fd:"),
        "{}",
        text(&o)
    );

    // Another seed makes other faults: the output diverges somewhere.
    let desc = dir.join("bundle.toml");
    let t = std::fs::read_to_string(&desc)
        .unwrap()
        .replace("fault-seed = 6", "fault-seed = 7");
    std::fs::write(&desc, t).unwrap();
    let o = vlab(&["replay", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("DIVERGES at frame "), "{}", text(&o));
}

#[test]
fn a_bad_bundle_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let o = vlab(&["replay", tmp.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(70));
    assert!(
        text(&o).contains("bundle.toml: No such file"),
        "{}",
        text(&o)
    );
    std::fs::write(tmp.path().join("bundle.toml"), "format = 99\n").unwrap();
    let o = vlab(&["replay", tmp.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(70));
    assert!(text(&o).contains("bundle.toml: "), "{}", text(&o));
}

/// A sample of the 100-run check (`make determinism` runs 100): the same faulty case, run
/// after run and on both machines, gives the same bytes.
#[test]
fn the_same_case_gives_the_same_bytes_every_time() {
    let tmp = tempfile::tempdir().unwrap();
    let mut first: Option<Vec<u8>> = None;
    for (i, machine) in ["inprocess"; 8].iter().chain(&["kvm"; 4]).enumerate() {
        let out = tmp.path().join(format!("out{i}.pcap"));
        let o = vlab(&[
            "run",
            "--mode",
            "io",
            "-q",
            "--machine",
            machine,
            "--pcap-in",
            mixed().to_str().unwrap(),
            "--pcap-out",
            out.to_str().unwrap(),
            "--fault-seed",
            "6",
            "--drop",
            "0.15",
            "--duplicate",
            "0.15",
            "--reorder",
            "0.15",
            "--ring",
            "16",
            "--burst",
            "4",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let bytes = std::fs::read(&out).unwrap();
        match &first {
            None => first = Some(bytes),
            Some(f) => assert!(*f == bytes, "run {i} ({machine}) differs from run 0"),
        }
    }
}

#[test]
fn a_bundle_replays_on_other_backends_and_machines() {
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("clean");
    record(&b, "kvm", &[]);
    let dir = b.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--backend", "vhost-user"],
            "io {dir} on kvm (vhost-user backend), recorded on kvm (rust backend): identical \
             (exit code 0, 27 frames out)",
        ),
        (
            &["--backend", "rust-tap", "--machine", "inprocess"],
            "io {dir} on inprocess (rust-tap backend), recorded on kvm (rust backend): \
             identical (exit code 0, 27 frames out)",
        ),
        (
            &["--machine", "inprocess"],
            "io {dir} on inprocess (rust backend), recorded on kvm (rust backend): identical \
             (exit code 0, 27 frames out)",
        ),
        (
            &["--backend", "rust"],
            "io {dir} on kvm (rust backend): identical (exit code 0, 27 frames out)",
        ),
    ];
    for (args, expect) in cases {
        let mut argv = vec!["replay", dir];
        argv.extend_from_slice(args);
        let o = vlab(&argv);
        let expect = expect.replace("{dir}", dir);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(&expect), "{args:?}: {}", text(&o));
    }
}

#[test]
fn rust_only_faults_are_named_when_replayed_on_another_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("faulty");
    record_faulty(&b, "inprocess");
    let o = vlab(&["replay", b.to_str().unwrap(), "--backend", "vhost-user"]);
    let t = text(&o);
    assert!(
        t.contains(
            "vlab replay: faults only the rust backend injects, not reproducible on \
             vhost-user: --drop, --duplicate, --reorder"
        ),
        "{t}"
    );
    // Without the faults the guest sees the case as it is: 27 frames, not the 29 recorded.
    assert!(
        t.contains("(vhost-user backend), recorded on inprocess (rust backend): DIVERGES"),
        "{t}"
    );
    assert_eq!(o.status.code(), Some(1), "{t}");
}
