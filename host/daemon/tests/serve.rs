//! The daemon started for real on an ephemeral port and driven over HTTP.

mod common;

use common::*;

/// POSTs an action request (no extra headers).
async fn act(d: &Daemon, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    post(d, path, token, &[], body).await
}
use serde_json::{Value, json};

const TENANT: &str = r#"[roles]
"ITIL Agent" = ["operator"]

[[instance]]
id = "echo-1"
plugin = "echo"

[instance.config]
greeting = "hej"

[[instance]]
id = "frozen"
plugin = "echo"
paused = true
"#;

#[tokio::test]
async fn actions_are_authenticated_role_checked_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("switchyard.toml"), "data_dir = \"data\"\n").unwrap();
    std::fs::create_dir(dir.path().join("tenants")).unwrap();
    std::fs::write(dir.path().join("tenants/acme.toml"), TENANT).unwrap();
    std::fs::write(dir.path().join("tenants/globex.toml"), "").unwrap();
    let acme = token(dir.path(), "acme");
    let globex = token(dir.path(), "globex");
    let d = start(dir.path());

    let health = reqwest::get(format!("{}/healthz", d.base)).await.unwrap();
    assert_eq!(health.status(), 200);
    let doc: Value = reqwest::get(format!("{}/openapi.json", d.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc["paths"]["/v1/tenants/{tenant}/instances/{instance}/actions/{action}"]["post"]
            .is_object()
    );

    let path = "/v1/tenants/acme/instances/echo-1/actions";
    let agent = r#""actor": {"id": "jdoe", "email": "jdoe@acme.test", "roles": ["ITIL Agent"]}"#;
    let employee = r#""actor": {"id": "emp", "roles": ["Employee", "operator"]}"#;

    // An action without a required role.
    let (status, body) = act(
        &d,
        &format!("{path}/echo"),
        Some(&acme),
        &format!(r#"{{"input": {{"n": 1}}, {employee}}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["output"]["input"]["n"], 1);
    assert_eq!(body["output"]["greeting"], "hej");
    // Roles reach the plugin after mapping: "operator" sent directly maps to nothing.
    assert_eq!(body["output"]["context"]["actor"]["roles"], json!([]));

    // `fetch` requires "operator": refused for the employee before the plugin runs...
    let (status, body) = act(
        &d,
        &format!("{path}/fetch"),
        Some(&acme),
        &format!(r#"{{"input": {{"url": "https://x.example.com/"}}, {employee}}}"#),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requires role `operator`")
    );
    // ...and allowed for the agent, whose tenant role maps to it. The plugin
    // then meets the (empty) egress allowlist and reports it as data.
    let (status, body) = act(
        &d,
        &format!("{path}/fetch"),
        Some(&acme),
        &format!(r#"{{"input": {{"url": "https://x.example.com/"}}, {agent}}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["output"]["error"]["kind"], "denied");

    // Authentication and addressing.
    let echo = format!(r#"{{"input": {{}}, {agent}}}"#);
    let (status, body) = act(&d, &format!("{path}/echo"), None, &echo).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = act(&d, &format!("{path}/echo"), Some("syt_forged"), &echo).await;
    assert_eq!(status, 401);
    let (status, body) = act(&d, &format!("{path}/echo"), Some(&globex), &echo).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = act(
        &d,
        "/v1/tenants/acme/instances/nope/actions/echo",
        Some(&acme),
        &echo,
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = act(&d, &format!("{path}/nope"), Some(&acme), &echo).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = act(&d, &format!("{path}/echo"), Some(&acme), "{not json").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body) = act(&d, &format!("{path}/echo"), Some(&acme), r#"{"input": {}}"#).await;
    assert_eq!(status, 400, "an actor is required: {body}");
    let (status, body) = act(
        &d,
        "/v1/tenants/acme/instances/frozen/actions/echo",
        Some(&acme),
        &echo,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("paused"))
    );

    // The audit log has the actions and the egress attempt, and no token.
    let out = bin()
        .args(["audit", "--config", dir.path().to_str().unwrap(), "acme"])
        .output()
        .unwrap();
    let audit = String::from_utf8(out.stdout).unwrap();
    let entries: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["what"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("action", "echo", "paused"),
            ("egress", "GET https://x.example.com:443/", "denied"),
            ("action", "fetch", "ok"),
            ("action", "fetch", "forbidden"),
            ("action", "echo", "ok"),
        ]
    );
    assert_eq!(entries[2]["actor"], "jdoe");
    assert_eq!(entries[3]["actor"], "emp");
    assert!(!audit.contains(&acme));

    // Metrics count what ran, per tenant and plugin, denials included.
    let metrics = reqwest::get(format!("{}/metrics", d.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"switchyard_invocations_total{tenant="acme",instance="echo-1",plugin="echo",kind="action",outcome="ok"} 2"#,
        r#"switchyard_egress_requests_total{tenant="acme",instance="echo-1",plugin="echo",outcome="denied"} 1"#,
        r#"switchyard_queue_jobs{tenant="acme",instance="echo-1",state="queued"} 0"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}
