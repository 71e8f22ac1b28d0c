//! Plugin instances (a plugin enabled for one tenant) and the bounded path
//! every call takes: fresh Store, instantiate from `InstancePre`, call, drop.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchyard_store::{KvBackend, Namespace};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::bindings::{Plugin as Bindings, types};
use crate::call::{CallState, EgressRecord, LogRecord, Progress};
use crate::config::ConfigCtx;
use crate::credentials::{CredentialSpec, CredentialsCtx};
use crate::egress::EgressPolicy;
use crate::error::{InvokeError, classify_error};
use crate::http::HttpCtx;
use crate::limits::{Limiter, Limits};
use crate::manifest::Manifest;
use crate::migration::Migrated;
use crate::runtime::{Plugin, Runtime};
use crate::state::{InstanceCtx, StoreState};
use crate::storage::StorageCtx;

/// How much of the guest's stderr (where Rust panics print) is kept to
/// explain a trap.
const STDERR_CAPTURE_BYTES: usize = 16 * 1024;

/// Everything the host needs to run a plugin for one tenant. Secrets arrive
/// here already resolved; the daemon or CLI reads them from the secret store.
#[derive(Debug)]
pub struct InstanceSpec {
    /// Tenant id.
    pub tenant: String,
    /// Instance id, unique within the tenant.
    pub instance: String,
    /// Configuration values (validated against the manifest).
    pub config: BTreeMap<String, String>,
    /// Egress allowlist entries.
    pub egress: Vec<String>,
    /// Extra trusted CA certificates, PEM.
    pub ca_certs_pem: Vec<String>,
    /// Bound credentials.
    pub credentials: Vec<CredentialSpec>,
    /// Execution limits, the storage quota among them.
    pub limits: Limits,
}

impl InstanceSpec {
    /// A spec with no configuration, no egress and no credentials.
    pub fn new(tenant: impl Into<String>, instance: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            instance: instance.into(),
            config: BTreeMap::new(),
            egress: Vec::new(),
            ca_certs_pem: Vec::new(),
            credentials: Vec::new(),
            limits: Limits::default(),
        }
    }
}

/// An instance spec that does not fit the plugin's manifest; every problem
/// found is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instance {tenant}/{instance}: {}", problems.join("; "))]
pub struct SpecError {
    /// Tenant id.
    pub tenant: String,
    /// Instance id.
    pub instance: String,
    /// What is wrong, one entry per problem.
    pub problems: Vec<String>,
}

/// Who asked, as the caller authenticated them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Actor id (user name, system id).
    pub id: String,
    /// E-mail address, when known.
    #[serde(default)]
    pub email: Option<String>,
    /// Roles after the tenant's role mapping.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Per-call options.
#[derive(Default)]
pub struct CallOptions {
    /// Request id for logs and audit; generated when empty.
    pub request_id: String,
    /// The actor, for actions.
    pub actor: Option<Actor>,
    /// Receives progress reports while the call runs.
    pub progress: Option<tokio::sync::watch::Sender<Option<Progress>>>,
}

/// What an invocation did besides its result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Request id used.
    pub request_id: String,
    /// Wall-clock time of the call, instantiation included.
    pub duration_ms: u64,
    /// The same, exactly (metrics want seconds as a float: a call of
    /// 300 µs is not 0).
    #[serde(skip)]
    pub duration: Duration,
    /// Outbound requests, denied ones included: the first
    /// [`EGRESS_ITEMISED`] of them (the first request budget + 1, if that
    /// is fewer).
    pub egress: Vec<EgressRecord>,
    /// Outbound requests past the itemised ones, counted by outcome, so
    /// that a long job's memory does not grow with its requests.
    pub egress_omitted: std::collections::BTreeMap<String, u64>,
    /// Log records kept.
    pub logs: Vec<LogRecord>,
    /// Log records dropped over the budget.
    pub logs_dropped: u32,
    /// Last progress report.
    pub progress: Option<Progress>,
    /// Whether the plugin marked the error it returned permanent or
    /// transient (`invocation.mark-error`); None when it did not.
    pub retry: Option<crate::call::RetryMark>,
    /// When a job asked to run again (`invocation.run-again`): after this
    /// many seconds (at most [`crate::invocation::MAX_RUN_AGAIN_SECS`]).
    pub run_again_secs: Option<u32>,
    /// The size the call's largest linear memory reached, in bytes (its
    /// initial size included): how close the plugin came to the memory
    /// limit.
    pub memory_bytes: u64,
    /// The storage migration step this call waited for, when it ran one
    /// (its egress and log records come first in this report's).
    pub migrated: Option<Migrated>,
}

