//! The driver's side of a split ring for unit tests, on `virtio-queue`'s mock: chains of
//! buffers made available, used entries read back.
//!
//! The ring is laid out here from the mock's parts: `MockSplitQueue::create` (0.18) puts
//! the used ring `size` bytes behind the available ring's entries instead of `2 * size`, so
//! the second half of its available ring and its `used_event` share memory with the used
//! ring.

use std::collections::HashMap;

use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::{AvailRing, DescriptorTable, UsedRing};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::{Memory, SplitQueue};

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;

/// Guest RAM of the tests: 1 MiB from address 0.
pub const RAM: u64 = 1 << 20;

pub fn ram() -> Memory {
    Memory::from_ranges(&[(GuestAddress(0), RAM as usize)]).expect("guest RAM")
}

/// A split ring as its driver sees it.
pub struct Driver<'a> {
    mem: &'a Memory,
    table: DescriptorTable<'a, Memory>,
    avail: AvailRing<'a, Memory>,
    used: UsedRing<'a, Memory>,
    addrs: (u64, u64, u64),
    size: u16,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
    /// Each chain's first buffer, by head.
    first: HashMap<u16, u64>,
}

impl<'a> Driver<'a> {
    /// A ring of `size` entries whose descriptor table is at `base` (16-byte aligned), the
    /// available and used rings right behind it.
    pub fn new(mem: &'a Memory, base: u64, size: u16) -> Self {
        let n = u64::from(size);
        let avail = base + 16 * n;
        let used = (avail + 6 + 2 * n + 3) & !3;
        Self {
            mem,
            table: DescriptorTable::new(mem, GuestAddress(base), size),
            avail: AvailRing::new(mem, GuestAddress(avail), size),
            used: UsedRing::new(mem, GuestAddress(used), size),
            addrs: (base, avail, used),
            size,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
            first: HashMap::new(),
        }
    }

    /// The device side of the ring, as the transport would build it.
    pub fn queue(&self, event_idx: bool) -> SplitQueue {
        let mut q = Queue::new(self.size).expect("a valid size");
        let (desc, avail, used) = self.addrs;
        q.try_set_desc_table_address(GuestAddress(desc))
            .expect("an aligned table");
        q.try_set_avail_ring_address(GuestAddress(avail))
            .expect("an aligned ring");
        q.try_set_used_ring_address(GuestAddress(used))
            .expect("an aligned ring");
        q.set_event_idx(event_idx);
        q.set_ready(true);
        assert!(q.is_valid(self.mem), "the ring is in RAM");
        SplitQueue::wrap(q)
    }

    pub fn avail_addr(&self) -> u64 {
        self.addrs.1
    }

    pub fn used_addr(&self) -> u64 {
        self.addrs.2
    }

    /// Writes descriptors (address, length, flags, next) as they are, from the next free
    /// table entry on, and makes the first available. Returns its index.
    pub fn raw_chain(&mut self, descs: &[(u64, u32, u16, u16)]) -> u16 {
        let head = self.next_desc;
        for &(addr, len, flags, next) in descs {
            let d = SplitDescriptor::new(addr, len, flags, next);
            self.table
                .store(self.next_desc, RawDescriptor::from(d))
                .expect("a descriptor inside the table");
            self.next_desc = (self.next_desc + 1) % self.size;
        }
        if let Some(&(addr, ..)) = descs.first() {
            self.first.insert(head, addr);
        }
        self.make_available(head);
        head
    }

    /// Links buffers (address, length, device-writable) into a chain and makes it
    /// available. Returns its head.
    pub fn chain(&mut self, bufs: &[(u64, u32, bool)]) -> u16 {
        let descs: Vec<_> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, writable))| {
                let last = i + 1 == bufs.len();
                let next = (self.next_desc + i as u16 + 1) % self.size;
                let flags = if writable { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
                (addr, len, flags, if last { 0 } else { next })
            })
            .collect();
        self.raw_chain(&descs)
    }

    /// Puts `head` in the next available slot and publishes it.
    pub fn make_available(&mut self, head: u16) {
        self.avail
            .ring()
            .ref_at(usize::from(self.avail_idx % self.size))
            .expect("a slot inside the ring")
            .store(head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(self.avail_idx);
    }

    /// Publishes `idx` as the available index, whatever was made available.
    pub fn set_avail_idx(&self, idx: u16) {
        self.avail.idx().store(idx);
    }

    /// Sets the available ring's flags (VRING_AVAIL_F_NO_INTERRUPT is 1).
    pub fn set_avail_flags(&self, flags: u16) {
        self.mem
            .write_obj(flags, GuestAddress(self.avail_addr()))
            .expect("the available ring");
    }

    /// Sets `used_event`, behind the available ring.
    pub fn set_used_event(&self, event: u16) {
        let at = self.avail_addr() + 4 + 2 * u64::from(self.size);
        self.mem
            .write_obj(event, GuestAddress(at))
            .expect("the available ring");
    }

    /// The device's `avail_event`, behind the used ring.
    pub fn avail_event(&self) -> u16 {
        let at = self.used_addr() + 4 + 8 * u64::from(self.size);
        self.mem.read_obj(GuestAddress(at)).expect("the used ring")
    }

    /// The used ring's flags (VRING_USED_F_NO_NOTIFY is 1).
    pub fn used_flags(&self) -> u16 {
        self.mem
            .read_obj(GuestAddress(self.used_addr()))
            .expect("the used ring")
    }

    pub fn used_idx(&self) -> u16 {
        self.used.idx().load()
    }

    /// The used entries (id, length) published since the last call.
    pub fn used(&mut self) -> Vec<(u16, u32)> {
        let idx = self.used_idx();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let e = self
                .used
                .ring()
                .ref_at(usize::from(self.used_seen % self.size))
                .expect("a slot inside the ring")
                .load();
            out.push((e.id() as u16, e.len()));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }

    /// What the device wrote into the first buffer of each chain used since the last call.
    pub fn written(&mut self) -> Vec<Vec<u8>> {
        self.used()
            .into_iter()
            .map(|(id, len)| {
                let mut b = vec![0; len as usize];
                let addr = self.first.get(&id).copied().expect("a chain of ours");
                self.mem
                    .read_slice(&mut b, GuestAddress(addr))
                    .expect("a buffer in RAM");
                b
            })
            .collect()
    }
}
