//! The instance file `switchyard plugin run --instance` reads: one plugin
//! instance's configuration, egress allowlist, limits and credentials.
//!
//! Secrets are references, never literals: `env:NAME` reads an environment
//! variable, `file:PATH` a file (trailing newline trimmed). A literal in a
//! secret field is an error, so a secret cannot end up in a file that gets
//! committed or pasted.
//!
//! ```json
//! {
//!   "tenant": "dev",
//!   "instance": "uem-1",
//!   "config": { "base_url": "https://as123.awmdm.com" },
//!   "egress": ["https://as123.awmdm.com", "https://na.uemauth.workspaceone.com"],
//!   "credentials": {
//!     "upstream": {
//!       "kind": "oauth2-client-credentials",
//!       "hosts": ["https://as123.awmdm.com"],
//!       "token_url": "https://na.uemauth.workspaceone.com/connect/token",
//!       "client_id": "my-client",
//!       "client_secret": "env:UEM_CLIENT_SECRET"
//!     }
//!   },
//!   "limits": { "deadline": 10000 }
//! }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use secrecy::SecretString;
use serde::Deserialize;
use switchyard_runtime::credentials::{ClientAuth, CredentialSecret, CredentialSpec, SecretHeader};
use switchyard_runtime::{InstanceSpec, Limits};

/// A reference to a secret: `env:NAME` or `file:PATH`.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct SecretRef(String);

