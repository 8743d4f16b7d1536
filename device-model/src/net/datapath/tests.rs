//! The engine against driver-side split rings (`virtio-queue`'s mock) in plain guest RAM:
//! no transport, no thread, no KVM.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::endpoint::{loopback, SinkError};
use crate::net::chain::{ChainError, MAX_TX_CHAIN};
use crate::net::ctrl::{class, BadData, Refusal};
use crate::net::{rss, NET_HDR_LEN};
use crate::queue::testing::{ram, Driver, PackedDriver, F_NEXT, F_WRITE, RAM};
use crate::queue::SplitQueue;
use crate::virtio::features::VERSION_1;

const OWN: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const OTHER: [u8; 6] = [0x02, 0, 0, 0, 0, 7];
const MCAST: [u8; 6] = [0x01, 0x00, 0x5e, 0, 0, 1];
const MCAST2: [u8; 6] = [0x01, 0x00, 0x5e, 0, 0, 2];
const BROADCAST: [u8; 6] = [0xff; 6];

const RX_RING: u64 = 0x0000;
const TX_RING: u64 = 0x1000;
const CTRL_RING: u64 = 0x2000;
const RX_BUF: u64 = 0x10000;
const TX_BUF: u64 = 0x40000;
const CMD: u64 = 0x80000;
const ACK: u64 = 0x88000;

const RX: u16 = 0;
const TX: u16 = 1;
const CTRL: u16 = 2;

const HDR: usize = NET_HDR_LEN;
const FILTERING: u64 = VERSION_1 | features::CTRL_VQ | features::CTRL_RX;

/// Interrupts raised, by queue.
#[derive(Default)]
struct Irqs(Mutex<Vec<u16>>);

impl Interrupt for Irqs {
    fn queue(&self, queue: u16) {
        self.0.lock().unwrap().push(queue);
    }
    fn config_changed(&self) {}
}

impl Irqs {
    fn take(&self) -> Vec<u16> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A sink that keeps what it is given, and the queue pair each frame left on.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Vec<u8>>>>, Arc<Mutex<Vec<u16>>>);

impl Sink for Capture {
    fn put(&mut self, frame: &[u8]) -> Result<(), SinkError> {
        self.put_on(frame, 0)
    }
    fn put_on(&mut self, frame: &[u8], queue: u16) -> Result<(), SinkError> {
        self.0.lock().unwrap().push(frame.to_vec());
        self.1.lock().unwrap().push(queue);
        Ok(())
    }
    fn frames(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// An engine and what the tests look at around it.
struct Rig {
    mem: Arc<Memory>,
    engine: Engine,
    /// Frames put here come out of the engine's source.
    input: Box<dyn Sink>,
    output: Capture,
    stats: Arc<NetStats>,
    shared: Arc<NetShared>,
    irqs: Arc<Irqs>,
    health: Arc<Health>,
}

impl Rig {
    fn new(negotiated: u64) -> Self {
        Self::with_pairs(negotiated, 1)
    }

    /// A device of `pairs` pairs, the driver having set up all of them.
    fn with_pairs(negotiated: u64, pairs: u16) -> Self {
        let mem = Arc::new(ram());
        let cfg = NetConfig {
            max_queue_pairs: pairs,
            ..NetConfig::default()
        };
        let (source, input) = loopback();
        let output = Capture::default();
        let stats = Arc::new(NetStats::new(pairs));
        let shared = NetShared::new(&cfg);
        let irqs = Arc::new(Irqs::default());
        let health = Arc::new(Health::default());
        let parts = EngineParts {
            mem: mem.clone(),
            negotiated,
            interrupt: irqs.clone(),
            health: health.clone(),
            source: Box::new(source),
            sink: Box::new(output.clone()),
            stats: stats.clone(),
            shared: shared.clone(),
        };
        let mut engine = Engine::new(parts, &cfg);
        engine.set_ready_pairs(pairs);
        Self {
            engine,
            mem,
            input: Box::new(input),
            output,
            stats,
            shared,
            irqs,
            health,
        }
    }

    fn inject(&mut self, frames: &[Vec<u8>]) {
        for f in frames {
            self.input.put(f).unwrap();
        }
    }

    fn count(&self, c: impl Fn(&NetStats) -> &AtomicU64) -> u64 {
        c(&self.stats).load(Ordering::Relaxed)
    }
}

/// An Ethernet frame of `len` bytes to `dst`, tagged with `vlan` if given.
fn frame(dst: [u8; 6], len: usize, vlan: Option<u16>) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 9]);
    if let Some(v) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x00]);
    let n = f.len();
    f.extend((n..len).map(|i| i as u8));
    f
}

/// `count` single-buffer rx chains of `len` bytes each.
fn rx_buffers(rx: &mut Driver, first: u64, count: u64, len: u32) -> Vec<u16> {
    (0..count)
        .map(|i| rx.chain(&[(first + i * 0x1000, len, true)]))
        .collect()
}

/// The frames delivered since the last call, without their headers.
fn received(rx: &mut Driver) -> Vec<Vec<u8>> {
    rx.written()
        .into_iter()
        .map(|b| b[HDR..].to_vec())
        .collect()
}

/// Sends a control command and returns its ack byte.
fn command(
    r: &mut Rig,
    ctrl: &mut Driver,
    q: &mut SplitQueue,
    cls: u8,
    cmd: u8,
    data: &[u8],
) -> u8 {
    let mut bytes = vec![cls, cmd];
    bytes.extend_from_slice(data);
    r.mem.write_slice(&bytes, GuestAddress(CMD)).unwrap();
    r.mem.write_obj(0xaau8, GuestAddress(ACK)).unwrap();
    ctrl.chain(&[(CMD, bytes.len() as u32, false), (ACK, 1, true)]);
    assert_eq!(r.engine.serve_ctrl(CTRL, q).unwrap(), 1);
    assert_eq!(ctrl.used().last().map(|u| u.1), Some(1), "the ack byte");
    r.mem.read_obj(GuestAddress(ACK)).unwrap()
}

fn mac_table(macs: &[[u8; 6]]) -> Vec<u8> {
    let mut v = (macs.len() as u32).to_le_bytes().to_vec();
    macs.iter().for_each(|m| v.extend_from_slice(m));
    v
}

