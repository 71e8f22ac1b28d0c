//! The job queue on PostgreSQL, shared by every daemon of a deployment.
//!
//! A lease is one transaction holding a transaction-level advisory lock:
//! leases of all daemons take turns, so the per-tenant limits count every
//! daemon's running jobs and the walk over instances stays fair. The rows
//! it claims are taken `FOR UPDATE SKIP LOCKED`, so a lease never waits
//! for a job another transaction is changing (a retry, a settlement).
//! Settling is fenced by (job, attempt, owner) as in SQLite.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::Cached;
use super::admin::append_audit_in;
use super::instance::record_run_in;
use super::{PgStore, in_tx};
use crate::admin::PRUNE_BATCH;
use crate::queue::{JOB_COLUMNS, LEASE_VISITS, backoff_ms};
use crate::schedule::cut_summary;
use crate::{
    Attempt, Change, Enqueued, Finish, Finished, InstanceKey, Job, JobQueue, JobState,
    LeaseRequest, NewJob, Outcome, QueueDepth, Retry, Settled, StoreError, TenantConcurrency,
    Watching,
};

fn job(r: &Row) -> Job {
    Job {
        id: r.get(0),
        tenant: r.get(1),
        instance: r.get(2),
        kind: r.get(3),
        name: r.get(4),
        payload: r.get(5),
        state: JobState::parse(r.get(6)),
        attempts: r.get::<_, i64>(7) as u32,
        max_attempts: r.get::<_, i64>(8) as u32,
        run_after_ms: r.get(9),
        last_error: r.get(10),
        summary: r.get(11),
    }
}

/// Marks attempt `n` of job `id` done if `owner` still holds its lease.
async fn complete_in(
    store: &PgStore,
    c: &impl GenericClient,
    a: &Attempt<'_>,
    summary: Option<&str>,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let summary = summary.map(cut_summary);
    let n = c
        .exec(
            "UPDATE jobs SET state='done', lease_until=NULL, owner=NULL, last_error=NULL,
                             finished_at=$4, summary=$5
             WHERE id=$1 AND attempts=$2 AND owner=$3 AND state='running'",
            &[&a.id, &i64::from(a.attempt), &a.owner, &now_ms, &summary],
        )
        .await
        .map_err(|e| store.fail("completing a job", e))?;
    Ok(n == 1)
}

/// Records a failed attempt if its owner still holds the lease; the new
/// state, or None.
async fn fail_in(
    store: &PgStore,
    tx: &impl GenericClient,
    a: &Attempt<'_>,
    error: &str,
    now_ms: i64,
    retry: Retry,
) -> Result<Option<JobState>, StoreError> {
    let fail = |e| store.fail("recording a failed job", e);
    let error: String = error.chars().take(2000).collect();
    let held = tx
        .row_opt(
            "SELECT max_attempts FROM jobs
             WHERE id=$1 AND attempts=$2 AND owner=$3 AND state='running' FOR UPDATE",
            &[&a.id, &i64::from(a.attempt), &a.owner],
        )
        .await
        .map_err(fail)?;
    let Some(max) = held.map(|r| r.get::<_, i64>(0) as u32) else {
        return Ok(None);
    };
    let (state, delay) = match retry {
        Retry::Never => (JobState::Dead, 0),
        Retry::Backoff { .. } if a.attempt >= max => (JobState::Dead, 0),
        Retry::Backoff { retry_after_ms } => (
            JobState::Queued,
            backoff_ms(a.attempt).max(retry_after_ms.unwrap_or(0)),
        ),
    };
    let finished = (state == JobState::Dead).then_some(now_ms);
    tx.exec(
        "UPDATE jobs SET state=$2, lease_until=NULL, owner=NULL, last_error=$3,
                         run_after=$4, finished_at=$5
         WHERE id=$1",
        &[&a.id, &state.as_str(), &error, &(now_ms + delay), &finished],
    )
    .await
    .map_err(fail)?;
    Ok(Some(state))
}

