//! BeyondTrust Remote Support simulator: OAuth2 tokens, the Command API,
//! the Reporting API (XML) and an outbound-event sender.
//!
//! Speaks what `api-facts.md` describes: `POST /oauth2/token` (Basic
//! client credentials; at most 30 live tokens per client, the oldest
//! invalidated), `/api/command?action=…` (GET or form POST),
//! `/api/reporting?generate_report=…` answering the documented XML in either
//! namespace, `<error>No archives found…</error>` inside HTTP 200, and
//! outbound events POSTed as forms that are re-queued — holding every later
//! event — until the receiver answers 200.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use switchyard_sim::beyondtrust::{BeyondTrust, BtConfig};
//! let bt = BeyondTrust::start(BtConfig::default(), 42, 25).await?;
//! bt.set_outbound("http://127.0.0.1:8080/hooks/acme/bt/events", "event-token");
//! let lsid = bt.complete_session(Some("INC0010001"), Some("INC0010001"));
//! // ... the sender delivers support_conference_end for lsid ...
//! # let _ = lsid;
//! # Ok(()) }
//! ```
//!
//! ## Choices where the fact sheet is silent
//! - A report window selects **ended** sessions by end time:
//!   `start_time <= end < start_time + duration` (`duration=0`: up to now);
//!   `start_date=YYYY-MM-DD` with `duration` in days works the same way.
//!   Sessions appear only once they end, so a pull cursored on end time
//!   misses none.
//! - `<duration>` is `HH:MM:SS`; times carry `timestamp="<unix>"` and an
//!   ISO 8601 text.
//! - Command API and Reporting API errors other than "no archives" are
//!   `<error>` documents: 401 for a missing or invalid token, 400 for bad
//!   parameters. Token endpoint errors are OAuth JSON (`invalid_client`).
//! - Support issues are listed by `action=get_support_teams` as
//!   `support_teams/support_team/issues/issue[@id]/{code_name,description}`.
//! - Outbound events carry `outbound_event_token` as a form field; a failed
//!   delivery is retried every [`BtConfig::retry_ms`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use quick_xml::escape::escape;
use serde::Serialize;
use serde_json::json;

use crate::common::{self, Control, Flavor, SimServer, Tokens, basic_credentials, bearer_token};

/// The reporting namespace of older (Bomgar) appliances.
pub const NS_BOMGAR: &str = "http://www.bomgar.com/namespaces/API/reporting";
/// The reporting namespace of newer cloud sites.
pub const NS_BEYONDTRUST: &str = "http://www.beyondtrust.com/sra/namespaces/API/reporting";
const NS_COMMAND: &str = "http://www.bomgar.com/namespaces/API/command";

/// Event types the simulator generates, as the reports spell them.
pub const EVENT_TYPES: &[&str] = &[
    "Session Start",
    "Customer Joined Session",
    "Representative Joined Session",
    "Chat Message",
    "Session Note Added",
    "File Transfer",
    "Screen Sharing Started",
    "Session End",
];

/// The API account and behaviour of the simulated site.
#[derive(Debug, Clone)]
pub struct BtConfig {
    /// API account client id.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// Token lifetime (3600 s).
    pub token_lifetime_secs: i64,
    /// Live tokens per client before the oldest is invalidated (30).
    pub max_live_tokens: usize,
    /// Reporting namespace the site answers with.
    pub namespace: &'static str,
    /// `api_version` reported by `get_api_info`.
    pub api_version: String,
    /// Public site host name, used in key URLs.
    pub site: String,
    /// Delay before retrying a refused outbound event.
    pub retry_ms: u64,
    /// A session key's expiry only as the element's text (ISO 8601), with
    /// no `timestamp` attribute, as some sites send it.
    pub expiry_as_text: bool,
}

