//! `switchyard secret set|list|delete`: a tenant's secrets, encrypted at
//! rest; values are read from standard input and never printed.

use std::path::Path;

use anyhow::{Context, bail};
use clap::Subcommand;

use super::common::known_tenant;
use crate::boot::{load_config, open_state};

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
}

pub(super) async fn run(dir: &Path, command: SecretCommand) -> anyhow::Result<()> {
    let cfg = load_config(dir)?;
    let (_, secrets) = open_state(&cfg).await?;
    match command {
        SecretCommand::Set { tenant, name } => {
            known_tenant(&cfg, &tenant)?;
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
            known_tenant(&cfg, &tenant)?;
            for m in secrets.list(&tenant).await? {
                println!("{}\tupdated {}", m.name, m.updated_at);
            }
        }
        SecretCommand::Delete { tenant, name } => {
            known_tenant(&cfg, &tenant)?;
            if !secrets.delete(&tenant, &name).await? {
                bail!("tenant `{tenant}` has no secret `{name}`");
            }
            eprintln!("deleted secret `{name}` of tenant `{tenant}`");
        }
    }
    Ok(())
}
