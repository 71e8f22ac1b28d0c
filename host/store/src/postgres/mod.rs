//! The shared backend: one PostgreSQL database that several daemons use at
//! once.
//!
//! Everything the embedded SQLite backend keeps is here too, with the same
//! guarantees, and the ones several processes need on top:
//!
//! - **Migrations under a lock.** The schema is versioned
//!   (`switchyard_schema`); each migration runs in a transaction that holds
//!   an advisory lock, so two daemons starting at once apply it once. A
//!   database whose schema is newer than this binary is refused with a
//!   message that says so.
//! - **Leasing across daemons.** A lease is one transaction that holds a
//!   transaction-level advisory lock while it walks the queue, and claims
//!   rows with `FOR UPDATE SKIP LOCKED`; the per-tenant limits count every
//!   daemon's running jobs. Completion is fenced by (job, attempt, owner)
//!   as in SQLite, and a running job's worker renews its lease.
//! - **Wake-ups across daemons.** A new job or a pause is announced with
//!   `NOTIFY`; each daemon listens on a connection of its own and falls
//!   back to polling while that connection is down.
//! - **TLS** through rustls, verifying the server's certificate, by
//!   default for any server not on this machine ([`PgTls`]).
//! - **Nothing secret in the database's hands.** Sealed secrets arrive
//!   encrypted by [`crate::SecretStore`]; the connection password is a
//!   [`SecretString`] and never appears in an error.
//!
//! ```no_run
//! use switchyard_store::{KvBackend, Namespace, PgSettings, PgStore, Quota};
//! # async fn demo() -> Result<(), switchyard_store::StoreError> {
//! let store = PgStore::connect(&PgSettings::new("postgres://switchyard@db.internal/switchyard")).await?;
//! store.set(&Namespace::new("acme", "echo-1"), "k", b"v", &Quota::default()).await?;
//! # Ok(()) }
//! ```

mod admin;
mod instance;
mod kv;
mod listen;
mod queue;
mod secrets;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::NoTls;

use crate::{InstanceKey, StoreError};

/// How to reach the database.
#[derive(Clone)]
pub struct PgSettings {
    /// `postgres://user@host:port/database` (key-value form works too). A
    /// password written here is used, but [`PgSettings::password`] keeps it
    /// out of configuration files.
    pub url: String,
    /// The password, when not in the URL.
    pub password: Option<SecretString>,
    /// Connections this process opens at most.
    pub pool_size: usize,
    /// Longest a statement may run (ms); 0 for the server's default.
    pub statement_timeout_ms: u64,
    /// The schema the tables live in (`public` when None). Tests use one
    /// schema each; operators may put several deployments in one database.
    pub schema: Option<String>,
    /// Whether connections are encrypted, and whom the server's
    /// certificate must be signed by.
    pub tls: PgTls,
}

/// TLS to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgTls {
    /// Unencrypted: for a server on this machine or a Unix socket.
    Off,
    /// Encrypted, and the server's certificate must be valid for the host
    /// named in the URL and signed by a public authority (webpki's roots),
    /// an authority this system trusts, or one in `ca_file` (PEM).
    Verify {
        /// Extra authorities, e.g. a cloud provider's database CA bundle.
        ca_file: Option<std::path::PathBuf>,
    },
}

impl PgTls {
    /// What a URL gets by default: off for a server on this machine
    /// (loopback or a Unix socket), verified for any other host.
    pub fn default_for(url: &str) -> Self {
        let local = url.parse::<tokio_postgres::Config>().is_ok_and(|c| {
            c.get_hosts().iter().all(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => {
                    h == "localhost"
                        || h.trim_matches(['[', ']'])
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback())
                }
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(_) => true,
            })
        });
        if local {
            Self::Off
        } else {
            Self::Verify { ca_file: None }
        }
    }

    /// The connector for these settings.
    fn connector(&self) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, StoreError> {
        let Self::Verify { ca_file } = self else {
            return Ok(None);
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // The system's store may be missing or partly unreadable; what it
        // has is added, and webpki's roots are there regardless.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = ca_file {
            use rustls_pki_types::pem::PemObject;
            let bad = |why: String| {
                StoreError::Backend(format!(
                    "PostgreSQL TLS: the CA file {}: {why}",
                    path.display()
                ))
            };
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("holds no PEM certificate".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Backend(format!("PostgreSQL TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
    }
}

impl PgSettings {
    /// Settings for `url` with the defaults: 16 connections, 30 s
    /// statements, the `public` schema.
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        Self {
            url: url.clone(),
            password: None,
            pool_size: 16,
            statement_timeout_ms: 30_000,
            schema: None,
            tls: PgTls::default_for(&url),
        }
    }
}

impl PgSettings {
    /// What is wrong with these settings, as `(field, why)`, without
    /// connecting: a connection string that does not parse, no pool, a
    /// schema name that is not a plain identifier.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Err(e) = self.url.parse::<tokio_postgres::Config>() {
            out.push(("url", format!("is not a PostgreSQL connection string: {e}")));
        }
        if self.pool_size == 0 {
            out.push(("pool_size", "must be at least 1".into()));
        }
        if let Some(s) = &self.schema
            && let Err(e) = check_schema_name(s)
        {
            out.push(("schema", e.to_string()));
        }
        out
    }
}

