//! Workspace ONE UEM REST API simulator.
//!
//! Speaks what `api-facts.md` describes: Basic + `aw-tenant-code` or OAuth2
//! client credentials (`/connect/token`, expiring tokens, then Bearer),
//! `Accept: application/json[;version=N]`, `/api/` and `/API/` paths,
//! UEM error bodies `{errorCode, message, activityId}` and `X-RateLimit-*`
//! headers on every answer.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use switchyard_sim::uem::{Uem, UemConfig};
//! let uem = Uem::start(UemConfig::default(), 42, 50).await?;
//! let device = uem.devices()[0].clone();
//! // ... point a plugin at uem.url() and act on device.id ...
//! assert!(uem.commands().is_empty());
//! # Ok(()) }
//! ```
//!
//! ## Choices where the fact sheet says [U]
//! Everything the public sources do not pin down is decided here, once:
//! - `OperatingSystem` carries the OS family and version (`"iOS 17.4"`,
//!   `"Android 14"`, `"macOS 14.5"`, `"Windows 11 23H2"`, `"Linux Ubuntu
//!   22.04"`), so that the seed's family detection (contains `android`, `iOS`,
//!   `mac`, `Linux`, `windows`) applies to it; `Platform` keeps UEM's names
//!   (`Apple`, `Android`, `AppleOsX`, `WinRT`, `Linux`).
//! - Error codes: 1005 bad credentials or expired token (401); 1001 missing
//!   permission and 1002 wrong `aw-tenant-code` (403); 1000 invalid request
//!   (400); 1029 rate limited (429); 5061 device not found (404); 1006
//!   unacceptable `Accept` (406).
//! - A search that matches nothing answers 204 with an empty body.
//! - Bodies: change passcode `{"Passcode"}`; find device `{"Platform",
//!   "NumberOfRepetitions", "GapBetweenRepetitions"}`; request device log
//!   `{"Source": "Agent|System|Network", "Level", "Duration"}` (minutes,
//!   at most 720); notes `{"DeviceId", "Note"}` → `{"EntityId"}`, listed as
//!   `{"DeviceNotes": [{"Id", "DeviceId", "Note", "CreatedOn", "CreatedBy"}]}`.
//! - Recovery keys: FileVault `{"RecoveryKey"}`; BitLocker drives
//!   `{"Drives": [{"VolumeId", "VolumeType", "EncryptionStatus"}]}` and
//!   protectors `{"Protectors": [{"Id", "Type", "RecoveryPassword"}]}`.
//! - Tag membership changes answer UEM's bulk shape `{"TotalItems",
//!   "AcceptedItems", "FailedItems", "Faults": {"Fault": [...]}}`; an
//!   unknown device is a fault with code 5061, a device locked with
//!   [`Uem::lock_tags`] one with code 1001 (no permission).
//! - Smart group members: `{"Devices": [device...]}`.
//! - Rate limit: a fixed window per minute (default 600 requests).
//! - Whether a Bearer call also needs `aw-tenant-code`: not required, but
//!   checked when sent.
//! - App catalog (MAM): `GET /api/mam/apps/{internal|public|purchased}/{id}`
//!   answers `{"Id": {"Value"}, "ApplicationName", "BundleId", "AppVersion",
//!   "Platform", "AppType", "Status", "RequireApprovalToInstall"}` (the last
//!   stands for the assignment setting "Require Approval To Install"); an
//!   unknown id, or one of another type, answers 404 with errorCode 1000.
//! - Install: `POST /api/mam/apps/{type}/{id}/install` takes `{"DeviceId"}`
//!   (or `"SerialNumber"`, `"Udid"`, `"MacAddress"`) and answers 202 with an
//!   empty body; the app appears in the device's apps as `"Status":
//!   "Pending Install"` and becomes `"Installed"` (or `"Failed"` for the
//!   ids in [`UemConfig::failing_apps`]) after [`UemConfig::install_reads`]
//!   reads of that device's apps.
//! - Device registration: `POST /api/system/users/{id}/registerdevice` with
//!   `{"FriendlyName", "Ownership": "C|E|S", "PlatformId", "SerialNumber"?,
//!   "MessageType"}` answers `{"Value": <registration id>}`; user ids are
//!   those `users/search` returns.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};

use crate::common::{
    self, Control, Flavor, RateLimit, SimServer, Tokens, basic_credentials, bearer_token,
};

/// Accounts, limits and behaviour of the simulated tenant.
#[derive(Debug, Clone)]
pub struct UemConfig {
    /// Basic-auth API admin user.
    pub username: String,
    /// Its password.
    pub password: String,
    /// The REST API key sent as `aw-tenant-code`.
    pub tenant_code: String,
    /// OAuth2 client id.
    pub client_id: String,
    /// OAuth2 client secret.
    pub client_secret: String,
    /// Lifetime of issued tokens (UEM: one hour).
    pub token_lifetime_secs: i64,
    /// Reported by `/api/system/info`.
    pub product_version: String,
    /// Requests per minute before 429.
    pub rate_limit_per_minute: u32,
    /// Commands the API admin lacks permission for (answered 403).
    pub denied_commands: Vec<String>,
    /// Reads of a device's apps after which a pending install settles.
    pub install_reads: u32,
    /// Catalog app ids whose installs fail.
    pub failing_apps: Vec<i64>,
    /// The field a FileVault key comes in (`RecoveryKey`; another name
    /// stands for an API version whose answer a client does not know).
    pub recovery_key_field: String,
}

impl Default for UemConfig {
    fn default() -> Self {
        Self {
            username: "api-admin".into(),
            password: "uem-password".into(),
            tenant_code: "uem-tenant-code".into(),
            client_id: "uem-client".into(),
            client_secret: "uem-client-secret".into(),
            token_lifetime_secs: 3600,
            product_version: "24.10.0.7".into(),
            rate_limit_per_minute: 600,
            denied_commands: Vec::new(),
            install_reads: 2,
            failing_apps: Vec::new(),
            recovery_key_field: "RecoveryKey".into(),
        }
    }
}

/// An organization group.
#[derive(Debug, Clone, Serialize)]
pub struct OrgGroup {
    /// Numeric id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// UUID.
    pub uuid: String,
    /// Parent group, if any.
    pub parent: Option<i64>,
}

/// A note on a device.
#[derive(Debug, Clone, Serialize)]
pub struct Note {
    /// Id.
    pub id: i64,
    /// Text.
    pub note: String,
    /// Creation time (UEM's local timestamp format).
    pub created_on: String,
    /// The API user that wrote it.
    pub created_by: String,
}

