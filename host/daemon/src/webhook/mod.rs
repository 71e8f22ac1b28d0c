//! Inbound webhooks: `/hooks/{tenant}/{instance}/{route}`.
//!
//! A delivery is verified before anything else (source address, shared
//! token, HMAC signature — whichever the route configures, see [`verify`]),
//! capped in size, stripped of the credentials it carried, and then, as the
//! plugin's manifest says, handled while the sender waits or stored in the
//! job queue ([`delivery`]) and acknowledged with 200 (`"queued": true`). A
//! delivery whose event id was already seen is acknowledged and not
//! processed again. The queue worker ([`crate::worker`]) runs queued ones.

pub mod delivery;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use switchyard_runtime::{CallOptions, WebhookHeader, WebhookRequest};
use switchyard_store::NewJob;

use self::delivery::StoredDelivery;
use self::verify::{Refusal, event_id, source_ip, strip_form_param, strip_query_param};
use crate::clock::{now_ms, request_id};
use crate::errors::{ApiError, error, invoke_error_code, invoke_error_response, refused};
use crate::record::{self, Outcome, Subject};
use crate::state::Live;

/// Attempts a queued delivery gets before it is dead-lettered.
pub const WEBHOOK_MAX_ATTEMPTS: u32 = 8;

/// Headers never passed to a plugin: they carry credentials.
const STRIPPED_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization"];

