//! The hand-driven device: the PMD's transport and raw rings, set up by a [`Plan`], with
//! scratch memory for the buffers the abuses point at, and the waiting and judging of the
//! device's answers every abuse shares.

use crate::config::Config;
use crate::frames::Template;
use crate::hal::{Dma, Hal};
use crate::harness::Harness;
use crate::msix::NO_VECTOR;
use crate::net::{self, features, NET_HDR_LEN, NET_HDR_LEN_LEGACY};
use crate::pci::ConfigSpace;
use crate::sprintln;
use crate::transport::{status, AnyTransport, Kind, QueueAddrs, Transport};

use super::raw_ring::Ring;
use super::{scratch, Error, CHECKS, FAILURES_SHOWN, PORT_ID, RX, SPINS, TX};

/// How the device answered an abuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// It returned the chain (used, with the length the spec allows), dropping or
    /// refusing what was wrong with it.
    Returned,
    /// It set DEVICE_NEEDS_RESET.
    NeedsReset,
    /// An rx chain the device never looked at because the input was drained.
    Unserved,
    /// It ignored the accesses (status unchanged) and still serves the queues.
    Ignored,
    /// It was reset mid-transfer and came back.
    Recovered,
    /// Anything the spec does not allow, or no answer at all.
    Failed,
}

/// How a setup goes: which features, which queues where, which steps are skipped.
pub(super) struct Plan {
    pub(super) features: u64,
    pub(super) queues: usize,
    /// One queue's rings somewhere else.
    pub(super) place: Option<(usize, QueueAddrs)>,
    pub(super) features_ok: bool,
    /// A queue left disabled.
    pub(super) skip: Option<usize>,
}

/// The hostile driver: the transport and rings of the PMD, driven by hand.
pub(super) struct Dev<'a, H: Hal> {
    pub(super) hal: &'a H,
    pub(super) harness: Harness<'a, H>,
    pub(super) cfg_space: ConfigSpace<'a, H>,
    pub(super) t: AnyTransport<'a, H>,
    pub(super) offered: u64,
    pub(super) features: u64,
    pub(super) queues: usize,
    pub(super) rings: [Option<Ring>; 3],
    scratch: Dma,
    pub(super) ram_end: u64,
    /// The input is drained: rx abuses would meet no frame.
    input_done: bool,
    tx_seq: u64,
    template: Template,
    failures: u32,
    pub(super) round: u32,
}

impl<'a, H: Hal> Dev<'a, H> {
    pub(super) fn open(hal: &'a H, cfg: &Config, mac: [u8; 6]) -> Result<Self, Error> {
        let (bdf, _) = net::find_function(hal, PORT_ID).map_err(|_| Error::NoDevice)?;
        let cfg_space = ConfigSpace::new(hal, bdf);
        let mut t = AnyTransport::probe(hal, &cfg_space, cfg.transport)?;
        t.reset();
        let legacy = cfg.transport == Kind::Legacy;
        let offered = t.device_features();
        // Its rings are split rings written by hand, consumed entry by entry: never
        // packed, never in order; one queue pair with the control queue at 2, and the
        // plain header (no multiqueue, no RSS, no hash reports).
        let hand_made = features::RING_PACKED
            | features::IN_ORDER
            | features::MQ
            | features::RSS
            | features::HASH_REPORT;
        let mut f = offered & cfg.features & !hand_made;
        if legacy {
            f &= 0xffff_ffff;
        }
        if f & features::CTRL_VQ == 0 {
            f &= !features::NEEDS_CTRL_VQ;
        }
        let queues = if f & features::CTRL_VQ != 0 && t.num_queues() >= 3 {
            3
        } else {
            f &= !(features::CTRL_VQ | features::NEEDS_CTRL_VQ);
            2
        };
        let mut rings: [Option<Ring>; 3] = [None, None, None];
        for (q, slot) in rings.iter_mut().enumerate().take(queues) {
            let max = t.queue_max_size(q as u16);
            let asked = match q {
                RX => cfg.rxd,
                TX => cfg.txd,
                _ => max,
            };
            let size = t.set_queue_size(q as u16, asked.min(max));
            if size == 0 || !size.is_power_of_two() {
                return Err(Error::QueueSize {
                    queue: q as u16,
                    size,
                });
            }
            *slot = Some(Ring::alloc(hal, size).ok_or(Error::NoMemory)?);
        }
        let scratch = hal.dma_alloc(scratch::LEN, 64).ok_or(Error::NoMemory)?;
        let dev = Self {
            hal,
            harness: Harness::probe(hal),
            cfg_space,
            t,
            offered,
            features: f,
            queues,
            rings,
            scratch,
            ram_end: 0,
            input_done: false,
            tx_seq: 0,
            template: Template::new(64, mac),
            failures: 0,
            round: 0,
        };
        // SAFETY: the scratch block is ours; its bytes are defined before any use.
        unsafe { dev.scratch.vaddr.as_ptr().write_bytes(0, scratch::LEN) };
        Ok(dev)
    }

