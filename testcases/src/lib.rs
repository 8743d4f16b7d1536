//! virtio-lab's pcap-driven suites: `<suite>/<case>/case.toml` beside an optional
//! `in.pcap`, in this directory. The case format and runner live in `vmm::suites::case` (so `vlab`
//! runs cases too); this crate holds the suites, their generated inputs and the tests that
//! run them.

pub mod inputs;
pub mod malformed;

use std::path::{Path, PathBuf};

pub use vmm::suites::case::*;

/// Directory holding the suites.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}
