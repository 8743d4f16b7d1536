//! Abuses of the control queue: commands the device must refuse, and chains it cannot
//! answer.

use crate::hal::Hal;

use super::dev::{Dev, Outcome};
use super::raw_ring::{DESC_F_NEXT, DESC_F_WRITE};
use super::{scratch, CTRL};

impl<H: Hal> Dev<'_, H> {
    /// A control command: class and command, `data`, an ack byte; expects it answered
    /// VIRTIO_NET_ERR.
    fn ctrl_err(&mut self, what: &str, class: u8, cmd: u8, data: &[u8]) -> Outcome {
        self.ctrl_expect(what, class, cmd, data, 1)
    }

    pub(super) fn ctrl_expect(
        &mut self,
        what: &str,
        class: u8,
        cmd: u8,
        data: &[u8],
        ack: u8,
    ) -> Outcome {
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

    pub(super) fn bad_ctrl(&mut self, v: u64) -> Outcome {
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
}
