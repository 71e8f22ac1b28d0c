//! Identity-system simulator: the access-request endpoint that the
//! access-tickets integration reports ticket status to.
//!
//! A minimal API of our own (the fact sheet names no vendor protocol), and
//! this documentation is its specification:
//!
//! | request | answer |
//! |---|---|
//! | `GET /api/access-requests?status=<s>&category=<c>&changed_since=<seq>` | `{"requests": [request...], "seq": <latest change>}`, oldest first; every filter optional |
//! | `GET /api/access-requests/{id}` | the request: `{id, requester, requester_email, resource, justification, category, status, ticket_number, ticket_state, comments[], history[], seq}` |
//! | `POST /api/access-requests/{id}/ticket-status` JSON `{"ticket_number", "state", "comment"}` | 200 with the request |
//! | `POST /api/access-requests/{id}/ticket` JSON `{"ticket_number"}` | 200 with the request: the ticket is recorded, the status unchanged |
//!
//! - `status`: `pending_manual` (needs a person, i.e. a ticket),
//!   `pending_approval` (the identity system's own approvers decide),
//!   `approved`, `in_progress`, `fulfilled`, `rejected`, `withdrawn`. A
//!   ticket state `closed_complete` fulfils the request,
//!   `closed_incomplete`/`closed_rejected` rejects it, anything in `new`,
//!   `in_progress`, `on_hold` marks it `in_progress`; other states are
//!   refused with 400.
//! - A request that is already fulfilled, rejected or withdrawn refuses
//!   further updates (409).
//! - Every change (status, ticket, comment) takes the next sequence number
//!   `seq`; `changed_since` lists the requests changed after one.
//! - Authentication: `Authorization: Bearer <token>`; otherwise 401.
//! - Errors: `{"error": "<code>", "message": "..."}`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use switchyard_sim::identity::{Identity, IdentityConfig};
//! let idm = Identity::start(IdentityConfig::default(), 42, 5).await?;
//! let first = &idm.requests()[0];
//! assert_eq!(first.status, "pending_manual");
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};

use crate::common::{self, Control, Flavor, SimServer, bearer_token};

/// The API token.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Bearer token clients must send.
    pub token: String,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            token: "idm-token".into(),
        }
    }
}

/// An access request.
#[derive(Debug, Clone, Serialize)]
pub struct AccessRequest {
    /// Id.
    pub id: String,
    /// Requester's user name.
    pub requester: String,
    /// Requester's email (person `i` of the seed).
    pub requester_email: String,
    /// What is asked for.
    pub resource: String,
    /// Why.
    pub justification: String,
    /// See the module docs.
    pub status: String,
    /// The ticket reported for it.
    pub ticket_number: Option<String>,
    /// The ticket's last reported state.
    pub ticket_state: Option<String>,
    /// Every status update received: `{ticket_number, state, comment}`.
    pub history: Vec<Value>,
    /// Service category (`finance`, `it`, `sales`).
    pub category: String,
    /// Comments made in the identity system: `{by, text, seq}`.
    pub comments: Vec<Value>,
    /// Sequence number of the last change.
    pub seq: u64,
}

/// Statuses no update may change.
const TERMINAL: &[&str] = &["fulfilled", "rejected", "withdrawn"];

struct Sim {
    cfg: IdentityConfig,
    requests: Mutex<Vec<AccessRequest>>,
    /// The latest change's sequence number.
    seq: Mutex<u64>,
}

impl Sim {
    /// The next sequence number, for a change being made.
    fn next_seq(&self) -> u64 {
        let mut seq = common::state(&self.seq);
        *seq += 1;
        *seq
    }

    /// Changes request `id` with `f`, stamping the change; None if there is
    /// no such request.
    fn change<T>(&self, id: &str, f: impl FnOnce(&mut AccessRequest) -> T) -> Option<T> {
        let seq = self.next_seq();
        let mut requests = common::state(&self.requests);
        let r = requests.iter_mut().find(|r| r.id == id)?;
        r.seq = seq;
        Some(f(r))
    }
}

