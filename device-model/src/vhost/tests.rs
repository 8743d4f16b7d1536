//! The common vhost driver against a fake backend: which features the device offers for
//! what the backend serves, and what a packed ring's set-up sends.

use std::sync::Mutex;

use vhost::{VhostUserDirtyLogRegion, VhostUserMemoryRegionBase};
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::net::{features as nf, Backend, Net, NetConfig, QueuePair};
use crate::queue::testing::{ram, PackedDriver};
use crate::virtio::{ActiveQueue, VirtioDevice};

/// What a fake backend was sent.
#[derive(Default)]
struct Sent {
    features: Option<u64>,
    bases: Vec<(usize, u16)>,
    rings: Vec<(usize, u16, u64, u64, u64)>,
}

struct FakeBackend {
    offered: u64,
    sent: Mutex<Sent>,
}

impl VhostBackend for FakeBackend {
    fn get_features(&self) -> vhost::Result<u64> {
        Ok(self.offered)
    }
    fn set_features(&self, features: u64) -> vhost::Result<()> {
        self.sent.lock().unwrap().features = Some(features);
        Ok(())
    }
    fn set_owner(&self) -> vhost::Result<()> {
        Ok(())
    }
    fn reset_owner(&self) -> vhost::Result<()> {
        Ok(())
    }
    fn set_mem_table(
        &self,
        _regions: &[VhostUserMemoryRegionInfo],
    ) -> vhost::Result<Option<Vec<VhostUserMemoryRegionBase>>> {
        Ok(None)
    }
    fn set_log_base(&self, _base: u64, _r: Option<VhostUserDirtyLogRegion>) -> vhost::Result<()> {
        Ok(())
    }
    fn set_log_fd(&self, _fd: RawFd) -> vhost::Result<()> {
        Ok(())
    }
    fn set_vring_num(&self, _i: usize, _num: u16) -> vhost::Result<()> {
        Ok(())
    }
    fn set_vring_addr(&self, i: usize, c: &VringConfigData) -> vhost::Result<()> {
        let ring = (
            i,
            c.queue_size,
            c.desc_table_addr,
            c.avail_ring_addr,
            c.used_ring_addr,
        );
        self.sent.lock().unwrap().rings.push(ring);
        Ok(())
    }
    fn set_vring_base(&self, i: usize, base: u16) -> vhost::Result<()> {
        self.sent.lock().unwrap().bases.push((i, base));
        Ok(())
    }
    fn get_vring_base(&self, _i: usize) -> vhost::Result<u32> {
        Ok(0)
    }
    fn set_vring_call(&self, _i: usize, _fd: &EventFd) -> vhost::Result<()> {
        Ok(())
    }
    fn set_vring_kick(&self, _i: usize, _fd: &EventFd) -> vhost::Result<()> {
        Ok(())
    }
    fn set_vring_err(&self, _i: usize, _fd: &EventFd) -> vhost::Result<()> {
        Ok(())
    }
}

struct FakePeer(FakeBackend);

impl Peer for FakePeer {
    const NAME: &'static str = "vhost-fake";
    type Backend = FakeBackend;
    const RINGS_BY_VIRTUAL_ADDRESS: bool = false;

    fn backend(&self) -> &FakeBackend {
        &self.0
    }
    fn backend_features(&self, negotiated: u64) -> u64 {
        negotiated & DATA_FEATURES
    }
    fn prepare(&mut self, _negotiated: u64) -> Result<(), Error> {
        Ok(())
    }
    fn attach(&mut self, _index: usize) -> Result<(), Error> {
        Ok(())
    }
    fn detach(&mut self, _index: usize) -> Result<(), Error> {
        Ok(())
    }
}

fn vhost(offered: u64) -> Vhost<FakePeer> {
    Vhost::new(FakePeer(FakeBackend {
        offered,
        sent: Mutex::default(),
    }))
    .unwrap()
}

