//! `POST /v1/tenants/{tenant}/instances/{instance}/actions/{action}`: an
//! agent (or a ServiceNow flow) runs one action of an instance.
//!
//! The actor's roles go through the tenant's role mapping and the action's
//! required role is enforced before the plugin runs. Every call, refusals
//! of an authenticated caller included, gets one audit entry, plus one per
//! egress request it made; calls over the tenant's or instance's share are
//! counted in the metrics and sampled for the audit log (one entry per
//! minute and kind, saying how many it stands for).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchyard_runtime::{Actor, CallOptions};

use super::auth::{Caller, Invoke};
use crate::errors::{error, invoke_error_code, invoke_error_response, refused};
use crate::record::{self, Outcome, Subject};

/// The request body. `input` stays the caller's text: parsed once here
/// (which checks it is JSON) and handed to the plugin as it came.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionRequest {
    #[serde(default = "empty_object")]
    input: Box<RawValue>,
    actor: Actor,
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("`{}` is JSON")
}

/// The answer: the plugin's output, checked by the runtime, embedded as is.
#[derive(Serialize)]
struct ActionAnswer<'a> {
    request_id: &'a str,
    output: &'a RawValue,
}
/// Largest action request body accepted.
pub const MAX_ACTION_BODY: usize = 4 << 20;

/// The plugin roles the tenant grants for `tenant_roles`.
fn mapped_roles(map: &BTreeMap<String, Vec<String>>, tenant_roles: &[String]) -> Vec<String> {
    let set: BTreeSet<&String> = tenant_roles
        .iter()
        .filter_map(|r| map.get(r))
        .flatten()
        .collect();
    set.into_iter().cloned().collect()
}

/// The audit outcome of a call that was not admitted.
fn invoke_refused_code(why: crate::admission::Refused) -> &'static str {
    match why {
        crate::admission::Refused::Total(_) => "busy",
        _ => "too_many_requests",
    }
}

/// The handler.
pub async fn action(
    caller: Caller<Invoke>,
    Path((tenant, instance, action)): Path<(String, String, String)>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let rid = caller.request_id.as_str();
    let inst = match caller.instance(&instance) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    let body = match crate::body::read(body, MAX_ACTION_BODY, rid).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let st = &caller.st;
    let roles_map = &st.tenant(&tenant).expect("the instance's tenant").roles;
    let req: ActionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("request body: {e}"),
                rid,
            );
        }
    };
    let manifest = inst.instance.plugin().manifest();
    let Some(spec) = manifest.action(&action) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("plugin `{}` has no action `{action}`", manifest.id),
            rid,
        );
    };
    let who = Subject {
        tenant: &tenant,
        instance: Some(&instance),
        actor: &req.actor.id,
        request_id: rid,
    };
    let audit = |outcome: &str| {
        who.entry(
            "action",
            &action,
            outcome,
            started.elapsed().as_millis() as i64,
        )
    };
    if st.is_paused(&tenant, &instance) {
        record::append_audit(&st.shared, vec![audit("paused")], rid).await;
        return error(
            StatusCode::CONFLICT,
            "paused",
            format!("instance `{instance}` is paused"),
            rid,
        );
    }
    let roles = mapped_roles(roles_map, &req.actor.roles);
    if let Some(required) = &spec.required_role
        && !roles.contains(required)
    {
        record::append_audit(&st.shared, vec![audit("forbidden")], rid).await;
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "action `{action}` requires role `{required}`; the actor's roles map to [{}]",
                roles.join(", ")
            ),
            rid,
        );
    }
    let actor = Actor {
        roles,
        ..req.actor.clone()
    };
    let call = Call {
        tenant: &tenant,
        instance: &instance,
        action: &action,
        input: &req.input,
        actor,
        request_id: rid,
        started,
    };
    let inv = match call_admitted(st, &inst.instance, call).await {
        Ok(inv) => inv,
        Err(why) => return refused(why, rid),
    };
    match inv {
        Ok(out) => (
            StatusCode::OK,
            axum::Json(ActionAnswer {
                request_id: rid,
                output: &out,
            }),
        )
            .into_response(),
        Err(e) => invoke_error_response(&e, rid),
    }
}

