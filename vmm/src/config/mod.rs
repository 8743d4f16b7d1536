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

/// A further port as the command line (`--port '{ backend = "rust", pcap-in = "b.pcap" }'`)
/// and a case file (`[[port]]`) describe it: port 0 is the run's own flags; each of these
/// adds the next virtio-net function.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PortSpec {
    /// Who serves its queues (default: rust).
    #[serde(default)]
    pub backend: BackendKind,
    /// The TAP for rust-tap, vhost-kernel, or a vhost-user backend's interface.
    pub tap: Option<String>,
    /// A vhost-user backend's socket.
    pub socket: Option<PathBuf>,
    /// Its input capture.
    pub pcap_in: Option<PathBuf>,
    /// Where what the guest sends on it goes.
    pub pcap_out: Option<PathBuf>,
    /// Loop what the guest sends on it back to it.
    #[serde(default)]
    pub loopback: bool,
    /// The device (the same keys as `vlab run`'s device flags).
    #[serde(default)]
    pub device: DeviceArgs,
}

impl PortSpec {
    /// Parses `--port`'s value: a TOML inline table, braces optional.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let body = t
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(t);
        // An inline table's keys, one per line, parse as a document.
        let doc = format!("port = {{ {body} }}");
        #[derive(serde::Deserialize)]
        struct Wrap {
            port: PortSpec,
        }
        toml::from_str::<Wrap>(&doc)
            .map(|w| w.port)
            .map_err(|e| format!("--port {s}: {}", e.message()))
    }

    /// The port this describes.
    pub fn port(&self) -> Result<PortConfig, backend::Error> {
        let backend = match (self.backend, &self.tap) {
            // The suites' name for the rust datapath through a TAP works here too.
            (BackendKind::RustTap, None) => BackendKind::RustTap.standalone(),
            (kind, tap) => Backend::from_args(kind, tap.clone(), self.socket.clone())?,
        };
        Ok(PortConfig {
            device: self.device.clone(),
            backend,
            input: match (&self.pcap_in, self.loopback) {
                (Some(p), _) => Input::Pcap(p.clone()),
                (None, true) => Input::Loopback,
                (None, false) => Input::None,
            },
            output: match &self.pcap_out {
                Some(p) => Output::Pcap(p.clone()),
                None => Output::Discard,
            },
        })
    }
}
