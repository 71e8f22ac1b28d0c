//! Console sign-in: a session cookie made from an API token, checked on
//! every request, and a CSRF value every form must carry.
//!
//! The cookie is `HttpOnly`, `SameSite=Strict`, scoped to `/console`, and
//! `Secure` when the request came over TLS (a proxy in front says so with
//! `X-Forwarded-Proto: https`). Only its SHA-256 is stored; it dies at its
//! expiry, at sign-out, or when the token it was made from is revoked.
//! Failed sign-ins are limited per client address.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::SecretString;
use subtle::ConstantTimeEq;
use switchyard_store::ConsoleSession;

use crate::api::auth::{Access, Need, OPERATOR, Role};
use crate::state::{AppState, Live};

/// The cookie's name.
pub const COOKIE: &str = "switchyard_session";
/// How long a session lives.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// The client's address.
pub fn client_ip(parts_or_req: &axum::http::Extensions) -> IpAddr {
    parts_or_req
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

/// Whether the request came over TLS (to a proxy in front).
pub fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value for a new session, or for clearing it.
pub fn cookie(value: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match value {
        Some(v) => format!(
            "{COOKIE}={v}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            SESSION_TTL.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// The session cookie's value, if the request has one.
pub fn session_secret(headers: &HeaderMap) -> Option<SecretString> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| SecretString::from(v.to_owned()))
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    crate::clock::now_ms() / 1000
}

/// A signed-in person whose role allows `N` on the `{tenant}` of the path
/// (any tenant for an operator). Without a session: a redirect to the
/// sign-in page; with a role that does not allow `N`: 403.
pub struct Signed<N: Need> {
    /// The state snapshot.
    pub st: Arc<AppState>,
    /// The running state (for changes).
    pub live: Arc<Live>,
    /// The tenant of the path ("" on pages without one).
    pub tenant: String,
    /// The session.
    pub session: ConsoleSession,
    /// The role.
    pub role: Role,
    _need: PhantomData<N>,
}

impl<N: Need> Signed<N> {
    /// Who, for the audit log and history.
    pub fn author(&self) -> String {
        let t = &self.session.token;
        let label = if t.label.is_empty() {
            String::new()
        } else {
            format!(" ({})", t.label)
        };
        format!("{} token {}{label} (console)", self.role.name(), t.id)
    }

    /// The tenant's configuration versions, newest first (none: the
    /// tenant has a file); a store failure is logged and refused.
    pub async fn versions(&self) -> Result<Vec<switchyard_store::ConfigVersion>, Refused> {
        self.st
            .db()
            .config_versions(&self.tenant)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "reading configuration versions for the console");
                Refused::Unavailable
            })
    }

    /// The page header for this person.
    pub fn nav(&self) -> super::pages::Nav<'_> {
        let t = &self.session.token;
        let label = if t.label.is_empty() {
            String::new()
        } else {
            format!(" {}", t.label)
        };
        super::pages::Nav {
            tenant: &self.tenant,
            who: format!("{}{label}", self.role.name()),
            csrf: &self.session.csrf,
        }
    }

    /// The same person, for rendering a page that only reads.
    pub fn as_reader(&self) -> Signed<crate::api::auth::Read> {
        Signed {
            st: self.live.current(),
            live: self.live.clone(),
            tenant: self.tenant.clone(),
            session: self.session.clone(),
            role: self.role,
            _need: PhantomData,
        }
    }

    /// Whether the role also allows `access` (to show a button or not).
    pub fn may(&self, access: Access) -> bool {
        self.role.allows(access)
    }
}

/// Why a console request was refused.
pub enum Refused {
    /// Not signed in (or the session ended): to the sign-in page.
    SignIn,
    /// Signed in, but not allowed.
    Forbidden(String),
    /// The store failed.
    Unavailable,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn => Redirect::to("/console").into_response(),
            Self::Forbidden(why) => {
                super::pages::message(StatusCode::FORBIDDEN, "Not allowed", &why)
            }
            Self::Unavailable => super::pages::message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "The daemon could not read its state; try again.",
            ),
        }
    }
}

async fn signed_from_parts<N: Need>(
    parts: &mut Parts,
    live: &Arc<Live>,
) -> Result<Signed<N>, Refused> {
    let st = live.current();
    let secret = session_secret(&parts.headers).ok_or(Refused::SignIn)?;
    let session = st
        .db()
        .session(&secret, now_secs())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "reading a console session");
            Refused::Unavailable
        })?
        .ok_or(Refused::SignIn)?;
    let role = Role::of(&session.token)
        .ok_or_else(|| Refused::Forbidden("this token's role is unknown to this daemon".into()))?;
    let tenant = axum::extract::RawPathParams::from_request_parts(parts, live)
        .await
        .ok()
        .and_then(|p| {
            p.iter()
                .find(|(k, _)| *k == "tenant")
                .map(|(_, v)| v.to_owned())
        })
        .unwrap_or_default();
    if !tenant.is_empty() && role != Role::Operator && session.token.tenant != tenant {
        return Err(Refused::Forbidden(format!(
            "you are signed in for tenant `{}`, not `{tenant}`",
            session.token.tenant
        )));
    }
    if session.token.tenant == OPERATOR && role != Role::Operator {
        return Err(Refused::Forbidden("not an operator token".into()));
    }
    if !role.allows(N::ACCESS) {
        return Err(Refused::Forbidden(format!(
            "a `{}` may not do this",
            role.name()
        )));
    }
    Ok(Signed {
        st,
        live: live.clone(),
        tenant,
        session,
        role,
        _need: PhantomData,
    })
}

impl<N: Need> FromRequestParts<Arc<Live>> for Signed<N> {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, live: &Arc<Live>) -> Result<Self, Refused> {
        signed_from_parts(parts, live).await
    }
}

/// A form posted by a signed-in person, its CSRF value checked: every
/// state-changing console request takes one, so none can forget the check.
pub struct Posted<N: Need> {
    /// Who.
    pub who: Signed<N>,
    /// The form's fields (`csrf` removed).
    pub fields: BTreeMap<String, String>,
}

/// Largest form accepted (a tenant file fits).
const MAX_FORM: usize = 1 << 20;

impl<N: Need> FromRequest<Arc<Live>> for Posted<N> {
    type Rejection = Response;

    async fn from_request(req: Request, live: &Arc<Live>) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let who = signed_from_parts::<N>(&mut parts, live)
            .await
            .map_err(IntoResponse::into_response)?;
        let bytes = crate::body::read(body, MAX_FORM, "console").await?;
        let mut fields: BTreeMap<String, String> = url::form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let sent = fields.remove("csrf").unwrap_or_default();
        let ok: bool = sent.as_bytes().ct_eq(who.session.csrf.as_bytes()).into();
        if !ok {
            return Err(super::pages::message(
                StatusCode::FORBIDDEN,
                "Form expired",
                "The form was not sent from this console session (missing or wrong CSRF \
                 value). Go back, reload the page and try again.",
            ));
        }
        Ok(Self { who, fields })
    }
}
