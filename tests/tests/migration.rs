//! A plugin version's storage migration step (`migrate-storage`, WIT
//! 0.1.5): it runs once per instance and version, before that version's
//! first call; concurrent first calls wait for that one run; a step that
//! fails is tried again after a backoff (on the runtime's injected clock)
//! while the instance's calls fail without running; a component without
//! the step, or an instance with nothing stored, just records its version.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use switchyard_runtime::{
    CallOptions, Clock, Instance, InstanceSpec, InvokeError, Migrated, Plugin, Runtime,
    RuntimeConfig,
};
use switchyard_store::{KvBackend, Namespace, Quota, SqliteStore, StorageVersion};
use switchyard_tests::{guests, patch_slot};

fn ns() -> Namespace {
    Namespace::new("acme", "n")
}

fn version(v: &str) -> StorageVersion {
    StorageVersion {
        plugin: "notes".into(),
        version: v.into(),
    }
}

/// The hostile guest as version `v` of a plugin `notes`: its migration
/// step records each try and each success in the instance's storage.
async fn notes(rt: &Runtime, v: &str) -> Arc<Plugin> {
    let wasm = std::fs::read(guests::GUEST_HOSTILE).unwrap();
    let wasm = patch_slot(&patch_slot(&wasm, "SY-ID", "notes"), "SY-VERSION", v);
    let plugin = rt.load(&wasm).await.unwrap();
    assert!(plugin.migrates_storage());
    plugin
}

fn instance_of(rt: &Runtime, plugin: &Arc<Plugin>, store: &Arc<dyn KvBackend>) -> Instance {
    Instance::new(
        rt,
        plugin.clone(),
        InstanceSpec::new("acme", "n"),
        store.clone(),
    )
    .unwrap()
}

async fn stored(store: &Arc<dyn KvBackend>, key: &str) -> Option<Value> {
    let bytes = store.get(&ns(), key).await.unwrap()?;
    Some(serde_json::from_slice(&bytes).unwrap())
}

async fn remember(inst: &Instance, url: &str) -> switchyard_runtime::Invocation<String> {
    inst.invoke(
        "remember",
        &json!({ "url": url }).to_string(),
        CallOptions::default(),
    )
    .await
}

