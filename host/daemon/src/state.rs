//! The running state: every tenant's instances built from the configuration
//! and the plugin catalog, swapped whole on reload.
//!
//! A request works on the snapshot it started with ([`Live::current`]), so
//! in-flight invocations finish on the old configuration while new ones see
//! the new. What must outlive a reload — metrics, the list of running jobs,
//! pauses set through the API, the loaded plugins — lives in [`Live`] and is
//! shared by every snapshot.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use switchyard_runtime::grants;
use switchyard_runtime::{Instance, Runtime};
use switchyard_store::prelude::*;
use switchyard_store::{SecretStore, TenantConcurrency, WantedSchedule};

use crate::clock::now_ms;
use crate::config::check::grant_of;
use crate::config::{Config, InvocationsConfig, JobsConfig, RetentionConfig};
use crate::metrics::Metrics;
use crate::plugins::Catalog;
use crate::problem::{self, Problem};
use crate::webhook::verify::{RouteConfig, route_config};

/// The state backend the daemon was configured with.
pub type Db = Arc<dyn StateBackend>;

/// One configured instance.
pub struct InstanceState {
    /// The runtime instance.
    pub instance: Instance,
    /// Scheduled jobs: name → interval in seconds.
    pub jobs: BTreeMap<String, u32>,
    /// Webhook routes by name, with their verification.
    pub routes: BTreeMap<String, RouteConfig>,
    /// Whether the tenant file starts it paused (an API pause overrides).
    paused_by_config: bool,
}

/// One configured tenant.
pub struct TenantState {
    /// Tenant role → plugin roles.
    pub roles: BTreeMap<String, Vec<String>>,
    /// Instances by id.
    pub instances: BTreeMap<String, InstanceState>,
    /// What the tenant was built from, when a reload may keep it as it is
    /// (None: it reads other files, or part of it failed).
    source: Option<TenantSource>,
}

/// What a built tenant depends on. A reload keeps the tenant (instances,
/// token caches and all) while these are the same and each instance still
/// resolves to the plugin build it runs.
#[derive(PartialEq, Eq)]
struct TenantSource {
    server: [u8; 32],
    file: [u8; 32],
    secrets: Option<String>,
}

/// Pauses set through the API, by (tenant, instance): persisted, loaded
/// once at start, and shared by every snapshot so that a pause set while a
/// reload is being built is not lost when the new snapshot is swapped in.
#[derive(Default)]
pub struct Pauses(RwLock<BTreeMap<(String, String), bool>>);

impl Pauses {
    fn get(&self, tenant: &str, instance: &str) -> Option<bool> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(tenant.to_owned(), instance.to_owned()))
            .copied()
    }

    /// Every API pause and resume.
    fn snapshot(&self) -> Vec<((String, String), bool)> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Replaces every API pause and resume with `states` (read from the
    /// store, which another daemon may have changed).
    pub fn replace_all(&self, states: Vec<(String, String, bool)>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = states
            .into_iter()
            .map(|(t, i, paused)| ((t, i), paused))
            .collect();
    }

    /// Records an API pause or resume (already persisted by the caller).
    pub fn set(&self, tenant: &str, instance: &str, paused: bool) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((tenant.to_owned(), instance.to_owned()), paused);
    }
}

/// Samples refusals for the audit log: refused webhook deliveries, which
/// anyone can send, and calls over a tenant's or instance's share, which
/// its caller can repeat at once, as often as it likes. Writing one row
/// each would let them fill the audit log (and keep its writer busy for
/// everyone). One entry per minute per (instance, action or route,
/// reason) is kept, saying how many were refused since the previous one.
#[derive(Default)]
pub struct RefusalSampler(std::sync::Mutex<BTreeMap<RefusalKind, Sampled>>);

