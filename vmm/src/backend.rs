//! The device's backend for a run, and what feeds and drains it.
//!
//! - rust: our datapath thread, between the run's endpoints (pcap, generator, loopback);
//!   with `--tap`, between the two ends of a TAP, the harness injecting and capturing on the
//!   interface.
//! - vhost-kernel: /dev/vhost-net on a TAP this creates; the harness injects and captures
//!   on the interface.
//! - vhost-user: a backend process on a socket (`--socket`), or, without one, our own
//!   vhost-user backend on a thread of this process with the run's pcap endpoints (a real
//!   socket and shared memory all the same). With `--tap NAME`, the harness injects into
//!   and captures on that (existing) interface, which the backend is expected to work.
//!
//! Nothing outside our datapath can say when its input is drained, so with a vhost backend
//! the input ends with an end marker that the guest forwards and the capture drops.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use device_model::endpoint::marker::{Marked, UntilMarker};
use device_model::endpoint::{
    self, GeneratorSource, NullSink, NullSource, PcapSink, PcapSource, Sink, Source, Timestamps,
};
use device_model::net::{Backend as NetBackend, NetConfig, NetCounters, NET_HDR_LEN};
use device_model::pcap::{Frame, PcapOut};
use device_model::tap::{Tap, TapFlow, TapSink, TapSource};
use device_model::vhost::kernel::KernelNet;
use device_model::vhost::user::UserNet;
use device_model::vhost::user_backend::{self, BackendConfig, Served};
use device_model::vhost::{Vhost, DATA_FEATURES};
use device_model::virtio::Memory;
use pcap_file::TsResolution;

use crate::args::Backend;
use crate::run::{Input, Mode, Output, RunConfig};
use crate::tap_harness::{DeviceSide, TapHarness};

