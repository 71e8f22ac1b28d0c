//! Host side of `switchyard:plugin/log`: structured records and progress.
//!
//! Records go to `tracing` with the tenant, instance and request id attached
//! by the host, and are kept in the invocation's report. A plugin controls
//! the message and fields, so both are truncated and the number of records
//! per invocation is capped; what is dropped is counted, not silently lost.

use serde::Serialize;
use wasmtime::component::{HasData, Linker};

use crate::bindings::log::{self, Field, Host, Level};
use crate::state::CallState;

/// Longest message kept, in bytes.
const MAX_MESSAGE_BYTES: usize = 4096;
/// Fields kept per record.
const MAX_FIELDS: usize = 32;
/// Longest field key or value kept, in bytes.
const MAX_FIELD_BYTES: usize = 1024;

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

/// What a `log` call sees: the invocation's labels and budget.
pub struct LogCtxView<'a> {
    /// Per-invocation state.
    pub call: &'a mut CallState,
}

/// Implemented by store data that can hand out a [`LogCtxView`].
pub trait LogView: Send {
    /// Borrows the invocation's log state for one host call.
    fn log(&mut self) -> LogCtxView<'_>;
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

impl Host for LogCtxView<'_> {
    fn emit(&mut self, level: Level, message: String, fields: Vec<Field>) -> wasmtime::Result<()> {
        let call = &mut *self.call;
        if call.logs.len() >= call.limits.log_records as usize {
            call.logs_dropped += 1;
            return Ok(());
        }
        let message = truncate(message, MAX_MESSAGE_BYTES);
        let fields: Vec<(String, String)> = fields
            .into_iter()
            .take(MAX_FIELDS)
            .map(|f| {
                (
                    truncate(f.key, MAX_FIELD_BYTES),
                    truncate(f.value, MAX_FIELD_BYTES),
                )
            })
            .collect();
        let rendered = fields
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(" ");
        macro_rules! ev {
            ($lvl:expr) => {
                tracing::event!(
                    target: "switchyard::plugin",
                    $lvl,
                    tenant = %call.tenant,
                    instance = %call.instance,
                    request_id = %call.request_id,
                    fields = %rendered,
                    "{message}"
                )
            };
        }
        match level {
            Level::Trace => ev!(tracing::Level::TRACE),
            Level::Debug => ev!(tracing::Level::DEBUG),
            Level::Info => ev!(tracing::Level::INFO),
            Level::Warn => ev!(tracing::Level::WARN),
            Level::Error => ev!(tracing::Level::ERROR),
        }
        call.logs.push(LogRecord {
            level: level_name(level),
            message,
            fields,
        });
        Ok(())
    }

    fn progress(&mut self, done: u64, total: Option<u64>, note: String) -> wasmtime::Result<()> {
        let progress = Progress {
            done,
            total,
            note: truncate(note, MAX_FIELD_BYTES),
        };
        if let Some(sink) = &self.call.progress_sink {
            sink.send_replace(Some(progress.clone()));
        }
        self.call.progress = Some(progress);
        Ok(())
    }
}

struct HasLog;

impl HasData for HasLog {
    type Data<'a> = LogCtxView<'a>;
}

/// Adds `switchyard:plugin/log` to `linker`.
pub fn add_to_linker<T: LogView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    log::add_to_linker::<T, HasLog>(linker, T::log)
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo".into(), 2), "h…");
        assert_eq!(truncate("short".into(), 10), "short");
    }
}
