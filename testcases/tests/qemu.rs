//! Our guest image on a device nobody here wrote: QEMU's own virtio-net-pci (TCG, q35 with
//! qboot), for a set of cases, on both transports. QEMU's netdev is a UDP socket pair the
//! test drives: once the guest says it is forwarding, the test sends the case's input and
//! then an end marker (ethertype 0x88b5), and collects what the guest transmits up to the
//! marker. The frames must be exactly those our device gives the same guest for the same
//! case: where they differ, one of the two devices is wrong (the virtio spec decides which),
//! and the difference is written down in [`KNOWN`].
//!
//! Needs qemu-system-x86_64 and qboot.rom (`make setup` installs them); without them these
//! tests fail and say so.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use device_model::endpoint::marker::{self, END_ETHERTYPE};
use libtest_mimic::{Arguments, Failed, Trial};
use testcases::{root, Case};
use vmm::config::args::{GuestArgs, Transport};
use vmm::config::MachineKind;

const QEMU: &str = "qemu-system-x86_64";
const QBOOT: &str = "/usr/share/qemu/qboot.rom";
const TIMEOUT: Duration = Duration::from_secs(60);

/// Why QEMU 10.0.2 passes tagged frames ours filters.
const VLAN_TABLE: &str = "QEMU 10.0.2 leaves its VLAN table all-accepting when the driver \
     negotiates VIRTIO_NET_F_CTRL_VLAN (its 2023 change to virtio_net_set_features), so with \
     promiscuous mode off it passes tagged frames of VLANs the driver never added. QEMU \
     upstream went back to an empty table on negotiation in 2025 (\"virtio-net: Fix VLAN filter \
     table reset timing\"), which is what ours does and what QEMU did before; the spec calls \
     VLAN filtering best-effort, so neither breaks a MUST, and ours is left as it is.";

/// Where QEMU's device and ours disagree: (case, the input frames QEMU passes that ours
/// filters, why). Input frames of the filter capture: 7 own MAC on VLAN 100, 8 own MAC on
/// VLAN 200, 10 broadcast on VLAN 100.
const KNOWN: &[(&str, &[usize], &str)] = &[
    ("features/promisc-off", &[7, 8, 10], VLAN_TABLE),
    ("features/allmulti", &[7, 8, 10], VLAN_TABLE),
    ("features/mac-table", &[7, 8, 10], VLAN_TABLE),
    ("features/mac-set", &[10], VLAN_TABLE),
    ("features/vlan-filter", &[8], VLAN_TABLE),
];

/// Cases whose device settings QEMU's defaults match.
const CASES: &[&str] = &[
    "basic/io-ntp",
    "basic/io-mixed",
    "basic/macswap-mixed",
    "features/mrg-small-buffers",
    "features/scattered-tx-indirect",
    "features/promisc-off",
    "features/allmulti",
    "features/mac-table",
    "features/mac-set",
    "features/vlan-filter",
    "features/vlan-strip-insert",
    "features/ctrl-unsupported",
];

