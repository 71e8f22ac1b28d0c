//! The `app-approval` plugin driven through the daemon against the UEM,
//! ServiceNow and Slack simulators: the round trip approved and installed,
//! rejected, expired (with the plugins' clock moved ahead, no waiting), an
//! install error, every decision-callback edge case and forged tokens,
//! ServiceNow down while forwarding (retried, not duplicated), a Slack 429
//! storm (delayed, none lost, in order), a `kill -9` after ServiceNow took
//! a request and before the plugin heard so (no second request), and the
//! checks before anything leaves. Slack webhooks are `secret-url` credentials the plugin never sees.

mod common;

use common::*;
use serde_json::{Value, json};
use switchyard_sim::common::{Fault, FaultKind};
use switchyard_sim::servicenow::{ServiceNow, ServiceNowConfig};
use switchyard_sim::slack::{Slack, SlackConfig};
use switchyard_sim::uem::{Uem, UemConfig};

const BASE: &str = "/v1/tenants/acme/instances/apps";
const CHANNELS: [&str; 4] = ["requests", "approvals", "installs", "alerts"];
const DAY: u64 = 86_400;

struct Env {
    uem: Uem,
    sn: ServiceNow,
    slack: Slack,
    dir: tempfile::TempDir,
    d: Daemon,
    addr: String,
    token: String,
}

struct Options {
    uem: UemConfig,
    slack_burst: u32,
    /// Slack messages per second, steady.
    slack_pace: f64,
    /// A Slack slot bound by mistake as a header token, not a secret URL.
    bearer_slot: Option<&'static str>,
    /// Slack channels archived (their webhook answers 410).
    archived: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            uem: UemConfig {
                rate_limit_per_minute: u32::MAX,
                install_reads: 1,
                ..UemConfig::default()
            },
            slack_burst: 20,
            slack_pace: 1.0,
            bearer_slot: None,
            archived: Vec::new(),
        }
    }
}

async fn setup() -> Env {
    setup_with(Options::default()).await
}

async fn setup_with(o: Options) -> Env {
    let uem = Uem::start(o.uem.clone(), 7, 40).await.unwrap();
    let sn = ServiceNow::start(
        ServiceNowConfig {
            rate_limit_per_minute: u32::MAX,
            ..ServiceNowConfig::default()
        },
        7,
        5,
        0,
    )
    .await
    .unwrap();
    let slack = Slack::start(SlackConfig {
        channels: CHANNELS
            .iter()
            .map(|c| (*c).to_owned())
            .filter(|c| !o.archived.contains(c))
            .collect(),
        archived: o.archived.clone(),
        burst: o.slack_burst,
        per_second: o.slack_pace,
    })
    .await
    .unwrap();
    let addr = free_addr();
    let slack_slots: String = CHANNELS
        .iter()
        .map(|c| {
            if o.bearer_slot == Some(*c) {
                format!(
                    "[instance.credentials.slack-{c}]\nkind = \"bearer\"\nhosts = [\"{}\"]\ntoken = \"secret:slack-{c}\"\n\n",
                    slack.url()
                )
            } else {
                format!(
                    "[instance.credentials.slack-{c}]\nkind = \"secret-url\"\nhosts = [\"{}\"]\nurl = \"secret:slack-{c}\"\n\n",
                    slack.url()
                )
            }
        })
        .collect();
    let acme = format!(
        r#"[roles]
"App Admin" = ["admin", "viewer"]

[[instance]]
id = "apps"
plugin = "app-approval"
egress = ["{uem}", "{sn}", "{slack}"]

[instance.config]
uem_url = "{uem}"
servicenow_url = "{sn}"
servicenow_namespace = "x_acme_uem"
callback_url = "http://{addr}/hooks/acme/apps/decisions"

{uem_credential}
{sn_credential}
{slack_slots}
[instance.webhooks.decisions]
allowed_ips = ["127.0.0.1"]

[instance.webhooks.requests]
token = "secret:intake-token"
"#,
        uem = uem.url(),
        sn = sn.url(),
        slack = slack.url(),
        uem_credential = uem_basic_credential(&uem),
        sn_credential = servicenow_basic_credential(&sn),
    );
    let mut secrets = vec![
        ("uem-password", o.uem.password.clone()),
        ("uem-tenant-code", o.uem.tenant_code.clone()),
        ("sn-password", sn.config().password.clone()),
        ("intake-token", "intake-t0ken".to_owned()),
    ];
    let names: Vec<String> = CHANNELS.iter().map(|c| format!("slack-{c}")).collect();
    for (c, name) in CHANNELS.iter().zip(&names) {
        secrets.push((name.as_str(), slack.webhook_url(c)));
    }
    // Development mode: the tests move the plugins' clock ahead
    // (SWITCHYARD_TEST_CLOCK_OFFSET_SECS), which production mode refuses.
    let (dir, token) = acme_with_server(
        "data_dir = \"data\"\nmode = \"development\"\n",
        &acme,
        &secrets,
    );
    let d = start_with(dir.path(), &addr, &[]);
    Env {
        uem,
        sn,
        slack,
        dir,
        d,
        addr,
        token,
    }
}

