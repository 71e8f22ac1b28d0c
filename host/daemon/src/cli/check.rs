//! `switchyard check --config DIR`: every problem as `file:line: field:
//! message`, errors and warnings; exit status 1 when there is an error.

use std::path::Path;

use anyhow::bail;

use crate::boot::{CLI_SLOTS, runtime};
use crate::config::{Config, Mode};
use crate::plugins::Catalog;
use crate::problem::{self, Problem};

pub(super) async fn run(dir: &Path) -> anyhow::Result<()> {
    let (mut cfg, mut problems) = match Config::parse(dir) {
        Err(problems) => {
            println!("{}", problem::render(&problems));
            bail!("{} problem(s) in {}", problems.len(), dir.display());
        }
        Ok(parsed) => parsed,
    };
    // The tenants managed through the admin API are checked too, when
    // there is a state backend to read them from.
    let state = crate::boot::existing_state(&cfg).await;
    if let Ok((db, _)) = &state {
        match db.managed_configs().await {
            Ok(versions) => cfg.add_managed(&versions, &mut problems),
            Err(e) => bail!("reading the tenants managed through the admin API: {e}"),
        }
    }
    let rt = runtime(CLI_SLOTS)?;
    let catalog = Catalog::load(&rt, &cfg.plugin_dir, &cfg.trust, None).await;
    problems.extend(catalog.problems().iter().cloned());
    problems.extend(cfg.check_against(&catalog));
    let store = state.as_ref().map(|(_, s)| s);
    problems.extend(cfg.check_references(store.map_err(String::as_str)).await);
    if !problems.is_empty() {
        println!("{}", problem::render(&problems));
    }
    let errors = problems.iter().filter(|p| p.is_error()).count();
    if errors > 0 {
        bail!("{errors} problem(s) in {}", dir.display());
    }
    for line in cfg.summary() {
        println!("{line}");
    }
    let instances: usize = cfg.tenants.values().map(|t| t.instances.len()).sum();
    let warnings = problems.iter().filter(|p: &&Problem| !p.is_error()).count();
    println!(
        "{}: OK ({} tenant(s), {instances} instance(s); listen {}, {} mode){}",
        dir.display(),
        cfg.tenants.len(),
        cfg.listen,
        match cfg.mode {
            Mode::Production => "production",
            Mode::Development => "development",
        },
        if warnings > 0 {
            format!(", {warnings} warning(s)")
        } else {
            String::new()
        }
    );
    Ok(())
}
