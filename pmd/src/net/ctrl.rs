//! The control queue (virtio 1.x, 5.1.6.5): receive modes, MAC tables, VLAN filters, and
//! the multiqueue class (queue pairs, RSS and hash configuration).
//!
//! A command is a chain of the class and command bytes, the command's data (device
//! readable) and one ack byte the device writes. This driver sends one command at a time and
//! polls for the answer, as DPDK's `virtio_send_command` does.

use crate::hal::{Dma, Hal};
use crate::virtqueue::{self, Buf, Virtqueue};

/// Command classes and commands.
pub mod class {
    pub const RX: u8 = 0;
    pub const MAC: u8 = 1;
    pub const VLAN: u8 = 2;
    pub const ANNOUNCE: u8 = 3;
    pub const MQ: u8 = 4;
}
pub mod cmd {
    pub const RX_PROMISC: u8 = 0;
    pub const RX_ALLMULTI: u8 = 1;
    pub const MAC_TABLE_SET: u8 = 0;
    pub const MAC_ADDR_SET: u8 = 1;
    pub const VLAN_ADD: u8 = 0;
    pub const VLAN_DEL: u8 = 1;
    pub const ANNOUNCE_ACK: u8 = 0;
    pub const MQ_VQ_PAIRS_SET: u8 = 0;
    pub const MQ_RSS_CONFIG: u8 = 1;
    pub const MQ_HASH_CONFIG: u8 = 2;
}

/// Queue pairs VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET may enable (`VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN`
/// and `_MAX`).
pub const MQ_VQ_PAIRS_MIN: u16 = 1;
pub const MQ_VQ_PAIRS_MAX: u16 = 0x8000;

const OK: u8 = 0;
const ERR: u8 = 1;
/// Bytes of command data one command may carry (a MAC table of 2 * 169 entries).
const MAX_DATA: usize = 2040;
const BUF: usize = 2 + MAX_DATA + 1 + 5;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CtrlError {
    #[error("the device has no control queue (VIRTIO_NET_F_CTRL_VQ not negotiated)")]
    NoControlQueue,
    #[error("{0} is not negotiated")]
    NotNegotiated(&'static str),
    #[error("the device answered VIRTIO_NET_ERR to class {class} command {cmd}")]
    Refused { class: u8, cmd: u8 },
    #[error("the device answered {ack:#x}, neither OK nor ERR, to class {class} command {cmd}")]
    BadAck { class: u8, cmd: u8, ack: u8 },
    #[error("{0} bytes of command data is more than {MAX_DATA}")]
    TooLong(usize),
}

pub(super) struct CtrlQueue<'a, H: Hal> {
    hal: &'a H,
    vq: Virtqueue<'a, H>,
    buf: Dma,
}

impl<'a, H: Hal> CtrlQueue<'a, H> {
    pub fn new(hal: &'a H, mut vq: Virtqueue<'a, H>) -> Result<Self, virtqueue::Error> {
        // Polled like the others: no interrupts for answers.
        vq.suppress_interrupts();
        let buf = hal
            .dma_alloc(BUF, 64)
            .ok_or(virtqueue::Error::NoMemory(vq.size()))?;
        Ok(Self { hal, vq, buf })
    }

    fn write(&mut self, at: usize, bytes: &[u8]) {
        debug_assert!(at + bytes.len() <= BUF);
        // SAFETY: `at + len <= BUF`, inside our DMA block; the device reads it only after
        // the chain is published, and no command is in flight now.
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.buf.vaddr.as_ptr().add(at),
                bytes.len(),
            )
        }
    }

    fn read(&self, at: usize) -> u8 {
        // SAFETY: `at < BUF`; the device finished writing before it returned the chain.
        unsafe { self.buf.vaddr.as_ptr().add(at).read_volatile() }
    }

    /// Sends one command and waits for the device's answer.
    pub fn send(
        &mut self,
        notify: impl Fn(u16),
        class: u8,
        cmd: u8,
        data: &[u8],
    ) -> Result<(), CtrlError> {
        if data.len() > MAX_DATA {
            return Err(CtrlError::TooLong(data.len()));
        }
        let ack_at = BUF - 1;
        self.write(0, &[class, cmd]);
        self.write(2, data);
        self.write(ack_at, &[0xff]);
        let p = self.buf.paddr;
        let hdr = Buf {
            paddr: p,
            len: 2,
            device_writes: false,
        };
        let body = Buf {
            paddr: p + 2,
            len: data.len() as u32,
            device_writes: false,
        };
        let ack = Buf {
            paddr: p + ack_at as u64,
            len: 1,
            device_writes: true,
        };
        let chain: &[Buf] = if data.is_empty() {
            &[hdr, ack]
        } else {
            &[hdr, body, ack]
        };
        let head = self
            .vq
            .add(chain)
            .expect("the control queue holds one command at a time");
        if self.vq.kick_prepare() {
            notify(self.vq.index());
        }
        let used = loop {
            if let Some(u) = self.vq.pop_used() {
                break u;
            }
            self.hal.relax();
        };
        if !used.is_ok_and(|u| u.id == head) {
            return Err(CtrlError::BadAck {
                class,
                cmd,
                ack: 0xff,
            });
        }
        self.hal.rmb();
        match self.read(ack_at) {
            OK => Ok(()),
            ERR => Err(CtrlError::Refused { class, cmd }),
            ack => Err(CtrlError::BadAck { class, cmd, ack }),
        }
    }
}
