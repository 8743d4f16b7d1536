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
use std::os::unix::fs::{FileExt, OpenOptionsExt};
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
/// vhost-net, another process). The sysfs files stay open: each read at offset 0 makes the
/// kernel print the counter anew, a few microseconds instead of an open and a close.
#[derive(Clone, Debug)]
pub struct TapCounters {
    name: String,
    files: Arc<[(String, File); 4]>,
}

/// The counters [`TapCounters`] reads, in the order of its files.
const COUNTERS: [&str; 4] = ["tx_packets", "rx_packets", "tx_dropped", "rx_dropped"];

impl TapCounters {
    pub fn new(name: &str) -> Result<Self, Error> {
        let open = |counter: &str| {
            let path = format!("/sys/class/net/{name}/statistics/{counter}");
            File::open(&path)
                .map(|f| (path.clone(), f))
                .map_err(|source| Error::Counter {
                    name: name.to_string(),
                    counter: path,
                    source,
                })
        };
        let [a, b, c, d] = COUNTERS;
        Ok(Self {
            name: name.to_string(),
            files: Arc::new([open(a)?, open(b)?, open(c)?, open(d)?]),
        })
    }

    fn read(&self, which: usize) -> Result<u64, Error> {
        let (path, file) = &self.files[which];
        let err = |source| Error::Counter {
            name: self.name.clone(),
            counter: path.clone(),
            source,
        };
        let mut buf = [0u8; 32];
        let n = file.read_at(&mut buf, 0).map_err(err)?;
        let text = String::from_utf8_lossy(&buf[..n]);
        text.trim().parse().map_err(|_| {
            err(std::io::Error::other(format!(
                "'{}' is not a number",
                text.trim()
            )))
        })
    }

    /// Frames the interface handed to the descriptor's reader (the device side's input).
    pub fn read_by_device(&self) -> Result<u64, Error> {
        self.read(0)
    }

    /// Frames the descriptor's writer put into the interface (the device side's output).
    pub fn written_by_device(&self) -> Result<u64, Error> {
        self.read(1)
    }

    /// Frames the kernel dropped on their way to the descriptor's reader (its queue full).
    pub fn dropped_towards_device(&self) -> Result<u64, Error> {
        self.read(2)
    }

    /// Frames the kernel dropped on their way from the descriptor's writer.
    pub fn dropped_from_device(&self) -> Result<u64, Error> {
        self.read(3)
    }
}

/// Frames the harness's capture may have queued unread: the device side writes no more
/// than this ahead of it, so the capture socket's buffer (sized by
/// [`PacketSocket::capture`]'s caller for this many frames and more) never overflows.
pub const CAPTURE_WINDOW: u64 = 512;

/// How traffic through a TAP is going, shared by the harness (which injects and captures on
/// the interface) and a TAP source and sink of ours (which work the descriptor): the source
/// knows when its input has ended; the sink writes no further than [`CAPTURE_WINDOW`]
/// frames ahead of the capture.
#[derive(Debug, Default)]
pub struct TapFlow {
    /// Frames written into the interface so far.
    pub injected: AtomicU64,
    /// Frames read by the device side so far.
    pub read: AtomicU64,
    /// Set when every input frame is injected.
    pub done: AtomicBool,
    /// Frames the capture has taken off its socket so far.
    pub captured: AtomicU64,
    /// Set while the capture runs; a sink waits for it only then.
    pub capturing: AtomicBool,
}

impl TapFlow {
    /// Frames injected but not yet read: the injector keeps this below the interface's
    /// queue so the kernel drops none.
    pub fn in_flight(&self) -> u64 {
        self.injected.load(Ordering::Acquire) - self.read.load(Ordering::Acquire)
    }

    /// Waits until a sink that has written `written` frames may write one more: while the
    /// capture runs, it is at most [`CAPTURE_WINDOW`] frames behind.
    fn wait_for_capture(&self, written: u64) {
        while self.capturing.load(Ordering::Acquire)
            && written.saturating_sub(self.captured.load(Ordering::Acquire)) >= CAPTURE_WINDOW
        {
            std::thread::sleep(std::time::Duration::from_micros(20));
        }
    }
}

/// Frames written into the TAP's interface, read from its descriptor.
pub struct TapSource {
    file: File,
    hdr_len: usize,
    buf: Vec<u8>,
    len: Option<usize>,
    flow: Option<Arc<TapFlow>>,
}

impl TapSource {
    /// With `flow`, the source ends when every injected frame was read; without, it never
    /// ends (live traffic).
    pub fn new(tap: &Tap, hdr_len: usize, flow: Option<Arc<TapFlow>>) -> std::io::Result<Self> {
        Ok(Self {
            file: tap.try_clone()?,
            hdr_len,
            buf: vec![0; 65_536 + hdr_len],
            len: None,
            flow,
        })
    }
}

