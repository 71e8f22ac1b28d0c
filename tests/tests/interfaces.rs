//! Each host interface exercised through the real `echo` component.

mod common;

use common::*;
use serde_json::json;
use switchyard_runtime::{
    Actor, CallOptions, InstanceSpec, InvokeError, WebhookHeader, WebhookRequest,
};
use switchyard_store::{KvBackend, Namespace, Quota, StorageVersion, StoreError};
use switchyard_tests::guests;

#[tokio::test]
async fn manifest_is_read_and_validated() {
    let echo = load(guests::PLUGIN_ECHO).await;
    let m = echo.manifest();
    assert_eq!(m.id, "echo");
    let names: Vec<_> = m.actions.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["echo", "fetch", "storage", "credentials", "log", "config"]
    );
    assert_eq!(
        m.action("fetch").unwrap().required_role.as_deref(),
        Some("operator")
    );
    assert_eq!(
        m.action("fetch").unwrap().input_schema["required"],
        json!(["url"])
    );
    assert_eq!(m.webhooks[0].mode, "synchronous");
    assert_eq!(
        (m.webhooks[1].route.as_str(), m.webhooks[1].mode),
        ("events", "queued")
    );
    assert_eq!(m.jobs[0].default_interval_secs, 300);
    assert_eq!(m.credentials[0].kinds.len(), 4);
    assert_eq!(echo.digest().len(), 64);
}

#[tokio::test]
async fn echo_returns_input_context_and_config() {
    let echo = load(guests::PLUGIN_ECHO).await;
    let mut spec = InstanceSpec::new("acme", "echo-1");
    spec.config.insert("greeting".into(), "hej".into());
    let inst = instance(echo, spec);
    let inv = inst
        .invoke(
            "echo",
            r#"{"text":"hi"}"#,
            CallOptions {
                request_id: "req-42".into(),
                actor: Some(Actor {
                    id: "u1".into(),
                    email: Some("u1@acme.test".into()),
                    roles: vec!["agent".into()],
                }),
                progress: None,
            },
        )
        .await;
    let out: serde_json::Value = serde_json::from_str(&inv.result.unwrap()).unwrap();
    assert_eq!(
        out,
        json!({
            "input": {"text": "hi"},
            "greeting": "hej",
            "context": {
                "tenant": "acme", "instance": "echo-1", "request_id": "req-42",
                "actor": {"id": "u1", "email": "u1@acme.test", "roles": ["agent"]}
            }
        })
    );
    assert_eq!(inv.report.request_id, "req-42");
}

#[tokio::test]
async fn bad_calls_are_refused_before_the_plugin_runs() {
    let inst = instance(
        load(guests::PLUGIN_ECHO).await,
        InstanceSpec::new("acme", "e"),
    );
    let inv = inst.invoke("nope", "{}", CallOptions::default()).await;
    let err = inv.result.unwrap_err();
    let version = &inst.plugin().manifest().version;
    assert_eq!(
        err.to_string(),
        format!("plugin `echo` {version} has no action named `nope`")
    );
    assert!(matches!(err, InvokeError::Unknown { .. }), "{err:?}");
    let inv = inst
        .invoke("echo", "{not json", CallOptions::default())
        .await;
    assert!(
        matches!(&inv.result, Err(InvokeError::InvalidInput(m)) if m.contains("not JSON")),
        "{:?}",
        inv.result
    );
    let job = inst.run_job("nope", CallOptions::default()).await;
    assert!(matches!(
        job.result,
        Err(InvokeError::Unknown { what: "job", .. })
    ));
}

#[tokio::test]
async fn spec_is_checked_against_the_manifest() {
    let echo = load(guests::PLUGIN_ECHO).await;
    let mut spec = InstanceSpec::new("acme", "e");
    spec.config.insert("colour".into(), "red".into());
    spec.egress.push("ftp://x".into());
    let err = switchyard_runtime::Instance::new(runtime(), echo.clone(), spec, memory_store())
        .err()
        .unwrap();
    assert_eq!(
        err.problems,
        ["config.colour: plugin `echo` has no config key `colour`"]
    );

    let mut spec = InstanceSpec::new("acme", "e");
    spec.egress.push("ftp://x".into());
    let err = switchyard_runtime::Instance::new(runtime(), echo.clone(), spec, memory_store())
        .err()
        .unwrap();
    assert!(err.to_string().contains("egress entry `ftp://x`"), "{err}");

    let mut spec = InstanceSpec::new("acme", "e");
    spec.credentials
        .push(switchyard_runtime::credentials::CredentialSpec {
            name: "other".into(),
            hosts: vec!["https://x.example".into()],
            secret: switchyard_runtime::credentials::CredentialSecret::Bearer {
                token: "t".to_owned().into(),
            },
        });
    let err = switchyard_runtime::Instance::new(runtime(), echo, spec, memory_store())
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("credentials.other: plugin `echo` has no credential slot `other`"),
        "{err}"
    );
}

