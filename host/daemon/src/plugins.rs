//! The plugin catalog: the bundled plugins and the operator's plugin
//! directory, and which version an instance runs.
//!
//! Where a plugin may come from, and why (a plugin must never be able to run
//! under another plugin's id, or it would get that plugin's tenants'
//! storage and credentials):
//!
//! - **Bundled** plugins are built into the binary. Their ids are reserved:
//!   no file may claim them.
//! - `<plugin_dir>/<id>.wasm` is one version of plugin `<id>`; the manifest
//!   inside must say id `<id>`.
//! - `<plugin_dir>/<id>/*.wasm` are versions of plugin `<id>` side by side;
//!   each must say id `<id>`, and no two may carry the same version.
//!
//! A file that breaks a rule is refused and reported (naming every file
//! involved), and everything else is served. One id offered by both
//! `<id>.wasm` and `<id>/` is refused altogether: two sources, and no way to
//! tell which one the operator meant.
//!
//! Versions are semantic versions. An instance takes the highest installed
//! version that its pin allows (`plugin = "echo@0.2"`, or `version =
//! "0.2.1"`; a bare version means exactly that version) — once: the build
//! it resolved to is recorded in the store and kept
//! ([`Catalog::resolve_locked`]), so a newly installed file never replaces
//! the code an instance runs until the operator moves it on
//! (`switchyard plugin upgrade`, or a pin that excludes the old version).
//!
//! `serve` starts without compiling what is not in the compile cache
//! ([`Catalog::load_with`]): such a plugin is [`Pending`], an instance of
//! its id waits (rather than settling on an older installed version), and
//! the daemon swaps it in once it has compiled in the background.
//!
//! ```no_run
//! # async fn demo(rt: &switchyard_runtime::Runtime) {
//! let trust = switchyard::release::Trust::default();
//! let catalog = switchyard::plugins::Catalog::load(rt, "plugins".as_ref(), &trust, None).await;
//! for p in catalog.problems() {
//!     eprintln!("{p}");
//! }
//! let (id, pin) = switchyard::plugins::parse_plugin_ref("echo@0.1").unwrap();
//! let entry = catalog.resolve(&id, pin.as_ref()).unwrap();
//! println!("echo {} from {}", entry.version, entry.source);
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use semver::{Version, VersionReq};
use switchyard_runtime::{Plugin, Runtime};
use switchyard_store::PluginLock;

use crate::problem::Problem;
use crate::release::{SignedRelease, Trust};

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Built into the binary.
    Bundled(&'static str),
    /// A file in the plugin directory.
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bundled(name) => write!(f, "bundled:{name}"),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One installed version of a plugin.
#[derive(Clone)]
pub struct Entry {
    /// The compiled plugin.
    pub plugin: Arc<Plugin>,
    /// Its version.
    pub version: Version,
    /// Where it came from.
    pub source: Source,
    /// Who vouches for it.
    pub signer: Signer,
}

/// Who vouches for a plugin build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// Bundled: built into the switchyard binary the operator installed,
    /// so it carries that binary's provenance and no signature of its own.
    BuiltIn,
    /// A file with no signature (`X.wasm` without `X.wasm.sig`).
    Unsigned,
    /// A file whose release is signed by this trusted publisher.
    Publisher(String),
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BuiltIn => write!(f, "built in"),
            Self::Unsigned => write!(f, "unsigned"),
            Self::Publisher(p) => write!(f, "signed by `{p}`"),
        }
    }
}

/// Which builds a tenant accepts (`TenantConfig::policy`).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Only signed (or bundled) builds.
    pub require_signed: bool,
    /// Only builds signed by these publishers (or bundled). None: any
    /// trusted publisher.
    pub publishers: Option<Vec<String>>,
}

impl Policy {
    /// Whether `e` may run under this policy, or why not. Bundled plugins
    /// always may: they are part of the binary.
    pub fn allows(&self, e: &Entry) -> Result<(), String> {
        match (&e.signer, &self.publishers) {
            (Signer::BuiltIn, _) => Ok(()),
            (Signer::Unsigned, Some(list)) => Err(format!(
                "is not signed, and the tenant trusts only plugins signed by {}",
                names(list)
            )),
            (Signer::Unsigned, None) if self.require_signed => {
                Err("is not signed, and signed plugins are required (require_signed)".to_owned())
            }
            (Signer::Publisher(p), Some(list)) if !list.contains(p) => Err(format!(
                "is signed by `{p}`, and the tenant trusts only plugins signed by {}",
                names(list)
            )),
            _ => Ok(()),
        }
    }
}

