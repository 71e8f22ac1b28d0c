//! `app-approval`: app requests approved in ServiceNow, installed by
//! Workspace ONE UEM, announced in Slack.
//!
//! 1. **Intake** — the action `request-app` (a catalog or Hub front end) or
//!    the webhook route `requests` (an upstream that posts requests) takes
//!    the requester, the device, the app and a justification. Before
//!    anything leaves: the device exists in UEM and is enrolled, its OS
//!    family is allowed (`allowed_platforms`, Windows by default), the app
//!    is in UEM's catalog and requires approval, and no request for the same
//!    device and app is still open (that one is answered instead).
//! 2. **Forward** — `POST /api/<namespace>/appapproval/request` with the
//!    seed's payload. `RequestId` is a UUID and ServiceNow's idempotency key;
//!    the callback URL carries a per-request token (HMAC-SHA256 over the
//!    request id with a per-instance key, checked in constant time). When
//!    ServiceNow is down the request stays recorded and `tick` sends it again.
//! 3. **Decision** — the route `decisions`: unknown request 404, wrong token
//!    403, another device 409, a repeated decision 200 with no second
//!    effect, a decision after expiry 409 (recorded), any other status 422.
//! 4. **Install** — approved requests get
//!    `POST /api/mam/apps/{type}/{id}/install` (`{"DeviceId"}`) and become
//!    *Install Command Dispatched*; `tick` reads the device's apps until
//!    the app is *Installed*, or UEM reports a failure, or
//!    `install_timeout_hours` pass (*Error*: the employee requests again).
//! 5. **Expiry** — no decision within `expiry_days` → *Expired*; a reminder
//!    (a ServiceNow work note and a Slack message) `reminder_days` before.
//! 6. **Slack** — each status change is queued for the channel the tenant
//!    chose for it and delivered in order at Slack's pace (see `slack`).
//!    Slack webhook URLs are `secret-url` credentials: the plugin never sees
//!    them.
//!
//! Statuses, exactly as the seed names them: Pending Approval, Install
//! Command Dispatched, Installed, Rejected, Expired, Error.

pub mod flow;
pub mod settings;
pub mod slack;
pub mod store;
pub mod token;

use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_sdk::schemars::JsonSchema;
use switchyard_sdk::{
    ConfigSpec, Context, CredentialKind, CredentialSlot, Error, JobSpec, Manifest, Plugin, Result,
    WebhookRequest, WebhookResponse, WebhookSpec, config,
};

use settings::{STATUSES, Settings};

/// Route an upstream posts requests to.
pub const REQUESTS_ROUTE: &str = "requests";
/// Route ServiceNow posts decisions to.
pub const DECISIONS_ROUTE: &str = "decisions";

fn settings() -> Result<Settings> {
    Settings::read(config::get).map_err(|e| Error::invalid_input(format!("configuration: {e}")))
}

fn actor(ctx: &Context) -> String {
    ctx.actor
        .as_ref()
        .map(|a| a.email.clone().unwrap_or_else(|| a.id.clone()))
        .unwrap_or_else(|| "webhook".into())
}

/// Filters and page of `list-requests`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
struct ListInput {
    /// One of the statuses.
    #[serde(default)]
    status: Option<String>,
    /// The requester's email or user name.
    #[serde(default)]
    user: Option<String>,
    /// UEM device id.
    #[serde(default)]
    device: Option<i64>,
    /// UEM application id.
    #[serde(default)]
    app: Option<i64>,
    /// Page, from 0 (newest first).
    #[serde(default)]
    page: usize,
    /// Requests per page.
    #[serde(default = "page_size")]
    #[schemars(range(min = 1, max = 500))]
    page_size: usize,
}

fn page_size() -> usize {
    50
}

/// One request.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
struct GetInput {
    /// The request id (a UUID).
    #[schemars(regex(pattern = r"^[0-9a-fA-F-]{36}$"))]
    request_id: String,
}

/// `verify` options.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
struct VerifyInput {
    /// Also post a test message to each bound Slack channel.
    #[serde(default)]
    slack_test_message: bool,
}

/// No input.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
struct NoInput {}

fn check_system<T>(system: &str, r: Result<T>) -> (bool, Value) {
    let now = flow::now_ms();
    let _ = store::note_exchange(system, now, &r);
    match r {
        Ok(_) => (true, json!({ "ok": true })),
        Err(e) => (
            false,
            json!({ "ok": false, "error": e.message().to_owned() }),
        ),
    }
}

