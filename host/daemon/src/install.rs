//! Installing a plugin release into the plugin directory, for `switchyard
//! plugin install` and `POST /v1/admin/plugins`: the checks the daemon will
//! make when it loads the file, then the files, whole or not at all.
//!
//! A release goes to `<plugin_dir>/<id>/<version>.wasm` (and `.wasm.sig`),
//! beside the other versions of the plugin. Nothing that is served changes:
//! a reload serves the new version to instances set up after it, and moves
//! an existing instance only when the operator says so (`switchyard plugin
//! upgrade`, or a pin).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use switchyard_runtime::Runtime;

use crate::release::{SignedRelease, Trust, signature_path};

/// A release that is now in the plugin directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Plugin id.
    pub id: String,
    /// Version.
    pub version: String,
    /// The publisher who signed it; None for an unsigned release.
    pub signer: Option<String>,
    /// Where the component is.
    pub path: PathBuf,
    /// Whether exactly these bytes were installed already.
    pub already: bool,
    /// Whether they were, and the signature given replaced theirs.
    pub signature_replaced: bool,
}

/// Why a release was not installed. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallError {
    /// The release is not one the daemon would serve.
    Refused(String),
    /// The version is installed with other bytes, or the plugin sits in
    /// the directory as a single file.
    Conflict(String),
    /// The plugin directory could not be written.
    Io(String),
    /// The daemon had no wasm slot free to read the release's manifest:
    /// it was not judged, and the same request may succeed shortly.
    Busy(String),
}

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(why) => write!(f, "refused: {why}"),
            Self::Conflict(why) | Self::Io(why) | Self::Busy(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for InstallError {}

/// Checks `bytes` (with `signed`, its release signature, if any) as the
/// daemon will, then writes it to `<plugin_dir>/<id>/<version>.wasm`.
/// Compiling it also fills the compile cache the daemon reads.
pub async fn install(
    rt: &Runtime,
    plugin_dir: &Path,
    trust: &Trust,
    bytes: &[u8],
    signed: Option<SignedRelease>,
) -> Result<Installed, InstallError> {
    use InstallError::Refused;
    let signer = match &signed {
        Some(s) => Some(
            s.verify(bytes, &trust.publishers)
                .map_err(|e| Refused(format!("its signature: {e}")))?,
        ),
        None if trust.require_signed => {
            return Err(Refused(
                "it is not signed, and switchyard.toml requires signed plugins ([trust] \
                 require_signed)"
                    .into(),
            ));
        }
        None => None,
    };
    // One install at a time in this process: an install reads the manifest
    // in one of the few wasm slots kept for that, so installs alone never
    // take them all from a reload. Across processes (the CLI beside the
    // daemon) the final step never replaces a component.
    static INSTALLING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = INSTALLING.lock().await;
    let plugin = rt.load(bytes).await.map_err(|e| match e {
        switchyard_runtime::LoadError::Busy(_) => InstallError::Busy(e.to_string()),
        e => Refused(format!("it does not load: {e}")),
    })?;
    let m = plugin.manifest();
    if let Some(s) = &signed {
        s.matches(&m.id, &m.version, plugin.world())
            .map_err(|e| Refused(format!("its signature: {e}")))?;
    }
    semver::Version::parse(&m.version).map_err(|e| {
        Refused(format!(
            "version `{}` is not a semantic version: {e}",
            m.version
        ))
    })?;
    if switchyard_bundled::ALL.iter().any(|(n, _)| *n == m.id) {
        return Err(Refused(format!(
            "plugin id `{}` is reserved by the bundled plugin",
            m.id
        )));
    }
    let (id, version) = (m.id.clone(), m.version.clone());
    let target = plugin_dir.join(&id).join(format!("{version}.wasm"));
    let (dir, to, bytes) = (plugin_dir.to_owned(), target.clone(), bytes.to_vec());
    let sig = signed.as_ref().map(SignedRelease::to_json);
    let placed = tokio::task::spawn_blocking(move || place(&dir, &id, &to, &bytes, sig))
        .await
        .map_err(|e| InstallError::Io(format!("the install task failed: {e}")))??;
    Ok(Installed {
        id: m.id.clone(),
        version,
        signer,
        path: target,
        already: placed != Placed::New,
        signature_replaced: placed == Placed::Resigned,
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Placed {
    New,
    Already,
    /// The same bytes, with a signature other than the installed one.
    Resigned,
}

/// Writes the release's files (off the async executor: a component can be
/// tens of megabytes).
fn place(
    plugin_dir: &Path,
    id: &str,
    target: &Path,
    bytes: &[u8],
    signature: Option<String>,
) -> Result<Placed, InstallError> {
    use InstallError::{Conflict, Io};
    let single = plugin_dir.join(format!("{id}.wasm"));
    if single.exists() {
        return Err(Conflict(format!(
            "{} holds plugin `{id}` as a single file; move it to {}/ (as <version>.wasm) \
             before installing versions side by side",
            single.display(),
            plugin_dir.join(id).display()
        )));
    }
    let sig_path = signature_path(target);
    let other_bytes = || {
        Conflict(format!(
            "{id} is already installed as {} with other bytes; a version's code must not \
             change under the instances that run it: give the new build a new version",
            target.display()
        ))
    };
    // Each write goes to a name of its own, then into place by rename (or,
    // for the component, by a link that fails rather than replace one).
    let temp = |to: &Path, data: &[u8]| -> Result<PathBuf, InstallError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = to.with_extension(format!(
            "installing-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&tmp, data).map_err(|e| Io(format!("writing {}: {e}", tmp.display())))?;
        Ok(tmp)
    };
    let put = |to: &Path, data: &[u8]| -> Result<(), InstallError> {
        let tmp = temp(to, data)?;
        std::fs::rename(&tmp, to).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Io(format!("writing {}: {e}", to.display()))
        })
    };
    if let Ok(existing) = std::fs::read(target) {
        if existing != bytes {
            return Err(other_bytes());
        }
        // The same code: a new signature (another trusted key, say) may
        // replace the one it came with.
        return match signature {
            Some(sig) if std::fs::read_to_string(&sig_path).ok().as_deref() != Some(&sig) => {
                put(&sig_path, sig.as_bytes())?;
                Ok(Placed::Resigned)
            }
            _ => Ok(Placed::Already),
        };
    }
    let dir = target.parent().unwrap_or(plugin_dir);
    std::fs::create_dir_all(dir).map_err(|e| Io(format!("creating {}: {e}", dir.display())))?;
    // The signature goes first and the component last: a daemon reloading
    // meanwhile sees the release whole or not at all.
    if let Some(sig) = &signature {
        put(&sig_path, sig.as_bytes())?;
    }
    let tmp = temp(target, bytes)?;
    let linked = std::fs::hard_link(&tmp, target);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(Placed::New),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another process installed it meanwhile.
            match std::fs::read(target) {
                Ok(existing) if existing == bytes => Ok(Placed::Already),
                _ => Err(other_bytes()),
            }
        }
        Err(e) => Err(Io(format!("writing {}: {e}", target.display()))),
    }
}
