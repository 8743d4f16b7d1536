//! What a run is asked to do: the machine, the guest application, and per port the device,
//! its backend and its endpoints.
//!
//! [`RunConfig`] holds a list of [`PortConfig`]s: one per virtio-net function the guest
//! gets, in PCI slot order. The command line and case files describe one port today.

pub mod args;
pub mod backend;
pub mod path;

use std::path::PathBuf;
use std::time::Duration;

pub use pmd::testpmd::Mode;

pub use self::args::{DeviceArgs, GuestArgs, Transport};
pub use self::backend::{Backend, BackendKind};
pub use self::path::RingPath;

/// Which machine runs the guest code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineKind {
    /// The PVH guest image on a KVM vCPU.
    Kvm,
    /// The `pmd` crate on a host thread, no KVM.
    InProcess,
}

impl MachineKind {
    pub fn name(self) -> &'static str {
        match self {
            MachineKind::Kvm => "kvm",
            MachineKind::InProcess => "inprocess",
        }
    }
}

/// Where frames for the guest come from.
#[derive(Clone, Debug, Default)]
pub enum Input {
    Pcap(PathBuf),
    /// `frames` generated UDP frames of `size` bytes (benchmarks).
    Generator {
        frames: u64,
        size: usize,
    },
    /// Whatever the guest transmits comes back to it.
    Loopback,
    #[default]
    None,
}

/// Where the frames the guest transmits go.
#[derive(Clone, Debug, Default)]
pub enum Output {
    Pcap(PathBuf),
    #[default]
    Discard,
}

/// One virtio-net function: the device as the host presents it, who serves its data
/// queues, and where its frames enter and leave.
#[derive(Clone, Debug, Default)]
pub struct PortConfig {
    pub device: DeviceArgs,
    pub backend: Backend,
    pub input: Input,
    pub output: Output,
}

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub machine: MachineKind,
    /// What the guest application does with frames.
    pub mode: Mode,
    /// The guest application's port setup.
    pub guest: GuestArgs,
    /// The guest's virtio-net functions, in slot order (at least one).
    pub ports: Vec<PortConfig>,
    /// Guest image for the KVM machine; `None` picks the built `pmd-guest`.
    pub kernel: Option<PathBuf>,
    /// The KVM device node.
    pub kvm_device: PathBuf,
    /// Guest RAM in bytes.
    pub ram: u64,
    /// Watchdog: a run that takes longer fails.
    pub timeout: Duration,
    /// Echo the guest's serial output to stdout as it arrives.
    pub echo_serial: bool,
    /// CPU for the guest's thread (vCPU or in-process driver); `None`: the scheduler's.
    pub guest_cpu: Option<usize>,
    /// CPU for the backend's datapath thread.
    pub datapath_cpu: Option<usize>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            machine: MachineKind::Kvm,
            mode: Mode::Io,
            guest: GuestArgs::default(),
            ports: vec![PortConfig::default()],
            kernel: None,
            kvm_device: PathBuf::from("/dev/kvm"),
            ram: 128 << 20,
            timeout: Duration::from_secs(60),
            echo_serial: false,
            guest_cpu: None,
            datapath_cpu: None,
        }
    }
}

impl RunConfig {
    /// A run of one port.
    pub fn one_port(port: PortConfig) -> Self {
        Self {
            ports: vec![port],
            ..Self::default()
        }
    }

    /// The first port (the only one of every run the command line describes).
    pub fn port(&self) -> &PortConfig {
        &self.ports[0]
    }

    pub fn port_mut(&mut self) -> &mut PortConfig {
        &mut self.ports[0]
    }

    /// Whether the KVM machine needs an interrupt controller: only link-state interrupts
    /// use one, and it costs milliseconds to create.
    pub fn needs_interrupts(&self) -> bool {
        self.guest.wants_interrupts() || self.ports.iter().any(|p| p.device.link_flap.is_some())
    }
}