#[tokio::test]
async fn config_includes_defaults() {
    let inst = instance(
        load(guests::PLUGIN_ECHO).await,
        InstanceSpec::new("acme", "e"),
    );
    assert_eq!(
        ok(&inst, "config", json!({})).await,
        json!({"base_url": "", "greeting": "hello"})
    );
}

#[tokio::test]
async fn storage_round_trip_and_typed_errors() {
    let mut spec = InstanceSpec::new("acme", "e");
    spec.limits.storage_value_bytes = 1000;
    spec.limits.storage_bytes = 3000;
    spec.limits.storage_keys = 100;
    let inst = instance(load(guests::PLUGIN_ECHO).await, spec);
    let out = ok(
        &inst,
        "storage",
        json!({"ops": [
            {"op": "set", "key": "dev/1", "value": "a"},
            {"op": "set", "key": "dev/2", "value": "b"},
            {"op": "set", "key": "other", "value": "c"},
            {"op": "get", "key": "dev/1"},
            {"op": "get", "key": "missing"},
            {"op": "list", "prefix": "dev/"},
            {"op": "cas", "key": "dev/1", "expected": "zzz", "new": "x"},
            {"op": "cas", "key": "dev/1", "expected": "a", "new": "x"},
            {"op": "get", "key": "dev/1"},
            {"op": "delete", "key": "dev/2"},
            {"op": "delete", "key": "dev/2"},
            {"op": "list", "prefix": ""},
            {"op": "get", "key": ""},
            {"op": "set", "key": "big", "repeat": 1001},
            {"op": "set", "key": "b1", "repeat": 1000},
            {"op": "set", "key": "b2", "repeat": 1000},
            {"op": "set", "key": "b3", "repeat": 1000},
        ]}),
    )
    .await;
    let kind = |i: usize| out[i]["error"]["kind"].clone();
    assert_eq!(out[0], "ok");
    assert_eq!(out[3], "a");
    assert_eq!(out[4], json!(null));
    assert_eq!(out[5], json!(["dev/1", "dev/2"]));
    assert_eq!(out[6], json!(false));
    assert_eq!(out[7], json!(true));
    assert_eq!(out[8], "x");
    assert_eq!(out[9], json!(true));
    assert_eq!(out[10], json!(false));
    assert_eq!(out[11], json!(["dev/1", "other"]));
    assert_eq!(kind(12), "invalid-key");
    assert_eq!(kind(13), "too-large");
    assert_eq!(out[14], "ok");
    assert_eq!(out[15], "ok");
    assert_eq!(kind(16), "quota-exceeded");
    assert!(
        out[16]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("quota")
    );
}

#[tokio::test]
async fn storage_persists_across_invocations_and_jobs() {
    let inst = instance(
        load(guests::PLUGIN_ECHO).await,
        InstanceSpec::new("acme", "e"),
    );
    for n in 1..=3 {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let run = inst
            .run_job(
                "tick",
                CallOptions {
                    progress: Some(tx),
                    ..CallOptions::default()
                },
            )
            .await;
        assert_eq!(run.result.unwrap(), format!("tick run {n}"));
        assert_eq!(rx.borrow().as_ref().unwrap().note, "counted");
        assert_eq!(run.report.progress.unwrap().done, 1);
    }
}

