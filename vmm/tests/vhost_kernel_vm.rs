//! vhost-kernel for real: this host has no /dev/vhost-net, so every case runs inside a
//! Linux VM that has it (Debian's kernel with vhost_net and tun, under QEMU with TCG;
//! `scripts/linux-vm`), on the in-process machine, with the rust, rust-tap, vhost-kernel and
//! vhost-user backends, each output compared with the rust backend's by `vlab compare`.
//!
//! The VM runs a static build of vlab (`make vm-vlab`, which `make test` runs first). A
//! missing or stale one fails this test with the command that builds it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use vmm::config::BackendKind;
use vmm::suites::compare::load_cases;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The newest modification time of the files under `dir`.
fn newest(dir: &Path) -> SystemTime {
    let mut t = SystemTime::UNIX_EPOCH;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let m = if p.is_dir() {
            newest(&p)
        } else {
            e.metadata().and_then(|m| m.modified()).unwrap()
        };
        t = t.max(m);
    }
    t
}

/// The VM's static vlab, checked to be newer than the sources it is built from.
fn vm_vlab(root: &Path) -> PathBuf {
    let vlab = root.join("target/x86_64-unknown-linux-gnu/release/vlab");
    let built = std::fs::metadata(&vlab)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: build the VM's static vlab with `make vm-vlab` (`make test` does)",
                vlab.display()
            )
        });
    for src in ["vmm/src", "device-model/src", "pmd/src"] {
        assert!(
            newest(&root.join(src)) <= built,
            "{} is older than {src}: rebuild it with `make vm-vlab` (`make test` does)",
            vlab.display()
        );
    }
    vlab
}

/// `vlab ARGS` inside the Linux VM, with `files` under /files: stdout, and whether it
/// succeeded (stderr joins stdout in the failure message).
fn in_vm(root: &Path, args: &[&str], files: &[&Path]) -> String {
    let t0 = Instant::now();
    let out = Command::new(root.join("scripts/linux-vm"))
        .args(["run", "--timeout", "900"])
        .arg(vm_vlab(root))
        .args(args)
        .arg("--")
        .args(files)
        .output()
        .expect("running scripts/linux-vm");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "the Linux VM ran vlab {} in {:.1} s",
        args.join(" "),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "vlab in the Linux VM failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

#[test]
fn every_case_on_vhost_kernel_in_a_linux_vm_matches_the_rust_backend() {
    let root = root();
    let stdout = in_vm(
        &root,
        &[
            "compare",
            "--machine",
            "inprocess",
            "--backends",
            "rust-tap,vhost-kernel,vhost-user",
            "/files/testcases",
        ],
        &[&root.join("testcases")],
    );

    // Every case and transport not out of scope for vhost-kernel ran on it and matched.
    let cases = load_cases(&root.join("testcases")).unwrap();
    let expected: usize = cases
        .iter()
        .filter(|c| !c.spec.out_of_scope.contains_key(&BackendKind::VhostKernel))
        .map(|c| c.spec.transports.len())
        .sum();
    let matched = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("vhost-kernel") && l.contains("same as rust"))
        .count();
    assert_eq!(
        matched, expected,
        "vhost-kernel matched the rust backend on {matched} of {expected} case runs:\n{stdout}"
    );
    assert!(
        stdout.contains(" 0 differ, 0 failed,") && stdout.contains(" 0 unavailable"),
        "{stdout}"
    );
}

/// The TAP capture loses nothing through vhost-net either: seeded random captures (every
/// size from 60 to 1514 bytes, unicast, broadcast and multicast, a fifth VLAN-tagged) and a
/// txonly guest sending as fast as it can (vhost-net does not wait for the capture: its
/// buffer holds them all), on rust-tap and vhost-kernel, both transports, twice over.
#[test]
fn random_frames_through_vhost_kernel_and_a_tap_lose_nothing_in_a_linux_vm() {
    let root = root();
    let dir = tempfile::tempdir().unwrap();
    let stress = dir.path().join("stress");
    let cases = [
        ("random-seed-41", "mode = \"io\"\n", Some(41)),
        ("random-seed-42", "mode = \"macswap\"\n", Some(42)),
        (
            "txonly-20000",
            "mode = \"txonly\"\n[guest]\npkts = 20000\nsize = 1518\n",
            None,
        ),
    ];
    for (name, body, seed) in cases {
        let case = stress.join(name);
        std::fs::create_dir_all(&case).unwrap();
        std::fs::write(
            case.join("case.toml"),
            format!("description = \"TAP stress: {name}\"\n{body}"),
        )
        .unwrap();
        if let Some(seed) = seed {
            std::fs::write(
                case.join("in.toml"),
                format!("[random]\nseed = {seed}\nframes = 10000\nvlan = 0.2\n"),
            )
            .unwrap();
        }
    }
    let stdout = in_vm(
        &root,
        &[
            "compare",
            "--machine",
            "inprocess",
            "--backends",
            "rust-tap,vhost-kernel",
            "--repeat",
            "2",
            "/files/stress",
        ],
        &[&stress],
    );
    // 3 cases x 2 transports x 2 repetitions, each on two backends.
    for backend in ["rust-tap", "vhost-kernel"] {
        let matched = stdout
            .lines()
            .filter(|l| l.trim_start().starts_with(backend) && l.contains("same as rust"))
            .count();
        assert_eq!(matched, 12, "{backend}: {stdout}");
    }
    assert!(
        stdout.contains("vlab compare: 24 same as rust, 0 differ, 0 failed,"),
        "{stdout}"
    );
    for frames in ["10000 frames out", "20000 frames out"] {
        assert!(stdout.contains(frames), "{stdout}");
    }
}

/// Linux vhost-net has no packed rings: the device offers what the backend offers, the
/// guest's driver falls back to split rings, and vlab says why.
#[test]
fn packed_rings_fall_back_to_split_on_vhost_kernel_and_say_why() {
    let root = root();
    let case = root.join("testcases/basic/io-mixed");
    let stdout = in_vm(
        &root,
        &[
            "run",
            "--machine",
            "inprocess",
            "--mode",
            "io",
            "--backend",
            "vhost-kernel",
            "--tap",
            "vkpacked",
            "--packed",
            "true",
            "--pcap-in",
            "/files/io-mixed/in.pcap",
        ],
        &[&case],
    );
    assert!(
        stdout.contains("ring_packed: the vhost-kernel backend does not offer it"),
        "{stdout}"
    );
    let features = stdout
        .lines()
        .find(|l| l.starts_with("Port 0:") && l.contains(" features "))
        .unwrap_or_else(|| panic!("no features line: {stdout}"));
    assert!(!features.contains("RING_PACKED"), "{features}");
    assert!(features.contains("VERSION_1"), "{features}");
    assert!(stdout.contains("vlab: PASS"), "{stdout}");
}
