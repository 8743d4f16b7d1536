//! A hostile driver's scenarios against the whole device (transport, virtio-net, the rust
//! datapath) and the properties the device must keep under them. Shared by the property tests
//! (`tests/proptest_hostile.rs`, which generate scenarios with proptest and shrink failures)
//! and the mutation fuzzer (`examples/fuzz_rings.rs`, which mutates generated scenarios a
//! million times).
//!
//! A scenario is everything one activation of the device sees: the feature and queue
//! negotiation (modern or legacy interface), where each queue's rings are (in RAM, across two
//! regions, outside RAM, misaligned, on top of each other), the descriptor tables, indirect
//! tables, available rings and indexes, the frames waiting at the source, odd register
//! accesses before and after DRIVER_OK, and whether the driver resets mid-transfer.
//!
//! Guest RAM is four regions with a hole, inside one host mapping with guard pages around
//! each region:
//!
//! ```text
//! 0x00000 R1  rings (0x4000 per queue from 0x4000: page 0 is no legacy ring), indirect
//!             tables, tx data, ctrl data, and at 0x1e000
//! 0x20000 R2  an alternative ring slot straddling the R1/R2 boundary; then rx buffers
//! 0x40000     hole
//! 0x50000 R3  rx buffers, on across the R3/R4 boundary
//! 0x58000 R4
//! 0x60000     end of RAM
//! ```
//!
//! After the device is reset (its datapath thread joined), the run checks:
//! - nothing panicked and the datapath did not stop on its own;
//! - the reset came back within [`RESET_LIMIT`] (the datapath stops when asked);
//! - no guard byte around a region changed (nothing outside guest RAM was written);
//! - every RAM byte that changed is in a used ring or in a device-writable (WRITE)
//!   descriptor of the rx or control queue;
//! - counters account for every chain: each tx chain is a frame sent, dropped or malformed;
//!   each control chain is answered OK or ERR; each frame taken from the source is
//!   delivered, filtered or dropped, and the bytes written to rx buffers are the headers and
//!   frames delivered;
//! - used entries name the heads the driver offered, in order for tx and control, with the
//!   lengths the spec allows;
//! - what went out of the tx queue is, frame for frame, what a reference walk of the chains
//!   (virtio-queue's rules, re-implemented here) says;
//! - DEVICE_NEEDS_RESET is set when the rings or the status sequence were invalid or the tx
//!   avail index jumped, and not set for a well-formed setup.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use device_model::endpoint::PcapSource;
use device_model::net::NetConfig;
use device_model::pci::PciDevice;
use device_model::virtio::{status, Memory};
use device_model::virtio_pci::{Options, LEGACY_BAR, MODERN_BAR, MSIX_BAR, NOTIFY_OFFSET};
use proptest::prelude::*;
use vm_memory::mmap::MmapRegion;
use vm_memory::{Bytes, GuestAddress, GuestRegionMmap};

use super::{frames, NoMsi, Rig};

// ---------------------------------------------------------------------------------------
// Memory layout.

/// Guest RAM regions: (guest-physical start, length).
pub const REGIONS: [(u64, usize); 4] = [
    (0x00000, 0x20000),
    (0x20000, 0x20000),
    (0x50000, 0x8000),
    (0x58000, 0x8000),
];
pub const RAM_END: u64 = 0x60000;
/// Each queue's own ring slot (legacy layout fits a 256-entry ring). Not at 0: the legacy
/// interface's page frame number 0 disables a queue.
pub const RING_SLOT: [u64; 3] = [0x4000, 0x8000, 0xc000];
pub const INDIRECT_AREA: u64 = 0x10000;
/// Entries of the indirect area.
pub const INDIRECT_ENTRIES: usize = 2048;
pub const TX_AREA: u64 = 0x18000;
pub const TX_LEN: u64 = 0x4000;
pub const CTRL_AREA: u64 = 0x1c000;
pub const CTRL_LEN: u64 = 0x2000;
/// A ring slot whose rings cross from R1 into R2.
pub const ALT_SLOT: u64 = 0x1e000;
/// Device-writable buffers go here (and nowhere else below RAM_END, except on purpose
/// across the ends of RAM and regions).
pub const RX_AREAS: [(u64, u64); 2] = [(0x22000, 0x40000), (0x50000, 0x60000)];

const GUARD: usize = 4096;
const GUARD_BYTE: u8 = 0xa5;

/// Addresses at the edges: across R1/R2 (valid), into the hole, across R3/R4 (valid), across
/// the end of RAM, outside RAM, near the top of the address space.
pub const EDGE_ADDRS: [u64; 13] = [
    0x1fff8,
    0x3fff0,
    0x3fffe,
    0x40000,
    0x4fff8,
    0x57ff8,
    0x5fff0,
    0x5ffff,
    RAM_END,
    RAM_END + 0x1000,
    1 << 32,
    u64::MAX - 15,
    u64::MAX,
];
/// Lengths at the edges: zero, around the header, the tx chain limit, u32 wrap.
pub const EDGE_LENS: [u32; 16] = [
    0,
    1,
    2,
    10,
    11,
    12,
    13,
    1514,
    1530,
    4096,
    65_548,
    65_549,
    0x10000,
    0x7fff_ffff,
    0xffff_fff0,
    u32::MAX,
];

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;

/// Datapath limits this file mirrors (see `net/datapath.rs`).
const MAX_TX_CHAIN: usize = 12 + 65_536;

/// The longest a reset may take: the datapath must notice a stop request that soon.
pub const RESET_LIMIT: Duration = Duration::from_secs(2);
/// How long a run waits for the device to finish what it was given (coverage only: the
/// properties are checked whatever it got through).
const SETTLE_LIMIT: Duration = Duration::from_millis(50);
/// No visible progress for this long counts as finished (rx starved for buffers).
const STALL: Duration = Duration::from_micros(300);

/// Whether a legacy-BAR write reaches a register the legacy interface defines (which makes
/// the driver a legacy one), rather than being an odd access the device ignores. With MSI-X
/// on, the device configuration starts at 0x18 and 0x14/0x16 are the vector registers.
fn legacy_register(off: u64, len: usize, msix: bool) -> bool {
    let config = if msix { 0x18 } else { 0x14 };
    off >= config
        || matches!(
            (off, len),
            (0x04 | 0x08, 4) | (0x0e | 0x10 | 0x14 | 0x16, 2) | (0x12, 1)
        )
}

/// Whether MSI-X is enabled in the function's capability.
fn msix_enabled(
    dev: &mut device_model::virtio_pci::VirtioPciDevice<device_model::net::Net>,
) -> bool {
    let mut ptr = (dev.config_read(0x34) & 0xff) as u16;
    for _ in 0..48 {
        if ptr == 0 {
            break;
        }
        let v = dev.config_read(ptr);
        if v & 0xff == 0x11 {
            return v >> 16 & 0x8000 != 0;
        }
        ptr = ((v >> 8) & 0xff) as u16;
    }
    false
}

fn in_ram(addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    // R1 and R2 are adjacent, as are R3 and R4.
    (end <= 0x40000) || (addr >= 0x50000 && end <= RAM_END)
}

// ---------------------------------------------------------------------------------------
// Guest memory with guard pages, and a copy of it for the reference model.

/// Guest RAM in one host mapping, each region between guard pages; and `pre`, a plain
/// memory of the same layout that holds what RAM looked like before the device ran.
pub struct GuardedRam {
    host: *mut u8,
    total: usize,
    /// Host offset of each region in `host`.
    offsets: [usize; 4],
    pub mem: Arc<Memory>,
    pub pre: Memory,
    /// What [`GuardedRam::fill`] puts in each region.
    pattern: Vec<Vec<u8>>,
}

// SAFETY: the mapping is only reached through `mem` (which vm-memory synchronises like any
// guest memory) and through `&self`/`&mut self` methods here.
unsafe impl Send for GuardedRam {}