/// (`action` or `webhook`, tenant, instance, action or route, refusal
/// code).
type RefusalKind = (&'static str, String, String, String, String);

/// When the kind was last audited, and how many were left out since.
type Sampled = (i64, u64);

/// How often a kind of refusal is written to the audit log at most.
const REFUSAL_SAMPLE_MS: i64 = 60_000;

impl RefusalSampler {
    /// Whether this refusal gets an audit entry: Some(refusals left out
    /// since the previous entry), or None when it is only counted.
    pub fn sample(
        &self,
        kind: &'static str,
        tenant: &str,
        instance: &str,
        name: &str,
        code: &str,
    ) -> Option<u64> {
        let now = now_ms();
        let key = (
            kind,
            tenant.to_owned(),
            instance.to_owned(),
            name.to_owned(),
            code.to_owned(),
        );
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(key).or_insert((i64::MIN, 0));
        if now.saturating_sub(entry.0) >= REFUSAL_SAMPLE_MS {
            let left_out = entry.1;
            *entry = (now, 0);
            Some(left_out)
        } else {
            entry.1 += 1;
            None
        }
    }

    /// The audit outcome of a sampled refusal: its code, and how many it
    /// stands for.
    pub fn outcome(code: &str, left_out: u64) -> String {
        if left_out > 0 {
            format!("{code} (and {left_out} more since the last entry)")
        } else {
            code.to_owned()
        }
    }
}

/// A job the worker is running, with its latest progress report.
pub struct RunningJob {
    /// Tenant.
    pub tenant: String,
    /// Instance.
    pub instance: String,
    /// Job or route name.
    pub name: String,
    /// When it started (ms since the epoch).
    pub started_ms: i64,
    /// Its latest progress report.
    pub progress: tokio::sync::watch::Receiver<Option<switchyard_runtime::log::Progress>>,
}

/// Jobs running now, by job id.
pub type RunningJobs = std::sync::Mutex<BTreeMap<i64, RunningJob>>;

/// What every snapshot shares, and what survives a reload.
pub struct Shared {
    /// The state backend.
    pub db: Db,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Jobs running now.
    pub running: RunningJobs,
    /// Pauses set through the API.
    pub pauses: Pauses,
    /// Synchronous calls in flight.
    pub admission: crate::admission::Admission,
    /// Wasm slots the runtime was built with: a reload may not need more.
    slots: u32,
    /// Which refused webhook deliveries get an audit entry.
    pub refusals: RefusalSampler,
    /// Set when shutdown begins: worker slots take no further jobs.
    stopping: std::sync::atomic::AtomicBool,
    /// Recent failed console sign-ins.
    pub sign_ins: crate::admission::SignInLimiter,
    /// Wakes the queue worker: something was queued, or an instance
    /// resumed. (Other processes' enqueues are found by its fallback poll.)
    pub wake: tokio::sync::Notify,
    secrets: Arc<SecretStore>,
    // Holds the engine's epoch ticker: without it deadlines stop advancing.
    runtime: Arc<Runtime>,
}

/// A background task that ends when this is dropped, however its owner
/// ends (a job's lease heartbeat, the pause re-reader).
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What [`Shared::follow_other_daemons`] runs; stops when dropped.
pub struct Following {
    _watching: switchyard_store::Watching,
    _refresher: AbortOnDrop,
    _reloader: AbortOnDrop,
}

impl Live {
    /// Follows the changes other daemons sharing the store make, for as
    /// long as the result lives: a job they queue wakes this daemon's
    /// worker, their pauses and resumes replace the cached ones, and a
    /// tenant they reconfigured through the admin API is reloaded here.
    /// None for a store this daemon has to itself (SQLite).
    pub fn follow_other_daemons(self: &Arc<Self>) -> Option<Following> {
        // One task re-reads the pauses, one read at a time, again after any
        // announcement that arrived during a read: reads are applied in the
        // order they were made, and the last one follows the last change.
        // Configuration changes are followed the same way by a reload.
        let reread = Arc::new(tokio::sync::Notify::new());
        let reconfigure = Arc::new(tokio::sync::Notify::new());
        let weak = Arc::downgrade(&self.shared);
        let (poke, poke_config) = (reread.clone(), reconfigure.clone());
        let watching = self.shared.db.watch(Box::new(move |change| match change {
            switchyard_store::Change::JobsQueued => {
                if let Some(shared) = weak.upgrade() {
                    shared.wake.notify_one();
                }
            }
            switchyard_store::Change::PausesChanged => poke.notify_one(),
            switchyard_store::Change::ConfigsChanged => poke_config.notify_one(),
            switchyard_store::Change::Missed => {
                poke.notify_one();
                poke_config.notify_one();
            }
        }))?;
        let weak = Arc::downgrade(&self.shared);
        let refresher = tokio::spawn(async move {
            loop {
                reread.notified().await;
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                match shared.db.paused_states().await {
                    Ok(states) => shared.pauses.replace_all(states),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "re-reading pauses another daemon set; the queue still skips paused \
                         instances, calls follow at the next announcement"
                    ),
                }
                // Resumed instances' jobs, and jobs announced while nobody
                // listened.
                shared.wake.notify_one();
            }
        });
        let weak = Arc::downgrade(self);
        let reloader = tokio::spawn(async move {
            loop {
                reconfigure.notified().await;
                let Some(live) = weak.upgrade() else {
                    return;
                };
                // Unchanged tenants are kept as they are, so a change this
                // daemon made itself (and hears announced) costs a re-read.
                if let Err(e) = live.reload().await {
                    tracing::error!(
                        "applying a configuration change another daemon stored: {e}; the \
                         running configuration is kept"
                    );
                }
            }
        });
        Some(Following {
            _watching: watching,
            _refresher: AbortOnDrop(refresher),
            _reloader: AbortOnDrop(reloader),
        })
    }
}

impl Shared {
    /// The wasm runtime every instance runs on.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The secret store.
    pub fn secrets(&self) -> &SecretStore {
        &self.secrets
    }

    /// Whether shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Marks shutdown as begun.
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Tells the worker to look at the queue now.
    pub fn wake_worker(&self) {
        self.wake.notify_one();
    }
}

