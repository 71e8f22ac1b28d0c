//! The plugin catalog through the real binary: no file can take over a
//! bundled or another plugin's id, versions are chosen by semver, and a
//! broken plugin file stops nothing else.

mod common;

use std::path::Path;

use common::*;
use serde_json::json;
use switchyard_tests::patch_slot;

fn install(dir: &Path, rel: &str, bytes: &[u8]) {
    let path = dir.join("plugins").join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

const TENANT: &str = r#"[[instance]]
id = "echo-1"
plugin = "echo"

[[instance]]
id = "newest"
plugin = "versioned"

[[instance]]
id = "pinned"
plugin = "versioned@0.9"
"#;

/// Issue 11, findings 1 and 8; issue 13, item 7.
#[tokio::test]
async fn no_file_takes_over_an_id_versions_go_by_semver_and_broken_files_stop_nothing() {
    let dir = config_dir("data_dir = \"data\"\n", &[("acme", TENANT)]);
    let root = dir.path();
    // An impostor of the bundled echo, under its name and under another.
    install(root, "echo.wasm", &claiming("echo", "0.0.1"));
    install(root, "helper.wasm", &claiming("echo", "9.9.9"));
    // Two versions side by side; by name, 0.9.0 sorts (and loads) last.
    install(root, "versioned/a.wasm", &claiming("versioned", "0.10.0"));
    install(root, "versioned/b.wasm", &claiming("versioned", "0.9.0"));
    // The same version twice, and a file that is not a component at all.
    install(root, "versioned/c.wasm", &claiming("versioned", "0.9.0"));
    install(root, "broken.wasm", b"\0asm garbage");

    let out = bin()
        .args(["check", "--config", root.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{text}");
    for needle in [
        "plugins/echo.wasm:0: (plugin): plugin id `echo` is reserved by the bundled plugin (bundled:echo)",
        "plugins/helper.wasm:0: (plugin): the component declares plugin id `echo` but sits in `helper.wasm`",
        "plugins/versioned/c.wasm:0: (plugin): plugin `versioned` version 0.9.0 is also in",
        "plugins/versioned/b.wasm",
        "plugins/broken.wasm:0: (plugin): not a valid wasm component",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }

    // The daemon serves anyway: the refused files are not served, and
    // every instance runs what it should.
    let api = token(root, "acme");
    let d = start(root);
    let (status, out) = act(
        &d,
        &api,
        "/v1/tenants/acme/instances/echo-1/actions/echo",
        &[],
        json!({"x": 1}),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["output"]["input"]["x"], 1,
        "the bundled echo answered: {out}"
    );
    assert!(out["output"].get("impostor").is_none(), "{out}");
    for (instance, version) in [("newest", "0.10.0"), ("pinned", "0.9.0")] {
        let (status, st) = get(
            &d,
            &format!("/v1/tenants/acme/instances/{instance}/status"),
            Some(&api),
        )
        .await;
        assert_eq!(status, 200, "{st}");
        assert_eq!(
            (&st["plugin"]["id"], &st["plugin"]["version"]),
            (&json!("versioned"), &json!(version)),
            "{st}"
        );
    }
    assert_eq!(metric(&d, "switchyard_plugin_files_refused").await, 4.0);
}

/// One id from two places (`x.wasm` and `x/`) is refused altogether.
#[test]
fn one_id_from_a_file_and_a_directory_is_refused() {
    let dir = config_dir("data_dir = \"data\"\n", &[]);
    install(dir.path(), "dup.wasm", &claiming("dup", "1.0.0"));
    install(dir.path(), "dup/2.0.0.wasm", &claiming("dup", "2.0.0"));
    let out = bin()
        .args(["check", "--config", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert_eq!(
        text.matches("plugin `dup` is offered by two sources")
            .count(),
        2,
        "{text}"
    );
}

/// Issue 11, finding 1: an instance's plugin is resolved once, and a newly
/// installed file never replaces the code it runs without the operator
/// saying so; a version whose code changed is refused.
#[tokio::test]
async fn an_instance_keeps_its_build_until_the_operator_moves_it() {
    let tenant = "[[instance]]\nid = \"v\"\nplugin = \"versioned\"\n";
    let dir = config_dir("data_dir = \"data\"\n", &[("acme", tenant)]);
    let root = dir.path();
    let cfg = root.to_str().unwrap();
    let api = token(root, "acme");
    let status = "/v1/tenants/acme/instances/v/status";
    install(root, "versioned/1.wasm", &claiming("versioned", "0.9.0"));
    {
        let d = start(root);
        let (_, st) = get(&d, status, Some(&api)).await;
        assert_eq!(st["plugin"]["version"], "0.9.0", "{st}");
    }
    // A newer version is installed: the instance stays where it was.
    install(root, "versioned/2.wasm", &claiming("versioned", "0.10.0"));
    {
        let d = start(root);
        let (_, st) = get(&d, status, Some(&api)).await;
        assert_eq!(st["plugin"]["version"], "0.9.0", "{st}");
    }
    // The operator moves it on.
    let out = cli(&["plugin", "upgrade", "--config", cfg, "acme", "v"], None);
    assert_eq!(out.trim(), "acme/v: versioned 0.9.0 -> versioned 0.10.0");
    {
        let d = start(root);
        let (_, st) = get(&d, status, Some(&api)).await;
        assert_eq!(st["plugin"]["version"], "0.10.0", "{st}");
    }
    // The file of 0.10.0 is replaced by other code under the same version:
    // the instance is not served (and says why) until the operator accepts
    // it; other requests are answered.
    let wasm = claiming("versioned", "0.10.0");
    install(
        root,
        "versioned/2.wasm",
        &patch_slot(&wasm, "SY-MANIFEST", "other"),
    );
    {
        let d = start(root);
        let (status_code, st) = get(&d, status, Some(&api)).await;
        assert_eq!(status_code, 200);
        assert_eq!(st["state"], "failed", "{st}");
        let why = st["problems"][0].as_str().unwrap();
        assert!(
            why.contains("is not the build this instance was set up with"),
            "{why}"
        );
        let (code, out) = act(
            &d,
            &api,
            "/v1/tenants/acme/instances/v/actions/echo",
            &[],
            json!({}),
        )
        .await;
        assert_eq!(
            (code, &out["error"]["code"]),
            (503, &json!("instance_failed")),
            "{out}"
        );
        assert_eq!(get(&d, "/healthz", None).await.0, 200);
    }
    cli(&["plugin", "upgrade", "--config", cfg, "acme"], None);
    let d = start(root);
    let (_, st) = get(&d, status, Some(&api)).await;
    assert_eq!(st["state"], "serving", "{st}");
}
