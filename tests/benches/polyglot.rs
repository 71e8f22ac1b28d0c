//! Benchmark: the same plugin in Rust, Python and JavaScript.
//!
//! `incident-watch` (plugins/examples) built three ways, measured in one
//! run on one machine: component size, build time, the first compile (cold
//! cache), a load from the compile cache, and the cost of one call doing the
//! same work in each language, as a ratio to Rust:
//!
//! - **webhook**: the `incident` route with a priority-5 incident: the
//!   plugin parses the JSON body, reads `min_priority` and answers (no
//!   upstream call, one fresh instance per call as always).
//! - **announce**: the `announce` action on an incident already announced:
//!   one ServiceNow Table API GET (the simulator, over loopback, with the
//!   host's Basic credential) and one storage compare-and-swap.
//!
//! It also measures whether a cold compile slows calls to other plugins:
//! the Rust plugin's webhook call, with and without a Python compile
//! running beside it on the same runtime.
//!
//! Run: `cargo bench -p switchyard-tests --bench polyglot`

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use switchyard_runtime::credentials::{CredentialSecret, CredentialSpec};
use switchyard_runtime::{
    CallOptions, Instance, InstanceSpec, Runtime, RuntimeConfig, WebhookRequest,
};
use switchyard_sim::servicenow::{ServiceNow, ServiceNowConfig};
use switchyard_store::{KvBackend, Namespace, Quota, SqliteStore};
use switchyard_tests::guests;