/// Whether a connection string carries a password.
pub fn url_has_password(url: &str) -> bool {
    url.parse::<tokio_postgres::Config>()
        .is_ok_and(|c| c.get_password().is_some())
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("target", &describe_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("schema", &self.schema)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// `host:port/database` of a connection string, for messages: never the
/// user's password.
pub fn describe_url(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => {
            let host = c
                .get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    #[cfg(unix)]
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_else(|| "localhost".into());
            let port = c.get_ports().first().copied().unwrap_or(5432);
            format!(
                "{host}:{port}/{}",
                c.get_dbname().unwrap_or("(default database)")
            )
        }
        Err(_) => "(an unreadable connection string)".into(),
    }
}

/// The payloads sent on the channel.
const JOBS: &str = "jobs";
const PAUSES: &str = "pauses";
const CONFIGS: &str = "configs";

/// Starts the task that sends `jobs` for webhook deliveries, after they
/// committed. A `NOTIFY` serialises the commits of every transaction that
/// sends one (PostgreSQL holds a database-wide lock from the notification
/// until the commit), so deliveries do not send it themselves: they poke
/// this task, which sends one notification at a time, in a transaction of
/// its own, and folds every poke that arrives meanwhile into the next one.
/// A daemon therefore sends at most one `jobs` per round trip however fast
/// deliveries arrive, and listeners still hear of every job after it
/// committed. The task ends when the last store clone is dropped.
fn announcer(
    pool: deadpool_postgres::Pool,
    channel: std::sync::Arc<str>,
) -> tokio::sync::mpsc::Sender<()> {
    // One slot: a poke while one is pending is already covered by it.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            let sent = match pool.get().await {
                Ok(c) => c
                    .execute("SELECT pg_notify($1, $2)", &[&&*channel, &JOBS])
                    .await
                    .map(drop)
                    .map_err(|e| pg_error(&e)),
                Err(e) => Err(pool_error(&e)),
            };
            if let Err(e) = sent {
                // The other daemons' workers find the jobs by polling.
                tracing::warn!(error = %e, "announcing queued jobs to the other daemons");
            }
        }
    });
    tx
}

impl PgStore {
    /// Tells the other daemons, soon, that jobs were queued (see
    /// `announcer`).
    fn announce_jobs(&self) {
        // Full: an announcement is already due, and covers this job too.
        let _ = self.announce.try_send(());
    }
}

/// The longest wait for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// The PostgreSQL backend. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    target: Arc<str>,
    /// Where this process's last lease stopped (round-robin across
    /// instances, as in SQLite; each daemon keeps its own).
    lease_cursor: Arc<Mutex<Option<InstanceKey>>>,
    /// How to open the listening connection (see `listen`).
    config: Arc<tokio_postgres::Config>,
    /// TLS for that connection, as for the pool's.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// The `LISTEN/NOTIFY` channel of this deployment (one per schema).
    channel: Arc<str>,
    /// Asks the announcer task to tell the other daemons that jobs were
    /// queued (see `announcer`).
    announce: tokio::sync::mpsc::Sender<()>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgStore({})", self.target)
    }
}

