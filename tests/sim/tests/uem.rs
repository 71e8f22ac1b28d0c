//! The UEM simulator against the fact sheet: auth, lookups, paging,
//! commands, error bodies, rate limiting and faults.

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchyard_sim::common::{Fault, FaultKind};
use switchyard_sim::uem::{Uem, UemConfig};

struct Client {
    http: reqwest::Client,
    base: String,
    cfg: UemConfig,
}

impl Client {
    fn new(uem: &Uem) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: uem.url(),
            cfg: uem.config().clone(),
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .basic_auth(&self.cfg.username, Some(&self.cfg.password))
            .header("aw-tenant-code", &self.cfg.tenant_code)
            .header("accept", "application/json;version=2")
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.req(reqwest::Method::GET, path).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (StatusCode, String) {
        let mut r = self.req(reqwest::Method::POST, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }
}

fn assert_uem_error(body: &Value, code: i64) {
    assert_eq!(body["errorCode"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        body["activityId"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn basic_auth_needs_the_tenant_code_and_json() {
    let uem = Uem::start(UemConfig::default(), 1, 5).await.unwrap();
    let c = Client::new(&uem);
    let (status, info) = c.get("/api/system/info").await;
    assert_eq!(status, 200);
    assert_eq!(info["ProductVersion"], "24.10.0.7");
    // Both path casings are served.
    assert_eq!(c.get("/API/system/info").await.0, 200);

    let http = reqwest::Client::new();
    let url = format!("{}/api/system/info", uem.url());
    let cfg = uem.config();
    let r = http
        .get(&url)
        .basic_auth(&cfg.username, Some(&cfg.password))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_uem_error(&r.json().await.unwrap(), 1002);
    let r = http
        .get(&url)
        .basic_auth(&cfg.username, Some("wrong"))
        .header("aw-tenant-code", &cfg.tenant_code)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_uem_error(&r.json().await.unwrap(), 1005);
    let r = http
        .get(&url)
        .basic_auth(&cfg.username, Some(&cfg.password))
        .header("aw-tenant-code", &cfg.tenant_code)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 406);
}

#[tokio::test]
async fn oauth_tokens_work_until_they_expire() {
    let uem = Uem::start(UemConfig::default(), 1, 5).await.unwrap();
    let cfg = uem.config().clone();
    let http = reqwest::Client::new();
    // Client id and secret in the form body...
    let r = http
        .post(uem.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", cfg.client_id.as_str()),
            ("client_secret", cfg.client_secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 3600);
    let token = t["access_token"].as_str().unwrap().to_owned();
    // ... or as HTTP Basic.
    let r = http
        .post(uem.token_url())
        .basic_auth(&cfg.client_id, Some(&cfg.client_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(uem.token_url())
        .basic_auth(&cfg.client_id, Some("nope"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");

    let call = || {
        http.get(format!("{}/api/system/info", uem.url()))
            .bearer_auth(&token)
            .header("accept", "application/json")
            .send()
    };
    assert_eq!(call().await.unwrap().status(), 200);
    // Token expiry, injected over HTTP as a standalone user would.
    let r = http
        .post(format!("{}/_sim/expire-tokens", uem.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = call().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_uem_error(&r.json().await.unwrap(), 1005);
}

#[tokio::test]
async fn devices_are_found_by_every_identifier() {
    let uem = Uem::start(UemConfig::default(), 3, 12).await.unwrap();
    let c = Client::new(&uem);
    let d = uem.devices()[4].clone();
    for path in [
        format!("/api/mdm/devices/{}", d.id),
        format!("/api/mdm/devices/udid/{}", d.udid),
        format!("/api/mdm/devices/serialnumber/{}", d.serial),
        format!("/api/mdm/devices?searchby=Serialnumber&id={}", d.serial),
        format!("/api/mdm/devices?searchby=Macaddress&id={}", d.mac),
        format!("/api/mdm/devices?searchby=ImeiNumber&id={}", d.imei),
        format!("/api/mdm/devices?searchby=EasId&id={}", d.eas_id),
    ] {
        let (status, body) = c.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["Id"]["Value"], d.id, "{path}");
        assert_eq!(body["Uuid"], d.uuid.as_str());
        assert_eq!(body["UserEmailAddress"], d.user_email.as_str());
        assert!(body["LocationGroupId"]["Id"]["Value"].is_i64());
        assert!(body["LocationGroupId"]["Name"].is_string());
    }
    let (status, body) = c.get("/api/mdm/devices/999999").await;
    assert_eq!(status, 404);
    assert_uem_error(&body, 5061);
    assert_eq!(body["message"], "Device not found for this request.");
}

#[tokio::test]
async fn search_pages_from_zero_and_is_empty_when_nothing_matches() {
    let uem = Uem::start(UemConfig::default(), 5, 23).await.unwrap();
    let c = Client::new(&uem);
    let (status, all) = c.get("/api/mdm/devices/search").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            all["Page"].as_i64(),
            all["PageSize"].as_i64(),
            all["Total"].as_i64()
        ),
        (Some(0), Some(500), Some(23))
    );
    let mut seen = Vec::new();
    for page in 0..3 {
        let (_, p) = c
            .get(&format!("/api/mdm/devices/search?page={page}&pagesize=10"))
            .await;
        assert_eq!(p["Total"], 23);
        seen.extend(
            p["Devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["Id"]["Value"].as_i64().unwrap()),
        );
    }
    assert_eq!(seen.len(), 23);
    seen.dedup();
    assert_eq!(seen.len(), 23);
    // By user: a person with several devices gets all of them.
    let user = &uem.devices()[0].user_name;
    let (_, mine) = c.get(&format!("/api/mdm/devices/search?user={user}")).await;
    assert!(
        mine["Devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["UserName"] == user.as_str())
    );
    let expected = uem
        .devices()
        .iter()
        .filter(|d| &d.user_name == user)
        .count();
    assert!(expected >= 2, "the seed gives people several devices");
    assert_eq!(mine["Total"], expected, "{mine}");
    let r = c
        .req(reqwest::Method::GET, "/api/mdm/devices/search?user=nobody")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.bytes().await.unwrap().is_empty());
    let (status, users) = c
        .get(&format!(
            "/api/system/users/search?email={}",
            uem.devices()[0].user_email
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(users["Users"][0]["UserName"], user.as_str());
}

#[tokio::test]
async fn commands_answer_202_and_are_recorded() {
    let cfg = UemConfig {
        denied_commands: vec!["DeviceWipe".into()],
        ..UemConfig::default()
    };
    let uem = Uem::start(cfg, 9, 6).await.unwrap();
    let c = Client::new(&uem);
    let d = uem.devices()[1].clone();
    let (status, body) = c
        .post(
            &format!("/api/mdm/devices/{}/commands?command=Lock", d.id),
            None,
        )
        .await;
    assert_eq!((status.as_u16(), body.as_str()), (202, ""));
    let (status, _) = c
        .post(
            &format!(
                "/api/mdm/devices/commands?command=SyncDevice&searchBy=Serialnumber&id={}",
                d.serial
            ),
            None,
        )
        .await;
    assert_eq!(status, 202);
    let (status, body) = c
        .post(
            &format!("/api/mdm/devices/{}/commands?command=Explode", d.id),
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = c
        .post(
            &format!("/api/mdm/devices/{}/commands?command=DeviceWipe", d.id),
            None,
        )
        .await;
    assert_eq!(status, 403);
    assert_uem_error(&serde_json::from_str(&body).unwrap(), 1001);
    let (status, _) = c
        .post(
            &format!("/api/mdm/devices/{}/commands/changepasscode", d.id),
            Some(json!({"Passcode": "1234"})),
        )
        .await;
    assert_eq!(status, 202);
    let (status, _) = c
        .post(
            &format!("/api/mdm/devices/messages/push?searchby=deviceid&id={}", d.id),
            Some(json!({"MessageBody": "hi", "Application": "IntelligentHub", "MessageType": "Apns"})),
        )
        .await;
    assert_eq!(status, 202);
    let (status, _) = c
        .post(
            &format!(
                "/api/mdm/devices/commands/requestdevicelog?searchby=Serialnumber&id={}",
                d.serial
            ),
            Some(json!({"Source": "Agent", "Level": "Debug", "Duration": 721})),
        )
        .await;
    assert_eq!(status, 400, "durations above 720 minutes are refused");
    let got: Vec<(i64, String)> = uem
        .commands()
        .iter()
        .map(|c| (c.device_id, c.command.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (d.id, "Lock".into()),
            (d.id, "SyncDevice".into()),
            (d.id, "ChangePasscode".into()),
            (d.id, "SendMessage".into())
        ]
    );
    assert_eq!(uem.commands()[3].body["MessageBody"], "hi");
}

#[tokio::test]
async fn notes_keys_tags_and_groups() {
    let uem = Uem::start(UemConfig::default(), 11, 40).await.unwrap();
    let c = Client::new(&uem);
    let d = uem.devices()[0].clone();
    let (status, body) = c
        .post(
            &format!("/api/mdm/devices/{}/notes", d.id),
            Some(json!({"DeviceId": d.id, "Note": "Locked by ada"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["EntityId"].is_i64());
    let (_, notes) = c.get(&format!("/api/mdm/devices/{}/notes", d.id)).await;
    assert_eq!(notes["DeviceNotes"][0]["Note"], "Locked by ada");
    assert_eq!(
        uem.device(d.id).unwrap().notes[0].created_by,
        uem.config().username
    );

    let mac = uem
        .devices()
        .into_iter()
        .find(|d| d.platform == "AppleOsX")
        .expect("a mac in the seed");
    let (status, key) = c
        .get(&format!(
            "/api/mdm/devices/{}/security/recovery-key",
            mac.uuid
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        key["RecoveryKey"],
        mac.filevault_key.clone().unwrap().as_str()
    );
    let win = uem
        .devices()
        .into_iter()
        .find(|d| d.platform == "WinRT")
        .expect("a Windows device in the seed");
    let (_, drives) = c
        .get(&format!("/api/mdm/devices/{}/bitlocker/drives", win.uuid))
        .await;
    let volume = drives["Drives"][0]["VolumeId"].as_str().unwrap();
    let (_, prot) = c
        .get(&format!(
            "/api/mdm/devices/{}/bitlocker/drives/{volume}/protectors",
            win.uuid
        ))
        .await;
    assert_eq!(
        prot["Protectors"][0]["RecoveryPassword"],
        win.bitlocker[0].1.as_str()
    );
    // Keys are looked up by UUID, not by numeric id.
    assert_eq!(
        c.get(&format!(
            "/api/mdm/devices/{}/security/recovery-key",
            mac.id
        ))
        .await
        .0,
        404
    );

    let (status, body) = c
        .post(
            "/api/mdm/tags/addtag",
            Some(json!({"TagName": "CHKP_Risk_High", "LocationGroupId": 570})),
        )
        .await;
    assert_eq!(status, 200);
    let tag = serde_json::from_str::<Value>(&body).unwrap()["Value"]
        .as_i64()
        .unwrap();
    let (_, found) = c
        .get("/api/mdm/tags/search?name=CHKP_Risk&organizationgroupid=570")
        .await;
    assert_eq!(found["Tags"][0]["Id"]["Value"], tag);
    let (_, bulk) = c
        .post(
            &format!("/api/mdm/tags/{tag}/adddevices"),
            Some(json!({"BulkValues": {"Value": [d.id, 1]}})),
        )
        .await;
    let bulk: Value = serde_json::from_str(&bulk).unwrap();
    assert_eq!(
        (bulk["AcceptedItems"].as_i64(), bulk["FailedItems"].as_i64()),
        (Some(1), Some(1))
    );
    let (_, tags) = c.get(&format!("/api/mdm/devices/{}/tags", d.uuid)).await;
    assert_eq!(tags["Tag"][0]["TagName"], "CHKP_Risk_High");
    c.post(
        &format!("/api/mdm/tags/{tag}/removedevices"),
        Some(json!({"BulkValues": {"Value": [d.id]}})),
    )
    .await;
    assert!(uem.tags()[0].devices.is_empty());

    let (_, groups) = c.get("/api/system/groups/search").await;
    assert_eq!(groups["LocationGroups"].as_array().unwrap().len(), 4);
    let (_, sg) = c.get("/api/mdm/smartgroups/search?name=iOS").await;
    let id = sg["SmartGroups"][0]["SmartGroupID"].as_i64().unwrap();
    let (_, members) = c.get(&format!("/api/mdm/smartgroups/{id}/devices")).await;
    assert!(
        members["Devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["Platform"] == "Apple")
    );
    let (_, apps) = c.get(&format!("/api/mdm/devices/{}/apps", d.id)).await;
    assert_eq!(apps["DeviceApps"][0]["ApplicationName"], "Intelligent Hub");
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_its_headers() {
    let cfg = UemConfig {
        rate_limit_per_minute: 3,
        ..UemConfig::default()
    };
    let uem = Uem::start(cfg, 1, 2).await.unwrap();
    let c = Client::new(&uem);
    for remaining in (0..3).rev() {
        let r = c
            .req(reqwest::Method::GET, "/api/system/info")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-limit"], "3");
        assert_eq!(
            r.headers()["x-ratelimit-remaining"],
            remaining.to_string().as_str()
        );
        assert!(
            r.headers()["x-ratelimit-reset"]
                .to_str()
                .unwrap()
                .parse::<i64>()
                .unwrap()
                > 1_700_000_000
        );
    }
    let r = c
        .req(reqwest::Method::GET, "/api/system/info")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_uem_error(&r.json().await.unwrap(), 1029);
}

#[tokio::test]
async fn faults_are_injected_per_endpoint() {
    let uem = Uem::start(UemConfig::default(), 1, 3).await.unwrap();
    let c = Client::new(&uem);
    let id = uem.devices()[0].id;
    let path = format!("/api/mdm/devices/{id}");
    uem.control().inject(
        Fault::on(
            "/api/mdm/devices",
            FaultKind::Status {
                status: 503,
                message: None,
            },
        )
        .times(1),
    );
    let (status, body) = c.get(&path).await;
    assert_eq!(status, 503);
    assert_uem_error(&body, 1000);
    assert_eq!(c.get(&path).await.0, 200, "a one-time fault is used up");
    assert_eq!(c.get("/api/system/info").await.0, 200);

    uem.control()
        .inject(Fault::on(&path, FaultKind::Malformed).times(1));
    let r = c.req(reqwest::Method::GET, &path).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.is_err());

    uem.control()
        .inject(Fault::on(&path, FaultKind::Reset).times(1));
    let broken = match c.req(reqwest::Method::GET, &path).send().await {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(broken, "the connection is cut");

    uem.control().inject(
        Fault::on(
            &path,
            FaultKind::RateLimit {
                retry_after_secs: 7,
            },
        )
        .times(1),
    );
    let r = c.req(reqwest::Method::GET, &path).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");

    uem.control()
        .inject(Fault::on(&path, FaultKind::Latency { ms: 300 }).times(1));
    let t = std::time::Instant::now();
    assert_eq!(c.get(&path).await.0, 200);
    assert!(t.elapsed() >= std::time::Duration::from_millis(300));

    // The same over HTTP, and the request log sees everything but /_sim/.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/_sim/faults", uem.url()))
        .json(&json!({"path": "/api/system/info", "kind": "status", "status": 502, "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(c.get("/api/system/info").await.0, 502);
    let log: Value = http
        .get(format!("{}/_sim/requests", uem.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert!(paths.iter().all(|p| !p.starts_with("/_sim/")));
    assert_eq!(paths.len(), uem.control().requests().len());
    let last = uem.control().requests().pop().unwrap();
    assert_eq!(
        last.header("aw-tenant-code"),
        Some(uem.config().tenant_code.as_str())
    );
    assert!(last.header("authorization").unwrap().starts_with("Basic "));
}

#[tokio::test]
async fn seeds_are_deterministic() {
    let a = Uem::start(UemConfig::default(), 42, 30).await.unwrap();
    let b = Uem::start(UemConfig::default(), 42, 30).await.unwrap();
    let key = |u: &Uem| {
        u.devices()
            .iter()
            .map(|d| (d.id, d.serial.clone(), d.os.clone(), d.user_email.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&a), key(&b));
    let c = Uem::start(UemConfig::default(), 43, 30).await.unwrap();
    assert_ne!(key(&a), key(&c));
    // Every OS family the seed detects is present in a sizeable fleet.
    let big = Uem::start(UemConfig::default(), 42, 200).await.unwrap();
    for family in ["iOS", "Android", "Windows", "macOS", "Linux"] {
        assert!(
            big.devices().iter().any(|d| d.os.contains(family)),
            "{family}"
        );
    }
}
