//! Builders that make a manifest read like the plugin's feature list.

use serde_json::{Value, json};

use crate::bindings::switchyard::plugin::types as wit;
use crate::{ActionSpec, CredentialKind, CredentialSlot, EgressNeed, WebhookMode, WebhookSpec};

/// What a plugin is and what it needs: the WIT `manifest` record, plus the
/// values each configuration key and job interval accepts (the
/// `settings-schema` export).
#[derive(Debug, Clone)]
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

/// A configuration key the plugin reads, and the values it accepts.
///
/// The host checks every instance's value (and the default) against the
/// schema before the plugin runs, and `switchyard check` reports a value
/// it refuses with its file and line:
///
/// ```
/// use switchyard_sdk::ConfigSpec;
///
/// let every = ConfigSpec::optional("sync_minutes", "Minutes between syncs", "60")
///     .integer(10, 1440)
///     .multiple_of(10);
/// assert_eq!(
///     every.schema,
///     Some(serde_json::json!({"type": "integer", "minimum": 10, "maximum": 1440, "multipleOf": 10}))
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigSpec {
    /// Key.
    pub key: String,
    /// Meaning.
    pub description: String,
    /// Whether the tenant must set it (when there is no default).
    pub required: bool,
    /// Default value.
    pub default_value: Option<String>,
    /// JSON Schema of the value; its `type` says how the host reads the
    /// text: `string` (the default), `integer`, `number`, `boolean`, or
    /// `array` for strings separated by `,` or `;`.
    pub schema: Option<Value>,
}

impl Manifest {
    /// The WIT record the `manifest` export returns.
    #[doc(hidden)]
    pub fn into_wit(self) -> wit::Manifest {
        wit::Manifest {
            id: self.id,
            version: self.version,
            description: self.description,
            actions: self.actions,
            webhooks: self.webhooks,
            jobs: self
                .jobs
                .into_iter()
                .map(|j| wit::JobSpec {
                    name: j.name,
                    description: j.description,
                    min_interval_secs: j.min_interval_secs,
                    max_interval_secs: j.max_interval_secs,
                    default_interval_secs: j.default_interval_secs,
                    exclusive_with_webhook: j.exclusive_with_webhook,
                })
                .collect(),
            config: self
                .config
                .into_iter()
                .map(|c| wit::ConfigSpec {
                    key: c.key,
                    description: c.description,
                    required: c.required,
                    default_value: c.default_value,
                })
                .collect(),
            credentials: self.credentials,
            egress: self.egress,
        }
    }

    /// What the `settings-schema` export returns: the schemas of the
    /// config keys and job intervals that have one.
    #[doc(hidden)]
    pub fn settings_schema(&self) -> String {
        let config: serde_json::Map<String, Value> = self
            .config
            .iter()
            .filter_map(|c| Some((c.key.clone(), c.schema.clone()?)))
            .collect();
        let jobs: serde_json::Map<String, Value> = self
            .jobs
            .iter()
            .filter_map(|j| {
                let step = j.interval_multiple_of?;
                Some((j.name.clone(), json!({ "multipleOf": step })))
            })
            .collect();
        json!({ "config": config, "jobs": jobs }).to_string()
    }

    /// A manifest with no actions, routes, jobs, config or credentials.
    pub fn new(id: &str, version: &str, description: &str) -> Self {
        Self {
            id: id.into(),
            version: version.into(),
            description: description.into(),
            actions: Vec::new(),
            webhooks: Vec::new(),
            jobs: Vec::new(),
            config: Vec::new(),
            credentials: Vec::new(),
            egress: Vec::new(),
        }
    }
    /// Adds an action.
    pub fn action(mut self, a: ActionSpec) -> Self {
        self.actions.push(a);
        self
    }
    /// Adds the typed action `A`, with its generated input schema.
    pub fn typed_action<A: crate::Action>(self) -> Self {
        self.action(crate::typed::spec::<A>())
    }
    /// Adds a webhook route.
    pub fn webhook(mut self, w: WebhookSpec) -> Self {
        self.webhooks.push(w);
        self
    }
    /// Adds a job.
    pub fn job(mut self, j: JobSpec) -> Self {
        self.jobs.push(j);
        self
    }
    /// Adds a configuration key.
    pub fn config(mut self, c: ConfigSpec) -> Self {
        self.config.push(c);
        self
    }
    /// Adds a credential slot.
    pub fn credential(mut self, c: CredentialSlot) -> Self {
        self.credentials.push(c);
        self
    }
    /// Declares a destination the plugin needs.
    pub fn egress(mut self, destination: Option<&str>, description: &str) -> Self {
        self.egress.push(EgressNeed {
            destination: destination.map(Into::into),
            description: description.into(),
        });
        self
    }
}

impl ActionSpec {
    /// An action anyone authenticated may call, accepting any JSON.
    pub fn new(name: &str, description: &str) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            input_schema: "{}".into(),
            required_role: None,
        }
    }
    /// Requires `role` of the actor.
    pub fn role(mut self, role: &str) -> Self {
        self.required_role = Some(role.into());
        self
    }
    /// Documents the input as a JSON Schema.
    pub fn input_schema(mut self, schema: serde_json::Value) -> Self {
        self.input_schema = schema.to_string();
        self
    }
}

