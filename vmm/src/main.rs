//! `vlab`: run a virtio-net driver against virtio-lab's device model, on KVM or in-process.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use vmm::config::{Backend, BackendKind, DeviceArgs, GuestArgs, PortConfig, PortSpec, RingPath};
use vmm::config::{Input, MachineKind, Mode, Output, RunConfig};

/// Exit status when vlab itself fails (bad input, no KVM, a crashed guest, a timeout), as
/// opposed to the guest's own verdict (0 pass, 1-5 see `pmd::harness::exit`).
const HARNESS_FAILURE: u8 = 70;

#[derive(Parser)]
#[command(
    name = "vlab",
    version,
    about = "A KVM test harness for virtio-net drivers and backends"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter for vlab's own diagnostics (tracing syntax, e.g. `debug`, `device_model=trace`).
    /// Default `warn`; `off` for `vlab test`, whose verdicts carry their reasons (the hostile
    /// cases alone would log hundreds of device warnings, each expected).
    #[arg(long, global = true, env = "VLAB_LOG")]
    log: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Boot the guest driver against the device and run one case.
    Run(Box<RunArgs>),
    /// Work with pcap files.
    #[command(subcommand)]
    Pcap(PcapCommand),
    /// Run a bug bundle (`vlab run --record DIR`) again and report identical, or the first
    /// divergence.
    Replay {
        /// The bundle directory.
        dir: PathBuf,
        /// Run it on this backend instead of the recorded one (rust, rust-tap,
        /// vhost-kernel, vhost-user) and compare as `vlab compare` does: the guest's
        /// verdict and the output. Faults only the rust backend injects are left out and
        /// named.
        #[arg(long, value_enum)]
        backend: Option<BackendKind>,
        /// Run it on this machine instead of the recorded one.
        #[arg(long, value_enum)]
        machine: Option<MachineArg>,
    },
    /// Run suites: every case on both machines and every backend in scope and available.
    Test(TestArgs),
    /// Run cases on several backends and compare each output with the rust backend's.
    Compare(CompareArgs),
    /// Serve the rust datapath to one vhost-user frontend (vlab, QEMU, DPDK's virtio_user).
    VhostUserBackend(vmm::backends::process::BackendArgs),
}

