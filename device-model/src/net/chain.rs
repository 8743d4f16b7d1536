//! What a virtio-net device accepts in a buffer chain, per queue: transmit chains are
//! device-readable (a header and the frame), receive chains device-writable, control chains
//! a readable command followed by a writable ack byte (5.1.6). A chain that breaks the rules
//! is returned unused or empty and counted, with a [`ChainError`] in the log.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::ctrl::Refusal;
use crate::queue::{Chain, Memory};

/// Largest tx chain accepted: a 64 KiB frame and its header.
pub const MAX_TX_CHAIN: usize = 12 + 65_536;
/// Largest control command accepted (a MAC table of a few hundred entries).
pub const MAX_CTRL: usize = 8192;

/// Why a chain was not used as the driver meant it.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The walk was cut (see [`Chain::cut`]).
    #[error("descriptor chain loops or points outside the descriptor table")]
    Cut,
    #[error("buffer {addr:#x}+{len}: {source}")]
    Buffer {
        addr: u64,
        len: usize,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("write-only descriptor in a tx chain")]
    WritableInTx,
    #[error("chain is longer than {max} bytes")]
    TxTooLong { max: usize },
    #[error("{len} bytes is shorter than the {hdr_len}-byte header")]
    ShorterThanHeader { len: usize, hdr_len: usize },
    #[error("device-readable descriptor in an rx chain")]
    ReadableInRx,
    #[error("buffer outside guest memory")]
    OutsideMemory,
    #[error("rx chain without room for a single byte")]
    NoRoom,
    #[error("device-readable descriptor after a writable one")]
    ReadableAfterWritable,
    #[error("command is longer than {max} bytes")]
    CommandTooLong { max: usize },
    #[error("no writable byte for the ack")]
    NoAck,
    #[error("ack byte {addr:#x} is outside guest memory")]
    AckOutsideMemory { addr: u64 },
    #[error("ack byte {addr:#x}: {source}")]
    Ack {
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// Why a control command that could be answered was answered VIRTIO_NET_ERR.
#[derive(Debug, thiserror::Error)]
pub enum CtrlError {
    #[error("descriptor chain loops or points outside the descriptor table")]
    Cut,
    #[error("{len} bytes is shorter than the class and command")]
    Short { len: usize },
    #[error(transparent)]
    Refused(#[from] Refusal),
}

fn read(mem: &Memory, buf: &mut [u8], addr: GuestAddress) -> Result<(), ChainError> {
    mem.read_slice(buf, addr)
        .map_err(|source| ChainError::Buffer {
            addr: addr.0,
            len: buf.len(),
            source,
        })
}

/// Copies a tx chain (header and frame) into `buf`.
pub fn gather(
    buf: &mut Vec<u8>,
    mem: &Memory,
    chain: &Chain,
    hdr_len: usize,
) -> Result<(), ChainError> {
    buf.clear();
    for r in &chain.regions {
        if r.writable {
            return Err(ChainError::WritableInTx);
        }
        let len = r.len as usize;
        let start = buf.len();
        if start + len > MAX_TX_CHAIN {
            return Err(ChainError::TxTooLong { max: MAX_TX_CHAIN });
        }
        buf.resize(start + len, 0);
        read(mem, &mut buf[start..], r.addr)?;
    }
    if chain.cut {
        return Err(ChainError::Cut);
    }
    if buf.len() < hdr_len {
        return Err(ChainError::ShorterThanHeader {
            len: buf.len(),
            hdr_len,
        });
    }
    Ok(())
}

/// Checks an rx chain and appends its buffers to `bufs`; returns their capacity. On an
/// error `bufs` is as it was.
pub fn scatter_list(
    bufs: &mut Vec<(GuestAddress, u32)>,
    mem: &Memory,
    chain: &Chain,
) -> Result<usize, ChainError> {
    let start = bufs.len();
    let mut capacity = 0usize;
    let mut bad = None;
    for r in &chain.regions {
        if !r.writable {
            bad = Some(ChainError::ReadableInRx);
            break;
        }
        // The whole buffer must be guest RAM, as tx buffers must. Found by
        // tests/proptest_hostile.rs: a buffer outside RAM (or running past its end) was
        // taken, the frame's writes into it failed, and the frame was still counted
        // delivered: lost, with used lengths that did not add up.
        if !mem.check_range(r.addr, r.len as usize) {
            bad = Some(ChainError::OutsideMemory);
            break;
        }
        capacity += r.len as usize;
        bufs.push((r.addr, r.len));
    }
    if chain.cut && bad.is_none() {
        bad = Some(ChainError::Cut);
    }
    if bad.is_none() && capacity == 0 {
        // No descriptors at all (a head past the table, a broken indirect table) or only
        // empty ones: no frame can ever fit, and kept it would drop every frame (or, with
        // mergeable buffers, be taken again for each). Found by tests/proptest_hostile.rs.
        bad = Some(ChainError::NoRoom);
    }
    match bad {
        Some(e) => {
            bufs.truncate(start);
            Err(e)
        }
        None => Ok(capacity),
    }
}

/// Copies a control chain's device-readable part (class, command, data) into `buf`; returns
/// the address of the ack byte, the first byte of the writable part.
pub fn command(buf: &mut Vec<u8>, mem: &Memory, chain: &Chain) -> Result<GuestAddress, ChainError> {
    buf.clear();
    let mut ack = None;
    for r in &chain.regions {
        if r.writable {
            if ack.is_none() && r.len >= 1 {
                ack = Some(r.addr);
            }
            continue;
        }
        if ack.is_some() {
            return Err(ChainError::ReadableAfterWritable);
        }
        let len = r.len as usize;
        let start = buf.len();
        if start + len > MAX_CTRL {
            return Err(ChainError::CommandTooLong { max: MAX_CTRL });
        }
        buf.resize(start + len, 0);
        read(mem, &mut buf[start..], r.addr)?;
    }
    let ack = ack.ok_or(ChainError::NoAck)?;
    // An ack byte outside guest RAM cannot be written: refuse the chain before acting on
    // it. Found by tests/proptest_hostile.rs: the command used to run and be counted, then
    // the failed ack write counted it a second time (as an error).
    if !mem.address_in_range(ack) {
        return Err(ChainError::AckOutsideMemory { addr: ack.0 });
    }
    Ok(ack)
}
