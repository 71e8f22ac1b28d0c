//! Why a call did not produce a result: the plugin's own typed errors and
//! the host's, and how a wasmtime error becomes one of them.

use std::time::Duration;

use serde::Serialize;
use wasmtime::Trap;
use wasmtime::component::ResourceTableError;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::bindings::types;
use crate::limits::{DeadlineReached, Limiter};

/// An error the plugin returned on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PluginError {
    /// Malformed input.
    #[error("invalid input: {message}")]
    InvalidInput {
        /// Explanation.
        message: String,
    },
    /// Target not found.
    #[error("not found: {message}")]
    NotFound {
        /// Explanation.
        message: String,
    },
    /// The plugin's policy refuses.
    #[error("forbidden: {message}")]
    Forbidden {
        /// Explanation.
        message: String,
    },
    /// The target's state does not allow it.
    #[error("conflict: {message}")]
    Conflict {
        /// Explanation.
        message: String,
    },
    /// An upstream failed.
    #[error("upstream failed{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Upstream {
        /// Upstream status.
        status: Option<u16>,
        /// Explanation.
        message: String,
        /// When to retry.
        retry_after_secs: Option<u32>,
    },
    /// A bug in the plugin.
    #[error("plugin internal error: {message}")]
    Internal {
        /// Explanation.
        message: String,
    },
}

impl From<types::PluginError> for PluginError {
    fn from(e: types::PluginError) -> Self {
        use types::PluginError as W;
        match e {
            W::InvalidInput(message) => Self::InvalidInput { message },
            W::NotFound(message) => Self::NotFound { message },
            W::Forbidden(message) => Self::Forbidden { message },
            W::Conflict(message) => Self::Conflict { message },
            W::Upstream(u) => Self::Upstream {
                status: u.status,
                message: u.message,
                retry_after_secs: u.retry_after_secs,
            },
            W::Internal(message) => Self::Internal { message },
        }
    }
}

/// Why a call did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// The manifest has no such action, route or job.
    #[error("plugin `{plugin}` {version} has no {what} named `{name}`")]
    Unknown {
        /// Plugin id.
        plugin: String,
        /// Its version: after an upgrade, a queued job the new version no
        /// longer declares is dead-lettered with this reason.
        version: String,
        /// `action`, `webhook route` or `job`.
        what: &'static str,
        /// The name asked for.
        name: String,
    },
    /// The input was refused before the plugin ran.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The input does not match the action's input schema; the plugin was
    /// not called. Each problem names where (a JSON pointer) and what was
    /// expected.
    #[error("the input does not match the action's schema: {}", .0.join("; "))]
    InputSchema(Vec<String>),
    /// The plugin returned an error.
    #[error(transparent)]
    Plugin(PluginError),
    /// The plugin returned something malformed.
    #[error("the plugin returned invalid output: {0}")]
    BadOutput(String),
    /// The wall-clock deadline passed.
    #[error("the invocation exceeded its deadline of {} ms and was stopped", .0.as_millis())]
    Deadline(Duration),
    /// A memory, table or resource limit was hit.
    #[error("the invocation was stopped: {0}")]
    LimitExceeded(String),
    /// The plugin trapped (a bug in the plugin: panic, unreachable, …).
    #[error("the plugin crashed: {0}")]
    Trap(String),
    /// Every invocation slot is in use.
    #[error("the host is at its concurrency limit; retry shortly ({0})")]
    Busy(String),
    /// The instance's storage could not be migrated to this plugin version
    /// (see `migration`); nothing runs until it is. Not the caller's doing:
    /// a queued job waits without counting an attempt.
    #[error(
        "plugin `{plugin}` {version} could not migrate the instance's storage{}: {reason}; \
         the instance's first call after {} s tries again",
        from.as_ref().map(|f| format!(" from {f}")).unwrap_or_default(),
        retry_after.as_secs()
    )]
    Migration {
        /// Plugin id.
        plugin: String,
        /// The version whose migration step failed.
        version: String,
        /// The version the storage was recorded for, when known.
        from: Option<String>,
        /// The step's error, or the store's.
        reason: String,
        /// When the step runs again (whole seconds, at least 1).
        retry_after: Duration,
    },
}

impl InvokeError {
    /// When the caller may try again, when the error says: an upstream's
    /// `Retry-After`, or the next try of a failed storage migration.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            InvokeError::Plugin(PluginError::Upstream {
                retry_after_secs: Some(secs),
                ..
            }) => Some(Duration::from_secs(u64::from(*secs))),
            InvokeError::Migration { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Turns what a call into the guest failed with into an [`InvokeError`].
pub(crate) fn classify_error(
    err: wasmtime::Error,
    limiter: &Limiter,
    resources: usize,
    stderr: &MemoryOutputPipe,
    deadline: Duration,
) -> InvokeError {
    if let Some(msg) = &limiter.exceeded {
        return InvokeError::LimitExceeded(msg.clone());
    }
    if let Some(Trap::Interrupt) = err.downcast_ref::<Trap>() {
        return InvokeError::Deadline(deadline);
    }
    if err.downcast_ref::<DeadlineReached>().is_some() {
        return InvokeError::Deadline(deadline);
    }
    let text = format!("{err:?}");
    if let Some(ResourceTableError::Full) = err.downcast_ref::<ResourceTableError>() {
        return InvokeError::LimitExceeded(format!(
            "the plugin holds too many host resources (limit {resources})"
        ));
    }
    if let Some(e) = err.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return InvokeError::Busy(e.to_string());
    }
    InvokeError::Trap(describe_trap(&err, &text, stderr))
}

/// Backtrace frames kept in a trap's description; a stack overflow has
/// thousands, and the first few say where it happened.
const TRAP_FRAMES: usize = 8;

/// "What trapped, what the guest printed (a Rust panic's message), where".
fn describe_trap(err: &wasmtime::Error, debug_text: &str, stderr: &MemoryOutputPipe) -> String {
    let mut out = match err.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => err.root_cause().to_string(),
    };
    let captured = stderr.contents();
    let printed = String::from_utf8_lossy(&captured);
    if !printed.trim().is_empty() {
        out.push('\n');
        out.push_str(printed.trim());
    }
    let frames: Vec<&str> = debug_text
        .lines()
        .filter(|l| {
            l.trim_start()
                .split(':')
                .next()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .collect();
    if !frames.is_empty() {
        out.push_str("\nwasm backtrace:");
        for f in frames.iter().take(TRAP_FRAMES) {
            out.push('\n');
            out.push_str(f);
        }
        if frames.len() > TRAP_FRAMES {
            out.push_str(&format!(
                "\n    … {} more frames",
                frames.len() - TRAP_FRAMES
            ));
        }
    }
    out
}