impl Default for BtConfig {
    fn default() -> Self {
        Self {
            client_id: "bt-client".into(),
            client_secret: "bt-client-secret".into(),
            token_lifetime_secs: 3600,
            max_live_tokens: 30,
            namespace: NS_BOMGAR,
            api_version: "1.24.1".into(),
            site: "support.acme.example".into(),
            retry_ms: 1000,
            expiry_as_text: false,
        }
    }
}

/// One event in a session.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Unix time.
    pub timestamp: i64,
    /// Type, e.g. `Chat Message`.
    pub event_type: String,
    /// Who did it.
    pub performed_by: String,
    /// To whom, if anyone.
    pub destination: Option<String>,
    /// Text, if any.
    pub body: Option<String>,
    /// `data/value[@name,@value]`.
    pub data: Vec<(String, String)>,
}

/// A representative.
#[derive(Debug, Clone, Serialize)]
pub struct Rep {
    /// Id.
    pub id: i64,
    /// Login name.
    pub username: String,
    /// Display name.
    pub display_name: String,
}

/// A finished support session.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    /// Session id.
    pub lsid: String,
    /// Start, unix time.
    pub start: i64,
    /// End, unix time.
    pub end: i64,
    /// External key (the ServiceNow task, when started from one).
    pub external_key: Option<String>,
    /// The primary representative.
    pub primary_rep: Rep,
    /// Every representative who took part.
    pub reps: Vec<Rep>,
    /// Customer: username, hostname, os, name, company, issue.
    pub customer: BTreeMap<String, String>,
    /// Events, in time order.
    pub events: Vec<Event>,
    /// Rep exit survey answers by question name (e.g. `task_number`).
    pub rep_survey: Vec<(String, String)>,
}

/// A session key the Command API generated.
#[derive(Debug, Clone, Serialize)]
pub struct SessionKey {
    /// The 7-digit key.
    pub short_key: String,
    /// `queue_id` as asked.
    pub queue_id: String,
    /// `external_key` as asked.
    pub external_key: Option<String>,
    /// URL the customer opens.
    pub key_url: String,
    /// When it expires (Unix seconds).
    pub expires: i64,
}

/// An outbound event and its delivery attempts.
#[derive(Debug, Clone, Serialize)]
pub struct Outbound {
    /// Form fields sent (each attempt adds the site's current
    /// `outbound_event_token`).
    pub fields: Vec<(String, String)>,
    /// Attempts so far.
    pub attempts: u32,
    /// Status of each attempt (0: connection failed).
    pub statuses: Vec<u16>,
}

/// A support team and its issues `(id, code_name, description)`.
#[derive(Serialize)]
struct Team {
    id: i64,
    name: String,
    issues: Vec<(i64, String, String)>,
}

#[derive(Default, Serialize)]
struct Data {
    sessions: Vec<Session>,
    keys: Vec<SessionKey>,
    teams: Vec<Team>,
    outbound_url: Option<String>,
    outbound_token: Option<String>,
    pending: VecDeque<Outbound>,
    delivered: Vec<Outbound>,
}

struct Sim {
    cfg: BtConfig,
    data: Mutex<Data>,
    tokens: Arc<Tokens>,
    wake: tokio::sync::Notify,
    /// Survey reports answer `<error>` (an API account without the
    /// permission to read them).
    refuse_surveys: std::sync::atomic::AtomicBool,
}

/// A running BeyondTrust simulator.
pub struct BeyondTrust {
    server: SimServer,
    sim: Arc<Sim>,
    control: Arc<Control>,
    sender: tokio::task::JoinHandle<()>,
}

impl Drop for BeyondTrust {
    fn drop(&mut self) {
        self.sender.abort();
    }
}

fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [("content-type", "text/xml; charset=UTF-8")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}"),
    )
        .into_response()
}

fn xml_error(status: StatusCode, ns: &str, message: &str) -> Response {
    xml(
        status,
        format!("<error xmlns=\"{ns}\">{}</error>", escape(message)),
    )
}

struct BtFlavor;

impl Flavor for BtFlavor {
    fn error(&self, status: StatusCode, message: &str) -> Response {
        xml_error(status, NS_COMMAND, message)
    }