impl GuardedRam {
    pub fn new() -> Self {
        let total = REGIONS.iter().map(|r| r.1).sum::<usize>() + GUARD * (REGIONS.len() + 1);
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing.
        let host = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(host, libc::MAP_FAILED, "mmap of {total} bytes");
        let host = host.cast::<u8>();
        let mut offsets = [0usize; 4];
        let mut off = GUARD;
        let mut regions = Vec::new();
        for (i, &(gpa, len)) in REGIONS.iter().enumerate() {
            offsets[i] = off;
            // SAFETY: [off, off + len) lies inside the mapping made above, which outlives
            // the region (see Drop), and no other region covers it.
            let region = unsafe {
                MmapRegion::build_raw(
                    host.add(off),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                )
            }
            .expect("raw mmap region");
            regions.push(GuestRegionMmap::new(region, GuestAddress(gpa)).expect("region"));
            off += len + GUARD;
        }
        let mem = Arc::new(Memory::from_regions(regions).expect("guest memory"));
        let ranges: Vec<_> = REGIONS
            .iter()
            .map(|&(gpa, len)| (GuestAddress(gpa), len))
            .collect();
        let pre = Memory::from_ranges(&ranges).expect("reference memory");
        let pattern = REGIONS
            .iter()
            .map(|&(gpa, len)| {
                (0..len as u64)
                    .map(|k| {
                        let a = gpa + k;
                        (a ^ (a >> 8) ^ (a >> 16)) as u8
                    })
                    .collect()
            })
            .collect();
        let ram = Self {
            host,
            total,
            offsets,
            mem,
            pre,
            pattern,
        };
        // SAFETY: the whole mapping is ours; guards are filled once and checked after runs.
        unsafe { std::ptr::write_bytes(host, GUARD_BYTE, total) };
        ram
    }

    /// Region `i` of live RAM, as host bytes.
    fn live(&self, i: usize) -> &[u8] {
        // SAFETY: region i is `REGIONS[i].1` bytes at `offsets[i]` inside the mapping. The
        // datapath thread may write it concurrently only while the device runs; callers
        // read it only after the reset joined that thread.
        unsafe { std::slice::from_raw_parts(self.host.add(self.offsets[i]), REGIONS[i].1) }
    }

    fn live_mut(&mut self, i: usize) -> &mut [u8] {
        // SAFETY: as `live`; `&mut self` and no running device make this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.host.add(self.offsets[i]), REGIONS[i].1) }
    }

    /// Whether every guard byte still holds its pattern.
    pub fn guards_intact(&self) -> Result<(), String> {
        // The guard bands: before each region, and after the last.
        let bands = self
            .offsets
            .iter()
            .zip(REGIONS)
            .scan(0, |start, (&off, (_, len))| {
                let band = (*start, off);
                *start = off + len;
                Some(band)
            })
            .chain(std::iter::once((self.total - GUARD, self.total)));
        for (i, (start, end)) in bands.enumerate() {
            // SAFETY: [start, end) is a guard band inside the mapping.
            let guard = unsafe { std::slice::from_raw_parts(self.host.add(start), end - start) };
            if let Some(p) = guard.iter().position(|&b| b != GUARD_BYTE) {
                return Err(format!(
                    "host memory outside guest RAM changed: guard band {i}, byte {p}"
                ));
            }
        }
        Ok(())
    }

    /// Fills RAM with a pattern that depends on the address.
    pub fn fill(&mut self) {
        let patterns = std::mem::take(&mut self.pattern);
        for (i, pattern) in patterns.iter().enumerate() {
            self.live_mut(i).copy_from_slice(pattern);
        }
        self.pattern = patterns;
    }

    /// Where region `i` of `pre` is mapped.
    fn pre_host(&self, i: usize) -> *mut u8 {
        vm_memory::GuestMemoryBackend::get_host_address(&self.pre, GuestAddress(REGIONS[i].0))
            .expect("pre has the same layout")
    }

    /// Copies live RAM into `pre`.
    pub fn snapshot(&mut self) {
        for (i, &(_, len)) in REGIONS.iter().enumerate() {
            // SAFETY: `pre` maps region i contiguously (`len` bytes at its host address)
            // for its lifetime, apart from the live mapping; only this thread uses it.
            unsafe { std::ptr::copy_nonoverlapping(self.live(i).as_ptr(), self.pre_host(i), len) };
        }
    }

    /// Calls `f(address)` for each byte that differs between live RAM and `pre`.
    fn changed(&self, mut f: impl FnMut(u64)) {
        for (i, &(gpa, len)) in REGIONS.iter().enumerate() {
            // SAFETY: as in `snapshot`; nothing writes `pre` while this slice lives.
            let buf = unsafe { std::slice::from_raw_parts(self.pre_host(i), len) };
            let live = self.live(i);
            for (c, (a, b)) in live.chunks(64).zip(buf.chunks(64)).enumerate() {
                if a != b {
                    for (k, (x, y)) in a.iter().zip(b).enumerate() {
                        if x != y {
                            f(gpa + (c * 64 + k) as u64);
                        }
                    }
                }
            }
        }
    }
}

impl Default for GuardedRam {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for GuardedRam {
    fn drop(&mut self) {
        // A device that is still running (a hung reset) keeps using the mapping: leak it.
        if Arc::strong_count(&self.mem) == 1 {
            // SAFETY: nothing else refers to the mapping any more.
            unsafe { libc::munmap(self.host.cast(), self.total) };
        }
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawDesc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

impl RawDesc {
    fn bytes(self) -> [u8; 16] {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&self.addr.to_le_bytes());
        d[8..12].copy_from_slice(&self.len.to_le_bytes());
        d[12..14].copy_from_slice(&self.flags.to_le_bytes());
        d[14..16].copy_from_slice(&self.next.to_le_bytes());
        d
    }

    fn parse(d: [u8; 16]) -> Self {
        Self {
            addr: u64::from_le_bytes(d[0..8].try_into().unwrap()),
            len: u32::from_le_bytes(d[8..12].try_into().unwrap()),
            flags: u16::from_le_bytes(d[12..14].try_into().unwrap()),
            next: u16::from_le_bytes(d[14..16].try_into().unwrap()),
        }
    }
}

/// Where a queue's rings go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The queue's own slot, in the legacy layout.
    Slot,
    /// The slot across the R1/R2 boundary.
    Alt,
    /// Anywhere (the legacy interface takes the page of `desc`).
    At { desc: u64, avail: u64, used: u64 },
}

#[derive(Clone, Debug)]
pub struct QueueSpec {
    /// Size the driver writes (the legacy interface has none).
    pub size: u16,
    pub enable: bool,
    pub place: Placement,
    /// Descriptor table (entries past the queue size are not written).
    pub descs: Vec<RawDesc>,
    /// Available ring entries.
    pub avail: Vec<u16>,
    pub avail_idx: u16,
    pub avail_flags: u16,
    pub used_event: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Modern,
    Legacy,
    Msix,
    Config,
}

/// A register access at any offset, of any width.
#[derive(Clone, Copy, Debug)]
pub struct RegOp {
    pub target: Target,
    pub offset: u64,
    pub len: u8,
    pub value: u64,
    pub write: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusPlan {
    /// ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues, DRIVER_OK.
    Normal,
    /// DRIVER_OK without FEATURES_OK.
    SkipFeaturesOk,
    /// Normal, then a reset right after the kicks, while the datapath works.
    ResetMidTransfer,
}

#[derive(Clone, Debug)]
pub struct Scenario {
    /// A transitional device (legacy I/O BAR) rather than a modern-only one.
    pub transitional: bool,
    /// Drive it through the legacy interface (only on a transitional device).
    pub legacy: bool,
    pub fixed_queue_size: bool,
    /// The device's queue size.
    pub max_size: u16,
    /// Features the device offers.
    pub offered: u64,
    /// Features the driver accepts (maybe not offered).
    pub wanted: u64,
    /// rx, tx, ctrl.
    pub queues: Vec<QueueSpec>,
    /// The indirect area's descriptors.
    pub indirect: Vec<RawDesc>,
    /// The ctrl data area's bytes (commands).
    pub ctrl_bytes: Vec<u8>,
    /// Frames waiting at the source: length and a destination kind.
    pub input: Vec<(u16, u8)>,
    /// Register accesses after the queues are set up, before DRIVER_OK.
    pub setup_ops: Vec<RegOp>,
    /// Register accesses while the device runs.
    pub running_ops: Vec<RegOp>,
    pub plan: StatusPlan,
}

/// Feature bits (device-model's names).
mod feat {
    pub const MTU: u64 = 1 << 3;
    pub const MAC: u64 = 1 << 5;
    pub const MRG_RXBUF: u64 = 1 << 15;
    pub const STATUS: u64 = 1 << 16;
    pub const CTRL_VQ: u64 = 1 << 17;
    pub const CTRL_RX: u64 = 1 << 18;
    pub const CTRL_VLAN: u64 = 1 << 19;
    pub const CTRL_MAC_ADDR: u64 = 1 << 23;
    pub const ANY_LAYOUT: u64 = 1 << 27;
    pub const INDIRECT: u64 = 1 << 28;
    pub const EVENT_IDX: u64 = 1 << 29;
    pub const VERSION_1: u64 = 1 << 32;
    pub const ALL: [u64; 12] = [
        MTU,
        MAC,
        MRG_RXBUF,
        STATUS,
        CTRL_VQ,
        CTRL_RX,
        CTRL_VLAN,
        CTRL_MAC_ADDR,
        ANY_LAYOUT,
        INDIRECT,
        EVENT_IDX,
        VERSION_1,
    ];
    pub const NEEDS_CTRL_VQ: u64 = CTRL_RX | CTRL_VLAN | CTRL_MAC_ADDR;
}

/// The device's own MAC (NetConfig's default).
const OWN_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

fn frame(len: u16, kind: u8, seq: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..usize::from(len))
        .map(|i| (i as u8) ^ (seq as u8).wrapping_mul(31))
        .collect();
    let dst: [u8; 6] = match kind % 4 {
        0 => [0xff; 6],
        1 => OWN_MAC,
        2 => [0x02, 0, 0, 0, 0, seq as u8],
        _ => [0x01, 0x00, 0x5e, 0, 0, 1],
    };
    for (d, s) in f.iter_mut().zip(dst) {
        *d = s;
    }
    f
}

impl Scenario {
    pub fn queue_count(&self) -> usize {
        if self.offered & feat::CTRL_VQ != 0 {
            3
        } else {
            2
        }
    }

