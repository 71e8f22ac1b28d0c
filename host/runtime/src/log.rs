//! Host side of `switchyard:plugin/log`: structured records and progress.
//!
//! Records go to `tracing` with the tenant, instance and request id attached
//! by the host, and are kept in the invocation's report. A plugin controls
//! the message and fields, so everything about them is bounded, and what is
//! dropped is counted, not silently lost:
//!
//! - **size**: a message is cut at 4 KiB and a whole record at 8 KiB;
//! - **count**: at most `log_records` per invocation;
//! - **rate**: per tenant, a token bucket
//!   ([`crate::limits::TenantBudgets`], shared by all of a tenant's
//!   instances and invocations) caps records over time, so a loop of calls
//!   cannot fill the daemon's disk;
//! - **shape**: a plugin cannot forge log lines. Control characters in the
//!   message are escaped (a newline cannot start a fake line), field keys
//!   are reduced to `[A-Za-z0-9_.-]`, and all fields travel as one JSON
//!   object in the host's `fields` field, so none can pass for the host's
//!   own `tenant`, `instance` or `request_id`.

use wasmtime::component::{HasData, Linker};

use crate::bindings::log::{self, Field, Host, Level};
use crate::call::CallState;
pub use crate::call::{LogRecord, Progress};

/// Longest message kept, in bytes.
const MAX_MESSAGE_BYTES: usize = 4096;
/// Fields kept per record.
const MAX_FIELDS: usize = 32;
/// Longest field value kept, in bytes.
const MAX_FIELD_BYTES: usize = 1024;
/// Longest field key kept, in bytes.
const MAX_KEY_BYTES: usize = 64;
/// Largest whole record (message, keys and values), in bytes: later fields
/// are dropped.
const MAX_RECORD_BYTES: usize = 8192;

/// The message with control characters escaped (`\n`, `\u{1b}`, …), so
/// that it cannot start a new line or steer a terminal.
fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A field key as the host writes it: `[A-Za-z0-9_.-]`, at most 64 bytes.
fn clean_key(k: &str) -> String {
    let mut out: String = k
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_KEY_BYTES)
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// What a `log` call sees: the invocation's labels and budget.
pub struct LogCtxView<'a> {
    /// Per-invocation state.
    pub call: &'a mut CallState,
    /// The tenant's records over time.
    pub bucket: &'a crate::limits::RateBucket,
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
        if call.logs.len() >= call.limits.log_records as usize
            || !self.bucket.try_take(1.0, std::time::Instant::now())
        {
            call.logs_dropped += 1;
            return Ok(());
        }
        let message = escape_controls(&truncate(message, MAX_MESSAGE_BYTES));
        let mut size = message.len();
        let mut kept: Vec<(String, String)> = Vec::new();
        for f in fields.into_iter().take(MAX_FIELDS) {
            let (k, v) = (clean_key(&f.key), truncate(f.value, MAX_FIELD_BYTES));
            if size + k.len() + v.len() > MAX_RECORD_BYTES {
                break;
            }
            size += k.len() + v.len();
            kept.push((k, v));
        }
        let fields = kept;
        // One JSON object: keys and values are quoted and escaped, and none
        // can stand beside the host's own fields.
        let rendered = serde_json::to_string(
            &fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<std::collections::BTreeMap<_, _>>(),
        )
        .unwrap_or_default();
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
    use super::*;

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo".into(), 2), "h…");
        assert_eq!(truncate("short".into(), 10), "short");
    }

    /// Issue 11, finding 5: nothing a plugin writes can start a line or
    /// pass for a host field.
    #[test]
    fn messages_and_keys_cannot_forge_lines() {
        let forged = "ok\n2026-12-02T00:00:00Z INFO egress tenant=victim destination=x";
        let escaped = escape_controls(forged);
        assert!(!escaped.contains('\n'), "{escaped}");
        assert!(escaped.contains("\\n2026"), "{escaped}");
        assert_eq!(escape_controls("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape_controls("plain é"), "plain é");
        assert_eq!(clean_key("tenant\n=x y"), "tenant__x_y");
        assert_eq!(clean_key(""), "_");
        assert_eq!(clean_key(&"k".repeat(100)).len(), MAX_KEY_BYTES);
    }
}