impl Env {
    async fn act(&self, action: &str, input: Value) -> (u16, Value) {
        let path = format!("{BASE}/actions/{action}");
        let (status, out) = act(&self.d, &self.token, &path, &["App Admin"], input).await;
        match out.get("output") {
            Some(o) if status == 200 => (status, o.clone()),
            _ => (status, out),
        }
    }

    /// Kills the daemon (SIGKILL) and starts it again on the same address,
    /// its plugins' clock `secs` ahead.
    fn restart_ahead(&mut self, secs: u64) {
        self.d.child.kill().unwrap();
        self.d.child.wait().unwrap();
        self.d = start_with(
            self.dir.path(),
            &self.addr,
            &[("SWITCHYARD_TEST_CLOCK_OFFSET_SECS", &secs.to_string())],
        );
    }

    async fn tick(&self) -> String {
        let job = run_job(&self.d, &self.token, BASE, "tick").await;
        assert_eq!(job["last_outcome"], "ok", "{job}");
        job["last_summary"].as_str().unwrap().to_owned()
    }

    /// An enrolled device of `platform` (UEM's name), the `n`th.
    fn device(&self, platform: &str, n: usize) -> i64 {
        self.uem
            .devices()
            .into_iter()
            .filter(|d| d.platform == platform)
            .nth(n)
            .unwrap_or_else(|| panic!("no {n}th {platform} device"))
            .id
    }

    async fn request(&self, device: i64, app: i64) -> (u16, Value) {
        self.act(
            "request-app",
            json!({
                "requester": {"user_id": "812", "user_name": "jdoe", "first_name": "Jane",
                              "last_name": "Doe", "email": "jane.doe@acme.example"},
                "domain": "acme",
                "device": {"id": device},
                "app": {"id": app, "categories": ["Developer Tools"]},
                "notes": "Needed for the build pipeline",
            }),
        )
        .await
    }

    async fn get(&self, id: &str) -> Value {
        let (status, r) = self.act("get-request", json!({"request_id": id})).await;
        assert_eq!(status, 200, "{r}");
        r
    }

    /// The sc_request ServiceNow created for request `id` (exactly one).
    fn sc_request(&self, id: &str) -> Value {
        let found: Vec<Value> = self
            .sn
            .records("sc_request")
            .into_iter()
            .filter(|r| r["u_uem_request_id"] == id)
            .collect();
        assert_eq!(found.len(), 1, "sc_requests of {id}: {found:?}");
        found[0].clone()
    }

