//! Write Switchyard plugins in Rust.
//!
//! A plugin is a type that implements [`Plugin`], registered with
//! [`register!`], built for `wasm32-wasip2` as a `cdylib`. The host gives it
//! outbound HTTP ([`http`]), named credentials it never sees the value of
//! ([`credentials`]), a private key-value store ([`storage`]), logging
//! ([`log`]) and its configuration ([`config`]) — nothing else.
//!
//! Actions can be types ([`Action`], see [`typed`]): their input schema is
//! generated into the manifest and the SDK routes calls by name. A complete
//! plugin with an untyped action:
//!
//! ```no_run
//! use serde_json::{Value, json};
//! use switchyard_sdk::{
//!     ActionSpec, ConfigSpec, Context, CredentialKind, CredentialSlot, Error, Manifest, Plugin,
//!     Result, config, http, log, storage,
//! };
//!
//! struct Weather;
//!
//! impl Plugin for Weather {
//!     fn manifest() -> Manifest {
//!         Manifest::new("weather", "1.0.0", "Current weather for a city")
//!             .action(ActionSpec::new("current", "Weather now").role("reader"))
//!             .config(ConfigSpec::optional("api_url", "Weather API base URL", "https://api.example.com"))
//!             .credential(CredentialSlot::new("api", "Weather API key", &[CredentialKind::ApiKey]))
//!     }
//!
//!     fn invoke(_ctx: &Context, action: &str, input: Value) -> Result<Value> {
//!         match action {
//!             "current" => {
//!                 let city = input["city"].as_str().ok_or_else(|| Error::invalid_input("city is required"))?;
//!                 let base = config::require("api_url")?;
//!                 let weather: Value = http::Request::get(format!("{base}/now?city={city}"))
//!                     .credential("api")
//!                     .send()?
//!                     .error_for_status()?
//!                     .json()?;
//!                 storage::set_json(&format!("last/{city}"), &weather)?;
//!                 log::info(format!("weather for {city} fetched"));
//!                 Ok(json!({ "city": city, "weather": weather }))
//!             }
//!             other => Err(Error::not_found(format!("no action `{other}`"))),
//!         }
//!     }
//! }
//!
//! switchyard_sdk::register!(Weather);
//! ```
#![deny(missing_docs)]

pub mod config;
pub mod credentials;
pub mod http;
pub mod invocation;
pub mod log;
mod manifest;
pub mod retry;
pub mod storage;
pub mod typed;

// The generated code names this crate by its external name.
extern crate self as switchyard_sdk;

// The generated bindings live in the hidden `__private` module (the export
// macro must reach them from the plugin's crate); plugin code uses the
// curated API below, so the WIT can grow without breaking plugins.
use __private::bindings;

pub use bindings::switchyard::plugin::credentials::Kind as CredentialKind;
pub use bindings::switchyard::plugin::types::{
    ActionSpec, Actor, Context, CredentialSlot, EgressNeed, Header, WebhookMode, WebhookRequest,
    WebhookResponse, WebhookSpec,
};
pub use manifest::{ConfigSpec, JobSpec, Manifest};
/// The JSON Schema derive for typed actions' inputs.
pub use schemars;
pub use serde_json::{Value, json};
pub use typed::Action;

use bindings::switchyard::plugin::types::{PluginError, UpstreamError};

/// Why a plugin call failed. The host turns each kind into an HTTP status
/// for the caller (400/422, 404, 403, 409, 502, 500).
///
/// A queued webhook delivery or job that fails is retried later for
/// `Conflict`, `Upstream` and `Internal`, and dead-lettered at once for the
/// others; [`Error::permanent`] and [`Error::transient`] override that for
/// one error:
///
/// ```
/// use switchyard_sdk::Error;
///
/// // ServiceNow refused the record's fields: the same request will fail
/// // the same way, so do not retry it.
/// let e = Error::Upstream {
///     status: Some(400),
///     message: "field u_lsid does not exist".into(),
///     retry_after_secs: None,
/// }
/// .permanent();
/// assert!(matches!(e.kind(), Error::Upstream { status: Some(400), .. }));
/// assert_eq!(e.to_string(), "upstream failed (HTTP 400): field u_lsid does not exist");
/// ```
///
/// Match on [`Error::kind`] to see through a mark. New kinds may be added,
/// so a `match` needs a catch-all arm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The input is malformed or incomplete.
    InvalidInput(String),
    /// The target does not exist.
    NotFound(String),
    /// The plugin's policy refuses this actor or target.
    Forbidden(String),
    /// The target's state does not allow the action.
    Conflict(String),
    /// An upstream system failed or refused.
    Upstream {
        /// Upstream HTTP status, if any.
        status: Option<u16>,
        /// What failed.
        message: String,
        /// Seconds to wait before retrying, if the upstream said.
        retry_after_secs: Option<u32>,
    },
    /// A bug or unexpected state in the plugin.
    Internal(String),
    /// An error with an explicit retry decision (made with
    /// [`Error::permanent`] or [`Error::transient`]).
    Marked(Box<Error>, Disposition),
}

