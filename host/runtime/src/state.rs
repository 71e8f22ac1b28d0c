//! The data each Store holds: WASI's (empty) context, the resource table,
//! the limiter, the instance's capabilities and the invocation's state.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::config::{ConfigCtxView, ConfigView};
use crate::credentials::{CredentialsCtxView, CredentialsView};
use crate::http::{EgressRecord, HttpCtxView, HttpView};
use crate::instance::InstanceCtx;
use crate::limits::{Limiter, Limits};
use crate::log::{LogCtxView, LogRecord, LogView, Progress};
use crate::storage::{StorageCtxView, StorageView};

/// State of one invocation: labels, budgets and what the guest did.
pub struct CallState {
    pub(crate) tenant: String,
    pub(crate) instance: String,
    pub(crate) request_id: String,
    pub(crate) limits: Limits,
    pub(crate) deadline: Instant,
    pub(crate) http_requests: u32,
    pub(crate) egress: Vec<EgressRecord>,
    pub(crate) egress_omitted: std::collections::BTreeMap<String, u64>,
    pub(crate) logs: Vec<LogRecord>,
    pub(crate) logs_dropped: u32,
    pub(crate) progress: Option<Progress>,
    pub(crate) progress_sink: Option<tokio::sync::watch::Sender<Option<Progress>>>,
}

impl CallState {
    /// A fresh state for one invocation starting `started`.
    pub(crate) fn new(
        tenant: &str,
        instance: &str,
        request_id: String,
        limits: Limits,
        started: Instant,
        progress_sink: Option<tokio::sync::watch::Sender<Option<Progress>>>,
    ) -> Self {
        Self {
            tenant: tenant.to_owned(),
            instance: instance.to_owned(),
            request_id,
            limits,
            deadline: started + limits.deadline,
            http_requests: 0,
            egress: Vec::new(),
            egress_omitted: Default::default(),
            logs: Vec::new(),
            logs_dropped: 0,
            progress: None,
            progress_sink,
        }
    }
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

impl ConfigView for StoreState {
    fn config(&mut self) -> ConfigCtxView<'_> {
        ConfigCtxView {
            ctx: &self.inst.config,
        }
    }
}