    fn callback_url(&self, id: &str) -> String {
        self.sc_request(id)["u_uem_callback_url"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Posts `body` to a callback URL, as ServiceNow would.
    async fn callback(&self, url: &str, body: Value) -> (u16, Value) {
        let path = url
            .strip_prefix(&self.d.base)
            .expect("a URL of this daemon");
        post(&self.d, path, None, &[], &body.to_string()).await
    }

    fn texts(&self, channel: &str) -> Vec<String> {
        self.slack
            .messages(channel)
            .into_iter()
            .map(|m| m.text.unwrap_or_default())
            .collect()
    }
}

fn statuses(r: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in r["history"].as_array().unwrap() {
        let s = e["status"].as_str().unwrap().to_owned();
        if out.last() != Some(&s) {
            out.push(s);
        }
    }
    out
}

#[tokio::test]
async fn an_approved_request_is_installed_and_announced_in_each_channel() {
    let env = setup().await;
    let device = env.device("WinRT", 0);
    let (status, out) = env.request(device, 301).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["existing"], false);
    let id = out["request"]["request_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(out["request"]["status"], "Pending Approval");
    assert_eq!(out["request"]["forwarded"], true, "{out}");

    // ServiceNow got the seed's payload.
    let sc = env.sc_request(&id);
    assert_eq!(sc["u_uem_device_id"], device.to_string());
    assert_eq!(sc["u_requesting_user"], "jdoe");
    let sent: Value = serde_json::from_str(sc["description"].as_str().unwrap()).unwrap();
    assert_eq!(sent["RequestId"], id);
    assert_eq!(
        sent["RequestFor"]["UserAttributes"]["email"],
        "jane.doe@acme.example"
    );
    assert_eq!(sent["CatalogItem"]["Name"], "Visual Studio Code");
    assert_eq!(
        sent["CatalogItem"]["Properties"]["package_id"],
        "Microsoft.VisualStudioCode"
    );
    assert_eq!(sent["DeviceProperties"]["platform"], "windows");
    let due = sent["DueDate"].as_u64().unwrap();
    let created = out["request"]["created_ms"].as_u64().unwrap();
    assert_eq!(due - created, 14 * DAY * 1000);
    let url = sent["Links"]["ApprovalNotify"]["Url"].as_str().unwrap();
    assert!(url.contains(&format!("request_id={id}&token=")), "{url}");

    // The same device and app again: the open request answers.
    let (status, again) = env.request(device, 301).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["existing"], true);
    assert_eq!(again["request"]["request_id"], id);
    env.sc_request(&id);

    // The agent approves; the callback dispatches the install.
    let sys_id = sc["sys_id"].as_str().unwrap();
    let cb = env.sn.decide(sys_id, true, "ok for the team").await;
    assert_eq!(cb.outcome, Ok(200), "{cb:?}");
    assert_eq!(env.get(&id).await["status"], "Install Command Dispatched");
    let installs = env.uem.installs();
    assert_eq!(installs.len(), 1);
    assert_eq!(installs[0].device_id, device);
    assert_eq!(installs[0].body, json!({"DeviceId": device}));

    // The job follows the install until UEM reports it.
    let mut summaries = Vec::new();
    for _ in 0..4 {
        summaries.push(env.tick().await);
        if env.get(&id).await["status"] == "Installed" {
            break;
        }
    }
    let r = env.get(&id).await;
    assert_eq!(r["status"], "Installed", "{summaries:?}");
    assert_eq!(
        statuses(&r),
        [
            "Pending Approval",
            "Install Command Dispatched",
            "Installed"
        ]
    );
    assert!(
        r["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["by"] == "agent.smith")
    );

    // Each status went to its channel; the plugin never saw a webhook URL.
    assert_eq!(
        env.texts("requests").len(),
        1,
        "{:?}",
        env.texts("requests")
    );
    assert!(env.texts("requests")[0].starts_with("Pending Approval: Visual Studio Code"));
    assert!(env.texts("approvals")[0].starts_with("Install Command Dispatched"));
    assert!(env.texts("installs")[0].starts_with("Installed"));
    assert!(
        env.slack.messages("installs")[0]
            .blocks
            .as_ref()
            .is_some_and(Value::is_array)
    );
    let (_, status) = env.act("sync-status", json!({})).await;
    assert_eq!(status["counts"]["Installed"], 1, "{status}");
    assert!(status["last_ok_ms"]["slack"].as_u64().is_some(), "{status}");
}

#[tokio::test]
async fn decision_callbacks_refuse_what_they_must() {
    let env = setup().await;
    let (a, b) = (env.device("WinRT", 0), env.device("WinRT", 1));
    let (_, ra) = env.request(a, 302).await;
    let (_, rb) = env.request(b, 302).await;
    let ida = ra["request"]["request_id"].as_str().unwrap().to_owned();
    let idb = rb["request"]["request_id"].as_str().unwrap().to_owned();
    let url_a = env.callback_url(&ida);
    let body = |id: &str, device: i64, status: &str| {
        json!({"request_id": id, "device_id": device.to_string(), "approval_status": status,
               "updated_by": "agent.smith", "notes": "", "updated_at": "2026-12-07 10:00:00"})
    };

    // A forged token, and A's token with B's request id.
    // Same length, one hex digit changed.
    let (head, token) = url_a.split_once("token=").unwrap();
    let flipped = if token.starts_with('0') { "1" } else { "0" };
    let forged = format!("{head}token={flipped}{}", &token[1..]);
    assert_eq!(
        env.callback(&forged, body(&ida, a, "APPROVED")).await.0,
        403
    );
    let swapped = url_a.replace(&ida, &idb);
    assert_eq!(
        env.callback(&swapped, body(&idb, b, "APPROVED")).await.0,
        403
    );
    assert_eq!(env.callback(&url_a, body(&idb, b, "APPROVED")).await.0, 403);
    // Unknown request, wrong device, unknown status.
    let unknown = url_a.replace(&ida, "00000000-0000-4000-8000-000000000000");
    assert_eq!(
        env.callback(&unknown, body(&ida, a, "APPROVED")).await.0,
        404
    );
    let (s, out) = env.callback(&url_a, body(&ida, b, "APPROVED")).await;
    assert_eq!(s, 409, "{out}");
    assert_eq!(env.callback(&url_a, body(&ida, a, "MAYBE")).await.0, 422);
    assert_eq!(env.callback(&url_a, json!({"oops": true})).await.0, 422);
    assert!(env.uem.installs().is_empty());
    assert_eq!(env.get(&ida).await["status"], "Pending Approval");

    // Lower case is accepted; a second callback changes nothing.
    let (s, out) = env.callback(&url_a, body(&ida, a, "approved")).await;
    assert_eq!(s, 200, "{out}");
    let events = env.get(&ida).await["history"].as_array().unwrap().len();
    let (s, out) = env.callback(&url_a, body(&ida, a, "REJECTED")).await;
    assert_eq!(s, 200, "{out}");
    assert!(
        out["message"].as_str().unwrap().contains("already decided"),
        "{out}"
    );
    let r = env.get(&ida).await;
    assert_eq!(r["status"], "Install Command Dispatched");
    assert_eq!(r["history"].as_array().unwrap().len(), events);
    assert_eq!(env.uem.installs().len(), 1);

    // Rejected through the agent.
    let cb = env
        .sn
        .decide(
            env.sc_request(&idb)["sys_id"].as_str().unwrap(),
            false,
            "not licensed",
        )
        .await;
    assert_eq!(cb.outcome, Ok(200));
    let r = env.get(&idb).await;
    assert_eq!(r["status"], "Rejected");
    assert!(
        r["history"].as_array().unwrap().last().unwrap()["note"]
            .as_str()
            .unwrap()
            .contains("not licensed")
    );
    assert_eq!(env.uem.installs().len(), 1);
    assert!(
        env.texts("approvals")
            .iter()
            .any(|t| t.starts_with("Rejected: Zoom"))
    );
}

#[tokio::test]
async fn a_request_without_a_decision_is_reminded_then_expires() {
    let mut env = setup().await;
    let device = env.device("WinRT", 0);
    let (_, out) = env.request(device, 303).await;
    let id = out["request"]["request_id"].as_str().unwrap().to_owned();
    let sys_id = env.sc_request(&id)["sys_id"].as_str().unwrap().to_owned();
    let url = env.callback_url(&id);

    // Today nothing is due: the job leaves it alone.
    assert!(env.tick().await.contains("expired or reminded 0"));
    assert!(env.sn.work_notes("sc_request", &sys_id).is_empty());

    // 13 days on: the reminder (2 days before) goes to ServiceNow and Slack.
    env.restart_ahead(13 * DAY);
    assert!(env.tick().await.contains("expired or reminded 1"));
    let notes = env.sn.work_notes("sc_request", &sys_id);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("expires in 1 day"), "{notes:?}");
    assert!(
        env.texts("requests")
            .iter()
            .any(|t| t.starts_with("Reminder"))
    );
    env.tick().await;
    assert_eq!(
        env.sn.work_notes("sc_request", &sys_id).len(),
        1,
        "one reminder only"
    );
    assert_eq!(env.get(&id).await["status"], "Pending Approval");

    // 15 days on: expired; a decision after that is refused and recorded.
    env.restart_ahead(15 * DAY);
    env.tick().await;
    assert_eq!(env.get(&id).await["status"], "Expired");
    assert!(
        env.texts("alerts")
            .iter()
            .any(|t| t.starts_with("Expired: Adobe"))
    );
    let body = json!({"request_id": id, "device_id": device.to_string(), "approval_status": "APPROVED",
                      "updated_by": "late.agent", "notes": "", "updated_at": "x"});
    let (s, out) = env.callback(&url, body).await;
    assert_eq!(s, 409, "{out}");
    let r = env.get(&id).await;
    assert_eq!(r["status"], "Expired");
    assert!(
        r["history"].as_array().unwrap().last().unwrap()["note"]
            .as_str()
            .unwrap()
            .contains("after expiry")
    );
    assert!(env.uem.installs().is_empty());
}

#[tokio::test]
async fn a_failed_install_ends_in_error_with_the_reason() {
    let env = setup_with(Options {
        uem: UemConfig {
            failing_apps: vec![301],
            ..Options::default().uem
        },
        archived: vec!["alerts".into()],
        ..Options::default()
    })
    .await;
    let (_, out) = env.request(env.device("WinRT", 0), 301).await;
    let id = out["request"]["request_id"].as_str().unwrap().to_owned();
    env.sn
        .decide(env.sc_request(&id)["sys_id"].as_str().unwrap(), true, "")
        .await;
    for _ in 0..4 {
        env.tick().await;
        if env.get(&id).await["status"] == "Error" {
            break;
        }
    }
    let r = env.get(&id).await;
    assert_eq!(r["status"], "Error", "{r}");
    assert!(r["error"].as_str().unwrap().contains("Failed"), "{r}");
    // The alerts channel is archived: Slack refuses the message for good
    // (410); it is set aside and counted, not retried for ever or lost.
    assert!(env.slack.messages("alerts").is_empty());
    let (_, status) = env.act("sync-status", json!({})).await;
    assert_eq!(status["slack"]["refused"], 1, "{status}");
    assert_eq!(status["slack"]["waiting"], 0, "{status}");
    let last = status["last_error"]["message"].as_str().unwrap();
    assert!(last.contains("410"), "{status}");
    // A new request for the same device and app is a new request.
    let (_, again) = env.request(env.device("WinRT", 0), 301).await;
    assert_eq!(again["existing"], false, "{again}");
}

#[tokio::test]
async fn servicenow_down_while_forwarding_is_retried_without_a_duplicate() {
    let env = setup().await;
    let path = "/api/x_acme_uem/appapproval/request";
    env.sn.control().inject(Fault::on(
        path,
        FaultKind::Status {
            status: 503,
            message: None,
        },
    ));
    let (status, out) = env.request(env.device("WinRT", 0), 302).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["request"]["forwarded"], false);
    assert!(
        out["request"]["error"]
            .as_str()
            .unwrap()
            .contains("ServiceNow"),
        "{out}"
    );
    let id = out["request"]["request_id"].as_str().unwrap().to_owned();
    assert!(env.sn.records("sc_request").is_empty());

