//! Resets and status sequences: a reset while frames are in flight, and set-ups the device
//! must refuse (features not offered, FEATURES_OK skipped, a queue left disabled).

use crate::hal::Hal;
use crate::net::features;
use crate::transport::{status, Transport};

use super::dev::{Dev, Outcome};
use super::raw_ring::DESC_F_WRITE;
use super::{scratch, RX, TX};

impl<H: Hal> Dev<'_, H> {
    pub(super) fn reset_mid_transfer(&mut self, v: u64) -> Outcome {
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

    pub(super) fn bad_status(&mut self, v: u64) -> Outcome {
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
}
