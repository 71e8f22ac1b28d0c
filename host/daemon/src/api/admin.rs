//! Operator endpoints and probes: reload, metrics, health, readiness.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
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

/// How long `/readyz` waits for the state database.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /readyz` query.
#[derive(serde::Deserialize)]
pub struct ReadyQuery {
    /// `all`: also unready while a plugin compiles in the background.
    plugins: Option<String>,
}

/// `GET /readyz`: 200 `ready` when this daemon can take work; 503 with the
/// reason while it shuts down or while its state database does not answer
/// (within 2 s), so that a load balancer sends requests elsewhere.
///
/// Plugins compiling in the background (see [`Live::start`]) do not make
/// the daemon unready, since every other tenant is served; the body counts
/// them. `?plugins=all` makes them count, for a rolling deployment that
/// should wait until this daemon serves every instance.
pub async fn readyz(State(live): State<Arc<Live>>, Query(q): Query<ReadyQuery>) -> Response {
    let shared = live.shared();
    let unready = |why: String| (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    if shared.stopping() {
        return unready("shutting down".into());
    }
    let wait_for_plugins = match q.plugins.as_deref() {
        None => false,
        Some("all") => true,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("unknown `plugins={other}`: the only value is `all`"),
            )
                .into_response();
        }
    };
    // How many, not which: this endpoint needs no token (the log and the
    // instances' status name them).
    let pending = live.current().catalog().pending().len();
    let compiling = (pending > 0).then(|| format!("compiling {pending} plugin(s)"));
    if let (true, Some(what)) = (wait_for_plugins, &compiling) {
        return unready(what.clone());
    }
    match tokio::time::timeout(READY_TIMEOUT, shared.db.ping()).await {
        Ok(Ok(())) => match compiling {
            None => "ready".into_response(),
            Some(what) => format!("ready; {what}").into_response(),
        },
        Ok(Err(e)) => {
            // The details (the server's address among them) go to the log,
            // not to whoever asks: this endpoint needs no token.
            tracing::warn!(error = %e, "readiness: the state database failed");
            unready("the state database failed; the daemon's log says why".into())
        }
        Err(_) => unready(format!(
            "the state database did not answer within {} s",
            READY_TIMEOUT.as_secs()
        )),
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
