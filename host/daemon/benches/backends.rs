//! Queued webhook ingest and drain on each state backend, in one run:
//! one daemon on SQLite (the embedded default, the baseline), one daemon
//! on PostgreSQL, and three daemons sharing one PostgreSQL database.
//!
//! For each setup, with `TENANTS` tenants (default 4):
//! 1. Ingest: every instance is paused (through the first daemon; on
//!    PostgreSQL the pause holds on all), and `CLIENTS` concurrent senders
//!    post `DELIVERIES` verified deliveries (default 4,000) to a queued
//!    route of the bundled `echo` plugin, round-robin over the daemons and
//!    tenants. Each answer means the delivery is stored. Reported: accepted
//!    per second and the p50/p99 latency of an answer.
//! 2. Drain: the instances are resumed and the time until every queue is
//!    empty (every delivery processed) is measured.
//!
//! Each rate is also given as a ratio to SQLite's in the same run. The
//! daemons, PostgreSQL and the senders share this machine's cores, so
//! three daemons on one machine show the cost of sharing a database, not
//! the capacity of three machines.
//!
//! ```text
//! cargo bench -p switchyard --bench backends
//! DELIVERIES=10000 ROUTE=sink cargo bench -p switchyard --bench backends
//! ```
//!
//! PostgreSQL: `SWITCHYARD_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each setup uses a schema of
//! its own and drops it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;

const CLIENTS: usize = 32;

/// Every setup gets the same limits: enough per tenant that three daemons
/// can all work for every tenant at once.
const JOBS: &str = "[jobs]\nper_tenant = 16\n";

#[derive(Clone, Copy)]
struct Figures {
    ingest_rate: f64,
    p50: Duration,
    p99: Duration,
    drain_rate: f64,
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("DELIVERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let tenants: usize = std::env::var("TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
        .max(1);
    // `events` counts each delivery in the plugin's storage (a read and a
    // compare-and-swap); `sink` does nothing: the queue's own cost.
    let route = std::env::var("ROUTE").unwrap_or_else(|_| "events".into());
    let names: Vec<String> = (0..tenants).map(|t| format!("t{t}")).collect();
    let files: Vec<(&str, &str)> = names.iter().map(|t| (t.as_str(), ECHO_QUEUED)).collect();

    println!("{n} deliveries to `{route}` of {tenants} tenants, {CLIENTS} concurrent senders");
    println!(
        "{:<22} {:>10} {:>9} {:>9} {:>10} {:>14} {:>13}",
        "setup", "ingest/s", "p50 ms", "p99 ms", "drain/s", "ingest vs SQL", "drain vs SQL"
    );
    let mut baseline: Option<Figures> = None;
    for (label, daemons) in [
        ("SQLite, 1 daemon", 0),
        ("PostgreSQL, 1 daemon", 1),
        ("PostgreSQL, 3 daemons", 3),
    ] {
        let cluster = if daemons == 0 {
            Cluster::sqlite(JOBS, &files)
        } else {
            // The default pool: what a deployment gets without tuning.
            Cluster::postgres_pool(&format!("bench{daemons}"), daemons, 16, JOBS, &files)
        };
        let f = run(&cluster, daemons.max(1), &names, n, &route).await;
        let base = baseline.get_or_insert(f);
        println!(
            "{label:<22} {:>10.0} {:>9.2} {:>9.2} {:>10.0} {:>14.2} {:>13.2}",
            f.ingest_rate,
            f.p50.as_secs_f64() * 1000.0,
            f.p99.as_secs_f64() * 1000.0,
            f.drain_rate,
            f.ingest_rate / base.ingest_rate,
            f.drain_rate / base.drain_rate,
        );
    }
}

async fn run(c: &Cluster, daemons: usize, names: &[String], n: usize, route: &str) -> Figures {
    let apis: Vec<String> = names.iter().map(|t| c.token(t)).collect();
    let ds: Vec<Daemon> = (0..daemons).map(|i| c.start(i)).collect();
    let base = |t: &str| format!("/v1/tenants/{t}/instances/echo-1");
    for (t, api) in names.iter().zip(&apis) {
        let (status, _) = post(&ds[0], &format!("{}/pause", base(t)), Some(api), &[], "").await;
        assert_eq!(status, 200);
    }
    // Delivery i goes to daemon i % daemons and tenant i % tenants, so
    // every daemon gets every tenant's deliveries.
    let urls: Vec<String> = (0..daemons * names.len())
        .map(|i| {
            format!(
                "{}/hooks/{}/echo-1/{route}",
                ds[i % daemons].base,
                names[i % names.len()]
            )
        })
        .collect();
    let client = reqwest::Client::new();
    let (ingest, mut latencies) = send_deliveries(&client, urls, n, CLIENTS).await;
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];

    for (t, api) in names.iter().zip(&apis) {
        let (status, _) = post(&ds[0], &format!("{}/resume", base(t)), Some(api), &[], "").await;
        assert_eq!(status, 200);
    }
    // The queue is the database's: any daemon's status counts every job.
    let statuses: Vec<(String, String)> = names
        .iter()
        .zip(&apis)
        .map(|(t, api)| (format!("{}{}/status", ds[0].base, base(t)), api.clone()))
        .collect();
    let drain = wait_drained(&client, &statuses).await;
    Figures {
        ingest_rate: n as f64 / ingest.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        drain_rate: n as f64 / drain.as_secs_f64(),
    }
}
