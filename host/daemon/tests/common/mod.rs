//! Starting the real daemon and talking to it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    c.env(
        "SWITCHYARD_CACHE_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-cache"),
    )
    .env_remove("SWITCHYARD_MASTER_KEY");
    c
}

/// A configuration directory with `switchyard.toml` and tenant files.
pub fn config_dir(server: &str, tenants: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("switchyard.toml"), server).unwrap();
    std::fs::create_dir(dir.path().join("tenants")).unwrap();
    for (name, body) in tenants {
        std::fs::write(dir.path().join(format!("tenants/{name}.toml")), body).unwrap();
    }
    dir
}

pub struct Daemon {
    pub child: Child,
    pub base: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve` on an ephemeral port and waits until it listens.
pub fn start(cfg: &Path) -> Daemon {
    start_with(cfg, "127.0.0.1:0", &[])
}

/// A loopback address no one listens on now, for a daemon whose address
/// must be known before it starts (a callback URL in its configuration).
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Starts `serve` on `listen` with extra environment variables.
pub fn start_with(cfg: &Path, listen: &str, env: &[(&str, &str)]) -> Daemon {
    let mut cmd = bin();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            listen,
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

/// Runs the CLI and returns stdout, panicking on failure.
pub fn cli(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or("").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A new operator token for the configuration in `cfg` (for reloads).
pub fn operator_token(cfg: &Path) -> String {
    cli(
        &[
            "token",
            "--config",
            cfg.to_str().unwrap(),
            "create-operator",
        ],
        None,
    )
    .trim()
    .to_owned()
}

pub fn token(cfg: &Path, tenant: &str) -> String {
    cli(
        &[
            "token",
            "--config",
            cfg.to_str().unwrap(),
            "create",
            tenant,
            "--label",
            "test",
        ],
        None,
    )
    .trim()
    .to_owned()
}

/// POSTs `body` with optional bearer token and extra headers.
pub async fn post(
    d: &Daemon,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", d.base))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Invokes the action at `path` as the agent `agent.smith` holding `roles`;
/// returns the status and the answer.
pub async fn act(
    d: &Daemon,
    token: &str,
    path: &str,
    roles: &[&str],
    input: Value,
) -> (u16, Value) {
    let body = serde_json::json!({
        "input": input,
        "actor": {"id": "agent.smith", "email": "agent.smith@acme.example", "roles": roles},
    });
    post(d, path, Some(token), &[], &body.to_string()).await
}

/// GETs `path` with an optional bearer token.
pub async fn get(d: &Daemon, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(format!("{}{path}", d.base));
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

/// Polls `check` every 100 ms until it returns Some, for at most 30 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The statistics of job `job` of the instance at `base`
/// (`/v1/tenants/<t>/instances/<i>`), as its status reports them; Null
/// before its first run.
pub async fn job_stats(d: &Daemon, token: &str, base: &str, job: &str) -> Value {
    let (status, st) = get(d, &format!("{base}/status"), Some(token)).await;
    assert_eq!(status, 200, "{st}");
    st["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "job" && s["name"] == job)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Asks for a run of job `job` of the instance at `base` now (202).
pub async fn start_job(d: &Daemon, token: &str, base: &str, job: &str) {
    let (status, out) = post(d, &format!("{base}/jobs/{job}/run"), Some(token), &[], "").await;
    assert_eq!(status, 202, "{out}");
}

/// Runs job `job` of the instance at `base` now and waits for it to end,
/// however it ends; its statistics.
pub async fn run_job(d: &Daemon, token: &str, base: &str, job: &str) -> Value {
    let before = job_stats(d, token, base, job).await["runs"]
        .as_i64()
        .unwrap_or(0);
    start_job(d, token, base, job).await;
    eventually(&format!("the `{job}` run"), || async {
        let j = job_stats(d, token, base, job).await;
        (j["runs"].as_i64().unwrap_or(0) > before).then_some(j)
    })
    .await
}

/// A config directory with `data_dir = "data"` and tenant `acme` =
/// `tenant`, the tenant's `secrets` set, and an API token for it.
pub fn acme_with_secrets(tenant: &str, secrets: &[(&str, String)]) -> (tempfile::TempDir, String) {
    acme_with_server("data_dir = \"data\"\n", tenant, secrets)
}

/// [`acme_with_secrets`] with `server` as `switchyard.toml`.
pub fn acme_with_server(
    server: &str,
    tenant: &str,
    secrets: &[(&str, String)],
) -> (tempfile::TempDir, String) {
    let dir = config_dir(server, &[("acme", tenant)]);
    let cfg = dir.path().to_str().unwrap();
    for (name, value) in secrets {
        cli(
            &["secret", "--config", cfg, "set", "acme", name],
            Some(value),
        );
    }
    let token = token(dir.path(), "acme");
    (dir, token)
}

/// One `[[instance]]` of session-import against the BeyondTrust and
/// ServiceNow simulators, with secrets `bt-secret` and `sn-password`;
/// `config` adds config keys, `more` adds sections.
pub fn session_import_instance(
    bt: &switchyard_sim::beyondtrust::BeyondTrust,
    sn: &switchyard_sim::servicenow::ServiceNow,
    id: &str,
    config: &str,
    more: &str,
) -> String {
    format!(
        r#"[[instance]]
id = "{id}"
plugin = "session-import"
egress = ["{bt}", "{sn}"]

[instance.config]
site_url = "{bt}"
servicenow_url = "{sn}"
{config}

[instance.credentials.beyondtrust]
kind = "oauth2-client-credentials"
hosts = ["{bt}"]
token_url = "{bt}/oauth2/token"
client_id = "{bt_id}"
client_secret = "secret:bt-secret"

{sn_credential}{more}"#,
        bt = bt.url(),
        sn = sn.url(),
        bt_id = bt.config().client_id,
        sn_credential = servicenow_basic_credential(sn),
    )
}

/// `[instance.credentials.uem]` for the UEM simulator: Basic with the
/// tenant code header (secrets `uem-password` and `uem-tenant-code`).
pub fn uem_basic_credential(uem: &switchyard_sim::uem::Uem) -> String {
    format!(
        "[instance.credentials.uem]\nkind = \"basic\"\nhosts = [\"{url}\"]\nusername = \"{user}\"\n\
         password = \"secret:uem-password\"\nextra_header = \"aw-tenant-code\"\n\
         extra_header_value = \"secret:uem-tenant-code\"\n",
        url = uem.url(),
        user = uem.config().username,
    )
}

/// `[instance.credentials.servicenow]` for the ServiceNow simulator: Basic
/// (secret `sn-password`).
pub fn servicenow_basic_credential(sn: &switchyard_sim::servicenow::ServiceNow) -> String {
    format!(
        "[instance.credentials.servicenow]\nkind = \"basic\"\nhosts = [\"{url}\"]\n\
         username = \"{user}\"\npassword = \"secret:sn-password\"\n",
        url = sn.url(),
        user = sn.config().username,
    )
}

/// The value of the Prometheus sample whose line starts with `series`
/// (name and labels, e.g. `switchyard_scheduler_passes_total`), or 0.
pub async fn metric(d: &Daemon, series: &str) -> f64 {
    let (_, text) = get(d, "/metrics", None).await;
    text.as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until the scheduler has made `passes` more passes than when
/// called: whatever was due has had its chance to fire.
pub async fn scheduler_passes(d: &Daemon, passes: f64) {
    let start = metric(d, "switchyard_scheduler_passes_total").await;
    eventually("scheduler passes", || async {
        (metric(d, "switchyard_scheduler_passes_total").await >= start + passes).then_some(())
    })
    .await;
}

/// How many times instance `echo-1` of acme processed webhook event `id`
/// (0 if never), read through its `storage` action on `d`.
pub async fn echo_processed(d: &Daemon, token: &str, id: &str) -> u64 {
    let (status, body) = post(
        d,
        "/v1/tenants/acme/instances/echo-1/actions/storage",
        Some(token),
        &[],
        &serde_json::json!({"input": {"ops": [{"op": "get", "key": format!("events/{id}")}]},
                "actor": {"id": "test"}})
        .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["output"][0].as_str().map_or(0, |s| s.parse().unwrap())
}