/// One snapshot of the configuration, built.
pub struct AppState {
    tenants: BTreeMap<String, Arc<TenantState>>,
    /// Tenants built anew for this snapshot (the others were kept).
    rebuilt: usize,
    /// What survives reloads.
    pub shared: Arc<Shared>,
    /// Queue settings.
    pub jobs: JobsConfig,
    /// Jobs running at once per tenant.
    pub concurrency: TenantConcurrency,
    /// Synchronous invocations at once.
    pub invocations: InvocationsConfig,
    tenant_invocations: BTreeMap<String, usize>,
    /// How long finished work is kept.
    pub retention: RetentionConfig,
    /// How long a shutdown waits for in-flight work.
    pub drain_timeout: std::time::Duration,
    /// The configuration directory.
    pub config_dir: std::path::PathBuf,
    /// Where plugin files are installed.
    pub plugin_dir: std::path::PathBuf,
    /// Whose plugin signatures are trusted.
    pub trust: crate::release::Trust,
    mode: crate::config::Mode,
    catalog: Arc<Catalog>,
    /// Instances the tenant files start paused.
    paused_by_config: std::collections::BTreeSet<switchyard_store::InstanceKey>,
    /// Instances that could not be built, and why.
    failed: BTreeMap<(String, String), Vec<String>>,
    /// Those of `failed` that wait for their plugin to compile (served
    /// once it has, without anyone fixing anything).
    compiling: std::collections::BTreeSet<(String, String)>,
    /// Tenants whose file has errors, and which.
    failed_tenants: BTreeMap<String, Vec<String>>,
    /// Plugin builds to record once this state runs.
    pending_locks: std::sync::Mutex<Vec<switchyard_store::PluginLock>>,
}

impl AppState {
    /// Builds every configured instance: plugins resolved (keeping the
    /// build each instance was set up with), secrets read.
    ///
    /// `file_problems` are the problems found while reading the files: a
    /// tenant whose file has an error is not served. With `strict`
    /// (reload), any tenant or instance that cannot be built fails the
    /// whole build, listing every problem; otherwise (start) it is marked
    /// failed, reported, and everything else is served.
    ///
    /// A tenant of `previous` whose file, server file, secrets and plugin
    /// builds are unchanged is kept as it is, not built again.
    async fn build(
        cfg: &Config,
        file_problems: &[Problem],
        shared: Arc<Shared>,
        catalog: Arc<Catalog>,
        strict: bool,
        previous: Option<&AppState>,
    ) -> anyhow::Result<Self> {
        // A plugin file that is refused (unreadable, not a component, an id
        // it may not have) stops nothing: it is reported and not served.
        for p in catalog.problems() {
            tracing::error!("plugin file refused, not served: {p}");
        }
        shared
            .metrics
            .set_plugin_files_refused(catalog.problems().len());
        let mut failed_tenants: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in file_problems {
            if !p.is_error() {
                tracing::warn!("{p}");
                continue;
            }
            if let Some(tenant) = crate::config::managed::tenant_of_path(&p.file) {
                failed_tenants
                    .entry(tenant)
                    .or_default()
                    .push(p.to_string());
            }
        }
        let locks: BTreeMap<(String, String), switchyard_store::PluginLock> = shared
            .db
            .plugin_locks()
            .await?
            .into_iter()
            .map(|l| ((l.tenant.clone(), l.instance.clone()), l))
            .collect();
        let fingerprints = shared.secrets.fingerprints().await?;
        let mut tenants = BTreeMap::new();
        let mut rebuilt = 0;
        let mut failed = BTreeMap::new();
        let mut compiling = std::collections::BTreeSet::new();
        let mut pending_locks = Vec::new();
        for (tid, t) in &cfg.tenants {
            if failed_tenants.contains_key(tid) {
                continue;
            }
            let source = (!t.reads_other_files()).then(|| TenantSource {
                server: cfg.server_digest,
                file: t.digest,
                secrets: fingerprints.get(tid).cloned(),
            });
            if let Some(kept) = previous
                .and_then(|p| p.tenants.get(tid))
                .filter(|prev| prev.source.is_some() && prev.source == source)
                .filter(|prev| Self::same_builds(tid, prev, t, &catalog, &locks))
            {
                tenants.insert(tid.clone(), kept.clone());
                continue;
            }
            rebuilt += 1;
            let mut instances = BTreeMap::new();
            for index in 0..t.instances.len() {
                let iid = t.instances[index].get_ref().id.get_ref().clone();
                let lock = locks.get(&(tid.clone(), iid.clone()));
                match Self::build_instance(cfg, t, index, &shared, &catalog, lock).await {
                    Ok((state, lock)) => {
                        pending_locks.extend(lock);
                        instances.insert(iid, state);
                    }
                    Err(problems) => {
                        let ic = t.instances[index].get_ref();
                        if ic
                            .plugin_ref()
                            .is_ok_and(|(id, _)| catalog.compiling(&id).is_some())
                        {
                            compiling.insert((tid.clone(), iid.clone()));
                        }
                        failed.insert((tid.clone(), iid), problems);
                    }
                }
            }
            let whole = instances.len() == t.instances.len();
            tenants.insert(
                tid.clone(),
                Arc::new(TenantState {
                    roles: t.roles.clone(),
                    instances,
                    source: source.filter(|_| whole),
                }),
            );
        }
        if strict && (!failed.is_empty() || !failed_tenants.is_empty()) {
            let mut all: Vec<String> = failed_tenants.into_values().flatten().collect();
            all.extend(failed.into_values().flatten());
            anyhow::bail!("{}", all.join("\n"));
        }
        for (t, problems) in &failed_tenants {
            tracing::error!(tenant = %t, "tenant not served: {}", problems.join("; "));
        }
        for ((t, i), problems) in &failed {
            if compiling.contains(&(t.clone(), i.clone())) {
                tracing::info!(tenant = %t, instance = %i, "instance waits: {}", problems.join("; "));
            } else {
                tracing::error!(tenant = %t, instance = %i, "instance not served: {}", problems.join("; "));
            }
        }
        shared
            .metrics
            .set_failed(failed_tenants.len(), failed.len() - compiling.len());
        shared
            .metrics
            .set_compiling(catalog.pending().len(), compiling.len());
        let paused_by_config = tenants
            .iter()
            .flat_map(|(t, ts)| {
                ts.instances
                    .iter()
                    .filter(|(_, i)| i.paused_by_config)
                    .map(move |(i, _)| (t.clone(), i.clone()))
            })
            .collect();
        Ok(Self {
            tenants,
            rebuilt,
            paused_by_config,
            shared,
            jobs: cfg.jobs,
            concurrency: cfg.tenant_concurrency(),
            invocations: cfg.invocations,
            tenant_invocations: cfg
                .tenants
                .values()
                .filter_map(|t| Some((t.id.clone(), t.max_concurrent_invocations?)))
                .collect(),
            retention: cfg.retention,
            drain_timeout: cfg.drain_timeout,
            config_dir: cfg.dir.clone(),
            plugin_dir: cfg.plugin_dir.clone(),
            trust: cfg.trust.clone(),
            mode: cfg.mode,
            catalog,
            failed,
            compiling,
            failed_tenants,
            pending_locks: std::sync::Mutex::new(pending_locks),
        })
    }

