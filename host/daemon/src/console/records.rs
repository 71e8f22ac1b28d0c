//! Console pages for what happened and who may do what: the audit log
//! (filtered by kind, instance, outcome and period; paged), the dead
//! letters with Retry, and the role mapping with what each plugin role
//! allows.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use switchyard_store::JobState;

use super::pages::{self, button, csrf, layout, page};
use super::session::{Posted, Refused, Signed};
use crate::api::auth::{Access, Configure, Operate, Read};
use crate::api::config::change_config;
use crate::state::ApplyError;

/// The periods the audit filter offers: `(value, label, seconds)`.
const PERIODS: &[(&str, &str, i64)] = &[
    ("", "any time", 0),
    ("1h", "the last hour", 3600),
    ("24h", "the last 24 hours", 86_400),
    ("7d", "the last 7 days", 7 * 86_400),
    ("30d", "the last 30 days", 30 * 86_400),
];

/// `GET /console/t/{tenant}/audit`.
pub async fn audit(who: Signed<Read>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let mut params = q.clone();
    let period = q.get("period").cloned().unwrap_or_default();
    if let Some((_, _, secs)) = PERIODS.iter().find(|(v, _, _)| *v == period)
        && *secs > 0
    {
        params.insert(
            "since".into(),
            (super::session::now_secs() - secs).to_string(),
        );
    }
    params.entry("limit".into()).or_insert_with(|| "50".into());
    let query = match crate::api::audit::audit_query(&params) {
        Ok(q) => q,
        Err(why) => return pages::message(StatusCode::BAD_REQUEST, "Invalid filter", &why),
    };
    let limit = query.limit as usize;
    let entries = match who.st.db().audit_query(&who.tenant, query).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "reading the audit log for the console");
            return Refused::Unavailable.into_response();
        }
    };
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    let sel = |k: &str| q.get(k).cloned().unwrap_or_default();
    let mut instances: Vec<String> = who
        .st
        .tenant(&who.tenant)
        .map(|t| t.instances.keys().cloned().collect())
        .unwrap_or_default();
    instances.sort();
    let older = next.map(|seq| {
        let mut p: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| k.as_str() != "before")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        p.push(("before".into(), seq.to_string()));
        let qs: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(p)
            .finish();
        format!("/console/t/{}/audit?{qs}", who.tenant)
    });
    page(
        StatusCode::OK,
        layout(
            &format!("Activity of {}", who.tenant),
            Some(&who.nav()),
            html! {
                form.filters method="get" action={ "/console/t/" (who.tenant) "/audit" } {
                    label for="kind" { "Kind" }
                    select id="kind" name="kind" {
                        @for k in ["", "action", "webhook", "job", "egress", "admin"] {
                            option value=(k) selected[sel("kind") == k] { (if k.is_empty() { "any" } else { k }) }
                        }
                    }
                    label for="instance" { "Instance" }
                    select id="instance" name="instance" {
                        option value="" { "any" }
                        @for i in &instances { option value=(i) selected[&sel("instance") == i] { (i) } }
                    }
                    label for="outcome" { "Outcome" }
                    select id="outcome" name="outcome" {
                        @for (v, l) in [("", "any"), ("ok", "ok"), ("failed", "failed")] {
                            option value=(v) selected[sel("outcome") == v] { (l) }
                        }
                    }
                    label for="period" { "When" }
                    select id="period" name="period" {
                        @for (v, l, _) in PERIODS { option value=(v) selected[period == *v] { (l) } }
                    }
                    button type="submit" { "Filter" }
                }
                @if entries.is_empty() { p { "Nothing recorded matches." } }
                @else {
                    table {
                        thead { tr { th scope="col" { "When" } th scope="col" { "Kind" } th scope="col" { "Instance" } th scope="col" { "What" } th scope="col" { "Outcome" } th scope="col" { "Who" } th scope="col" { "ms" } } }
                        tbody {
                            @for e in &entries {
                                tr {
                                    td { (pages::time_ms(Some(e.time * 1000))) }
                                    td { (e.kind) }
                                    td { (e.instance.as_deref().unwrap_or("")) }
                                    td { (e.what) }
                                    td { (e.outcome) }
                                    td { (e.actor.as_deref().unwrap_or("")) }
                                    td { (e.duration_ms) }
                                }
                            }
                        }
                    }
                }
                @if let Some(href) = &older { p { a href=(href) { "Older entries" } } }
            },
        ),
    )
}

