//! The round trip: intake, forwarding to ServiceNow, the decision callback,
//! the install through UEM and its follow-up, expiry and reminders.
//!
//! Every step saves the request right after its side effect, and every step
//! that talks to another system can be repeated without a second effect:
//! ServiceNow treats a repeated `RequestId` as the same request, an install
//! is sent only while the request has none on record, and a decided request
//! ignores further callbacks. So a run that dies anywhere is finished by
//! the next one (the job `tick`).

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_sdk::http::Request as Http;
use switchyard_sdk::schemars::JsonSchema;
use switchyard_sdk::{Error, Result, invocation};
use switchyard_servicenow::{ServiceNow, SysId};
use switchyard_uem::{Selector, Uem};

use crate::settings::{DISPATCHED, ERROR, EXPIRED, INSTALLED, PENDING, REJECTED, Settings};
use crate::store::{self, App, Device, Request, Requester};
use crate::{slack, token};

const DAY_MS: u64 = 86_400_000;

/// Milliseconds since the epoch (the host's clock for this plugin).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Who asks (UEM's view of the employee).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
pub struct RequesterInput {
    /// UEM user id.
    #[serde(default)]
    pub user_id: String,
    /// User name.
    pub user_name: String,
    /// First name.
    #[serde(default)]
    pub first_name: String,
    /// Last name.
    #[serde(default)]
    pub last_name: String,
    /// Email.
    #[schemars(length(min = 3, max = 254))]
    pub email: String,
}

/// The app asked for.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
pub struct AppInput {
    /// UEM application id.
    pub id: i64,
    /// `internal`, `public` or `purchased`; found in the catalog when absent.
    #[serde(default, rename = "type")]
    pub kind: Option<AppKind>,
    /// Categories shown to the approver.
    #[serde(default)]
    pub categories: Vec<String>,
}

/// Where UEM keeps an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
#[serde(rename_all = "lowercase")]
pub enum AppKind {
    /// An internal (uploaded) app.
    Internal,
    /// A public store app.
    Public,
    /// A purchased (VPP) app.
    Purchased,
}

impl AppKind {
    const ALL: [AppKind; 3] = [Self::Internal, Self::Public, Self::Purchased];

    fn segment(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::Public => "public",
            Self::Purchased => "purchased",
        }
    }
}

/// Input of `request-app` and of the `requests` route.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
pub struct AppRequestInput {
    /// The employee.
    pub requester: RequesterInput,
    /// The user's domain.
    #[serde(default)]
    pub domain: String,
    /// The device: `{"id"}`, `{"serial"}` or `{"udid"}`.
    pub device: Selector,
    /// The app.
    pub app: AppInput,
    /// Why the employee needs it.
    #[serde(default)]
    #[schemars(length(max = 4000))]
    pub notes: String,
}

