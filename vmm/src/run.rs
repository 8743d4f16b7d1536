//! One run, from configuration to report: load and check the inputs, build the board, run a
//! machine, stop the backend, commit the outputs.
//!
//! Inputs are validated before any output exists, so bad input or a failed set-up leaves no
//! output at all. Once the guest's port is up, the outputs are written however the run
//! ends: a run that fails then (watchdog, backend failure, a signal) keeps every frame
//! captured until the failure, in a valid capture, and its error says so.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use device_model::endpoint::marker::END_ETHERTYPE;
use device_model::endpoint::{self};
use device_model::net::{NetConfig, NetCounters};
use device_model::pcap;
use device_model::virtio_pci::{Options, TransportStats};
use pcap_file::TsResolution;
use pmd::harness::event;

use crate::backends::tap_harness::TapHarness;
use crate::backends::{self, Inputs, Prepared};
use crate::board::serial::Echo;
use crate::board::{self, Board, BoardConfig, MsiCounter, NetPortConfig};
use crate::config::{BackendKind, GuestArgs, Input, MachineKind, Mode, Output, RunConfig};
use crate::machine::{self, inprocess, kvm};

/// Ports a guest can have: the PMD's interrupt plan has room for this many.
pub const MAX_PORTS: usize = pmd::net::irq::MAX_PORTS as usize;

/// What a finished run produced.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub machine: MachineKind,
    pub backend: BackendKind,
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
    /// The guest's own port statistics, when vlab neither owns the datapath nor captures
    /// the output (an external vhost-user backend with its own endpoints): then the device
    /// counters are all zero and the summary reports these instead.
    pub guest_figures: Option<GuestFigures>,
    /// Whether the input ended with the end marker the guest forwards and stops at.
    pub end_marker: bool,
    /// Every port, in slot order; the fields above are port 0's.
    pub ports: Vec<PortReport>,
}

/// What one port did.
#[derive(Clone, Debug)]
pub struct PortReport {
    pub backend: BackendKind,
    pub counters: NetCounters,
    pub input_frames: usize,
    pub output_frames: u64,
    /// Features the driver accepted on this port.
    pub features: u64,
    pub transport: TransportStats,
    pub device_errors: u64,
    pub guest_figures: Option<GuestFigures>,
    /// Features the device did not offer because the backend lacks them, with the reason.
    pub fallbacks: Vec<String>,
}

/// The figures of the guest's testpmd-style "NIC statistics" block in its log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestFigures {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
}

