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
/// `DELETE`: remove an instance of an API-managed tenant.
pub const INSTANCE: &str = "/v1/tenants/{tenant}/instances/{instance}";
/// `POST`: a new token or HMAC key for a webhook route, shown once.
pub const WEBHOOK_SECRET: &str =
    "/v1/tenants/{tenant}/instances/{instance}/webhooks/{route}/secret";
/// `GET`: a tenant's jobs (`?state=dead` for the dead letters).
pub const JOBS: &str = "/v1/tenants/{tenant}/jobs";
/// `POST`: put a dead job back in the queue.
pub const RETRY_JOB: &str = "/v1/tenants/{tenant}/jobs/{id}/retry";
/// `GET`: a tenant's configuration; `PUT`: a new version (API-managed).
pub const CONFIG: &str = "/v1/tenants/{tenant}/config";
/// `GET`: the configuration versions, newest first.
pub const CONFIG_VERSIONS: &str = "/v1/tenants/{tenant}/config/versions";
/// `GET`: one version, with the diff from the one before.
pub const CONFIG_VERSION: &str = "/v1/tenants/{tenant}/config/versions/{version}";
/// `POST`: a new version with an old version's text.
pub const CONFIG_ROLLBACK: &str = "/v1/tenants/{tenant}/config/versions/{version}/rollback";
/// `GET`: the tenant's secret names.
pub const SECRETS: &str = "/v1/tenants/{tenant}/secrets";
/// `PUT`: set a secret; `DELETE`: delete it.
pub const SECRET: &str = "/v1/tenants/{tenant}/secrets/{name}";
/// Any method: a webhook delivery.
pub const HOOK: &str = "/hooks/{tenant}/{instance}/{route}";
/// `POST`: reload the configuration (operator token).
pub const RELOAD: &str = "/v1/admin/reload";
/// `GET`: installed plugins; `POST`: install a release (operator token).
pub const PLUGINS: &str = "/v1/admin/plugins";
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
    let mut retry_responses = errors(&["401", "403", "404", "503"]);
    retry_responses["200"] = ok_json("Queued again; `retried` names it");
    let mut status_responses = errors(&["401", "403", "404", "503"]);
    status_responses["200"] = ok_json(
        "Plugin, paused, schedules with run counts, queue counts, running jobs, runs and errors per action/webhook/job, latest failure",
    );
    let mut audit_responses = errors(&["400", "401", "403", "503"]);
    audit_responses["200"] = ok_json("`entries`, newest first");
    let mut hook_responses = errors(&["400", "401", "403", "404", "413", "429", "503"]);
    hook_responses["200"] = json!({ "description": "Handled synchronously (the plugin's answer), \
        stored in the durable queue (`queued: true`, `job_id` names it), or a duplicate" });
    let mut config_get = errors(&["401", "403", "404", "503"]);
    config_get["200"] =
        ok_json("`managed_by`, `read_only`, `version`, `toml`, `config`, `served`, `problems`");
    let config_put = || {
        let mut r = errors(&["400", "401", "403", "404", "409", "413", "503"]);
        r["200"] = ok_json("Stored and applied: `version`, `warnings`");
        r["422"] = json!({ "description": "Refused; nothing changed. `problems` lists each with its `field`, `line`, `message` and `severity`",
                                "content": { "application/json": { "schema": { "type": "object" } } } });
        r
    };
    let mut config_read = errors(&["401", "403", "404", "503"]);
    config_read["200"] = ok_json("The history, a version, or the secret names");
    let mut secret_change = errors(&["400", "401", "403", "404", "409", "413", "503"]);
    secret_change["204"] = json!({ "description": "Done" });
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
            CONFIG: {
                "get": { "summary": "The tenant's configuration (never a secret value): who manages it (`file` or `api`), its version, its text and JSON form",
                         "security": auth, "parameters": [tenant], "responses": config_get },
                "put": { "summary": "A new configuration version of an API-managed tenant, checked as `switchyard check` does and applied without a restart (tenant-admin; an operator with base_version 0 creates the tenant)",
                         "security": auth, "parameters": [tenant],
                         "requestBody": { "required": true, "content": { "application/json": { "schema": {
                             "type": "object", "required": ["base_version"],
                             "properties": {
                                 "toml": { "type": "string", "description": "The tenant file's text" },
                                 "config": { "type": "object", "description": "The tenant file as JSON (instead of `toml`)" },
                                 "base_version": { "type": "integer", "description": "The version the change was made from (409 when it is not the newest)" },
                                 "comment": { "type": "string" }
                             } } } } },
                         "responses": config_put() }
            },
            INSTANCE: { "delete": { "summary": "Remove an instance of an API-managed tenant (a new configuration version)", "security": auth,
                                    "parameters": [tenant, instance,
                                        { "name": "base_version", "in": "query", "required": true, "schema": { "type": "integer" } },
                                        { "name": "delete_storage", "in": "query", "required": true, "description": "true deletes what the instance stored; false keeps it for an instance added again with the same id", "schema": { "type": "boolean" } }],
                                    "responses": config_put() } },
            WEBHOOK_SECRET: { "post": { "summary": "Make a random token or HMAC key for a webhook route, store it as a secret and verify the route with it; the value is answered once", "security": auth,
                                        "parameters": [tenant, instance, param("route", "Webhook route")],
                                        "requestBody": { "required": true, "content": { "application/json": { "schema": {
                                            "type": "object", "required": ["kind", "base_version"],
                                            "properties": { "kind": { "type": "string", "enum": ["token", "hmac"] }, "base_version": { "type": "integer" } } } } } },
                                        "responses": config_put() } },
            JOBS: { "get": { "summary": "The tenant's jobs, newest first (`state`: queued, running, done or dead; `limit` 1-1000, default 100)", "security": auth,
                             "parameters": [tenant,
                                 { "name": "state", "in": "query", "required": false, "schema": { "type": "string", "enum": ["queued", "running", "done", "dead"] } },
                                 { "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } }],
                             "responses": config_read } },
            RETRY_JOB: { "post": { "summary": "Put a dead job back in the queue with fresh attempts (tenant-admin, api or operator)", "security": auth,
                                   "parameters": [tenant, param("id", "Job id")], "responses": retry_responses } },
            CONFIG_VERSIONS: { "get": { "summary": "The configuration versions, newest first (who, when, why)", "security": auth, "parameters": [tenant], "responses": config_read } },
            CONFIG_VERSION: { "get": { "summary": "One configuration version with the unified diff from the one before", "security": auth,
                                       "parameters": [tenant, param("version", "Version number")], "responses": config_read } },
            CONFIG_ROLLBACK: { "post": { "summary": "Store an old version's text as the next version (checked again)", "security": auth,
                                         "parameters": [tenant, param("version", "Version number")],
                                         "requestBody": { "required": false, "content": { "application/json": { "schema": {
                                             "type": "object", "properties": { "base_version": { "type": "integer" } } } } } },
                                         "responses": config_put() } },
            SECRETS: { "get": { "summary": "The tenant's secret names and when each was set (never a value)", "security": auth, "parameters": [tenant], "responses": config_read } },
            SECRET: {
                "put": { "summary": "Set or replace a secret (write-only; tenant-admin of an API-managed tenant)", "security": auth,
                         "parameters": [tenant, param("name", "Secret name; reference it as secret:NAME")],
                         "requestBody": { "required": true, "content": { "application/json": { "schema": {
                             "type": "object", "required": ["value"], "properties": { "value": { "type": "string" } } } } } },
                         "responses": secret_change },
                "delete": { "summary": "Delete a secret", "security": auth,
                            "parameters": [tenant, param("name", "Secret name")], "responses": secret_change }
            },
            AUDIT: { "get": { "summary": "The tenant's audit log, newest first, filtered and paged (`next_before` is the `before` of the next page)", "security": auth,
                              "parameters": [tenant,
                                  { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 10000, "default": 100 } },
                                  { "name": "kind", "in": "query", "schema": { "type": "string", "enum": ["action", "webhook", "job", "egress", "admin"] } },
                                  { "name": "instance", "in": "query", "schema": { "type": "string" } },
                                  { "name": "outcome", "in": "query", "description": "An exact outcome, or `failed` for every one but `ok`", "schema": { "type": "string" } },
                                  { "name": "since", "in": "query", "description": "Seconds since the epoch", "schema": { "type": "integer" } },
                                  { "name": "until", "in": "query", "description": "Seconds since the epoch (exclusive)", "schema": { "type": "integer" } },
                                  { "name": "before", "in": "query", "description": "Only entries older than this sequence number", "schema": { "type": "integer" } }],
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
            PLUGINS: {
                "get": { "summary": "Installed plugin versions: who vouches for each (`signer`), which instances run it, the refused files and the plugins still compiling (operator token)",
                         "security": auth,
                         "responses": { "200": ok_json("`plugins`, `refused`, `compiling`"), "401": { "$ref": "#/components/responses/Error" },
                                        "403": { "$ref": "#/components/responses/Error" } } },
                "post": { "summary": "Install a plugin release into the plugin directory, checked as the daemon will load it; a reload serves it (operator token)",
                          "description": "The body is the component. A signed release sends its signature file (`X.wasm.sig`) base64-encoded in the \
                              `switchyard-release-signature` header. 201 when installed, 200 when exactly these bytes were installed \
                              already, 422 `invalid_release` with the reason when refused (unsigned where signatures are required, \
                              a signature that does not verify or names another plugin, version or world, a bundled id, not a component), \
                              409 `conflict` when the version is installed with other bytes.",
                          "security": auth,
                          "requestBody": { "required": true, "content": { "application/wasm": {} } },
                          "responses": { "200": ok_json("`installed`, `already_installed`: true"), "201": ok_json("`installed`: id, version, signer, path"),
                                         "401": { "$ref": "#/components/responses/Error" }, "403": { "$ref": "#/components/responses/Error" },
                                         "409": { "$ref": "#/components/responses/Error" }, "413": { "$ref": "#/components/responses/Error" },
                                         "422": { "$ref": "#/components/responses/Error" } } } },
            METRICS: { "get": { "summary": "Prometheus metrics", "responses": text("Text exposition format") } },
            HEALTHZ: { "get": { "summary": "Liveness", "responses": text("ok") } },
            READYZ: { "get": { "summary": "Readiness: 503 with the reason while shutting down or while the state database does not answer; the body names plugins still compiling",
                               "parameters": [{ "name": "plugins", "in": "query", "required": false, "schema": { "type": "string", "enum": ["all"] },
                                                "description": "`all`: also 503 while a plugin compiles in the background (its instances are not served yet)" }],
                               "responses": text("ready") } },
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
            ACTION,
            PAUSE,
            RESUME,
            STATUS,
            RUN_JOB,
            AUDIT,
            INSTANCE,
            WEBHOOK_SECRET,
            JOBS,
            RETRY_JOB,
            CONFIG,
            CONFIG_VERSIONS,
            CONFIG_VERSION,
            CONFIG_ROLLBACK,
            SECRETS,
            SECRET,
            RELOAD,
            PLUGINS,
            HOOK,
            METRICS,
            HEALTHZ,
            READYZ,
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
            23,
            "a documented path has no route"
        );
    }
}