impl Report {
    /// Puts what the migration step before a call did in front of what the
    /// call did.
    fn after(mut self, first: Report, migrated: Migrated) -> Report {
        let mut egress = first.egress;
        egress.append(&mut self.egress);
        self.egress = egress;
        for (outcome, n) in first.egress_omitted {
            *self.egress_omitted.entry(outcome).or_default() += n;
        }
        let mut logs = first.logs;
        logs.append(&mut self.logs);
        self.logs = logs;
        self.logs_dropped += first.logs_dropped;
        self.memory_bytes = self.memory_bytes.max(first.memory_bytes);
        self.migrated = Some(migrated);
        self
    }
}

/// The result of a call and its report (which exists even when it failed:
/// the egress records of a trapped call still go to the audit log).
#[derive(Debug)]
pub struct Invocation<T> {
    /// What the plugin returned, or why it did not.
    pub result: Result<T, InvokeError>,
    /// What happened on the way.
    pub report: Report,
}

impl<T> Invocation<T> {
    /// This invocation, after the migration step `before` (if one ran).
    fn after(self, before: Option<(Report, Migrated)>) -> Self {
        match before {
            None => self,
            Some((first, migrated)) => Invocation {
                result: self.result,
                report: self.report.after(first, migrated),
            },
        }
    }

    /// The same invocation with its result passed through `f`.
    fn map<U>(self, f: impl FnOnce(T) -> Result<U, InvokeError>) -> Invocation<U> {
        Invocation {
            result: self.result.and_then(f),
            report: self.report,
        }
    }
}

/// Checks `spec` against the manifest (declared and granted, see
/// [`crate::grants`]) and returns the configuration the instance sees.
fn validate_spec(
    manifest: &Manifest,
    spec: &InstanceSpec,
) -> Result<BTreeMap<String, String>, Vec<String>> {
    let grant = crate::grants::Grant {
        config: spec
            .config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        credentials: spec
            .credentials
            .iter()
            .map(|c| (c.name.as_str(), c.secret.kind()))
            .collect(),
        ..Default::default()
    };
    let problems: Vec<String> = crate::grants::check(manifest, &grant)
        .into_iter()
        .filter(|p| p.severity == crate::grants::Severity::Error)
        .map(|p| format!("{}: {}", p.field, p.message))
        .collect();
    if problems.is_empty() {
        Ok(crate::grants::effective_config(manifest, &spec.config))
    } else {
        Err(problems)
    }
}

/// A plugin enabled for one tenant: its capabilities are built once here;
/// each call gets a fresh Store.
#[derive(Clone)]
pub struct Instance {
    engine: Engine,
    plugin: Arc<Plugin>,
    ctx: Arc<InstanceCtx>,
    /// The runtime's gates (see `migration`): this instance's is taken at
    /// its first call, and the others are told when it records a version.
    gates: Arc<crate::migration::Gates>,
}

