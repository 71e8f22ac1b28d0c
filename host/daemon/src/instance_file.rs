//! The instance file `switchyard plugin run --instance` reads: one plugin
//! instance's configuration, egress allowlist, limits and credentials.
//!
//! Credentials have the same schema as in tenant files
//! (`[instance.credentials.*]`). Secrets are references, never literals:
//! `env:NAME` reads an environment variable, `file:PATH` a file relative to
//! the instance file (trailing newline trimmed). A literal in a secret field
//! is an error, so a secret cannot end up in a file that gets committed or
//! pasted.
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
//!     },
//!     "legacy": {
//!       "kind": "basic",
//!       "hosts": ["https://as123.awmdm.com"],
//!       "username": "api-admin",
//!       "password": "file:uem-password.txt",
//!       "extra_header": "aw-tenant-code",
//!       "extra_header_value": "env:UEM_TENANT_CODE"
//!     }
//!   },
//!   "limits": { "deadline": 10000 }
//! }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use switchyard_runtime::{InstanceSpec, Limits};

use crate::config::CredentialConfig;
use crate::config::secrets::{Allowed, Resolver};
use crate::config::spec::resolve_credential;

/// Secret references an instance file may use: no secret store (there is
/// no tenant) and no literals (the file may be committed or pasted).
const ALLOWED: Allowed = Allowed {
    store: false,
    literals: false,
    literal_message: "secrets must be references (`env:NAME` or `file:PATH`), not literal values",
};

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
    credentials: BTreeMap<String, CredentialConfig>,
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
    pub async fn into_spec(self, base: &Path) -> anyhow::Result<InstanceSpec> {
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
        let resolver = Resolver {
            base: base.to_path_buf(),
            store: None,
            allowed: ALLOWED,
        };
        for (name, cred) in &self.credentials {
            spec.credentials.push(
                resolve_credential(name, cred, &resolver, &format!("credentials.{name}")).await?,
            );
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use switchyard_runtime::credentials::CredentialSecret;

    fn parse(json: &str) -> anyhow::Result<InstanceSpec> {
        let file: InstanceFile = serde_json::from_str(json)?;
        block_on(file.into_spec(Path::new(".")))
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
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
        let spec = block_on(file.into_spec(dir.path())).unwrap();
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
