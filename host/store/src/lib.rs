//! Switchyard's persistent state.
//!
//! Plugins see a key-value store that the host scopes to one [`Namespace`]
//! (tenant, plugin instance). This crate defines the [`KvBackend`] trait the
//! runtime talks to and [`SqliteStore`], the embedded default (SQLite in WAL
//! mode). A PostgreSQL backend implements the same trait.
//!
//! Limits are enforced by the backend inside the write's transaction, so a
//! quota cannot be overrun by concurrent writers:
//!
//! ```
//! use switchyard_store::{KvBackend, Namespace, Quota, SqliteStore};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = SqliteStore::open_in_memory().unwrap();
//! let ns = Namespace::new("acme", "echo-1");
//! let quota = Quota::default();
//! store.set(&ns, "greeting", b"hello", &quota).await.unwrap();
//! assert_eq!(store.get(&ns, "greeting").await.unwrap().as_deref(), Some(&b"hello"[..]));
//! // Another tenant's namespace does not see it.
//! let other = Namespace::new("globex", "echo-1");
//! assert_eq!(store.get(&other, "greeting").await.unwrap(), None);
//! # });
//! ```
#![deny(missing_docs)]

mod admin;
mod queue;
mod schedule;
mod secrets;
mod sqlite;

pub use admin::{AdminStore, AuditEntry, TOKEN_PREFIX, TokenInfo};
pub use queue::{
    Attempt, Enqueued, Finish, Finished, InstanceKey, Job, JobQueue, JobState, LeaseRequest,
    NewJob, NextLease, Outcome, QueueDepth, Retry, Settled, TenantConcurrency, backoff_ms,
};
pub use schedule::{
    Fired, InstanceStats, InstanceStore, PluginLock, RunRecord, Schedule, WantedSchedule,
};
pub use secrets::{MasterKey, SecretError, SecretMeta, SecretRows, SecretStore};
pub use sqlite::SqliteStore;

/// Everything the daemon persists, as one object: plugin storage, the job
/// queue, schedules and instance state, API tokens and audit, sealed secrets.
///
/// The daemon holds an `Arc<dyn StateBackend>` and never names a database, so
/// a second backend (PostgreSQL, for replicas sharing one database) is a new
/// implementation of the five traits and nothing else. Import the traits to
/// call their methods: `use switchyard_store::prelude::*;`.
pub trait StateBackend: KvBackend + JobQueue + InstanceStore + AdminStore + SecretRows {}

impl<T: KvBackend + JobQueue + InstanceStore + AdminStore + SecretRows> StateBackend for T {}

/// The backend traits, for `use switchyard_store::prelude::*`.
pub mod prelude {
    pub use crate::{AdminStore, InstanceStore, JobQueue, KvBackend, SecretRows, StateBackend};
}

use async_trait::async_trait;

/// The (tenant, instance) pair every key belongs to. Built by the host from
/// its own configuration; never from guest input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    /// Tenant id.
    pub tenant: String,
    /// Plugin instance id within the tenant.
    pub instance: String,
}

impl Namespace {
    /// Creates a namespace.
    pub fn new(tenant: impl Into<String>, instance: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            instance: instance.into(),
        }
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tenant, self.instance)
    }
}

/// Size limits for one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Total of key and value bytes the namespace may hold.
    pub max_total_bytes: u64,
    /// Number of keys the namespace may hold.
    pub max_keys: u64,
}

impl Default for Quota {
    fn default() -> Self {
        Self {
            max_value_bytes: 1024 * 1024,
            max_total_bytes: 64 * 1024 * 1024,
            max_keys: 100_000,
        }
    }
}

/// Longest key, in bytes. Keys are short identifiers; a bound keeps index
/// pages small and stops a guest from using keys as a second value channel.
pub const MAX_KEY_BYTES: usize = 512;

/// Most keys one `list` call returns, whatever the caller asks for.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// How much a namespace holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sum of key and value lengths.
    pub bytes: u64,
    /// Number of keys.
    pub keys: u64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The key is empty, too long or contains NUL.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The value is larger than [`Quota::max_value_bytes`].
    #[error("value of {size} bytes exceeds the limit of {limit} bytes")]
    ValueTooLarge {
        /// Size of the rejected value.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The write would take the namespace over its quota.
    #[error("storage quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The database failed.
    #[error("storage backend failed: {0}")]
    Backend(String),
}

/// Checks a key against the rules every backend applies.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey("key is empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StoreError::InvalidKey(format!(
            "key is {} bytes long; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if key.contains('\0') {
        return Err(StoreError::InvalidKey(
            "key contains a NUL character".into(),
        ));
    }
    Ok(())
}

fn validate_value(value: &[u8], quota: &Quota) -> Result<(), StoreError> {
    if value.len() > quota.max_value_bytes {
        return Err(StoreError::ValueTooLarge {
            size: value.len(),
            limit: quota.max_value_bytes,
        });
    }
    Ok(())
}

/// A key-value backend shared by all tenants; every call names its namespace.
#[async_trait]
pub trait KvBackend: Send + Sync + 'static {
    /// Returns the value of `key`.
    async fn get(&self, ns: &Namespace, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores `value` under `key` if the namespace stays within `quota`.
    async fn set(
        &self,
        ns: &Namespace,
        key: &str,
        value: &[u8],
        quota: &Quota,
    ) -> Result<(), StoreError>;

    /// Deletes `key`; returns whether it existed.
    async fn delete(&self, ns: &Namespace, key: &str) -> Result<bool, StoreError>;

    /// Returns up to `limit` keys (capped at [`MAX_LIST_LIMIT`]) that start
    /// with `prefix` and sort after `after`, in ascending byte order.
    async fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;

    /// Replaces the value of `key` with `new` (None deletes) if the current
    /// value equals `expected` (None: absent). Returns whether it swapped.
    async fn compare_and_swap(
        &self,
        ns: &Namespace,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        quota: &Quota,
    ) -> Result<bool, StoreError>;

    /// Reports what the namespace holds.
    async fn usage(&self, ns: &Namespace) -> Result<Usage, StoreError>;
}
