//! The queue worker: leases ready jobs (queued webhook deliveries, fired
//! schedules, "run now" requests), runs each in the plugin, and settles it:
//! done, retried after a back-off, released (it could not run), or
//! dead-lettered.
//!
//! The loop ([`drain`]) sleeps only when there is nothing it could run: it
//! leases again as soon as a job finishes or something is queued (an
//! in-process wake-up), and otherwise wakes when the earliest queued job
//! becomes due, or after [`FALLBACK_POLL`] to find work other processes
//! queued. An idle daemon makes no write transactions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_runtime::{CallOptions, InvokeError, PluginError, RetryMark, log::Progress};
use switchyard_store::{
    Attempt, Finish, Job, LeaseRequest, NextLease, Outcome, Retry, RunRecord, Settled,
};

use crate::clock::{now_ms, request_id};
use crate::record::{self, Subject};
use crate::state::{AbortOnDrop, AppState, Live, RunningJob};
use crate::webhook::delivery::StoredDelivery;

/// The longest the worker sleeps without looking at the queue.
pub const FALLBACK_POLL: Duration = Duration::from_secs(2);

/// A job that could not get a wasm slot is looked at again this soon.
const BUSY_RETRY_MS: i64 = 200;

/// What the drain loop needs of a queue and a runner.
pub trait Drain: Send + Sync + 'static {
    /// Jobs that may run at once.
    fn capacity(&self) -> usize;
    /// Leases up to `free` ready jobs.
    fn lease(&self, free: usize) -> impl Future<Output = Vec<Job>> + Send;
    /// When a lease may next find something (ms since the epoch).
    fn next_wake_ms(&self) -> impl Future<Output = Option<i64>> + Send;
    /// Runs and settles one job.
    fn run(self: Arc<Self>, job: Job) -> impl Future<Output = ()> + Send;
    /// Wakes the loop when something is queued.
    fn wake(&self) -> &tokio::sync::Notify;
}

/// Runs jobs from `d` until `stop` is set; then waits up to `drain_for` for
/// running jobs and abandons the rest (their leases expire, and the next
/// start queues them again).
pub async fn drain<D: Drain>(
    d: Arc<D>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    drain_for: impl Fn() -> Duration,
) {
    let mut running = tokio::task::JoinSet::new();
    // The first pass looks at the queue whatever the hint says.
    let mut look = true;
    loop {
        if *stop.borrow() {
            break;
        }
        while running.try_join_next().is_some() {}
        let free = d.capacity().saturating_sub(running.len());
        if look && free > 0 {
            let leased = d.lease(free).await;
            let full = leased.len() == free;
            for job in leased {
                running.spawn(d.clone().run(job));
            }
            if full {
                // There may be more ready: take them as slots free up.
                look = true;
                if running.len() >= d.capacity() {
                    tokio::select! {
                        _ = running.join_next() => {}
                        _ = stop.changed() => {}
                    }
                }
                continue;
            }
        }
        // Nothing more can be leased now. Sleep until a job ends, something
        // is queued, the earliest queued job is due, or the fallback poll.
        let now = now_ms();
        let due_in = match d.next_wake_ms().await {
            Some(t) if t > now => Duration::from_millis((t - now) as u64).min(FALLBACK_POLL),
            // Due but not leased (blocked by a tenant's limit or a pause,
            // which a finished job or a wake-up changes), or nothing queued.
            _ => FALLBACK_POLL,
        };
        let timer = tokio::select! {
            _ = d.wake().notified() => false,
            Some(_) = running.join_next(), if !running.is_empty() => false,
            () = tokio::time::sleep(due_in) => true,
            _ = stop.changed() => continue,
        };
        // After a timer, lease only if something is due now (a read): an
        // idle queue costs no write transactions.
        look = !timer || d.next_wake_ms().await.is_some_and(|t| t <= now_ms());
    }
    // Shutdown: in-flight jobs get `drain_for` to finish; queued ones stay.
    let deadline = tokio::time::sleep(drain_for());
    tokio::pin!(deadline);
    while !running.is_empty() {
        tokio::select! {
            _ = running.join_next() => {}
            () = &mut deadline => {
                tracing::warn!(
                    jobs = running.len(),
                    "shutdown: jobs still running after the drain timeout are abandoned; \
                     they run again after the next start"
                );
                running.abort_all();
                while running.join_next().await.is_some() {}
            }
        }
    }
}

/// The daemon's queue, for [`drain`].
pub struct Worker {
    live: Arc<Live>,
    /// This process's lease owner id.
    owner: String,
}