    pub(super) fn legacy(&self) -> bool {
        self.t.kind() == Kind::Legacy
    }

    pub(super) fn hdr_len(&self) -> usize {
        if self.features & (features::VERSION_1 | features::MRG_RXBUF) != 0 {
            NET_HDR_LEN
        } else {
            NET_HDR_LEN_LEGACY
        }
    }

    pub(super) fn ring(&mut self, q: usize) -> &mut Ring {
        self.rings[q]
            .as_mut()
            .expect("abuses use only the queues the device has")
    }

    pub(super) fn size(&self, q: usize) -> u16 {
        self.rings[q].as_ref().map_or(1, Ring::size)
    }

    /// The status of a device set up and running.
    pub(super) fn running(&self) -> u8 {
        let s = status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK;
        if self.legacy() {
            s
        } else {
            s | status::FEATURES_OK
        }
    }

    // --- scratch memory

    pub(super) fn at(&self, off: usize) -> u64 {
        self.scratch.paddr + off as u64
    }

    pub(super) fn put(&self, off: usize, bytes: &[u8]) {
        let n = bytes.len().min(scratch::LEN.saturating_sub(off));
        // SAFETY: [off, off + n) is inside the scratch block; the device reads it only
        // after the chain pointing at it is published.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.scratch.vaddr.as_ptr().add(off), n)
        };
    }

    pub(super) fn byte(&self, off: usize) -> u8 {
        debug_assert!(off < scratch::LEN);
        // SAFETY: inside the scratch block; the device finished writing it before it
        // returned the chain.
        unsafe { self.scratch.vaddr.as_ptr().add(off).read_volatile() }
    }

    /// Entry `k` of the indirect area.
    pub(super) fn ind(&self, k: usize, addr: u64, len: u32, flags: u16, next: u16) -> u64 {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        let off = scratch::IND + 16 * (k % scratch::IND_ENTRIES);
        self.put(off, &d);
        self.at(off)
    }

    /// A header and the next generated frame at TX_BUF: (header address, frame address,
    /// frame length).
    pub(super) fn frame(&mut self) -> (u64, u64, u32) {
        self.frame_at(scratch::TX_BUF)
    }

    /// As `frame`, at `off` in the scratch block (for several frames in flight).
    pub(super) fn frame_at(&mut self, off: usize) -> (u64, u64, u32) {
        let hdr = self.hdr_len();
        let mut f = [0u8; 64];
        self.template.fill(&mut f, self.tx_seq);
        self.tx_seq += 1;
        self.put(off, &[0; NET_HDR_LEN]);
        self.put(off + hdr, &f);
        (self.at(off), self.at(off + hdr), f.len() as u32)
    }

    // --- setting the device up

    /// Resets the device and sets it up by `p`; returns the status read after FEATURES_OK
    /// and after DRIVER_OK.
    pub(super) fn bring_up(&mut self, p: &Plan) -> Result<(u8, u8), Error> {
        self.t.reset();
        for r in self.rings.iter_mut().flatten() {
            r.clear();
        }
        self.t.add_status(status::ACKNOWLEDGE);
        self.t.add_status(status::DRIVER);
        self.t.set_driver_features(p.features);
        if !self.legacy() && p.features_ok {
            self.t.add_status(status::FEATURES_OK);
        }
        let after_features = self.t.status();
        for q in 0..p.queues {
            if p.skip == Some(q) {
                continue;
            }
            let ring = self.rings[q].as_ref().ok_or(Error::NoMemory)?;
            let (size, mut addrs) = (ring.size(), ring.addrs());
            if let Some((pq, a)) = p.place {
                if pq == q {
                    addrs = a;
                }
            }
            let got = self.t.set_queue_size(q as u16, size);
            if got != size {
                return Err(Error::QueueSize {
                    queue: q as u16,
                    size: got,
                });
            }
            self.t.setup_queue(q as u16, size, addrs, NO_VECTOR)?;
        }
        self.t.add_status(status::DRIVER_OK);
        Ok((after_features, self.t.status()))
    }

    pub(super) fn normal(&self) -> Plan {
        Plan {
            features: self.features,
            queues: self.queues,
            place: None,
            features_ok: true,
            skip: None,
        }
    }

    /// Resets the device and sets it up properly.
    pub(super) fn init(&mut self) -> Result<(), Error> {
        let (_, s) = self.bring_up(&self.normal())?;
        if s != self.running() {
            return Err(Error::Refused(s));
        }
        Ok(())
    }

    // --- waiting for answers

    /// Waits for the device to return the next chain of queue `q` (or to need a reset; for
    /// rx, or for the input to be drained).
    pub(super) fn wait(&mut self, q: usize) -> Result<(u32, u32), Outcome> {
        for _ in 0..CHECKS {
            for _ in 0..SPINS {
                if let Some(e) = self.ring(q).take_used() {
                    return Ok(e);
                }
                self.hal.relax();
            }
            if self.t.status() & status::DEVICE_NEEDS_RESET != 0 {
                return Err(Outcome::NeedsReset);
            }
            if q == RX && self.harness.input_drained() == Some(true) {
                // Drained after our chain was returned? The device publishes before it
                // says drained: one more look settles it.
                if let Some(e) = self.ring(q).take_used() {
                    return Ok(e);
                }
                self.input_done = true;
                return Err(Outcome::Unserved);
            }
        }
        Err(Outcome::Failed)
    }

    pub(super) fn fail(&mut self, what: &str, why: core::fmt::Arguments<'_>) -> Outcome {
        self.failures += 1;
        if self.failures <= FAILURES_SHOWN {
            sprintln!(self.hal, "Hostile: round {}: {what}: {why}", self.round);
        }
        Outcome::Failed
    }

    /// Publishes `head` on queue `q`, kicks, and expects the chain back with `len` (any
    /// length when `None`).
    pub(super) fn expect_returned(
        &mut self,
        what: &str,
        q: usize,
        head: u16,
        len: Option<u32>,
    ) -> Outcome {
        self.ring(q).offer(head);
        self.t.notify(q as u16);
        match self.wait(q) {
            Ok((id, got)) if id == u32::from(head) && len.is_none_or(|l| l == got) => {
                Outcome::Returned
            }
            Ok((id, got)) => self.fail(
                what,
                format_args!("used entry ({id}, {got}), expected head {head} length {len:?}"),
            ),
            Err(Outcome::NeedsReset) => self.fail(what, format_args!("DEVICE_NEEDS_RESET")),
            Err(Outcome::Unserved) => Outcome::Unserved,
            Err(_) => self.fail(what, format_args!("the chain never came back")),
        }
    }

    /// Publishes an avail index or a setup the device must refuse; expects
    /// DEVICE_NEEDS_RESET.
    pub(super) fn expect_needs_reset(&mut self, what: &str) -> Outcome {
        for _ in 0..CHECKS {
            let s = self.t.status();
            if s & status::DEVICE_NEEDS_RESET != 0 {
                return Outcome::NeedsReset;
            }
            for _ in 0..SPINS {
                self.hal.relax();
            }
        }
        self.fail(what, format_args!("DEVICE_NEEDS_RESET never set"))
    }

    /// Whether an rx abuse can still meet a frame.
    pub(super) fn rx_ok(&self) -> bool {
        self.harness.present() && !self.input_done
    }
}
