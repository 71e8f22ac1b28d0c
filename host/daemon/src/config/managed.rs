//! Tenants managed through the admin API instead of a file.
//!
//! Their text is a tenant file's text, stored in the state backend as
//! numbered versions (`switchyard_store::ConfigVersion`) and checked by the
//! same code as a file. Because a tenant admin writes it, not the operator
//! who owns the machine, some things a file may do are refused:
//!
//! - secrets only as `secret:NAME` from the tenant's own store: `env:` and
//!   `file:` would read the daemon's environment and files, and a literal
//!   would make the secret readable in the configuration;
//! - no `ca_certs` (paths on the daemon's machine);
//! - egress to IP addresses or ranges (the only entries that can reach
//!   loopback, private or cloud-metadata addresses) not covered by the
//!   tenant's `private_egress`;
//! - what only an operator may change ([`operator_only_changes`]): the
//!   tenant's concurrency and `private_egress`, and an instance's limits.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::schema::{Report, TenantFile};
use super::secrets::SecretSource;
use super::{InstanceConfig, TenantConfig};
use crate::problem::Problem;

/// The path problems of API-managed tenant `id` are reported against.
pub fn path_of(id: &str) -> PathBuf {
    PathBuf::from("api").join(format!("{id}.toml"))
}

/// The tenant `path` (a tenant file or [`path_of`]) belongs to.
pub fn tenant_of_path(path: &std::path::Path) -> Option<String> {
    let parent = path.parent()?.file_name()?;
    ((parent == "tenants" || parent == "api") && path.extension()? == "toml")
        .then(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .flatten()
}

/// What an API-managed tenant may not contain, whoever wrote it.
pub(super) fn check_managed(t: &TenantFile, report: &mut Report<'_>) {
    let granted = switchyard_runtime::egress::EgressPolicy::parse(
        &t.private_egress
            .iter()
            .map(|e| e.get_ref().trim())
            .collect::<Vec<_>>(),
    )
    .unwrap_or_else(|_| switchyard_runtime::egress::EgressPolicy::new(Vec::new()));
    for (i, inst) in t.instances.iter().enumerate() {
        let inst = inst.get_ref();
        for (j, e) in inst.egress.iter().enumerate() {
            let entry = e.get_ref().trim();
            let Ok(rule) = entry.parse::<switchyard_runtime::egress::EgressRule>() else {
                continue; // reported by the tenant's own checks
            };
            if is_ip_entry(entry) && !granted.covers(&rule) {
                report.at(
                    &e.span(),
                    format!("instance[{i}].egress[{j}]"),
                    format!(
                        "`{entry}` is an IP address or range, which may reach addresses that \
                         are not public: it must be covered by the tenant's private_egress, \
                         which only an operator sets"
                    ),
                );
            }
        }
        for (j, ca) in inst.ca_certs.iter().enumerate() {
            report.at(
                &ca.span(),
                format!("instance[{i}].ca_certs[{j}]"),
                "a tenant managed through the admin API cannot name files on the daemon's \
                 machine; ask the operator to configure the CA certificate",
            );
        }
        for (field, span, r) in inst.secret_refs() {
            let why = match r.source() {
                SecretSource::Store(_) => continue,
                SecretSource::Env(_) => "`env:` would read the daemon's environment",
                SecretSource::File(_) => "`file:` would read the daemon's files",
                SecretSource::Literal(_) => "a literal would be readable in the configuration",
            };
            report.at(
                &span,
                format!("instance[{i}].{field}"),
                format!(
                    "{why}; set the value as a secret (PUT .../secrets/NAME) and write \
                     `secret:NAME`"
                ),
            );
        }
    }
}

/// Whether egress entry `e` names an IP address or range.
fn is_ip_entry(e: &str) -> bool {
    switchyard_runtime::egress::EgressPolicy::parse(&[e.trim()]).is_ok_and(|p| p.has_ip_rules())
}

/// What only an operator may set, as `(field, value)`, to compare two
/// versions of a tenant.
fn operator_fields(t: Option<&TenantConfig>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(t) = t else {
        return out;
    };
    let mut put = |k: String, v: String| {
        out.insert(k, v);
    };
    if let Some(n) = t.max_concurrent_jobs {
        put("max_concurrent_jobs".into(), n.to_string());
    }
    if let Some(n) = t.max_concurrent_invocations {
        put("max_concurrent_invocations".into(), n.to_string());
    }
    if t.require_signed {
        put("require_signed".into(), "true".into());
    }
    if let Some(list) = &t.trusted_publishers {
        put("trusted_publishers".into(), list.join(", "));
    }
    if !t.private_egress.is_empty() {
        let mut ips = t.private_egress.clone();
        ips.sort_unstable();
        put("private_egress".into(), ips.join(", "));
    }
    for inst in &t.instances {
        let inst: &InstanceConfig = inst.get_ref();
        let id = inst.id.get_ref();
        if let Some(l) = &inst.limits {
            put(format!("instance `{id}` limits"), l.to_string());
        }
    }
    out
}

/// What `new` changes, compared with `old`, that only an operator may
/// change; one problem each.
pub fn operator_only_changes(old: Option<&TenantConfig>, new: &TenantConfig) -> Vec<Problem> {
    let (before, after) = (operator_fields(old), operator_fields(Some(new)));
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| {
            Problem::file(
                new.file.clone(),
                k,
                "only an operator may change this (it sets how much of the daemon the tenant \
                 uses, or lets it reach addresses that are not public)",
            )
        })
        .collect()
}

