//! The rust backend's datapath: one thread serving the rx and tx queues of a virtio-net
//! device from a [`Source`] and into a [`Sink`].
//!
//! It polls while there is work and suppresses the driver's notifications meanwhile, so a
//! busy run has no notification exits at all; after a stretch of idle polls it re-enables
//! notifications and sleeps on the queues' kick eventfds.
//!
//! Every descriptor is guest input. Addresses are checked by `vm-memory` (nothing outside
//! guest RAM is touched), chain length and loops by `virtio-queue`, sizes and directions
//! here; a bad chain is returned unused or empty and counted, never trusted.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::{NetStats, NET_HDR_LEN, RX_QUEUE, TX_QUEUE};
use crate::endpoint::{Peek, Sink, Source};
use crate::virtio::{Health, Interrupt, Memory};

/// Chains served per queue before looking at the other queue.
const BUDGET: usize = 256;
/// Empty polls before the datapath enables notifications and sleeps.
const IDLE_POLLS_BEFORE_SLEEP: u32 = 20_000;
/// Longest sleep: bounds how late a stop request or a source that turns ready is seen.
const SLEEP_MS: i32 = 1;
/// Why a chain whose last descriptor still says NEXT ended: `virtio-queue` stops a walk
/// after queue-size descriptors or at an index outside the table.
const CHAIN_CUT: &str = "descriptor chain loops or points outside the descriptor table";
/// Largest tx chain accepted: a 64 KiB frame and its header.
const MAX_TX_CHAIN: usize = NET_HDR_LEN + 65_536;

pub(super) struct Datapath {
    pub mem: Arc<Memory>,
    pub rx: Queue,
    pub rx_kick: EventFd,
    pub tx: Queue,
    pub tx_kick: EventFd,
    pub interrupt: Arc<dyn Interrupt>,
    pub health: Arc<Health>,
    pub source: Box<dyn Source>,
    pub sink: Box<dyn Sink>,
    pub stats: Arc<NetStats>,
    pub stop: Arc<AtomicBool>,
    pub max_frame: usize,
    pub scratch: Vec<u8>,
}

/// What the thread hands back when stopped.
pub(super) struct DatapathEnd {
    pub source: Box<dyn Source>,
    pub sink: Box<dyn Sink>,
}

/// Why a chain was not used as the driver meant it.
#[derive(Debug)]
enum ChainError {
    Malformed(String),
    TooSmall { have: usize, need: usize },
}

/// The datapath cannot go on (the rings themselves are unreachable, or the sink failed).
#[derive(Debug)]
struct Fatal(String);

impl Datapath {
    pub fn run(mut self) -> DatapathEnd {
        if let Err(Fatal(why)) = self.serve() {
            tracing::error!("virtio-net datapath stopped: {why}");
            self.stats.set_failure(why);
        }
        DatapathEnd {
            source: self.source,
            sink: self.sink,
        }
    }

    fn serve(&mut self) -> Result<(), Fatal> {
        self.set_notifications(false)?;
        let mut idle = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            if self.health.needs_reset() {
                // The driver broke the rules; nothing more is processed until it resets.
                self.sleep()?;
                continue;
            }
            let tx = self.process_tx()?;
            let (rx, rx_starved) = self.process_rx()?;
            if tx + rx > 0 {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < IDLE_POLLS_BEFORE_SLEEP {
                std::hint::spin_loop();
                continue;
            }
            idle = 0;
            // Ask for kicks, then look once more: the driver may have added buffers between
            // the last poll and the request.
            let tx_pending = self
                .tx
                .enable_notification(&*self.mem)
                .map_err(|e| Fatal(format!("tx queue: {e}")))?;
            let rx_pending = rx_starved
                && self
                    .rx
                    .enable_notification(&*self.mem)
                    .map_err(|e| Fatal(format!("rx queue: {e}")))?;
            if !tx_pending && !rx_pending {
                self.sleep()?;
            }
            self.set_notifications(false)?;
        }
        Ok(())
    }

    fn set_notifications(&mut self, enable: bool) -> Result<(), Fatal> {
        let mem = &*self.mem;
        for (name, q) in [("rx", &mut self.rx), ("tx", &mut self.tx)] {
            let r = if enable {
                q.enable_notification(mem).map(|_| ())
            } else {
                q.disable_notification(mem)
            };
            r.map_err(|e| Fatal(format!("{name} queue: {e}")))?;
        }
        Ok(())
    }

