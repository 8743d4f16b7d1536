//! Packed rings (virtio 1.2, 2.8, VIRTIO_F_RING_PACKED), device side.
//!
//! One ring of 16-byte descriptors serves both directions. The driver makes a descriptor
//! available by setting its AVAIL flag to the driver's wrap counter and its USED flag to
//! the opposite; the device finds available descriptors in ring order, following its own
//! copy of that counter (the avail wrap counter), which flips each time it passes the
//! ring's end. A chain takes consecutive descriptors linked by NEXT, and its buffer ID is
//! in the last one; an indirect chain is one descriptor pointing at a table of descriptors
//! (2.8.7). The device writes one used descriptor per chain (or, in order, per batch of
//! chains: 2.8.8) at its used position, with AVAIL and USED both set to its used wrap
//! counter, and moves that position by the chain's (or batch's) descriptor count.
//!
//! Notifications go through two 4-byte event suppression structures: the driver's (at the
//! queue's driver area), which the device reads to decide whether to interrupt, and the
//! device's (at the device area), which the device writes to ask for kicks or not.
//!
//! Used descriptors are staged and written at [`DeviceQueue::publish_used`], the batch's
//! first one last (its flags behind a release store): the driver polls only that one
//! descriptor, so it sees the batch at once (2.8.9, "multi-buffer requests").
//!
//! Everything read from the ring is guest input. A chain the driver built wrong comes out
//! [`Chain::cut`], as a split ring's does: a list longer than the ring, a descriptor in a
//! list that is not marked available, an indirect descriptor inside a list or inside a
//! table, an indirect table that is empty, not a whole number of descriptors, too long or
//! not in guest memory, a chain of more than 4 GiB. Nothing the driver writes makes the
//! device read or write outside the ring's three areas and the indirect tables (which are
//! only read), or loop: every walk is bounded by the ring's size or the table's length.

#[cfg(test)]
mod tests;

use std::sync::atomic::{fence, Ordering};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::{
    writable_bytes, Chain, DeviceQueue, Error, InFlight, Layout, Memory, Popped, Region,
    RingAddresses, RingConfig, RingPosition, Staged,
};

/// The descriptor continues in the next one.
pub const DESC_F_NEXT: u16 = 1;
/// Device-writable (in a used descriptor: the device wrote something).
pub const DESC_F_WRITE: u16 = 2;
/// The descriptor points at a table of descriptors.
pub const DESC_F_INDIRECT: u16 = 4;
pub const DESC_F_AVAIL: u16 = 1 << 7;
pub const DESC_F_USED: u16 = 1 << 15;

/// Event suppression flags (2.8.10).
pub const EVENT_F_ENABLE: u16 = 0;
pub const EVENT_F_DISABLE: u16 = 1;
/// Notify when the descriptor at `off_wrap` is made available (or used); only with
/// VIRTIO_F_RING_EVENT_IDX.
pub const EVENT_F_DESC: u16 = 2;
/// In `off_wrap` (and in a [`RingPosition`] of a packed ring): the wrap counter.
pub const WRAP_BIT: u16 = 1 << 15;

/// A packed ring has at most 2^15 entries (2.8).
pub const MAX_SIZE: u16 = 1 << 15;
/// Bytes of a descriptor.
pub const DESC_LEN: u64 = 16;
/// The most descriptors an indirect table may have, as for split rings (virtio-queue's
/// limit).
pub const MAX_INDIRECT: u32 = u16::MAX as u32;

const DRIVER_AREA: &str = "driver event suppression";
const DEVICE_AREA: &str = "device event suppression";

/// `struct pvirtq_desc`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub id: u16,
    pub flags: u16,
}

impl Desc {
    /// The descriptor as it lies in memory (little-endian: addr, len, id, flags).
    pub fn from_bytes(b: [u8; 16]) -> Self {
        let mut addr = [0u8; 8];
        addr.copy_from_slice(&b[..8]);
        Self {
            addr: u64::from_le_bytes(addr),
            len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            id: u16::from_le_bytes([b[12], b[13]]),
            flags: u16::from_le_bytes([b[14], b[15]]),
        }
    }

    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.id.to_le_bytes());
        b[14..].copy_from_slice(&self.flags.to_le_bytes());
        b
    }
}

/// Whether `flags` mark a descriptor available in the lap whose wrap counter is `wrap`.
pub fn is_available(flags: u16, wrap: bool) -> bool {
    (flags & DESC_F_AVAIL != 0) == wrap && (flags & DESC_F_USED != 0) != wrap
}