    fn rate_limited(&self, retry_after_secs: u64) -> Response {
        common::with_retry_after(
            xml_error(
                StatusCode::TOO_MANY_REQUESTS,
                NS_COMMAND,
                "Too many requests",
            ),
            retry_after_secs,
        )
    }

    fn malformed(&self) -> Response {
        xml(
            StatusCode::OK,
            format!("<session_list xmlns=\"{NS_BOMGAR}\"><session lsid=\"ab"),
        )
    }
}

fn iso(ts: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn hms(secs: i64) -> String {
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

fn e(s: &str) -> std::borrow::Cow<'_, str> {
    escape(s)
}

impl Session {
    fn to_xml(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(
            out,
            "<session lsid=\"{}\"><session_type>support</session_type>\
             <start_time timestamp=\"{}\">{}</start_time><end_time timestamp=\"{}\">{}</end_time>\
             <duration>{}</duration><public_site id=\"1\">Default</public_site>\
             <external_key>{}</external_key><custom_attributes></custom_attributes>\
             <primary_rep id=\"{}\">{}</primary_rep>",
            e(&self.lsid),
            self.start,
            iso(self.start),
            self.end,
            iso(self.end),
            hms(self.end - self.start),
            e(self.external_key.as_deref().unwrap_or("")),
            self.primary_rep.id,
            e(&self.primary_rep.display_name),
        );
        let c = |k: &str| e(self.customer.get(k).map_or("", String::as_str)).into_owned();
        let _ = write!(
            out,
            "<customer_list><customer gsnumber=\"2\"><username>{}</username><public_ip>192.0.2.10</public_ip>\
             <hostname>{}</hostname><os>{}</os><info><name>{}</name><company>{}</company>\
             <issue>{}</issue></info></customer></customer_list><rep_list>",
            c("username"),
            c("hostname"),
            c("os"),
            c("name"),
            c("company"),
            c("issue"),
        );
        for (i, r) in self.reps.iter().enumerate() {
            let _ = write!(
                out,
                "<representative id=\"{}\" gsnumber=\"{}\"><username>{}</username>\
                 <display_name>{}</display_name><primary_rep>{}</primary_rep></representative>",
                r.id,
                10 + i,
                e(&r.username),
                e(&r.display_name),
                u8::from(r.id == self.primary_rep.id),
            );
        }
        out.push_str("</rep_list><session_details>");
        for ev in &self.events {
            let _ = write!(
                out,
                "<event timestamp=\"{}\" event_type=\"{}\"><performed_by type=\"representative\">{}</performed_by>",
                ev.timestamp,
                e(&ev.event_type),
                e(&ev.performed_by)
            );
            if let Some(d) = &ev.destination {
                let _ = write!(out, "<destination type=\"customer\">{}</destination>", e(d));
            }
            if let Some(b) = &ev.body {
                let _ = write!(out, "<body>{}</body>", e(b));
            }
            if !ev.data.is_empty() {
                out.push_str("<data>");
                for (n, v) in &ev.data {
                    let _ = write!(out, "<value name=\"{}\" value=\"{}\"/>", e(n), e(v));
                }
                out.push_str("</data>");
            }
            out.push_str("</event>");
        }
        out.push_str("</session_details></session>");
    }
}

const REPS: &[(i64, &str, &str)] = &[
    (3, "jrep", "Jane Rep"),
    (4, "mtech", "Max Tech"),
    (5, "sdesk", "Sam Desk"),
];

fn rep(i: usize) -> Rep {
    let (id, u, d) = REPS[i % REPS.len()];
    Rep {
        id,
        username: u.into(),
        display_name: d.into(),
    }
}

fn lsid(rng: &mut fastrand::Rng) -> String {
    (0..32)
        .map(|_| char::from_digit(rng.u32(0..16), 16).unwrap())
        .collect()
}

/// Builds a finished session ending at `end`.
fn make_session(
    rng: &mut fastrand::Rng,
    i: usize,
    end: i64,
    external_key: Option<String>,
    task_number: Option<String>,
) -> Session {
    let len = 120 + rng.i64(0..3600);
    let start = end - len;
    let primary = rep(rng.usize(0..REPS.len()));
    let mut reps = vec![primary.clone()];
    if rng.u32(0..4) == 0 {
        reps.push(rep(REPS.iter().position(|r| r.0 == primary.id).unwrap() + 1));
    }
    let person = common::person(i % 40);
    let customer: BTreeMap<String, String> = [
        ("username", person.user_name.clone()),
        ("hostname", format!("LT-{:05}", rng.u32(0..100_000))),
        (
            "os",
            ["Windows 11", "macOS 14", "iOS 17"][rng.usize(0..3)].into(),
        ),
        (
            "name",
            format!("{} {}", person.first_name, person.last_name),
        ),
        ("company", "Acme".into()),
        (
            "issue",
            ["Printer", "Email", "VPN", "Phone"][rng.usize(0..4)].into(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut events = vec![Event {
        timestamp: start,
        event_type: "Session Start".into(),
        performed_by: primary.display_name.clone(),
        destination: None,
        body: None,
        data: Vec::new(),
    }];
    let n = 2 + rng.usize(0..5);
    for k in 0..n {
        let ty = EVENT_TYPES[1 + rng.usize(0..EVENT_TYPES.len() - 2)];
        let t = start + len * (k as i64 + 1) / (n as i64 + 2);
        let (body, data) = match ty {
            "Chat Message" => (
                Some(format!("Hello {}, how can I help?", person.first_name)),
                vec![],
            ),
            "Session Note Added" => (
                Some("Customer's VPN profile reinstalled.".to_owned()),
                vec![],
            ),
            "File Transfer" => (
                None,
                vec![
                    ("Filename".to_owned(), "diagnostics.zip".to_owned()),
                    ("Status".to_owned(), "Completed".to_owned()),
                ],
            ),
            _ => (None, vec![]),
        };
        events.push(Event {
            timestamp: t,
            event_type: ty.into(),
            performed_by: primary.display_name.clone(),
            destination: (ty == "Chat Message").then(|| customer["name"].clone()),
            body,
            data,
        });
    }
    events.push(Event {
        timestamp: end,
        event_type: "Session End".into(),
        performed_by: primary.display_name.clone(),
        destination: None,
        body: None,
        data: Vec::new(),
    });
    Session {
        lsid: lsid(rng),
        start,
        end,
        external_key,
        primary_rep: primary,
        reps,
        customer,
        events,
        rep_survey: task_number
            .map(|t| vec![("task_number".to_owned(), t)])
            .unwrap_or_default(),
    }
}

impl Data {
    fn seed(seed: u64, sessions: usize, now: i64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut d = Data {
            teams: vec![
                Team {
                    id: 1,
                    name: "Service Desk".into(),
                    issues: vec![
                        (11, "printer".into(), "Printer problems".into()),
                        (12, "email".into(), "Email and calendar".into()),
                    ],
                },
                Team {
                    id: 2,
                    name: "Mobile".into(),
                    issues: vec![(21, "phone".into(), "Phones and tablets".into())],
                },
            ],
            ..Default::default()
        };
        // Spread over the last 48 hours, oldest first.
        for i in 0..sessions {
            let end = now - 48 * 3600 + (48 * 3600 * (i as i64 + 1)) / (sessions as i64 + 1);
            let key = (rng.u32(0..3) == 0).then(|| format!("INC{:07}", 10_001 + rng.u32(0..20)));
            let task = (key.is_none() && rng.u32(0..3) == 0)
                .then(|| format!("INC{:07}", 10_001 + rng.u32(0..20)));
            d.sessions.push(make_session(&mut rng, i, end, key, task));
        }
        d
    }
}

type S = State<Arc<Sim>>;

impl Sim {
    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        common::state(&self.data)
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        bearer_token(headers).is_some_and(|t| self.tokens.check(&t).is_some())
    }
}

async fn token(State(sim): S, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let oauth = |status: StatusCode, error: &str| {
        (status, axum::Json(json!({ "error": error }))).into_response()
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    match basic_credentials(&headers) {
        Some((id, secret)) if id == sim.cfg.client_id && secret == sim.cfg.client_secret => {
            let t = sim.tokens.issue(
                &id,
                sim.cfg.token_lifetime_secs,
                Some(sim.cfg.max_live_tokens),
            );
            axum::Json(json!({
                "access_token": t, "token_type": "Bearer", "expires_in": sim.cfg.token_lifetime_secs,
            }))
            .into_response()
        }
        _ => oauth(StatusCode::UNAUTHORIZED, "invalid_client"),
    }
}

/// GET query or POSTed form: the Command API takes both.
fn params(
    method: &Method,
    query: HashMap<String, String>,
    body: &Bytes,
) -> HashMap<String, String> {
    let mut p = query;
    if method == Method::POST {
        p.extend(url::form_urlencoded::parse(body).into_owned());
    }
    p
}

async fn command(
    State(sim): S,
    method: Method,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if !sim.authorized(&headers) {
        return xml_error(
            StatusCode::UNAUTHORIZED,
            NS_COMMAND,
            "Invalid or expired access token.",
        );
    }
    let p = params(&method, q, &body);
    match p.get("action").map(String::as_str) {
        Some("get_api_info") => xml(
            StatusCode::OK,
            format!(
                "<api_information xmlns=\"{NS_COMMAND}\"><api_version>{}</api_version>\
                 <timestamp>{}</timestamp><permissions><perm_command>1</perm_command>\
                 <perm_reporting>1</perm_reporting></permissions></api_information>",
                e(&sim.cfg.api_version),
                common::now_secs()
            ),
        ),
        Some("generate_session_key") => {
            if p.get("type").map(String::as_str) != Some("support") {
                return xml_error(
                    StatusCode::BAD_REQUEST,
                    NS_COMMAND,
                    "Invalid or missing type: use type=support.",
                );
            }
            let queue = p
                .get("queue_id")
                .cloned()
                .unwrap_or_else(|| "general".into());
            let valid_queue = queue == "general"
                || ["rep:", "team:", "embassy:", "issue:", "rep_username:"]
                    .iter()
                    .any(|pre| queue.strip_prefix(pre).is_some_and(|rest| !rest.is_empty()));
            if !valid_queue {
                return xml_error(
                    StatusCode::BAD_REQUEST,
                    NS_COMMAND,
                    &format!("Invalid queue_id {queue}."),
                );
            }
            let short_key = format!("{:07}", fastrand::u32(0..10_000_000));
            let key_url = format!("https://{}/{short_key}", sim.cfg.site);
            let expires = common::now_secs() + 86_400;
            let external_key = p.get("external_key").cloned();
            sim.data().keys.push(SessionKey {
                short_key: short_key.clone(),
                queue_id: queue,
                external_key: external_key.clone(),
                key_url: key_url.clone(),
                expires,
            });
            let stamp = if sim.cfg.expiry_as_text {
                String::new()
            } else {
                format!(" timestamp=\"{expires}\"")
            };
            let subject = "Remote support session invitation";
            let mail = format!(
                "To start your support session, open {key_url} or enter key {short_key} at https://{}.",
                sim.cfg.site
            );
            xml(
                StatusCode::OK,
                format!(
                    "<session_key xmlns=\"{NS_COMMAND}\"><short_key>{short_key}</short_key>\
                     <key_url>{}</key_url><expires{stamp}>{}</expires>\
                     <mail_subject>{subject}</mail_subject><mail_body>{}</mail_body></session_key>",
                    e(&key_url),
                    iso(expires),
                    e(&mail)
                ),
            )
        }
        Some("get_support_teams") => {
            let data = sim.data();
            let mut out = format!("<support_teams xmlns=\"{NS_COMMAND}\">");
            for Team { id, name, issues } in &data.teams {
                out.push_str(&format!(
                    "<support_team id=\"{id}\"><name>{}</name><issues>",
                    e(name)
                ));
                for (iid, code, desc) in issues {
                    out.push_str(&format!(
                        "<issue id=\"{iid}\"><code_name>{}</code_name><description>{}</description></issue>",
                        e(code),
                        e(desc)
                    ));
                }
                out.push_str("</issues></support_team>");
            }
            out.push_str("</support_teams>");
            xml(StatusCode::OK, out)
        }
        Some(other) => xml_error(
            StatusCode::BAD_REQUEST,
            NS_COMMAND,
            &format!("Invalid action {other}."),
        ),
        None => xml_error(StatusCode::BAD_REQUEST, NS_COMMAND, "Missing action."),
    }
}

fn parse_i64(p: &HashMap<String, String>, name: &str) -> Result<Option<i64>, String> {
    p.get(name)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| format!("Invalid {name} `{v}`."))
        })
        .transpose()
}

/// The sessions a report request selects, or why the request is wrong.
fn select<'a>(
    data: &'a Data,
    p: &HashMap<String, String>,
    now: i64,
) -> Result<Vec<&'a Session>, String> {
    if let Some(l) = p.get("lsid") {
        return Ok(data.sessions.iter().filter(|s| &s.lsid == l).collect());
    }
    if let Some(ls) = p.get("lsids") {
        let want: Vec<&str> = ls.split(',').map(str::trim).collect();
        return Ok(data
            .sessions
            .iter()
            .filter(|s| want.contains(&s.lsid.as_str()))
            .collect());
    }
    let (from, to) = if let Some(start) = parse_i64(p, "start_time")? {
        let duration = parse_i64(p, "duration")?.unwrap_or(0);
        if duration < 0 {
            return Err("Invalid duration.".into());
        }
        (
            start,
            if duration == 0 {
                now + 1
            } else {
                start + duration
            },
        )
    } else if let Some(date) = p.get("start_date") {
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        let day = time::Date::parse(date, &fmt)
            .map_err(|_| format!("Invalid start_date `{date}`: use YYYY-MM-DD."))?;
        let start = day.midnight().assume_utc().unix_timestamp();
        let days = parse_i64(p, "duration")?.unwrap_or(0);
        (
            start,
            if days == 0 {
                now + 1
            } else {
                start + days * 86_400
            },
        )
    } else {
        return Err("One of start_time, start_date, lsid or lsids is required.".into());
    };
    Ok(data
        .sessions
        .iter()
        .filter(|s| s.end >= from && s.end < to)
        .collect())
}

