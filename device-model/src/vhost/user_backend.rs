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
//!
//! Several queue pairs: the backend has [`MAX_PAIRS`] (VHOST_USER_PROTOCOL_F_MQ,
//! GET_QUEUE_NUM), all served by one worker thread in a fixed order, and serves the first
//! pairs whose rings the frontend set up and enabled (SET_VRING_ENABLE); a disabled ring
//! is left alone. With no control queue of its own (the frontend keeps it, with any RSS
//! configuration), frames are spread over those pairs by the device's automatic steering
//! ([`crate::net::steering`]).
//!
//! Packed rings (VIRTIO_F_RING_PACKED) and in-order use (VIRTIO_F_IN_ORDER) are served
//! too. The crate's vrings hold `virtio-queue`'s split queue, which keeps what the frontend
//! set (size, addresses, base, readiness); a packed ring is served by a [`PackedQueue`]
//! built over those addresses (descriptor ring, driver and device event suppression), its
//! wrap counters taken from the base in vhost-user's packed encoding (bit 15: the wrap
//! counter; the used position starts where the avail one does, as DPDK's vhost starts
//! it). After each poll its position goes back into the vring, so GET_VRING_BASE answers in
//! the same encoding. The crate takes only power-of-2 ring sizes (it keeps the maximum
//! for any other), so a packed ring of another size cannot be served here.

use std::os::fd::RawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::Listener;
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringRwLock, VringState, VringT};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use super::relay::{self, Daemon};
use super::DATA_FEATURES;
use crate::endpoint::{Sink, SinkError, Source};
use crate::net::datapath::{DatapathEnd, Engine, EngineParts, Fatal, RxRings};
use crate::net::{NetConfig, NetShared, NetStats, QueueLayout};
use crate::queue::{
    DeviceQueue, Layout, PackedQueue, RingAddresses, RingConfig, RingPosition, SplitQueue,
};
use crate::virtio::{features as virtio_features, Health, Interrupt, Memory};

type Gm = GuestMemoryAtomic<GuestMemoryMmap<()>>;
type Vring = VringRwLock<Gm>;

/// Polls without work before the handler re-enables notifications and returns.
const IDLE_POLLS: u32 = 20_000;
/// Queue pairs the backend has: a frontend uses as many of them as it sets up and enables.
pub const MAX_PAIRS: u16 = 8;

/// The data queues: the pairs, without a control queue (the frontend keeps that).
fn layout() -> QueueLayout {
    QueueLayout::offered(MAX_PAIRS, 0)
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
    /// The virtio features the frontend acknowledged last.
    pub features: u64,
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
    /// The packed rings, by queue index, once served.
    packed: Vec<Option<PackedRing>>,
}

/// A packed ring served over a vring's settings.
struct PackedRing {
    /// What it was built from: a vring set up anew gets a new one.
    from: (RingAddresses, u16),
    queue: PackedQueue,
}

/// A vring's device side for one poll, in the negotiated layout.
enum Ring<'a> {
    Split(SplitQueue<&'a mut Queue>),
    Packed(&'a mut PackedQueue),
}

impl Ring<'_> {
    fn queue(&mut self) -> &mut dyn DeviceQueue {
        match self {
            Ring::Split(q) => q,
            Ring::Packed(q) => &mut **q,
        }
    }
}

/// Whether a vring is started (a kick descriptor and ring addresses: the queue is ready)
/// as well as enabled: QEMU enables the rings before it sets them up (see `relay`).
fn live(v: &VringState<Gm>) -> bool {
    v.is_enabled() && v.get_queue().ready()
}

/// The device side of `vring` for the features `acked`: its split queue, or the packed
/// ring over its settings, kept in `slot` (built, or built again when they changed).
fn ring<'a>(
    slot: &'a mut Option<PackedRing>,
    acked: u64,
    mem: &Memory,
    vring: &'a mut VringState<Gm>,
) -> Result<Ring<'a>, Fatal> {
    let in_order = acked & virtio_features::IN_ORDER != 0;
    if acked & virtio_features::RING_PACKED == 0 {
        let q = SplitQueue::wrap(vring.get_queue_mut()).with_in_order(in_order);
        return Ok(Ring::Split(q));
    }
    let q = vring.get_queue();
    let addresses = RingAddresses {
        desc: q.desc_table(),
        driver: q.avail_ring(),
        device: q.used_ring(),
    };
    let from = (addresses, q.size());
    let base = q.next_avail();
    let fresh = slot
        .as_ref()
        .is_some_and(|r| r.from == from && r.queue.position().next_avail == base);
    if !fresh {
        let cfg = RingConfig {
            layout: Layout::Packed,
            max_size: q.max_size(),
            size: q.size(),
            addresses,
            event_idx: acked & virtio_features::RING_EVENT_IDX != 0,
            in_order,
        };
        let mut queue = PackedQueue::new(&cfg, mem).map_err(Fatal::Vring)?;
        queue.set_position(RingPosition {
            next_avail: base,
            next_used: base,
        });
        *slot = Some(PackedRing { from, queue });
    }
    match slot {
        Some(r) => Ok(Ring::Packed(&mut r.queue)),
        None => Err(Fatal::Vring(crate::queue::Error::Ring(
            virtio_queue::Error::QueueNotReady,
        ))),
    }
}

/// The receive rings of a poll, pair k's at k (queue index 2k).
struct RxSet<'r, 'a>(&'r mut Vec<Ring<'a>>);

impl RxRings for RxSet<'_, '_> {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn ring(&mut self, pair: usize) -> (u16, &mut dyn DeviceQueue) {
        ((2 * pair) as u16, self.0[pair].queue())
    }
}

