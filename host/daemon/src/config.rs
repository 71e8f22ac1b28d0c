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
//! backend = "sqlite"          # the embedded default (the only backend so far)
//! path = "switchyard.db"      # relative to data_dir
//! [jobs]
//! workers = 16                # jobs running at once in this daemon
//! per_tenant = 4              # jobs one tenant may run at once (fairness)
//! [limits]                    # defaults for every instance
//! deadline = 30000
//! ```
//!
//! ```toml
//! # tenants/acme.toml — the tenant id is the file name
//! max_concurrent_jobs = 8     # optional: overrides [jobs] per_tenant
//! [roles]                     # tenant role → plugin roles
//! "ITIL Agent" = ["operator"]
//!
//! [[instance]]
//! id = "echo-1"
//! plugin = "echo"
//! egress = ["https://api.example.com"]
//! [instance.config]
//! greeting = "hej"
//! [instance.credentials.upstream]
//! kind = "bearer"
//! hosts = ["https://api.example.com"]
//! token = "secret:echo-token"  # or env:VAR; literals only in development mode
//! [instance.jobs.tick]
//! interval = 600               # seconds, within the plugin's allowed range
//! ```
//!
//! Loading collects every problem it finds, each with file, line and field,
//! instead of stopping at the first.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchyard_runtime::egress::EgressRule;
use switchyard_runtime::{Limits, Manifest};
use toml::Spanned;

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File, relative to the config directory.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// Dotted field path, e.g. `instance[0].config.colour`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.field,
            self.message
        )
    }
}

/// Whether literal secrets are accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Secrets must be `secret:` or `env:` references.
    #[default]
    Production,
    /// Literal secrets are accepted (local development only).
    Development,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    #[serde(default = "default_listen")]
    listen: Spanned<String>,
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    #[serde(default = "default_plugin_dir")]
    plugin_dir: PathBuf,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    storage: StorageConfig,
    #[serde(default)]
    jobs: Option<Spanned<JobsConfig>>,
    #[serde(default)]
    limits: Limits,
}

/// Where the daemon keeps its state.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "backend", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StorageConfig {
    /// One SQLite database file (WAL mode) for one daemon process.
    Sqlite {
        /// Database file, relative to the data directory.
        #[serde(default = "default_sqlite_path")]
        path: PathBuf,
    },
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self::Sqlite {
            path: default_sqlite_path(),
        }
    }
}

fn default_sqlite_path() -> PathBuf {
    "switchyard.db".into()
}

/// How many queued jobs (webhook deliveries, scheduled runs) run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// Jobs running at once in this daemon.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Jobs one tenant may run at once, unless its file sets
    /// `max_concurrent_jobs`. Keeps a busy tenant from starving the others.
    #[serde(default = "default_per_tenant")]
    pub per_tenant: usize,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            workers: default_workers(),
            per_tenant: default_per_tenant(),
        }
    }
}

fn default_workers() -> usize {
    16
}
fn default_per_tenant() -> usize {
    4
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8080".into())
}
fn default_data_dir() -> PathBuf {
    "data".into()
}
fn default_plugin_dir() -> PathBuf {
    "plugins".into()
}

/// A secret value as written in a tenant file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `secret:NAME` — the tenant's secret store.
    Store(String),
    /// `env:VAR` — an environment variable of the daemon.
    Env(String),
    /// A literal (development mode only).
    Literal(String),
}

impl SecretSource {
    fn parse(text: &str) -> Self {
        if let Some(n) = text.strip_prefix("secret:") {
            Self::Store(n.to_owned())
        } else if let Some(v) = text.strip_prefix("env:") {
            Self::Env(v.to_owned())
        } else {
            Self::Literal(text.to_owned())
        }
    }
}

