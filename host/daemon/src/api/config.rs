//! The admin API for a tenant's configuration and secrets.
//!
//! - `GET .../config`: the configuration (text and JSON), who manages it,
//!   its version; never a secret value.
//! - `PUT .../config`: a new version of an API-managed tenant, checked as
//!   `switchyard check` checks a file, applied without a restart. The body
//!   is `{"toml": "..."}` or `{"config": {...}}` (the file's shape as
//!   JSON), with `base_version` (the version it was made from; a stale one
//!   is a 409) and an optional `comment`. A refused change is a 422 listing
//!   every problem with its field.
//! - `GET .../config/versions`, `GET .../config/versions/{version}` (with
//!   the diff from the version before), `POST .../rollback`: history.
//! - `GET .../secrets` (names and when set), `PUT|DELETE
//!   .../secrets/{name}`: write-only secrets.
//!
//! A tenant configured by a file is read-only here: its file is the truth,
//! and the operator changes it. Every change is audited (kind `admin`,
//! who, what; never a value).

use axum::body::Body;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_store::ConfigVersion;

use super::auth::{Caller, Configure, Need, Read, Role};
use crate::config::managed;
use crate::errors::{error, unavailable};
use crate::problem::{Problem, Severity};
use crate::record::{self, Subject};
use crate::state::{ApplyError, ConfigChange, Live};

/// Largest configuration or secret body accepted.
pub const MAX_CONFIG_BODY: usize = 1 << 20;

fn problems_json(problems: &[Problem]) -> Vec<Value> {
    problems
        .iter()
        .map(|p| {
            json!({
                "field": p.field,
                "line": p.line,
                "message": p.message,
                "severity": match p.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                },
            })
        })
        .collect()
}

/// Records an admin change in the tenant's audit log.
pub async fn audit_change(
    shared: &crate::state::Shared,
    tenant: &str,
    author: &str,
    rid: &str,
    what: String,
) {
    let who = Subject {
        tenant,
        instance: None,
        actor: author,
        request_id: rid,
    };
    record::append_audit(shared, vec![who.entry("admin", &what, "ok", 0)], rid).await;
}

/// The tenant's versions, or the error response.
async fn versions<N: Need>(caller: &Caller<N>) -> Result<Vec<ConfigVersion>, Response> {
    caller
        .st
        .db()
        .config_versions(&caller.tenant)
        .await
        .map_err(|e| unavailable("reading the configuration", &e, &caller.request_id))
}

/// Refuses a change to a tenant that is not API-managed.
fn not_managed<N: Need>(caller: &Caller<N>) -> Response {
    let file = format!("tenants/{}.toml", caller.tenant);
    if caller.st.tenant(&caller.tenant).is_some()
        || caller.st.tenant_failure(&caller.tenant).is_some()
    {
        error(
            StatusCode::CONFLICT,
            "file_managed",
            format!(
                "tenant `{}` is configured by the file {file} on the daemon's machine; the \
                 operator changes it there (the API shows it read-only)",
                caller.tenant
            ),
            &caller.request_id,
        )
    } else {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no tenant `{}`", caller.tenant),
            &caller.request_id,
        )
    }
}

