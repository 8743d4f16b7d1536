//! The rust datapath as a vhost-user backend: a frontend (vlab, QEMU, DPDK's virtio_user)
//! sends guest memory and rings over a UNIX socket; this serves the rx and tx queues with
//! the same [`Engine`](crate::net::datapath) as the in-process device, between the same
//! endpoints (pcap, TAP, loopback).
//!
//! The `vhost-user-backend` crate speaks the protocol and calls [`VhostUserBackend::handle_event`]
//! on a kick (or on the TAP turning readable). The handler then polls with notifications
//! off, as the in-process datapath does, and returns once the queues stay idle, with
//! notifications back on. The engine's state sits behind a mutex taken per poll, so the
//! protocol thread is never kept waiting for long.

use std::os::fd::RawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::Listener;
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringRwLock, VringState, VringT};
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use super::relay::{self, Daemon};
use super::DATA_FEATURES;
use crate::endpoint::{Sink, SinkError, Source};
use crate::net::datapath::{DatapathEnd, Engine, EngineParts, Fatal};
use crate::net::{NetConfig, NetShared, NetStats, QueueLayout};
use crate::queue::SplitQueue;
use crate::virtio::{Health, Interrupt, Memory};

type Gm = GuestMemoryAtomic<GuestMemoryMmap<()>>;
type Vring = VringRwLock<Gm>;

/// Polls without work before the handler re-enables notifications and returns.
const IDLE_POLLS: u32 = 20_000;
/// Queue pairs the backend serves.
const PAIRS: u16 = 1;

/// The data queues: the pairs, without a control queue (the frontend keeps that).
fn layout() -> QueueLayout {
    QueueLayout::offered(PAIRS, 0)
}

/// Epoll token for the source's descriptor: the crate's are the queues' indexes, then the
/// exit event.
fn source_event() -> u16 {
    layout().len() + 1
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("vhost-user backend on {socket}: {why}")]
    Daemon { socket: String, why: String },
    #[error("vhost-user backend: setting up its events: {0}")]
    Listener(#[source] std::io::Error),
    #[error("vhost-user backend: the datapath failed: {0}")]
    Datapath(String),
    #[error("vhost-user backend: finishing the output: {0}")]
    Output(#[from] SinkError),
}

/// How the backend presents itself.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// Virtio data features offered (a subset of [`DATA_FEATURES`]).
    pub features: u64,
    pub queue_size: u16,
    /// Largest frame carried; larger transmitted frames are dropped.
    pub max_frame: usize,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            features: DATA_FEATURES,
            queue_size: 1024,
            max_frame: crate::net::MAX_FRAME_LIMIT,
        }
    }
}

/// What one served connection did.
pub struct Served {
    pub stats: crate::net::NetCounters,
    /// The sink, not yet finished (the caller decides whether the output is complete).
    pub sink: Box<dyn Sink>,
}

/// Serves one frontend connection on `socket` (created, and removed again at the end), with
/// frames from `source` and into `sink`; `source_fd` wakes the handler when the source turns
/// readable (a TAP). Returns when the frontend disconnects, or when `stop` is set (before
/// or during the connection).
pub fn serve(
    socket: &Path,
    cfg: BackendConfig,
    source: Box<dyn Source>,
    sink: Box<dyn Sink>,
    source_fd: Option<RawFd>,
    stop: &AtomicBool,
) -> Result<Served, Error> {
    let backend = NetBackend::new(cfg, source, sink).map_err(Error::Listener)?;
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let daemon_err = |e: vhost_user_backend::Error| Error::Daemon {
        socket: socket.display().to_string(),
        why: e.to_string(),
    };
    let mut daemon =
        VhostUserDaemon::new("vlab-vhost-user".into(), backend.clone(), mem).map_err(daemon_err)?;
    if let Some(fd) = source_fd {
        for handler in daemon.get_epoll_handlers() {
            handler
                .register_listener(fd, EventSet::IN, u64::from(source_event()))
                .map_err(Error::Listener)?;
        }
    }
    let served = relay::serve(&mut daemon, socket, stop);
    // What `VhostUserDaemon::serve` does once the connection ends: the vring workers stop.
    let _ = backend.inner.exit.1.notify();
    let _ = std::fs::remove_file(socket);
    served.map_err(daemon_err)?;
    backend.finish()
}