#[test]
fn a_backend_without_packed_rings_makes_the_device_offer_split_ones_and_say_why() {
    let v = vhost(DATA_FEATURES & !RING_FEATURES);
    assert!(v.fallbacks().is_empty());
    v.check_features(nf::DEFAULT).unwrap();
    let why: Vec<String> = v.fallbacks().iter().map(|f| f.to_string()).collect();
    assert_eq!(
        why,
        [
            "ring_packed: the vhost-fake backend does not offer it",
            "in_order: the vhost-fake backend does not offer it"
        ]
    );
    assert_eq!(v.fallbacks()[0].bit, virtio_features::RING_PACKED);
    assert_eq!(
        v.offer(nf::DEFAULT),
        nf::DEFAULT & !RING_FEATURES & !DEVICE_ONLY_FEATURES
    );
    // The device applies it: a driver is not offered what the backend cannot serve.
    let net = Net::with_backend(NetConfig::default(), Backend::Vhost(Box::new(v)));
    assert_eq!(
        net.features(),
        nf::DEFAULT & !RING_FEATURES & !nf::MULTIQUEUE
    );

    // In-order alone (as newer vhost-net kernels have it) is kept.
    let v = vhost(DATA_FEATURES & !virtio_features::RING_PACKED);
    v.check_features(nf::DEFAULT).unwrap();
    assert_eq!(v.fallbacks().len(), 1);
    assert_eq!(
        v.offer(nf::DEFAULT),
        nf::DEFAULT & !virtio_features::RING_PACKED & !DEVICE_ONLY_FEATURES
    );
    // Withheld by the run: nothing to fall back from.
    v.check_features(nf::DEFAULT & !virtio_features::RING_PACKED)
        .unwrap();
    assert!(v.fallbacks().is_empty());
}

#[test]
fn a_backend_lacking_another_data_feature_still_fails_the_run() {
    let v = vhost(DATA_FEATURES & !nf::MRG_RXBUF & !RING_FEATURES);
    let e = v.check_features(nf::DEFAULT).unwrap_err();
    assert_eq!(
        e.to_string(),
        "vhost-fake backend: feature negotiation: the run needs mrg_rxbuf, which the backend \
         does not offer (it offers any_layout, indirect_desc, event_idx, version_1)"
    );
    let v = vhost(DATA_FEATURES);
    v.check_features(nf::DEFAULT).unwrap();
    assert!(v.fallbacks().is_empty());
    assert_eq!(v.offer(nf::DEFAULT), nf::DEFAULT & !DEVICE_ONLY_FEATURES);
}

#[test]
fn a_backend_serving_one_pair_takes_multiqueue_rss_and_hash_reports_away() {
    let v = vhost(DATA_FEATURES);
    v.check_features(nf::DEFAULT).unwrap();
    // One pair: none of them would be offered anyway; nothing to say.
    v.check_pairs(nf::DEFAULT, 1);
    assert!(v.fallbacks().is_empty());
    v.check_pairs(nf::DEFAULT, 4);
    let why: Vec<String> = v.fallbacks().iter().map(|f| f.to_string()).collect();
    assert_eq!(
        why,
        [
            "mq: the vhost-fake backend does not offer it",
            "rss: the vhost-fake backend does not offer it",
            "hash_report: the vhost-fake backend does not offer it"
        ]
    );
    let cfg = NetConfig {
        max_queue_pairs: 4,
        ..NetConfig::default()
    };
    let net = Net::with_backend(cfg, Backend::Vhost(Box::new(v)));
    assert_eq!(net.max_pairs(), 1, "no more pairs than the backend serves");
    assert_eq!(net.queue_max_sizes().len(), 3);
    assert_eq!(net.features() & nf::MULTIQUEUE, 0);
}

#[derive(Default)]
struct NoIrq;

impl Interrupt for NoIrq {
    fn queue(&self, _queue: u16) {}
    fn config_changed(&self) {}
}

#[test]
fn packed_rings_go_to_the_backend_with_their_wrap_counters_in_the_base() {
    let mem = ram();
    let rx = PackedDriver::new(&mem, 0x1000, 100);
    let tx = PackedDriver::new(&mem, 0x3000, 100);
    let queue = |d: &PackedDriver, index: u16, at: u16| {
        let mut queue = d.queue(true);
        crate::queue::DeviceQueue::set_position(
            &mut queue,
            crate::queue::RingPosition {
                next_avail: at,
                next_used: at,
            },
        );
        ActiveQueue {
            index,
            queue: Box::new(queue),
            kick: EventFd::new(EFD_NONBLOCK).unwrap(),
        }
    };
    let pairs = [QueuePair {
        rx: queue(&rx, 0, 0x8000 | 7),
        tx: queue(&tx, 1, 42),
    }];
    let mut v = vhost(DATA_FEATURES);
    let negotiated = nf::DEFAULT;
    let stats = Arc::new(NetStats::default());
    Dataplane::start(&mut v, &mem, negotiated, &pairs, Arc::new(NoIrq), stats).unwrap();
    Dataplane::stop(&mut v).unwrap();
    let sent = v.peer().backend().sent.lock().unwrap();
    assert_eq!(sent.features, Some(negotiated & DATA_FEATURES));
    assert_eq!(sent.bases, [(0, 0x8007), (1, 42)]);
    let areas = |base: u64| (base, base + 1600, base + 1604);
    let (d0, a0, u0) = areas(0x1000);
    let (d1, a1, u1) = areas(0x3000);
    // The driver area goes where a split ring's available ring would, the device area
    // where its used ring would (as QEMU sends them).
    assert_eq!(sent.rings, [(0, 100, d0, a0, u0), (1, 100, d1, a1, u1)]);
    assert!(mem.address_in_range(GuestAddress(u1)));
}

