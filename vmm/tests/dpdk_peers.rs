//! Two peers nobody here wrote, each carrying a pcap case through and back, byte for byte:
//!
//! 1. DPDK's vhost-user backend (`net_vhost` in testpmd) serves the KVM guest's data queues.
//!    testpmd forwards (io) between its vhost port and a `net_tap` port; vlab's harness
//!    injects the case into the TAP's kernel interface and captures what comes back out.
//! 2. DPDK's virtio-user PMD (`net_virtio_user` in testpmd) drives our vhost-user backend,
//!    forwarding its one port back to itself, so what our backend hands out comes back.
//!    The backend moves frames to and from a TAP, where vlab's harness (run here, in the
//!    test) injects and captures once testpmd forwards. Not `--pcap-in`: DPDK's virtio PMD
//!    sets DRIVER_OK when the device is probed, and its port start later posts the rx
//!    buffers and then discards whatever the device has already put in them ("flush the
//!    old packets", `virtqueue_rxvq_flush` in `virtio_dev_start`). The backend, still
//!    polling after the rings were enabled, sometimes fills those buffers in between (seen
//!    about once in 150 runs: 28 frames delivered, testpmd received none, no marker, a
//!    hang). A TAP gives the frames only when the test says so.
//!
//! Needs dpdk-testpmd (Debian's dpdk-dev; `scripts/setup` installs it), root (TAPs, network
//! namespaces), iproute2 and /dev/kvm. No hugepages: testpmd runs with `--no-huge`.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use device_model::net::{NetConfig, NetShared};
use device_model::pcap::{Frame, PcapOut};
use device_model::tap::TapCounters;
use vmm::backends::tap_harness::{DeviceSide, TapHarness};

/// testpmd's EAL start, port setup and forwarding start (about 0.2 s here).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// One run of the case through both peers (well under a second here).
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// A process told to quit, or whose peer went away.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a failure report waits for testpmd's statistics, printed as it quits.
const REPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// What testpmd prints once its ports are started and forwarding runs (non-interactive).
const TESTPMD_READY: &str = "Press enter to exit";

/// testpmd commands run before forwarding starts (`--cmdline-file`). io forwarding frees
/// what its tx burst did not take; with retry it waits instead: for a vhost device DPDK has
/// not yet declared running (vlab sees its last ring enabled a little before DPDK calls
/// `new_device`, so the first frames can meet a port that still refuses them), for a guest
/// short of rx buffers, for a full ring. 100 us x 20000 bounds a stuck burst at 2 s, far
/// beyond any of these; a frame it gives up on shows as a mismatch.
const TESTPMD_COMMANDS: &str = "set fwd io retry\nset burst tx delay 100 retry 20000\n";

fn case() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testcases/basic/io-mixed/in.pcap")
}

fn vlab() -> &'static str {
    env!("CARGO_BIN_EXE_vlab")
}

/// `program` in `PATH`.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// dpdk-testpmd, or a failure that says how to get it: these tests do not skip.
fn testpmd() -> PathBuf {
    which("dpdk-testpmd").unwrap_or_else(|| {
        panic!(
            "dpdk-testpmd is not installed (not in PATH): run scripts/setup, which installs \
             Debian's dpdk-dev (dpdk-testpmd and its net_vhost, net_tap and net_virtio PMDs)"
        )
    })
}

/// The CPUs this process may run on, in DPDK's list syntax. testpmd's two lcores float over
/// them rather than being pinned: the guest's vCPU, our backend and testpmd's forwarding
/// core all poll, and tests run in parallel, so the scheduler should place them.
fn allowed_cpus() -> String {
    let status = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_else(|e| panic!("reading /proc/self/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| panic!("no Cpus_allowed_list in /proc/self/status"))
}

/// Whether a UNIX socket at `path` is listening (SO_ACCEPTCON in /proc/net/unix): the file
/// appears at bind(2), a moment before listen(2), and DPDK's virtio-user does not retry a
/// refused connection. Probing by connecting would use up the backend's one connection.
fn listening(path: &Path) -> bool {
    const ACCEPTCON: &str = "00010000";
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let path = path.to_string_lossy();
    table.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() == 8 && f[3] == ACCEPTCON && f[7] == path
    })
}

