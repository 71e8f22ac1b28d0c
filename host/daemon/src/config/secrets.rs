//! Secret references as configuration files write them, and resolving them.
//!
//! A secret field holds a reference, never (in production) the value:
//! - `secret:NAME` — the tenant's encrypted secret store (`switchyard secret set`);
//! - `env:VAR` — an environment variable of the daemon;
//! - `file:PATH` — a file (trailing newline trimmed), relative to the
//!   configuration directory or the instance file;
//! - anything else is a literal, accepted only where the caller allows it
//!   (development mode).
//!
//! Errors name the field and the reference, never a value.

use std::path::PathBuf;

use anyhow::{Context, bail};
use secrecy::SecretString;
use serde::Deserialize;
use switchyard_store::SecretStore;

/// A secret field's text.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretRef(String);

// Manual: the text may be a literal secret in development mode.
impl std::fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.source() {
            SecretSource::Literal(_) => f.write_str("SecretRef([literal])"),
            _ => write!(f, "SecretRef({:?})", self.0),
        }
    }
}

/// What a reference points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource<'a> {
    /// `secret:NAME`.
    Store(&'a str),
    /// `env:VAR`.
    Env(&'a str),
    /// `file:PATH`.
    File(&'a str),
    /// A literal value.
    Literal(&'a str),
}

impl SecretRef {
    /// Wraps a reference's text.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// What it points at.
    pub fn source(&self) -> SecretSource<'_> {
        let t = self.0.as_str();
        if let Some(n) = t.strip_prefix("secret:") {
            SecretSource::Store(n)
        } else if let Some(v) = t.strip_prefix("env:") {
            SecretSource::Env(v)
        } else if let Some(p) = t.strip_prefix("file:") {
            SecretSource::File(p)
        } else {
            SecretSource::Literal(t)
        }
    }

    /// Why this reference is not acceptable where `allowed` applies, if it
    /// is not (checked before anything is resolved).
    pub fn problem(&self, allowed: &Allowed) -> Option<String> {
        match self.source() {
            SecretSource::Store(n) | SecretSource::Env(n) | SecretSource::File(n)
                if n.is_empty() =>
            {
                Some("the reference names nothing".into())
            }
            SecretSource::Literal(_) if !allowed.literals => Some(allowed.literal_message.into()),
            SecretSource::Store(_) if !allowed.store => Some(
                "`secret:` references need a tenant's secret store; use `env:VAR` or `file:PATH`"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// Which kinds of reference a file may use.
#[derive(Debug, Clone, Copy)]
pub struct Allowed {
    /// `secret:NAME`.
    pub store: bool,
    /// Literal values.
    pub literals: bool,
    /// What to say about a literal where none is allowed.
    pub literal_message: &'static str,
}

/// Resolves references: `secret:` through a tenant's store, `file:`
/// relative to `base`.
pub struct Resolver<'a> {
    /// Directory `file:` paths are relative to.
    pub base: PathBuf,
    /// The tenant's secret store, for `secret:` references.
    pub store: Option<(&'a SecretStore, &'a str)>,
    /// What is allowed.
    pub allowed: Allowed,
}

impl Resolver<'_> {
    /// Resolves `r`; `what` names the field in errors.
    pub async fn resolve(&self, r: &SecretRef, what: &str) -> anyhow::Result<SecretString> {
        if let Some(problem) = r.problem(&self.allowed) {
            bail!("{what}: {problem}");
        }
        match r.source() {
            SecretSource::Store(name) => {
                let Some((store, tenant)) = self.store else {
                    bail!("{what}: `secret:` references need a tenant's secret store");
                };
                store
                    .get(tenant, name)
                    .await
                    .with_context(|| format!("{what}: reading secret `{name}`"))?
                    .with_context(|| format!("{what}: secret `{name}` is not in the secret store"))
            }
            SecretSource::Env(var) => std::env::var(var)
                .map(SecretString::from)
                .map_err(|_| anyhow::anyhow!("{what}: environment variable `{var}` is not set")),
            SecretSource::File(path) => {
                let path = self.base.join(path);
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("{what}: cannot read {}", path.display()))?;
                Ok(SecretString::from(
                    text.trim_end_matches(['\r', '\n']).to_owned(),
                ))
            }
            SecretSource::Literal(v) => Ok(SecretString::from(v.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: Allowed = Allowed {
        store: false,
        literals: false,
        literal_message: "literals are refused here",
    };

    #[test]
    fn references_are_classified_and_checked() {
        assert_eq!(
            SecretRef::new("secret:a").source(),
            SecretSource::Store("a")
        );
        assert_eq!(SecretRef::new("env:A").source(), SecretSource::Env("A"));
        assert_eq!(SecretRef::new("file:a").source(), SecretSource::File("a"));
        assert_eq!(
            SecretRef::new("hunter2").problem(&STRICT).as_deref(),
            Some("literals are refused here")
        );
        assert!(
            SecretRef::new("secret:x")
                .problem(&STRICT)
                .unwrap()
                .contains("secret store")
        );
        assert!(
            SecretRef::new("env:")
                .problem(&STRICT)
                .unwrap()
                .contains("names nothing")
        );
        // Debug never prints a literal.
        assert!(!format!("{:?}", SecretRef::new("hunter2")).contains("hunter2"));
    }
}