/// An application on a device.
#[derive(Debug, Clone, Serialize)]
pub struct App {
    /// Display name.
    pub name: String,
    /// Bundle or package id.
    pub identifier: String,
    /// Version.
    pub version: String,
    /// Managed by UEM.
    pub managed: bool,
    /// `Installed`, `Pending Install` or `Failed`.
    pub status: String,
    /// Reads of the device's apps left before a pending install settles.
    #[serde(skip)]
    pub settles_in: u32,
}

/// An application in the UEM catalog.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogApp {
    /// `Id.Value`.
    pub id: i64,
    /// `internal`, `public` or `purchased` (the path segment).
    pub kind: String,
    /// `ApplicationName`.
    pub name: String,
    /// `BundleId` (package id).
    pub bundle_id: String,
    /// `AppVersion`.
    pub version: String,
    /// `Platform` (UEM's names).
    pub platform: String,
    /// The assignment's "Require Approval To Install".
    pub requires_approval: bool,
}

/// An install the simulator accepted.
#[derive(Debug, Clone, Serialize)]
pub struct Install {
    /// Catalog app id.
    pub app_id: i64,
    /// Device id it resolved to.
    pub device_id: i64,
    /// The request body.
    pub body: Value,
}

/// A managed device.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    /// `Id.Value`.
    pub id: i64,
    /// `Uuid`.
    pub uuid: String,
    /// `Udid`.
    pub udid: String,
    /// `SerialNumber`.
    pub serial: String,
    /// `MacAddress`.
    pub mac: String,
    /// `Imei`.
    pub imei: String,
    /// `EasId`.
    pub eas_id: String,
    /// `UserName`.
    pub user_name: String,
    /// `UserEmailAddress`.
    pub user_email: String,
    /// `Platform` (UEM's names).
    pub platform: String,
    /// `OperatingSystem` (family and version, see the module docs).
    pub os: String,
    /// `Model`.
    pub model: String,
    /// Organization group id.
    pub group: i64,
    /// `LastSeen`.
    pub last_seen: String,
    /// `EnrollmentStatus`.
    pub enrollment: String,
    /// `ComplianceStatus`.
    pub compliance: String,
    /// Notes written on it.
    pub notes: Vec<Note>,
    /// Installed apps.
    pub apps: Vec<App>,
    /// FileVault personal recovery key (macOS).
    pub filevault_key: Option<String>,
    /// BitLocker recovery passwords by volume (Windows).
    pub bitlocker: Vec<(String, String)>,
}

/// A command the simulator accepted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Command {
    /// Device it targets.
    pub device_id: i64,
    /// `Lock`, `SoftReset`, …, `FindDevice`, `ChangePasscode`,
    /// `RequestDeviceLog`, `SendMessage`.
    pub command: String,
    /// The request body (JSON), `Null` if none.
    pub body: Value,
}

/// A tag.
#[derive(Debug, Clone, Serialize)]
pub struct Tag {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Organization group it was created in.
    pub group: i64,
    /// Tagged device ids.
    pub devices: Vec<i64>,
}

/// A smart group.
#[derive(Debug, Clone, Serialize)]
pub struct SmartGroup {
    /// `SmartGroupID`.
    pub id: i64,
    /// Name.
    pub name: String,
    /// UUID.
    pub uuid: String,
    /// Member device ids.
    pub devices: Vec<i64>,
}

#[derive(Default, Serialize)]
struct Data {
    groups: Vec<OrgGroup>,
    smart_groups: Vec<SmartGroup>,
    devices: BTreeMap<i64, Device>,
    tags: Vec<Tag>,
    commands: Vec<Command>,
    registrations: Vec<Registration>,
    catalog: Vec<CatalogApp>,
    installs: Vec<Install>,
    next_id: i64,
    /// Devices whose tag membership the API account may not change.
    tag_locked: std::collections::HashSet<i64>,
}

/// A device registration (Add Device) the simulator accepted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Registration {
    /// Registration id returned.
    pub id: i64,
    /// The user it is for (`users/search` id).
    pub user_id: i64,
    /// That user's email.
    pub email: String,
    /// The request body.
    pub body: Value,
}

struct Sim {
    cfg: UemConfig,
    data: Mutex<Data>,
    tokens: Arc<Tokens>,
    limit: RateLimit,
}

/// Commands `/commands?command=` accepts.
pub const COMMANDS: &[&str] = &[
    "Lock",
    "EnterpriseWipe",
    "DeviceWipe",
    "DeviceQuery",
    "ClearPasscode",
    "SyncDevice",
    "SoftReset",
    "Shutdown",
    "EnterpriseReset",
    "ScheduleOsUpdate",
    "StopAirPlay",
];

/// A running UEM simulator.
pub struct Uem {
    server: SimServer,
    sim: Arc<Sim>,
    control: Arc<Control>,
}

struct UemFlavor;

fn uem_error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "errorCode": code,
            "message": message,
            "activityId": common::random_token(8).to_lowercase() + "-" + &common::random_token(4).to_lowercase(),
        })),
    )
        .into_response()
}

impl Flavor for UemFlavor {
    fn error(&self, status: StatusCode, message: &str) -> Response {
        let code = match status.as_u16() {
            401 => 1005,
            403 => 1001,
            404 => 5061,
            429 => 1029,
            _ => 1000,
        };
        uem_error(status, code, message)
    }

    fn rate_limited(&self, retry_after_secs: u64) -> Response {
        let mut r = uem_error(
            StatusCode::TOO_MANY_REQUESTS,
            1029,
            "The request rate limit has been exceeded.",
        );
        let reset = common::now_secs() + retry_after_secs as i64;
        let h = r.headers_mut();
        h.insert("retry-after", HeaderValue::from(retry_after_secs));
        h.insert("x-ratelimit-remaining", HeaderValue::from(0));
        h.insert("x-ratelimit-reset", HeaderValue::from(reset));
        r
    }

    fn malformed(&self) -> Response {
        common::cut_json("{\"Devices\":[{\"Id\":{\"Value\":")
    }
}

const MODELS: &[(&str, &str, &str)] = &[
    ("Apple", "iOS 17.4", "iPhone 15"),
    ("Apple", "iOS 18.1", "iPad Air"),
    ("Android", "Android 14", "Pixel 8"),
    ("Android", "Android 13", "Galaxy S23"),
    ("WinRT", "Windows 11 23H2", "Latitude 7440"),
    ("AppleOsX", "macOS 14.5", "MacBook Pro"),
    ("Linux", "Linux Ubuntu 22.04", "ThinkPad X1"),
];