/// `GET /v1/tenants/{tenant}/config`.
pub async fn get_config(caller: Caller<Read>) -> Response {
    let rid = caller.request_id.as_str();
    let versions = match versions(&caller).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let served = caller.st.tenant(&caller.tenant).is_some();
    let problems = caller.st.tenant_failure(&caller.tenant).unwrap_or_default();
    if let Some(v) = versions.first() {
        // API-managed: the text holds `secret:NAME` references only.
        return axum::Json(json!({
            "request_id": rid,
            "tenant": caller.tenant,
            "managed_by": "api",
            "read_only": false,
            "version": v.version,
            "updated_at": v.created_at,
            "updated_by": v.author,
            "toml": v.text,
            "config": managed::json_of_text(&v.text),
            "served": served,
            "problems": problems,
        }))
        .into_response();
    }
    let st = &caller.st;
    let path = st
        .config_dir
        .join("tenants")
        .join(format!("{}.toml", caller.tenant));
    let read = tokio::task::spawn_blocking(move || std::fs::read_to_string(&path)).await;
    let Ok(Ok(text)) = read else {
        return not_managed(&caller);
    };
    let text = st
        .parse_tenant_text(&caller.tenant, text)
        .map(|t| managed::redacted_text(&t))
        .unwrap_or_default();
    axum::Json(json!({
        "request_id": rid,
        "tenant": caller.tenant,
        "managed_by": "file",
        "file": format!("tenants/{}.toml", caller.tenant),
        "read_only": true,
        "read_only_reason": "this tenant is configured by a file on the daemon's machine; \
                             the operator changes it there",
        "version": null,
        "toml": text,
        "config": managed::json_of_text(&text),
        "served": served,
        "problems": problems,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutConfig {
    #[serde(default)]
    toml: Option<String>,
    #[serde(default)]
    config: Option<Value>,
    base_version: i64,
    #[serde(default)]
    comment: String,
}

/// A JSON request body of at most [`MAX_CONFIG_BODY`] bytes, or a 400.
pub async fn json_body<T: serde::de::DeserializeOwned>(
    body: Body,
    rid: &str,
) -> Result<T, Response> {
    let bytes = crate::body::read(body, MAX_CONFIG_BODY, rid).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("request body: {e}"),
            rid,
        )
    })
}

/// `PUT /v1/tenants/{tenant}/config`.
pub async fn put_config(
    caller: Caller<Configure>,
    State(live): State<Arc<Live>>,
    body: Body,
) -> Response {
    let rid = caller.request_id.clone();
    let req: PutConfig = match json_body(body, &rid).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let text = match (req.toml, req.config) {
        (Some(t), None) => t,
        (None, Some(c)) => match managed::text_from_json(&c) {
            Ok(t) => t,
            Err(why) => return error(StatusCode::BAD_REQUEST, "invalid_request", why, &rid),
        },
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "give the configuration as exactly one of `toml` (the tenant file's text) and \
                 `config` (its JSON form)",
                &rid,
            );
        }
    };
    apply(&caller, &live, text, req.base_version, req.comment).await
}

/// Checks, stores and applies `text` as `tenant`'s next version, made by
/// `author` with `role` from version `base`, and audits it.
#[allow(clippy::too_many_arguments)]
pub async fn change_config(
    live: &Live,
    tenant: &str,
    role: Role,
    author: &str,
    text: String,
    base: i64,
    comment: &str,
    rid: &str,
) -> Result<crate::state::Applied, ApplyError> {
    // Only an operator brings a new tenant under the API.
    if base == 0 && role != Role::Operator {
        return Err(ApplyError::NotManaged);
    }
    let change = ConfigChange {
        tenant,
        expected: base,
        text,
        author,
        comment,
        by_operator: role == Role::Operator,
    };
    let applied = live.apply(change).await?;
    let version = applied.version.unwrap_or_default();
    audit_change(
        live.shared(),
        tenant,
        author,
        rid,
        format!("config version {version}"),
    )
    .await;
    Ok(applied)
}

/// Checks, stores and applies `text` as the tenant's next version.
async fn apply(
    caller: &Caller<Configure>,
    live: &Live,
    text: String,
    base: i64,
    comment: String,
) -> Response {
    let rid = caller.request_id.as_str();
    let author = caller.author();
    let changed = change_config(
        live,
        &caller.tenant,
        caller.role,
        &author,
        text,
        base,
        &comment,
        rid,
    )
    .await;
    apply_answer(caller, changed, base)
}

/// The answer to a configuration change made from version `base`.
pub fn apply_answer(
    caller: &Caller<Configure>,
    changed: Result<crate::state::Applied, ApplyError>,
    base: i64,
) -> Response {
    let rid = caller.request_id.as_str();
    match changed {
        Ok(applied) => axum::Json(json!({
            "request_id": rid,
            "version": applied.version,
            "applied": applied.summary,
            "warnings": problems_json(&applied.warnings),
        }))
        .into_response(),
        Err(ApplyError::Invalid(problems)) => {
            let errors = problems.iter().filter(|p| p.is_error()).count();
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({
                    "request_id": rid,
                    "error": {
                        "code": "invalid_config",
                        "message": format!("{errors} problem(s); nothing was changed"),
                    },
                    "problems": problems_json(&problems),
                })),
            )
                .into_response()
        }
        Err(ApplyError::Conflict(current)) => error(
            StatusCode::CONFLICT,
            "conflict",
            conflict_message(&caller.tenant, base, current),
            rid,
        ),
        Err(ApplyError::FileManaged(_) | ApplyError::NotManaged) => not_managed(caller),
        Err(ApplyError::Failed(why)) => {
            tracing::error!(request_id = rid, "applying a configuration change: {why}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the daemon's own configuration cannot be loaded right now, so nothing was \
                 changed; retry, or ask the operator (the daemon's log says why)",
                rid,
            )
        }
    }
}

