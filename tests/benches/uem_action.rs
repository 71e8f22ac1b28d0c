//! Benchmark: one end-to-end `lock-device` action through the `uem-actions`
//! plugin against the UEM simulator, versus native Rust doing the same HTTP
//! calls against the same simulator.
//!
//! Both sides make the same three requests over loopback — `GET` the device,
//! `POST` the Lock command, `POST` the audit note — with Basic auth and the
//! `aw-tenant-code` header, and parse the same JSON. The plugin side is the
//! full host path (fresh Store per call, limits, egress policy with its DNS
//! check, credential attachment, report). Interleaved rounds, medians, and
//! the ratio plugin / native.
//!
//! It also prints the fixed cost of one invocation of this component
//! without HTTP (an action refused before any request), to show how the
//! difference splits between instantiation and the HTTP path.
//!
//! Run: `cargo bench -p switchyard-tests --bench uem_action`

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::{Value, json};
use switchyard_runtime::credentials::{CredentialSecret, CredentialSpec};
use switchyard_runtime::{Actor, CallOptions, Instance, InstanceSpec, Runtime, RuntimeConfig};
use switchyard_sim::uem::{Uem, UemConfig};
use switchyard_store::SqliteStore;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fmt(d: Duration) -> String {
    format!("{:.1} µs", d.as_nanos() as f64 / 1000.0)
}

/// What the plugin does, written directly against reqwest.
struct Native {
    http: reqwest::Client,
    base: String,
    cfg: UemConfig,
}

impl Native {
    fn req(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        r.basic_auth(&self.cfg.username, Some(&self.cfg.password))
            .header("aw-tenant-code", &self.cfg.tenant_code)
            .header("accept", "application/json")
    }

    async fn lock(&self, id: i64) -> Value {
        let r = self
            .req(self.http.get(format!("{}/api/mdm/devices/{id}", self.base)))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let device: Value = r.json().await.unwrap();
        let id = device["Id"]["Value"].as_i64().unwrap();
        let r = self
            .req(self.http.post(format!(
                "{}/api/mdm/devices/{id}/commands?command=Lock",
                self.base
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let note = format!("{id}: Lock Device by bench (Switchyard)");
        let r = self
            .req(
                self.http
                    .post(format!("{}/api/mdm/devices/{id}/notes", self.base)),
            )
            .json(&json!({"DeviceId": id, "Note": note}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        json!({"device": device, "note": r.json::<Value>().await.unwrap()})
    }
}

fn main() {
    let quick = switchyard_tests::bench_is_quick();
    let (rounds, iters) = if quick { (3, 5) } else { (20, 50) };
    let rt = switchyard_tests::bench_runtime();
    rt.block_on(async move {
        let cfg = UemConfig {
            rate_limit_per_minute: u32::MAX,
            ..UemConfig::default()
        };
        let uem = Uem::start(cfg.clone(), 1, 20).await.unwrap();
        let device = uem.devices()[0].id;

        let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
        let wasm = switchyard_bundled::get("uem-actions").expect("uem-actions is bundled");
        let plugin = runtime.load(wasm).await.unwrap();
        let mut spec = InstanceSpec::new("bench", "uem");
        spec.config.insert("api_url".into(), uem.url());
        spec.egress.push(uem.url());
        spec.credentials.push(CredentialSpec {
            name: "uem".into(),
            hosts: vec![uem.url()],
            secret: CredentialSecret::Basic {
                username: cfg.username.clone(),
                password: SecretString::from(cfg.password.clone()),
                extra_header: Some("aw-tenant-code".into()),
                extra_header_value: Some(SecretString::from(cfg.tenant_code.clone())),
            },
        });
        let inst = Instance::new(
            &runtime,
            plugin,
            spec,
            Arc::new(SqliteStore::open_in_memory().unwrap()),
        )
        .unwrap();
        let input = json!({"device": {"id": device}}).to_string();
        let opts = || CallOptions {
            actor: Some(Actor {
                id: "bench".into(),
                email: None,
                roles: vec!["standard".into()],
            }),
            ..CallOptions::default()
        };
        let native = Native {
            http: reqwest::Client::new(),
            base: uem.url(),
            cfg: cfg.clone(),
        };

        // Both do the same work: three requests each.
        uem.control().clear_requests();
        let out = inst
            .invoke("lock-device", &input, opts())
            .await
            .result
            .unwrap();
        assert!(out.contains("\"audit_note\":\"written\""), "{out}");
        let plugin_requests = uem.control().requests().len();
        uem.control().clear_requests();
        native.lock(device).await;
        assert_eq!(uem.control().requests().len(), plugin_requests);
        assert_eq!(plugin_requests, 3);

        for _ in 0..iters {
            native.lock(device).await;
            inst.invoke("lock-device", &input, opts())
                .await
                .result
                .unwrap();
        }
        let (mut n_t, mut p_t) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            uem.control().clear_requests();
            let t = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(native.lock(device).await);
            }
            n_t.push(t.elapsed() / iters);
            let t = Instant::now();
            for _ in 0..iters {
                let inv = inst.invoke("lock-device", &input, opts()).await;
                std::hint::black_box(inv.result.unwrap());
            }
            p_t.push(t.elapsed() / iters);
        }
        // Fixed cost of one invocation of this component, without HTTP:
        // an action the plugin refuses before any request.
        let admin = || CallOptions {
            actor: Some(Actor {
                id: "bench".into(),
                email: None,
                roles: vec!["admin".into()],
            }),
            ..CallOptions::default()
        };
        let mut f_t = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..iters {
                let inv = inst.invoke("verify-oauth-token", "{}", admin()).await;
                std::hint::black_box(inv.result.unwrap_err());
            }
            f_t.push(t.elapsed() / iters);
        }
        let fixed = median(f_t);
        let (n, p) = (median(n_t), median(p_t));
        println!(
            "uem lock-device, 3 HTTP calls against the UEM simulator ({rounds} rounds x {iters})"
        );
        println!("  native reqwest:            {}", fmt(n));
        println!("  uem-actions via Switchyard: {}", fmt(p));
        println!(
            "  ratio plugin / native:      {:.2}",
            p.as_secs_f64() / n.as_secs_f64()
        );
        println!(
            "  of which one invocation without HTTP (instantiate, policy, call): {}",
            fmt(fixed)
        );
    });
}
