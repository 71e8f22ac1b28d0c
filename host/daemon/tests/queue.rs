//! The queue and webhooks through the real daemon: each test is one item of
//! the "Queue and webhook correctness" and "Tenant isolation" issues,
//! named in its doc comment, and fails on the code before the fix.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const ECHO: &str = r#"[[instance]]
id = "echo-1"
plugin = "echo"

[instance.webhooks.events]
token = "secret:hook-token"
event_id_field = "id"

[instance.webhooks.inbound]
token = "secret:hook-token"

[[instance]]
id = "loose"
plugin = "echo"

[instance.webhooks.events]
token = "secret:hook-token"
"#;

/// A config directory with `switchyard.toml` = `server`, tenant `acme`
/// running [`ECHO`], the hook secret set, and an API token.
fn setup(server: &str) -> (tempfile::TempDir, String, String) {
    let dir = config_dir(server, &[("acme", ECHO)]);
    let cfg = dir.path().to_str().unwrap().to_owned();
    cli(
        &["secret", "--config", &cfg, "set", "acme", "hook-token"],
        Some("hook-t0ken"),
    );
    let api = token(dir.path(), "acme");
    (dir, cfg, api)
}

const AUTH: [(&str, &str); 1] = [("x-switchyard-token", "hook-t0ken")];

