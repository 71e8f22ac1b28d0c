//! The `mtd-tagging` plugin driven through the daemon against the UEM and
//! MTD simulators: the first and an incremental sync, a device leaving
//! (deleted after N syncs), the threshold stopping a mass deletion, PII
//! off, tags created when missing and moved by a signed risk-change
//! notice, a bad signature refused, and a notice that arrives before its
//! device.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};
use switchyard_sim::mtd::{Mtd, MtdConfig};
use switchyard_sim::uem::{Uem, UemConfig};

const BASE: &str = "/v1/tenants/acme/instances/mtd";
const HOOK: &str = "/hooks/acme/mtd/risk-changed";

struct Env {
    uem: Uem,
    mtd: Mtd,
    _dir: tempfile::TempDir,
    d: Daemon,
    token: String,
}

/// UEM with `devices` devices (groups 571-573 under 570), the MTD service,
/// and the plugin syncing `groups` with `config` (extra lines).
async fn setup(devices: usize, config: &str) -> Env {
    setup_with(devices, config, false, "").await
}

/// [`setup`], with UEM's OAuth2 credential instead of Basic when `oauth`,
/// and extra `[instance.limits]` lines.
async fn setup_with(devices: usize, config: &str, oauth: bool, limits: &str) -> Env {
    let uem = Uem::start(uem_config(), 5, devices).await.unwrap();
    setup_env(uem, config, oauth, limits, "").await
}

fn uem_config() -> UemConfig {
    UemConfig {
        rate_limit_per_minute: u32::MAX,
        ..UemConfig::default()
    }
}

/// [`setup_with`] for a UEM simulator already started, with extra lines
/// in the `[[instance]]` table.
async fn setup_env(uem: Uem, config: &str, oauth: bool, limits: &str, instance: &str) -> Env {
    let uem_cfg = uem.config().clone();
    let mtd = Mtd::start(MtdConfig {
        rate_limit_per_minute: u32::MAX,
        ..MtdConfig::default()
    })
    .await
    .unwrap();
    let acme = format!(
        r#"[roles]
"MTD Admin" = ["admin", "viewer"]

[[instance]]
id = "mtd"
plugin = "mtd-tagging"
egress = ["{uem}", "{mtd}"]
{instance}

[instance.config]
api_url = "{uem}"
mtd_url = "{mtd}"
{config}

[instance.limits]
http_requests = 1000
{limits}

{uem_credential}

[instance.credentials.mtd]
kind = "api-key"
hosts = ["{mtd}"]
header = "x-api-key"
key = "secret:mtd-key"

[instance.webhooks.risk-changed]
hmac_secret = "secret:mtd-hook"
signature_header = "x-mtd-signature"
"#,
        uem = uem.url(),
        mtd = mtd.url(),
        uem_credential = if oauth {
            format!(
                "[instance.credentials.uem]\nkind = \"oauth2-client-credentials\"\nhosts = [\"{}\"]\n\
                 token_url = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"secret:uem-client-secret\"",
                uem.url(),
                uem.token_url(),
                uem_cfg.client_id
            )
        } else {
            uem_basic_credential(&uem)
        },
    );
    let (dir, token) = acme_with_secrets(
        &acme,
        &[
            ("uem-password", uem_cfg.password.clone()),
            ("uem-tenant-code", uem_cfg.tenant_code.clone()),
            ("uem-client-secret", uem_cfg.client_secret.clone()),
            ("mtd-key", mtd.config().api_key.clone()),
            ("mtd-hook", mtd.config().webhook_secret.clone()),
        ],
    );
    let d = start(dir.path());
    mtd.set_webhook(&format!("{}{HOOK}", d.base));
    Env {
        uem,
        mtd,
        _dir: dir,
        d,
        token,
    }
}

impl Env {
    async fn act(&self, action: &str) -> (u16, Value) {
        let path = format!("{BASE}/actions/{action}");
        act(&self.d, &self.token, &path, &["MTD Admin"], json!({})).await
    }