fn build(lang: &str, out: &Path) -> Duration {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/examples/build.sh");
    let t = Instant::now();
    let run = Command::new("bash")
        .arg(&script)
        .arg(lang)
        .arg(out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn spec(sn: &ServiceNow) -> InstanceSpec {
    let mut spec = InstanceSpec::new("bench", "incidents");
    spec.config
        .insert("servicenow_url".into(), sn.url().to_string());
    spec.egress.push(sn.url().to_string());
    spec.credentials = vec![
        CredentialSpec {
            name: "servicenow".into(),
            hosts: vec![sn.url().to_string()],
            secret: CredentialSecret::Basic {
                username: sn.config().username.clone(),
                password: SecretString::from(sn.config().password.clone()),
                extra_header: None,
                extra_header_value: None,
            },
        },
        CredentialSpec {
            name: "slack".into(),
            hosts: vec![sn.url().to_string()],
            secret: CredentialSecret::SecretUrl {
                url: SecretString::from(format!("{}/never-posted", sn.url())),
            },
        },
    ];
    spec
}

fn minor_incident() -> WebhookRequest {
    WebhookRequest {
        method: "POST".into(),
        query: String::new(),
        headers: Vec::new(),
        body: br#"{"sys_id": "abc", "number": "INC0000001", "priority": "5"}"#.to_vec(),
    }
}

async fn webhook(inst: &Instance) {
    let r = inst
        .handle_webhook("incident", minor_incident(), CallOptions::default())
        .await;
    let answer: serde_json::Value = serde_json::from_slice(&r.result.unwrap().body).unwrap();
    assert_eq!(answer["announced"], false);
}

fn main() {
    let quick = switchyard_tests::bench_is_quick();
    let (rounds, iters) = if quick { (3, 5) } else { (15, 40) };
    let rt = switchyard_tests::bench_runtime();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let py = dir.path().join("py.wasm");
        let js = dir.path().join("js.wasm");
        let py_build = build("python", &py);
        let js_build = build("javascript", &js);
        let langs = [
            ("Rust", std::fs::read(guests::EXAMPLE_RUST_INCIDENT_WATCH).unwrap(), None),
            ("Python", std::fs::read(&py).unwrap(), Some(py_build)),
            ("JavaScript", std::fs::read(&js).unwrap(), Some(js_build)),
        ];

        let sn = ServiceNow::start(
            ServiceNowConfig {
                rate_limit_per_minute: u32::MAX,
                ..ServiceNowConfig::default()
            },
            1,
            2,
            0,
        )
            .await
            .unwrap();
        let inc = sn.insert("incident", &[("priority", "1"), ("short_description", "x")]);
        let number = inc["number"].as_str().unwrap().to_owned();

        // Compile: a runtime with an empty cache, then a second one that
        // finds the first one's output.
        let cache = dir.path().join("cache");
        let cold = Runtime::new(RuntimeConfig {
            cache_dir: Some(cache.clone()),
            ..RuntimeConfig::default()
        })
        .unwrap();
        let warm = Runtime::new(RuntimeConfig {
            cache_dir: Some(cache.clone()),
            ..RuntimeConfig::default()
        })
        .unwrap();
        let mut rows = Vec::new();
        let mut instances = Vec::new();
        for (name, wasm, built) in &langs {
            let first = cold.load(wasm).await.unwrap();
            let again = warm.load(wasm).await.unwrap();
            assert!(!first.compiled().from_cache && again.compiled().from_cache);
            // The incident is marked announced, so that every measured
            // call does the same work: the lookup, and a CAS that fails.
            let store = Arc::new(SqliteStore::open_in_memory().unwrap());
            let marker = format!("announced/{}", inc["sys_id"].as_str().unwrap());
            store
                .set(
                    &Namespace::new("bench", "incidents"),
                    &marker,
                    b"1",
                    &Quota::default(),
                )
                .await
                .unwrap();
            let (compile, cached) = (first.compiled().took, again.compiled().took);
            let inst = Instance::new(&warm, again, spec(&sn), store).unwrap();
            rows.push((*name, wasm.len(), *built, compile, cached, rows.len()));
            instances.push((name, inst));
        }

        // One call, same work, interleaved round by round.
        let announce_input = format!("{{\"number\":\"{number}\"}}");
        let mut hook: Vec<Vec<Duration>> = vec![Vec::new(); 3];
        let mut ann: Vec<Vec<Duration>> = vec![Vec::new(); 3];
        for (_, inst) in &instances {
            webhook(inst).await;
        }
        for _ in 0..rounds {
            for (i, (name, inst)) in instances.iter().enumerate() {
                let t = Instant::now();
                for _ in 0..iters {
                    webhook(inst).await;
                }
                hook[i].push(t.elapsed() / iters);
                let t = Instant::now();
                for _ in 0..iters {
                    let out = inst
                        .invoke("announce", &announce_input, CallOptions::default())
                        .await
                        .result
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert!(out.contains("false"), "{name}: {out}");
                }
                ann[i].push(t.elapsed() / iters);
            }
        }
        let hook: Vec<Duration> = hook.into_iter().map(median).collect();
        let ann: Vec<Duration> = ann.into_iter().map(median).collect();

        println!("incident-watch in three languages (median of {rounds} rounds × {iters} calls)");
        println!(
            "| language | component | build | first compile | load from cache | webhook call | ×Rust | announce call | ×Rust |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for (name, size, built, compile, cached, i) in &rows {
            println!(
                "| {name} | {:.1} MB | {} | {} | {} | {} | {:.1} | {} | {:.1} |",
                *size as f64 / 1e6,
                built.map_or("(cargo)".to_owned(), ms),
                ms(*compile),
                ms(*cached),
                us(hook[*i]),
                hook[*i].as_secs_f64() / hook[0].as_secs_f64(),
                us(ann[*i]),
                ann[*i].as_secs_f64() / ann[0].as_secs_f64(),
            );
        }

        // A cold compile beside calls: batches of ten Rust webhook calls
        // for two seconds alone, then while the Python component compiles
        // (no cache) on another runtime in this process.
        let rust = &instances[0].1;
        let mut alone = Vec::new();
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            alone.push(time_calls(rust, 10).await);
        }
        let fresh = Runtime::new(RuntimeConfig::default()).unwrap();
        let py_wasm = langs[1].1.clone();
        let compiling = tokio::spawn(async move { fresh.load(&py_wasm).await.map(|_| ()) });
        let mut during = Vec::new();
        while !compiling.is_finished() {
            during.push(time_calls(rust, 10).await);
        }
        compiling.await.unwrap().unwrap();
        let (alone_p90, during_p90) = (p90(&alone), p90(&during));
        let (alone, during) = (median(alone), median(during));
        println!(
            "Rust webhook call while a Python component compiles beside it: median {} (alone {}; \
             ×{:.2}), 90th percentile {} (alone {}; ×{:.2})",
            us(during),
            us(alone),
            during.as_secs_f64() / alone.as_secs_f64(),
            us(during_p90),
            us(alone_p90),
            during_p90.as_secs_f64() / alone_p90.as_secs_f64()
        );
    });
}

fn p90(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() * 9 / 10]
}

async fn time_calls(inst: &Instance, n: u32) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        webhook(inst).await;
    }
    t.elapsed() / n
}
