//! Scheduler, pause/resume, run-now, status and audit through the daemon,
//! across restarts; and a master key rotation as an operator runs it.

mod common;

use common::*;
use serde_json::json;

const TENANT: &str = r#"[[instance]]
id = "echo-1"
plugin = "echo"

[instance.jobs.tick]
interval = 60
"#;

const BASE: &str = "/v1/tenants/acme/instances/echo-1";

/// How many times the `tick` job has run (the plugin counts in storage).
async fn runs(d: &Daemon, token: &str) -> Option<u64> {
    let body = json!({"input": {"ops": [{"op": "get", "key": "tick/runs"}]}, "actor": {"id": "t"}});
    let (status, out) = post(
        d,
        &format!("{BASE}/actions/storage"),
        Some(token),
        &[],
        &body.to_string(),
    )
    .await;
    if status != 200 {
        return None;
    }
    out["output"][0].as_str().map(|s| s.parse().unwrap())
}

#[tokio::test]
async fn schedules_fire_once_and_pauses_hold_across_restarts() {
    let dir = config_dir("data_dir = \"data\"\n", &[("acme", TENANT)]);
    let api = token(dir.path(), "acme");

    // A new schedule is due at once; the first run happens.
    let (next_run, first_run) = {
        let d = start(dir.path());
        eventually("the first scheduled run", || async {
            runs(&d, &api).await.filter(|n| *n == 1)
        })
        .await;
        let (status, st) = get(&d, &format!("{BASE}/status"), Some(&api)).await;
        assert_eq!(status, 200, "{st}");
        assert_eq!(st["plugin"]["id"], "echo");
        assert_eq!(st["paused"], false);
        assert_eq!(st["jobs"][0]["name"], "tick");
        assert_eq!(st["jobs"][0]["interval_secs"], 60);
        let last = st["jobs"][0]["last_run_ms"].as_i64().unwrap();
        let next = st["jobs"][0]["next_run_ms"].as_i64().unwrap();
        assert_eq!(next - last, 60_000);
        (next, last)
    };

    // After a restart within the interval, the slot does not fire again:
    // the scheduler has looked twice, and the worker has had time to run
    // whatever that queued (it would show as a queued or running job).
    let d = start(dir.path());
    scheduler_passes(&d, 2.0).await;
    let (_, st) = get(&d, &format!("{BASE}/status"), Some(&api)).await;
    assert_eq!(
        st["queue"],
        json!({"queued": 0, "running": 0, "dead": 0}),
        "{st}"
    );
    assert_eq!(runs(&d, &api).await, Some(1));
    let (_, st) = get(&d, &format!("{BASE}/status"), Some(&api)).await;
    assert_eq!(st["jobs"][0]["next_run_ms"].as_i64(), Some(next_run));
    assert_eq!(st["jobs"][0]["last_run_ms"].as_i64(), Some(first_run));

    // Pause: actions are refused, a manual run is held, not lost.
    let (status, _) = post(&d, &format!("{BASE}/pause"), Some(&api), &[], "").await;
    assert_eq!(status, 200);
    let echo = r#"{"input": {}, "actor": {"id": "t"}}"#;
    let (status, _) = post(&d, &format!("{BASE}/actions/echo"), Some(&api), &[], echo).await;
    assert_eq!(status, 409);
    let leases = metric(&d, "switchyard_worker_leases_total").await;
    let (status, queued) = post(&d, &format!("{BASE}/jobs/tick/run"), Some(&api), &[], "").await;
    assert_eq!(status, 202, "{queued}");
    // The worker has looked at the queue since (twice: one of those looks
    // began after the run was stored) and left the run where it is.
    eventually("the worker's look at the queue", || async {
        (metric(&d, "switchyard_worker_leases_total").await >= leases + 2.0).then_some(())
    })
    .await;
    let (_, st) = get(&d, &format!("{BASE}/status"), Some(&api)).await;
    assert_eq!(st["paused"], true);
    assert_eq!(st["queue"]["queued"], 1, "{st}");
    drop(d);

    // The pause survives a restart; resuming runs the held job.
    let d = start(dir.path());
    let (_, st) = get(&d, &format!("{BASE}/status"), Some(&api)).await;
    assert_eq!(st["paused"], true);
    let (status, _) = post(&d, &format!("{BASE}/resume"), Some(&api), &[], "").await;
    assert_eq!(status, 200);
    eventually("the held run after resume", || async {
        runs(&d, &api).await.filter(|n| *n == 2)
    })
    .await;

    // Operations need the tenant's token; the audit log records them.
    let (status, _) = get(&d, &format!("{BASE}/status"), None).await;
    assert_eq!(status, 401);
    let (status, _) = post(
        &d,
        "/v1/tenants/acme/instances/nope/pause",
        Some(&api),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 404);
    let (status, audit) = get(&d, "/v1/tenants/acme/audit?limit=50", Some(&api)).await;
    assert_eq!(status, 200);
    let whats: Vec<String> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["kind"].as_str().unwrap(),
                e["what"].as_str().unwrap()
            )
        })
        .collect();
    for expected in ["admin:pause", "admin:resume"] {
        assert!(
            whats.iter().any(|w| w == expected),
            "{expected} missing from {whats:?}"
        );
    }
    assert_eq!(
        whats.iter().filter(|w| w.starts_with("job:tick")).count(),
        2,
        "{whats:?}"
    );
    let (status, _) = get(&d, "/v1/tenants/acme/audit?limit=0", Some(&api)).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn status_counts_invocations_and_keeps_the_last_error() {
    let dir = config_dir("data_dir = \"data\"\n", &[("acme", TENANT)]);
    let api = token(dir.path(), "acme");
    let d = start(dir.path());
    let call = |body: serde_json::Value| {
        let (d, api) = (&d, &api);
        async move {
            post(
                d,
                &format!("{BASE}/actions/storage"),
                Some(api),
                &[],
                &body.to_string(),
            )
            .await
        }
    };
    let actor = json!({"id": "t"});
    for _ in 0..2 {
        let (status, out) = call(json!({"input": {"ops": []}, "actor": actor})).await;
        assert_eq!(status, 200, "{out}");
    }
    let (status, out) = call(json!({"input": {"ops": [{"op": "bogus"}]}, "actor": actor})).await;
    assert_eq!(status, 422, "{out}");
    eventually("the first scheduled run", || async {
        runs(&d, &api).await.filter(|n| *n == 1)
    })
    .await;

    let (status, st) = get(&d, &format!("{BASE}/status"), Some(&api)).await;
    assert_eq!(status, 200, "{st}");
    let storage = st["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "action" && s["name"] == "storage")
        .unwrap_or_else(|| panic!("no storage stats in {st}"));
    // Three calls above plus the `runs` probes, one of which failed.
    assert!(storage["runs"].as_i64().unwrap() >= 4, "{storage}");
    assert_eq!(storage["errors"], 1, "{storage}");
    assert_eq!(storage["last_outcome"], "ok", "{storage}");
    assert_eq!(st["last_error"]["kind"], "action", "{st}");
    assert_eq!(st["last_error"]["name"], "storage", "{st}");
    let message = st["last_error"]["message"].as_str().unwrap();
    assert!(message.contains("unknown storage op `bogus`"), "{message}");
    assert_eq!(st["jobs"][0]["runs"], 1, "{st}");
    assert_eq!(st["jobs"][0]["errors"], 0, "{st}");
    assert_eq!(st["jobs"][0]["last_outcome"], "ok", "{st}");
    // What the job returned (issue 14), in the status and on its row.
    assert_eq!(st["jobs"][0]["last_summary"], "tick run 1", "{st}");
    let listed = cli(
        &[
            "jobs",
            "--config",
            dir.path().to_str().unwrap(),
            "list",
            "acme",
        ],
        None,
    );
    assert!(listed.contains(r#""summary":"tick run 1""#), "{listed}");

    // The counts are stored, not kept in memory: a restart shows them.
    drop(d);
    let d = start(dir.path());
    let (_, st) = get(&d, &format!("{BASE}/status"), Some(&api)).await;
    assert_eq!(st["last_error"]["name"], "storage", "{st}");
}

const HOOKED: &str = r#"[[instance]]
id = "echo-1"
plugin = "echo"

[instance.webhooks.events]
token = "secret:hook-token"
"#;

/// The rotation of docs/operations.md, with the real binary: a new key,
/// installed beside the old one as the previous key; the daemon reads the
/// secrets throughout; `rotate-master-key` re-wraps the data keys; then the
/// new key alone reads them.
#[tokio::test]
async fn the_master_key_is_rotated_without_losing_a_secret() {
    let dir = config_dir("data_dir = \"data\"\n", &[("acme", HOOKED)]);
    let cfg = dir.path().to_str().unwrap();
    let data = dir.path().join("data");
    cli(
        &["secret", "--config", cfg, "set", "acme", "hook-token"],
        Some("hook-t0ken"),
    );
    let new = dir.path().join("new.key");
    let generate = [
        "secret",
        "--config",
        cfg,
        "generate-master-key",
        "--out",
        new.to_str().unwrap(),
    ];
    cli(&generate, None);
    let again = bin().args(generate).output().unwrap();
    assert!(
        !again.status.success(),
        "an existing key file is never replaced"
    );
    // Without a previous key there is nothing to rotate from.
    let early = bin()
        .args(["secret", "--config", cfg, "rotate-master-key"])
        .output()
        .unwrap();
    assert!(!early.status.success());
    assert!(String::from_utf8_lossy(&early.stderr).contains("no previous master key"));

    std::fs::rename(data.join("master.key"), data.join("master.key.previous")).unwrap();
    std::fs::rename(&new, data.join("master.key")).unwrap();
    let accepted = |d: &Daemon| {
        let url = format!("{}/hooks/acme/echo-1/events", d.base);
        async move {
            reqwest::Client::new()
                .post(url)
                .header("x-switchyard-token", "hook-t0ken")
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Both keys: the webhook token (a secret) still verifies deliveries.
    let d = start(dir.path());
    assert_eq!(accepted(&d).await, 200);
    drop(d);
    // The new key alone cannot read it yet: that is what the rotation fixes.
    let aside = dir.path().join("old.key");
    std::fs::rename(data.join("master.key.previous"), &aside).unwrap();
    let d = start(dir.path());
    assert_eq!(accepted(&d).await, 503);
    drop(d);
    std::fs::rename(&aside, data.join("master.key.previous")).unwrap();
    let out = cli(&["secret", "--config", cfg, "rotate-master-key"], None);
    assert!(out.contains("re-wrapped 1 tenant data key(s)"), "{out}");
    std::fs::remove_file(data.join("master.key.previous")).unwrap();
    let d = start(dir.path());
    assert_eq!(
        accepted(&d).await,
        200,
        "the new key alone reads the secret"
    );
}
