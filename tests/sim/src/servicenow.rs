//! ServiceNow simulator: Table API, OAuth, the app-approval Scripted REST
//! endpoint, and an agent who acts on records.
//!
//! Speaks what `api-facts.md` describes: `GET|POST /api/now/table/{table}`,
//! `GET|PUT|PATCH|DELETE /api/now/table/{table}/{sys_id}`, `sysparm_query`,
//! `sysparm_fields`, `sysparm_limit`/`sysparm_offset` with `Link` and
//! `X-Total-Count`, `sysparm_display_value`, `sysparm_exclude_reference_link`,
//! reference fields as `{link, value}`, `201` + `Location` on create, journal
//! fields appended by writes, Basic and OAuth (`/oauth_token.do`), the error
//! body `{"error": {"message", "detail"}, "status": "failure"}` and 429 with
//! `Retry-After` and `X-RateLimit-*`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use switchyard_sim::servicenow::{ServiceNow, ServiceNowConfig};
//! let sn = ServiceNow::start(ServiceNowConfig::default(), 42, 10, 5).await?;
//! let incident = sn.records("incident")[0].clone();
//! let sys_id = incident["sys_id"].as_str().unwrap();
//! sn.agent_update("incident", sys_id, &[("state", "2")]);
//! assert!(sn.work_notes("incident", sys_id).is_empty());
//! # Ok(()) }
//! ```
//!
//! ## Choices where the fact sheet is silent
//! - Encoded queries: `=`, `!=`, `>`, `>=`, `<`, `<=` (numbers compare as
//!   numbers, everything else as strings — ServiceNow's date format sorts
//!   lexically), `IN`, `NOT IN`, `LIKE`, `NOT LIKE`, `STARTSWITH`,
//!   `ENDSWITH`, `ISEMPTY`, `ISNOTEMPTY`, `^` (AND), `^OR`, `ORDERBY`,
//!   `ORDERBYDESC`, and one level of dot-walking (`caller_id.email=…`). A
//!   term outside this subset is answered 400 (ServiceNow would silently
//!   ignore it, which hides plugin bugs).
//! - Journal fields (`work_notes`, `comments`) read back as `""`, like the
//!   real Table API; what was written is in `sys_journal_field`.
//! - Unknown tables answer 400 "Invalid table"; the known ones are
//!   `incident`, `problem`, `change_request`, `sc_request`, `sc_req_item`,
//!   `sys_user`, `sys_journal_field`, `cmdb_ci`, `task` (read-only union) plus
//!   [`ServiceNowConfig::extra_tables`].
//! - The app-approval endpoint creates one `sc_request` per `RequestId`; a
//!   repeated `RequestId` answers 200 with the existing request.
//! - Rate limit: a fixed window per minute (default 1000 requests).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::common::{
    self, Control, Flavor, RateLimit, SimServer, Tokens, basic_credentials, bearer_token,
};

/// Accounts and behaviour of the simulated instance.
#[derive(Debug, Clone)]
pub struct ServiceNowConfig {
    /// Integration user for Basic auth (and the OAuth password grant).
    pub username: String,
    /// Its password.
    pub password: String,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret.
    pub client_secret: String,
    /// Access token lifetime (ServiceNow's default: 1799 s).
    pub token_lifetime_secs: i64,
    /// Requests per minute before 429.
    pub rate_limit_per_minute: u32,
    /// Tables besides the standard ones (by default the remote-support
    /// session, event-type and issue tables).
    pub extra_tables: Vec<String>,
}

impl Default for ServiceNowConfig {
    fn default() -> Self {
        Self {
            username: "switchyard.integration".into(),
            password: "sn-password".into(),
            client_id: "sn-client".into(),
            client_secret: "sn-client-secret".into(),
            token_lifetime_secs: 1799,
            rate_limit_per_minute: 1000,
            extra_tables: vec![
                "x_bmgr_support_session".into(),
                "x_bmgr_support_event_type".into(),
                "x_bmgr_support_issue".into(),
            ],
        }
    }
}

const STANDARD_TABLES: &[&str] = &[
    "incident",
    "problem",
    "change_request",
    "sc_request",
    "sc_req_item",
    "sys_user",
    "sys_journal_field",
    // Configuration items (`name`, `serial_number`, `os`, …), for actions
    // launched from a CI record.
    "cmdb_ci",
];

/// Tables that extend `task` (a `task` query spans them).
const TASK_TABLES: &[&str] = &[
    "incident",
    "problem",
    "change_request",
    "sc_request",
    "sc_req_item",
];

const JOURNAL_FIELDS: &[&str] = &["work_notes", "comments"];

/// Reference fields and the table they point at (`task` = any task table).
fn reference_target(field: &str) -> Option<&'static str> {
    match field {
        "caller_id" | "assigned_to" | "opened_by" | "requested_for" | "u_user"
        | "u_primary_rep" | "sys_created_by_ref" => Some("sys_user"),
        "parent" | "u_task" | "task" | "problem_id" | "request" => Some("task"),
        _ => None,
    }
}

