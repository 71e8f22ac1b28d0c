//! This instance's configuration.

use crate::bindings::switchyard::plugin::config as wit;
use crate::{Error, Result};

/// The value of `key`, or None when unset.
pub fn get(key: &str) -> Option<String> {
    wit::get(key)
}

/// The value of `key`; an error naming the key when unset. The host checks
/// required keys before a plugin runs, so this fails only for optional keys
/// without a default.
pub fn require(key: &str) -> Result<String> {
    wit::get(key).ok_or_else(|| Error::internal(format!("config key `{key}` is not set")))
}

/// Every configured key and value, sorted by key.
pub fn all() -> Vec<(String, String)> {
    wit::get_all()
}
