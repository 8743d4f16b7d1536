//! COM1: a 16550 UART (vm-superio) whose output is kept for the run report and, optionally,
//! echoed to a stream as it arrives.

use std::io::Write;
use std::sync::{Arc, Mutex};

use vm_superio::{Serial, Trigger};

/// The UART's interrupt line. The guests here poll; there is no line to raise.
pub struct NoInterrupt;

impl Trigger for NoInterrupt {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        Ok(())
    }
}

/// Where the guest's serial output goes besides the run report.
pub enum Echo {
    None,
    Stream(Box<dyn Write + Send>),
}

/// The UART's output: captured in full, echoed if asked.
pub struct SerialOut {
    captured: Arc<Mutex<Vec<u8>>>,
    echo: Echo,
}

impl Write for SerialOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        if let Echo::Stream(w) = &mut self.echo {
            // A broken echo (closed stdout) must not stop the guest: the capture is
            // what the report uses.
            let _ = w.write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Echo::Stream(w) = &mut self.echo {
            let _ = w.flush();
        }
        Ok(())
    }
}

pub type Uart = Serial<NoInterrupt, vm_superio::serial::NoEvents, SerialOut>;

/// Makes a UART and a handle on everything it will have printed.
pub fn uart(echo: Echo) -> (Uart, Arc<Mutex<Vec<u8>>>) {
    let captured = Arc::new(Mutex::new(Vec::new()));
    let out = SerialOut {
        captured: captured.clone(),
        echo,
    };
    (Serial::new(NoInterrupt, out), captured)
}
