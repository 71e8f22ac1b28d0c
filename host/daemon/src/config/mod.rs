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
//! drain_timeout_secs = 30     # on SIGTERM, then exit; unfinished jobs stay queued
//! [jobs]
//! workers = 16                # jobs running at once in this daemon
//! per_tenant = 4              # jobs one tenant may run at once (fairness)
//! max_retry_after_secs = 600  # an upstream's Retry-After is cut to this
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
//! ```
//!
//! ```toml
//! # tenants/acme.toml — the tenant id is the file name
//! max_concurrent_jobs = 8     # optional: overrides [jobs] per_tenant
//! max_concurrent_invocations = 16  # optional: overrides [invocations] per_tenant
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
pub mod secrets;
pub mod spec;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use switchyard_runtime::Limits;
use switchyard_runtime::credentials::Auth;
use toml::Spanned;

pub use self::secrets::SecretRef;
use self::secrets::SecretSource;
use crate::problem::{Problem, Severity};

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
    invocations: Option<Spanned<InvocationsConfig>>,
    #[serde(default)]
    retention: Option<Spanned<RetentionConfig>>,
    #[serde(default = "default_drain_timeout")]
    drain_timeout_secs: u32,
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
    /// Longest wait an upstream's `Retry-After` may impose on a queued job
    /// before its next attempt, in seconds (a longer one is cut to this).
    #[serde(default = "default_max_retry_after")]
    pub max_retry_after_secs: u32,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            workers: default_workers(),
            per_tenant: default_per_tenant(),
            max_retry_after_secs: default_max_retry_after(),
        }
    }
}

fn default_max_retry_after() -> u32 {
    600
}

/// How many synchronous invocations (actions, synchronous webhooks) run at
/// once: in the daemon, per tenant (a tenant file may set
/// `max_concurrent_invocations`) and per instance. A call over a tenant's or
/// instance's share is refused with 429; the daemon-wide limit and the
/// queue's `workers` together size the wasm pool, so an admitted call always
/// finds a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvocationsConfig {
    /// Calls at once in the daemon.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Calls at once of one tenant.
    #[serde(default = "default_invocations_per_tenant")]
    pub per_tenant: usize,
    /// Calls at once of one instance.
    #[serde(default = "default_invocations_per_instance")]
    pub per_instance: usize,
}

impl Default for InvocationsConfig {
    fn default() -> Self {
        Self {
            max_concurrent: default_max_concurrent(),
            per_tenant: default_invocations_per_tenant(),
            per_instance: default_invocations_per_instance(),
        }
    }
}

fn default_max_concurrent() -> usize {
    64
}
fn default_invocations_per_tenant() -> usize {
    8
}
fn default_invocations_per_instance() -> usize {
    4
}

/// How long finished work is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days a finished job is kept (its idempotency key with it: a delivery
    /// repeated after that is processed again).
    #[serde(default = "seven")]
    pub done_jobs_days: u32,
    /// Days the event id of a synchronous webhook delivery is remembered.
    #[serde(default = "seven")]
    pub seen_events_days: u32,
    /// Days an audit entry is kept.
    #[serde(default = "ninety")]
    pub audit_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            done_jobs_days: seven(),
            seen_events_days: seven(),
            audit_days: ninety(),
        }
    }
}

fn seven() -> u32 {
    7
}
fn ninety() -> u32 {
    90
}

/// Wasm slots kept for reading plugin manifests (at start and on reload).
const MANIFEST_SLOTS: usize = 4;