    /// The size this queue will have, as far as the driver's setup decides it.
    fn planned_size(&self, q: &QueueSpec) -> u16 {
        let ok = q.size.is_power_of_two()
            && q.size <= self.max_size
            && (!self.fixed_queue_size || q.size == self.max_size);
        if self.legacy || !ok {
            self.max_size
        } else {
            q.size
        }
    }

    fn addrs(&self, q: usize, size: u16) -> (u64, u64, u64) {
        let layout = |base: u64| {
            let n = u64::from(size);
            let avail = base.wrapping_add(16 * n);
            (base, avail, avail.wrapping_add(6 + 2 * n + 4095) & !4095)
        };
        match self.queues[q].place {
            Placement::Slot => layout(RING_SLOT[q]),
            Placement::Alt => layout(ALT_SLOT),
            // The legacy interface takes a 32-bit page frame number.
            Placement::At { desc, .. } if self.legacy => {
                layout(((desc / 4096) & 0xffff_ffff) * 4096)
            }
            Placement::At { desc, avail, used } => (desc, avail, used),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Generation (proptest).

fn edge_addr() -> impl Strategy<Value = u64> {
    prop::sample::select(EDGE_ADDRS.to_vec())
}

fn edge_len() -> impl Strategy<Value = u32> {
    prop::sample::select(EDGE_LENS.to_vec())
}

/// An address a device-readable buffer may have.
fn read_addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => TX_AREA..TX_AREA + TX_LEN,
        1 => 0..RAM_END,
        2 => edge_addr(),
    ]
}

/// An address a device-writable buffer may have: never over rings, tables or tx data.
fn write_addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => RX_AREAS[0].0..RX_AREAS[0].1,
        2 => RX_AREAS[1].0..RX_AREAS[1].1,
        2 => prop::sample::select(EDGE_ADDRS[1..].to_vec()),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Rx,
    Tx,
    Ctrl,
}

fn len_for(role: Role) -> BoxedStrategy<u32> {
    match role {
        Role::Rx => prop_oneof![
            6 => 1530u32..4096,
            3 => 0u32..1530,
            1 => edge_len(),
        ]
        .boxed(),
        Role::Tx => prop_oneof![
            6 => 0u32..200,
            2 => 0u32..2048,
            1 => edge_len(),
        ]
        .boxed(),
        Role::Ctrl => prop_oneof![
            6 => 0u32..4,
            2 => 0u32..64,
            1 => edge_len(),
        ]
        .boxed(),
    }
}

/// One descriptor, before its `next` is resolved against its index.
#[derive(Clone, Copy, Debug)]
struct DescGen {
    addr: u64,
    len: u32,
    /// Draws for NEXT, WRITE and INDIRECT, each set at or above a role's threshold.
    draws: (u8, u8, u8),
    /// `None`: the next entry; otherwise any index.
    next: Option<u16>,
    /// For INDIRECT descriptors: a table in the indirect area (start entry, entries).
    table: Option<(u16, u16)>,
}

impl DescGen {
    fn resolve(self, role: Role, i: usize, n: usize) -> RawDesc {
        let (a, b, c) = self.draws;
        // Thresholds: NEXT often; WRITE for rx nearly always, for control sometimes (the
        // ack), for tx rarely; INDIRECT rarely.
        let mut flags = 0;
        if a >= 55 {
            flags |= F_NEXT;
        }
        let write = match role {
            Role::Rx => b >= 8,
            Role::Tx => b >= 96,
            Role::Ctrl => b >= 65,
        };
        if write {
            flags |= F_WRITE;
        }
        let mut addr = self.addr;
        let mut len = self.len;
        if c >= 95 {
            flags |= F_INDIRECT;
            if let Some((start, entries)) = self.table {
                let start = u64::from(start) % INDIRECT_ENTRIES as u64;
                addr = INDIRECT_AREA + 16 * start;
                len = 16 * u32::from(entries);
            }
        }
        let next = match self.next {
            Some(x) => x,
            None => ((i + 1) % n.max(1)) as u16,
        };
        RawDesc {
            addr,
            len,
            flags,
            next,
        }
    }
}

fn desc_gen(role: Role) -> impl Strategy<Value = DescGen> {
    let addr = match role {
        Role::Rx => write_addr().boxed(),
        Role::Tx => read_addr().boxed(),
        Role::Ctrl => prop_oneof![
            3 => CTRL_AREA..CTRL_AREA + CTRL_LEN,
            2 => write_addr(),
            1 => edge_addr(),
        ]
        .boxed(),
    };
    (
        addr,
        len_for(role),
        (any::<u8>().prop_map(|x| x % 100), 0u8..100, 0u8..100),
        prop_oneof![8 => Just(None), 1 => any::<u16>().prop_map(Some), 1 => (0u16..8).prop_map(Some)],
        prop::option::weighted(0.8, (any::<u16>(), 0u16..80)),
    )
        .prop_map(|(addr, len, draws, next, table)| DescGen {
            addr,
            len,
            draws,
            next,
            table,
        })
}

fn table(role: Role, n: usize) -> impl Strategy<Value = Vec<RawDesc>> {
    prop::collection::vec(desc_gen(role), n).prop_map(move |v| {
        let n = v.len();
        v.into_iter()
            .enumerate()
            .map(|(i, g)| g.resolve(role, i, n))
            .collect()
    })
}

fn placement(q: usize) -> impl Strategy<Value = Placement> {
    let odd = prop_oneof![
        Just(0u64),
        Just(1),
        Just(2),
        Just(8),
        Just(RAM_END - RING_SLOT[q]),
        Just(0x40000 - RING_SLOT[q]),
        Just(u64::MAX - RING_SLOT[q] - 4),
    ];
    let part = |base: u64| {
        prop_oneof![
            4 => Just(base),
            1 => prop::sample::select(vec![
                base + 1,
                base + 2,
                base + 8,
                RAM_END - 8,
                RAM_END,
                0x3fff8,
                0x40000,
                1 << 40,
                u64::MAX - 7,
                RING_SLOT[0],
                RING_SLOT[1] + 0x2000,
                RING_SLOT[2] + 0x1000,
                ALT_SLOT + 0x1ff8,
            ]),
        ]
    };
    let base = RING_SLOT[q];
    prop_oneof![
        36 => Just(Placement::Slot),
        3 => Just(Placement::Alt),
        1 => odd.prop_map(move |off| Placement::At {
            desc: base.wrapping_add(off),
            avail: base.wrapping_add(off).wrapping_add(0x1000),
            used: base.wrapping_add(off).wrapping_add(0x2000),
        }),
        1 => (part(base), part(base + 0x1000), part(base + 0x2000))
            .prop_map(|(desc, avail, used)| Placement::At { desc, avail, used }),
    ]
}

fn queue_spec(q: usize, role: Role, max: u16) -> impl Strategy<Value = QueueSpec> {
    let n = usize::from(max);
    let size = prop_oneof![
        12 => Just(max),
        3 => (0u32..=8).prop_map(|s| 1u16 << s),
        1 => any::<u16>(),
    ];
    let head = prop_oneof![
        10 => 0..max,
        1 => any::<u16>(),
    ];
    let idx = prop_oneof![
        30 => 0..=max,
        1 => Just(max.wrapping_add(1)),
        1 => any::<u16>(),
        1 => Just(u16::MAX),
    ];
    (
        size,
        prop::bool::weighted(0.99),
        placement(q),
        table(role, n),
        prop::collection::vec(head, n),
        idx,
        prop_oneof![3 => Just(0u16), 1 => any::<u16>()],
        any::<u16>(),
    )
        .prop_map(
            |(size, enable, place, descs, avail, avail_idx, avail_flags, used_event)| QueueSpec {
                size,
                enable,
                place,
                descs,
                avail,
                avail_idx,
                avail_flags,
                used_event,
            },
        )
}

fn reg_op() -> impl Strategy<Value = RegOp> {
    let target = prop_oneof![
        6 => Just(Target::Modern),
        1 => Just(Target::Legacy),
        1 => Just(Target::Msix),
        1 => Just(Target::Config),
    ];
    let offset = prop_oneof![
        6 => 0u64..0x40,
        2 => 0x2000u64..0x2020,
        2 => 0x3000u64..0x3020,
        1 => any::<u64>(),
    ];
    (
        target,
        offset,
        1u8..=8,
        prop_oneof![Just(0u64), Just(1), Just(u64::MAX), any::<u64>()],
        prop::bool::weighted(0.7),
    )
        .prop_map(|(target, offset, len, value, write)| RegOp {
            target,
            offset,
            len,
            value,
            write,
        })
}

/// Every scenario the property tests and the fuzzer start from.
pub fn scenario() -> impl Strategy<Value = Scenario> {
    let max = prop_oneof![
        2 => Just(1u16),
        2 => Just(2u16),
        4 => Just(4u16),
        6 => Just(8u16),
        3 => Just(16u16),
        2 => Just(64u16),
        1 => Just(256u16),
    ];
    max.prop_flat_map(|max| {
        let devices = (
            any::<bool>(),
            prop::bool::weighted(0.3),
            prop::bool::weighted(0.1),
            // Features withheld by the device, and dropped or added by the driver.
            prop::bool::weighted(0.15).prop_flat_map(|some| {
                if some {
                    any::<u16>().boxed()
                } else {
                    Just(0u16).boxed()
                }
            }),
            any::<u16>(),
            prop_oneof![49 => Just(0u64), 1 => any::<u64>()],
        );
        let queues = (
            queue_spec(0, Role::Rx, max),
            queue_spec(1, Role::Tx, max),
            queue_spec(2, Role::Ctrl, max),
        );
        let input = prop::collection::vec(
            (
                prop_oneof![8 => 14u16..1519, 1 => 0u16..14, 1 => 1519u16..9100],
                any::<u8>(),
            ),
            0..6,
        );
        let ctrl_bytes = prop::collection::vec(
            prop_oneof![6 => 0u8..4, 1 => any::<u8>(), 1 => Just(0xff)],
            64,
        );
        let indirect = table(Role::Tx, 64).prop_flat_map(|tx| {
            table(Role::Rx, 64).prop_map(move |rx| {
                // Tables of both kinds: tx entries first, rx entries after.
                let mut all = tx.clone();
                all.extend(rx);
                all
            })
        });
        let ops = (
            prop::collection::vec(reg_op(), 0..3),
            prop::collection::vec(reg_op(), 0..3),
            prop_oneof![
                26 => Just(StatusPlan::Normal),
                1 => Just(StatusPlan::SkipFeaturesOk),
                3 => Just(StatusPlan::ResetMidTransfer),
            ],
        );
        (devices, queues, input, ctrl_bytes, indirect, ops).prop_map(
            move |(
                (transitional, legacy, fixed, withheld, keep, extra),
                (rx, tx, ctrl),
                input,
                ctrl_bytes,
                indirect,
                (setup_ops, running_ops, plan),
            )| {
                let mut offered = feat::ALL.iter().sum::<u64>();
                let mut wanted = offered;
                for (i, bit) in feat::ALL.iter().enumerate() {
                    // The device offers VERSION_1 whatever else it withholds.
                    if withheld & (1 << i) != 0 && *bit != feat::VERSION_1 {
                        offered &= !bit;
                    }
                    // And, mostly, nothing that needs a control queue it does not have.
                    if offered & feat::CTRL_VQ == 0 && withheld & 0xf000 != 0xf000 {
                        offered &= !feat::NEEDS_CTRL_VQ;
                    }
                    // Now and then the driver leaves some features out.
                    if keep & (1 << i) == 0 && keep & 0xe000 == 0xe000 {
                        wanted &= !bit;
                    }
                }
                // It leaves the control-queue features out with the queue, mostly.
                if wanted & feat::CTRL_VQ == 0 && keep & 0x1f != 0x1f {
                    wanted &= !feat::NEEDS_CTRL_VQ;
                }
                wanted = (wanted & offered) | extra;
                // And VERSION_1 rarely (a modern device then refuses FEATURES_OK).
                if keep & 0xf80 == 0xf80 {
                    wanted &= !feat::VERSION_1;
                } else if !legacy {
                    wanted |= feat::VERSION_1 & offered;
                }
                Scenario {
                    transitional: transitional || legacy,
                    legacy,
                    fixed_queue_size: fixed,
                    max_size: max,
                    offered,
                    wanted,
                    queues: vec![rx, tx, ctrl],
                    indirect,
                    ctrl_bytes,
                    input,
                    setup_ops,
                    running_ops,
                    plan,
                }
            },
        )
    })
}

// ---------------------------------------------------------------------------------------
// Mutation (the fuzzer).

/// xorshift64*: small, seedable, good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn mutate_desc(d: &mut RawDesc, rng: &mut Rng, size: u16) {
    match rng.below(8) {
        0 => d.addr = rng.pick(&EDGE_ADDRS),
        1 => d.addr = d.addr.wrapping_add(rng.below(64)).wrapping_sub(32),
        2 => d.len = rng.pick(&EDGE_LENS),
        3 => d.len ^= 1 << rng.below(32),
        4 => d.flags ^= 1 << rng.below(3),
        5 => d.next = rng.below(u64::from(size) + 2) as u16,
        6 => d.next = rng.next() as u16,
        _ => {
            d.flags = F_INDIRECT | (rng.below(2) as u16);
            d.addr = INDIRECT_AREA + 16 * rng.below(INDIRECT_ENTRIES as u64);
            d.len = 16 * rng.below(80) as u32 + if rng.chance(10) { 8 } else { 0 };
        }
    }
}

