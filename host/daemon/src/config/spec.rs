//! From an instance's configuration to what the runtime needs: secrets
//! resolved, CA files read, limits merged.

use secrecy::SecretString;
use switchyard_runtime::InstanceSpec;
use switchyard_runtime::credentials::{CredentialSecret, CredentialSpec};
use switchyard_store::SecretStore;

use super::check::secret_rules;
use super::schema::{Config, CredentialConfig, TenantConfig, merge_limits};
use super::secrets::{Resolver, SecretRef};

impl Config {
    /// A resolver for `tenant`'s secret references.
    pub fn resolver<'a>(&self, tenant: &'a str, secrets: &'a SecretStore) -> Resolver<'a> {
        Resolver {
            base: self.dir.clone(),
            store: Some((secrets, tenant)),
            allowed: secret_rules(self.mode),
        }
    }

    /// Builds the runtime spec of instance `index` of `tenant`, resolving
    /// its secrets and reading its CA files.
    pub async fn instance_spec(
        &self,
        tenant: &TenantConfig,
        index: usize,
        secrets: &SecretStore,
    ) -> anyhow::Result<InstanceSpec> {
        let inst = tenant.instances[index].get_ref();
        let mut spec = InstanceSpec::new(&tenant.id, inst.id.get_ref());
        spec.config = inst
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .collect();
        spec.egress = inst
            .egress
            .iter()
            .map(|e| e.get_ref().trim().to_owned())
            .collect();
        spec.limits = match &inst.limits {
            Some(over) => merge_limits(&self.limits, over).map_err(anyhow::Error::msg)?,
            None => self.limits,
        };
        for ca in &inst.ca_certs {
            let path = self.dir.join(ca.get_ref());
            spec.ca_certs_pem.push(
                std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("cannot read CA file {}: {e}", path.display()))?,
            );
        }
        let resolver = self.resolver(&tenant.id, secrets);
        let what = |name: &str| {
            format!(
                "{}: {}/{} credentials.{name}",
                tenant.file.display(),
                tenant.id,
                inst.id.get_ref()
            )
        };
        for (name, cred) in &inst.credentials {
            spec.credentials
                .push(resolve_credential(name, cred.get_ref(), &resolver, &what(name)).await?);
        }
        Ok(spec)
    }
}

/// Resolves a credential's secret references; `what` names it in errors.
pub async fn resolve_credential(
    name: &str,
    cred: &CredentialConfig,
    resolver: &Resolver<'_>,
    what: &str,
) -> anyhow::Result<CredentialSpec> {
    // Resolved one by one (the resolver is async); then mapped in order.
    let mut values: Vec<SecretString> = Vec::new();
    for (field, r) in cred.auth.secret_fields() {
        values.push(resolver.resolve(r, &format!("{what}.{field}")).await?);
    }
    let mut values = values.into_iter();
    let secret: CredentialSecret = cred.auth.clone().try_map_secrets(|_, _: SecretRef| {
        values
            .next()
            .ok_or_else(|| anyhow::anyhow!("{what}: secret fields changed while resolving"))
    })?;
    Ok(CredentialSpec {
        name: name.to_owned(),
        hosts: cred.hosts.clone(),
        secret,
    })
}