/// Whether a failure is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Retrying cannot help: a queued delivery or job is dead-lettered.
    Permanent,
    /// Retrying may help: a queued delivery or job is tried again later.
    Transient,
}

impl Error {
    /// [`Error::InvalidInput`].
    pub fn invalid_input(msg: impl Into<String>) -> Self {
        Self::InvalidInput(msg.into())
    }
    /// [`Error::NotFound`].
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::NotFound(msg.into())
    }
    /// [`Error::Forbidden`].
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::Forbidden(msg.into())
    }
    /// [`Error::Conflict`].
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::Conflict(msg.into())
    }
    /// [`Error::Upstream`] without a status.
    pub fn upstream(msg: impl Into<String>) -> Self {
        Self::Upstream {
            status: None,
            message: msg.into(),
            retry_after_secs: None,
        }
    }
    /// [`Error::Internal`].
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::Internal(msg.into())
    }

    /// Marks this error as not worth retrying: a queued delivery or job
    /// that fails with it is dead-lettered at once, whatever its kind. The
    /// caller of an action sees the same status as without the mark.
    pub fn permanent(self) -> Self {
        Self::Marked(Box::new(self.unmarked()), Disposition::Permanent)
    }

    /// Marks this error as worth retrying: a queued delivery or job that
    /// fails with it is tried again later, whatever its kind (a `Forbidden`
    /// that an operator will fix by granting a role, say).
    pub fn transient(self) -> Self {
        Self::Marked(Box::new(self.unmarked()), Disposition::Transient)
    }

    /// The error without its mark.
    pub fn kind(&self) -> &Error {
        match self {
            Self::Marked(e, _) => e.kind(),
            e => e,
        }
    }

    /// The retry decision made with [`Error::permanent`] or
    /// [`Error::transient`]; None leaves it to the error's kind.
    pub fn disposition(&self) -> Option<Disposition> {
        match self {
            Self::Marked(_, d) => Some(*d),
            _ => None,
        }
    }

    fn unmarked(self) -> Self {
        match self {
            Self::Marked(e, _) => e.unmarked(),
            e => e,
        }
    }
}