impl SecretRef {
    /// Resolves the reference. `what` names the field for error messages;
    /// the value itself never appears in one.
    pub fn resolve(&self, what: &str, base: &Path) -> anyhow::Result<SecretString> {
        if let Some(var) = self.0.strip_prefix("env:") {
            let v = std::env::var(var)
                .with_context(|| format!("{what}: environment variable `{var}` is not set"))?;
            return Ok(SecretString::from(v));
        }
        if let Some(path) = self.0.strip_prefix("file:") {
            let path = base.join(path);
            let v = std::fs::read_to_string(&path)
                .with_context(|| format!("{what}: cannot read {}", path.display()))?;
            return Ok(SecretString::from(
                v.trim_end_matches(['\r', '\n']).to_owned(),
            ));
        }
        bail!("{what}: secrets must be references (`env:NAME` or `file:PATH`), not literal values")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderRef {
    name: String,
    value: SecretRef,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum CredentialEntry {
    Oauth2ClientCredentials {
        hosts: Vec<String>,
        token_url: String,
        client_id: String,
        client_secret: SecretRef,
        #[serde(default)]
        scope: Option<String>,
        #[serde(default)]
        client_auth: ClientAuth,
        #[serde(default)]
        extra_header: Option<HeaderRef>,
    },
    Basic {
        hosts: Vec<String>,
        username: String,
        password: SecretRef,
        #[serde(default)]
        extra_header: Option<HeaderRef>,
    },
    ApiKey {
        hosts: Vec<String>,
        header: String,
        key: SecretRef,
    },
    Bearer {
        hosts: Vec<String>,
        token: SecretRef,
    },
}

/// The file's contents.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceFile {
    #[serde(default = "default_tenant")]
    tenant: String,
    #[serde(default = "default_instance")]
    instance: String,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    egress: Vec<String>,
    /// Paths of extra CA certificates (PEM), relative to the file.
    #[serde(default)]
    ca_certs: Vec<PathBuf>,
    #[serde(default)]
    credentials: BTreeMap<String, CredentialEntry>,
    #[serde(default)]
    limits: Limits,
}

fn default_tenant() -> String {
    "dev".into()
}

fn default_instance() -> String {
    "dev".into()
}

impl InstanceFile {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> anyhow::Result<(Self, PathBuf)> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read instance file {}", path.display()))?;
        let file: Self = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok((file, base))
    }

    /// Resolves secrets and CA files into a runtime spec.
    pub fn into_spec(self, base: &Path) -> anyhow::Result<InstanceSpec> {
        let mut spec = InstanceSpec::new(self.tenant, self.instance);
        spec.config = self.config;
        spec.egress = self.egress;
        spec.limits = self.limits;
        for ca in &self.ca_certs {
            let path = base.join(ca);
            spec.ca_certs_pem.push(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read CA certificate {}", path.display()))?,
            );
        }
        for (name, entry) in self.credentials {
            let field = |f: &str| format!("credentials.{name}.{f}");
            let header = |h: Option<HeaderRef>| -> anyhow::Result<Option<SecretHeader>> {
                h.map(|h| {
                    Ok(SecretHeader {
                        value: h.value.resolve(&field("extra_header.value"), base)?,
                        name: h.name,
                    })
                })
                .transpose()
            };
            let (hosts, secret) = match entry {
                CredentialEntry::Oauth2ClientCredentials {
                    hosts,
                    token_url,
                    client_id,
                    client_secret,
                    scope,
                    client_auth,
                    extra_header,
                } => (
                    hosts,
                    CredentialSecret::OAuth2 {
                        token_url,
                        client_id,
                        client_secret: client_secret.resolve(&field("client_secret"), base)?,
                        scope,
                        client_auth,
                        extra_header: header(extra_header)?,
                    },
                ),
                CredentialEntry::Basic {
                    hosts,
                    username,
                    password,
                    extra_header,
                } => (
                    hosts,
                    CredentialSecret::Basic {
                        username,
                        password: password.resolve(&field("password"), base)?,
                        extra_header: header(extra_header)?,
                    },
                ),
                CredentialEntry::ApiKey { hosts, header, key } => (
                    hosts,
                    CredentialSecret::ApiKey {
                        header,
                        key: key.resolve(&field("key"), base)?,
                    },
                ),
                CredentialEntry::Bearer { hosts, token } => (
                    hosts,
                    CredentialSecret::Bearer {
                        token: token.resolve(&field("token"), base)?,
                    },
                ),
            };
            spec.credentials.push(CredentialSpec {
                name,
                hosts,
                secret,
            });
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn parse(json: &str) -> anyhow::Result<InstanceSpec> {
        let file: InstanceFile = serde_json::from_str(json)?;
        file.into_spec(Path::new("."))
    }

    #[test]
    fn literal_secrets_are_refused_without_echoing_them() {
        let err = parse(
            r#"{"credentials":{"u":{"kind":"bearer","hosts":["https://a.example"],"token":"hunter2"}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("credentials.u.token"), "{err}");
        assert!(err.contains("references"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn env_and_file_references_resolve() {
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("SWITCHYARD_TEST_TOKEN", "tok") };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "pass\n").unwrap();
        let file: InstanceFile = serde_json::from_str(
            r#"{"tenant":"t","credentials":{
                "a":{"kind":"bearer","hosts":["https://a.example"],"token":"env:SWITCHYARD_TEST_TOKEN"},
                "b":{"kind":"basic","hosts":["https://b.example"],"username":"u","password":"file:pw"}}}"#,
        )
        .unwrap();
        let spec = file.into_spec(dir.path()).unwrap();
        assert_eq!(spec.tenant, "t");
        let secrets: Vec<String> = spec
            .credentials
            .iter()
            .map(|c| match &c.secret {
                CredentialSecret::Bearer { token } => token.expose_secret().to_owned(),
                CredentialSecret::Basic { password, .. } => password.expose_secret().to_owned(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(secrets, ["tok", "pass"]);
        // Debug output (e.g. in a panic or a log) never shows them.
        let debug = format!("{spec:?}");
        assert!(debug.contains("REDACTED"), "{debug}");
        assert!(
            !debug.contains("pass\"") && !debug.contains("\"tok\""),
            "{debug}"
        );
    }

    #[test]
    fn unknown_fields_and_missing_env_are_reported() {
        let err = parse(r#"{"egres":[]}"#).unwrap_err().to_string();
        assert!(err.contains("unknown field `egres`"), "{err}");
        let err = parse(
            r#"{"credentials":{"u":{"kind":"bearer","hosts":[],"token":"env:SWITCHYARD_NOT_SET_X"}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("SWITCHYARD_NOT_SET_X") && err.contains("not set"),
            "{err}"
        );
    }
}