fn hex_upper(rng: &mut fastrand::Rng, n: usize) -> String {
    (0..n)
        .map(|_| {
            char::from_digit(rng.u32(0..16), 16)
                .unwrap()
                .to_ascii_uppercase()
        })
        .collect()
}

fn uuid(rng: &mut fastrand::Rng) -> String {
    let h = hex_upper(rng, 32).to_lowercase();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Data {
    fn generate(seed: u64, devices: usize) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut d = Data {
            next_id: 20_000,
            ..Default::default()
        };
        for (id, kind, name, bundle, version, platform, approval) in [
            (
                301,
                "internal",
                "Visual Studio Code",
                "Microsoft.VisualStudioCode",
                "1.95.3",
                "WinRT",
                true,
            ),
            (
                302,
                "public",
                "Zoom Workplace",
                "Zoom.ZoomWorkplace",
                "6.2.11",
                "WinRT",
                true,
            ),
            (
                303,
                "purchased",
                "Adobe Acrobat Pro",
                "Adobe.Acrobat.Pro",
                "24.4",
                "WinRT",
                true,
            ),
            (
                304,
                "internal",
                "Notepad++",
                "Notepad++.Notepad++",
                "8.7",
                "WinRT",
                false,
            ),
            (
                305,
                "public",
                "Slack",
                "com.tinyspeck.chatlyio",
                "24.11",
                "Apple",
                true,
            ),
        ] {
            d.catalog.push(CatalogApp {
                id,
                kind: kind.into(),
                name: name.into(),
                bundle_id: bundle.into(),
                version: version.into(),
                platform: platform.into(),
                requires_approval: approval,
            });
        }
        let root = OrgGroup {
            id: 570,
            name: "Acme".into(),
            uuid: uuid(&mut rng),
            parent: None,
        };
        d.groups.push(root);
        for (i, name) in ["Sales", "Engineering", "Field Service"].iter().enumerate() {
            d.groups.push(OrgGroup {
                id: 571 + i as i64,
                name: (*name).into(),
                uuid: uuid(&mut rng),
                parent: Some(570),
            });
        }
        let users = (devices / 2).max(1);
        for i in 0..devices {
            let person = common::person(i % users);
            let (platform, os, model) = MODELS[rng.usize(0..MODELS.len())];
            let id = 10_000 + i as i64;
            let mut apps = vec![App {
                name: "Intelligent Hub".into(),
                identifier: "com.air-watch.agent".into(),
                version: "24.10".into(),
                managed: true,
                status: "Installed".into(),
                settles_in: 0,
            }];
            if rng.bool() {
                apps.push(App {
                    name: "Outlook".into(),
                    identifier: "com.microsoft.Office.Outlook".into(),
                    version: "4.24".into(),
                    managed: true,
                    status: "Installed".into(),
                    settles_in: 0,
                });
            }
            let device = Device {
                id,
                uuid: uuid(&mut rng),
                udid: hex_upper(&mut rng, 40),
                serial: hex_upper(&mut rng, 12),
                mac: hex_upper(&mut rng, 12),
                imei: (0..15)
                    .map(|_| char::from_digit(rng.u32(0..10), 10).unwrap())
                    .collect(),
                eas_id: hex_upper(&mut rng, 20),
                user_email: person.email,
                user_name: person.user_name,
                platform: platform.into(),
                os: os.into(),
                model: model.into(),
                group: 571 + rng.i64(0..3),
                last_seen: format!(
                    "2026-11-{:02}T{:02}:{:02}:00.000",
                    rng.u32(1..22),
                    rng.u32(0..24),
                    rng.u32(0..60)
                ),
                enrollment: "Enrolled".into(),
                compliance: if rng.u32(0..10) == 0 {
                    "NonCompliant"
                } else {
                    "Compliant"
                }
                .into(),
                notes: Vec::new(),
                apps,
                filevault_key: (platform == "AppleOsX").then(|| {
                    format!(
                        "{}-{}-{}-{}-{}-{}",
                        hex_upper(&mut rng, 4),
                        hex_upper(&mut rng, 4),
                        hex_upper(&mut rng, 4),
                        hex_upper(&mut rng, 4),
                        hex_upper(&mut rng, 4),
                        hex_upper(&mut rng, 4)
                    )
                }),
                bitlocker: if platform == "WinRT" {
                    vec![(
                        "C:".into(),
                        (0..8)
                            .map(|_| format!("{:06}", rng.u32(0..1_000_000)))
                            .collect::<Vec<_>>()
                            .join("-"),
                    )]
                } else {
                    Vec::new()
                },
            };
            d.devices.insert(id, device);
        }
        let by = |p: &str| -> Vec<i64> {
            d.devices
                .values()
                .filter(|x| x.platform == p)
                .map(|x| x.id)
                .collect()
        };
        let ios = by("Apple");
        let windows = by("WinRT");
        let field: Vec<i64> = d
            .devices
            .values()
            .filter(|x| x.group == 573)
            .map(|x| x.id)
            .collect();
        for (i, (name, devices)) in [
            ("All iOS", ios),
            ("All Windows", windows),
            ("Field Devices", field),
        ]
        .into_iter()
        .enumerate()
        {
            d.smart_groups.push(SmartGroup {
                id: 90 + i as i64,
                name: name.into(),
                uuid: uuid(&mut rng),
                devices,
            });
        }
        d
    }

    fn group(&self, id: i64) -> Option<&OrgGroup> {
        self.groups.iter().find(|g| g.id == id)
    }

    fn device_json(&self, d: &Device) -> Value {
        let g = self.group(d.group);
        json!({
            "Id": {"Value": d.id},
            "Uuid": d.uuid,
            "Udid": d.udid,
            "SerialNumber": d.serial,
            "MacAddress": d.mac,
            "Imei": d.imei,
            "EasId": d.eas_id,
            "DeviceFriendlyName": format!("{} {} {}", d.user_name, d.model, &d.serial[d.serial.len() - 4..]),
            "LocationGroupId": {
                "Id": {"Value": d.group},
                "Name": g.map(|g| g.name.as_str()),
                "Uuid": g.map(|g| g.uuid.as_str()),
            },
            "LocationGroupName": g.map(|g| g.name.as_str()),
            "UserName": d.user_name,
            "UserEmailAddress": d.user_email,
            "Ownership": "C",
            "Platform": d.platform,
            "Model": d.model,
            "OperatingSystem": d.os,
            "LastSeen": d.last_seen,
            "EnrollmentStatus": d.enrollment,
            "ComplianceStatus": d.compliance,
        })
    }

    fn find_by(&self, searchby: &str, id: &str) -> Option<&Device> {
        let eq = |a: &str| a.eq_ignore_ascii_case(id);
        self.devices
            .values()
            .find(|d| match searchby.to_ascii_lowercase().as_str() {
                "deviceid" => d.id.to_string() == id,
                "serialnumber" => eq(&d.serial),
                "macaddress" => eq(&d.mac),
                "udid" => eq(&d.udid),
                "imeinumber" => eq(&d.imei),
                "easid" => eq(&d.eas_id),
                _ => false,
            })
    }

    fn by_uuid(&self, uuid: &str) -> Option<&Device> {
        self.devices
            .values()
            .find(|d| d.uuid.eq_ignore_ascii_case(uuid))
    }
}