fn jobs(cfg: &str, state: &str) -> Vec<Value> {
    cli(
        &["jobs", "--config", cfg, "list", "acme", "--state", state],
        None,
    )
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

/// The jobs in `state`, once there are any (`what` names the wait).
async fn jobs_in(cfg: &str, state: &str, what: &str) -> Vec<Value> {
    eventually(what, || async {
        let found = jobs(cfg, state);
        (!found.is_empty()).then_some(found)
    })
    .await
}

/// How often the echo plugin of `instance` processed event `id`.
async fn processed(d: &Daemon, api: &str, instance: &str, id: &str) -> u64 {
    let body = json!({"input": {"ops": [{"op": "get", "key": format!("events/{id}")}]},
                      "actor": {"id": "t"}});
    let (status, out) = post(
        d,
        &format!("/v1/tenants/acme/instances/{instance}/actions/storage"),
        Some(api),
        &[],
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    out["output"][0].as_str().map_or(0, |s| s.parse().unwrap())
}

/// Item 1: a queued delivery the plugin answers with a 5xx is a failed
/// attempt, retried, not a success.
#[tokio::test]
async fn a_delivery_answered_with_5xx_is_retried() {
    let (dir, cfg, api) = setup("data_dir = \"data\"\n");
    let d = start(dir.path());
    let body = json!({"id": "r-1", "fail_times": 1}).to_string();
    let (status, r) = post(&d, "/hooks/acme/echo-1/events", None, &AUTH, &body).await;
    assert_eq!(status, 200, "{r}");
    // The first attempt answered 503; the retry (after ~1 s) succeeded.
    eventually("the retry", || async {
        (processed(&d, &api, "echo-1", "r-1").await == 2).then_some(())
    })
    .await;
    let done = jobs_in(&cfg, "done", "the job done").await;
    assert_eq!(done[0]["attempts"], 2, "{done:?}");
}

/// Issue 14: a plugin marks an error permanent or transient, and the queue
/// follows the mark rather than the error's kind: an upstream failure
/// marked permanent is dead after one attempt, a refusal marked transient
/// is retried until it succeeds.
#[tokio::test]
async fn marked_errors_are_retried_as_the_plugin_says() {
    let (dir, cfg, api) = setup("data_dir = \"data\"\n");
    let d = start(dir.path());
    let events = "/hooks/acme/echo-1/events";
    let body = json!({"id": "p-1", "fail_times": 99, "fail_as": "upstream-permanent"});
    let (status, r) = post(&d, events, None, &AUTH, &body.to_string()).await;
    assert_eq!(status, 200, "{r}");
    let dead = jobs_in(&cfg, "dead", "the dead letter").await;
    assert_eq!(dead[0]["attempts"], 1, "{dead:?}");
    let error = dead[0]["last_error"].as_str().unwrap();
    assert!(error.contains("marked it permanent"), "{error}");
    assert_eq!(processed(&d, &api, "echo-1", "p-1").await, 1);

    // Forbidden is permanent by kind; marked transient, it is retried.
    let body = json!({"id": "t-1", "fail_times": 1, "fail_as": "forbidden-transient"});
    let (status, r) = post(&d, events, None, &AUTH, &body.to_string()).await;
    assert_eq!(status, 200, "{r}");
    let done = jobs_in(&cfg, "done", "the retried job done").await;
    assert_eq!(done[0]["attempts"], 2, "{done:?}");
    assert_eq!(processed(&d, &api, "echo-1", "t-1").await, 2);
}

/// Items 15 and 16: a route that deduplicates finds the event id whatever
/// the content type says, and refuses a delivery without one; a delivery
/// the plugin refuses as unprocessable is dead-lettered at once.
#[tokio::test]
async fn undeduplicable_and_unprocessable_deliveries_are_refused_or_dead_at_once() {
    let (dir, cfg, api) = setup("data_dir = \"data\"\n");
    let d = start(dir.path());
    let events = "/hooks/acme/echo-1/events";
    // JSON sent as a form (what `curl -d` does): still deduplicated.
    let form = [
        AUTH[0],
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let (status, first) = post_raw(&d, events, &form, br#"{"id":"f-1"}"#).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = post_raw(&d, events, &form, br#"{"id":"f-1"}"#).await;
    assert_eq!(
        (status, &again["duplicate"]),
        (200, &json!(true)),
        "{again}"
    );
    // No id, a non-string id, a body that is neither JSON nor a form,
    // an id too long, invalid UTF-8: refused at the door, naming why.
    let long = format!(r#"{{"id":"{}"}}"#, "x".repeat(300));
    for (body, needle) in [
        (&br#"{"other":1}"#[..], "JSON field `id` is missing"),
        (br#"{"id":[1]}"#, "not a string or number"),
        (b"hello", "no JSON or form field `id`"),
        (long.as_bytes(), "at most 256"),
        (b"\xff\xfe\xfd", "not UTF-8"),
    ] {
        let (status, r) = post_raw(&d, events, &AUTH, body).await;
        assert_eq!(status, 400, "{r}");
        assert_eq!(r["error"]["code"], "invalid_delivery");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message}");
    }
    // A route without event ids takes anything; what the plugin cannot
    // process (not JSON) is dead after one attempt, not eight.
    let (status, r) = post_raw(&d, "/hooks/acme/loose/events", &AUTH, b"not json").await;
    assert_eq!(status, 200, "{r}");
    let dead = jobs_in(&cfg, "dead", "the dead letter").await;
    assert_eq!(dead[0]["attempts"], 1, "{dead:?}");
    assert!(
        dead[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("will not be retried"),
        "{dead:?}"
    );
    assert_eq!(processed(&d, &api, "echo-1", "f-1").await, 1);
}

/// POSTs raw bytes with headers (no bearer token).
async fn post_raw(d: &Daemon, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", d.base))
        .body(body.to_vec());
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

/// Item 6: a paused instance answers synchronous webhooks with 503 and
/// `Retry-After`, without running the plugin.
#[tokio::test]
async fn a_paused_instance_does_not_run_synchronous_webhooks() {
    let (dir, _cfg, api) = setup("data_dir = \"data\"\n");
    let d = start(dir.path());
    let base = "/v1/tenants/acme/instances/echo-1";
    let (status, _) = post(&d, &format!("{base}/pause"), Some(&api), &[], "").await;
    assert_eq!(status, 200);
    let resp = reqwest::Client::new()
        .post(format!("{}/hooks/acme/echo-1/inbound", d.base))
        .header(AUTH[0].0, AUTH[0].1)
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["retry-after"], "60");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "paused");
    let (_, st) = get(&d, &format!("{base}/status"), Some(&api)).await;
    assert!(
        !st["invocations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["kind"] == "webhook"),
        "the plugin ran: {st}"
    );
    let (status, _) = post(&d, &format!("{base}/resume"), Some(&api), &[], "").await;
    assert_eq!(status, 200);
    let (status, body) = post(&d, "/hooks/acme/echo-1/inbound", None, &AUTH, "hi").await;
    assert_eq!(status, 200, "{body}");
}

/// Item 3 (and item 19): the queue's workers have wasm slots of their own,
/// so a queue full of slow jobs does not turn actions away as busy.
#[tokio::test]
async fn a_busy_queue_does_not_starve_actions() {
    // As many workers as the old fixed pool had slots.
    let (dir, cfg, api) = setup("data_dir = \"data\"\n[jobs]\nworkers = 16\nper_tenant = 16\n");
    let d = start(dir.path());
    for i in 0..16 {
        let body = json!({"id": format!("slow-{i}"), "delay_ms": 8000}).to_string();
        let (status, r) = post(&d, "/hooks/acme/echo-1/events", None, &AUTH, &body).await;
        assert_eq!(status, 200, "{r}");
    }
    eventually("sixteen jobs running", || async {
        (jobs(&cfg, "running").len() == 16).then_some(())
    })
    .await;
    for _ in 0..3 {
        let (status, out) = act(
            &d,
            &api,
            "/v1/tenants/acme/instances/echo-1/actions/echo",
            &[],
            json!({}),
        )
        .await;
        assert_eq!(status, 200, "{out}");
    }
    // And none of the slow jobs was burnt on capacity.
    assert_eq!(metric(&d, "switchyard_jobs_released_total").await, 0.0);
}

/// An upstream that accepts connections and never answers; counts them.
fn hanging_upstream() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            held.push(s);
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (port, accepted)
}

/// Issue 11, finding 2: one tenant's calls that wait (in a host call, using
/// no CPU) cannot take every slot: over its share it gets 429 with
/// `Retry-After`, and another tenant is still admitted.
#[tokio::test]
async fn a_tenant_over_its_share_gets_429_and_others_are_served() {
    use std::sync::atomic::Ordering;
    let (port, accepted) = hanging_upstream();
    let tenant = format!(
        "[roles]\n\"r\" = [\"operator\"]\n\n[[instance]]\nid = \"a\"\nplugin = \"echo\"\n\
         egress = [\"http://127.0.0.1:{port}\"]\n\n[[instance]]\nid = \"b\"\nplugin = \"echo\"\n\
         egress = [\"http://127.0.0.1:{port}\"]\n"
    );
    let dir = config_dir(
        "data_dir = \"data\"\n[invocations]\nmax_concurrent = 8\nper_tenant = 2\nper_instance = 2\n",
        &[("acme", &tenant), ("globex", &tenant)],
    );
    let (acme, globex) = (token(dir.path(), "acme"), token(dir.path(), "globex"));
    let d = start(dir.path());
    let call = |tok: &str, t: &str, i: &str| {
        let url = format!("{}/v1/tenants/{t}/instances/{i}/actions/fetch", d.base);
        let tok = tok.to_owned();
        let body = json!({"input": {"url": format!("http://127.0.0.1:{port}/")},
                          "actor": {"id": "t", "roles": ["r"]}});
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .bearer_auth(tok)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, retry, resp.text().await.unwrap())
        }
    };
    // Two of acme's calls (one per instance) wait upstream: acme's share.
    let held = [
        tokio::spawn(call(&acme, "acme", "a")),
        tokio::spawn(call(&acme, "acme", "b")),
    ];
    eventually("acme's two calls waiting upstream", || async {
        (accepted.load(Ordering::SeqCst) == 2).then_some(())
    })
    .await;
    let (status, retry, body) = call(&acme, "acme", "a").await;
    assert_eq!((status, retry.as_deref()), (429, Some("1")), "{body}");
    assert!(
        body.contains("this tenant is running 2 calls at once"),
        "{body}"
    );
    // A caller can repeat refused calls at once: they are all counted, but
    // one audit entry stands for the minute's refusals.
    for _ in 0..20 {
        assert_eq!(call(&acme, "acme", "a").await.0, 429);
    }
    let series = r#"switchyard_invocations_total{tenant="acme",instance="a",plugin="echo",kind="action",outcome="too_many_requests"}"#;
    assert_eq!(metric(&d, series).await, 21.0);
    let (_, audit) = get(&d, "/v1/tenants/acme/audit?limit=1000", Some(&acme)).await;
    let refusals: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["outcome"]
                .as_str()
                .unwrap()
                .starts_with("too_many_requests")
        })
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0]["what"], "fetch");
    // globex is admitted: its call reaches the upstream too.
    let other = tokio::spawn(call(&globex, "globex", "a"));
    eventually("globex's call upstream", || async {
        (accepted.load(Ordering::SeqCst) == 3).then_some(())
    })
    .await;
    for h in held.into_iter().chain([other]) {
        h.abort();
    }
}