#[tokio::test]
async fn logs_are_captured_labelled_and_bounded() {
    let mut spec = InstanceSpec::new("acme", "e");
    spec.limits.log_records = 5;
    let inst = instance(load(guests::PLUGIN_ECHO).await, spec);
    let inv = call(&inst, "log", json!({"count": 3})).await;
    assert_eq!(inv.result.unwrap(), json!({"emitted": 3}));
    let logs = &inv.report.logs;
    assert_eq!(logs.len(), 3);
    assert_eq!(logs[2].level, "info");
    assert_eq!(logs[2].message, "record 2");
    assert_eq!(
        logs[2].fields,
        [
            ("index".to_owned(), "2".to_owned()),
            ("plugin".to_owned(), "echo".to_owned())
        ]
    );
    assert_eq!(inv.report.progress.as_ref().unwrap().total, Some(3));

    let inv = call(&inst, "log", json!({"count": 8})).await;
    assert!(inv.result.is_ok());
    assert_eq!(inv.report.logs.len(), 5);
    assert_eq!(inv.report.logs_dropped, 3);
}

#[tokio::test]
async fn webhook_is_delivered() {
    let inst = instance(
        load(guests::PLUGIN_ECHO).await,
        InstanceSpec::new("acme", "e"),
    );
    let inv = inst
        .handle_webhook(
            "inbound",
            WebhookRequest {
                method: "POST".into(),
                query: "a=1".into(),
                headers: vec![WebhookHeader {
                    name: "content-type".into(),
                    value: "text/plain".into(),
                }],
                body: b"payload".to_vec(),
            },
            CallOptions::default(),
        )
        .await;
    let resp = inv.result.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"payload");
    assert_eq!(resp.headers[0].value, "POST");
}

/// A backend whose writes take longer than the old 10 s storage-call
/// timeout, then commit.
struct SlowWrites(std::sync::Arc<dyn KvBackend>);

/// A plain map as the backend under `SlowWrites`: the test runs on tokio's
/// paused clock, which jumps ahead whenever the runtime waits on nothing
/// but timers, and SQLite's writer thread is such a wait. The host's
/// storage interface is the same over any backend.
#[derive(Default)]
struct MapStore(
    std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>,
    std::sync::Mutex<Option<StorageVersion>>,
);

#[async_trait::async_trait]
impl KvBackend for MapStore {
    async fn get(&self, _: &Namespace, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.lock().unwrap().get(key).cloned())
    }
    async fn set(
        &self,
        _: &Namespace,
        key: &str,
        value: &[u8],
        _: &Quota,
    ) -> Result<(), StoreError> {
        self.0
            .lock()
            .unwrap()
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    async fn delete(&self, _: &Namespace, key: &str) -> Result<bool, StoreError> {
        Ok(self.0.lock().unwrap().remove(key).is_some())
    }
    async fn list(
        &self,
        _: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let map = self.0.lock().unwrap();
        Ok(map
            .keys()
            .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
            .take(limit as usize)
            .cloned()
            .collect())
    }
    async fn compare_and_swap(
        &self,
        _: &Namespace,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        _: &Quota,
    ) -> Result<bool, StoreError> {
        let mut map = self.0.lock().unwrap();
        if map.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        match new {
            Some(v) => map.insert(key.to_owned(), v.to_vec()),
            None => map.remove(key),
        };
        Ok(true)
    }
    async fn usage(&self, _: &Namespace) -> Result<switchyard_store::Usage, StoreError> {
        let map = self.0.lock().unwrap();
        Ok(switchyard_store::Usage {
            bytes: map.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum(),
            keys: map.len() as u64,
        })
    }

    async fn clear(&self, _: &Namespace) -> Result<u64, StoreError> {
        let mut map = self.0.lock().unwrap();
        let n = map.len() as u64;
        map.clear();
        Ok(n)
    }
    async fn storage_version(&self, _: &Namespace) -> Result<Option<StorageVersion>, StoreError> {
        Ok(self.1.lock().unwrap().clone())
    }
    async fn record_storage_version(
        &self,
        _: &Namespace,
        expected: Option<&StorageVersion>,
        new: &StorageVersion,
    ) -> Result<bool, StoreError> {
        let mut recorded = self.1.lock().unwrap();
        if recorded.as_ref() != expected {
            return Ok(false);
        }
        *recorded = Some(new.clone());
        Ok(true)
    }
    // One process: every claim is granted.
    async fn claim_storage_migration(
        &self,
        _: &Namespace,
        _: &str,
        _: i64,
        _: i64,
    ) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }
    async fn release_storage_migration(&self, _: &Namespace, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

const SLOW: std::time::Duration = std::time::Duration::from_secs(11);

#[async_trait::async_trait]
impl KvBackend for SlowWrites {
    async fn get(&self, ns: &Namespace, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(ns, key).await
    }
    async fn set(
        &self,
        ns: &Namespace,
        key: &str,
        value: &[u8],
        quota: &Quota,
    ) -> Result<(), StoreError> {
        tokio::time::sleep(SLOW).await;
        self.0.set(ns, key, value, quota).await
    }
    async fn delete(&self, ns: &Namespace, key: &str) -> Result<bool, StoreError> {
        self.0.delete(ns, key).await
    }
    async fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.0.list(ns, prefix, after, limit).await
    }
    async fn compare_and_swap(
        &self,
        ns: &Namespace,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        quota: &Quota,
    ) -> Result<bool, StoreError> {
        tokio::time::sleep(SLOW).await;
        self.0.compare_and_swap(ns, key, expected, new, quota).await
    }
    async fn usage(&self, ns: &Namespace) -> Result<switchyard_store::Usage, StoreError> {
        self.0.usage(ns).await
    }

    async fn clear(&self, ns: &Namespace) -> Result<u64, StoreError> {
        self.0.clear(ns).await
    }
    async fn storage_version(&self, ns: &Namespace) -> Result<Option<StorageVersion>, StoreError> {
        self.0.storage_version(ns).await
    }
    async fn record_storage_version(
        &self,
        ns: &Namespace,
        expected: Option<&StorageVersion>,
        new: &StorageVersion,
    ) -> Result<bool, StoreError> {
        self.0.record_storage_version(ns, expected, new).await
    }
    async fn claim_storage_migration(
        &self,
        ns: &Namespace,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        self.0
            .claim_storage_migration(ns, owner, now_ms, until_ms)
            .await
    }
    async fn release_storage_migration(
        &self,
        ns: &Namespace,
        owner: &str,
    ) -> Result<(), StoreError> {
        self.0.release_storage_migration(ns, owner).await
    }
}