type Q = Query<HashMap<String, String>>;
type S = State<Arc<Sim>>;

fn not_found() -> Response {
    uem_error(
        StatusCode::NOT_FOUND,
        5061,
        "Device not found for this request.",
    )
}

fn bad_request(message: impl AsRef<str>) -> Response {
    uem_error(StatusCode::BAD_REQUEST, 1000, message.as_ref())
}

fn param<'a>(q: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    q.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Sim {
    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        common::state(&self.data)
    }

    /// Records a command after the permission check.
    fn command(&self, device_id: i64, command: &str, body: Value) -> Response {
        if self
            .cfg
            .denied_commands
            .iter()
            .any(|c| c.eq_ignore_ascii_case(command))
        {
            return uem_error(
                StatusCode::FORBIDDEN,
                1001,
                &format!("Access denied: the API admin has no permission for {command}."),
            );
        }
        self.data().commands.push(Command {
            device_id,
            command: command.to_owned(),
            body,
        });
        StatusCode::ACCEPTED.into_response()
    }
}

/// Authentication, `Accept` and the rate limit, for every `/api` route.
async fn gate(State(sim): S, req: Request, next: Next) -> Response {
    let h = req.headers();
    let accept = h.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !accept.contains("application/json") {
        return uem_error(
            StatusCode::NOT_ACCEPTABLE,
            1006,
            "This simulator answers JSON only: send Accept: application/json.",
        );
    }
    if let Some(v) = accept
        .split(';')
        .find_map(|p| p.trim().strip_prefix("version="))
        && !matches!(v, "1" | "2" | "3" | "4")
    {
        return uem_error(
            StatusCode::NOT_ACCEPTABLE,
            1006,
            &format!("API version {v} is not supported (1-4)."),
        );
    }
    let tenant_code = h.get("aw-tenant-code").and_then(|v| v.to_str().ok());
    if let Some(token) = bearer_token(h) {
        if sim.tokens.check(&token).is_none() {
            return uem_error(
                StatusCode::UNAUTHORIZED,
                1005,
                "The access token is invalid or has expired.",
            );
        }
        if tenant_code.is_some_and(|c| c != sim.cfg.tenant_code) {
            return uem_error(StatusCode::FORBIDDEN, 1002, "Invalid aw-tenant-code.");
        }
    } else if let Some((u, p)) = basic_credentials(h) {
        if u != sim.cfg.username || p != sim.cfg.password {
            return uem_error(
                StatusCode::UNAUTHORIZED,
                1005,
                "User credentials are invalid.",
            );
        }
        if tenant_code != Some(sim.cfg.tenant_code.as_str()) {
            return uem_error(
                StatusCode::FORBIDDEN,
                1002,
                "Missing or invalid aw-tenant-code.",
            );
        }
    } else {
        return uem_error(
            StatusCode::UNAUTHORIZED,
            1005,
            "Authentication required (Basic with aw-tenant-code, or Bearer).",
        );
    }
    let (verdict, reset) = sim.limit.hit();
    let limit = sim.limit.limit;
    let mut resp = match verdict {
        Ok(_) => next.run(req).await,
        Err(retry) => UemFlavor.rate_limited(retry as u64),
    };
    let h = resp.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from(limit));
    if let Ok(remaining) = verdict {
        h.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
        h.insert("x-ratelimit-reset", HeaderValue::from(reset));
    }
    resp
}

