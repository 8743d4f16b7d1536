//! The kernel's vhost-net (`/dev/vhost-net`) with a TAP as its socket.
//!
//! vhost-net copies between the guest's rings and the TAP's queue; the TAP keeps a
//! virtio-net header of the size the guest negotiated in front of each frame
//! (TUNSETVNETHDRSZ), so the guest's own header passes through untouched and vhost-net
//! adds none (VHOST_NET_F_VIRTIO_NET_HDR stays off, as QEMU leaves it with a TAP that takes
//! headers).

use std::sync::Arc;

use vhost::net::VhostNet;
use vhost::vhost_kern::net::Net;

use super::{Error, Peer, DATA_FEATURES};
use crate::net::{features as net_features, hdr_len};
use crate::tap::Tap;
use crate::virtio::Memory;

/// A vhost-net instance and the TAP it moves frames to and from.
pub struct KernelNet {
    net: Net<Arc<Memory>>,
    tap: Arc<Tap>,
}

impl KernelNet {
    /// Opens `/dev/vhost-net` for guest memory `mem`.
    pub fn open(mem: Arc<Memory>, tap: Arc<Tap>) -> Result<Self, Error> {
        let net = Net::new(mem).map_err(|source| Error::Step {
            backend: Self::NAME,
            step: "opening /dev/vhost-net",
            source,
        })?;
        Ok(Self { net, tap })
    }

    fn set_backend(&self, index: usize, tap: bool) -> Result<(), Error> {
        let file = tap.then(|| self.tap.file());
        self.net
            .set_backend(index, file)
            .map_err(|source| Error::Step {
                backend: Self::NAME,
                step: "VHOST_NET_SET_BACKEND",
                source,
            })
    }
}

impl Peer for KernelNet {
    const NAME: &'static str = "vhost-kernel";
    type Backend = Net<Arc<Memory>>;
    const RINGS_BY_VIRTUAL_ADDRESS: bool = false;

    fn backend(&self) -> &Self::Backend {
        &self.net
    }

    /// Bit 27 is VHOST_NET_F_VIRTIO_NET_HDR to vhost-net, not ANY_LAYOUT; vhost-net gathers
    /// and scatters through iovecs and takes any layout.
    fn data_features(&self, raw: u64) -> u64 {
        (raw & DATA_FEATURES & !net_features::ANY_LAYOUT) | net_features::ANY_LAYOUT
    }

    fn backend_features(&self, negotiated: u64) -> u64 {
        negotiated & DATA_FEATURES & !net_features::ANY_LAYOUT
    }

    fn prepare(&mut self, negotiated: u64) -> Result<(), Error> {
        self.tap
            .set_hdr_len(hdr_len(negotiated))
            .map_err(|e| Error::Other {
                backend: Self::NAME,
                why: e.to_string(),
            })
    }

    fn attach(&mut self, index: usize) -> Result<(), Error> {
        self.set_backend(index, true)
    }

    fn detach(&mut self, index: usize) -> Result<(), Error> {
        self.set_backend(index, false)
    }
}