#[derive(Subcommand)]
enum PcapCommand {
    /// Print one line per frame: length, MACs, VLAN, L3/L4 summary, CRC-32 of the bytes.
    Show {
        /// The pcap file.
        file: PathBuf,
    },
    /// Build a pcap from a readable packet spec (TOML; see testcases/specs/example.toml).
    Build {
        /// The spec.
        spec: PathBuf,
        /// The pcap to write (replaced atomically).
        #[arg(short, long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Forward every received frame unchanged.
    Io,
    /// Forward with source and destination MAC swapped.
    Macswap,
    /// Receive and count.
    Rxonly,
    /// Send --pkts generated UDP frames of --size bytes.
    Txonly,
    /// Abuse the device with malformed rings and registers (--seed, --rounds), then forward
    /// the rest of the input and --pkts generated frames.
    Hostile,
}

#[derive(Clone, Copy, ValueEnum)]
enum MachineArg {
    /// The guest image on a KVM vCPU (needs /dev/kvm).
    Kvm,
    /// The same driver code on a host thread, no KVM.
    Inprocess,
}

#[derive(Args)]
struct RunArgs {
    /// Frames to deliver to the guest (classic pcap, Ethernet).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["gen", "loopback"])]
    pcap_in: Option<PathBuf>,
    /// Where the frames the guest transmits are written (classic pcap), through a temporary
    /// file renamed into place: a run that completes writes every frame; one that fails after
    /// the guest's link came up keeps the frames captured until then (and says so); one that
    /// fails earlier leaves no file.
    #[arg(long, value_name = "FILE")]
    pcap_out: Option<PathBuf>,
    /// Forwarding mode of the guest application.
    #[arg(long, value_enum)]
    mode: ModeArg,
    /// Who serves the device's data queues.
    #[arg(long, value_enum, default_value = "rust")]
    backend: BackendKind,
    /// vhost-user: the backend's socket (e.g. `vlab vhost-user-backend --socket PATH`).
    /// Without it vlab starts its own vhost-user backend on a thread, with the pcap files.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// What runs the driver.
    #[arg(long, value_enum, default_value = "kvm")]
    machine: MachineArg,
    /// PVH guest image (default: the built images/pmd-guest).
    #[arg(long, value_name = "ELF")]
    kernel: Option<PathBuf>,
    /// KVM device node (for hosts that put it elsewhere, and for tests).
    #[arg(long, value_name = "PATH", default_value = "/dev/kvm")]
    kvm_device: PathBuf,
    /// Generate N frames on the backend side instead of reading a pcap (benchmarks).
    #[arg(long, value_name = "N")]
    gen: Option<u64>,
    /// Size of generated frames in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64, requires = "gen")]
    gen_size: usize,
    /// Put the device's traffic through this TAP: the pcap input is injected into the
    /// interface and the output captured there. rust and vhost-kernel create it (or attach
    /// to a persistent one); with vhost-user --socket it is the backend's interface.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["gen", "loopback"])]
    tap: Option<String>,
    /// Give the guest another virtio-net port (repeatable; port 0 is described by the
    /// other flags): a TOML inline table of `backend`, `tap`, `socket`, `pcap-in`,
    /// `pcap-out`, `loopback` and `device` (the device flags as a table), e.g.
    /// `--port 'backend = "rust", pcap-in = "b.pcap", device = { max-frame = 9018 }'`.
    #[arg(long = "port", value_name = "TABLE", value_parser = PortSpec::parse)]
    ports: Vec<PortSpec>,
    /// Loop the guest's transmitted frames back to its receive queue.
    #[arg(long, conflicts_with = "pcap_out")]
    loopback: bool,
    /// Guest RAM in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 128)]
    mem: u64,
    /// Watchdog in seconds: a run that takes longer fails loudly.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    timeout: u64,
    /// Pin the guest's thread and the backend's datapath thread to these two CPUs (both poll;
    /// sharing a CPU they take turns). Benchmarks use it.
    #[arg(long, value_name = "GUEST,BACKEND", value_parser = cpu_pair)]
    cpus: Option<(usize, usize)>,
    /// Do not echo the guest's serial output.
    #[arg(long, short)]
    quiet: bool,
    /// Write a bug bundle of the run into DIR (input, configuration, seeds, versions,
    /// output, guest log, negotiated features), for `vlab replay DIR`.
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    #[command(flatten, next_help_heading = "Guest port setup")]
    guest: GuestArgs,
    #[command(flatten, next_help_heading = "Device")]
    device: DeviceArgs,
}

impl RunArgs {
    fn config(&self) -> Result<RunConfig, vmm::config::backend::Error> {
        let input = match (&self.pcap_in, self.gen, self.loopback) {
            (Some(p), _, _) => Input::Pcap(p.clone()),
            (None, Some(frames), _) => Input::Generator {
                frames,
                size: self.gen_size,
            },
            (None, None, true) => Input::Loopback,
            (None, None, false) => Input::None,
        };
        let output = match &self.pcap_out {
            Some(p) => Output::Pcap(p.clone()),
            None => Output::Discard,
        };
        let mut ports = vec![PortConfig {
            device: self.device.clone(),
            backend: Backend::from_args(self.backend, self.tap.clone(), self.socket.clone())?,
            input,
            output,
        }];
        for p in &self.ports {
            ports.push(p.port()?);
        }
        Ok(RunConfig {
            machine: machine_kind(self.machine),
            mode: match self.mode {
                ModeArg::Io => Mode::Io,
                ModeArg::Macswap => Mode::MacSwap,
                ModeArg::Rxonly => Mode::RxOnly,
                ModeArg::Txonly => Mode::TxOnly,
                ModeArg::Hostile => Mode::Hostile,
            },
            guest: self.guest.clone(),
            ports,
            kernel: self.kernel.clone(),
            kvm_device: self.kvm_device.clone(),
            ram: self.mem << 20,
            timeout: Duration::from_secs(self.timeout),
            echo_serial: !self.quiet,
            guest_cpu: self.cpus.map(|c| c.0),
            datapath_cpu: self.cpus.map(|c| c.1),
        })
    }
}

#[derive(Args)]
struct CompareArgs {
    /// Case directories (with case.toml), suites of them, or directories of suites.
    #[arg(required = true, value_name = "CASE")]
    cases: Vec<PathBuf>,
    /// Backends to run, compared with rust: rust-tap, vhost-kernel, vhost-user.
    #[arg(long, value_delimiter = ',', value_parser = BackendKind::parse,
          default_value = "rust,rust-tap,vhost-kernel,vhost-user")]
    backends: Vec<BackendKind>,
    /// What runs the driver.
    #[arg(long, value_enum, default_value = "kvm")]
    machine: MachineArg,
    /// Only this transport (default: every transport each case names).
    #[arg(long, value_enum)]
    transport: Option<vmm::config::args::Transport>,
    /// Run the backends on this datapath (split-mrg, packed-inorder-nomrg, ...; see `vlab
    /// test`'s verdict names), rust included, against rust on the case's own path
    /// (default: every backend on the case's own path).
    #[arg(long, value_name = "PATH", value_parser = RingPath::parse)]
    path: Option<RingPath>,
    /// Report backends this machine cannot run without failing.
    #[arg(long)]
    skip_unavailable: bool,
    /// Compare each case this many times (a flaky backend or capture shows as a failure
    /// in one of them).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
}

