//! Outbound HTTP and credentials through the real `echo` and `hostile`
//! components, against recording loopback servers.

mod common;

use common::*;
use secrecy::SecretString;
use serde_json::{Value, json};
use switchyard_runtime::credentials::{ClientAuth, CredentialSecret, CredentialSpec};
use switchyard_runtime::{Instance, InstanceSpec};
use switchyard_tests::{CLIENT_ID, CLIENT_SECRET, Recorder, guests};

/// A spec allowed to reach `upstream` (loopback must be named explicitly).
fn spec_for(upstream: &Recorder) -> InstanceSpec {
    let mut spec = InstanceSpec::new("acme", "echo-1");
    spec.egress.push(upstream.origin());
    spec
}

fn basic_cred(hosts: Vec<String>) -> CredentialSpec {
    CredentialSpec {
        name: "upstream".into(),
        hosts,
        secret: CredentialSecret::Basic {
            username: "svc".into(),
            password: SecretString::from(CLIENT_SECRET),
            extra_header: Some("aw-tenant-code".into()),
            extra_header_value: Some(SecretString::from("tenant-code-77")),
        },
    }
}

fn oauth_cred(upstream: &Recorder, auth: ClientAuth) -> CredentialSpec {
    CredentialSpec {
        name: "upstream".into(),
        hosts: vec![upstream.origin()],
        secret: CredentialSecret::OAuth2 {
            token_url: upstream.url("/token"),
            client_id: CLIENT_ID.into(),
            client_secret: SecretString::from(CLIENT_SECRET),
            scope: Some("devices.read".into()),
            client_auth: auth,
            extra_header: None,
            extra_header_value: None,
        },
    }
}

fn error_kind(v: &Value) -> &str {
    v["error"]["kind"].as_str().unwrap_or("")
}

#[tokio::test]
async fn allowed_request_reaches_upstream_and_is_audited() {
    let up = Recorder::start().await;
    let inst = instance(load(guests::PLUGIN_ECHO).await, spec_for(&up));
    let inv = call(
        &inst,
        "fetch",
        json!({"url": up.url("/api/x?secret=q"), "method": "POST", "body": "hello",
               "headers": {"x-trace": "1"}}),
    )
    .await;
    let out = inv.result.unwrap();
    assert_eq!(out["status"], 200);
    assert_eq!(out["body"], r#"{"ok":true,"path":"/api/x"}"#);
    let seen = up.requests_to("/api/x");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].query, "secret=q");
    assert_eq!(seen[0].body, b"hello");
    assert_eq!(seen[0].header("x-trace"), Some("1"));
    assert_eq!(seen[0].header("authorization"), None);
    // The audit record has no query string.
    let rec = &inv.report.egress[0];
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.destination, format!("{}", up.origin()));
    assert_eq!(rec.path, "/api/x");
    assert_eq!(rec.status, Some(200));
    assert_eq!(rec.outcome, "ok");
}

/// Issue 13, item 21: an answered request is counted by what the answer
/// said; an upstream's 429 or 5xx is not an `ok`.
#[tokio::test]
async fn egress_outcomes_say_how_the_upstream_answered() {
    let up = Recorder::start().await;
    let inst = instance(load(guests::PLUGIN_ECHO).await, spec_for(&up));
    for (code, outcome) in [
        (200, "ok"),
        (304, "ok"),
        (404, "client-error"),
        (429, "rate-limited"),
        (503, "server-error"),
    ] {
        let url = up.url(&format!("/status?code={code}"));
        let inv = call(&inst, "fetch", json!({ "url": url })).await;
        assert_eq!(inv.result.unwrap()["status"], code);
        let rec = &inv.report.egress[0];
        assert_eq!((rec.status, rec.outcome.as_str()), (Some(code), outcome));
    }
}