/// A schema name: letters, digits and `_`, not starting with a digit, so
/// it can be put in SQL without quoting doubts.
fn check_schema_name(s: &str) -> Result<(), StoreError> {
    let ok = !s.is_empty()
        // The notification channel is `switchyard_<schema>`, and channel
        // names are identifiers of at most 63 bytes.
        && s.len() <= 52
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "schema name `{s}` is not allowed: use letters, digits and _ (at most 52, not starting with a digit)"
        )))
    }
}

impl PgStore {
    /// Connects, creates the schema if needed and applies the migrations
    /// this database has not seen (under a lock, so daemons starting
    /// together apply each once).
    pub async fn connect(s: &PgSettings) -> Result<Self, StoreError> {
        let store = Self::connect_only(s).await?;
        if let Some(schema) = &s.schema {
            store.create_schema(schema).await?;
        }
        store.migrate().await?;
        Ok(store)
    }

    /// Connects and changes nothing (`switchyard migrate --check`, `check`):
    /// a schema that does not exist yet reads as version 0.
    pub async fn connect_only(s: &PgSettings) -> Result<Self, StoreError> {
        let target = describe_url(&s.url);
        let mut pg: tokio_postgres::Config = s.url.parse().map_err(|e| {
            StoreError::Backend(format!(
                "the PostgreSQL connection string is not valid: {e}"
            ))
        })?;
        if let Some(p) = &s.password {
            pg.password(p.expose_secret().as_bytes());
        }
        if pg.get_application_name().is_none() {
            pg.application_name("switchyard");
        }
        let mut options = String::new();
        if s.statement_timeout_ms > 0 {
            options.push_str(&format!("-c statement_timeout={}", s.statement_timeout_ms));
        }
        if let Some(schema) = &s.schema {
            check_schema_name(schema)?;
            options.push_str(&format!(" -c search_path={schema}"));
        }
        if !options.is_empty() {
            pg.options(options.trim());
        }
        pg.connect_timeout(Duration::from_secs(10));
        // A dead peer is noticed within a minute (30 s idle, then three
        // probes 10 s apart), not the kernel's two hours and more: the
        // listening connection is otherwise silent.
        pg.keepalives_idle(Duration::from_secs(30));
        pg.keepalives_interval(Duration::from_secs(10));
        pg.keepalives_retries(3);
        let channel = format!("switchyard_{}", s.schema.as_deref().unwrap_or("public"));
        let tls = s.tls.connector()?;
        if tls.is_some() {
            pg.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let mgr = match &tls {
            Some(t) => Manager::from_config(pg.clone(), t.clone(), manager_config),
            None => Manager::from_config(pg.clone(), NoTls, manager_config),
        };
        let pool = Pool::builder(mgr)
            .max_size(s.pool_size.max(1))
            // A wait for a free connection fails, naming the pool, rather
            // than hanging: the pool is too small or the server stuck.
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Backend(format!("PostgreSQL pool: {e}")))?;
        let channel: Arc<str> = channel.into();
        let announce = announcer(pool.clone(), channel.clone());
        let store = Self {
            pool,
            target: target.into(),
            lease_cursor: Arc::default(),
            config: Arc::new(pg),
            tls,
            channel,
            announce,
        };
        // Reach the server now, so that a wrong address is reported at
        // start-up and not at the first request.
        drop(store.conn().await?);
        Ok(store)
    }

    /// Creates `schema` if it is missing.
    async fn create_schema(&self, schema: &str) -> Result<(), StoreError> {
        let doing = "creating the schema";
        let mut c = self.conn().await?;
        // `IF NOT EXISTS` alone races when daemons start together.
        let tx = c.transaction().await.map_err(|e| self.fail(doing, e))?;
        tx.exec(
            "SELECT pg_advisory_xact_lock(hashtext('switchyard-schema:' || $1::text))",
            &[&schema],
        )
        .await
        .map_err(|e| self.fail(doing, e))?;
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await
            .map_err(|e| self.fail(doing, e))?;
        tx.commit().await.map_err(|e| self.fail(doing, e))
    }

    /// Closes the pool: its connections end as they come back.
    pub fn close(&self) {
        self.pool.close();
    }