/// Queues the next run of job `id`, which asked to run again at `at_ms`
/// (see the SQLite backend's `again_in` for the key's meaning).
async fn again_in(
    store: &PgStore,
    tx: &impl GenericClient,
    id: i64,
    at_ms: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    tx.exec(
        "INSERT INTO jobs (tenant, instance, kind, name, payload, idempotency_key,
                           state, attempts, max_attempts, run_after, created_at)
         SELECT tenant, instance, 'job', name, '\\x'::bytea,
                'schedule:' || name || ':again-' || id,
                'queued', 0, max_attempts, $2, $3
         FROM jobs WHERE id = $1 AND kind = 'job'
         ON CONFLICT (tenant, instance, idempotency_key) DO NOTHING",
        &[&id, &at_ms.max(now_ms), &now_ms],
    )
    .await
    .map_err(|e| store.fail("queueing a job's next run", e))?;
    Ok(())
}

#[async_trait]
impl JobQueue for PgStore {
    fn watch(&self, on_change: Box<dyn Fn(Change) + Send + Sync>) -> Option<Watching> {
        Some(self.listen(on_change))
    }

    async fn enqueue(&self, j: NewJob, now_ms: i64) -> Result<Enqueued, StoreError> {
        let c = self.conn().await?;
        let fail = |e| self.fail("queueing a job", e);
        let inserted = c
            .row_opt(
                "INSERT INTO jobs (tenant, instance, kind, name, payload, idempotency_key,
                                   state, attempts, max_attempts, run_after, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 'queued', 0, $7, $8, $8)
                 ON CONFLICT (tenant, instance, idempotency_key) DO NOTHING
                 RETURNING id",
                &[
                    &j.tenant,
                    &j.instance,
                    &j.kind,
                    &j.name,
                    &j.payload,
                    &j.idempotency_key,
                    &i64::from(j.max_attempts.max(1)),
                    &now_ms,
                ],
            )
            .await
            .map_err(fail)?;
        if let Some(r) = inserted {
            // Committed: now the other daemons may look for it.
            self.announce_jobs();
            return Ok(Enqueued {
                id: r.get(0),
                duplicate: false,
            });
        }
        let id = c
            .row(
                "SELECT id FROM jobs WHERE tenant=$1 AND instance=$2 AND idempotency_key=$3",
                &[&j.tenant, &j.instance, &j.idempotency_key],
            )
            .await
            .map_err(fail)?
            .get(0);
        Ok(Enqueued {
            id,
            duplicate: true,
        })
    }

    async fn lease(&self, now_ms: i64, req: LeaseRequest<'_>) -> Result<Vec<Job>, StoreError> {
        Ok(in_tx!(self, "leasing jobs", |tx| {
            let mut lease = Leasing {
                store: self,
                tx: &tx,
                now_ms,
                until: now_ms + req.lease_ms,
                owner: req.owner,
                per_tenant: req.per_tenant,
                skip: req.skip,
                running: BTreeMap::new(),
                picked: Vec::new(),
            };
            lease.run(req.limit).await?
        }))
    }

    /// Several daemons share this store, so a job left running may belong
    /// to one that is alive: only jobs whose lease has expired are queued
    /// again (as every lease does anyway). A daemon that restarts finds
    /// its own jobs again once their leases end.
    async fn reclaim_running_jobs(&self, now_ms: i64) -> Result<usize, StoreError> {
        let c = self.conn().await?;
        let n = c
            .exec(
                "UPDATE jobs SET state='queued', lease_until=NULL, owner=NULL
                 WHERE state='running' AND lease_until < $1",
                &[&now_ms],
            )
            .await
            .map_err(|e| self.fail("re-queueing expired leases", e))?;
        Ok(n as usize)
    }

    async fn complete_job(&self, attempt: Attempt<'_>, now_ms: i64) -> Result<bool, StoreError> {
        let c = self.conn().await?;
        complete_in(self, &c, &attempt, None, now_ms).await
    }

    async fn fail_job(
        &self,
        attempt: Attempt<'_>,
        error: &str,
        now_ms: i64,
        retry: Retry,
    ) -> Result<Option<JobState>, StoreError> {
        Ok(in_tx!(self, "recording a failed job", |tx| {
            fail_in(self, &tx, &attempt, error, now_ms, retry).await?
        }))
    }

    async fn finish_job(&self, f: Finish<'_>, now_ms: i64) -> Result<Finished, StoreError> {
        let Finish {
            attempt,
            outcome,
            run,
            mut job_entry,
            mut egress,
            next,
            again_at_ms,
        } = f;
        Ok(in_tx!(self, "settling a job", |tx| {
            let settled = match &outcome {
                Outcome::Done => {
                    if complete_in(self, &tx, &attempt, run.summary.as_deref(), now_ms).await? {
                        Settled::Done
                    } else {
                        Settled::LeaseLost
                    }
                }
                Outcome::Failed { error, retry } => {
                    match fail_in(self, &tx, &attempt, error, now_ms, *retry).await? {
                        Some(JobState::Dead) => Settled::Dead,
                        Some(_) => Settled::Queued,
                        None => Settled::LeaseLost,
                    }
                }
            };
            if let (Settled::Done, Some(at)) = (settled, again_at_ms) {
                again_in(self, &tx, attempt.id, at, now_ms).await?;
            }
            record_run_in(self, &tx, &run, now_ms).await?;
            job_entry.outcome = settled.describe().to_owned();
            egress.insert(0, job_entry);
            append_audit_in(self, &tx, &egress).await?;
            let next = match &next {
                None => None,
                Some(n) => {
                    let mut lease = Leasing {
                        store: self,
                        tx: &tx,
                        now_ms,
                        until: now_ms + n.lease_ms,
                        owner: attempt.owner,
                        per_tenant: &n.per_tenant,
                        skip: &n.skip,
                        running: BTreeMap::new(),
                        picked: Vec::new(),
                    };
                    lease.run(1).await?.pop()
                }
            };
            Finished { settled, next }
        }))
    }

    async fn extend_lease(&self, attempt: Attempt<'_>, until_ms: i64) -> Result<bool, StoreError> {
        let c = self.conn().await?;
        let n = c
            .exec(
                "UPDATE jobs SET lease_until=greatest(lease_until, $4)
                 WHERE id=$1 AND attempts=$2 AND owner=$3 AND state='running'",
                &[
                    &attempt.id,
                    &i64::from(attempt.attempt),
                    &attempt.owner,
                    &until_ms,
                ],
            )
            .await
            .map_err(|e| self.fail("extending a lease", e))?;
        Ok(n == 1)
    }

    async fn release_job(
        &self,
        attempt: Attempt<'_>,
        run_after_ms: i64,
    ) -> Result<bool, StoreError> {
        let c = self.conn().await?;
        let n = c
            .exec(
                "UPDATE jobs SET state='queued', lease_until=NULL, owner=NULL,
                                 attempts=greatest(attempts-1, 0), run_after=$4
                 WHERE id=$1 AND attempts=$2 AND owner=$3 AND state='running'",
                &[
                    &attempt.id,
                    &i64::from(attempt.attempt),
                    &attempt.owner,
                    &run_after_ms,
                ],
            )
            .await
            .map_err(|e| self.fail("releasing a job", e))?;
        Ok(n == 1)
    }

    async fn retry_job(&self, tenant: &str, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let c = self.conn().await?;
        let n = c
            .exec(
                "WITH back AS (
                    UPDATE jobs SET state='queued', attempts=0, run_after=$3
                    WHERE id=$1 AND tenant=$2 AND state='dead' RETURNING id)
                 SELECT pg_notify($4, $5) FROM back",
                &[&id, &tenant, &now_ms, &&*self.channel, &super::JOBS],
            )
            .await
            .map_err(|e| self.fail("retrying a job", e))?;
        Ok(n > 0)
    }

    async fn job(&self, id: i64) -> Result<Option<Job>, StoreError> {
        let c = self.conn().await?;
        Ok(c.row_opt(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id=$1"),
            &[&id],
        )
        .await
        .map_err(|e| self.fail("reading a job", e))?
        .as_ref()
        .map(job))
    }

    async fn list_jobs(
        &self,
        tenant: &str,
        state: Option<JobState>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .rows(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs
                     WHERE tenant=$1 AND ($2::text IS NULL OR state=$2)
                     ORDER BY id DESC LIMIT $3"
                ),
                &[
                    &tenant,
                    &state.map(JobState::as_str),
                    &i64::from(limit.clamp(1, 10_000)),
                ],
            )
            .await
            .map_err(|e| self.fail("listing jobs", e))?;
        Ok(rows.iter().map(job).collect())
    }

    async fn queue_counts(
        &self,
        tenant: &str,
        instance: &str,
    ) -> Result<(i64, i64, i64), StoreError> {
        let c = self.conn().await?;
        let r = c
            .row(
                "SELECT count(*) FILTER (WHERE state='queued'),
                        count(*) FILTER (WHERE state='running'),
                        count(*) FILTER (WHERE state='dead')
                 FROM jobs WHERE state IN ('queued', 'running', 'dead')
                   AND tenant=$1 AND instance=$2",
                &[&tenant, &instance],
            )
            .await
            .map_err(|e| self.fail("counting jobs", e))?;
        Ok((r.get(0), r.get(1), r.get(2)))
    }

    async fn queue_depths(&self) -> Result<Vec<QueueDepth>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .rows(
                "SELECT tenant, instance, count(*) FILTER (WHERE state='queued'),
                        count(*) FILTER (WHERE state='running'),
                        count(*) FILTER (WHERE state='dead')
                 FROM jobs WHERE state IN ('queued', 'running', 'dead')
                 GROUP BY tenant, instance",
                &[],
            )
            .await
            .map_err(|e| self.fail("counting jobs", e))?;
        Ok(rows
            .iter()
            .map(|r| QueueDepth {
                tenant: r.get(0),
                instance: r.get(1),
                queued: r.get(2),
                running: r.get(3),
                dead: r.get(4),
            })
            .collect())
    }

    async fn next_wake_ms(&self) -> Result<Option<i64>, StoreError> {
        let c = self.conn().await?;
        Ok(c.row(
            "SELECT least(
                    (SELECT min(run_after) FROM jobs WHERE state='queued'),
                    (SELECT min(lease_until) FROM jobs WHERE state='running'))",
            &[],
        )
        .await
        .map_err(|e| self.fail("reading the queue's next wake-up", e))?
        .get(0))
    }

    async fn prune_done_jobs(&self, before_ms: i64) -> Result<u64, StoreError> {
        let c = self.conn().await?;
        c.exec(
            "DELETE FROM jobs WHERE id IN (
                SELECT id FROM jobs WHERE state='done' AND finished_at < $1 LIMIT $2)",
            &[&before_ms, &PRUNE_BATCH],
        )
        .await
        .map_err(|e| self.fail("pruning finished jobs", e))
    }
}

