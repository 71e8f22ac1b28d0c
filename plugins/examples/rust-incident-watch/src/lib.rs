//! incident-watch, in Rust: announces ServiceNow incidents in Slack.
//!
//! The twin of `python-incident-watch` and `js-incident-watch` beside this
//! crate: the same manifest (but for the id), the same requests, the same
//! storage keys, so that the three languages can be compared doing the same
//! work (`plugins/examples/README.md`).
//!
//! - action `announce` `{"number": "INC0010001"}`: looks the incident up in
//!   ServiceNow and announces it in Slack (once: a second call answers
//!   `"announced": false`).
//! - webhook `incident` (queued): a ServiceNow business rule posts the
//!   incident as JSON; announced when its priority is at least
//!   `min_priority`.
//! - job `poll`: announces incidents updated since the last run, with a
//!   cursor kept in storage and moved by compare-and-swap.
//!
//! ```no_run
//! // Build: cargo build --release --target wasm32-wasip2 -p example-rust-incident-watch
//! let m = <example_rust_incident_watch::IncidentWatch as switchyard_sdk::Plugin>::manifest();
//! assert_eq!(m.id, "rs-incident-watch");
//! ```

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_sdk::http::Request;
use switchyard_sdk::{
    ActionSpec, ConfigSpec, Context, CredentialKind, CredentialSlot, Error, Header, JobSpec,
    Manifest, Plugin, Result, WebhookRequest, WebhookResponse, WebhookSpec, config, credentials,
    invocation, log, storage,
};

const FIELDS: &str = "sys_id,number,short_description,priority,sys_updated_on";
const PAGE: u32 = 100;

/// The plugin.
pub struct IncidentWatch;

fn min_priority() -> i64 {
    config::get("min_priority")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(2)
}

fn incidents(query: &str) -> Result<Vec<Value>> {
    let base = config::get("servicenow_url").unwrap_or_default();
    let url = format!(
        "{}/api/now/table/incident?sysparm_query={}&sysparm_fields={FIELDS}&sysparm_limit={PAGE}",
        base.trim_end_matches('/'),
        url_escape(query)
    );
    let r = Request::get(url)
        .header("accept", "application/json")
        .credential("servicenow")
        .send()?;
    if r.status != 200 {
        return Err(Error::Upstream {
            status: Some(r.status),
            message: format!("ServiceNow answered {}", r.status),
            retry_after_secs: r.retry_after_secs(),
        });
    }
    let body: Value = r.json().map_err(|e| {
        Error::upstream(format!(
            "ServiceNow's answer is not a Table API result: {}",
            e.message()
        ))
    })?;
    match body.get("result") {
        Some(Value::Array(list)) => Ok(list.clone()),
        _ => Err(Error::upstream(
            "ServiceNow's answer is not a Table API result: no `result` list",
        )),
    }
}

/// Percent-encodes everything but unreserved characters, as Python's
/// `quote(safe='')` and JavaScript's `encodeURIComponent` (near enough for
/// an encoded query).
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn slack_origin() -> Result<String> {
    credentials::list()
        .into_iter()
        .find(|c| c.name == "slack")
        .and_then(|c| c.hosts.into_iter().next())
        .ok_or_else(|| Error::internal("credential `slack` is not bound"))
}

/// Posts `incident` to Slack once. Returns false when it was already.
fn announce(incident: &Value) -> Result<bool> {
    let (Some(sys_id), Some(number)) = (
        incident["sys_id"].as_str().filter(|s| !s.is_empty()),
        incident["number"].as_str(),
    ) else {
        return Err(Error::invalid_input(
            "an incident needs `sys_id` and `number` (strings)",
        ));
    };
    let marker = format!("announced/{sys_id}");
    // Claimed before posting, so that two runs never announce one incident
    // twice; released again when Slack does not take the message.
    if !storage::compare_and_swap(&marker, None, Some(b"1"))? {
        return Ok(false);
    }
    let text = format!(
        "*{number}* (P{}) {}",
        incident["priority"].as_str().unwrap_or("?"),
        incident["short_description"].as_str().unwrap_or("")
    );
    let sent = slack_origin().and_then(|origin| {
        Request::post(format!("{origin}/"))
            .header("accept", "application/json")
            .credential("slack")
            .json(&json!({ "text": text }))?
            .send()
            .map_err(Error::from)
    });
    let r = match sent {
        Ok(r) => r,
        Err(e) => {
            storage::delete(&marker)?;
            return Err(e);
        }
    };
    if r.status != 200 {
        storage::delete(&marker)?;
        let said: String = r.text().chars().take(200).collect();
        return Err(Error::Upstream {
            status: Some(r.status),
            message: format!("Slack answered {}: {said}", r.status),
            retry_after_secs: r.retry_after_secs(),
        });
    }
    log::emit(
        log::Level::Info,
        "announced",
        &[("number", number), ("sys_id", sys_id)],
    );
    Ok(true)
}