#[tokio::test]
async fn every_egress_trick_is_denied() {
    let up = Recorder::start().await;
    let port = up.origin().rsplit(':').next().unwrap().to_owned();
    let mut spec = InstanceSpec::new("acme", "h");
    // Only a DNS name is allowed; loopback is not named as an IP/CIDR entry.
    spec.egress.push(format!("http://localhost:{port}"));
    spec.egress.push("https://*.example.com".into());
    let inst = instance(load(guests::GUEST_HOSTILE).await, spec);
    let urls = [
        format!("http://127.0.0.1:{port}/a"),  // not in the allowlist
        format!("http://2130706433:{port}/a"), // decimal loopback
        format!("http://0x7f.1:{port}/a"),     // hex shorthand
        format!("http://0177.0.0.1:{port}/a"), // octal
        format!("http://[::ffff:127.0.0.1]:{port}/a"), // IPv4-mapped IPv6
        format!("http://localhost:{port}/a"),  // allowed name, loopback address
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://localhost:{port}@evil.example.com/"), // userinfo confusion
        "file:///etc/passwd".to_owned(),
        format!("http://localhost:{}/a", port.parse::<u16>().unwrap() ^ 1), // other port
    ];
    let out = ok(&inst, "egress", json!({ "urls": urls })).await;
    let outcomes: Vec<String> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            o["outcome"]["error"]
                .as_str()
                .unwrap_or("ALLOWED")
                .to_owned()
        })
        .collect();
    for (url, outcome) in urls.iter().zip(&outcomes) {
        assert!(
            outcome.starts_with("Error::Denied(") || outcome.starts_with("Error::InvalidRequest("),
            "{url} was not refused: {outcome}"
        );
    }
    assert!(outcomes[1].contains("127.0.0.1"), "{}", outcomes[1]);
    assert!(outcomes[5].contains("restricted range"), "{}", outcomes[5]);
    assert!(
        outcomes[7].starts_with("Error::InvalidRequest("),
        "{}",
        outcomes[7]
    );
    assert!(up.requests().is_empty(), "nothing may reach the server");
}

#[tokio::test]
async fn loopback_is_reachable_only_when_named_as_cidr() {
    let up = Recorder::start().await;
    let port = up.origin().rsplit(':').next().unwrap().to_owned();
    let mut spec = InstanceSpec::new("acme", "h");
    spec.egress.push(format!("http://localhost:{port}"));
    spec.egress.push("http://127.0.0.0/8:*".into());
    let inst = instance(load(guests::PLUGIN_ECHO).await, spec);
    let out = ok(
        &inst,
        "fetch",
        json!({"url": format!("http://localhost:{port}/named")}),
    )
    .await;
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(up.requests_to("/named").len(), 1);
}

#[tokio::test]
async fn redirects_are_not_followed_by_the_host_and_each_hop_is_checked() {
    let up = Recorder::start().await;
    let other = Recorder::start().await; // not in the allowlist
    let inst = instance(load(guests::PLUGIN_ECHO).await, spec_for(&up));
    let to_forbidden = up.url(&format!("/redirect?to={}", other.url("/stolen")));
    // The host returns the 302 as is.
    let out = ok(&inst, "fetch", json!({"url": to_forbidden})).await;
    assert_eq!(out["status"], 302);
    assert_eq!(out["headers"]["location"], other.url("/stolen"));
    // The SDK follows it, and the host refuses the hop.
    let out = ok(
        &inst,
        "fetch",
        json!({"url": to_forbidden, "follow_redirects": 3}),
    )
    .await;
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("egress denied"),
        "{out}"
    );
    assert!(other.requests().is_empty());
    // A hop that stays allowed is followed.
    let to_allowed = up.url(&format!("/redirect?to={}", up.url("/landed")));
    let out = ok(
        &inst,
        "fetch",
        json!({"url": to_allowed, "follow_redirects": 3}),
    )
    .await;
    assert_eq!(out["status"], 200);
    assert_eq!(up.requests_to("/landed").len(), 1);
}

#[tokio::test]
async fn response_and_timeout_limits() {
    let up = Recorder::start().await;
    let mut spec = spec_for(&up);
    spec.limits.http_response_bytes = 1000;
    spec.limits.http_timeout = std::time::Duration::from_millis(300);
    let inst = instance(load(guests::PLUGIN_ECHO).await, spec);
    let out = ok(&inst, "fetch", json!({"url": up.url("/big?bytes=5000")})).await;
    assert_eq!(error_kind(&out), "too-large");
    assert_eq!(out["error"]["message"], "1000");
    let out = ok(&inst, "fetch", json!({"url": up.url("/big?bytes=1000")})).await;
    assert_eq!(out["status"], 200);
    let out = ok(&inst, "fetch", json!({"url": up.url("/slow?ms=5000")})).await;
    assert_eq!(error_kind(&out), "timeout");
}