    /// Waits for a kick on either queue, at most [`SLEEP_MS`].
    fn sleep(&mut self) -> Result<(), Fatal> {
        let mut fds = [
            libc::pollfd {
                fd: self.rx_kick.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.tx_kick.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd structures for the whole call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, SLEEP_MS) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Fatal(format!("waiting for queue kicks: {e}")));
            }
        }
        // Consume the counts; the eventfds are non-blocking, so EAGAIN just means no kick.
        let _ = self.rx_kick.read();
        let _ = self.tx_kick.read();
        Ok(())
    }

    fn interrupt_if_needed(&mut self, queue: u16) -> Result<(), Fatal> {
        let mem = &*self.mem;
        let q = if queue == RX_QUEUE {
            &mut self.rx
        } else {
            &mut self.tx
        };
        let needed = q
            .needs_notification(mem)
            .map_err(|e| Fatal(format!("queue {queue}: {e}")))?;
        // virtio-queue does not look at VRING_AVAIL_F_NO_INTERRUPT; without EVENT_IDX that
        // flag is how a polling driver declines interrupts.
        let declined = !q.event_idx_enabled()
            && mem
                .load::<u16>(GuestAddress(q.avail_ring()), Ordering::Acquire)
                .map(|flags| u16::from_le(flags) & 1 != 0)
                .unwrap_or(false);
        if needed && !declined {
            self.stats.interrupts.fetch_add(1, Ordering::Relaxed);
            self.interrupt.queue(queue);
        }
        Ok(())
    }

    /// Called when a queue yields no chain: if that is because the driver published an
    /// available index more than a ring ahead, the device needs a reset (2.7.13.3: the
    /// driver must not); nothing more is served until then.
    fn check_avail_index(&mut self, queue: u16) -> Result<(), Fatal> {
        let q = if queue == RX_QUEUE {
            &self.rx
        } else {
            &self.tx
        };
        let idx = q
            .avail_idx(&*self.mem, Ordering::Acquire)
            .map_err(|e| Fatal(format!("queue {queue}: {e}")))?;
        let ahead = idx.0.wrapping_sub(q.next_avail());
        if ahead > q.size() {
            self.health.fail(&format!(
                "queue {queue}: available index {} is {ahead} entries ahead in a {}-entry ring",
                idx.0,
                q.size()
            ));
        }
        Ok(())
    }

    fn process_tx(&mut self) -> Result<usize, Fatal> {
        let mem = self.mem.clone();
        let mut done = 0;
        while done < BUDGET {
            let Some(chain) = self.tx.pop_descriptor_chain(&*mem) else {
                self.check_avail_index(TX_QUEUE)?;
                break;
            };
            let head = chain.head_index();
            match gather(&mut self.scratch, &mem, chain) {
                Ok(()) => {
                    let frame = &self.scratch[NET_HDR_LEN..];
                    if frame.len() > self.max_frame {
                        self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("tx: dropped a {}-byte frame", frame.len());
                    } else {
                        self.sink
                            .put(frame)
                            .map_err(|e| Fatal(format!("output: {e}")))?;
                        self.stats.tx_frames.fetch_add(1, Ordering::Relaxed);
                        self.stats
                            .tx_bytes
                            .fetch_add(frame.len() as u64, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    self.stats.tx_malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("tx chain {head}: {e:?}");
                }
            }
            // The used length of a tx chain is 0: the device wrote nothing (2.7.8).
            self.tx
                .add_used(&*mem, head, 0)
                .map_err(|e| Fatal(format!("tx used ring: {e}")))?;
            done += 1;
        }
        if done > 0 {
            self.interrupt_if_needed(TX_QUEUE)?;
        }
        Ok(done)
    }

    /// Returns the frames delivered and whether the driver ran out of rx buffers.
    fn process_rx(&mut self) -> Result<(usize, bool), Fatal> {
        let mem = self.mem.clone();
        let mut done = 0;
        let mut starved = false;
        while done < BUDGET {
            let frame = match self.source.peek() {
                Peek::Frame(f) => f,
                Peek::Idle => break,
                Peek::Ended => {
                    if !self.stats.input_drained.load(Ordering::Relaxed) {
                        // Release: every used-ring update above is visible before this.
                        self.stats.input_drained.store(true, Ordering::Release);
                    }
                    break;
                }
            };
            let Some(chain) = self.rx.pop_descriptor_chain(&*mem) else {
                self.check_avail_index(RX_QUEUE)?;
                starved = true;
                break;
            };
            let head = chain.head_index();
            let len = frame.len();
            match scatter(&mem, chain, frame) {
                Ok(written) => {
                    self.rx
                        .add_used(&*mem, head, written)
                        .map_err(|e| Fatal(format!("rx used ring: {e}")))?;
                    self.source.consume();
                    self.stats.source_frames.fetch_add(1, Ordering::Relaxed);
                    self.stats.rx_bytes.fetch_add(len as u64, Ordering::Relaxed);
                    self.stats.rx_delivered.fetch_add(1, Ordering::Release);
                    done += 1;
                }
                Err(ChainError::TooSmall { have, need }) => {
                    // Without mergeable buffers a frame must fit one chain: drop the frame,
                    // keep the buffer for the next one.
                    self.rx.go_to_previous_position();
                    self.source.consume();
                    self.stats.source_frames.fetch_add(1, Ordering::Relaxed);
                    self.stats.rx_dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("rx: {need}-byte frame does not fit a {have}-byte buffer");
                }
                Err(ChainError::Malformed(why)) => {
                    // Return the chain empty; the frame waits for a good buffer.
                    self.stats.rx_malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("rx chain {head}: {why}");
                    self.rx
                        .add_used(&*mem, head, 0)
                        .map_err(|e| Fatal(format!("rx used ring: {e}")))?;
                    done += 1;
                }
            }
        }
        if done > 0 {
            self.interrupt_if_needed(RX_QUEUE)?;
        }
        Ok((done, starved))
    }
}

/// Copies a tx chain (header and frame) into `buf`.
fn gather(
    buf: &mut Vec<u8>,
    mem: &Memory,
    chain: DescriptorChain<&Memory>,
) -> Result<(), ChainError> {
    buf.clear();
    let mut more = false;
    for desc in chain {
        more = desc.has_next();
        if desc.is_write_only() {
            return Err(ChainError::Malformed(
                "write-only descriptor in a tx chain".into(),
            ));
        }
        let len = desc.len() as usize;
        let start = buf.len();
        if start + len > MAX_TX_CHAIN {
            return Err(ChainError::Malformed(format!(
                "chain is longer than {MAX_TX_CHAIN} bytes"
            )));
        }
        buf.resize(start + len, 0);
        mem.read_slice(&mut buf[start..], desc.addr())
            .map_err(|e| {
                ChainError::Malformed(format!("buffer {:#x}+{len}: {e}", desc.addr().0))
            })?;
    }
    if more {
        return Err(ChainError::Malformed(CHAIN_CUT.into()));
    }
    if buf.len() < NET_HDR_LEN {
        return Err(ChainError::Malformed(format!(
            "{} bytes is shorter than the {NET_HDR_LEN}-byte header",
            buf.len()
        )));
    }
    Ok(())
}

/// Writes a virtio-net header and `frame` into an rx chain; returns the bytes written.
fn scatter(mem: &Memory, chain: DescriptorChain<&Memory>, frame: &[u8]) -> Result<u32, ChainError> {
    let mut hdr = [0u8; NET_HDR_LEN];
    // num_buffers: one buffer chain per frame without VIRTIO_NET_F_MRG_RXBUF.
    hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
    let need = NET_HDR_LEN + frame.len();

    let mut have = 0usize;
    let mut more = false;
    for desc in chain.clone() {
        more = desc.has_next();
        if !desc.is_write_only() {
            return Err(ChainError::Malformed(
                "device-readable descriptor in an rx chain".into(),
            ));
        }
        have += desc.len() as usize;
    }
    if more {
        return Err(ChainError::Malformed(CHAIN_CUT.into()));
    }
    if have < need {
        return Err(ChainError::TooSmall { have, need });
    }
    // Fill the buffers in order with the header, then the frame.
    let mut off = 0;
    for desc in chain {
        let mut addr = desc.addr();
        let mut room = desc.len() as usize;
        while room > 0 && off < need {
            let (src, at) = if off < NET_HDR_LEN {
                (&hdr[..], off)
            } else {
                (frame, off - NET_HDR_LEN)
            };
            let n = room.min(src.len() - at);
            mem.write_slice(&src[at..at + n], addr)
                .map_err(|e| ChainError::Malformed(format!("buffer {:#x}+{n}: {e}", addr.0)))?;
            off += n;
            room -= n;
            // Cannot wrap: the write just above covered addr..addr + n inside guest RAM.
            addr = GuestAddress(addr.0 + n as u64);
        }
        if off == need {
            break;
        }
    }
    Ok(need as u32)
}