/// A credential binding, with secret fields as references. (Fields are
/// plain: serde cannot carry spans through an internally tagged enum, so
/// problems point at the credential's table.)
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CredentialConfig {
    /// OAuth2 client credentials.
    Oauth2ClientCredentials {
        /// Bound destinations.
        hosts: Vec<String>,
        /// Token endpoint.
        token_url: String,
        /// Client id.
        client_id: String,
        /// Client secret reference.
        client_secret: String,
        /// Scope.
        #[serde(default)]
        scope: Option<String>,
        /// `basic` (default) or `body`.
        #[serde(default)]
        client_auth: switchyard_runtime::credentials::ClientAuth,
        /// Extra header name.
        #[serde(default)]
        extra_header: Option<String>,
        /// Extra header value reference.
        #[serde(default)]
        extra_header_value: Option<String>,
    },
    /// HTTP Basic.
    Basic {
        /// Bound destinations.
        hosts: Vec<String>,
        /// User name.
        username: String,
        /// Password reference.
        password: String,
        /// Extra header name (e.g. `aw-tenant-code`).
        #[serde(default)]
        extra_header: Option<String>,
        /// Extra header value reference.
        #[serde(default)]
        extra_header_value: Option<String>,
    },
    /// API key header.
    ApiKey {
        /// Bound destinations.
        hosts: Vec<String>,
        /// Header name.
        header: String,
        /// Key reference.
        key: String,
    },
    /// Static bearer token.
    Bearer {
        /// Bound destinations.
        hosts: Vec<String>,
        /// Token reference.
        token: String,
    },
}

impl CredentialConfig {
    /// The kind, as manifests spell it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Oauth2ClientCredentials { .. } => "oauth2-client-credentials",
            Self::Basic { .. } => "basic",
            Self::ApiKey { .. } => "api-key",
            Self::Bearer { .. } => "bearer",
        }
    }

    fn hosts(&self) -> &[String] {
        match self {
            Self::Oauth2ClientCredentials { hosts, .. }
            | Self::Basic { hosts, .. }
            | Self::ApiKey { hosts, .. }
            | Self::Bearer { hosts, .. } => hosts,
        }
    }

    /// `(field, reference)` for every secret field.
    pub fn secret_fields(&self) -> Vec<(&'static str, &String)> {
        match self {
            Self::Oauth2ClientCredentials {
                client_secret,
                extra_header_value,
                ..
            } => std::iter::once(("client_secret", client_secret))
                .chain(extra_header_value.iter().map(|v| ("extra_header_value", v)))
                .collect(),
            Self::Basic {
                password,
                extra_header_value,
                ..
            } => std::iter::once(("password", password))
                .chain(extra_header_value.iter().map(|v| ("extra_header_value", v)))
                .collect(),
            Self::ApiKey { key, .. } => vec![("key", key)],
            Self::Bearer { token, .. } => vec![("token", token)],
        }
    }
}

/// A job's schedule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Interval in seconds; the plugin's default when absent.
    #[serde(default)]
    pub interval: Option<Spanned<u32>>,
    /// Whether the job runs.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// How deliveries to one webhook route are verified. At least one of
/// `token`, `hmac_secret` and `allowed_ips` must be set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Shared token (a secret reference), compared in constant time.
    #[serde(default)]
    pub token: Option<String>,
    /// Header carrying the token (default `x-switchyard-token`)...
    #[serde(default)]
    pub token_header: Option<String>,
    /// ...or a query / form parameter carrying it (e.g. BeyondTrust's
    /// `outbound_event_token`). It is removed before the plugin sees the
    /// request.
    #[serde(default)]
    pub token_param: Option<String>,
    /// HMAC-SHA256 key (a secret reference) for the body signature.
    #[serde(default)]
    pub hmac_secret: Option<String>,
    /// Header with the signature: hex, optionally prefixed `sha256=`.
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// Source addresses allowed (IPs or CIDRs); empty allows any.
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    /// Proxies whose `X-Forwarded-For` is believed; empty means it is
    /// ignored and the connection's peer address is the source.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Header holding the event id used to drop duplicate deliveries...
    #[serde(default)]
    pub event_id_header: Option<String>,
    /// ...or a top-level JSON / form field holding it.
    #[serde(default)]
    pub event_id_field: Option<String>,
    /// Largest body accepted.
    #[serde(default = "default_webhook_body")]
    pub max_body_bytes: usize,
}

fn default_signature_header() -> String {
    "x-switchyard-signature".into()
}

fn default_webhook_body() -> usize {
    1 << 20
}