#[tokio::test]
async fn basic_credential_reaches_only_the_bound_host() {
    let up = Recorder::start().await;
    let bystander = Recorder::start().await;
    let mut spec = spec_for(&up);
    spec.egress.push(bystander.origin());
    spec.credentials.push(basic_cred(vec![up.origin()]));
    let inst = instance(load(guests::GUEST_HOSTILE).await, spec);
    let inv = call(
        &inst,
        "credential-misuse",
        json!({"bound_url": up.url("/bound"), "unbound_url": bystander.url("/unbound")}),
    )
    .await;
    let out = inv.result.unwrap();
    assert!(
        out["unbound_host"]["error"]
            .as_str()
            .unwrap()
            .starts_with("Error::Credential("),
        "{out}"
    );
    assert!(
        out["own_authorization"]["error"]
            .as_str()
            .unwrap()
            .contains("may not be set on a request that names credential"),
        "{out}"
    );
    assert!(
        out["unknown_credential"]["error"]
            .as_str()
            .unwrap()
            .contains("`nope`")
    );
    assert!(out["listed"].as_str().unwrap().contains("Basic"));
    // Nothing reached either server: every misuse was refused before sending.
    assert!(up.requests().is_empty());
    assert!(bystander.requests().is_empty());
    // The secret appears nowhere the plugin or the audit can see.
    let everything = format!("{out} {:?}", inv.report);
    assert!(!everything.contains(CLIENT_SECRET));
    assert!(!everything.contains("tenant-code-77"));

    // Used properly, it arrives at the bound host — and only there.
    let echo_inst = {
        let mut spec = spec_for(&up);
        spec.egress.push(bystander.origin());
        spec.credentials.push(basic_cred(vec![up.origin()]));
        instance(load(guests::PLUGIN_ECHO).await, spec)
    };
    let inv = call(
        &echo_inst,
        "fetch",
        json!({"url": up.url("/bound"), "credential": "upstream"}),
    )
    .await;
    let out = inv.result.unwrap();
    assert_eq!(out["status"], 200);
    let seen = &up.requests_to("/bound")[0];
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("svc:{CLIENT_SECRET}"))
    );
    assert_eq!(seen.header("authorization"), Some(expected.as_str()));
    assert_eq!(seen.header("aw-tenant-code"), Some("tenant-code-77"));
    assert!(!format!("{out} {:?}", inv.report).contains(CLIENT_SECRET));
    assert!(bystander.requests().is_empty());
}

#[tokio::test]
async fn api_key_and_bearer_credentials() {
    let up = Recorder::start().await;
    for (secret, header, expected) in [
        (
            CredentialSecret::ApiKey {
                header: "X-API-Key".into(),
                key: SecretString::from("key-123"),
            },
            "x-api-key",
            "key-123",
        ),
        (
            CredentialSecret::Bearer {
                token: SecretString::from("static-tok"),
            },
            "authorization",
            "Bearer static-tok",
        ),
    ] {
        let mut spec = spec_for(&up);
        spec.credentials.push(CredentialSpec {
            name: "upstream".into(),
            hosts: vec![up.origin()],
            secret,
        });
        let inst = instance(load(guests::PLUGIN_ECHO).await, spec);
        let path = format!("/k/{header}");
        let out = ok(
            &inst,
            "fetch",
            json!({"url": up.url(&path), "credential": "upstream"}),
        )
        .await;
        assert_eq!(out["status"], 200, "{out}");
        assert_eq!(up.requests_to(&path)[0].header(header), Some(expected));
        // A guest may not set the credential's own header itself.
        let out = ok(
            &inst,
            "fetch",
            json!({"url": up.url(&path), "credential": "upstream", "headers": {header: "forged"}}),
        )
        .await;
        assert_eq!(error_kind(&out), "invalid-request", "{out}");
    }
}

