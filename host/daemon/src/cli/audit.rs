//! `switchyard audit TENANT`: the audit log, newest first, as JSON lines.

use std::path::Path;

use crate::boot::{load_config, open_state};

/// The most entries one call prints (the store's limit too).
const MAX_LIMIT: u32 = 10_000;

pub(super) async fn run(dir: &Path, tenant: &str, limit: u32) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_LIMIT).contains(&limit),
        "--limit must be 1-{MAX_LIMIT}"
    );
    let cfg = load_config(dir)?;
    let (db, _) = open_state(&cfg).await?;
    // One more than asked says whether the log goes on.
    let mut entries = db
        .audit(tenant, limit.saturating_add(1).min(MAX_LIMIT))
        .await?;
    let more = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    for e in &entries {
        println!("{}", serde_json::to_string(e)?);
    }
    if more {
        eprintln!(
            "(the newest {limit} entries; older ones exist: use --limit N, up to {MAX_LIMIT})"
        );
    } else if entries.is_empty() {
        eprintln!("(no audit entries for tenant `{tenant}`)");
    }
    Ok(())
}
