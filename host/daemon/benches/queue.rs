//! Queue throughput through the real daemon: how fast verified webhook
//! deliveries are accepted (ingest), and how fast the worker runs them
//! (drain), for short jobs, in one run.
//!
//! 1. Ingest: with the instance paused (so nothing is drained meanwhile),
//!    `CLIENTS` concurrent senders post N deliveries to a queued route of
//!    the bundled `echo` plugin; each answer means the delivery is stored.
//! 2. Drain: the instance is resumed and the time until the queue is empty
//!    (every delivery processed by the plugin) is measured.
//!
//! Prints both rates and drain / ingest (goal: at least 1, so a sustained
//! load does not build a backlog).
//!
//! ```text
//! cargo bench -p switchyard --bench queue            # DELIVERIES=5000 by default
//! ROUTE=sink cargo bench -p switchyard --bench queue # jobs that do nothing
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const TENANT: &str = r#"[[instance]]
id = "echo-1"
plugin = "echo"

[instance.webhooks.events]
token = "secret:hook-token"
event_id_field = "id"

[instance.webhooks.sink]
token = "secret:hook-token"
event_id_field = "id"
"#;

const CLIENTS: usize = 32;

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("DELIVERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let server = std::env::var("SERVER").unwrap_or_else(|_| "data_dir = \"data\"\n".into());
    let dir = config_dir(&server, &[("acme", TENANT)]);
    let cfg = dir.path().to_str().unwrap();
    cli(
        &["secret", "--config", cfg, "set", "acme", "hook-token"],
        Some("hook-t0ken"),
    );
    let api = token(dir.path(), "acme");
    let d = start(dir.path());
    let base = "/v1/tenants/acme/instances/echo-1";
    let (status, _) = post(&d, &format!("{base}/pause"), Some(&api), &[], "").await;
    assert_eq!(status, 200);

    // `events` counts each delivery in the plugin's storage (a read and a
    // compare-and-swap); `sink` does nothing: the worker's own cost.
    let route = std::env::var("ROUTE").unwrap_or_else(|_| "events".into());
    let url = Arc::new(format!("{}/hooks/acme/echo-1/{route}", d.base));
    let next = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let started = Instant::now();
    let senders: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, next, client) = (url.clone(), next.clone(), client.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let resp = client
                        .post(url.as_str())
                        .header("x-switchyard-token", "hook-t0ken")
                        .json(&json!({"id": format!("bench-{i}")}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status().as_u16(), 200);
                }
            })
        })
        .collect();
    for s in senders {
        s.await.unwrap();
    }
    let ingest = started.elapsed().as_secs_f64();

    let (status, _) = post(&d, &format!("{base}/resume"), Some(&api), &[], "").await;
    assert_eq!(status, 200);
    let started = Instant::now();
    // One client for the polling: building one per request loads the TLS
    // roots each time, CPU the daemon's drain would lose to the bench.
    let status_url = format!("{}{base}/status", d.base);
    loop {
        let st: serde_json::Value = client
            .get(&status_url)
            .bearer_auth(&api)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let q = &st["queue"];
        if q["queued"] == 0 && q["running"] == 0 {
            assert_eq!(q["dead"], 0, "{st}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = started.elapsed().as_secs_f64();
    let (ingest_rate, drain_rate) = (n as f64 / ingest, n as f64 / drain);
    println!(
        "{n} deliveries to `{route}`: ingest {ingest:.2} s ({ingest_rate:.0}/s, {CLIENTS} clients), \
         drain {drain:.2} s ({drain_rate:.0}/s); drain / ingest = {:.2}",
        drain_rate / ingest_rate
    );
}