switchyard_sdk::actions! {
    RequestApp = "request-app", "Request an app that needs approval for a device (checks, records, forwards to ServiceNow)"
        => |ctx, input: flow::AppRequestInput| -> Value {
        let s = settings()?;
        let out = flow::intake(&s, input, &actor(ctx), &ctx.request_id)?;
        slack::flush(flow::now_ms())?;
        Ok(out)
    }
    ListRequests = "list-requests", "Requests, newest first, filtered by status, user, device or app", role "viewer"
        => |_ctx, input: ListInput| -> Value {
        if let Some(st) = &input.status
            && !STATUSES.contains(&st.as_str())
        {
            return Err(Error::invalid_input(format!(
                "status `{st}` is not one of: {}",
                STATUSES.join(", ")
            )));
        }
        let mut matched = Vec::new();
        for id in store::all_ids()?.iter().rev() {
            let Some(r) = store::load(id)? else { continue };
            let user_ok = input.user.as_ref().is_none_or(|u| {
                r.requester.email.eq_ignore_ascii_case(u) || r.requester.user_name.eq_ignore_ascii_case(u)
            });
            if input.status.as_ref().is_none_or(|st| &r.status == st)
                && user_ok
                && input.device.is_none_or(|d| r.device.id == d)
                && input.app.is_none_or(|a| r.app.id == a)
            {
                matched.push(r);
            }
        }
        let total = matched.len();
        let page: Vec<Value> = matched
            .iter()
            .skip(input.page * input.page_size)
            .take(input.page_size)
            .map(flow::view)
            .collect();
        Ok(json!({ "total": total, "page": input.page, "page_size": input.page_size, "requests": page }))
    }
    GetRequest = "get-request", "One request with its history", role "viewer"
        => |_ctx, input: GetInput| -> Value {
        let r = store::load(&input.request_id)?
            .ok_or_else(|| Error::not_found(format!("no app request {}", input.request_id)))?;
        let mut v = flow::view(&r);
        v["history"] = serde_json::to_value(&r.history)?;
        Ok(v)
    }
    Verify = "verify", "Check UEM, ServiceNow and Slack with the configured credentials", role "admin"
        => |_ctx, input: VerifyInput| -> Value {
        let s = settings()?;
        let version = switchyard_uem::Uem::new(&s.uem_url).version();
        let known = version.as_ref().ok().cloned();
        let (uem_ok, mut uem) = check_system("uem", version);
        if let Some(v) = known {
            uem["version"] = json!(v);
        }
        // The newest app request in ServiceNow shows whether the configured
        // sc_request columns hold what the plugin sent (a renamed column
        // reads back empty).
        let sn = switchyard_servicenow::ServiceNow::new(&s.servicenow_url);
        let query = switchyard_servicenow::Query::new()
            .is_not_empty(&s.column_request_id)
            .order_by_desc("sys_created_on");
        let fields = ["sys_id", s.column_device_id.as_str(), s.column_callback_url.as_str()];
        let newest = sn.query("sc_request", &query, &fields, 1);
        let row = newest.as_ref().ok().and_then(|rows| rows.first().cloned());
        let (mut sn_ok, mut servicenow) = check_system("servicenow", newest);
        if let Some(row) = row {
            let text = |c: &str| row.get(c).and_then(Value::as_str).unwrap_or_default().to_owned();
            let mut bad = Vec::new();
            if text(&s.column_device_id).is_empty() {
                bad.push(format!("{} (column_device_id) is empty", s.column_device_id));
            }
            if !text(&s.column_callback_url).starts_with(&s.callback_url) {
                bad.push(format!(
                    "{} (column_callback_url) does not hold this instance's callback URL",
                    s.column_callback_url
                ));
            }
            if bad.is_empty() {
                servicenow["columns"] = json!("checked on the newest app request");
            } else {
                sn_ok = false;
                servicenow["error"] = json!(format!("sc_request: {}", bad.join("; ")));
            }
        } else if sn_ok {
            servicenow["columns"] = json!("not checked: ServiceNow has no app request yet");
        }
        servicenow["ok"] = json!(sn_ok);
        let mut channels = serde_json::Map::new();
        let mut slack_ok = true;
        for (slot, _) in settings::SLACK_SLOTS {
            if !switchyard_sdk::credentials::list().iter().any(|c| c.name == *slot) {
                continue;
            }
            let state = match slack::destination(slot) {
                Err(e) => {
                    slack_ok = false;
                    json!({ "ok": false, "error": e })
                }
                Ok(_) if !input.slack_test_message => json!({ "ok": true, "tested": false }),
                Ok(host) => {
                    let sent = switchyard_sdk::http::Request::post(format!("{host}/"))
                        .credential(slot)
                        .json(&json!({ "text": "Switchyard app-approval: connection test" }))?
                        .send()
                        .map_err(|e| switchyard_sdk::http::error_from("Slack", e));
                    match sent {
                        Ok(r) if r.status == 200 => json!({ "ok": true, "tested": true }),
                        Ok(r) => {
                            slack_ok = false;
                            json!({ "ok": false, "error": format!("Slack answered {} {}", r.status, String::from_utf8_lossy(&r.body)) })
                        }
                        Err(e) => {
                            slack_ok = false;
                            json!({ "ok": false, "error": e.message().to_owned() })
                        }
                    }
                }
            };
            channels.insert((*slot).to_owned(), state);
        }
        Ok(json!({
            "ok": uem_ok && sn_ok && slack_ok,
            "uem": uem, "servicenow": servicenow, "slack": channels,
        }))
    }
    SyncStatus = "sync-status", "Counts per status, the last good exchange with each system, the last error", role "viewer"
        => |_ctx, _input: NoInput| -> Value {
        let mut counts: serde_json::Map<String, Value> =
            STATUSES.iter().map(|s| ((*s).to_owned(), json!(0))).collect();
        for id in store::all_ids()? {
            if let Some(r) = store::load(&id)? {
                let n = counts.get(&r.status).and_then(Value::as_u64).unwrap_or(0);
                counts.insert(r.status, json!(n + 1));
            }
        }
        let stats = store::stats()?;
        let (waiting, refused) = slack::pending()?;
        Ok(json!({
            "counts": counts,
            "last_ok_ms": stats.last_ok,
            "last_error": stats.last_error.map(|(at, system, message)| json!({ "at_ms": at, "system": system, "message": message })),
            "slack": { "waiting": waiting, "refused": refused },
            "open": store::open_ids()?.len(),
        }))
    }
}

