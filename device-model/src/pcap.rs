//! Reading and writing classic pcap files of Ethernet frames.
//!
//! Input is untrusted: every way a file can be wrong gets an error naming the file, the
//! record and the problem, before any frame reaches a guest. Output goes to a temporary file
//! beside the destination and is renamed into place only when complete, so a failed run
//! never leaves a half-written capture behind.

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapParser, PcapWriter, RawPcapPacket};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

/// Smallest frame accepted: an Ethernet header.
pub const MIN_FRAME: usize = 14;
/// Largest frame read from any capture: 64 KiB, the most a virtio-net device (or an IP
/// packet) can carry. Larger records are corrupt or not frames.
pub const MAX_RECORD: usize = 65_535;
/// Input files larger than this are refused rather than read into memory.
pub const MAX_FILE_BYTES: u64 = 1 << 30;
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub ts: Duration,
    pub data: Vec<u8>,
}

/// A pcap file read into memory.
#[derive(Clone, Debug)]
pub struct Capture {
    pub resolution: TsResolution,
    pub frames: Vec<Frame>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {size} bytes is larger than the {max}-byte limit for an input capture")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("{path}: this is a pcapng file; convert it with `editcap -F pcap {path} out.pcap`")]
    Pcapng { path: PathBuf },
    #[error("{path}: not a pcap file ({why})")]
    NotPcap { path: PathBuf, why: String },
    #[error("{path}: link type {link:?} is not Ethernet")]
    LinkType { path: PathBuf, link: DataLink },
    #[error("{path}: record {index} at byte {offset} is truncated (the file ends inside it)")]
    Truncated {
        path: PathBuf,
        index: usize,
        offset: usize,
    },
    #[error("{path}: record {index} at byte {offset}: {why}")]
    BadRecord {
        path: PathBuf,
        index: usize,
        offset: usize,
        why: String,
    },
    #[error(
        "{path}: frame {index} was cut by the capture's snaplen ({captured} of {original} bytes kept); \
         it cannot be replayed"
    )]
    Snapped {
        path: PathBuf,
        index: usize,
        captured: usize,
        original: u32,
    },
    #[error(
        "{path}: frame {index} is {len} bytes, shorter than a {MIN_FRAME}-byte Ethernet header"
    )]
    Runt {
        path: PathBuf,
        index: usize,
        len: usize,
    },
    #[error("{path}: frame {index} is {len} bytes, over the {MAX_RECORD}-byte limit of any frame")]
    Oversized {
        path: PathBuf,
        index: usize,
        len: usize,
    },
    #[error("{path}: frame {index} is {len} bytes; the device takes frames up to {max} bytes")]
    FrameTooLarge {
        path: PathBuf,
        index: usize,
        len: usize,
        max: usize,
    },
    #[error("{path}: writing frame {index}: {source}")]
    Write {
        path: PathBuf,
        index: u64,
        #[source]
        source: PcapError,
    },
}

