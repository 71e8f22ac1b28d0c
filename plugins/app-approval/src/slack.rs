//! Slack announcements through an outbox, so that Slack's pace (about one
//! message a second per webhook, 429 with `Retry-After` beyond it) never
//! blocks the flow and never loses a message.
//!
//! Every status change stores a message under `out/<ms>-<seq>-<random>`
//! in the same invocation that saves the change (one key per message: two
//! invocations adding at once cannot lose one). Each invocation then
//! delivers from the oldest while it has time and requests left, holding
//! the lease `slack-lock` so that two never send the same message, and
//! stops at the first message Slack does not take: 429 and 5xx wait
//! (`slack-not-before`), so order is kept, per request and overall. A
//! message is deleted only after Slack took it (a crash in between sends
//! it once more). A message Slack refuses for good (400, 403, 404, 410: a
//! broken payload, an archived channel, a revoked webhook) is moved to
//! `slack-refused/` with Slack's answer, not retried for ever and not
//! dropped silently.
//!
//! The webhook URL is a secret-URL credential: the plugin addresses the
//! credential's host and the host sends the message to the secret URL.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::cell::Cell;
use switchyard_sdk::credentials::{self, SecretPlacement};
use switchyard_sdk::http::Request;

use switchyard_sdk::storage::{self, Lease, get_json, set_json};
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

thread_local! {
    /// Orders the messages one invocation stores within a millisecond.
    static SEQ: Cell<u32> = const { Cell::new(0) };
}

fn message_key(now_ms: u64) -> Result<String> {
    let seq = SEQ.with(|c| {
        let n = c.get();
        c.set(n + 1);
        n
    });
    let r: [u8; 4] = crate::token::random_bytes()?;
    Ok(format!("out/{now_ms:013}-{seq:06}-{}", hex::encode(r)))
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
    let message = Message {
        slot: slot.to_owned(),
        request_id: r.id.clone(),
        payload,
        refused: None,
    };
    set_json(&message_key(crate::flow::now_ms())?, &message)
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
    let mut done = Flushed::default();
    let not_before: u64 = get_json("slack-not-before")?.unwrap_or(0);
    let lease = if now_ms < not_before {
        None
    } else {
        // Another invocation is delivering: it goes on from where we are.
        Lease::take("slack-lock", &invocation_holder()?)?.ok()
    };
    if let Some(lease) = lease {
        let result = deliver(now_ms, &mut done);
        lease.release()?;
        result?;
    }
    done.waiting = storage::list("out/")?.len();
    Ok(done)
}

fn invocation_holder() -> Result<String> {
    let r: [u8; 8] = crate::token::random_bytes()?;
    Ok(hex::encode(r))
}

fn deliver(now_ms: u64, done: &mut Flushed) -> Result<()> {
    for key in storage::list("out/")? {
        if invocation::remaining_requests() <= 2
            || invocation::remaining() < std::time::Duration::from_secs(2)
        {
            break;
        }
        let Some(m) = get_json::<Message>(&key)? else {
            continue;
        };
        let sent = destination(&m.slot)
            .map_err(switchyard_sdk::Error::invalid_input)
            .and_then(|host| {
                Request::post(format!("{host}/"))
                    .credential(&m.slot)
                    .json(&m.payload)?
                    .send()
                    .map_err(|e| switchyard_sdk::http::error_from("Slack", e))
            });
        let answer = |r: &switchyard_sdk::http::Response| {
            String::from_utf8_lossy(&r.body)
                .chars()
                .take(64)
                .collect::<String>()
        };
        match sent {
            Ok(r) if r.status == 200 => {
                storage::delete(&key)?;
                done.sent += 1;
                store::note_exchange("slack", now_ms, &Ok(()))?;
            }
            Ok(r) if r.status == 429 || r.status >= 500 => {
                let wait = r
                    .header("retry-after")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(1)
                    .clamp(1, 3600);
                set_json("slack-not-before", &(now_ms + wait * 1000))?;
                let e = switchyard_sdk::Error::upstream(format!(
                    "Slack answered {} ({}); retrying in {wait} s",
                    r.status,
                    answer(&r)
                ));
                return store::note_exchange::<()>("slack", now_ms, &Err(e));
            }
            Ok(r) => {
                let why = format!("Slack refused the message: {} {}", r.status, answer(&r));
                set_json(
                    &key.replacen("out/", "slack-refused/", 1),
                    &Message {
                        refused: Some(why.clone()),
                        ..m
                    },
                )?;
                storage::delete(&key)?;
                done.refused += 1;
                store::note_exchange::<()>(
                    "slack",
                    now_ms,
                    &Err(switchyard_sdk::Error::upstream(why)),
                )?;
            }
            // Not bound as a secret URL, or unreachable: keep it, say so,
            // try again in a minute.
            Err(e) => {
                set_json("slack-not-before", &(now_ms + 60_000))?;
                return store::note_exchange::<()>("slack", now_ms, &Err(e));
            }
        }
    }
    Ok(())
}

/// Messages waiting, and those refused for good.
pub fn pending() -> Result<(usize, usize)> {
    Ok((
        storage::list("out/")?.len(),
        storage::list("slack-refused/")?.len(),
    ))
}
