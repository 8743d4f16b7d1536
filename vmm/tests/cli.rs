//! `vlab run` from the outside: the exit status, the message on stderr, and the files left
//! behind, for good runs and for every kind of bad input.

mod common;

use std::path::{Path, PathBuf};

use common::{case_dir, case_pcap, stderr, vlab, HARNESS_FAILURE};

fn ntp_pcap() -> PathBuf {
    case_pcap("basic/io-ntp")
}

/// The files in `dir`, so a test can see that a failed run left nothing behind.
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Runs `vlab run --mode io` with `extra` and an output in a fresh directory; expects the
/// harness-failure status, `message` on stderr, and no file in the output directory.
fn fails_cleanly(extra: &[&str], message: &str) {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out.pcap");
    let mut args = vec![
        "run",
        "--mode",
        "io",
        "-q",
        "--pcap-out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = vlab(&args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(HARNESS_FAILURE), "stderr: {err}");
    assert!(err.contains(message), "expected {message:?} in: {err}");
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert_eq!(
        files(out_dir.path()),
        Vec::<String>::new(),
        "nothing half-written"
    );
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn pcap_header() -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&[2, 0, 4, 0]);
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&65535u32.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    h
}

fn record(buf: &mut Vec<u8>, len: usize) {
    buf.extend_from_slice(&[0; 8]);
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend(std::iter::repeat_n(0x5a, len));
}

#[test]
fn io_run_forwards_a_foreign_capture_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.pcap");
    let o = vlab(&[
        "run",
        "--mode",
        "io",
        "-q",
        "--pcap-in",
        ntp_pcap().to_str().unwrap(),
        "--pcap-out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(
        summary
            .starts_with("vlab: PASS: machine=kvm backend=rust in=12 delivered=12 out=12 drops=0"),
        "{summary}"
    );
    // Same records: every byte after the 24-byte file header, timestamps included.
    let input = std::fs::read(ntp_pcap()).unwrap();
    let output = std::fs::read(&out).unwrap();
    assert_eq!(&output[24..], &input[24..]);
}

#[test]
fn no_kvm_device() {
    fails_cleanly(
        &[
            "--pcap-in",
            ntp_pcap().to_str().unwrap(),
            "--kvm-device",
            "/nonexistent/kvm",
        ],
        "cannot open /nonexistent/kvm: No such file or directory",
    );
}

#[test]
fn kernel_that_is_not_an_elf() {
    let dir = tempfile::tempdir().unwrap();
    let k = write(dir.path(), "kernel", &[b'x'; 200]);
    fails_cleanly(
        &["--kernel", k.to_str().unwrap()],
        &format!(
            "guest image {}: not an ELF file (bad magic number)",
            k.display()
        ),
    );
    let short = write(dir.path(), "short", b"\x7fELF");
    fails_cleanly(
        &["--kernel", short.to_str().unwrap()],
        "too short for an ELF header",
    );
}

#[test]
fn kernel_that_is_missing() {
    fails_cleanly(
        &["--kernel", "/nonexistent/pmd-guest"],
        "guest image /nonexistent/pmd-guest: No such file or directory",
    );
}

#[test]
fn elf_without_a_pvh_note() {
    // The real guest image with its XEN_ELFNOTE_PHYS32_ENTRY note renamed: a loadable ELF
    // that no PVH loader may start.
    let image =
        vmm::machine::image::default_image().expect("the guest image is built (make images)");
    let mut bytes = std::fs::read(image).unwrap();
    let note = [4u8, 0, 0, 0, 4, 0, 0, 0, 18, 0, 0, 0, b'X', b'e', b'n', 0];
    let at = bytes
        .windows(note.len())
        .position(|w| w == note)
        .expect("the image has a PVH note");
    bytes[at + 8] = 19;
    let dir = tempfile::tempdir().unwrap();
    let k = write(dir.path(), "no-pvh", &bytes);
    fails_cleanly(&["--kernel", k.to_str().unwrap()], "not a PVH image");
}

