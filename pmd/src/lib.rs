//! A virtio-net poll-mode driver (PMD) in the style of DPDK's `net/virtio` driver.
//!
//! The crate is `#![no_std]` (with `alloc` for the driver's own bookkeeping) and knows nothing
//! of KVM, of the device model or of std: everything it needs from its platform comes through
//! the [`hal::Hal`] trait. The same code therefore runs in the ring-3 part of the guest image
//! and on an ordinary host thread (the in-process machine of `vmm`).
//!
//! Layers, bottom up:
//! - [`pci`]: configuration mechanism #1 and capability walking;
//! - [`transport`]: the virtio PCI transport (modern);
//! - [`virtqueue`]: driver side of split virtqueues;
//! - [`mbuf`]: a fixed pool of packet buffers in DMA memory;
//! - [`net`]: the virtio-net port: initialisation, `rx_burst`, `tx_burst`;
//! - [`testpmd`]: a testpmd-like application on top (io, macswap, rxonly, txonly);
//! - [`hostile`]: its hostile mode, a driver that breaks the rules on purpose.
#![no_std]

extern crate alloc;

pub mod console;
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
