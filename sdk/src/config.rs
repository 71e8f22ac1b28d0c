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

/// Whole-number keys with their inclusive ranges, `(key, min, max)`: one
/// table a plugin declares in its manifest (with [`crate::ConfigSpec::integer`],
/// so that `switchyard check` refuses a value out of range) and reads with
/// (so that the two can never disagree).
///
/// ```
/// use switchyard_sdk::config::{Ranges, range_of};
///
/// const RANGES: Ranges = &[("retries", 1, 10)];
/// assert_eq!(range_of(RANGES, "retries"), Some((1, 10)));
/// assert_eq!(range_of(RANGES, "colour"), None);
/// ```
pub type Ranges = &'static [(&'static str, i64, i64)];

/// The range of `key` in `ranges`, if it has one.
pub fn range_of(ranges: Ranges, key: &str) -> Option<(i64, i64)> {
    ranges
        .iter()
        .find(|(k, ..)| *k == key)
        .map(|&(_, min, max)| (min, max))
}

/// Configuration values read with the manifest's defaults and checked one
/// by one; each error names the key and the value (`mode: \`both\` is …`),
/// so a plugin's settings type reads like its documentation.
///
/// ```
/// use switchyard_sdk::config::Values;
///
/// const DEFAULTS: &[(&str, &str, &str)] = &[("retries", "3", "Attempts (1-10)")];
/// let set = |k: &str| (k == "api_url").then(|| "https://api.example.com/".to_owned());
/// let v = Values::new(set, DEFAULTS);
/// assert_eq!(v.url("api_url").unwrap(), "https://api.example.com");
/// assert_eq!(v.number("retries", 1, 10).unwrap(), 3);
/// assert!(v.flag("retries").is_err());
/// ```
pub struct Values<G> {
    get: G,
    defaults: &'static [(&'static str, &'static str, &'static str)],
}

impl<G: Fn(&str) -> Option<String>> Values<G> {
    /// Values from `get` (e.g. [`get`]), falling back to `defaults`
    /// (`(key, default, description)`, the table the manifest declares).
    pub fn new(get: G, defaults: &'static [(&'static str, &'static str, &'static str)]) -> Self {
        Self { get, defaults }
    }

    /// The value of `key`, or its default, or "".
    pub fn text(&self, key: &str) -> String {
        (self.get)(key).unwrap_or_else(|| {
            self.defaults
                .iter()
                .find(|(k, _, _)| *k == key)
                .map(|(_, d, _)| (*d).to_owned())
                .unwrap_or_default()
        })
    }

    /// An `http://` or `https://` URL with a host, without a trailing `/`.
    pub fn url(&self, key: &str) -> std::result::Result<String, String> {
        let v = self.text(key);
        let v = v.trim().trim_end_matches('/');
        let host = v
            .strip_prefix("https://")
            .or_else(|| v.strip_prefix("http://"))
            .and_then(|rest| rest.split(['/', '?', '#']).next())
            .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace));
        match host {
            Some(_) => Ok(v.to_owned()),
            None => Err(format!("{key}: `{v}` is not an http(s) URL")),
        }
    }

    /// `true`/`yes`/`on`/`1` or `false`/`no`/`off`/`0`.
    pub fn flag(&self, key: &str) -> std::result::Result<bool, String> {
        match self.text(key).trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            other => Err(format!("{key}: `{other}` is not true or false")),
        }
    }

    /// A whole number within the range `ranges` gives `key`; an error
    /// when it gives none (a plugin bug).
    pub fn ranged(&self, key: &str, ranges: Ranges) -> std::result::Result<i64, String> {
        let (min, max) =
            range_of(ranges, key).ok_or_else(|| format!("{key}: no range is declared for it"))?;
        self.number(key, min, max)
    }

    /// A whole number from `min` to `max`.
    pub fn number(&self, key: &str, min: i64, max: i64) -> std::result::Result<i64, String> {
        let v = self.text(key);
        match v.trim().parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!(
                "{key}: `{}` is not a whole number from {min} to {max}",
                v.trim()
            )),
        }
    }
}