fn number_prefix(table: &str) -> Option<&'static str> {
    match table {
        "incident" => Some("INC"),
        "problem" => Some("PRB"),
        "change_request" => Some("CHG"),
        "sc_request" => Some("REQ"),
        "sc_req_item" => Some("RITM"),
        _ => None,
    }
}

/// A callback the simulated instance sent (app-approval decisions).
#[derive(Debug, Clone, Serialize)]
pub struct Callback {
    /// Where it was sent.
    pub url: String,
    /// The JSON body.
    pub body: Value,
    /// The status it got, or the transport error.
    pub outcome: Result<u16, String>,
}

#[derive(Default, Serialize)]
struct Data {
    tables: BTreeMap<String, Vec<Map<String, Value>>>,
    counters: BTreeMap<String, u64>,
    callbacks: Vec<Callback>,
}

struct Sim {
    cfg: ServiceNowConfig,
    data: Mutex<Data>,
    tokens: Arc<Tokens>,
    refresh: Tokens,
    limit: RateLimit,
    base: Mutex<String>,
}

/// A running ServiceNow simulator.
pub struct ServiceNow {
    server: SimServer,
    sim: Arc<Sim>,
    control: Arc<Control>,
}

fn sn_error(status: StatusCode, message: &str, detail: Option<&str>) -> Response {
    (
        status,
        axum::Json(json!({
            "error": {"message": message, "detail": detail},
            "status": "failure",
        })),
    )
        .into_response()
}

struct SnFlavor;

impl Flavor for SnFlavor {
    fn error(&self, status: StatusCode, message: &str) -> Response {
        sn_error(status, message, None)
    }

    fn rate_limited(&self, retry_after_secs: u64) -> Response {
        let mut r = sn_error(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            Some("Rate limit exceeded for the REST API rule"),
        );
        let h = r.headers_mut();
        h.insert("retry-after", HeaderValue::from(retry_after_secs));
        h.insert(
            "x-ratelimit-reset",
            HeaderValue::from(common::now_secs() + retry_after_secs as i64),
        );
        h.insert(
            "x-ratelimit-rule",
            HeaderValue::from_static("switchyard-sim-rest-rule"),
        );
        r
    }

    fn malformed(&self) -> Response {
        common::cut_json("{\"result\":[{\"sys_id\":\"")
    }
}

fn now_text() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .unwrap_or_default()
}

fn new_sys_id() -> String {
    std::iter::repeat_with(|| char::from_digit(fastrand::u32(0..16), 16).unwrap())
        .take(32)
        .collect()
}

/// Field values are strings on the wire, whatever was sent.
fn as_text(v: &Value) -> Value {
    match v {
        Value::String(_) => v.clone(),
        Value::Null => Value::String(String::new()),
        Value::Bool(b) => Value::String(b.to_string()),
        Value::Number(n) => Value::String(n.to_string()),
        // A reference given as {"value": id} (as read back) stores the id.
        Value::Object(o) if o.contains_key("value") => as_text(&o["value"]),
        other => Value::String(other.to_string()),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    In,
    NotIn,
    Like,
    NotLike,
    StartsWith,
    EndsWith,
    IsEmpty,
    IsNotEmpty,
}

#[derive(Debug, Clone)]
struct Term {
    field: String,
    op: Op,
    value: String,
}

#[derive(Debug, Default)]
struct EncodedQuery {
    /// Conjunction of disjunctions.
    all: Vec<Vec<Term>>,
    order: Vec<(String, bool)>,
}

fn parse_term(t: &str) -> Result<Term, String> {
    let field_len = t
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'))
        .unwrap_or(t.len());
    let (field, rest) = t.split_at(field_len);
    if field.is_empty() {
        return Err(format!("invalid query term `{t}`: no field name"));
    }
    const OPS: &[(&str, Op)] = &[
        ("ISNOTEMPTY", Op::IsNotEmpty),
        ("ISEMPTY", Op::IsEmpty),
        ("NOT IN", Op::NotIn),
        ("NOT LIKE", Op::NotLike),
        ("STARTSWITH", Op::StartsWith),
        ("ENDSWITH", Op::EndsWith),
        ("LIKE", Op::Like),
        ("IN", Op::In),
        ("!=", Op::Ne),
        (">=", Op::Ge),
        ("<=", Op::Le),
        (">", Op::Gt),
        ("<", Op::Lt),
        ("=", Op::Eq),
    ];
    for (sym, op) in OPS {
        if let Some(value) = rest.strip_prefix(sym) {
            if matches!(op, Op::IsEmpty | Op::IsNotEmpty) && !value.is_empty() {
                break;
            }
            if value.starts_with("javascript:") {
                return Err(format!(
                    "invalid query term `{t}`: scripted values are not supported by the simulator"
                ));
            }
            return Ok(Term {
                field: field.to_owned(),
                op: op.clone(),
                value: value.to_owned(),
            });
        }
    }
    Err(format!("invalid query term `{t}`: unsupported operator"))
}

fn parse_query(q: &str) -> Result<EncodedQuery, String> {
    let mut out = EncodedQuery::default();
    if q.is_empty() {
        return Ok(out);
    }
    for (i, raw) in q.split('^').enumerate() {
        if raw.is_empty() || raw == "EQ" {
            continue;
        }
        if let Some(f) = raw.strip_prefix("ORDERBYDESC") {
            out.order.push((f.to_owned(), true));
        } else if let Some(f) = raw.strip_prefix("ORDERBY") {
            out.order.push((f.to_owned(), false));
        } else if let Some(t) = raw.strip_prefix("OR").filter(|_| i > 0) {
            let term = parse_term(t)?;
            match out.all.last_mut() {
                Some(any) => any.push(term),
                None => return Err(format!("`^OR{t}` has no term before it")),
            }
        } else if raw.starts_with("NQ") {
            return Err("`^NQ` (new query) is not supported by the simulator".into());
        } else {
            out.all.push(vec![parse_term(raw)?]);
        }
    }
    Ok(out)
}

fn compare(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
        _ => a.cmp(b),
    }
}

