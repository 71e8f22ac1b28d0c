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
    ActionSpec, Actor, ConfigSpec, Context, CredentialSlot, EgressNeed, Header, JobSpec, Manifest,
    WebhookMode, WebhookRequest, WebhookResponse, WebhookSpec,
};
/// The JSON Schema derive for typed actions' inputs.
pub use schemars;
pub use serde_json::{Value, json};
pub use typed::Action;

use bindings::switchyard::plugin::types::{PluginError, UpstreamError};

/// Why a plugin call failed. The host turns each kind into an HTTP status
/// for the caller (400/422, 404, 403, 409, 502, 500).
#[derive(Debug, Clone, PartialEq, Eq)]
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
            fn manifest() -> $crate::Manifest {
                <$plugin as $crate::Plugin>::manifest()
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
                    .map_err(Into::into)
            }
            fn run_job(
                ctx: $crate::Context,
                job: String,
            ) -> Result<String, $crate::__private::PluginError> {
                <$plugin as $crate::Plugin>::run_job(&ctx, &job).map_err(Into::into)
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
            world: "plugin",
            pub_export_macro: true,
            export_macro_name: "__export_plugin_world",
            default_bindings_module: "switchyard_sdk::__private::bindings",
            runtime_path: "switchyard_sdk::__private::wit_bindgen::rt",
        });
    }

    pub use crate::bindings::switchyard::plugin::types::PluginError;
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
        let out = P::invoke(&ctx, &action, input)?;
        serde_json::to_string(&out)
            .map_err(|e| Error::internal(format!("serialising output: {e}")).into())
    }
}