impl Source for TapSource {
    fn peek(&mut self) -> Peek<'_> {
        if self.len.is_none() {
            match self.file.read(&mut self.buf) {
                Ok(n) if n >= self.hdr_len => {
                    self.len = Some(n);
                    if let Some(i) = &self.flow {
                        i.read.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Ok(_) | Err(_) => {
                    // Nothing now (EAGAIN), or a short read: no frame.
                    return match &self.flow {
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
    flow: Option<Arc<TapFlow>>,
}

impl TapSink {
    /// With `flow`, the sink keeps within [`CAPTURE_WINDOW`] frames of the harness's
    /// capture: nothing on the interface holds a frame back for a slow reader, so without
    /// that pacing a packet socket's buffer would overflow and the kernel drop frames.
    pub fn new(tap: &Tap, hdr_len: usize, flow: Option<Arc<TapFlow>>) -> std::io::Result<Self> {
        Ok(Self {
            file: tap.try_clone()?,
            hdr_len,
            buf: Vec::with_capacity(65_536 + hdr_len),
            frames: 0,
            flow,
        })
    }
}

impl Sink for TapSink {
    fn put(&mut self, frame: &[u8]) -> Result<(), SinkError> {
        if let Some(flow) = &self.flow {
            flow.wait_for_capture(self.frames);
        }
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
    /// Frames the kernel dropped because the receive buffer was full, so far.
    drops: u64,
}

impl PacketSocket {
    fn err(&self, what: &'static str, source: std::io::Error) -> Error {
        Error::Socket {
            name: self.name.clone(),
            what,
            source,
        }
    }

    fn set_option<T>(
        &self,
        level: libc::c_int,
        opt: libc::c_int,
        what: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        // SAFETY: every option set here reads a value of type `T` of the size passed, and
        // `v` is valid for the call.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                opt,
                (v as *const T).cast(),
                std::mem::size_of::<T>() as u32,
            )
        };
        last_error(r).map_err(|e| self.err(what, e))
    }

    /// A socket that receives nothing (protocol 0) and sends on interface `name`: what the
    /// harness injects with. (One bound to every protocol would also queue a copy of each
    /// frame on the interface, for nobody.)
    pub fn injector(name: &str) -> Result<Self, Error> {
        Self::open(name)
    }

    /// A socket that captures what comes into interface `name` (what the TAP's descriptor
    /// writes) and not what goes out of it (what the harness injects), with a receive
    /// buffer of at least `rcvbuf` bytes. It is bound before it receives anything, so it
    /// sees only this interface's frames.
    pub fn capture(name: &str, rcvbuf: usize) -> Result<Self, Error> {
        let s = Self::open(name)?;
        let one: libc::c_int = 1;
        s.set_option(
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            "PACKET_IGNORE_OUTGOING",
            &one,
        )?;
        // The kernel takes VLAN tags off received frames into metadata: ask for it, to put
        // them back (as libpcap does).
        s.set_option(
            libc::SOL_PACKET,
            libc::PACKET_AUXDATA,
            "PACKET_AUXDATA",
            &one,
        )?;
        // Past net.core.rmem_max: needs CAP_NET_ADMIN, which creating a TAP needed too.
        // Without it, the most rmem_max allows.
        let size = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX / 2);
        if s.set_option(
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            "SO_RCVBUFFORCE",
            &size,
        )
        .is_err()
        {
            s.set_option(libc::SOL_SOCKET, libc::SO_RCVBUF, "SO_RCVBUF", &size)?;
        }
        // A receive timeout, so a capture loop can look at its stop flag.
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 20_000,
        };
        s.set_option(libc::SOL_SOCKET, libc::SO_RCVTIMEO, "SO_RCVTIMEO", &tv)?;
        s.bind(libc::ETH_P_ALL as u16)?;
        Ok(s)
    }

    /// A packet socket of protocol 0 (it receives nothing until bound to another), bound to
    /// interface `name`.
    fn open(name: &str) -> Result<Self, Error> {
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
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        last_error(fd).map_err(|e| err("socket", e))?;
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let s = Self {
            fd,
            ifindex,
            name: name.to_string(),
            drops: 0,
        };
        s.bind(0)?;
        Ok(s)
    }

    /// Binds the socket to its interface and protocol `proto` (host order).
    fn bind(&self, proto: u16) -> Result<(), Error> {
        // SAFETY: an all-zero sockaddr_ll is valid; the fields set are plain integers.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = proto.to_be();
        sa.sll_ifindex = self.ifindex;
        // SAFETY: `sa` is a sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        last_error(r).map_err(|e| self.err("bind", e))
    }

    /// Frames the kernel has dropped since the socket was bound because its receive buffer
    /// was full.
    pub fn drops(&mut self) -> Result<u64, Error> {
        // SAFETY: an all-zero tpacket_stats is valid to be filled in.
        let mut st: libc::tpacket_stats = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: PACKET_STATISTICS fills a tpacket_stats of at most `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        last_error(r).map_err(|e| self.err("PACKET_STATISTICS", e))?;
        // Reading the statistics resets them: keep the sum.
        self.drops += u64::from(st.tp_drops);
        Ok(self.drops)
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
