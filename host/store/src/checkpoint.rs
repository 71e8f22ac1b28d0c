//! WAL checkpoints on a thread of their own.
//!
//! By default SQLite checkpoints in the connection that commits, once the
//! write-ahead log passes 1,000 pages: the writer thread would copy pages
//! into the database file and fsync it while every caller waits for its
//! next commit (a plugin writing 1 MiB values made that every fourth
//! commit). With `wal_autocheckpoint = 0` on the writer, this thread does
//! it instead, on its own connection, in `PASSIVE` mode: it never waits for
//! the writer or a reader, and copies what it can. The log starts over from
//! its beginning once everything in it was copied, and is cut back to
//! [`WAL_SIZE_LIMIT`] when it does.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rusqlite::Connection;

use crate::StoreError;
use crate::error::backend;

/// How often the thread looks for committed pages to copy.
const EVERY: Duration = Duration::from_millis(50);

/// Bytes the WAL file is cut back to after a burst of writes.
pub(crate) const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// Keeps the checkpoint thread running: it stops once every clone of this
/// (one per clone of the store) is gone.
#[derive(Clone)]
pub(crate) struct Checkpointer(#[allow(dead_code)] Arc<()>);

impl Checkpointer {
    /// Opens a connection to the database at `path` and starts the thread.
    pub(crate) fn start(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(backend)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(backend)?;
        let alive = Arc::new(());
        let weak = Arc::downgrade(&alive);
        std::thread::Builder::new()
            .name("switchyard-checkpoint".into())
            .spawn(move || run(conn, weak))
            .map_err(|e| StoreError::Backend(format!("starting the WAL checkpointer: {e}")))?;
        Ok(Self(alive))
    }
}

fn run(conn: Connection, alive: Weak<()>) {
    let mut failing = false;
    while alive.strong_count() > 0 {
        std::thread::sleep(EVERY);
        // (busy, frames in the log, frames copied); the log is done when
        // both counts agree.
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match result {
            Ok(_) => failing = false,
            // Said once per spell of failures: the writer goes on, and the
            // log only grows until a checkpoint succeeds again.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "checkpointing the SQLite write-ahead log");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{KvBackend, Namespace, Quota, SqliteStore};

    #[tokio::test]
    async fn committed_pages_reach_the_database_file_without_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path).unwrap();
        let writer_setting = store
            .with_conn(|c| {
                c.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get::<_, i64>(0))
                    .map_err(crate::error::backend)
            })
            .await
            .unwrap();
        assert_eq!(writer_setting, 0, "the writer never checkpoints");
        let before = std::fs::metadata(&path).unwrap().len();
        let ns = Namespace::new("t", "i");
        let quota = Quota {
            max_value_bytes: 1 << 20,
            max_total_bytes: 64 << 20,
            max_keys: 100,
        };
        for i in 0..8 {
            let value = vec![b'x'; 1 << 20];
            store
                .set(&ns, &format!("k{i}"), &value, &quota)
                .await
                .unwrap();
        }
        // The 8 MiB are in the log; the thread copies them into the file.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let now = std::fs::metadata(&path).unwrap().len();
            if now >= before + (8 << 20) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the database file is still {now} bytes"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
