//! A source that makes frames instead of reading them, for benchmarks: the input file must
//! not be what limits a rate.

use super::{Peek, Source};

/// `count` copies of a UDP frame of `size` bytes, each with its sequence number in the
/// first payload bytes.
pub struct GeneratorSource {
    frame: Vec<u8>,
    remaining: u64,
    seq: u64,
}

/// Offset of the 8-byte sequence number: after Ethernet, IPv4 and UDP headers.
const SEQ_OFFSET: usize = 42;

impl GeneratorSource {
    /// `size` is clamped to at least 60 bytes (a minimum Ethernet frame without FCS).
    pub fn new(count: u64, size: usize, dst: [u8; 6]) -> Self {
        let size = size.max(60);
        let mut frame = vec![0u8; size];
        frame[0..6].copy_from_slice(&dst);
        frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
        frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip_len = (size - 14) as u16;
        frame[14] = 0x45;
        frame[16..18].copy_from_slice(&ip_len.to_be_bytes());
        frame[22] = 64;
        frame[23] = 17;
        frame[26..30].copy_from_slice(&[198, 18, 0, 2]);
        frame[30..34].copy_from_slice(&[198, 18, 0, 1]);
        frame[34..36].copy_from_slice(&9u16.to_be_bytes());
        frame[36..38].copy_from_slice(&9u16.to_be_bytes());
        frame[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
        Self {
            frame,
            remaining: count,
            seq: 0,
        }
    }
}

impl Source for GeneratorSource {
    fn peek(&mut self) -> Peek<'_> {
        if self.remaining == 0 {
            return Peek::Ended;
        }
        self.frame[SEQ_OFFSET..SEQ_OFFSET + 8].copy_from_slice(&self.seq.to_be_bytes());
        Peek::Frame(&self.frame)
    }

    fn consume(&mut self) {
        if self.remaining > 0 {
            self.remaining -= 1;
            self.seq += 1;
        }
    }
}
