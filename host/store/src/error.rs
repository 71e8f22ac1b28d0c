//! Why a store operation failed.

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The key is empty, too long or contains NUL.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The value is larger than [`crate::Quota::max_value_bytes`].
    #[error("value of {size} bytes exceeds the limit of {limit} bytes")]
    ValueTooLarge {
        /// Size of the rejected value.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The write would take the namespace over its quota.
    #[error("storage quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The database failed.
    #[error("storage backend failed: {0}")]
    Backend(String),
}

/// A SQLite error as the store reports it.
pub(crate) fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}
