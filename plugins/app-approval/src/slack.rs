//! Slack announcements through an outbox, so that Slack's pace (about one
//! message a second per webhook, 429 with `Retry-After` beyond it) never
//! blocks the flow and never loses a message.
//!
//! Every status change stores its message (under `out/<created>-<request>-
//! <change>`, one key per message, so two invocations adding at once cannot
//! lose one) before the change itself is saved: a crash in between makes
//! the step run again, and it stores the same key again. Each invocation then
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
use switchyard_sdk::credentials::{self, SecretPlacement};
use switchyard_sdk::http::{Error as HttpError, Request};

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

/// A message's key: the request's creation time, the request, and the
/// change's place in its history. Deliveries go in key order, so a
/// request's messages go in the order of its changes; and a step that runs
/// again after a crash stores its message under the same key instead of a
/// second copy.
fn message_key(r: &AppRequest) -> String {
    format!("out/{:013}-{}-{:04}", r.created_ms, r.id, r.history.len())
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
    set_json(&message_key(r), &message)
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

/// What became of one message.
enum Outcome {
    /// Slack took it.
    Sent,
    /// Slack or the way to it is busy or down: stop, retry after this many
    /// seconds (order is kept).
    Later(u64, String),
    /// It can never be sent as it is: set it aside with the reason.
    Refused(String),
    /// This call has no requests left: the next one goes on.
    Stop,
}

fn send(m: &Message) -> Outcome {
    let host = match destination(&m.slot) {
        Ok(h) => h,
        Err(e) => return Outcome::Refused(format!("not sent: {e}")),
    };
    let req = match Request::post(format!("{host}/"))
        .credential(&m.slot)
        .json(&m.payload)
    {
        Ok(r) => r,
        Err(e) => return Outcome::Refused(format!("not sent: {}", e.message().to_owned())),
    };
    let snippet = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .chars()
            .take(64)
            .collect::<String>()
    };
    match req.send() {
        Ok(r) if r.status == 200 => Outcome::Sent,
        Ok(r) if r.status == 429 || r.status >= 500 => {
            let wait = r
                .header("retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1)
                .clamp(1, 3600);
            Outcome::Later(
                wait,
                format!(
                    "Slack answered {} ({}); retrying in {wait} s",
                    r.status,
                    snippet(&r.body)
                ),
            )
        }
        Ok(r) => Outcome::Refused(format!(
            "Slack refused the message: {} {}",
            r.status,
            snippet(&r.body)
        )),
        Err(HttpError::LimitExceeded(_)) => Outcome::Stop,
        Err(e @ (HttpError::Timeout | HttpError::Connection(_) | HttpError::TooLarge(_))) => {
            Outcome::Later(
                60,
                switchyard_sdk::http::error_from("Slack", e)
                    .message()
                    .to_owned(),
            )
        }
        // Egress denied, the credential not usable, a request the host
        // refuses: waiting will not help.
        Err(e) => Outcome::Refused(format!(
            "not sent: {}",
            switchyard_sdk::http::error_from("Slack", e)
                .message()
                .to_owned()
        )),
    }
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
        match send(&m) {
            Outcome::Sent => {
                storage::delete(&key)?;
                done.sent += 1;
                store::note_exchange("slack", now_ms, &Ok(()))?;
            }
            Outcome::Later(wait, why) => {
                set_json("slack-not-before", &(now_ms + wait * 1000))?;
                let e = switchyard_sdk::Error::upstream(why);
                return store::note_exchange::<()>("slack", now_ms, &Err(e));
            }
            Outcome::Refused(why) => {
                set_json(
                    &key.replacen("out/", "slack-refused/", 1),
                    &Message {
                        refused: Some(why.clone()),
                        ..m
                    },
                )?;
                storage::delete(&key)?;
                done.refused += 1;
                let e = switchyard_sdk::Error::upstream(why);
                store::note_exchange::<()>("slack", now_ms, &Err(e))?;
            }
            Outcome::Stop => break,
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
