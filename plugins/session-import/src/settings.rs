//! The instance's configuration, read and checked once per invocation.

use switchyard_sdk::ConfigSpec;
use switchyard_sdk::config::{Ranges, range_of};

/// Event types BeyondTrust session reports use. The events-to-import filter
/// names types from this list; "Load Event Types" writes it to ServiceNow.
pub const KNOWN_EVENT_TYPES: &[&str] = &[
    "Session Start",
    "Session End",
    "Customer Joined Session",
    "Customer Left Session",
    "Representative Joined Session",
    "Representative Left Session",
    "Session Transferred",
    "Chat Message",
    "Session Note Added",
    "File Transfer",
    "File Deleted",
    "Screen Sharing Started",
    "Screen Sharing Stopped",
    "Screen Recording Started",
    "Command Shell Session Started",
    "Registry Access",
    "System Information Retrieved",
    "Elevation Requested",
    "Customer Exit Survey",
    "Representative Exit Survey",
    "Conference Owner Changed",
];

/// The whole-number keys and their ranges, in one table: what `check`
/// refuses (through [`spec`]) and what [`Settings::read`] accepts.
const RANGES: Ranges = &[
    ("first_pull_hours", 1, 24 * 90),
    ("window_minutes", 1, 24 * 60),
    ("claim_lease_secs", 1, 3600),
    ("run_budget_secs", 1, 3600),
];

/// The manifest's entry for the optional key `key`, with the values it
/// accepts, so that `switchyard check` refuses what [`Settings::read`]
/// would.
pub fn spec(key: &str, default: &str, description: &str) -> ConfigSpec {
    let spec = ConfigSpec::optional(key, description, default);
    if let Some((min, max)) = range_of(RANGES, key) {
        return spec.integer(min, max);
    }
    match key {
        "session_table" | "event_type_table" | "issue_table" => spec
            .pattern("^[a-z0-9_]{1,80}$")
            .described("a ServiceNow table name (lower-case letters, digits and _)"),
        "events_to_import" => {
            let names: Vec<&str> = ["all", "none"]
                .into_iter()
                .chain(KNOWN_EVENT_TYPES.iter().copied())
                .collect();
            spec.list_of(&names)
        }
        "note_session_notes"
        | "note_session_end"
        | "note_session_key"
        | "note_customer_initiated"
        | "associate_user"
        | "import_external_sessions" => spec.boolean(),
        _ => spec,
    }
}

/// Which session events go into the session record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    /// Every event, known type or not.
    All,
    /// Only these (known) types; an empty list imports none.
    Only(Vec<String>),
}

impl EventFilter {
    /// `all`, `none`, or known event types separated by `;` or `,` (an
    /// `all` among them means all, a `none` adds nothing).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Ok(Self::All);
        }
        let mut out = Vec::new();
        for t in s.split([';', ',']).map(str::trim).filter(|t| !t.is_empty()) {
            match t.to_ascii_lowercase().as_str() {
                "all" => return Ok(Self::All),
                "none" => continue,
                _ => {}
            }
            let Some(known) = KNOWN_EVENT_TYPES.iter().find(|k| k.eq_ignore_ascii_case(t)) else {
                return Err(format!(
                    "events_to_import: `{t}` is not a known event type (known: {})",
                    KNOWN_EVENT_TYPES.join("; ")
                ));
            };
            if !out.iter().any(|o| o == known) {
                out.push((*known).to_owned());
            }
        }
        Ok(Self::Only(out))
    }

    /// Whether events of type `t` are imported.
    pub fn wants(&self, t: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(types) => types.iter().any(|x| x == t),
        }
    }
}

/// Which work notes are written on the associated task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notes {
    /// Each "Session Note Added" event's text.
    pub session_notes: bool,
    /// A summary when the session ends.
    pub session_end: bool,
    /// A note when Generate Session Key runs on an incident.
    pub session_key: bool,
    /// Notes for sessions the customer started (no external key); off, a
    /// customer-initiated session is recorded and associated silently.
    pub customer_initiated: bool,
}

