//! The scenario: open the port the PMD's way, find the end of RAM, run the seeded rounds
//! of abuses (resetting the device whenever it asks), report the counts, end with normal
//! traffic.

use crate::config::Config;
use crate::hal::Hal;
use crate::harness::{event, exit, Harness};
use crate::net::{Port, PortConfig};
use crate::sprintln;
use crate::transport::{status, Transport};

use super::dev::{Dev, Outcome};
use super::rng::Rng;
use super::traffic::traffic;
use super::{Error, PAGE, PORT_ID};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Abuse {
    OutsideRam,
    StraddlesRamEnd,
    ChainLoop,
    ChainLongerThanQueue,
    ZeroLength,
    HugeLength,
    AvailJump,
    WriteOnlyTx,
    BadCtrl,
    OddRegisters,
    RingOutsideRam,
    ResetMidTransfer,
    BadStatus,
    HeadOutOfRange,
}

pub(super) const ABUSES: [(Abuse, &str); 14] = [
    (Abuse::OutsideRam, "desc-outside-ram"),
    (Abuse::StraddlesRamEnd, "desc-straddles-ram-end"),
    (Abuse::ChainLoop, "chain-loop"),
    (Abuse::ChainLongerThanQueue, "chain-longer-than-queue"),
    (Abuse::ZeroLength, "zero-length"),
    (Abuse::HugeLength, "huge-length"),
    (Abuse::AvailJump, "avail-index-jump"),
    (Abuse::WriteOnlyTx, "write-only-on-tx"),
    (Abuse::BadCtrl, "bad-ctrl-command"),
    (Abuse::OddRegisters, "odd-register-access"),
    (Abuse::RingOutsideRam, "ring-outside-ram"),
    (Abuse::ResetMidTransfer, "reset-mid-transfer"),
    (Abuse::BadStatus, "bad-status-sequence"),
    (Abuse::HeadOutOfRange, "head-out-of-range"),
];

/// Per-abuse counts.
#[derive(Clone, Copy, Default)]
struct Tally {
    rounds: u32,
    returned: u32,
    needs_reset: u32,
    unserved: u32,
    ignored: u32,
    recovered: u32,
    failed: u32,
}

impl<H: Hal> Dev<'_, H> {
    /// One round: an abuse of kind `k`.
    fn round(&mut self, k: Abuse, rng: &mut Rng) -> Outcome {
        let v = rng.next();
        match k {
            Abuse::OutsideRam => self.outside_ram(v),
            Abuse::StraddlesRamEnd => self.straddles_ram_end(v),
            Abuse::ChainLoop => self.chain_loop(v),
            Abuse::ChainLongerThanQueue => self.chain_longer_than_queue(v),
            Abuse::ZeroLength => self.zero_length(v),
            Abuse::HugeLength => self.huge_length(v),
            Abuse::AvailJump => self.avail_jump(v),
            Abuse::WriteOnlyTx => self.write_only_on_tx(v),
            Abuse::BadCtrl => self.bad_ctrl(v),
            Abuse::OddRegisters => self.odd_registers(rng),
            Abuse::RingOutsideRam => self.ring_outside_ram(v),
            Abuse::ResetMidTransfer => self.reset_mid_transfer(v),
            Abuse::BadStatus => self.bad_status(v),
            Abuse::HeadOutOfRange => self.head_out_of_range(v),
        }
    }
}

