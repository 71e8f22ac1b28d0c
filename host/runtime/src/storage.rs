//! Host side of `switchyard:plugin/storage`: a key-value store scoped by the
//! host to (tenant, instance).
//!
//! The guest passes keys only; the namespace comes from [`StorageCtx`], which
//! the host built from its own configuration, so no key a guest can write
//! reaches another tenant's or instance's data.
//!
//! What a call returns is what happened: there is no timeout of its own
//! that could tell the guest `unavailable` while the write still commits
//! (which would make compare-and-swap ambiguous). A slow backend is limited
//! by the backend's own lock timeout and by the invocation's deadline, which
//! ends the whole invocation rather than answering for the call.

use std::sync::Arc;

use switchyard_store::{KvBackend, Namespace, Quota, StoreError};
use wasmtime::component::{HasData, Linker};

use crate::bindings::storage::{self, Error, Host, KeyPage};

/// Storage for one instance. Built once per instance.
#[derive(Clone)]
pub struct StorageCtx {
    backend: Arc<dyn KvBackend>,
    namespace: Namespace,
    quota: Quota,
    /// The tenant's write budget: a tenant that writes flat out waits, so
    /// that it cannot take the database's write throughput from the others.
    budgets: Option<Arc<crate::limits::TenantBudgets>>,
}

impl StorageCtx {
    /// Scopes `backend` to `namespace` with `quota`.
    pub fn new(backend: Arc<dyn KvBackend>, namespace: Namespace, quota: Quota) -> Self {
        Self {
            backend,
            namespace,
            quota,
            budgets: None,
        }
    }

    /// Paces writes by the tenant's storage budget.
    pub fn paced_by(mut self, budgets: Arc<crate::limits::TenantBudgets>) -> Self {
        self.budgets = Some(budgets);
        self
    }

    /// The backend and the namespace this context is scoped to (for the
    /// host's own records about the namespace, never for guest keys).
    pub(crate) fn scope(&self) -> (&Arc<dyn KvBackend>, &Namespace) {
        (&self.backend, &self.namespace)
    }

    /// Waits until the tenant may write `bytes` more.
    async fn pace(&self, bytes: usize) {
        if let Some(b) = &self.budgets {
            let wait = b
                .storage_bytes
                .reserve(bytes as f64, std::time::Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// What a `storage` call sees.
pub struct StorageCtxView<'a> {
    /// The instance's storage.
    pub ctx: &'a StorageCtx,
}

/// Implemented by store data that can hand out a [`StorageCtxView`].
pub trait StorageView: Send {
    /// Borrows the instance's storage for one host call.
    fn storage(&mut self) -> StorageCtxView<'_>;
}

fn to_wit(e: StoreError) -> Error {
    match e {
        StoreError::InvalidKey(m) => Error::InvalidKey(m),
        e @ StoreError::ValueTooLarge { .. } => Error::TooLarge(e.to_string()),
        StoreError::QuotaExceeded(m) => Error::QuotaExceeded(m),
        StoreError::Backend(m) => {
            // The backend's text may name files or the database; the guest
            // gets a generic message, the operator the details.
            tracing::warn!(error = %m, "storage backend failed");
            Error::Unavailable("the storage backend failed; retry later".into())
        }
    }
}

/// Runs a backend call, as the guest sees its result. A call of a long
/// runner hands it to the host's runtime (see `sched::on_host`): a read
/// holds one of a few connections that every tenant shares, which a
/// low-priority thread must not hold.
async fn outcome<T, F, Fut>(c: &StorageCtx, call: F) -> wasmtime::Result<Result<T, Error>>
where
    F: FnOnce(Arc<dyn KvBackend>, Namespace, Quota) -> Fut,
    Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    T: Send + 'static,
{
    let fut = call(c.backend.clone(), c.namespace.clone(), c.quota);
    Ok(match crate::sched::on_host(fut).await {
        Ok(result) => result.map_err(to_wit),
        Err(stopped) => Err(Error::Unavailable(stopped.to_string())),
    })
}

impl Host for StorageCtxView<'_> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        outcome(self.ctx, |b, ns, _| async move { b.get(&ns, &key).await }).await
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), Error>> {
        let c = self.ctx;
        c.pace(key.len() + value.len()).await;
        outcome(c, |b, ns, quota| async move {
            b.set(&ns, &key, &value, &quota).await
        })
        .await
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, Error>> {
        outcome(
            self.ctx,
            |b, ns, _| async move { b.delete(&ns, &key).await },
        )
        .await
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<KeyPage, Error>> {
        let limit = limit.clamp(1, switchyard_store::MAX_LIST_LIMIT);
        let page = outcome(self.ctx, |b, ns, _| async move {
            b.list(&ns, &prefix, cursor.as_deref(), limit).await
        })
        .await?;
        Ok(page.map(|keys| {
            // A full page may have more after it; the last key is the cursor.
            let cursor = (keys.len() == limit as usize)
                .then(|| keys.last().cloned())
                .flatten();
            KeyPage { keys, cursor }
        }))
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let c = self.ctx;
        c.pace(key.len() + new.as_ref().map_or(0, Vec::len)).await;
        outcome(c, |b, ns, quota| async move {
            b.compare_and_swap(&ns, &key, expected.as_deref(), new.as_deref(), &quota)
                .await
        })
        .await
    }
}

struct HasStorage;

impl HasData for HasStorage {
    type Data<'a> = StorageCtxView<'a>;
}

/// Adds `switchyard:plugin/storage` to `linker`.
pub fn add_to_linker<T: StorageView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    storage::add_to_linker::<T, HasStorage>(linker, T::storage)
}
