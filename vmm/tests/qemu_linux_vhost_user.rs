//! A stock Linux virtio_net driver against our vhost-user backend: QEMU (TCG) boots Debian's
//! kernel with `-netdev vhost-user` connected to `vlab vhost-user-backend`, the guest
//! (images/linux/echo.c, through `scripts/linux-vm vhost-user-echo`) sends every frame it
//! receives back out, and the backend's output must be its input, byte for byte, in order.
//!
//! This is the one peer whose driver is not ours: it checks the backend against the
//! frontend QEMU is and the driver Linux has (mergeable buffers, event index, how Linux
//! fills and recycles its rings), not against our own reading of the spec.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn case_pcap() -> PathBuf {
    root().join("testcases/basic/io-mixed/in.pcap")
}

/// A child that is stopped and reaped however the test ends (a failed assertion too).
struct Reaped {
    child: Child,
    /// Ask with SIGTERM first: `scripts/linux-vm` then stops its QEMU, which runs under
    /// `timeout` in a process group of its own and would outlive a SIGKILLed script.
    term_first: bool,
}

impl Reaped {
    /// Waits at most `limit`; `None` if the child is still running then.
    fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("waiting for a child") {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if self.term_first {
            if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: kill(2) with our own child's pid (not yet reaped, so not reused)
                // touches no memory.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                if self.wait(Duration::from_secs(10)).is_some() {
                    return;
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the children's output goes: files, read back for the failure messages.
struct Logs {
    dir: PathBuf,
}

impl Logs {
    fn file(&self, name: &str) -> File {
        File::create(self.dir.join(name)).expect("creating a log file")
    }

    fn read(&self, name: &str) -> String {
        std::fs::read(self.dir.join(name))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("({e})"))
    }

    /// Everything, for a failure message.
    fn all(&self) -> String {
        let mut s = String::new();
        for (name, what) in [
            (
                "vm.out",
                "the VM's serial console (scripts/linux-vm stdout)",
            ),
            ("vm.err", "scripts/linux-vm and QEMU stderr"),
            ("vlab.out", "vlab vhost-user-backend stdout"),
            ("vlab.err", "vlab vhost-user-backend stderr"),
        ] {
            s += &format!("\n----- {what} -----\n{}", self.read(name));
        }
        s
    }
}

/// Runs a command to its end within `limit`, or fails with its output.
fn run_bounded(cmd: &mut Command, limit: Duration, what: &str, logs: &Logs, log: &str) {
    let child = cmd
        .stdout(logs.file(&format!("{log}.out")))
        .stderr(logs.file(&format!("{log}.err")))
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let mut child = Reaped {
        child,
        term_first: true,
    };
    match child.wait(limit) {
        Some(s) if s.success() => {}
        Some(s) => panic!(
            "{what} failed ({s}); scripts/setup installs what it needs:\n{}{}",
            logs.read(&format!("{log}.out")),
            logs.read(&format!("{log}.err"))
        ),
        None => panic!(
            "{what} did not finish in {limit:?}:\n{}{}",
            logs.read(&format!("{log}.out")),
            logs.read(&format!("{log}.err"))
        ),
    }
}

#[test]
fn linux_virtio_net_under_qemu_echoes_a_case_through_our_vhost_user_backend() {
    echo_through_our_backend(false);
}

/// The same on packed rings: QEMU's device with `packed=on`, Linux's virtio_net driving
/// packed rings that our backend serves.
#[test]
fn linux_virtio_net_on_packed_rings_echoes_a_case_through_our_vhost_user_backend() {
    echo_through_our_backend(true);
}

fn echo_through_our_backend(packed: bool) {
    let t0 = Instant::now();
    // What the guest needs, checked first so that its absence fails with what to do (this
    // test never skips: a machine without QEMU is not a machine this suite passes on).
    match Command::new("qemu-system-x86_64").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "qemu-system-x86_64 --version failed ({}): {}; scripts/setup installs it \
             (qemu-system-x86 from bookworm-backports)",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "qemu-system-x86_64: {e}: scripts/setup installs it (qemu-system-x86 from \
             bookworm-backports)"
        ),
    }
    let dir = tempfile::tempdir().unwrap();
    let logs = Logs {
        dir: dir.path().to_path_buf(),
    };
    let linux_vm = root().join("scripts/linux-vm");
    // Downloads and packs Debian's kernel and busybox the first time (a few seconds), a
    // no-op once cached: done on its own so a failed download is reported as that.
    run_bounded(
        Command::new(&linux_vm).arg("build"),
        Duration::from_secs(300),
        "scripts/linux-vm build (Debian's kernel and busybox, with apt-get download)",
        &logs,
        "build",
    );

