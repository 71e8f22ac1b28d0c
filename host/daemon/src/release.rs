//! Signed plugin releases: a publisher's Ed25519 signature over what a
//! component is (plugin id, version, WIT world) and its exact bytes
//! (SHA-256), checked before the daemon runs it.
//!
//! A release is the component `X.wasm` plus `X.wasm.sig`, a small JSON
//! document:
//!
//! ```json
//! { "plugin": "acme-notes", "version": "1.2.0",
//!   "world": "switchyard:plugin/plugin@0.1.5",
//!   "sha256": "…64 hex…", "key": "ed25519:…base64…", "signature": "…base64…" }
//! ```
//!
//! The signature is over [`Release::message`]: the four fields as lines
//! after a fixed header, so that nothing depends on how JSON is written
//! and a signature for anything else (another format, another purpose)
//! can never pass as one. Verification is strict (`verify_strict`: no
//! small-order keys, no malleable signatures).
//!
//! ```
//! use switchyard::release::{KeyPair, Release};
//! let keys = KeyPair::generate();
//! let release = Release {
//!     plugin: "acme-notes".into(),
//!     version: "1.2.0".into(),
//!     world: "switchyard:plugin/plugin@0.1.5".into(),
//!     sha256: switchyard::release::sha256_hex(b"\0asm..."),
//! };
//! let signed = keys.sign(release);
//! let publishers = [("acme".to_owned(), keys.public())].into_iter().collect();
//! assert_eq!(signed.verify(b"\0asm...", &publishers).unwrap(), "acme");
//! assert!(signed.verify(b"\0asm!!!", &publishers).unwrap_err().contains("SHA-256"));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The first line of every signed message: the format and its purpose.
const DOMAIN: &str = "switchyard plugin release v1";

/// The prefix of a key in text form.
const KEY_PREFIX: &str = "ed25519:";

/// The first line of a signing key file.
const SECRET_HEADER: &str = "switchyard signing key (keep private)";

/// The signature file of a component: `X.wasm` → `X.wasm.sig`.
pub fn signature_path(component: &Path) -> PathBuf {
    let mut p = component.as_os_str().to_owned();
    p.push(".sig");
    PathBuf::from(p)
}

/// SHA-256 in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What a release says the component is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Plugin id, as its manifest declares it.
    pub plugin: String,
    /// Version, as its manifest declares it.
    pub version: String,
    /// The WIT world it targets (see `Plugin::world`).
    pub world: String,
    /// SHA-256 of the component's bytes, lowercase hex.
    pub sha256: String,
}

impl Release {
    /// The bytes that are signed.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "{DOMAIN}\nplugin {}\nversion {}\nworld {}\nsha256 {}\n",
            self.plugin, self.version, self.world, self.sha256
        )
        .into_bytes()
    }

    /// Refuses fields that could make two releases sign the same message.
    fn check_fields(&self) -> Result<(), String> {
        for (name, v) in [
            ("plugin", &self.plugin),
            ("version", &self.version),
            ("world", &self.world),
        ] {
            if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("`{name}` must be one word, got {v:?}"));
            }
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "`sha256` must be 64 hex digits, got {:?}",
                self.sha256
            ));
        }
        Ok(())
    }
}

/// A publisher's public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses `ed25519:<base64 of 32 bytes>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let b64 = text.trim().strip_prefix(KEY_PREFIX).ok_or_else(|| {
            format!("a public key is `{KEY_PREFIX}<base64>` (from `switchyard plugin keygen`)")
        })?;
        let bytes: [u8; 32] = B64
            .decode(b64)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| "a public key is 32 bytes in base64".to_owned())?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| "not a valid Ed25519 public key".to_owned())?;
        if key.is_weak() {
            return Err("a weak (small-order) Ed25519 key is not accepted".into());
        }
        Ok(Self(key))
    }

    /// A short name for logs and messages: the first 16 hex digits of the
    /// key's SHA-256.
    pub fn fingerprint(&self) -> String {
        sha256_hex(self.0.as_bytes())[..16].to_owned()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{KEY_PREFIX}{}", B64.encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// Trusted publishers: name → key (`[trust.publishers]`).
pub type Publishers = BTreeMap<String, PublicKey>;

/// The operator's `[trust]`: the publishers whose signatures count, and
/// whether every tenant requires them.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Every tenant runs only signed (or bundled) plugins.
    pub require_signed: bool,
    /// Trusted publishers by name.
    pub publishers: Publishers,
}

