//! Upgrading an instance to a new plugin version under load: new calls use
//! the new version at once, a job already running finishes on the old one,
//! a job queued under the old version runs on the new one (or, when the new
//! version no longer declares it, is dead-lettered saying so), the
//! instance's storage is kept, and nothing is lost.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upstream that holds every request until `release` is set, and counts
/// the requests that arrived.
async fn held_upstream() -> (
    String,
    tokio::sync::watch::Sender<bool>,
    tokio::sync::watch::Receiver<usize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (release, released) = tokio::sync::watch::channel(false);
    let (arrived_tx, arrived) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut released = released.clone();
            let arrived_tx = arrived_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                arrived_tx.send_modify(|n| *n += 1);
                let _ = released.wait_for(|r| *r).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, release, arrived)
}

/// Puts the patched hostile guest, as `notes` `version`, in the plugin
/// directory (a reload or `plugin upgrade` takes it up).
fn install_notes(root: &std::path::Path, version: &str) {
    let dir = root.join("plugins/notes");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{version}.wasm")),
        claiming("notes", version),
    )
    .unwrap();
}

/// Installs notes `version`, moves instance `acme/n` on to it from 1.0.0
/// (`plugin upgrade`) and reloads the daemon.
async fn upgrade_to(d: &Daemon, root: &std::path::Path, operator: &str, version: &str) {
    install_notes(root, version);
    let config = root.to_str().unwrap();
    let moved = cli(
        &["plugin", "upgrade", "--config", config, "acme", "n"],
        None,
    );
    assert!(
        moved.contains(&format!("acme/n: notes 1.0.0 -> notes {version}")),
        "{moved}"
    );
    let (status, out) = post(d, "/v1/admin/reload", Some(operator), &[], "").await;
    assert_eq!(status, 200, "{out}");
}

async fn jobs(d: &Daemon, token: &str) -> Vec<Value> {
    let (status, out) = get(d, "/v1/tenants/acme/jobs", Some(token)).await;
    assert_eq!(status, 200, "{out}");
    out["jobs"].as_array().unwrap().clone()
}