async fn token(State(sim): S, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let oauth_error = |status: StatusCode, error: &str| {
        (status, axum::Json(json!({ "error": error }))).into_response()
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    let (id, secret) = basic_credentials(&headers).unwrap_or_else(|| {
        (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        )
    });
    if id != sim.cfg.client_id || secret != sim.cfg.client_secret {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let token = sim.tokens.issue(&id, sim.cfg.token_lifetime_secs, None);
    axum::Json(json!({
        "access_token": token,
        "expires_in": sim.cfg.token_lifetime_secs,
        "token_type": "Bearer",
    }))
    .into_response()
}

async fn system_info(State(sim): S) -> Response {
    axum::Json(json!({
        "ProductVersion": sim.cfg.product_version,
        "ProductName": "Workspace ONE UEM",
        "Environment": "Simulator",
    }))
    .into_response()
}

fn numeric(id: &str) -> Option<i64> {
    id.parse().ok()
}

async fn device(State(sim): S, Path(id): Path<String>) -> Response {
    let data = sim.data();
    match numeric(&id).and_then(|i| data.devices.get(&i)) {
        Some(d) => axum::Json(data.device_json(d)).into_response(),
        None => not_found(),
    }
}

async fn device_by(State(sim): S, Path((by, value)): Path<(String, String)>) -> Response {
    if !matches!(by.to_ascii_lowercase().as_str(), "udid" | "serialnumber") {
        return uem_error(StatusCode::NOT_FOUND, 1000, "Resource not found.");
    }
    let data = sim.data();
    match data.find_by(&by, &value) {
        Some(d) => axum::Json(data.device_json(d)).into_response(),
        None => not_found(),
    }
}

async fn device_by_alternate(State(sim): S, Query(q): Q) -> Response {
    let (Some(by), Some(id)) = (param(&q, "searchby"), param(&q, "id")) else {
        return bad_request("searchby and id are required.");
    };
    if !matches!(
        by.to_ascii_lowercase().as_str(),
        "serialnumber" | "macaddress" | "udid" | "imeinumber" | "easid"
    ) {
        return bad_request(format!("Invalid searchby value {by}."));
    }
    let data = sim.data();
    match data.find_by(by, id) {
        Some(d) => axum::Json(data.device_json(d)).into_response(),
        None => not_found(),
    }
}

async fn search(State(sim): S, Query(q): Q) -> Response {
    let page: usize = param(&q, "page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let size: usize = param(&q, "pagesize")
        .and_then(|p| p.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(500);
    let data = sim.data();
    let matches: Vec<&Device> = data
        .devices
        .values()
        .filter(|d| param(&q, "user").is_none_or(|u| d.user_name.eq_ignore_ascii_case(u)))
        .filter(|d| param(&q, "platform").is_none_or(|p| d.platform.eq_ignore_ascii_case(p)))
        .filter(|d| {
            param(&q, "lgid")
                .and_then(|g| g.parse::<i64>().ok())
                .is_none_or(|g| d.group == g || (g == 570))
        })
        .collect();
    if matches.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let devices: Vec<Value> = matches
        .iter()
        .skip(page * size)
        .take(size)
        .map(|d| data.device_json(d))
        .collect();
    axum::Json(json!({
        "Devices": devices, "Page": page, "PageSize": size, "Total": matches.len(),
    }))
    .into_response()
}

async fn users_search(State(sim): S, Query(q): Q) -> Response {
    let data = sim.data();
    let mut users: BTreeMap<&str, &Device> = BTreeMap::new();
    for d in data.devices.values() {
        users.entry(d.user_name.as_str()).or_insert(d);
    }
    let found: Vec<Value> = users
        .values()
        .filter(|d| param(&q, "email").is_none_or(|e| d.user_email.eq_ignore_ascii_case(e)))
        .filter(|d| param(&q, "username").is_none_or(|u| d.user_name.eq_ignore_ascii_case(u)))
        .map(|d| {
            let (first, last) = d.user_name.split_once('.').unwrap_or((&d.user_name, ""));
            json!({
                "Id": {"Value": 5000 + d.id},
                "UserName": d.user_name,
                "FirstName": first,
                "LastName": last,
                "Email": d.user_email,
                "Status": true,
                "LocationGroupId": d.group.to_string(),
            })
        })
        .collect();
    if found.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let total = found.len();
    axum::Json(json!({"Users": found, "Page": 0, "PageSize": 500, "Total": total})).into_response()
}

fn known_command(c: &str) -> Option<&'static str> {
    COMMANDS.iter().copied().find(|k| k.eq_ignore_ascii_case(c))
}

async fn command_by_id(State(sim): S, Path(id): Path<String>, Query(q): Q) -> Response {
    let Some(c) = param(&q, "command") else {
        return bad_request("The command parameter is required.");
    };
    let Some(c) = known_command(c) else {
        return bad_request(format!("Invalid command {c}."));
    };
    let Some(id) = numeric(&id).filter(|i| sim.data().devices.contains_key(i)) else {
        return not_found();
    };
    sim.command(id, c, Value::Null)
}

async fn command_by_alternate(State(sim): S, Query(q): Q) -> Response {
    let (Some(c), Some(by), Some(value)) =
        (param(&q, "command"), param(&q, "searchby"), param(&q, "id"))
    else {
        return bad_request("command, searchBy and id are required.");
    };
    let Some(c) = known_command(c) else {
        return bad_request(format!("Invalid command {c}."));
    };
    let Some(id) = sim.data().find_by(by, value).map(|d| d.id) else {
        return not_found();
    };
    sim.command(id, c, Value::Null)
}

fn json_body(body: &Bytes) -> Result<Value, Response> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("The request body is not valid JSON: {e}")))
}

async fn find_device(State(sim): S, Path(id): Path<String>, body: Bytes) -> Response {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(id) = numeric(&id).filter(|i| sim.data().devices.contains_key(i)) else {
        return not_found();
    };
    sim.command(id, "FindDevice", body)
}

async fn change_passcode(State(sim): S, Path(id): Path<String>, body: Bytes) -> Response {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(id) = numeric(&id).filter(|i| sim.data().devices.contains_key(i)) else {
        return not_found();
    };
    if !body["Passcode"].is_string() {
        return bad_request("Passcode is required.");
    }
    sim.command(id, "ChangePasscode", body)
}

async fn request_log(State(sim): S, Query(q): Q, body: Bytes) -> Response {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (Some(by), Some(value)) = (param(&q, "searchby"), param(&q, "id")) else {
        return bad_request("searchby and id are required.");
    };
    if let Some(d) = body["Duration"].as_i64()
        && !(1..=720).contains(&d)
    {
        return bad_request("Duration must be between 1 and 720 minutes.");
    }
    if let Some(s) = body["Source"].as_str()
        && !matches!(s, "Agent" | "System" | "Network")
    {
        return bad_request(format!("Invalid Source {s}."));
    }
    let Some(id) = sim.data().find_by(by, value).map(|d| d.id) else {
        return not_found();
    };
    sim.command(id, "RequestDeviceLog", body)
}

async fn push_message(State(sim): S, Query(q): Q, body: Bytes) -> Response {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (Some(by), Some(value)) = (param(&q, "searchby"), param(&q, "id")) else {
        return bad_request("searchby and id are required.");
    };
    if !body["MessageBody"].is_string() {
        return bad_request("MessageBody is required.");
    }
    let Some(id) = sim.data().find_by(by, value).map(|d| d.id) else {
        return not_found();
    };
    sim.command(id, "SendMessage", body)
}

async fn notes(State(sim): S, Path(id): Path<String>) -> Response {
    let data = sim.data();
    let Some(d) = numeric(&id).and_then(|i| data.devices.get(&i)) else {
        return not_found();
    };
    let notes: Vec<Value> = d
        .notes
        .iter()
        .map(|n| {
            json!({
                "Id": {"Value": n.id}, "DeviceId": d.id, "Note": n.note,
                "CreatedOn": n.created_on, "CreatedBy": n.created_by,
            })
        })
        .collect();
    axum::Json(json!({ "DeviceNotes": notes })).into_response()
}

async fn add_note(
    State(sim): S,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(text) = body["Note"].as_str() else {
        return bad_request("Note is required.");
    };
    let by = basic_credentials(&headers)
        .map(|(u, _)| u)
        .unwrap_or_else(|| sim.cfg.client_id.clone());
    let mut data = sim.data();
    data.next_id += 1;
    let note_id = data.next_id;
    let Some(d) = numeric(&id).and_then(|i| data.devices.get_mut(&i)) else {
        return not_found();
    };
    d.notes.push(Note {
        id: note_id,
        note: text.to_owned(),
        created_on: timestamp(),
        created_by: by,
    });
    axum::Json(json!({ "EntityId": note_id })).into_response()
}

fn timestamp() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]"
        ))
        .unwrap_or_default()
}

