//! The daemon on the PostgreSQL backend: several daemons, each with its
//! own data directory, share one database and act as one. Tokens and
//! secrets made through one work on all; webhook deliveries sent to any are
//! each processed, whichever daemon's worker leases them, and none is lost
//! while daemons are killed (`kill -9`) and restarted; a schedule fires
//! once across all of them; a pause set through one holds on the others;
//! the per-tenant limits and fairness hold across the deployment; and
//! `switchyard migrate --check` tells an operator where the schema stands.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test]
async fn two_daemons_share_one_database() {
    let c = Cluster::postgres("two", 2, "", &[("acme", ECHO_QUEUED)]);
    let (da, db) = (c.start(0), c.start(1));
    let api = &c.token("acme");

    let ids: Vec<String> = (0..20).map(|i| format!("e-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let d = if i % 2 == 0 { &da } else { &db };
        let body = deliver(d, "acme", json!({"id": id})).await;
        assert_eq!(body["queued"], json!(true), "{body}");
    }
    // Each delivery once, seen from either daemon.
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let mut counts = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            counts.push(echo_processed(if i % 2 == 0 { &db } else { &da }, api, id).await);
        }
        if counts.iter().all(|c| *c > 0) {
            assert!(counts.iter().all(|c| *c == 1), "{counts:?}");
            break;
        }
        assert!(Instant::now() < give_up, "not all processed: {counts:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The same delivery again, through the other daemon: a duplicate.
    let body = deliver(&db, "acme", json!({"id": "e-0"})).await;
    assert_eq!(
        body["duplicate"],
        json!(true),
        "a duplicate is acknowledged, not queued: {body}"
    );
    drop((da, db));
}

/// Issue 20: three daemons, deliveries sent round-robin (each one twice,
/// through two daemons), and one daemon `kill -9`ed in the middle of its
/// work and restarted, round after round. Every accepted delivery is
/// processed; each is one job (the second copy is a duplicate); a delivery
/// runs again only when a kill cut its run short; nothing is left queued,
/// running or dead.
#[tokio::test]
async fn three_daemons_lose_no_delivery_while_one_is_killed_again_and_again() {
    const WORKERS: usize = 4;
    const ROUNDS: usize = 6;
    const PER_ROUND: usize = 12;
    let c = Cluster::postgres(
        "kill",
        3,
        &format!("[jobs]\nworkers = {WORKERS}\nper_tenant = 12\nlease_secs = 3\n"),
        &[("acme", ECHO_QUEUED)],
    );
    let api = &c.token("acme");
    let mut daemons: Vec<Daemon> = (0..3).map(|i| c.start(i)).collect();
    let status_path = "/v1/tenants/acme/instances/echo-1/status";
    let mut ids = Vec::new();
    let mut cut = 0;
    for round in 0..ROUNDS {
        for k in 0..PER_ROUND {
            let id = format!("r{round}-{k}");
            let event = json!({"id": id, "delay_ms": 1500});
            let first = deliver(&daemons[k % 3], "acme", event.clone()).await;
            assert_eq!(first["queued"], json!(true), "{first}");
            let again = deliver(&daemons[(k + 1) % 3], "acme", event).await;
            assert_eq!(again["duplicate"], json!(true), "{again}");
            ids.push(id);
        }
        // Kill a daemon while it runs jobs (so the kill cuts work short):
        // the first, from this round's turn on, that has one running.
        let (victim, running) = eventually("a daemon running a job", || async {
            for k in 0..3 {
                let v = (round + k) % 3;
                let (_, st) = get(&daemons[v], status_path, Some(api)).await;
                let n = st["running"].as_array().map_or(0, Vec::len);
                if n > 0 {
                    return Some((v, n));
                }
            }
            None
        })
        .await;
        cut += running;
        daemons[victim].child.kill().unwrap();
        daemons[victim].child.wait().unwrap();
        daemons[victim] = c.start(victim);
    }

    // Every accepted delivery is processed (read through any daemon).
    let give_up = Instant::now() + Duration::from_secs(120);
    let counts = loop {
        let mut counts = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            counts.push(echo_processed(&daemons[i % 3], api, id).await);
        }
        if counts.iter().all(|n| *n > 0) {
            break counts;
        }
        let lost: Vec<_> = ids.iter().zip(&counts).filter(|(_, n)| **n == 0).collect();
        assert!(Instant::now() < give_up, "not processed: {lost:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // A delivery runs twice only when a kill cut its first run short.
    let again: u64 = counts.iter().map(|n| n - 1).sum();
    assert!(
        again as usize <= ROUNDS * WORKERS,
        "{again} extra runs for {ROUNDS} kills of {WORKERS} workers: {counts:?}"
    );
    let done = eventually("every job settled", || async {
        let done = c.jobs("acme", "done");
        (done.len() == ids.len()).then_some(done)
    })
    .await;
    for state in ["queued", "running", "dead"] {
        assert!(c.jobs("acme", state).is_empty(), "{state} jobs left");
    }
    // The kills did cut runs short: those jobs were taken over by another
    // attempt once their lease ran out.
    let retaken = done
        .iter()
        .filter(|j| j["attempts"].as_u64() > Some(1))
        .count();
    assert!(
        retaken > 0 && cut > 0,
        "no job was cut short ({cut} running at the kills)"
    );
}

/// [`ECHO_QUEUED`] with the `tick` job.
fn ticking() -> String {
    format!("{ECHO_QUEUED}\n[instance.jobs.tick]\ninterval = 3600\n")
}

/// Issue 20: three daemons start together; the new schedule is due at
/// once, each daemon's scheduler sees it, and it fires once. A pause set
/// through one daemon holds on the others: their actions are refused and
/// their workers leave the instance's deliveries queued; a resume through
/// another runs them.
#[tokio::test]
async fn three_daemons_fire_a_schedule_once_and_share_a_pause() {
    let tenant = ticking();
    let c = Cluster::postgres("pause", 3, "", &[("acme", &tenant)]);
    let api = &c.token("acme");
    let daemons: Vec<Daemon> = (0..3).map(|i| c.start(i)).collect();
    let base = "/v1/tenants/acme/instances/echo-1";
    eventually("the first tick", || async {
        (c.jobs("acme", "done").len() == 1).then_some(())
    })
    .await;
    // Every scheduler has looked twice since: the slot had its chance to
    // fire on each.
    for d in &daemons {
        scheduler_passes(d, 2.0).await;
    }
    let ticks = c.jobs("acme", "done");
    assert_eq!(ticks.len(), 1, "one run per slot: {ticks:?}");
    assert_eq!(ticks[0]["name"], "tick");
    assert!(c.jobs("acme", "queued").is_empty() && c.jobs("acme", "running").is_empty());

    // Pause through the first daemon.
    let (status, body) = post(&daemons[0], &format!("{base}/pause"), Some(api), &[], "").await;
    assert_eq!(status, 200, "{body}");
    let echo = r#"{"input": {}, "actor": {"id": "t"}}"#;
    for d in &daemons[1..] {
        eventually("the pause to reach another daemon", || async {
            let (status, _) = post(d, &format!("{base}/actions/echo"), Some(api), &[], echo).await;
            (status == 409).then_some(())
        })
        .await;
        let (_, st) = get(d, &format!("{base}/status"), Some(api)).await;
        assert_eq!(st["paused"], true, "{st}");
    }
    let leases: Vec<f64> = {
        let mut v = Vec::new();
        for d in &daemons {
            v.push(metric(d, "switchyard_worker_leases_total").await);
        }
        v
    };
    deliver(&daemons[2], "acme", json!({"id": "held"})).await;
    // Every worker has looked at the queue twice since (one of those looks
    // began after the delivery was stored) and left it there.
    for (d, before) in daemons.iter().zip(&leases) {
        eventually("each worker's look at the queue", || async {
            (metric(d, "switchyard_worker_leases_total").await >= before + 2.0).then_some(())
        })
        .await;
    }
    let queued = c.jobs("acme", "queued");
    assert_eq!(queued.len(), 1, "held while paused: {queued:?}");

    // Resume through the second: the held delivery runs, and actions work
    // on every daemon again.
    let (status, _) = post(&daemons[1], &format!("{base}/resume"), Some(api), &[], "").await;
    assert_eq!(status, 200);
    eventually("the held delivery to run", || async {
        (echo_processed(&daemons[0], api, "held").await == 1).then_some(())
    })
    .await;
    for d in [&daemons[0], &daemons[2]] {
        eventually("the resume to reach another daemon", || async {
            let (status, _) = post(d, &format!("{base}/actions/echo"), Some(api), &[], echo).await;
            (status == 200).then_some(())
        })
        .await;
    }
}

/// Issue 20: the per-tenant limit counts every daemon's running jobs, and a
/// tenant with a deep backlog does not hold up another tenant's few
/// deliveries, whichever daemons they arrive at.
#[tokio::test]
async fn the_queue_is_fair_across_three_daemons() {
    const PER_TENANT: usize = 3;
    const BACKLOG: usize = 120;
    let c = Cluster::postgres(
        "fair",
        3,
        &format!("[jobs]\nworkers = 4\nper_tenant = {PER_TENANT}\n"),
        &[("acme", ECHO_QUEUED), ("globex", ECHO_QUEUED)],
    );
    let daemons: Vec<Daemon> = (0..3).map(|i| c.start(i)).collect();
    for k in 0..BACKLOG {
        deliver(
            &daemons[k % 3],
            "acme",
            json!({"id": format!("big-{k}"), "delay_ms": 250}),
        )
        .await;
    }
    // Measured from here: how much of acme's backlog runs before globex's
    // five deliveries, sent now, are done.
    let acme_before = c.jobs("acme", "done").len();
    for k in 0..5 {
        deliver(
            &daemons[k % 3],
            "globex",
            json!({"id": format!("small-{k}"), "delay_ms": 100}),
        )
        .await;
    }
    // While acme's backlog drains, never more than its limit runs at once
    // across the three daemons.
    let mut most = 0;
    let give_up = Instant::now() + Duration::from_secs(60);
    let small_done_at = loop {
        assert!(
            Instant::now() < give_up,
            "globex's deliveries did not finish"
        );
        let running = c.jobs("acme", "running").len();
        assert!(running <= PER_TENANT, "{running} acme jobs running at once");
        most = most.max(running);
        if c.jobs("globex", "done").len() == 5 {
            break c.jobs("acme", "done").len();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ran_first = small_done_at - acme_before;
    let pending = BACKLOG - acme_before;
    assert!(
        ran_first < pending / 2,
        "globex waited for acme's backlog: {ran_first} of acme's {pending} pending jobs ran first"
    );
    let give_up = Instant::now() + Duration::from_secs(60);
    while c.jobs("acme", "done").len() < BACKLOG {
        let running = c.jobs("acme", "running").len();
        assert!(running <= PER_TENANT, "{running} acme jobs running at once");
        most = most.max(running);
        assert!(Instant::now() < give_up, "acme's backlog did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        most > 1,
        "the limit was never approached (at most {most} running)"
    );
}

/// `switchyard migrate --check` on a schema nobody has migrated says what
/// is pending (exit 3); `migrate` applies it; then the check passes; a
/// schema newer than the binary is an error (exit 1) saying so.
#[tokio::test]
async fn migrate_check_tells_pending_current_and_newer_apart() {
    let schema = Schema(format!("it_migrate_{}", std::process::id()));
    let server = format!(
        "data_dir = \"data\"\n[storage]\nbackend = \"postgres\"\nurl = \"{}\"\nschema = \"{}\"\n",
        postgres_url(),
        schema.0
    );
    let dir = config_dir(&server, &[]);
    let cfg = dir.path().to_str().unwrap();
    // A password (trust authentication ignores it) that must appear in no
    // output.
    std::fs::write(
        dir.path().join("switchyard.toml"),
        format!("{server}password = \"env:SY_TEST_PG_PASSWORD\"\n"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = bin()
            .args(args)
            .env("SY_TEST_PG_PASSWORD", "hunter2-hunter2")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!text.contains("hunter2"), "the password leaked: {text}");
        (out.status.code(), text)
    };
    let (code, out) = run(&["migrate", "--config", cfg, "--check"]);
    assert_eq!(code, Some(3), "{out}");
    // The check created nothing, not even the schema.
    postgres_execute(format!(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '{}') \
         THEN RAISE EXCEPTION 'the check created the schema'; END IF; END $$",
        schema.0
    ))
    .unwrap();
    assert!(
        out.contains("is at schema version 0") && out.contains("pending"),
        "{out}"
    );
    let (code, out) = run(&["migrate", "--config", cfg]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("migrated to"), "{out}");
    let (code, out) = run(&["migrate", "--config", cfg, "--check"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("up to date"), "{out}");
    // A newer switchyard migrated this database.
    postgres_execute(format!(
        "INSERT INTO {}.switchyard_schema (version, applied_at) VALUES (999, 0)",
        schema.0
    ))
    .unwrap();
    let (code, out) = run(&["migrate", "--config", cfg, "--check"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("schema version 999, newer than this switchyard"),
        "{out}"
    );
}

/// `/readyz` answers 503 while the state database does not answer (here:
/// a table the check reads is locked), so a load balancer sends requests
/// elsewhere, and 200 again once it does.
#[tokio::test]
async fn readiness_follows_the_database() {
    let c = Cluster::postgres("ready", 1, "", &[("acme", ECHO_QUEUED)]);
    let d = c.start(0);
    let (status, body) = get(&d, "/readyz", None).await;
    assert_eq!((status, body), (200, json!("ready")));

    let (client, conn) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let schema = format!("it_ready_{}", std::process::id());
    client
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {schema}.jobs IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .unwrap();
    let (status, body) = get(&d, "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, json!("the state database did not answer within 2 s"));
    assert!(!body.to_string().contains("127.0.0.1"), "{body}");
    client.batch_execute("ROLLBACK").await.unwrap();
    let (status, _) = get(&d, "/readyz", None).await;
    assert_eq!(status, 200);
}

/// `[storage] tls = "verify"` with a `ca_file` reaches this machine's
/// server over TLS (its certificate is for `localhost`); the same for
/// 127.0.0.1 is refused, naming the certificate's problem.
#[test]
fn storage_tls_settings_reach_the_server_or_say_why_not() {
    let base: tokio_postgres::Config = postgres_url().parse().unwrap();
    let server = |host: &str| {
        format!(
            "data_dir = \"data\"\n[storage]\nbackend = \"postgres\"\n\
             url = \"postgres://{}@{host}:{}/{}\"\nschema = \"it_tls_{}\"\n\
             tls = \"verify\"\nca_file = \"/etc/ssl/certs/ssl-cert-snakeoil.pem\"\n",
            base.get_user().unwrap_or("postgres"),
            base.get_ports().first().copied().unwrap_or(5432),
            base.get_dbname().unwrap_or("test"),
            std::process::id(),
        )
    };
    let check = |host: &str| {
        let dir = config_dir(&server(host), &[]);
        let out = bin()
            .args([
                "migrate",
                "--config",
                dir.path().to_str().unwrap(),
                "--check",
            ])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = check("localhost");
    assert_eq!(code, Some(3), "reached over TLS, nothing migrated: {out}");
    let (code, out) = check("127.0.0.1");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("certificate not valid for name \"127.0.0.1\""),
        "{out}"
    );
}
