//! The daemon on the PostgreSQL backend: two daemons, each with its own
//! data directory, share one database. A token and secrets made through
//! one work on the other, and webhook deliveries sent to both are each
//! processed once, whichever daemon's worker leases them.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// The server the tests use (as the store's own tests).
fn postgres_url() -> String {
    std::env::var("SWITCHYARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

const TENANT: &str = r#"[[instance]]
id = "echo-1"
plugin = "echo"

[instance.webhooks.events]
token = "secret:hook-token"
event_id_field = "id"
"#;

/// Drops the test's schema when the test ends, however it ends.
struct Schema(String);

impl Drop for Schema {
    fn drop(&mut self) {
        let schema = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (client, conn) =
                    tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
                        .await
                        .unwrap();
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await
                    .unwrap();
            });
        })
        .join();
    }
}

#[tokio::test]
async fn two_daemons_share_one_database() {
    let schema = Schema(format!("it_{}", std::process::id()));
    let server = format!(
        "data_dir = \"data\"\n\n[storage]\nbackend = \"postgres\"\nurl = \"{}\"\nschema = \"{}\"\npool_size = 4\n",
        postgres_url(),
        schema.0
    );
    let a = config_dir(&server, &[("acme", TENANT)]);
    let b = config_dir(&server, &[("acme", TENANT)]);
    let cfg_a = a.path().to_str().unwrap();
    cli(
        &["secret", "--config", cfg_a, "set", "acme", "hook-token"],
        Some("hook-t0ken"),
    );
    // The secrets are in the database; the key that seals them is each
    // daemon's to hold.
    std::fs::create_dir_all(b.path().join("data")).unwrap();
    std::fs::copy(
        a.path().join("data/master.key"),
        b.path().join("data/master.key"),
    )
    .unwrap();
    let api = token(a.path(), "acme");
    let (da, db) = (start(a.path()), start(b.path()));

    let ids: Vec<String> = (0..20).map(|i| format!("e-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let d = if i % 2 == 0 { &da } else { &db };
        let (status, body) = post(
            d,
            "/hooks/acme/echo-1/events",
            None,
            &[("x-switchyard-token", "hook-t0ken")],
            &json!({"id": id}).to_string(),
        )
        .await;
        assert_eq!((status, &body["queued"]), (200, &json!(true)), "{body}");
    }
    // Each delivery once, seen from either daemon.
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let mut counts = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            counts.push(echo_processed(if i % 2 == 0 { &db } else { &da }, &api, id).await);
        }
        if counts.iter().all(|c| *c > 0) {
            assert!(counts.iter().all(|c| *c == 1), "{counts:?}");
            break;
        }
        assert!(Instant::now() < give_up, "not all processed: {counts:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The same delivery again, through the other daemon: a duplicate.
    let (status, body) = post(
        &db,
        "/hooks/acme/echo-1/events",
        None,
        &[("x-switchyard-token", "hook-t0ken")],
        &json!({"id": "e-0"}).to_string(),
    )
    .await;
    assert_eq!(
        (status, &body["duplicate"]),
        (200, &json!(true)),
        "a duplicate is acknowledged, not queued: {body}"
    );
    drop((da, db));
}
