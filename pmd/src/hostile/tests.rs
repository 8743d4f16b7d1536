use super::ram::{used_off, used_ring_pages};
use super::raw_ring::{Ring, DESC_F_NEXT};
use super::rng::Rng;
use super::scenario::ABUSES;
use super::PAGE;
use crate::config::{Config, Mode};
use crate::testing::FakeHal;
use crate::virtqueue::split::layout;

#[test]
fn the_command_line_names_the_mode_seed_and_rounds() {
    let c = Config::parse("mode=hostile seed=7 rounds=300").unwrap();
    assert_eq!((c.mode, c.seed, c.rounds), (Mode::Hostile, 7, 300));
    assert!(Config::parse("mode=hostile seed=x").is_err());
}

#[test]
fn the_generator_is_deterministic_and_reaches_every_abuse() {
    let (mut a, mut b) = (Rng::new(3), Rng::new(3));
    let mut seen = [false; ABUSES.len()];
    for _ in 0..1000 {
        let x = a.below(ABUSES.len() as u64);
        assert_eq!(x, b.below(ABUSES.len() as u64));
        seen[x as usize] = true;
    }
    assert!(seen.iter().all(|&s| s));
}

#[test]
fn the_ring_end_follows_from_the_highest_placement_taken() {
    // A 256-entry ring's used ring is on its third page and smaller than a page.
    assert_eq!(used_off(256), 0x2000);
    assert_eq!(layout(0x1000, 256).used, 0x3000);
    assert_eq!(used_ring_pages(256), PAGE);
}

#[test]
fn the_raw_ring_writes_where_the_split_layout_says() {
    let hal = FakeHal::new(1 << 16);
    let mut r = Ring::alloc(&hal, 8).unwrap();
    let a = r.addrs();
    assert_eq!((a.avail - a.desc, a.used - a.desc), (128, 4096));
    // Indexes beyond the ring wrap: descriptor 9 is descriptor 1.
    r.desc(9, 0x1234, 76, DESC_F_NEXT, 0xffff);
    let d = hal.read(a.desc + 16, 16);
    assert_eq!(d[..8], 0x1234u64.to_le_bytes());
    assert_eq!(d[8..], [76, 0, 0, 0, 1, 0, 0xff, 0xff]);
    r.stage(1);
    assert_eq!(hal.read_u16(a.avail + 2), 0, "staged, not published");
    r.offer(0x8000);
    assert_eq!(hal.read_u16(a.avail + 4), 1);
    assert_eq!(
        hal.read_u16(a.avail + 6),
        0x8000,
        "any head, as the abuse wants"
    );
    assert_eq!(hal.read_u16(a.avail + 2), 2);
    r.set_avail_idx(0x9000);
    assert_eq!(hal.read_u16(a.avail + 2), 0x9000);
    assert_eq!(r.take_used(), None);
    hal.write_u32(a.used + 4, 7);
    hal.write_u32(a.used + 8, 60);
    hal.write_u16(a.used + 2, 1);
    assert_eq!(r.take_used(), Some((7, 60)));
    assert_eq!(r.take_used(), None);
    r.clear();
    assert_eq!(hal.read(a.desc, 32), [0; 32]);
    assert_eq!(hal.read_u16(a.avail + 2), 0);
}
