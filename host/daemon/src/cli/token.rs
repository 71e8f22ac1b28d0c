//! `switchyard token create|create-operator|list|revoke`: API tokens,
//! printed once and stored hashed.

use std::path::Path;

use anyhow::bail;
use clap::Subcommand;
use secrecy::ExposeSecret;

use super::common::known_tenant;
use crate::api::auth::{OPERATOR, Role};
use crate::boot::{load_config, open_state};

#[derive(Subcommand)]
pub(super) enum TokenCommand {
    /// Create an operator token (for /v1/admin endpoints such as reload).
    CreateOperator {
        /// What the token is for.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Create a token; it is printed once and only its hash is stored.
    Create {
        /// Tenant id.
        tenant: String,
        /// What the token is for.
        #[arg(long, default_value = "")]
        label: String,
        /// What it may do: `api` (an integration calling actions),
        /// `tenant-admin` (a person who configures the tenant) or
        /// `tenant-viewer` (a person who reads its status, audit and
        /// configuration).
        #[arg(long, default_value = "api", value_parser = clap::builder::PossibleValuesParser::new(Role::TENANT_ROLES))]
        role: String,
    },
    /// List a tenant's tokens (ids and labels).
    List {
        /// Tenant id.
        tenant: String,
    },
    /// Revoke a token by id.
    Revoke {
        /// Tenant id.
        tenant: String,
        /// Token id (from `token list`).
        id: String,
    },
}

pub(super) async fn run(dir: &Path, command: TokenCommand) -> anyhow::Result<()> {
    let cfg = load_config(dir)?;
    let (db, _) = open_state(&cfg).await?;
    match command {
        TokenCommand::CreateOperator { label } => {
            let (info, token) = db.create_token(OPERATOR, &label, "operator").await?;
            println!("{}", token.expose_secret());
            eprintln!(
                "created operator token {}; it is shown only this once",
                info.id
            );
        }
        TokenCommand::Create {
            tenant,
            label,
            role,
        } => {
            known_tenant(&cfg, &db, &tenant).await?;
            let (info, token) = db.create_token(&tenant, &label, &role).await?;
            println!("{}", token.expose_secret());
            eprintln!(
                "created {role} token {} for tenant `{tenant}`; it is shown only this once",
                info.id
            );
        }
        TokenCommand::List { tenant } => {
            known_tenant(&cfg, &db, &tenant).await?;
            for t in db.list_tokens(&tenant).await? {
                println!(
                    "{}\t{}\t{}\tcreated {}",
                    t.id, t.role, t.label, t.created_at
                );
            }
        }
        TokenCommand::Revoke { tenant, id } => {
            known_tenant(&cfg, &db, &tenant).await?;
            if !db.revoke_token(&tenant, &id).await? {
                bail!("tenant `{tenant}` has no token `{id}`");
            }
            eprintln!("revoked token {id} of tenant `{tenant}`");
        }
    }
    Ok(())
}