impl Instance {
    /// Validates `spec` against the plugin's manifest and builds the
    /// instance's capabilities. `backend` holds its storage.
    pub fn new(
        runtime: &Runtime,
        plugin: Arc<Plugin>,
        spec: InstanceSpec,
        backend: Arc<dyn KvBackend>,
    ) -> Result<Self, SpecError> {
        let fail = |problems: Vec<String>| SpecError {
            tenant: spec.tenant.clone(),
            instance: spec.instance.clone(),
            problems,
        };
        let config = validate_spec(plugin.manifest(), &spec).map_err(fail)?;
        let policy = Arc::new(
            EgressPolicy::parse(&spec.egress)
                .map_err(|e| fail(vec![e.to_string()]))?
                .within_declared(crate::grants::declared_destinations(plugin.manifest())),
        );
        let client = runtime
            .clients
            .client(&policy, &spec.ca_certs_pem)
            .map_err(|e| fail(vec![e]))?;
        let http = HttpCtx::new(policy.clone(), client);
        let credentials = CredentialsCtx::new(spec.credentials, http.client().clone(), policy)
            .map_err(|e| SpecError {
                tenant: spec.tenant.clone(),
                instance: spec.instance.clone(),
                problems: vec![e],
            })?
            .with_clock(runtime.clock.clone());
        let budgets = runtime.budgets(&spec.tenant);
        let storage = StorageCtx::new(
            backend,
            Namespace::new(&spec.tenant, &spec.instance),
            spec.limits.quota(),
        )
        .paced_by(budgets.clone());
        Ok(Self {
            engine: runtime.engine.clone(),
            plugin,
            ctx: Arc::new(InstanceCtx {
                tenant: spec.tenant,
                instance: spec.instance,
                limits: spec.limits,
                http,
                credentials,
                storage,
                config: ConfigCtx::new(config),
                budgets,
                long_runners: runtime.long_runners.handle().clone(),
                clock: runtime.clock.clone(),
                migration: std::sync::OnceLock::new(),
            }),
            gates: runtime.migration_gates.clone(),
        })
    }

    /// The plugin this instance runs.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The instance's limits.
    pub fn limits(&self) -> &Limits {
        &self.ctx.limits
    }

    /// Runs `action` with `input` (JSON text) and returns the plugin's JSON.
    pub async fn invoke(&self, action: &str, input: &str, opts: CallOptions) -> Invocation<String> {
        if let Err(e) = self.admissible(action, input.len()) {
            return self.refused(opts, e);
        }
        let input = match serde_json::from_str::<&RawValue>(input) {
            Ok(raw) => raw,
            Err(e) => {
                return self.refused(
                    opts,
                    InvokeError::InvalidInput(format!("input is not JSON: {e}")),
                );
            }
        };
        self.invoke_json(action, input, opts)
            .await
            .map(|out| Ok(Box::<str>::from(out).into_string()))
    }

    /// [`Instance::invoke`] for input already parsed as JSON (a field of a
    /// request body, say): the text goes to the guest as it is, and the
    /// output comes back checked once, ready to embed without re-parsing.
    pub async fn invoke_json(
        &self,
        action: &str,
        input: &RawValue,
        opts: CallOptions,
    ) -> Invocation<Box<RawValue>> {
        if let Err(e) = self.admissible(action, input.get().len()) {
            return self.refused(opts, e);
        }
        if let Err(problems) = self.plugin.schemas.check(action, input) {
            return self.refused(opts, InvokeError::InputSchema(problems));
        }
        let (opts, before) = match self.storage_current(opts).await {
            Ok(ready) => ready,
            Err(failed) => return failed.into(),
        };
        let output_limit = self.ctx.limits.output_bytes;
        let (action, input) = (action.to_owned(), input.get().to_owned());
        let inv = self
            .call(opts, move |b, _, store, ctx| {
                Box::pin(async move { b.call_invoke(store, &ctx, &action, &input).await })
            })
            .await
            .after(before);
        inv.map(|out| {
            if out.len() > output_limit {
                return Err(InvokeError::BadOutput(format!(
                    "output is {} bytes; the limit is {output_limit}",
                    out.len()
                )));
            }
            RawValue::from_string(out)
                .map_err(|e| InvokeError::BadOutput(format!("output is not JSON: {e}")))
        })
    }

    /// Whether `action` exists and an input of `len` bytes fits.
    fn admissible(&self, action: &str, len: usize) -> Result<(), InvokeError> {
        if self.plugin.manifest().action(action).is_none() {
            return Err(self.unknown("action", action));
        }
        if len > self.ctx.limits.input_bytes {
            return Err(InvokeError::InvalidInput(format!(
                "input is {len} bytes; the limit is {}",
                self.ctx.limits.input_bytes
            )));
        }
        Ok(())
    }

    /// Hands a verified webhook delivery to the plugin.
    pub async fn handle_webhook(
        &self,
        route: &str,
        request: types::WebhookRequest,
        opts: CallOptions,
    ) -> Invocation<types::WebhookResponse> {
        let manifest = self.plugin.manifest();
        if !manifest.webhooks.iter().any(|w| w.route == route) {
            return self.refused(opts, self.unknown("webhook route", route));
        }
        let (opts, before) = match self.storage_current(opts).await {
            Ok(ready) => ready,
            Err(failed) => return failed.into(),
        };
        let route = route.to_owned();
        self.call(opts, move |b, _, store, ctx| {
            Box::pin(async move { b.call_handle_webhook(store, &ctx, &route, &request).await })
        })
        .await
        .after(before)
    }