impl Worker {
    /// A worker over `live`'s queue.
    pub fn new(live: Arc<Live>) -> Arc<Self> {
        let owner = format!("{}-{}", std::process::id(), request_id());
        Arc::new(Self { live, owner })
    }
}

impl Drain for Worker {
    fn capacity(&self) -> usize {
        // Read per pass: a reload may change it.
        self.live.current().jobs.workers
    }

    async fn lease(&self, free: usize) -> Vec<Job> {
        let st = self.live.current();
        let skip = st.paused_instances();
        // Short leases, renewed while the job runs (see `heartbeat`): a
        // live worker's job is never handed to another, a dead one's soon.
        let req = LeaseRequest {
            owner: &self.owner,
            lease_ms: st.jobs.lease_ms(),
            limit: free,
            per_tenant: &st.concurrency,
            skip: &skip,
        };
        let leased = st.db().lease(now_ms(), req).await;
        st.shared.metrics.worker_lease();
        match leased {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(error = %e, "leasing jobs");
                Vec::new()
            }
        }
    }

    async fn next_wake_ms(&self) -> Option<i64> {
        match self.live.current().db().next_wake_ms().await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "reading the queue");
                None
            }
        }
    }

    async fn run(self: Arc<Self>, job: Job) {
        // A slot that finishes a job leases its next one in the same
        // transaction, and runs it, until the queue has nothing for it.
        let mut next = Some(job);
        while let Some(job) = next {
            next = run_job(&self.live.current(), &job, job.attempt(&self.owner)).await;
        }
    }

    fn wake(&self) -> &tokio::sync::Notify {
        &self.live.shared().wake
    }
}

/// Runs the queue worker of `live` until `stop` is set.
pub async fn worker(live: Arc<Live>, stop: tokio::sync::watch::Receiver<bool>) {
    let timeout = {
        let live = live.clone();
        move || live.current().drain_timeout
    };
    drain(Worker::new(live), stop, timeout).await;
}

/// How an attempt ended, as the queue should record it.
#[derive(Debug, PartialEq, Eq)]
enum Settle {
    Done,
    /// Could not run (no wasm slot free, or the instance's storage is not
    /// migrated yet): not an attempt. Looked at again after this long.
    Release {
        after_ms: i64,
    },
    Fail {
        message: String,
        retry: Retry,
    },
}

/// How a failed attempt is retried. A plugin that refuses the input, has
/// no such route or job, or answers a delivery with a 4xx says it will
/// never succeed: the job is dead-lettered at once. Everything else —
/// upstream failures, 5xx answers, deadlines, crashes — is retried. A
/// plugin error the plugin marked (`mark`, from `invocation.mark-error`)
/// is settled as marked instead of by its kind; the host's own verdicts
/// (refused input, deadline, crash) are not the plugin's to change.
fn settle(
    result: Result<Option<u16>, &InvokeError>,
    mark: Option<RetryMark>,
    max_retry_after_ms: i64,
) -> Settle {
    use InvokeError as E;
    let permanent = |message: String| Settle::Fail {
        message,
        retry: Retry::Never,
    };
    let later = |e: &InvokeError| {
        let retry_after_ms = match e {
            E::Plugin(PluginError::Upstream {
                retry_after_secs: Some(s),
                ..
            }) => Some((i64::from(*s) * 1000).min(max_retry_after_ms)),
            _ => None,
        };
        Settle::Fail {
            message: e.to_string(),
            retry: Retry::Backoff { retry_after_ms },
        }
    };
    match result {
        Ok(None) => Settle::Done,
        Ok(Some(status)) if status < 400 => Settle::Done,
        Ok(Some(status)) if status == 408 || status == 429 || status >= 500 => Settle::Fail {
            message: format!("the plugin answered the delivery with HTTP {status}"),
            retry: Retry::Backoff {
                retry_after_ms: None,
            },
        },
        Ok(Some(status)) => permanent(format!(
            "the plugin refused the delivery with HTTP {status}; it will not be retried"
        )),
        Err(E::Busy(_)) => Settle::Release {
            after_ms: BUSY_RETRY_MS,
        },
        Err(E::Migration { retry_after, .. }) => Settle::Release {
            after_ms: retry_after.as_millis() as i64,
        },
        Err(e @ E::Plugin(_)) if mark == Some(RetryMark::Permanent) => permanent(format!(
            "{e}; the plugin marked it permanent, so it will not be retried"
        )),
        Err(e @ E::Plugin(_)) if mark == Some(RetryMark::Transient) => later(e),
        Err(
            e @ (E::Unknown { .. }
            | E::InvalidInput(_)
            | E::InputSchema(_)
            | E::Plugin(
                PluginError::InvalidInput { .. }
                | PluginError::NotFound { .. }
                | PluginError::Forbidden { .. },
            )),
        ) => permanent(format!("{e}; it will not be retried")),
        Err(e) => later(e),
    }
}

