//! Mobile threat defense service simulator.
//!
//! The vendor's device API is not public (`api-facts.md`), so this module
//! *defines* a small one, and this documentation is its specification:
//!
//! | request | answer |
//! |---|---|
//! | `PUT /api/v1/devices/{id}` JSON `{udid, serial, platform, os_version, model, name, owner_email, groups[], apps[{package, version}]}` | 201 (new) or 200 (updated) with the device; `udid` and `platform` are required, other fields omitted keep their values |
//! | `GET /api/v1/devices/{id}` | the device: the fields above plus `status` (`provisioned`, `active`, `inactive`), `risk` (`none`, `low`, `medium`, `high`), `threat_factors[]`, `updated_at` |
//! | `GET /api/v1/devices?page=N&page_size=M` | `{"devices": [...], "page", "page_size", "total", "next_page": N+1 or null}`; pages from 0, default size 100, at most 500 |
//! | `DELETE /api/v1/devices/{id}` | 204, or 404 |
//! | `POST /api/v1/devices/bulk` JSON `{"upsert": [{"id", …fields}], "delete": [id]}`, at most 500 items in all | 200 `{"results": [{"id", "op": "upsert"\|"delete", "status": 201\|200\|204\|404\|400, "error"?}]}`, one per item in order: each item is applied (or refused) on its own, as the single calls would |
//!
//! - Authentication: header `x-api-key: <key>`; otherwise 401.
//! - Errors: `{"error": {"code": "unauthorized|not_found|invalid_request|rate_limited", "message"}}`.
//! - Rate limit: 429 with `Retry-After` (seconds) past
//!   [`MtdConfig::rate_limit_per_minute`].
//! - Risk changes (made by the test with [`Mtd::set_risk`]) are POSTed to the
//!   configured webhook URL as JSON `{"event": "risk_changed", "device_id",
//!   "risk", "previous_risk", "threat_factors", "timestamp"}` with header
//!   `x-mtd-signature: sha256=<hex HMAC-SHA256 of the body>` under the
//!   webhook secret.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use switchyard_sim::mtd::{Mtd, MtdConfig};
//! let mtd = Mtd::start(MtdConfig::default()).await?;
//! // ... a plugin upserts devices at mtd.url() ...
//! assert!(mtd.devices().is_empty());
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::common::{self, Control, Flavor, RateLimit, SimServer};

/// Keys and limits.
#[derive(Debug, Clone)]
pub struct MtdConfig {
    /// Value of `x-api-key`.
    pub api_key: String,
    /// Requests per minute before 429.
    pub rate_limit_per_minute: u32,
    /// Secret that signs risk-change webhooks.
    pub webhook_secret: String,
}

impl Default for MtdConfig {
    fn default() -> Self {
        Self {
            api_key: "mtd-api-key".into(),
            rate_limit_per_minute: 600,
            webhook_secret: "mtd-webhook-secret".into(),
        }
    }
}

/// A device in the MTD inventory.
#[derive(Debug, Clone, Serialize)]
pub struct MtdDevice {
    /// The id the client chose (the UEM device id for our plugin).
    pub id: String,
    /// Fields the client sent.
    pub fields: serde_json::Map<String, Value>,
    /// `provisioned`, `active` or `inactive`.
    pub status: String,
    /// `none`, `low`, `medium` or `high`.
    pub risk: String,
    /// Threat factors.
    pub threat_factors: Vec<String>,
    /// Upserts received for it.
    pub upserts: u32,
}

/// A risk-change notification and how the receiver answered.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    /// Body sent.
    pub body: Value,
    /// Status, or the transport error.
    pub outcome: Result<u16, String>,
}

#[derive(Default, Serialize)]
struct Data {
    devices: BTreeMap<String, MtdDevice>,
    deleted: Vec<String>,
    webhook_url: Option<String>,
    notifications: Vec<Notification>,
}

struct Sim {
    cfg: MtdConfig,
    data: Mutex<Data>,
    limit: RateLimit,
}

/// A running MTD simulator.
pub struct Mtd {
    server: SimServer,
    sim: Arc<Sim>,
    control: Arc<Control>,
}

fn mtd_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

struct MtdFlavor;

impl Flavor for MtdFlavor {
    fn error(&self, status: StatusCode, message: &str) -> Response {
        let code = match status.as_u16() {
            401 => "unauthorized",
            404 => "not_found",
            400 | 422 => "invalid_request",
            _ => "internal",
        };
        mtd_error(status, code, message)
    }

    fn rate_limited(&self, retry_after_secs: u64) -> Response {
        common::with_retry_after(
            mtd_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests",
            ),
            retry_after_secs,
        )
    }

    fn malformed(&self) -> Response {
        common::cut_json("{\"devices\":[{\"id\":")
    }
}

type S = State<Arc<Sim>>;

async fn gate(State(sim): S, req: Request, next: Next) -> Response {
    let key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
    if key != Some(sim.cfg.api_key.as_str()) {
        return mtd_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong x-api-key",
        );
    }
    match sim.limit.hit().0 {
        Ok(_) => next.run(req).await,
        Err(retry) => MtdFlavor.rate_limited(retry as u64),
    }
}

