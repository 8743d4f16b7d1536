//! A virtio-net poll-mode driver (PMD) in the style of DPDK's `net/virtio` driver.
//!
//! The crate is `#![no_std]` (with `alloc` for the driver's own bookkeeping) and knows nothing
//! of KVM, of the device model or of std: everything it needs from its platform comes through
//! the [`hal::Hal`] trait. The same code therefore runs in the ring-3 part of the guest image
//! and on an ordinary host thread (the in-process machine of `vmm`).
//!
//! Layers, bottom up:
//! - [`pci`]: configuration mechanism #1 and capability walking; [`msix`]: programming an
//!   MSI-X vector;
//! - [`transport`]: the virtio PCI transports (modern and legacy);
//! - [`virtqueue`]: driver side of virtqueues, one type whatever the ring layout (split or
//!   packed, in order or not);
//! - [`mbuf`]: a fixed pool of packet buffers in DMA memory;
//! - [`net`]: the virtio-net port: initialisation, queue pairs and RSS, `rx_burst` and
//!   `tx_burst` per queue;
//! - [`config`], [`frames`]: the application's command line (with its ports, queues and
//!   forwarding streams) and its generated frames;
//! - [`hostile`]: the hostile mode, a driver that breaks the rules on purpose;
//! - [`testpmd`]: a testpmd-like application on top (io, macswap, rxonly, txonly over one
//!   to four ports and their queues, and dispatching to the hostile mode).
//!
//! Modules depend on the ones above them in this list only (and on [`hal`], [`console`],
//! [`harness`]).
#![no_std]

extern crate alloc;

pub mod config;
pub mod console;
pub mod frames;
pub mod hal;
pub mod harness;
pub mod hostile;
pub mod mbuf;
pub mod msix;
pub mod net;
pub mod pci;
pub mod testpmd;
pub mod transport;
pub mod virtqueue;

#[cfg(test)]
mod testing;
