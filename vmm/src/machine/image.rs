//! Finding the default guest image (`images/pmd-guest`, built for x86_64-unknown-none).

use std::path::{Path, PathBuf};

/// Environment variable that overrides the default guest image.
pub const ENV: &str = "VLAB_GUEST_IMAGE";
const REL: &str = "x86_64-unknown-none/release/pmd-guest";

/// Candidate locations of the guest image, in the order they are tried: `$VLAB_GUEST_IMAGE`,
/// then beside this executable's target directory (`target/release/vlab` ->
/// `target/x86_64-unknown-none/release/pmd-guest`), then the workspace's target directory.
pub fn candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os(ENV) {
        c.push(PathBuf::from(p));
        return c;
    }
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/vlab or target/<profile>/deps/<test>
        for up in exe.ancestors().skip(1).take(3) {
            c.push(up.join(REL));
        }
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    c.push(target.join(REL));
    c
}

/// The default guest image, or an error listing where it was looked for.
pub fn default_image() -> Result<PathBuf, String> {
    let c = candidates();
    c.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let tried: Vec<String> = c.iter().map(|p| p.display().to_string()).collect();
        format!(
            "the guest image is not built (looked in {}); run `make` (or `make images`), \
             or pass --kernel",
            tried.join(", ")
        )
    })
}