#[test]
fn mergeable_rx_spreads_a_frame_over_buffers_and_counts_them_in_num_buffers() {
    let mut r = Rig::new(VERSION_1 | features::MRG_RXBUF);
    let mem = r.mem.clone();
    let f = frame(OWN, 250, None);
    r.inject(std::slice::from_ref(&f));
    let mut rx = Driver::new(&mem, RX_RING, 16);
    let heads = rx_buffers(&mut rx, RX_BUF, 4, 100);
    let mut q = rx.queue(false);
    assert_eq!(r.engine.process_rx(RX, &mut q).unwrap(), (1, false));
    // 12 + 250 bytes: two full buffers and 62 bytes of a third, published together.
    assert_eq!(
        rx.used(),
        [(heads[0], 100), (heads[1], 100), (heads[2], 62)]
    );
    let mut got = Vec::new();
    for (i, len) in [100, 100, 62].into_iter().enumerate() {
        let mut b = vec![0; len];
        let at = GuestAddress(RX_BUF + 0x1000 * i as u64);
        r.mem.read_slice(&mut b, at).unwrap();
        got.extend(b);
    }
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3, "num_buffers");
    assert_eq!(got[..10], [0; 10], "no offloads in the header");
    assert_eq!(got[HDR..], f[..]);
    assert_eq!(r.count(|s| &s.rx_delivered), 1);
    assert_eq!(r.count(|s| &s.rx_bytes), 250);
    assert_eq!(r.irqs.take(), [RX], "one interrupt for the batch");
    assert_eq!(q.available(&r.mem).unwrap(), 1, "the fourth buffer is left");
}

#[test]
fn without_mergeable_buffers_a_frame_must_fit_one_and_a_bigger_one_is_dropped() {
    let mut r = Rig::new(VERSION_1);
    let mem = r.mem.clone();
    let small = frame(OWN, 60, None);
    r.inject(&[frame(OWN, 200, None), small.clone()]);
    let mut rx = Driver::new(&mem, RX_RING, 16);
    let heads = rx_buffers(&mut rx, RX_BUF, 2, 100);
    let mut q = rx.queue(false);
    assert_eq!(r.engine.process_rx(RX, &mut q).unwrap(), (1, false));
    // The big frame was dropped and its buffer kept: the small one took it.
    assert_eq!(rx.used(), [(heads[0], (HDR + 60) as u32)]);
    let mut hdr = [0u8; HDR];
    r.mem.read_slice(&mut hdr, GuestAddress(RX_BUF)).unwrap();
    assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 1, "num_buffers");
    assert_eq!(r.count(|s| &s.rx_dropped), 1);
    assert_eq!(r.count(|s| &s.rx_delivered), 1);
    assert_eq!(r.count(|s| &s.source_frames), 2);
    assert_eq!(q.available(&r.mem).unwrap(), 1);
}

#[test]
fn a_frame_waits_in_its_source_until_the_driver_gives_buffers() {
    let mut r = Rig::new(VERSION_1 | features::MRG_RXBUF);
    let mem = r.mem.clone();
    let f = frame(OWN, 250, None);
    r.inject(std::slice::from_ref(&f));
    let mut rx = Driver::new(&mem, RX_RING, 16);
    rx_buffers(&mut rx, RX_BUF, 2, 100);
    let mut q = rx.queue(false);
    // 262 bytes do not fit 200: the two buffers go back, the frame waits.
    assert_eq!(r.engine.process_rx(RX, &mut q).unwrap(), (0, true));
    assert!(rx.used().is_empty());
    assert_eq!(q.available(&r.mem).unwrap(), 2);
    rx_buffers(&mut rx, RX_BUF + 0x2000, 1, 100);
    assert_eq!(r.engine.process_rx(RX, &mut q).unwrap(), (1, false));
    assert_eq!(rx.used().len(), 3);
    assert_eq!(r.count(|s| &s.rx_dropped), 0);
}

#[test]
fn the_receive_filter_passes_what_the_driver_asked_for() {
    let mut r = Rig::new(FILTERING | features::CTRL_MAC_ADDR);
    let mem = r.mem.clone();
    let mut ctrl = Driver::new(&mem, CTRL_RING, 16);
    let mut cq = ctrl.queue(false);
    let mut rx = Driver::new(&mem, RX_RING, 64);
    rx_buffers(&mut rx, RX_BUF, 32, 256);
    let mut q = rx.queue(false);
    let mut deliver = |r: &mut Rig, frames: &[Vec<u8>]| {
        r.inject(frames);
        r.engine.process_rx(RX, &mut q).unwrap();
        received(&mut rx)
    };

    // Promiscuous from reset: everything passes.
    let all = [frame(OTHER, 60, None), frame(MCAST, 60, None)];
    assert_eq!(deliver(&mut r, &all), all);

    assert_eq!(
        command(&mut r, &mut ctrl, &mut cq, class::RX, 0, &[0]),
        ctrl::OK
    );
    let (own, other) = (frame(OWN, 60, None), frame(OTHER, 61, None));
    let (bcast, mcast) = (frame(BROADCAST, 62, None), frame(MCAST, 63, None));
    let sent = [own.clone(), other.clone(), bcast.clone(), mcast.clone()];
    assert_eq!(deliver(&mut r, &sent), [own.clone(), bcast]);
    assert_eq!(r.count(|s| &s.rx_filtered), 2);

    // The MAC tables: a unicast and a multicast address more.
    let mut tables = mac_table(&[OTHER]);
    tables.extend(mac_table(&[MCAST]));
    assert_eq!(
        command(&mut r, &mut ctrl, &mut cq, class::MAC, 0, &tables),
        ctrl::OK
    );
    let mcast2 = frame(MCAST2, 64, None);
    let sent = [other.clone(), mcast.clone(), mcast2.clone()];
    assert_eq!(deliver(&mut r, &sent), [other.clone(), mcast.clone()]);

    // All-multicast.
    assert_eq!(
        command(&mut r, &mut ctrl, &mut cq, class::RX, 1, &[1]),
        ctrl::OK
    );
    assert_eq!(deliver(&mut r, std::slice::from_ref(&mcast2)), [mcast2]);

    // A new own address: the old one no longer passes.
    let new = [0x02, 0, 0, 0, 0, 0x42];
    assert_eq!(
        command(&mut r, &mut ctrl, &mut cq, class::MAC, 1, &new),
        ctrl::OK
    );
    assert_eq!(r.shared.mac(), new);
    let to_new = frame(new, 60, None);
    assert_eq!(deliver(&mut r, &[own.clone(), to_new.clone()]), [to_new]);

    // Promiscuous again.
    assert_eq!(
        command(&mut r, &mut ctrl, &mut cq, class::RX, 0, &[1]),
        ctrl::OK
    );
    assert_eq!(deliver(&mut r, std::slice::from_ref(&own)), [own]);

    assert_eq!(r.count(|s| &s.rx_filtered), 4);
    assert_eq!(r.count(|s| &s.ctrl_ok), 5);
    assert_eq!(r.count(|s| &s.ctrl_err), 0);
}

