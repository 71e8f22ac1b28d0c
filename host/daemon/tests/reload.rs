//! Configuration reload: through the operator endpoint and SIGHUP; a bad
//! configuration is refused and the running one stays.

mod common;

use common::*;
use serde_json::Value;

fn tenant(greeting: &str) -> String {
    format!(
        "[[instance]]\nid = \"echo-1\"\nplugin = \"echo\"\n\n[instance.config]\ngreeting = \"{greeting}\"\n"
    )
}

async fn greeting(d: &Daemon, token: &str) -> Value {
    let (status, out) = post(
        d,
        "/v1/tenants/acme/instances/echo-1/actions/echo",
        Some(token),
        &[],
        r#"{"input": {}, "actor": {"id": "t"}}"#,
    )
    .await;
    assert_eq!(status, 200, "{out}");
    out["output"]["greeting"].clone()
}

#[tokio::test]
async fn reload_swaps_good_configs_and_refuses_bad_ones() {
    let dir = config_dir("data_dir = \"data\"\n", &[("acme", &tenant("hej"))]);
    let api = token(dir.path(), "acme");
    let operator = operator_token(dir.path());
    let d = start(dir.path());
    assert_eq!(greeting(&d, &api).await, "hej");

    // A good change, through the endpoint.
    std::fs::write(dir.path().join("tenants/acme.toml"), tenant("hallo")).unwrap();
    let (status, body) = post(&d, "/v1/admin/reload", Some(&operator), &[], "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["reloaded"],
        "1 tenant(s), 1 instance(s); 1 tenant(s) rebuilt"
    );
    assert_eq!(greeting(&d, &api).await, "hallo");

    // Tenant tokens may not reload.
    let (status, _) = post(&d, "/v1/admin/reload", Some(&api), &[], "").await;
    assert_eq!(status, 403);

    // A bad change is refused with its problems; the running config stays.
    std::fs::write(
        dir.path().join("tenants/acme.toml"),
        "[[instance]]\nid = \"echo-1\"\nplugin = \"echo\"\n\n[instance.config]\ncolour = \"red\"\n",
    )
    .unwrap();
    let (status, body) = post(&d, "/v1/admin/reload", Some(&operator), &[], "").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenants/acme.toml:6: instance[0].config.colour: plugin `echo` has no config key `colour`"),
        "{body}"
    );
    assert_eq!(greeting(&d, &api).await, "hallo");

    // SIGHUP reloads too.
    std::fs::write(dir.path().join("tenants/acme.toml"), tenant("moin")).unwrap();
    let pid = d.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let got = eventually("the SIGHUP reload", || async {
        let g = greeting(&d, &api).await;
        (g == "moin").then_some(g)
    })
    .await;
    assert_eq!(got, "moin");
}