/// The most items one bulk request may carry.
pub const BULK_MAX: usize = 500;

fn device_json(d: &MtdDevice) -> Value {
    let mut v = d.fields.clone();
    v.insert("id".into(), json!(d.id));
    v.insert("status".into(), json!(d.status));
    v.insert("risk".into(), json!(d.risk));
    v.insert("threat_factors".into(), json!(d.threat_factors));
    Value::Object(v)
}

const FIELDS: &[&str] = &[
    "udid",
    "serial",
    "platform",
    "os_version",
    "model",
    "name",
    "owner_email",
    "groups",
    "apps",
];

/// Checks an upsert's fields: what is wrong with them, if anything.
fn refuse_fields(fields: &serde_json::Map<String, Value>) -> Option<String> {
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Some(format!("unknown field `{unknown}`"));
    }
    ["udid", "platform"]
        .into_iter()
        .find(|r| !fields.get(*r).is_some_and(Value::is_string))
        .map(|r| format!("`{r}` is required"))
}

/// Creates or updates device `id`; true when it was new.
fn apply_upsert(data: &mut Data, id: &str, fields: serde_json::Map<String, Value>) -> bool {
    let created = !data.devices.contains_key(id);
    let d = data
        .devices
        .entry(id.to_owned())
        .or_insert_with(|| MtdDevice {
            id: id.to_owned(),
            fields: Default::default(),
            status: "provisioned".into(),
            risk: "none".into(),
            threat_factors: Vec::new(),
            upserts: 0,
        });
    // Fields sent replace theirs; fields omitted keep their values (so a
    // device sync and an app sync can each send their part).
    d.fields.extend(fields);
    d.upserts += 1;
    created
}

/// Deletes device `id`; false when there was none.
fn apply_delete(data: &mut Data, id: &str) -> bool {
    if data.devices.remove(id).is_none() {
        return false;
    }
    data.deleted.push(id.to_owned());
    true
}

async fn upsert(State(sim): S, Path(id): Path<String>, body: Bytes) -> Response {
    let fields = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => m,
        _ => {
            return mtd_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be a JSON object",
            );
        }
    };
    if let Some(why) = refuse_fields(&fields) {
        return mtd_error(StatusCode::BAD_REQUEST, "invalid_request", &why);
    }
    let mut data = common::state(&sim.data);
    let created = apply_upsert(&mut data, &id, fields);
    let body = device_json(&data.devices[&id]);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, axum::Json(body)).into_response()
}

async fn bulk(State(sim): S, body: Bytes) -> Response {
    let bad = |m: &str| mtd_error(StatusCode::BAD_REQUEST, "invalid_request", m);
    let Ok(Value::Object(mut req)) = serde_json::from_slice::<Value>(&body) else {
        return bad("the body must be a JSON object with `upsert` and/or `delete` lists");
    };
    if let Some(k) = req.keys().find(|k| *k != "upsert" && *k != "delete") {
        return bad(&format!("unknown field `{k}`"));
    }
    let list = |v: Option<Value>| match v {
        None => Some(Vec::new()),
        Some(Value::Array(a)) => Some(a),
        Some(_) => None,
    };
    let (Some(upserts), Some(deletes)) = (list(req.remove("upsert")), list(req.remove("delete")))
    else {
        return bad("`upsert` and `delete` must be lists");
    };
    if upserts.len() + deletes.len() > BULK_MAX {
        return bad(&format!("at most {BULK_MAX} items per request"));
    }
    let mut data = common::state(&sim.data);
    let mut results = Vec::with_capacity(upserts.len() + deletes.len());
    for item in upserts {
        let Value::Object(mut fields) = item else {
            results.push(
                json!({"id": null, "op": "upsert", "status": 400, "error": "not a JSON object"}),
            );
            continue;
        };
        let id = match fields.remove("id") {
            Some(Value::String(id)) if !id.is_empty() => id,
            _ => {
                results.push(
                    json!({"id": null, "op": "upsert", "status": 400, "error": "`id` is required"}),
                );
                continue;
            }
        };
        if let Some(why) = refuse_fields(&fields) {
            results.push(json!({"id": id, "op": "upsert", "status": 400, "error": why}));
            continue;
        }
        let status = if apply_upsert(&mut data, &id, fields) {
            201
        } else {
            200
        };
        results.push(json!({"id": id, "op": "upsert", "status": status}));
    }
    for id in deletes {
        let Value::String(id) = id else {
            results
                .push(json!({"id": id, "op": "delete", "status": 400, "error": "ids are strings"}));
            continue;
        };
        let status = if apply_delete(&mut data, &id) {
            204
        } else {
            404
        };
        results.push(json!({"id": id, "op": "delete", "status": status}));
    }
    axum::Json(json!({ "results": results })).into_response()
}

