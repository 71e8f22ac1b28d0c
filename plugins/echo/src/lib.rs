//! `echo`: the reference plugin. It exercises every host interface so that
//! the host is tested through a real component, and shows plugin authors
//! each part of the SDK.
//!
//! Actions (input → output):
//! - `echo` `{...}` → the input, the context and the `greeting` config value.
//! - `fetch` `{url, method?, credential?, body?, headers?, follow_redirects?}`
//!   → the upstream's status, headers and body, or the host's typed error.
//! - `storage` `{ops: [{op, key?, value?, prefix?, expected?, new?}]}` → one
//!   result per operation, typed errors included.
//! - `credentials` `{verify?: name}` → the bound credentials (metadata only)
//!   and a verification.
//! - `log` `{count}` → emits `count` records and a progress report.
//! - `config` → every configuration value.
//!
//! Webhook `inbound` (synchronous) answers with the body it received (or
//! fails as an upstream error when the request has an `x-echo-fail` header);
//! webhook `events` (queued) records each event `{"id", "delay_ms"?,
//! "fail_times"?, "fail_as"?}` under `events/<id>` with the number of times
//! it was processed (the first `fail_times` answer 503, or fail with the
//! marked error `fail_as` names: `upstream-permanent`,
//! `forbidden-transient`); job `tick`
//! counts its runs in storage.

use serde_json::{Map, Value, json};
use switchyard_sdk::http::{self, Method, Request};
use switchyard_sdk::storage;
use switchyard_sdk::{
    ActionSpec, ConfigSpec, Context, CredentialKind, CredentialSlot, Error, Header, JobSpec,
    Manifest, Plugin, Result, WebhookRequest, WebhookResponse, WebhookSpec, config, credentials,
    log,
};

/// The echo plugin.
pub struct Echo;

impl Plugin for Echo {
    fn manifest() -> Manifest {
        Manifest::new(
            "echo",
            env!("CARGO_PKG_VERSION"),
            "Reference plugin: echoes input and exercises http, credentials, storage, log and config",
        )
        .action(ActionSpec::new("echo", "Returns the input with the call's context"))
        .action(
            ActionSpec::new("fetch", "Sends one HTTP request and returns the answer")
                .role("operator")
                .input_schema(json!({
                    "type": "object",
                    "required": ["url"],
                    "properties": {
                        "url": {"type": "string"},
                        "method": {"type": "string"},
                        "credential": {"type": "string"},
                        "body": {"type": "string"},
                        "follow_redirects": {"type": "integer"}
                    }
                })),
        )
        .action(ActionSpec::new("storage", "Runs a list of storage operations"))
        .action(ActionSpec::new("credentials", "Lists credentials and verifies one"))
        .action(ActionSpec::new("log", "Emits log records and a progress report"))
        .action(ActionSpec::new("config", "Returns the configuration"))
        .webhook(WebhookSpec::synchronous("inbound", "Answers with the body it received"))
        .webhook(WebhookSpec::queued("events", "Records each event it processes"))
        .webhook(WebhookSpec::queued(
            "sink",
            "Accepts each delivery and does nothing (the shortest job, for benchmarks)",
        ))
        .job(JobSpec::new("tick", "Counts its runs", 60, 300, 3600))
        .config(ConfigSpec::optional("greeting", "Word to greet with", "hello"))
        .config(ConfigSpec::optional("base_url", "Upstream base URL", ""))
        .credential(
            CredentialSlot::new(
                "upstream",
                "Credential for the upstream",
                &[
                    CredentialKind::Oauth2ClientCredentials,
                    CredentialKind::Basic,
                    CredentialKind::ApiKey,
                    CredentialKind::Bearer,
                ],
            )
            .optional(),
        )
        .egress(None, "whatever the tenant puts in base_url")
    }

    fn invoke(ctx: &Context, action: &str, input: Value) -> Result<Value> {
        match action {
            "echo" => Ok(echo(ctx, input)),
            "fetch" => fetch(&input),
            "storage" => run_storage(&input),
            "credentials" => Ok(creds(&input)),
            "log" => Ok(emit_logs(&input)),
            "config" => Ok(Value::Object(
                config::all()
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            )),
            other => Err(Error::not_found(format!("no action `{other}`"))),
        }
    }

