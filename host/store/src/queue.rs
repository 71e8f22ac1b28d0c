//! The durable job queue: webhook deliveries and scheduled runs wait here
//! until a worker has processed them.
//!
//! - **At least once.** A worker leases a job for a while; if it neither
//!   completes nor fails it before the lease ends (it crashed), the job is
//!   leased again.
//! - **Fencing.** A lease names its owner and the attempt it is for;
//!   completing, failing or releasing a job is accepted only from the
//!   holder of the current attempt, so a worker whose lease ran out cannot
//!   overwrite the outcome of the one that took over.
//! - **Retries** back off exponentially (1 s, 2 s, 4 s, … capped at 10 min)
//!   with ±20 % jitter, up to the job's maximum attempts; then the job is
//!   dead-lettered and stays until retried by hand.
//! - **Idempotency.** A job may carry a key, unique per (tenant, instance):
//!   enqueuing it again is reported as a duplicate and adds nothing.
//! - **Fairness.** A lease walks the (tenant, instance) pairs that have
//!   queued jobs, from where the previous lease stopped, and takes one
//!   ready job per tenant per pass; no tenant gets more than its
//!   concurrency limit of running jobs, and no backlog of one tenant can
//!   hide another tenant's job (each pair costs one index seek, whatever
//!   its backlog). Jobs of paused instances are skipped, not leased.

use std::collections::{BTreeMap, BTreeSet};

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore;
use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use crate::admin::PRUNE_BATCH;
use crate::sqlite::backend;
use crate::{AuditEntry, InstanceKey, SqliteStore, StoreError};

/// Longest retry delay.
const MAX_BACKOFF_MS: i64 = 10 * 60 * 1000;
/// (tenant, instance) pairs one lease call looks at, at most. Bounds the
/// work per call when many instances have only jobs waiting out a back-off;
/// the next call continues where this one stopped.
pub(crate) const LEASE_VISITS: usize = 1000;

/// How many jobs of one instance are in each live state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// Tenant.
    pub tenant: String,
    /// Instance.
    pub instance: String,
    /// Waiting to run (including retries that are backing off).
    pub queued: i64,
    /// Leased by a worker.
    pub running: i64,
    /// Dead-lettered.
    pub dead: i64,
}

/// How many jobs each tenant may have running at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantConcurrency {
    /// The limit of tenants not listed.
    pub default: usize,
    /// Tenants with their own limit.
    pub tenants: BTreeMap<String, usize>,
}

impl TenantConcurrency {
    /// The same limit for every tenant.
    pub fn uniform(limit: usize) -> Self {
        Self {
            default: limit,
            tenants: BTreeMap::new(),
        }
    }

    /// The limit of `tenant`.
    pub fn of(&self, tenant: &str) -> usize {
        self.tenants.get(tenant).copied().unwrap_or(self.default)
    }
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// Tenant.
    pub tenant: String,
    /// Instance.
    pub instance: String,
    /// `webhook` or `job`.
    pub kind: String,
    /// Webhook route or job name.
    pub name: String,
    /// What the worker needs (JSON).
    pub payload: Vec<u8>,
    /// Deduplication key, unique per (tenant, instance).
    pub idempotency_key: Option<String>,
    /// Attempts before the job is dead-lettered.
    pub max_attempts: u32,
}

/// State of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting to run (possibly after a back-off).
    Queued,
    /// Leased by a worker.
    Running,
    /// Finished.
    Done,
    /// Failed its last attempt.
    Dead,
}

impl JobState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }

    /// The state a person names (`queued`, `running`, `done`, `dead`).
    pub fn from_name(s: &str) -> Option<Self> {
        [Self::Queued, Self::Running, Self::Done, Self::Dead]
            .into_iter()
            .find(|st| st.as_str() == s)
    }

    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "running" => Self::Running,
            "done" => Self::Done,
            "dead" => Self::Dead,
            _ => Self::Queued,
        }
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Job {
    /// Id.
    pub id: i64,
    /// Tenant.
    pub tenant: String,
    /// Instance.
    pub instance: String,
    /// `webhook` or `job`.
    pub kind: String,
    /// Route or job name.
    pub name: String,
    /// Payload.
    #[serde(skip)]
    pub payload: Vec<u8>,
    /// State.
    pub state: JobState,
    /// Attempts made (including a running one).
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Not before (ms since the epoch).
    pub run_after_ms: i64,
    /// Last failure.
    pub last_error: Option<String>,
    /// What the job returned, once done (scheduled jobs; cut at
    /// [`crate::MAX_SUMMARY_CHARS`]).
    pub summary: Option<String>,
}

impl Job {
    /// This lease of the job, held by `owner`, for fencing.
    pub fn attempt<'a>(&'a self, owner: &'a str) -> Attempt<'a> {
        Attempt {
            id: self.id,
            attempt: self.attempts,
            owner,
        }
    }
}

/// One leased attempt of a job: only its holder may settle it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt<'a> {
    /// Job id.
    pub id: i64,
    /// The attempt number the lease was for.
    pub attempt: u32,
    /// Who holds the lease.
    pub owner: &'a str,
}

/// What a lease call asks for.
#[derive(Debug, Clone, Copy)]
pub struct LeaseRequest<'a> {
    /// Who leases (a worker id unique per process).
    pub owner: &'a str,
    /// How long the lease lasts.
    pub lease_ms: i64,
    /// Jobs wanted at most.
    pub limit: usize,
    /// Running jobs allowed per tenant.
    pub per_tenant: &'a TenantConcurrency,
    /// Instances whose jobs are not leased (paused).
    pub skip: &'a BTreeSet<InstanceKey>,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Back off and retry while attempts remain; an upstream's
    /// `Retry-After` (ms) overrides a shorter back-off.
    Backoff {
        /// The upstream's Retry-After, capped by the caller.
        retry_after_ms: Option<i64>,
    },
    /// The failure is permanent (the input can never be processed):
    /// dead-letter now.
    Never,
}

/// How an attempt ended, for [`JobQueue::finish_job`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Done,
    /// It failed.
    Failed {
        /// Why.
        error: String,
        /// Whether to retry.
        retry: Retry,
    },
}

/// An attempt to settle, with what to record about it.
#[derive(Debug, Clone)]
pub struct Finish<'a> {
    /// The attempt.
    pub attempt: Attempt<'a>,
    /// How it ended.
    pub outcome: Outcome,
    /// Its run, for the statistics.
    pub run: crate::schedule::RunRecord,
    /// Its audit entry (the outcome is filled in).
    pub job_entry: AuditEntry,
    /// The audit entries of what it did besides its result: its egress
    /// requests, and the storage migration step it waited for.
    pub egress: Vec<AuditEntry>,
    /// Lease the worker slot's next job in the same transaction.
    pub next: Option<NextLease>,
    /// A job that succeeded and asked to run again (`invocation.run-again`):
    /// its next run is queued for this time (ms since the epoch) in the same
    /// transaction, keyed like a scheduled run so that the schedule waits
    /// behind it.
    pub again_at_ms: Option<i64>,
}

/// What [`Finish::next`] leases under (as [`LeaseRequest`], for one job).
#[derive(Debug, Clone)]
pub struct NextLease {
    /// How long the lease lasts.
    pub lease_ms: i64,
    /// Running jobs allowed per tenant.
    pub per_tenant: TenantConcurrency,
    /// Instances whose jobs are not leased.
    pub skip: BTreeSet<InstanceKey>,
}

/// What [`JobQueue::finish_job`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// What became of the job.
    pub settled: Settled,
    /// The slot's next job, when one was asked for and ready.
    pub next: Option<Job>,
}

