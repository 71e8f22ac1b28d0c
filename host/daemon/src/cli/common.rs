//! What several commands share: checking a tenant exists, running an
//! action and printing what it did.

use switchyard_runtime::{Actor, CallOptions, Instance};

use crate::config::Config;
use crate::state::Db;

/// Fails unless `tenant` has a file (even one with problems: its tokens
/// and secrets can be managed while it is being fixed) or is managed
/// through the admin API.
pub(super) async fn known_tenant(cfg: &Config, db: &Db, tenant: &str) -> anyhow::Result<()> {
    let file = cfg.dir.join("tenants").join(format!("{tenant}.toml"));
    if cfg.tenants.contains_key(tenant) || (crate::config::is_id(tenant) && file.is_file()) {
        return Ok(());
    }
    anyhow::ensure!(
        !db.config_versions(tenant).await?.is_empty(),
        "no tenant `{tenant}` in {} or managed through the admin API",
        cfg.dir.display()
    );
    Ok(())
}

/// Invokes `action` as `actor`, prints the report to stderr and the JSON
/// output to stdout.
pub(super) async fn run_action(
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
pub(super) fn print_output(inv: switchyard_runtime::Invocation<String>) -> anyhow::Result<()> {
    let out: serde_json::Value = serde_json::from_str(&inv.result?)?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Prints what a call did (logs, egress) to stderr, leaving stdout for the
/// plugin's JSON output.
pub(super) fn print_report(report: &switchyard_runtime::Report) {
    if let Some(m) = &report.migrated {
        let from = m.from.as_deref().unwrap_or("an unrecorded version");
        match &m.error {
            None => eprintln!(
                "storage migrated from {from} to {} first: {} ({} ms)",
                m.to, m.summary, m.duration_ms
            ),
            Some(e) => eprintln!("storage migration from {from} to {} failed: {e}", m.to),
        }
    }
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
