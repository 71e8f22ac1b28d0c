//! API tokens (stored hashed) and the append-only audit log.

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore;
use async_trait::async_trait;
use base64::Engine;
use rusqlite::{OptionalExtension, params};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::sqlite::backend;
use crate::{SqliteStore, StoreError};

/// Prefix of every API token, so leaked tokens are recognisable (secret
/// scanners match on it).
pub const TOKEN_PREFIX: &str = "syt_";

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// An API token's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Token id (the first characters of its hash, hex).
    pub id: String,
    /// Tenant the token acts for.
    pub tenant: String,
    /// Free-text label.
    pub label: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: i64,
}

/// One audit record. Never holds bodies, tokens or secrets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// Sequence number (assigned on append).
    pub seq: i64,
    /// Seconds since the Unix epoch (assigned on append).
    pub time: i64,
    /// Tenant.
    pub tenant: String,
    /// Instance, when the event concerns one.
    pub instance: Option<String>,
    /// Actor id, when there was one.
    pub actor: Option<String>,
    /// `action`, `webhook`, `job` or `egress`.
    pub kind: String,
    /// What: the action name, or `METHOD scheme://host:port/path` for egress.
    pub what: String,
    /// `ok`, an error code, or the HTTP status for egress.
    pub outcome: String,
    /// Duration in milliseconds.
    pub duration_ms: i64,
    /// Request id tying egress records to their invocation.
    pub request_id: String,
}

