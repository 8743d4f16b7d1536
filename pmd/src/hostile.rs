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

use core::sync::atomic::{fence, AtomicU16, Ordering};

use alloc::vec::Vec;

use crate::hal::{Dma, Hal, Width};
use crate::harness::{event, exit, Harness};
use crate::mbuf::{Mbuf, MbufPool};
use crate::net::{self, features, Port, PortConfig, NET_HDR_LEN, NET_HDR_LEN_LEGACY};
use crate::pci::{self, ConfigSpace};
use crate::sprintln;
use crate::testpmd::txonly::Template;
use crate::testpmd::Config;
use crate::transport::{self, status, AnyTransport, Kind, QueueAddrs, Transport};
use crate::virtqueue::{ring_bytes, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};

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

/// xorshift64: the round generator. Deterministic for a seed, no_std, no allocation.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One split ring in the legacy layout (so either interface takes it), written raw.
struct Ring {
    dma: Dma,
    size: u16,
    used_off: usize,
    /// The avail index as far as this driver filled it.
    next_avail: u16,
    /// Used entries already taken.
    next_used: u16,
}

const fn align_up(x: u64, a: u64) -> u64 {
    (x + a - 1) & !(a - 1)
}

/// Where the used ring of a `size`-entry ring in the legacy layout starts.
fn used_off(size: u16) -> u64 {
    let n = u64::from(size);
    align_up(16 * n + 6 + 2 * n, PAGE)
}

/// The three parts of a `size`-entry ring at `base`, in the legacy layout.
fn layout(base: u64, size: u16) -> QueueAddrs {
    QueueAddrs {
        desc: base,
        avail: base.wrapping_add(16 * u64::from(size)),
        used: base.wrapping_add(used_off(size)),
    }
}

impl Ring {
    fn alloc<H: Hal>(hal: &H, size: u16) -> Option<Self> {
        let dma = hal.dma_alloc(ring_bytes(size), PAGE as usize)?;
        let mut r = Self {
            dma,
            size,
            used_off: used_off(size) as usize,
            next_avail: 0,
            next_used: 0,
        };
        r.clear();
        Some(r)
    }

    fn clear(&mut self) {
        // SAFETY: the block is `ring_bytes(size)` long and this driver's; the device does not
        // use it while the driver sets a queue up.
        unsafe {
            self.dma
                .vaddr
                .as_ptr()
                .write_bytes(0, ring_bytes(self.size))
        };
        self.next_avail = 0;
        self.next_used = 0;
    }

    fn addrs(&self) -> QueueAddrs {
        layout(self.dma.paddr, self.size)
    }

    fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        let at = 16 * usize::from(i % self.size);
        // SAFETY: entry `i % size` lies in the descriptor table at the start of the block.
        unsafe {
            self.dma
                .vaddr
                .as_ptr()
                .add(at)
                .cast::<[u8; 16]>()
                .write_volatile(d)
        };
    }

    fn u16_at(&self, off: usize) -> &AtomicU16 {
        debug_assert!(off + 2 <= ring_bytes(self.size) && off % 2 == 0);
        // SAFETY: callers pass even offsets inside the ring block (avail or used ring
        // fields); the memory is shared with the device, hence atomic access.
        unsafe { AtomicU16::from_ptr(self.dma.vaddr.as_ptr().add(off).cast()) }
    }

    /// Puts `head` in the next avail slot without telling the device.
    fn stage(&mut self, head: u16) {
        let n = usize::from(self.size);
        let slot = 16 * n + 4 + 2 * usize::from(self.next_avail % self.size);
        self.u16_at(slot).store(head.to_le(), Ordering::Relaxed);
        self.next_avail = self.next_avail.wrapping_add(1);
    }

    /// Publishes `idx` as the avail index.
    fn set_avail_idx(&self, idx: u16) {
        // Descriptors and slots are written before the index.
        fence(Ordering::Release);
        let n = usize::from(self.size);
        self.u16_at(16 * n + 2)
            .store(idx.to_le(), Ordering::Release);
    }

    /// Stages `head` and publishes it.
    fn offer(&mut self, head: u16) {
        self.stage(head);
        self.set_avail_idx(self.next_avail);
    }

    fn used_idx(&self) -> u16 {
        u16::from_le(self.u16_at(self.used_off + 2).load(Ordering::Acquire))
    }

    /// Takes the next used entry, if the device has published one.
    fn take_used(&mut self) -> Option<(u32, u32)> {
        if self.used_idx() == self.next_used {
            return None;
        }
        let off = self.used_off + 4 + 8 * usize::from(self.next_used % self.size);
        // SAFETY: the entry lies inside the used ring; the acquire load of the used index
        // orders this read after the device's write of the entry.
        let (id, len) = unsafe {
            let p = self.dma.vaddr.as_ptr().add(off).cast::<u32>();
            (p.read_volatile(), p.add(1).read_volatile())
        };
        self.next_used = self.next_used.wrapping_add(1);
        Some((u32::from_le(id), u32::from_le(len)))
    }
}

/// How the device answered an abuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Abuse {
    OutsideRam,
    StraddlesRamEnd,
    ChainLoop,
    ChainLongerThanQueue,
    ZeroLength,
    HugeLength,
    AvailJump,
    WriteOnlyTx,
    BadCtrl,
    OddRegisters,
    RingOutsideRam,
    ResetMidTransfer,
    BadStatus,
    HeadOutOfRange,
}

const ABUSES: [(Abuse, &str); 14] = [
    (Abuse::OutsideRam, "desc-outside-ram"),
    (Abuse::StraddlesRamEnd, "desc-straddles-ram-end"),
    (Abuse::ChainLoop, "chain-loop"),
    (Abuse::ChainLongerThanQueue, "chain-longer-than-queue"),
    (Abuse::ZeroLength, "zero-length"),
    (Abuse::HugeLength, "huge-length"),
    (Abuse::AvailJump, "avail-index-jump"),
    (Abuse::WriteOnlyTx, "write-only-on-tx"),
    (Abuse::BadCtrl, "bad-ctrl-command"),
    (Abuse::OddRegisters, "odd-register-access"),
    (Abuse::RingOutsideRam, "ring-outside-ram"),
    (Abuse::ResetMidTransfer, "reset-mid-transfer"),
    (Abuse::BadStatus, "bad-status-sequence"),
    (Abuse::HeadOutOfRange, "head-out-of-range"),
];