/// Everything the plugin reads from its configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// BeyondTrust site base URL.
    pub site_url: String,
    /// ServiceNow instance base URL.
    pub servicenow_url: String,
    /// Table of support-session records.
    pub session_table: String,
    /// Table of event types.
    pub event_type_table: String,
    /// Table of support issues.
    pub issue_table: String,
    /// Events imported into the record.
    pub events: EventFilter,
    /// Work-note switches.
    pub notes: Notes,
    /// Associate the record with the ServiceNow user of the primary rep.
    pub associate_user: bool,
    /// Import sessions started outside ServiceNow: those that no ServiceNow
    /// task claims (no external key or survey task that matches one).
    pub import_external: bool,
    /// How far back the first pull reaches, seconds.
    pub lookback_secs: i64,
    /// Report window asked for at once, seconds (halved when too large).
    pub window_secs: i64,
    /// How long a session claimed by a run is left to it, seconds.
    pub claim_lease_secs: i64,
    /// Time a pull spends before it stops and leaves the rest to the next
    /// run, seconds.
    pub run_budget_secs: u64,
    /// Incident states in which Generate Session Key is not offered.
    pub key_hidden_states: Vec<String>,
    /// Queue a generated session key is for.
    pub queue_id: String,
}

/// Default configuration values, as the manifest declares them.
pub const DEFAULTS: &[(&str, &str, &str)] = &[
    (
        "session_table",
        "x_bmgr_support_session",
        "ServiceNow table of support-session records",
    ),
    (
        "event_type_table",
        "x_bmgr_support_event_type",
        "ServiceNow table Load Event Types fills",
    ),
    (
        "issue_table",
        "x_bmgr_support_issue",
        "ServiceNow table Load Issues fills",
    ),
    (
        "events_to_import",
        "all",
        "Session events copied into the record: all, none, or event types separated by `;` (as Load Event Types lists them)",
    ),
    (
        "note_session_notes",
        "true",
        "Work note on the task for each session note",
    ),
    (
        "note_session_end",
        "true",
        "Work note on the task when a session ends",
    ),
    (
        "note_session_key",
        "true",
        "Work note on the incident when a session key is generated",
    ),
    (
        "note_customer_initiated",
        "false",
        "Work notes for sessions the customer started (no external key)",
    ),
    (
        "associate_user",
        "false",
        "Associate each session with the ServiceNow user named like its primary rep",
    ),
    (
        "import_external_sessions",
        "true",
        "Import sessions started outside ServiceNow (no external key or survey task matching a ServiceNow task)",
    ),
    (
        "first_pull_hours",
        "24",
        "How far back the first pull reaches, hours",
    ),
    (
        "window_minutes",
        "60",
        "Report window asked for at once, minutes (halved when an answer is too large)",
    ),
    (
        "claim_lease_secs",
        "120",
        "Seconds a session being imported is left to the run importing it",
    ),
    (
        "run_budget_secs",
        "20",
        "Seconds a pull works before leaving the rest to the next run (keep it under the instance's deadline)",
    ),
    (
        "session_key_hidden_states",
        "6;7;8",
        "Incident states (values, `;`-separated) in which Generate Session Key is refused: resolved, closed, canceled",
    ),
    (
        "queue_id",
        "general",
        "Queue for generated session keys: general, rep:<id>, team:<id>, …",
    ),
];

fn flag(key: &str, v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        other => Err(format!("{key}: `{other}` is not true or false")),
    }
}

fn number(key: &str, v: &str, min: i64, max: i64) -> Result<i64, String> {
    let n: i64 = v
        .trim()
        .parse()
        .map_err(|_| format!("{key}: `{v}` is not a whole number"))?;
    if !(min..=max).contains(&n) {
        return Err(format!("{key}: {n} is outside {min}..={max}"));
    }
    Ok(n)
}

fn table(key: &str, v: &str) -> Result<String, String> {
    let v = v.trim();
    let ok = !v.is_empty()
        && v.len() <= 80
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        return Err(format!(
            "{key}: `{v}` is not a table name (lower-case letters, digits and _)"
        ));
    }
    Ok(v.to_owned())
}