/// `GET /console/t/{tenant}/dead`: jobs and deliveries that used up their
/// attempts.
pub async fn dead(who: Signed<Read>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let jobs = match who
        .st
        .db()
        .list_jobs(&who.tenant, Some(JobState::Dead), 200)
        .await
    {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(error = %e, "listing dead jobs for the console");
            return Refused::Unavailable.into_response();
        }
    };
    let operate = who.may(Access::Operate);
    page(
        StatusCode::OK,
        layout(
            &format!("Dead letters of {}", who.tenant),
            Some(&who.nav()),
            html! {
                @if let Some(id) = q.get("retried") { p.notice role="status" { "Job " (id) " is queued again." } }
                p { "Webhook deliveries and job runs that failed every attempt. Retry puts one back in the queue with fresh attempts." }
                @if jobs.is_empty() { p { "There are none." } }
                @else {
                    table {
                        thead { tr { th scope="col" { "Job" } th scope="col" { "Instance" } th scope="col" { "What" } th scope="col" { "Attempts" } th scope="col" { "Last error" } @if operate { th scope="col" { span.sr { "Actions" } } } } }
                        tbody {
                            @for j in &jobs {
                                tr {
                                    td { (j.id) }
                                    td { (j.instance) }
                                    td { (j.kind) " " (j.name) }
                                    td { (j.attempts) " of " (j.max_attempts) }
                                    td { (j.last_error.as_deref().unwrap_or("")) }
                                    @if operate {
                                        td { (button(&format!("/console/t/{}/dead/{}/retry", who.tenant, j.id), &format!("Retry job {}", j.id), &who.session.csrf)) }
                                    }
                                }
                            }
                        }
                    }
                }
            },
        ),
    )
}

/// `POST /console/t/{tenant}/dead/{id}/retry`.
pub async fn retry(Path((_, id)): Path<(String, i64)>, posted: Posted<Operate>) -> Response {
    let who = &posted.who;
    let done =
        crate::api::jobs::retry_dead(who.live.shared(), &who.tenant, id, &who.author(), "console")
            .await;
    match done {
        Ok(true) => {
            Redirect::to(&format!("/console/t/{}/dead?retried={id}", who.tenant)).into_response()
        }
        Ok(false) => pages::message(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such dead job.",
        ),
        Err(e) => {
            tracing::error!(error = %e, "retrying a job from the console");
            Refused::Unavailable.into_response()
        }
    }
}

