//! `vlab vhost-user-backend`: the rust datapath as a vhost-user backend process, for any
//! frontend (vlab, QEMU's `-netdev vhost-user`, DPDK's `net_virtio_user`).
//!
//! It serves one connection and exits when the frontend goes. Its endpoints: a pcap input
//! (followed by the end marker, so the guest knows the input ended), a pcap output (up to
//! the marker, which it leaves out; written when the marker comes back or the frontend
//! goes, whichever is first), frames looped back, or a TAP.

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use clap::Args;
use device_model::endpoint::marker::{Marked, UntilMarker};
use device_model::endpoint::Timestamps;
use device_model::endpoint::{self, NullSink, NullSource, PcapSink, PcapSource, Sink, Source};
use device_model::net::{features, DEFAULT_MAX_FRAME, MAX_FRAME_LIMIT, NET_HDR_LEN};
use device_model::pcap::{self, PcapOut};
use device_model::tap::{Tap, TapSink, TapSource};
use device_model::vhost::user_backend::{self, BackendConfig};
use device_model::vhost::{feature_names, DATA_FEATURES};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown or non-data feature '{0}' (the backend's are: {names})", names = feature_names(DATA_FEATURES))]
    Feature(String),
    #[error("--max-frame {0} is outside 64..={MAX_FRAME_LIMIT}")]
    MaxFrame(usize),
    #[error("--loopback cannot be combined with --pcap-out")]
    LoopbackWithOutput,
    #[error(transparent)]
    Pcap(#[from] pcap::Error),
    #[error(transparent)]
    Tap(#[from] device_model::tap::Error),
    #[error("TAP {0}: {1}")]
    TapIo(String, #[source] std::io::Error),
    #[error(transparent)]
    Serve(#[from] user_backend::Error),
    #[error("vhost-user backend: finishing the output: {0}")]
    Output(#[from] endpoint::SinkError),
}

#[derive(Args, Debug)]
pub struct BackendArgs {
    /// The UNIX socket to listen on (created; removed when the backend exits).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Frames to deliver to the guest; the end marker (ethertype 88b5) follows them.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["tap", "loopback"])]
    pcap_in: Option<PathBuf>,
    /// Where the frames the guest transmits are written, up to the end marker.
    #[arg(long, value_name = "FILE", conflicts_with = "tap")]
    pcap_out: Option<PathBuf>,
    /// Loop the guest's transmitted frames back to its receive queue.
    #[arg(long)]
    loopback: bool,
    /// Move frames to and from this TAP (created, or attached to if persistent).
    #[arg(long, value_name = "NAME")]
    tap: Option<String>,
    /// Data features not to offer (mrg_rxbuf, any_layout, indirect_desc, event_idx,
    /// version_1, ring_packed, in_order).
    #[arg(long, value_name = "FEATURE,...", value_delimiter = ',')]
    withhold: Vec<String>,
    /// Largest queue the backend accepts.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    queue_size: u16,
    /// Largest frame carried, in bytes without FCS.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME)]
    max_frame: usize,
}

/// Runs the backend until its frontend disconnects; returns the exit status.
pub fn run(args: &BackendArgs) -> Result<u8, Error> {
    let mut offered = DATA_FEATURES;
    for name in &args.withhold {
        let bit = features::by_name(name)
            .filter(|b| b & DATA_FEATURES != 0)
            .ok_or_else(|| Error::Feature(name.clone()))?;
        offered &= !bit;
    }
    if !(64..=MAX_FRAME_LIMIT).contains(&args.max_frame) {
        return Err(Error::MaxFrame(args.max_frame));
    }
    if args.loopback && args.pcap_out.is_some() {
        return Err(Error::LoopbackWithOutput);
    }
    // Inputs first: nothing is created until they are known to be good.
    let input = match &args.pcap_in {
        Some(p) => Some(pcap::read(p, args.max_frame)?),
        None => None,
    };
    let stamps = Timestamps::new(
        input
            .iter()
            .flat_map(|c| c.frames.iter().map(|f| f.ts))
            .collect(),
    );
    let resolution = input
        .as_ref()
        .map_or(pcap_file::TsResolution::MicroSecond, |c| c.resolution);
    let mut tap = None;
    let (source, sink): (Box<dyn Source>, Box<dyn Sink>) = if args.loopback {
        let (s, k) = endpoint::loopback();
        (Box::new(s), Box::new(k))
    } else if let Some(name) = &args.tap {
        let t = Tap::open(name, NET_HDR_LEN, args.max_frame)?;
        let io = |e| Error::TapIo(name.clone(), e);
        let s = TapSource::new(&t, NET_HDR_LEN, None).map_err(io)?;
        let k = TapSink::new(&t, NET_HDR_LEN, None).map_err(io)?;
        tap = Some(t);
        (Box::new(s), Box::new(k))
    } else {
        let source: Box<dyn Source> = match input {
            Some(cap) => Box::new(Marked::new(PcapSource::new(cap.frames))),
            None => Box::new(NullSource),
        };
        let sink: Box<dyn Sink> = match &args.pcap_out {
            Some(p) => Box::new(UntilMarker::new(
                PcapSink::new(PcapOut::create(p, resolution)?, stamps),
                true,
            )),
            None => Box::new(NullSink::default()),
        };
        (source, sink)
    };
    let cfg = BackendConfig {
        features: offered,
        queue_size: args.queue_size,
        max_frame: args.max_frame,
    };
    let fd = tap.as_ref().map(|t| t.as_raw_fd());
    eprintln!(
        "vlab vhost-user-backend: listening on {} (features: {})",
        args.socket.display(),
        feature_names(offered)
    );
    let served = user_backend::serve(&args.socket, cfg, source, sink, fd, crate::signals::flag())?;
    let mut sink = served.sink;
    sink.finish()?;
    let c = &served.stats;
    let why = match crate::signals::received() {
        Some(sig) => format!("stopped by {sig}"),
        None => "frontend gone".to_string(),
    };
    println!(
        "vlab vhost-user-backend: {why}: delivered={} out={} drops={} features: {}",
        c.rx_delivered,
        sink.frames(),
        c.rx_dropped + c.tx_dropped + c.rx_malformed + c.tx_malformed,
        feature_names(served.features)
    );
    Ok(0)
}
