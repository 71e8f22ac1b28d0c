//! Plugin storage on PostgreSQL: values, running usage totals and quotas,
//! all inside the write's transaction.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::{Cached, NOW_SECS, PgStore, in_tx};
use crate::kv::validate_value;
use crate::{
    KvBackend, MAX_LIST_LIMIT, Namespace, Quota, StorageVersion, StoreError, Usage, validate_key,
};

/// Writes `new` (None deletes) under `key` inside `tx`, keeping kv_usage
/// exact and refusing growth past `quota` (shrinking is always allowed).
/// The usage row is locked first (`FOR UPDATE`), so two daemons writing
/// the same namespace at once count one after the other.
async fn apply(
    store: &PgStore,
    tx: &impl GenericClient,
    ns: &Namespace,
    key: &str,
    new: Option<&[u8]>,
    quota: &Quota,
) -> Result<(), StoreError> {
    let fail = |e| store.fail("writing plugin storage", e);
    lock_namespace(store, tx, ns).await?;
    let row = tx
        .row(
            "SELECT bytes, keys FROM kv_usage WHERE tenant=$1 AND instance=$2",
            &[&ns.tenant, &ns.instance],
        )
        .await
        .map_err(fail)?;
    let usage = Usage {
        bytes: row.get::<_, i64>(0) as u64,
        keys: row.get::<_, i64>(1) as u64,
    };
    let k = key.as_bytes();
    let old_len: Option<i32> = tx
        .row_opt(
            "SELECT length(value) FROM kv WHERE tenant=$1 AND instance=$2 AND key=$3",
            &[&ns.tenant, &ns.instance, &k],
        )
        .await
        .map_err(fail)?
        .map(|r| r.get(0));
    let key_len = key.len() as u64;
    let old_bytes = old_len.map_or(0, |v| v as u64 + key_len);
    let new_bytes = new.map_or(0, |v| v.len() as u64 + key_len);
    let bytes = usage.bytes - old_bytes.min(usage.bytes) + new_bytes;
    let keys = usage.keys - u64::from(old_len.is_some()).min(usage.keys) + u64::from(new.is_some());
    crate::kv::check_quota(ns, quota, usage, bytes, keys)?;
    match new {
        Some(value) => {
            tx.exec(
                "INSERT INTO kv (tenant, instance, key, value) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant, instance, key) DO UPDATE SET value = excluded.value",
                &[&ns.tenant, &ns.instance, &k, &value],
            )
            .await
        }
        None => {
            tx.exec(
                "DELETE FROM kv WHERE tenant=$1 AND instance=$2 AND key=$3",
                &[&ns.tenant, &ns.instance, &k],
            )
            .await
        }
    }
    .map_err(fail)?;
    tx.exec(
        "UPDATE kv_usage SET bytes=$3, keys=$4 WHERE tenant=$1 AND instance=$2",
        &[&ns.tenant, &ns.instance, &(bytes as i64), &(keys as i64)],
    )
    .await
    .map_err(fail)?;
    Ok(())
}

/// The value under `key`, locking its row when `lock` (compare-and-swap).
async fn read_value(
    store: &PgStore,
    c: &impl GenericClient,
    ns: &Namespace,
    key: &str,
    lock: bool,
) -> Result<Option<Vec<u8>>, StoreError> {
    let sql = if lock {
        "SELECT value FROM kv WHERE tenant=$1 AND instance=$2 AND key=$3 FOR UPDATE"
    } else {
        "SELECT value FROM kv WHERE tenant=$1 AND instance=$2 AND key=$3"
    };
    let k = key.as_bytes();
    Ok(c.row_opt(sql, &[&ns.tenant, &ns.instance, &k])
        .await
        .map_err(|e| store.fail("reading plugin storage", e))?
        .map(|r| r.get(0)))
}

