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
    /// What else an interval must satisfy (e.g. whole minutes: a multiple
    /// of 60), when the plugin's settings schema says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_schema: Option<ValueSchema>,
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
    /// The values the key accepts, when the plugin says (its optional
    /// `settings-schema` export).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<ValueSchema>,
}

/// The values a configuration key accepts: a JSON Schema, compiled once per
/// plugin version, checked against the value's text read as the schema's
/// `type` says (see [`ValueSchema::check`]).
#[derive(Clone)]
pub struct ValueSchema {
    schema: serde_json::Value,
    kind: ValueKind,
    validator: std::sync::Arc<jsonschema::Validator>,
}

/// How a configuration value's text is read before its schema is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    String,
    Integer,
    Number,
    Boolean,
    /// A list of strings separated by `,` or `;` (items trimmed, empty ones
    /// dropped).
    List,
}

/// Longest description of one problem (a validator quotes the offending
/// value, which may be megabytes).
pub(crate) const MAX_PROBLEM_CHARS: usize = 300;

/// `text`, cut to [`MAX_PROBLEM_CHARS`] characters.
pub(crate) fn cut(text: &str) -> String {
    match text.char_indices().nth(MAX_PROBLEM_CHARS) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

/// Problems reported for one value at most.
const MAX_VALUE_PROBLEMS: usize = 3;

impl ValueSchema {
    /// Compiles `schema`; `what` names its place in errors (e.g.
    /// "config key `minutes`").
    pub fn compile(what: &str, schema: serde_json::Value) -> Result<Self, String> {
        let bad = |why: String| format!("{what}: {why}");
        if !schema.is_object() {
            return Err(bad("its schema must be a JSON object".into()));
        }
        let kind = match schema.get("type") {
            None => ValueKind::String,
            Some(t) => match t.as_str() {
                Some("string") => ValueKind::String,
                Some("integer") => ValueKind::Integer,
                Some("number") => ValueKind::Number,
                Some("boolean") => ValueKind::Boolean,
                Some("array") => ValueKind::List,
                _ => {
                    return Err(bad(format!(
                        "schema type {t} is not one of \"string\", \"integer\", \"number\", \
                         \"boolean\" and \"array\" (a comma-separated list of strings)"
                    )));
                }
            },
        };
        if kind == ValueKind::List
            && let Some(t) = schema.pointer("/items/type")
            && t != "string"
        {
            return Err(bad(format!(
                "the items of a list are strings; its schema's items have type {t}"
            )));
        }
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| bad(format!("schema is not a valid JSON Schema: {e}")))?;
        Ok(Self {
            schema,
            kind,
            validator: std::sync::Arc::new(validator),
        })
    }

    /// One problem in words a tenant admin can act on: every allowed value
    /// when the value is not one of them (the validator names only two),
    /// and the schema's `description` rather than a regular expression.
    fn explain(&self, e: &jsonschema::ValidationError<'_>) -> String {
        use jsonschema::error::ValidationErrorKind as Kind;
        match e.kind() {
            Kind::Enum { options } => {
                let allowed: Vec<String> = options
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|o| match o.as_str() {
                        Some(s) => s.to_owned(),
                        None => o.to_string(),
                    })
                    .collect();
                format!("`{}` is not one of: {}", quoted(e), allowed.join(", "))
            }
            Kind::Pattern { .. } => match self.schema["description"].as_str() {
                Some(what) => format!("`{}` is not {what}", quoted(e)),
                None => cut(&e.to_string()),
            },
            _ => cut(&e.to_string()),
        }
    }

    /// The schema as the plugin gave it.
    pub fn schema(&self) -> &serde_json::Value {
        &self.schema
    }

    /// Checks a value as the tenant wrote it, without the white space
    /// around it: read as the schema's type
    /// (`"30"` as 30 for an integer, `"a, b"` or `"a; b"` as `["a", "b"]`
    /// for a list, `yes`/`on`/`1` as true for a boolean),
    /// then checked against the schema. The error says what is wrong.
    pub fn check(&self, value: &str) -> Result<(), String> {
        use serde_json::Value;
        let text = value.trim();
        let read = match self.kind {
            ValueKind::String => Value::String(text.to_owned()),
            ValueKind::Integer => text
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("`{value}` is not a whole number"))?,
            ValueKind::Number => text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| format!("`{value}` is not a number"))?,
            // The synonyms the Rust SDK's `Values::flag` reads too.
            ValueKind::Boolean => match text.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Value::Bool(true),
                "false" | "no" | "off" | "0" => Value::Bool(false),
                _ => return Err(format!("`{value}` is not `true` or `false`")),
            },
            ValueKind::List => Value::Array(
                text.split([',', ';'])
                    .map(str::trim)
                    .filter(|i| !i.is_empty())
                    .map(|i| Value::String(i.to_owned()))
                    .collect(),
            ),
        };
        let problems: Vec<String> = self
            .validator
            .iter_errors(&read)
            .take(MAX_VALUE_PROBLEMS)
            .map(|e| self.explain(&e))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// The value a problem is about, as text, cut to a readable length.