    /// Runs job `job` once.
    pub async fn run_job(&self, job: &str, opts: CallOptions) -> Invocation<String> {
        let manifest = self.plugin.manifest();
        if !manifest.jobs.iter().any(|j| j.name == job) {
            return self.refused(opts, self.unknown("job", job));
        }
        let (opts, before) = match self.storage_current(opts).await {
            Ok(ready) => ready,
            Err(failed) => return failed.into(),
        };
        let job = job.to_owned();
        self.call(opts, move |b, _, store, ctx| {
            Box::pin(async move { b.call_run_job(store, &ctx, &job).await })
        })
        .await
        .after(before)
    }

    /// Brings the instance's storage up to this plugin version before a
    /// call (see `migration`): at once when it is known to be current;
    /// otherwise the first caller checks the recorded version and runs the
    /// plugin's migration step if needed, while concurrent callers wait.
    /// Returns the options to call with (their request id filled in) and
    /// what the step did, if it ran.
    async fn storage_current(
        &self,
        mut opts: CallOptions,
    ) -> Result<(CallOptions, Option<(Report, Migrated)>), Failed> {
        if self.migration_is_current() {
            return Ok((opts, None));
        }
        opts.request_id = request_id(std::mem::take(&mut opts.request_id));
        let gate = self.gate().clone();
        let failed = gate.state.clone().lock_owned().await;
        if gate.is_current() {
            return Ok((opts, None));
        }
        let now = self.ctx.clock.now();
        if let Some(f) = failed.as_ref().filter(|f| now < f.retry_at) {
            let error = self.migration_error(f, now);
            return Err(Failed::new(error, opts.request_id));
        }
        // A task of its own, which holds the gate until the step is over: a
        // caller that goes away (a client that hangs up) neither stops the
        // step half-way nor lets the next caller start a second one.
        let (this, rid) = (self.clone(), opts.request_id.clone());
        let step = tokio::spawn(async move { this.bring_up_to_date(failed, rid).await });
        match step.await {
            Ok(Ok(ran)) => Ok((opts, ran)),
            Ok(Err(failed)) => Err(failed),
            Err(e) => Err(Failed::new(
                InvokeError::Trap(format!("the storage migration task failed: {e}")),
                opts.request_id,
            )),
        }
    }

    /// [`Self::storage_current`]'s step, holding the gate (`failed`).
    async fn bring_up_to_date(
        &self,
        mut failed: tokio::sync::OwnedMutexGuard<Option<crate::migration::Failure>>,
        request_id: String,
    ) -> Result<Option<(Report, Migrated)>, Failed> {
        use crate::migration::{FIRST_RETRY, Failure};
        let outcome = self.migrate_storage(&request_id).await;
        let now = self.ctx.clock.now();
        let so_far = failed.as_ref().map_or(0, |f| f.failures);
        let (failure, mut report) = match outcome {
            Ok(ran) => {
                if let Some((_, m)) = &ran {
                    tracing::info!(
                        tenant = %self.ctx.tenant,
                        instance = %self.ctx.instance,
                        plugin = %self.plugin.manifest().id,
                        from = m.from.as_deref().unwrap_or("unrecorded"),
                        to = %m.to,
                        summary = %m.summary,
                        "migrated the instance's storage"
                    );
                }
                self.gate().set_current();
                *failed = None;
                return Ok(ran);
            }
            // No wasm slot: the daemon is busy, and the step did not run.
            Err(StepError::Busy(error, mut report)) => {
                report.request_id = request_id;
                return Err(Failed { error, report });
            }
            // The store, or another daemon running the step: not the
            // step's failure, so the wait does not grow.
            Err(StepError::Wait { from, reason, wait }) => (
                Failure {
                    from,
                    reason,
                    failures: so_far,
                    retry_at: now + wait.min(FIRST_RETRY),
                },
                Report::default(),
            ),
            Err(StepError::Failed {
                from,
                reason,
                report,
            }) => {
                let failures = so_far + 1;
                let f = Failure {
                    from,
                    reason,
                    failures,
                    retry_at: now + Failure::backoff(failures),
                };
                (f, report)
            }
        };
        let error = self.migration_error(&failure, now);
        tracing::warn!(
            tenant = %self.ctx.tenant,
            instance = %self.ctx.instance,
            error = %error,
            "the storage migration step did not complete; the instance's calls wait for it"
        );
        *failed = Some(failure);
        report.request_id = request_id;
        Err(Failed { error, report })
    }

