//! SIGINT, SIGTERM and SIGHUP. The first one asks vlab to stop the way its watchdog does:
//! the guest is stopped, every output keeps the frames captured until then (a valid
//! capture), TAP devices and child processes are removed, and vlab exits with 128 + the
//! signal's number after one line naming it. A second signal ends vlab at once.
//!
//! Only the `vlab` binary installs the handlers; the library just asks [`received`] at the
//! points where a run can stop (the supervisor, the suite's job loop, the backend daemon).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM};

/// The first signal's number (0: none yet).
static FIRST: AtomicUsize = AtomicUsize::new(0);
/// Whether any handled signal has arrived.
static ANY: AtomicBool = AtomicBool::new(false);

const HANDLED: [libc::c_int; 3] = [SIGINT, SIGTERM, SIGHUP];

/// A signal that asked vlab to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal(pub libc::c_int);

impl Signal {
    pub fn name(self) -> &'static str {
        match self.0 {
            SIGINT => "SIGINT",
            SIGTERM => "SIGTERM",
            SIGHUP => "SIGHUP",
            _ => "a signal",
        }
    }

    /// The shell's convention for a process ended by this signal.
    pub fn exit_code(self) -> u8 {
        u8::try_from(128 + self.0).unwrap_or(u8::MAX)
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Installs the handlers (the `vlab` binary, once, before any run).
pub fn install() -> std::io::Result<()> {
    for sig in HANDLED {
        // Registered first, so it sees the flag as the previous signal left it: the second
        // signal exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, &ANY)?;
        // The number before the flag: whoever sees the flag finds the number set.
        signal_hook::flag::register_usize(sig, &FIRST, sig as usize)?;
        signal_hook::flag::register(sig, &ANY)?;
    }
    Ok(())
}

/// The signal that asked vlab to stop, if one has.
pub fn received() -> Option<Signal> {
    if !ANY.load(Ordering::Acquire) {
        return None;
    }
    let n = FIRST.load(Ordering::Acquire);
    Some(Signal(libc::c_int::try_from(n).unwrap_or(SIGTERM)))
}

/// The flag set by any handled signal, for code below vlab (the device model) that polls a
/// stop request.
pub fn flag() -> &'static AtomicBool {
    &ANY
}