/// Per-abuse counts.
#[derive(Clone, Copy, Default)]
struct Tally {
    rounds: u32,
    returned: u32,
    needs_reset: u32,
    unserved: u32,
    ignored: u32,
    recovered: u32,
    failed: u32,
}

/// How a setup goes: which features, which queues where, which steps are skipped.
struct Plan {
    features: u64,
    queues: usize,
    /// One queue's rings somewhere else.
    place: Option<(usize, QueueAddrs)>,
    features_ok: bool,
    /// A queue left disabled.
    skip: Option<usize>,
}

/// The hostile driver: the transport and rings of the PMD, driven by hand.
struct Dev<'a, H: Hal> {
    hal: &'a H,
    harness: Harness<'a, H>,
    cfg_space: ConfigSpace<'a, H>,
    t: AnyTransport<'a, H>,
    offered: u64,
    features: u64,
    queues: usize,
    rings: [Option<Ring>; 3],
    scratch: Dma,
    ram_end: u64,
    /// The input is drained: rx abuses would meet no frame.
    input_done: bool,
    tx_seq: u64,
    template: Template,
    failures: u32,
    round: u32,
}

fn find<H: Hal>(hal: &H) -> Option<pci::Bdf> {
    pci::find_on_bus0(hal, |bdf, vendor, device| {
        (vendor == net::VIRTIO_VENDOR
            && (device == net::DEVICE_ID_MODERN || device == net::DEVICE_ID_TRANSITIONAL))
            .then_some(bdf)
    })
}

impl<'a, H: Hal> Dev<'a, H> {
    fn open(hal: &'a H, cfg: &Config, mac: [u8; 6]) -> Result<Self, Error> {
        let bdf = find(hal).ok_or(Error::NoDevice)?;
        let cfg_space = ConfigSpace::new(hal, bdf);
        let mut t = AnyTransport::probe(hal, &cfg_space, cfg.transport)?;
        t.reset();
        let legacy = cfg.transport == Kind::Legacy;
        let offered = t.device_features();
        let mut f = offered & cfg.features;
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

    fn legacy(&self) -> bool {
        self.t.kind() == Kind::Legacy
    }

    fn hdr_len(&self) -> usize {
        if self.features & (features::VERSION_1 | features::MRG_RXBUF) != 0 {
            NET_HDR_LEN
        } else {
            NET_HDR_LEN_LEGACY
        }
    }

    fn ring(&mut self, q: usize) -> &mut Ring {
        self.rings[q]
            .as_mut()
            .expect("abuses use only the queues the device has")
    }

    fn size(&self, q: usize) -> u16 {
        self.rings[q].as_ref().map_or(1, |r| r.size)
    }

    /// The status of a device set up and running.
    fn running(&self) -> u8 {
        let s = status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK;
        if self.legacy() {
            s
        } else {
            s | status::FEATURES_OK
        }
    }

    // --- scratch memory

    fn at(&self, off: usize) -> u64 {
        self.scratch.paddr + off as u64
    }

    fn put(&self, off: usize, bytes: &[u8]) {
        let n = bytes.len().min(scratch::LEN.saturating_sub(off));
        // SAFETY: [off, off + n) is inside the scratch block; the device reads it only
        // after the chain pointing at it is published.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.scratch.vaddr.as_ptr().add(off), n)
        };
    }

    fn byte(&self, off: usize) -> u8 {
        debug_assert!(off < scratch::LEN);
        // SAFETY: inside the scratch block; the device finished writing it before it
        // returned the chain.
        unsafe { self.scratch.vaddr.as_ptr().add(off).read_volatile() }
    }

