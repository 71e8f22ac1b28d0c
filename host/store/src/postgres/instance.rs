//! Schedules, pause states, run statistics and plugin locks on PostgreSQL.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{Cached, PgStore, in_tx};
use crate::schedule::{MAX_ERROR_CHARS, cut_summary};
use crate::{
    Fired, InstanceStats, InstanceStore, PluginLock, RunRecord, Schedule, StoreError,
    WantedSchedule,
};

/// Counts one run inside the caller's transaction.
pub(super) async fn record_run_in(
    store: &PgStore,
    c: &impl GenericClient,
    run: &RunRecord,
    now_ms: i64,
) -> Result<(), StoreError> {
    let error: Option<String> = run
        .error
        .as_ref()
        .map(|e| e.chars().take(MAX_ERROR_CHARS).collect());
    let summary = run.summary.as_deref().map(cut_summary);
    let errors = i64::from(error.is_some());
    c.exec(
        "INSERT INTO run_stats AS r (tenant, instance, kind, name, runs, errors, last_run,
                                     last_outcome, last_error, last_error_at, last_summary)
         VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8,
                 CASE WHEN $8::text IS NULL THEN NULL ELSE $6::bigint END, $9)
         ON CONFLICT (tenant, instance, kind, name) DO UPDATE SET
            runs = r.runs + 1, errors = r.errors + excluded.errors,
            last_run = excluded.last_run, last_outcome = excluded.last_outcome,
            last_error = coalesce(excluded.last_error, r.last_error),
            last_error_at = coalesce(excluded.last_error_at, r.last_error_at),
            last_summary = coalesce(excluded.last_summary, r.last_summary)",
        &[
            &run.tenant,
            &run.instance,
            &run.kind,
            &run.name,
            &errors,
            &now_ms,
            &run.outcome,
            &error,
            &summary,
        ],
    )
    .await
    .map_err(|e| store.fail("recording a run", e))?;
    Ok(())
}

const SCHEDULE_COLUMNS: &str = "tenant, instance, job, interval_ms, next_run, last_fired";

fn schedule(r: &Row) -> Schedule {
    Schedule {
        tenant: r.get(0),
        instance: r.get(1),
        job: r.get(2),
        interval_ms: r.get(3),
        next_run_ms: r.get(4),
        last_fired_ms: r.get(5),
    }
}

