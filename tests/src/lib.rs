//! Test support for Switchyard: the guest components built from source,
//! and [`Recorder`], a loopback HTTP server that records every request it
//! receives, so tests can assert exactly what left the host (and that a
//! secret arrived there and nowhere else).
//!
//! ```no_run
//! # async fn t() {
//! let upstream = switchyard_tests::Recorder::start().await;
//! let url = upstream.url("/ok");
//! // ... make the plugin call `url` ...
//! let seen = upstream.requests();
//! # let _ = (url, seen);
//! # }
//! ```
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// Paths of the guest components, built by `build.rs`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string, without `?`.
    pub query: String,
    /// Headers, names lower-case (repeated names joined with `, `).
    pub headers: BTreeMap<String, String>,
    /// Body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The header `name`, if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    tokens_issued: AtomicU64,
    /// Token the protected resource accepts; rotated by `revoke_token`.
    current_token: Mutex<Option<String>>,
    token_lifetime_secs: AtomicU64,
}

/// A loopback HTTP server that records requests. Routes:
/// - `POST /token`: OAuth2 client-credentials endpoint; expects Basic
///   `client:s3cret` (or the same as form fields), issues `tok-N`.
/// - `GET /protected`: 200 only with `Bearer <current token>`, else 401.
/// - `GET /redirect?to=<url>`: 302 to `<url>`.
/// - `GET /slow?ms=N`: answers after N ms.
/// - `GET /big?bytes=N`: N bytes of body.
/// - anything else: 200 `{"ok":true,"path":…}`.
#[derive(Clone)]
pub struct Recorder {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// Client id the token endpoint accepts.
pub const CLIENT_ID: &str = "client";
/// Client secret the token endpoint accepts. Tests search for it elsewhere.
pub const CLIENT_SECRET: &str = "s3cret-9f2b7c";

impl Recorder {
    /// Starts a server on an ephemeral loopback port.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        shared.token_lifetime_secs.store(3600, Ordering::SeqCst);
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, shared }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Requests to `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Tokens issued by `/token`.
    pub fn tokens_issued(&self) -> u64 {
        self.shared.tokens_issued.load(Ordering::SeqCst)
    }

    /// Makes `/protected` refuse the current token (as if it was revoked).
    pub fn revoke_token(&self) {
        *self.shared.current_token.lock().unwrap() = None;
    }

    /// Lifetime of tokens issued from now on.
    pub fn set_token_lifetime(&self, secs: u64) {
        self.shared
            .token_lifetime_secs
            .store(secs, Ordering::SeqCst);
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut hmap = BTreeMap::new();
    for (k, v) in &headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        hmap.entry(k.as_str().to_owned())
            .and_modify(|e: &mut String| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    let rec = Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        headers: hmap,
        body: body.to_vec(),
    };
    shared.requests.lock().unwrap().push(rec.clone());
    let q = rec.query.as_str();
    match rec.path.as_str() {
        "/token" => token(&shared, &rec).await,
        "/protected" => {
            let current = shared.current_token.lock().unwrap().clone();
            let sent = rec.header("authorization").unwrap_or_default();
            match current {
                Some(t) if sent == format!("Bearer {t}") => {
                    (StatusCode::OK, r#"{"protected":true}"#).into_response()
                }
                _ => (StatusCode::UNAUTHORIZED, r#"{"error":"invalid_token"}"#).into_response(),
            }
        }
        "/redirect" => {
            let to = percent_decode(query_param(q, "to").unwrap_or("/"));
            (StatusCode::FOUND, [("location", to)]).into_response()
        }
        "/slow" => {
            let ms = query_param(q, "ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (StatusCode::OK, "slow").into_response()
        }
        "/status" => {
            let code = query_param(q, "code")
                .and_then(|v| v.parse().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::OK);
            (code, "as asked").into_response()
        }
        "/big" => {
            let n = query_param(q, "bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1 << 20);
            (StatusCode::OK, vec![b'b'; n]).into_response()
        }
        path => (
            StatusCode::OK,
            [("content-type", "application/json")],
            serde_json::json!({ "ok": true, "path": path }).to_string(),
        )
            .into_response(),
    }
}

async fn token(shared: &Shared, rec: &Recorded) -> Response {
    use base64::Engine;
    let form = String::from_utf8_lossy(&rec.body).into_owned();
    let expected_basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let basic_ok = rec.header("authorization") == Some(expected_basic.as_str());
    let body_ok = query_param(&form, "client_id") == Some(CLIENT_ID)
        && query_param(&form, "client_secret")
            .map(percent_decode)
            .as_deref()
            == Some(CLIENT_SECRET);
    if query_param(&form, "grant_type") != Some("client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            r#"{"error":"unsupported_grant_type"}"#,
        )
            .into_response();
    }
    if !(basic_ok || body_ok) {
        return (StatusCode::UNAUTHORIZED, r#"{"error":"invalid_client"}"#).into_response();
    }
    // Slow enough that concurrent callers overlap: single flight is visible.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let n = shared.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
    let tok = format!("tok-{n}");
    *shared.current_token.lock().unwrap() = Some(tok.clone());
    let lifetime = shared.token_lifetime_secs.load(Ordering::SeqCst);
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        serde_json::json!({
            "access_token": tok,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": query_param(&form, "scope").map(percent_decode),
        })
        .to_string(),
    )
        .into_response()
}

/// Whether a benchmark of `tests/benches` runs in its short form: under
/// `cargo test --benches` (which passes no `--bench`, only smoke-testing
/// it) or with `--quick`; `cargo bench` runs it in full.
pub fn bench_is_quick() -> bool {
    std::env::args().any(|a| a == "--quick") || !std::env::args().any(|a| a == "--bench")
}

/// The runtime a benchmark drives the host from: two workers, as many as
/// the cores of the machine the figures in the README come from.
pub fn bench_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the benchmark's tokio runtime")
}

/// A copy of a component with the patchable slot `marker` (e.g. `SY-ID`,
/// `SY-VERSION`, `SY-MANIFEST` of the hostile guest) set to `value`.
///
/// Panics if the slot is not found exactly once or the value does not fit.
pub fn patch_slot(wasm: &[u8], marker: &str, value: &str) -> Vec<u8> {
    const SLOT: usize = 64;
    let tag = format!("@@{marker}@@");
    let at: Vec<usize> = wasm
        .windows(tag.len())
        .enumerate()
        .filter(|(_, w)| *w == tag.as_bytes())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "slot {tag} found {} times", at.len());
    let start = at[0] + tag.len();
    let room = SLOT - tag.len();
    assert!(value.len() <= room, "`{value}` does not fit slot {tag}");
    let mut out = wasm.to_vec();
    out[start..start + room].fill(b' ');
    out[start..start + value.len()].copy_from_slice(value.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes_percent_and_plus() {
        assert_eq!(percent_decode("a%2Fb+c%3D"), "a/b c=");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
    }
}
