//! Sealed secrets and wrapped tenant keys on PostgreSQL: opaque bytes,
//! encrypted before they arrive (see [`crate::SecretStore`]).

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{Cached, NOW_SECS, PgStore};
use crate::{SecretMeta, SecretRows, StoreError};

#[async_trait]
impl SecretRows for PgStore {
    async fn wrapped_key(&self, tenant: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let c = self.conn().await?;
        Ok(c.row_opt(
            "SELECT wrapped FROM tenant_keys WHERE tenant = $1",
            &[&tenant],
        )
        .await
        .map_err(|e| self.fail("reading a tenant key", e))?
        .map(|r| r.get(0)))
    }

    async fn wrapped_keys(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .rows(
                "SELECT tenant, wrapped FROM tenant_keys ORDER BY tenant",
                &[],
            )
            .await
            .map_err(|e| self.fail("reading the data keys", e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn replace_wrapped_key(
        &self,
        tenant: &str,
        old: Vec<u8>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let c = self.conn().await?;
        let n = c
            .exec(
                "UPDATE tenant_keys SET wrapped = $3 WHERE tenant = $1 AND wrapped = $2",
                &[&tenant, &old, &new],
            )
            .await
            .map_err(|e| self.fail("re-wrapping a data key", e))?;
        Ok(n == 1)
    }

    async fn insert_wrapped_key(
        &self,
        tenant: &str,
        wrapped: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        let c = self.conn().await?;
        let fail = |e| self.fail("storing a tenant key", e);
        c.exec(
            "INSERT INTO tenant_keys (tenant, wrapped) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&tenant, &wrapped],
        )
        .await
        .map_err(fail)?;
        Ok(c.row(
            "SELECT wrapped FROM tenant_keys WHERE tenant = $1",
            &[&tenant],
        )
        .await
        .map_err(fail)?
        .get(0))
    }

    async fn put_sealed(
        &self,
        tenant: &str,
        name: &str,
        sealed: Vec<u8>,
    ) -> Result<(), StoreError> {
        let c = self.conn().await?;
        c.exec(
            &format!(
                "INSERT INTO secrets (tenant, name, sealed, updated_at)
                 VALUES ($1, $2, $3, {NOW_SECS})
                 ON CONFLICT (tenant, name) DO UPDATE
                 SET sealed = excluded.sealed, updated_at = excluded.updated_at"
            ),
            &[&tenant, &name, &sealed],
        )
        .await
        .map_err(|e| self.fail("storing a secret", e))?;
        Ok(())
    }

    async fn sealed(&self, tenant: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let c = self.conn().await?;
        Ok(c.row_opt(
            "SELECT sealed FROM secrets WHERE tenant = $1 AND name = $2",
            &[&tenant, &name],
        )
        .await
        .map_err(|e| self.fail("reading a secret", e))?
        .map(|r| r.get(0)))
    }

    async fn secret_names(&self, tenant: &str) -> Result<Vec<SecretMeta>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .rows(
                "SELECT name, updated_at FROM secrets WHERE tenant = $1 ORDER BY name",
                &[&tenant],
            )
            .await
            .map_err(|e| self.fail("listing secrets", e))?;
        Ok(rows
            .iter()
            .map(|r| SecretMeta {
                name: r.get(0),
                updated_at: r.get(1),
            })
            .collect())
    }

    async fn delete_sealed(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        let c = self.conn().await?;
        let n = c
            .exec(
                "DELETE FROM secrets WHERE tenant = $1 AND name = $2",
                &[&tenant, &name],
            )
            .await
            .map_err(|e| self.fail("deleting a secret", e))?;
        Ok(n > 0)
    }

    async fn secret_fingerprints(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .rows(
                "SELECT tenant, string_agg(name || ':' || upper(encode(substr(sealed, 1, 12), 'hex')),
                                           ',' ORDER BY name)
                 FROM secrets GROUP BY tenant",
                &[],
            )
            .await
            .map_err(|e| self.fail("reading secret fingerprints", e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