/// What to say when a change was made from version `base` but the newest
/// is `current`.
pub fn conflict_message(tenant: &str, base: i64, current: i64) -> String {
    if base == 0 {
        format!("tenant `{tenant}` already exists (version {current})")
    } else {
        format!(
            "the configuration is at version {current}, not {base}: someone changed it \
             meanwhile; read it again and redo the change"
        )
    }
}

/// `GET /v1/tenants/{tenant}/config/versions`.
pub async fn list_versions(caller: Caller<Read>) -> Response {
    let versions = match versions(&caller).await {
        Ok(v) if v.is_empty() => return not_managed(&caller),
        Ok(v) => v,
        Err(r) => return r,
    };
    let list: Vec<Value> = versions
        .iter()
        .map(|v| {
            json!({
                "version": v.version,
                "created_at": v.created_at,
                "author": v.author,
                "comment": v.comment,
            })
        })
        .collect();
    axum::Json(json!({ "request_id": caller.request_id, "versions": list })).into_response()
}

/// `GET /v1/tenants/{tenant}/config/versions/{version}`: the text and the
/// diff from the version before it.
pub async fn get_version(
    caller: Caller<Read>,
    Path((_, version)): Path<(String, i64)>,
) -> Response {
    let versions = match versions(&caller).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(at) = versions.iter().position(|v| v.version == version) else {
        return missing_version(&caller, version, versions.is_empty());
    };
    let v = &versions[at];
    let (old, old_name) = match versions.get(at + 1) {
        Some(p) => (p.text.as_str(), format!("version {}", p.version)),
        None => ("", "(nothing)".to_owned()),
    };
    axum::Json(json!({
        "request_id": caller.request_id,
        "version": v.version,
        "created_at": v.created_at,
        "author": v.author,
        "comment": v.comment,
        "toml": v.text,
        "diff": managed::diff(old, &v.text, &old_name, &format!("version {}", v.version)),
    }))
    .into_response()
}

fn missing_version<N: Need>(caller: &Caller<N>, version: i64, none: bool) -> Response {
    if none {
        return not_managed(caller);
    }
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "tenant `{}` has no configuration version {version}",
            caller.tenant
        ),
        &caller.request_id,
    )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rollback {
    base_version: Option<i64>,
}

/// `POST /v1/tenants/{tenant}/config/versions/{version}/rollback`: a new
/// version with that version's text, checked again (plugins and secrets
/// may have changed since).
pub async fn rollback(
    caller: Caller<Configure>,
    State(live): State<Arc<Live>>,
    Path((_, version)): Path<(String, i64)>,
    body: Body,
) -> Response {
    let rid = caller.request_id.clone();
    let bytes = match crate::body::read(body, MAX_CONFIG_BODY, &rid).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req: Rollback = if bytes.iter().all(u8::is_ascii_whitespace) {
        Rollback::default()
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("request body: {e}"),
                    &rid,
                );
            }
        }
    };
    let versions = match versions(&caller).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(target) = versions.iter().find(|v| v.version == version) else {
        return missing_version(&caller, version, versions.is_empty());
    };
    let base = req
        .base_version
        .unwrap_or_else(|| versions.first().map_or(0, |v| v.version));
    let text = target.text.clone();
    apply(
        &caller,
        &live,
        text,
        base,
        format!("rolled back to version {version}"),
    )
    .await
}