/// Runs `job` and settles it; returns the next job leased for this slot.
async fn run_job(st: &AppState, job: &Job, attempt: Attempt<'_>) -> Option<Job> {
    let db = st.db();
    let started = Instant::now();
    let rid = request_id();
    let max_retry_after_ms = i64::from(st.jobs.max_retry_after_secs) * 1000;
    let Some(inst) = st.instance(&job.tenant, &job.instance) else {
        if st.failure(&job.tenant, &job.instance).is_some() {
            // The instance is configured but not served (its tenant's file
            // is broken, it cannot be built, or its plugin is compiling):
            // its work waits for the fix rather than being dead-lettered.
            let wait = if st.is_compiling(&job.tenant, &job.instance) {
                5_000
            } else {
                60_000
            };
            if let Err(e) = db.release_job(attempt, now_ms() + wait).await {
                tracing::error!(error = %e, job = job.id, "holding a job of an instance not served");
            }
            return None;
        }
        let message = "the instance is no longer configured; it will not be retried";
        if let Err(e) = db.fail_job(attempt, message, now_ms(), Retry::Never).await {
            tracing::error!(error = %e, job = job.id, "recording a job failure");
        }
        return None;
    };
    let (progress, watch) = tokio::sync::watch::channel(None);
    let _registered = Registered::new(st, job, watch);
    let opts = CallOptions {
        request_id: rid.clone(),
        progress: Some(progress),
        ..CallOptions::default()
    };
    let mut summary = None;
    let run = async {
        match job.kind.as_str() {
            "webhook" => match StoredDelivery::decode(&job.payload) {
                Err(e) => (
                    Settle::Fail {
                        message: format!("unreadable stored delivery: {e}"),
                        retry: Retry::Never,
                    },
                    None,
                ),
                Ok(req) => {
                    let inv = inst.handle_webhook(&job.name, req, opts).await;
                    let result = inv.result.as_ref().map(|r| Some(r.status));
                    let settled = settle(result, inv.report.retry, max_retry_after_ms);
                    (settled, Some(inv.report))
                }
            },
            _ => {
                let inv = inst.run_job(&job.name, opts).await;
                summary = inv.result.as_ref().ok().cloned();
                let result = inv.result.as_ref().map(|_| None);
                let settled = settle(result, inv.report.retry, max_retry_after_ms);
                (settled, Some(inv.report))
            }
        }
    };
    let (settled, report) = heartbeat(st, attempt, run).await;
    let outcome = match settled {
        Settle::Release { after_ms } => {
            // Not an attempt: the job did not run (though a migration step
            // may have, and what it sent is audited). It is looked at again
            // later.
            if let Some(r) = &report {
                let entries = record::report_audit(&job.tenant, &job.instance, "", r);
                if !entries.is_empty() {
                    record::append_audit(&st.shared, entries, &r.request_id).await;
                }
            }
            if let Err(e) = db.release_job(attempt, now_ms() + after_ms).await {
                tracing::error!(error = %e, job = job.id, "releasing a job");
            }
            st.shared.metrics.job_released(&job.tenant, &job.instance);
            return None;
        }
        Settle::Done => Outcome::Done,
        Settle::Fail { message, retry } => Outcome::Failed {
            error: message,
            retry,
        },
    };
    let report = report.unwrap_or_else(|| switchyard_runtime::Report {
        request_id: rid.clone(),
        ..Default::default()
    });
    let plugin = &inst.plugin().manifest().id;
    let code = match &outcome {
        Outcome::Done => "ok",
        Outcome::Failed { .. } => "error",
    };
    st.shared
        .metrics
        .record(&job.tenant, &job.instance, plugin, &job.kind, code, &report);
    let who = Subject {
        tenant: &job.tenant,
        instance: Some(&job.instance),
        actor: "",
        request_id: &rid,
    };
    // A job that goes on across invocations asked to run again soon.
    let again_at_ms = match (&outcome, job.kind.as_str(), report.run_again_secs) {
        (Outcome::Done, "job", Some(secs)) => Some(now_ms() + i64::from(secs) * 1000),
        _ => None,
    };
    let finish = Finish {
        attempt,
        again_at_ms,
        run: RunRecord {
            tenant: job.tenant.clone(),
            instance: job.instance.clone(),
            kind: job.kind.clone(),
            name: job.name.clone(),
            outcome: code.to_owned(),
            error: match &outcome {
                Outcome::Failed { error, .. } => Some(error.clone()),
                Outcome::Done => None,
            },
            summary: match &outcome {
                Outcome::Done => summary,
                Outcome::Failed { .. } => None,
            },
        },
        outcome,
        job_entry: who.entry(
            &job.kind,
            format!("{} (job {}, attempt {})", job.name, job.id, job.attempts),
            "",
            started.elapsed().as_millis() as i64,
        ),
        egress: record::report_audit(&job.tenant, &job.instance, "", &report),
        next: (!st.shared.stopping()).then(|| NextLease {
            lease_ms: st.jobs.lease_ms(),
            per_tenant: st.concurrency.clone(),
            skip: st.paused_instances(),
        }),
    };
    // One transaction: the job's new state, its run statistics, its audit
    // entries, and the slot's next job.
    match db.finish_job(finish, now_ms()).await {
        Ok(f) => {
            if f.settled == Settled::LeaseLost {
                tracing::warn!(
                    job = job.id,
                    attempt = job.attempts,
                    "a job ran past its lease and another attempt took it over; \
                     this outcome is ignored"
                );
            }
            f.next
        }
        Err(e) => {
            tracing::error!(error = %e, job = job.id, "recording a finished job");
            None
        }
    }
}

