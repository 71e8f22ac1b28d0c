//! How the daemon answers with an error: one JSON shape
//! (`{"request_id", "error": {"code", "message"}}`) and one table from each
//! invocation error to its HTTP status and code. The runtime knows nothing
//! of HTTP; this is the only place that decides.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use switchyard_runtime::{InvokeError, PluginError};

/// An error answer: status, machine-readable code, a message for people,
/// the request id, and when to come back.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    request_id: String,
    retry_after_secs: Option<u32>,
}

impl ApiError {
    /// An error answer.
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        request_id: &str,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            request_id: request_id.to_owned(),
            retry_after_secs: None,
        }
    }

    /// Adds `Retry-After`.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            axum::Json(json!({
                "request_id": self.request_id,
                "error": { "code": self.code, "message": self.message },
            })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// An error answer as a response.
pub fn error(
    status: StatusCode,
    code: &'static str,
    message: impl Into<String>,
    request_id: &str,
) -> Response {
    ApiError::new(status, code, message, request_id).into_response()
}

/// The status and code of every invocation error.
pub fn invoke_error_status(e: &InvokeError) -> (StatusCode, &'static str) {
    use PluginError as P;
    match e {
        InvokeError::Unknown { .. } => (StatusCode::NOT_FOUND, "not_found"),
        InvokeError::InvalidInput(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
        InvokeError::InputSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
        InvokeError::Plugin(P::InvalidInput { .. }) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input")
        }
        InvokeError::Plugin(P::NotFound { .. }) => (StatusCode::NOT_FOUND, "not_found"),
        InvokeError::Plugin(P::Forbidden { .. }) => (StatusCode::FORBIDDEN, "forbidden"),
        InvokeError::Plugin(P::Conflict { .. }) => (StatusCode::CONFLICT, "conflict"),
        // An upstream's rate limit is a reason to come back later, not a
        // broken gateway.
        InvokeError::Plugin(P::Upstream {
            status: Some(429), ..
        }) => (StatusCode::SERVICE_UNAVAILABLE, "upstream_failed"),
        InvokeError::Plugin(P::Upstream { .. }) => (StatusCode::BAD_GATEWAY, "upstream_failed"),
        InvokeError::Plugin(P::Internal { .. }) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "plugin_error")
        }
        InvokeError::BadOutput(_) => (StatusCode::INTERNAL_SERVER_ERROR, "bad_output"),
        InvokeError::Deadline(_) => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
        InvokeError::LimitExceeded(_) => (StatusCode::INTERNAL_SERVER_ERROR, "limit_exceeded"),
        InvokeError::Trap(_) => (StatusCode::INTERNAL_SERVER_ERROR, "plugin_crashed"),
        InvokeError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        InvokeError::Migration { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "storage_migration_failed")
        }
    }
}

/// The code of an invocation error (for audit entries and metrics).
pub fn invoke_error_code(e: &InvokeError) -> &'static str {
    invoke_error_status(e).1
}

/// The caller's answer for a failed invocation. An upstream's retry time,
/// or the next try of a failed storage migration, travels on as
/// `Retry-After`, so the caller (a ServiceNow flow, an agent's UI) can wait
/// instead of hammering.
pub fn invoke_error_response(e: &InvokeError, request_id: &str) -> Response {
    let (status, code) = invoke_error_status(e);
    let err = ApiError::new(status, code, e.to_string(), request_id);
    match e.retry_after() {
        Some(wait) => err.retry_after(wait.as_secs().try_into().unwrap_or(u32::MAX)),
        None => err,
    }
    .into_response()
}

/// The answer to a call that was not admitted: 429 when the caller's tenant
/// or instance is at its share (its own doing), 503 when the daemon is.
pub fn refused(why: crate::admission::Refused, request_id: &str) -> Response {
    use crate::admission::Refused;
    let (status, code) = match why {
        Refused::Total(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        Refused::Tenant(_) | Refused::Instance(_) => {
            (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
        }
    };
    ApiError::new(status, code, format!("{why}; retry shortly"), request_id)
        .retry_after(1)
        .into_response()
}

/// The answer for an instance that is configured but not served: its
/// configuration (or its tenant's file) has a problem the operator must fix.
pub fn not_served(instance: &str, problems: &[String], request_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "instance_failed",
        format!(
            "instance `{instance}` is not served until its configuration is fixed: {}",
            problems.join("; ")
        ),
        request_id,
    )
    .retry_after(60)
}

/// A 503 for an instance whose plugin is still being compiled: it will be
/// served in seconds, with nothing to fix.
pub fn compiling(instance: &str, problems: &[String], request_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "plugin_compiling",
        format!(
            "instance `{instance}` is not served yet: {}",
            problems.join("; ")
        ),
        request_id,
    )
    .retry_after(COMPILING_RETRY_SECS)
}