fn names(list: &[String]) -> String {
    let quoted: Vec<String> = list.iter().map(|n| format!("`{n}`")).collect();
    if quoted.is_empty() {
        "no publisher".to_owned()
    } else {
        quoted.join(", ")
    }
}

impl Entry {
    /// The instances (`tenant/instance`) whose lock is this version, for
    /// `plugin list` and `GET /v1/admin/plugins`.
    pub fn instances_in(&self, locks: &[PluginLock]) -> Vec<String> {
        let (id, version) = (&self.plugin.manifest().id, self.version.to_string());
        locks
            .iter()
            .filter(|l| &l.plugin == id && l.version == version)
            .map(|l| format!("{}/{}", l.tenant, l.instance))
            .collect()
    }

    /// The SHA-256 of the component, hex.
    pub fn digest(&self) -> &str {
        self.plugin.digest()
    }
}

/// A plugin not compiled yet: its code is not in the compile cache, and
/// `serve` compiles it in the background rather than before serving the
/// other tenants ([`Catalog::load_with`] with `defer_cold`).
#[derive(Clone)]
pub struct Pending {
    /// Where it comes from.
    pub source: Source,
    /// The id its place says it has (its file or directory name, or the
    /// bundled plugin's name); the manifest is only read once it compiles.
    pub id: String,
    /// The SHA-256 of the component, hex.
    pub digest: String,
    /// The component.
    pub bytes: Arc<[u8]>,
}

/// What an earlier compile of a pending plugin produced, by digest.
pub type Compiled = (String, Result<Arc<Plugin>, String>);

/// Every usable plugin by id, and the problems of those that are not.
#[derive(Default)]
pub struct Catalog {
    /// Versions of each plugin, lowest first.
    by_id: BTreeMap<String, Vec<Entry>>,
    problems: Vec<Problem>,
    pending: Vec<Pending>,
    require_signed: bool,
    publishers: Vec<String>,
}

/// A candidate before the rules are applied.
struct Candidate {
    plugin: Arc<Plugin>,
    source: Source,
    /// The id its place in the plugin directory says it must have.
    expected_id: Option<String>,
    /// Whether it came from `<id>/` (versions side by side).
    versions_dir: bool,
    /// Its verified release, and the publisher who signed it.
    release: Option<(SignedRelease, String)>,
}

/// A plugin file's bytes, read off the async executor.
struct FileBytes {
    path: PathBuf,
    expected_id: String,
    versions_dir: bool,
    bytes: std::io::Result<Vec<u8>>,
    /// `<file>.sig`, when there is one.
    signature: Option<std::io::Result<String>>,
}

/// `<file>.sig`, read when it exists.
fn read_signature(file: &Path) -> Option<std::io::Result<String>> {
    let path = crate::release::signature_path(file);
    path.exists().then(|| std::fs::read_to_string(&path))
}

/// Lists `<dir>/*.wasm` and `<dir>/*/*.wasm` and reads them.
fn read_plugin_dir(dir: &Path) -> Vec<FileBytes> {
    let mut out = Vec::new();
    let wasm = |p: &Path| p.extension().is_some_and(|x| x == "wasm") && p.is_file();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if wasm(&path) {
            out.push(FileBytes {
                bytes: std::fs::read(&path),
                signature: read_signature(&path),
                path,
                expected_id: stem,
                versions_dir: false,
            });
        } else if path.is_dir() {
            let id = path
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| wasm(p))
                .collect();
            files.sort();
            for file in files {
                out.push(FileBytes {
                    bytes: std::fs::read(&file),
                    signature: read_signature(&file),
                    path: file,
                    expected_id: id.clone(),
                    versions_dir: true,
                });
            }
        }
    }
    out
}

impl Catalog {
    /// Loads the bundled plugins and every plugin file in `plugin_dir`.
    /// Plugins already in `previous` (same bytes) are reused, not compiled
    /// or instantiated again: a reload costs what changed.
    pub async fn load(
        rt: &Runtime,
        plugin_dir: &Path,
        trust: &Trust,
        previous: Option<&Catalog>,
    ) -> Self {
        Self::load_with(rt, plugin_dir, trust, previous, &[], false).await
    }