/// How long to wait for our own vhost-user backend thread to listen.
/// The stop request of our in-process vhost-user backend, which is never made: the device
/// ends the connection when the run ends, however it ends.
static NEVER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--loopback cannot be combined with --pcap-out")]
    LoopbackWithOutput,
    #[error("{0} takes its input from --pcap-in (or none), not from --gen or --loopback")]
    InputKind(&'static str),
    #[error(
        "--backend vhost-user --socket: the backend owns the endpoints; give --pcap-in and \
         --pcap-out to `vlab vhost-user-backend`, or --tap for the interface it works"
    )]
    ExternalEndpoints,
    #[error("--backend vhost-kernel works through a TAP; --tap NAME names it")]
    KernelNeedsTap,
    #[error(transparent)]
    Pcap(#[from] device_model::pcap::Error),
    #[error(transparent)]
    Tap(#[from] device_model::tap::Error),
    #[error("TAP {name}: {what}: {source}")]
    TapIo {
        name: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    TapHarness(#[from] crate::tap_harness::Error),
    #[error(transparent)]
    Vhost(#[from] device_model::vhost::Error),
    #[error("vhost-user backend (in vlab): {0}")]
    BuiltIn(String),
}

/// The input, read and checked before anything is created.
pub struct Inputs {
    pub frames: Vec<Frame>,
    pub resolution: TsResolution,
}

/// A backend ready to be put behind the device, and the pieces that live beside it for the
/// run.
pub struct Prepared {
    pub backend: NetBackend,
    /// Injection and capture on a TAP.
    pub harness: Option<TapHarness>,
    /// Our own vhost-user backend thread.
    pub builtin: Option<BuiltIn>,
    /// The guest stops at the end marker instead of the harness's drained bit.
    pub end_marker: bool,
    /// Keeps a TAP we created alive until the run is over.
    pub tap: Option<Arc<Tap>>,
}

/// Builds the backend `cfg` asks for on guest memory `mem`.
pub fn prepare(
    cfg: &RunConfig,
    net: &NetConfig,
    mem: &Arc<Memory>,
    inputs: Inputs,
) -> Result<Prepared, Error> {
    let Inputs { frames, resolution } = inputs;
    // Output timestamps follow the input's (see `Timestamps`).
    let stamps = Timestamps::new(frames.iter().map(|f| f.ts).collect());
    let pcap_out = |path: &Path| PcapOut::create(path, resolution);
    let output = || -> Result<Option<PcapOut>, Error> {
        Ok(match &cfg.output {
            Output::Pcap(path) => Some(pcap_out(path)?),
            Output::Discard => None,
        })
    };
    let tap_input = |what| match &cfg.input {
        Input::Pcap(_) | Input::None => Ok(()),
        Input::Generator { .. } | Input::Loopback => Err(Error::InputKind(what)),
    };
    // What the device side can hold between the TAP and the capture, and what a guest
    // sending of its own puts through a backend that does not wait for the capture.
    let device = DeviceSide {
        unpaced: match cfg.mode {
            Mode::TxOnly => cfg.guest.pkts.unwrap_or(0),
            _ => 0,
        },
        ..DeviceSide::rings(net.queue_size, net.max_frame)
    };
    match (cfg.backend, &cfg.tap) {
        (Backend::Rust, None) => {
            let source: Box<dyn Source> = match &cfg.input {
                Input::Pcap(_) => Box::new(PcapSource::new(frames)),
                Input::Generator { frames, size } => {
                    Box::new(GeneratorSource::new(*frames, *size, net.mac))
                }
                Input::Loopback | Input::None => Box::new(NullSource),
            };
            let (source, sink): (Box<dyn Source>, Box<dyn Sink>) = match (&cfg.input, &cfg.output) {
                (Input::Loopback, Output::Pcap(_)) => return Err(Error::LoopbackWithOutput),
                (Input::Loopback, Output::Discard) => {
                    let (s, k) = endpoint::loopback();
                    (Box::new(s), Box::new(k))
                }
                (_, Output::Pcap(path)) => {
                    (source, Box::new(PcapSink::new(pcap_out(path)?, stamps)))
                }
                (_, Output::Discard) => (source, Box::<NullSink>::default()),
            };
            Ok(plain(NetBackend::Rust { source, sink }))
        }
        (Backend::Rust, Some(name)) => {
            tap_input("--tap")?;
            let out = output()?;
            // The header on the TAP is between our datapath and the kernel: the modern size.
            let tap = Tap::open(name, NET_HDR_LEN, net.max_frame)?;
            let flow = Arc::new(TapFlow::default());
            let dup = |source| Error::TapIo {
                name: name.clone(),
                what: "dup",
                source,
            };
            let source = TapSource::new(&tap, NET_HDR_LEN, Some(flow.clone())).map_err(dup)?;
            let sink = TapSink::new(&tap, NET_HDR_LEN, Some(flow.clone())).map_err(dup)?;
            let harness = TapHarness::new(name, frames, false, Some(flow), device, out)?;
            Ok(Prepared {
                backend: NetBackend::Rust {
                    source: Box::new(source),
                    sink: Box::new(sink),
                },
                harness: Some(harness),
                builtin: None,
                end_marker: false,
                tap: Some(Arc::new(tap)),
            })
        }
        (Backend::VhostKernel, tap) => {
            let name = tap.as_ref().ok_or(Error::KernelNeedsTap)?;
            tap_input("--backend vhost-kernel")?;
            let out = output()?;
            let tap = Arc::new(Tap::open(name, NET_HDR_LEN, net.max_frame)?);
            let vhost = Vhost::new(KernelNet::open(mem.clone(), tap.clone())?)?;
            vhost.check_features(net.features)?;
            let harness = TapHarness::new(name, frames, true, None, device, out)?;
            Ok(Prepared {
                backend: NetBackend::Vhost(Box::new(vhost)),
                harness: Some(harness),
                builtin: None,
                end_marker: true,
                tap: Some(tap),
            })
        }
        (Backend::VhostUser, tap) => {
            // The input goes to our own backend, or to the harness on the backend's TAP.
            let (socket, builtin, frames) = match &cfg.vhost_socket {
                Some(socket) => {
                    let endpoints = matches!(cfg.input, Input::Pcap(_) | Input::Generator { .. })
                        || matches!(cfg.output, Output::Pcap(_));
                    if endpoints && tap.is_none() {
                        return Err(Error::ExternalEndpoints);
                    }
                    (socket.clone(), None, frames)
                }
                None => {
                    if tap.is_some() {
                        return Err(Error::BuiltIn(
                            "--tap with vhost-user needs --socket: the interface belongs to \
                             the backend process"
                                .into(),
                        ));
                    }
                    tap_input("--backend vhost-user")?;
                    let b = BuiltIn::spawn(net, frames, stamps, output()?)?;
                    (b.socket.clone(), Some(b), Vec::new())
                }
            };
            let vhost = Vhost::new(UserNet::connect(&socket)?)?;
            vhost.check_features(net.features)?;
            let harness = match tap {
                Some(name) => {
                    tap_input("--tap")?;
                    // What the backend process holds is its own: our rings' size stands in.
                    let out = output()?;
                    Some(TapHarness::new(name, frames, true, None, device, out)?)
                }
                None => None,
            };
            Ok(Prepared {
                backend: NetBackend::Vhost(Box::new(vhost)),
                harness,
                builtin,
                end_marker: true,
                tap: None,
            })
        }
    }
}

fn plain(backend: NetBackend) -> Prepared {
    Prepared {
        backend,
        harness: None,
        builtin: None,
        end_marker: false,
        tap: None,
    }
}

/// Our vhost-user backend on a thread of this process, serving one connection with pcap
/// endpoints; the socket lives in a private temporary directory.
pub struct BuiltIn {
    socket: PathBuf,
    _dir: tempfile::TempDir,
    thread: JoinHandle<Result<Served, user_backend::Error>>,
}

/// What our vhost-user backend did.
pub struct BuiltInEnd {
    pub counters: NetCounters,
    pub output_frames: u64,
}

impl BuiltIn {
    fn spawn(
        net: &NetConfig,
        frames: Vec<Frame>,
        stamps: Timestamps,
        out: Option<PcapOut>,
    ) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("vlab-vhost-user")
            .tempdir()
            .map_err(|e| Error::BuiltIn(format!("creating a socket directory: {e}")))?;
        let socket = dir.path().join("backend.sock");
        let source: Box<dyn Source> = Box::new(Marked::new(PcapSource::new(frames)));
        let sink: Box<dyn Sink> = match out {
            Some(out) => Box::new(UntilMarker::new(PcapSink::new(out, stamps), false)),
            None => Box::new(UntilMarker::new(NullSink::default(), false)),
        };
        let cfg = BackendConfig {
            features: DATA_FEATURES,
            queue_size: net.queue_size,
            max_frame: net.max_frame,
        };
        let path = socket.clone();
        let thread = std::thread::Builder::new()
            .name("vlab-vhost-user-backend".into())
            .spawn(move || user_backend::serve(&path, cfg, source, sink, None, &NEVER))
            .map_err(|e| Error::BuiltIn(format!("starting the backend thread: {e}")))?;
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        while !socket.exists() {
            if thread.is_finished() || Instant::now() > deadline {
                let why = match thread.join() {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("not listening on {} in time", socket.display()),
                };
                return Err(Error::BuiltIn(why));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Self {
            socket,
            _dir: dir,
            thread,
        })
    }

    /// Waits for the backend to see the frontend go (call after the device let go of the
    /// session) and, when `keep`, writes its output: every frame it received, however the
    /// run ended.
    pub fn finish(self, keep: bool) -> Result<BuiltInEnd, Error> {
        let served = self
            .thread
            .join()
            .map_err(|_| Error::BuiltIn("the backend thread panicked".into()))?
            .map_err(|e| Error::BuiltIn(e.to_string()))?;
        let Served { stats, mut sink } = served;
        if keep {
            sink.finish()
                .map_err(|e| Error::BuiltIn(format!("finishing the output: {e}")))?;
        }
        Ok(BuiltInEnd {
            counters: stats,
            output_frames: sink.frames(),
        })
    }
}

/// Counters of the run: the device's own, with the data side's from our vhost-user backend
/// when it served the queues.
pub fn merge(device: NetCounters, data: Option<&NetCounters>) -> NetCounters {
    let Some(d) = data else {
        return device;
    };
    NetCounters {
        ctrl_ok: device.ctrl_ok,
        ctrl_err: device.ctrl_err,
        kicks: [d.kicks[0], d.kicks[1], device.kicks[2]],
        interrupts: device.interrupts,
        input_drained: d.input_drained,
        ..d.clone()
    }
}
