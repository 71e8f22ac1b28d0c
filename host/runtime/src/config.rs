//! Host side of `switchyard:plugin/config`: the instance's configuration.

use std::collections::BTreeMap;

use wasmtime::component::{HasData, Linker};

use crate::bindings::config::{self, Host};

/// Configuration values of one instance, validated against the manifest and
/// with its defaults filled in. Built once per instance.
#[derive(Debug, Clone, Default)]
pub struct ConfigCtx {
    values: BTreeMap<String, String>,
}

impl ConfigCtx {
    /// Wraps already validated values.
    pub fn new(values: BTreeMap<String, String>) -> Self {
        Self { values }
    }

    /// The values.
    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.values
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
        Ok(self.ctx.values.get(&key).cloned())
    }

    fn get_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .ctx
            .values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
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
