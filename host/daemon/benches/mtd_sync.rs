//! A full `mtd-tagging` device sync of a large fleet through the real
//! daemon, against a native Rust reference that makes the same HTTP calls
//! against the same simulators in the same run.
//!
//! For each fleet size (default 10,000 and 100,000 devices in 20
//! organization groups; set `DEVICES`), in a fresh daemon process:
//! 1. the reference syncs (UEM pages → MTD bulk stores → MTD inventory →
//!    the status tag created and filled in bulk), and the simulators are
//!    emptied again;
//! 2. the plugin syncs from one run-now: it goes on across as many
//!    invocations as its request budget (200) and deadline (30 s) need,
//!    each asking for the next at once.
//!
//! Prints both times, their ratio, the number of invocations, and the
//! daemon's peak resident memory during the sync (VmHWM, reset after a
//! warm-up) with the most linear memory the plugin grew to, and at the end
//! how the peak grew from the smallest fleet to the largest.
//!
//! ```text
//! cargo bench -p switchyard --bench mtd_sync            # DEVICES=10000,100000
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use switchyard_sim::mtd::{Mtd, MtdConfig};
use switchyard_sim::uem::{OrgGroup, Uem, UemConfig};

const GROUPS: i64 = 20;
const FIRST_GROUP: i64 = 1001;
const PAGE: usize = 500;
const TAG: &str = "CHKP_Status_Provisioned";

/// `VmHWM` of `pid`, in KiB.
fn peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The same calls as the plugin's sync of a fresh fleet, natively.
struct Reference {
    http: reqwest::Client,
    uem: String,
    mtd: String,
    user: String,
    password: String,
    tenant_code: String,
    api_key: String,
}

