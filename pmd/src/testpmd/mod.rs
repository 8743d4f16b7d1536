//! A testpmd-like application on the PMD: its ports (the first `ports=N` virtio-net
//! functions), their setup (queue pairs, RSS, receive modes, MAC and VLAN filters, VLAN
//! offloads), one forwarding engine serving every stream in a fixed order, testpmd-style
//! statistics on the console, and a verdict as the exit code.
//!
//! The guest image and the in-process machine both run [`run`], so the two machines execute
//! the same forwarding code and must produce the same frames and the same log.

use alloc::vec::Vec;
use core::fmt::Write as _;

use crate::console::Console;
use crate::hal::Hal;
use crate::harness::{event, exit, Harness};
use crate::mbuf::{flags, Mbuf, MbufPool};
use crate::net::rss::{self, Steering};
use crate::net::{features, Port, PortConfig, TX_VLAN};
use crate::sprintln;
/// The command line, and txonly's frames: shared with the hostile mode, which lives in
/// [`crate::hostile`] (testpmd dispatches to it, it uses neither testpmd nor its engine).
pub use crate::{config, frames as txonly};
pub use config::{Config, Mode, Stream, Topology};

#[cfg(test)]
mod tests;

/// Empty rounds over every stream between two looks at the harness's "input drained" bits:
/// each look is a VM exit, so the driver looks only once it has been idle for a while.
const IDLE_POLLS_PER_HARNESS_CHECK: u32 = 256;

/// What the forwarding engine counted (testpmd's "Forward statistics"), for a port or a
/// stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdStats {
    /// Frames received (on the port; by the stream).
    pub rx: u64,
    /// Frames handed to the transmit queues (of the port; of the stream).
    pub tx: u64,
    /// Frames the engine could not transmit (no mbufs to re-segment them).
    pub dropped: u64,
}