    /// [`Catalog::load`], also reusing the plugins in `compiled`; with
    /// `defer_cold`, a component that is in neither and not in the compile
    /// cache is not compiled but listed in [`Catalog::pending`]: compiling a
    /// large one takes seconds (an 18 MB Python component, 5-15 s), and
    /// `serve` must not keep every other tenant waiting for it.
    pub async fn load_with(
        rt: &Runtime,
        plugin_dir: &Path,
        trust: &Trust,
        previous: Option<&Catalog>,
        compiled: &[Compiled],
        defer_cold: bool,
    ) -> Self {
        let mut known: BTreeMap<&str, Result<&Arc<Plugin>, &String>> = previous
            .map(|c| {
                c.by_id
                    .values()
                    .flatten()
                    .map(|e| (e.plugin.digest(), Ok(&e.plugin)))
                    .collect()
            })
            .unwrap_or_default();
        known.extend(compiled.iter().map(|(d, r)| (d.as_str(), r.as_ref())));
        enum Loaded {
            Ready(Arc<Plugin>),
            Deferred(String),
            Failed(String),
        }
        let load = async |bytes: &[u8]| -> Loaded {
            let digest = crate::release::sha256_hex(bytes);
            match known.get(digest.as_str()) {
                Some(Ok(p)) => Loaded::Ready((*p).clone()),
                Some(Err(e)) => Loaded::Failed((*e).clone()),
                None if defer_cold && !rt.is_cached(&digest) => Loaded::Deferred(digest),
                None => match rt.load(bytes).await {
                    Ok(p) => Loaded::Ready(p),
                    Err(e) => Loaded::Failed(e.to_string()),
                },
            }
        };
        let mut catalog = Self {
            require_signed: trust.require_signed,
            publishers: trust.publishers.keys().cloned().collect(),
            ..Self::default()
        };
        let mut candidates = Vec::new();
        for (name, bytes) in switchyard_bundled::ALL {
            let source = Source::Bundled(name);
            match load(bytes).await {
                Loaded::Ready(plugin) => candidates.push(Candidate {
                    plugin,
                    source,
                    expected_id: None,
                    versions_dir: false,
                    release: None,
                }),
                Loaded::Deferred(digest) => catalog.pending.push(Pending {
                    source,
                    id: (*name).to_owned(),
                    digest,
                    bytes: Arc::from(*bytes),
                }),
                Loaded::Failed(e) => {
                    catalog
                        .problems
                        .push(Problem::file(source.to_string(), "(plugin)", e))
                }
            }
        }
        let dir = plugin_dir.to_path_buf();
        let files = tokio::task::spawn_blocking(move || read_plugin_dir(&dir))
            .await
            .unwrap_or_default();
        for f in files {
            // The signature is checked on the bytes just read, before they
            // are compiled or matched to a compiled (or cached) build.
            let release = match (&f.bytes, &f.signature) {
                (_, None) | (Err(_), _) => Ok(None),
                (_, Some(Err(e))) => Err(format!("cannot read its signature file: {e}")),
                (Ok(bytes), Some(Ok(text))) => SignedRelease::parse(text)
                    .and_then(|s| Ok(Some((s.verify(bytes, &trust.publishers)?, s))))
                    .map_err(|e| format!("refused: its signature: {e}")),
            };
            let release = match release {
                Ok(r) => r.map(|(who, s)| (s, who)),
                Err(e) => {
                    catalog.problems.push(Problem::file(f.path, "(plugin)", e));
                    continue;
                }
            };
            let loaded = match &f.bytes {
                Ok(bytes) => load(bytes).await,
                Err(e) => Loaded::Failed(format!("cannot read: {e}")),
            };
            match loaded {
                Loaded::Ready(plugin) => candidates.push(Candidate {
                    plugin,
                    source: Source::File(f.path),
                    expected_id: Some(f.expected_id),
                    versions_dir: f.versions_dir,
                    release,
                }),
                Loaded::Deferred(digest) => catalog.pending.push(Pending {
                    bytes: Arc::from(f.bytes.unwrap_or_default()),
                    source: Source::File(f.path),
                    id: f.expected_id,
                    digest,
                }),
                Loaded::Failed(message) => catalog
                    .problems
                    .push(Problem::file(f.path, "(plugin)", message)),
            }
        }
        catalog.admit(candidates);
        catalog
    }

