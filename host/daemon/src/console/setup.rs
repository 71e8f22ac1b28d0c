//! Guided setup of an instance, generated from its plugin's manifest:
//! settings (with their descriptions, defaults and allowed values),
//! credential slots (the fields of the chosen kind; secrets write-only),
//! network access, schedules within the plugin's range, webhook routes
//! (a token or HMAC secret generated and shown once), and a Verify step
//! that runs the plugin's `test-connection` (or `verify`) action.
//!
//! One form holds the first four steps and saves them as one new
//! configuration version, checked as every version is; a refused save
//! shows every problem and marks the steps they concern. A secret typed
//! into a credential field is stored as the tenant secret
//! `<instance>.<slot>.<field>` and referenced as `secret:` that name; left
//! empty, the secret already there is kept.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::Value;
use switchyard_runtime::Manifest;
use switchyard_runtime::credentials::CredentialKind;

use super::pages::{self, csrf, layout, page};
use super::session::{Posted, Refused, Signed};
use crate::api::auth::{Access, Configure, Read};
use crate::api::config::change_config;
use crate::api::instances::{InstanceChange, generate_webhook_secret};
use crate::problem::Problem;
use crate::state::ApplyError;

/// A credential field: `(name, secret, required)`.
pub type Field = (&'static str, bool, bool);

/// The fields of each credential kind, as
/// `switchyard_runtime::credentials::Auth` names them.
pub const KIND_FIELDS: &[(CredentialKind, &[Field])] = &[
    (
        CredentialKind::Basic,
        &[
            ("username", false, true),
            ("password", true, true),
            ("extra_header", false, false),
            ("extra_header_value", true, false),
        ],
    ),
    (
        CredentialKind::Oauth2ClientCredentials,
        &[
            ("token_url", false, true),
            ("client_id", false, true),
            ("client_secret", true, true),
            ("scope", false, false),
            ("extra_header", false, false),
            ("extra_header_value", true, false),
        ],
    ),
    (
        CredentialKind::ApiKey,
        &[("header", false, true), ("key", true, true)],
    ),
    (CredentialKind::Bearer, &[("token", true, true)]),
    (CredentialKind::SecretUrl, &[("url", true, true)]),
];

fn fields_of(kind: &str) -> &'static [Field] {
    KIND_FIELDS
        .iter()
        .find(|(k, _)| k.as_str() == kind)
        .map_or(&[], |(_, f)| f)
}

/// The action the Verify step runs, if the plugin has one.
pub fn verify_action(m: &Manifest) -> Option<&switchyard_runtime::ActionSpec> {
    ["test-connection", "verify"]
        .iter()
        .find_map(|name| m.action(name))
}

/// The tenant's text as a table, and the index of `instance` in it.
fn doc_of(text: &str, instance: &str) -> (toml::Table, Option<usize>) {
    let doc: toml::Table = text.parse().unwrap_or_default();
    let at = doc
        .get("instance")
        .and_then(toml::Value::as_array)
        .and_then(|a| {
            a.iter()
                .position(|i| i.get("id").and_then(toml::Value::as_str) == Some(instance))
        });
    (doc, at)
}

/// What the page shows: the instance's table (the stored one, or the one a
/// refused save tried), its plugin's manifest, and the newest version.
struct Setup {
    tenant: String,
    instance: String,
    table: toml::Table,
    manifest: Manifest,
    /// Whether the instance is in the stored configuration.
    exists: bool,
    /// Its index in the tenant's `[[instance]]` list (a new one is added
    /// last), as problems name it.
    index: usize,
    base_version: i64,
}