/// Locks the namespace's usage row (creating it), so that writers of one
/// namespace take turns: a compare-and-swap then reads what the previous
/// writer committed, including a key it just created.
async fn lock_namespace(
    store: &PgStore,
    tx: &impl GenericClient,
    ns: &Namespace,
) -> Result<(), StoreError> {
    let fail = |e| store.fail("writing plugin storage", e);
    tx.exec(
        "INSERT INTO kv_usage (tenant, instance, bytes, keys) VALUES ($1, $2, 0, 0)
         ON CONFLICT (tenant, instance) DO NOTHING",
        &[&ns.tenant, &ns.instance],
    )
    .await
    .map_err(fail)?;
    tx.exec(
        "SELECT 1 FROM kv_usage WHERE tenant=$1 AND instance=$2 FOR UPDATE",
        &[&ns.tenant, &ns.instance],
    )
    .await
    .map_err(fail)?;
    Ok(())
}

#[async_trait]
impl KvBackend for PgStore {
    async fn get(&self, ns: &Namespace, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        validate_key(key)?;
        let c = self.conn().await?;
        read_value(self, &c, ns, key, false).await
    }

    async fn set(
        &self,
        ns: &Namespace,
        key: &str,
        value: &[u8],
        quota: &Quota,
    ) -> Result<(), StoreError> {
        validate_key(key)?;
        validate_value(value, quota)?;
        in_tx!(self, "writing plugin storage", |tx| {
            apply(self, &tx, ns, key, Some(value), quota).await?
        });
        Ok(())
    }

    async fn delete(&self, ns: &Namespace, key: &str) -> Result<bool, StoreError> {
        validate_key(key)?;
        Ok(in_tx!(self, "deleting from plugin storage", |tx| {
            lock_namespace(self, &tx, ns).await?;
            let existed = read_value(self, &tx, ns, key, true).await?.is_some();
            if existed {
                apply(self, &tx, ns, key, None, &Quota::default()).await?;
            }
            existed
        }))
    }

