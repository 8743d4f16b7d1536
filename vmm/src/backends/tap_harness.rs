//! The harness side of a TAP: inject the input capture into the interface and capture what
//! comes out of it, with packet sockets, while a backend (our datapath, vhost-net, another
//! process) works the TAP's descriptor.
//!
//! Nothing may be lost on the way, whatever the frame mix, the rate or the machine's load,
//! and the kernel drops frames in two places: at the TAP's queue towards the descriptor
//! (500 frames), and at the capture socket's receive buffer. So the injector paces itself by
//! both: at most [`MAX_IN_FLIGHT`] injected frames wait unread by the device side, and the
//! device side's output is at most [`CAPTURE_WINDOW`] frames ahead of the capture (a sink of
//! ours also waits for the capture itself: [`TapFlow`]). The capture socket takes only
//! what comes in from the descriptor (not the harness's own injected frames) into a buffer
//! sized for that window plus everything the device side can hold. Its drop counter and the
//! interface's are read at the end, and any loss fails the run with both. The capture is
//! complete once it has seen as many frames as the device side wrote. With an end marker,
//! the marker follows the input and is left out of the capture.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use device_model::endpoint::{marker, Timestamps};
use device_model::net::NetShared;
use device_model::pcap::{Frame, PcapOut};
use device_model::tap::{PacketSocket, TapCounters, TapFlow, CAPTURE_WINDOW};

/// Frames in the interface not yet read by the device side, at most: well within a TAP's
/// queue (500 frames), so the kernel drops none.
const MAX_IN_FLIGHT: u64 = 128;
/// How long to wait for the capture to see every frame the device side wrote.
const CAPTURE_GRACE: Duration = Duration::from_secs(5);
/// What one captured frame may cost the socket's buffer beyond its bytes (the kernel
/// charges a frame's whole allocation, `truesize`: the sk_buff and its rounded-up data).
const FRAME_OVERHEAD: usize = 1024;
/// The capture buffer's bounds.
const MIN_RCVBUF: usize = 4 << 20;
const MAX_RCVBUF: usize = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tap(#[from] device_model::tap::Error),
    #[error(transparent)]
    Pcap(#[from] device_model::pcap::Error),
    #[error(
        "the capture on {tap} saw {seen} of the {written} frames the device side wrote (the \
         kernel dropped {socket_drops} at the capture socket's buffer; the interface's \
         rx_dropped rose by {if_drops})"
    )]
    Missing {
        tap: String,
        seen: u64,
        written: u64,
        socket_drops: u64,
        if_drops: u64,
    },
    #[error(
        "the kernel dropped {dropped} of the frames injected into {tap} before the device \
         side read them"
    )]
    InjectionDropped { tap: String, dropped: u64 },
    #[error(
        "the capture on {tap} never saw the end marker the guest forwarded ({seen} frames \
         captured in {grace:?}): the backend did not write everything it was given"
    )]
    NoMarker {
        tap: String,
        seen: u64,
        grace: Duration,
    },
    #[error("the TAP harness on {tap}: {why}")]
    Thread { tap: String, why: String },
}

/// What the device side can write into the TAP beyond the capture's window, which sizes the
/// capture's buffer: what it holds between reading a frame and writing it back (its
/// rings), and what it sends of its own with nothing to pace it.
#[derive(Clone, Copy, Debug)]
pub struct DeviceSide {
    /// Frames held at most: rx and tx rings full.
    pub held: u64,
    /// Frames the guest sends of its own (txonly) through a backend that is not ours (ours
    /// waits for the capture): the buffer must hold them all.
    pub unpaced: u64,
    /// The largest frame it writes.
    pub max_frame: usize,
}

impl DeviceSide {
    /// A device with `queue_size`-entry rx and tx rings and frames up to `max_frame` bytes.
    pub fn rings(queue_size: u16, max_frame: usize) -> Self {
        Self {
            held: 2 * u64::from(queue_size),
            unpaced: 0,
            max_frame,
        }
    }

    /// The capture buffer: the window and everything in flight, held or unpaced, each frame
    /// at its largest with the kernel's overhead (twice: the allocation rounds up). The
    /// kernel charges only what is queued, so a large buffer costs nothing while the
    /// capture keeps up.
    fn rcvbuf(&self) -> usize {
        let frames = (CAPTURE_WINDOW + MAX_IN_FLIGHT + self.held).saturating_add(self.unpaced);
        let frames = usize::try_from(frames).unwrap_or(usize::MAX);
        frames
            .saturating_mul(2 * (self.max_frame + FRAME_OVERHEAD))
            .clamp(MIN_RCVBUF, MAX_RCVBUF)
    }
}

