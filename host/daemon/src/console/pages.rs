//! The console's HTML, rendered on the server (maud escapes every value).
//! Pages work without JavaScript; each button is a form that posts back
//! and is redirected to the page it came from.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;

/// Security headers of every console page: no script at all, styles
/// only from the console itself, no framing, no referrer, no caching.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A complete HTML response with the console's security headers.
pub fn page(status: StatusCode, markup: Markup) -> Response {
    let mut r = (status, markup.into_string()).into_response();
    let h = r.headers_mut();
    for (k, v) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

/// Who is signed in, for the page header.
pub struct Nav<'a> {
    /// The tenant the page is about ("" for none).
    pub tenant: &'a str,
    /// The signed-in role and label.
    pub who: String,
    /// The session's CSRF value (for the sign-out form).
    pub csrf: &'a str,
}

/// The page frame.
pub fn layout(title: &str, nav: Option<&Nav<'_>>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Switchyard" }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body {
                header {
                    nav aria-label="Main" {
                        a.brand href="/console" { "Switchyard" }
                        @if let Some(n) = nav {
                            @if !n.tenant.is_empty() {
                                a href={ "/console/t/" (n.tenant) } { "Overview" }
                                a href={ "/console/t/" (n.tenant) "/setup" } { "Set up" }
                                a href={ "/console/t/" (n.tenant) "/config" } { "Configuration" }
                                a href={ "/console/t/" (n.tenant) "/roles" } { "Roles" }
                                a href={ "/console/t/" (n.tenant) "/secrets" } { "Secrets" }
                                a href={ "/console/t/" (n.tenant) "/audit" } { "Activity" }
                                a href={ "/console/t/" (n.tenant) "/dead" } { "Dead letters" }
                            }
                            span.who { (n.who) }
                            form method="post" action="/console/sign-out" {
                                input type="hidden" name="csrf" value=(n.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page that only says something.
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    page(
        status,
        layout(
            title,
            None,
            html! { p { (text) } p { a href="/console" { "Back to the console" } } },
        ),
    )
}

/// The sign-in page.
pub fn sign_in(error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            @if let Some(e) = error {
                p.error role="alert" { (e) }
            }
            form method="post" action="/console/sign-in" {
                label for="token" { "API token" }
                input id="token" name="token" type="password" autocomplete="off" required;
                p.hint { "A tenant-admin or tenant-viewer token from your operator (switchyard token create … --role tenant-admin)." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// A time in milliseconds since the epoch, for people (UTC).
pub fn time_ms(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms > 0 => httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64),
        ),
        _ => "never".into(),
    }
}

/// A hidden CSRF field.
pub fn csrf(value: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(value); }
}

/// A form with one button posting to `action`.
pub fn button(action: &str, label: &str, csrf_value: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf(csrf_value))
            button type="submit" { (label) }
        }
    }
}

/// One instance's card on the overview, from its status
/// (`api::operations::instance_status`). `operate`: show the buttons;
/// `remove`: offer to remove it.
pub fn instance_card(
    tenant: &str,
    status: &Value,
    operate: bool,
    remove: bool,
    csrf_value: &str,
) -> Markup {
    let id = status["instance"].as_str().unwrap_or_default();
    let base = format!("/console/t/{tenant}/i/{id}");
    let failed = status["state"] == "failed";
    let paused = status["paused"] == true;
    // A new plugin version's storage migration step that fails holds all
    // of the instance's work.
    let migration = status["storage_migration"]["message"].as_str();
    let failing = failed
        || migration.is_some()
        || status["jobs"].as_array().is_some_and(|j| {
            j.iter()
                .any(|j| j["last_outcome"].as_str().is_some_and(|o| o != "ok"))
        });
    let state = if failed {
        "failing (not served)"
    } else if paused {
        "paused"
    } else if failing {
        "failing"
    } else {
        "running"
    };
    html! {
        section.card aria-labelledby={ "card-" (id) } {
            h2 id={ "card-" (id) } { (id) }
            p {
                @if let Some(p) = status["plugin"].as_object() {
                    span.plugin { (p["id"].as_str().unwrap_or("")) " " (p["version"].as_str().unwrap_or("")) }
                    " · "
                }
                span.state data-state=(state) { (state) }
            }
            @if failed {
                ul.problems {
                    @for p in status["problems"].as_array().into_iter().flatten() {
                        li { (p.as_str().unwrap_or("")) }
                    }
                }
            } @else {
                @if let Some(m) = migration {
                    p.error { "Storage migration failing, nothing of this instance runs until it succeeds: " (m) }
                }
                @let q = &status["queue"];
                p { "Queue: " (q["queued"]) " queued, " (q["running"]) " running, " (q["dead"]) " dead" }
                @if let Some(e) = status["last_error"].as_object() {
                    p.error {
                        "Last error (" (e["kind"].as_str().unwrap_or("")) " " (e["name"].as_str().unwrap_or(""))
                        ", " (time_ms(e["at_ms"].as_i64())) "): " (e["message"].as_str().unwrap_or(""))
                    }
                }
                @let jobs = status["jobs"].as_array().cloned().unwrap_or_default();
                @if !jobs.is_empty() {
                    table {
                        caption { "Jobs" }
                        thead { tr { th scope="col" { "Job" } th scope="col" { "Last run" } th scope="col" { "Runs / errors" } th scope="col" { "Summary" } th scope="col" { "Next run" } @if operate { th scope="col" { span.sr { "Actions" } } } } }
                        tbody {
                            @for j in &jobs {
                                @let name = j["name"].as_str().unwrap_or("");
                                tr {
                                    th scope="row" { (name) }
                                    td { (time_ms(j["last_run_ms"].as_i64())) }
                                    td { (j["runs"]) " / " (j["errors"]) }
                                    td.summary { (j["last_summary"].as_str().or(j["last_error"].as_str()).unwrap_or("")) }
                                    td { (time_ms(j["next_run_ms"].as_i64())) }
                                    @if operate {
                                        td { (button(&format!("{base}/jobs/{name}/run"), &format!("Sync now: {name}"), csrf_value)) }
                                    }
                                }
                            }
                        }
                    }
                }
                @if operate {
                    p.actions {
                        @if paused {
                            (button(&format!("{base}/resume"), "Resume", csrf_value))
                        } @else {
                            (button(&format!("{base}/pause"), "Pause", csrf_value))
                        }
                    }
                }
            }
            @if remove {
                p { a href={ (base) "/remove" } { "Remove " (id) "…" } }
            }
        }
    }
}

/// A unified diff, its lines marked for the stylesheet.
pub fn diff(text: &str) -> Markup {
    html! {
        pre.diff {
            @for line in text.lines() {
                @let class = match line.chars().next() {
                    Some('+') if !line.starts_with("+++") => "add",
                    Some('-') if !line.starts_with("---") => "del",
                    _ => "",
                };
                span class=(class) { (line) } (PreEscaped("\n"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_storage_migration_shows_on_the_card() {
        let status = serde_json::json!({
            "instance": "n",
            "state": "serving",
            "plugin": {"id": "notes", "version": "2.0.0"},
            "paused": false,
            "queue": {"queued": 1, "running": 0, "dead": 0},
            "jobs": [],
            "storage_migration": {"state": "failed", "message": "plugin `notes` 2.0.0 could not migrate", "retry_after_secs": 5},
        });
        let html = instance_card("acme", &status, false, false, "csrf").into_string();
        assert!(html.contains(r#"data-state="failing""#), "{html}");
        assert!(html.contains("Storage migration failing"), "{html}");
        assert!(
            html.contains("plugin `notes` 2.0.0 could not migrate"),
            "{html}"
        );
        // Without one, the same instance is running.
        let mut fine = status.clone();
        fine["storage_migration"] = serde_json::Value::Null;
        let html = instance_card("acme", &fine, false, false, "csrf").into_string();
        assert!(html.contains(r#"data-state="running""#), "{html}");
    }
}
