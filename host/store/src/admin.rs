//! API tokens (stored hashed), the append-only audit log, and the
//! versioned configurations of tenants managed through the admin API.

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
    /// What the token may do (the daemon gives the names their meaning):
    /// `api` for the tokens integrations call actions with, `tenant-admin`
    /// or `tenant-viewer` for people.
    pub role: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: i64,
}

/// A web console sign-in (see [`AdminStore::start_session`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// The token it was signed in with.
    pub token: TokenInfo,
    /// The value every form of the session must carry (CSRF).
    pub csrf: String,
    /// Seconds since the Unix epoch.
    pub expires_at: i64,
}

/// Prefix of console session cookies' values.
pub const SESSION_PREFIX: &str = "sys_";

/// One version of an API-managed tenant's configuration. Versions are
/// never changed: a change or a rollback adds the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigVersion {
    /// Tenant.
    pub tenant: String,
    /// 1 for the first version, then one more for each change.
    pub version: i64,
    /// The tenant file's text (TOML), exactly as checked.
    pub text: String,
    /// Who made it (a token id and label, or `cli`).
    pub author: String,
    /// Why, as the author said.
    pub comment: String,
    /// Seconds since the Unix epoch.
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

/// Which audit entries to read (every filter optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// `action`, `webhook`, `job`, `egress` or `admin`.
    pub kind: Option<String>,
    /// One instance.
    pub instance: Option<String>,
    /// An exact outcome, or `failed` for every outcome but `ok`.
    pub outcome: Option<String>,
    /// From this time (seconds since the epoch)...
    pub since: Option<i64>,
    /// ...to before this one.
    pub until: Option<i64>,
    /// Only entries older than this sequence number (the next page).
    pub before_seq: Option<i64>,
    /// At most this many (1-10,000).
    pub limit: u32,
}

/// The conditions of an [`AuditQuery`], with the parameters numbered from
/// 2 (`$1` / `?1` is the tenant): the same text for both backends.
pub(crate) const AUDIT_FILTER: &str = "(?2 IS NULL OR kind = ?2)
    AND (?3 IS NULL OR instance = ?3)
    AND (?4 IS NULL OR (?4 = 'failed' AND outcome <> 'ok') OR outcome = ?4)
    AND (?5 IS NULL OR time >= ?5)
    AND (?6 IS NULL OR time < ?6)
    AND (?7 IS NULL OR seq < ?7)";

/// The columns an [`AuditEntry`] is read from, in its fields' order.
pub(crate) const AUDIT_COLUMNS: &str =
    "seq, time, tenant, instance, actor, kind, what, outcome, duration_ms, request_id";