/// A signing key (its secret half never leaves this struct but to its
/// file).
pub struct KeyPair(SigningKey);

impl KeyPair {
    /// A new key from the operating system's random source.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand_core::OsRng))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `release`.
    pub fn sign(&self, release: Release) -> SignedRelease {
        let signature = self.0.sign(&release.message());
        SignedRelease {
            release,
            key: self.public().to_string(),
            signature: B64.encode(signature.to_bytes()),
        }
    }

    /// Writes the key to `path` (readable by this user only), refusing to
    /// replace a file.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        use std::io::Write;
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
        let mut f = open
            .open(path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        writeln!(
            f,
            "{SECRET_HEADER}\n{KEY_PREFIX}{}",
            B64.encode(self.0.to_bytes())
        )
        .map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// Reads a key file written by [`KeyPair::write`].
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading the signing key {}: {e}", path.display()))?;
        let mut lines = text.lines();
        let bytes: Option<[u8; 32]> = (lines.next() == Some(SECRET_HEADER))
            .then(|| lines.next())
            .flatten()
            .and_then(|l| l.trim().strip_prefix(KEY_PREFIX))
            .and_then(|b| B64.decode(b).ok())
            .and_then(|b| b.try_into().ok());
        // The file's content is secret: say what is wrong, never echo it.
        bytes
            .map(|b| Self(SigningKey::from_bytes(&b)))
            .ok_or_else(|| {
                format!(
                    "{} is not a signing key written by `switchyard plugin keygen`",
                    path.display()
                )
            })
    }
}

/// The fields of a signature file.
const FIELDS: [&str; 6] = ["plugin", "version", "world", "sha256", "key", "signature"];

/// A release with its publisher's signature: the content of `X.wasm.sig`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedRelease {
    /// What is signed.
    #[serde(flatten)]
    pub release: Release,
    /// The publisher's public key, `ed25519:<base64>`.
    pub key: String,
    /// The signature over [`Release::message`], base64.
    pub signature: String,
}