async fn load(who: &Signed<Read>, instance: &str, plugin: Option<&str>) -> Result<Setup, Response> {
    let versions = who.versions().await.map_err(IntoResponse::into_response)?;
    let Some(newest) = versions.first() else {
        return Err(pages::message(
            StatusCode::CONFLICT,
            "Read-only",
            "This tenant is configured by a file on the daemon's machine; the guided setup \
             is for tenants managed through the admin API.",
        ));
    };
    let (doc, at) = doc_of(&newest.text, instance);
    let table = at
        .and_then(|i| doc["instance"].as_array()?.get(i)?.as_table().cloned())
        .unwrap_or_default();
    let plugin_ref = table
        .get("plugin")
        .and_then(toml::Value::as_str)
        .or(plugin)
        .unwrap_or_default()
        .to_owned();
    let id = plugin_ref.split('@').next().unwrap_or_default();
    let Some(entry) = who.st.catalog().resolve(id, None).ok() else {
        return Err(pages::message(
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("There is no instance `{instance}`, nor an installed plugin `{plugin_ref}`."),
        ));
    };
    let manifest = who.st.instance(&who.tenant, instance).map_or_else(
        || entry.plugin.manifest().clone(),
        |i| i.plugin().manifest().clone(),
    );
    let mut table = table;
    if at.is_none() {
        table.insert("id".into(), instance.into());
        table.insert("plugin".into(), plugin_ref.clone().into());
    }
    let count = doc
        .get("instance")
        .and_then(toml::Value::as_array)
        .map_or(0, Vec::len);
    Ok(Setup {
        tenant: who.tenant.clone(),
        instance: instance.to_owned(),
        table,
        manifest,
        exists: at.is_some(),
        index: at.unwrap_or(count),
        base_version: newest.version,
    })
}

fn str_at<'a>(t: &'a toml::Table, path: &[&str]) -> Option<&'a str> {
    let (last, head) = path.split_last()?;
    let mut at = t;
    for p in head {
        at = at.get(*p)?.as_table()?;
    }
    at.get(*last)?.as_str()
}

/// `GET /console/t/{tenant}/setup`: the instances, and adding one.
pub async fn index(who: Signed<Read>) -> Response {
    let versions = match who.versions().await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let instances: Vec<(String, String)> = versions
        .first()
        .and_then(|v| v.text.parse::<toml::Table>().ok())
        .and_then(|d| d.get("instance")?.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|i| {
            Some((
                i.get("id")?.as_str()?.to_owned(),
                i.get("plugin")?.as_str()?.to_owned(),
            ))
        })
        .collect();
    let mut plugins: Vec<String> = who
        .st
        .catalog()
        .ids()
        .into_iter()
        .map(str::to_owned)
        .collect();
    plugins.sort();
    let configure = who.may(Access::Configure);
    page(
        StatusCode::OK,
        layout(
            "Set up",
            Some(&who.nav()),
            html! {
                @if versions.is_empty() {
                    p.notice { "This tenant is configured by a file on the daemon's machine; the operator sets it up there." }
                } @else {
                    ul {
                        @for (id, plugin) in &instances {
                            li { a href={ "/console/t/" (who.tenant) "/setup/" (id) } { "Set up " (id) } " (" (plugin) ")" }
                        }
                    }
                    @if configure {
                        h2 { "Add an instance" }
                        form method="get" action={ "/console/t/" (who.tenant) "/setup/new" } {
                            label for="plugin" { "Plugin" }
                            select id="plugin" name="plugin" {
                                @for p in &plugins { option value=(p) { (p) } }
                            }
                            label for="id" { "Instance id" }
                            input id="id" name="id" type="text" required pattern="[a-z0-9_-]{1,64}";
                            button type="submit" { "Start the guided setup" }
                        }
                    }
                }
            },
        ),
    )
}

/// `GET /console/t/{tenant}/setup/new?plugin=P&id=I`: to the setup of a
/// new instance.
pub async fn start(who: Signed<Configure>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let (Some(plugin), Some(id)) = (q.get("plugin"), q.get("id")) else {
        return pages::message(
            StatusCode::BAD_REQUEST,
            "Missing",
            "Choose a plugin and an instance id.",
        );
    };
    if !crate::config::is_id(id) {
        return pages::message(
            StatusCode::BAD_REQUEST,
            "Invalid id",
            "An instance id is 1-64 characters of a-z, 0-9, - and _.",
        );
    }
    let to = format!(
        "/console/t/{}/setup/{id}?plugin={}",
        who.tenant,
        url::form_urlencoded::byte_serialize(plugin.as_bytes()).collect::<String>()
    );
    Redirect::to(&to).into_response()
}

