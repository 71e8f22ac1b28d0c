//! Host side of `switchyard:plugin/credentials`, and the code that attaches
//! credentials to outbound requests.
//!
//! Secrets live only here, in `secrecy` types. A plugin names a credential;
//! [`CredentialsCtx::authorize`] returns the headers to attach, and only when
//! the destination is one the credential is bound to. OAuth2 tokens are
//! cached per credential, refreshed before they expire, fetched by at most
//! one caller at a time, and dropped when an upstream answers 401.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;
use wasmtime::component::{HasData, Linker};

use crate::bindings::credentials::{
    self, CredentialInfo, Error, Host, Kind, SecretPlacement, Verification,
};
use crate::clock::Clock;
use crate::egress::{self, Destination, EgressPolicy};

/// Longest a token endpoint may take to answer.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest token response read; real ones are a few hundred bytes.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// Refresh a token this long before it expires (or at half its lifetime if
/// that is shorter), so a request never leaves with a token about to lapse.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// A credential bound to an instance, with its secret material. `Debug`
/// prints `[REDACTED]` for every secret (secrecy's formatting).
#[derive(Debug)]
pub struct CredentialSpec {
    /// The name plugins use.
    pub name: String,
    /// Destinations (`scheme://host[:port]`, `*.` wildcards, IP/CIDR) the
    /// credential may be sent to.
    pub hosts: Vec<String>,
    /// How to authenticate, with the secrets.
    pub secret: CredentialSecret,
}

/// How a token endpoint expects the client to authenticate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// HTTP Basic with client id and secret (RFC 6749's preferred form).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Body,
}

/// The kinds of credential the host can attach, as configuration files and
/// manifests spell them (`oauth2-client-credentials`, `basic`, `api-key`,
/// `bearer`, `secret-url`). The one place the host maps kinds to names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    /// OAuth2 client credentials grant.
    Oauth2ClientCredentials,
    /// HTTP Basic.
    Basic,
    /// An API key in a header.
    ApiKey,
    /// A static bearer token.
    Bearer,
    /// A URL that is itself the secret (a Slack incoming webhook). The WIT
    /// 0.1 `kind` enum cannot grow, so plugins see it as `bearer` (a bearer
    /// token in the URI) and tell it apart with `credentials.placement`;
    /// a slot that accepts `bearer` accepts it.
    SecretUrl,
}

impl CredentialKind {
    /// The name configuration files and manifests use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oauth2ClientCredentials => "oauth2-client-credentials",
            Self::Basic => "basic",
            Self::ApiKey => "api-key",
            Self::Bearer => "bearer",
            Self::SecretUrl => "secret-url",
        }
    }

    /// Whether a slot declaring `accepted` takes a credential of this kind.
    pub fn satisfies(self, accepted: &[CredentialKind]) -> bool {
        accepted.contains(&self) || (self == Self::SecretUrl && accepted.contains(&Self::Bearer))
    }
}

impl std::fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Kind> for CredentialKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Oauth2ClientCredentials => Self::Oauth2ClientCredentials,
            Kind::Basic => Self::Basic,
            Kind::ApiKey => Self::ApiKey,
            Kind::Bearer => Self::Bearer,
        }
    }
}

impl From<CredentialKind> for Kind {
    fn from(k: CredentialKind) -> Self {
        match k {
            CredentialKind::Oauth2ClientCredentials => Self::Oauth2ClientCredentials,
            CredentialKind::Basic => Self::Basic,
            CredentialKind::ApiKey => Self::ApiKey,
            CredentialKind::Bearer | CredentialKind::SecretUrl => Self::Bearer,
        }
    }
}

