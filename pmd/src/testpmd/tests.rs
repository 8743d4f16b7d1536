//! The whole application on fake virtio-net functions: what one port prints (as before
//! ports and queues), where frames go with several ports and queues in each topology,
//! verbose lines with the device's hash, and configurations the devices cannot take.

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use super::run;
use crate::harness::exit;
use crate::net::fake_dev::{FakeNet, Input};
use crate::net::features;
use crate::net::rss::report;
use crate::pci::Bdf;
use crate::testing::FakeHal;

const BASE: u64 = features::VERSION_1 | features::CTRL_VQ | features::MAC | features::STATUS;

/// `ports` fake functions at 00:02.0, 00:03.0, ..., each with its harness block.
fn machine(ports: u8, offered: u64, max_pairs: u16) -> (FakeHal, Vec<Rc<RefCell<FakeNet>>>) {
    let hal = FakeHal::new(8 << 20);
    let devs: Vec<_> = (0..ports)
        .map(|p| {
            let bdf = Bdf {
                bus: 0,
                device: 2 + p,
                function: 0,
            };
            let bar = 0xc000_0000 + u64::from(p) * 0x10000;
            let mut dev = FakeNet::new(bdf, bar, offered, max_pairs, 256);
            dev.harness = Some(p);
            let dev = Rc::new(RefCell::new(dev));
            hal.attach(dev.clone());
            dev
        })
        .collect();
    (hal, devs)
}

/// A frame from port `port`'s input, queue `queue`, number `n`: an IPv4 ethertype and
/// the three numbers in its payload.
fn frame(port: u8, queue: u16, n: u8) -> Vec<u8> {
    let mut f = alloc::vec![0u8; 64];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xaa]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xbb]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14..17].copy_from_slice(&[port, queue as u8, n]);
    f
}

fn feed(dev: &Rc<RefCell<FakeNet>>, port: u8, queue: u16, n: u8) {
    dev.borrow_mut().input.push_back(Input {
        queue,
        frame: frame(port, queue, n),
        hash: 0,
        report: report::NONE,
    });
}

#[test]
fn one_port_prints_what_it_printed_before_ports_and_queues() {
    let (hal, devs) = machine(1, BASE, 1);
    for n in 0..3 {
        feed(&devs[0], 0, 0, n);
    }
    assert_eq!(run(&hal, "mode=io"), exit::PASS);
    let want = "\
vlab-pmd: mode=io burst=32 rxd=256 txd=256 mbufs=704 rxbuf=2048 transport=modern
Port 0: 52:54:00:12:34:52 modern transport, rxd=256 txd=256, header 12 bytes, features MAC STATUS CTRL_VQ VERSION_1, link up
Port 0: started io forwarding

  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 3              RX-dropped: 0              RX-total: 3
  TX-packets: 3              TX-dropped: 0              TX-total: 3
  ----------------------------------------------------------------------------

  ######################## NIC statistics for port 0  ########################
  RX-packets: 3          RX-missed: 0          RX-bytes:  192
  RX-errors: 0
  RX-nombuf:  0
  TX-packets: 3          TX-errors: 0          TX-bytes:  192
  RX-multiseg: 0         TX-multiseg: 0         TX-indirect: 0
  ############################################################################
vlab-pmd: PASS
";
    assert_eq!(hal.console(), want);
    let out: Vec<Vec<u8>> = devs[0]
        .borrow()
        .output
        .iter()
        .map(|o| o.1.clone())
        .collect();
    assert_eq!(out, (0..3).map(|n| frame(0, 0, n)).collect::<Vec<_>>());
}

/// What left one port: (queue, (input port, input queue, number)) per frame.
type Output = Vec<(u16, [u8; 3])>;

