//! Writes `basic/io-mixed/in.pcap` (and its copies in the other mixed cases) from
//! `testcases::mixed`. Run after changing that module: `cargo run -p testcases --bin gen-mixed`.

use device_model::pcap::PcapOut;
use pcap_file::TsResolution;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = testcases::root();
    for case in [
        "basic/io-mixed",
        "basic/macswap-mixed",
        "basic/rxonly-mixed",
        "basic/io-small-ring",
    ] {
        let path = root.join(case).join("in.pcap");
        let mut out = PcapOut::create(&path, TsResolution::MicroSecond)?;
        for f in testcases::mixed::frames() {
            out.write(f.ts, &f.data)?;
        }
        out.commit()?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