/// A sink that keeps what it is given, and the queue pair each frame left on.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Vec<u8>>>>, Arc<Mutex<Vec<u16>>>);

impl crate::endpoint::Sink for Capture {
    fn put(&mut self, frame: &[u8]) -> Result<(), crate::endpoint::SinkError> {
        self.put_on(frame, 0)
    }
    fn put_on(&mut self, frame: &[u8], queue: u16) -> Result<(), crate::endpoint::SinkError> {
        self.0.lock().unwrap().push(frame.to_vec());
        self.1.lock().unwrap().push(queue);
        Ok(())
    }
    fn frames(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
    fn finish(&mut self) -> Result<(), crate::endpoint::SinkError> {
        Ok(())
    }
}

/// Counts interrupts.
#[derive(Default)]
struct Irqs(std::sync::atomic::AtomicU64);

impl Interrupt for Irqs {
    fn queue(&self, _queue: u16) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn config_changed(&self) {}
}

/// Guest RAM in a memfd, as a vhost-user backend needs it.
fn shared_ram() -> Memory {
    // SAFETY: memfd_create reads a NUL-terminated name, which the literal is.
    let fd = unsafe { libc::memfd_create(c"vlab-test-ram".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    file.set_len(crate::queue::testing::RAM).unwrap();
    Memory::from_ranges_with_files([(
        GuestAddress(0),
        crate::queue::testing::RAM as usize,
        Some(vm_memory::FileOffset::new(file, 0)),
    )])
    .unwrap()
}

/// Waits until `f` gives something, at most two seconds.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "waited in vain for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Our vhost-user backend serving packed rings (in order) from our own frontend: frames
/// both ways, the wrap counters back through GET_VRING_BASE.
#[test]
fn our_vhost_user_backend_serves_packed_rings_in_order() {
    use crate::endpoint::{loopback, Sink};
    use crate::queue::packed::WRAP_BIT;
    use crate::vhost::user::UserNet;
    use crate::vhost::user_backend::{serve, BackendConfig};

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("backend.sock");
    let (source, mut input) = loopback();
    let output = Capture::default();
    let stop = Arc::new(AtomicBool::new(false));
    let backend = {
        let (socket, output, stop) = (socket.clone(), output.clone(), stop.clone());
        let cfg = BackendConfig {
            queue_size: 256,
            ..BackendConfig::default()
        };
        std::thread::spawn(move || {
            serve(
                &socket,
                cfg,
                Box::new(source),
                Box::new(output),
                None,
                &stop,
            )
        })
    };
    wait_for("the backend's socket", || socket.exists().then_some(()));

    let mem = shared_ram();
    let mut v = Vhost::new(UserNet::connect(&socket).unwrap()).unwrap();
    v.check_features(nf::DEFAULT).unwrap();
    assert!(v.fallbacks().is_empty(), "our backend has packed rings");
    assert_eq!(v.offer(nf::DEFAULT), nf::DEFAULT & !DEVICE_ONLY_FEATURES);
    let negotiated = nf::MRG_RXBUF
        | virtio_features::VERSION_1
        | virtio_features::RING_EVENT_IDX
        | virtio_features::RING_PACKED
        | virtio_features::IN_ORDER;
    let mut rx = PackedDriver::new(&mem, 0x1000, 8);
    let mut tx = PackedDriver::new(&mem, 0x2000, 8);
    let active = |d: &PackedDriver, index: u16| ActiveQueue {
        index,
        queue: Box::new(d.queue_in_order(true)),
        kick: EventFd::new(EFD_NONBLOCK).unwrap(),
    };
    let pairs = [QueuePair {
        rx: active(&rx, 0),
        tx: active(&tx, 1),
    }];
    let irqs = Arc::new(Irqs::default());
    let stats = Arc::new(NetStats::default());
    Dataplane::start(
        &mut v,
        &mem,
        negotiated,
        &pairs,
        irqs.clone(),
        stats.clone(),
    )
    .unwrap();

    // Transmit, over a lap and a half of the ring: two-descriptor lists, kicked one by one
    // (several at once come back in a batch: the in-order tests show it).
    let frame: Vec<u8> = (0..60u8).collect();
    let hdr = [0u8; crate::net::NET_HDR_LEN];
    mem.write_slice(&hdr, GuestAddress(0x40000)).unwrap();
    mem.write_slice(&frame, GuestAddress(0x40100)).unwrap();
    let bufs = [(0x40000, hdr.len() as u32, false), (0x40100, 60, false)];
    for i in 0..6 {
        let id = tx.chain(&bufs);
        pairs[0].tx.kick.write(1).unwrap();
        let used = wait_for("a used tx descriptor", || {
            let u = tx.used_descs(true);
            (!u.is_empty()).then_some(u)
        });
        assert_eq!(used[0].ids, [id], "tx {i}");
    }
    wait_for("six frames out", || (output.frames() == 6).then_some(()));
    assert!(output.0.lock().unwrap().iter().all(|f| *f == frame));

    // Receive a frame spread over three buffers, published together.
    let big: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
    let ids: Vec<u16> = (0..4)
        .map(|i| rx.chain(&[(0x50000 + 0x1000 * i, 100, true)]))
        .collect();
    input.put(&big).unwrap();
    pairs[0].rx.kick.write(1).unwrap();
    let used = wait_for("used rx descriptors", || {
        let u = rx.used_descs(true);
        (!u.is_empty()).then_some(u)
    });
    let used: Vec<(u16, u32)> = used.iter().map(|u| (u.id, u.len)).collect();
    assert_eq!(used, [(ids[0], 100), (ids[1], 100), (ids[2], 62)]);
    let got = rx.written().concat();
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3, "num_buffers");
    assert_eq!(got[hdr.len()..], big[..]);
    wait_for("an interrupt", || {
        (irqs.0.load(Ordering::Relaxed) > 0).then_some(())
    });

    // The positions come back in the packed encoding: rx took three slots of the first
    // lap; tx twelve of a ring of eight (slot 4 of the second lap, wrap counter 0).
    Dataplane::stop(&mut v).unwrap();
    assert_eq!(
        v.peer().backend().get_vring_base(0).unwrap(),
        u32::from(WRAP_BIT | 3)
    );
    assert_eq!(v.peer().backend().get_vring_base(1).unwrap(), 4);
    drop(v);
    let served = backend.join().unwrap().unwrap();
    assert_eq!((served.stats.tx_frames, served.stats.rx_delivered), (6, 1));
    assert!(stats.failure().is_none());
}

/// A TCP/IPv4 frame from `src`:`sport` to `dst`:`dport`.
fn tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut f = vec![
        0x52, 0x54, 0, 0x12, 0x34, 0x56, 2, 0, 0, 0, 0, 9, 0x08, 0x00,
    ];
    f.extend([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0]);
    f.extend(src);
    f.extend(dst);
    f.extend(sport.to_be_bytes());
    f.extend(dport.to_be_bytes());
    f.extend([0; 16]);
    f
}

#[test]
fn our_vhost_user_backend_serves_every_pair_the_frontend_enables() {
    use crate::endpoint::{loopback, Sink};
    use crate::queue::testing::Driver;
    use crate::vhost::user::UserNet;
    use crate::vhost::user_backend::{serve, BackendConfig, MAX_PAIRS};
    use crate::virtio::{Activation, Health};

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("backend.sock");
    let (source, mut input) = loopback();
    let output = Capture::default();
    let stop = Arc::new(AtomicBool::new(false));
    let backend = {
        let (socket, output, stop) = (socket.clone(), output.clone(), stop.clone());
        let cfg = BackendConfig {
            queue_size: 256,
            ..BackendConfig::default()
        };
        std::thread::spawn(move || {
            serve(
                &socket,
                cfg,
                Box::new(source),
                Box::new(output),
                None,
                &stop,
            )
        })
    };
    wait_for("the backend's socket", || socket.exists().then_some(()));

    let v = Vhost::new(UserNet::connect(&socket).unwrap()).unwrap();
    assert_eq!(
        v.peer().pairs(),
        MAX_PAIRS,
        "GET_QUEUE_NUM, over the MQ extension"
    );
    v.check_features(nf::DEFAULT).unwrap();
    v.check_pairs(nf::DEFAULT, 2);
    let lost: Vec<&str> = v.fallbacks().iter().map(|f| f.feature).collect();
    assert_eq!(lost, ["rss", "hash_report"], "multiqueue is served");
    let cfg = NetConfig {
        max_queue_pairs: 2,
        ..NetConfig::default()
    };
    let mut net = Net::with_backend(cfg, Backend::Vhost(Box::new(v)));
    assert_eq!(net.max_pairs(), 2);
    assert_eq!(net.features() & nf::MULTIQUEUE, nf::MQ);

    // DRIVER_OK with both pairs and the control queue set up.
    let mem = Arc::new(shared_ram());
    let at = |k: u64| 0x1000 * (k + 1);
    let mut rx = [Driver::new(&mem, at(0), 8), Driver::new(&mem, at(2), 8)];
    let mut tx = [Driver::new(&mem, at(1), 8), Driver::new(&mem, at(3), 8)];
    let ctrl = Driver::new(&mem, at(4), 8);
    let kicks: Vec<EventFd> = (0..5)
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    let active = |d: &Driver, index: u16| {
        Some(ActiveQueue {
            index,
            queue: Box::new(d.queue(true)),
            kick: kicks[usize::from(index)].try_clone().unwrap(),
        })
    };
    let queues = vec![
        active(&rx[0], 0),
        active(&tx[0], 1),
        active(&rx[1], 2),
        active(&tx[1], 3),
        active(&ctrl, 4),
    ];
    net.activate(Activation {
        mem: mem.clone(),
        features: virtio_features::VERSION_1 | nf::MQ | nf::CTRL_VQ,
        queues,
        interrupt: Arc::new(Irqs::default()),
        health: Arc::new(Health::default()),
    })
    .unwrap();

    // Both transmit queues, pair 0's chain made available first: served in pair order, the
    // sink told which queue each frame left on.
    let hdr = [0u8; crate::net::NET_HDR_LEN];
    for (p, t) in tx.iter_mut().enumerate() {
        let base = 0x40000 + 0x1000 * p as u64;
        mem.write_slice(&hdr, GuestAddress(base)).unwrap();
        mem.write_slice(&[p as u8; 60], GuestAddress(base + 0x100))
            .unwrap();
        t.chain(&[(base, hdr.len() as u32, false), (base + 0x100, 60, false)]);
    }
    kicks[3].write(1).unwrap();
    wait_for("two frames out", || (output.frames() == 2).then_some(()));
    assert_eq!(*output.1.lock().unwrap(), [0, 1]);
    assert_eq!(output.0.lock().unwrap()[1], [1u8; 60]);

    // Received frames spread over both pairs by automatic steering (the backend has no
    // RSS configuration): the TCP hashes 0x51ccc178 and 0xafc7327f, modulo 2.
    let frames = [
        tcp4([66, 9, 149, 187], 2794, [161, 142, 100, 80], 1766),
        tcp4([38, 27, 205, 30], 48228, [209, 142, 163, 6], 2217),
    ];
    for (p, r) in rx.iter_mut().enumerate() {
        r.chain(&[(0x50000 + 0x1000 * p as u64, 2048, true)]);
    }
    for f in &frames {
        input.put(f).unwrap();
    }
    kicks[0].write(1).unwrap();
    for (p, r) in rx.iter_mut().enumerate() {
        let got = wait_for("a received frame", || {
            let w = r.written();
            (!w.is_empty()).then_some(w)
        });
        assert_eq!(got.len(), 1);
        assert_eq!(got[0][hdr.len()..], frames[p][..], "pair {p}");
    }

    let (_, stopped) = net.shutdown();
    stopped.unwrap();
    drop(net);
    let served = backend.join().unwrap().unwrap();
    assert_eq!(served.stats.tx_frames_per_queue[..2], [1, 1]);
    assert_eq!(served.stats.rx_delivered_per_queue[..2], [1, 1]);
}
