//! Checks of tenant files: each file on its own ([`check_tenant`], run by
//! [`Config::parse`]) and each instance against its plugin's manifest
//! ([`check_against`]), where the rules of "declared and granted" come from
//! [`switchyard_runtime::grants`] and are only given a file and line here.

use std::collections::BTreeMap;
use std::path::Path;

use switchyard_runtime::Limits;
use switchyard_runtime::credentials::CredentialKind;
use switchyard_runtime::egress::{EgressPolicy, EgressRule};
use switchyard_runtime::grants::{self, Grant, JobGrant};

use switchyard_store::SecretStore;

use super::schema::{
    Config, InstanceConfig, Mode, Report, SignatureScheme, TenantConfig, TenantFile, is_id,
    merge_limits, parse_net,
};
use super::secrets::{Allowed, Resolver, SecretSource};
use crate::plugins::Catalog;
use crate::problem::{Problem, Severity};

/// Which secret references a tenant file may use in `mode`.
pub fn secret_rules(mode: Mode) -> Allowed {
    Allowed {
        store: true,
        literals: mode == Mode::Development,
        literal_message: "literal secrets are not allowed in production mode; use `secret:NAME` \
                          (switchyard secret set), `env:VAR` or `file:PATH`",
    }
}

pub(super) fn check_tenant(
    t: &TenantFile,
    mode: Mode,
    default_limits: Option<&Limits>,
    dir: &Path,
    report: &mut Report<'_>,
) {
    for (field, value) in [
        ("max_concurrent_jobs", &t.max_concurrent_jobs),
        ("max_concurrent_invocations", &t.max_concurrent_invocations),
    ] {
        if let Some(n) = value
            && *n.get_ref() == 0
        {
            report.at(&n.span(), field, "must be at least 1");
        }
    }
    for (j, e) in t.private_egress.iter().enumerate() {
        let field = format!("private_egress[{j}]");
        match EgressPolicy::parse(&[e.get_ref().trim()]) {
            Err(err) => report.at(&e.span(), field, err.to_string()),
            Ok(p) if !p.has_ip_rules() => report.at(
                &e.span(),
                field,
                "holds IP addresses and ranges only (an instance may name any public host \
                 without a grant)",
            ),
            Ok(_) => {}
        }
    }
    let allowed = secret_rules(mode);
    let mut seen = BTreeMap::new();
    for (i, inst) in t.instances.iter().enumerate() {
        let inst_span = inst.span();
        let inst = inst.get_ref();
        let f = |field: &str| format!("instance[{i}].{field}");
        let id = inst.id.get_ref();
        if let Err(e) = inst.plugin_ref() {
            report.at(&inst.plugin.span(), f("plugin"), e);
        }
        if !is_id(id) {
            report.at(
                &inst.id.span(),
                f("id"),
                format!("`{id}` must be 1-64 characters of a-z, 0-9, - and _"),
            );
        } else if let Some(prev) = seen.insert(id.clone(), i) {
            report.at(
                &inst.id.span(),
                f("id"),
                format!("`{id}` is already used by instance[{prev}]"),
            );
        }
        for (j, e) in inst.egress.iter().enumerate() {
            if let Err(err) = e.get_ref().trim().parse::<EgressRule>() {
                report.at(&e.span(), f(&format!("egress[{j}]")), err.to_string());
            }
        }
        for (j, ca) in inst.ca_certs.iter().enumerate() {
            if !dir.join(ca.get_ref()).is_file() {
                report.at(
                    &ca.span(),
                    f(&format!("ca_certs[{j}]")),
                    format!("no such file {}", ca.get_ref().display()),
                );
            }
        }
        for (name, cred) in &inst.credentials {
            let c = cred.get_ref();
            let field = |x: &str| f(&format!("credentials.{name}.{x}"));
            if c.hosts.is_empty() {
                report.at(
                    &cred.span(),
                    field("hosts"),
                    "bind the credential to at least one host",
                );
            }
            for (j, h) in c.hosts.iter().enumerate() {
                if let Err(err) = h.parse::<EgressRule>() {
                    report.at(&cred.span(), field(&format!("hosts[{j}]")), err.to_string());
                }
            }
            if c.auth.kind() == CredentialKind::SecretUrl
                && (c.hosts.len() != 1
                    || c.hosts
                        .iter()
                        .any(|h| h.contains('*') || h.matches('/').count() > 2))
            {
                report.at(
                    &cred.span(),
                    field("hosts"),
                    "a secret-url credential takes exactly one host, without wildcards or \
                     address ranges: the origin of its URL (e.g. https://hooks.slack.com)",
                );
            }
            for (x, problem) in c.auth.problems() {
                report.at(&cred.span(), field(x), problem);
            }
            for (x, value) in c.auth.secret_fields() {
                if let Some(problem) = value.problem(&allowed) {
                    report.at(&cred.span(), field(x), problem);
                }
            }
        }
        for (route, hook) in &inst.webhooks {
            let h = hook.get_ref();
            let field = |x: &str| f(&format!("webhooks.{route}.{x}"));
            if h.token.is_none() && h.hmac_secret.is_none() && h.allowed_ips.is_empty() {
                report.at(
                    &hook.span(),
                    f(&format!("webhooks.{route}")),
                    "set at least one of token, hmac_secret and allowed_ips: an unverified webhook is refused",
                );
            }
            if h.signature == SignatureScheme::StandardWebhooks && h.hmac_secret.is_none() {
                report.at(
                    &hook.span(),
                    field("hmac_secret"),
                    "signature = \"standard-webhooks\" needs hmac_secret (the sender's whsec_ secret)",
                );
            }
            if h.token.is_some() && h.token_header.is_some() && h.token_param.is_some() {
                report.at(
                    &hook.span(),
                    field("token_param"),
                    "set token_header or token_param, not both",
                );
            }
            for (name, value) in [("token", &h.token), ("hmac_secret", &h.hmac_secret)] {
                if let Some(problem) = value.as_ref().and_then(|v| v.problem(&allowed)) {
                    report.at(&hook.span(), field(name), problem);
                }
            }
            for (list, entries) in [
                ("allowed_ips", &h.allowed_ips),
                ("trusted_proxies", &h.trusted_proxies),
            ] {
                for (j, e) in entries.iter().enumerate() {
                    if parse_net(e).is_none() {
                        report.at(
                            &hook.span(),
                            field(&format!("{list}[{j}]")),
                            format!("`{e}` is not an IP address or CIDR block"),
                        );
                    }
                }
            }
        }
        if let (Some(over), Some(base)) = (&inst.limits, default_limits)
            && let Err(e) = merge_limits(base, over)
        {
            report.at(&inst_span, f("limits"), e);
        }
    }
}

