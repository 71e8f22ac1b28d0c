//! Inbound webhooks: `/hooks/{tenant}/{instance}/{route}`, and the worker
//! that drains the durable queue.
//!
//! A delivery is verified before anything else (source address, shared
//! token, HMAC signature — whichever the route configures), capped in size,
//! stripped of the credentials it carried, and then, as the plugin's
//! manifest says, handled while the sender waits or stored in the job queue
//! and acknowledged with 200 (`"queued": true`). A delivery whose event id
//! was already seen is acknowledged and not processed again.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, RawQuery};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use switchyard_runtime::{CallOptions, WebhookHeader, WebhookRequest};
use switchyard_store::{AuditEntry, NewJob};

use crate::server::{AppState, Live, Snapshot, append_audit, error, now_ms};

/// Attempts a queued delivery gets before it is dead-lettered.
pub const WEBHOOK_MAX_ATTEMPTS: u32 = 8;

/// Headers never passed to a plugin: they carry credentials.
const STRIPPED_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization"];

/// A route's verification, with its secrets resolved.
pub struct RouteConfig {
    /// Whether the plugin handles it while the sender waits.
    pub synchronous: bool,
    pub(crate) token: Option<SecretString>,
    pub(crate) token_header: String,
    pub(crate) token_param: Option<String>,
    pub(crate) hmac_secret: Option<SecretString>,
    pub(crate) signature_header: String,
    pub(crate) allowed: Vec<IpNet>,
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) event_id_header: Option<String>,
    pub(crate) event_id_field: Option<String>,
    pub(crate) max_body_bytes: usize,
}

/// Why a delivery was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Source(IpAddr),
    Token,
    Signature,
}

/// The source address: the peer, or — only when the peer is a trusted
/// proxy — the right-most `X-Forwarded-For` entry that is not a trusted
/// proxy itself (entries left of it could be forged by the client).
pub(crate) fn source_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !trusted.iter().any(|n| n.contains(&peer)) {
        return peer;
    }
    let chain: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    chain
        .into_iter()
        .rev()
        .find(|ip| !trusted.iter().any(|n| n.contains(ip)))
        .unwrap_or(peer)
}

fn form_or_query_param(query: &str, body: &[u8], is_form: bool, name: &str) -> Option<String> {
    let from = |bytes: &[u8]| {
        url::form_urlencoded::parse(bytes)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    from(query.as_bytes()).or_else(|| if is_form { from(body) } else { None })
}

/// Constant-time equality of two secrets of any length (compares digests).
fn same_secret(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes())
        .ct_eq(&Sha256::digest(b.as_bytes()))
        .into()
}

/// Checks source, token and signature, in that order.
pub(crate) fn verify(
    route: &RouteConfig,
    source: IpAddr,
    headers: &HeaderMap,
    query: &str,
    body: &[u8],
    is_form: bool,
) -> Result<(), Refusal> {
    if !route.allowed.is_empty() && !route.allowed.iter().any(|n| n.contains(&source)) {
        return Err(Refusal::Source(source));
    }
    if let Some(expected) = &route.token {
        let presented = match &route.token_param {
            Some(p) => form_or_query_param(query, body, is_form, p),
            None => headers
                .get(route.token_header.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        };
        match presented {
            Some(p) if same_secret(&p, expected.expose_secret()) => {}
            _ => return Err(Refusal::Token),
        }
    }
    if let Some(key) = &route.hmac_secret {
        let sig = headers
            .get(route.signature_header.as_str())
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().trim_start_matches("sha256="))
            .and_then(|hex_sig| hex::decode(hex_sig).ok())
            .ok_or(Refusal::Signature)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(body);
        mac.verify_slice(&sig).map_err(|_| Refusal::Signature)?;
    }
    Ok(())
}

/// Removes the token parameter from a form body, so the plugin never sees it.
fn strip_form_param(body: &[u8], name: &str) -> Vec<u8> {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(url::form_urlencoded::parse(body).filter(|(k, _)| k != name))
        .finish()
        .into_bytes()
}

fn strip_query_param(query: &str, name: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(url::form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k != name))
        .finish()
}

