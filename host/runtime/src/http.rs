//! Host side of `switchyard:plugin/http`: outbound requests under the
//! instance's egress policy.
//!
//! Checks happen in this order, each failure a typed error to the guest:
//! request budget, URL and scheme ([`egress::destination`]), allowlist,
//! headers, body size, credential binding. The reqwest client is built per
//! instance with a DNS resolver that drops restricted addresses (so the
//! address checked is the address connected to: no DNS-rebinding window),
//! no proxy, no redirects and the instance's extra CA certificates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use url::Url;
use wasmtime::component::{HasData, Linker};

use crate::bindings::http::{self, Error, Header, Host, Method, Request, Response};
use crate::credentials::{CredentialError, CredentialsCtx};
use crate::egress::{self, EgressError, EgressPolicy};
use crate::state::CallState;

/// Headers a guest may send at most.
const MAX_HEADERS: usize = 100;

/// Headers a guest may never set: they would let it pick another virtual
/// host on an allowed address or desynchronise message framing.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
    "keep-alive",
];

/// One outbound request, as the audit log records it: never bodies, query
/// strings or headers, which may carry personal data or secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressRecord {
    /// HTTP method.
    pub method: String,
    /// `scheme://host:port`, or the raw URL's start when it did not parse.
    pub destination: String,
    /// URL path.
    pub path: String,
    /// Upstream status, when there was an answer.
    pub status: Option<u16>,
    /// Time taken.
    pub duration_ms: u64,
    /// `ok` (answered 1xx-3xx), `rate-limited` (429), `client-error`
    /// (4xx), `server-error` (5xx), `denied`, or the error kind.
    pub outcome: String,
}

/// How host names become addresses: the system resolver, or (in tests) a
/// function that answers for names no DNS knows. Whatever answers, the
/// egress policy checks every address it returns.
#[derive(Clone, Default)]
pub enum Lookup {
    /// `getaddrinfo`, through tokio.
    #[default]
    System,
    /// A fixed answer per name.
    Custom(Arc<LookupFn>),
}

/// A name lookup: the addresses of a host name.
pub type LookupFn = dyn Fn(&str) -> std::io::Result<Vec<std::net::IpAddr>> + Send + Sync;

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::System => "Lookup::System",
            Self::Custom(_) => "Lookup::Custom",
        })
    }
}

impl Lookup {
    async fn resolve(&self, host: &str) -> std::io::Result<Vec<SocketAddr>> {
        match self {
            Self::System => Ok(tokio::net::lookup_host((host, 0)).await?.collect()),
            Self::Custom(f) => Ok(f(host)?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect()),
        }
    }
}

/// What a client's connections depend on: instances whose clients agree on
/// these may share a client (and its connection pool and TLS roots).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    /// SHA-256 of the extra CA certificates (none: the empty digest).
    cas: [u8; 32],
    /// The egress entries that decide which restricted addresses a name may
    /// resolve to: empty when the policy has no IP/CIDR entry (no restricted
    /// address is ever allowed), else every entry. A connection opened for a
    /// tenant that may reach a private address is thereby never pooled with
    /// one of a tenant that may not.
    restricted: Vec<String>,
}

/// The daemon's HTTP clients, one per distinct [`ClientKey`]: the system's
/// root certificates are loaded once per CA set instead of once per
/// instance, and instances that resolve alike share connection pools.
#[derive(Default)]
pub struct Clients {
    lookup: Lookup,
    built: std::sync::Mutex<std::collections::HashMap<ClientKey, reqwest::Client>>,
}

impl Clients {
    /// Clients that resolve names with `lookup`.
    pub fn new(lookup: Lookup) -> Self {
        Self {
            lookup,
            built: Default::default(),
        }
    }

    /// The client for an instance with `policy` and `extra_ca_pem`.
    pub fn client(
        &self,
        policy: &EgressPolicy,
        extra_ca_pem: &[String],
    ) -> Result<reqwest::Client, String> {
        use sha2::{Digest, Sha256};
        let mut cas = Sha256::new();
        for pem in extra_ca_pem {
            cas.update((pem.len() as u64).to_le_bytes());
            cas.update(pem.as_bytes());
        }
        let restricted = if policy.has_ip_rules() {
            let mut r: Vec<String> = policy.rules().iter().map(ToString::to_string).collect();
            r.sort();
            r
        } else {
            Vec::new()
        };
        let key = ClientKey {
            cas: cas.finalize().into(),
            restricted,
        };
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = built.get(&key) {
            return Ok(c.clone());
        }
        let resolving = EgressPolicy::parse(&key.restricted).map_err(|e| format!("egress: {e}"))?;
        let client = build_client(resolving, extra_ca_pem, self.lookup.clone())?;
        built.insert(key, client.clone());
        Ok(client)
    }

