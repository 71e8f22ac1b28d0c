//! Host side of `switchyard:plugin/http`: outbound requests under the
//! instance's egress policy.
//!
//! Checks happen in this order, each failure a typed error to the guest:
//! request budget, URL and scheme ([`egress::destination`]), allowlist,
//! headers, body size, credential binding. The reqwest client is built per
//! instance with a DNS resolver that drops restricted addresses (so the
//! address checked is the address connected to: no DNS-rebinding window),
//! no proxy, no redirects and the instance's extra CA certificates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;
use wasmtime::component::{HasData, Linker};

use crate::bindings::http::{self, Error, Header, Host, Method, Request, Response};
pub use crate::call::EgressRecord;
use crate::call::{CallState, EGRESS_ITEMISED};
use crate::credentials::{CredentialError, CredentialsCtx, is_secret_url_placeholder};
use crate::egress::{self, EgressError, EgressPolicy};
pub use crate::net::{Clients, Lookup, LookupFn};
use crate::net::{ReadError, describe_reqwest_error, find_egress_denial, read_capped};

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
        // A secret-URL credential: the plugin named only the host; the
        // request goes to the secret URL (same origin, so the egress check
        // above and the resolver's address check still hold).
        // What of the secret URL must not reach the guest through the
        // answer (a server that echoes its path, a redirect's Location).
        let mut hidden: Vec<String> = Vec::new();
        let target = match auth.as_ref().and_then(|a| a.url.clone()) {
            Some(secret) => {
                hidden = secret_parts(&secret);
                if !is_secret_url_placeholder(&url) {
                    return Err(Error::InvalidRequest(format!(
                        "credential `{}` is a secret URL: address the request to {dest}/ \
                         (path `/`, no query); the host supplies the rest",
                        req.credential.as_deref().unwrap_or_default()
                    )));
                }
                secret
            }
            None => url,
        };

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
                .request(method(req.method), target.clone())
                .headers(headers)
                .timeout(timeout);
            match &req.body {
                Some(body) => rb = rb.body(body.clone()),
                // A POST, PUT or PATCH without a body still says so:
                // `Content-Length: 0`. Without it some front ends (IIS among
                // them) answer 411, and a plugin may not set the header
                // itself.
                None if matches!(req.method, Method::Post | Method::Put | Method::Patch) => {
                    rb = rb
                        .header(reqwest::header::CONTENT_LENGTH, "0")
                        .body(Vec::new())
                }
                None => {}
            }
            send_on_host(rb)
        };
        let mut resp = send(headers.clone(), timeout).await?;
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
            resp = send(headers, left).await?;
        }
        record.status = Some(resp.status().as_u16());
        let status = resp.status().as_u16();
        if !hidden.is_empty() && resp.status().is_redirection() {
            return Err(Error::Connection(format!(
                "the secret URL answered a redirect ({status}); it is not followed or shown"
            )));
        }
        let resp_headers = resp
            .headers()
            .iter()
            .map(|(k, v)| Header {
                name: k.as_str().to_owned(),
                value: redact_text(&String::from_utf8_lossy(v.as_bytes()), &hidden),
            })
            .collect();
        let left = timeout.saturating_sub(started.elapsed());
        let body =
            match tokio::time::timeout(left, read_capped(resp, limits.http_response_bytes)).await {
                Err(_) => return Err(Error::Timeout),
                Ok(Err(ReadError::TooLarge(limit))) => return Err(Error::TooLarge(limit)),
                Ok(Err(ReadError::Failed(m))) => return Err(Error::Connection(m)),
                Ok(Ok(body)) if hidden.is_empty() => body,
                Ok(Ok(body)) => redact_bytes(body, &hidden),
            };
        Ok(Response {
            status,
            headers: resp_headers,
            body,
        })
    }
}

/// The parts of a secret URL to keep out of what a guest sees: its path
/// (unless `/`), its query, and the path's segments of 8 or more characters
/// (a Slack key on its own).
fn secret_parts(url: &Url) -> Vec<String> {
    let mut out = Vec::new();
    if url.path() != "/" {
        out.push(url.path().to_owned());
    }
    if let Some(q) = url.query().filter(|q| !q.is_empty()) {
        out.push(q.to_owned());
    }
    out.extend(
        url.path_segments()
            .into_iter()
            .flatten()
            .filter(|s| s.len() >= 8)
            .map(str::to_owned),
    );
    // Longest first, so a part inside another is not left half-replaced.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

const REDACTED: &str = "[secret-url]";

fn redact_text(text: &str, hidden: &[String]) -> String {
    hidden
        .iter()
        .fold(text.to_owned(), |t, h| t.replace(h.as_str(), REDACTED))
}

fn redact_bytes(body: Vec<u8>, hidden: &[String]) -> Vec<u8> {
    hidden.iter().fold(body, |b, h| {
        let needle = h.as_bytes();
        if needle.is_empty() || b.len() < needle.len() {
            return b;
        }
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i..].starts_with(needle) {
                out.extend_from_slice(REDACTED.as_bytes());
                i += needle.len();
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    })
}

/// Sends on the host's runtime (see `sched::on_host`): the connection may
/// be pooled and reused by other tenants' calls.
async fn send_on_host(rb: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
    crate::sched::on_host(rb.send())
        .await
        .map_err(|stopped| Error::Connection(stopped.to_string()))?
        .map_err(map_send_error)
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
        let itemised = EGRESS_ITEMISED.min(self.call.limits.http_requests as usize + 1);
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
