//! The configuration's types: `switchyard.toml` and tenant files as serde
//! reads them, and what the checks share (ids, limits, addresses, a
//! problem report with file and line).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchyard_runtime::Limits;
use switchyard_runtime::credentials::Auth;
use toml::Spanned;

use super::secrets::{SecretRef, SecretSource};
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
pub(crate) struct ServerFile {
    #[serde(default = "default_listen")]
    pub(crate) listen: Spanned<String>,
    #[serde(default = "default_data_dir")]
    pub(crate) data_dir: PathBuf,
    #[serde(default = "default_plugin_dir")]
    pub(crate) plugin_dir: PathBuf,
    #[serde(default)]
    pub(crate) mode: Mode,
    #[serde(default)]
    pub(crate) storage: Option<Spanned<StorageConfig>>,
    #[serde(default)]
    pub(crate) jobs: Option<Spanned<JobsConfig>>,
    #[serde(default)]
    pub(crate) invocations: Option<Spanned<InvocationsConfig>>,
    #[serde(default)]
    pub(crate) retention: Option<Spanned<RetentionConfig>>,
    #[serde(default = "default_drain_timeout")]
    pub(crate) drain_timeout_secs: u32,
    #[serde(default)]
    pub(crate) limits: Limits,
    #[serde(default)]
    pub(crate) trust: Option<Spanned<TrustFile>>,
}

/// `[trust]`: whose signed plugin releases count, and whether every tenant
/// requires them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrustFile {
    #[serde(default)]
    pub(crate) require_signed: bool,
    /// Publisher name → `ed25519:<base64>` public key.
    #[serde(default)]
    pub(crate) publishers: BTreeMap<String, Spanned<String>>,
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
    /// A PostgreSQL database that several daemons share.
    Postgres {
        /// Connection string (`postgres://user@host:port/database`), without
        /// the password in production mode.
        url: String,
        /// The password: `env:VAR` or `file:PATH` (a literal only in
        /// development mode; `secret:` cannot be, the secrets live in
        /// this database).
        #[serde(default)]
        password: Option<SecretRef>,
        /// Connections this daemon opens at most.
        #[serde(default = "default_pool_size")]
        pool_size: usize,
        /// Longest a statement may run, in milliseconds (0: the server's).
        #[serde(default = "default_statement_timeout_ms")]
        statement_timeout_ms: u64,
        /// Schema the tables live in (default `public`).
        #[serde(default)]
        schema: Option<String>,
        /// TLS to the server; by default verified for any host not on
        /// this machine, off for loopback and Unix sockets.
        // Text, checked in `problems`: inside the tagged `[storage]` table
        // serde would report a wrong value without its field or line.
        #[serde(default)]
        tls: Option<String>,
        /// Extra authorities (PEM) the server's certificate may be signed
        /// by, relative to the configuration directory.
        #[serde(default)]
        ca_file: Option<PathBuf>,
    },
}

/// `[storage] tls` for PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgTlsMode {
    /// Encrypted, with the server's certificate verified for its host name.
    Verify,
    /// Unencrypted.
    Off,
}

/// `[storage] tls` and `ca_file` (relative to `base`) as the store's
/// setting for `url`, or the `(field, why)` that is wrong.
pub fn pg_tls(
    url: &str,
    tls: Option<&str>,
    ca_file: Option<&Path>,
    base: &Path,
) -> Result<switchyard_store::PgTls, (String, String)> {
    use switchyard_store::PgTls;
    let mode = tls
        .map(PgTlsMode::parse)
        .transpose()
        .map_err(|why| ("storage.tls".to_owned(), why))?;
    Ok(match (mode, ca_file) {
        (Some(PgTlsMode::Off), Some(_)) => {
            return Err((
                "storage.ca_file".into(),
                "is for verifying the server's certificate, but `tls = \"off\"`".into(),
            ));
        }
        (Some(PgTlsMode::Off), None) => PgTls::Off,
        // A CA file alone asks for verification, wherever the server is.
        (Some(PgTlsMode::Verify), ca) | (None, ca @ Some(_)) => PgTls::Verify {
            ca_file: ca.map(|p| base.join(p)),
        },
        (None, None) => PgTls::default_for(url),
    })
}

impl PgTlsMode {
    /// `verify` or `off`; anything else says what is allowed.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "verify" => Ok(Self::Verify),
            "off" => Ok(Self::Off),
            other => Err(format!(
                "`{other}` is not a TLS mode: use \"verify\" (encrypted, certificate checked) or \"off\""
            )),
        }
    }
}

fn default_pool_size() -> usize {
    16
}

fn default_statement_timeout_ms() -> u64 {
    30_000
}

