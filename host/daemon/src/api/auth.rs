//! Who is calling: a bearer token checked against the store, as axum
//! extractors. [`Caller`] is a tenant's token for the `{tenant}` in the
//! path; [`Operator`] is an operator token. A handler that takes one never
//! runs for a caller without it.

use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;

use crate::clock::request_id;
use crate::errors::{ApiError, error, unavailable};
use crate::state::{AppState, Live};

/// The tenant id operator tokens carry; no tenant can have it (tenant ids
/// are file names of a-z, 0-9, - and _).
pub const OPERATOR: &str = "*";

/// A caller authenticated for the path's tenant, with the snapshot and the
/// request id the request works with.
pub struct Caller {
    /// The state snapshot.
    pub st: Arc<AppState>,
    /// The tenant the token is for.
    pub tenant: String,
    /// This request's id.
    pub request_id: String,
}

/// A caller with an operator token.
pub struct Operator {
    /// The state snapshot.
    pub st: Arc<AppState>,
    /// This request's id.
    pub request_id: String,
}

fn bearer(headers: &HeaderMap) -> Option<SecretString> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(SecretString::from(token.trim().to_owned()))
}

/// Checks that the bearer token is valid for `tenant`.
async fn authorize(
    st: &AppState,
    headers: &HeaderMap,
    tenant: &str,
    rid: &str,
) -> Result<(), Response> {
    let Some(token) = bearer(headers) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer <token>`",
            rid,
        ));
    };
    match st.db().verify_token(&token).await {
        Ok(Some(t)) if t == tenant => Ok(()),
        Ok(Some(_)) => Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            if tenant == OPERATOR {
                "this endpoint needs an operator token".to_owned()
            } else {
                format!("the API token is not valid for tenant `{tenant}`")
            },
            rid,
        )),
        Ok(None) => Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the API token is not valid",
            rid,
        )),
        Err(e) => Err(unavailable("verifying the API token", &e, rid)),
    }
}

impl FromRequestParts<Arc<Live>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, live: &Arc<Live>) -> Result<Self, Response> {
        let request_id = request_id();
        let params = RawPathParams::from_request_parts(parts, live)
            .await
            .map_err(IntoResponse::into_response)?;
        let tenant = params
            .iter()
            .find(|(k, _)| *k == "tenant")
            .map(|(_, v)| v.to_owned())
            .ok_or_else(|| {
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "route has no tenant",
                    &request_id,
                )
            })?;
        let st = live.current();
        authorize(&st, &parts.headers, &tenant, &request_id).await?;
        Ok(Self {
            st,
            tenant,
            request_id,
        })
    }
}

impl FromRequestParts<Arc<Live>> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, live: &Arc<Live>) -> Result<Self, Response> {
        let request_id = request_id();
        let st = live.current();
        authorize(&st, &parts.headers, OPERATOR, &request_id).await?;
        Ok(Self { st, request_id })
    }
}

impl Caller {
    /// The instance `instance` of the caller's tenant, or a 404.
    pub fn instance(&self, instance: &str) -> Result<&crate::state::InstanceState, ApiError> {
        if let Some(problems) = self.st.failure(&self.tenant, instance) {
            return Err(crate::errors::not_served(
                instance,
                problems,
                &self.request_id,
            ));
        }
        self.st
            .instance_state(&self.tenant, instance)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("tenant `{}` has no instance `{instance}`", self.tenant),
                    &self.request_id,
                )
            })
    }
}
