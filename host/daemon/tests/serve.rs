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
    // Each installed plugin's actions, with the input schemas the host
    // enforces (issue 14).
    let echo = doc["x-plugins"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.starts_with("echo@"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("{}", doc["x-plugins"]));
    assert_eq!(echo["actions"]["fetch"]["required_role"], "operator");
    assert_eq!(
        echo["actions"]["fetch"]["input_schema"]["required"],
        json!(["url"])
    );
    let version = echo["version"].as_str().unwrap();
    assert_eq!(
        doc["components"]["schemas"][format!("echo@{version}.fetch")]["required"],
        json!(["url"])
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
    // An input that does not match the action's schema is refused by the
    // host (issue 14): 422, saying where and what; the plugin never runs
    // (it would have reported the egress denial as data).
    let (status, body) = act(
        &d,
        &format!("{path}/fetch"),
        Some(&acme),
        &format!(r#"{{"input": {{"url": 7}}, {agent}}}"#),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_input");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("at `/url`: "), "{message}");
    assert!(message.contains("string"), "{message}");

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
            ("action", "fetch", "invalid_input"),
            ("egress", "GET https://x.example.com:443/", "denied"),
            ("action", "fetch", "ok"),
            ("action", "fetch", "forbidden"),
            ("action", "echo", "ok"),
        ]
    );
    assert_eq!(entries[1]["actor"], "jdoe");
    assert_eq!(entries[3]["actor"], "jdoe");
    assert_eq!(entries[4]["actor"], "emp");
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
    // The most linear memory the instance's calls grew to: some, and
    // within the default 64 MiB limit.
    let memory = metric(
        &d,
        r#"switchyard_instance_memory_bytes{tenant="acme",instance="echo-1"}"#,
    )
    .await as u64;
    assert!((1..=64 << 20).contains(&memory), "{memory}");
}

/// Issue 14: the log level and format are settable by flag or environment;
/// JSON is one object per line, and nothing carries colour codes when
/// stderr is not a terminal. A bad setting is refused, naming its source.
#[test]
fn logs_follow_the_level_and_format_settings() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let dir = config_dir(
        "data_dir = \"data\"\n",
        &[(
            "acme",
            "[[instance]]\nid = \"x\"\nplugin = \"no-such-plugin\"\n",
        )],
    );
    // Serves until it is listening (the instance was refused by then), then
    // stops; returns what it logged.
    let serve = |flags: &[&str], env: &[(&str, &str)]| -> String {
        let mut child = bin()
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .args(flags)
            .args(["serve", "--config", dir.path().to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("switchyard listening on"), "{line:?}");
        child.kill().unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        child.wait().unwrap();
        err
    };
    let refused = "no plugin `no-such-plugin` is installed";

    let json = serve(&["--log-format", "json"], &[]);
    let records: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let record = records
        .iter()
        .find(|r| {
            r["fields"]["message"]
                .as_str()
                .unwrap_or("")
                .contains(refused)
        })
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(record["level"], "ERROR");
    assert_eq!(record["fields"]["tenant"], "acme");

    let text = serve(&[], &[("SWITCHYARD_LOG", "info")]);
    assert!(text.contains(refused), "{text}");
    assert!(!text.contains('\x1b'), "colour codes in a pipe: {text:?}");
    let json_by_env = serve(&[], &[("SWITCHYARD_LOG_FORMAT", "json")]);
    assert!(json_by_env.starts_with('{'), "{json_by_env}");

    // The flag wins over the environment.
    let quiet = serve(&["--log-level", "off"], &[("SWITCHYARD_LOG", "info")]);
    assert!(!quiet.contains(refused), "{quiet}");

    for (flags, env, says) in [
        (
            &["--log-level", "verbose"][..],
            &[][..],
            "--log-level `verbose`: expected a level",
        ),
        (
            &[],
            &[("SWITCHYARD_LOG", "switchyard=loud")][..],
            "SWITCHYARD_LOG `switchyard=loud`",
        ),
        (
            &[],
            &[("SWITCHYARD_LOG_FORMAT", "xml")][..],
            "SWITCHYARD_LOG_FORMAT `xml`: expected `text` or `json`",
        ),
    ] {
        let out = bin()
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .args(flags)
            .args(["check", "--config", dir.path().to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flags:?} {env:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    }
}
