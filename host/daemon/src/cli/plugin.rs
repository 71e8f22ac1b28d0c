//! `switchyard plugin inspect|run`: a plugin's manifest, and one action run
//! locally, for plugin authors.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use switchyard_runtime::{Instance, InstanceSpec, Plugin, Runtime};
use switchyard_store::{KvBackend, SqliteStore};

use super::common::{print_output, run_action};
use crate::boot::{CLI_SLOTS, load_config, open_state, runtime};
use crate::instance_file::InstanceFile;

/// `switchyard plugin upgrade`: forgets the recorded builds, and says what
/// each instance will run after the next reload.
async fn upgrade(
    rt: &Runtime,
    dir: &std::path::Path,
    tenant: &str,
    instance: Option<&str>,
) -> anyhow::Result<()> {
    let cfg = load_config(dir)?;
    let t = cfg
        .tenants
        .get(tenant)
        .with_context(|| format!("no tenant `{tenant}` in {}", dir.display()))?;
    if let Some(i) = instance {
        anyhow::ensure!(
            t.instances.iter().any(|x| x.get_ref().id.get_ref() == i),
            "tenant `{tenant}` has no instance `{i}`"
        );
    }
    let (db, _) = open_state(&cfg)?;
    let locks = db.plugin_locks().await?;
    let catalog = crate::plugins::Catalog::load(rt, &cfg.plugin_dir, None).await;
    db.forget_plugin_locks(tenant, instance).await?;
    for x in &t.instances {
        let ic = x.get_ref();
        let id = ic.id.get_ref();
        if instance.is_some_and(|i| i != id) {
            continue;
        }
        let was = locks
            .iter()
            .find(|l| l.tenant == tenant && &l.instance == id)
            .map_or("(nothing recorded)".to_owned(), |l| {
                format!("{} {}", l.plugin, l.version)
            });
        let will = match ic.plugin_ref() {
            Err(e) => e,
            Ok((pid, pin)) => match catalog.resolve(&pid, pin.as_ref()) {
                Ok(e) => format!("{pid} {}", e.version),
                Err(e) => e,
            },
        };
        println!("{tenant}/{id}: {was} -> {will}");
    }
    eprintln!("the instances take these versions at the next reload (SIGHUP) or restart");
    Ok(())
}

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

#[derive(Subcommand)]
pub(super) enum PluginCommand {
    /// Print a plugin's manifest as JSON.
    Inspect {
        /// A `.wasm` component or `bundled:<name>`.
        plugin: String,
    },
    /// Run one action of a plugin and print its JSON output.
    Run {
        /// A `.wasm` component or `bundled:<name>`.
        plugin: String,
        /// Action name.
        action: String,
        /// Action input (JSON).
        #[arg(long, default_value = "{}")]
        input: String,
        /// Instance file: config, egress allowlist, credentials, limits.
        #[arg(long)]
        instance: Option<PathBuf>,
        /// Actor id for the call.
        #[arg(long, default_value = "cli")]
        actor: String,
        /// Actor roles (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Keep storage in `<dir>/plugin-run.db` across runs (default: in memory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Move a tenant's instances (or one) on to the highest installed
    /// version their pins allow, at the next reload or restart. Until then
    /// an instance keeps the build it was set up with, whatever is
    /// installed beside it.
    Upgrade {
        /// The configuration directory.
        #[arg(long)]
        config: PathBuf,
        /// Tenant id.
        tenant: String,
        /// Instance id (default: every instance of the tenant).
        instance: Option<String>,
    },
}

pub(super) async fn run(command: PluginCommand) -> anyhow::Result<()> {
    let rt = runtime(CLI_SLOTS)?;
    match command {
        PluginCommand::Upgrade {
            config,
            tenant,
            instance,
        } => upgrade(&rt, &config, &tenant, instance.as_deref()).await,
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
