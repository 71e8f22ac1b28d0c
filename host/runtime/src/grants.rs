//! Declared and granted: a plugin may use a capability only when its
//! manifest declares it *and* the tenant's configuration grants it.
//!
//! One module decides, for `switchyard check` (which reports every problem
//! with its file and line) and for [`crate::Instance::new`] (which refuses
//! an instance that breaks a rule), so the two can never disagree. Each rule
//! has its own unit test below.
//!
//! ```
//! use switchyard_runtime::grants::{self, Grant, Severity};
//! # fn demo(manifest: &switchyard_runtime::Manifest) {
//! let grant = Grant { config: vec![("colour", "blue")], ..Grant::default() };
//! for p in grants::check(manifest, &grant) {
//!     let level = if p.severity == Severity::Error { "error" } else { "warning" };
//!     println!("{level}: {}: {}", p.field, p.message);
//! }
//! # }
//! ```

use std::collections::BTreeMap;

use crate::credentials::CredentialKind;
use crate::egress::{EgressPolicy, EgressRule};
use crate::manifest::Manifest;

/// What a tenant's configuration grants one instance. Fields left empty
/// grant nothing of that kind.
#[derive(Debug, Default)]
pub struct Grant<'a> {
    /// Configuration keys the tenant sets, with their values.
    pub config: Vec<(&'a str, &'a str)>,
    /// Credentials bound: slot name and kind.
    pub credentials: Vec<(&'a str, CredentialKind)>,
    /// Webhook routes exposed.
    pub webhooks: Vec<&'a str>,
    /// Job schedules.
    pub jobs: Vec<JobGrant<'a>>,
    /// The tenant's egress allowlist, when it is being checked.
    pub egress: Option<&'a EgressPolicy>,
}

/// A job schedule a tenant sets up.
#[derive(Debug, Clone, Copy)]
pub struct JobGrant<'a> {
    /// Job name.
    pub name: &'a str,
    /// Whether it runs.
    pub enabled: bool,
    /// Interval in seconds; the plugin's default when None.
    pub interval_secs: Option<u32>,
}

/// How serious a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The instance cannot be built.
    Error,
    /// It can, but probably not as the tenant meant (e.g. egress the plugin
    /// declares is not granted).
    Warning,
}

/// One rule broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantProblem {
    /// Error or warning.
    pub severity: Severity,
    /// Dotted field path within the instance's configuration, e.g.
    /// `config.colour`, `credentials.uem.kind`, `jobs.pull.interval`.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

fn error(field: impl Into<String>, message: impl Into<String>) -> GrantProblem {
    GrantProblem {
        severity: Severity::Error,
        field: field.into(),
        message: message.into(),
    }
}

fn warning(field: impl Into<String>, message: impl Into<String>) -> GrantProblem {
    GrantProblem {
        severity: Severity::Warning,
        field: field.into(),
        message: message.into(),
    }
}

