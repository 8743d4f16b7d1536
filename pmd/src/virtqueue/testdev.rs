//! A device side for unit tests, for either layout: it takes the chains the driver made
//! available (following indirect tables) and returns them by writing used entries into
//! [`FakeHal`] memory, as a device would. A few lines per layout, written from the spec,
//! not from the driver's code.

use alloc::vec::Vec;

use super::{Buf, Layout, Options, Virtqueue};
use crate::testing::FakeHal;
use crate::transport::QueueAddrs;

/// Fake memory for one test.
const MEM: usize = 1 << 20;

const NEXT: u16 = 1;
const WRITE: u16 = 2;
const INDIRECT: u16 = 4;
const AVAIL: u16 = 1 << 7;
const USED: u16 = 1 << 15;

/// One element of an available chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Elem {
    pub addr: u64,
    pub len: u32,
    pub write: bool,
}

/// An available chain as the device found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Avail {
    /// What its used entry names: the head descriptor (split) or the buffer ID (packed).
    pub id: u16,
    pub elems: Vec<Elem>,
    /// Ring descriptors (split: table entries) it took.
    pub slots: u16,
    /// It came through an indirect table.
    pub indirect: bool,
}

/// A descriptor in memory as four fields: (addr, len, the u16 at byte 12, the u16 at
/// byte 14): packed (addr, len, id, flags), split (addr, len, flags, next).
pub(crate) fn desc_at(hal: &FakeHal, paddr: u64) -> (u64, u32, u16, u16) {
    let b = hal.read(paddr, 16);
    (
        u64::from_le_bytes(b[0..8].try_into().unwrap()),
        u32::from_le_bytes(b[8..12].try_into().unwrap()),
        u16::from_le_bytes([b[12], b[13]]),
        u16::from_le_bytes([b[14], b[15]]),
    )
}

pub(crate) struct TestDevice {
    pub addrs: QueueAddrs,
    pub size: u16,
    pub layout: Layout,
    /// Split: the next avail entry to take and the used index. Packed: the next slot to
    /// read and the next to write, with their wrap counters.
    next_avail: u16,
    avail_wrap: bool,
    next_used: u16,
    used_wrap: bool,
    /// Packed: set WRITE in a used descriptor whose buffer the device wrote (2.8.3), as
    /// ours and DPDK's vhost do; off, used descriptors carry the AVAIL/USED bits only, as
    /// QEMU's `virtqueue_packed_fill_desc` writes them.
    write_flag: bool,
}

impl TestDevice {
    pub fn new(q: &Virtqueue<'_, FakeHal>) -> Self {
        Self::at(q.addrs(), q.size(), q.layout())
    }

    /// The device side of a queue the driver set up at `addrs` (what a transport was
    /// told).
    pub fn at(addrs: QueueAddrs, size: u16, layout: Layout) -> Self {
        Self {
            addrs,
            size,
            layout,
            next_avail: 0,
            avail_wrap: true,
            next_used: 0,
            used_wrap: true,
            write_flag: true,
        }
    }

    /// Packed: writes used descriptors as QEMU's device does, never with WRITE, whatever
    /// it wrote into the buffer.
    pub fn without_write_flag(mut self) -> Self {
        self.write_flag = false;
        self
    }

    /// Packed: where the device will write its next used descriptor, and the wrap
    /// counter there.
    pub fn used_pos(&self) -> (u16, bool) {
        (self.next_used, self.used_wrap)
    }

    /// Packed: where the device reads the next available descriptor.
    pub fn avail_pos(&self) -> (u16, bool) {
        (self.next_avail, self.avail_wrap)
    }

    fn slot(&self, i: u16) -> u64 {
        self.addrs.desc + 16 * u64::from(i)
    }

    /// The descriptor at `paddr`, in this layout: (addr, len, next or id, flags).
    fn desc(&self, hal: &FakeHal, paddr: u64) -> (u64, u32, u16, u16) {
        let (addr, len, a, b) = desc_at(hal, paddr);
        match self.layout {
            Layout::Split => (addr, len, b, a),
            Layout::Packed => (addr, len, a, b),
        }
    }

    /// Reads an indirect table of `len` bytes at `addr` (entries' NEXT ignored in packed,
    /// followed in split).
    fn table(&self, hal: &FakeHal, addr: u64, len: u32) -> Vec<Elem> {
        let n = (len / 16) as u16;
        let mut v = Vec::new();
        let mut i = 0;
        loop {
            assert!(i < n, "indirect entry {i} beyond a table of {n}");
            let (a, l, next, flags) = self.desc(hal, addr + 16 * u64::from(i));
            v.push(Elem {
                addr: a,
                len: l,
                write: flags & WRITE != 0,
            });
            match self.layout {
                Layout::Split if flags & NEXT != 0 => i = next,
                Layout::Split => return v,
                Layout::Packed => {
                    assert_eq!(flags & !WRITE, 0, "only WRITE in a packed table");
                    assert_eq!(next, 0, "the id of a packed table entry is reserved");
                    i += 1;
                    if i == n {
                        return v;
                    }
                }
            }
        }
    }

