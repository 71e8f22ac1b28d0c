//! Outbound HTTP through the host.
//!
//! The host checks every request against the instance's egress policy and
//! never follows redirects; [`Request::send_following_redirects`] follows
//! them here, one checked request per hop, and drops the credential when a
//! hop leaves the original origin.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::switchyard::plugin::http as wit;
pub use wit::{Error, Header, Method};

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        })
    }
}

impl From<Error> for crate::Error {
    fn from(e: Error) -> Self {
        let message = match e {
            Error::Denied(m) => format!("egress denied: {m}"),
            Error::InvalidRequest(m) => return crate::Error::Internal(format!("bad request: {m}")),
            Error::Credential(m) => format!("credential: {m}"),
            Error::Timeout => "the upstream did not answer in time".into(),
            Error::Connection(m) => format!("connection: {m}"),
            Error::TooLarge(n) => format!("body larger than the {n}-byte limit"),
            Error::LimitExceeded(m) => return crate::Error::Internal(m),
        };
        crate::Error::upstream(message)
    }
}

/// A failed send as a plugin error naming the upstream (`ServiceNow: the
/// upstream did not answer in time`). A spent request budget stays
/// [`crate::Error::Internal`]: it is this invocation's limit, not the
/// upstream's fault.
pub fn error_from(system: &str, e: Error) -> crate::Error {
    match crate::Error::from(e) {
        crate::Error::Upstream {
            status,
            message,
            retry_after_secs,
        } => crate::Error::Upstream {
            status,
            message: format!("{system}: {message}"),
            retry_after_secs,
        },
        crate::Error::Internal(m) => crate::Error::Internal(format!("{system}: {m}")),
        other => other,
    }
}

/// An outbound request being built.
#[derive(Debug, Clone)]
pub struct Request {
    inner: wit::Request,
}

impl Request {
    /// A request with `method` to `url`.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Self {
            inner: wit::Request {
                method,
                url: url.into(),
                headers: Vec::new(),
                body: None,
                credential: None,
                timeout_ms: None,
            },
        }
    }
    /// A GET request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }
    /// A POST request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::Post, url)
    }
    /// A PUT request.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new(Method::Put, url)
    }
    /// A PATCH request.
    pub fn patch(url: impl Into<String>) -> Self {
        Self::new(Method::Patch, url)
    }
    /// A DELETE request.
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new(Method::Delete, url)
    }
    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.inner.headers.push(Header {
            name: name.into(),
            value: value.into(),
        });
        self
    }
    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.inner.body = Some(body.into());
        self
    }
    /// Sets a JSON body and `Content-Type: application/json`.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> crate::Result<Self> {
        let body = serde_json::to_vec(value)?;
        Ok(self.header("content-type", "application/json").body(body))
    }
    /// Sets a form body (`application/x-www-form-urlencoded`).
    pub fn form(self, fields: &[(&str, &str)]) -> Self {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }
    /// Names the credential the host attaches.
    pub fn credential(mut self, name: &str) -> Self {
        self.inner.credential = Some(name.into());
        self
    }
    /// Sets a timeout (the host caps it).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.inner.timeout_ms = Some(t.as_millis().min(u32::MAX as u128) as u32);
        self
    }
    /// The URL.
    pub fn url(&self) -> &str {
        &self.inner.url
    }
    /// The method.
    pub fn method(&self) -> Method {
        self.inner.method
    }

    /// Sends the request; 3xx answers are returned as they are.
    pub fn send(&self) -> Result<Response, Error> {
        let r = wit::send(&self.inner)?;
        Ok(Response {
            status: r.status,
            headers: r.headers,
            body: r.body,
        })
    }

    /// Sends the request, following up to `max_hops` redirects. Each hop is
    /// a new request the host checks; 303 (and 301/302 after a POST) turn
    /// into a GET without body, as browsers do.
    pub fn send_following_redirects(&self, max_hops: u32) -> crate::Result<Response> {
        let mut req = self.clone();
        for _ in 0..=max_hops {
            let resp = req.send()?;
            if !matches!(resp.status, 301 | 302 | 303 | 307 | 308) {
                return Ok(resp);
            }
            let Some(location) = resp.header("location") else {
                return Ok(resp);
            };
            let next = resolve_location(&req.inner.url, location).ok_or_else(|| {
                crate::Error::upstream(format!("redirect to an unusable location `{location}`"))
            })?;
            if origin(&next) != origin(&req.inner.url) {
                req.inner.credential = None;
            }
            let to_get = resp.status == 303
                || (matches!(resp.status, 301 | 302) && req.inner.method == Method::Post);
            if to_get {
                req.inner.method = Method::Get;
                req.inner.body = None;
                req.inner
                    .headers
                    .retain(|h| !h.name.eq_ignore_ascii_case("content-type"));
            }
            req.inner.url = next;
        }
        Err(crate::Error::upstream(format!(
            "more than {max_hops} redirects from {}",
            self.inner.url
        )))
    }
}

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `scheme://authority` of an absolute URL.
fn origin(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    &url[..end]
}

