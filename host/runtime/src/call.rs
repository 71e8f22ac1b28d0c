//! What one invocation is and did: its labels, limits and deadline, and the
//! records of its outbound requests, log lines and progress. The `http` and
//! `log` interfaces write here; the instance reads it back when the call
//! ends.

use std::time::Instant;

use serde::Serialize;

use crate::limits::Limits;

/// Outbound requests of one invocation recorded one by one (for the audit
/// log); later ones are only counted by outcome.
pub const EGRESS_ITEMISED: usize = 1_000;

/// One outbound request, as the audit log records it: never bodies, query
/// strings or headers, which may carry personal data or secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressRecord {
    /// HTTP method.
    pub method: String,
    /// `scheme://host:port`, or the raw URL's start when it did not parse.
    pub destination: String,
    /// URL path.
    pub path: String,
    /// Upstream status, when there was an answer.
    pub status: Option<u16>,
    /// Time taken.
    pub duration_ms: u64,
    /// `ok` (answered 1xx-3xx), `rate-limited` (429), `client-error`
    /// (4xx), `server-error` (5xx), `denied`, or the error kind.
    pub outcome: String,
}

/// One record a plugin emitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogRecord {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The message, truncated to 4 KiB.
    pub message: String,
    /// Key/value fields, at most 32.
    pub fields: Vec<(String, String)>,
}

/// Latest progress report of a long call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Units done.
    pub done: u64,
    /// Units in all, when known.
    pub total: Option<u64>,
    /// What is being worked on.
    pub note: String,
}

/// What the plugin said of the error it returned
/// (`invocation.mark-error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryMark {
    /// Retrying cannot help: dead-letter at once.
    Permanent,
    /// Retrying may help: try again later, whatever the error's kind.
    Transient,
}

/// State of one invocation: labels, budgets and what the guest did.
pub struct CallState {
    pub(crate) tenant: String,
    pub(crate) instance: String,
    pub(crate) request_id: String,
    pub(crate) limits: Limits,
    pub(crate) deadline: Instant,
    pub(crate) http_requests: u32,
    pub(crate) egress: Vec<EgressRecord>,
    pub(crate) egress_omitted: std::collections::BTreeMap<String, u64>,
    pub(crate) logs: Vec<LogRecord>,
    pub(crate) logs_dropped: u32,
    pub(crate) progress: Option<Progress>,
    pub(crate) progress_sink: Option<tokio::sync::watch::Sender<Option<Progress>>>,
    /// What the plugin said of the error it returns (`invocation`).
    pub(crate) retry: Option<RetryMark>,
    /// Seconds after which a job asked to run again (`invocation`).
    pub(crate) run_again: Option<u32>,
}

impl CallState {
    /// A fresh state for one invocation starting `started`.
    pub(crate) fn new(
        tenant: &str,
        instance: &str,
        request_id: String,
        limits: Limits,
        started: Instant,
        progress_sink: Option<tokio::sync::watch::Sender<Option<Progress>>>,
    ) -> Self {
        Self {
            tenant: tenant.to_owned(),
            instance: instance.to_owned(),
            request_id,
            limits,
            deadline: started + limits.deadline,
            http_requests: 0,
            egress: Vec::new(),
            egress_omitted: Default::default(),
            logs: Vec::new(),
            logs_dropped: 0,
            progress: None,
            progress_sink,
            retry: None,
            run_again: None,
        }
    }
}
