//! Hostile components: each attack is stopped or refused with a clear
//! error, and the host keeps serving everyone else.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use switchyard_runtime::{Instance, InstanceSpec, InvokeError};
use switchyard_store::{KvBackend, Namespace, Quota, SqliteStore};
use switchyard_tests::{Recorder, guests};

enum Expect {
    Deadline,
    Limit(&'static str),
    Trap(&'static str),
    BadOutput(&'static str),
    /// The plugin returned normally; the check inspects output and report.
    Returns(fn(&Value, &switchyard_runtime::Report)),
}

struct Case {
    action: &'static str,
    input: Value,
    expect: Expect,
}

fn cases(up: &Recorder) -> Vec<Case> {
    vec![
        // What an impostor of `echo` would answer; the plugin-catalog tests
        // (host/daemon/tests/plugins.rs) prove none is ever run as echo.
        Case {
            action: "echo",
            input: json!({}),
            expect: Expect::Returns(|out, _| {
                assert_eq!(out["impostor"], true);
                assert_eq!(out["id"], "hostile");
            }),
        },
        Case {
            action: "spin",
            input: json!({}),
            expect: Expect::Deadline,
        },
        Case {
            action: "sleep-in-host",
            input: json!({"url": up.url("/slow?ms=60000")}),
            expect: Expect::Deadline,
        },
        Case {
            action: "memory-bomb",
            input: json!({}),
            expect: Expect::Limit("memory limit exceeded"),
        },
        // Rust keeps its frames on a shadow stack in linear memory; running
        // off its end is an out-of-bounds access, caught by the sandbox.
        Case {
            action: "stack-overflow",
            input: json!({}),
            expect: Expect::Trap("wasm trap: out of bounds memory access\nwasm backtrace:"),
        },
        Case {
            action: "panic",
            input: json!({}),
            expect: Expect::Trap("hostile plugin panicked on purpose"),
        },
        Case {
            action: "resource-bomb",
            input: json!({}),
            expect: Expect::Limit("host resources"),
        },
        Case {
            action: "egress",
            input: json!({"urls": ["http://169.254.169.254/", "https://evil.example/"]}),
            expect: Expect::Returns(|out, report| {
                for o in out.as_array().unwrap() {
                    assert!(
                        o["outcome"]["error"]
                            .as_str()
                            .unwrap()
                            .starts_with("Error::Denied(")
                    );
                }
                assert!(report.egress.iter().all(|r| r.outcome == "denied"));
                assert_eq!(report.egress.len(), 2);
            }),
        },
        Case {
            action: "credential-misuse",
            input: json!({"bound_url": "https://bound.example.com/", "unbound_url": "https://other.example.com/"}),
            expect: Expect::Returns(|out, _| {
                // No credential is bound: every use is refused.
                assert!(
                    out["unbound_host"]["error"]
                        .as_str()
                        .unwrap()
                        .contains("no credential")
                );
                assert_eq!(out["listed"], "[]");
            }),
        },
        Case {
            action: "storage-escape",
            input: json!({}),
            expect: Expect::Returns(|out, _| {
                assert_eq!(out["visible_keys"], json!(["mine"]), "{out}");
                for probe in out["probes"].as_array().unwrap() {
                    assert!(
                        probe["value"].is_null() || probe["error"].is_string(),
                        "probe leaked: {probe}"
                    );
                }
                assert!(
                    out["probes"][3]["error"]
                        .as_str()
                        .unwrap()
                        .contains("InvalidKey")
                );
                assert!(
                    out["probes"][5]["error"]
                        .as_str()
                        .unwrap()
                        .contains("InvalidKey")
                );
            }),
        },
        Case {
            action: "log-flood",
            input: json!({}),
            expect: Expect::Returns(|_, report| {
                assert_eq!(report.logs.len(), 1000);
                assert_eq!(report.logs_dropped, 99_000);
            }),
        },
        // Finding 5: the record cannot start a line or pose as host fields,
        // and is cut to 8 KiB.
        Case {
            action: "log-forge",
            input: json!({}),
            expect: Expect::Returns(|_, report| {
                let r = &report.logs[0];
                assert!(!r.message.contains('\n'), "{}", r.message);
                assert!(r.message.starts_with("done\\n2026"), "{}", r.message);
                let keys: Vec<&str> = r.fields.iter().map(|(k, _)| k.as_str()).collect();
                assert!(keys.contains(&"request_id_forged"), "{keys:?}");
                let size: usize = r.message.len()
                    + r.fields
                        .iter()
                        .map(|(k, v)| k.len() + v.len())
                        .sum::<usize>();
                assert!(size <= 8192, "{size} bytes");
            }),
        },
        Case {
            action: "http-flood",
            input: json!({}),
            expect: Expect::Returns(|out, report| {
                assert!(
                    out.as_str().unwrap().starts_with("Error::LimitExceeded("),
                    "{out}"
                );
                assert!(report.egress.len() <= 201, "{}", report.egress.len());
            }),
        },
        Case {
            action: "huge-output",
            input: json!({"bytes": 2_000_000}),
            expect: Expect::BadOutput("limit"),
        },
        // Not an attack: what the `wait` job (host/daemon/tests/upgrade.rs)
        // reads, kept in the instance's own storage.
        Case {
            action: "remember",
            input: json!({"url": up.url("/later")}),
            expect: Expect::Returns(|out, _| {
                assert!(out["remembered"].as_str().unwrap().ends_with("/later"));
                assert_eq!(out["version"], "0.1.0");
            }),
        },
        // Not an attack: makes the next tries of a version's storage
        // migration step fail (tests/tests/migration.rs, upgrade.rs).
        Case {
            action: "fail-migrations",
            input: json!({"count": 0}),
            expect: Expect::Returns(|out, _| assert_eq!(out["failing"], 0)),
        },
    ]
}

fn spec(tenant: &str, upstream: &Recorder) -> InstanceSpec {
    let mut spec = InstanceSpec::new(tenant, "hostile");
    spec.egress.push("https://*.example.com".into());
    spec.egress.push(upstream.origin());
    // Long enough for the floods to reach their limits on a loaded CI
    // machine running a debug build, taking turns on the CPU gate with the
    // spinners of other tests once the tenant has run long (4 s was seen
    // to fall short); `spin` waits all of it out.
    spec.limits.deadline = Duration::from_secs(10);
    spec.limits.memory_bytes = 32 << 20;
    spec.limits.resources = 200;
    spec.limits.output_bytes = 1 << 20;
    spec
}

async fn hostile_instance(
    tenant: &str,
    upstream: &Recorder,
    store: std::sync::Arc<dyn KvBackend>,
) -> Instance {
    instance_with_store(
        load(guests::GUEST_HOSTILE).await,
        spec(tenant, upstream),
        store,
    )
}

fn check(action: &str, expect: &Expect, inv: &switchyard_runtime::Invocation<String>) {
    let err = inv.result.as_ref().err();
    let text = err.map(ToString::to_string).unwrap_or_default();
    match expect {
        Expect::Deadline => {
            assert!(
                matches!(err, Some(InvokeError::Deadline(_))),
                "{action}: {:?}",
                inv.result
            );
        }
        Expect::Limit(needle) | Expect::Trap(needle) | Expect::BadOutput(needle) => {
            let kind_ok = match expect {
                Expect::Limit(_) => matches!(err, Some(InvokeError::LimitExceeded(_))),
                Expect::Trap(_) => matches!(err, Some(InvokeError::Trap(_))),
                _ => matches!(err, Some(InvokeError::BadOutput(_))),
            };
            assert!(kind_ok, "{action}: {:?}", inv.result);
            assert!(text.contains(needle), "{action}: {text}");
        }
        Expect::Returns(check) => {
            let out: Value = serde_json::from_str(
                inv.result
                    .as_ref()
                    .unwrap_or_else(|e| panic!("{action}: {e}")),
            )
            .unwrap();
            check(&out, &inv.report);
        }
    }
}

#[tokio::test]
async fn every_hostile_action_is_covered() {
    let up = Recorder::start().await;
    let hostile = load(guests::GUEST_HOSTILE).await;
    let declared: BTreeSet<_> = hostile
        .manifest()
        .actions
        .iter()
        .map(|a| a.name.clone())
        .collect();
    let tested: BTreeSet<_> = cases(&up).iter().map(|c| c.action.to_owned()).collect();
    assert_eq!(
        declared, tested,
        "every hostile action needs a case in this file"
    );
}

#[tokio::test]
async fn attacks_are_stopped_and_the_host_keeps_working() {
    let up = Recorder::start().await;
    let store: std::sync::Arc<dyn KvBackend> =
        std::sync::Arc::new(SqliteStore::open_in_memory().unwrap());
    // A victim tenant's data, and one key of the attacker's own.
    let q = Quota::default();
    store
        .set(
            &Namespace::new("victim", "hostile"),
            "secret",
            b"victim-data",
            &q,
        )
        .await
        .unwrap();
    store
        .set(
            &Namespace::new("victim", "echo"),
            "secret",
            b"victim-data",
            &q,
        )
        .await
        .unwrap();
    let mine = Namespace::new("attacker", "hostile");
    store.set(&mine, "mine", b"x", &q).await.unwrap();
    // Written by this very version: no storage migration step runs first.
    let this_version = switchyard_store::StorageVersion {
        plugin: "hostile".into(),
        version: "0.1.0".into(),
    };
    assert!(
        store
            .record_storage_version(&mine, None, &this_version)
            .await
            .unwrap()
    );
    let inst = hostile_instance("attacker", &up, store.clone()).await;
    for case in cases(&up) {
        let inv = inst
            .invoke(case.action, &case.input.to_string(), Default::default())
            .await;
        check(case.action, &case.expect, &inv);
        // The benign plugin still works in the same process after each attack.
        let echo = instance(
            load(guests::PLUGIN_ECHO).await,
            InstanceSpec::new("acme", "echo"),
        );
        assert_eq!(
            ok(&echo, "echo", json!({"n": 1})).await["input"]["n"],
            1,
            "after {}",
            case.action
        );
    }
    // The victim's data is untouched.
    assert_eq!(
        store
            .get(&Namespace::new("victim", "hostile"), "secret")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"victim-data"[..])
    );
}

#[tokio::test]
async fn a_spinning_tenant_does_not_block_another() {
    let up = Recorder::start().await;
    // Both components are compiled before the spinner starts, and its
    // deadline is far beyond what five echo calls need even on a loaded
    // machine: the check below is about scheduling, not speed.
    let echo = instance(
        load(guests::PLUGIN_ECHO).await,
        InstanceSpec::new("quiet", "echo"),
    );
    let spinner = hostile_instance("noisy", &up, memory_store()).await;
    let spinning =
        tokio::spawn(async move { spinner.invoke("spin", "{}", Default::default()).await });
    // Let the spinner enter the guest before the quiet tenant calls.
    tokio::task::yield_now().await;
    // Several calls by the quiet tenant complete while the spinner runs.
    for i in 0..5 {
        assert_eq!(ok(&echo, "echo", json!({"i": i})).await["input"]["i"], i);
    }
    assert!(
        !spinning.is_finished(),
        "the spinner should still be running"
    );
    let inv = spinning.await.unwrap();
    assert!(
        matches!(inv.result, Err(InvokeError::Deadline(_))),
        "{:?}",
        inv.result
    );
}

#[tokio::test]
async fn a_long_flood_keeps_a_bounded_egress_record() {
    let up = Recorder::start().await;
    let store: std::sync::Arc<dyn KvBackend> =
        std::sync::Arc::new(SqliteStore::open_in_memory().unwrap());
    let mut spec = spec("flooder", &up);
    spec.limits.http_requests = 1_500;
    spec.limits.deadline = Duration::from_secs(20);
    let inst = instance_with_store(load(guests::GUEST_HOSTILE).await, spec, store);
    let inv = inst.invoke("http-flood", "{}", Default::default()).await;
    let r = &inv.report;
    // The first requests are itemised for the audit log; the rest (the
    // guest tries 10,000) are counted by outcome, so memory stays bounded
    // however many requests a job makes.
    assert_eq!(r.egress.len(), switchyard_runtime::EGRESS_ITEMISED);
    let omitted: u64 = r.egress_omitted.values().sum();
    assert_eq!(
        r.egress.len() as u64 + omitted,
        10_000,
        "{:?}",
        r.egress_omitted
    );
    assert_eq!(r.egress_omitted["limit-exceeded"], 10_000 - 1_500);
}

/// Issue 11, finding 7: `manifest()` runs for no tenant, so calling any
/// host import from it fails the load, naming the import; one that never
/// returns is stopped after about a second.
#[tokio::test]
async fn a_manifest_that_calls_an_import_or_spins_is_refused() {
    let wasm = std::fs::read(guests::GUEST_HOSTILE).unwrap();
    for (mode, needle) in [
        (
            "storage",
            "called the host import `switchyard:plugin/storage@0.1.5#get`",
        ),
        (
            "log",
            "called the host import `switchyard:plugin/log@0.1.5#emit`",
        ),
        (
            "http",
            "called the host import `switchyard:plugin/http@0.1.5#send`",
        ),
        ("spin", "did not return within 1000 ms"),
    ] {
        let patched = switchyard_tests::patch_slot(&wasm, "SY-MANIFEST", mode);
        let err = runtime().load(&patched).await.err().unwrap().to_string();
        assert!(err.contains(needle), "{mode}: {err}");
    }
    // The unpatched component loads: the refusals are about what each did.
    assert_eq!(load(guests::GUEST_HOSTILE).await.manifest().id, "hostile");
    let renamed = switchyard_tests::patch_slot(&wasm, "SY-ID", "echo");
    let renamed = switchyard_tests::patch_slot(&renamed, "SY-VERSION", "0.0.1");
    let m = runtime().load(&renamed).await.unwrap();
    assert_eq!(
        (m.manifest().id.as_str(), m.manifest().version.as_str()),
        ("echo", "0.0.1")
    );
}

/// Issue 11, finding 4: a tenant's log records are limited over time, not
/// only per call: ten floods in a row keep about one burst, and the rest is
/// counted as dropped.
#[tokio::test]
async fn log_floods_are_limited_per_tenant_over_time() {
    let up = Recorder::start().await;
    // Every flood must finish for the counts to add up: after its first
    // call the flooder takes turns on the CPU gate with whatever else runs
    // (spinners of other tests), so 4 s is not always enough in a debug
    // build.
    let mut long = spec("flooder", &up);
    long.limits.deadline = Duration::from_secs(60);
    let inst = instance_with_store(load(guests::GUEST_HOSTILE).await, long, memory_store());
    let (mut kept, mut dropped) = (0usize, 0u64);
    let started = std::time::Instant::now();
    for _ in 0..10 {
        let inv = call(&inst, "log-flood", json!({})).await;
        assert!(inv.result.is_ok(), "{:?}", inv.result);
        kept += inv.report.logs.len();
        dropped += u64::from(inv.report.logs_dropped);
    }
    // The default bucket: 1,000 at once, then 100 a second.
    let allowed = 1000.0 + 100.0 * started.elapsed().as_secs_f64();
    assert!((kept as f64) <= allowed + 1.0, "{kept} records kept");
    assert_eq!(kept as u64 + dropped, 10 * 100_000);
    // Another tenant has its own bucket.
    let other = hostile_instance("quiet", &up, memory_store()).await;
    assert_eq!(
        call(&other, "log-flood", json!({})).await.report.logs.len(),
        1000
    );
}

/// Issue 11, finding 6, through the real HTTP client and a resolver that
/// answers `evil.test` with 127.0.0.1: an IP entry for one port does not
/// open another port of that address through a name.
#[tokio::test]
async fn an_ip_entry_opens_no_other_port_through_a_name() {
    use std::sync::Arc;
    let rt = switchyard_runtime::Runtime::new(switchyard_runtime::RuntimeConfig {
        cache_dir: Some(
            std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("compile-cache"),
        ),
        max_concurrent_invocations: 4,
        lookup: switchyard_runtime::http::Lookup::Custom(Arc::new(|name: &str| {
            if name == "evil.test" {
                Ok(vec!["127.0.0.1".parse().unwrap()])
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such name",
                ))
            }
        })),
        ..switchyard_runtime::RuntimeConfig::default()
    })
    .unwrap();
    let wasm = std::fs::read(guests::GUEST_HOSTILE).unwrap();
    let plugin = rt.load(&wasm).await.unwrap();
    let (allowed, other) = (Recorder::start().await, Recorder::start().await);
    let port = |r: &Recorder| r.origin().rsplit(':').next().unwrap().to_owned();
    let (p1, p2) = (port(&allowed), port(&other));
    let urls = json!({"urls": [
        format!("http://evil.test:{p2}/through-the-name"),
        format!("http://127.0.0.1:{p2}/direct"),
        format!("http://127.0.0.1:{p1}/allowed"),
    ]});
    let run = |egress: Vec<String>| {
        let mut spec = InstanceSpec::new("acme", "h");
        spec.egress = egress;
        let inst = Instance::new(&rt, plugin.clone(), spec, memory_store()).unwrap();
        let urls = urls.clone();
        async move {
            let inv = inst
                .invoke("egress", &urls.to_string(), Default::default())
                .await;
            serde_json::from_str::<Value>(&inv.result.unwrap()).unwrap()
        }
    };
    let out = run(vec![
        format!("http://127.0.0.1:{p1}"),
        format!("http://evil.test:{p2}"),
    ])
    .await;
    let err = |i: usize| {
        out[i]["outcome"]["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(err(0).starts_with("Error::Denied("), "{out}");
    assert!(err(0).contains("port"), "{}", err(0));
    assert!(err(1).starts_with("Error::Denied("), "{out}");
    assert_eq!(out[2]["outcome"]["status"], 200, "{out}");
    assert!(other.requests().is_empty(), "the other port was reached");
    // Naming that port as an IP entry too is the tenant saying so.
    let out = run(vec![
        format!("http://127.0.0.1:{p2}"),
        format!("http://evil.test:{p2}"),
    ])
    .await;
    assert_eq!(out[0]["outcome"]["status"], 200, "{out}");
    assert_eq!(other.requests_to("/through-the-name").len(), 1);
}

/// A component loaded while every wasm slot is in use (here, by a call
/// that waits in a host call) is not judged: the load says the host is
/// busy, which `POST /v1/admin/plugins` answers with 503 and `Retry-After`,
/// not that the component is invalid. Once the slot is free it loads.
#[tokio::test(flavor = "multi_thread")]
async fn a_load_while_every_slot_is_in_use_is_busy_not_refused() {
    use switchyard_runtime::{LoadError, RuntimeConfig};
    let rt = runtime_with(RuntimeConfig {
        max_concurrent_invocations: 1,
        ..RuntimeConfig::default()
    });
    let up = Recorder::start().await;
    let hostile = rt
        .load(&std::fs::read(guests::GUEST_HOSTILE).unwrap())
        .await
        .unwrap();
    let holder = Instance::new(&rt, hostile, spec("holder", &up), memory_store()).unwrap();
    let input = json!({"url": up.url("/slow?ms=60000")}).to_string();
    let holding = tokio::spawn(async move {
        holder
            .invoke("sleep-in-host", &input, Default::default())
            .await
    });
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while up.requests_to("/slow").is_empty() {
        assert!(
            std::time::Instant::now() < until,
            "the holder never called out"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The slot is held now: the holder is inside its host call.
    let echo = std::fs::read(guests::PLUGIN_ECHO).unwrap();
    let err = rt
        .load(&echo)
        .await
        .err()
        .expect("a load with no free slot");
    assert!(matches!(err, LoadError::Busy(_)), "{err}");
    assert!(err.to_string().contains("try again"), "{err}");
    holding.abort();
    assert!(holding.await.unwrap_err().is_cancelled());
    // Dropping the call gives its slot back.
    loop {
        match rt.load(&echo).await {
            Ok(p) => break assert_eq!(p.manifest().id, "echo"),
            Err(LoadError::Busy(_)) => {
                assert!(
                    std::time::Instant::now() < until,
                    "the slot never came back"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Each call's report says how large its linear memory grew: a bomb stops
/// within a step (1 MiB) of the instance's limit and never past it; echo
/// stays far below.
#[tokio::test]
async fn a_call_reports_how_large_its_memory_grew() {
    let up = Recorder::start().await;
    let limit = spec("bomber", &up).limits.memory_bytes as u64;
    let echo = instance(
        load(guests::PLUGIN_ECHO).await,
        InstanceSpec::new("quiet", "echo"),
    );
    let small = echo.invoke("echo", "{}", Default::default()).await;
    assert!(small.result.is_ok(), "{:?}", small.result);
    let bomber = hostile_instance("bomber", &up, memory_store()).await;
    let bomb = bomber.invoke("memory-bomb", "{}", Default::default()).await;
    assert!(
        matches!(bomb.result, Err(InvokeError::LimitExceeded(_))),
        "{:?}",
        bomb.result
    );
    let (small, big) = (small.report.memory_bytes, bomb.report.memory_bytes);
    assert!(small > 0 && small < limit / 4, "echo: {small}");
    assert!(
        big <= limit && big > limit - (2 << 20),
        "bomb: {big} of {limit}"
    );
}