/// The AVAIL and USED bits of a descriptor used in the lap whose wrap counter is `wrap`.
pub fn used_bits(wrap: bool) -> u16 {
    if wrap {
        DESC_F_AVAIL | DESC_F_USED
    } else {
        0
    }
}

/// A place in the ring: a slot and the wrap counter of the lap it is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub slot: u16,
    pub wrap: bool,
}

impl Pos {
    /// The first slot of the first lap: wrap counters start at 1 (2.8.1).
    pub const START: Pos = Pos {
        slot: 0,
        wrap: true,
    };

    /// As a number modulo twice the ring's size: laps alternate their wrap counters, so
    /// two laps tell every position apart.
    fn linear(self, size: u16) -> u32 {
        u32::from(self.slot) + if self.wrap { 0 } else { u32::from(size) }
    }

    fn from_linear(l: u32, size: u16) -> Self {
        let size = u32::from(size);
        let l = l % (2 * size);
        Self {
            slot: (l % size) as u16,
            wrap: l < size,
        }
    }

    /// `n` descriptors further on.
    fn advance(self, n: u32, size: u16) -> Self {
        let span = 2 * u32::from(size);
        Self::from_linear(self.linear(size) + n % span, size)
    }

    /// `n` descriptors back.
    fn retreat(self, n: u32, size: u16) -> Self {
        let span = 2 * u32::from(size);
        Self::from_linear(self.linear(size) + span - n % span, size)
    }

    /// The slot with the wrap counter in bit 15.
    pub fn encode(self) -> u16 {
        self.slot | if self.wrap { WRAP_BIT } else { 0 }
    }

    /// What [`Pos::encode`] wrote, for a ring of `size` entries (a slot past the ring's end
    /// is taken modulo its size).
    pub fn decode(v: u16, size: u16) -> Self {
        Self {
            slot: (v & !WRAP_BIT) % size.max(1),
            wrap: v & WRAP_BIT != 0,
        }
    }
}

/// What one walk over a chain found.
#[derive(Clone, Copy, Debug)]
struct Walk {
    /// Descriptors it took in the ring.
    descs: u16,
    /// The buffer ID: the last descriptor's.
    id: u16,
    /// The position after it.
    end: Pos,
    cut: bool,
}

/// A packed ring's device side.
#[derive(Debug)]
pub struct PackedQueue {
    max_size: u16,
    size: u16,
    addrs: RingAddresses,
    ready: bool,
    event_idx: bool,
    in_order: bool,
    /// The next descriptor the device looks at, with the avail wrap counter.
    next_avail: Pos,
    /// Where the next used descriptor goes, with the used wrap counter.
    next_used: Pos,
    in_flight: InFlight,
    staged: Vec<Staged>,
}

impl PackedQueue {
    /// The ring `cfg` describes, ready, its areas checked to lie inside `mem`: the
    /// descriptor ring (16-byte aligned, 16 bytes an entry) at `desc`, the driver's event
    /// suppression structure at `driver` and the device's at `device` (4-byte aligned, 4
    /// bytes each). Any size from 1 to the maximum will do: packed rings need no power of 2.
    pub fn new(cfg: &RingConfig, mem: &Memory) -> Result<Self, Error> {
        if cfg.max_size == 0 || cfg.max_size > MAX_SIZE {
            return Err(Error::Ring(virtio_queue::Error::InvalidMaxSize));
        }
        if cfg.size == 0 || cfg.size > cfg.max_size {
            return Err(Error::Size {
                size: cfg.size,
                source: virtio_queue::Error::InvalidSize,
            });
        }
        let a = cfg.addresses;
        let aligned = |area, addr: u64, align: u64, source| {
            if addr % align == 0 {
                Ok(())
            } else {
                Err(Error::Address { area, addr, source })
            }
        };
        use virtio_queue::Error as E;
        aligned("descriptor ring", a.desc, 16, E::InvalidDescTableAlign)?;
        aligned(DRIVER_AREA, a.driver, 4, E::InvalidAvailRingAlign)?;
        aligned(DEVICE_AREA, a.device, 4, E::InvalidUsedRingAlign)?;
        let inside = |addr: u64, len: u64| mem.check_range(GuestAddress(addr), len as usize);
        if !(inside(a.desc, DESC_LEN * u64::from(cfg.size))
            && inside(a.driver, 4)
            && inside(a.device, 4))
        {
            return Err(Error::OutsideMemory {
                desc: a.desc,
                driver: a.driver,
                device: a.device,
                size: cfg.size,
            });
        }
        Ok(Self {
            max_size: cfg.max_size,
            size: cfg.size,
            addrs: a,
            ready: true,
            event_idx: cfg.event_idx,
            in_order: cfg.in_order,
            next_avail: Pos::START,
            next_used: Pos::START,
            in_flight: InFlight::default(),
            staged: Vec::new(),
        })
    }

