//! The command line: one file per command, sharing the helpers below
//! (opening the configuration, the state backend, the runtime).
//!
//! - `switchyard plugin inspect|run`: for plugin authors ([`plugin`]);
//! - `switchyard serve --config DIR`: the daemon ([`serve`]);
//! - `switchyard check`: validate a configuration directory ([`check`]);
//! - `switchyard secret|token|jobs|audit|invoke`: operate it;
//! - `switchyard demo`: the daemon with a sample tenant and a scenario.

mod audit;
mod check;
mod invoke;
mod jobs;
mod plugin;
mod secret;
mod serve;
mod token;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use switchyard_runtime::{Actor, CallOptions, Instance};

pub(crate) use crate::boot::{CLI_SLOTS, load_config, open_state, runtime};
use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Multi-tenant WebAssembly plugin host for ITSM integrations"
)]
pub struct Cli {
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
    /// Move a tenant's instances (or one) on to the highest installed
    /// version their pins allow, at the next reload or restart. Until then
    /// an instance keeps the build it was set up with, whatever is
    /// installed beside it.
    Upgrade {
        /// The configuration directory.
        #[arg(long)]
        config: PathBuf,
        /// Tenant id.
        tenant: String,
        /// Instance id (default: every instance of the tenant).
        instance: Option<String>,
    },
}

/// Parses the command line, runs the command, and turns an error into a
/// message and exit status 1.
pub fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Plugin { command } => plugin::run(command).await,
        Command::Demo { once, listen } => demo(once, listen).await,
        Command::Check { config } => check::run(&config).await,
        Command::Serve { config, listen } => serve::run(&config, listen).await,
        Command::Token { config, command } => token::run(&config, command).await,
        Command::Jobs { config, command } => jobs::run(&config, command).await,
        Command::Audit {
            config,
            tenant,
            limit,
        } => audit::run(&config, &tenant, limit).await,
        Command::Secret { config, command } => secret::run(&config, command).await,
        Command::Invoke {
            config,
            tenant,
            instance,
            action,
            input,
            actor,
            roles,
        } => invoke::run(&config, &tenant, &instance, &action, &input, actor, roles).await,
    }
}

#[cfg(feature = "demo")]
async fn demo(once: bool, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    crate::demo::run(once, listen).await
}

#[cfg(not(feature = "demo"))]
async fn demo(_once: bool, _listen: std::net::SocketAddr) -> anyhow::Result<()> {
    anyhow::bail!(
        "this switchyard was built without the demo (cargo feature `demo`); \
         run `cargo run -p switchyard -- demo` from the source tree"
    )
}

/// Fails unless `tenant` is configured.
/// Fails unless `tenant` has a file (even one with problems: its tokens
/// and secrets can be managed while it is being fixed).
fn known_tenant(cfg: &Config, tenant: &str) -> anyhow::Result<()> {
    let file = cfg.dir.join("tenants").join(format!("{tenant}.toml"));
    anyhow::ensure!(
        cfg.tenants.contains_key(tenant) || (crate::config::is_id(tenant) && file.is_file()),
        "no tenant `{tenant}` in {}",
        cfg.dir.display()
    );
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
) -> anyhow::Result<switchyard_runtime::Invocation<String>> {
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
    Ok(inv)
}

/// Prints a successful invocation's JSON output to stdout, or fails.
fn print_output(inv: switchyard_runtime::Invocation<String>) -> anyhow::Result<()> {
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
