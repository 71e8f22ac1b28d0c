//! `switchyard serve --config DIR`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use super::{load_config, open_state, runtime};
use crate::state::Live;

pub(super) async fn run(config: &Path, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let cfg = load_config(config)?;
    let _lock = crate::boot::lock_data_dir(&cfg)?;
    let (db, secrets) = open_state(&cfg)?;
    let rt = Arc::new(runtime(cfg.wasm_slots())?);
    let live = Live::start(&cfg, rt, db, Arc::new(secrets)).await?;
    crate::server::serve(live, listen.unwrap_or(cfg.listen)).await
}