    async fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        crate::kv::validate_prefix(prefix)?;
        let limit = i64::from(limit.clamp(1, MAX_LIST_LIMIT));
        let lower = prefix.as_bytes().to_vec();
        let mut upper = lower.clone();
        upper.push(0xFF);
        let after = after.map(|a| a.as_bytes().to_vec());
        let c = self.conn().await?;
        let rows = c
            .rows(
                "SELECT key FROM kv WHERE tenant=$1 AND instance=$2
                 AND key >= $3 AND key < $4 AND ($5::bytea IS NULL OR key > $5)
                 ORDER BY key LIMIT $6",
                &[&ns.tenant, &ns.instance, &lower, &upper, &after, &limit],
            )
            .await
            .map_err(|e| self.fail("listing plugin storage", e))?;
        rows.into_iter()
            .map(|r| {
                String::from_utf8(r.get(0))
                    .map_err(|_| StoreError::Backend("stored key is not UTF-8".into()))
            })
            .collect()
    }

    async fn compare_and_swap(
        &self,
        ns: &Namespace,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        quota: &Quota,
    ) -> Result<bool, StoreError> {
        validate_key(key)?;
        if let Some(v) = new {
            validate_value(v, quota)?;
        }
        Ok(in_tx!(self, "compare-and-swap in plugin storage", |tx| {
            lock_namespace(self, &tx, ns).await?;
            let current = read_value(self, &tx, ns, key, true).await?;
            if current.as_deref() != expected {
                false
            } else {
                if current.is_some() || new.is_some() {
                    apply(self, &tx, ns, key, new, quota).await?;
                }
                true
            }
        }))
    }

    async fn usage(&self, ns: &Namespace) -> Result<Usage, StoreError> {
        let c = self.conn().await?;
        Ok(c.row_opt(
            "SELECT bytes, keys FROM kv_usage WHERE tenant=$1 AND instance=$2",
            &[&ns.tenant, &ns.instance],
        )
        .await
        .map_err(|e| self.fail("reading storage usage", e))?
        .map(|r| Usage {
            bytes: r.get::<_, i64>(0) as u64,
            keys: r.get::<_, i64>(1) as u64,
        })
        .unwrap_or_default())
    }

    async fn clear(&self, ns: &Namespace) -> Result<u64, StoreError> {
        Ok(in_tx!(self, "clearing plugin storage", |tx| {
            lock_namespace(self, &tx, ns).await?;
            let n = tx
                .exec(
                    "DELETE FROM kv WHERE tenant=$1 AND instance=$2",
                    &[&ns.tenant, &ns.instance],
                )
                .await
                .map_err(|e| self.fail("clearing plugin storage", e))?;
            for table in ["kv_usage", "kv_versions", "kv_migrations"] {
                tx.exec(
                    &format!("DELETE FROM {table} WHERE tenant=$1 AND instance=$2"),
                    &[&ns.tenant, &ns.instance],
                )
                .await
                .map_err(|e| self.fail("clearing plugin storage", e))?;
            }
            n
        }))
    }

    async fn storage_version(&self, ns: &Namespace) -> Result<Option<StorageVersion>, StoreError> {
        let c = self.conn().await?;
        read_storage_version(self, &c, ns).await
    }

    async fn record_storage_version(
        &self,
        ns: &Namespace,
        expected: Option<&StorageVersion>,
        new: &StorageVersion,
    ) -> Result<bool, StoreError> {
        let what = "recording a storage version";
        Ok(in_tx!(self, what, |tx| {
            // The namespace lock orders two daemons recording at once: the
            // second reads what the first committed.
            lock_namespace(self, &tx, ns).await?;
            if read_storage_version(self, &tx, ns).await?.as_ref() != expected {
                false
            } else {
                tx.exec(
                    &format!(
                        "INSERT INTO kv_versions (tenant, instance, plugin, version, recorded_at)
                         VALUES ($1, $2, $3, $4, {NOW_SECS})
                         ON CONFLICT (tenant, instance) DO UPDATE SET plugin = excluded.plugin,
                             version = excluded.version, recorded_at = excluded.recorded_at"
                    ),
                    &[&ns.tenant, &ns.instance, &new.plugin, &new.version],
                )
                .await
                .map_err(|e| self.fail(what, e))?;
                true
            }
        }))
    }

    async fn claim_storage_migration(
        &self,
        ns: &Namespace,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let what = "claiming a storage migration";
        // One statement: the row is taken over only when it is this
        // owner's or its claim has ended; otherwise the holder's end is read.
        let c = self.conn().await?;
        let taken = c
            .row_opt(
                "INSERT INTO kv_migrations (tenant, instance, owner, until_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant, instance) DO UPDATE SET owner = excluded.owner,
                     until_ms = excluded.until_ms
                 WHERE kv_migrations.owner = excluded.owner OR kv_migrations.until_ms <= $5
                 RETURNING owner",
                &[&ns.tenant, &ns.instance, &owner, &until_ms, &now_ms],
            )
            .await
            .map_err(|e| self.fail(what, e))?;
        if taken.is_some() {
            return Ok(None);
        }
        let held = c
            .row_opt(
                "SELECT until_ms FROM kv_migrations WHERE tenant=$1 AND instance=$2",
                &[&ns.tenant, &ns.instance],
            )
            .await
            .map_err(|e| self.fail(what, e))?;
        // (Released between the two statements: free now; the next try takes it.)
        Ok(Some(held.map_or(now_ms, |r| r.get(0))))
    }

    async fn release_storage_migration(
        &self,
        ns: &Namespace,
        owner: &str,
    ) -> Result<(), StoreError> {
        let c = self.conn().await?;
        c.exec(
            "DELETE FROM kv_migrations WHERE tenant=$1 AND instance=$2 AND owner=$3",
            &[&ns.tenant, &ns.instance, &owner],
        )
        .await
        .map_err(|e| self.fail("releasing a storage migration", e))?;
        Ok(())
    }
}

async fn read_storage_version(
    store: &PgStore,
    c: &impl GenericClient,
    ns: &Namespace,
) -> Result<Option<StorageVersion>, StoreError> {
    Ok(c.row_opt(
        "SELECT plugin, version FROM kv_versions WHERE tenant=$1 AND instance=$2",
        &[&ns.tenant, &ns.instance],
    )
    .await
    .map_err(|e| store.fail("reading a storage version", e))?
    .map(|r| StorageVersion {
        plugin: r.get(0),
        version: r.get(1),
    }))
}