/// A running identity-system simulator.
pub struct Identity {
    server: SimServer,
    sim: Arc<Sim>,
    control: Arc<Control>,
}

fn idm_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "message": message})),
    )
        .into_response()
}

struct IdmFlavor;

impl Flavor for IdmFlavor {
    fn error(&self, status: StatusCode, message: &str) -> Response {
        idm_error(status, "error", message)
    }

    fn rate_limited(&self, retry_after_secs: u64) -> Response {
        common::with_retry_after(
            idm_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests",
            ),
            retry_after_secs,
        )
    }

    fn malformed(&self) -> Response {
        common::cut_json("{\"requests\":[")
    }
}

type S = State<Arc<Sim>>;

async fn gate(State(sim): S, req: Request, next: Next) -> Response {
    if bearer_token(req.headers()).as_deref() != Some(sim.cfg.token.as_str()) {
        return idm_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token",
        );
    }
    next.run(req).await
}

async fn list(State(sim): S, Query(q): Query<HashMap<String, String>>) -> Response {
    let since = match q.get("changed_since").map(|s| s.parse::<u64>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return idm_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "`changed_since` must be a sequence number",
            );
        }
    };
    let seq = *common::state(&sim.seq);
    let mut requests: Vec<AccessRequest> = common::state(&sim.requests)
        .iter()
        .filter(|r| q.get("status").is_none_or(|s| &r.status == s))
        .filter(|r| q.get("category").is_none_or(|c| &r.category == c))
        .filter(|r| r.seq > since)
        .cloned()
        .collect();
    if q.contains_key("changed_since") {
        requests.sort_by_key(|r| r.seq);
    }
    axum::Json(json!({ "requests": requests, "seq": seq })).into_response()
}

async fn read(State(sim): S, Path(id): Path<String>) -> Response {
    match common::state(&sim.requests).iter().find(|r| r.id == id) {
        Some(r) => axum::Json(r).into_response(),
        None => idm_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no access request `{id}`"),
        ),
    }
}

async fn ticket_status(State(sim): S, Path(id): Path<String>, body: Bytes) -> Response {
    let update: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return idm_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be a JSON object",
            );
        }
    };
    let (Some(number), Some(state)) = (update["ticket_number"].as_str(), update["state"].as_str())
    else {
        return idm_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "`ticket_number` and `state` are required strings",
        );
    };
    let status = match state {
        "new" | "in_progress" | "on_hold" => "in_progress",
        "closed_complete" => "fulfilled",
        "closed_incomplete" | "closed_rejected" => "rejected",
        other => {
            return idm_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("unknown ticket state `{other}`"),
            );
        }
    };
    update_open(&sim, &id, |r| {
        r.ticket_number = Some(number.to_owned());
        r.ticket_state = Some(state.to_owned());
        r.status = status.to_owned();
        r.history.push(update.clone());
    })
}

/// Changes request `id` with `f` unless it is closed (409) or unknown
/// (404); answers the request as changed.
fn update_open(sim: &Sim, id: &str, f: impl FnOnce(&mut AccessRequest)) -> Response {
    let changed = sim.change(id, |r| {
        if TERMINAL.contains(&r.status.as_str()) {
            return Err(idm_error(
                StatusCode::CONFLICT,
                "closed",
                &format!("access request `{id}` is already {}", r.status),
            ));
        }
        f(r);
        Ok(axum::Json(&*r).into_response())
    });
    match changed {
        None => idm_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no access request `{id}`"),
        ),
        Some(Ok(r) | Err(r)) => r,
    }
}

async fn link_ticket(State(sim): S, Path(id): Path<String>, body: Bytes) -> Response {
    let number = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["ticket_number"].as_str().map(str::to_owned));
    let Some(number) = number else {
        return idm_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "`ticket_number` is a required string",
        );
    };
    update_open(&sim, &id, |r| r.ticket_number = Some(number))
}

impl Identity {
    /// Starts with `n` access requests waiting for manual fulfilment.
    pub async fn start(cfg: IdentityConfig, seed: u64, n: usize) -> std::io::Result<Self> {
        Self::start_on(cfg, seed, n, common::loopback()).await
    }

