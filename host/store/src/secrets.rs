//! Secrets encrypted at rest.
//!
//! Envelope encryption with AES-256-GCM: a master key (a key file created
//! with mode 0600 on first run, or an environment variable) wraps one random
//! data key per tenant; each secret is encrypted under its tenant's data key
//! with the tenant and secret name as associated data. A ciphertext copied to
//! another tenant or name therefore fails to decrypt instead of yielding the
//! wrong secret, and a leaked database without the master key reveals nothing.
//!
//! ```
//! use secrecy::{ExposeSecret, SecretString};
//! use std::sync::Arc;
//! use switchyard_store::{MasterKey, SecretStore, SqliteStore};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let secrets = SecretStore::new(Arc::new(SqliteStore::open_in_memory().unwrap()), MasterKey::generate());
//! secrets.set("acme", "uem-password", &SecretString::from("hunter2")).await.unwrap();
//! let value = secrets.get("acme", "uem-password").await.unwrap().unwrap();
//! assert_eq!(value.expose_secret(), "hunter2");
//! assert!(secrets.get("globex", "uem-password").await.unwrap().is_none());
//! # });
//! ```

use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use async_trait::async_trait;
use base64::Engine;
use rusqlite::{OptionalExtension, params};
use secrecy::{ExposeSecret, SecretString};

use crate::sqlite::backend;
use crate::{SqliteStore, StoreError};

const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;

/// Why a secret operation failed. Never contains a secret value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret name is not acceptable.
    #[error("invalid secret name `{0}`: use 1-128 characters of A-Z, a-z, 0-9, `.`, `_` and `-`")]
    InvalidName(String),
    /// Decryption failed: wrong master key, or a ciphertext moved between
    /// tenants or names, or a corrupted row.
    #[error(
        "secret `{name}` of tenant `{tenant}` cannot be decrypted: the master key is not the \
         one it was stored with, or the stored value was altered or moved"
    )]
    Undecryptable {
        /// Tenant.
        tenant: String,
        /// Secret name.
        name: String,
    },
    /// The master key could not be loaded or created.
    #[error("master key: {0}")]
    MasterKey(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The key that wraps every tenant's data key. Its bytes are never logged
/// or formatted.
pub struct MasterKey(Box<Key<Aes256Gcm>>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self(Box::new(Aes256Gcm::generate_key(OsRng)))
    }

    /// Decodes a base64 key of 32 bytes (as in the key file or the
    /// `SWITCHYARD_MASTER_KEY` variable).
    pub fn from_base64(text: &SecretString) -> Result<Self, SecretError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.expose_secret().trim())
            .map_err(|_| SecretError::MasterKey("not valid base64".into()))?;
        if bytes.len() != KEY_LEN {
            return Err(SecretError::MasterKey(format!(
                "decodes to {} bytes; a master key is {KEY_LEN} bytes",
                bytes.len()
            )));
        }
        Ok(Self(Box::new(*Key::<Aes256Gcm>::from_slice(&bytes))))
    }

    /// Reads the key file at `path`, creating it (mode 0600, random key) if
    /// it does not exist. A key file readable by group or others is refused.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        let fail = |what: &str, e: std::io::Error| {
            SecretError::MasterKey(format!("{what} {}: {e}", path.display()))
        };
        if !path.exists() {
            let key = Self::generate();
            let text = base64::engine::general_purpose::STANDARD.encode(key.0.as_slice());
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| fail("creating the directory of", e))?;
            }
            write_private(path, text.as_bytes()).map_err(|e| fail("creating", e))?;
            tracing::info!(path = %path.display(), "created a new master key file");
            return Ok(key);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|e| fail("reading", e))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(SecretError::MasterKey(format!(
                    "{} is accessible by group or others (mode {:o}); run chmod 600 on it",
                    path.display(),
                    mode & 0o777
                )));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail("reading", e))?;
        Self::from_base64(&SecretString::from(text))
            .map_err(|e| SecretError::MasterKey(format!("{}: {e}", path.display())))
    }

    /// The key from environment variable `var` if set, else from the key
    /// file at `path` (created if missing).
    pub fn from_env_or_file(var: &str, path: &Path) -> Result<Self, SecretError> {
        match std::env::var(var) {
            Ok(v) => Self::from_base64(&SecretString::from(v))
                .map_err(|e| SecretError::MasterKey(format!("${var}: {e}"))),
            Err(_) => Self::load_or_create(path),
        }
    }

    /// The key from environment variable `var` if set, else from the key
    /// file at `path` if there is one; None when neither is there (never
    /// created). For the previous key during a rotation.
    pub fn optional_from_env_or_file(var: &str, path: &Path) -> Result<Option<Self>, SecretError> {
        if std::env::var_os(var).is_some() || path.exists() {
            Self::from_env_or_file(var, path).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Writes a new random key to `path` (mode 0600), refusing to replace
    /// a file that is there.
    pub fn create_new_file(path: &Path) -> Result<(), SecretError> {
        let key = Self::generate();
        let text = base64::engine::general_purpose::STANDARD.encode(key.0.as_slice());
        write_private(path, text.as_bytes())
            .map_err(|e| SecretError::MasterKey(format!("creating {}: {e}", path.display())))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn seal(cipher: &Aes256Gcm, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let ct = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

fn open(cipher: &Aes256Gcm, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
}

fn data_key_aad(tenant: &str) -> Vec<u8> {
    format!("switchyard/data-key/v1\0{tenant}").into_bytes()
}

fn secret_aad(tenant: &str, name: &str) -> Vec<u8> {
    format!("switchyard/secret/v1\0{tenant}\0{name}").into_bytes()
}

fn validate_name(name: &str) -> Result<(), SecretError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SecretError::InvalidName(name.chars().take(64).collect()))
    }
}

/// A secret's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMeta {
    /// Name.
    pub name: String,
    /// Last update, seconds since the Unix epoch.
    pub updated_at: i64,
}

