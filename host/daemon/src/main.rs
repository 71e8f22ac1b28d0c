//! `switchyard`: the Switchyard command-line tool.
//!
//! - `switchyard plugin inspect <plugin>` prints a plugin's manifest as JSON.
//! - `switchyard plugin run <plugin> <action> --input <json>` runs one action,
//!   for plugin authors; `--instance <file.json>` supplies configuration,
//!   egress allowlist and credentials (see [`instance_file`]).
//! - `switchyard demo` starts the daemon with a sample tenant and runs a
//!   scripted scenario over HTTP.
//! - `switchyard serve --config <dir>` runs the HTTP API (see [`server`]).
//! - `switchyard token create|list|revoke` manages tenant API tokens;
//!   `switchyard audit` prints a tenant's audit log.
//! - `switchyard check --config <dir>` validates a configuration directory
//!   (see [`config`]) and prints `file:line: field: problem` for each problem.
//!
//! `<plugin>` is a path to a `.wasm` component or `bundled:<name>`.

mod config;
mod demo;
mod instance_file;
mod metrics;
mod openapi;
mod server;
mod webhook;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use switchyard_runtime::{Actor, CallOptions, Instance, Plugin, Runtime, RuntimeConfig};
use switchyard_store::SqliteStore;
use switchyard_store::prelude::*;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Multi-tenant WebAssembly plugin host for ITSM integrations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Serve the HTTP API for the configured tenants.
    Serve {
        /// The configuration directory.
        #[arg(long)]
        config: PathBuf,
        /// Listen address, overriding switchyard.toml (port 0: any free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Manage a tenant's API tokens (stored hashed).
    Token {
        /// The configuration directory.
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// List or retry a tenant's queued, running, done and dead jobs.
    Jobs {
        /// The configuration directory.
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Print a tenant's audit log, newest first, as JSON lines.
    Audit {
        /// The configuration directory.
        #[arg(long)]
        config: PathBuf,
        /// Tenant id.
        tenant: String,
        /// Entries to print.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Validate a configuration directory, including against plugin manifests.
    Check {
        /// The configuration directory (holds switchyard.toml and tenants/).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run an action of a configured instance.
    Invoke {
        /// The configuration directory.
        #[arg(long)]
        config: PathBuf,
        /// Tenant id.
        tenant: String,
        /// Instance id.
        instance: String,
        /// Action name.
        action: String,
        /// Action input (JSON).
        #[arg(long, default_value = "{}")]
        input: String,
        /// Actor id.
        #[arg(long, default_value = "cli")]
        actor: String,
        /// Actor roles (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// Manage a tenant's secrets (encrypted at rest in the data directory).
    Secret {
        /// The configuration directory.
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Start the daemon with a sample tenant, run a scripted scenario over
    /// HTTP, then keep serving until Ctrl-C.
    Demo {
        /// Run the scenario and exit (0 when every step succeeded).
        #[arg(long)]
        once: bool,
        /// Listen address (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// List jobs, newest first, as JSON lines.
    List {
        /// Tenant id.
        tenant: String,
        /// Only jobs in this state: queued, running, done or dead.
        #[arg(long)]
        state: Option<String>,
        /// Jobs to print.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Put a dead job back in the queue with fresh attempts.
    Retry {
        /// Tenant id.
        tenant: String,
        /// Job id.
        id: i64,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an operator token (for /v1/admin endpoints such as reload).
    CreateOperator {
        /// What the token is for.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Create a token; it is printed once and only its hash is stored.
    Create {
        /// Tenant id.
        tenant: String,
        /// What the token is for.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List a tenant's tokens (ids and labels).
    List {
        /// Tenant id.
        tenant: String,
    },
    /// Revoke a token by id.
    Revoke {
        /// Tenant id.
        tenant: String,
        /// Token id (from `token list`).
        id: String,
    },
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Store a secret; the value is read from standard input.
    Set {
        /// Tenant id.
        tenant: String,
        /// Secret name (referenced as `secret:<name>` in tenant files).
        name: String,
    },
    /// List a tenant's secret names (never values).
    List {
        /// Tenant id.
        tenant: String,
    },
    /// Delete a secret.
    Delete {
        /// Tenant id.
        tenant: String,
        /// Secret name.
        name: String,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Print a plugin's manifest as JSON.
    Inspect {
        /// A `.wasm` component or `bundled:<name>`.
        plugin: String,
    },
    /// Run one action of a plugin and print its JSON output.
    Run {
        /// A `.wasm` component or `bundled:<name>`.
        plugin: String,
        /// Action name.
        action: String,
        /// Action input (JSON).
        #[arg(long, default_value = "{}")]
        input: String,
        /// Instance file: config, egress allowlist, credentials, limits.
        #[arg(long)]
        instance: Option<PathBuf>,
        /// Actor id for the call.
        #[arg(long, default_value = "cli")]
        actor: String,
        /// Actor roles (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Keep storage in `<dir>/plugin-run.db` across runs (default: in memory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Where compiled components are cached between CLI runs: a directory of
/// this user's (the runtime refuses one that others can write).
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SWITCHYARD_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    match base {
        Some(base) => base.join("switchyard").join("compiled"),
        None => std::env::temp_dir().join("switchyard-compiled"),
    }
}

fn runtime() -> anyhow::Result<Runtime> {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache_dir()),
        max_concurrent_invocations: 16,
    })
    .map_err(|e| anyhow::anyhow!("starting the wasm runtime: {e:#}"))
}

/// Reads a plugin's bytes from a path or the bundled set.
fn plugin_bytes(source: &str) -> anyhow::Result<Vec<u8>> {
    if let Some(name) = source.strip_prefix("bundled:") {
        let names: Vec<_> = switchyard_bundled::ALL.iter().map(|(n, _)| *n).collect();
        return switchyard_bundled::get(name)
            .map(<[u8]>::to_vec)
            .with_context(|| format!("no bundled plugin `{name}`; bundled: {}", names.join(", ")));
    }
    std::fs::read(source).with_context(|| format!("cannot read plugin {source}"))
}

async fn load(runtime: &Runtime, source: &str) -> anyhow::Result<Arc<Plugin>> {
    let bytes = plugin_bytes(source)?;
    runtime
        .load(&bytes)
        .await
        .with_context(|| format!("loading plugin {source}"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Plugin {
            command: PluginCommand::Inspect { plugin },
        } => {
            let rt = runtime()?;
            let plugin = load(&rt, &plugin).await?;
            println!("{}", serde_json::to_string_pretty(plugin.manifest())?);
            Ok(())
        }
        Command::Plugin {
            command:
                PluginCommand::Run {
                    plugin,
                    action,
                    input,
                    instance,
                    actor,
                    roles,
                    data_dir,
                },
        } => {
            let rt = runtime()?;
            let plugin = load(&rt, &plugin).await?;
            let spec = match &instance {
                Some(path) => {
                    let (file, base) = instance_file::InstanceFile::read(path)?;
                    file.into_spec(&base)?
                }
                None => switchyard_runtime::InstanceSpec::new("dev", "dev"),
            };
            let store: Arc<dyn KvBackend> = match &data_dir {
                Some(dir) => {
                    std::fs::create_dir_all(dir)?;
                    Arc::new(SqliteStore::open(&dir.join("plugin-run.db"))?)
                }
                None => Arc::new(SqliteStore::open_in_memory()?),
            };
            let inst = Instance::new(&rt, plugin, spec, store)?;
            run_action(&inst, &action, &input, actor, roles).await
        }
        Command::Demo { once, listen } => demo::run(once, listen).await,
        Command::Check { config } => check(&config).await,
        Command::Serve { config, listen } => {
            let cfg = load_config(&config)?;
            let (db, secrets) = open_state(&cfg)?;
            let rt = Arc::new(runtime()?);
            let live = server::Live::start(&cfg, rt, db, Arc::new(secrets)).await?;
            server::serve(live, listen.unwrap_or(cfg.listen)).await
        }
        Command::Token { config, command } => token(&config, command).await,
        Command::Jobs { config, command } => {
            let cfg = load_config(&config)?;
            let (db, _) = open_state(&cfg)?;
            match command {
                JobsCommand::List {
                    tenant,
                    state,
                    limit,
                } => {
                    let state = match state.as_deref() {
                        None => None,
                        Some("queued") => Some(switchyard_store::JobState::Queued),
                        Some("running") => Some(switchyard_store::JobState::Running),
                        Some("done") => Some(switchyard_store::JobState::Done),
                        Some("dead") => Some(switchyard_store::JobState::Dead),
                        Some(other) => {
                            bail!("unknown job state `{other}`: use queued, running, done or dead")
                        }
                    };
                    for job in db.list_jobs(&tenant, state, limit).await? {
                        println!("{}", serde_json::to_string(&job)?);
                    }
                }
                JobsCommand::Retry { tenant, id } => {
                    if !db.retry_job(&tenant, id, server::now_ms()).await? {
                        bail!("tenant `{tenant}` has no dead job {id}");
                    }
                    eprintln!("job {id} is queued again");
                }
            }
            Ok(())
        }
        Command::Audit {
            config,
            tenant,
            limit,
        } => {
            let cfg = load_config(&config)?;
            let (db, _) = open_state(&cfg)?;
            for e in db.audit(&tenant, limit).await? {
                println!("{}", serde_json::to_string(&e)?);
            }
            Ok(())
        }
        Command::Secret { config, command } => secret(&config, command).await,
        Command::Invoke {
            config,
            tenant,
            instance,
            action,
            input,
            actor,
            roles,
        } => {
            let cfg = load_config(&config)?;
            let (db, secrets) = open_state(&cfg)?;
            let t = cfg
                .tenants
                .get(&tenant)
                .with_context(|| format!("no tenant `{tenant}` in {}", config.display()))?;
            let index = t
                .instances
                .iter()
                .position(|i| i.get_ref().id.get_ref() == &instance)
                .with_context(|| format!("tenant `{tenant}` has no instance `{instance}`"))?;
            let inst_cfg = t.instances[index].get_ref();
            let rt = runtime()?;
            let (plugins, _) = available_plugins(&rt, &cfg.plugin_dir).await;
            let plugin = pick_plugin(&plugins, inst_cfg)?;
            let secrets = Arc::new(secrets);
            let spec = cfg
                .instance_spec(t, index, |name| {
                    let secrets = secrets.clone();
                    let tenant = tenant.clone();
                    async move { Ok(secrets.get(&tenant, &name).await?) }
                })
                .await?;
            let inst = Instance::new(&rt, plugin, spec, db)?;
            run_action(&inst, &action, &input, actor, roles).await
        }
    }
}

/// Loads every available plugin: the bundled ones and each `.wasm` in the
/// plugin directory. Returns manifests by plugin id, and the problems of
/// files that are not usable plugins.
async fn available_plugins(
    rt: &Runtime,
    plugin_dir: &std::path::Path,
) -> (
    std::collections::BTreeMap<String, Vec<Arc<Plugin>>>,
    Vec<config::Problem>,
) {
    let mut plugins: std::collections::BTreeMap<String, Vec<Arc<Plugin>>> = Default::default();
    let mut problems = Vec::new();
    for (name, bytes) in switchyard_bundled::ALL {
        match rt.load(bytes).await {
            Ok(p) => plugins.entry(p.manifest().id.clone()).or_default().push(p),
            Err(e) => problems.push(config::Problem {
                file: format!("bundled:{name}").into(),
                line: 0,
                field: "(plugin)".into(),
                message: e.to_string(),
            }),
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(plugin_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    files.sort();
    for path in files {
        let loaded = match std::fs::read(&path) {
            Ok(bytes) => rt.load(&bytes).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match loaded {
            Ok(p) => plugins.entry(p.manifest().id.clone()).or_default().push(p),
            Err(message) => problems.push(config::Problem {
                file: path,
                line: 0,
                field: "(plugin)".into(),
                message,
            }),
        }
    }
    (plugins, problems)
}

/// Manifests by plugin id, for configuration checks.
fn manifests_of(
    plugins: &std::collections::BTreeMap<String, Vec<Arc<Plugin>>>,
) -> std::collections::BTreeMap<String, Vec<switchyard_runtime::Manifest>> {
    plugins
        .iter()
        .map(|(id, ps)| {
            (
                id.clone(),
                ps.iter().map(|p| p.manifest().clone()).collect(),
            )
        })
        .collect()
}

async fn check(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut problems = match config::Config::parse(dir) {
        Err(problems) => problems,
        Ok((cfg, mut problems)) => {
            let rt = runtime()?;
            let (plugins, plugin_problems) = available_plugins(&rt, &cfg.plugin_dir).await;
            problems.extend(plugin_problems);
            let manifests = manifests_of(&plugins);
            problems.extend(cfg.check_against(&manifests));
            if problems.is_empty() {
                for line in cfg.summary() {
                    println!("{line}");
                }
                let instances: usize = cfg.tenants.values().map(|t| t.instances.len()).sum();
                println!(
                    "{}: OK ({} tenant(s), {instances} instance(s); listen {}, {} mode)",
                    dir.display(),
                    cfg.tenants.len(),
                    cfg.listen,
                    match cfg.mode {
                        config::Mode::Production => "production",
                        config::Mode::Development => "development",
                    }
                );
                return Ok(());
            }
            problems
        }
    };
    problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    for p in &problems {
        println!("{p}");
    }
    bail!("{} problem(s) in {}", problems.len(), dir.display())
}

/// The plugin an instance runs: its pinned version, or the newest loaded.
fn pick_plugin(
    plugins: &std::collections::BTreeMap<String, Vec<Arc<Plugin>>>,
    inst: &config::InstanceConfig,
) -> anyhow::Result<Arc<Plugin>> {
    let id = inst.plugin.get_ref();
    plugins
        .get(id)
        .and_then(|versions| match &inst.version {
            None => versions.last(),
            Some(v) => versions
                .iter()
                .find(|p| &p.manifest().version == v.get_ref()),
        })
        .cloned()
        .with_context(|| {
            format!(
                "instance `{}`: plugin `{id}` is not installed; run `switchyard check`",
                inst.id.get_ref()
            )
        })
}

async fn token(dir: &std::path::Path, command: TokenCommand) -> anyhow::Result<()> {
    let cfg = load_config(dir)?;
    let (db, _) = open_state(&cfg)?;
    let tenant = match &command {
        TokenCommand::CreateOperator { .. } => server::OPERATOR,
        TokenCommand::Create { tenant, .. }
        | TokenCommand::List { tenant }
        | TokenCommand::Revoke { tenant, .. } => tenant,
    };
    if tenant != server::OPERATOR && !cfg.tenants.contains_key(tenant) {
        bail!("no tenant `{tenant}` in {}", dir.display());
    }
    match command {
        TokenCommand::CreateOperator { label } => {
            let (info, token) = db.create_token(server::OPERATOR, &label).await?;
            use secrecy::ExposeSecret;
            println!("{}", token.expose_secret());
            eprintln!(
                "created operator token {}; it is shown only this once",
                info.id
            );
        }
        TokenCommand::Create { tenant, label } => {
            let (info, token) = db.create_token(&tenant, &label).await?;
            use secrecy::ExposeSecret;
            println!("{}", token.expose_secret());
            eprintln!(
                "created token {} for tenant `{tenant}`; it is shown only this once",
                info.id
            );
        }
        TokenCommand::List { tenant } => {
            for t in db.list_tokens(&tenant).await? {
                println!("{}\t{}\tcreated {}", t.id, t.label, t.created_at);
            }
        }
        TokenCommand::Revoke { tenant, id } => {
            if !db.revoke_token(&tenant, &id).await? {
                bail!("tenant `{tenant}` has no token `{id}`");
            }
            eprintln!("revoked token {id} of tenant `{tenant}`");
        }
    }
    Ok(())
}

fn load_config(dir: &std::path::Path) -> anyhow::Result<config::Config> {
    config::Config::load(dir).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::anyhow!(
            "invalid configuration (run `switchyard check`):\n{}",
            lines.join("\n")
        )
    })
}

/// Opens the configured state backend and the secret store, whose master
/// key comes from `SWITCHYARD_MASTER_KEY` or `<data_dir>/master.key`
/// (created 0600 on first use).
fn open_state(cfg: &config::Config) -> anyhow::Result<(server::Db, switchyard_store::SecretStore)> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let db: server::Db = match &cfg.storage {
        config::StorageConfig::Sqlite { path } => {
            Arc::new(SqliteStore::open(&cfg.data_dir.join(path))?)
        }
    };
    let master = switchyard_store::MasterKey::from_env_or_file(
        "SWITCHYARD_MASTER_KEY",
        &cfg.data_dir.join("master.key"),
    )?;
    Ok((db.clone(), switchyard_store::SecretStore::new(db, master)))
}

async fn secret(dir: &std::path::Path, command: SecretCommand) -> anyhow::Result<()> {
    let cfg = load_config(dir)?;
    let (_, secrets) = open_state(&cfg)?;
    let known = |tenant: &str| -> anyhow::Result<()> {
        if cfg.tenants.contains_key(tenant) {
            Ok(())
        } else {
            bail!("no tenant `{tenant}` in {}", dir.display())
        }
    };
    match command {
        SecretCommand::Set { tenant, name } => {
            known(&tenant)?;
            let mut value = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut value)
                .context("reading the secret from standard input")?;
            let value = value.trim_end_matches(['\r', '\n']);
            if value.is_empty() {
                bail!("no secret value on standard input");
            }
            secrets
                .set(
                    &tenant,
                    &name,
                    &secrecy::SecretString::from(value.to_owned()),
                )
                .await?;
            eprintln!(
                "stored secret `{name}` for tenant `{tenant}` (reference it as secret:{name})"
            );
        }
        SecretCommand::List { tenant } => {
            known(&tenant)?;
            for m in secrets.list(&tenant).await? {
                println!("{}\tupdated {}", m.name, m.updated_at);
            }
        }
        SecretCommand::Delete { tenant, name } => {
            known(&tenant)?;
            if !secrets.delete(&tenant, &name).await? {
                bail!("tenant `{tenant}` has no secret `{name}`");
            }
            eprintln!("deleted secret `{name}` of tenant `{tenant}`");
        }
    }
    Ok(())
}

/// Invokes `action` as `actor`, prints the report to stderr and the JSON
/// output to stdout.
async fn run_action(
    inst: &Instance,
    action: &str,
    input: &str,
    actor: String,
    roles: Vec<String>,
) -> anyhow::Result<()> {
    let opts = CallOptions {
        actor: Some(Actor {
            id: actor,
            email: None,
            roles,
        }),
        ..CallOptions::default()
    };
    let inv = inst.invoke(action, input, opts).await;
    print_report(&inv.report);
    let out: serde_json::Value = serde_json::from_str(&inv.result?)?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Prints what a call did (logs, egress) to stderr, leaving stdout for the
/// plugin's JSON output.
fn print_report(report: &switchyard_runtime::Report) {
    for log in &report.logs {
        let fields: Vec<String> = log.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        eprintln!("[{}] {} {}", log.level, log.message, fields.join(" "));
    }
    if report.logs_dropped > 0 {
        eprintln!(
            "({} log records dropped over the budget)",
            report.logs_dropped
        );
    }
    for e in &report.egress {
        let status = e.status.map_or("-".to_owned(), |s| s.to_string());
        eprintln!(
            "egress {} {}{} -> {status} {} ({} ms)",
            e.method, e.destination, e.path, e.outcome, e.duration_ms
        );
    }
}

/// Fails with a message unless `cond` holds (demo step checks).
fn ensure_step(cond: bool, what: &str) -> anyhow::Result<()> {
    if !cond {
        bail!("demo step failed: {what}");
    }
    Ok(())
}
