//! Benchmark: one invocation of a trivial component.
//!
//! - **bare**: what a minimal embedder does with the same `Engine` — a
//!   linker with WASI only, `InstancePre`, a fresh `Store` with an empty
//!   `WasiCtx`, instantiate, call `invoke` through a typed function.
//! - **switchyard**: `Instance::invoke`, the full path (input checks, the
//!   tenant's limits, capability views, deadline, report, output checks).
//!
//! Both run in the same process, interleaved round by round so drift in
//! machine load hits both; each is the median of its rounds. The ratio
//! switchyard / bare is the figure to watch (target ≤ 1.25, later ≤ 1.10).
//! The warm host-call round trip is measured with `config-loop`:
//! (time of n calls − time of 0 calls) / n.
//!
//! Run: `cargo bench -p switchyard-tests --bench invoke`

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_runtime::{CallOptions, Instance, InstanceSpec, Runtime, RuntimeConfig};
use switchyard_store::SqliteStore;
use switchyard_tests::guests;
use wasmtime::component::{ComponentType, Lift, Linker, Lower, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

#[derive(ComponentType, Lower)]
#[component(record)]
struct Actor {
    id: String,
    email: Option<String>,
    roles: Vec<String>,
}

#[derive(ComponentType, Lower)]
#[component(record)]
struct Context {
    tenant: String,
    instance: String,
    #[component(name = "request-id")]
    request_id: String,
    actor: Option<Actor>,
}

// The error types are lifted only to type the call; their fields are read
// through `Debug` when a call fails.
#[allow(dead_code)]
#[derive(ComponentType, Lift, Debug)]
#[component(record)]
struct UpstreamError {
    status: Option<u16>,
    message: String,
    #[component(name = "retry-after-secs")]
    retry_after_secs: Option<u32>,
}

#[allow(dead_code)]
#[derive(ComponentType, Lift, Debug)]
#[component(variant)]
enum PluginError {
    #[component(name = "invalid-input")]
    InvalidInput(String),
    #[component(name = "not-found")]
    NotFound(String),
    #[component(name = "forbidden")]
    Forbidden(String),
    #[component(name = "conflict")]
    Conflict(String),
    #[component(name = "upstream")]
    Upstream(UpstreamError),
    #[component(name = "internal")]
    Internal(String),
}

struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct BareHost {
    engine: Engine,
    pre: wasmtime::component::InstancePre<Bare>,
}

impl BareHost {
    fn new(engine: &Engine, wasm: &[u8]) -> Self {
        let component = wasmtime::component::Component::new(engine, wasm).unwrap();
        let mut linker = Linker::<Bare>::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        // `noop` never calls the switchyard imports; traps satisfy the linker.
        linker.define_unknown_imports_as_traps(&component).unwrap();
        let pre = linker.instantiate_pre(&component).unwrap();
        Self {
            engine: engine.clone(),
            pre,
        }
    }

    async fn invoke(&self) -> String {
        let mut store = Store::new(
            &self.engine,
            Bare {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        // The shared engine has epoch interruption on; give the bare store
        // a deadline it cannot reach.
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = self.pre.instantiate_async(&mut store).await.unwrap();
        let func = instance
            .get_typed_func::<(Context, &str, &str), (Result<String, PluginError>,)>(
                &mut store, "invoke",
            )
            .unwrap();
        let ctx = Context {
            tenant: "bench".into(),
            instance: "trivial".into(),
            request_id: "req-1".into(),
            actor: None,
        };
        let (out,) = func
            .call_async(&mut store, (ctx, "noop", "{}"))
            .await
            .unwrap();
        out.unwrap()
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn per_iter(total: Duration, n: u32) -> Duration {
    total / n
}

fn fmt(d: Duration) -> String {
    format!("{:.1} µs", d.as_nanos() as f64 / 1000.0)
}

fn main() {
    let quick = switchyard_tests::bench_is_quick();
    let (rounds, iters) = if quick { (3, 20) } else { (30, 200) };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let wasm = std::fs::read(guests::GUEST_TRIVIAL).unwrap();
        let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
        let plugin = runtime.load(&wasm).await.unwrap();
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let inst = Instance::new(
            &runtime,
            plugin,
            InstanceSpec::new("bench", "trivial"),
            store,
        )
        .unwrap();
        let bare = BareHost::new(runtime.engine(), &wasm);

        // Both must do the same work.
        assert_eq!(bare.invoke().await, "{}");
        let sy = inst.invoke("noop", "{}", CallOptions::default()).await;
        assert_eq!(sy.result.unwrap(), "{}");

        // Warm up.
        for _ in 0..iters {
            bare.invoke().await;
            inst.invoke("noop", "{}", CallOptions::default())
                .await
                .result
                .unwrap();
        }

        let (mut bare_t, mut sy_t) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(bare.invoke().await);
            }
            bare_t.push(per_iter(t.elapsed(), iters));
            let t = Instant::now();
            for _ in 0..iters {
                let inv = inst.invoke("noop", "{}", CallOptions::default()).await;
                std::hint::black_box(inv.result.unwrap());
            }
            sy_t.push(per_iter(t.elapsed(), iters));
        }
        let (b, s) = (median(bare_t), median(sy_t));
        println!("invoke (instantiate + call of `noop`, median of {rounds} rounds × {iters}):");
        println!("  bare wasmtime : {}", fmt(b));
        println!("  switchyard    : {}", fmt(s));
        println!(
            "  ratio         : {:.3} (switchyard / bare; target ≤ 1.25)",
            s.as_secs_f64() / b.as_secs_f64()
        );

        // Host-call round trip: config.get from the guest, warm.
        let n = if quick { 1_000 } else { 100_000 };
        let time_loop = |n: u64| {
            let inst = inst.clone();
            async move {
                let mut v = Vec::new();
                for _ in 0..rounds.min(10) {
                    let t = Instant::now();
                    let inv = inst
                        .invoke(
                            "config-loop",
                            &format!("{{\"n\":{n}}}"),
                            CallOptions::default(),
                        )
                        .await;
                    inv.result.unwrap();
                    v.push(t.elapsed());
                }
                median(v)
            }
        };
        let zero = time_loop(0).await;
        let many = time_loop(n).await;
        let per_call = many.saturating_sub(zero) / n as u32;
        println!(
            "host call round trip (config.get, {n} calls per invocation): {} ns",
            per_call.as_nanos()
        );
    });
}
