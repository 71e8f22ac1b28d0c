//! `session-import`: BeyondTrust Remote Support sessions into ServiceNow.
//!
//! Each finished support session (by lsid) becomes exactly one record in
//! the ServiceNow support-session table, with its representatives, customer,
//! times, duration and the events the tenant chose to import, associated
//! with the task (incident, problem, change, request) named by its external
//! key or by the rep exit survey's `task_number` answer, and optionally
//! with the ServiceNow user of its primary rep. Work notes on the task
//! (session notes, session end, session-key generation, customer-initiated
//! sessions) are switched on or off per tenant.
//!
//! Sessions arrive one of two ways, per tenant:
//! - **Scheduled pull**: the `pull` job (every 5 minutes by default) asks
//!   the Reporting API for sessions from the cursor (24 hours back on the
//!   first run) in bounded windows; see [`pull`].
//! - **Outbound events**: the site posts `support_conference_end` and
//!   `support_conference_rep_exit_survey_completed` to the `outbound-events`
//!   route. The host checks `outbound_event_token` and the source address,
//!   stores the delivery and answers 200 at once; the plugin imports the
//!   session from the queue. The job and the route are exclusive: a tenant
//!   sets up one or the other.
//!
//! Imports are idempotent (see [`import`]). Actions (typed: the host
//! checks their input against the generated schema): `generate-session-key`,
//! `load-issues`, `load-event-types`, `pull-sessions-now`,
//! `test-connection`. ServiceNow is reached through the shared
//! `switchyard-servicenow` client, with retries from the SDK.
//!
//! A tenant file enabling it in pull mode:
//!
//! ```toml
//! [[instance]]
//! id = "sessions"
//! plugin = "session-import"
//! egress = ["https://support.acme.example", "https://acme.service-now.com"]
//! config = { site_url = "https://support.acme.example", servicenow_url = "https://acme.service-now.com" }
//! [instance.credentials.beyondtrust]
//! kind = "oauth2-client-credentials"
//! token_url = "https://support.acme.example/oauth2/token"
//! client_id = "…"
//! client_secret = "secret:bt-client-secret"
//! hosts = ["https://support.acme.example"]
//! [instance.jobs.pull]
//! ```

pub mod bt;
pub mod import;
pub mod pull;
pub mod report;
pub mod settings;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchyard_sdk::schemars::JsonSchema;
use switchyard_sdk::{
    ConfigSpec, Context, CredentialKind, CredentialSlot, Error, JobSpec, Manifest, Plugin, Result,
    WebhookRequest, WebhookResponse, WebhookSpec, config, log,
};
use switchyard_servicenow::{self as snow, Query};

use import::{Imported, Importer, glide_time};
use settings::{KNOWN_EVENT_TYPES, Settings};

/// The outbound-event route.
pub const EVENTS_ROUTE: &str = "outbound-events";
/// Outbound events that (re)import a session.
const IMPORTING_EVENTS: &[&str] = &[
    "support_conference_end",
    "support_conference_rep_exit_survey_completed",
];

struct SessionImport;

fn settings() -> Result<Settings> {
    Settings::read(config::get).map_err(|e| Error::invalid_input(format!("configuration: {e}")))
}

fn importer(ctx: &Context) -> Result<Importer> {
    Ok(Importer::new(settings()?, &ctx.request_id))
}

impl Plugin for SessionImport {
    fn manifest() -> Manifest {
        let mut m = declare_actions(Manifest::new(
            "session-import",
            env!("CARGO_PKG_VERSION"),
            "BeyondTrust Remote Support sessions into ServiceNow: one record per session, \
             associated with its task, with optional work notes",
        ))
        .webhook(WebhookSpec::queued(
            EVENTS_ROUTE,
            "BeyondTrust outbound events (support_conference_end, \
             support_conference_rep_exit_survey_completed); verify with token_param = \
             \"outbound_event_token\" and allowed_ips",
        ))
        .job(
            JobSpec::new(
                "pull",
                "Import sessions that ended since the last pull (24 h back on the first run)",
                60,
                300,
                86_400,
            )
            .exclusive_with_webhook(EVENTS_ROUTE),
        )
        .config(
            ConfigSpec::required(
                "site_url",
                "BeyondTrust support site, e.g. https://support.acme.example",
            )
            .url(),
        )
        .config(
            ConfigSpec::required(
                "servicenow_url",
                "ServiceNow instance, e.g. https://acme.service-now.com",
            )
            .url(),
        );
        for (key, default, description) in settings::DEFAULTS {
            m = m.config(settings::spec(key, default, description));
        }
        m.credential(CredentialSlot::new(
            bt::CREDENTIAL,
            "BeyondTrust API account (client id and secret; token URL <site>/oauth2/token)",
            &[CredentialKind::Oauth2ClientCredentials],
        ))
        .credential(snow::credential_slot("ServiceNow integration user"))
        .egress(None, "The BeyondTrust site (config `site_url`)")
        .egress(None, "The ServiceNow instance (config `servicenow_url`)")
    }

    fn invoke(ctx: &Context, action: &str, input: Value) -> Result<Value> {
        dispatch_action(ctx, action, input)
    }