#[test]
fn vlans_pass_once_added_with_vlan_filtering() {
    let mut r = Rig::new(FILTERING | features::CTRL_VLAN);
    let mem = r.mem.clone();
    let mut ctrl = Driver::new(&mem, CTRL_RING, 16);
    let mut cq = ctrl.queue(false);
    let mut rx = Driver::new(&mem, RX_RING, 64);
    rx_buffers(&mut rx, RX_BUF, 32, 256);
    let mut q = rx.queue(false);
    let mut deliver = |r: &mut Rig, frames: &[Vec<u8>]| {
        r.inject(frames);
        r.engine.process_rx(RX, &mut q).unwrap();
        received(&mut rx)
    };
    assert_eq!(
        command(&mut r, &mut ctrl, &mut cq, class::RX, 0, &[0]),
        ctrl::OK
    );
    let (tagged, untagged) = (frame(OWN, 64, Some(100)), frame(OWN, 60, None));
    let both = [tagged.clone(), untagged.clone()];
    assert_eq!(deliver(&mut r, &both), std::slice::from_ref(&untagged));

    let vid = 100u16.to_le_bytes();
    assert_eq!(
        command(&mut r, &mut ctrl, &mut cq, class::VLAN, 0, &vid),
        ctrl::OK
    );
    assert_eq!(deliver(&mut r, &both), both);
    // The priority bits do not matter.
    let prio = frame(OWN, 64, Some(0xe000 | 100));
    assert_eq!(deliver(&mut r, std::slice::from_ref(&prio)), [prio]);

    assert_eq!(
        command(&mut r, &mut ctrl, &mut cq, class::VLAN, 1, &vid),
        ctrl::OK
    );
    assert_eq!(deliver(&mut r, &both), [untagged]);

    let bad = 4096u16.to_le_bytes();
    assert_eq!(
        command(&mut r, &mut ctrl, &mut cq, class::VLAN, 0, &bad),
        ctrl::ERR
    );
    assert_eq!(r.count(|s| &s.ctrl_err), 1);
    assert_eq!(r.count(|s| &s.rx_filtered), 2);
}

#[test]
fn without_vlan_filtering_every_vlan_passes_and_vlan_commands_are_refused() {
    let mut r = Rig::new(FILTERING);
    let mem = r.mem.clone();
    let mut ctrl = Driver::new(&mem, CTRL_RING, 16);
    let mut cq = ctrl.queue(false);
    let mut rx = Driver::new(&mem, RX_RING, 16);
    rx_buffers(&mut rx, RX_BUF, 4, 256);
    let mut q = rx.queue(false);
    assert_eq!(
        command(&mut r, &mut ctrl, &mut cq, class::RX, 0, &[0]),
        ctrl::OK
    );
    let tagged = frame(OWN, 64, Some(7));
    r.inject(std::slice::from_ref(&tagged));
    r.engine.process_rx(RX, &mut q).unwrap();
    assert_eq!(received(&mut rx), [tagged]);
    let vid = 7u16.to_le_bytes();
    assert_eq!(
        command(&mut r, &mut ctrl, &mut cq, class::VLAN, 0, &vid),
        ctrl::ERR
    );
    assert_eq!(
        ctrl::handle(
            &mut RxFilter::new(false),
            &mut Steering::new(1),
            FILTERING,
            class::VLAN,
            0,
            &vid
        ),
        Err(Refusal::NotNegotiated {
            class: class::VLAN,
            cmd: 0,
            feature: "VIRTIO_NET_F_CTRL_VLAN"
        })
    );
}

#[test]
fn transmitted_frames_go_to_the_sink_without_their_header() {
    let mut r = Rig::new(VERSION_1);
    let mem = r.mem.clone();
    let f = frame(OTHER, 100, None);
    r.mem.write_slice(&[0; HDR], GuestAddress(TX_BUF)).unwrap();
    r.mem
        .write_slice(&f[..40], GuestAddress(TX_BUF + 0x100))
        .unwrap();
    r.mem
        .write_slice(&f[40..], GuestAddress(TX_BUF + 0x200))
        .unwrap();
    let mut tx = Driver::new(&mem, TX_RING, 16);
    let head = tx.chain(&[
        (TX_BUF, HDR as u32, false),
        (TX_BUF + 0x100, 40, false),
        (TX_BUF + 0x200, 60, false),
    ]);
    let mut q = tx.queue(false);
    assert_eq!(r.engine.process_tx(TX, &mut q).unwrap(), 1);
    assert_eq!(tx.used(), [(head, 0)], "tx chains are used with length 0");
    assert_eq!(*r.output.0.lock().unwrap(), [f]);
    assert_eq!(r.count(|s| &s.tx_bytes), 100);
    assert_eq!(r.irqs.take(), [TX]);
}

/// The chains of `tx_chain_errors_are_typed_counted_and_returned_empty`, and a good one last.
fn bad_tx_chains(tx: &mut Driver) {
    // A buffer outside guest RAM.
    tx.chain(&[(RAM + 0x1000, 64, false)]);
    // A descriptor that loops to itself.
    tx.raw_chain(&[(TX_BUF, 64, F_NEXT, 1)]);
    // A device-writable buffer.
    tx.chain(&[(TX_BUF, 12, false), (TX_BUF + 0x100, 64, true)]);
    // More bytes than any frame.
    tx.chain(&[(TX_BUF, 40_000, false), (TX_BUF, 40_000, false)]);
    // Shorter than the header.
    tx.chain(&[(TX_BUF, 8, false)]);
    // A good one: header and a 60-byte frame.
    tx.chain(&[(TX_BUF, (HDR + 60) as u32, false)]);
}

