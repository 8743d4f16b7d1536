//! TAP devices: the kernel's virtual Ethernet interfaces with a file descriptor on the
//! device side. The rust backend reads and writes frames through one ([`TapSource`],
//! [`TapSink`]); vhost-net is handed its descriptor; the harness injects and captures on the
//! interface side with a packet socket ([`PacketSocket`]), as Firecracker's test utilities do.
//!
//! Frames through the descriptor carry a virtio-net header (IFF_VNET_HDR) of the size the
//! guest negotiated, so vhost-net can pass the guest's own header through; no offloads are
//! enabled, as the guest negotiates none.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::endpoint::{Peek, Sink, SinkError, Source};

const IFNAMSIZ: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("TAP name '{0}' is empty or longer than 15 bytes")]
    BadName(String),
    #[error("opening /dev/net/tun: {0}")]
    OpenTun(#[source] std::io::Error),
    #[error("TAP {name} is busy: another process has it open (and it is not multi-queue)")]
    Busy { name: String },
    #[error("TAP {name}: {what}: {source}")]
    Ioctl {
        name: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("TAP {name}: reading {counter}: {source}")]
    Counter {
        name: String,
        counter: String,
        #[source]
        source: std::io::Error,
    },
    #[error("packet socket on {name}: {what}: {source}")]
    Socket {
        name: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// `struct ifreq` with the members used here.
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> Self {
        let mut r = IfReq {
            name: [0; IFNAMSIZ],
            data: [0; 24],
        };
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        r
    }

    fn set_short(&mut self, v: i16) {
        self.data[..2].copy_from_slice(&v.to_ne_bytes());
    }

    fn set_int(&mut self, v: i32) {
        self.data[..4].copy_from_slice(&v.to_ne_bytes());
    }

    fn short(&self) -> i16 {
        i16::from_ne_bytes([self.data[0], self.data[1]])
    }
}

fn last_error(r: libc::c_int) -> std::io::Result<()> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A TAP interface and its device-side descriptor. The interface goes away with the last
/// descriptor (it is not made persistent), so a crashed run leaves no interface behind.
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Creates TAP `name` (or attaches to a persistent one of that name), with a virtio-net
    /// header of `hdr_len` bytes, no offloads, the MTU for `max_frame`-byte frames, IPv6 off
    /// (so the kernel sends nothing of its own on it) and the link up.
    pub fn open(name: &str, hdr_len: usize, max_frame: usize) -> Result<Self, Error> {
        if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
            return Err(Error::BadName(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(Error::OpenTun)?;
        let mut req = IfReq::new(name);
        req.set_short((libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16);
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `IfReq` lays out; the
        // descriptor is the tun device just opened.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if let Err(e) = last_error(r) {
            return Err(if e.raw_os_error() == Some(libc::EBUSY) {
                Error::Busy {
                    name: name.to_string(),
                }
            } else {
                Error::Ioctl {
                    name: name.to_string(),
                    what: "TUNSETIFF",
                    source: e,
                }
            });
        }
        let tap = Self {
            file,
            name: name.to_string(),
        };
        tap.set_hdr_len(hdr_len)?;
        // SAFETY: TUNSETOFFLOAD takes its argument by value; the descriptor is our TAP.
        let r = unsafe {
            libc::ioctl(
                tap.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                0 as libc::c_ulong,
            )
        };
        last_error(r).map_err(|e| tap.ioctl_err("TUNSETOFFLOAD", e))?;
        // IPv6 autoconfiguration would put router solicitations on the wire: turn it off
        // before the link comes up. (Absent without IPv6 support: nothing to do.)
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
        tap.configure_link(max_frame.saturating_sub(14))?;
        Ok(tap)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn ioctl_err(&self, what: &'static str, source: std::io::Error) -> Error {
        Error::Ioctl {
            name: self.name.clone(),
            what,
            source,
        }
    }

    /// Sets the virtio-net header size on the descriptor (TUNSETVNETHDRSZ).
    pub fn set_hdr_len(&self, hdr_len: usize) -> Result<(), Error> {
        let len = hdr_len as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, valid for the call.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &len) };
        last_error(r).map_err(|e| self.ioctl_err("TUNSETVNETHDRSZ", e))
    }

    /// MTU and IFF_UP, through an ordinary socket's interface ioctls.
    fn configure_link(&self, mtu: usize) -> Result<(), Error> {
        // SAFETY: plain socket(2); the descriptor is owned right below.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        last_error(s).map_err(|e| self.ioctl_err("socket for interface ioctls", e))?;
        // SAFETY: `s` is a fresh descriptor nobody else owns.
        let s = unsafe { OwnedFd::from_raw_fd(s) };
        let mut req = IfReq::new(&self.name);
        req.set_int(mtu.max(68) as i32);
        // SAFETY: SIOCSIFMTU reads a `struct ifreq` with ifr_mtu.
        let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFMTU, &req) };
        last_error(r).map_err(|e| self.ioctl_err("SIOCSIFMTU", e))?;
        let mut req = IfReq::new(&self.name);
        // SAFETY: SIOCGIFFLAGS fills ifr_flags of the `struct ifreq`.
        let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
        last_error(r).map_err(|e| self.ioctl_err("SIOCGIFFLAGS", e))?;
        let flags = req.short() | libc::IFF_UP as i16;
        req.set_short(flags);
        // SAFETY: SIOCSIFFLAGS reads ifr_flags of the `struct ifreq`.
        let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
        last_error(r).map_err(|e| self.ioctl_err("SIOCSIFFLAGS", e))
    }

    /// Another descriptor for the same TAP queue.
    pub fn try_clone(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }

    pub fn file(&self) -> &File {
        &self.file
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Interface counters of a TAP, as the kernel keeps them: the harness paces its injection
/// and completes its capture by them, whoever works the TAP's descriptor (our datapath,
/// vhost-net, another process).
#[derive(Clone, Debug)]
pub struct TapCounters {
    name: String,
}

impl TapCounters {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
        }
    }

    fn read(&self, counter: &str) -> Result<u64, Error> {
        let path = format!("/sys/class/net/{}/statistics/{counter}", self.name);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Counter {
            name: self.name.clone(),
            counter: path.clone(),
            source,
        })?;
        text.trim().parse().map_err(|_| Error::Counter {
            name: self.name.clone(),
            counter: path,
            source: std::io::Error::other(format!("'{}' is not a number", text.trim())),
        })
    }

    /// Frames the interface handed to the descriptor's reader (the device side's input).
    pub fn read_by_device(&self) -> Result<u64, Error> {
        self.read("tx_packets")
    }

    /// Frames the descriptor's writer put into the interface (the device side's output).
    pub fn written_by_device(&self) -> Result<u64, Error> {
        self.read("rx_packets")
    }
}

