//! `access-tickets`: identity-management access requests fulfilled through
//! ServiceNow tickets.
//!
//! Two modes (config `mode`):
//! - **servicenow-master** (default): every request waiting for a person
//!   (`pending_manual`) gets a ticket; each change of the ticket's state,
//!   and the agent's latest comment, is reported to the identity system
//!   until the ticket closes (closed complete fulfils the request, closed
//!   incomplete or skipped rejects it); nothing flows after that.
//! - **identity-master**: requests of the enabled service categories get a
//!   ticket so that users can follow them in ServiceNow; the identity
//!   system's approvals decide, and its changes (approved, rejected,
//!   withdrawn, fulfilled, new comments) are pushed to the ticket as a
//!   state and a work note.
//!
//! The job `sync` (every 15 minutes by default) does both directions. It
//! reads open tickets in batches of 100 (one encoded `IN` query for the
//! tickets and one for their latest comments per batch), and a ticket that
//! has not changed for `backoff_after_runs` runs is read only every
//! `backoff_every` runs: with the defaults, 10,000 open requests cost at
//! most 200 ServiceNow requests in a run, and about 25 once most of them
//! are quiet. The webhook route `ticket-changed` is the faster path: a
//! ServiceNow business rule posts `{"sys_id"}` (or the correlation id) when
//! a ticket changes, and that ticket is read at once; polling stays the
//! safety net.
//!
//! Exactly one ticket per request: the correlation field (default
//! `correlation_id`) holds the request id, and it is looked up before any
//! insert, so a run that died after an insert (or lost its answer) adopts
//! the ticket. A request that the identity system already closed (409)
//! counts as done, not as a failure. Every exchange is kept per request
//! (`history`).

pub mod idm;
pub mod settings;
pub mod sync;

use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_sdk::schemars::JsonSchema;
use switchyard_sdk::storage::Lease;
use switchyard_sdk::{
    ConfigSpec, Context, CredentialKind, CredentialSlot, Error, JobSpec, Manifest, Plugin, Result,
    WebhookRequest, WebhookResponse, WebhookSpec, config,
};
use switchyard_servicenow::{Query, SysId, field};

use settings::{Mode, Settings};
use sync::Sync;

/// The webhook route ServiceNow calls when a ticket changes.
pub const TICKET_ROUTE: &str = "ticket-changed";

fn settings() -> Result<Settings> {
    Settings::read(config::get).map_err(|e| Error::invalid_input(format!("configuration: {e}")))
}

/// Input of `history`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
struct RequestId {
    /// The access request's id, e.g. AR-01000.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.\-]{1,128}$"))]
    request_id: String,
}

/// No input.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
struct NoInput {}

switchyard_sdk::actions! {
    History = "history", "Every exchange of one access request: time, direction, old and new state, comment", role "viewer"
        => |_ctx, input: RequestId| -> Value {
        let ticket = sync::ticket(&input.request_id)?;
        let history = sync::history(&input.request_id)?;
        if ticket.is_none() && history.is_empty() {
            return Err(Error::not_found(format!(
                "no ticket is recorded for access request {}",
                input.request_id
            )));
        }
        Ok(json!({ "request_id": input.request_id, "ticket": ticket, "history": history }))
    }
    List = "list", "Open requests with their ticket, its state and the run that last saw a change", role "viewer"
        => |_ctx, _input: NoInput| -> Value {
        let mut open = Vec::new();
        for id in sync::open_requests()? {
            if let Some(t) = sync::ticket(&id)? {
                let last = sync::history(&id)?.last().map(|e| e.at);
                open.push(json!({
                    "request_id": id, "ticket": t.number, "table": t.table, "state": t.state,
                    "reported": t.reported, "changed_run": t.changed_run,
                    "last_exchange_at": last,
                }));
            }
        }
        let run = switchyard_sdk::storage::get_json::<u64>("run")?.unwrap_or(0);
        Ok(json!({ "open": open, "runs": run }))
    }
    Verify = "verify", "Check both systems with the configured credentials", role "admin"
        => |_ctx, _input: NoInput| -> Value {
        let s = settings()?;
        let (pending, seq) = idm::Identity::new(&s.identity_url).list(&[("status", "pending_manual")])?;
        switchyard_servicenow::ServiceNow::new(&s.servicenow_url)
            .query(&s.table, &Query::new(), &["sys_id"], 1)?;
        Ok(json!({
            "identity": { "ok": true, "pending_manual": pending.len(), "seq": seq },
            "servicenow": { "ok": true, "table": s.table },
        }))
    }
}

struct AccessTickets;

