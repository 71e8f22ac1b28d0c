//! The engine: one per process, shared by every plugin and tenant.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{PluginIndices, PluginPre};
use crate::limits::{Limiter, Limits};
use crate::manifest::Manifest;
use crate::state::StoreState;

/// How long `manifest()` may take. It only builds a record; a second is
/// generous, and start-up with many plugins must not wait on a slow one.
const MANIFEST_DEADLINE: Duration = Duration::from_secs(1);

/// The optional export describing the values of config keys and job intervals.
const SETTINGS_SCHEMA_EXPORT: &str = "settings-schema";

/// The Store data of a `manifest()` call: WASI's empty context and limits.
struct ManifestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
}

impl WasiView for ManifestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Defines every `switchyard:plugin/*` function `component` imports as a
/// function that traps, naming itself. (wasmtime's own
/// `define_unknown_imports_as_traps` would also stub WASI interfaces of a
/// newer patch version than the linker's, breaking their resource types.)
fn stub_switchyard_imports(
    linker: &mut Linker<ManifestState>,
    component: &Component,
    engine: &Engine,
) -> wasmtime::Result<()> {
    use wasmtime::component::types::ComponentItem;
    let ty = component.component_type();
    for (name, import) in ty.imports(engine) {
        let ComponentItem::ComponentInstance(inst) = import.ty else {
            continue;
        };
        if !name.starts_with("switchyard:plugin/") {
            continue;
        }
        let mut instance = linker.instance(name)?;
        for (func, item) in inst.exports(engine) {
            if let ComponentItem::ComponentFunc(_) = item.ty {
                let full = format!("{name}#{func}");
                instance.func_new(func, move |_, _, _, _| {
                    Err(wasmtime::format_err!(
                        "unknown import: `{full}` has not been defined"
                    ))
                })?;
            }
        }
    }
    Ok(())
}

/// The import a trapping stub was called for, if that is why `e` trapped.
fn called_import(e: &wasmtime::Error) -> Option<String> {
    e.chain().find_map(|cause| {
        let text = cause.to_string();
        let rest = text.strip_prefix("unknown import: `")?;
        Some(rest.split('`').next().unwrap_or(rest).to_owned())
    })
}

/// How often the epoch advances: deadlines are enforced to this precision,
/// and a computing guest yields to the executor this often.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Process-wide runtime settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached (`<sha256>.cwasm`). None keeps
    /// them in memory only. The directory must be writable only by the
    /// daemon: cached code is loaded without re-validation.
    pub cache_dir: Option<PathBuf>,
    /// Invocations that may run at once across all tenants; the pooling
    /// allocator reserves slots for this many Stores.
    pub max_concurrent_invocations: u32,
    /// What each tenant's plugins may use over time: log records, storage
    /// writes, memory growth.
    pub budgets: crate::limits::BudgetRates,
    /// Threads of the long-runner pool (see `sched`): long-running guests
    /// that may compute at once, at the lowest scheduling priority.
    /// Default: one less than the machine's cores (at least one), so that
    /// short calls always find a core.
    pub long_running_cpus: usize,
    /// How host names are resolved (the system resolver; tests inject
    /// names). Every address is checked by the egress policy either way.
    pub lookup: crate::net::Lookup,
    /// The monotonic clock token refresh times are read from (tests advance
    /// it instead of waiting).
    pub clock: crate::clock::Clock,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_concurrent_invocations: 100,
            budgets: crate::limits::BudgetRates::default(),
            long_running_cpus: std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1).max(1)),
            lookup: crate::net::Lookup::System,
            clock: crate::clock::Clock::default(),
        }
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a valid component.
    #[error("not a valid wasm component: {0}")]
    Compile(String),
    /// The component imports something the host does not provide, or does
    /// not export the `plugin` world.
    #[error("the component does not fit the switchyard:plugin world: {0}")]
    World(String),
    /// `manifest()` trapped, called an import, took too long, or returned
    /// an invalid manifest.
    #[error("invalid manifest: {0}")]
    Manifest(String),
    /// The compiled-code cache could not be written.
    #[error("compile cache: {0}")]
    Cache(String),
    /// Every wasm slot was in use, so the manifest could not be read: the
    /// component was not judged, and loading it again later may succeed.
    #[error(
        "no wasm slot was free to read the component's manifest (the host is busy); \
         try again: {0}"
    )]
    Busy(String),
}