    // The process id keeps parallel runs of this test binary apart; the temporary
    // directory keeps them apart from everything else.
    let sock = dir
        .path()
        .join(format!("vhost-user-{}.sock", std::process::id()));
    let out = dir.path().join("out.pcap");
    let backend = Command::new(env!("CARGO_BIN_EXE_vlab"))
        .arg("vhost-user-backend")
        .arg("--socket")
        .arg(&sock)
        .arg("--pcap-in")
        .arg(case_pcap())
        .arg("--pcap-out")
        .arg(&out)
        .stdout(logs.file("vlab.out"))
        .stderr(logs.file("vlab.err"))
        .spawn()
        .expect("vlab vhost-user-backend starts");
    let mut backend = Reaped {
        child: backend,
        term_first: false,
    };
    // QEMU connects once and does not retry: the backend must be listening first.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        if let Ok(Some(s)) = backend.child.try_wait() {
            panic!("the backend exited ({s}) before listening:{}", logs.all());
        }
        assert!(
            Instant::now() < deadline,
            "the backend did not listen on {} within 10 s:{}",
            sock.display(),
            logs.all()
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    // The VM's own timeout (boot included) comes first; ours only backs it up.
    let vm = Command::new(&linux_vm)
        .args(["vhost-user-echo", "--timeout", "45"])
        .args(packed.then_some("--packed"))
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(logs.file("vm.out"))
        .stderr(logs.file("vm.err"))
        .spawn()
        .expect("scripts/linux-vm starts");
    let mut vm = Reaped {
        child: vm,
        term_first: true,
    };
    let Some(status) = vm.wait(Duration::from_secs(60)) else {
        panic!("the VM did not finish in 60 s:{}", logs.all());
    };
    assert!(
        status.success(),
        "the guest's echo failed ({status}):{}",
        logs.all()
    );
    // QEMU is gone, so the backend's frontend is: it writes its summary and exits.
    let Some(status) = backend.wait(Duration::from_secs(10)) else {
        panic!(
            "the backend did not exit within 10 s of QEMU's end:{}",
            logs.all()
        );
    };
    assert!(
        status.success(),
        "the backend failed ({status}):{}",
        logs.all()
    );

    // The guest echoed every frame and the marker, and put back both VLAN tags the kernel
    // took off on receive (the case has tagged frames: this proves the PACKET_AUXDATA path).
    let input = device_model::pcap::read(&case_pcap(), usize::MAX).expect("the case's pcap");
    let n = input.frames.len();
    let tagged = input
        .frames
        .iter()
        .filter(|f| f.data.get(12..14) == Some(&[0x81, 0x00][..]))
        .count();
    assert!(tagged > 0, "the case was meant to have VLAN-tagged frames");
    let echoed = format!(
        "echo: done: {} frames echoed ({tagged} with a VLAN tag restored",
        n + 1
    );
    assert!(
        logs.read("vm.out").contains(&echoed),
        "expected {echoed:?}:{}",
        logs.all()
    );
    // Every frame the guest sent before the marker is in the output: nothing of the
    // guest's own (no IPv6 autoconfiguration, no ARP) and nothing dropped.
    let summary = format!("delivered={} out={n} drops=0", n + 1);
    assert!(
        logs.read("vlab.out").contains(&summary),
        "expected {summary:?}:{}",
        logs.all()
    );
    // The ring layout QEMU and Linux agreed on with our backend.
    let features = logs
        .read("vlab.out")
        .lines()
        .find_map(|l| l.split(" features: ").nth(1).map(str::to_string))
        .unwrap_or_default();
    assert_eq!(
        features.contains("ring_packed"),
        packed,
        "negotiated {features}:{}",
        logs.all()
    );
    // Same records: every byte after the 24-byte file header, timestamps included (output
    // frame k carries input frame k's).
    let want = std::fs::read(case_pcap()).unwrap();
    let got =
        std::fs::read(&out).unwrap_or_else(|e| panic!("{}: {e}:{}", out.display(), logs.all()));
    if got.get(24..) != want.get(24..) {
        let show = |p: &Path| {
            let o = Command::new(env!("CARGO_BIN_EXE_vlab"))
                .args(["pcap", "show"])
                .arg(p)
                .output()
                .expect("vlab pcap show");
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        panic!(
            "the output differs from the input\n----- in -----\n{}----- out -----\n{}{}",
            show(&case_pcap()),
            show(&out),
            logs.all()
        );
    }
    eprintln!("qemu_linux_vhost_user: passed in {:?}", t0.elapsed());
}