    /// Applies the rules of the module docs to the loaded candidates.
    fn admit(&mut self, candidates: Vec<Candidate>) {
        let bundled: BTreeMap<String, Source> = candidates
            .iter()
            .filter(|c| matches!(c.source, Source::Bundled(_)))
            .map(|c| (c.plugin.manifest().id.clone(), c.source.clone()))
            .collect();
        // Ids offered both as `<id>.wasm` and `<id>/`: refused outright.
        let mut shapes: BTreeMap<String, (Vec<PathBuf>, Vec<PathBuf>)> = BTreeMap::new();
        for c in &candidates {
            if let (Some(id), Source::File(p)) = (&c.expected_id, &c.source) {
                let e = shapes.entry(id.clone()).or_default();
                if c.versions_dir { &mut e.1 } else { &mut e.0 }.push(p.clone());
            }
        }
        let two_sources: BTreeMap<String, Vec<PathBuf>> = shapes
            .into_iter()
            .filter(|(_, (files, dirs))| !files.is_empty() && !dirs.is_empty())
            .map(|(id, (files, dirs))| (id, files.into_iter().chain(dirs).collect()))
            .collect();
        for c in candidates {
            let m = c.plugin.manifest();
            let refuse = |message: String| Problem::file(c.source.to_string(), "(plugin)", message);
            if let Some(expected) = &c.expected_id {
                if &m.id != expected {
                    let place = if c.versions_dir {
                        format!("the directory `{expected}/`")
                    } else {
                        format!("`{expected}.wasm`")
                    };
                    self.problems.push(refuse(format!(
                        "the component declares plugin id `{}` but sits in {place}; a plugin file \
                         must be named after the id it declares ({}.wasm or {}/)",
                        m.id, m.id, m.id
                    )));
                    continue;
                }
                if let Some(b) = bundled.get(&m.id) {
                    self.problems.push(refuse(format!(
                        "plugin id `{}` is reserved by the bundled plugin ({b}); give this plugin \
                         another id",
                        m.id
                    )));
                    continue;
                }
                if let Some(files) = two_sources.get(&m.id) {
                    let names: Vec<String> =
                        files.iter().map(|p| p.display().to_string()).collect();
                    self.problems.push(refuse(format!(
                        "plugin `{}` is offered by two sources ({}); keep either `{}.wasm` or \
                         the versions directory `{}/`",
                        m.id,
                        names.join(", "),
                        m.id,
                        m.id
                    )));
                    continue;
                }
            }
            if let Some((signed, _)) = &c.release
                && let Err(e) = signed.matches(&m.id, &m.version, c.plugin.world())
            {
                self.problems
                    .push(refuse(format!("refused: its signature: {e}")));
                continue;
            }
            let version = match Version::parse(&m.version) {
                Ok(v) => v,
                Err(e) => {
                    self.problems.push(refuse(format!(
                        "plugin `{}` version `{}` is not a semantic version (MAJOR.MINOR.PATCH): {e}",
                        m.id, m.version
                    )));
                    continue;
                }
            };
            let versions = self.by_id.entry(m.id.clone()).or_default();
            if let Some(dup) = versions.iter().find(|e| e.version == version) {
                self.problems.push(refuse(format!(
                    "plugin `{}` version {version} is also in {}; each version may be installed once",
                    m.id, dup.source
                )));
                continue;
            }
            let signer = match (&c.source, c.release) {
                (Source::Bundled(_), _) => Signer::BuiltIn,
                (_, Some((_, publisher))) => Signer::Publisher(publisher),
                (_, None) => Signer::Unsigned,
            };
            versions.push(Entry {
                plugin: c.plugin.clone(),
                version,
                source: c.source,
                signer,
            });
            versions.sort_by(|a, b| a.version.cmp(&b.version));
        }
    }

    /// Problems of plugin files that are not served.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The problem of the refused file that would hold `id` `version`:
    /// `<id>/<version>.wasm`, or `<id>.wasm`, which may hold any version.
    /// None for a bundled plugin's id, which no file may hold (an impostor
    /// file, refused, must not stop the bundled plugin's instances).
    fn refused_build(&self, id: &str, version: &str) -> Option<&Problem> {
        if self
            .versions(id)
            .iter()
            .any(|e| matches!(e.source, Source::Bundled(_)))
        {
            return None;
        }
        let versioned = Path::new(id).join(format!("{version}.wasm"));
        let single = format!("{id}.wasm");
        self.problems
            .iter()
            .find(|p| p.file.ends_with(&versioned) || p.file.ends_with(&single))
    }

    /// The names of the trusted publishers.
    pub fn publishers(&self) -> &[String] {
        &self.publishers
    }

    /// Plugins waiting to be compiled (see [`Catalog::load_with`]).
    pub fn pending(&self) -> &[Pending] {
        &self.pending
    }

