//! The harness side of a TAP: inject the input capture into the interface and capture what
//! comes out of it, with a packet socket, while a backend works the TAP's other end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use device_model::endpoint::Timestamps;
use device_model::net::NetShared;
use device_model::pcap::{Frame, PcapOut};
use device_model::tap::{Injection, PacketSocket, Tap};

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
    #[error("the TAP injector failed: {0}")]
    Injector(String),
}

pub struct TapHarness {
    tap: Tap,
    input: Vec<Frame>,
    injection: Arc<Injection>,
    stamps: Timestamps,
    out: Option<PcapOut>,
    written: Arc<AtomicU64>,
    threads: Option<Running>,
}

struct Running {
    stop: Arc<AtomicBool>,
    injector: JoinHandle<Result<(), Error>>,
    capture: JoinHandle<Result<Vec<Vec<u8>>, Error>>,
    seen: Arc<AtomicU64>,
}

impl TapHarness {
    /// `written` counts the frames the device side writes into the TAP.
    pub fn new(
        tap: Tap,
        input: Vec<Frame>,
        injection: Arc<Injection>,
        out: Option<PcapOut>,
        written: Arc<AtomicU64>,
    ) -> Self {
        let stamps = Timestamps::new(input.iter().map(|f| f.ts).collect());
        Self {
            tap,
            input,
            injection,
            stamps,
            out,
            written,
            threads: None,
        }
    }

    pub fn tap(&self) -> &Tap {
        &self.tap
    }

    /// Starts capturing now, and injecting once the guest's port is set up (`shared`'s
    /// input gate), so no frame meets a half-programmed device.
    pub fn start(&mut self, shared: Arc<NetShared>) -> Result<(), Error> {
        let tx = PacketSocket::bind(self.tap.name())?;
        let rx = PacketSocket::bind(self.tap.name())?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicU64::new(0));
        let input = std::mem::take(&mut self.input);
        let injection = self.injection.clone();
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
                for f in &input {
                    while injection.in_flight() >= MAX_IN_FLIGHT {
                        if stop_inj.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        std::thread::yield_now();
                    }
                    tx.send(&f.data)?;
                    injection.injected.fetch_add(1, Ordering::AcqRel);
                }
                injection.done.store(true, Ordering::Release);
                Ok(())
            })
            .map_err(|e| Error::Injector(e.to_string()))?;
        let stop_cap = stop.clone();
        let seen_cap = seen.clone();
        let capture = std::thread::Builder::new()
            .name("vlab-tap-capture".into())
            .spawn(move || {
                let frames = Mutex::new(Vec::new());
                let mut buf = vec![0u8; 65_536];
                while !stop_cap.load(Ordering::Acquire) {
                    if let Some(n) = rx.recv(&mut buf)? {
                        frames
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(buf[..n].to_vec());
                        seen_cap.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Ok(frames.into_inner().unwrap_or_else(|e| e.into_inner()))
            })
            .map_err(|e| Error::Injector(e.to_string()))?;
        self.threads = Some(Running {
            stop,
            injector,
            capture,
            seen,
        });
        Ok(())
    }

    /// Waits until the capture has every frame the device side wrote, stops both threads
    /// and, when `commit`, writes the output capture. Returns the frames captured.
    pub fn finish(mut self, commit: bool) -> Result<u64, Error> {
        let Some(t) = self.threads.take() else {
            return Ok(0);
        };
        let written = self.written.load(Ordering::Acquire);
        let deadline = Instant::now() + CAPTURE_GRACE;
        while commit && t.seen.load(Ordering::Acquire) < written && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        t.stop.store(true, Ordering::Release);
        let injected = t.injector.join();
        let frames = t
            .capture
            .join()
            .map_err(|_| Error::Injector("the capture thread panicked".into()))??;
        injected.map_err(|_| Error::Injector("the injector thread panicked".into()))??;
        if !commit {
            return Ok(frames.len() as u64);
        }
        if (frames.len() as u64) < written {
            return Err(Error::Missing {
                tap: self.tap.name().to_string(),
                seen: frames.len() as u64,
                written,
            });
        }
        if let Some(mut out) = self.out.take() {
            for (k, f) in frames.iter().enumerate() {
                out.write(self.stamps.stamp(k as u64), f)?;
            }
            out.commit()?;
        }
        Ok(frames.len() as u64)
    }
}