    /// Whether every instance of `prev` (tenant `t` as it was built) would
    /// run the same plugin build if built now.
    fn same_builds(
        tid: &str,
        prev: &TenantState,
        t: &crate::config::TenantConfig,
        catalog: &Catalog,
        locks: &BTreeMap<(String, String), switchyard_store::PluginLock>,
    ) -> bool {
        t.instances.iter().all(|ic| {
            let ic = ic.get_ref();
            let iid = ic.id.get_ref();
            let Some(built) = prev.instances.get(iid) else {
                return false;
            };
            let Ok((id, pin)) = ic.plugin_ref() else {
                return false;
            };
            let lock = locks.get(&(tid.to_owned(), iid.clone()));
            catalog
                .resolve_locked(tid, iid, &id, pin.as_ref(), lock, &t.policy(catalog))
                .is_ok_and(|r| {
                    r.record.is_none() && r.entry.digest() == built.instance.plugin().digest()
                })
        })
    }

    /// Builds instance `index` of tenant `t`, or says why it cannot be.
    async fn build_instance(
        cfg: &Config,
        t: &crate::config::TenantConfig,
        index: usize,
        shared: &Shared,
        catalog: &Catalog,
        lock: Option<&switchyard_store::PluginLock>,
    ) -> Result<(InstanceState, Option<switchyard_store::PluginLock>), Vec<String>> {
        let tid = &t.id;
        let ic = t.instances[index].get_ref();
        let at = |m: String| {
            vec![format!(
                "{}: instance `{}`: {m}",
                t.file.display(),
                ic.id.get_ref()
            )]
        };
        let (id, pin) = ic.plugin_ref().map_err(at)?;
        let resolved = catalog
            .resolve_locked(
                tid,
                ic.id.get_ref(),
                &id,
                pin.as_ref(),
                lock,
                &t.policy(catalog),
            )
            .map_err(at)?;
        if let Some(note) = &resolved.note {
            tracing::warn!(tenant = %tid, instance = %ic.id.get_ref(), "{note}");
        }
        let plugin = resolved.entry.plugin.clone();
        let manifest = plugin.manifest();
        let problems: Vec<String> = cfg
            .check_instance_against(t, index, manifest)
            .into_iter()
            .filter(|p| {
                if !p.is_error() {
                    tracing::warn!("{p}");
                }
                p.is_error()
            })
            .map(|p| p.to_string())
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        let spec = cfg
            .instance_spec(t, index, &shared.secrets)
            .await
            .map_err(|e| at(format!("{e:#}")))?;
        let resolver = cfg.resolver(tid, &shared.secrets);
        let mut routes = BTreeMap::new();
        for (route, hook) in &ic.webhooks {
            let Some(spec) = manifest.webhooks.iter().find(|w| &w.route == route) else {
                return Err(at(format!("plugin has no webhook route `{route}`")));
            };
            let what = format!("{tid}/{} webhooks.{route}", ic.id.get_ref());
            let rc = route_config(hook.get_ref(), spec.mode == "synchronous", &resolver, &what)
                .await
                .map_err(|e| at(format!("{e:#}")))?;
            routes.insert(route.clone(), rc);
        }
        // Only the jobs the tenant file schedules run on a schedule.
        let jobs = grant_of(ic, None)
            .jobs
            .iter()
            .filter_map(|j| Some((j.name.to_owned(), grants::job_interval_secs(manifest, j)?)))
            .collect();
        let instance = Instance::new(&shared.runtime, plugin, spec, shared.db.clone())
            .map_err(|e| at(e.to_string()))?;
        Ok((
            InstanceState {
                instance,
                jobs,
                routes,
                paused_by_config: ic.paused,
            },
            resolved.record,
        ))
    }