fn quoted(e: &jsonschema::ValidationError<'_>) -> String {
    let value = e.instance();
    cut(value.as_str().unwrap_or(&value.to_string()))
}

impl std::fmt::Debug for ValueSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ValueSchema({})", self.schema)
    }
}

impl PartialEq for ValueSchema {
    fn eq(&self, other: &Self) -> bool {
        self.schema == other.schema
    }
}

impl Eq for ValueSchema {}

impl Serialize for ValueSchema {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.schema.serialize(s)
    }
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

/// What the optional `settings-schema` export returned: the schemas of
/// configuration values and of job intervals, by key and job name.
#[derive(Default)]
struct SettingsSchema {
    config: serde_json::Map<String, serde_json::Value>,
    jobs: serde_json::Map<String, serde_json::Value>,
}

impl SettingsSchema {
    fn parse(text: Option<String>) -> Result<Self, String> {
        let Some(text) = text else {
            return Ok(Self::default());
        };
        let top: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
            .map_err(|e| format!("settings-schema() did not return a JSON object: {e}"))?;
        let mut out = Self::default();
        for (section, value) in top {
            let serde_json::Value::Object(map) = value else {
                return Err(format!("settings-schema(): `{section}` must be an object"));
            };
            match section.as_str() {
                "config" => out.config = map,
                "jobs" => out.jobs = map,
                other => {
                    return Err(format!(
                        "settings-schema() has a section `{other}`; it may have `config` and `jobs`"
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Fails when a schema is left for a key or job the manifest lacks.
    fn all_used(&self) -> Result<(), String> {
        for (what, left) in [("config key", &self.config), ("job", &self.jobs)] {
            if let Some(name) = left.keys().next() {
                return Err(format!(
                    "settings-schema() describes the {what} `{name}`, which the manifest does not declare"
                ));
            }
        }
        Ok(())
    }
}

/// The configuration keys with their schemas, each default checked
/// against its key's schema: a plugin whose own default it would refuse
/// does not load.
fn config_specs(
    specs: Vec<types::ConfigSpec>,
    schemas: &mut SettingsSchema,
) -> Result<Vec<ConfigSpec>, String> {
    specs
        .into_iter()
        .map(|c| {
            let schema = schemas
                .config
                .remove(&c.key)
                .map(|s| ValueSchema::compile(&format!("config key `{}`", c.key), s))
                .transpose()?;
            if let (Some(schema), Some(default)) = (&schema, &c.default_value) {
                schema.check(default).map_err(|e| {
                    format!(
                        "config key `{}`: the default `{default}` does not fit its schema: {e}",
                        c.key
                    )
                })?;
            }
            Ok(ConfigSpec {
                key: c.key,
                description: c.description,
                required: c.required,
                default: c.default_value,
                schema,
            })
        })
        .collect()
}

impl Manifest {
    /// Converts and validates what the guest returned: its manifest and,
    /// when it exports one, its settings schema.
    pub(crate) fn from_wit(
        m: types::Manifest,
        settings_schema: Option<String>,
    ) -> Result<Self, String> {
        let mut schemas = SettingsSchema::parse(settings_schema)?;
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
                let interval_schema = match schemas.jobs.remove(&j.name) {
                    None => None,
                    Some(mut schema) => {
                        let what = format!("job `{}` interval", j.name);
                        if let Some(obj) = schema.as_object_mut() {
                            obj.entry("type").or_insert("integer".into());
                        }
                        let schema = ValueSchema::compile(&what, schema)?;
                        if schema.kind != ValueKind::Integer {
                            return Err(format!("{what}: an interval is an integer (seconds)"));
                        }
                        schema
                            .check(&j.default_interval_secs.to_string())
                            .map_err(|e| format!("{what}: the default does not fit: {e}"))?;
                        Some(schema)
                    }
                };
                Ok(JobSpec {
                    name: j.name,
                    description: j.description,
                    min_interval_secs: j.min_interval_secs,
                    max_interval_secs: j.max_interval_secs,
                    default_interval_secs: j.default_interval_secs,
                    exclusive_with_webhook: j.exclusive_with_webhook,
                    interval_schema,
                })
            })
            .collect::<Result<_, String>>()?;
        let config = config_specs(m.config, &mut schemas)?;
        schemas.all_used()?;
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
            config,
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
            config: vec![types::ConfigSpec {
                key: "events".into(),
                description: "d".into(),
                required: false,
                default_value: Some("start,end".into()),
            }],
            credentials: vec![],
            egress: vec![],
        }
    }

    fn with_schema(schema: serde_json::Value) -> Result<Manifest, String> {
        Manifest::from_wit(manifest(None), Some(schema.to_string()))
    }

    #[test]
    fn the_settings_schema_is_compiled_with_the_manifest() {
        let m = with_schema(serde_json::json!({
            "config": {"events": {"type": "array", "items": {"enum": ["start", "end", "chat"]}}},
            "jobs": {"pull": {"multipleOf": 60}},
        }))
        .unwrap();
        let events = m.config[0].schema.as_ref().unwrap();
        assert_eq!(events.check(" chat , start,"), Ok(()));
        let e = events.check("start,stop").unwrap_err();
        assert!(e.contains("`stop` is not one of: start, end, chat"), "{e}");
        let pull = m.jobs[0].interval_schema.as_ref().unwrap();
        assert_eq!(pull.schema()["type"], "integer");
        assert_eq!(pull.check("120"), Ok(()));
        assert!(pull.check("90").is_err());
        // Without the export, nothing is checked.
        let plain = Manifest::from_wit(manifest(None), None).unwrap();
        assert!(plain.config[0].schema.is_none() && plain.jobs[0].interval_schema.is_none());
    }

    #[test]
    fn a_settings_schema_that_cannot_be_right_refuses_the_plugin() {
        for (schema, why) in [
            (
                serde_json::json!({"config": {"events": {"enum": ["start"]}}}),
                "config key `events`: the default `start,end` does not fit its schema",
            ),
            (
                serde_json::json!({"config": {"colour": {}}}),
                "describes the config key `colour`, which the manifest does not declare",
            ),
            (
                serde_json::json!({"jobs": {"push": {}}}),
                "describes the job `push`, which the manifest does not declare",
            ),
            (
                serde_json::json!({"jobs": {"pull": {"multipleOf": 7}}}),
                "job `pull` interval: the default does not fit",
            ),
            (
                serde_json::json!({"jobs": {"pull": {"type": "string"}}}),
                "job `pull` interval: an interval is an integer",
            ),
            (
                serde_json::json!({"config": {"events": {"type": "object"}}}),
                "config key `events`: schema type \"object\" is not one of",
            ),
            (
                serde_json::json!({"config": {"events": {"type": "array", "items": {"type": "integer"}}}}),
                "the items of a list are strings",
            ),
            (
                serde_json::json!({"config": {"events": {"type": "array", "minItems": "two"}}}),
                "config key `events`: schema is not a valid JSON Schema",
            ),
            (
                serde_json::json!({"settings": {}}),
                "settings-schema() has a section `settings`",
            ),
        ] {
            let e = with_schema(schema.clone()).unwrap_err();
            assert!(e.contains(why), "{schema}: {e}");
        }
        let e = Manifest::from_wit(manifest(None), Some("[1]".into())).unwrap_err();
        assert!(e.contains("did not return a JSON object"), "{e}");
    }

    #[test]
    fn a_job_may_be_exclusive_only_with_a_declared_route() {
        let m = Manifest::from_wit(manifest(Some("events")), None).unwrap();
        assert_eq!(m.jobs[0].exclusive_with_webhook.as_deref(), Some("events"));
        assert!(
            Manifest::from_wit(manifest(None), None).unwrap().jobs[0]
                .exclusive_with_webhook
                .is_none()
        );
        let e = Manifest::from_wit(manifest(Some("nope")), None).unwrap_err();
        assert_eq!(
            e,
            "job `pull`: exclusive with webhook route `nope`, which the manifest does not declare"
        );
    }
}
