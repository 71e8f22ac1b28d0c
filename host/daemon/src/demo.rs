//! `switchyard demo`: the daemon on the embedded default (SQLite in a
//! temporary data directory) with a sample tenant, driven over HTTP by a
//! scripted scenario that shows what the host does. Each step checks its
//! outcome; any failure exits non-zero. Afterwards the daemon keeps serving
//! until Ctrl-C, or exits at once with `--once`.
//!
//! The sample tenant `acme` runs the bundled `echo` plugin with a bearer
//! credential for a loopback stand-in API, a verified queued webhook and a
//! scheduled job, the `uem-actions` plugin against the Workspace ONE UEM
//! and ServiceNow simulators (`tests/sim`), the `session-import` plugin
//! against the BeyondTrust and ServiceNow simulators, and the
//! `access-tickets` plugin against the identity-system and ServiceNow
//! simulators, and the `mtd-tagging` plugin against the UEM and MTD
//! simulators. As first-party plugins land, the scenario grows to show
//! them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use switchyard_sim::beyondtrust::{BeyondTrust, BtConfig};
use switchyard_sim::identity::{Identity, IdentityConfig};
use switchyard_sim::mtd::{Mtd, MtdConfig};
use switchyard_sim::servicenow::{ServiceNow, ServiceNowConfig};
use switchyard_sim::slack::{Slack, SlackConfig};
use switchyard_sim::uem::{Uem, UemConfig};

use crate::boot::{load_config, open_state, runtime};
use crate::state::Live;

/// Fails with a message unless `cond` holds (a step's check).
fn ensure_step(cond: bool, what: &str) -> anyhow::Result<()> {
    if !cond {
        bail!("demo step failed: {what}");
    }
    Ok(())
}