#[test]
fn tx_chain_errors_are_typed_counted_and_returned_empty() {
    let mut r = Rig::new(VERSION_1);
    let mem = r.mem.clone();
    let mut tx = Driver::new(&mem, TX_RING, 16);
    bad_tx_chains(&mut tx);
    let mut q = tx.queue(false);
    assert_eq!(r.engine.process_tx(TX, &mut q).unwrap(), 6);
    let used = tx.used();
    assert_eq!(used.len(), 6);
    assert!(used.iter().all(|&(_, len)| len == 0));
    assert_eq!(r.count(|s| &s.tx_malformed), 5);
    assert_eq!(r.count(|s| &s.tx_frames), 1);
    assert_eq!(r.output.frames(), 1);
    assert!(
        !r.health.needs_reset(),
        "a bad chain is not a reason to reset"
    );

    // What was wrong with each, from the same ring again.
    let mut q = tx.queue(false);
    let mut c = Chain::default();
    let mut buf = Vec::new();
    let mut next = || {
        assert!(q.pop(&r.mem, &mut c).unwrap());
        chain::gather(&mut buf, &r.mem, &c, HDR)
    };
    let e = next().unwrap_err();
    assert!(matches!(e, ChainError::Buffer { addr, len: 64, .. } if addr == RAM + 0x1000));
    assert!(matches!(next(), Err(ChainError::Cut)));
    assert!(matches!(next(), Err(ChainError::WritableInTx)));
    assert!(matches!(
        next(),
        Err(ChainError::TxTooLong { max: MAX_TX_CHAIN })
    ));
    let e = next().unwrap_err();
    assert!(matches!(
        e,
        ChainError::ShorterThanHeader {
            len: 8,
            hdr_len: HDR
        }
    ));
    assert_eq!(e.to_string(), "8 bytes is shorter than the 12-byte header");
    next().unwrap();
}

#[test]
fn rx_chain_errors_are_typed_counted_and_the_frame_waits_for_a_good_buffer() {
    let mut r = Rig::new(VERSION_1);
    let mem = r.mem.clone();
    let f = frame(OWN, 60, None);
    r.inject(std::slice::from_ref(&f));
    let mut rx = Driver::new(&mem, RX_RING, 16);
    // A device-readable buffer; one outside RAM; one running past its end; one without
    // room; a loop; then a good one.
    rx.chain(&[(RX_BUF, 256, false)]);
    rx.chain(&[(RAM + 0x1000, 256, true)]);
    rx.chain(&[(RAM - 16, 256, true)]);
    rx.chain(&[(RX_BUF, 0, true)]);
    rx.raw_chain(&[(RX_BUF, 256, F_WRITE | F_NEXT, 4)]);
    let good = rx.chain(&[(RX_BUF + 0x1000, 256, true)]);
    let mut q = rx.queue(false);
    r.engine.process_rx(RX, &mut q).unwrap();
    let used = rx.used();
    assert_eq!(used.len(), 6);
    assert!(used[..5].iter().all(|&(_, len)| len == 0));
    assert_eq!(used[5], (good, (HDR + 60) as u32));
    assert_eq!(r.count(|s| &s.rx_malformed), 5);
    assert_eq!(r.count(|s| &s.rx_delivered), 1);

    let mut q = rx.queue(false);
    let mut c = Chain::default();
    let mut bufs = Vec::new();
    let mut next = || {
        assert!(q.pop(&r.mem, &mut c).unwrap());
        chain::scatter_list(&mut bufs, &r.mem, &c)
    };
    assert!(matches!(next(), Err(ChainError::ReadableInRx)));
    assert!(matches!(next(), Err(ChainError::OutsideMemory)));
    assert!(matches!(next(), Err(ChainError::OutsideMemory)));
    assert!(matches!(next(), Err(ChainError::NoRoom)));
    assert!(matches!(next(), Err(ChainError::Cut)));
    assert_eq!(next().unwrap(), 256);
    assert_eq!(bufs, [(GuestAddress(RX_BUF + 0x1000), 256)]);
}

#[test]
fn control_chain_errors_are_typed_and_counted() {
    let mut r = Rig::new(FILTERING);
    let mem = r.mem.clone();
    let mut ctrl = Driver::new(&mem, CTRL_RING, 16);
    r.mem.write_slice(&[0, 0, 0], GuestAddress(CMD)).unwrap();
    // No writable byte; readable after writable; too long; the ack outside RAM.
    ctrl.chain(&[(CMD, 3, false)]);
    ctrl.chain(&[(ACK, 1, true), (CMD, 3, false)]);
    ctrl.chain(&[(CMD, 9000, false), (ACK, 1, true)]);
    ctrl.chain(&[(CMD, 3, false), (RAM + 8, 1, true)]);
    // Answered ERR: a lone class byte, and a class that does not exist.
    ctrl.chain(&[(CMD, 1, false), (ACK, 1, true)]);
    r.mem
        .write_slice(&[9, 0], GuestAddress(CMD + 0x100))
        .unwrap();
    ctrl.chain(&[(CMD + 0x100, 2, false), (ACK + 1, 1, true)]);
    let mut q = ctrl.queue(false);
    assert_eq!(r.engine.serve_ctrl(CTRL, &mut q).unwrap(), 6);
    let lens: Vec<u32> = ctrl.used().into_iter().map(|(_, len)| len).collect();
    assert_eq!(lens, [0, 0, 0, 0, 1, 1]);
    assert_eq!(r.count(|s| &s.ctrl_err), 6);
    assert_eq!(r.count(|s| &s.ctrl_ok), 0);
    let mut acks = [0u8; 2];
    r.mem.read_slice(&mut acks, GuestAddress(ACK)).unwrap();
    assert_eq!(acks, [ctrl::ERR; 2]);

    let mut q = ctrl.queue(false);
    let mut c = Chain::default();
    let mut buf = Vec::new();
    let mut next = || {
        assert!(q.pop(&r.mem, &mut c).unwrap());
        chain::command(&mut buf, &r.mem, &c)
    };
    assert!(matches!(next(), Err(ChainError::NoAck)));
    assert!(matches!(next(), Err(ChainError::ReadableAfterWritable)));
    assert!(matches!(
        next(),
        Err(ChainError::CommandTooLong { max: 8192 })
    ));
    let e = next().unwrap_err();
    assert_eq!(e.to_string(), "ack byte 0x100008 is outside guest memory");
    assert_eq!(next().unwrap(), GuestAddress(ACK));
}

#[test]
fn bad_command_data_is_refused_with_a_typed_reason() {
    let mut f = RxFilter::new(true);
    let refused = |f: &mut RxFilter, cls, cmd, data: &[u8]| match ctrl::handle(
        f,
        &mut Steering::new(1),
        FILTERING | features::CTRL_VLAN | features::CTRL_MAC_ADDR,
        cls,
        cmd,
        data,
    ) {
        Err(Refusal::BadData { why, .. }) => why,
        other => panic!("not refused for its data: {other:?}"),
    };
    assert_eq!(
        refused(&mut f, class::RX, 0, &[1, 1]),
        BadData::NotOneByte(2)
    );
    assert_eq!(
        refused(&mut f, class::MAC, 1, &[1; 5]),
        BadData::MacLength(5)
    );
    assert_eq!(
        refused(&mut f, class::VLAN, 0, &[1]),
        BadData::VlanIdLength(1)
    );
    let mut tables = mac_table(&[OTHER]);
    tables.extend(mac_table(&[]));
    tables.push(0);
    assert_eq!(
        refused(&mut f, class::MAC, 0, &tables),
        BadData::AfterTables(1)
    );
    let why = refused(&mut f, class::MAC, 0, &[2, 0, 0, 0, 1, 2, 3]);
    assert_eq!(
        why.to_string(),
        "unicast table: 2 entries need 12 bytes, 3 left"
    );
    let mut s = Steering::new(1);
    let e = ctrl::handle(&mut f, &mut s, FILTERING, class::MAC, 0, &[0, 0, 0, 0]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "class 1 command 0: multicast table: the table ends before its entry count"
    );
}