    /// A pooled connection.
    async fn conn(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            StoreError::Backend(format!(
                "cannot reach PostgreSQL at {}: {}",
                self.target,
                pool_error(&e)
            ))
        })
    }

    /// A driver error, with what was being done.
    fn fail(&self, doing: &str, e: tokio_postgres::Error) -> StoreError {
        StoreError::Backend(format!(
            "PostgreSQL ({}), {doing}: {}",
            self.target,
            pg_error(&e)
        ))
    }

    /// `(schema version of the database, newest this binary knows)`.
    pub async fn schema_version(&self) -> Result<(usize, usize), StoreError> {
        let c = self.conn().await?;
        let have = current_version(&c)
            .await
            .map_err(|e| self.fail("reading the schema version", e))?;
        Ok((have, MIGRATIONS.len()))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        loop {
            let tx = c
                .transaction()
                .await
                .map_err(|e| self.fail("migrating", e))?;
            // Held until this transaction ends: a second daemon waits here,
            // then finds the migration applied.
            tx.exec(
                "SELECT pg_advisory_xact_lock(hashtext('switchyard-migrate:' || current_schema()))",
                &[],
            )
            .await
            .map_err(|e| self.fail("waiting for the migration lock", e))?;
            let have = current_version(&tx)
                .await
                .map_err(|e| self.fail("reading the schema version", e))?;
            if have > MIGRATIONS.len() {
                return Err(StoreError::Backend(format!(
                    "the database at {} has schema version {have}, newer than this switchyard \
                     knows ({}); run the newer switchyard, or restore a backup made for this one",
                    self.target,
                    MIGRATIONS.len()
                )));
            }
            let Some(sql) = MIGRATIONS.get(have) else {
                return Ok(());
            };
            tx.batch_execute(sql)
                .await
                .map_err(|e| self.fail(&format!("migrating to schema {}", have + 1), e))?;
            tx.exec(
                "INSERT INTO switchyard_schema (version, applied_at)
                 VALUES ($1, (extract(epoch from now()) * 1000)::bigint)",
                &[&((have + 1) as i64)],
            )
            .await
            .map_err(|e| self.fail("recording the schema version", e))?;
            tx.commit()
                .await
                .map_err(|e| self.fail(&format!("migrating to schema {}", have + 1), e))?;
        }
    }
}

/// The schema version recorded in the database (0: none yet).
async fn current_version(
    c: &impl deadpool_postgres::GenericClient,
) -> Result<usize, tokio_postgres::Error> {
    let exists: bool = c
        .row("SELECT to_regclass('switchyard_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let v: Option<i64> = c
        .row("SELECT max(version) FROM switchyard_schema", &[])
        .await?
        .get(0);
    Ok(v.unwrap_or(0) as usize)
}

fn pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(e),
        deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => format!(
            "no pooled connection came free within {} s: every one is busy \
             (a larger [storage] pool_size, or a slow server)",
            POOL_WAIT.as_secs()
        ),
        other => other.to_string(),
    }
}

/// The server's own message when there is one (the driver's `Display` says
/// only "db error"), with its SQLSTATE.
fn pg_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    }
}

/// Queries through the connection's statement cache. A query given as
/// text is parsed by the server at every call, a round trip of its own
/// before the one that runs it; a cached statement is parsed once per
/// pooled connection. Every query of this backend goes through these.
#[async_trait::async_trait]
pub(super) trait Cached: deadpool_postgres::GenericClient {
    /// `execute`, cached.
    async fn exec(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let st = self.prepare_cached(sql).await?;
        self.execute(&st, params).await
    }

    /// `query`, cached.
    async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let st = self.prepare_cached(sql).await?;
        self.query(&st, params).await
    }

    /// `query_opt`, cached.
    async fn row_opt(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
        let st = self.prepare_cached(sql).await?;
        self.query_opt(&st, params).await
    }

    /// `query_one`, cached.
    async fn row(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
        let st = self.prepare_cached(sql).await?;
        self.query_one(&st, params).await
    }
}

impl<T: deadpool_postgres::GenericClient + ?Sized> Cached for T {}

/// Runs `$body` with `$tx` a transaction of a pooled connection of
/// `$store`, committing when the body returns `Ok`.
macro_rules! in_tx {
    ($store:expr, $doing:expr, |$tx:ident| $body:expr) => {{
        let store = $store;
        let mut conn = store.conn().await?;
        let $tx = conn
            .transaction()
            .await
            .map_err(|e| store.fail($doing, e))?;
        let out = $body;
        $tx.commit().await.map_err(|e| store.fail($doing, e))?;
        out
    }};
}
pub(crate) use in_tx;

