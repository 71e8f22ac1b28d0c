//! The web console for tenant admins, served by the daemon at `/console`:
//! server-rendered HTML embedded in the binary, usable without JavaScript
//! (the pages carry none), behind the same roles as the admin API.
//!
//! - sign in with a `tenant-admin` or `tenant-viewer` token (an operator
//!   token works for every tenant) and get a session cookie ([`session`]);
//! - the tenant's overview: one card per instance with its state, jobs,
//!   queue and last error, and Sync now / Pause / Resume;
//! - its configuration: view, edit and save a new version (checked as
//!   `switchyard check` checks a file), the history with each version's
//!   diff, and rollback;
//! - its secrets: names and when set, set and delete (write-only);
//! - its activity (the audit log, filtered and paged), its dead letters
//!   with Retry, and its role mapping ([`records`]);
//! - the guided setup of an instance, from its plugin's manifest
//!   ([`setup`]).
//!
//! A viewer sees the same pages without any control that changes
//! something. Every state-changing form carries the session's CSRF value
//! ([`session::Posted`]), and every page forbids scripts, framing and
//! foreign resources ([`pages::CSP`]).

pub mod pages;
pub mod records;
pub mod session;
pub mod setup;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use secrecy::SecretString;

use crate::api::auth::{Access, Configure, OPERATOR, Operate, Read, Role};
use crate::api::config::{SecretChange, change_config, change_secret, conflict_message};
use crate::api::operations::instance_status;
use crate::config::managed;
use crate::state::{ApplyError, Live};
use pages::{button, csrf, layout, page};
use session::{Posted, Signed};

/// The console's routes.
pub fn router() -> Router<Arc<Live>> {
    Router::new()
        .route("/console", get(home))
        .route("/console/static/console.css", get(stylesheet))
        .route("/console/sign-in", post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/t/{tenant}", get(overview))
        .route("/console/t/{tenant}/i/{instance}/{op}", post(operate))
        .route(
            "/console/t/{tenant}/i/{instance}/remove",
            get(remove_page).post(remove_instance),
        )
        .route(
            "/console/t/{tenant}/i/{instance}/jobs/{job}/run",
            post(run_now),
        )
        .route(
            "/console/t/{tenant}/config",
            get(config_page).post(save_config),
        )
        .route("/console/t/{tenant}/config/{version}", get(version_page))
        .route(
            "/console/t/{tenant}/config/{version}/rollback",
            post(rollback),
        )
        .route("/console/t/{tenant}/audit", get(records::audit))
        .route("/console/t/{tenant}/dead", get(records::dead))
        .route("/console/t/{tenant}/dead/{id}/retry", post(records::retry))
        .route(
            "/console/t/{tenant}/roles",
            get(records::roles).post(records::save_roles),
        )
        .route("/console/t/{tenant}/setup", get(setup::index))
        .route("/console/t/{tenant}/setup/new", get(setup::start))
        .route(
            "/console/t/{tenant}/setup/{instance}",
            get(setup::form).post(setup::save),
        )
        .route(
            "/console/t/{tenant}/setup/{instance}/verify",
            post(setup::verify),
        )
        .route(
            "/console/t/{tenant}/setup/{instance}/webhooks/{route}/{what}",
            post(setup::generate),
        )
        .route(
            "/console/t/{tenant}/secrets",
            get(secrets_page).post(set_secret),
        )
        .route(
            "/console/t/{tenant}/secrets/{name}/delete",
            post(delete_secret),
        )
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("console.css"),
    )
        .into_response()
}

/// `GET /console`: the sign-in page, or where a signed-in person belongs.
async fn home(who: Result<Signed<Read>, session::Refused>) -> Response {
    let Ok(who) = who else {
        return page(StatusCode::OK, pages::sign_in(None));
    };
    if who.role != Role::Operator {
        return Redirect::to(&format!("/console/t/{}", who.session.token.tenant)).into_response();
    }
    let tenants: Vec<String> = who.st.tenants().keys().cloned().collect();
    page(
        StatusCode::OK,
        layout(
            "Tenants",
            Some(&who.nav()),
            html! {
                ul {
                    @for t in &tenants {
                        li { a href={ "/console/t/" (t) } { (t) } }
                    }
                }
            },
        ),
    )
}