/// How a credential authenticates, generic over how its secret fields are
/// held: configuration files hold references (`secret:NAME`, `env:VAR`, …),
/// the runtime holds [`SecretString`]s ([`CredentialSecret`]). One schema,
/// so the tenant TOML and the `plugin run --instance` file cannot drift.
///
/// ```toml
/// kind = "basic"                       # or oauth2-client-credentials, api-key, bearer, secret-url
/// username = "api-admin"
/// password = "secret:uem-password"
/// extra_header = "aw-tenant-code"      # optional, with extra_header_value
/// extra_header_value = "secret:uem-tenant-code"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    deny_unknown_fields,
    bound(deserialize = "S: Deserialize<'de>")
)]
pub enum Auth<S> {
    /// OAuth2 client credentials grant.
    #[serde(rename = "oauth2-client-credentials")]
    OAuth2 {
        /// Token endpoint; must pass the instance's egress policy.
        token_url: String,
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: S,
        /// Requested scope.
        #[serde(default)]
        scope: Option<String>,
        /// How the client authenticates to the token endpoint.
        #[serde(default)]
        client_auth: ClientAuth,
        /// A header sent alongside the bearer token...
        #[serde(default)]
        extra_header: Option<String>,
        /// ...and its (secret) value.
        #[serde(default)]
        extra_header_value: Option<S>,
    },
    /// HTTP Basic.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: S,
        /// A header sent alongside, e.g. `aw-tenant-code`...
        #[serde(default)]
        extra_header: Option<String>,
        /// ...and its (secret) value.
        #[serde(default)]
        extra_header_value: Option<S>,
    },
    /// An API key in a header.
    ApiKey {
        /// Header name, e.g. `X-API-Key`.
        header: String,
        /// The key.
        key: S,
    },
    /// A static bearer token.
    Bearer {
        /// The token.
        token: S,
    },
    /// A URL that is the secret: requests named with this credential go to
    /// it. Its origin must be the credential's one host.
    SecretUrl {
        /// The whole URL, e.g. a Slack incoming-webhook URL.
        url: S,
    },
}

/// Secret material of a credential, by kind.
pub type CredentialSecret = Auth<SecretString>;

impl<S> Auth<S> {
    /// The kind.
    pub fn kind(&self) -> CredentialKind {
        match self {
            Self::OAuth2 { .. } => CredentialKind::Oauth2ClientCredentials,
            Self::Basic { .. } => CredentialKind::Basic,
            Self::ApiKey { .. } => CredentialKind::ApiKey,
            Self::Bearer { .. } => CredentialKind::Bearer,
            Self::SecretUrl { .. } => CredentialKind::SecretUrl,
        }
    }

    /// `(field, value)` of every secret field that is set.
    pub fn secret_fields(&self) -> Vec<(&'static str, &S)> {
        match self {
            Self::OAuth2 {
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
            Self::Bearer { token } => vec![("token", token)],
            Self::SecretUrl { url } => vec![("url", url)],
        }
    }

    /// The extra header's name and value, when both are set.
    fn extra_header(&self) -> Option<(&str, &S)> {
        match self {
            Self::OAuth2 {
                extra_header: Some(n),
                extra_header_value: Some(v),
                ..
            }
            | Self::Basic {
                extra_header: Some(n),
                extra_header_value: Some(v),
                ..
            } => Some((n, v)),
            _ => None,
        }
    }

    /// Problems with the non-secret fields, as `(field, message)`: header
    /// names, the token URL, an extra header without its value. Checked by
    /// `switchyard check` and again when the instance is built.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let header = |n: &str| HeaderName::from_bytes(n.as_bytes()).is_err();
        match self {
            Self::OAuth2 {
                extra_header,
                extra_header_value,
                ..
            }
            | Self::Basic {
                extra_header,
                extra_header_value,
                ..
            } => match (extra_header, extra_header_value) {
                (Some(n), Some(_)) if header(n) => {
                    out.push(("extra_header", format!("`{n}` is not a valid header name")))
                }
                (Some(_), None) => out.push((
                    "extra_header_value",
                    "extra_header is set without extra_header_value".to_owned(),
                )),
                (None, Some(_)) => out.push((
                    "extra_header",
                    "extra_header_value is set without extra_header".to_owned(),
                )),
                _ => {}
            },
            Self::ApiKey { header: n, .. } if header(n) => {
                out.push(("header", format!("`{n}` is not a valid header name")))
            }
            _ => {}
        }
        if let Self::OAuth2 { token_url, .. } = self {
            let checked = Url::parse(token_url)
                .map_err(|e| e.to_string())
                .and_then(|u| egress::destination(&u).map(drop).map_err(|e| e.to_string()));
            if let Err(e) = checked {
                out.push(("token_url", format!("`{token_url}`: {e}")));
            }
        }
        out
    }