/// Reads and validates a pcap file whose frames must be at most `max_frame` bytes.
pub fn read(path: &Path, max_frame: usize) -> Result<Capture, Error> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_FILE_BYTES {
        return Err(Error::TooLarge {
            path: path.to_owned(),
            size,
            max: MAX_FILE_BYTES,
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    parse(path, &bytes, max_frame)
}

/// Validates and decodes a pcap image; `path` only names it in errors.
pub fn parse(path: &Path, bytes: &[u8], max_frame: usize) -> Result<Capture, Error> {
    let p = || path.to_owned();
    if bytes.len() >= 4 && bytes[..4] == PCAPNG_MAGIC {
        return Err(Error::Pcapng { path: p() });
    }
    let (mut rest, parser) = PcapParser::new(bytes).map_err(|e| Error::NotPcap {
        path: p(),
        why: match e {
            PcapError::IncompleteBuffer => {
                format!(
                    "{} bytes is shorter than the 24-byte file header",
                    bytes.len()
                )
            }
            other => other.to_string(),
        },
    })?;
    let header = parser.header();
    if header.datalink != DataLink::ETHERNET {
        return Err(Error::LinkType {
            path: p(),
            link: header.datalink,
        });
    }
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let index = frames.len();
        let offset = bytes.len() - rest.len();
        let (next, raw) = match parser.next_raw_packet(rest) {
            Ok(x) => x,
            Err(PcapError::IncompleteBuffer) => {
                return Err(Error::Truncated {
                    path: p(),
                    index,
                    offset,
                })
            }
            Err(e) => {
                return Err(Error::BadRecord {
                    path: p(),
                    index,
                    offset,
                    why: e.to_string(),
                })
            }
        };
        let frame = check_record(path, &header, index, offset, &raw, max_frame)?;
        frames.push(frame);
        rest = next;
    }
    Ok(Capture {
        resolution: header.ts_resolution,
        frames,
    })
}

fn check_record(
    path: &Path,
    header: &PcapHeader,
    index: usize,
    offset: usize,
    raw: &RawPcapPacket<'_>,
    max_frame: usize,
) -> Result<Frame, Error> {
    let p = || path.to_owned();
    let len = raw.data.len();
    // A record larger than the file says any record is: the header or the record is
    // corrupt (a snaplen of 0 is read as "no limit", as libpcap does).
    if header.snaplen != 0 && raw.incl_len > header.snaplen {
        return Err(Error::BadRecord {
            path: p(),
            index,
            offset,
            why: format!(
                "{len} bytes captured, more than the file's snaplen of {}",
                header.snaplen
            ),
        });
    }
    if (len as u64) < u64::from(raw.orig_len) {
        return Err(Error::Snapped {
            path: p(),
            index,
            captured: len,
            original: raw.orig_len,
        });
    }
    if u64::from(raw.orig_len) < len as u64 {
        return Err(Error::BadRecord {
            path: p(),
            index,
            offset,
            why: format!(
                "captured length {len} exceeds original length {}",
                raw.orig_len
            ),
        });
    }
    if len < MIN_FRAME {
        return Err(Error::Runt {
            path: p(),
            index,
            len,
        });
    }
    if len > MAX_RECORD {
        return Err(Error::Oversized {
            path: p(),
            index,
            len,
        });
    }
    if len > max_frame {
        return Err(Error::FrameTooLarge {
            path: p(),
            index,
            len,
            max: max_frame,
        });
    }
    let frac_limit = match header.ts_resolution {
        TsResolution::MicroSecond => 1_000_000,
        TsResolution::NanoSecond => 1_000_000_000,
    };
    if raw.ts_frac >= frac_limit {
        return Err(Error::BadRecord {
            path: p(),
            index,
            offset,
            why: format!("timestamp fraction {} is out of range", raw.ts_frac),
        });
    }
    let nanos = match header.ts_resolution {
        TsResolution::MicroSecond => raw.ts_frac * 1000,
        TsResolution::NanoSecond => raw.ts_frac,
    };
    Ok(Frame {
        ts: Duration::new(u64::from(raw.ts_sec), nanos),
        data: raw.data.to_vec(),
    })
}

/// A pcap file being written. Nothing appears at the destination until [`PcapOut::commit`].
pub struct PcapOut {
    path: PathBuf,
    writer: Option<PcapWriter<BufWriter<tempfile::NamedTempFile>>>,
    frames: u64,
}

impl PcapOut {
    /// Starts a capture that will land at `path`, with timestamps of `resolution`.
    pub fn create(path: &Path, resolution: TsResolution) -> Result<Self, Error> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".vlab-")
            .suffix(".pcap.partial")
            // A capture is an ordinary file once renamed: not the 0600 of a temporary.
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(dir)
            .map_err(io)?;
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: 65535,
            datalink: DataLink::ETHERNET,
            ts_resolution: resolution,
            endianness: Endianness::native(),
        };
        let writer =
            PcapWriter::with_header(BufWriter::new(tmp), header).map_err(|e| Error::Write {
                path: path.to_owned(),
                index: 0,
                source: e,
            })?;
        Ok(Self {
            path: path.to_owned(),
            writer: Some(writer),
            frames: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    pub fn write(&mut self, ts: Duration, data: &[u8]) -> Result<(), Error> {
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        let packet = PcapPacket::new(ts, data.len() as u32, data);
        w.write_packet(&packet).map_err(|e| Error::Write {
            path: self.path.clone(),
            index: self.frames,
            source: e,
        })?;
        self.frames += 1;
        Ok(())
    }

    /// Flushes the file and renames it to its destination.
    pub fn commit(&mut self) -> Result<(), Error> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = w
            .into_writer()
            .into_inner()
            .map_err(|e| io(e.into_error()))?;
        tmp.as_file().sync_data().map_err(io)?;
        tmp.persist(&self.path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(magic: u32, linktype: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&magic.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&linktype.to_le_bytes());
        h
    }

    fn record(buf: &mut Vec<u8>, incl: u32, orig: u32, frac: u32) {
        buf.extend_from_slice(&1u32.to_le_bytes());
        buf.extend_from_slice(&frac.to_le_bytes());
        buf.extend_from_slice(&incl.to_le_bytes());
        buf.extend_from_slice(&orig.to_le_bytes());
        buf.extend(std::iter::repeat_n(0xab, incl as usize));
    }

    fn err(bytes: &[u8]) -> String {
        parse(Path::new("x.pcap"), bytes, 1518)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn good_file_round_trips() {
        let mut f = header(0xa1b2_c3d4, 1);
        record(&mut f, 60, 60, 5);
        record(&mut f, 1514, 1514, 6);
        let cap = parse(Path::new("x.pcap"), &f, 1518).unwrap();
        assert_eq!(cap.frames.len(), 2);
        assert_eq!(cap.frames[1].ts, Duration::new(1, 6000));
        assert_eq!(cap.frames[1].data.len(), 1514);
    }

    #[test]
    fn bad_files_name_the_problem() {
        assert_eq!(
            err(&[1, 2, 3]),
            "x.pcap: not a pcap file (3 bytes is shorter than the 24-byte file header)"
        );
        assert!(err(&header(0x1234_5678, 1)).contains("not a pcap file"));
        assert!(err(&[0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0]).contains("pcapng"));
        assert!(err(&header(0xa1b2_c3d4, 105)).contains("is not Ethernet"));

        let mut f = header(0xa1b2_c3d4, 1);
        record(&mut f, 60, 60, 0);
        f.truncate(f.len() - 1);
        assert_eq!(
            err(&f),
            "x.pcap: record 0 at byte 24 is truncated (the file ends inside it)"
        );

        let mut f = header(0xa1b2_c3d4, 1);
        record(&mut f, 60, 100, 0);
        assert!(err(&f).contains("cut by the capture's snaplen (60 of 100 bytes kept)"));

        let mut f = header(0xa1b2_c3d4, 1);
        record(&mut f, 0, 0, 0);
        assert!(err(&f).contains("frame 0 is 0 bytes, shorter than"));

        let mut f = header(0xa1b2_c3d4, 1);
        record(&mut f, 60, 60, 0);
        record(&mut f, 1600, 1600, 0);
        assert_eq!(
            err(&f),
            "x.pcap: frame 1 is 1600 bytes; the device takes frames up to 1518 bytes"
        );

        let mut f = header(0xa1b2_c3d4, 1);
        record(&mut f, 60, 60, 2_000_000);
        assert!(err(&f).contains("timestamp fraction 2000000 is out of range"));
    }

    #[test]
    fn output_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.pcap");
        let mut out = PcapOut::create(&path, TsResolution::MicroSecond).unwrap();
        out.write(Duration::new(3, 4000), &[1u8; 60]).unwrap();
        assert!(!path.exists());
        out.commit().unwrap();
        let cap = read(&path, 1518).unwrap();
        assert_eq!(
            cap.frames,
            vec![Frame {
                ts: Duration::new(3, 4000),
                data: vec![1u8; 60]
            }]
        );

        let abandoned = dir.path().join("never.pcap");
        let mut out = PcapOut::create(&abandoned, TsResolution::MicroSecond).unwrap();
        out.write(Duration::ZERO, &[1u8; 60]).unwrap();
        drop(out);
        assert!(!abandoned.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no partial file left"
        );
    }
}