impl Term {
    fn holds(&self, actual: &str) -> bool {
        use std::cmp::Ordering::*;
        let v = self.value.as_str();
        let list = || v.split(',').map(str::trim);
        let lower = |s: &str| s.to_lowercase();
        match self.op {
            Op::Eq => actual == v,
            Op::Ne => actual != v,
            Op::Gt => compare(actual, v) == Greater,
            Op::Ge => compare(actual, v) != Less,
            Op::Lt => compare(actual, v) == Less,
            Op::Le => compare(actual, v) != Greater,
            Op::In => list().any(|x| x == actual),
            Op::NotIn => !list().any(|x| x == actual),
            Op::Like => lower(actual).contains(&lower(v)),
            Op::NotLike => !lower(actual).contains(&lower(v)),
            Op::StartsWith => lower(actual).starts_with(&lower(v)),
            Op::EndsWith => lower(actual).ends_with(&lower(v)),
            Op::IsEmpty => actual.is_empty(),
            Op::IsNotEmpty => !actual.is_empty(),
        }
    }
}

impl Data {
    fn rows<'a>(&'a self, table: &'a str) -> Vec<(&'a str, &'a Map<String, Value>)> {
        if table == "task" {
            TASK_TABLES
                .iter()
                .flat_map(|t| {
                    self.tables
                        .get(*t)
                        .into_iter()
                        .flatten()
                        .map(move |r| (*t, r))
                })
                .collect()
        } else {
            self.tables
                .get(table)
                .into_iter()
                .flatten()
                .map(|r| (table, r))
                .collect()
        }
    }

    fn find<'a>(
        &'a self,
        table: &'a str,
        sys_id: &str,
    ) -> Option<(&'a str, &'a Map<String, Value>)> {
        self.rows(table)
            .into_iter()
            .find(|(_, r)| r.get("sys_id").and_then(Value::as_str) == Some(sys_id))
    }

    /// A field's value, following one reference for `a.b`.
    fn field(&self, row: &Map<String, Value>, path: &str) -> String {
        let text = |r: &Map<String, Value>, f: &str| {
            r.get(f)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match path.split_once('.') {
            None => text(row, path),
            Some((reference, rest)) => {
                let id = text(row, reference);
                let Some(target) = reference_target(reference) else {
                    return String::new();
                };
                self.find(target, &id)
                    .map(|(_, r)| text(r, rest))
                    .unwrap_or_default()
            }
        }
    }

    fn display(&self, field: &str, value: &str, table: &str) -> String {
        if let Some(target) = reference_target(field) {
            return self
                .find(target, value)
                .map(|(_, r)| {
                    let key = if target == "sys_user" {
                        "name"
                    } else {
                        "number"
                    };
                    r.get(key)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                })
                .unwrap_or_default();
        }
        if field == "state" && TASK_TABLES.contains(&table) {
            let label = match value {
                "1" => "New",
                "2" => "In Progress",
                "3" => "On Hold",
                "6" => "Resolved",
                "7" => "Closed",
                "8" => "Canceled",
                other => other,
            };
            return label.to_owned();
        }
        value.to_owned()
    }

    fn next_number(&mut self, table: &str) -> Option<String> {
        let prefix = number_prefix(table)?;
        let n = self.counters.entry(table.to_owned()).or_insert(10_000);
        *n += 1;
        Some(format!("{prefix}{:07}", *n))
    }

    /// Inserts a record as `user`; journal fields go to sys_journal_field.
    fn insert(
        &mut self,
        table: &str,
        fields: &Map<String, Value>,
        user: &str,
    ) -> Map<String, Value> {
        let now = now_text();
        let mut row = Map::new();
        let sys_id = new_sys_id();
        row.insert("sys_id".into(), json!(sys_id));
        if let Some(n) = self.next_number(table) {
            row.insert("number".into(), json!(n));
        }
        if TASK_TABLES.contains(&table) {
            // Every task record names its concrete table, so a `task`
            // query tells the caller where to write.
            row.insert("sys_class_name".into(), json!(table));
            if table != "sc_request" {
                row.insert("state".into(), json!("1"));
            }
        }
        for (k, v) in fields {
            if k == "sys_id" {
                continue;
            }
            row.insert(k.clone(), as_text(v));
        }
        for k in ["sys_created_on", "sys_updated_on"] {
            row.insert(k.into(), json!(now));
        }
        for k in ["sys_created_by", "sys_updated_by"] {
            row.insert(k.into(), json!(user));
        }
        row.insert("sys_mod_count".into(), json!("0"));
        self.journal(table, &sys_id, &mut row, user);
        self.tables
            .entry(table.to_owned())
            .or_default()
            .push(row.clone());
        row
    }

    /// Moves journal values out of `row` into sys_journal_field entries.
    fn journal(&mut self, table: &str, sys_id: &str, row: &mut Map<String, Value>, user: &str) {
        for f in JOURNAL_FIELDS {
            let Some(v) = row.insert((*f).into(), json!("")) else {
                row.remove(*f);
                continue;
            };
            let text = v.as_str().unwrap_or_default().to_owned();
            if text.is_empty() {
                continue;
            }
            let entry: Map<String, Value> = [
                ("sys_id", json!(new_sys_id())),
                ("element_id", json!(sys_id)),
                ("element", json!(f)),
                ("name", json!(table)),
                ("value", json!(text)),
                ("sys_created_on", json!(now_text())),
                ("sys_created_by", json!(user)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            self.tables
                .entry("sys_journal_field".into())
                .or_default()
                .push(entry);
        }
    }

    fn update(
        &mut self,
        table: &str,
        sys_id: &str,
        fields: &Map<String, Value>,
        user: &str,
    ) -> Option<Map<String, Value>> {
        let rows = self.tables.get_mut(table)?;
        let row = rows
            .iter_mut()
            .find(|r| r.get("sys_id").and_then(Value::as_str) == Some(sys_id))?;
        for (k, v) in fields {
            if k == "sys_id" || k == "number" || k.starts_with("sys_") {
                continue;
            }
            row.insert(k.clone(), as_text(v));
        }
        row.insert("sys_updated_on".into(), json!(now_text()));
        row.insert("sys_updated_by".into(), json!(user));
        let count = row
            .get("sys_mod_count")
            .and_then(Value::as_str)
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0);
        row.insert("sys_mod_count".into(), json!((count + 1).to_string()));
        let mut row = row.clone();
        self.journal(table, sys_id, &mut row, user);
        // Store the row with journal fields cleared.
        let stored = self
            .tables
            .get_mut(table)?
            .iter_mut()
            .find(|r| r.get("sys_id").and_then(Value::as_str) == Some(sys_id))?;
        *stored = row.clone();
        Some(row)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum DisplayMode {
    Value,
    Display,
    All,
}

struct Render<'a> {
    data: &'a Data,
    base: &'a str,
    fields: Option<Vec<String>>,
    display: DisplayMode,
    exclude_links: bool,
}

impl Render<'_> {
    fn row(&self, table: &str, row: &Map<String, Value>) -> Value {
        let names: Vec<String> = match &self.fields {
            Some(f) => f.clone(),
            None => row.keys().cloned().collect(),
        };
        let mut out = Map::new();
        for name in names {
            let value = self.data.field(row, &name);
            let last = name.rsplit('.').next().unwrap_or(&name);
            let target = reference_target(last).filter(|_| !name.contains('.'));
            let link = |v: &str| {
                let t = target
                    .map(|t| {
                        if t == "task" {
                            self.data.find("task", v).map_or("task", |(t, _)| t)
                        } else {
                            t
                        }
                    })
                    .unwrap_or("task");
                format!("{}/api/now/table/{t}/{v}", self.base)
            };
            let display = || self.data.display(last, &value, table);
            let rendered = match (self.display, target) {
                (DisplayMode::Value, Some(_)) if !value.is_empty() && !self.exclude_links => {
                    json!({"link": link(&value), "value": value})
                }
                (DisplayMode::Display, _) => json!(display()),
                (DisplayMode::All, Some(_)) if !value.is_empty() && !self.exclude_links => {
                    json!({"display_value": display(), "value": value, "link": link(&value)})
                }
                (DisplayMode::All, _) => json!({"display_value": display(), "value": value}),
                _ => json!(value),
            };
            out.insert(name, rendered);
        }
        Value::Object(out)
    }
}

type Q = Query<HashMap<String, String>>;
type S = State<Arc<Sim>>;

/// The authenticated user, set by the gate.
#[derive(Clone)]
struct User(String);

async fn gate(State(sim): S, mut req: Request, next: Next) -> Response {
    let h = req.headers();
    let user = if let Some(token) = bearer_token(h) {
        sim.tokens.check(&token)
    } else if let Some((u, p)) = basic_credentials(h) {
        (u == sim.cfg.username && p == sim.cfg.password).then_some(u)
    } else {
        None
    };
    let Some(user) = user else {
        return sn_error(
            StatusCode::UNAUTHORIZED,
            "User Not Authenticated",
            Some("Required to provide Auth information"),
        );
    };
    let (verdict, reset) = sim.limit.hit();
    let limit = sim.limit.limit;
    req.extensions_mut().insert(User(user));
    let mut resp = match verdict {
        Ok(_) => next.run(req).await,
        Err(retry) => SnFlavor.rate_limited(retry as u64),
    };
    let h = resp.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from(limit));
    h.insert("x-ratelimit-reset", HeaderValue::from(reset));
    resp
}