async fn apps(State(sim): S, Path(id): Path<String>) -> Response {
    let failing = sim.cfg.failing_apps.clone();
    let mut data = sim.data();
    let catalog = data.catalog.clone();
    let Some(d) = numeric(&id).and_then(|i| data.devices.get_mut(&i)) else {
        return not_found();
    };
    let apps: Vec<Value> = d
        .apps
        .iter_mut()
        .map(|a| {
            if a.status == "Pending Install" {
                if a.settles_in == 0 {
                    let fails = catalog
                        .iter()
                        .any(|c| c.bundle_id == a.identifier && failing.contains(&c.id));
                    a.status = if fails { "Failed" } else { "Installed" }.into();
                } else {
                    a.settles_in -= 1;
                }
            }
            json!({
                "ApplicationName": a.name, "ApplicationIdentifier": a.identifier,
                "Version": a.version, "IsManaged": a.managed, "Status": a.status,
            })
        })
        .collect();
    let total = apps.len();
    axum::Json(json!({"DeviceApps": apps, "Page": 0, "PageSize": 500, "Total": total}))
        .into_response()
}

fn catalog_json(a: &CatalogApp) -> Value {
    let kind = match a.kind.as_str() {
        "internal" => "Internal",
        "public" => "Public",
        _ => "Purchased",
    };
    json!({
        "Id": {"Value": a.id}, "ApplicationName": a.name, "BundleId": a.bundle_id,
        "AppVersion": a.version, "Platform": a.platform, "AppType": kind,
        "Status": "Active", "RequireApprovalToInstall": a.requires_approval,
    })
}

fn find_app<'a>(data: &'a Data, kind: &str, id: &str) -> Option<&'a CatalogApp> {
    let id = numeric(id)?;
    data.catalog.iter().find(|a| a.id == id && a.kind == kind)
}

fn app_not_found() -> Response {
    uem_error(
        StatusCode::NOT_FOUND,
        1000,
        "The requested application was not found.",
    )
}

async fn catalog_app(State(sim): S, Path((kind, id)): Path<(String, String)>) -> Response {
    let data = sim.data();
    match find_app(&data, &kind, &id) {
        Some(a) => axum::Json(catalog_json(a)).into_response(),
        None => app_not_found(),
    }
}

