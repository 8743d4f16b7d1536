//! The seam to a datapath served elsewhere (the kernel's vhost-net, a vhost-user backend
//! process): the device hands it its queue pairs at DRIVER_OK and takes them back at reset,
//! and keeps the configuration space and the control queue itself. The `vhost` module
//! implements it.

use std::sync::Arc;

use super::queues::QueuePair;
use super::NetStats;
use crate::virtio::{Interrupt, Memory};

/// Why a dataplane could not start or stop; its message names the backend and the step.
pub type DataplaneError = Box<dyn std::error::Error + Send + Sync>;

/// A backend behind our device that serves its data queues.
pub trait Dataplane: Send {
    fn name(&self) -> &'static str;

    /// The data features the backend supports.
    fn features(&self) -> u64;

    /// What the device offers when configured to offer `wanted`: less what the backend
    /// cannot serve and the device can do without (packed rings, in-order use, RSS and
    /// hash reports, multiqueue).
    fn offer(&self, wanted: u64) -> u64 {
        wanted
    }

    /// Queue pairs the backend can serve: the device has no more.
    fn max_pairs(&self) -> u16 {
        1
    }

    /// Hands the queue pairs to the backend. `stats` takes a failure noticed later (a
    /// backend that dies), which stops the run, and counts the interrupts forwarded.
    fn start(
        &mut self,
        mem: &Memory,
        negotiated: u64,
        pairs: &[QueuePair],
        interrupt: Arc<dyn Interrupt>,
        stats: Arc<NetStats>,
    ) -> Result<(), DataplaneError>;

    /// Takes the queues back (on reset and at the end of a run).
    fn stop(&mut self) -> Result<(), DataplaneError>;
}