    /// Why an instance (or its whole tenant) is not served, if it is not.
    pub fn failure(&self, tenant: &str, instance: &str) -> Option<&[String]> {
        self.failed_tenants
            .get(tenant)
            .or_else(|| self.failed.get(&(tenant.to_owned(), instance.to_owned())))
            .map(Vec::as_slice)
    }

    /// Whether `instance` waits for its plugin to compile (see
    /// [`Live::start`]); [`AppState::failure`] says which plugin.
    pub fn is_compiling(&self, tenant: &str, instance: &str) -> bool {
        self.compiling
            .contains(&(tenant.to_owned(), instance.to_owned()))
    }

    /// The answer to a call of an instance that is not served: 503, with
    /// a short `Retry-After` while its plugin compiles.
    pub fn unserved(
        &self,
        tenant: &str,
        instance: &str,
        request_id: &str,
    ) -> Option<crate::errors::ApiError> {
        let problems = self.failure(tenant, instance)?;
        Some(if self.is_compiling(tenant, instance) {
            crate::errors::compiling(instance, problems, request_id)
        } else {
            crate::errors::not_served(instance, problems, request_id)
        })
    }

    /// Why a tenant is not served, if it is not.
    pub fn tenant_failure(&self, tenant: &str) -> Option<&[String]> {
        self.failed_tenants.get(tenant).map(Vec::as_slice)
    }

    /// Records the plugin builds this state's instances resolved to (once
    /// it is the running state).
    async fn commit_locks(&self) -> anyhow::Result<()> {
        let locks =
            std::mem::take(&mut *self.pending_locks.lock().unwrap_or_else(|p| p.into_inner()));
        self.shared.db.set_plugin_locks(locks).await?;
        Ok(())
    }

    /// Tenant `id`'s text parsed on its own (for showing it), or None when
    /// it does not parse.
    pub fn parse_tenant_text(&self, id: &str, text: String) -> Option<crate::config::TenantConfig> {
        let source = crate::config::TenantSource {
            mode: self.mode,
            limits: None,
            dir: &self.config_dir,
            managed: None,
        };
        source.parse(
            id.to_owned(),
            std::path::PathBuf::from("tenants").join(format!("{id}.toml")),
            text,
            &mut Vec::new(),
        )
    }

    /// The instances of `tenant` that could not be built.
    pub fn failed_instances(&self, tenant: &str) -> Vec<String> {
        self.failed
            .keys()
            .filter(|(t, _)| t == tenant)
            .map(|(_, i)| i.clone())
            .collect()
    }

    /// The state backend.
    pub fn db(&self) -> &Db {
        &self.shared.db
    }

    /// A tenant.
    pub fn tenant(&self, tenant: &str) -> Option<&TenantState> {
        self.tenants.get(tenant).map(|t| &**t)
    }

    /// Tenants by id.
    pub fn tenants(&self) -> &BTreeMap<String, Arc<TenantState>> {
        &self.tenants
    }

    /// An instance of a tenant.
    pub fn instance_state(&self, tenant: &str, instance: &str) -> Option<&InstanceState> {
        self.tenants.get(tenant)?.instances.get(instance)
    }

    /// The runtime instance `instance` of `tenant`.
    pub fn instance(&self, tenant: &str, instance: &str) -> Option<&Instance> {
        Some(&self.instance_state(tenant, instance)?.instance)
    }

    /// Whether an instance is paused (unknown instances count as paused).
    pub fn is_paused(&self, tenant: &str, instance: &str) -> bool {
        match self.instance_state(tenant, instance) {
            None => true,
            Some(i) => self
                .shared
                .pauses
                .get(tenant, instance)
                .unwrap_or(i.paused_by_config),
        }
    }

    /// The limits a synchronous call of `tenant` is admitted under.
    pub fn admission_limits(&self, tenant: &str) -> crate::admission::Limits {
        crate::admission::Limits {
            total: self.invocations.max_concurrent,
            per_tenant: self
                .tenant_invocations
                .get(tenant)
                .copied()
                .unwrap_or(self.invocations.per_tenant),
            per_instance: self.invocations.per_instance,
        }
    }

