//! Webhooks through the real daemon: verification, duplicates, queued
//! processing, and a `kill -9` in the middle of a queue that loses nothing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const TENANT: &str = r#"[[instance]]
id = "echo-1"
plugin = "echo"

[instance.webhooks.events]
token = "secret:hook-token"
event_id_field = "id"

[instance.webhooks.inbound]
hmac_secret = "secret:hook-hmac"
allowed_ips = ["127.0.0.1/32"]
event_id_header = "x-event-id"
max_body_bytes = 1000

[[instance]]
id = "fenced"
plugin = "echo"

[instance.webhooks.events]
token = "secret:hook-token"
allowed_ips = ["10.0.0.0/8"]
"#;

fn setup() -> (tempfile::TempDir, String) {
    setup_with("data_dir = \"data\"\n")
}

/// The tenant and its secrets, with `server` as `switchyard.toml`.
fn setup_with(server: &str) -> (tempfile::TempDir, String) {
    let dir = config_dir(server, &[("acme", TENANT)]);
    let cfg = dir.path().to_str().unwrap().to_owned();
    cli(
        &["secret", "--config", &cfg, "set", "acme", "hook-token"],
        Some("hook-t0ken"),
    );
    cli(
        &["secret", "--config", &cfg, "set", "acme", "hook-hmac"],
        Some("hmac-key"),
    );
    (dir, cfg)
}

fn sign(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(b"hmac-key").unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn wait_processed(d: &Daemon, token: &str, ids: &[String]) -> Vec<u64> {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let mut counts = Vec::new();
        for id in ids {
            counts.push(echo_processed(d, token, id).await);
        }
        if counts.iter().all(|c| *c > 0) || Instant::now() > give_up {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn jobs(cfg: &str, state: &str) -> Vec<Value> {
    cli(
        &["jobs", "--config", cfg, "list", "acme", "--state", state],
        None,
    )
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

#[tokio::test]
async fn deliveries_are_verified_deduplicated_and_processed() {
    let (dir, cfg) = setup();
    let api = token(dir.path(), "acme");
    let d = start(dir.path());
    let events = "/hooks/acme/echo-1/events";
    let e1 = r#"{"id": "e-1"}"#;

    // Wrong or missing token: refused, nothing queued.
    let (status, body) = post(&d, events, None, &[], e1).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("bad_token"))
    );
    // The refusal says where the token goes (issue 14).
    assert_eq!(
        body["error"]["message"],
        "missing or wrong token: send it in the `x-switchyard-token` header"
    );
    let (status, _) = post(&d, events, None, &[("x-switchyard-token", "hook-t0ke")], e1).await;
    assert_eq!(status, 401);
    // A source outside the allowlist is refused even if it claims otherwise
    // in X-Forwarded-For (no proxy is trusted).
    let (status, body) = post(
        &d,
        "/hooks/acme/fenced/events",
        None,
        &[
            ("x-switchyard-token", "hook-t0ken"),
            ("x-forwarded-for", "10.1.1.1"),
        ],
        e1,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden_source"))
    );
    assert!(jobs(&cfg, "queued").is_empty() && jobs(&cfg, "done").is_empty());

    // Accepted, then the same event again: acknowledged, not queued twice.
    let auth = [("x-switchyard-token", "hook-t0ken")];
    let (status, first) = post(&d, events, None, &auth, e1).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["queued"], true, "{first}");
    let (status, again) = post(&d, events, None, &auth, e1).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["job_id"], first["job_id"]);
    assert_eq!(wait_processed(&d, &api, &["e-1".into()]).await, [1]);
    assert_eq!(jobs(&cfg, "done").len(), 1);

    // Synchronous route: HMAC-verified, answered by the plugin.
    let inbound = "/hooks/acme/echo-1/inbound";
    let body = r#"{"hello":"world"}"#;
    let (status, answer) = post(
        &d,
        inbound,
        None,
        &[
            ("x-switchyard-signature", &sign(body)),
            ("x-event-id", "s-1"),
        ],
        body,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer, json!({"hello": "world"}));
    let (status, answer) = post(
        &d,
        inbound,
        None,
        &[
            ("x-switchyard-signature", &sign(body)),
            ("x-event-id", "s-1"),
        ],
        body,
    )
    .await;
    assert_eq!((status, &answer["duplicate"]), (200, &json!(true)));
    // A delivery the plugin fails is not remembered: its retry is processed.
    let failing = [
        ("x-switchyard-signature", sign(body)),
        ("x-event-id", "s-2".to_owned()),
        ("x-echo-fail", "1".to_owned()),
    ];
    let failing: Vec<(&str, &str)> = failing.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, answer) = post(&d, inbound, None, &failing, body).await;
    assert_eq!(status, 502, "{answer}");
    let retry = [
        ("x-switchyard-signature", sign(body)),
        ("x-event-id", "s-2".to_owned()),
    ];
    let retry: Vec<(&str, &str)> = retry.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, answer) = post(&d, inbound, None, &retry, body).await;
    assert_eq!((status, answer), (200, json!({"hello": "world"})));
    let (status, answer) = post(
        &d,
        inbound,
        None,
        &[("x-switchyard-signature", &sign("other"))],
        body,
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("bad_signature"))
    );
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("HMAC-SHA256 of the body in the `x-switchyard-signature` header"),
        "{message}"
    );
    let big = "x".repeat(2000);
    let (status, _) = post(
        &d,
        inbound,
        None,
        &[("x-switchyard-signature", &sign(&big))],
        &big,
    )
    .await;
    assert_eq!(status, 413);
    let (status, _) = post(&d, "/hooks/acme/echo-1/nope", None, &[], "{}").await;
    assert_eq!(status, 404);

    // The refusals are in the audit log, without the token.
    let audit = cli(&["audit", "--config", &cfg, "acme"], None);
    for outcome in [
        "bad_token",
        "forbidden_source",
        "queued",
        "duplicate",
        "bad_signature",
        "200",
    ] {
        assert!(
            audit.contains(&format!("\"outcome\":\"{outcome}\"")),
            "no {outcome} in {audit}"
        );
    }
    assert!(!audit.contains("hook-t0ken"));
}