/// Runs the application described by `cmdline` and returns its exit code (see
/// [`crate::harness::exit`](mod@crate::harness::exit)). The caller writes it to the exit
/// port.
pub fn run<H: Hal>(hal: &H, cmdline: &str) -> u32 {
    let cfg = match Config::parse(cmdline) {
        Ok(cfg) => cfg,
        Err(e) => {
            sprintln!(hal, "vlab-pmd: bad command line: {e}");
            return exit::BAD_CONFIG;
        }
    };
    if cfg.mode == Mode::Hostile {
        return crate::hostile::run(hal, &cfg);
    }
    if cfg.mode == Mode::TxOnly && cfg.pkts == 0 {
        sprintln!(
            hal,
            "vlab-pmd: bad command line: txonly needs pkts=N (N > 0)"
        );
        return exit::BAD_CONFIG;
    }
    {
        let mut c = Console::new(hal);
        let _ = write!(
            c,
            "vlab-pmd: mode={} burst={} rxd={} txd={} mbufs={} rxbuf={} transport={}",
            cfg.mode.name(),
            cfg.burst,
            cfg.rxd,
            cfg.txd,
            cfg.pool_size(),
            cfg.rxbuf,
            cfg.transport.name()
        );
        if cfg.ports > 1 || cfg.rxq > 1 {
            let _ = write!(
                c,
                " ports={} rxq={} txq={} port-topology={}",
                cfg.ports,
                cfg.rxq,
                cfg.txq,
                cfg.topology.name()
            );
        }
        let _ = writeln!(c);
    }
    let Some(pool) = cfg.mbuf_pool(hal) else {
        return exit::DEVICE_ERROR;
    };
    if cfg.verbose {
        crate::pci::find_on_bus0(hal, |bdf, vendor, device| {
            let bars = crate::pci::ConfigSpace::new(hal, bdf).raw_bars();
            sprintln!(hal, "PCI {bdf} {vendor:04x}:{device:04x} BARs {bars:08x?}");
            None::<()>
        });
    }
    let port_cfg = PortConfig {
        transport: cfg.transport,
        rx_ring: cfg.rxd,
        tx_ring: cfg.txd,
        queue_pairs: cfg.rxq,
        rss: cfg.rss.clone(),
        features: cfg.features,
        lsc: cfg.lsc,
        vlan_strip: cfg.vlan_strip,
        force_features: cfg.force_features,
        probe_queue_size: cfg.probe_queue_size,
    };
    let mut ports: Vec<Port<'_, H>> = Vec::with_capacity(usize::from(cfg.ports));
    for id in 0..cfg.ports {
        let mut port = match Port::open(hal, &pool, id, &port_cfg) {
            Ok(p) => p,
            Err(e) => {
                sprintln!(hal, "vlab-pmd: port {id}: {e}");
                return if e.is_config() {
                    exit::BAD_CONFIG
                } else {
                    exit::DEVICE_ERROR
                };
            }
        };
        if let (Some(asked), Some(got)) = (cfg.probe_queue_size, port.probed_queue_size) {
            sprintln!(
                hal,
                "Port {id}: queue 0 size {asked} written, the device reads back {got}"
            );
        }
        for a in &port.adjusted {
            sprintln!(
                hal,
                "Warning: port {id} queue {} does not take {} descriptors, using {}",
                a.queue,
                a.asked,
                a.used
            );
        }
        if let Some(note) = cfg.ring_note() {
            sprintln!(hal, "Port {id}: {note}");
        }
        print_port(hal, &port);
        if let Err(why) = setup_port(hal, &mut port, &cfg) {
            sprintln!(hal, "vlab-pmd: FAIL: port setup: {why}");
            return exit::CHECK_FAILED;
        }
        ports.push(port);
    }
    if cfg.ports > 1 && cfg.ports % 2 == 1 && cfg.topology == Topology::Paired {
        sprintln!(
            hal,
            "Warning! port-topology=paired and odd forward ports number, the last port will pair with itself."
        );
    }
    let harnesses: Vec<Harness<'_, H>> = (0..cfg.ports)
        .map(|id| Harness::probe_port(hal, id))
        .collect();
    // Events are the guest's, whichever block they go to: port 0's says them once.
    let harness = &harnesses[0];
    for port in &ports {
        if !port.link_up() {
            sprintln!(
                hal,
                "vlab-pmd: FAIL: {}link is down",
                prefix(&ports, port.id())
            );
            return exit::CHECK_FAILED;
        }
    }
    harness.event(event::LINK_UP);

    // The line a harness without vlab's ports (QEMU's) waits for before sending frames.
    for port in &ports {
        sprintln!(
            hal,
            "Port {}: started {} forwarding",
            port.id(),
            cfg.mode.name()
        );
    }
    harness.event(event::FWD_START);
    let streams = cfg.streams();
    let mut engine = Engine {
        hal,
        pool: &pool,
        cfg: &cfg,
        fwd: alloc::vec![FwdStats::default(); ports.len()],
        stream_fwd: alloc::vec![FwdStats::default(); streams.len()],
        streams,
    };
    match cfg.mode {
        Mode::Io | Mode::MacSwap | Mode::RxOnly => engine.receive_loop(&mut ports, &harnesses),
        Mode::TxOnly => engine.txonly_loop(&mut ports),
        // Runs its own loop (dispatched above).
        Mode::Hostile => {}
    }
    // Every frame must have left before the verdict: wait for the device to return them.
    for port in &mut ports {
        while port.tx_in_flight() != 0 {
            port.tx_cleanup();
            hal.relax();
        }
    }
    harness.event(event::FWD_DONE);

    print_stats(hal, &ports, &engine);
    match check(&ports, &harnesses, &cfg, &engine.fwd) {
        Ok(()) => {
            sprintln!(hal, "vlab-pmd: PASS");
            exit::PASS
        }
        Err(why) => {
            sprintln!(hal, "vlab-pmd: FAIL: {why}");
            exit::CHECK_FAILED
        }
    }
}