/// One plugin instance of a tenant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Instance id.
    pub id: Spanned<String>,
    /// Plugin id.
    pub plugin: Spanned<String>,
    /// Required plugin version, if pinned.
    #[serde(default)]
    pub version: Option<Spanned<String>>,
    /// Starts paused.
    #[serde(default)]
    pub paused: bool,
    /// Configuration values.
    #[serde(default)]
    pub config: BTreeMap<String, Spanned<String>>,
    /// Egress allowlist.
    #[serde(default)]
    pub egress: Vec<Spanned<String>>,
    /// Extra CA certificate files (PEM), relative to the config directory.
    #[serde(default)]
    pub ca_certs: Vec<Spanned<PathBuf>>,
    /// Credential bindings by slot name.
    #[serde(default)]
    pub credentials: BTreeMap<String, Spanned<CredentialConfig>>,
    /// Limits overriding the server's defaults.
    #[serde(default)]
    pub limits: Option<toml::Table>,
    /// Job schedules by job name.
    #[serde(default)]
    pub jobs: BTreeMap<String, Spanned<JobConfig>>,
    /// Webhook routes exposed, by route name, with their verification.
    #[serde(default)]
    pub webhooks: BTreeMap<String, Spanned<WebhookConfig>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantFile {
    #[serde(default)]
    max_concurrent_jobs: Option<Spanned<usize>>,
    #[serde(default)]
    roles: BTreeMap<String, Vec<String>>,
    #[serde(default, rename = "instance")]
    instances: Vec<Spanned<InstanceConfig>>,
}

/// A tenant's configuration.
#[derive(Debug)]
pub struct TenantConfig {
    /// Tenant id (the file name without `.toml`).
    pub id: String,
    /// The file, relative to the config directory.
    pub file: PathBuf,
    /// Jobs this tenant may run at once (None: the `[jobs]` default).
    pub max_concurrent_jobs: Option<usize>,
    /// Tenant role → plugin roles.
    pub roles: BTreeMap<String, Vec<String>>,
    /// Enabled instances.
    pub instances: Vec<Spanned<InstanceConfig>>,
    /// The file's text, to turn spans into lines.
    text: String,
}

/// The whole configuration.
#[derive(Debug)]
pub struct Config {
    /// The config directory.
    pub dir: PathBuf,
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory (absolute or relative to `dir`, resolved).
    pub data_dir: PathBuf,
    /// Plugin directory, resolved.
    pub plugin_dir: PathBuf,
    /// Mode.
    pub mode: Mode,
    /// State backend.
    pub storage: StorageConfig,
    /// Job concurrency.
    pub jobs: JobsConfig,
    /// Default limits.
    pub limits: Limits,
    /// Tenants by id.
    pub tenants: BTreeMap<String, TenantConfig>,
}

fn line_of(text: &str, span: &Range<usize>) -> usize {
    text[..span.start.min(text.len())].matches('\n').count() + 1
}

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Collects problems for one file.
struct Report<'a> {
    file: &'a Path,
    text: &'a str,
    problems: &'a mut Vec<Problem>,
}

impl Report<'_> {
    fn at(&mut self, span: &Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line: line_of(self.text, span),
            field: field.into(),
            message: message.into(),
        });
    }

    fn parse_error(&mut self, e: &toml::de::Error) {
        let span = e.span().unwrap_or(0..0);
        // toml's message has no location; the field is the key it names.
        let msg = e.message().to_owned();
        let field = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.contains("field"))
            .unwrap_or("(file)")
            .to_owned();
        self.at(&span, field, msg);
    }
}

impl Config {
    /// Loads and checks `dir`, failing with every problem found. Manifest
    /// checks need the plugins and are done by [`Config::check_against`].
    pub fn load(dir: &Path) -> Result<Self, Vec<Problem>> {
        let (config, problems) = Self::parse(dir)?;
        if problems.is_empty() {
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
                return Err(vec![Problem {
                    file: rel,
                    line: 0,
                    field: "(file)".into(),
                    message: format!("cannot read {}: {e}", server_path.display()),
                }]);
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
        for path in files {
            let rel = PathBuf::from("tenants").join(path.file_name().unwrap());
            let id = path.file_stem().unwrap().to_string_lossy().into_owned();
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(Problem {
                        file: rel,
                        line: 0,
                        field: "(file)".into(),
                        message: format!("cannot read: {e}"),
                    });
                    continue;
                }
            };
            let mut report = Report {
                file: &rel,
                text: &text,
                problems: &mut problems,
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
                    continue;
                }
            };
            check_tenant(
                &parsed,
                mode,
                server.as_ref().map(|s| &s.limits),
                dir,
                &mut report,
            );
            tenants.insert(
                id.clone(),
                TenantConfig {
                    id,
                    file: rel,
                    max_concurrent_jobs: parsed.max_concurrent_jobs.map(Spanned::into_inner),
                    roles: parsed.roles,
                    instances: parsed.instances,
                    text,
                },
            );
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
            storage: server.storage,
            jobs: server.jobs.map(Spanned::into_inner).unwrap_or_default(),
            limits: server.limits,
            tenants,
        };
        Ok((config, problems))
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

    /// Checks every instance against its plugin's manifest. `manifests`
    /// maps plugin id to the manifests of its available versions.
    pub fn check_against(&self, manifests: &BTreeMap<String, Vec<Manifest>>) -> Vec<Problem> {
        let mut problems = Vec::new();
        for tenant in self.tenants.values() {
            let mut report = Report {
                file: &tenant.file,
                text: &tenant.text,
                problems: &mut problems,
            };
            for (i, inst) in tenant.instances.iter().enumerate() {
                check_instance_manifest(i, inst, manifests, &mut report);
            }
        }
        problems
    }
}