#[test]
fn an_available_index_a_ring_ahead_makes_the_device_need_a_reset() {
    let mut r = Rig::new(VERSION_1);
    let mem = r.mem.clone();
    let tx = Driver::new(&mem, TX_RING, 16);
    tx.set_avail_idx(40);
    let mut q = tx.queue(false);
    assert_eq!(r.engine.process_tx(TX, &mut q).unwrap(), 0);
    assert!(r.health.needs_reset());
    assert_eq!(r.health.errors(), 1);
}

#[test]
fn a_driver_that_asked_for_no_interrupts_gets_none() {
    let mut r = Rig::new(VERSION_1);
    let mem = r.mem.clone();
    let mut tx = Driver::new(&mem, TX_RING, 16);
    tx.set_avail_flags(1);
    tx.chain(&[(TX_BUF, (HDR + 60) as u32, false)]);
    let mut q = tx.queue(false);
    assert_eq!(r.engine.process_tx(TX, &mut q).unwrap(), 1);
    assert!(r.irqs.take().is_empty());
    assert_eq!(r.count(|s| &s.interrupts), 0);
}

/// Frames through packed rings: `rounds` frames of growing sizes over 100-byte receive
/// buffers in a ring of 7 (many laps), each spread over as many buffers as it needs; and
/// transmitted frames, from lists and indirect tables. In order, transmitted chains are
/// returned in batches with one used descriptor.
fn packed_forwarding(in_order: bool) {
    let negotiated = VERSION_1 | features::MRG_RXBUF | crate::virtio::features::RING_PACKED;
    let mut r = Rig::new(negotiated);
    let mem = r.mem.clone();
    let mut rx = PackedDriver::new(&mem, RX_RING, 7);
    let mut q = if in_order {
        rx.queue_in_order(false)
    } else {
        rx.queue(false)
    };
    for round in 0..40u64 {
        let f = frame(OWN, 60 + 23 * round as usize % 500, None);
        let need = (HDR + f.len()).div_ceil(100);
        r.inject(std::slice::from_ref(&f));
        let ids: Vec<u16> = (0..need as u64)
            .map(|i| rx.chain(&[(RX_BUF + 0x1000 * i, 100, true)]))
            .collect();
        assert_eq!(r.engine.process_rx(RX, &mut q).unwrap(), (1, false));
        let last = (HDR + f.len() - 100 * (need - 1)) as u32;
        // In order or not, each receive buffer has its used descriptor.
        let used: Vec<(u16, u32)> = rx
            .used_descs(in_order)
            .into_iter()
            .map(|u| (u.id, u.len))
            .collect();
        let mut want: Vec<(u16, u32)> = ids.iter().map(|&id| (id, 100)).collect();
        want[need - 1].1 = last;
        assert_eq!(used, want, "round {round}");
        let chunks = rx.written();
        assert_eq!(chunks.len(), need, "round {round}");
        let got: Vec<u8> = chunks.concat();
        assert_eq!(u16::from_le_bytes([got[10], got[11]]) as usize, need);
        assert_eq!(got[HDR..], f[..], "round {round}");
        assert_eq!(r.irqs.take(), [RX]);
    }
    assert_eq!(r.count(|s| &s.rx_delivered), 40);
    assert!(
        q.next_avail().slot != 0 || !q.next_avail().wrap,
        "laps were made"
    );

    // Transmit: a list of three, an indirect table, a list again.
    let mut tx = PackedDriver::new(&mem, TX_RING, 4);
    let mut tq = if in_order {
        tx.queue_in_order(false)
    } else {
        tx.queue(false)
    };
    let f = frame(OTHER, 100, None);
    r.mem.write_slice(&[0; HDR], GuestAddress(TX_BUF)).unwrap();
    r.mem
        .write_slice(&f[..40], GuestAddress(TX_BUF + 0x100))
        .unwrap();
    r.mem
        .write_slice(&f[40..], GuestAddress(TX_BUF + 0x200))
        .unwrap();
    let bufs = [
        (TX_BUF, HDR as u32, false),
        (TX_BUF + 0x100, 40, false),
        (TX_BUF + 0x200, 60, false),
    ];
    // The ring is full after the first two (four descriptors): the driver reads the used
    // descriptors before it reuses their slots.
    let mut batches = Vec::new();
    let ids = vec![tx.chain(&bufs), tx.indirect(TX_BUF + 0x1000, &bufs)];
    assert_eq!(r.engine.process_tx(TX, &mut tq).unwrap(), 2);
    batches.extend(tx.used_descs(in_order).into_iter().map(|u| u.ids));
    let third = tx.chain(&bufs);
    assert_eq!(r.engine.process_tx(TX, &mut tq).unwrap(), 1);
    batches.extend(tx.used_descs(in_order).into_iter().map(|u| u.ids));
    if in_order {
        assert_eq!(batches, [ids.clone(), vec![third]]);
    } else {
        assert_eq!(batches, [vec![ids[0]], vec![ids[1]], vec![third]]);
    }
    assert_eq!(*r.output.0.lock().unwrap(), [f.clone(), f.clone(), f]);
    assert_eq!(tq.next_used(), tx.next_used());
    assert_eq!(r.irqs.take(), [TX, TX]);
}

#[test]
fn frames_go_through_packed_rings_and_spread_over_mergeable_buffers() {
    packed_forwarding(false);
}

#[test]
fn in_order_packed_rings_return_transmitted_chains_in_batches() {
    packed_forwarding(true);
}

#[test]
fn in_order_a_malformed_rx_chain_is_returned_after_the_ones_taken_before_it() {
    let mut r = Rig::new(VERSION_1 | features::MRG_RXBUF);
    let mem = r.mem.clone();
    r.inject(&[frame(OWN, 250, None)]);
    let mut rx = Driver::new(&mem, RX_RING, 16);
    let good = rx_buffers(&mut rx, RX_BUF, 2, 100);
    let bad = rx.chain(&[(RX_BUF + 0x3000, 100, false)]);
    let mut q = rx.queue_in_order(false);
    r.engine.process_rx(RX, &mut q).unwrap();
    assert_eq!(
        rx.used_batches(),
        [
            (good[0], 0, vec![good[0]]),
            (good[1], 0, vec![good[1]]),
            (bad, 0, vec![bad])
        ]
    );
    assert_eq!(r.count(|s| &s.rx_malformed), 1);
}