/// A child process whose stdout and stderr go to a log file; killed if still running when
/// dropped (a failed check unwinds through here). Interior mutability, so that a failure
/// report can still tell testpmd to quit.
struct Proc {
    name: String,
    command: String,
    child: RefCell<Child>,
    stdin: RefCell<Option<ChildStdin>>,
    log: PathBuf,
    status: Cell<Option<ExitStatus>>,
}

impl Proc {
    /// The exit status, once the process has exited.
    fn poll(&self) -> Option<ExitStatus> {
        if self.status.get().is_none() {
            self.status
                .set(self.child.borrow_mut().try_wait().ok().flatten());
        }
        self.status.get()
    }

    /// Waits up to `timeout` for the process to exit.
    fn wait(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.poll() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends a line to a non-interactive testpmd, which then quits (it waits for Enter),
    /// and closes its input.
    fn send_enter(&self) -> Result<(), String> {
        match self.stdin.borrow_mut().take() {
            Some(mut stdin) => stdin.write_all(b"\n").map_err(|e| e.to_string()),
            None => Err("its stdin is not ours".to_string()),
        }
    }

    fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(no log at {}: {e})", self.log.display()))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.poll().is_none() {
            let child = self.child.get_mut();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The processes of one test. A failure panics with every process's log.
struct Peers {
    dir: PathBuf,
    procs: Vec<Proc>,
}

impl Peers {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            procs: Vec::new(),
        }
    }

