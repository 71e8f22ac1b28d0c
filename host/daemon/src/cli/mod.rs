//! The command line: one file per command, sharing the helpers in
//! `common` (and [`crate::boot`] for the configuration, the state backend
//! and the runtime).
//!
//! - `switchyard plugin new|inspect|run`: for plugin authors ([`plugin`],
//!   [`scaffold`]);
//! - `switchyard serve --config DIR`: the daemon ([`serve`]);
//! - `switchyard check`: validate a configuration directory ([`check`]);
//! - `switchyard secret|token|jobs|audit|invoke`: operate it;
//! - `switchyard tenant`: tenants managed through the admin API ([`tenant`]);
//! - `switchyard migrate [--check]`: the state database's schema ([`migrate`]);
//! - `switchyard demo`: the daemon with a sample tenant and a scenario.

mod audit;
mod check;
mod common;
mod invoke;
mod jobs;
mod migrate;
mod plugin;
mod release;
mod scaffold;
mod secret;
mod serve;
mod tenant;
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
    /// What to log on stderr: a level (off, error, warn, info, debug,
    /// trace) or directives such as `warn,switchyard=debug`. Default: the
    /// `SWITCHYARD_LOG` environment variable, else `RUST_LOG`, else `warn`.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    /// How to log: `text` (default; coloured only on a terminal) or `json`
    /// (one object per line). Default: `SWITCHYARD_LOG_FORMAT`, else text.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

/// The log format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per record.
    Json,
}

/// Levels a filter without `=` may name; anything else is a typo, not the
/// name of a module (which would silently log nothing).
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Sets up logging from the flags and the environment; an invalid setting
/// is an error naming where it came from.
fn init_logging(cli: &Cli) -> Result<(), String> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let env = |name: &'static str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (name, v))
    };
    let filter = match cli
        .log_level
        .clone()
        .map(|f| ("--log-level", f))
        .or_else(|| env("SWITCHYARD_LOG"))
        .or_else(|| env("RUST_LOG"))
    {
        None => EnvFilter::new("warn"),
        Some((from, f)) => {
            let word = f.trim().to_ascii_lowercase();
            if !word.contains('=') && !word.contains(',') && !LEVELS.contains(&word.as_str()) {
                return Err(format!(
                    "{from} `{f}`: expected a level ({}) or directives such as \
                     `warn,switchyard=debug`",
                    LEVELS.join(", ")
                ));
            }
            EnvFilter::try_new(&f).map_err(|e| format!("{from} `{f}`: {e}"))?
        }
    };
    let format = match (cli.log_format, env("SWITCHYARD_LOG_FORMAT")) {
        (Some(f), _) => f,
        (None, None) => LogFormat::Text,
        (None, Some((from, v))) => <LogFormat as clap::ValueEnum>::from_str(v.trim(), true)
            .map_err(|_| format!("{from} `{v}`: expected `text` or `json`"))?,
    };
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only where a person reads them: a log file or a
        // collector gets plain text.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => log.init(),
        LogFormat::Json => log.json().init(),
    }
    Ok(())
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
    /// Apply the state database's schema migrations (`serve` applies them
    /// too), or with --check only say whether any are pending: exit status
    /// 0 up to date, 3 pending, 1 when it cannot tell (unreachable, or a
    /// schema newer than this binary).
    Migrate {
        /// The configuration directory.
        #[arg(long)]
        config: PathBuf,
        /// Change nothing; report, and exit 3 when migrations are pending.
        #[arg(long)]
        check: bool,
    },
    /// Tenants managed through the admin API: list, import, export,
    /// history, remove.
    Tenant {
        /// The configuration directory.
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        command: tenant::TenantCommand,
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
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli) {
        eprintln!("error: {e}");
        return std::process::ExitCode::from(2);
    }
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
        Err(e) if e.is::<migrate::Pending>() => {
            eprintln!("{e}");
            std::process::ExitCode::from(migrate::PENDING_STATUS)
        }
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
        Command::Tenant { config, command } => tenant::run(&config, command).await,
        Command::Jobs { config, command } => jobs::run(&config, command).await,
        Command::Migrate { config, check } => migrate::run(&config, check).await,
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