/// A loopback stand-in for an upstream API: it says whether the request
/// carried the expected bearer token, without echoing any token.
async fn start_upstream(expected: SecretString) -> anyhow::Result<String> {
    let expected = Arc::new(expected);
    let app = Router::new().route(
        "/api/whoami",
        get(move |headers: HeaderMap| {
            let expected = expected.clone();
            async move {
                let sent = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let ok = sent == format!("Bearer {}", expected.expose_secret());
                axum::Json(json!({ "authenticated": ok, "user": if ok { "svc-demo" } else { "" } }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(origin)
}

/// The simulators the demo's tenant talks to.
struct Sims<'a> {
    uem: &'a Uem,
    sn: &'a ServiceNow,
    bt: &'a BeyondTrust,
    idm: &'a Identity,
    mtd: &'a Mtd,
    slack: &'a Slack,
}

/// Slack channels of the app-approval instance: (credential slot, channel).
const SLACK_CHANNELS: &[(&str, &str)] = &[
    ("slack-requests", "app-requests"),
    ("slack-approvals", "app-approvals"),
    ("slack-installs", "app-installs"),
];

fn tenant_file(upstream: &str, base: &str, s: &Sims) -> String {
    let (uem, sn, bt, idm, mtd) = (s.uem, s.sn, s.bt, s.idm, s.mtd);
    let slack_slots: String = SLACK_CHANNELS
        .iter()
        .map(|(slot, _)| {
            format!(
                "\n[instance.credentials.{slot}]\nkind = \"secret-url\"\nhosts = [\"{}\"]\nurl = \"secret:{slot}\"\n",
                s.slack.url()
            )
        })
        .collect();
    format!(
        r#"[roles]
"ITIL Agent" = ["operator", "standard", "agent"]
"Integration Admin" = ["admin", "viewer"]

[[instance]]
id = "echo-1"
plugin = "echo"
egress = ["{upstream}"]

[instance.config]
greeting = "welcome"

[instance.credentials.upstream]
kind = "bearer"
hosts = ["{upstream}"]
token = "secret:upstream-token"

[instance.webhooks.events]
token = "secret:hook-token"
event_id_field = "id"

[instance.jobs.tick]
interval = 300

[[instance]]
id = "uem"
plugin = "uem-actions"
egress = ["{uem_url}", "{sn_url}"]

[instance.config]
api_url = "{uem_url}"
servicenow_url = "{sn_url}"

[instance.credentials.uem]
kind = "basic"
hosts = ["{uem_url}"]
username = "{uem_user}"
password = "secret:uem-password"
extra_header = "aw-tenant-code"
extra_header_value = "secret:uem-tenant-code"

[instance.credentials.servicenow]
kind = "basic"
hosts = ["{sn_url}"]
username = "{sn_user}"
password = "secret:sn-password"

[[instance]]
id = "sessions"
plugin = "session-import"
egress = ["{bt_url}", "{sn_url}"]

[instance.config]
site_url = "{bt_url}"
servicenow_url = "{sn_url}"
associate_user = "true"

[instance.credentials.beyondtrust]
kind = "oauth2-client-credentials"
hosts = ["{bt_url}"]
token_url = "{bt_url}/oauth2/token"
client_id = "{bt_id}"
client_secret = "secret:bt-client-secret"

[instance.credentials.servicenow]
kind = "basic"
hosts = ["{sn_url}"]
username = "{sn_user}"
password = "secret:sn-password"
# In production, `[instance.jobs.pull]` pulls every 5 minutes; the demo
# pulls on demand so that its output is the same every time.

[[instance]]
id = "tickets"
plugin = "access-tickets"
egress = ["{sn_url}", "{idm_url}"]

[instance.config]
servicenow_url = "{sn_url}"
identity_url = "{idm_url}"

[instance.credentials.servicenow]
kind = "basic"
hosts = ["{sn_url}"]
username = "{sn_user}"
password = "secret:sn-password"

[instance.credentials.identity]
kind = "bearer"
hosts = ["{idm_url}"]
token = "secret:idm-token"
# In production, `[instance.jobs.sync]` runs every 15 minutes; the demo
# runs it on demand.

[[instance]]
id = "mtd"
plugin = "mtd-tagging"
egress = ["{uem_url}", "{mtd_url}"]

[instance.config]
api_url = "{uem_url}"
mtd_url = "{mtd_url}"
groups = "571"

[instance.credentials.uem]
kind = "basic"
hosts = ["{uem_url}"]
username = "{uem_user}"
password = "secret:uem-password"
extra_header = "aw-tenant-code"
extra_header_value = "secret:uem-tenant-code"

[instance.credentials.mtd]
kind = "api-key"
hosts = ["{mtd_url}"]
header = "x-api-key"
key = "secret:mtd-key"

[instance.webhooks.risk-changed]
hmac_secret = "secret:mtd-hook"
signature_header = "x-mtd-signature"

[[instance]]
id = "apps"
plugin = "app-approval"
egress = ["{uem_url}", "{sn_url}", "{slack_url}"]

[instance.config]
uem_url = "{uem_url}"
servicenow_url = "{sn_url}"
servicenow_namespace = "x_acme_uem"
callback_url = "{base}/hooks/acme/apps/decisions"

[instance.credentials.uem]
kind = "basic"
hosts = ["{uem_url}"]
username = "{uem_user}"
password = "secret:uem-password"
extra_header = "aw-tenant-code"
extra_header_value = "secret:uem-tenant-code"

[instance.credentials.servicenow]
kind = "basic"
hosts = ["{sn_url}"]
username = "{sn_user}"
password = "secret:sn-password"
{slack_slots}
[instance.webhooks.decisions]
allowed_ips = ["127.0.0.1"]
# In production, `[instance.jobs.tick]` runs every 5 minutes; the demo runs
# it on demand.
"#,
        slack_url = s.slack.url(),
        mtd_url = mtd.url(),
        idm_url = idm.url(),
        bt_url = bt.url(),
        bt_id = bt.config().client_id,
        uem_url = uem.url(),
        sn_url = sn.url(),
        uem_user = uem.config().username,
        sn_user = sn.config().username,
    )
}

/// Opens an incident in the ServiceNow simulator for the user with `email`;
/// returns its number.
fn open_incident(sn: &ServiceNow, email: &str, what: &str) -> anyhow::Result<String> {
    let inc = sn
        .open_incident(email, what)
        .with_context(|| format!("no ServiceNow user {email}"))?;
    Ok(inc["number"].as_str().unwrap_or_default().to_owned())
}

/// A per-run random secret, so nothing printed can be a real credential.
fn fresh_secret(what: &str) -> SecretString {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    SecretString::from(format!("{what}-{nanos:x}-{}", std::process::id()))
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    async fn action(
        &self,
        action: &str,
        input: Value,
        roles: &[&str],
    ) -> anyhow::Result<(u16, Value)> {
        self.action_on("echo-1", action, input, roles).await
    }

    async fn action_on(
        &self,
        instance: &str,
        action: &str,
        input: Value,
        roles: &[&str],
    ) -> anyhow::Result<(u16, Value)> {
        let body = json!({ "input": input, "actor": { "id": "jdoe", "email": "jdoe@acme.example", "roles": roles } });
        self.send(
            self.http
                .post(format!(
                    "{}/v1/tenants/acme/instances/{instance}/actions/{action}",
                    self.base
                ))
                .bearer_auth(&self.token)
                .json(&body),
        )
        .await
    }

    /// Runs `job` of `instance` now and waits for it (at most 30 s); its
    /// summary.
    async fn run_job(&self, instance: &str, job: &str) -> anyhow::Result<String> {
        let status_path = format!("/v1/tenants/acme/instances/{instance}/status");
        let runs = |st: &Value| -> (i64, Value) {
            let stat = st["invocations"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["kind"] == "job" && s["name"] == job)
                .cloned()
                .unwrap_or(Value::Null);
            (stat["runs"].as_i64().unwrap_or(0), stat)
        };
        let (before, _) = runs(&self.get(&status_path).await?.1);
        let (status, out) = self
            .send(
                self.http
                    .post(format!(
                        "{}/v1/tenants/acme/instances/{instance}/jobs/{job}/run",
                        self.base
                    ))
                    .bearer_auth(&self.token),
            )
            .await?;
        ensure_step(status == 202, &format!("run-now answered {status}: {out}"))?;
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            let (n, stat) = runs(&self.get(&status_path).await?.1);
            if n > before {
                ensure_step(
                    stat["last_outcome"] == "ok",
                    &format!("the `{job}` run failed: {stat}"),
                )?;
                return Ok(stat["last_summary"].as_str().unwrap_or_default().to_owned());
            }
            ensure_step(
                Instant::now() < give_up,
                &format!("the `{job}` run finished"),
            )?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.send(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.token),
        )
        .await
    }
}

fn step(n: u32, title: &str) {
    println!("\n{n}. {title}");
}

/// Runs the demo.
pub async fn run(once: bool, listen: SocketAddr) -> anyhow::Result<()> {
    let started = Instant::now();
    let upstream_token = fresh_secret("upstream");
    let hook_token = fresh_secret("hook");
    let upstream = start_upstream(upstream_token.clone()).await?;
    // Stand-ins for Workspace ONE UEM and ServiceNow, with seeded data: the
    // same people own the devices and call in the incidents.
    let uem = Uem::start(UemConfig::default(), 7, 24).await?;
    let sn = ServiceNow::start(ServiceNowConfig::default(), 7, 12, 0).await?;
    // A BeyondTrust support site with a day's finished sessions, and the
    // account of one of its reps in ServiceNow.
    let bt = BeyondTrust::start(BtConfig::default(), 7, 12).await?;
    sn.insert("sys_user", &[("user_name", "jrep"), ("name", "Jane Rep")]);
    // An identity system with one access request waiting for a person (its
    // requester is one of ServiceNow's seeded users).
    let idm = Identity::start(IdentityConfig::default(), 7, 1).await?;
    // A mobile threat defense service, empty until the plugin fills it.
    let mtd = Mtd::start(MtdConfig::default()).await?;
    // Slack, with one incoming webhook per channel.
    let slack = Slack::start(SlackConfig {
        channels: SLACK_CHANNELS
            .iter()
            .map(|(_, c)| (*c).to_owned())
            .collect(),
        ..SlackConfig::default()
    })
    .await?;
    // Bound before the configuration is written: ServiceNow's callbacks
    // need the daemon's address.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let base = format!("http://{}", listener.local_addr()?);

    // A configuration directory like an operator's, in a temporary place.
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("switchyard.toml"), "data_dir = \"data\"\n")?;
    std::fs::create_dir(dir.path().join("tenants"))?;
    std::fs::write(
        dir.path().join("tenants/acme.toml"),
        tenant_file(
            &upstream,
            &base,
            &Sims {
                uem: &uem,
                sn: &sn,
                bt: &bt,
                idm: &idm,
                mtd: &mtd,
                slack: &slack,
            },
        ),
    )?;
    let cfg = load_config(dir.path())?;
    let _lock = crate::boot::lock_data_dir(&cfg)?;
    let (db, secrets) = open_state(&cfg).await?;
    secrets
        .set("acme", "upstream-token", &upstream_token)
        .await?;
    secrets.set("acme", "hook-token", &hook_token).await?;
    for (name, value) in [
        ("uem-password", &uem.config().password),
        ("uem-tenant-code", &uem.config().tenant_code),
        ("sn-password", &sn.config().password),
        ("bt-client-secret", &bt.config().client_secret),
        ("idm-token", &idm.config().token),
        ("mtd-key", &mtd.config().api_key),
        ("mtd-hook", &mtd.config().webhook_secret),
    ] {
        secrets
            .set("acme", name, &SecretString::from(value.clone()))
            .await?;
    }
    for (slot, channel) in SLACK_CHANNELS {
        let url = SecretString::from(slack.webhook_url(channel));
        secrets.set("acme", slot, &url).await?;
    }
    let (_, api_token) = db.create_token("acme", "demo", "api").await?;

    let rt = Arc::new(runtime(cfg.wasm_slots())?);
    let state = Live::start(&cfg, &[], rt, db, Arc::new(secrets), false).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        tokio::select! {
            _ = stop_rx => {},
            () = crate::server::shutdown_signal() => {},
        }
    };
    let server = tokio::spawn(crate::server::serve_on(state, listener, shutdown));
    println!(
        "Switchyard demo: daemon on {base} (SQLite in {})",
        dir.path().display()
    );
    println!("tenant `acme`, instance `echo-1` (bundled plugin echo), stand-in API at {upstream}");
    println!(
        "tenant `acme`, instance `uem` (bundled plugin uem-actions): UEM simulator at {}, ServiceNow simulator at {}",
        uem.url(),
        sn.url()
    );
    println!(
        "tenant `acme`, instance `sessions` (bundled plugin session-import): BeyondTrust simulator at {}",
        bt.url()
    );
    println!(
        "tenant `acme`, instance `tickets` (bundled plugin access-tickets): identity-system simulator at {}",
        idm.url()
    );
    println!(
        "tenant `acme`, instance `mtd` (bundled plugin mtd-tagging): MTD simulator at {}",
        mtd.url()
    );
    mtd.set_webhook(&format!("{base}/hooks/acme/mtd/risk-changed"));

    let c = Client {
        http: reqwest::Client::new(),
        base: base.clone(),
        token: api_token.expose_secret().to_owned(),
    };
    let scenario = async {
        step(
            1,
            "an agent invokes `echo` — the host supplies context and configuration",
        );
        let (status, out) = c
            .action("echo", json!({"ticket": "INC0010001"}), &["ITIL Agent"])
            .await?;
        ensure_step(status == 200, &format!("echo answered {status}: {out}"))?;
        let o = &out["output"];
        println!(
            "   {status}: tenant={} greeting={} roles={}",
            o["context"]["tenant"], o["greeting"], o["context"]["actor"]["roles"]
        );
        ensure_step(
            o["greeting"] == "welcome",
            "echo returns the configured greeting",
        )?;

        step(
            2,
            "`fetch` needs role `operator`: an employee is refused before the plugin runs",
        );
        let url = format!("{upstream}/api/whoami");
        let (status, out) = c
            .action(
                "fetch",
                json!({"url": url, "credential": "upstream"}),
                &["Employee"],
            )
            .await?;
        println!(
            "   {status}: {}",
            out["error"]["message"].as_str().unwrap_or_default()
        );
        ensure_step(status == 403, "the role check refuses the employee")?;

        step(
            3,
            "the agent's role maps to `operator`; the host attaches the credential",
        );
        let (status, out) = c
            .action(
                "fetch",
                json!({"url": url, "credential": "upstream"}),
                &["ITIL Agent"],
            )
            .await?;
        println!(
            "   {status}: upstream says {}",
            out["output"]["body"].as_str().unwrap_or_default()
        );
        let leaked = out.to_string().contains(upstream_token.expose_secret());
        println!("   secret visible to the plugin or the caller: {leaked}");
        ensure_step(
            out["output"]["body"]
                .as_str()
                .unwrap_or_default()
                .contains("\"authenticated\":true"),
            "upstream saw the credential",
        )?;
        ensure_step(!leaked, "the secret stays in the host")?;

        step(
            4,
            "egress policy — the plugin tries the cloud metadata address",
        );
        let (_, out) = c
            .action(
                "fetch",
                json!({"url": "http://169.254.169.254/latest/meta-data/"}),
                &["ITIL Agent"],
            )
            .await?;
        println!(
            "   {}: {}",
            out["output"]["error"]["kind"], out["output"]["error"]["message"]
        );
        ensure_step(
            out["output"]["error"]["kind"] == "denied",
            "metadata address is denied",
        )?;

        step(
            5,
            "a verified webhook is queued durably; its duplicate is not processed twice",
        );
        let hook = format!("{base}/hooks/acme/echo-1/events");
        for attempt in ["first", "again"] {
            let (status, out) = c
                .send(
                    c.http
                        .post(&hook)
                        .header("x-switchyard-token", hook_token.expose_secret())
                        .json(&json!({"id": "evt-1"})),
                )
                .await?;
            println!(
                "   {attempt}: {status} job {} duplicate={}",
                out["job_id"], out["duplicate"]
            );
        }
        let (status, _) = c
            .send(
                c.http
                    .post(&hook)
                    .header("x-switchyard-token", "wrong")
                    .json(&json!({"id": "evt-2"})),
            )
            .await?;
        println!("   wrong token: {status}");
        ensure_step(status == 401, "a wrong webhook token is refused")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let count = loop {
            let (_, out) = c
                .action(
                    "storage",
                    json!({"ops": [{"op": "get", "key": "events/evt-1"}]}),
                    &[],
                )
                .await?;
            if let Some(n) = out["output"][0].as_str() {
                break n.to_owned();
            }
            if Instant::now() > deadline {
                bail!("demo step failed: the queued webhook was not processed");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        println!("   processed by the plugin {count} time(s)");
        ensure_step(count == "1", "the event was processed exactly once")?;

        step(
            6,
            "Workspace ONE UEM: Test Connection reports the UEM version",
        );
        let (status, out) = c
            .action_on("uem", "test-connection", json!({}), &["Integration Admin"])
            .await?;
        println!("   {status}: UEM {}", out["output"]["version"]);
        ensure_step(
            status == 200,
            &format!("test-connection answered {status}: {out}"),
        )?;

        let devices = uem.devices();
        let phone = devices
            .iter()
            .find(|d| d.platform == "Apple")
            .context("the seed has an iPhone")?;
        let number = open_incident(&sn, &phone.user_email, "Lost my phone on the train")?;
        step(
            7,
            &format!("from incident {number}, the agent locks the caller's iPhone"),
        );
        let (status, out) = c
            .action_on(
                "uem",
                "lock-device",
                json!({"device": {"id": phone.id}, "incident": {"number": number}}),
                &["ITIL Agent"],
            )
            .await?;
        ensure_step(
            status == 200,
            &format!("lock-device answered {status}: {out}"),
        )?;
        let o = &out["output"];
        println!(
            "   {status}: {} {} ({}) of {} — command {}",
            o["device"]["model"].as_str().unwrap_or_default(),
            o["device"]["id"],
            o["device"]["os"].as_str().unwrap_or_default(),
            o["device"]["email"].as_str().unwrap_or_default(),
            o["result"]["command"]
        );
        let sent = uem.control().requests_to("/commands");
        if let Some(r) = sent.last() {
            println!(
                "   UEM received: {} {}?{}",
                r.method,
                r.path,
                r.query.as_deref().unwrap_or_default()
            );
        }
        let note = uem
            .device(phone.id)
            .and_then(|d| d.notes.last().cloned())
            .map(|n| n.note)
            .unwrap_or_default();
        println!("   note on the device: {note}");
        let inc = sn
            .records("incident")
            .into_iter()
            .find(|i| i["number"] == number.as_str())
            .context("the incident exists")?;
        let work = sn.work_notes("incident", inc["sys_id"].as_str().unwrap_or_default());
        println!(
            "   work note on {number}: {}",
            work.last().map(String::as_str).unwrap_or("(none)")
        );
        ensure_step(
            !note.is_empty() && !work.is_empty(),
            "the device and the incident record the lock",
        )?;

        let mac = devices
            .iter()
            .find(|d| d.platform == "AppleOsX")
            .context("the seed has a Mac")?;
        let number = open_incident(&sn, &mac.user_email, "Forgot my FileVault password")?;
        step(
            8,
            &format!(
                "from incident {number}, the agent looks up the FileVault recovery key of the caller's Mac"
            ),
        );
        let (status, out) = c
            .action_on(
                "uem",
                "view-recovery-key",
                json!({"device": {"serial": mac.serial}, "incident": {"number": number}}),
                &["ITIL Agent"],
            )
            .await?;
        ensure_step(
            status == 200,
            &format!("view-recovery-key answered {status}: {out}"),
        )?;
        println!(
            "   {status}: {} key for {} {}: {}",
            out["output"]["result"]["type"].as_str().unwrap_or_default(),
            mac.model,
            mac.serial,
            out["output"]["result"]["keys"][0]["key"]
                .as_str()
                .unwrap_or_default()
        );

        step(
            9,
            "caller-email validation: the same Mac from an incident of another caller is refused",
        );
        let stranger = devices
            .iter()
            .find(|d| d.user_email != mac.user_email)
            .context("the seed has two people")?;
        let number = open_incident(&sn, &stranger.user_email, "Please unlock this laptop")?;
        let (status, out) = c
            .action_on(
                "uem",
                "view-recovery-key",
                json!({"device": {"serial": mac.serial}, "incident": {"number": number}}),
                &["ITIL Agent"],
            )
            .await?;
        println!(
            "   {status}: {}",
            out["error"]["message"].as_str().unwrap_or_default()
        );
        ensure_step(
            status == 403,
            "the key is not shown for someone else's device",
        )?;

        let caller = uem
            .devices()
            .first()
            .map(|d| d.user_email.clone())
            .context("the seed has a device owner")?;
        let number = open_incident(&sn, &caller, "Outlook keeps crashing")?;
        step(
            10,
            &format!("from incident {number}, the agent generates a remote support session key"),
        );
        let (status, out) = c
            .action_on(
                "sessions",
                "generate-session-key",
                json!({"incident": number}),
                &["ITIL Agent"],
            )
            .await?;
        ensure_step(
            status == 200,
            &format!("generate-session-key answered {status}: {out}"),
        )?;
        println!(
            "   {status}: key {} — the customer opens {}",
            out["output"]["short_key"].as_str().unwrap_or_default(),
            out["output"]["key_url"].as_str().unwrap_or_default()
        );

        step(
            11,
            "the session ends; Pull Sessions Now imports the last day's sessions into ServiceNow \
             (the `pull` job does this every 5 minutes)",
        );
        let lsid = bt.complete_session(Some(&number), None);
        // Reports hold sessions that ended before the second being asked.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (status, out) = c
            .action_on(
                "sessions",
                "pull-sessions-now",
                json!({}),
                &["Integration Admin"],
            )
            .await?;
        ensure_step(
            status == 200,
            &format!("pull-sessions-now answered {status}: {out}"),
        )?;
        println!(
            "   {status}: {}",
            out["output"]["summary"].as_str().unwrap_or_default()
        );
        let record = sn
            .records("x_bmgr_support_session")
            .into_iter()
            .find(|r| r["u_lsid"] == lsid.as_str())
            .context("the session has a record")?;
        let inc = sn
            .records("incident")
            .into_iter()
            .find(|i| i["number"] == number.as_str())
            .context("the incident exists")?;
        println!(
            "   record for session {lsid}: rep {}, customer {}, {} s, attached to {number} by {}",
            record["u_primary_rep_name"].as_str().unwrap_or_default(),
            record["u_customer_name"].as_str().unwrap_or_default(),
            record["u_duration"].as_str().unwrap_or_default(),
            record["u_association"].as_str().unwrap_or_default(),
        );
        let work = sn.work_notes("incident", inc["sys_id"].as_str().unwrap_or_default());
        for w in &work {
            println!(
                "   work note on {number}: {}",
                w.lines().next().unwrap_or_default()
            );
        }
        ensure_step(
            record["u_task"] == inc["sys_id"] && work.len() >= 2,
            "the session is attached to the incident, with work notes for the key and the session",
        )?;
        let (_, again) = c
            .action_on(
                "sessions",
                "pull-sessions-now",
                json!({}),
                &["Integration Admin"],
            )
            .await?;
        let total = sn.records("x_bmgr_support_session").len();
        println!(
            "   pulled again: {} new; {total} record(s) in all, one per session",
            again["output"]["stats"]["imported"]
        );
        ensure_step(
            again["output"]["stats"]["imported"] == 0,
            "a second pull imports nothing twice",
        )?;

        step(
            12,
            "an access request waits for a person: the `sync` job gives it a ServiceNow ticket, \
             the agent closes the ticket, and the next run fulfils the request",
        );
        let request = idm
            .requests()
            .first()
            .cloned()
            .context("the seeded request")?;
        let summary = c.run_job("tickets", "sync").await?;
        println!("   sync: {summary}");
        let ticket = sn
            .records("sc_req_item")
            .into_iter()
            .find(|t| t["correlation_id"] == request.id.as_str())
            .context("the request has a ticket")?;
        let number = ticket["number"].as_str().unwrap_or_default().to_owned();
        println!(
            "   {} ({}) → ticket {number}; the request is now {}",
            request.id,
            request.resource,
            idm.request(&request.id)
                .map(|r| r.status)
                .unwrap_or_default()
        );
        let sys_id = ticket["sys_id"].as_str().unwrap_or_default();
        ensure_step(
            sn.agent_update(
                "sc_req_item",
                sys_id,
                &[("state", "3"), ("comments", "Role granted")],
            ),
            "the agent closes the ticket",
        )?;
        let summary = c.run_job("tickets", "sync").await?;
        println!("   agent closed {number} complete; sync: {summary}");
        let done = idm.request(&request.id).context("the request")?;
        println!(
            "   {} is {} (ticket state {}, comment \"{}\")",
            done.id,
            done.status,
            done.ticket_state.as_deref().unwrap_or("-"),
            done.history
                .last()
                .and_then(|h| h["comment"].as_str())
                .unwrap_or_default()
        );
        ensure_step(
            done.status == "fulfilled",
            "the closed ticket fulfils the access request",
        )?;

        step(
            13,
            "the `device-sync` job stores group 571's devices in the MTD service and tags them; \
             the service flags one as high risk, and its signed notice moves the device's tag",
        );
        let summary = c.run_job("mtd", "device-sync").await?;
        println!("   device-sync: {summary}");
        let tag_of = |device: i64| -> Vec<String> {
            uem.tags()
                .into_iter()
                .filter(|t| t.devices.contains(&device))
                .map(|t| t.name)
                .collect()
        };
        let flagged = uem
            .devices()
            .into_iter()
            .find(|d| d.group == 571)
            .context("group 571 has a device")?;
        println!("   device {} tags: {:?}", flagged.id, tag_of(flagged.id));
        let sent = mtd
            .set_risk(&flagged.id.to_string(), "high", &["jailbreak"])
            .await
            .context("the device is in the MTD inventory")?;
        ensure_step(
            sent.outcome == Ok(200),
            &format!("the signed notice is accepted: {:?}", sent.outcome),
        )?;
        let give_up = Instant::now() + Duration::from_secs(30);
        while !tag_of(flagged.id).iter().any(|t| t == "CHKP_Risk_High") {
            ensure_step(Instant::now() < give_up, "the risk tag moves")?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "   after the risk change: device {} tags: {:?}",
            flagged.id,
            tag_of(flagged.id)
        );

        step(
            14,
            "an employee requests an app that needs approval: ServiceNow gets the request, \
             the agent approves it, UEM installs it, and Slack hears each step (its webhook \
             URLs are secret-url credentials the plugin never sees)",
        );
        let device = uem
            .devices()
            .into_iter()
            .find(|d| d.platform == "WinRT")
            .context("a Windows device")?;
        let (status, out) = c
            .action_on(
                "apps",
                "request-app",
                json!({
                    "requester": {"user_name": device.user_name, "email": device.user_email},
                    "device": {"id": device.id},
                    "app": {"id": 301, "categories": ["Developer Tools"]},
                    "notes": "For the build pipeline",
                }),
                &["ITIL Agent"],
            )
            .await?;
        ensure_step(
            status == 200,
            &format!("request-app answered {status}: {out}"),
        )?;
        let request = &out["output"]["request"];
        let id = request["request_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let sc = sn
            .records("sc_request")
            .into_iter()
            .find(|r| r["u_uem_request_id"] == id.as_str())
            .context("ServiceNow has the request")?;
        println!(
            "   request {id}: {} for device {} → ServiceNow {} ({})",
            request["app"]["name"].as_str().unwrap_or_default(),
            device.id,
            sc["number"].as_str().unwrap_or_default(),
            request["status"].as_str().unwrap_or_default()
        );
        let cb = sn
            .decide(
                sc["sys_id"].as_str().unwrap_or_default(),
                true,
                "Approved for the team",
            )
            .await;
        ensure_step(
            cb.outcome == Ok(200),
            &format!("the approval callback is accepted: {:?}", cb.outcome),
        )?;
        let mut state = String::new();
        for _ in 0..5 {
            let summary = c.run_job("apps", "tick").await?;
            let (_, r) = c
                .action_on(
                    "apps",
                    "get-request",
                    json!({ "request_id": id }),
                    &["Integration Admin"],
                )
                .await?;
            state = r["output"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            println!("   tick: {summary} → {state}");
            if state == "Installed" {
                break;
            }
        }
        ensure_step(state == "Installed", "UEM reports the app installed")?;
        for (_, channel) in SLACK_CHANNELS {
            for m in slack.messages(channel) {
                println!("   slack #{channel}: {}", m.text.unwrap_or_default());
            }
        }

        step(
            15,
            "status — the scheduled job `tick` ran at start-up and is due again in 300 s",
        );
        let (_, st) = c.get("/v1/tenants/acme/instances/echo-1/status").await?;
        println!(
            "   paused={} jobs={} queue={}",
            st["paused"], st["jobs"], st["queue"]
        );

        step(16, "audit log (newest first; no bodies, tokens or secrets)");
        let (_, audit) = c.get("/v1/tenants/acme/audit?limit=10").await?;
        for e in audit["entries"].as_array().into_iter().flatten() {
            println!(
                "   {:<7} {:<45} {}",
                e["kind"].as_str().unwrap_or(""),
                e["what"].as_str().unwrap_or(""),
                e["outcome"].as_str().unwrap_or("")
            );
        }

        step(17, "metrics (Prometheus)");
        let text = c
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        for line in text.lines().filter(|l| {
            l.starts_with("switchyard_invocations_total")
                || l.starts_with("switchyard_egress_requests_total")
        }) {
            println!("   {line}");
        }
        anyhow::Ok(())
    };
    let result = scenario.await;
    match &result {
        Ok(()) => println!(
            "\nAll steps passed in {} ms.",
            started.elapsed().as_millis()
        ),
        Err(_) => {
            let _ = stop_tx.send(());
            let _ = server.await;
            return result;
        }
    }
    if once {
        let _ = stop_tx.send(());
    } else {
        println!("\nThe daemon keeps serving at {base}; Ctrl-C stops it. Try:");
        println!(
            "  curl -s -X POST {base}/v1/tenants/acme/instances/echo-1/actions/echo \\\n    -H 'authorization: Bearer {}' \\\n    -d '{{\"input\":{{\"hi\":1}},\"actor\":{{\"id\":\"me\",\"roles\":[]}}}}'",
            api_token.expose_secret()
        );
    }
    server.await.context("the demo daemon task")??;
    Ok(())
}