impl Sim {
    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        common::state(&self.data)
    }

    fn known_table(&self, t: &str) -> bool {
        STANDARD_TABLES.contains(&t) || self.cfg.extra_tables.iter().any(|x| x == t)
    }

    fn base(&self) -> String {
        common::state(&self.base).clone()
    }
}

fn invalid_table(t: &str) -> Response {
    sn_error(StatusCode::BAD_REQUEST, &format!("Invalid table {t}"), None)
}

fn no_record() -> Response {
    sn_error(
        StatusCode::NOT_FOUND,
        "No Record found",
        Some("Record doesn't exist or ACL restricts the record retrieval"),
    )
}

fn render_opts<'a>(data: &'a Data, q: &HashMap<String, String>, base: &'a str) -> Render<'a> {
    Render {
        data,
        base,
        fields: q
            .get("sysparm_fields")
            .filter(|f| !f.is_empty())
            .map(|f| f.split(',').map(|s| s.trim().to_owned()).collect()),
        display: match q.get("sysparm_display_value").map(String::as_str) {
            Some("true") => DisplayMode::Display,
            Some("all") => DisplayMode::All,
            _ => DisplayMode::Value,
        },
        exclude_links: q.get("sysparm_exclude_reference_link").map(String::as_str) == Some("true"),
    }
}