#[async_trait]
impl InstanceStore for PgStore {
    async fn sync_schedules(
        &self,
        wanted: Vec<WantedSchedule>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let doing = "updating schedules";
        in_tx!(self, doing, |tx| {
            let fail = |e| self.fail(doing, e);
            let upsert = tx
                .prepare_cached(
                    "INSERT INTO schedules AS s (tenant, instance, job, interval_ms, next_run)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (tenant, instance, job) DO UPDATE SET
                       interval_ms = excluded.interval_ms,
                       next_run = least(s.next_run,
                                        coalesce(s.last_fired, s.next_run) + excluded.interval_ms)",
                )
                .await
                .map_err(fail)?;
            for w in &wanted {
                tx.execute(
                    &upsert,
                    &[&w.tenant, &w.instance, &w.job, &w.interval_ms, &now_ms],
                )
                .await
                .map_err(fail)?;
            }
            let tenants: Vec<&str> = wanted.iter().map(|w| w.tenant.as_str()).collect();
            let instances: Vec<&str> = wanted.iter().map(|w| w.instance.as_str()).collect();
            let jobs: Vec<&str> = wanted.iter().map(|w| w.job.as_str()).collect();
            tx.exec(
                "DELETE FROM schedules WHERE (tenant, instance, job) NOT IN
                 (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))",
                &[&tenants, &instances, &jobs],
            )
            .await
            .map_err(fail)?;
        });
        Ok(())
    }

    async fn due_schedules(&self, now_ms: i64) -> Result<Vec<Schedule>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .rows(
                &format!(
                    "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE next_run <= $1 ORDER BY next_run"
                ),
                &[&now_ms],
            )
            .await
            .map_err(|e| self.fail("reading due schedules", e))?;
        Ok(rows.iter().map(schedule).collect())
    }

    async fn schedules(&self, tenant: &str, instance: &str) -> Result<Vec<Schedule>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .rows(
                &format!(
                    "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE tenant=$1 AND instance=$2
                     ORDER BY job"
                ),
                &[&tenant, &instance],
            )
            .await
            .map_err(|e| self.fail("reading schedules", e))?;
        Ok(rows.iter().map(schedule).collect())
    }

    async fn fire_schedule(
        &self,
        s: &Schedule,
        max_attempts: u32,
        now_ms: i64,
    ) -> Result<Fired, StoreError> {
        let doing = "firing a schedule";
        let fired = in_tx!(self, doing, |tx| {
            let fail = |e| self.fail(doing, e);
            // The row update is the claim: of several daemons firing the
            // same slot, one moves `next_run` and the others match nothing.
            let moved = tx
                .exec(
                    "UPDATE schedules SET next_run = $5, last_fired = $6
                     WHERE tenant=$1 AND instance=$2 AND job=$3 AND next_run=$4",
                    &[
                        &s.tenant,
                        &s.instance,
                        &s.job,
                        &s.next_run_ms,
                        &(now_ms + s.interval_ms),
                        &now_ms,
                    ],
                )
                .await
                .map_err(fail)?;
            if moved == 0 {
                Fired::AlreadyFired
            } else {
                let prefix = format!("schedule:{}:", s.job);
                let upper = format!("schedule:{};", s.job);
                let pending = tx
                    .row_opt(
                        "SELECT id FROM jobs WHERE tenant=$1 AND instance=$2
                           AND idempotency_key >= $3 AND idempotency_key < $4
                           AND state IN ('queued', 'running')
                         LIMIT 1",
                        &[&s.tenant, &s.instance, &prefix, &upper],
                    )
                    .await
                    .map_err(fail)?;
                match pending {
                    Some(r) => Fired::StillPending(r.get(0)),
                    None => {
                        let key = format!("{prefix}{}", s.next_run_ms);
                        let inserted = tx
                            .row_opt(
                                "INSERT INTO jobs (tenant, instance, kind, name, payload,
                                                   idempotency_key, state, attempts,
                                                   max_attempts, run_after, created_at)
                                 VALUES ($1, $2, 'job', $3, '\\x'::bytea, $4, 'queued', 0, $5, $6, $6)
                                 ON CONFLICT (tenant, instance, idempotency_key) DO NOTHING
                                 RETURNING id",
                                &[
                                    &s.tenant,
                                    &s.instance,
                                    &s.job,
                                    &key,
                                    &i64::from(max_attempts.max(1)),
                                    &now_ms,
                                ],
                            )
                            .await
                            .map_err(fail)?;
                        match inserted {
                            Some(r) => Fired::Queued(r.get(0)),
                            None => Fired::AlreadyFired,
                        }
                    }
                }
            }
        });
        if matches!(fired, Fired::Queued(_)) {
            // Committed: a daemon with a free worker may run it.
            self.announce_jobs();
        }
        Ok(fired)
    }

    async fn set_paused(
        &self,
        tenant: &str,
        instance: &str,
        paused: bool,
    ) -> Result<(), StoreError> {
        let c = self.conn().await?;
        // Other daemons refresh their cached pauses when this commits.
        c.exec(
            "WITH up AS (
                INSERT INTO instance_state (tenant, instance, paused) VALUES ($1, $2, $3)
                ON CONFLICT (tenant, instance) DO UPDATE SET paused = excluded.paused
                RETURNING 1)
             SELECT pg_notify($4, $5) FROM up",
            &[&tenant, &instance, &paused, &&*self.channel, &super::PAUSES],
        )
        .await
        .map_err(|e| self.fail("recording a pause", e))?;
        Ok(())
    }

    async fn paused_states(&self) -> Result<Vec<(String, String, bool)>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .rows("SELECT tenant, instance, paused FROM instance_state", &[])
            .await
            .map_err(|e| self.fail("reading pause states", e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
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
        let c = self.conn().await?;
        record_run_in(self, &c, &run, now_ms).await
    }

    async fn run_stats(
        &self,
        tenant: &str,
        instance: &str,
    ) -> Result<Vec<InstanceStats>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .rows(
                "SELECT kind, name, runs, errors, last_run, last_outcome, last_error,
                        last_error_at, last_summary
                 FROM run_stats WHERE tenant=$1 AND instance=$2 ORDER BY kind, name",
                &[&tenant, &instance],
            )
            .await
            .map_err(|e| self.fail("reading run statistics", e))?;
        Ok(rows
            .iter()
            .map(|r| InstanceStats {
                kind: r.get(0),
                name: r.get(1),
                runs: r.get(2),
                errors: r.get(3),
                last_run_ms: r.get(4),
                last_outcome: r.get(5),
                last_error: r.get(6),
                last_error_ms: r.get(7),
                last_summary: r.get(8),
            })
            .collect())
    }

    async fn plugin_locks(&self) -> Result<Vec<PluginLock>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .rows(
                "SELECT tenant, instance, plugin, version, digest, locked_at FROM plugin_locks",
                &[],
            )
            .await
            .map_err(|e| self.fail("reading plugin locks", e))?;
        Ok(rows
            .iter()
            .map(|r| PluginLock {
                tenant: r.get(0),
                instance: r.get(1),
                plugin: r.get(2),
                version: r.get(3),
                digest: r.get(4),
                locked_at: r.get(5),
            })
            .collect())
    }

    async fn set_plugin_locks(&self, locks: Vec<PluginLock>) -> Result<(), StoreError> {
        if locks.is_empty() {
            return Ok(());
        }
        let doing = "recording plugin locks";
        in_tx!(self, doing, |tx| {
            let st = tx
                .prepare_cached(
                    "INSERT INTO plugin_locks (tenant, instance, plugin, version, digest, locked_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (tenant, instance) DO UPDATE SET plugin = excluded.plugin,
                       version = excluded.version, digest = excluded.digest,
                       locked_at = excluded.locked_at",
                )
                .await
                .map_err(|e| self.fail(doing, e))?;
            for l in &locks {
                tx.execute(
                    &st,
                    &[
                        &l.tenant,
                        &l.instance,
                        &l.plugin,
                        &l.version,
                        &l.digest,
                        &l.locked_at,
                    ],
                )
                .await
                .map_err(|e| self.fail(doing, e))?;
            }
        });
        Ok(())
    }

    async fn forget_plugin_locks(
        &self,
        tenant: &str,
        instance: Option<&str>,
    ) -> Result<u64, StoreError> {
        let c = self.conn().await?;
        c.exec(
            "DELETE FROM plugin_locks WHERE tenant = $1 AND ($2::text IS NULL OR instance = $2)",
            &[&tenant, &instance],
        )
        .await
        .map_err(|e| self.fail("forgetting plugin locks", e))
    }
}