#[tokio::test]
async fn oauth2_token_is_cached_single_flight_and_refreshed_on_401() {
    let up = Recorder::start().await;
    let mut spec = spec_for(&up);
    spec.credentials.push(oauth_cred(&up, ClientAuth::Basic));
    let inst = instance(load(guests::PLUGIN_ECHO).await, spec);
    // Five concurrent invocations share one token fetch.
    let calls = (0..5).map(|_| {
        let inst = inst.clone();
        let url = up.url("/protected");
        async move {
            ok(
                &inst,
                "fetch",
                json!({"url": url, "credential": "upstream"}),
            )
            .await
        }
    });
    for out in futures_join_all(calls).await {
        assert_eq!(out["status"], 200, "{out}");
    }
    assert_eq!(up.tokens_issued(), 1);
    let token_req = &up.requests_to("/token")[0];
    assert_eq!(
        String::from_utf8_lossy(&token_req.body),
        "grant_type=client_credentials&scope=devices.read"
    );
    assert!(
        token_req
            .header("authorization")
            .unwrap()
            .starts_with("Basic ")
    );

    // The upstream revokes the token: the host drops it, fetches a new one
    // and retries once; the plugin sees only the success.
    up.revoke_token();
    let out = ok(
        &inst,
        "fetch",
        json!({"url": up.url("/protected"), "credential": "upstream"}),
    )
    .await;
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(up.tokens_issued(), 2);
    let protected = up.requests_to("/protected");
    assert_eq!(
        protected.last().unwrap().header("authorization"),
        Some("Bearer tok-2")
    );

    // verify() reports expiry and scope, never the token.
    let out = ok(&inst, "credentials", json!({"verify": "upstream"})).await;
    assert_eq!(out["verified"]["ok"]["scope"], "devices.read");
    assert!(out["verified"]["ok"]["expires_at_ms"].as_u64().unwrap() > 0);
    assert!(!out.to_string().contains("tok-"));
    assert_eq!(out["credentials"][0]["hosts"], json!([up.origin()]));
}

#[tokio::test]
async fn oauth2_token_is_refreshed_before_expiry_and_body_auth_works() {
    let up = Recorder::start().await;
    // An hour's token is refreshed a minute before it expires.
    up.set_token_lifetime(3600);
    let clock = switchyard_runtime::Clock::default();
    let rt = runtime_with(switchyard_runtime::RuntimeConfig {
        clock: clock.clone(),
        ..switchyard_runtime::RuntimeConfig::default()
    });
    let echo = rt
        .load(&std::fs::read(guests::PLUGIN_ECHO).unwrap())
        .await
        .unwrap();
    let mut spec = spec_for(&up);
    spec.credentials.push(oauth_cred(&up, ClientAuth::Body));
    let inst = Instance::new(&rt, echo, spec, memory_store()).unwrap();
    let fetch = json!({"url": up.url("/protected"), "credential": "upstream"});
    assert_eq!(ok(&inst, "fetch", fetch.clone()).await["status"], 200);
    assert_eq!(up.tokens_issued(), 1);
    clock.advance(std::time::Duration::from_secs(3500));
    assert_eq!(ok(&inst, "fetch", fetch.clone()).await["status"], 200);
    assert_eq!(up.tokens_issued(), 1, "refreshed 100 s too early");
    clock.advance(std::time::Duration::from_secs(41));
    assert_eq!(ok(&inst, "fetch", fetch).await["status"], 200);
    assert_eq!(
        up.tokens_issued(),
        2,
        "not refreshed within its last minute"
    );
    let body = String::from_utf8_lossy(&up.requests_to("/token")[0].body).into_owned();
    assert!(body.contains("client_id=client"), "{body}");
    assert_eq!(up.requests_to("/token")[0].header("authorization"), None);
}

#[tokio::test]
async fn rejected_client_secret_is_a_typed_error_without_the_secret() {
    let up = Recorder::start().await;
    let mut spec = spec_for(&up);
    let mut cred = oauth_cred(&up, ClientAuth::Basic);
    if let CredentialSecret::OAuth2 { client_secret, .. } = &mut cred.secret {
        *client_secret = SecretString::from("wrong-secret-xyz");
    }
    spec.credentials.push(cred);
    let inst = instance(load(guests::PLUGIN_ECHO).await, spec);
    let out = ok(&inst, "credentials", json!({"verify": "upstream"})).await;
    let err = out["verified"]["error"].as_str().unwrap();
    assert!(
        err.starts_with("Error::Rejected(") && err.contains("HTTP 401 (invalid_client)"),
        "{err}"
    );
    assert!(!err.contains("wrong-secret-xyz"));
    let out = ok(
        &inst,
        "fetch",
        json!({"url": up.url("/protected"), "credential": "upstream"}),
    )
    .await;
    assert_eq!(error_kind(&out), "credential", "{out}");
    assert!(up.requests_to("/protected").is_empty());
}