    fn handle_webhook(
        ctx: &Context,
        route: &str,
        request: WebhookRequest,
    ) -> Result<WebhookResponse> {
        if route != EVENTS_ROUTE {
            return Err(Error::not_found(format!(
                "session-import has no webhook route `{route}`"
            )));
        }
        let fields: Vec<(String, String)> = url::form_urlencoded::parse(&request.body)
            .into_owned()
            .chain(url::form_urlencoded::parse(request.query.as_bytes()).into_owned())
            .collect();
        let field = |k: &str| {
            fields
                .iter()
                .find(|(fk, _)| fk == k)
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default()
        };
        let event = field("event");
        if event.is_empty() {
            return Err(Error::invalid_input(
                "the outbound event has no `event` field (expected a form post from BeyondTrust)",
            ));
        }
        let answer = |text: String| WebhookResponse {
            status: 200,
            headers: Vec::new(),
            body: text.into_bytes(),
        };
        if !IMPORTING_EVENTS.contains(&event.as_str()) {
            return Ok(answer(format!("event {event} ignored")));
        }
        let lsid = field("lsid");
        if lsid.is_empty() {
            return Err(Error::invalid_input(format!(
                "the {event} event has no `lsid` field"
            )));
        }
        let mut imp = importer(ctx)?;
        let outcome = import_one(&mut imp, &lsid)?;
        Ok(answer(format!("{event} for session {lsid}: {outcome}")))
    }

    fn run_job(ctx: &Context, job: &str) -> Result<String> {
        if job != "pull" {
            return Err(Error::not_found(format!(
                "session-import has no job `{job}`"
            )));
        }
        let mut imp = importer(ctx)?;
        let rep = pull::pull(&mut imp)?;
        Ok(rep.summary(&imp))
    }
}

/// Input of `generate-session-key`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
struct SessionKeyInput {
    /// The incident, by number (INC0010001) or sys_id.
    #[schemars(length(min = 1))]
    incident: String,
    /// The queue the session goes to (`general`, `rep:<id>`, `team:<id>`);
    /// overrides config `queue_id`.
    #[serde(default)]
    queue_id: Option<String>,
}

/// No input.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
struct NoInput {}

switchyard_sdk::actions! {
    GenerateSessionKey = "generate-session-key",
        "Generate a support session key for an incident (its number becomes the session's \
         external key); refused for resolved or closed incidents", role "agent"
        => |ctx, input: SessionKeyInput| -> Value {
        generate_session_key(ctx, &mut importer(ctx)?, input)
    }
    LoadIssues = "load-issues",
        "Copy the support site's issues into ServiceNow; reports how many were added and updated",
        role "admin"
        => |ctx, _input: NoInput| -> Value {
        load_issues(&mut importer(ctx)?)
    }
    LoadEventTypes = "load-event-types",
        "Write the known event types, and whether each is imported, to ServiceNow", role "admin"
        => |ctx, _input: NoInput| -> Value {
        load_event_types(&mut importer(ctx)?)
    }
    PullSessionsNow = "pull-sessions-now",
        "Pull sessions from the cursor now (as the scheduled job does)", role "admin"
        => |ctx, _input: NoInput| -> Value {
        let mut imp = importer(ctx)?;
        let rep = pull::pull(&mut imp)?;
        let summary = rep.summary(&imp);
        Ok(json!({ "summary": summary, "report": rep, "stats": imp.stats }))
    }
    TestConnection = "test-connection",
        "Check both connections: the site's API version and a ServiceNow read", role "admin"
        => |ctx, _input: NoInput| -> Value {
        let imp = importer(ctx)?;
        let version = imp.bt.api_version()?;
        imp.sn
            .query(&imp.settings.session_table, &Query::new(), &["sys_id"], 1)?;
        Ok(json!({
            "beyondtrust_api_version": version,
            "servicenow": format!("{} is readable", imp.settings.session_table),
        }))
    }
}

/// Imports the session `lsid` (an outbound event named it).
fn import_one(imp: &mut Importer, lsid: &str) -> Result<String> {
    let body = imp.bt.session(lsid)?;
    let task_number = imp.bt.task_number(lsid)?;
    let mut outcome = None;
    let read = report::sessions(&body, |s| {
        if s.lsid == lsid && outcome.is_none() {
            outcome = Some(imp.import(&s, task_number.as_deref())?);
        }
        Ok::<(), Error>(())
    })?;
    if let Err(e) = read {
        return Err(Error::upstream(format!(
            "BeyondTrust's report of session {lsid}: {e}"
        )));
    }
    match outcome {
        // The archive can lag the event a little: the queue retries.
        None => Err(Error::Upstream {
            status: None,
            message: format!("BeyondTrust has no report of session {lsid} yet"),
            retry_after_secs: Some(30),
        }),
        Some(Imported::Busy(wait)) => Err(Error::Upstream {
            status: None,
            message: format!("session {lsid} is being imported by another run"),
            retry_after_secs: Some(wait),
        }),
        Some(Imported::Written) => Ok("imported".into()),
        Some(Imported::Already) => Ok("already imported".into()),
        Some(Imported::Associated) => Ok("associated with its task".into()),
        Some(Imported::External) => Ok(
            "not imported: started outside ServiceNow, and import_external_sessions is off".into(),
        ),
    }
}

