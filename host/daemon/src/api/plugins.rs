//! Installed plugins, for the operator: what is installed and who runs it
//! (`GET /v1/admin/plugins`, as `switchyard plugin list`), and installing a
//! release (`POST /v1/admin/plugins`, as `switchyard plugin install`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use super::auth::Operator;
use crate::errors::error;
use crate::install::InstallError;
use crate::plugins::Signer;
use crate::release::SignedRelease;
use crate::state::Live;

/// The header that carries a release's signature file (`X.wasm.sig`),
/// base64-encoded.
pub const SIGNATURE_HEADER: &str = "switchyard-release-signature";

/// The largest component the endpoint takes: a Python plugin is about
/// 20 MB.
pub const MAX_COMPONENT_BYTES: usize = 64 * 1024 * 1024;

/// `GET /v1/admin/plugins` (operator token): every installed version, who
/// vouches for it and which instances run it; the files that are refused;
/// the plugins still compiling.
pub async fn list(op: Operator, State(live): State<Arc<Live>>) -> Response {
    let rid = op.request_id.as_str();
    let st = live.current();
    let locks = match st.db().plugin_locks().await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "reading plugin locks");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the state database failed; the daemon's log says why",
                rid,
            );
        }
    };
    let catalog = st.catalog();
    let plugins: Vec<Value> = catalog
        .entries()
        .map(|e| {
            let m = e.plugin.manifest();
            let version = e.version.to_string();
            let instances = e.instances_in(&locks);
            json!({
                "id": m.id,
                "version": version,
                // The publisher, as POST answers it; none for a bundled
                // (`built_in`) or an unsigned build.
                "signer": match &e.signer {
                    Signer::Publisher(p) => Some(p.as_str()),
                    Signer::BuiltIn | Signer::Unsigned => None,
                },
                "built_in": e.signer == Signer::BuiltIn,
                "source": e.source.to_string(),
                "world": e.plugin.world(),
                "sha256": e.plugin.digest(),
                "instances": instances,
            })
        })
        .collect();
    let refused: Vec<Value> = catalog
        .problems()
        .iter()
        .map(|p| json!({ "file": p.file.display().to_string(), "message": p.message }))
        .collect();
    let compiling: Vec<Value> = catalog
        .pending()
        .iter()
        .map(|p| json!({ "id": p.id, "source": p.source.to_string() }))
        .collect();
    axum::Json(json!({
        "request_id": rid,
        "plugins": plugins,
        "refused": refused,
        "compiling": compiling,
    }))
    .into_response()
}

/// `POST /v1/admin/plugins` (operator token): the body is a component
/// (`application/wasm`), the [`SIGNATURE_HEADER`] its signature file when
/// it is signed. The release is checked as the daemon will load it, then
/// written to `<plugin_dir>/<id>/<version>.wasm`: 201, or 200 when exactly
/// these bytes were installed already; 422 when it is refused, 409 when
/// the version is installed with other bytes, 503 `busy` (with
/// `Retry-After`) when no wasm slot was free to read its manifest. A
/// reload serves it.
pub async fn install(
    op: Operator,
    State(live): State<Arc<Live>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rid = op.request_id.as_str();
    let refused = |message: String| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_release",
            message,
            rid,
        )
    };
    if body.is_empty() {
        return refused("the body must be the component (application/wasm)".into());
    }
    let signed = match headers.get(SIGNATURE_HEADER) {
        None => None,
        Some(v) => match base64::engine::general_purpose::STANDARD
            .decode(v.as_bytes())
            .map_err(|e| format!("is not base64: {e}"))
            .and_then(|b| String::from_utf8(b).map_err(|_| "is not UTF-8".to_owned()))
            .and_then(|text| SignedRelease::parse(&text))
        {
            Ok(s) => Some(s),
            Err(e) => return refused(format!("the header `{SIGNATURE_HEADER}` {e}")),
        },
    };
    let st = live.current();
    let done = crate::install::install(
        live.shared().runtime(),
        &st.plugin_dir,
        &st.trust,
        &body,
        signed,
    )
    .await;
    match done {
        Ok(done) => {
            tracing::info!(
                plugin = %done.id,
                version = %done.version,
                signer = done.signer.as_deref().unwrap_or("unsigned"),
                path = %done.path.display(),
                already = done.already,
                signature_replaced = done.signature_replaced,
                "installed a plugin release through the admin API"
            );
            let status = if done.already {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let answer = json!({
                "request_id": rid,
                "installed": {
                    "id": done.id,
                    "version": done.version,
                    "signer": done.signer,
                    "path": done.path.display().to_string(),
                },
                "already_installed": done.already,
                "signature_replaced": done.signature_replaced,
                "next": "reload (POST /v1/admin/reload) to serve it; instances already set up \
                         stay on their version until `switchyard plugin upgrade`",
            });
            (status, axum::Json(answer)).into_response()
        }
        Err(e @ InstallError::Refused(_)) => refused(e.to_string()),
        Err(InstallError::Conflict(why)) => error(StatusCode::CONFLICT, "conflict", why, rid),
        Err(InstallError::Busy(why)) => {
            crate::errors::ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", why, rid)
                .retry_after(1)
                .into_response()
        }
        Err(InstallError::Io(why)) => {
            tracing::error!(error = %why, "installing a plugin release");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "install_failed",
                "the plugin directory could not be written; the daemon's log says why",
                rid,
            )
        }
    }
}