/// The role mapping as the form's text: `Tenant role = plugin-role, …`.
fn roles_text(doc: &toml::Table) -> String {
    doc.get("roles")
        .and_then(toml::Value::as_table)
        .map(|t| {
            t.iter()
                .map(|(k, v)| {
                    let roles: Vec<&str> = v
                        .as_array()
                        .map(|a| a.iter().filter_map(toml::Value::as_str).collect())
                        .unwrap_or_default();
                    format!("{k} = {}\n", roles.join(", "))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The mapping in the form's text, or the line that is not a mapping.
fn parse_roles(text: &str) -> Result<toml::Table, String> {
    let mut out = toml::Table::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((role, plugin_roles)) = line.split_once('=') else {
            return Err(format!(
                "line {}: `{line}` is not `Tenant role = plugin-role, plugin-role`",
                n + 1
            ));
        };
        let list: Vec<toml::Value> = plugin_roles
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(toml::Value::from)
            .collect();
        out.insert(role.trim().to_owned(), list.into());
    }
    Ok(out)
}

/// `GET /console/t/{tenant}/roles`.
pub async fn roles(who: Signed<Read>) -> Response {
    render_roles(&who, StatusCode::OK, None, None).await
}

async fn render_roles(
    who: &Signed<Read>,
    status: StatusCode,
    error: Option<String>,
    text: Option<String>,
) -> Response {
    let versions = match who.versions().await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let mapping = who
        .st
        .tenant(&who.tenant)
        .map(|t| t.roles.clone())
        .unwrap_or_default();
    // What each plugin role allows, from the manifests of the instances.
    let mut allows: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    if let Some(t) = who.st.tenant(&who.tenant) {
        for (id, inst) in &t.instances {
            for a in &inst.instance.plugin().manifest().actions {
                if let Some(r) = &a.required_role {
                    allows
                        .entry(r.clone())
                        .or_default()
                        .insert(format!("{id}: {}", a.name));
                }
            }
        }
    }
    let editable = who.may(Access::Configure) && !versions.is_empty();
    let current = text.unwrap_or_else(|| {
        versions
            .first()
            .and_then(|v| v.text.parse::<toml::Table>().ok())
            .map(|d| roles_text(&d))
            .unwrap_or_default()
    });
    page(
        status,
        layout(
            &format!("Roles of {}", who.tenant),
            Some(&who.nav()),
            html! {
                p { "An actor's tenant roles (as the calling system sends them) map to the plugins' roles; an action that requires a plugin role runs only for actors mapped to it." }
                @if let Some(e) = &error { div.error role="alert" { p { (e) } } }
                table {
                    caption { "Tenant role → plugin roles" }
                    thead { tr { th scope="col" { "Tenant role" } th scope="col" { "Plugin roles" } } }
                    tbody {
                        @for (role, plugin_roles) in &mapping {
                            tr { td { (role) } td { (plugin_roles.join(", ")) } }
                        }
                    }
                }
                table {
                    caption { "What each plugin role allows" }
                    thead { tr { th scope="col" { "Plugin role" } th scope="col" { "Actions" } } }
                    tbody {
                        @for (role, actions) in &allows {
                            tr { td { (role) } td { (actions.iter().cloned().collect::<Vec<_>>().join(", ")) } }
                        }
                    }
                }
                p.hint { "Plugins may also check roles of their own inside an action (see each plugin's documentation)." }
                @if editable {
                    form method="post" action={ "/console/t/" (who.tenant) "/roles" } {
                        (csrf(&who.session.csrf))
                        input type="hidden" name="base_version" value=(versions[0].version);
                        label for="roles" { "Mapping, one tenant role per line: Tenant role = plugin-role, plugin-role" }
                        textarea id="roles" name="roles" rows="8" { (current) }
                        button type="submit" { "Save the mapping" }
                    }
                }
            },
        ),
    )
}

/// `POST /console/t/{tenant}/roles`.
pub async fn save_roles(posted: Posted<Configure>) -> Response {
    let who = posted.who;
    let text = posted.fields.get("roles").cloned().unwrap_or_default();
    let base: i64 = posted
        .fields
        .get("base_version")
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    let reader = who.as_reader();
    let mapping = match parse_roles(&text) {
        Ok(m) => m,
        Err(why) => {
            return render_roles(
                &reader,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(why),
                Some(text),
            )
            .await;
        }
    };
    let newest = match who.versions().await {
        Ok(v) => v.into_iter().next(),
        Err(r) => return r.into_response(),
    };
    let Some(newest) = newest else {
        return Refused::Forbidden("this tenant is configured by a file".into()).into_response();
    };
    let mut doc: toml::Table = newest.text.parse().unwrap_or_default();
    if mapping.is_empty() {
        doc.remove("roles");
    } else {
        doc.insert("roles".into(), mapping.into());
    }
    let new_text = toml::to_string(&doc).unwrap_or_default();
    let author = who.author();
    let result = change_config(
        &who.live,
        &who.tenant,
        who.role,
        &author,
        new_text,
        base,
        "role mapping",
        "console",
    )
    .await;
    match result {
        Ok(_) => Redirect::to(&format!("/console/t/{}/roles", who.tenant)).into_response(),
        Err(ApplyError::Invalid(problems)) => {
            let why = problems
                .iter()
                .map(|p| format!("{}: {}", p.field, p.message))
                .collect::<Vec<_>>()
                .join("; ");
            render_roles(
                &reader,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(why),
                Some(text),
            )
            .await
        }
        Err(ApplyError::Conflict(current)) => {
            let msg = crate::api::config::conflict_message(&who.tenant, base, current);
            render_roles(&reader, StatusCode::CONFLICT, Some(msg), Some(text)).await
        }
        Err(ApplyError::FileManaged(_) | ApplyError::NotManaged) => {
            Refused::Forbidden("this tenant is configured by a file".into()).into_response()
        }
        Err(ApplyError::Failed(why)) => {
            tracing::error!("saving roles from the console: {why}");
            Refused::Unavailable.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_mapping_round_trips_through_its_text() {
        let parsed =
            parse_roles("ITIL Agent = standard, lock-device\n\n  Lead=advanced \n").unwrap();
        let mut doc = toml::Table::new();
        doc.insert("roles".into(), parsed.into());
        assert_eq!(
            roles_text(&doc),
            "ITIL Agent = standard, lock-device\nLead = advanced\n"
        );
        let bad = parse_roles("ok = a\nno equals sign").unwrap_err();
        assert!(bad.starts_with("line 2:"), "{bad}");
    }
}