/// `ANY /hooks/{tenant}/{instance}/{route}`.
pub async fn handle(
    State(live): State<Arc<Live>>,
    Path((tenant, instance, route)): Path<(String, String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let rid = request_id();
    let st = live.current();
    if let Some(e) = st.unserved(&tenant, &instance, &rid) {
        // The sender should hold the delivery and retry: the plugin is
        // compiling, or the operator is expected to fix the configuration.
        return e.into_response();
    }
    let Some(inst_state) = st.instance_state(&tenant, &instance) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such webhook", &rid);
    };
    let Some(cfg) = inst_state.routes.get(&route) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such webhook", &rid);
    };
    let inst = &inst_state.instance;
    let shared = &st.shared;
    let body: Bytes = match crate::body::read(body, cfg.max_body_bytes, &rid).await {
        Ok(b) => b,
        Err(resp) => {
            shared
                .metrics
                .delivery(&tenant, &instance, &route, "refused_body");
            return resp;
        }
    };
    let query = query.unwrap_or_default();
    let is_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let source = source_ip(peer.ip(), &headers, &cfg.trusted_proxies);
    let source_text = source.to_string();
    let who = Subject {
        tenant: &tenant,
        instance: Some(&instance),
        actor: &source_text,
        request_id: &rid,
    };
    let audit = |outcome: &str| {
        who.entry(
            "webhook",
            &route,
            outcome,
            started.elapsed().as_millis() as i64,
        )
    };
    let now_secs = now_ms() / 1000;
    if let Err(refusal) = verify::verify(cfg, source, &headers, &query, &body, is_form, now_secs) {
        let (status, code, message) = match refusal {
            Refusal::Source(ip) => (
                StatusCode::FORBIDDEN,
                "forbidden_source",
                format!("{ip} is not an allowed source"),
            ),
            // Where the credential goes is in the public docs; saying it
            // here spares a sender's developer the guessing.
            Refusal::Token => (
                StatusCode::UNAUTHORIZED,
                "bad_token",
                format!("missing or wrong token: {}", verify::token_hint(cfg)),
            ),
            Refusal::Signature => (
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                format!(
                    "missing or wrong signature: {}",
                    verify::signature_hint(cfg)
                ),
            ),
            Refusal::Stale(off) => (
                StatusCode::UNAUTHORIZED,
                "stale_timestamp",
                format!(
                    "the signed timestamp is {off} s from now; at most {} s is accepted",
                    cfg.tolerance_secs
                ),
            ),
        };
        shared
            .metrics
            .delivery(&tenant, &instance, &route, &format!("refused_{code}"));
        // Refusals need no authentication to cause: one audit entry per
        // minute and kind stands for the rest (counted in the metric).
        if let Some(more) = shared
            .refusals
            .sample("webhook", &tenant, &instance, &route, code)
        {
            let outcome = crate::state::RefusalSampler::outcome(code, more);
            record::append_audit(shared, vec![audit(&outcome)], &rid).await;
        }
        return error(status, code, message, &rid);
    }
    if cfg.synchronous && st.is_paused(&tenant, &instance) {
        // The sender waits for the plugin's answer, and there is none while
        // the instance is paused: it should retry later.
        shared
            .metrics
            .delivery(&tenant, &instance, &route, "paused");
        record::append_audit(shared, vec![audit("paused")], &rid).await;
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "paused",
            format!("instance `{instance}` is paused; retry later"),
            &rid,
        )
        .retry_after(60)
        .into_response();
    }
    let event = match event_id(cfg, &headers, &body) {
        Ok(e) => e,
        Err(reason) => {
            shared
                .metrics
                .delivery(&tenant, &instance, &route, "refused_no_event_id");
            return error(StatusCode::BAD_REQUEST, "invalid_delivery", reason, &rid);
        }
    };
    let (query, body) = match &cfg.token_param {
        Some(p) => (
            strip_query_param(&query, p),
            if is_form {
                Bytes::from(strip_form_param(&body, p))
            } else {
                body
            },
        ),
        None => (query, body),
    };
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            !STRIPPED_HEADERS.contains(&k)
                && k != cfg.token_header
                && k != cfg.signature_header
                && k != verify::WEBHOOK_SIGNATURE
        })
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();

    if !cfg.synchronous {
        let payload = StoredDelivery::new(method.to_string(), query, headers, &body).to_payload();
        let job = NewJob {
            tenant: tenant.clone(),
            instance: instance.clone(),
            kind: "webhook".into(),
            name: route.clone(),
            payload,
            idempotency_key: event.map(|e| format!("webhook:{route}:{e}")),
            max_attempts: WEBHOOK_MAX_ATTEMPTS,
        };
        return match shared.db.enqueue(job, now_ms()).await {
            Ok(e) => {
                if !e.duplicate {
                    shared.wake_worker();
                }
                let counted = if e.duplicate { "duplicate" } else { "queued" };
                shared.metrics.delivery(&tenant, &instance, &route, counted);
                record::append_audit(
                    shared,
                    vec![audit(if e.duplicate { "duplicate" } else { "queued" })],
                    &rid,
                )
                .await;
                // 200, not 202: some senders (BeyondTrust outbound events)
                // count anything but 200 as a failure and hold every later
                // event behind it. The body says it was queued.
                (
                    StatusCode::OK,
                    axum::Json(serde_json::json!({
                        "request_id": rid, "queued": true, "job_id": e.id,
                        "duplicate": e.duplicate
                    })),
                )
                    .into_response()
            }
            Err(e) => {
                tracing::error!(error = %e, "enqueuing a webhook delivery");
                // Not acknowledged: the sender keeps the event and retries.
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "could not store the delivery; retry",
                    &rid,
                )
            }
        };
    }

    let seen_key = event.as_ref().map(|e| format!("webhook:{route}:{e}"));
    if let Some(key) = &seen_key {
        match shared.db.mark_event_seen(&tenant, &instance, key).await {
            Ok(false) => {
                shared
                    .metrics
                    .delivery(&tenant, &instance, &route, "duplicate");
                record::append_audit(shared, vec![audit("duplicate")], &rid).await;
                return (
                    StatusCode::OK,
                    axum::Json(serde_json::json!({"request_id": rid, "duplicate": true})),
                )
                    .into_response();
            }
            Ok(true) => {}
            Err(e) => {
                tracing::error!(error = %e, "recording a webhook event id");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "could not record the delivery; retry",
                    &rid,
                );
            }
        }
    }
    let _admitted = match st.admit(&tenant, &instance) {
        Ok(a) => a,
        Err(why) => {
            // Not processed: the sender must be able to redeliver it.
            if let Some(key) = &seen_key
                && let Err(e) = shared.db.forget_event(&tenant, &instance, key).await
            {
                tracing::error!(error = %e, "forgetting the event id of a refused delivery");
            }
            shared
                .metrics
                .delivery(&tenant, &instance, &route, "refused_busy");
            return refused(why, &rid);
        }
    };
    let request = WebhookRequest {
        method: method.to_string(),
        query,
        headers: headers
            .into_iter()
            .map(|(name, value)| WebhookHeader { name, value })
            .collect(),
        body: body.to_vec(),
    };
    let inv = inst
        .handle_webhook(
            &route,
            request,
            CallOptions {
                request_id: rid.clone(),
                ..CallOptions::default()
            },
        )
        .await;
    let outcome = match &inv.result {
        Ok(r) => r.status.to_string(),
        Err(e) => invoke_error_code(e).to_owned(),
    };
    shared
        .metrics
        .delivery(&tenant, &instance, &route, "processed");
    // The sender retries a failed delivery: it must then be processed, not
    // dropped as a duplicate of the attempt that failed.
    let failed = inv.result.as_ref().map_or(true, |r| r.status >= 500);
    if let (true, Some(key)) = (failed, &seen_key)
        && let Err(e) = shared.db.forget_event(&tenant, &instance, key).await
    {
        tracing::error!(error = %e, "forgetting the event id of a failed delivery");
    }
    let plugin = inst.plugin().manifest().id.clone();
    let message = match &inv.result {
        Ok(r) if r.status >= 500 => Some(format!("the plugin answered {}", r.status)),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    };
    record::record(
        shared,
        Outcome {
            tenant: &tenant,
            instance: &instance,
            plugin: &plugin,
            kind: "webhook",
            name: &route,
            outcome: &outcome,
            error: message.as_deref(),
            actor: &source_text,
        },
        &inv.report,
        vec![audit(&outcome)],
    )
    .await;
    match inv.result {
        Ok(r) => {
            let mut resp = Response::new(Body::from(r.body));
            *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
            for h in r.headers {
                if let (Ok(k), Ok(v)) = (
                    axum::http::HeaderName::from_bytes(h.name.as_bytes()),
                    axum::http::HeaderValue::from_str(&h.value),
                ) {
                    resp.headers_mut().append(k, v);
                }
            }
            resp
        }
        Err(e) => invoke_error_response(&e, &rid),
    }
}