async fn list(State(sim): S, Path(table): Path<String>, Query(q): Q, uri: Uri) -> Response {
    if !sim.known_table(&table) && table != "task" {
        return invalid_table(&table);
    }
    let query = match parse_query(q.get("sysparm_query").map_or("", String::as_str)) {
        Ok(q) => q,
        Err(e) => return sn_error(StatusCode::BAD_REQUEST, &e, None),
    };
    let parse_num = |name: &str, default: usize| -> Result<usize, Response> {
        match q.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                sn_error(
                    StatusCode::BAD_REQUEST,
                    &format!("{name} must be a non-negative integer, not `{v}`"),
                    None,
                )
            }),
        }
    };
    let (limit, offset) = match (
        parse_num("sysparm_limit", 10_000),
        parse_num("sysparm_offset", 0),
    ) {
        (Ok(l), Ok(o)) => (l, o),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let base = sim.base();
    let data = sim.data();
    let mut rows: Vec<(&str, &Map<String, Value>)> = data
        .rows(&table)
        .into_iter()
        .filter(|(_, r)| {
            query
                .all
                .iter()
                .all(|any| any.iter().any(|t| t.holds(&data.field(r, &t.field))))
        })
        .collect();
    for (field, desc) in query.order.iter().rev() {
        rows.sort_by(|a, b| {
            let o = compare(&data.field(a.1, field), &data.field(b.1, field));
            if *desc { o.reverse() } else { o }
        });
    }
    let total = rows.len();
    let render = render_opts(&data, &q, &base);
    let result: Vec<Value> = rows
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(t, r)| render.row(t, r))
        .collect();
    let mut resp = axum::Json(json!({ "result": result })).into_response();
    let h = resp.headers_mut();
    h.insert("x-total-count", HeaderValue::from(total));
    // The offset of the last page; no links when the limit is 0.
    if let Some(last_page) = total.saturating_sub(1).checked_div(limit) {
        let link = |off: usize, rel: &str| {
            let mut params: Vec<(String, String)> =
                url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                    .into_owned()
                    .filter(|(k, _)| k != "sysparm_offset" && k != "sysparm_limit")
                    .collect();
            params.push(("sysparm_limit".into(), limit.to_string()));
            params.push(("sysparm_offset".into(), off.to_string()));
            let qs = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params)
                .finish();
            format!("<{base}{}?{qs}>;rel=\"{rel}\"", uri.path())
        };
        let last = last_page * limit;
        let mut links = vec![link(0, "first")];
        if offset > 0 {
            links.push(link(offset.saturating_sub(limit), "prev"));
        }
        if offset + limit < total {
            links.push(link(offset + limit, "next"));
        }
        links.push(link(last, "last"));
        if let Ok(v) = HeaderValue::from_str(&links.join(",")) {
            h.insert("link", v);
        }
    }
    resp
}

async fn read(
    State(sim): S,
    Path((table, sys_id)): Path<(String, String)>,
    Query(q): Q,
) -> Response {
    if !sim.known_table(&table) && table != "task" {
        return invalid_table(&table);
    }
    let base = sim.base();
    let data = sim.data();
    let Some((t, row)) = data.find(&table, &sys_id) else {
        return no_record();
    };
    let render = render_opts(&data, &q, &base);
    axum::Json(json!({ "result": render.row(t, row) })).into_response()
}

fn body_object(body: &Bytes) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(sn_error(
            StatusCode::BAD_REQUEST,
            "Exception while reading request",
            Some("The payload is not a JSON object"),
        )),
        Err(e) => Err(sn_error(
            StatusCode::BAD_REQUEST,
            "Exception while reading request",
            Some(&format!("The payload is not valid JSON: {e}")),
        )),
    }
}

