//! A queued webhook delivery as the job queue stores it, and back.

use base64::Engine;
use serde::{Deserialize, Serialize};
use switchyard_runtime::{WebhookHeader, WebhookRequest};

/// A delivery, as stored in the job's payload (JSON, body in base64).
#[derive(Serialize, Deserialize)]
pub struct StoredDelivery {
    method: String,
    query: String,
    headers: Vec<(String, String)>,
    body_b64: String,
}

impl StoredDelivery {
    /// The stored form of a verified (and stripped) delivery.
    pub fn new(method: String, query: String, headers: Vec<(String, String)>, body: &[u8]) -> Self {
        Self {
            method,
            query,
            headers,
            body_b64: base64::engine::general_purpose::STANDARD.encode(body),
        }
    }

    /// The payload bytes.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serialising a delivery cannot fail")
    }

    /// Reads a payload back into the request the plugin gets.
    pub fn decode(payload: &[u8]) -> Result<WebhookRequest, String> {
        let d: Self = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        Ok(WebhookRequest {
            method: d.method,
            query: d.query,
            headers: d
                .headers
                .into_iter()
                .map(|(name, value)| WebhookHeader { name, value })
                .collect(),
            body: base64::engine::general_purpose::STANDARD
                .decode(d.body_b64)
                .map_err(|e| format!("stored body is not base64: {e}"))?,
        })
    }
}
