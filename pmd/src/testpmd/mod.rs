//! A testpmd-like application on the PMD: one port, its setup (receive modes, MAC and VLAN
//! filters, VLAN offloads), one forwarding engine, testpmd-style statistics on the console,
//! and a verdict as the exit code.
//!
//! The guest image and the in-process machine both run [`run`], so the two machines execute
//! the same forwarding code and must produce the same frames and the same log.

use alloc::vec::Vec;
use core::fmt::Write as _;

use crate::console::Console;
use crate::hal::Hal;
use crate::harness::{event, exit, Harness};
use crate::mbuf::{Mbuf, MbufPool};
use crate::net::{features, Port, PortConfig, TX_VLAN};
use crate::sprintln;
/// The command line, and txonly's frames: shared with the hostile mode, which lives in
/// [`crate::hostile`] (testpmd dispatches to it, it uses neither testpmd nor its engine).
pub use crate::{config, frames as txonly};
pub use config::{Config, Mode};

/// The port testpmd forwards on: the first virtio-net function.
const PORT_ID: u8 = 0;

/// Empty rx polls between two looks at the harness's "input drained" bit: each look is a
/// VM exit, so the driver looks only once it has been idle for a while.
const IDLE_POLLS_PER_HARNESS_CHECK: u32 = 256;

