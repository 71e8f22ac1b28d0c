//! The admin API for tenant admins (issue 21): roles, a tenant configured
//! and versioned through the API, write-only secrets, file-managed
//! tenants shown read-only; and the CLI's `tenant` commands.

mod common;

use common::*;
use serde_json::{Value, json};

const FILED: &str = r#"[[instance]]
id = "echo-1"
plugin = "echo"
"#;

fn acme(greeting: &str) -> String {
    format!(
        r#"[roles]
"ITIL" = ["operator"]

[[instance]]
id = "echo-1"
plugin = "echo"

[instance.config]
greeting = "{greeting}"
"#
    )
}

/// Sends `body` with `method` to `path`; every answer is kept in `seen`
/// (to check afterwards that no secret value ever came back).
async fn send(
    d: &Daemon,
    seen: &mut String,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", d.base))
        .header("authorization", format!("Bearer {token}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    seen.push_str(&text);
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The greeting echo-1 of `tenant` answers with now.
async fn greeting(d: &Daemon, api: &str, tenant: &str) -> Value {
    let (status, out) = act(
        d,
        api,
        &format!("/v1/tenants/{tenant}/instances/echo-1/actions/config"),
        &[],
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    out["output"]["greeting"].clone()
}

fn fields(problems: &Value) -> Vec<String> {
    problems
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_tenant_admin_configures_versions_and_rolls_back_an_api_managed_tenant() {
    use reqwest::Method;
    let dir = config_dir("data_dir = \"data\"\n", &[("filed", FILED)]);
    let cfg = dir.path();
    let operator = operator_token(cfg);
    let d = start(cfg);
    let mut seen = String::new();
    let config = "/v1/tenants/acme/config";

    // Only an operator brings a tenant under the API.
    let (status, out) = send(
        &d,
        &mut seen,
        Method::PUT,
        config,
        &operator,
        Some(json!({"toml": acme("hej"), "base_version": 0, "comment": "new tenant"})),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["version"], 1);
    let admin = role_token(cfg, "acme", "tenant-admin");
    let viewer = role_token(cfg, "acme", "tenant-viewer");
    let api = token(cfg, "acme");
    // Applied without a restart.
    assert_eq!(greeting(&d, &api, "acme").await, "hej");

    // A change in the JSON form, applied at once.
    let mut json_form = send(&d, &mut seen, Method::GET, config, &viewer, None)
        .await
        .1;
    assert_eq!(json_form["managed_by"], "api");
    assert_eq!(json_form["read_only"], false);
    assert_eq!(json_form["version"], 1);
    json_form["config"]["instance"][0]["config"]["greeting"] = json!("hallo");
    let (status, out) = send(
        &d,
        &mut seen,
        Method::PUT,
        config,
        &admin,
        Some(json!({"config": json_form["config"], "base_version": 1, "comment": "friendlier"})),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["version"], 2);
    assert_eq!(greeting(&d, &api, "acme").await, "hallo");

    // A change made from a stale version is refused.
    let (status, out) = send(
        &d,
        &mut seen,
        Method::PUT,
        config,
        &admin,
        Some(json!({"toml": acme("stale"), "base_version": 1})),
    )
    .await;
    assert_eq!(
        (status, out["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{out}"
    );

    // An invalid configuration: every problem, with its field; nothing
    // changes.
    let invalid = r#"[[instance]]
id = "echo-1"
plugin = "echo"
[instance.config]
colour = "red"
[instance.credentials.upstream]
kind = "bearer"
hosts = ["https://api.example.com"]
token = "env:HOME"

[[instance]]
id = "two"
plugin = "no-such-plugin"
"#;
    let (status, out) = send(
        &d,
        &mut seen,
        Method::PUT,
        config,
        &admin,
        Some(json!({"toml": invalid, "base_version": 2})),
    )
    .await;
    assert_eq!(status, 422, "{out}");
    let got = fields(&out["problems"]);
    for field in [
        "instance[0].config.colour",
        "instance[0].credentials.upstream.token",
        "instance[1].plugin",
    ] {
        assert!(got.iter().any(|f| f == field), "{field} not in {got:?}");
    }
    assert!(
        out["problems"].to_string().contains("daemon's environment"),
        "{out}"
    );
    assert_eq!(greeting(&d, &api, "acme").await, "hallo");

    // What only an operator may change.
    let greedy = format!("max_concurrent_jobs = 64\n{}", acme("hallo"));
    let (status, out) = send(
        &d,
        &mut seen,
        Method::PUT,
        config,
        &admin,
        Some(json!({"toml": greedy, "base_version": 2})),
    )
    .await;
    assert_eq!(status, 422, "{out}");
    assert_eq!(fields(&out["problems"]), ["max_concurrent_jobs"]);
    // Egress to an IP address needs the operator's grant, which a tenant
    // admin cannot give.
    let loopback = acme("hallo").replace(
        "plugin = \"echo\"\n",
        "plugin = \"echo\"\negress = [\"http://127.0.0.1:9\"]\n",
    );
    let (status, out) = send(
        &d,
        &mut seen,
        Method::PUT,
        config,
        &admin,
        Some(json!({"toml": loopback, "base_version": 2})),
    )
    .await;
    assert_eq!(status, 422, "{out}");
    assert_eq!(fields(&out["problems"]), ["instance[0].egress[0]"]);
    let granted = format!("private_egress = [\"http://127.0.0.1:*\"]\n{loopback}");
    let (status, out) = send(
        &d,
        &mut seen,
        Method::PUT,
        config,
        &admin,
        Some(json!({"toml": granted, "base_version": 2})),
    )
    .await;
    assert_eq!(status, 422, "{out}");
    assert_eq!(fields(&out["problems"]), ["private_egress"]);

    // Roles: a viewer reads only; an integration's token does not
    // configure; an admin does not call actions; nobody crosses tenants.
    let viewer_put = send(
        &d,
        &mut seen,
        Method::PUT,
        config,
        &viewer,
        Some(json!({"toml": acme("x"), "base_version": 2})),
    )
    .await;
    assert_eq!(viewer_put.0, 403, "{}", viewer_put.1);
    assert!(
        viewer_put.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenant-viewer")
    );
    let api_put = send(
        &d,
        &mut seen,
        Method::PUT,
        config,
        &api,
        Some(json!({"toml": acme("x"), "base_version": 2})),
    )
    .await;
    assert_eq!(api_put.0, 403, "{}", api_put.1);
    let (status, _) = post(
        &d,
        "/v1/tenants/acme/instances/echo-1/pause",
        Some(&viewer),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 403);
    let (status, out) = act(
        &d,
        &admin,
        "/v1/tenants/acme/instances/echo-1/actions/config",
        &[],
        json!({}),
    )
    .await;
    assert_eq!(status, 403, "{out}");
    let (status, _) = send(
        &d,
        &mut seen,
        Method::GET,
        "/v1/tenants/filed/config",
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 403);
    // ...but pausing and resuming is an admin's.
    for op in ["pause", "resume"] {
        let path = format!("/v1/tenants/acme/instances/echo-1/{op}");
        let (status, out) = post(&d, &path, Some(&admin), &[], "").await;
        assert_eq!(status, 200, "{out}");
    }

    // History, with who, why and the diff; then a rollback.
    let (status, out) = send(
        &d,
        &mut seen,
        Method::GET,
        "/v1/tenants/acme/config/versions",
        &viewer,
        None,
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let versions: Vec<i64> = out["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [2, 1]);
    assert_eq!(out["versions"][0]["comment"], "friendlier");
    assert!(
        out["versions"][0]["author"]
            .as_str()
            .unwrap()
            .starts_with("tenant-admin token "),
        "{out}"
    );
    let (_, v2) = send(
        &d,
        &mut seen,
        Method::GET,
        "/v1/tenants/acme/config/versions/2",
        &viewer,
        None,
    )
    .await;
    let diff = v2["diff"].as_str().unwrap();
    assert!(
        diff.contains("-greeting = \"hej\"") && diff.contains("+greeting = \"hallo\""),
        "{diff}"
    );
    let (status, out) = send(
        &d,
        &mut seen,
        Method::POST,
        "/v1/tenants/acme/config/versions/1/rollback",
        &admin,
        Some(json!({"base_version": 2})),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["version"], 3);
    assert_eq!(greeting(&d, &api, "acme").await, "hej");

    // Secrets are write-only: set, listed by name, used, deleted.
    let value = "s3cr3t-upstream-value";
    let (status, out) = send(
        &d,
        &mut seen,
        Method::PUT,
        "/v1/tenants/acme/secrets/upstream-token",
        &admin,
        Some(json!({"value": value})),
    )
    .await;
    assert_eq!(status, 204, "{out}");
    let (status, out) = send(
        &d,
        &mut seen,
        Method::GET,
        "/v1/tenants/acme/secrets",
        &viewer,
        None,
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["secrets"][0]["name"], "upstream-token");
    let with_secret = format!(
        "{}\n[instance.credentials.upstream]\nkind = \"bearer\"\nhosts = [\"https://api.example.com\"]\ntoken = \"secret:upstream-token\"\n",
        acme("hej")
    );
    let (status, out) = send(
        &d,
        &mut seen,
        Method::PUT,
        config,
        &admin,
        Some(json!({"toml": with_secret, "base_version": 3})),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let (status, _) = send(
        &d,
        &mut seen,
        Method::DELETE,
        "/v1/tenants/acme/secrets/upstream-token",
        &viewer,
        None,
    )
    .await;
    assert_eq!(status, 403);
    // A configuration naming a secret that is not there is refused.
    let missing = with_secret.replace("secret:upstream-token", "secret:nope");
    let (status, out) = send(
        &d,
        &mut seen,
        Method::PUT,
        config,
        &admin,
        Some(json!({"toml": missing, "base_version": 4})),
    )
    .await;
    assert_eq!(status, 422, "{out}");
    assert!(out["problems"].to_string().contains("`nope`"), "{out}");

    // A file-managed tenant is shown read-only, and cannot be changed here.
    let filed_admin = role_token(cfg, "filed", "tenant-admin");
    let (status, out) = send(
        &d,
        &mut seen,
        Method::GET,
        "/v1/tenants/filed/config",
        &filed_admin,
        None,
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["managed_by"], "file");
    assert_eq!(out["read_only"], true);
    assert_eq!(out["config"]["instance"][0]["plugin"], "echo");
    let (status, out) = send(
        &d,
        &mut seen,
        Method::PUT,
        "/v1/tenants/filed/config",
        &filed_admin,
        Some(json!({"toml": FILED, "base_version": 1})),
    )
    .await;
    assert_eq!(
        (status, out["error"]["code"].as_str()),
        (409, Some("file_managed")),
        "{out}"
    );

    // Every change is audited with who and what.
    let (status, out) = get(&d, "/v1/tenants/acme/audit?limit=100", Some(&viewer)).await;
    assert_eq!(status, 200, "{out}");
    let admin_entries: Vec<(String, String)> = out["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "admin")
        .map(|e| {
            (
                e["what"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for what in [
        "config version 1",
        "config version 2",
        "config version 3",
        "secret upstream-token set",
        "pause",
    ] {
        assert!(
            admin_entries.iter().any(|(w, _)| w == what),
            "{what} not in {admin_entries:?}"
        );
    }
    assert!(
        admin_entries
            .iter()
            .any(|(w, a)| w == "config version 2" && a.starts_with("tenant-admin token"))
    );
    let audit_text = out.to_string();
    seen.push_str(&audit_text);
    assert!(
        !seen.contains(value),
        "a secret value came back in a response"
    );
}

#[tokio::test]
async fn tenants_are_imported_exported_and_checked_with_the_cli() {
    let dir = config_dir("data_dir = \"data\"\n", &[("filed", FILED)]);
    let cfg = dir.path().to_str().unwrap();
    let file = dir.path().join("acme-import.toml");
    std::fs::write(&file, acme("hej")).unwrap();
    cli(
        &[
            "tenant",
            "--config",
            cfg,
            "import",
            file.to_str().unwrap(),
            "--id",
            "acme",
        ],
        None,
    );
    // `check` sees the imported tenant.
    let out = cli(&["check", "--config", cfg], None);
    assert!(out.contains("2 tenant(s)"), "{out}");

    // A tenant with problems is refused, and nothing is stored.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[instance]]\nid = \"x\"\nplugin = \"no-such-plugin\"\n",
    )
    .unwrap();
    let refused = bin()
        .args([
            "tenant",
            "--config",
            cfg,
            "import",
            bad.to_str().unwrap(),
            "--id",
            "acme",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stdout).contains("instance[0].plugin"));
    // A tenant that has a file is not imported.
    let clash = bin()
        .args([
            "tenant",
            "--config",
            cfg,
            "import",
            file.to_str().unwrap(),
            "--id",
            "filed",
        ])
        .output()
        .unwrap();
    assert!(!clash.status.success());
    assert!(String::from_utf8_lossy(&clash.stderr).contains("has a file"));

    let history = cli(&["tenant", "--config", cfg, "history", "acme"], None);
    assert_eq!(history.lines().count(), 1, "{history}");

    // The export is a tenant file that `check` accepts in a directory of
    // its own.
    let exported = cli(&["tenant", "--config", cfg, "export", "acme"], None);
    assert_eq!(exported, acme("hej"));
    let other = config_dir("data_dir = \"data\"\n", &[("acme", &exported)]);
    let out = cli(&["check", "--config", other.path().to_str().unwrap()], None);
    assert!(out.contains("1 tenant(s)"), "{out}");

    // Removing needs a confirmation.
    let unconfirmed = bin()
        .args(["tenant", "--config", cfg, "remove", "acme"])
        .output()
        .unwrap();
    assert!(!unconfirmed.status.success());
    assert!(String::from_utf8_lossy(&unconfirmed.stderr).contains("--yes"));
    cli(
        &["tenant", "--config", cfg, "remove", "acme", "--yes"],
        None,
    );
    let listed = cli(&["tenant", "--config", cfg, "list"], None);
    assert!(!listed.contains("acme"), "{listed}");
}

/// Daemons sharing PostgreSQL see a change made through any of them.
#[tokio::test]
async fn a_change_through_one_daemon_is_applied_by_the_others() {
    use reqwest::Method;
    // (A file tenant, so that the cluster's directories share a master key.)
    let cluster = Cluster::postgres("admin_api", 2, "", &[("filed", FILED)]);
    let operator = operator_token(cluster.dirs[0].path());
    let (a, b) = (cluster.start(0), cluster.start(1));
    let mut seen = String::new();
    let (status, out) = send(
        &a,
        &mut seen,
        Method::PUT,
        "/v1/tenants/acme/config",
        &operator,
        Some(json!({"toml": acme("hej"), "base_version": 0})),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let api = cluster.token("acme");
    // The other daemon serves the new tenant...
    eventually("daemon b serving acme", || async {
        let (status, out) = act(
            &b,
            &api,
            "/v1/tenants/acme/instances/echo-1/actions/config",
            &[],
            json!({}),
        )
        .await;
        (status == 200 && out["output"]["greeting"] == "hej").then_some(())
    })
    .await;
    // ...and follows its changes.
    let admin = role_token(cluster.dirs[0].path(), "acme", "tenant-admin");
    let (status, out) = send(
        &b,
        &mut seen,
        Method::PUT,
        "/v1/tenants/acme/config",
        &admin,
        Some(json!({"toml": acme("hallo"), "base_version": 1})),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    eventually("daemon a applying version 2", || async {
        let (status, out) = act(
            &a,
            &api,
            "/v1/tenants/acme/instances/echo-1/actions/config",
            &[],
            json!({}),
        )
        .await;
        (status == 200 && out["output"]["greeting"] == "hallo").then_some(())
    })
    .await;
}

/// Removing an instance asks what becomes of its storage; a webhook
/// route's secret is made by the daemon and answered once.
#[tokio::test]
async fn instances_are_removed_with_or_without_their_storage_and_get_webhook_secrets() {
    use reqwest::Method;
    let dir = config_dir("data_dir = \"data\"\n", &[]);
    let cfg = dir.path();
    let operator = operator_token(cfg);
    let d = start(cfg);
    let mut seen = String::new();
    let two = format!(
        "{}\n[[instance]]\nid = \"echo-2\"\nplugin = \"echo\"\n",
        acme("hej")
    );
    let (status, out) = send(
        &d,
        &mut seen,
        Method::PUT,
        "/v1/tenants/acme/config",
        &operator,
        Some(json!({"toml": two, "base_version": 0})),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let admin = role_token(cfg, "acme", "tenant-admin");
    let api = token(cfg, "acme");
    let store = |instance: &'static str, op: Value| {
        let (d, api) = (&d, &api);
        async move {
            let (status, out) = act(
                d,
                api,
                &format!("/v1/tenants/acme/instances/{instance}/actions/storage"),
                &[],
                json!({"ops": [op]}),
            )
            .await;
            assert_eq!(status, 200, "{out}");
            out["output"][0].clone()
        }
    };
    for instance in ["echo-1", "echo-2"] {
        store(instance, json!({"op": "set", "key": "k", "value": "kept"})).await;
    }

    // The storage's fate must be said.
    let (status, out) = send(
        &d,
        &mut seen,
        Method::DELETE,
        "/v1/tenants/acme/instances/echo-2?base_version=1",
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 400, "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("delete_storage")
    );
    // Kept: added back (a rollback), the instance finds it.
    let (status, out) = send(
        &d,
        &mut seen,
        Method::DELETE,
        "/v1/tenants/acme/instances/echo-2?base_version=1&delete_storage=false",
        &admin,
        None,
    )
    .await;
    assert_eq!((status, out["version"].as_i64()), (200, Some(2)), "{out}");
    let (status, _) = act(
        &d,
        &api,
        "/v1/tenants/acme/instances/echo-2/actions/config",
        &[],
        json!({}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, out) = send(
        &d,
        &mut seen,
        Method::POST,
        "/v1/tenants/acme/config/versions/1/rollback",
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        store("echo-2", json!({"op": "get", "key": "k"})).await,
        "kept"
    );
    // Deleted: the same id added back starts empty.
    let (status, out) = send(
        &d,
        &mut seen,
        Method::DELETE,
        "/v1/tenants/acme/instances/echo-2?base_version=3&delete_storage=true",
        &admin,
        None,
    )
    .await;
    assert_eq!(
        (status, out["storage_keys_deleted"].as_u64()),
        (200, Some(1)),
        "{out}"
    );
    let (status, out) = send(
        &d,
        &mut seen,
        Method::POST,
        "/v1/tenants/acme/config/versions/1/rollback",
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        store("echo-2", json!({"op": "get", "key": "k"})).await,
        Value::Null
    );
    assert_eq!(
        store("echo-1", json!({"op": "get", "key": "k"})).await,
        "kept"
    );

    // A webhook token, made here and answered once, verifies deliveries.
    let (status, out) = send(
        &d,
        &mut seen,
        Method::POST,
        "/v1/tenants/acme/instances/echo-1/webhooks/inbound/secret",
        &admin,
        Some(json!({"kind": "token", "base_version": 5})),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["path"], "/hooks/acme/echo-1/inbound");
    let value = out["value"].as_str().unwrap().to_owned();
    let deliver = |token: String| {
        let d = &d;
        async move {
            reqwest::Client::new()
                .post(format!("{}/hooks/acme/echo-1/inbound", d.base))
                .header("x-switchyard-token", token)
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(deliver(value.clone()).await, 200);
    assert_eq!(deliver("wrong".into()).await, 401);
    // Never again in an answer: the configuration names the secret only.
    let (_, conf) = send(
        &d,
        &mut seen,
        Method::GET,
        "/v1/tenants/acme/config",
        &admin,
        None,
    )
    .await;
    assert!(!conf.to_string().contains(&value));
    assert!(
        conf["toml"]
            .as_str()
            .unwrap()
            .contains("secret:echo-1.webhook.inbound.token")
    );
    let (status, _) = send(
        &d,
        &mut seen,
        Method::POST,
        "/v1/tenants/acme/instances/echo-1/webhooks/nope/secret",
        &admin,
        Some(json!({"kind": "token", "base_version": 6})),
    )
    .await;
    assert_eq!(status, 404);

    // Dead letters: listed for any role, retried by an admin only.
    let (status, out) = send(
        &d,
        &mut seen,
        Method::POST,
        "/v1/tenants/acme/instances/echo-1/webhooks/events/secret",
        &admin,
        Some(json!({"kind": "token", "base_version": 6})),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let events_token = out["value"].as_str().unwrap().to_owned();
    let resp = reqwest::Client::new()
        .post(format!("{}/hooks/acme/echo-1/events", d.base))
        .header("x-switchyard-token", &events_token)
        .json(&json!({"id": "e1", "fail_times": 99, "fail_as": "upstream-permanent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let viewer = role_token(cfg, "acme", "tenant-viewer");
    let dead = eventually("the delivery's death", || async {
        let (status, out) = get(&d, "/v1/tenants/acme/jobs?state=dead", Some(&viewer)).await;
        assert_eq!(status, 200, "{out}");
        out["jobs"][0]["id"].as_i64()
    })
    .await;
    let (status, out) = get(&d, "/v1/tenants/acme/jobs?state=buried", Some(&viewer)).await;
    assert_eq!(status, 400, "{out}");
    let retry = format!("/v1/tenants/acme/jobs/{dead}/retry");
    assert_eq!(
        send(&d, &mut seen, Method::POST, &retry, &viewer, None)
            .await
            .0,
        403
    );
    let (status, out) = send(&d, &mut seen, Method::POST, &retry, &admin, None).await;
    assert_eq!(
        (status, out["retried"].as_i64()),
        (200, Some(dead)),
        "{out}"
    );
    // An unknown job is not retried.
    let (status, _) = send(
        &d,
        &mut seen,
        Method::POST,
        "/v1/tenants/acme/jobs/999999/retry",
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 404);

    // The audit log, filtered and paged.
    let (status, page1) = get(
        &d,
        "/v1/tenants/acme/audit?kind=admin&limit=2",
        Some(&viewer),
    )
    .await;
    assert_eq!(status, 200, "{page1}");
    assert_eq!(page1["entries"].as_array().unwrap().len(), 2);
    let before = page1["next_before"].as_i64().unwrap();
    let (_, page2) = get(
        &d,
        &format!("/v1/tenants/acme/audit?kind=admin&limit=2&before={before}"),
        Some(&viewer),
    )
    .await;
    let seqs: Vec<i64> = page1["entries"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["entries"].as_array().unwrap())
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats: {seqs:?}"
    );
    assert!(
        page1["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["kind"] == "admin"),
        "{page1}"
    );
    assert!(
        page1["entries"][0]["what"]
            .as_str()
            .unwrap()
            .starts_with("retry job")
    );
    let (_, failed) = get(
        &d,
        "/v1/tenants/acme/audit?kind=webhook&outcome=failed",
        Some(&viewer),
    )
    .await;
    let failed = failed["entries"].as_array().unwrap();
    assert!(!failed.is_empty() && failed.iter().all(|e| e["outcome"] != "ok"));
    let (status, _) = get(&d, "/v1/tenants/acme/audit?since=yesterday", Some(&viewer)).await;
    assert_eq!(status, 400);
    for token in [&value, &events_token] {
        assert_eq!(
            seen.matches(token.as_str()).count(),
            1,
            "answered once, when made"
        );
    }
}
