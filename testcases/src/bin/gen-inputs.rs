//! Writes every generated `in.pcap` (see `testcases::inputs::GENERATED`). Run after changing
//! that module: `cargo run -p testcases --bin gen-inputs`.

use device_model::pcap::PcapOut;
use pcap_file::TsResolution;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = testcases::root();
    for (case, gen) in testcases::inputs::GENERATED {
        let path = root.join(case).join("in.pcap");
        let mut out = PcapOut::create(&path, TsResolution::MicroSecond)?;
        for f in gen() {
            out.write(f.ts, &f.data)?;
        }
        out.commit()?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
