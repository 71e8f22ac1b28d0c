//! One instance of an API-managed tenant, changed on its own (each change
//! is a new configuration version, checked like every other):
//!
//! - `DELETE /v1/tenants/{tenant}/instances/{instance}?base_version=N&delete_storage=B`
//!   removes it. `delete_storage` must be given: `true` deletes what the
//!   instance stored, `false` keeps it, for an instance added again with
//!   the same id (a rollback, say) to find.
//! - `POST .../instances/{instance}/webhooks/{route}/secret` with
//!   `{"kind": "token"|"hmac", "base_version": N}` makes a random token or
//!   HMAC key for the route, stores it as the tenant secret
//!   `<instance>.webhook.<route>.<kind>`, sets the route to verify with it,
//!   and answers it once, with the URL and header to give to the sender.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth::{Caller, Configure, Role};
use super::config::{apply_answer, audit_change, change_config, json_body};
use crate::config::managed;
use crate::errors::{error, unavailable};
use crate::state::{Applied, ApplyError, Live};

/// Why an instance change was not made.
pub enum InstanceChange {
    /// No such instance (or the tenant is not API-managed).
    Missing(String),
    /// The change was refused or failed (see [`ApplyError`]).
    Apply(ApplyError),
    /// The store failed (logged).
    Unavailable,
}

impl From<ApplyError> for InstanceChange {
    fn from(e: ApplyError) -> Self {
        Self::Apply(e)
    }
}

/// The newest configuration text of `tenant`, if the API manages it.
async fn newest(live: &Live, tenant: &str, rid: &str) -> Result<String, InstanceChange> {
    let versions = live
        .shared()
        .db
        .config_versions(tenant)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, request_id = rid, "reading a tenant's configuration");
            InstanceChange::Unavailable
        })?;
    versions
        .into_iter()
        .next()
        .map(|v| v.text)
        .ok_or(InstanceChange::Apply(ApplyError::NotManaged))
}

/// Removes `instance` from `tenant`'s configuration, and with
/// `delete_storage` what it stored; the keys deleted.
#[allow(clippy::too_many_arguments)]
pub async fn remove_instance(
    live: &Live,
    tenant: &str,
    role: Role,
    author: &str,
    instance: &str,
    base: i64,
    delete_storage: bool,
    rid: &str,
) -> Result<(Applied, u64), InstanceChange> {
    let text = newest(live, tenant, rid).await?;
    let text = managed::replace_instance(&text, instance, None).map_err(InstanceChange::Missing)?;
    let comment = format!(
        "removed instance {instance}{}",
        if delete_storage {
            " and its storage"
        } else {
            ""
        }
    );
    let applied = change_config(live, tenant, role, author, text, base, &comment, rid).await?;
    let mut deleted = 0;
    if delete_storage {
        let ns = switchyard_store::Namespace::new(tenant, instance);
        deleted = live.shared().db.clear(&ns).await.map_err(|e| {
            tracing::error!(error = %e, request_id = rid, "deleting a removed instance's storage");
            InstanceChange::Unavailable
        })?;
        audit_change(
            live.shared(),
            tenant,
            author,
            rid,
            format!("storage of {instance} deleted ({deleted} keys)"),
        )
        .await;
    }
    Ok((applied, deleted))
}

/// A webhook secret made by [`generate_webhook_secret`].
pub struct Generated {
    /// The value, to give to the sender once.
    pub value: String,
    /// The route's path on this daemon.
    pub path: String,
    /// Where the sender puts it.
    pub header: &'static str,
    /// The configuration version that verifies with it.
    pub version: i64,
}

