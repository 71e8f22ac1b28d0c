//! Running an instance: pause, resume, status, and "run this job now".

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth::{Caller, Operate, Read};
use crate::clock::now_ms;
use crate::errors::{error, unavailable};
use crate::record::{self, Subject};
use crate::state::AppState;

/// Pauses or resumes an instance: persisted, shared with every snapshot of
/// the state (a reload does not undo it), and audited.
pub async fn pause_instance(
    shared: &crate::state::Shared,
    tenant: &str,
    instance: &str,
    paused: bool,
    author: &str,
    rid: &str,
) -> Result<(), switchyard_store::StoreError> {
    shared.db.set_paused(tenant, instance, paused).await?;
    shared.pauses.set(tenant, instance, paused);
    if !paused {
        // Its queued jobs may run now.
        shared.wake_worker();
    }
    let who = Subject {
        tenant,
        instance: Some(instance),
        actor: author,
        request_id: rid,
    };
    let what = if paused { "pause" } else { "resume" };
    record::append_audit(shared, vec![who.entry("admin", what, "ok", 0)], rid).await;
    Ok(())
}

/// `POST .../pause` and `.../resume`.
pub async fn set_paused(caller: Caller<Operate>, instance: String, paused: bool) -> Response {
    let rid = caller.request_id.as_str();
    if let Err(e) = caller.instance(&instance) {
        return e.into_response();
    }
    let author = caller.author();
    match pause_instance(
        &caller.st.shared,
        &caller.tenant,
        &instance,
        paused,
        &author,
        rid,
    )
    .await
    {
        Ok(()) => axum::Json(json!({ "request_id": rid, "paused": paused })).into_response(),
        Err(e) => unavailable("recording the change", &e, rid),
    }
}

/// `POST .../pause`.
pub async fn pause(
    caller: Caller<Operate>,
    Path((_, instance)): Path<(String, String)>,
) -> Response {
    set_paused(caller, instance, true).await
}

/// `POST .../resume`.
pub async fn resume(
    caller: Caller<Operate>,
    Path((_, instance)): Path<(String, String)>,
) -> Response {
    set_paused(caller, instance, false).await
}

/// `POST .../jobs/{job}/run`: queues a run now.
pub async fn run_now(
    caller: Caller<Operate>,
    Path((_, instance, job)): Path<(String, String, String)>,
) -> Response {
    let rid = caller.request_id.as_str();
    let inst = match caller.instance(&instance) {
        Ok(i) => &i.instance,
        Err(e) => return e.into_response(),
    };
    if !inst.plugin().manifest().jobs.iter().any(|j| j.name == job) {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the plugin has no job `{job}`"),
            rid,
        );
    }
    let new = switchyard_store::NewJob {
        tenant: caller.tenant.clone(),
        instance,
        kind: "job".into(),
        name: job,
        payload: Vec::new(),
        idempotency_key: None,
        max_attempts: 1,
    };
    match caller.st.db().enqueue(new, now_ms()).await {
        Ok(e) => {
            caller.st.shared.wake_worker();
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({ "request_id": rid, "job_id": e.id })),
            )
                .into_response()
        }
        Err(e) => unavailable("queueing the run", &e, rid),
    }
}

/// `GET .../status`: paused, plugin, schedules, queue and recent failures.
pub async fn status(caller: Caller<Read>, Path((_, instance)): Path<(String, String)>) -> Response {
    let rid = caller.request_id.as_str();
    if caller.st.failure(&caller.tenant, &instance).is_none()
        && let Err(e) = caller.instance(&instance)
    {
        return e.into_response();
    }
    match instance_status(&caller.st, &caller.tenant, &instance).await {
        Ok(mut status) => {
            status["request_id"] = json!(rid);
            axum::Json(status).into_response()
        }
        Err(e) => unavailable("reading the status", &e, rid),
    }
}

/// The status of a configured instance (served or failed), as
/// `GET .../status` answers it, for the API and the console.
pub async fn instance_status(
    st: &AppState,
    tenant: &str,
    instance: &str,
) -> Result<Value, switchyard_store::StoreError> {
    // An instance that is not served still has a status: why.
    if let Some(problems) = st.failure(tenant, instance) {
        let state = if st.is_compiling(tenant, instance) {
            "compiling"
        } else {
            "failed"
        };
        return Ok(json!({
            "tenant": tenant,
            "instance": instance,
            "state": state,
            "problems": problems,
        }));
    }
    let Some(inst) = st.instance(tenant, instance) else {
        return Ok(json!({ "tenant": tenant, "instance": instance, "state": "unknown" }));
    };
    let db = st.db();
    let (schedules, counts, stats) = tokio::try_join!(
        db.schedules(tenant, instance),
        db.queue_counts(tenant, instance),
        db.run_stats(tenant, instance),
    )?;
    let m = inst.plugin().manifest();
    let running: Vec<Value> = st
        .shared
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(_, r)| r.tenant == tenant && r.instance == instance)
        .map(|(id, r)| {
            json!({
                "job_id": id,
                "name": r.name,
                "started_ms": r.started_ms,
                "progress": *r.progress.borrow(),
            })
        })
        .collect();
    // The most recent failure of anything on the instance.
    let last_error = stats
        .iter()
        .filter_map(|s| Some((s.last_error_ms?, s)))
        .max_by_key(|(at, _)| *at)
        .map(|(at, s)| {
            json!({
                "kind": s.kind, "name": s.name, "at_ms": at, "message": s.last_error,
            })
        });
    let job_stats = |name: &str| stats.iter().find(|s| s.kind == "job" && s.name == name);
    Ok(json!({
        "tenant": tenant,
        "instance": instance,
        "state": "serving",
        "plugin": { "id": m.id, "version": m.version, "digest": inst.plugin().digest() },
        "paused": st.is_paused(tenant, instance),
        "jobs": schedules.iter().map(|s| {
            let run = job_stats(&s.job);
            json!({
                "name": s.job,
                "interval_secs": s.interval_ms / 1000,
                "last_run_ms": s.last_fired_ms,
                "next_run_ms": s.next_run_ms,
                "runs": run.map_or(0, |r| r.runs),
                "errors": run.map_or(0, |r| r.errors),
                "last_outcome": run.map(|r| &r.last_outcome),
                "last_error": run.and_then(|r| r.last_error.as_ref()),
                "last_summary": run.and_then(|r| r.last_summary.as_ref()),
            })
        }).collect::<Vec<_>>(),
        "queue": { "queued": counts.0, "running": counts.1, "dead": counts.2 },
        // While the plugin version's storage migration step fails, nothing
        // of the instance runs: why, and when it is tried again.
        "storage_migration": inst.storage_migration_error().map(|e| json!({
            "state": "failed",
            "message": e.to_string(),
            "retry_after_secs": e.retry_after().map(|d| d.as_secs()),
        })),
        "logs_dropped": st.shared.metrics.logs_dropped(tenant, instance),
        "running": running,
        "invocations": stats,
        "last_error": last_error,
    }))
}