    /// Converts every secret field with `f(field, value)`, e.g. resolving
    /// references into secrets. Stops at the first error.
    pub fn try_map_secrets<T, E>(
        self,
        mut f: impl FnMut(&'static str, S) -> Result<T, E>,
    ) -> Result<Auth<T>, E> {
        Ok(match self {
            Self::OAuth2 {
                token_url,
                client_id,
                client_secret,
                scope,
                client_auth,
                extra_header,
                extra_header_value,
            } => Auth::OAuth2 {
                token_url,
                client_id,
                client_secret: f("client_secret", client_secret)?,
                scope,
                client_auth,
                extra_header,
                extra_header_value: extra_header_value
                    .map(|v| f("extra_header_value", v))
                    .transpose()?,
            },
            Self::Basic {
                username,
                password,
                extra_header,
                extra_header_value,
            } => Auth::Basic {
                username,
                password: f("password", password)?,
                extra_header,
                extra_header_value: extra_header_value
                    .map(|v| f("extra_header_value", v))
                    .transpose()?,
            },
            Self::ApiKey { header, key } => Auth::ApiKey {
                header,
                key: f("key", key)?,
            },
            Self::Bearer { token } => Auth::Bearer {
                token: f("token", token)?,
            },
            Self::SecretUrl { url } => Auth::SecretUrl {
                url: f("url", url)?,
            },
        })
    }
}

/// Why a credential could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// No credential of that name.
    #[error("no credential named `{0}` is bound to this instance")]
    NotFound(String),
    /// The destination is not one the credential is bound to.
    #[error("credential `{name}` is not bound to {dest}")]
    NotBound {
        /// Credential name.
        name: String,
        /// Refused destination.
        dest: String,
    },
    /// The token endpoint refused.
    #[error("token endpoint for `{name}` refused: {reason}")]
    Rejected {
        /// Credential name.
        name: String,
        /// Status and error code.
        reason: String,
    },
    /// The token endpoint could not be used.
    #[error("token endpoint for `{name}` unavailable: {reason}")]
    Unavailable {
        /// Credential name.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

struct Token {
    value: SecretString,
    refresh_at: Instant,
    expires_at_ms: u64,
    scope: Option<String>,
}

struct Credential {
    name: String,
    bound: EgressPolicy,
    hosts: Vec<String>,
    secret: CredentialSecret,
    /// Held across the fetch: concurrent callers wait for one fetch.
    token: tokio::sync::Mutex<Option<Arc<Token>>>,
}

impl Credential {
    fn kind(&self) -> Kind {
        self.secret.kind().into()
    }
}

/// Headers to attach for one request, and the token they carry (to drop it
/// if the upstream answers 401).
pub struct Authorization {
    /// Headers, values marked sensitive.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// For a secret-URL credential, where the request really goes. Never
    /// logged, never in an error.
    pub url: Option<Url>,
    token: Option<Arc<Token>>,
}

/// The credentials of one instance. Built once per instance.
pub struct CredentialsCtx {
    by_name: BTreeMap<String, Credential>,
    client: reqwest::Client,
    policy: Arc<EgressPolicy>,
    /// When cached tokens are due for refresh is read from this clock.
    clock: Clock,
}

fn sensitive(value: &str, what: &str) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| format!("{what} contains characters not allowed in an HTTP header"))?;
    v.set_sensitive(true);
    Ok(v)
}

fn header_name(name: &str, cred: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("credential `{cred}`: `{name}` is not a valid header name"))
}