/// Runs the hostile application; returns its exit code.
pub fn run<H: Hal>(hal: &H, cfg: &Config) -> u32 {
    sprintln!(
        hal,
        "vlab-pmd: mode=hostile seed={} rounds={} rxd={} txd={} transport={}",
        cfg.seed,
        cfg.rounds,
        cfg.rxd,
        cfg.txd,
        cfg.transport.name()
    );
    let Some(pool) = cfg.mbuf_pool(hal) else {
        return exit::DEVICE_ERROR;
    };
    // The port, opened the PMD's way first: the device works before it is abused.
    let port_cfg = PortConfig {
        transport: cfg.transport,
        rx_ring: cfg.rxd,
        tx_ring: cfg.txd,
        features: cfg.features,
        ..PortConfig::default()
    };
    let mac = match Port::open(hal, &pool, PORT_ID, &port_cfg) {
        Ok(port) => {
            sprintln!(
                hal,
                "Port 0: opened normally: {} transport, rxd={} txd={}, features {:#x}",
                port.transport().name(),
                port.rx_ring_size(),
                port.tx_ring_size(),
                port.features()
            );
            port.mac()
        }
        Err(e) => {
            sprintln!(hal, "vlab-pmd: port 0: {e}");
            return exit::DEVICE_ERROR;
        }
    };
    let mut dev = match Dev::open(hal, cfg, mac) {
        Ok(d) => d,
        Err(e) => {
            sprintln!(hal, "vlab-pmd: hostile driver: {e}");
            return exit::DEVICE_ERROR;
        }
    };
    // Everything this driver uses lies below this page; the RAM probe places rings above.
    let low = match hal.dma_alloc(PAGE as usize, PAGE as usize) {
        Some(d) => d.paddr + PAGE,
        None => {
            sprintln!(hal, "vlab-pmd: hostile driver: {}", Error::NoMemory);
            return exit::DEVICE_ERROR;
        }
    };
    match dev.probe_ram_end(low) {
        Ok((end, tried, refused)) => {
            dev.ram_end = end;
            sprintln!(
                hal,
                "Hostile: RAM ends at {end:#x} (found by {tried} tx ring placements, {refused} refused with DEVICE_NEEDS_RESET)"
            );
        }
        Err(e) => {
            sprintln!(hal, "vlab-pmd: FAIL: probing the end of RAM: {e}");
            return exit::CHECK_FAILED;
        }
    }
    if let Err(e) = dev.init() {
        sprintln!(hal, "vlab-pmd: FAIL: setting the device up: {e}");
        return exit::CHECK_FAILED;
    }
    dev.harness.event(event::LINK_UP);
    // The input flows from here: rx abuses meet its frames, the final traffic the rest.
    dev.harness.event(event::FWD_START);

    let mut rng = Rng::new(cfg.seed);
    let mut tally = [Tally::default(); ABUSES.len()];
    let mut resets = 0u32;
    for round in 0..cfg.rounds {
        dev.round = round;
        let mut k = rng.below(ABUSES.len() as u64) as usize;
        // Control-queue abuses need a control queue: the next kind instead.
        if ABUSES[k].0 == Abuse::BadCtrl && dev.queues < 3 {
            k = (k + 1) % ABUSES.len();
        }
        let o = dev.round(ABUSES[k].0, &mut rng);
        let t = &mut tally[k];
        t.rounds += 1;
        match o {
            Outcome::Returned => t.returned += 1,
            Outcome::NeedsReset => t.needs_reset += 1,
            Outcome::Unserved => t.unserved += 1,
            Outcome::Ignored => t.ignored += 1,
            Outcome::Recovered => t.recovered += 1,
            Outcome::Failed => t.failed += 1,
        }
        // Does the device still answer? One that needs a reset gets one.
        let s = dev.t.status();
        if s & status::DEVICE_NEEDS_RESET != 0 || s != dev.running() {
            if s & status::DEVICE_NEEDS_RESET == 0 {
                dev.fail(ABUSES[k].1, format_args!("status {s:#x} after the round"));
                t.failed += 1;
            }
            resets += 1;
            if let Err(e) = dev.init() {
                sprintln!(
                    hal,
                    "vlab-pmd: FAIL: round {round}: the device did not come back: {e}"
                );
                return exit::CHECK_FAILED;
            }
        }
    }

    sprintln!(
        hal,
        "Hostile: {:<24} {:>6} {:>8} {:>11} {:>8} {:>8} {:>6}",
        "abuse",
        "rounds",
        "returned",
        "needs-reset",
        "unserved",
        "ignored",
        "failed"
    );
    let mut failed = 0;
    for ((_, name), t) in ABUSES.iter().zip(&tally) {
        if t.rounds == 0 {
            continue;
        }
        failed += t.failed;
        sprintln!(
            hal,
            "Hostile: {:<24} {:>6} {:>8} {:>11} {:>8} {:>8} {:>6}",
            name,
            t.rounds,
            t.returned,
            t.needs_reset,
            t.unserved,
            t.ignored + t.recovered,
            t.failed
        );
    }
    sprintln!(
        hal,
        "Hostile: {} rounds, {resets} device resets after DEVICE_NEEDS_RESET, {failed} answers the spec does not allow",
        cfg.rounds
    );

    let harness = Harness::probe(hal);
    let t = match traffic(hal, &pool, cfg, &harness) {
        Ok(t) => t,
        Err(e) => {
            sprintln!(hal, "vlab-pmd: FAIL: port 0 after the abuse: {e}");
            return exit::CHECK_FAILED;
        }
    };
    harness.event(event::FWD_DONE);
    let s = &t.stats;
    sprintln!(
        hal,
        "Port 0: after the abuse: {} frames received and forwarded, {} generated; sent {}, rx errors {}, tx errors {}",
        t.rx,
        t.generated,
        t.tx,
        s.ierrors,
        s.oerrors
    );
    let ok = failed == 0 && s.ierrors == 0 && s.oerrors == 0 && t.tx == t.rx + t.generated;
    if ok {
        sprintln!(hal, "vlab-pmd: PASS");
        exit::PASS
    } else {
        sprintln!(hal, "vlab-pmd: FAIL: the device did not survive everything");
        exit::CHECK_FAILED
    }
}
