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

use vmm::compare::{load_cases, Target};

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

#[test]
fn every_case_on_vhost_kernel_in_a_linux_vm_matches_the_rust_backend() {
    let root = root();
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

    let t0 = Instant::now();
    let out = Command::new(root.join("scripts/linux-vm"))
        .args(["run", "--timeout", "900"])
        .arg(&vlab)
        .args([
            "compare",
            "--machine",
            "inprocess",
            "--backends",
            "rust-tap,vhost-kernel,vhost-user",
            "/files/testcases",
            "--",
        ])
        .arg(root.join("testcases"))
        .output()
        .expect("running scripts/linux-vm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "the Linux VM ran the suite in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "vlab compare in the Linux VM failed ({}):\n{stdout}\n{stderr}",
        out.status
    );

    // Every case and transport not out of scope for vhost-kernel ran on it and matched.
    let cases = load_cases(&root.join("testcases")).unwrap();
    let expected: usize = cases
        .iter()
        .filter(|c| !c.spec.out_of_scope.contains_key(&Target::VhostKernel))
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
