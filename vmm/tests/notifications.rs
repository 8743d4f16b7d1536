//! Notification suppression (VIRTIO_F_EVENT_IDX, and the ring flags without it): over a run
//! of many frames neither side interrupts or kicks per frame. The counts depend on timing,
//! so this asserts bounds, on both machines.

use std::time::{Duration, Instant};

use vmm::config::{GuestArgs, Input, MachineKind, Mode, PortConfig, RunConfig};

const FRAMES: u64 = 20_000;

fn run(machine: MachineKind, event_idx: bool) -> vmm::run::RunReport {
    let cfg = RunConfig {
        machine,
        mode: Mode::Io,
        ports: vec![PortConfig {
            input: Input::Generator {
                frames: FRAMES,
                size: 64,
            },
            ..PortConfig::default()
        }],
        guest: GuestArgs {
            event_idx: Some(event_idx),
            ..GuestArgs::default()
        },
        timeout: Duration::from_secs(60),
        ..RunConfig::default()
    };
    vmm::run::run(&cfg, Instant::now()).expect("the run completes")
}

#[test]
fn neither_side_notifies_per_frame() {
    for machine in [MachineKind::InProcess, MachineKind::Kvm] {
        for event_idx in [true, false] {
            let r = run(machine, event_idx);
            assert!(r.passed(), "{}", String::from_utf8_lossy(&r.serial));
            let c = &r.counters;
            assert_eq!(c.rx_delivered, FRAMES);
            assert_eq!(r.output_frames, FRAMES);
            // The poll-mode driver declines every interrupt.
            assert_eq!(c.interrupts, 0, "{machine:?} event_idx={event_idx}");
            // The device asks for kicks only before it sleeps, which a busy run does only
            // when its driver is descheduled: fewer than one kick per burst of 32 even on a
            // loaded machine (a driver that kicks per burst makes 625; an idle machine sees
            // a handful).
            let kicks: u64 = c.kicks.iter().sum();
            assert!(
                kicks < FRAMES / 32,
                "{machine:?} event_idx={event_idx}: {kicks} kicks for {FRAMES} frames"
            );
        }
    }
}
