//! A ServiceNow client for Switchyard plugins: the Table API (read, query,
//! insert, update, work notes), encoded queries that cannot be widened by
//! the values put into them, `Link`-header paging, retries through
//! [`switchyard_sdk::retry`], and ServiceNow's error bodies turned into the
//! plugin's typed errors.
//!
//! The host attaches the credential (Basic or OAuth2) of the slot named
//! [`CREDENTIAL`] (or [`ServiceNow::with_credential`]); the plugin never
//! sees it.
//!
//! ```no_run
//! use switchyard_servicenow::{Query, ServiceNow, SysId};
//!
//! # fn main() -> switchyard_sdk::Result<()> {
//! let sn = ServiceNow::new("https://acme.service-now.com");
//! // A value with `^` in it is refused instead of adding a condition.
//! let q = Query::new().eq("number", "INC0010001").eq("active", "true");
//! let rows = sn.query("incident", &q, &["sys_id", "short_description"], 1)?;
//! if let Some(row) = rows.first() {
//!     let id = SysId::parse(&switchyard_servicenow::field(row, "sys_id"))?;
//!     sn.work_note("incident", &id, "Looked at by Switchyard")?;
//! }
//! # Ok(()) }
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use switchyard_sdk::http::{self, Request, Response};
use switchyard_sdk::retry::Retry;
use switchyard_sdk::schemars::{self, JsonSchema};
use switchyard_sdk::{Error, Result, credentials};

mod query;

pub use query::{Query, is_safe_value};

/// The usual name of the credential slot for ServiceNow.
pub const CREDENTIAL: &str = "servicenow";

/// The manifest's credential slot [`CREDENTIAL`]: Basic or OAuth2 client
/// credentials, `purpose` saying what the plugin uses ServiceNow for.
pub fn credential_slot(purpose: &str) -> switchyard_sdk::CredentialSlot {
    use switchyard_sdk::CredentialKind;
    switchyard_sdk::CredentialSlot::new(
        CREDENTIAL,
        purpose,
        &[
            CredentialKind::Basic,
            CredentialKind::Oauth2ClientCredentials,
        ],
    )
}

/// Rows per page when reading a whole result set.
const PAGE: usize = 1000;

/// A record's sys_id: 32 hexadecimal digits. Anything else could, put into
/// a URL path, address another record (`../`, `?`, `/`), so it is refused
/// when parsed, deserialised or declared in an input schema.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SysId(String);

impl SysId {
    /// `s` as a sys_id, or `invalid-input` naming what was wrong.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::invalid_input(format!(
                "`{}` is not a sys_id (32 hexadecimal digits)",
                shorten(s)
            )))
        }
    }

    /// Whether `s` is a sys_id.
    pub fn is(s: &str) -> bool {
        Self::parse(s).is_ok()
    }

    /// The 32 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A task number (`INC0010001`, `RITM0001234`): letters, digits and
/// `-_.`, at most 40 characters, so that it is safe in a query.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskNumber(String);

impl TaskNumber {
    /// `s` as a task number, or `invalid-input` naming what was wrong.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if !s.is_empty()
            && s.len() <= 40
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::invalid_input(format!(
                "`{}` is not a task number (letters, digits, - _ . only)",
                shorten(s)
            )))
        }
    }

    /// The number.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a checked string type shares: conversions through its `parse`,
/// `Display`, and a schema with its pattern, so that the host refuses a bad
/// value (422, naming where) before the plugin runs.
macro_rules! checked_string {
    ($ty:ty, $name:literal, $pattern:literal, $description:literal) => {
        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(s: String) -> std::result::Result<Self, String> {
                Self::parse(&s).map_err(|e| e.to_string())
            }
        }

        impl From<$ty> for String {
            fn from(v: $ty) -> Self {
                v.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl JsonSchema for $ty {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $description,
                })
            }
        }
    };
}

checked_string!(
    SysId,
    "SysId",
    "^[0-9a-fA-F]{32}$",
    "A ServiceNow sys_id: 32 hexadecimal digits"
);
checked_string!(
    TaskNumber,
    "TaskNumber",
    "^[A-Za-z0-9_.-]{1,40}$",
    "A ServiceNow task number, e.g. INC0010001"
);

