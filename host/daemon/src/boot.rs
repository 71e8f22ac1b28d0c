//! Starting up: the wasm runtime with its compile cache, the configuration,
//! and the state backend with the secret store. Shared by the commands and
//! the demo.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use switchyard_runtime::{Runtime, RuntimeConfig};
use switchyard_store::{
    MasterKey, PgSettings, PgStore, SecretError, SecretStore, SqliteStore, describe_url,
};

use crate::config::secrets::Resolver;
use crate::config::{Config, StorageConfig, pg_tls, storage_password_rules};
use crate::problem;
use crate::state::Db;

/// Where compiled components are cached between CLI runs: a directory of
/// this user's (the runtime refuses one that others can write).
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SWITCHYARD_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    match base {
        Some(base) => base.join("switchyard").join("compiled"),
        None => std::env::temp_dir().join("switchyard-compiled"),
    }
}

/// Wasm slots of a one-shot command (`check`, `invoke`, `plugin run`).
pub const CLI_SLOTS: u32 = 4;

/// The wasm runtime with `slots` invocations at once (see
/// [`Config::wasm_slots`]), and the on-disk compile cache.
pub fn runtime(slots: u32) -> anyhow::Result<Runtime> {
    runtime_with_clock(slots, switchyard_runtime::Clock::default())
}

/// [`runtime`] whose plugins read `clock`.
pub fn runtime_with_clock(slots: u32, clock: switchyard_runtime::Clock) -> anyhow::Result<Runtime> {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache_dir()),
        max_concurrent_invocations: slots,
        clock,
        ..RuntimeConfig::default()
    })
    .map_err(|e| anyhow::anyhow!("starting the wasm runtime: {e:#}"))
}

/// Shifts the plugins' clock (their WASI wall clock and the token cache's
/// clock) this many seconds ahead. For tests and drills of date-driven
/// plugin behaviour (an approval that expires after 14 days) without
/// waiting; the daemon's own schedule and records keep the real time.
/// `serve` honours it in development mode only.
pub const CLOCK_OFFSET_ENV: &str = "SWITCHYARD_TEST_CLOCK_OFFSET_SECS";

/// The plugins' clock for `serve`: the system's, moved ahead by
/// [`CLOCK_OFFSET_ENV`] when it is set, which production mode refuses.
pub fn clock_from_env(mode: crate::config::Mode) -> anyhow::Result<switchyard_runtime::Clock> {
    let clock = switchyard_runtime::Clock::default();
    if let Ok(v) = std::env::var(CLOCK_OFFSET_ENV) {
        if mode == crate::config::Mode::Production {
            anyhow::bail!(
                "{CLOCK_OFFSET_ENV} is set, but the configuration is in production mode; \
                 the plugins' clock may be moved in development mode only (mode = \"development\")"
            );
        }
        let secs: u64 = v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{CLOCK_OFFSET_ENV}: `{v}` is not a number of seconds"))?;
        tracing::warn!(
            offset_secs = secs,
            "{CLOCK_OFFSET_ENV} is set: plugins see a clock this far ahead"
        );
        clock.advance(std::time::Duration::from_secs(secs));
    }
    Ok(clock)
}

/// Loads a configuration directory, failing with every problem in it.
///
/// Tenant files with problems do not stop a command that concerns other
/// tenants: their tenants are left out and the problems are printed to
/// standard error. Only an unusable `switchyard.toml` is an error.
pub fn load_config(dir: &Path) -> anyhow::Result<Config> {
    let (cfg, problems) = Config::parse(dir).map_err(|problems| {
        anyhow::anyhow!(
            "invalid configuration (run `switchyard check`):\n{}",
            problem::render(&problems)
        )
    })?;
    let errors: Vec<_> = problems.iter().filter(|p| p.is_error()).cloned().collect();
    if !errors.is_empty() {
        eprintln!(
            "warning: problems in the configuration (run `switchyard check`):\n{}",
            problem::render(&errors)
        );
    }
    Ok(cfg)
}

/// The environment variable that may hold the master key.
const MASTER_KEY_VAR: &str = "SWITCHYARD_MASTER_KEY";

/// During a master key rotation, the key being replaced: in this variable,
/// or in this file of the data directory. Never created.
pub const PREVIOUS_VAR: &str = "SWITCHYARD_MASTER_KEY_PREVIOUS";
/// See [`PREVIOUS_VAR`].
pub const PREVIOUS_FILE: &str = "master.key.previous";

/// The secret store over `db`: the master key, and the previous one if a
/// rotation is in progress.
fn secret_store(cfg: &Config, db: Db) -> Result<SecretStore, SecretError> {
    let master = MasterKey::from_env_or_file(MASTER_KEY_VAR, &cfg.data_dir.join("master.key"))?;
    let previous =
        MasterKey::optional_from_env_or_file(PREVIOUS_VAR, &cfg.data_dir.join(PREVIOUS_FILE))?;
    Ok(SecretStore::new(db, master).with_previous(previous))
}