impl Plugin for AccessTickets {
    fn manifest() -> Manifest {
        let mut m = declare_actions(Manifest::new(
            "access-tickets",
            env!("CARGO_PKG_VERSION"),
            "Identity-management access requests fulfilled through ServiceNow tickets",
        ))
        .job(JobSpec::new(
            "sync",
            "Create tickets for new requests, follow the identity system's changes and report ticket changes back",
            300,
            900,
            86_400,
        ))
        .webhook(WebhookSpec::queued(
            TICKET_ROUTE,
            "A ServiceNow business rule's notice that a ticket changed: JSON {\"sys_id\"} or \
             {\"correlation_id\"}; the ticket is read at once",
        ))
        .config(ConfigSpec::required(
            "servicenow_url",
            "ServiceNow instance, e.g. https://acme.service-now.com",
        ))
        .config(ConfigSpec::required(
            "identity_url",
            "The identity system's API base URL",
        ));
        for (key, default, description) in settings::DEFAULTS {
            m = m.config(settings::spec(key, default, description));
        }
        m.credential(switchyard_servicenow::credential_slot(
            "ServiceNow integration user",
        ))
        .credential(CredentialSlot::new(
            idm::CREDENTIAL,
            "The identity system's API token",
            &[CredentialKind::Bearer],
        ))
        .egress(None, "The ServiceNow instance (config `servicenow_url`)")
        .egress(None, "The identity system (config `identity_url`)")
    }

    fn invoke(ctx: &Context, action: &str, input: Value) -> Result<Value> {
        dispatch_action(ctx, action, input)
    }

    fn handle_webhook(
        ctx: &Context,
        route: &str,
        request: WebhookRequest,
    ) -> Result<WebhookResponse> {
        if route != TICKET_ROUTE {
            return Err(Error::not_found(format!(
                "access-tickets has no webhook route `{route}`"
            )));
        }
        let s = settings()?;
        let text = if s.mode == Mode::IdentityMaster {
            "ignored: the identity system is master, ticket changes do not flow back".into()
        } else {
            let lease = match Lease::take("lock", &ctx.request_id)? {
                Ok(lease) => lease,
                // A run is reading tickets now; this notice comes back later.
                Err(left) => {
                    return Err(Error::Upstream {
                        status: None,
                        message: "a sync run is in progress".into(),
                        retry_after_secs: Some(left.as_secs().clamp(1, 60) as u32),
                    }
                    .transient());
                }
            };
            let result = notice(&s, &request.body);
            lease.release()?;
            result?
        };
        Ok(WebhookResponse {
            status: 200,
            headers: Vec::new(),
            body: text.into_bytes(),
        })
    }

    fn run_job(ctx: &Context, job: &str) -> Result<String> {
        if job != "sync" {
            return Err(Error::not_found(format!(
                "access-tickets has no job `{job}`"
            )));
        }
        let s = settings()?;
        let lease = match Lease::take("lock", &ctx.request_id)? {
            Ok(lease) => lease,
            // Another run is at work: this one is not needed.
            Err(left) => {
                return Ok(format!(
                    "skipped: another run holds the lock for {} s more",
                    left.as_secs()
                ));
            }
        };
        let result = Sync::start(&s).and_then(Sync::run);
        lease.release()?;
        let report = result?;
        switchyard_sdk::log::progress(1, Some(1), report.summary());
        Ok(report.summary())
    }
}

switchyard_sdk::register!(AccessTickets);

/// Handles a ticket-change notice: reads that ticket now and reports what
/// changed; the answer's text says what happened.
fn notice(s: &Settings, body: &[u8]) -> Result<String> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| Error::invalid_input(format!("the notice is not JSON: {e}")).permanent())?;
    let text = |k: &str| body[k].as_str().map(str::trim).filter(|v| !v.is_empty());
    let mut sync = Sync::notice(s)?;
    let request_id = match (text("correlation_id"), text("sys_id")) {
        (Some(id), _) => id.to_owned(),
        (None, Some(sys_id)) => {
            let sys_id = SysId::parse(sys_id)?;
            let row = sync
                .sn
                .get(&s.table, &sys_id, &[s.correlation_field.as_str()])?
                .ok_or_else(|| {
                    Error::not_found(format!("ServiceNow has no {} {sys_id}", s.table))
                })?;
            field(&row, &s.correlation_field)
        }
        (None, None) => {
            return Err(Error::invalid_input(
                "the notice names no ticket: send {\"sys_id\"} or {\"correlation_id\"}",
            ));
        }
    };
    if !sync::valid_id(&request_id) {
        return Ok("ignored: the ticket is not an access request's".into());
    }
    match sync::ticket(&request_id)? {
        Some(t) if !t.closed => {
            sync.poll(std::slice::from_ref(&request_id), true)?;
            Ok(format!("{request_id}: {}", sync.report.summary()))
        }
        Some(_) => Ok(format!("{request_id}: already closed")),
        None => Ok(format!("{request_id}: no ticket recorded; ignored")),
    }
}