    /// Starts `cmd` as `name`; with `stdin`, its standard input stays open (testpmd quits
    /// on a line there).
    fn start(&mut self, name: &str, mut cmd: Command, stdin: bool) -> usize {
        let log = self.dir.join(format!("{}.log", name.replace(' ', "-")));
        let file = File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = file
            .try_clone()
            .unwrap_or_else(|e| panic!("duplicating {}: {e}", log.display()));
        cmd.stdout(file)
            .stderr(err)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() });
        let command = format!("{cmd:?}");
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => self.fail(&format!("starting {name} ({command}): {e}")),
        };
        self.procs.push(Proc {
            name: name.to_string(),
            command,
            stdin: RefCell::new(child.stdin.take()),
            child: RefCell::new(child),
            log,
            status: Cell::new(None),
        });
        self.procs.len() - 1
    }

    fn log(&self, p: usize) -> String {
        self.procs[p].log_text()
    }

    /// Panics with `why` and every process's command line, exit status and output. A
    /// testpmd still running is told to quit first: its port statistics say where frames
    /// stopped.
    fn fail(&self, why: &str) -> ! {
        let mut told = false;
        for p in &self.procs {
            told |= p.poll().is_none() && p.send_enter().is_ok();
        }
        if told {
            // Their peer gone, the others finish too, with their last lines (vlab's
            // counters): worth a short wait.
            let deadline = Instant::now() + REPORT_TIMEOUT;
            for p in &self.procs {
                p.wait(deadline.saturating_duration_since(Instant::now()));
            }
        }
        let mut msg = format!("{why}\n");
        for p in &self.procs {
            let status = p.poll().map_or("still running".into(), |s| s.to_string());
            msg += &format!(
                "\n---- {} ({status}): {}\n{}",
                p.name,
                p.command,
                p.log_text()
            );
        }
        panic!("{msg}");
    }

    /// Waits until `cond`, while every process keeps running.
    fn wait_until(&self, what: &str, timeout: Duration, cond: impl Fn(&Peers) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return;
            }
            if let Some(p) = self.procs.iter().find(|p| p.poll().is_some()) {
                let status = p.poll().map(|s| s.to_string()).unwrap_or_default();
                self.fail(&format!(
                    "{} exited ({status}) while waiting for {what}",
                    p.name
                ));
            }
            if Instant::now() > deadline {
                self.fail(&format!("timed out after {timeout:?} waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for process `p` to exit; it must exit successfully.
    fn wait_success(&self, p: usize, timeout: Duration) {
        let name = &self.procs[p].name;
        match self.procs[p].wait(timeout) {
            None => self.fail(&format!("{name} did not exit within {timeout:?}")),
            Some(s) if !s.success() => self.fail(&format!("{name} failed: {s}")),
            Some(_) => {}
        }
    }

    /// Tells a non-interactive testpmd to quit, and waits until it has, successfully.
    fn quit_testpmd(&self, p: usize) {
        if let Err(e) = self.procs[p].send_enter() {
            self.fail(&format!("telling testpmd to quit: {e}"));
        }
        self.wait_success(p, EXIT_TIMEOUT);
    }

    /// The check: `output` holds `input`'s frames, byte for byte and in order, with their
    /// timestamps (vlab's harness carries the input's over).
    fn same_frames(&self, input: &Path, output: &Path) {
        let read = |p: &Path| -> Vec<Frame> {
            match device_model::pcap::read(p, usize::MAX) {
                Ok(c) => c.frames,
                Err(e) => self.fail(&format!("reading a capture: {e}")),
            }
        };
        let (want, got) = (read(input), read(output));
        if want == got {
            return;
        }
        let detail = match want.iter().zip(&got).position(|(a, b)| a != b) {
            Some(k) => format!(
                "frame {k} differs: input {} bytes at {:?}, output {} bytes at {:?}",
                want[k].data.len(),
                want[k].ts,
                got[k].data.len(),
                got[k].ts
            ),
            None => "one is a prefix of the other".to_string(),
        };
        self.fail(&format!(
            "{} has {} frames, {} has {}: {detail}",
            input.display(),
            want.len(),
            output.display(),
            got.len()
        ));
    }
}

impl Drop for Peers {
    /// The last started goes first: vlab before the testpmd it talks to.
    fn drop(&mut self) {
        while self.procs.pop().is_some() {}
    }
}

/// A network namespace of our own, deleted on drop. The kernel puts frames of its own on a
/// fresh interface with IPv6 (router solicitations, MLD reports, duplicate address
/// detection); testpmd would forward them to the guest and back into the capture. DPDK
/// brings its TAP up itself, so IPv6 must already be off for interfaces created here: the
/// namespace's default says so, and nothing else on the machine is touched.
struct Netns {
    name: String,
}

impl Netns {
    fn new(name: &str) -> Self {
        if which("ip").is_none() {
            panic!("ip is not installed (not in PATH): these tests need iproute2");
        }
        // A namespace left by a killed run that had our process id.
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        Self::ip(&["netns", "add", name]);
        let ns = Self {
            name: name.to_string(),
        };
        // Absent when the kernel has no IPv6: then there is nothing to turn off.
        let f = "/proc/sys/net/ipv6/conf/default/disable_ipv6";
        Self::ip(&[
            "netns",
            "exec",
            name,
            "sh",
            "-c",
            &format!("[ ! -e {f} ] || echo 1 > {f}"),
        ]);
        ns
    }

    fn ip(args: &[&str]) {
        let o = Command::new("ip")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running ip {}: {e}", args.join(" ")));
        assert!(
            o.status.success(),
            "ip {} failed ({}): {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// `program` run inside the namespace; `ip netns exec` also mounts the namespace's own
    /// /sys, where vlab's harness reads the TAP's counters.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The testpmd command line, in `netns` if given: `vdevs` as its ports, io forwarding with
/// retry, `app` appended to the application's options. Its runtime files go to `dir`.
fn testpmd_command(
    netns: Option<&Netns>,
    dir: &Path,
    prefix: &str,
    vdevs: &[String],
    app: &[&str],
) -> Command {
    let commands = dir.join(format!("{prefix}.cmds"));
    std::fs::write(&commands, TESTPMD_COMMANDS)
        .unwrap_or_else(|e| panic!("writing {}: {e}", commands.display()));
    // stdbuf: testpmd's stdout is a file here, so without line buffering its "ready" line
    // would sit in the stdio buffer until it exits.
    let mut c = match netns {
        Some(ns) => ns.command("stdbuf"),
        None => Command::new("stdbuf"),
    };
    let cpus = allowed_cpus();
    c.args(["-oL", "-eL"]).arg(testpmd());
    c.arg(format!("--lcores=0@({cpus}),1@({cpus})"))
        // No hugepages (a fresh CI machine has none), no PCI devices (never touch a real
        // NIC), no shared files or telemetry socket: nothing outside `dir`.
        .args([
            "--no-huge",
            "-m",
            "64",
            "--no-pci",
            "--no-shconf",
            "--no-telemetry",
        ])
        .arg(format!("--file-prefix={prefix}"))
        // Where DPDK puts its runtime directory (else /var/run/dpdk).
        .env("RUNTIME_DIRECTORY", dir);
    for v in vdevs {
        c.arg(format!("--vdev={v}"));
    }
    c.arg("--")
        // Keep what sits in an rx ring when forwarding starts.
        .arg("--no-flush-rx")
        // The vhost port's link is down until vlab connects: do not wait 9 s for it.
        .arg("--disable-link-check")
        // 64 MiB need not be locked, and locking them costs startup time.
        .arg("--no-mlockall")
        .arg("--nb-cores=1")
        .arg("--total-num-mbufs=2048")
        .arg(format!("--cmdline-file={}", commands.display()))
        .args(app);
    c
}

#[test]
fn dpdk_vhost_user_backend_serves_the_kvm_guest() {
    testpmd();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let pid = std::process::id();
    let ns = Netns::new(&format!("vlab-dpdk-{pid}"));
    let tap = format!("vldpdk{pid}");
    let socket = dir.path().join("vhost.sock");
    let out = dir.path().join("out.pcap");
    let mut peers = Peers::new(dir.path());

    // testpmd is the vhost-user server; port 0 (vhost) and port 1 (TAP) forward to each
    // other (paired topology), frames unchanged (io).
    let testpmd = peers.start(
        "testpmd",
        testpmd_command(
            Some(&ns),
            dir.path(),
            &format!("vlab-vh-{pid}"),
            &[
                format!("net_vhost0,iface={},queues=1", socket.display()),
                format!("net_tap0,iface={tap}"),
            ],
            &["--port-topology=paired"],
        ),
        true,
    );
    peers.wait_until("testpmd to start forwarding", START_TIMEOUT, |p| {
        p.log(testpmd).contains(TESTPMD_READY)
    });

    // The harness injects the case, then the end marker, into the TAP once the guest's port
    // is up, and captures what comes out of it until the marker. Most of this test's time
    // is DPDK's: its vhost-user server takes up to a second (its event loop's poll timeout)
    // to read from a connection made this soon after it started.
    let mut run = ns.command(vlab());
    run.args(["run", "--mode", "io", "--backend", "vhost-user"])
        .args(["--timeout", "25", "--tap", &tap])
        .arg("--socket")
        .arg(&socket)
        .arg("--pcap-in")
        .arg(case())
        .arg("--pcap-out")
        .arg(&out);
    let guest = peers.start("vlab run", run, false);
    peers.wait_success(guest, RUN_TIMEOUT);
    peers.quit_testpmd(testpmd);
    peers.same_frames(&case(), &out);
    // DPDK's vhost offers packed rings, so the guest's driver ran them against DPDK's
    // packed-ring backend: the features DPDK negotiated say so (VIRTIO_F_RING_PACKED, bit 34).
    let log = peers.log(testpmd);
    let negotiated = log
        .lines()
        .filter_map(|l| l.split("negotiated Virtio features: 0x").nth(1))
        .filter_map(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .next_back()
        .unwrap_or_else(|| peers.fail("testpmd never said which features it negotiated"));
    if negotiated & (1 << 34) == 0 {
        peers.fail(&format!(
            "DPDK negotiated {negotiated:#x}: no packed rings (bit 34) with our driver"
        ));
    }
}

#[test]
fn dpdk_virtio_user_drives_our_vhost_user_backend() {
    virtio_user_drives_our_backend('s', "packed_vq=0,in_order=0");
}

#[test]
fn dpdk_virtio_user_drives_our_vhost_user_backend_on_split_in_order_rings() {
    virtio_user_drives_our_backend('i', "packed_vq=0,in_order=1");
}

#[test]
fn dpdk_virtio_user_drives_our_vhost_user_backend_on_packed_rings() {
    virtio_user_drives_our_backend('p', "packed_vq=1,in_order=0");
}

#[test]
fn dpdk_virtio_user_drives_our_vhost_user_backend_on_packed_in_order_rings() {
    virtio_user_drives_our_backend('q', "packed_vq=1,in_order=1");
}

/// DPDK's virtio-user PMD on the ring layout `rings` (its devargs) drives our backend;
/// `tag` keeps the names of the tests running at once apart.
fn virtio_user_drives_our_backend(tag: char, rings: &str) {
    testpmd();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let pid = std::process::id();
    let tap = format!("vlvu{tag}{pid}");
    let socket = dir.path().join("vhost.sock");
    let out = dir.path().join("out.pcap");
    let mut peers = Peers::new(dir.path());

    // Our backend moves frames between its TAP (created with IPv6 off) and the frontend.
    let mut serve = Command::new(vlab());
    serve
        .args(["vhost-user-backend", "--socket"])
        .arg(&socket)
        .args(["--tap", &tap]);
    let backend = peers.start("vlab vhost-user-backend", serve, false);
    peers.wait_until("the backend's socket to listen", START_TIMEOUT, |_| {
        listening(&socket)
    });

    // One virtio-user port, forwarded to itself (loop topology), frames unchanged (io).
    let testpmd = peers.start(
        "testpmd",
        testpmd_command(
            None,
            dir.path(),
            &format!("vlab-vu{tag}-{pid}"),
            &[format!(
                "net_virtio_user0,path={},queues=1,{rings}",
                socket.display()
            )],
            &["--port-topology=loop"],
        ),
        true,
    );
    peers.wait_until("testpmd to start forwarding", START_TIMEOUT, |p| {
        p.log(testpmd).contains(TESTPMD_READY)
    });

    // Only now, with testpmd's port started, does input reach the backend: vlab's TAP
    // harness injects the case and the end marker, and captures what comes back out.
    let input = match device_model::pcap::read(&case(), usize::MAX) {
        Ok(c) => c,
        Err(e) => peers.fail(&format!("reading the case: {e}")),
    };
    let frames = input.frames.len() as u64;
    let counters = match TapCounters::new(&tap) {
        Ok(c) => c,
        Err(e) => peers.fail(&format!("the counters of {tap}: {e}")),
    };
    let started = (|| -> Result<(TapHarness, u64), String> {
        let base = counters.written_by_device().map_err(|e| e.to_string())?;
        let out = PcapOut::create(&out, input.resolution).map_err(|e| e.to_string())?;
        // testpmd's rings (1024 entries each way) stand between the two TAP ends.
        let device = DeviceSide::rings(1024, 1518);
        let mut h = TapHarness::new(&tap, input.frames, true, None, device, Some(out))
            .map_err(|e| e.to_string())?;
        h.start(NetShared::new(&NetConfig::default()))
            .map_err(|e| e.to_string())?;
        Ok((h, base))
    })();
    let (harness, base) = match started {
        Ok(h) => h,
        Err(e) => peers.fail(&format!("starting the TAP harness on {tap}: {e}")),
    };
    // All is back once the backend has written the end marker into the TAP.
    peers.wait_until(
        "the end marker to come back out of the TAP",
        RUN_TIMEOUT,
        |_| {
            counters
                .written_by_device()
                .is_ok_and(|n| n.saturating_sub(base) > frames)
        },
    );
    if let Err(e) = harness.finish(true, false, true) {
        peers.fail(&format!("the TAP harness on {tap}: {e}"));
    }
    peers.quit_testpmd(testpmd);
    // Its frontend gone, the backend finishes and exits.
    peers.wait_success(backend, EXIT_TIMEOUT);
    peers.same_frames(&case(), &out);
}
