//! Job schedules and the paused state of instances, persisted so that a
//! restart neither double-fires a run nor forgets a pause.
//!
//! Firing a schedule enqueues a job whose idempotency key is the scheduled
//! slot (`schedule:<job>:<due time>`) in the same transaction that moves the
//! schedule forward, so a slot fires once even if two processes race or one
//! crashes half-way. The next run is counted from when the run fired, so a
//! daemon that was down for many intervals fires once, not once per missed
//! interval (missed runs coalesce).

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use crate::sqlite::backend;
use crate::{SqliteStore, StoreError};

/// A job schedule of an instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Schedule {
    /// Tenant.
    pub tenant: String,
    /// Instance.
    pub instance: String,
    /// Job name.
    pub job: String,
    /// Interval in milliseconds.
    pub interval_ms: i64,
    /// Next run (ms since the epoch).
    pub next_run_ms: i64,
    /// Last time it fired, if ever.
    pub last_fired_ms: Option<i64>,
}

/// A schedule the configuration asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedSchedule {
    /// Tenant.
    pub tenant: String,
    /// Instance.
    pub instance: String,
    /// Job name.
    pub job: String,
    /// Interval in milliseconds.
    pub interval_ms: i64,
}

fn row_to_schedule(r: &rusqlite::Row<'_>) -> rusqlite::Result<Schedule> {
    Ok(Schedule {
        tenant: r.get(0)?,
        instance: r.get(1)?,
        job: r.get(2)?,
        interval_ms: r.get(3)?,
        next_run_ms: r.get(4)?,
        last_fired_ms: r.get(5)?,
    })
}

/// The plugin build an instance was set up with: resolved once and kept, so
/// that a newly installed file never replaces the code an instance runs
/// without the operator saying so.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginLock {
    /// Tenant.
    pub tenant: String,
    /// Instance.
    pub instance: String,
    /// Plugin id.
    pub plugin: String,
    /// Version.
    pub version: String,
    /// SHA-256 of the component, hex.
    pub digest: String,
    /// When it was recorded (ms since the epoch).
    pub locked_at: i64,
}

/// What firing a schedule did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// A run was queued: its job id.
    Queued(i64),
    /// The schedule moved on, but its previous run (this job id) is still
    /// queued or running, so no second one was queued.
    StillPending(i64),
    /// Another process (or an earlier call) already fired this slot.
    AlreadyFired,
}

/// What happened to one action, webhook route or job of an instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstanceStats {
    /// `action`, `webhook` or `job`.
    pub kind: String,
    /// Action name, webhook route or job name.
    pub name: String,
    /// Invocations so far.
    pub runs: i64,
    /// Invocations that failed.
    pub errors: i64,
    /// When it last ran (ms since the epoch).
    pub last_run_ms: i64,
    /// Outcome of the last run (`ok` or an error code).
    pub last_outcome: String,
    /// Message of the most recent failure, if any ever failed.
    pub last_error: Option<String>,
    /// When that failure happened.
    pub last_error_ms: Option<i64>,
    /// What the job returned when it last succeeded (jobs only).
    pub last_summary: Option<String>,
}

/// One run of an action, webhook route or job, for the run statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// Tenant.
    pub tenant: String,
    /// Instance.
    pub instance: String,
    /// `action`, `webhook` or `job`.
    pub kind: String,
    /// Action, route or job name.
    pub name: String,
    /// `ok` or an error code.
    pub outcome: String,
    /// The failure's message, if it failed.
    pub error: Option<String>,
    /// What a job returned, if it succeeded.
    pub summary: Option<String>,
}

/// Counts `run` in the run statistics, inside the caller's transaction.
impl RunRecord {
    /// The record of a run that returned no summary, from
    /// [`InstanceStore::record_run`]'s arguments: `[tenant, instance,
    /// kind, name, outcome]` and the error.
    pub(crate) fn without_summary(fields: [&str; 5], error: Option<&str>) -> Self {
        let [tenant, instance, kind, name, outcome] = fields.map(str::to_owned);
        Self {
            tenant,
            instance,
            kind,
            name,
            outcome,
            error: error.map(str::to_owned),
            summary: None,
        }
    }
}