/// How far the harness's injection has got, for a TAP source to know when its input ended.
#[derive(Debug, Default)]
pub struct Injection {
    /// Frames written into the interface so far.
    pub injected: AtomicU64,
    /// Frames read by the device side so far.
    pub read: AtomicU64,
    /// Set when every input frame is injected.
    pub done: AtomicBool,
}

impl Injection {
    /// Frames injected but not yet read: the injector keeps this below the interface's
    /// queue so the kernel drops none.
    pub fn in_flight(&self) -> u64 {
        self.injected.load(Ordering::Acquire) - self.read.load(Ordering::Acquire)
    }
}

/// Frames written into the TAP's interface, read from its descriptor.
pub struct TapSource {
    file: File,
    hdr_len: usize,
    buf: Vec<u8>,
    len: Option<usize>,
    injection: Option<Arc<Injection>>,
}

impl TapSource {
    /// With `injection`, the source ends when every injected frame was read; without, it
    /// never ends (live traffic).
    pub fn new(
        tap: &Tap,
        hdr_len: usize,
        injection: Option<Arc<Injection>>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            file: tap.try_clone()?,
            hdr_len,
            buf: vec![0; 65_536 + hdr_len],
            len: None,
            injection,
        })
    }
}

impl Source for TapSource {
    fn peek(&mut self) -> Peek<'_> {
        if self.len.is_none() {
            match self.file.read(&mut self.buf) {
                Ok(n) if n >= self.hdr_len => {
                    self.len = Some(n);
                    if let Some(i) = &self.injection {
                        i.read.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Ok(_) | Err(_) => {
                    // Nothing now (EAGAIN), or a short read: no frame.
                    return match &self.injection {
                        Some(i) if i.done.load(Ordering::Acquire) && i.in_flight() == 0 => {
                            Peek::Ended
                        }
                        _ => Peek::Idle,
                    };
                }
            }
        }
        match self.len {
            Some(n) => Peek::Frame(&self.buf[self.hdr_len..n]),
            None => Peek::Idle,
        }
    }

    fn consume(&mut self) {
        self.len = None;
    }
}

/// Frames written to the TAP's descriptor, behind an empty virtio-net header: they come out
/// of the interface.
pub struct TapSink {
    file: File,
    hdr_len: usize,
    buf: Vec<u8>,
    frames: u64,
}

impl TapSink {
    pub fn new(tap: &Tap, hdr_len: usize) -> std::io::Result<Self> {
        Ok(Self {
            file: tap.try_clone()?,
            hdr_len,
            buf: Vec::with_capacity(65_536 + hdr_len),
            frames: 0,
        })
    }
}

impl Sink for TapSink {
    fn put(&mut self, frame: &[u8]) -> Result<(), SinkError> {
        self.buf.clear();
        self.buf.resize(self.hdr_len, 0);
        self.buf.extend_from_slice(frame);
        loop {
            match self.file.write(&self.buf) {
                Ok(_) => break,
                // The interface's queue is full: the kernel frees it as it goes.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => return Err(SinkError::Tap(e)),
            }
        }
        self.frames += 1;
        Ok(())
    }