/// Limits of an instance: the server's defaults overridden field by field.
pub fn merge_limits(base: &Limits, overrides: &toml::Table) -> Result<Limits, String> {
    let mut merged = toml::Table::try_from(base).map_err(|e| e.to_string())?;
    for (k, v) in overrides {
        merged.insert(k.clone(), v.clone());
    }
    merged
        .try_into::<Limits>()
        .map_err(|e| e.message().to_owned())
}

fn check_tenant(
    t: &TenantFile,
    mode: Mode,
    default_limits: Option<&Limits>,
    dir: &Path,
    report: &mut Report<'_>,
) {
    if let Some(n) = &t.max_concurrent_jobs
        && *n.get_ref() == 0
    {
        report.at(&n.span(), "max_concurrent_jobs", "must be at least 1");
    }
    let mut seen = BTreeMap::new();
    for (i, inst) in t.instances.iter().enumerate() {
        let inst_span = inst.span();
        let inst = inst.get_ref();
        let f = |field: &str| format!("instance[{i}].{field}");
        let id = inst.id.get_ref();
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
            if c.hosts().is_empty() {
                report.at(
                    &cred.span(),
                    f(&format!("credentials.{name}.hosts")),
                    "bind the credential to at least one host",
                );
            }
            for (j, h) in c.hosts().iter().enumerate() {
                if let Err(err) = h.parse::<EgressRule>() {
                    report.at(
                        &cred.span(),
                        f(&format!("credentials.{name}.hosts[{j}]")),
                        err.to_string(),
                    );
                }
            }
            for (field, value) in c.secret_fields() {
                let field = f(&format!("credentials.{name}.{field}"));
                match SecretSource::parse(value) {
                    SecretSource::Literal(_) if mode == Mode::Production => report.at(
                        &cred.span(),
                        field,
                        "literal secrets are not allowed in production mode; use `secret:NAME` \
                         (switchyard secret set) or `env:VAR`",
                    ),
                    SecretSource::Store(n) | SecretSource::Env(n) if n.is_empty() => {
                        report.at(&cred.span(), field, "the reference names nothing")
                    }
                    _ => {}
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
            if h.token.is_some() && h.token_header.is_some() && h.token_param.is_some() {
                report.at(
                    &hook.span(),
                    field("token_param"),
                    "set token_header or token_param, not both",
                );
            }
            for (name, value) in [("token", &h.token), ("hmac_secret", &h.hmac_secret)] {
                if let Some(v) = value
                    && mode == Mode::Production
                    && matches!(SecretSource::parse(v), SecretSource::Literal(_))
                {
                    report.at(
                        &hook.span(),
                        field(name),
                        "literal secrets are not allowed in production mode; use `secret:NAME` or `env:VAR`",
                    );
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

/// An IP address or CIDR block.
pub fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

fn check_instance_manifest(
    i: usize,
    inst: &Spanned<InstanceConfig>,
    manifests: &BTreeMap<String, Vec<Manifest>>,
    report: &mut Report<'_>,
) {
    let inst = inst.get_ref();
    let f = |field: &str| format!("instance[{i}].{field}");
    let plugin = inst.plugin.get_ref();
    let Some(versions) = manifests.get(plugin) else {
        let known: Vec<_> = manifests.keys().cloned().collect();
        report.at(
            &inst.plugin.span(),
            f("plugin"),
            format!(
                "no plugin `{plugin}` is installed (available: {})",
                known.join(", ")
            ),
        );
        return;
    };
    let manifest = match &inst.version {
        None => versions.last().expect("at least one version"),
        Some(v) => match versions.iter().find(|m| &m.version == v.get_ref()) {
            Some(m) => m,
            None => {
                let have: Vec<_> = versions.iter().map(|m| m.version.as_str()).collect();
                report.at(
                    &v.span(),
                    f("version"),
                    format!(
                        "plugin `{plugin}` version {} is not installed (have {})",
                        v.get_ref(),
                        have.join(", ")
                    ),
                );
                return;
            }
        },
    };
    for (key, value) in &inst.config {
        if !manifest.config.iter().any(|c| &c.key == key) {
            report.at(
                &value.span(),
                f(&format!("config.{key}")),
                format!("plugin `{plugin}` has no config key `{key}`"),
            );
        }
    }
    for c in manifest
        .config
        .iter()
        .filter(|c| c.required && c.default.is_none())
    {
        if !inst.config.contains_key(&c.key) {
            report.at(
                &inst.plugin.span(),
                f("config"),
                format!("required key `{}` is missing ({})", c.key, c.description),
            );
        }
    }
    for (name, cred) in &inst.credentials {
        match manifest.credentials.iter().find(|s| &s.name == name) {
            None => report.at(
                &cred.span(),
                f(&format!("credentials.{name}")),
                format!("plugin `{plugin}` has no credential slot `{name}`"),
            ),
            Some(slot) if !slot.kinds.contains(&cred.get_ref().kind()) => report.at(
                &cred.span(),
                f(&format!("credentials.{name}.kind")),
                format!(
                    "kind {} is not accepted; the plugin accepts {}",
                    cred.get_ref().kind(),
                    slot.kinds.join(", ")
                ),
            ),
            Some(_) => {}
        }
    }
    for slot in manifest.credentials.iter().filter(|s| s.required) {
        if !inst.credentials.contains_key(&slot.name) {
            report.at(
                &inst.plugin.span(),
                f("credentials"),
                format!(
                    "required credential `{}` is not bound ({})",
                    slot.name, slot.description
                ),
            );
        }
    }
    for (route, hook) in &inst.webhooks {
        if !manifest.webhooks.iter().any(|w| &w.route == route) {
            report.at(
                &hook.span(),
                f(&format!("webhooks.{route}")),
                format!("plugin `{plugin}` has no webhook route `{route}`"),
            );
        }
    }
    for (name, job) in &inst.jobs {
        let Some(spec) = manifest.jobs.iter().find(|j| &j.name == name) else {
            report.at(
                &job.span(),
                f(&format!("jobs.{name}")),
                format!("plugin `{plugin}` has no job `{name}`"),
            );
            continue;
        };
        if let Some(route) = &spec.exclusive_with_webhook
            && job.get_ref().enabled
            && inst.webhooks.contains_key(route)
        {
            report.at(
                &job.span(),
                f(&format!("jobs.{name}")),
                format!(
                    "plugin `{plugin}` does this job's work through webhooks.{route} too: \
                     set up the job or the webhook route, not both \
                     (with the route set up, remove this job)"
                ),
            );
        }
        if let Some(iv) = &job.get_ref().interval {
            let secs = *iv.get_ref();
            if secs < spec.min_interval_secs || secs > spec.max_interval_secs {
                report.at(
                    &iv.span(),
                    f(&format!("jobs.{name}.interval")),
                    format!(
                        "{secs} s is outside the allowed range {}..={} s",
                        spec.min_interval_secs, spec.max_interval_secs
                    ),
                );
            }
        }
    }
}

/// Resolves one secret reference. Store references go through `lookup`
/// (the tenant's secret store); the value never appears in an error.
pub(crate) async fn resolve_secret<F, Fut>(
    source: &str,
    what: &str,
    lookup: &F,
) -> anyhow::Result<secrecy::SecretString>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = anyhow::Result<Option<secrecy::SecretString>>>,
{
    match SecretSource::parse(source) {
        SecretSource::Store(name) => lookup(name.clone())
            .await?
            .ok_or_else(|| anyhow::anyhow!("{what}: secret `{name}` is not in the secret store")),
        SecretSource::Env(var) => std::env::var(&var)
            .map(secrecy::SecretString::from)
            .map_err(|_| anyhow::anyhow!("{what}: environment variable `{var}` is not set")),
        SecretSource::Literal(v) => Ok(secrecy::SecretString::from(v)),
    }
}

impl Config {
    /// Builds the runtime spec of instance `index` of `tenant`, resolving
    /// secrets through `lookup` and CA files from the config directory.
    pub async fn instance_spec<F, Fut>(
        &self,
        tenant: &TenantConfig,
        index: usize,
        lookup: F,
    ) -> anyhow::Result<switchyard_runtime::InstanceSpec>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = anyhow::Result<Option<secrecy::SecretString>>>,
    {
        use switchyard_runtime::credentials::{CredentialSecret, CredentialSpec, SecretHeader};
        let inst = tenant.instances[index].get_ref();
        let mut spec = switchyard_runtime::InstanceSpec::new(&tenant.id, inst.id.get_ref());
        spec.config = inst
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .collect();
        spec.egress = inst
            .egress
            .iter()
            .map(|e| e.get_ref().trim().to_owned())
            .collect();
        spec.limits = match &inst.limits {
            Some(over) => merge_limits(&self.limits, over).map_err(anyhow::Error::msg)?,
            None => self.limits,
        };
        for ca in &inst.ca_certs {
            spec.ca_certs_pem
                .push(std::fs::read_to_string(self.dir.join(ca.get_ref()))?);
        }
        for (name, cred) in &inst.credentials {
            let what = |f: &str| {
                format!(
                    "{}: {}/{} credentials.{name}.{f}",
                    tenant.file.display(),
                    tenant.id,
                    inst.id.get_ref()
                )
            };
            let header = |n: &Option<String>, v: &Option<String>| (n.clone(), v.clone());
            let extra = async |pair: (Option<String>, Option<String>)| -> anyhow::Result<Option<SecretHeader>> {
                match pair {
                    (Some(name), Some(value)) => Ok(Some(SecretHeader {
                        value: resolve_secret(&value, &what("extra_header_value"), &lookup).await?,
                        name,
                    })),
                    (None, None) => Ok(None),
                    _ => anyhow::bail!("{}: set both extra_header and extra_header_value", what("extra_header")),
                }
            };
            let c = cred.get_ref();
            let secret = match c {
                CredentialConfig::Oauth2ClientCredentials {
                    token_url,
                    client_id,
                    client_secret,
                    scope,
                    client_auth,
                    extra_header,
                    extra_header_value,
                    ..
                } => CredentialSecret::OAuth2 {
                    token_url: token_url.clone(),
                    client_id: client_id.clone(),
                    client_secret: resolve_secret(client_secret, &what("client_secret"), &lookup)
                        .await?,
                    scope: scope.clone(),
                    client_auth: *client_auth,
                    extra_header: extra(header(extra_header, extra_header_value)).await?,
                },
                CredentialConfig::Basic {
                    username,
                    password,
                    extra_header,
                    extra_header_value,
                    ..
                } => CredentialSecret::Basic {
                    username: username.clone(),
                    password: resolve_secret(password, &what("password"), &lookup).await?,
                    extra_header: extra(header(extra_header, extra_header_value)).await?,
                },
                CredentialConfig::ApiKey { header, key, .. } => CredentialSecret::ApiKey {
                    header: header.clone(),
                    key: resolve_secret(key, &what("key"), &lookup).await?,
                },
                CredentialConfig::Bearer { token, .. } => CredentialSecret::Bearer {
                    token: resolve_secret(token, &what("token"), &lookup).await?,
                },
            };
            spec.credentials.push(CredentialSpec {
                name: name.clone(),
                hosts: c.hosts().to_vec(),
                secret,
            });
        }
        Ok(spec)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based() {
        assert_eq!(line_of("a\nb\nc", &(0..1)), 1);
        assert_eq!(line_of("a\nb\nc", &(4..5)), 3);
    }

    #[test]
    fn limits_merge_field_by_field() {
        let base = Limits::default();
        let over: toml::Table = toml::from_str("deadline = 5000").unwrap();
        let merged = merge_limits(&base, &over).unwrap();
        assert_eq!(merged.deadline, std::time::Duration::from_millis(5000));
        assert_eq!(merged.memory_bytes, base.memory_bytes);
        let bad: toml::Table = toml::from_str("deadlin = 5").unwrap();
        assert!(merge_limits(&base, &bad).unwrap_err().contains("deadlin"));
    }

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