#[derive(Clone)]
pub(super) struct NetBackend {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: BackendConfig,
    /// The crate ends its worker thread through this when the connection ends.
    exit: (EventConsumer, EventNotifier),
    stats: Arc<NetStats>,
    shared: Arc<NetShared>,
    state: Mutex<State>,
}

struct State {
    acked: u64,
    event_idx: bool,
    mem: Option<Arc<Memory>>,
    /// The endpoints until the engine takes them.
    endpoints: Option<(Box<dyn Source>, Box<dyn Sink>)>,
    engine: Option<Engine>,
    /// Set by the engine's interrupt, signalled once the vring locks are released.
    calls: Arc<PendingCalls>,
    health: Arc<Health>,
}

/// The engine's interrupts, noted to be signalled after the vrings are unlocked (signalling
/// takes the vring's lock).
struct PendingCalls {
    queues: Vec<AtomicBool>,
}

impl Default for PendingCalls {
    fn default() -> Self {
        Self {
            queues: (0..layout().len()).map(|_| AtomicBool::default()).collect(),
        }
    }
}

impl Interrupt for PendingCalls {
    fn queue(&self, queue: u16) {
        if let Some(q) = self.queues.get(usize::from(queue)) {
            q.store(true, Ordering::Release);
        }
    }

    fn config_changed(&self) {}
}

impl NetBackend {
    fn new(
        cfg: BackendConfig,
        source: Box<dyn Source>,
        sink: Box<dyn Sink>,
    ) -> std::io::Result<Self> {
        let net_cfg = NetConfig::default();
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                exit: new_event_consumer_and_notifier(EventFlag::NONBLOCK)?,
                stats: Arc::default(),
                shared: NetShared::new(&net_cfg),
                state: Mutex::new(State {
                    acked: 0,
                    event_idx: false,
                    mem: None,
                    endpoints: Some((source, sink)),
                    engine: None,
                    calls: Arc::default(),
                    health: Arc::default(),
                }),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The engine, built on first use from the memory and features the frontend sent.
    fn engine<'a>(&self, st: &'a mut State) -> Option<&'a mut Engine> {
        if st.engine.is_none() {
            let mem = st.mem.clone()?;
            let (source, sink) = st.endpoints.take()?;
            let parts = EngineParts {
                mem,
                negotiated: st.acked,
                interrupt: st.calls.clone(),
                health: st.health.clone(),
                source,
                sink,
                stats: self.inner.stats.clone(),
                shared: self.inner.shared.clone(),
            };
            let cfg = NetConfig {
                max_frame: self.inner.cfg.max_frame,
                ..NetConfig::default()
            };
            st.engine = Some(Engine::new(parts, &cfg));
        }
        st.engine.as_mut()
    }

    /// One poll of every queue pair; returns the work done and whether rx lacked buffers,
    /// per pair.
    fn poll(&self, vrings: &[Vring], starved: &mut [bool]) -> Result<Option<usize>, Fatal> {
        let mut st = self.state();
        let calls = st.calls.clone();
        let Some(engine) = self.engine(&mut st) else {
            return Ok(None);
        };
        if engine.health().needs_reset() {
            return Ok(None);
        }
        let mut work = 0;
        for (pair, starved) in (0..layout().pairs()).zip(starved) {
            let (rx_index, tx_index) = (QueueLayout::rx(pair), QueueLayout::tx(pair));
            let (Some(rx), Some(tx)) = (
                vrings.get(usize::from(rx_index)),
                vrings.get(usize::from(tx_index)),
            ) else {
                return Ok(None);
            };
            let mut rx = rx.get_mut();
            let mut tx = tx.get_mut();
            // Started (a kick descriptor and ring addresses: the queue is ready) as well as
            // enabled: QEMU enables the rings before it sets them up (see `relay`).
            let live = |v: &VringState<Gm>| v.is_enabled() && v.get_queue().ready();
            if !(live(&rx) && live(&tx)) {
                return Ok(None);
            }
            work += engine.process_tx(tx_index, &mut SplitQueue::wrap(tx.get_queue_mut()))?;
            let (rx_done, rx_starved) =
                engine.process_rx(rx_index, &mut SplitQueue::wrap(rx.get_queue_mut()))?;
            work += rx_done;
            *starved = rx_starved;
        }
        drop(st);
        for (q, pending) in calls.queues.iter().enumerate() {
            if pending.swap(false, Ordering::AcqRel) {
                if let Err(e) = vrings[q].signal_used_queue() {
                    tracing::warn!("vhost-user backend: signalling queue {q}: {e}");
                }
            }
        }
        Ok(Some(work))
    }

    /// Polls until the queues stay idle, then turns notifications back on and returns.
    fn run(&self, vrings: &[Vring]) -> Result<(), Fatal> {
        for v in vrings {
            v.disable_notification()
                .map_err(|e| Fatal::Vring(e.into()))?;
        }
        let mut starved = vec![false; usize::from(layout().pairs())];
        let mut idle = 0u32;
        loop {
            let Some(work) = self.poll(vrings, &mut starved)? else {
                return Ok(());
            };
            if work > 0 {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < IDLE_POLLS {
                std::hint::spin_loop();
                continue;
            }
            // Ask for kicks, then look once more: buffers may have come in meanwhile. Rx
            // kicks matter only when rx is out of buffers.
            let mut pending = false;
            for (pair, &starved) in (0..layout().pairs()).zip(&starved) {
                let tx = usize::from(QueueLayout::tx(pair));
                pending |= vrings[tx]
                    .enable_notification()
                    .map_err(|e| Fatal::Vring(e.into()))?;
                if starved {
                    let rx = usize::from(QueueLayout::rx(pair));
                    pending |= vrings[rx]
                        .enable_notification()
                        .map_err(|e| Fatal::Vring(e.into()))?;
                }
            }
            if !pending {
                return Ok(());
            }
            for v in vrings {
                v.disable_notification()
                    .map_err(|e| Fatal::Vring(e.into()))?;
            }
            idle = 0;
        }
    }

    /// After the connection ended: the counters and the sink.
    fn finish(&self) -> Result<Served, Error> {
        let mut st = self.state();
        if let Some(why) = self.inner.stats.failure() {
            return Err(Error::Datapath(why));
        }
        let sink = match (st.engine.take(), st.endpoints.take()) {
            (Some(engine), _) => {
                let DatapathEnd { sink, .. } = engine.into_end();
                sink
            }
            (None, Some((_, sink))) => sink,
            (None, None) => return Err(Error::Datapath("the endpoints were lost".into())),
        };
        Ok(Served {
            stats: self.inner.stats.snapshot(),
            sink,
        })
    }
}