    /// Checks the recorded storage version and, when another version's
    /// data is there, runs the migration step under a claim in the store;
    /// then records this version.
    async fn migrate_storage(
        &self,
        request_id: &str,
    ) -> Result<Option<(Report, Migrated)>, StepError> {
        let manifest = self.plugin.manifest();
        let want = switchyard_store::StorageVersion {
            plugin: manifest.id.clone(),
            version: manifest.version.clone(),
        };
        let (backend, ns) = self.ctx.storage.scope();
        let unavailable = |from, doing: &str, e| store_failed(ns, from, doing, e);
        let recorded = backend
            .storage_version(ns)
            .await
            .map_err(|e| unavailable(None, "reading the storage version", e))?;
        if recorded.as_ref() == Some(&want) {
            return Ok(None);
        }
        let from = recorded
            .as_ref()
            .filter(|r| r.plugin == want.plugin)
            .map(|r| r.version.clone());
        let Some(export) = self.plugin.migrate else {
            return Ok(self.record_later(want, recorded, from));
        };
        // Storage that was never recorded and holds nothing is new: there
        // is nothing to migrate.
        let holds_data = recorded.is_some()
            || backend
                .usage(ns)
                .await
                .map_err(|e| unavailable(from.clone(), "reading the storage usage", e))?
                .keys
                > 0;
        if !holds_data {
            return Ok(self.record_later(want, recorded, from));
        }
        let owner = &self.gate().owner;
        let wall_ms = |d: Duration| {
            i64::try_from((self.ctx.clock.wall() + d).as_millis()).unwrap_or(i64::MAX)
        };
        let until = wall_ms(self.ctx.limits.deadline + crate::migration::CLAIM_MARGIN);
        let now_ms = wall_ms(Duration::ZERO);
        match backend
            .claim_storage_migration(ns, owner, now_ms, until)
            .await
            .map_err(|e| unavailable(from.clone(), "claiming the storage migration", e))?
        {
            None => {}
            Some(held_until) => {
                return Err(StepError::Wait {
                    from,
                    reason: "another daemon is running the migration step".into(),
                    wait: Duration::from_millis(held_until.saturating_sub(now_ms).max(0) as u64),
                });
            }
        }
        let opts = CallOptions {
            request_id: request_id.to_owned(),
            ..CallOptions::default()
        };
        let previous = from.clone();
        let inv = self
            .call(opts, move |_, instance, store, ctx| {
                Box::pin(async move {
                    let f = instance
                        .get_func(&mut *store, export)
                        .ok_or_else(|| {
                            wasmtime::format_err!("`{}` is missing", crate::migration::EXPORT)
                        })?
                        .typed::<crate::migration::Params, crate::migration::Results>(&*store)?;
                    Ok(f.call_async(&mut *store, (ctx, previous)).await?.0)
                })
            })
            .await;
        let duration_ms = inv.report.duration_ms;
        // The plugin's text goes to the audit log and the status: cut as a
        // job's summary is.
        let migrated = |summary: String, error: Option<String>| Migrated {
            from: from.clone(),
            to: want.version.clone(),
            summary: switchyard_store::cut_summary(&summary),
            error: error.as_deref().map(switchyard_store::cut_summary),
            duration_ms,
        };
        let outcome = match inv.result {
            Ok(summary) => {
                let m = migrated(summary, None);
                self.record(
                    &want,
                    recorded.as_ref(),
                    from.clone(),
                    Some((inv.report, m)),
                )
                .await
            }
            Err(e @ InvokeError::Busy(_)) => Err(StepError::Busy(e, inv.report)),
            Err(e) => {
                let mut report = inv.report;
                report.migrated = Some(migrated(String::new(), Some(e.to_string())));
                Err(StepError::Failed {
                    from: from.clone(),
                    reason: e.to_string(),
                    report,
                })
            }
        };
        if let Err(e) = backend.release_storage_migration(ns, owner).await {
            // It runs out by itself (`CLAIM_MARGIN` past the deadline).
            tracing::warn!(namespace = %ns, error = %e, "releasing a storage migration claim");
        }
        outcome
    }

