//! `switchyard secret set|list|delete`: a tenant's secrets, encrypted at
//! rest; values are read from standard input and never printed.
//! `generate-master-key` and `rotate-master-key`: replacing the master key
//! (docs/operations.md, "Rotating the master key").

use std::path::Path;

use anyhow::{Context, bail};
use clap::Subcommand;

use super::common::known_tenant;
use crate::boot::{PREVIOUS_FILE, PREVIOUS_VAR, load_config, open_state};

#[derive(Subcommand)]
pub(super) enum SecretCommand {
    /// Store a secret; the value is read from standard input.
    Set {
        /// Tenant id.
        tenant: String,
        /// Secret name (referenced as `secret:<name>` in tenant files).
        name: String,
    },
    /// List a tenant's secret names (never values).
    List {
        /// Tenant id.
        tenant: String,
    },
    /// Delete a secret.
    Delete {
        /// Tenant id.
        tenant: String,
        /// Secret name.
        name: String,
    },
    /// Write a new random master key to a file (mode 0600), the first step
    /// of a rotation. An existing file is never replaced.
    GenerateMasterKey {
        /// Where to write it.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Re-wrap every tenant's data key under the current master key, the
    /// last step of a rotation: the key being replaced must be the previous
    /// one ($SWITCHYARD_MASTER_KEY_PREVIOUS or <data_dir>/master.key.previous).
    RotateMasterKey,
}

pub(super) async fn run(dir: &Path, command: SecretCommand) -> anyhow::Result<()> {
    let cfg = load_config(dir)?;
    if let SecretCommand::GenerateMasterKey { out } = &command {
        // No state: the key goes to a file, to be installed by the operator.
        switchyard_store::MasterKey::create_new_file(out)?;
        eprintln!(
            "wrote a new master key to {} (mode 0600); install it on every daemon as the \
             master key, with the current one as the previous key, then run \
             `switchyard secret rotate-master-key`",
            out.display()
        );
        return Ok(());
    }
    let (db, secrets) = open_state(&cfg).await?;
    match command {
        SecretCommand::Set { tenant, name } => {
            known_tenant(&cfg, &db, &tenant).await?;
            let mut value = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut value)
                .context("reading the secret from standard input")?;
            let value = value.trim_end_matches(['\r', '\n']);
            if value.is_empty() {
                bail!("no secret value on standard input");
            }
            secrets
                .set(
                    &tenant,
                    &name,
                    &secrecy::SecretString::from(value.to_owned()),
                )
                .await?;
            eprintln!(
                "stored secret `{name}` for tenant `{tenant}` (reference it as secret:{name})"
            );
        }
        SecretCommand::List { tenant } => {
            known_tenant(&cfg, &db, &tenant).await?;
            for m in secrets.list(&tenant).await? {
                println!("{}\tupdated {}", m.name, m.updated_at);
            }
        }
        SecretCommand::Delete { tenant, name } => {
            known_tenant(&cfg, &db, &tenant).await?;
            if !secrets.delete(&tenant, &name).await? {
                bail!("tenant `{tenant}` has no secret `{name}`");
            }
            eprintln!("deleted secret `{name}` of tenant `{tenant}`");
        }
        SecretCommand::GenerateMasterKey { .. } => unreachable!("handled above"),
        SecretCommand::RotateMasterKey => {
            if !secrets.has_previous() {
                bail!(
                    "there is no previous master key to rotate from: put the key being replaced \
                     in ${PREVIOUS_VAR} or {}, and the new one in place of the master key",
                    cfg.data_dir.join(PREVIOUS_FILE).display()
                );
            }
            let done = secrets.rewrap().await?;
            println!(
                "re-wrapped {} tenant data key(s) under the current master key ({} already were); \
                 the previous key can now be removed from every daemon",
                done.rewrapped, done.current
            );
        }
    }
    Ok(())
}