/// The tenant's text as an admin may read it: any literal secret (only a
/// tenant file in development mode can have one) replaced.
pub fn redacted_text(t: &TenantConfig) -> String {
    let has_literal = t.instances.iter().any(|i| {
        i.get_ref()
            .secret_refs()
            .iter()
            .any(|(_, _, r)| matches!(r.source(), SecretSource::Literal(_)))
    });
    if !has_literal {
        return t.text.clone();
    }
    let Ok(mut doc) = t.text.parse::<toml::Table>() else {
        return String::new();
    };
    let Some(toml::Value::Array(instances)) = doc.get_mut("instance") else {
        return t.text.clone();
    };
    for (inst, parsed) in instances.iter_mut().zip(&t.instances) {
        for (field, _, r) in parsed.get_ref().secret_refs() {
            if !matches!(r.source(), SecretSource::Literal(_)) {
                continue;
            }
            redact_at(inst, &field.split('.').collect::<Vec<_>>());
        }
    }
    toml::to_string(&doc).unwrap_or_default()
}

fn redact_at(v: &mut toml::Value, path: &[&str]) {
    match path.split_first() {
        None if v.is_str() => *v = toml::Value::String("(redacted)".into()),
        None => {}
        Some((head, rest)) => {
            if let Some(next) = v.get_mut(*head) {
                redact_at(next, rest);
            }
        }
    }
}

/// Instance `id`'s table in a tenant's text.
pub fn instance_table(text: &str, id: &str) -> Option<toml::Table> {
    let doc: toml::Table = text.parse().ok()?;
    doc.get("instance")?
        .as_array()?
        .iter()
        .find(|i| i.get("id").and_then(toml::Value::as_str) == Some(id))?
        .as_table()
        .cloned()
}

/// A tenant's text with instance `id` replaced by `table` (added when it
/// is not there), or removed when `table` is None.
pub fn replace_instance(
    text: &str,
    id: &str,
    table: Option<toml::Table>,
) -> Result<String, String> {
    let mut doc: toml::Table = text
        .parse()
        .map_err(|e| format!("the stored configuration does not parse: {e}"))?;
    let list = doc
        .entry("instance")
        .or_insert_with(|| toml::Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or("`instance` is not a list of tables")?;
    let at = list
        .iter()
        .position(|i| i.get("id").and_then(toml::Value::as_str) == Some(id));
    match (at, table) {
        (Some(i), Some(t)) => list[i] = t.into(),
        (None, Some(t)) => list.push(t.into()),
        (Some(i), None) => {
            list.remove(i);
        }
        (None, None) => return Err(format!("there is no instance `{id}`")),
    }
    if list.is_empty() {
        doc.remove("instance");
    }
    toml::to_string(&doc).map_err(|e| e.to_string())
}

/// A tenant file's text from its JSON form (the shape of the TOML file).
pub fn text_from_json(value: &serde_json::Value) -> Result<String, String> {
    if !value.is_object() {
        return Err("`config` must be an object shaped like a tenant file".into());
    }
    let table = toml::Table::try_from(value).map_err(|e| {
        format!("`config` cannot be written as TOML ({e}); null values are not allowed")
    })?;
    toml::to_string(&table).map_err(|e| format!("`config` cannot be written as TOML: {e}"))
}

/// A tenant file's JSON form.
pub fn json_of_text(text: &str) -> serde_json::Value {
    text.parse::<toml::Table>()
        .ok()
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// A unified diff from `old` to `new`, for people.
pub fn diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_tenant() {
        assert_eq!(tenant_of_path(&path_of("acme")).as_deref(), Some("acme"));
        assert_eq!(
            tenant_of_path(std::path::Path::new("tenants/globex.toml")).as_deref(),
            Some("globex")
        );
        assert_eq!(
            tenant_of_path(std::path::Path::new("switchyard.toml")),
            None
        );
    }

    #[test]
    fn ip_entries_are_told_from_names() {
        assert!(is_ip_entry("http://127.0.0.1:8080"));
        assert!(is_ip_entry("https://10.0.0.0/8"));
        assert!(!is_ip_entry("https://api.example.com"));
        assert!(!is_ip_entry("https://*.example.com"));
    }

    #[test]
    fn json_and_toml_round_trip() {
        let json = serde_json::json!({
            "roles": {"ITIL": ["operator"]},
            "instance": [{"id": "e", "plugin": "echo", "config": {"greeting": "hej"}}]
        });
        let text = text_from_json(&json).unwrap();
        assert_eq!(json_of_text(&text), json);
        assert!(text_from_json(&serde_json::json!([1])).is_err());
        let null = text_from_json(&serde_json::json!({"roles": null})).unwrap_err();
        assert!(null.contains("null"), "{null}");
    }

    #[test]
    fn instances_are_replaced_added_and_removed_in_the_text() {
        let text = "[[instance]]\nid = \"a\"\nplugin = \"echo\"\n";
        let mut b = toml::Table::new();
        b.insert("id".into(), "b".into());
        b.insert("plugin".into(), "echo".into());
        let two = replace_instance(text, "b", Some(b)).unwrap();
        assert_eq!(
            instance_table(&two, "b").unwrap()["plugin"].as_str(),
            Some("echo")
        );
        let one = replace_instance(&two, "a", None).unwrap();
        assert!(instance_table(&one, "a").is_none() && instance_table(&one, "b").is_some());
        let none = replace_instance(&one, "b", None).unwrap();
        assert!(!none.contains("instance"), "{none}");
        assert!(
            replace_instance(&none, "b", None)
                .unwrap_err()
                .contains("no instance")
        );
    }

    #[test]
    fn a_diff_shows_what_changed() {
        let d = diff("a\nb\n", "a\nc\n", "v1", "v2");
        assert!(
            d.contains("-b\n") && d.contains("+c\n") && d.contains("--- v1"),
            "{d}"
        );
    }
}