/// How long a caller of an instance whose plugin compiles is asked to wait.
const COMPILING_RETRY_SECS: u32 = 5;

/// A 503 for a failed read or write of the daemon's own state: the caller
/// may retry; the details go to the log.
pub fn unavailable(what: &str, e: &dyn std::fmt::Display, request_id: &str) -> Response {
    tracing::error!(error = %e, request_id, "{what}");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("{what} failed; retry"),
        request_id,
    )
}

/// Each plugin error kind, as the README's error table names it, with an
/// error of that kind (for the tests that hold the table to the code).
#[cfg(test)]
pub(crate) fn plugin_error_kinds() -> Vec<(&'static str, InvokeError)> {
    let m = || "m".to_owned();
    vec![
        ("invalid-input", PluginError::InvalidInput { message: m() }),
        ("not-found", PluginError::NotFound { message: m() }),
        ("forbidden", PluginError::Forbidden { message: m() }),
        ("conflict", PluginError::Conflict { message: m() }),
        (
            "upstream",
            PluginError::Upstream {
                status: Some(500),
                message: m(),
                retry_after_secs: None,
            },
        ),
        ("internal", PluginError::Internal { message: m() }),
    ]
    .into_iter()
    .map(|(kind, e)| (kind, InvokeError::Plugin(e)))
    .collect()
}

/// The README's error-table row for a plugin error kind.
#[cfg(test)]
pub(crate) fn readme_error_row(kind: &str) -> &'static str {
    include_str!("../../../README.md")
        .lines()
        .find(|l| l.starts_with(&format!("| `{kind}` |")))
        .unwrap_or_else(|| panic!("the README's error table has no row for `{kind}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_error_table_says_what_an_action_answers() {
        for (kind, e) in plugin_error_kinds() {
            let (status, code) = invoke_error_status(&e);
            let said = format!("| {} `{code}`", status.as_u16());
            let row = readme_error_row(kind);
            assert!(
                row.contains(&said),
                "`{kind}` answers {said}, the README says: {row}"
            );
        }
    }

    #[test]
    fn each_invocation_error_has_its_status() {
        let upstream = |status| {
            InvokeError::Plugin(PluginError::Upstream {
                status,
                message: "m".into(),
                retry_after_secs: Some(7),
            })
        };
        for (e, status, code) in [
            (InvokeError::InvalidInput("x".into()), 400, "invalid_input"),
            (
                InvokeError::Plugin(PluginError::InvalidInput {
                    message: "x".into(),
                }),
                422,
                "invalid_input",
            ),
            (upstream(Some(429)), 503, "upstream_failed"),
            (upstream(Some(500)), 502, "upstream_failed"),
            (
                InvokeError::Deadline(std::time::Duration::from_secs(1)),
                504,
                "deadline_exceeded",
            ),
            (InvokeError::Busy("x".into()), 503, "busy"),
            (InvokeError::Trap("x".into()), 500, "plugin_crashed"),
            (migration(), 503, "storage_migration_failed"),
        ] {
            assert_eq!(
                invoke_error_status(&e),
                (StatusCode::from_u16(status).unwrap(), code)
            );
        }
        // An upstream's retry time reaches the caller.
        let resp = invoke_error_response(&upstream(Some(429)), "r");
        assert_eq!(resp.headers()[header::RETRY_AFTER], "7");
        // So does the time until a failed storage migration runs again.
        let resp = invoke_error_response(&migration(), "r");
        assert_eq!(resp.headers()[header::RETRY_AFTER], "20");
    }

    fn migration() -> InvokeError {
        InvokeError::Migration {
            plugin: "notes".into(),
            version: "2.0.0".into(),
            from: Some("1.0.0".into()),
            reason: "the plugin failed".into(),
            retry_after: std::time::Duration::from_secs(20),
        }
    }
}
