//! Slack announcements through an outbox, so that Slack's pace (about one
//! message a second per webhook, 429 with `Retry-After` beyond it) never
//! blocks the flow and never loses a message.
//!
//! Every status change appends a message to `outbox` in the same
//! invocation that saves the change. Each invocation then delivers from the
//! front while it has time and requests left, and stops at the first
//! message Slack does not take: 429 and 5xx wait (`not_before`), so order
//! is kept, per request and overall. A message Slack refuses for good
//! (400, 403, 404, 410: a broken payload, an archived channel, a revoked
//! webhook) is moved to `outbox-failed` with Slack's answer, not retried
//! for ever and not dropped silently.
//!
//! The webhook URL is a secret-URL credential: the plugin addresses the
//! credential's host and the host sends the message to the secret URL.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard_sdk::credentials::{self, SecretPlacement};
use switchyard_sdk::http::Request;
use switchyard_sdk::storage::{get_json, set_json};
use switchyard_sdk::{Result, invocation};

use crate::settings::Settings;
use crate::store::{self, Request as AppRequest};

/// A message waiting for Slack.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    /// The credential slot (one webhook, one channel).
    pub slot: String,
    /// The request it is about.
    pub request_id: String,
    /// `{"text", "blocks"}`.
    pub payload: Value,
    /// Slack's answer when it refused the message for good.
    #[serde(default)]
    pub refused: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Outbox {
    messages: Vec<Message>,
    /// Don't send before this (ms), after a 429 or a 5xx.
    not_before_ms: u64,
}

/// The host URL of the secret-URL credential `slot`, when it is bound as
/// one. A header token bound by mistake is refused: the plugin would not
/// know where to send.
pub fn destination(slot: &str) -> std::result::Result<String, String> {
    match credentials::placement(slot) {
        Ok(SecretPlacement::Url) => {}
        Ok(SecretPlacement::Headers) => {
            return Err(format!(
                "credential `{slot}` is not a secret-url credential (bind the Slack \
                 incoming-webhook URL with kind = \"secret-url\")"
            ));
        }
        Err(_) => return Err(format!("credential `{slot}` is not bound")),
    }
    credentials::list()
        .into_iter()
        .find(|c| c.name == slot)
        .and_then(|c| c.hosts.into_iter().next())
        .ok_or_else(|| format!("credential `{slot}` has no host"))
}

fn bound(slot: &str) -> bool {
    credentials::list().iter().any(|c| c.name == slot)
}

/// Queues the announcement of `r`'s latest change under `event`, if that
/// event is announced and its slot is bound.
pub fn announce(s: &Settings, event: &str, r: &AppRequest) -> Result<()> {
    let Some(slot) = s.slack_slot(event) else {
        return Ok(());
    };
    if !bound(slot) {
        return Ok(());
    }
    let who = if r.requester.user_name.is_empty() {
        r.requester.email.clone()
    } else {
        r.requester.user_name.clone()
    };
    let detail = r.history.last().map(|e| e.note.clone()).unwrap_or_default();
    let text = format!(
        "{event}: {} for {who} on {} (request {})",
        r.app.name, r.device.name, r.id
    );
    let payload = json!({
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("*{event}*: {} {}", r.app.name, r.app.version)}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": format!("*Requested by*\n{who}")},
                {"type": "mrkdwn", "text": format!("*Device*\n{} ({})", r.device.name, r.device.id)},
                {"type": "mrkdwn", "text": format!("*Status*\n{}", r.status)},
                {"type": "mrkdwn", "text": format!("*ServiceNow*\n{}", r.sn_number.as_deref().unwrap_or("-"))},
            ]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("{detail} · request {}", r.id)}]},
        ],
    });
    let mut outbox: Outbox = get_json("outbox")?.unwrap_or_default();
    outbox.messages.push(Message {
        slot: slot.to_owned(),
        request_id: r.id.clone(),
        payload,
        refused: None,
    });
    set_json("outbox", &outbox)
}

/// What a flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Flushed {
    /// Delivered.
    pub sent: usize,
    /// Still waiting.
    pub waiting: usize,
    /// Refused for good (moved aside).
    pub refused: usize,
}

/// Delivers what it can, in order; `now_ms` decides whether a back-off
/// has passed. Keeps two requests and two seconds for the caller.
pub fn flush(now_ms: u64) -> Result<Flushed> {
    let mut outbox: Outbox = get_json("outbox")?.unwrap_or_default();
    let mut done = Flushed::default();
    if outbox.messages.is_empty() || now_ms < outbox.not_before_ms {
        done.waiting = outbox.messages.len();
        return Ok(done);
    }
    while let Some(m) = outbox.messages.first().cloned() {
        if invocation::remaining_requests() <= 2
            || invocation::remaining() < std::time::Duration::from_secs(2)
        {
            break;
        }
        let sent = destination(&m.slot)
            .map_err(switchyard_sdk::Error::invalid_input)
            .and_then(|host| {
                Request::post(format!("{host}/"))
                    .credential(&m.slot)
                    .json(&m.payload)?
                    .send()
                    .map_err(|e| switchyard_sdk::http::error_from("Slack", e))
            });
        let outcome = match sent {
            Ok(r) if r.status == 200 => Ok(()),
            Ok(r) if r.status == 429 || r.status >= 500 => {
                let wait = r
                    .header("retry-after")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(1)
                    .clamp(1, 3600);
                outbox.not_before_ms = now_ms + wait * 1000;
                let e = switchyard_sdk::Error::upstream(format!(
                    "Slack answered {} ({}); retrying in {wait} s",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                        .chars()
                        .take(64)
                        .collect::<String>()
                ));
                store::note_exchange::<()>("slack", now_ms, &Err(e))?;
                break;
            }
            Ok(r) => Err(format!(
                "Slack refused the message: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
                    .chars()
                    .take(64)
                    .collect::<String>()
            )),
            // Not bound as a secret URL, or unreachable: keep it and say so.
            Err(e) => {
                outbox.not_before_ms = now_ms + 60_000;
                store::note_exchange::<()>("slack", now_ms, &Err(e))?;
                break;
            }
        };
        outbox.messages.remove(0);
        match outcome {
            Ok(()) => {
                done.sent += 1;
                store::note_exchange("slack", now_ms, &Ok(()))?;
            }
            Err(why) => {
                done.refused += 1;
                let mut failed: Vec<Message> = get_json("outbox-failed")?.unwrap_or_default();
                failed.push(Message {
                    refused: Some(why.clone()),
                    ..m
                });
                set_json("outbox-failed", &failed)?;
                store::note_exchange::<()>(
                    "slack",
                    now_ms,
                    &Err(switchyard_sdk::Error::upstream(why)),
                )?;
            }
        }
        // Saved after each message: a crash re-sends at most one.
        set_json("outbox", &outbox)?;
    }
    set_json("outbox", &outbox)?;
    done.waiting = outbox.messages.len();
    Ok(done)
}

/// Messages waiting, and those refused for good.
pub fn pending() -> Result<(usize, usize)> {
    let outbox: Outbox = get_json("outbox")?.unwrap_or_default();
    let failed: Vec<Message> = get_json("outbox-failed")?.unwrap_or_default();
    Ok((outbox.messages.len(), failed.len()))
}
