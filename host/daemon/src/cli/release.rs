//! `switchyard plugin keygen|sign|verify|install|list`: publisher keys,
//! signed releases (see [`crate::release`]), installing them and what is
//! installed.

use std::path::Path;

use anyhow::{Context, bail};
use switchyard_runtime::Runtime;

use crate::boot::{load_config, open_state};
use crate::plugins::Catalog;
use crate::release::{KeyPair, PublicKey, Publishers, Release, SignedRelease, signature_path};

/// Writes `<dir>/<name>.key` (private) and `<dir>/<name>.pub`.
pub(super) fn keygen(name: &str, dir: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        crate::config::is_id(name),
        "a publisher name is lowercase letters, digits, `-` and `_` (got `{name}`)"
    );
    let (secret, public) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    anyhow::ensure!(
        !public.exists(),
        "{} exists; choose another name or directory",
        public.display()
    );
    let keys = KeyPair::generate();
    keys.write(&secret).map_err(anyhow::Error::msg)?;
    std::fs::write(&public, format!("{}\n", keys.public()))
        .with_context(|| format!("writing {}", public.display()))?;
    println!("{}", keys.public());
    eprintln!(
        "wrote the signing key {} (keep it private) and the public key {} (fingerprint {}).\n\
         An operator who trusts you adds to switchyard.toml:\n\n  [trust.publishers]\n  {name} = \"{}\"",
        secret.display(),
        public.display(),
        keys.public().fingerprint(),
        keys.public()
    );
    Ok(())
}

/// Signs `component` with `key`, writing `<component>.sig` (or `out`).
pub(super) async fn sign(
    rt: &Runtime,
    component: &Path,
    key: &Path,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let keys = KeyPair::read(key).map_err(anyhow::Error::msg)?;
    let bytes =
        std::fs::read(component).with_context(|| format!("reading {}", component.display()))?;
    let plugin = rt
        .load(&bytes)
        .await
        .with_context(|| format!("loading {}", component.display()))?;
    let m = plugin.manifest();
    let signed = keys.sign(Release {
        plugin: m.id.clone(),
        version: m.version.clone(),
        world: plugin.world().to_owned(),
        sha256: plugin.digest().to_owned(),
    });
    let out = out.map_or_else(|| signature_path(component), Path::to_path_buf);
    std::fs::write(&out, signed.to_json()).with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "signed {} {} ({}, sha256 {}) with key {}: {}",
        m.id,
        m.version,
        plugin.world(),
        plugin.digest(),
        keys.public().fingerprint(),
        out.display()
    );
    Ok(())
}

/// Trusted keys from `--key` (a `.pub` file or `ed25519:…` text) and a
/// configuration's `[trust.publishers]`.
fn trusted(keys: &[String], config: Option<&Path>) -> anyhow::Result<Publishers> {
    let mut out = Publishers::new();
    if let Some(dir) = config {
        out.extend(load_config(dir)?.trust.publishers);
    }
    for k in keys {
        let (name, text) = if k.starts_with("ed25519:") {
            (None, k.clone())
        } else {
            let text = std::fs::read_to_string(k).with_context(|| format!("reading key {k}"))?;
            let stem = Path::new(k)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned());
            (stem, text)
        };
        let key = PublicKey::parse(&text).map_err(|e| anyhow::anyhow!("--key {k}: {e}"))?;
        out.insert(
            name.unwrap_or_else(|| format!("key {}", key.fingerprint())),
            key,
        );
    }
    anyhow::ensure!(
        !out.is_empty(),
        "say whose signatures to trust: --key PUBLIC_KEY (a .pub file or ed25519:…) or \
         --config DIR (its [trust.publishers])"
    );
    Ok(out)
}

/// Verifies `component` against its signature and the trusted keys.
pub(super) async fn verify(
    rt: &Runtime,
    component: &Path,
    signature: Option<&Path>,
    keys: &[String],
    config: Option<&Path>,
) -> anyhow::Result<()> {
    let publishers = trusted(keys, config)?;
    let sig_path = signature.map_or_else(|| signature_path(component), Path::to_path_buf);
    let signed = SignedRelease::read(&sig_path).map_err(anyhow::Error::msg)?;
    let bytes =
        std::fs::read(component).with_context(|| format!("reading {}", component.display()))?;
    let refused = |e: String| anyhow::anyhow!("{}: refused: {e}", component.display());
    let publisher = signed.verify(&bytes, &publishers).map_err(refused)?;
    let plugin = rt
        .load(&bytes)
        .await
        .with_context(|| format!("loading {}", component.display()))?;
    let m = plugin.manifest();
    signed
        .matches(&m.id, &m.version, plugin.world())
        .map_err(refused)?;
    println!(
        "{}: {} {} ({}) signed by `{publisher}`",
        component.display(),
        m.id,
        m.version,
        plugin.world()
    );
    Ok(())
}

/// Checks `component` (and its signature, when there is one) as the daemon
/// will, then copies both to `<plugin_dir>/<id>/<version>.wasm[.sig]`.
pub(super) async fn install(
    rt: &Runtime,
    config: &Path,
    component: &Path,
    signature: Option<&Path>,
) -> anyhow::Result<()> {
    let cfg = load_config(config)?;
    let bytes =
        std::fs::read(component).with_context(|| format!("reading {}", component.display()))?;
    let sig_path = signature.map_or_else(|| signature_path(component), Path::to_path_buf);
    let signed = if signature.is_some() || sig_path.exists() {
        Some(SignedRelease::read(&sig_path).map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    let done = crate::install::install(rt, &cfg.plugin_dir, &cfg.trust, &bytes, signed)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", component.display()))?;
    if done.already {
        let resigned = if done.signature_replaced {
            "; its signature was replaced by this one"
        } else {
            ""
        };
        println!(
            "{} {} is already installed: {}{resigned}",
            done.id,
            done.version,
            done.path.display()
        );
        return Ok(());
    }
    println!(
        "installed {} {} ({}) as {}",
        done.id,
        done.version,
        done.signer
            .as_ref()
            .map_or("unsigned".to_owned(), |p| format!("signed by `{p}`")),
        done.path.display()
    );
    eprintln!(
        "reload the daemon (SIGHUP) to serve it; instances already set up stay on their \
         version until `switchyard plugin upgrade`"
    );
    Ok(())
}

/// Prints every installed plugin version, who vouches for it, and which
/// instances run it; then the files that are refused.
pub(super) async fn list(rt: &Runtime, config: &Path) -> anyhow::Result<()> {
    let cfg = load_config(config)?;
    let (db, _) = open_state(&cfg).await?;
    let locks = db.plugin_locks().await?;
    let catalog = Catalog::load(rt, &cfg.plugin_dir, &cfg.trust, None).await;
    println!("PLUGIN\tVERSION\tSIGNER\tSOURCE\tINSTANCES");
    for e in catalog.entries() {
        let id = &e.plugin.manifest().id;
        let users = e.instances_in(&locks);
        println!(
            "{id}\t{}\t{}\t{}\t{}",
            e.version,
            e.signer,
            e.source,
            if users.is_empty() {
                "-".to_owned()
            } else {
                users.join(",")
            }
        );
    }
    for p in catalog.problems() {
        eprintln!("refused: {p}");
    }
    if !catalog.problems().is_empty() {
        bail!(
            "{} plugin file(s) refused (listed above)",
            catalog.problems().len()
        );
    }
    Ok(())
}
