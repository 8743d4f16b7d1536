//! The end marker: a frame a harness sends after its input so a guest knows the input
//! ended when nothing else can tell it (vhost backends, QEMU). The guest forwards it and
//! stops (`end-ethertype=88b5` on its command line); the side that captures the output
//! takes it off again.

use super::{Peek, Sink, SinkError, Source};

/// IEEE 802 local experimental ethertype 1.
pub const END_ETHERTYPE: u16 = 0x88b5;

/// The marker: broadcast, so every receive filter passes it; 60 bytes, the shortest frame.
pub fn end_frame() -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&END_ETHERTYPE.to_be_bytes());
    f
}

/// Whether `frame` is the marker, with or without one VLAN tag (a guest may have inserted
/// one).
pub fn is_end(frame: &[u8]) -> bool {
    let ty = END_ETHERTYPE.to_be_bytes();
    frame.get(12..14) == Some(&ty[..]) || frame.get(16..18) == Some(&ty[..])
}

/// A source followed by the marker.
pub struct Marked<S> {
    inner: S,
    marker: Option<Vec<u8>>,
}

impl<S: Source> Marked<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            marker: Some(end_frame()),
        }
    }
}

impl<S: Source> Source for Marked<S> {
    fn peek(&mut self) -> Peek<'_> {
        // A second peek returns the same thing: sources keep their next frame until
        // consumed.
        if self.inner.peek() != Peek::Ended {
            return self.inner.peek();
        }
        match &self.marker {
            Some(m) => Peek::Frame(m),
            None => Peek::Ended,
        }
    }

    fn consume(&mut self) {
        if self.inner.peek() == Peek::Ended {
            self.marker = None;
        } else {
            self.inner.consume();
        }
    }
}

/// A sink that ends at the marker: the marker is not written, frames after it on the queue
/// it came back on are counted and dropped. The other queues' frames still pass: with
/// several queue pairs the marker comes back on one of them, and the guest forwards what
/// it still holds on the others after it. With `finish_at_marker` the inner sink is
/// finished when the marker arrives (a backend whose frontend never says the run ended),
/// and nothing passes after; otherwise it is finished by [`Sink::finish`].
pub struct UntilMarker<K> {
    inner: K,
    finish_at_marker: bool,
    /// The queues the marker came back on (queue k at bit k; queues from 63 share bit 63).
    ended: u64,
    finished: bool,
    after: u64,
}

impl<K: Sink> UntilMarker<K> {
    pub fn new(inner: K, finish_at_marker: bool) -> Self {
        Self {
            inner,
            finish_at_marker,
            ended: 0,
            finished: false,
            after: 0,
        }
    }

    /// Whether the marker came back.
    pub fn marker_seen(&self) -> bool {
        self.ended != 0
    }
}

impl<K: Sink> Sink for UntilMarker<K> {
    fn put(&mut self, frame: &[u8]) -> Result<(), SinkError> {
        self.put_on(frame, 0)
    }

    fn put_on(&mut self, frame: &[u8], queue: u16) -> Result<(), SinkError> {
        let bit = 1u64 << queue.min(63);
        if self.finished || self.ended & bit != 0 {
            self.after += 1;
            tracing::warn!("dropped a frame that came after the end marker (queue {queue})");
            return Ok(());
        }
        if is_end(frame) {
            self.ended |= bit;
            if self.finish_at_marker {
                return self.finish();
            }
            return Ok(());
        }
        self.inner.put_on(frame, queue)
    }

    fn frames(&self) -> u64 {
        self.inner.frames()
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        if std::mem::replace(&mut self.finished, true) {
            return Ok(());
        }
        self.inner.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{NullSink, PcapSource};
    use crate::pcap::Frame;

    #[test]
    fn the_marker_follows_the_input_once() {
        let f = |b: u8| Frame {
            ts: std::time::Duration::ZERO,
            data: vec![b; 60],
        };
        let mut s = Marked::new(PcapSource::new(vec![f(1), f(2)]));
        let mut seen = Vec::new();
        loop {
            match s.peek() {
                Peek::Frame(d) => seen.push(d.to_vec()),
                Peek::Ended => break,
                Peek::Idle => unreachable!(),
            }
            s.consume();
        }
        assert_eq!(seen, vec![vec![1; 60], vec![2; 60], end_frame()]);
    }

    #[test]
    fn the_sink_stops_at_the_marker_tagged_or_not() {
        let mut tagged = end_frame();
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        assert!(is_end(&tagged));
        assert!(!is_end(&[0u8; 60]));
        let mut k = UntilMarker::new(NullSink::default(), true);
        k.put(&[0u8; 60]).unwrap();
        k.put(&tagged).unwrap();
        k.put(&[0u8; 60]).unwrap();
        assert_eq!(k.frames(), 1);
        assert_eq!(k.after, 1);
        assert!(k.marker_seen() && k.finished);
    }

    #[test]
    fn with_several_queues_only_the_markers_queue_ends() {
        let mut k = UntilMarker::new(NullSink::default(), false);
        k.put_on(&[0u8; 60], 1).unwrap();
        k.put_on(&end_frame(), 0).unwrap();
        assert!(k.marker_seen());
        // Queue 1 still forwards what it held; queue 0 ended.
        k.put_on(&[1u8; 60], 1).unwrap();
        k.put_on(&[0u8; 60], 0).unwrap();
        assert_eq!((k.frames(), k.after), (2, 1));
        // Finished at the marker: nothing passes after it, on any queue.
        let mut k = UntilMarker::new(NullSink::default(), true);
        k.put_on(&end_frame(), 2).unwrap();
        k.put_on(&[1u8; 60], 1).unwrap();
        assert_eq!((k.frames(), k.after), (0, 1));
    }
}
