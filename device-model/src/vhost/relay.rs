//! A relay between a vhost-user frontend and the `vhost-user-backend` crate.
//!
//! QEMU's virtio-net resets its device at start-up, and the reset sends SET_VRING_ENABLE
//! before any SET_FEATURES (`virtio_reset` -> `virtio_net_set_features(0)` -> `peer_attach`
//! -> `vhost_set_vring_enable`, whenever the backend offers VHOST_USER_F_PROTOCOL_FEATURES).
//! The vhost crate takes SET_VRING_ENABLE only after a SET_FEATURES that acked that bit
//! (the spec: "should be sent only when VHOST_USER_F_PROTOCOL_FEATURES has been
//! negotiated") and otherwise drops the connection, and its request loop cannot be hooked.
//! So the frontend's connection goes through this relay, which passes every message on
//! unchanged (with its file descriptors) and, when SET_VRING_ENABLE comes before any
//! SET_FEATURES, first gives the crate a SET_FEATURES with just PROTOCOL_FEATURES, asking
//! no reply: the vring is then enabled as asked, and the frontend's own SET_FEATURES
//! replaces those features when the driver starts. Frontends that send SET_FEATURES first
//! (vlab, DPDK) see no difference.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use vhost::vhost_user::message::VhostUserVirtioFeatures;
use vhost::vhost_user::Listener;
use vhost_user_backend::Error;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// vhost-user's header: request, flags, payload size (u32 each, little-endian).
const HDR: usize = 12;
/// The largest payload of either side's messages (the protocol's MAX_MSG_SIZE).
const MAX_PAYLOAD: usize = 0x1000;
/// The most descriptors one message carries (the vhost crate's limit).
const MAX_FDS: usize = 32;
const SET_FEATURES: u32 = 2;
const SET_VRING_ENABLE: u32 = 18;
/// Version 1, no reply wanted.
const FLAGS_V1: u32 = 1;
/// How often a stop request is looked for.
const STOP_POLL: Duration = Duration::from_millis(10);

/// What the relay needs of the crate's `VhostUserDaemon`, whatever backend it serves.
pub(super) trait Daemon {
    /// Accepts the relay's end of the connection from `listener` and starts serving it.
    fn start(&mut self, listener: &mut Listener) -> Result<(), Error>;
    /// Waits until the connection ends.
    fn wait(&mut self) -> Result<(), Error>;
}

/// Like `VhostUserDaemon::serve` (bind `socket`, serve one connection), with the relay
/// between the frontend and the crate.
/// Setting `stop` ends the wait for a frontend, or the connection, as a frontend that went
/// away would.
pub(super) fn serve(
    daemon: &mut dyn Daemon,
    socket: &Path,
    stop: &AtomicBool,
) -> Result<(), Error> {
    let io = |e: std::io::Error| {
        Error::CreateVhostUserListener(vhost::vhost_user::Error::SocketError(e))
    };
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(io)?;
    // Polled, so that a stop request is seen while nobody connects.
    listener.set_nonblocking(true).map_err(io)?;
    let frontend = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                std::thread::sleep(STOP_POLL);
            }
            Err(e) => return Err(io(e)),
        }
    };
    frontend.set_nonblocking(false).map_err(io)?;
    // The crate accepts its side from a listener: an abstract one, which leaves no
    // file behind.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "vlab-vhost-user-relay-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(io)?;
    let inner = UnixListener::bind_addr(&addr).map_err(io)?;
    let relay_end = UnixStream::connect_addr(&addr).map_err(io)?;
    daemon.start(&mut Listener::from(inner))?;

    let mut threads = Vec::new();
    let mut spawned = spawn(&frontend, &relay_end, true).map(|t| threads.push(t));
    if spawned.is_ok() {
        spawned = spawn(&relay_end, &frontend, false).map(|t| threads.push(t));
    }
    if spawned.is_err() {
        // Without both directions nothing would ever end the connection.
        let _ = relay_end.shutdown(Shutdown::Both);
    }
    let waited = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        // A stop request ends the connection: the relay threads see their end, the crate a
        // disconnect.
        s.spawn(|| {
            while !waited.load(Ordering::Acquire) {
                if stop.load(Ordering::Acquire) {
                    let _ = frontend.shutdown(Shutdown::Both);
                    break;
                }
                std::thread::sleep(STOP_POLL);
            }
        });
        let r = daemon.wait();
        waited.store(true, Ordering::Release);
        r
    });
    // The crate's end is shut by now; make sure both relay threads see an end too.
    let _ = frontend.shutdown(Shutdown::Both);
    let _ = relay_end.shutdown(Shutdown::Both);
    for t in threads {
        let _ = t.join();
    }
    spawned.map_err(Error::StartDaemon)?;
    match result {
        // A frontend that goes away is the normal end, as in `VhostUserDaemon::serve`.
        Err(Error::HandleRequest(
            vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
        )) => Ok(()),
        r => r,
    }
}

/// A thread that forwards from `from` to `to` until either ends, then ends both.
fn spawn(
    from: &UnixStream,
    to: &UnixStream,
    to_crate: bool,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (from, to) = (from.try_clone()?, to.try_clone()?);
    std::thread::Builder::new()
        .name("vhost-user relay".into())
        .spawn(move || {
            if let Err(e) = forward(&from, &to, to_crate) {
                tracing::debug!("vhost-user relay: {e}");
            }
            // One side ended: end the other (the crate then sees a disconnect).
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        })
}

/// Passes whole messages from `from` to `to`, each with the descriptors it came with.
fn forward(mut from: &UnixStream, mut to: &UnixStream, to_crate: bool) -> std::io::Result<()> {
    let mut features_sent = false;
    let mut buf = vec![0u8; HDR + MAX_PAYLOAD];
    loop {
        let mut raw: [RawFd; MAX_FDS] = [-1; MAX_FDS];
        let mut iov = [libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: HDR,
        }];
        // SAFETY: the iovec points into `buf`, which outlives the call and takes any
        // bytes.
        let (n, nfds) = unsafe { from.recv_with_fds(&mut iov, &mut raw) }
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        // SAFETY: the kernel just gave us these descriptors: nothing else owns them.
        let fds: Vec<OwnedFd> = raw[..nfds]
            .iter()
            .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
            .collect();
        if n == 0 {
            return Ok(());
        }
        from.read_exact(&mut buf[n..HDR])?;
        let word = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let (request, size) = (word(0), word(8) as usize);
        if size > MAX_PAYLOAD {
            return Err(std::io::Error::other(format!(
                "request {request}: payload of {size} bytes"
            )));
        }
        from.read_exact(&mut buf[HDR..HDR + size])?;
        if to_crate {
            if request == SET_FEATURES {
                features_sent = true;
            } else if request == SET_VRING_ENABLE && !features_sent {
                features_sent = true;
                let mut msg = Vec::with_capacity(HDR + 8);
                for w in [SET_FEATURES, FLAGS_V1, 8] {
                    msg.extend_from_slice(&w.to_le_bytes());
                }
                let bits = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
                msg.extend_from_slice(&bits.to_le_bytes());
                to.write_all(&msg)?;
            }
        }
        let msg = &buf[..HDR + size];
        let raw: Vec<RawFd> = fds.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
        // One sendmsg, as the sender did: the descriptors travel with the header.
        let sent = to
            .send_with_fds(&[msg], &raw)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        to.write_all(&msg[sent..])?;
    }
}