/// Where the sealed rows live. The backend stores opaque bytes; all
/// cryptography happens in [`SecretStore`], so a backend never holds a key or
/// a plaintext.
#[async_trait]
pub trait SecretRows: Send + Sync {
    /// The wrapped data key of `tenant`, if one was created.
    async fn wrapped_key(&self, tenant: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores `wrapped` as `tenant`'s data key unless one exists, and returns
    /// the stored one (two writers racing both get the winner's key).
    async fn insert_wrapped_key(
        &self,
        tenant: &str,
        wrapped: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError>;

    /// Every tenant's wrapped data key (a master key rotation).
    async fn wrapped_keys(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Replaces `tenant`'s wrapped data key with `new` if it is still `old`;
    /// returns whether it did.
    async fn replace_wrapped_key(
        &self,
        tenant: &str,
        old: Vec<u8>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError>;

    /// Stores (or replaces) a sealed secret.
    async fn put_sealed(&self, tenant: &str, name: &str, sealed: Vec<u8>)
    -> Result<(), StoreError>;

    /// A sealed secret.
    async fn sealed(&self, tenant: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// The tenant's secret names with their update times, sorted by name.
    async fn secret_names(&self, tenant: &str) -> Result<Vec<SecretMeta>, StoreError>;

    /// Deletes a sealed secret; returns whether it existed.
    async fn delete_sealed(&self, tenant: &str, name: &str) -> Result<bool, StoreError>;

    /// Per tenant with secrets, a fingerprint that changes whenever one of
    /// its secrets is set or deleted (the sealed rows' random nonces), so
    /// that a reload can tell which tenants' secrets changed without
    /// decrypting anything.
    async fn secret_fingerprints(
        &self,
    ) -> Result<std::collections::BTreeMap<String, String>, StoreError>;
}

#[async_trait]
impl SecretRows for SqliteStore {
    async fn secret_fingerprints(
        &self,
    ) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
        self.with_read(|c| {
            let mut st = c
                .prepare(
                    "SELECT tenant, group_concat(name || ':' || hex(substr(sealed, 1, 12)), ',')
                     FROM (SELECT tenant, name, sealed FROM secrets ORDER BY tenant, name)
                     GROUP BY tenant",
                )
                .map_err(backend)?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn wrapped_key(&self, tenant: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let t = tenant.to_owned();
        self.with_read(move |c| {
            c.query_row(
                "SELECT wrapped FROM tenant_keys WHERE tenant = ?1",
                params![t],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn insert_wrapped_key(
        &self,
        tenant: &str,
        wrapped: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        let t = tenant.to_owned();
        self.with_conn(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO tenant_keys (tenant, wrapped) VALUES (?1, ?2)",
                params![t, wrapped],
            )
            .map_err(backend)?;
            c.query_row(
                "SELECT wrapped FROM tenant_keys WHERE tenant = ?1",
                params![t],
                |r| r.get(0),
            )
            .map_err(backend)
        })
        .await
    }

    async fn wrapped_keys(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.with_read(|c| {
            let mut st = c
                .prepare("SELECT tenant, wrapped FROM tenant_keys ORDER BY tenant")
                .map_err(backend)?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn replace_wrapped_key(
        &self,
        tenant: &str,
        old: Vec<u8>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let t = tenant.to_owned();
        self.with_conn(move |c| {
            c.execute(
                "UPDATE tenant_keys SET wrapped = ?3 WHERE tenant = ?1 AND wrapped = ?2",
                params![t, old, new],
            )
            .map(|n| n == 1)
            .map_err(backend)
        })
        .await
    }

    async fn put_sealed(
        &self,
        tenant: &str,
        name: &str,
        sealed: Vec<u8>,
    ) -> Result<(), StoreError> {
        let (t, n) = (tenant.to_owned(), name.to_owned());
        self.with_conn(move |c| {
            c.execute(
                "INSERT INTO secrets (tenant, name, sealed, updated_at)
                 VALUES (?1, ?2, ?3, unixepoch())
                 ON CONFLICT (tenant, name) DO UPDATE
                 SET sealed = excluded.sealed, updated_at = excluded.updated_at",
                params![t, n, sealed],
            )
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn sealed(&self, tenant: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (t, n) = (tenant.to_owned(), name.to_owned());
        self.with_read(move |c| {
            c.query_row(
                "SELECT sealed FROM secrets WHERE tenant = ?1 AND name = ?2",
                params![t, n],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn secret_names(&self, tenant: &str) -> Result<Vec<SecretMeta>, StoreError> {
        let t = tenant.to_owned();
        self.with_read(move |c| {
            let mut stmt = c
                .prepare("SELECT name, updated_at FROM secrets WHERE tenant = ?1 ORDER BY name")
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![t], |r| {
                    Ok(SecretMeta {
                        name: r.get(0)?,
                        updated_at: r.get(1)?,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn delete_sealed(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        let (t, n) = (tenant.to_owned(), name.to_owned());
        self.with_conn(move |c| {
            c.execute(
                "DELETE FROM secrets WHERE tenant = ?1 AND name = ?2",
                params![t, n],
            )
            .map(|n| n > 0)
            .map_err(backend)
        })
        .await
    }
}

/// Encrypted secrets in any backend that keeps [`SecretRows`].
#[derive(Clone)]
pub struct SecretStore {
    db: Arc<dyn SecretRows>,
    master: Arc<MasterKey>,
    /// During a master key rotation, the key being replaced: data keys it
    /// wrapped are still read (see [`SecretStore::rewrap`]).
    previous: Option<Arc<MasterKey>>,
}

/// What [`SecretStore::rewrap`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrapped {
    /// Data keys moved from the previous master key to the current one.
    pub rewrapped: usize,
    /// Data keys the current master key already wrapped.
    pub current: usize,
}

impl SecretStore {
    /// Secrets in `db`, protected by `master`.
    pub fn new(db: Arc<dyn SecretRows>, master: MasterKey) -> Self {
        Self {
            db,
            master: Arc::new(master),
            previous: None,
        }
    }

    /// Also reads data keys wrapped by `previous` (a master key rotation in
    /// progress). New data keys are always wrapped by the current key.
    pub fn with_previous(mut self, previous: Option<MasterKey>) -> Self {
        self.previous = previous.map(Arc::new);
        self
    }

    /// Whether a previous master key was given (a rotation in progress).
    pub fn has_previous(&self) -> bool {
        self.previous.is_some()
    }

    /// Opens a wrapped data key with the current master key, else the
    /// previous one; which one did it (true: the current one).
    fn unwrap_key(&self, tenant: &str, wrapped: &[u8]) -> Option<(Vec<u8>, bool)> {
        let aad = data_key_aad(tenant);
        let valid = |k: &Vec<u8>| k.len() == KEY_LEN;
        if let Some(k) = open(&self.master.cipher(), wrapped, &aad).filter(valid) {
            return Some((k, true));
        }
        let previous = self.previous.as_ref()?;
        open(&previous.cipher(), wrapped, &aad)
            .filter(valid)
            .map(|k| (k, false))
    }

    /// Re-wraps, under the current master key, every tenant's data key the
    /// previous one wrapped: the last step of a master key rotation. The
    /// secrets themselves are untouched (the data keys do not change).
    /// Each tenant's key is replaced on its own, only if nobody changed it
    /// meanwhile, so running it again (or beside daemons) is harmless. A
    /// data key neither key opens fails the whole call, naming its tenants,
    /// after the others are done.
    pub async fn rewrap(&self) -> Result<Rewrapped, SecretError> {
        let mut done = Rewrapped {
            rewrapped: 0,
            current: 0,
        };
        let mut unreadable = Vec::new();
        for (tenant, wrapped) in self.db.wrapped_keys().await? {
            match self.unwrap_key(&tenant, &wrapped) {
                Some((_, true)) => done.current += 1,
                Some((key, false)) => {
                    let again = seal(&self.master.cipher(), &key, &data_key_aad(&tenant));
                    if self.db.replace_wrapped_key(&tenant, wrapped, again).await? {
                        done.rewrapped += 1;
                    } else {
                        // Changed meanwhile (another rotation run): look
                        // again at what is there now.
                        unreadable.push(tenant);
                    }
                }
                None => unreadable.push(tenant),
            }
        }
        if unreadable.is_empty() {
            return Ok(done);
        }
        Err(SecretError::MasterKey(format!(
            "{} data key(s) re-wrapped, but neither the current nor the previous master key \
             opens the data key of tenant(s) {}: run this again, and if it persists, their \
             secrets were made with another key",
            done.rewrapped,
            unreadable.join(", ")
        )))
    }

    /// The tenant's data key, created on first use.
    async fn data_key(&self, tenant: &str, create: bool) -> Result<Option<Aes256Gcm>, SecretError> {
        let wrapped = match self.db.wrapped_key(tenant).await? {
            Some(w) => w,
            None if !create => return Ok(None),
            None => {
                let key = Aes256Gcm::generate_key(OsRng);
                let wrapped = seal(&self.master.cipher(), key.as_slice(), &data_key_aad(tenant));
                self.db.insert_wrapped_key(tenant, wrapped).await?
            }
        };
        let (key, _) = self.unwrap_key(tenant, &wrapped).ok_or_else(|| {
            SecretError::MasterKey(format!(
                "the data key of tenant `{tenant}` cannot be unwrapped: \
                 this is not the master key it was created with"
            ))
        })?;
        Ok(Some(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key))))
    }

    /// Per tenant with secrets, a fingerprint that changes whenever one of
    /// them is set or deleted (see [`SecretRows::secret_fingerprints`]).
    pub async fn fingerprints(
        &self,
    ) -> Result<std::collections::BTreeMap<String, String>, SecretError> {
        Ok(self.db.secret_fingerprints().await?)
    }

    /// Stores (or replaces) secret `name` of `tenant`.
    pub async fn set(
        &self,
        tenant: &str,
        name: &str,
        value: &SecretString,
    ) -> Result<(), SecretError> {
        validate_name(name)?;
        let cipher = self
            .data_key(tenant, true)
            .await?
            .expect("created on demand");
        let sealed = seal(
            &cipher,
            value.expose_secret().as_bytes(),
            &secret_aad(tenant, name),
        );
        Ok(self.db.put_sealed(tenant, name, sealed).await?)
    }

    /// The value of secret `name` of `tenant`.
    pub async fn get(&self, tenant: &str, name: &str) -> Result<Option<SecretString>, SecretError> {
        validate_name(name)?;
        let Some(sealed) = self.db.sealed(tenant, name).await? else {
            return Ok(None);
        };
        let undecryptable = || SecretError::Undecryptable {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
        };
        let cipher = self
            .data_key(tenant, false)
            .await?
            .ok_or_else(undecryptable)?;
        let plain = open(&cipher, &sealed, &secret_aad(tenant, name)).ok_or_else(undecryptable)?;
        let text = String::from_utf8(plain).map_err(|_| undecryptable())?;
        Ok(Some(SecretString::from(text)))
    }

    /// The names of `tenant`'s secrets, sorted.
    pub async fn list(&self, tenant: &str) -> Result<Vec<SecretMeta>, SecretError> {
        Ok(self.db.secret_names(tenant).await?)
    }

    /// Deletes secret `name` of `tenant`; returns whether it existed.
    pub async fn delete(&self, tenant: &str, name: &str) -> Result<bool, SecretError> {
        validate_name(name)?;
        Ok(self.db.delete_sealed(tenant, name).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::backend_tests;

    fn s(v: &str) -> SecretString {
        SecretString::from(v.to_owned())
    }

    #[tokio::test]
    async fn set_get_list_delete() {
        let store = SecretStore::new(
            Arc::new(SqliteStore::open_in_memory().unwrap()),
            MasterKey::generate(),
        );
        store.set("acme", "b-token", &s("one")).await.unwrap();
        store.set("acme", "a-pass", &s("two")).await.unwrap();
        store.set("acme", "b-token", &s("three")).await.unwrap();
        assert_eq!(
            store
                .get("acme", "b-token")
                .await
                .unwrap()
                .unwrap()
                .expose_secret(),
            "three"
        );
        let names: Vec<_> = store
            .list("acme")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["a-pass", "b-token"]);
        assert!(store.list("globex").await.unwrap().is_empty());
        assert!(store.delete("acme", "a-pass").await.unwrap());
        assert!(!store.delete("acme", "a-pass").await.unwrap());
        assert!(store.get("acme", "a-pass").await.unwrap().is_none());
        let err = store.set("acme", "bad name!", &s("x")).await.unwrap_err();
        assert!(matches!(err, SecretError::InvalidName(_)));
    }

    #[tokio::test]
    async fn fingerprints_change_when_a_secret_is_set_again() {
        let db = Arc::new(SqliteStore::open_in_memory().unwrap());
        let store = SecretStore::new(db.clone(), MasterKey::generate());
        store.set("acme", "a", &s("v")).await.unwrap();
        let before = db.secret_fingerprints().await.unwrap();
        // The same value again still changes the fingerprint.
        store.set("acme", "a", &s("v")).await.unwrap();
        let after = db.secret_fingerprints().await.unwrap();
        assert_ne!(before["acme"], after["acme"]);
        assert!(!after.contains_key("globex"));
        store.delete("acme", "a").await.unwrap();
        assert!(db.secret_fingerprints().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn stored_bytes_are_not_the_plaintext() {
        let db = SqliteStore::open_in_memory().unwrap();
        let store = SecretStore::new(Arc::new(db.clone()), MasterKey::generate());
        store
            .set("acme", "pw", &s("plain-text-marker"))
            .await
            .unwrap();
        let dump: Vec<Vec<u8>> = db
            .with_conn(|c| {
                let mut st = c
                    .prepare("SELECT sealed FROM secrets UNION ALL SELECT wrapped FROM tenant_keys")
                    .unwrap();
                Ok(st
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect())
            })
            .await
            .unwrap();
        assert_eq!(dump.len(), 2);
        for blob in dump {
            assert!(!blob.windows(17).any(|w| w == b"plain-text-marker"));
        }
    }

    #[tokio::test]
    async fn ciphertext_moved_to_another_tenant_or_name_does_not_decrypt() {
        let db = SqliteStore::open_in_memory().unwrap();
        let store = SecretStore::new(Arc::new(db.clone()), MasterKey::generate());
        store.set("acme", "pw", &s("acme-secret")).await.unwrap();
        store
            .set("globex", "pw", &s("globex-secret"))
            .await
            .unwrap();
        store.set("acme", "other", &s("x")).await.unwrap();
        // An attacker with database access copies acme's ciphertext over
        // globex's, and over another name of acme's.
        db.with_conn(|c| {
            c.execute_batch(
                "UPDATE secrets SET sealed = (SELECT sealed FROM secrets WHERE tenant='acme' AND name='pw')
                 WHERE tenant='globex' AND name='pw';
                 UPDATE secrets SET sealed = (SELECT sealed FROM secrets WHERE tenant='acme' AND name='pw')
                 WHERE tenant='acme' AND name='other';",
            )
            .map_err(crate::sqlite::backend)
        })
        .await
        .unwrap();
        for (tenant, name) in [("globex", "pw"), ("acme", "other")] {
            let err = store.get(tenant, name).await.unwrap_err();
            assert!(matches!(err, SecretError::Undecryptable { .. }), "{err}");
            assert!(!err.to_string().contains("acme-secret"));
        }
        assert_eq!(
            store
                .get("acme", "pw")
                .await
                .unwrap()
                .unwrap()
                .expose_secret(),
            "acme-secret"
        );
    }

    backend_tests! {
        async fn a_different_master_key_cannot_read(db) {
            SecretStore::new(Arc::new(db.clone()), MasterKey::generate())
                .set("acme", "pw", &s("v"))
                .await
                .unwrap();
            let err = SecretStore::new(Arc::new(db), MasterKey::generate())
                .get("acme", "pw")
                .await
                .unwrap_err();
            assert!(err.to_string().contains("not the master key"), "{err}");
        }
    }

    backend_tests! {
        /// Issue 20 (operations): a master key rotation. Daemons holding the
        /// new key and the previous one read every secret and wrap new data
        /// keys with the new key; `rewrap` moves the rest; then the new key
        /// alone reads everything, and the old one nothing.
        async fn a_master_key_rotation_keeps_every_secret(db) {
            use base64::Engine;
            let text = |k: &MasterKey| base64::engine::general_purpose::STANDARD.encode(k.0.as_slice());
            let (a, b) = (MasterKey::generate(), MasterKey::generate());
            let key = |t: &String| MasterKey::from_base64(&SecretString::from(t.clone())).unwrap();
            let (a, b) = (text(&a), text(&b));
            let db: Arc<dyn SecretRows> = Arc::new(db);
            let old = SecretStore::new(db.clone(), key(&a));
            old.set("acme", "pw", &s("one")).await.unwrap();
            old.set("globex", "pw", &s("two")).await.unwrap();

            let during = SecretStore::new(db.clone(), key(&b)).with_previous(Some(key(&a)));
            let read = |st: SecretStore, t: &'static str| async move {
                st.get(t, "pw").await.map(|v| v.map(|v| v.expose_secret().to_owned()))
            };
            assert_eq!(read(during.clone(), "acme").await.unwrap().as_deref(), Some("one"));
            during.set("initech", "pw", &s("three")).await.unwrap();
            let only_new = SecretStore::new(db.clone(), key(&b));
            assert!(read(only_new.clone(), "acme").await.is_err(), "not re-wrapped yet");
            assert_eq!(read(only_new.clone(), "initech").await.unwrap().as_deref(), Some("three"));

            let done = during.rewrap().await.unwrap();
            assert_eq!(done, Rewrapped { rewrapped: 2, current: 1 });
            for (t, v) in [("acme", "one"), ("globex", "two"), ("initech", "three")] {
                assert_eq!(read(only_new.clone(), t).await.unwrap().as_deref(), Some(v));
            }
            assert_eq!(
                during.rewrap().await.unwrap(),
                Rewrapped { rewrapped: 0, current: 3 },
                "running it again changes nothing"
            );
            let err = read(SecretStore::new(db.clone(), key(&a)), "acme").await.unwrap_err();
            assert!(err.to_string().contains("not the master key"), "{err}");

            // A data key that no key opens is named, after the others.
            let stray = SecretStore::new(db.clone(), MasterKey::generate());
            stray.set("umbrella", "pw", &s("four")).await.unwrap();
            let err = during.rewrap().await.unwrap_err().to_string();
            assert!(err.contains("umbrella") && !err.contains("acme"), "{err}");
        }
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/master.key");
        let k1 = MasterKey::load_or_create(&path).unwrap();
        let k2 = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(k1.0, k2.0);
        assert_eq!(format!("{k1:?}"), "MasterKey([REDACTED])");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = MasterKey::load_or_create(&path).unwrap_err().to_string();
            assert!(err.contains("chmod 600"), "{err}");
        }
        let err = MasterKey::from_base64(&s("c2hvcnQ="))
            .unwrap_err()
            .to_string();
        assert!(err.contains("5 bytes"), "{err}");
    }
}
