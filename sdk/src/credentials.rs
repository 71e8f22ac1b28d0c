//! Credentials bound to this instance: names and metadata, never values.
//! To use one, name it on a request with [`crate::http::Request::credential`].

use crate::bindings::switchyard::plugin::credentials as wit;
pub use wit::{CredentialInfo, Error, SecretPlacement, Verification};

/// The credentials bound to this instance.
pub fn list() -> Vec<CredentialInfo> {
    wit::list()
}

/// Asks the host to check credential `name` (for OAuth2: obtain a token).
pub fn verify(name: &str) -> Result<Verification, Error> {
    wit::verify(name)
}

/// Where credential `name` puts its secret: in headers, or (a secret-URL
/// credential, listed as `bearer`) as the whole URL. For the latter, send
/// the request to the credential's host with path `/`:
///
/// ```no_run
/// use switchyard_sdk::credentials::{self, SecretPlacement};
/// use switchyard_sdk::http::Request;
/// # fn demo() -> switchyard_sdk::Result<()> {
/// if credentials::placement("slack")? == SecretPlacement::Url {
///     let host = &credentials::list().into_iter().find(|c| c.name == "slack").unwrap().hosts[0];
///     Request::post(&format!("{host}/")).credential("slack").json(&serde_json::json!({"text": "hi"}))?.send()?;
/// }
/// # Ok(()) }
/// ```
pub fn placement(name: &str) -> Result<SecretPlacement, Error> {
    wit::placement(name)
}

impl From<Error> for crate::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(m) => crate::Error::Internal(m),
            Error::Rejected(m) => crate::Error::Upstream {
                status: Some(401),
                message: m,
                retry_after_secs: None,
            },
            Error::Unavailable(m) => crate::Error::upstream(m),
        }
    }
}
