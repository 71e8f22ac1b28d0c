//! Requests in the instance's storage.
//!
//! - `req/<id>`: one [`Request`] with its whole history.
//! - `index`: every request id, oldest first (for `list-requests`).
//! - `open`: ids of requests that still have work: waiting for a decision,
//!   for forwarding, or for an install to finish.
//! - `pending/<device>/<app>`: the open request for that device and app, so
//!   that a second request is answered with the first.
//! - `key`: the instance's HMAC key for callback tokens.
//! - `outbox`: Slack messages not yet delivered (see `slack`).
//! - `stats`: last good exchange per system, last error.

use serde::{Deserialize, Serialize};
use switchyard_sdk::storage::{self, get_json, set_json};
use switchyard_sdk::{Error, Result};

/// Who asked.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Requester {
    /// UEM user id.
    pub user_id: String,
    /// User name.
    pub user_name: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Email.
    pub email: String,
}

/// The device, as UEM described it at intake.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Device {
    /// UEM device id.
    pub id: i64,
    /// Friendly name.
    pub name: String,
    /// UDID.
    pub udid: String,
    /// Serial number.
    pub serial: String,
    /// OS family (`windows`, …).
    pub platform: String,
}

/// The app, as UEM's catalog described it at intake.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct App {
    /// UEM application id.
    pub id: i64,
    /// `internal`, `public` or `purchased`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Categories.
    pub categories: Vec<String>,
    /// Package (bundle) id.
    pub package_id: String,
    /// Version.
    pub version: String,
    /// Platform.
    pub platform: String,
}

/// One status change or notable event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// Milliseconds since the epoch.
    pub at_ms: u64,
    /// The status after it.
    pub status: String,
    /// Who or what caused it.
    pub by: String,
    /// What happened.
    pub note: String,
}

/// An app request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Request {
    /// The `RequestId` (a UUID): also ServiceNow's idempotency key.
    pub id: String,
    /// One of `settings::STATUSES`.
    pub status: String,
    /// Requester.
    pub requester: Requester,
    /// Domain.
    pub domain: String,
    /// Device.
    pub device: Device,
    /// App.
    pub app: App,
    /// Notes / justification.
    pub notes: String,
    /// When it was made.
    pub created_ms: u64,
    /// When it expires without a decision.
    pub due_ms: u64,
    /// ServiceNow has it (its answer arrived).
    pub forwarded: bool,
    /// The sc_request's sys_id and number, once known.
    pub sn_sys_id: Option<String>,
    /// Number.
    pub sn_number: Option<String>,
    /// `APPROVED` or `REJECTED`, once decided.
    pub decision: Option<String>,
    /// When the install command went out.
    pub dispatched_ms: Option<u64>,
    /// The reminder went out.
    pub reminded: bool,
    /// Why it ended in Error, or the last failure of a step that is retried.
    pub error: Option<String>,
    /// Every change, oldest first.
    pub history: Vec<Event>,
}

impl Request {
    /// Whether the request still has work to do.
    pub fn is_open(&self) -> bool {
        use crate::settings::{DISPATCHED, PENDING};
        self.status == PENDING || self.status == DISPATCHED
    }

    /// Moves to `status` (or records an event when it is the same) and
    /// notes who did it.
    pub fn record(&mut self, now_ms: u64, status: &str, by: &str, note: impl Into<String>) {
        self.status = status.to_owned();
        self.history.push(Event {
            at_ms: now_ms,
            status: status.to_owned(),
            by: by.to_owned(),
            note: note.into(),
        });
    }
}

fn key(id: &str) -> String {
    format!("req/{id}")
}

fn pending_key(device: i64, app: i64) -> String {
    format!("pending/{device}/{app}")
}

/// One request.
pub fn load(id: &str) -> Result<Option<Request>> {
    get_json(&key(id))
}

/// Saves `r` and keeps the indexes in step with its status.
pub fn save(r: &Request) -> Result<()> {
    set_json(&key(&r.id), r)?;
    let mut open: Vec<String> = get_json("open")?.unwrap_or_default();
    let was_open = open.contains(&r.id);
    let pending = pending_key(r.device.id, r.app.id);
    if r.is_open() && !was_open {
        open.push(r.id.clone());
        set_json("open", &open)?;
        set_json(&pending, &r.id)?;
    } else if !r.is_open() && was_open {
        open.retain(|i| i != &r.id);
        set_json("open", &open)?;
        if get_json::<String>(&pending)?.as_deref() == Some(r.id.as_str()) {
            storage::delete(&pending)?;
        }
    }
    Ok(())
}

/// Creates `r`: record first, then the index (a crash in between leaves a
/// record that `save` completes on its next change, never an index entry
/// without a record).
pub fn create(r: &Request) -> Result<()> {
    save(r)?;
    let mut index: Vec<String> = get_json("index")?.unwrap_or_default();
    index.push(r.id.clone());
    set_json("index", &index)
}

/// The open request for `device` and `app`, if any.
pub fn open_for(device: i64, app: i64) -> Result<Option<Request>> {
    let Some(id) = get_json::<String>(&pending_key(device, app))? else {
        return Ok(None);
    };
    Ok(load(&id)?.filter(Request::is_open))
}

/// Ids of requests with work left.
pub fn open_ids() -> Result<Vec<String>> {
    Ok(get_json("open")?.unwrap_or_default())
}

/// Every request id, oldest first.
pub fn all_ids() -> Result<Vec<String>> {
    Ok(get_json("index")?.unwrap_or_default())
}

/// Last good exchange per system and the last error.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// System → ms of the last exchange that worked.
    pub last_ok: std::collections::BTreeMap<String, u64>,
    /// The last failure: (ms, system, message).
    pub last_error: Option<(u64, String, String)>,
}

/// Records the outcome of an exchange with `system`.
pub fn note_exchange<T>(system: &str, now_ms: u64, result: &Result<T>) -> Result<()> {
    let mut s: Stats = get_json("stats")?.unwrap_or_default();
    match result {
        Ok(_) => {
            s.last_ok.insert(system.to_owned(), now_ms);
        }
        Err(e) => s.last_error = Some((now_ms, system.to_owned(), describe(e))),
    }
    set_json("stats", &s)
}

/// The statistics.
pub fn stats() -> Result<Stats> {
    Ok(get_json("stats")?.unwrap_or_default())
}

/// An error's message without its kind.
pub fn describe(e: &Error) -> String {
    match e.kind() {
        Error::Upstream { message, .. } => message.clone(),
        Error::InvalidInput(m)
        | Error::NotFound(m)
        | Error::Forbidden(m)
        | Error::Conflict(m)
        | Error::Internal(m) => m.clone(),
        other => format!("{other:?}"),
    }
}
