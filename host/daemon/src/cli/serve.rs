//! `switchyard serve --config DIR`.
//!
//! A tenant file with errors, or an instance that cannot be built (a
//! missing secret, an unknown plugin, a setting the plugin refuses), does
//! not stop the daemon: it is reported here, in the log, in `/metrics` and
//! in the instance's status, and every other tenant is served. Only an
//! unusable `switchyard.toml` stops it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::boot::open_state;
use crate::config::Config;
use crate::problem::{self, Problem};
use crate::state::Live;

pub(super) async fn run(config: &Path, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let (mut cfg, mut problems) = Config::parse(config).map_err(|problems| {
        anyhow::anyhow!(
            "invalid switchyard.toml (run `switchyard check`):\n{}",
            problem::render(&problems)
        )
    })?;
    let _lock = crate::boot::lock_data_dir(&cfg)?;
    let (db, secrets) = open_state(&cfg).await?;
    cfg.add_managed(&db.managed_configs().await?, &mut problems);
    let errors: Vec<Problem> = problems.iter().filter(|p| p.is_error()).cloned().collect();
    if !errors.is_empty() {
        eprintln!(
            "the tenants of these files are not served until they are fixed (then reload):\n{}",
            problem::render(&errors)
        );
    }
    let clock = crate::boot::clock_from_env(cfg.mode)?;
    let rt = Arc::new(crate::boot::runtime_with_clock(cfg.wasm_slots(), clock)?);
    let live = Live::start(&cfg, &problems, rt, db, Arc::new(secrets), true).await?;
    let listen = listen.unwrap_or(cfg.listen);
    // The parsed files are not needed once the instances are built (a
    // reload reads them again); with 10,000 tenants they are megabytes.
    drop((cfg, problems));
    crate::state::release_freed_memory();
    crate::server::serve(live, listen).await
}
