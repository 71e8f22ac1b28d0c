//! The instance's configuration, read and checked once per invocation.

use switchyard_sdk::ConfigSpec;
use switchyard_sdk::config::{Ranges, Values, range_of};

/// Statuses exactly as the seed names them.
pub const PENDING: &str = "Pending Approval";
/// The install command went to UEM.
pub const DISPATCHED: &str = "Install Command Dispatched";
/// UEM reports the app installed.
pub const INSTALLED: &str = "Installed";
/// ServiceNow rejected the request.
pub const REJECTED: &str = "Rejected";
/// No decision before the due date.
pub const EXPIRED: &str = "Expired";
/// The install failed or timed out; the employee must request again.
pub const ERROR: &str = "Error";
/// Every status, in the order of the flow.
pub const STATUSES: &[&str] = &[PENDING, DISPATCHED, INSTALLED, REJECTED, EXPIRED, ERROR];

/// Slack events: (setting key, what it announces). Their default slots
/// are in [`DEFAULTS`].
pub const SLACK_EVENTS: &[(&str, &str)] = &[
    ("slack_pending_approval", PENDING),
    ("slack_install_command_dispatched", DISPATCHED),
    ("slack_installed", INSTALLED),
    ("slack_rejected", REJECTED),
    ("slack_expired", EXPIRED),
    ("slack_error", ERROR),
    ("slack_reminder", "Reminder"),
];

/// The Slack credential slots a tenant can bind (one incoming webhook, so
/// one channel, each).
pub const SLACK_SLOTS: &[(&str, &str)] = &[
    (
        "slack-requests",
        "Slack incoming webhook for new requests and reminders",
    ),
    ("slack-approvals", "Slack incoming webhook for decisions"),
    (
        "slack-installs",
        "Slack incoming webhook for completed installs",
    ),
    (
        "slack-alerts",
        "Slack incoming webhook for expiries and errors",
    ),
];

/// Every optional key: (key, default, description).
pub const DEFAULTS: &[(&str, &str, &str)] = &[
    (
        "expiry_days",
        "14",
        "Days a request waits for a decision before it expires (1-365)",
    ),
    (
        "reminder_days",
        "2",
        "Days before expiry a reminder goes to ServiceNow (work note) and Slack; 0 for none (0-364)",
    ),
    (
        "allowed_platforms",
        "windows",
        "OS families whose devices may request apps, comma-separated (windows, macos, ios, android, linux)",
    ),
    (
        "install_timeout_hours",
        "24",
        "Hours an install may take before the request ends in Error (1-720)",
    ),
    (
        "column_callback_url",
        "u_uem_callback_url",
        "sc_request column holding the callback URL",
    ),
    (
        "column_device_id",
        "u_uem_device_id",
        "sc_request column holding the UEM device id",
    ),
    (
        "column_request_id",
        "u_uem_request_id",
        "sc_request column holding the request id",
    ),
    (
        "slack_pending_approval",
        "slack-requests",
        "Slack slot for new requests, or none",
    ),
    (
        "slack_install_command_dispatched",
        "slack-approvals",
        "Slack slot for approvals (install sent), or none",
    ),
    (
        "slack_installed",
        "slack-installs",
        "Slack slot for completed installs, or none",
    ),
    (
        "slack_rejected",
        "slack-approvals",
        "Slack slot for rejections, or none",
    ),
    (
        "slack_expired",
        "slack-alerts",
        "Slack slot for expiries, or none",
    ),
    (
        "slack_error",
        "slack-alerts",
        "Slack slot for install errors, or none",
    ),
    (
        "slack_reminder",
        "slack-requests",
        "Slack slot for reminders, or none",
    ),
];

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// UEM API base URL.
    pub uem_url: String,
    /// ServiceNow instance URL.
    pub servicenow_url: String,
    /// The scoped app's REST namespace (`/api/<namespace>/appapproval/request`).
    pub namespace: String,
    /// This instance's `decisions` route, as ServiceNow reaches it.
    pub callback_url: String,
    /// Days to a decision.
    pub expiry_days: u64,
    /// Days before expiry for the reminder (0: none).
    pub reminder_days: u64,
    /// Allowed OS families (lower-case names).
    pub platforms: Vec<String>,
    /// Hours an install may take.
    pub install_timeout_hours: u64,
    /// Column names.
    pub column_callback_url: String,
    /// Column names.
    pub column_device_id: String,
    /// Column names.
    pub column_request_id: String,
    /// Event → Slack slot (None: not announced).
    pub slack: Vec<(&'static str, Option<String>)>,
}

const FAMILIES: &[&str] = &["windows", "macos", "ios", "android", "linux"];

/// The whole-number keys and their ranges, in one table: what `check`
/// refuses (through [`spec`]) and what [`Settings::read`] accepts.
const RANGES: Ranges = &[
    ("expiry_days", 1, 365),
    ("reminder_days", 0, 364),
    ("install_timeout_hours", 1, 720),
];