    /// Records `want` over `recorded` in the background, when no step ran:
    /// the first call of an instance does not wait for a write. If the
    /// record fails, the next call checks again.
    fn record_later(
        &self,
        want: switchyard_store::StorageVersion,
        recorded: Option<switchyard_store::StorageVersion>,
        from: Option<String>,
    ) -> Option<(Report, Migrated)> {
        let this = self.clone();
        tokio::spawn(async move {
            let Err(e) = this.record(&want, recorded.as_ref(), from, None).await else {
                return;
            };
            let why = match e {
                StepError::Wait { reason, .. } | StepError::Failed { reason, .. } => reason,
                StepError::Busy(e, _) => e.to_string(),
            };
            tracing::warn!(
                tenant = %this.ctx.tenant,
                instance = %this.ctx.instance,
                "recording the storage version: {why}; the next call checks again"
            );
            // After the caller marked the storage current (it holds the
            // gate until then).
            let gate = this.gate();
            let _after = gate.state.lock().await;
            gate.set_stale();
        });
        None
    }

    /// Records `want` over `recorded`. Lost to another writer (another
    /// daemon), the storage is current only if that one recorded `want`
    /// too.
    async fn record(
        &self,
        want: &switchyard_store::StorageVersion,
        recorded: Option<&switchyard_store::StorageVersion>,
        from: Option<String>,
        ran: Option<(Report, Migrated)>,
    ) -> Result<Option<(Report, Migrated)>, StepError> {
        let (backend, ns) = self.ctx.storage.scope();
        let swapped = backend
            .record_storage_version(ns, recorded, want)
            .await
            .map_err(|e| store_failed(ns, from.clone(), "recording the storage version", e))?;
        if swapped {
            self.gates
                .recorded(&self.ctx.tenant, &self.ctx.instance, self.plugin.digest());
            return Ok(ran);
        }
        match backend.storage_version(ns).await {
            Ok(Some(now)) if now == *want => Ok(ran),
            Ok(other) => Err(StepError::Wait {
                from,
                reason: format!(
                    "another daemon recorded the storage as {} meanwhile",
                    other.map_or("nothing".to_owned(), |v| format!(
                        "{} {}",
                        v.plugin, v.version
                    ))
                ),
                wait: crate::migration::FIRST_RETRY,
            }),
            Err(e) => Err(store_failed(ns, from, "reading the storage version", e)),
        }
    }

    /// Whether the storage is known to be this version's: the hot path of
    /// every call, one load once the instance has been called.
    fn migration_is_current(&self) -> bool {
        self.ctx.migration.get().is_some_and(|g| g.is_current())
    }

    /// This instance's gate, taken from the runtime's at the first call.
    fn gate(&self) -> &Arc<crate::migration::Gate> {
        self.ctx.migration.get_or_init(|| {
            self.gates
                .get(&self.ctx.tenant, &self.ctx.instance, self.plugin.digest())
        })
    }