    /// The next chain the driver made available, if any.
    pub fn pop_avail(&mut self, hal: &FakeHal) -> Option<Avail> {
        match self.layout {
            Layout::Split => self.pop_split(hal),
            Layout::Packed => self.pop_packed(hal),
        }
    }

    fn pop_split(&mut self, hal: &FakeHal) -> Option<Avail> {
        if self.next_avail == hal.read_u16(self.addrs.avail + 2) {
            return None;
        }
        let at = self.addrs.avail + 4 + 2 * u64::from(self.next_avail % self.size);
        self.next_avail = self.next_avail.wrapping_add(1);
        let head = hal.read_u16(at);
        let mut a = Avail {
            id: head,
            elems: Vec::new(),
            slots: 0,
            indirect: false,
        };
        let mut i = head;
        loop {
            assert!(i < self.size, "descriptor {i} out of range");
            let (addr, len, next, flags) = self.desc(hal, self.slot(i));
            a.slots += 1;
            assert!(a.slots <= self.size, "the chain loops");
            if flags & INDIRECT != 0 {
                a.indirect = true;
                a.elems = self.table(hal, addr, len);
                return Some(a);
            }
            a.elems.push(Elem {
                addr,
                len,
                write: flags & WRITE != 0,
            });
            if flags & NEXT == 0 {
                return Some(a);
            }
            i = next;
        }
    }

    fn pop_packed(&mut self, hal: &FakeHal) -> Option<Avail> {
        let flags = desc_at(hal, self.slot(self.next_avail)).3;
        if !avail(flags, self.avail_wrap) {
            return None;
        }
        let mut a = Avail {
            id: 0,
            elems: Vec::new(),
            slots: 0,
            indirect: false,
        };
        loop {
            let (addr, len, id, flags) = desc_at(hal, self.slot(self.next_avail));
            assert!(
                avail(flags, self.avail_wrap),
                "slot {} of a chain is not available",
                self.next_avail
            );
            a.slots += 1;
            assert!(a.slots <= self.size, "a chain longer than the ring");
            self.next_avail += 1;
            if self.next_avail == self.size {
                self.next_avail = 0;
                self.avail_wrap = !self.avail_wrap;
            }
            if flags & INDIRECT != 0 {
                assert_eq!(flags & (NEXT | WRITE), 0, "INDIRECT with NEXT or WRITE");
                a.indirect = true;
                a.elems = self.table(hal, addr, len);
            } else {
                a.elems.push(Elem {
                    addr,
                    len,
                    write: flags & WRITE != 0,
                });
            }
            if flags & NEXT == 0 {
                // The buffer ID is in the last descriptor (2.8.6).
                a.id = id;
                return Some(a);
            }
        }
    }

    /// Returns one used entry naming `id` with `len` bytes written. It stands for
    /// `chains` chains taking `slots` ring slots together: more than one chain is an
    /// in-order batch (split: the used index moves by `chains`; packed: the used position
    /// moves by `slots`).
    pub fn used(&mut self, hal: &FakeHal, id: u16, len: u32, chains: u16, slots: u16) {
        match self.layout {
            Layout::Split => {
                let at = self.addrs.used + 4 + 8 * u64::from(self.next_used % self.size);
                hal.write_u32(at, u32::from(id));
                hal.write_u32(at + 4, len);
                self.next_used = self.next_used.wrapping_add(chains);
                hal.write_u16(self.addrs.used + 2, self.next_used);
            }
            Layout::Packed => {
                let at = self.slot(self.next_used);
                let mut flags = if self.used_wrap { AVAIL | USED } else { 0 };
                if len > 0 && self.write_flag {
                    flags |= WRITE;
                }
                hal.write(at + 8, &len.to_le_bytes());
                hal.write_u16(at + 12, id);
                hal.write_u16(at + 14, flags);
                let next = u32::from(self.next_used) + u32::from(slots);
                if next >= u32::from(self.size) {
                    self.used_wrap = !self.used_wrap;
                }
                self.next_used = (next % u32::from(self.size)) as u16;
            }
        }
    }

    /// Returns `a` with `len` bytes written.
    pub fn give_back(&mut self, hal: &FakeHal, a: &Avail, len: u32) {
        self.used(hal, a.id, len, 1, a.slots);
    }

    /// Returns `batch` (taken in order) with one used entry naming its last chain.
    pub fn give_back_batch(&mut self, hal: &FakeHal, batch: &[Avail], len: u32) {
        let last = batch.last().expect("a batch of one or more");
        let slots = batch.iter().map(|a| a.slots).sum();
        self.used(hal, last.id, len, batch.len() as u16, slots);
    }