/// Runs `work` while renewing `attempt`'s lease every third of its length,
/// so a job may run longer than one lease and is still never taken over
/// while this daemon lives. The renewals run in a task of their own: the
/// job goes on while one waits for the database. A renewal that finds the
/// lease gone (the database was out of reach for a whole lease, and another
/// worker took the job over) is logged; the attempt runs on, and fencing
/// ignores its outcome.
async fn heartbeat<T>(st: &AppState, attempt: Attempt<'_>, work: impl Future<Output = T>) -> T {
    let lease_ms = st.jobs.lease_ms();
    let every = Duration::from_millis((lease_ms / 3).max(1) as u64);
    let db = st.db().clone();
    let (id, n, owner) = (attempt.id, attempt.attempt, attempt.owner.to_owned());
    let beats = tokio::spawn(async move {
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            beat.tick().await;
            let attempt = Attempt {
                id,
                attempt: n,
                owner: &owner,
            };
            match db.extend_lease(attempt, now_ms() + lease_ms).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        job = id,
                        attempt = n,
                        "lost the lease of a running job; another attempt took it over"
                    );
                    return;
                }
                // Tried again at the next beat; the lease lasts two more.
                Err(e) => tracing::error!(error = %e, job = id, "renewing a job's lease"),
            }
        }
    });
    // Stopped however the job ends, even when it is cancelled: a lease
    // must never outlive its job here.
    let _beats = AbortOnDrop(beats);
    work.await
}

/// Lists a job among the running ones for as long as it lives, so that the
/// status shows it (and its progress) and forgets it however the run ends.
struct Registered<'a> {
    st: &'a AppState,
    id: i64,
}

impl<'a> Registered<'a> {
    fn new(
        st: &'a AppState,
        job: &Job,
        progress: tokio::sync::watch::Receiver<Option<Progress>>,
    ) -> Self {
        st.shared
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                job.id,
                RunningJob {
                    tenant: job.tenant.clone(),
                    instance: job.instance.clone(),
                    name: job.name.clone(),
                    started_ms: now_ms(),
                    progress,
                },
            );
        Self { st, id: job.id }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.st
            .shared
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use switchyard_store::JobState;

    #[test]
    fn the_readme_error_table_says_which_failures_are_retried() {
        for (kind, e) in crate::errors::plugin_error_kinds() {
            let row = crate::errors::readme_error_row(kind);
            let dead = matches!(
                settle(Err(&e), None, 1000),
                Settle::Fail {
                    retry: Retry::Never,
                    ..
                }
            );
            assert_eq!(
                row.ends_with("| dead at once |"),
                dead,
                "`{kind}` is {} in a queue; the README says: {row}",
                if dead { "dead at once" } else { "retried" }
            );
        }
    }

