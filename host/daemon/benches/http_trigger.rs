//! The HTTP trigger under load: requests per second and latency of a
//! synchronous webhook route of the bundled `echo` plugin, driven by `wrk`
//! on loopback, against a native axum handler doing the same work in the
//! same run; prints the ratio daemon / native.
//!
//! Both sides answer `POST /hooks/…/inbound` with a body: they check the
//! shared `x-switchyard-token` in constant time, read the body under a size
//! cap, and answer 200 with the body and an `x-echo-method` header. The
//! daemon's side also does what it always does: routing to the tenant's
//! instance, admission, a fresh wasm Store per request, the plugin call, and
//! the invocation's record in its database.
//!
//! Needs `wrk` (Debian package `wrk`).
//!
//! ```text
//! cargo bench -p switchyard --bench http_trigger     # DURATION=10 CONNECTIONS=16
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::*;

const TOKEN: &str = "hook-t0ken";
const BODY: &str = r#"{"sys_id":"9d385017c611228701d22104cc95c371","state":"2"}"#;

/// What `wrk` measured.
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
    errors: u64,
}

/// `12.5us`, `3.2ms`, `1.1s` as milliseconds.
fn millis(s: &str) -> f64 {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().unwrap_or_else(|_| panic!("wrk latency {s:?}"));
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        other => panic!("wrk latency unit {other:?} in {s:?}"),
    }
}

fn wrk(url: &str, script: &std::path::Path, secs: u32, conns: u32) -> Run {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
            "-s",
            script.to_str().unwrap(),
            url,
        ])
        .output()
        .unwrap_or_else(|e| panic!("running wrk (Debian package `wrk`): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}");
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
    };
    let errors = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map_or(0, |rest| {
            rest.split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        });
    Run {
        rps: field("Requests/sec:")
            .unwrap_or_else(|| panic!("no Requests/sec in {text}"))
            .parse()
            .unwrap(),
        p50_ms: millis(&field("50%").unwrap_or_else(|| panic!("no p50 in {text}"))),
        p99_ms: millis(&field("99%").unwrap_or_else(|| panic!("no p99 in {text}"))),
        non_2xx: field("Non-2xx or 3xx responses:").map_or(0, |n| n.parse().unwrap()),
        errors,
    }
}

/// The native side: the same check, cap and answer, in axum.
async fn native(headers: HeaderMap, body: axum::body::Bytes) -> axum::response::Response {
    use subtle::ConstantTimeEq;
    let given = headers
        .get("x-switchyard-token")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !bool::from(given.ct_eq(TOKEN.as_bytes())) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    (StatusCode::OK, [("x-echo-method", "POST")], body).into_response()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let env = |k: &str, d: u32| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (secs, conns) = (env("DURATION", 10), env("CONNECTIONS", 16));
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("this benchmark needs `wrk` (Debian: apt-get install wrk)");
        std::process::exit(2);
    }
    // Admission limits above the load, so that every request is served.
    let server = "data_dir = \"data\"\n[invocations]\nmax_concurrent = 256\n\
                  per_tenant = 128\nper_instance = 128\n";
    let tenant = "[[instance]]\nid = \"e\"\nplugin = \"echo\"\n\n\
                  [instance.webhooks.inbound]\ntoken = \"secret:hook-token\"\n";
    let dir = config_dir(server, &[("acme", tenant)]);
    let cfg = dir.path().to_str().unwrap().to_owned();
    cli(
        &["secret", "--config", &cfg, "set", "acme", "hook-token"],
        Some(TOKEN),
    );
    let d = start(dir.path());
    let daemon_url = format!("{}/hooks/acme/e/inbound", d.base);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let native_url = format!(
        "http://{}/hooks/acme/e/inbound",
        listener.local_addr().unwrap()
    );
    let app = axum::Router::new()
        .route("/hooks/acme/e/inbound", axum::routing::post(native))
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let script = dir.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{BODY}'\n\
             wrk.headers[\"content-type\"] = \"application/json\"\n\
             wrk.headers[\"x-switchyard-token\"] = \"{TOKEN}\"\n"
        ),
    )
    .unwrap();

    // Both answer as expected before anything is measured.
    let client = reqwest::Client::new();
    for url in [&daemon_url, &native_url] {
        let resp = client
            .post(url)
            .header("x-switchyard-token", TOKEN)
            .body(BODY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(resp.headers()["x-echo-method"], "POST", "{url}");
        assert_eq!(resp.text().await.unwrap(), BODY, "{url}");
    }
    // Warm-up, then interleaved rounds so that both see the same machine.
    let _ = tokio::task::spawn_blocking({
        let (u, s) = (daemon_url.clone(), script.clone());
        move || wrk(&u, &s, 2, conns)
    })
    .await;
    let rounds = 3;
    let (mut d_runs, mut n_runs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (url, runs) in [(&native_url, &mut n_runs), (&daemon_url, &mut d_runs)] {
            let (u, s) = (url.clone(), script.clone());
            let run = tokio::task::spawn_blocking(move || wrk(&u, &s, secs, conns))
                .await
                .unwrap();
            assert_eq!(run.non_2xx, 0, "{url}: answers other than 2xx");
            assert_eq!(run.errors, 0, "{url}: socket errors");
            runs.push(run);
        }
    }
    let summary = |runs: &[Run]| {
        (
            median(runs.iter().map(|r| r.rps).collect()),
            median(runs.iter().map(|r| r.p50_ms).collect()),
            median(runs.iter().map(|r| r.p99_ms).collect()),
        )
    };
    let (n_rps, n_p50, n_p99) = summary(&n_runs);
    let (d_rps, d_p50, d_p99) = summary(&d_runs);
    println!(
        "synchronous webhook, wrk -t1 -c{conns} -d{secs}s, median of {rounds} interleaved rounds"
    );
    println!("| | requests/s | p50 | p99 |");
    println!("|---|---|---|---|");
    println!("| native axum | {n_rps:.0} | {n_p50:.2} ms | {n_p99:.2} ms |");
    println!("| echo via Switchyard | {d_rps:.0} | {d_p50:.2} ms | {d_p99:.2} ms |");
    println!(
        "ratio Switchyard / native (requests/s): {:.2}",
        d_rps / n_rps
    );
}
