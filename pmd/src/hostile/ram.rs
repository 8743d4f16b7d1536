//! Finding where guest RAM ends without being told: the device refuses a ring placed
//! outside RAM with DEVICE_NEEDS_RESET, so placements tell.

use crate::hal::Hal;
use crate::net::features;
use crate::transport::status;
use crate::virtqueue::split::{layout, used_offset};

use super::dev::{Dev, Plan};
use super::{Error, PAGE, TX};

const fn align_up(x: u64, a: u64) -> u64 {
    (x + a - 1) & !(a - 1)
}

/// Where the used ring of a `size`-entry ring in the legacy layout starts.
pub(super) fn used_off(size: u16) -> u64 {
    used_offset(size) as u64
}

/// The bytes the used ring of a `size`-entry ring takes, to its page end.
pub(super) fn used_ring_pages(size: u16) -> u64 {
    align_up(6 + 8 * u64::from(size), PAGE)
}

impl<H: Hal> Dev<'_, H> {
    /// Whether the device takes a tx ring at `base`.
    fn ring_fits(&mut self, base: u64) -> Result<bool, Error> {
        let plan = Plan {
            features: if self.legacy() {
                0
            } else {
                features::VERSION_1
            },
            queues: 2,
            place: Some((TX, layout(base, self.size(TX)))),
            features_ok: true,
            skip: None,
        };
        let (_, s) = self.bring_up(&plan)?;
        Ok(s & status::DEVICE_NEEDS_RESET == 0)
    }

    /// Finds where RAM ends: the highest page the device takes a tx ring at. `low` must
    /// be a page above everything this driver uses (the device may write the used ring of
    /// a ring it takes). Returns (RAM end, placements tried, placements refused).
    ///
    /// Powers of two from 2 GiB down first, then a binary search: the placements tried
    /// depend only on where RAM ends (not on `low`, which differs between the guest and
    /// the in-process machine), so both machines log the same.
    pub(super) fn probe_ram_end(&mut self, low: u64) -> Result<(u64, u32, u32), Error> {
        let low = align_up(low, PAGE);
        let mut hi = 1u64 << 32;
        let (mut tried, mut refused) = (0, 0);
        let mut x = hi / 2;
        let mut found = None;
        while x >= low {
            tried += 1;
            if self.ring_fits(x)? {
                found = Some(x);
                break;
            }
            refused += 1;
            hi = x;
            x /= 2;
        }
        let mut lo = match found {
            Some(x) => x,
            None => {
                tried += 1;
                if !self.ring_fits(low)? {
                    return Ok((low, tried, refused + 1));
                }
                low
            }
        };
        while hi - lo > PAGE {
            let mid = (lo / PAGE + (hi - lo) / PAGE / 2) * PAGE;
            tried += 1;
            if self.ring_fits(mid)? {
                lo = mid;
            } else {
                refused += 1;
                hi = mid;
            }
        }
        // The highest ring that fits ends its used ring on the last page of RAM, which
        // ends on a page boundary.
        let size = self.size(TX);
        Ok((lo + used_off(size) + used_ring_pages(size), tried, refused))
    }
}