/// A compiled plugin version: compiled once, pre-instantiated, shared by
/// every tenant that enables it.
pub struct Plugin {
    pub(crate) pre: PluginPre<StoreState>,
    /// Finds the world's exports in an instance of `pre`.
    pub(crate) indices: PluginIndices,
    /// The optional `migrate-storage` export (see `migration`).
    pub(crate) migrate: Option<wasmtime::component::ComponentExportIndex>,
    manifest: Manifest,
    digest: String,
    world: String,
    compiled: Compiled,
    /// The actions' input schemas, compiled once (see `schema`).
    pub(crate) schemas: crate::schema::Schemas,
}

impl Plugin {
    /// The manifest the plugin declared.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// SHA-256 of the component bytes, hex.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The WIT world the component targets, read from its imports and
    /// exports: `switchyard:plugin/plugin@0.1.5` (or
    /// `plugin-with-settings`, `plugin-with-migration`), with the newest
    /// `switchyard:plugin` version it imports. A signed release names it.
    pub fn world(&self) -> &str {
        &self.world
    }

    /// Whether the plugin has a storage migration step (`migrate-storage`).
    pub fn migrates_storage(&self) -> bool {
        self.migrate.is_some()
    }

    /// How the component was made ready: its size, and the time spent
    /// compiling it or loading it from the compile cache.
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }
}

/// How a component was made ready to run (for `plugin inspect` and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compiled {
    /// Size of the component, in bytes.
    pub component_bytes: usize,
    /// Time spent compiling it, or loading it from the cache.
    pub took: Duration,
    /// Whether it came from the compile cache.
    pub from_cache: bool,
}

/// The imports a plugin may have, by package and major version: its own
/// world, and the WASI 0.2 interfaces that language runtimes import (Rust's
/// std, componentize-py, ComponentizeJS). Each Store's `WasiCtx` grants
/// nothing of them but clocks, random and a captured stderr (see
/// `instance::new_store`); `wasi:http` is not among them, because a plugin's
/// HTTP goes through `switchyard:plugin/http`, where egress and credentials
/// are checked.
pub const SUPPORTED_IMPORTS: &[(&str, &str)] = &[
    ("switchyard:plugin", "0.1"),
    ("wasi:io", "0.2"),
    ("wasi:clocks", "0.2"),
    ("wasi:random", "0.2"),
    ("wasi:cli", "0.2"),
    ("wasi:filesystem", "0.2"),
    ("wasi:sockets", "0.2"),
];