impl Scenario {
    /// Applies one random change: a descriptor field, an avail entry or index, a ring
    /// placement, a queue size, a frame, a register access, the status sequence, a feature.
    pub fn mutate(&mut self, rng: &mut Rng) {
        let q = rng.below(3) as usize;
        let max = self.max_size;
        // Mostly the descriptors and what they point at; now and then the setup, which more
        // often than not makes the device refuse it (DEVICE_NEEDS_RESET).
        match rng.below(32) {
            0..=13 => {
                let n = self.queues[q].descs.len() as u64;
                if n > 0 {
                    let i = rng.below(n) as usize;
                    mutate_desc(&mut self.queues[q].descs[i], rng, max);
                }
            }
            14..=16 => {
                let i = rng.below(self.indirect.len() as u64) as usize;
                if let Some(d) = self.indirect.get_mut(i) {
                    mutate_desc(d, rng, 64);
                }
            }
            17..=19 => {
                let qs = &mut self.queues[q];
                let n = qs.avail.len() as u64;
                if n > 0 {
                    let i = rng.below(n) as usize;
                    qs.avail[i] = if rng.chance(50) {
                        rng.below(u64::from(max)) as u16
                    } else {
                        rng.next() as u16
                    };
                }
            }
            20 => {
                let qs = &mut self.queues[q];
                qs.avail_idx = match rng.below(4) {
                    0 => max.wrapping_add(1 + rng.below(4) as u16),
                    1 => u16::MAX - rng.below(3) as u16,
                    2 => rng.next() as u16,
                    _ => rng.below(u64::from(max) + 1) as u16,
                };
            }
            21 => {
                let base = RING_SLOT[q];
                self.queues[q].place = match rng.below(4) {
                    0 => Placement::Alt,
                    1 => Placement::Slot,
                    _ => Placement::At {
                        desc: base + if rng.chance(50) { 0 } else { rng.below(24) },
                        avail: rng.pick(&[base + 0x1000, base + 0x1001, RAM_END - 4, 1 << 33]),
                        used: rng.pick(&[base + 0x2000, base + 0x2002, 0x3fffc, RING_SLOT[0]]),
                    },
                }
            }
            22 => self.queues[q].size = rng.pick(&[0, 1, 2, 3, 8, 64, 256, 512, max]),
            23..=25 => {
                if self.input.is_empty() || rng.chance(30) {
                    self.input.push((rng.below(1600) as u16, rng.next() as u8));
                } else {
                    let i = rng.below(self.input.len() as u64) as usize;
                    self.input[i].0 = rng.pick(&[0, 1, 13, 14, 60, 1514, 1518, 1519, 9000]);
                }
            }
            26 | 27 => {
                let op = RegOp {
                    target: rng.pick(&[
                        Target::Modern,
                        Target::Legacy,
                        Target::Msix,
                        Target::Config,
                    ]),
                    offset: if rng.chance(70) {
                        rng.below(0x40)
                    } else {
                        rng.pick(&[0x1000, 0x2000, 0x2006, 0x3000, 0x3002, 0x3ffc, 0x800, 0xffc])
                    },
                    len: rng.pick(&[1, 2, 3, 4, 5, 8]),
                    value: {
                        let r = rng.next();
                        rng.pick(&[0, 1, 0xffff, u64::MAX, r])
                    },
                    write: rng.chance(70),
                };
                if rng.chance(50) {
                    self.setup_ops.push(op);
                } else {
                    self.running_ops.push(op);
                }
            }
            28 => {
                self.plan = rng.pick(&[
                    StatusPlan::Normal,
                    StatusPlan::SkipFeaturesOk,
                    StatusPlan::ResetMidTransfer,
                ])
            }
            29 => {
                if rng.chance(20) {
                    self.wanted ^= 1u64 << rng.below(64);
                } else {
                    self.wanted ^= rng.pick(&feat::ALL) & !feat::VERSION_1;
                }
            }
            30 => {
                let i = rng.below(self.ctrl_bytes.len() as u64) as usize;
                if let Some(b) = self.ctrl_bytes.get_mut(i) {
                    let r = rng.next() as u8;
                    *b = rng.pick(&[0, 1, 2, 3, 4, 0xff, r]);
                }
            }
            _ => {
                if self.transitional {
                    self.legacy = !self.legacy;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A hang watchdog for the whole process.

/// Aborts the process, naming what was running, when a run exceeds its time limit: a hung
/// reset would otherwise hang the test or the fuzzer forever.
pub struct Watchdog {
    armed: Mutex<Option<(Instant, String)>>,
}

pub fn watchdog() -> &'static Watchdog {
    static W: OnceLock<&'static Watchdog> = OnceLock::new();
    W.get_or_init(|| {
        let w: &'static Watchdog = Box::leak(Box::new(Watchdog {
            armed: Mutex::new(None),
        }));
        std::thread::Builder::new()
            .name("hostile-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(100));
                let armed = w.armed.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((deadline, what)) = armed.as_ref() {
                    if Instant::now() > *deadline {
                        eprintln!("hostile watchdog: a run did not finish in time (hang): {what}");
                        std::process::abort();
                    }
                }
            })
            .expect("watchdog thread");
        w
    })
}

