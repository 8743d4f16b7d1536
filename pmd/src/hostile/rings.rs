//! Abuses of the rings themselves: available indexes that jump, heads out of range, rings
//! placed outside RAM.

use crate::hal::Hal;
use crate::transport::{status, Transport};
use crate::virtqueue::split::layout;

use super::dev::{Dev, Outcome, Plan};
use super::ram::used_off;
use super::raw_ring::Ring;
use super::{CTRL, PAGE, RX, TX};

impl<H: Hal> Dev<'_, H> {
    pub(super) fn avail_jump(&mut self, v: u64) -> Outcome {
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

    pub(super) fn ring_outside_ram(&mut self, v: u64) -> Outcome {
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

    pub(super) fn head_out_of_range(&mut self, v: u64) -> Outcome {
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
}