/// Whether an import name (`ns:pkg/iface@1.2.3`) is in [`SUPPORTED_IMPORTS`].
fn supported_import(name: &str) -> bool {
    let Some((path, version)) = name.split_once('@') else {
        return false;
    };
    let package = path.split_once('/').map_or(path, |(p, _)| p);
    SUPPORTED_IMPORTS.iter().any(|(p, major)| {
        *p == package
            && version
                .strip_prefix(major)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// Refuses a component that imports anything the host does not provide,
/// naming every such import: wasmtime's own error names only the first,
/// and says nothing of what a plugin may import instead.
fn check_imports(component: &Component, engine: &Engine) -> Result<(), LoadError> {
    let missing: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name)
        .filter(|name| !supported_import(name))
        .map(|name| format!("`{name}`"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let allowed: Vec<String> = SUPPORTED_IMPORTS
        .iter()
        .map(|(p, v)| format!("{p}@{v}.x"))
        .collect();
    Err(LoadError::World(format!(
        "the component imports {}, which Switchyard does not provide; a plugin may import only {} \
         (an HTTP request goes through switchyard:plugin/http: build without wasi:http, e.g. \
         ComponentizeJS with disableFeatures: [\"http\", \"fetch-event\"])",
        missing.join(", "),
        allowed.join(", ")
    )))
}

/// See [`Plugin::world`].
fn world_of(component: &Component, engine: &Engine) -> String {
    let ty = component.component_type();
    let version = ty
        .imports(engine)
        .filter_map(|(name, _)| {
            let (_, v) = name.strip_prefix("switchyard:plugin/")?.split_once('@')?;
            semver::Version::parse(v).ok()
        })
        .max();
    let has = |export: &str| ty.exports(engine).any(|(name, _)| name == export);
    let world = if has(crate::migration::EXPORT) {
        "plugin-with-migration"
    } else if has(SETTINGS_SCHEMA_EXPORT) {
        "plugin-with-settings"
    } else {
        "plugin"
    };
    match version {
        Some(v) => format!("switchyard:plugin/{world}@{v}"),
        None => format!("switchyard:plugin/{world}"),
    }
}

struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // A dedicated thread, not a tokio task: a busy executor must not be
        // able to delay the tick that stops a spinning guest.
        let thread = std::thread::Builder::new()
            .name("switchyard-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The wasmtime engine, the linker with Switchyard's interfaces, and the
/// compile cache.
pub struct Runtime {
    pub(crate) engine: Engine,
    linker: Linker<StoreState>,
    /// WASI only (granting nothing): `manifest()` runs with every
    /// switchyard import stubbed to trap, so it cannot reach storage, logs,
    /// credentials or the network with no tenant to answer for it.
    manifest_linker: Linker<ManifestState>,
    cache_dir: Option<PathBuf>,
    budget_rates: crate::limits::BudgetRates,
    /// HTTP clients, shared by instances that resolve alike and trust the
    /// same CAs.
    pub(crate) clients: crate::net::Clients,
    pub(crate) clock: crate::clock::Clock,
    /// Where long-running guests compute (see `sched`).
    pub(crate) long_runners: crate::sched::LongRunners,
    /// Each tenant's budgets, shared by its instances (and kept across
    /// reloads while an instance holds them).
    budgets: std::sync::Mutex<
        std::collections::HashMap<String, std::sync::Weak<crate::limits::TenantBudgets>>,
    >,
    /// Each instance's storage migration gate (see `migration`).
    pub(crate) migration_gates: Arc<crate::migration::Gates>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Builds the engine and linker.
    pub fn new(config: RuntimeConfig) -> wasmtime::Result<Self> {
        let n = config.max_concurrent_invocations.max(1);
        let mut pool = PoolingAllocationConfig::default();
        // A Rust wasm32-wasip2 component has a handful of core instances, one
        // or two memories and a few tables; these totals leave headroom.
        pool.total_component_instances(n)
            .total_core_instances(n * 16)
            .total_memories(n * 2)
            .total_tables(n * 8)
            .total_stacks(n)
            // Reset the first MiB of a freed memory (and tables) with
            // memset rather than madvise: each madvise is a TLB shootdown
            // across every core, which dominated short invocations under
            // load. What is left is decommitted at once by the call that
            // freed it, not batched: a batch is flushed by whichever call
            // fills it, and a benign call's drop then paid 4-5 ms to zap
            // another tenant's 64 MiB (memory bombs took the benign p99
            // from 1.1 to 6 ms; per-call cost is the same either way).
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10)
            .decommit_batch_size(1)
            // Where the kernel can say which pages a call dirtied (Linux
            // 6.7+), reset only those instead of the whole first MiB: the
            // memset was a tenth of a short queued job's cost.
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut cfg = Config::new();
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg)?;

        let mut linker = Linker::new(&engine);
        // WASI is linked because std-built guests import it; the WasiCtx of
        // every Store grants nothing (see `instance::new_store`).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        crate::http::add_to_linker(&mut linker)?;
        crate::credentials::add_to_linker(&mut linker)?;
        crate::storage::add_to_linker(&mut linker)?;
        crate::log::add_to_linker(&mut linker)?;
        crate::config::add_to_linker(&mut linker)?;
        crate::invocation::add_to_linker(&mut linker)?;

        let mut manifest_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut manifest_linker)?;

        if let Some(dir) = &config.cache_dir {
            prepare_cache_dir(dir)?;
        }
        Ok(Self {
            _ticker: EpochTicker::start(engine.clone()),
            engine,
            linker,
            manifest_linker,
            cache_dir: config.cache_dir,
            budget_rates: config.budgets,
            clients: crate::net::Clients::new(config.lookup),
            long_runners: crate::sched::LongRunners::start(config.long_running_cpus)?,
            clock: config.clock,
            budgets: Default::default(),
            migration_gates: Default::default(),
        })
    }

    /// Whether [`Runtime::load`] would find the component whose SHA-256
    /// (hex) is `digest` compiled in the on-disk cache (and so take
    /// milliseconds rather than seconds).
    pub fn is_cached(&self, digest: &str) -> bool {
        self.cache_path(digest).is_some_and(|p| p.is_file())
    }

    /// Compiles (or loads from the cache), links and pre-instantiates a
    /// component, then reads its manifest.
    pub async fn load(&self, wasm: &[u8]) -> Result<Arc<Plugin>, LoadError> {
        let digest = hex::encode(Sha256::digest(wasm));
        let engine = self.engine.clone();
        let cache = self.cache_path(&digest);
        let bytes = wasm.to_vec();
        let started = Instant::now();
        // Compilation is seconds of CPU (an 18 MB Python component takes
        // 10-16 s here): keep it off the async workers, so that the daemon
        // goes on serving while a reload compiles.
        let (component, from_cache) =
            tokio::task::spawn_blocking(move || compile_cached(&engine, &bytes, cache))
                .await
                .map_err(|e| LoadError::Compile(format!("compile task failed: {e}")))??;
        let compiled = Compiled {
            component_bytes: wasm.len(),
            took: started.elapsed(),
            from_cache,
        };
        if !from_cache {
            tracing::info!(
                sha256 = %digest,
                bytes = wasm.len(),
                ms = compiled.took.as_millis() as u64,
                "compiled a plugin component"
            );
        }
        check_imports(&component, &self.engine)?;
        let world = world_of(&component, &self.engine);
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::World(format!("{e:#}")))?;
        let pre = PluginPre::new(pre).map_err(|e| LoadError::World(format!("{e:#}")))?;
        let indices = PluginIndices::new(pre.instance_pre())
            .map_err(|e| LoadError::World(format!("{e:#}")))?;
        let migrate = component.get_export_index(None, crate::migration::EXPORT);
        let manifest = self.read_manifest(&component).await?;
        let schemas = crate::schema::compile(&manifest).map_err(LoadError::Manifest)?;
        Ok(Arc::new(Plugin {
            pre,
            indices,
            migrate,
            manifest,
            digest,
            world,
            compiled,
            schemas,
        }))
    }

    /// Calls `manifest()` in a Store that grants nothing, with a short
    /// deadline: it runs once per plugin version before any tenant uses it,
    /// so it must neither call an import nor hold up start-up.
    async fn read_manifest(&self, component: &Component) -> Result<Manifest, LoadError> {
        let refused = LoadError::Manifest;
        let mut linker = self.manifest_linker.clone();
        stub_switchyard_imports(&mut linker, component, &self.engine)
            .map_err(|e| refused(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(component)
            .and_then(PluginPre::new)
            .map_err(|e| refused(format!("{e:#}")))?;
        let limits = Limits {
            deadline: MANIFEST_DEADLINE,
            ..Limits::default()
        };
        let stderr = MemoryOutputPipe::new(16 * 1024);
        let mut store = Store::new(
            &self.engine,
            ManifestState {
                wasi: WasiCtxBuilder::new().stderr(stderr.clone()).build(),
                table: ResourceTable::new(),
                limiter: Limiter::new(&limits),
            },
        );
        store.limiter(|s| &mut s.limiter);
        let deadline = Instant::now() + MANIFEST_DEADLINE;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(wasmtime::Error::new(crate::limits::DeadlineReached))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let mut phase = "manifest()";
        let run = async {
            let instance = pre.instance_pre().instantiate_async(&mut store).await?;
            let manifest = crate::bindings::Plugin::new(&mut store, &instance)?
                .call_manifest(&mut store)
                .await?;
            // Optional (0.1.4): a component of the plain `plugin` world has none.
            phase = "settings-schema()";
            let schema = match instance.get_func(&mut store, SETTINGS_SCHEMA_EXPORT) {
                None => None,
                Some(f) => {
                    let f = f.typed::<(), (String,)>(&store).map_err(|e| {
                        wasmtime::format_err!(
                            "the export `{SETTINGS_SCHEMA_EXPORT}` must be `func() -> string`: {e}"
                        )
                    })?;
                    Some(f.call_async(&mut store, ()).await?.0)
                }
            };
            // Optional (0.1.5), and not called here: only its type is checked,
            // so that a wrong one refuses the plugin now, not at an upgrade.
            if let Some(f) = instance.get_func(&mut store, crate::migration::EXPORT) {
                f.typed::<crate::migration::Params, crate::migration::Results>(&store)
                    .map_err(|e| {
                        wasmtime::format_err!(
                            "the export `{}` must be `func(ctx: context, previous: \
                             option<string>) -> result<string, plugin-error>`: {e}",
                            crate::migration::EXPORT
                        )
                    })?;
            }
            wasmtime::Result::<_>::Ok((manifest, schema))
        };
        let too_slow = || {
            refused(format!(
                "manifest() and settings-schema() did not return within {} ms; they must only \
                 describe the plugin",
                MANIFEST_DEADLINE.as_millis()
            ))
        };
        let (manifest, schema) = match tokio::time::timeout(MANIFEST_DEADLINE, run).await {
            Err(_) => return Err(too_slow()),
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                if let Some(import) = called_import(&e) {
                    return Err(refused(format!(
                        "{phase} called the host import `{import}`; it must not call any \
                         import (it runs once per plugin version, for no tenant)"
                    )));
                }
                let err = crate::error::classify_error(
                    e,
                    &store.data().limiter,
                    limits.resources,
                    &stderr,
                    MANIFEST_DEADLINE,
                );
                return Err(match err {
                    crate::error::InvokeError::Deadline(_) => too_slow(),
                    crate::error::InvokeError::Busy(why) => LoadError::Busy(why),
                    other => refused(format!("{phase} failed: {other}")),
                });
            }
        };
        Manifest::from_wit(manifest, schema).map_err(refused)
    }

    fn cache_path(&self, digest: &str) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        // Compiled code is only valid for the same wasmtime and settings.
        let mut h = std::hash::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        Some(dir.join(format!("{digest}-{:016x}.cwasm", h.finish())))
    }

    /// `tenant`'s budgets: the ones its other instances hold, or new ones.
    pub(crate) fn budgets(&self, tenant: &str) -> Arc<crate::limits::TenantBudgets> {
        let mut all = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = all.get(tenant).and_then(std::sync::Weak::upgrade) {
            return b;
        }
        // Forget budgets no instance holds any more, now and then.
        if all.len() > 64 && all.len().is_power_of_two() {
            all.retain(|_, w| w.strong_count() > 0);
        }
        let b = Arc::new(crate::limits::TenantBudgets::new(&self.budget_rates));
        all.insert(tenant.to_owned(), Arc::downgrade(&b));
        b
    }

    /// Distinct HTTP clients built (for tests and status).
    pub fn http_clients(&self) -> usize {
        self.clients.len()
    }

    /// The wasmtime engine (for embedders and benchmarks).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// Creates the cache directory private to this user, and refuses one that
/// others can write: whoever can write there can make the daemon run any
/// native code, since cached code is loaded without re-validation.
fn prepare_cache_dir(dir: &Path) -> wasmtime::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| wasmtime::format_err!("creating compile cache {}: {e}", dir.display()))?;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(wasmtime::format_err!(
                "compile cache {} is writable by group or others (mode {:o}); \
                 use a directory only this user can write (chmod 700)",
                dir.display(),
                mode & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)?;
    Ok(())
}

/// The compiled component, and whether it came from the cache.
fn compile_cached(
    engine: &Engine,
    wasm: &[u8],
    cache: Option<PathBuf>,
) -> Result<(Component, bool), LoadError> {
    let Some(path) = cache else {
        return Component::new(engine, wasm)
            .map(|c| (c, false))
            .map_err(|e| LoadError::Compile(format!("{e:#}")));
    };
    if path.exists() {
        // SAFETY: the file was written by `write_cache` below from
        // `Engine::precompile_component` output for this engine's settings
        // (its name carries the compatibility hash), in a directory only the
        // daemon writes to.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => return Ok((c, true)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cache entry")
            }
        }
    }
    let compiled = engine
        .precompile_component(wasm)
        .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
    write_cache(&path, &compiled)?;
    // SAFETY: the bytes were just produced by this engine.
    unsafe { Component::deserialize(engine, &compiled) }
        .map(|c| (c, false))
        .map_err(|e| LoadError::Compile(format!("{e:#}")))
}