/// Kills QEMU if the test ends early.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `packed`: QEMU's device offers packed rings too (`packed=on`), which our driver then
/// takes, so QEMU's packed-ring device serves our packed-ring driver.
fn cross_run(case: &Case, transport: Transport, packed: bool) -> Result<(), Failed> {
    let image = vmm::machine::image::default_image()?;
    if !Path::new(QBOOT).is_file() {
        return Err(format!("{QBOOT} is missing: run `make setup` (qemu-system-x86)").into());
    }
    // What our device gives the guest: the reference.
    let tmp = tempfile::tempdir()?;
    let ours = case.run(MachineKind::InProcess, transport, tmp.path())?;
    if !ours.report.passed() {
        return Err("the case does not pass on our device".into());
    }
    let input = case.input()?;
    let known = KNOWN.iter().find(|(name, _, _)| *name == case.name);

    let test_side = UdpSocket::bind("127.0.0.1:0")?;
    test_side.set_read_timeout(Some(Duration::from_millis(200)))?;
    let qemu_port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let cmdline = vmm::run::cmdline(
        case.mode,
        &GuestArgs {
            transport: Some(transport),
            end_ethertype: Some(format!("{END_ETHERTYPE:x}")),
            ..case.spec.guest.clone()
        },
    );
    let child = Command::new(QEMU)
        .args([
            "-accel",
            "tcg",
            "-M",
            "q35",
            "-bios",
            QBOOT,
            "-m",
            "128",
            "-nodefaults",
        ])
        .args([
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
            "-kernel",
        ])
        .arg(&image)
        .args(["-append", &cmdline])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
        .args([
            "-netdev",
            &format!(
                "socket,id=n0,udp={},localaddr=127.0.0.1:{qemu_port}",
                test_side.local_addr()?
            ),
        ])
        .args([
            "-device",
            &format!(
                "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,host_mtu=1500{}",
                if packed { ",packed=on" } else { "" }
            ),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{QEMU}: {e} (run `make setup`)"))?;
    let mut qemu = Guard(child);
    let stdout = qemu.0.stdout.take().ok_or("no QEMU stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + TIMEOUT;
    let mut log = String::new();
    // Wait until the guest's port is set up before sending.
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| format!("the guest never started forwarding under QEMU:\n{log}"))?;
        log.push_str(&line);
        log.push('\n');
        if line.starts_with("Port 0: started") {
            break;
        }
    }
    for f in &input {
        test_side.send_to(&f.data, ("127.0.0.1", qemu_port))?;
    }
    test_side.send_to(&marker::end_frame(), ("127.0.0.1", qemu_port))?;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        if Instant::now() > deadline {
            return Err(format!(
                "no end marker back from QEMU after {} frames:\n{log}",
                got.len()
            )
            .into());
        }
        if let Ok((n, _)) = test_side.recv_from(&mut buf) {
            if marker::is_end(&buf[..n]) {
                break;
            }
            got.push(buf[..n].to_vec());
        }
    }
    let status = loop {
        if let Some(s) = qemu.0.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            return Err(format!("QEMU did not exit; guest log so far:\n{log}").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    while let Ok(line) = rx.try_recv() {
        log.push_str(&line);
        log.push('\n');
    }
    // isa-debug-exit: QEMU exits with (code << 1) | 1; 1 is the guest's PASS.
    if status.code() != Some(1) {
        return Err(format!("guest under QEMU: exit status {status}:\n{log}").into());
    }
    // The ring layout the guest took is the one asked for: a packed trial that fell back
    // to split would prove nothing.
    let features = log
        .lines()
        .find(|l| l.starts_with("Port 0:") && l.contains(" features "))
        .unwrap_or("");
    if features.contains("RING_PACKED") != packed {
        return Err(format!("QEMU packed={packed}, but the guest negotiated: {features}").into());
    }
    let mut want: Vec<Vec<u8>> = ours.frames.iter().map(|f| f.data.clone()).collect();
    if let Some((_, extra, why)) = known {
        // Ours, with the input frames QEMU also passes, in input order (io cases only).
        let passed: Vec<&[u8]> = input
            .iter()
            .enumerate()
            .filter(|(i, f)| extra.contains(i) || want.contains(&f.data))
            .map(|(_, f)| f.data.as_slice())
            .collect();
        if got != want {
            want = passed.iter().map(|f| f.to_vec()).collect();
            eprintln!("known divergence in {}: {why}", case.name);
        } else {
            return Err(format!(
                "QEMU now agrees with our device on {}: remove it from KNOWN ({why})",
                case.name
            )
            .into());
        }
    }
    if got != want {
        let first = got.iter().zip(&want).position(|(a, b)| a != b);
        return Err(format!(
            "QEMU's device gave {} frames, ours {}; first difference at {:?}:\n--- QEMU\n{}--- ours\n{}",
            got.len(),
            want.len(),
            first,
            vmm::suites::decode::frames(got.iter().map(Vec::as_slice)),
            vmm::suites::decode::frames(want.iter().map(Vec::as_slice)),
        )
        .into());
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for name in CASES {
        let dir = root().join(name);
        let case = match Case::load(name.to_string(), dir) {
            Ok(c) => std::sync::Arc::new(c),
            Err(e) => {
                let msg = e.to_string();
                trials.push(Trial::test(format!("qemu/{name}"), move || Err(msg.into())));
                continue;
            }
        };
        for t in case.spec.transports.clone() {
            let c = case.clone();
            trials.push(Trial::test(
                format!("qemu/{name}::{}", t.name()),
                move || cross_run(&c, t, false),
            ));
            // Packed rings need VERSION_1: the modern transport only.
            if t == Transport::Modern && case.spec.guest.packed != Some(false) {
                let c = case.clone();
                trials.push(Trial::test(
                    format!("qemu/{name}::{}::packed", t.name()),
                    move || cross_run(&c, t, true),
                ));
            }
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