pub(crate) fn record_run_in(
    c: &rusqlite::Connection,
    run: &RunRecord,
    now_ms: i64,
) -> Result<(), StoreError> {
    let error: Option<String> = run
        .error
        .as_ref()
        .map(|e| e.chars().take(MAX_ERROR_CHARS).collect());
    let summary = run.summary.as_deref().map(cut_summary);
    c.prepare_cached(
        "INSERT INTO run_stats (tenant, instance, kind, name, runs, errors, last_run,
                                last_outcome, last_error, last_error_at, last_summary)
         VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, CASE WHEN ?8 IS NULL THEN NULL ELSE ?6 END,
                 ?9)
         ON CONFLICT (tenant, instance, kind, name) DO UPDATE SET
            runs = runs + 1, errors = errors + excluded.errors,
            last_run = excluded.last_run, last_outcome = excluded.last_outcome,
            last_error = coalesce(excluded.last_error, last_error),
            last_error_at = coalesce(excluded.last_error_at, last_error_at),
            last_summary = coalesce(excluded.last_summary, last_summary)",
    )
    .and_then(|mut st| {
        st.execute(params![
            run.tenant,
            run.instance,
            run.kind,
            run.name,
            i64::from(error.is_some()),
            now_ms,
            run.outcome,
            error,
            summary
        ])
    })
    .map(drop)
    .map_err(backend)
}

/// Longest stored error message; the rest is cut (they are for people, and
/// a plugin's message length is not ours to choose).
pub(crate) const MAX_ERROR_CHARS: usize = 1000;

/// Longest stored job summary, in characters; the rest is cut (a job's
/// output is for people reading the status).
pub const MAX_SUMMARY_CHARS: usize = 2000;

/// `summary`, cut to [`MAX_SUMMARY_CHARS`] (marked with `…` when it was).
pub fn cut_summary(summary: &str) -> String {
    match summary.char_indices().nth(MAX_SUMMARY_CHARS) {
        None => summary.to_owned(),
        Some((at, _)) => format!("{}…", &summary[..at]),
    }
}

const SCHEDULE_COLUMNS: &str = "tenant, instance, job, interval_ms, next_run, last_fired";

