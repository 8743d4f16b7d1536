//! The driver's side of the rings for unit tests: a split ring on `virtio-queue`'s mock,
//! and a packed ring written by hand ([`PackedDriver`]): chains of buffers made available,
//! used entries read back.
//!
//! The ring is laid out here from the mock's parts: `MockSplitQueue::create` (0.18) puts
//! the used ring `size` bytes behind the available ring's entries instead of `2 * size`, so
//! the second half of its available ring and its `used_event` share memory with the used
//! ring.

use std::collections::{HashMap, VecDeque};

use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::{AvailRing, DescriptorTable, UsedRing};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::packed::{
    Desc, Pos, DESC_F_AVAIL, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_USED, DESC_F_WRITE, MAX_SIZE,
};
use super::{Layout, Memory, PackedQueue, RingAddresses, RingConfig, SplitQueue};

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
    /// Heads made available and not yet used, oldest first.
    order: VecDeque<u16>,
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
            order: VecDeque::new(),
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

    /// The device side with VIRTIO_F_IN_ORDER.
    pub fn queue_in_order(&self, event_idx: bool) -> SplitQueue {
        self.queue(event_idx).with_in_order(true)
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
        self.order.push_back(head);
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
            if let Some(at) = self.order.iter().position(|&h| h == e.id() as u16) {
                self.order.remove(at);
            }
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }

    /// In order: each used entry published since the last call (head, length) and the
    /// heads it returned: the oldest in flight up to the one it names, the used index
    /// moving past all of them.
    pub fn used_batches(&mut self) -> Vec<(u16, u32, Vec<u16>)> {
        let idx = self.used_idx();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let e = self
                .used
                .ring()
                .ref_at(usize::from(self.used_seen % self.size))
                .expect("a slot inside the ring")
                .load();
            let id = e.id() as u16;
            let mut heads = Vec::new();
            while let Some(h) = self.order.pop_front() {
                heads.push(h);
                if h == id {
                    break;
                }
            }
            assert_eq!(heads.last(), Some(&id), "used head {id} is not in flight");
            self.used_seen = self.used_seen.wrapping_add(heads.len() as u16);
            out.push((id, e.len(), heads));
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

/// A packed ring as its driver sees it: descriptors made available in ring order with the
/// driver's wrap counter, used descriptors read back at the driver's used position.
pub struct PackedDriver<'a> {
    mem: &'a Memory,
    ring: u64,
    driver_area: u64,
    device_area: u64,
    size: u16,
    next_avail: Pos,
    next_used: Pos,
    next_id: u16,
    /// Buffers in flight, oldest first.
    in_flight: VecDeque<PackedBuf>,
    /// Used buffers with the lengths the driver takes for them, since the last call.
    returned: Vec<(PackedBuf, u32)>,
}

/// A buffer the driver made available.
#[derive(Clone, Copy, Debug)]
pub struct PackedBuf {
    pub id: u16,
    pub descs: u16,
    pub first: u64,
    pub writable: u32,
}

/// One used descriptor as the device wrote it, and the buffers it returned (one, or in
/// order a batch ending with the one it names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedUsed {
    pub id: u16,
    pub len: u32,
    pub flags: u16,
    pub ids: Vec<u16>,
}

impl<'a> PackedDriver<'a> {
    /// A ring of `size` entries at `base` (16-byte aligned); the driver's and the device's
    /// event suppression structures right behind it.
    pub fn new(mem: &'a Memory, base: u64, size: u16) -> Self {
        let end = base + 16 * u64::from(size);
        for slot in 0..u64::from(size) {
            mem.write_slice(&[0; 16], GuestAddress(base + 16 * slot))
                .expect("the ring in RAM");
        }
        mem.write_slice(&[0; 8], GuestAddress(end))
            .expect("the areas in RAM");
        Self {
            mem,
            ring: base,
            driver_area: end,
            device_area: end + 4,
            size,
            next_avail: Pos::START,
            next_used: Pos::START,
            next_id: 0,
            in_flight: VecDeque::new(),
            returned: Vec::new(),
        }
    }

