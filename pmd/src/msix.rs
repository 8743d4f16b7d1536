//! Programming one MSI-X vector of a PCI function, for the configuration-change interrupt.
//! The queues are polled and keep [`NO_VECTOR`] (which vectors a port may use:
//! [`crate::net::irq`]).

use crate::hal::{Hal, Width};
use crate::pci::{self, Bar, ConfigSpace};

/// MSI address of the local APIC with ID 0, physical destination.
const MSI_ADDRESS: u32 = 0xfee0_0000;
const CONTROL_ENABLE: u16 = 1 << 15;
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;

/// The virtio "no vector" value for `config_msix_vector` / `queue_msix_vector`: no
/// interrupt.
pub const NO_VECTOR: u16 = 0xffff;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error(transparent)]
    Pci(#[from] pci::Error),
    #[error("the function has no MSI-X capability")]
    NoMsix,
    #[error("the MSI-X table is in BAR{0}, which is not a memory BAR")]
    TableNotInMemory(u8),
    #[error("MSI-X table entry {entry} does not exist (the table has {size})")]
    NoSuchEntry { entry: u16, size: u16 },
}

/// Makes table entry `entry` deliver `apic_vector` to CPU 0, unmasks it and enables MSI-X.
pub fn enable<H: Hal>(
    hal: &H,
    cfg: &ConfigSpace<'_, H>,
    entry: u16,
    apic_vector: u8,
) -> Result<(), Error> {
    let cap = cfg
        .find_capability(pci::CAP_ID_MSIX)?
        .ok_or(Error::NoMsix)?;
    let control = cfg.read16(cap + 2);
    let size = (control & 0x7ff) + 1;
    if entry >= size {
        return Err(Error::NoSuchEntry { entry, size });
    }
    let table = cfg.read32(cap + 4);
    let bir = (table & 7) as u8;
    let base = match cfg.bar(bir)? {
        Bar::Memory { addr } => addr + u64::from(table & !7),
        Bar::Io { .. } => return Err(Error::TableNotInMemory(bir)),
    };
    cfg.enable(pci::COMMAND_MEMORY | pci::COMMAND_BUS_MASTER);
    let e = base + 16 * u64::from(entry);
    hal.mmio_write(e, Width::U32, u64::from(MSI_ADDRESS));
    hal.mmio_write(e + 4, Width::U32, 0);
    hal.mmio_write(e + 8, Width::U32, u64::from(apic_vector));
    hal.mmio_write(e + 12, Width::U32, 0);
    cfg.write16(cap + 2, (control | CONTROL_ENABLE) & !CONTROL_FUNCTION_MASK);
    Ok(())
}