#[test]
fn hostile_packed_chains_are_typed_counted_and_returned_empty() {
    use crate::queue::packed::DESC_F_NEXT;
    let mut r = Rig::new(VERSION_1 | crate::virtio::features::RING_PACKED);
    let mem = r.mem.clone();
    let mut tx = PackedDriver::new(&mem, TX_RING, 16);
    // A buffer outside RAM; a list whose second descriptor is not available (slot 2 was
    // never written); then, from slot 2 on, a device-writable buffer, more bytes than any
    // frame (in an indirect table), shorter than the header, an empty indirect table, and
    // a good one.
    tx.chain(&[(RAM + 0x1000, 64, false)]);
    tx.raw_chain(&[(TX_BUF, 64, DESC_F_NEXT)], 9);
    let mut q = tx.queue(false);
    // What is wrong with each, seen from a second device side that only looks.
    let mut look = tx.queue(false);
    let mut c = Chain::default();
    let mut buf = Vec::new();
    let mut next = |look: &mut crate::queue::PackedQueue| {
        assert!(look.pop(&r.mem, &mut c).unwrap());
        chain::gather(&mut buf, &r.mem, &c, HDR)
    };
    let e = next(&mut look).unwrap_err();
    assert!(matches!(e, ChainError::Buffer { addr, len: 64, .. } if addr == RAM + 0x1000));
    assert!(matches!(next(&mut look), Err(ChainError::Cut)));
    assert_eq!(r.engine.process_tx(TX, &mut q).unwrap(), 2);
    assert_eq!(tx.used(), [(0, 0), (9, 0)]);

    tx.chain(&[(TX_BUF, 12, false), (TX_BUF + 0x100, 64, true)]);
    tx.indirect(
        TX_BUF + 0x1000,
        &[(TX_BUF, 40_000, false), (TX_BUF, 40_000, false)],
    );
    tx.chain(&[(TX_BUF, 8, false)]);
    tx.indirect(TX_BUF + 0x2000, &[]);
    tx.chain(&[(TX_BUF, (HDR + 60) as u32, false)]);
    look.set_position(q.position());
    assert!(matches!(next(&mut look), Err(ChainError::WritableInTx)));
    assert!(matches!(
        next(&mut look),
        Err(ChainError::TxTooLong { max: MAX_TX_CHAIN })
    ));
    assert!(matches!(
        next(&mut look),
        Err(ChainError::ShorterThanHeader { len: 8, .. })
    ));
    assert!(matches!(next(&mut look), Err(ChainError::Cut)));
    next(&mut look).unwrap();

    assert_eq!(r.engine.process_tx(TX, &mut q).unwrap(), 5);
    let used = tx.used();
    assert_eq!(used.len(), 5);
    assert!(used.iter().all(|&(_, len)| len == 0));
    assert_eq!(r.count(|s| &s.tx_malformed), 6);
    assert_eq!(r.count(|s| &s.tx_frames), 1);
    assert!(
        !r.health.needs_reset(),
        "a bad chain is not a reason to reset"
    );

    // Receive: a readable buffer, one running past the end of RAM, an empty one: each
    // returned empty and counted, the frame waits for the good one after them.
    r.inject(&[frame(OWN, 60, None)]);
    let mut rx = PackedDriver::new(&mem, RX_RING, 8);
    rx.chain(&[(RX_BUF, 256, false)]);
    rx.chain(&[(RAM - 16, 256, true)]);
    rx.chain(&[(RX_BUF, 0, true)]);
    let good = rx.chain(&[(RX_BUF + 0x1000, 256, true)]);
    let mut q = rx.queue(false);
    r.engine.process_rx(RX, &mut q).unwrap();
    let used = rx.used();
    assert_eq!(used.len(), 4);
    assert_eq!(used[3], (good, (HDR + 60) as u32));
    assert_eq!(r.count(|s| &s.rx_malformed), 3);
    assert_eq!(r.count(|s| &s.rx_delivered), 1);
}

// Several queue pairs: steering, hash reports, the order of transmit queues.

const MQ_NEGOTIATED: u64 =
    VERSION_1 | features::CTRL_VQ | features::MQ | features::RSS | features::HASH_REPORT;
const HASH_HDR: usize = crate::net::NET_HDR_LEN_HASH;

/// Where pair k's queues are (the first pair's and the control queue's are the tests' usual
/// ones), and its receive buffers.
fn rx_ring(pair: u16) -> u64 {
    if pair == 0 {
        RX_RING
    } else {
        0x3000 + 0x2000 * u64::from(pair)
    }
}
fn tx_ring(pair: u16) -> u64 {
    if pair == 0 {
        TX_RING
    } else {
        rx_ring(pair) + 0x1000
    }
}
fn rx_bufs_of(pair: u16) -> u64 {
    RX_BUF + 0x8000 * u64::from(pair)
}

/// A TCP/IPv4 frame of Microsoft's verification vectors: (source, source port,
/// destination, destination port, IPv4 hash, TCP hash under the default key).
type Vector = ([u8; 4], u16, [u8; 4], u16, u32, u32);
const VECTORS: [Vector; 5] = [
    (
        [66, 9, 149, 187],
        2794,
        [161, 142, 100, 80],
        1766,
        0x323e8fc2,
        0x51ccc178,
    ),
    (
        [199, 92, 111, 2],
        14230,
        [65, 69, 140, 83],
        4739,
        0xd718262a,
        0xc626b0ea,
    ),
    (
        [24, 19, 198, 95],
        12898,
        [12, 22, 207, 184],
        38024,
        0xd2d0a5de,
        0x5c2b394a,
    ),
    (
        [38, 27, 205, 30],
        48228,
        [209, 142, 163, 6],
        2217,
        0x82989176,
        0xafc7327f,
    ),
    (
        [153, 39, 163, 191],
        44251,
        [202, 188, 127, 2],
        1303,
        0x5d1809c5,
        0x10e828a2,
    ),
];

fn tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut f = OWN.to_vec();
    f.extend([0x02, 0, 0, 0, 0, 9, 0x08, 0x00]);
    f.extend([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0]);
    f.extend(src);
    f.extend(dst);
    f.extend(sport.to_be_bytes());
    f.extend(dport.to_be_bytes());
    f.extend([0; 16]);
    f
}

