//! The daemon started for real on an ephemeral port and driven over HTTP.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

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

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    c.env(
        "SWITCHYARD_CACHE_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-cache"),
    )
    .env_remove("SWITCHYARD_MASTER_KEY");
    c
}

struct Daemon {
    child: Child,
    base: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(cfg: &Path) -> Daemon {
    let mut child = bin()
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("switchyard listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    Daemon { child, base }
}

fn token(cfg: &Path, tenant: &str) -> String {
    let out = bin()
        .args([
            "token",
            "--config",
            cfg.to_str().unwrap(),
            "create",
            tenant,
            "--label",
            "test",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn post(d: &Daemon, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", d.base))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

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

    let path = "/v1/tenants/acme/instances/echo-1/actions";
    let agent = r#""actor": {"id": "jdoe", "email": "jdoe@acme.test", "roles": ["ITIL Agent"]}"#;
    let employee = r#""actor": {"id": "emp", "roles": ["Employee", "operator"]}"#;

    // An action without a required role.
    let (status, body) = post(
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
    let (status, body) = post(
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
    let (status, body) = post(
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
    let (status, body) = post(&d, &format!("{path}/echo"), None, &echo).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = post(&d, &format!("{path}/echo"), Some("syt_forged"), &echo).await;
    assert_eq!(status, 401);
    let (status, body) = post(&d, &format!("{path}/echo"), Some(&globex), &echo).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = post(
        &d,
        "/v1/tenants/acme/instances/nope/actions/echo",
        Some(&acme),
        &echo,
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = post(&d, &format!("{path}/nope"), Some(&acme), &echo).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(&d, &format!("{path}/echo"), Some(&acme), "{not json").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body) = post(&d, &format!("{path}/echo"), Some(&acme), r#"{"input": {}}"#).await;
    assert_eq!(status, 400, "an actor is required: {body}");
    let (status, body) = post(
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
}
