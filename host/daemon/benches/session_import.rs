//! A large session import through the real daemon: `session-import` pulls
//! N sessions from the BeyondTrust simulator into the ServiceNow simulator.
//!
//! Runs twice, with N/10 and N sessions (default N = 10,000; set
//! `SESSIONS`) at the same density, each in a fresh daemon process, and
//! prints the time and the
//! daemon's peak resident memory during the import (VmHWM, reset after
//! start-up). Memory that does not grow with
//! the number of sessions shows as a peak ratio near 1 while the session
//! ratio is 10.
//!
//! ```text
//! cargo bench -p switchyard --bench session_import
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use switchyard_sim::beyondtrust::{BeyondTrust, BtConfig};
use switchyard_sim::servicenow::{ServiceNow, ServiceNowConfig};

/// `VmHWM` and `VmRSS` of `pid`, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

struct Run {
    sessions: usize,
    secs: f64,
    peak_kib: u64,
    idle_kib: u64,
    pulls: usize,
}

async fn run(n: usize) -> Run {
    let bt = BeyondTrust::start(BtConfig::default(), 3, 0).await.unwrap();
    // The same density in both runs (one session ending every 7.2 s, so
    // 10,000 span 20 hours): a report window holds as many sessions either
    // way, and only the number of sessions differs.
    let span = (n as i64 * 72 / 10).max(60);
    bt.add_sessions(3, n, span);
    let sn = ServiceNow::start(
        ServiceNowConfig {
            rate_limit_per_minute: u32::MAX,
            ..ServiceNowConfig::default()
        },
        3,
        20,
        20,
    )
    .await
    .unwrap();
    let tenant = format!(
        "[roles]\n\"Integration Admin\" = [\"admin\"]\n\n{}",
        session_import_instance(
            &bt,
            &sn,
            "sessions",
            &format!(
                "run_budget_secs = \"3000\"\nfirst_pull_hours = \"{}\"",
                (span / 3600 + 1).max(24)
            ),
            "[instance.limits]\ndeadline = 3600000\nhttp_requests = 1000000\n",
        )
    );
    let (dir, token) = acme_with_secrets(
        &tenant,
        &[
            ("bt-secret", bt.config().client_secret.clone()),
            ("sn-password", sn.config().password.clone()),
        ],
    );
    let d = start(dir.path());
    let pid = d.child.id();
    // Warm up: one invocation compiles nothing (the cache is shared) but
    // instantiates the component and opens the connections.
    let body = json!({"input": {}, "actor": {"id": "bench", "roles": ["Integration Admin"]}});
    let path = "/v1/tenants/acme/instances/sessions/actions/test-connection";
    let (status, out) = post(&d, path, Some(&token), &[], &body.to_string()).await;
    assert_eq!(status, 200, "{out}");
    // Reset the peak (VmHWM) so that it measures the import, not the
    // start-up (which may compile the components into the cache).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("resetting the peak RSS");
    let (_, idle) = memory(pid);

    let path = "/v1/tenants/acme/instances/sessions/actions/pull-sessions-now";
    let started = Instant::now();
    let mut pulls = 0;
    while sn.records("x_bmgr_support_session").len() < n {
        pulls += 1;
        let (status, out): (u16, Value) =
            post(&d, path, Some(&token), &[], &body.to_string()).await;
        assert_eq!(status, 200, "{out}");
        assert!(pulls < 20, "the import does not progress: {out}");
    }
    let secs = started.elapsed().as_secs_f64();
    let (peak, _) = memory(pid);
    assert_eq!(sn.records("x_bmgr_support_session").len(), n);
    tokio::time::sleep(Duration::from_millis(10)).await;
    Run {
        sessions: n,
        secs,
        peak_kib: peak,
        idle_kib: idle,
        pulls,
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let small = run(n / 10).await;
    let large = run(n).await;
    for r in [&small, &large] {
        println!(
            "{:>6} sessions: {:>6.1} s ({:>5.0} sessions/s, {} pull(s)); daemon RSS after warm-up {} MiB, peak {} MiB",
            r.sessions,
            r.secs,
            r.sessions as f64 / r.secs,
            r.pulls,
            r.idle_kib / 1024,
            r.peak_kib / 1024
        );
    }
    println!(
        "sessions ×{:.0}, peak memory ×{:.2}, time ×{:.1}",
        large.sessions as f64 / small.sessions as f64,
        large.peak_kib as f64 / small.peak_kib.max(1) as f64,
        large.secs / small.secs
    );
}