    pub fn in_order(&self) -> bool {
        self.in_order
    }

    /// The next descriptor the device looks at, with the avail wrap counter.
    pub fn next_avail(&self) -> Pos {
        self.next_avail
    }

    /// Where the next used descriptor goes, with the used wrap counter.
    pub fn next_used(&self) -> Pos {
        self.next_used
    }

    fn desc_addr(&self, slot: u16) -> u64 {
        self.addrs.desc + DESC_LEN * u64::from(slot)
    }

    fn read_desc(&self, mem: &Memory, slot: u16) -> Result<Desc, Error> {
        let addr = self.desc_addr(slot);
        let mut b = [0u8; 16];
        mem.read_slice(&mut b, GuestAddress(addr))
            .map_err(|source| Error::DescRing { addr, source })?;
        Ok(Desc::from_bytes(b))
    }

    /// The descriptor at `at` if the driver made it available: its flags first, with
    /// acquire ordering, so that the rest of it (and of its list) is read after them.
    fn head(&self, mem: &Memory, at: Pos) -> Result<Option<Desc>, Error> {
        let addr = self.desc_addr(at.slot) + 14;
        let flags = mem
            .load::<u16>(GuestAddress(addr), Ordering::Acquire)
            .map(u16::from_le)
            .map_err(|source| Error::DescRing { addr, source })?;
        if !is_available(flags, at.wrap) {
            return Ok(None);
        }
        let d = self.read_desc(mem, at.slot)?;
        Ok(Some(Desc { flags, ..d }))
    }

    /// Walks the chain at `start`, if one is available there; with `out`, collects its
    /// regions (following its indirect table).
    fn walk(
        &self,
        mem: &Memory,
        start: Pos,
        mut out: Option<&mut Vec<Region>>,
    ) -> Result<Option<Walk>, Error> {
        let Some(mut d) = self.head(mem, start)? else {
            return Ok(None);
        };
        let mut w = Walk {
            descs: 0,
            id: 0,
            end: start,
            cut: false,
        };
        let mut bytes = 0u64;
        loop {
            w.descs += 1;
            w.id = d.id;
            w.end = w.end.advance(1, self.size);
            let more = d.flags & DESC_F_NEXT != 0;
            if d.flags & DESC_F_INDIRECT != 0 {
                // An indirect descriptor stands alone: "A driver MUST NOT write direct
                // descriptors with DESC_F_INDIRECT set in a scatter-gather list linked by
                // VIRTQ_DESC_F_NEXT" (2.8.19).
                if more || w.descs > 1 {
                    w.cut = true;
                } else if let Some(out) = out.as_deref_mut() {
                    w.cut |= !indirect(mem, d, out, &mut bytes);
                }
            } else if let Some(out) = out.as_deref_mut() {
                w.cut |= !push(out, &mut bytes, d.addr, d.len, d.flags);
            }
            if !more {
                break;
            }
            // No list is longer than the ring (2.8.17), and none is walked further.
            if w.descs >= self.size {
                w.cut = true;
                break;
            }
            // The driver makes a list's first descriptor available after the rest (2.8.6):
            // one that is not is not part of the list.
            let next = self.read_desc(mem, w.end.slot)?;
            if !is_available(next.flags, w.end.wrap) {
                w.cut = true;
                break;
            }
            d = next;
        }
        Ok(Some(w))
    }

