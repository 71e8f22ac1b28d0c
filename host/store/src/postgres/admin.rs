//! API tokens and the audit log on PostgreSQL.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use secrecy::SecretString;

use super::{Cached, NOW_SECS, PgStore, in_tx};
use crate::admin::{PRUNE_BATCH, lookup_hash, new_token};
use crate::{AdminStore, AuditEntry, StoreError, TokenInfo};

/// Appends `entries` inside the caller's transaction.
pub(super) async fn append_audit_in(
    store: &PgStore,
    tx: &impl GenericClient,
    entries: &[AuditEntry],
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let st = tx
        .prepare_cached(&format!(
            "INSERT INTO audit (time, tenant, instance, actor, kind, what, outcome,
                                duration_ms, request_id)
             VALUES ({NOW_SECS}, $1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .await
        .map_err(|e| store.fail("writing the audit log", e))?;
    for e in entries {
        tx.execute(
            &st,
            &[
                &e.tenant,
                &e.instance,
                &e.actor,
                &e.kind,
                &e.what,
                &e.outcome,
                &e.duration_ms,
                &e.request_id,
            ],
        )
        .await
        .map_err(|e| store.fail("writing the audit log", e))?;
    }
    Ok(())
}

#[async_trait]
impl AdminStore for PgStore {
    async fn create_token(
        &self,
        tenant: &str,
        label: &str,
    ) -> Result<(TokenInfo, SecretString), StoreError> {
        let (token, hash, id) = new_token();
        let c = self.conn().await?;
        let created_at: i64 = c
            .row(
                &format!(
                    "INSERT INTO api_tokens (hash, id, tenant, label, created_at)
                     VALUES ($1, $2, $3, $4, {NOW_SECS}) RETURNING created_at"
                ),
                &[&hash, &id, &tenant, &label],
            )
            .await
            .map_err(|e| self.fail("creating a token", e))?
            .get(0);
        Ok((
            TokenInfo {
                id,
                tenant: tenant.to_owned(),
                label: label.to_owned(),
                created_at,
            },
            SecretString::from(token),
        ))
    }

    async fn verify_token(&self, token: &SecretString) -> Result<Option<String>, StoreError> {
        let Some(hash) = lookup_hash(token) else {
            return Ok(None);
        };
        let c = self.conn().await?;
        Ok(
            c.row_opt("SELECT tenant FROM api_tokens WHERE hash = $1", &[&hash])
                .await
                .map_err(|e| self.fail("checking a token", e))?
                .map(|r| r.get(0)),
        )
    }

    async fn list_tokens(&self, tenant: &str) -> Result<Vec<TokenInfo>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .rows(
                "SELECT id, tenant, label, created_at FROM api_tokens
                 WHERE tenant = $1 ORDER BY created_at, id",
                &[&tenant],
            )
            .await
            .map_err(|e| self.fail("listing tokens", e))?;
        Ok(rows
            .iter()
            .map(|r| TokenInfo {
                id: r.get(0),
                tenant: r.get(1),
                label: r.get(2),
                created_at: r.get(3),
            })
            .collect())
    }

    async fn revoke_token(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let c = self.conn().await?;
        let n = c
            .exec(
                "DELETE FROM api_tokens WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await
            .map_err(|e| self.fail("revoking a token", e))?;
        Ok(n > 0)
    }

    async fn mark_event_seen(
        &self,
        tenant: &str,
        instance: &str,
        key: &str,
    ) -> Result<bool, StoreError> {
        let c = self.conn().await?;
        let n = c
            .exec(
                &format!(
                    "INSERT INTO seen_events (tenant, instance, key, seen_at)
                     VALUES ($1, $2, $3, {NOW_SECS}) ON CONFLICT DO NOTHING"
                ),
                &[&tenant, &instance, &key],
            )
            .await
            .map_err(|e| self.fail("recording an event id", e))?;
        Ok(n == 1)
    }

    async fn forget_event(
        &self,
        tenant: &str,
        instance: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        let c = self.conn().await?;
        c.exec(
            "DELETE FROM seen_events WHERE tenant = $1 AND instance = $2 AND key = $3",
            &[&tenant, &instance, &key],
        )
        .await
        .map_err(|e| self.fail("forgetting an event id", e))?;
        Ok(())
    }

    async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        in_tx!(self, "writing the audit log", |tx| {
            append_audit_in(self, &tx, &entries).await?
        });
        Ok(())
    }

    async fn audit(&self, tenant: &str, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = i64::from(limit.clamp(1, 10_000));
        let c = self.conn().await?;
        let rows = c
            .rows(
                "SELECT seq, time, tenant, instance, actor, kind, what, outcome,
                        duration_ms, request_id
                 FROM audit WHERE tenant = $1 ORDER BY seq DESC LIMIT $2",
                &[&tenant, &limit],
            )
            .await
            .map_err(|e| self.fail("reading the audit log", e))?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                seq: r.get(0),
                time: r.get(1),
                tenant: r.get(2),
                instance: r.get(3),
                actor: r.get(4),
                kind: r.get(5),
                what: r.get(6),
                outcome: r.get(7),
                duration_ms: r.get(8),
                request_id: r.get(9),
            })
            .collect())
    }

    async fn prune_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        let c = self.conn().await?;
        c.exec(
            "DELETE FROM audit WHERE seq IN (
                SELECT seq FROM audit WHERE time < $1 LIMIT $2)",
            &[&(before_ms / 1000), &PRUNE_BATCH],
        )
        .await
        .map_err(|e| self.fail("pruning the audit log", e))
    }

    async fn prune_seen_events(&self, before_ms: i64) -> Result<u64, StoreError> {
        let c = self.conn().await?;
        c.exec(
            "DELETE FROM seen_events WHERE (tenant, instance, key) IN (
                SELECT tenant, instance, key FROM seen_events WHERE seen_at < $1 LIMIT $2)",
            &[&(before_ms / 1000), &PRUNE_BATCH],
        )
        .await
        .map_err(|e| self.fail("pruning event ids", e))
    }
}