    /// Replaces `from` with `to` in the tenant file and reloads.
    async fn edit_tenant(&self, from: &str, to: &str) {
        let cfg = self._dir.path();
        let file = cfg.join("tenants/acme.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains(from), "{from} is not in the tenant file");
        std::fs::write(&file, text.replacen(from, to, 1)).unwrap();
        let operator = operator_token(cfg);
        let (status, body) = post(&self.d, "/v1/admin/reload", Some(&operator), &[], "").await;
        assert_eq!(status, 200, "{body}");
    }

    /// Runs `device-sync` now, expecting success; its summary.
    async fn sync(&self) -> String {
        self.run("device-sync").await
    }

    /// Runs `job` now, expecting success; its summary.
    async fn run(&self, job: &str) -> String {
        let job = run_job(&self.d, &self.token, BASE, job).await;
        assert_eq!(job["last_outcome"], "ok", "{job}");
        job["last_summary"].as_str().unwrap().to_owned()
    }

    /// Device ids in UEM tag `name`.
    fn tagged(&self, name: &str) -> BTreeSet<i64> {
        self.uem
            .tags()
            .into_iter()
            .find(|t| t.name == name)
            .map(|t| t.devices.into_iter().collect())
            .unwrap_or_default()
    }

    /// UEM devices in organization group `g`.
    fn in_group(&self, g: i64) -> BTreeSet<i64> {
        self.uem
            .devices()
            .into_iter()
            .filter(|d| d.group == g)
            .map(|d| d.id)
            .collect()
    }
}

/// The first sync stores each device of the chosen groups once (groups
/// overlapping through a smart group), creates the status and risk tags
/// in the top-level group and tags every device; a second stores again
/// and moves nothing. `list-groups` and `sync-status` show the setup.
#[tokio::test]
async fn devices_are_synced_once_and_tagged() {
    let env = setup(30, "groups = \"571, 572\"\nsmart_groups = \"90\"").await;
    let summary = env.sync().await;
    let mut want: BTreeSet<i64> = env.in_group(571);
    want.extend(env.in_group(572));
    want.extend(env.uem.smart_groups()[0].devices.iter().copied());
    let got: BTreeSet<i64> = env
        .mtd
        .devices()
        .iter()
        .map(|d| d.id.parse().unwrap())
        .collect();
    assert_eq!(got, want, "{summary}");
    assert!(
        summary.starts_with(&format!(
            "{} devices from 3 groups: {} added, 0 updated",
            want.len(),
            want.len()
        )),
        "{summary}"
    );
    // A device in an organization group and the smart group is stored
    // again when the second group is read, with both.
    let smart: BTreeSet<i64> = env.uem.smart_groups()[0].devices.iter().copied().collect();
    for d in env.mtd.devices() {
        let id: i64 = d.id.parse().unwrap();
        let groups = d.fields["groups"].as_array().unwrap().len();
        let in_org = env.in_group(571).contains(&id) || env.in_group(572).contains(&id);
        let both = in_org && smart.contains(&id);
        assert_eq!(
            (d.upserts, groups),
            if both { (2, 2) } else { (1, 1) },
            "{d:?}"
        );
    }
    // New devices are provisioned, with no risk: one status tag each.
    assert_eq!(env.tagged("CHKP_Status_Provisioned"), want);
    let tag = env
        .uem
        .tags()
        .into_iter()
        .find(|t| t.name == "CHKP_Status_Provisioned")
        .unwrap();
    assert_eq!(tag.group, 570, "created in the top-level group");
    // PII is on by default.
    let first = &env.mtd.devices()[0];
    assert!(first.fields["owner_email"].as_str().unwrap().contains('@'));
    assert!(
        !first.fields["owner_email"]
            .as_str()
            .unwrap()
            .starts_with("UEMDevice")
    );

    let summary = env.sync().await;
    assert!(
        summary.contains(&format!("0 added, {} updated", want.len())),
        "{summary}"
    );
    assert!(summary.contains("tags: 0 added, 0 removed"), "{summary}");

    let (status, groups) = env.act("list-groups").await;
    assert_eq!(status, 200, "{groups}");
    assert_eq!(
        groups["output"]["organization_groups"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let (status, st) = env.act("sync-status").await;
    assert_eq!(status, 200, "{st}");
    assert_eq!(st["output"]["last_sync"]["devices"], want.len(), "{st}");
    assert_eq!(
        st["output"]["tags"]["CHKP_Status_Provisioned"],
        want.len(),
        "{st}"
    );
}

/// PII off: nothing personal reaches the MTD service (its request log is
/// searched for every name and email UEM holds).
#[tokio::test]
async fn without_pii_no_name_or_email_leaves_uem() {
    let env = setup(12, "groups = \"570\"\nimport_pii = \"false\"").await;
    env.sync().await;
    let sent: String = env
        .mtd
        .control()
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    for d in env.uem.devices() {
        assert!(!sent.contains(&d.user_email), "{} was sent", d.user_email);
        assert!(!sent.contains(&d.user_name), "{} was sent", d.user_name);
    }
    for d in env.mtd.devices() {
        let udid = d.fields["udid"].as_str().unwrap();
        assert_eq!(
            d.fields["owner_email"],
            format!("UEMDevice{udid}@vendor.UEM")
        );
        assert_eq!(d.fields["name"], "");
        // Groups by id: a group's name can name people.
        assert_eq!(d.fields["groups"], json!(["group 570"]), "{d:?}");
    }
}

/// A device that leaves the chosen groups is deleted after
/// `delete_after_syncs` syncs; a mass departure over the threshold deletes
/// nothing and says why.
#[tokio::test]
async fn departures_are_deleted_carefully() {
    let env = setup(
        40,
        "groups = \"571, 572, 573\"\ndelete_after_syncs = \"2\"\ndeletion_threshold_pct = \"20\"",
    )
    .await;
    env.sync().await;
    let all = env.mtd.devices().len();
    // One device moves to a group that is not synced.
    let mut leaver = env
        .uem
        .devices()
        .into_iter()
        .find(|d| d.group == 571)
        .unwrap();
    leaver.group = 570;
    env.uem.put_device(leaver.clone());
    let summary = env.sync().await;
    assert!(summary.contains("1 missing, 0 deleted"), "{summary}");
    let summary = env.sync().await;
    assert!(summary.contains("1 missing, 1 deleted"), "{summary}");
    assert_eq!(env.mtd.deleted(), [leaver.id.to_string()]);
    assert_eq!(env.mtd.devices().len(), all - 1);

    // A whole group leaves: over 20 %, nothing is deleted, twice.
    for mut d in env.uem.devices().into_iter().filter(|d| d.group == 572) {
        d.group = 570;
        env.uem.put_device(d);
    }
    env.sync().await;
    let summary = env.sync().await;
    assert!(summary.contains("deletion held back"), "{summary}");
    assert!(summary.contains("over the 20 % threshold"), "{summary}");
    assert_eq!(env.mtd.deleted().len(), 1, "{summary}");
    let (_, st) = env.act("sync-status").await;
    assert!(
        st["output"]["last_sync"]["held_back"]
            .as_str()
            .unwrap()
            .contains("threshold"),
        "{st}"
    );
}

/// A device that left the chosen groups loses its tags. When UEM refuses
/// to remove them (the API account may not touch its organization group),
/// the device is remembered and the next syncs try again until UEM lets
/// go; a device deleted from UEM (fault 5061) carries no tags and is not
/// tried again.
#[tokio::test]
async fn a_device_that_left_loses_its_tags_even_after_uem_refused_once() {
    let env = setup(30, "groups = \"571, 572\"").await;
    env.sync().await;
    let tag = "CHKP_Status_Provisioned";
    let in_571: Vec<i64> = env.in_group(571).into_iter().collect();
    let (mut stuck, deleted) = (env.uem.device(in_571[0]).unwrap(), in_571[1]);
    assert!(env.tagged(tag).contains(&stuck.id) && env.tagged(tag).contains(&deleted));
    stuck.group = 570;
    env.uem.put_device(stuck.clone());
    env.uem.remove_device(deleted);
    env.uem.lock_tags(&[stuck.id]);

    let summary = env.sync().await;
    assert!(
        env.tagged(tag).contains(&stuck.id),
        "UEM refused the removal: {summary}"
    );
    assert!(!env.tagged(tag).contains(&deleted), "{summary}");
    // Refused again while the lock holds: tried on every sync.
    env.uem.control().clear_requests();
    env.sync().await;
    let untags = |id: i64| {
        env.uem
            .control()
            .requests_to("/removedevices")
            .iter()
            .filter(|r| {
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                body["BulkValues"]["Value"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(id))
            })
            .count()
    };
    assert_eq!(untags(stuck.id), 1, "the refused removal is tried again");
    assert_eq!(untags(deleted), 0, "a device UEM no longer knows is not");

    env.uem.lock_tags(&[]);
    let summary = env.sync().await;
    assert!(!env.tagged(tag).contains(&stuck.id), "{summary}");
    assert!(summary.contains("tags: 0 added, 1 removed"), "{summary}");
    env.uem.control().clear_requests();
    let summary = env.sync().await;
    assert!(summary.contains("tags: 0 added, 0 removed"), "{summary}");
    assert_eq!(untags(stuck.id), 0, "done once UEM let go");
}

/// A signed risk-change notice moves the device's risk tag at once; a
/// wrong signature is refused; a notice for a device not synced yet is
/// kept and applied when it arrives.
#[tokio::test]
async fn risk_changes_move_tags_and_wait_for_unsynced_devices() {
    let env = setup(10, "groups = \"571\"\ntag_threats = \"true\"").await;
    env.sync().await;
    let device = *env.in_group(571).iter().next().unwrap();
    let n = env
        .mtd
        .set_risk(&device.to_string(), "high", &["jailbreak"])
        .await
        .unwrap();
    assert_eq!(n.outcome, Ok(200), "{n:?}");
    // The risk tag and the threat tag are separate UEM requests: wait for
    // both (the first alone was seen while the second was in flight).
    eventually("the risk and threat tags", || async {
        (env.tagged("CHKP_Risk_High") == BTreeSet::from([device])
            && env.tagged("CHKP_Threat_jailbreak") == BTreeSet::from([device]))
        .then_some(())
    })
    .await;
    // Lower risk: the high tag and the threat tag go, the low one comes.
    env.mtd
        .set_risk(&device.to_string(), "low", &[])
        .await
        .unwrap();
    eventually("the move to low", || async {
        (env.tagged("CHKP_Risk_Low") == BTreeSet::from([device])
            && env.tagged("CHKP_Risk_High").is_empty()
            && env.tagged("CHKP_Threat_jailbreak").is_empty())
        .then_some(())
    })
    .await;
    // The status tag stayed.
    assert!(env.tagged("CHKP_Status_Provisioned").contains(&device));

    // A forged notice is refused by the host.
    let body = json!({"event": "risk_changed", "device_id": device.to_string(), "risk": "high",
                      "threat_factors": []})
    .to_string();
    let (status, r) = post(
        &env.d,
        HOOK,
        None,
        &[("x-mtd-signature", "sha256=00")],
        &body,
    )
    .await;
    assert_eq!(status, 401, "{r}");

    // A device joins the group after the service flagged it.
    let mut newcomer = env
        .uem
        .devices()
        .into_iter()
        .find(|d| d.group == 572)
        .unwrap();
    let body = json!({"event": "risk_changed", "device_id": newcomer.id.to_string(),
                      "risk": "medium", "threat_factors": []})
    .to_string();
    let signature = sign(&env.mtd.config().webhook_secret, body.as_bytes());
    let (status, r) = post(
        &env.d,
        HOOK,
        None,
        &[("x-mtd-signature", &signature)],
        &body,
    )
    .await;
    assert_eq!(status, 200, "{r}");
    // The notice is queued; once handled, it waits for the device.
    eventually("the kept notice", || async {
        let (_, st) = env.act("sync-status").await;
        (st["output"]["pending_risk_changes"] == 1).then_some(())
    })
    .await;
    newcomer.group = 571;
    env.uem.put_device(newcomer.clone());
    let summary = env.sync().await;
    assert!(
        summary.contains("1 pending risk changes applied"),
        "{summary}"
    );
    assert!(env.tagged("CHKP_Risk_Medium").contains(&newcomer.id));
}

/// The app sync sends each iOS device's managed apps, a little at a time
/// when the request budget is small, without touching what the device sync
/// sent.
#[tokio::test]
async fn apps_of_ios_devices_are_sent_across_runs() {
    let env = setup(30, "groups = \"570\"").await;
    env.sync().await;
    let ios: Vec<i64> = env
        .uem
        .devices()
        .iter()
        .filter(|d| d.platform == "Apple")
        .map(|d| d.id)
        .collect();
    assert!(ios.len() > 6, "the seed has iOS devices: {}", ios.len());
    // A small request budget: each run sends a few devices' apps and the
    // next continues where it stopped.
    env.edit_tenant("http_requests = 1000", "http_requests = 12")
        .await;
    // One run now: each run that stops early asks for the next at once.
    start_job(&env.d, &env.token, BASE, "app-sync").await;
    let stats = eventually("the app sync to finish", || async {
        let j = job_stats(&env.d, &env.token, BASE, "app-sync").await;
        let done = !j["last_summary"]
            .as_str()?
            .contains("left for the next run");
        (done && j["runs"].as_i64()? > 1).then_some(j)
    })
    .await;
    assert_eq!(stats["errors"], 0, "{stats}");
    let sent = env
        .mtd
        .control()
        .requests_to("/api/v1/devices/")
        .iter()
        .filter(|r| r.method == "PUT")
        .count();
    assert_eq!(sent, ios.len(), "each iOS device once");
    for d in env.mtd.devices() {
        let id: i64 = d.id.parse().unwrap();
        let uem = env.uem.device(id).unwrap();
        if ios.contains(&id) {
            let managed = uem.apps.iter().filter(|a| a.managed).count();
            assert_eq!(d.fields["apps"].as_array().unwrap().len(), managed, "{d:?}");
        } else {
            assert!(d.fields.get("apps").is_none(), "{d:?}");
        }
        // The device sync's fields are still there.
        assert_eq!(d.fields["serial"], uem.serial.as_str());
    }
}

/// A sync larger than one invocation's request budget saves where it is
/// and asks to run again at once: one run-now ends with every device
/// stored once and tagged, over several runs, without waiting for the
/// schedule; a risk notice that comes meanwhile is kept and applied.
#[tokio::test]
async fn a_sync_larger_than_one_run_goes_on_by_itself() {
    let env = setup_with(600, "groups = \"571, 572, 573\"", false, "").await;
    env.edit_tenant("http_requests = 1000", "http_requests = 12")
        .await;

    // The first run stops early (its summary may already be a later
    // run's when it is read: each asks for the next at once).
    env.sync().await;
    // Devices stored by the first run can be flagged while the rest runs.
    let flagged = env.mtd.devices()[0].id.clone();
    let n = env.mtd.set_risk(&flagged, "high", &[]).await.unwrap();
    assert_eq!(n.outcome, Ok(200), "{n:?}");
    let st = eventually("the sync to finish", || async {
        let (_, st) = env.act("sync-status").await;
        (st["output"]["sync_in_progress"].is_null() && st["output"]["last_sync"].is_object())
            .then_some(st)
    })
    .await;
    let report = &st["output"]["last_sync"];
    assert!(report["runs"].as_u64().unwrap() >= 3, "{st}");
    let stats = job_stats(&env.d, &env.token, BASE, "device-sync").await;
    assert_eq!(stats["errors"], 0, "{stats}");
    assert!(stats["runs"].as_i64().unwrap() >= 3, "{stats}");

    let mut want = env.in_group(571);
    want.extend(env.in_group(572));
    want.extend(env.in_group(573));
    let got: BTreeSet<i64> = env
        .mtd
        .devices()
        .iter()
        .map(|d| d.id.parse().unwrap())
        .collect();
    assert_eq!(got, want);
    assert!(
        env.mtd.devices().iter().all(|d| d.upserts == 1),
        "stored once each"
    );
    assert_eq!(report["devices"], want.len(), "{report}");
    assert_eq!(report["added"], want.len(), "{report}");
    assert_eq!(env.tagged("CHKP_Status_Provisioned"), want);
    let flagged: i64 = flagged.parse().unwrap();
    eventually("the flagged device's risk tag", || async {
        (env.tagged("CHKP_Risk_High") == BTreeSet::from([flagged])).then_some(())
    })
    .await;
    let (_, st) = env.act("sync-status").await;
    assert_eq!(st["output"]["pending_risk_changes"], 0, "{st}");
    assert_eq!(st["output"]["tags"]["CHKP_Risk_High"], 1, "{st}");
}

/// A UEM whose certificate a private CA signed: refused (the error names
/// the certificate) until the instance trusts that CA with `ca_certs`.
#[tokio::test]
async fn a_uem_behind_a_private_ca_is_reached_once_its_ca_is_trusted() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Acme Private CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let uem = Uem::start_tls(uem_config(), 5, 12, &leaf.pem(), &leaf_key.serialize_pem())
        .await
        .unwrap();
    assert!(uem.url().starts_with("https://"));
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), ca.pem()).unwrap();

