//! A plugin as it was built for `switchyard:plugin@0.1.0`: bindings from a
//! frozen copy of that WIT (`wit/`, never to be edited), no SDK. A host
//! that speaks a newer, compatible contract must still load and run it;
//! `tests/tests/interfaces.rs` checks that it does.
//!
//! `ping` uses every kind of import it has (config, log, storage) and
//! answers `{"pong": <input>, "config": …, "stored": …}`; `fail` returns
//! the error kind its input names.

// The generated export macro names this crate by its external name.
extern crate self as guest_compat_0_1_0;

// Generated code: its shape follows the WIT, not our lint rules.
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "guest_compat_0_1_0::bindings",
    });
}

use bindings::switchyard::plugin::types::{ActionSpec, ConfigSpec, UpstreamError};
use bindings::switchyard::plugin::{config, log, storage};
use bindings::{Context, Guest, Manifest, PluginError, WebhookRequest, WebhookResponse};

struct Compat;

impl Guest for Compat {
    fn manifest() -> Manifest {
        let action = |name: &str, description: &str| ActionSpec {
            name: name.into(),
            description: description.into(),
            input_schema: "{}".into(),
            required_role: None,
        };
        Manifest {
            id: "compat-0-1-0".into(),
            version: "0.1.0".into(),
            description: "Built against switchyard:plugin@0.1.0".into(),
            actions: vec![
                action(
                    "ping",
                    "Echoes its input, with a config value and a stored count",
                ),
                action("fail", "Fails with the error kind given as input"),
            ],
            webhooks: Vec::new(),
            jobs: Vec::new(),
            config: vec![ConfigSpec {
                key: "greeting".into(),
                description: "A value ping reports".into(),
                required: false,
                default_value: Some("hej".into()),
            }],
            credentials: Vec::new(),
            egress: Vec::new(),
        }
    }

    fn invoke(_ctx: Context, action: String, input: String) -> Result<String, PluginError> {
        match action.as_str() {
            "ping" => {
                let greeting = config::get("greeting").unwrap_or_default();
                let count = match storage::get("pings") {
                    Ok(Some(b)) => String::from_utf8_lossy(&b).parse::<u64>().unwrap_or(0) + 1,
                    Ok(None) => 1,
                    Err(e) => return Err(PluginError::Internal(format!("storage: {e:?}"))),
                };
                storage::set("pings", count.to_string().as_bytes())
                    .map_err(|e| PluginError::Internal(format!("storage: {e:?}")))?;
                log::emit(log::Level::Info, "ping", &[]);
                Ok(format!(
                    r#"{{"pong":{input},"config":"{greeting}","stored":{count}}}"#
                ))
            }
            "fail" => Err(match input.trim_matches('"') {
                "not-found" => PluginError::NotFound("nothing here".into()),
                _ => PluginError::Upstream(UpstreamError {
                    status: Some(503),
                    message: "upstream down".into(),
                    retry_after_secs: Some(7),
                }),
            }),
            other => Err(PluginError::NotFound(format!("no action `{other}`"))),
        }
    }

    fn handle_webhook(
        _ctx: Context,
        route: String,
        _request: WebhookRequest,
    ) -> Result<WebhookResponse, PluginError> {
        Err(PluginError::NotFound(format!("no webhook route `{route}`")))
    }

    fn run_job(_ctx: Context, job: String) -> Result<String, PluginError> {
        Err(PluginError::NotFound(format!("no job `{job}`")))
    }
}

bindings::export!(Compat);