impl VhostUserBackend for NetBackend {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        usize::from(layout().len())
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.inner.cfg.queue_size)
    }

    fn features(&self) -> u64 {
        (self.inner.cfg.features & DATA_FEATURES)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&self, features: u64) {
        let mut st = self.state();
        st.acked = features;
        if let Some(e) = st.engine.as_mut() {
            e.set_features(features);
        }
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::REPLY_ACK
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let (c, n) = &self.inner.exit;
        Some((c.try_clone().ok()?, n.try_clone().ok()?))
    }

    fn set_event_idx(&self, enabled: bool) {
        self.state().event_idx = enabled;
    }

    fn update_memory(&self, mem: Gm) -> std::io::Result<()> {
        let mem = mem.memory().into_inner();
        let mut st = self.state();
        if let Some(e) = st.engine.as_mut() {
            e.set_memory(mem.clone());
        }
        st.mem = Some(mem);
        Ok(())
    }

    fn handle_event(
        &self,
        _device_event: u16,
        _evset: EventSet,
        vrings: &[Vring],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        // Any event (a kick on either queue, the source turning readable) means: poll.
        self.run(vrings).map_err(|fatal| {
            let why = fatal.to_string();
            tracing::error!("vhost-user backend: {why}");
            self.inner.stats.set_failure(why.clone());
            std::io::Error::other(why)
        })
    }
}

impl Daemon for VhostUserDaemon<NetBackend> {
    fn start(&mut self, listener: &mut Listener) -> Result<(), vhost_user_backend::Error> {
        VhostUserDaemon::start(self, listener)
    }

    fn wait(&mut self) -> Result<(), vhost_user_backend::Error> {
        VhostUserDaemon::wait(self)
    }
}