    // Without the CA: the run fails, naming UEM and the certificate.
    let env = setup_env(uem, "groups = \"571\"", false, "", "").await;
    let failed = run_job(&env.d, &env.token, BASE, "device-sync").await;
    assert_ne!(failed["last_outcome"], "ok", "{failed}");
    let error = failed["last_error"].as_str().unwrap().to_lowercase();
    assert!(
        error.contains("uem") && error.contains("certificate"),
        "{failed}"
    );
    assert!(env.mtd.devices().is_empty());

    // Trusting the CA (and nothing else changed): the sync goes through.
    env.edit_tenant(
        "\n\n[instance.config]",
        &format!(
            "\nca_certs = [\"{}\"]\n\n[instance.config]",
            ca_file.path().display()
        ),
    )
    .await;
    let summary = env.sync().await;
    let want = env.in_group(571);
    assert!(
        summary.starts_with(&format!("{} devices", want.len())),
        "{summary}"
    );
    assert_eq!(env.mtd.devices().len(), want.len());
    assert_eq!(env.tagged("CHKP_Status_Provisioned"), want);
}

/// Upstream trouble mid-sync: UEM's 429 is waited out; a failing MTD
/// service fails the run with an error naming it, deletes nothing and
/// leaves the last good sync's counts in place.
#[tokio::test]
async fn upstream_trouble_fails_clearly_and_deletes_nothing() {
    let env = setup(
        20,
        "groups = \"571, 572\"\ndelete_after_syncs = \"1\"\ndeletion_threshold_pct = \"100\"",
    )
    .await;
    env.sync().await;
    let good = env.act("sync-status").await.1["output"]["last_sync"].clone();
    env.uem.control().inject(
        switchyard_sim::common::Fault::on(
            "/api/mdm/devices/search",
            switchyard_sim::common::FaultKind::RateLimit {
                retry_after_secs: 1,
            },
        )
        .times(1),
    );
    let summary = env.sync().await;
    assert!(summary.contains("0 deleted"), "{summary}");
    // A device leaves, and the MTD service fails while storing devices.
    let mut leaver = env
        .uem
        .devices()
        .into_iter()
        .find(|d| d.group == 571)
        .unwrap();
    leaver.group = 573;
    env.uem.put_device(leaver);
    env.mtd.control().inject(
        switchyard_sim::common::Fault::on(
            "/api/v1/devices/bulk",
            switchyard_sim::common::FaultKind::Status {
                status: 500,
                message: None,
            },
        )
        .method("POST"),
    );
    let failed = run_job(&env.d, &env.token, BASE, "device-sync").await;
    assert_ne!(failed["last_outcome"], "ok", "{failed}");
    assert!(
        failed["last_error"].to_string().contains("MTD service"),
        "{failed}"
    );
    assert!(
        env.mtd.deleted().is_empty(),
        "nothing deleted by a failed sync"
    );
    let st = env.act("sync-status").await.1;
    assert_ne!(st["output"]["last_sync"], good, "the 429 sync was good");
    assert!(
        st["output"]["last_error"]["error"]
            .as_str()
            .unwrap()
            .contains("MTD service"),
        "{st}"
    );
    env.mtd.control().clear_faults();
    let summary = env.sync().await;
    assert!(summary.contains("1 missing, 1 deleted"), "{summary}");
}

