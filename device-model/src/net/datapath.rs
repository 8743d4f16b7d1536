//! The rust backend's datapath: one thread serving the rx, tx and control queues of a
//! virtio-net device from a [`Source`] and into a [`Sink`].
//!
//! With several queue pairs in use, one pass serves the control queue, then the transmit
//! queues of the enabled pairs in order (pair 0, 1, ...), then the source's frames, each to
//! the receive queue [`Steering`] picks; a frame whose queue has no buffer waits at the
//! head of the source (the frames behind it wait too), so the order of delivery is the
//! input's whatever the queues. Queues of pairs the driver did not enable get no frames,
//! and what is transmitted on them is left in their rings.
//!
//! It polls while there is work and suppresses the driver's notifications meanwhile, so a
//! busy run has no notification exits at all; after a stretch of idle polls it re-enables
//! notifications and sleeps on the queues' kick eventfds. Used entries are published once
//! per batch ([`UsedBatch`]), which also makes a frame spread over mergeable buffers appear
//! at once.
//!
//! Every descriptor is guest input. Addresses are checked by `vm-memory` (nothing outside
//! guest RAM is touched), chain length and loops by `virtio-queue` and here; a bad chain is
//! returned unused or empty and counted, never trusted.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::chain::{self, ChainError, CtrlError};
use super::ctrl::{self, Effect};
use super::filter::RxFilter;
use super::queues::{QueueLayout, QueuePair, Role};
use super::steering::{Pick, Steering};
use super::{features, hdr_len, LinkFlap, NetConfig, NetShared, NetStats, NET_HDR_LEN_HASH};
use crate::endpoint::{Peek, Sink, SinkError, Source};
use crate::fault::{FaultConfig, Rng};
use crate::queue::{self, Chain, DeviceQueue};
use crate::used::UsedBatch;
use crate::virtio::{ActiveQueue, Health, Interrupt, Memory};

/// Chains served per queue before looking at the other queues.
const BUDGET: usize = 256;
/// Empty polls before the datapath enables notifications and sleeps.
const IDLE_POLLS_BEFORE_SLEEP: u32 = 20_000;
/// Longest sleep: bounds how late a stop request, a link flap or a source that turns ready
/// is seen.
const SLEEP_MS: i32 = 1;
/// The longest a flap holds the link down waiting for a notified driver to look.
const LINK_DOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A queue the datapath thread serves: the transport's, with its kick eventfd.
struct Served {
    index: u16,
    role: Role,
    queue: Box<dyn DeviceQueue>,
    kick: EventFd,
}

impl Served {
    fn new(q: ActiveQueue, role: Role) -> Self {
        Self {
            index: q.index,
            role,
            queue: q.queue,
            kick: q.kick,
        }
    }
}

/// One queue pair as the datapath serves it.
struct ServedPair {
    rx: Served,
    tx: Served,
    /// The receive queue ran out of buffers in the last poll.
    rx_starved: bool,
}

/// The receive queues of the pairs in use, for one pass of [`Engine::process_rx_pairs`]:
/// pair k's at k.
pub(crate) trait RxRings {
    fn count(&self) -> usize;
    /// Pair `pair`'s receive queue: its queue index and ring.
    fn ring(&mut self, pair: usize) -> (u16, &mut dyn DeviceQueue);
}

impl RxRings for [(u16, &mut dyn DeviceQueue)] {
    fn count(&self) -> usize {
        self.len()
    }
    fn ring(&mut self, pair: usize) -> (u16, &mut dyn DeviceQueue) {
        let (index, q) = &mut self[pair];
        (*index, &mut **q)
    }
}

impl RxRings for [ServedPair] {
    fn count(&self) -> usize {
        self.len()
    }
    fn ring(&mut self, pair: usize) -> (u16, &mut dyn DeviceQueue) {
        let rx = &mut self[pair].rx;
        (rx.index, &mut *rx.queue)
    }
}

const MAX_PAIRS: usize = QueueLayout::MAX_PAIRS as usize;

pub(super) struct Datapath {
    engine: Engine,
    pairs: Vec<ServedPair>,
    ctrl: Option<Served>,
    stop: Arc<AtomicBool>,
}