    /// Distinct clients built so far.
    pub fn len(&self) -> usize {
        self.built.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none was built yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A client whose resolver keeps only addresses `resolving` allows, with no
/// proxy, no redirects, and `extra_ca_pem` trusted besides the system's
/// roots.
fn build_client(
    resolving: EgressPolicy,
    extra_ca_pem: &[String],
    lookup: Lookup,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(PolicyResolver {
            policy: Arc::new(resolving),
            lookup,
        }))
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")));
    for (i, pem) in extra_ca_pem.iter().enumerate() {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| format!("CA certificate #{}: {e}", i + 1))?;
        if certs.is_empty() {
            return Err(format!(
                "CA certificate #{}: no PEM certificate found",
                i + 1
            ));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// Outbound HTTP for one instance. Built once per instance.
pub struct HttpCtx {
    client: reqwest::Client,
    policy: Arc<EgressPolicy>,
}

impl HttpCtx {
    /// The instance's HTTP context: its policy, and a client from
    /// [`Clients`] (shared with every instance that resolves alike and
    /// trusts the same CAs).
    pub fn new(policy: Arc<EgressPolicy>, client: reqwest::Client) -> Self {
        Self { client, policy }
    }

    /// The instance's client (shared with the credentials context).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

/// Resolves names and keeps only addresses the policy allows.
struct PolicyResolver {
    policy: Arc<EgressPolicy>,
    lookup: Lookup,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let lookup = self.lookup.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs = lookup.resolve(&host).await?;
            let mut allowed: Vec<SocketAddr> = Vec::new();
            let mut refusal = None;
            for addr in addrs {
                match policy.check_resolved(&host, addr.ip()) {
                    Ok(()) => allowed.push(addr),
                    Err(e) => refusal = Some(e),
                }
            }
            if allowed.is_empty() {
                let err = refusal.unwrap_or_else(|| {
                    EgressError::Denied(format!("{host} resolved to no address"))
                });
                let err = match err {
                    EgressError::Denied(m) => EgressError::Denied(format!("{host}: {m}")),
                    other => other,
                };
                return Err(Box::new(err) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Describes a reqwest error by its kind and innermost cause, without the
/// URL (which may carry a token in its query).
pub(crate) fn describe_reqwest_error(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let kind = if e.is_connect() {
        "connect failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "reading the body failed"
    } else {
        "request failed"
    };
    if std::ptr::addr_eq(cause, e as &dyn std::error::Error) {
        kind.to_owned()
    } else {
        format!("{kind}: {cause}")
    }
}

fn find_egress_denial(e: &reqwest::Error) -> Option<String> {
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        if let Some(EgressError::Denied(m)) = c.downcast_ref::<EgressError>() {
            return Some(m.clone());
        }
        cause = c.source();
    }
    None
}

/// Why reading a body stopped.
#[derive(Debug)]
pub(crate) enum ReadError {
    TooLarge(u64),
    Failed(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge(limit) => write!(f, "body exceeds {limit} bytes"),
            Self::Failed(m) => f.write_str(m),
        }
    }
}

/// Reads a response body, stopping as soon as it exceeds `limit` bytes.
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge(limit as u64));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ReadError::Failed(describe_reqwest_error(&e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge(limit as u64));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn method(m: Method) -> reqwest::Method {
    match m {
        Method::Get => reqwest::Method::GET,
        Method::Head => reqwest::Method::HEAD,
        Method::Post => reqwest::Method::POST,
        Method::Put => reqwest::Method::PUT,
        Method::Patch => reqwest::Method::PATCH,
        Method::Delete => reqwest::Method::DELETE,
        Method::Options => reqwest::Method::OPTIONS,
    }
}

fn guest_headers(headers: Vec<Header>) -> Result<HeaderMap, Error> {
    if headers.len() > MAX_HEADERS {
        return Err(Error::InvalidRequest(format!(
            "{} headers; at most {MAX_HEADERS} are allowed",
            headers.len()
        )));
    }
    let mut map = HeaderMap::with_capacity(headers.len());
    for h in headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| Error::InvalidRequest(format!("invalid header name `{}`", h.name)))?;
        if FORBIDDEN_HEADERS.contains(&name.as_str()) {
            return Err(Error::InvalidRequest(format!(
                "header `{name}` is set by the host and may not be sent by a plugin"
            )));
        }
        let value = HeaderValue::from_str(&h.value)
            .map_err(|_| Error::InvalidRequest(format!("invalid value for header `{name}`")))?;
        map.append(name, value);
    }
    Ok(map)
}

/// What an `http` call sees.
pub struct HttpCtxView<'a> {
    /// The instance's HTTP client and policy.
    pub ctx: &'a HttpCtx,
    /// The instance's credentials.
    pub credentials: &'a CredentialsCtx,
    /// Per-invocation budget, deadline and audit records.
    pub call: &'a mut CallState,
}

/// Implemented by store data that can hand out an [`HttpCtxView`].
pub trait HttpView: Send {
    /// Borrows what one `http` call needs.
    fn http(&mut self) -> HttpCtxView<'_>;
}

impl HttpCtxView<'_> {
    async fn send_checked(
        &mut self,
        req: Request,
        record: &mut EgressRecord,
    ) -> Result<Response, Error> {
        let limits = self.call.limits;
        if self.call.http_requests >= limits.http_requests {
            return Err(Error::LimitExceeded(format!(
                "this invocation already sent {} requests, its limit",
                limits.http_requests
            )));
        }
        self.call.http_requests += 1;

        let url =
            Url::parse(&req.url).map_err(|e| Error::InvalidRequest(format!("invalid URL: {e}")))?;
        let dest = egress::destination(&url).map_err(|e| match e {
            EgressError::Invalid(m) => Error::InvalidRequest(m),
            EgressError::Denied(m) => Error::Denied(m),
        })?;
        record.destination = dest.to_string();
        record.path = url.path().to_owned();
        self.ctx
            .policy
            .check(&dest)
            .map_err(|e| Error::Denied(e.to_string()))?;

        let mut headers = guest_headers(req.headers)?;
        if let Some(body) = &req.body
            && body.len() > limits.http_request_bytes
        {
            return Err(Error::TooLarge(limits.http_request_bytes as u64));
        }
        let auth = match &req.credential {
            None => None,
            Some(name) => {
                for reserved in self.credentials.reserved_headers(name) {
                    if headers.contains_key(&reserved) {
                        return Err(Error::InvalidRequest(format!(
                            "header `{reserved}` may not be set on a request that names \
                             credential `{name}`; the host sets it"
                        )));
                    }
                }
                Some(
                    self.credentials
                        .authorize(name, &dest)
                        .await
                        .map_err(|e| Error::Credential(e.to_string()))?,
                )
            }
        };
        if let Some(auth) = &auth {
            for (k, v) in &auth.headers {
                headers.insert(k.clone(), v.clone());
            }
        }

        let left = self.call.deadline.saturating_duration_since(Instant::now());
        let timeout = req
            .timeout_ms
            .map_or(limits.http_timeout, |ms| Duration::from_millis(ms.into()))
            .min(limits.http_timeout)
            .min(left);
        if timeout.is_zero() {
            return Err(Error::Timeout);
        }
        let started = Instant::now();
        let send = |headers: HeaderMap, timeout: Duration| {
            let mut rb = self
                .ctx
                .client
                .request(method(req.method), url.clone())
                .headers(headers)
                .timeout(timeout);
            if let Some(body) = &req.body {
                rb = rb.body(body.clone());
            }
            rb.send()
        };
        let mut resp = send(headers.clone(), timeout)
            .await
            .map_err(map_send_error)?;
        // One retry with a fresh token when an OAuth2 token was refused: it
        // may have been revoked or rotated before its stated expiry.
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED
            && let (Some(name), Some(auth)) = (&req.credential, &auth)
            && self.credentials.invalidate(name, auth).await
        {
            let fresh = self
                .credentials
                .authorize(name, &dest)
                .await
                .map_err(|e: CredentialError| Error::Credential(e.to_string()))?;
            for (k, v) in fresh.headers {
                headers.insert(k, v);
            }
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(Error::Timeout);
            }
            resp = send(headers, left).await.map_err(map_send_error)?;
        }
        record.status = Some(resp.status().as_u16());
        let status = resp.status().as_u16();
        let resp_headers = resp
            .headers()
            .iter()
            .map(|(k, v)| Header {
                name: k.as_str().to_owned(),
                value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
            })
            .collect();
        let left = timeout.saturating_sub(started.elapsed());
        let body =
            match tokio::time::timeout(left, read_capped(resp, limits.http_response_bytes)).await {
                Err(_) => return Err(Error::Timeout),
                Ok(Err(ReadError::TooLarge(limit))) => return Err(Error::TooLarge(limit)),
                Ok(Err(ReadError::Failed(m))) => return Err(Error::Connection(m)),
                Ok(Ok(body)) => body,
            };
        Ok(Response {
            status,
            headers: resp_headers,
            body,
        })
    }
}

