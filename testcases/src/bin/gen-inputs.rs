//! Writes every generated `in.pcap` (see `testcases::inputs::GENERATED`) and the malformed
//! captures of `malformed/pcap/` (`testcases::malformed`). Run after changing either module:
//! `cargo run -p testcases --bin gen-inputs`.

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
    let dir = root.join("malformed/pcap");
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in testcases::malformed::pcaps() {
        let path = dir.join(name);
        std::fs::write(&path, bytes)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