fn vector(i: usize) -> Vec<u8> {
    let (src, sport, dst, dport, _, _) = VECTORS[i];
    tcp4(src, sport, dst, dport)
}

fn rss_config(types: u32, table: &[u16], max_tx_vq: u16) -> Vec<u8> {
    let mut b = types.to_le_bytes().to_vec();
    b.extend((table.len() as u16 - 1).to_le_bytes());
    b.extend(0u16.to_le_bytes());
    table.iter().for_each(|q| b.extend(q.to_le_bytes()));
    b.extend(max_tx_vq.to_le_bytes());
    b.push(40);
    b.extend(crate::net::steering::DEFAULT_KEY);
    b
}

/// Serves the receive queues `qs` (pair k's at k) once.
fn rx_pass(r: &mut Rig, qs: &mut [SplitQueue]) -> (usize, Option<usize>) {
    let mut rings: Vec<(u16, &mut dyn DeviceQueue)> = qs
        .iter_mut()
        .enumerate()
        .map(|(k, q)| ((2 * k) as u16, q as &mut dyn DeviceQueue))
        .collect();
    r.engine.process_rx_pairs(&mut rings[..]).unwrap()
}

/// The header and frame of each chain used since the last call.
fn received_with_headers(rx: &mut Driver) -> Vec<(Vec<u8>, Vec<u8>)> {
    rx.written()
        .into_iter()
        .map(|b| (b[..HASH_HDR].to_vec(), b[HASH_HDR..].to_vec()))
        .collect()
}

#[test]
fn rss_steers_each_frame_to_the_queue_its_table_entry_names_with_the_hash_in_its_header() {
    let mut r = Rig::with_pairs(MQ_NEGOTIATED, 4);
    let mem = r.mem.clone();
    let mut ctrl = Driver::new(&mem, CTRL_RING, 16);
    let mut cq = ctrl.queue(false);
    assert_eq!(
        command(
            &mut r,
            &mut ctrl,
            &mut cq,
            class::MQ,
            0,
            &4u16.to_le_bytes()
        ),
        ctrl::OK
    );
    let table: Vec<u16> = (0..128).map(|i| i % 4).collect();
    let cfg = rss_config(rss::hash_type::TCPV4 | rss::hash_type::IPV4, &table, 4);
    assert_eq!(
        command(&mut r, &mut ctrl, &mut cq, class::MQ, 1, &cfg),
        ctrl::OK
    );
    let frames: Vec<Vec<u8>> = (0..5).map(vector).collect();
    r.inject(&frames);
    let mut rx: Vec<Driver> = (0..4).map(|p| Driver::new(&mem, rx_ring(p), 16)).collect();
    for (p, d) in rx.iter_mut().enumerate() {
        rx_buffers(d, rx_bufs_of(p as u16), 4, 2048);
    }
    let mut qs: Vec<SplitQueue> = rx.iter().map(|d| d.queue(false)).collect();
    assert_eq!(rx_pass(&mut r, &mut qs), (5, None));
    // The table's entry (hash & 127) is (hash & 127) % 4: hash % 4.
    let mut want: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); 4];
    for (i, &(_, _, _, _, _, tcp)) in VECTORS.iter().enumerate() {
        let mut hdr = vec![0u8; HASH_HDR];
        hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
        hdr[12..16].copy_from_slice(&tcp.to_le_bytes());
        hdr[16..18].copy_from_slice(&(rss::Report::Tcpv4 as u16).to_le_bytes());
        want[(tcp % 4) as usize].push((hdr, frames[i].clone()));
    }
    for (p, d) in rx.iter_mut().enumerate() {
        assert_eq!(received_with_headers(d), want[p], "pair {p}");
    }
    assert_eq!(r.stats.snapshot().rx_delivered_per_queue, [1, 0, 3, 1]);
    // The header of the first vector, byte by byte: num_buffers 1, hash 0x51ccc178,
    // report 2 (TCPv4), padding.
    assert_eq!(
        want[0][0].0,
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0x78, 0xc1, 0xcc, 0x51, 2, 0, 0, 0]
    );
}

#[test]
fn a_frame_waits_for_a_buffer_of_its_own_queue_and_the_frames_behind_it_wait_too() {
    let mut r = Rig::with_pairs(MQ_NEGOTIATED, 2);
    let mem = r.mem.clone();
    let mut ctrl = Driver::new(&mem, CTRL_RING, 16);
    let mut cq = ctrl.queue(false);
    // Everything TCP to pair 1, the rest (unclassified) to pair 0.
    let cfg = rss_config(rss::hash_type::TCPV4, &[1], 2);
    assert_eq!(
        command(&mut r, &mut ctrl, &mut cq, class::MQ, 1, &cfg),
        ctrl::OK
    );
    let other = frame(OWN, 80, None);
    r.inject(&[vector(0), other.clone()]);
    let mut rx0 = Driver::new(&mem, rx_ring(0), 16);
    let mut rx1 = Driver::new(&mem, rx_ring(1), 16);
    rx_buffers(&mut rx0, rx_bufs_of(0), 4, 2048);
    let mut qs = vec![rx0.queue(false), rx1.queue(false)];
    assert_eq!(rx_pass(&mut r, &mut qs), (0, Some(1)));
    assert!(rx0.used().is_empty(), "the frame behind waits in order");
    rx_buffers(&mut rx1, rx_bufs_of(1), 1, 2048);
    assert_eq!(rx_pass(&mut r, &mut qs), (2, None));
    let got1 = received_with_headers(&mut rx1);
    assert_eq!(got1.len(), 1);
    assert_eq!(got1[0].1, vector(0));
    assert_eq!(got1[0].0[12..16], 0x51cc_c178u32.to_le_bytes());
    let got0 = received_with_headers(&mut rx0);
    assert_eq!(got0.len(), 1);
    assert_eq!(got0[0].1, other);
    assert_eq!(got0[0].0[12..20], [0; 8], "not hashed: hash 0, report none");
}