impl Watchdog {
    pub fn arm(&self, limit: Duration, what: String) {
        *self.armed.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now() + limit, what));
    }
    pub fn disarm(&self) {
        *self.armed.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

// ---------------------------------------------------------------------------------------
// The reference model: virtio-queue's chain walk and the datapath's decisions.

/// The descriptors a chain walk yields, and whether the last one still said NEXT.
struct Walk {
    descs: Vec<RawDesc>,
    cut: bool,
}

fn read_desc(mem: &Memory, addr: u64) -> Option<RawDesc> {
    let mut d = [0u8; 16];
    mem.read_slice(&mut d, GuestAddress(addr)).ok()?;
    Some(RawDesc::parse(d))
}

/// virtio-queue's `DescriptorChain` iteration: at most `size` descriptors (an indirect
/// table's length inside one), an indirect descriptor switches tables once, the byte count
/// must fit a u32, an index past the table ends the walk.
fn walk(mem: &Memory, desc_table: u64, size: u16, head: u16) -> Walk {
    let mut table = desc_table;
    let mut qsize = size;
    let mut next = head;
    let mut ttl = size;
    let mut indirect = false;
    let mut yielded: u32 = 0;
    let mut out = Vec::new();
    let mut cut = false;
    loop {
        if ttl == 0 || next >= qsize {
            break;
        }
        let Some(at) = table.checked_add(u64::from(next) * 16) else {
            break;
        };
        let Some(d) = read_desc(mem, at) else {
            break;
        };
        if d.flags & F_INDIRECT != 0 {
            if indirect || d.len & 15 != 0 || d.len / 16 > u32::from(u16::MAX) {
                break;
            }
            table = d.addr;
            qsize = (d.len / 16) as u16;
            next = 0;
            ttl = qsize;
            indirect = true;
            continue;
        }
        let Some(y) = yielded.checked_add(d.len) else {
            break;
        };
        yielded = y;
        out.push(d);
        cut = d.flags & F_NEXT != 0;
        if cut {
            next = d.next;
            ttl -= 1;
        } else {
            ttl = 0;
        }
    }
    Walk { descs: out, cut }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum TxOutcome {
    Sent(Vec<u8>),
    Dropped,
    Malformed,
}

/// What the datapath's `gather` makes of a tx chain.
fn tx_outcome(mem: &Memory, w: &Walk, hdr_len: usize, max_frame: usize) -> TxOutcome {
    let mut buf = Vec::new();
    for d in &w.descs {
        if d.flags & F_WRITE != 0 {
            return TxOutcome::Malformed;
        }
        let len = d.len as usize;
        if buf.len() + len > MAX_TX_CHAIN {
            return TxOutcome::Malformed;
        }
        let start = buf.len();
        buf.resize(start + len, 0);
        if mem
            .read_slice(&mut buf[start..], GuestAddress(d.addr))
            .is_err()
        {
            return TxOutcome::Malformed;
        }
    }
    if w.cut || buf.len() < hdr_len {
        return TxOutcome::Malformed;
    }
    let frame = buf.split_off(hdr_len);
    if frame.len() > max_frame {
        TxOutcome::Dropped
    } else {
        TxOutcome::Sent(frame)
    }
}

// ---------------------------------------------------------------------------------------
// Running a scenario.

/// What one run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Broken properties; empty when the device behaved.
    pub violations: Vec<String>,
    /// The device finished the work it was given before the reset (else it was reset mid-way
    /// or stalled; the properties hold either way).
    pub settled: bool,
    pub needs_reset: bool,
    pub reset_time: Duration,
    /// Chains the device returned, all queues.
    pub chains: u64,
    /// Whether the write and content checks could run (rings and buffers not overlapping).
    pub checked_writes: bool,
    /// Whether the setup was one the device activates on.
    pub activates: bool,
    /// Whether an avail index ran more than a ring ahead.
    pub jumped: bool,
}

/// A queue as the device ended up configured.
#[derive(Clone, Copy, Debug, Default)]
struct Actual {
    size: u16,
    enabled: bool,
    desc: u64,
    avail: u64,
    used: u64,
}

impl Actual {
    fn valid(&self) -> bool {
        let n = u64::from(self.size);
        self.size.is_power_of_two()
            && self.desc % 16 == 0
            && self.avail % 2 == 0
            && self.used % 4 == 0
            && in_ram(self.desc, 16 * n)
            && in_ram(self.avail, 6 + 2 * n)
            && in_ram(self.used, 6 + 8 * n)
    }
}

struct Run<'a> {
    rig: Rig,
    s: &'a Scenario,
    report: Report,
    /// A legacy register was written (the device now takes the driver for a legacy one).
    legacy_touched: bool,
}

