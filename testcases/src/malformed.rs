//! The malformed-input corpus's captures (`malformed/pcap/`): every way a pcap file can be
//! wrong that vlab must refuse with a clear error, each written byte for byte by code here,
//! so no file in the corpus is opaque. `cargo run -p testcases --bin gen-inputs` writes
//! them; a test checks the committed files match. What vlab must say of each (and the bad
//! case files beside them) is in `malformed/expected.toml`, which
//! `vmm/tests/malformed_input.rs` runs.

/// Ethernet, microseconds, little-endian.
const MAGIC_US: u32 = 0xa1b2_c3d4;
const ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;

/// A file header with `snaplen` and `linktype`.
fn header(magic: u32, snaplen: u32, linktype: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&magic.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&snaplen.to_le_bytes());
    h.extend_from_slice(&linktype.to_le_bytes());
    h
}

fn ethernet() -> Vec<u8> {
    header(MAGIC_US, 65535, ETHERNET)
}

/// A record header claiming `incl` captured and `orig` original bytes, then `data` bytes of
/// a broadcast frame (which may be fewer than claimed).
fn record(buf: &mut Vec<u8>, ts_frac: u32, incl: u32, orig: u32, data: usize) {
    buf.extend_from_slice(&1u32.to_le_bytes());
    buf.extend_from_slice(&ts_frac.to_le_bytes());
    buf.extend_from_slice(&incl.to_le_bytes());
    buf.extend_from_slice(&orig.to_le_bytes());
    buf.extend((0..data).map(|i| if i < 6 { 0xff } else { i as u8 }));
}

/// A whole, valid record of a `len`-byte frame.
fn frame(buf: &mut Vec<u8>, len: usize) {
    let n = u32::try_from(len).expect("corpus frames are small");
    record(buf, 0, n, n, len);
}

fn with(mut f: Vec<u8>, add: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    add(&mut f);
    f
}

/// A real pcapng file: section header, interface description, one enhanced packet block.
fn pcapng() -> Vec<u8> {
    let mut f = Vec::new();
    let block = |f: &mut Vec<u8>, kind: u32, body: &[u8]| {
        let len = u32::try_from(12 + body.len()).expect("small block");
        f.extend_from_slice(&kind.to_le_bytes());
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(body);
        f.extend_from_slice(&len.to_le_bytes());
    };
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    block(&mut f, 0x0a0d_0d0a, &shb);
    let mut idb = Vec::new();
    idb.extend_from_slice(&1u16.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&65535u32.to_le_bytes());
    block(&mut f, 1, &idb);
    let mut epb = Vec::new();
    for w in [0u32, 0, 1_000_000, 60, 60] {
        epb.extend_from_slice(&w.to_le_bytes());
    }
    epb.extend((0..60).map(|i| if i < 6 { 0xff } else { i as u8 }));
    block(&mut f, 6, &epb);
    f
}

/// Every capture of the corpus: its file name under `malformed/pcap/`, and its bytes.
pub fn pcaps() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty.pcap", Vec::new()),
        ("text.pcap", b"these are notes, not a capture\n".to_vec()),
        ("truncated-file-header.pcap", ethernet()[..12].to_vec()),
        ("wrong-magic.pcap", header(0xdead_beef, 65535, ETHERNET)),
        ("capture.pcapng", pcapng()),
        ("not-ethernet.pcap", header(MAGIC_US, 65535, LINKTYPE_RAW)),
        (
            "truncated-record-header.pcap",
            with(ethernet(), |f| {
                frame(f, 60);
                f.extend_from_slice(&[0; 10]);
            }),
        ),
        (
            "truncated-record-data.pcap",
            with(ethernet(), |f| record(f, 0, 100, 100, 50)),
        ),
        (
            // A record that claims 4 GiB: refused as truncated, never allocated.
            "huge-length.pcap",
            with(ethernet(), |f| record(f, 0, 0xffff_fff0, 0xffff_fff0, 64)),
        ),
        (
            "over-64k.pcap",
            with(header(MAGIC_US, 0, ETHERNET), |f| frame(f, 70_000)),
        ),
        (
            "snapped-frame.pcap",
            with(header(MAGIC_US, 64, ETHERNET), |f| {
                record(f, 0, 64, 100, 64)
            }),
        ),
        (
            "record-beyond-snaplen.pcap",
            with(header(MAGIC_US, 64, ETHERNET), |f| {
                frame(f, 60);
                frame(f, 100);
            }),
        ),
        (
            "orig-shorter-than-captured.pcap",
            with(ethernet(), |f| record(f, 0, 60, 50, 60)),
        ),
        ("zero-length.pcap", with(ethernet(), |f| frame(f, 0))),
        ("runt.pcap", with(ethernet(), |f| frame(f, 10))),
        (
            "bad-timestamp.pcap",
            with(ethernet(), |f| record(f, 1_000_000, 60, 60, 60)),
        ),
        (
            "jumbo-without-mtu.pcap",
            with(ethernet(), |f| {
                frame(f, 60);
                frame(f, 1600);
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_corpus_matches_its_generator() {
        let dir = crate::root().join("malformed/pcap");
        for (name, bytes) in pcaps() {
            let on_disk = std::fs::read(dir.join(name))
                .unwrap_or_else(|e| panic!("{name}: {e} (run gen-inputs)"));
            assert!(on_disk == bytes, "{name} differs from its generator");
        }
    }
}