    /// Issue 13, items 1, 16, 19, 20: how each outcome is settled.
    #[test]
    fn outcomes_are_settled_by_what_they_mean() {
        let backoff = |m: &str| Settle::Fail {
            message: m.into(),
            retry: Retry::Backoff {
                retry_after_ms: None,
            },
        };
        assert_eq!(settle(Ok(None), None, 600_000), Settle::Done);
        assert_eq!(settle(Ok(Some(204)), None, 600_000), Settle::Done);
        // A 5xx answer is a failure, retried (item 1).
        assert_eq!(
            settle(Ok(Some(503)), None, 600_000),
            backoff("the plugin answered the delivery with HTTP 503")
        );
        // A 4xx answer, or a refused input, is permanent (item 16).
        for r in [
            settle(Ok(Some(400)), None, 600_000),
            settle(
                Err(&InvokeError::Plugin(PluginError::InvalidInput {
                    message: "not JSON".into(),
                })),
                None,
                600_000,
            ),
        ] {
            assert!(
                matches!(
                    r,
                    Settle::Fail {
                        retry: Retry::Never,
                        ..
                    }
                ),
                "{r:?}"
            );
        }
        // No wasm slot: not an attempt (item 19).
        assert_eq!(
            settle(Err(&InvokeError::Busy("full".into())), None, 600_000),
            Settle::Release {
                after_ms: BUSY_RETRY_MS
            }
        );
        // Nor is a call that waited for a storage migration that failed:
        // the job waits for the migration's next try.
        let migration = InvokeError::Migration {
            plugin: "notes".into(),
            version: "2.0.0".into(),
            from: None,
            reason: "failed".into(),
            retry_after: std::time::Duration::from_secs(10),
        };
        assert_eq!(
            settle(Err(&migration), None, 600_000),
            Settle::Release { after_ms: 10_000 }
        );
        // A trap is retried.
        assert!(matches!(
            settle(Err(&InvokeError::Trap("boom".into())), None, 600_000),
            Settle::Fail {
                retry: Retry::Backoff { .. },
                ..
            }
        ));
        // Retry-After is honoured up to the cap (item 20).
        let slow = InvokeError::Plugin(PluginError::Upstream {
            status: Some(429),
            message: "slow down".into(),
            retry_after_secs: Some(999_999),
        });
        assert!(matches!(
            settle(Err(&slow), None, 600_000),
            Settle::Fail {
                retry: Retry::Backoff {
                    retry_after_ms: Some(600_000)
                },
                ..
            }
        ));
    }

    /// Issue 14: a plugin's mark overrides its error kind's default, in
    /// both directions, and only for errors the plugin returned.
    #[test]
    fn marked_errors_are_settled_as_marked() {
        let never = |r: &Settle| {
            matches!(
                r,
                Settle::Fail {
                    retry: Retry::Never,
                    ..
                }
            )
        };
        let upstream = InvokeError::Plugin(PluginError::Upstream {
            status: Some(400),
            message: "field u_x does not exist".into(),
            retry_after_secs: Some(5),
        });
        assert!(!never(&settle(Err(&upstream), None, 600_000)));
        let r = settle(Err(&upstream), Some(RetryMark::Permanent), 600_000);
        assert!(never(&r), "{r:?}");
        assert!(
            matches!(&r, Settle::Fail { message, .. } if message.contains("marked it permanent")),
            "{r:?}"
        );
        let forbidden = InvokeError::Plugin(PluginError::Forbidden {
            message: "ACL missing".into(),
        });
        assert!(never(&settle(Err(&forbidden), None, 600_000)));
        assert_eq!(
            settle(Err(&forbidden), Some(RetryMark::Transient), 600_000),
            Settle::Fail {
                message: forbidden.to_string(),
                retry: Retry::Backoff {
                    retry_after_ms: None
                },
            }
        );
        // The host's own verdicts stand.
        let schema = InvokeError::InputSchema(vec!["at `/x`: wrong".into()]);
        assert!(never(&settle(
            Err(&schema),
            Some(RetryMark::Transient),
            600_000
        )));
        let trap = InvokeError::Trap("boom".into());
        assert!(!never(&settle(
            Err(&trap),
            Some(RetryMark::Permanent),
            600_000
        )));
        // A success is a success, marked or not.
        assert_eq!(
            settle(Ok(None), Some(RetryMark::Permanent), 600_000),
            Settle::Done
        );
    }

    /// A queue of instantly finishing jobs, counting what the loop asks.
    struct Fake {
        ready: Mutex<VecDeque<Job>>,
        capacity: usize,
        leases: AtomicUsize,
        wake_reads: AtomicUsize,
        done: AtomicUsize,
        wake: tokio::sync::Notify,
    }