/// What the forwarding engine counted (testpmd's "Forward statistics").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdStats {
    pub rx: u64,
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
    sprintln!(
        hal,
        "vlab-pmd: mode={} burst={} rxd={} txd={} mbufs={} rxbuf={} transport={}",
        cfg.mode.name(),
        cfg.burst,
        cfg.rxd,
        cfg.txd,
        cfg.pool_size(),
        cfg.rxbuf,
        cfg.transport.name()
    );
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
        features: cfg.features,
        lsc: cfg.lsc,
        vlan_strip: cfg.vlan_strip,
        force_features: cfg.force_features,
        probe_queue_size: cfg.probe_queue_size,
    };
    let mut port = match Port::open(hal, &pool, PORT_ID, &port_cfg) {
        Ok(p) => p,
        Err(e @ crate::net::Error::HeadroomTooSmall { .. }) => {
            sprintln!(hal, "vlab-pmd: port 0: {e}");
            return exit::BAD_CONFIG;
        }
        Err(e) => {
            sprintln!(hal, "vlab-pmd: port 0: {e}");
            return exit::DEVICE_ERROR;
        }
    };
    if let (Some(asked), Some(got)) = (cfg.probe_queue_size, port.probed_queue_size) {
        sprintln!(
            hal,
            "Port 0: queue 0 size {asked} written, the device reads back {got}"
        );
    }
    for a in &port.adjusted {
        sprintln!(
            hal,
            "Warning: port 0 queue {} does not take {} descriptors, using {}",
            a.queue,
            a.asked,
            a.used
        );
    }
    if let Some(note) = cfg.ring_note() {
        sprintln!(hal, "Port 0: {note}");
    }
    print_port(hal, &port);
    if let Err(why) = setup_port(hal, &mut port, &cfg) {
        sprintln!(hal, "vlab-pmd: FAIL: port setup: {why}");
        return exit::CHECK_FAILED;
    }
    let harness = Harness::probe(hal);
    if !port.link_up() {
        sprintln!(hal, "vlab-pmd: FAIL: link is down");
        return exit::CHECK_FAILED;
    }
    harness.event(event::LINK_UP);

    // The line a harness without vlab's ports (QEMU's) waits for before sending frames.
    sprintln!(hal, "Port 0: started {} forwarding", cfg.mode.name());
    harness.event(event::FWD_START);
    let mut engine = Engine {
        hal,
        pool: &pool,
        cfg: &cfg,
        fwd: FwdStats::default(),
    };
    match cfg.mode {
        Mode::Io | Mode::MacSwap | Mode::RxOnly => engine.receive_loop(&mut port, &harness),
        Mode::TxOnly => engine.txonly_loop(&mut port),
        // Runs its own loop (dispatched above).
        Mode::Hostile => {}
    }
    // Every frame must have left before the verdict: wait for the device to return them.
    while port.tx_in_flight() != 0 {
        port.tx_cleanup();
        hal.relax();
    }
    harness.event(event::FWD_DONE);

    let fwd = engine.fwd;
    print_stats(hal, &port, &fwd);
    match check(&port, &harness, &cfg, &fwd) {
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
    let mut c = Console::new(hal);
    let _ = write!(
        c,
        "Port 0: {} {} transport, rxd={} txd={}, header {} bytes, features",
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

/// Applies the port setup the command line asks for, through the control queue. A command
/// the device refuses is reported; one it cannot take at all fails the setup.
fn setup_port<H: Hal>(
    hal: &H,
    port: &mut Port<'_, H>,
    cfg: &Config,
) -> Result<(), alloc::string::String> {
    use alloc::format;
    let has_rx = port.features() & features::CTRL_RX != 0;
    if has_rx {
        port.set_promiscuous(cfg.promisc)
            .map_err(|e| format!("promiscuous: {e}"))?;
        port.set_allmulticast(cfg.allmulti)
            .map_err(|e| format!("all-multicast: {e}"))?;
        sprintln!(
            hal,
            "Port 0: promiscuous {}, all-multicast {}",
            if cfg.promisc { "on" } else { "off" },
            if cfg.allmulti { "on" } else { "off" }
        );
    } else if !cfg.promisc || cfg.allmulti {
        return Err("receive modes need VIRTIO_NET_F_CTRL_RX, which is not negotiated".into());
    }
    if let Some(mac) = cfg.mac_set {
        port.set_mac_addr(mac)
            .map_err(|e| format!("MAC address: {e}"))?;
        sprintln!(hal, "Port 0: MAC address set to {}", mac_str(mac));
    }
    if !cfg.mac_add.is_empty() {
        let (multi, uni): (Vec<[u8; 6]>, Vec<[u8; 6]>) =
            cfg.mac_add.iter().partition(|m| m[0] & 1 != 0);
        port.set_mac_table(&uni, &multi)
            .map_err(|e| format!("MAC table: {e}"))?;
        sprintln!(
            hal,
            "Port 0: MAC table: {} unicast, {} multicast",
            uni.len(),
            multi.len()
        );
    }
    for &vid in &cfg.vlan_filter {
        port.vlan_filter(vid, true)
            .map_err(|e| format!("VLAN {vid}: {e}"))?;
    }
    if !cfg.vlan_filter.is_empty() {
        sprintln!(hal, "Port 0: VLAN filter: {:?}", cfg.vlan_filter);
    }
    if let Some((class, cmd, data)) = &cfg.ctrl_probe {
        let (class, cmd) = (*class, *cmd);
        match port.ctrl_command(class, cmd, data) {
            Ok(()) => sprintln!(hal, "Port 0: control command {class}.{cmd}: OK"),
            Err(e) => sprintln!(hal, "Port 0: control command {class}.{cmd}: {e}"),
        }
    }
    Ok(())
}

struct Engine<'c, 'a, H: Hal> {
    hal: &'c H,
    pool: &'a MbufPool,
    cfg: &'c Config,
    fwd: FwdStats,
}

impl<'a, H: Hal> Engine<'_, 'a, H> {
    /// Notes link changes; returns whether the link is up.
    fn link(&self, port: &mut Port<'a, H>) -> bool {
        if let Some(up) = port.poll_link() {
            sprintln!(self.hal, "Port 0: link {}", if up { "up" } else { "down" });
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
    fn prepare_tx(&mut self, pkts: &mut Vec<Mbuf<'a>>) {
        if let Some(tci) = self.cfg.vlan_insert {
            for m in pkts.iter_mut() {
                m.set_vlan_tci(tci);
                m.set_ol_flags(m.ol_flags() | TX_VLAN);
            }
        }
        let piece = usize::from(self.cfg.txsplit);
        if piece > 0 {
            let mut out = Vec::with_capacity(pkts.len());
            for m in pkts.drain(..) {
                match self.split(&m, piece) {
                    Some(s) => out.push(s),
                    None => self.fwd.dropped += 1,
                }
            }
            *pkts = out;
        }
    }

    /// Transmits all of `pkts`, waiting for ring space (and for the link while it is down):
    /// like testpmd with unlimited retries, so what comes out does not depend on timing.
    fn send_all(&mut self, port: &mut Port<'a, H>, pkts: &mut Vec<Mbuf<'a>>) {
        self.prepare_tx(pkts);
        while !pkts.is_empty() {
            if !self.link(port) {
                self.hal.relax();
                continue;
            }
            let sent = port.tx_burst(pkts);
            if sent == 0 {
                self.hal.relax();
            }
            self.fwd.tx += sent as u64;
        }
    }

    /// io, macswap and rxonly: receive until the harness says the input is drained and one
    /// more poll finds nothing (or, without a harness, until `expect` frames arrived).
    fn receive_loop(&mut self, port: &mut Port<'a, H>, harness: &Harness<'_, H>) {
        let burst = usize::from(self.cfg.burst);
        let mut pkts: Vec<Mbuf<'a>> = Vec::with_capacity(burst);
        let mut drained = false;
        let mut idle = 0u32;
        loop {
            self.link(port);
            let n = port.rx_burst(&mut pkts, burst);
            if n == 0 {
                if drained || (self.cfg.expect != 0 && self.fwd.rx >= self.cfg.expect) {
                    break;
                }
                idle += 1;
                self.hal.relax();
                if idle == IDLE_POLLS_PER_HARNESS_CHECK {
                    idle = 0;
                    // Without a harness nothing says the input ended: run until `expect`.
                    drained = harness.input_drained() == Some(true);
                }
                continue;
            }
            idle = 0;
            self.fwd.rx += n as u64;
            let end = self.cfg.end_ethertype.is_some_and(|t| {
                pkts.iter()
                    .any(|m| m.data().get(12..14) == Some(&t.to_be_bytes()[..]))
            });
            match self.cfg.mode {
                Mode::RxOnly => pkts.clear(),
                Mode::MacSwap => pkts.iter_mut().for_each(swap_macs),
                Mode::Io | Mode::TxOnly | Mode::Hostile => {}
            }
            self.send_all(port, &mut pkts);
            if end {
                break;
            }
        }
    }

    fn txonly_loop(&mut self, port: &mut Port<'a, H>) {
        let burst = usize::from(self.cfg.burst);
        let template = txonly::Template::new(usize::from(self.cfg.size), port.mac());
        let mut pkts: Vec<Mbuf<'a>> = Vec::with_capacity(burst);
        let mut seq = 0u64;
        while seq < self.cfg.pkts {
            while pkts.len() < burst && seq < self.cfg.pkts {
                let Some(mut m) = self.pool.alloc() else {
                    // Everything is in the tx ring: let the device return some.
                    port.tx_cleanup();
                    self.hal.relax();
                    break;
                };
                let Some(frame) = m.append(template.len()) else {
                    break;
                };
                template.fill(frame, seq);
                pkts.push(m);
                seq += 1;
            }
            self.send_all(port, &mut pkts);
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

fn print_stats<H: Hal>(hal: &H, port: &Port<'_, H>, fwd: &FwdStats) {
    let s = &port.stats;
    sprintln!(hal, "");
    sprintln!(
        hal,
        "  ---------------------- Forward statistics for port 0  ----------------------"
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
        "  ######################## NIC statistics for port 0  ########################"
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

/// The application's own checks of a finished run.
fn check<H: Hal>(
    port: &Port<'_, H>,
    harness: &Harness<'_, H>,
    cfg: &Config,
    fwd: &FwdStats,
) -> Result<(), alloc::string::String> {
    use alloc::format;
    let s = &port.stats;
    if s.ierrors != 0 || s.oerrors != 0 || fwd.dropped != 0 {
        return Err(format!(
            "{} rx errors, {} tx errors, {} frames dropped",
            s.ierrors, s.oerrors, fwd.dropped
        ));
    }
    if !port.link_up() {
        return Err("the link is down at the end".into());
    }
    match cfg.mode {
        Mode::TxOnly => {
            if s.opackets != cfg.pkts {
                return Err(format!("sent {} of {} frames", s.opackets, cfg.pkts));
            }
        }
        Mode::Hostile => {}
        Mode::Io | Mode::MacSwap | Mode::RxOnly => {
            // With an end marker the device side is not ours (a vhost backend): it cannot
            // say what it delivered.
            let delivered = harness
                .rx_delivered()
                .filter(|_| cfg.end_ethertype.is_none());
            if let Some(delivered) = delivered {
                if fwd.rx as u32 != delivered {
                    return Err(format!(
                        "received {} frames, the device delivered {}",
                        fwd.rx, delivered
                    ));
                }
            }
            if cfg.mode != Mode::RxOnly && fwd.tx != fwd.rx {
                return Err(format!("received {} frames, forwarded {}", fwd.rx, fwd.tx));
            }
        }
    }
    Ok(())
}
