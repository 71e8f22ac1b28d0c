//! The embedded default backend: one SQLite database in WAL mode.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::kv::validate_value;
use crate::writer::Writer;
use crate::{
    KvBackend, MAX_LIST_LIMIT, Namespace, Quota, StorageVersion, StoreError, Usage, validate_key,
};

/// SQLite-backed store. Cheap to clone; clones share the connections: one
/// writer, and a few readers for a database file.
///
/// Keys are stored as BLOBs so that a prefix scan is a plain index range
/// `prefix <= key < prefix || 0xFF` (0xFF never occurs in UTF-8).
#[derive(Clone)]
pub struct SqliteStore {
    /// The one writer (SQLite has one at a time anyway): a thread that
    /// commits concurrent writes together (see writer.rs).
    writer: Writer,
    /// Read-only connections: in WAL mode they read the last committed
    /// state while the writer writes, so reads (token checks, plugin
    /// `get`s, status) never queue behind another tenant's writes. Empty
    /// for an in-memory database, which only the writer can see.
    readers: Arc<Readers>,
    /// Where the last lease stopped, so the next one goes on from there
    /// (round-robin across instances; see queue.rs).
    pub(crate) lease_cursor: Arc<Mutex<Option<crate::InstanceKey>>>,
}

/// The schema's versions, oldest first: each migration is applied once, in
/// a transaction, and the database remembers how far it got in
/// `PRAGMA user_version`. Version 1 is the schema before versions existed
/// (its `IF NOT EXISTS` makes it a no-op on such a database).
const MIGRATIONS: &[&str] = &[
    SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6, SCHEMA_V7,
];

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS kv (
    tenant   TEXT NOT NULL,
    instance TEXT NOT NULL,
    key      BLOB NOT NULL,
    value    BLOB NOT NULL,
    PRIMARY KEY (tenant, instance, key)
) WITHOUT ROWID;
-- Running totals per namespace, updated in the same transaction as kv, so a
-- quota check is one row read instead of a scan.
CREATE TABLE IF NOT EXISTS kv_usage (
    tenant   TEXT NOT NULL,
    instance TEXT NOT NULL,
    bytes    INTEGER NOT NULL,
    keys     INTEGER NOT NULL,
    PRIMARY KEY (tenant, instance)
) WITHOUT ROWID;
-- Envelope encryption (see secrets.rs): per-tenant data keys wrapped by the
-- master key, and secrets sealed under their tenant's data key.
CREATE TABLE IF NOT EXISTS tenant_keys (
    tenant  TEXT PRIMARY KEY,
    wrapped BLOB NOT NULL
) WITHOUT ROWID;
-- API tokens: only the SHA-256 of a token is kept.
CREATE TABLE IF NOT EXISTS api_tokens (
    hash       BLOB PRIMARY KEY,
    id         TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    label      TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
-- Append-only audit log: never bodies, tokens or secrets.
CREATE TABLE IF NOT EXISTS audit (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    time        INTEGER NOT NULL,
    tenant      TEXT NOT NULL,
    instance    TEXT,
    actor       TEXT,
    kind        TEXT NOT NULL,
    what        TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    request_id  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_tenant ON audit (tenant, seq);
-- Job schedules and paused states (see schedule.rs).
CREATE TABLE IF NOT EXISTS schedules (
    tenant      TEXT NOT NULL,
    instance    TEXT NOT NULL,
    job         TEXT NOT NULL,
    interval_ms INTEGER NOT NULL,
    next_run    INTEGER NOT NULL,
    last_fired  INTEGER,
    PRIMARY KEY (tenant, instance, job)
) WITHOUT ROWID;
-- Runs, failures and the last error per action, webhook route and job.
CREATE TABLE IF NOT EXISTS run_stats (
    tenant        TEXT NOT NULL,
    instance      TEXT NOT NULL,
    kind          TEXT NOT NULL,
    name          TEXT NOT NULL,
    runs          INTEGER NOT NULL,
    errors        INTEGER NOT NULL,
    last_run      INTEGER NOT NULL,
    last_outcome  TEXT NOT NULL,
    last_error    TEXT,
    last_error_at INTEGER,
    PRIMARY KEY (tenant, instance, kind, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS instance_state (
    tenant   TEXT NOT NULL,
    instance TEXT NOT NULL,
    paused   INTEGER NOT NULL,
    PRIMARY KEY (tenant, instance)
) WITHOUT ROWID;
-- Event ids of synchronous webhook deliveries, to drop duplicates.
CREATE TABLE IF NOT EXISTS seen_events (
    tenant   TEXT NOT NULL,
    instance TEXT NOT NULL,
    key      TEXT NOT NULL,
    seen_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, instance, key)
) WITHOUT ROWID;
-- The durable job queue (see queue.rs).
CREATE TABLE IF NOT EXISTS jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant          TEXT NOT NULL,
    instance        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    name            TEXT NOT NULL,
    payload         BLOB NOT NULL,
    idempotency_key TEXT,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    max_attempts    INTEGER NOT NULL,
    run_after       INTEGER NOT NULL,
    lease_until     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    UNIQUE (tenant, instance, idempotency_key)
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (state, run_after);
CREATE TABLE IF NOT EXISTS secrets (
    tenant     TEXT NOT NULL,
    name       TEXT NOT NULL,
    sealed     BLOB NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
";

/// Fencing, fair leasing and retention (see queue.rs).
const SCHEMA_V2: &str = "
-- Who holds a running job's lease: completion is accepted only from the
-- holder of the current attempt.
ALTER TABLE jobs ADD COLUMN owner TEXT;
-- When a job finished, for retention.
ALTER TABLE jobs ADD COLUMN finished_at INTEGER;
-- Leasing walks (tenant, instance) pairs with queued jobs, then takes the
-- oldest ready job of each: one index seek per pair.
CREATE INDEX jobs_by_instance ON jobs (state, tenant, instance, run_after, id);
CREATE INDEX jobs_lease ON jobs (state, lease_until);
CREATE INDEX jobs_finished ON jobs (state, finished_at);
CREATE INDEX audit_by_time ON audit (time);
CREATE INDEX seen_events_by_time ON seen_events (seen_at);
";

/// Which plugin build each instance runs (see schedule.rs, `PluginLock`).
const SCHEMA_V3: &str = "
CREATE TABLE plugin_locks (
    tenant    TEXT NOT NULL,
    instance  TEXT NOT NULL,
    plugin    TEXT NOT NULL,
    version   TEXT NOT NULL,
    digest    TEXT NOT NULL,
    locked_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, instance)
) WITHOUT ROWID;
";

/// Indexes that hold only the rows they serve. A job changes state twice
/// (queued, running, then done); each full `(state, …)` index was written
/// twice per change, so four of them made finishing a job cost more than
/// storing it. A partial index is written only when a row enters or leaves
/// its state. `jobs_by_instance` stays whole: leasing, the per-tenant
/// running counts and the status counts all read it by state.
const SCHEMA_V4: &str = "
DROP INDEX jobs_ready;
DROP INDEX jobs_lease;
DROP INDEX jobs_finished;
CREATE INDEX jobs_due ON jobs (run_after) WHERE state = 'queued';
CREATE INDEX jobs_running ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_done ON jobs (finished_at) WHERE state = 'done';
";

/// What a job returned when it last succeeded (its summary for people):
/// on the job's row, and per job in the run statistics.
const SCHEMA_V5: &str = "
ALTER TABLE jobs ADD COLUMN summary TEXT;
ALTER TABLE run_stats ADD COLUMN last_summary TEXT;
";

/// Tenant admins: a token's role (tokens made before roles call actions),
/// and the versions of tenants configured through the admin API.
const SCHEMA_V6: &str = "
ALTER TABLE api_tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'api';
CREATE TABLE tenant_configs (
    tenant     TEXT NOT NULL,
    version    INTEGER NOT NULL,
    text       TEXT NOT NULL,
    author     TEXT NOT NULL,
    comment    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, version)
) WITHOUT ROWID;
-- Web console sign-ins: a session lives as long as its token and its
-- expiry (seconds since the epoch).
CREATE TABLE console_sessions (
    hash       BLOB PRIMARY KEY,
    token_hash BLOB NOT NULL,
    csrf       TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Which plugin version each instance's storage was last brought up to
/// date for (see kv.rs, `StorageVersion`).
const SCHEMA_V7: &str = "
CREATE TABLE kv_versions (
    tenant      TEXT NOT NULL,
    instance    TEXT NOT NULL,
    plugin      TEXT NOT NULL,
    version     TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, instance)
) WITHOUT ROWID;
-- Who runs an instance's migration step now, until when (ms).
CREATE TABLE kv_migrations (
    tenant   TEXT NOT NULL,
    instance TEXT NOT NULL,
    owner    TEXT NOT NULL,
    until_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, instance)
) WITHOUT ROWID;
";

/// Applies the migrations `conn` has not seen yet.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let have: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
        .map_err(backend)? as usize;
    if have > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "the database has schema version {have}, newer than this switchyard knows \
             ({}); run the newer switchyard, or restore a backup made for this one",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(have) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(backend)?;
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Backend(format!("migrating to schema {}: {e}", i + 1)))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`. The file is
    /// private to this user (0600): it holds tenants' data and the
    /// wrapped keys of their secrets.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        make_private(path)?;
        let conn = Connection::open(path).map_err(|e| {
            StoreError::Backend(format!(
                "cannot open SQLite database {}: {e}",
                path.display()
            ))
        })?;
        let mut store = Self::init(conn)?;
        // Opened after the migrations, so readers see the current schema.
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(backend)?;
            r.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(backend)?;
            r.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            // A small page cache: SQLite's default of 2 MiB per connection
            // grew the daemon by 8 MiB once plugin storage outgrew it (a
            // 100,000-device sync), whatever the load. A reader that
            // misses reads the page from the operating system's cache; the
            // hot pages (the queue's indexes, small values) stay here.
            r.pragma_update(None, "cache_size", READER_CACHE_KIB)
                .map_err(backend)?;
            readers.push(Mutex::new(r));
        }
        store.readers = Arc::new(Readers {
            conns: readers,
            next: AtomicUsize::new(0),
        });
        Ok(store)
    }

    /// `(schema version of the database at path, newest this binary
    /// knows)`, read without changing anything; version 0 when there is no
    /// database there yet (`switchyard migrate --check`).
    pub fn schema_version(path: &Path) -> Result<(usize, usize), StoreError> {
        if !path.exists() {
            return Ok((0, MIGRATIONS.len()));
        }
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| {
                StoreError::Backend(format!(
                    "cannot open SQLite database {}: {e}",
                    path.display()
                ))
            })?;
        let have: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(backend)?;
        Ok((have as usize, MIGRATIONS.len()))
    }

    /// Opens a private in-memory database (tests, `plugin run`).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(backend)?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        // WAL lets readers proceed during a write; NORMAL sync is durable
        // across process crashes (only an OS crash can lose the last commit).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        // Every write runs in a savepoint of the writer's batch, so SQLite
        // keeps a statement journal of each page a write first touches.
        // With temporary files on disk, a batch's journal spilled into a
        // temporary file created and deleted per batch: a quarter of the
        // writer thread's time under a busy queue. In memory it is a copy.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(backend)?;
        // The hot paths (leasing, finishing, storage, the writer's own
        // BEGIN/SAVEPOINT/RELEASE/COMMIT) use more statements than the
        // default cache of 16 holds; a miss parses the SQL again.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let mut conn = conn;
        migrate(&mut conn)?;
        Ok(Self {
            writer: Writer::start(conn)?,
            readers: Arc::new(Readers::default()),
            lease_cursor: Arc::default(),
        })
    }

    /// Runs the read-only `f` on a reader connection (the writer for an
    /// in-memory database), off the async executor.
    pub(crate) async fn with_read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if self.readers.conns.is_empty() {
            return self.with_conn(f).await;
        }
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let n = readers.conns.len();
            let start = readers.next.fetch_add(1, Ordering::Relaxed) % n;
            // An idle reader if there is one, else wait for the next.
            let mut guard = (0..n)
                .find_map(|i| readers.conns[(start + i) % n].try_lock().ok())
                .unwrap_or_else(|| {
                    readers.conns[start]
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                });
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("storage task failed: {e}")))?
    }

    /// Runs the write `f` on the writer connection, off the async executor,
    /// inside a transaction it may share with other writes (its own
    /// savepoint: it commits or rolls back alone). Its result arrives once
    /// it is committed.
    pub(crate) async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write(f).await
    }
}