/// API tokens, delivered-event ids and the audit log.
#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Creates an API token for `tenant`. The token is returned once; only
    /// its SHA-256 is stored.
    async fn create_token(
        &self,
        tenant: &str,
        label: &str,
    ) -> Result<(TokenInfo, SecretString), StoreError>;

    /// The tenant a presented token acts for, if it is valid. The lookup is
    /// by SHA-256, so comparing the stored value leaks nothing useful.
    async fn verify_token(&self, token: &SecretString) -> Result<Option<String>, StoreError>;

    /// Tokens of `tenant`.
    async fn list_tokens(&self, tenant: &str) -> Result<Vec<TokenInfo>, StoreError>;

    /// Revokes token `id` of `tenant`; returns whether it existed.
    async fn revoke_token(&self, tenant: &str, id: &str) -> Result<bool, StoreError>;

    /// Records that event `key` of an instance was received; returns false
    /// when it had been seen before (a duplicate delivery).
    async fn mark_event_seen(
        &self,
        tenant: &str,
        instance: &str,
        key: &str,
    ) -> Result<bool, StoreError>;

    /// Forgets event `key` again, so that a redelivery is processed (the
    /// first delivery failed after it was recorded).
    async fn forget_event(&self, tenant: &str, instance: &str, key: &str)
    -> Result<(), StoreError>;

    /// Appends audit entries in one transaction (`seq` and `time` are set
    /// by the store).
    async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError>;

    /// The newest `limit` audit entries of `tenant`, newest first.
    async fn audit(&self, tenant: &str, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;

    /// Deletes up to a batch of audit entries older than `before_ms`;
    /// returns how many (call again while it returns a full batch).
    async fn prune_audit(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// Deletes up to a batch of event ids seen before `before_ms`: a
    /// delivery repeated after that is processed again.
    async fn prune_seen_events(&self, before_ms: i64) -> Result<u64, StoreError>;
}

/// A new random token: `(token, its SHA-256, its public id)`.
pub(crate) fn new_token() -> (String, Vec<u8>, String) {
    let mut raw = [0u8; 32];
    OsRng.fill_bytes(&mut raw);
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let hash = token_hash(&token);
    let id = hex::encode(&hash[..6]);
    (token, hash, id)
}

/// The hash to look `token` up by, or None for what cannot be a token.
pub(crate) fn lookup_hash(token: &SecretString) -> Option<Vec<u8>> {
    let token = token.expose_secret();
    (token.starts_with(TOKEN_PREFIX) && token.len() <= 128).then(|| token_hash(token))
}

/// Appends `entries` inside the caller's transaction.
pub(crate) fn append_audit_in(
    c: &rusqlite::Connection,
    entries: &[AuditEntry],
) -> Result<(), StoreError> {
    let mut st = c
        .prepare_cached(
            "INSERT INTO audit (time, tenant, instance, actor, kind, what, outcome,
                                duration_ms, request_id)
             VALUES (unixepoch(), ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(backend)?;
    for e in entries {
        st.execute(params![
            e.tenant,
            e.instance,
            e.actor,
            e.kind,
            e.what,
            e.outcome,
            e.duration_ms,
            e.request_id
        ])
        .map_err(backend)?;
    }
    Ok(())
}

/// Rows one retention statement deletes at most.
pub(crate) const PRUNE_BATCH: i64 = 5000;

#[async_trait]
impl AdminStore for SqliteStore {
    async fn create_token(
        &self,
        tenant: &str,
        label: &str,
    ) -> Result<(TokenInfo, SecretString), StoreError> {
        let (token, hash, id) = new_token();
        let (t, l, i) = (tenant.to_owned(), label.to_owned(), id.clone());
        let created_at = self
            .with_conn(move |c| {
                c.query_row(
                    "INSERT INTO api_tokens (hash, id, tenant, label, created_at)
                     VALUES (?1, ?2, ?3, ?4, unixepoch()) RETURNING created_at",
                    params![hash, i, t, l],
                    |r| r.get(0),
                )
                .map_err(backend)
            })
            .await?;
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
        self.with_read(move |c| {
            c.query_row(
                "SELECT tenant FROM api_tokens WHERE hash = ?1",
                params![hash],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn list_tokens(&self, tenant: &str) -> Result<Vec<TokenInfo>, StoreError> {
        let t = tenant.to_owned();
        self.with_read(move |c| {
            let mut st = c
                .prepare(
                    "SELECT id, tenant, label, created_at FROM api_tokens
                     WHERE tenant = ?1 ORDER BY created_at, id",
                )
                .map_err(backend)?;
            let rows = st
                .query_map(params![t], |r| {
                    Ok(TokenInfo {
                        id: r.get(0)?,
                        tenant: r.get(1)?,
                        label: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn revoke_token(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let (t, i) = (tenant.to_owned(), id.to_owned());
        self.with_conn(move |c| {
            c.execute(
                "DELETE FROM api_tokens WHERE tenant = ?1 AND id = ?2",
                params![t, i],
            )
            .map(|n| n > 0)
            .map_err(backend)
        })
        .await
    }

    async fn mark_event_seen(
        &self,
        tenant: &str,
        instance: &str,
        key: &str,
    ) -> Result<bool, StoreError> {
        let (t, i, k) = (tenant.to_owned(), instance.to_owned(), key.to_owned());
        self.with_conn(move |c| {
            c.prepare_cached(
                "INSERT OR IGNORE INTO seen_events (tenant, instance, key, seen_at)
                 VALUES (?1, ?2, ?3, unixepoch())",
            )
            .and_then(|mut st| st.execute(params![t, i, k]))
            .map(|n| n == 1)
            .map_err(backend)
        })
        .await
    }

    async fn forget_event(
        &self,
        tenant: &str,
        instance: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        let (t, i, k) = (tenant.to_owned(), instance.to_owned(), key.to_owned());
        self.with_conn(move |c| {
            c.execute(
                "DELETE FROM seen_events WHERE tenant = ?1 AND instance = ?2 AND key = ?3",
                params![t, i, k],
            )
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.with_conn(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            append_audit_in(&tx, &entries)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn audit(&self, tenant: &str, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let t = tenant.to_owned();
        let limit = limit.clamp(1, 10_000);
        self.with_read(move |c| {
            let mut st = c
                .prepare(
                    "SELECT seq, time, tenant, instance, actor, kind, what, outcome,
                            duration_ms, request_id
                     FROM audit WHERE tenant = ?1 ORDER BY seq DESC LIMIT ?2",
                )
                .map_err(backend)?;
            let rows = st
                .query_map(params![t, limit], |r| {
                    Ok(AuditEntry {
                        seq: r.get(0)?,
                        time: r.get(1)?,
                        tenant: r.get(2)?,
                        instance: r.get(3)?,
                        actor: r.get(4)?,
                        kind: r.get(5)?,
                        what: r.get(6)?,
                        outcome: r.get(7)?,
                        duration_ms: r.get(8)?,
                        request_id: r.get(9)?,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn prune_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.with_conn(move |c| {
            c.execute(
                "DELETE FROM audit WHERE seq IN (
                    SELECT seq FROM audit WHERE time < ?1 LIMIT ?2)",
                params![before_ms / 1000, PRUNE_BATCH],
            )
            .map(|n| n as u64)
            .map_err(backend)
        })
        .await
    }

    async fn prune_seen_events(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.with_conn(move |c| {
            c.execute(
                "DELETE FROM seen_events WHERE (tenant, instance, key) IN (
                    SELECT tenant, instance, key FROM seen_events WHERE seen_at < ?1 LIMIT ?2)",
                params![before_ms / 1000, PRUNE_BATCH],
            )
            .map(|n| n as u64)
            .map_err(backend)
        })
        .await
    }
}

#[cfg(test)]
mod prune_tests {
    use super::*;

    /// Issue 13, item 10: audit entries and seen event ids go after their
    /// age (both are stored in seconds).
    #[tokio::test]
    async fn old_audit_entries_and_event_ids_are_pruned() {
        let db = SqliteStore::open_in_memory().unwrap();
        db.with_conn(|c| {
            for (t, key) in [(100, "old"), (10_000, "new")] {
                c.execute(
                    "INSERT INTO seen_events (tenant, instance, key, seen_at) VALUES ('a', 'i', ?1, ?2)",
                    params![key, t],
                )
                .map_err(backend)?;
                c.execute(
                    "INSERT INTO audit (time, tenant, kind, what, outcome, duration_ms, request_id)
                     VALUES (?1, 'a', 'action', ?2, 'ok', 0, 'r')",
                    params![t, key],
                )
                .map_err(backend)?;
            }
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(db.prune_audit(5_000_000).await.unwrap(), 1);
        assert_eq!(db.prune_seen_events(5_000_000).await.unwrap(), 1);
        let left: Vec<String> = db
            .audit("a", 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.what)
            .collect();
        assert_eq!(left, ["new"]);
        // The old id may now be seen again; the new one is still a duplicate.
        assert!(db.mark_event_seen("a", "i", "old").await.unwrap());
        assert!(!db.mark_event_seen("a", "i", "new").await.unwrap());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::backend_tests;

    #[tokio::test]
    async fn tokens_are_hashed_verified_and_revoked() {
        let db = SqliteStore::open_in_memory().unwrap();
        let (info, token) = db.create_token("acme", "servicenow").await.unwrap();
        assert!(token.expose_secret().starts_with(TOKEN_PREFIX));
        assert_eq!(
            db.verify_token(&token).await.unwrap().as_deref(),
            Some("acme")
        );
        let wrong = SecretString::from(format!("{}x", token.expose_secret()));
        assert_eq!(db.verify_token(&wrong).await.unwrap(), None);
        assert_eq!(
            db.verify_token(&SecretString::from("nope")).await.unwrap(),
            None
        );
        // Only the hash is stored.
        let stored: Vec<Vec<u8>> = db
            .with_conn(|c| {
                let mut st = c.prepare("SELECT hash FROM api_tokens").unwrap();
                Ok(st
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect())
            })
            .await
            .unwrap();
        assert_eq!(stored, [token_hash(token.expose_secret())]);
        assert_eq!(
            db.list_tokens("acme").await.unwrap(),
            std::slice::from_ref(&info)
        );
        assert!(db.revoke_token("acme", &info.id).await.unwrap());
        assert_eq!(db.verify_token(&token).await.unwrap(), None);
    }

    backend_tests! {
        async fn events_are_seen_once_per_instance(db) {
            assert!(db.mark_event_seen("acme", "i", "e1").await.unwrap());
            assert!(!db.mark_event_seen("acme", "i", "e1").await.unwrap());
            assert!(db.mark_event_seen("acme", "j", "e1").await.unwrap());
            assert!(db.mark_event_seen("globex", "i", "e1").await.unwrap());
            db.forget_event("acme", "i", "e1").await.unwrap();
            assert!(db.mark_event_seen("acme", "i", "e1").await.unwrap());
        }
    }

    backend_tests! {
        async fn audit_is_appended_and_read_newest_first(db) {
            let entry = |what: &str, tenant: &str| AuditEntry {
                seq: 0,
                time: 0,
                tenant: tenant.into(),
                instance: Some("i".into()),
                actor: None,
                kind: "action".into(),
                what: what.into(),
                outcome: "ok".into(),
                duration_ms: 1,
                request_id: "r".into(),
            };
            db.append_audit(vec![
                entry("first", "acme"),
                entry("second", "acme"),
                entry("x", "globex"),
            ])
            .await
            .unwrap();
            let got = db.audit("acme", 10).await.unwrap();
            let whats: Vec<_> = got.iter().map(|e| e.what.as_str()).collect();
            assert_eq!(whats, ["second", "first"]);
            assert!(got[0].seq > got[1].seq && got[0].time > 0);
        }
    }
}
