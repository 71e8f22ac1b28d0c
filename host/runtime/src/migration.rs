//! A plugin version's storage migration step (the optional export
//! `migrate-storage`, WIT 0.1.5): it runs once per instance and version,
//! before that version's first invocation, so that a new version never
//! reads storage in the shape an older one left it.
//!
//! The store records, per instance, which plugin version its storage was
//! last brought up to date for ([`switchyard_store::StorageVersion`]). An
//! instance that finds another version recorded calls the step (when the
//! plugin has one and the storage holds anything), then records its own.
//! Each instance remembers once it is current ([`Gate`]), so the check
//! costs one atomic load per call after the first. The step runs in a task
//! of its own under a claim in the store: a caller that goes away does not
//! stop it half-way, and no other caller, instance or daemon runs a second
//! one beside it. A step that fails is tried again after a backoff; until
//! then the instance's calls fail with
//! [`InvokeError::Migration`](crate::InvokeError::Migration) without
//! running, and a queued job is put back without counting an attempt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
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

/// How much longer than the step's deadline a claim on it lasts: a daemon
/// that dies mid-step holds the others off no longer than this.
pub(crate) const CLAIM_MARGIN: Duration = Duration::from_secs(5);

/// A storage migration step that ran before a call (in [`crate::Report`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Migrated {
    /// The version the storage was recorded for, when the same plugin's.
    pub from: Option<String>,
    /// The version whose step ran.
    pub to: String,
    /// What the plugin said it did (empty when it failed).
    pub summary: String,
    /// Why it failed, when it did.
    pub error: Option<String>,
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
    /// Failures of the step in a row (waits for the store or for another
    /// daemon's step are not counted).
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

/// Per instance, plugin build and process: whether its storage is known
/// to be current, and the last failure. Shared by every [`crate::Instance`]
/// built for the same (tenant, instance, build), so that one rebuilt by a
/// reload neither forgets nor runs a second step beside the first. The
/// mutex makes concurrent first calls wait for one step; `owner` names
/// this process's claim in the store, which keeps other daemons out.
#[derive(Debug)]
pub(crate) struct Gate {
    current: AtomicBool,
    pub state: Arc<tokio::sync::Mutex<Option<Failure>>>,
    pub owner: String,
}

impl Gate {
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Self {
            current: AtomicBool::new(false),
            state: Arc::default(),
            owner: format!(
                "{}-{started:x}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }

    pub fn is_current(&self) -> bool {
        self.current.load(Ordering::Acquire)
    }

    pub fn set_current(&self) {
        self.current.store(true, Ordering::Release);
    }

    /// The next call checks the store again.
    pub fn set_stale(&self) {
        self.current.store(false, Ordering::Release);
    }
}

/// The gates of a runtime, by (tenant, instance), then plugin digest; an
/// entry lives while an instance holds it.
#[derive(Debug, Default)]
pub(crate) struct Gates(Mutex<HashMap<(String, String), Builds>>);

/// The gates of one instance's builds, by plugin digest.
type Builds = Vec<(String, Weak<Gate>)>;

impl Gates {
    pub fn get(&self, tenant: &str, instance: &str, digest: &str) -> Arc<Gate> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let builds = all
            .entry((tenant.to_owned(), instance.to_owned()))
            .or_default();
        builds.retain(|(_, w)| w.strong_count() > 0);
        if let Some(g) = builds
            .iter()
            .find(|(d, _)| d == digest)
            .and_then(|(_, w)| w.upgrade())
        {
            return g;
        }
        let g = Arc::new(Gate::new());
        builds.push((digest.to_owned(), Arc::downgrade(&g)));
        g
    }

    /// `digest`'s storage version was just recorded for (tenant,
    /// instance): the gates of the instance's other builds (an older one
    /// still draining, say) no longer know it current, so a build that
    /// serves the instance again (a downgrade) checks and migrates anew.
    pub fn recorded(&self, tenant: &str, instance: &str, digest: &str) {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = (tenant.to_owned(), instance.to_owned());
        for (d, gate) in all.get(&key).into_iter().flatten() {
            if d != digest
                && let Some(g) = gate.upgrade()
            {
                g.set_stale();
            }
        }
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