/// After a poll: the packed ring's position into the vring, for GET_VRING_BASE.
fn sync_base(packed: &[Option<PackedRing>], index: usize, vring: &mut VringState<Gm>) {
    if let Some(Some(r)) = packed.get(index) {
        let at = r.queue.position();
        let q = vring.get_queue_mut();
        q.set_next_avail(at.next_avail);
        q.set_next_used(at.next_used);
    }
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
                stats: Arc::new(NetStats::new(MAX_PAIRS)),
                shared: NetShared::new(&net_cfg),
                state: Mutex::new(State {
                    acked: 0,
                    event_idx: false,
                    mem: None,
                    endpoints: Some((source, sink)),
                    engine: None,
                    calls: Arc::default(),
                    health: Arc::default(),
                    packed: (0..layout().len()).map(|_| None).collect(),
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
                max_queue_pairs: MAX_PAIRS,
                ..NetConfig::default()
            };
            st.engine = Some(Engine::new(parts, &cfg));
        }
        st.engine.as_mut()
    }

    /// One poll of the pairs served (the first ones whose rings are live): their transmit
    /// queues in order, then the source's frames to their receive queues. Returns the work
    /// done (`None`: nothing can be served) and whether rx lacked buffers, per pair.
    fn poll(&self, vrings: &[Vring], starved: &mut [bool]) -> Result<Option<usize>, Fatal> {
        let mut st = self.state();
        let calls = st.calls.clone();
        let acked = st.acked;
        if self.engine(&mut st).is_none() {
            return Ok(None);
        }
        let State {
            engine: Some(engine),
            packed,
            mem: Some(mem),
            ..
        } = &mut *st
        else {
            return Ok(None);
        };
        let mem = mem.clone();
        if engine.health().needs_reset() {
            return Ok(None);
        }
        // The rings of the pairs served, locked in index order for the poll.
        let mut held = Vec::new();
        for pair in vrings.chunks_exact(2).take(usize::from(layout().pairs())) {
            let (rx, tx) = (pair[0].get_mut(), pair[1].get_mut());
            if !(live(&rx) && live(&tx)) {
                break;
            }
            held.push(rx);
            held.push(tx);
        }
        let pairs = held.len() / 2;
        if pairs == 0 {
            return Ok(None);
        }
        engine.serve_pairs(pairs as u16);
        let mut work = 0;
        let mut rx_rings = Vec::with_capacity(pairs);
        let rings = held.iter_mut().zip(packed.iter_mut());
        for (index, (vring, slot)) in rings.enumerate().take(2 * pairs) {
            let mut q = ring(slot, acked, &mem, vring)?;
            if index % 2 == 1 {
                work += engine.process_tx(index as u16, q.queue())?;
            } else {
                rx_rings.push(q);
            }
        }
        let (rx_done, rx_starved) = engine.process_rx_pairs(&mut RxSet(&mut rx_rings))?;
        drop(rx_rings);
        work += rx_done;
        for (index, vring) in held.iter_mut().enumerate().take(2 * pairs) {
            sync_base(packed, index, vring);
        }
        for (k, s) in starved.iter_mut().enumerate() {
            *s = rx_starved == Some(k);
        }
        drop(held);
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

    /// Turns the driver's notifications of the live vrings among `which` on or off;
    /// returns whether chains arrived meanwhile (turning them on).
    fn notify(&self, vrings: &[Vring], which: &[u16], on: bool) -> Result<bool, Fatal> {
        let mut st = self.state();
        let acked = st.acked;
        let State {
            packed,
            mem: Some(mem),
            ..
        } = &mut *st
        else {
            return Ok(false);
        };
        let mem = mem.clone();
        let mut pending = false;
        for &i in which {
            let i = usize::from(i);
            let Some(v) = vrings.get(i) else {
                continue;
            };
            let mut v = v.get_mut();
            if !live(&v) {
                continue;
            }
            let Some(slot) = packed.get_mut(i) else {
                continue;
            };
            let mut q = ring(slot, acked, &mem, &mut v)?;
            let q = q.queue();
            if on {
                pending |= q.enable_notification(&mem).map_err(Fatal::Vring)?;
            } else {
                q.disable_notification(&mem).map_err(Fatal::Vring)?;
            }
        }
        Ok(pending)
    }

    /// Polls until the queues stay idle, then turns notifications back on and returns.
    fn run(&self, vrings: &[Vring]) -> Result<(), Fatal> {
        let all: Vec<u16> = (0..layout().len()).collect();
        self.notify(vrings, &all, false)?;
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
            let mut wanted = Vec::new();
            for (pair, &starved) in (0..layout().pairs()).zip(&starved) {
                wanted.push(QueueLayout::tx(pair));
                if starved {
                    wanted.push(QueueLayout::rx(pair));
                }
            }
            if !self.notify(vrings, &wanted, true)? {
                return Ok(());
            }
            self.notify(vrings, &all, false)?;
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
            features: st.acked,
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
        // The rings are set up again for the new features.
        st.packed.iter_mut().for_each(|p| *p = None);
        if let Some(e) = st.engine.as_mut() {
            e.set_features(features);
        }
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::REPLY_ACK | VhostUserProtocolFeatures::MQ
    }

    /// One worker thread serves every queue, in a fixed order: the output does not depend
    /// on how threads are scheduled.
    fn queues_per_thread(&self) -> Vec<u64> {
        vec![(1u64 << self.num_queues()) - 1]
    }

    /// GET_VRING_BASE stops the ring: a packed one is built again from what the frontend
    /// sets next.
    fn stop_vring(&self, index: u32) -> std::io::Result<()> {
        if let Some(p) = self.state().packed.get_mut(index as usize) {
            *p = None;
        }
        Ok(())
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
