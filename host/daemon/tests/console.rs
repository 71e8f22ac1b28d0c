//! The web console in a real browser (issue 21): Debian's headless
//! Chromium driven by Playwright (`tests/browser/console.mjs`), against the
//! real daemon. Needs `/usr/bin/chromium` (or `CHROMIUM`) and Node.js;
//! Playwright is installed from `tests/browser/package-lock.json` by
//! `npm ci` when it is missing. `.ci/run` installs Chromium.
//!
//! Screenshots of each page go to `SWITCHYARD_SCREENSHOTS` when set (the
//! README's come from there), else to the test's temporary directory.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::json;

/// The operator lets the tenant's instances reach the simulators on
/// loopback (`private_egress`); the rest is the tenant admin's.
const ACME: &str = r#"private_egress = ["http://127.0.0.1:*"]

[[instance]]
id = "echo-1"
plugin = "echo"

[instance.config]
greeting = "hej"

[instance.jobs.tick]
interval = 3600

[instance.webhooks.events]
token = "secret:hook-token"
"#;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test]
async fn tenant_admins_work_in_the_console_and_viewers_only_look() {
    let browser_dir = repo().join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "the console tests need Chromium at {chromium} (Debian: apt-get install chromium; or \
         set CHROMIUM)"
    );
    if !browser_dir.join("node_modules/playwright-core").is_dir() {
        // Like cargo fetching crates: the locked version, into the tree.
        let npm = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&browser_dir)
            .status()
            .expect("running npm (the console tests need Node.js and npm)");
        assert!(npm.success(), "npm ci in tests/browser failed");
    }

    let uem = switchyard_sim::uem::Uem::start(Default::default(), 3, 5)
        .await
        .unwrap();
    let dir = config_dir("data_dir = \"data\"\n", &[]);
    let cfg = dir.path();
    let operator = operator_token(cfg);
    let d = start(cfg);
    let http = reqwest::Client::new();
    let resp = http
        .put(format!("{}/v1/tenants/acme/secrets/hook-token", d.base))
        .bearer_auth(&operator)
        .json(&json!({"value": "hook-t0ken"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204, "{}", resp.text().await.unwrap());
    let resp = http
        .put(format!("{}/v1/tenants/acme/config", d.base))
        .bearer_auth(&operator)
        .json(&json!({"toml": ACME, "base_version": 0, "comment": "set up"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let (admin, viewer) = (
        role_token(cfg, "acme", "tenant-admin"),
        role_token(cfg, "acme", "tenant-viewer"),
    );
    // A delivery the plugin refuses for good: a dead letter to retry.
    let resp = http
        .post(format!("{}/hooks/acme/echo-1/events", d.base))
        .header("x-switchyard-token", "hook-t0ken")
        .json(&json!({"id": "e1", "fail_times": 99, "fail_as": "upstream-permanent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    eventually("the refused delivery in the dead letters", || async {
        let (status, out) = get(&d, "/v1/tenants/acme/jobs?state=dead", Some(&operator)).await;
        assert_eq!(status, 200, "{out}");
        (out["jobs"][0]["name"] == "events").then_some(())
    })
    .await;
    let shots = std::env::var_os("SWITCHYARD_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"));
    std::fs::create_dir_all(&shots).unwrap();

    // Off the runtime's thread: the simulator serves on it meanwhile.
    let mut node = std::process::Command::new("node");
    node.arg(browser_dir.join("console.mjs"))
        .current_dir(&browser_dir)
        .env("BASE", &d.base)
        .env("ADMIN_TOKEN", &admin)
        .env("VIEWER_TOKEN", &viewer)
        .env("SHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .env("UEM_URL", uem.url())
        .env("UEM_USER", &uem.config().username)
        .env("UEM_PASSWORD", &uem.config().password)
        .env("UEM_TENANT_CODE", &uem.config().tenant_code);
    let run = tokio::task::spawn_blocking(move || node.output())
        .await
        .unwrap()
        .expect("running node (the console tests need Node.js)");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(
        run.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("every step passed"), "{stdout}\n{stderr}");
    for page in [
        "sign-in",
        "overview",
        "config",
        "config-version",
        "secrets",
        "overview-viewer",
    ] {
        assert!(
            shots.join(format!("{page}.png")).is_file(),
            "no screenshot of {page}"
        );
    }
}