async fn install_app(
    State(sim): S,
    Path((kind, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return uem_error(
            StatusCode::BAD_REQUEST,
            1000,
            "The request body is not JSON.",
        );
    };
    let reads = sim.cfg.install_reads;
    let mut data = sim.data();
    let Some(app) = find_app(&data, &kind, &id).cloned() else {
        return app_not_found();
    };
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let device = if let Some(n) = body.get("DeviceId").and_then(Value::as_i64) {
        data.devices.get(&n)
    } else if let Some(serial) = text("SerialNumber") {
        data.devices.values().find(|d| d.serial == serial)
    } else if let Some(udid) = text("Udid") {
        data.devices.values().find(|d| d.udid == udid)
    } else if let Some(mac) = text("MacAddress") {
        data.devices.values().find(|d| d.mac == mac)
    } else {
        return uem_error(
            StatusCode::BAD_REQUEST,
            1000,
            "One of DeviceId, SerialNumber, Udid or MacAddress is required.",
        );
    };
    let Some(device_id) = device.map(|d| d.id) else {
        return not_found();
    };
    data.installs.push(Install {
        app_id: app.id,
        device_id,
        body,
    });
    let Some(d) = data.devices.get_mut(&device_id) else {
        return not_found();
    };
    d.apps.retain(|a| a.identifier != app.bundle_id);
    d.apps.push(App {
        name: app.name,
        identifier: app.bundle_id,
        version: app.version,
        managed: true,
        status: "Pending Install".into(),
        settles_in: reads,
    });
    StatusCode::ACCEPTED.into_response()
}

async fn recovery_key(State(sim): S, Path(uuid): Path<String>) -> Response {
    let data = sim.data();
    let Some(d) = data.by_uuid(&uuid) else {
        return not_found();
    };
    match &d.filevault_key {
        Some(k) => {
            let mut body = serde_json::Map::new();
            body.insert(sim.cfg.recovery_key_field.clone(), json!(k));
            axum::Json(Value::Object(body)).into_response()
        }
        None => uem_error(
            StatusCode::NOT_FOUND,
            5061,
            "No FileVault recovery key is escrowed for this device.",
        ),
    }
}

async fn bitlocker_drives(State(sim): S, Path(uuid): Path<String>) -> Response {
    let data = sim.data();
    let Some(d) = data.by_uuid(&uuid) else {
        return not_found();
    };
    let drives: Vec<Value> = d
        .bitlocker
        .iter()
        .map(|(v, _)| json!({"VolumeId": v, "VolumeType": "OperatingSystem", "EncryptionStatus": "Encrypted"}))
        .collect();
    axum::Json(json!({ "Drives": drives })).into_response()
}

async fn bitlocker_protectors(
    State(sim): S,
    Path((uuid, volume)): Path<(String, String)>,
) -> Response {
    let data = sim.data();
    let Some(d) = data.by_uuid(&uuid) else {
        return not_found();
    };
    match d.bitlocker.iter().find(|(v, _)| *v == volume) {
        Some((_, key)) => axum::Json(json!({"Protectors": [{
            "Id": format!("{{{}}}", d.uuid.to_uppercase()),
            "Type": "RecoveryPassword",
            "RecoveryPassword": key,
        }]}))
        .into_response(),
        None => uem_error(
            StatusCode::NOT_FOUND,
            5061,
            "Volume not found for this device.",
        ),
    }
}

async fn device_tags(State(sim): S, Path(uuid): Path<String>) -> Response {
    let data = sim.data();
    let Some(d) = data.by_uuid(&uuid) else {
        return not_found();
    };
    let tags: Vec<Value> = data
        .tags
        .iter()
        .filter(|t| t.devices.contains(&d.id))
        .map(|t| json!({"TagId": {"Value": t.id}, "TagName": t.name}))
        .collect();
    axum::Json(json!({ "Tag": tags })).into_response()
}

async fn add_tag(State(sim): S, body: Bytes) -> Response {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (Some(name), Some(group)) = (
        body["TagName"].as_str(),
        body["LocationGroupId"].as_i64().or_else(|| {
            body["LocationGroupId"]
                .as_str()
                .and_then(|s| s.parse().ok())
        }),
    ) else {
        return bad_request("TagName and LocationGroupId are required.");
    };
    let mut data = sim.data();
    if data.group(group).is_none() {
        return bad_request(format!("Organization group {group} does not exist."));
    }
    if data.tags.iter().any(|t| t.name == name && t.group == group) {
        return bad_request(format!("Tag {name} already exists."));
    }
    data.next_id += 1;
    let id = data.next_id;
    data.tags.push(Tag {
        id,
        name: name.to_owned(),
        group,
        devices: Vec::new(),
    });
    axum::Json(json!({ "Value": id })).into_response()
}

async fn tag_search(State(sim): S, Query(q): Q) -> Response {
    let data = sim.data();
    let tags: Vec<Value> = data
        .tags
        .iter()
        .filter(|t| param(&q, "name").is_none_or(|n| t.name.to_lowercase().contains(&n.to_lowercase())))
        .filter(|t| {
            param(&q, "organizationgroupid")
                .and_then(|g| g.parse::<i64>().ok())
                .is_none_or(|g| t.group == g)
        })
        .map(|t| {
            json!({"Id": {"Value": t.id}, "TagName": t.name, "LocationGroupId": t.group, "TagType": 1})
        })
        .collect();
    if tags.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let total = tags.len();
    axum::Json(json!({"Tags": tags, "Page": 0, "PageSize": 500, "Total": total})).into_response()
}

async fn tag_members(State(sim): S, Path((tag, op)): Path<(i64, String)>, body: Bytes) -> Response {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(ids) = body["BulkValues"]["Value"].as_array() else {
        return bad_request("BulkValues.Value is required.");
    };
    let ids: Vec<i64> = ids
        .iter()
        .filter_map(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .collect();
    let mut data = sim.data();
    let known: Vec<bool> = ids.iter().map(|i| data.devices.contains_key(i)).collect();
    let data_locked = data.tag_locked.clone();
    let Some(t) = data.tags.iter_mut().find(|t| t.id == tag) else {
        return uem_error(StatusCode::NOT_FOUND, 1000, "Tag not found.");
    };
    if op != "adddevices" && op != "removedevices" {
        return bad_request(format!("Unknown tag operation {op}."));
    }
    // Sets, not scans per item: a tag may hold 100,000 devices.
    let mut has: std::collections::HashSet<i64> = t.devices.iter().copied().collect();
    let mut removed = std::collections::HashSet::new();
    let mut faults = Vec::new();
    for (id, ok) in ids.iter().zip(known) {
        if !ok {
            faults.push(json!({"ItemValue": id.to_string(), "ErrorCode": 5061, "Message": "Device not found."}));
        } else if data_locked.contains(id) {
            faults.push(json!({"ItemValue": id.to_string(), "ErrorCode": 1001, "Message": "The API account lacks permission over this device's organization group."}));
        } else if op == "adddevices" {
            if has.insert(*id) {
                t.devices.push(*id);
            }
        } else if has.remove(id) {
            removed.insert(*id);
        }
    }
    if !removed.is_empty() {
        t.devices.retain(|d| !removed.contains(d));
    }
    axum::Json(json!({
        "TotalItems": ids.len(),
        "AcceptedItems": ids.len() - faults.len(),
        "FailedItems": faults.len(),
        "Faults": {"Fault": faults},
    }))
    .into_response()
}

async fn groups_search(State(sim): S, Query(q): Q) -> Response {
    let data = sim.data();
    let groups: Vec<Value> = data
        .groups
        .iter()
        .filter(|g| {
            param(&q, "name").is_none_or(|n| g.name.to_lowercase().contains(&n.to_lowercase()))
        })
        .map(|g| {
            json!({
                "Id": {"Value": g.id}, "Name": g.name, "Uuid": g.uuid,
                "GroupId": g.name.to_lowercase().replace(' ', ""),
                "ParentLocationGroup": g.parent.map(|p| json!({"Id": {"Value": p}})),
            })
        })
        .collect();
    let total = groups.len();
    axum::Json(json!({"LocationGroups": groups, "Page": 0, "PageSize": 500, "Total": total}))
        .into_response()
}

async fn smart_groups_search(State(sim): S, Query(q): Q) -> Response {
    let data = sim.data();
    let groups: Vec<Value> = data
        .smart_groups
        .iter()
        .filter(|g| {
            param(&q, "name").is_none_or(|n| g.name.to_lowercase().contains(&n.to_lowercase()))
        })
        .map(|g| {
            json!({
                "SmartGroupID": g.id, "SmartGroupUuid": g.uuid, "Name": g.name,
                "Devices": g.devices.len(), "ManagedByOrganizationGroupId": "570",
            })
        })
        .collect();
    axum::Json(json!({ "SmartGroups": groups })).into_response()
}

async fn register_device(State(sim): S, Path(user_id): Path<i64>, body: Bytes) -> Response {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !body["PlatformId"].is_i64() {
        return bad_request("PlatformId is required.");
    }
    if !body["Ownership"]
        .as_str()
        .is_some_and(|o| matches!(o, "C" | "E" | "S"))
    {
        return bad_request("Ownership must be C, E or S.");
    }
    let mut data = sim.data();
    // User ids are 5000 + the id of the user's first device (users/search).
    let Some(email) = data
        .devices
        .get(&(user_id - 5000))
        .map(|d| d.user_email.clone())
    else {
        return uem_error(StatusCode::NOT_FOUND, 1000, "User not found.");
    };
    data.next_id += 1;
    let id = data.next_id;
    data.registrations.push(Registration {
        id,
        user_id,
        email,
        body,
    });
    axum::Json(json!({ "Value": id })).into_response()
}

async fn smart_group_devices(State(sim): S, Path(id): Path<i64>) -> Response {
    let data = sim.data();
    let Some(g) = data.smart_groups.iter().find(|g| g.id == id) else {
        return uem_error(StatusCode::NOT_FOUND, 1000, "Smart group not found.");
    };
    let devices: Vec<Value> = g
        .devices
        .iter()
        .filter_map(|i| data.devices.get(i))
        .map(|d| data.device_json(d))
        .collect();
    axum::Json(json!({ "Devices": devices })).into_response()
}

fn api_routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/system/info", get(system_info))
        .route("/system/users/search", get(users_search))
        .route("/system/groups/search", get(groups_search))
        .route("/system/users/{id}/registerdevice", post(register_device))
        .route("/mdm/devices", get(device_by_alternate))
        .route("/mdm/devices/search", get(search))
        .route("/mdm/devices/commands", post(command_by_alternate))
        .route("/mdm/devices/commands/requestdevicelog", post(request_log))
        .route("/mdm/devices/messages/push", post(push_message))
        .route("/mdm/devices/{id}", get(device))
        .route("/mdm/devices/{id}/{value}", get(device_by))
        .route("/mdm/devices/{id}/commands", post(command_by_id))
        .route("/mdm/devices/{id}/commands/finddevice", post(find_device))
        .route(
            "/mdm/devices/{id}/commands/changepasscode",
            post(change_passcode),
        )
        .route("/mdm/devices/{id}/notes", get(notes).post(add_note))
        .route("/mdm/devices/{id}/apps", get(apps))
        .route("/mdm/devices/{id}/tags", get(device_tags))
        .route("/mdm/devices/{id}/security/recovery-key", get(recovery_key))
        .route("/mdm/devices/{id}/bitlocker/drives", get(bitlocker_drives))
        .route(
            "/mdm/devices/{id}/bitlocker/drives/{volume}/protectors",
            get(bitlocker_protectors),
        )
        .route("/mdm/tags/addtag", post(add_tag))
        .route("/mdm/tags/search", get(tag_search))
        .route("/mdm/tags/{tag}/{op}", post(tag_members))
        .route("/mdm/smartgroups/search", get(smart_groups_search))
        .route("/mam/apps/{kind}/{id}", get(catalog_app))
        .route("/mam/apps/{kind}/{id}/install", post(install_app))
        .route("/mdm/smartgroups/{id}/devices", get(smart_group_devices))
}

impl Uem {
    /// Starts a simulator on a free loopback port with `devices` generated
    /// devices (deterministic for `seed`).
    pub async fn start(cfg: UemConfig, seed: u64, devices: usize) -> std::io::Result<Self> {
        Self::start_on(cfg, seed, devices, common::loopback()).await
    }

    /// Like [`Uem::start`] over HTTPS with a certificate chain and key in
    /// PEM (a UEM whose certificate a private CA signed).
    pub async fn start_tls(
        cfg: UemConfig,
        seed: u64,
        devices: usize,
        cert_pem: &str,
        key_pem: &str,
    ) -> std::io::Result<Self> {
        Self::serve(
            cfg,
            seed,
            devices,
            common::loopback(),
            Some((cert_pem, key_pem)),
        )
        .await
    }

    /// Like [`Uem::start`] on a given address.
    pub async fn start_on(
        cfg: UemConfig,
        seed: u64,
        devices: usize,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<Self> {
        Self::serve(cfg, seed, devices, addr, None).await
    }

    async fn serve(
        cfg: UemConfig,
        seed: u64,
        devices: usize,
        addr: std::net::SocketAddr,
        tls: Option<(&str, &str)>,
    ) -> std::io::Result<Self> {
        let sim = Arc::new(Sim {
            limit: RateLimit::new(cfg.rate_limit_per_minute, 60),
            cfg,
            data: Mutex::new(Data::generate(seed, devices)),
            tokens: Arc::new(Tokens::default()),
        });
        let control = Arc::new(Control::default());
        control.expires(sim.tokens.clone());
        let gated =
            |r: Router<Arc<Sim>>| r.layer(axum::middleware::from_fn_with_state(sim.clone(), gate));
        let router = Router::new()
            .nest("/api", gated(api_routes()))
            .nest("/API", gated(api_routes()))
            .route("/connect/token", post(token))
            .fallback(|| async { uem_error(StatusCode::NOT_FOUND, 1000, "Resource not found.") })
            .with_state(sim.clone());
        let s = sim.clone();
        let router = common::instrument(router, control.clone(), Arc::new(UemFlavor), move || {
            serde_json::to_value(&*s.data()).unwrap_or(Value::Null)
        });
        let server = match tls {
            Some((cert, key)) => SimServer::start_tls(router, addr, cert, key).await?,
            None => SimServer::start(router, addr).await?,
        };
        Ok(Self {
            server,
            sim,
            control,
        })
    }

    /// Base URL (`http://127.0.0.1:<port>`); the API is under `/api`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The OAuth2 token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/connect/token", self.url())
    }

    /// The configuration it runs with (accounts, limits).
    pub fn config(&self) -> &UemConfig {
        &self.sim.cfg
    }

    /// Request log and fault injection.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Every device, by id.
    pub fn devices(&self) -> Vec<Device> {
        self.sim.data().devices.values().cloned().collect()
    }

    /// One device.
    pub fn device(&self, id: i64) -> Option<Device> {
        self.sim.data().devices.get(&id).cloned()
    }

    /// Adds (or replaces) a device; its group must exist.
    pub fn put_device(&self, device: Device) {
        self.sim.data().devices.insert(device.id, device);
    }

    /// Deletes a device (as an admin deleting it in the console would):
    /// its tags go with it.
    pub fn remove_device(&self, id: i64) {
        let mut data = self.sim.data();
        data.devices.remove(&id);
        for t in &mut data.tags {
            t.devices.retain(|d| *d != id);
        }
    }

    /// Makes the tag membership of `ids` unchangeable: a bulk add or
    /// remove refuses them with fault 1001, as for an API account without
    /// permission over their organization group. An empty list lifts it.
    pub fn lock_tags(&self, ids: &[i64]) {
        self.sim.data().tag_locked = ids.iter().copied().collect();
    }

    /// Changes every device with `f` (say, to spread a large fleet over
    /// groups made with [`Uem::put_group`]).
    pub fn update_devices(&self, mut f: impl FnMut(&mut Device)) {
        self.sim.data().devices.values_mut().for_each(&mut f);
    }

    /// Adds (or replaces) an organization group.
    pub fn put_group(&self, group: OrgGroup) {
        let mut data = self.sim.data();
        data.groups.retain(|g| g.id != group.id);
        data.groups.push(group);
    }

    /// Deletes every tag (to run a second client from the same start).
    pub fn clear_tags(&self) {
        self.sim.data().tags.clear();
    }

    /// Commands accepted so far, oldest first.
    pub fn commands(&self) -> Vec<Command> {
        self.sim.data().commands.clone()
    }

    /// Device registrations (Add Device) accepted so far.
    pub fn registrations(&self) -> Vec<Registration> {
        self.sim.data().registrations.clone()
    }

    /// Tags and their devices.
    pub fn tags(&self) -> Vec<Tag> {
        self.sim.data().tags.clone()
    }

    /// Organization groups.
    pub fn groups(&self) -> Vec<OrgGroup> {
        self.sim.data().groups.clone()
    }

    /// Smart groups.
    pub fn smart_groups(&self) -> Vec<SmartGroup> {
        self.sim.data().smart_groups.clone()
    }

    /// Expires every issued token now.
    pub fn expire_tokens(&self) {
        self.sim.tokens.expire_all();
    }

    /// The app catalog.
    pub fn catalog(&self) -> Vec<CatalogApp> {
        self.sim.data().catalog.clone()
    }

    /// Installs accepted so far, oldest first.
    pub fn installs(&self) -> Vec<Install> {
        self.sim.data().installs.clone()
    }
}
