//! One run, from configuration to report: load and check the inputs, build the board, run a
//! machine, stop the backend, commit the outputs.
//!
//! Inputs are validated before any output exists; outputs are committed only when the guest
//! ended through the exit port, so a failed run leaves no half-written capture.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use device_model::endpoint::{
    self, GeneratorSource, NullSink, NullSource, PcapSink, PcapSource, Sink, Source, Timestamps,
};
use device_model::net::{NetConfig, NetCounters};
use device_model::pcap::{self, PcapOut};
use device_model::virtio_pci::TransportStats;
use pcap_file::TsResolution;
use pmd::harness::event;
pub use pmd::testpmd::Mode;

use crate::args::{DeviceArgs, GuestArgs};
use crate::board::{self, Board, BoardConfig, MsiCounter};
use crate::machine::{self, inprocess, kvm};
use crate::serial::Echo;
use crate::tap_harness::TapHarness;
use device_model::net::NET_HDR_LEN;
use device_model::tap::{Injection, Tap, TapSink, TapSource};
use std::sync::atomic::Ordering;

/// Which machine runs the guest code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineKind {
    /// The PVH guest image on a KVM vCPU.
    Kvm,
    /// The `pmd` crate on a host thread, no KVM.
    InProcess,
}

impl MachineKind {
    pub fn name(self) -> &'static str {
        match self {
            MachineKind::Kvm => "kvm",
            MachineKind::InProcess => "inprocess",
        }
    }
}

/// Where frames for the guest come from.
#[derive(Clone, Debug)]
pub enum Input {
    Pcap(PathBuf),
    /// `frames` generated UDP frames of `size` bytes (benchmarks).
    Generator {
        frames: u64,
        size: usize,
    },
    /// Whatever the guest transmits comes back to it.
    Loopback,
    None,
}

/// Where the frames the guest transmits go.
#[derive(Clone, Debug)]
pub enum Output {
    Pcap(PathBuf),
    Discard,
}

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub machine: MachineKind,
    /// What the guest application does with frames.
    pub mode: Mode,
    /// The guest application's port setup.
    pub guest: GuestArgs,
    /// The device as the host presents it.
    pub device: DeviceArgs,
    /// Guest image for the KVM machine; `None` picks the built `pmd-guest`.
    pub kernel: Option<PathBuf>,
    /// The KVM device node.
    pub kvm_device: PathBuf,
    pub input: Input,
    pub output: Output,
    /// Guest RAM in bytes.
    pub ram: u64,
    /// Watchdog: a run that takes longer fails.
    pub timeout: Duration,
    /// Echo the guest's serial output to stdout as it arrives.
    pub echo_serial: bool,
    /// CPU for the guest's thread (vCPU or in-process driver); `None`: the scheduler's.
    pub guest_cpu: Option<usize>,
    /// CPU for the backend's datapath thread.
    pub datapath_cpu: Option<usize>,
    /// Put the device's traffic through this TAP: the input is injected into the interface
    /// and the output captured there.
    pub tap: Option<String>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            machine: MachineKind::Kvm,
            mode: Mode::Io,
            guest: GuestArgs::default(),
            device: DeviceArgs::default(),
            kernel: None,
            kvm_device: PathBuf::from("/dev/kvm"),
            input: Input::None,
            output: Output::Discard,
            ram: 128 << 20,
            timeout: Duration::from_secs(60),
            echo_serial: false,
            guest_cpu: None,
            datapath_cpu: None,
            tap: None,
        }
    }
}

