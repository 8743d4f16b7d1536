//! Split rings (virtio 1.2, 2.7) on `virtio-queue`'s [`Queue`]: it walks the descriptor
//! chains and keeps the indexes; the used ring is written here, in batches.
//!
//! `virtio-queue` publishes the used index after every entry. A receive path that spreads a
//! frame over several buffers (VIRTIO_NET_F_MRG_RXBUF) must publish them together: a driver
//! reads `num_buffers` from the first and expects the rest to be there (Linux's
//! `receive_mergeable`). Publishing once per batch also keeps the index's cache line from
//! bouncing between device and driver on every frame.
//!
//! In order (VIRTIO_F_IN_ORDER), a batch of buffers is returned with one used ring entry:
//! it names the batch's last buffer and sits in the slot of the batch's first, and the used
//! index moves past the whole batch. Only buffers the device only read are skipped that way
//! (see [`Staged::ends_batch`]).

use std::borrow::BorrowMut;
use std::num::Wrapping;
use std::sync::atomic::Ordering;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::{
    writable_bytes, Chain, DeviceQueue, Error, InFlight, Layout, Memory, Popped, Region,
    RingAddresses, RingConfig, RingPosition, Staged,
};

const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;

/// A split ring's device side. `Q` is the [`Queue`] itself, or a borrow of one that
/// something else keeps (the `vhost-user-backend` crate's vrings).
#[derive(Debug)]
pub struct SplitQueue<Q = Queue> {
    q: Q,
    /// Used entries not yet written.
    staged: Vec<Staged>,
    in_order: bool,
    /// The chains taken and not yet used, in order only.
    in_flight: InFlight,
}

impl SplitQueue<Queue> {
    /// The ring `cfg` describes, ready, its areas checked to lie inside `mem`.
    pub fn new(cfg: &RingConfig, mem: &Memory) -> Result<Self, Error> {
        let a = cfg.addresses;
        let mut q = Queue::new(cfg.max_size)?;
        q.try_set_size(cfg.size).map_err(|source| Error::Size {
            size: cfg.size,
            source,
        })?;
        let area = |area, addr| move |source| Error::Address { area, addr, source };
        q.try_set_desc_table_address(GuestAddress(a.desc))
            .map_err(area("descriptor table", a.desc))?;
        q.try_set_avail_ring_address(GuestAddress(a.driver))
            .map_err(area("available ring", a.driver))?;
        q.try_set_used_ring_address(GuestAddress(a.device))
            .map_err(area("used ring", a.device))?;
        q.set_event_idx(cfg.event_idx);
        q.set_ready(true);
        if !q.is_valid(mem) {
            return Err(Error::OutsideMemory {
                desc: a.desc,
                driver: a.driver,
                device: a.device,
                size: cfg.size,
            });
        }
        Ok(Self::wrap(q).with_in_order(cfg.in_order))
    }
}

impl<Q: BorrowMut<Queue>> SplitQueue<Q> {
    /// Serves `q` as it is (its indexes, addresses and readiness).
    pub fn wrap(q: Q) -> Self {
        Self {
            q,
            staged: Vec::new(),
            in_order: false,
            in_flight: InFlight::default(),
        }
    }

    /// Uses buffers in order and returns batches with one used entry (VIRTIO_F_IN_ORDER).
    pub fn with_in_order(mut self, in_order: bool) -> Self {
        self.in_order = in_order;
        self
    }

    pub fn in_order(&self) -> bool {
        self.in_order
    }

    pub fn queue(&self) -> &Queue {
        self.q.borrow()
    }

    pub fn into_inner(self) -> Q {
        self.q
    }

    fn q(&self) -> &Queue {
        self.q.borrow()
    }

    fn q_mut(&mut self) -> &mut Queue {
        self.q.borrow_mut()
    }
}

impl<Q: BorrowMut<Queue> + Send> DeviceQueue for SplitQueue<Q> {
    fn layout(&self) -> Layout {
        Layout::Split
    }

    fn max_size(&self) -> u16 {
        self.q().max_size()
    }

    fn size(&self) -> u16 {
        self.q().size()
    }

    fn addresses(&self) -> RingAddresses {
        let q = self.q();
        RingAddresses {
            desc: q.desc_table(),
            driver: q.avail_ring(),
            device: q.used_ring(),
        }
    }

    fn ready(&self) -> bool {
        self.q().ready()
    }

    fn event_idx(&self) -> bool {
        self.q().event_idx_enabled()
    }

    fn reset(&mut self) {
        self.q_mut().reset();
        self.staged.clear();
        self.in_flight.clear();
        self.in_order = false;
    }

    fn position(&self) -> RingPosition {
        RingPosition {
            next_avail: self.q().next_avail(),
            next_used: self.q().next_used(),
        }
    }

    fn set_position(&mut self, at: RingPosition) {
        let q = self.q_mut();
        q.set_next_avail(at.next_avail);
        q.set_next_used(at.next_used);
        self.staged.clear();
        self.in_flight.clear();
    }