struct AppApproval;

impl Plugin for AppApproval {
    fn manifest() -> Manifest {
        let mut m = declare_actions(Manifest::new(
            "app-approval",
            env!("CARGO_PKG_VERSION"),
            "App requests approved in ServiceNow, installed by Workspace ONE UEM, announced in Slack",
        ))
        .job(JobSpec::new(
            "tick",
            "Forward what ServiceNow has not taken yet, send approved installs, follow installs, \
             expire and remind, deliver Slack messages",
            60,
            300,
            3_600,
        ))
        .webhook(WebhookSpec::synchronous(
            REQUESTS_ROUTE,
            "An app request posted by an upstream (the same JSON as the action request-app)",
        ))
        .webhook(WebhookSpec::synchronous(
            DECISIONS_ROUTE,
            "ServiceNow's approval decision (the callback URL the plugin sends with each request)",
        ))
        .config(ConfigSpec::required("uem_url", "Workspace ONE UEM API base URL"))
        .config(ConfigSpec::required(
            "servicenow_url",
            "ServiceNow instance, e.g. https://acme.service-now.com",
        ))
        .config(ConfigSpec::required(
            "servicenow_namespace",
            "Namespace of the app-approval Scripted REST API (/api/<namespace>/appapproval/request)",
        ))
        .config(ConfigSpec::required(
            "callback_url",
            "Public URL of this instance's `decisions` route, as ServiceNow reaches it",
        ));
        for (key, default, description) in settings::DEFAULTS {
            m = m.config(settings::spec(key, default, description));
        }
        m = m
            .credential(switchyard_uem::credential_slot(
                "Workspace ONE UEM API (devices, app catalog, installs): OAuth2 client credentials, \
                 or Basic with the aw-tenant-code header",
            ))
            .credential(switchyard_servicenow::credential_slot(
                "ServiceNow integration user (app-approval API, sc_request work notes)",
            ));
        for (slot, description) in settings::SLACK_SLOTS {
            m = m.credential(
                CredentialSlot::new(slot, description, &[CredentialKind::Bearer]).optional(),
            );
        }
        m.egress(None, "Workspace ONE UEM (config `uem_url`)")
            .egress(None, "ServiceNow (config `servicenow_url`)")
            .egress(
                None,
                "Slack incoming webhooks (the host of each Slack credential)",
            )
    }

    fn invoke(ctx: &Context, action: &str, input: Value) -> Result<Value> {
        dispatch_action(ctx, action, input)
    }

    fn handle_webhook(
        ctx: &Context,
        route: &str,
        request: WebhookRequest,
    ) -> Result<WebhookResponse> {
        let s = settings()?;
        let (status, body) = match route {
            REQUESTS_ROUTE => {
                let input: flow::AppRequestInput = serde_json::from_slice(&request.body)
                    .map_err(|e| Error::invalid_input(format!("the request body: {e}")))?;
                let out = flow::intake(&s, input, "webhook", &ctx.request_id)?;
                (
                    if out["existing"] == json!(true) {
                        200
                    } else {
                        201
                    },
                    out,
                )
            }
            DECISIONS_ROUTE => {
                let a = flow::decision(&s, &request.query, &request.body, &ctx.request_id)?;
                (a.status, a.body)
            }
            other => {
                return Err(Error::not_found(format!(
                    "app-approval has no webhook route `{other}`"
                )));
            }
        };
        slack::flush(flow::now_ms())?;
        Ok(WebhookResponse {
            status,
            headers: vec![switchyard_sdk::Header {
                name: "content-type".into(),
                value: "application/json".into(),
            }],
            body: serde_json::to_vec(&body)?,
        })
    }

    fn run_job(ctx: &Context, job: &str) -> Result<String> {
        if job != "tick" {
            return Err(Error::not_found(format!("app-approval has no job `{job}`")));
        }
        flow::tick(&settings()?, &ctx.request_id)
    }
}

switchyard_sdk::register!(AppApproval);
