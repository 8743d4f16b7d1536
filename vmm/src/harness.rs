//! The harness ports (see `pmd::harness`): the exit port that ends a run with the guest's
//! verdict, and the register block through which the guest learns that its input is drained
//! and reports events that `vlab` timestamps.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use device_model::net::{NetShared, NetStats};
use pmd::harness::{event, reg, status, HARNESS_PORT, SIGNATURE};

/// What the guest reported through the harness ports.
#[derive(Debug, Default)]
struct Reported {
    exit_code: Option<u32>,
    events: Vec<(u32, Instant)>,
}

pub struct Harness {
    net: Arc<NetStats>,
    shared: Arc<NetShared>,
    reported: Mutex<Reported>,
}

impl Harness {
    pub fn new(net: Arc<NetStats>, shared: Arc<NetShared>) -> Self {
        Self {
            net,
            shared,
            reported: Mutex::default(),
        }
    }

    fn reported(&self) -> std::sync::MutexGuard<'_, Reported> {
        self.reported.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A 32-bit read of harness register `port`.
    pub fn read(&self, port: u16) -> u32 {
        match port.wrapping_sub(HARNESS_PORT) {
            reg::SIGNATURE => SIGNATURE,
            reg::STATUS if self.net.input_drained.load(Ordering::Acquire) => status::INPUT_DRAINED,
            reg::RX_DELIVERED => self.net.rx_delivered.load(Ordering::Acquire) as u32,
            _ => 0,
        }
    }

    /// A write to harness register `port`.
    pub fn write(&self, port: u16, value: u32) {
        if port.wrapping_sub(HARNESS_PORT) == reg::EVENT {
            self.reported().events.push((value, Instant::now()));
            if value == event::FWD_START {
                // The guest's port is set up: the input may flow.
                self.shared.open_input();
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
