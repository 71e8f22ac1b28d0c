//! `switchyard`: the Switchyard command-line tool.
//!
//! - `switchyard plugin inspect <plugin>` prints a plugin's manifest as JSON.
//! - `switchyard plugin run <plugin> <action> --input <json>` runs one action,
//!   for plugin authors; `--instance <file.json>` supplies configuration,
//!   egress allowlist and credentials (see [`instance_file`]).
//! - `switchyard demo` runs a scripted scenario on the bundled plugins.
//!
//! `<plugin>` is a path to a `.wasm` component or `bundled:<name>`.

mod demo;
mod instance_file;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use switchyard_runtime::{Actor, CallOptions, Instance, Plugin, Runtime, RuntimeConfig};
use switchyard_store::{KvBackend, SqliteStore};

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
    /// Run the demo scenario on the bundled plugins.
    Demo {
        /// Run the scenario and exit (0 when every step succeeded).
        #[arg(long)]
        once: bool,
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
            let inv = inst
                .invoke(
                    &action,
                    &input,
                    CallOptions {
                        actor: Some(Actor {
                            id: actor,
                            email: None,
                            roles,
                        }),
                        ..CallOptions::default()
                    },
                )
                .await;
            print_report(&inv.report);
            let out = inv.result?;
            let pretty: serde_json::Value = serde_json::from_str(&out)?;
            println!("{}", serde_json::to_string_pretty(&pretty)?);
            Ok(())
        }
        Command::Demo { once } => demo::run(once).await,
    }
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