    /// Whether the driver asked to be interrupted for the used descriptors between `old`
    /// and `new` (just written).
    fn driver_wants_interrupt(&self, mem: &Memory, old: Pos, new: Pos) -> Result<bool, Error> {
        let area = |addr: u64| {
            move |source| Error::Suppression {
                area: DRIVER_AREA,
                addr,
                source,
            }
        };
        let flags_at = self.addrs.driver + 2;
        let flags = mem
            .load::<u16>(GuestAddress(flags_at), Ordering::Relaxed)
            .map(u16::from_le)
            .map_err(area(flags_at))?
            & 3;
        match flags {
            EVENT_F_DISABLE => Ok(false),
            EVENT_F_DESC if self.event_idx => {
                let at = self.addrs.driver;
                let off_wrap = mem
                    .load::<u16>(GuestAddress(at), Ordering::Relaxed)
                    .map(u16::from_le)
                    .map_err(area(at))?;
                let event = Pos {
                    slot: off_wrap & !WRAP_BIT,
                    wrap: off_wrap & WRAP_BIT != 0,
                };
                // Is the event's descriptor among those just used (vring_need_event() on
                // positions that count two laps)?
                let span = 2 * u32::from(self.size);
                let o = old.linear(self.size);
                let published = (new.linear(self.size) + span - o) % span;
                let ahead = (event.linear(self.size) % span + span - o) % span;
                Ok(ahead < published)
            }
            // ENABLE, DESC without VIRTIO_F_RING_EVENT_IDX, the reserved value 3: interrupt.
            _ => Ok(true),
        }
    }

    fn write_device_area(&self, mem: &Memory, offset: u64, v: u16) -> Result<(), Error> {
        let addr = self.addrs.device + offset;
        mem.store(v.to_le(), GuestAddress(addr), Ordering::Release)
            .map_err(|source| Error::Suppression {
                area: DEVICE_AREA,
                addr,
                source,
            })
    }
}

/// Appends a buffer to `out`; `false` when the chain grew past 4 GiB (2.7.5.2's limit,
/// which virtio-queue applies to split rings), and it is not appended.
fn push(out: &mut Vec<Region>, bytes: &mut u64, addr: u64, len: u32, flags: u16) -> bool {
    *bytes += u64::from(len);
    if *bytes > u64::from(u32::MAX) {
        return false;
    }
    out.push(Region {
        addr: GuestAddress(addr),
        len,
        writable: flags & DESC_F_WRITE != 0,
    });
    true
}

/// Appends the buffers of the indirect table `d` points at; `false` when the table is bad
/// (the buffers read before the fault stay).
fn indirect(mem: &Memory, d: Desc, out: &mut Vec<Region>, bytes: &mut u64) -> bool {
    let entries = d.len / DESC_LEN as u32;
    if d.len == 0 || u64::from(d.len) % DESC_LEN != 0 || entries > MAX_INDIRECT {
        return false;
    }
    for i in 0..u64::from(entries) {
        let Some(at) = d.addr.checked_add(DESC_LEN * i) else {
            return false;
        };
        let mut b = [0u8; 16];
        if mem.read_slice(&mut b, GuestAddress(at)).is_err() {
            return false;
        }
        let e = Desc::from_bytes(b);
        // Only WRITE counts in a table (NEXT, the ID and the wrap bits are ignored), but a
        // table inside a table is refused, as split rings refuse it (2.7.5.3.1).
        if e.flags & DESC_F_INDIRECT != 0 || !push(out, bytes, e.addr, e.len, e.flags) {
            return false;
        }
    }
    true
}

impl DeviceQueue for PackedQueue {
    fn layout(&self) -> Layout {
        Layout::Packed
    }

    fn max_size(&self) -> u16 {
        self.max_size
    }

    fn size(&self) -> u16 {
        self.size
    }

    fn addresses(&self) -> RingAddresses {
        self.addrs
    }

    fn ready(&self) -> bool {
        self.ready
    }

    fn event_idx(&self) -> bool {
        self.event_idx
    }

    fn reset(&mut self) {
        self.size = self.max_size;
        self.addrs = RingAddresses::default();
        self.ready = false;
        self.event_idx = false;
        self.in_order = false;
        self.next_avail = Pos::START;
        self.next_used = Pos::START;
        self.in_flight.clear();
        self.staged.clear();
    }

    /// Each index is the slot with its wrap counter in bit 15.
    fn position(&self) -> RingPosition {
        RingPosition {
            next_avail: self.next_avail.encode(),
            next_used: self.next_used.encode(),
        }
    }

    fn set_position(&mut self, at: RingPosition) {
        self.next_avail = Pos::decode(at.next_avail, self.size);
        self.next_used = Pos::decode(at.next_used, self.size);
        self.in_flight.clear();
        self.staged.clear();
    }

