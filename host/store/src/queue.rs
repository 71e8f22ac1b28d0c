//! The durable job queue: webhook deliveries and scheduled runs wait here
//! until a worker has processed them.
//!
//! - **At least once.** A worker leases a job for a while; if it neither
//!   completes nor fails it before the lease ends (it crashed), the job is
//!   leased again.
//! - **Retries** back off exponentially (1 s, 2 s, 4 s, … capped at 10 min)
//!   with ±20 % jitter, up to the job's maximum attempts; then the job is
//!   dead-lettered and stays until retried by hand.
//! - **Idempotency.** A job may carry a key, unique per (tenant, instance):
//!   enqueuing it again is reported as a duplicate and adds nothing.
//! - **Fairness.** A lease takes ready jobs round-robin across tenants and
//!   never gives one tenant more than its concurrency limit of running jobs.

use std::collections::{BTreeMap, VecDeque};

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore;
use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use crate::sqlite::backend;
use crate::{SqliteStore, StoreError};

/// Longest retry delay.
const MAX_BACKOFF_MS: i64 = 10 * 60 * 1000;
/// Candidates one lease call examines. Bounds the work per call; the rest
/// wait for the next one.
const LEASE_SCAN: u32 = 1000;

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
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Self {
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

const JOB_COLUMNS: &str = "id, tenant, instance, kind, name, payload, state, attempts, \
                           max_attempts, run_after, last_error";

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
    })
}

/// The durable job queue (see the module docs for its guarantees).
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Stores a job, ready now. A repeated idempotency key adds nothing.
    async fn enqueue(&self, job: NewJob, now_ms: i64) -> Result<Enqueued, StoreError>;

    /// Leases up to `limit` ready jobs for `lease_ms`: queued ones whose
    /// time has come and running ones whose lease expired (their worker
    /// died). Round-robin across tenants; a tenant never has more than
    /// its `per_tenant` limit of jobs running.
    async fn lease(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
        per_tenant: &TenantConcurrency,
    ) -> Result<Vec<Job>, StoreError>;

    /// Re-queues every job left running. Only for a store one process owns
    /// (the embedded SQLite default), at start-up: whatever was running
    /// belonged to a process that is gone. Returns how many were re-queued.
    async fn reclaim_running_jobs(&self, now_ms: i64) -> Result<usize, StoreError>;

    /// Marks a leased job done.
    async fn complete_job(&self, id: i64) -> Result<(), StoreError>;

    /// Records a failed attempt: back to the queue after a back-off, or dead
    /// after the last attempt. `retry_after_ms` (an upstream's Retry-After)
    /// overrides the back-off when longer. Returns the new state.
    async fn fail_job(
        &self,
        id: i64,
        error: &str,
        now_ms: i64,
        retry_after_ms: Option<i64>,
    ) -> Result<JobState, StoreError>;

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

    /// Puts a leased job back without counting the attempt (its instance is
    /// paused), to be looked at again at `run_after_ms`.
    async fn release_job(&self, id: i64, run_after_ms: i64) -> Result<(), StoreError>;

    /// Jobs of an instance by state: `(queued, running, dead)`.
    async fn queue_counts(
        &self,
        tenant: &str,
        instance: &str,
    ) -> Result<(i64, i64, i64), StoreError>;

    /// [`JobQueue::queue_counts`] of every instance that has jobs, in one query.
    async fn queue_depths(&self) -> Result<Vec<QueueDepth>, StoreError>;
}

