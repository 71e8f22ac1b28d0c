//! A plugin's manifest in host terms: what it offers and what it needs.
//!
//! The guest returns the WIT `manifest` record; the host converts it once per
//! plugin version, validates it, and serialises it for `plugin inspect` and
//! the admin API.

use serde::Serialize;

use crate::bindings::types;
use crate::credentials::CredentialKind;
use crate::egress::EgressRule;

/// What a plugin is and what it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    /// Plugin id, e.g. `uem-actions`.
    pub id: String,
    /// Plugin version (semver).
    pub version: String,
    /// One-paragraph description.
    pub description: String,
    /// Actions agents may invoke.
    pub actions: Vec<ActionSpec>,
    /// Webhook routes.
    pub webhooks: Vec<WebhookSpec>,
    /// Scheduled jobs.
    pub jobs: Vec<JobSpec>,
    /// Configuration keys.
    pub config: Vec<ConfigSpec>,
    /// Credential slots.
    pub credentials: Vec<CredentialSlot>,
    /// Destinations the plugin needs the tenant to allow.
    pub egress: Vec<EgressNeed>,
}

/// An action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionSpec {
    /// Name used in the action URL.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its input (as JSON).
    pub input_schema: serde_json::Value,
    /// Role required of the actor.
    pub required_role: Option<String>,
}

/// A webhook route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookSpec {
    /// Route name.
    pub route: String,
    /// What it receives.
    pub description: String,
    /// `synchronous` or `queued`.
    pub mode: &'static str,
}

/// A job and its allowed intervals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobSpec {
    /// Job name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Shortest allowed interval, seconds.
    pub min_interval_secs: u32,
    /// Longest allowed interval, seconds.
    pub max_interval_secs: u32,
    /// Interval used when the tenant sets none, seconds.
    pub default_interval_secs: u32,
    /// A webhook route doing the same work pushed: a tenant sets up one or
    /// the other, never both.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclusive_with_webhook: Option<String>,
}

/// A configuration key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigSpec {
    /// Key.
    pub key: String,
    /// Meaning.
    pub description: String,
    /// Whether the tenant must set it (when there is no default).
    pub required: bool,
    /// Default value.
    pub default: Option<String>,
}

/// A credential slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialSlot {
    /// Name the plugin uses.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Acceptable kinds.
    pub kinds: Vec<CredentialKind>,
    /// Whether the tenant must bind it.
    pub required: bool,
}

/// An egress need: a destination the plugin asks the tenant to allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressNeed {
    /// A fixed destination (an egress entry such as `https://slack.com` or
    /// `https://*.slack.com`), or None when the tenant's configuration
    /// names it (e.g. a ServiceNow instance URL).
    pub destination: Option<String>,
    /// Why, or which config key names it.
    pub description: String,
}

impl EgressNeed {
    /// The fixed destination as an egress rule.
    pub fn rule(&self) -> Option<EgressRule> {
        // Validated when the manifest was read.
        self.destination.as_ref()?.parse().ok()
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn unique<'a>(what: &str, names: impl Iterator<Item = &'a str>) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for n in names {
        if !is_name(n) {
            return Err(format!(
                "{what} name `{n}` must be 1-64 characters of a-z, 0-9, - and _"
            ));
        }
        if !seen.insert(n) {
            return Err(format!("{what} `{n}` is declared twice"));
        }
    }
    Ok(())
}