/// Item 17: shutdown is bounded. A client that sends half its headers, or
/// a body that never ends, cannot keep the daemon from exiting; after the
/// drain timeout it exits anyway.
#[tokio::test]
async fn shutdown_is_bounded_whatever_clients_do() {
    let (dir, _cfg, _api) = setup("data_dir = \"data\"\ndrain_timeout_secs = 2\n");
    let mut d = start(dir.path());
    let addr = d.base.trim_start_matches("http://").to_owned();
    // Half the headers of a request, never finished.
    let mut half = std::net::TcpStream::connect(&addr).unwrap();
    half.write_all(b"POST /hooks/acme/echo-1/events HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // All the headers and part of a body, never finished.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(
        b"POST /hooks/acme/echo-1/inbound HTTP/1.1\r\nHost: x\r\nx-switchyard-token: hook-t0ken\r\n\
          content-length: 1000\r\n\r\nabc",
    )
    .unwrap();
    // Both connections are open and in the daemon's hands.
    let (status, _) = get(&d, "/healthz", None).await;
    assert_eq!(status, 200);
    let pid = d.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let child = std::sync::Mutex::new(&mut d.child);
    let exited = eventually("the daemon to exit", || async {
        child.lock().unwrap().try_wait().unwrap()
    })
    .await;
    assert!(exited.success(), "{exited:?}");
    drop((half, slow));
}