    /// A version of `id` still being compiled, if any: until it is ready,
    /// which version an instance of `id` would run is not known, so such
    /// an instance waits rather than settling on an older version.
    pub fn compiling(&self, id: &str) -> Option<&Pending> {
        self.pending.iter().find(|p| p.id == id)
    }

    /// Installed plugin ids, sorted.
    pub fn ids(&self) -> Vec<&str> {
        self.by_id.keys().map(String::as_str).collect()
    }

    /// Installed versions of `id`, lowest first.
    pub fn versions(&self, id: &str) -> &[Entry] {
        self.by_id.get(id).map_or(&[], Vec::as_slice)
    }

    /// Every installed version of every plugin.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.by_id.values().flatten()
    }

    /// The highest installed version of `id` that `pin` allows.
    pub fn resolve(&self, id: &str, pin: Option<&VersionReq>) -> Result<&Entry, String> {
        self.resolve_for(id, pin, &Policy::default())
    }

    /// Whether the operator requires signed plugins of every tenant
    /// (`[trust] require_signed`).
    pub fn require_signed(&self) -> bool {
        self.require_signed
    }

    /// The highest installed version of `id` that `pin` and `policy` allow.
    pub fn resolve_for(
        &self,
        id: &str,
        pin: Option<&VersionReq>,
        policy: &Policy,
    ) -> Result<&Entry, String> {
        if let Some(p) = self.compiling(id) {
            return Err(format!(
                "plugin `{id}` ({}, {:.1} MB) is being compiled; the instance is served once it \
                 is ready",
                p.source,
                p.bytes.len() as f64 / 1e6
            ));
        }
        let versions = self.versions(id);
        if versions.is_empty() {
            return Err(format!(
                "no plugin `{id}` is installed (available: {})",
                self.ids().join(", ")
            ));
        }
        let matching: Vec<&Entry> = versions
            .iter()
            .rev()
            .filter(|e| pin.is_none_or(|r| r.matches(&e.version)))
            .collect();
        if matching.is_empty() {
            let have: Vec<String> = versions.iter().map(|e| e.version.to_string()).collect();
            return Err(format!(
                "no installed version of plugin `{id}` matches {} (installed: {})",
                pin.map(ToString::to_string).unwrap_or_default(),
                have.join(", ")
            ));
        }
        if let Some(e) = matching.iter().find(|e| policy.allows(e).is_ok()) {
            return Ok(e);
        }
        let why: Vec<String> = matching
            .iter()
            .map(|e| {
                format!(
                    "{} ({}) {}",
                    e.version,
                    e.source,
                    policy.allows(e).unwrap_err()
                )
            })
            .collect();
        Err(format!(
            "no installed version of plugin `{id}` is one this tenant trusts: {}",
            why.join("; ")
        ))
    }
}

/// Which build an instance runs, and whether that differs from what it was
/// set up with.
pub struct Resolved<'a> {
    /// The installed build.
    pub entry: &'a Entry,
    /// The build to record when it is not the recorded one.
    pub record: Option<PluginLock>,
    /// Why the build changed, for the log.
    pub note: Option<String>,
}

