//! Verifying a webhook delivery, as pure functions of the route's
//! configuration and the request: source address (with trusted proxies),
//! shared token (header, query or form parameter), HMAC signature, and the
//! event id that makes a repeated delivery a duplicate.

use std::net::IpAddr;

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::secrets::Resolver;
use crate::config::{SignatureScheme, WebhookConfig};

/// A route's verification, with its secrets resolved.
pub struct RouteConfig {
    /// Whether the plugin handles it while the sender waits.
    pub synchronous: bool,
    pub token: Option<SecretString>,
    pub token_header: String,
    pub token_param: Option<String>,
    pub hmac_secret: Option<SecretString>,
    pub signature: SignatureScheme,
    pub signature_header: String,
    pub tolerance_secs: u64,
    pub allowed: Vec<IpNet>,
    pub trusted_proxies: Vec<IpNet>,
    pub event_id_header: Option<String>,
    pub event_id_field: Option<String>,
    pub max_body_bytes: usize,
}

/// Why a delivery was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Source(IpAddr),
    Token,
    Signature,
    /// A Standard Webhooks timestamp outside the tolerance (a replay, or a
    /// sender whose clock is off): how far off, in seconds.
    Stale(i64),
}

/// The Standard Webhooks headers.
pub const WEBHOOK_ID: &str = "webhook-id";
/// Seconds since the epoch when the sender signed.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// Space-separated `v1,<base64 signature>` entries.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// The key a Standard Webhooks secret stands for: the base64 after
/// `whsec_`, or the text itself when it has no such prefix.
fn standard_key(secret: &str) -> Vec<u8> {
    use base64::Engine;
    secret
        .strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// Checks a Standard Webhooks signature: the id, the timestamp (within
/// `tolerance` of `now_secs`) and the body, signed together.
fn verify_standard(
    key: &SecretString,
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
    tolerance: u64,
) -> Result<(), Refusal> {
    use base64::Engine;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let id = header(WEBHOOK_ID).ok_or(Refusal::Signature)?;
    let ts_text = header(WEBHOOK_TIMESTAMP).ok_or(Refusal::Signature)?;
    let ts: i64 = ts_text.trim().parse().map_err(|_| Refusal::Signature)?;
    let off = now_secs.saturating_sub(ts);
    if off.unsigned_abs() > tolerance {
        return Err(Refusal::Stale(off));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&standard_key(key.expose_secret()))
        .expect("HMAC accepts keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts_text.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    // Several signatures may be sent (a sender rotating its secret): one
    // good `v1` is enough.
    let good = header(WEBHOOK_SIGNATURE)
        .ok_or(Refusal::Signature)?
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .any(|sig| bool::from(sig.as_slice().ct_eq(expected.as_slice())));
    if good {
        Ok(())
    } else {
        Err(Refusal::Signature)
    }
}

/// The source address: the peer, or — only when the peer is a trusted
/// proxy — the right-most `X-Forwarded-For` entry that is not a trusted
/// proxy itself (entries left of it could be forged by the client).
pub fn source_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !trusted.iter().any(|n| n.contains(&peer)) {
        return peer;
    }
    let chain: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    chain
        .into_iter()
        .rev()
        .find(|ip| !trusted.iter().any(|n| n.contains(ip)))
        .unwrap_or(peer)
}

pub fn form_or_query_param(query: &str, body: &[u8], is_form: bool, name: &str) -> Option<String> {
    let from = |bytes: &[u8]| {
        url::form_urlencoded::parse(bytes)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    from(query.as_bytes()).or_else(|| if is_form { from(body) } else { None })
}

/// Constant-time equality of two secrets of any length (compares digests).
pub fn same_secret(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes())
        .ct_eq(&Sha256::digest(b.as_bytes()))
        .into()
}

/// Checks source, token and signature, in that order.
/// `now_secs` is the time Standard Webhooks timestamps are checked against.
pub fn verify(
    route: &RouteConfig,
    source: IpAddr,
    headers: &HeaderMap,
    query: &str,
    body: &[u8],
    is_form: bool,
    now_secs: i64,
) -> Result<(), Refusal> {
    if !route.allowed.is_empty() && !route.allowed.iter().any(|n| n.contains(&source)) {
        return Err(Refusal::Source(source));
    }
    if let Some(expected) = &route.token {
        let presented = match &route.token_param {
            Some(p) => form_or_query_param(query, body, is_form, p),
            None => headers
                .get(route.token_header.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        };
        match presented {
            Some(p) if same_secret(&p, expected.expose_secret()) => {}
            _ => return Err(Refusal::Token),
        }
    }
    if let (Some(key), SignatureScheme::StandardWebhooks) = (&route.hmac_secret, route.signature) {
        return verify_standard(key, headers, body, now_secs, route.tolerance_secs);
    }
    if let Some(key) = &route.hmac_secret {
        let sig = headers
            .get(route.signature_header.as_str())
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().trim_start_matches("sha256="))
            .and_then(|hex_sig| hex::decode(hex_sig).ok())
            .ok_or(Refusal::Signature)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(body);
        mac.verify_slice(&sig).map_err(|_| Refusal::Signature)?;
    }
    Ok(())
}

/// How a sender presents the route's token, for a refusal's message.
pub fn token_hint(route: &RouteConfig) -> String {
    match &route.token_param {
        Some(p) => format!("send it as the `{p}` query parameter or form field"),
        None => format!("send it in the `{}` header", route.token_header),
    }
}

/// How a sender signs for the route, for a refusal's message.
pub fn signature_hint(route: &RouteConfig) -> String {
    match route.signature {
        SignatureScheme::StandardWebhooks => format!(
            "send the Standard Webhooks headers `webhook-id`, `webhook-timestamp` and \
             `{WEBHOOK_SIGNATURE}` (`v1,<base64 HMAC-SHA256 of id.timestamp.body>`)"
        ),
        SignatureScheme::HmacSha256 => format!(
            "send the hex HMAC-SHA256 of the body in the `{}` header (`sha256=` prefix optional)",
            route.signature_header
        ),
    }
}

/// Removes the token parameter from a form body, so the plugin never sees it.
pub fn strip_form_param(body: &[u8], name: &str) -> Vec<u8> {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(url::form_urlencoded::parse(body).filter(|(k, _)| k != name))
        .finish()
        .into_bytes()
}

pub fn strip_query_param(query: &str, name: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(url::form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k != name))
        .finish()
}

