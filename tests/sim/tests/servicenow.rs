//! The ServiceNow simulator against the fact sheet: Table API paging and
//! queries, references, journals, auth, errors, rate limit, app approval.

use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchyard_sim::servicenow::{ServiceNow, ServiceNowConfig};

fn client(sn: &ServiceNow) -> impl Fn(reqwest::Method, &str) -> reqwest::RequestBuilder + '_ {
    let http = reqwest::Client::new();
    move |m, path| {
        http.request(m, format!("{}{path}", sn.url()))
            .basic_auth(&sn.config().username, Some(&sn.config().password))
            .header("accept", "application/json")
    }
}

async fn json_of(r: reqwest::Response) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let status = r.status();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

fn assert_sn_error(body: &Value) {
    assert_eq!(body["status"], "failure", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["error"].get("detail").is_some(), "{body}");
}

#[tokio::test]
async fn lists_page_with_link_and_total_count() {
    let sn = ServiceNow::start(ServiceNowConfig::default(), 1, 5, 23)
        .await
        .unwrap();
    let get = client(&sn);
    let (status, h, body) = json_of(
        get(reqwest::Method::GET, "/api/now/table/incident?sysparm_limit=10&sysparm_offset=10&sysparm_query=ORDERBYnumber")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h["x-total-count"], "23");
    let result = body["result"].as_array().unwrap();
    assert_eq!(result.len(), 10);
    assert_eq!(result[0]["number"], "INC0010011");
    let link = h["link"].to_str().unwrap();
    for rel in ["first", "prev", "next", "last"] {
        assert!(link.contains(&format!("rel=\"{rel}\"")), "{link}");
    }
    assert!(link.contains("sysparm_offset=20>;rel=\"next\""), "{link}");
    assert!(link.contains("sysparm_offset=20>;rel=\"last\""), "{link}");
    assert!(link.contains("sysparm_query=ORDERBYnumber"), "{link}");
    // Following `next` to the end.
    let next = link
        .split(',')
        .find(|l| l.contains("rel=\"next\""))
        .unwrap()
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_owned();
    let r = reqwest::Client::new()
        .get(&next)
        .basic_auth(&sn.config().username, Some(&sn.config().password))
        .send()
        .await
        .unwrap();
    let (_, h, body) = json_of(r).await;
    assert_eq!(body["result"].as_array().unwrap().len(), 3);
    assert!(!h["link"].to_str().unwrap().contains("rel=\"next\""));
}