/// What became of a finished job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Done.
    Done,
    /// Queued again after a back-off.
    Queued,
    /// Dead-lettered.
    Dead,
    /// Another worker holds the job now; this attempt's outcome was not
    /// applied.
    LeaseLost,
}

impl Settled {
    /// As the audit log says it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Done => "ok",
            Self::Queued => "failed (queued)",
            Self::Dead => "failed (dead)",
            Self::LeaseLost => "lease lost: another attempt took the job over",
        }
    }
}

/// The outcome of [`SqliteStore::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's id (the existing one for a duplicate).
    pub id: i64,
    /// Whether the idempotency key had been seen.
    pub duplicate: bool,
}

/// Retry delay after `attempts` failures: exponential, capped, ±20 % jitter
/// so that jobs failing together do not retry together.
pub fn backoff_ms(attempts: u32) -> i64 {
    let base = 1000i64.saturating_mul(1i64 << attempts.saturating_sub(1).min(20));
    let base = base.min(MAX_BACKOFF_MS);
    let jitter = (OsRng.next_u32() % 401) as i64 - 200; // -200..=200 per mille
    base + base * jitter / 1000
}

pub(crate) const JOB_COLUMNS: &str = "id, tenant, instance, kind, name, payload, state, attempts, \
                           max_attempts, run_after, last_error, summary";

fn row_to_job(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        tenant: r.get(1)?,
        instance: r.get(2)?,
        kind: r.get(3)?,
        name: r.get(4)?,
        payload: r.get(5)?,
        state: JobState::parse(&r.get::<_, String>(6)?),
        attempts: r.get(7)?,
        max_attempts: r.get(8)?,
        run_after_ms: r.get(9)?,
        last_error: r.get(10)?,
        summary: r.get(11)?,
    })
}

/// A change another process sharing the store made, announced to this one
/// (see [`JobQueue::watch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A job was queued: idle workers should look at the queue.
    JobsQueued,
    /// An instance was paused or resumed.
    PausesChanged,
    /// An API-managed tenant's configuration changed.
    ConfigsChanged,
    /// Announcements may have been lost (the store's connection was down
    /// and is back, or was just opened): re-read whatever is cached.
    Missed,
}

/// The task that delivers [`Change`]s; it stops when this is dropped.
#[derive(Debug)]
pub struct Watching(tokio::task::JoinHandle<()>);

