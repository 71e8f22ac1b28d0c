//! Actions' input schemas, enforced by the host: compiled once per plugin
//! version when it loads (a schema that is not valid JSON Schema refuses the
//! plugin), and checked before every call, so that a malformed input never
//! reaches the plugin and its caller learns where it is wrong.
//!
//! ```text
//! schema {"type":"object","required":["name"]}   input {}   →
//!   InputSchema(["at ``: \"name\" is a required property"])
//! ```

use std::collections::HashMap;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::manifest::{Manifest, cut};

/// Problems reported for one input at most: enough to fix it, bounded for
/// the answer.
const MAX_PROBLEMS: usize = 5;

/// Compiled input schemas by action name. Actions that accept any input
/// (`{}` or `true`) have none, and their calls skip the check.
#[derive(Default)]
pub(crate) struct Schemas(HashMap<String, jsonschema::Validator>);

/// Compiles every non-trivial input schema of `manifest`.
pub(crate) fn compile(manifest: &Manifest) -> Result<Schemas, String> {
    let mut out = HashMap::new();
    for action in &manifest.actions {
        let schema = &action.input_schema;
        let trivial = *schema == Value::Bool(true)
            || schema.as_object().is_some_and(serde_json::Map::is_empty);
        if trivial {
            continue;
        }
        let validator = jsonschema::validator_for(schema).map_err(|e| {
            format!(
                "action `{}`: input schema is not a valid JSON Schema: {e}",
                action.name
            )
        })?;
        out.insert(action.name.clone(), validator);
    }
    Ok(Schemas(out))
}

impl Schemas {
    /// Checks `input` against `action`'s schema; the problems found, each
    /// with the JSON pointer of where.
    pub(crate) fn check(&self, action: &str, input: &RawValue) -> Result<(), Vec<String>> {
        let Some(validator) = self.0.get(action) else {
            return Ok(());
        };
        // The runtime has already checked that the input is JSON.
        let value: Value = serde_json::from_str(input.get())
            .map_err(|e| vec![format!("input is not JSON: {e}")])?;
        let problems: Vec<String> = validator
            .iter_errors(&value)
            .take(MAX_PROBLEMS)
            .map(|e| {
                let what = cut(&e.to_string());
                format!("at `{}`: {what}", e.instance_path())
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ActionSpec;
    use crate::manifest::MAX_PROBLEM_CHARS;

    fn manifest(schema: Value) -> Manifest {
        Manifest {
            id: "p".into(),
            version: "1".into(),
            description: String::new(),
            actions: vec![ActionSpec {
                name: "a".into(),
                description: String::new(),
                input_schema: schema,
                required_role: None,
            }],
            webhooks: vec![],
            jobs: vec![],
            config: vec![],
            credentials: vec![],
            egress: vec![],
        }
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn inputs_are_checked_against_the_schema_with_where_and_what() {
        let schemas = compile(&manifest(serde_json::json!({
            "type": "object",
            "required": ["device_id"],
            "properties": {"device_id": {"type": "integer"}, "note": {"type": "string"}}
        })))
        .unwrap();
        assert!(schemas.check("a", &raw(r#"{"device_id": 7}"#)).is_ok());
        let problems = schemas
            .check("a", &raw(r#"{"device_id": "7", "note": 1}"#))
            .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("at `/device_id`: "), "{problems:?}");
        assert!(problems[0].contains("integer"), "{problems:?}");
        assert!(problems[1].starts_with("at `/note`: "), "{problems:?}");
        let missing = schemas.check("a", &raw("{}")).unwrap_err();
        assert!(missing[0].contains("device_id"), "{missing:?}");
        // A huge offending value is not echoed whole.
        let long = format!(r#"{{"device_id": "{}"}}"#, "x".repeat(10_000));
        let problems = schemas.check("a", &raw(&long)).unwrap_err();
        assert!(
            problems[0].chars().count() < MAX_PROBLEM_CHARS + 30,
            "{}",
            problems[0].len()
        );
    }

    #[test]
    fn any_input_passes_a_trivial_schema_and_a_broken_schema_refuses_the_plugin() {
        let schemas = compile(&manifest(serde_json::json!({}))).unwrap();
        assert!(schemas.0.is_empty());
        assert!(schemas.check("a", &raw("[1, 2]")).is_ok());
        let err = compile(&manifest(serde_json::json!({"type": "no-such-type"})))
            .err()
            .unwrap();
        assert!(
            err.contains("action `a`: input schema is not a valid JSON Schema"),
            "{err}"
        );
    }
}