/// Checks `grant` against `manifest`; returns every problem found.
pub fn check(manifest: &Manifest, grant: &Grant<'_>) -> Vec<GrantProblem> {
    let mut out = Vec::new();
    let plugin = &manifest.id;
    for (key, value) in &grant.config {
        match manifest.config.iter().find(|c| c.key == *key) {
            None => out.push(error(
                format!("config.{key}"),
                format!("plugin `{plugin}` has no config key `{key}`"),
            )),
            Some(spec) => {
                if let Some(Err(why)) = spec.schema.as_ref().map(|s| s.check(value)) {
                    out.push(error(format!("config.{key}"), why));
                }
            }
        }
    }
    for c in manifest
        .config
        .iter()
        .filter(|c| c.required && c.default.is_none())
    {
        if !grant.config.iter().any(|(k, _)| *k == c.key) {
            out.push(error(
                "config",
                format!("required key `{}` is missing ({})", c.key, c.description),
            ));
        }
    }
    for (name, kind) in &grant.credentials {
        match manifest.credentials.iter().find(|s| s.name == *name) {
            None => out.push(error(
                format!("credentials.{name}"),
                format!("plugin `{plugin}` has no credential slot `{name}`"),
            )),
            Some(slot) if !kind.satisfies(&slot.kinds) => {
                let accepted: Vec<&str> = slot.kinds.iter().map(|k| k.as_str()).collect();
                out.push(error(
                    format!("credentials.{name}.kind"),
                    format!(
                        "kind {kind} is not accepted; the plugin accepts {}",
                        accepted.join(", ")
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    for slot in manifest.credentials.iter().filter(|s| s.required) {
        if !grant.credentials.iter().any(|(n, _)| *n == slot.name) {
            out.push(error(
                "credentials",
                format!(
                    "required credential `{}` is not bound ({})",
                    slot.name, slot.description
                ),
            ));
        }
    }
    for route in &grant.webhooks {
        if !manifest.webhooks.iter().any(|w| w.route == *route) {
            out.push(error(
                format!("webhooks.{route}"),
                format!("plugin `{plugin}` has no webhook route `{route}`"),
            ));
        }
    }
    for job in &grant.jobs {
        let name = job.name;
        let Some(spec) = manifest.jobs.iter().find(|j| j.name == name) else {
            out.push(error(
                format!("jobs.{name}"),
                format!("plugin `{plugin}` has no job `{name}`"),
            ));
            continue;
        };
        if let Some(route) = &spec.exclusive_with_webhook
            && job.enabled
            && grant.webhooks.contains(&route.as_str())
        {
            out.push(error(
                format!("jobs.{name}"),
                format!(
                    "plugin `{plugin}` does this job's work through webhooks.{route} too: \
                     set up the job or the webhook route, not both \
                     (with the route set up, remove this job)"
                ),
            ));
        }
        if let Some(secs) = job.interval_secs
            && !(spec.min_interval_secs..=spec.max_interval_secs).contains(&secs)
        {
            out.push(error(
                format!("jobs.{name}.interval"),
                format!(
                    "{secs} s is outside the allowed range {}..={} s",
                    spec.min_interval_secs, spec.max_interval_secs
                ),
            ));
        } else if let Some(secs) = job.interval_secs
            && let Some(Err(why)) = spec
                .interval_schema
                .as_ref()
                .map(|s| s.check(&secs.to_string()))
        {
            out.push(error(
                format!("jobs.{name}.interval"),
                format!("{secs} s is not allowed: {why}"),
            ));
        }
    }
    if let Some(policy) = grant.egress {
        out.extend(check_egress(manifest, policy));
    }
    out
}

fn check_egress(manifest: &Manifest, policy: &EgressPolicy) -> Vec<GrantProblem> {
    let mut out = Vec::new();
    if manifest.egress.is_empty() {
        if !policy.rules().is_empty() {
            out.push(warning(
                "egress",
                format!(
                    "plugin `{}` declares no egress, so these entries let it reach nothing",
                    manifest.id
                ),
            ));
        }
        return out;
    }
    for need in &manifest.egress {
        if let Some(rule) = need.rule()
            && !policy.covers(&rule)
        {
            out.push(warning(
                "egress",
                format!(
                    "plugin `{}` needs {rule} ({}), which no entry allows; add it or the \
                     plugin's requests there are refused",
                    manifest.id, need.description
                ),
            ));
        }
    }
    out
}

/// The configuration an instance sees: the tenant's values, and the
/// manifest's defaults for keys the tenant did not set. Keys the manifest
/// does not declare are dropped (and reported by [`check`]).
pub fn effective_config(
    manifest: &Manifest,
    values: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    manifest
        .config
        .iter()
        .filter_map(|c| {
            let v = values.get(&c.key).or(c.default.as_ref())?;
            Some((c.key.clone(), v.clone()))
        })
        .collect()
}

/// The destinations a plugin may reach at most: None when some egress need
/// comes from configuration (the tenant's list decides alone), else the
/// fixed destinations it declares — none at all when it declares no needs.
pub fn declared_destinations(manifest: &Manifest) -> Option<Vec<EgressRule>> {
    if manifest.egress.iter().any(|e| e.destination.is_none()) {
        return None;
    }
    Some(manifest.egress.iter().filter_map(|e| e.rule()).collect())
}

/// How often a granted job runs, in seconds: None when it is disabled or
/// the plugin has no such job.
pub fn job_interval_secs(manifest: &Manifest, job: &JobGrant<'_>) -> Option<u32> {
    let spec = manifest.jobs.iter().find(|j| j.name == job.name)?;
    job.enabled
        .then(|| job.interval_secs.unwrap_or(spec.default_interval_secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{
        ConfigSpec, CredentialSlot, EgressNeed, JobSpec, ValueSchema, WebhookSpec,
    };

    fn manifest() -> Manifest {
        Manifest {
            id: "p".into(),
            version: "1.0.0".into(),
            description: String::new(),
            actions: vec![],
            webhooks: vec![WebhookSpec {
                route: "events".into(),
                description: String::new(),
                mode: "queued",
            }],
            jobs: vec![JobSpec {
                name: "pull".into(),
                description: String::new(),
                min_interval_secs: 60,
                max_interval_secs: 600,
                default_interval_secs: 300,
                exclusive_with_webhook: Some("events".into()),
                interval_schema: Some(
                    ValueSchema::compile(
                        "job `pull` interval",
                        serde_json::json!({"type": "integer", "multipleOf": 60}),
                    )
                    .unwrap(),
                ),
            }],
            config: vec![
                ConfigSpec {
                    key: "url".into(),
                    description: "where".into(),
                    required: true,
                    default: None,
                    schema: None,
                },
                ConfigSpec {
                    key: "colour".into(),
                    description: String::new(),
                    required: true,
                    default: Some("blue".into()),
                    schema: None,
                },
                ConfigSpec {
                    key: "minutes".into(),
                    description: String::new(),
                    required: false,
                    default: Some("30".into()),
                    schema: Some(
                        ValueSchema::compile(
                            "minutes",
                            serde_json::json!({
                                "type": "integer", "minimum": 10, "maximum": 1440, "multipleOf": 10
                            }),
                        )
                        .unwrap(),
                    ),
                },
            ],
            credentials: vec![CredentialSlot {
                name: "api".into(),
                description: "the API".into(),
                kinds: vec![CredentialKind::Basic],
                required: true,
            }],
            egress: vec![EgressNeed {
                destination: Some("https://hooks.slack.com".into()),
                description: "Slack".into(),
            }],
        }
    }

    fn good() -> Grant<'static> {
        Grant {
            config: vec![("url", "https://example.com")],
            credentials: vec![("api", CredentialKind::Basic)],
            ..Grant::default()
        }
    }

    fn fields(g: &Grant<'_>) -> Vec<(Severity, String)> {
        check(&manifest(), g)
            .into_iter()
            .map(|p| (p.severity, p.field))
            .collect()
    }

    #[test]
    fn a_complete_grant_has_no_problems() {
        assert!(check(&manifest(), &good()).is_empty());
    }

    #[test]
    fn undeclared_config_keys_are_errors() {
        let mut g = good();
        g.config.push(("colur", "red"));
        assert_eq!(fields(&g), [(Severity::Error, "config.colur".into())]);
    }

    #[test]
    fn values_the_schema_refuses_are_errors_that_say_why() {
        for (value, why) in [
            ("35", "35 is not a multiple of 10"),
            ("5", "5 is less than the minimum of 10"),
            ("thirty", "`thirty` is not a whole number"),
        ] {
            let mut g = good();
            g.config.push(("minutes", value));
            let p = check(&manifest(), &g);
            assert_eq!(p.len(), 1, "{value}: {p:?}");
            assert_eq!(p[0].field, "config.minutes");
            assert!(p[0].message.contains(why), "{value}: {p:?}");
        }
        let mut g = good();
        g.config.push(("minutes", " 1440 "));
        assert!(check(&manifest(), &g).is_empty());
    }

    #[test]
    fn required_config_without_default_must_be_set() {
        let mut g = good();
        g.config.clear();
        let p = check(&manifest(), &g);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].message.contains("`url`"), "{p:?}");
    }

    #[test]
    fn defaults_fill_what_the_tenant_left_out() {
        let values = [("url".to_owned(), "u".to_owned())].into();
        let eff = effective_config(&manifest(), &values);
        assert_eq!(eff["colour"], "blue");
        assert_eq!(eff["url"], "u");
    }

    #[test]
    fn undeclared_credential_slots_are_errors() {
        let mut g = good();
        g.credentials.push(("other", CredentialKind::Bearer));
        assert_eq!(fields(&g), [(Severity::Error, "credentials.other".into())]);
    }

    #[test]
    fn credential_kind_must_be_accepted() {
        let mut g = good();
        g.credentials = vec![("api", CredentialKind::Bearer)];
        let p = check(&manifest(), &g);
        assert_eq!(p[0].field, "credentials.api.kind");
        assert!(p[0].message.contains("accepts basic"), "{p:?}");
        g.credentials = vec![("api", CredentialKind::SecretUrl)];
        assert_eq!(check(&manifest(), &g)[0].field, "credentials.api.kind");
    }

    #[test]
    fn a_secret_url_fills_a_slot_that_accepts_bearer() {
        use CredentialKind::*;
        assert!(SecretUrl.satisfies(&[Bearer]));
        assert!(SecretUrl.satisfies(&[SecretUrl]));
        assert!(!SecretUrl.satisfies(&[Basic, ApiKey]));
        assert!(!Bearer.satisfies(&[SecretUrl]));
    }

    #[test]
    fn required_credentials_must_be_bound() {
        let mut g = good();
        g.credentials.clear();
        assert_eq!(fields(&g), [(Severity::Error, "credentials".into())]);
    }

    #[test]
    fn undeclared_webhook_routes_are_errors() {
        let mut g = good();
        g.webhooks.push("other");
        assert_eq!(fields(&g), [(Severity::Error, "webhooks.other".into())]);
    }

    #[test]
    fn undeclared_jobs_are_errors() {
        let mut g = good();
        g.jobs.push(JobGrant {
            name: "push",
            enabled: true,
            interval_secs: None,
        });
        assert_eq!(fields(&g), [(Severity::Error, "jobs.push".into())]);
    }

    #[test]
    fn a_job_exclusive_with_a_configured_route_is_an_error() {
        let mut g = good();
        g.webhooks.push("events");
        g.jobs.push(JobGrant {
            name: "pull",
            enabled: true,
            interval_secs: None,
        });
        assert_eq!(fields(&g), [(Severity::Error, "jobs.pull".into())]);
        // Disabled, the job does no work twice.
        g.jobs[0].enabled = false;
        assert!(fields(&g).is_empty());
    }

    #[test]
    fn job_intervals_must_be_in_range() {
        let mut g = good();
        g.jobs.push(JobGrant {
            name: "pull",
            enabled: true,
            interval_secs: Some(30),
        });
        assert_eq!(fields(&g), [(Severity::Error, "jobs.pull.interval".into())]);
        assert_eq!(job_interval_secs(&manifest(), &g.jobs[0]), Some(30));
        g.jobs[0].interval_secs = Some(90);
        let p = check(&manifest(), &g);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].field, "jobs.pull.interval");
        assert!(p[0].message.contains("90 is not a multiple of 60"), "{p:?}");
        g.jobs[0].interval_secs = None;
        assert_eq!(job_interval_secs(&manifest(), &g.jobs[0]), Some(300));
        g.jobs[0].enabled = false;
        assert_eq!(job_interval_secs(&manifest(), &g.jobs[0]), None);
    }

    #[test]
    fn declared_egress_not_granted_is_a_warning() {
        let tenant = EgressPolicy::parse(&["https://api.example.com"]).unwrap();
        let mut g = good();
        g.egress = Some(&tenant);
        assert_eq!(fields(&g), [(Severity::Warning, "egress".into())]);
        let tenant = EgressPolicy::parse(&["https://*.slack.com"]).unwrap();
        g.egress = Some(&tenant);
        assert!(fields(&g).is_empty());
    }

    #[test]
    fn egress_for_a_plugin_that_declares_none_is_a_warning() {
        let mut m = manifest();
        m.egress.clear();
        let tenant = EgressPolicy::parse(&["https://api.example.com"]).unwrap();
        let mut g = good();
        g.egress = Some(&tenant);
        let p = check(&m, &g);
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("declares no egress"), "{p:?}");
        assert_eq!(declared_destinations(&m), Some(vec![]));
    }

    #[test]
    fn configured_destinations_leave_the_tenant_list_alone() {
        let mut m = manifest();
        assert_eq!(declared_destinations(&m).unwrap().len(), 1);
        m.egress.push(EgressNeed {
            destination: None,
            description: "config `url`".into(),
        });
        assert_eq!(declared_destinations(&m), None);
    }
}