impl Catalog {
    /// The build an instance runs, honouring what it was set up with
    /// (`lock`): an instance stays on its recorded version while that is
    /// installed and allowed by its pin, so installing a newer file changes
    /// nothing until the operator says so (`switchyard plugin upgrade`, or
    /// a pin). A recorded version whose file now holds different code is
    /// refused: a version's code must not change under the instances that
    /// run it (the bundled plugins, which change only with the binary the
    /// operator installed, are followed).
    pub fn resolve_locked(
        &self,
        tenant: &str,
        instance: &str,
        id: &str,
        pin: Option<&VersionReq>,
        lock: Option<&PluginLock>,
        policy: &Policy,
    ) -> Result<Resolved<'_>, String> {
        let record = |e: &Entry| PluginLock {
            tenant: tenant.to_owned(),
            instance: instance.to_owned(),
            plugin: id.to_owned(),
            version: e.version.to_string(),
            digest: e.digest().to_owned(),
            locked_at: crate::clock::now_ms(),
        };
        let locked = lock.filter(|l| l.plugin == id).and_then(|l| {
            let v = Version::parse(&l.version).ok()?;
            let e = self.versions(id).iter().find(|e| e.version == v)?;
            pin.is_none_or(|p| p.matches(&v)).then_some((l, e))
        });
        if let Some((l, e)) = locked {
            // The build an instance was set up with may no longer be one
            // its tenant trusts (a key removed, a policy tightened): then
            // it does not run, and the instance is reported, rather than
            // silently moved to another version.
            policy.allows(e).map_err(|why| {
                format!(
                    "plugin `{id}` {} ({}), the build this instance was set up with, {why}",
                    e.version, e.source
                )
            })?;
            if e.digest() == l.digest {
                return Ok(Resolved {
                    entry: e,
                    record: None,
                    note: None,
                });
            }
            return match &e.source {
                Source::Bundled(_) => Ok(Resolved {
                    entry: e,
                    record: Some(record(e)),
                    note: Some(format!(
                        "the bundled build of {id} {} changed with the switchyard binary",
                        e.version
                    )),
                }),
                Source::File(path) => Err(format!(
                    "plugin `{id}` {} in {} is not the build this instance was set up with \
                     (sha256 {}…, now {}…): a version's code must not change under the \
                     instances that run it. Give the new build a new version, or accept it \
                     with `switchyard plugin upgrade --config DIR {tenant} {instance}`",
                    e.version,
                    path.display(),
                    &l.digest[..l.digest.len().min(12)],
                    &e.digest()[..12]
                )),
            };
        }
        // The build it was set up with is still there but refused (changed
        // after signing, signed by a key no longer trusted, unreadable): the
        // instance is reported and does not run, rather than moved to
        // another version nobody chose for it. (A version removed from the
        // plugin directory, or excluded by a new pin, is the operator's
        // choice: the instance moves, as below.)
        if let Some(l) = lock.filter(|l| l.plugin == id)
            && pin.is_none_or(|p| Version::parse(&l.version).is_ok_and(|v| p.matches(&v)))
            && let Some(refused) = self.refused_build(id, &l.version)
        {
            // `<id>.wasm` may hold any version: it may be this one.
            let which = if refused.file.ends_with(format!("{id}.wasm")) {
                ", which may hold it,"
            } else {
                ""
            };
            return Err(format!(
                "plugin `{id}` {}, the build this instance was set up with, is not served: {}{which} \
                 is refused ({}). Fix or restore the file, or move the instance to another \
                 version with `switchyard plugin upgrade --config DIR {tenant} {instance}`",
                l.version,
                refused.file.display(),
                refused.message
            ));
        }
        let e = self.resolve_for(id, pin, policy)?;
        let note = lock.filter(|l| l.plugin == id).map(|l| {
            format!(
                "moves from {id} {} to {} ({} {} is no longer installed, or the pin excludes it)",
                l.version, e.version, id, l.version
            )
        });
        Ok(Resolved {
            entry: e,
            record: Some(record(e)),
            note,
        })
    }
}

/// Parses a version pin: a bare version (`0.2.1`) means exactly it; a
/// requirement (`^0.2`, `>=1.0, <2`) means what semver says.
pub fn parse_version_req(text: &str) -> Result<VersionReq, String> {
    let text = text.trim();
    let exact = Version::parse(text).is_ok();
    let req = if exact {
        format!("={text}")
    } else {
        text.to_owned()
    };
    VersionReq::parse(&req)
        .map_err(|e| format!("`{text}` is not a version or version requirement: {e}"))
}

/// Splits `echo@0.2` into the id and its pin.
pub fn parse_plugin_ref(text: &str) -> Result<(String, Option<VersionReq>), String> {
    match text.split_once('@') {
        None => Ok((text.to_owned(), None)),
        Some((id, pin)) => Ok((id.to_owned(), Some(parse_version_req(pin)?))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_versions_pin_exactly_and_requirements_range() {
        let exact = parse_version_req("0.2.1").unwrap();
        assert!(exact.matches(&Version::parse("0.2.1").unwrap()));
        assert!(!exact.matches(&Version::parse("0.2.2").unwrap()));
        let caret = parse_version_req("^0.2").unwrap();
        assert!(caret.matches(&Version::parse("0.2.9").unwrap()));
        assert!(!caret.matches(&Version::parse("0.3.0").unwrap()));
        let (id, pin) = parse_plugin_ref("echo@>=1.0, <2").unwrap();
        assert_eq!(id, "echo");
        assert!(pin.unwrap().matches(&Version::parse("1.4.0").unwrap()));
        assert!(
            parse_plugin_ref("echo@banana")
                .unwrap_err()
                .contains("banana")
        );
        assert_eq!(parse_plugin_ref("echo").unwrap(), ("echo".into(), None));
    }
}
