//! Operator endpoints and probes: reload, metrics, health, readiness.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::Operator;
use crate::errors::error;
use crate::state::Live;

/// `POST /v1/admin/reload` (operator token): reload the configuration.
pub async fn reload(op: Operator, State(live): State<Arc<Live>>) -> Response {
    let rid = op.request_id.as_str();
    match live.reload().await {
        Ok(summary) => {
            axum::Json(json!({ "request_id": rid, "reloaded": summary })).into_response()
        }
        Err(problems) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_config",
            problems,
            rid,
        ),
    }
}

/// `GET /metrics`: Prometheus text format (queue depth read at scrape).
pub async fn metrics(State(live): State<Arc<Live>>) -> Response {
    let st = live.current();
    match st.db().queue_depths().await {
        Ok(depths) => {
            let depths: BTreeMap<(&str, &str), _> = depths
                .iter()
                .map(|d| ((d.tenant.as_str(), d.instance.as_str()), d))
                .collect();
            for (t, ts) in st.tenants() {
                for i in ts.instances.keys() {
                    let (q, r, d) = depths
                        .get(&(t.as_str(), i.as_str()))
                        .map_or((0, 0, 0), |d| (d.queued, d.running, d.dead));
                    st.shared.metrics.set_queue(t, i, q, r, d);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading queue depths for metrics"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.shared.metrics.render(),
    )
        .into_response()
}