/// The device's work on its queues, apart from how the queues are held and when they are
/// served: the rust backend's own thread ([`Datapath`]) and the vhost-user backend's
/// event handler both drive one.
pub(crate) struct Engine {
    mem: Arc<Memory>,
    features: u64,
    hdr_len: usize,
    mrg: bool,
    /// VIRTIO_NET_F_HASH_REPORT: the rx header carries the hash.
    report: bool,
    interrupt: Arc<dyn Interrupt>,
    health: Arc<Health>,
    source: Box<dyn Source>,
    sink: Box<dyn Sink>,
    stats: Arc<NetStats>,
    shared: Arc<NetShared>,
    max_frame: usize,
    filter: RxFilter,
    /// The pairs in use and where frames go.
    steering: Steering,
    faults: FaultConfig,
    /// Decides which interrupts the withhold fault swallows.
    irq_rng: Rng,
    /// Where each pair's rx ring shrank: how many chains were available then.
    shrink_base: Vec<Option<u16>>,
    link_flap: Option<LinkFlap>,
    link_down_since: Option<Instant>,
    /// Whether the driver was interrupted when the link went down.
    link_down_notified: bool,
    delivered: u64,
    /// Reused buffers: the chain being served, a tx chain's bytes, an rx frame's buffers.
    chain: Chain,
    scratch: Vec<u8>,
    rx_bufs: Vec<RxBuf>,
    rx_descs: Vec<(GuestAddress, u32)>,
}

/// What the thread hands back when stopped.
pub(crate) struct DatapathEnd {
    pub source: Box<dyn Source>,
    pub sink: Box<dyn Sink>,
}

/// A device-writable buffer chain: its head and its descriptors in `rx_descs`.
#[derive(Clone, Copy)]
struct RxBuf {
    head: u16,
    descs: (usize, usize),
    capacity: usize,
}

