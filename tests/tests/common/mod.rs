//! Shared setup for the integration tests: one runtime per test binary
//! (the pooling allocator reserves its slots once), components loaded
//! through the on-disk compile cache.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use switchyard_runtime::{
    CallOptions, Instance, InstanceSpec, Invocation, Plugin, Runtime, RuntimeConfig,
};
use switchyard_store::{KvBackend, SqliteStore};

pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        runtime_with(RuntimeConfig {
            max_concurrent_invocations: 32,
            ..RuntimeConfig::default()
        })
    })
}

/// A runtime of the test's own (its clock, its name lookup), sharing the
/// tests' compile cache.
pub fn runtime_with(config: RuntimeConfig) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("compile-cache")),
        ..config
    })
    .expect("runtime")
}

pub async fn load(path: &str) -> Arc<Plugin> {
    let wasm = std::fs::read(path).expect("guest component");
    runtime().load(&wasm).await.expect("load")
}

pub fn memory_store() -> Arc<dyn KvBackend> {
    Arc::new(SqliteStore::open_in_memory().unwrap())
}

pub fn instance(plugin: Arc<Plugin>, spec: InstanceSpec) -> Instance {
    Instance::new(runtime(), plugin, spec, memory_store()).expect("valid spec")
}

pub fn instance_with_store(
    plugin: Arc<Plugin>,
    spec: InstanceSpec,
    store: Arc<dyn KvBackend>,
) -> Instance {
    Instance::new(runtime(), plugin, spec, store).expect("valid spec")
}

/// Invokes `action` and parses the output as JSON.
pub async fn call(inst: &Instance, action: &str, input: Value) -> Invocation<Value> {
    let inv = inst
        .invoke(action, &input.to_string(), CallOptions::default())
        .await;
    Invocation {
        result: inv
            .result
            .map(|s| serde_json::from_str(&s).expect("plugin output is JSON")),
        report: inv.report,
    }
}

/// Invokes `action`, expecting success.
pub async fn ok(inst: &Instance, action: &str, input: Value) -> Value {
    let inv = call(inst, action, input).await;
    match inv.result {
        Ok(v) => v,
        Err(e) => panic!("{action} failed: {e}"),
    }
}
