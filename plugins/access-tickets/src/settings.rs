//! The instance's configuration, read and checked once per invocation.

use std::collections::BTreeMap;

use switchyard_sdk::ConfigSpec;
use switchyard_sdk::config::{Ranges, Values, range_of};

/// Who decides a request's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// ServiceNow fulfils: requests waiting for a person (`pending_manual`)
    /// get a ticket, and the ticket's state and the agent's comments flow
    /// back to the identity system until the ticket closes.
    ServiceNowMaster,
    /// The identity system decides: requests of the enabled categories get
    /// a ticket so users can follow them there, and the identity system's
    /// changes (approved, rejected, withdrawn, comments) are pushed to it.
    IdentityMaster,
}

/// States the identity system takes for a ticket (its documented set).
pub const IDENTITY_STATES: &[&str] = &[
    "new",
    "in_progress",
    "on_hold",
    "closed_complete",
    "closed_incomplete",
    "closed_rejected",
];

/// Identity statuses pushed to the ticket in identity-master mode.
pub const PUSHED_STATUSES: &[&str] = &["approved", "rejected", "withdrawn", "fulfilled"];

/// Every optional key: (key, default, description).
pub const DEFAULTS: &[(&str, &str, &str)] = &[
    (
        "mode",
        "servicenow-master",
        "servicenow-master (ServiceNow fulfils) or identity-master (the identity system decides)",
    ),
    (
        "ticket_table",
        "sc_req_item",
        "ServiceNow table tickets go into: sc_req_item or incident",
    ),
    (
        "categories",
        "",
        "identity-master: service categories that get a ticket, comma-separated",
    ),
    (
        "correlation_field",
        "correlation_id",
        "Ticket field holding the access request id (one ticket per request)",
    ),
    (
        "requester_field",
        "",
        "Ticket field for the requester, found in sys_user by email \
         (default: requested_for on sc_req_item, caller_id on incident)",
    ),
    (
        "resource_field",
        "short_description",
        "Ticket field for what is asked for",
    ),
    (
        "justification_field",
        "description",
        "Ticket field for why (with the requester and the category)",
    ),
    (
        "state_map",
        "",
        "ServiceNow state=identity state pairs, comma-separated (default: the table's standard states)",
    ),
    (
        "push_state_map",
        "",
        "identity-master: identity status=ServiceNow state pairs for approved, rejected, \
         withdrawn, fulfilled (default: the table's standard states)",
    ),
    (
        "backoff_after_runs",
        "8",
        "Runs a ticket may stay unchanged before it is polled less often (1-1000)",
    ),
    (
        "history_days",
        "90",
        "Days a closed request's record and history are kept (1-3650)",
    ),
    (
        "backoff_every",
        "8",
        "An unchanged ticket past backoff_after_runs is polled every this many runs (1-1000)",
    ),
];

/// The checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// ServiceNow instance base URL.
    pub servicenow_url: String,
    /// Identity system base URL.
    pub identity_url: String,
    /// Who decides.
    pub mode: Mode,
    /// Ticket table.
    pub table: String,
    /// Enabled categories (identity-master).
    pub categories: Vec<String>,
    /// Correlation field.
    pub correlation_field: String,
    /// Requester field.
    pub requester_field: String,
    /// Field for the resource asked for.
    pub resource_field: String,
    /// Field for the justification.
    pub justification_field: String,
    /// ServiceNow state → identity state.
    pub state_map: BTreeMap<String, String>,
    /// Identity status → ServiceNow state (identity-master).
    pub push_state_map: BTreeMap<String, String>,
    /// Unchanged runs before backing off.
    pub backoff_after_runs: u32,
    /// Poll period of a backed-off ticket, in runs.
    pub backoff_every: u32,
    /// Days a closed request is kept.
    pub history_days: u32,
}

fn field_name(key: &str, v: &str) -> Result<String, String> {
    let v = v.trim();
    if !v.is_empty()
        && v.len() <= 80
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "{key}: `{v}` is not a ServiceNow field name (lowercase letters, digits, _)"
        ))
    }
}