    pub fn config(&self, event_idx: bool, in_order: bool) -> RingConfig {
        RingConfig {
            layout: Layout::Packed,
            max_size: self.size.next_power_of_two().min(MAX_SIZE),
            size: self.size,
            addresses: RingAddresses {
                desc: self.ring,
                driver: self.driver_area,
                device: self.device_area,
            },
            event_idx,
            in_order,
        }
    }

    /// The device side of the ring, as the transport would build it.
    pub fn queue(&self, event_idx: bool) -> PackedQueue {
        PackedQueue::new(&self.config(event_idx, false), self.mem).expect("a valid ring")
    }

    pub fn queue_in_order(&self, event_idx: bool) -> PackedQueue {
        PackedQueue::new(&self.config(event_idx, true), self.mem).expect("a valid ring")
    }

    /// The next slot the driver fills, with its wrap counter.
    pub fn next_avail(&self) -> Pos {
        self.next_avail
    }

    pub fn next_used(&self) -> Pos {
        self.next_used
    }

    pub fn desc(&self, slot: u16) -> Desc {
        let mut b = [0u8; 16];
        self.mem
            .read_slice(&mut b, GuestAddress(self.ring + 16 * u64::from(slot)))
            .expect("the ring");
        Desc::from_bytes(b)
    }

    pub fn write_desc(&self, slot: u16, d: Desc) {
        self.mem
            .write_slice(
                &d.to_bytes(),
                GuestAddress(self.ring + 16 * u64::from(slot)),
            )
            .expect("the ring");
    }

    /// The AVAIL/USED bits that make a descriptor available in a lap.
    pub fn avail_bits(wrap: bool) -> u16 {
        if wrap {
            DESC_F_AVAIL
        } else {
            DESC_F_USED
        }
    }

    /// Writes descriptors (address, length, flags: NEXT and WRITE as given) from the next
    /// slot on, each marked available in its lap, buffer ID `id` in each, the first one's
    /// flags last. Returns `id`.
    pub fn raw_chain(&mut self, descs: &[(u64, u32, u16)], id: u16) -> u16 {
        let first = self.next_avail;
        let mut at = first;
        let mut head_flags = 0;
        let mut writable = 0u32;
        for &(addr, len, flags) in descs {
            let flags = flags | Self::avail_bits(at.wrap);
            if flags & DESC_F_WRITE != 0 {
                writable = writable.saturating_add(len);
            }
            let d = Desc {
                addr,
                len,
                id,
                flags: if at == first { 0 } else { flags },
            };
            if at == first {
                head_flags = flags;
                // Not available yet: the previous lap's used bits stay until the end.
                let mut b = d.to_bytes();
                b[14..].copy_from_slice(&self.desc(at.slot).flags.to_le_bytes());
                self.mem
                    .write_slice(&b, GuestAddress(self.ring + 16 * u64::from(at.slot)))
                    .expect("the ring");
            } else {
                self.write_desc(at.slot, d);
            }
            at = step(at, self.size);
        }
        self.mem
            .store(
                head_flags,
                GuestAddress(self.ring + 16 * u64::from(first.slot) + 14),
                std::sync::atomic::Ordering::Release,
            )
            .expect("the ring");
        self.in_flight.push_back(PackedBuf {
            id,
            descs: descs.len() as u16,
            first: descs.first().map_or(0, |d| d.0),
            writable,
        });
        self.next_avail = at;
        id
    }

