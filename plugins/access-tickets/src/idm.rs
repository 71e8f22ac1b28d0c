//! The identity system's access-request API (its simulator documents it):
//! list requests (by status, category, or changed since a sequence number),
//! report a ticket's status, link a ticket without changing the status.

use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_sdk::http::{self, Request, Response};
use switchyard_sdk::retry::Retry;
use switchyard_sdk::{Error, Result};

/// Name of the credential slot (a bearer token).
pub const CREDENTIAL: &str = "identity";

/// An access request, as far as the plugin needs it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct AccessRequest {
    /// Id (`AR-01000`).
    pub id: String,
    /// Requester's email.
    #[serde(default)]
    pub requester_email: String,
    /// What is asked for.
    #[serde(default)]
    pub resource: String,
    /// Why.
    #[serde(default)]
    pub justification: String,
    /// Service category.
    #[serde(default)]
    pub category: String,
    /// Status (`pending_manual`, `approved`, `withdrawn`, …).
    pub status: String,
    /// Comments made in the identity system.
    #[serde(default)]
    pub comments: Vec<Comment>,
    /// Sequence number of its last change.
    #[serde(default)]
    pub seq: u64,
}

/// A comment made in the identity system.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Comment {
    /// Who.
    #[serde(default)]
    pub by: String,
    /// What.
    #[serde(default)]
    pub text: String,
    /// The change that added it.
    #[serde(default)]
    pub seq: u64,
}

/// The outcome of reporting to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// Taken.
    Taken,
    /// The request is already fulfilled, rejected or withdrawn (409): it
    /// takes no more updates, which is an end, not an error.
    Closed,
}

/// The identity system at a base URL.
pub struct Identity {
    base: String,
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A failed answer as a typed error naming the identity system.
fn check(r: Response, what: &str) -> Result<Response> {
    if r.is_success() {
        return Ok(r);
    }
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let message = v["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| r.text().chars().take(200).collect());
    Err(match r.status {
        404 => Error::not_found(format!("the identity system has no {what}: {message}")),
        401 | 403 => Error::Upstream {
            status: Some(r.status),
            message: format!(
                "the identity system refused the `identity` credential {what}: {message}"
            ),
            retry_after_secs: None,
        },
        s => Error::Upstream {
            status: Some(s),
            message: format!("the identity system failed {what}: {message}"),
            retry_after_secs: r.retry_after_secs(),
        },
    })
}

impl Identity {
    /// The system at `base`.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    fn send(&self, req: Request, what: &str) -> Result<Response> {
        let req = req
            .header("accept", "application/json")
            .credential(CREDENTIAL);
        let r = Retry::default()
            .send(&req)
            .map_err(|e| http::error_from("identity system", e))?;
        check(r, what)
    }

    /// Requests matching the filters (`status`, `category`,
    /// `changed_since`), oldest first, and the latest change's sequence
    /// number.
    pub fn list(&self, filters: &[(&str, &str)]) -> Result<(Vec<AccessRequest>, u64)> {
        let q: Vec<String> = filters
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect();
        let url = format!("{}/api/access-requests?{}", self.base, q.join("&"));
        let r = self.send(Request::get(url), "listing access requests")?;
        let v: Value = r.json()?;
        let requests: Vec<AccessRequest> =
            serde_json::from_value(v["requests"].clone()).map_err(|e| {
                Error::upstream(format!(
                    "the identity system's request list is malformed: {e}"
                ))
            })?;
        Ok((requests, v["seq"].as_u64().unwrap_or(0)))
    }

    /// Request `id`, read afresh.
    pub fn get(&self, id: &str) -> Result<AccessRequest> {
        let url = format!("{}/api/access-requests/{}", self.base, enc(id));
        let r = self.send(Request::get(url), &format!("reading access request {id}"))?;
        r.json::<AccessRequest>()
            .map_err(|e| Error::upstream(format!("access request {id} is malformed: {e}")))
    }

    fn post(&self, id: &str, what: &str, path: &str, body: &Value) -> Result<Reported> {
        let url = format!("{}/api/access-requests/{}/{path}", self.base, enc(id));
        let req = Request::post(url)
            .header("accept", "application/json")
            .credential(CREDENTIAL)
            .json(body)?;
        // A state alone is safe to send twice; a comment would be appended
        // twice, so a post with one is retried only after a 429.
        let repeatable = body["comment"].as_str().is_none_or(str::is_empty);
        let r = Retry::default()
            .idempotent(repeatable)
            .send(&req)
            .map_err(|e| http::error_from("identity system", e))?;
        if r.status == 409 {
            return Ok(Reported::Closed);
        }
        check(r, &format!("{what} of access request {id}")).map(|_| Reported::Taken)
    }

    /// Reports the ticket's state (and the agent's latest comment).
    pub fn ticket_status(
        &self,
        id: &str,
        ticket_number: &str,
        state: &str,
        comment: &str,
    ) -> Result<Reported> {
        self.post(
            id,
            "the ticket status",
            "ticket-status",
            &json!({"ticket_number": ticket_number, "state": state, "comment": comment}),
        )
    }

    /// Records the ticket of a request without changing its status.
    pub fn link_ticket(&self, id: &str, ticket_number: &str) -> Result<Reported> {
        self.post(
            id,
            "the ticket",
            "ticket",
            &json!({ "ticket_number": ticket_number }),
        )
    }
}
