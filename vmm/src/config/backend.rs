//! Who serves a port's data queues, and where its frames enter and leave: one type for the
//! command line (`--backend`, `--tap`, `--socket`), the case files (`[out-of-scope]`), the
//! suites (`--backends`, verdict names), bundles and the run itself.
//!
//! [`BackendKind`] names a backend set-up; [`Backend`] is one with what it needs (the TAP's
//! name, the socket).

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("--backend vhost-kernel works through a TAP; --tap NAME names it")]
    KernelNeedsTap,
    #[error("--socket is for --backend vhost-user, not {0}")]
    SocketWithout(BackendKind),
}

/// A backend set-up, by the name the suites, reports and case files use.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    ValueEnum,
    Deserialize,
    Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// The pure-Rust userspace backend: a datapath thread in vlab, between the run's
    /// endpoints (with --tap: between the two ends of a TAP).
    #[default]
    Rust,
    /// The rust datapath through a TAP: the harness injects and captures on the interface.
    RustTap,
    /// The kernel's vhost-net (/dev/vhost-net) on a TAP.
    VhostKernel,
    /// A vhost-user backend on a UNIX socket (--socket), or vlab's own on a thread.
    VhostUser,
}

impl BackendKind {
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Rust,
        BackendKind::RustTap,
        BackendKind::VhostKernel,
        BackendKind::VhostUser,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Rust => "rust",
            BackendKind::RustTap => "rust-tap",
            BackendKind::VhostKernel => "vhost-kernel",
            BackendKind::VhostUser => "vhost-user",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                format!("unknown backend '{s}' (known: rust, rust-tap, vhost-kernel, vhost-user)")
            })
    }

    /// Why this machine cannot run the backend, if it cannot.
    pub fn unavailable(self) -> Option<String> {
        let open = |path: &str| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .err()
                .map(|e| format!("{path}: {e}"))
        };
        match self {
            BackendKind::Rust | BackendKind::VhostUser => None,
            BackendKind::RustTap => open("/dev/net/tun"),
            BackendKind::VhostKernel => open("/dev/vhost-net").or_else(|| open("/dev/net/tun")),
        }
    }

    /// The backend with endpoints of its own, as the suites run it: a TAP of a fresh name,
    /// vlab's own vhost-user backend.
    pub fn standalone(self) -> Backend {
        match self {
            BackendKind::Rust => Backend::Rust,
            BackendKind::RustTap => Backend::RustTap {
                tap: unique_tap_name(),
            },
            BackendKind::VhostKernel => Backend::VhostKernel {
                tap: unique_tap_name(),
            },
            BackendKind::VhostUser => Backend::VhostUser {
                socket: None,
                tap: None,
            },
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A port's backend, with what it needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// Our datapath between the run's endpoints (pcap, generator, loopback).
    #[default]
    Rust,
    /// Our datapath between the two ends of TAP `tap` (created, or a persistent one).
    RustTap { tap: String },
    /// vhost-net on TAP `tap`.
    VhostKernel { tap: String },
    /// A vhost-user backend process on `socket`, working interface `tap` if given; without a
    /// socket, vlab's own backend on a thread with the run's endpoints.
    VhostUser {
        socket: Option<PathBuf>,
        tap: Option<String>,
    },
}

impl Backend {
    /// From the command line's `--backend KIND [--tap NAME] [--socket PATH]`.
    pub fn from_args(
        kind: BackendKind,
        tap: Option<String>,
        socket: Option<PathBuf>,
    ) -> Result<Self, Error> {
        if socket.is_some() && kind != BackendKind::VhostUser {
            return Err(Error::SocketWithout(kind));
        }
        Ok(match (kind, tap) {
            (BackendKind::Rust, None) => Backend::Rust,
            (BackendKind::Rust | BackendKind::RustTap, Some(tap)) => Backend::RustTap { tap },
            (BackendKind::RustTap, None) => Backend::RustTap {
                tap: unique_tap_name(),
            },
            (BackendKind::VhostKernel, Some(tap)) => Backend::VhostKernel { tap },
            (BackendKind::VhostKernel, None) => return Err(Error::KernelNeedsTap),
            (BackendKind::VhostUser, tap) => Backend::VhostUser { socket, tap },
        })
    }

    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Rust => BackendKind::Rust,
            Backend::RustTap { .. } => BackendKind::RustTap,
            Backend::VhostKernel { .. } => BackendKind::VhostKernel,
            Backend::VhostUser { .. } => BackendKind::VhostUser,
        }
    }

    /// The TAP the harness injects into and captures on, if any.
    pub fn tap(&self) -> Option<&str> {
        match self {
            Backend::Rust => None,
            Backend::RustTap { tap } | Backend::VhostKernel { tap } => Some(tap),
            Backend::VhostUser { tap, .. } => tap.as_deref(),
        }
    }

    /// Whether vlab owns the datapath or its capture (false: an external vhost-user
    /// backend serving its own endpoints, whose frames only the guest sees).
    pub fn observed(&self) -> bool {
        !matches!(
            self,
            Backend::VhostUser {
                socket: Some(_),
                tap: None
            }
        )
    }
}

/// A TAP name no other run of this process or another uses at the same time (15 bytes at
/// most): `vl`, the process id, a counter.
pub fn unique_tap_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("vl{}x{n}", std::process::id() % 10_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_picks_one_backend() {
        let b = |k, tap: Option<&str>, sock: Option<&str>| {
            Backend::from_args(k, tap.map(Into::into), sock.map(Into::into))
        };
        assert_eq!(b(BackendKind::Rust, None, None), Ok(Backend::Rust));
        assert_eq!(
            b(BackendKind::Rust, Some("t0"), None),
            Ok(Backend::RustTap { tap: "t0".into() })
        );
        assert_eq!(
            b(BackendKind::VhostKernel, None, None),
            Err(Error::KernelNeedsTap)
        );
        assert_eq!(
            b(BackendKind::Rust, None, Some("/s"))
                .unwrap_err()
                .to_string(),
            "--socket is for --backend vhost-user, not rust"
        );
        assert_eq!(
            b(BackendKind::VhostUser, Some("t1"), Some("/s")),
            Ok(Backend::VhostUser {
                socket: Some("/s".into()),
                tap: Some("t1".into())
            })
        );
        assert!(b(BackendKind::RustTap, None, None)
            .unwrap()
            .tap()
            .unwrap()
            .starts_with("vl"));
        for k in BackendKind::ALL {
            assert_eq!(k.standalone().kind(), k);
            assert_eq!(BackendKind::parse(k.name()), Ok(k));
        }
        assert_eq!(
            BackendKind::parse("dpdk").unwrap_err(),
            "unknown backend 'dpdk' (known: rust, rust-tap, vhost-kernel, vhost-user)"
        );
    }
}
