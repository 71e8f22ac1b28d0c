//! The SQLite writer: one thread owns the write connection and commits
//! the writes that arrive while it is busy together (group commit).
//!
//! Every write is a closure run inside the batch's transaction, in a
//! savepoint of its own: a write that fails is rolled back alone and gets
//! its own error; the others are unaffected. Nobody hears "done" before
//! the batch's `COMMIT` returned, so an answer is always the truth (a
//! committed write, or an error for a write that is not in the database).
//! One commit writes each touched page once for the whole batch, instead
//! of once per write: under load (queue workers finishing jobs, webhooks
//! being stored, plugins writing storage) that is most of a write's cost.
//!
//! Writes therefore use savepoints, never `BEGIN`: `c.savepoint()` where a
//! closure needs "all of this or none of it".

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

use rusqlite::Connection;

use crate::StoreError;
use crate::error::backend;

/// Most writes committed together: a bound on how long the first of them
/// waits for the others, and on a batch's transaction.
const MAX_BATCH: usize = 64;

/// A write waiting for the writer thread.
trait Pending: Send {
    /// Runs the write on `c`, inside the batch; whether it succeeded.
    fn run(&mut self, c: &mut Connection) -> bool;
    /// Answers the caller: the write's own result, or `batch_failed` when
    /// the batch did not commit.
    fn answer(self: Box<Self>, batch_failed: Option<StoreError>);
}

struct Write<T, F> {
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Pending for Write<T, F>
where
    T: Send,
    F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, c: &mut Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        // A panicking write is that write's failure, not the writer's.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| work(c))).unwrap_or_else(|_| {
            Err(StoreError::Backend(
                "a storage write panicked and was rolled back".into(),
            ))
        });
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, batch_failed: Option<StoreError>) {
        let result = match (batch_failed, self.result) {
            (Some(e), _) => Err(e),
            (None, Some(r)) => r,
            (None, None) => Err(StoreError::Backend("the write did not run".into())),
        };
        // The caller may have gone (its task was cancelled): the write
        // stands or not all the same.
        let _ = self.reply.send(result);
    }
}

/// The handle the store keeps: clones send to the same thread, which ends
/// (closing the connection) when the last one is dropped.
#[derive(Clone)]
pub(crate) struct Writer {
    queue: mpsc::Sender<Box<dyn Pending>>,
}

impl Writer {
    /// Starts the writer thread for `conn`.
    pub(crate) fn start(conn: Connection) -> Result<Self, StoreError> {
        let (queue, incoming) = mpsc::channel();
        std::thread::Builder::new()
            .name("switchyard-sqlite-writer".into())
            .spawn(move || write_loop(conn, incoming))
            .map_err(|e| StoreError::Backend(format!("starting the SQLite writer: {e}")))?;
        Ok(Self { queue })
    }

    /// Runs `f` in the next batch; its result once the batch committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending: Box<dyn Pending> = Box::new(Write {
            work: Some(f),
            result: None,
            reply,
        });
        self.queue
            .send(pending)
            .map_err(|_| StoreError::Backend("the SQLite writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the SQLite writer has stopped".into()))?
    }
}

fn step(c: &Connection, sql: &str) -> Result<(), StoreError> {
    c.prepare_cached(sql)
        .and_then(|mut st| st.execute([]))
        .map(drop)
        .map_err(backend)
}

fn write_loop(mut conn: Connection, incoming: mpsc::Receiver<Box<dyn Pending>>) {
    while let Ok(first) = incoming.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match incoming.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let failed = run_batch(&mut conn, &mut batch).err();
        for pending in batch {
            pending.answer(failed.clone());
        }
    }
}

/// Runs `batch` in one transaction, each write in its own savepoint.
fn run_batch(c: &mut Connection, batch: &mut [Box<dyn Pending>]) -> Result<(), StoreError> {
    step(c, "BEGIN IMMEDIATE")?;
    let ran = (|| {
        for pending in batch.iter_mut() {
            step(c, "SAVEPOINT write")?;
            if !pending.run(c) {
                step(c, "ROLLBACK TO write")?;
            }
            step(c, "RELEASE write")?;
        }
        step(c, "COMMIT")
    })();
    if ran.is_err() && !c.is_autocommit() {
        let _ = step(c, "ROLLBACK");
    }
    ran
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> Writer {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (v INTEGER PRIMARY KEY)")
            .unwrap();
        Writer::start(c).unwrap()
    }

    async fn count(w: &Writer) -> i64 {
        w.write(|c| {
            c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .map_err(backend)
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_or_panicking_write_is_rolled_back_alone() {
        let w = writer();
        // All sent at once, so that they share batches: 50 inserts, one of
        // them a duplicate key, a write that inserts and then fails, and
        // one that panics midway.
        let mut set = tokio::task::JoinSet::new();
        for v in (1..50).chain([1]) {
            let w = w.clone();
            set.spawn(async move {
                let r = w
                    .write(move |c| c.execute("INSERT INTO t VALUES (?1)", [v]).map_err(backend))
                    .await;
                ("insert", r.map_err(|e| e.to_string()))
            });
        }
        let w2 = w.clone();
        set.spawn(async move {
            let r = w2
                .write(|c| {
                    c.execute("INSERT INTO t VALUES (100)", [])
                        .map_err(backend)?;
                    Err::<usize, _>(StoreError::Backend("changed its mind".into()))
                })
                .await;
            ("half", r.map_err(|e| e.to_string()))
        });
        let w3 = w.clone();
        set.spawn(async move {
            let r = w3
                .write(|c| -> Result<usize, StoreError> {
                    c.execute("INSERT INTO t VALUES (200)", [])
                        .map_err(backend)?;
                    panic!("a bug in a write")
                })
                .await;
            ("panics", r.map_err(|e| e.to_string()))
        });
        let mut inserted = 0;
        let mut refused = Vec::new();
        while let Some(done) = set.join_next().await {
            match done.unwrap() {
                ("insert", Ok(_)) => inserted += 1,
                (what, Err(e)) => refused.push((what, e)),
                (what, Ok(_)) => panic!("{what} succeeded"),
            }
        }
        assert_eq!(inserted, 49, "{refused:?}");
        refused.sort();
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert_eq!(refused[0].0, "half");
        assert_eq!(refused[1].0, "insert");
        assert!(refused[1].1.contains("UNIQUE"), "{refused:?}");
        assert!(refused[2].1.contains("panicked"), "{refused:?}");
        // 1..50 once each; neither the half-done nor the panicking write
        // left a row.
        assert_eq!(count(&w).await, 49);
    }

    #[tokio::test]
    async fn a_batch_that_cannot_commit_fails_every_write_in_it() {
        let w = writer();
        // A write that breaks the rule (it ends the batch's transaction
        // itself), so that the batch cannot be committed as one.
        let broken = w.write(|c| c.execute_batch("COMMIT").map_err(backend));
        assert!(broken.await.is_err());
        // The writer goes on, and what it answered ok is there.
        let ok = w
            .write(|c| c.execute("INSERT INTO t VALUES (7)", []).map_err(backend))
            .await;
        assert_eq!(ok.unwrap(), 1);
        assert_eq!(count(&w).await, 1);
    }
}