fn event_id(
    route: &RouteConfig,
    headers: &HeaderMap,
    body: &[u8],
    is_form: bool,
) -> Option<String> {
    if let Some(h) = &route.event_id_header {
        return headers
            .get(h.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
    }
    let field = route.event_id_field.as_ref()?;
    if is_form {
        return form_or_query_param("", body, true, field);
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    match &v[field.as_str()] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
    .filter(|s| !s.is_empty() && s.len() <= 256)
}

/// A queued delivery, as stored in the job's payload.
#[derive(Serialize, Deserialize)]
struct StoredDelivery {
    method: String,
    query: String,
    headers: Vec<(String, String)>,
    body_b64: String,
}

impl StoredDelivery {
    fn into_request(self) -> Result<WebhookRequest, String> {
        Ok(WebhookRequest {
            method: self.method,
            query: self.query,
            headers: self
                .headers
                .into_iter()
                .map(|(name, value)| WebhookHeader { name, value })
                .collect(),
            body: base64::engine::general_purpose::STANDARD
                .decode(self.body_b64)
                .map_err(|e| format!("stored body is not base64: {e}"))?,
        })
    }
}

/// `ANY /hooks/{tenant}/{instance}/{route}`.
pub async fn handle(
    Snapshot(st): Snapshot,
    Path((tenant, instance, route)): Path<(String, String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let rid = crate::server::request_id();
    let Some((inst, cfg)) = st.webhook_route(&tenant, &instance, &route) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such webhook", &rid);
    };
    let body: Bytes = match axum::body::to_bytes(body, cfg.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body exceeds {} bytes", cfg.max_body_bytes),
                &rid,
            );
        }
    };
    let query = query.unwrap_or_default();
    let is_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let source = source_ip(peer.ip(), &headers, &cfg.trusted_proxies);
    let audit = |outcome: &str| AuditEntry {
        seq: 0,
        time: 0,
        tenant: tenant.clone(),
        instance: Some(instance.clone()),
        actor: Some(source.to_string()),
        kind: "webhook".into(),
        what: route.clone(),
        outcome: outcome.to_owned(),
        duration_ms: started.elapsed().as_millis() as i64,
        request_id: rid.clone(),
    };
    if let Err(refusal) = verify(cfg, source, &headers, &query, &body, is_form) {
        let (status, code, message) = match refusal {
            Refusal::Source(ip) => (
                StatusCode::FORBIDDEN,
                "forbidden_source",
                format!("{ip} is not an allowed source"),
            ),
            Refusal::Token => (
                StatusCode::UNAUTHORIZED,
                "bad_token",
                "missing or wrong token".to_owned(),
            ),
            Refusal::Signature => (
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                "missing or wrong signature".to_owned(),
            ),
        };
        append_audit(&st.db, vec![audit(code)], &rid).await;
        return error(status, code, message, &rid);
    }
    let event = event_id(cfg, &headers, &body, is_form);
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
            !STRIPPED_HEADERS.contains(&k) && k != cfg.token_header && k != cfg.signature_header
        })
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();

    if !cfg.synchronous {
        let payload = serde_json::to_vec(&StoredDelivery {
            method: method.to_string(),
            query,
            headers,
            body_b64: base64::engine::general_purpose::STANDARD.encode(&body),
        })
        .expect("serialising a delivery cannot fail");
        let job = NewJob {
            tenant: tenant.clone(),
            instance: instance.clone(),
            kind: "webhook".into(),
            name: route.clone(),
            payload,
            idempotency_key: event.map(|e| format!("webhook:{route}:{e}")),
            max_attempts: WEBHOOK_MAX_ATTEMPTS,
        };
        return match st.db.enqueue(job, now_ms()).await {
            Ok(e) => {
                append_audit(
                    &st.db,
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
        match st.db.mark_event_seen(&tenant, &instance, key).await {
            Ok(false) => {
                append_audit(&st.db, vec![audit("duplicate")], &rid).await;
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
        Err(e) => crate::server::invoke_error_code(e).to_owned(),
    };
    // The sender retries a failed delivery: it must then be processed, not
    // dropped as a duplicate of the attempt that failed.
    let failed = inv.result.as_ref().map_or(true, |r| r.status >= 500);
    if let (true, Some(key)) = (failed, &seen_key)
        && let Err(e) = st.db.forget_event(&tenant, &instance, key).await
    {
        tracing::error!(error = %e, "forgetting the event id of a failed delivery");
    }
    let plugin = inst.plugin().manifest().id.clone();
    let message = match &inv.result {
        Ok(r) if r.status >= 500 => Some(format!("the plugin answered {}", r.status)),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    };
    crate::server::record_outcome(
        &st,
        &tenant,
        &instance,
        &plugin,
        "webhook",
        &route,
        &outcome,
        message.as_deref(),
        &inv.report,
    )
    .await;
    let mut entries = vec![audit(&outcome)];
    entries.extend(crate::server::egress_audit(
        &tenant,
        &instance,
        &source.to_string(),
        &inv.report,
    ));
    append_audit(&st.db, entries, &rid).await;
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
        Err(e) => crate::server::invoke_error_response(&e, &rid),
    }
}

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
            match st.db.lease(now_ms(), lease_ms, free, &st.concurrency).await {
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

async fn run_job(st: &AppState, job: switchyard_store::Job) {
    if st.is_paused(&job.tenant, &job.instance) && st.instance(&job.tenant, &job.instance).is_some()
    {
        // Held, not failed: it runs after the instance is resumed.
        if let Err(e) = st.db.release_job(job.id, now_ms() + 1000).await {
            tracing::error!(error = %e, job = job.id, "holding a job of a paused instance");
        }
        return;
    }
    let started = Instant::now();
    let rid = crate::server::request_id();
    let Some(inst) = st.instance(&job.tenant, &job.instance) else {
        let _ = st
            .db
            .fail_job(
                job.id,
                "the instance is no longer configured",
                now_ms(),
                None,
            )
            .await;
        return;
    };
    let (progress, watch) = tokio::sync::watch::channel(None);
    let _registered = Registered::new(st, &job, watch);
    let opts = CallOptions {
        request_id: rid.clone(),
        progress: Some(progress),
        ..CallOptions::default()
    };
    let (result, report) = match job.kind.as_str() {
        "webhook" => {
            let request = serde_json::from_slice::<StoredDelivery>(&job.payload)
                .map_err(|e| e.to_string())
                .and_then(StoredDelivery::into_request);
            match request {
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
            }
        }
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
            if let Err(e) = st.db.complete_job(job.id).await {
                tracing::error!(error = %e, job = job.id, "completing a job");
            }
            "ok".to_owned()
        }
        Err((message, retry_after)) => {
            match st
                .db
                .fail_job(job.id, message, now_ms(), *retry_after)
                .await
            {
                Ok(state) => format!("failed ({state:?})").to_lowercase(),
                Err(e) => {
                    tracing::error!(error = %e, job = job.id, "recording a job failure");
                    "failed".into()
                }
            }
        }
    };
    let mut entries = vec![AuditEntry {
        seq: 0,
        time: 0,
        tenant: job.tenant.clone(),
        instance: Some(job.instance.clone()),
        actor: None,
        kind: job.kind.clone(),
        what: format!("{} (job {}, attempt {})", job.name, job.id, job.attempts),
        outcome,
        duration_ms: started.elapsed().as_millis() as i64,
        request_id: rid.clone(),
    }];
    let (code, message) = match &result {
        Ok(()) => ("ok", None),
        Err((message, _)) => ("error", Some(message.as_str())),
    };
    crate::server::record_outcome(
        st,
        &job.tenant,
        &job.instance,
        &inst.plugin().manifest().id,
        &job.kind,
        &job.name,
        code,
        message,
        report.as_ref().unwrap_or(&Default::default()),
    )
    .await;
    if let Some(report) = report {
        entries.extend(crate::server::egress_audit(
            &job.tenant,
            &job.instance,
            "",
            &report,
        ));
    }
    append_audit(&st.db, entries, &rid).await;
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
        job: &switchyard_store::Job,
        progress: tokio::sync::watch::Receiver<Option<switchyard_runtime::log::Progress>>,
    ) -> Self {
        st.running.lock().unwrap_or_else(|p| p.into_inner()).insert(
            job.id,
            crate::server::RunningJob {
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
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

fn retry_info(e: &switchyard_runtime::InvokeError) -> (String, Option<i64>) {
    let retry_after = match e {
        switchyard_runtime::InvokeError::Plugin(switchyard_runtime::PluginError::Upstream {
            retry_after_secs: Some(s),
            ..
        }) => Some(i64::from(*s) * 1000),
        _ => None,
    };
    (e.to_string(), retry_after)
}

/// Resolves a route's configuration from the tenant file.
pub async fn route_config<F, Fut>(
    hook: &crate::config::WebhookConfig,
    synchronous: bool,
    lookup: &F,
    what: &str,
) -> anyhow::Result<RouteConfig>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = anyhow::Result<Option<SecretString>>>,
{
    let secret = async |v: &Option<String>, field: &str| -> anyhow::Result<Option<SecretString>> {
        match v {
            None => Ok(None),
            Some(v) => Ok(Some(
                crate::config::resolve_secret(v, &format!("{what}.{field}"), lookup).await?,
            )),
        }
    };
    let nets = |list: &[String]| {
        list.iter()
            .filter_map(|s| crate::config::parse_net(s))
            .collect()
    };
    Ok(RouteConfig {
        synchronous,
        token: secret(&hook.token, "token").await?,
        token_header: hook
            .token_header
            .clone()
            .unwrap_or_else(|| "x-switchyard-token".into())
            .to_ascii_lowercase(),
        token_param: hook.token_param.clone(),
        hmac_secret: secret(&hook.hmac_secret, "hmac_secret").await?,
        signature_header: hook.signature_header.to_ascii_lowercase(),
        allowed: nets(&hook.allowed_ips),
        trusted_proxies: nets(&hook.trusted_proxies),
        event_id_header: hook
            .event_id_header
            .as_ref()
            .map(|h| h.to_ascii_lowercase()),
        event_id_field: hook.event_id_field.clone(),
        max_body_bytes: hook.max_body_bytes,
    })
}

/// Route configs of one instance, by route name.
pub type Routes = BTreeMap<String, RouteConfig>;

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> RouteConfig {
        RouteConfig {
            synchronous: false,
            token: Some(SecretString::from("t0ken")),
            token_header: "x-switchyard-token".into(),
            token_param: None,
            hmac_secret: None,
            signature_header: "x-switchyard-signature".into(),
            allowed: vec!["10.0.0.0/8".parse().unwrap()],
            trusted_proxies: vec![],
            event_id_header: None,
            event_id_field: None,
            max_body_bytes: 1000,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let h = headers(&[("x-forwarded-for", "10.1.1.1, 192.0.2.7")]);
        let peer: IpAddr = "203.0.113.5".parse().unwrap();
        assert_eq!(source_ip(peer, &h, &[]), peer);
        let proxy: IpNet = "203.0.113.0/24".parse().unwrap();
        // The right-most untrusted hop is the client as the proxy saw it;
        // 10.1.1.1 further left could be forged.
        assert_eq!(
            source_ip(peer, &h, &[proxy]),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn source_token_and_signature_are_checked() {
        let r = route();
        let ok_ip: IpAddr = "10.2.3.4".parse().unwrap();
        let good = headers(&[("x-switchyard-token", "t0ken")]);
        assert_eq!(verify(&r, ok_ip, &good, "", b"", false), Ok(()));
        let bad_ip: IpAddr = "11.0.0.1".parse().unwrap();
        assert_eq!(
            verify(&r, bad_ip, &good, "", b"", false),
            Err(Refusal::Source(bad_ip))
        );
        let wrong = headers(&[("x-switchyard-token", "t0ke")]);
        assert_eq!(
            verify(&r, ok_ip, &wrong, "", b"", false),
            Err(Refusal::Token)
        );
        assert_eq!(
            verify(&r, ok_ip, &HeaderMap::new(), "", b"", false),
            Err(Refusal::Token)
        );

        let mut r = route();
        r.token_param = Some("outbound_event_token".into());
        let body = b"event=support_conference_end&outbound_event_token=t0ken&lsid=abc";
        assert_eq!(verify(&r, ok_ip, &HeaderMap::new(), "", body, true), Ok(()));
        assert_eq!(
            verify(
                &r,
                ok_ip,
                &HeaderMap::new(),
                "outbound_event_token=t0ken",
                b"",
                false
            ),
            Ok(())
        );
        assert_eq!(
            strip_form_param(body, "outbound_event_token"),
            b"event=support_conference_end&lsid=abc"
        );

        let mut r = route();
        r.token = None;
        r.hmac_secret = Some(SecretString::from("k"));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
        mac.update(b"payload");
        let sig = hex::encode(mac.finalize().into_bytes());
        let signed = headers(&[("x-switchyard-signature", &format!("sha256={sig}"))]);
        assert_eq!(verify(&r, ok_ip, &signed, "", b"payload", false), Ok(()));
        assert_eq!(
            verify(&r, ok_ip, &signed, "", b"tampered", false),
            Err(Refusal::Signature)
        );
    }

    #[test]
    fn event_ids_come_from_the_configured_place() {
        let mut r = route();
        r.event_id_field = Some("id".into());
        assert_eq!(
            event_id(&r, &HeaderMap::new(), br#"{"id":"e-1"}"#, false).as_deref(),
            Some("e-1")
        );
        assert_eq!(
            event_id(&r, &HeaderMap::new(), b"id=e-2&x=1", true).as_deref(),
            Some("e-2")
        );
        assert_eq!(
            event_id(&r, &HeaderMap::new(), br#"{"id":""}"#, false),
            None
        );
        r.event_id_header = Some("x-event-id".into());
        assert_eq!(
            event_id(&r, &headers(&[("x-event-id", "h-1")]), b"", false).as_deref(),
            Some("h-1")
        );
    }
}
