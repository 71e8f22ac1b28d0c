//! Slack incoming-webhook simulator.
//!
//! `POST /services/<T>/<B>/<secret>` with JSON `{"text"}` or `{"blocks"}`:
//! 200 `ok`; 400 `invalid_payload`; 403 `action_prohibited`; 404
//! `no_service` (unknown URL) or `channel_not_found`; 410
//! `channel_is_archived`; 500 `rollup_error` — plain-text bodies, as Slack
//! sends them.
//!
//! Rate limit (the fact sheet says "about one message per second"): a
//! token bucket per webhook holding [`SlackConfig::burst`] messages,
//! refilled at [`SlackConfig::per_second`]; an empty bucket answers 429
//! with `Retry-After: 1`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use switchyard_sim::slack::{Slack, SlackConfig};
//! let slack = Slack::start(SlackConfig::default()).await?;
//! let url = slack.webhook_url("general");
//! // ... a plugin posts to url ...
//! assert!(slack.messages("general").is_empty());
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde_json::Value;

use crate::common::{self, Control, Flavor, SimServer};

/// The channels and limits.
#[derive(Debug, Clone)]
pub struct SlackConfig {
    /// Channels with a webhook (name → its path secret is generated).
    pub channels: Vec<String>,
    /// Archived channels (their webhook answers 410).
    pub archived: Vec<String>,
    /// Messages a webhook takes at once before its steady pace.
    pub burst: u32,
    /// The steady pace, in messages per second (Slack: about one).
    pub per_second: f64,
}

impl Default for SlackConfig {
    fn default() -> Self {
        Self {
            channels: vec!["general".into(), "it-alerts".into()],
            archived: Vec::new(),
            burst: 3,
            per_second: 1.0,
        }
    }
}

/// A message Slack accepted.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    /// Channel.
    pub channel: String,
    /// `text`, if sent.
    pub text: Option<String>,
    /// `blocks`, if sent.
    pub blocks: Option<Value>,
}

struct Hook {
    channel: String,
    tokens: f64,
    last: Instant,
}

#[derive(Default)]
struct Data {
    hooks: BTreeMap<String, Hook>,
    messages: Vec<Message>,
}

struct Sim {
    cfg: SlackConfig,
    data: Mutex<Data>,
}

/// A running Slack simulator.
pub struct Slack {
    server: SimServer,
    sim: Arc<Sim>,
    control: Arc<Control>,
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [("content-type", "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

struct SlackFlavor;

impl Flavor for SlackFlavor {
    fn error(&self, status: StatusCode, _message: &str) -> Response {
        let body = match status.as_u16() {
            400 => "invalid_payload",
            403 => "action_prohibited",
            404 => "channel_not_found",
            410 => "channel_is_archived",
            _ => "rollup_error",
        };
        plain(status, body)
    }

    fn rate_limited(&self, retry_after_secs: u64) -> Response {
        common::with_retry_after(
            plain(StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            retry_after_secs,
        )
    }

    fn malformed(&self) -> Response {
        plain(StatusCode::OK, "o")
    }
}

async fn webhook(
    State(sim): State<Arc<Sim>>,
    Path((team, bot, secret)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let key = format!("{team}/{bot}/{secret}");
    let mut data = common::state(&sim.data);
    let burst = f64::from(sim.cfg.burst.max(1));
    let Some(hook) = data.hooks.get_mut(&key) else {
        return plain(StatusCode::NOT_FOUND, "no_service");
    };
    if sim.cfg.archived.contains(&hook.channel) {
        return plain(StatusCode::GONE, "channel_is_archived");
    }
    let now = Instant::now();
    let refill = now.duration_since(hook.last).as_secs_f64() * sim.cfg.per_second;
    hook.tokens = (hook.tokens + refill).min(burst);
    hook.last = now;
    if hook.tokens < 1.0 {
        return SlackFlavor.rate_limited(1);
    }
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return plain(StatusCode::BAD_REQUEST, "invalid_payload"),
    };
    let text = payload["text"].as_str().map(str::to_owned);
    let blocks = payload.get("blocks").cloned();
    if text.as_deref().is_none_or(str::is_empty) && !blocks.as_ref().is_some_and(Value::is_array) {
        return plain(StatusCode::BAD_REQUEST, "invalid_payload");
    }
    hook.tokens -= 1.0;
    let channel = hook.channel.clone();
    data.messages.push(Message {
        channel,
        text,
        blocks,
    });
    plain(StatusCode::OK, "ok")
}

impl Slack {
    /// Starts on a free loopback port.
    pub async fn start(cfg: SlackConfig) -> std::io::Result<Self> {
        Self::start_on(cfg, common::loopback()).await
    }

    /// Like [`Slack::start`] on a given address.
    pub async fn start_on(cfg: SlackConfig, addr: std::net::SocketAddr) -> std::io::Result<Self> {
        let mut data = Data::default();
        for (i, channel) in cfg.channels.iter().chain(&cfg.archived).enumerate() {
            data.hooks.insert(
                format!("T0SIM{i:04}/B0SIM{i:04}/{}", common::random_token(24)),
                Hook {
                    channel: channel.clone(),
                    tokens: f64::from(cfg.burst.max(1)),
                    last: Instant::now(),
                },
            );
        }
        let sim = Arc::new(Sim {
            cfg,
            data: Mutex::new(data),
        });
        let control = Arc::new(Control::default());
        let router = Router::new()
            .route("/services/{team}/{bot}/{secret}", post(webhook))
            .fallback(|| async { plain(StatusCode::NOT_FOUND, "no_service") })
            .with_state(sim.clone());
        let s = sim.clone();
        let router = common::instrument(
            router,
            control.clone(),
            Arc::new(SlackFlavor),
            move || {
                let d = common::state(&s.data);
                serde_json::json!({
                    "webhooks": d.hooks.iter().map(|(k, h)| (h.channel.clone(), format!("/services/{k}"))).collect::<BTreeMap<_, _>>(),
                    "messages": d.messages,
                })
            },
        );
        Ok(Self {
            server: SimServer::start(router, addr).await?,
            sim,
            control,
        })
    }

    /// Base URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The full webhook URL of `channel`.
    pub fn webhook_url(&self, channel: &str) -> String {
        let d = common::state(&self.sim.data);
        let path = d
            .hooks
            .iter()
            .find(|(_, h)| h.channel == channel)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| format!("T0NONE/B0NONE/{channel}"));
        format!("{}/services/{path}", self.url())
    }

    /// Messages accepted for `channel`, oldest first.
    pub fn messages(&self, channel: &str) -> Vec<Message> {
        common::state(&self.sim.data)
            .messages
            .iter()
            .filter(|m| m.channel == channel)
            .cloned()
            .collect()
    }

    /// Request log and fault injection.
    pub fn control(&self) -> &Control {
        &self.control
    }
}