/// What the harness does on one interface.
pub struct TapHarness {
    name: String,
    input: Vec<Frame>,
    /// Shared with a TAP source and sink of ours, if they work the descriptor.
    flow: Arc<TapFlow>,
    device: DeviceSide,
    stamps: Timestamps,
    out: Option<PcapOut>,
    threads: Option<Running>,
    /// The guest forwards the end marker, so the capture is complete only once it has come
    /// back: a backend that is not ours may complete the guest's transmission before it
    /// writes the frame to the interface (DPDK's does), so the interface's counter alone
    /// can be read too early.
    marker_back: bool,
    marker_seen: Arc<AtomicBool>,
}

struct Running {
    counters: TapCounters,
    /// The interface counters when the capture started (an existing TAP has history):
    /// read by the device, written by it, dropped towards and from it.
    base: [u64; 4],
    stop: Arc<AtomicBool>,
    injector: JoinHandle<Result<(), Error>>,
    capture: JoinHandle<Result<Captured, Error>>,
}

struct Captured {
    frames: Vec<Vec<u8>>,
    socket_drops: u64,
}

impl TapHarness {
    /// A harness on interface `name` that injects `input` (then the end marker, if
    /// `end_marker`) and writes what it captures to `out`. `flow` is shared with our own
    /// TAP source and sink when they work the descriptor.
    pub fn new(
        name: &str,
        input: Vec<Frame>,
        end_marker: bool,
        flow: Option<Arc<TapFlow>>,
        device: DeviceSide,
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
        let flow = flow.unwrap_or_default();
        if input.is_empty() {
            flow.done.store(true, Ordering::Release);
        }
        Ok(Self {
            name: name.to_string(),
            input,
            flow,
            device,
            stamps,
            out,
            threads: None,
            marker_back: false,
            marker_seen: Arc::default(),
        })
    }

