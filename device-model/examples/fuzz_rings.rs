//! A mutation fuzzer for the device under a hostile driver: `make fuzz`, or
//! `cargo run --release -p device-model --example fuzz_rings -- [--runs N] [--seed S]`.
//!
//! It drives the harness of the property tests (`tests/common/hostile.rs`): scenarios from
//! the same generator, each then mutated 1 to 4 times (a descriptor field set to an edge
//! value, an avail entry or index moved, rings misplaced, a queue size, a frame, an odd
//! register access, the status sequence, a feature bit), run on a fresh device over guarded
//! guest RAM, and checked for every property there. Deterministic: a seed and a run number
//! name a scenario, and `--run N` replays just that one (`--show` prints it).
//!
//! Prints how many runs and mutations went through, how many failed and why, and exits 1 if
//! any did.

#[path = "../tests/common/mod.rs"]
mod common;

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use common::hostile::{self, GuardedRam, Rng, Scenario};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// Mutated variants run from each generated scenario.
const PER_BASE: u64 = 16;

struct Args {
    runs: u64,
    seed: u64,
    only: Option<u64>,
    show: bool,
}

fn usage() -> ! {
    eprintln!("usage: fuzz_rings [--runs N] [--seed S] [--run N [--show]]");
    std::process::exit(2);
}

fn args() -> Args {
    let mut a = Args {
        runs: 1_000_000,
        seed: 1,
        only: None,
        show: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut num = || -> u64 {
            it.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .unwrap_or_else(|| usage())
        };
        match k.as_str() {
            "--runs" => a.runs = num(),
            "--seed" => a.seed = num(),
            "--run" => a.only = Some(num()),
            "--show" => a.show = true,
            _ => usage(),
        }
    }
    a
}

/// The generated scenario that runs `base * PER_BASE ..` start from.
fn base(seed: u64, base: u64) -> Scenario {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&base.to_le_bytes());
    key[16..24].copy_from_slice(b"hostile!");
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &key),
    );
    hostile::scenario()
        .new_tree(&mut runner)
        .expect("the scenario strategy never rejects")
        .current()
}

/// Run `n`: its base scenario with 1 to 4 mutations; returns it and the mutation count.
fn scenario(seed: u64, n: u64, cache: &mut Option<(u64, Scenario)>) -> (Scenario, u64) {
    let b = n / PER_BASE;
    if cache.as_ref().is_none_or(|(cb, _)| *cb != b) {
        *cache = Some((b, base(seed, b)));
    }
    let mut s = cache.as_ref().expect("just filled").1.clone();
    let mut rng = Rng::new(seed ^ n.wrapping_mul(0x5851_f42d_4c95_7f2d));
    let m = 1 + rng.below(4);
    for _ in 0..m {
        s.mutate(&mut rng);
    }
    (s, m)
}

fn main() {
    let a = args();
    let wd = hostile::watchdog();
    let mut ram = GuardedRam::new();
    let mut cache = None;
    let (first, end) = match a.only {
        Some(n) => (n, n + 1),
        None => (0, a.runs),
    };
    let start = Instant::now();
    let (mut ran, mut mutations, mut failed) = (0u64, 0u64, 0u64);
    let (mut settled, mut needs_reset, mut checked, mut chains) = (0u64, 0u64, 0u64, 0u64);
    let mut slowest_reset = Duration::ZERO;
    let (mut invalid, mut jumped) = (0u64, 0u64);
    let mut total_reset = Duration::ZERO;
    let mut last_report = Instant::now();
    for n in first..end {
        let (s, m) = scenario(a.seed, n, &mut cache);
        if a.show {
            println!("{s:#?}");
        }
        wd.arm(
            Duration::from_secs(30),
            format!(
                "seed {} run {n} (replay: --seed {} --run {n} --show)",
                a.seed, a.seed
            ),
        );
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| hostile::run(&s, &mut ram)));
        wd.disarm();
        ran += 1;
        mutations += m;
        let violations = match r {
            Ok(report) => {
                settled += u64::from(report.settled);
                needs_reset += u64::from(report.needs_reset);
                invalid += u64::from(!report.activates);
                jumped += u64::from(report.jumped);
                checked += u64::from(report.checked_writes);
                chains += report.chains;
                slowest_reset = slowest_reset.max(report.reset_time);
                total_reset += report.reset_time;
                report.violations
            }
            Err(p) => {
                // The device (or the harness) panicked mid-run: its thread may still use
                // this RAM, so start over on fresh RAM (the old one is leaked if in use).
                ram = GuardedRam::new();
                vec![format!("panic: {}", device_model::panic::message(&*p))]
            }
        };
        if !violations.is_empty() {
            failed += 1;
            if failed <= 20 {
                println!(
                    "FAILED run {n} (replay: --seed {} --run {n} --show):",
                    a.seed
                );
                for v in &violations {
                    println!("  {v}");
                }
            }
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "fuzz_rings: {ran} runs, {failed} failed, {:.0} runs/s",
                ran as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "fuzz_rings: seed {}: {ran} runs ({mutations} mutations) in {secs:.1} s ({:.0} runs/s): {failed} failed",
        a.seed,
        ran as f64 / secs
    );
    println!(
        "fuzz_rings: {settled} runs settled, {needs_reset} ended with DEVICE_NEEDS_RESET ({invalid} invalid setups, {jumped} avail index jumps), {checked} write-checked, {chains} chains returned, resets took {:?} in all, the slowest {slowest_reset:?}",
        total_reset
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
