//! Credentials bound to this instance: names and metadata, never values.
//! To use one, name it on a request with [`crate::http::Request::credential`].

use crate::bindings::switchyard::plugin::credentials as wit;
pub use wit::{CredentialInfo, Error, Verification};

/// The credentials bound to this instance.
pub fn list() -> Vec<CredentialInfo> {
    wit::list()
}

/// Asks the host to check credential `name` (for OAuth2: obtain a token).
pub fn verify(name: &str) -> Result<Verification, Error> {
    wit::verify(name)
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