#[tokio::test]
async fn a_killed_daemon_loses_no_accepted_delivery() {
    let (dir, cfg) = setup();
    let api = token(dir.path(), "acme");
    let ids: Vec<String> = (0..24).map(|i| format!("crash-{i}")).collect();
    {
        let d = start(dir.path());
        for id in &ids {
            let body = json!({"id": id, "delay_ms": 250}).to_string();
            let (status, r) = post(
                &d,
                "/hooks/acme/echo-1/events",
                None,
                &[("x-switchyard-token", "hook-t0ken")],
                &body,
            )
            .await;
            assert_eq!(status, 200, "{r}");
        }
        // Let the worker get part of the way, then kill -9 (no shutdown).
        eventually("the first deliveries processed", || async {
            (!jobs(&cfg, "done").is_empty()).then_some(())
        })
        .await;
        let mut d = d;
        d.child.kill().unwrap();
        d.child.wait().unwrap();
    }
    let done_before = jobs(&cfg, "done").len();
    assert!(
        done_before < ids.len(),
        "the kill came too late to test anything ({done_before} done)"
    );

    let d = start(dir.path());
    let counts = wait_processed(&d, &api, &ids).await;
    for (id, n) in ids.iter().zip(&counts) {
        // At least once: a job cut off mid-run may run again after restart.
        assert!(*n >= 1, "event {id} was lost");
    }
    assert_eq!(jobs(&cfg, "done").len(), ids.len());
    assert!(jobs(&cfg, "queued").is_empty() && jobs(&cfg, "dead").is_empty());
}

#[tokio::test]
async fn status_shows_the_progress_of_a_running_job() {
    let (dir, _cfg) = setup();
    let api = token(dir.path(), "acme");
    let d = start(dir.path());
    let queued = deliver(&d, "acme", json!({"id": "slow-1", "delay_ms": 2000})).await;
    let status_path = "/v1/tenants/acme/instances/echo-1/status";
    let running = eventually("the job to report progress", || async {
        let (_, st) = get(&d, status_path, Some(&api)).await;
        let r = st["running"][0].clone();
        (r["progress"]["note"] == "processing slow-1").then_some(r)
    })
    .await;
    assert_eq!(running["job_id"], queued["job_id"]);
    assert_eq!(running["name"], "events");
    assert_eq!(running["progress"]["done"], 0);
    assert_eq!(running["progress"]["total"], 1);
    // When it ends, it leaves the list and its effect is there.
    eventually("the job to finish", || async {
        let (_, st) = get(&d, status_path, Some(&api)).await;
        st["running"].as_array().unwrap().is_empty().then_some(())
    })
    .await;
    assert_eq!(echo_processed(&d, &api, "slow-1").await, 1);
}

/// Issue 20 (heartbeat): a job that runs for more than two leases is
/// renewed while it runs, so nobody (here: the same daemon's worker, which
/// leases expired jobs) starts a second attempt of it.
#[tokio::test]
async fn a_job_longer_than_its_lease_runs_once() {
    let (dir, cfg) = setup_with("data_dir = \"data\"\n[jobs]\nlease_secs = 3\n");
    let api = token(dir.path(), "acme");
    let d = start(dir.path());
    deliver(&d, "acme", json!({"id": "long-1", "delay_ms": 7500})).await;
    let done = eventually("the long job to finish", || async {
        jobs(&cfg, "done").pop()
    })
    .await;
    // Without the heartbeat the lease ends at 3 s and the worker, which
    // wakes for expired leases, would run the job a second time.
    assert_eq!(done["attempts"], 1, "{done}");
    assert_eq!(echo_processed(&d, &api, "long-1").await, 1);
    assert!(jobs(&cfg, "running").is_empty() && jobs(&cfg, "queued").is_empty());
}
