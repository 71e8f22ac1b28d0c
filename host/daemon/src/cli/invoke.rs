//! `switchyard invoke TENANT INSTANCE ACTION`: runs one action of a
//! configured instance, with its real configuration and secrets.

use std::path::Path;

use anyhow::Context;
use switchyard_runtime::Instance;

use super::{load_config, open_state, print_output, run_action, runtime};
use crate::plugins::Catalog;

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
    let (db, secrets) = open_state(&cfg)?;
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
    let rt = runtime()?;
    let catalog = Catalog::load(&rt, &cfg.plugin_dir, None).await;
    let plugin = catalog
        .resolve(&id, pin.as_ref())
        .map_err(|e| anyhow::anyhow!("instance `{instance}`: {e}; run `switchyard check`"))?
        .plugin
        .clone();
    let spec = cfg.instance_spec(t, index, &secrets).await?;
    let inst = Instance::new(&rt, plugin, spec, db)?;
    print_output(run_action(&inst, action, input, actor, roles).await?)
}