#[derive(Args)]
struct TestArgs {
    /// Case directories, suites of them, or directories of suites (default: testcases).
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Backends to run besides rust, the reference (unavailable ones are reported skipped).
    #[arg(long, value_delimiter = ',', value_parser = BackendKind::parse,
          default_value = "rust-tap,vhost-kernel,vhost-user")]
    backends: Vec<BackendKind>,
    /// Only verdicts whose name (`suite/case::transport::path::backend`) contains this
    /// (repeatable: any of them).
    #[arg(long, value_name = "TEXT")]
    filter: Vec<String>,
    /// Cases run at once (default: the CPUs available).
    #[arg(long, short, value_name = "N")]
    jobs: Option<usize>,
    /// Write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write a JSON report here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Run each verdict this many times; it passes only if every time passes (its reason
    /// names the first repetition that failed).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
}

/// `vlab test`: a progress bar on a terminal, a line per verdict otherwise; the summary table;
/// the reports. Exit status 0 only when every verdict passed.
fn test(args: &TestArgs) -> anyhow::Result<u8> {
    use std::io::IsTerminal;
    use vmm::suites::suite::{self, Outcome, Plan};
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("testcases")]
    } else {
        args.paths.clone()
    };
    let mut cases = Vec::new();
    for p in &paths {
        cases.extend(vmm::suites::compare::load_cases(p)?);
    }
    let plan = Plan {
        targets: args.backends.clone(),
        filters: args.filter.clone(),
        repeat: args.repeat,
        ..Plan::default()
    };
    let jobs = plan.jobs(&cases);
    let parallel = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let t0 = Instant::now();
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(jobs.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let done = |v: &suite::Verdict| {
        let word = match v.outcome {
            Outcome::Pass => "PASS",
            Outcome::Fail(_) => "FAIL",
            Outcome::Skipped(_) => "SKIP",
        };
        match &bar {
            Some(b) => {
                if matches!(v.outcome, Outcome::Fail(_)) {
                    b.println(format!("FAIL {}", v.name()));
                }
                b.set_message(v.name());
                b.inc(1);
            }
            None => println!("{word} {} ({} ms)", v.name(), v.duration.as_millis()),
        }
    };
    let verdicts = suite::run_jobs(&jobs, parallel, &done);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let elapsed = t0.elapsed();
    if let Some(path) = &args.junit {
        std::fs::write(path, suite::junit(&verdicts, elapsed))
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&suite::json(&verdicts, elapsed))?;
        std::fs::write(path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    print!("{}", suite::summary(&verdicts, elapsed));
    let failed = verdicts
        .iter()
        .any(|v| matches!(v.outcome, Outcome::Fail(_)));
    Ok(u8::from(failed || verdicts.is_empty()))
}

/// `vlab compare`: one line per case and transport for the reference, one per backend.
fn compare(args: &CompareArgs) -> anyhow::Result<u8> {
    let mut cases = Vec::new();
    for p in &args.cases {
        cases.extend(vmm::suites::compare::load_cases(p)?);
    }
    let machine = machine_kind(args.machine);
    let dir = tempfile::tempdir()?;
    let mut tally = vmm::suites::compare::Tally::default();
    let mut out = std::io::stdout().lock();
    for case in &cases {
        if vmm::signals::received().is_some() {
            let _ = writeln!(
                out,
                "vlab compare: interrupted; the cases left were not run"
            );
            break;
        }
        let transports: Vec<_> = case
            .spec
            .transports
            .iter()
            .copied()
            .filter(|t| args.transport.is_none_or(|only| only == *t))
            .collect();
        let runs = transports
            .iter()
            .flat_map(|&t| (1..=args.repeat).map(move |k| (t, k)));
        for (t, k) in runs {
            let (reference, outcomes) = vmm::suites::compare::compare_case(
                case,
                t,
                machine,
                &args.backends,
                args.path,
                dir.path(),
            )?;
            let repetition = if args.repeat > 1 {
                format!(", repetition {k} of {}", args.repeat)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "{} ({}{repetition}): rust: guest exit code {}, {} frames out",
                case.name,
                t.name(),
                reference.report.exit_code,
                reference.frames.len()
            );
            for (target, outcome) in &outcomes {
                tally.add(outcome);
                let _ = writeln!(out, "  {:<13} {outcome}", target.name());
            }
        }
    }
    let _ = writeln!(out, "vlab compare: {tally}");
    let unexplained = tally.differ + tally.failed;
    let missing = if args.skip_unavailable {
        0
    } else {
        tally.unavailable
    };
    Ok(u8::from(unexplained + missing > 0))
}

/// `vlab replay`: 0 when the run did the same again, 1 with the first divergence.
fn replay(
    dir: &std::path::Path,
    backend: Option<BackendKind>,
    machine: Option<MachineArg>,
) -> anyhow::Result<u8> {
    use vmm::suites::bundle::{Replay, ReplayOn};
    let on = ReplayOn {
        backend,
        machine: machine.map(machine_kind),
    };
    let (desc, r) = vmm::suites::bundle::replay(dir, on)?;
    let mut what = format!(
        "{} {} on {} ({} backend)",
        desc.mode,
        dir.display(),
        r.machine.name(),
        r.backend.name()
    );
    if r.elsewhere || r.machine.name() != desc.machine {
        what += &format!(
            ", recorded on {} ({} backend)",
            desc.machine,
            desc.backend.name()
        );
    }
    if !r.not_reproducible.is_empty() {
        println!(
            "vlab replay: faults only the rust backend injects, not reproducible on {}: {}",
            r.backend.name(),
            r.not_reproducible.join(", ")
        );
    }
    let line = match &r.verdict {
        Replay::Identical => format!(
            "vlab replay: {what}: identical (exit code {}, {} frames out)",
            desc.result.exit_code, desc.result.output_frames
        ),
        Replay::ExitCode { recorded, now } => {
            format!("vlab replay: {what}: DIVERGES: guest exit code: recorded {recorded}, now {now}")
        }
        Replay::Output(d) => format!(
            "vlab replay: {what}: DIVERGES at frame {}: {}: recorded {}, now {}",
            d.frame, d.field, d.reference, d.other
        ),
        Replay::Log {
            line,
            recorded,
            now,
        } => format!(
            "vlab replay: {what}: DIVERGES in the guest log at line {line}: recorded {recorded:?}, now {now:?}"
        ),
    };
    println!("{line}");
    Ok(u8::from(!matches!(r.verdict, Replay::Identical)))
}

fn machine_kind(m: MachineArg) -> MachineKind {
    match m {
        MachineArg::Kvm => MachineKind::Kvm,
        MachineArg::Inprocess => MachineKind::InProcess,
    }
}

fn cpu_pair(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("'{s}' is not two CPU numbers like 0,1");
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

fn run(args: &RunArgs, t0: Instant) -> anyhow::Result<u8> {
    let mut cfg = args.config()?;
    if let Some(dir) = &args.record {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        if matches!(cfg.port().output, Output::Discard) {
            cfg.port_mut().output = Output::Pcap(vmm::suites::bundle::output_path(dir));
        }
    }
    let report = vmm::run::run(&cfg, t0)?;
    if let Some(dir) = &args.record {
        if let Output::Pcap(out) = &cfg.port().output {
            let into = vmm::suites::bundle::output_path(dir);
            if out != &into && out.is_file() {
                std::fs::copy(out, &into).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
            }
        }
        let image = match (cfg.machine, &cfg.kernel) {
            (MachineKind::Kvm, Some(k)) => Some(k.clone()),
            (MachineKind::Kvm, None) => vmm::machine::image::default_image().ok(),
            (MachineKind::InProcess, _) => None,
        };
        vmm::suites::bundle::record(dir, &cfg, &report, image.as_deref())?;
    }
    // A closed stdout (`| head`) must not turn a finished run into a panic.
    let _ = writeln!(std::io::stdout(), "{}", report.summary());
    Ok(u8::try_from(report.exit_code).unwrap_or(u8::MAX))
}

fn pcap_build(spec: &std::path::Path, out: &std::path::Path) -> anyhow::Result<u8> {
    let frames = vmm::suites::pcap_spec::parse(spec)?;
    vmm::suites::pcap_spec::write(&frames, out)?;
    println!("vlab: wrote {} frames to {}", frames.len(), out.display());
    Ok(0)
}

fn pcap_show(file: &std::path::Path) -> anyhow::Result<u8> {
    let cap = device_model::pcap::read(file, usize::MAX)?;
    let text = vmm::suites::decode::frames(cap.frames.iter().map(|f| f.data.as_slice()));
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(0)
}

fn main() -> ExitCode {
    let t0 = Instant::now();
    let cli = Cli::parse();
    if let Command::Run(args) = &cli.command {
        if args.mode == ModeArg::Txonly && args.guest.pkts.unwrap_or(0) == 0 {
            use clap::CommandFactory;
            Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "--mode txonly needs --pkts N (N > 0)",
                )
                .exit();
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            cli.log.as_deref().unwrap_or(match cli.command {
                Command::Test(_) => "off",
                _ => "warn",
            }),
        ))
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = vmm::signals::install() {
        eprintln!("vlab: error: installing the SIGINT/SIGTERM handlers: {e}");
        return ExitCode::from(HARNESS_FAILURE);
    }
    let r = match &cli.command {
        Command::Run(args) => run(args, t0),
        Command::Pcap(PcapCommand::Show { file }) => pcap_show(file),
        Command::Pcap(PcapCommand::Build { spec, out }) => pcap_build(spec, out),
        Command::Compare(args) => compare(args),
        Command::Test(args) => test(args),
        Command::Replay {
            dir,
            backend,
            machine,
        } => replay(dir, *backend, *machine),
        Command::VhostUserBackend(args) => vmm::backends::process::run(args).map_err(Into::into),
    };
    let code = match r {
        Ok(code) => code,
        Err(e) => {
            // Every error's message already carries its cause: print the top one only.
            eprintln!("vlab: error: {e}");
            HARNESS_FAILURE
        }
    };
    // A signal decides the status, whatever the command made of being stopped.
    match vmm::signals::received() {
        Some(sig) => {
            if code != HARNESS_FAILURE {
                eprintln!("vlab: stopped by {sig}");
            }
            ExitCode::from(sig.exit_code())
        }
        None => ExitCode::from(code),
    }
}
