//! The MTD and identity-system simulators against their documented APIs.

use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use switchyard_sim::identity::{Identity, IdentityConfig};
use switchyard_sim::mtd::{Mtd, MtdConfig};

#[tokio::test]
async fn mtd_inventory_paging_errors_and_signed_risk_webhooks() {
    let mtd = Mtd::start(MtdConfig::default()).await.unwrap();
    let http = reqwest::Client::new();
    let key = mtd.config().api_key.clone();
    let put = |id: String, body: Value| {
        http.put(format!("{}/api/v1/devices/{id}", mtd.url()))
            .header("x-api-key", &key)
            .json(&body)
            .send()
    };
    for i in 0..5 {
        let r = put(format!("{}", 10_000 + i), json!({"udid": format!("U{i}"), "platform": "Apple", "owner_email": "UEMDeviceU@vendor.UEM"}))
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let r = put(
        "10000".into(),
        json!({"udid": "U0", "platform": "Apple", "os_version": "17.4"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "a second upsert updates");
    let dev: Value = r.json().await.unwrap();
    assert_eq!(
        (dev["status"].as_str(), dev["risk"].as_str()),
        (Some("provisioned"), Some("none"))
    );
    let r = put("x".into(), json!({"platform": "Apple"})).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_request"
    );
    let r = put(
        "x".into(),
        json!({"udid": "U", "platform": "Apple", "colour": "red"}),
    )
    .await
    .unwrap();
    assert!(
        r.json::<Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour")
    );

    let page = |n: usize| {
        http.get(format!("{}/api/v1/devices?page={n}&page_size=2", mtd.url()))
            .header("x-api-key", &key)
            .send()
    };
    let p0: Value = page(0).await.unwrap().json().await.unwrap();
    assert_eq!(
        (p0["total"].as_u64(), p0["next_page"].as_u64()),
        (Some(5), Some(1))
    );
    let p2: Value = page(2).await.unwrap().json().await.unwrap();
    assert_eq!(p2["devices"].as_array().unwrap().len(), 1);
    assert!(p2["next_page"].is_null());
    let r = http
        .get(format!("{}/api/v1/devices", mtd.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let del = |id: &str| {
        http.delete(format!("{}/api/v1/devices/{id}", mtd.url()))
            .header("x-api-key", &key)
            .send()
    };
    assert_eq!(del("10004").await.unwrap().status(), 204);
    assert_eq!(del("10004").await.unwrap().status(), 404);
    assert_eq!(mtd.deleted(), ["10004"]);

    // Risk changes reach the webhook, signed.
    /// (signature header, body) of each delivery.
    type Deliveries = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let got: Deliveries = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/risk",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    let sig = headers["x-mtd-signature"].to_str().unwrap().to_owned();
                    sink.lock().unwrap().push((sig, body.to_vec()));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/risk", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    mtd.set_webhook(&url);
    let n = mtd
        .set_risk("10001", "high", &["jailbroken", "malicious_app"])
        .await
        .unwrap();
    assert_eq!(n.outcome, Ok(200));
    let (sig, body) = got.lock().unwrap()[0].clone();
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(mtd.config().webhook_secret.as_bytes()).unwrap();
    mac.update(&body);
    assert_eq!(
        sig,
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (event["risk"].as_str(), event["previous_risk"].as_str()),
        (Some("high"), Some("none"))
    );
    assert_eq!(
        event["threat_factors"],
        json!(["jailbroken", "malicious_app"])
    );
    let dev = mtd.devices().into_iter().find(|d| d.id == "10001").unwrap();
    assert_eq!(dev.risk, "high");
}

#[tokio::test]
async fn identity_requests_take_ticket_status_until_closed() {
    let idm = Identity::start(IdentityConfig::default(), 1, 3)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let token = idm.config().token.clone();
    let r = http
        .get(format!(
            "{}/api/access-requests?status=pending_manual",
            idm.url()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let list: Value = r.json().await.unwrap();
    assert_eq!(list["requests"].as_array().unwrap().len(), 3);
    let id = list["requests"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        list["requests"][0]["requester_email"],
        switchyard_sim::common::person(0).email.as_str()
    );
    let update = |body: Value| {
        http.post(format!(
            "{}/api/access-requests/{id}/ticket-status",
            idm.url()
        ))
        .bearer_auth(&token)
        .json(&body)
        .send()
    };
    let r = update(
        json!({"ticket_number": "RITM0010001", "state": "in_progress", "comment": "assigned"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "in_progress");
    assert_eq!(
        update(json!({"ticket_number": "RITM0010001", "state": "exploded"}))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(update(json!({"state": "new"})).await.unwrap().status(), 400);
    let r = update(
        json!({"ticket_number": "RITM0010001", "state": "closed_complete", "comment": "done"}),
    )
    .await
    .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "fulfilled");
    let r = update(json!({"ticket_number": "RITM0010001", "state": "in_progress"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "closed");
    let req = idm.requests().into_iter().find(|r| r.id == id).unwrap();
    assert_eq!(req.history.len(), 2);
    assert_eq!(req.ticket_state.as_deref(), Some("closed_complete"));
    let r = http
        .get(format!("{}/api/access-requests/{id}", idm.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{}/api/access-requests/AR-0", idm.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
