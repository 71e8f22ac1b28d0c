//! `switchyard invoke TENANT INSTANCE ACTION`: runs one action of a
//! configured instance, with its real configuration and secrets.

use std::path::Path;

use anyhow::Context;
use switchyard_runtime::Instance;

use super::common::{print_output, run_action};
use crate::boot::{CLI_SLOTS, load_config, open_state, runtime};
use crate::errors::invoke_error_code;
use crate::plugins::Catalog;
use crate::record::{Subject, report_audit};

pub(super) async fn run(
    dir: &Path,
    tenant: &str,
    instance: &str,
    action: &str,
    input: &str,
    actor: String,
    roles: Vec<String>,
) -> anyhow::Result<()> {
    let cfg = load_config(dir)?;
    let (db, secrets) = open_state(&cfg).await?;
    let t = cfg
        .tenants
        .get(tenant)
        .with_context(|| format!("no tenant `{tenant}` in {}", dir.display()))?;
    let index = t
        .instances
        .iter()
        .position(|i| i.get_ref().id.get_ref() == instance)
        .with_context(|| format!("tenant `{tenant}` has no instance `{instance}`"))?;
    let (id, pin) = t.instances[index]
        .get_ref()
        .plugin_ref()
        .map_err(anyhow::Error::msg)?;
    let rt = runtime(CLI_SLOTS)?;
    let catalog = Catalog::load(&rt, &cfg.plugin_dir, &cfg.trust, None).await;
    // The build the daemon runs for this instance (its lock), not merely
    // the newest: a call must not run, or migrate the storage to, a
    // version the instance was never moved to.
    let locks = db.plugin_locks().await?;
    let lock = locks
        .iter()
        .find(|l| l.tenant == tenant && l.instance == instance);
    let resolved = catalog
        .resolve_locked(
            tenant,
            instance,
            &id,
            pin.as_ref(),
            lock,
            &t.policy(&catalog),
        )
        .map_err(|e| anyhow::anyhow!("instance `{instance}`: {e}; run `switchyard check`"))?;
    let moves =
        lock.is_some_and(|l| l.plugin != id || l.version != resolved.entry.version.to_string());
    anyhow::ensure!(
        !moves,
        "instance `{instance}` would move to {id} {} ({}); the daemon moves it at its next \
         start or reload, or `switchyard plugin upgrade` does: run the call after that",
        resolved.entry.version,
        resolved
            .note
            .as_deref()
            .unwrap_or("its locked version changed"),
    );
    let plugin = resolved.entry.plugin.clone();
    let spec = cfg.instance_spec(t, index, &secrets).await?;
    let inst = Instance::new(&rt, plugin, spec, db.clone())?;
    let started = std::time::Instant::now();
    let actor_id = format!("cli:{actor}");
    let inv = run_action(&inst, action, input, actor, roles).await?;
    // Run from the command line, it is still an action on the tenant's
    // behalf: it is audited like one from the API.
    let outcome = match &inv.result {
        Ok(_) => "ok",
        Err(e) => invoke_error_code(e),
    };
    let who = Subject {
        tenant,
        instance: Some(instance),
        actor: &actor_id,
        request_id: &inv.report.request_id,
    };
    let mut entries = vec![who.entry(
        "action",
        action,
        outcome,
        started.elapsed().as_millis() as i64,
    )];
    entries.extend(report_audit(tenant, instance, &actor_id, &inv.report));
    db.append_audit(entries)
        .await
        .map_err(|e| anyhow::anyhow!("writing the audit log: {e}"))?;
    print_output(inv)
}