impl StorageConfig {
    /// What is wrong with these settings, as `(field, why)`; nothing is
    /// connected to.
    pub fn problems(&self, mode: Mode) -> Vec<(String, String)> {
        let Self::Postgres {
            url,
            password,
            pool_size,
            schema,
            tls,
            ca_file,
            ..
        } = self
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Err(problem) = pg_tls(url, tls.as_deref(), ca_file.as_deref(), Path::new("")) {
            out.push(problem);
        }
        let mut settings = switchyard_store::PgSettings::new(url.clone());
        settings.pool_size = *pool_size;
        settings.schema = schema.clone();
        for (field, why) in settings.problems() {
            out.push((format!("storage.{field}"), why));
        }
        if mode == Mode::Production && switchyard_store::url_has_password(url) {
            out.push((
                "storage.url".into(),
                "holds a password, which production mode does not allow in a file: \
                 set `password = \"env:VAR\"` or `file:PATH`"
                    .into(),
            ));
        }
        if let Some(p) = password
            && let Some(why) = p.problem(&storage_password_rules(mode))
        {
            out.push(("storage.password".into(), why));
        }
        out
    }
}

/// Which references the database password may be.
pub fn storage_password_rules(mode: Mode) -> super::secrets::Allowed {
    super::secrets::Allowed {
        store: false,
        literals: mode == Mode::Development,
        literal_message: "a literal password is not allowed in production mode; use `env:VAR` \
                          or `file:PATH`",
    }
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
    /// How long a leased job stays this daemon's without a heartbeat, in
    /// seconds. A running job's lease is renewed every third of it, so
    /// this bounds how long the jobs of a daemon that died wait before
    /// another daemon (or this one, restarted) takes them over.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u32,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            workers: default_workers(),
            per_tenant: default_per_tenant(),
            max_retry_after_secs: default_max_retry_after(),
            lease_secs: default_lease_secs(),
        }
    }
}

fn default_max_retry_after() -> u32 {
    600
}

fn default_lease_secs() -> u32 {
    30
}

impl JobsConfig {
    /// A lease's length, in ms.
    pub fn lease_ms(&self) -> i64 {
        i64::from(self.lease_secs) * 1000
    }
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
pub(crate) const MANIFEST_SLOTS: usize = 4;

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
pub(crate) struct TenantFile {
    #[serde(default)]
    pub(crate) max_concurrent_jobs: Option<Spanned<usize>>,
    #[serde(default)]
    pub(crate) max_concurrent_invocations: Option<Spanned<usize>>,
    #[serde(default)]
    pub(crate) roles: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub(crate) private_egress: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) require_signed: bool,
    #[serde(default)]
    pub(crate) trusted_publishers: Option<Spanned<Vec<String>>>,
    #[serde(default, rename = "instance")]
    pub(crate) instances: Vec<Spanned<InstanceConfig>>,
}

/// A tenant's configuration.
#[derive(Debug)]
pub struct TenantConfig {
    /// Tenant id (the file name without `.toml`).
    pub id: String,
    /// The file, relative to the config directory; `api/<id>.toml` for a
    /// tenant managed through the admin API, which has no file.
    pub file: PathBuf,
    /// The configuration version, for a tenant managed through the admin
    /// API; None for a tenant file.
    pub managed: Option<i64>,
    /// Jobs this tenant may run at once (None: the `[jobs]` default).
    pub max_concurrent_jobs: Option<usize>,
    /// Synchronous calls this tenant may run at once (None: the
    /// `[invocations]` default).
    pub max_concurrent_invocations: Option<usize>,
    /// Tenant role → plugin roles.
    pub roles: BTreeMap<String, Vec<String>>,
    /// IP addresses and ranges (egress entries) the instances of an
    /// API-managed tenant may name in their egress; set by an operator.
    pub private_egress: Vec<String>,
    /// Whether the tenant runs only signed (or bundled) plugins.
    pub require_signed: bool,
    /// The only publishers whose plugins the tenant runs (besides the
    /// bundled ones); None: any trusted publisher, or unsigned plugins
    /// unless signatures are required.
    pub trusted_publishers: Option<Vec<String>>,
    /// Enabled instances.
    pub instances: Vec<Spanned<InstanceConfig>>,
    /// The file's text, to turn spans into lines.
    pub(crate) text: String,
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
    /// Trusted publishers, and whether every tenant requires signatures.
    pub trust: crate::release::Trust,
    /// Tenants by id.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// SHA-256 of `switchyard.toml`: when it changes, a reload rebuilds
    /// every tenant (defaults, limits and modes apply to all).
    pub server_digest: [u8; 32],
}

pub(crate) fn line_of(text: &str, span: &Range<usize>) -> usize {
    text[..span.start.min(text.len())].matches('\n').count() + 1
}

impl TenantConfig {
    /// The builds this tenant accepts: the operator's `[trust]
    /// require_signed` and the tenant's own `require_signed` and
    /// `trusted_publishers`.
    pub fn policy(&self, catalog: &crate::plugins::Catalog) -> crate::plugins::Policy {
        crate::plugins::Policy {
            require_signed: catalog.require_signed() || self.require_signed,
            publishers: self.trusted_publishers.clone(),
        }
    }
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