    impl Fake {
        fn new(jobs: usize, capacity: usize) -> Arc<Self> {
            let job = |id| Job {
                id,
                tenant: "t".into(),
                instance: "i".into(),
                kind: "job".into(),
                name: "n".into(),
                payload: vec![],
                state: JobState::Running,
                attempts: 1,
                max_attempts: 1,
                run_after_ms: 0,
                last_error: None,
                summary: None,
            };
            Arc::new(Self {
                ready: Mutex::new((0..jobs as i64).map(job).collect()),
                capacity,
                leases: AtomicUsize::new(0),
                wake_reads: AtomicUsize::new(0),
                done: AtomicUsize::new(0),
                wake: tokio::sync::Notify::new(),
            })
        }
    }

    impl Drain for Fake {
        fn capacity(&self) -> usize {
            self.capacity
        }
        async fn lease(&self, free: usize) -> Vec<Job> {
            self.leases.fetch_add(1, Ordering::SeqCst);
            let mut q = self.ready.lock().unwrap();
            let n = free.min(q.len());
            q.drain(..n).collect()
        }
        async fn next_wake_ms(&self) -> Option<i64> {
            self.wake_reads.fetch_add(1, Ordering::SeqCst);
            None
        }
        async fn run(self: Arc<Self>, _job: Job) {
            tokio::task::yield_now().await;
            self.done.fetch_add(1, Ordering::SeqCst);
        }
        fn wake(&self) -> &tokio::sync::Notify {
            &self.wake
        }
    }

    /// Issue 13, item 14: with ready jobs the loop never waits for a timer
    /// (on a paused clock, no virtual time passes while it drains).
    #[tokio::test(start_paused = true)]
    async fn drain_keeps_up_without_sleeping() {
        let fake = Fake::new(1000, 4);
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let started = tokio::time::Instant::now();
        let task = tokio::spawn(drain(fake.clone(), stop, || Duration::ZERO));
        while fake.done.load(Ordering::SeqCst) < 1000 {
            tokio::task::yield_now().await;
            assert_eq!(
                started.elapsed(),
                Duration::ZERO,
                "the loop slept with {} jobs left",
                1000 - fake.done.load(Ordering::SeqCst)
            );
        }
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }

    /// Issue 13, item 11: an idle loop makes no lease (write) calls; it
    /// reads the wake-up hint once per fallback poll, and a wake-up makes
    /// it lease at once.
    #[tokio::test(start_paused = true)]
    async fn an_idle_worker_does_not_lease_and_wakes_when_told() {
        let fake = Fake::new(0, 4);
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(drain(fake.clone(), stop, || Duration::ZERO));
        tokio::time::sleep(Duration::from_secs(60)).await;
        let leases = fake.leases.load(Ordering::SeqCst);
        let reads = fake.wake_reads.load(Ordering::SeqCst);
        // Only the first pass leased; after that the fallback poll reads
        // the hint (two reads per poll) and finds nothing due.
        assert_eq!(leases, 1, "leases in 60 s idle");
        assert!(reads <= 62, "{reads} reads in 60 s idle");
        fake.ready
            .lock()
            .unwrap()
            .extend(Fake::new(1, 1).ready.lock().unwrap().drain(..));
        let before = tokio::time::Instant::now();
        fake.wake.notify_one();
        while fake.done.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            before.elapsed(),
            Duration::ZERO,
            "a wake-up is acted on at once"
        );
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }

    /// Issue 13, item 17: shutdown waits for running jobs only so long.
    #[tokio::test(start_paused = true)]
    async fn shutdown_abandons_jobs_after_the_drain_timeout() {
        struct Stuck(Fake);
        impl Drain for Stuck {
            fn capacity(&self) -> usize {
                1
            }
            async fn lease(&self, free: usize) -> Vec<Job> {
                self.0.lease(free).await
            }
            async fn next_wake_ms(&self) -> Option<i64> {
                None
            }
            async fn run(self: Arc<Self>, _job: Job) {
                self.0.done.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
            fn wake(&self) -> &tokio::sync::Notify {
                &self.0.wake
            }
        }
        let inner = Arc::into_inner(Fake::new(1, 1)).unwrap();
        let stuck = Arc::new(Stuck(inner));
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(drain(stuck.clone(), stop, || Duration::from_secs(30)));
        while stuck.0.done.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        let stopped = tokio::time::Instant::now();
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(stopped.elapsed(), Duration::from_secs(30));
    }
}
