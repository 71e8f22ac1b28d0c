//! `switchyard plugin inspect|run`: a plugin's manifest, and one action run
//! locally, for plugin authors.

use std::sync::Arc;

use anyhow::Context;
use switchyard_runtime::{Instance, InstanceSpec, Plugin, Runtime};
use switchyard_store::{KvBackend, SqliteStore};

use super::{CLI_SLOTS, PluginCommand, print_output, run_action, runtime};
use crate::instance_file::InstanceFile;

/// Reads a plugin's bytes from a path or the bundled set.
fn plugin_bytes(source: &str) -> anyhow::Result<Vec<u8>> {
    if let Some(name) = source.strip_prefix("bundled:") {
        let names: Vec<_> = switchyard_bundled::ALL.iter().map(|(n, _)| *n).collect();
        return switchyard_bundled::get(name)
            .map(<[u8]>::to_vec)
            .with_context(|| format!("no bundled plugin `{name}`; bundled: {}", names.join(", ")));
    }
    std::fs::read(source).with_context(|| format!("cannot read plugin {source}"))
}

async fn load(runtime: &Runtime, source: &str) -> anyhow::Result<Arc<Plugin>> {
    let bytes = plugin_bytes(source)?;
    runtime
        .load(&bytes)
        .await
        .with_context(|| format!("loading plugin {source}"))
}

pub(super) async fn run(command: PluginCommand) -> anyhow::Result<()> {
    let rt = runtime(CLI_SLOTS)?;
    match command {
        PluginCommand::Inspect { plugin } => {
            let plugin = load(&rt, &plugin).await?;
            println!("{}", serde_json::to_string_pretty(plugin.manifest())?);
            Ok(())
        }
        PluginCommand::Run {
            plugin,
            action,
            input,
            instance,
            actor,
            roles,
            data_dir,
        } => {
            let plugin = load(&rt, &plugin).await?;
            let spec = match &instance {
                Some(path) => {
                    let (file, base) = InstanceFile::read(path)?;
                    file.into_spec(&base).await?
                }
                None => InstanceSpec::new("dev", "dev"),
            };
            let store: Arc<dyn KvBackend> = match &data_dir {
                Some(dir) => {
                    std::fs::create_dir_all(dir)?;
                    Arc::new(SqliteStore::open(&dir.join("plugin-run.db"))?)
                }
                None => Arc::new(SqliteStore::open_in_memory()?),
            };
            let inst = Instance::new(&rt, plugin, spec, store)?;
            print_output(run_action(&inst, &action, &input, actor, roles).await?)
        }
    }
}