    // ServiceNow takes it but the answer is lost: the retry finds the same
    // request (RequestId is the key), so there is still one.
    env.sn.control().clear_faults();
    env.sn
        .control()
        .inject(Fault::on(path, FaultKind::LostAnswer).times(1));
    env.tick().await;
    env.sc_request(&id);
    env.tick().await;
    assert_eq!(env.get(&id).await["forwarded"], true);
    env.sc_request(&id);
    let posts = env.sn.control().requests_to("appapproval");
    assert!(posts.len() >= 3, "{}", posts.len());
}

#[tokio::test]
async fn a_slack_429_storm_delays_messages_but_loses_none_and_keeps_order() {
    let env = setup_with(Options {
        slack_burst: 1,
        // Slow enough that the four requests below always outrun it.
        slack_pace: 0.4,
        ..Options::default()
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..4 {
        let (status, out) = env.request(env.device("WinRT", n), 301).await;
        assert_eq!(status, 200, "{out}");
        ids.push(out["request"]["request_id"].as_str().unwrap().to_owned());
    }
    // Only the first got through at once; the flow did not wait for Slack.
    assert_eq!(env.slack.messages("requests").len(), 1);
    let (_, status) = env.act("sync-status", json!({})).await;
    assert_eq!(status["slack"]["waiting"], 3, "{status}");
    // ...and Slack was asked again and refused (429): more posts than messages.
    assert!(env.slack.control().requests().len() >= 2);

    eventually("every message delivered", || async {
        env.tick().await;
        (env.slack.messages("requests").len() >= 4).then_some(())
    })
    .await;
    let texts = env.texts("requests");
    assert_eq!(texts.len(), 4, "{texts:?}");
    for (text, id) in texts.iter().zip(&ids) {
        assert!(text.ends_with(&format!("(request {id})")), "{texts:?}");
    }
}

#[tokio::test]
async fn requests_are_checked_before_anything_leaves() {
    let env = setup().await;
    let ios = env.device("Apple", 0);
    let (status, out) = env.request(ios, 305).await;
    assert_eq!(status, 403, "{out}");
    assert!(out.to_string().contains("windows"), "{out}");
    let win = env.device("WinRT", 0);
    let (status, out) = env.request(win, 999).await;
    assert_eq!(status, 404, "{out}");
    let (status, out) = env.request(win, 304).await;
    assert_eq!(status, 409, "{out}");
    assert!(
        out.to_string().contains("does not require approval"),
        "{out}"
    );
    let mut gone = env.uem.device(win).unwrap();
    gone.enrollment = "Unenrolled".into();
    env.uem.put_device(gone);
    let (status, out) = env.request(win, 301).await;
    assert_eq!(status, 409, "{out}");
    assert!(out.to_string().contains("Unenrolled"), "{out}");
    assert!(env.sn.records("sc_request").is_empty());
    assert!(env.slack.messages("requests").is_empty());

    // The intake route takes the same JSON, behind its token.
    let body = json!({
        "requester": {"user_name": "jdoe", "email": "jane.doe@acme.example"},
        "device": {"id": env.device("WinRT", 1)}, "app": {"id": 302, "type": "public"},
    })
    .to_string();
    let hook = "/hooks/acme/apps/requests";
    assert_eq!(post(&env.d, hook, None, &[], &body).await.0, 401);
    let (status, out) = post(
        &env.d,
        hook,
        None,
        &[("x-switchyard-token", "intake-t0ken")],
        &body,
    )
    .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["request"]["app"]["kind"], "public");

    // verify: every system answers with the configured credentials.
    let (status, v) = env.act("verify", json!({"slack_test_message": true})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["uem"]["version"], env.uem.config().product_version);
    assert_eq!(v["slack"]["slack-alerts"]["tested"], true, "{v}");
    assert_eq!(
        v["servicenow"]["columns"], "checked on the newest app request",
        "{v}"
    );
}

#[tokio::test]
async fn a_kill_after_servicenow_took_the_request_makes_no_second_one() {
    let mut env = setup().await;
    let path = "/api/x_acme_uem/appapproval/request";
    env.sn
        .control()
        .inject(Fault::on(path, FaultKind::SlowAnswer { ms: 60_000 }).times(1));
    let url = format!("{}{BASE}/actions/request-app", env.d.base);
    let token = env.token.clone();
    let device = env.device("WinRT", 0);
    let pending = tokio::spawn(async move {
        let body = json!({
            "input": {"requester": {"user_name": "jdoe", "email": "jane.doe@acme.example"},
                      "device": {"id": device}, "app": {"id": 301}},
            "actor": {"id": "agent.smith", "roles": ["App Admin"]},
        });
        reqwest::Client::new()
            .post(url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
    });
    // ServiceNow has the request; the plugin is still waiting for the answer.
    eventually("ServiceNow has the request", || async {
        (env.sn.records("sc_request").len() == 1).then_some(())
    })
    .await;
    env.restart_ahead(0);
    assert!(
        pending.await.unwrap().is_err(),
        "the caller's connection died with the daemon"
    );

    let (_, list) = env.act("list-requests", json!({})).await;
    assert_eq!(list["total"], 1, "{list}");
    let id = list["requests"][0]["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(list["requests"][0]["forwarded"], false, "{list}");
    env.tick().await;
    let r = env.get(&id).await;
    assert_eq!(r["forwarded"], true, "{r}");
    let sc = env.sc_request(&id);
    assert_eq!(r["servicenow"]["sys_id"], sc["sys_id"]);
    assert_eq!(env.sn.records("sc_request").len(), 1);
}

#[tokio::test]
async fn simultaneous_requests_for_one_device_and_app_make_one_request() {
    let env = setup().await;
    let device = env.device("WinRT", 2);
    let r = || env.request(device, 302);
    // Four: an instance runs at most four calls at once.
    let (a, b, c, d) = tokio::join!(r(), r(), r(), r());
    let answers = [a, b, c, d];
    let mut ids: Vec<String> = Vec::new();
    for (status, out) in &answers {
        match status {
            200 => ids.push(out["request"]["request_id"].as_str().unwrap().to_owned()),
            // Another intake had claimed the pair and not stored it yet.
            409 => assert!(out.to_string().contains("right now"), "{out}"),
            other => panic!("{other}: {out}"),
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(env.sn.records("sc_request").len(), 1);
    let (_, list) = env.act("list-requests", json!({"device": device})).await;
    assert_eq!(list["total"], 1, "{list}");
}

#[tokio::test]
async fn a_decision_while_the_request_is_being_forwarded_is_kept() {
    let env = setup().await;
    let path = "/api/x_acme_uem/appapproval/request";
    // ServiceNow stores the request at once but answers only after 3 s; the
    // agent approves in between.
    env.sn
        .control()
        .inject(Fault::on(path, FaultKind::SlowAnswer { ms: 3_000 }).times(1));
    let device = env.device("WinRT", 0);
    let intake = env.request(device, 301);
    let approve = async {
        let sc = eventually("ServiceNow has the request", || async {
            env.sn.records("sc_request").into_iter().next()
        })
        .await;
        env.sn
            .decide(sc["sys_id"].as_str().unwrap(), true, "quick")
            .await
    };
    let ((status, out), cb) = tokio::join!(intake, approve);
    assert_eq!(status, 200, "{out}");
    assert_eq!(cb.outcome, Ok(200), "{cb:?}");
    let id = out["request"]["request_id"].as_str().unwrap().to_owned();
    let r = env.get(&id).await;
    assert_eq!(r["status"], "Install Command Dispatched", "{r}");
    assert_eq!(r["forwarded"], true, "{r}");
    assert_eq!(r["decision"], "APPROVED", "{r}");
    assert_eq!(env.uem.installs().len(), 1);
}

#[tokio::test]
async fn a_decision_past_the_due_date_expires_the_request_even_before_the_job() {
    let mut env = setup().await;
    let device = env.device("WinRT", 0);
    let (_, out) = env.request(device, 302).await;
    let id = out["request"]["request_id"].as_str().unwrap().to_owned();
    env.restart_ahead(15 * DAY);
    let cb = env
        .sn
        .decide(
            env.sc_request(&id)["sys_id"].as_str().unwrap(),
            true,
            "late",
        )
        .await;
    assert_eq!(cb.outcome, Ok(409), "{cb:?}");
    assert_eq!(env.get(&id).await["status"], "Expired");
    assert!(env.uem.installs().is_empty());
}

#[tokio::test]
async fn a_device_gone_after_the_install_was_sent_ends_in_error_and_a_misbound_slot_blocks_nothing()
{
    let env = setup_with(Options {
        bearer_slot: Some("alerts"),
        ..Options::default()
    })
    .await;
    let device = env.device("WinRT", 0);
    let (_, out) = env.request(device, 301).await;
    let id = out["request"]["request_id"].as_str().unwrap().to_owned();
    env.sn
        .decide(env.sc_request(&id)["sys_id"].as_str().unwrap(), true, "")
        .await;
    assert_eq!(env.get(&id).await["status"], "Install Command Dispatched");
    env.uem.control().inject(Fault::on(
        format!("/api/mdm/devices/{device}/apps"),
        FaultKind::Status {
            status: 404,
            message: Some("Device not found for this request.".into()),
        },
    ));
    env.tick().await;
    let r = env.get(&id).await;
    assert_eq!(r["status"], "Error", "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("Device not found"),
        "{r}"
    );

    // slack-alerts is a header token, not a secret URL: its message is set
    // aside with the reason, and the next message on another channel still
    // goes out.
    let (_, status) = env.act("sync-status", json!({})).await;
    assert_eq!(status["slack"]["refused"], 1, "{status}");
    let last = status["last_error"]["message"].as_str().unwrap();
    assert!(last.contains("secret-url"), "{status}");
    let (_, out) = env.request(env.device("WinRT", 1), 302).await;
    assert_eq!(out["existing"], false, "{out}");
    assert_eq!(
        env.texts("requests").len(),
        2,
        "{:?}",
        env.texts("requests")
    );
    let (_, status) = env.act("sync-status", json!({})).await;
    assert_eq!(status["slack"]["waiting"], 0, "{status}");
}

#[test]
fn production_mode_refuses_a_moved_clock() {
    let dir = config_dir("data_dir = \"data\"\n", &[]);
    let out = bin()
        .args([
            "serve",
            "--config",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("SWITCHYARD_TEST_CLOCK_OFFSET_SECS", "60")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SWITCHYARD_TEST_CLOCK_OFFSET_SECS") && err.contains("production mode"),
        "{err}"
    );
}
