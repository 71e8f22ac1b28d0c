//! The data each Store holds: WASI's (empty) context, the resource table,
//! the limiter, the instance's capabilities and the invocation's state.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::call::CallState;
use crate::config::{ConfigCtx, ConfigCtxView, ConfigView};
use crate::credentials::{CredentialsCtx, CredentialsCtxView, CredentialsView};
use crate::http::{HttpCtx, HttpCtxView, HttpView};
use crate::invocation::{InvocationCtxView, InvocationView};
use crate::limits::{Limiter, Limits, TenantBudgets};
use crate::log::{LogCtxView, LogView};
use crate::storage::{StorageCtx, StorageCtxView, StorageView};

/// What an instance holds for every call: its labels, limits and
/// capability contexts, built once.
pub(crate) struct InstanceCtx {
    pub(crate) tenant: String,
    pub(crate) instance: String,
    pub(crate) limits: Limits,
    pub(crate) http: HttpCtx,
    pub(crate) credentials: CredentialsCtx,
    pub(crate) storage: StorageCtx,
    pub(crate) config: ConfigCtx,
    /// What the tenant may use over time (shared with its other instances).
    pub(crate) budgets: Arc<TenantBudgets>,
    /// The runtime's long-runner pool (see `sched`).
    pub(crate) long_runners: tokio::runtime::Handle,
    /// The runtime's clock; the guest's WASI wall clock follows it.
    pub(crate) clock: crate::clock::Clock,
    /// Whether the storage is this version's yet (see `migration`): taken
    /// from the runtime's gates at the first call, so that an instance
    /// never called costs nothing.
    pub(crate) migration: std::sync::OnceLock<Arc<crate::migration::Gate>>,
}

pub(crate) struct StoreState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) inst: Arc<InstanceCtx>,
    pub(crate) call: CallState,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HttpView for StoreState {
    fn http(&mut self) -> HttpCtxView<'_> {
        HttpCtxView {
            ctx: &self.inst.http,
            credentials: &self.inst.credentials,
            call: &mut self.call,
        }
    }
}

impl CredentialsView for StoreState {
    fn credentials(&mut self) -> CredentialsCtxView<'_> {
        CredentialsCtxView {
            ctx: &self.inst.credentials,
        }
    }
}

impl StorageView for StoreState {
    fn storage(&mut self) -> StorageCtxView<'_> {
        StorageCtxView {
            ctx: &self.inst.storage,
        }
    }
}

impl LogView for StoreState {
    fn log(&mut self) -> LogCtxView<'_> {
        LogCtxView {
            call: &mut self.call,
            bucket: &self.inst.budgets.log_records,
        }
    }
}

impl InvocationView for StoreState {
    fn invocation(&mut self) -> InvocationCtxView<'_> {
        InvocationCtxView {
            call: &mut self.call,
        }
    }
}

impl ConfigView for StoreState {
    fn config(&mut self) -> ConfigCtxView<'_> {
        ConfigCtxView {
            ctx: &self.inst.config,
        }
    }
}
