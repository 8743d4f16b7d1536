//! Wireshark's own reader (tshark) on what `vlab` writes: the captures open, every frame is
//! where and what it should be, and nothing is malformed. Needs tshark (`make setup`
//! installs it); without it these tests fail and say so.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn tshark(file: &Path, args: &[&str]) -> String {
    let o = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("tshark is needed for this test (run `make setup`): {e}"));
    assert!(
        o.status.success(),
        "tshark failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn vlab_run(args: &[&str]) {
    let o = common::vlab_cmd()
        .args(["run", "-q"])
        .args(args)
        .output()
        .expect("vlab runs");
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
}

fn mixed() -> PathBuf {
    common::case_pcap("basic/io-mixed")
}

const FIELDS: &[&str] = &[
    "-T",
    "fields",
    "-e",
    "frame.len",
    "-e",
    "frame.time_epoch",
    "-e",
    "eth.src",
    "-e",
    "eth.dst",
    "-e",
    "eth.type",
];

#[test]
fn wireshark_reads_an_io_capture_as_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.pcap");
    vlab_run(&[
        "--mode",
        "io",
        "--pcap-in",
        mixed().to_str().unwrap(),
        "--pcap-out",
        out.to_str().unwrap(),
    ]);
    let got = tshark(&out, FIELDS);
    assert_eq!(got, tshark(&mixed(), FIELDS));
    assert_eq!(got.lines().count(), 27);
    assert_eq!(
        tshark(
            &out,
            &["-Y", "_ws.malformed || _ws.expert.severity >= error"]
        ),
        ""
    );
}

#[test]
fn wireshark_sees_txonly_frames_as_valid_udp() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tx.pcap");
    vlab_run(&[
        "--mode",
        "txonly",
        "--pkts",
        "20",
        "--size",
        "128",
        "--pcap-out",
        out.to_str().unwrap(),
    ]);
    let lines = tshark(
        &out,
        &[
            "-o",
            "ip.check_checksum:TRUE",
            "-T",
            "fields",
            "-e",
            "frame.len",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "udp.dstport",
            "-e",
            "ip.checksum.status",
            "-e",
            "udp.length",
        ],
    );
    let rows: Vec<&str> = lines.lines().collect();
    assert_eq!(rows.len(), 20);
    for r in rows {
        // checksum.status 1 is "Good".
        assert_eq!(r, "128\t198.18.0.1\t198.18.0.2\t9\t1\t94", "{r}");
    }
}
