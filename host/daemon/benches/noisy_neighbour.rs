//! Noisy neighbours through the real daemon: a benign tenant's action
//! latency (p50, p99) alone, and while another tenant runs each kind of
//! hostile load, in one run; prints each ratio to the alone value.
//!
//! The benign call is the bundled `echo` plugin's `storage` action reading
//! one key (a wasm call and a storage read). The hostile tenant runs the
//! hostile test component and an `echo` instance:
//!
//! | load | what |
//! |---|---|
//! | spinners | 4 concurrent `spin` calls, over and over (each computes until its 2 s deadline) |
//! | memory bombs | 2 concurrent `memory-bomb` calls (grow to the 64 MiB limit), over and over |
//! | log amplification | 2 concurrent `log-flood` calls (100,000 records each), over and over |
//! | slot holders | 16 concurrent `sleep-in-host` calls waiting on an upstream that never answers |
//! | storage writes | 2 concurrent loops writing 1 MiB values |
//!
//! ```text
//! cargo bench -p switchyard --bench noisy_neighbour      # SAMPLES=300 per phase
//! ONLY="log amplification" cargo bench -p switchyard --bench noisy_neighbour
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `n` benign calls one after another; their latencies in ms, sorted.
async fn benign(d: &Daemon, token: &str, n: usize) -> Vec<f64> {
    let client = reqwest::Client::new();
    let url = format!("{}/v1/tenants/benign/instances/e/actions/storage", d.base);
    let body = json!({"input": {"ops": [{"op": "get", "key": "k"}]}, "actor": {"id": "b"}});
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let resp = client
            .post(&url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            200,
            "{}",
            resp.text().await.unwrap()
        );
        resp.bytes().await.unwrap();
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        // A steady trickle, not a flood: what an agent's UI does.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out.sort_by(f64::total_cmp);
    out
}

/// Runs `concurrency` loops of the hostile `action` on `rt` until `stop`.
/// The hostile client has a runtime of its own, as it would have a
/// machine of its own: 16 loops sharing the benign client's two workers
/// would delay the benign client itself, and that is not the daemon's
/// doing.
#[allow(clippy::too_many_arguments)]
fn hostile(
    rt: &tokio::runtime::Handle,
    d: &Daemon,
    token: &str,
    instance: &str,
    action: &str,
    input: Value,
    concurrency: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..concurrency)
        .map(|_| {
            let url = format!(
                "{}/v1/tenants/hostile/instances/{instance}/actions/{action}",
                d.base
            );
            let (token, stop, input) = (token.to_owned(), stop.clone(), input.clone());
            rt.spawn(async move {
                let client = reqwest::Client::new();
                let body = json!({"input": input, "actor": {"id": "h"}});
                while !stop.load(Ordering::Relaxed) {
                    // Whatever the answer (deadline, limit, 429): again.
                    let _ = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await;
                }
            })
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    // An upstream that accepts connections and never answers.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hang.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hang.incoming() {
            held.push(s);
        }
    });
    let benign_tenant = "[[instance]]\nid = \"e\"\nplugin = \"echo\"\n";
    let hostile_tenant = format!(
        "[[instance]]\nid = \"h\"\nplugin = \"hostile\"\negress = [\"http://127.0.0.1:{port}\"]\n\
         [instance.limits]\ndeadline = 2000\n\n\
         [[instance]]\nid = \"w\"\nplugin = \"echo\"\n"
    );
    let dir = config_dir(
        "data_dir = \"data\"\n",
        &[("benign", benign_tenant), ("hostile", &hostile_tenant)],
    );
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    std::fs::copy(
        switchyard_tests::guests::GUEST_HOSTILE,
        dir.path().join("plugins/hostile.wasm"),
    )
    .unwrap();
    let (bt, ht) = (token(dir.path(), "benign"), token(dir.path(), "hostile"));
    let d = start(dir.path());
    // Warm up both plugins.
    benign(&d, &bt, 20).await;

    let loads: Vec<(&str, &str, &str, Value, usize)> = vec![
        ("spinners", "h", "spin", json!({}), 4),
        ("memory bombs", "h", "memory-bomb", json!({}), 2),
        ("log amplification", "h", "log-flood", json!({}), 2),
        (
            "slot holders",
            "h",
            "sleep-in-host",
            json!({"url": format!("http://127.0.0.1:{port}/")}),
            16,
        ),
        (
            "storage writes",
            "w",
            "storage",
            json!({"ops": [{"op": "set", "key": "big", "repeat": 1_048_576}]}),
            2,
        ),
    ];
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let alone = benign(&d, &bt, n).await;
    let (p50, p99) = (percentile(&alone, 0.5), percentile(&alone, 0.99));
    println!("{:<20} p50 {p50:>7.2} ms  p99 {p99:>7.2} ms", "alone");
    // ONLY=<load name>: one load (to profile it).
    let only = std::env::var("ONLY").ok();
    for (name, instance, action, input, c) in loads {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = hostile(load_rt.handle(), &d, &ht, instance, action, input, c, &stop);
        // Let the load build up before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let under = benign(&d, &bt, n).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.abort();
        }
        let (q50, q99) = (percentile(&under, 0.5), percentile(&under, 0.99));
        println!(
            "{name:<20} p50 {q50:>7.2} ms  p99 {q99:>7.2} ms   ×{:.1} p50, ×{:.1} p99",
            q50 / p50,
            q99 / p99
        );
        // Let the daemon settle (deadlines run out) before the next load.
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    // Dropping a runtime blocks, which an async context may not do.
    load_rt.shutdown_background();
}