/// `POST /console/sign-in`.
async fn sign_in(
    State(live): State<Arc<Live>>,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> Response {
    let ip = session::client_ip(req.extensions());
    let now = Instant::now();
    let limiter = &live.shared().sign_ins;
    if let Some(wait) = limiter.blocked(ip, now) {
        let mut r = page(
            StatusCode::TOO_MANY_REQUESTS,
            pages::sign_in(Some(&format!(
                "Too many failed sign-ins from your address; try again in {wait} s."
            ))),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return r;
    }
    let Ok(bytes) = crate::body::read(req.into_body(), 4096, "console").await else {
        return page(
            StatusCode::BAD_REQUEST,
            pages::sign_in(Some("The form was too large.")),
        );
    };
    let token = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let now_s = session::now_secs();
    let started = live
        .current()
        .db()
        .start_session(
            &SecretString::from(token),
            now_s,
            now_s + session::SESSION_TTL.as_secs() as i64,
        )
        .await;
    match started {
        Ok(Some((secret, s))) => {
            use secrecy::ExposeSecret;
            let to = if s.token.tenant == OPERATOR {
                "/console".to_owned()
            } else {
                format!("/console/t/{}", s.token.tenant)
            };
            let mut r = Redirect::to(&to).into_response();
            let cookie = session::cookie(Some(secret.expose_secret()), session::over_tls(&headers));
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Ok(None) => {
            limiter.failed(ip, now);
            page(
                StatusCode::UNAUTHORIZED,
                pages::sign_in(Some("That token is not valid.")),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "starting a console session");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::sign_in(Some("The daemon could not read its state; try again.")),
            )
        }
    }
}

/// `POST /console/sign-out`.
async fn sign_out(headers: HeaderMap, posted: Posted<Read>) -> Response {
    if let Some(secret) = session::session_secret(&headers)
        && let Err(e) = posted.who.st.db().end_session(&secret).await
    {
        tracing::error!(error = %e, "ending a console session");
    }
    let mut r = Redirect::to("/console").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::cookie(None, session::over_tls(&headers))) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `GET /console/t/{tenant}`: one card per instance.
async fn overview(who: Signed<Read>) -> Response {
    let st = &who.st;
    let mut ids: Vec<String> = st
        .tenant(&who.tenant)
        .map(|t| t.instances.keys().cloned().collect())
        .unwrap_or_default();
    ids.extend(st.failed_instances(&who.tenant));
    ids.sort();
    ids.dedup();
    let mut cards = Vec::new();
    for id in &ids {
        match instance_status(st, &who.tenant, id).await {
            Ok(s) => cards.push(s),
            Err(e) => {
                tracing::error!(error = %e, "reading an instance's status for the console");
                return session::Refused::Unavailable.into_response();
            }
        }
    }
    let operate = who.may(Access::Operate);
    let managed = match who.versions().await {
        Ok(v) => !v.is_empty(),
        Err(r) => return r.into_response(),
    };
    let remove = managed && who.may(Access::Configure);
    let tenant_problems = st.tenant_failure(&who.tenant).unwrap_or_default();
    page(
        StatusCode::OK,
        layout(
            &format!("Tenant {}", who.tenant),
            Some(&who.nav()),
            html! {
                @if !tenant_problems.is_empty() {
                    section.card {
                        h2 { "Not served" }
                        ul.problems { @for p in tenant_problems { li { (p) } } }
                    }
                }
                @if cards.is_empty() && tenant_problems.is_empty() {
                    p { "This tenant has no instances yet." }
                }
                div.cards {
                    @for c in &cards {
                        (pages::instance_card(&who.tenant, c, operate, remove, &who.session.csrf))
                    }
                }
            },
        ),
    )
}

/// `POST /console/t/{tenant}/i/{instance}/{pause|resume}`.
async fn operate(
    Path((tenant, instance, op)): Path<(String, String, String)>,
    posted: Posted<Operate>,
) -> Response {
    let paused = match op.as_str() {
        "pause" => true,
        "resume" => false,
        _ => return pages::message(StatusCode::NOT_FOUND, "Not found", "No such operation."),
    };
    let who = &posted.who;
    if who.st.instance(&tenant, &instance).is_none() {
        return pages::message(StatusCode::NOT_FOUND, "Not found", "No such instance.");
    }
    let done = crate::api::operations::pause_instance(
        who.live.shared(),
        &tenant,
        &instance,
        paused,
        &who.author(),
        "console",
    )
    .await;
    if let Err(e) = done {
        tracing::error!(error = %e, "pausing from the console");
        return session::Refused::Unavailable.into_response();
    }
    Redirect::to(&format!("/console/t/{tenant}")).into_response()
}

/// `GET /console/t/{tenant}/i/{instance}/remove`: what removing does, and
/// the choice about its storage.
async fn remove_page(
    who: Signed<Configure>,
    Path((_, instance)): Path<(String, String)>,
) -> Response {
    let versions = match who.versions().await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let Some(newest) = versions.first() else {
        return pages::message(
            StatusCode::CONFLICT,
            "Read-only",
            "This tenant is configured by a file.",
        );
    };
    let usage = who
        .st
        .db()
        .usage(&switchyard_store::Namespace::new(&who.tenant, &instance))
        .await
        .unwrap_or_default();
    let reader = who.as_reader();
    page(
        StatusCode::OK,
        layout(
            &format!("Remove {instance}"),
            Some(&reader.nav()),
            html! {
                p { "Removing the instance stores a new configuration version without it: its schedules stop and its webhook URLs answer 404. Its secrets are kept." }
                form method="post" action={ "/console/t/" (who.tenant) "/i/" (instance) "/remove" } {
                    (csrf(&who.session.csrf))
                    input type="hidden" name="base_version" value=(newest.version);
                    fieldset {
                        legend { "What it stored (" (usage.keys) " keys, " (usage.bytes) " bytes)" }
                        label { input type="radio" name="storage" value="keep" checked; " Keep it: an instance added again with the same id (a rollback, say) finds it" }
                        label { input type="radio" name="storage" value="delete"; " Delete it now; this cannot be undone" }
                    }
                    button type="submit" { "Remove " (instance) }
                }
                p { a href={ "/console/t/" (who.tenant) } { "Cancel" } }
            },
        ),
    )
}

/// `POST /console/t/{tenant}/i/{instance}/remove`.
async fn remove_instance(
    Path((_, instance)): Path<(String, String)>,
    posted: Posted<Configure>,
) -> Response {
    let who = posted.who;
    let base = posted
        .fields
        .get("base_version")
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    let delete = match posted.fields.get("storage").map(String::as_str) {
        Some("delete") => true,
        Some("keep") => false,
        _ => {
            return pages::message(
                StatusCode::BAD_REQUEST,
                "Choose",
                "Say whether to keep or delete what the instance stored.",
            );
        }
    };
    let removed = crate::api::instances::remove_instance(
        &who.live,
        &who.tenant,
        who.role,
        &who.author(),
        &instance,
        base,
        delete,
        "console",
    )
    .await;
    match removed {
        Ok(_) => Redirect::to(&format!("/console/t/{}", who.tenant)).into_response(),
        Err(crate::api::instances::InstanceChange::Missing(why)) => {
            pages::message(StatusCode::NOT_FOUND, "Not found", &why)
        }
        Err(crate::api::instances::InstanceChange::Apply(ApplyError::Invalid(problems))) => {
            let why: Vec<String> = problems.iter().map(ToString::to_string).collect();
            pages::message(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Not removed",
                &why.join("; "),
            )
        }
        Err(crate::api::instances::InstanceChange::Apply(ApplyError::Conflict(current))) => {
            pages::message(
                StatusCode::CONFLICT,
                "Changed meanwhile",
                &conflict_message(&who.tenant, base, current),
            )
        }
        Err(_) => session::Refused::Unavailable.into_response(),
    }
}

/// `POST /console/t/{tenant}/i/{instance}/jobs/{job}/run`: Sync now.
async fn run_now(
    Path((tenant, instance, job)): Path<(String, String, String)>,
    posted: Posted<Operate>,
) -> Response {
    let who = &posted.who;
    let Some(inst) = who.st.instance(&tenant, &instance) else {
        return pages::message(StatusCode::NOT_FOUND, "Not found", "No such instance.");
    };
    if !inst.plugin().manifest().jobs.iter().any(|j| j.name == job) {
        return pages::message(
            StatusCode::NOT_FOUND,
            "Not found",
            "The plugin has no such job.",
        );
    }
    let new = switchyard_store::NewJob {
        tenant: tenant.clone(),
        instance,
        kind: "job".into(),
        name: job,
        payload: Vec::new(),
        idempotency_key: None,
        max_attempts: 1,
    };
    let shared = who.live.shared();
    if let Err(e) = shared.db.enqueue(new, crate::clock::now_ms()).await {
        tracing::error!(error = %e, "queueing a run from the console");
        return session::Refused::Unavailable.into_response();
    }
    shared.wake_worker();
    Redirect::to(&format!("/console/t/{tenant}")).into_response()
}

/// The configuration page, with `problems` from a refused change and the
/// text that was refused.
async fn render_config(
    who: &Signed<Read>,
    status: StatusCode,
    refused: Option<(&str, &[crate::problem::Problem])>,
    notice: Option<String>,
) -> Response {
    let versions = match who.versions().await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let configure = who.may(Access::Configure);
    let body = match versions.first() {
        Some(newest) => {
            let text = refused.map_or(newest.text.as_str(), |(t, _)| t);
            html! {
                p { "Managed through the admin API · version " (newest.version) " by " (newest.author) }
                @if let Some(n) = &notice { p.notice role="status" { (n) } }
                @if let Some((_, problems)) = refused {
                    div.error role="alert" {
                        p { "Not saved: " (problems.len()) " problem(s)." }
                        ul.problems {
                            @for p in problems {
                                li { code { (p.field) } " (line " (p.line) "): " (p.message) }
                            }
                        }
                    }
                }
                @if configure {
                    form method="post" action={ "/console/t/" (who.tenant) "/config" } {
                        (csrf(&who.session.csrf))
                        input type="hidden" name="base_version" value=(newest.version);
                        label for="toml" { "Tenant configuration (TOML)" }
                        textarea id="toml" name="toml" rows="24" spellcheck="false" { (text) }
                        label for="comment" { "What changed and why" }
                        input id="comment" name="comment" type="text";
                        button type="submit" { "Save as version " (newest.version + 1) }
                    }
                } @else {
                    pre { (text) }
                }
                h2 { "History" }
                table {
                    thead { tr { th scope="col" { "Version" } th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Why" } } }
                    tbody {
                        @for v in &versions {
                            tr {
                                td { a href={ "/console/t/" (who.tenant) "/config/" (v.version) } { "Version " (v.version) } }
                                td { (pages::time_ms(Some(v.created_at * 1000))) }
                                td { (v.author) }
                                td { (v.comment) }
                            }
                        }
                    }
                }
            }
        }
        None => {
            let path = who
                .st
                .config_dir
                .join("tenants")
                .join(format!("{}.toml", who.tenant));
            let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(path))
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|t| who.st.parse_tenant_text(&who.tenant, t))
                .map(|t| managed::redacted_text(&t))
                .unwrap_or_default();
            html! {
                p.notice { "This tenant is configured by the file tenants/" (who.tenant) ".toml on the daemon's machine: it is shown read-only, and the operator changes it there." }
                pre { (text) }
            }
        }
    };
    page(
        status,
        layout(
            &format!("Configuration of {}", who.tenant),
            Some(&who.nav()),
            body,
        ),
    )
}

/// `GET /console/t/{tenant}/config`.
async fn config_page(who: Signed<Read>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let notice = q
        .get("saved")
        .map(|v| format!("Saved and applied as version {v}."));
    render_config(&who, StatusCode::OK, None, notice).await
}

/// Applies a change made in the console and answers with the page.
async fn apply_from_console(
    who: Signed<Configure>,
    text: String,
    base: i64,
    comment: &str,
) -> Response {
    let author = who.author();
    let result = change_config(
        &who.live,
        &who.tenant,
        who.role,
        &author,
        text.clone(),
        base,
        comment,
        "console",
    )
    .await;
    let reader = who.as_reader();
    match result {
        Ok(applied) => Redirect::to(&format!(
            "/console/t/{}/config?saved={}",
            who.tenant,
            applied.version.unwrap_or_default()
        ))
        .into_response(),
        Err(ApplyError::Invalid(problems)) => {
            render_config(
                &reader,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some((&text, &problems)),
                None,
            )
            .await
        }
        Err(ApplyError::Conflict(current)) => {
            let msg = conflict_message(&who.tenant, base, current);
            render_config(&reader, StatusCode::CONFLICT, None, Some(msg)).await
        }
        Err(ApplyError::FileManaged(_) | ApplyError::NotManaged) => pages::message(
            StatusCode::CONFLICT,
            "Read-only",
            "This tenant is configured by a file on the daemon's machine.",
        ),
        Err(ApplyError::Failed(why)) => {
            tracing::error!("applying a configuration change from the console: {why}");
            session::Refused::Unavailable.into_response()
        }
    }
}

/// `POST /console/t/{tenant}/config`.
async fn save_config(posted: Posted<Configure>) -> Response {
    let f = posted.fields;
    let base = f
        .get("base_version")
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    let text = f.get("toml").cloned().unwrap_or_default();
    let comment = f.get("comment").cloned().unwrap_or_default();
    apply_from_console(posted.who, text, base, &comment).await
}

/// `GET /console/t/{tenant}/config/{version}`: the diff and a rollback.
async fn version_page(who: Signed<Read>, Path((_, version)): Path<(String, i64)>) -> Response {
    let versions = match who.versions().await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let Some(at) = versions.iter().position(|v| v.version == version) else {
        return pages::message(StatusCode::NOT_FOUND, "Not found", "No such version.");
    };
    let v = &versions[at];
    let (old, old_name) = match versions.get(at + 1) {
        Some(p) => (p.text.as_str(), format!("version {}", p.version)),
        None => ("", "(nothing)".to_owned()),
    };
    let diff = managed::diff(old, &v.text, &old_name, &format!("version {version}"));
    let newest = versions[0].version;
    page(
        StatusCode::OK,
        layout(
            &format!("Version {version} of {}", who.tenant),
            Some(&who.nav()),
            html! {
                p { (pages::time_ms(Some(v.created_at * 1000))) " · " (v.author) " · " (v.comment) }
                h2 { "Changes from " (old_name) }
                (pages::diff(&diff))
                @if who.may(Access::Configure) && version != newest {
                    form method="post" action={ "/console/t/" (who.tenant) "/config/" (version) "/rollback" } {
                        (csrf(&who.session.csrf))
                        input type="hidden" name="base_version" value=(newest);
                        button type="submit" { "Roll back to version " (version) }
                    }
                }
                p { a href={ "/console/t/" (who.tenant) "/config" } { "Back to the configuration" } }
            },
        ),
    )
}

/// `POST /console/t/{tenant}/config/{version}/rollback`.
async fn rollback(Path((_, version)): Path<(String, i64)>, posted: Posted<Configure>) -> Response {
    let base = posted
        .fields
        .get("base_version")
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    let who = posted.who;
    let text = match who.versions().await {
        Ok(v) => v.into_iter().find(|v| v.version == version).map(|v| v.text),
        Err(r) => return r.into_response(),
    };
    let Some(text) = text else {
        return pages::message(StatusCode::NOT_FOUND, "Not found", "No such version.");
    };
    apply_from_console(
        who,
        text,
        base,
        &format!("rolled back to version {version}"),
    )
    .await
}

/// `GET /console/t/{tenant}/secrets`.
async fn secrets_page(who: Signed<Read>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    render_secrets(&who, StatusCode::OK, q.get("done").cloned()).await
}

async fn render_secrets(
    who: &Signed<Read>,
    status: StatusCode,
    notice: Option<String>,
) -> Response {
    let list = match who.live.shared().secrets().list(&who.tenant).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "listing secrets for the console");
            return session::Refused::Unavailable.into_response();
        }
    };
    let configure = who.may(Access::Configure);
    page(
        status,
        layout(
            &format!("Secrets of {}", who.tenant),
            Some(&who.nav()),
            html! {
                p { "Secrets are write-only: their values are never shown. Reference one in the configuration as " code { "secret:NAME" } "." }
                @if let Some(n) = &notice { p.notice role="status" { (n) } }
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Set" } @if configure { th scope="col" { span.sr { "Actions" } } } } }
                    tbody {
                        @for m in &list {
                            tr {
                                td { code { (m.name) } }
                                td { (pages::time_ms(Some(m.updated_at * 1000))) }
                                @if configure {
                                    td { (button(&format!("/console/t/{}/secrets/{}/delete", who.tenant, m.name), &format!("Delete {}", m.name), &who.session.csrf)) }
                                }
                            }
                        }
                    }
                }
                @if configure {
                    h2 { "Set a secret" }
                    form method="post" action={ "/console/t/" (who.tenant) "/secrets" } {
                        (csrf(&who.session.csrf))
                        label for="name" { "Name" }
                        input id="name" name="name" type="text" required pattern="[A-Za-z0-9._-]{1,128}";
                        label for="value" { "Value" }
                        input id="value" name="value" type="password" autocomplete="off" required;
                        button type="submit" { "Set secret" }
                    }
                }
            },
        ),
    )
}