#[tokio::test]
async fn encoded_queries_fields_and_references() {
    let sn = ServiceNow::start(ServiceNowConfig::default(), 2, 6, 30)
        .await
        .unwrap();
    let get = client(&sn);
    let ada = &sn.records("sys_user")[0];
    let email = ada["email"].as_str().unwrap();
    let expected = sn
        .records("incident")
        .iter()
        .filter(|i| i["caller_id"] == ada["sys_id"])
        .count();
    let (status, _, body) = json_of(
        get(
            reqwest::Method::GET,
            &format!("/api/now/table/incident?sysparm_query=caller_id.email={email}^ORDERBYDESCnumber&sysparm_fields=number,caller_id,state"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let rows = body["result"].as_array().unwrap();
    assert_eq!(rows.len(), expected);
    assert!(expected > 0);
    assert_eq!(
        rows[0].as_object().unwrap().len(),
        3,
        "only the asked fields"
    );
    assert!(
        rows.windows(2)
            .all(|w| w[0]["number"].as_str() > w[1]["number"].as_str())
    );
    let caller = &rows[0]["caller_id"];
    assert_eq!(caller["value"], ada["sys_id"]);
    assert_eq!(
        caller["link"],
        format!(
            "{}/api/now/table/sys_user/{}",
            sn.url(),
            ada["sys_id"].as_str().unwrap()
        )
        .as_str()
    );
    // Display values and plain references.
    let (_, _, body) = json_of(
        get(
            reqwest::Method::GET,
            &format!("/api/now/table/incident?sysparm_query=caller_id={}&sysparm_display_value=true&sysparm_limit=1", ada["sys_id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(body["result"][0]["caller_id"], "Ada Lovelace");
    assert!(
        ["New", "In Progress", "On Hold"].contains(&body["result"][0]["state"].as_str().unwrap())
    );
    let (_, _, body) = json_of(
        get(reqwest::Method::GET, "/api/now/table/incident?sysparm_exclude_reference_link=true&sysparm_limit=1&sysparm_fields=caller_id")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(body["result"][0]["caller_id"].is_string());
    // IN, OR and comparisons.
    let (_, h, _) = json_of(
        get(
            reqwest::Method::GET,
            "/api/now/table/incident?sysparm_query=stateIN1,2^ORstate=3&sysparm_limit=1",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(h["x-total-count"], "30");
    // A term outside the supported subset is refused with the error body.
    let (status, _, body) = json_of(
        get(
            reqwest::Method::GET,
            "/api/now/table/incident?sysparm_query=state~1",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_sn_error(&body);
    let (status, _, body) = json_of(
        get(reqwest::Method::GET, "/api/now/table/nonsense")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["message"], "Invalid table nonsense");
}

#[tokio::test]
async fn create_update_journal_and_delete() {
    let sn = ServiceNow::start(ServiceNowConfig::default(), 3, 2, 0)
        .await
        .unwrap();
    let req = client(&sn);
    let user = sn.records("sys_user")[1]["sys_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = req(reqwest::Method::POST, "/api/now/table/incident")
        .json(&json!({"short_description": "Lost phone", "caller_id": user, "urgency": 2, "work_notes": "opened by test"}))
        .send()
        .await
        .unwrap();
    let (status, h, body) = json_of(r).await;
    assert_eq!(status, 201);
    let rec = &body["result"];
    let sys_id = rec["sys_id"].as_str().unwrap().to_owned();
    assert_eq!(sys_id.len(), 32);
    assert_eq!(rec["number"], "INC0010001");
    assert_eq!(rec["urgency"], "2", "values are strings on the wire");
    assert_eq!(rec["state"], "1");
    assert_eq!(rec["work_notes"], "", "journal fields read back empty");
    assert_eq!(
        h["location"],
        format!("{}/api/now/table/incident/{sys_id}", sn.url()).as_str()
    );
    let path = format!("/api/now/table/incident/{sys_id}");
    for note in ["Locked device 10001: ok", "Recovery key viewed"] {
        let r = req(reqwest::Method::PATCH, &path)
            .json(&json!({"work_notes": note}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        sn.work_notes("incident", &sys_id),
        [
            "opened by test",
            "Locked device 10001: ok",
            "Recovery key viewed"
        ]
    );
    let (_, _, journal) = json_of(
        req(
            reqwest::Method::GET,
            &format!("/api/now/table/sys_journal_field?sysparm_query=element_id={sys_id}^element=work_notes^ORDERBYsys_created_on"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(journal["result"].as_array().unwrap().len(), 3);
    let (_, _, got) = json_of(req(reqwest::Method::GET, &path).send().await.unwrap()).await;
    assert_eq!(got["result"]["sys_mod_count"], "2");
    assert_eq!(
        got["result"]["sys_updated_by"],
        sn.config().username.as_str()
    );
    // The agent changes the state; the API sees it.
    assert!(sn.agent_update("incident", &sys_id, &[("state", "6")]));
    let (_, _, got) = json_of(
        req(
            reqwest::Method::GET,
            &format!("{path}?sysparm_fields=state"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(got["result"]["state"], "6");
    // Malformed bodies and missing records get the error body.
    let r = req(reqwest::Method::PATCH, &path)
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(r).await;
    assert_eq!(status, 400);
    assert_sn_error(&body);
    assert_eq!(
        req(reqwest::Method::DELETE, &path)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let (status, _, body) = json_of(req(reqwest::Method::GET, &path).send().await.unwrap()).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["message"], "No Record found");
}

#[tokio::test]
async fn oauth_grants_and_token_expiry() {
    let sn = ServiceNow::start(ServiceNowConfig::default(), 4, 1, 1)
        .await
        .unwrap();
    let cfg = sn.config().clone();
    let http = reqwest::Client::new();
    let token_url = format!("{}/oauth_token.do", sn.url());
    let r = http
        .post(&token_url)
        .form(&[
            ("grant_type", "password"),
            ("client_id", &cfg.client_id),
            ("client_secret", &cfg.client_secret),
            ("username", &cfg.username),
            ("password", &cfg.password),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["expires_in"], 1799);
    let access = t["access_token"].as_str().unwrap().to_owned();
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();
    let call = |token: String| {
        http.get(format!(
            "{}/api/now/table/incident?sysparm_limit=1",
            sn.url()
        ))
        .bearer_auth(token)
        .send()
    };
    assert_eq!(call(access.clone()).await.unwrap().status(), 200);
    sn.expire_tokens();
    let (status, _, body) = json_of(call(access).await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["message"], "User Not Authenticated");
    assert_sn_error(&body);
    let r = http
        .post(&token_url)
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", &cfg.client_id),
            ("client_secret", &cfg.client_secret),
            ("refresh_token", &refresh),
        ])
        .send()
        .await
        .unwrap();
    let t: Value = r.json().await.unwrap();
    assert_eq!(
        call(t["access_token"].as_str().unwrap().to_owned())
            .await
            .unwrap()
            .status(),
        200
    );
    let r = http
        .post(&token_url)
        .basic_auth(&cfg.client_id, Some(&cfg.client_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(&token_url)
        .form(&[
            ("grant_type", "password"),
            ("client_id", &cfg.client_id),
            ("client_secret", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn rate_limited_requests_get_429_and_retry_after() {
    let cfg = ServiceNowConfig {
        rate_limit_per_minute: 2,
        ..ServiceNowConfig::default()
    };
    let sn = ServiceNow::start(cfg, 5, 1, 1).await.unwrap();
    let get = client(&sn);
    for _ in 0..2 {
        let r = get(reqwest::Method::GET, "/api/now/table/incident")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-limit"], "2");
    }
    let (status, h, body) = json_of(
        get(reqwest::Method::GET, "/api/now/table/incident")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 429);
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert!(h.contains_key("x-ratelimit-reset"));
    assert!(h.contains_key("x-ratelimit-rule"));
    assert_sn_error(&body);
}

#[tokio::test]
async fn app_approval_requests_and_the_decision_callback() {
    // A receiver for the approval callback.
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback = format!("http://{}/callback", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let sn = ServiceNow::start(ServiceNowConfig::default(), 6, 3, 0)
        .await
        .unwrap();
    let post = client(&sn);
    let ada = switchyard_sim::common::person(0);
    let request = json!({
        "RequestId": "req-1",
        "RequestFor": {"UserId": "u-1", "UserAttributes": {"user_name": ada.user_name, "last_name": ada.last_name, "first_name": ada.first_name, "email": ada.email}},
        "Domain": "acme.example",
        "DeviceId": "10001",
        "DeviceProperties": {"name": "iPhone", "device_udid": "ABC", "platform": "Apple"},
        "Notes": "for the sales demo",
        "CatalogItem": {"Id": "app-9", "Name": "Keynote", "Categories": ["Productivity"], "Properties": {"package_id": "com.apple.keynote", "version": "14", "platform": "Apple"}},
        "DueDate": 1_790_000_000_000_i64,
        "Links": {"ApprovalNotify": {"Url": callback}},
    });
    let (status, _, body) = json_of(
        post(reqwest::Method::POST, "/api/x_acme_uem/appapproval/request")
            .json(&request)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let sys_id = body["result"]["sys_id"].as_str().unwrap().to_owned();
    assert!(
        body["result"]["number"]
            .as_str()
            .unwrap()
            .starts_with("REQ")
    );
    let rec = sn.record("sc_request", &sys_id).unwrap();
    assert_eq!(rec["u_uem_request_id"], "req-1");
    assert_eq!(rec["u_uem_callback_url"], callback.as_str());
    assert_eq!(rec["u_requesting_user"], ada.user_name.as_str());
    assert_eq!(rec["requested_for"], sn.records("sys_user")[0]["sys_id"]);
    assert_eq!(rec["approval"], "requested");
    // The same RequestId again: no second request.
    let (status, _, again) = json_of(
        post(reqwest::Method::POST, "/api/x_acme_uem/appapproval/request")
            .json(&request)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(again["result"]["sys_id"], sys_id.as_str());
    assert_eq!(sn.records("sc_request").len(), 1);
    // Column limits are enforced with the error body.
    let mut long = request.clone();
    long["RequestId"] = json!("x".repeat(41));
    let (status, _, body) = json_of(
        post(reqwest::Method::POST, "/api/x_acme_uem/appapproval/request")
            .json(&long)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("RequestId")
    );

    let cb = sn.decide(&sys_id, false, "not licensed").await;
    assert_eq!(cb.outcome, Ok(200));
    let sent = got.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["request_id"], "req-1");
    assert_eq!(sent[0]["device_id"], "10001");
    assert_eq!(sent[0]["approval_status"], "REJECTED");
    assert_eq!(sent[0]["notes"], "not licensed");
    assert_eq!(
        sn.record("sc_request", &sys_id).unwrap()["approval"],
        "rejected"
    );
}

#[tokio::test]
async fn users_line_up_with_the_other_simulators() {
    let sn = ServiceNow::start(ServiceNowConfig::default(), 7, 4, 0)
        .await
        .unwrap();
    let users = sn.records("sys_user");
    for (i, u) in users.iter().enumerate() {
        assert_eq!(u["email"], switchyard_sim::common::person(i).email.as_str());
    }
    let get = client(&sn);
    let (_, _, body) = json_of(
        get(
            reqwest::Method::GET,
            &format!(
                "/api/now/table/sys_user?sysparm_query=email={}",
                users[2]["email"].as_str().unwrap()
            ),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(body["result"].as_array().unwrap().len(), 1);
    assert_eq!(body["result"][0]["sys_id"], users[2]["sys_id"]);
}
