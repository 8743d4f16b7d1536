//! The TAP path loses nothing: thousands of seeded random frames (every size from 60 to 1514
//! bytes, unicast, broadcast and multicast, a fifth VLAN-tagged) through the rust backend on
//! a TAP, on both machines and both transports, several seeds, with both CPUs kept busy by
//! other threads the whole time; a txonly run whose guest sends as fast as it can; and the
//! suite's TAP verdicts run repeatedly. Every frame must come back, byte for byte.
//! (vhost-kernel gets the same stress inside the Linux VM: `vhost_kernel_vm.rs`.)

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{both, unique, vlab};
use device_model::pcap;

/// Frames per run, and the seeds of the runs.
const FRAMES: usize = 10_000;
const SEEDS: [u64; 3] = [11, 12, 13];

/// Threads that keep every CPU busy until dropped: the capture must keep up on a loaded
/// machine too.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A random capture of `frames` frames from `seed`, built by `vlab pcap build`.
fn random_capture(dir: &Path, seed: u64, frames: usize) -> std::path::PathBuf {
    let spec = dir.join(format!("random-{seed}.toml"));
    std::fs::write(
        &spec,
        format!("[random]\nseed = {seed}\nframes = {frames}\nvlan = 0.2\n"),
    )
    .unwrap();
    let pcap = dir.join(format!("random-{seed}.pcap"));
    let o = vlab(&[
        "pcap",
        "build",
        spec.to_str().unwrap(),
        "-o",
        pcap.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", both(&o));
    pcap
}

#[test]
fn thousands_of_random_frames_through_a_tap_come_back_byte_for_byte_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let _load = Load::start();
    let mut runs = 0;
    for seed in SEEDS {
        let input = random_capture(dir.path(), seed, FRAMES);
        let sent = pcap::read(&input, usize::MAX).unwrap().frames;
        assert_eq!(sent.len(), FRAMES);
        for machine in ["kvm", "inprocess"] {
            for transport in ["modern", "legacy"] {
                let out = dir.path().join("out.pcap");
                let tap = unique("s");
                let o = vlab(&[
                    "run",
                    "--mode",
                    "io",
                    "--machine",
                    machine,
                    "--transport",
                    transport,
                    "--tap",
                    &tap,
                    "--pcap-in",
                    input.to_str().unwrap(),
                    "--pcap-out",
                    out.to_str().unwrap(),
                ]);
                let what = format!("seed {seed}, {machine}, {transport}");
                assert!(o.status.success(), "{what}: {}", both(&o));
                let got = pcap::read(&out, usize::MAX).unwrap().frames;
                assert_eq!(got.len(), FRAMES, "{what}: frames captured");
                for (k, (a, b)) in sent.iter().zip(&got).enumerate() {
                    assert!(a.data == b.data, "{what}: frame {k} differs");
                }
                runs += 1;
            }
        }
    }
    eprintln!("{runs} runs of {FRAMES} random frames through a TAP, none lost");
}

#[test]
fn a_txonly_guest_at_full_speed_loses_nothing_on_a_tap() {
    let dir = tempfile::tempdir().unwrap();
    let _load = Load::start();
    for size in ["64", "1518"] {
        let out = dir.path().join("out.pcap");
        let tap = unique("t");
        let o = vlab(&[
            "run",
            "--mode",
            "txonly",
            "--pkts",
            "30000",
            "--size",
            size,
            "--tap",
            &tap,
            "--pcap-out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{size} bytes: {}", both(&o));
        let got = pcap::read(&out, usize::MAX).unwrap().frames;
        assert_eq!(got.len(), 30_000, "{size}-byte frames captured");
        assert!(got.iter().all(|f| f.data.len().to_string() == size));
    }
}

/// Every case's TAP verdicts on its reference paths (modern and legacy), three times; the
/// suite itself runs the other paths once.
#[test]
fn the_suites_tap_verdicts_pass_three_times_over() {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testcases");
    let o = vlab(&[
        "test",
        suite.to_str().unwrap(),
        "--backends",
        "rust-tap",
        "--filter",
        "::modern::packed-inorder-mrg::rust-tap",
        "--filter",
        "::legacy::split-mrg::rust-tap",
        "--repeat",
        "3",
    ]);
    let text = both(&o);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("all passed") && !text.contains("FAIL"),
        "{text}"
    );
}