    /// Admits a synchronous call, or refuses it (see [`crate::admission`]).
    pub fn admit(
        &self,
        tenant: &str,
        instance: &str,
    ) -> Result<crate::admission::Admitted, crate::admission::Refused> {
        self.shared
            .admission
            .try_enter(tenant, instance, &self.admission_limits(tenant))
    }

    /// Instances that are paused now, whose queued jobs wait.
    /// Costs what is paused, not what is configured: it runs for every
    /// lease.
    /// Instances that failed to build are in it too: their work waits.
    pub fn paused_instances(&self) -> std::collections::BTreeSet<switchyard_store::InstanceKey> {
        let mut out = self.paused_by_config.clone();
        out.extend(self.failed.keys().cloned());
        for ((t, i), paused) in self.shared.pauses.snapshot() {
            if self.instance_state(&t, &i).is_none() {
                continue;
            }
            if paused {
                out.insert((t, i));
            } else {
                out.remove(&(t, i));
            }
        }
        out
    }

    /// The schedules the configuration asks for.
    pub fn wanted_schedules(&self) -> Vec<WantedSchedule> {
        let mut out = Vec::new();
        for (t, ts) in &self.tenants {
            for (i, inst) in &ts.instances {
                for (job, secs) in &inst.jobs {
                    out.push(WantedSchedule {
                        tenant: t.clone(),
                        instance: i.clone(),
                        job: job.clone(),
                        interval_ms: i64::from(*secs) * 1000,
                    });
                }
            }
        }
        out
    }

    /// The installed plugins (every version).
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// `(tenants, instances)` configured.
    pub fn counts(&self) -> (usize, usize) {
        let instances = self.tenants.values().map(|t| t.instances.len()).sum();
        (self.tenants.len(), instances)
    }
}

/// The running state, swapped whole on reload.
pub struct Live {
    state: arc_swap::ArcSwap<AppState>,
    dir: std::path::PathBuf,
    shared: Arc<Shared>,
    reloading: tokio::sync::Mutex<()>,
}

impl Live {
    /// Builds the first state from `cfg` (loaded from `cfg.dir`).
    /// `file_problems` are what [`Config::parse`] found: tenants with
    /// errors are not served (see [`AppState::failures`]).
    ///
    /// With `compile_in_background`, a plugin that is not in the compile
    /// cache is compiled after this returns, smallest first, and each is
    /// swapped in (as a reload would) when it is ready: the other tenants
    /// are served meanwhile, and the instances that wait for it answer
    /// 503 `plugin_compiling` with `Retry-After`. Without it, every plugin
    /// is compiled before this returns.
    pub async fn start(
        cfg: &Config,
        file_problems: &[Problem],
        runtime: Arc<Runtime>,
        db: Db,
        secrets: Arc<SecretStore>,
        compile_in_background: bool,
    ) -> anyhow::Result<Arc<Self>> {
        let pauses = Pauses::default();
        for (t, i, paused) in db.paused_states().await? {
            pauses.set(&t, &i, paused);
        }
        let shared = Arc::new(Shared {
            db,
            metrics: Arc::new(Metrics::default()),
            running: RunningJobs::default(),
            pauses,
            refusals: RefusalSampler::default(),
            sign_ins: Default::default(),
            admission: Default::default(),
            slots: cfg.wasm_slots(),
            wake: tokio::sync::Notify::new(),
            stopping: Default::default(),
            secrets,
            runtime,
        });
        let catalog = Arc::new(
            Catalog::load_with(
                &shared.runtime,
                &cfg.plugin_dir,
                &cfg.trust,
                None,
                &[],
                compile_in_background,
            )
            .await,
        );
        let state =
            AppState::build(cfg, file_problems, shared.clone(), catalog, false, None).await?;
        state.commit_locks().await?;
        let live = Arc::new(Self {
            state: arc_swap::ArcSwap::from_pointee(state),
            dir: cfg.dir.clone(),
            shared,
            reloading: tokio::sync::Mutex::new(()),
        });
        if !live.current().catalog().pending().is_empty() {
            tokio::spawn(live.clone().compile_pending());
        }
        Ok(live)
    }

    /// Compiles the plugins the running state waits for, smallest first
    /// (so that small plugins are not kept waiting behind a large one),
    /// and swaps each in when it is ready.
    ///
    /// The swap is a reload that reads the configuration again, in the
    /// manner of a start: a tenant that cannot be built is reported and
    /// the others are served (a strict reload would refuse the whole
    /// configuration for a tenant that already failed at start).
    async fn compile_pending(self: Arc<Self>) {
        let mut done: Vec<crate::plugins::Compiled> = Vec::new();
        loop {
            if self.shared.stopping() {
                return;
            }
            let st = self.current();
            let next = st
                .catalog()
                .pending()
                .iter()
                .filter(|p| !done.iter().any(|(d, _)| d == &p.digest))
                .min_by_key(|p| p.bytes.len())
                .cloned();
            drop(st);
            let Some(next) = next else { return };
            tracing::info!(
                plugin = %next.id,
                source = %next.source,
                bytes = next.bytes.len(),
                "compiling a plugin in the background; its instances are served once it is ready"
            );
            let result = self
                .shared
                .runtime
                .load(&next.bytes)
                .await
                .map_err(|e| e.to_string());
            done.push((next.digest.clone(), result));
            match self.rebuild(None, Some(&done)).await {
                Ok(applied) => tracing::info!(
                    plugin = %next.id,
                    "swapped in a compiled plugin: {}",
                    applied.summary
                ),
                Err(e) => {
                    // The running state stays; the operator's next reload
                    // picks the plugin up from the compile cache.
                    tracing::error!(
                        plugin = %next.id,
                        "a compiled plugin is not swapped in, because the configuration does \
                         not load now (fix it and reload): {e:?}"
                    );
                    return;
                }
            }
        }
    }

