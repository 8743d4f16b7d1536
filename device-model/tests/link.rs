//! Link state as the host changes it (VIRTIO_NET_F_STATUS, 5.1.4): the status field, the
//! configuration generation, the ISR and the configuration-change MSI-X vector.

mod common;

use std::sync::Arc;

use common::*;
use device_model::pci::PciDevice;
use device_model::virtio::MsiMessage;
use device_model::virtio_pci::MSIX_BAR;

const STATUS: u64 = 0x2000 + 6;
const GENERATION: u64 = 0x15;
const ISR: u64 = 0x1000;
const MSIX_CONFIG: u64 = 0x10;

#[test]
fn the_host_flips_the_link_and_the_driver_is_told() {
    let msis = Arc::new(Msis::default());
    let mut rig = Rig::with_msi(vec![], msis.clone());
    rig.start();
    // MSI-X on (the capability is the first, at 0x40), entry 0 to vector 0x40, unmasked,
    // and configuration changes on entry 0.
    rig.dev.config_write(0x42, &0x8000u16.to_le_bytes());
    rig.dev
        .bar_write(MSIX_BAR, 0, &0xfee0_0000u32.to_le_bytes());
    rig.dev.bar_write(MSIX_BAR, 8, &0x40u32.to_le_bytes());
    rig.dev.bar_write(MSIX_BAR, 12, &0u32.to_le_bytes());
    rig.w(MSIX_CONFIG, 0, 2);
    assert_eq!(rig.r(MSIX_CONFIG, 2), 0);

    assert_eq!(rig.r(STATUS, 2), 1, "link up");
    let gen = rig.r(GENERATION, 1);
    let link = rig.dev.device().shared();

    link.set_link(false);
    assert_eq!(rig.r(STATUS, 2), 0, "link down");
    assert_ne!(
        rig.r(GENERATION, 1),
        gen,
        "the generation moves with the config"
    );
    assert_eq!(rig.r(ISR, 1), 2, "ISR bit 1: configuration change");
    assert_eq!(rig.r(ISR, 1), 0, "reading the ISR clears it");
    let want = MsiMessage {
        addr: 0xfee0_0000,
        data: 0x40,
    };
    assert_eq!(*msis.0.lock().unwrap(), vec![want]);

    // Setting the same state again changes nothing and sends nothing.
    link.set_link(false);
    assert_eq!(msis.0.lock().unwrap().len(), 1);

    link.set_link(true);
    assert_eq!(rig.r(STATUS, 2), 1);
    assert_eq!(*msis.0.lock().unwrap(), vec![want, want]);
}

#[test]
fn without_a_vector_the_isr_still_tells() {
    let msis = Arc::new(Msis::default());
    let mut rig = Rig::with_msi(vec![], msis.clone());
    rig.start();
    rig.dev.device().shared().set_link(false);
    assert_eq!(rig.r(ISR, 1), 2);
    assert!(msis.0.lock().unwrap().is_empty(), "no MSI-X, no message");
}