/// Job schedules and the persisted paused state of instances.
#[async_trait]
pub trait InstanceStore: Send + Sync {
    /// Makes the stored schedules match `wanted`: new ones are due now,
    /// existing ones keep their next run (moved earlier if the interval
    /// shrank), others are removed.
    async fn sync_schedules(
        &self,
        wanted: Vec<WantedSchedule>,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// Schedules whose next run has come.
    async fn due_schedules(&self, now_ms: i64) -> Result<Vec<Schedule>, StoreError>;

    /// Schedules of one instance.
    async fn schedules(&self, tenant: &str, instance: &str) -> Result<Vec<Schedule>, StoreError>;

    /// Fires `s` if it is still due: schedules the next run one interval
    /// from `now_ms` and enqueues its job (keyed by the slot) — unless an
    /// earlier run of the schedule is still queued or running, so that a
    /// job slower than its interval never piles up runs.
    async fn fire_schedule(
        &self,
        s: &Schedule,
        max_attempts: u32,
        now_ms: i64,
    ) -> Result<Fired, StoreError>;

    /// Persists whether an instance is paused (overriding its configuration).
    async fn set_paused(
        &self,
        tenant: &str,
        instance: &str,
        paused: bool,
    ) -> Result<(), StoreError>;

    /// Persisted pause states: `(tenant, instance, paused)`.
    async fn paused_states(&self) -> Result<Vec<(String, String, bool)>, StoreError>;

    /// Counts one run of `kind`/`name`; `error` is the failure message, if
    /// it failed.
    #[allow(clippy::too_many_arguments)]
    async fn record_run(
        &self,
        tenant: &str,
        instance: &str,
        kind: &str,
        name: &str,
        outcome: &str,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// What ran on an instance, sorted by kind and name.
    async fn run_stats(
        &self,
        tenant: &str,
        instance: &str,
    ) -> Result<Vec<InstanceStats>, StoreError>;

    /// Every instance's recorded plugin build.
    async fn plugin_locks(&self) -> Result<Vec<PluginLock>, StoreError>;

    /// Records (or replaces) plugin builds, in one transaction.
    async fn set_plugin_locks(&self, locks: Vec<PluginLock>) -> Result<(), StoreError>;

    /// Forgets the recorded builds of a tenant's instances (all, or one):
    /// they take the highest allowed version at the next reload. Returns
    /// how many were forgotten.
    async fn forget_plugin_locks(
        &self,
        tenant: &str,
        instance: Option<&str>,
    ) -> Result<u64, StoreError>;
}

#[async_trait]
impl InstanceStore for SqliteStore {
    async fn sync_schedules(
        &self,
        wanted: Vec<WantedSchedule>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.with_conn(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            tx.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (tenant, instance, job)", [])
                .map_err(backend)?;
            tx.execute("DELETE FROM temp.wanted", []).map_err(backend)?;
            for w in &wanted {
                tx.execute(
                    "INSERT INTO temp.wanted VALUES (?1, ?2, ?3)",
                    params![w.tenant, w.instance, w.job],
                )
                .map_err(backend)?;
                tx.execute(
                    "INSERT INTO schedules (tenant, instance, job, interval_ms, next_run)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (tenant, instance, job) DO UPDATE SET
                       interval_ms = excluded.interval_ms,
                       next_run = min(next_run, coalesce(last_fired, next_run) + excluded.interval_ms)",
                    params![w.tenant, w.instance, w.job, w.interval_ms, now_ms],
                )
                .map_err(backend)?;
            }
            tx.execute(
                "DELETE FROM schedules WHERE (tenant, instance, job) NOT IN
                 (SELECT tenant, instance, job FROM temp.wanted)",
                [],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn due_schedules(&self, now_ms: i64) -> Result<Vec<Schedule>, StoreError> {
        self.with_read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE next_run <= ?1 ORDER BY next_run"
                ))
                .map_err(backend)?;
            let rows = st.query_map(params![now_ms], row_to_schedule).map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn schedules(&self, tenant: &str, instance: &str) -> Result<Vec<Schedule>, StoreError> {
        let (t, i) = (tenant.to_owned(), instance.to_owned());
        self.with_read(move |c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE tenant=?1 AND instance=?2 ORDER BY job"
                ))
                .map_err(backend)?;
            let rows = st.query_map(params![t, i], row_to_schedule).map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn fire_schedule(
        &self,
        s: &Schedule,
        max_attempts: u32,
        now_ms: i64,
    ) -> Result<Fired, StoreError> {
        let s = s.clone();
        self.with_conn(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let moved = tx
                .execute(
                    "UPDATE schedules SET next_run = ?5, last_fired = ?6
                     WHERE tenant=?1 AND instance=?2 AND job=?3 AND next_run=?4",
                    params![
                        s.tenant,
                        s.instance,
                        s.job,
                        s.next_run_ms,
                        now_ms + s.interval_ms,
                        now_ms
                    ],
                )
                .map_err(backend)?;
            if moved == 0 {
                return Ok(Fired::AlreadyFired);
            }
            // Keys of this schedule's runs are `schedule:<job>:<slot>`: a
            // range of the (tenant, instance, idempotency_key) index.
            let prefix = format!("schedule:{}:", s.job);
            let pending: Option<i64> = tx
                .query_row(
                    "SELECT id FROM jobs WHERE tenant=?1 AND instance=?2
                       AND idempotency_key >= ?3 AND idempotency_key < ?4
                       AND state IN ('queued', 'running')
                     LIMIT 1",
                    params![s.tenant, s.instance, prefix, format!("schedule:{};", s.job)],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            if let Some(id) = pending {
                tx.commit().map_err(backend)?;
                return Ok(Fired::StillPending(id));
            }
            let inserted = tx
                .execute(
                    "INSERT INTO jobs (tenant, instance, kind, name, payload, idempotency_key,
                                       state, attempts, max_attempts, run_after, created_at)
                     VALUES (?1, ?2, 'job', ?3, x'', ?4, 'queued', 0, ?5, ?6, ?6)
                     ON CONFLICT (tenant, instance, idempotency_key) DO NOTHING",
                    params![
                        s.tenant,
                        s.instance,
                        s.job,
                        format!("{prefix}{}", s.next_run_ms),
                        max_attempts.max(1),
                        now_ms
                    ],
                )
                .map_err(backend)?;
            let fired = if inserted == 1 {
                Fired::Queued(tx.last_insert_rowid())
            } else {
                Fired::AlreadyFired
            };
            tx.commit().map_err(backend)?;
            Ok(fired)
        })
        .await
    }

    async fn set_paused(
        &self,
        tenant: &str,
        instance: &str,
        paused: bool,
    ) -> Result<(), StoreError> {
        let (t, i) = (tenant.to_owned(), instance.to_owned());
        self.with_conn(move |c| {
            c.execute(
                "INSERT INTO instance_state (tenant, instance, paused) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant, instance) DO UPDATE SET paused = excluded.paused",
                params![t, i, paused],
            )
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn paused_states(&self) -> Result<Vec<(String, String, bool)>, StoreError> {
        self.with_read(|c| {
            let mut st = c
                .prepare("SELECT tenant, instance, paused FROM instance_state")
                .map_err(backend)?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn record_run(
        &self,
        tenant: &str,
        instance: &str,
        kind: &str,
        name: &str,
        outcome: &str,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let run = RunRecord::without_summary([tenant, instance, kind, name, outcome], error);
        self.with_conn(move |c| record_run_in(c, &run, now_ms))
            .await
    }

    async fn run_stats(
        &self,
        tenant: &str,
        instance: &str,
    ) -> Result<Vec<InstanceStats>, StoreError> {
        let (t, i) = (tenant.to_owned(), instance.to_owned());
        self.with_read(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT kind, name, runs, errors, last_run, last_outcome, last_error,
                            last_error_at, last_summary
                     FROM run_stats WHERE tenant=?1 AND instance=?2 ORDER BY kind, name",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![t, i], |r| {
                    Ok(InstanceStats {
                        kind: r.get(0)?,
                        name: r.get(1)?,
                        runs: r.get(2)?,
                        errors: r.get(3)?,
                        last_run_ms: r.get(4)?,
                        last_outcome: r.get(5)?,
                        last_error: r.get(6)?,
                        last_error_ms: r.get(7)?,
                        last_summary: r.get(8)?,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn plugin_locks(&self) -> Result<Vec<PluginLock>, StoreError> {
        self.with_read(|c| Self::lock_rows(c)).await
    }

    async fn set_plugin_locks(&self, locks: Vec<PluginLock>) -> Result<(), StoreError> {
        if locks.is_empty() {
            return Ok(());
        }
        self.with_conn(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            {
                let mut st = tx
                    .prepare_cached(
                        "INSERT INTO plugin_locks (tenant, instance, plugin, version, digest, locked_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (tenant, instance) DO UPDATE SET plugin = excluded.plugin,
                           version = excluded.version, digest = excluded.digest,
                           locked_at = excluded.locked_at",
                    )
                    .map_err(backend)?;
                for l in &locks {
                    st.execute(params![
                        l.tenant, l.instance, l.plugin, l.version, l.digest, l.locked_at
                    ])
                    .map_err(backend)?;
                }
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn forget_plugin_locks(
        &self,
        tenant: &str,
        instance: Option<&str>,
    ) -> Result<u64, StoreError> {
        let (t, i) = (tenant.to_owned(), instance.map(str::to_owned));
        self.with_conn(move |c| {
            c.execute(
                "DELETE FROM plugin_locks WHERE tenant = ?1 AND (?2 IS NULL OR instance = ?2)",
                params![t, i],
            )
            .map(|n| n as u64)
            .map_err(backend)
        })
        .await
    }
}

impl SqliteStore {
    fn lock_rows(c: &rusqlite::Connection) -> Result<Vec<PluginLock>, StoreError> {
        let mut st = c
            .prepare(
                "SELECT tenant, instance, plugin, version, digest, locked_at FROM plugin_locks",
            )
            .map_err(backend)?;
        let rows = st
            .query_map([], |r| {
                Ok(PluginLock {
                    tenant: r.get(0)?,
                    instance: r.get(1)?,
                    plugin: r.get(2)?,
                    version: r.get(3)?,
                    digest: r.get(4)?,
                    locked_at: r.get(5)?,
                })
            })
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{backend_tests, finish_all};
    use crate::{JobQueue, LeaseRequest, TenantConcurrency};

    fn want(job: &str, interval_ms: i64) -> WantedSchedule {
        WantedSchedule {
            tenant: "acme".into(),
            instance: "i".into(),
            job: job.into(),
            interval_ms,
        }
    }

    backend_tests! {
        async fn a_slot_fires_once_and_missed_runs_coalesce(db) {
            db.sync_schedules(vec![want("tick", 60_000)], 1_000)
                .await
                .unwrap();
            let due = db.due_schedules(1_000).await.unwrap();
            assert_eq!(due.len(), 1);
            let Fired::Queued(_) = db.fire_schedule(&due[0], 3, 1_000).await.unwrap() else {
                panic!("the first slot queues a run");
            };
            // The same slot again (a second process, or a retry): nothing.
            assert_eq!(
                db.fire_schedule(&due[0], 3, 1_000).await.unwrap(),
                Fired::AlreadyFired
            );
            assert!(db.due_schedules(60_999).await.unwrap().is_empty());
            finish_all(&db, 2_000).await;
            // Down for ten intervals: one run, then the next a full interval later.
            let due = db.due_schedules(661_000).await.unwrap();
            assert_eq!(due.len(), 1);
            assert!(matches!(
                db.fire_schedule(&due[0], 3, 661_000).await.unwrap(),
                Fired::Queued(_)
            ));
            assert_eq!(
                db.schedules("acme", "i").await.unwrap()[0].next_run_ms,
                721_000
            );
            assert_eq!(db.list_jobs("acme", None, 10).await.unwrap().len(), 2);
        }
    }

    backend_tests! {
        /// Issue 13, item 9: a run slower than its interval does not pile up.
        async fn a_schedule_keeps_one_pending_run(db) {
            db.sync_schedules(vec![want("tick", 1_000)], 0)
                .await
                .unwrap();
            let due = db.due_schedules(0).await.unwrap();
            let Fired::Queued(first) = db.fire_schedule(&due[0], 3, 0).await.unwrap() else {
                panic!("queued");
            };
            // Ten intervals pass while the first run is still queued (or
            // running): the schedule moves on, no second run is queued.
            for now in (1..=10).map(|i| i * 1_000) {
                let due = db.due_schedules(now).await.unwrap();
                assert_eq!(
                    db.fire_schedule(&due[0], 3, now).await.unwrap(),
                    Fired::StillPending(first)
                );
            }
            assert_eq!(db.queue_counts("acme", "i").await.unwrap(), (1, 0, 0));
            // Once it has run, the next slot queues again.
            finish_all(&db, 10_500).await;
            let due = db.due_schedules(11_000).await.unwrap();
            assert!(matches!(
                db.fire_schedule(&due[0], 3, 11_000).await.unwrap(),
                Fired::Queued(_)
            ));
        }
    }

    backend_tests! {
        async fn plugin_locks_are_kept_replaced_and_forgotten(db) {
            let lock = |i: &str, v: &str| PluginLock {
                tenant: "acme".into(),
                instance: i.into(),
                plugin: "p".into(),
                version: v.into(),
                digest: format!("d{v}"),
                locked_at: 1,
            };
            db.set_plugin_locks(vec![lock("a", "1.0.0"), lock("b", "1.0.0")])
                .await
                .unwrap();
            db.set_plugin_locks(vec![lock("a", "1.1.0")]).await.unwrap();
            let mut got = db.plugin_locks().await.unwrap();
            got.sort_by(|x, y| x.instance.cmp(&y.instance));
            assert_eq!(got, [lock("a", "1.1.0"), lock("b", "1.0.0")]);
            assert_eq!(db.forget_plugin_locks("acme", Some("a")).await.unwrap(), 1);
            assert_eq!(db.forget_plugin_locks("acme", None).await.unwrap(), 1);
            assert!(db.plugin_locks().await.unwrap().is_empty());
        }
    }

    backend_tests! {
        async fn sync_keeps_progress_and_removes_what_is_gone(db) {
            db.sync_schedules(vec![want("a", 60_000), want("b", 60_000)], 0)
                .await
                .unwrap();
            let due = db.due_schedules(0).await.unwrap();
            db.fire_schedule(&due[0], 3, 0).await.unwrap();
            // Restart with the same config: `a` keeps its next run; `b` is gone.
            db.sync_schedules(vec![want("a", 60_000)], 5_000)
                .await
                .unwrap();
            let s = db.schedules("acme", "i").await.unwrap();
            assert_eq!(s.len(), 1);
            assert_eq!((s[0].job.as_str(), s[0].next_run_ms), ("a", 60_000));
            // A shorter interval pulls the next run in.
            db.sync_schedules(vec![want("a", 10_000)], 5_000)
                .await
                .unwrap();
            assert_eq!(
                db.schedules("acme", "i").await.unwrap()[0].next_run_ms,
                10_000
            );
        }
    }

    backend_tests! {
        async fn run_stats_count_and_keep_the_last_error(db) {
            db.record_run("acme", "i", "job", "tick", "ok", None, 10)
                .await
                .unwrap();
            db.record_run(
                "acme",
                "i",
                "job",
                "tick",
                "upstream",
                Some("UEM said 503"),
                20,
            )
            .await
            .unwrap();
            db.record_run("acme", "i", "job", "tick", "ok", None, 30)
                .await
                .unwrap();
            db.record_run("acme", "i", "action", "lock", "ok", None, 40)
                .await
                .unwrap();
            db.record_run("globex", "i", "job", "tick", "internal", Some("x"), 50)
                .await
                .unwrap();
            let stats = db.run_stats("acme", "i").await.unwrap();
            assert_eq!(stats.len(), 2);
            assert_eq!(
                (stats[0].kind.as_str(), stats[0].name.as_str()),
                ("action", "lock")
            );
            assert_eq!(stats[0].last_error, None);
            let tick = &stats[1];
            assert_eq!((tick.runs, tick.errors), (3, 1));
            assert_eq!(tick.last_run_ms, 30);
            assert_eq!(tick.last_outcome, "ok");
            // A later success does not erase when and why it last failed.
            assert_eq!(tick.last_error.as_deref(), Some("UEM said 503"));
            assert_eq!(tick.last_error_ms, Some(20));
        }
    }

    backend_tests! {
        async fn pause_states_persist_and_released_jobs_keep_their_attempts(db) {
            db.set_paused("acme", "i", true).await.unwrap();
            db.set_paused("acme", "i", false).await.unwrap();
            db.set_paused("acme", "j", true).await.unwrap();
            let mut states = db.paused_states().await.unwrap();
            states.sort();
            assert_eq!(
                states,
                [
                    ("acme".into(), "i".into(), false),
                    ("acme".into(), "j".into(), true)
                ]
            );
            db.sync_schedules(vec![want("tick", 1000)], 0)
                .await
                .unwrap();
            let due = db.due_schedules(0).await.unwrap();
            db.fire_schedule(&due[0], 3, 0).await.unwrap();
            let per = TenantConcurrency::uniform(1);
            let skip = Default::default();
            let req = LeaseRequest {
                owner: "w",
                lease_ms: 1000,
                limit: 1,
                per_tenant: &per,
                skip: &skip,
            };
            let leased = db.lease(0, req).await.unwrap();
            assert_eq!(leased[0].attempts, 1);
            assert!(db.release_job(leased[0].attempt("w"), 500).await.unwrap());
            assert_eq!(db.queue_counts("acme", "i").await.unwrap(), (1, 0, 0));
            let again = db.lease(500, req).await.unwrap();
            assert_eq!(again[0].attempts, 1, "a release does not use up an attempt");
        }
    }
}