/// Reader connections of a database file.
const READERS: usize = 4;

/// Each reader's page cache, in KiB (as SQLite takes it: negative).
const READER_CACHE_KIB: i64 = -512;

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 128;

#[derive(Default)]
struct Readers {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

/// Creates `path` 0600 if it does not exist, and takes group and other
/// permissions away if it does.
fn make_private(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let fail = |e: std::io::Error| {
            StoreError::Backend(format!("cannot create {}: {e}", path.display()))
        };
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(fail)?;
        let mode = std::fs::metadata(path).map_err(fail)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))
                .map_err(fail)?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

pub(crate) use crate::error::backend;

/// Writes `new` (None deletes) under `key` inside `tx`, keeping kv_usage
/// exact and refusing growth past `quota`. Shrinking is always allowed, so a
/// namespace that is over quota (after the quota was lowered) can recover.
fn apply(
    tx: &Connection,
    ns: &Namespace,
    key: &str,
    new: Option<&[u8]>,
    quota: &Quota,
) -> Result<(), StoreError> {
    let old_len: Option<i64> = tx
        .prepare_cached("SELECT length(value) FROM kv WHERE tenant=?1 AND instance=?2 AND key=?3")
        .and_then(|mut st| {
            st.query_row(params![ns.tenant, ns.instance, key.as_bytes()], |r| {
                r.get(0)
            })
        })
        .optional()
        .map_err(backend)?;
    let usage = read_usage(tx, ns)?;
    let key_len = key.len() as u64;
    let old_bytes = old_len.map_or(0, |v| v as u64 + key_len);
    let new_bytes = new.map_or(0, |v| v.len() as u64 + key_len);
    let bytes = usage.bytes - old_bytes.min(usage.bytes) + new_bytes;
    let keys = usage.keys - u64::from(old_len.is_some()).min(usage.keys) + u64::from(new.is_some());
    crate::kv::check_quota(ns, quota, usage, bytes, keys)?;
    match new {
        Some(value) => tx
            .prepare_cached(
                "INSERT INTO kv (tenant, instance, key, value) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant, instance, key) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut st| st.execute(params![ns.tenant, ns.instance, key.as_bytes(), value])),
        None => tx
            .prepare_cached("DELETE FROM kv WHERE tenant=?1 AND instance=?2 AND key=?3")
            .and_then(|mut st| st.execute(params![ns.tenant, ns.instance, key.as_bytes()])),
    }
    .map_err(backend)?;
    tx.prepare_cached(
        "INSERT INTO kv_usage (tenant, instance, bytes, keys) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (tenant, instance) DO UPDATE SET bytes = excluded.bytes, keys = excluded.keys",
    )
    .and_then(|mut st| st.execute(params![ns.tenant, ns.instance, bytes as i64, keys as i64]))
    .map_err(backend)?;
    Ok(())
}

fn read_usage(conn: &Connection, ns: &Namespace) -> Result<Usage, StoreError> {
    conn.prepare_cached("SELECT bytes, keys FROM kv_usage WHERE tenant=?1 AND instance=?2")
        .and_then(|mut st| {
            st.query_row(params![ns.tenant, ns.instance], |r| {
                Ok(Usage {
                    bytes: r.get::<_, i64>(0)? as u64,
                    keys: r.get::<_, i64>(1)? as u64,
                })
            })
        })
        .optional()
        .map(Option::unwrap_or_default)
        .map_err(backend)
}

fn read_value(conn: &Connection, ns: &Namespace, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    conn.prepare_cached("SELECT value FROM kv WHERE tenant=?1 AND instance=?2 AND key=?3")
        .and_then(|mut st| {
            st.query_row(params![ns.tenant, ns.instance, key.as_bytes()], |r| {
                r.get(0)
            })
        })
        .optional()
        .map_err(backend)
}

#[async_trait]
impl KvBackend for SqliteStore {
    async fn get(&self, ns: &Namespace, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        validate_key(key)?;
        let (ns, key) = (ns.clone(), key.to_owned());
        self.with_read(move |c| read_value(c, &ns, &key)).await
    }

    async fn set(
        &self,
        ns: &Namespace,
        key: &str,
        value: &[u8],
        quota: &Quota,
    ) -> Result<(), StoreError> {
        validate_key(key)?;
        validate_value(value, quota)?;
        let (ns, key, value, quota) = (ns.clone(), key.to_owned(), value.to_vec(), *quota);
        self.with_conn(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            apply(&tx, &ns, &key, Some(&value), &quota)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn delete(&self, ns: &Namespace, key: &str) -> Result<bool, StoreError> {
        validate_key(key)?;
        let (ns, key) = (ns.clone(), key.to_owned());
        self.with_conn(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let existed = read_value(&tx, &ns, &key)?.is_some();
            if existed {
                // Deleting only shrinks, so the quota passed here is never hit.
                apply(&tx, &ns, &key, None, &Quota::default())?;
            }
            tx.commit().map_err(backend)?;
            Ok(existed)
        })
        .await
    }

    async fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        crate::kv::validate_prefix(prefix)?;
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        let ns = ns.clone();
        let lower = prefix.as_bytes().to_vec();
        let mut upper = lower.clone();
        upper.push(0xFF);
        let after = after.map(|a| a.as_bytes().to_vec());
        self.with_read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT key FROM kv WHERE tenant=?1 AND instance=?2
                     AND key >= ?3 AND key < ?4 AND (?5 IS NULL OR key > ?5)
                     ORDER BY key LIMIT ?6",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(
                    params![ns.tenant, ns.instance, lower, upper, after, limit],
                    |r| r.get::<_, Vec<u8>>(0),
                )
                .map_err(backend)?;
            rows.map(|r| {
                let bytes = r.map_err(backend)?;
                String::from_utf8(bytes)
                    .map_err(|_| StoreError::Backend("stored key is not UTF-8".into()))
            })
            .collect()
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        ns: &Namespace,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        quota: &Quota,
    ) -> Result<bool, StoreError> {
        validate_key(key)?;
        if let Some(v) = new {
            validate_value(v, quota)?;
        }
        let (ns, key, quota) = (ns.clone(), key.to_owned(), *quota);
        let expected = expected.map(<[u8]>::to_vec);
        let new = new.map(<[u8]>::to_vec);
        self.with_conn(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let current = read_value(&tx, &ns, &key)?;
            if current != expected {
                return Ok(false);
            }
            if current.is_some() || new.is_some() {
                apply(&tx, &ns, &key, new.as_deref(), &quota)?;
            }
            tx.commit().map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn usage(&self, ns: &Namespace) -> Result<Usage, StoreError> {
        let ns = ns.clone();
        self.with_read(move |c| read_usage(c, &ns)).await
    }

    async fn clear(&self, ns: &Namespace) -> Result<u64, StoreError> {
        let ns = ns.clone();
        self.with_conn(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let n = tx
                .execute(
                    "DELETE FROM kv WHERE tenant = ?1 AND instance = ?2",
                    params![ns.tenant, ns.instance],
                )
                .map_err(backend)?;
            for table in ["kv_usage", "kv_versions", "kv_migrations"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE tenant = ?1 AND instance = ?2"),
                    params![ns.tenant, ns.instance],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)?;
            Ok(n as u64)
        })
        .await
    }

    async fn storage_version(&self, ns: &Namespace) -> Result<Option<StorageVersion>, StoreError> {
        let ns = ns.clone();
        self.with_read(move |c| read_storage_version(c, &ns)).await
    }

    async fn record_storage_version(
        &self,
        ns: &Namespace,
        expected: Option<&StorageVersion>,
        new: &StorageVersion,
    ) -> Result<bool, StoreError> {
        let (ns, expected, new) = (ns.clone(), expected.cloned(), new.clone());
        self.with_conn(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            if read_storage_version(&tx, &ns)? != expected {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO kv_versions (tenant, instance, plugin, version, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, unixepoch())
                 ON CONFLICT (tenant, instance) DO UPDATE SET plugin = excluded.plugin,
                     version = excluded.version, recorded_at = excluded.recorded_at",
                params![ns.tenant, ns.instance, new.plugin, new.version],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn claim_storage_migration(
        &self,
        ns: &Namespace,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let (ns, owner) = (ns.clone(), owner.to_owned());
        self.with_conn(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            if let Some((holder, until)) = read_claim(&tx, &ns)?
                && holder != owner
                && until > now_ms
            {
                return Ok(Some(until));
            }
            tx.execute(
                "INSERT INTO kv_migrations (tenant, instance, owner, until_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, instance) DO UPDATE SET owner = excluded.owner,
                     until_ms = excluded.until_ms",
                params![ns.tenant, ns.instance, owner, until_ms],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(None)
        })
        .await
    }

    async fn release_storage_migration(
        &self,
        ns: &Namespace,
        owner: &str,
    ) -> Result<(), StoreError> {
        let (ns, owner) = (ns.clone(), owner.to_owned());
        self.with_conn(move |c| {
            c.execute(
                "DELETE FROM kv_migrations WHERE tenant = ?1 AND instance = ?2 AND owner = ?3",
                params![ns.tenant, ns.instance, owner],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }
}

/// The claim on `ns`'s migration: (owner, until_ms).
fn read_claim(conn: &Connection, ns: &Namespace) -> Result<Option<(String, i64)>, StoreError> {
    conn.prepare_cached("SELECT owner, until_ms FROM kv_migrations WHERE tenant=?1 AND instance=?2")
        .and_then(|mut st| {
            st.query_row(params![ns.tenant, ns.instance], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
        .optional()
        .map_err(backend)
}

fn read_storage_version(
    conn: &Connection,
    ns: &Namespace,
) -> Result<Option<StorageVersion>, StoreError> {
    conn.prepare_cached("SELECT plugin, version FROM kv_versions WHERE tenant=?1 AND instance=?2")
        .and_then(|mut st| {
            st.query_row(params![ns.tenant, ns.instance], |r| {
                Ok(StorageVersion {
                    plugin: r.get(0)?,
                    version: r.get(1)?,
                })
            })
        })
        .optional()
        .map_err(backend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::backend_tests;

    fn ns(t: &str) -> Namespace {
        Namespace::new(t, "inst")
    }

    backend_tests! {
        async fn clearing_a_namespace_deletes_its_keys_only(s) {
            let q = Quota::default();
            s.set(&ns("a"), "k1", b"v", &q).await.unwrap();
            s.set(&ns("a"), "k2", b"vv", &q).await.unwrap();
            s.set(&ns("b"), "k1", b"v", &q).await.unwrap();
            assert_eq!(s.clear(&ns("a")).await.unwrap(), 2);
            assert_eq!(s.get(&ns("a"), "k1").await.unwrap(), None);
            assert_eq!(s.usage(&ns("a")).await.unwrap(), Usage::default());
            assert_eq!(s.get(&ns("b"), "k1").await.unwrap(), Some(b"v".to_vec()));
            // The quota counts from zero again.
            s.set(&ns("a"), "k3", b"v", &q).await.unwrap();
            // (Usage counts the key and the value.)
            assert_eq!(s.usage(&ns("a")).await.unwrap(), Usage { bytes: 3, keys: 1 });
        }
    }

    backend_tests! {
        async fn a_storage_version_is_recorded_only_over_the_expected_one(s) {
            let v = |version: &str| StorageVersion {
                plugin: "notes".into(),
                version: version.into(),
            };
            assert_eq!(s.storage_version(&ns("a")).await.unwrap(), None);
            assert!(s.record_storage_version(&ns("a"), None, &v("1.0.0")).await.unwrap());
            // A second daemon that read "nothing recorded" loses the race.
            assert!(!s.record_storage_version(&ns("a"), None, &v("1.0.0")).await.unwrap());
            assert!(!s
                .record_storage_version(&ns("a"), Some(&v("0.9.0")), &v("2.0.0"))
                .await
                .unwrap());
            assert!(s
                .record_storage_version(&ns("a"), Some(&v("1.0.0")), &v("2.0.0"))
                .await
                .unwrap());
            assert_eq!(s.storage_version(&ns("a")).await.unwrap(), Some(v("2.0.0")));
            assert_eq!(s.storage_version(&ns("b")).await.unwrap(), None);
            // An instance removed with its data forgets its version too.
            s.set(&ns("a"), "k", b"v", &Quota::default()).await.unwrap();
            s.clear(&ns("a")).await.unwrap();
            assert_eq!(s.storage_version(&ns("a")).await.unwrap(), None);
        }
    }

    backend_tests! {
        async fn one_owner_at_a_time_claims_a_storage_migration(s) {
            let n = ns("a");
            assert_eq!(s.claim_storage_migration(&n, "d1", 1_000, 5_000).await.unwrap(), None);
            // Another daemon waits until the claim ends; the holder renews it.
            assert_eq!(
                s.claim_storage_migration(&n, "d2", 2_000, 6_000).await.unwrap(),
                Some(5_000)
            );
            assert_eq!(s.claim_storage_migration(&n, "d1", 2_000, 7_000).await.unwrap(), None);
            assert_eq!(
                s.claim_storage_migration(&n, "d2", 3_000, 8_000).await.unwrap(),
                Some(7_000)
            );
            // Another namespace is free.
            assert_eq!(s.claim_storage_migration(&ns("b"), "d2", 3_000, 8_000).await.unwrap(), None);
            // Released, or run out (a daemon that died): the other takes it.
            s.release_storage_migration(&n, "d2").await.unwrap();
            assert_eq!(
                s.claim_storage_migration(&n, "d2", 3_000, 8_000).await.unwrap(),
                Some(7_000),
                "only the holder releases a claim"
            );
            s.release_storage_migration(&n, "d1").await.unwrap();
            assert_eq!(s.claim_storage_migration(&n, "d2", 3_000, 8_000).await.unwrap(), None);
            assert_eq!(s.claim_storage_migration(&n, "d1", 8_000, 9_000).await.unwrap(), None);
        }
    }

    backend_tests! {
        async fn set_get_delete_round_trip(s) {
            let q = Quota::default();
            s.set(&ns("a"), "k", b"v1", &q).await.unwrap();
            s.set(&ns("a"), "k", b"v2", &q).await.unwrap();
            assert_eq!(s.get(&ns("a"), "k").await.unwrap(), Some(b"v2".to_vec()));
            assert_eq!(
                s.usage(&ns("a")).await.unwrap(),
                Usage { bytes: 3, keys: 1 }
            );
            assert!(s.delete(&ns("a"), "k").await.unwrap());
            assert!(!s.delete(&ns("a"), "k").await.unwrap());
            assert_eq!(s.get(&ns("a"), "k").await.unwrap(), None);
            assert_eq!(s.usage(&ns("a")).await.unwrap(), Usage::default());
        }
    }

    backend_tests! {
        async fn namespaces_are_disjoint(s) {
            let q = Quota::default();
            s.set(&ns("a"), "shared", b"from-a", &q).await.unwrap();
            assert_eq!(s.get(&ns("b"), "shared").await.unwrap(), None);
            assert!(s.list(&ns("b"), "", None, 100).await.unwrap().is_empty());
            assert!(!s.delete(&ns("b"), "shared").await.unwrap());
            let other_instance = Namespace::new("a", "other");
            assert_eq!(s.get(&other_instance, "shared").await.unwrap(), None);
        }
    }

    backend_tests! {
        async fn list_pages_by_prefix_and_cursor(s) {
            let q = Quota::default();
            for k in ["dev/1", "dev/2", "dev/3", "devx", "other", "dev"] {
                s.set(&ns("a"), k, b"x", &q).await.unwrap();
            }
            let page = s.list(&ns("a"), "dev/", None, 2).await.unwrap();
            assert_eq!(page, ["dev/1", "dev/2"]);
            let page = s.list(&ns("a"), "dev/", Some("dev/2"), 2).await.unwrap();
            assert_eq!(page, ["dev/3"]);
            let all = s.list(&ns("a"), "", None, 10_000).await.unwrap();
            assert_eq!(all, ["dev", "dev/1", "dev/2", "dev/3", "devx", "other"]);
            // Non-ASCII keys sort bytewise and prefix-match exactly.
            s.set(&ns("a"), "é/1", b"x", &q).await.unwrap();
            assert_eq!(s.list(&ns("a"), "é", None, 10).await.unwrap(), ["é/1"]);
        }
    }

    backend_tests! {
        async fn quota_refuses_growth_but_allows_shrinking(s) {
            let q = Quota {
                max_value_bytes: 100,
                max_total_bytes: 20,
                max_keys: 2,
            };
            s.set(&ns("a"), "k1", &[0; 10], &q).await.unwrap(); // 12 bytes
            let err = s.set(&ns("a"), "k2", &[0; 10], &q).await.unwrap_err();
            assert!(matches!(err, StoreError::QuotaExceeded(_)), "{err}");
            s.set(&ns("a"), "k1", &[0; 2], &q).await.unwrap(); // shrink: 4 bytes
            s.set(&ns("a"), "k2", &[0; 2], &q).await.unwrap(); // 8 bytes, 2 keys
            let err = s.set(&ns("a"), "k3", b"", &q).await.unwrap_err();
            assert!(err.to_string().contains("keys"), "{err}");
            let err = s.set(&ns("a"), "big", &[0; 101], &q).await.unwrap_err();
            assert_eq!(
                err,
                StoreError::ValueTooLarge {
                    size: 101,
                    limit: 100
                }
            );
            // Nothing failed half-way: usage matches what is stored.
            assert_eq!(
                s.usage(&ns("a")).await.unwrap(),
                Usage { bytes: 8, keys: 2 }
            );
        }
    }

    backend_tests! {
        async fn compare_and_swap_semantics(s) {
            let q = Quota::default();
            let n = ns("a");
            assert!(
                s.compare_and_swap(&n, "c", None, Some(b"1"), &q)
                    .await
                    .unwrap()
            );
            assert!(
                !s.compare_and_swap(&n, "c", None, Some(b"2"), &q)
                    .await
                    .unwrap()
            );
            assert!(
                !s.compare_and_swap(&n, "c", Some(b"0"), Some(b"2"), &q)
                    .await
                    .unwrap()
            );
            assert!(
                s.compare_and_swap(&n, "c", Some(b"1"), Some(b"2"), &q)
                    .await
                    .unwrap()
            );
            assert_eq!(s.get(&n, "c").await.unwrap(), Some(b"2".to_vec()));
            assert!(
                s.compare_and_swap(&n, "c", Some(b"2"), None, &q)
                    .await
                    .unwrap()
            );
            assert_eq!(s.get(&n, "c").await.unwrap(), None);
            assert_eq!(s.usage(&n).await.unwrap(), Usage::default());
        }
    }

    backend_tests! {
        async fn bad_keys_are_refused(s) {
            let q = Quota::default();
            for key in [String::new(), "a\0b".into(), "k".repeat(513)] {
                let err = s.set(&ns("a"), &key, b"v", &q).await.unwrap_err();
                assert!(matches!(err, StoreError::InvalidKey(_)), "{err}");
            }
            s.set(&ns("a"), &"k".repeat(512), b"v", &q).await.unwrap();
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_database_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        SqliteStore::open(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        // One made readable by others (an older switchyard, a copy) is fixed.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        SqliteStore::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_database_newer_than_the_binary_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        SqliteStore::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = SqliteStore::open(&path).err().unwrap().to_string();
        assert!(err.contains("schema version 99, newer"), "{err}");
    }

    #[test]
    fn a_database_from_before_versions_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        drop(conn);
        SqliteStore::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        conn.prepare("SELECT owner, finished_at FROM jobs").unwrap();
    }

    /// Reads go to reader connections, and see every committed write.
    #[tokio::test]
    async fn readers_see_what_the_writer_committed() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        assert_eq!(db.readers.conns.len(), READERS);
        let q = Quota::default();
        for i in 0..50 {
            let key = format!("k{i}");
            db.set(&ns("a"), &key, key.as_bytes(), &q).await.unwrap();
            assert_eq!(
                db.get(&ns("a"), &key).await.unwrap().as_deref(),
                Some(key.as_bytes())
            );
        }
        assert_eq!(db.list(&ns("a"), "k", None, 100).await.unwrap().len(), 50);
    }

    #[tokio::test]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.set(&ns("a"), "k", b"v", &Quota::default()).await.unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.get(&ns("a"), "k").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(
            s.usage(&ns("a")).await.unwrap(),
            Usage { bytes: 2, keys: 1 }
        );
    }
}
