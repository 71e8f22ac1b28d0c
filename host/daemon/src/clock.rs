//! Wall-clock time in the form the store keeps it, and request ids.

use std::sync::atomic::{AtomicU32, Ordering};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

/// A fresh request id: the time and a per-process sequence number, so ids
/// sort by time and never repeat within a process.
pub fn request_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "req-{:x}-{:x}",
        now_ms(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