/// Waits until job `id` is in `state`, and returns it.
async fn job_in(d: &Daemon, token: &str, id: i64, state: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let all = jobs(d, token).await;
        if let Some(j) = all.iter().find(|j| j["id"] == id && j["state"] == state) {
            return j.clone();
        }
        assert!(Instant::now() < until, "job {id} never {state}: {all:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_job(d: &Daemon, token: &str, job: &str) -> i64 {
    let path = format!("/v1/tenants/acme/instances/n/jobs/{job}/run");
    let (status, out) = post(d, &path, Some(token), &[], "").await;
    assert_eq!(status, 202, "{out}");
    out["job_id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_drains_running_work_and_loses_nothing() {
    let (upstream, release, mut arrived) = held_upstream().await;
    // One worker: a job queued while the running one holds it waits.
    let server = "data_dir = \"data\"\n[jobs]\nworkers = 1\n";
    let tenant =
        format!("[[instance]]\nid = \"n\"\nplugin = \"notes\"\negress = [\"{upstream}\"]\n");
    let dir = config_dir(server, &[("acme", &tenant)]);
    let root = dir.path();
    install_notes(root, "1.0.0");
    let api = token(root, "acme");
    let op = operator_token(root);
    let d = start(root);
    let call = |action: &'static str, input: Value| {
        let (d, api) = (&d, &api);
        async move {
            let path = format!("/v1/tenants/acme/instances/n/actions/{action}");
            let (status, out) = act(d, api, &path, &[], input).await;
            assert_eq!(status, 200, "{out}");
            out["output"].clone()
        }
    };
    let out = call("remember", json!({ "url": format!("{upstream}/slow") })).await;
    assert_eq!(out["version"], "1.0.0", "{out}");

    // A job running on 1.0.0 (held by the upstream), and one queued
    // behind it that 2.0.0 no longer declares.
    let running = run_job(&d, &api, "wait").await;
    arrived.wait_for(|n| *n == 1).await.unwrap();
    job_in(&d, &api, running, "running").await;
    let legacy = run_job(&d, &api, "legacy").await;
    job_in(&d, &api, legacy, "queued").await;

    // Install 2.0.0 and move the instance on to it.
    upgrade_to(&d, root, &op, "2.0.0").await;

    // New calls: 2.0.0 at once, with the storage 1.0.0 wrote, after
    // 2.0.0's migration step ran once (its two keys), audited.
    let out = call("echo", json!({})).await;
    assert_eq!(out["version"], "2.0.0", "{out}");
    assert_eq!(
        out["storage"],
        json!(["migration-tries", "migrations", "wait-url"]),
        "{out}"
    );
    let (status, out) = get(&d, "/v1/tenants/acme/audit?kind=migration", Some(&op)).await;
    assert_eq!(status, 200, "{out}");
    let migrations: Vec<&str> = out["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        migrations,
        ["storage from 1.0.0 to 2.0.0: migrated from 1.0.0 to 2.0.0"],
        "{out}"
    );
    // The job that was running is still running (on 1.0.0) ...
    job_in(&d, &api, running, "running").await;

    // ... and finishes there once its upstream answers.
    release.send(true).unwrap();
    let done = job_in(&d, &api, running, "done").await;
    assert_eq!(done["summary"], "1.0.0 waited: 200", "{done}");
    // The queued job ran on 2.0.0, which has no such job: dead-lettered,
    // saying why, not retried.
    let dead = job_in(&d, &api, legacy, "dead").await;
    let why = dead["last_error"].as_str().unwrap();
    assert!(
        why.contains("plugin `notes` 2.0.0 has no job named `legacy`")
            && why.contains("will not be retried"),
        "{dead}"
    );
    assert_eq!(dead["attempts"], 1, "{dead}");
    // A job queued now runs on 2.0.0.
    let after = run_job(&d, &api, "wait").await;
    let done = job_in(&d, &api, after, "done").await;
    assert_eq!(done["summary"], "2.0.0 waited: 200", "{done}");
    // Nothing lost: every job is done or dead with its reason.
    let all = jobs(&d, &api).await;
    assert_eq!(all.len(), 3, "{all:?}");
}

/// A new version whose storage migration step fails: the instance's calls
/// answer 503 `storage_migration_failed` with `Retry-After` and do not run,
/// its status says why, and a queued job is put back without counting an
/// attempt (the step's retries on an injected clock are in
/// tests/tests/migration.rs).
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_storage_migration_holds_the_instance_without_losing_work() {
    let tenant = "[[instance]]\nid = \"n\"\nplugin = \"notes\"\n";
    let dir = config_dir("data_dir = \"data\"\n", &[("acme", tenant)]);
    let root = dir.path();
    install_notes(root, "1.0.0");
    let api = token(root, "acme");
    let op = operator_token(root);
    let d = start(root);
    let path = |action: &str| format!("/v1/tenants/acme/instances/n/actions/{action}");
    let (status, out) = act(
        &d,
        &api,
        &path("fail-migrations"),
        &[],
        json!({"count": 1000}),
    )
    .await;
    assert_eq!(status, 200, "{out}");

    upgrade_to(&d, root, &op, "2.0.0").await;

    let resp = reqwest::Client::new()
        .post(format!("{}{}", d.base, path("remember")))
        .bearer_auth(&api)
        .json(&json!({
            "input": {"url": "http://upstream.test/"},
            "actor": {"id": "agent.smith", "roles": []},
        }))
        .send()
        .await
        .unwrap();
    let (status, retry_after) = (resp.status(), resp.headers().get("retry-after").cloned());
    let out: Value = resp.json().await.unwrap();
    assert_eq!(status, 503, "{out}");
    assert_eq!(retry_after.unwrap(), "5");
    assert_eq!(out["error"]["code"], "storage_migration_failed", "{out}");
    let message = out["error"]["message"].as_str().unwrap();
    assert!(
        message
            .contains("plugin `notes` 2.0.0 could not migrate the instance's storage from 1.0.0")
            && message.contains("failing on purpose"),
        "{message}"
    );

    // The failed step is audited once, the call that waited for it too.
    let (status, out) = get(&d, "/v1/tenants/acme/audit?kind=migration", Some(&op)).await;
    assert_eq!(status, 200, "{out}");
    let entries = out["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{out}");
    assert_eq!(entries[0]["outcome"], "failed", "{out}");
    assert!(
        entries[0]["what"]
            .as_str()
            .unwrap()
            .starts_with("storage from 1.0.0 to 2.0.0: "),
        "{out}"
    );

    let (status, out) = get(&d, "/v1/tenants/acme/instances/n/status", Some(&api)).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["storage_migration"]["state"], "failed", "{out}");
    assert!(
        out["storage_migration"]["retry_after_secs"]
            .as_u64()
            .unwrap()
            <= 5
    );

    // A job leased meanwhile is put back, not attempted.
    let id = run_job(&d, &api, "wait").await;
    eventually("the job to be leased and put back", || async {
        (metric(
            &d,
            "switchyard_jobs_released_total{tenant=\"acme\",instance=\"n\"}",
        )
        .await
            >= 1.0)
            .then_some(())
    })
    .await;
    let job = job_in(&d, &api, id, "queued").await;
    assert_eq!(job["attempts"], 0, "{job}");
}