    /// Makes a completed run wait for the end marker to come back (the guest forwards it:
    /// io and macswap), see [`TapHarness::marker_back`].
    pub fn with_marker_back(mut self, back: bool) -> Self {
        self.marker_back = back;
        self
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
        // The capture first, then the counters: every frame counted as written from here on
        // reaches the capture socket.
        let rx = PacketSocket::capture(&self.name, self.device.rcvbuf())?;
        let tx = PacketSocket::injector(&self.name)?;
        let counters = TapCounters::new(&self.name)?;
        let base = [
            counters.read_by_device()?,
            counters.written_by_device()?,
            counters.dropped_towards_device()?,
            counters.dropped_from_device()?,
        ];
        let stop = Arc::new(AtomicBool::new(false));
        let input = std::mem::take(&mut self.input);
        let flow = self.flow.clone();
        let inj_counters = counters.clone();
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
                let paced = Pacing {
                    counters: &inj_counters,
                    flow: &flow,
                    read_base: base[0],
                    written_base: base[1],
                };
                let mut read = 0;
                for k in 0..input.len() as u64 {
                    loop {
                        if stop_inj.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        if k - read >= MAX_IN_FLIGHT {
                            read = paced.read()?;
                        }
                        if k - read < MAX_IN_FLIGHT && paced.capture_keeps_up()? {
                            break;
                        }
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    tx.send(&input[k as usize].data)?;
                    flow.injected.fetch_add(1, Ordering::AcqRel);
                }
                flow.done.store(true, Ordering::Release);
                Ok(())
            })
            .map_err(|e| self.thread_err(e.to_string()))?;
        let stop_cap = stop.clone();
        let flow = self.flow.clone();
        let marker_seen = self.marker_seen.clone();
        flow.capturing.store(true, Ordering::Release);
        let capture = std::thread::Builder::new()
            .name("vlab-tap-capture".into())
            .spawn(move || {
                let captured = capture(rx, &flow, &marker_seen, &stop_cap);
                // A sink of ours waits for the capture only while it runs.
                flow.capturing.store(false, Ordering::Release);
                captured
            })
            .map_err(|e| self.thread_err(e.to_string()))?;
        self.threads = Some(Running {
            counters,
            base,
            stop,
            injector,
            capture,
        });
        Ok(())
    }

    /// Stops both threads and, when `keep`, writes the output capture. For a run that
    /// `completed`, first waits until the capture has every frame the device side wrote
    /// (and fails if it does not, or if the kernel dropped injected frames); for one that
    /// failed, writes what was captured so far. Returns the frames captured.
    ///
    /// `forwarded` says the guest finished its forwarding loop, so a marker it forwards
    /// (see [`TapHarness::with_marker_back`]) is on its way; a guest that stopped before
    /// (a refused feature, a failed set-up) sends none.
    pub fn finish(mut self, completed: bool, forwarded: bool, keep: bool) -> Result<u64, Error> {
        let marker_back = self.marker_back && forwarded;
        let Some(t) = self.threads.take() else {
            return Ok(0);
        };
        let since = |now: u64, base: u64| now.saturating_sub(base);
        let deadline = Instant::now() + CAPTURE_GRACE;
        if completed && marker_back {
            while !self.marker_seen.load(Ordering::Acquire)
                && self.flow.capturing.load(Ordering::Acquire)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let written = since(t.counters.written_by_device()?, t.base[1]);
        while completed
            && self.flow.captured.load(Ordering::Acquire) < written
            && self.flow.capturing.load(Ordering::Acquire)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        t.stop.store(true, Ordering::Release);
        let injected = t.injector.join();
        let captured = t
            .capture
            .join()
            .map_err(|_| self.thread_err("the capture thread panicked".into()))??;
        injected.map_err(|_| self.thread_err("the injector thread panicked".into()))??;
        let seen = self.flow.captured.load(Ordering::Acquire);
        if completed && marker_back && !self.marker_seen.load(Ordering::Acquire) {
            return Err(Error::NoMarker {
                tap: self.name.clone(),
                seen,
                grace: CAPTURE_GRACE,
            });
        }
        if completed && seen < written {
            return Err(Error::Missing {
                tap: self.name.clone(),
                seen,
                written,
                socket_drops: captured.socket_drops,
                if_drops: since(t.counters.dropped_from_device()?, t.base[3]),
            });
        }
        let dropped = since(t.counters.dropped_towards_device()?, t.base[2]);
        if completed && dropped > 0 {
            return Err(Error::InjectionDropped {
                tap: self.name.clone(),
                dropped,
            });
        }
        if let Some(mut out) = self.out.take().filter(|_| keep) {
            for (k, f) in captured.frames.iter().enumerate() {
                out.write(self.stamps.stamp(k as u64), f)?;
            }
            out.commit()?;
        }
        Ok(captured.frames.len() as u64)
    }
}

/// The injector's view of how far the device side and the capture have got.
struct Pacing<'a> {
    counters: &'a TapCounters,
    flow: &'a TapFlow,
    read_base: u64,
    written_base: u64,
}

impl Pacing<'_> {
    /// Frames the device side has read from the interface.
    fn read(&self) -> Result<u64, Error> {
        Ok(self
            .counters
            .read_by_device()?
            .saturating_sub(self.read_base))
    }

    /// Whether the device side's output is within the capture's window, so one more frame
    /// may go in. What it wrote is read each time (a few microseconds): a bound derived from
    /// what went in would fail where the device side makes frames of its own.
    fn capture_keeps_up(&self) -> Result<bool, Error> {
        let captured = self.flow.captured.load(Ordering::Acquire);
        let written = self
            .counters
            .written_by_device()?
            .saturating_sub(self.written_base);
        Ok(written.saturating_sub(captured) < CAPTURE_WINDOW)
    }
}

/// Takes every frame that comes in on `rx` until `stop`, counting them in `flow`.
fn capture(
    mut rx: PacketSocket,
    flow: &TapFlow,
    marker_seen: &AtomicBool,
    stop: &AtomicBool,
) -> Result<Captured, Error> {
    let mut frames = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Acquire) {
        if let Some(n) = rx.recv(&mut buf)? {
            if marker::is_end(&buf[..n]) {
                marker_seen.store(true, Ordering::Release);
            } else {
                frames.push(buf[..n].to_vec());
            }
            flow.captured.fetch_add(1, Ordering::AcqRel);
        }
    }
    // What came in after the stop is not wanted, but what the kernel dropped is told.
    Ok(Captured {
        frames,
        socket_drops: rx.drops()?,
    })
}
