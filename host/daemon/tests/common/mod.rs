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
    .env_remove("SWITCHYARD_MASTER_KEY")
    .env_remove("SWITCHYARD_MASTER_KEY_PREVIOUS");
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
    let child = cmd
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
    listening(child)
}

/// The daemon `child` (`serve` with stdout piped), once it says where it
/// listens and every plugin is compiled (`/readyz?plugins=all`): with a
/// cold compile cache, `serve` compiles plugins in the background.
pub fn listening(child: Child) -> Daemon {
    let d = listening_now(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let (status, body) = get_blocking(&d.base, "/readyz?plugins=all");
        if status == 200 {
            return d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready after 10 minutes: {status} {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The daemon `child` once it says where it listens, perhaps still
/// compiling plugins.
pub fn listening_now(mut child: Child) -> Daemon {
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

/// A plain HTTP/1.1 GET without an async runtime: status and body.
pub fn get_blocking(base: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = base.strip_prefix("http://").unwrap_or(base);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {out:?}"));
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
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

/// A token of `role` (`api`, `tenant-admin`, `tenant-viewer`) for
/// `tenant`, labelled with its role.
pub fn role_token(cfg: &Path, tenant: &str, role: &str) -> String {
    cli(
        &[
            "token",
            "--config",
            cfg.to_str().unwrap(),
            "create",
            tenant,
            "--role",
            role,
            "--label",
            role,
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
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(what, std::time::Duration::from_secs(30), check).await
}

/// [`eventually`] for at most `patience`.
pub async fn eventually_within<T, F, Fut>(
    what: &str,
    patience: std::time::Duration,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let give_up = std::time::Instant::now() + patience;
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
    // A run ends by itself or at its deadline (30 s unless the test sets a
    // longer one): wait past the longest a test sets.
    let patience = std::time::Duration::from_secs(150);
    eventually_within(&format!("the `{job}` run"), patience, || async {
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

/// The PostgreSQL server the tests use (as the store's own tests):
/// `SWITCHYARD_TEST_POSTGRES`, by default the machine's, trust auth.
pub fn postgres_url() -> String {
    std::env::var("SWITCHYARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Runs `sql` on the test server, on a thread (and runtime) of its own, so
/// that sync and async code alike can call it.
pub fn postgres_execute(sql: String) -> Result<(), String> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            client.batch_execute(&sql).await.map_err(|e| e.to_string())
        })
    })
    .join()
    .unwrap()
}

/// A schema of the test server, dropped when this is, however the test
/// ends.
pub struct Schema(pub String);

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = postgres_execute(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0));
    }
}

/// Configuration directories of daemons that share one state database:
/// one SQLite daemon, or several on one PostgreSQL schema. Every tenant's
/// webhook token `hook-token` is `hook-t0ken`, set through the first
/// directory; every directory holds the same master key.
pub struct Cluster {
    pub dirs: Vec<tempfile::TempDir>,
    // Dropped last: the daemons are gone by then.
    _schema: Option<Schema>,
}

impl Cluster {
    /// `n` daemons on a new schema named after `name`, with `extra` in
    /// `switchyard.toml`.
    /// Each daemon opens 4 connections at most (tests run in parallel).
    pub fn postgres(name: &str, n: usize, extra: &str, tenants: &[(&str, &str)]) -> Self {
        Self::postgres_pool(name, n, 4, extra, tenants)
    }

    /// [`Cluster::postgres`] with `pool` connections per daemon.
    pub fn postgres_pool(
        name: &str,
        n: usize,
        pool: usize,
        extra: &str,
        tenants: &[(&str, &str)],
    ) -> Self {
        let schema = Schema(format!("it_{name}_{}", std::process::id()));
        let server = format!(
            "data_dir = \"data\"\n{extra}\n[storage]\nbackend = \"postgres\"\nurl = \"{}\"\nschema = \"{}\"\npool_size = {pool}\n",
            postgres_url(),
            schema.0
        );
        Self::new(&server, n, tenants, Some(schema))
    }

    /// One daemon on the embedded SQLite database.
    pub fn sqlite(extra: &str, tenants: &[(&str, &str)]) -> Self {
        Self::new(&format!("data_dir = \"data\"\n{extra}"), 1, tenants, None)
    }

    fn new(server: &str, n: usize, tenants: &[(&str, &str)], schema: Option<Schema>) -> Self {
        let dirs: Vec<_> = (0..n).map(|_| config_dir(server, tenants)).collect();
        let first = dirs[0].path().to_str().unwrap();
        for (tenant, _) in tenants {
            cli(
                &["secret", "--config", first, "set", tenant, "hook-token"],
                Some("hook-t0ken"),
            );
        }
        // The secrets are in the database; the key that seals them is each
        // daemon's to hold.
        for d in &dirs[1..] {
            std::fs::create_dir_all(d.path().join("data")).unwrap();
            std::fs::copy(
                dirs[0].path().join("data/master.key"),
                d.path().join("data/master.key"),
            )
            .unwrap();
        }
        Self {
            dirs,
            _schema: schema,
        }
    }

    /// Starts daemon `i`.
    pub fn start(&self, i: usize) -> Daemon {
        start(self.dirs[i].path())
    }

    /// The first configuration directory (for the CLI).
    pub fn cfg(&self) -> &str {
        self.dirs[0].path().to_str().unwrap()
    }

    /// A tenant token (tokens live in the shared database).
    pub fn token(&self, tenant: &str) -> String {
        token(self.dirs[0].path(), tenant)
    }

    /// Jobs of `tenant` in `state`, read through the CLI.
    pub fn jobs(&self, tenant: &str, state: &str) -> Vec<Value> {
        cli(
            &[
                "jobs",
                "--config",
                self.cfg(),
                "list",
                tenant,
                "--state",
                state,
                "--limit",
                "10000",
            ],
            None,
        )
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
    }
}

/// Posts `n` webhook deliveries `{"id": "bench-<i>"}` with the token
/// `hook-t0ken`, delivery `i` to `urls[i % urls.len()]`, from `clients`
/// concurrent senders; each must be accepted (200). Returns how long it
/// took and each delivery's latency (benchmarks).
pub async fn send_deliveries(
    client: &reqwest::Client,
    urls: Vec<String>,
    n: usize,
    clients: usize,
) -> (std::time::Duration, Vec<std::time::Duration>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let urls = Arc::new(urls);
    let next = Arc::new(AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let senders: Vec<_> = (0..clients)
        .map(|_| {
            let (urls, next, client) = (urls.clone(), next.clone(), client.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return latencies;
                    }
                    let sent = std::time::Instant::now();
                    let resp = client
                        .post(urls[i % urls.len()].as_str())
                        .header("x-switchyard-token", "hook-t0ken")
                        .json(&serde_json::json!({"id": format!("bench-{i}")}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status().as_u16(), 200);
                    latencies.push(sent.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    for s in senders {
        latencies.extend(s.await.unwrap());
    }
    (started.elapsed(), latencies)
}

/// Waits until every `(status URL, token)` reports an empty queue (nothing
/// queued or running, nothing dead); returns how long that took.
pub async fn wait_drained(
    client: &reqwest::Client,
    statuses: &[(String, String)],
) -> std::time::Duration {
    let started = std::time::Instant::now();
    let mut left: Vec<&(String, String)> = statuses.iter().collect();
    while !left.is_empty() {
        let mut still = Vec::new();
        for s in left {
            let st: Value = client
                .get(&s.0)
                .bearer_auth(&s.1)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let q = &st["queue"];
            if q["queued"] == 0 && q["running"] == 0 {
                assert_eq!(q["dead"], 0, "{st}");
            } else {
                still.push(s);
            }
        }
        left = still;
        if !left.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    started.elapsed()
}

/// A tenant file with instance `echo-1` of the bundled `echo` plugin and
/// two queued webhook routes with the token `secret:hook-token`: `events`
/// (the plugin counts each event in storage) and `sink` (it does nothing).
pub const ECHO_QUEUED: &str = r#"[[instance]]
id = "echo-1"
plugin = "echo"

[instance.webhooks.events]
token = "secret:hook-token"
event_id_field = "id"

[instance.webhooks.sink]
token = "secret:hook-token"
event_id_field = "id"
"#;

/// Sends webhook event `event` to `tenant`'s `echo-1` route `events`
/// through `d`, with the token `hook-t0ken`; it must be accepted (200).
/// Returns the answer.
pub async fn deliver(d: &Daemon, tenant: &str, event: Value) -> Value {
    let (status, body) = post(
        d,
        &format!("/hooks/{tenant}/echo-1/events"),
        None,
        &[("x-switchyard-token", "hook-t0ken")],
        &event.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The hostile guest component claiming plugin `id` at `version` (a
/// distinct component for each pair).
pub fn claiming(id: &str, version: &str) -> Vec<u8> {
    use switchyard_tests::{guests, patch_slot};
    let wasm = std::fs::read(guests::GUEST_HOSTILE).unwrap();
    patch_slot(&patch_slot(&wasm, "SY-ID", id), "SY-VERSION", version)
}