/// A secret URL must be an absolute http(s) URL without user info on the
/// credential's one, exact host. Errors name the credential, never the URL.
fn check_secret_url(
    name: &str,
    url: &SecretString,
    hosts: &[String],
    bound: &EgressPolicy,
) -> Result<(), String> {
    let fail = |why: &str| Err(format!("credential `{name}`: url: {why}"));
    // `scheme://host[:port]` has two slashes; a CIDR entry has a third.
    if hosts.len() != 1 || hosts[0].contains('*') || hosts[0].matches('/').count() > 2 {
        return fail(
            "a secret-url credential takes exactly one host, without wildcards: the origin of its URL",
        );
    }
    let Ok(parsed) = Url::parse(url.expose_secret()) else {
        return fail("is not an absolute URL");
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return fail("must not carry user info");
    }
    match egress::destination(&parsed) {
        Ok(dest) if bound.allows(&dest) => Ok(()),
        Ok(_) => fail(&format!("is not on the credential's host {}", hosts[0])),
        Err(_) => fail("is not an http or https URL"),
    }
}

/// Whether `url` is what a plugin sends with a secret-URL credential: the
/// host's root, with no query or fragment.
pub fn is_secret_url_placeholder(url: &Url) -> bool {
    url.path() == "/" && url.query().is_none() && url.fragment().is_none()
}

impl CredentialsCtx {
    /// Validates `specs` and builds the context. `client` and `policy` are the
    /// instance's: token requests obey the same egress rules as the plugin's.
    pub fn new(
        specs: Vec<CredentialSpec>,
        client: reqwest::Client,
        policy: Arc<EgressPolicy>,
    ) -> Result<Self, String> {
        let mut by_name = BTreeMap::new();
        for spec in specs {
            let name = spec.name.clone();
            let bound = EgressPolicy::parse(&spec.hosts)
                .map_err(|e| format!("credential `{name}`: hosts: {e}"))?;
            if spec.hosts.is_empty() {
                return Err(format!("credential `{name}` is bound to no hosts"));
            }
            if let Some((field, problem)) = spec.secret.problems().into_iter().next() {
                return Err(format!("credential `{name}`: {field}: {problem}"));
            }
            if let CredentialSecret::SecretUrl { url } = &spec.secret {
                check_secret_url(&name, url, &spec.hosts, &bound)?;
            }
            let cred = Credential {
                name: name.clone(),
                bound,
                hosts: spec.hosts,
                secret: spec.secret,
                token: tokio::sync::Mutex::new(None),
            };
            if by_name.insert(name.clone(), cred).is_some() {
                return Err(format!("credential `{name}` is defined twice"));
            }
        }
        Ok(Self {
            by_name,
            client,
            policy,
            clock: Clock::default(),
        })
    }