    fn pop(&mut self, mem: &Memory, chain: &mut Chain) -> Result<bool, Error> {
        let Some(descs) = self.q_mut().pop_descriptor_chain(mem) else {
            return Ok(false);
        };
        chain.id = descs.head_index();
        chain.regions.clear();
        // `virtio-queue` ends a walk after a ring's worth of descriptors, at an index
        // outside the table, or at a bad indirect table: a last descriptor that still says
        // NEXT shows the chain was cut.
        let mut more = false;
        for d in descs {
            more = d.has_next();
            chain.regions.push(Region {
                addr: d.addr(),
                len: d.len(),
                writable: d.is_write_only(),
            });
        }
        chain.cut = more;
        if self.in_order {
            self.in_flight.push(Popped {
                id: chain.id,
                descs: 1,
                writable: writable_bytes(&chain.regions),
            });
        }
        Ok(true)
    }

    fn unpop(&mut self, n: u16) {
        for _ in 0..n {
            self.q_mut().go_to_previous_position();
            self.in_flight.unpop();
        }
    }

    fn available(&self, mem: &Memory) -> Result<u16, Error> {
        let q = self.q();
        let idx = q.avail_idx(mem, Ordering::Acquire)?;
        Ok(idx.0.wrapping_sub(q.next_avail()))
    }

    fn check_available(&self, mem: &Memory) -> Result<(), Error> {
        let q = self.q();
        let idx = q.avail_idx(mem, Ordering::Acquire)?;
        let ahead = idx.0.wrapping_sub(q.next_avail());
        if ahead > q.size() {
            return Err(Error::AvailAhead {
                idx: idx.0,
                ahead,
                size: q.size(),
            });
        }
        Ok(())
    }

    fn add_used(&mut self, _mem: &Memory, id: u16, len: u32) -> Result<(), Error> {
        let popped = if self.in_order {
            self.in_flight.take(id)
        } else {
            None
        };
        self.staged.push(Staged { id, len, popped });
        Ok(())
    }

    /// Writes the staged entries (one per batch in order), then one release store of the
    /// used index, then reads the driver's suppression field.
    fn publish_used(&mut self, mem: &Memory) -> Result<bool, Error> {
        if self.staged.is_empty() {
            return Ok(false);
        }
        let in_order = self.in_order;
        let q = self.q();
        let (size, ring, old) = (q.size(), q.used_ring(), q.next_used());
        // The used index counts buffers, whether or not each has its own entry.
        let count = self.staged.len() as u16;
        let mut first = 0u16;
        for (i, e) in self.staged.iter().enumerate() {
            let k = i as u16;
            if !e.ends_batch(in_order, i + 1 == self.staged.len()) {
                continue;
            }
            // The entry goes where the batch's first buffer's would.
            let slot = old.wrapping_add(first) % size;
            let addr = ring + 4 + 8 * u64::from(slot);
            let mut elem = [0u8; 8];
            elem[..4].copy_from_slice(&u32::from(e.id).to_le_bytes());
            elem[4..].copy_from_slice(&e.len.to_le_bytes());
            mem.write_slice(&elem, GuestAddress(addr))
                .map_err(|source| Error::UsedRing { addr, source })?;
            first = k.wrapping_add(1);
        }
        self.staged.clear();
        let q = self.q_mut();
        let new = old.wrapping_add(count);
        let idx_addr = q.used_ring() + 2;
        mem.store(new.to_le(), GuestAddress(idx_addr), Ordering::Release)
            .map_err(|source| Error::UsedRing {
                addr: idx_addr,
                source,
            })?;
        q.set_next_used(new);
        // The index store must be visible before the driver's suppression field is read.
        std::sync::atomic::fence(Ordering::SeqCst);
        let avail = q.avail_ring();
        if q.event_idx_enabled() {
            let at = avail + 4 + 2 * u64::from(q.size());
            let event: u16 = mem
                .load(GuestAddress(at), Ordering::Relaxed)
                .map(u16::from_le)
                .map_err(|source| Error::UsedRing { addr: at, source })?;
            // vring_need_event(): is `event` among the entries just published?
            let (e, n, o) = (Wrapping(event), Wrapping(new), Wrapping(old));
            Ok(n - e - Wrapping(1) < n - o)
        } else {
            let flags: u16 = mem
                .load(GuestAddress(avail), Ordering::Relaxed)
                .map(u16::from_le)
                .map_err(|source| Error::UsedRing {
                    addr: avail,
                    source,
                })?;
            Ok(flags & VRING_AVAIL_F_NO_INTERRUPT == 0)
        }
    }

    fn enable_notification(&mut self, mem: &Memory) -> Result<bool, Error> {
        Ok(self.q_mut().enable_notification(mem)?)
    }

    fn disable_notification(&mut self, mem: &Memory) -> Result<(), Error> {
        Ok(self.q_mut().disable_notification(mem)?)
    }
}
