//! Frames from and to pcap files.

use super::{Peek, Sink, SinkError, Source, Timestamps};
use crate::pcap::{Frame, PcapOut};

/// Replays the frames of a capture in order, then ends.
pub struct PcapSource {
    frames: Vec<Frame>,
    next: usize,
}

impl PcapSource {
    pub fn new(frames: Vec<Frame>) -> Self {
        Self { frames, next: 0 }
    }
}

impl Source for PcapSource {
    fn peek(&mut self) -> Peek<'_> {
        match self.frames.get(self.next) {
            Some(f) => Peek::Frame(&f.data),
            None => Peek::Ended,
        }
    }

    fn consume(&mut self) {
        if self.next < self.frames.len() {
            self.next += 1;
        }
    }
}

/// Writes frames to a pcap file, committed by [`Sink::finish`].
pub struct PcapSink {
    out: PcapOut,
    stamps: Timestamps,
}

impl PcapSink {
    pub fn new(out: PcapOut, stamps: Timestamps) -> Self {
        Self { out, stamps }
    }
}

impl Sink for PcapSink {
    fn put(&mut self, frame: &[u8]) -> Result<(), SinkError> {
        let ts = self.stamps.stamp(self.out.frames());
        self.out.write(ts, frame)?;
        Ok(())
    }

    fn frames(&self) -> u64 {
        self.out.frames()
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.out.commit()?;
        Ok(())
    }
}