#[tokio::test]
async fn token_endpoint_must_pass_egress_policy() {
    let up = Recorder::start().await;
    let token_host = Recorder::start().await;
    let mut spec = spec_for(&up); // token_host is not allowlisted
    let mut cred = oauth_cred(&up, ClientAuth::Basic);
    if let CredentialSecret::OAuth2 { token_url, .. } = &mut cred.secret {
        *token_url = token_host.url("/token");
    }
    spec.credentials.push(cred);
    let inst = instance(load(guests::PLUGIN_ECHO).await, spec);
    let out = ok(
        &inst,
        "fetch",
        json!({"url": up.url("/protected"), "credential": "upstream"}),
    )
    .await;
    assert!(
        out["error"]["message"].as_str().unwrap().contains("egress"),
        "{out}"
    );
    assert!(token_host.requests().is_empty());
}

/// Runs futures concurrently, each on its own task.
async fn futures_join_all<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// Issue 18: instances share HTTP clients (and connection pools) only when
/// they resolve alike: a connection opened for a tenant that may reach a
/// private address is never reused for one that may not.
#[tokio::test]
async fn pooled_connections_are_never_shared_across_restricted_address_rules() {
    use std::sync::Arc;
    let rt = runtime_with(switchyard_runtime::RuntimeConfig {
        max_concurrent_invocations: 4,
        lookup: switchyard_runtime::http::Lookup::Custom(Arc::new(|name: &str| match name {
            "svc.test" => Ok(vec!["127.0.0.1".parse().unwrap()]),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such name",
            )),
        })),
        ..switchyard_runtime::RuntimeConfig::default()
    });
    let wasm = std::fs::read(guests::PLUGIN_ECHO).unwrap();
    let echo = rt.load(&wasm).await.unwrap();
    let up = Recorder::start().await;
    let port = up.origin().rsplit(':').next().unwrap().to_owned();
    let url = format!("http://svc.test:{port}/pooled");
    let inst = |tenant: &str, egress: &[String]| {
        let mut spec = InstanceSpec::new(tenant, "e");
        spec.egress = egress.to_vec();
        Instance::new(&rt, echo.clone(), spec, memory_store()).unwrap()
    };
    let private = [
        format!("http://svc.test:{port}"),
        "http://127.0.0.0/8:*".to_owned(),
    ];
    let (trusted, other_trusted) = (inst("a", &private), inst("c", &private));
    let public_only = inst("b", &[format!("http://svc.test:{port}")]);
    assert_eq!(rt.http_clients(), 2, "one client per way of resolving");
    let fetch = |i: &Instance| {
        let body = json!({"url": url}).to_string();
        let i = i.clone();
        async move {
            let inv = i.invoke("fetch", &body, Default::default()).await;
            serde_json::from_str::<Value>(&inv.result.unwrap()).unwrap()
        }
    };
    // The tenant that may reach loopback does, and its connection is kept.
    assert_eq!(fetch(&trusted).await["status"], 200);
    assert_eq!(fetch(&other_trusted).await["status"], 200);
    // The one that may not is refused, although a connection to the very
    // same host and port is open in the other client's pool.
    let out = fetch(&public_only).await;
    assert_eq!(out["error"]["kind"], "denied", "{out}");
    assert_eq!(up.requests_to("/pooled").len(), 2);
}

