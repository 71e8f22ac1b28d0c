//! `switchyard serve`: the HTTP API over the configured tenants.
//!
//! Implemented so far:
//! - `POST /v1/tenants/{tenant}/instances/{instance}/actions/{action}` with
//!   `Authorization: Bearer <tenant API token>` and `{"input": …, "actor":
//!   {"id", "email", "roles"}}`. The actor's roles go through the tenant's
//!   role mapping and the action's required role is enforced before the
//!   plugin runs. Answers `{"request_id", "output"}` or `{"request_id",
//!   "error": {"code", "message"}}` with 400, 401, 403, 404, 409, 413, 422,
//!   500, 502, 503 or 504.
//! - `GET /openapi.json`: the OpenAPI 3.1 document of this API.
//! - `GET /healthz` (the process is up) and `GET /readyz` (configuration
//!   and plugins loaded).
//!
//! Every action and every egress request it made is appended to the audit
//! log (never bodies, tokens or secrets).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_runtime::{Actor, CallOptions, Instance, InvokeError, Runtime};
use switchyard_store::prelude::*;
use switchyard_store::{AuditEntry, SecretStore, TenantConcurrency};

use crate::config::Config;
use crate::openapi;

/// Largest action request body accepted.
const MAX_ACTION_BODY: usize = 4 << 20;

struct InstanceState {
    instance: Instance,
    /// Starts as configured; pause/resume through the API persist.
    paused: std::sync::atomic::AtomicBool,
    /// Scheduled jobs: name → interval in seconds.
    jobs: BTreeMap<String, u32>,
    routes: crate::webhook::Routes,
}

struct TenantState {
    roles: BTreeMap<String, Vec<String>>,
    instances: BTreeMap<String, InstanceState>,
}

/// The state backend the daemon was configured with.
pub type Db = Arc<dyn StateBackend>;

/// What the handlers share.
pub struct AppState {
    tenants: BTreeMap<String, TenantState>,
    pub(crate) db: Db,
    /// Jobs running at once in this daemon, and per tenant.
    pub(crate) workers: usize,
    pub(crate) concurrency: TenantConcurrency,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    pub(crate) running: Arc<RunningJobs>,
    // Holds the engine's epoch ticker: without it deadlines stop advancing.
    _runtime: Arc<Runtime>,
}