    fn pop(&mut self, mem: &Memory, chain: &mut Chain) -> Result<bool, Error> {
        chain.regions.clear();
        let Some(w) = self.walk(mem, self.next_avail, Some(&mut chain.regions))? else {
            chain.cut = false;
            return Ok(false);
        };
        chain.id = w.id;
        chain.cut = w.cut;
        self.next_avail = w.end;
        self.in_flight.push(Popped {
            id: w.id,
            descs: w.descs,
            writable: writable_bytes(&chain.regions),
        });
        Ok(true)
    }

    fn unpop(&mut self, n: u16) {
        for _ in 0..n {
            let Some(p) = self.in_flight.unpop() else {
                break;
            };
            self.next_avail = self.next_avail.retreat(u32::from(p.descs), self.size);
        }
    }

    /// Walks the available chains: at most a ring's worth of descriptors.
    fn available(&self, mem: &Memory) -> Result<u16, Error> {
        let mut at = self.next_avail;
        let (mut chains, mut descs) = (0u16, 0u32);
        while descs < u32::from(self.size) {
            let Some(w) = self.walk(mem, at, None)? else {
                break;
            };
            chains += 1;
            descs += u32::from(w.descs);
            at = w.end;
        }
        Ok(chains)
    }

    /// A packed ring has no index the driver could push too far: nothing to check.
    fn check_available(&self, _mem: &Memory) -> Result<(), Error> {
        Ok(())
    }

    fn add_used(&mut self, _mem: &Memory, id: u16, len: u32) -> Result<(), Error> {
        let popped = self.in_flight.take(id);
        if popped.is_none() {
            tracing::debug!("packed ring: used buffer {id} was not taken from the ring");
        }
        self.staged.push(Staged { id, len, popped });
        Ok(())
    }

    /// Writes one used descriptor per staged entry (in order: per batch) where the entry's
    /// (batch's) first descriptor was, the first one's flags last; then reads the driver's
    /// event suppression structure.
    fn publish_used(&mut self, mem: &Memory) -> Result<bool, Error> {
        if self.staged.is_empty() {
            return Ok(false);
        }
        let old = self.next_used;
        let mut at = old;
        let mut skipped = 0u32;
        let mut first_flags = None;
        for (i, e) in self.staged.iter().enumerate() {
            skipped += u32::from(e.descs());
            if !e.ends_batch(self.in_order, i + 1 == self.staged.len()) {
                continue;
            }
            let addr = self.desc_addr(at.slot);
            let flags = used_bits(at.wrap) | if e.len > 0 { DESC_F_WRITE } else { 0 };
            let mut b = [0u8; 8];
            b[..4].copy_from_slice(&e.len.to_le_bytes());
            b[4..6].copy_from_slice(&e.id.to_le_bytes());
            b[6..].copy_from_slice(&flags.to_le_bytes());
            // The batch's first descriptor: its flags wait for the rest.
            let n = if first_flags.is_none() {
                first_flags = Some(flags);
                6
            } else {
                8
            };
            mem.write_slice(&b[..n], GuestAddress(addr + 8))
                .map_err(|source| Error::UsedRing {
                    addr: addr + 8,
                    source,
                })?;
            at = at.advance(skipped, self.size);
            skipped = 0;
        }
        self.staged.clear();
        if let Some(flags) = first_flags {
            let addr = self.desc_addr(old.slot) + 14;
            mem.store(flags.to_le(), GuestAddress(addr), Ordering::Release)
                .map_err(|source| Error::UsedRing { addr, source })?;
        }
        self.next_used = at;
        // The flags must be visible before the driver's suppression structure is read.
        fence(Ordering::SeqCst);
        self.driver_wants_interrupt(mem, old, at)
    }

    /// With VIRTIO_F_RING_EVENT_IDX: a kick for the descriptor at the device's avail
    /// position (RING_EVENT_FLAGS_DESC); without: any kick (RING_EVENT_FLAGS_ENABLE).
    fn enable_notification(&mut self, mem: &Memory) -> Result<bool, Error> {
        let flags = if self.event_idx {
            self.write_device_area(mem, 0, self.next_avail.encode())?;
            EVENT_F_DESC
        } else {
            EVENT_F_ENABLE
        };
        self.write_device_area(mem, 2, flags)?;
        // The request must be visible before the ring is looked at again.
        fence(Ordering::SeqCst);
        Ok(self.head(mem, self.next_avail)?.is_some())
    }

    fn disable_notification(&mut self, mem: &Memory) -> Result<(), Error> {
        self.write_device_area(mem, 2, EVENT_F_DISABLE)
    }
}
