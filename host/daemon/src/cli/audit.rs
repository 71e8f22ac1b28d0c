//! `switchyard audit TENANT`: the audit log, newest first, as JSON lines.

use std::path::Path;

use super::{load_config, open_state};

pub(super) async fn run(dir: &Path, tenant: &str, limit: u32) -> anyhow::Result<()> {
    let cfg = load_config(dir)?;
    let (db, _) = open_state(&cfg)?;
    for e in db.audit(tenant, limit).await? {
        println!("{}", serde_json::to_string(&e)?);
    }
    Ok(())
}