    /// The same context, reading token refresh times from `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Names of headers a guest may not set when it names credential `name`.
    pub fn reserved_headers(&self, name: &str) -> Vec<HeaderName> {
        let mut out = vec![AUTHORIZATION];
        if let Some(c) = self.by_name.get(name) {
            let extra = match &c.secret {
                CredentialSecret::ApiKey { header, .. } => Some(header.as_str()),
                other => other.extra_header().map(|(n, _)| n),
            };
            out.extend(extra.and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()));
        }
        out
    }

    /// Returns the headers that authenticate a request to `dest` with
    /// credential `name`, fetching a token if needed.
    pub async fn authorize(
        &self,
        name: &str,
        dest: &Destination,
    ) -> Result<Authorization, CredentialError> {
        let cred = self
            .by_name
            .get(name)
            .ok_or_else(|| CredentialError::NotFound(name.to_owned()))?;
        if !cred.bound.allows(dest) {
            return Err(CredentialError::NotBound {
                name: name.to_owned(),
                dest: dest.to_string(),
            });
        }
        let bad = |reason: String| CredentialError::Unavailable {
            name: name.to_owned(),
            reason,
        };
        let mut headers = Vec::with_capacity(2);
        let mut token = None;
        let mut url = None;
        match &cred.secret {
            CredentialSecret::OAuth2 { .. } => {
                let t = self.token(cred).await?;
                let value = format!("Bearer {}", t.value.expose_secret());
                headers.push((AUTHORIZATION, sensitive(&value, "token").map_err(bad)?));
                token = Some(t);
            }
            CredentialSecret::Basic {
                username, password, ..
            } => {
                use base64::Engine;
                let raw = format!("{username}:{}", password.expose_secret());
                let value = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                );
                headers.push((AUTHORIZATION, sensitive(&value, "password").map_err(bad)?));
            }
            CredentialSecret::ApiKey { header, key } => {
                let hn = header_name(header, name).map_err(bad)?;
                headers.push((hn, sensitive(key.expose_secret(), "API key").map_err(bad)?));
            }
            CredentialSecret::Bearer { token } => {
                let value = format!("Bearer {}", token.expose_secret());
                headers.push((AUTHORIZATION, sensitive(&value, "token").map_err(bad)?));
            }
            // Checked when the context was built.
            CredentialSecret::SecretUrl { url: secret } => {
                url = Url::parse(secret.expose_secret()).ok();
            }
        }
        if let Some((n, v)) = cred.secret.extra_header() {
            let hn = header_name(n, name).map_err(bad)?;
            headers.push((hn, sensitive(v.expose_secret(), n).map_err(bad)?));
        }
        Ok(Authorization {
            headers,
            url,
            token,
        })
    }

    /// Drops the cached token that `auth` carried, if it is still the cached
    /// one; returns whether a retry with a fresh token makes sense.
    pub async fn invalidate(&self, name: &str, auth: &Authorization) -> bool {
        let (Some(cred), Some(used)) = (self.by_name.get(name), &auth.token) else {
            return false;
        };
        let mut slot = cred.token.lock().await;
        if slot.as_ref().is_some_and(|t| Arc::ptr_eq(t, used)) {
            *slot = None;
        }
        true
    }

    async fn token(&self, cred: &Credential) -> Result<Arc<Token>, CredentialError> {
        let mut slot = cred.token.lock().await;
        if let Some(t) = slot.as_ref()
            && self.clock.now() < t.refresh_at
        {
            return Ok(t.clone());
        }
        let fresh = Arc::new(self.fetch_token(cred).await?);
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    async fn fetch_token(&self, cred: &Credential) -> Result<Token, CredentialError> {
        let CredentialSecret::OAuth2 {
            token_url,
            client_id,
            client_secret,
            scope,
            client_auth,
            ..
        } = &cred.secret
        else {
            unreachable!("fetch_token is only called for OAuth2 credentials");
        };
        let name = &cred.name;
        let unavailable = |reason: String| CredentialError::Unavailable {
            name: name.clone(),
            reason,
        };
        // Parsed and checked in `new`; checked against the policy here so
        // that the token endpoint is an egress hop like any other.
        let url = Url::parse(token_url).map_err(|e| unavailable(e.to_string()))?;
        let dest = egress::destination(&url).map_err(|e| unavailable(e.to_string()))?;
        self.policy
            .check(&dest)
            .map_err(|e| unavailable(format!("token URL refused by egress policy: {e}")))?;

        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let mut req = self.client.post(url).timeout(TOKEN_TIMEOUT);
        match client_auth {
            ClientAuth::Basic => {
                req = req.basic_auth(client_id, Some(client_secret.expose_secret()));
            }
            ClientAuth::Body => {
                form.push(("client_id", client_id));
                form.push(("client_secret", client_secret.expose_secret()));
            }
        }
        // On the host's runtime (see `sched::on_host`): the token cache
        // waits on this fetch, whichever tenant's call runs it.
        let send = req
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send();
        let resp = crate::sched::on_host(send)
            .await
            .map_err(|stopped| unavailable(stopped.to_string()))?
            .map_err(|e| unavailable(crate::net::describe_reqwest_error(&e)))?;
        let status = resp.status();
        let body = crate::net::read_capped(resp, MAX_TOKEN_RESPONSE)
            .await
            .map_err(|e| unavailable(format!("reading the token response: {e}")))?;

        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: Option<String>,
            expires_in: Option<serde_json::Value>,
            scope: Option<String>,
            error: Option<String>,
        }
        let parsed: Option<TokenResponse> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            // Only the OAuth error code is echoed: descriptions sometimes
            // repeat what the client sent.
            let code = parsed
                .and_then(|p| p.error)
                .map(|c| format!(" ({})", c.chars().take(64).collect::<String>()))
                .unwrap_or_default();
            let reason = format!("HTTP {}{code}", status.as_u16());
            return Err(if status.is_client_error() {
                CredentialError::Rejected {
                    name: name.clone(),
                    reason,
                }
            } else {
                unavailable(reason)
            });
        }
        let parsed = parsed.ok_or_else(|| unavailable("token response is not JSON".into()))?;
        let value = parsed
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unavailable("token response has no access_token".into()))?;
        // Some servers send expires_in as a string; absent means "unknown",
        // treated as one hour (the common lifetime) so the cache still expires.
        let lifetime = match parsed.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .map_or(Duration::from_secs(3600), Duration::from_secs);
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        tracing::debug!(credential = %name, lifetime_s = lifetime.as_secs(), "fetched OAuth2 token");
        Ok(Token {
            value: SecretString::from(value),
            refresh_at: self.clock.now() + (lifetime - margin),
            expires_at_ms: now_ms + lifetime.as_millis() as u64,
            scope: parsed.scope,
        })
    }
}