impl SignedRelease {
    /// Parses a signature file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let not_one =
            |e: String| format!("not a release signature (from `switchyard plugin sign`): {e}");
        // Every field, and nothing else: a field added by hand (an expiry,
        // a scope) would look enforced and is not signed. (Serde's
        // `deny_unknown_fields` does not work with `flatten`.)
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| not_one(e.to_string()))?;
        if let Some(extra) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(not_one(format!(
                "unknown field `{extra}` (expected {})",
                FIELDS.join(", ")
            )));
        }
        let s: Self = serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| not_one(e.to_string()))?;
        s.release.check_fields()?;
        Ok(s)
    }

    /// Reads `path`.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The JSON written to a signature file.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a release serializes") + "\n"
    }

    /// Checks that `component` is the signed one and that the signature is
    /// good and made by a trusted publisher; returns that publisher's
    /// name, or the reason for refusing.
    pub fn verify(&self, component: &[u8], publishers: &Publishers) -> Result<String, String> {
        let actual = sha256_hex(component);
        if actual != self.release.sha256 {
            return Err(format!(
                "the component's SHA-256 is {actual}, but the release was signed for {}: the \
                 file was changed after it was signed",
                self.release.sha256
            ));
        }
        let key = PublicKey::parse(&self.key).map_err(|e| format!("`key`: {e}"))?;
        let signature = B64
            .decode(&self.signature)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or_else(|| "`signature` is not an Ed25519 signature in base64".to_owned())?;
        key.0
            .verify_strict(&self.release.message(), &signature)
            .map_err(|_| {
                format!(
                    "the signature does not verify with key {}: the release (plugin, version, \
                     world or sha256) was changed after it was signed",
                    key.fingerprint()
                )
            })?;
        publishers
            .iter()
            .find(|(_, k)| **k == key)
            .map(|(name, _)| name.clone())
            .ok_or_else(|| {
                format!(
                    "signed by key {} ({key}), which is not a trusted publisher key: add it \
                     under [trust.publishers] in switchyard.toml if you trust its owner",
                    key.fingerprint()
                )
            })
    }

    /// Checks that the component is what the release says (its manifest's
    /// id and version, the world it targets).
    pub fn matches(&self, plugin: &str, version: &str, world: &str) -> Result<(), String> {
        let r = &self.release;
        for (what, signed, actual) in [
            ("plugin id", &r.plugin, plugin),
            ("version", &r.version, version),
            ("world", &r.world, world),
        ] {
            if signed != actual {
                return Err(format!(
                    "the release is signed for {what} `{signed}`, but the component declares \
                     `{actual}`"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(bytes: &[u8]) -> Release {
        Release {
            plugin: "notes".into(),
            version: "1.0.0".into(),
            world: "switchyard:plugin/plugin@0.1.5".into(),
            sha256: sha256_hex(bytes),
        }
    }

    #[test]
    fn a_signature_verifies_and_names_the_publisher() {
        let k = KeyPair::generate();
        let signed = k.sign(release(b"component"));
        let trusted: Publishers = [("acme".to_owned(), k.public())].into();
        let back = SignedRelease::parse(&signed.to_json()).unwrap();
        assert_eq!(back.verify(b"component", &trusted).unwrap(), "acme");
        back.matches("notes", "1.0.0", "switchyard:plugin/plugin@0.1.5")
            .unwrap();
    }

    #[test]
    fn each_refusal_names_its_reason() {
        let k = KeyPair::generate();
        let trusted: Publishers = [("acme".to_owned(), k.public())].into();
        let signed = k.sign(release(b"component"));
        // A tampered component.
        let e = signed.verify(b"c0mponent", &trusted).unwrap_err();
        assert!(
            e.contains("changed after it was signed") && e.contains("SHA-256"),
            "{e}"
        );
        // A manifest changed after signing (another version, same digest).
        let mut forged = signed.clone();
        forged.release.version = "9.9.9".into();
        let e = forged.verify(b"component", &trusted).unwrap_err();
        assert!(e.contains("signature does not verify"), "{e}");
        // A signature over another digest, moved onto this component.
        let other = k.sign(release(b"other"));
        let mut moved = signed.clone();
        moved.signature = other.signature;
        let e = moved.verify(b"component", &trusted).unwrap_err();
        assert!(e.contains("signature does not verify"), "{e}");
        // A good signature by a key nobody trusts.
        let stranger = KeyPair::generate().sign(release(b"component"));
        let e = stranger.verify(b"component", &trusted).unwrap_err();
        assert!(e.contains("not a trusted publisher key"), "{e}");
        // The component is not what the release says.
        let e = signed
            .matches("notes", "1.0.1", "switchyard:plugin/plugin@0.1.5")
            .unwrap_err();
        assert!(
            e.contains("version `1.0.0`") && e.contains("`1.0.1`"),
            "{e}"
        );
        let e = signed
            .matches("other", "1.0.0", "switchyard:plugin/plugin@0.1.5")
            .unwrap_err();
        assert!(e.contains("plugin id"), "{e}");
    }

    #[test]
    fn fields_that_would_blur_the_message_are_refused() {
        let k = KeyPair::generate();
        let mut r = release(b"x");
        r.version = "1.0.0\nworld evil".into();
        let e = SignedRelease::parse(&k.sign(r).to_json()).unwrap_err();
        assert!(e.contains("`version` must be one word"), "{e}");
        let e = SignedRelease::parse("{\"plugin\":\"a\"}").unwrap_err();
        assert!(e.contains("not a release signature"), "{e}");
        let mut extra: serde_json::Value =
            serde_json::from_str(&k.sign(release(b"x")).to_json()).unwrap();
        extra["expires"] = "2027-01-01".into();
        let e = SignedRelease::parse(&extra.to_string()).unwrap_err();
        assert!(e.contains("unknown field `expires`"), "{e}");
    }

    #[test]
    fn keys_round_trip_through_their_files_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acme.key");
        let k = KeyPair::generate();
        k.write(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(k.write(&path).unwrap_err().contains("creating"));
        let back = KeyPair::read(&path).unwrap();
        assert_eq!(back.public(), k.public());
        assert_eq!(
            PublicKey::parse(&k.public().to_string()).unwrap(),
            k.public()
        );
        assert!(
            PublicKey::parse("ed25519:AAAA")
                .unwrap_err()
                .contains("32 bytes")
        );
        // A weak key (the identity point) is refused.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let e = PublicKey::parse(&format!("ed25519:{}", B64.encode(identity))).unwrap_err();
        assert!(e.contains("weak"), "{e}");
        std::fs::write(&path, "garbage").unwrap();
        let e = KeyPair::read(&path).err().unwrap();
        assert!(
            e.contains("is not a signing key") && !e.contains("garbage"),
            "{e}"
        );
    }
}
