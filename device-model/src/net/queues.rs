//! Where a virtio-net device's queues are (virtio 1.x, 5.1.2): receiveq1, transmitq1, ...,
//! receiveqN, transmitqN, then the control queue. N is 1 unless the driver negotiated
//! VIRTIO_NET_F_MQ or VIRTIO_NET_F_RSS, when it is the device's `max_virtqueue_pairs`.

use std::fmt;

use super::features;
use crate::virtio::ActiveQueue;

/// The queue pairs and the control queue of a device, by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLayout {
    pairs: u16,
    ctrl: bool,
}

impl QueueLayout {
    /// The most queue pairs a device may have: with the control queue, the transport's 64
    /// queues.
    pub const MAX_PAIRS: u16 = 31;

    /// The queues a device offers with `max_pairs` pairs (`max_virtqueue_pairs`; 0 counts
    /// as 1) and `offered` features: every pair, and the control queue at 2 *
    /// `max_pairs` if it offers VIRTIO_NET_F_CTRL_VQ. The transport has that many queues.
    pub fn offered(max_pairs: u16, offered: u64) -> Self {
        Self {
            pairs: max_pairs.clamp(1, Self::MAX_PAIRS),
            ctrl: offered & features::CTRL_VQ != 0,
        }
    }

    /// The queues a driver uses once it accepted `negotiated`: every pair with
    /// VIRTIO_NET_F_MQ or VIRTIO_NET_F_RSS, the first one without; the control queue after
    /// them with VIRTIO_NET_F_CTRL_VQ.
    pub fn in_use(max_pairs: u16, negotiated: u64) -> Self {
        let pairs = if negotiated & (features::MQ | features::RSS) != 0 {
            max_pairs
        } else {
            1
        };
        Self {
            pairs: pairs.clamp(1, Self::MAX_PAIRS),
            ctrl: negotiated & features::CTRL_VQ != 0,
        }
    }

    pub fn pairs(&self) -> u16 {
        self.pairs
    }

    /// Queue index of pair `pair`'s receive queue.
    pub fn rx(pair: u16) -> u16 {
        2 * pair
    }

    /// Queue index of pair `pair`'s transmit queue.
    pub fn tx(pair: u16) -> u16 {
        2 * pair + 1
    }

    /// Where the control queue is, or would be: right after the pairs.
    pub fn ctrl_index(&self) -> u16 {
        2 * self.pairs
    }

    /// The control queue's index, if the layout has one.
    pub fn ctrl(&self) -> Option<u16> {
        self.ctrl.then(|| self.ctrl_index())
    }

    /// How many queues: the pairs' and the control queue.
    pub fn len(&self) -> u16 {
        2 * self.pairs + u16::from(self.ctrl)
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// What queue `index` is for.
    pub fn role(&self, index: u16) -> Option<Role> {
        match index {
            i if i < 2 * self.pairs && i % 2 == 0 => Some(Role::Rx(i / 2)),
            i if i < 2 * self.pairs => Some(Role::Tx(i / 2)),
            i if Some(i) == self.ctrl() => Some(Role::Ctrl),
            _ => None,
        }
    }
}

/// What a queue is for; shown as the queue's name in messages ("rx", "tx" and "ctrl" for
/// the first pair and the control queue, "rx1", "tx1", ... for the other pairs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Rx(u16),
    Tx(u16),
    Ctrl,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Role::Rx(0) => f.write_str("rx"),
            Role::Tx(0) => f.write_str("tx"),
            Role::Rx(p) => write!(f, "rx{p}"),
            Role::Tx(p) => write!(f, "tx{p}"),
            Role::Ctrl => f.write_str("ctrl"),
        }
    }
}

/// The receive and transmit queue of one pair, as the driver enabled them.
pub struct QueuePair {
    pub rx: ActiveQueue,
    pub tx: ActiveQueue,
}

impl QueuePair {
    /// The pair's number (receiveq1 and transmitq1 are pair 0).
    pub fn index(&self) -> u16 {
        self.rx.index / 2
    }
}

#[cfg(test)]
mod tests;