/// `a=b, c=d` pairs; `allowed_right` checks each right-hand side.
fn pairs(
    key: &str,
    v: &str,
    allowed_right: impl Fn(&str) -> bool,
    right_names: &str,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((l, r)) = pair.split_once('=') else {
            return Err(format!("{key}: `{pair}` is not `from=to`"));
        };
        let (l, r) = (l.trim(), r.trim());
        if l.is_empty() || !allowed_right(r) {
            return Err(format!(
                "{key}: `{pair}`: the right side must be one of {right_names}"
            ));
        }
        out.insert(l.to_owned(), r.to_owned());
    }
    Ok(out)
}

/// The standard states of `table` as the identity system knows them.
fn default_state_map(table: &str) -> BTreeMap<String, String> {
    let pairs: &[(&str, &str)] = match table {
        // New, In Progress, On Hold, Resolved, Closed, Canceled.
        "incident" => &[
            ("1", "new"),
            ("2", "in_progress"),
            ("3", "on_hold"),
            ("6", "closed_complete"),
            ("7", "closed_complete"),
            ("8", "closed_rejected"),
        ],
        // Pending, Open, Work in Progress, Closed Complete, Closed
        // Incomplete, Closed Skipped.
        _ => &[
            ("-5", "on_hold"),
            ("1", "new"),
            ("2", "in_progress"),
            ("3", "closed_complete"),
            ("4", "closed_incomplete"),
            ("7", "closed_rejected"),
        ],
    };
    pairs
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

fn default_push_map(table: &str) -> BTreeMap<String, String> {
    let pairs: &[(&str, &str)] = match table {
        "incident" => &[
            ("approved", "2"),
            ("rejected", "8"),
            ("withdrawn", "8"),
            ("fulfilled", "6"),
        ],
        _ => &[
            ("approved", "2"),
            ("rejected", "4"),
            ("withdrawn", "7"),
            ("fulfilled", "3"),
        ],
    };
    pairs
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// The whole-number keys and their ranges, in one table: what `check`
/// refuses (through [`spec`]) and what [`Settings::read`] accepts.
const RANGES: Ranges = &[
    ("backoff_after_runs", 1, 1000),
    ("backoff_every", 1, 1000),
    ("history_days", 1, 3650),
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
        "mode" => spec.one_of(&["servicenow-master", "identity-master"]),
        "ticket_table" => spec.one_of(&["sc_req_item", "incident"]),
        _ => spec,
    }
}

impl Settings {
    /// Reads and checks every key; the error names the key and the value.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let v = Values::new(get, DEFAULTS);
        let value = |key: &str| v.text(key);
        let mode = match value("mode").trim() {
            "servicenow-master" => Mode::ServiceNowMaster,
            "identity-master" => Mode::IdentityMaster,
            other => {
                return Err(format!(
                    "mode: `{other}` is neither servicenow-master nor identity-master"
                ));
            }
        };
        let table = match value("ticket_table").trim() {
            t @ ("sc_req_item" | "incident") => t.to_owned(),
            other => {
                return Err(format!(
                    "ticket_table: `{other}` is not sc_req_item or incident"
                ));
            }
        };
        let mut categories: Vec<String> = Vec::new();
        for c in value("categories").split(',').map(str::trim) {
            if !c.is_empty() && !categories.iter().any(|k| k == c) {
                categories.push(c.to_owned());
            }
        }
        if mode == Mode::IdentityMaster && categories.is_empty() {
            return Err(
                "categories: identity-master mode needs at least one service category".into(),
            );
        }
        let requester = match value("requester_field").trim() {
            "" if table == "incident" => "caller_id".to_owned(),
            "" => "requested_for".to_owned(),
            v => field_name("requester_field", v)?,
        };
        let mut state_map = default_state_map(&table);
        state_map.extend(pairs(
            "state_map",
            &value("state_map"),
            |r| IDENTITY_STATES.contains(&r),
            &IDENTITY_STATES.join(", "),
        )?);
        let mut push_state_map = default_push_map(&table);
        let push = pairs(
            "push_state_map",
            &value("push_state_map"),
            |r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit() || b == b'-'),
            "a ServiceNow state value (a number)",
        )?;
        if let Some(k) = push.keys().find(|k| !PUSHED_STATUSES.contains(&k.as_str())) {
            return Err(format!(
                "push_state_map: `{k}` is not one of {}",
                PUSHED_STATUSES.join(", ")
            ));
        }
        push_state_map.extend(push);
        Ok(Self {
            servicenow_url: v.url("servicenow_url")?,
            identity_url: v.url("identity_url")?,
            mode,
            correlation_field: field_name("correlation_field", &value("correlation_field"))?,
            requester_field: requester,
            resource_field: field_name("resource_field", &value("resource_field"))?,
            justification_field: field_name("justification_field", &value("justification_field"))?,
            state_map,
            push_state_map,
            backoff_after_runs: v.ranged("backoff_after_runs", RANGES)? as u32,
            backoff_every: v.ranged("backoff_every", RANGES)? as u32,
            history_days: v.ranged("history_days", RANGES)? as u32,
            categories,
            table,
        })
    }

    /// The identity system's name for ServiceNow state `state`; None for a
    /// state the map does not know.
    pub fn identity_state(&self, state: &str) -> Option<&str> {
        self.state_map.get(state).map(String::as_str)
    }

    /// Whether the ticket state `state` is closed (maps to `closed_*`).
    pub fn is_closed(&self, state: &str) -> bool {
        self.identity_state(state)
            .is_some_and(|s| s.starts_with("closed_"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        // The test's pairs first: they win over the base URLs.
        let mut all = pairs.to_vec();
        all.extend_from_slice(&[
            ("servicenow_url", "https://acme.service-now.com/"),
            ("identity_url", "https://idm.acme.example"),
        ]);
        Settings::read(|k| {
            all.iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn defaults_follow_the_table() {
        let s = with(&[]).unwrap();
        assert_eq!(s.mode, Mode::ServiceNowMaster);
        assert_eq!(s.servicenow_url, "https://acme.service-now.com");
        assert_eq!(
            (s.table.as_str(), s.requester_field.as_str()),
            ("sc_req_item", "requested_for")
        );
        assert_eq!(s.identity_state("3"), Some("closed_complete"));
        assert!(s.is_closed("4") && !s.is_closed("2") && !s.is_closed("99"));
        let inc = with(&[("ticket_table", "incident")]).unwrap();
        assert_eq!(inc.requester_field, "caller_id");
        assert_eq!(inc.identity_state("3"), Some("on_hold"));
        assert_eq!(inc.push_state_map["withdrawn"], "8");
    }

    #[test]
    fn maps_can_be_changed_in_part() {
        let s = with(&[("state_map", "2=on_hold, 9=closed_complete")]).unwrap();
        assert_eq!(s.identity_state("2"), Some("on_hold"));
        assert_eq!(s.identity_state("9"), Some("closed_complete"));
        assert_eq!(s.identity_state("1"), Some("new"));
        let s = with(&[
            ("mode", "identity-master"),
            ("categories", "finance, it, finance"),
            ("push_state_map", "approved=-5"),
        ])
        .unwrap();
        assert_eq!(s.categories, ["finance", "it"]);
        assert_eq!(s.push_state_map["approved"], "-5");
    }

    #[test]
    fn bad_values_are_named() {
        for (pairs, needle) in [
            (vec![("mode", "both")], "mode: `both`"),
            (vec![("ticket_table", "sys_user")], "ticket_table"),
            (vec![("mode", "identity-master")], "categories"),
            (vec![("state_map", "3=done")], "state_map: `3=done`"),
            (vec![("state_map", "3")], "is not `from=to`"),
            (vec![("push_state_map", "approved=yes")], "push_state_map"),
            (vec![("push_state_map", "paused=2")], "`paused`"),
            (vec![("correlation_field", "x^y")], "correlation_field"),
            (vec![("resource_field", "a b")], "resource_field"),
            (vec![("backoff_every", "0")], "backoff_every"),
            (vec![("identity_url", "ftp://x")], "identity_url"),
        ] {
            let err = with(&pairs).unwrap_err();
            assert!(err.contains(needle), "{pairs:?}: {err}");
        }
    }
}