impl Manifest {
    /// Converts and validates what the guest returned.
    pub(crate) fn from_wit(m: types::Manifest) -> Result<Self, String> {
        if !is_name(&m.id) {
            return Err(format!(
                "plugin id `{}` must be 1-64 characters of a-z, 0-9, - and _",
                m.id
            ));
        }
        if m.version.is_empty() || m.version.len() > 64 {
            return Err("plugin version must be 1-64 characters".into());
        }
        unique("action", m.actions.iter().map(|a| a.name.as_str()))?;
        unique("webhook route", m.webhooks.iter().map(|w| w.route.as_str()))?;
        unique("job", m.jobs.iter().map(|j| j.name.as_str()))?;
        unique("config key", m.config.iter().map(|c| c.key.as_str()))?;
        unique(
            "credential slot",
            m.credentials.iter().map(|c| c.name.as_str()),
        )?;
        let actions = m
            .actions
            .into_iter()
            .map(|a| {
                let input_schema = serde_json::from_str(&a.input_schema)
                    .map_err(|e| format!("action `{}`: input schema is not JSON: {e}", a.name))?;
                Ok(ActionSpec {
                    name: a.name,
                    description: a.description,
                    input_schema,
                    required_role: a.required_role,
                })
            })
            .collect::<Result<_, String>>()?;
        let routes: Vec<String> = m.webhooks.iter().map(|w| w.route.clone()).collect();
        let jobs = m
            .jobs
            .into_iter()
            .map(|j| {
                if let Some(r) = &j.exclusive_with_webhook
                    && !routes.contains(r)
                {
                    return Err(format!(
                        "job `{}`: exclusive with webhook route `{r}`, which the manifest does not declare",
                        j.name
                    ));
                }
                let ok = j.min_interval_secs > 0
                    && j.min_interval_secs <= j.default_interval_secs
                    && j.default_interval_secs <= j.max_interval_secs;
                if !ok {
                    return Err(format!(
                        "job `{}`: intervals must satisfy 0 < min <= default <= max \
                         (got {}, {}, {})",
                        j.name, j.min_interval_secs, j.default_interval_secs, j.max_interval_secs
                    ));
                }
                Ok(JobSpec {
                    name: j.name,
                    description: j.description,
                    min_interval_secs: j.min_interval_secs,
                    max_interval_secs: j.max_interval_secs,
                    default_interval_secs: j.default_interval_secs,
                    exclusive_with_webhook: j.exclusive_with_webhook,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            id: m.id,
            version: m.version,
            description: m.description,
            actions,
            webhooks: m
                .webhooks
                .into_iter()
                .map(|w| WebhookSpec {
                    route: w.route,
                    description: w.description,
                    mode: match w.mode {
                        types::WebhookMode::Synchronous => "synchronous",
                        types::WebhookMode::Queued => "queued",
                    },
                })
                .collect(),
            jobs,
            config: m
                .config
                .into_iter()
                .map(|c| ConfigSpec {
                    key: c.key,
                    description: c.description,
                    required: c.required,
                    default: c.default_value,
                })
                .collect(),
            credentials: m
                .credentials
                .into_iter()
                .map(|c| CredentialSlot {
                    name: c.name,
                    description: c.description,
                    kinds: c.kinds.into_iter().map(CredentialKind::from).collect(),
                    required: c.required,
                })
                .collect(),
            egress: m
                .egress
                .into_iter()
                .map(|e| {
                    if let Some(d) = &e.destination {
                        d.parse::<EgressRule>()
                            .map_err(|err| format!("egress need `{}`: {err}", e.description))?;
                    }
                    Ok(EgressNeed {
                        destination: e.destination,
                        description: e.description,
                    })
                })
                .collect::<Result<_, String>>()?,
        })
    }

    /// The action called `name`.
    pub fn action(&self, name: &str) -> Option<&ActionSpec> {
        self.actions.iter().find(|a| a.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(exclusive_with: Option<&str>) -> types::Manifest {
        types::Manifest {
            id: "sessions".into(),
            version: "1.0.0".into(),
            description: "d".into(),
            actions: vec![],
            webhooks: vec![types::WebhookSpec {
                route: "events".into(),
                description: "d".into(),
                mode: types::WebhookMode::Queued,
            }],
            jobs: vec![types::JobSpec {
                name: "pull".into(),
                description: "d".into(),
                min_interval_secs: 60,
                max_interval_secs: 600,
                default_interval_secs: 300,
                exclusive_with_webhook: exclusive_with.map(str::to_owned),
            }],
            config: vec![],
            credentials: vec![],
            egress: vec![],
        }
    }

    #[test]
    fn a_job_may_be_exclusive_only_with_a_declared_route() {
        let m = Manifest::from_wit(manifest(Some("events"))).unwrap();
        assert_eq!(m.jobs[0].exclusive_with_webhook.as_deref(), Some("events"));
        assert!(
            Manifest::from_wit(manifest(None)).unwrap().jobs[0]
                .exclusive_with_webhook
                .is_none()
        );
        let e = Manifest::from_wit(manifest(Some("nope"))).unwrap_err();
        assert_eq!(
            e,
            "job `pull`: exclusive with webhook route `nope`, which the manifest does not declare"
        );
    }
}
