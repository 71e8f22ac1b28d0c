//! What every simulator shares: a loopback server, a log of the requests it
//! received, and fault injection per endpoint.
//!
//! Both are reachable two ways: from Rust (tests hold the [`Control`]) and
//! over HTTP under `/_sim/` (for the standalone binary and the demo):
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /_sim/requests` | every request received, oldest first (`/_sim/` ones excluded) |
//! | `DELETE /_sim/requests` | forget them |
//! | `POST /_sim/faults` | add a [`Fault`] (JSON) |
//! | `DELETE /_sim/faults` | clear all faults |
//! | `POST /_sim/expire-tokens` | expire every issued token now (simulators with a token endpoint) |
//! | `GET /_sim/state` | the simulator's own state (what it was told to do) |

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Largest request body a simulator accepts (the real systems cap lower).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// One request as the simulator received it.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path, as sent (before any case folding).
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Headers, names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Body (base64 in the JSON form, since it may be binary).
    #[serde(serialize_with = "as_base64")]
    pub body: Vec<u8>,
}

fn as_base64<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The decoded query parameters.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect()
    }

    /// Query parameter `name`.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The body parsed as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What a fault does to a matching request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Waits this long, then answers normally.
    Latency {
        /// Delay in milliseconds.
        ms: u64,
    },
    /// Answers with this status and the system's own error body.
    Status {
        /// HTTP status.
        status: u16,
        /// Error message (a generic one if absent).
        #[serde(default)]
        message: Option<String>,
    },
    /// Answers the system's rate-limit response (429 with its headers).
    RateLimit {
        /// Seconds the client is told to wait.
        retry_after_secs: u64,
    },
    /// Answers 200 with a body cut off in the middle.
    Malformed,
    /// Sends the status line and headers, then drops the connection.
    Reset,
    /// Handles the request normally (what it writes stays written), then
    /// drops the connection instead of answering: the client cannot tell
    /// whether its request took effect.
    LostAnswer,
    /// Handles the request normally (what it writes stays written), then
    /// waits this long before answering: a window in which a client can be
    /// killed after its request took effect and before it heard so.
    SlowAnswer {
        /// Delay in milliseconds.
        ms: u64,
    },
}

/// A fault injected on the requests that match it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Only this method (any if absent).
    #[serde(default)]
    pub method: Option<String>,
    /// Path prefix to match, compared case-insensitively (`/` matches all).
    pub path: String,
    /// How many matching requests it affects (every one if absent).
    #[serde(default)]
    pub times: Option<u32>,
    /// What happens.
    #[serde(flatten)]
    pub kind: FaultKind,
}

impl Fault {
    /// A fault on every request whose path starts with `path`.
    pub fn on(path: impl Into<String>, kind: FaultKind) -> Self {
        Self {
            method: None,
            path: path.into(),
            times: None,
            kind,
        }
    }

    /// Limits the fault to the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Limits the fault to one method.
    pub fn method(mut self, m: &str) -> Self {
        self.method = Some(m.to_owned());
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
            && path
                .to_ascii_lowercase()
                .starts_with(&self.path.to_ascii_lowercase())
    }
}

/// How one system words its errors; each simulator implements it so that
/// injected faults look like that system's own answers.
pub trait Flavor: Send + Sync + 'static {
    /// An error response in the system's shape.
    fn error(&self, status: StatusCode, message: &str) -> Response;
    /// The system's rate-limit answer.
    fn rate_limited(&self, retry_after_secs: u64) -> Response;
    /// A 200 whose body is cut off (the system's content type, broken).
    fn malformed(&self) -> Response;
}

/// A 200 `application/json` answer whose body stops at `prefix` — the
/// usual [`Flavor::malformed`].
pub fn cut_json(prefix: &'static str) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        prefix,
    )
        .into_response()
}

/// Adds `Retry-After: secs` to an answer.
pub fn with_retry_after(mut r: Response, secs: u64) -> Response {
    r.headers_mut()
        .insert("retry-after", axum::http::HeaderValue::from(secs));
    r
}

/// The request log and the fault list of one simulator.
#[derive(Default)]
pub struct Control {
    requests: Mutex<Vec<Recorded>>,
    faults: Mutex<Vec<Fault>>,
    expire: Mutex<Option<Arc<Tokens>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Control {
    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.requests).clone()
    }

    /// The requests whose path contains `fragment` (case-insensitive).
    pub fn requests_to(&self, fragment: &str) -> Vec<Recorded> {
        let f = fragment.to_ascii_lowercase();
        lock(&self.requests)
            .iter()
            .filter(|r| r.path.to_ascii_lowercase().contains(&f))
            .cloned()
            .collect()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        lock(&self.requests).clear();
    }

    /// Adds a fault.
    pub fn inject(&self, fault: Fault) {
        lock(&self.faults).push(fault);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    /// Lets `POST /_sim/expire-tokens` expire these tokens.
    pub fn expires(&self, tokens: Arc<Tokens>) {
        *lock(&self.expire) = Some(tokens);
    }

    /// Expires every issued token now; false if there are none to expire.
    pub fn expire_tokens(&self) -> bool {
        match &*lock(&self.expire) {
            Some(t) => {
                t.expire_all();
                true
            }
            None => false,
        }
    }

    /// The first live fault matching the request; consumes one of its uses.
    fn take_fault(&self, method: &Method, path: &str) -> Option<FaultKind> {
        let mut faults = lock(&self.faults);
        let i = faults.iter().position(|f| f.matches(method, path))?;
        let kind = faults[i].kind.clone();
        if let Some(n) = &mut faults[i].times {
            *n -= 1;
            if *n == 0 {
                faults.remove(i);
            }
        }
        Some(kind)
    }
}

#[derive(Clone)]
struct Layer {
    control: Arc<Control>,
    flavor: Arc<dyn Flavor>,
}

/// Records each request and applies faults before the simulator sees it.
async fn record_and_fault(State(l): State<Layer>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/_sim/") {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return l
            .flavor
            .error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    };
    lock(&l.control.requests).push(Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: bytes.to_vec(),
    });
    let mut lose_answer = false;
    let mut answer_after = None;
    match l.control.take_fault(&parts.method, parts.uri.path()) {
        None => {}
        Some(FaultKind::Latency { ms }) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Some(FaultKind::LostAnswer) => lose_answer = true,
        Some(FaultKind::SlowAnswer { ms }) => answer_after = Some(Duration::from_millis(ms)),
        Some(FaultKind::Status { status, message }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = message.unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("injected failure")
                    .to_owned()
            });
            return l.flavor.error(status, &message);
        }
        Some(FaultKind::RateLimit { retry_after_secs }) => {
            return l.flavor.rate_limited(retry_after_secs);
        }
        Some(FaultKind::Malformed) => return l.flavor.malformed(),
        Some(FaultKind::Reset) => return reset(),
    }
    let answer = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if lose_answer {
        return reset();
    }
    if let Some(wait) = answer_after {
        tokio::time::sleep(wait).await;
    }
    answer
}

/// A 200 whose body fails after the headers: hyper aborts the connection,
/// and the client sees it closed mid-response.
fn reset() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected connection reset",
        ))
    });
    Response::new(Body::from_stream(stream))
}

/// Adds the `/_sim/` endpoints and the recording/fault layer to a
/// simulator's router. `state` is what `GET /_sim/state` returns.
pub fn instrument(
    router: Router,
    control: Arc<Control>,
    flavor: Arc<dyn Flavor>,
    state: impl Fn() -> Value + Send + Sync + 'static,
) -> Router {
    let c = control.clone();
    let c2 = control.clone();
    let c3 = control.clone();
    let c4 = control.clone();
    let c5 = control.clone();
    let state = Arc::new(state);
    router
        .route(
            "/_sim/requests",
            get(move || async move { axum::Json(c.requests()) }).delete(move || async move {
                c2.clear_requests();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/_sim/faults",
            axum::routing::post(move |body: Bytes| async move {
                match serde_json::from_slice::<Fault>(&body) {
                    Ok(f) => {
                        c3.inject(f);
                        StatusCode::NO_CONTENT.into_response()
                    }
                    Err(e) => (
                        StatusCode::BAD_REQUEST,
                        axum::Json(json!({"error": format!("fault: {e}")})),
                    )
                        .into_response(),
                }
            })
            .delete(move || async move {
                c4.clear_faults();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/_sim/expire-tokens",
            axum::routing::post(move || async move {
                if c5.expire_tokens() {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::NOT_FOUND
                }
            }),
        )
        .route(
            "/_sim/state",
            get(move || {
                let state = state.clone();
                async move { axum::Json(state()) }
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            Layer { control, flavor },
            record_and_fault,
        ))
}

/// A simulator serving on a loopback port until dropped.
pub struct SimServer {
    addr: SocketAddr,
    tls: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A TCP listener that completes a TLS handshake before it hands a
/// connection over (a client that refuses the certificate never gets one).
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, peer)) = self.tcp.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let handshake = self.acceptor.accept(tcp);
            if let Ok(Ok(tls)) =
                tokio::time::timeout(std::time::Duration::from_secs(5), handshake).await
            {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

impl SimServer {
    /// Serves `router` on `addr` (port 0 picks a free one).
    pub async fn start(router: Router, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
        });
        Ok(Self {
            addr,
            tls: false,
            stop: Some(tx),
        })
    }

    /// Serves `router` over HTTPS on `addr` with a certificate chain and
    /// key in PEM (say, a leaf signed by a private CA).
    pub async fn start_tls(
        router: Router,
        addr: SocketAddr,
        cert_pem: &str,
        key_pem: &str,
    ) -> std::io::Result<Self> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("certificate PEM: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| bad(format!("key PEM: {e}")))?;
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(e.to_string()))?;
        let tcp = tokio::net::TcpListener::bind(addr).await?;
        let addr = tcp.local_addr()?;
        let listener = TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router.into_make_service())
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            tls: true,
            stop: Some(tx),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (`https://` when it serves TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A loopback address with a free port.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The credentials in an `Authorization: Basic` header.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// The token in an `Authorization: Bearer` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim().to_owned())
}