/// At most 64 characters of untrusted text, for an error message.
fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A task record (incident, problem, change, request item, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// sys_id.
    pub sys_id: SysId,
    /// Number, e.g. `INC0010001`.
    pub number: String,
    /// Concrete table (`incident`, `problem`, …), where work notes go.
    pub table: String,
    /// `state` value.
    pub state: String,
}

/// Reads a text field of a row; a reference field gives its sys_id
/// (`{"link", "value"}`, when read without
/// `sysparm_exclude_reference_link`).
pub fn field(row: &Value, name: &str) -> String {
    match &row[name] {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// The fields of a row to write, from a JSON object literal.
pub fn row(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// What ServiceNow's error body said: `{"error": {"message", "detail"},
/// "status": "failure"}`, or the start of whatever else it sent.
pub fn error_message(r: &Response) -> String {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let message = v["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let t: String = r.text().chars().take(200).collect();
            if t.trim().is_empty() {
                "(empty body)".into()
            } else {
                t
            }
        });
    match v["error"]["detail"].as_str().filter(|d| !d.is_empty()) {
        Some(d) => format!("{message} ({d})"),
        None => message,
    }
}

/// Turns an answer that is not 2xx into a typed error; `what` says what
/// was being done ("reading the incident").
///
/// - 404: `not-found` (the record, or the table, does not exist);
/// - 401: `upstream` (status kept) naming the credential to check;
/// - 403: `upstream` naming the integration user's roles or ACLs: the
///   instance refused the plugin, not the actor, so the host retries a
///   queued delivery after the operator fixes it rather than dropping it;
/// - 429 and 5xx: `upstream` with the status and `Retry-After`;
/// - anything else (400: a bad query or field): `upstream` with the
///   status and ServiceNow's message and detail.
pub fn check(r: Response, what: &str) -> Result<Response> {
    if r.is_success() {
        return Ok(r);
    }
    let message = error_message(&r);
    let status = r.status;
    let retry_after_secs = r.retry_after_secs();
    if status == 404 {
        return Err(Error::not_found(format!(
            "ServiceNow found nothing {what}: {message}"
        )));
    }
    let message = match status {
        401 => format!(
            "ServiceNow rejected the credentials {what}: {message}; check the ServiceNow credential"
        ),
        403 => format!(
            "ServiceNow refused {what}: the integration user lacks a role or ACL: {message}"
        ),
        429 => format!(
            "ServiceNow is rate limiting {what}{}",
            retry_after_secs
                .map(|s| format!("; retry in {s} s"))
                .unwrap_or_default()
        ),
        _ => format!("ServiceNow failed {what}: {message}"),
    };
    Err(Error::Upstream {
        status: Some(status),
        message,
        retry_after_secs,
    })
}

/// Whether `name` can be a table or field name (see [`query::is_field`];
/// tables take no `.`); anything else would change the URL.
fn check_name(kind: &str, name: &str, dots: bool) -> Result<()> {
    if query::is_field(name) && (dots || !name.contains('.')) {
        Ok(())
    } else {
        Err(Error::internal(format!(
            "`{}` is not a ServiceNow {kind} name",
            shorten(name)
        )))
    }
}

fn fields_param(fields: &[&str]) -> Result<String> {
    for f in fields {
        check_name("field", f, true)?;
    }
    Ok(fields.join(","))
}

/// The links of a `Link` header (RFC 8288): `(target, params)` pairs.
/// Targets are read between `<` and `>`, so a comma inside one (ServiceNow
/// writes `sysparm_fields=a,b,c` unencoded) does not split it.
fn links(header: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = header;
    while let Some(start) = rest.find('<') {
        let Some(len) = rest[start + 1..].find('>') else {
            break;
        };
        let target = &rest[start + 1..start + 1 + len];
        let after = &rest[start + 2 + len..];
        // Parameters run to the next link (`, <`) or the end.
        let end = after
            .char_indices()
            .find(|&(i, c)| c == ',' && after[i + 1..].trim_start().starts_with('<'))
            .map_or(after.len(), |(i, _)| i);
        out.push((target, &after[..end]));
        rest = &after[end..];
    }
    out
}

/// The `rel="next"` target of a `Link` header.
fn next_link(r: &Response) -> Option<String> {
    links(r.header("link")?)
        .into_iter()
        .find_map(|(target, params)| {
            let is_next = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
            });
            is_next.then(|| target.to_owned())
        })
}

