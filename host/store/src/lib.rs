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
mod error;
mod kv;
mod postgres;
mod queue;
mod schedule;
mod secrets;
mod sqlite;
#[cfg(test)]
mod testing;
mod writer;

pub use admin::{
    AdminStore, AuditEntry, AuditQuery, ConfigVersion, ConsoleSession, SESSION_PREFIX,
    TOKEN_PREFIX, TokenInfo, random_secret,
};
pub use error::StoreError;
pub use kv::{
    InstanceKey, KvBackend, MAX_KEY_BYTES, MAX_LIST_LIMIT, Namespace, Quota, StorageVersion, Usage,
    validate_key,
};
pub use postgres::{PgSettings, PgStore, PgTls, describe_url, url_has_password};
pub use queue::{
    Attempt, Change, Enqueued, Finish, Finished, Job, JobQueue, JobState, LeaseRequest, NewJob,
    NextLease, Outcome, QueueDepth, Retry, Settled, TenantConcurrency, Watching, backoff_ms,
};
pub use schedule::{
    Fired, InstanceStats, InstanceStore, MAX_SUMMARY_CHARS, PluginLock, RunRecord, Schedule,
    WantedSchedule, cut_summary,
};
pub use secrets::{MasterKey, Rewrapped, SecretError, SecretMeta, SecretRows, SecretStore};
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