/// Intake: checks, records, forwards. Answers the request (an existing one
/// for the same device and app while it is open).
pub fn intake(s: &Settings, input: AppRequestInput, by: &str, holder: &str) -> Result<Value> {
    if matches!(input.device, Selector::Email(_)) {
        return Err(Error::invalid_input(
            "`device` must name one device by `id`, `serial` or `udid`",
        ));
    }
    let uem = Uem::new(&s.uem_url);
    let now = now_ms();
    let device = uem.resolve_one(&input.device);
    store::note_exchange("uem", now, &device)?;
    let device = device?;
    if !device.enrollment.eq_ignore_ascii_case("enrolled") {
        return Err(Error::conflict(format!(
            "device {} is not enrolled (UEM says `{}`); apps are installed on enrolled devices only",
            device.id, device.enrollment
        )));
    }
    let family = device.os_family.map(|f| f.name().to_ascii_lowercase());
    if !family.as_ref().is_some_and(|f| s.platforms.contains(f)) {
        return Err(Error::forbidden(format!(
            "device {} runs {} ; app approvals are enabled for {} devices only",
            device.id,
            if device.os.is_empty() {
                "an unknown OS"
            } else {
                &device.os
            },
            s.platforms.join(", ")
        )));
    }
    if let Some(existing) = store::open_for(device.id, input.app.id)? {
        return Ok(json!({ "existing": true, "request": view(&existing) }));
    }
    let app = catalog_app(&uem, &input.app)?;
    let id = token::uuid()?;
    // The claim decides between two requests for the same device and app
    // that arrive at the same moment.
    if let Some(existing) = store::claim(device.id, input.app.id, &id, now)? {
        return Ok(json!({ "existing": true, "request": view(&existing) }));
    }
    let mut r = Request {
        id,
        status: PENDING.into(),
        requester: Requester {
            user_id: input.requester.user_id,
            user_name: input.requester.user_name,
            first_name: input.requester.first_name,
            last_name: input.requester.last_name,
            email: input.requester.email,
        },
        domain: input.domain,
        device: Device {
            id: device.id,
            name: if device.name.is_empty() {
                device.model.clone()
            } else {
                device.name.clone()
            },
            udid: device.udid,
            serial: device.serial,
            platform: family.unwrap_or_default(),
        },
        app,
        notes: input.notes,
        created_ms: now,
        due_ms: now + s.expiry_days * DAY_MS,
        forwarded: false,
        sn_sys_id: None,
        sn_number: None,
        decision: None,
        decided_ms: None,
        dispatched_ms: None,
        reminded: false,
        error: None,
        history: Vec::new(),
    };
    let who = r.requester.email.clone();
    r.record(now, PENDING, by, format!("requested by {who}"));
    slack::announce(s, PENDING, &r)?;
    if let Err(e) = store::create(&r) {
        let _ = store::unclaim(r.device.id, r.app.id, &r.id);
        return Err(e);
    }
    // ServiceNow may call back before its answer to the POST arrives, so
    // the POST goes out without the request's lease, and its outcome is
    // merged into the request as it is then, under the lease. A failure
    // leaves the request unforwarded: `tick` sends it again with the same
    // RequestId. (A crash during the POST leaves no lease behind.)
    let sent = send_to_servicenow(s, &r);
    let Some(lease) = store::lock(&r.id, holder, Duration::from_secs(10))? else {
        return Ok(json!({ "existing": false, "request": view(&r) }));
    };
    let result = (|| -> Result<Request> {
        let mut current = store::load(&r.id)?.unwrap_or(r);
        apply_forwarded(&mut current, sent)?;
        store::save(&current)?;
        Ok(current)
    })();
    lease.release()?;
    Ok(json!({ "existing": false, "request": view(&result?) }))
}