async fn create(
    State(sim): S,
    Path(table): Path<String>,
    Query(q): Q,
    axum::Extension(User(user)): axum::Extension<User>,
    body: Bytes,
) -> Response {
    if !sim.known_table(&table) || table == "sys_journal_field" {
        return invalid_table(&table);
    }
    let fields = match body_object(&body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let base = sim.base();
    let mut data = sim.data();
    let row = data.insert(&table, &fields, &user);
    let sys_id = row["sys_id"].as_str().unwrap_or_default().to_owned();
    let render = render_opts(&data, &q, &base);
    let mut resp = (
        StatusCode::CREATED,
        axum::Json(json!({ "result": render.row(&table, &row) })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{base}/api/now/table/{table}/{sys_id}")) {
        resp.headers_mut().insert("location", v);
    }
    resp
}

async fn write(
    State(sim): S,
    Path((table, sys_id)): Path<(String, String)>,
    Query(q): Q,
    axum::Extension(User(user)): axum::Extension<User>,
    body: Bytes,
) -> Response {
    if !sim.known_table(&table) {
        return invalid_table(&table);
    }
    let fields = match body_object(&body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let base = sim.base();
    let mut data = sim.data();
    let Some(row) = data.update(&table, &sys_id, &fields, &user) else {
        return no_record();
    };
    let render = render_opts(&data, &q, &base);
    axum::Json(json!({ "result": render.row(&table, &row) })).into_response()
}

async fn delete(State(sim): S, Path((table, sys_id)): Path<(String, String)>) -> Response {
    if !sim.known_table(&table) {
        return invalid_table(&table);
    }
    let mut data = sim.data();
    let Some(rows) = data.tables.get_mut(&table) else {
        return no_record();
    };
    let before = rows.len();
    rows.retain(|r| r.get("sys_id").and_then(Value::as_str) != Some(sys_id.as_str()));
    if rows.len() == before {
        return no_record();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn oauth_token(State(sim): S, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let denied = || {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "access_denied", "error_description": "access_denied"})),
        )
            .into_response()
    };
    let (id, secret) = basic_credentials(&headers).unwrap_or_else(|| {
        (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        )
    });
    if id != sim.cfg.client_id || secret != sim.cfg.client_secret {
        return denied();
    }
    let user = match form.get("grant_type").map(String::as_str) {
        Some("password") => {
            if form.get("username") != Some(&sim.cfg.username)
                || form.get("password") != Some(&sim.cfg.password)
            {
                return denied();
            }
            sim.cfg.username.clone()
        }
        Some("refresh_token") => {
            match form.get("refresh_token").and_then(|t| sim.refresh.check(t)) {
                Some(u) => u,
                None => return denied(),
            }
        }
        Some("client_credentials") => sim.cfg.username.clone(),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(
                    json!({"error": "unsupported_grant_type", "error_description": "grant_type"}),
                ),
            )
                .into_response();
        }
    };
    let access = sim.tokens.issue(&user, sim.cfg.token_lifetime_secs, None);
    let refresh = sim.refresh.issue(&user, 100 * 24 * 3600, None);
    axum::Json(json!({
        "access_token": access,
        "refresh_token": refresh,
        "scope": "useraccount",
        "token_type": "Bearer",
        "expires_in": sim.cfg.token_lifetime_secs,
    }))
    .into_response()
}