impl Run<'_> {
    fn w(&mut self, off: u64, v: u64, len: usize) {
        self.rig.w(off, v, len);
    }

    fn lw(&mut self, off: u64, v: u64, len: usize) {
        self.rig
            .dev
            .bar_write(LEGACY_BAR, off, &v.to_le_bytes()[..len]);
    }

    fn op(&mut self, op: RegOp) {
        let len = usize::from(op.len.clamp(1, 8));
        let bytes = op.value.to_le_bytes();
        let mut buf = [0u8; 8];
        let dev = &mut self.rig.dev;
        match op.target {
            Target::Modern => {
                let off = op.offset % 0x4000;
                // The status register is the one write that is not an odd access: the
                // scenario's plan owns the status sequence.
                if op.write && off == 0x14 && len == 1 {
                    return;
                }
                if op.write {
                    dev.bar_write(MODERN_BAR, off, &bytes[..len]);
                } else {
                    dev.bar_read(MODERN_BAR, off, &mut buf[..len]);
                }
            }
            Target::Legacy => {
                // Port I/O is at most 4 bytes wide; mostly the registers, sometimes the
                // device configuration after them.
                let (off, len) = (op.offset % 0x20, len.min(4));
                if !self.s.transitional || (op.write && off == 0x12 && len == 1) {
                    return;
                }
                if op.write {
                    if legacy_register(off, len, msix_enabled(dev)) {
                        self.legacy_touched = true;
                    }
                    dev.bar_write(LEGACY_BAR, off, &bytes[..len]);
                } else {
                    dev.bar_read(LEGACY_BAR, off, &mut buf[..len]);
                }
            }
            Target::Msix => {
                let off = op.offset % 0x1000;
                if op.write {
                    dev.bar_write(MSIX_BAR, off, &bytes[..len]);
                } else {
                    dev.bar_read(MSIX_BAR, off, &mut buf[..len]);
                }
            }
            Target::Config => {
                let off = (op.offset % 256) as u16;
                if op.write {
                    dev.config_write(off, &bytes[..len]);
                } else {
                    let _ = dev.config_read(off);
                }
            }
        }
    }

    fn read_back(&mut self) -> Vec<Actual> {
        (0..self.s.queue_count())
            .map(|q| {
                self.w(0x16, q as u64, 2);
                let r64 = |rig: &mut Rig, off: u64| rig.r(off, 4) | rig.r(off + 4, 4) << 32;
                Actual {
                    size: self.rig.r(0x18, 2) as u16,
                    enabled: self.rig.r(0x1c, 2) == 1,
                    desc: r64(&mut self.rig, 0x20),
                    avail: r64(&mut self.rig, 0x28),
                    used: r64(&mut self.rig, 0x30),
                }
            })
            .collect()
    }

    fn used_idx(&self, a: &Actual) -> u16 {
        if !a.valid() {
            return 0;
        }
        self.rig
            .mem
            .read_obj::<u16>(GuestAddress(a.used + 2))
            .unwrap_or(0)
    }

    fn avail_idx(pre: &Memory, a: &Actual) -> u16 {
        pre.read_obj::<u16>(GuestAddress(a.avail.wrapping_add(2)))
            .unwrap_or(0)
    }

    fn violation(&mut self, what: String) {
        self.report.violations.push(what);
    }
}

/// Writes the scenario's structures into RAM.
fn lay_out(s: &Scenario, ram: &GuardedRam) {
    let mem = &ram.mem;
    let put = |addr: u64, bytes: &[u8]| {
        // Structures placed outside RAM are simply not there.
        let _ = mem.write_slice(bytes, GuestAddress(addr));
    };
    for (k, d) in s.indirect.iter().take(INDIRECT_ENTRIES).enumerate() {
        put(INDIRECT_AREA + 16 * k as u64, &d.bytes());
    }
    put(CTRL_AREA, &s.ctrl_bytes);
    for (q, spec) in s.queues.iter().enumerate().take(s.queue_count()) {
        let size = s.planned_size(spec);
        let (desc, avail, used) = s.addrs(q, size);
        for (i, d) in spec.descs.iter().take(usize::from(size)).enumerate() {
            put(desc.wrapping_add(16 * i as u64), &d.bytes());
        }
        let n = usize::from(size);
        let mut ring = vec![0u8; 6 + 2 * n];
        ring[0..2].copy_from_slice(&spec.avail_flags.to_le_bytes());
        ring[2..4].copy_from_slice(&spec.avail_idx.to_le_bytes());
        for (i, h) in spec.avail.iter().take(n).enumerate() {
            ring[4 + 2 * i..6 + 2 * i].copy_from_slice(&h.to_le_bytes());
        }
        ring[4 + 2 * n..].copy_from_slice(&spec.used_event.to_le_bytes());
        put(avail, &ring);
        put(used, &vec![0u8; 6 + 8 * n]);
    }
}

/// Runs `s` on a fresh device over `ram` and checks every property. `ram` is reused across
/// runs; it must not be shared by two runs at once.
pub fn run(s: &Scenario, ram: &mut GuardedRam) -> Report {
    ram.fill();
    lay_out(s, ram);
    let input: Vec<Vec<u8>> = s
        .input
        .iter()
        .enumerate()
        .map(|(i, &(len, kind))| frame(len, kind, i))
        .collect();
    let cfg = NetConfig {
        queue_size: s.max_size,
        features: s.offered,
        ..NetConfig::default()
    };
    let max_frame = cfg.max_frame;
    let rig = Rig::on(
        ram.mem.clone(),
        Box::new(PcapSource::new(frames(input))),
        cfg,
        Options {
            transitional: s.transitional,
            fixed_queue_size: s.fixed_queue_size,
        },
        Arc::new(NoMsi),
    );
    let mut r = Run {
        rig,
        s,
        report: Report::default(),
        legacy_touched: false,
    };
    let nq = s.queue_count();

    // Negotiation and queue setup.
    let legacy = s.legacy && s.transitional;
    if legacy {
        r.lw(0x12, 0, 1);
        r.lw(0x12, 1, 1);
        r.lw(0x12, 3, 1);
        r.lw(0x04, s.wanted & 0xffff_ffff, 4);
        for q in 0..nq {
            let (desc, _, _) = s.addrs(q, s.max_size);
            r.lw(0x0e, q as u64, 2);
            if s.queues[q].enable {
                r.lw(0x08, (desc / 4096) & 0xffff_ffff, 4);
            }
        }
    } else {
        r.w(0x14, 0, 1);
        r.w(0x14, 1, 1);
        r.w(0x14, 3, 1);
        for sel in 0..2u64 {
            r.w(0x08, sel, 4);
            r.w(0x0c, (s.wanted >> (32 * sel)) & 0xffff_ffff, 4);
        }
        if s.plan != StatusPlan::SkipFeaturesOk {
            r.w(0x14, 0xb, 1);
        }
        for q in 0..nq {
            let spec = &s.queues[q];
            let size = s.planned_size(spec);
            let (desc, avail, used) = s.addrs(q, size);
            r.w(0x16, q as u64, 2);
            r.w(0x18, u64::from(spec.size), 2);
            for (off, v) in [(0x20, desc), (0x28, avail), (0x30, used)] {
                r.w(off, v & 0xffff_ffff, 4);
                r.w(off + 4, v >> 32, 4);
            }
            if spec.enable {
                r.w(0x1c, 1, 2);
            }
        }
    }
    let features_ok = legacy || r.rig.dev.status() & status::FEATURES_OK != 0;
    for op in &s.setup_ops {
        r.op(*op);
    }
    let actual = r.read_back();
    ram.snapshot();
    let negotiated = r.rig.dev.driver_features();
    // A legacy register written after a modern setup makes the device judge the driver by
    // the legacy rules at DRIVER_OK.
    let legacy_driver = legacy || r.legacy_touched;

    // DRIVER_OK, kicks, and what the driver does while the device runs.
    if legacy {
        r.lw(0x12, 7, 1);
    } else {
        let s_bits = if features_ok { 0xf } else { 0x7 };
        r.w(0x14, s_bits, 1);
    }
    for q in 0..nq {
        if legacy {
            r.lw(0x10, q as u64, 2);
        } else {
            r.w(NOTIFY_OFFSET + 4 * q as u64, q as u64, 2);
        }
    }
    for op in &s.running_ops {
        r.op(*op);
    }
    if s.plan != StatusPlan::ResetMidTransfer {
        r.report.settled = settle(&r, &actual, &ram.pre);
    }
    r.report.needs_reset = r.rig.dev.status() & status::DEVICE_NEEDS_RESET != 0;

    // Reset: the datapath must stop, promptly.
    let t = Instant::now();
    r.w(0x14, 0, 1);
    r.report.reset_time = t.elapsed();
    if r.report.reset_time > RESET_LIMIT {
        let t = r.report.reset_time;
        r.violation(format!(
            "the reset took {t:?}: the datapath did not stop when asked"
        ));
    }
    if r.rig.dev.status() != 0 {
        let st = r.rig.dev.status();
        r.violation(format!("status reads {st:#x} after a reset"));
    }
    if let Some(why) = r.rig.stats.failure() {
        r.violation(format!("the datapath failed or panicked: {why}"));
    }
    if let Err(e) = ram.guards_intact() {
        r.violation(e);
    }
    let setup = Setup {
        negotiated,
        features_ok,
        legacy: legacy_driver,
        max_frame,
    };
    check(&mut r, ram, &actual, &setup);
    r.report
}

