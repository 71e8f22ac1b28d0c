//! A plugin version's storage migration step (the optional export
//! `migrate-storage`, WIT 0.1.5): it runs once per instance and version,
//! before that version's first invocation, so that a new version never
//! reads storage in the shape an older one left it.
//!
//! The store records, per instance, which plugin version its storage was
//! last brought up to date for ([`switchyard_store::StorageVersion`]). An
//! instance that finds another version recorded calls the step (when the
//! plugin has one and the storage holds anything), then records its own.
//! Each [`Instance`](crate::Instance) remembers once it is current, so the
//! check costs one atomic load per call after the first. A step that fails
//! is tried again after a backoff; until then the instance's calls fail with
//! [`InvokeError::Migration`](crate::InvokeError::Migration) without
//! running, and a queued job is put back without counting an attempt.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The name of the optional export.
pub(crate) const EXPORT: &str = "migrate-storage";

/// The export's parameters and results, as wasmtime types them.
pub(crate) type Params = (crate::bindings::types::Context, Option<String>);
pub(crate) type Results = (Result<String, crate::bindings::types::PluginError>,);

/// How long after a first failure the step is tried again; each further
/// failure doubles it, up to [`MAX_RETRY`].
pub(crate) const FIRST_RETRY: Duration = Duration::from_secs(5);

/// The longest wait between two tries.
pub(crate) const MAX_RETRY: Duration = Duration::from_secs(300);

/// A storage migration that ran before a call (in [`crate::Report`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Migrated {
    /// The version the storage was recorded for, when the same plugin's.
    pub from: Option<String>,
    /// The version that migrated it.
    pub to: String,
    /// What the plugin said it did.
    pub summary: String,
    /// How long the step took.
    pub duration_ms: u64,
}

/// Why an instance's storage is not current yet.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// The version the storage was recorded for, when the same plugin's.
    pub from: Option<String>,
    /// What went wrong (the plugin's error, or the store's).
    pub reason: String,
    /// Failures in a row.
    pub failures: u32,
    /// When the step may run again.
    pub retry_at: Instant,
}

impl Failure {
    /// The wait after `failures` failures in a row.
    pub fn backoff(failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        (FIRST_RETRY * 2u32.pow(doublings)).min(MAX_RETRY)
    }
}

/// Per instance: whether its storage is known to be current, and the last
/// failure. The mutex also makes concurrent first calls wait for one step.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    current: AtomicBool,
    pub state: tokio::sync::Mutex<Option<Failure>>,
}

impl Gate {
    pub fn is_current(&self) -> bool {
        self.current.load(Ordering::Acquire)
    }

    pub fn set_current(&self) {
        self.current.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_five_seconds_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=9).map(|n| Failure::backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(Failure::backoff(u32::MAX), MAX_RETRY);
    }
}
