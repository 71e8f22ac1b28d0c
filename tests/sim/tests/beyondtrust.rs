//! The BeyondTrust simulator against the fact sheet: token cap, Command
//! API, Reporting XML in both namespaces, "no archives", outbound events.

use std::sync::{Arc, Mutex};

use switchyard_sim::beyondtrust::{BeyondTrust, BtConfig, NS_BEYONDTRUST, NS_BOMGAR};

async fn token(bt: &BeyondTrust) -> String {
    let r = reqwest::Client::new()
        .post(format!("{}/oauth2/token", bt.url()))
        .basic_auth(&bt.config().client_id, Some(&bt.config().client_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    v["access_token"].as_str().unwrap().to_owned()
}

async fn get(bt: &BeyondTrust, token: &str, path: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", bt.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Parses the whole document; panics on malformed XML.
fn well_formed(xml: &str) -> usize {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut elements = 0;
    loop {
        match reader.read_event().unwrap() {
            quick_xml::events::Event::Eof => return elements,
            quick_xml::events::Event::Start(_) | quick_xml::events::Event::Empty(_) => {
                elements += 1
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn at_most_thirty_live_tokens_per_client() {
    let bt = BeyondTrust::start(BtConfig::default(), 1, 0).await.unwrap();
    let first = token(&bt).await;
    assert_eq!(
        get(&bt, &first, "/api/command?action=get_api_info").await.0,
        200
    );
    for _ in 0..30 {
        token(&bt).await;
    }
    assert_eq!(bt.live_tokens(), 30);
    let (status, body) = get(&bt, &first, "/api/command?action=get_api_info").await;
    assert_eq!(status, 401, "the oldest token was invalidated: {body}");
    let r = reqwest::Client::new()
        .post(format!("{}/oauth2/token", bt.url()))
        .basic_auth(&bt.config().client_id, Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn command_api_answers_in_xml() {
    let bt = BeyondTrust::start(BtConfig::default(), 2, 0).await.unwrap();
    let t = token(&bt).await;
    let (status, info) = get(&bt, &t, "/api/command?action=get_api_info").await;
    assert_eq!(status, 200);
    well_formed(&info);
    assert!(info.contains("<api_version>1.24.1</api_version>"), "{info}");
    // Form POST works the same as GET.
    let r = reqwest::Client::new()
        .post(format!("{}/api/command", bt.url()))
        .bearer_auth(&t)
        .form(&[
            ("action", "generate_session_key"),
            ("type", "support"),
            ("queue_id", "general"),
            ("external_key", "INC0010007"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let key = r.text().await.unwrap();
    well_formed(&key);
    let keys = bt.session_keys();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].external_key.as_deref(), Some("INC0010007"));
    for part in [
        "<session_key",
        &format!("<short_key>{}</short_key>", keys[0].short_key),
        "<key_url>",
        "<expires timestamp=",
        "<mail_subject>",
        "<mail_body>",
    ] {
        assert!(key.contains(part), "{part} missing from {key}");
    }
    let (status, err) = get(
        &bt,
        &t,
        "/api/command?action=generate_session_key&type=support&queue_id=bogus",
    )
    .await;
    assert_eq!(status, 400);
    assert!(err.contains("<error"), "{err}");
    let (_, teams) = get(&bt, &t, "/api/command?action=get_support_teams").await;
    well_formed(&teams);
    assert_eq!(teams.matches("<issue id=").count(), 3, "{teams}");
    let (status, _) = get(&bt, "not-a-token", "/api/command?action=get_api_info").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn reports_select_by_window_and_lsid_in_either_namespace() {
    let bt = BeyondTrust::start(BtConfig::default(), 3, 30)
        .await
        .unwrap();
    let t = token(&bt).await;
    let sessions = bt.sessions();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let from = now - 24 * 3600;
    let expected = sessions.iter().filter(|s| s.end >= from).count();
    assert!(expected > 0 && expected < 30);
    let (status, xml) = get(
        &bt,
        &t,
        &format!("/api/reporting?generate_report=SupportSession&start_time={from}&duration=0"),
    )
    .await;
    assert_eq!(status, 200);
    well_formed(&xml);
    assert!(xml.contains(&format!("<session_list xmlns=\"{NS_BOMGAR}\">")));
    assert_eq!(xml.matches("<session lsid=").count(), expected);
    let s = sessions.iter().rev().find(|s| s.end >= from).unwrap();
    for part in [
        format!("<session lsid=\"{}\">", s.lsid),
        format!("<end_time timestamp=\"{}\">", s.end),
        format!("<primary_rep id=\"{}\">", s.primary_rep.id),
        "<customer_list><customer".to_owned(),
        "<rep_list><representative".to_owned(),
        "<event timestamp=".to_owned(),
        "event_type=\"Session End\"".to_owned(),
    ] {
        assert!(xml.contains(&part), "{part} missing");
    }
    // A bounded window and a single lsid.
    let (_, xml) = get(
        &bt,
        &t,
        &format!(
            "/api/reporting?generate_report=SupportSession&start_time={}&duration=3600",
            s.end
        ),
    )
    .await;
    assert!(xml.contains(&s.lsid));
    let (_, one) = get(
        &bt,
        &t,
        &format!(
            "/api/reporting?generate_report=SupportSession&lsid={}",
            s.lsid
        ),
    )
    .await;
    assert_eq!(one.matches("<session lsid=").count(), 1);
    // Nothing in the window: the documented error inside a 200.
    let (status, none) = get(
        &bt,
        &t,
        &format!(
            "/api/reporting?generate_report=SupportSession&start_time={}&duration=60",
            now + 3600
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        none.contains("<error") && none.contains("No archives found"),
        "{none}"
    );
    let (status, _) = get(
        &bt,
        &t,
        "/api/reporting?generate_report=SupportSession&start_time=yesterday",
    )
    .await;
    assert_eq!(status, 400);

    let newer = BeyondTrust::start(
        BtConfig {
            namespace: NS_BEYONDTRUST,
            ..BtConfig::default()
        },
        3,
        5,
    )
    .await
    .unwrap();
    let t2 = token(&newer).await;
    let (_, xml) = get(
        &newer,
        &t2,
        "/api/reporting?generate_report=SupportSession&start_time=0&duration=0",
    )
    .await;
    assert!(xml.contains(&format!("<session_list xmlns=\"{NS_BEYONDTRUST}\">")));
    assert_eq!(xml.matches("<session lsid=").count(), 5);
}

#[tokio::test]
async fn rep_exit_surveys_carry_the_task_number() {
    let bt = BeyondTrust::start(BtConfig::default(), 4, 0).await.unwrap();
    let lsid = bt.complete_session(None, Some("INC0010042"));
    let t = token(&bt).await;
    let (status, xml) = get(
        &bt,
        &t,
        &format!("/api/reporting?generate_report=SupportRepExitSurvey&lsid={lsid}"),
    )
    .await;
    assert_eq!(status, 200);
    well_formed(&xml);
    assert!(
        xml.contains(&format!("<exit_survey lsid=\"{lsid}\">")),
        "{xml}"
    );
    assert!(
        xml.contains("<name>task_number</name><answer_list><answer>INC0010042</answer>"),
        "{xml}"
    );
}

#[tokio::test]
async fn outbound_events_are_held_until_the_receiver_answers_200() {
    let received: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let refusals = Arc::new(Mutex::new(2u32));
    let (sink, left) = (received.clone(), refusals.clone());
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (sink, left) = (sink.clone(), left.clone());
            async move {
                let f: std::collections::HashMap<String, String> =
                    url::form_urlencoded::parse(&body).into_owned().collect();
                let mut left = left.lock().unwrap();
                let ok = *left == 0;
                *left = left.saturating_sub(1);
                sink.lock().unwrap().push((
                    f["event"].clone(),
                    f["lsid"].clone(),
                    f.get("outbound_event_token").cloned().unwrap_or_default(),
                ));
                if ok {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let bt = BeyondTrust::start(
        BtConfig {
            retry_ms: 50,
            ..BtConfig::default()
        },
        5,
        0,
    )
    .await
    .unwrap();
    bt.set_outbound(&url, "evt-token");
    let first = bt.complete_session(Some("INC0010001"), None);
    bt.send_event(
        "support_conference_member_added",
        &first,
        Some("INC0010001"),
    );
    for _ in 0..100 {
        if bt.delivered().len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let got = received.lock().unwrap().clone();
    let names: Vec<&str> = got.iter().map(|(e, _, _)| e.as_str()).collect();
    // The refused first event was retried, and the second waited for it.
    assert_eq!(
        names,
        [
            "support_conference_end",
            "support_conference_end",
            "support_conference_end",
            "support_conference_member_added"
        ]
    );
    assert!(got.iter().all(|(_, l, t)| l == &first && t == "evt-token"));
    let delivered = bt.delivered();
    assert_eq!(delivered[0].statuses, [503, 503, 200]);
    assert!(bt.pending().is_empty());
}