/// Waits until the device has done what it can with the scenario: bounded, for coverage.
fn settle(r: &Run, actual: &[Actual], pre: &Memory) -> bool {
    let start = Instant::now();
    let mut last = (u64::MAX, Instant::now());
    loop {
        if r.rig.dev.status() & status::DEVICE_NEEDS_RESET != 0 {
            return true;
        }
        let stats = r.rig.stats.snapshot();
        let mut done = true;
        let mut progress = stats.source_frames + stats.tx_malformed + stats.rx_malformed;
        for (q, a) in actual.iter().enumerate() {
            if !a.enabled || !a.valid() {
                continue;
            }
            let used = r.used_idx(a);
            progress += u64::from(used);
            let avail = Run::avail_idx(pre, a);
            // An avail index more than a ring ahead must end in DEVICE_NEEDS_RESET (seen
            // above); the rx queue is only looked at while a frame waits.
            let queue_done = match q {
                0 => used == avail || stats.input_drained,
                _ => used == avail && avail <= a.size,
            };
            done &= queue_done;
        }
        if done {
            return true;
        }
        if progress != last.0 {
            last = (progress, Instant::now());
        } else if last.1.elapsed() > STALL && start.elapsed() > STALL {
            return false;
        }
        if start.elapsed() > SETTLE_LIMIT {
            return false;
        }
        std::thread::yield_now();
    }
}

/// Every range `[addr, addr + len)` the device may write while serving queue `q`, from the
/// descriptor table (and the indirect tables it names) as they were before the run.
fn writable_ranges(
    pre: &Memory,
    a: &Actual,
    out: &mut Vec<(u64, u64)>,
    reads: &mut Vec<(u64, u64)>,
) {
    let n = u64::from(a.size);
    reads.push((a.desc, 16 * n));
    reads.push((a.avail, 6 + 2 * n));
    for i in 0..n {
        let Some(d) = read_desc(pre, a.desc.wrapping_add(16 * i)) else {
            continue;
        };
        if d.flags & F_INDIRECT != 0 {
            if d.len & 15 != 0 {
                continue;
            }
            let entries = u64::from(d.len / 16).min(u64::from(u16::MAX));
            reads.push((d.addr, 16 * entries));
            for k in 0..entries {
                if let Some(e) = read_desc(pre, d.addr.wrapping_add(16 * k)) {
                    if e.flags & F_WRITE != 0 {
                        out.push((e.addr, u64::from(e.len)));
                    }
                }
            }
        } else if d.flags & F_WRITE != 0 {
            out.push((d.addr, u64::from(d.len)));
        }
    }
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    let (a0, a1) = (a.0, a.0.saturating_add(a.1));
    let (b0, b1) = (b.0, b.0.saturating_add(b.1));
    a.1 > 0 && b.1 > 0 && a0 < b1 && b0 < a1
}

fn used_elem(mem: &Memory, a: &Actual, k: u16) -> (u32, u32) {
    let at = a.used + 4 + 8 * u64::from(k % a.size);
    let id = mem.read_obj::<u32>(GuestAddress(at)).unwrap_or(u32::MAX);
    let len = mem
        .read_obj::<u32>(GuestAddress(at + 4))
        .unwrap_or(u32::MAX);
    (id, len)
}

/// What the driver's setup came to, for the checks.
struct Setup {
    /// Features the device holds as accepted.
    negotiated: u64,
    /// FEATURES_OK stuck (modern).
    features_ok: bool,
    /// The device judges the driver by the legacy rules.
    legacy: bool,
    max_frame: usize,
}

