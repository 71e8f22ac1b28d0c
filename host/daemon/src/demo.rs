//! `switchyard demo`: a scripted scenario on the bundled `echo` plugin that
//! shows what the host does — the plugin's capabilities, a credential the
//! plugin uses but never sees, an egress denial and a job that keeps state.
//! Each step checks its outcome; any failure exits non-zero.
//!
//! The daemon (`serve`) does not exist yet, so the demo runs the scenario in
//! process and exits; `--once` is accepted now so that the command in the
//! README keeps working when the demo starts serving.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use switchyard_runtime::credentials::{CredentialSecret, CredentialSpec};
use switchyard_runtime::{CallOptions, Instance, InstanceSpec};
use switchyard_store::SqliteStore;

use crate::{ensure_step, load, runtime};

/// A loopback stand-in for an upstream API: it says whether the request
/// carried the expected bearer token, without echoing any token.
async fn start_upstream(expected: SecretString) -> anyhow::Result<String> {
    let expected = Arc::new(expected);
    let app = Router::new().route(
        "/api/whoami",
        get(move |headers: HeaderMap| {
            let expected = expected.clone();
            async move {
                let sent = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let ok = sent == format!("Bearer {}", expected.expose_secret());
                axum::Json(json!({ "authenticated": ok, "user": if ok { "svc-demo" } else { "" } }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(origin)
}

fn step(n: u32, title: &str) {
    println!("\n{n}. {title}");
}

async fn call(inst: &Instance, action: &str, input: Value) -> anyhow::Result<Value> {
    let inv = inst
        .invoke(action, &input.to_string(), CallOptions::default())
        .await;
    let out = inv.result.with_context(|| format!("action `{action}`"))?;
    Ok(serde_json::from_str(&out)?)
}

/// Runs the scenario.
pub async fn run(_once: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let rt = runtime()?;
    let echo = load(&rt, "bundled:echo").await?;
    let m = echo.manifest();
    println!("Switchyard demo");
    println!(
        "plugin `{}` {} (sha256 {}…), loaded in {} ms: {} actions, {} webhook route(s), {} job(s)",
        m.id,
        m.version,
        &echo.digest()[..12],
        started.elapsed().as_millis(),
        m.actions.len(),
        m.webhooks.len(),
        m.jobs.len()
    );

    // A per-run secret: the plugin names it, the host attaches it.
    let secret = SecretString::from(format!(
        "demo-{:x}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos(),
        std::process::id()
    ));
    let upstream = start_upstream(secret.clone()).await?;

    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(&dir.path().join("demo.db"))?);
    let mut spec = InstanceSpec::new("acme", "echo-1");
    spec.config.insert("greeting".into(), "welcome".into());
    spec.egress.push(upstream.clone());
    spec.credentials.push(CredentialSpec {
        name: "upstream".into(),
        hosts: vec![upstream.clone()],
        secret: CredentialSecret::Bearer {
            token: secret.clone(),
        },
    });
    let inst = Instance::new(&rt, echo, spec, store)?;
    println!("tenant `acme`, instance `echo-1`, egress allowlist [{upstream}]");

    step(
        1,
        "invoke `echo` — the host supplies the context and configuration",
    );
    let out = call(&inst, "echo", json!({"ticket": "INC0010001"})).await?;
    println!(
        "   tenant={} greeting={} input={}",
        out["context"]["tenant"], out["greeting"], out["input"]
    );
    ensure_step(
        out["greeting"] == "welcome",
        "echo returns the configured greeting",
    )?;

    step(2, "storage — keys are private to (tenant, instance)");
    let out = call(
        &inst,
        "storage",
        json!({"ops": [
            {"op": "set", "key": "device/42", "value": "locked"},
            {"op": "get", "key": "device/42"},
            {"op": "list", "prefix": "device/"},
            {"op": "get", "key": ""}
        ]}),
    )
    .await?;
    println!("   set → {}, get → {}, list → {}", out[0], out[1], out[2]);
    println!("   empty key → {}", out[3]["error"]);
    ensure_step(out[1] == "locked", "stored value reads back")?;
    ensure_step(
        out[3]["error"]["kind"] == "invalid-key",
        "bad key is a typed error",
    )?;

    step(
        3,
        "credential injection — the plugin names `upstream`, the host attaches it",
    );
    let inv = inst
        .invoke(
            "fetch",
            &json!({"url": format!("{upstream}/api/whoami"), "credential": "upstream"}).to_string(),
            CallOptions::default(),
        )
        .await;
    let raw = inv.result.context("fetch")?;
    let out: Value = serde_json::from_str(&raw)?;
    println!(
        "   upstream answered {} {}",
        out["status"],
        out["body"].as_str().unwrap_or_default()
    );
    let leaked = raw.contains(secret.expose_secret())
        || format!("{:?}", inv.report).contains(secret.expose_secret());
    println!("   secret visible to the plugin or in the audit record: {leaked}");
    ensure_step(
        out["body"]
            .as_str()
            .unwrap_or_default()
            .contains("\"authenticated\":true"),
        "upstream saw the credential",
    )?;
    ensure_step(!leaked, "the secret stays in the host")?;

    step(4, "egress policy — a request to the cloud metadata address");
    let out = call(
        &inst,
        "fetch",
        json!({"url": "http://169.254.169.254/latest/meta-data/"}),
    )
    .await?;
    println!("   {}: {}", out["error"]["kind"], out["error"]["message"]);
    ensure_step(
        out["error"]["kind"] == "denied",
        "metadata address is denied",
    )?;

    step(5, "job `tick` twice — state survives between invocations");
    for _ in 0..2 {
        let run = inst.run_job("tick", CallOptions::default()).await;
        let summary = run.result.context("job tick")?;
        println!("   {summary}");
    }

    step(6, "logging — records carry tenant, instance and request id");
    let inv = inst
        .invoke("log", r#"{"count": 2}"#, CallOptions::default())
        .await;
    inv.result.context("log")?;
    for log in &inv.report.logs {
        println!(
            "   [{}] {} ({})",
            log.level, log.message, inv.report.request_id
        );
    }

    println!(
        "\nAll steps passed in {} ms.",
        started.elapsed().as_millis()
    );
    Ok(())
}