    fn handle_webhook(
        _ctx: &Context,
        route: &str,
        request: WebhookRequest,
    ) -> Result<WebhookResponse> {
        match route {
            "inbound" => {
                if request.headers.iter().any(|h| h.name == "x-echo-fail") {
                    return Err(Error::upstream("failing on request (x-echo-fail)"));
                }
            }
            "events" => return record_event(&request),
            "sink" => {
                return Ok(WebhookResponse {
                    status: 204,
                    headers: Vec::new(),
                    body: Vec::new(),
                });
            }
            _ => return Err(Error::not_found(format!("no route `{route}`"))),
        }
        Ok(WebhookResponse {
            status: 200,
            headers: vec![Header {
                name: "x-echo-method".into(),
                value: request.method,
            }],
            body: request.body,
        })
    }

    fn run_job(_ctx: &Context, job: &str) -> Result<String> {
        if job != "tick" {
            return Err(Error::not_found(format!("no job `{job}`")));
        }
        let runs: u64 = storage::get_json("tick/runs")?.unwrap_or(0) + 1;
        storage::set_json("tick/runs", &runs)?;
        log::progress(1, Some(1), "counted");
        Ok(format!("tick run {runs}"))
    }
}

/// Counts how often event `id` was processed (compare-and-swap, so
/// concurrent deliveries cannot lose a count).
fn record_event(request: &WebhookRequest) -> Result<WebhookResponse> {
    let event: Value = serde_json::from_slice(&request.body)
        .map_err(|e| Error::invalid_input(format!("event body is not JSON: {e}")))?;
    let id = event["id"]
        .as_str()
        .ok_or_else(|| Error::invalid_input("event has no string `id`"))?;
    log::progress(0, Some(1), format!("processing {id}"));
    if let Some(ms) = event["delay_ms"].as_u64() {
        // Simulates slow processing (the host's deadline still applies).
        std::thread::sleep(std::time::Duration::from_millis(ms.min(10_000)));
    }
    let key = format!("events/{id}");
    loop {
        let current = storage::get(&key)?;
        let count: u64 = current
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
            .unwrap_or(0);
        let next = (count + 1).to_string();
        if storage::compare_and_swap(&key, current.as_deref(), Some(next.as_bytes()))? {
            // `fail_times: n`: the first n deliveries answer 503 (after
            // counting), so tests can see a failed delivery retried; with
            // `fail_as` they return that marked error instead.
            let failing = event["fail_times"].as_u64().is_some_and(|n| count < n);
            match (failing, event["fail_as"].as_str()) {
                (true, Some("upstream-permanent")) => {
                    return Err(Error::Upstream {
                        status: Some(400),
                        message: "the upstream refused the record".into(),
                        retry_after_secs: None,
                    }
                    .permanent());
                }
                (true, Some("forbidden-transient")) => {
                    return Err(Error::forbidden("the upstream account lacks a role").transient());
                }
                _ => {}
            }
            return Ok(WebhookResponse {
                status: if failing { 503 } else { 200 },
                headers: Vec::new(),
                body: if failing {
                    b"try again".to_vec()
                } else {
                    b"recorded".to_vec()
                },
            });
        }
    }
}

fn echo(ctx: &Context, input: Value) -> Value {
    json!({
        "input": input,
        "greeting": config::get("greeting"),
        "context": {
            "tenant": ctx.tenant,
            "instance": ctx.instance,
            "request_id": ctx.request_id,
            "actor": ctx.actor.as_ref().map(|a| json!({
                "id": a.id, "email": a.email, "roles": a.roles
            })),
        }
    })
}

fn http_error(e: &http::Error) -> Value {
    let (kind, message) = match e {
        http::Error::Denied(m) => ("denied", m.clone()),
        http::Error::InvalidRequest(m) => ("invalid-request", m.clone()),
        http::Error::Credential(m) => ("credential", m.clone()),
        http::Error::Timeout => ("timeout", String::new()),
        http::Error::Connection(m) => ("connection", m.clone()),
        http::Error::TooLarge(n) => ("too-large", n.to_string()),
        http::Error::LimitExceeded(m) => ("limit-exceeded", m.clone()),
    };
    json!({ "error": { "kind": kind, "message": message } })
}

