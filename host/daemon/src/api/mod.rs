//! The HTTP API: every route and the handler it runs.
//!
//! - [`auth`]: bearer tokens as extractors ([`auth::Caller`], [`auth::Operator`]);
//! - [`actions`]: running an action;
//! - [`operations`]: pause, resume, status, run a job now;
//! - [`audit`]: reading the audit log;
//! - [`config`]: a tenant's configuration, its versions, and its secrets;
//! - [`jobs`]: its queued and dead work, and retrying it;
//! - [`instances`]: removing an instance, a webhook route's secret;
//! - [`admin`]: reload, metrics;
//! - [`plugins`]: installed plugins, installing a release;
//! - webhooks are routed here too, handled by [`crate::webhook`].
//!
//! Paths are the constants of [`crate::openapi`], which documents them.

pub mod actions;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod config;
pub mod instances;
pub mod jobs;
pub mod operations;
pub mod plugins;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, delete, get, post, put};

use crate::openapi;
use crate::state::Live;

/// The API router.
pub fn router(live: Arc<Live>) -> Router {
    Router::new()
        .route(openapi::HEALTHZ, get(|| async { "ok" }))
        .route(openapi::READYZ, get(admin::readyz))
        .route(
            openapi::OPENAPI,
            get(
                |axum::extract::State(live): axum::extract::State<Arc<Live>>| async move {
                    axum::Json(openapi::with_plugins(
                        openapi::document(),
                        live.current().catalog(),
                    ))
                },
            ),
        )
        .route(openapi::ACTION, post(actions::action))
        .route(openapi::PAUSE, post(operations::pause))
        .route(openapi::RESUME, post(operations::resume))
        .route(openapi::STATUS, get(operations::status))
        .route(openapi::RUN_JOB, post(operations::run_now))
        .route(openapi::AUDIT, get(audit::audit))
        .route(
            openapi::CONFIG,
            get(config::get_config).put(config::put_config),
        )
        .route(openapi::INSTANCE, delete(instances::delete))
        .route(openapi::WEBHOOK_SECRET, post(instances::webhook_secret))
        .route(openapi::JOBS, get(jobs::list))
        .route(openapi::RETRY_JOB, post(jobs::retry))
        .route(openapi::CONFIG_VERSIONS, get(config::list_versions))
        .route(openapi::CONFIG_VERSION, get(config::get_version))
        .route(openapi::CONFIG_ROLLBACK, post(config::rollback))
        .route(openapi::SECRETS, get(config::list_secrets))
        .route(
            openapi::SECRET,
            put(config::put_secret).delete(config::delete_secret),
        )
        .route(openapi::RELOAD, post(admin::reload))
        .route(
            openapi::PLUGINS,
            get(plugins::list)
                .post(plugins::install)
                .layer(DefaultBodyLimit::max(plugins::MAX_COMPONENT_BYTES)),
        )
        .route(openapi::METRICS, get(admin::metrics))
        .route(openapi::HOOK, any(crate::webhook::handle))
        .layer(DefaultBodyLimit::max(actions::MAX_ACTION_BODY))
        .with_state(live)
}