/// Longest event id kept: ids are identifiers, and a bound keeps the
/// idempotency index small.
pub const MAX_EVENT_ID: usize = 256;

/// The delivery's event id, when the route names where it is. A route that
/// deduplicates must be able to: a delivery without a usable id is refused
/// (the `Err` says why, naming the field) rather than accepted without
/// duplicate suppression.
///
/// The field is looked for in the body as it is, whatever its declared
/// content type: a JSON object's top-level field, else a form field
/// (`curl -d` sends JSON as `application/x-www-form-urlencoded`).
pub fn event_id(
    route: &RouteConfig,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<String>, String> {
    // A Standard Webhooks delivery names itself: its id deduplicates
    // unless the route says otherwise.
    let standard_id = (route.signature == SignatureScheme::StandardWebhooks
        && route.event_id_field.is_none())
    .then_some(WEBHOOK_ID);
    let (id, place) = if let Some(h) = route.event_id_header.as_deref().or(standard_id) {
        let id = headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| format!("the delivery has no event id: header `{h}` is missing"))?;
        (id, format!("header `{h}`"))
    } else if let Some(field) = &route.event_id_field {
        (body_field(body, field)?, format!("field `{field}`"))
    } else {
        return Ok(None);
    };
    let id = id.trim().to_owned();
    if id.is_empty() {
        return Err(format!("the delivery's event id ({place}) is empty"));
    }
    if id.len() > MAX_EVENT_ID {
        return Err(format!(
            "the delivery's event id ({place}) is {} bytes long; at most {MAX_EVENT_ID} are accepted",
            id.len()
        ));
    }
    Ok(Some(id))
}

fn body_field(body: &[u8], field: &str) -> Result<String, String> {
    let missing = |what: &str| format!("the delivery has no event id: {what}");
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body) {
        return match map.get(field) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
            Some(_) => Err(missing(&format!(
                "JSON field `{field}` is not a string or number"
            ))),
            None => Err(missing(&format!("JSON field `{field}` is missing"))),
        };
    }
    if std::str::from_utf8(body).is_err() {
        return Err(missing(&format!(
            "the body is neither JSON nor a form with field `{field}` (not UTF-8)"
        )));
    }
    form_or_query_param("", body, true, field)
        .ok_or_else(|| missing(&format!("the body has no JSON or form field `{field}`")))
}