impl GuestFigures {
    /// Reads the last statistics block the guest printed (`RX-packets: N  RX-missed: ..`,
    /// `RX-errors: N`, `TX-packets: N  TX-errors: N ..`); `None` when it printed none.
    pub fn from_log(log: &[u8]) -> Option<Self> {
        let text = String::from_utf8_lossy(log);
        let start = text.rfind("NIC statistics for port")?;
        let mut figures = GuestFigures::default();
        let mut seen = 0;
        for line in text[start..].lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let value = |key: &str| {
                let at = words.iter().position(|w| *w == key)?;
                words.get(at + 1)?.parse::<u64>().ok()
            };
            if let (Some(rx), true) = (value("RX-packets:"), line.contains("RX-missed:")) {
                figures.rx_packets = rx;
                seen |= 1;
            }
            if let Some(e) = value("RX-errors:") {
                figures.rx_errors = e;
            }
            if let (Some(tx), Some(e)) = (value("TX-packets:"), value("TX-errors:")) {
                figures.tx_packets = tx;
                figures.tx_errors = e;
                seen |= 2;
            }
        }
        (seen == 3).then_some(figures)
    }
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
        let mut s = match &self.guest_figures {
            Some(g) => format!(
                "vlab: {verdict}: machine={} backend={} (external: figures from the guest's \
                 port statistics) received={} sent={} errors={}{}",
                self.machine.name(),
                self.backend.name(),
                g.rx_packets,
                g.tx_packets,
                g.rx_errors + g.tx_errors,
                if self.end_marker {
                    " (the guest's counts include the end marker)"
                } else {
                    ""
                },
            ),
            None => format!(
                "vlab: {verdict}: machine={} backend={} in={} delivered={} out={} drops={}",
                self.machine.name(),
                self.backend.name(),
                self.input_frames,
                c.rx_delivered,
                self.output_frames,
                c.rx_dropped + c.tx_dropped + c.rx_malformed + c.tx_malformed,
            ),
        };
        for (k, p) in self.ports.iter().enumerate().skip(1) {
            s.push_str(&format!(
                " port{k}=backend:{},in:{},delivered:{},out:{}",
                p.backend.name(),
                p.input_frames,
                p.counters.rx_delivered,
                p.output_frames
            ));
        }
        let f = &c.faults;
        if f.dropped + f.duplicated + f.reordered > 0 {
            s.push_str(&format!(
                " faults=dropped:{},duplicated:{},reordered:{}",
                f.dropped, f.duplicated, f.reordered
            ));
        }
        if let Some(t) = self.link_up {
            s.push_str(&format!(" link-up={:.1}ms", t.as_secs_f64() * 1e3));
        }
        let fallbacks: Vec<&str> = self
            .ports
            .iter()
            .flat_map(|p| p.fallbacks.iter().map(String::as_str))
            .collect();
        if !fallbacks.is_empty() {
            s.push_str(&format!(" not-offered=[{}]", fallbacks.join("; ")));
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
        match &self.guest_figures {
            Some(g) => g.rx_packets.max(g.tx_packets),
            None => self.counters.rx_delivered.max(self.output_frames),
        }
    }

    /// Frames per second over the forwarding phase, counting `frames`.
    pub fn rate(&self, frames: u64) -> Option<f64> {
        let t = self.forwarding?.as_secs_f64();
        (t > 0.0).then(|| frames as f64 / t)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a run has 1 to {MAX_PORTS} virtio-net ports ({0} given)")]
    Ports(usize),
    #[error(transparent)]
    Pcap(#[from] pcap::Error),
    #[error(transparent)]
    Board(#[from] board::Error),
    #[error("{0}")]
    Image(String),
    #[error(transparent)]
    Machine(#[from] machine::Error),
    #[error("stopping the backend: {0}")]
    Stop(#[from] device_model::net::Error),
    #[error("finishing the output: {0}")]
    Output(#[from] endpoint::SinkError),
    #[error(transparent)]
    Backend(#[from] crate::backends::Error),
    #[error(transparent)]
    TapHarness(#[from] crate::backends::tap_harness::Error),
    #[error(transparent)]
    Device(#[from] crate::config::args::Error),
    /// The run failed once the guest was running; the output was still written.
    #[error("{source}; {path} keeps the {frames} frames captured before", path = path.display())]
    Kept {
        source: Box<Error>,
        path: PathBuf,
        frames: u64,
    },
}

impl Error {
    /// The signal that stopped the run, if one did.
    pub fn signal(&self) -> Option<crate::signals::Signal> {
        match self {
            Error::Machine(machine::Error::Signal(s, _)) => Some(*s),
            Error::Kept { source, .. } => source.signal(),
            _ => None,
        }
    }
}

/// The guest application's command line.
pub fn cmdline(mode: Mode, guest: &GuestArgs) -> String {
    let mut words = vec![format!("mode={}", mode.name())];
    words.extend(guest.cmdline_words());
    words.join(" ")
}

/// One port's set-up before the board exists: its device, its inputs, its backend.
struct PortSetup {
    net: NetConfig,
    transport: Options,
    input_frames: usize,
    prepared: Prepared,
}

/// What became of one port once the run ended.
struct PortEnd {
    sink: Box<dyn endpoint::Sink>,
    stopped: Result<(), device_model::net::Error>,
    captured: Result<Option<u64>, Error>,
    data_side: Result<Option<backends::builtin::BuiltInEnd>, Error>,
    finished: Result<(), endpoint::SinkError>,
}

/// Runs `cfg` to completion. `t0` is when the caller started (link-up is measured from it).
pub fn run(cfg: &RunConfig, t0: Instant) -> Result<RunReport, Error> {
    if cfg.ports.is_empty() || cfg.ports.len() > MAX_PORTS {
        return Err(Error::Ports(cfg.ports.len()));
    }
    // Inputs first, every port's: nothing is created until they are known to be good.
    let mut devices = Vec::new();
    for (k, port) in cfg.ports.iter().enumerate() {
        let (mut net, transport) = port.device.apply(NetConfig {
            datapath_cpu: cfg.datapath_cpu,
            // The guest application tells the harness when its ports are ready (FWD_START).
            hold_input: true,
            ..NetConfig::default()
        })?;
        // Each port its own address, as QEMU numbers its NICs: 52:54:00:12:34:56, :57, ...
        net.mac[5] = net.mac[5].wrapping_add(k as u8);
        let inputs = match &port.input {
            Input::Pcap(path) => {
                let cap = pcap::read(path, net.max_frame)?;
                Inputs {
                    frames: cap.frames,
                    resolution: cap.resolution,
                }
            }
            _ => Inputs {
                frames: Vec::new(),
                resolution: TsResolution::MicroSecond,
            },
        };
        devices.push((net, transport, inputs));
    }
    let kernel = match cfg.machine {
        MachineKind::Kvm => Some(match &cfg.kernel {
            Some(k) => k.clone(),
            None => crate::machine::image::default_image().map_err(Error::Image)?,
        }),
        MachineKind::InProcess => None,
    };

    let mem = board::guest_memory(cfg.ram)?;
    let mut setups = Vec::new();
    for (port, (net, transport, inputs)) in cfg.ports.iter().zip(devices) {
        let input_frames = match &port.input {
            Input::Pcap(_) => inputs.frames.len(),
            Input::Generator { frames, .. } => *frames as usize,
            Input::Loopback | Input::None => 0,
        };
        let prepared = backends::prepare(cfg, port, &net, &mem, inputs)?;
        setups.push(PortSetup {
            net,
            transport,
            input_frames,
            prepared,
        });
    }
    let end_marker = setups.iter().any(|s| s.prepared.end_marker);
    let mut guest = cfg.guest.clone();
    if end_marker && guest.end_ethertype.is_none() {
        guest.end_ethertype = Some(format!("{END_ETHERTYPE:x}"));
    }
    let mut cmdline = cmdline(cfg.mode, &guest);
    if cfg.ports.len() > 1 {
        cmdline.push_str(&format!(" ports={}", cfg.ports.len()));
    }

    let echo = if cfg.echo_serial {
        Echo::Stream(Box::new(std::io::stdout()))
    } else {
        Echo::None
    };
    let board_cfg = BoardConfig {
        ram: cfg.ram,
        nets: setups
            .iter()
            .map(|s| NetPortConfig {
                net: s.net.clone(),
                transport: s.transport,
            })
            .collect(),
    };
    let mut backends = Vec::new();
    let mut harnesses = Vec::new();
    let mut builtins = Vec::new();
    let mut taps = Vec::new();
    let mut input_frames = Vec::new();
    let mut fallbacks = Vec::new();
    for s in setups {
        let Prepared {
            backend,
            harness,
            builtin,
            end_marker: _,
            tap,
            fallbacks: why,
        } = s.prepared;
        fallbacks.push(why);
        backends.push(backend);
        harnesses.push(harness);
        builtins.push(builtin);
        taps.push(tap);
        input_frames.push(s.input_frames);
    }
    let start_harnesses = |board: &Board, hs: &mut [Option<TapHarness>]| -> Result<(), Error> {
        for (h, net) in hs.iter_mut().zip(&board.nets) {
            if let Some(h) = h.as_mut() {
                h.start(net.lock().device().shared())?;
            }
        }
        Ok(())
    };
    let (board, result) = match &kernel {
        Some(image) => {
            let vm = kvm::KvmVm::new(&cfg.kvm_device, cfg.needs_interrupts())
                .map_err(machine::Error::from)?;
            let board = Board::new(&board_cfg, mem, backends, vm.msi_sink(), echo)?;
            start_harnesses(&board, &mut harnesses)?;
            let r = vm.run(&board, image, &cmdline, cfg.timeout, cfg.guest_cpu);
            (board, r)
        }
        None => {
            let irq = Arc::new(MsiCounter::default());
            let board = Board::new(&board_cfg, mem, backends, irq.clone(), echo)?;
            start_harnesses(&board, &mut harnesses)?;
            let r = inprocess::run(&board, irq, &cmdline, cfg.timeout, cfg.guest_cpu);
            (board, r)
        }
    };
    // Stop every port's backend whatever happened; its sink holds the output. A vhost
    // session is closed here, which ends our own vhost-user backend's connection.
    let mut ends = Vec::new();
    for net in &board.nets {
        let (sink, stopped) = net.lock().device_mut().shutdown();
        ends.push((sink, stopped));
    }
    let completed = result.is_ok() && ends.iter().all(|(_, s)| s.is_ok());
    // A run that failed once the guest's ports were up (no frame moves before) keeps every
    // frame captured until then, in a valid capture, for whoever looks into the failure;
    // one that failed before (a bad image, a guest that never came up) leaves no output.
    // Only a completed run waits for the last frames still in flight.
    let keep = completed || board.bus.harness.event_time(event::LINK_UP).is_some();
    let forwarded = board.bus.harness.event_time(event::FWD_DONE).is_some();
    let ends: Vec<PortEnd> = ends
        .into_iter()
        .zip(harnesses)
        .zip(builtins)
        .map(|(((mut sink, stopped), harness), builtin)| {
            let captured = harness
                .map(|h| h.finish(completed, forwarded, keep))
                .transpose()
                .map_err(Error::from);
            let data_side = builtin
                .map(|b| b.finish(keep))
                .transpose()
                .map_err(Error::from);
            let finished = if keep { sink.finish() } else { Ok(()) };
            PortEnd {
                sink,
                stopped,
                captured,
                data_side,
                finished,
            }
        })
        .collect();
    drop(taps);
    // Who wrote each port's output: the TAP harness, our vhost-user backend, or the
    // device's sink.
    let output_frames: Vec<u64> = ends
        .iter()
        .map(|e| match (&e.captured, &e.data_side) {
            (Ok(Some(n)), _) => *n,
            (_, Ok(Some(d))) => d.output_frames,
            _ => e.sink.frames(),
        })
        .collect();
    let written = ends
        .iter()
        .all(|e| e.captured.is_ok() && e.data_side.is_ok() && e.finished.is_ok());
    // The first port whose output was kept names it in the error.
    let kept = cfg
        .ports
        .iter()
        .zip(&output_frames)
        .find_map(|(p, &frames)| match &p.output {
            Output::Pcap(path) if keep && written && path.is_file() => Some((path, frames)),
            _ => None,
        });
    let failed = |e: Error| -> Error {
        match kept {
            Some((path, frames)) => Error::Kept {
                source: Box::new(e),
                path: path.clone(),
                frames,
            },
            None => e,
        }
    };
    let exit_code = result.map_err(|e| failed(e.into()))?;
    let mut reports = Vec::new();
    for (k, e) in ends.into_iter().enumerate() {
        e.stopped.map_err(|e| failed(e.into()))?;
        let captured = e.captured?;
        let data_side = e.data_side?;
        e.finished?;
        let net = board.nets[k].lock();
        let port = &cfg.ports[k];
        // Nobody here saw the frames when an external backend serves its own endpoints.
        let external = captured.is_none() && data_side.is_none() && !port.backend.observed();
        reports.push(PortReport {
            backend: port.backend.kind(),
            counters: backends::merge(
                board.nets[k].stats.snapshot(),
                data_side.as_ref().map(|d| &d.counters),
            ),
            input_frames: input_frames[k],
            output_frames: output_frames[k],
            features: net.driver_features(),
            transport: net.stats,
            device_errors: net.health().errors(),
            guest_figures: external
                .then(|| GuestFigures::from_log(&board.serial_log()))
                .flatten(),
            fallbacks: std::mem::take(&mut fallbacks[k]),
        });
    }

    let harness = &board.bus.harness;
    let at = |e| harness.event_time(e);
    let first = reports[0].clone();
    Ok(RunReport {
        machine: cfg.machine,
        backend: first.backend,
        exit_code,
        counters: first.counters,
        input_frames: first.input_frames,
        output_frames: first.output_frames,
        guest_figures: first.guest_figures,
        serial: board.serial_log(),
        end_marker,
        features: first.features,
        transport: first.transport,
        device_errors: first.device_errors,
        link_up: at(event::LINK_UP).map(|t| t.saturating_duration_since(t0)),
        forwarding: at(event::FWD_START)
            .zip(at(event::FWD_DONE))
            .map(|(a, b)| b.saturating_duration_since(a)),
        ports: reports,
    })
}

#[cfg(test)]
mod tests {
    use super::GuestFigures;

    #[test]
    fn guest_figures_come_from_the_last_nic_statistics_block() {
        let log = b"Port 0: started io forwarding
  ######################## NIC statistics for port 0  ########################
  RX-packets: 1          RX-missed: 0          RX-bytes:  60
  RX-errors: 0
  TX-packets: 1          TX-errors: 0          TX-bytes:  60
  ######################## NIC statistics for port 0  ########################
  RX-packets: 250        RX-missed: 0          RX-bytes:  1080
  RX-errors: 3
  RX-nombuf:  0
  TX-packets: 247        TX-errors: 2          TX-bytes:  1080
  RX-multiseg: 0         TX-multiseg: 0         TX-indirect: 0
vlab-pmd: PASS
";
        assert_eq!(
            GuestFigures::from_log(log),
            Some(GuestFigures {
                rx_packets: 250,
                tx_packets: 247,
                rx_errors: 3,
                tx_errors: 2,
            })
        );
        assert_eq!(GuestFigures::from_log(b"vlab-pmd: PASS\n"), None);
        // A block cut off before its TX line is not a figure.
        assert_eq!(
            GuestFigures::from_log(
                b"NIC statistics for port 0\n  RX-packets: 5  RX-missed: 0  RX-bytes: 9\n"
            ),
            None
        );
    }
}
