//! Operator configuration: `<dir>/switchyard.toml` and one file per tenant
//! under `<dir>/tenants/`.
//!
//! ```toml
//! # switchyard.toml
//! listen = "127.0.0.1:8080"
//! data_dir = "data"           # relative to the config directory
//! plugin_dir = "plugins"      # extra .wasm plugins; bundled ones are always there
//! mode = "production"         # or "development": allows literal secrets
//! [storage]
//! backend = "sqlite"          # the embedded default, or "postgres" (docs/configuration.md)
//! path = "switchyard.db"      # relative to data_dir
//! drain_timeout_secs = 30     # on SIGTERM, then exit; unfinished jobs stay queued
//! [jobs]
//! workers = 16                # jobs running at once in this daemon
//! per_tenant = 4              # jobs one tenant may run at once (fairness)
//! max_retry_after_secs = 600  # an upstream's Retry-After is cut to this
//! lease_secs = 30            # a dead daemon's running jobs are taken over after this
//! [invocations]              # synchronous calls (actions, synchronous webhooks)
//! max_concurrent = 64         # in the daemon
//! per_tenant = 8              # a tenant over its share gets 429
//! per_instance = 4
//! [retention]
//! done_jobs_days = 7          # and their idempotency keys
//! seen_events_days = 7        # event ids of synchronous webhooks
//! audit_days = 90
//! [limits]                    # defaults for every instance
//! deadline = 30000
//! [trust]                     # signed plugin releases (docs/plugin-releases.md)
//! require_signed = false      # true: every tenant runs only signed or bundled plugins
//! [trust.publishers]
//! acme = "ed25519:…"          # from `switchyard plugin keygen`
//! ```
//!
//! ```toml
//! # tenants/acme.toml — the tenant id is the file name
//! max_concurrent_jobs = 8     # optional: overrides [jobs] per_tenant
//! max_concurrent_invocations = 16  # optional: overrides [invocations] per_tenant
//! require_signed = true       # optional: only signed (or bundled) plugins
//! trusted_publishers = ["acme"]  # optional: only these publishers' (or bundled) plugins
//! [roles]                     # tenant role → plugin roles
//! "ITIL Agent" = ["operator"]
//!
//! [[instance]]
//! id = "echo-1"
//! plugin = "echo"             # or "echo@0.1" / version = "0.1.2" to pin
//! egress = ["https://api.example.com"]
//! [instance.config]
//! greeting = "hej"
//! [instance.credentials.upstream]
//! kind = "bearer"              # the schema of `switchyard_runtime::credentials::Auth`
//! hosts = ["https://api.example.com"]
//! token = "secret:echo-token"  # or env:VAR, file:PATH; literals only in development mode
//! [instance.jobs.tick]
//! interval = 600               # seconds, within the plugin's allowed range
//! ```
//!
//! Loading collects every problem it finds, each with file, line and field,
//! instead of stopping at the first: [`Config::parse`] checks the files on
//! their own, [`check`] checks instances against the plugins' manifests,
//! [`spec`] turns an instance into what the runtime needs.

pub mod check;
pub mod managed;
mod schema;
pub mod secrets;
pub mod spec;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use toml::Spanned;

pub(crate) use self::schema::Report;
pub use self::schema::{
    Config, CredentialConfig, InstanceConfig, InvocationsConfig, JobConfig, JobsConfig, Mode,
    RetentionConfig, SignatureScheme, StorageConfig, TenantConfig, WebhookConfig, is_id,
    merge_limits, parse_net, pg_tls, storage_password_rules,
};
use self::schema::{MANIFEST_SLOTS, ServerFile, TenantFile};
pub use self::secrets::SecretRef;
use crate::problem::Problem;

