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
use switchyard_tests::{Recorder, guests, patch_slot};

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
    reaching(rt, plugin, store, &[])
}

/// [`instance_of`], allowed to reach `egress`.
fn reaching(
    rt: &Runtime,
    plugin: &Arc<Plugin>,
    store: &Arc<dyn KvBackend>,
    egress: &[String],
) -> Instance {
    let mut spec = InstanceSpec::new("acme", "n");
    spec.egress = egress.to_vec();
    Instance::new(rt, plugin.clone(), spec, store.clone()).unwrap()
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
    waited_for(inv, "failing on purpose")
}

/// How long the failed call says to wait, after checking that it failed
/// for `why` before 2.0.0's storage migration from 1.0.0.
fn waited_for(inv: &switchyard_runtime::Invocation<String>, why: &str) -> Duration {
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
            assert!(reason.contains(why), "{reason}");
            *retry_after
        }
        other => panic!("expected a failed migration, got {other:?}"),
    }
}

/// Waits until `ns`'s storage is recorded as `want`: a call that ran no
/// step records its version in the background, not before it answers.
async fn recorded_as(store: &Arc<dyn KvBackend>, ns: &Namespace, want: &StorageVersion) {
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while store.storage_version(ns).await.unwrap().as_ref() != Some(want) {
        assert!(
            std::time::Instant::now() < until,
            "never recorded as {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A store whose instance `acme/n` holds 1.0.0's data.
async fn left_by_1_0_0() -> Arc<dyn KvBackend> {
    let store: Arc<dyn KvBackend> = Arc::new(SqliteStore::open_in_memory().unwrap());
    store
        .set(&ns(), "notes", b"[]", &Quota::default())
        .await
        .unwrap();
    assert!(
        store
            .record_storage_version(&ns(), None, &version("1.0.0"))
            .await
            .unwrap()
    );
    store
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
    recorded_as(&store, &ns(), &version("1.0.0")).await;

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
            error: None,
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

    // Within the backoff, calls fail at once without a second try; so do
    // those of the instance built again by a reload.
    let inv = remember(&inst, "http://upstream.test/").await;
    assert!(migration_wait(&inv) <= Duration::from_secs(5));
    let rebuilt = instance_of(&rt, inst.plugin(), &store);
    let inv = remember(&rebuilt, "http://upstream.test/").await;
    assert!(migration_wait(&inv) <= Duration::from_secs(5));
    assert!(rebuilt.storage_migration_error().is_some());
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
    let now = StorageVersion {
        plugin: "compat-0-1-0".into(),
        version: "0.1.0".into(),
    };
    recorded_as(&store, &ns, &now).await;
}

/// Another daemon's step (its claim in the store) holds this one off: its
/// calls wait without running a second step beside it, and the wait is not
/// counted as a failure of the step.
#[tokio::test(flavor = "multi_thread")]
async fn another_daemons_step_holds_this_one_off_without_counting_a_failure() {
    let clock = Clock::default();
    let rt = runtime_with(RuntimeConfig {
        clock: clock.clone(),
        ..RuntimeConfig::default()
    });
    let store = left_by_1_0_0().await;
    let now_ms = clock.wall().as_millis() as i64;
    let claim = store
        .claim_storage_migration(&ns(), "another-daemon", now_ms, now_ms + 3_600_000)
        .await
        .unwrap();
    assert_eq!(claim, None);
    let inst = instance_of(&rt, &notes(&rt, "2.0.0").await, &store);

    let inv = remember(&inst, "http://upstream.test/").await;
    assert!(
        waited_for(&inv, "another daemon is running the migration step") <= Duration::from_secs(5)
    );
    assert_eq!(stored(&store, "migration-tries").await, None);

    // That daemon is done (its step failed, say); this one's first try
    // fails: a first failure, waiting 5 s, not a second one.
    store
        .release_storage_migration(&ns(), "another-daemon")
        .await
        .unwrap();
    store
        .set(&ns(), "fail-migrations", b"1", &Quota::default())
        .await
        .unwrap();
    clock.advance(Duration::from_secs(5));
    let inv = remember(&inst, "http://upstream.test/").await;
    assert_eq!(migration_wait(&inv), Duration::from_secs(5));
    clock.advance(Duration::from_secs(5));
    let inv = remember(&inst, "http://upstream.test/").await;
    assert!(inv.result.is_ok(), "{:?}", inv.result);
    assert_eq!(stored(&store, "migration-tries").await, Some(json!(2)));
    // Its claim is given back.
    assert_eq!(
        store
            .claim_storage_migration(&ns(), "another-daemon", now_ms, now_ms + 1)
            .await
            .unwrap(),
        None
    );
}

/// 2.0.0 over 1.0.0's data, with a call whose migration step is inside
/// its request to an upstream that answers after `slow_ms`.
struct Underway {
    store: Arc<dyn KvBackend>,
    inst: Instance,
    caller: tokio::task::JoinHandle<switchyard_runtime::Invocation<String>>,
    /// Kept for as long as the step may run.
    _rt: Runtime,
    _up: Recorder,
}

async fn step_underway(slow_ms: u64) -> Underway {
    let rt = runtime_with(RuntimeConfig::default());
    let up = Recorder::start().await;
    let store = left_by_1_0_0().await;
    let slow = up.url(&format!("/slow?ms={slow_ms}"));
    store
        .set(&ns(), "migration-url", slow.as_bytes(), &Quota::default())
        .await
        .unwrap();
    let inst = reaching(&rt, &notes(&rt, "2.0.0").await, &store, &[up.origin()]);
    let caller = {
        let inst = inst.clone();
        tokio::spawn(async move { remember(&inst, "http://upstream.test/").await })
    };
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while up.requests_to("/slow").is_empty() {
        assert!(std::time::Instant::now() < until, "the step never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Underway {
        store,
        inst,
        caller,
        _rt: rt,
        _up: up,
    }
}

/// A caller that goes away while the step runs (a client that hangs up)
/// does not stop it half-way: it finishes, once, and is recorded.
#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_goes_away_does_not_stop_the_step() {
    let Underway {
        store,
        inst,
        caller,
        ..
    } = step_underway(1500).await;
    let until = std::time::Instant::now() + Duration::from_secs(30);
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    while store.storage_version(&ns()).await.unwrap() != Some(version("2.0.0")) {
        assert!(std::time::Instant::now() < until, "the step never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored(&store, "migration-tries").await, Some(json!(1)));
    assert_eq!(
        stored(&store, "migrations").await,
        Some(json!(["1.0.0->2.0.0"]))
    );
    let inv = remember(&inst, "http://upstream.test/").await;
    assert!(inv.result.is_ok(), "{:?}", inv.result);
    assert_eq!(inv.report.migrated, None);
}

/// Another daemon records the storage version while this one's step runs
/// (its claim had run out, say): the step's compare-and-set loses, and
/// what was recorded decides. The same version: the call goes on, the step
/// having run. Another version: the call fails and is tried again after
/// the first backoff, and what the other daemon recorded stands.
#[tokio::test(flavor = "multi_thread")]
async fn a_step_that_loses_the_record_goes_by_what_was_recorded() {
    for (other, same) in [("2.0.0", true), ("3.0.0", false)] {
        let Underway { store, caller, .. } = step_underway(1000).await;
        // The step is waiting for its upstream: the other daemon records.
        assert!(
            store
                .record_storage_version(&ns(), Some(&version("1.0.0")), &version(other))
                .await
                .unwrap()
        );
        let inv = caller.await.unwrap();
        assert_eq!(stored(&store, "migration-tries").await, Some(json!(1)));
        if same {
            assert!(inv.result.is_ok(), "{other}: {:?}", inv.result);
            let ran = inv.report.migrated.as_ref().expect("the step ran");
            assert_eq!(ran.to, "2.0.0");
        } else {
            let wait = waited_for(
                &inv,
                "another daemon recorded the storage as notes 3.0.0 meanwhile",
            );
            assert_eq!(wait, Duration::from_secs(5));
        }
        assert_eq!(
            store.storage_version(&ns()).await.unwrap(),
            Some(version(other))
        );
    }
}