/// Runs `cmdline` on `ports` ports of `queues` pairs each, with frames on every queue of
/// every port, and returns the console and what left each port.
fn forward(ports: u8, queues: u16, cmdline: &str) -> (String, Vec<Output>) {
    let (hal, devs) = machine(ports, BASE | features::MQ, 4);
    for (p, dev) in devs.iter().enumerate() {
        for n in 0..3 {
            for q in 0..queues {
                feed(dev, p as u8, q, n);
            }
        }
    }
    assert_eq!(run(&hal, cmdline), exit::PASS, "{}", hal.console());
    let outs = devs
        .iter()
        .map(|d| {
            d.borrow()
                .output
                .iter()
                .map(|(q, f)| (*q, [f[14], f[15], f[16]]))
                .collect()
        })
        .collect();
    (hal.console(), outs)
}

#[test]
fn each_topology_sends_queue_k_of_a_port_to_queue_k_of_its_peer() {
    // (ports, topology, the port each port's frames leave by)
    let cases: [(u8, &str, &[u8]); 7] = [
        (2, "paired", &[1, 0]),
        (3, "paired", &[1, 0, 2]),
        (4, "paired", &[1, 0, 3, 2]),
        (3, "chained", &[1, 2, 0]),
        (4, "chained", &[1, 2, 3, 0]),
        (2, "loop", &[0, 1]),
        (1, "chained", &[0]),
    ];
    for (ports, topology, peers) in cases {
        for queues in [1u16, 2] {
            let cmdline = alloc::format!(
                "ports={ports} port-topology={topology} rxq={queues} txq={queues} ring=64"
            );
            let (console, outs) = forward(ports, queues, &cmdline);
            for (rx, &tx) in peers.iter().enumerate() {
                // What port `rx` received left by port `tx`, queue for queue, in order.
                let got: Vec<(u16, [u8; 3])> = outs[usize::from(tx)]
                    .iter()
                    .filter(|(_, f)| f[0] == rx as u8)
                    .copied()
                    .collect();
                let mut want = Vec::new();
                for n in 0..3 {
                    for q in 0..queues {
                        want.push((q, [rx as u8, q as u8, n]));
                    }
                }
                // The fake captures queue by queue: compare each queue's frames in order.
                for q in 0..queues {
                    let g: Vec<_> = got.iter().filter(|o| o.0 == q).collect();
                    let w: Vec<_> = want.iter().filter(|o| o.0 == q).collect();
                    assert_eq!(g, w, "{cmdline}: port {rx} queue {q}");
                }
            }
            if ports > 1 {
                assert!(console.contains("Forward statistics for port 1  "));
                assert!(console.contains("Accumulated forward statistics for all ports"));
                let total = 3 * u64::from(ports) * u64::from(queues);
                assert!(console.contains(&alloc::format!("  RX-packets: {total:<14} RX-dropped")));
            } else {
                assert!(!console.contains("Accumulated"));
            }
            let per_stream = console.contains("Forward Stats for RX Port= 0/Queue= 0");
            assert_eq!(per_stream, queues > 1, "{cmdline}");
            let odd = ports % 2 == 1 && ports > 1 && topology == "paired";
            assert_eq!(console.contains("the last port will pair with itself"), odd);
        }
    }
}

#[test]
fn streams_print_their_counts_when_there_are_more_than_ports() {
    let (console, _) = forward(2, 2, "ports=2 rxq=2 txq=2 ring=64");
    assert!(console.contains(
        "\n  ------- Forward Stats for RX Port= 1/Queue= 1 -> TX Port= 0/Queue= 1 -------\n  RX-packets: 3              TX-packets: 3              TX-dropped: 0\n"
    ));
    assert!(console.contains("Port 1: 2 of 4 queue pairs\n"));
    assert!(console.starts_with(
        "vlab-pmd: mode=io burst=32 rxd=64 txd=64 mbufs=704 rxbuf=2048 transport=modern ports=2 rxq=2 txq=2 port-topology=paired\n"
    ));
}

