//! Requests in the instance's storage.
//!
//! - `req/<id>`: one [`Request`] with its whole history.
//! - `idx/<created ms>/<id>`: every request, oldest first (for
//!   `list-requests`).
//! - `open/<id>`: requests that still have work: waiting for a decision,
//!   for forwarding, or for an install to finish.
//! - `pending/<device>/<app>`: the open request for that device and app
//!   (taken with compare-and-swap), so that a second request, even one
//!   arriving at the same moment, is answered with the first.
//! - `lock/<id>`: a lease held while one invocation changes a request, so a
//!   decision callback and the job never overwrite each other's change.
//! - `key`: the instance's HMAC key for callback tokens.
//! - `out/…`, `slack-not-before`, `slack-refused`: Slack's outbox (see
//!   `slack`).
//! - `stats`: last good exchange per system, last error.
//!
//! Indexes are one key per entry, never a list read, changed and written
//! back, so concurrent invocations cannot lose each other's entries.

use serde::{Deserialize, Serialize};
use switchyard_sdk::storage::{self, Lease, get_json, set_json};
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
    /// When the decision arrived.
    #[serde(default)]
    pub decided_ms: Option<u64>,
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

/// Saves `r` and keeps its `open/` marker and pending claim in step with
/// its status.
pub fn save(r: &Request) -> Result<()> {
    set_json(&key(&r.id), r)?;
    let open = format!("open/{}", r.id);
    if r.is_open() {
        set_json(&open, &1)?;
    } else {
        storage::delete(&open)?;
        // Only this request's claim goes; a newer request's stays.
        unclaim(r.device.id, r.app.id, &r.id)?;
    }
    Ok(())
}

/// Creates `r` (its pending claim is already taken): the index entry, then
/// the record and its open marker. A crash in between leaves an index entry
/// without a record, which listings skip.
pub fn create(r: &Request) -> Result<()> {
    set_json(&format!("idx/{:013}/{}", r.created_ms, r.id), &1)?;
    save(r)
}

/// How long a claim whose request is not stored yet counts as another
/// intake at work (after that, it was left by a crash).
const CLAIM_GRACE_MS: u64 = 60_000;

/// A device × app claim: the request it is for, and since when.
#[derive(Serialize, Deserialize)]
struct Claim {
    id: String,
    at_ms: u64,
}

/// Claims device × app for request `id` at `now_ms`. Answers the open
/// request that holds the claim instead, if there is one; a conflict if
/// another intake took it a moment ago and has not stored its request yet;
/// a claim left by a request that has ended, or by a crash, is taken over.
pub fn claim(device: i64, app: i64, id: &str, now_ms: u64) -> Result<Option<Request>> {
    let k = pending_key(device, app);
    let mine = serde_json::to_vec(&Claim {
        id: id.to_owned(),
        at_ms: now_ms,
    })?;
    loop {
        let cur = storage::get(&k)?;
        if let Some(held) = cur
            .as_deref()
            .and_then(|b| serde_json::from_slice::<Claim>(b).ok())
        {
            match load(&held.id)? {
                Some(r) if r.is_open() => return Ok(Some(r)),
                None if now_ms < held.at_ms + CLAIM_GRACE_MS => {
                    return Err(Error::conflict(
                        "another request for this device and app is being made right now; \
                         ask again in a moment",
                    ));
                }
                _ => {}
            }
        }
        if storage::compare_and_swap(&k, cur.as_deref(), Some(&mine))? {
            return Ok(None);
        }
    }
}

/// Gives up device × app's claim if request `id` holds it.
pub fn unclaim(device: i64, app: i64, id: &str) -> Result<()> {
    let k = pending_key(device, app);
    if let Some(cur) = storage::get(&k)?
        && serde_json::from_slice::<Claim>(&cur).is_ok_and(|c| c.id == id)
    {
        storage::compare_and_swap(&k, Some(&cur), None)?;
    }
    Ok(())
}

/// The open request for `device` and `app`, if any.
pub fn open_for(device: i64, app: i64) -> Result<Option<Request>> {
    let Some(c) = get_json::<Claim>(&pending_key(device, app))? else {
        return Ok(None);
    };
    Ok(load(&c.id)?.filter(Request::is_open))
}

/// Ids of requests with work left.
pub fn open_ids() -> Result<Vec<String>> {
    Ok(storage::list("open/")?
        .into_iter()
        .map(|k| k["open/".len()..].to_owned())
        .collect())
}

/// Every request id, oldest first.
pub fn all_ids() -> Result<Vec<String>> {
    Ok(storage::list("idx/")?
        .into_iter()
        .filter_map(|k| k.rsplit('/').next().map(str::to_owned))
        .collect())
}

/// Holds request `id` for this invocation's change, waiting up to
/// `patience` for another invocation to finish its own; None if it does
/// not in time.
pub fn lock(id: &str, holder: &str, patience: std::time::Duration) -> Result<Option<Lease>> {
    let give_up = std::time::Instant::now() + patience;
    loop {
        match Lease::take(&format!("lock/{id}"), holder)? {
            Ok(lease) => return Ok(Some(lease)),
            Err(_) if std::time::Instant::now() < give_up => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(_) => return Ok(None),
        }
    }
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
        Err(e) => s.last_error = Some((now_ms, system.to_owned(), e.message().to_owned())),
    }
    set_json("stats", &s)
}

/// The statistics.
pub fn stats() -> Result<Stats> {
    Ok(get_json("stats")?.unwrap_or_default())
}
