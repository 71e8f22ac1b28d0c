//! Who is calling: a bearer token checked against the store, as axum
//! extractors. [`Caller<N>`] is a token for the `{tenant}` in the path
//! whose role allows `N` (an [`Access`] as a type, so a handler cannot
//! forget to ask); [`Operator`] is an operator token. A handler that takes
//! one never runs for a caller without it.
//!
//! | role | what it may do |
//! |---|---|
//! | `api` (integrations; the default) | call actions, pause, resume, run now, read |
//! | `tenant-admin` | configure the tenant, set secrets, pause, resume, run now, read |
//! | `tenant-viewer` | read status, audit and configuration (never a secret) |
//! | operator | everything but calling actions, for every tenant |

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use switchyard_store::TokenInfo;

use crate::clock::request_id;
use crate::errors::{ApiError, error, unavailable};
use crate::state::{AppState, Live};

/// The tenant id operator tokens carry; no tenant can have it (tenant ids
/// are file names of a-z, 0-9, - and _).
pub const OPERATOR: &str = "*";

/// What a token may do, by the role it was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An integration calling actions (tokens made before roles existed).
    Api,
    /// A person who configures the tenant.
    TenantAdmin,
    /// A person who reads the tenant's status, audit and configuration.
    TenantViewer,
    /// The operator, for every tenant.
    Operator,
}

impl Role {
    /// The roles `token create --role` accepts.
    pub const TENANT_ROLES: [&str; 3] = ["api", "tenant-admin", "tenant-viewer"];

    /// The role a stored token has; None for a name this build does not
    /// know (a newer daemon made it), which allows nothing.
    pub fn of(token: &TokenInfo) -> Option<Self> {
        if token.tenant == OPERATOR {
            return Some(Self::Operator);
        }
        match token.role.as_str() {
            "api" => Some(Self::Api),
            "tenant-admin" => Some(Self::TenantAdmin),
            "tenant-viewer" => Some(Self::TenantViewer),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::TenantAdmin => "tenant-admin",
            Self::TenantViewer => "tenant-viewer",
            Self::Operator => "operator",
        }
    }

    /// Whether the role allows `access`.
    pub fn allows(self, access: Access) -> bool {
        use Access::*;
        match self {
            Self::Api => matches!(access, Invoke | Operate | Read),
            Self::TenantAdmin | Self::Operator => matches!(access, Configure | Operate | Read),
            Self::TenantViewer => access == Read,
        }
    }
}

/// What a request does to a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Run an action.
    Invoke,
    /// Pause, resume, run a job now, retry dead work.
    Operate,
    /// Change configuration, secrets and role mappings.
    Configure,
    /// Read status, audit and configuration.
    Read,
}

impl Access {
    fn needs(self) -> &'static str {
        match self {
            Self::Invoke => "calling actions needs an `api` token",
            Self::Operate | Self::Configure => {
                "this changes the tenant and needs a `tenant-admin` (or operator) token"
            }
            Self::Read => "this token's role allows nothing",
        }
    }
}

/// An [`Access`] as a type, for [`Caller`].
pub trait Need: Send + Sync + 'static {
    /// The access.
    const ACCESS: Access;
}

macro_rules! needs {
    ($($name:ident),*) => {$(
        #[doc = concat!("[`Access::", stringify!($name), "`] as a type.")]
        pub struct $name;
        impl Need for $name {
            const ACCESS: Access = Access::$name;
        }
    )*};
}
needs!(Invoke, Operate, Configure, Read);

/// A caller authenticated for the path's tenant, whose role allows `N`,
/// with the snapshot and the request id the request works with.
pub struct Caller<N: Need> {
    /// The state snapshot.
    pub st: Arc<AppState>,
    /// The tenant the request is for.
    pub tenant: String,
    /// This request's id.
    pub request_id: String,
    /// The token's role.
    pub role: Role,
    /// The token.
    pub token: TokenInfo,
    _need: PhantomData<N>,
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

/// Checks that the bearer token may do `access` to `tenant` (operator
/// tokens: to any tenant; `tenant` [`OPERATOR`]: operator tokens only).
async fn authorize(
    st: &AppState,
    headers: &HeaderMap,
    tenant: &str,
    access: Access,
    rid: &str,
) -> Result<(TokenInfo, Role), Response> {
    let Some(token) = bearer(headers) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer <token>`",
            rid,
        ));
    };
    let info = match st.db().verify_token(&token).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the API token is not valid",
                rid,
            ));
        }
        Err(e) => return Err(unavailable("verifying the API token", &e, rid)),
    };
    let forbidden = |why: String| error(StatusCode::FORBIDDEN, "forbidden", why, rid);
    let role = Role::of(&info);
    if tenant == OPERATOR && role != Some(Role::Operator) {
        return Err(forbidden(
            "this endpoint needs an operator token".to_owned(),
        ));
    }
    if info.tenant != tenant && role != Some(Role::Operator) {
        return Err(forbidden(format!(
            "the API token is not valid for tenant `{tenant}`"
        )));
    }
    match role {
        Some(role) if role.allows(access) => Ok((info, role)),
        Some(role) => Err(forbidden(format!(
            "a `{}` token may not do this: {}",
            role.name(),
            access.needs()
        ))),
        None => Err(forbidden(format!(
            "the token's role `{}` is unknown to this daemon",
            info.role
        ))),
    }
}

impl<N: Need> FromRequestParts<Arc<Live>> for Caller<N> {
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
        let (token, role) = authorize(&st, &parts.headers, &tenant, N::ACCESS, &request_id).await?;
        Ok(Self {
            st,
            tenant,
            request_id,
            role,
            token,
            _need: PhantomData,
        })
    }
}

impl FromRequestParts<Arc<Live>> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, live: &Arc<Live>) -> Result<Self, Response> {
        let request_id = request_id();
        let st = live.current();
        authorize(&st, &parts.headers, OPERATOR, Access::Read, &request_id).await?;
        Ok(Self { st, request_id })
    }
}

impl<N: Need> Caller<N> {
    /// Who made a change, for the audit log and configuration history:
    /// the token's role, id and label (never the token).
    pub fn author(&self) -> String {
        let label = if self.token.label.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.token.label)
        };
        format!("{} token {}{label}", self.role.name(), self.token.id)
    }

    /// The instance `instance` of the caller's tenant, or a 404.
    pub fn instance(&self, instance: &str) -> Result<&crate::state::InstanceState, ApiError> {
        if let Some(e) = self.st.unserved(&self.tenant, instance, &self.request_id) {
            return Err(e);
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