/// A random token of `len` alphanumeric characters.
pub fn random_token(len: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(len)
        .collect()
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Issued bearer tokens with their expiry, shared by the simulators that
/// run an OAuth2 token endpoint.
#[derive(Default)]
pub struct Tokens {
    issued: Mutex<Vec<(String, String, i64)>>,
}

impl Tokens {
    /// Issues a token for `client` valid `lifetime_secs`; keeps at most
    /// `max_live` live tokens per client, invalidating the oldest.
    pub fn issue(&self, client: &str, lifetime_secs: i64, max_live: Option<usize>) -> String {
        let token = random_token(40);
        let mut issued = lock(&self.issued);
        let now = now_secs();
        issued.retain(|(_, _, exp)| *exp > now);
        issued.push((token.clone(), client.to_owned(), now + lifetime_secs));
        if let Some(max) = max_live {
            let mine: Vec<usize> = issued
                .iter()
                .enumerate()
                .filter(|(_, (_, c, _))| c == client)
                .map(|(i, _)| i)
                .collect();
            if mine.len() > max {
                let drop: Vec<usize> = mine[..mine.len() - max].to_vec();
                let mut i = 0;
                issued.retain(|_| {
                    let keep = !drop.contains(&i);
                    i += 1;
                    keep
                });
            }
        }
        token
    }

    /// The client a live token belongs to.
    pub fn check(&self, token: &str) -> Option<String> {
        let now = now_secs();
        lock(&self.issued)
            .iter()
            .find(|(t, _, exp)| t == token && *exp > now)
            .map(|(_, c, _)| c.clone())
    }

    /// Expires every token now (the "token expiry" fault).
    pub fn expire_all(&self) {
        lock(&self.issued).clear();
    }

    /// How many tokens are live.
    pub fn live(&self) -> usize {
        let now = now_secs();
        lock(&self.issued)
            .iter()
            .filter(|(_, _, e)| *e > now)
            .count()
    }
}

/// A fixed-window rate limiter: `limit` requests per `window_secs`.
pub struct RateLimit {
    /// Requests allowed per window.
    pub limit: u32,
    /// Window length in seconds.
    pub window_secs: i64,
    state: Mutex<(i64, u32)>,
}

impl RateLimit {
    /// A limiter.
    pub fn new(limit: u32, window_secs: i64) -> Self {
        Self {
            limit,
            window_secs,
            state: Mutex::new((0, 0)),
        }
    }

    /// Counts one request: `Ok(remaining)` or `Err(seconds until reset)`.
    /// Either way also returns the window's reset time (epoch seconds).
    pub fn hit(&self) -> (Result<u32, i64>, i64) {
        let now = now_secs();
        let mut s = lock(&self.state);
        // The window opens at the first request after the last one closed,
        // so a burst is never split across two windows by the clock.
        if now >= s.0 + self.window_secs {
            *s = (now, 0);
        }
        let reset = s.0 + self.window_secs;
        if s.1 >= self.limit {
            return (Err((reset - now).max(1)), reset);
        }
        s.1 += 1;
        (Ok(self.limit - s.1), reset)
    }
}

/// Locks a simulator's state (a poisoned lock is still usable: every
/// handler leaves the state consistent before it can panic).
pub fn state<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    lock(m)
}