    /// The current state.
    pub fn current(&self) -> Arc<AppState> {
        self.state.load_full()
    }

    /// What every snapshot shares.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Loads the configuration directory (and the API-managed tenants)
    /// again and swaps it in, or returns every problem and keeps the
    /// running state.
    pub async fn reload(&self) -> Result<String, String> {
        match self.rebuild(None, None).await {
            Ok(done) => Ok(done.summary),
            Err(ApplyError::Failed(why)) => Err(why),
            Err(other) => Err(format!("{other:?}")),
        }
    }

    /// Checks `change` exactly as `switchyard check` would, stores it as
    /// the tenant's next configuration version and applies it; or changes
    /// nothing and says why.
    pub async fn apply(&self, change: ConfigChange<'_>) -> Result<Applied, ApplyError> {
        self.rebuild(Some(change), None).await
    }

    /// Reads the configuration again and swaps in the state it builds: a
    /// reload (every plugin compiled now, any problem refuses the whole
    /// configuration), or with `compiled`, the swap of
    /// [`Live::compile_pending`].
    async fn rebuild(
        &self,
        change: Option<ConfigChange<'_>>,
        compiled: Option<&[crate::plugins::Compiled]>,
    ) -> Result<Applied, ApplyError> {
        let _one_at_a_time = self.reloading.lock().await;
        let dir = self.dir.clone();
        // Reading the files blocks; keep it off the executor's workers.
        // A swap reads the files as a start does: tenants whose file has
        // errors are reported and not served.
        let strict = compiled.is_none();
        let (mut cfg, mut problems) = tokio::task::spawn_blocking(move || {
            Config::parse(&dir).and_then(|(cfg, problems)| {
                if strict && problems.iter().any(Problem::is_error) {
                    Err(problems)
                } else {
                    Ok((cfg, problems))
                }
            })
        })
        .await
        .map_err(|e| ApplyError::Failed(format!("reading the configuration failed: {e}")))?
        .map_err(|problems| ApplyError::Failed(problem::render(&problems)))?;
        if cfg.wasm_slots() > self.shared.slots {
            return Err(ApplyError::Failed(format!(
                "[jobs] workers + [invocations] max_concurrent need {} wasm slots; this daemon \
                 was started with {}: restart it to raise them",
                cfg.wasm_slots(),
                self.shared.slots
            )));
        }
        let mut managed = self
            .shared
            .db
            .managed_configs()
            .await
            .map_err(|e| ApplyError::Failed(format!("reading API-managed tenants: {e}")))?;
        let mut before = None;
        if let Some(ch) = &change {
            if let Some(t) = cfg.tenants.get(ch.tenant) {
                return Err(ApplyError::FileManaged(t.file.clone()));
            }
            let at = managed.iter().position(|v| v.tenant == ch.tenant);
            let current = at.map_or(0, |i| managed[i].version);
            if current != ch.expected {
                return Err(ApplyError::Conflict(current));
            }
            let next = switchyard_store::ConfigVersion {
                tenant: ch.tenant.to_owned(),
                version: current + 1,
                text: ch.text.clone(),
                author: ch.author.to_owned(),
                comment: ch.comment.to_owned(),
                created_at: 0,
            };
            match at {
                Some(i) => before = Some(std::mem::replace(&mut managed[i], next)),
                None => managed.push(next),
            }
        }
        cfg.add_managed(&managed, &mut problems);
        let previous = self.current();
        let catalog = Arc::new(
            Catalog::load_with(
                &self.shared.runtime,
                &cfg.plugin_dir,
                &cfg.trust,
                Some(&previous.catalog),
                compiled.unwrap_or_default(),
                !strict,
            )
            .await,
        );
        let mut warnings = Vec::new();
        let mut version = None;
        if let Some(ch) = &change {
            let mine = self
                .check_change(ch, &cfg, &catalog, before, &mut problems)
                .await;
            if mine.iter().any(Problem::is_error) {
                return Err(ApplyError::Invalid(mine));
            }
            warnings = mine;
        }
        // An API-managed tenant whose stored version no longer passes (a
        // plugin it names was removed) is not served; the others are.
        let state = AppState::build(
            &cfg,
            &problems,
            self.shared.clone(),
            catalog,
            strict,
            Some(&previous),
        )
        .await
        .map_err(|e| match &change {
            // The change passed its checks but an instance of it cannot be
            // built (a setting the plugin itself refuses): the change's
            // fault, and nothing is stored.
            Some(ch) => ApplyError::Invalid(vec![Problem::file(
                crate::config::managed::path_of(ch.tenant),
                "(tenant)",
                format!("{e:#}"),
            )]),
            None => ApplyError::Failed(format!("{e:#}")),
        })?;
        drop(previous);
        if let Some(ch) = &change {
            // Stored only once it is known to build; a change stored by
            // someone else meanwhile wins and this one is refused.
            version = Some(
                self.shared
                    .db
                    .put_config(ch.tenant, ch.expected, &ch.text, ch.author, ch.comment)
                    .await
                    .map_err(|e| ApplyError::Failed(format!("storing the configuration: {e}")))?
                    .ok_or(ApplyError::Conflict(ch.expected + 1))?,
            );
        }
        let mut wanted = state.wanted_schedules();
        if !strict {
            // An instance that is configured but not served now (its plugin
            // compiles, or it cannot be built) keeps its schedule as it is:
            // it is not due again merely because of this swap.
            let stored = self
                .shared
                .db
                .due_schedules(i64::MAX)
                .await
                .map_err(|e| ApplyError::Failed(e.to_string()))?;
            wanted.extend(
                stored
                    .into_iter()
                    .filter(|s| state.failure(&s.tenant, &s.instance).is_some())
                    .map(|s| WantedSchedule {
                        tenant: s.tenant,
                        instance: s.instance,
                        job: s.job,
                        interval_ms: s.interval_ms,
                    }),
            );
        }
        self.shared
            .db
            .sync_schedules(wanted, now_ms())
            .await
            .map_err(|e| ApplyError::Failed(e.to_string()))?;
        let (tenants, instances) = state.counts();
        let state = Arc::new(state);
        self.state.store(state.clone());
        state
            .commit_locks()
            .await
            .map_err(|e| ApplyError::Failed(format!("{e:#}")))?;
        let rebuilt = state.rebuilt;
        drop(cfg);
        release_freed_memory();
        tracing::info!(tenants, instances, rebuilt, "configuration reloaded");
        Ok(Applied {
            summary: format!(
                "{tenants} tenant(s), {instances} instance(s); {rebuilt} tenant(s) rebuilt"
            ),
            version,
            warnings,
        })
    }

