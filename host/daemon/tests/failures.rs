//! One tenant's broken configuration stops nobody else (issue 11 finding 8,
//! issue 18): it is reported, and every other tenant is served.

mod common;

use common::*;
use serde_json::json;

const GOOD: &str = "[[instance]]\nid = \"e\"\nplugin = \"echo\"\n";

#[tokio::test]
async fn a_broken_tenant_file_or_instance_stops_nobody_else() {
    let dir = config_dir(
        "data_dir = \"data\"\n",
        &[
            ("good", GOOD),
            // Not TOML at all.
            ("broken", "[[instance]\nid = \n"),
            // One good instance, and one whose secret was never stored.
            (
                "mixed",
                "[[instance]]\nid = \"ok\"\nplugin = \"echo\"\n\n[[instance]]\nid = \"nosecret\"\n\
                 plugin = \"echo\"\negress = [\"https://a.example.com\"]\n\
                 [instance.credentials.upstream]\nkind = \"bearer\"\nhosts = [\"https://a.example.com\"]\n\
                 token = \"secret:never-set\"\n",
            ),
        ],
    );
    let (good, broken, mixed) = (
        token(dir.path(), "good"),
        token(dir.path(), "broken"),
        token(dir.path(), "mixed"),
    );
    let d = start(dir.path());
    let echo = |t: &str, i: &str| format!("/v1/tenants/{t}/instances/{i}/actions/echo");
    let (status, out) = act(&d, &good, &echo("good", "e"), &[], json!({})).await;
    assert_eq!(status, 200, "{out}");
    let (status, out) = act(&d, &mixed, &echo("mixed", "ok"), &[], json!({})).await;
    assert_eq!(status, 200, "{out}");
    let (status, out) = act(&d, &mixed, &echo("mixed", "nosecret"), &[], json!({})).await;
    assert_eq!(
        (status, &out["error"]["code"]),
        (503, &json!("instance_failed")),
        "{out}"
    );
    let message = out["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("secret `never-set` is not in the secret store"),
        "{message}"
    );
    let (_, st) = get(
        &d,
        "/v1/tenants/mixed/instances/nosecret/status",
        Some(&mixed),
    )
    .await;
    assert_eq!(st["state"], "failed", "{st}");
    let (status, out) = act(&d, &broken, &echo("broken", "x"), &[], json!({})).await;
    assert_eq!(
        (status, &out["error"]["code"]),
        (503, &json!("instance_failed")),
        "{out}"
    );
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenants/broken.toml"),
        "{out}"
    );
    assert_eq!(metric(&d, "switchyard_tenants_failed").await, 1.0);
    assert_eq!(metric(&d, "switchyard_instances_failed").await, 1.0);
}
