//! The harness ports (see `pmd::harness`): the exit port that ends a run with the guest's
//! verdict, and the register block through which the guest learns that its input is drained
//! and reports events that `vlab` timestamps.
//!
//! Each virtio-net port has a block of its own: port n's at `HARNESS_PORT + n *
//! HARNESS_LEN`, its STATUS and RX_DELIVERED about that port's input. Events, the console
//! and the exit port are the guest's, whichever block they are written to.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use device_model::net::{NetShared, NetStats};
use pmd::harness::{event, reg, status, HARNESS_LEN, HARNESS_PORT, SIGNATURE};

/// What the guest reported through the harness ports.
#[derive(Debug, Default)]
struct Reported {
    exit_code: Option<u32>,
    events: Vec<(u32, Instant)>,
}

/// What one port's block reads from: its device's statistics and input gate.
pub struct HarnessPort {
    pub stats: Arc<NetStats>,
    pub shared: Arc<NetShared>,
}

pub struct Harness {
    ports: Vec<HarnessPort>,
    reported: Mutex<Reported>,
}

impl Harness {
    /// Blocks for `ports`, in port order.
    pub fn new(ports: Vec<HarnessPort>) -> Self {
        Self {
            ports,
            reported: Mutex::default(),
        }
    }

    /// The I/O ports the blocks occupy.
    pub fn range(&self) -> std::ops::Range<u16> {
        let blocks = u16::try_from(self.ports.len().max(1)).unwrap_or(u16::MAX);
        HARNESS_PORT..HARNESS_PORT.saturating_add(blocks.saturating_mul(HARNESS_LEN))
    }

    /// The port whose block holds I/O port `port`, and the register's offset in it.
    fn block(&self, port: u16) -> Option<(&HarnessPort, u16)> {
        let off = port.checked_sub(HARNESS_PORT)?;
        let p = self.ports.get(usize::from(off / HARNESS_LEN))?;
        Some((p, off % HARNESS_LEN))
    }

    fn reported(&self) -> std::sync::MutexGuard<'_, Reported> {
        self.reported.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A 32-bit read of harness register `port`.
    pub fn read(&self, port: u16) -> u32 {
        let Some((p, off)) = self.block(port) else {
            return 0;
        };
        match off {
            reg::SIGNATURE => SIGNATURE,
            reg::STATUS if p.stats.input_drained.load(Ordering::Acquire) => status::INPUT_DRAINED,
            reg::RX_DELIVERED => p.stats.rx_delivered.load(Ordering::Acquire) as u32,
            _ => 0,
        }
    }

    /// A write to harness register `port`.
    pub fn write(&self, port: u16, value: u32) {
        if matches!(self.block(port), Some((_, reg::EVENT))) {
            self.reported().events.push((value, Instant::now()));
            if value == event::FWD_START {
                // The guest's ports are set up and it forwards: the input may flow.
                for p in &self.ports {
                    p.shared.open_input();
                }
            }
        }
    }

    /// The guest wrote `code` to the exit port. The first code wins.
    pub fn exit(&self, code: u32) {
        self.reported().exit_code.get_or_insert(code);
    }

    pub fn exit_code(&self) -> Option<u32> {
        self.reported().exit_code
    }

    /// When the guest first reported `event`.
    pub fn event_time(&self, event: u32) -> Option<Instant> {
        self.reported()
            .events
            .iter()
            .find(|(e, _)| *e == event)
            .map(|(_, t)| *t)
    }
}
