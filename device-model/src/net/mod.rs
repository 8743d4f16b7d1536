//! The virtio-net device (virtio 1.x, 5.1): its configuration space, the features it offers,
//! and the datapath it starts when the driver sets DRIVER_OK.

mod datapath;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::endpoint::{Sink, Source};
use crate::virtio::{self, ActivateError, Activation, VirtioDevice};
use datapath::{Datapath, DatapathEnd};

/// Virtio device type of a network card.
pub const DEVICE_TYPE: u16 = 1;

/// virtio-net feature bits (5.1.3).
pub mod features {
    pub const MTU: u64 = 1 << 3;
    pub const MAC: u64 = 1 << 5;
    pub const MRG_RXBUF: u64 = 1 << 15;
    pub const STATUS: u64 = 1 << 16;
}

/// `struct virtio_net_config` offsets.
mod config {
    pub const MAC: usize = 0;
    pub const STATUS: usize = 6;
    pub const MAX_VIRTQUEUE_PAIRS: usize = 8;
    pub const MTU: usize = 10;
    pub const SIZE: usize = 12;
}

const NET_S_LINK_UP: u16 = 1;

/// Queue indexes of the single queue pair.
pub const RX_QUEUE: u16 = 0;
pub const TX_QUEUE: u16 = 1;

/// Size of `struct virtio_net_hdr_v1`: with VERSION_1 `num_buffers` is always present.
pub const NET_HDR_LEN: usize = 12;

/// How the device presents itself.
#[derive(Clone, Debug)]
pub struct NetConfig {
    pub mac: [u8; 6],
    /// Maximum size of each queue.
    pub queue_size: u16,
    /// Largest frame (without FCS) the device carries in either direction.
    pub max_frame: usize,
    /// Features offered to the driver.
    pub features: u64,
    /// CPU the datapath thread runs on; `None` leaves it to the scheduler.
    pub datapath_cpu: Option<usize>,
}

/// The Ethernet MTU's frame: 1500 bytes of payload, a 14-byte header, a VLAN tag.
pub const DEFAULT_MAX_FRAME: usize = 1518;

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            queue_size: 1024,
            max_frame: DEFAULT_MAX_FRAME,
            features: virtio::features::VERSION_1
                | virtio::features::RING_EVENT_IDX
                | features::MAC
                | features::STATUS,
            datapath_cpu: None,
        }
    }
}

/// Datapath counters, readable while the datapath runs.
#[derive(Debug, Default)]
pub struct NetStats {
    /// Frames taken from the source.
    pub source_frames: AtomicU64,
    /// Frames placed in the guest's rx ring.
    pub rx_delivered: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Frames dropped because the guest's rx buffer chain was too small for them.
    pub rx_dropped: AtomicU64,
    /// Rx chains the driver built wrong (a device-readable buffer, memory outside RAM).
    pub rx_malformed: AtomicU64,
    /// Frames the guest transmitted and the sink took.
    pub tx_frames: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Transmitted frames dropped for being larger than the device's maximum frame.
    pub tx_dropped: AtomicU64,
    /// Tx chains the driver built wrong (write-only buffers, shorter than the header,
    /// memory outside RAM).
    pub tx_malformed: AtomicU64,
    /// Interrupts the datapath raised.
    pub interrupts: AtomicU64,
    /// Set once every source frame was delivered or dropped and the source has ended.
    pub input_drained: AtomicBool,
    /// Why the datapath stopped on its own (a sink that could not write), if it did.
    failure: Mutex<Option<String>>,
}

/// A plain copy of [`NetStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub source_frames: u64,
    pub rx_delivered: u64,
    pub rx_bytes: u64,
    pub rx_dropped: u64,
    pub rx_malformed: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
    pub tx_malformed: u64,
    pub interrupts: u64,
    pub input_drained: bool,
}

impl NetStats {
    pub fn snapshot(&self) -> NetCounters {
        let g = |a: &AtomicU64| a.load(Ordering::Acquire);
        NetCounters {
            source_frames: g(&self.source_frames),
            rx_delivered: g(&self.rx_delivered),
            rx_bytes: g(&self.rx_bytes),
            rx_dropped: g(&self.rx_dropped),
            rx_malformed: g(&self.rx_malformed),
            tx_frames: g(&self.tx_frames),
            tx_bytes: g(&self.tx_bytes),
            tx_dropped: g(&self.tx_dropped),
            tx_malformed: g(&self.tx_malformed),
            interrupts: g(&self.interrupts),
            input_drained: self.input_drained.load(Ordering::Acquire),
        }
    }