/// The schema's versions, oldest first; each runs once, in a transaction.
const MIGRATIONS: &[&str] = &[SCHEMA_V1, SCHEMA_V2, SCHEMA_V3];

/// The schema of the SQLite backend at its version 5, in PostgreSQL's
/// types: times are milliseconds (`bigint`) except `audit.time`,
/// `seen_events.seen_at`, `api_tokens.created_at` and `secrets.updated_at`,
/// which are seconds as in SQLite.
const SCHEMA_V1: &str = "
CREATE TABLE switchyard_schema (
    version    bigint PRIMARY KEY,
    applied_at bigint NOT NULL
);
CREATE TABLE kv (
    tenant   text NOT NULL,
    instance text NOT NULL,
    key      bytea NOT NULL,
    value    bytea NOT NULL,
    PRIMARY KEY (tenant, instance, key)
);
CREATE TABLE kv_usage (
    tenant   text NOT NULL,
    instance text NOT NULL,
    bytes    bigint NOT NULL,
    keys     bigint NOT NULL,
    PRIMARY KEY (tenant, instance)
);
CREATE TABLE tenant_keys (
    tenant  text PRIMARY KEY,
    wrapped bytea NOT NULL
);
CREATE TABLE api_tokens (
    hash       bytea PRIMARY KEY,
    id         text NOT NULL,
    tenant     text NOT NULL,
    label      text NOT NULL,
    created_at bigint NOT NULL
);
CREATE TABLE audit (
    seq         bigserial PRIMARY KEY,
    time        bigint NOT NULL,
    tenant      text NOT NULL,
    instance    text,
    actor       text,
    kind        text NOT NULL,
    what        text NOT NULL,
    outcome     text NOT NULL,
    duration_ms bigint NOT NULL,
    request_id  text NOT NULL
);
CREATE INDEX audit_by_tenant ON audit (tenant, seq);
CREATE INDEX audit_by_time ON audit (time);
CREATE TABLE schedules (
    tenant      text NOT NULL,
    instance    text NOT NULL,
    job         text NOT NULL,
    interval_ms bigint NOT NULL,
    next_run    bigint NOT NULL,
    last_fired  bigint,
    PRIMARY KEY (tenant, instance, job)
);
CREATE TABLE run_stats (
    tenant        text NOT NULL,
    instance      text NOT NULL,
    kind          text NOT NULL,
    name          text NOT NULL,
    runs          bigint NOT NULL,
    errors        bigint NOT NULL,
    last_run      bigint NOT NULL,
    last_outcome  text NOT NULL,
    last_error    text,
    last_error_at bigint,
    last_summary  text,
    PRIMARY KEY (tenant, instance, kind, name)
);
CREATE TABLE instance_state (
    tenant   text NOT NULL,
    instance text NOT NULL,
    paused   boolean NOT NULL,
    PRIMARY KEY (tenant, instance)
);
CREATE TABLE seen_events (
    tenant   text NOT NULL,
    instance text NOT NULL,
    key      text NOT NULL,
    seen_at  bigint NOT NULL,
    PRIMARY KEY (tenant, instance, key)
);
CREATE INDEX seen_events_by_time ON seen_events (seen_at);
CREATE TABLE jobs (
    id              bigserial PRIMARY KEY,
    tenant          text NOT NULL,
    instance        text NOT NULL,
    kind            text NOT NULL,
    name            text NOT NULL,
    payload         bytea NOT NULL,
    idempotency_key text,
    state           text NOT NULL,
    attempts        bigint NOT NULL,
    max_attempts    bigint NOT NULL,
    run_after       bigint NOT NULL,
    lease_until     bigint,
    last_error      text,
    created_at      bigint NOT NULL,
    owner           text,
    finished_at     bigint,
    summary         text,
    UNIQUE (tenant, instance, idempotency_key)
);
CREATE INDEX jobs_by_instance ON jobs (state, tenant, instance, run_after, id);
CREATE INDEX jobs_due ON jobs (run_after) WHERE state = 'queued';
CREATE INDEX jobs_running ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_done ON jobs (finished_at) WHERE state = 'done';
CREATE TABLE secrets (
    tenant     text NOT NULL,
    name       text NOT NULL,
    sealed     bytea NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE plugin_locks (
    tenant    text NOT NULL,
    instance  text NOT NULL,
    plugin    text NOT NULL,
    version   text NOT NULL,
    digest    text NOT NULL,
    locked_at bigint NOT NULL,
    PRIMARY KEY (tenant, instance)
);
";

/// As SQLite's version 6: a token's role, and API-managed tenants.
const SCHEMA_V2: &str = "
ALTER TABLE api_tokens ADD COLUMN role text NOT NULL DEFAULT 'api';
CREATE TABLE tenant_configs (
    tenant     text NOT NULL,
    version    bigint NOT NULL,
    text       text NOT NULL,
    author     text NOT NULL,
    comment    text NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (tenant, version)
);
CREATE TABLE console_sessions (
    hash       bytea PRIMARY KEY,
    token_hash bytea NOT NULL,
    csrf       text NOT NULL,
    expires_at bigint NOT NULL
);
";

/// As SQLite's version 7: which plugin version each instance's storage was
/// last brought up to date for, and who runs its migration step now.
const SCHEMA_V3: &str = "
CREATE TABLE kv_versions (
    tenant      text NOT NULL,
    instance    text NOT NULL,
    plugin      text NOT NULL,
    version     text NOT NULL,
    recorded_at bigint NOT NULL,
    PRIMARY KEY (tenant, instance)
);
CREATE TABLE kv_migrations (
    tenant   text NOT NULL,
    instance text NOT NULL,
    owner    text NOT NULL,
    until_ms bigint NOT NULL,
    PRIMARY KEY (tenant, instance)
);
";

/// Seconds since the epoch, as the server sees it.
const NOW_SECS: &str = "extract(epoch from now())::bigint";

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::Cached;
    use crate::testing::TestPg;
    use crate::{JobQueue, LeaseRequest, NewJob, PgSettings, PgStore, TenantConcurrency};

    fn job(tenant: &str) -> NewJob {
        NewJob {
            tenant: tenant.into(),
            instance: "i".into(),
            kind: "webhook".into(),
            name: "events".into(),
            payload: b"{}".to_vec(),
            idempotency_key: None,
            max_attempts: 3,
        }
    }

    async fn lease(db: &PgStore, owner: &str, now: i64, limit: usize, per: usize) -> usize {
        let skip = BTreeSet::new();
        db.lease(
            now,
            LeaseRequest {
                owner,
                lease_ms: 1000,
                limit,
                per_tenant: &TenantConcurrency::uniform(per),
                skip: &skip,
            },
        )
        .await
        .unwrap()
        .len()
    }

    /// A daemon starting beside others must not take their running jobs:
    /// only leases that have expired are queued again.
    #[tokio::test]
    async fn a_starting_daemon_reclaims_only_expired_leases() {
        let pg = TestPg::new().await;
        let db = &pg.store;
        db.enqueue(job("acme"), 0).await.unwrap();
        assert_eq!(lease(db, "a", 0, 1, 1).await, 1);
        assert_eq!(
            db.reclaim_running_jobs(500).await.unwrap(),
            0,
            "still leased"
        );
        assert_eq!(db.reclaim_running_jobs(1001).await.unwrap(), 1, "expired");
        pg.close(&[]).await;
    }

    /// Two daemons (two pools on one database) leasing at once never get
    /// the same job, and together keep a tenant's limit.
    #[tokio::test]
    async fn daemons_sharing_a_database_split_the_queue() {
        let pg = TestPg::new().await;
        let other = PgStore::connect(&TestPg::settings(&pg.schema))
            .await
            .unwrap();
        for _ in 0..40 {
            pg.store.enqueue(job("acme"), 0).await.unwrap();
        }
        let (a, b) = tokio::join!(
            lease(&pg.store, "a", 0, 40, 25),
            lease(&other, "b", 0, 40, 25)
        );
        assert_eq!(a + b, 25, "the tenant's limit holds across both: {a} + {b}");
        let running = pg.store.queue_counts("acme", "i").await.unwrap().1;
        assert_eq!(running, 25);
        other.close();
        pg.close(&[]).await;
    }

    /// Issue 20: a daemon hears the jobs and pauses another one makes, and
    /// after its listening connection is cut, it reconnects, says it may
    /// have missed something, and hears again.
    #[tokio::test]
    async fn daemons_hear_each_others_jobs_and_pauses_across_reconnects() {
        use crate::{Change, InstanceStore};
        let pg = TestPg::new().await;
        let other = PgStore::connect(&TestPg::settings(&pg.schema))
            .await
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let _watching = pg
            .store
            .watch(Box::new(move |c| {
                let _ = tx.send(c);
            }))
            .expect("PostgreSQL announces changes");
        let next = async |rx: &mut tokio::sync::mpsc::UnboundedReceiver<Change>| {
            tokio::time::timeout(std::time::Duration::from_secs(20), rx.recv())
                .await
                .expect("a change within 20 s")
                .unwrap()
        };
        assert_eq!(next(&mut rx).await, Change::Missed, "connected");
        other.enqueue(job("acme"), 0).await.unwrap();
        assert_eq!(next(&mut rx).await, Change::JobsQueued);
        // A duplicate adds no job and wakes nobody: the pause comes next.
        let mut keyed = job("acme");
        keyed.idempotency_key = Some("k".into());
        other.enqueue(keyed.clone(), 0).await.unwrap();
        assert_eq!(next(&mut rx).await, Change::JobsQueued);
        other.enqueue(keyed, 0).await.unwrap();
        other.set_paused("acme", "i", true).await.unwrap();
        assert_eq!(next(&mut rx).await, Change::PausesChanged);

        // Cut the listening connection, as a restarted server or a broken
        // network would.
        let c = pg.store.conn().await.unwrap();
        let cut = c
            .exec(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE query = $1",
                &[&format!("LISTEN \"switchyard_{}\"", pg.schema)],
            )
            .await
            .unwrap();
        assert_eq!(cut, 1, "one listening connection");
        drop(c);
        assert_eq!(next(&mut rx).await, Change::Missed, "reconnected");
        other.enqueue(job("acme"), 0).await.unwrap();
        assert_eq!(next(&mut rx).await, Change::JobsQueued);
        other.close();
        pg.close(&[]).await;
    }

    /// Issue 20: three daemons whose schedulers look at the same due slot
    /// at the same moment, slot after slot: each slot queues one run, and
    /// the other two are told it already fired.
    #[tokio::test]
    async fn three_daemons_fire_each_slot_once() {
        use crate::{Fired, InstanceStore, WantedSchedule};
        let pg = TestPg::new().await;
        let others = [
            PgStore::connect(&TestPg::settings(&pg.schema))
                .await
                .unwrap(),
            PgStore::connect(&TestPg::settings(&pg.schema))
                .await
                .unwrap(),
        ];
        let daemons = [&pg.store, &others[0], &others[1]];
        let wanted = WantedSchedule {
            tenant: "acme".into(),
            instance: "i".into(),
            job: "tick".into(),
            interval_ms: 60_000,
        };
        // Each starts and syncs the same schedules.
        for d in daemons {
            d.sync_schedules(vec![wanted.clone()], 0).await.unwrap();
        }
        const SLOTS: i64 = 20;
        for slot in 0..SLOTS {
            let now = slot * 60_000;
            let mut due = Vec::new();
            for d in daemons {
                due.push(d.due_schedules(now).await.unwrap().remove(0));
            }
            let (a, b, c) = tokio::join!(
                daemons[0].fire_schedule(&due[0], 3, now),
                daemons[1].fire_schedule(&due[1], 3, now),
                daemons[2].fire_schedule(&due[2], 3, now),
            );
            let fired = [a.unwrap(), b.unwrap(), c.unwrap()];
            let queued = fired
                .iter()
                .filter(|f| matches!(f, Fired::Queued(_)))
                .count();
            let already = fired.iter().filter(|f| **f == Fired::AlreadyFired).count();
            assert_eq!((queued, already), (1, 2), "slot {slot}: {fired:?}");
            // The run finishes before the next slot.
            crate::testing::finish_all(&pg.store, now).await;
        }
        let runs = pg.store.list_jobs("acme", None, 100).await.unwrap();
        assert_eq!(runs.len() as i64, SLOTS, "one run per slot");
        for o in others {
            o.close();
        }
        pg.close(&[]).await;
    }

    /// A pause recorded in the database holds for every daemon's leases,
    /// whatever a daemon has cached.
    #[tokio::test]
    async fn a_paused_instance_is_not_leased_by_any_daemon() {
        use crate::InstanceStore;
        let pg = TestPg::new().await;
        pg.store.enqueue(job("acme"), 0).await.unwrap();
        pg.store.set_paused("acme", "i", true).await.unwrap();
        assert_eq!(lease(&pg.store, "a", 0, 10, 10).await, 0);
        pg.store.set_paused("acme", "i", false).await.unwrap();
        assert_eq!(lease(&pg.store, "a", 0, 10, 10).await, 1);
        pg.close(&[]).await;
    }

    /// Two daemons starting at once against an empty schema migrate it
    /// once; a schema newer than the binary is refused, saying so.
    #[tokio::test]
    async fn migrations_run_once_and_a_newer_schema_is_refused() {
        let pg = TestPg::new().await;
        let fresh = format!("{}_m", pg.schema);
        let s = TestPg::settings(&fresh);
        let (a, b) = tokio::join!(PgStore::connect(&s), PgStore::connect(&s));
        let (a, b) = (a.unwrap(), b.unwrap());
        let (have, known) = a.schema_version().await.unwrap();
        assert_eq!(have, known);
        let c = a.conn().await.unwrap();
        c.exec(
            "INSERT INTO switchyard_schema (version, applied_at) VALUES ($1, 0)",
            &[&((known + 1) as i64)],
        )
        .await
        .unwrap();
        drop(c);
        let e = PgStore::connect(&s).await.unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "schema version {}, newer than this switchyard",
                known + 1
            )),
            "{e}"
        );
        a.close();
        b.close();
        pg.close(&[&fresh]).await;
    }

    /// A server that does not answer is reported at connect time, naming
    /// it, and without the password.
    #[tokio::test]
    async fn an_unreachable_server_is_named_without_its_password() {
        let mut s = PgSettings::new("postgres://switchyard:hunter2@127.0.0.1:1/db");
        s.pool_size = 1;
        let e = PgStore::connect(&s).await.unwrap_err().to_string();
        assert!(
            e.contains("cannot reach PostgreSQL at 127.0.0.1:1/db"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn tls_is_verified_by_default_except_on_this_machine() {
        use super::PgTls;
        for local in [
            "postgres://u@127.0.0.1:5432/db",
            "postgres://u@localhost/db",
            "postgres://u@[::1]:5432/db",
            "host=/var/run/postgresql user=u",
        ] {
            assert_eq!(PgTls::default_for(local), PgTls::Off, "{local}");
        }
        for remote in [
            "postgres://u@db.internal/db",
            "postgres://u@10.0.0.5/db",
            "host=localhost,db.internal user=u",
        ] {
            assert!(
                matches!(PgTls::default_for(remote), PgTls::Verify { ca_file: None }),
                "{remote}"
            );
        }
    }

    /// This machine's server speaks TLS with a self-signed certificate for
    /// `localhost` (Debian's snakeoil one, which the system's store in
    /// /etc/ssl/certs also trusts): the connection is encrypted; for
    /// another name it is refused, saying why; a CA file that cannot be
    /// read or holds no certificate is named.
    #[tokio::test]
    async fn tls_connects_only_to_a_server_it_can_verify() {
        use super::PgTls;
        const CA: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
        let base: tokio_postgres::Config = crate::testing::postgres_url().parse().unwrap();
        let at = |host: &str, ca: Option<&str>| {
            let mut s = PgSettings::new(format!(
                "host={host} port={} user={} dbname={}",
                base.get_ports().first().copied().unwrap_or(5432),
                base.get_user().unwrap_or("postgres"),
                base.get_dbname().unwrap_or("test"),
            ));
            s.pool_size = 1;
            s.tls = PgTls::Verify {
                ca_file: ca.map(Into::into),
            };
            s
        };
        let db = PgStore::connect_only(&at("localhost", Some(CA)))
            .await
            .unwrap();
        let c = db.conn().await.unwrap();
        let encrypted: bool = c
            .row(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(encrypted);
        drop(c);
        db.close();

        let e = PgStore::connect_only(&at("127.0.0.1", Some(CA)))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("certificate not valid for name \"127.0.0.1\""),
            "{e}"
        );
        let e = PgStore::connect_only(&at("localhost", Some("/nonexistent/ca.pem")))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("the CA file /nonexistent/ca.pem"), "{e}");
        let junk = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(junk.path(), "not a certificate\n").unwrap();
        let e = PgStore::connect_only(&at("localhost", junk.path().to_str()))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds no PEM certificate"), "{e}");
    }
}