impl AppState {
    /// Builds every configured instance: plugins loaded, secrets resolved.
    pub async fn build(
        cfg: &Config,
        runtime: Arc<Runtime>,
        db: Db,
        secrets: Arc<SecretStore>,
        metrics: Arc<crate::metrics::Metrics>,
        running: Arc<RunningJobs>,
    ) -> anyhow::Result<Self> {
        let (plugins, mut problems) = crate::available_plugins(&runtime, &cfg.plugin_dir).await;
        problems.extend(cfg.check_against(&crate::manifests_of(&plugins)));
        if !problems.is_empty() {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            anyhow::bail!("{}", lines.join("\n"));
        }
        let mut tenants = BTreeMap::new();
        for (tid, t) in &cfg.tenants {
            let mut instances = BTreeMap::new();
            for (index, inst) in t.instances.iter().enumerate() {
                let ic = inst.get_ref();
                let plugin = crate::pick_plugin(&plugins, ic)?;
                let spec = cfg
                    .instance_spec(t, index, |name| {
                        let secrets = secrets.clone();
                        let tenant = tid.clone();
                        async move { Ok(secrets.get(&tenant, &name).await?) }
                    })
                    .await?;
                let lookup = |name: String| {
                    let secrets = secrets.clone();
                    let tenant = tid.clone();
                    async move { Ok(secrets.get(&tenant, &name).await?) }
                };
                let mut routes = crate::webhook::Routes::new();
                for (route, hook) in &ic.webhooks {
                    let synchronous = plugin
                        .manifest()
                        .webhooks
                        .iter()
                        .find(|w| &w.route == route)
                        .with_context(|| format!("plugin has no webhook route `{route}`"))?
                        .mode
                        == "synchronous";
                    let what = format!("{tid}/{} webhooks.{route}", ic.id.get_ref());
                    routes.insert(
                        route.clone(),
                        crate::webhook::route_config(hook.get_ref(), synchronous, &lookup, &what)
                            .await?,
                    );
                }
                // Only the jobs the tenant file schedules run on a schedule.
                let scheduled = ic
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.get_ref().enabled)
                    .filter_map(|(name, j)| {
                        let spec = plugin.manifest().jobs.iter().find(|s| &s.name == name)?;
                        let every = j.get_ref().interval.as_ref().map(|i| *i.get_ref());
                        Some((name.clone(), every.unwrap_or(spec.default_interval_secs)))
                    })
                    .collect();
                let instance = Instance::new(&runtime, plugin, spec, db.clone())?;
                instances.insert(
                    ic.id.get_ref().clone(),
                    InstanceState {
                        instance,
                        paused: ic.paused.into(),
                        jobs: scheduled,
                        routes,
                    },
                );
            }
            tenants.insert(
                tid.clone(),
                TenantState {
                    roles: t.roles.clone(),
                    instances,
                },
            );
        }
        // Pauses set through the API outlive restarts.
        for (t, i, paused) in db.paused_states().await? {
            if let Some(inst) = tenants.get(&t).and_then(|ts| ts.instances.get(&i)) {
                inst.paused
                    .store(paused, std::sync::atomic::Ordering::SeqCst);
            }
        }
        Ok(Self {
            tenants,
            db,
            workers: cfg.jobs.workers,
            concurrency: cfg.tenant_concurrency(),
            metrics,
            running,
            _runtime: runtime,
        })
    }

    /// Whether an instance is paused (unknown instances count as paused).
    pub(crate) fn is_paused(&self, tenant: &str, instance: &str) -> bool {
        self.tenants
            .get(tenant)
            .and_then(|t| t.instances.get(instance))
            .is_none_or(|i| i.paused.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// The schedules the configuration asks for.
    pub(crate) fn wanted_schedules(&self) -> Vec<switchyard_store::WantedSchedule> {
        let mut out = Vec::new();
        for (t, ts) in &self.tenants {
            for (i, inst) in &ts.instances {
                for (job, secs) in &inst.jobs {
                    out.push(switchyard_store::WantedSchedule {
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

    /// The instance `instance` of `tenant`.
    pub(crate) fn instance(&self, tenant: &str, instance: &str) -> Option<&Instance> {
        Some(&self.tenants.get(tenant)?.instances.get(instance)?.instance)
    }

    /// A configured webhook route and its instance.
    pub(crate) fn webhook_route(
        &self,
        tenant: &str,
        instance: &str,
        route: &str,
    ) -> Option<(&Instance, &crate::webhook::RouteConfig)> {
        let i = self.tenants.get(tenant)?.instances.get(instance)?;
        Some((&i.instance, i.routes.get(route)?))
    }

    /// The longest invocation deadline of any instance, in milliseconds.
    pub(crate) fn max_deadline_ms(&self) -> i64 {
        self.tenants
            .values()
            .flat_map(|t| t.instances.values())
            .map(|i| i.instance.limits().deadline.as_millis() as i64)
            .max()
            .unwrap_or(30_000)
    }
}

/// The running state, swapped whole on reload. A request works on the
/// snapshot it started with, so in-flight invocations finish on the old
/// configuration while new ones see the new.
pub struct Live {
    state: arc_swap::ArcSwap<AppState>,
    dir: std::path::PathBuf,
    runtime: Arc<Runtime>,
    db: Db,
    secrets: Arc<SecretStore>,
    metrics: Arc<crate::metrics::Metrics>,
    running: Arc<RunningJobs>,
    reloading: tokio::sync::Mutex<()>,
}

impl Live {
    /// Builds the first state from `cfg` (loaded from `cfg.dir`).
    pub async fn start(
        cfg: &Config,
        runtime: Arc<Runtime>,
        db: Db,
        secrets: Arc<SecretStore>,
    ) -> anyhow::Result<Arc<Self>> {
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let running = Arc::new(RunningJobs::default());
        let state = AppState::build(
            cfg,
            runtime.clone(),
            db.clone(),
            secrets.clone(),
            metrics.clone(),
            running.clone(),
        )
        .await?;
        Ok(Arc::new(Self {
            state: arc_swap::ArcSwap::from_pointee(state),
            dir: cfg.dir.clone(),
            runtime,
            db,
            secrets,
            metrics,
            running,
            reloading: tokio::sync::Mutex::new(()),
        }))
    }

    /// The current state.
    pub fn current(&self) -> Arc<AppState> {
        self.state.load_full()
    }

    /// Loads the configuration directory again and swaps it in, or returns
    /// every problem and keeps the running state.
    pub async fn reload(&self) -> Result<String, String> {
        let _one_at_a_time = self.reloading.lock().await;
        let cfg = Config::load(&self.dir).map_err(|problems| {
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        let state = AppState::build(
            &cfg,
            self.runtime.clone(),
            self.db.clone(),
            self.secrets.clone(),
            self.metrics.clone(),
            self.running.clone(),
        )
        .await
        .map_err(|e| format!("{e:#}"))?;
        self.db
            .sync_schedules(state.wanted_schedules(), now_ms())
            .await
            .map_err(|e| e.to_string())?;
        let tenants = state.tenants.len();
        let instances: usize = state.tenants.values().map(|t| t.instances.len()).sum();
        self.state.store(Arc::new(state));
        Ok(format!("{tenants} tenant(s), {instances} instance(s)"))
    }
}

/// A job the worker is running, with its latest progress report.
pub(crate) struct RunningJob {
    pub(crate) tenant: String,
    pub(crate) instance: String,
    pub(crate) name: String,
    pub(crate) started_ms: i64,
    pub(crate) progress: tokio::sync::watch::Receiver<Option<switchyard_runtime::log::Progress>>,
}

/// Jobs running now, by job id. Shared across reloads, like the metrics.
pub(crate) type RunningJobs = std::sync::Mutex<BTreeMap<i64, RunningJob>>;

/// Extracts the current state snapshot.
pub struct Snapshot(pub Arc<AppState>);

impl axum::extract::FromRequestParts<Arc<Live>> for Snapshot {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        _parts: &mut axum::http::request::Parts,
        live: &Arc<Live>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(live.current()))
    }
}

/// The tenant id operator tokens carry; no tenant can have it (tenant ids
/// are file names of a-z, 0-9, - and _).
pub const OPERATOR: &str = "*";

/// `POST /v1/admin/reload` (operator token): reload the configuration.
async fn reload(State(live): State<Arc<Live>>, headers: HeaderMap) -> Response {
    let rid = request_id();
    let st = live.current();
    if let Err(resp) = authorize(&st, &headers, OPERATOR, &rid).await {
        return resp;
    }
    match live.reload().await {
        Ok(summary) => {
            axum::Json(json!({ "request_id": rid, "reloaded": summary })).into_response()
        }
        Err(problems) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_config",
            problems,
            &rid,
        ),
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

/// A fresh request id.
pub(crate) fn request_id() -> String {
    format!("req-{:x}-{:x}", now_ms(), next_seq())
}

/// Audit entries for the egress requests an invocation made: one per
/// itemised request, and one that counts the rest by outcome.
pub(crate) fn egress_audit(
    tenant: &str,
    instance: &str,
    actor: &str,
    report: &switchyard_runtime::Report,
) -> Vec<AuditEntry> {
    let entry = |what: String, outcome: String, duration_ms: i64| AuditEntry {
        seq: 0,
        time: 0,
        tenant: tenant.to_owned(),
        instance: Some(instance.to_owned()),
        actor: (!actor.is_empty()).then(|| actor.to_owned()),
        kind: "egress".into(),
        what,
        outcome,
        duration_ms,
        request_id: report.request_id.clone(),
    };
    let mut out: Vec<AuditEntry> = report
        .egress
        .iter()
        .map(|e| {
            entry(
                format!("{} {}{}", e.method, e.destination, e.path),
                e.status
                    .map_or_else(|| e.outcome.clone(), |s| s.to_string()),
                e.duration_ms as i64,
            )
        })
        .collect();
    if !report.egress_omitted.is_empty() {
        let total: u64 = report.egress_omitted.values().sum();
        let by_outcome: Vec<String> = report
            .egress_omitted
            .iter()
            .map(|(o, n)| format!("{o}: {n}"))
            .collect();
        out.push(entry(
            format!("{total} further requests (not itemised)"),
            by_outcome.join(", "),
            0,
        ));
    }
    out
}

/// The API router.
pub fn router(state: Arc<Live>) -> Router {
    Router::new()
        .route(openapi::HEALTHZ, get(|| async { "ok" }))
        .route(openapi::READYZ, get(|| async { "ready" }))
        .route(
            openapi::OPENAPI,
            get(|| async { axum::Json(openapi::document()) }),
        )
        .route(openapi::ACTION, post(action))
        .route(
            openapi::PAUSE,
            post(
                |Snapshot(st): Snapshot,
                 Path((t, i)): Path<(String, String)>,
                 h: HeaderMap| async move { set_paused(&st, &h, t, i, true).await },
            ),
        )
        .route(
            openapi::RESUME,
            post(
                |Snapshot(st): Snapshot,
                 Path((t, i)): Path<(String, String)>,
                 h: HeaderMap| async move { set_paused(&st, &h, t, i, false).await },
            ),
        )
        .route(openapi::STATUS, get(status))
        .route(openapi::RUN_JOB, post(run_now))
        .route(openapi::AUDIT, get(audit))
        .route(openapi::RELOAD, post(reload))
        .route(openapi::METRICS, get(metrics))
        .route(openapi::HOOK, axum::routing::any(crate::webhook::handle))
        .layer(DefaultBodyLimit::max(MAX_ACTION_BODY))
        .with_state(state)
}

/// Serves until Ctrl-C or SIGTERM; in-flight requests finish first.
pub async fn serve(state: Arc<Live>, listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    // Tests and scripts read this line to find an ephemeral port.
    println!("switchyard listening on http://{}", listener.local_addr()?);
    use std::io::Write;
    std::io::stdout().flush()?;
    #[cfg(unix)]
    {
        // SIGHUP reloads the configuration; a bad one is refused and the
        // running configuration stays.
        let live = state.clone();
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while hup.recv().await.is_some() {
                match live.reload().await {
                    Ok(summary) => eprintln!("configuration reloaded: {summary}"),
                    Err(e) => eprintln!(
                        "configuration reload refused; the running configuration stays:\n{e}"
                    ),
                }
            }
        });
    }
    serve_on(state, listener, shutdown_signal()).await?;
    eprintln!("switchyard stopped");
    Ok(())
}

/// Serves on `listener` with the worker and scheduler until `shutdown`
/// completes; then requests drain, running jobs finish and queued ones stay.
pub async fn serve_on(
    live: Arc<Live>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The embedded store belongs to this process alone: jobs a previous,
    // crashed process left running are re-queued now rather than after
    // their lease.
    let state = live.current();
    let reclaimed = state.db.reclaim_running_jobs(now_ms()).await?;
    if reclaimed > 0 {
        eprintln!("re-queued {reclaimed} job(s) left running by a previous process");
    }
    state
        .db
        .sync_schedules(state.wanted_schedules(), now_ms())
        .await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    drop(state);
    let worker = tokio::spawn(crate::webhook::worker(live.clone(), stop_rx.clone()));
    let scheduler = tokio::spawn(scheduler(live.clone(), stop_rx));
    axum::serve(
        listener,
        router(live).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    let _ = stop_tx.send(true);
    let _ = tokio::join!(worker, scheduler);
    Ok(())
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

pub(crate) fn error(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    request_id: &str,
) -> Response {
    let mut resp = (
        status,
        axum::Json(json!({
            "request_id": request_id,
            "error": { "code": code, "message": message.into() },
        })),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
    }
    resp
}

pub(crate) fn invoke_error_code(e: &InvokeError) -> &'static str {
    use switchyard_runtime::PluginError as P;
    match e {
        InvokeError::Unknown { .. } => "not_found",
        InvokeError::InvalidInput(_) => "invalid_input",
        InvokeError::Plugin(P::InvalidInput { .. }) => "invalid_input",
        InvokeError::Plugin(P::NotFound { .. }) => "not_found",
        InvokeError::Plugin(P::Forbidden { .. }) => "forbidden",
        InvokeError::Plugin(P::Conflict { .. }) => "conflict",
        InvokeError::Plugin(P::Upstream { .. }) => "upstream_failed",
        InvokeError::Plugin(P::Internal { .. }) => "plugin_error",
        InvokeError::BadOutput(_) => "bad_output",
        InvokeError::Deadline(_) => "deadline_exceeded",
        InvokeError::LimitExceeded(_) => "limit_exceeded",
        InvokeError::Trap(_) => "plugin_crashed",
        InvokeError::Busy(_) => "busy",
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionRequest {
    #[serde(default = "empty_object")]
    input: Value,
    actor: Actor,
}

fn empty_object() -> Value {
    json!({})
}

fn bearer(headers: &HeaderMap) -> Option<SecretString> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(SecretString::from(token.trim().to_owned()))
}

/// Checks the bearer token is valid for `tenant`.
async fn authorize(
    st: &AppState,
    headers: &HeaderMap,
    tenant: &str,
    rid: &str,
) -> Result<(), Response> {
    let Some(token) = bearer(headers) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer <token>`",
            rid,
        ));
    };
    match st.db.verify_token(&token).await {
        Ok(Some(t)) if t == tenant => Ok(()),
        Ok(Some(_)) => Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the API token is not valid for tenant `{tenant}`"),
            rid,
        )),
        Ok(None) => Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the API token is not valid",
            rid,
        )),
        Err(e) => {
            tracing::error!(error = %e, "verifying an API token");
            Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the token store failed; retry",
                rid,
            ))
        }
    }
}

/// Checks the token is valid for `tenant` and finds the instance (404).
async fn authorized_instance<'a>(
    st: &'a AppState,
    headers: &HeaderMap,
    tenant: &str,
    instance: &str,
    rid: &str,
) -> Result<&'a InstanceState, Response> {
    authorize(st, headers, tenant, rid).await?;
    st.tenants
        .get(tenant)
        .and_then(|t| t.instances.get(instance))
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("tenant `{tenant}` has no instance `{instance}`"),
                rid,
            )
        })
}

/// `POST .../pause` and `.../resume`.
async fn set_paused(
    st: &AppState,
    headers: &HeaderMap,
    tenant: String,
    instance: String,
    paused: bool,
) -> Response {
    let rid = request_id();
    let inst = match authorized_instance(st, headers, &tenant, &instance, &rid).await {
        Ok(i) => i,
        Err(resp) => return resp,
    };
    if let Err(e) = st.db.set_paused(&tenant, &instance, paused).await {
        tracing::error!(error = %e, "persisting a pause");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "could not record the change; retry",
            &rid,
        );
    }
    inst.paused
        .store(paused, std::sync::atomic::Ordering::SeqCst);
    let what = if paused { "pause" } else { "resume" };
    append_audit(
        &st.db,
        vec![AuditEntry {
            seq: 0,
            time: 0,
            tenant: tenant.clone(),
            instance: Some(instance.clone()),
            actor: None,
            kind: "admin".into(),
            what: what.into(),
            outcome: "ok".into(),
            duration_ms: 0,
            request_id: rid.clone(),
        }],
        &rid,
    )
    .await;
    axum::Json(json!({ "request_id": rid, "paused": paused })).into_response()
}

/// `POST .../jobs/{job}/run`: queues a run now.
async fn run_now(
    Snapshot(st): Snapshot,
    Path((tenant, instance, job)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let rid = request_id();
    let inst = match authorized_instance(&st, &headers, &tenant, &instance, &rid).await {
        Ok(i) => &i.instance,
        Err(resp) => return resp,
    };
    if !inst.plugin().manifest().jobs.iter().any(|j| j.name == job) {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the plugin has no job `{job}`"),
            &rid,
        );
    }
    let new = switchyard_store::NewJob {
        tenant,
        instance,
        kind: "job".into(),
        name: job,
        payload: Vec::new(),
        idempotency_key: None,
        max_attempts: 1,
    };
    match st.db.enqueue(new, now_ms()).await {
        Ok(e) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "request_id": rid, "job_id": e.id })),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "enqueuing a run");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "could not queue the run; retry",
                &rid,
            )
        }
    }
}

/// `GET .../status`: paused, plugin, schedules, queue and recent failures.
async fn status(
    Snapshot(st): Snapshot,
    Path((tenant, instance)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let rid = request_id();
    let inst = match authorized_instance(&st, &headers, &tenant, &instance, &rid).await {
        Ok(i) => &i.instance,
        Err(resp) => return resp,
    };
    let (schedules, counts, stats) = match tokio::try_join!(
        st.db.schedules(&tenant, &instance),
        st.db.queue_counts(&tenant, &instance),
        st.db.run_stats(&tenant, &instance),
    ) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "reading status");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "could not read the status; retry",
                &rid,
            );
        }
    };
    let m = inst.plugin().manifest();
    let running: Vec<Value> = st
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(_, r)| r.tenant == tenant && r.instance == instance)
        .map(|(id, r)| {
            json!({
                "job_id": id,
                "name": r.name,
                "started_ms": r.started_ms,
                "progress": *r.progress.borrow(),
            })
        })
        .collect();
    // The most recent failure of anything on the instance.
    let last_error = stats
        .iter()
        .filter_map(|s| Some((s.last_error_ms?, s)))
        .max_by_key(|(at, _)| *at)
        .map(|(at, s)| {
            json!({
                "kind": s.kind, "name": s.name, "at_ms": at, "message": s.last_error,
            })
        });
    let job_stats = |name: &str| stats.iter().find(|s| s.kind == "job" && s.name == name);
    axum::Json(json!({
        "request_id": rid,
        "tenant": tenant,
        "instance": instance,
        "plugin": { "id": m.id, "version": m.version },
        "paused": st.is_paused(&tenant, &instance),
        "jobs": schedules.iter().map(|s| {
            let run = job_stats(&s.job);
            json!({
                "name": s.job,
                "interval_secs": s.interval_ms / 1000,
                "last_run_ms": s.last_fired_ms,
                "next_run_ms": s.next_run_ms,
                "runs": run.map_or(0, |r| r.runs),
                "errors": run.map_or(0, |r| r.errors),
                "last_outcome": run.map(|r| &r.last_outcome),
                "last_error": run.and_then(|r| r.last_error.as_ref()),
            })
        }).collect::<Vec<_>>(),
        "queue": { "queued": counts.0, "running": counts.1, "dead": counts.2 },
        "running": running,
        "invocations": stats,
        "last_error": last_error,
    }))
    .into_response()
}

/// `GET /v1/tenants/{tenant}/audit?limit=N`.
async fn audit(
    Snapshot(st): Snapshot,
    Path(tenant): Path<String>,
    axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let rid = request_id();
    if let Err(resp) = authorize(&st, &headers, &tenant, &rid).await {
        return resp;
    }
    let limit = match q.get("limit").map(|l| l.parse::<u32>()) {
        None => 100,
        Some(Ok(n)) if (1..=10_000).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "limit must be 1-10000",
                &rid,
            );
        }
    };
    match st.db.audit(&tenant, limit).await {
        Ok(entries) => axum::Json(json!({ "request_id": rid, "entries": entries })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "reading the audit log");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "could not read the audit log; retry",
                &rid,
            )
        }
    }
}

/// `GET /metrics`: Prometheus text format (queue depth read at scrape).
async fn metrics(Snapshot(st): Snapshot) -> Response {
    match st.db.queue_depths().await {
        Ok(depths) => {
            let depths: BTreeMap<(&str, &str), _> = depths
                .iter()
                .map(|d| ((d.tenant.as_str(), d.instance.as_str()), d))
                .collect();
            for (t, ts) in &st.tenants {
                for i in ts.instances.keys() {
                    let (q, r, d) = depths
                        .get(&(t.as_str(), i.as_str()))
                        .map_or((0, 0, 0), |d| (d.queued, d.running, d.dead));
                    st.metrics.set_queue(t, i, q, r, d);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading queue depths for metrics"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}

/// Fires due schedules of unpaused instances until `stop` is set. A paused
/// instance's schedule stays due and fires once on resume.
pub(crate) async fn scheduler(live: Arc<Live>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let st = live.current();
        match st.db.due_schedules(now_ms()).await {
            Ok(due) => {
                for s in due.iter().filter(|s| !st.is_paused(&s.tenant, &s.instance)) {
                    if let Err(e) = st.db.fire_schedule(s, 3, now_ms()).await {
                        tracing::error!(error = %e, job = %s.job, "firing a schedule");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "reading schedules"),
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The plugin roles the tenant grants for `tenant_roles`.
fn mapped_roles(map: &BTreeMap<String, Vec<String>>, tenant_roles: &[String]) -> Vec<String> {
    let set: BTreeSet<&String> = tenant_roles
        .iter()
        .filter_map(|r| map.get(r))
        .flatten()
        .collect();
    set.into_iter().cloned().collect()
}

async fn action(
    Snapshot(st): Snapshot,
    Path((tenant, instance, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let request_id = request_id();
    let rid = request_id.as_str();

    if let Err(resp) = authorize(&st, &headers, &tenant, rid).await {
        return resp;
    }
    let Some(t) = st.tenants.get(&tenant) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no tenant `{tenant}`"),
            rid,
        );
    };
    let Some(inst) = t.instances.get(&instance) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("tenant `{tenant}` has no instance `{instance}`"),
            rid,
        );
    };
    let req: ActionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("request body: {e}"),
                rid,
            );
        }
    };
    let manifest = inst.instance.plugin().manifest();
    let Some(spec) = manifest.action(&action) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("plugin `{}` has no action `{action}`", manifest.id),
            rid,
        );
    };
    let actor_id = req.actor.id.clone();
    // One audit entry per action: refusals of an authenticated caller
    // (paused, forbidden) are recorded like outcomes.
    let audit_entry = |outcome: &str| AuditEntry {
        seq: 0,
        time: 0,
        tenant: tenant.clone(),
        instance: Some(instance.clone()),
        actor: Some(actor_id.clone()),
        kind: "action".into(),
        what: action.clone(),
        outcome: outcome.to_owned(),
        duration_ms: started.elapsed().as_millis() as i64,
        request_id: request_id.clone(),
    };
    if inst.paused.load(std::sync::atomic::Ordering::SeqCst) {
        append_audit(&st.db, vec![audit_entry("paused")], rid).await;
        return error(
            StatusCode::CONFLICT,
            "paused",
            format!("instance `{instance}` is paused"),
            rid,
        );
    }
    let roles = mapped_roles(&t.roles, &req.actor.roles);
    if let Some(required) = &spec.required_role
        && !roles.contains(required)
    {
        append_audit(&st.db, vec![audit_entry("forbidden")], rid).await;
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "action `{action}` requires role `{required}`; the actor's roles map to [{}]",
                roles.join(", ")
            ),
            rid,
        );
    }
    let inv = inst
        .instance
        .invoke(
            &action,
            &req.input.to_string(),
            CallOptions {
                request_id: request_id.clone(),
                actor: Some(Actor { roles, ..req.actor }),
                progress: None,
            },
        )
        .await;

    let outcome = match &inv.result {
        Ok(_) => "ok".to_owned(),
        Err(e) => invoke_error_code(e).to_owned(),
    };
    let message = inv.result.as_ref().err().map(ToString::to_string);
    record_outcome(
        &st,
        &tenant,
        &instance,
        &manifest.id,
        "action",
        &action,
        &outcome,
        message.as_deref(),
        &inv.report,
    )
    .await;
    let mut audit = vec![audit_entry(&outcome)];
    audit.extend(egress_audit(&tenant, &instance, &actor_id, &inv.report));
    append_audit(&st.db, audit, rid).await;

    match inv.result {
        Ok(out) => {
            let output: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
            (
                StatusCode::OK,
                axum::Json(json!({ "request_id": rid, "output": output })),
            )
                .into_response()
        }
        Err(e) => invoke_error_response(&e, rid),
    }
}

/// The caller's answer for a failed invocation. An upstream's retry time
/// travels on as `Retry-After` and in the body, so the caller (a ServiceNow
/// flow, an agent's UI) can wait instead of hammering.
pub(crate) fn invoke_error_response(e: &InvokeError, rid: &str) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = error(status, invoke_error_code(e), e.to_string(), rid);
    if let InvokeError::Plugin(switchyard_runtime::PluginError::Upstream {
        retry_after_secs: Some(secs),
        ..
    }) = e
    {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(*secs));
    }
    resp
}

/// Appends to the audit log; a failure is logged, not shown to the caller
/// (the action itself already happened).
pub(crate) async fn append_audit(db: &Db, entries: Vec<AuditEntry>, request_id: &str) {
    if let Err(e) = db.append_audit(entries).await {
        tracing::error!(error = %e, request_id, "writing the audit log");
    }
}

/// Counts one invocation in the metrics and in the instance's run
/// statistics (shown by the status endpoint). A failure to store them is
/// logged: the invocation itself already happened.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_outcome(
    st: &AppState,
    tenant: &str,
    instance: &str,
    plugin: &str,
    kind: &str,
    name: &str,
    outcome: &str,
    error: Option<&str>,
    report: &switchyard_runtime::Report,
) {
    st.metrics
        .record(tenant, instance, plugin, kind, outcome, report);
    if let Err(e) = st
        .db
        .record_run(tenant, instance, kind, name, outcome, error, now_ms())
        .await
    {
        tracing::error!(error = %e, "recording run statistics");
    }
}

fn next_seq() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::mapped_roles;

    #[test]
    fn roles_map_through_the_tenant_mapping_only() {
        let map = [
            (
                "ITIL Agent".to_owned(),
                vec!["operator".to_owned(), "standard".to_owned()],
            ),
            (
                "Admin".to_owned(),
                vec!["operator".to_owned(), "advanced".to_owned()],
            ),
        ]
        .into();
        let got = mapped_roles(
            &map,
            &["ITIL Agent".into(), "Admin".into(), "operator".into()],
        );
        assert_eq!(got, ["advanced", "operator", "standard"]);
        // A plugin role name sent directly grants nothing.
        assert!(mapped_roles(&map, &["operator".into()]).is_empty());
    }
}