/// `GET /console/t/{tenant}/setup/{instance}`.
pub async fn form(
    who: Signed<Read>,
    Path((_, instance)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let setup = match load(&who, &instance, q.get("plugin").map(String::as_str)).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let notice = q
        .get("saved")
        .map(|v| format!("Saved and applied as version {v}."));
    render(&who, &setup, StatusCode::OK, &[], notice, None).await
}

/// What the last Verify said, from the action's run statistics.
async fn last_verify(who: &Signed<Read>, s: &Setup) -> Option<(String, Option<String>)> {
    let action = verify_action(&s.manifest)?;
    let stats = who.st.db().run_stats(&s.tenant, &s.instance).await.ok()?;
    let st = stats
        .into_iter()
        .find(|r| r.kind == "action" && r.name == action.name)?;
    Some((st.last_outcome, st.last_error))
}

/// Whether any problem concerns `prefix` of the instance.
fn has_problem(problems: &[Problem], at: &str, prefix: &str) -> bool {
    problems
        .iter()
        .any(|p| p.is_error() && p.field.starts_with(&format!("{at}.{prefix}")))
}

fn step(n: u32, title: &str, done: bool, anchor: &str) -> Markup {
    html! {
        li {
            a href={ "#" (anchor) } { "Step " (n) ": " (title) }
            " — "
            @if done { span.done { "complete" } } @else { span.todo { "to do" } }
        }
    }
}

async fn render(
    who: &Signed<Read>,
    s: &Setup,
    status: StatusCode,
    problems: &[Problem],
    notice: Option<String>,
    verified: Option<Markup>,
) -> Response {
    let m = &s.manifest;
    let t = &s.table;
    let configure = who.may(Access::Configure);
    let at = format!("instance[{}]", s.index);
    let settings_done = s.exists
        && !has_problem(problems, &at, "config")
        && m.config
            .iter()
            .filter(|c| c.required && c.default.is_none())
            .all(|c| str_at(t, &["config", &c.key]).is_some_and(|v| !v.is_empty()));
    let creds_done = s.exists
        && !has_problem(problems, &at, "credentials")
        && m.credentials
            .iter()
            .filter(|c| c.required)
            .all(|c| str_at(t, &["credentials", &c.name, "kind"]).is_some());
    let egress_done = s.exists && !has_problem(problems, &at, "egress");
    let jobs_done = s.exists && !has_problem(problems, &at, "jobs");
    let hooks_done = s.exists
        && m.webhooks.iter().all(|w| {
            t.get("webhooks")
                .and_then(|h| h.get(&w.route))
                .is_some_and(|h| h.get("token").is_some() || h.get("hmac_secret").is_some())
        });
    let last = last_verify(who, s).await;
    let verify_done = last.as_ref().is_some_and(|(o, _)| o == "ok");
    let egress: Vec<&str> = t
        .get("egress")
        .and_then(toml::Value::as_array)
        .map(|a| a.iter().filter_map(toml::Value::as_str).collect())
        .unwrap_or_default();
    let base = format!("/console/t/{}/setup/{}", s.tenant, s.instance);
    let disabled = !configure;
    let body = html! {
        p { "Plugin " strong { (m.id) " " (m.version) } ": " (m.description) }
        @if let Some(n) = &notice { p.notice role="status" { (n) } }
        @if !problems.is_empty() {
            div.error role="alert" {
                p { "Not saved: " (problems.iter().filter(|p| p.is_error()).count()) " problem(s)." }
                ul.problems {
                    @for p in problems {
                        li { code { (p.field) } ": " (p.message) }
                    }
                }
            }
        }
        ol.steps aria-label="Steps" {
            (step(1, "Settings", settings_done, "settings"))
            (step(2, "Credentials", creds_done, "credentials"))
            (step(3, "Network access", egress_done, "egress"))
            (step(4, "Schedules", jobs_done, "schedules"))
            (step(5, "Webhooks", hooks_done, "webhooks"))
            (step(6, "Verify", verify_done, "verify"))
        }
        form method="post" action=(base) {
            @if configure { (csrf(&who.session.csrf)) }
            input type="hidden" name="base_version" value=(s.base_version);
            input type="hidden" name="plugin" value=(str_at(t, &["plugin"]).unwrap_or(&m.id));
            fieldset id="settings" disabled[disabled] {
                legend { "1. Settings" }
                @if m.config.is_empty() { p { "This plugin has no settings." } }
                @for c in &m.config {
                    @let name = format!("config.{}", c.key);
                    @let value = str_at(t, &["config", &c.key]).unwrap_or("");
                    @let choices = c.schema.as_ref().and_then(|v| v.schema()["enum"].as_array().cloned());
                    label for=(name) { (c.key) @if c.required && c.default.is_none() { " (required)" } }
                    p.hint id={ (name) "-hint" } { (c.description) @if let Some(d) = c.default.as_ref().filter(|d| !d.is_empty()) { " Default: " code { (d) } "." } }
                    @if let Some(choices) = choices {
                        select id=(name) name=(name) aria-describedby={ (name) "-hint" } {
                            option value="" { "(default)" }
                            @for v in &choices {
                                @let v = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
                                option value=(v) selected[v == value] { (v) }
                            }
                        }
                    } @else {
                        input id=(name) name=(name) type="text" value=(value)
                            placeholder=(c.default.clone().unwrap_or_default()) aria-describedby={ (name) "-hint" };
                    }
                }
            }
            fieldset id="credentials" disabled[disabled] {
                legend { "2. Credentials" }
                @if m.credentials.is_empty() { p { "This plugin needs no credentials." } }
                @for slot in &m.credentials {
                    @let kind = str_at(t, &["credentials", &slot.name, "kind"]).map(str::to_owned)
                        .or_else(|| slot.required.then(|| slot.kinds[0].as_str().to_owned()))
                        .unwrap_or_default();
                    fieldset {
                        legend { (slot.name) @if slot.required { " (required)" } }
                        p.hint { (slot.description) }
                        @let kname = format!("cred.{}.kind", slot.name);
                        label for=(kname) { "Kind" }
                        select id=(kname) name=(kname) {
                            @if !slot.required { option value="" selected[kind.is_empty()] { "(not bound)" } }
                            @for k in &slot.kinds {
                                option value=(k.as_str()) selected[k.as_str() == kind] { (k.as_str()) }
                            }
                        }
                        p.hint { "Changing the kind shows its fields after saving." }
                        @let hname = format!("cred.{}.hosts", slot.name);
                        @let hosts: Vec<String> = t.get("credentials").and_then(|c| c.get(&slot.name)).and_then(|c| c.get("hosts")).and_then(toml::Value::as_array)
                            .map(|a| a.iter().filter_map(|h| h.as_str().map(str::to_owned)).collect()).unwrap_or_default();
                        label for=(hname) { "Hosts it may be sent to (one per line)" }
                        textarea id=(hname) name=(hname) rows="2" { (hosts.join("\n")) }
                        @for (field, secret, required) in fields_of(&kind) {
                            @let fname = format!("cred.{}.{}", slot.name, field);
                            @let current = str_at(t, &["credentials", &slot.name, field]);
                            label for=(fname) { (field) @if *required { " (required)" } }
                            @if *secret {
                                input id=(fname) name=(fname) type="password" autocomplete="off"
                                    placeholder=(if current.is_some() { "set; leave empty to keep it" } else { "not set" });
                            } @else {
                                input id=(fname) name=(fname) type="text" value=(current.unwrap_or(""));
                            }
                        }
                    }
                }
            }
            fieldset id="egress" disabled[disabled] {
                legend { "3. Network access" }
                p.hint {
                    "Where the instance may send requests, one entry per line (scheme://host[:port]). "
                    @for need in &m.egress { (need.description) ". " }
                }
                label for="egress-list" { "Allowed destinations" }
                textarea id="egress-list" name="egress" rows="3" { (egress.join("\n")) }
            }
            fieldset id="schedules" disabled[disabled] {
                legend { "4. Schedules" }
                @if m.jobs.is_empty() { p { "This plugin has no scheduled jobs." } }
                @for j in &m.jobs {
                    @let job = t.get("jobs").and_then(|x| x.get(&j.name));
                    @let enabled = job.and_then(|x| x.get("enabled")).and_then(toml::Value::as_bool).unwrap_or(true);
                    @let interval = job.and_then(|x| x.get("interval")).and_then(toml::Value::as_integer).unwrap_or(j.default_interval_secs.into());
                    @let ename = format!("job.{}.enabled", j.name);
                    @let iname = format!("job.{}.interval", j.name);
                    p.hint { strong { (j.name) } ": " (j.description) }
                    label for=(ename) { input id=(ename) name=(ename) type="checkbox" value="on" checked[enabled]; " Run " (j.name) " on a schedule" }
                    label for=(iname) { "Every (seconds, " (j.min_interval_secs) "–" (j.max_interval_secs) ")" }
                    input id=(iname) name=(iname) type="number" min=(j.min_interval_secs) max=(j.max_interval_secs) value=(interval);
                }
            }
            @if configure { button type="submit" { "Save steps 1–4" } }
        }
        section id="webhooks" {
            h2 { "5. Webhooks" }
            @if m.webhooks.is_empty() { p { "This plugin receives no webhooks." } }
            @for w in &m.webhooks {
                @let hook = t.get("webhooks").and_then(|h| h.get(&w.route));
                @let secured = hook.map(|h| if h.get("hmac_secret").is_some() { "HMAC signature" } else if h.get("token").is_some() { "token" } else { "addresses only" });
                p {
                    strong { (w.route) } " (" (w.mode) "): " (w.description) br;
                    "URL to give to the sender: " code { "/hooks/" (s.tenant) "/" (s.instance) "/" (w.route) } br;
                    "Verified by: " (secured.unwrap_or("not set up: deliveries are refused"))
                }
                @if configure && s.exists {
                    (pages::button(&format!("{base}/webhooks/{}/token", w.route), &format!("Generate a token for {}", w.route), &who.session.csrf))
                    " "
                    (pages::button(&format!("{base}/webhooks/{}/hmac", w.route), &format!("Generate an HMAC secret for {}", w.route), &who.session.csrf))
                }
            }
        }
        section id="verify" {
            h2 { "6. Verify" }
            @match verify_action(m) {
                None => p { "This plugin has no test-connection or verify action." },
                Some(a) => {
                    p { (a.description) }
                    @if let Some((outcome, error)) = &last {
                        p { "Last result: " strong { (outcome) } @if let Some(e) = error { " — " (e) } }
                    }
                    @if let Some(v) = &verified { (v) }
                    @if configure && s.exists {
                        (pages::button(&format!("{base}/verify"), &format!("Run {}", a.name), &who.session.csrf))
                    }
                }
            }
        }
    };
    page(
        status,
        layout(
            &format!("Set up {} ({})", s.instance, m.id),
            Some(&who.nav()),
            body,
        ),
    )
}

/// The instance's new table from the posted form; secrets typed in are
/// stored first.
async fn table_from_form(
    who: &Signed<Configure>,
    s: &Setup,
    f: &BTreeMap<String, String>,
) -> Result<toml::Table, Response> {
    let m = &s.manifest;
    let mut t = s.table.clone();
    let plugin = f.get("plugin").cloned().unwrap_or_else(|| m.id.clone());
    t.insert("plugin".into(), plugin.into());
    let mut config = toml::Table::new();
    for c in &m.config {
        if let Some(v) = f
            .get(&format!("config.{}", c.key))
            .filter(|v| !v.trim().is_empty())
        {
            config.insert(c.key.clone(), v.trim().into());
        }
    }
    set_or_remove(&mut t, "config", config);
    let mut creds = toml::Table::new();
    for slot in &m.credentials {
        let kind = f
            .get(&format!("cred.{}.kind", slot.name))
            .cloned()
            .unwrap_or_default();
        if kind.is_empty() {
            continue;
        }
        let old = s
            .table
            .get("credentials")
            .and_then(|c| c.get(&slot.name))
            .and_then(toml::Value::as_table);
        let same_kind = old
            .and_then(|o| o.get("kind"))
            .and_then(toml::Value::as_str)
            == Some(kind.as_str());
        let mut c = toml::Table::new();
        c.insert("kind".into(), kind.clone().into());
        let hosts: Vec<toml::Value> = f
            .get(&format!("cred.{}.hosts", slot.name))
            .map(|h| lines(h).into_iter().map(toml::Value::from).collect())
            .unwrap_or_default();
        c.insert("hosts".into(), hosts.into());
        for (field, secret, _) in fields_of(&kind) {
            let typed = f
                .get(&format!("cred.{}.{}", slot.name, field))
                .map(|v| v.trim())
                .filter(|v| !v.is_empty());
            let value = match (typed, secret) {
                (Some(v), true) => {
                    let name = format!("{}.{}.{}", s.instance, slot.name, field);
                    let stored = who
                        .live
                        .shared()
                        .secrets()
                        .set(&s.tenant, &name, &secrecy::SecretString::from(v.to_owned()))
                        .await;
                    if let Err(e) = stored {
                        tracing::error!(error = %e, "storing a secret from the guided setup");
                        return Err(Refused::Unavailable.into_response());
                    }
                    crate::api::config::audit_change(
                        who.live.shared(),
                        &s.tenant,
                        &who.author(),
                        "console",
                        format!("secret {name} set"),
                    )
                    .await;
                    Some(format!("secret:{name}"))
                }
                (Some(v), false) => Some(v.to_owned()),
                // Kept: the secret reference already there.
                (None, true) if same_kind => old
                    .and_then(|o| o.get(*field))
                    .and_then(toml::Value::as_str)
                    .map(str::to_owned),
                (None, _) => None,
            };
            if let Some(v) = value {
                c.insert((*field).into(), v.into());
            }
        }
        creds.insert(slot.name.clone(), c.into());
    }
    set_or_remove(&mut t, "credentials", creds);
    let egress: Vec<toml::Value> = lines(f.get("egress").map_or("", String::as_str))
        .into_iter()
        .map(toml::Value::from)
        .collect();
    if egress.is_empty() {
        t.remove("egress");
    } else {
        t.insert("egress".into(), egress.into());
    }
    let mut jobs = toml::Table::new();
    for j in &m.jobs {
        let mut job = toml::Table::new();
        let enabled = f.contains_key(&format!("job.{}.enabled", j.name));
        job.insert("enabled".into(), enabled.into());
        if let Some(v) = f.get(&format!("job.{}.interval", j.name)) {
            match v.trim().parse::<i64>() {
                Ok(n) => job.insert("interval".into(), n.into()),
                Err(_) => job.insert("interval".into(), v.trim().into()),
            };
        }
        jobs.insert(j.name.clone(), job.into());
    }
    set_or_remove(&mut t, "jobs", jobs);
    Ok(t)
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn set_or_remove(t: &mut toml::Table, key: &str, value: toml::Table) {
    if value.is_empty() {
        t.remove(key);
    } else {
        t.insert(key.into(), value.into());
    }
}

/// Stores the tenant's configuration with `table` as the instance's, and
/// answers with the page (saved, or every problem).
async fn save_table(
    who: Signed<Configure>,
    mut s: Setup,
    table: toml::Table,
    comment: &str,
) -> Response {
    let versions = match who.versions().await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let Some(newest) = versions.first() else {
        return Refused::Forbidden("this tenant is configured by a file".into()).into_response();
    };
    let text = match crate::config::managed::replace_instance(
        &newest.text,
        &s.instance,
        Some(table.clone()),
    ) {
        Ok(t) => t,
        Err(why) => return pages::message(StatusCode::CONFLICT, "Cannot change", &why),
    };
    let author = who.author();
    let result = change_config(
        &who.live,
        &who.tenant,
        who.role,
        &author,
        text,
        s.base_version,
        comment,
        "console",
    )
    .await;
    let reader = who.as_reader();
    match result {
        Ok(applied) => Redirect::to(&format!(
            "/console/t/{}/setup/{}?saved={}",
            s.tenant,
            s.instance,
            applied.version.unwrap_or_default()
        ))
        .into_response(),
        Err(ApplyError::Invalid(problems)) => {
            s.table = table;
            render(
                &reader,
                &s,
                StatusCode::UNPROCESSABLE_ENTITY,
                &problems,
                None,
                None,
            )
            .await
        }
        Err(ApplyError::Conflict(current)) => {
            let msg = crate::api::config::conflict_message(&s.tenant, s.base_version, current);
            render(&reader, &s, StatusCode::CONFLICT, &[], Some(msg), None).await
        }
        Err(ApplyError::FileManaged(_) | ApplyError::NotManaged) => {
            Refused::Forbidden("this tenant is configured by a file".into()).into_response()
        }
        Err(ApplyError::Failed(why)) => {
            tracing::error!("saving from the guided setup: {why}");
            Refused::Unavailable.into_response()
        }
    }
}

/// `POST /console/t/{tenant}/setup/{instance}`: saves steps 1–4.
pub async fn save(
    Path((_, instance)): Path<(String, String)>,
    posted: Posted<Configure>,
) -> Response {
    let who = posted.who;
    let plugin = posted.fields.get("plugin").cloned();
    let s = match load(&who.as_reader(), &instance, plugin.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if posted
        .fields
        .get("base_version")
        .and_then(|v| v.parse::<i64>().ok())
        != Some(s.base_version)
    {
        let msg = crate::api::config::conflict_message(&s.tenant, -1, s.base_version);
        return render(
            &who.as_reader(),
            &s,
            StatusCode::CONFLICT,
            &[],
            Some(msg),
            None,
        )
        .await;
    }
    let table = match table_from_form(&who, &s, &posted.fields).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let comment = format!("guided setup of {instance}");
    save_table(who, s, table, &comment).await
}

/// `POST /console/t/{tenant}/setup/{instance}/webhooks/{route}/{token|hmac}`:
/// a new random secret for the route, stored and referenced, shown once.
pub async fn generate(
    Path((_, instance, route, what)): Path<(String, String, String, String)>,
    posted: Posted<Configure>,
) -> Response {
    let who = posted.who;
    let reader = who.as_reader();
    let s = match load(&reader, &instance, None).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let made = generate_webhook_secret(
        &who.live,
        &who.tenant,
        who.role,
        &who.author(),
        &instance,
        &route,
        &what,
        s.base_version,
        "console",
    )
    .await;
    match made {
        // Shown once: the page is rendered here, not after a redirect.
        Ok(g) => pages::message(
            StatusCode::OK,
            "Webhook secret generated",
            &format!(
                "Give the sender of route `{route}` this {what} now: it is not shown again. \
                 URL: {path} on this daemon · header: {header} · value: {value}",
                path = g.path,
                header = g.header,
                value = g.value,
            ),
        ),
        Err(InstanceChange::Missing(why)) => {
            pages::message(StatusCode::NOT_FOUND, "Not found", &why)
        }
        Err(InstanceChange::Apply(ApplyError::Invalid(problems))) => {
            render(
                &reader,
                &s,
                StatusCode::UNPROCESSABLE_ENTITY,
                &problems,
                None,
                None,
            )
            .await
        }
        Err(InstanceChange::Apply(ApplyError::Conflict(current))) => {
            let msg = crate::api::config::conflict_message(&s.tenant, s.base_version, current);
            render(&reader, &s, StatusCode::CONFLICT, &[], Some(msg), None).await
        }
        Err(_) => Refused::Unavailable.into_response(),
    }
}

/// `POST /console/t/{tenant}/setup/{instance}/verify`: runs the plugin's
/// test-connection (or verify) action as the signed-in admin, holding the
/// plugin role the action requires (`admin` when it names none).
pub async fn verify(
    Path((_, instance)): Path<(String, String)>,
    posted: Posted<Configure>,
) -> Response {
    let who = posted.who;
    let reader = who.as_reader();
    let s = match load(&reader, &instance, None).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (Some(inst), Some(action)) = (
        who.st.instance(&s.tenant, &instance),
        verify_action(&s.manifest),
    ) else {
        return pages::message(
            StatusCode::NOT_FOUND,
            "Not found",
            "The instance is not running, or its plugin has nothing to verify with.",
        );
    };
    let role = action
        .required_role
        .clone()
        .unwrap_or_else(|| "admin".into());
    let input = serde_json::value::RawValue::from_string("{}".into()).expect("JSON");
    let call = crate::api::actions::Call {
        tenant: &s.tenant,
        instance: &instance,
        action: &action.name,
        input: &input,
        actor: switchyard_runtime::Actor {
            id: format!("console:{}", who.session.token.id),
            email: None,
            roles: vec![role],
        },
        request_id: "console",
        started: Instant::now(),
    };
    let answer = match crate::api::actions::call_admitted(&who.st, inst, call).await {
        Err(_) => html! { p.error role="alert" { "The instance is busy; try again in a moment." } },
        Ok(Ok(out)) => {
            let out: Value = serde_json::from_str(out.get()).unwrap_or(Value::Null);
            html! {
                div.notice role="status" {
                    p { "Verified: " (action.name) " succeeded." }
                    pre { (serde_json::to_string_pretty(&out).unwrap_or_default()) }
                }
            }
        }
        Ok(Err(e)) => html! {
            div.error role="alert" {
                p { "Failed: " code { (crate::errors::invoke_error_code(&e)) } " — " (e.to_string()) }
            }
        },
    };
    render(&reader, &s, StatusCode::OK, &[], None, Some(answer)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_runtime::credentials::Auth;

    /// The form's fields are the credential schema's: every field of a
    /// kind is accepted (the schema refuses unknown ones), and the
    /// required ones alone make a credential.
    #[test]
    fn the_form_fields_are_the_credential_schemas() {
        for (kind, fields) in KIND_FIELDS {
            let value = |f: &str| match f {
                "token_url" | "url" => "https://id.example.com/token".to_owned(),
                _ => format!("{f}-value"),
            };
            let mut all = toml::Table::new();
            all.insert("kind".into(), kind.as_str().into());
            let mut required = all.clone();
            for (f, _, req) in *fields {
                all.insert((*f).into(), value(f).into());
                if *req {
                    required.insert((*f).into(), value(f).into());
                }
            }
            for t in [&all, &required] {
                let parsed: Auth<String> = toml::Value::Table(t.clone())
                    .try_into()
                    .unwrap_or_else(|e| panic!("{}: {e}", kind.as_str()));
                assert_eq!(parsed.kind(), *kind);
            }
        }
        assert_eq!(KIND_FIELDS.len(), 5, "every kind has its fields");
    }
}
