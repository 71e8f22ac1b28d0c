//! The command line: one file per command, sharing the helpers in
//! `common` (and [`crate::boot`] for the configuration, the state backend
//! and the runtime).
//!
//! - `switchyard plugin inspect|run`: for plugin authors ([`plugin`]);
//! - `switchyard serve --config DIR`: the daemon ([`serve`]);
//! - `switchyard check`: validate a configuration directory ([`check`]);
//! - `switchyard secret|token|jobs|audit|invoke`: operate it;
//! - `switchyard demo`: the daemon with a sample tenant and a scenario.

mod audit;
mod check;
mod common;
mod invoke;
mod jobs;
mod plugin;
mod secret;
mod serve;
mod token;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
        command: plugin::PluginCommand,
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
        command: token::TokenCommand,
    },
    /// List or retry a tenant's queued, running, done and dead jobs.
    Jobs {
        /// The configuration directory.
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        command: jobs::JobsCommand,
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
        command: secret::SecretCommand,
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