impl Config {
    /// Checks every instance against the manifest of the plugin version it
    /// would run. Errors and warnings both come back; only errors stop an
    /// instance.
    pub fn check_against(&self, catalog: &Catalog) -> Vec<Problem> {
        self.tenants
            .values()
            .flat_map(|t| t.check_against(catalog))
            .collect()
    }
}

impl TenantConfig {
    /// [`Config::check_against`] for this tenant alone.
    pub fn check_against(&self, catalog: &Catalog) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut report = Report {
            file: &self.file,
            text: &self.text,
            problems: &mut problems,
        };
        let policy = self.policy(catalog);
        for name in self.trusted_publishers.iter().flatten() {
            if !catalog.publishers().iter().any(|p| p == name) {
                let line = self
                    .text
                    .lines()
                    .position(|l| l.trim_start().starts_with("trusted_publishers"))
                    .map_or(0, |n| n + 1);
                let known: Vec<&str> = catalog.publishers().iter().map(String::as_str).collect();
                report.problems.push(Problem {
                    line,
                    ..Problem::file(
                        self.file.clone(),
                        "trusted_publishers",
                        format!(
                            "`{name}` is not a publisher in switchyard.toml's [trust.publishers] \
                             (there: {})",
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                    )
                });
            }
        }
        for (i, inst) in self.instances.iter().enumerate() {
            check_instance(i, inst.get_ref(), catalog, &policy, &mut report);
        }
        problems
    }
}

/// What an instance's configuration grants, for [`grants::check`].
pub fn grant_of<'a>(inst: &'a InstanceConfig, egress: Option<&'a EgressPolicy>) -> Grant<'a> {
    Grant {
        config: inst
            .config
            .iter()
            .map(|(k, v)| (k.as_str(), v.get_ref().as_str()))
            .collect(),
        credentials: inst
            .credentials
            .iter()
            .map(|(n, c)| (n.as_str(), c.get_ref().auth.kind()))
            .collect(),
        webhooks: inst.webhooks.keys().map(String::as_str).collect(),
        jobs: inst
            .jobs
            .iter()
            .map(|(n, j)| JobGrant {
                name: n,
                enabled: j.get_ref().enabled,
                interval_secs: j.get_ref().interval.as_ref().map(|i| *i.get_ref()),
            })
            .collect(),
        egress,
    }
}

