//! `switchyard tenant list|import|export|history|remove`: tenants managed
//! through the admin API, from the operator's side.
//!
//! `import` is how a tenant comes under the API: its text is checked as
//! `switchyard check` would, then stored as the tenant's next version.
//! `export` writes the newest version as a tenant file. A daemon that is
//! running applies an import or removal at its next reload
//! (`POST /v1/admin/reload`); daemons sharing a PostgreSQL database apply
//! it at once.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::boot::{CLI_SLOTS, load_config, open_state, runtime};
use crate::plugins::Catalog;
use crate::problem;

#[derive(Subcommand)]
pub(super) enum TenantCommand {
    /// List every tenant: its file, or its newest API version.
    List,
    /// Store a tenant file as the next version of an API-managed tenant
    /// (creating it), after checking it as `switchyard check` does.
    Import {
        /// The tenant file (TOML).
        file: PathBuf,
        /// Tenant id (default: the file name without `.toml`).
        #[arg(long)]
        id: Option<String>,
        /// Why, for the configuration history.
        #[arg(long, default_value = "imported")]
        comment: String,
    },
    /// Print an API-managed tenant's newest version (or `--version N`) as
    /// a tenant file.
    Export {
        /// Tenant id.
        tenant: String,
        /// Which version (default: the newest).
        #[arg(long)]
        version: Option<i64>,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show an API-managed tenant's configuration versions, newest first.
    History {
        /// Tenant id.
        tenant: String,
    },
    /// Forget an API-managed tenant's configuration (every version). Its
    /// secrets, tokens, storage and audit log are kept.
    Remove {
        /// Tenant id.
        tenant: String,
        /// Confirm: without it nothing is removed.
        #[arg(long)]
        yes: bool,
    },
}

pub(super) async fn run(dir: &Path, command: TenantCommand) -> anyhow::Result<()> {
    let mut cfg = load_config(dir)?;
    let (db, secrets) = open_state(&cfg).await?;
    match command {
        TenantCommand::List => {
            for t in cfg.tenants.values() {
                println!("{}\tfile {}", t.id, t.file.display());
            }
            for v in db.managed_configs().await? {
                println!(
                    "{}\tapi version {} by {} at {}",
                    v.tenant, v.version, v.author, v.created_at
                );
            }
        }
        TenantCommand::Import { file, id, comment } => {
            let id = match id {
                Some(id) => id,
                None => file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .context("the file has no name to take the tenant id from; pass --id")?,
            };
            if let Some(t) = cfg.tenants.get(&id) {
                bail!(
                    "tenant `{id}` has a file ({}); a tenant is managed by its file or by the \
                     admin API, not both",
                    t.file.display()
                );
            }
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let current = db
                .config_versions(&id)
                .await?
                .first()
                .map_or(0, |v| v.version);
            let next = switchyard_store::ConfigVersion {
                tenant: id.clone(),
                version: current + 1,
                text: text.clone(),
                author: "cli".into(),
                comment: comment.clone(),
                created_at: 0,
            };
            let mut problems = Vec::new();
            cfg.add_managed(std::slice::from_ref(&next), &mut problems);
            if let Some(t) = cfg.tenants.get(&id) {
                let rt = runtime(CLI_SLOTS)?;
                let catalog = Catalog::load(&rt, &cfg.plugin_dir, &cfg.trust, None).await;
                problems.extend(cfg.check_managed_change(t, &catalog, &secrets, None).await);
            }
            if !problems.is_empty() {
                println!("{}", problem::render(&problems));
            }
            let errors = problems.iter().filter(|p| p.is_error()).count();
            if errors > 0 {
                bail!(
                    "{errors} problem(s) in {}; nothing was stored",
                    file.display()
                );
            }
            match db.put_config(&id, current, &text, "cli", &comment).await? {
                Some(v) => eprintln!(
                    "stored tenant `{id}` version {v}; a running daemon applies it at its next \
                     reload (daemons sharing PostgreSQL at once)"
                ),
                None => {
                    bail!("tenant `{id}` changed while this ran; nothing was stored, try again")
                }
            }
        }
        TenantCommand::Export {
            tenant,
            version,
            out,
        } => {
            let versions = db.config_versions(&tenant).await?;
            let Some(v) = (match version {
                None => versions.first(),
                Some(n) => versions.iter().find(|v| v.version == n),
            }) else {
                bail!(
                    "tenant `{tenant}` has {} through the admin API",
                    match version {
                        Some(n) if !versions.is_empty() => format!("no version {n}"),
                        _ => "no configuration".into(),
                    }
                );
            };
            match out {
                Some(path) => {
                    std::fs::write(&path, &v.text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "wrote tenant `{tenant}` version {} to {}",
                        v.version,
                        path.display()
                    );
                }
                None => print!("{}", v.text),
            }
        }
        TenantCommand::History { tenant } => {
            let versions = db.config_versions(&tenant).await?;
            if versions.is_empty() {
                bail!("tenant `{tenant}` is not managed through the admin API");
            }
            for v in versions {
                println!(
                    "{}\t{}\t{}\t{}",
                    v.version, v.created_at, v.author, v.comment
                );
            }
        }
        TenantCommand::Remove { tenant, yes } => {
            let n = db.config_versions(&tenant).await?.len();
            if n == 0 {
                bail!("tenant `{tenant}` is not managed through the admin API");
            }
            if !yes {
                bail!(
                    "this forgets all {n} configuration version(s) of tenant `{tenant}` (see \
                     `switchyard tenant export {tenant}` to keep a copy); run again with --yes"
                );
            }
            db.remove_managed(&tenant).await?;
            eprintln!(
                "removed tenant `{tenant}` ({n} version(s)); its secrets, tokens, storage and \
                 audit log are kept. Reload a running daemon to stop serving it"
            );
        }
    }
    Ok(())
}