/// One action call whose actor is authorised (see [`call_admitted`]).
pub struct Call<'a> {
    /// Tenant.
    pub tenant: &'a str,
    /// Instance.
    pub instance: &'a str,
    /// Action name.
    pub action: &'a str,
    /// The input (JSON).
    pub input: &'a RawValue,
    /// The actor, with plugin roles.
    pub actor: Actor,
    /// This request's id.
    pub request_id: &'a str,
    /// When the request began (for the audit entry's duration).
    pub started: Instant,
}

/// Runs `call` if the tenant's and the instance's shares of synchronous
/// calls allow it, and records it (metrics, run statistics, audit). A
/// refusal is counted and sampled for the audit log.
pub async fn call_admitted(
    st: &crate::state::AppState,
    inst: &switchyard_runtime::Instance,
    call: Call<'_>,
) -> Result<Result<Box<RawValue>, switchyard_runtime::InvokeError>, crate::admission::Refused> {
    let Call {
        tenant,
        instance,
        action,
        input,
        actor,
        request_id: rid,
        started,
    } = call;
    let manifest = inst.plugin().manifest();
    let actor_id = actor.id.clone();
    let who = Subject {
        tenant,
        instance: Some(instance),
        actor: &actor_id,
        request_id: rid,
    };
    let audit = |outcome: &str| {
        who.entry(
            "action",
            action,
            outcome,
            started.elapsed().as_millis() as i64,
        )
    };
    let _admitted = match st.admit(tenant, instance) {
        Ok(a) => a,
        Err(why) => {
            let code = invoke_refused_code(why);
            let shared = &st.shared;
            shared
                .metrics
                .count_call(tenant, instance, &manifest.id, "action", code);
            // Asking again at once costs the caller nothing: one audit
            // entry per minute and kind stands for the rest.
            if let Some(more) = shared
                .refusals
                .sample("action", tenant, instance, action, code)
            {
                let outcome = crate::state::RefusalSampler::outcome(code, more);
                record::append_audit(shared, vec![audit(&outcome)], rid).await;
            }
            return Err(why);
        }
    };
    let inv = inst
        .invoke_json(
            action,
            input,
            CallOptions {
                request_id: rid.to_owned(),
                actor: Some(actor),
                progress: None,
            },
        )
        .await;
    let outcome = match &inv.result {
        Ok(_) => "ok",
        Err(e) => invoke_error_code(e),
    };
    let message = inv.result.as_ref().err().map(ToString::to_string);
    record::record(
        &st.shared,
        Outcome {
            tenant,
            instance,
            plugin: &manifest.id,
            kind: "action",
            name: action,
            outcome,
            error: message.as_deref(),
            actor: &actor_id,
        },
        &inv.report,
        vec![audit(outcome)],
    )
    .await;
    Ok(inv.result)
}

#[cfg(test)]
mod tests {
    use super::mapped_roles;

    #[test]
    fn roles_map_through_the_tenant_mapping_only() {
        let map = [
            (
                "ITIL Agent".to_owned(),
                vec!["operator".to_owned(), "standard".to_owned()],
            ),
            (
                "Admin".to_owned(),
                vec!["operator".to_owned(), "advanced".to_owned()],
            ),
        ]
        .into();
        let got = mapped_roles(
            &map,
            &["ITIL Agent".into(), "Admin".into(), "operator".into()],
        );
        assert_eq!(got, ["advanced", "operator", "standard"]);
        // A plugin role name sent directly grants nothing.
        assert!(mapped_roles(&map, &["operator".into()]).is_empty());
    }
}
