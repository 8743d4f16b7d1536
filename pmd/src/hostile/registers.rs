//! Register and configuration-space accesses at offsets and widths the spec does not
//! define.

use crate::hal::{Hal, Width};
use crate::net::{self, features};
use crate::pci;
use crate::transport::{AnyTransport, Transport};

use super::dev::{Dev, Outcome};
use super::rng::Rng;
use super::TX;

impl<H: Hal> Dev<'_, H> {
    /// Accesses registers at offsets and widths the spec does not define (never the
    /// status register), then checks the status is unchanged and the device still
    /// serves a queue.
    pub(super) fn odd_registers(&mut self, rng: &mut Rng) -> Outcome {
        let what = "odd-register-access";
        const WIDTHS: [Width; 4] = [Width::U8, Width::U16, Width::U32, Width::U64];
        let count = 1 + rng.below(8);
        for _ in 0..count {
            let r = rng.next();
            let write = r & 1 != 0;
            let value = rng.next();
            match (&self.t, r >> 1 & 3) {
                (AnyTransport::Modern(m), 0 | 1) => {
                    // The common configuration, around and between its fields.
                    let off = (r >> 8) % 0x40;
                    let width = WIDTHS[(r >> 16) as usize % 4];
                    if write && off == 0x14 && width == Width::U8 {
                        continue;
                    }
                    let at = m.common_addr() + off;
                    if write {
                        self.hal.mmio_write(at, width, value);
                    } else {
                        let _ = self.hal.mmio_read(at, width);
                    }
                }
                (AnyTransport::Modern(m), 2) => {
                    // The device configuration (read-only) and the notification area.
                    let base = if r >> 20 & 1 == 0 {
                        m.device_addr()
                    } else {
                        m.notify_addr()
                    };
                    let at = base + (r >> 8) % 0x20;
                    let width = WIDTHS[(r >> 16) as usize % 4];
                    if write {
                        self.hal.mmio_write(at, width, value);
                    } else {
                        let _ = self.hal.mmio_read(at, width);
                    }
                }
                (AnyTransport::Legacy(l), 0..=2) => {
                    let off = ((r >> 8) % 0x20) as u16;
                    let width = WIDTHS[(r >> 16) as usize % 3];
                    if write && off == 0x12 && width == Width::U8 {
                        continue;
                    }
                    let port = l.io_base() + off;
                    if write {
                        self.hal.pio_write(port, width, value as u32);
                    } else {
                        let _ = self.hal.pio_read(port, width);
                    }
                }
                _ => {
                    // PCI configuration space, read-only fields only: IDs, class,
                    // subsystem, capability pointer, and beyond the capabilities.
                    const RO: [u16; 8] = [0x00, 0x02, 0x08, 0x0a, 0x2c, 0x2e, 0x34, 0xfc];
                    let off = RO[(r >> 8) as usize % RO.len()];
                    if write {
                        self.cfg_space.write16(off, value as u16);
                    } else {
                        let _ = self.cfg_space.read16(off);
                    }
                }
            }
        }
        let s = self.t.status();
        if s != self.running() {
            return self.fail(what, format_args!("status {s:#x} afterwards"));
        }
        let id = self.cfg_space.read32(pci::VENDOR_ID);
        if id as u16 != net::VIRTIO_VENDOR {
            return self.fail(what, format_args!("PCI ID {id:#x} afterwards"));
        }
        // Still serving: a command (or, without a control queue, a frame) goes through.
        let o = if self.queues == 3 && self.features & features::CTRL_RX != 0 {
            self.ctrl_expect(what, 0, 0, &[1], 0)
        } else {
            let (h, _, len) = self.frame();
            let hdr = self.hdr_len() as u32;
            self.ring(TX).desc(0, h, hdr + len, 0, 0);
            self.expect_returned(what, TX, 0, Some(0))
        };
        if o == Outcome::Returned {
            Outcome::Ignored
        } else {
            o
        }
    }
}