    /// Every problem of the changed tenant: its own checks (already in
    /// `problems`) and [`Config::check_managed_change`].
    async fn check_change(
        &self,
        ch: &ConfigChange<'_>,
        cfg: &Config,
        catalog: &Catalog,
        before: Option<switchyard_store::ConfigVersion>,
        problems: &mut [Problem],
    ) -> Vec<Problem> {
        let mut mine: Vec<Problem> = problems
            .iter()
            .filter(|p| {
                crate::config::managed::tenant_of_path(&p.file).as_deref() == Some(ch.tenant)
            })
            .cloned()
            .collect();
        let Some(t) = cfg.tenants.get(ch.tenant) else {
            return mine; // it did not parse
        };
        let before = if ch.by_operator {
            None
        } else {
            Some(before.and_then(|v| cfg.parse_managed(&v)))
        };
        mine.extend(
            cfg.check_managed_change(
                t,
                catalog,
                &self.shared.secrets,
                before.as_ref().map(Option::as_ref),
            )
            .await,
        );
        mine
    }
}

/// A new configuration for an API-managed tenant (see [`Live::apply`]).
pub struct ConfigChange<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// The version the change was made from (0: the tenant is new).
    pub expected: i64,
    /// The tenant file's text.
    pub text: String,
    /// Who (see `Caller::author`).
    pub author: &'a str,
    /// Why.
    pub comment: &'a str,
    /// Whether an operator made it: only operators may change what
    /// `managed::operator_only_changes` lists.
    pub by_operator: bool,
}

/// A change applied by [`Live::apply`].
#[derive(Debug)]
pub struct Applied {
    /// What runs now, for people.
    pub summary: String,
    /// The tenant's new configuration version.
    pub version: Option<i64>,
    /// Warnings about the changed tenant.
    pub warnings: Vec<Problem>,
}

/// Why [`Live::apply`] changed nothing.
#[derive(Debug)]
pub enum ApplyError {
    /// The configuration has problems (each with its field).
    Invalid(Vec<Problem>),
    /// The tenant's newest version is this one, not the one the change was
    /// made from.
    Conflict(i64),
    /// The tenant has this file: the API may not change it.
    FileManaged(std::path::PathBuf),
    /// The tenant is not managed through the API, and only an operator
    /// may bring it under it.
    NotManaged,
    /// Something else failed (the operator's files, the store).
    Failed(String),
}

/// Returns the heap memory freed after a (re)load to the system. Loading
/// 10,000 tenant files parses megabytes that are freed once the instances
/// are built, and glibc keeps freed memory inside its heap (where the
/// resident size still counts it) until asked. Without glibc this does
/// nothing.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists; it takes the
    // allocator's locks like any malloc call.
    unsafe {
        libc::malloc_trim(0);
    }
}