impl Config {
    /// Loads and checks `dir`, failing with every problem found. Manifest
    /// checks need the plugins and are done by [`Config::check_against`].
    pub fn load(dir: &Path) -> Result<Self, Vec<Problem>> {
        let (config, problems) = Self::parse(dir)?;
        if !problems.iter().any(Problem::is_error) {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// Parses `dir` as far as it can: the configuration of every file that
    /// parsed, and the problems found in all of them. Fails only when
    /// `switchyard.toml` itself is unusable.
    pub fn parse(dir: &Path) -> Result<(Self, Vec<Problem>), Vec<Problem>> {
        let mut problems = Vec::new();
        let server_path = dir.join("switchyard.toml");
        let rel = PathBuf::from("switchyard.toml");
        let server_text = match std::fs::read_to_string(&server_path) {
            Ok(t) => t,
            Err(e) => {
                return Err(vec![Problem::file(
                    rel,
                    "(file)",
                    format!("cannot read {}: {e}", server_path.display()),
                )]);
            }
        };
        let mut report = Report {
            file: &rel,
            text: &server_text,
            problems: &mut problems,
        };
        let server: Option<ServerFile> = match toml::from_str(&server_text) {
            Ok(s) => Some(s),
            Err(e) => {
                report.parse_error(&e);
                None
            }
        };
        let mut listen = SocketAddr::from(([127, 0, 0, 1], 8080));
        if let Some(s) = &server {
            match s.listen.get_ref().parse() {
                Ok(a) => listen = a,
                Err(_) => report.at(
                    &s.listen.span(),
                    "listen",
                    format!(
                        "`{}` is not an address like 127.0.0.1:8080",
                        s.listen.get_ref()
                    ),
                ),
            }
        }
        let mode = server.as_ref().map(|s| s.mode).unwrap_or_default();
        if let Some(jobs) = server.as_ref().and_then(|s| s.jobs.as_ref()) {
            for (field, value) in [
                ("jobs.workers", jobs.get_ref().workers),
                ("jobs.per_tenant", jobs.get_ref().per_tenant),
            ] {
                if value == 0 {
                    report.at(&jobs.span(), field, "must be at least 1");
                }
            }
            if jobs.get_ref().lease_secs < 3 {
                report.at(
                    &jobs.span(),
                    "jobs.lease_secs",
                    "must be at least 3: a running job renews its lease every third of it",
                );
            }
        }
        if let Some(st) = server.as_ref().and_then(|s| s.storage.as_ref()) {
            for (field, why) in st.get_ref().problems(mode) {
                report.at(&st.span(), field, why);
            }
        }
        if let Some(inv) = server.as_ref().and_then(|s| s.invocations.as_ref()) {
            let v = inv.get_ref();
            for (field, n) in [
                ("invocations.max_concurrent", v.max_concurrent),
                ("invocations.per_tenant", v.per_tenant),
                ("invocations.per_instance", v.per_instance),
            ] {
                if n == 0 {
                    report.at(&inv.span(), field, "must be at least 1");
                }
            }
            if v.per_tenant > v.max_concurrent {
                report.at(
                    &inv.span(),
                    "invocations.per_tenant",
                    "is more than max_concurrent: one tenant could take every slot",
                );
            }
        }
        if let Some(r) = server.as_ref().and_then(|s| s.retention.as_ref()) {
            let v = r.get_ref();
            for (field, days) in [
                ("retention.done_jobs_days", v.done_jobs_days),
                ("retention.seen_events_days", v.seen_events_days),
                ("retention.audit_days", v.audit_days),
            ] {
                if days == 0 {
                    report.at(&r.span(), field, "must be at least 1 day");
                }
            }
        }
        let mut trust = crate::release::Trust::default();
        if let Some(t) = server.as_ref().and_then(|s| s.trust.as_ref()) {
            trust.require_signed = t.get_ref().require_signed;
            for (name, key) in &t.get_ref().publishers {
                let field = format!("trust.publishers.{name}");
                if !is_id(name) {
                    report.at(
                        &key.span(),
                        &field,
                        "a publisher name is lowercase letters, digits, `-` and `_`",
                    );
                    continue;
                }
                match crate::release::PublicKey::parse(key.get_ref()) {
                    Ok(k) => {
                        if let Some((other, _)) = trust.publishers.iter().find(|(_, o)| **o == k) {
                            report.at(
                                &key.span(),
                                &field,
                                format!("the same key as publisher `{other}`"),
                            );
                        }
                        trust.publishers.insert(name.clone(), k);
                    }
                    Err(e) => report.at(&key.span(), &field, e),
                }
            }
        }

        let mut tenants = BTreeMap::new();
        let tenants_dir = dir.join("tenants");
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&tenants_dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        let limits = server.as_ref().map(|s| &s.limits);
        for path in files {
            let rel = PathBuf::from("tenants").join(path.file_name().unwrap());
            let id = path.file_stem().unwrap().to_string_lossy().into_owned();
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(Problem::file(rel, "(file)", format!("cannot read: {e}")));
                    continue;
                }
            };
            let source = TenantSource {
                mode,
                limits,
                dir,
                managed: None,
            };
            if let Some(t) = source.parse(id, rel, text, &mut problems) {
                tenants.insert(t.id.clone(), t);
            }
        }
        let Some(server) = server else {
            return Err(problems);
        };
        let config = Self {
            dir: dir.to_path_buf(),
            listen,
            data_dir: dir.join(server.data_dir),
            plugin_dir: dir.join(server.plugin_dir),
            mode,
            storage: server.storage.map(Spanned::into_inner).unwrap_or_default(),
            jobs: server.jobs.map(Spanned::into_inner).unwrap_or_default(),
            invocations: server
                .invocations
                .map(Spanned::into_inner)
                .unwrap_or_default(),
            retention: server
                .retention
                .map(Spanned::into_inner)
                .unwrap_or_default(),
            drain_timeout: std::time::Duration::from_secs(server.drain_timeout_secs.into()),
            limits: server.limits,
            trust,
            tenants,
            server_digest: Sha256::digest(server_text.as_bytes()).into(),
        };
        Ok((config, problems))
    }