fn fetch(input: &Value) -> Result<Value> {
    let url = input["url"]
        .as_str()
        .ok_or_else(|| Error::invalid_input("`url` is required"))?;
    let method = match input["method"].as_str().unwrap_or("GET") {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        other => return Err(Error::invalid_input(format!("unknown method `{other}`"))),
    };
    let mut req = Request::new(method, url);
    if let Some(c) = input["credential"].as_str() {
        req = req.credential(c);
    }
    if let Some(b) = input["body"].as_str() {
        req = req.body(b.as_bytes().to_vec());
    }
    if let Some(headers) = input["headers"].as_object() {
        for (k, v) in headers {
            req = req.header(k, v.as_str().unwrap_or_default());
        }
    }
    let result = match input["follow_redirects"].as_u64() {
        Some(hops) => req
            .send_following_redirects(hops as u32)
            .map_err(|e| json!({ "error": { "kind": "sdk", "message": e.to_string() } })),
        None => req.send().map_err(|e| http_error(&e)),
    };
    Ok(match result {
        Err(e) => e,
        Ok(resp) => json!({
            "status": resp.status,
            "headers": resp.headers.iter().map(|h| (h.name.clone(), Value::String(h.value.clone()))).collect::<Map<_, _>>(),
            "body": resp.text(),
        }),
    })
}

fn storage_error(e: &storage::Error) -> Value {
    let (kind, m) = match e {
        storage::Error::InvalidKey(m) => ("invalid-key", m),
        storage::Error::TooLarge(m) => ("too-large", m),
        storage::Error::QuotaExceeded(m) => ("quota-exceeded", m),
        storage::Error::Unavailable(m) => ("unavailable", m),
    };
    json!({ "error": { "kind": kind, "message": m } })
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    v.as_str().map(|s| s.as_bytes().to_vec())
}

fn run_storage(input: &Value) -> Result<Value> {
    let ops = input["ops"]
        .as_array()
        .ok_or_else(|| Error::invalid_input("`ops` must be an array"))?;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let key = op["key"].as_str().unwrap_or_default();
        let out = match op["op"].as_str().unwrap_or_default() {
            "get" => storage::get(key)
                .map(|v| json!(v.map(|b| String::from_utf8_lossy(&b).into_owned()))),
            "set" => {
                // `repeat` builds large values without shipping them as input.
                let value = match op["repeat"].as_u64() {
                    Some(n) => vec![b'x'; n as usize],
                    None => bytes(&op["value"]).unwrap_or_default(),
                };
                storage::set(key, &value).map(|()| json!("ok"))
            }
            "delete" => storage::delete(key).map(|existed| json!(existed)),
            "list" => storage::list(op["prefix"].as_str().unwrap_or_default()).map(|k| json!(k)),
            "cas" => storage::compare_and_swap(
                key,
                bytes(&op["expected"]).as_deref(),
                bytes(&op["new"]).as_deref(),
            )
            .map(|swapped| json!(swapped)),
            other => {
                return Err(Error::invalid_input(format!(
                    "unknown storage op `{other}`"
                )));
            }
        };
        results.push(out.unwrap_or_else(|e| storage_error(&e)));
    }
    Ok(json!(results))
}

fn creds(input: &Value) -> Value {
    let list: Vec<Value> = credentials::list()
        .into_iter()
        .map(|c| json!({ "name": c.name, "kind": format!("{:?}", c.kind), "hosts": c.hosts }))
        .collect();
    let verified = input["verify"]
        .as_str()
        .map(|name| match credentials::verify(name) {
            Ok(v) => json!({ "ok": { "expires_at_ms": v.expires_at_ms, "scope": v.scope } }),
            Err(e) => json!({ "error": format!("{e:?}") }),
        });
    json!({ "credentials": list, "verified": verified })
}

fn emit_logs(input: &Value) -> Value {
    let count = input["count"].as_u64().unwrap_or(1);
    for i in 0..count {
        log::emit(
            log::Level::Info,
            format!("record {i}"),
            &[("index", &i.to_string()), ("plugin", "echo")],
        );
    }
    log::progress(count, Some(count), "logged");
    json!({ "emitted": count })
}

switchyard_sdk::register!(Echo);