    fn migration_error(&self, f: &crate::migration::Failure, now: Instant) -> InvokeError {
        let manifest = self.plugin.manifest();
        let wait = f.retry_at.saturating_duration_since(now);
        InvokeError::Migration {
            plugin: manifest.id.clone(),
            version: manifest.version.clone(),
            from: f.from.clone(),
            reason: f.reason.clone(),
            retry_after: Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64),
        }
    }

    /// Why the instance's storage is not this version's yet, while its
    /// migration step is failing (for status pages); None otherwise, and
    /// while the step runs.
    pub fn storage_migration_error(&self) -> Option<InvokeError> {
        let gate = self.ctx.migration.get()?;
        if gate.is_current() {
            return None;
        }
        let failed = gate.state.try_lock().ok()?;
        let now = self.ctx.clock.now();
        failed.as_ref().map(|f| self.migration_error(f, now))
    }

    fn unknown(&self, what: &'static str, name: &str) -> InvokeError {
        InvokeError::Unknown {
            plugin: self.plugin.manifest().id.clone(),
            version: self.plugin.manifest().version.clone(),
            what,
            name: name.to_owned(),
        }
    }

    fn refused<T>(&self, opts: CallOptions, err: InvokeError) -> Invocation<T> {
        Invocation {
            result: Err(err),
            report: Report {
                request_id: request_id(opts.request_id),
                ..Report::default()
            },
        }
    }

    /// The bounded call path shared by every entry point.
    async fn call<R, F>(&self, opts: CallOptions, f: F) -> Invocation<R>
    where
        F: Send
            + 'static
            + for<'a> FnOnce(
                Bindings,
                wasmtime::component::Instance,
                &'a mut Store<StoreState>,
                types::Context,
            ) -> Pin<
                Box<
                    dyn Future<Output = wasmtime::Result<Result<R, types::PluginError>>>
                        + Send
                        + 'a,
                >,
            >,
        R: Send + 'static,
    {
        let started = Instant::now();
        let limits = self.ctx.limits;
        let request_id = request_id(opts.request_id);
        let context = types::Context {
            tenant: self.ctx.tenant.clone(),
            instance: self.ctx.instance.clone(),
            request_id: request_id.clone(),
            actor: opts.actor.map(|a| types::Actor {
                id: a.id,
                email: a.email,
                roles: a.roles,
            }),
        };
        let call = CallState::new(
            &self.ctx.tenant,
            &self.ctx.instance,
            request_id.clone(),
            limits,
            started,
            opts.progress,
        );
        // Set by the epoch callback once the guest is a long runner: the
        // call then moves to the long-runner pool (see `sched`).
        let long = Arc::new(AtomicBool::new(false));
        let start_on_pool = self
            .ctx
            .budgets
            .ran_long_within(Instant::now(), RECENT_LONG_RUN);
        let pool = self.ctx.long_runners.clone();
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_BYTES);
        let mut store = new_store(&self.engine, self.ctx.clone(), call, stderr.clone(), &long);
        let plugin = self.plugin.clone();
        let rid = request_id.clone();
        let task = async move {
            let run = async {
                let instance = plugin
                    .pre
                    .instance_pre()
                    .instantiate_async(&mut store)
                    .await?;
                let bindings = plugin.indices.load(&mut store, &instance)?;
                f(bindings, instance, &mut store, context).await
            };
            // The epoch deadline stops a guest that computes; this timeout
            // stops one that waits in a host call. Dropping the future
            // drops the Store.
            let outcome = tokio::time::timeout(limits.deadline, run).await;
            let result = match outcome {
                Err(_) => Err(InvokeError::Deadline(limits.deadline)),
                Ok(Ok(Ok(v))) => Ok(v),
                Ok(Ok(Err(e))) => Err(InvokeError::Plugin(e.into())),
                Ok(Err(e)) => Err(classify(e, &store, &stderr, limits.deadline)),
            };
            let data = store.into_data();
            let (call, memory_bytes) = (data.call, data.limiter.memory_peak as u64);
            Invocation {
                result,
                report: Report {
                    request_id: rid,
                    duration_ms: started.elapsed().as_millis() as u64,
                    duration: started.elapsed(),
                    egress: call.egress,
                    egress_omitted: call.egress_omitted,
                    logs: call.logs,
                    logs_dropped: call.logs_dropped,
                    progress: call.progress,
                    retry: call.retry,
                    run_again_secs: call.run_again,
                    memory_bytes,
                    migrated: None,
                },
            }
        };
        match crate::sched::run(pool, start_on_pool, long, task).await {
            Ok(invocation) => invocation,
            Err(stopped) => Invocation {
                result: Err(InvokeError::Busy(stopped.to_string())),
                report: Report {
                    request_id,
                    duration_ms: started.elapsed().as_millis() as u64,
                    duration: started.elapsed(),
                    ..Report::default()
                },
            },
        }
    }
}

