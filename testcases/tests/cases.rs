//! Runs every case under testcases/ on both machines and every transport it names.
//!
//! For each case and transport: the in-process machine's run must end with the exit code the
//! case expects, keep the promise of the case's mode, and match the case's snapshot
//! (`<case>/out.<transport>.snap`, reviewed with `cargo insta review`); the KVM machine must
//! then produce the same capture, the same guest log and the same exit code, byte for byte.
//! Without /dev/kvm the KVM half fails with the reason: it is not skipped.
//!
//! Then every other backend this machine runs (rust-tap, vhost-user; vhost-kernel where
//! /dev/vhost-net exists, else in the Linux VM of `tests/vhost_kernel.rs`) must give the
//! rust backend's verdict and output, byte for byte, unless the case puts it out of scope
//! (those trials show as ignored, with the reason in the case file).
//!
//! One trial per case, transport and backend, so `cargo test -p testcases -- basic/io-ntp`
//! runs one case and `cargo nextest run --partition count:1/4` splits them.

use libtest_mimic::{Arguments, Failed, Trial};
use std::sync::Arc;

use testcases::{check_mode, discover, root, Case};
use vmm::args::Transport;
use vmm::compare::{compare_case, Target};
use vmm::run::MachineKind;

fn run_case(case: &Case, transport: Transport) -> Result<(), Failed> {
    let input = case.input()?;
    let tmp = tempfile::tempdir()?;

    let local = case.run(MachineKind::InProcess, transport, tmp.path())?;
    let want = case.spec.expect.exit;
    if local.report.exit_code != want {
        return Err(format!(
            "in-process guest exit code {}, the case expects {want}:\n{}",
            local.report.exit_code,
            String::from_utf8_lossy(&local.report.serial)
        )
        .into());
    }
    if want == 0 {
        check_mode(case, &input, &local).map_err(|e| format!("in-process: {e}"))?;
    }
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(&case.dir);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_input_file(case.dir.join("case.toml"));
    settings.set_description(case.spec.description.trim());
    let snapshot = local.snapshot();
    let name = format!("out.{}", transport.name());
    // A mismatch panics with insta's diff; libtest-mimic reports it as this trial's failure.
    settings.bind(|| insta::assert_snapshot!(name, snapshot));

    let kvm = case.run(MachineKind::Kvm, transport, tmp.path())?;
    if kvm.pcap != local.pcap {
        let first = kvm
            .frames
            .iter()
            .zip(&local.frames)
            .position(|(a, b)| a != b)
            .unwrap_or(kvm.frames.len().min(local.frames.len()));
        return Err(format!(
            "KVM and in-process captures differ: {} vs {} frames, first difference at frame {first}",
            kvm.frames.len(),
            local.frames.len()
        )
        .into());
    }
    if kvm.report.serial != local.report.serial {
        return Err(format!(
            "KVM and in-process guest logs differ:\n--- kvm\n{}\n--- in-process\n{}",
            String::from_utf8_lossy(&kvm.report.serial),
            String::from_utf8_lossy(&local.report.serial)
        )
        .into());
    }
    if kvm.report.exit_code != local.report.exit_code {
        return Err(format!(
            "exit codes differ: kvm {} in-process {}",
            kvm.report.exit_code, local.report.exit_code
        )
        .into());
    }
    Ok(())
}

/// The case on backend `target`, against the rust backend on the same machine.
fn run_backend(case: &Case, transport: Transport, target: Target) -> Result<(), Failed> {
    if let Some(why) = target.unavailable() {
        return Err(format!("{target} cannot run here: {why}").into());
    }
    let tmp = tempfile::tempdir()?;
    // On a host with vhost-net, vhost-kernel runs against the KVM guest directly.
    let machine = match target {
        Target::VhostKernel => MachineKind::Kvm,
        _ => MachineKind::InProcess,
    };
    let (_, outcomes) = compare_case(case, transport, machine, &[target], tmp.path())?;
    match outcomes.first() {
        Some((_, o)) if o.ok() => Ok(()),
        Some((_, o)) => Err(format!("{target}: {o}").into()),
        None => Err("no outcome".into()),
    }
}

fn trials(case: Case) -> Vec<Trial> {
    let case = Arc::new(case);
    let mut out = Vec::new();
    // vhost-kernel runs here only where the host has vhost-net.
    let targets = [Target::RustTap, Target::VhostUser, Target::VhostKernel]
        .into_iter()
        .filter(|t| *t != Target::VhostKernel || t.unavailable().is_none());
    for t in case.spec.transports.clone() {
        let c = case.clone();
        out.push(Trial::test(
            format!("{}::{}", c.name, t.name()),
            move || run_case(&c, t),
        ));
        for target in targets.clone() {
            let c = case.clone();
            let name = format!("{}::{}::{target}", c.name, t.name());
            let ignored = c.spec.out_of_scope.contains_key(&target);
            out.push(
                Trial::test(name, move || run_backend(&c, t, target)).with_ignored_flag(ignored),
            );
        }
    }
    out
}

fn main() {
    let args = Arguments::from_args();
    let trials = match discover(&root()) {
        Ok(cases) => cases.into_iter().flat_map(trials).collect(),
        Err(e) => vec![Trial::test("discover", move || Err(e.to_string().into()))],
    };
    libtest_mimic::run(&args, trials).exit();
}