/// One lease call inside its transaction, under the lease lock: the same
/// walk as the SQLite backend's (see `crate::queue` for the rules), one
/// index seek per (tenant, instance) pair.
struct Leasing<'a, C> {
    store: &'a PgStore,
    tx: &'a C,
    now_ms: i64,
    until: i64,
    owner: &'a str,
    per_tenant: &'a TenantConcurrency,
    skip: &'a BTreeSet<InstanceKey>,
    running: BTreeMap<String, usize>,
    picked: Vec<Job>,
}

impl<C: GenericClient + Sync> Leasing<'_, C> {
    fn fail(&self, e: tokio_postgres::Error) -> StoreError {
        self.store.fail("leasing jobs", e)
    }

    async fn run(&mut self, limit: usize) -> Result<Vec<Job>, StoreError> {
        // The deployment-wide lease lock, held until the transaction ends:
        // leases of all daemons take turns, so the per-tenant counts below
        // stay true while this walk uses them. The three statements are
        // sent at once (pipelined, in this order), so waiting for the lock
        // and reading the counts cost one round trip.
        let now: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&self.now_ms];
        let (locked, reclaimed, running) = tokio::join!(
            biased;
            self.tx.exec(
                "SELECT pg_advisory_xact_lock(hashtext('switchyard-lease:' || current_schema()))",
                &[],
            ),
            self.tx.exec(
                "UPDATE jobs SET state='queued', lease_until=NULL, owner=NULL
                 WHERE state='running' AND lease_until < $1",
                &now,
            ),
            self.tx.rows(
                "SELECT tenant, count(*) FROM jobs WHERE state='running' GROUP BY tenant",
                &[],
            ),
        );
        locked.map_err(|e| self.store.fail("waiting for the lease lock", e))?;
        reclaimed.map_err(|e| self.fail(e))?;
        for r in running.map_err(|e| self.fail(e))? {
            self.running.insert(r.get(0), r.get::<_, i64>(1) as usize);
        }
        let start = self
            .store
            .lease_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut cursor = start.clone();
        let mut pos = start.clone();
        let mut wrapped = start.is_none();
        let mut order: Vec<InstanceKey> = Vec::new();
        let mut exhausted: BTreeSet<InstanceKey> = BTreeSet::new();
        let mut taken: BTreeSet<String> = BTreeSet::new();
        let mut whole_cycle = false;
        while self.picked.len() < limit && order.len() < LEASE_VISITS {
            let pair = match self.pair_after(pos.as_ref()).await? {
                Some(p) => p,
                None if !wrapped => {
                    wrapped = true;
                    pos = None;
                    continue;
                }
                None => {
                    whole_cycle = true;
                    break;
                }
            };
            if wrapped && start.as_ref().is_some_and(|s| &pair > s) {
                whole_cycle = true;
                break;
            }
            pos = Some(pair.clone());
            order.push(pair.clone());
            if self.try_pick(&pair, &mut taken, &mut exhausted).await? {
                cursor = Some(pair);
            }
        }
        if !whole_cycle && self.picked.len() < limit {
            cursor = pos;
        }
        while whole_cycle && self.picked.len() < limit {
            taken.clear();
            let before = self.picked.len();
            for pair in &order {
                if self.picked.len() >= limit {
                    break;
                }
                if self.try_pick(pair, &mut taken, &mut exhausted).await? {
                    cursor = Some(pair.clone());
                }
            }
            if self.picked.len() == before {
                break;
            }
        }
        *self
            .store
            .lease_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = cursor;
        Ok(std::mem::take(&mut self.picked))
    }

    /// The first pair with queued jobs after `pos` (or the first of all).
    async fn pair_after(
        &self,
        pos: Option<&InstanceKey>,
    ) -> Result<Option<InstanceKey>, StoreError> {
        let row = match pos {
            None => {
                self.tx
                    .row_opt(
                        "SELECT tenant, instance FROM jobs WHERE state='queued'
                     ORDER BY tenant, instance LIMIT 1",
                        &[],
                    )
                    .await
            }
            Some((t, i)) => {
                self.tx
                    .row_opt(
                        "SELECT tenant, instance FROM jobs WHERE state='queued'
                       AND (tenant, instance) > ($1, $2)
                     ORDER BY tenant, instance LIMIT 1",
                        &[t, i],
                    )
                    .await
            }
        }
        .map_err(|e| self.fail(e))?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Leases the oldest ready job of `pair`, if the rules allow; returns
    /// whether it did.
    async fn try_pick(
        &mut self,
        pair: &InstanceKey,
        taken: &mut BTreeSet<String>,
        exhausted: &mut BTreeSet<InstanceKey>,
    ) -> Result<bool, StoreError> {
        let tenant = &pair.0;
        if self.skip.contains(pair) || exhausted.contains(pair) || taken.contains(tenant) {
            return Ok(false);
        }
        let running = self.running.get(tenant).copied().unwrap_or(0);
        if running >= self.per_tenant.of(tenant) {
            return Ok(false);
        }
        let row = self
            .tx
            .row_opt(
                &format!(
                    "UPDATE jobs SET state='running', attempts=attempts+1, lease_until=$4, owner=$5
                     WHERE id = (
                        SELECT id FROM jobs WHERE state='queued' AND tenant=$1 AND instance=$2
                          AND run_after <= $3
                          AND NOT EXISTS (SELECT 1 FROM instance_state s
                                          WHERE s.tenant=$1 AND s.instance=$2 AND s.paused)
                        ORDER BY run_after, id LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING {JOB_COLUMNS}"
                ),
                &[&pair.0, &pair.1, &self.now_ms, &self.until, &self.owner],
            )
            .await
            .map_err(|e| self.fail(e))?;
        let Some(row) = row else {
            exhausted.insert(pair.clone());
            return Ok(false);
        };
        self.picked.push(job(&row));
        self.running.insert(tenant.clone(), running + 1);
        taken.insert(tenant.clone());
        Ok(true)
    }
}