#[test]
fn the_hash_config_reports_hashes_on_one_pair_and_nothing_before_it() {
    let negotiated = VERSION_1 | features::CTRL_VQ | features::HASH_REPORT;
    let mut r = Rig::new(negotiated);
    let mem = r.mem.clone();
    let mut rx = Driver::new(&mem, RX_RING, 16);
    rx_buffers(&mut rx, RX_BUF, 4, 2048);
    let mut q = rx.queue(false);
    r.inject(&[vector(1)]);
    assert_eq!(r.engine.process_rx(RX, &mut q).unwrap(), (1, false));
    let got = received_with_headers(&mut rx);
    assert_eq!(
        got[0].0[10..],
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        "no hash yet"
    );
    let mut ctrl = Driver::new(&mem, CTRL_RING, 16);
    let mut cq = ctrl.queue(false);
    let mut cfg = rss::hash_type::IPV4.to_le_bytes().to_vec();
    cfg.extend([0; 8]);
    cfg.push(40);
    cfg.extend(crate::net::steering::DEFAULT_KEY);
    assert_eq!(
        command(&mut r, &mut ctrl, &mut cq, class::MQ, 2, &cfg),
        ctrl::OK
    );
    // RSS and multiqueue commands need their features.
    assert_eq!(
        command(
            &mut r,
            &mut ctrl,
            &mut cq,
            class::MQ,
            0,
            &1u16.to_le_bytes()
        ),
        ctrl::ERR
    );
    r.inject(&[vector(1)]);
    assert_eq!(r.engine.process_rx(RX, &mut q).unwrap(), (1, false));
    let got = received_with_headers(&mut rx);
    assert_eq!(
        got[0].0[12..16],
        VECTORS[1].4.to_le_bytes(),
        "the IPv4 hash"
    );
    assert_eq!(
        got[0].0[16..20],
        [1, 0, 0, 0],
        "VIRTIO_NET_HASH_REPORT_IPv4"
    );
    assert_eq!(got[0].1, vector(1));
}

/// Makes `frame` (behind a `hdr_len`-byte header) available on `tx`, its bytes at `at`.
fn send(r: &Rig, tx: &mut Driver, at: u64, hdr_len: usize, frame: &[u8]) -> u16 {
    r.mem
        .write_slice(&vec![0; hdr_len], GuestAddress(at))
        .unwrap();
    r.mem
        .write_slice(frame, GuestAddress(at + hdr_len as u64))
        .unwrap();
    tx.chain(&[(at, (hdr_len + frame.len()) as u32, false)])
}

#[test]
fn transmit_queues_are_served_in_pair_order_and_the_sink_learns_each_frames_queue() {
    let mut r = Rig::with_pairs(MQ_NEGOTIATED, 3);
    let mem = r.mem.clone();
    let mut ctrl = Driver::new(&mem, CTRL_RING, 16);
    let mut cq = ctrl.queue(false);
    let mut tx: Vec<Driver> = (0..3).map(|p| Driver::new(&mem, tx_ring(p), 16)).collect();
    // Pair 2 first, then 1, then 0, as a driver might fill them.
    for p in (0..3u16).rev() {
        for k in 0..2u64 {
            let f = frame(OTHER, 60 + 10 * usize::from(p) + k as usize, None);
            let at = TX_BUF + 0x4000 * u64::from(p) + 0x1000 * k;
            send(&r, &mut tx[usize::from(p)], at, HASH_HDR, &f);
        }
    }
    let mut qs: Vec<SplitQueue> = tx.iter().map(|d| d.queue(false)).collect();
    // One pair in use: the others' transmit queues are left alone.
    for (p, q) in qs.iter_mut().enumerate() {
        let want = if p == 0 { 2 } else { 0 };
        assert_eq!(r.engine.process_tx(2 * p as u16 + 1, q).unwrap(), want);
    }
    assert!(tx[1].used().is_empty() && tx[2].used().is_empty());
    assert_eq!(
        command(
            &mut r,
            &mut ctrl,
            &mut cq,
            class::MQ,
            0,
            &3u16.to_le_bytes()
        ),
        ctrl::OK
    );
    for (p, q) in qs.iter_mut().enumerate() {
        assert_eq!(
            r.engine.process_tx(2 * p as u16 + 1, q).unwrap(),
            if p == 0 { 0 } else { 2 }
        );
    }
    let lens: Vec<usize> = r.output.0.lock().unwrap().iter().map(Vec::len).collect();
    assert_eq!(
        lens,
        [60, 61, 70, 71, 80, 81],
        "pair 0, 1, 2: the order served"
    );
    assert_eq!(*r.output.1.lock().unwrap(), [0, 0, 1, 1, 2, 2]);
    assert_eq!(r.stats.snapshot().tx_frames_per_queue, [2, 2, 2]);
}

#[test]
fn without_rss_a_flow_is_received_where_the_driver_last_sent_it() {
    let negotiated = VERSION_1 | features::CTRL_VQ | features::MQ;
    let mut r = Rig::with_pairs(negotiated, 2);
    let mem = r.mem.clone();
    let mut ctrl = Driver::new(&mem, CTRL_RING, 16);
    let mut cq = ctrl.queue(false);
    assert_eq!(
        command(
            &mut r,
            &mut ctrl,
            &mut cq,
            class::MQ,
            0,
            &2u16.to_le_bytes()
        ),
        ctrl::OK
    );
    // RSS is not negotiated.
    assert_eq!(
        command(
            &mut r,
            &mut ctrl,
            &mut cq,
            class::MQ,
            1,
            &rss_config(1, &[0], 2)
        ),
        ctrl::ERR
    );
    let mut rx: Vec<Driver> = (0..2).map(|p| Driver::new(&mem, rx_ring(p), 16)).collect();
    for (p, d) in rx.iter_mut().enumerate() {
        rx_buffers(d, rx_bufs_of(p as u16), 8, 2048);
    }
    let mut qs: Vec<SplitQueue> = rx.iter().map(|d| d.queue(false)).collect();
    // Before any transmit: the TCP hash modulo 2 (the vectors' 0x51ccc178 and 0xafc7327f:
    // pair 0 and pair 1).
    r.inject(&[vector(0), vector(3)]);
    assert_eq!(rx_pass(&mut r, &mut qs), (2, None));
    assert_eq!(received(&mut rx[0]), [vector(0)]);
    assert_eq!(received(&mut rx[1]), [vector(3)]);
    // The driver answers vector 0's flow on pair 1: the flow follows.
    let (src, sport, dst, dport, _, _) = VECTORS[0];
    let reply = tcp4(dst, dport, src, sport);
    let mut tx1 = Driver::new(&mem, tx_ring(1), 16);
    send(&r, &mut tx1, TX_BUF, HDR, &reply);
    assert_eq!(r.engine.process_tx(3, &mut tx1.queue(false)).unwrap(), 1);
    r.inject(&[vector(0), vector(3)]);
    assert_eq!(rx_pass(&mut r, &mut qs), (2, None));
    assert_eq!(received(&mut rx[1]), [vector(0), vector(3)]);
    assert!(rx[0].used().is_empty());
}