    /// Takes every available chain and returns each with `len` bytes written; returns
    /// their ids.
    pub fn serve_all(&mut self, hal: &FakeHal, len: u32) -> Vec<u16> {
        let mut ids = Vec::new();
        while let Some(a) = self.pop_avail(hal) {
            self.give_back(hal, &a, len);
            ids.push(a.id);
        }
        ids
    }

    /// Packed: the device event suppression structure (what the driver reads to decide
    /// on notifications).
    pub fn set_device_event(&self, hal: &FakeHal, flags: u16, off_wrap: u16) {
        hal.write_u16(self.addrs.used, off_wrap);
        hal.write_u16(self.addrs.used + 2, flags);
    }

    /// Packed: the driver event suppression structure, (flags, off_wrap).
    pub fn driver_event(&self, hal: &FakeHal) -> (u16, u16) {
        (
            hal.read_u16(self.addrs.avail + 2),
            hal.read_u16(self.addrs.avail),
        )
    }
}

/// Whether `flags` make a packed descriptor available in the lap with wrap counter `wrap`.
fn avail(flags: u16, wrap: bool) -> bool {
    (flags & AVAIL != 0) == wrap && (flags & USED != 0) != wrap
}

/// Laps over a ring of `size`, with chains of 1 to 3 descriptors and indirect ones, returned
/// in another order than made available (or in order, in batches, when `in_order`).
pub(crate) fn laps(layout: Layout, size: u16, in_order: bool, rounds: u32) {
    let hal = FakeHal::new(MEM);
    let mut q = Virtqueue::new(
        &hal,
        0,
        size,
        Options {
            layout,
            event_idx: true,
            indirect: 2,
            in_order,
        },
    )
    .unwrap();
    let mut dev = TestDevice::new(&q);
    let mut laps = 0u32;
    let mut seq = 0u64;
    let mut expect: Vec<(u16, u64)> = Vec::new();
    for round in 0..rounds {
        // Make available what fits of 1 to 3 chains.
        let mut made = 0;
        for k in 0..1 + round % 3 {
            let n = 1 + (round + k) % 3;
            let n = n.min(u32::from(q.num_free())) as usize;
            if n == 0 {
                break;
            }
            let bufs = [buf(seq, 1, false), buf(seq, 2, false), buf(seq, 3, true)];
            let id = if (round + k) % 5 == 0 {
                q.add_indirect(&bufs[..n.min(2)])
            } else {
                q.add(&bufs[..n])
            }
            .expect("room: it fits");
            expect.push((id, seq));
            seq += 1;
            made += 1;
        }
        let before = dev.avail_pos();
        q.kick_prepare();
        let mut got: Vec<Avail> = core::iter::from_fn(|| dev.pop_avail(&hal)).collect();
        assert_eq!(got.len(), made, "round {round}");
        // A packed ring's wrap counter flipped; a split ring's 16-bit index went round.
        let after = dev.avail_pos();
        if (layout == Layout::Packed && after.1 != before.1) || after.0 < before.0 {
            laps += 1;
        }
        // Each chain as the driver made it: its first element names its sequence number.
        for a in &got {
            let &(id, s) = expect.iter().find(|e| e.0 == a.id).expect("a known ID");
            assert_eq!(a.elems[0].addr, s, "round {round}: ID {id}");
        }
        let mut returned: Vec<u16> = Vec::new();
        if in_order {
            // One batch for all but a first chain returned alone, every other round.
            if round % 2 == 0 && got.len() > 1 {
                let first = got.remove(0);
                dev.give_back(&hal, &first, 3);
                returned.push(first.id);
            }
            if !got.is_empty() {
                dev.give_back_batch(&hal, &got, 3);
                returned.extend(got.iter().map(|a| a.id));
            }
        } else {
            // Last made available, first used.
            for a in got.iter().rev() {
                dev.give_back(&hal, a, 3);
                returned.push(a.id);
            }
        }
        let mut popped = Vec::new();
        while let Some(u) = q.pop_used() {
            let u = u.expect("a good used entry");
            popped.push(u.id);
        }
        assert_eq!(popped, returned, "round {round}");
        expect.retain(|e| !popped.contains(&e.0));
        assert_eq!((q.num_free(), q.in_flight()), (size, 0), "round {round}");
    }
    match layout {
        Layout::Packed => assert!(laps > rounds / (u32::from(size) + 1), "{laps} laps"),
        Layout::Split => assert_eq!(u64::from(laps), seq / 65536, "{laps} laps"),
    }
}

fn buf(paddr: u64, len: u32, device_writes: bool) -> Buf {
    Buf {
        paddr,
        len,
        device_writes,
    }
}
