//! A testpmd-like application on the PMD: one port, one forwarding engine, testpmd-style
//! statistics on the console, and a verdict as the exit code.
//!
//! The guest image and the in-process machine both run [`run`], so the two machines execute
//! the same forwarding code and must produce the same frames and the same log.

pub mod config;
pub mod txonly;

use alloc::vec::Vec;

use crate::hal::Hal;
use crate::harness::{event, exit, Harness};
use crate::mbuf::{Mbuf, MbufPool, DEFAULT_DATA_ROOM, DEFAULT_HEADROOM};
use crate::net::{Port, PortConfig};
use crate::sprintln;
pub use config::{Config, Mode};

/// Empty rx polls between two looks at the harness's "input drained" bit: each look is a
/// VM exit, so the driver looks only once it has been idle for a while.
const IDLE_POLLS_PER_HARNESS_CHECK: u32 = 256;

/// What the forwarding engine counted (testpmd's "Forward statistics").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdStats {
    pub rx: u64,
    pub tx: u64,
}

/// Runs the application described by `cmdline` and returns its exit code
/// (see [`crate::harness::exit`]). The caller writes it to the exit port.
pub fn run<H: Hal>(hal: &H, cmdline: &str) -> u32 {
    let cfg = match Config::parse(cmdline) {
        Ok(cfg) => cfg,
        Err(e) => {
            sprintln!(hal, "vlab-pmd: bad command line: {e}");
            return exit::BAD_CONFIG;
        }
    };
    if cfg.mode == Mode::TxOnly && cfg.pkts == 0 {
        sprintln!(
            hal,
            "vlab-pmd: bad command line: txonly needs pkts=N (N > 0)"
        );
        return exit::BAD_CONFIG;
    }
    sprintln!(
        hal,
        "vlab-pmd: mode={} burst={} rxd={} txd={} mbufs={}",
        cfg.mode.name(),
        cfg.burst,
        cfg.rxd,
        cfg.txd,
        cfg.pool_size()
    );
    let pool = match MbufPool::new(hal, cfg.pool_size(), DEFAULT_HEADROOM, DEFAULT_DATA_ROOM) {
        Ok(p) => p,
        Err(e) => {
            sprintln!(hal, "vlab-pmd: mbuf pool: {e}");
            return exit::DEVICE_ERROR;
        }
    };
    let port_cfg = PortConfig {
        rx_ring: cfg.rxd,
        tx_ring: cfg.txd,
        ..PortConfig::default()
    };
    let mut port = match Port::open(hal, &pool, &port_cfg) {
        Ok(p) => p,
        Err(e) => {
            sprintln!(hal, "vlab-pmd: port 0: {e}");
            return exit::DEVICE_ERROR;
        }
    };
    for a in &port.adjusted {
        sprintln!(
            hal,
            "Warning: port 0 queue {} does not take {} descriptors, using {}",
            a.queue,
            a.asked,
            a.used
        );
    }
    let m = port.mac();
    let link = port.link_up();
    sprintln!(
        hal,
        "Port 0: {:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X} features {:#x} link {}",
        m[0],
        m[1],
        m[2],
        m[3],
        m[4],
        m[5],
        port.features(),
        if link { "up" } else { "down" }
    );
    let harness = Harness::probe(hal);
    if !link {
        sprintln!(hal, "vlab-pmd: FAIL: link is down");
        return exit::CHECK_FAILED;
    }
    harness.event(event::LINK_UP);

    harness.event(event::FWD_START);
    let fwd = match cfg.mode {
        Mode::Io | Mode::MacSwap | Mode::RxOnly => receive_loop(hal, &mut port, &harness, &cfg),
        Mode::TxOnly => txonly_loop(hal, &mut port, &pool, &cfg),
    };
    // Every frame must have left before the verdict: wait for the device to return them.
    while port.tx_in_flight() != 0 {
        port.tx_cleanup();
        hal.relax();
    }
    harness.event(event::FWD_DONE);

    print_stats(hal, &port, &fwd);
    let verdict = check(&port, &harness, &cfg, &fwd);
    match verdict {
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

fn swap_macs(m: &mut Mbuf<'_>) {
    let d = m.data_mut();
    if d.len() >= 12 {
        for i in 0..6 {
            d.swap(i, i + 6);
        }
    }
}

/// io, macswap and rxonly: receive until the harness says the input is drained and one more
/// poll finds nothing.
fn receive_loop<H: Hal>(
    hal: &H,
    port: &mut Port<'_, H>,
    harness: &Harness<'_, H>,
    cfg: &Config,
) -> FwdStats {
    let burst = usize::from(cfg.burst);
    let mut pkts: Vec<Mbuf<'_>> = Vec::with_capacity(burst);
    let mut fwd = FwdStats::default();
    let mut drained = false;
    let mut idle = 0u32;
    loop {
        let n = port.rx_burst(&mut pkts, burst);
        if n == 0 {
            if drained {
                break;
            }
            idle += 1;
            hal.relax();
            if idle == IDLE_POLLS_PER_HARNESS_CHECK {
                idle = 0;
                // Without a harness nothing says the input ended: run until stopped.
                drained = harness.input_drained() == Some(true);
            }
            continue;
        }
        idle = 0;
        fwd.rx += n as u64;
        match cfg.mode {
            Mode::RxOnly => {
                pkts.clear();
                continue;
            }
            Mode::MacSwap => pkts.iter_mut().for_each(swap_macs),
            Mode::Io | Mode::TxOnly => {}
        }
        // Like testpmd with unlimited tx retries: a frame waits for ring space rather than
        // being dropped, so what comes out does not depend on timing.
        while !pkts.is_empty() {
            let sent = port.tx_burst(&mut pkts);
            if sent == 0 {
                hal.relax();
            }
            fwd.tx += sent as u64;
        }
    }
    fwd
}

fn txonly_loop<'a, H: Hal>(
    hal: &H,
    port: &mut Port<'a, H>,
    pool: &'a MbufPool,
    cfg: &Config,
) -> FwdStats {
    let burst = usize::from(cfg.burst);
    let template = txonly::Template::new(usize::from(cfg.size), port.mac());
    let mut pkts: Vec<Mbuf<'a>> = Vec::with_capacity(burst);
    let mut fwd = FwdStats::default();
    let mut seq = 0u64;
    while seq < cfg.pkts || !pkts.is_empty() {
        while pkts.len() < burst && seq < cfg.pkts {
            let Some(mut m) = pool.alloc() else {
                // Everything is in the tx ring: let the device return some.
                port.tx_cleanup();
                break;
            };
            let Some(frame) = m.append(template.len()) else {
                break;
            };
            template.fill(frame, seq);
            pkts.push(m);
            seq += 1;
        }
        let sent = port.tx_burst(&mut pkts);
        if sent == 0 {
            hal.relax();
        }
        fwd.tx += sent as u64;
    }
    fwd
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
        s.oerrors,
        s.opackets + s.oerrors
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
    if s.ierrors != 0 || s.oerrors != 0 {
        return Err(format!("{} rx errors, {} tx errors", s.ierrors, s.oerrors));
    }
    match cfg.mode {
        Mode::TxOnly => {
            if s.opackets != cfg.pkts {
                return Err(format!("sent {} of {} frames", s.opackets, cfg.pkts));
            }
        }
        Mode::Io | Mode::MacSwap | Mode::RxOnly => {
            if let Some(delivered) = harness.rx_delivered() {
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