/// With OAuth2, a token UEM expired early is fetched again and the sync
/// goes on; a daemon killed mid-sync loses nothing: after a restart the
/// inventory matches UEM, and a device that left is still deleted.
#[tokio::test]
async fn an_expired_token_and_a_kill_mid_sync_lose_nothing() {
    let mut env = setup_with(
        120,
        "groups = \"571, 572, 573\"\ndelete_after_syncs = \"1\"\ndeletion_threshold_pct = \"100\"",
        true,
        "deadline = 4000",
    )
    .await;
    env.sync().await;
    env.uem.expire_tokens();
    let summary = env.sync().await;
    assert!(summary.contains(": 0 added,"), "{summary}");
    let tokens = env.uem.control().requests_to("/connect/token").len();
    assert!(tokens >= 2, "a new token was fetched ({tokens})");

    // A device leaves UEM; the MTD service answers slowly; the daemon dies
    // in the middle of the next sync.
    // (Group 570 is the top: a device there is in none of the synced ones.)
    let leaver = env.uem.devices()[0].clone();
    let mut moved = leaver.clone();
    moved.group = 570;
    env.uem.put_device(moved);
    env.mtd.control().inject(
        switchyard_sim::common::Fault::on(
            "/api/v1/devices/bulk",
            switchyard_sim::common::FaultKind::Latency { ms: 700 },
        )
        .method("POST"),
    );
    let before: u32 = env.mtd.devices().iter().map(|d| d.upserts).sum();
    start_job(&env.d, &env.token, BASE, "device-sync").await;
    // One group's page is stored, the next is on its way.
    eventually("part of the sync", || async {
        let now: u32 = env.mtd.devices().iter().map(|d| d.upserts).sum();
        (now >= before + 20).then_some(())
    })
    .await;
    env.d.child.kill().unwrap();
    env.d.child.wait().unwrap();
    assert!(env.mtd.deleted().is_empty(), "killed before deleting");
    env.mtd.control().clear_faults();

    env.d = start(env._dir.path());
    eventually("a sync that is not skipped", || async {
        (!env.sync().await.starts_with("skipped")).then_some(())
    })
    .await;
    assert_eq!(env.mtd.deleted(), [leaver.id.to_string()]);
    let want: BTreeSet<String> = env
        .uem
        .devices()
        .iter()
        .filter(|d| d.group != 570)
        .map(|d| d.id.to_string())
        .collect();
    let got: BTreeSet<String> = env.mtd.devices().into_iter().map(|d| d.id).collect();
    assert_eq!(got, want);
}

/// `sha256=<hex HMAC-SHA256>` of `body` under `secret`, as the service signs.
fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