    /// Adds the tenants configured through the admin API (the newest
    /// version of each), checked like files. A tenant that also has a file
    /// is refused: one tenant has one home.
    pub fn add_managed(
        &mut self,
        versions: &[switchyard_store::ConfigVersion],
        problems: &mut Vec<Problem>,
    ) {
        for v in versions {
            let rel = managed::path_of(&v.tenant);
            if let Some(file) = self.tenants.get(&v.tenant) {
                problems.push(Problem::file(
                    rel,
                    "(tenant)",
                    format!(
                        "tenant `{}` has a file ({}) and is also managed through the admin API; \
                         remove one of them (`switchyard tenant remove {}` forgets the API's)",
                        v.tenant,
                        file.file.display(),
                        v.tenant
                    ),
                ));
                continue;
            }
            let source = TenantSource {
                mode: self.mode,
                limits: Some(&self.limits),
                dir: &self.dir,
                managed: Some(v.version),
            };
            if let Some(t) = source.parse(v.tenant.clone(), rel, v.text.clone(), problems) {
                self.tenants.insert(t.id.clone(), t);
            }
        }
    }

    /// One stored version of an API-managed tenant, parsed on its own;
    /// None when it does not parse.
    pub fn parse_managed(&self, v: &switchyard_store::ConfigVersion) -> Option<TenantConfig> {
        let source = TenantSource {
            mode: self.mode,
            limits: Some(&self.limits),
            dir: &self.dir,
            managed: Some(v.version),
        };
        source.parse(
            v.tenant.clone(),
            managed::path_of(&v.tenant),
            v.text.clone(),
            &mut Vec::new(),
        )
    }

    /// What a new version of API-managed tenant `t` must pass besides its
    /// own checks: the plugins' manifests and its secrets, as `check` does,
    /// and, unless an operator made it (`before` None), nothing only an
    /// operator may change compared with `before` (its current version, if
    /// any).
    pub async fn check_managed_change(
        &self,
        t: &TenantConfig,
        catalog: &crate::plugins::Catalog,
        secrets: &switchyard_store::SecretStore,
        before: Option<Option<&TenantConfig>>,
    ) -> Vec<Problem> {
        let mut problems = t.check_against(catalog);
        problems.extend(self.check_tenant_references(t, Ok(secrets)).await);
        if let Some(before) = before {
            problems.extend(managed::operator_only_changes(before, t));
        }
        problems
    }

    /// Wasm slots a daemon serving this configuration needs: one per queue
    /// worker and per admitted synchronous call, and a few for reading
    /// manifests while they run.
    pub fn wasm_slots(&self) -> u32 {
        (self.jobs.workers + self.invocations.max_concurrent + MANIFEST_SLOTS) as u32
    }

