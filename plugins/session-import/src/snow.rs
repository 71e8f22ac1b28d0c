//! The ServiceNow side (Table API): tasks to associate with, users, the
//! support-session table and the lookup tables (event types, issues).

use serde_json::{Map, Value};
use switchyard_sdk::http::{Request, Response};
use switchyard_sdk::{Error, Result};

use crate::net;

/// Name of the credential slot.
pub const CREDENTIAL: &str = "servicenow";

/// A task record (incident, problem, change, request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// sys_id.
    pub sys_id: String,
    /// Number, e.g. `INC0010001`.
    pub number: String,
    /// Concrete table (`incident`, `problem`, …), where work notes go.
    pub table: String,
    /// `state` value.
    pub state: String,
}

/// A ServiceNow instance.
pub struct ServiceNow {
    base: String,
}

/// Whether `s` looks like a sys_id (32 hex digits) rather than a number.
pub fn is_sys_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check(r: Response, what: &str) -> Result<Response> {
    if r.is_success() {
        return Ok(r);
    }
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let message = v["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| r.text().chars().take(200).collect());
    let detail = v["error"]["detail"]
        .as_str()
        .filter(|d| !d.is_empty())
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    Err(Error::Upstream {
        status: Some(r.status),
        message: format!("ServiceNow failed {what}: {message}{detail}"),
        retry_after_secs: r.retry_after_secs(),
    })
}

/// Reads a text field of a row (reference fields give their sys_id).
pub fn field(row: &Value, name: &str) -> String {
    match &row[name] {
        Value::String(s) => s.clone(),
        // A reference field read without sysparm_exclude_reference_link.
        Value::Object(o) => o
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
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

impl ServiceNow {
    /// The instance at `base` (`https://acme.service-now.com`).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    fn send(&self, req: Request, what: &str) -> Result<Response> {
        self.send_via(net::send, req, what)
    }

    fn send_via(
        &self,
        send: fn(&Request, &str) -> Result<Response, net::Failure>,
        req: Request,
        what: &str,
    ) -> Result<Response> {
        let req = req
            .header("accept", "application/json")
            .credential(CREDENTIAL);
        check(send(&req, "ServiceNow")?, what)
    }

    /// Rows of `table` matching the encoded `query`, at most `limit`.
    pub fn query(
        &self,
        table: &str,
        query: &str,
        fields: &str,
        limit: usize,
    ) -> Result<Vec<Value>> {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("sysparm_query", query)
            .append_pair("sysparm_fields", fields)
            .append_pair("sysparm_limit", &limit.to_string())
            .append_pair("sysparm_exclude_reference_link", "true")
            .finish();
        let url = format!("{}/api/now/table/{table}?{q}", self.base);
        let v: Value = self
            .send(Request::get(url), &format!("reading {table}"))?
            .json()?;
        match v["result"].as_array() {
            Some(rows) => Ok(rows.clone()),
            None => Err(Error::upstream(format!(
                "ServiceNow's answer for {table} has no result list"
            ))),
        }
    }

    /// Inserts a row; returns its sys_id. An insert is sent once (see
    /// [`net::send_once`]): a failure may hide a row that was written.
    pub fn insert(&self, table: &str, fields: &Map<String, Value>) -> Result<String> {
        let url = format!("{}/api/now/table/{table}?sysparm_fields=sys_id", self.base);
        let v: Value = self
            .send_via(
                net::send_once,
                Request::post(url).json(fields)?,
                &format!("creating a {table} record"),
            )?
            .json()?;
        let id = field(&v["result"], "sys_id");
        if id.is_empty() {
            return Err(Error::upstream(format!(
                "ServiceNow created a {table} record but did not say its sys_id"
            )));
        }
        Ok(id)
    }

    /// Updates fields of a row.
    pub fn update(&self, table: &str, sys_id: &str, fields: &Map<String, Value>) -> Result<()> {
        let url = format!(
            "{}/api/now/table/{table}/{sys_id}?sysparm_fields=sys_id",
            self.base
        );
        self.send(
            Request::patch(url).json(fields)?,
            &format!("updating {table} {sys_id}"),
        )
        .map(drop)
    }

    /// The task whose number or sys_id is `key`, in `table` (`task` for
    /// any kind of task).
    pub fn find_task(&self, table: &str, key: &str) -> Result<Option<Task>> {
        let key = key.trim();
        if key.is_empty() || key.contains('^') {
            return Ok(None);
        }
        let by = if is_sys_id(key) { "sys_id" } else { "number" };
        let rows = self.query(
            table,
            &format!("{by}={key}"),
            "sys_id,number,sys_class_name,state",
            1,
        )?;
        Ok(rows.first().map(|r| {
            let class = field(r, "sys_class_name");
            Task {
                sys_id: field(r, "sys_id"),
                number: field(r, "number"),
                table: if class.is_empty() {
                    table.to_owned()
                } else {
                    class
                },
                state: field(r, "state"),
            }
        }))
    }

    /// The sys_id of the active user called `user_name`.
    pub fn user(&self, user_name: &str) -> Result<Option<String>> {
        if user_name.is_empty() || user_name.contains('^') {
            return Ok(None);
        }
        let rows = self.query("sys_user", &format!("user_name={user_name}"), "sys_id", 1)?;
        Ok(rows.first().map(|r| field(r, "sys_id")))
    }

    /// The sys_id of the row of `table` whose `column` is `value`.
    pub fn find_by(&self, table: &str, column: &str, value: &str) -> Result<Option<String>> {
        let rows = self.query(table, &format!("{column}={value}"), "sys_id", 1)?;
        Ok(rows.first().map(|r| field(r, "sys_id")))
    }

    /// Appends a work note to a task.
    pub fn work_note(&self, task: &Task, note: &str) -> Result<()> {
        let mut f = Map::new();
        f.insert("work_notes".into(), Value::String(note.to_owned()));
        self.update(&task.table, &task.sys_id, &f)
    }

    /// Every row of a small table (lookup tables: event types, issues),
    /// fetched 1000 at a time.
    pub fn all(&self, table: &str, fields: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        loop {
            let q = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("sysparm_query", "ORDERBYsys_id")
                .append_pair("sysparm_fields", fields)
                .append_pair("sysparm_limit", "1000")
                .append_pair("sysparm_offset", &out.len().to_string())
                .finish();
            let url = format!("{}/api/now/table/{table}?{q}", self.base);
            let v: Value = self
                .send(Request::get(url), &format!("reading {table}"))?
                .json()?;
            let rows = v["result"].as_array().cloned().unwrap_or_default();
            let n = rows.len();
            out.extend(rows);
            // Lookup tables are small; the cap bounds a runaway answer.
            if n < 1000 || out.len() >= 20_000 {
                return Ok(out);
            }
        }
    }
}
