//! The normal traffic that ends a hostile run: the port opened the PMD's way forwards what
//! is left of the input and sends generated frames, to show the device recovered.

use alloc::vec::Vec;

use crate::config::Config;
use crate::frames::Template;
use crate::hal::Hal;
use crate::harness::Harness;
use crate::mbuf::{Mbuf, MbufPool};
use crate::net::{self, Port, PortConfig};

use super::GENERATED;

/// What the final, normal traffic did.
pub(super) struct Traffic {
    pub(super) rx: u64,
    pub(super) tx: u64,
    pub(super) generated: u64,
    pub(super) stats: net::Stats,
}

/// Transmits all of `pkts`, waiting for ring space.
fn send_all<'a, H: Hal>(hal: &H, port: &mut Port<'a, H>, pkts: &mut Vec<Mbuf<'a>>) -> u64 {
    let mut sent = 0;
    while !pkts.is_empty() {
        let n = port.tx_burst(0, pkts);
        if n == 0 {
            hal.relax();
        }
        sent += n as u64;
    }
    sent
}

/// Opens the port normally and forwards what is left of the input, then sends generated
/// frames.
pub(super) fn traffic<H: Hal>(
    hal: &H,
    pool: &MbufPool,
    cfg: &Config,
    harness: &Harness<'_, H>,
) -> Result<Traffic, net::Error> {
    let port_cfg = PortConfig {
        transport: cfg.transport,
        rx_ring: cfg.rxd,
        tx_ring: cfg.txd,
        features: cfg.features,
        ..PortConfig::default()
    };
    let mut port = Port::open(hal, pool, super::PORT_ID, &port_cfg)?;
    let burst = usize::from(cfg.burst);
    let mut pkts: Vec<Mbuf<'_>> = Vec::with_capacity(burst);
    let (mut rx, mut tx) = (0u64, 0u64);
    if harness.present() {
        // As testpmd's io mode: until the input is drained and one more poll finds nothing.
        let mut drained = false;
        let mut idle = 0u32;
        loop {
            let n = port.rx_burst(0, &mut pkts, burst);
            if n == 0 {
                if drained {
                    break;
                }
                idle += 1;
                hal.relax();
                if idle == 256 {
                    idle = 0;
                    drained = harness.input_drained() == Some(true);
                }
                continue;
            }
            idle = 0;
            rx += n as u64;
            tx += send_all(hal, &mut port, &mut pkts);
        }
    }
    let generated = if cfg.pkts > 0 { cfg.pkts } else { GENERATED };
    let template = Template::new(64, port.mac());
    for seq in 0..generated {
        let Some(mut m) = pool.alloc() else {
            port.tx_cleanup();
            hal.relax();
            continue;
        };
        if let Some(frame) = m.append(template.len()) {
            template.fill(frame, seq);
        }
        pkts.push(m);
        if pkts.len() == burst {
            tx += send_all(hal, &mut port, &mut pkts);
        }
    }
    tx += send_all(hal, &mut port, &mut pkts);
    while port.tx_in_flight() != 0 {
        port.tx_cleanup();
        hal.relax();
    }
    Ok(Traffic {
        rx,
        tx,
        generated,
        stats: port.stats,
    })
}
