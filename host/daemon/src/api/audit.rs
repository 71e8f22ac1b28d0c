//! `GET /v1/tenants/{tenant}/audit`: the tenant's audit log, newest first,
//! filtered by `kind`, `instance`, `outcome` (exact, or `failed` for all
//! but `ok`), `since` and `until` (seconds since the epoch), and paged:
//! `limit` entries (default 100), then `before=<next_before>` for older.

use std::collections::BTreeMap;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use switchyard_store::AuditQuery;

use super::auth::{Caller, Read};
use crate::errors::{error, unavailable};

/// The query of a request's parameters, or what is wrong with them.
pub fn audit_query(q: &BTreeMap<String, String>) -> Result<AuditQuery, String> {
    let text = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let number = |k: &str| -> Result<Option<i64>, String> {
        text(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| format!("{k} must be a whole number"))
            })
            .transpose()
    };
    let limit = match q.get("limit").map(|l| l.parse::<u32>()) {
        None => 100,
        Some(Ok(n)) if (1..=10_000).contains(&n) => n,
        Some(_) => return Err("limit must be 1-10000".into()),
    };
    Ok(AuditQuery {
        kind: text("kind"),
        instance: text("instance"),
        outcome: text("outcome"),
        since: number("since")?,
        until: number("until")?,
        before_seq: number("before")?,
        limit,
    })
}

/// The handler.
pub async fn audit(caller: Caller<Read>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let rid = caller.request_id.as_str();
    let query = match audit_query(&q) {
        Ok(q) => q,
        Err(why) => return error(StatusCode::BAD_REQUEST, "invalid_request", why, rid),
    };
    let limit = query.limit as usize;
    match caller.st.db().audit_query(&caller.tenant, query).await {
        Ok(entries) => {
            let next = (entries.len() == limit)
                .then(|| entries.last().map(|e| e.seq))
                .flatten();
            axum::Json(json!({ "request_id": rid, "entries": entries, "next_before": next }))
                .into_response()
        }
        Err(e) => unavailable("reading the audit log", &e, rid),
    }
}