    pub(crate) fn parse_error(&mut self, e: &toml::de::Error) {
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
/// expected …`) and a string that is no variant of an enum (`unknown
/// variant `…`, expected …`). That string may be a secret under the wrong
/// key (`[instance.webhooks]` without the route's name, then `token =
/// "…"`; a secret pasted as `signature` or a credential's `kind`), so the
/// value is left out: `invalid type: string, expected …`, `unknown
/// variant, expected …`.
fn without_string_value(msg: &str) -> String {
    without_unknown_variant(&without_wrong_type_string(msg))
}

fn without_wrong_type_string(msg: &str) -> String {
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

fn without_unknown_variant(msg: &str) -> String {
    const OPEN: &str = "unknown variant `";
    let Some(at) = msg.find(OPEN) else {
        return msg.to_owned();
    };
    let value = &msg[at + OPEN.len()..];
    // The variant is written raw, backticks and all: what follows it is
    // serde's fixed `, expected …` (or `, there are no variants`), so the
    // value ends at the last of those.
    let end = value
        .rfind("`, expected")
        .or_else(|| value.rfind("`, there are no variants"));
    let rest = end.map_or("", |end| &value[end + 1..]);
    format!("{}unknown variant{rest}", &msg[..at])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_serde_quotes_are_left_out_of_messages() {
        assert_eq!(
            without_string_value(r#"invalid type: string "a\"b", expected struct X"#),
            "invalid type: string, expected struct X"
        );
        assert_eq!(
            without_string_value("unknown variant `hunter2`x`, expected `a` or `b`"),
            "unknown variant, expected `a` or `b`"
        );
        assert_eq!(
            without_string_value("unknown variant `s3cret`, there are no variants"),
            "unknown variant, there are no variants"
        );
        assert_eq!(
            without_string_value("missing field `id`"),
            "missing field `id`"
        );
    }

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
}

/// docs/configuration.md documents every key the configuration accepts.
#[cfg(test)]
mod reference {
    use super::*;

    const DOC: &str = include_str!("../../../../docs/configuration.md");

    /// The keys serde accepts where `toml` puts `zz_undocumented`: its
    /// error for an unknown key lists them.
    fn accepted<T: serde::de::DeserializeOwned + std::fmt::Debug>(toml: &str) -> Vec<String> {
        let err = toml::from_str::<T>(toml)
            .expect_err("an unknown key is refused")
            .to_string();
        let (_, list) = err
            .split_once("zz_undocumented`, expected")
            .unwrap_or_else(|| panic!("not an unknown-field error: {err}"));
        // `a`, `b` or `c`: every other piece between backquotes.
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    /// The part of the document under `heading`, up to the next heading.
    fn section(heading: &str) -> &'static str {
        let start = DOC
            .find(&format!("\n{heading}\n"))
            .unwrap_or_else(|| panic!("docs/configuration.md has no `{heading}`"));
        let body = &DOC[start + 1 + heading.len()..];
        let end = body.find("\n#").unwrap_or(body.len());
        &body[..end]
    }

    fn assert_documented(heading: &str, keys: &[String]) {
        assert!(!keys.is_empty(), "{heading}: no keys found");
        let text = section(heading);
        for key in keys {
            assert!(
                text.contains(&format!("| `{key}` |")),
                "docs/configuration.md, {heading}: `{key}` is accepted but not documented"
            );
        }
    }

    #[test]
    fn every_configuration_key_is_documented() {
        let unknown = "zz_undocumented = 1";
        let inst = "[[instance]]\nid = \"x\"\nplugin = \"y\"\n";
        let cred = |kind: &str| {
            format!("{inst}[instance.credentials.c]\nkind = \"{kind}\"\nhosts = []\n{unknown}")
        };
        let server = |table: &str| accepted::<ServerFile>(&format!("[{table}]\n{unknown}"));
        assert_documented("## `switchyard.toml`", &accepted::<ServerFile>(unknown));
        let mut storage =
            accepted::<ServerFile>(&format!("[storage]\nbackend = \"sqlite\"\n{unknown}"));
        storage.push("backend".into());
        storage.extend(accepted::<ServerFile>(&format!(
            "[storage]\nbackend = \"postgres\"\nurl = \"\"\n{unknown}"
        )));
        assert_documented("### `[storage]`", &storage);
        for table in ["jobs", "invocations", "retention", "limits", "trust"] {
            assert_documented(&format!("### `[{table}]`"), &server(table));
        }
        assert_documented(
            "## `tenants/<tenant>.toml`",
            &accepted::<TenantFile>(unknown),
        );
        assert_documented(
            "### `[[instance]]`",
            &accepted::<TenantFile>(&format!("{inst}{unknown}")),
        );
        assert_documented(
            "### `[instance.jobs.NAME]`",
            &accepted::<TenantFile>(&format!("{inst}[instance.jobs.t]\n{unknown}")),
        );
        assert_documented(
            "### `[instance.webhooks.ROUTE]`",
            &accepted::<TenantFile>(&format!("{inst}[instance.webhooks.t]\n{unknown}")),
        );
        for kind in [
            "oauth2-client-credentials",
            "basic",
            "api-key",
            "bearer",
            "secret-url",
        ] {
            assert_documented(
                &format!("#### `kind = \"{kind}\"`"),
                &accepted::<TenantFile>(&cred(kind)),
            );
        }
        assert_documented(
            "## `plugin run --instance FILE`",
            &accepted::<crate::instance_file::InstanceFile>(unknown),
        );
    }
}