impl Watching {
    pub(crate) fn new(task: tokio::task::JoinHandle<()>) -> Self {
        Self(task)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The durable job queue (see the module docs for its guarantees).
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Calls `on_change` whenever another process sharing this store
    /// queues a job or pauses an instance, for as long as the returned
    /// handle lives. None for a store only one process uses (SQLite), where
    /// nothing changes behind this process's back. Must be called within a
    /// Tokio runtime; `on_change` runs on the store's task and must not block.
    fn watch(&self, on_change: Box<dyn Fn(Change) + Send + Sync>) -> Option<Watching> {
        let _ = on_change;
        None
    }

    /// Stores a job, ready now. A repeated idempotency key adds nothing.
    async fn enqueue(&self, job: NewJob, now_ms: i64) -> Result<Enqueued, StoreError>;

    /// Leases up to `req.limit` ready jobs for `req.lease_ms`: queued ones
    /// whose time has come, and running ones whose lease expired (their
    /// worker died). Fair across tenants (see the module docs).
    async fn lease(&self, now_ms: i64, req: LeaseRequest<'_>) -> Result<Vec<Job>, StoreError>;

    /// Re-queues every job left running. Only for a store one process owns
    /// (the embedded SQLite default), at start-up: whatever was running
    /// belonged to a process that is gone. Returns how many were re-queued.
    async fn reclaim_running_jobs(&self, now_ms: i64) -> Result<usize, StoreError>;

    /// Marks a leased job done. False when `attempt` no longer holds the
    /// lease (it expired and another worker took the job over): the
    /// outcome is not recorded.
    async fn complete_job(&self, attempt: Attempt<'_>, now_ms: i64) -> Result<bool, StoreError>;

    /// Records a failed attempt: back to the queue after a back-off, or
    /// dead after the last attempt (or at once for [`Retry::Never`]).
    /// Returns the new state, or None when `attempt` no longer holds the
    /// lease.
    async fn fail_job(
        &self,
        attempt: Attempt<'_>,
        error: &str,
        now_ms: i64,
        retry: Retry,
    ) -> Result<Option<JobState>, StoreError>;

    /// Settles an attempt together with its record: the job's new state,
    /// the run statistics and the audit entries commit in one transaction
    /// (one write per finished job, and no finished job without its
    /// record). `job_entry`'s outcome is set to what became of the job.
    ///
    /// With `f.next`, the same transaction also leases the next job for
    /// this worker slot (as fairly as [`JobQueue::lease`]), so a busy worker
    /// spends one write per job on the queue, not two.
    async fn finish_job(&self, f: Finish<'_>, now_ms: i64) -> Result<Finished, StoreError>;

    /// Extends the lease of a running attempt to at least `until_ms`: the
    /// worker's heartbeat while the job runs, so that a lease can be short
    /// (a dead daemon's jobs are taken over soon) and still never expire
    /// under a live one. False when `attempt` no longer holds the lease:
    /// another worker took the job over and this attempt's outcome will not
    /// be recorded.
    async fn extend_lease(&self, attempt: Attempt<'_>, until_ms: i64) -> Result<bool, StoreError>;

    /// Puts a leased job back without counting the attempt (it could not
    /// run: no capacity), to be leased again from `run_after_ms`. False
    /// when `attempt` no longer holds the lease.
    async fn release_job(
        &self,
        attempt: Attempt<'_>,
        run_after_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Puts a dead job back in the queue with a fresh set of attempts.
    async fn retry_job(&self, tenant: &str, id: i64, now_ms: i64) -> Result<bool, StoreError>;

    /// A job by id.
    async fn job(&self, id: i64) -> Result<Option<Job>, StoreError>;

    /// Jobs of `tenant`, newest first, optionally in one state.
    async fn list_jobs(
        &self,
        tenant: &str,
        state: Option<JobState>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError>;

    /// Jobs of an instance by state: `(queued, running, dead)`.
    async fn queue_counts(
        &self,
        tenant: &str,
        instance: &str,
    ) -> Result<(i64, i64, i64), StoreError>;

    /// [`JobQueue::queue_counts`] of every instance that has jobs, in one query.
    async fn queue_depths(&self) -> Result<Vec<QueueDepth>, StoreError>;

    /// When a lease may next find something: the earliest `run_after` of a
    /// queued job or lease end of a running one (ms), or None when the
    /// queue holds neither. A read; workers sleep until then.
    async fn next_wake_ms(&self) -> Result<Option<i64>, StoreError>;

    /// Whether the store answers: a cheap read (readiness checks).
    async fn ping(&self) -> Result<(), StoreError> {
        self.next_wake_ms().await.map(drop)
    }

    /// Deletes up to a batch of jobs that finished before `before_ms`;
    /// returns how many (call again while it returns a full batch).
    async fn prune_done_jobs(&self, before_ms: i64) -> Result<u64, StoreError>;
}

// Each of these reads one partial index (schema v4): the earliest due
// queued job and the earliest expiring lease; expired leases; done jobs
// past retention. Without statistics SQLite prefers the `(state, …)` index
// and walks every row of the state, so each names its index (a missing
// index is then an error, not a slow scan); a plan test checks them.

/// When a lease may next find something. The aggregate `min` skips NULLs
/// (the scalar one would not).
const NEXT_WAKE: &str = "SELECT min(t) FROM (
    SELECT min(run_after) AS t FROM jobs INDEXED BY jobs_due WHERE state='queued'
    UNION ALL
    SELECT min(lease_until) FROM jobs INDEXED BY jobs_running WHERE state='running')";

/// Queues again the jobs whose lease expired.
const REQUEUE_EXPIRED: &str = "UPDATE jobs INDEXED BY jobs_running
    SET state='queued', lease_until=NULL, owner=NULL
    WHERE state='running' AND lease_until < ?1";

/// Deletes a batch of done jobs that finished before `?1`.
const PRUNE_DONE: &str = "DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs INDEXED BY jobs_done WHERE state='done' AND finished_at < ?1 LIMIT ?2)";

/// Queues the next run of job `id`, which asked to run again at `at_ms`.
/// Its key, `schedule:<job>:again-<id>`, falls in the range the schedule
/// checks for a pending run ([`crate::InstanceStore::fire_schedule`]), so
/// a scheduled run that comes due meanwhile is skipped rather than run
/// beside it; the id keeps a second settlement of the same run from
/// queueing two.
fn again_in(
    tx: &rusqlite::Savepoint<'_>,
    id: i64,
    at_ms: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO jobs (tenant, instance, kind, name, payload, idempotency_key,
                           state, attempts, max_attempts, run_after, created_at)
         SELECT tenant, instance, 'job', name, x'', 'schedule:' || name || ':again-' || id,
                'queued', 0, max_attempts, ?2, ?3
         FROM jobs WHERE id = ?1 AND kind = 'job'
         ON CONFLICT (tenant, instance, idempotency_key) DO NOTHING",
        params![id, at_ms.max(now_ms), now_ms],
    )
    .map_err(backend)?;
    Ok(())
}

#[async_trait]
impl JobQueue for SqliteStore {
    async fn enqueue(&self, job: NewJob, now_ms: i64) -> Result<Enqueued, StoreError> {
        self.with_conn(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO jobs (tenant, instance, kind, name, payload, idempotency_key,
                                       state, attempts, max_attempts, run_after, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', 0, ?7, ?8, ?8)
                     ON CONFLICT (tenant, instance, idempotency_key) DO NOTHING",
                )
                .map_err(backend)?;
            let inserted = insert
                .execute(params![
                    job.tenant,
                    job.instance,
                    job.kind,
                    job.name,
                    job.payload,
                    job.idempotency_key,
                    job.max_attempts.max(1),
                    now_ms
                ])
                .map_err(backend)?;
            drop(insert);
            let out = if inserted == 1 {
                Enqueued {
                    id: tx.last_insert_rowid(),
                    duplicate: false,
                }
            } else {
                let id = tx
                    .prepare_cached(
                        "SELECT id FROM jobs
                         WHERE tenant=?1 AND instance=?2 AND idempotency_key=?3",
                    )
                    .and_then(|mut st| {
                        st.query_row(
                            params![job.tenant, job.instance, job.idempotency_key],
                            |r| r.get(0),
                        )
                    })
                    .map_err(backend)?;
                Enqueued {
                    id,
                    duplicate: true,
                }
            };
            tx.commit().map_err(backend)?;
            Ok(out)
        })
        .await
    }

    async fn lease(&self, now_ms: i64, req: LeaseRequest<'_>) -> Result<Vec<Job>, StoreError> {
        let owner = req.owner.to_owned();
        let (lease_ms, limit) = (req.lease_ms, req.limit);
        let per_tenant = req.per_tenant.clone();
        let skip = req.skip.clone();
        let cursor = self.lease_cursor.clone();
        self.with_conn(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let mut cursor = cursor.lock().unwrap_or_else(|p| p.into_inner());
            let mut lease = Leasing {
                tx: &tx,
                now_ms,
                until: now_ms + lease_ms,
                owner: &owner,
                per_tenant: &per_tenant,
                skip: &skip,
                running: BTreeMap::new(),
                picked: Vec::new(),
            };
            let jobs = lease.run(limit, &mut cursor)?;
            drop(cursor);
            tx.commit().map_err(backend)?;
            Ok(jobs)
        })
        .await
    }

    async fn reclaim_running_jobs(&self, now_ms: i64) -> Result<usize, StoreError> {
        self.with_conn(move |c| {
            c.execute(
                "UPDATE jobs SET state='queued', lease_until=NULL, owner=NULL, run_after=?1
                 WHERE state='running'",
                params![now_ms],
            )
            .map_err(backend)
        })
        .await
    }

    async fn complete_job(&self, attempt: Attempt<'_>, now_ms: i64) -> Result<bool, StoreError> {
        let (id, n, owner) = (attempt.id, attempt.attempt, attempt.owner.to_owned());
        self.with_conn(move |c| complete_in(c, id, n, &owner, None, now_ms))
            .await
    }

    async fn fail_job(
        &self,
        attempt: Attempt<'_>,
        error: &str,
        now_ms: i64,
        retry: Retry,
    ) -> Result<Option<JobState>, StoreError> {
        let error = error.to_owned();
        let (id, n, owner) = (attempt.id, attempt.attempt, attempt.owner.to_owned());
        self.with_conn(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let state = fail_in(&tx, id, n, &owner, &error, now_ms, retry)?;
            tx.commit().map_err(backend)?;
            Ok(state)
        })
        .await
    }

    async fn finish_job(&self, f: Finish<'_>, now_ms: i64) -> Result<Finished, StoreError> {
        let (id, n, owner) = (f.attempt.id, f.attempt.attempt, f.attempt.owner.to_owned());
        let Finish {
            outcome,
            run,
            mut job_entry,
            mut egress,
            next,
            again_at_ms,
            ..
        } = f;
        let cursor = self.lease_cursor.clone();
        self.with_conn(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let settled = match &outcome {
                Outcome::Done => {
                    if complete_in(&tx, id, n, &owner, run.summary.as_deref(), now_ms)? {
                        Settled::Done
                    } else {
                        Settled::LeaseLost
                    }
                }
                Outcome::Failed { error, retry } => {
                    match fail_in(&tx, id, n, &owner, error, now_ms, *retry)? {
                        Some(JobState::Dead) => Settled::Dead,
                        Some(_) => Settled::Queued,
                        None => Settled::LeaseLost,
                    }
                }
            };
            if let (Settled::Done, Some(at)) = (settled, again_at_ms) {
                again_in(&tx, id, at, now_ms)?;
            }
            // The attempt ran whether or not its lease held: its run and
            // what it did are recorded either way.
            crate::schedule::record_run_in(&tx, &run, now_ms)?;
            job_entry.outcome = settled.describe().to_owned();
            egress.insert(0, job_entry);
            crate::admin::append_audit_in(&tx, &egress)?;
            let next = match &next {
                None => None,
                Some(n) => {
                    let mut cursor = cursor.lock().unwrap_or_else(|p| p.into_inner());
                    let mut lease = Leasing {
                        tx: &tx,
                        now_ms,
                        until: now_ms + n.lease_ms,
                        owner: &owner,
                        per_tenant: &n.per_tenant,
                        skip: &n.skip,
                        running: BTreeMap::new(),
                        picked: Vec::new(),
                    };
                    lease.run(1, &mut cursor)?.pop()
                }
            };
            tx.commit().map_err(backend)?;
            Ok(Finished { settled, next })
        })
        .await
    }

    async fn extend_lease(&self, attempt: Attempt<'_>, until_ms: i64) -> Result<bool, StoreError> {
        let (id, n, owner) = (attempt.id, attempt.attempt, attempt.owner.to_owned());
        self.with_conn(move |c| {
            c.execute(
                "UPDATE jobs SET lease_until=max(lease_until, ?4)
                 WHERE id=?1 AND attempts=?2 AND owner=?3 AND state='running'",
                params![id, n, owner, until_ms],
            )
            .map(|changed| changed == 1)
            .map_err(backend)
        })
        .await
    }

    async fn release_job(
        &self,
        attempt: Attempt<'_>,
        run_after_ms: i64,
    ) -> Result<bool, StoreError> {
        let (id, n, owner) = (attempt.id, attempt.attempt, attempt.owner.to_owned());
        self.with_conn(move |c| {
            c.execute(
                "UPDATE jobs SET state='queued', lease_until=NULL, owner=NULL,
                                 attempts=max(attempts-1, 0), run_after=?4
                 WHERE id=?1 AND attempts=?2 AND owner=?3 AND state='running'",
                params![id, n, owner, run_after_ms],
            )
            .map(|changed| changed == 1)
            .map_err(backend)
        })
        .await
    }

    async fn retry_job(&self, tenant: &str, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let t = tenant.to_owned();
        self.with_conn(move |c| {
            c.execute(
                "UPDATE jobs SET state='queued', attempts=0, run_after=?3
                 WHERE id=?1 AND tenant=?2 AND state='dead'",
                params![id, t, now_ms],
            )
            .map(|n| n > 0)
            .map_err(backend)
        })
        .await
    }

    async fn job(&self, id: i64) -> Result<Option<Job>, StoreError> {
        self.with_read(move |c| {
            c.query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id=?1"),
                params![id],
                row_to_job,
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn list_jobs(
        &self,
        tenant: &str,
        state: Option<JobState>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let t = tenant.to_owned();
        let s = state.map(JobState::as_str);
        self.with_read(move |c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant=?1 AND (?2 IS NULL OR state=?2)
                     ORDER BY id DESC LIMIT ?3"
                ))
                .map_err(backend)?;
            let rows = st
                .query_map(params![t, s, limit.clamp(1, 10_000)], row_to_job)
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn queue_counts(
        &self,
        tenant: &str,
        instance: &str,
    ) -> Result<(i64, i64, i64), StoreError> {
        let (t, i) = (tenant.to_owned(), instance.to_owned());
        self.with_read(move |c| {
            // Three counts over the (state, tenant, instance) index: a range
            // of index entries each, never the instance's done history.
            c.query_row(
                "SELECT
                    (SELECT count(*) FROM jobs WHERE state='queued' AND tenant=?1 AND instance=?2),
                    (SELECT count(*) FROM jobs WHERE state='running' AND tenant=?1 AND instance=?2),
                    (SELECT count(*) FROM jobs WHERE state='dead' AND tenant=?1 AND instance=?2)",
                params![t, i],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(backend)
        })
        .await
    }

    async fn queue_depths(&self) -> Result<Vec<QueueDepth>, StoreError> {
        self.with_read(|c| {
            let mut stmt = c
                .prepare(
                    "SELECT tenant, instance, count(*) FILTER (WHERE state='queued'),
                            count(*) FILTER (WHERE state='running'),
                            count(*) FILTER (WHERE state='dead')
                     FROM jobs WHERE state IN ('queued', 'running', 'dead')
                     GROUP BY tenant, instance",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(QueueDepth {
                        tenant: r.get(0)?,
                        instance: r.get(1)?,
                        queued: r.get(2)?,
                        running: r.get(3)?,
                        dead: r.get(4)?,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn next_wake_ms(&self) -> Result<Option<i64>, StoreError> {
        self.with_read(|c| c.query_row(NEXT_WAKE, [], |r| r.get(0)).map_err(backend))
            .await
    }

    async fn prune_done_jobs(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.with_conn(move |c| {
            c.execute(PRUNE_DONE, params![before_ms, PRUNE_BATCH])
                .map(|n| n as u64)
                .map_err(backend)
        })
        .await
    }
}

/// Marks attempt `n` of job `id` done if `owner` still holds its lease.
fn complete_in(
    c: &rusqlite::Connection,
    id: i64,
    n: u32,
    owner: &str,
    summary: Option<&str>,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let summary = summary.map(crate::schedule::cut_summary);
    c.prepare_cached(
        "UPDATE jobs SET state='done', lease_until=NULL, owner=NULL, last_error=NULL,
                         finished_at=?4, summary=?5
         WHERE id=?1 AND attempts=?2 AND owner=?3 AND state='running'",
    )
    .and_then(|mut st| st.execute(params![id, n, owner, now_ms, summary]))
    .map(|changed| changed == 1)
    .map_err(backend)
}

/// Records a failed attempt if `owner` still holds its lease; the new
/// state, or None.
fn fail_in(
    tx: &rusqlite::Connection,
    id: i64,
    n: u32,
    owner: &str,
    error: &str,
    now_ms: i64,
    retry: Retry,
) -> Result<Option<JobState>, StoreError> {
    let error: String = error.chars().take(2000).collect();
    let held: Option<u32> = tx
        .prepare_cached(
            "SELECT max_attempts FROM jobs
             WHERE id=?1 AND attempts=?2 AND owner=?3 AND state='running'",
        )
        .and_then(|mut st| st.query_row(params![id, n, owner], |r| r.get(0)))
        .optional()
        .map_err(backend)?;
    let Some(max) = held else {
        return Ok(None);
    };
    let (state, delay) = match retry {
        Retry::Never => (JobState::Dead, 0),
        Retry::Backoff { .. } if n >= max => (JobState::Dead, 0),
        Retry::Backoff { retry_after_ms } => (
            JobState::Queued,
            backoff_ms(n).max(retry_after_ms.unwrap_or(0)),
        ),
    };
    let finished = (state == JobState::Dead).then_some(now_ms);
    tx.prepare_cached(
        "UPDATE jobs SET state=?2, lease_until=NULL, owner=NULL, last_error=?3,
                         run_after=?4, finished_at=?5
         WHERE id=?1",
    )
    .and_then(|mut st| st.execute(params![id, state.as_str(), error, now_ms + delay, finished]))
    .map_err(backend)?;
    Ok(Some(state))
}

/// One lease call, inside its transaction (see the module docs).
struct Leasing<'a> {
    tx: &'a rusqlite::Connection,
    now_ms: i64,
    until: i64,
    owner: &'a str,
    per_tenant: &'a TenantConcurrency,
    skip: &'a BTreeSet<InstanceKey>,
    /// Live leases per tenant, this call's included.
    running: BTreeMap<String, usize>,
    picked: Vec<Job>,
}

impl Leasing<'_> {
    fn run(
        &mut self,
        limit: usize,
        cursor: &mut Option<InstanceKey>,
    ) -> Result<Vec<Job>, StoreError> {
        // Expired leases: their worker died or overran; the jobs are queued
        // again (the attempt they used stays counted).
        self.tx
            .prepare_cached(REQUEUE_EXPIRED)
            .and_then(|mut st| st.execute(params![self.now_ms]))
            .map_err(backend)?;
        {
            let mut st = self
                .tx
                .prepare_cached(
                    "SELECT tenant, count(*) FROM jobs WHERE state='running' GROUP BY tenant",
                )
                .map_err(backend)?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(backend)?;
            for row in rows {
                let (t, n) = row.map_err(backend)?;
                self.running.insert(t, n as usize);
            }
        }
        // First pass: walk the pairs from the cursor, wrapping once.
        let start = cursor.clone();
        let mut pos = start.clone();
        let mut wrapped = start.is_none();
        let mut order: Vec<InstanceKey> = Vec::new();
        let mut exhausted: BTreeSet<InstanceKey> = BTreeSet::new();
        let mut taken: BTreeSet<String> = BTreeSet::new();
        let mut whole_cycle = false;
        while self.picked.len() < limit && order.len() < LEASE_VISITS {
            let pair = match self.pair_after(pos.as_ref())? {
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
            if self.try_pick(&pair, &mut taken, &mut exhausted)? {
                *cursor = Some(pair);
            }
        }
        if !whole_cycle && self.picked.len() < limit {
            // Stopped at the visit bound: the next call goes on from here.
            *cursor = pos;
        }
        // More passes over what was seen, one job per tenant each, while
        // they find anything.
        while whole_cycle && self.picked.len() < limit {
            taken.clear();
            let before = self.picked.len();
            for pair in &order {
                if self.picked.len() >= limit {
                    break;
                }
                if self.try_pick(pair, &mut taken, &mut exhausted)? {
                    *cursor = Some(pair.clone());
                }
            }
            if self.picked.len() == before {
                break;
            }
        }
        Ok(std::mem::take(&mut self.picked))
    }

    /// The first pair with queued jobs after `pos` (or the first of all).
    fn pair_after(&self, pos: Option<&InstanceKey>) -> Result<Option<InstanceKey>, StoreError> {
        let row = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?));
        let Some((t, i)) = pos else {
            return self
                .tx
                .prepare_cached(
                    "SELECT tenant, instance FROM jobs WHERE state='queued'
                     ORDER BY tenant, instance LIMIT 1",
                )
                .and_then(|mut st| st.query_row([], row).optional())
                .map_err(backend);
        };
        // Two seeks, not one row-value comparison: SQLite would walk every
        // queued job of the current pair to get past `(t, i)`.
        let same_tenant = self
            .tx
            .prepare_cached(
                "SELECT tenant, instance FROM jobs WHERE state='queued' AND tenant = ?1
                   AND instance > ?2
                 ORDER BY tenant, instance LIMIT 1",
            )
            .and_then(|mut st| st.query_row(params![t, i], row).optional())
            .map_err(backend)?;
        if same_tenant.is_some() {
            return Ok(same_tenant);
        }
        self.tx
            .prepare_cached(
                "SELECT tenant, instance FROM jobs WHERE state='queued' AND tenant > ?1
                 ORDER BY tenant, instance LIMIT 1",
            )
            .and_then(|mut st| st.query_row(params![t], row).optional())
            .map_err(backend)
    }

    /// Leases the oldest ready job of `pair`, if the rules allow; returns
    /// whether it did.
    fn try_pick(
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
        let id: Option<i64> = self
            .tx
            .prepare_cached(
                "SELECT id FROM jobs WHERE state='queued' AND tenant=?1 AND instance=?2
                   AND run_after <= ?3
                 ORDER BY run_after, id LIMIT 1",
            )
            .and_then(|mut st| st.query_row(params![pair.0, pair.1, self.now_ms], |r| r.get(0)))
            .optional()
            .map_err(backend)?;
        let Some(id) = id else {
            exhausted.insert(pair.clone());
            return Ok(false);
        };
        // Prepared once per connection (the statement cache is keyed by
        // its text): parsing it on every lease cost a tenth of the drain.
        static LEASE_ONE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "UPDATE jobs SET state='running', attempts=attempts+1, lease_until=?2, owner=?3
                 WHERE id=?1 RETURNING {JOB_COLUMNS}"
            )
        });
        let job = self
            .tx
            .prepare_cached(&LEASE_ONE)
            .and_then(|mut st| st.query_row(params![id, self.until, self.owner], row_to_job))
            .map_err(backend)?;
        self.picked.push(job);
        self.running.insert(tenant.clone(), running + 1);
        taken.insert(tenant.clone());
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::backend_tests;

    fn job(tenant: &str, key: Option<&str>) -> NewJob {
        NewJob {
            tenant: tenant.into(),
            instance: "i".into(),
            kind: "webhook".into(),
            name: "events".into(),
            payload: b"{}".to_vec(),
            idempotency_key: key.map(Into::into),
            max_attempts: 3,
        }
    }

    /// Leases as worker `w`: `limit` jobs, `per` running per tenant.
    async fn lease(
        db: &impl crate::StateBackend,
        now: i64,
        lease_ms: i64,
        limit: usize,
        per: usize,
    ) -> Vec<Job> {
        lease_as(
            db,
            "w",
            now,
            lease_ms,
            limit,
            &TenantConcurrency::uniform(per),
        )
        .await
    }

    async fn lease_as(
        db: &impl crate::StateBackend,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: usize,
        per: &TenantConcurrency,
    ) -> Vec<Job> {
        let skip = BTreeSet::new();
        db.lease(
            now,
            LeaseRequest {
                owner,
                lease_ms,
                limit,
                per_tenant: per,
                skip: &skip,
            },
        )
        .await
        .unwrap()
    }

    const BACKOFF: Retry = Retry::Backoff {
        retry_after_ms: None,
    };

    backend_tests! {
        async fn enqueue_lease_complete(db) {
            let e = db.enqueue(job("acme", None), 1000).await.unwrap();
            assert!(!e.duplicate);
            let leased = lease(&db, 1000, 30_000, 10, 10).await;
            assert_eq!(leased.len(), 1);
            assert_eq!(
                (leased[0].id, leased[0].state, leased[0].attempts),
                (e.id, JobState::Running, 1)
            );
            assert!(
                lease(&db, 1000, 30_000, 10, 10).await.is_empty(),
                "leased jobs are not handed out twice"
            );
            assert!(db.complete_job(leased[0].attempt("w"), 1000).await.unwrap());
            assert_eq!(db.job(e.id).await.unwrap().unwrap().state, JobState::Done);
        }
    }

    backend_tests! {
        async fn duplicate_keys_add_nothing(db) {
            let a = db.enqueue(job("acme", Some("evt-1")), 0).await.unwrap();
            let b = db.enqueue(job("acme", Some("evt-1")), 0).await.unwrap();
            assert_eq!(
                b,
                Enqueued {
                    id: a.id,
                    duplicate: true
                }
            );
            // The same key elsewhere is another event.
            let c = db.enqueue(job("globex", Some("evt-1")), 0).await.unwrap();
            assert!(!c.duplicate);
            // Jobs without a key are never duplicates of each other.
            assert!(!db.enqueue(job("acme", None), 0).await.unwrap().duplicate);
            assert!(!db.enqueue(job("acme", None), 0).await.unwrap().duplicate);
            assert_eq!(db.list_jobs("acme", None, 100).await.unwrap().len(), 3);
        }
    }

    backend_tests! {
        async fn an_expired_lease_is_leased_again(db) {
            let e = db.enqueue(job("acme", None), 0).await.unwrap();
            assert_eq!(lease(&db, 0, 1000, 10, 10).await.len(), 1);
            assert!(lease(&db, 999, 1000, 10, 10).await.is_empty());
            let again = lease(&db, 1001, 1000, 10, 10).await;
            assert_eq!((again[0].id, again[0].attempts), (e.id, 2));
        }
    }

    backend_tests! {
        /// Issue 20: a running job's heartbeat keeps it from being taken
        /// over past its first lease; a worker that lost the lease cannot
        /// extend it again.
        async fn a_heartbeat_keeps_a_lease_and_only_its_holder_extends_it(db) {
            let per = TenantConcurrency::uniform(10);
            let e = db.enqueue(job("acme", None), 0).await.unwrap();
            let held = lease_as(&db, "a", 0, 1000, 1, &per).await.remove(0);
            assert!(db.extend_lease(held.attempt("a"), 1900).await.unwrap());
            // Past the first lease, before the extended one: nobody takes it.
            assert!(lease_as(&db, "b", 1500, 1000, 1, &per).await.is_empty());
            // An older heartbeat arriving late never shortens the lease.
            assert!(db.extend_lease(held.attempt("a"), 1200).await.unwrap());
            assert!(lease_as(&db, "b", 1800, 1000, 1, &per).await.is_empty());
            // No heartbeat for too long: b takes it over, and a's lease is gone.
            let fresh = lease_as(&db, "b", 1901, 1000, 1, &per).await.remove(0);
            assert_eq!((fresh.id, fresh.attempts), (e.id, 2));
            assert!(!db.extend_lease(held.attempt("a"), 5000).await.unwrap());
            assert!(!db.extend_lease(fresh.attempt("a"), 5000).await.unwrap());
            assert!(db.extend_lease(fresh.attempt("b"), 5000).await.unwrap());
            assert!(db.complete_job(fresh.attempt("b"), 2000).await.unwrap());
            // A finished job has no lease to extend.
            assert!(!db.extend_lease(fresh.attempt("b"), 9000).await.unwrap());
        }
    }

    backend_tests! {
        /// Issue 13, item 5: a worker whose lease expired cannot overwrite the
        /// outcome of the worker that took the job over.
        async fn only_the_current_lease_holder_settles_a_job(db) {
            let per = TenantConcurrency::uniform(10);
            let e = db.enqueue(job("acme", None), 0).await.unwrap();
            let slow = lease_as(&db, "a", 0, 1000, 1, &per).await.remove(0);
            // a's lease runs out; b takes the job over and finishes it.
            let fresh = lease_as(&db, "b", 2000, 1000, 1, &per).await.remove(0);
            assert_eq!((fresh.id, fresh.attempts), (e.id, 2));
            assert!(db.complete_job(fresh.attempt("b"), 2100).await.unwrap());
            // a comes back late: neither its failure nor its success counts.
            assert_eq!(
                db.fail_job(slow.attempt("a"), "late", 2200, BACKOFF)
                    .await
                    .unwrap(),
                None
            );
            assert!(!db.complete_job(slow.attempt("a"), 2200).await.unwrap());
            assert!(!db.release_job(slow.attempt("a"), 0).await.unwrap());
            let j = db.job(e.id).await.unwrap().unwrap();
            assert_eq!((j.state, j.last_error), (JobState::Done, None));
            // Nor can the right worker settle an attempt it no longer holds.
            let e2 = db.enqueue(job("acme", None), 3000).await.unwrap();
            let first = lease_as(&db, "a", 3000, 1000, 1, &per).await.remove(0);
            let second = lease_as(&db, "a", 5000, 1000, 1, &per).await.remove(0);
            assert_eq!((first.id, second.id), (e2.id, e2.id));
            assert!(!db.complete_job(first.attempt("a"), 5100).await.unwrap());
            assert!(db.complete_job(second.attempt("a"), 5100).await.unwrap());
        }
    }

    /// The settlement of an attempt at job `name` of acme/i: its run and
    /// audit entry, no egress, no next lease, no further run.
    fn finish_of<'a>(
        attempt: Attempt<'a>,
        name: &str,
        outcome: Outcome,
        summary: Option<String>,
    ) -> Finish<'a> {
        Finish {
            again_at_ms: None,
            attempt,
            run: crate::RunRecord {
                tenant: "acme".into(),
                instance: "i".into(),
                kind: "job".into(),
                name: name.into(),
                outcome: "ok".into(),
                error: None,
                summary,
            },
            outcome,
            job_entry: AuditEntry {
                seq: 0,
                time: 0,
                tenant: "acme".into(),
                instance: Some("i".into()),
                actor: None,
                kind: "job".into(),
                what: name.into(),
                outcome: String::new(),
                duration_ms: 1,
                request_id: "r".into(),
            },
            egress: vec![],
            next: None,
        }
    }

    backend_tests! {
        /// Issue 14: what a job returns is kept, on its row and per job in the
        /// run statistics, where a later failure does not erase it; a long one
        /// is cut.
        async fn a_done_job_keeps_its_summary(db) {
            use crate::{InstanceStore, MAX_SUMMARY_CHARS};
            let finish = |attempt, outcome, summary| finish_of(attempt, "pull", outcome, summary);
            let e = db.enqueue(job("acme", None), 0).await.unwrap();
            let j = lease(&db, 0, 1000, 1, 1).await.remove(0);
            let f = finish(
                j.attempt("w"),
                Outcome::Done,
                Some("40 sessions imported".into()),
            );
            assert_eq!(db.finish_job(f, 10).await.unwrap().settled, Settled::Done);
            let row = db.job(e.id).await.unwrap().unwrap();
            assert_eq!(row.summary.as_deref(), Some("40 sessions imported"));

            db.enqueue(job("acme", None), 20).await.unwrap();
            let j = lease(&db, 20, 1000, 1, 1).await.remove(0);
            let failed = Outcome::Failed {
                error: "boom".into(),
                retry: Retry::Never,
            };
            db.finish_job(finish(j.attempt("w"), failed, None), 30)
                .await
                .unwrap();
            let stats = db.run_stats("acme", "i").await.unwrap();
            assert_eq!(
                stats[0].last_summary.as_deref(),
                Some("40 sessions imported")
            );

            let e = db.enqueue(job("acme", None), 40).await.unwrap();
            let j = lease(&db, 40, 1000, 1, 1).await.remove(0);
            let long = "é".repeat(MAX_SUMMARY_CHARS + 10);
            db.finish_job(finish(j.attempt("w"), Outcome::Done, Some(long)), 50)
                .await
                .unwrap();
            let kept = db.job(e.id).await.unwrap().unwrap().summary.unwrap();
            assert_eq!(kept.chars().count(), MAX_SUMMARY_CHARS + 1);
            assert!(kept.ends_with('…'));
            let stats = db.run_stats("acme", "i").await.unwrap();
            assert_eq!(stats[0].last_summary.as_deref(), Some(kept.as_str()));
        }
    }

    backend_tests! {
        /// `invocation.run-again`: a job that succeeds and asks to run again has
        /// its next run queued (once) for the time asked, the schedule waits
        /// behind it, and an attempt that lost its lease queues nothing.
        async fn a_job_that_asks_to_run_again_is_queued_once_and_the_schedule_waits(db) {
            use crate::{Fired, InstanceStore, WantedSchedule};
            let done = |attempt, again_at_ms| Finish {
                again_at_ms,
                ..finish_of(attempt, "sync", Outcome::Done, None)
            };
            let wanted = vec![WantedSchedule {
                tenant: "acme".into(),
                instance: "i".into(),
                job: "sync".into(),
                interval_ms: 10_000,
            }];
            db.sync_schedules(wanted, 1_000).await.unwrap();
            let due = db.due_schedules(1_000).await.unwrap();
            let Fired::Queued(first) = db.fire_schedule(&due[0], 3, 1_000).await.unwrap() else {
                panic!("the schedule did not fire");
            };
            let j = lease(&db, 1_000, 60_000, 1, 1).await.remove(0);
            assert_eq!(j.id, first);
            let f = db
                .finish_job(done(j.attempt("w"), Some(5_000)), 1_500)
                .await;
            assert_eq!(f.unwrap().settled, Settled::Done);

            // Queued for the time asked, not before.
            let again = db
                .list_jobs("acme", Some(JobState::Queued), 10)
                .await
                .unwrap();
            assert_eq!(again.len(), 1, "{again:?}");
            assert_eq!(again[0].name, "sync");
            assert_eq!(
                (
                    again[0].kind.as_str(),
                    again[0].run_after_ms,
                    again[0].max_attempts
                ),
                ("job", 5_000, 3)
            );
            assert!(lease(&db, 4_999, 60_000, 1, 1).await.is_empty());

            // The schedule comes due meanwhile: it waits behind the pending run.
            let due = db.due_schedules(11_000).await.unwrap();
            assert_eq!(
                db.fire_schedule(&due[0], 3, 11_000).await.unwrap(),
                Fired::StillPending(again[0].id)
            );

            // The further run, taken over by a second worker after its lease
            // ran out, asks again twice: only the current holder's word counts.
            let stale = lease(&db, 11_000, 1_000, 1, 1).await.remove(0);
            let current = lease_as(&db, "b", 13_000, 60_000, 1, &TenantConcurrency::uniform(1))
                .await
                .remove(0);
            assert_eq!((stale.id, current.id), (again[0].id, again[0].id));
            let lost = db
                .finish_job(done(stale.attempt("w"), Some(13_000)), 13_100)
                .await;
            assert_eq!(lost.unwrap().settled, Settled::LeaseLost);
            assert!(
                db.list_jobs("acme", Some(JobState::Queued), 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
            let f = db
                .finish_job(done(current.attempt("b"), None), 13_200)
                .await;
            assert_eq!(f.unwrap().settled, Settled::Done);
            assert!(
                db.list_jobs("acme", Some(JobState::Queued), 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
    }

    backend_tests! {
        async fn a_finished_job_commits_with_its_run_and_audit(db) {
            use crate::{AdminStore, InstanceStore, RunRecord};
            let e = db.enqueue(job("acme", None), 0).await.unwrap();
            let j = lease(&db, 0, 1000, 1, 1).await.remove(0);
            let entry = |what: &str| AuditEntry {
                seq: 0,
                time: 0,
                tenant: "acme".into(),
                instance: Some("i".into()),
                actor: None,
                kind: "webhook".into(),
                what: what.into(),
                outcome: String::new(),
                duration_ms: 1,
                request_id: "r".into(),
            };
            let finish = |attempt| Finish {
                again_at_ms: None,
                attempt,
                outcome: Outcome::Failed {
                    error: "boom".into(),
                    retry: BACKOFF,
                },
                run: RunRecord {
                    tenant: "acme".into(),
                    instance: "i".into(),
                    kind: "webhook".into(),
                    name: "events".into(),
                    outcome: "error".into(),
                    error: Some("boom".into()),
                    summary: None,
                },
                job_entry: entry("events (job 1)"),
                egress: vec![entry("GET https://x")],
                next: None,
            };
            assert_eq!(
                db.finish_job(finish(j.attempt("w")), 10).await.unwrap(),
                Finished {
                    settled: Settled::Queued,
                    next: None
                }
            );
            assert_eq!(db.job(e.id).await.unwrap().unwrap().state, JobState::Queued);
            let audit = db.audit("acme", 10).await.unwrap();
            let seen: Vec<(&str, &str)> = audit
                .iter()
                .map(|a| (a.what.as_str(), a.outcome.as_str()))
                .rev()
                .collect();
            assert_eq!(
                seen,
                [("events (job 1)", "failed (queued)"), ("GET https://x", "")]
            );
            let stats = db.run_stats("acme", "i").await.unwrap();
            assert_eq!((stats[0].runs, stats[0].errors), (1, 1));
            // A late attempt is recorded as run, and changes no job state.
            assert_eq!(
                db.finish_job(finish(j.attempt("w")), 20)
                    .await
                    .unwrap()
                    .settled,
                Settled::LeaseLost
            );
            assert_eq!(db.job(e.id).await.unwrap().unwrap().state, JobState::Queued);
            // Finishing can lease the slot's next job in the same transaction.
            db.enqueue(job("globex", None), 20).await.unwrap();
            let j = lease(&db, 5_000, 1000, 1, 1).await.remove(0);
            let mut f = finish(j.attempt("w"));
            f.outcome = Outcome::Done;
            f.next = Some(NextLease {
                lease_ms: 1000,
                per_tenant: TenantConcurrency::uniform(1),
                skip: BTreeSet::new(),
            });
            let done = db.finish_job(f, 5_000).await.unwrap();
            assert_eq!(done.settled, Settled::Done);
            // The other of the two ready jobs.
            let next = done.next.expect("the next job");
            assert_ne!(next.id, j.id);
            assert_eq!(next.state, JobState::Running);
            assert_eq!(db.job(j.id).await.unwrap().unwrap().state, JobState::Done);
        }
    }

    /// One process owns a SQLite store: whatever ran at start-up belonged
    /// to a process that is gone. (PostgreSQL is shared; its own test
    /// shows a live daemon's leases are kept.)
    #[tokio::test]
    async fn running_jobs_are_reclaimed_at_start_up() {
        let db = SqliteStore::open_in_memory().unwrap();
        let e = db.enqueue(job("acme", None), 0).await.unwrap();
        lease(&db, 0, 3_600_000, 1, 1).await;
        assert_eq!(db.reclaim_running_jobs(5).await.unwrap(), 1);
        let again = lease(&db, 5, 1000, 1, 1).await;
        assert_eq!((again[0].id, again[0].attempts), (e.id, 2));
    }

    backend_tests! {
        async fn failures_back_off_then_dead_letter(db) {
            let e = db.enqueue(job("acme", None), 0).await.unwrap();
            let j = lease(&db, 0, 1000, 1, 1).await.remove(0);
            assert_eq!(
                db.fail_job(j.attempt("w"), "boom 1", 0, BACKOFF)
                    .await
                    .unwrap(),
                Some(JobState::Queued)
            );
            let j = db.job(e.id).await.unwrap().unwrap();
            assert!(
                (800..=1200).contains(&j.run_after_ms),
                "first retry after ~1 s: {}",
                j.run_after_ms
            );
            assert_eq!(j.last_error.as_deref(), Some("boom 1"));
            assert!(
                lease(&db, 700, 1000, 1, 1).await.is_empty(),
                "not before its back-off"
            );
            let j = lease(&db, 1200, 1000, 1, 1).await.remove(0);
            // An upstream's Retry-After wins over a shorter back-off.
            let later = Retry::Backoff {
                retry_after_ms: Some(60_000),
            };
            assert_eq!(
                db.fail_job(j.attempt("w"), "429", 1200, later)
                    .await
                    .unwrap(),
                Some(JobState::Queued)
            );
            assert_eq!(db.job(e.id).await.unwrap().unwrap().run_after_ms, 61_200);
            let j = lease(&db, 61_200, 1000, 1, 1).await.remove(0);
            assert_eq!(
                db.fail_job(j.attempt("w"), "boom 3", 61_200, BACKOFF)
                    .await
                    .unwrap(),
                Some(JobState::Dead)
            );
            assert!(lease(&db, 10_000_000, 1000, 1, 1).await.is_empty());
            assert_eq!(
                db.list_jobs("acme", Some(JobState::Dead), 10)
                    .await
                    .unwrap()
                    .len(),
                1
            );
            assert!(db.retry_job("acme", e.id, 0).await.unwrap());
            assert!(
                !db.retry_job("globex", e.id, 0).await.unwrap(),
                "only the owner can retry"
            );
            assert_eq!(lease(&db, 0, 1000, 1, 1).await[0].attempts, 1);
        }
    }

    backend_tests! {
        async fn a_permanent_failure_dead_letters_at_once(db) {
            let e = db.enqueue(job("acme", None), 0).await.unwrap();
            let j = lease(&db, 0, 1000, 1, 1).await.remove(0);
            assert_eq!(
                db.fail_job(j.attempt("w"), "not JSON", 0, Retry::Never)
                    .await
                    .unwrap(),
                Some(JobState::Dead)
            );
            let j = db.job(e.id).await.unwrap().unwrap();
            assert_eq!((j.state, j.attempts), (JobState::Dead, 1));
        }
    }

    backend_tests! {
        async fn leasing_is_fair_across_tenants(db) {
            for _ in 0..10 {
                db.enqueue(job("noisy", None), 0).await.unwrap();
            }
            db.enqueue(job("quiet", None), 5).await.unwrap();
            let leased = lease(&db, 10, 1000, 3, 2).await;
            let tenants: Vec<_> = leased.iter().map(|j| j.tenant.as_str()).collect();
            assert_eq!(
                tenants.iter().filter(|t| **t == "noisy").count(),
                2,
                "{tenants:?}"
            );
            assert!(tenants.contains(&"quiet"), "{tenants:?}");
            // The noisy tenant is at its limit until one of its jobs finishes.
            assert!(lease(&db, 10, 1000, 3, 2).await.is_empty());
            let noisy = leased.iter().find(|j| j.tenant == "noisy").unwrap();
            db.complete_job(noisy.attempt("w"), 10).await.unwrap();
            assert_eq!(lease(&db, 10, 1000, 3, 2).await.len(), 1);
        }
    }

    /// Issue 13, item 4: a backlog of one tenant hides no other tenant's
    /// job, whatever its size and age.
    #[tokio::test]
    async fn a_huge_backlog_of_one_tenant_does_not_hide_another() {
        let db = SqliteStore::open_in_memory().unwrap();
        db.with_conn(|c| {
            let tx = c.savepoint().map_err(backend)?;
            for _ in 0..10_000 {
                tx.execute(
                    "INSERT INTO jobs (tenant, instance, kind, name, payload, state, attempts,
                                       max_attempts, run_after, created_at)
                     VALUES ('noisy', 'i', 'webhook', 'events', x'', 'queued', 0, 3, 0, 0)",
                    [],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
        .await
        .unwrap();
        // The other tenant's one job is the newest of all.
        db.enqueue(job("quiet", None), 1).await.unwrap();
        let leased = lease(&db, 10, 1000, 2, 100).await;
        let tenants: BTreeSet<&str> = leased.iter().map(|j| j.tenant.as_str()).collect();
        assert_eq!(tenants, ["noisy", "quiet"].into(), "within one round");
    }

    backend_tests! {
        /// Consecutive leases go round the instances, not back to the first.
        async fn leases_go_round_robin_between_calls(db) {
            for t in ["a", "b", "c"] {
                for _ in 0..3 {
                    db.enqueue(job(t, None), 0).await.unwrap();
                }
            }
            let mut order = Vec::new();
            for _ in 0..6 {
                let j = lease(&db, 10, 1000, 1, 10).await.remove(0);
                order.push(j.tenant.clone());
                db.complete_job(j.attempt("w"), 10).await.unwrap();
            }
            assert_eq!(order, ["a", "b", "c", "a", "b", "c"]);
        }
    }

    backend_tests! {
        async fn jobs_of_skipped_instances_are_not_leased(db) {
            db.enqueue(job("acme", None), 0).await.unwrap();
            let per = TenantConcurrency::uniform(10);
            let skip: BTreeSet<InstanceKey> = [("acme".to_owned(), "i".to_owned())].into();
            let req = LeaseRequest {
                owner: "w",
                lease_ms: 1000,
                limit: 10,
                per_tenant: &per,
                skip: &skip,
            };
            assert!(db.lease(10, req).await.unwrap().is_empty());
            assert_eq!(lease(&db, 10, 1000, 10, 10).await.len(), 1);
        }
    }

    backend_tests! {
        async fn a_tenant_can_have_its_own_limit(db) {
            for t in ["big", "big", "big", "small", "small", "small"] {
                db.enqueue(job(t, None), 0).await.unwrap();
            }
            let limits = TenantConcurrency {
                default: 1,
                tenants: [("big".to_owned(), 3)].into(),
            };
            let leased = lease_as(&db, "w", 10, 1000, 10, &limits).await;
            let count = |t: &str| leased.iter().filter(|j| j.tenant == t).count();
            assert_eq!((count("big"), count("small")), (3, 1));
        }
    }

    backend_tests! {
        async fn next_wake_is_the_earliest_due_time(db) {
            assert_eq!(db.next_wake_ms().await.unwrap(), None);
            let e = db.enqueue(job("acme", None), 500).await.unwrap();
            assert_eq!(db.next_wake_ms().await.unwrap(), Some(500));
            let j = lease(&db, 600, 1000, 1, 1).await.remove(0);
            // Running: the lease's end is when it could be taken over.
            assert_eq!(db.next_wake_ms().await.unwrap(), Some(1600));
            db.fail_job(j.attempt("w"), "x", 700, BACKOFF)
                .await
                .unwrap();
            let after = db.job(e.id).await.unwrap().unwrap().run_after_ms;
            assert_eq!(db.next_wake_ms().await.unwrap(), Some(after));
        }
    }

    backend_tests! {
        async fn done_jobs_are_pruned_after_their_age(db) {
            for now in [1_000, 2_000] {
                db.enqueue(job("acme", None), now).await.unwrap();
                let j = lease(&db, now, 1000, 1, 1).await.remove(0);
                db.complete_job(j.attempt("w"), now).await.unwrap();
            }
            db.enqueue(job("acme", None), 0).await.unwrap(); // still queued
            assert_eq!(db.prune_done_jobs(1_500).await.unwrap(), 1);
            assert_eq!(db.prune_done_jobs(1_500).await.unwrap(), 0);
            let states: Vec<JobState> = db
                .list_jobs("acme", None, 10)
                .await
                .unwrap()
                .iter()
                .map(|j| j.state)
                .collect();
            assert_eq!(states, [JobState::Queued, JobState::Done]);
        }
    }

    /// The queue's hot reads and sweeps use the partial indexes, never a
    /// scan of the jobs table (which holds the done history).
    #[test]
    fn queue_sweeps_read_their_partial_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(SqliteStore::open(&path).unwrap());
        let c = rusqlite::Connection::open(&path).unwrap();
        for (sql, index) in [
            (NEXT_WAKE, "jobs_due"),
            (NEXT_WAKE, "jobs_running"),
            (REQUEUE_EXPIRED, "jobs_running"),
            (PRUNE_DONE, "jobs_done"),
        ] {
            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let zeros = std::iter::repeat_n(0, st.parameter_count());
            let plan: Vec<String> = st
                .query_map(rusqlite::params_from_iter(zeros), |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert!(
                plan.iter().any(|p| p.contains(index)),
                "{sql}\nshould use {index}: {plan:?}"
            );
            assert!(
                !plan.iter().any(|p| p.starts_with("SCAN jobs")),
                "{sql}\nscans: {plan:?}"
            );
        }
    }

    backend_tests! {
        async fn queue_depths_cover_every_instance_in_one_call(db) {
            for t in ["a", "a", "b"] {
                db.enqueue(job(t, None), 0).await.unwrap();
            }
            let leased = lease(&db, 10, 1000, 1, 1).await;
            let mut depths = db.queue_depths().await.unwrap();
            depths.sort_by(|x, y| x.tenant.cmp(&y.tenant));
            let got: Vec<_> = depths
                .iter()
                .map(|d| (d.tenant.as_str(), d.queued, d.running, d.dead))
                .collect();
            assert_eq!(got, [("a", 1, 1, 0), ("b", 1, 0, 0)], "leased {leased:?}");
            for d in &depths {
                assert_eq!(
                    db.queue_counts(&d.tenant, &d.instance).await.unwrap(),
                    (d.queued, d.running, d.dead)
                );
            }
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for (attempts, base) in [(1, 1000), (2, 2000), (3, 4000), (30, MAX_BACKOFF_MS)] {
            let d = backoff_ms(attempts);
            assert!(
                (base * 8 / 10..=base * 12 / 10).contains(&d),
                "{attempts}: {d}"
            );
        }
    }
}
