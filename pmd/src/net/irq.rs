//! Which interrupts a port may take: the MSI-X table entries of its PCI function and the
//! APIC vectors they deliver, as functions of the port and queue indexes, so that no two
//! ports or queues share a vector.
//!
//! Each port owns a block of [`VECTORS_PER_PORT`] APIC vectors from [`FIRST_VECTOR`]: the
//! configuration-change interrupt first, then one per queue. Each port is its own PCI
//! function with its own MSI-X table: entry 0 for configuration changes, entry `1 + q` for
//! queue `q`. The driver polls its queues, so today only the configuration vector is
//! programmed; queues get [`crate::msix::NO_VECTOR`].

/// Ports that have vectors of their own.
pub const MAX_PORTS: u8 = 4;
/// The first vector of port 0 (the first one after the 32 exception vectors, on a
/// priority class boundary).
pub const FIRST_VECTOR: u8 = 0x40;
/// APIC vectors of each port: its configuration vector and up to 31 queues.
pub const VECTORS_PER_PORT: u8 = 0x20;
/// Queues of one port that have a vector of their own.
pub const MAX_QUEUE_VECTORS: u16 = VECTORS_PER_PORT as u16 - 1;

/// MSI-X table entry for configuration changes, in every port's function.
pub const CONFIG_MSIX_ENTRY: u16 = 0;

/// APIC vector of port `port`'s configuration-change interrupt (link state). Port 0's is
/// 0x40. `port` must be below [`MAX_PORTS`].
pub const fn config_vector(port: u8) -> u8 {
    assert!(port < MAX_PORTS, "no interrupt vectors for this port");
    FIRST_VECTOR + port * VECTORS_PER_PORT
}

/// MSI-X table entry for queue `queue` of a port's function.
pub const fn queue_msix_entry(queue: u16) -> u16 {
    1 + queue
}

/// APIC vector of queue `queue` of port `port`. `queue` must be below
/// [`MAX_QUEUE_VECTORS`].
pub const fn queue_vector(port: u8, queue: u16) -> u8 {
    assert!(
        queue < MAX_QUEUE_VECTORS,
        "no interrupt vector for this queue"
    );
    config_vector(port) + 1 + queue as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_0_keeps_its_vector_and_no_two_interrupts_share_one() {
        assert_eq!(config_vector(0), 0x40);
        let mut seen = [false; 256];
        for port in 0..MAX_PORTS {
            let mut all = alloc::vec![config_vector(port)];
            all.extend((0..MAX_QUEUE_VECTORS).map(|q| queue_vector(port, q)));
            for v in all {
                assert!(
                    (0x20..0xff).contains(&v),
                    "vector {v:#x}: exception or spurious"
                );
                assert!(!seen[usize::from(v)], "vector {v:#x} twice");
                seen[usize::from(v)] = true;
            }
        }
        assert_eq!(queue_msix_entry(0), 1);
        assert_ne!(queue_msix_entry(0), CONFIG_MSIX_ENTRY);
    }
}