fn generate_session_key(
    ctx: &Context,
    imp: &mut Importer,
    input: SessionKeyInput,
) -> Result<Value> {
    let key = input.incident.trim();
    if key.is_empty() {
        return Err(Error::invalid_input(
            "`incident` (number or sys_id) is required",
        ));
    }
    let incident = imp
        .sn
        .find_task("incident", key)?
        .ok_or_else(|| Error::not_found(format!("ServiceNow has no incident {key}")))?;
    if imp.settings.key_hidden_states.contains(&incident.state) {
        return Err(Error::conflict(format!(
            "incident {} is in state {} (resolved, closed or canceled): session keys are not \
             offered for it",
            incident.number, incident.state
        )));
    }
    let queue = input
        .queue_id
        .filter(|q| !q.trim().is_empty())
        .unwrap_or_else(|| imp.settings.queue_id.clone());
    let key = imp.bt.generate_session_key(&incident.number, &queue)?;
    let mut noted = false;
    if imp.settings.notes.session_key {
        let who = ctx
            .actor
            .as_ref()
            .map(|a| a.email.clone().unwrap_or_else(|| a.id.clone()))
            .unwrap_or_else(|| "an agent".into());
        let expires = if key.expires > 0 {
            format!("; it expires {} UTC", glide_time(key.expires))
        } else {
            String::new()
        };
        imp.sn.work_note(
            &incident.table,
            &incident.sys_id,
            &format!(
                "Remote support session key {} generated by {who}{expires}. Customer link: {}",
                key.short_key, key.key_url
            ),
        )?;
        noted = true;
    }
    Ok(json!({
        "incident": incident.number,
        "short_key": key.short_key,
        "key_url": key.key_url,
        "expires": key.expires,
        "mail_subject": key.mail_subject,
        "mail_body": key.mail_body,
        "work_note": noted,
    }))
}

/// Counts of a lookup-table load.
#[derive(Default, serde::Serialize)]
struct Loaded {
    added: usize,
    updated: usize,
    unchanged: usize,
}

/// Upserts `rows` into `table` keyed by `key_field`: inserts the missing,
/// updates the changed, leaves the rest.
fn upsert(
    imp: &Importer,
    table: &str,
    key_field: &str,
    rows: Vec<Map<String, Value>>,
) -> Result<Loaded> {
    let fields: Vec<&str> = rows
        .first()
        .map(|r| r.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let mut wanted = vec!["sys_id"];
    wanted.extend(fields);
    // Lookup tables are small; the cap bounds a runaway answer.
    let existing = imp
        .sn
        .query_all(table, &Query::new().order_by("sys_id"), &wanted, 20_000)?;
    let mut n = Loaded::default();
    for row in rows {
        let key = row[key_field].as_str().unwrap_or_default();
        match existing.iter().find(|e| snow::field(e, key_field) == key) {
            None => {
                imp.sn.insert(table, &row)?;
                n.added += 1;
            }
            Some(e) => {
                let changed = row
                    .iter()
                    .any(|(k, v)| snow::field(e, k) != v.as_str().unwrap_or_default());
                if changed {
                    let id = snow::SysId::parse(&snow::field(e, "sys_id")).map_err(|_| {
                        Error::upstream(format!("a row of {table} has no valid sys_id"))
                    })?;
                    imp.sn.update(table, &id, &row)?;
                    n.updated += 1;
                } else {
                    n.unchanged += 1;
                }
            }
        }
    }
    Ok(n)
}

fn load_issues(imp: &mut Importer) -> Result<Value> {
    let issues = imp.bt.support_issues()?;
    let rows = issues
        .iter()
        .map(|i| {
            snow::row(json!({
                "u_issue_id": i.id, "u_code_name": i.code_name,
                "u_description": i.description, "u_team": i.team,
            }))
        })
        .collect();
    let table = imp.settings.issue_table.clone();
    let n = upsert(imp, &table, "u_issue_id", rows)?;
    log::info(format!(
        "issues loaded: {} added, {} updated, {} unchanged",
        n.added, n.updated, n.unchanged
    ));
    Ok(
        json!({ "table": table, "issues": issues.len(), "added": n.added, "updated": n.updated, "unchanged": n.unchanged }),
    )
}

fn load_event_types(imp: &mut Importer) -> Result<Value> {
    let rows = KNOWN_EVENT_TYPES
        .iter()
        .map(|t| {
            snow::row(json!({
                "u_name": t,
                "u_import": imp.settings.events.wants(t).to_string(),
            }))
        })
        .collect();
    let table = imp.settings.event_type_table.clone();
    let n = upsert(imp, &table, "u_name", rows)?;
    Ok(
        json!({ "table": table, "event_types": KNOWN_EVENT_TYPES.len(), "added": n.added, "updated": n.updated, "unchanged": n.unchanged }),
    )
}

switchyard_sdk::register!(SessionImport);