/// A secret-URL credential (a Slack incoming webhook): the guest names the
/// host's root, the request goes to the secret URL, and neither the guest's
/// answer nor the egress record holds the secret path.
#[tokio::test]
async fn secret_url_credentials_send_to_a_url_the_plugin_never_sees() {
    let up = Recorder::start().await;
    let secret_url = up.url("/services/T0/B0/s3cr3t-path?tag=k3y");
    let cred = |url: String, hosts: Vec<String>| CredentialSpec {
        name: "upstream".into(),
        hosts,
        secret: CredentialSecret::SecretUrl {
            url: SecretString::from(url),
        },
    };
    let mut spec = spec_for(&up);
    spec.credentials
        .push(cred(secret_url.clone(), vec![up.origin()]));
    let inst = instance(load(guests::PLUGIN_ECHO).await, spec);
    let inv = call(
        &inst,
        "fetch",
        json!({"url": format!("{}/", up.origin()), "method": "POST", "body": "{\"text\":\"hi\"}",
               "credential": "upstream"}),
    )
    .await;
    let out = inv.result.unwrap();
    assert_eq!(out["status"], 200, "{out}");
    let seen = up.requests_to("/services/T0/B0/s3cr3t-path");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].query, "tag=k3y");
    assert_eq!(seen[0].body, b"{\"text\":\"hi\"}");
    assert_eq!(seen[0].header("authorization"), None);
    assert_eq!(inv.report.egress[0].path, "/");
    // This recorder echoes the path in its body: the host hides it.
    assert_eq!(out["body"], r#"{"ok":true,"path":"[secret-url]"}"#, "{out}");
    let shown = format!("{out} {:?}", inv.report);
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("k3y"),
        "{shown}"
    );

    // A redirect from the secret URL is neither followed nor shown, and a
    // secret URL that cannot be reached fails without naming its path.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for (url, origin) in [
        (
            up.url("/redirect?to=/services/T0/B0/s3cr3t-moved"),
            up.origin(),
        ),
        (
            format!("http://127.0.0.1:{closed}/services/T0/B0/s3cr3t-closed"),
            format!("http://127.0.0.1:{closed}"),
        ),
    ] {
        let mut spec = InstanceSpec::new("acme", "echo-1");
        spec.egress.push(origin.clone());
        spec.credentials.push(cred(url, vec![origin.clone()]));
        let inst = instance(load(guests::PLUGIN_ECHO).await, spec);
        let inv = call(
            &inst,
            "fetch",
            json!({"url": format!("{origin}/"), "method": "POST", "credential": "upstream"}),
        )
        .await;
        let out = inv.result.unwrap();
        assert_eq!(error_kind(&out), "connection", "{out}");
        let shown = format!("{out} {:?}", inv.report);
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    // Any other path with the credential is refused, without the secret.
    let out = ok(
        &inst,
        "fetch",
        json!({"url": up.url("/elsewhere"), "credential": "upstream"}),
    )
    .await;
    assert_eq!(error_kind(&out), "invalid-request", "{out}");
    assert!(out.to_string().contains("secret URL"), "{out}");
    assert!(!out.to_string().contains("s3cr3t"), "{out}");
    assert!(up.requests_to("/elsewhere").is_empty());

    // The URL must be on the credential's one, exact host.
    let plugin = load(guests::PLUGIN_ECHO).await;
    for (url, hosts) in [
        (
            "https://hooks.example.com/services/x".to_owned(),
            vec![up.origin()],
        ),
        (
            secret_url.clone(),
            vec![up.origin(), "https://other.example".into()],
        ),
        ("not a url".to_owned(), vec![up.origin()]),
    ] {
        let mut spec = spec_for(&up);
        spec.credentials.push(cred(url, hosts));
        let err = Instance::new(runtime(), plugin.clone(), spec, memory_store())
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("credential `upstream`: url:"), "{err}");
        assert!(!err.contains("services"), "{err}");
    }
}

/// A POST, PUT or PATCH without a body goes out with `Content-Length: 0`
/// (IIS and other front ends answer 411 without it); a GET without a body
/// carries no length. Read from the socket, not through an HTTP library.
#[tokio::test]
async fn bodiless_writes_say_content_length_zero_on_the_wire() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        seen.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&head).to_lowercase());
                        let _ = sock
                            .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                            .await;
                    }
                }
            });
        }
    });
    let mut spec = InstanceSpec::new("acme", "echo-1");
    spec.egress.push(origin.clone());
    let inst = instance(load(guests::PLUGIN_ECHO).await, spec);
    for method in ["POST", "PUT", "PATCH", "GET"] {
        let out = ok(
            &inst,
            "fetch",
            json!({"url": format!("{origin}/commands"), "method": method}),
        )
        .await;
        assert_eq!(out["status"], 202, "{method}: {out}");
    }
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 4, "{heads:?}");
    for (head, method) in heads.iter().zip(["post", "put", "patch", "get"]) {
        assert!(head.starts_with(&format!("{method} /commands ")), "{head}");
        let zero = head.contains("\r\ncontent-length: 0\r\n");
        assert_eq!(zero, method != "get", "{head}");
    }
}
