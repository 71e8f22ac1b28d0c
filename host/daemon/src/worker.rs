//! The queue worker: leases ready jobs (queued webhook deliveries, fired
//! schedules, "run now" requests), runs each in the plugin, and records the
//! outcome: done, retried after a back-off, or dead-lettered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_runtime::{CallOptions, InvokeError, PluginError, log::Progress};
use switchyard_store::Job;

use crate::clock::{now_ms, request_id};
use crate::record::{self, Outcome, Subject};
use crate::state::{AppState, Live, RunningJob};
use crate::webhook::delivery::StoredDelivery;

/// Drains the queue until `stop` is set, then waits for running jobs.
pub async fn worker(live: Arc<Live>, stop: tokio::sync::watch::Receiver<bool>) {
    let mut running = tokio::task::JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        while running.try_join_next().is_some() {}
        let st = live.current();
        // Read per pass: a reload may change the limits.
        let free = st.workers.saturating_sub(running.len());
        let leased = if free == 0 {
            Vec::new()
        } else {
            // The lease outlives the longest invocation, so a live worker's
            // job is never handed to another.
            let lease_ms = st.max_deadline_ms() + 30_000;
            match st
                .db()
                .lease(now_ms(), lease_ms, free, &st.concurrency)
                .await
            {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::error!(error = %e, "leasing jobs");
                    Vec::new()
                }
            }
        };
        if leased.is_empty() {
            let mut stop = stop.clone();
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        for job in leased {
            let st = st.clone();
            running.spawn(async move { run_job(&st, job).await });
        }
    }
    // Graceful shutdown: in-flight jobs finish; queued ones stay queued.
    while running.join_next().await.is_some() {}
}

async fn run_job(st: &AppState, job: Job) {
    let db = st.db();
    let Some(inst) = st.instance(&job.tenant, &job.instance) else {
        let _ = db
            .fail_job(
                job.id,
                "the instance is no longer configured",
                now_ms(),
                None,
            )
            .await;
        return;
    };
    if st.is_paused(&job.tenant, &job.instance) {
        // Held, not failed: it runs after the instance is resumed.
        if let Err(e) = db.release_job(job.id, now_ms() + 1000).await {
            tracing::error!(error = %e, job = job.id, "holding a job of a paused instance");
        }
        st.shared.metrics.job_held(&job.tenant, &job.instance);
        return;
    }
    let started = Instant::now();
    let rid = request_id();
    let (progress, watch) = tokio::sync::watch::channel(None);
    let _registered = Registered::new(st, &job, watch);
    let opts = CallOptions {
        request_id: rid.clone(),
        progress: Some(progress),
        ..CallOptions::default()
    };
    let (result, report) = match job.kind.as_str() {
        "webhook" => match StoredDelivery::decode(&job.payload) {
            Err(e) => (
                Err((format!("unreadable stored delivery: {e}"), None)),
                None,
            ),
            Ok(req) => {
                let inv = inst.handle_webhook(&job.name, req, opts).await;
                (
                    inv.result.map(|_| ()).map_err(|e| retry_info(&e)),
                    Some(inv.report),
                )
            }
        },
        _ => {
            let inv = inst.run_job(&job.name, opts).await;
            (
                inv.result.map(|_| ()).map_err(|e| retry_info(&e)),
                Some(inv.report),
            )
        }
    };
    let outcome = match &result {
        Ok(()) => {
            if let Err(e) = db.complete_job(job.id).await {
                tracing::error!(error = %e, job = job.id, "completing a job");
            }
            "ok".to_owned()
        }
        Err((message, retry_after)) => {
            match db.fail_job(job.id, message, now_ms(), *retry_after).await {
                Ok(state) => format!("failed ({state:?})").to_lowercase(),
                Err(e) => {
                    tracing::error!(error = %e, job = job.id, "recording a job failure");
                    "failed".into()
                }
            }
        }
    };
    let who = Subject {
        tenant: &job.tenant,
        instance: Some(&job.instance),
        actor: "",
        request_id: &rid,
    };
    let entry = who.entry(
        &job.kind,
        format!("{} (job {}, attempt {})", job.name, job.id, job.attempts),
        outcome,
        started.elapsed().as_millis() as i64,
    );
    let (code, message) = match &result {
        Ok(()) => ("ok", None),
        Err((message, _)) => ("error", Some(message.as_str())),
    };
    let report = report.unwrap_or_else(|| switchyard_runtime::Report {
        request_id: rid.clone(),
        ..Default::default()
    });
    record::record(
        &st.shared,
        Outcome {
            tenant: &job.tenant,
            instance: &job.instance,
            plugin: &inst.plugin().manifest().id,
            kind: &job.kind,
            name: &job.name,
            outcome: code,
            error: message,
            actor: "",
        },
        &report,
        vec![entry],
    )
    .await;
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

fn retry_info(e: &InvokeError) -> (String, Option<i64>) {
    let retry_after = match e {
        InvokeError::Plugin(PluginError::Upstream {
            retry_after_secs: Some(s),
            ..
        }) => Some(i64::from(*s) * 1000),
        _ => None,
    };
    (e.to_string(), retry_after)
}