/// Where to read the page after `r`: its `next` link, if it is on `own`
/// (the credential must not follow a link elsewhere); None after the last.
fn next_page(r: &Response, own: &str, what: &str) -> Result<Option<String>> {
    match next_link(r) {
        None => Ok(None),
        Some(next) if origin(&next).as_deref() == Some(own) => Ok(Some(next)),
        Some(next) => Err(Error::upstream(format!(
            "ServiceNow's next page {what} is on another origin ({}); not followed",
            origin(&next).unwrap_or_else(|| shorten(&next))
        ))),
    }
}

/// `scheme://host[:port]` of a URL.
fn origin(u: &str) -> Option<String> {
    let u = url::Url::parse(u).ok()?;
    Some(u.origin().ascii_serialization())
}

/// A ServiceNow instance.
#[derive(Debug, Clone)]
pub struct ServiceNow {
    base: String,
    credential: String,
    retry: Retry,
}

impl ServiceNow {
    /// The instance at `base` (`https://acme.service-now.com`), with the
    /// credential slot [`CREDENTIAL`].
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim().trim_end_matches('/').to_owned(),
            credential: CREDENTIAL.to_owned(),
            retry: Retry::default(),
        }
    }

    /// The instance at `base` when one is configured and the tenant bound
    /// the credential slot [`CREDENTIAL`]; None otherwise (for plugins that
    /// use ServiceNow optionally).
    pub fn configured(base: Option<String>) -> Option<Self> {
        let base = base.filter(|b| !b.trim().is_empty())?;
        credentials::list()
            .iter()
            .any(|c| c.name == CREDENTIAL)
            .then(|| Self::new(&base))
    }

    /// Uses the credential slot `name` instead of [`CREDENTIAL`].
    pub fn with_credential(mut self, name: &str) -> Self {
        self.credential = name.to_owned();
        self
    }

    /// Retries with `retry` instead of [`Retry::default`].
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// The instance's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn table_url(&self, table: &str) -> Result<String> {
        check_name("table", table, false)?;
        Ok(format!("{}/api/now/table/{table}", self.base))
    }

    /// Sends `req` with the credential, retrying as `retry` says, and
    /// checks the answer.
    fn send(&self, req: Request, retry: Retry, what: &str) -> Result<Response> {
        let req = req
            .header("accept", "application/json")
            .credential(&self.credential);
        let r = retry
            .send(&req)
            .map_err(|e| http::error_from("ServiceNow", e))?;
        check(r, what)
    }

    /// The `result` of an answer.
    fn result(r: &Response, what: &str) -> Result<Value> {
        let mut v: Value = r
            .json()
            .map_err(|e| Error::upstream(format!("ServiceNow's answer {what} is not JSON: {e}")))?;
        match v.get_mut("result") {
            Some(result) => Ok(result.take()),
            None => Err(Error::upstream(format!(
                "ServiceNow's answer {what} has no `result`"
            ))),
        }
    }

    /// The row of `table` with `sys_id`, with `fields` (all when empty);
    /// None when there is none.
    pub fn get(&self, table: &str, sys_id: &SysId, fields: &[&str]) -> Result<Option<Value>> {
        let what = format!("reading {table} {sys_id}");
        let mut url = format!("{}/{sys_id}", self.table_url(table)?);
        if !fields.is_empty() {
            url.push_str("?sysparm_exclude_reference_link=true&sysparm_fields=");
            url.push_str(&fields_param(fields)?);
        }
        match self.send(Request::get(url), self.retry, &what) {
            Ok(r) => Self::result(&r, &what).map(Some),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn query_url(
        &self,
        table: &str,
        query: &Query,
        fields: &[&str],
        limit: usize,
    ) -> Result<String> {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("sysparm_query", &query.encode()?);
        if !fields.is_empty() {
            q.append_pair("sysparm_fields", &fields_param(fields)?);
        }
        q.append_pair("sysparm_limit", &limit.to_string())
            .append_pair("sysparm_exclude_reference_link", "true");
        Ok(format!("{}?{}", self.table_url(table)?, q.finish()))
    }

    /// Rows of `table` matching `query`, at most `limit`, with `fields`
    /// (all when empty).
    pub fn query(
        &self,
        table: &str,
        query: &Query,
        fields: &[&str],
        limit: usize,
    ) -> Result<Vec<Value>> {
        let what = format!("reading {table}");
        let url = self.query_url(table, query, fields, limit)?;
        let r = self.send(Request::get(url), self.retry, &what)?;
        rows(Self::result(&r, &what)?, &what)
    }

    /// Every row of `table` matching `query`, following the `Link`
    /// header's `next` page by page; refuses (`upstream`) a result of more
    /// than `max_rows`, rather than reading without end. A `next` link to
    /// another origin is not followed (the credential would go with it).
    /// It fails rather than return part of the rows: when the pages end
    /// (no `next`, or an empty page) with fewer rows than ServiceNow's
    /// `X-Total-Count` said, the answer is `upstream`.
    pub fn query_all(
        &self,
        table: &str,
        query: &Query,
        fields: &[&str],
        max_rows: usize,
    ) -> Result<Vec<Value>> {
        let what = format!("reading {table}");
        let mut url = self.query_url(table, query, fields, PAGE.min(max_rows.max(1)))?;
        let own = origin(&self.base).ok_or_else(|| {
            Error::internal(format!("the ServiceNow URL `{}` does not parse", self.base))
        })?;
        let mut out = Vec::new();
        loop {
            let r = self.send(Request::get(url), self.retry, &what)?;
            let page = rows(Self::result(&r, &what)?, &what)?;
            let empty = page.is_empty();
            out.extend(page);
            if out.len() > max_rows {
                return Err(Error::upstream(format!(
                    "ServiceNow has more than {max_rows} rows {what}; narrow the query"
                )));
            }
            let total = r
                .header("x-total-count")
                .and_then(|t| t.trim().parse::<usize>().ok());
            match next_page(&r, &own, &what)? {
                Some(next) if !empty => url = next,
                _ => {
                    return match total {
                        Some(total) if out.len() < total => Err(Error::upstream(format!(
                            "ServiceNow said {total} rows {what} but its pages held {}",
                            out.len()
                        ))),
                        _ => Ok(out),
                    };
                }
            }
        }
    }

    /// Inserts a row into `table`; returns its sys_id. An insert is not
    /// retried after a timeout or a 5xx (it may have been written): the
    /// caller checks what exists before trying again.
    pub fn insert(&self, table: &str, fields: &Map<String, Value>) -> Result<SysId> {
        let row = self.insert_row(table, fields, &["sys_id"])?;
        SysId::parse(&field(&row, "sys_id")).map_err(|_| {
            Error::upstream(format!(
                "ServiceNow created a {table} record but did not say its sys_id"
            ))
        })
    }

    /// Inserts a row into `table` and returns the created row's `fields`
    /// (its number and state, say), read from the insert's own answer. Not
    /// retried after a timeout or a 5xx, like [`ServiceNow::insert`].
    pub fn insert_row(
        &self,
        table: &str,
        fields: &Map<String, Value>,
        return_fields: &[&str],
    ) -> Result<Value> {
        let what = format!("creating a {table} record");
        let url = format!(
            "{}?sysparm_exclude_reference_link=true&sysparm_fields={}",
            self.table_url(table)?,
            fields_param(return_fields)?
        );
        let r = self.send(
            Request::post(url).json(fields)?,
            self.retry.idempotent(false),
            &what,
        )?;
        Self::result(&r, &what)
    }

    /// Sets fields of a row (a `PATCH` that sets values is safe to repeat;
    /// for journal fields use [`ServiceNow::work_note`]).
    pub fn update(&self, table: &str, sys_id: &SysId, fields: &Map<String, Value>) -> Result<()> {
        let url = format!("{}/{sys_id}?sysparm_fields=sys_id", self.table_url(table)?);
        self.send(
            Request::patch(url).json(fields)?,
            self.retry.idempotent(true),
            &format!("updating {table} {sys_id}"),
        )
        .map(drop)
    }

    /// Appends a work note to a task. `work_notes` is a journal field: each
    /// `PATCH` adds an entry, so this is retried only when ServiceNow
    /// refused it before writing (429).
    pub fn work_note(&self, table: &str, sys_id: &SysId, note: &str) -> Result<()> {
        let url = format!("{}/{sys_id}?sysparm_fields=sys_id", self.table_url(table)?);
        let mut f = Map::new();
        f.insert("work_notes".into(), Value::String(note.to_owned()));
        self.send(
            Request::patch(url).json(&f)?,
            self.retry.idempotent(false),
            &format!("writing a work note on {table} {sys_id}"),
        )
        .map(drop)
    }

    /// The task whose number or sys_id is `key`, in `table` (`task` for
    /// any kind of task); None when there is none, or when `key` can be
    /// neither.
    pub fn find_task(&self, table: &str, key: &str) -> Result<Option<Task>> {
        let key = key.trim();
        let query = if let Ok(id) = SysId::parse(key) {
            Query::new().eq("sys_id", id.as_str())
        } else if let Ok(n) = TaskNumber::parse(key) {
            Query::new().eq("number", n.as_str())
        } else {
            return Ok(None);
        };
        let rows = self.query(
            table,
            &query,
            &["sys_id", "number", "sys_class_name", "state"],
            1,
        )?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let class = field(r, "sys_class_name");
        Ok(Some(Task {
            sys_id: SysId::parse(&field(r, "sys_id")).map_err(|_| {
                Error::upstream(format!("ServiceNow's task {key} has no valid sys_id"))
            })?,
            number: field(r, "number"),
            table: if class.is_empty() {
                table.to_owned()
            } else {
                class
            },
            state: field(r, "state"),
        }))
    }

    /// The sys_id of the first row of `table` whose `column` is `value`.
    pub fn find_by(&self, table: &str, column: &str, value: &str) -> Result<Option<SysId>> {
        let rows = self.query(table, &Query::new().eq(column, value), &["sys_id"], 1)?;
        rows.first()
            .map(|r| {
                SysId::parse(&field(r, "sys_id")).map_err(|_| {
                    Error::upstream(format!("ServiceNow's {table} row has no valid sys_id"))
                })
            })
            .transpose()
    }
}

/// The rows of a `result`, which must be a list.
fn rows(result: Value, what: &str) -> Result<Vec<Value>> {
    match result {
        Value::Array(rows) => Ok(rows),
        _ => Err(Error::upstream(format!(
            "ServiceNow's answer {what} has no result list"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resp(status: u16, body: &str, headers: &[(&str, &str)]) -> Response {
        Response::new(status, headers, body)
    }

    #[test]
    fn ids_and_numbers_that_could_address_or_widen_are_refused() {
        assert!(SysId::is("0123456789abcdef0123456789ABCDEF"));
        for bad in [
            "../sys_user/0123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcde?",
            "abc",
            "",
        ] {
            assert!(
                matches!(SysId::parse(bad), Err(Error::InvalidInput(_))),
                "{bad}"
            );
        }
        assert_eq!(
            TaskNumber::parse(" INC0010001 ").unwrap().as_str(),
            "INC0010001"
        );
        for bad in [
            "INC0010001^ORnumber!=x",
            "INC0010001^active=true",
            "INC 1",
            "",
        ] {
            assert!(TaskNumber::parse(bad).is_err(), "{bad}");
        }
        // Deserialising validates too, and the schema carries the pattern.
        assert!(serde_json::from_value::<SysId>(json!("x/../y")).is_err());
        let schema = schemars::schema_for!(SysId).to_value();
        assert_eq!(schema["pattern"], "^[0-9a-fA-F]{32}$", "{schema}");
        let schema = schemars::schema_for!(TaskNumber).to_value();
        assert!(schema["pattern"].is_string(), "{schema}");
    }

    #[test]
    fn error_bodies_become_typed_errors() {
        let body = r#"{"error":{"message":"No Record found","detail":"Record doesn't exist"},"status":"failure"}"#;
        match check(resp(404, body, &[]), "reading incident x") {
            Err(Error::NotFound(m)) => {
                assert!(m.contains("No Record found (Record doesn't exist)"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        match check(resp(429, "{}", &[("retry-after", "7")]), "reading incident") {
            Err(Error::Upstream {
                status: Some(429),
                retry_after_secs: Some(7),
                message,
            }) => assert!(message.contains("retry in 7 s"), "{message}"),
            other => panic!("{other:?}"),
        }
        match check(resp(401, "", &[]), "reading incident") {
            Err(Error::Upstream {
                status: Some(401),
                message,
                ..
            }) => assert!(
                message.contains("check the ServiceNow credential"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
        match check(resp(500, "<html>oops</html>", &[]), "x") {
            Err(Error::Upstream {
                status: Some(500),
                message,
                ..
            }) => assert!(message.contains("<html>oops"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(check(resp(201, "{}", &[]), "x").is_ok());
    }

    #[test]
    fn the_next_link_is_found_among_the_others() {
        let link = r#"<https://a.example/api/now/table/x?sysparm_limit=2&sysparm_offset=0>;rel="first",<https://a.example/api/now/table/x?sysparm_limit=2&sysparm_offset=2>;rel="next",<https://a.example/api/now/table/x?sysparm_limit=2&sysparm_offset=8>;rel="last""#;
        assert_eq!(
            next_link(&resp(200, "", &[("link", link)])).as_deref(),
            Some("https://a.example/api/now/table/x?sysparm_limit=2&sysparm_offset=2")
        );
        let last =
            r#"<https://a.example/t?o=0>;rel="first", <https://a.example/t?o=8>; rel="last""#;
        assert_eq!(next_link(&resp(200, "", &[("link", last)])), None);
        assert_eq!(
            origin("https://a.example:8443/x?y").as_deref(),
            Some("https://a.example:8443")
        );
    }

    /// ServiceNow writes `sysparm_fields=a,b,c` unencoded inside its
    /// links: a comma in a target must not split it.
    #[test]
    fn commas_inside_link_targets_do_not_split_them() {
        let link = "<https://a.example/api/now/table/x?sysparm_fields=sys_id,number,state&sysparm_offset=0>;rel=\"first\",\
                    <https://a.example/api/now/table/x?sysparm_fields=sys_id,number,state&sysparm_offset=1000>;rel=\"next\",\
                    <https://a.example/api/now/table/x?sysparm_fields=sys_id,number,state&sysparm_offset=2000>;rel=\"last\"";
        let r = resp(200, "", &[("link", link)]);
        assert_eq!(
            next_link(&r).as_deref(),
            Some(
                "https://a.example/api/now/table/x?sysparm_fields=sys_id,number,state&sysparm_offset=1000"
            )
        );
        assert_eq!(links(link).len(), 3);
        // A next page elsewhere is refused, not followed.
        let evil = "<https://evil.example/steal?sysparm_offset=1000>; rel=\"next\"";
        let err = next_page(
            &resp(200, "", &[("link", evil)]),
            "https://a.example",
            "reading x",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("another origin (https://evil.example)"),
            "{err}"
        );
        let ok = next_page(&r, "https://a.example", "reading x").unwrap();
        assert!(ok.unwrap().ends_with("sysparm_offset=1000"));
        assert_eq!(
            next_page(&resp(200, "", &[]), "https://a.example", "x").unwrap(),
            None
        );
    }

    #[test]
    fn reference_fields_read_as_their_value() {
        let row = json!({"a": "x", "b": {"link": "l", "value": "v"}, "c": 3, "d": null});
        assert_eq!(field(&row, "a"), "x");
        assert_eq!(field(&row, "b"), "v");
        assert_eq!(field(&row, "c"), "3");
        assert_eq!(field(&row, "d"), "");
        assert_eq!(field(&row, "missing"), "");
    }

    #[test]
    fn table_and_field_names_cannot_change_the_url() {
        assert!(check_name("table", "u_bt_session", false).is_ok());
        assert!(check_name("field", "caller_id.email", true).is_ok());
        for bad in ["incident/../sys_user", "incident?x=1", "", "a b"] {
            assert!(check_name("table", bad, false).is_err(), "{bad}");
        }
        assert!(check_name("table", "caller_id.email", false).is_err());
    }
}