fn resolve_location(base: &str, location: &str) -> Option<String> {
    if location.contains("://") {
        return Some(location.to_owned());
    }
    if let Some(rest) = location.strip_prefix("//") {
        let scheme = &base[..base.find("://")?];
        return Some(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Some(format!("{}{location}", origin(base)));
    }
    // Relative path: replace the last segment of the base path.
    let path_end = base.find(['?', '#']).unwrap_or(base.len());
    let dir_end = base[..path_end].rfind('/')?;
    if dir_end < origin(base).len() {
        return Some(format!("{}/{location}", origin(base)));
    }
    Some(format!("{}{location}", &base[..=dir_end]))
}

/// The upstream's answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<Header>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// An answer with `status`, `headers` and `body`: what unit tests of a
    /// plugin's handling of upstream answers build (the host makes the
    /// real ones).
    pub fn new(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: headers
                .iter()
                .map(|(name, value)| Header {
                    name: name.to_ascii_lowercase(),
                    value: (*value).to_owned(),
                })
                .collect(),
            body: body.into(),
        }
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body decoded from JSON.
    pub fn json<T: DeserializeOwned>(&self) -> crate::Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| crate::Error::Upstream {
            status: Some(self.status),
            message: format!("response is not the expected JSON: {e}"),
            retry_after_secs: None,
        })
    }
    /// `Retry-After` in seconds, when given as a number.
    pub fn retry_after_secs(&self) -> Option<u32> {
        self.header("retry-after")?.trim().parse().ok()
    }
    /// Turns a non-2xx answer into [`crate::Error::Upstream`] with the status,
    /// the start of the body and `Retry-After`.
    pub fn error_for_status(self) -> crate::Result<Self> {
        if self.is_success() {
            return Ok(self);
        }
        let mut snippet: String = self.text().chars().take(300).collect();
        if snippet.is_empty() {
            snippet = "(empty body)".into();
        }
        Err(crate::Error::Upstream {
            status: Some(self.status),
            message: snippet,
            retry_after_secs: self.retry_after_secs(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_base() {
        let base = "https://a.example/x/y?q=1";
        assert_eq!(
            resolve_location(base, "https://b.example/z").unwrap(),
            "https://b.example/z"
        );
        assert_eq!(
            resolve_location(base, "//c.example/z").unwrap(),
            "https://c.example/z"
        );
        assert_eq!(
            resolve_location(base, "/root").unwrap(),
            "https://a.example/root"
        );
        assert_eq!(
            resolve_location(base, "sib").unwrap(),
            "https://a.example/x/sib"
        );
        assert_eq!(
            resolve_location("https://a.example", "p").unwrap(),
            "https://a.example/p"
        );
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin("https://a.example:8443/x?y"),
            "https://a.example:8443"
        );
        assert_eq!(origin("http://a.example"), "http://a.example");
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }
}