    /// The job concurrency of every tenant.
    pub fn tenant_concurrency(&self) -> switchyard_store::TenantConcurrency {
        switchyard_store::TenantConcurrency {
            default: self.jobs.per_tenant,
            tenants: self
                .tenants
                .values()
                .filter_map(|t| Some((t.id.clone(), t.max_concurrent_jobs?)))
                .collect(),
        }
    }
}

impl Config {
    /// One line per instance: what runs where, for `check`'s report.
    pub fn summary(&self) -> Vec<String> {
        let mut out = Vec::new();
        for t in self.tenants.values() {
            for inst in &t.instances {
                let i = inst.get_ref();
                let jobs: Vec<String> = i
                    .jobs
                    .iter()
                    .map(|(name, j)| {
                        let j = j.get_ref();
                        let every = j
                            .interval
                            .as_ref()
                            .map_or("default interval".to_owned(), |s| {
                                format!("every {} s", s.get_ref())
                            });
                        format!(
                            "{name} {}",
                            if j.enabled { every } else { "disabled".into() }
                        )
                    })
                    .collect();
                out.push(format!(
                    "{}/{}: plugin {}{}{}, {} role mapping(s){}",
                    t.id,
                    i.id.get_ref(),
                    i.plugin.get_ref(),
                    i.version
                        .as_ref()
                        .map(|v| format!(" {}", v.get_ref()))
                        .unwrap_or_default(),
                    if i.paused { " (paused)" } else { "" },
                    t.roles.len(),
                    if jobs.is_empty() {
                        String::new()
                    } else {
                        format!(", jobs: {}", jobs.join(", "))
                    },
                ));
            }
        }
        out
    }
}

/// What checking one tenant's text needs besides the text.
pub(crate) struct TenantSource<'a> {
    pub(crate) mode: Mode,
    pub(crate) limits: Option<&'a switchyard_runtime::Limits>,
    pub(crate) dir: &'a Path,
    /// The version, for a tenant managed through the admin API.
    pub(crate) managed: Option<i64>,
}

impl TenantSource<'_> {
    /// Parses and checks tenant `id`'s text on its own, reporting into
    /// `problems`; None when it does not parse at all.
    pub(crate) fn parse(
        &self,
        id: String,
        rel: PathBuf,
        text: String,
        problems: &mut Vec<Problem>,
    ) -> Option<TenantConfig> {
        let mut report = Report {
            file: &rel,
            text: &text,
            problems,
        };
        if !is_id(&id) {
            report.at(
                &(0..0),
                "(file name)",
                format!("tenant id `{id}` must be 1-64 characters of a-z, 0-9, - and _"),
            );
        }
        let parsed: TenantFile = match toml::from_str(&text) {
            Ok(t) => t,
            Err(e) => {
                report.parse_error(&e);
                return None;
            }
        };
        check::check_tenant(&parsed, self.mode, self.limits, self.dir, &mut report);
        if self.managed.is_some() {
            managed::check_managed(&parsed, &mut report);
        }
        Some(TenantConfig {
            id,
            file: rel,
            managed: self.managed,
            max_concurrent_jobs: parsed.max_concurrent_jobs.map(Spanned::into_inner),
            max_concurrent_invocations: parsed.max_concurrent_invocations.map(Spanned::into_inner),
            roles: parsed.roles,
            private_egress: parsed
                .private_egress
                .iter()
                .map(|e| e.get_ref().trim().to_owned())
                .collect(),
            require_signed: parsed.require_signed,
            trusted_publishers: parsed.trusted_publishers.map(Spanned::into_inner),
            instances: parsed.instances,
            digest: Sha256::digest(text.as_bytes()).into(),
            text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_and_job_concurrency_come_from_the_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("switchyard.toml"),
            "[storage]\nbackend = \"sqlite\"\npath = \"state.db\"\n[jobs]\nworkers = 8\nper_tenant = 2\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("tenants")).unwrap();
        std::fs::write(
            dir.path().join("tenants/big.toml"),
            "max_concurrent_jobs = 6\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("tenants/small.toml"), "").unwrap();
        let (cfg, problems) = Config::parse(dir.path()).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            cfg.storage,
            StorageConfig::Sqlite {
                path: "state.db".into()
            }
        );
        assert_eq!(cfg.jobs.workers, 8);
        let c = cfg.tenant_concurrency();
        assert_eq!((c.of("big"), c.of("small"), c.of("unknown")), (6, 2, 2));
    }
}
