//! Host side of `switchyard:plugin/config`: the instance's configuration.

use std::collections::BTreeMap;

use wasmtime::component::{HasData, Linker};

use crate::bindings::config::{self, Host};

/// Configuration values of one instance, validated against the manifest and
/// with its defaults filled in. Built once per instance.
///
/// A sorted slice, not a `BTreeMap`: a map allocates a whole node (about
/// half a kilobyte) for one or two values, and a daemon holds one of these
/// for each of its tens of thousands of instances.
#[derive(Debug, Clone, Default)]
pub struct ConfigCtx {
    values: Box<[(String, String)]>,
}

impl ConfigCtx {
    /// Wraps already validated values.
    pub fn new(values: BTreeMap<String, String>) -> Self {
        // A map iterates in key order: the slice is sorted.
        Self {
            values: values.into_iter().collect(),
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.values[i].1.as_str())
    }
}

/// What a `config` call sees.
pub struct ConfigCtxView<'a> {
    /// The instance's configuration.
    pub ctx: &'a ConfigCtx,
}

/// Implemented by store data that can hand out a [`ConfigCtxView`].
pub trait ConfigView: Send {
    /// Borrows the configuration for one host call.
    fn config(&mut self) -> ConfigCtxView<'_>;
}

impl Host for ConfigCtxView<'_> {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.ctx.get(&key).map(str::to_owned))
    }

    fn get_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.ctx.values.to_vec())
    }
}

struct HasConfig;

impl HasData for HasConfig {
    type Data<'a> = ConfigCtxView<'a>;
}

/// Adds `switchyard:plugin/config` to `linker`.
pub fn add_to_linker<T: ConfigView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    config::add_to_linker::<T, HasConfig>(linker, T::config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_by_key_in_order() {
        let ctx = ConfigCtx::new(BTreeMap::from([
            ("region".to_owned(), "eu".to_owned()),
            ("base_url".to_owned(), "https://x.test".to_owned()),
            ("mode".to_owned(), "".to_owned()),
        ]));
        assert_eq!(ctx.get("region"), Some("eu"));
        assert_eq!(ctx.get("mode"), Some(""));
        assert_eq!(ctx.get("base_url"), Some("https://x.test"));
        assert_eq!(ctx.get("missing"), None);
        assert_eq!(ctx.get(""), None);
        let keys: Vec<&str> = ctx.values.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["base_url", "mode", "region"]);
        assert_eq!(ConfigCtx::default().get("region"), None);
    }
}
