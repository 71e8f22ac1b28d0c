//! The OpenAPI 3.1 document of the daemon's HTTP API, served at
//! `GET /openapi.json`. Paths are the constants the router uses, and a test
//! checks that every routed path is documented.

use serde_json::{Value, json};

/// `POST`: run an action.
pub const ACTION: &str = "/v1/tenants/{tenant}/instances/{instance}/actions/{action}";
/// `POST`: pause an instance.
pub const PAUSE: &str = "/v1/tenants/{tenant}/instances/{instance}/pause";
/// `POST`: resume an instance.
pub const RESUME: &str = "/v1/tenants/{tenant}/instances/{instance}/resume";
/// `GET`: an instance's status.
pub const STATUS: &str = "/v1/tenants/{tenant}/instances/{instance}/status";
/// `POST`: run a job now.
pub const RUN_JOB: &str = "/v1/tenants/{tenant}/instances/{instance}/jobs/{job}/run";
/// `GET`: the tenant's audit log.
pub const AUDIT: &str = "/v1/tenants/{tenant}/audit";
/// Any method: a webhook delivery.
pub const HOOK: &str = "/hooks/{tenant}/{instance}/{route}";
/// `POST`: reload the configuration (operator token).
pub const RELOAD: &str = "/v1/admin/reload";
/// `GET`: Prometheus metrics.
pub const METRICS: &str = "/metrics";
/// `GET`: liveness.
pub const HEALTHZ: &str = "/healthz";
/// `GET`: readiness.
pub const READYZ: &str = "/readyz";
/// `GET`: this document.
pub const OPENAPI: &str = "/openapi.json";

fn param(name: &str, what: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": what, "schema": { "type": "string" } })
}

fn errors(codes: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for code in codes {
        out.insert(
            (*code).into(),
            json!({ "$ref": "#/components/responses/Error" }),
        );
    }
    Value::Object(out)
}

/// The document.
pub fn document() -> Value {
    let tenant = param("tenant", "Tenant id");
    let instance = param("instance", "Plugin instance id");
    let auth = json!([{ "bearer": [] }]);
    let ok_json = |desc: &str| json!({ "description": desc, "content": { "application/json": { "schema": { "type": "object" } } } });
    let mut action_responses = errors(&[
        "400", "401", "403", "404", "409", "413", "422", "500", "502", "503", "504",
    ]);
    action_responses["200"] = json!({
        "description": "The plugin's output",
        "content": { "application/json": { "schema": {
            "type": "object", "required": ["request_id", "output"],
            "properties": { "request_id": { "type": "string" }, "output": {} }
        } } }
    });
    let mut admin_responses = errors(&["401", "403", "404", "503"]);
    admin_responses["200"] = ok_json("Done");
    let mut run_responses = errors(&["401", "403", "404", "503"]);
    run_responses["202"] = ok_json("Queued; `job_id` names it");
    let mut status_responses = errors(&["401", "403", "404", "503"]);
    status_responses["200"] = ok_json(
        "Plugin, paused, schedules with run counts, queue counts, running jobs, runs and errors per action/webhook/job, latest failure",
    );
    let mut audit_responses = errors(&["400", "401", "403", "503"]);
    audit_responses["200"] = ok_json("`entries`, newest first");
    let mut hook_responses = errors(&["400", "401", "403", "404", "413", "429", "503"]);
    hook_responses["200"] = json!({ "description": "Handled synchronously (the plugin's answer), \
        stored in the durable queue (`queued: true`, `job_id` names it), or a duplicate" });
    let text = |desc: &str| json!({ "200": { "description": desc, "content": { "text/plain": { "schema": { "type": "string" } } } } });

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Switchyard",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Multi-tenant WebAssembly plugin host for IT-service-management integrations. \
                            Tenant API tokens (`switchyard token create`) authenticate /v1 requests; \
                            webhooks are verified per route as the tenant file configures."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object", "required": ["request_id", "error"],
                    "properties": {
                        "request_id": { "type": "string" },
                        "error": { "type": "object", "required": ["code", "message"], "properties": {
                            "code": { "type": "string", "examples": ["forbidden", "not_found", "deadline_exceeded"] },
                            "message": { "type": "string" }
                        } }
                    }
                },
                "Actor": {
                    "type": "object", "required": ["id"],
                    "properties": {
                        "id": { "type": "string" },
                        "email": { "type": ["string", "null"] },
                        "roles": { "type": "array", "items": { "type": "string" },
                                   "description": "Tenant roles; mapped to plugin roles by the tenant's [roles] table" }
                    }
                }
            },
            "responses": {
                "Error": { "description": "An error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
            }
        },
        "paths": {
            ACTION: { "post": {
                "summary": "Run an action of a plugin instance",
                "security": auth,
                "parameters": [tenant, instance, param("action", "Action name from the plugin's manifest")],
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["actor"],
                    "properties": { "input": { "description": "The action's input" }, "actor": { "$ref": "#/components/schemas/Actor" } }
                } } } },
                "responses": action_responses
            } },
            PAUSE: { "post": { "summary": "Pause an instance (persisted)", "security": auth, "parameters": [tenant, instance], "responses": admin_responses } },
            RESUME: { "post": { "summary": "Resume an instance", "security": auth, "parameters": [tenant, instance], "responses": admin_responses } },
            STATUS: { "get": { "summary": "Status of an instance", "security": auth, "parameters": [tenant, instance], "responses": status_responses } },
            RUN_JOB: { "post": { "summary": "Queue a run of a job now", "security": auth,
                                 "parameters": [tenant, instance, param("job", "Job name from the plugin's manifest")], "responses": run_responses } },
            AUDIT: { "get": { "summary": "The tenant's audit log", "security": auth,
                              "parameters": [tenant, { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 10000, "default": 100 } }],
                              "responses": audit_responses } },
            HOOK: { "post": { "summary": "Deliver a webhook (verified by token, HMAC and/or source address)",
                              "description": "Each route is verified as the tenant configures it. Token: the \
                                  `x-switchyard-token` header (or the route's `token_header`), or the query \
                                  parameter / form field the route names in `token_param`. Signature \
                                  `hmac-sha256`: hex HMAC-SHA256 of the body in `x-switchyard-signature` \
                                  (`sha256=` prefix optional). Signature `standard-webhooks`: `webhook-id`, \
                                  `webhook-timestamp` and `webhook-signature` (`v1,<base64>` of \
                                  `id.timestamp.body`), 300 s tolerance. A 401 names what was expected. \
                                  Duplicates (by the route's event id) answer 200 with `duplicate: true`; \
                                  400 `invalid_delivery` when the event id is missing.",
                              "parameters": [tenant, instance, param("route", "Webhook route from the plugin's manifest")],
                              "requestBody": { "content": { "*/*": {} } },
                              "responses": hook_responses } },
            RELOAD: { "post": { "summary": "Reload the configuration directory; a bad one is refused and the running one stays (operator token)",
                                "security": auth,
                                "responses": { "200": ok_json("`reloaded`: what now runs"), "401": { "$ref": "#/components/responses/Error" },
                                               "403": { "$ref": "#/components/responses/Error" },
                                               "422": { "$ref": "#/components/responses/Error" } } } },
            METRICS: { "get": { "summary": "Prometheus metrics", "responses": text("Text exposition format") } },
            HEALTHZ: { "get": { "summary": "Liveness", "responses": text("ok") } },
            READYZ: { "get": { "summary": "Readiness: 503 with the reason while shutting down or while the state database does not answer", "responses": text("ready") } },
            OPENAPI: { "get": { "summary": "This document", "responses": { "200": ok_json("OpenAPI 3.1") } } }
        }
    })
}

