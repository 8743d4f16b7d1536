//! vhost backends: the rx and tx queues served by someone else (the kernel's vhost-net, or a
//! vhost-user backend process) while this process keeps the PCI transport, the
//! configuration space and the control queue, as QEMU does.
//!
//! Both backends are driven by one code path ([`Vhost`]) over the `vhost` crate's
//! [`VhostBackend`] trait: owner, features, memory table, and per queue its size, base,
//! addresses, call and kick eventfds. What differs is small ([`Peer`]): how a queue is
//! attached (vhost-net: the TAP as its socket; vhost-user: VHOST_USER_SET_VRING_ENABLE),
//! which feature bits mean what, and how a dead backend shows.
//!
//! A backend that lacks a ring feature (VIRTIO_F_RING_PACKED, VIRTIO_F_IN_ORDER: the
//! kernel's vhost-net has no packed rings) does not fail the run: the device stops offering
//! the feature ([`Vhost::offer`], which the device applies through [`Dataplane::offer`]),
//! and [`Vhost::fallbacks`] says which and why. Any other data feature it lacks does.
//!
//! Multiqueue: the device has no more queue pairs than the backend serves
//! ([`Peer::max_pairs`]: vhost-net here serves one pair, a vhost-user backend as many as
//! GET_QUEUE_NUM says), and offers VIRTIO_NET_F_MQ only with more than one. RSS and hash
//! reports are never offered with a vhost backend: they are computed where frames are
//! received, and the backend cannot see the device's RSS configuration.
//! [`Vhost::check_pairs`] names what a run with several pairs loses that way. Every pair
//! the driver set up is started at DRIVER_OK; VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET is answered
//! by the device and not passed on as SET_VRING_ENABLE (a driver that sets up more pairs
//! than it enables would find the backend steering frames to the others too).
//!
//! Kicks go straight from the driver to the backend: the queue's kick eventfd is the KVM
//! ioeventfd of its notify slot (or, in-process, the one the transport signals). The
//! backend's call eventfds are forwarded to the transport's interrupt by one small thread,
//! which also watches a vhost-user connection and fails the run when the backend dies.

pub mod kernel;
mod relay;
#[cfg(test)]
mod tests;
pub mod user;
pub mod user_backend;

use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The seam between the device and a backend, defined by the device.
pub use crate::net::Dataplane;
use crate::net::{features as net_features, DataplaneError, NetStats, QueuePair};
use crate::virtio::{features as virtio_features, Interrupt, Memory};

/// The virtio feature bits a backend serves on the data queues: what it must support for
/// the device to offer them. The rest (MAC, STATUS, MTU, the control queue) is ours.
pub const DATA_FEATURES: u64 = net_features::MRG_RXBUF
    | net_features::ANY_LAYOUT
    | virtio_features::RING_INDIRECT_DESC
    | virtio_features::RING_EVENT_IDX
    | virtio_features::VERSION_1
    | virtio_features::RING_PACKED
    | virtio_features::IN_ORDER;

/// The data features a backend may lack without failing the run: how the rings are laid
/// out and used. The device then does not offer them (the driver falls back to split rings,
/// used out of order), and [`Vhost::fallbacks`] names them.
pub const RING_FEATURES: u64 = virtio_features::RING_PACKED | virtio_features::IN_ORDER;

/// Features the device never offers with a vhost backend: the hash is computed where frames
/// are received, from the RSS configuration the device keeps.
pub const DEVICE_ONLY_FEATURES: u64 = net_features::RSS | net_features::HASH_REPORT;

/// A feature the device does not offer because its vhost backend lacks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    /// The feature's name (as in [`net_features::NAMES`]: "ring_packed", "in_order").
    pub feature: &'static str,
    pub bit: u64,
    /// "vhost-kernel" or "vhost-user".
    pub backend: &'static str,
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: the {} backend does not offer it",
            self.feature, self.backend
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{backend} backend: {step}: {source}")]
    Step {
        backend: &'static str,
        step: &'static str,
        #[source]
        source: vhost::Error,
    },
    #[error("{backend} backend: {step}: {source}")]
    Io {
        backend: &'static str,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{backend} backend: feature negotiation: the run needs {missing}, which the backend \
         does not offer (it offers {offered})"
    )]
    Features {
        backend: &'static str,
        missing: String,
        offered: String,
    },
    #[error("{backend} backend: {why}")]
    Other { backend: &'static str, why: String },
}

