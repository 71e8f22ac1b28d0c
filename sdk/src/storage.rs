//! This instance's private key-value store.
//!
//! Keys are 1-512 bytes of UTF-8 without NUL. The host scopes every key to
//! the tenant and instance; there is no way to name another namespace.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::switchyard::plugin::storage as wit;
pub use wit::Error;

impl From<Error> for crate::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidKey(m) => crate::Error::Internal(format!("storage key: {m}")),
            Error::TooLarge(m) => crate::Error::Internal(format!("storage: {m}")),
            Error::QuotaExceeded(m) => crate::Error::Conflict(format!("storage: {m}")),
            Error::Unavailable(m) => crate::Error::upstream(format!("storage: {m}")),
        }
    }
}

/// The value of `key`.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    wit::get(key)
}

/// Stores `value` under `key`.
pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
    wit::set(key, value)
}

/// Deletes `key`; returns whether it existed.
pub fn delete(key: &str) -> Result<bool, Error> {
    wit::delete(key)
}

/// Replaces `key`'s value with `new` (None deletes) if it currently is
/// `expected` (None: absent). Returns whether it swapped.
pub fn compare_and_swap(
    key: &str,
    expected: Option<&[u8]>,
    new: Option<&[u8]>,
) -> Result<bool, Error> {
    wit::compare_and_swap(key, expected, new)
}

/// One page of keys starting with `prefix`, after `cursor`.
pub fn list_page(
    prefix: &str,
    cursor: Option<&str>,
    limit: u32,
) -> Result<(Vec<String>, Option<String>), Error> {
    let page = wit::list_keys(prefix, cursor, limit)?;
    Ok((page.keys, page.cursor))
}

/// Every key starting with `prefix`, fetched page by page.
pub fn list(prefix: &str) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (keys, next) = list_page(prefix, cursor.as_deref(), 1000)?;
        out.extend(keys);
        match next {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// The value of `key` decoded from JSON.
pub fn get_json<T: DeserializeOwned>(key: &str) -> crate::Result<Option<T>> {
    match get(key)? {
        None => Ok(None),
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
            crate::Error::internal(format!("stored value of `{key}` is not valid JSON: {e}"))
        })?)),
    }
}

/// Stores `value` as JSON under `key`.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> crate::Result<()> {
    Ok(set(key, &serde_json::to_vec(value)?)?)
}

/// One holder at a time for `key`, until the holder's deadline: for work
/// that must not run twice at once (a scheduled run and a run-now, a run
/// re-queued after a crash, a webhook touching the same records).
///
/// The lease lasts until this invocation's deadline (plus two seconds, for
/// clocks read at different moments), when the host has stopped the
/// holder for certain, so a lease left by a killed daemon lapses by itself.
/// Taken with compare-and-swap.
///
/// ```no_run
/// # fn main() -> switchyard_sdk::Result<()> {
/// use switchyard_sdk::storage::Lease;
/// match Lease::take("sync-lock", "req-1")? {
///     Ok(lease) => {
///         // … the work …
///         lease.release()?;
///     }
///     Err(lapses_in) => println!("another run holds it for {} s more", lapses_in.as_secs()),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "release the lease when the work is done"]
pub struct Lease {
    key: String,
    holder: String,
}

#[derive(Serialize, serde::Deserialize)]
struct LeaseRecord {
    holder: String,
    /// Milliseconds since the epoch.
    until_ms: u64,
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Margin past the holder's deadline.
const LEASE_MARGIN_MS: u64 = 2_000;

impl Lease {
    /// Takes `key` for `holder` (say, the request id), or answers how long
    /// the current holder keeps it.
    pub fn take(key: &str, holder: &str) -> crate::Result<Result<Self, std::time::Duration>> {
        let remaining = crate::invocation::remaining().as_millis() as u64;
        let until_ms = epoch_ms() + remaining + LEASE_MARGIN_MS;
        let mine = serde_json::to_vec(&LeaseRecord {
            holder: holder.to_owned(),
            until_ms,
        })?;
        loop {
            let cur = get(key)?;
            if let Some(held) = cur
                .as_deref()
                .and_then(|b| serde_json::from_slice::<LeaseRecord>(b).ok())
                && held.holder != holder
                && held.until_ms > epoch_ms()
            {
                return Ok(Err(std::time::Duration::from_millis(
                    held.until_ms - epoch_ms(),
                )));
            }
            if compare_and_swap(key, cur.as_deref(), Some(&mine))? {
                return Ok(Ok(Self {
                    key: key.to_owned(),
                    holder: holder.to_owned(),
                }));
            }
        }
    }

    /// Gives the lease back (if it is still this holder's).
    pub fn release(self) -> crate::Result<()> {
        let Some(cur) = get(&self.key)? else {
            return Ok(());
        };
        if serde_json::from_slice::<LeaseRecord>(&cur).is_ok_and(|l| l.holder == self.holder) {
            compare_and_swap(&self.key, Some(&cur), None)?;
        }
        Ok(())
    }
}
