//! `switchyard jobs list|retry`: a tenant's queued, running, done and dead
//! jobs.

use std::path::Path;

use anyhow::bail;
use clap::Subcommand;
use switchyard_store::JobState;

use crate::boot::{load_config, open_state};
use crate::clock::now_ms;

#[derive(Subcommand)]
pub(super) enum JobsCommand {
    /// List jobs, newest first, as JSON lines.
    List {
        /// Tenant id.
        tenant: String,
        /// Only jobs in this state: queued, running, done or dead.
        #[arg(long)]
        state: Option<String>,
        /// Jobs to print.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Put a dead job back in the queue with fresh attempts.
    Retry {
        /// Tenant id.
        tenant: String,
        /// Job id.
        id: i64,
    },
}

pub(super) async fn run(dir: &Path, command: JobsCommand) -> anyhow::Result<()> {
    let cfg = load_config(dir)?;
    let (db, _) = open_state(&cfg).await?;
    match command {
        JobsCommand::List {
            tenant,
            state,
            limit,
        } => {
            let state = match state.as_deref() {
                None => None,
                Some(name) => match JobState::from_name(name) {
                    Some(s) => Some(s),
                    None => bail!("unknown job state `{name}`: use queued, running, done or dead"),
                },
            };
            for job in db.list_jobs(&tenant, state, limit).await? {
                println!("{}", serde_json::to_string(&job)?);
            }
        }
        JobsCommand::Retry { tenant, id } => {
            if !db.retry_job(&tenant, id, now_ms()).await? {
                bail!("tenant `{tenant}` has no dead job {id}");
            }
            eprintln!("job {id} is queued again");
        }
    }
    Ok(())
}
