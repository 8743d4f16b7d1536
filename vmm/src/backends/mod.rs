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

pub mod builtin;
pub mod process;
pub mod tap_harness;

use std::path::Path;
use std::sync::Arc;

use device_model::endpoint::marker::{Marked, UntilMarker};
use device_model::endpoint::{
    self, GeneratorSource, NullSink, NullSource, PcapSink, PcapSource, Sink, Source, Timestamps,
};
use device_model::net::{Backend as NetBackend, NetConfig, NetCounters, NET_HDR_LEN};
use device_model::pcap::{Frame, PcapOut};
use device_model::tap::{Tap, TapFlow, TapSink, TapSource};
use device_model::vhost::kernel::KernelNet;
use device_model::vhost::user::UserNet;
use device_model::vhost::Vhost;
use device_model::virtio::Memory;
use pcap_file::TsResolution;

use self::builtin::BuiltIn;
use self::tap_harness::{DeviceSide, TapHarness};
use crate::config::{Backend, Input, Mode, Output, PortConfig, RunConfig};

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
    TapHarness(#[from] crate::backends::tap_harness::Error),
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
    /// Ring features the device does not offer because the vhost backend lacks them, each
    /// with the reason (`ring_packed: the vhost-kernel backend does not offer it`).
    pub fallbacks: Vec<String>,
}

/// Builds the backend of `port` (a port of run `cfg`) on guest memory `mem`.
pub fn prepare(
    cfg: &RunConfig,
    port: &PortConfig,
    net: &NetConfig,
    mem: &Arc<Memory>,
    inputs: Inputs,
) -> Result<Prepared, Error> {
    let Inputs { frames, resolution } = inputs;
    // Output timestamps follow the input's (see `Timestamps`).
    let stamps = Timestamps::new(frames.iter().map(|f| f.ts).collect());
    let pcap_out = |path: &Path| PcapOut::create(path, resolution);
    let output = || -> Result<Option<PcapOut>, Error> {
        Ok(match &port.output {
            Output::Pcap(path) => Some(pcap_out(path)?),
            Output::Discard => None,
        })
    };
    let tap_input = |what| match &port.input {
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
    // Whether the run ends on end markers: a port's backend is not ours.
    let marked = cfg.ports.iter().any(|p| {
        matches!(
            p.backend,
            Backend::VhostKernel { .. } | Backend::VhostUser { .. }
        )
    });
    // Which modes send the end marker back out (see pmd::testpmd's forwarding loop).
    let marker_back = matches!(cfg.mode, Mode::Io | Mode::MacSwap);
    match &port.backend {
        // Another port's backend is not ours: the guest stops at end markers, so this
        // port's input ends with one too and its output leaves it out.
        Backend::Rust if marked && matches!(port.input, Input::Pcap(_) | Input::None) => {
            let source: Box<dyn Source> = Box::new(Marked::new(PcapSource::new(frames)));
            let sink: Box<dyn Sink> = match &port.output {
                Output::Pcap(path) => Box::new(UntilMarker::new(
                    PcapSink::new(pcap_out(path)?, stamps),
                    false,
                )),
                Output::Discard => Box::new(UntilMarker::new(NullSink::default(), false)),
            };
            Ok(Prepared {
                end_marker: true,
                ..plain(NetBackend::Rust { source, sink })
            })
        }
        Backend::Rust => {
            let source: Box<dyn Source> = match &port.input {
                Input::Pcap(_) => Box::new(PcapSource::new(frames)),
                Input::Generator { frames, size } => {
                    Box::new(GeneratorSource::new(*frames, *size, net.mac))
                }
                Input::Loopback | Input::None => Box::new(NullSource),
            };
            let (source, sink): (Box<dyn Source>, Box<dyn Sink>) = match (&port.input, &port.output)
            {
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
        Backend::RustTap { tap: name } => {
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
            let harness = TapHarness::new(name, frames, marked, Some(flow), device, out)?
                .with_marker_back(marked && marker_back);
            Ok(Prepared {
                backend: NetBackend::Rust {
                    source: Box::new(source),
                    sink: Box::new(sink),
                },
                harness: Some(harness),
                builtin: None,
                end_marker: marked,
                tap: Some(Arc::new(tap)),
                fallbacks: Vec::new(),
            })
        }
        Backend::VhostKernel { tap: name } => {
            tap_input("--backend vhost-kernel")?;
            let out = output()?;
            let tap = Arc::new(Tap::open(name, NET_HDR_LEN, net.max_frame)?);
            let vhost = Vhost::new(KernelNet::open(mem.clone(), tap.clone())?)?;
            vhost.check_features(net.features)?;
            vhost.check_pairs(net.features, net.max_queue_pairs);
            let fallbacks = fallbacks(&vhost);
            let harness = TapHarness::new(name, frames, true, None, device, out)?
                .with_marker_back(marker_back);
            Ok(Prepared {
                backend: NetBackend::Vhost(Box::new(vhost)),
                harness: Some(harness),
                builtin: None,
                end_marker: true,
                tap: Some(tap),
                fallbacks,
            })
        }
        Backend::VhostUser { socket, tap } => {
            // The input goes to our own backend, or to the harness on the backend's TAP.
            let (socket, builtin, frames) = match socket {
                Some(socket) => {
                    let endpoints = matches!(port.input, Input::Pcap(_) | Input::Generator { .. })
                        || matches!(port.output, Output::Pcap(_));
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
            vhost.check_pairs(net.features, net.max_queue_pairs);
            let fallbacks = fallbacks(&vhost);
            let harness = match tap {
                Some(name) => {
                    tap_input("--tap")?;
                    // What the backend process holds is its own: our rings' size stands in.
                    let out = output()?;
                    Some(
                        TapHarness::new(name, frames, true, None, device, out)?
                            .with_marker_back(marker_back),
                    )
                }
                None => None,
            };
            Ok(Prepared {
                backend: NetBackend::Vhost(Box::new(vhost)),
                harness,
                builtin,
                end_marker: true,
                tap: None,
                fallbacks,
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
        fallbacks: Vec::new(),
    }
}

/// Why the device offers less than it could on this backend, one line per feature.
fn fallbacks<P: device_model::vhost::Peer>(vhost: &Vhost<P>) -> Vec<String> {
    vhost.fallbacks().iter().map(ToString::to_string).collect()
}

/// Counters of the run: the device's own, with the data side's from our vhost-user backend
/// when it served the queues.
pub fn merge(device: NetCounters, data: Option<&NetCounters>) -> NetCounters {
    let Some(d) = data else {
        return device;
    };
    // Our vhost-user backend counts the data queues' kicks, the device the control
    // queue's, which comes last.
    let mut kicks = d.kicks.clone();
    if let (Some(k), Some(ctrl)) = (kicks.last_mut(), device.kicks.last()) {
        *k = *ctrl;
    }
    NetCounters {
        ctrl_ok: device.ctrl_ok,
        ctrl_err: device.ctrl_err,
        kicks,
        interrupts: device.interrupts,
        input_drained: d.input_drained,
        ..d.clone()
    }
}
