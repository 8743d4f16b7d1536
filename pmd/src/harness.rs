//! The port-I/O contract between a guest and the `vlab` harness.
//!
//! These are the only platform devices the guest application uses besides the virtio-net
//! functions: a 16550 UART for its log, an exit port (QEMU's `isa-debug-exit` location, so
//! the same image can end a QEMU run too) and small harness blocks through which `vlab`
//! tells the guest that a port's input is drained. Each port has its own block, port n's at
//! `HARNESS_PORT + n * HARNESS_LEN`, its STATUS and RX_DELIVERED about that port's input;
//! events may be written to any block. Under a VMM without a port's block its signature
//! reads as all ones and the application falls back to its command-line packet counts.
//!
//! `vmm` uses these constants too, so both sides agree by construction.

use crate::hal::{Hal, Width};

/// COM1, the guest's log.
pub const SERIAL_PORT: u16 = 0x3f8;
/// Writing a 32-bit value here ends the run; `vlab` exits with that value.
pub const EXIT_PORT: u16 = 0xf4;
/// Base of the harness register block of port 0.
pub const HARNESS_PORT: u16 = 0x500;
/// Size of one port's harness register block in bytes.
pub const HARNESS_LEN: u16 = 0x20;

/// Base of port `port`'s harness register block.
pub const fn harness_base(port: u8) -> u16 {
    HARNESS_PORT + port as u16 * HARNESS_LEN
}

/// Register offsets inside the harness block (all 32-bit).
pub mod reg {
    /// Read: [`super::SIGNATURE`].
    pub const SIGNATURE: u16 = 0x0;
    /// Read: [`super::status`] bits.
    pub const STATUS: u16 = 0x4;
    /// Read: low 32 bits of the number of frames the backend has delivered to the rx ring.
    pub const RX_DELIVERED: u16 = 0x8;
    /// Write: an [`super::event`] code; `vlab` timestamps it.
    pub const EVENT: u16 = 0xc;
    /// Write: guest-physical address (below 4 GiB) of text for the console.
    pub const CONSOLE_ADDR: u16 = 0x10;
    /// Write: length of the text at CONSOLE_ADDR (at most [`super::CONSOLE_MAX`]); `vlab`
    /// appends it to the serial output. Two exits per string instead of one per byte.
    pub const CONSOLE_WRITE: u16 = 0x14;
}

/// Longest string one CONSOLE_WRITE carries.
pub const CONSOLE_MAX: u32 = 4096;

/// "VLAB", little endian.
pub const SIGNATURE: u32 = u32::from_le_bytes(*b"VLAB");

/// Bits of the STATUS register.
pub mod status {
    /// Every input frame has been delivered to the rx ring or dropped by the device: once the
    /// guest has seen this bit, one more empty rx poll means there is nothing left to receive.
    pub const INPUT_DRAINED: u32 = 1 << 0;
}

/// Codes written to the EVENT register.
pub mod event {
    /// The port is initialised and its link is up.
    pub const LINK_UP: u32 = 1;
    /// The forwarding loop starts.
    pub const FWD_START: u32 = 2;
    /// The forwarding loop has ended and every transmitted frame has been completed.
    pub const FWD_DONE: u32 = 3;
}

/// Exit codes of the guest application (what `vlab` exits with).
pub mod exit {
    /// The run ended and every check of the application passed.
    pub const PASS: u32 = 0;
    /// The run ended but one of the application's checks failed.
    pub const CHECK_FAILED: u32 = 1;
    /// The command line could not be parsed.
    pub const BAD_CONFIG: u32 = 2;
    /// The device could not be found or initialised.
    pub const DEVICE_ERROR: u32 = 3;
    /// The application panicked.
    pub const PANIC: u32 = 4;
    /// The CPU raised an exception (reported by the guest's ring-0 handler).
    pub const CPU_EXCEPTION: u32 = 5;
}

/// The guest's view of one port's harness block.
pub struct Harness<'a, H: Hal> {
    hal: &'a H,
    base: u16,
    present: bool,
}

impl<'a, H: Hal> Harness<'a, H> {
    /// Looks for port 0's harness block by its signature.
    pub fn probe(hal: &'a H) -> Self {
        Self::probe_port(hal, 0)
    }

    /// Looks for port `port`'s harness block by its signature.
    pub fn probe_port(hal: &'a H, port: u8) -> Self {
        let base = harness_base(port);
        let present = hal.pio_read(base + reg::SIGNATURE, Width::U32) == SIGNATURE;
        Self { hal, base, present }
    }

    /// Whether the VMM provides the harness block.
    pub fn present(&self) -> bool {
        self.present
    }

    /// `Some(true)` once the input is drained; `None` without a harness.
    pub fn input_drained(&self) -> Option<bool> {
        self.present.then(|| {
            self.hal.pio_read(self.base + reg::STATUS, Width::U32) & status::INPUT_DRAINED != 0
        })
    }

    /// Frames the backend delivered to the rx ring (low 32 bits); `None` without a harness.
    pub fn rx_delivered(&self) -> Option<u32> {
        self.present
            .then(|| self.hal.pio_read(self.base + reg::RX_DELIVERED, Width::U32))
    }

    /// Reports an event to the VMM; a no-op without a harness.
    pub fn event(&self, code: u32) {
        if self.present {
            self.hal.pio_write(self.base + reg::EVENT, Width::U32, code);
        }
    }
}

/// Ends the run with `code`. On `vlab` the vCPU stops here; on QEMU's `isa-debug-exit` the
/// process exits with `(code << 1) | 1`. The caller must not rely on this returning.
pub fn exit<H: Hal>(hal: &H, code: u32) {
    hal.pio_write(EXIT_PORT, Width::U32, code);
}