async fn secret_done(who: Signed<Configure>, name: &str, value: Option<String>) -> Response {
    let author = who.author();
    let deleting = value.is_none();
    let result = change_secret(
        &who.live,
        &who.tenant,
        who.role,
        &author,
        name,
        value,
        "console",
    )
    .await;
    let done = match result {
        Ok(()) if deleting => format!("Deleted {name}."),
        Ok(()) => format!("Set {name}."),
        Err(SecretChange::NotManaged) => {
            return pages::message(
                StatusCode::CONFLICT,
                "Read-only",
                "This tenant is configured by a file on the daemon's machine; its operator sets its secrets.",
            );
        }
        Err(SecretChange::Invalid(why)) => why,
        Err(SecretChange::Missing) => format!("There is no secret {name}."),
        Err(SecretChange::Unavailable) => return session::Refused::Unavailable.into_response(),
    };
    let to = format!(
        "/console/t/{}/secrets?done={}",
        who.tenant,
        url::form_urlencoded::byte_serialize(done.as_bytes()).collect::<String>()
    );
    Redirect::to(&to).into_response()
}

/// `POST /console/t/{tenant}/secrets`: set one.
async fn set_secret(posted: Posted<Configure>) -> Response {
    let name = posted.fields.get("name").cloned().unwrap_or_default();
    let value = posted.fields.get("value").cloned().unwrap_or_default();
    secret_done(posted.who, &name, Some(value)).await
}

/// `POST /console/t/{tenant}/secrets/{name}/delete`.
async fn delete_secret(
    Path((_, name)): Path<(String, String)>,
    posted: Posted<Configure>,
) -> Response {
    secret_done(posted.who, &name, None).await
}
