//! The two machines that run guest code on a [`Board`](crate::board::Board), and the
//! supervision they share: a watchdog, and a watch on the backend.

pub mod boot;
pub mod image;
pub mod inprocess;
pub mod kvm;

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use device_model::net::NetStats;

/// How often the supervisor looks at the backend while the guest runs.
const SUPERVISE_TICK: Duration = Duration::from_millis(10);
/// How long a stopped guest thread gets to notice before the run is abandoned.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kvm(#[from] kvm::Error),
    #[error("the guest did not finish within {0:?}; stopped by the watchdog (raise --timeout if it is just slow): {1}")]
    Timeout(Duration, String),
    #[error("stopped because the backend failed: {0} ({1})")]
    Backend(String, String),
    #[error("the in-process driver thread panicked: {0}")]
    DriverPanicked(String),
    #[error("the guest thread did not stop within {0:?} of being asked to")]
    Unresponsive(Duration),
    #[error("interrupted by {0}: {1}")]
    Signal(crate::signals::Signal, String),
}

/// Pins the calling (guest) thread, if asked; a failure only costs speed, so it is logged.
/// Every port's device statistics, for [`supervise`].
pub(crate) fn port_stats(board: &crate::board::Board) -> Vec<&NetStats> {
    board.nets.iter().map(|n| &*n.stats).collect()
}

pub(crate) fn pin(cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        if let Err(e) = device_model::affinity::pin_current_thread(cpu) {
            tracing::warn!("cannot pin the guest thread to CPU {cpu}: {e}");
        }
    }
}

/// Why the supervisor asks the guest to stop.
enum StopReason {
    Timeout,
    Backend(String),
    Signal(crate::signals::Signal),
}

/// Waits for the guest thread's result on `done`. Asks it to stop (through `request_stop`,
/// called repeatedly until it does) when `timeout` passes, a port's backend fails or a
/// signal asks vlab to stop.
pub(crate) fn supervise<T>(
    done: &Receiver<Result<T, Error>>,
    nets: &[&NetStats],
    timeout: Duration,
    mut request_stop: impl FnMut(),
) -> Result<T, Error> {
    let deadline = Instant::now() + timeout;
    let reason = loop {
        match done.recv_timeout(SUPERVISE_TICK) {
            Ok(r) => return r,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::DriverPanicked("guest thread vanished".into()))
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        if let Some(why) = nets.iter().find_map(|n| n.failure()) {
            break StopReason::Backend(why);
        }
        if let Some(sig) = crate::signals::received() {
            break StopReason::Signal(sig);
        }
        if Instant::now() >= deadline {
            break StopReason::Timeout;
        }
    };
    let grace = Instant::now() + STOP_GRACE;
    // Where the guest was when it stopped, for the error message.
    let last = loop {
        request_stop();
        break match done.recv_timeout(SUPERVISE_TICK) {
            Ok(Ok(_)) => "it finished as it was stopped".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(RecvTimeoutError::Disconnected) => "the guest thread vanished".to_string(),
            Err(RecvTimeoutError::Timeout) if Instant::now() >= grace => {
                return Err(Error::Unresponsive(STOP_GRACE));
            }
            Err(RecvTimeoutError::Timeout) => continue,
        };
    };
    Err(match reason {
        StopReason::Timeout => Error::Timeout(timeout, last),
        StopReason::Backend(why) => Error::Backend(why, last),
        StopReason::Signal(sig) => Error::Signal(sig, last),
    })
}