/// What a `credentials` call sees.
pub struct CredentialsCtxView<'a> {
    /// The instance's credentials.
    pub ctx: &'a CredentialsCtx,
}

/// Implemented by store data that can hand out a [`CredentialsCtxView`].
pub trait CredentialsView: Send {
    /// Borrows the instance's credentials for one host call.
    fn credentials(&mut self) -> CredentialsCtxView<'_>;
}

impl Host for CredentialsCtxView<'_> {
    async fn list(&mut self) -> wasmtime::Result<Vec<CredentialInfo>> {
        Ok(self
            .ctx
            .by_name
            .values()
            .map(|c| CredentialInfo {
                name: c.name.clone(),
                kind: c.kind(),
                hosts: c.hosts.clone(),
            })
            .collect())
    }

    async fn verify(&mut self, name: String) -> wasmtime::Result<Result<Verification, Error>> {
        let Some(cred) = self.ctx.by_name.get(&name) else {
            return Ok(Err(Error::NotFound(format!(
                "no credential named `{name}` is bound to this instance"
            ))));
        };
        let kind = cred.kind();
        if !matches!(kind, Kind::Oauth2ClientCredentials) {
            return Ok(Ok(Verification {
                kind,
                expires_at_ms: None,
                scope: None,
            }));
        }
        Ok(match self.ctx.token(cred).await {
            Ok(t) => Ok(Verification {
                kind,
                expires_at_ms: Some(t.expires_at_ms),
                scope: t.scope.clone(),
            }),
            Err(e @ CredentialError::Rejected { .. }) => Err(Error::Rejected(e.to_string())),
            Err(e) => Err(Error::Unavailable(e.to_string())),
        })
    }

    async fn placement(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<SecretPlacement, Error>> {
        Ok(match self.ctx.by_name.get(&name) {
            None => Err(Error::NotFound(format!(
                "no credential named `{name}` is bound to this instance"
            ))),
            Some(c) if matches!(c.secret, CredentialSecret::SecretUrl { .. }) => {
                Ok(SecretPlacement::Url)
            }
            Some(_) => Ok(SecretPlacement::Headers),
        })
    }
}

struct HasCredentials;

impl HasData for HasCredentials {
    type Data<'a> = CredentialsCtxView<'a>;
}

/// Adds `switchyard:plugin/credentials` to `linker`.
pub fn add_to_linker<T: CredentialsView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    credentials::add_to_linker::<T, HasCredentials>(linker, T::credentials)
}