/// The datapath cannot go on (the rings themselves are unreachable, or the sink failed).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Fatal {
    /// Reading a queue's available side.
    #[error("queue {queue}: {source}")]
    Queue {
        queue: u16,
        #[source]
        source: queue::Error,
    },
    /// Writing or publishing used entries.
    #[error(transparent)]
    Used(queue::Error),
    /// Turning a queue's notifications on or off.
    #[error("{role} queue: {source}")]
    Notification {
        role: Role,
        #[source]
        source: queue::Error,
    },
    /// The same, on the vhost-user backend's vrings.
    #[error("queue: {0}")]
    Vring(#[source] queue::Error),
    #[error("output: {0}")]
    Output(#[source] SinkError),
    #[error("waiting for queue kicks: {0}")]
    Wait(#[source] std::io::Error),
}

/// What an [`Engine`] works with besides its queues.
pub(crate) struct EngineParts {
    pub mem: Arc<Memory>,
    /// Features the driver accepted.
    pub negotiated: u64,
    pub interrupt: Arc<dyn Interrupt>,
    pub health: Arc<Health>,
    pub source: Box<dyn Source>,
    pub sink: Box<dyn Sink>,
    pub stats: Arc<NetStats>,
    pub shared: Arc<NetShared>,
}

impl Engine {
    pub fn new(p: EngineParts, cfg: &NetConfig) -> Self {
        Self {
            mem: p.mem,
            features: p.negotiated,
            hdr_len: hdr_len(p.negotiated),
            mrg: p.negotiated & features::MRG_RXBUF != 0,
            report: p.negotiated & features::HASH_REPORT != 0,
            interrupt: p.interrupt,
            health: p.health,
            source: p.source,
            sink: p.sink,
            stats: p.stats,
            shared: p.shared,
            max_frame: cfg.max_frame,
            filter: RxFilter::new(p.negotiated & features::CTRL_VLAN != 0),
            steering: Steering::new(cfg.max_queue_pairs.clamp(1, QueueLayout::MAX_PAIRS)),
            faults: cfg.faults.clone(),
            // Its own stream, so interrupt decisions do not shift the frame faults'.
            irq_rng: Rng::new(cfg.faults.seed ^ 0x1e7_0f17),
            shrink_base: vec![None; MAX_PAIRS],
            link_flap: cfg.link_flap,
            link_down_since: None,
            link_down_notified: false,
            delivered: 0,
            chain: Chain::default(),
            scratch: Vec::with_capacity(64 * 1024),
            rx_bufs: Vec::new(),
            rx_descs: Vec::new(),
        }
    }

    /// The driver (re)negotiated: the header size and buffer handling follow.
    pub fn set_features(&mut self, negotiated: u64) {
        self.features = negotiated;
        self.hdr_len = hdr_len(negotiated);
        self.mrg = negotiated & features::MRG_RXBUF != 0;
        self.report = negotiated & features::HASH_REPORT != 0;
    }

    /// The driver set up the queues of the first `pairs` pairs: the most it may enable.
    pub fn set_ready_pairs(&mut self, pairs: u16) {
        self.steering.set_ready(pairs);
    }

    /// Serves the first `pairs` pairs, all in use (a vhost-user backend: the frontend
    /// enabled their rings).
    pub fn serve_pairs(&mut self, pairs: u16) {
        if pairs != self.steering.enabled() {
            self.steering.serve(pairs);
        }
    }

    /// Pairs in use.
    pub fn pairs_enabled(&self) -> u16 {
        self.steering.enabled()
    }

    /// The guest memory changed (a vhost-user frontend sent a new table).
    pub fn set_memory(&mut self, mem: Arc<Memory>) {
        self.mem = mem;
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Hands the endpoints back.
    pub fn into_end(self) -> DatapathEnd {
        DatapathEnd {
            source: self.source,
            sink: self.sink,
        }
    }

    /// Whether the link is due to go down (a flap's frame count reached).
    fn flap_due(&self) -> bool {
        self.link_flap
            .is_some_and(|f| self.link_down_since.is_none() && self.delivered >= f.after)
    }

    /// The host's link flap: down after `after` frames, up again `down_for` later.
    pub fn flap_link(&mut self) {
        let Some(flap) = self.link_flap else {
            return;
        };
        match self.link_down_since {
            None if self.delivered >= flap.after => {
                tracing::info!("link down after {} frames", self.delivered);
                let notify = self.notify_config();
                self.shared.change_link(false, notify);
                self.link_down_since = Some(Instant::now());
                self.link_down_notified = notify;
            }
            // A driver told of the change must have looked at the status before the link
            // comes back: otherwise a driver held up (a busy host) would miss the whole flap
            // and what it logs would depend on timing. A driver that never looks gets the
            // link back after LINK_DOWN_LIMIT.
            Some(since)
                if since.elapsed() >= flap.down_for
                    && (!self.link_down_notified
                        || self.shared.down_seen()
                        || since.elapsed() >= LINK_DOWN_LIMIT) =>
            {
                tracing::info!("link up");
                let notify = self.notify_config();
                self.shared.change_link(true, notify);
                // One flap per run.
                self.link_flap = None;
            }
            _ => {}
        }
    }

    fn interrupt(&mut self, queue: u16) {
        if self.irq_rng.chance(self.faults.withhold_interrupts) {
            self.stats
                .faults
                .withheld_interrupts
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.stats.interrupts.fetch_add(1, Ordering::Relaxed);
        self.interrupt.queue(queue);
    }

    /// Whether to raise a configuration-change interrupt, or withhold it (fault).
    fn notify_config(&mut self) -> bool {
        if self.irq_rng.chance(self.faults.withhold_interrupts) {
            self.stats
                .faults
                .withheld_interrupts
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Publishes a batch of used entries (late, with the delay fault) and interrupts the
    /// driver if it asked.
    fn publish(
        &mut self,
        used: UsedBatch,
        q: &mut dyn DeviceQueue,
        queue: u16,
    ) -> Result<(), Fatal> {
        if used.is_empty() {
            return Ok(());
        }
        if let Some(d) = self.faults.delay_used {
            std::thread::sleep(d);
            self.stats
                .faults
                .delayed_publishes
                .fetch_add(1, Ordering::Relaxed);
        }
        if used.publish(q, &self.mem).map_err(Fatal::Used)? {
            self.interrupt(queue);
        }
        Ok(())
    }

    /// With the shrink-rx fault on: whether the device must leave the rx buffers alone for
    /// now, as if the ring had only the fault's number of entries: it may hold at most that
    /// many buffers the driver has not yet replaced with new ones.
    fn rx_shrunk(&mut self, rx: &dyn DeviceQueue, queue: u16) -> Result<bool, Fatal> {
        let Some(shrink) = self.faults.shrink_rx else {
            return Ok(false);
        };
        if self.delivered < shrink.after {
            return Ok(false);
        }
        let available = rx
            .available(&self.mem)
            .map_err(|source| Fatal::Queue { queue, source })?;
        let Some(base) = self.shrink_base.get_mut(usize::from(queue / 2)) else {
            return Ok(false);
        };
        let base = *base.get_or_insert(available);
        // What the device took since then, less what the driver made available since then.
        // Signed: the driver may have replaced more than the device took since the start.
        Ok(base.wrapping_sub(available) as i16 >= shrink.buffers as i16)
    }

    /// Called when a queue yields no chain: if that is because the driver broke the ring's
    /// rules (an available index more than a ring ahead: 2.7.13.3), the device needs a
    /// reset; nothing more is served until then.
    fn check_available(&self, q: &dyn DeviceQueue, queue: u16) -> Result<(), Fatal> {
        match q.check_available(&self.mem) {
            Ok(()) => Ok(()),
            Err(e) if e.is_driver_error() => {
                self.health.fail(&format!("queue {queue}: {e}"));
                Ok(())
            }
            Err(source) => Err(Fatal::Queue { queue, source }),
        }
    }

    /// Takes the next chain of `q` into `self.chain`; `false` when there is none.
    fn pop(&mut self, q: &mut dyn DeviceQueue, queue: u16) -> Result<bool, Fatal> {
        if q.pop(&self.mem, &mut self.chain)
            .map_err(|source| Fatal::Queue { queue, source })?
        {
            return Ok(true);
        }
        self.check_available(q, queue)?;
        Ok(false)
    }

    /// Serves the transmit queue `tx` (queue index `queue`): returns the chains used. The
    /// queue of a pair not in use is left alone.
    pub fn process_tx(&mut self, queue: u16, tx: &mut dyn DeviceQueue) -> Result<usize, Fatal> {
        let pair = queue / 2;
        if pair >= self.steering.enabled() {
            return Ok(0);
        }
        let mem = self.mem.clone();
        let mut used = UsedBatch::new();
        while usize::from(used.len()) < BUDGET {
            if !self.pop(tx, queue)? {
                break;
            }
            let head = self.chain.id;
            match chain::gather(&mut self.scratch, &mem, &self.chain, self.hdr_len) {
                Ok(()) => {
                    let frame = &self.scratch[self.hdr_len..];
                    if !self.shared.link_up() {
                        self.stats
                            .tx_while_link_down
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    if frame.len() > self.max_frame {
                        self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("tx: dropped a {}-byte frame", frame.len());
                    } else {
                        self.sink.put_on(frame, pair).map_err(Fatal::Output)?;
                        self.steering.transmitted(frame, pair);
                        if let Some(n) = self.stats.tx_frames_per_queue.get(usize::from(pair)) {
                            n.fetch_add(1, Ordering::Relaxed);
                        }
                        let sent = self.stats.tx_frames.fetch_add(1, Ordering::Relaxed) + 1;
                        self.stats
                            .tx_bytes
                            .fetch_add(frame.len() as u64, Ordering::Relaxed);
                        if self.faults.panic_after == Some(sent) {
                            panic!("injected by --panic-after {sent}");
                        }
                    }
                }
                Err(why) => {
                    self.stats.tx_malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("tx chain {head}: {why}");
                }
            }
            // The used length of a tx chain is 0: the device wrote nothing (2.7.8).
            used.push(tx, &mem, head, 0).map_err(Fatal::Used)?;
        }
        let n = usize::from(used.len());
        self.publish(used, tx, queue)?;
        Ok(n)
    }

    /// Serves the control queue `q` (queue index `queue`): returns the chains used.
    pub fn serve_ctrl(&mut self, queue: u16, q: &mut dyn DeviceQueue) -> Result<usize, Fatal> {
        let mem = self.mem.clone();
        let mut used = UsedBatch::new();
        while usize::from(used.len()) < BUDGET {
            if !self.pop(q, queue)? {
                break;
            }
            let head = self.chain.id;
            let written = match self.ctrl_command(&mem) {
                Ok(w) => w,
                Err(why) => {
                    tracing::warn!("control chain {head}: {why}");
                    self.stats.ctrl_err.fetch_add(1, Ordering::Relaxed);
                    0
                }
            };
            used.push(q, &mem, head, written).map_err(Fatal::Used)?;
        }
        let n = usize::from(used.len());
        self.publish(used, q, queue)?;
        Ok(n)
    }

    /// Runs the control command in `self.chain` and writes its ack; returns the bytes
    /// written (1), or why the chain could not even be answered.
    fn ctrl_command(&mut self, mem: &Memory) -> Result<u32, ChainError> {
        // Device-readable part: class, command, data. The first writable byte takes the ack.
        let ack = chain::command(&mut self.scratch, mem, &self.chain)?;
        let answer = if self.chain.cut {
            Err(CtrlError::Cut)
        } else if self.scratch.len() < 2 {
            Err(CtrlError::Short {
                len: self.scratch.len(),
            })
        } else {
            let (class, cmd) = (self.scratch[0], self.scratch[1]);
            let data = self.scratch[2..].to_vec();
            ctrl::handle(
                &mut self.filter,
                &mut self.steering,
                self.features,
                class,
                cmd,
                &data,
            )
            .map(|effect| match effect {
                Effect::Mac(mac) => self.shared.set_mac(mac),
                Effect::Pairs(n) => tracing::info!("{n} queue pairs in use"),
                Effect::None => {}
            })
            .map_err(CtrlError::from)
        };
        let code = match answer {
            Ok(()) => {
                self.stats.ctrl_ok.fetch_add(1, Ordering::Relaxed);
                ctrl::OK
            }
            Err(why) => {
                tracing::info!("control command refused: {why}");
                self.stats.ctrl_err.fetch_add(1, Ordering::Relaxed);
                ctrl::ERR
            }
        };
        mem.write_obj(code, ack).map_err(|source| ChainError::Ack {
            addr: ack.0,
            source,
        })?;
        Ok(1)
    }

    /// Takes the next rx chain and checks it: device-writable descriptors only, not cut.
    /// `Ok(None)`: no buffer available. `Err(head)`: a malformed chain, to be returned
    /// empty (after the chains taken before it: buffers are used in the order they came,
    /// which VIRTIO_F_IN_ORDER relies on).
    fn next_rx_buf(
        &mut self,
        queue: u16,
        rx: &mut dyn DeviceQueue,
    ) -> Result<Option<Result<RxBuf, u16>>, Fatal> {
        if self.rx_shrunk(rx, queue)? {
            return Ok(None);
        }
        if !self.pop(rx, queue)? {
            return Ok(None);
        }
        let head = self.chain.id;
        let start = self.rx_descs.len();
        match chain::scatter_list(&mut self.rx_descs, &self.mem, &self.chain) {
            Ok(capacity) => Ok(Some(Ok(RxBuf {
                head,
                descs: (start, self.rx_descs.len()),
                capacity,
            }))),
            Err(why) => {
                self.stats.rx_malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("rx chain {head}: {why}");
                Ok(Some(Err(head)))
            }
        }
    }

    /// Delivers frames to the one receive queue `rx` (queue index `queue`), as
    /// [`Engine::process_rx_pairs`] with that queue alone. Returns the frames delivered (and
    /// malformed chains returned) and whether the driver ran out of rx buffers.
    #[cfg(test)]
    pub fn process_rx(
        &mut self,
        queue: u16,
        rx: &mut dyn DeviceQueue,
    ) -> Result<(usize, bool), Fatal> {
        let rings: &mut [(u16, &mut dyn DeviceQueue)] = &mut [(queue, rx)];
        let (done, starved) = self.process_rx_pairs(rings)?;
        Ok((done, starved.is_some()))
    }

    /// Delivers the source's frames to the receive queues of the pairs in use (`rings`,
    /// pair k's at k), each frame to the queue steering picks for it. Returns the frames
    /// delivered (and malformed chains returned) and the pair whose queue ran out of
    /// buffers for the next frame, if one did: that frame, and those behind it, wait.
    pub fn process_rx_pairs<R: RxRings + ?Sized>(
        &mut self,
        rings: &mut R,
    ) -> Result<(usize, Option<usize>), Fatal> {
        let n = rings.count().min(MAX_PAIRS);
        if n == 0 {
            return Ok((0, None));
        }
        let mem = self.mem.clone();
        let mut used: [UsedBatch; MAX_PAIRS] = Default::default();
        let mut done = 0;
        let mut starved = None;
        let own = self.shared.mac();
        // A batch holds at most a ring's worth of entries before a frame starts (a driver
        // cannot have more buffers outstanding), and a frame takes at most a ring's worth:
        // so a batch stays below 2 * 32768 entries and every pass ends. Found by
        // tests/proptest_hostile.rs: a driver feeding one-byte buffers as fast as the device
        // took them kept one pass going for 256 frames of 1512 buffers each; the batch's
        // u16 count overflowed (a panic in debug builds, wrapped used entries in release).
        'frames: while done < BUDGET {
            if !self.shared.link_up() || !self.shared.input_open() || self.flap_due() {
                // Nothing is received while the link is down, or before the harness lets
                // the input flow; frames wait in the source. A flap takes the link down
                // after exactly its number of frames.
                break;
            }
            let (len, pick) = match self.source.peek() {
                Peek::Frame(f) => {
                    if !self.filter.accepts(f, own) {
                        self.source.consume();
                        self.stats.source_frames.fetch_add(1, Ordering::Relaxed);
                        self.stats.rx_filtered.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let pick = if self.steering.is_trivial() {
                        Pick::FIRST
                    } else {
                        self.steering.pick(f)
                    };
                    (f.len(), pick)
                }
                Peek::Idle => break,
                Peek::Ended => {
                    let published = used[..n].iter().all(UsedBatch::is_empty);
                    if published && !self.stats.input_drained.load(Ordering::Relaxed) {
                        // Only once everything before is published (the batches are empty).
                        self.stats.input_drained.store(true, Ordering::Release);
                    }
                    break;
                }
            };
            // Steering picks among the pairs in use, which the caller serves.
            let pair = match usize::from(pick.pair) {
                p if p < n => p,
                _ => 0,
            };
            let (queue, rx) = rings.ring(pair);
            let batch = &mut used[pair];
            if batch.len() >= rx.size() {
                break;
            }
            let need = self.hdr_len + len;
            // Buffers for this frame: one chain, or several with mergeable buffers.
            self.rx_bufs.clear();
            self.rx_descs.clear();
            let mut have = 0;
            while have < need {
                match self.next_rx_buf(queue, rx)? {
                    None => {
                        // Not enough buffers: put back what this frame took; it waits.
                        rx.unpop(self.rx_bufs.len() as u16);
                        starved = Some(pair);
                        break 'frames;
                    }
                    Some(Err(bad)) => {
                        // A malformed chain, returned empty. Chains already taken for this
                        // frame cannot be put back behind it: return them empty too, first.
                        for b in self.rx_bufs.drain(..) {
                            batch.push(rx, &mem, b.head, 0).map_err(Fatal::Used)?;
                        }
                        batch.push(rx, &mem, bad, 0).map_err(Fatal::Used)?;
                        done += 1;
                        continue 'frames;
                    }
                    Some(Ok(b)) => {
                        have += b.capacity;
                        self.rx_bufs.push(b);
                    }
                }
                if !self.mrg || self.rx_bufs.len() >= usize::from(rx.size()) {
                    break;
                }
            }
            if have < need {
                // Without mergeable buffers a frame must fit one chain, with them a ring's
                // worth of buffers: drop the frame, keep the buffers for the next one.
                rx.unpop(self.rx_bufs.len() as u16);
                self.source.consume();
                self.stats.source_frames.fetch_add(1, Ordering::Relaxed);
                self.stats.rx_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("rx: {need}-byte frame does not fit a {have}-byte buffer");
                continue;
            }
            self.deliver(rx, &mem, batch, queue, pick)?;
            done += 1;
        }
        // The link goes down before the frames that brought the flap are published, so the
        // driver learns of it (the interrupt comes first) before it can forward them: what
        // it sends while the link is down does not depend on timing.
        self.flap_link();
        for (pair, batch) in used.iter_mut().enumerate().take(n) {
            let (queue, rx) = rings.ring(pair);
            self.publish(std::mem::take(batch), rx, queue)?;
        }
        Ok((done, starved))
    }

    /// Writes the peeked frame, behind its header, into the buffers in `rx_bufs` (of
    /// queue `queue`), and stages their used entries.
    fn deliver(
        &mut self,
        rx: &mut dyn DeviceQueue,
        mem: &Memory,
        used: &mut UsedBatch,
        queue: u16,
        pick: Pick,
    ) -> Result<(), Fatal> {
        let Peek::Frame(frame) = self.source.peek() else {
            return Ok(());
        };
        use super::hdr::{HASH_REPORT, HASH_VALUE, NUM_BUFFERS};
        let mut hdr = [0u8; NET_HDR_LEN_HASH];
        // num_buffers: how many buffers this frame took (always 1 without MRG_RXBUF).
        hdr[NUM_BUFFERS..NUM_BUFFERS + 2]
            .copy_from_slice(&(self.rx_bufs.len() as u16).to_le_bytes());
        if self.report {
            // The hash the driver configured, and what it covers (none before it did).
            hdr[HASH_VALUE..HASH_VALUE + 4].copy_from_slice(&pick.hash.to_le_bytes());
            hdr[HASH_REPORT..HASH_REPORT + 2].copy_from_slice(&(pick.report as u16).to_le_bytes());
        }
        let hdr = &hdr[..self.hdr_len];
        let len = frame.len();
        let mut off = 0;
        let total = self.hdr_len + len;
        for b in &self.rx_bufs {
            let mut written = 0u32;
            for &(addr, dlen) in &self.rx_descs[b.descs.0..b.descs.1] {
                let mut at = addr;
                let mut room = dlen as usize;
                while room > 0 && off < total {
                    let (src, pos) = if off < hdr.len() {
                        (hdr, off)
                    } else {
                        (frame, off - hdr.len())
                    };
                    let n = room.min(src.len() - pos);
                    if let Err(e) = mem.write_slice(&src[pos..pos + n], at) {
                        // The addresses were valid when taken; the guest moved nothing,
                        // so this is a buffer straddling the end of RAM.
                        tracing::warn!("rx buffer {:#x}+{n}: {e}", at.0);
                        self.stats.rx_malformed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    off += n;
                    room -= n;
                    written += n as u32;
                    // Cannot wrap: the write just above covered at..at + n inside RAM.
                    at = GuestAddress(at.0 + n as u64);
                }
            }
            used.push(rx, mem, b.head, written).map_err(Fatal::Used)?;
        }
        self.source.consume();
        self.delivered += 1;
        self.stats.source_frames.fetch_add(1, Ordering::Relaxed);
        self.stats.rx_bytes.fetch_add(len as u64, Ordering::Relaxed);
        if let Some(n) = self
            .stats
            .rx_delivered_per_queue
            .get(usize::from(queue / 2))
        {
            n.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.rx_delivered.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

impl Datapath {
    pub fn new(
        parts: EngineParts,
        pairs: Vec<QueuePair>,
        ctrl: Option<ActiveQueue>,
        stop: Arc<AtomicBool>,
        cfg: &NetConfig,
    ) -> Self {
        let pairs: Vec<ServedPair> = pairs
            .into_iter()
            .map(|p| {
                let pair = p.index();
                ServedPair {
                    rx: Served::new(p.rx, Role::Rx(pair)),
                    tx: Served::new(p.tx, Role::Tx(pair)),
                    rx_starved: false,
                }
            })
            .collect();
        let mut engine = Engine::new(parts, cfg);
        engine.set_ready_pairs(pairs.len() as u16);
        Self {
            engine,
            pairs,
            ctrl: ctrl.map(|c| Served::new(c, Role::Ctrl)),
            stop,
        }
    }

    pub fn run(mut self) -> DatapathEnd {
        // A panic here is a bug of vlab's, not the guest's: it ends the run like a fatal
        // error, but the endpoints survive it, so the output keeps every frame written
        // before. The engine is not used again after a panic, only taken apart.
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.serve()));
        let failure = match served {
            Ok(Ok(())) => None,
            Ok(Err(fatal)) => Some(fatal.to_string()),
            Err(panic) => Some(format!(
                "the datapath thread panicked: {}",
                crate::panic::message(&*panic)
            )),
        };
        if let Some(why) = failure {
            tracing::error!("virtio-net datapath stopped: {why}");
            self.engine.stats.set_failure(why);
        }
        self.engine.into_end()
    }

    /// Every queue served, in a fixed order: each pair's rx and tx, then the control queue.
    fn queues(&mut self) -> impl Iterator<Item = &mut Served> {
        self.pairs
            .iter_mut()
            .flat_map(|p| [&mut p.rx, &mut p.tx])
            .chain(self.ctrl.as_mut())
    }

    fn serve(&mut self) -> Result<(), Fatal> {
        self.disable_notifications()?;
        let mut idle = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            if self.engine.health.needs_reset() {
                // The driver broke the rules; nothing more is processed until it resets.
                self.sleep()?;
                continue;
            }
            self.engine.flap_link();
            let mut work = match self.ctrl.as_mut() {
                Some(c) => self.engine.serve_ctrl(c.index, &mut *c.queue)?,
                None => 0,
            };
            let enabled = self.enabled();
            for p in &mut self.pairs[..enabled] {
                work += self.engine.process_tx(p.tx.index, &mut *p.tx.queue)?;
            }
            let (rx, starved) = self.engine.process_rx_pairs(&mut self.pairs[..enabled])?;
            work += rx;
            for (k, p) in self.pairs.iter_mut().enumerate() {
                p.rx_starved = starved == Some(k);
            }
            if work > 0 {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < IDLE_POLLS_BEFORE_SLEEP {
                std::hint::spin_loop();
                continue;
            }
            idle = 0;
            // Ask for kicks, then look once more: the driver may have added buffers between
            // the last poll and the request. Rx kicks matter only when rx is out of buffers.
            let mut pending = false;
            let mem = self.engine.mem.clone();
            let enabled = self.enabled();
            for p in &mut self.pairs[..enabled] {
                let rx = p.rx_starved.then_some(&mut p.rx);
                for q in rx.into_iter().chain([&mut p.tx]) {
                    pending |= enable_notification(q, &mem)?;
                }
            }
            if let Some(c) = self.ctrl.as_mut() {
                pending |= enable_notification(c, &mem)?;
            }
            if !pending {
                self.sleep()?;
            }
            self.disable_notifications()?;
        }
        Ok(())
    }

    /// The pairs served: those in use (the driver set up at least as many).
    fn enabled(&self) -> usize {
        usize::from(self.engine.pairs_enabled()).min(self.pairs.len())
    }

    fn disable_notifications(&mut self) -> Result<(), Fatal> {
        let mem = self.engine.mem.clone();
        for q in self.queues() {
            q.queue
                .disable_notification(&mem)
                .map_err(|source| Fatal::Notification {
                    role: q.role,
                    source,
                })?;
        }
        Ok(())
    }

    /// Waits for a kick on any queue, at most [`SLEEP_MS`], and counts the kicks.
    fn sleep(&mut self) -> Result<(), Fatal> {
        let stats = self.engine.stats.clone();
        let kicks: Vec<(u16, &EventFd)> = self.queues().map(|q| (q.index, &q.kick)).collect();
        wait_for_kicks(&kicks, &stats)
    }
}

/// Asks the driver to notify `q`; returns whether chains arrived meanwhile.
fn enable_notification(q: &mut Served, mem: &Memory) -> Result<bool, Fatal> {
    q.queue
        .enable_notification(mem)
        .map_err(|source| Fatal::Notification {
            role: q.role,
            source,
        })
}

/// Waits for a kick on any of `kicks` (queue index, eventfd), at most [`SLEEP_MS`], and
/// counts the kicks.
fn wait_for_kicks(kicks: &[(u16, &EventFd)], stats: &NetStats) -> Result<(), Fatal> {
    let mut fds: Vec<libc::pollfd> = kicks
        .iter()
        .map(|(_, k)| libc::pollfd {
            fd: k.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures for the call.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, SLEEP_MS) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(Fatal::Wait(e));
        }
    }
    // The eventfds are non-blocking: EAGAIN just means no kick.
    for (q, k) in kicks {
        if let Ok(n) = k.read() {
            if let Some(count) = stats.kicks.get(usize::from(*q)) {
                count.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// The control queue alone, for a device whose data queues a vhost backend serves. Commands
/// are rare: it waits for kicks instead of polling.
pub(super) struct ControlPath {
    engine: Engine,
    ctrl: Served,
    stop: Arc<AtomicBool>,
}

impl ControlPath {
    /// `pairs`: how many pairs the driver set up (and the backend serves).
    pub fn new(
        parts: EngineParts,
        ctrl: ActiveQueue,
        pairs: u16,
        stop: Arc<AtomicBool>,
        cfg: &NetConfig,
    ) -> Self {
        let mut engine = Engine::new(parts, cfg);
        engine.set_ready_pairs(pairs);
        Self {
            engine,
            ctrl: Served::new(ctrl, Role::Ctrl),
            stop,
        }
    }

    pub fn run(mut self) -> DatapathEnd {
        if let Err(fatal) = self.serve() {
            let why = fatal.to_string();
            tracing::error!("virtio-net control queue stopped: {why}");
            self.engine.stats.set_failure(why);
        }
        self.engine.into_end()
    }

    fn serve(&mut self) -> Result<(), Fatal> {
        let mem = self.engine.mem.clone();
        while !self.stop.load(Ordering::Relaxed) {
            if !self.engine.health.needs_reset() {
                let c = &mut self.ctrl;
                self.engine.serve_ctrl(c.index, &mut *c.queue)?;
                if enable_notification(c, &mem)? {
                    continue;
                }
            }
            let kicks = [(self.ctrl.index, &self.ctrl.kick)];
            wait_for_kicks(&kicks, &self.engine.stats)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