    fn take_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = (self.next_id + 1) % self.size;
        id
    }

    /// Links buffers (address, length, device-writable) into a list and makes it
    /// available. Returns its buffer ID.
    pub fn chain(&mut self, bufs: &[(u64, u32, bool)]) -> u16 {
        let descs: Vec<_> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, w))| {
                let next = if i + 1 < bufs.len() { DESC_F_NEXT } else { 0 };
                (addr, len, next | if w { DESC_F_WRITE } else { 0 })
            })
            .collect();
        let id = self.take_id();
        self.raw_chain(&descs, id)
    }

    /// Writes `bufs` as an indirect table at `table` and makes one descriptor pointing at
    /// it available. Returns its buffer ID.
    pub fn indirect(&mut self, table: u64, bufs: &[(u64, u32, bool)]) -> u16 {
        for (i, &(addr, len, w)) in bufs.iter().enumerate() {
            let d = Desc {
                addr,
                len,
                id: 0,
                flags: if w { DESC_F_WRITE } else { 0 },
            };
            self.mem
                .write_slice(&d.to_bytes(), GuestAddress(table + 16 * i as u64))
                .expect("the table");
        }
        let id = self.take_id();
        self.raw_chain(&[(table, 16 * bufs.len() as u32, DESC_F_INDIRECT)], id);
        if let Some(b) = self.in_flight.back_mut() {
            b.first = bufs.first().map_or(0, |b| b.0);
            b.writable = bufs
                .iter()
                .filter(|b| b.2)
                .fold(0u32, |n, b| n.saturating_add(b.1));
        }
        id
    }

    /// The used descriptors written since the last call, read as a driver does: in order
    /// (`in_order`), a descriptor returns the oldest buffers up to the one it names.
    pub fn used_descs(&mut self, in_order: bool) -> Vec<PackedUsed> {
        let mut out = Vec::new();
        loop {
            let d = self.desc(self.next_used.slot);
            let used = d.flags & DESC_F_USED != 0;
            if used != self.next_used.wrap || (d.flags & DESC_F_AVAIL != 0) != used {
                break;
            }
            let len = if d.flags & DESC_F_WRITE != 0 {
                d.len
            } else {
                0
            };
            let mut ids = Vec::new();
            let mut descs = 0u32;
            if in_order {
                while let Some(b) = self.in_flight.pop_front() {
                    ids.push(b.id);
                    descs += u32::from(b.descs);
                    let last = b.id == d.id;
                    self.returned.push((b, if last { len } else { b.writable }));
                    if last {
                        break;
                    }
                }
            } else if let Some(at) = self.in_flight.iter().position(|b| b.id == d.id) {
                let b = self.in_flight.remove(at).expect("in flight");
                ids.push(b.id);
                descs = u32::from(b.descs);
                self.returned.push((b, len));
            }
            assert!(!ids.is_empty(), "used buffer {} is not in flight", d.id);
            for _ in 0..descs {
                self.next_used = step(self.next_used, self.size);
            }
            out.push(PackedUsed {
                id: d.id,
                len: d.len,
                flags: d.flags,
                ids,
            });
        }
        out
    }

    /// (buffer ID, length) of each used descriptor since the last call (out of order).
    pub fn used(&mut self) -> Vec<(u16, u32)> {
        self.used_descs(false)
            .into_iter()
            .map(|u| {
                (
                    u.id,
                    if u.flags & DESC_F_WRITE != 0 {
                        u.len
                    } else {
                        0
                    },
                )
            })
            .collect()
    }

    /// What the device wrote into the first buffer of each buffer used since the last
    /// call to this (out of order, after [`PackedDriver::used_descs`] in order).
    pub fn written(&mut self) -> Vec<Vec<u8>> {
        self.used_descs(false);
        std::mem::take(&mut self.returned)
            .into_iter()
            .map(|(b, len)| {
                let mut v = vec![0; len as usize];
                self.mem
                    .read_slice(&mut v, GuestAddress(b.first))
                    .expect("a buffer in RAM");
                v
            })
            .collect()
    }

    /// The driver's event suppression structure: `off_wrap`, then flags.
    pub fn set_driver_event(&self, flags: u16, off_wrap: u16) {
        self.mem
            .write_obj(off_wrap, GuestAddress(self.driver_area))
            .expect("the driver area");
        self.mem
            .write_obj(flags, GuestAddress(self.driver_area + 2))
            .expect("the driver area");
    }

    /// The device's event suppression structure: (`off_wrap`, flags).
    pub fn device_event(&self) -> (u16, u16) {
        let off_wrap = self
            .mem
            .read_obj(GuestAddress(self.device_area))
            .expect("the device area");
        let flags = self
            .mem
            .read_obj(GuestAddress(self.device_area + 2))
            .expect("the device area");
        (off_wrap, flags)
    }
}

/// The next slot, flipping the wrap counter past the ring's end.
pub fn step(p: Pos, size: u16) -> Pos {
    if p.slot + 1 == size {
        Pos {
            slot: 0,
            wrap: !p.wrap,
        }
    } else {
        Pos {
            slot: p.slot + 1,
            wrap: p.wrap,
        }
    }
}
