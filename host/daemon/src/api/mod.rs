//! The HTTP API: every route and the handler it runs.
//!
//! - [`auth`]: bearer tokens as extractors ([`auth::Caller`], [`auth::Operator`]);
//! - [`actions`]: running an action;
//! - [`operations`]: pause, resume, status, run a job now;
//! - [`audit`]: reading the audit log;
//! - [`admin`]: reload, metrics;
//! - webhooks are routed here too, handled by [`crate::webhook`].
//!
//! Paths are the constants of [`crate::openapi`], which documents them.

pub mod actions;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod operations;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};

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
        .route(openapi::RELOAD, post(admin::reload))
        .route(openapi::METRICS, get(admin::metrics))
        .route(openapi::HOOK, any(crate::webhook::handle))
        .layer(DefaultBodyLimit::max(actions::MAX_ACTION_BODY))
        .with_state(live)
}