impl Settings {
    /// Reads the settings through `get` (the host's config, with the
    /// manifest's defaults filled in). Every problem is named.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let value = |k: &str| -> String {
            get(k)
                .or_else(|| {
                    DEFAULTS
                        .iter()
                        .find(|(d, _, _)| *d == k)
                        .map(|(_, v, _)| (*v).to_owned())
                })
                .unwrap_or_default()
        };
        let url = |k: &str| -> Result<String, String> {
            let v = value(k);
            let v = v.trim().trim_end_matches('/');
            if !(v.starts_with("https://") || v.starts_with("http://")) {
                return Err(format!("{k}: `{v}` is not an http(s) URL"));
            }
            Ok(v.to_owned())
        };
        let ranged = |key: &str| {
            let (min, max) = range_of(RANGES, key)
                .ok_or_else(|| format!("{key}: no range is declared for it"))?;
            number(key, &value(key), min, max)
        };
        Ok(Self {
            site_url: url("site_url")?,
            servicenow_url: url("servicenow_url")?,
            session_table: table("session_table", &value("session_table"))?,
            event_type_table: table("event_type_table", &value("event_type_table"))?,
            issue_table: table("issue_table", &value("issue_table"))?,
            events: EventFilter::parse(&value("events_to_import"))?,
            notes: Notes {
                session_notes: flag("note_session_notes", &value("note_session_notes"))?,
                session_end: flag("note_session_end", &value("note_session_end"))?,
                session_key: flag("note_session_key", &value("note_session_key"))?,
                customer_initiated: flag(
                    "note_customer_initiated",
                    &value("note_customer_initiated"),
                )?,
            },
            associate_user: flag("associate_user", &value("associate_user"))?,
            import_external: flag(
                "import_external_sessions",
                &value("import_external_sessions"),
            )?,
            lookback_secs: ranged("first_pull_hours")? * 3600,
            window_secs: ranged("window_minutes")? * 60,
            claim_lease_secs: ranged("claim_lease_secs")?,
            run_budget_secs: ranged("run_budget_secs")? as u64,
            key_hidden_states: value("session_key_hidden_states")
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            queue_id: {
                let q = value("queue_id").trim().to_owned();
                if q.is_empty() { "general".into() } else { q }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        let pairs: Vec<(String, String)> = [
            ("site_url", "https://support.acme.example/"),
            ("servicenow_url", "https://acme.service-now.com"),
        ]
        .iter()
        .chain(pairs)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        Settings::read(|k| {
            pairs
                .iter()
                .rev()
                .find(|(pk, _)| pk == k)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults_are_what_the_seed_does() {
        let s = with(&[]).unwrap();
        assert_eq!(s.site_url, "https://support.acme.example");
        assert_eq!(s.events, EventFilter::All);
        assert!(s.notes.session_end && s.notes.session_notes && s.notes.session_key);
        assert!(!s.notes.customer_initiated && !s.associate_user);
        assert_eq!(s.lookback_secs, 24 * 3600);
        assert_eq!(s.key_hidden_states, ["6", "7", "8"]);
    }

    #[test]
    fn the_event_filter_takes_known_types_only() {
        let f = EventFilter::parse("chat message; Session Note Added;Chat Message").unwrap();
        assert_eq!(
            f,
            EventFilter::Only(vec!["Chat Message".into(), "Session Note Added".into()])
        );
        assert!(f.wants("Chat Message") && !f.wants("File Transfer"));
        assert!(!EventFilter::parse("none").unwrap().wants("Chat Message"));
        let e = EventFilter::parse("Chat Message;Coffee Break").unwrap_err();
        assert!(
            e.contains("`Coffee Break` is not a known event type"),
            "{e}"
        );
        // Issue 19, session-import 6: seen in real reports, selectable.
        let f = EventFilter::parse("Conference Owner Changed, Chat Message").unwrap();
        assert!(f.wants("Conference Owner Changed") && f.wants("Chat Message"));
        // `all` anywhere means all; unknown types in reports are imported.
        let all = EventFilter::parse("Chat Message; all").unwrap();
        assert!(all.wants("Some Type Added By A Newer Site"));
        assert_eq!(
            EventFilter::parse("none, Chat Message").unwrap(),
            EventFilter::Only(vec!["Chat Message".into()])
        );
    }

    #[test]
    fn bad_values_are_named() {
        let e = with(&[("note_session_end", "maybe")]).unwrap_err();
        assert_eq!(e, "note_session_end: `maybe` is not true or false");
        let e = with(&[("site_url", "support.acme.example")]).unwrap_err();
        assert!(e.starts_with("site_url:"), "{e}");
        let e = with(&[("session_table", "x; drop")]).unwrap_err();
        assert!(e.starts_with("session_table:"), "{e}");
        let e = with(&[("first_pull_hours", "0")]).unwrap_err();
        assert_eq!(e, "first_pull_hours: 0 is outside 1..=2160");
    }
}