/// Issue 13, item 2: a storage call's answer is what happened. A write
/// that commits late is reported as done, never as `unavailable` (which
/// would make a compare-and-swap that did swap look as if it had not).
/// The clock is virtual: the 11 s pass at once.
#[tokio::test(start_paused = true)]
async fn a_slow_storage_write_reports_what_happened() {
    let inner: std::sync::Arc<dyn KvBackend> = std::sync::Arc::new(MapStore::default());
    let store: std::sync::Arc<dyn KvBackend> = std::sync::Arc::new(SlowWrites(inner.clone()));
    let inst = instance_with_store(
        load(guests::PLUGIN_ECHO).await,
        InstanceSpec::new("acme", "e"),
        store,
    );
    let ops = json!({"ops": [
        {"op": "set", "key": "k", "value": "1"},
        {"op": "cas", "key": "k", "expected": "1", "new": "2"},
    ]});
    let out = call(&inst, "storage", ops).await.result.unwrap();
    assert_eq!(out, json!(["ok", true]), "{out}");
    let ns = Namespace::new("acme", "e");
    assert_eq!(
        inner.get(&ns, "k").await.unwrap().as_deref(),
        Some(&b"2"[..])
    );
}

/// A component built against `switchyard:plugin@0.1.0` (a frozen copy of
/// that WIT, no SDK) loads and runs on this host, whose contract has grown
/// since: every import it uses still answers, and its errors still arrive
/// typed, unmarked.
#[tokio::test]
async fn a_component_built_for_0_1_0_still_runs() {
    let plugin = load(guests::GUEST_COMPAT_0_1_0).await;
    assert_eq!(plugin.manifest().id, "compat-0-1-0");
    let inst = instance(plugin, InstanceSpec::new("acme", "old-1"));
    for n in 1..=2 {
        let inv = inst
            .invoke("ping", r#"{"n":1}"#, CallOptions::default())
            .await;
        let out: serde_json::Value = serde_json::from_str(&inv.result.unwrap()).unwrap();
        assert_eq!(out, json!({"pong": {"n": 1}, "config": "hej", "stored": n}));
        assert_eq!(inv.report.logs.len(), 1);
    }
    let inv = inst
        .invoke("fail", r#""upstream""#, CallOptions::default())
        .await;
    match inv.result {
        Err(InvokeError::Plugin(switchyard_runtime::PluginError::Upstream {
            status: Some(503),
            retry_after_secs: Some(7),
            ..
        })) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(inv.report.retry, None);
}
