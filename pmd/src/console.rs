//! The guest's log: text for the serial port, buffered a line at a time so that each line
//! costs one platform call (one or two VM exits in a guest) rather than one per fragment.

use core::fmt;

use crate::hal::Hal;
use crate::harness::SERIAL_PORT;

const LINE: usize = 256;

/// A [`fmt::Write`] sink on the serial port. Flushes at each newline, when full, and when
/// dropped.
pub struct Console<'a, H: Hal> {
    hal: &'a H,
    buf: [u8; LINE],
    len: usize,
}

impl<'a, H: Hal> Console<'a, H> {
    pub fn new(hal: &'a H) -> Self {
        Self {
            hal,
            buf: [0; LINE],
            len: 0,
        }
    }

    pub fn flush(&mut self) {
        if self.len > 0 {
            self.hal.pio_write_bytes(SERIAL_PORT, &self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl<H: Hal> fmt::Write for Console<'_, H> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == LINE {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
            if b == b'\n' {
                self.flush();
            }
        }
        Ok(())
    }
}

impl<H: Hal> Drop for Console<'_, H> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// `println!` for the serial console: `sprintln!(hal, "x = {}", x)`.
#[macro_export]
macro_rules! sprintln {
    ($hal:expr, $($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::console::Console::new($hal), $($arg)*);
    }};
}
