//! Queue throughput through the real daemon: how fast verified webhook
//! deliveries are accepted (ingest), and how fast the worker runs them
//! (drain), for short jobs, in one run.
//!
//! For each tenant count (`TENANTS`, default `1,4`):
//! 1. Ingest: with every instance paused (so nothing is drained meanwhile),
//!    `CLIENTS` concurrent senders post N deliveries, spread evenly over the
//!    tenants, to a queued route of the bundled `echo` plugin; each answer
//!    means the delivery is stored.
//! 2. Drain: the instances are resumed and the time until every queue is
//!    empty (every delivery processed by the plugin) is measured.
//!
//! Prints both rates and drain / ingest (goal: at least 1, so a sustained
//! load does not build a backlog). One tenant drains at most `per_tenant`
//! (default 4) jobs at once, by design; four tenants fill the daemon's
//! default 16 workers.
//!
//! ```text
//! cargo bench -p switchyard --bench queue            # DELIVERIES=5000 by default
//! ROUTE=sink cargo bench -p switchyard --bench queue # jobs that do nothing
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;

const CLIENTS: usize = 32;

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("DELIVERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let tenants: Vec<usize> = std::env::var("TENANTS")
        .unwrap_or_else(|_| "1,4".into())
        .split(',')
        .map(|t| t.trim().parse().expect("TENANTS: a list of numbers"))
        .collect();
    // `events` counts each delivery in the plugin's storage (a read and a
    // compare-and-swap); `sink` does nothing: the worker's own cost.
    let route = std::env::var("ROUTE").unwrap_or_else(|_| "events".into());
    for t in tenants {
        run(n, t.max(1), &route).await;
    }
}

async fn run(n: usize, tenants: usize, route: &str) {
    let server = std::env::var("SERVER").unwrap_or_else(|_| "data_dir = \"data\"\n".into());
    let names: Vec<String> = (0..tenants).map(|t| format!("t{t}")).collect();
    let files: Vec<(&str, &str)> = names.iter().map(|t| (t.as_str(), ECHO_QUEUED)).collect();
    let dir = config_dir(&server, &files);
    let cfg = dir.path().to_str().unwrap();
    let mut apis = Vec::new();
    for t in &names {
        cli(
            &["secret", "--config", cfg, "set", t, "hook-token"],
            Some("hook-t0ken"),
        );
        apis.push(token(dir.path(), t));
    }
    let d = start(dir.path());
    let base = |t: &str| format!("/v1/tenants/{t}/instances/echo-1");
    for (t, api) in names.iter().zip(&apis) {
        let (status, _) = post(&d, &format!("{}/pause", base(t)), Some(api), &[], "").await;
        assert_eq!(status, 200);
    }

    let urls: Vec<String> = names
        .iter()
        .map(|t| format!("{}/hooks/{t}/echo-1/{route}", d.base))
        .collect();
    // One client for everything: building one per request loads the TLS
    // roots each time, CPU the daemon's drain would lose to the bench.
    let client = reqwest::Client::new();
    let (ingest, _) = send_deliveries(&client, urls, n, CLIENTS).await;
    let ingest = ingest.as_secs_f64();

    for (t, api) in names.iter().zip(&apis) {
        let (status, _) = post(&d, &format!("{}/resume", base(t)), Some(api), &[], "").await;
        assert_eq!(status, 200);
    }
    let statuses: Vec<(String, String)> = names
        .iter()
        .zip(&apis)
        .map(|(t, api)| (format!("{}{}/status", d.base, base(t)), api.clone()))
        .collect();
    let drain = wait_drained(&client, &statuses).await.as_secs_f64();
    let (ingest_rate, drain_rate) = (n as f64 / ingest, n as f64 / drain);
    println!(
        "{n} deliveries to `{route}` of {tenants} tenant(s): ingest {ingest:.2} s \
         ({ingest_rate:.0}/s, {CLIENTS} clients), drain {drain:.2} s ({drain_rate:.0}/s); \
         drain / ingest = {:.2}",
        drain_rate / ingest_rate
    );
}