async fn read(State(sim): S, Path(id): Path<String>) -> Response {
    match common::state(&sim.data).devices.get(&id) {
        Some(d) => axum::Json(device_json(d)).into_response(),
        None => mtd_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no device `{id}`"),
        ),
    }
}

async fn remove(State(sim): S, Path(id): Path<String>) -> Response {
    if !apply_delete(&mut common::state(&sim.data), &id) {
        return mtd_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no device `{id}`"),
        );
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn list(State(sim): S, Query(q): Query<HashMap<String, String>>) -> Response {
    let num = |k: &str, d: usize| q.get(k).map_or(Ok(d), |v| v.parse::<usize>());
    let (Ok(page), Ok(size)) = (num("page", 0), num("page_size", 100)) else {
        return mtd_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "page and page_size must be non-negative integers",
        );
    };
    if !(1..=500).contains(&size) {
        return mtd_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "page_size must be 1-500",
        );
    }
    let data = common::state(&sim.data);
    let total = data.devices.len();
    let devices: Vec<Value> = data
        .devices
        .values()
        .skip(page * size)
        .take(size)
        .map(device_json)
        .collect();
    let next = ((page + 1) * size < total).then_some(page + 1);
    axum::Json(json!({
        "devices": devices, "page": page, "page_size": size, "total": total, "next_page": next,
    }))
    .into_response()
}

impl Mtd {
    /// Starts on a free loopback port with an empty inventory (the plugin
    /// fills it from UEM).
    pub async fn start(cfg: MtdConfig) -> std::io::Result<Self> {
        Self::start_on(cfg, common::loopback()).await
    }

    /// Like [`Mtd::start`] on a given address.
    pub async fn start_on(cfg: MtdConfig, addr: std::net::SocketAddr) -> std::io::Result<Self> {
        let sim = Arc::new(Sim {
            limit: RateLimit::new(cfg.rate_limit_per_minute, 60),
            cfg,
            data: Mutex::new(Data::default()),
        });
        let control = Arc::new(Control::default());
        let router = Router::new()
            .route("/api/v1/devices", get(list))
            .route("/api/v1/devices/bulk", axum::routing::post(bulk))
            .route("/api/v1/devices/{id}", get(read).put(upsert).delete(remove))
            .layer(axum::middleware::from_fn_with_state(sim.clone(), gate))
            .with_state(sim.clone());
        let s = sim.clone();
        let router = common::instrument(router, control.clone(), Arc::new(MtdFlavor), move || {
            serde_json::to_value(&*common::state(&s.data)).unwrap_or_default()
        });
        Ok(Self {
            server: SimServer::start(router, addr).await?,
            sim,
            control,
        })
    }

    /// Base URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &MtdConfig {
        &self.sim.cfg
    }

    /// Request log and fault injection.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// The inventory.
    pub fn devices(&self) -> Vec<MtdDevice> {
        common::state(&self.sim.data)
            .devices
            .values()
            .cloned()
            .collect()
    }

    /// Empties the inventory and the deletion log (to run a second client
    /// from the same start).
    pub fn clear(&self) {
        let mut data = common::state(&self.sim.data);
        data.devices.clear();
        data.deleted.clear();
    }

    /// Ids deleted through the API, in order.
    pub fn deleted(&self) -> Vec<String> {
        common::state(&self.sim.data).deleted.clone()
    }

    /// Sets where risk changes are sent.
    pub fn set_webhook(&self, url: &str) {
        common::state(&self.sim.data).webhook_url = Some(url.to_owned());
    }

    /// Marks a device active or inactive (the agent app checked in or not).
    pub fn set_status(&self, id: &str, status: &str) -> bool {
        match common::state(&self.sim.data).devices.get_mut(id) {
            Some(d) => {
                d.status = status.to_owned();
                true
            }
            None => false,
        }
    }

    /// Changes a device's risk and, with a webhook set, notifies it (signed).
    /// Returns the notification, if one was sent.
    pub async fn set_risk(&self, id: &str, risk: &str, factors: &[&str]) -> Option<Notification> {
        let (url, body) = {
            let mut data = common::state(&self.sim.data);
            let url = data.webhook_url.clone();
            let d = data.devices.get_mut(id)?;
            let previous = std::mem::replace(&mut d.risk, risk.to_owned());
            d.threat_factors = factors.iter().map(|f| (*f).to_owned()).collect();
            let body = json!({
                "event": "risk_changed", "device_id": id, "risk": risk, "previous_risk": previous,
                "threat_factors": factors, "timestamp": common::now_secs(),
            });
            (url?, body)
        };
        let bytes = serde_json::to_vec(&body).expect("JSON");
        let mut mac = Hmac::<Sha256>::new_from_slice(self.sim.cfg.webhook_secret.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(&bytes);
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let outcome = match reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .header("x-mtd-signature", signature)
            .body(bytes)
            .send()
            .await
        {
            Ok(r) => Ok(r.status().as_u16()),
            Err(e) => Err(e.to_string()),
        };
        let n = Notification { body, outcome };
        common::state(&self.sim.data).notifications.push(n.clone());
        Some(n)
    }
}