impl WebhookSpec {
    /// A route handled while the sender waits.
    pub fn synchronous(route: &str, description: &str) -> Self {
        Self {
            route: route.into(),
            description: description.into(),
            mode: WebhookMode::Synchronous,
        }
    }
    /// A route the host acknowledges at once and delivers from its queue.
    pub fn queued(route: &str, description: &str) -> Self {
        Self {
            route: route.into(),
            description: description.into(),
            mode: WebhookMode::Queued,
        }
    }
}

/// A job the host runs on a schedule the tenant picks within these bounds.
#[derive(Debug, Clone, PartialEq)]
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
    pub exclusive_with_webhook: Option<String>,
    /// Intervals must be a multiple of this many seconds.
    pub interval_multiple_of: Option<u32>,
}

impl JobSpec {
    /// A job the tenant schedules every `min..=max` seconds.
    pub fn new(name: &str, description: &str, min: u32, default: u32, max: u32) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            min_interval_secs: min,
            max_interval_secs: max,
            default_interval_secs: default,
            exclusive_with_webhook: None,
            interval_multiple_of: None,
        }
    }

    /// Allows only intervals that are a multiple of `secs` (e.g. 600 for
    /// steps of ten minutes); `switchyard check` refuses the others.
    pub fn interval_multiple_of(mut self, secs: u32) -> Self {
        self.interval_multiple_of = Some(secs);
        self
    }

    /// Declares that `route` does this job's work pushed instead of
    /// pulled: a tenant may schedule the job or set up the route, not both.
    pub fn exclusive_with_webhook(mut self, route: &str) -> Self {
        self.exclusive_with_webhook = Some(route.into());
        self
    }
}

impl ConfigSpec {
    /// A key the tenant must set.
    pub fn required(key: &str, description: &str) -> Self {
        Self {
            key: key.into(),
            description: description.into(),
            required: true,
            default_value: None,
            schema: None,
        }
    }
    /// A key with a default.
    pub fn optional(key: &str, description: &str, default: &str) -> Self {
        Self {
            key: key.into(),
            description: description.into(),
            required: false,
            default_value: Some(default.into()),
            schema: None,
        }
    }
    /// Accepts the values `schema` (a JSON Schema) allows, replacing what
    /// the other methods set.
    pub fn schema(mut self, schema: Value) -> Self {
        self.schema = Some(schema);
        self
    }
    /// Accepts one of `values`.
    pub fn one_of(self, values: &[&str]) -> Self {
        self.schema(json!({ "type": "string", "enum": values }))
    }
    /// Accepts a list (separated by `,` or `;`) of distinct items, each one of
    /// `values` (an empty value is an empty list).
    pub fn list_of(self, values: &[&str]) -> Self {
        self.schema(json!({
            "type": "array",
            "items": { "enum": values },
            "uniqueItems": true,
        }))
    }
    /// Accepts a whole number from `min` to `max`.
    pub fn integer(self, min: i64, max: i64) -> Self {
        self.schema(json!({ "type": "integer", "minimum": min, "maximum": max }))
    }
    /// Accepts only multiples of `step` (after [`ConfigSpec::integer`]).
    pub fn multiple_of(mut self, step: i64) -> Self {
        let mut schema = self
            .schema
            .take()
            .unwrap_or_else(|| json!({ "type": "integer" }));
        schema["multipleOf"] = json!(step);
        self.schema(schema)
    }
    /// Accepts `true` or `false` (also `yes`/`no`, `on`/`off`, `1`/`0`, as
    /// [`crate::config::Values::flag`] reads them).
    pub fn boolean(self) -> Self {
        self.schema(json!({ "type": "boolean" }))
    }
    /// Accepts an `http://` or `https://` URL with a host (what
    /// [`crate::config::Values::url`] reads), or nothing when the default is
    /// empty.
    pub fn url(self) -> Self {
        let url = r"\s*https?://[^/?#\s]+([/?#]\S*)?\s*";
        let pattern = if self.default_value.as_deref() == Some("") {
            format!("^({url})?$")
        } else {
            format!("^{url}$")
        };
        self.pattern(&pattern)
            .described("an http(s) URL such as https://host.example.com")
    }
    /// Names what the values are, for the message that refuses one (e.g.
    /// "a UEM group id" rather than the regular expression).
    pub fn described(mut self, what: &str) -> Self {
        let mut schema = self.schema.take().unwrap_or_else(|| json!({}));
        schema["description"] = json!(what);
        self.schema(schema)
    }
    /// Accepts text that matches the regular expression `pattern`.
    pub fn pattern(self, pattern: &str) -> Self {
        self.schema(json!({ "type": "string", "pattern": pattern }))
    }
}

impl CredentialSlot {
    /// A required credential of one of `kinds`.
    pub fn new(name: &str, description: &str, kinds: &[CredentialKind]) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            kinds: kinds.to_vec(),
            required: true,
        }
    }
    /// Makes the slot optional.
    pub fn optional(mut self) -> Self {
        self.required = false;
        self
    }
}
