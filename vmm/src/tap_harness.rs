//! The harness side of a TAP: inject the input capture into the interface and capture what
//! comes out of it, with packet sockets, while a backend (our datapath, vhost-net, another
//! process) works the TAP's descriptor.
//!
//! The interface's own counters pace it: at most [`MAX_IN_FLIGHT`] injected frames wait
//! unread, so the kernel drops none; and the capture is complete once it has seen as many
//! frames as the device side wrote. With an end marker, the marker follows the input and
//! is left out of the capture.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use device_model::endpoint::{marker, Timestamps};
use device_model::net::NetShared;
use device_model::pcap::{Frame, PcapOut};
use device_model::tap::{Injection, PacketSocket, TapCounters};

/// Frames in the interface not yet read by the device side, at most: well within a TAP's
/// queue (500 frames), so the kernel drops none.
const MAX_IN_FLIGHT: u64 = 128;
/// How long to wait for the capture to see every frame the device side wrote.
const CAPTURE_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tap(#[from] device_model::tap::Error),
    #[error(transparent)]
    Pcap(#[from] device_model::pcap::Error),
    #[error("the capture on {tap} saw {seen} of the {written} frames the device side wrote")]
    Missing {
        tap: String,
        seen: u64,
        written: u64,
    },
    #[error("the TAP harness on {tap}: {why}")]
    Thread { tap: String, why: String },
}

/// What the harness does on one interface.
pub struct TapHarness {
    name: String,
    counters: TapCounters,
    input: Vec<Frame>,
    /// Tells a TAP source of ours how far injection got.
    injection: Option<Arc<Injection>>,
    stamps: Timestamps,
    out: Option<PcapOut>,
    /// The interface counters when the harness started (an existing TAP has history).
    base: (u64, u64),
    threads: Option<Running>,
}

struct Running {
    stop: Arc<AtomicBool>,
    injector: JoinHandle<Result<(), Error>>,
    capture: JoinHandle<Result<Vec<Vec<u8>>, Error>>,
    seen: Arc<AtomicU64>,
}

impl TapHarness {
    /// A harness on interface `name` that injects `input` (then the end marker, if
    /// `end_marker`) and writes what it captures to `out`.
    pub fn new(
        name: &str,
        input: Vec<Frame>,
        end_marker: bool,
        injection: Option<Arc<Injection>>,
        out: Option<PcapOut>,
    ) -> Result<Self, Error> {
        let stamps = Timestamps::new(input.iter().map(|f| f.ts).collect());
        let mut input = input;
        if end_marker {
            input.push(Frame {
                ts: Duration::ZERO,
                data: marker::end_frame(),
            });
        }
        let counters = TapCounters::new(name);
        let base = (counters.read_by_device()?, counters.written_by_device()?);
        if input.is_empty() {
            if let Some(i) = &injection {
                i.done.store(true, Ordering::Release);
            }
        }
        Ok(Self {
            name: name.to_string(),
            counters,
            input,
            injection,
            stamps,
            out,
            base,
            threads: None,
        })
    }

    fn thread_err(&self, why: String) -> Error {
        Error::Thread {
            tap: self.name.clone(),
            why,
        }
    }

    /// Starts capturing now, and injecting once the guest's port is set up (`shared`'s
    /// input gate), so no frame meets a half-programmed device.
    pub fn start(&mut self, shared: Arc<NetShared>) -> Result<(), Error> {
        let tx = PacketSocket::bind(&self.name)?;
        let rx = PacketSocket::bind(&self.name)?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicU64::new(0));
        let input = std::mem::take(&mut self.input);
        let injection = self.injection.clone();
        let counters = self.counters.clone();
        let read_base = self.base.0;
        let stop_inj = stop.clone();
        let injector = std::thread::Builder::new()
            .name("vlab-tap-inject".into())
            .spawn(move || {
                while !shared.input_open() {
                    if stop_inj.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                let mut read = 0;
                for (k, f) in input.iter().enumerate() {
                    while k as u64 - read >= MAX_IN_FLIGHT {
                        if stop_inj.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        std::thread::sleep(Duration::from_micros(50));
                        read = counters.read_by_device()? - read_base;
                    }
                    tx.send(&f.data)?;
                    if let Some(i) = &injection {
                        i.injected.fetch_add(1, Ordering::AcqRel);
                    }
                }
                if let Some(i) = &injection {
                    i.done.store(true, Ordering::Release);
                }
                Ok(())
            })
            .map_err(|e| self.thread_err(e.to_string()))?;
        let stop_cap = stop.clone();
        let seen_cap = seen.clone();
        let capture = std::thread::Builder::new()
            .name("vlab-tap-capture".into())
            .spawn(move || {
                let mut frames = Vec::new();
                let mut buf = vec![0u8; 65_536];
                while !stop_cap.load(Ordering::Acquire) {
                    if let Some(n) = rx.recv(&mut buf)? {
                        if !marker::is_end(&buf[..n]) {
                            frames.push(buf[..n].to_vec());
                        }
                        seen_cap.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Ok(frames)
            })
            .map_err(|e| self.thread_err(e.to_string()))?;
        self.threads = Some(Running {
            stop,
            injector,
            capture,
            seen,
        });
        Ok(())
    }

    /// Stops both threads and, when `keep`, writes the output capture. For a run that
    /// `completed`, first waits until the capture has every frame the device side wrote
    /// (and fails if it does not); for one that failed, writes what was captured so far.
    /// Returns the frames captured.
    pub fn finish(mut self, completed: bool, keep: bool) -> Result<u64, Error> {
        let Some(t) = self.threads.take() else {
            return Ok(0);
        };
        let written = self.counters.written_by_device()? - self.base.1;
        let deadline = Instant::now() + CAPTURE_GRACE;
        while completed && t.seen.load(Ordering::Acquire) < written && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        t.stop.store(true, Ordering::Release);
        let injected = t.injector.join();
        let frames = t
            .capture
            .join()
            .map_err(|_| self.thread_err("the capture thread panicked".into()))??;
        injected.map_err(|_| self.thread_err("the injector thread panicked".into()))??;
        let seen = t.seen.load(Ordering::Acquire);
        if completed && seen < written {
            return Err(Error::Missing {
                tap: self.name.clone(),
                seen,
                written,
            });
        }
        if let Some(mut out) = self.out.take().filter(|_| keep) {
            for (k, f) in frames.iter().enumerate() {
                out.write(self.stamps.stamp(k as u64), f)?;
            }
            out.commit()?;
        }
        Ok(frames.len() as u64)
    }
}