fn write_cache(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    // Write then rename, so a concurrent reader or
    // a crash never sees half a file. The temporary name is unique per
    // write: two tenants loading the same plugin at once must not collide.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| LoadError::Cache(format!("writing {}: {e}", path.display())))
}

#[cfg(test)]
mod import_tests {
    use super::supported_import;

    #[test]
    fn imports_are_matched_by_package_and_major_version() {
        assert!(supported_import("switchyard:plugin/http@0.1.4"));
        assert!(supported_import("switchyard:plugin/http@0.1.9"));
        assert!(supported_import("wasi:io/poll@0.2.12"));
        assert!(supported_import("wasi:sockets/tcp@0.2.0"));
        assert!(!supported_import("wasi:http/types@0.2.9"));
        assert!(!supported_import("switchyard:plugin/http@0.2.0"));
        assert!(!supported_import("wasi:io/poll@0.20.0"));
        assert!(!supported_import("wasi:io/poll"));
        assert!(!supported_import("acme:evil/steal@0.1.0"));
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::prepare_cache_dir;

    #[test]
    fn cache_dir_is_private_and_shared_ones_are_refused() {
        let base = std::env::temp_dir().join(format!("sy-cache-test-{}", std::process::id()));
        let private = base.join("private");
        prepare_cache_dir(&private).unwrap();
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        let shared = base.join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = prepare_cache_dir(&shared).unwrap_err().to_string();
        assert!(err.contains("writable by group or others"), "{err}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