/// Makes a random token (`kind` `token`) or HMAC key (`hmac`) for webhook
/// `route` of `instance`, stores it as a secret and has the route verify
/// with it.
#[allow(clippy::too_many_arguments)]
pub async fn generate_webhook_secret(
    live: &Live,
    tenant: &str,
    role: Role,
    author: &str,
    instance: &str,
    route: &str,
    kind: &str,
    base: i64,
    rid: &str,
) -> Result<Generated, InstanceChange> {
    let (field, header) = match kind {
        "token" => ("token", "x-switchyard-token"),
        "hmac" => (
            "hmac_secret",
            "x-switchyard-signature (the body's HMAC-SHA256, hex)",
        ),
        other => {
            return Err(InstanceChange::Missing(format!(
                "`{other}` is not a kind of webhook secret: use token or hmac"
            )));
        }
    };
    let text = newest(live, tenant, rid).await?;
    let Some(mut table) = managed::instance_table(&text, instance) else {
        return Err(InstanceChange::Missing(format!(
            "there is no instance `{instance}`"
        )));
    };
    let st = live.current();
    let served = st.instance(tenant, instance);
    if served.is_some_and(|i| {
        !i.plugin()
            .manifest()
            .webhooks
            .iter()
            .any(|w| w.route == route)
    }) {
        return Err(InstanceChange::Missing(format!(
            "the plugin has no webhook route `{route}`"
        )));
    }
    let value = switchyard_store::random_secret();
    let name = format!("{instance}.webhook.{route}.{kind}");
    live.shared()
        .secrets()
        .set(tenant, &name, &secrecy::SecretString::from(value.clone()))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, request_id = rid, "storing a webhook secret");
            InstanceChange::Unavailable
        })?;
    audit_change(
        live.shared(),
        tenant,
        author,
        rid,
        format!("secret {name} set"),
    )
    .await;
    let hooks = table
        .entry("webhooks")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let Some(hooks) = hooks.as_table_mut() {
        let hook = hooks
            .entry(route.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let Some(h) = hook.as_table_mut() {
            h.insert(field.into(), format!("secret:{name}").into());
        }
    }
    let text =
        managed::replace_instance(&text, instance, Some(table)).map_err(InstanceChange::Missing)?;
    let comment = format!("webhook {route} of {instance}: new {kind}");
    let applied = change_config(live, tenant, role, author, text, base, &comment, rid).await?;
    Ok(Generated {
        value,
        path: format!("/hooks/{tenant}/{instance}/{route}"),
        header,
        version: applied.version.unwrap_or_default(),
    })
}

fn change_error(caller: &Caller<Configure>, e: InstanceChange, base: i64) -> Response {
    let rid = caller.request_id.as_str();
    match e {
        InstanceChange::Missing(why) => error(StatusCode::NOT_FOUND, "not_found", why, rid),
        InstanceChange::Apply(e) => apply_answer(caller, Err(e), base),
        InstanceChange::Unavailable => {
            unavailable("changing the instance", &"the store failed", rid)
        }
    }
}

/// `DELETE /v1/tenants/{tenant}/instances/{instance}`.
pub async fn delete(
    caller: Caller<Configure>,
    State(live): State<Arc<Live>>,
    Path((_, instance)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let rid = caller.request_id.clone();
    let Some(base) = q.get("base_version").and_then(|v| v.parse::<i64>().ok()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "give base_version: the configuration version the removal was decided on",
            &rid,
        );
    };
    let delete_storage = match q.get("delete_storage").map(String::as_str) {
        Some("true") => true,
        Some("false") => false,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "say what becomes of the instance's storage: delete_storage=true deletes it, \
                 delete_storage=false keeps it for an instance added again with the same id",
                &rid,
            );
        }
    };
    let author = caller.author();
    match remove_instance(
        &live,
        &caller.tenant,
        caller.role,
        &author,
        &instance,
        base,
        delete_storage,
        &rid,
    )
    .await
    {
        Ok((applied, deleted)) => axum::Json(json!({
            "request_id": rid,
            "version": applied.version,
            "storage_keys_deleted": deleted,
        }))
        .into_response(),
        Err(e) => change_error(&caller, e, base),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretRequest {
    kind: String,
    base_version: i64,
}

/// `POST /v1/tenants/{tenant}/instances/{instance}/webhooks/{route}/secret`.
pub async fn webhook_secret(
    caller: Caller<Configure>,
    State(live): State<Arc<Live>>,
    Path((_, instance, route)): Path<(String, String, String)>,
    body: Body,
) -> Response {
    let rid = caller.request_id.clone();
    let req: SecretRequest = match json_body(body, &rid).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let author = caller.author();
    match generate_webhook_secret(
        &live,
        &caller.tenant,
        caller.role,
        &author,
        &instance,
        &route,
        &req.kind,
        req.base_version,
        &rid,
    )
    .await
    {
        Ok(g) => axum::Json(json!({
            "request_id": rid,
            "version": g.version,
            "value": g.value,
            "path": g.path,
            "header": g.header,
            "note": "give the value to the sender now: it is not shown again",
        }))
        .into_response(),
        Err(e) => change_error(&caller, e, req.base_version),
    }
}
