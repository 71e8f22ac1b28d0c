//! One tenant's broken configuration stops nobody else (issue 11 finding 8,
//! issue 18): it is reported, and every other tenant is served.

mod common;

use common::*;
use serde_json::json;

const GOOD: &str = "[[instance]]\nid = \"e\"\nplugin = \"echo\"\n";

#[tokio::test]
async fn a_broken_tenant_file_or_instance_stops_nobody_else() {
    let dir = config_dir(
        "data_dir = \"data\"\n",
        &[
            ("good", GOOD),
            // Not TOML at all.
            ("broken", "[[instance]\nid = \n"),
            // One good instance, and one whose secret was never stored.
            (
                "mixed",
                "[[instance]]\nid = \"ok\"\nplugin = \"echo\"\n\n[[instance]]\nid = \"nosecret\"\n\
                 plugin = \"echo\"\negress = [\"https://a.example.com\"]\n\
                 [instance.credentials.upstream]\nkind = \"bearer\"\nhosts = [\"https://a.example.com\"]\n\
                 token = \"secret:never-set\"\n",
            ),
        ],
    );
    let (good, broken, mixed) = (
        token(dir.path(), "good"),
        token(dir.path(), "broken"),
        token(dir.path(), "mixed"),
    );
    let d = start(dir.path());
    let echo = |t: &str, i: &str| format!("/v1/tenants/{t}/instances/{i}/actions/echo");
    let (status, out) = act(&d, &good, &echo("good", "e"), &[], json!({})).await;
    assert_eq!(status, 200, "{out}");
    let (status, out) = act(&d, &mixed, &echo("mixed", "ok"), &[], json!({})).await;
    assert_eq!(status, 200, "{out}");
    let (status, out) = act(&d, &mixed, &echo("mixed", "nosecret"), &[], json!({})).await;
    assert_eq!(
        (status, &out["error"]["code"]),
        (503, &json!("instance_failed")),
        "{out}"
    );
    let message = out["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("secret `never-set` is not in the secret store"),
        "{message}"
    );
    let (_, st) = get(
        &d,
        "/v1/tenants/mixed/instances/nosecret/status",
        Some(&mixed),
    )
    .await;
    assert_eq!(st["state"], "failed", "{st}");
    let (status, out) = act(&d, &broken, &echo("broken", "x"), &[], json!({})).await;
    assert_eq!(
        (status, &out["error"]["code"]),
        (503, &json!("instance_failed")),
        "{out}"
    );
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenants/broken.toml"),
        "{out}"
    );
    assert_eq!(metric(&d, "switchyard_tenants_failed").await, 1.0);
    assert_eq!(metric(&d, "switchyard_instances_failed").await, 1.0);
}

/// Work queued for an instance that cannot be built (here: a secret that
/// is missing; the same holds while its plugin compiles) waits for the
/// fix: the worker does not take it, counts no attempt, and never
/// dead-letters it as "no longer configured".
#[tokio::test]
async fn work_of_an_instance_that_cannot_be_built_waits_for_the_fix() {
    use switchyard_store::{JobQueue, NewJob, SqliteStore};
    let nosecret = "[[instance]]\nid = \"nosecret\"\nplugin = \"echo\"\n\
                    egress = [\"https://a.example.com\"]\n\
                    [instance.credentials.upstream]\nkind = \"bearer\"\n\
                    hosts = [\"https://a.example.com\"]\ntoken = \"secret:never-set\"\n";
    let dir = config_dir("data_dir = \"data\"\n", &[("mixed", nosecret)]);
    let api = token(dir.path(), "mixed");
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let queued_at = {
        let db = SqliteStore::open(&dir.path().join("data/switchyard.db")).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        db.enqueue(
            NewJob {
                tenant: "mixed".into(),
                instance: "nosecret".into(),
                kind: "job".into(),
                name: "tick".into(),
                payload: b"{}".to_vec(),
                idempotency_key: None,
                max_attempts: 1,
            },
            now,
        )
        .await
        .unwrap();
        now
    };
    let d = start(dir.path());
    // The worker had its chances: it looked at the queue again and again
    // (the job is due, so every fallback poll is a lease pass).
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while metric(&d, "switchyard_worker_leases_total").await < 3.0 {
        assert!(std::time::Instant::now() < until, "the worker never looked");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, out) = get(&d, "/v1/tenants/mixed/jobs", Some(&api)).await;
    assert_eq!(status, 200, "{out}");
    let job = &out["jobs"][0];
    assert_eq!(job["state"], "queued", "{job}");
    assert_eq!(job["attempts"], 0, "{job}");
    assert!(job["last_error"].is_null(), "{job}");
    assert_eq!(job["run_after_ms"], queued_at, "{job}");
}
