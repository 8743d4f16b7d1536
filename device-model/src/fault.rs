//! Seeded fault injection for the rust backend: what a misbehaving network or device does to
//! a driver, made repeatable. Every decision comes from one seeded generator and is made per
//! frame, in frame order, so a run with the same seed and input makes the same decisions and
//! gives the same output (the timing faults change when things happen, not what).
//!
//! - frames from the input dropped, duplicated or swapped with the next one, before the
//!   guest sees them ([`Faulty`], a wrapper around the source);
//! - used-ring updates published late (the datapath waits before each publish);
//! - queue interrupts withheld;
//! - the rx ring shrunk under load: after some frames the device uses only the first few of
//!   the buffers the driver posted, as if the ring were that small;
//! - the link flapped ([`crate::net::LinkFlap`], configured beside these);
//! - and one fault of vlab's own: the datapath thread panics after so many output frames.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::endpoint::{Peek, Source};

/// Which faults, how often, from which seed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultConfig {
    pub seed: u64,
    /// Probability that an input frame is dropped.
    pub drop: f64,
    /// Probability that an input frame is delivered twice.
    pub duplicate: f64,
    /// Probability that an input frame swaps places with the one after it.
    pub reorder: f64,
    /// Wait this long before publishing each batch of used entries.
    pub delay_used: Option<Duration>,
    /// Probability that a queue interrupt the driver asked for is not sent.
    pub withhold_interrupts: f64,
    pub shrink_rx: Option<ShrinkRx>,
    /// A fault of the harness itself, not of the network: the datapath thread panics once
    /// this many frames have gone to the output, to show that a bug of ours ends the run
    /// with a clear error and keeps the output written so far.
    pub panic_after: Option<u64>,
}

impl FaultConfig {
    /// Whether any frame fault is on (the source needs wrapping).
    pub fn touches_frames(&self) -> bool {
        self.drop > 0.0 || self.duplicate > 0.0 || self.reorder > 0.0
    }
}

/// After `after` delivered frames, use at most `buffers` of the rx buffers the driver has
/// posted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShrinkRx {
    pub after: u64,
    pub buffers: u16,
}

/// What the faults did.
#[derive(Debug, Default)]
pub struct FaultStats {
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
    pub withheld_interrupts: AtomicU64,
    pub delayed_publishes: AtomicU64,
}

/// A plain copy of [`FaultStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounters {
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub withheld_interrupts: u64,
    pub delayed_publishes: u64,
}

impl FaultCounters {
    pub fn any(&self) -> bool {
        *self != FaultCounters::default()
    }
}

impl FaultStats {
    pub fn snapshot(&self) -> FaultCounters {
        let g = |a: &AtomicU64| a.load(Ordering::Acquire);
        FaultCounters {
            dropped: g(&self.dropped),
            duplicated: g(&self.duplicated),
            reordered: g(&self.reordered),
            withheld_interrupts: g(&self.withheld_interrupts),
            delayed_publishes: g(&self.delayed_publishes),
        }
    }
}

/// SplitMix64: small, fast, and the same sequence everywhere for a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 random bits make a uniform float in [0, 1).
        p > 0.0 && ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// A source whose frames are dropped, duplicated and reordered by the configuration's
/// probabilities, before the guest sees them.
pub struct Faulty<S> {
    inner: S,
    cfg: FaultConfig,
    rng: Rng,
    /// Frames decided on and waiting to be delivered, in order.
    ready: VecDeque<Vec<u8>>,
    stats: Arc<FaultStats>,
}

impl<S: Source> Faulty<S> {
    pub fn new(inner: S, cfg: FaultConfig, stats: Arc<FaultStats>) -> Self {
        Self {
            rng: Rng::new(cfg.seed),
            inner,
            cfg,
            ready: VecDeque::new(),
            stats,
        }
    }

    /// The inner source's next frame, taken out of it.
    fn take(&mut self) -> Option<Vec<u8>> {
        let frame = match self.inner.peek() {
            Peek::Frame(f) => f.to_vec(),
            Peek::Idle | Peek::Ended => return None,
        };
        self.inner.consume();
        Some(frame)
    }

    /// Decides the fate of the inner source's next frame (or two, for a swap).
    fn decide(&mut self) {
        while self.ready.is_empty() {
            let Some(frame) = self.take() else {
                return;
            };
            if self.rng.chance(self.cfg.drop) {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if self.rng.chance(self.cfg.duplicate) {
                self.stats.duplicated.fetch_add(1, Ordering::Relaxed);
                self.ready.push_back(frame.clone());
                self.ready.push_back(frame);
                continue;
            }
            if self.rng.chance(self.cfg.reorder) {
                // Swapped with the next frame, if there is one now.
                if let Some(next) = self.take() {
                    self.stats.reordered.fetch_add(1, Ordering::Relaxed);
                    self.ready.push_back(next);
                }
            }
            self.ready.push_back(frame);
        }
    }
}

impl<S: Source> Source for Faulty<S> {
    fn peek(&mut self) -> Peek<'_> {
        self.decide();
        if self.ready.is_empty() {
            return self.inner.peek();
        }
        match self.ready.front() {
            Some(f) => Peek::Frame(f),
            None => Peek::Idle,
        }
    }

    fn consume(&mut self) {
        self.ready.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::PcapSource;
    use crate::pcap::Frame;

    fn frames(n: u8) -> Vec<Frame> {
        (0..n)
            .map(|i| Frame {
                ts: Duration::ZERO,
                data: vec![i; 60],
            })
            .collect()
    }

    fn drain(s: &mut impl Source) -> Vec<u8> {
        let mut out = Vec::new();
        while let Peek::Frame(f) = s.peek() {
            out.push(f[0]);
            s.consume();
        }
        out
    }

    #[test]
    fn the_same_seed_makes_the_same_decisions() {
        let cfg = FaultConfig {
            seed: 42,
            drop: 0.2,
            duplicate: 0.2,
            reorder: 0.2,
            ..FaultConfig::default()
        };
        let run = || {
            let stats = Arc::new(FaultStats::default());
            let mut s = Faulty::new(PcapSource::new(frames(100)), cfg.clone(), stats.clone());
            (drain(&mut s), stats.snapshot())
        };
        let (a, sa) = run();
        let (b, sb) = run();
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        assert!(
            sa.dropped > 0 && sa.duplicated > 0 && sa.reordered > 0,
            "{sa:?}"
        );
        // Every frame is accounted for: delivered once, twice, or dropped.
        assert_eq!(
            a.len() as u64,
            100 - sa.dropped + sa.duplicated,
            "{a:?} {sa:?}"
        );
        let other = Faulty::new(
            PcapSource::new(frames(100)),
            FaultConfig { seed: 43, ..cfg },
            Arc::default(),
        );
        assert_ne!(drain(&mut { other }), a, "another seed, other decisions");
    }

    #[test]
    fn without_faults_the_source_is_unchanged() {
        let mut s = Faulty::new(
            PcapSource::new(frames(10)),
            FaultConfig::default(),
            Arc::default(),
        );
        assert_eq!(drain(&mut s), (0..10).collect::<Vec<u8>>());
        assert_eq!(s.peek(), Peek::Ended);
    }

    #[test]
    fn a_swap_puts_the_next_frame_first() {
        let stats = Arc::new(FaultStats::default());
        let mut s = Faulty::new(
            PcapSource::new(frames(2)),
            FaultConfig {
                reorder: 1.0,
                ..FaultConfig::default()
            },
            stats.clone(),
        );
        assert_eq!(drain(&mut s), vec![1, 0]);
        assert_eq!(stats.snapshot().reordered, 1);
    }
}