    fn frames(&self) -> u64 {
        self.frames
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// The VLAN tag the kernel took off a received frame, from its PACKET_AUXDATA message.
fn vlan_from(msg: &libc::msghdr) -> Option<(u16, u16)> {
    // SAFETY: CMSG_FIRSTHDR/NXTHDR walk the control buffer recvmsg filled, within
    // msg_controllen; each header's data is read only when its type says it is auxdata.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                let aux = libc::CMSG_DATA(c)
                    .cast::<libc::tpacket_auxdata>()
                    .read_unaligned();
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                    let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                        aux.tp_vlan_tpid
                    } else {
                        0x8100
                    };
                    return Some((tpid, aux.tp_vlan_tci));
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

/// An AF_PACKET socket on an interface: what the harness injects with and captures with.
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
    name: String,
}

impl PacketSocket {
    pub fn bind(name: &str) -> Result<Self, Error> {
        let err = |what, source| Error::Socket {
            name: name.to_string(),
            what,
            source,
        };
        let c = CString::new(name).map_err(|_| Error::BadName(name.to_string()))?;
        // SAFETY: `c` is a NUL-terminated string valid for the call.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(err("no such interface", std::io::Error::last_os_error()));
        }
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2).
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        last_error(fd).map_err(|e| err("socket", e))?;
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_ll is valid; the fields set are plain integers.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = proto;
        sa.sll_ifindex = ifindex;
        // SAFETY: `sa` is a sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        last_error(r).map_err(|e| err("bind", e))?;
        // A receive timeout, so a capture loop can look at its stop flag.
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 20_000,
        };
        // SAFETY: SO_RCVTIMEO reads a timeval of the size passed.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        last_error(r).map_err(|e| err("SO_RCVTIMEO", e))?;
        // The kernel takes VLAN tags off received frames into metadata: ask for it, to put
        // them back (as libpcap does).
        let on: libc::c_int = 1;
        // SAFETY: PACKET_AUXDATA reads an int of the size passed.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_AUXDATA,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        last_error(r).map_err(|e| err("PACKET_AUXDATA", e))?;
        Ok(Self {
            fd,
            ifindex,
            name: name.to_string(),
        })
    }

    /// Sends one frame out of the interface (towards the TAP's descriptor).
    pub fn send(&self, frame: &[u8]) -> Result<(), Error> {
        // SAFETY: `frame` is valid for `frame.len()` bytes for the call.
        let r = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if r < 0 {
            return Err(Error::Socket {
                name: self.name.clone(),
                what: "send",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Receives the next frame that came in on the interface (from the TAP's descriptor),
    /// with its VLAN tag restored; our own injected frames, seen going out, are skipped.
    /// `Ok(None)` after the timeout. `buf` must have 4 bytes to spare for a tag.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>, Error> {
        loop {
            // SAFETY: all-zero sockaddr_ll, iovec, msghdr and control buffer are valid to be
            // filled in.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut control = [0u64; 8];
            let room = buf.len().saturating_sub(4);
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: room,
            };
            // SAFETY: as above.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut sa as *mut libc::sockaddr_ll).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control);
            // SAFETY: every pointer in `msg` refers to a live buffer of the length given.
            let r = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                return match e.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Ok(None),
                    std::io::ErrorKind::Interrupted => continue,
                    _ => Err(Error::Socket {
                        name: self.name.clone(),
                        what: "recv",
                        source: e,
                    }),
                };
            }
            if sa.sll_pkttype == libc::PACKET_OUTGOING || sa.sll_ifindex != self.ifindex {
                continue;
            }
            let mut len = r as usize;
            if let Some((tpid, tci)) = vlan_from(&msg) {
                if len >= 12 {
                    buf.copy_within(12..len, 16);
                    buf[12..14].copy_from_slice(&tpid.to_be_bytes());
                    buf[14..16].copy_from_slice(&tci.to_be_bytes());
                    len += 4;
                }
            }
            return Ok(Some(len));
        }
    }
}
