//! `switchyard migrate [--check]`: the state database's schema, for
//! operators who upgrade several daemons sharing one PostgreSQL database
//! (or want to know before `serve` changes anything).

use std::path::Path;

use switchyard_store::{PgStore, SqliteStore, describe_url};

use crate::boot::{load_config, lock_data_dir, postgres_settings};
use crate::config::StorageConfig;

/// `--check` found migrations this binary would apply: exit status 3, so
/// that a script tells "pending" from "cannot tell" (status 1).
#[derive(Debug)]
pub(super) struct Pending(pub String);

impl std::fmt::Display for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Pending {}

/// The status `--check` exits with when migrations are pending.
pub(super) const PENDING_STATUS: u8 = 3;

pub(super) async fn run(dir: &Path, check: bool) -> anyhow::Result<()> {
    let cfg = load_config(dir)?;
    let (where_, have, newest) = match &cfg.storage {
        StorageConfig::Sqlite { path } => {
            let path = cfg.data_dir.join(path);
            let (have, newest) = SqliteStore::schema_version(&path)?;
            (format!("SQLite database {}", path.display()), have, newest)
        }
        StorageConfig::Postgres { url, .. } => {
            let db = PgStore::connect_only(&postgres_settings(&cfg).await?).await?;
            let (have, newest) = db.schema_version().await?;
            db.close();
            (
                format!("PostgreSQL database {}", describe_url(url)),
                have,
                newest,
            )
        }
    };
    if have > newest {
        anyhow::bail!(
            "the {where_} has schema version {have}, newer than this switchyard knows ({newest}); \
             run the newer switchyard, or restore a backup made for this one"
        );
    }
    if have == newest {
        println!("the {where_} is at schema version {have}: up to date");
        return Ok(());
    }
    if check {
        return Err(Pending(format!(
            "the {where_} is at schema version {have}; this switchyard needs {newest}: {} \
             migration(s) pending (`switchyard migrate` or the next `serve` applies them)",
            newest - have
        ))
        .into());
    }
    // Opening the store applies the migrations, under the same lock `serve`
    // takes, so a daemon starting meanwhile waits rather than races. No
    // master key is made: migrations never touch a secret.
    match &cfg.storage {
        StorageConfig::Sqlite { path } => {
            // The daemon's lock: never migrate under a running daemon.
            let _lock = lock_data_dir(&cfg)?;
            SqliteStore::open(&cfg.data_dir.join(path))?;
        }
        StorageConfig::Postgres { .. } => {
            PgStore::connect(&postgres_settings(&cfg).await?)
                .await?
                .close();
        }
    }
    println!("the {where_} was at schema version {have}; migrated to {newest}");
    Ok(())
}