fn map_send_error(e: reqwest::Error) -> Error {
    if let Some(m) = find_egress_denial(&e) {
        return Error::Denied(m);
    }
    if e.is_timeout() {
        return Error::Timeout;
    }
    Error::Connection(describe_reqwest_error(&e))
}

/// How an answered request went, for metrics: an upstream's refusal is not
/// an `ok`, even though the request itself worked.
fn status_outcome(status: u16) -> &'static str {
    match status {
        429 => "rate-limited",
        400..=499 => "client-error",
        500..=599 => "server-error",
        _ => "ok",
    }
}

fn outcome_name(e: &Error) -> &'static str {
    match e {
        Error::Denied(_) => "denied",
        Error::InvalidRequest(_) => "invalid-request",
        Error::Credential(_) => "credential",
        Error::Timeout => "timeout",
        Error::Connection(_) => "connection",
        Error::TooLarge(_) => "too-large",
        Error::LimitExceeded(_) => "limit-exceeded",
    }
}

impl Host for HttpCtxView<'_> {
    async fn send(&mut self, req: Request) -> wasmtime::Result<Result<Response, Error>> {
        let started = Instant::now();
        let mut record = EgressRecord {
            method: method(req.method).to_string(),
            destination: req.url.chars().take(64).collect(),
            path: String::new(),
            status: None,
            duration_ms: 0,
            outcome: String::new(),
        };
        // Before parsing, the raw URL may carry a query with secrets; keep
        // only what precedes it in the record.
        if let Some(i) = record.destination.find(['?', '#']) {
            record.destination.truncate(i);
        }
        let result = self.send_checked(req, &mut record).await;
        record.duration_ms = started.elapsed().as_millis() as u64;
        record.outcome = match &result {
            Ok(r) => status_outcome(r.status).to_owned(),
            Err(e) => outcome_name(e).to_owned(),
        };
        tracing::debug!(
            tenant = %self.call.tenant,
            instance = %self.call.instance,
            request_id = %self.call.request_id,
            method = %record.method,
            destination = %record.destination,
            path = %record.path,
            status = ?record.status,
            outcome = %record.outcome,
            duration_ms = record.duration_ms,
            "egress"
        );
        // Bounded whatever the request budget: past the itemised records a
        // request is only counted, so a job making many thousands of
        // requests (or a guest looping past its budget) holds a fixed
        // amount of memory.
        let itemised =
            crate::instance::EGRESS_ITEMISED.min(self.call.limits.http_requests as usize + 1);
        if self.call.egress.len() < itemised {
            self.call.egress.push(record);
        } else {
            *self.call.egress_omitted.entry(record.outcome).or_default() += 1;
        }
        if matches!(result, Err(Error::Timeout)) && Instant::now() >= self.call.deadline {
            return Err(wasmtime::Error::new(crate::limits::DeadlineReached));
        }
        Ok(result)
    }
}

struct HasHttp;

impl HasData for HasHttp {
    type Data<'a> = HttpCtxView<'a>;
}

/// Adds `switchyard:plugin/http` to `linker`.
pub fn add_to_linker<T: HttpView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    http::add_to_linker::<T, HasHttp>(linker, T::http)
}