fn check(r: &mut Run, ram: &GuardedRam, actual: &[Actual], setup: &Setup) {
    let Setup {
        negotiated,
        features_ok,
        legacy,
        max_frame,
    } = *setup;
    let s = r.s;
    let pre = &ram.pre;
    let live = &*ram.mem;
    let stats = r.rig.stats.snapshot();
    let hdr_len = if negotiated & (feat::VERSION_1 | feat::MRG_RXBUF) != 0 {
        12
    } else {
        10
    };
    let nq = actual.len();

    // Would the device activate at all?
    let acceptable = {
        let f = negotiated;
        let consistent = f & feat::CTRL_VQ != 0 || f & feat::NEEDS_CTRL_VQ == 0;
        let offered_ok = if legacy {
            f & !(s.offered & 0xffff_ffff) == 0
        } else {
            features_ok
        };
        consistent && offered_ok
    };
    let ctrl_needed = negotiated & feat::CTRL_VQ != 0;
    let activates = acceptable
        && actual.iter().filter(|a| a.enabled).all(Actual::valid)
        && actual[0].enabled
        && actual[1].enabled
        && (!ctrl_needed || (nq == 3 && actual[2].enabled));
    r.report.activates = activates;
    let clean_setup =
        s.setup_ops.is_empty() && s.running_ops.is_empty() && s.plan == StatusPlan::Normal;

    if !activates {
        if !r.report.needs_reset {
            r.violation(format!(
                "the setup was invalid (features {negotiated:#x} acceptable {acceptable}, queues {actual:x?}) but DEVICE_NEEDS_RESET is not set"
            ));
        }
        let moved = stats.tx_frames
            + stats.tx_malformed
            + stats.ctrl_ok
            + stats.ctrl_err
            + stats.source_frames;
        if moved != 0 {
            r.violation(format!(
                "a device that did not activate served queues: {stats:?}"
            ));
        }
    }

    // Chains returned, and what the device may have written.
    let mut allowed: Vec<(u64, u64)> = Vec::new();
    let mut reads: Vec<(u64, u64)> = Vec::new();
    let mut used_idx = [0u16; 3];
    let mut used_rings = Vec::new();
    // Which queue's used ring each allowed range is (None: a buffer).
    let mut owner: Vec<Option<usize>> = Vec::new();
    // Which queue each allowed range comes from.
    let mut source: Vec<usize> = Vec::new();
    for (q, a) in actual.iter().enumerate() {
        if !a.enabled || !a.valid() {
            continue;
        }
        used_idx[q] = r.used_idx(a);
        let ring = (a.used, 6 + 8 * u64::from(a.size));
        allowed.push(ring);
        owner.push(Some(q));
        source.push(q);
        used_rings.push((ring, q));
        let mut w = Vec::new();
        writable_ranges(pre, a, &mut w, &mut reads);
        // The device never writes for tx; its WRITE descriptors are not allowed targets.
        if q != 1 {
            owner.extend(w.iter().map(|_| None));
            source.extend(w.iter().map(|_| q));
            allowed.extend(w);
        }
    }
    r.report.chains = used_idx.iter().map(|&u| u64::from(u)).sum();
    // Sound only if nothing the device writes is something it reads as a ring or table, or
    // another queue's used ring (which this check reads).
    let sound = !allowed.iter().zip(&owner).any(|(&w, &o)| {
        reads.iter().any(|&rd| overlaps(w, rd))
            || used_rings
                .iter()
                .any(|&(u, q)| o != Some(q) && overlaps(w, u))
    });
    r.report.checked_writes = sound;

    if sound {
        let mut bad = Vec::new();
        ram.changed(|addr| {
            if !allowed.iter().any(|&(a, l)| addr >= a && addr - a < l) {
                bad.push(addr);
            }
        });
        if let Some(&first) = bad.first() {
            r.violation(format!(
                "the device wrote {} bytes outside used rings and device-writable buffers, first at {first:#x}",
                bad.len()
            ));
        }
    }

    if !activates {
        return;
    }
    // Everything below reads used rings: meaningful only when no queue's writes land in
    // another's rings.
    let jump = |q: usize| -> bool {
        let a = &actual[q];
        a.enabled && Run::avail_idx(pre, a) > a.size
    };
    if sound && jump(1) && r.report.settled && !r.report.needs_reset {
        r.violation(
            "the tx avail index ran more than a ring ahead but DEVICE_NEEDS_RESET is not set"
                .into(),
        );
    }
    let any_jump = (0..nq).any(jump);
    r.report.jumped = any_jump;
    // (Rings on top of each other can turn into anything: only for separate ones.)
    if sound && clean_setup && !any_jump && r.report.needs_reset {
        r.violation("a well-formed setup ended with DEVICE_NEEDS_RESET".into());
    }

    // tx: each chain a frame sent, dropped or malformed; in avail order; as the reference
    // walk says.
    let tx = actual[1];
    if sound && tx.enabled && tx.valid() && !jump(1) {
        let u = used_idx[1];
        let counted = stats.tx_frames + stats.tx_dropped + stats.tx_malformed;
        if counted != u64::from(u) {
            r.violation(format!(
                "tx: {u} chains returned but {counted} counted ({} sent, {} dropped, {} malformed)",
                stats.tx_frames, stats.tx_dropped, stats.tx_malformed
            ));
        }
        let mut expect = Vec::new();
        let (mut sent, mut dropped, mut malformed) = (0u64, 0u64, 0u64);
        let mut data_sound = sound;
        for k in 0..u.min(tx.size) {
            let head = pre
                .read_obj::<u16>(GuestAddress(tx.avail + 4 + 2 * u64::from(k % tx.size)))
                .unwrap_or(u16::MAX);
            let (id, len) = used_elem(live, &tx, k);
            if id != u32::from(head) || len != 0 {
                r.violation(format!(
                    "tx used entry {k} is ({id}, {len}), the driver offered head {head} (length must be 0)"
                ));
            }
            let w = walk(pre, tx.desc, tx.size, head);
            for d in &w.descs {
                if allowed
                    .iter()
                    .any(|&a| overlaps(a, (d.addr, u64::from(d.len))))
                {
                    data_sound = false;
                }
            }
            match tx_outcome(pre, &w, hdr_len, max_frame) {
                TxOutcome::Sent(f) => {
                    sent += 1;
                    expect.push(f);
                }
                TxOutcome::Dropped => dropped += 1,
                TxOutcome::Malformed => malformed += 1,
            }
        }
        if sound
            && (sent, dropped, malformed) != (stats.tx_frames, stats.tx_dropped, stats.tx_malformed)
        {
            r.violation(format!(
                "tx: the reference walk gives {sent} sent, {dropped} dropped, {malformed} malformed; the device counted {}, {}, {}",
                stats.tx_frames, stats.tx_dropped, stats.tx_malformed
            ));
        }
        let out = r.rig.out.0.lock().unwrap().clone();
        if out.len() as u64 != stats.tx_frames {
            r.violation(format!(
                "tx: {} frames reached the sink, {} counted",
                out.len(),
                stats.tx_frames
            ));
        }
        if data_sound && out != expect {
            let i = out.iter().zip(&expect).position(|(a, b)| a != b);
            r.violation(format!(
                "tx: the frames sent differ from the reference walk's (first at {i:?}; {} vs {})",
                out.len(),
                expect.len()
            ));
        }
    }

    // Control: each chain answered once, OK or ERR, in order; the ack byte says which.
    if nq == 3 {
        let c = actual[2];
        if sound && c.enabled && c.valid() && !jump(2) {
            let u = used_idx[2];
            let answered = stats.ctrl_ok + stats.ctrl_err;
            if answered != u64::from(u) {
                r.violation(format!(
                    "ctrl: {u} chains returned but {answered} answers counted ({} OK, {} ERR)",
                    stats.ctrl_ok, stats.ctrl_err
                ));
            }
            for k in 0..u.min(c.size) {
                let head = pre
                    .read_obj::<u16>(GuestAddress(c.avail + 4 + 2 * u64::from(k % c.size)))
                    .unwrap_or(u16::MAX);
                let (id, len) = used_elem(live, &c, k);
                if id != u32::from(head) || len > 1 {
                    r.violation(format!(
                        "ctrl used entry {k} is ({id}, {len}), the driver offered head {head}"
                    ));
                }
                if len == 1 {
                    let w = walk(pre, c.desc, c.size, head);
                    let ack = w
                        .descs
                        .iter()
                        .find(|d| d.flags & F_WRITE != 0 && d.len >= 1)
                        .map(|d| d.addr);
                    // Only control acks (0 or 1) may have landed on this byte since: not a
                    // frame, not a used ring.
                    let only_acks = ack.is_some_and(|at| {
                        allowed
                            .iter()
                            .zip(&source)
                            .zip(&owner)
                            .all(|((&(a, l), &q), o)| {
                                !(at >= a && at - a < l) || (q == 2 && o.is_none())
                            })
                    });
                    if !only_acks {
                        continue;
                    }
                    match ack.and_then(|a| live.read_obj::<u8>(GuestAddress(a)).ok()) {
                        Some(0 | 1) => {}
                        other => r.violation(format!(
                            "ctrl chain {head} came back answered but its ack byte at {ack:x?} is {other:?}"
                        )),
                    }
                }
            }
        }
    }

    // rx: every frame taken from the source is delivered, filtered or dropped; the bytes
    // written are the headers and frames delivered; entries name offered heads.
    let taken = stats.rx_delivered + stats.rx_filtered + stats.rx_dropped;
    if stats.source_frames != taken {
        r.violation(format!(
            "rx: {} frames taken from the source, {} delivered + {} filtered + {} dropped",
            stats.source_frames, stats.rx_delivered, stats.rx_filtered, stats.rx_dropped
        ));
    }
    let rx = actual[0];
    if sound && rx.enabled && rx.valid() && !jump(0) {
        let u = used_idx[0];
        let offered: Vec<u16> = (0..Run::avail_idx(pre, &rx).min(rx.size))
            .map(|k| {
                pre.read_obj::<u16>(GuestAddress(rx.avail + 4 + 2 * u64::from(k)))
                    .unwrap_or(u16::MAX)
            })
            .collect();
        let mut written = 0u64;
        for k in 0..u.min(rx.size) {
            let (id, len) = used_elem(live, &rx, k);
            if !offered.iter().any(|&h| u32::from(h) == id) {
                r.violation(format!(
                    "rx used entry {k} names head {id}, which the driver did not offer"
                ));
                continue;
            }
            written += u64::from(len);
            if sound {
                let w = walk(pre, rx.desc, rx.size, id as u16);
                let capacity: u64 = w.descs.iter().map(|d| u64::from(d.len)).sum();
                if u64::from(len) > capacity {
                    r.violation(format!(
                        "rx used entry {k}: {len} bytes written into a {capacity}-byte chain"
                    ));
                }
            }
        }
        if u > rx.size {
            r.violation(format!(
                "rx: {u} chains returned from a {}-entry ring",
                rx.size
            ));
        }
        let want = stats.rx_bytes + hdr_len as u64 * stats.rx_delivered;
        if u <= rx.size && written != want {
            r.violation(format!(
                "rx: used lengths add up to {written} bytes, but {} frames of {} bytes with {hdr_len}-byte headers were delivered",
                stats.rx_delivered, stats.rx_bytes
            ));
        }
        if stats.rx_delivered + stats.rx_malformed > u64::from(u) && u <= rx.size {
            r.violation(format!(
                "rx: {} frames delivered and {} chains malformed, but only {u} chains returned",
                stats.rx_delivered, stats.rx_malformed
            ));
        }
    }
}
