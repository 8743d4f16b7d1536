//! Cases and what is made of them: the case format, the packet specs its inputs are built
//! from, `vlab test`'s suites, `vlab compare` across backends, bug bundles, and the decode
//! the snapshots use.

pub mod bundle;
pub mod case;
pub mod compare;
pub mod decode;
pub mod pcap_spec;
pub mod random_frames;
pub mod suite;
