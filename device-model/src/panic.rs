//! Panics caught at thread boundaries: a worker that panics is a bug of ours, reported as an
//! error that names what it said, never a second panic or a hang.

/// The message a caught panic carried.
pub fn message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
