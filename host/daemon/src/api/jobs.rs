//! A tenant's queued work: `GET /v1/tenants/{tenant}/jobs?state=dead` lists
//! jobs newest first, and `POST .../jobs/{id}/retry` puts a dead one back in
//! the queue with fresh attempts (audited).

use std::collections::BTreeMap;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use switchyard_store::JobState;

use super::auth::{Caller, Operate, Read};
use crate::errors::{error, unavailable};

/// `GET /v1/tenants/{tenant}/jobs?state=&limit=`.
pub async fn list(caller: Caller<Read>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let rid = caller.request_id.as_str();
    let state = match q.get("state").map(|s| (s, JobState::from_name(s))) {
        None => None,
        Some((_, Some(s))) => Some(s),
        Some((name, None)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("unknown job state `{name}`: use queued, running, done or dead"),
                rid,
            );
        }
    };
    let limit = match q.get("limit").map(|l| l.parse::<u32>()) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "limit must be 1-1000",
                rid,
            );
        }
    };
    match caller.st.db().list_jobs(&caller.tenant, state, limit).await {
        Ok(jobs) => axum::Json(json!({ "request_id": rid, "jobs": jobs })).into_response(),
        Err(e) => unavailable("listing jobs", &e, rid),
    }
}

/// Puts dead job `id` of `tenant` back in the queue and records who did;
/// false when the tenant has no such dead job.
pub async fn retry_dead(
    shared: &crate::state::Shared,
    tenant: &str,
    id: i64,
    author: &str,
    rid: &str,
) -> Result<bool, switchyard_store::StoreError> {
    if !shared
        .db
        .retry_job(tenant, id, crate::clock::now_ms())
        .await?
    {
        return Ok(false);
    }
    shared.wake_worker();
    super::config::audit_change(shared, tenant, author, rid, format!("retry job {id}")).await;
    Ok(true)
}

/// `POST /v1/tenants/{tenant}/jobs/{id}/retry`.
pub async fn retry(caller: Caller<Operate>, Path((_, id)): Path<(String, i64)>) -> Response {
    let rid = caller.request_id.as_str();
    match retry_dead(&caller.st.shared, &caller.tenant, id, &caller.author(), rid).await {
        Ok(true) => axum::Json(json!({ "request_id": rid, "retried": id })).into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("tenant `{}` has no dead job {id}", caller.tenant),
            rid,
        ),
        Err(e) => unavailable("retrying the job", &e, rid),
    }
}