/// The manifest's entry for the optional key `key`, with the values it
/// accepts, so that `switchyard check` refuses what [`Settings::read`]
/// would (the rules that involve two keys are left to `read`).
pub fn spec(key: &str, default: &str, description: &str) -> ConfigSpec {
    let spec = ConfigSpec::optional(key, description, default);
    if let Some((min, max)) = range_of(RANGES, key) {
        return spec.integer(min, max);
    }
    match key {
        "allowed_platforms" => spec.list_of(FAMILIES),
        _ => spec,
    }
}

impl Settings {
    /// Reads and checks every key; the error names the first bad one.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let v = Values::new(get, DEFAULTS);
        let namespace = v.text("servicenow_namespace").trim().to_owned();
        if namespace.is_empty()
            || !namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "servicenow_namespace: `{namespace}` is not a REST API namespace (letters, digits, _ and -)"
            ));
        }
        let expiry_days = v.ranged("expiry_days", RANGES)? as u64;
        let reminder_days = v.ranged("reminder_days", RANGES)? as u64;
        if reminder_days >= expiry_days {
            return Err(format!(
                "reminder_days: {reminder_days} is not less than expiry_days ({expiry_days})"
            ));
        }
        let mut platforms = Vec::new();
        for p in v.text("allowed_platforms").split([',', ';']) {
            let p = p.trim().to_ascii_lowercase();
            if p.is_empty() {
                continue;
            }
            if !FAMILIES.contains(&p.as_str()) {
                return Err(format!(
                    "allowed_platforms: `{p}` is not one of {}",
                    FAMILIES.join(", ")
                ));
            }
            platforms.push(p);
        }
        if platforms.is_empty() {
            return Err("allowed_platforms: name at least one OS family".into());
        }
        let mut slack = Vec::new();
        for (key, event) in SLACK_EVENTS {
            let slot = v.text(key).trim().to_owned();
            if slot == "none" || slot.is_empty() {
                slack.push((*event, None));
            } else if SLACK_SLOTS.iter().any(|(s, _)| *s == slot) {
                slack.push((*event, Some(slot)));
            } else {
                let slots: Vec<&str> = SLACK_SLOTS.iter().map(|(s, _)| *s).collect();
                return Err(format!(
                    "{key}: `{slot}` is not a Slack slot ({}) or none",
                    slots.join(", ")
                ));
            }
        }
        let column = |key: &str| -> Result<String, String> {
            let c = v.text(key).trim().to_owned();
            if c.is_empty() || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("{key}: `{c}` is not a column name"));
            }
            Ok(c)
        };
        Ok(Self {
            uem_url: v.url("uem_url")?,
            servicenow_url: v.url("servicenow_url")?,
            namespace,
            callback_url: v.url("callback_url")?,
            expiry_days,
            reminder_days,
            platforms,
            install_timeout_hours: v.ranged("install_timeout_hours", RANGES)? as u64,
            column_callback_url: column("column_callback_url")?,
            column_device_id: column("column_device_id")?,
            column_request_id: column("column_request_id")?,
            slack,
        })
    }

    /// The Slack slot for `event`, when it is announced.
    pub fn slack_slot(&self, event: &str) -> Option<&str> {
        self.slack
            .iter()
            .find(|(e, _)| *e == event)
            .and_then(|(_, s)| s.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        let mut all = vec![
            ("uem_url", "https://uem.example.com"),
            ("servicenow_url", "https://acme.service-now.com"),
            ("servicenow_namespace", "x_acme_uem"),
            (
                "callback_url",
                "https://sy.example.com/hooks/acme/apps/decisions",
            ),
        ];
        all.extend_from_slice(pairs);
        Settings::read(|k| {
            all.iter()
                .rev()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn defaults_are_the_seeds() {
        let s = read(&[]).unwrap();
        assert_eq!(s.expiry_days, 14);
        assert_eq!(s.platforms, ["windows"]);
        assert_eq!(s.column_request_id, "u_uem_request_id");
        assert_eq!(s.slack_slot(PENDING), Some("slack-requests"));
    }

    #[test]
    fn bad_values_are_named() {
        for (pair, key) in [
            (("allowed_platforms", "windows,beos"), "allowed_platforms"),
            (("expiry_days", "0"), "expiry_days"),
            (("reminder_days", "14"), "reminder_days"),
            (("slack_error", "slack-nope"), "slack_error"),
            (("servicenow_namespace", "x/../y"), "servicenow_namespace"),
            (("column_device_id", "u_x^y"), "column_device_id"),
        ] {
            let e = read(&[pair]).unwrap_err();
            assert!(e.starts_with(key), "{e}");
        }
        assert_eq!(
            read(&[("slack_error", "none")]).unwrap().slack_slot(ERROR),
            None
        );
    }
}