/// `doc` with the installed plugins' actions: under `x-plugins`, each
/// version's actions with their input schema and required role, and the
/// schemas again under `components.schemas` (`<plugin>@<version>.<action>`)
/// for tools that read only those. The host enforces these schemas.
pub fn with_plugins(mut doc: Value, catalog: &crate::plugins::Catalog) -> Value {
    let mut plugins = serde_json::Map::new();
    for entry in catalog.entries() {
        let m = entry.plugin.manifest();
        let key = format!("{}@{}", m.id, m.version);
        let actions: serde_json::Map<String, Value> = m
            .actions
            .iter()
            .map(|a| {
                doc["components"]["schemas"][format!("{key}.{}", a.name)] = a.input_schema.clone();
                let described = json!({
                    "description": a.description,
                    "required_role": a.required_role,
                    "input_schema": a.input_schema,
                });
                (a.name.clone(), described)
            })
            .collect();
        plugins.insert(
            key,
            json!({ "id": m.id, "version": m.version, "description": m.description, "actions": actions }),
        );
    }
    doc["x-plugins"] = Value::Object(plugins);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_parameters() {
        let doc = document();
        for path in [
            ACTION, PAUSE, RESUME, STATUS, RUN_JOB, AUDIT, RELOAD, HOOK, METRICS, HEALTHZ, READYZ,
            OPENAPI,
        ] {
            let item = &doc["paths"][path];
            assert!(item.is_object(), "{path} is not documented");
            // Every {param} in the path is declared on each operation.
            let wanted: Vec<&str> = path
                .split('{')
                .skip(1)
                .filter_map(|p| p.split('}').next())
                .collect();
            for (method, op) in item.as_object().unwrap() {
                let declared: Vec<&str> = op["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter(|p| p["in"] == "path")
                            .filter_map(|p| p["name"].as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                assert_eq!(declared, wanted, "{method} {path}");
                assert!(
                    op["responses"].is_object(),
                    "{method} {path} has no responses"
                );
            }
        }
        assert_eq!(
            doc["paths"].as_object().unwrap().len(),
            12,
            "a documented path has no route"
        );
    }
}