/// What a message about port `id` starts with: nothing when there is one port (the
/// messages of a one-port run stay as they were), "port N: " otherwise.
fn prefix<H: Hal>(ports: &[Port<'_, H>], id: u8) -> alloc::string::String {
    if ports.len() > 1 {
        alloc::format!("port {id}: ")
    } else {
        alloc::string::String::new()
    }
}

fn mac_str(m: [u8; 6]) -> impl core::fmt::Display {
    struct Mac([u8; 6]);
    impl core::fmt::Display for Mac {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            let m = self.0;
            write!(
                f,
                "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            )
        }
    }
    Mac(m)
}

fn print_port<H: Hal>(hal: &H, port: &Port<'_, H>) {
    let id = port.id();
    {
        let mut c = Console::new(hal);
        let _ = write!(
            c,
            "Port {id}: {} {} transport, rxd={} txd={}, header {} bytes, features",
            mac_str(port.mac()),
            port.transport().name(),
            port.rx_ring_size(),
            port.tx_ring_size(),
            port.hdr_len()
        );
        for (bit, name) in features::NAMES {
            if port.features() & bit != 0 {
                let _ = write!(c, " {name}");
            }
        }
        if let Some(mtu) = port.mtu() {
            let _ = write!(c, ", MTU {mtu}");
        }
        let _ = writeln!(c, ", link {}", if port.link_up() { "up" } else { "down" });
    }
    if port.features() & (features::MQ | features::RSS) != 0 {
        sprintln!(
            hal,
            "Port {id}: {} of {} queue pairs",
            port.queue_pairs(),
            port.max_queue_pairs()
        );
    }
    if let Some(steering) = port.steering() {
        let mut c = Console::new(hal);
        let _ = write!(c, "Port {id}: ");
        let _ = match steering {
            Steering::Rss(_) => write!(c, "RSS hash types "),
            Steering::HashOnly(_) => write!(c, "hash reports for types "),
        };
        let _ = rss::write_types(&mut c, steering.hash_types());
        let _ = write!(
            c,
            " ({:#x}), {}-byte key",
            steering.hash_types(),
            steering.key().len()
        );
        if let Steering::Rss(r) = steering {
            let _ = write!(
                c,
                ", {}-entry indirection table, unclassified to queue {}",
                r.table.len(),
                r.unclassified
            );
        }
        let _ = writeln!(c);
    }
}

/// Applies the port setup the command line asks for, through the control queue. A command
/// the device refuses is reported; one it cannot take at all fails the setup.
fn setup_port<H: Hal>(
    hal: &H,
    port: &mut Port<'_, H>,
    cfg: &Config,
) -> Result<(), alloc::string::String> {
    use alloc::format;
    let id = port.id();
    let has_rx = port.features() & features::CTRL_RX != 0;
    if has_rx {
        port.set_promiscuous(cfg.promisc)
            .map_err(|e| format!("promiscuous: {e}"))?;
        port.set_allmulticast(cfg.allmulti)
            .map_err(|e| format!("all-multicast: {e}"))?;
        sprintln!(
            hal,
            "Port {id}: promiscuous {}, all-multicast {}",
            if cfg.promisc { "on" } else { "off" },
            if cfg.allmulti { "on" } else { "off" }
        );
    } else if !cfg.promisc || cfg.allmulti {
        return Err("receive modes need VIRTIO_NET_F_CTRL_RX, which is not negotiated".into());
    }
    if let Some(mac) = cfg.mac_set {
        port.set_mac_addr(mac)
            .map_err(|e| format!("MAC address: {e}"))?;
        sprintln!(hal, "Port {id}: MAC address set to {}", mac_str(mac));
    }
    if !cfg.mac_add.is_empty() {
        let (multi, uni): (Vec<[u8; 6]>, Vec<[u8; 6]>) =
            cfg.mac_add.iter().partition(|m| m[0] & 1 != 0);
        port.set_mac_table(&uni, &multi)
            .map_err(|e| format!("MAC table: {e}"))?;
        sprintln!(
            hal,
            "Port {id}: MAC table: {} unicast, {} multicast",
            uni.len(),
            multi.len()
        );
    }
    for &vid in &cfg.vlan_filter {
        port.vlan_filter(vid, true)
            .map_err(|e| format!("VLAN {vid}: {e}"))?;
    }
    if !cfg.vlan_filter.is_empty() {
        sprintln!(hal, "Port {id}: VLAN filter: {:?}", cfg.vlan_filter);
    }
    if let Some((class, cmd, data)) = &cfg.ctrl_probe {
        let (class, cmd) = (*class, *cmd);
        match port.ctrl_command(class, cmd, data) {
            Ok(()) => sprintln!(hal, "Port {id}: control command {class}.{cmd}: OK"),
            Err(e) => sprintln!(hal, "Port {id}: control command {class}.{cmd}: {e}"),
        }
    }
    Ok(())
}

struct Engine<'c, 'a, H: Hal> {
    hal: &'c H,
    pool: &'a MbufPool,
    cfg: &'c Config,
    /// The streams, in the order the loop serves them.
    streams: Vec<Stream>,
    /// Per port: frames received on it, sent and dropped on its way out.
    fwd: Vec<FwdStats>,
    /// Per stream, in `streams` order.
    stream_fwd: Vec<FwdStats>,
}

impl<'a, H: Hal> Engine<'_, 'a, H> {
    /// Notes link changes; returns whether the link is up.
    fn link(&self, port: &mut Port<'a, H>) -> bool {
        if let Some(up) = port.poll_link() {
            sprintln!(
                self.hal,
                "Port {}: link {}",
                port.id(),
                if up { "up" } else { "down" }
            );
        }
        port.link_up()
    }

    /// Copies `m` into a chain of `piece`-byte segments.
    fn split(&self, m: &Mbuf<'a>, piece: usize) -> Option<Mbuf<'a>> {
        let mut head: Option<Mbuf<'a>> = None;
        for s in m.segs() {
            for chunk in s.data().chunks(piece) {
                let mut seg = self.pool.alloc()?;
                seg.append(chunk.len())?.copy_from_slice(chunk);
                match head.as_mut() {
                    Some(h) => h.append_seg(seg),
                    None => head = Some(seg),
                }
            }
        }
        let mut h = head?;
        h.set_vlan_tci(m.vlan_tci());
        h.set_ol_flags(m.ol_flags());
        Some(h)
    }

    /// What every transmitted frame goes through: VLAN insertion flags, re-segmenting.
    /// Returns how many frames were dropped.
    fn prepare_tx(&mut self, pkts: &mut Vec<Mbuf<'a>>) -> u64 {
        if let Some(tci) = self.cfg.vlan_insert {
            for m in pkts.iter_mut() {
                m.set_vlan_tci(tci);
                m.set_ol_flags(m.ol_flags() | TX_VLAN);
            }
        }
        let piece = usize::from(self.cfg.txsplit);
        let mut dropped = 0;
        if piece > 0 {
            let mut out = Vec::with_capacity(pkts.len());
            for m in pkts.drain(..) {
                match self.split(&m, piece) {
                    Some(s) => out.push(s),
                    None => dropped += 1,
                }
            }
            *pkts = out;
        }
        dropped
    }

    /// Transmits all of `pkts` on queue `queue` of `port` for stream `stream`, waiting for
    /// ring space (and for the link while it is down): like testpmd with unlimited
    /// retries, so what comes out does not depend on timing.
    fn send_all(
        &mut self,
        port: &mut Port<'a, H>,
        queue: u16,
        stream: usize,
        pkts: &mut Vec<Mbuf<'a>>,
    ) {
        let p = usize::from(port.id());
        let dropped = self.prepare_tx(pkts);
        self.fwd[p].dropped += dropped;
        self.stream_fwd[stream].dropped += dropped;
        while !pkts.is_empty() {
            if !self.link(port) {
                self.hal.relax();
                continue;
            }
            let sent = port.tx_burst(queue, pkts);
            if sent == 0 {
                self.hal.relax();
            }
            self.fwd[p].tx += sent as u64;
            self.stream_fwd[stream].tx += sent as u64;
        }
    }

    /// testpmd's verbose output of a received burst: one line per frame.
    fn dump(&self, s: Stream, pkts: &[Mbuf<'a>]) {
        for m in pkts {
            let d = m.data();
            let mac = |at: usize| -> [u8; 6] {
                d.get(at..at + 6)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or([0; 6])
            };
            let ethertype = d
                .get(12..14)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            let mut c = Console::new(self.hal);
            let _ = write!(
                c,
                "port {}/queue {}: src={} - dst={} - type={:#06x} - length={} - nb_segs={}",
                s.rx_port,
                s.rx_queue,
                mac_str(mac(6)),
                mac_str(mac(0)),
                ethertype,
                m.pkt_len(),
                m.nb_segs()
            );
            if m.ol_flags() & flags::RX_RSS_HASH != 0 {
                let _ = write!(
                    c,
                    " - RSS hash={:#x} - RSS queue={:#x} - hash type={}",
                    m.rss_hash(),
                    s.rx_queue,
                    m.hash_report()
                );
            }
            if m.ol_flags() & flags::RX_VLAN_STRIPPED != 0 {
                let _ = write!(c, " - VLAN tci={:#x}", m.vlan_tci());
            }
            let _ = writeln!(c);
        }
    }

    /// io, macswap and rxonly: serves every stream in order, round after round, until the
    /// harness says every port's input is drained and one more round finds nothing (or,
    /// without a harness, until `expect` frames arrived; or until every port forwarded its
    /// end marker).
    fn receive_loop(&mut self, ports: &mut [Port<'a, H>], harnesses: &[Harness<'_, H>]) {
        let burst = usize::from(self.cfg.burst);
        let mut pkts: Vec<Mbuf<'a>> = Vec::with_capacity(burst);
        let mut drained = alloc::vec![false; ports.len()];
        let mut ended = alloc::vec![false; ports.len()];
        let one_stream = self.streams.len() == 1;
        let mut idle = 0u32;
        'rounds: loop {
            for port in ports.iter_mut() {
                self.link(port);
            }
            let mut got = 0usize;
            for s in 0..self.streams.len() {
                let st = self.streams[s];
                let rx = usize::from(st.rx_port);
                let n = ports[rx].rx_burst(st.rx_queue, &mut pkts, burst);
                if n == 0 {
                    continue;
                }
                got += n;
                self.fwd[rx].rx += n as u64;
                self.stream_fwd[s].rx += n as u64;
                if self.cfg.verbose {
                    self.dump(st, &pkts);
                }
                if let Some(t) = self.cfg.end_ethertype {
                    ended[rx] |= pkts
                        .iter()
                        .any(|m| m.data().get(12..14) == Some(&t.to_be_bytes()[..]));
                }
                match self.cfg.mode {
                    Mode::RxOnly => pkts.clear(),
                    Mode::MacSwap => pkts.iter_mut().for_each(swap_macs),
                    Mode::Io | Mode::TxOnly | Mode::Hostile => {}
                }
                self.send_all(
                    &mut ports[usize::from(st.tx_port)],
                    st.tx_queue,
                    s,
                    &mut pkts,
                );
                if one_stream && ended[rx] {
                    // The marker came last: nothing is left to wait for.
                    break 'rounds;
                }
            }
            if self.cfg.end_ethertype.is_some() && ended.iter().all(|&e| e) {
                // Other queues may still hold frames the device steered before the
                // markers: a last round that finds nothing ends.
                if got == 0 {
                    break;
                }
                continue;
            }
            if got > 0 {
                idle = 0;
                continue;
            }
            let received: u64 = self.fwd.iter().map(|f| f.rx).sum();
            if drained.iter().all(|&d| d) || (self.cfg.expect != 0 && received >= self.cfg.expect) {
                break;
            }
            idle += 1;
            self.hal.relax();
            if idle == IDLE_POLLS_PER_HARNESS_CHECK {
                idle = 0;
                // Without a harness nothing says the input ended: run until `expect`.
                for (d, h) in drained.iter_mut().zip(harnesses) {
                    if !*d {
                        *d = h.input_drained() == Some(true);
                    }
                }
            }
        }
    }

    /// txonly: every port sends `pkts` generated frames, a burst at a time on each stream
    /// that transmits on it, in stream order.
    fn txonly_loop(&mut self, ports: &mut [Port<'a, H>]) {
        let burst = usize::from(self.cfg.burst);
        let templates: Vec<txonly::Template> = ports
            .iter()
            .map(|p| txonly::Template::new(usize::from(self.cfg.size), p.mac()))
            .collect();
        let mut pkts: Vec<Mbuf<'a>> = Vec::with_capacity(burst);
        let mut seq = alloc::vec![0u64; ports.len()];
        while seq.iter().any(|&n| n < self.cfg.pkts) {
            for s in 0..self.streams.len() {
                let st = self.streams[s];
                let p = usize::from(st.tx_port);
                if seq[p] >= self.cfg.pkts {
                    continue;
                }
                while pkts.len() < burst && seq[p] < self.cfg.pkts {
                    let Some(mut m) = self.pool.alloc() else {
                        // Everything is in the tx rings: let the device return some.
                        ports[p].tx_cleanup();
                        self.hal.relax();
                        break;
                    };
                    let Some(frame) = m.append(templates[p].len()) else {
                        break;
                    };
                    templates[p].fill(frame, seq[p]);
                    pkts.push(m);
                    seq[p] += 1;
                }
                self.send_all(&mut ports[p], st.tx_queue, s, &mut pkts);
            }
        }
    }
}

fn swap_macs(m: &mut Mbuf<'_>) {
    let d = m.data_mut();
    if d.len() >= 12 {
        for i in 0..6 {
            d.swap(i, i + 6);
        }
    }
}

fn print_stats<H: Hal>(hal: &H, ports: &[Port<'_, H>], engine: &Engine<'_, '_, H>) {
    // As testpmd: each stream's counts when there are more streams than ports.
    if engine.streams.len() > ports.len() {
        for (s, f) in engine.streams.iter().zip(&engine.stream_fwd) {
            sprintln!(hal, "");
            sprintln!(
                hal,
                "  ------- Forward Stats for RX Port={:2}/Queue={:2} -> TX Port={:2}/Queue={:2} -------",
                s.rx_port,
                s.rx_queue,
                s.tx_port,
                s.tx_queue
            );
            sprintln!(
                hal,
                "  RX-packets: {:<14} TX-packets: {:<14} TX-dropped: {}",
                f.rx,
                f.tx,
                f.dropped
            );
        }
    }
    for (port, fwd) in ports.iter().zip(&engine.fwd) {
        print_port_stats(hal, port, fwd);
    }
    if ports.len() > 1 {
        let (mut rx, mut rx_dropped, mut tx, mut tx_dropped) = (0, 0, 0, 0);
        for (port, fwd) in ports.iter().zip(&engine.fwd) {
            rx += fwd.rx;
            rx_dropped += port.stats.ierrors;
            tx += port.stats.opackets;
            tx_dropped += port.stats.oerrors + fwd.dropped;
        }
        sprintln!(hal, "");
        sprintln!(
            hal,
            "  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++"
        );
        sprintln!(
            hal,
            "  RX-packets: {:<14} RX-dropped: {:<14} RX-total: {}",
            rx,
            rx_dropped,
            rx + rx_dropped
        );
        sprintln!(
            hal,
            "  TX-packets: {:<14} TX-dropped: {:<14} TX-total: {}",
            tx,
            tx_dropped,
            tx + tx_dropped
        );
        sprintln!(
            hal,
            "  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++"
        );
    }
}

fn print_port_stats<H: Hal>(hal: &H, port: &Port<'_, H>, fwd: &FwdStats) {
    let s = &port.stats;
    let id = port.id();
    sprintln!(hal, "");
    sprintln!(
        hal,
        "  ---------------------- Forward statistics for port {id}  ----------------------"
    );
    sprintln!(
        hal,
        "  RX-packets: {:<14} RX-dropped: {:<14} RX-total: {}",
        fwd.rx,
        s.ierrors,
        fwd.rx + s.ierrors
    );
    sprintln!(
        hal,
        "  TX-packets: {:<14} TX-dropped: {:<14} TX-total: {}",
        s.opackets,
        s.oerrors + fwd.dropped,
        s.opackets + s.oerrors + fwd.dropped
    );
    sprintln!(
        hal,
        "  ----------------------------------------------------------------------------"
    );
    sprintln!(hal, "");
    sprintln!(
        hal,
        "  ######################## NIC statistics for port {id}  ########################"
    );
    sprintln!(
        hal,
        "  RX-packets: {:<10} RX-missed: {:<10} RX-bytes:  {}",
        s.ipackets,
        0,
        s.ibytes
    );
    sprintln!(hal, "  RX-errors: {}", s.ierrors);
    sprintln!(hal, "  RX-nombuf:  {}", s.rx_nombuf);
    sprintln!(
        hal,
        "  TX-packets: {:<10} TX-errors: {:<10} TX-bytes:  {}",
        s.opackets,
        s.oerrors,
        s.obytes
    );
    sprintln!(
        hal,
        "  RX-multiseg: {:<9} TX-multiseg: {:<9} TX-indirect: {}",
        s.rx_multiseg,
        s.tx_multiseg,
        s.tx_indirect
    );
    if s.link_down + s.link_up > 0 {
        sprintln!(
            hal,
            "  Link-down: {:<10} Link-up: {}",
            s.link_down,
            s.link_up
        );
    }
    sprintln!(
        hal,
        "  ############################################################################"
    );
}

/// The application's own checks of a finished run: each port's, then the forwarding's
/// as a whole (frames may leave by another port than they came in by).
fn check<H: Hal>(
    ports: &[Port<'_, H>],
    harnesses: &[Harness<'_, H>],
    cfg: &Config,
    fwd: &[FwdStats],
) -> Result<(), alloc::string::String> {
    use alloc::format;
    for ((port, harness), fwd) in ports.iter().zip(harnesses).zip(fwd) {
        let at = prefix(ports, port.id());
        let s = &port.stats;
        if s.ierrors != 0 || s.oerrors != 0 || fwd.dropped != 0 {
            return Err(format!(
                "{at}{} rx errors, {} tx errors, {} frames dropped",
                s.ierrors, s.oerrors, fwd.dropped
            ));
        }
        if !port.link_up() {
            return Err(format!("{at}the link is down at the end"));
        }
        match cfg.mode {
            Mode::TxOnly => {
                if s.opackets != cfg.pkts {
                    return Err(format!("{at}sent {} of {} frames", s.opackets, cfg.pkts));
                }
            }
            Mode::Hostile => {}
            Mode::Io | Mode::MacSwap | Mode::RxOnly => {
                // With an end marker the device side is not ours (a vhost backend): it
                // cannot say what it delivered.
                let delivered = harness
                    .rx_delivered()
                    .filter(|_| cfg.end_ethertype.is_none());
                if let Some(delivered) = delivered {
                    if fwd.rx as u32 != delivered {
                        return Err(format!(
                            "{at}received {} frames, the device delivered {}",
                            fwd.rx, delivered
                        ));
                    }
                }
            }
        }
    }
    if matches!(cfg.mode, Mode::Io | Mode::MacSwap) {
        let rx: u64 = fwd.iter().map(|f| f.rx).sum();
        let tx: u64 = fwd.iter().map(|f| f.tx).sum();
        if tx != rx {
            return Err(format!("received {rx} frames, forwarded {tx}"));
        }
    }
    Ok(())
}
