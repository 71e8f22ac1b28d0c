//! The ServiceNow side: the incident an action comes from (its caller's
//! email, for validation) and the work note that records the action.

use serde_json::{Value, json};
use switchyard_sdk::http::Request;
use switchyard_sdk::{Error, Result, credentials};

/// Name of the (optional) credential slot for ServiceNow.
pub const CREDENTIAL: &str = "servicenow";

/// The incident an action was started from.
#[derive(Debug, Clone, Default)]
pub struct Incident {
    /// sys_id, once known.
    pub sys_id: Option<String>,
    /// Number (`INC0010001`), once known.
    pub number: Option<String>,
    /// The caller's email, once known.
    pub caller_email: Option<String>,
}

/// Whether `s` is a sys_id: 32 hex digits. Anything else could, put into a
/// URL path, address another record (`../`, `?`, `/`).
pub fn is_sys_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `s` can be a task number (`INC0010001`): letters, digits and
/// `-_.`, at most 40. Anything else could widen a `sysparm_query` (`^`
/// adds a condition, `^OR` another match).
pub fn is_task_number(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Incident {
    /// Reads `{"sys_id"?, "number"?, "caller_email"?}` from the input;
    /// None when it names no incident. A sys_id or number that is not one
    /// is refused (it goes into a URL and a query).
    pub fn parse(v: &Value) -> Result<Option<Self>> {
        let s = |k: &str| {
            v[k].as_str()
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
        };
        let inc = Self {
            sys_id: s("sys_id"),
            number: s("number"),
            caller_email: s("caller_email"),
        };
        if let Some(id) = &inc.sys_id
            && !is_sys_id(id)
        {
            return Err(Error::invalid_input(format!(
                "incident.sys_id `{}` is not a sys_id (32 hexadecimal digits)",
                id.chars().take(64).collect::<String>()
            )));
        }
        if let Some(n) = &inc.number
            && !is_task_number(n)
        {
            return Err(Error::invalid_input(format!(
                "incident.number `{}` is not a task number (letters, digits, - _ . only)",
                n.chars().take(64).collect::<String>()
            )));
        }
        Ok((inc.sys_id.is_some() || inc.number.is_some()).then_some(inc))
    }

    /// `INC0010001` or the sys_id.
    pub fn name(&self) -> String {
        self.number
            .clone()
            .or_else(|| self.sys_id.clone())
            .unwrap_or_default()
    }
}

/// ServiceNow, when the tenant configured it (URL and credential).
pub struct ServiceNow {
    base: String,
}

fn check(r: switchyard_sdk::http::Response, what: &str) -> Result<switchyard_sdk::http::Response> {
    if r.is_success() {
        return Ok(r);
    }
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let message = v["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| r.text().chars().take(200).collect());
    Err(Error::Upstream {
        status: Some(r.status),
        message: format!("ServiceNow failed {what}: {message}"),
        retry_after_secs: r.retry_after_secs(),
    })
}

impl ServiceNow {
    /// ServiceNow at `base`, if a URL is configured and the credential is
    /// bound; otherwise work notes are skipped.
    pub fn configured(base: Option<String>) -> Option<Self> {
        let base = base.filter(|b| !b.trim().is_empty())?;
        credentials::list()
            .iter()
            .any(|c| c.name == CREDENTIAL)
            .then(|| Self {
                base: base.trim_end_matches('/').to_owned(),
            })
    }

    fn req(&self, r: Request) -> Request {
        r.header("accept", "application/json")
            .credential(CREDENTIAL)
    }

    /// Fills in the incident's sys_id, number and caller email.
    pub fn load(&self, inc: &mut Incident) -> Result<()> {
        let fields = "sys_id,number,caller_id.email";
        let row: Value = match &inc.sys_id {
            Some(id) => {
                let url = format!(
                    "{}/api/now/table/incident/{id}?sysparm_fields={fields}",
                    self.base
                );
                let r = check(self.req(Request::get(url)).send()?, "reading the incident")
                    .map_err(|e| match e {
                        Error::Upstream {
                            status: Some(404), ..
                        } => Error::not_found(format!("ServiceNow has no incident {id}")),
                        other => other,
                    })?;
                r.json::<Value>()?["result"].clone()
            }
            None => {
                let number = inc.number.clone().unwrap_or_default();
                let q: String = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("sysparm_query", &format!("number={number}"))
                    .append_pair("sysparm_fields", fields)
                    .append_pair("sysparm_limit", "1")
                    .finish();
                let url = format!("{}/api/now/table/incident?{q}", self.base);
                let r = check(self.req(Request::get(url)).send()?, "finding the incident")?;
                let v: Value = r.json()?;
                let row = v["result"][0].clone();
                if row.is_null() {
                    return Err(Error::not_found(format!(
                        "ServiceNow has no incident {number}"
                    )));
                }
                row
            }
        };
        let text = |k: &str| row[k].as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        inc.sys_id = text("sys_id").or(inc.sys_id.take());
        inc.number = text("number").or(inc.number.take());
        if let Some(email) = text("caller_id.email") {
            inc.caller_email = Some(email);
        }
        Ok(())
    }

    /// Appends a work note to the incident.
    pub fn work_note(&self, inc: &Incident, note: &str) -> Result<()> {
        let id = inc
            .sys_id
            .as_deref()
            .ok_or_else(|| Error::internal("incident sys_id unknown"))?;
        let url = format!(
            "{}/api/now/table/incident/{id}?sysparm_fields=sys_id",
            self.base
        );
        check(
            self.req(Request::patch(url))
                .json(&json!({ "work_notes": note }))?
                .send()?,
            "writing the work note",
        )
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13, item 12: input that could address another record or widen
    /// a query is refused before any request is made.
    #[test]
    fn incident_ids_that_are_not_ids_are_refused() {
        let ok = json!({"sys_id": "0123456789abcdef0123456789ABCDEF", "number": "INC0010001"});
        let inc = Incident::parse(&ok).unwrap().unwrap();
        assert_eq!(inc.number.as_deref(), Some("INC0010001"));
        assert!(Incident::parse(&json!({})).unwrap().is_none());
        for bad in [
            json!({"sys_id": "../sys_user/0123456789abcdef0123456789abcdef"}),
            json!({"sys_id": "0123456789abcdef0123456789abcde?"}),
            json!({"sys_id": "abc"}),
            json!({"number": "INC0010001^ORnumber!=x"}),
            json!({"number": "INC0010001^active=true"}),
            json!({"number": "INC 1"}),
        ] {
            let err = Incident::parse(&bad).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{bad}: {err:?}");
        }
    }
}
