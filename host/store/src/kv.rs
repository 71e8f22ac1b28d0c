//! The key-value interface every backend implements for plugin storage:
//! namespaces, quotas, and the rules for keys and values.

use async_trait::async_trait;

use crate::error::StoreError;

/// A (tenant, instance) pair, as the queue orders and skips them.
pub type InstanceKey = (String, String);

/// The (tenant, instance) pair every key belongs to. Built by the host from
/// its own configuration; never from guest input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    /// Tenant id.
    pub tenant: String,
    /// Plugin instance id within the tenant.
    pub instance: String,
}

impl Namespace {
    /// Creates a namespace.
    pub fn new(tenant: impl Into<String>, instance: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            instance: instance.into(),
        }
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tenant, self.instance)
    }
}

/// Size limits for one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Total of key and value bytes the namespace may hold.
    pub max_total_bytes: u64,
    /// Number of keys the namespace may hold.
    pub max_keys: u64,
}

impl Default for Quota {
    fn default() -> Self {
        Self {
            max_value_bytes: 1024 * 1024,
            max_total_bytes: 64 * 1024 * 1024,
            max_keys: 100_000,
        }
    }
}

/// Longest key, in bytes. Keys are short identifiers; a bound keeps index
/// pages small and stops a guest from using keys as a second value channel.
pub const MAX_KEY_BYTES: usize = 512;

/// Most keys one `list` call returns, whatever the caller asks for.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// How much a namespace holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sum of key and value lengths.
    pub bytes: u64,
    /// Number of keys.
    pub keys: u64,
}

/// Checks a key against the rules every backend applies.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey("key is empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StoreError::InvalidKey(format!(
            "key is {} bytes long; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if key.contains('\0') {
        return Err(StoreError::InvalidKey(
            "key contains a NUL character".into(),
        ));
    }
    Ok(())
}

/// Checks a list prefix (at most a key's length).
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.len() > MAX_KEY_BYTES {
        return Err(StoreError::InvalidKey(format!(
            "prefix is {} bytes long; the limit is {MAX_KEY_BYTES}",
            prefix.len()
        )));
    }
    Ok(())
}

/// Refuses a write that would take namespace `ns` from `usage` to `bytes`
/// and `keys` past `quota`. Shrinking is always allowed, so a namespace
/// over quota (after the quota was lowered) can recover.
pub(crate) fn check_quota(
    ns: &Namespace,
    quota: &Quota,
    usage: Usage,
    bytes: u64,
    keys: u64,
) -> Result<(), StoreError> {
    if bytes > quota.max_total_bytes && bytes > usage.bytes {
        return Err(StoreError::QuotaExceeded(format!(
            "namespace {ns} would hold {bytes} bytes; the quota is {} bytes",
            quota.max_total_bytes
        )));
    }
    if keys > quota.max_keys && keys > usage.keys {
        return Err(StoreError::QuotaExceeded(format!(
            "namespace {ns} would hold {keys} keys; the quota is {} keys",
            quota.max_keys
        )));
    }
    Ok(())
}

pub(crate) fn validate_value(value: &[u8], quota: &Quota) -> Result<(), StoreError> {
    if value.len() > quota.max_value_bytes {
        return Err(StoreError::ValueTooLarge {
            size: value.len(),
            limit: quota.max_value_bytes,
        });
    }
    Ok(())
}

/// Which plugin version a namespace's data was last brought up to date
/// for: the host records it once a version's storage migration step (if
/// any) has run, so that the step runs once per version, not per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageVersion {
    /// Plugin id.
    pub plugin: String,
    /// Plugin version.
    pub version: String,
}

/// A key-value backend shared by all tenants; every call names its namespace.
#[async_trait]
pub trait KvBackend: Send + Sync + 'static {
    /// Returns the value of `key`.
    async fn get(&self, ns: &Namespace, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores `value` under `key` if the namespace stays within `quota`.
    async fn set(
        &self,
        ns: &Namespace,
        key: &str,
        value: &[u8],
        quota: &Quota,
    ) -> Result<(), StoreError>;

    /// Deletes `key`; returns whether it existed.
    async fn delete(&self, ns: &Namespace, key: &str) -> Result<bool, StoreError>;

    /// Returns up to `limit` keys (capped at [`MAX_LIST_LIMIT`]) that start
    /// with `prefix` and sort after `after`, in ascending byte order.
    async fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;

    /// Replaces the value of `key` with `new` (None deletes) if the current
    /// value equals `expected` (None: absent). Returns whether it swapped.
    async fn compare_and_swap(
        &self,
        ns: &Namespace,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        quota: &Quota,
    ) -> Result<bool, StoreError>;

    /// Reports what the namespace holds.
    async fn usage(&self, ns: &Namespace) -> Result<Usage, StoreError>;

    /// Deletes everything the namespace holds (an instance removed with its
    /// data), its recorded storage version included; returns how many keys
    /// there were.
    async fn clear(&self, ns: &Namespace) -> Result<u64, StoreError>;

    /// The plugin version the namespace's data was last recorded for.
    async fn storage_version(&self, ns: &Namespace) -> Result<Option<StorageVersion>, StoreError>;

    /// Records `new` as the namespace's storage version if the recorded one
    /// is still `expected` (None: nothing recorded); returns whether it
    /// did. Two daemons upgrading one instance at once record it once.
    async fn record_storage_version(
        &self,
        ns: &Namespace,
        expected: Option<&StorageVersion>,
        new: &StorageVersion,
    ) -> Result<bool, StoreError>;

    /// Claims the namespace's storage migration for `owner` until
    /// `until_ms` (milliseconds since the epoch), so that two daemons never
    /// run a migration step of one instance at the same time. Returns None
    /// when `owner` holds the claim now, or when another owner's claim
    /// ends (it is refused until then).
    async fn claim_storage_migration(
        &self,
        ns: &Namespace,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Option<i64>, StoreError>;

    /// Gives up `owner`'s claim, if it holds one.
    async fn release_storage_migration(
        &self,
        ns: &Namespace,
        owner: &str,
    ) -> Result<(), StoreError>;
}