async fn reporting(
    State(sim): S,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Response {
    let ns = sim.cfg.namespace;
    if !sim.authorized(&headers) {
        return xml_error(
            StatusCode::UNAUTHORIZED,
            ns,
            "Invalid or expired access token.",
        );
    }
    let data = sim.data();
    let sessions = match select(&data, &p, common::now_secs()) {
        Ok(s) => s,
        Err(m) => return xml_error(StatusCode::BAD_REQUEST, ns, &m),
    };
    let no_archives = || {
        xml_error(
            StatusCode::OK,
            ns,
            "No archives found for the specified time range.",
        )
    };
    match p.get("generate_report").map(String::as_str) {
        Some("SupportSession") => {
            if sessions.is_empty() {
                return no_archives();
            }
            let mut out = format!("<session_list xmlns=\"{ns}\">");
            for s in sessions {
                s.to_xml(&mut out);
            }
            out.push_str("</session_list>");
            xml(StatusCode::OK, out)
        }
        Some("SupportRepExitSurvey" | "SupportCustExitSurvey")
            if sim
                .refuse_surveys
                .load(std::sync::atomic::Ordering::Relaxed) =>
        {
            xml_error(
                StatusCode::OK,
                NS_COMMAND,
                "The API account does not have permission to run this report.",
            )
        }
        Some(kind @ ("SupportRepExitSurvey" | "SupportCustExitSurvey")) => {
            let with: Vec<&&Session> = sessions
                .iter()
                .filter(|s| kind == "SupportRepExitSurvey" && !s.rep_survey.is_empty())
                .collect();
            if with.is_empty() {
                return no_archives();
            }
            let mut out = format!("<exit_survey_list xmlns=\"{ns}\">");
            for s in with {
                out.push_str(&format!(
                    "<exit_survey lsid=\"{}\"><question_list>",
                    e(&s.lsid)
                ));
                for (q, a) in &s.rep_survey {
                    out.push_str(&format!(
                        "<question id=\"1\" type=\"text\"><name>{}</name><answer_list><answer>{}</answer></answer_list></question>",
                        e(q),
                        e(a)
                    ));
                }
                out.push_str("</question_list></exit_survey>");
            }
            out.push_str("</exit_survey_list>");
            xml(StatusCode::OK, out)
        }
        Some(other) => xml_error(
            StatusCode::BAD_REQUEST,
            ns,
            &format!("Invalid report type {other}."),
        ),
        None => xml_error(StatusCode::BAD_REQUEST, ns, "Missing generate_report."),
    }
}

/// Delivers outbound events in order; a refused one is retried and holds
/// every later event behind it.
async fn sender(sim: Arc<Sim>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a plain HTTP client");
    loop {
        let next = {
            let d = sim.data();
            d.pending
                .front()
                .cloned()
                .zip(d.outbound_url.clone())
                .map(|(e, url)| (e, url, d.outbound_token.clone()))
        };
        let Some((event, url, token)) = next else {
            sim.wake.notified().await;
            continue;
        };
        // The token is the site's current one, as on a real site where it
        // is part of the receiver's configuration, not of the event.
        let mut fields = event.fields.clone();
        fields.extend(token.map(|t| ("outbound_event_token".to_owned(), t)));
        let status = match http.post(&url).form(&fields).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        let delivered = {
            let mut d = sim.data();
            if let Some(front) = d.pending.front_mut() {
                front.attempts += 1;
                front.statuses.push(status);
            }
            if status == 200
                && let Some(done) = d.pending.pop_front()
            {
                d.delivered.push(done);
            }
            status == 200
        };
        if !delivered {
            tokio::time::sleep(Duration::from_millis(sim.cfg.retry_ms)).await;
        }
    }
}

impl BeyondTrust {
    /// Starts on a free loopback port with `sessions` finished sessions
    /// spread over the last 48 hours.
    pub async fn start(cfg: BtConfig, seed: u64, sessions: usize) -> std::io::Result<Self> {
        Self::start_on(cfg, seed, sessions, common::loopback()).await
    }

    /// Like [`BeyondTrust::start`] on a given address.
    pub async fn start_on(
        cfg: BtConfig,
        seed: u64,
        sessions: usize,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<Self> {
        let sim = Arc::new(Sim {
            cfg,
            data: Mutex::new(Data::seed(seed, sessions, common::now_secs())),
            tokens: Arc::new(Tokens::default()),
            wake: tokio::sync::Notify::new(),
            refuse_surveys: std::sync::atomic::AtomicBool::new(false),
        });
        let control = Arc::new(Control::default());
        control.expires(sim.tokens.clone());
        let router = Router::new()
            .route("/oauth2/token", post(token))
            .route("/api/command", get(command).post(command))
            .route("/api/reporting", get(reporting))
            .with_state(sim.clone());
        let s = sim.clone();
        let router = common::instrument(router, control.clone(), Arc::new(BtFlavor), move || {
            serde_json::to_value(&*s.data()).unwrap_or_default()
        });
        let server = SimServer::start(router, addr).await?;
        let sender = tokio::spawn(sender(sim.clone()));
        Ok(Self {
            server,
            sim,
            control,
            sender,
        })
    }

    /// Base URL of the site.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &BtConfig {
        &self.sim.cfg
    }

    /// Request log and fault injection.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Every finished session, oldest first.
    pub fn sessions(&self) -> Vec<Session> {
        self.sim.data().sessions.clone()
    }

    /// Adds `n` sessions ending over the past `span_secs`, quickly (for
    /// volume tests). Returns their lsids.
    pub fn add_sessions(&self, seed: u64, n: usize, span_secs: i64) -> Vec<String> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let now = common::now_secs();
        let mut d = self.sim.data();
        (0..n)
            .map(|i| {
                let end = now - span_secs + span_secs * (i as i64 + 1) / (n as i64 + 1);
                let s = make_session(&mut rng, i, end, None, None);
                let id = s.lsid.clone();
                d.sessions.push(s);
                id
            })
            .collect()
    }

    /// A session ends (one second ago, so that a report window "up to now"
    /// in whole seconds already covers it): it joins the reports and, if an
    /// outbound URL is set, `support_conference_end` (and the rep exit
    /// survey event when there is a task number) are queued for delivery.
    /// Returns the lsid.
    pub fn complete_session(
        &self,
        external_key: Option<&str>,
        task_number: Option<&str>,
    ) -> String {
        let mut rng = fastrand::Rng::new();
        let ended = common::now_secs() - 1;
        let i = rng.usize(0..40);
        let s = make_session(
            &mut rng,
            i,
            ended,
            external_key.map(str::to_owned),
            task_number.map(str::to_owned),
        );
        let lsid = s.lsid.clone();
        let mut d = self.sim.data();
        d.sessions.push(s);
        drop(d);
        self.send_event("support_conference_end", &lsid, external_key);
        if task_number.is_some() {
            self.send_event(
                "support_conference_rep_exit_survey_completed",
                &lsid,
                external_key,
            );
        }
        lsid
    }

    /// Queues one outbound event (no-op without an outbound URL).
    pub fn send_event(&self, event: &str, lsid: &str, external_key: Option<&str>) {
        let mut d = self.sim.data();
        if d.outbound_url.is_none() {
            return;
        }
        let fields = vec![
            ("event".to_owned(), event.to_owned()),
            ("version".to_owned(), "3".to_owned()),
            ("timestamp".to_owned(), common::now_secs().to_string()),
            ("lsid".to_owned(), lsid.to_owned()),
            (
                "external_key".to_owned(),
                external_key.unwrap_or("").to_owned(),
            ),
            ("site_id".to_owned(), "1".to_owned()),
        ];
        d.pending.push_back(Outbound {
            fields,
            attempts: 0,
            statuses: Vec::new(),
        });
        drop(d);
        self.sim.wake.notify_one();
    }

    /// Sets where outbound events go and the token they carry.
    pub fn set_outbound(&self, url: &str, token: &str) {
        let mut d = self.sim.data();
        d.outbound_url = Some(url.to_owned());
        d.outbound_token = Some(token.to_owned());
        drop(d);
        self.sim.wake.notify_one();
    }

    /// Events delivered (answered 200), in order.
    pub fn delivered(&self) -> Vec<Outbound> {
        self.sim.data().delivered.clone()
    }

    /// Events waiting (the first is being retried).
    pub fn pending(&self) -> Vec<Outbound> {
        self.sim.data().pending.iter().cloned().collect()
    }

    /// Makes the exit-survey reports answer `<error>` (as for an API
    /// account without the permission), or answer again.
    pub fn refuse_surveys(&self, refuse: bool) {
        self.sim
            .refuse_surveys
            .store(refuse, std::sync::atomic::Ordering::Relaxed);
    }

    /// Session keys generated so far.
    pub fn session_keys(&self) -> Vec<SessionKey> {
        self.sim.data().keys.clone()
    }

    /// Live tokens of the API account.
    pub fn live_tokens(&self) -> usize {
        self.sim.tokens.live()
    }

    /// Expires every token now.
    pub fn expire_tokens(&self) {
        self.sim.tokens.expire_all();
    }
}