/// `GET /v1/tenants/{tenant}/secrets`: names and when each was set.
pub async fn list_secrets(caller: Caller<Read>) -> Response {
    match caller.st.shared.secrets().list(&caller.tenant).await {
        Ok(list) => {
            let list: Vec<Value> = list
                .iter()
                .map(|m| json!({ "name": m.name, "updated_at": m.updated_at }))
                .collect();
            axum::Json(json!({ "request_id": caller.request_id, "secrets": list })).into_response()
        }
        Err(e) => unavailable("listing secrets", &e, &caller.request_id),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutSecret {
    value: String,
}

/// Why a secret could not be changed.
pub enum SecretChange {
    /// The tenant's file is the truth: its operator sets its secrets.
    NotManaged,
    /// A bad name or value, said.
    Invalid(String),
    /// No such secret (delete).
    Missing,
    /// The store failed (logged).
    Unavailable,
}

/// Sets (`value` Some) or deletes secret `name` of `tenant`, audited, and
/// rebuilds the instances using it.
pub async fn change_secret(
    live: &Live,
    tenant: &str,
    role: Role,
    author: &str,
    name: &str,
    value: Option<String>,
    rid: &str,
) -> Result<(), SecretChange> {
    let shared = live.shared();
    let managed = shared.db.config_versions(tenant).await.map_err(|e| {
        tracing::error!(error = %e, request_id = rid, "reading a tenant's configuration");
        SecretChange::Unavailable
    })?;
    if managed.is_empty() && role != Role::Operator {
        return Err(SecretChange::NotManaged);
    }
    let what = match value {
        Some(v) if v.is_empty() => {
            return Err(SecretChange::Invalid(
                "the value is empty; delete the secret instead".into(),
            ));
        }
        Some(v) => match shared
            .secrets()
            .set(tenant, name, &SecretString::from(v))
            .await
        {
            Ok(()) => "set",
            Err(e @ switchyard_store::SecretError::InvalidName(_)) => {
                return Err(SecretChange::Invalid(e.to_string()));
            }
            Err(e) => {
                tracing::error!(error = %e, request_id = rid, "storing a secret");
                return Err(SecretChange::Unavailable);
            }
        },
        None => match shared.secrets().delete(tenant, name).await {
            Ok(true) => "deleted",
            Ok(false) => return Err(SecretChange::Missing),
            Err(e) => {
                tracing::error!(error = %e, request_id = rid, "deleting a secret");
                return Err(SecretChange::Unavailable);
            }
        },
    };
    audit_change(shared, tenant, author, rid, format!("secret {name} {what}")).await;
    secrets_changed(live, rid).await;
    Ok(())
}

async fn secret_answer(
    caller: &Caller<Configure>,
    live: &Live,
    name: &str,
    value: Option<String>,
) -> Response {
    let rid = caller.request_id.as_str();
    let author = caller.author();
    match change_secret(live, &caller.tenant, caller.role, &author, name, value, rid).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(SecretChange::NotManaged) => not_managed(caller),
        Err(SecretChange::Invalid(why)) => {
            error(StatusCode::BAD_REQUEST, "invalid_request", why, rid)
        }
        Err(SecretChange::Missing) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("tenant `{}` has no secret `{name}`", caller.tenant),
            rid,
        ),
        Err(SecretChange::Unavailable) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the secret store failed; retry",
            rid,
        ),
    }
}

/// `PUT /v1/tenants/{tenant}/secrets/{name}`: sets or replaces a secret.
/// The instances using it pick it up at once.
pub async fn put_secret(
    caller: Caller<Configure>,
    State(live): State<Arc<Live>>,
    Path((_, name)): Path<(String, String)>,
    body: Body,
) -> Response {
    let req: PutSecret = match json_body(body, &caller.request_id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    secret_answer(&caller, &live, &name, Some(req.value)).await
}

/// `DELETE /v1/tenants/{tenant}/secrets/{name}`.
pub async fn delete_secret(
    caller: Caller<Configure>,
    State(live): State<Arc<Live>>,
    Path((_, name)): Path<(String, String)>,
) -> Response {
    secret_answer(&caller, &live, &name, None).await
}

/// Rebuilds the instances whose secrets changed (a reload keeps every
/// tenant whose secrets, like its file, are the same).
async fn secrets_changed(live: &Live, rid: &str) {
    if let Err(why) = live.reload().await {
        tracing::warn!(
            request_id = rid,
            "a secret changed but the configuration could not be reloaded: {why}; the \
             instances pick it up at the next reload"
        );
    }
}