/// Opens the configured state backend and the secret store, whose master
/// key comes from `SWITCHYARD_MASTER_KEY` or `<data_dir>/master.key`
/// (created 0600 on first use).
pub async fn open_state(cfg: &Config) -> anyhow::Result<(Db, SecretStore)> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let db: Db = match &cfg.storage {
        StorageConfig::Sqlite { path } => Arc::new(SqliteStore::open(&cfg.data_dir.join(path))?),
        StorageConfig::Postgres { .. } => Arc::new(
            PgStore::connect(&postgres_settings(cfg).await?)
                .await
                .context("opening the PostgreSQL state database ([storage] in switchyard.toml)")?,
        ),
    };
    let secrets = secret_store(cfg, db.clone())?;
    Ok((db, secrets))
}

/// The PostgreSQL settings of `[storage]`, its password resolved.
pub async fn postgres_settings(cfg: &Config) -> anyhow::Result<PgSettings> {
    let StorageConfig::Postgres {
        url,
        password,
        pool_size,
        statement_timeout_ms,
        schema,
        tls,
        ca_file,
    } = &cfg.storage
    else {
        anyhow::bail!("[storage] is not PostgreSQL");
    };
    let mut s = PgSettings::new(url.clone());
    s.pool_size = *pool_size;
    s.statement_timeout_ms = *statement_timeout_ms;
    s.schema = schema.clone();
    s.tls = pg_tls(url, tls.as_deref(), ca_file.as_deref(), &cfg.dir)
        .map_err(|(field, why)| anyhow::anyhow!("{field}: {why}"))?;
    if let Some(p) = password {
        let resolver = Resolver {
            base: cfg.dir.clone(),
            store: None,
            allowed: storage_password_rules(cfg.mode),
        };
        s.password = Some(resolver.resolve(p, "storage.password").await?);
    }
    Ok(s)
}

/// The state backend and secret store of an existing state database, for
/// reading only what is there (`check`): nothing is created. Fails saying
/// why there is none.
pub async fn existing_state(cfg: &Config) -> Result<(Db, SecretStore), String> {
    let key_path = cfg.data_dir.join("master.key");
    let no_key = || {
        format!(
            "there is no master key (${MASTER_KEY_VAR} or {})",
            key_path.display()
        )
    };
    let db: Db = match &cfg.storage {
        StorageConfig::Sqlite { path } => {
            let db_path = cfg.data_dir.join(path);
            if !db_path.is_file() {
                return Err(format!(
                    "there is no state database at {} yet (`switchyard secret set` creates it)",
                    db_path.display()
                ));
            }
            if std::env::var_os(MASTER_KEY_VAR).is_none() && !key_path.is_file() {
                return Err(no_key());
            }
            Arc::new(
                SqliteStore::open(&db_path).map_err(|e| format!("{}: {e}", db_path.display()))?,
            )
        }
        StorageConfig::Postgres { .. } => {
            if std::env::var_os(MASTER_KEY_VAR).is_none() && !key_path.is_file() {
                return Err(no_key());
            }
            let settings = postgres_settings(cfg).await.map_err(|e| format!("{e:#}"))?;
            let store = PgStore::connect_only(&settings)
                .await
                .map_err(|e| e.to_string())?;
            let (have, known) = store.schema_version().await.map_err(|e| e.to_string())?;
            if have == 0 {
                return Err(format!(
                    "the PostgreSQL database at {} has no switchyard tables yet (`switchyard serve` creates them)",
                    describe_url(&settings.url)
                ));
            }
            if have > known {
                return Err(format!(
                    "the PostgreSQL database has schema version {have}, newer than this switchyard knows ({known})"
                ));
            }
            Arc::new(store)
        }
    };
    let secrets = secret_store(cfg, db.clone()).map_err(|e| e.to_string())?;
    Ok((db, secrets))
}

/// Holds the data directory for this process: the embedded store belongs
/// to one daemon (a second one would re-queue the first one's running jobs
/// and run them twice). Released when dropped or when the process dies.
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Takes the data directory's lock, or fails naming the daemon that holds
/// it.
pub fn lock_data_dir(cfg: &Config) -> anyhow::Result<DataDirLock> {
    use std::io::{Read, Seek, Write};
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let path = cfg.data_dir.join("switchyard.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            anyhow::bail!(
                "another switchyard serve (pid {}) is using the data directory {}; \
                 two daemons on one SQLite store would run jobs twice. Stop it, or give this \
                 one its own data_dir",
                holder.trim(),
                cfg.data_dir.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    file.flush()?;
    Ok(DataDirLock { _file: file })
}