fn default_drain_timeout() -> u32 {
    30
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

/// A credential binding: the hosts it may be sent to and how it
/// authenticates, its secret fields as references. The same schema in tenant
/// files and in `plugin run --instance` files.
#[derive(Debug, Deserialize)]
pub struct CredentialConfig {
    /// Bound destinations.
    pub hosts: Vec<String>,
    /// Kind and fields.
    #[serde(flatten)]
    pub auth: Auth<SecretRef>,
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
    pub token: Option<SecretRef>,
    /// Header carrying the token (default `x-switchyard-token`)...
    #[serde(default)]
    pub token_header: Option<String>,
    /// ...or a query / form parameter carrying it (e.g. BeyondTrust's
    /// `outbound_event_token`). It is removed before the plugin sees the
    /// request.
    #[serde(default)]
    pub token_param: Option<String>,
    /// HMAC-SHA256 key (a secret reference) for the body signature. For
    /// `standard-webhooks`, the `whsec_…` secret the sender gave out.
    #[serde(default)]
    pub hmac_secret: Option<SecretRef>,
    /// How the signature is made: `hmac-sha256` (the default: the body's
    /// HMAC in `signature_header`, hex, optionally prefixed `sha256=`; no
    /// protection against replays) or `standard-webhooks` (the Standard
    /// Webhooks scheme: `webhook-id`, `webhook-timestamp` and
    /// `webhook-signature` headers, the id and time signed with the body,
    /// deliveries older or newer than `tolerance_secs` refused).
    #[serde(default)]
    pub signature: SignatureScheme,
    /// Header with an `hmac-sha256` signature.
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// How far a `standard-webhooks` timestamp may be from now, in seconds.
    #[serde(default = "default_tolerance")]
    pub tolerance_secs: u64,
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

/// How a webhook delivery is signed (see [`WebhookConfig::signature`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureScheme {
    /// HMAC-SHA256 of the body, hex, in one header.
    #[default]
    HmacSha256,
    /// Standard Webhooks (<https://www.standardwebhooks.com>), signature
    /// version `v1`.
    StandardWebhooks,
}

fn default_tolerance() -> u64 {
    300
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
    /// Plugin id, optionally pinned: `echo@0.1`.
    pub plugin: Spanned<String>,
    /// Required plugin version (a version or a semver requirement), if pinned.
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

impl InstanceConfig {
    /// The plugin id and version pin, from `plugin = "id@pin"` or the
    /// `version` key (not both).
    pub fn plugin_ref(&self) -> Result<(String, Option<semver::VersionReq>), String> {
        let (id, pin) = crate::plugins::parse_plugin_ref(self.plugin.get_ref())?;
        match (&pin, &self.version) {
            (Some(_), Some(_)) => Err(
                "the plugin is pinned twice: write `plugin = \"id@version\"` or a `version` key, \
                 not both"
                    .into(),
            ),
            (None, Some(v)) => Ok((id, Some(crate::plugins::parse_version_req(v.get_ref())?))),
            _ => Ok((id, pin)),
        }
    }

    /// Every secret reference the instance holds, with its field (as
    /// `check` names it) and the span of the table it is in.
    pub fn secret_refs(&self) -> Vec<(String, Range<usize>, &SecretRef)> {
        let mut refs = Vec::new();
        for (name, cred) in &self.credentials {
            for (field, r) in cred.get_ref().auth.secret_fields() {
                refs.push((format!("credentials.{name}.{field}"), cred.span(), r));
            }
        }
        for (route, hook) in &self.webhooks {
            let h = hook.get_ref();
            for (field, r) in [("token", &h.token), ("hmac_secret", &h.hmac_secret)] {
                if let Some(r) = r {
                    refs.push((format!("webhooks.{route}.{field}"), hook.span(), r));
                }
            }
        }
        refs
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantFile {
    #[serde(default)]
    max_concurrent_jobs: Option<Spanned<usize>>,
    #[serde(default)]
    max_concurrent_invocations: Option<Spanned<usize>>,
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
    /// Synchronous calls this tenant may run at once (None: the
    /// `[invocations]` default).
    pub max_concurrent_invocations: Option<usize>,
    /// Tenant role → plugin roles.
    pub roles: BTreeMap<String, Vec<String>>,
    /// Enabled instances.
    pub instances: Vec<Spanned<InstanceConfig>>,
    /// The file's text, to turn spans into lines.
    text: String,
    /// SHA-256 of the file's text: a reload rebuilds a tenant whose file
    /// changed and keeps the others.
    pub digest: [u8; 32],
}

impl TenantConfig {
    /// Whether building the tenant reads files besides its own (CA
    /// certificates, `file:` secrets), which may change on their own.
    pub fn reads_other_files(&self) -> bool {
        self.instances.iter().any(|i| {
            let i = i.get_ref();
            !i.ca_certs.is_empty()
                || i.secret_refs()
                    .iter()
                    .any(|(_, _, r)| matches!(r.source(), SecretSource::File(_)))
        })
    }
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
    /// Synchronous invocations at once.
    pub invocations: InvocationsConfig,
    /// How long finished work is kept.
    pub retention: RetentionConfig,
    /// On SIGTERM, how long in-flight requests and running jobs may take to
    /// finish before the daemon exits anyway (what is left stays queued).
    pub drain_timeout: std::time::Duration,
    /// Default limits.
    pub limits: Limits,
    /// Tenants by id.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// SHA-256 of `switchyard.toml`: when it changes, a reload rebuilds
    /// every tenant (defaults, limits and modes apply to all).
    pub server_digest: [u8; 32],
}

pub(crate) fn line_of(text: &str, span: &Range<usize>) -> usize {
    text[..span.start.min(text.len())].matches('\n').count() + 1
}

/// Whether `s` is a valid tenant or instance id.
pub fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Collects problems for one file.
pub(crate) struct Report<'a> {
    pub(crate) file: &'a Path,
    pub(crate) text: &'a str,
    pub(crate) problems: &'a mut Vec<Problem>,
}

impl Report<'_> {
    pub(crate) fn at(
        &mut self,
        span: &Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push(span, Severity::Error, field, message);
    }

    pub(crate) fn push(
        &mut self,
        span: &Range<usize>,
        severity: Severity,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line: line_of(self.text, span),
            field: field.into(),
            message: message.into(),
            severity,
        });
    }

    fn parse_error(&mut self, e: &toml::de::Error) {
        let span = e.span().unwrap_or(0..0);
        // toml's message has no location; the field is the key it names.
        let msg = without_string_value(e.message());
        let field = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.contains("field"))
            .unwrap_or("(file)")
            .to_owned();
        self.at(&span, field, msg);
    }
}

/// serde quotes a string of the wrong type (`invalid type: string "…",
/// expected …`). That string may be a secret under the wrong header
/// (`[instance.webhooks]` without the route's name, then `token = "…"`),
/// so the value is left out: `invalid type: string, expected …`.
fn without_string_value(msg: &str) -> String {
    const QUOTE: &str = "string \"";
    let Some(at) = msg.find(QUOTE) else {
        return msg.to_owned();
    };
    let value = &msg[at + QUOTE.len()..];
    // The value is written with `{:?}`: `\` escapes, `"` ends it.
    let mut escaped = false;
    let end = value.char_indices().find_map(|(i, c)| {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i + 1),
            _ => {}
        }
        None
    });
    let rest = end.map_or("", |end| &value[end..]);
    format!("{}string{rest}", &msg[..at])
}

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
                    problems.push(Problem::file(rel, "(file)", format!("cannot read: {e}")));
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
            check::check_tenant(
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
                    max_concurrent_invocations: parsed
                        .max_concurrent_invocations
                        .map(Spanned::into_inner),
                    roles: parsed.roles,
                    instances: parsed.instances,
                    digest: Sha256::digest(text.as_bytes()).into(),
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
            tenants,
            server_digest: Sha256::digest(server_text.as_bytes()).into(),
        };
        Ok((config, problems))
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

/// An IP address or CIDR block.
pub fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
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
