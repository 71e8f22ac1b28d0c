//! The Switchyard daemon (`switchyard serve`) and command-line tool.
//!
//! One home per responsibility, and data flowing one way. Each module uses
//! only modules listed before it:
//!
//! | module | responsibility |
//! |---|---|
//! | [`clock`], [`problem`], [`admission`] | time and request ids; a configuration problem with file and line; limits on synchronous calls in flight |
//! | [`plugins`] | the plugin catalog: bundled plugins and `plugin_dir`, reserved ids, version choice |
//! | [`config`] | `switchyard.toml` and tenant files: parsing, checks (with [`switchyard_runtime::grants`]), runtime specs, secret references |
//! | [`instance_file`] | the `plugin run --instance` file (the same credential schema) |
//! | [`metrics`], [`openapi`], [`errors`], [`body`] | Prometheus metrics; the API's paths and document; error answers and the one status table; reading request bodies (capped, timed) |
//! | [`webhook::verify`], [`webhook::delivery`] | webhook verification as pure functions; a queued delivery's stored form |
//! | [`state`] | the built configuration (tenants, instances, routes), swapped whole on reload |
//! | [`record`] | metrics, run statistics and audit entries of every invocation |
//! | [`webhook`] | the webhook handler |
//! | [`worker`], [`scheduler`], [`janitor`] | the queue worker; firing schedules; retention |
//! | [`api`] | the router and every other handler; authentication as extractors |
//! | [`console`] | the web console for tenant admins (HTML on the admin API's functions) |
//! | [`server`] | serving: listener, signals, worker and scheduler together |
//! | [`boot`] | opening the runtime, the configuration and the state backend |
//! | `demo` | `switchyard demo` (cargo feature `demo`, on by default) |
//! | [`cli`] | one file per command |
//!
//! ```no_run
//! // The binary is this:
//! fn main() -> std::process::ExitCode {
//!     switchyard::cli::main()
//! }
//! ```

pub mod admission;
pub mod api;
pub mod body;
pub mod boot;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
#[cfg(feature = "demo")]
mod demo;
pub mod errors;
pub mod install;
pub mod instance_file;
pub mod janitor;
pub mod metrics;
pub mod openapi;
pub mod plugins;
pub mod problem;
pub mod record;
pub mod release;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod webhook;
pub mod worker;