/// `POST /api/{namespace}/appapproval/request` (seed's Scripted REST API).
async fn app_approval(
    State(sim): S,
    Path(_namespace): Path<String>,
    axum::Extension(User(user)): axum::Extension<User>,
    body: Bytes,
) -> Response {
    let req = match body_object(&body) {
        Ok(r) => Value::Object(r),
        Err(r) => return r,
    };
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let request_id = text(&req["RequestId"]);
    let callback = text(&req["Links"]["ApprovalNotify"]["Url"]);
    let notes = text(&req["Notes"]);
    let email = text(&req["RequestFor"]["UserAttributes"]["email"]);
    let user_name = text(&req["RequestFor"]["UserAttributes"]["user_name"]);
    let mut problems = Vec::new();
    for (name, value, max) in [
        ("RequestId", &request_id, 40),
        ("Links.ApprovalNotify.Url", &callback, 2048),
        ("Notes", &notes, 4000),
        ("RequestFor.UserAttributes.user_name", &user_name, 40),
    ] {
        if value.chars().count() > max {
            problems.push(format!("{name} is longer than {max} characters"));
        }
    }
    for (name, value) in [
        ("RequestId", &request_id),
        ("Links.ApprovalNotify.Url", &callback),
    ] {
        if value.is_empty() {
            problems.push(format!("{name} is required"));
        }
    }
    if !problems.is_empty() {
        return sn_error(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            Some(&problems.join("; ")),
        );
    }
    let base = sim.base();
    let mut data = sim.data();
    let summary = |row: &Map<String, Value>| {
        json!({"result": {
            "sys_id": row["sys_id"], "number": row["number"],
            "request_state": row["request_state"], "approval": row["approval"],
        }})
    };
    if let Some((_, existing)) = data.rows("sc_request").into_iter().find(|(_, r)| {
        r.get("u_uem_request_id").and_then(Value::as_str) == Some(request_id.as_str())
    }) {
        return axum::Json(summary(existing)).into_response();
    }
    let requested_for = data
        .rows("sys_user")
        .into_iter()
        .find(|(_, r)| {
            r.get("email")
                .and_then(Value::as_str)
                .is_some_and(|e| !email.is_empty() && e.eq_ignore_ascii_case(&email))
        })
        .map(|(_, r)| r["sys_id"].clone())
        .unwrap_or(json!(""));
    let item = text(&req["CatalogItem"]["Name"]);
    let fields: Map<String, Value> = [
        ("short_description", json!(format!("App approval: {item}"))),
        ("description", json!(req.to_string())),
        ("requested_for", requested_for),
        ("approval", json!("requested")),
        ("request_state", json!("requested")),
        ("u_uem_callback_url", json!(callback)),
        ("u_uem_device_id", json!(text(&req["DeviceId"]))),
        ("u_uem_request_id", json!(request_id)),
        ("u_uem_user_id", json!(text(&req["RequestFor"]["UserId"]))),
        ("u_requesting_user", json!(user_name)),
        ("u_uem_notes", json!(notes)),
        ("due_date", json!(text(&req["DueDate"]))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let row = data.insert("sc_request", &fields, &user);
    let mut resp = (StatusCode::CREATED, axum::Json(summary(&row))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{base}/api/now/table/sc_request/{}",
        row["sys_id"].as_str().unwrap_or_default()
    )) {
        resp.headers_mut().insert("location", v);
    }
    resp
}

impl Data {
    fn seed(seed: u64, users: usize, incidents: usize) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut d = Data::default();
        let mut user_ids = Vec::new();
        for i in 0..users {
            let p = common::person(i);
            let fields: Map<String, Value> = [
                ("user_name", p.user_name.clone()),
                ("first_name", p.first_name.clone()),
                ("last_name", p.last_name.clone()),
                ("name", format!("{} {}", p.first_name, p.last_name)),
                ("email", p.email.clone()),
                ("active", "true".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), json!(v)))
            .collect();
            let row = d.insert("sys_user", &fields, "system");
            user_ids.push(row["sys_id"].clone());
        }
        const ISSUES: &[&str] = &[
            "Phone is lost",
            "Forgot my device passcode",
            "Laptop will not sync mail",
            "Need BitLocker recovery key",
            "Tablet stolen at airport",
            "VPN profile missing",
        ];
        for _ in 0..incidents {
            let mut fields = Map::new();
            fields.insert(
                "short_description".into(),
                json!(ISSUES[rng.usize(0..ISSUES.len())]),
            );
            if !user_ids.is_empty() {
                fields.insert(
                    "caller_id".into(),
                    user_ids[rng.usize(0..user_ids.len())].clone(),
                );
            }
            fields.insert("state".into(), json!(["1", "2", "3"][rng.usize(0..3)]));
            fields.insert("urgency".into(), json!(rng.u32(1..4).to_string()));
            d.insert("incident", &fields, "system");
        }
        d
    }
}

impl ServiceNow {
    /// Starts a simulator on a free loopback port with `users` users
    /// (person 0..users of every seed) and `incidents` incidents.
    pub async fn start(
        cfg: ServiceNowConfig,
        seed: u64,
        users: usize,
        incidents: usize,
    ) -> std::io::Result<Self> {
        Self::start_on(cfg, seed, users, incidents, common::loopback()).await
    }

    /// Like [`ServiceNow::start`] on a given address.
    pub async fn start_on(
        cfg: ServiceNowConfig,
        seed: u64,
        users: usize,
        incidents: usize,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<Self> {
        let sim = Arc::new(Sim {
            limit: RateLimit::new(cfg.rate_limit_per_minute, 60),
            cfg,
            data: Mutex::new(Data::seed(seed, users, incidents)),
            tokens: Arc::new(Tokens::default()),
            refresh: Tokens::default(),
            base: Mutex::new(String::new()),
        });
        let control = Arc::new(Control::default());
        control.expires(sim.tokens.clone());
        let api = Router::new()
            .route("/api/now/table/{table}", get(list).post(create))
            .route(
                "/api/now/table/{table}/{sys_id}",
                get(read).put(write).patch(write).delete(delete),
            )
            .route("/api/{namespace}/appapproval/request", post(app_approval))
            .layer(axum::middleware::from_fn_with_state(sim.clone(), gate));
        let router = Router::new()
            .merge(api)
            .route("/oauth_token.do", post(oauth_token))
            .fallback(|method: Method| async move {
                sn_error(
                    StatusCode::BAD_REQUEST,
                    "Requested URI does not represent any resource",
                    Some(&format!("{method} on an unknown path")),
                )
            })
            .with_state(sim.clone());
        let s = sim.clone();
        let router = common::instrument(router, control.clone(), Arc::new(SnFlavor), move || {
            serde_json::to_value(&*s.data()).unwrap_or(Value::Null)
        });
        let server = SimServer::start(router, addr).await?;
        *common::state(&sim.base) = server.url();
        Ok(Self {
            server,
            sim,
            control,
        })
    }

    /// Base URL of the instance.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ServiceNowConfig {
        &self.sim.cfg
    }