/// A person of the seeded organisation. Every simulator names person `i`
/// the same way, so the UEM device user, the ServiceNow caller and the
/// remote-support customer of one seed line up by email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Person {
    /// `given.family` (plus the index past the first 144).
    pub user_name: String,
    /// Given name, capitalised.
    pub first_name: String,
    /// Family name, capitalised.
    pub last_name: String,
    /// `user_name@acme.example`.
    pub email: String,
}

const GIVEN: &[&str] = &[
    "ada", "alan", "grace", "linus", "ken", "barbara", "edsger", "donald", "frances", "john",
    "margaret", "dennis",
];
const FAMILY: &[&str] = &[
    "lovelace", "turing", "hopper", "torvalds", "thompson", "liskov", "dijkstra", "knuth", "allen",
    "backus", "hamilton", "ritchie",
];

/// Person number `i` of every seed.
pub fn person(i: usize) -> Person {
    let given = GIVEN[i % GIVEN.len()];
    let family = FAMILY[(i / GIVEN.len() + i) % FAMILY.len()];
    let user_name = if i < GIVEN.len() * FAMILY.len() {
        format!("{given}.{family}")
    } else {
        format!("{given}.{family}{i}")
    };
    let cap = |s: &str| s[..1].to_uppercase() + &s[1..];
    Person {
        email: format!("{user_name}@acme.example"),
        user_name,
        first_name: cap(given),
        last_name: cap(family),
    }
}