fn check_instance(
    i: usize,
    inst: &InstanceConfig,
    catalog: &Catalog,
    policy: &crate::plugins::Policy,
    report: &mut Report<'_>,
) {
    let f = |field: &str| format!("instance[{i}].{field}");
    let Ok((id, pin)) = inst.plugin_ref() else {
        return; // reported by check_tenant
    };
    let entry = match catalog.resolve_for(&id, pin.as_ref(), policy) {
        Ok(e) => e,
        Err(e) => {
            let (span, field) = match &inst.version {
                Some(v) if !catalog.versions(&id).is_empty() => (v.span(), f("version")),
                _ => (inst.plugin.span(), f("plugin")),
            };
            report.at(&span, field, e);
            return;
        }
    };
    check_grants(i, inst, entry.plugin.manifest(), report);
}

/// Reports what `inst` grants against `manifest`.
fn check_grants(
    i: usize,
    inst: &InstanceConfig,
    manifest: &switchyard_runtime::Manifest,
    report: &mut Report<'_>,
) {
    let f = |field: &str| format!("instance[{i}].{field}");
    let egress = EgressPolicy::parse(
        &inst
            .egress
            .iter()
            .map(|e| e.get_ref().as_str())
            .collect::<Vec<_>>(),
    )
    .ok();
    let grant = grant_of(inst, egress.as_ref());
    for p in grants::check(manifest, &grant) {
        let severity = match p.severity {
            grants::Severity::Error => Severity::Error,
            grants::Severity::Warning => Severity::Warning,
        };
        report.push(&span_of(inst, &p.field), severity, f(&p.field), p.message);
    }
}

impl Config {
    /// Resolves every secret reference of every tenant, dropping the values
    /// at once, so that what `check` accepts `serve` can start. `store` is
    /// the secret store, or why there is none to read (then every
    /// `secret:` reference is a problem).
    pub async fn check_references(&self, store: Result<&SecretStore, &str>) -> Vec<Problem> {
        let mut problems = Vec::new();
        for t in self.tenants.values() {
            problems.extend(self.check_tenant_references(t, store).await);
        }
        problems
    }

    /// [`Config::check_references`] for tenant `t` alone.
    pub async fn check_tenant_references(
        &self,
        t: &TenantConfig,
        store: Result<&SecretStore, &str>,
    ) -> Vec<Problem> {
        let allowed = secret_rules(self.mode);
        let mut problems = Vec::new();
        let mut report = Report {
            file: &t.file,
            text: &t.text,
            problems: &mut problems,
        };
        let resolver = Resolver {
            base: self.dir.clone(),
            store: store.ok().map(|s| (s, t.id.as_str())),
            allowed,
        };
        for (i, inst) in t.instances.iter().enumerate() {
            for (field, span, r) in inst.get_ref().secret_refs() {
                // A reference of a kind not allowed here is reported by
                // the file's own checks.
                if r.problem(&allowed).is_some() {
                    continue;
                }
                let field = format!("instance[{i}].{field}");
                let failed = match (r.source(), store) {
                    (SecretSource::Store(name), Err(why)) => {
                        Some(format!("secret `{name}` cannot be read: {why}"))
                    }
                    _ => resolver.resolve(r, &field).await.err().map(|e| {
                        let m = format!("{e:#}");
                        m.strip_prefix(&format!("{field}: "))
                            .map(str::to_owned)
                            .unwrap_or(m)
                    }),
                };
                if let Some(message) = failed {
                    report.at(&span, field, message);
                }
            }
        }
        problems
    }

    /// Instance `index` of `tenant` checked against the manifest of the
    /// build it will run.
    pub fn check_instance_against(
        &self,
        tenant: &TenantConfig,
        index: usize,
        manifest: &switchyard_runtime::Manifest,
    ) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut report = Report {
            file: &tenant.file,
            text: &tenant.text,
            problems: &mut problems,
        };
        check_grants(
            index,
            tenant.instances[index].get_ref(),
            manifest,
            &mut report,
        );
        problems
    }
}

/// Where in the file a grant problem's field is: the field's own span when
/// it has one, else the instance's `plugin` line.
fn span_of(inst: &InstanceConfig, field: &str) -> std::ops::Range<usize> {
    let mut parts = field.splitn(3, '.');
    let (section, name, leaf) = (parts.next(), parts.next(), parts.next());
    let found = match (section, name) {
        (Some("config"), Some(k)) => inst.config.get(k).map(|v| v.span()),
        (Some("credentials"), Some(n)) => inst.credentials.get(n).map(|v| v.span()),
        (Some("webhooks"), Some(r)) => inst.webhooks.get(r).map(|v| v.span()),
        (Some("jobs"), Some(j)) => inst
            .jobs
            .get(j)
            .map(|v| match (leaf, &v.get_ref().interval) {
                (Some("interval"), Some(iv)) => iv.span(),
                _ => v.span(),
            }),
        (Some("egress"), _) => inst.egress.first().map(|e| e.span()),
        _ => None,
    };
    found.unwrap_or_else(|| inst.plugin.span())
}
