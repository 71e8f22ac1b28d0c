//! Many tenants on one daemon: N tenants with five `echo` instances each
//! (no credentials), in a temporary configuration directory. Prints, for
//! each N, the time from start to `/readyz`, the resident memory once
//! idle, the time of a reload after one tenant file changed, and what the
//! first call to an instance costs over a warm call.
//!
//! ```text
//! cargo bench -p switchyard --bench tenants              # TENANTS=1000,10000
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const INSTANCES: usize = 5;

fn tenant_file(i: usize) -> String {
    (0..INSTANCES)
        .map(|n| {
            format!(
                "[[instance]]\nid = \"e{n}\"\nplugin = \"echo\"\n[instance.config]\ngreeting = \"t{i}\"\n\n"
            )
        })
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn run(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("switchyard.toml"), "data_dir = \"data\"\n").unwrap();
    std::fs::create_dir(dir.path().join("tenants")).unwrap();
    for i in 0..n {
        std::fs::write(
            dir.path().join(format!("tenants/t{i:05}.toml")),
            tenant_file(i),
        )
        .unwrap();
    }
    let cfg = dir.path().to_str().unwrap().to_owned();
    let operator = cli(&["token", "--config", &cfg, "create-operator"], None)
        .trim()
        .to_owned();
    let api = token(dir.path(), "t00001");
    let started = Instant::now();
    let mut child = bin()
        .args(["serve", "--config", &cfg, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("switchyard listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    let d = Daemon { child, base };
    eventually("readyz", || async {
        (get(&d, "/readyz", None).await.0 == 200).then_some(())
    })
    .await;
    let ready = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(d.child.id());

    // The daemon's first call (to e0), warm calls to e0, and then the
    // first call to each of the tenant's other instances, made right after
    // the warm ones: that difference is what an instance's first use costs.
    // The daemon's first call also pays what the process does once, and on
    // a virtual machine whatever waking up after an idle second costs.
    let client = reqwest::Client::new();
    let call = |instance: &str| {
        let url = format!(
            "{}/v1/tenants/t00001/instances/{instance}/actions/echo",
            d.base
        );
        let (client, api) = (&client, &api);
        async move {
            let t = Instant::now();
            let resp = client
                .post(&url)
                .bearer_auth(api)
                .header("content-type", "application/json")
                .body(r#"{"input": {}, "actor": {"id": "bench"}}"#)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body = resp.text().await.unwrap();
            assert_eq!(status, 200, "{body}");
            t.elapsed()
        }
    };
    // The connection is opened before the clock starts.
    let ready_again = client
        .get(format!("{}/readyz", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready_again.status(), 200);
    let daemon_first = call("e0").await;
    let mut warm = Vec::new();
    for _ in 0..50 {
        warm.push(call("e0").await);
    }
    let mut first = Vec::new();
    for n in 1..INSTANCES {
        first.push(call(&format!("e{n}")).await);
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (warm, first) = (median(warm), median(first));

    // One tenant file changes; the operator reloads.
    std::fs::write(dir.path().join("tenants/t00000.toml"), tenant_file(n + 1)).unwrap();
    let t = Instant::now();
    let (status, out) = post(&d, "/v1/admin/reload", Some(&operator), &[], "").await;
    assert_eq!(status, 200, "{out}");
    let reload = t.elapsed();
    println!(
        "{n:>6} tenants x {INSTANCES}: ready in {:>6.2} s, idle RSS {:>5} MiB, reload after one file changed {:>6.3} s ({}), warm call (median of 50) {:>5.2} ms, first call to an unused instance (median of {}) {:>5.2} ms, the daemon's first call {:>5.2} ms",
        ready.as_secs_f64(),
        idle / 1024,
        reload.as_secs_f64(),
        out["reloaded"].as_str().unwrap_or_default(),
        warm.as_secs_f64() * 1e3,
        INSTANCES - 1,
        first.as_secs_f64() * 1e3,
        daemon_first.as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let ns: Vec<usize> = std::env::var("TENANTS")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    for n in ns {
        run(n).await;
    }
}
