//! The guest's log: text written byte by byte to the COM1 transmit register.

use core::fmt;

use crate::hal::Hal;
use crate::harness::SERIAL_PORT;

/// A [`fmt::Write`] sink on the serial port.
pub struct Console<'a, H: Hal> {
    hal: &'a H,
}

impl<'a, H: Hal> Console<'a, H> {
    pub fn new(hal: &'a H) -> Self {
        Self { hal }
    }
}

impl<H: Hal> fmt::Write for Console<'_, H> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.hal.pio_write_bytes(SERIAL_PORT, s.as_bytes());
        Ok(())
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