/// Names of the feature bits in `bits`, for messages.
pub fn feature_names(bits: u64) -> String {
    let names: Vec<&str> = net_features::NAMES
        .iter()
        .filter(|(_, b)| bits & b != 0)
        .map(|(n, _)| *n)
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// What differs between the kernel's vhost-net and a vhost-user backend.
pub trait Peer: Send {
    /// "vhost-kernel" or "vhost-user", for messages.
    const NAME: &'static str;
    /// The `vhost` crate's handle for the session.
    type Backend: VhostBackend;

    fn backend(&self) -> &Self::Backend;

    /// Queue pairs the backend serves.
    fn max_pairs(&self) -> u16 {
        1
    }

    /// Whether ring addresses go to the backend as our virtual addresses (vhost-user, per
    /// its spec) rather than guest-physical ones (the crate translates for vhost-net).
    const RINGS_BY_VIRTUAL_ADDRESS: bool;

    /// The virtio data features the backend supports, from its VHOST_GET_FEATURES reply.
    fn data_features(&self, raw: u64) -> u64 {
        raw & DATA_FEATURES
    }

    /// The value for VHOST_SET_FEATURES, given the features the driver accepted.
    fn backend_features(&self, negotiated: u64) -> u64;

    /// Called before the rings are set up, with the features the driver accepted.
    fn prepare(&mut self, negotiated: u64) -> Result<(), Error>;

    /// Starts the backend on queue `index` once its ring is set up.
    fn attach(&mut self, index: usize) -> Result<(), Error>;

    /// Stops the backend on queue `index`.
    fn detach(&mut self, index: usize) -> Result<(), Error>;

    /// Returns once the backend has handled every request sent before. vhost-net's ioctls
    /// are synchronous; a vhost-user backend answers requests in order, so one with a
    /// reply will do.
    fn settle(&mut self) -> Result<(), Error> {
        Ok(())
    }

    /// A descriptor that shows POLLHUP when the backend dies, if it can.
    fn connection(&self) -> Option<RawFd> {
        None
    }
}

/// The common driver of a vhost backend.
pub struct Vhost<P: Peer> {
    peer: P,
    features: u64,
    /// What [`Vhost::check_features`] found the device must not offer.
    fallbacks: Mutex<Vec<Fallback>>,
    calls: Option<CallForwarder>,
    /// The queues handed to the backend, by index, once they all were.
    started: Vec<usize>,
}

impl<P: Peer> Vhost<P> {
    /// Takes ownership of the backend session (VHOST_SET_OWNER) and reads its features.
    pub fn new(peer: P) -> Result<Self, Error> {
        let step = |step| {
            move |source| Error::Step {
                backend: P::NAME,
                step,
                source,
            }
        };
        peer.backend().set_owner().map_err(step("SET_OWNER"))?;
        let raw = peer
            .backend()
            .get_features()
            .map_err(step("GET_FEATURES"))?;
        let features = peer.data_features(raw);
        Ok(Self {
            peer,
            features,
            fallbacks: Mutex::default(),
            calls: None,
            started: Vec::new(),
        })
    }

    pub fn peer(&self) -> &P {
        &self.peer
    }

    /// Fails unless the backend supports every data feature in `wanted` (the features the
    /// device is configured to offer), but the ring features ([`RING_FEATURES`]): those
    /// it lacks are recorded as [`Vhost::fallbacks`], and the device does not offer them
    /// ([`Vhost::offer`]).
    pub fn check_features(&self, wanted: u64) -> Result<(), Error> {
        let missing = wanted & DATA_FEATURES & !self.features;
        let fatal = missing & !RING_FEATURES;
        if fatal != 0 {
            return Err(Error::Features {
                backend: P::NAME,
                missing: feature_names(fatal),
                offered: feature_names(self.features),
            });
        }
        let fallbacks: Vec<Fallback> = net_features::NAMES
            .iter()
            .filter(|(_, bit)| missing & RING_FEATURES & bit != 0)
            .map(|&(feature, bit)| Fallback {
                feature,
                bit,
                backend: P::NAME,
            })
            .collect();
        for f in &fallbacks {
            tracing::info!("not offered: {f}");
        }
        *self.fallbacks.lock().unwrap_or_else(|e| e.into_inner()) = fallbacks;
        Ok(())
    }

    /// Records, beside [`Vhost::check_features`]' findings, what a device of `pairs` queue
    /// pairs configured to offer `wanted` does not offer with this backend: multiqueue
    /// when the backend serves one pair, RSS and hash reports (see
    /// [`DEVICE_ONLY_FEATURES`]). Nothing with one pair: the device offers none of them
    /// then.
    pub fn check_pairs(&self, wanted: u64, pairs: u16) {
        if pairs < 2 {
            return;
        }
        let mut lost = wanted & DEVICE_ONLY_FEATURES;
        if self.peer.max_pairs() < 2 {
            lost |= wanted & net_features::MULTIQUEUE;
        }
        let mut fallbacks = self.fallbacks.lock().unwrap_or_else(|e| e.into_inner());
        for &(feature, bit) in &net_features::NAMES {
            if lost & bit != 0 && !fallbacks.iter().any(|f| f.bit == bit) {
                let f = Fallback {
                    feature,
                    bit,
                    backend: P::NAME,
                };
                tracing::info!("not offered: {f}");
                fallbacks.push(f);
            }
        }
        if pairs > self.peer.max_pairs() {
            tracing::info!(
                "{} queue pairs configured, the {} backend serves {}: the device has {}",
                pairs,
                P::NAME,
                self.peer.max_pairs(),
                self.peer.max_pairs()
            );
        }
    }

    /// What the device offers when it is configured to offer `wanted`: without the ring
    /// features the backend lacks, nor RSS and hash reports.
    pub fn offer(&self, wanted: u64) -> u64 {
        wanted & !(RING_FEATURES & !self.features) & !DEVICE_ONLY_FEATURES
    }

    /// The features the last [`Vhost::check_features`] found the device must not offer,
    /// and why.
    pub fn fallbacks(&self) -> Vec<Fallback> {
        self.fallbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn step<T>(&self, step: &'static str, r: vhost::Result<T>) -> Result<T, Error> {
        r.map_err(|source| Error::Step {
            backend: P::NAME,
            step,
            source,
        })
    }
}

/// The memory table for the backend: every RAM region, with its file when it has one
/// (vhost-user maps it; vhost-net uses our own mapping's addresses).
fn memory_table(mem: &Memory) -> Vec<VhostUserMemoryRegionInfo> {
    mem.iter()
        .map(|r| {
            let (mmap_offset, mmap_handle) = match r.file_offset() {
                Some(f) => (f.start(), f.file().as_raw_fd()),
                None => (0, -1),
            };
            VhostUserMemoryRegionInfo {
                guest_phys_addr: r.start_addr().raw_value(),
                memory_size: r.len(),
                userspace_addr: r.as_ptr() as u64,
                mmap_offset,
                mmap_handle,
            }
        })
        .collect()
}

impl<P: Peer> Dataplane for Vhost<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn offer(&self, wanted: u64) -> u64 {
        Vhost::offer(self, wanted)
    }

    fn max_pairs(&self) -> u16 {
        self.peer.max_pairs()
    }

    fn start(
        &mut self,
        mem: &Memory,
        negotiated: u64,
        pairs: &[QueuePair],
        interrupt: Arc<dyn Interrupt>,
        stats: Arc<NetStats>,
    ) -> Result<(), DataplaneError> {
        Ok(self.start_queues(mem, negotiated, pairs, interrupt, stats)?)
    }

    fn stop(&mut self) -> Result<(), DataplaneError> {
        Ok(self.stop_queues()?)
    }
}

impl<P: Peer> Vhost<P> {
    fn start_queues(
        &mut self,
        mem: &Memory,
        negotiated: u64,
        pairs: &[QueuePair],
        interrupt: Arc<dyn Interrupt>,
        stats: Arc<NetStats>,
    ) -> Result<(), Error> {
        self.peer.prepare(negotiated)?;
        let features = self.peer.backend_features(negotiated);
        let b = self.peer.backend();
        self.step("SET_FEATURES", b.set_features(features))?;
        self.step("SET_MEM_TABLE", b.set_mem_table(&memory_table(mem)))?;
        let io = |step| {
            move |source| Error::Io {
                backend: P::NAME,
                step,
                source,
            }
        };
        let queues: Vec<_> = pairs.iter().flat_map(|p| [&p.rx, &p.tx]).collect();
        // One call eventfd per queue, all made before any queue is handed over.
        let calls = queues
            .iter()
            .map(|aq| Ok((aq.index, EventFd::new(EFD_NONBLOCK)?)))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(io("creating a call eventfd"))?;
        for (aq, (_, call)) in queues.iter().zip(&calls) {
            let i = usize::from(aq.index);
            let q = &*aq.queue;
            let b = self.peer.backend();
            self.step("SET_VRING_NUM", b.set_vring_num(i, q.size()))?;
            self.step(
                "SET_VRING_BASE",
                b.set_vring_base(i, q.position().next_avail),
            )?;
            let addr = |gpa: u64| -> Result<u64, Error> {
                if !P::RINGS_BY_VIRTUAL_ADDRESS {
                    return Ok(gpa);
                }
                mem.get_host_address(GuestAddress(gpa))
                    .map(|p| p as u64)
                    .map_err(|e| Error::Other {
                        backend: P::NAME,
                        why: format!("queue {i}: ring at {gpa:#x}: {e}"),
                    })
            };
            let rings = q.addresses();
            let ring = VringConfigData {
                queue_max_size: q.max_size(),
                queue_size: q.size(),
                flags: 0,
                desc_table_addr: addr(rings.desc)?,
                used_ring_addr: addr(rings.device)?,
                avail_ring_addr: addr(rings.driver)?,
                log_addr: None,
            };
            self.step("SET_VRING_ADDR", b.set_vring_addr(i, &ring))?;
            self.step("SET_VRING_CALL", b.set_vring_call(i, call))?;
            self.step("SET_VRING_KICK", b.set_vring_kick(i, &aq.kick))?;
        }
        // Every ring set up before any starts: a backend serving several pairs sees them
        // start together.
        for aq in &queues {
            self.peer.attach(usize::from(aq.index))?;
        }
        // The driver may use the rings once DRIVER_OK returns: every ring must be started
        // by then (a backend that saw pair 0 start before pair 1 would steer the first
        // frames of every flow to pair 0).
        self.peer.settle()?;
        self.calls = Some(
            CallForwarder::spawn(calls, interrupt, self.peer.connection(), stats, P::NAME)
                .map_err(io("starting the call forwarder"))?,
        );
        self.started = queues.iter().map(|aq| usize::from(aq.index)).collect();
        Ok(())
    }

    fn stop_queues(&mut self) -> Result<(), Error> {
        if let Some(c) = self.calls.take() {
            c.stop();
        }
        for i in std::mem::take(&mut self.started) {
            self.peer.detach(i)?;
            self.step("GET_VRING_BASE", self.peer.backend().get_vring_base(i))?;
        }
        Ok(())
    }
}

/// Forwards the backend's used-buffer notifications (call eventfds) to the transport's
/// interrupt, and watches the backend's connection.
struct CallForwarder {
    stop: Arc<AtomicBool>,
    wake: EventFd,
    thread: JoinHandle<()>,
}

impl CallForwarder {
    fn spawn(
        calls: Vec<(u16, EventFd)>,
        interrupt: Arc<dyn Interrupt>,
        connection: Option<RawFd>,
        stats: Arc<NetStats>,
        backend: &'static str,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let wake = EventFd::new(EFD_NONBLOCK)?;
        let thread_wake = wake.try_clone()?;
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("vlab-vhost-call".into())
            .spawn(move || {
                forward_calls(
                    &calls,
                    &*interrupt,
                    connection,
                    &stats,
                    backend,
                    &thread_wake,
                    &thread_stop,
                )
            })?;
        Ok(Self { stop, wake, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.write(1);
        let _ = self.thread.join();
    }
}

fn forward_calls(
    calls: &[(u16, EventFd)],
    interrupt: &dyn Interrupt,
    connection: Option<RawFd>,
    stats: &NetStats,
    backend: &'static str,
    wake: &EventFd,
    stop: &AtomicBool,
) {
    let mut fds: Vec<libc::pollfd> = calls
        .iter()
        .map(|(_, call)| call)
        .chain(std::iter::once(wake))
        .map(|e| libc::pollfd {
            fd: e.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    if let Some(fd) = connection {
        fds.push(libc::pollfd {
            fd,
            events: libc::POLLRDHUP,
            revents: 0,
        });
    }
    while !stop.load(Ordering::Acquire) {
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures for the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            stats.set_failure(format!("{backend} backend: waiting for calls: {e}"));
            return;
        }
        for (i, (queue, call)) in calls.iter().enumerate() {
            if fds[i].revents & libc::POLLIN != 0 && call.read().is_ok() {
                stats.interrupts.fetch_add(1, Ordering::Relaxed);
                interrupt.queue(*queue);
            }
        }
        // After the calls and the wake eventfd.
        if let Some(conn) = fds.get(calls.len() + 1) {
            if conn.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
                && !stop.load(Ordering::Acquire)
            {
                stats.set_failure(format!(
                    "{backend} backend: the backend closed its connection during the run"
                ));
                return;
            }
        }
    }
}