/// Resolves a route's configuration from the tenant file.
pub async fn route_config(
    hook: &WebhookConfig,
    synchronous: bool,
    resolver: &Resolver<'_>,
    what: &str,
) -> anyhow::Result<RouteConfig> {
    let secret = async |v: &Option<crate::config::SecretRef>,
                        field: &str|
           -> anyhow::Result<Option<SecretString>> {
        match v {
            None => Ok(None),
            Some(v) => Ok(Some(resolver.resolve(v, &format!("{what}.{field}")).await?)),
        }
    };
    let nets = |list: &[String]| {
        list.iter()
            .filter_map(|s| crate::config::parse_net(s))
            .collect()
    };
    Ok(RouteConfig {
        synchronous,
        token: secret(&hook.token, "token").await?,
        token_header: hook
            .token_header
            .clone()
            .unwrap_or_else(|| "x-switchyard-token".into())
            .to_ascii_lowercase(),
        token_param: hook.token_param.clone(),
        hmac_secret: secret(&hook.hmac_secret, "hmac_secret").await?,
        signature: hook.signature,
        signature_header: hook.signature_header.to_ascii_lowercase(),
        tolerance_secs: hook.tolerance_secs,
        allowed: nets(&hook.allowed_ips),
        trusted_proxies: nets(&hook.trusted_proxies),
        event_id_header: hook
            .event_id_header
            .as_ref()
            .map(|h| h.to_ascii_lowercase()),
        event_id_field: hook.event_id_field.clone(),
        max_body_bytes: hook.max_body_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> RouteConfig {
        RouteConfig {
            synchronous: false,
            token: Some(SecretString::from("t0ken")),
            token_header: "x-switchyard-token".into(),
            token_param: None,
            hmac_secret: None,
            signature: SignatureScheme::HmacSha256,
            signature_header: "x-switchyard-signature".into(),
            tolerance_secs: 300,
            allowed: vec!["10.0.0.0/8".parse().unwrap()],
            trusted_proxies: vec![],
            event_id_header: None,
            event_id_field: None,
            max_body_bytes: 1000,
        }
    }

    #[test]
    fn refusals_say_where_the_credential_goes() {
        let mut r = route();
        assert_eq!(token_hint(&r), "send it in the `x-switchyard-token` header");
        r.token_param = Some("token".into());
        assert_eq!(
            token_hint(&r),
            "send it as the `token` query parameter or form field"
        );
        assert!(signature_hint(&r).contains("in the `x-switchyard-signature` header"));
        r.signature = SignatureScheme::StandardWebhooks;
        let hint = signature_hint(&r);
        for header in [
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "v1,",
        ] {
            assert!(hint.contains(header), "{hint}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let h = headers(&[("x-forwarded-for", "10.1.1.1, 192.0.2.7")]);
        let peer: IpAddr = "203.0.113.5".parse().unwrap();
        assert_eq!(source_ip(peer, &h, &[]), peer);
        let proxy: IpNet = "203.0.113.0/24".parse().unwrap();
        // The right-most untrusted hop is the client as the proxy saw it;
        // 10.1.1.1 further left could be forged.
        assert_eq!(
            source_ip(peer, &h, &[proxy]),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn source_token_and_signature_are_checked() {
        let r = route();
        let ok_ip: IpAddr = "10.2.3.4".parse().unwrap();
        let good = headers(&[("x-switchyard-token", "t0ken")]);
        assert_eq!(verify(&r, ok_ip, &good, "", b"", false, 0), Ok(()));
        let bad_ip: IpAddr = "11.0.0.1".parse().unwrap();
        assert_eq!(
            verify(&r, bad_ip, &good, "", b"", false, 0),
            Err(Refusal::Source(bad_ip))
        );
        let wrong = headers(&[("x-switchyard-token", "t0ke")]);
        assert_eq!(
            verify(&r, ok_ip, &wrong, "", b"", false, 0),
            Err(Refusal::Token)
        );
        assert_eq!(
            verify(&r, ok_ip, &HeaderMap::new(), "", b"", false, 0),
            Err(Refusal::Token)
        );

        let mut r = route();
        r.token_param = Some("outbound_event_token".into());
        let body = b"event=support_conference_end&outbound_event_token=t0ken&lsid=abc";
        assert_eq!(
            verify(&r, ok_ip, &HeaderMap::new(), "", body, true, 0),
            Ok(())
        );
        assert_eq!(
            verify(
                &r,
                ok_ip,
                &HeaderMap::new(),
                "outbound_event_token=t0ken",
                b"",
                false,
                0
            ),
            Ok(())
        );
        assert_eq!(
            strip_form_param(body, "outbound_event_token"),
            b"event=support_conference_end&lsid=abc"
        );

        let mut r = route();
        r.token = None;
        r.hmac_secret = Some(SecretString::from("k"));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
        mac.update(b"payload");
        let sig = hex::encode(mac.finalize().into_bytes());
        let signed = headers(&[("x-switchyard-signature", &format!("sha256={sig}"))]);
        assert_eq!(verify(&r, ok_ip, &signed, "", b"payload", false, 0), Ok(()));
        assert_eq!(
            verify(&r, ok_ip, &signed, "", b"tampered", false, 0),
            Err(Refusal::Signature)
        );
    }

    /// Issue 11, finding 9: Standard Webhooks, with the specification's
    /// own test vector; the timestamp is signed and must be recent.
    #[test]
    fn standard_webhooks_signatures_and_their_replay_window() {
        let mut r = route();
        r.token = None;
        r.allowed.clear();
        r.signature = SignatureScheme::StandardWebhooks;
        r.hmac_secret = Some(SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signed = |sig: &str| {
            headers(&[
                ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
                ("webhook-timestamp", "1614265330"),
                ("webhook-signature", sig),
            ])
        };
        let good = signed("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let at = |h: &HeaderMap, b: &[u8], now: i64| verify(&r, ip, h, "", b, false, now);
        assert_eq!(at(&good, body, 1614265330), Ok(()));
        // Another signature beside it (a rotation) does not matter.
        let two = signed("v1,bm90IGl0 v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(at(&two, body, 1614265330), Ok(()));
        assert_eq!(at(&good, b"{}", 1614265330), Err(Refusal::Signature));
        // Within five minutes either way, and not beyond.
        assert_eq!(at(&good, body, 1614265330 + 300), Ok(()));
        assert_eq!(at(&good, body, 1614265330 + 301), Err(Refusal::Stale(301)));
        assert_eq!(at(&good, body, 1614265330 - 301), Err(Refusal::Stale(-301)));
        // Without its headers, or with a signature version we do not know.
        assert_eq!(
            at(&HeaderMap::new(), body, 1614265330),
            Err(Refusal::Signature)
        );
        let v2 = signed("v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(at(&v2, body, 1614265330), Err(Refusal::Signature));
        // Its id deduplicates by default.
        assert_eq!(
            event_id(&r, &good, body),
            Ok(Some("msg_p5jXN8AQM9LWM0D4loKWxJek".into()))
        );
    }

    #[test]
    fn event_ids_come_from_the_configured_place() {
        let mut r = route();
        assert_eq!(event_id(&r, &HeaderMap::new(), b"anything"), Ok(None));
        r.event_id_field = Some("id".into());
        let id = |body: &[u8]| event_id(&r, &HeaderMap::new(), body);
        assert_eq!(id(br#"{"id":"e-1"}"#), Ok(Some("e-1".into())));
        assert_eq!(id(br#"{"id":42}"#), Ok(Some("42".into())));
        assert_eq!(id(b"id=e-2&x=1"), Ok(Some("e-2".into())));
        r.event_id_header = Some("x-event-id".into());
        assert_eq!(
            event_id(&r, &headers(&[("x-event-id", "h-1")]), b""),
            Ok(Some("h-1".into()))
        );
    }

    /// Issue 13, item 15: a route that deduplicates refuses a delivery
    /// whose id it cannot find, whatever the content type said.
    #[test]
    fn a_delivery_without_a_usable_event_id_is_refused_naming_the_field() {
        let mut r = route();
        r.event_id_field = Some("id".into());
        let id = |body: &[u8]| event_id(&r, &HeaderMap::new(), body);
        for (body, needle) in [
            (&br#"{"other":1}"#[..], "JSON field `id` is missing"),
            (
                br#"{"id":{"x":1}}"#,
                "JSON field `id` is not a string or number",
            ),
            (br#"{"id":""}"#, "empty"),
            (b"not json, no form", "no JSON or form field `id`"),
            (b"\xff\xfe", "not UTF-8"),
            (b"", "no JSON or form field `id`"),
        ] {
            let err = id(body).unwrap_err();
            assert!(err.contains(needle), "{body:?}: {err}");
        }
        let long = format!(r#"{{"id":"{}"}}"#, "x".repeat(MAX_EVENT_ID + 1));
        assert!(id(long.as_bytes()).unwrap_err().contains("at most 256"));
        r.event_id_header = Some("x-event-id".into());
        let err = event_id(&r, &HeaderMap::new(), b"").unwrap_err();
        assert!(err.contains("header `x-event-id`"), "{err}");
    }
}
