//! Runs every case under testcases/ on both machines and every transport it names.
//!
//! For each case and transport: the in-process machine's run must end with the exit code the
//! case expects, keep the promise of the case's mode, and match the case's snapshot
//! (`<case>/out.<transport>.snap`, reviewed with `cargo insta review`); the KVM machine must
//! then produce the same capture, the same guest log and the same exit code, byte for byte.
//! Without /dev/kvm the KVM half fails with the reason: it is not skipped.
//!
//! Then every other backend this machine runs (rust-tap, vhost-user; vhost-kernel where
//! /dev/vhost-net exists, else in the Linux VM of `vmm/tests/vhost_kernel_vm.rs`) must give the
//! rust backend's verdict and output, byte for byte, unless the case puts it out of scope
//! (those trials show as ignored, with the reason in the case file).
//!
//! Every case runs on every datapath that applies to it (split or packed ring, in order or
//! not, mergeable rx buffers or not): the rust backend on the case's own path (the first)
//! is the snapshot's; on every other path, and every other backend on every path, the
//! output must be the same.
//!
//! One trial per case, transport, path and backend
//! (`basic/io-ntp::modern::packed-inorder-mrg::rust`, named as `vlab test` names its
//! verdicts), so `cargo test -p testcases -- basic/io-ntp` runs one case and
//! `cargo nextest run --partition count:1/4` splits them.

use libtest_mimic::{Arguments, Failed, Trial};
use std::sync::Arc;

use testcases::{discover, root, Case};
use vmm::config::args::Transport;
use vmm::config::{BackendKind, RingPath};
use vmm::suites::suite;

fn run_case(case: &Case, transport: Transport) -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let local = suite::reference(case, transport, tmp.path())?;
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(&case.dir);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_input_file(case.dir.join("case.toml"));
    settings.set_description(case.spec.description.trim());
    let snapshot = local.snapshot();
    let name = format!("out.{}", transport.name());
    // A mismatch panics with insta's diff; libtest-mimic reports it as this trial's failure.
    settings.bind(|| insta::assert_snapshot!(name, snapshot));
    Ok(suite::same_on_kvm(case, transport, &local, tmp.path())?)
}

fn run_backend(
    case: &Case,
    transport: Transport,
    target: BackendKind,
    path: RingPath,
    refs: &suite::References,
) -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    Ok(suite::on_backend(
        case,
        transport,
        target,
        Some(path),
        refs,
        tmp.path(),
    )?)
}

fn trials(case: Case, refs: &Arc<suite::References>) -> Vec<Trial> {
    let case = Arc::new(case);
    let mut out = Vec::new();
    // vhost-kernel runs here only where the host has vhost-net.
    let targets = [
        BackendKind::Rust,
        BackendKind::RustTap,
        BackendKind::VhostUser,
        BackendKind::VhostKernel,
    ]
    .into_iter()
    .filter(|t| *t != BackendKind::VhostKernel || t.unavailable().is_none());
    for t in case.spec.transports.clone() {
        for (k, path) in case.paths(t).into_iter().enumerate() {
            for target in targets.clone() {
                let c = case.clone();
                let name = suite::verdict_name(&c.name, t, path, target);
                if k == 0 && target == BackendKind::Rust {
                    out.push(Trial::test(name, move || run_case(&c, t)));
                    continue;
                }
                let ignored = c.spec.out_of_scope.contains_key(&target);
                let refs = refs.clone();
                out.push(
                    Trial::test(name, move || run_backend(&c, t, target, path, &refs))
                        .with_ignored_flag(ignored),
                );
            }
        }
    }
    out
}

fn main() {
    let args = Arguments::from_args();
    let trials = match discover(&root()) {
        Ok(cases) => {
            let refs = Arc::new(suite::References::default());
            cases.into_iter().flat_map(|c| trials(c, &refs)).collect()
        }
        Err(e) => vec![Trial::test("discover", move || Err(e.to_string().into()))],
    };
    libtest_mimic::run(&args, trials).exit();
}