    /// Request log and fault injection.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Every record of `table` as stored (journal fields empty).
    pub fn records(&self, table: &str) -> Vec<Value> {
        self.sim
            .data()
            .rows(table)
            .into_iter()
            .map(|(_, r)| Value::Object(r.clone()))
            .collect()
    }

    /// One record.
    pub fn record(&self, table: &str, sys_id: &str) -> Option<Value> {
        self.sim
            .data()
            .find(table, sys_id)
            .map(|(_, r)| Value::Object(r.clone()))
    }

    /// Inserts a record as the test would through the UI; returns it.
    pub fn insert(&self, table: &str, fields: &[(&str, &str)]) -> Value {
        let fields: Map<String, Value> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        Value::Object(self.sim.data().insert(table, &fields, "admin"))
    }

    /// Opens an incident whose caller is the user with `caller_email`, as a
    /// caller phoning the desk would; `None` if there is no such user.
    pub fn open_incident(&self, caller_email: &str, short_description: &str) -> Option<Value> {
        let caller = self
            .records("sys_user")
            .into_iter()
            .find(|u| u["email"] == caller_email)?;
        Some(self.insert(
            "incident",
            &[
                ("short_description", short_description),
                ("caller_id", caller["sys_id"].as_str()?),
            ],
        ))
    }

    /// The agent changes fields of a record (e.g. an incident's state).
    pub fn agent_update(&self, table: &str, sys_id: &str, fields: &[(&str, &str)]) -> bool {
        let fields: Map<String, Value> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        self.sim
            .data()
            .update(table, sys_id, &fields, "agent.smith")
            .is_some()
    }

    /// Journal entries of `field` on a record, oldest first.
    pub fn journal(&self, table: &str, sys_id: &str, field: &str) -> Vec<String> {
        self.sim
            .data()
            .rows("sys_journal_field")
            .into_iter()
            .filter(|(_, r)| {
                r["element_id"] == sys_id && r["name"] == table && r["element"] == field
            })
            .map(|(_, r)| r["value"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Work notes of a record, oldest first.
    pub fn work_notes(&self, table: &str, sys_id: &str) -> Vec<String> {
        self.journal(table, sys_id, "work_notes")
    }

    /// The agent approves or rejects an app-approval request: the record
    /// changes, then the callback goes to the request's
    /// `u_uem_callback_url` (as the seed's business rule does).
    pub async fn decide(&self, sys_id: &str, approve: bool, notes: &str) -> Callback {
        let (url, body) = {
            let mut data = self.sim.data();
            let fields: Map<String, Value> = [
                ("approval", if approve { "approved" } else { "rejected" }),
                (
                    "request_state",
                    if approve {
                        "in_process"
                    } else {
                        "closed_rejected"
                    },
                ),
                ("u_uem_notes", notes),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), json!(v)))
            .collect();
            let row = data
                .update("sc_request", sys_id, &fields, "agent.smith")
                .unwrap_or_default();
            let url = row
                .get("u_uem_callback_url")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let body = json!({
                "request_id": row.get("u_uem_request_id"),
                "device_id": row.get("u_uem_device_id"),
                "approval_status": if approve { "APPROVED" } else { "REJECTED" },
                "updated_by": "agent.smith",
                "notes": notes,
                "updated_at": now_text(),
            });
            (url, body)
        };
        let outcome = match reqwest::Client::new().post(&url).json(&body).send().await {
            Ok(r) => Ok(r.status().as_u16()),
            Err(e) => Err(e.to_string()),
        };
        let cb = Callback { url, body, outcome };
        self.sim.data().callbacks.push(cb.clone());
        cb
    }

    /// Callbacks sent so far.
    pub fn callbacks(&self) -> Vec<Callback> {
        self.sim.data().callbacks.clone()
    }

    /// Expires every issued access token now.
    pub fn expire_tokens(&self) {
        self.sim.tokens.expire_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_queries_parse_the_supported_subset() {
        let q =
            parse_query("active=true^stateIN1,2^ORpriority<2^ORDERBYDESCsys_created_on").unwrap();
        assert_eq!(q.all.len(), 2);
        assert_eq!(q.all[1].len(), 2);
        assert_eq!(q.all[1][0].op, Op::In);
        assert_eq!(q.all[1][1].op, Op::Lt);
        assert_eq!(q.order, [("sys_created_on".to_owned(), true)]);
        assert!(parse_query("caller_id.emailISNOTEMPTY").is_ok());
        let e = parse_query("state~1").unwrap_err();
        assert!(e.contains("state~1"), "{e}");
        assert!(parse_query("sys_created_on>javascript:gs.daysAgo(1)").is_err());
    }

    #[test]
    fn terms_compare_numbers_as_numbers() {
        let t = parse_term("priority<10").unwrap();
        assert!(t.holds("9"));
        assert!(!t.holds("10"));
        let d = parse_term("sys_created_on>2026-01-01 00:00:00").unwrap();
        assert!(d.holds("2026-03-01 10:00:00"));
        assert!(!d.holds("2025-12-31 23:59:59"));
    }
}
