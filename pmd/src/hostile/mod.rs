//! A hostile driver: testpmd's `mode=hostile seed=N rounds=N`.
//!
//! It opens the port normally first (the PMD's own initialisation), then takes the device
//! over with a driver of its own that writes malformed rings and registers on purpose: for
//! each of `rounds` rounds a small seeded generator (xorshift) picks one abuse and a variant
//! of it, performs it directly on the rings or registers, and checks the device's answer
//! against what the virtio spec lets a device do: return the chain (dropped, counted),
//! refuse with DEVICE_NEEDS_RESET, or ignore the access. After each round it reads the
//! device status; a device that needs a reset is reset and set up again. Then the port is
//! opened normally once more and forwards the rest of the input and a few generated frames,
//! to show the device recovered. The per-abuse counts go to the console; the exit code is
//! PASS when every answer was one the spec allows and the final traffic went through.
//!
//! Before the rounds it finds where guest RAM ends without being told: it places the tx
//! ring at page after page (a binary search) and sees which placements the device refuses.
//! Abuses then aim buffers just across that end.
//!
//! Everything the device does here is deterministic: each abuse waits for the device's
//! answer before the next, rx abuses only meet frames the input still holds (and say so
//! when it is drained), so both machines produce the same log and the same frames.
//! Nothing here allocates per round: the guest's heap is a small bump allocator.
//!
//! The module's parts: `dev` is the hand-driven device (set-up plans, scratch memory,
//! waiting for and judging answers) on rings written raw (`raw_ring`); `ram` finds the
//! end of RAM; the abuses are grouped by what they break: `descriptors`, `rings`,
//! `control` (the control queue), `registers` (register and configuration space
//! accesses), `resets` (status sequences and resets); `scenario` runs the rounds and
//! reports, `traffic` is the normal traffic that ends a run.

mod control;
mod descriptors;
mod dev;
mod ram;
mod raw_ring;
mod registers;
mod resets;
mod rings;
mod rng;
mod scenario;
#[cfg(test)]
mod tests;
mod traffic;

use crate::{net, transport};
pub use scenario::run;

/// The port abused, and opened normally before and after: the first virtio-net function.
const PORT_ID: u8 = 0;

const RX: usize = 0;
const TX: usize = 1;
const CTRL: usize = 2;
const PAGE: u64 = 4096;

/// The scratch block the abuses point descriptors into.
mod scratch {
    /// A virtio-net header and the frames sent.
    pub const TX_BUF: usize = 0;
    /// Indirect tables (2048 entries).
    pub const IND: usize = 0x1000;
    pub const IND_ENTRIES: usize = 2048;
    /// Control commands; the ack byte at CTRL_ACK.
    pub const CTRL_BUF: usize = 0x9000;
    pub const CTRL_ACK: usize = CTRL_BUF + 0x800;
    /// A receive buffer that holds any frame the device carries (16 KiB and a header).
    pub const RX_BUF: usize = 0xa000;
    pub const RX_LEN: usize = 0x4100;
    pub const LEN: usize = RX_BUF + RX_LEN;
}

/// Memory polls between two looks at the device status (each a VM exit).
const SPINS: u32 = 1024;
/// Looks at the status before an answer counts as never coming.
const CHECKS: u32 = 20_000;
/// Failures printed in full; the rest are only counted.
const FAILURES_SHOWN: u32 = 10;
/// Frames the final traffic generates when `pkts` does not say.
const GENERATED: u64 = 8;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no virtio-net PCI function on bus 0")]
    NoDevice,
    #[error(transparent)]
    Transport(#[from] transport::Error),
    #[error(transparent)]
    Port(#[from] net::Error),
    #[error("out of DMA memory for the hostile driver's rings and buffers")]
    NoMemory,
    #[error("queue {queue}: the device gives size {size}, not a usable ring size")]
    QueueSize { queue: u16, size: u16 },
    #[error("the device refused a well-formed setup (status {0:#x})")]
    Refused(u8),
}