/// API tokens, delivered-event ids and the audit log.
#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Creates an API token for `tenant`. The token is returned once; only
    /// its SHA-256 is stored.
    async fn create_token(
        &self,
        tenant: &str,
        label: &str,
        role: &str,
    ) -> Result<(TokenInfo, SecretString), StoreError>;

    /// The token a presented secret is, if it is valid. The lookup is by
    /// SHA-256, so comparing the stored value leaks nothing useful.
    async fn verify_token(&self, token: &SecretString) -> Result<Option<TokenInfo>, StoreError>;

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
    async fn audit(&self, tenant: &str, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_query(
            tenant,
            AuditQuery {
                limit,
                ..AuditQuery::default()
            },
        )
        .await
    }

    /// The audit entries of `tenant` that `q` selects, newest first.
    async fn audit_query(&self, tenant: &str, q: AuditQuery)
    -> Result<Vec<AuditEntry>, StoreError>;

    /// Deletes up to a batch of audit entries older than `before_ms`;
    /// returns how many (call again while it returns a full batch).
    async fn prune_audit(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// Deletes up to a batch of event ids seen before `before_ms`: a
    /// delivery repeated after that is processed again.
    async fn prune_seen_events(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// The newest configuration version of every API-managed tenant.
    async fn managed_configs(&self) -> Result<Vec<ConfigVersion>, StoreError>;

    /// Every configuration version of `tenant`, newest first (empty for a
    /// tenant the API does not manage).
    async fn config_versions(&self, tenant: &str) -> Result<Vec<ConfigVersion>, StoreError>;

    /// Stores `text` as the next configuration version of `tenant`, if
    /// its newest version is still `expected` (0: the tenant must not be
    /// managed yet). Returns the new version, or None when another change
    /// came first. Announced to the other daemons sharing the store.
    async fn put_config(
        &self,
        tenant: &str,
        expected: i64,
        text: &str,
        author: &str,
        comment: &str,
    ) -> Result<Option<i64>, StoreError>;

    /// Forgets every configuration version of `tenant`; returns how many
    /// there were. Announced like [`AdminStore::put_config`].
    async fn remove_managed(&self, tenant: &str) -> Result<u64, StoreError>;

    /// Signs in to the web console with `token`: a new session that lives
    /// until `expires_at` (seconds) or until the token is revoked, as
    /// `(session secret, session)`; None when the token is not valid.
    /// Only the secret's SHA-256 is stored. Expired sessions are removed.
    async fn start_session(
        &self,
        token: &SecretString,
        now: i64,
        expires_at: i64,
    ) -> Result<Option<(SecretString, ConsoleSession)>, StoreError>;

    /// The live session a cookie's secret names, if any.
    async fn session(
        &self,
        secret: &SecretString,
        now: i64,
    ) -> Result<Option<ConsoleSession>, StoreError>;

    /// Signs a session out.
    async fn end_session(&self, secret: &SecretString) -> Result<(), StoreError>;
}

/// 32 random bytes, URL-safe base64: a value to share with a webhook
/// sender (a token or an HMAC key), shown once and stored as a secret.
pub fn random_secret() -> String {
    let mut raw = [0u8; 32];
    OsRng.fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// A new session: `(secret, its SHA-256, a CSRF value)`.
pub(crate) fn new_session() -> (String, Vec<u8>, String) {
    let mut raw = [0u8; 32];
    OsRng.fill_bytes(&mut raw);
    let secret = format!(
        "{SESSION_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    OsRng.fill_bytes(&mut raw);
    let csrf = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = token_hash(&secret);
    (secret, hash, csrf)
}

/// The hash to look a session up by, or None for what cannot be one.
pub(crate) fn session_hash(secret: &SecretString) -> Option<Vec<u8>> {
    let s = secret.expose_secret();
    (s.starts_with(SESSION_PREFIX) && s.len() <= 128).then(|| token_hash(s))
}

/// The columns a [`ConsoleSession`] is read from (`t`: the token, `s`: the
/// session).
pub(crate) const SESSION_COLUMNS: &str =
    "t.id, t.tenant, t.label, t.role, t.created_at, s.csrf, s.expires_at";

fn config_version(r: &rusqlite::Row<'_>) -> rusqlite::Result<ConfigVersion> {
    Ok(ConfigVersion {
        tenant: r.get(0)?,
        version: r.get(1)?,
        text: r.get(2)?,
        author: r.get(3)?,
        comment: r.get(4)?,
        created_at: r.get(5)?,
    })
}

/// The columns [`ConfigVersion`] is read from, in its fields' order.
pub(crate) const CONFIG_COLUMNS: &str = "tenant, version, text, author, comment, created_at";

fn token_info(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenInfo> {
    Ok(TokenInfo {
        id: r.get(0)?,
        tenant: r.get(1)?,
        label: r.get(2)?,
        role: r.get(3)?,
        created_at: r.get(4)?,
    })
}

/// The columns [`TokenInfo`] is read from, in its fields' order.
pub(crate) const TOKEN_COLUMNS: &str = "id, tenant, label, role, created_at";

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
        role: &str,
    ) -> Result<(TokenInfo, SecretString), StoreError> {
        let (token, hash, id) = new_token();
        let (t, l, i, ro) = (
            tenant.to_owned(),
            label.to_owned(),
            id.clone(),
            role.to_owned(),
        );
        let created_at = self
            .with_conn(move |c| {
                c.query_row(
                    "INSERT INTO api_tokens (hash, id, tenant, label, role, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, unixepoch()) RETURNING created_at",
                    params![hash, i, t, l, ro],
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
        self.with_read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE hash = ?1"
            ))
            .and_then(|mut st| st.query_row(params![hash], token_info).optional())
            .map_err(backend)
        })
        .await
    }

    async fn list_tokens(&self, tenant: &str) -> Result<Vec<TokenInfo>, StoreError> {
        let t = tenant.to_owned();
        self.with_read(move |c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens
                     WHERE tenant = ?1 ORDER BY created_at, id"
                ))
                .map_err(backend)?;
            let rows = st.query_map(params![t], token_info).map_err(backend)?;
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

    async fn audit_query(
        &self,
        tenant: &str,
        q: AuditQuery,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let t = tenant.to_owned();
        let limit = q.limit.clamp(1, 10_000);
        self.with_read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit WHERE tenant = ?1 AND {AUDIT_FILTER}
                     ORDER BY seq DESC LIMIT ?8"
                ))
                .map_err(backend)?;
            let rows = st
                .query_map(
                    params![
                        t,
                        q.kind,
                        q.instance,
                        q.outcome,
                        q.since,
                        q.until,
                        q.before_seq,
                        limit
                    ],
                    |r| {
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
                    },
                )
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

    async fn managed_configs(&self) -> Result<Vec<ConfigVersion>, StoreError> {
        self.with_read(move |c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT {CONFIG_COLUMNS} FROM tenant_configs AS t
                     WHERE version = (SELECT max(version) FROM tenant_configs
                                      WHERE tenant = t.tenant)
                     ORDER BY tenant"
                ))
                .map_err(backend)?;
            let rows = st.query_map([], config_version).map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn config_versions(&self, tenant: &str) -> Result<Vec<ConfigVersion>, StoreError> {
        let t = tenant.to_owned();
        self.with_read(move |c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT {CONFIG_COLUMNS} FROM tenant_configs
                     WHERE tenant = ?1 ORDER BY version DESC"
                ))
                .map_err(backend)?;
            let rows = st.query_map(params![t], config_version).map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn put_config(
        &self,
        tenant: &str,
        expected: i64,
        text: &str,
        author: &str,
        comment: &str,
    ) -> Result<Option<i64>, StoreError> {
        let (t, x, a, m) = (
            tenant.to_owned(),
            text.to_owned(),
            author.to_owned(),
            comment.to_owned(),
        );
        self.with_conn(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let newest: i64 = tx
                .query_row(
                    "SELECT coalesce(max(version), 0) FROM tenant_configs WHERE tenant = ?1",
                    params![t],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            if newest != expected {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO tenant_configs (tenant, version, text, author, comment, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, unixepoch())",
                params![t, expected + 1, x, a, m],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(Some(expected + 1))
        })
        .await
    }

    async fn remove_managed(&self, tenant: &str) -> Result<u64, StoreError> {
        let t = tenant.to_owned();
        self.with_conn(move |c| {
            c.execute("DELETE FROM tenant_configs WHERE tenant = ?1", params![t])
                .map(|n| n as u64)
                .map_err(backend)
        })
        .await
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
        let c2 = csrf.clone();
        let info = self
            .with_conn(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                tx.execute(
                    "DELETE FROM console_sessions WHERE expires_at <= ?1",
                    params![now],
                )
                .map_err(backend)?;
                let info = tx
                    .query_row(
                        &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE hash = ?1"),
                        params![token_hash],
                        token_info,
                    )
                    .optional()
                    .map_err(backend)?;
                if info.is_some() {
                    tx.execute(
                        "INSERT INTO console_sessions (hash, token_hash, csrf, expires_at)
                         VALUES (?1, ?2, ?3, ?4)",
                        params![hash, token_hash, c2, expires_at],
                    )
                    .map_err(backend)?;
                }
                tx.commit().map_err(backend)?;
                Ok(info)
            })
            .await?;
        Ok(info.map(|token| {
            (
                SecretString::from(secret),
                ConsoleSession {
                    token,
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
        self.with_read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM console_sessions s
                 JOIN api_tokens t ON t.hash = s.token_hash
                 WHERE s.hash = ?1 AND s.expires_at > ?2"
            ))
            .and_then(|mut st| {
                st.query_row(params![hash, now], |r| {
                    Ok(ConsoleSession {
                        token: token_info(r)?,
                        csrf: r.get(5)?,
                        expires_at: r.get(6)?,
                    })
                })
                .optional()
            })
            .map_err(backend)
        })
        .await
    }

    async fn end_session(&self, secret: &SecretString) -> Result<(), StoreError> {
        let Some(hash) = session_hash(secret) else {
            return Ok(());
        };
        self.with_conn(move |c| {
            c.execute(
                "DELETE FROM console_sessions WHERE hash = ?1",
                params![hash],
            )
            .map(drop)
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
        let (info, token) = db.create_token("acme", "servicenow", "api").await.unwrap();
        assert!(token.expose_secret().starts_with(TOKEN_PREFIX));
        assert_eq!(db.verify_token(&token).await.unwrap().as_ref(), Some(&info));
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

    backend_tests! {
        async fn tokens_carry_their_role(db) {
            let (admin, secret) = db.create_token("acme", "Ana", "tenant-admin").await.unwrap();
            let (api, _) = db.create_token("acme", "servicenow", "api").await.unwrap();
            let got = db.verify_token(&secret).await.unwrap().unwrap();
            assert_eq!((got.role.as_str(), got.label.as_str()), ("tenant-admin", "Ana"));
            let mut listed = db.list_tokens("acme").await.unwrap();
            listed.sort_by(|a, b| a.label.cmp(&b.label));
            assert_eq!(listed, [admin, api]);
        }
    }

    backend_tests! {
        async fn config_versions_are_appended_only_after_the_expected_one(db) {
            assert_eq!(db.put_config("acme", 0, "v1", "cli", "first").await.unwrap(), Some(1));
            // A second creation, or a change based on a stale version, loses.
            assert_eq!(db.put_config("acme", 0, "x", "cli", "").await.unwrap(), None);
            assert_eq!(db.put_config("acme", 1, "v2", "tok", "second").await.unwrap(), Some(2));
            assert_eq!(db.put_config("acme", 1, "x", "tok", "").await.unwrap(), None);
            assert_eq!(db.put_config("globex", 0, "g1", "cli", "").await.unwrap(), Some(1));
            let newest: Vec<_> = db
                .managed_configs()
                .await
                .unwrap()
                .into_iter()
                .map(|v| (v.tenant, v.version, v.text))
                .collect();
            assert_eq!(
                newest,
                [("acme".into(), 2, "v2".into()), ("globex".into(), 1, "g1".into())]
            );
            let history = db.config_versions("acme").await.unwrap();
            let got: Vec<_> = history
                .iter()
                .map(|v| (v.version, v.text.as_str(), v.author.as_str(), v.comment.as_str()))
                .collect();
            assert_eq!(got, [(2, "v2", "tok", "second"), (1, "v1", "cli", "first")]);
            assert!(history[0].created_at > 0);
            assert_eq!(db.remove_managed("acme").await.unwrap(), 2);
            assert!(db.config_versions("acme").await.unwrap().is_empty());
            assert_eq!(db.managed_configs().await.unwrap().len(), 1);
        }
    }

    backend_tests! {
        async fn console_sessions_live_as_long_as_their_token_and_expiry(db) {
            let (info, token) = db.create_token("acme", "Ana", "tenant-admin").await.unwrap();
            let bad = SecretString::from(format!("{}x", token.expose_secret()));
            assert!(db.start_session(&bad, 100, 200).await.unwrap().is_none());
            let (secret, started) = db.start_session(&token, 100, 200).await.unwrap().unwrap();
            assert!(secret.expose_secret().starts_with(SESSION_PREFIX));
            assert_eq!(started.token, info);
            let got = db.session(&secret, 150).await.unwrap().unwrap();
            assert_eq!(got, started);
            // Expired, then (a second one) signed out, then revoked.
            assert!(db.session(&secret, 200).await.unwrap().is_none());
            let (second, _) = db.start_session(&token, 100, 300).await.unwrap().unwrap();
            db.end_session(&second).await.unwrap();
            assert!(db.session(&second, 150).await.unwrap().is_none());
            let (third, _) = db.start_session(&token, 100, 300).await.unwrap().unwrap();
            assert!(db.revoke_token("acme", &info.id).await.unwrap());
            assert!(db.session(&third, 150).await.unwrap().is_none());
            // A token is not a session, nor a session a token.
            assert!(db.session(&token, 150).await.unwrap().is_none());
            assert!(db.verify_token(&third).await.unwrap().is_none());
        }
    }
    backend_tests! {
        async fn audit_entries_are_filtered_and_paged(db) {
            let entry = |kind: &str, instance: &str, outcome: &str| AuditEntry {
                seq: 0,
                time: 0,
                tenant: "acme".into(),
                instance: Some(instance.into()),
                actor: None,
                kind: kind.into(),
                what: format!("{kind}-{instance}-{outcome}"),
                outcome: outcome.into(),
                duration_ms: 1,
                request_id: "r".into(),
            };
            db.append_audit(vec![
                entry("action", "a", "ok"),
                entry("action", "b", "upstream_failed"),
                entry("job", "a", "ok"),
                entry("admin", "a", "ok"),
                entry("action", "a", "forbidden"),
            ])
            .await
            .unwrap();
            let whats = |v: Vec<AuditEntry>| v.into_iter().map(|e| e.what).collect::<Vec<_>>();
            let q = |f: fn(&mut AuditQuery)| {
                let mut q = AuditQuery { limit: 100, ..AuditQuery::default() };
                f(&mut q);
                q
            };
            assert_eq!(
                whats(db.audit_query("acme", q(|q| q.kind = Some("action".into()))).await.unwrap()),
                ["action-a-forbidden", "action-b-upstream_failed", "action-a-ok"]
            );
            assert_eq!(
                whats(db.audit_query("acme", q(|q| q.outcome = Some("failed".into()))).await.unwrap()),
                ["action-a-forbidden", "action-b-upstream_failed"]
            );
            assert_eq!(
                whats(db.audit_query("acme", q(|q| {
                    q.instance = Some("a".into());
                    q.outcome = Some("ok".into());
                })).await.unwrap()),
                ["admin-a-ok", "job-a-ok", "action-a-ok"]
            );
            // Pages: two, then the two before the oldest of those.
            let first = db.audit_query("acme", AuditQuery { limit: 2, ..AuditQuery::default() }).await.unwrap();
            let next = db
                .audit_query("acme", AuditQuery { limit: 2, before_seq: Some(first[1].seq), ..AuditQuery::default() })
                .await
                .unwrap();
            assert_eq!(whats(next), ["job-a-ok", "action-b-upstream_failed"]);
            // Times are seconds; nothing is from the far future.
            assert!(db.audit_query("acme", q(|q| q.since = Some(i64::MAX / 2))).await.unwrap().is_empty());
            assert_eq!(db.audit_query("acme", q(|q| q.until = Some(i64::MAX / 2))).await.unwrap().len(), 5);
            assert!(db.audit_query("globex", q(|_| {})).await.unwrap().is_empty());
        }
    }
}