    /// Entry `k` of the indirect area.
    fn ind(&self, k: usize, addr: u64, len: u32, flags: u16, next: u16) -> u64 {
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
    fn frame(&mut self) -> (u64, u64, u32) {
        self.frame_at(scratch::TX_BUF)
    }

    /// As `frame`, at `off` in the scratch block (for several frames in flight).
    fn frame_at(&mut self, off: usize) -> (u64, u64, u32) {
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
    fn bring_up(&mut self, p: &Plan) -> Result<(u8, u8), Error> {
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
            let (size, mut addrs) = (ring.size, ring.addrs());
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
            self.t.setup_queue(q as u16, size, addrs)?;
        }
        self.t.add_status(status::DRIVER_OK);
        Ok((after_features, self.t.status()))
    }

    fn normal(&self) -> Plan {
        Plan {
            features: self.features,
            queues: self.queues,
            place: None,
            features_ok: true,
            skip: None,
        }
    }

    /// Resets the device and sets it up properly.
    fn init(&mut self) -> Result<(), Error> {
        let (_, s) = self.bring_up(&self.normal())?;
        if s != self.running() {
            return Err(Error::Refused(s));
        }
        Ok(())
    }

    /// Whether the device takes a tx ring at `base`.
    fn ring_fits(&mut self, base: u64) -> Result<bool, Error> {
        let plan = Plan {
            features: if self.legacy() {
                0
            } else {
                features::VERSION_1
            },
            queues: 2,
            place: Some((TX, layout(base, self.size(TX)))),
            features_ok: true,
            skip: None,
        };
        let (_, s) = self.bring_up(&plan)?;
        Ok(s & status::DEVICE_NEEDS_RESET == 0)
    }

    /// Finds where RAM ends: the highest page the device takes a tx ring at. `low` must
    /// be a page above everything this driver uses (the device may write the used ring of
    /// a ring it takes). Returns (RAM end, placements tried, placements refused).
    ///
    /// Powers of two from 2 GiB down first, then a binary search: the placements tried
    /// depend only on where RAM ends (not on `low`, which differs between the guest and
    /// the in-process machine), so both machines log the same.
    fn probe_ram_end(&mut self, low: u64) -> Result<(u64, u32, u32), Error> {
        let low = align_up(low, PAGE);
        let mut hi = 1u64 << 32;
        let (mut tried, mut refused) = (0, 0);
        let mut x = hi / 2;
        let mut found = None;
        while x >= low {
            tried += 1;
            if self.ring_fits(x)? {
                found = Some(x);
                break;
            }
            refused += 1;
            hi = x;
            x /= 2;
        }
        let mut lo = match found {
            Some(x) => x,
            None => {
                tried += 1;
                if !self.ring_fits(low)? {
                    return Ok((low, tried, refused + 1));
                }
                low
            }
        };
        while hi - lo > PAGE {
            let mid = (lo / PAGE + (hi - lo) / PAGE / 2) * PAGE;
            tried += 1;
            if self.ring_fits(mid)? {
                lo = mid;
            } else {
                refused += 1;
                hi = mid;
            }
        }
        // The highest ring that fits ends its used ring on the last page of RAM, which
        // ends on a page boundary.
        let n = u64::from(self.size(TX));
        Ok((
            lo + used_off(self.size(TX)) + align_up(6 + 8 * n, PAGE),
            tried,
            refused,
        ))
    }

    // --- waiting for answers

    /// Waits for the device to return the next chain of queue `q` (or to need a reset; for
    /// rx, or for the input to be drained).
    fn wait(&mut self, q: usize) -> Result<(u32, u32), Outcome> {
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

    fn fail(&mut self, what: &str, why: core::fmt::Arguments<'_>) -> Outcome {
        self.failures += 1;
        if self.failures <= FAILURES_SHOWN {
            sprintln!(self.hal, "Hostile: round {}: {what}: {why}", self.round);
        }
        Outcome::Failed
    }

    /// Publishes `head` on queue `q`, kicks, and expects the chain back with `len` (any
    /// length when `None`).
    fn expect_returned(&mut self, what: &str, q: usize, head: u16, len: Option<u32>) -> Outcome {
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
    fn expect_needs_reset(&mut self, what: &str) -> Outcome {
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

    /// A control command: class and command, `data`, an ack byte; expects it answered
    /// VIRTIO_NET_ERR.
    fn ctrl_err(&mut self, what: &str, class: u8, cmd: u8, data: &[u8]) -> Outcome {
        self.ctrl_expect(what, class, cmd, data, 1)
    }

    fn ctrl_expect(&mut self, what: &str, class: u8, cmd: u8, data: &[u8], ack: u8) -> Outcome {
        self.put(scratch::CTRL_BUF, &[class, cmd]);
        self.put(scratch::CTRL_BUF + 2, data);
        self.put(scratch::CTRL_ACK, &[0xff]);
        let (b, ackp) = (self.at(scratch::CTRL_BUF), self.at(scratch::CTRL_ACK));
        let r = self.ring(CTRL);
        if data.is_empty() {
            r.desc(0, b, 2, DESC_F_NEXT, 1);
            r.desc(1, ackp, 1, DESC_F_WRITE, 0);
        } else {
            r.desc(0, b, 2, DESC_F_NEXT, 1);
            r.desc(1, b + 2, data.len() as u32, DESC_F_NEXT, 2);
            r.desc(2, ackp, 1, DESC_F_WRITE, 0);
        }
        let o = self.expect_returned(what, CTRL, 0, Some(1));
        let got = self.byte(scratch::CTRL_ACK);
        if o == Outcome::Returned && got != ack {
            return self.fail(what, format_args!("ack byte {got:#x}, expected {ack}"));
        }
        o
    }

    /// Whether an rx abuse can still meet a frame.
    fn rx_ok(&self) -> bool {
        self.harness.present() && !self.input_done
    }

    // --- the abuses

    fn outside_ram(&mut self, v: u64) -> Outcome {
        let what = "desc-outside-ram";
        let far = self.ram_end + PAGE * (1 + v % 16);
        match v % 6 {
            1 => {
                let (h, _, _) = self.frame();
                let r = self.ring(TX);
                r.desc(0, h, 12, DESC_F_NEXT, 1);
                r.desc(1, (1 << 40) + far, 64, 0, 0);
                self.expect_returned(what, TX, 0, Some(0))
            }
            2 => {
                self.ring(TX).desc(0, u64::MAX - 31, 76, 0, 0);
                self.expect_returned(what, TX, 0, Some(0))
            }
            3 if self.rx_ok() => {
                self.ring(RX).desc(0, far, 2048, DESC_F_WRITE, 0);
                self.expect_returned(what, RX, 0, Some(0))
            }
            4 if self.queues == 3 => {
                // The command's header outside RAM: unreadable, answered with nothing.
                let ack = self.at(scratch::CTRL_ACK);
                let r = self.ring(CTRL);
                r.desc(0, far, 2, DESC_F_NEXT, 1);
                r.desc(1, ack, 1, DESC_F_WRITE, 0);
                self.expect_returned(what, CTRL, 0, Some(0))
            }
            5 if self.queues == 3 => {
                // The ack byte outside RAM: the device cannot answer, so must not act.
                self.put(scratch::CTRL_BUF, &[0, 0, 1]);
                let b = self.at(scratch::CTRL_BUF);
                let r = self.ring(CTRL);
                r.desc(0, b, 3, DESC_F_NEXT, 1);
                r.desc(1, far, 1, DESC_F_WRITE, 0);
                self.expect_returned(what, CTRL, 0, Some(0))
            }
            _ => {
                self.ring(TX).desc(0, far, 76, 0, 0);
                self.expect_returned(what, TX, 0, Some(0))
            }
        }
    }

    fn straddles_ram_end(&mut self, v: u64) -> Outcome {
        let what = "desc-straddles-ram-end";
        let end = self.ram_end;
        match v % 4 {
            1 => {
                // An indirect table whose second entry is past the end.
                self.ring(TX).desc(0, end - 16, 32, DESC_F_INDIRECT, 0);
                self.expect_returned(what, TX, 0, Some(0))
            }
            2 if self.rx_ok() => {
                self.ring(RX).desc(0, end - 1024, 2048, DESC_F_WRITE, 0);
                self.expect_returned(what, RX, 0, Some(0))
            }
            3 if self.queues == 3 => {
                let ack = self.at(scratch::CTRL_ACK);
                let r = self.ring(CTRL);
                r.desc(0, end - 1, 2, DESC_F_NEXT, 1);
                r.desc(1, ack, 1, DESC_F_WRITE, 0);
                self.expect_returned(what, CTRL, 0, Some(0))
            }
            _ => {
                self.ring(TX).desc(0, end - (1 + v % 40), 76, 0, 0);
                self.expect_returned(what, TX, 0, Some(0))
            }
        }
    }

    fn chain_loop(&mut self, v: u64) -> Outcome {
        let what = "chain-loop";
        let (h, _, _) = self.frame();
        match v % 5 {
            1 => {
                let r = self.ring(TX);
                r.desc(0, h, 40, DESC_F_NEXT, 1);
                r.desc(1, h, 36, DESC_F_NEXT, 0);
                self.expect_returned(what, TX, 0, Some(0))
            }
            2 if self.rx_ok() => {
                let b = self.at(scratch::RX_BUF);
                self.ring(RX)
                    .desc(0, b, 2048, DESC_F_WRITE | DESC_F_NEXT, 0);
                self.expect_returned(what, RX, 0, Some(0))
            }
            3 if self.queues == 3 => {
                let (b, ack) = (self.at(scratch::CTRL_BUF), self.at(scratch::CTRL_ACK));
                self.put(scratch::CTRL_BUF, &[0, 0]);
                let r = self.ring(CTRL);
                r.desc(0, b, 2, DESC_F_NEXT, 1);
                r.desc(1, ack, 1, DESC_F_WRITE | DESC_F_NEXT, 0);
                self.expect_returned(what, CTRL, 0, Some(0))
            }
            4 => {
                let t0 = self.ind(0, h, 40, DESC_F_NEXT, 1);
                self.ind(1, h, 36, DESC_F_NEXT, 0);
                self.ring(TX).desc(0, t0, 32, DESC_F_INDIRECT, 0);
                self.expect_returned(what, TX, 0, Some(0))
            }
            _ => {
                self.ring(TX).desc(0, h, 76, DESC_F_NEXT, 0);
                self.expect_returned(what, TX, 0, Some(0))
            }
        }
    }

    fn chain_longer_than_queue(&mut self, v: u64) -> Outcome {
        let what = "chain-longer-than-queue";
        let (h, f, _) = self.frame();
        let size = self.size(TX);
        if v % 2 == 0 {
            // Through every descriptor and on round again: cut after a ring's worth.
            let r = self.ring(TX);
            for i in 0..size {
                r.desc(i, h, 4, DESC_F_NEXT, (i + 1) % size);
            }
            self.expect_returned(what, TX, 0, Some(0))
        } else {
            // An indirect table longer than the ring: a chain the driver must not make,
            // which this device carries anyway (as a frame of one-byte pieces).
            let entries = (usize::from(size) + 1 + (v / 2 % 64) as usize).min(scratch::IND_ENTRIES);
            let hdr = self.hdr_len() as u32;
            let t0 = self.ind(0, h, hdr, DESC_F_NEXT, 1);
            for k in 1..entries {
                let last = k + 1 == entries;
                let flags = if last { 0 } else { DESC_F_NEXT };
                self.ind(k, f + ((k - 1) % 64) as u64, 1, flags, (k + 1) as u16);
            }
            self.ring(TX)
                .desc(0, t0, 16 * entries as u32, DESC_F_INDIRECT, 0);
            self.expect_returned(what, TX, 0, Some(0))
        }
    }

    fn zero_length(&mut self, v: u64) -> Outcome {
        let what = "zero-length";
        let (h, f, len) = self.frame();
        let hdr = self.hdr_len() as u32;
        match v % 6 {
            1 => {
                self.ring(TX).desc(0, h, 0, 0, 0);
                self.expect_returned(what, TX, 0, Some(0))
            }
            2 => {
                let t = self.at(scratch::IND);
                self.ring(TX).desc(0, t, 0, DESC_F_INDIRECT, 0);
                self.expect_returned(what, TX, 0, Some(0))
            }
            3 if self.rx_ok() => {
                let b = self.at(scratch::RX_BUF);
                self.ring(RX).desc(0, b, 0, DESC_F_WRITE, 0);
                self.expect_returned(what, RX, 0, Some(0))
            }
            4 if self.rx_ok() => {
                // An empty buffer first, then room: a frame is delivered.
                let b = self.at(scratch::RX_BUF);
                let r = self.ring(RX);
                r.desc(0, b, 0, DESC_F_WRITE | DESC_F_NEXT, 1);
                r.desc(1, b, scratch::RX_LEN as u32, DESC_F_WRITE, 0);
                self.expect_returned(what, RX, 0, None)
            }
            5 if self.queues == 3 => {
                // The only writable descriptor is empty: no room for the ack.
                let (b, ack) = (self.at(scratch::CTRL_BUF), self.at(scratch::CTRL_ACK));
                self.put(scratch::CTRL_BUF, &[0, 0, 1]);
                let r = self.ring(CTRL);
                r.desc(0, b, 3, DESC_F_NEXT, 1);
                r.desc(1, ack, 0, DESC_F_WRITE, 0);
                self.expect_returned(what, CTRL, 0, Some(0))
            }
            _ => {
                // Header, an empty piece, the frame: a good frame, sent.
                let r = self.ring(TX);
                r.desc(0, h, hdr, DESC_F_NEXT, 1);
                r.desc(1, f, 0, DESC_F_NEXT, 2);
                r.desc(2, f, len, 0, 0);
                self.expect_returned(what, TX, 0, Some(0))
            }
        }
    }

    fn huge_length(&mut self, v: u64) -> Outcome {
        let what = "huge-length";
        let (h, f, _) = self.frame();
        let hdr = self.hdr_len() as u32;
        match v % 5 {
            1 => {
                let r = self.ring(TX);
                r.desc(0, h, hdr, DESC_F_NEXT, 1);
                r.desc(1, f, 65_537, 0, 0);
                self.expect_returned(what, TX, 0, Some(0))
            }
            2 => {
                // Lengths that overflow a u32 between them.
                let r = self.ring(TX);
                r.desc(0, h, 0xffff_fff0, DESC_F_NEXT, 1);
                r.desc(1, f, 0x20, 0, 0);
                self.expect_returned(what, TX, 0, Some(0))
            }
            3 if self.rx_ok() => {
                let b = self.at(scratch::RX_BUF);
                self.ring(RX).desc(0, b, u32::MAX, DESC_F_WRITE, 0);
                self.expect_returned(what, RX, 0, Some(0))
            }
            4 if self.queues == 3 => {
                // A command longer than any the device takes.
                let (b, ack) = (self.at(scratch::CTRL_BUF), self.at(scratch::CTRL_ACK));
                self.put(scratch::CTRL_BUF, &[0, 0]);
                let r = self.ring(CTRL);
                r.desc(0, b, 9000, DESC_F_NEXT, 1);
                r.desc(1, ack, 1, DESC_F_WRITE, 0);
                self.expect_returned(what, CTRL, 0, Some(0))
            }
            _ => {
                self.ring(TX).desc(0, h, u32::MAX, 0, 0);
                self.expect_returned(what, TX, 0, Some(0))
            }
        }
    }

    fn avail_jump(&mut self, v: u64) -> Outcome {
        let what = "avail-index-jump";
        let q = if v % 4 == 3 && self.queues == 3 {
            CTRL
        } else {
            TX
        };
        let size = self.size(q);
        let r = self.ring(q);
        let idx = match v % 4 {
            1 => r.next_avail.wrapping_sub(1),
            2 => r.next_avail.wrapping_add(0x8000),
            _ => r
                .next_avail
                .wrapping_add(size)
                .wrapping_add(1 + (v / 4 % 64) as u16),
        };
        r.set_avail_idx(idx);
        self.t.notify(q as u16);
        self.expect_needs_reset(what)
    }

    fn write_only_on_tx(&mut self, v: u64) -> Outcome {
        let what = "write-only-on-tx";
        let (h, f, len) = self.frame();
        let hdr = self.hdr_len() as u32;
        match v % 4 {
            1 => {
                let r = self.ring(TX);
                r.desc(0, h, hdr, DESC_F_NEXT, 1);
                r.desc(1, f, len, DESC_F_WRITE, 0);
                self.expect_returned(what, TX, 0, Some(0))
            }
            2 if self.rx_ok() => {
                // The other way round: a device-readable buffer on rx.
                let b = self.at(scratch::RX_BUF);
                self.ring(RX).desc(0, b, 2048, 0, 0);
                self.expect_returned(what, RX, 0, Some(0))
            }
            3 if self.queues == 3 => {
                // A command whose header is writable: nothing to read, so the device
                // answers ERR in the first writable byte (the header's).
                self.put(scratch::CTRL_BUF, &[0, 0]);
                let (b, ack) = (self.at(scratch::CTRL_BUF), self.at(scratch::CTRL_ACK));
                let r = self.ring(CTRL);
                r.desc(0, b, 2, DESC_F_WRITE | DESC_F_NEXT, 1);
                r.desc(1, ack, 1, DESC_F_WRITE, 0);
                let o = self.expect_returned(what, CTRL, 0, Some(1));
                if o == Outcome::Returned && self.byte(scratch::CTRL_BUF) != 1 {
                    return self.fail(what, format_args!("no ERR in the first writable byte"));
                }
                o
            }
            _ => {
                self.ring(TX).desc(0, h, hdr + len, DESC_F_WRITE, 0);
                self.expect_returned(what, TX, 0, Some(0))
            }
        }
    }

    fn bad_ctrl(&mut self, v: u64) -> Outcome {
        let what = "bad-ctrl-command";
        let r = (v / 16) as u8;
        match v % 10 {
            0 => self.ctrl_err(what, 4 + r % 200, r, &[r]),
            1 => self.ctrl_err(what, 0, 2 + r % 100, &[1]),
            // Promiscuous mode takes one byte of data: none, or several.
            2 => self.ctrl_err(what, 0, 0, &[1, 1, 1][..usize::from(r % 2) * 3]),
            // A MAC table claiming 2^32 - 1 entries.
            3 => self.ctrl_err(what, 1, 0, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
            // A MAC address one byte short.
            4 => self.ctrl_err(what, 1, 1, &[2, 0, 0, 0, 1]),
            5 => {
                let vid = 4096 + u16::from(r);
                self.ctrl_err(what, 2, 0, &vid.to_le_bytes())
            }
            6 => self.ctrl_err(what, 3, 0, &[]),
            7 => {
                // Only the class byte: shorter than class and command.
                self.put(scratch::CTRL_BUF, &[0]);
                self.put(scratch::CTRL_ACK, &[0xff]);
                let (b, ack) = (self.at(scratch::CTRL_BUF), self.at(scratch::CTRL_ACK));
                let ring = self.ring(CTRL);
                ring.desc(0, b, 1, DESC_F_NEXT, 1);
                ring.desc(1, ack, 1, DESC_F_WRITE, 0);
                let o = self.expect_returned(what, CTRL, 0, Some(1));
                if o == Outcome::Returned && self.byte(scratch::CTRL_ACK) != 1 {
                    return self.fail(what, format_args!("a one-byte command was not refused"));
                }
                o
            }
            8 => {
                // No writable byte at all: nowhere to answer.
                self.put(scratch::CTRL_BUF, &[0, 0, 1]);
                let b = self.at(scratch::CTRL_BUF);
                self.ring(CTRL).desc(0, b, 3, 0, 0);
                self.expect_returned(what, CTRL, 0, Some(0))
            }
            _ => {
                // Data after the ack.
                self.put(scratch::CTRL_BUF, &[0, 0, 1]);
                self.put(scratch::CTRL_ACK, &[0xff]);
                let (b, ack) = (self.at(scratch::CTRL_BUF), self.at(scratch::CTRL_ACK));
                let ring = self.ring(CTRL);
                ring.desc(0, b, 2, DESC_F_NEXT, 1);
                ring.desc(1, ack, 1, DESC_F_WRITE | DESC_F_NEXT, 2);
                ring.desc(2, b + 2, 1, 0, 0);
                let o = self.expect_returned(what, CTRL, 0, Some(0));
                if o == Outcome::Returned && self.byte(scratch::CTRL_ACK) != 0xff {
                    return self.fail(what, format_args!("a malformed chain was answered"));
                }
                o
            }
        }
    }

    /// Accesses registers at offsets and widths the spec does not define (never the
    /// status register), then checks the status is unchanged and the device still
    /// serves a queue.
    fn odd_registers(&mut self, rng: &mut Rng) -> Outcome {
        let what = "odd-register-access";
        const WIDTHS: [Width; 4] = [Width::U8, Width::U16, Width::U32, Width::U64];
        let count = 1 + rng.below(8);
        for _ in 0..count {
            let r = rng.next();
            let write = r & 1 != 0;
            let value = rng.next();
            match (&self.t, r >> 1 & 3) {
                (AnyTransport::Modern(m), 0 | 1) => {
                    // The common configuration, around and between its fields.
                    let off = (r >> 8) % 0x40;
                    let width = WIDTHS[(r >> 16) as usize % 4];
                    if write && off == 0x14 && width == Width::U8 {
                        continue;
                    }
                    let at = m.common_addr() + off;
                    if write {
                        self.hal.mmio_write(at, width, value);
                    } else {
                        let _ = self.hal.mmio_read(at, width);
                    }
                }
                (AnyTransport::Modern(m), 2) => {
                    // The device configuration (read-only) and the notification area.
                    let base = if r >> 20 & 1 == 0 {
                        m.device_addr()
                    } else {
                        m.notify_addr()
                    };
                    let at = base + (r >> 8) % 0x20;
                    let width = WIDTHS[(r >> 16) as usize % 4];
                    if write {
                        self.hal.mmio_write(at, width, value);
                    } else {
                        let _ = self.hal.mmio_read(at, width);
                    }
                }
                (AnyTransport::Legacy(l), 0..=2) => {
                    let off = ((r >> 8) % 0x20) as u16;
                    let width = WIDTHS[(r >> 16) as usize % 3];
                    if write && off == 0x12 && width == Width::U8 {
                        continue;
                    }
                    let port = l.io_base() + off;
                    if write {
                        self.hal.pio_write(port, width, value as u32);
                    } else {
                        let _ = self.hal.pio_read(port, width);
                    }
                }
                _ => {
                    // PCI configuration space, read-only fields only: IDs, class,
                    // subsystem, capability pointer, and beyond the capabilities.
                    const RO: [u16; 8] = [0x00, 0x02, 0x08, 0x0a, 0x2c, 0x2e, 0x34, 0xfc];
                    let off = RO[(r >> 8) as usize % RO.len()];
                    if write {
                        self.cfg_space.write16(off, value as u16);
                    } else {
                        let _ = self.cfg_space.read16(off);
                    }
                }
            }
        }
        let s = self.t.status();
        if s != self.running() {
            return self.fail(what, format_args!("status {s:#x} afterwards"));
        }
        let id = self.cfg_space.read32(pci::VENDOR_ID);
        if id as u16 != net::VIRTIO_VENDOR {
            return self.fail(what, format_args!("PCI ID {id:#x} afterwards"));
        }
        // Still serving: a command (or, without a control queue, a frame) goes through.
        let o = if self.queues == 3 && self.features & features::CTRL_RX != 0 {
            self.ctrl_expect(what, 0, 0, &[1], 0)
        } else {
            let (h, _, len) = self.frame();
            let hdr = self.hdr_len() as u32;
            self.ring(TX).desc(0, h, hdr + len, 0, 0);
            self.expect_returned(what, TX, 0, Some(0))
        };
        if o == Outcome::Returned {
            Outcome::Ignored
        } else {
            o
        }
    }

    fn ring_outside_ram(&mut self, v: u64) -> Outcome {
        let what = "ring-outside-ram";
        let legacy = self.legacy();
        let end = self.ram_end;
        let (q, addrs) = match v % 5 {
            1 => {
                // The used ring starts where RAM ends.
                let base = end - used_off(self.size(RX));
                (RX, layout(base, self.size(RX)))
            }
            2 if !legacy => {
                let mut a = self.rings[TX]
                    .as_ref()
                    .map(Ring::addrs)
                    .unwrap_or(layout(0, 1));
                a.desc += 8;
                (TX, a)
            }
            3 if !legacy => {
                let mut a = self.rings[RX]
                    .as_ref()
                    .map(Ring::addrs)
                    .unwrap_or(layout(0, 1));
                a.used = end - 8;
                (RX, a)
            }
            4 => (TX, layout(1 << 40, self.size(TX))),
            _ => (TX, layout(end + PAGE * (1 + v / 5 % 16), self.size(TX))),
        };
        let plan = Plan {
            place: Some((q, addrs)),
            ..self.normal()
        };
        match self.bring_up(&plan) {
            Ok((_, s)) if s & status::DEVICE_NEEDS_RESET != 0 => Outcome::NeedsReset,
            Ok((_, s)) => self.fail(what, format_args!("status {s:#x}: the rings were taken")),
            Err(e) => self.fail(what, format_args!("{e}")),
        }
    }

    fn reset_mid_transfer(&mut self, v: u64) -> Outcome {
        let what = "reset-mid-transfer";
        let hdr = self.hdr_len() as u32;
        // Frames sent and returned, their used entries not all taken.
        let n = 1 + (v % 2) as u16;
        for i in 0..n {
            let (h, _, len) = self.frame_at(scratch::TX_BUF + 128 * (1 + usize::from(i)));
            let r = self.ring(TX);
            r.desc(i, h, hdr + len, 0, 0);
            r.stage(i);
        }
        let r = self.ring(TX);
        r.set_avail_idx(r.next_avail);
        self.t.notify(TX as u16);
        for _ in 0..n {
            if let Err(o) = self.wait(TX) {
                return self.fail(what, format_args!("a good frame never came back ({o:?})"));
            }
        }
        // With mergeable buffers: buffers too small for any frame, which the device takes
        // and puts back while a frame waits for more.
        if self.features & features::MRG_RXBUF != 0 && self.rx_ok() {
            let b = self.at(scratch::RX_BUF);
            let r = self.ring(RX);
            for i in 0..4 {
                r.desc(i, b + 4 * u64::from(i), 4, DESC_F_WRITE, 0);
                r.stage(i);
            }
            r.set_avail_idx(r.next_avail);
            self.t.notify(RX as u16);
        }
        // A chain written but not yet published.
        let (h, _, len) = self.frame();
        let r = self.ring(TX);
        r.desc(n, h, hdr + len, 0, 0);
        r.stage(n);
        match self.init() {
            Ok(()) => Outcome::Recovered,
            Err(e) => self.fail(what, format_args!("after the reset: {e}")),
        }
    }

    fn bad_status(&mut self, v: u64) -> Outcome {
        let what = "bad-status-sequence";
        let legacy = self.legacy();
        let mut plan = self.normal();
        let mut unoffered = false;
        match v % 3 {
            0 => {
                // A feature the device did not offer.
                let start = (v / 3 % 64) as u32;
                let limit = if legacy { 32 } else { 64 };
                let bit = (0..limit)
                    .map(|k| 1u64 << ((start + k) % limit))
                    .find(|b| self.offered & b == 0);
                match bit {
                    Some(b) => {
                        plan.features |= b;
                        unoffered = true;
                    }
                    None => plan.features_ok = false,
                }
            }
            1 if !legacy => plan.features_ok = false,
            _ => plan.skip = Some(RX),
        }
        match self.bring_up(&plan) {
            Ok((f, _)) if !legacy && unoffered && f & status::FEATURES_OK != 0 => self.fail(
                what,
                format_args!("FEATURES_OK stuck for {:#x}", plan.features),
            ),
            Ok((_, s)) if s & status::DEVICE_NEEDS_RESET != 0 => Outcome::NeedsReset,
            Ok((_, s)) => self.fail(what, format_args!("status {s:#x}: DRIVER_OK was taken")),
            Err(e) => self.fail(what, format_args!("{e}")),
        }
    }

    fn head_out_of_range(&mut self, v: u64) -> Outcome {
        let what = "head-out-of-range";
        let (q, len) = match v % 3 {
            1 if self.rx_ok() => (RX, 0),
            2 if self.queues == 3 => (CTRL, 0),
            _ => (TX, 0),
        };
        let size = self.size(q);
        let head = if v / 3 % 2 == 0 {
            u16::MAX
        } else {
            size.saturating_add((v / 6 % 100) as u16)
        };
        self.expect_returned(what, q, head, Some(len))
    }

    /// One round: an abuse of kind `k`.
    fn round(&mut self, k: Abuse, rng: &mut Rng) -> Outcome {
        let v = rng.next();
        match k {
            Abuse::OutsideRam => self.outside_ram(v),
            Abuse::StraddlesRamEnd => self.straddles_ram_end(v),
            Abuse::ChainLoop => self.chain_loop(v),
            Abuse::ChainLongerThanQueue => self.chain_longer_than_queue(v),
            Abuse::ZeroLength => self.zero_length(v),
            Abuse::HugeLength => self.huge_length(v),
            Abuse::AvailJump => self.avail_jump(v),
            Abuse::WriteOnlyTx => self.write_only_on_tx(v),
            Abuse::BadCtrl => self.bad_ctrl(v),
            Abuse::OddRegisters => self.odd_registers(rng),
            Abuse::RingOutsideRam => self.ring_outside_ram(v),
            Abuse::ResetMidTransfer => self.reset_mid_transfer(v),
            Abuse::BadStatus => self.bad_status(v),
            Abuse::HeadOutOfRange => self.head_out_of_range(v),
        }
    }
}

/// What the final, normal traffic did.
struct Traffic {
    rx: u64,
    tx: u64,
    generated: u64,
    stats: net::Stats,
}

/// Transmits all of `pkts`, waiting for ring space.
fn send_all<'a, H: Hal>(hal: &H, port: &mut Port<'a, H>, pkts: &mut Vec<Mbuf<'a>>) -> u64 {
    let mut sent = 0;
    while !pkts.is_empty() {
        let n = port.tx_burst(pkts);
        if n == 0 {
            hal.relax();
        }
        sent += n as u64;
    }
    sent
}

/// Opens the port normally and forwards what is left of the input, then sends generated
/// frames.
fn traffic<H: Hal>(
    hal: &H,
    pool: &MbufPool,
    cfg: &Config,
    harness: &Harness<'_, H>,
) -> Result<Traffic, net::Error> {
    let port_cfg = PortConfig {
        transport: cfg.transport,
        rx_ring: cfg.rxd,
        tx_ring: cfg.txd,
        features: cfg.features,
        ..PortConfig::default()
    };
    let mut port = Port::open(hal, pool, &port_cfg)?;
    let burst = usize::from(cfg.burst);
    let mut pkts: Vec<Mbuf<'_>> = Vec::with_capacity(burst);
    let (mut rx, mut tx) = (0u64, 0u64);
    if harness.present() {
        // As testpmd's io mode: until the input is drained and one more poll finds nothing.
        let mut drained = false;
        let mut idle = 0u32;
        loop {
            let n = port.rx_burst(&mut pkts, burst);
            if n == 0 {
                if drained {
                    break;
                }
                idle += 1;
                hal.relax();
                if idle == 256 {
                    idle = 0;
                    drained = harness.input_drained() == Some(true);
                }
                continue;
            }
            idle = 0;
            rx += n as u64;
            tx += send_all(hal, &mut port, &mut pkts);
        }
    }
    let generated = if cfg.pkts > 0 { cfg.pkts } else { GENERATED };
    let template = Template::new(64, port.mac());
    for seq in 0..generated {
        let Some(mut m) = pool.alloc() else {
            port.tx_cleanup();
            hal.relax();
            continue;
        };
        if let Some(frame) = m.append(template.len()) {
            template.fill(frame, seq);
        }
        pkts.push(m);
        if pkts.len() == burst {
            tx += send_all(hal, &mut port, &mut pkts);
        }
    }
    tx += send_all(hal, &mut port, &mut pkts);
    while port.tx_in_flight() != 0 {
        port.tx_cleanup();
        hal.relax();
    }
    Ok(Traffic {
        rx,
        tx,
        generated,
        stats: port.stats,
    })
}

/// Runs the hostile application; returns its exit code.
pub fn run<H: Hal>(hal: &H, cfg: &Config) -> u32 {
    sprintln!(
        hal,
        "vlab-pmd: mode=hostile seed={} rounds={} rxd={} txd={} transport={}",
        cfg.seed,
        cfg.rounds,
        cfg.rxd,
        cfg.txd,
        cfg.transport.name()
    );
    let Some(pool) = crate::testpmd::mbuf_pool(hal, cfg) else {
        return exit::DEVICE_ERROR;
    };
    // The port, opened the PMD's way first: the device works before it is abused.
    let port_cfg = PortConfig {
        transport: cfg.transport,
        rx_ring: cfg.rxd,
        tx_ring: cfg.txd,
        features: cfg.features,
        ..PortConfig::default()
    };
    let mac = match Port::open(hal, &pool, &port_cfg) {
        Ok(port) => {
            sprintln!(
                hal,
                "Port 0: opened normally: {} transport, rxd={} txd={}, features {:#x}",
                port.transport().name(),
                port.rx_ring_size(),
                port.tx_ring_size(),
                port.features()
            );
            port.mac()
        }
        Err(e) => {
            sprintln!(hal, "vlab-pmd: port 0: {e}");
            return exit::DEVICE_ERROR;
        }
    };
    let mut dev = match Dev::open(hal, cfg, mac) {
        Ok(d) => d,
        Err(e) => {
            sprintln!(hal, "vlab-pmd: hostile driver: {e}");
            return exit::DEVICE_ERROR;
        }
    };
    // Everything this driver uses lies below this page; the RAM probe places rings above.
    let low = match hal.dma_alloc(PAGE as usize, PAGE as usize) {
        Some(d) => d.paddr + PAGE,
        None => {
            sprintln!(hal, "vlab-pmd: hostile driver: {}", Error::NoMemory);
            return exit::DEVICE_ERROR;
        }
    };
    match dev.probe_ram_end(low) {
        Ok((end, tried, refused)) => {
            dev.ram_end = end;
            sprintln!(
                hal,
                "Hostile: RAM ends at {end:#x} (found by {tried} tx ring placements, {refused} refused with DEVICE_NEEDS_RESET)"
            );
        }
        Err(e) => {
            sprintln!(hal, "vlab-pmd: FAIL: probing the end of RAM: {e}");
            return exit::CHECK_FAILED;
        }
    }
    if let Err(e) = dev.init() {
        sprintln!(hal, "vlab-pmd: FAIL: setting the device up: {e}");
        return exit::CHECK_FAILED;
    }
    dev.harness.event(event::LINK_UP);
    // The input flows from here: rx abuses meet its frames, the final traffic the rest.
    dev.harness.event(event::FWD_START);

    let mut rng = Rng::new(cfg.seed);
    let mut tally = [Tally::default(); ABUSES.len()];
    let mut resets = 0u32;
    for round in 0..cfg.rounds {
        dev.round = round;
        let mut k = rng.below(ABUSES.len() as u64) as usize;
        // Control-queue abuses need a control queue: the next kind instead.
        if ABUSES[k].0 == Abuse::BadCtrl && dev.queues < 3 {
            k = (k + 1) % ABUSES.len();
        }
        let o = dev.round(ABUSES[k].0, &mut rng);
        let t = &mut tally[k];
        t.rounds += 1;
        match o {
            Outcome::Returned => t.returned += 1,
            Outcome::NeedsReset => t.needs_reset += 1,
            Outcome::Unserved => t.unserved += 1,
            Outcome::Ignored => t.ignored += 1,
            Outcome::Recovered => t.recovered += 1,
            Outcome::Failed => t.failed += 1,
        }
        // Does the device still answer? One that needs a reset gets one.
        let s = dev.t.status();
        if s & status::DEVICE_NEEDS_RESET != 0 || s != dev.running() {
            if s & status::DEVICE_NEEDS_RESET == 0 {
                dev.fail(ABUSES[k].1, format_args!("status {s:#x} after the round"));
                t.failed += 1;
            }
            resets += 1;
            if let Err(e) = dev.init() {
                sprintln!(
                    hal,
                    "vlab-pmd: FAIL: round {round}: the device did not come back: {e}"
                );
                return exit::CHECK_FAILED;
            }
        }
    }

    sprintln!(
        hal,
        "Hostile: {:<24} {:>6} {:>8} {:>11} {:>8} {:>8} {:>6}",
        "abuse",
        "rounds",
        "returned",
        "needs-reset",
        "unserved",
        "ignored",
        "failed"
    );
    let mut failed = 0;
    for ((_, name), t) in ABUSES.iter().zip(&tally) {
        if t.rounds == 0 {
            continue;
        }
        failed += t.failed;
        sprintln!(
            hal,
            "Hostile: {:<24} {:>6} {:>8} {:>11} {:>8} {:>8} {:>6}",
            name,
            t.rounds,
            t.returned,
            t.needs_reset,
            t.unserved,
            t.ignored + t.recovered,
            t.failed
        );
    }
    sprintln!(
        hal,
        "Hostile: {} rounds, {resets} device resets after DEVICE_NEEDS_RESET, {failed} answers the spec does not allow",
        cfg.rounds
    );

    let harness = Harness::probe(hal);
    let t = match traffic(hal, &pool, cfg, &harness) {
        Ok(t) => t,
        Err(e) => {
            sprintln!(hal, "vlab-pmd: FAIL: port 0 after the abuse: {e}");
            return exit::CHECK_FAILED;
        }
    };
    harness.event(event::FWD_DONE);
    let s = &t.stats;
    sprintln!(
        hal,
        "Port 0: after the abuse: {} frames received and forwarded, {} generated; sent {}, rx errors {}, tx errors {}",
        t.rx,
        t.generated,
        t.tx,
        s.ierrors,
        s.oerrors
    );
    let ok = failed == 0 && s.ierrors == 0 && s.oerrors == 0 && t.tx == t.rx + t.generated;
    if ok {
        sprintln!(hal, "vlab-pmd: PASS");
        exit::PASS
    } else {
        sprintln!(hal, "vlab-pmd: FAIL: the device did not survive everything");
        exit::CHECK_FAILED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testpmd::Mode;

    #[test]
    fn the_command_line_names_the_mode_seed_and_rounds() {
        let c = Config::parse("mode=hostile seed=7 rounds=300").unwrap();
        assert_eq!((c.mode, c.seed, c.rounds), (Mode::Hostile, 7, 300));
        assert!(Config::parse("mode=hostile seed=x").is_err());
    }

    #[test]
    fn the_generator_is_deterministic_and_reaches_every_abuse() {
        let (mut a, mut b) = (Rng::new(3), Rng::new(3));
        let mut seen = [false; ABUSES.len()];
        for _ in 0..1000 {
            let x = a.below(ABUSES.len() as u64);
            assert_eq!(x, b.below(ABUSES.len() as u64));
            seen[x as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn the_ring_end_follows_from_the_highest_placement_taken() {
        // A 256-entry ring's used ring is on its third page and smaller than a page.
        assert_eq!(used_off(256), 0x2000);
        assert_eq!(layout(0x1000, 256).used, 0x3000);
        assert_eq!(align_up(6 + 8 * 256, PAGE), PAGE);
    }
}
