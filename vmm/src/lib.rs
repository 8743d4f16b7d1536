//! `vlab`: a minimal KVM VMM for testing virtio-net drivers and backends.
//!
//! A [`board::Board`] is what every machine shares: guest memory, the port and MMIO bus, the
//! serial port, the harness ports and the virtio-net PCI function with its backend. Two
//! machines run guest code on it:
//! - [`machine::kvm`]: a PVH guest image on a KVM vCPU;
//! - [`machine::inprocess`]: the same `pmd` code on a host thread, through a `Hal` that calls
//!   the board directly. No KVM, same bus, same device, same backend.
//!
//! [`run`] drives one run from a [`run::RunConfig`] to a [`run::RunReport`]; the `vlab`
//! binary is a command line on top of it.

pub mod backends;
pub mod board;
pub mod config;
pub mod machine;
pub mod run;
pub mod signals;
pub mod suites;