/// Why [`Instance::storage_current`]'s step did not make the storage
/// current.
enum StepError {
    /// No wasm slot was free: the step did not run.
    Busy(InvokeError, Report),
    /// Not the step's doing (the store, another daemon running the step):
    /// try again after `wait` (at most `migration::FIRST_RETRY`).
    Wait {
        from: Option<String>,
        reason: String,
        wait: Duration,
    },
    /// The step failed: its error and report.
    Failed {
        from: Option<String>,
        reason: String,
        report: Report,
    },
}

/// The store failed while `doing` something for a migration: logged with
/// the details, and the step waits (not the plugin's failure).
fn store_failed(
    ns: &Namespace,
    from: Option<String>,
    doing: &str,
    e: switchyard_store::StoreError,
) -> StepError {
    tracing::warn!(namespace = %ns, error = %e, "{doing} failed");
    StepError::Wait {
        from,
        reason: format!("{doing} failed; the store is unavailable"),
        wait: crate::migration::FIRST_RETRY,
    }
}

/// A call that did not run because the storage is not current.
struct Failed {
    error: InvokeError,
    report: Report,
}

impl Failed {
    fn new(error: InvokeError, request_id: String) -> Self {
        Self {
            error,
            report: Report {
                request_id,
                ..Report::default()
            },
        }
    }
}

impl<T> From<Failed> for Invocation<T> {
    fn from(f: Failed) -> Self {
        Invocation {
            result: Err(f.error),
            report: f.report,
        }
    }
}

fn request_id(given: String) -> String {
    if !given.is_empty() {
        return given;
    }
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!("req-{now:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn new_store(
    engine: &Engine,
    inst: Arc<InstanceCtx>,
    call: CallState,
    stderr: MemoryOutputPipe,
    long: &Arc<AtomicBool>,
) -> Store<StoreState> {
    let limits = call.limits;
    // No preopens, no environment, no arguments, no network: a plugin's only
    // ways out are the switchyard interfaces. stderr is captured to explain
    // panics; stdin is empty and stdout discarded.
    let wasi = WasiCtxBuilder::new()
        .wall_clock(crate::clock::GuestWallClock(inst.clock.clone()))
        .stderr(stderr)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    let mut table = ResourceTable::new();
    table.set_max_capacity(limits.resources);
    let mut store = Store::new(
        engine,
        StoreState {
            wasi,
            table,
            limiter: Limiter::with_budget(&limits, inst.budgets.clone()),
            inst,
            call,
        },
    );
    store.limiter_async(|s| &mut s.limiter);
    // Every epoch tick the guest yields to the executor, so a guest that
    // computes cannot starve other invocations on the same worker; once the
    // wall-clock deadline has passed, the next tick traps it. A guest still
    // computing after LONG_RUNNING_TICKS is a long runner: `long` is set,
    // and at this yield its call moves to the low-priority long-runner pool
    // (see `sched`), where long runners take turns on fewer threads than
    // there are cores. Its tenant is marked, so that for RECENT_LONG_RUN its
    // calls start there: a guest that does the same long work over and over
    // (a log flood, a busy loop that returns) would otherwise compute at
    // normal priority for the first ticks of every call.
    let deadline = store.data().call.deadline;
    let budgets = store.data().inst.budgets.clone();
    let long = long.clone();
    let mut ticks = 0u32;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        let now = Instant::now();
        if now >= deadline {
            return Err(wasmtime::Error::new(crate::limits::DeadlineReached));
        }
        ticks = ticks.saturating_add(1);
        if ticks >= LONG_RUNNING_TICKS {
            budgets.mark_long_run(now);
            long.store(true, Ordering::Release);
        }
        Ok(UpdateDeadline::Yield(1))
    });
    store
}

/// Epoch ticks (of 2 ms) after which a computing guest counts as a long
/// runner and moves to the long-runner pool.
const LONG_RUNNING_TICKS: u32 = 5;

/// How long a tenant whose guest ran long keeps starting its calls on the
/// long-runner pool.
const RECENT_LONG_RUN: Duration = Duration::from_secs(1);

fn classify(
    err: wasmtime::Error,
    store: &Store<StoreState>,
    stderr: &MemoryOutputPipe,
    deadline: Duration,
) -> InvokeError {
    let limits = store.data().call.limits;
    classify_error(
        err,
        &store.data().limiter,
        limits.resources,
        stderr,
        deadline,
    )
}