/// What a finished run produced.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub machine: MachineKind,
    /// The guest's exit code (0: every check of the application passed).
    pub exit_code: u32,
    pub counters: NetCounters,
    pub input_frames: usize,
    pub output_frames: u64,
    /// Everything the guest printed.
    pub serial: Vec<u8>,
    /// Features the driver accepted.
    pub features: u64,
    /// What the transport refused of the driver.
    pub transport: TransportStats,
    /// Times the device set DEVICE_NEEDS_RESET.
    pub device_errors: u64,
    /// From the start of the run to the guest reporting link up.
    pub link_up: Option<Duration>,
    /// From the guest starting to forward to its last frame completing.
    pub forwarding: Option<Duration>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.exit_code == pmd::harness::exit::PASS
    }

    /// The `vlab run` summary line.
    pub fn summary(&self) -> String {
        let c = &self.counters;
        let verdict = if self.passed() {
            "PASS".to_string()
        } else {
            format!("FAIL (guest exit code {})", self.exit_code)
        };
        let mut s = format!(
            "vlab: {verdict}: machine={} in={} delivered={} out={} drops={}",
            self.machine.name(),
            self.input_frames,
            c.rx_delivered,
            self.output_frames,
            c.rx_dropped + c.tx_dropped + c.rx_malformed + c.tx_malformed,
        );
        if let Some(t) = self.link_up {
            s.push_str(&format!(" link-up={:.1}ms", t.as_secs_f64() * 1e3));
        }
        if let (Some(t), Some(r)) = (self.forwarding, self.rate(self.frames_moved())) {
            s.push_str(&format!(
                " forwarding={:.1}ms rate={:.2}Mpps",
                t.as_secs_f64() * 1e3,
                r / 1e6
            ));
        }
        s
    }

    /// Frames through the guest in its busier direction: what a rate counts.
    pub fn frames_moved(&self) -> u64 {
        self.counters.rx_delivered.max(self.output_frames)
    }

    /// Frames per second over the forwarding phase, counting `frames`.
    pub fn rate(&self, frames: u64) -> Option<f64> {
        let t = self.forwarding?.as_secs_f64();
        (t > 0.0).then(|| frames as f64 / t)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Pcap(#[from] pcap::Error),
    #[error(transparent)]
    Board(#[from] board::Error),
    #[error("{0}")]
    Image(String),
    #[error(transparent)]
    Machine(#[from] machine::Error),
    #[error("stopping the backend: {0}")]
    Backend(#[from] device_model::net::Error),
    #[error("finishing the output: {0}")]
    Output(#[from] endpoint::SinkError),
    #[error("--loopback cannot be combined with --pcap-out")]
    LoopbackWithOutput,
    #[error("--tap takes its input from --pcap-in (or none), not from --gen or --loopback")]
    TapInput,
    #[error(transparent)]
    Tap(#[from] device_model::tap::Error),
    #[error(transparent)]
    TapHarness(#[from] crate::tap_harness::Error),
    #[error(transparent)]
    Device(#[from] crate::args::Error),
}

impl RunConfig {
    /// The guest application's command line.
    pub fn cmdline(&self) -> String {
        let mut words = vec![format!("mode={}", self.mode.name())];
        words.extend(self.guest.cmdline_words());
        words.join(" ")
    }

    /// Whether the KVM machine needs an interrupt controller: only link-state interrupts
    /// use one, and it costs milliseconds to create.
    pub fn needs_interrupts(&self) -> bool {
        self.guest.wants_interrupts() || self.device.link_flap.is_some()
    }
}

/// Runs `cfg` to completion. `t0` is when the caller started (link-up is measured from it).
pub fn run(cfg: &RunConfig, t0: Instant) -> Result<RunReport, Error> {
    let (net, transport) = cfg.device.apply(NetConfig {
        datapath_cpu: cfg.datapath_cpu,
        // The guest application tells the harness when its port is ready (FWD_START).
        hold_input: true,
        ..NetConfig::default()
    })?;
    // Inputs first: nothing is created until they are known to be good.
    let (source, stamps, resolution, input_frames): (Box<dyn Source>, _, _, _) = match &cfg.input {
        Input::Pcap(path) => {
            let cap = pcap::read(path, net.max_frame)?;
            let n = cap.frames.len();
            let stamps = Timestamps::new(cap.frames.iter().map(|f| f.ts).collect());
            (
                Box::new(PcapSource::new(cap.frames)),
                stamps,
                cap.resolution,
                n,
            )
        }
        Input::Generator { frames, size } => (
            Box::new(GeneratorSource::new(*frames, *size, net.mac)),
            Timestamps::default(),
            TsResolution::MicroSecond,
            *frames as usize,
        ),
        Input::Loopback | Input::None => (
            Box::new(NullSource),
            Timestamps::default(),
            TsResolution::MicroSecond,
            0,
        ),
    };
    let kernel = match cfg.machine {
        MachineKind::Kvm => Some(match &cfg.kernel {
            Some(k) => k.clone(),
            None => crate::image::default_image().map_err(Error::Image)?,
        }),
        MachineKind::InProcess => None,
    };

    let mut tap = None;
    let (source, sink): (Box<dyn Source>, Box<dyn Sink>) = match (&cfg.input, &cfg.output) {
        _ if cfg.tap.is_some() => {
            let name = cfg.tap.as_deref().unwrap_or_default();
            let frames = match &cfg.input {
                Input::Pcap(path) => pcap::read(path, net.max_frame)?.frames,
                Input::None => Vec::new(),
                Input::Generator { .. } | Input::Loopback => return Err(Error::TapInput),
            };
            let out = match &cfg.output {
                Output::Pcap(path) => Some(PcapOut::create(path, resolution)?),
                Output::Discard => None,
            };
            // The header on the TAP is between our datapath and the kernel: the modern size.
            let t = Tap::open(name, NET_HDR_LEN, net.max_frame)?;
            let injection = Arc::new(Injection::default());
            if frames.is_empty() {
                injection.done.store(true, Ordering::Release);
            }
            let tap_io = |e| {
                Error::Tap(device_model::tap::Error::Ioctl {
                    name: name.to_string(),
                    what: "dup",
                    source: e,
                })
            };
            let source =
                TapSource::new(&t, NET_HDR_LEN, Some(injection.clone())).map_err(tap_io)?;
            let sink = TapSink::new(&t, NET_HDR_LEN).map_err(tap_io)?;
            let written = sink.counter();
            tap = Some(TapHarness::new(t, frames, injection, out, written));
            (Box::new(source), Box::new(sink))
        }
        (Input::Loopback, Output::Pcap(_)) => return Err(Error::LoopbackWithOutput),
        (Input::Loopback, Output::Discard) => {
            let (s, k) = endpoint::loopback();
            (Box::new(s), Box::new(k))
        }
        (_, Output::Pcap(path)) => (
            source,
            Box::new(PcapSink::new(PcapOut::create(path, resolution)?, stamps)),
        ),
        (_, Output::Discard) => (source, Box::new(NullSink::default())),
    };

    let echo = if cfg.echo_serial {
        Echo::Stream(Box::new(std::io::stdout()))
    } else {
        Echo::None
    };
    let board_cfg = BoardConfig {
        ram: cfg.ram,
        net,
        transport,
    };
    let cmdline = cfg.cmdline();
    let start_tap = |board: &Board, tap: &mut Option<TapHarness>| -> Result<(), Error> {
        if let Some(t) = tap.as_mut() {
            t.start(board.net().device().shared())?;
        }
        Ok(())
    };
    let (board, result) = match &kernel {
        Some(image) => {
            let vm = kvm::KvmVm::new(&cfg.kvm_device, cfg.needs_interrupts())
                .map_err(machine::Error::from)?;
            let board = Board::new(&board_cfg, source, sink, vm.msi_sink(), echo)?;
            start_tap(&board, &mut tap)?;
            let r = vm.run(&board, image, &cmdline, cfg.timeout, cfg.guest_cpu);
            (board, r)
        }
        None => {
            let irq = Arc::new(MsiCounter::default());
            let board = Board::new(&board_cfg, source, sink, irq.clone(), echo)?;
            start_tap(&board, &mut tap)?;
            let r = inprocess::run(&board, irq, &cmdline, cfg.timeout, cfg.guest_cpu);
            (board, r)
        }
    };
    // Stop the backend whatever happened; its sink holds the output.
    let (features, transport, device_errors) = {
        let net = board.net();
        (net.driver_features(), net.stats, net.health().errors())
    };
    let shutdown = board.net().device_mut().shutdown();
    // The TAP's capture is final only for a run that completed; either way its threads stop.
    let captured = match tap {
        Some(t) => Some(t.finish(result.is_ok() && shutdown.is_ok())?),
        None => None,
    };
    let exit_code = result?;
    let mut sink = shutdown?;
    sink.finish()?;

    let harness = &board.bus.harness;
    let at = |e| harness.event_time(e);
    Ok(RunReport {
        machine: cfg.machine,
        exit_code,
        counters: board.net_stats.snapshot(),
        input_frames,
        output_frames: captured.unwrap_or_else(|| sink.frames()),
        serial: board.serial_log(),
        features,
        transport,
        device_errors,
        link_up: at(event::LINK_UP).map(|t| t.saturating_duration_since(t0)),
        forwarding: at(event::FWD_START)
            .zip(at(event::FWD_DONE))
            .map(|(a, b)| b.saturating_duration_since(a)),
    })
}
