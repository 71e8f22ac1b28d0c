//! API tokens and the audit log on PostgreSQL.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use secrecy::SecretString;

use super::{Cached, NOW_SECS, PgStore, in_tx};
use crate::admin::{
    AUDIT_COLUMNS, AUDIT_FILTER, CONFIG_COLUMNS, PRUNE_BATCH, SESSION_COLUMNS, TOKEN_COLUMNS,
    lookup_hash, new_session, new_token, session_hash,
};
use crate::{
    AdminStore, AuditEntry, AuditQuery, ConfigVersion, ConsoleSession, StoreError, TokenInfo,
};

fn token_info(r: &tokio_postgres::Row) -> TokenInfo {
    TokenInfo {
        id: r.get(0),
        tenant: r.get(1),
        label: r.get(2),
        role: r.get(3),
        created_at: r.get(4),
    }
}

fn config_version(r: &tokio_postgres::Row) -> ConfigVersion {
    ConfigVersion {
        tenant: r.get(0),
        version: r.get(1),
        text: r.get(2),
        author: r.get(3),
        comment: r.get(4),
        created_at: r.get(5),
    }
}

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
        role: &str,
    ) -> Result<(TokenInfo, SecretString), StoreError> {
        let (token, hash, id) = new_token();
        let c = self.conn().await?;
        let created_at: i64 = c
            .row(
                &format!(
                    "INSERT INTO api_tokens (hash, id, tenant, label, role, created_at)
                     VALUES ($1, $2, $3, $4, $5, {NOW_SECS}) RETURNING created_at"
                ),
                &[&hash, &id, &tenant, &label, &role],
            )
            .await
            .map_err(|e| self.fail("creating a token", e))?
            .get(0);
        Ok((
            TokenInfo {
                id,
                tenant: tenant.to_owned(),
                label: label.to_owned(),
                role: role.to_owned(),
                created_at,
            },
            SecretString::from(token),
        ))
    }

    async fn verify_token(&self, token: &SecretString) -> Result<Option<TokenInfo>, StoreError> {
        let Some(hash) = lookup_hash(token) else {
            return Ok(None);
        };
        let c = self.conn().await?;
        Ok(c.row_opt(
            &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE hash = $1"),
            &[&hash],
        )
        .await
        .map_err(|e| self.fail("checking a token", e))?
        .as_ref()
        .map(token_info))
    }

    async fn list_tokens(&self, tenant: &str) -> Result<Vec<TokenInfo>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .rows(
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens
                     WHERE tenant = $1 ORDER BY created_at, id"
                ),
                &[&tenant],
            )
            .await
            .map_err(|e| self.fail("listing tokens", e))?;
        Ok(rows.iter().map(token_info).collect())
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

    async fn audit_query(
        &self,
        tenant: &str,
        q: AuditQuery,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = i64::from(q.limit.clamp(1, 10_000));
        // The shared filter, in PostgreSQL's parameter syntax and types.
        let filter = AUDIT_FILTER
            .replace("?2", "$2::text")
            .replace("?3", "$3::text")
            .replace("?4", "$4::text")
            .replace("?5", "$5::bigint")
            .replace("?6", "$6::bigint")
            .replace("?7", "$7::bigint");
        let c = self.conn().await?;
        let rows = c
            .rows(
                &format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit WHERE tenant = $1 AND {filter}
                     ORDER BY seq DESC LIMIT $8"
                ),
                &[
                    &tenant,
                    &q.kind,
                    &q.instance,
                    &q.outcome,
                    &q.since,
                    &q.until,
                    &q.before_seq,
                    &limit,
                ],
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

    async fn managed_configs(&self) -> Result<Vec<ConfigVersion>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .rows(
                &format!(
                    "SELECT DISTINCT ON (tenant) {CONFIG_COLUMNS} FROM tenant_configs
                     ORDER BY tenant, version DESC"
                ),
                &[],
            )
            .await
            .map_err(|e| self.fail("reading tenant configurations", e))?;
        Ok(rows.iter().map(config_version).collect())
    }

    async fn config_versions(&self, tenant: &str) -> Result<Vec<ConfigVersion>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .rows(
                &format!(
                    "SELECT {CONFIG_COLUMNS} FROM tenant_configs
                     WHERE tenant = $1 ORDER BY version DESC"
                ),
                &[&tenant],
            )
            .await
            .map_err(|e| self.fail("reading a tenant's configuration versions", e))?;
        Ok(rows.iter().map(config_version).collect())
    }

    async fn put_config(
        &self,
        tenant: &str,
        expected: i64,
        text: &str,
        author: &str,
        comment: &str,
    ) -> Result<Option<i64>, StoreError> {
        let next = expected + 1;
        let c = self.conn().await?;
        // The primary key settles a race between two changes based on the
        // same version: the second insert conflicts and adds nothing.
        let stored = c
            .row_opt(
                &format!(
                    "WITH newest AS (
                        SELECT coalesce(max(version), 0) AS v FROM tenant_configs
                        WHERE tenant = $1),
                     ins AS (
                        INSERT INTO tenant_configs
                            (tenant, version, text, author, comment, created_at)
                        SELECT $1, $2, $3, $4, $5, {NOW_SECS} FROM newest WHERE v = $6
                        ON CONFLICT DO NOTHING
                        RETURNING version)
                     SELECT pg_notify($7, $8) FROM ins"
                ),
                &[
                    &tenant,
                    &next,
                    &text,
                    &author,
                    &comment,
                    &expected,
                    &&*self.channel,
                    &super::CONFIGS,
                ],
            )
            .await
            .map_err(|e| self.fail("storing a tenant configuration", e))?;
        Ok(stored.map(|_| next))
    }

    async fn remove_managed(&self, tenant: &str) -> Result<u64, StoreError> {
        let c = self.conn().await?;
        let n = c
            .exec("DELETE FROM tenant_configs WHERE tenant = $1", &[&tenant])
            .await
            .map_err(|e| self.fail("removing a tenant configuration", e))?;
        if n > 0 {
            c.exec(
                "SELECT pg_notify($1, $2)",
                &[&&*self.channel, &super::CONFIGS],
            )
            .await
            .map_err(|e| self.fail("announcing a removed tenant", e))?;
        }
        Ok(n)
    }

    async fn start_session(
        &self,
        token: &SecretString,
        now: i64,
        expires_at: i64,
    ) -> Result<Option<(SecretString, ConsoleSession)>, StoreError> {
        let Some(token_hash) = lookup_hash(token) else {
            return Ok(None);
        };
        let (secret, hash, csrf) = new_session();
        let c = self.conn().await?;
        c.exec(
            "DELETE FROM console_sessions WHERE expires_at <= $1",
            &[&now],
        )
        .await
        .map_err(|e| self.fail("removing expired console sessions", e))?;
        // The insert happens only for a valid token; the token's row comes
        // back from the same statement.
        let row = c
            .row_opt(
                &format!(
                    "WITH t AS (SELECT {TOKEN_COLUMNS}, hash FROM api_tokens WHERE hash = $1),
                     ins AS (
                        INSERT INTO console_sessions (hash, token_hash, csrf, expires_at)
                        SELECT $2, hash, $3, $4 FROM t RETURNING 1)
                     SELECT {TOKEN_COLUMNS} FROM t, ins"
                ),
                &[&token_hash, &hash, &csrf, &expires_at],
            )
            .await
            .map_err(|e| self.fail("starting a console session", e))?;
        Ok(row.map(|r| {
            (
                SecretString::from(secret),
                ConsoleSession {
                    token: token_info(&r),
                    csrf,
                    expires_at,
                },
            )
        }))
    }

    async fn session(
        &self,
        secret: &SecretString,
        now: i64,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        let Some(hash) = session_hash(secret) else {
            return Ok(None);
        };
        let c = self.conn().await?;
        let row = c
            .row_opt(
                &format!(
                    "SELECT {SESSION_COLUMNS} FROM console_sessions s
                     JOIN api_tokens t ON t.hash = s.token_hash
                     WHERE s.hash = $1 AND s.expires_at > $2"
                ),
                &[&hash, &now],
            )
            .await
            .map_err(|e| self.fail("reading a console session", e))?;
        Ok(row.map(|r| ConsoleSession {
            token: token_info(&r),
            csrf: r.get(5),
            expires_at: r.get(6),
        }))
    }

    async fn end_session(&self, secret: &SecretString) -> Result<(), StoreError> {
        let Some(hash) = session_hash(secret) else {
            return Ok(());
        };
        let c = self.conn().await?;
        c.exec("DELETE FROM console_sessions WHERE hash = $1", &[&hash])
            .await
            .map_err(|e| self.fail("ending a console session", e))?;
        Ok(())
    }
}