    /// Like [`Identity::start`] on a given address.
    pub async fn start_on(
        cfg: IdentityConfig,
        seed: u64,
        n: usize,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<Self> {
        const RESOURCES: &[&str] = &[
            "SAP finance role",
            "Shared drive //fin/reports",
            "Salesforce admin",
            "VPN split tunnel",
        ];
        let mut rng = fastrand::Rng::with_seed(seed);
        let requests = (0..n)
            .map(|i| {
                let p = common::person(i);
                AccessRequest {
                    id: format!("AR-{:05}", 1000 + i),
                    requester: p.user_name,
                    requester_email: p.email,
                    resource: RESOURCES[rng.usize(0..RESOURCES.len())].into(),
                    justification: "Needed for quarter-end close".into(),
                    status: "pending_manual".into(),
                    ticket_number: None,
                    ticket_state: None,
                    history: Vec::new(),
                    category: CATEGORIES[i % CATEGORIES.len()].into(),
                    comments: Vec::new(),
                    seq: i as u64 + 1,
                }
            })
            .collect();
        let sim = Arc::new(Sim {
            cfg,
            requests: Mutex::new(requests),
            seq: Mutex::new(n as u64),
        });
        let control = Arc::new(Control::default());
        let router = Router::new()
            .route("/api/access-requests", get(list))
            .route("/api/access-requests/{id}", get(read))
            .route(
                "/api/access-requests/{id}/ticket-status",
                post(ticket_status),
            )
            .route("/api/access-requests/{id}/ticket", post(link_ticket))
            .layer(axum::middleware::from_fn_with_state(sim.clone(), gate))
            .with_state(sim.clone());
        let s = sim.clone();
        let router = common::instrument(
            router,
            control.clone(),
            Arc::new(IdmFlavor),
            move || json!({ "requests": *common::state(&s.requests) }),
        );
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
    pub fn config(&self) -> &IdentityConfig {
        &self.sim.cfg
    }

    /// Request log and fault injection.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Every access request.
    pub fn requests(&self) -> Vec<AccessRequest> {
        common::state(&self.sim.requests).clone()
    }

    /// Request `id`.
    pub fn request(&self, id: &str) -> Option<AccessRequest> {
        self.requests().into_iter().find(|r| r.id == id)
    }

    /// Adds a request in `category` with `status`, as a user of the
    /// identity system would; returns its id.
    pub fn add(&self, category: &str, status: &str) -> String {
        let seq = self.sim.next_seq();
        let mut requests = common::state(&self.sim.requests);
        let i = requests.len();
        let p = common::person(i);
        let id = format!("AR-{:05}", 1000 + i);
        requests.push(AccessRequest {
            id: id.clone(),
            requester: p.user_name,
            requester_email: p.email,
            resource: "Salesforce admin".into(),
            justification: "New role".into(),
            status: status.into(),
            ticket_number: None,
            ticket_state: None,
            history: Vec::new(),
            category: category.into(),
            comments: Vec::new(),
            seq,
        });
        id
    }

    /// The identity system's approvers (or the requester) move request `id`
    /// to `status` (`approved`, `rejected`, `withdrawn`, …); false if there
    /// is no such request or it is already closed.
    pub fn set_status(&self, id: &str, status: &str) -> bool {
        self.sim
            .change(id, |r| {
                if TERMINAL.contains(&r.status.as_str()) {
                    return false;
                }
                r.status = status.into();
                true
            })
            .unwrap_or(false)
    }

    /// Someone comments on request `id` in the identity system.
    pub fn comment(&self, id: &str, by: &str, text: &str) -> bool {
        let seq = *common::state(&self.sim.seq) + 1;
        self.sim
            .change(id, |r| {
                r.comments.push(json!({"by": by, "text": text, "seq": seq}));
            })
            .is_some()
    }
}

/// Service categories the seeded requests rotate through.
pub const CATEGORIES: &[&str] = &["finance", "it", "sales"];
