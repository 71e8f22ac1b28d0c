//! Reading a request body: capped in size and in time, so that a client
//! that sends its body slowly (or never finishes it) cannot hold a
//! connection, or a shutdown, open.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::Response;

use crate::errors::error;

/// How long a client may take to send a request body.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads `body`, at most `limit` bytes within [`BODY_READ_TIMEOUT`].
pub async fn read(body: Body, limit: usize, request_id: &str) -> Result<Bytes, Response> {
    match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
            request_id,
        )),
        Ok(Err(e)) => {
            // Over the limit, or the connection failed mid-body.
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            Err(if too_large {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the body exceeds {limit} bytes"),
                    request_id,
                )
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("reading the body failed: {e}"),
                    request_id,
                )
            })
        }
        Ok(Ok(b)) => Ok(b),
    }
}