#[test]
fn pcap_problems_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let text = write(dir.path(), "notes.txt", b"hello, world, this is text\n");
    fails_cleanly(
        &["--pcap-in", text.to_str().unwrap()],
        &format!("{}: not a pcap file", text.display()),
    );

    let mut t = pcap_header();
    record(&mut t, 60);
    t.truncate(t.len() - 10);
    let truncated = write(dir.path(), "truncated.pcap", &t);
    fails_cleanly(
        &["--pcap-in", truncated.to_str().unwrap()],
        "record 0 at byte 24 is truncated",
    );

    let ng = write(
        dir.path(),
        "capture.pcapng",
        &[0x0a, 0x0d, 0x0d, 0x0a, 0x1c, 0, 0, 0],
    );
    fails_cleanly(
        &["--pcap-in", ng.to_str().unwrap()],
        "this is a pcapng file",
    );

    let mut big = pcap_header();
    record(&mut big, 60);
    record(&mut big, 1600);
    let big = write(dir.path(), "jumbo.pcap", &big);
    fails_cleanly(
        &["--pcap-in", big.to_str().unwrap()],
        "frame 1 is 1600 bytes; the device takes frames up to 1518 bytes",
    );

    fails_cleanly(
        &["--pcap-in", "/nonexistent/in.pcap"],
        "/nonexistent/in.pcap: No such file or directory",
    );
}

#[test]
fn output_in_a_missing_directory() {
    let o = vlab(&[
        "run",
        "--mode",
        "io",
        "-q",
        "--pcap-in",
        ntp_pcap().to_str().unwrap(),
        "--pcap-out",
        "/nonexistent/dir/out.pcap",
    ]);
    assert_eq!(o.status.code(), Some(HARNESS_FAILURE));
    assert!(
        stderr(&o).contains("/nonexistent/dir/out.pcap: No such file or directory"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn unknown_mode_and_bad_numbers_are_usage_errors() {
    let o = vlab(&["run", "--mode", "bogus"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("invalid value 'bogus' for '--mode <MODE>'"),
        "{}",
        stderr(&o)
    );

    let o = vlab(&["run", "--mode", "io", "--ring", "100"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("100 is not a power of two"),
        "{}",
        stderr(&o)
    );

    let o = vlab(&["run", "--mode", "txonly"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--pkts"), "{}", stderr(&o));
}

#[test]
fn watchdog_stops_a_guest_that_never_finishes() {
    // On a loopback the input never ends, so an rxonly guest waits forever.
    let o = vlab(&[
        "run",
        "--mode",
        "rxonly",
        "-q",
        "--loopback",
        "--timeout",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(HARNESS_FAILURE));
    let err = stderr(&o);
    assert!(
        err.contains("the guest did not finish within 1s; stopped by the watchdog"),
        "{err}"
    );
    assert!(err.contains("RIP"), "says where the guest was: {err}");
}

#[test]
fn pcap_show_prints_one_line_per_frame() {
    let o = vlab(&["pcap", "show", ntp_pcap().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.lines().count(), 12);
    assert_eq!(
        text.lines().next().unwrap(),
        "#0000 len=90 04:15:52:05:1e:17 > 00:22:41:33:12:b2 IPv4 192.168.1.95 > 17.253.4.253 UDP 123 > 123 crc=ca0f4004"
    );
}

#[test]
fn pcap_build_turns_a_spec_into_a_capture_and_names_a_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("built.pcap");
    let spec = case_dir("basic/io-spec").join("in.toml");
    let o = vlab(&[
        "pcap",
        "build",
        spec.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let cap = device_model::pcap::read(&out, usize::MAX).unwrap();
    assert_eq!(cap.frames.len(), 10);
    assert_eq!(cap.frames[1].data.len(), 1514);

    let bad = write(
        dir.path(),
        "bad.toml",
        b"[[frame]]\neth = { src = \"02:00:00:00:00:01\", dst = \"02:00:00:00:00:02\" }\n\
          ipv4 = { src = \"10.0.0.300\", dst = \"10.0.0.2\" }\n",
    );
    let out2 = dir.path().join("never.pcap");
    let o = vlab(&[
        "pcap",
        "build",
        bad.to_str().unwrap(),
        "-o",
        out2.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(HARNESS_FAILURE));
    assert!(
        stderr(&o).contains("bad.toml: frame 0: ipv4.src: '10.0.0.300' is not an IPv4 address"),
        "{}",
        stderr(&o)
    );
    assert!(!out2.exists(), "nothing half-written");
}