impl Reference {
    async fn uem_get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}/api{path}", self.uem))
            .basic_auth(&self.user, Some(&self.password))
            .header("aw-tenant-code", &self.tenant_code)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    async fn uem_post(&self, path: &str, body: &Value) -> Value {
        let r = self
            .http
            .post(format!("{}/api{path}", self.uem))
            .basic_auth(&self.user, Some(&self.password))
            .header("aw-tenant-code", &self.tenant_code)
            .header("accept", "application/json")
            .json(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn mtd(&self, req: reqwest::RequestBuilder) -> Value {
        let r = req
            .header("x-api-key", &self.api_key)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        r.json().await.unwrap()
    }

    async fn sync(&self) -> usize {
        let groups = self
            .uem_get("/system/groups/search?page=0&pagesize=500")
            .await;
        let names: std::collections::HashMap<i64, String> = groups["LocationGroups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["Id"]["Value"].as_i64().unwrap(),
                    g["Name"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        for g in FIRST_GROUP..FIRST_GROUP + GROUPS {
            for page in 0.. {
                let v = self
                    .uem_get(&format!(
                        "/mdm/devices/search?lgid={g}&page={page}&pagesize={PAGE}"
                    ))
                    .await;
                let items = v["Devices"].as_array().cloned().unwrap_or_default();
                let upserts: Vec<Value> = items
                    .iter()
                    .filter(|d| seen.insert(d["Id"]["Value"].as_i64().unwrap()))
                    .map(|d| {
                        json!({
                            "id": d["Id"]["Value"].as_i64().unwrap().to_string(),
                            "udid": d["Udid"], "serial": d["SerialNumber"], "platform": d["Platform"],
                            "os_version": d["OperatingSystem"], "model": d["Model"],
                            "name": d["DeviceFriendlyName"], "owner_email": d["UserEmailAddress"],
                            "groups": [names[&g]],
                        })
                    })
                    .collect();
                let r = self
                    .mtd(
                        self.http
                            .post(format!("{}/api/v1/devices/bulk", self.mtd))
                            .json(&json!({"upsert": upserts})),
                    )
                    .await;
                assert_eq!(r["results"].as_array().unwrap().len(), upserts.len());
                let total = v["Total"].as_u64().unwrap_or(0) as usize;
                if items.len() < PAGE || (page + 1) * PAGE >= total {
                    break;
                }
            }
        }
        let mut tag_want = Vec::new();
        let mut page = 0;
        loop {
            let v = self
                .mtd(self.http.get(format!(
                    "{}/api/v1/devices?page={page}&page_size=500",
                    self.mtd
                )))
                .await;
            for d in v["devices"].as_array().unwrap() {
                let id: i64 = d["id"].as_str().unwrap().parse().unwrap();
                if seen.contains(&id) && d["status"] == "provisioned" {
                    tag_want.push(id);
                }
            }
            match v["next_page"].as_u64() {
                Some(n) => page = n as usize,
                None => break,
            }
        }
        let groups = self
            .uem_get("/system/groups/search?page=0&pagesize=500")
            .await;
        let top = groups["LocationGroups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["ParentLocationGroup"].is_null())
            .unwrap()["Id"]["Value"]
            .as_i64()
            .unwrap();
        self.uem_get(&format!(
            "/mdm/tags/search?name={TAG}&organizationgroupid={top}&page=0&pagesize=500"
        ))
        .await;
        let tag = self
            .uem_post(
                "/mdm/tags/addtag",
                &json!({"TagName": TAG, "LocationGroupId": top}),
            )
            .await["Value"]
            .as_i64()
            .unwrap();
        tag_want.sort_unstable();
        for chunk in tag_want.chunks(500) {
            self.uem_post(
                &format!("/mdm/tags/{tag}/adddevices"),
                &json!({"BulkValues": {"Value": chunk}}),
            )
            .await;
        }
        seen.len()
    }
}

struct Figures {
    devices: usize,
    native: f64,
    plugin: f64,
    runs: u64,
    peak_kib: u64,
    /// The most linear memory a call of the instance grew to.
    guest_bytes: u64,
}

async fn run(n: usize) -> Figures {
    let uem_cfg = UemConfig {
        rate_limit_per_minute: u32::MAX,
        ..UemConfig::default()
    };
    let uem = Uem::start(uem_cfg.clone(), 11, n).await.unwrap();
    for i in 0..GROUPS {
        uem.put_group(OrgGroup {
            id: FIRST_GROUP + i,
            name: format!("Fleet {i:02}"),
            uuid: format!("00000000-0000-0000-0000-{:012}", FIRST_GROUP + i),
            parent: Some(570),
        });
    }
    uem.update_devices(|d| d.group = FIRST_GROUP + d.id % GROUPS);
    let mtd = Mtd::start(MtdConfig {
        rate_limit_per_minute: u32::MAX,
        ..MtdConfig::default()
    })
    .await
    .unwrap();

    let reference = Reference {
        http: reqwest::Client::new(),
        uem: uem.url(),
        mtd: mtd.url(),
        user: uem_cfg.username.clone(),
        password: uem_cfg.password.clone(),
        tenant_code: uem_cfg.tenant_code.clone(),
        api_key: mtd.config().api_key.clone(),
    };
    let t = Instant::now();
    let synced = reference.sync().await;
    let native = t.elapsed().as_secs_f64();
    assert_eq!(synced, n);
    assert_eq!(mtd.devices().len(), n);
    mtd.clear();
    uem.clear_tags();
    uem.control().clear_requests();
    mtd.control().clear_requests();

    let groups: Vec<String> = (FIRST_GROUP..FIRST_GROUP + GROUPS)
        .map(|g| g.to_string())
        .collect();
    let tenant = format!(
        r#"[roles]
"MTD Admin" = ["admin", "viewer"]

[[instance]]
id = "mtd"
plugin = "mtd-tagging"
egress = ["{uem}", "{mtd}"]

[instance.config]
api_url = "{uem}"
mtd_url = "{mtd}"
groups = "{groups}"

{uem_credential}
[instance.credentials.mtd]
kind = "api-key"
hosts = ["{mtd}"]
header = "x-api-key"
key = "secret:mtd-key"
"#,
        uem = uem.url(),
        mtd = mtd.url(),
        groups = groups.join(","),
        uem_credential = uem_basic_credential(&uem),
    );
    let (dir, token) = acme_with_secrets(
        &tenant,
        &[
            ("uem-password", uem_cfg.password.clone()),
            ("uem-tenant-code", uem_cfg.tenant_code.clone()),
            ("mtd-key", mtd.config().api_key.clone()),
        ],
    );
    let d = start(dir.path());
    let pid = d.child.id();
    let base = "/v1/tenants/acme/instances/mtd";
    let status = || async {
        let (code, st) = act(
            &d,
            &token,
            &format!("{base}/actions/sync-status"),
            &["MTD Admin"],
            json!({}),
        )
        .await;
        assert_eq!(code, 200, "{st}");
        st
    };
    // Warm-up: the component is instantiated once; then the peak is reset
    // so that it measures the sync.
    assert!(status().await["output"]["last_sync"].is_null());
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("resetting the peak RSS");

    let t = Instant::now();
    start_job(&d, &token, base, "device-sync").await;
    let report = loop {
        let st = status().await;
        if st["output"]["sync_in_progress"].is_null() && st["output"]["last_sync"].is_object() {
            break st["output"]["last_sync"].clone();
        }
        let stats = job_stats(&d, &token, base, "device-sync").await;
        assert_eq!(stats["errors"].as_i64().unwrap_or(0), 0, "{stats}");
        assert!(
            t.elapsed() < Duration::from_secs(1800),
            "the sync does not end: {st}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let plugin = t.elapsed().as_secs_f64();
    let peak = peak_kib(pid);
    let guest_bytes = metric(
        &d,
        r#"switchyard_instance_memory_bytes{tenant="acme",instance="mtd"}"#,
    )
    .await as u64;
    assert!(guest_bytes > 0, "no memory gauge for acme/mtd");
    assert_eq!(report["devices"], n, "{report}");
    assert_eq!(mtd.devices().len(), n);
    let tagged = uem
        .tags()
        .iter()
        .find(|t| t.name == TAG)
        .map_or(0, |t| t.devices.len());
    assert_eq!(tagged, n);
    Figures {
        devices: n,
        native,
        plugin,
        runs: report["runs"].as_u64().unwrap_or(0),
        peak_kib: peak,
        guest_bytes,
    }
}

#[tokio::main]
async fn main() {
    let ns: Vec<usize> = std::env::var("DEVICES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let mut all = Vec::new();
    for n in ns {
        let f = run(n).await;
        println!(
            "{:>7} devices in {GROUPS} groups: native {:>6.2} s, plugin {:>6.2} s (ratio {:.2}, {} invocations); daemon peak RSS during the sync {} MiB, the plugin's linear memory up to {:.1} MiB",
            f.devices,
            f.native,
            f.plugin,
            f.plugin / f.native,
            f.runs,
            f.peak_kib / 1024,
            f.guest_bytes as f64 / f64::from(1 << 20),
        );
        all.push(f);
    }
    if let (Some(first), Some(last)) = (all.first(), all.last())
        && all.len() > 1
    {
        println!(
            "peak RSS from {} to {} devices: x{:.2}",
            first.devices,
            last.devices,
            last.peak_kib as f64 / first.peak_kib as f64
        );
    }
}
