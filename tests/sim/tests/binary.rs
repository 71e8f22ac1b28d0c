//! `switchyard-sim` runs every simulator standalone with seeded data.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test]
async fn the_binary_serves_every_simulator() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard-sim"))
        .args(["all", "--seed", "3", "--devices", "12"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut urls = std::collections::BTreeMap::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("serving") {
            break;
        }
        if let Some((name, rest)) = line.split_once(' ')
            && !name.is_empty()
            && let Some(url) = rest
                .split_whitespace()
                .next()
                .filter(|u| u.starts_with("http"))
        {
            urls.insert(name.to_owned(), url.to_owned());
        }
    }
    for name in ["uem", "servicenow", "beyondtrust", "mtd", "identity"] {
        assert!(urls.contains_key(name), "{name} missing from {urls:?}");
    }
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/mdm/devices/search", urls["uem"]))
        .basic_auth("api-admin", Some("uem-password"))
        .header("aw-tenant-code", "uem-tenant-code")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["Total"], 12);
    let base = urls["servicenow"].trim_end_matches("/api/now/table");
    let state: serde_json::Value = http
        .get(format!("{base}/_sim/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!state["tables"]["incident"].as_array().unwrap().is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
}
