//! Abuses of descriptors: buffers outside RAM or across its end, chains that loop or are
//! longer than the queue, zero and huge lengths, buffers of the wrong direction.

use crate::hal::Hal;

use super::dev::{Dev, Outcome};
use super::raw_ring::{DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};
use super::{scratch, CTRL, PAGE, RX, TX};

impl<H: Hal> Dev<'_, H> {
    pub(super) fn outside_ram(&mut self, v: u64) -> Outcome {
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

    pub(super) fn straddles_ram_end(&mut self, v: u64) -> Outcome {
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

    pub(super) fn chain_loop(&mut self, v: u64) -> Outcome {
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

    pub(super) fn chain_longer_than_queue(&mut self, v: u64) -> Outcome {
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

    pub(super) fn zero_length(&mut self, v: u64) -> Outcome {
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

    pub(super) fn huge_length(&mut self, v: u64) -> Outcome {
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

    pub(super) fn write_only_on_tx(&mut self, v: u64) -> Outcome {
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
}