fn catalog_app(uem: &Uem, input: &AppInput) -> Result<App> {
    let kinds: Vec<AppKind> = match input.kind {
        Some(k) => vec![k],
        None => AppKind::ALL.to_vec(),
    };
    for kind in kinds {
        let path = format!("/mam/apps/{}/{}", kind.segment(), input.id);
        let found = match uem.get(&path, &format!("application {}", input.id)) {
            Ok(v) => v,
            Err(e) if matches!(e.kind(), Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let Some(a) = found else { continue };
        if a["RequireApprovalToInstall"].as_bool() == Some(false) {
            return Err(Error::conflict(format!(
                "application {} ({}) does not require approval; it installs from the catalog directly",
                input.id,
                a["ApplicationName"].as_str().unwrap_or_default()
            )));
        }
        let text = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
        return Ok(App {
            id: input.id,
            kind: kind.segment().into(),
            name: text("ApplicationName"),
            categories: input.categories.clone(),
            package_id: text("BundleId"),
            version: text("AppVersion"),
            platform: text("Platform"),
        });
    }
    Err(Error::not_found(format!(
        "UEM's catalog has no application {}",
        input.id
    )))
}

/// The callback URL ServiceNow posts the decision to.
fn callback_url(s: &Settings, id: &str) -> Result<String> {
    let sep = if s.callback_url.contains('?') {
        '&'
    } else {
        '?'
    };
    Ok(format!(
        "{}{sep}request_id={id}&token={}",
        s.callback_url,
        token::sign(id)?
    ))
}

/// The seed's payload, exactly.
fn payload(s: &Settings, r: &Request) -> Result<Value> {
    Ok(json!({
        "RequestId": r.id,
        "RequestFor": {
            "UserId": r.requester.user_id,
            "UserAttributes": {
                "user_name": r.requester.user_name,
                "last_name": r.requester.last_name,
                "first_name": r.requester.first_name,
                "email": r.requester.email,
            },
        },
        "Domain": r.domain,
        "DeviceId": r.device.id.to_string(),
        "DeviceProperties": {
            "name": r.device.name,
            "device_udid": r.device.udid,
            "platform": r.device.platform,
        },
        "Notes": r.notes,
        "CatalogItem": {
            "Id": r.app.id.to_string(),
            "Name": r.app.name,
            "Categories": r.app.categories,
            "Properties": {
                "package_id": r.app.package_id,
                "version": r.app.version,
                "platform": r.app.platform,
            },
        },
        "DueDate": r.due_ms,
        "Links": { "ApprovalNotify": { "Url": callback_url(s, &r.id)? } },
    }))
}

/// Sends `r` to ServiceNow unless it is there already. A failure is kept
/// on the request (and retried by `tick`), not returned: the employee's
/// request is recorded either way.
pub fn forward(s: &Settings, r: &mut Request) -> Result<()> {
    if r.forwarded {
        return Ok(());
    }
    let sent = send_to_servicenow(s, r);
    apply_forwarded(r, sent)?;
    store::save(r)
}

/// The POST itself; ServiceNow's `result` on success.
fn send_to_servicenow(s: &Settings, r: &Request) -> Result<Value> {
    let sn = ServiceNow::new(&s.servicenow_url);
    let url = format!("{}/api/{}/appapproval/request", sn.base(), s.namespace);
    let req = Http::post(url)
        .header("accept", "application/json")
        .credential(switchyard_servicenow::CREDENTIAL)
        .json(&payload(s, r)?)?;
    // The RequestId makes the POST idempotent: a repeat answers the same
    // request.
    let resp = switchyard_sdk::retry::Retry::default()
        .idempotent(true)
        .send(&req)
        .map_err(|e| switchyard_sdk::http::error_from("ServiceNow", e))?;
    let resp = switchyard_servicenow::check(resp, "forwarding the app request")?;
    let body: Value = resp
        .json()
        .map_err(|e| Error::upstream(format!("ServiceNow's answer is not JSON: {e}")))?;
    Ok(body["result"].clone())
}

/// Records the outcome of [`send_to_servicenow`] on `r` (not saved).
fn apply_forwarded(r: &mut Request, sent: Result<Value>) -> Result<()> {
    let now = now_ms();
    store::note_exchange("servicenow", now, &sent)?;
    if r.forwarded {
        return Ok(());
    }
    match sent {
        Ok(result) => {
            r.forwarded = true;
            r.error = None;
            r.sn_sys_id = result["sys_id"].as_str().map(str::to_owned);
            r.sn_number = result["number"].as_str().map(str::to_owned);
            let number = r.sn_number.clone().unwrap_or_default();
            r.record(
                now,
                &r.status.clone(),
                "switchyard",
                format!("sent to ServiceNow as {number}"),
            );
        }
        Err(e) => {
            r.error = Some(format!(
                "forwarding to ServiceNow failed: {}",
                e.message().to_owned()
            ))
        }
    }
    Ok(())
}

/// A decision callback, as ServiceNow posts it.
#[derive(Debug, Deserialize)]
struct Callback {
    request_id: String,
    #[serde(default)]
    device_id: Value,
    approval_status: String,
    #[serde(default)]
    updated_by: String,
    #[serde(default)]
    notes: String,
    #[serde(default)]
    updated_at: String,
}

/// The answer to a callback: status and a JSON body.
pub struct Answer {
    /// HTTP status for ServiceNow.
    pub status: u16,
    /// What happened.
    pub body: Value,
}

fn answer(status: u16, message: impl Into<String>) -> Answer {
    Answer {
        status,
        body: json!({ "status": status, "message": message.into() }),
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

/// Handles the `decisions` route.
pub fn decision(s: &Settings, query: &str, body: &[u8], holder: &str) -> Result<Answer> {
    let (Some(rid), Some(tok)) = (
        query_param(query, "request_id"),
        query_param(query, "token"),
    ) else {
        return Ok(answer(
            403,
            "the callback URL carries no request_id and token",
        ));
    };
    if store::load(&rid)?.is_none() {
        return Ok(answer(404, format!("no app request {rid}")));
    }
    if !token::verify(&rid, &tok)? {
        return Ok(answer(
            403,
            "the callback token does not belong to this request",
        ));
    }
    let cb: Callback = match serde_json::from_slice(body) {
        Ok(c) => c,
        Err(e) => {
            return Ok(answer(
                422,
                format!("the callback body is not the expected JSON: {e}"),
            ));
        }
    };
    if cb.request_id != rid {
        return Ok(answer(
            403,
            format!(
                "the callback names request {} but its token is for another request",
                cb.request_id
            ),
        ));
    }
    // The job may be working on this request (forwarding it, say): wait
    // for it, then decide on the request as it is now.
    let Some(lease) = store::lock(&rid, holder, std::time::Duration::from_secs(10))? else {
        return Ok(answer(
            503,
            format!("request {rid} is busy; send the decision again"),
        ));
    };
    let result = decide(s, &rid, &cb);
    lease.release()?;
    result
}

fn decide(s: &Settings, rid: &str, cb: &Callback) -> Result<Answer> {
    let Some(mut r) = store::load(rid)? else {
        return Ok(answer(404, format!("no app request {rid}")));
    };
    let device = match &cb.device_id {
        Value::String(d) => d.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    if device != r.device.id.to_string() {
        return Ok(answer(
            409,
            format!(
                "request {rid} is for device {}, the callback names `{device}`",
                r.device.id
            ),
        ));
    }
    let status = cb.approval_status.trim().to_ascii_uppercase();
    if status != "APPROVED" && status != "REJECTED" {
        return Ok(answer(
            422,
            format!(
                "approval_status `{}` is neither APPROVED nor REJECTED",
                cb.approval_status
            ),
        ));
    }
    let now = now_ms();
    if let Some(earlier) = &r.decision {
        return Ok(answer(
            200,
            format!("request {rid} was already decided ({earlier}); nothing changed"),
        ));
    }
    let by = if cb.updated_by.is_empty() {
        "ServiceNow".to_owned()
    } else {
        cb.updated_by.clone()
    };
    // Past the due date the request has expired, whether or not `tick` has
    // said so yet.
    if r.status == EXPIRED || (r.status == PENDING && now >= r.due_ms) {
        let newly = r.status != EXPIRED;
        if newly {
            expire(s, &mut r, now);
        }
        r.record(
            now,
            EXPIRED,
            &by,
            format!("{status} arrived after expiry ({}); ignored", cb.updated_at),
        );
        if newly {
            slack::announce(s, EXPIRED, &r)?;
        }
        store::save(&r)?;
        return Ok(answer(
            409,
            format!("request {rid} expired before the decision arrived"),
        ));
    }
    if r.status != PENDING {
        return Ok(answer(
            409,
            format!("request {rid} is {}, not waiting for a decision", r.status),
        ));
    }
    r.decision = Some(status.clone());
    r.decided_ms = Some(now);
    r.forwarded = true;
    let notes = if cb.notes.is_empty() {
        String::new()
    } else {
        format!(": {}", cb.notes)
    };
    if status == "REJECTED" {
        r.record(now, REJECTED, &by, format!("rejected by {by}{notes}"));
        slack::announce(s, REJECTED, &r)?;
        store::save(&r)?;
    } else {
        r.record(now, PENDING, &by, format!("approved by {by}{notes}"));
        store::save(&r)?;
        dispatch(s, &mut r)?;
    }
    Ok(Answer {
        status: 200,
        body: json!({ "status": 200, "request": view(&r) }),
    })
}

/// Sends the install command for an approved request. The body's field
/// names are the one place that says how UEM is told which device: no
/// public source confirms which of `DeviceId`, `SerialNumber`, `Udid` or
/// `MacAddress` every UEM version accepts; `DeviceId` is sent.
pub fn dispatch(s: &Settings, r: &mut Request) -> Result<()> {
    if r.dispatched_ms.is_some() || r.decision.as_deref() != Some("APPROVED") {
        return Ok(());
    }
    let uem = Uem::new(&s.uem_url);
    let path = format!(
        "/mam/apps/{}/{}/install",
        switchyard_uem::segment("application type", &r.app.kind)?,
        r.app.id
    );
    let body = json!({ "DeviceId": r.device.id });
    let sent = uem.post(
        &path,
        Some(&body),
        &format!("installing {} on device {}", r.app.name, r.device.id),
    );
    let now = now_ms();
    store::note_exchange("uem", now, &sent)?;
    match sent {
        Ok(_) => {
            r.dispatched_ms = Some(now);
            r.error = None;
            r.record(
                now,
                DISPATCHED,
                "switchyard",
                format!("install command sent to UEM for device {}", r.device.id),
            );
            slack::announce(s, DISPATCHED, r)?;
            store::save(r)
        }
        // UEM will not take it (the app or device is gone, permission):
        // waiting will not help; the employee must request again.
        Err(e)
            if matches!(
                e.kind(),
                Error::NotFound(_) | Error::Forbidden(_) | Error::InvalidInput(_)
            ) =>
        {
            let why = e.message().to_owned();
            r.error = Some(why.clone());
            r.record(now, ERROR, "UEM", format!("install refused: {why}"));
            slack::announce(s, ERROR, r)?;
            store::save(r)
        }
        // Worth another try by the next run, within the install time limit
        // counted from the decision.
        Err(e) => {
            let why = e.message().to_owned();
            let since = r.decided_ms.unwrap_or(r.created_ms);
            if now >= since + s.install_timeout_hours * 3_600_000 {
                r.error = Some(why.clone());
                r.record(
                    now,
                    ERROR,
                    "UEM",
                    format!(
                        "the install could not be sent within {} hours: {why}; request the app again",
                        s.install_timeout_hours
                    ),
                );
                slack::announce(s, ERROR, r)?;
                return store::save(r);
            }
            r.error = Some(format!("install not sent yet: {why}"));
            store::save(r)
        }
    }
}

/// Reads the device's apps and settles a dispatched request.
fn follow_install(s: &Settings, r: &mut Request) -> Result<()> {
    let uem = Uem::new(&s.uem_url);
    let apps = uem.get(
        &format!("/mdm/devices/{}/apps", r.device.id),
        &format!("the apps of device {}", r.device.id),
    );
    let now = now_ms();
    store::note_exchange("uem", now, &apps)?;
    let timed_out = r
        .dispatched_ms
        .is_some_and(|d| now >= d + s.install_timeout_hours * 3_600_000);
    let apps = match apps {
        Ok(a) => a.unwrap_or(Value::Null),
        // The device is gone from UEM: the install cannot finish.
        Err(e) if matches!(e.kind(), Error::NotFound(_)) => {
            let why = e.message().to_owned();
            r.error = Some(why.clone());
            r.record(now, ERROR, "UEM", format!("{why}; request the app again"));
            slack::announce(s, ERROR, r)?;
            return store::save(r);
        }
        Err(e) if timed_out => {
            let why = format!(
                "not installed within {} hours; UEM could not be asked: {}",
                s.install_timeout_hours,
                e.message().to_owned()
            );
            r.error = Some(why.clone());
            r.record(now, ERROR, "UEM", format!("{why}; request the app again"));
            slack::announce(s, ERROR, r)?;
            return store::save(r);
        }
        Err(e) => return Err(e),
    };
    let status = apps["DeviceApps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["ApplicationIdentifier"].as_str() == Some(r.app.package_id.as_str()))
        .and_then(|a| a["Status"].as_str())
        .unwrap_or_default()
        .to_owned();
    let lower = status.to_ascii_lowercase();
    if lower == "installed" {
        r.record(
            now,
            INSTALLED,
            "UEM",
            format!("{} {} is installed", r.app.name, r.app.version),
        );
        slack::announce(s, INSTALLED, r)?;
        return store::save(r);
    }
    let failed = lower.contains("fail") || lower.contains("error");
    if failed || timed_out {
        let why = if failed {
            format!("UEM reports the install as `{status}`")
        } else {
            format!(
                "not installed within {} hours (UEM says `{}`)",
                s.install_timeout_hours,
                if status.is_empty() {
                    "not on the device"
                } else {
                    &status
                }
            )
        };
        r.error = Some(why.clone());
        r.record(now, ERROR, "UEM", format!("{why}; request the app again"));
        slack::announce(s, ERROR, r)?;
        return store::save(r);
    }
    Ok(())
}

/// Marks `r` expired (not saved).
fn expire(s: &Settings, r: &mut Request, now: u64) {
    r.record(
        now,
        EXPIRED,
        "switchyard",
        format!("no decision within {} days", s.expiry_days),
    );
}

/// Expires or reminds a request waiting for a decision.
fn age(s: &Settings, r: &mut Request) -> Result<bool> {
    let now = now_ms();
    if now >= r.due_ms {
        expire(s, r, now);
        slack::announce(s, EXPIRED, r)?;
        store::save(r)?;
        note_in_servicenow(
            s,
            r,
            &format!(
                "Switchyard: this app request expired without a decision after {} days; the employee must request again.",
                s.expiry_days
            ),
        );
        return Ok(true);
    }
    if s.reminder_days > 0 && !r.reminded && now + s.reminder_days * DAY_MS >= r.due_ms {
        let left = (r.due_ms - now).div_ceil(DAY_MS);
        let noted = note_in_servicenow(
            s,
            r,
            &format!(
                "Switchyard reminder: this app request expires in {left} day(s) without a decision."
            ),
        );
        if noted {
            r.reminded = true;
            r.record(
                now,
                PENDING,
                "switchyard",
                format!("reminder sent: expires in {left} day(s)"),
            );
            slack::announce(s, "Reminder", r)?;
            store::save(r)?;
        }
        return Ok(true);
    }
    Ok(false)
}

/// A work note on the request's sc_request; whether it was written.
fn note_in_servicenow(s: &Settings, r: &mut Request, note: &str) -> bool {
    let sn = ServiceNow::new(&s.servicenow_url);
    let result = (|| {
        let sys_id = match r.sn_sys_id.as_deref().map(SysId::parse) {
            Some(Ok(id)) => Some(id),
            _ => sn.find_by("sc_request", &s.column_request_id, &r.id)?,
        };
        let Some(sys_id) = sys_id else {
            return Err(Error::not_found(format!(
                "ServiceNow has no sc_request with {} = {}",
                s.column_request_id, r.id
            )));
        };
        r.sn_sys_id = Some(sys_id.as_str().to_owned());
        sn.work_note("sc_request", &sys_id, note)
    })();
    let _ = store::note_exchange("servicenow", now_ms(), &result);
    result.is_ok()
}

/// What one `tick` did.
#[derive(Debug, Default)]
pub struct Tick {
    forwarded: usize,
    dispatched: usize,
    settled: usize,
    aged: usize,
    failed: usize,
    deferred: usize,
}

/// The job: forward, dispatch, follow installs, expire and remind, for
/// every open request while time and requests last (the next run goes on).
pub fn tick(s: &Settings, holder: &str) -> Result<String> {
    let mut t = Tick::default();
    for id in store::open_ids()? {
        if invocation::remaining_requests() <= 4
            || invocation::remaining() < std::time::Duration::from_secs(3)
        {
            t.deferred += 1;
            continue;
        }
        // A request a callback is changing right now waits for the next run.
        let Some(lease) = store::lock(&id, holder, std::time::Duration::ZERO)? else {
            t.deferred += 1;
            continue;
        };
        let Some(mut r) = store::load(&id)? else {
            lease.release()?;
            continue;
        };
        // A crash after a request ended and before its open marker went:
        // saving it again removes the marker.
        if !r.is_open() {
            store::save(&r)?;
            lease.release()?;
            continue;
        }
        let events = r.history.len();
        let step = (|| -> Result<()> {
            if r.status == PENDING && !r.forwarded {
                forward(s, &mut r)?;
                if r.forwarded {
                    t.forwarded += 1;
                }
            }
            if r.status == PENDING && r.decision.is_some() {
                dispatch(s, &mut r)?;
                if r.dispatched_ms.is_some() {
                    t.dispatched += 1;
                }
            } else if r.status == PENDING && age(s, &mut r)? {
                t.aged += 1;
            } else if r.status == DISPATCHED {
                follow_install(s, &mut r)?;
                if r.status != DISPATCHED {
                    t.settled += 1;
                }
            }
            Ok(())
        })();
        // A step that could not talk to its system leaves the request as it
        // was, with the reason; the next run tries again.
        if let Err(e) = step {
            r.error = Some(e.message().to_owned());
            store::save(&r)?;
        }
        if r.error.is_some() && r.history.len() == events {
            t.failed += 1;
        }
        lease.release()?;
    }
    let f = slack::flush(now_ms())?;
    Ok(format!(
        "forwarded {}, installs sent {}, installs settled {}, expired or reminded {}, failed {}, deferred {}; \
         Slack sent {}, waiting {}, refused {}",
        t.forwarded,
        t.dispatched,
        t.settled,
        t.aged,
        t.failed,
        t.deferred,
        f.sent,
        f.waiting,
        f.refused
    ))
}

/// A request as actions show it.
pub fn view(r: &Request) -> Value {
    json!({
        "request_id": r.id,
        "status": r.status,
        "requester": r.requester,
        "domain": r.domain,
        "device": r.device,
        "app": r.app,
        "notes": r.notes,
        "created_ms": r.created_ms,
        "due_ms": r.due_ms,
        "forwarded": r.forwarded,
        "servicenow": { "sys_id": r.sn_sys_id, "number": r.sn_number },
        "decision": r.decision,
        "error": r.error,
    })
}
