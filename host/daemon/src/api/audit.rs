//! `GET /v1/tenants/{tenant}/audit?limit=N`: the tenant's audit log, newest
//! first.

use std::collections::BTreeMap;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::Caller;
use crate::errors::{error, unavailable};

/// The handler.
pub async fn audit(caller: Caller, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let rid = caller.request_id.as_str();
    let limit = match q.get("limit").map(|l| l.parse::<u32>()) {
        None => 100,
        Some(Ok(n)) if (1..=10_000).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "limit must be 1-10000",
                rid,
            );
        }
    };
    match caller.st.db().audit(&caller.tenant, limit).await {
        Ok(entries) => axum::Json(json!({ "request_id": rid, "entries": entries })).into_response(),
        Err(e) => unavailable("reading the audit log", &e, rid),
    }
}