    /// Why the datapath failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_failure(&self, why: String) {
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        f.get_or_insert(why);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the rust backend's datapath thread panicked: {0}")]
    DatapathPanicked(String),
    #[error("the rust backend's datapath failed: {0}")]
    Datapath(String),
    #[error("the endpoint was lost when an earlier datapath failed")]
    EndpointLost,
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<DatapathEnd>,
}

/// A virtio-net device served by the pure-Rust backend.
pub struct Net {
    cfg: NetConfig,
    link_up: bool,
    generation: u8,
    source: Option<Box<dyn Source>>,
    sink: Option<Box<dyn Sink>>,
    running: Option<Running>,
    stats: Arc<NetStats>,
}

impl Net {
    pub fn new(cfg: NetConfig, source: Box<dyn Source>, sink: Box<dyn Sink>) -> Self {
        Self {
            cfg,
            link_up: true,
            generation: 0,
            source: Some(source),
            sink: Some(sink),
            running: None,
            stats: Arc::default(),
        }
    }

    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    pub fn stats(&self) -> Arc<NetStats> {
        self.stats.clone()
    }

    /// Stops the datapath and returns the sink, for the caller to finish.
    pub fn shutdown(&mut self) -> Result<Box<dyn Sink>, Error> {
        self.stop()?;
        if let Some(why) = self.stats.failure() {
            return Err(Error::Datapath(why));
        }
        self.sink.take().ok_or(Error::EndpointLost)
    }

    /// Stops a running datapath and takes the endpoints back.
    fn stop(&mut self) -> Result<(), Error> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        running.stop.store(true, Ordering::Release);
        match running.thread.join() {
            Ok(end) => {
                self.source = Some(end.source);
                self.sink = Some(end.sink);
                Ok(())
            }
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                self.stats
                    .set_failure(format!("datapath thread panicked: {msg}"));
                Err(Error::DatapathPanicked(msg))
            }
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u16 {
        DEVICE_TYPE
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![self.cfg.queue_size; 2]
    }

    fn features(&self) -> u64 {
        self.cfg.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut space = [0u8; config::SIZE];
        space[config::MAC..config::MAC + 6].copy_from_slice(&self.cfg.mac);
        let status = if self.link_up { NET_S_LINK_UP } else { 0 };
        space[config::STATUS..config::STATUS + 2].copy_from_slice(&status.to_le_bytes());
        space[config::MAX_VIRTQUEUE_PAIRS..config::MAX_VIRTQUEUE_PAIRS + 2]
            .copy_from_slice(&1u16.to_le_bytes());
        let mtu = (self.cfg.max_frame.saturating_sub(18)).min(usize::from(u16::MAX)) as u16;
        space[config::MTU..config::MTU + 2].copy_from_slice(&mtu.to_le_bytes());
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| space.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // The MAC is writable only through legacy drivers; a modern driver uses the control
        // queue. Everything else is read-only.
        tracing::debug!(
            "virtio-net: ignored {}-byte config write at {offset:#x}",
            data.len()
        );
    }

    fn config_generation(&self) -> u8 {
        self.generation
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        if self.running.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let (Some(source), Some(sink)) = (self.source.take(), self.sink.take()) else {
            return Err(ActivateError::Datapath(
                "the endpoint was lost earlier".into(),
            ));
        };
        let mut queues = a.queues.into_iter();
        let rx = queues.next().flatten();
        let tx = queues.next().flatten();
        let (rx, tx) = match (rx, tx) {
            (Some(rx), Some(tx)) => (rx, tx),
            (rx, _) => {
                self.source = Some(source);
                self.sink = Some(sink);
                let missing = if rx.is_none() { RX_QUEUE } else { TX_QUEUE };
                return Err(ActivateError::QueueNotEnabled(missing));
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let dp = Datapath {
            mem: a.mem,
            rx: rx.queue,
            rx_kick: rx.kick,
            tx: tx.queue,
            tx_kick: tx.kick,
            interrupt: a.interrupt,
            health: a.health,
            source,
            sink,
            stats: self.stats.clone(),
            stop: stop.clone(),
            max_frame: self.cfg.max_frame,
            scratch: Vec::with_capacity(64 * 1024),
        };
        let cpu = self.cfg.datapath_cpu;
        let thread = std::thread::Builder::new()
            .name("vlab-net".into())
            .spawn(move || {
                if let Some(cpu) = cpu {
                    if let Err(e) = crate::affinity::pin_current_thread(cpu) {
                        tracing::warn!("datapath: cannot pin to CPU {cpu}: {e}");
                    }
                }
                dp.run()
            })
            .map_err(|e| ActivateError::Datapath(e.to_string()))?;
        self.running = Some(Running { stop, thread });
        Ok(())
    }

    fn reset(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!("virtio-net reset: {e}");
        }
        self.stats.input_drained.store(false, Ordering::Release);
    }
}
