//! The frontend side of vhost-user: a backend process on a UNIX socket serves the queues
//! from guest memory it maps from the file descriptors we send (the guest RAM is a memfd).
//!
//! A backend that offers VHOST_USER_PROTOCOL_F_MQ says how many queues it has
//! (GET_QUEUE_NUM): the device then has no more queue pairs than it serves. One without
//! it serves one pair.

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};

use super::{Error, Peer, DATA_FEATURES};

/// VHOST_USER_F_PROTOCOL_FEATURES: the backend speaks the protocol-feature extension; rings
/// then start disabled until VHOST_USER_SET_VRING_ENABLE.
const PROTOCOL_FEATURES: u64 = 1 << 30;
/// The queues the frontend may address before the backend says how many it has: one
/// queue pair's (the device keeps its control queue).
const DATA_QUEUES: u64 = 2;

/// A connection to a vhost-user backend.
pub struct UserNet {
    frontend: Frontend,
    protocol: bool,
    /// Queue pairs the backend serves.
    pairs: u16,
}

impl UserNet {
    /// Connects to the backend listening on `path` and agrees on protocol features.
    pub fn connect(path: &Path) -> Result<Self, Error> {
        if !path.exists() {
            return Err(Error::Other {
                backend: Self::NAME,
                why: format!("connecting to {}: no such socket", path.display()),
            });
        }
        let mut frontend = Frontend::connect(path, DATA_QUEUES).map_err(|source| Error::Step {
            backend: Self::NAME,
            step: "connecting",
            source,
        })?;
        let step = |step| {
            move |source| Error::Step {
                backend: Self::NAME,
                step,
                source,
            }
        };
        let raw = frontend.get_features().map_err(step("GET_FEATURES"))?;
        let protocol = raw & PROTOCOL_FEATURES != 0;
        let mut pairs = 1;
        if protocol {
            // Only what we use: replies to every request, so a failing step is seen at
            // that step and not one later; several queues.
            let offered = frontend
                .get_protocol_features()
                .map_err(step("GET_PROTOCOL_FEATURES"))?;
            let wanted =
                offered & (VhostUserProtocolFeatures::REPLY_ACK | VhostUserProtocolFeatures::MQ);
            frontend
                .set_protocol_features(wanted)
                .map_err(step("SET_PROTOCOL_FEATURES"))?;
            if wanted.contains(VhostUserProtocolFeatures::MQ) {
                let queues = frontend.get_queue_num().map_err(step("GET_QUEUE_NUM"))?;
                pairs = u16::try_from(queues / 2).unwrap_or(u16::MAX).max(1);
            }
        }
        Ok(Self {
            frontend,
            protocol,
            pairs,
        })
    }

    /// Queue pairs the backend serves (1 without VHOST_USER_PROTOCOL_F_MQ).
    pub fn pairs(&self) -> u16 {
        self.pairs
    }

    fn enable(&mut self, index: usize, on: bool) -> Result<(), Error> {
        if !self.protocol {
            // Without the extension a ring runs as soon as it has a kick eventfd.
            return Ok(());
        }
        self.frontend
            .set_vring_enable(index, on)
            .map_err(|source| Error::Step {
                backend: Self::NAME,
                step: "SET_VRING_ENABLE",
                source,
            })
    }
}

use vhost::VhostBackend;

impl Peer for UserNet {
    const NAME: &'static str = "vhost-user";
    type Backend = Frontend;
    const RINGS_BY_VIRTUAL_ADDRESS: bool = true;

    fn backend(&self) -> &Self::Backend {
        &self.frontend
    }

    fn max_pairs(&self) -> u16 {
        self.pairs
    }

    fn backend_features(&self, negotiated: u64) -> u64 {
        let protocol = if self.protocol { PROTOCOL_FEATURES } else { 0 };
        (negotiated & DATA_FEATURES) | protocol
    }

    fn prepare(&mut self, _negotiated: u64) -> Result<(), Error> {
        Ok(())
    }

    fn attach(&mut self, index: usize) -> Result<(), Error> {
        self.enable(index, true)
    }

    fn detach(&mut self, index: usize) -> Result<(), Error> {
        self.enable(index, false)
    }

    /// SET_VRING_ENABLE and the other set-up requests ask for no reply (the `vhost` crate
    /// waits for REPLY_ACK's acks only on requests flagged NEED_REPLY): a GET_FEATURES,
    /// answered after them, shows they were handled.
    fn settle(&mut self) -> Result<(), Error> {
        self.frontend
            .get_features()
            .map(drop)
            .map_err(|source| Error::Step {
                backend: Self::NAME,
                step: "GET_FEATURES (after starting the rings)",
                source,
            })
    }

    fn connection(&self) -> Option<RawFd> {
        Some(self.frontend.as_raw_fd())
    }
}