impl Error {
    /// The message alone, without the kind that `Display` puts first: for
    /// a summary or a status line (`ServiceNow: the upstream did not answer
    /// in time`).
    pub fn message(&self) -> &str {
        match self {
            Self::InvalidInput(m)
            | Self::NotFound(m)
            | Self::Forbidden(m)
            | Self::Conflict(m)
            | Self::Internal(m)
            | Self::Upstream { message: m, .. } => m,
            Self::Marked(e, _) => e.message(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Self::NotFound(m) => write!(f, "not found: {m}"),
            Self::Forbidden(m) => write!(f, "forbidden: {m}"),
            Self::Conflict(m) => write!(f, "conflict: {m}"),
            Self::Upstream {
                status: Some(s),
                message,
                ..
            } => write!(f, "upstream failed (HTTP {s}): {message}"),
            Self::Upstream { message, .. } => write!(f, "upstream failed: {message}"),
            Self::Internal(m) => write!(f, "internal error: {m}"),
            Self::Marked(e, _) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::Internal(format!("JSON: {e}"))
    }
}

impl From<Error> for PluginError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidInput(m) => Self::InvalidInput(m),
            Error::NotFound(m) => Self::NotFound(m),
            Error::Forbidden(m) => Self::Forbidden(m),
            Error::Conflict(m) => Self::Conflict(m),
            Error::Upstream {
                status,
                message,
                retry_after_secs,
            } => Self::Upstream(UpstreamError {
                status,
                message,
                retry_after_secs,
            }),
            Error::Internal(m) => Self::Internal(m),
            Error::Marked(e, _) => (*e).into(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A Switchyard plugin. Only [`Plugin::manifest`] is required; the entry
/// points a plugin does not offer answer "not found".
pub trait Plugin {
    /// Describes the plugin. Called once per plugin version; must not call
    /// any host interface.
    fn manifest() -> Manifest;

    /// Runs an action declared in the manifest. `input` is the caller's
    /// JSON; the returned JSON goes back to the caller.
    fn invoke(ctx: &Context, action: &str, input: Value) -> Result<Value> {
        let _ = (ctx, input);
        Err(Error::not_found(format!(
            "this plugin has no action `{action}`"
        )))
    }

    /// Handles a webhook delivery the host has verified.
    fn handle_webhook(
        ctx: &Context,
        route: &str,
        request: WebhookRequest,
    ) -> Result<WebhookResponse> {
        let _ = (ctx, request);
        Err(Error::not_found(format!(
            "this plugin has no webhook route `{route}`"
        )))
    }

    /// Runs a scheduled job once; returns a one-line summary.
    fn run_job(ctx: &Context, job: &str) -> Result<String> {
        let _ = ctx;
        Err(Error::not_found(format!("this plugin has no job `{job}`")))
    }

    /// Brings the instance's storage into the shape this version reads.
    /// The host calls it once per instance, before this version's first
    /// invocation, when the instance's storage holds data that another
    /// version of the plugin wrote (`previous`: that version; `None` when
    /// the host does not know which). Every invocation of the instance
    /// waits for it; on an error the host tries again later (5 s, doubling
    /// up to 5 min), so it must be idempotent: a step interrupted half-way
    /// runs again. `previous` may be newer than this version (a
    /// downgrade). Returns a one-line summary for the audit log. The
    /// default does nothing.
    ///
    /// ```no_run
    /// # use switchyard_sdk::{Context, Result, storage};
    /// // Version 2 keeps each note under `note/<id>` instead of one list.
    /// fn migrate_storage(_ctx: &Context, previous: Option<&str>) -> Result<String> {
    ///     let Some(old) = storage::get_json::<Vec<String>>("notes")? else {
    ///         return Ok(format!("nothing to move (was {previous:?})"));
    ///     };
    ///     for (i, note) in old.iter().enumerate() {
    ///         storage::set_json(&format!("note/{i}"), note)?;
    ///     }
    ///     storage::delete("notes")?;
    ///     Ok(format!("moved {} notes", old.len()))
    /// }
    /// ```
    fn migrate_storage(ctx: &Context, previous: Option<&str>) -> Result<String> {
        let _ = (ctx, previous);
        Ok("nothing to migrate".into())
    }
}

/// Exports a [`Plugin`] implementation as the component's entry points.
/// Use it once per plugin crate.
///
/// ```no_run
/// struct Minimal;
///
/// impl switchyard_sdk::Plugin for Minimal {
///     fn manifest() -> switchyard_sdk::Manifest {
///         switchyard_sdk::Manifest::new("minimal", "0.1.0", "Offers nothing yet")
///     }
/// }
///
/// switchyard_sdk::register!(Minimal);
/// ```
#[macro_export]
macro_rules! register {
    ($plugin:ty) => {
        #[doc(hidden)]
        struct __SwitchyardExports;

        impl $crate::__private::Guest for __SwitchyardExports {
            fn manifest() -> $crate::__private::WitManifest {
                <$plugin as $crate::Plugin>::manifest().into_wit()
            }
            fn settings_schema() -> String {
                <$plugin as $crate::Plugin>::manifest().settings_schema()
            }
            fn invoke(
                ctx: $crate::Context,
                action: String,
                input: String,
            ) -> Result<String, $crate::__private::PluginError> {
                $crate::__private::invoke::<$plugin>(ctx, action, input)
            }
            fn handle_webhook(
                ctx: $crate::Context,
                route: String,
                request: $crate::WebhookRequest,
            ) -> Result<$crate::WebhookResponse, $crate::__private::PluginError> {
                <$plugin as $crate::Plugin>::handle_webhook(&ctx, &route, request)
                    .map_err($crate::__private::export_error)
            }
            fn run_job(
                ctx: $crate::Context,
                job: String,
            ) -> Result<String, $crate::__private::PluginError> {
                <$plugin as $crate::Plugin>::run_job(&ctx, &job)
                    .map_err($crate::__private::export_error)
            }
            fn migrate_storage(
                ctx: $crate::Context,
                previous: Option<String>,
            ) -> Result<String, $crate::__private::PluginError> {
                <$plugin as $crate::Plugin>::migrate_storage(&ctx, previous.as_deref())
                    .map_err($crate::__private::export_error)
            }
        }

        $crate::__private::bindings::__export_plugin_world!(__SwitchyardExports);
    };
}

#[doc(hidden)]
pub mod __private {
    // Generated code: its shape follows the WIT, not our lint rules.
    #[allow(missing_docs, unsafe_op_in_unsafe_fn, clippy::too_many_arguments)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit",
            world: "plugin-with-migration",
            pub_export_macro: true,
            export_macro_name: "__export_plugin_world",
            default_bindings_module: "switchyard_sdk::__private::bindings",
            runtime_path: "switchyard_sdk::__private::wit_bindgen::rt",
        });
    }

    pub use crate::bindings::switchyard::plugin::types::{Manifest as WitManifest, PluginError};
    pub use bindings::Guest;
    pub use wit_bindgen;

    use crate::{Context, Error, Plugin};

    pub fn invoke<P: Plugin>(
        ctx: Context,
        action: String,
        input: String,
    ) -> Result<String, PluginError> {
        let input: serde_json::Value = serde_json::from_str(&input)
            .map_err(|e| PluginError::InvalidInput(format!("input is not JSON: {e}")))?;
        let out = P::invoke(&ctx, &action, input).map_err(export_error)?;
        serde_json::to_string(&out)
            .map_err(|e| Error::internal(format!("serialising output: {e}")).into())
    }

    /// The error an entry point returns, as the WIT has it; a mark made
    /// with [`Error::permanent`] or [`Error::transient`] is told to the
    /// host first (`invocation.mark-error`).
    pub fn export_error(e: Error) -> PluginError {
        use crate::bindings::switchyard::plugin::invocation::{Retry, mark_error};
        match e.disposition() {
            Some(crate::Disposition::Permanent) => mark_error(Retry::Permanent),
            Some(crate::Disposition::Transient) => mark_error(Retry::Transient),
            None => {}
        }
        e.into()
    }
}
