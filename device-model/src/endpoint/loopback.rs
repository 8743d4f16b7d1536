//! A sink whose frames come back through a source: what the guest sends, it receives.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::{Peek, Sink, SinkError, Source};

type Shared = Arc<Mutex<VecDeque<Vec<u8>>>>;

/// A connected pair: frames put into the sink come out of the source, in order. The source
/// never ends (a looped frame may always arrive): runs on a loopback end by a packet count.
pub fn loopback() -> (LoopbackSource, LoopbackSink) {
    let shared: Shared = Arc::default();
    (
        LoopbackSource {
            shared: shared.clone(),
            current: None,
        },
        LoopbackSink { shared, frames: 0 },
    )
}

pub struct LoopbackSource {
    shared: Shared,
    current: Option<Vec<u8>>,
}

impl Source for LoopbackSource {
    fn peek(&mut self) -> Peek<'_> {
        if self.current.is_none() {
            self.current = self
                .shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
        }
        match &self.current {
            Some(f) => Peek::Frame(f),
            None => Peek::Idle,
        }
    }

    fn consume(&mut self) {
        self.current = None;
    }
}

pub struct LoopbackSink {
    shared: Shared,
    frames: u64,
}

impl Sink for LoopbackSink {
    fn put(&mut self, frame: &[u8]) -> Result<(), SinkError> {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(frame.to_vec());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_back_in_order() {
        let (mut src, mut sink) = loopback();
        assert_eq!(src.peek(), Peek::Idle);
        sink.put(&[1]).unwrap();
        sink.put(&[2]).unwrap();
        assert_eq!(src.peek(), Peek::Frame(&[1]));
        assert_eq!(src.peek(), Peek::Frame(&[1]), "peek does not consume");
        src.consume();
        assert_eq!(src.peek(), Peek::Frame(&[2]));
        src.consume();
        assert_eq!(src.peek(), Peek::Idle);
    }
}