#[test]
fn txonly_sends_its_frames_on_every_port_over_its_queues() {
    let (hal, devs) = machine(2, BASE | features::MQ, 2);
    let code = run(
        &hal,
        "mode=txonly pkts=70 burst=16 ports=2 rxq=2 txq=2 ring=64",
    );
    assert_eq!(code, exit::PASS, "{}", hal.console());
    for dev in &devs {
        let d = dev.borrow();
        assert_eq!(d.output.len(), 70);
        // Bursts of 16 take turns on the two queues: 16 + 16 + 16 + 16 + 6 frames.
        let on_1 = d.output.iter().filter(|o| o.0 == 1).count();
        assert_eq!(on_1, 32);
    }
}

#[test]
fn verbose_shows_each_frame_and_the_devices_hash() {
    let (hal, devs) = machine(
        1,
        BASE | features::MQ | features::RSS | features::HASH_REPORT,
        2,
    );
    devs[0].borrow_mut().input.push_back(Input {
        queue: 1,
        frame: frame(0, 1, 7),
        hash: 0xdead_beef,
        report: report::TCPV4,
    });
    feed(&devs[0], 0, 0, 8);
    assert_eq!(run(&hal, "rxq=2 txq=2 verbose=1 ring=64"), exit::PASS);
    let console = hal.console();
    assert!(console.contains(
        "port 0/queue 0: src=02:00:00:00:00:BB - dst=02:00:00:00:00:AA - type=0x0800 - length=64 - nb_segs=1\n"
    ), "{console}");
    assert!(console.contains(
        "port 0/queue 1: src=02:00:00:00:00:BB - dst=02:00:00:00:00:AA - type=0x0800 - length=64 - nb_segs=1 - RSS hash=0xdeadbeef - RSS queue=0x1 - hash type=2\n"
    ), "{console}");
    assert!(console.contains(", header 20 bytes, features "));
    assert!(console.contains(
        "Port 0: RSS hash types ipv4,tcp4,udp4,ipv6,tcp6,udp6,ipv6-ex,tcp6-ex,udp6-ex (0x1ff), 40-byte key, 128-entry indirection table, unclassified to queue 0\n"
    ));
}

#[test]
fn what_the_devices_cannot_take_is_a_configuration_error() {
    let (hal, _) = machine(1, BASE, 1);
    assert_eq!(run(&hal, "rxq=2 txq=2"), exit::BAD_CONFIG);
    assert!(hal.console().ends_with(
        "vlab-pmd: port 0: 2 queue pairs asked for, but the device offers 1 (neither VIRTIO_NET_F_MQ nor VIRTIO_NET_F_RSS is negotiated)\n"
    ));
    let (hal, _) = machine(1, BASE | features::MQ, 2);
    assert_eq!(run(&hal, "reta=0,0"), exit::BAD_CONFIG);
    assert!(hal.console().ends_with(
        "vlab-pmd: port 0: RSS settings asked for, but neither VIRTIO_NET_F_RSS nor VIRTIO_NET_F_HASH_REPORT is negotiated\n"
    ));
    let (hal, _) = machine(1, BASE, 1);
    assert_eq!(run(&hal, "rxq=1 txq=2"), exit::BAD_CONFIG);
    let (hal, _) = machine(1, BASE, 1);
    assert_eq!(run(&hal, "ports=2"), exit::DEVICE_ERROR);
    assert!(hal.console().ends_with(
        "vlab-pmd: port 1: no port 1: bus 0 has 1 virtio-net PCI functions, ports 0 to 0\n"
    ));
}

#[test]
fn end_markers_end_the_run_once_every_port_forwarded_its_own() {
    let (hal, devs) = machine(2, BASE, 1);
    for dev in &devs {
        dev.borrow_mut().harness = None;
    }
    for (p, dev) in devs.iter().enumerate() {
        feed(dev, p as u8, 0, 1);
        let mut marker = frame(p as u8, 0, 2);
        marker[12..14].copy_from_slice(&[0x88, 0xb5]);
        dev.borrow_mut().input.push_back(Input {
            queue: 0,
            frame: marker,
            hash: 0,
            report: report::NONE,
        });
    }
    assert_eq!(run(&hal, "ports=2 end-ethertype=88b5 ring=64"), exit::PASS);
    for dev in &devs {
        assert_eq!(dev.borrow().output.len(), 2);
    }
}