#[async_trait]
impl JobQueue for SqliteStore {
    async fn enqueue(&self, job: NewJob, now_ms: i64) -> Result<Enqueued, StoreError> {
        self.with_conn(move |c| {
            let tx = c.transaction().map_err(backend)?;
            let inserted = tx
                .execute(
                    "INSERT INTO jobs (tenant, instance, kind, name, payload, idempotency_key,
                                       state, attempts, max_attempts, run_after, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', 0, ?7, ?8, ?8)
                     ON CONFLICT (tenant, instance, idempotency_key) DO NOTHING",
                    params![
                        job.tenant,
                        job.instance,
                        job.kind,
                        job.name,
                        job.payload,
                        job.idempotency_key,
                        job.max_attempts.max(1),
                        now_ms
                    ],
                )
                .map_err(backend)?;
            let out = if inserted == 1 {
                Enqueued {
                    id: tx.last_insert_rowid(),
                    duplicate: false,
                }
            } else {
                let id = tx
                    .query_row(
                        "SELECT id FROM jobs WHERE tenant=?1 AND instance=?2 AND idempotency_key=?3",
                        params![job.tenant, job.instance, job.idempotency_key],
                        |r| r.get(0),
                    )
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

    async fn lease(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
        per_tenant: &TenantConcurrency,
    ) -> Result<Vec<Job>, StoreError> {
        let per_tenant = per_tenant.clone();
        self.with_conn(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(backend)?;
            let mut running: BTreeMap<String, usize> = BTreeMap::new();
            {
                let mut st = tx
                    .prepare_cached(
                        "SELECT tenant, count(*) FROM jobs
                         WHERE state='running' AND lease_until >= ?1 GROUP BY tenant",
                    )
                    .map_err(backend)?;
                let rows = st
                    .query_map(params![now_ms], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                    })
                    .map_err(backend)?;
                for row in rows {
                    let (t, n) = row.map_err(backend)?;
                    running.insert(t, n as usize);
                }
            }
            let mut by_tenant: BTreeMap<String, VecDeque<i64>> = BTreeMap::new();
            {
                let mut st = tx
                    .prepare_cached(
                        "SELECT id, tenant FROM jobs
                         WHERE (state='queued' AND run_after <= ?1)
                            OR (state='running' AND lease_until < ?1)
                         ORDER BY run_after, id LIMIT ?2",
                    )
                    .map_err(backend)?;
                let rows = st
                    .query_map(params![now_ms, LEASE_SCAN], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                    })
                    .map_err(backend)?;
                for row in rows {
                    let (id, t) = row.map_err(backend)?;
                    by_tenant.entry(t).or_default().push_back(id);
                }
            }
            // Round-robin: one job per tenant per pass, oldest first.
            let mut picked = Vec::new();
            while picked.len() < limit {
                let mut progressed = false;
                for (tenant, ids) in by_tenant.iter_mut() {
                    if picked.len() >= limit {
                        break;
                    }
                    let n = running.entry(tenant.clone()).or_default();
                    if *n >= per_tenant.of(tenant) {
                        continue;
                    }
                    if let Some(id) = ids.pop_front() {
                        picked.push(id);
                        *n += 1;
                        progressed = true;
                    }
                }
                if !progressed {
                    break;
                }
            }
            let mut jobs = Vec::with_capacity(picked.len());
            for id in picked {
                let job = tx
                    .query_row(
                        &format!(
                            "UPDATE jobs SET state='running', attempts=attempts+1, lease_until=?2
                             WHERE id=?1 RETURNING {JOB_COLUMNS}"
                        ),
                        params![id, now_ms + lease_ms],
                        row_to_job,
                    )
                    .map_err(backend)?;
                jobs.push(job);
            }
            tx.commit().map_err(backend)?;
            Ok(jobs)
        })
        .await
    }

    async fn reclaim_running_jobs(&self, now_ms: i64) -> Result<usize, StoreError> {
        self.with_conn(move |c| {
            c.execute(
                "UPDATE jobs SET state='queued', lease_until=NULL, run_after=?1 WHERE state='running'",
                params![now_ms],
            )
            .map_err(backend)
        })
        .await
    }

    async fn complete_job(&self, id: i64) -> Result<(), StoreError> {
        self.with_conn(move |c| {
            c.execute(
                "UPDATE jobs SET state='done', lease_until=NULL, last_error=NULL WHERE id=?1",
                params![id],
            )
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn fail_job(
        &self,
        id: i64,
        error: &str,
        now_ms: i64,
        retry_after_ms: Option<i64>,
    ) -> Result<JobState, StoreError> {
        let error: String = error.chars().take(2000).collect();
        self.with_conn(move |c| {
            let tx = c.transaction().map_err(backend)?;
            let (attempts, max): (u32, u32) = tx
                .query_row(
                    "SELECT attempts, max_attempts FROM jobs WHERE id=?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(backend)?;
            let state = if attempts >= max {
                JobState::Dead
            } else {
                JobState::Queued
            };
            let delay = backoff_ms(attempts).max(retry_after_ms.unwrap_or(0));
            tx.execute(
                "UPDATE jobs SET state=?2, lease_until=NULL, last_error=?3, run_after=?4 WHERE id=?1",
                params![id, state.as_str(), error, now_ms + delay],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(state)
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
        self.with_conn(move |c| {
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
        self.with_conn(move |c| {
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

    async fn release_job(&self, id: i64, run_after_ms: i64) -> Result<(), StoreError> {
        self.with_conn(move |c| {
            c.execute(
                "UPDATE jobs SET state='queued', lease_until=NULL, attempts=max(attempts-1, 0),
                 run_after=?2 WHERE id=?1 AND state='running'",
                params![id, run_after_ms],
            )
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn queue_counts(
        &self,
        tenant: &str,
        instance: &str,
    ) -> Result<(i64, i64, i64), StoreError> {
        let (t, i) = (tenant.to_owned(), instance.to_owned());
        self.with_conn(move |c| {
            c.query_row(
                "SELECT count(*) FILTER (WHERE state='queued'), count(*) FILTER (WHERE state='running'),
                        count(*) FILTER (WHERE state='dead')
                 FROM jobs WHERE tenant=?1 AND instance=?2",
                params![t, i],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(backend)
        })
        .await
    }

    async fn queue_depths(&self) -> Result<Vec<QueueDepth>, StoreError> {
        self.with_conn(|c| {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn enqueue_lease_complete() {
        let db = SqliteStore::open_in_memory().unwrap();
        let e = db.enqueue(job("acme", None), 1000).await.unwrap();
        assert!(!e.duplicate);
        let leased = db
            .lease(1000, 30_000, 10, &TenantConcurrency::uniform(10))
            .await
            .unwrap();
        assert_eq!(leased.len(), 1);
        assert_eq!(
            (leased[0].id, leased[0].state, leased[0].attempts),
            (e.id, JobState::Running, 1)
        );
        assert!(
            db.lease(1000, 30_000, 10, &TenantConcurrency::uniform(10))
                .await
                .unwrap()
                .is_empty(),
            "leased jobs are not handed out twice"
        );
        db.complete_job(e.id).await.unwrap();
        assert_eq!(db.job(e.id).await.unwrap().unwrap().state, JobState::Done);
    }

    #[tokio::test]
    async fn duplicate_keys_add_nothing() {
        let db = SqliteStore::open_in_memory().unwrap();
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

    #[tokio::test]
    async fn an_expired_lease_is_leased_again() {
        let db = SqliteStore::open_in_memory().unwrap();
        let e = db.enqueue(job("acme", None), 0).await.unwrap();
        assert_eq!(
            db.lease(0, 1000, 10, &TenantConcurrency::uniform(10))
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            db.lease(999, 1000, 10, &TenantConcurrency::uniform(10))
                .await
                .unwrap()
                .is_empty()
        );
        let again = db
            .lease(1001, 1000, 10, &TenantConcurrency::uniform(10))
            .await
            .unwrap();
        assert_eq!((again[0].id, again[0].attempts), (e.id, 2));
    }

    #[tokio::test]
    async fn running_jobs_are_reclaimed_at_start_up() {
        let db = SqliteStore::open_in_memory().unwrap();
        let e = db.enqueue(job("acme", None), 0).await.unwrap();
        db.lease(0, 3_600_000, 1, &TenantConcurrency::uniform(1))
            .await
            .unwrap();
        assert_eq!(db.reclaim_running_jobs(5).await.unwrap(), 1);
        let again = db
            .lease(5, 1000, 1, &TenantConcurrency::uniform(1))
            .await
            .unwrap();
        assert_eq!((again[0].id, again[0].attempts), (e.id, 2));
    }

    #[tokio::test]
    async fn failures_back_off_then_dead_letter() {
        let db = SqliteStore::open_in_memory().unwrap();
        let e = db.enqueue(job("acme", None), 0).await.unwrap();
        db.lease(0, 1000, 1, &TenantConcurrency::uniform(1))
            .await
            .unwrap();
        assert_eq!(
            db.fail_job(e.id, "boom 1", 0, None).await.unwrap(),
            JobState::Queued
        );
        let j = db.job(e.id).await.unwrap().unwrap();
        assert!(
            (800..=1200).contains(&j.run_after_ms),
            "first retry after ~1 s: {}",
            j.run_after_ms
        );
        assert_eq!(j.last_error.as_deref(), Some("boom 1"));
        assert!(
            db.lease(700, 1000, 1, &TenantConcurrency::uniform(1))
                .await
                .unwrap()
                .is_empty(),
            "not before its back-off"
        );
        db.lease(1200, 1000, 1, &TenantConcurrency::uniform(1))
            .await
            .unwrap();
        // An upstream's Retry-After wins over a shorter back-off.
        assert_eq!(
            db.fail_job(e.id, "429", 1200, Some(60_000)).await.unwrap(),
            JobState::Queued
        );
        assert_eq!(db.job(e.id).await.unwrap().unwrap().run_after_ms, 61_200);
        db.lease(61_200, 1000, 1, &TenantConcurrency::uniform(1))
            .await
            .unwrap();
        assert_eq!(
            db.fail_job(e.id, "boom 3", 61_200, None).await.unwrap(),
            JobState::Dead
        );
        assert!(
            db.lease(10_000_000, 1000, 1, &TenantConcurrency::uniform(1))
                .await
                .unwrap()
                .is_empty()
        );
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
        let j = db
            .lease(0, 1000, 1, &TenantConcurrency::uniform(1))
            .await
            .unwrap();
        assert_eq!(j[0].attempts, 1);
    }

    #[tokio::test]
    async fn leasing_is_fair_across_tenants() {
        let db = SqliteStore::open_in_memory().unwrap();
        for _ in 0..10 {
            db.enqueue(job("noisy", None), 0).await.unwrap();
        }
        db.enqueue(job("quiet", None), 5).await.unwrap();
        let leased = db
            .lease(10, 1000, 3, &TenantConcurrency::uniform(2))
            .await
            .unwrap();
        let tenants: Vec<_> = leased.iter().map(|j| j.tenant.as_str()).collect();
        assert_eq!(
            tenants.iter().filter(|t| **t == "noisy").count(),
            2,
            "{tenants:?}"
        );
        assert!(tenants.contains(&"quiet"), "{tenants:?}");
        // The noisy tenant is at its limit until one of its jobs finishes.
        assert!(
            db.lease(10, 1000, 3, &TenantConcurrency::uniform(2))
                .await
                .unwrap()
                .is_empty()
        );
        db.complete_job(leased[0].id).await.unwrap();
        assert_eq!(
            db.lease(10, 1000, 3, &TenantConcurrency::uniform(2))
                .await
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn a_tenant_can_have_its_own_limit() {
        let db = SqliteStore::open_in_memory().unwrap();
        for t in ["big", "big", "big", "small", "small", "small"] {
            db.enqueue(job(t, None), 0).await.unwrap();
        }
        let limits = TenantConcurrency {
            default: 1,
            tenants: [("big".to_owned(), 3)].into(),
        };
        let leased = db.lease(10, 1000, 10, &limits).await.unwrap();
        let count = |t: &str| leased.iter().filter(|j| j.tenant == t).count();
        assert_eq!((count("big"), count("small")), (3, 1));
    }

    #[tokio::test]
    async fn queue_depths_cover_every_instance_in_one_call() {
        let db = SqliteStore::open_in_memory().unwrap();
        for t in ["a", "a", "b"] {
            db.enqueue(job(t, None), 0).await.unwrap();
        }
        let leased = db
            .lease(10, 1000, 1, &TenantConcurrency::uniform(1))
            .await
            .unwrap();
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