fn announce_action(input: &Value) -> Result<Value> {
    let number = input["number"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::invalid_input("`number` (string) is required"))?;
    let found = incidents(&format!("number={number}"))?;
    let first = found
        .first()
        .ok_or_else(|| Error::not_found(format!("no incident {number}")))?;
    let announced = announce(first)?;
    Ok(json!({"number": number, "sys_id": first["sys_id"], "announced": announced}))
}

fn poll() -> Result<String> {
    let before = storage::get("cursor")?;
    let mut cursor = before
        .as_deref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let mut query = format!("priority<={}", min_priority());
    if !cursor.is_empty() {
        query += &format!("^sys_updated_on>={cursor}");
    }
    let found = incidents(&(query + "^ORDERBYsys_updated_on"))?;
    let mut announced = 0;
    for inc in &found {
        // Near the deadline (or out of requests), stop and ask to run again
        // soon: the cursor keeps what was done.
        if invocation::remaining() < Duration::from_secs(2) || invocation::remaining_requests() < 2
        {
            invocation::run_again(Duration::from_secs(1));
            break;
        }
        if announce(inc)? {
            announced += 1;
        }
        let updated = inc["sys_updated_on"].as_str().unwrap_or("");
        if updated > cursor.as_str() {
            cursor = updated.to_owned();
        }
    }
    if !cursor.is_empty()
        && !storage::compare_and_swap("cursor", before.as_deref(), Some(cursor.as_bytes()))?
    {
        return Err(Error::conflict("another run moved the cursor"));
    }
    let n = found.len() as u64;
    log::progress(n, Some(n), "incidents read");
    let shown = if cursor.is_empty() { "(none)" } else { &cursor };
    Ok(format!(
        "announced {announced} of {} incidents; cursor {shown}",
        found.len()
    ))
}

fn incident_webhook(request: &WebhookRequest) -> Result<WebhookResponse> {
    let incident: Value = serde_json::from_slice(&request.body)
        .map_err(|e| Error::invalid_input(format!("body is not JSON: {e}")))?;
    if !incident.is_object() {
        return Err(Error::invalid_input("body must be a JSON object"));
    }
    let priority: i64 = match &incident["priority"] {
        Value::Null => Some(5),
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
    .ok_or_else(|| Error::invalid_input("`priority` must be a number"))?;
    let announced = priority <= min_priority() && announce(&incident)?;
    Ok(WebhookResponse {
        status: 200,
        headers: vec![Header {
            name: "content-type".into(),
            value: "application/json".into(),
        }],
        body: json!({ "announced": announced }).to_string().into_bytes(),
    })
}

impl Plugin for IncidentWatch {
    fn manifest() -> Manifest {
        Manifest::new(
            "rs-incident-watch",
            env!("CARGO_PKG_VERSION"),
            "Announces ServiceNow incidents in Slack (Rust)",
        )
        .action(
            ActionSpec::new("announce", "Announces one incident in Slack, once").input_schema(
                json!({
                    "type": "object",
                    "required": ["number"],
                    "properties": {"number": {"type": "string", "pattern": "^[A-Z]+[0-9]+$"}}
                }),
            ),
        )
        .webhook(WebhookSpec::queued(
            "incident",
            "A ServiceNow business rule posts an incident",
        ))
        .job(
            JobSpec::new(
                "poll",
                "Announces incidents updated since the last run",
                60,
                300,
                3600,
            )
            .interval_multiple_of(60),
        )
        .config(ConfigSpec::required(
            "servicenow_url",
            "The ServiceNow instance",
        ))
        .config(
            ConfigSpec::optional("min_priority", "Announce priorities 1 to this", "2")
                .integer(1, 5),
        )
        .credential(CredentialSlot::new(
            "servicenow",
            "ServiceNow API account",
            &[
                CredentialKind::Basic,
                CredentialKind::Oauth2ClientCredentials,
                CredentialKind::Bearer,
            ],
        ))
        .credential(CredentialSlot::new(
            "slack",
            "Slack incoming webhook (secret-url)",
            &[CredentialKind::Bearer],
        ))
        .egress(None, "the ServiceNow instance")
        .egress(Some("https://hooks.slack.com"), "Slack incoming webhooks")
    }

    fn invoke(_ctx: &Context, action: &str, input: Value) -> Result<Value> {
        match action {
            "announce" => announce_action(&input),
            _ => Err(Error::not_found(format!("no action `{action}`"))),
        }
    }

    fn handle_webhook(
        _ctx: &Context,
        route: &str,
        request: WebhookRequest,
    ) -> Result<WebhookResponse> {
        match route {
            "incident" => incident_webhook(&request),
            _ => Err(Error::not_found(format!("no webhook route `{route}`"))),
        }
    }

    fn run_job(_ctx: &Context, job: &str) -> Result<String> {
        match job {
            "poll" => poll(),
            _ => Err(Error::not_found(format!("no job `{job}`"))),
        }
    }
}

switchyard_sdk::register!(IncidentWatch);
