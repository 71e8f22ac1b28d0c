//! The Slack incoming-webhook simulator: answers, errors and pacing.

use serde_json::json;
use switchyard_sim::slack::{Slack, SlackConfig};

#[tokio::test]
async fn messages_errors_and_the_rate_limit() {
    let slack = Slack::start(SlackConfig {
        archived: vec!["old".into()],
        burst: 2,
        ..SlackConfig::default()
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let url = slack.webhook_url("general");
    let send = |url: String, body: serde_json::Value| {
        let http = http.clone();
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, r.text().await.unwrap(), retry)
        }
    };
    assert_eq!(
        send(url.clone(), json!({"text": "Lock sent"})).await,
        (200, "ok".into(), None)
    );
    let blocks =
        json!({"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]});
    assert_eq!(send(url.clone(), blocks).await.0, 200);
    // The burst is spent: the next message within the second is refused.
    let (status, body, retry) = send(url.clone(), json!({"text": "third"})).await;
    assert_eq!((status, retry.as_deref()), (429, Some("1")), "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(send(url.clone(), json!({"text": "later"})).await.0, 200);
    let texts: Vec<_> = slack
        .messages("general")
        .iter()
        .map(|m| m.text.clone())
        .collect();
    assert_eq!(
        texts,
        [Some("Lock sent".into()), None, Some("later".into())]
    );

    let url2 = slack.webhook_url("it-alerts");
    assert_eq!(
        send(url2.clone(), json!({"nope": 1})).await.1,
        "invalid_payload"
    );
    assert_eq!(send(url2.clone(), json!({"text": ""})).await.0, 400);
    let r = http.post(&url2).body("not json").send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (400, "invalid_payload".into())
    );
    assert_eq!(
        send(slack.webhook_url("old"), json!({"text": "x"})).await,
        (410, "channel_is_archived".into(), None)
    );
    assert_eq!(
        send(
            format!("{}/services/T1/B1/unknown", slack.url()),
            json!({"text": "x"})
        )
        .await,
        (404, "no_service".into(), None)
    );
    assert!(slack.messages("it-alerts").is_empty());
}
