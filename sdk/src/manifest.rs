//! Builders that make a manifest read like the plugin's feature list.

use crate::{
    ActionSpec, ConfigSpec, CredentialKind, CredentialSlot, EgressNeed, JobSpec, Manifest,
    WebhookMode, WebhookSpec,
};

impl Manifest {
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
        }
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
        }
    }
    /// A key with a default.
    pub fn optional(key: &str, description: &str, default: &str) -> Self {
        Self {
            key: key.into(),
            description: description.into(),
            required: false,
            default_value: Some(default.into()),
        }
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