fn migration_wait(inv: &switchyard_runtime::Invocation<String>) -> Duration {
    match &inv.result {
        Err(InvokeError::Migration {
            plugin,
            version,
            from,
            retry_after,
            reason,
        }) => {
            assert_eq!((plugin.as_str(), version.as_str()), ("notes", "2.0.0"));
            assert_eq!(from.as_deref(), Some("1.0.0"));
            assert!(reason.contains("failing on purpose"), "{reason}");
            *retry_after
        }
        other => panic!("expected a failed migration, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_version_migrates_the_storage_once_before_its_first_call() {
    let rt = runtime_with(RuntimeConfig::default());
    let store: Arc<dyn KvBackend> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let (v1, v2) = (notes(&rt, "1.0.0").await, notes(&rt, "2.0.0").await);

    // A new instance has nothing to migrate: its version is only recorded.
    let old = instance_of(&rt, &v1, &store);
    let inv = remember(&old, "http://upstream.test/").await;
    assert!(inv.result.is_ok(), "{:?}", inv.result);
    assert_eq!(inv.report.migrated, None);
    assert_eq!(stored(&store, "migration-tries").await, None);
    assert_eq!(
        store.storage_version(&ns()).await.unwrap(),
        Some(version("1.0.0"))
    );

    // The upgrade: eight first calls at once, one migration before all.
    let new = instance_of(&rt, &v2, &store);
    let calls = (0..8).map(|_| {
        let new = new.clone();
        tokio::spawn(async move { remember(&new, "http://upstream.test/v2").await })
    });
    let mut ran = Vec::new();
    for call in calls {
        let inv = call.await.unwrap();
        assert!(inv.result.is_ok(), "{:?}", inv.result);
        ran.extend(inv.report.migrated);
    }
    assert_eq!(
        ran,
        [Migrated {
            from: Some("1.0.0".into()),
            to: "2.0.0".into(),
            summary: "migrated from 1.0.0 to 2.0.0".into(),
            duration_ms: ran[0].duration_ms,
        }]
    );
    assert_eq!(stored(&store, "migration-tries").await, Some(json!(1)));
    assert_eq!(
        stored(&store, "migrations").await,
        Some(json!(["1.0.0->2.0.0"]))
    );
    assert_eq!(
        store.storage_version(&ns()).await.unwrap(),
        Some(version("2.0.0"))
    );

    // Built again (a reload): the recorded version is current, no step.
    let rebuilt = instance_of(&rt, &v2, &store);
    let inv = remember(&rebuilt, "http://upstream.test/again").await;
    assert_eq!(inv.report.migrated, None);
    assert_eq!(stored(&store, "migration-tries").await, Some(json!(1)));

    // A downgrade runs the older version's step, told where it came from.
    let back = instance_of(&rt, &v1, &store);
    let inv = remember(&back, "http://upstream.test/v1").await;
    assert_eq!(
        inv.report.migrated.map(|m| m.summary),
        Some("migrated from 2.0.0 to 1.0.0".into())
    );
    assert_eq!(
        stored(&store, "migrations").await,
        Some(json!(["1.0.0->2.0.0", "2.0.0->1.0.0"]))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_migration_is_retried_after_a_backoff_and_nothing_runs_meanwhile() {
    let clock = Clock::default();
    let rt = runtime_with(RuntimeConfig {
        clock: clock.clone(),
        ..RuntimeConfig::default()
    });
    let store: Arc<dyn KvBackend> = Arc::new(SqliteStore::open_in_memory().unwrap());
    // Storage version 1.0.0 left, and a step that fails twice.
    let q = Quota::default();
    store.set(&ns(), "fail-migrations", b"2", &q).await.unwrap();
    assert!(
        store
            .record_storage_version(&ns(), None, &version("1.0.0"))
            .await
            .unwrap()
    );
    let inst = instance_of(&rt, &notes(&rt, "2.0.0").await, &store);

    let inv = remember(&inst, "http://upstream.test/").await;
    assert_eq!(migration_wait(&inv), Duration::from_secs(5));
    assert!(!inv.report.request_id.is_empty());
    assert_eq!(stored(&store, "migration-tries").await, Some(json!(1)));
    // The call itself did not run.
    assert_eq!(store.get(&ns(), "wait-url").await.unwrap(), None);
    assert!(inst.storage_migration_error().is_some());

    // Within the backoff, calls fail at once without a second try.
    let inv = remember(&inst, "http://upstream.test/").await;
    assert!(migration_wait(&inv) <= Duration::from_secs(5));
    assert_eq!(stored(&store, "migration-tries").await, Some(json!(1)));

    // Once it has passed, the step runs again; the wait doubles.
    clock.advance(Duration::from_secs(5));
    let inv = remember(&inst, "http://upstream.test/").await;
    assert_eq!(migration_wait(&inv), Duration::from_secs(10));
    assert_eq!(stored(&store, "migration-tries").await, Some(json!(2)));

    clock.advance(Duration::from_secs(10));
    let inv = remember(&inst, "http://upstream.test/third").await;
    assert!(inv.result.is_ok(), "{:?}", inv.result);
    assert_eq!(
        inv.report.migrated.map(|m| m.summary),
        Some("migrated from 1.0.0 to 2.0.0".into())
    );
    assert_eq!(stored(&store, "migration-tries").await, Some(json!(3)));
    assert_eq!(
        store.get(&ns(), "wait-url").await.unwrap().as_deref(),
        Some(&b"http://upstream.test/third"[..])
    );
    assert!(inst.storage_migration_error().is_none());
    assert_eq!(
        store.storage_version(&ns()).await.unwrap(),
        Some(version("2.0.0"))
    );
}

/// A component without the step (here one built against 0.1.0) finds
/// another version recorded over its storage: it records its own and runs,
/// and its storage is untouched.
#[tokio::test]
async fn a_component_without_the_step_records_its_version_and_runs() {
    let plugin = load(guests::GUEST_COMPAT_0_1_0).await;
    assert!(!plugin.migrates_storage());
    let store: Arc<dyn KvBackend> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let ns = Namespace::new("acme", "old-1");
    let q = Quota::default();
    store.set(&ns, "pings", b"41", &q).await.unwrap();
    let earlier = StorageVersion {
        plugin: "compat-0-1-0".into(),
        version: "0.0.9".into(),
    };
    assert!(
        store
            .record_storage_version(&ns, None, &earlier)
            .await
            .unwrap()
    );
    let inst = instance_with_store(plugin, InstanceSpec::new("acme", "old-1"), store.clone());
    let out = ok(&inst, "ping", json!(1)).await;
    assert_eq!(out["stored"], 42);
    assert_eq!(
        store.storage_version(&ns).await.unwrap(),
        Some(StorageVersion {
            plugin: "compat-0-1-0".into(),
            version: "0.1.0".into(),
        })
    );
}
