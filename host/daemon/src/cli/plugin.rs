//! `switchyard plugin new|inspect|run|upgrade|keygen|sign|verify|install|list`: for
//! plugin authors, a new plugin crate (see `scaffold`), a plugin's manifest,
//! one action, webhook delivery or job run locally, and signed releases (see
//! `release`); for operators, upgrades of configured instances and what is
//! installed.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use switchyard_runtime::{
    CallOptions, Instance, InstanceSpec, Plugin, Runtime, WebhookHeader, WebhookRequest,
};
use switchyard_store::{KvBackend, SqliteStore};

use super::common::{print_output, print_report, run_action};
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
    let (db, _) = open_state(&cfg).await?;
    let locks = db.plugin_locks().await?;
    let catalog = crate::plugins::Catalog::load(rt, &cfg.plugin_dir, &cfg.trust, None).await;
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
            Ok((pid, pin)) => match catalog.resolve_for(&pid, pin.as_ref(), &t.policy(&catalog)) {
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

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub(super) enum PluginCommand {
    /// Print a plugin's manifest as JSON, and on standard error its size
    /// and how long it took to compile (or to load from the compile cache).
    Inspect {
        /// A `.wasm` component or `bundled:<name>`.
        plugin: String,
    },
    /// Run one action, webhook route or job of a plugin locally and print
    /// what it returned: an action's JSON output, a webhook's answer as
    /// JSON (`status`, `headers`, `body`), a job's summary.
    #[command(group(
        clap::ArgGroup::new("entry").required(true).args(["action", "webhook", "job"])
    ))]
    Run {
        /// A `.wasm` component or `bundled:<name>`.
        plugin: String,
        /// Action name.
        action: Option<String>,
        /// Deliver a request to this webhook route instead (as the host
        /// does once a delivery is verified: no token or signature check).
        #[arg(long, value_name = "ROUTE")]
        webhook: Option<String>,
        /// Run this job instead.
        #[arg(long, value_name = "NAME")]
        job: Option<String>,
        /// Action input (JSON).
        #[arg(long, default_value = "{}")]
        input: String,
        /// The webhook request's body: a file, or `-` for standard input
        /// (default: empty).
        #[arg(long, value_name = "FILE")]
        body: Option<PathBuf>,
        /// A webhook request header, `Name: value` (repeatable).
        #[arg(long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// The webhook request's method (default: POST).
        #[arg(long)]
        method: Option<String>,
        /// The webhook request's query string (without `?`).
        #[arg(long)]
        query: Option<String>,
        /// Instance file: config, egress allowlist, credentials, limits.
        #[arg(long)]
        instance: Option<PathBuf>,
        /// Actor id for the call.
        #[arg(long, default_value = "cli")]
        actor: String,
        /// Actor roles (repeatable). An action that requires a role is
        /// refused without it, as the daemon refuses it.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Keep storage in `<dir>/plugin-run.db` across runs (default: in memory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Write a new plugin crate (outside this repository): a typed action,
    /// a webhook route, a job, a test and an `--instance` example, ready to
    /// build with `cargo build --release --target wasm32-wasip2`.
    New {
        /// The plugin's name (its id and crate name): lowercase letters,
        /// digits and `-`.
        name: String,
        /// Where to write it (default: `./NAME`); must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The SDK from a checkout of the Switchyard repository: its `sdk`
        /// directory (default: the checkout this binary was built from,
        /// when it is still there).
        #[arg(long, conflicts_with = "sdk_git")]
        sdk_path: Option<PathBuf>,
        /// The SDK from the Switchyard repository's git URL instead.
        #[arg(long)]
        sdk_git: Option<String>,
        /// With --sdk-git: the revision (commit or tag) to build against.
        #[arg(long, requires = "sdk_git")]
        sdk_rev: Option<String>,
    },
    /// Make a publisher key pair: NAME.key (the signing key, readable by
    /// you only) and NAME.pub (the public key operators trust).
    Keygen {
        /// The publisher's name (as operators will list it).
        name: String,
        /// Where to write the two files.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Sign a component: writes FILE.sig with its plugin id, version, WIT
    /// world and SHA-256, signed with your key.
    Sign {
        /// The `.wasm` component.
        plugin: PathBuf,
        /// Your signing key (from `switchyard plugin keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the signature (default: FILE.sig).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a component against its signature (FILE.sig) and the keys you
    /// trust; exits non-zero naming the reason when it does not hold.
    Verify {
        /// The `.wasm` component.
        plugin: PathBuf,
        /// The signature file (default: FILE.sig).
        #[arg(long)]
        signature: Option<PathBuf>,
        /// A trusted public key: a `.pub` file or `ed25519:…` (repeatable).
        #[arg(long = "key")]
        keys: Vec<String>,
        /// Also trust the publishers of this configuration's
        /// `[trust.publishers]`.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Install a plugin release: check it as the daemon will (its
    /// signature FILE.sig against [trust.publishers], or whether unsigned
    /// plugins are allowed), then copy it to PLUGIN_DIR/<id>/<version>.wasm
    /// with its signature. Nothing is copied when a check fails.
    Install {
        /// The `.wasm` component.
        plugin: PathBuf,
        /// The configuration directory.
        #[arg(long)]
        config: PathBuf,
        /// The signature file (default: FILE.sig, when it exists).
        #[arg(long)]
        signature: Option<PathBuf>,
    },
    /// List installed plugin versions: who vouches for each (built in,
    /// unsigned, or the publisher that signed it) and which instances run
    /// it; then the plugin files that are refused, and why.
    List {
        /// The configuration directory.
        #[arg(long)]
        config: PathBuf,
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
        PluginCommand::Keygen { name, dir } => super::release::keygen(&name, &dir),
        PluginCommand::Sign { plugin, key, out } => {
            super::release::sign(&rt, &plugin, &key, out.as_deref()).await
        }
        PluginCommand::Verify {
            plugin,
            signature,
            keys,
            config,
        } => {
            super::release::verify(&rt, &plugin, signature.as_deref(), &keys, config.as_deref())
                .await
        }
        PluginCommand::List { config } => super::release::list(&rt, &config).await,
        PluginCommand::Install {
            plugin,
            config,
            signature,
        } => super::release::install(&rt, &config, &plugin, signature.as_deref()).await,
        PluginCommand::Upgrade {
            config,
            tenant,
            instance,
        } => upgrade(&rt, &config, &tenant, instance.as_deref()).await,
        PluginCommand::New {
            name,
            dir,
            sdk_path,
            sdk_git,
            sdk_rev,
        } => {
            let sdk = match (sdk_path, sdk_git) {
                (_, Some(url)) => super::scaffold::Sdk::Git { url, rev: sdk_rev },
                (Some(p), None) => super::scaffold::Sdk::Path(p),
                (None, None) => {
                    let built_from =
                        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk");
                    anyhow::ensure!(
                        built_from.join("Cargo.toml").is_file(),
                        "say where the SDK is: --sdk-path <switchyard checkout>/sdk or \
                         --sdk-git <repository URL>"
                    );
                    super::scaffold::Sdk::Path(built_from)
                }
            };
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            super::scaffold::write(&name, &dir, &sdk)?;
            eprintln!(
                "wrote plugin `{name}` to {}; next:\n  cd {} && cargo build --release --target wasm32-wasip2\n  \
                 (README.md there has the commands that run it)",
                dir.display(),
                dir.display()
            );
            Ok(())
        }
        PluginCommand::Inspect { plugin: source } => {
            let plugin = load(&rt, &source).await?;
            println!("{}", serde_json::to_string_pretty(plugin.manifest())?);
            // On stderr, so that stdout stays the manifest alone.
            let c = plugin.compiled();
            eprintln!(
                "{source}: {:.1} MB component, sha256 {}; {} in {} ms",
                c.component_bytes as f64 / 1e6,
                plugin.digest(),
                if c.from_cache {
                    "loaded from the compile cache"
                } else {
                    "compiled"
                },
                c.took.as_millis()
            );
            Ok(())
        }
        PluginCommand::Run {
            plugin,
            action,
            webhook,
            job,
            input,
            body,
            headers,
            method,
            query,
            instance,
            actor,
            roles,
            data_dir,
        } => {
            anyhow::ensure!(
                webhook.is_some()
                    || (body.is_none()
                        && headers.is_empty()
                        && method.is_none()
                        && query.is_none()),
                "--body, --header, --method and --query describe a webhook request: \
                 use them with --webhook ROUTE"
            );
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
            if let Some(route) = webhook {
                let request = WebhookRequest {
                    method: method.unwrap_or_else(|| "POST".to_owned()),
                    query: query.unwrap_or_default(),
                    headers: parse_headers(&headers)?,
                    body: read_body(body.as_deref())?,
                };
                let inv = inst
                    .handle_webhook(&route, request, CallOptions::default())
                    .await;
                print_report(&inv.report);
                let answer = inv.result?;
                let headers: serde_json::Map<String, serde_json::Value> = answer
                    .headers
                    .into_iter()
                    .map(|h| (h.name, h.value.into()))
                    .collect();
                let out = serde_json::json!({
                    "status": answer.status,
                    "headers": headers,
                    "body": String::from_utf8_lossy(&answer.body),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            if let Some(job) = job {
                let inv = inst.run_job(&job, CallOptions::default()).await;
                print_report(&inv.report);
                println!("{}", inv.result?);
                return Ok(());
            }
            let action = action.expect("clap requires an action, a webhook or a job");
            let manifest = inst.plugin().manifest();
            if let Some(required) = manifest
                .action(&action)
                .and_then(|a| a.required_role.as_ref())
            {
                anyhow::ensure!(
                    roles.contains(required),
                    "action `{action}` requires role `{required}`; the actor's roles are [{}] \
                     (add --role {required})",
                    roles.join(", ")
                );
            }
            print_output(run_action(&inst, &action, &input, actor, roles).await?)
        }
    }
}

/// `Name: value` headers from the command line.
fn parse_headers(given: &[String]) -> anyhow::Result<Vec<WebhookHeader>> {
    given
        .iter()
        .map(|h| {
            let (name, value) = h
                .split_once(':')
                .with_context(|| format!("--header `{h}`: expected `Name: value`"))?;
            anyhow::ensure!(!name.trim().is_empty(), "--header `{h}`: the name is empty");
            Ok(WebhookHeader {
                name: name.trim().to_ascii_lowercase(),
                value: value.trim().to_owned(),
            })
        })
        .collect()
}

/// A webhook body from a file, standard input (`-`), or nothing.
fn read_body(from: Option<&std::path::Path>) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    match from {
        None => Ok(Vec::new()),
        Some(p) if p.as_os_str() == "-" => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .context("reading the webhook body from standard input")?;
            Ok(body)
        }
        Some(p) => {
            std::fs::read(p).with_context(|| format!("reading the webhook body {}", p.display()))
        }
    }
}