/// Item 18: a second daemon on the same data directory is refused with a
/// clear message, rather than re-queueing the first one's running jobs.
#[tokio::test]
async fn a_second_daemon_on_one_data_directory_is_refused() {
    let (dir, _cfg, _api) = setup("data_dir = \"data\"\n");
    let first = start(dir.path());
    let out = bin()
        .args([
            "serve",
            "--config",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let pid = first.child.id();
    assert!(
        err.contains(&format!(
            "another switchyard serve (pid {pid}) is using the data directory"
        )),
        "{err}"
    );
    // The first one still serves.
    assert_eq!(get(&first, "/healthz", None).await.0, 200);
}

/// Item 21: refused deliveries are counted in the metrics and only sampled
/// in the audit log; accepted and duplicate ones are counted too.
#[tokio::test]
async fn refused_deliveries_are_counted_and_sampled() {
    let (dir, _cfg, api) = setup("data_dir = \"data\"\n");
    let d = start(dir.path());
    let wrong = [("x-switchyard-token", "nope")];
    for i in 0..200 {
        let body = json!({"id": format!("w-{i}")}).to_string();
        let (status, _) = post(&d, "/hooks/acme/echo-1/events", None, &wrong, &body).await;
        assert_eq!(status, 401);
    }
    let (status, _) = post(
        &d,
        "/hooks/acme/echo-1/events",
        None,
        &AUTH,
        r#"{"id":"ok-1"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = post(
        &d,
        "/hooks/acme/echo-1/events",
        None,
        &AUTH,
        r#"{"id":"ok-1"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let series = |outcome: &str| {
        format!(
            r#"switchyard_webhook_deliveries_total{{tenant="acme",instance="echo-1",route="events",outcome="{outcome}"}}"#
        )
    };
    assert_eq!(metric(&d, &series("refused_bad_token")).await, 200.0);
    assert_eq!(metric(&d, &series("queued")).await, 1.0);
    assert_eq!(metric(&d, &series("duplicate")).await, 1.0);
    let (_, audit) = get(&d, "/v1/tenants/acme/audit?limit=1000", Some(&api)).await;
    let refusals = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"].as_str().unwrap().starts_with("bad_token"))
        .count();
    assert_eq!(refusals, 1, "one entry stands for the minute's refusals");
}

/// Item 13: `invoke` is audited like an API call, and `audit` says when
/// there is more than it printed.
#[tokio::test]
async fn invoke_is_audited_and_audit_says_when_there_is_more() {
    let (dir, cfg, _api) = setup("data_dir = \"data\"\n");
    cli(
        &[
            "invoke", "--config", &cfg, "acme", "echo-1", "echo", "--actor", "ops",
        ],
        None,
    );
    cli(
        &[
            "invoke", "--config", &cfg, "acme", "echo-1", "echo", "--actor", "ops",
        ],
        None,
    );
    let out = bin()
        .args(["audit", "--config", &cfg, "acme", "--limit", "1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let entry: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            &entry["kind"],
            &entry["what"],
            &entry["actor"],
            &entry["outcome"]
        ),
        (
            &json!("action"),
            &json!("echo"),
            &json!("cli:ops"),
            &json!("ok")
        )
    );
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(note.contains("older ones exist: use --limit N"), "{note}");
    drop(dir);
}

/// Item 8: a pause set while a reload is being built is not lost when the
/// new configuration is swapped in (pauses are shared by every snapshot).
#[tokio::test]
async fn a_pause_during_reload_is_kept() {
    // Enough tenants that a reload takes a while.
    let plain = "[[instance]]\nid = \"echo-1\"\nplugin = \"echo\"\n";
    let tenants: Vec<String> = (0..200).map(|i| format!("t{i:03}")).collect();
    let refs: Vec<(&str, &str)> = tenants.iter().map(|t| (t.as_str(), plain)).collect();
    let dir = config_dir("data_dir = \"data\"\n", &refs);
    let api = token(dir.path(), "t000");
    let operator = operator_token(dir.path());
    let d = start(dir.path());
    let base = "/v1/tenants/t000/instances/echo-1";
    for round in 0..3 {
        let reload = post(&d, "/v1/admin/reload", Some(&operator), &[], "");
        let pause = async {
            tokio::time::sleep(Duration::from_millis(20 * round)).await;
            post(&d, &format!("{base}/pause"), Some(&api), &[], "").await
        };
        let ((rs, r), (ps, _)) = tokio::join!(reload, pause);
        assert_eq!((rs, ps), (200, 200), "{r}");
        let (_, st) = get(&d, &format!("{base}/status"), Some(&api)).await;
        assert_eq!(st["paused"], true, "round {round}: the pause was lost");
        let (status, _) = post(&d, &format!("{base}/resume"), Some(&api), &[], "").await;
        assert_eq!(status, 200);
    }
}
