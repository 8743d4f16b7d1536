//! The device side of virtio-lab: a PCI function with the virtio 1.x transport, a virtio-net
//! device, and the backends that move its frames.
//!
//! Nothing here knows about KVM. A VMM (or the in-process machine) forwards configuration
//! and BAR accesses to a [`pci::PciDevice`], wires queue notifications to the eventfds the
//! device hands out, and delivers the MSI messages the device raises through
//! [`virtio::MsiSink`]. Everything a guest writes is treated as hostile: bad values are
//! answered the way the virtio spec says, counted and logged, never with a panic.

pub mod affinity;
pub mod endpoint;
pub mod fault;
pub mod msix;
pub mod net;
pub mod panic;
pub mod pcap;
pub mod pci;
pub mod queue;
pub mod tap;
pub mod used;
pub mod vhost;
pub mod virtio;
pub mod virtio_pci;
