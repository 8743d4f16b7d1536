//! vlab's own vhost-user backend on a thread of this process, for a vhost-user run without
//! `--socket`: a real socket and shared memory, with the run's pcap endpoints.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use device_model::endpoint::marker::{Marked, UntilMarker};
use device_model::endpoint::{NullSink, PcapSink, PcapSource, Sink, Source, Timestamps};
use device_model::net::{NetConfig, NetCounters};
use device_model::pcap::{Frame, PcapOut};
use device_model::vhost::user_backend::{self, BackendConfig, Served};
use device_model::vhost::DATA_FEATURES;

use super::Error;

/// The stop request of our in-process vhost-user backend, which is never made: the device
/// ends the connection when the run ends, however it ends.
static NEVER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// How long to wait for our own vhost-user backend thread to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Our vhost-user backend on a thread of this process, serving one connection with pcap
/// endpoints; the socket lives in a private temporary directory.
pub struct BuiltIn {
    pub(super) socket: PathBuf,
    _dir: tempfile::TempDir,
    thread: JoinHandle<Result<Served, user_backend::Error>>,
}

/// What our vhost-user backend did.
pub struct BuiltInEnd {
    pub counters: NetCounters,
    pub output_frames: u64,
}

impl BuiltIn {
    pub(super) fn spawn(
        net: &NetConfig,
        frames: Vec<Frame>,
        stamps: Timestamps,
        out: Option<PcapOut>,
    ) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("vlab-vhost-user")
            .tempdir()
            .map_err(|e| Error::BuiltIn(format!("creating a socket directory: {e}")))?;
        let socket = dir.path().join("backend.sock");
        let source: Box<dyn Source> = Box::new(Marked::new(PcapSource::new(frames)));
        let sink: Box<dyn Sink> = match out {
            Some(out) => Box::new(UntilMarker::new(PcapSink::new(out, stamps), false)),
            None => Box::new(UntilMarker::new(NullSink::default(), false)),
        };
        let cfg = BackendConfig {
            features: DATA_FEATURES,
            queue_size: net.queue_size,
            max_frame: net.max_frame,
        };
        let path = socket.clone();
        let thread = std::thread::Builder::new()
            .name("vlab-vhost-user-backend".into())
            .spawn(move || user_backend::serve(&path, cfg, source, sink, None, &NEVER))
            .map_err(|e| Error::BuiltIn(format!("starting the backend thread: {e}")))?;
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        while !socket.exists() {
            if thread.is_finished() || Instant::now() > deadline {
                let why = match thread.join() {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("not listening on {} in time", socket.display()),
                };
                return Err(Error::BuiltIn(why));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Self {
            socket,
            _dir: dir,
            thread,
        })
    }

    /// Waits for the backend to see the frontend go (call after the device let go of the
    /// session) and, when `keep`, writes its output: every frame it received, however the
    /// run ended.
    pub fn finish(self, keep: bool) -> Result<BuiltInEnd, Error> {
        let served = self
            .thread
            .join()
            .map_err(|_| Error::BuiltIn("the backend thread panicked".into()))?
            .map_err(|e| Error::BuiltIn(e.to_string()))?;
        let Served {
            stats, mut sink, ..
        } = served;
        if keep {
            sink.finish()
                .map_err(|e| Error::BuiltIn(format!("finishing the output: {e}")))?;
        }
        Ok(BuiltInEnd {
            counters: stats,
            output_frames: sink.frames(),
        })
    }
}
