//! Per-request callback tokens: HMAC-SHA256 over the request id with a
//! per-instance key that only this instance's storage holds. ServiceNow gets
//! the token inside the callback URL; a callback must carry the token of
//! the request it names, so a leaked route URL, or a token taken from
//! another request's URL, cannot decide anything.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use switchyard_sdk::storage::{self, get_json};
use switchyard_sdk::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// 32 random bytes from the WASI random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::internal(format!("no randomness: {e}")))?;
    Ok(b)
}

/// A random (version 4) UUID.
pub fn uuid() -> Result<String> {
    let mut b: [u8; 16] = random_bytes()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

fn key() -> Result<Vec<u8>> {
    if let Some(k) = get_json::<String>("key")? {
        return hex::decode(k).map_err(|_| Error::internal("the stored callback key is corrupt"));
    }
    let fresh: [u8; 32] = random_bytes()?;
    // Two first calls at once: the first to store wins, both use its key.
    let stored =
        storage::compare_and_swap("key", None, Some(&serde_json::to_vec(&hex::encode(fresh))?))?;
    if stored { Ok(fresh.to_vec()) } else { key() }
}

fn mac(k: &[u8], request_id: &str) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(k).expect("HMAC takes any key length");
    m.update(b"app-approval callback\0");
    m.update(request_id.as_bytes());
    m
}

/// The token for `request_id`.
pub fn sign(request_id: &str) -> Result<String> {
    Ok(hex::encode(
        mac(&key()?, request_id).finalize().into_bytes(),
    ))
}

/// Whether `token` is `request_id`'s, compared in constant time.
pub fn verify(request_id: &str, token: &str) -> Result<bool> {
    let Ok(raw) = hex::decode(token) else {
        return Ok(false);
    };
    Ok(mac(&key()?, request_id).verify_slice(&raw).is_ok())
}
