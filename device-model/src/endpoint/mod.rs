//! Where a backend's frames come from and go to.
//!
//! A [`Source`] feeds frames to the guest (device rx); a [`Sink`] takes the frames the guest
//! transmits (device tx). A backend owns one of each. Sources are peeked and then consumed,
//! so a frame waits in its source, untouched, while the guest has no rx buffer for it.

mod generator;
mod loopback;
pub mod marker;
mod pcap;

use std::time::Duration;

pub use generator::GeneratorSource;
pub use loopback::loopback;
pub use pcap::{PcapSink, PcapSource};

/// What a source has now.
#[derive(Debug, PartialEq, Eq)]
pub enum Peek<'a> {
    /// The next frame; it stays next until [`Source::consume`].
    Frame(&'a [u8]),
    /// Nothing now, maybe later.
    Idle,
    /// Nothing, ever again.
    Ended,
}

impl<S: Source + ?Sized> Source for Box<S> {
    fn peek(&mut self) -> Peek<'_> {
        (**self).peek()
    }
    fn consume(&mut self) {
        (**self).consume()
    }
}

pub trait Source: Send {
    fn peek(&mut self) -> Peek<'_>;
    /// Drops the frame the last [`Source::peek`] returned.
    fn consume(&mut self);
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Pcap(#[from] crate::pcap::Error),
    #[error("writing to the TAP: {0}")]
    Tap(#[source] std::io::Error),
}

pub trait Sink: Send {
    fn put(&mut self, frame: &[u8]) -> Result<(), SinkError>;
    /// Takes a frame the guest transmitted on queue pair `queue` (transmitq `queue` + 1,
    /// the device's queue 2 * `queue` + 1). The datapath calls this; a sink that keeps
    /// no queue apart takes it as [`Sink::put`].
    fn put_on(&mut self, frame: &[u8], queue: u16) -> Result<(), SinkError> {
        let _ = queue;
        self.put(frame)
    }
    /// Frames taken so far.
    fn frames(&self) -> u64;
    /// Makes the output final (a pcap is renamed into place). Called once, after the run.
    fn finish(&mut self) -> Result<(), SinkError>;
}

/// A source with no frames.
pub struct NullSource;

impl Source for NullSource {
    fn peek(&mut self) -> Peek<'_> {
        Peek::Ended
    }
    fn consume(&mut self) {}
}

/// A sink that counts frames and keeps none.
#[derive(Default)]
pub struct NullSink {
    frames: u64,
}

impl Sink for NullSink {
    fn put(&mut self, _frame: &[u8]) -> Result<(), SinkError> {
        self.frames += 1;
        Ok(())
    }
    fn frames(&self) -> u64 {
        self.frames
    }
    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Timestamps for output frames, taken from the input so runs are reproducible: output
/// frame `k` gets input frame `k`'s timestamp; frames beyond the input continue one
/// microsecond apart after the last input timestamp (or from zero without input).
#[derive(Clone, Debug, Default)]
pub struct Timestamps {
    input: Vec<Duration>,
}

impl Timestamps {
    pub fn new(input: Vec<Duration>) -> Self {
        Self { input }
    }

    pub fn stamp(&self, k: u64) -> Duration {
        let n = self.input.len() as u64;
        match self.input.get(k as usize) {
            Some(&ts) => ts,
            None => {
                let base = self.input.last().copied().unwrap_or(Duration::ZERO);
                let extra = if n == 0 { k } else { k - n + 1 };
                base + Duration::from_micros(extra)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_follow_the_input_then_step_by_a_microsecond() {
        let t = Timestamps::new(vec![Duration::from_secs(5), Duration::from_secs(7)]);
        assert_eq!(t.stamp(0), Duration::from_secs(5));
        assert_eq!(t.stamp(1), Duration::from_secs(7));
        assert_eq!(
            t.stamp(2),
            Duration::from_secs(7) + Duration::from_micros(1)
        );
        assert_eq!(
            t.stamp(4),
            Duration::from_secs(7) + Duration::from_micros(3)
        );
        let empty = Timestamps::default();
        assert_eq!(empty.stamp(0), Duration::ZERO);
        assert_eq!(empty.stamp(3), Duration::from_micros(3));
    }
}
