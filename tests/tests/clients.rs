//! The shared service clients (`switchyard-servicenow`, `switchyard-uem`)
//! in a real component, over HTTP against the simulators: paging, query
//! safety, retries, error mapping, tags and groups.

mod common;

use common::*;
use secrecy::SecretString;
use serde_json::{Value, json};
use switchyard_runtime::credentials::{CredentialSecret, CredentialSpec};
use switchyard_runtime::{Instance, InstanceSpec, InvokeError, PluginError};
use switchyard_sim::common::{Fault, FaultKind};
use switchyard_sim::servicenow::{ServiceNow, ServiceNowConfig};
use switchyard_sim::uem::{Uem, UemConfig};
use switchyard_tests::guests;

struct Env {
    sn: ServiceNow,
    uem: Uem,
    inst: Instance,
}

/// Both simulators (`incidents` incidents in ServiceNow, 40 UEM devices)
/// and the test component bound to them with Basic credentials.
async fn setup(incidents: usize) -> Env {
    setup_with(incidents, 40).await
}

async fn setup_with(incidents: usize, devices: usize) -> Env {
    let sn_cfg = ServiceNowConfig {
        rate_limit_per_minute: u32::MAX,
        ..ServiceNowConfig::default()
    };
    let sn = ServiceNow::start(sn_cfg.clone(), 7, 10, incidents)
        .await
        .unwrap();
    let uem_cfg = UemConfig {
        rate_limit_per_minute: u32::MAX,
        ..UemConfig::default()
    };
    let uem = Uem::start(uem_cfg.clone(), 7, devices).await.unwrap();
    let mut spec = InstanceSpec::new("acme", "clients");
    spec.config.insert("servicenow_url".into(), sn.url());
    spec.config.insert("uem_url".into(), uem.url());
    spec.egress = vec![sn.url(), uem.url()];
    spec.limits.http_requests = 200;
    spec.credentials = vec![
        CredentialSpec {
            name: "servicenow".into(),
            hosts: vec![sn.url()],
            secret: CredentialSecret::Basic {
                username: sn_cfg.username.clone(),
                password: SecretString::from(sn_cfg.password.clone()),
                extra_header: None,
                extra_header_value: None,
            },
        },
        CredentialSpec {
            name: "uem".into(),
            hosts: vec![uem.url()],
            secret: CredentialSecret::Basic {
                username: uem_cfg.username.clone(),
                password: SecretString::from(uem_cfg.password.clone()),
                extra_header: Some("aw-tenant-code".into()),
                extra_header_value: Some(SecretString::from(uem_cfg.tenant_code.clone())),
            },
        },
    ];
    let plugin = load(guests::GUEST_CLIENTS).await;
    Env {
        sn,
        uem,
        inst: instance(plugin, spec),
    }
}

async fn fails(env: &Env, action: &str, input: Value) -> PluginError {
    match call(&env.inst, action, input).await.result {
        Err(InvokeError::Plugin(e)) => e,
        other => panic!("{action}: expected a plugin error, got {other:?}"),
    }
}

/// `query_all` follows the `Link` header's `next` page by page, and
/// refuses a result larger than its cap instead of reading on.
#[tokio::test]
async fn servicenow_reads_every_page_by_its_link_header() {
    let env = setup(2_300).await;
    env.sn.control().clear_requests();
    let out = ok(
        &env.inst,
        "sn-query-all",
        json!({"table": "incident", "fields": ["number"], "max": 5000}),
    )
    .await;
    assert_eq!(out["count"], 2_300);
    let numbers: Vec<&str> = out["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["number"].as_str().unwrap())
        .collect();
    let unique: std::collections::HashSet<&str> = numbers.iter().copied().collect();
    assert_eq!(unique.len(), 2_300, "no row twice, none left out");
    let pages = env.sn.control().requests_to("/api/now/table/incident");
    assert_eq!(pages.len(), 3, "1000 + 1000 + 300");
    // The second and third requests are the `next` links, as given.
    assert!(
        pages[1]
            .query
            .as_deref()
            .unwrap()
            .contains("sysparm_offset=1000")
    );
    assert!(
        pages[2]
            .query
            .as_deref()
            .unwrap()
            .contains("sysparm_offset=2000")
    );

    let e = fails(
        &env,
        "sn-query-all",
        json!({"table": "incident", "fields": ["number"], "max": 1500}),
    )
    .await;
    assert!(
        matches!(&e, PluginError::Upstream { message, .. } if message.contains("more than 1500 rows")),
        "{e:?}"
    );
}

/// A value that would add a condition is refused before any request; a
/// record that does not exist reads as none; ServiceNow's error bodies
/// become typed errors.
#[tokio::test]
async fn servicenow_queries_cannot_be_widened_and_errors_are_typed() {
    let env = setup(5).await;
    env.sn.control().clear_requests();
    let e = fails(
        &env,
        "sn-query",
        json!({"table": "incident", "eq": [["number", "INC0000001^ORactive=true"]], "max": 10}),
    )
    .await;
    assert!(
        matches!(&e, PluginError::InvalidInput { message } if message.contains("`number`")),
        "{e:?}"
    );
    assert!(env.sn.control().requests().is_empty(), "nothing was sent");

    let missing = ok(
        &env.inst,
        "sn-get",
        json!({"table": "incident", "sys_id": "0123456789abcdef0123456789abcdef"}),
    )
    .await;
    assert_eq!(missing, Value::Null);

    let e = fails(
        &env,
        "sn-update",
        json!({"table": "incident", "sys_id": "0123456789abcdef0123456789abcdef", "fields": {"state": "2"}}),
    )
    .await;
    assert!(matches!(e, PluginError::NotFound { .. }), "{e:?}");

    // A table the instance does not have: ServiceNow's own message.
    let e = fails(
        &env,
        "sn-query",
        json!({"table": "u_no_such_table", "max": 1}),
    )
    .await;
    assert!(
        matches!(&e, PluginError::Upstream { status: Some(400), message, .. }
            if message.contains("Invalid table")),
        "{e:?}"
    );
}

/// Reads are retried after a 429 (as `Retry-After` says); an insert that
/// failed with a 5xx is not (it may have been written), and an insert,
/// update and work note reach the records.
#[tokio::test]
async fn servicenow_retries_what_is_safe_and_writes_records_and_notes() {
    let env = setup(5).await;
    env.sn.control().inject(
        Fault::on(
            "/api/now/table/incident",
            FaultKind::RateLimit {
                retry_after_secs: 0,
            },
        )
        .method("GET")
        .times(1),
    );
    env.sn.control().clear_requests();
    let out = ok(
        &env.inst,
        "sn-query",
        json!({"table": "incident", "max": 10}),
    )
    .await;
    assert_eq!(out["count"], 5);
    assert_eq!(
        env.sn.control().requests().len(),
        2,
        "the 429, then the read"
    );

    env.sn.control().inject(
        Fault::on(
            "/api/now/table/incident",
            FaultKind::Status {
                status: 503,
                message: None,
            },
        )
        .method("POST")
        .times(1),
    );
    env.sn.control().clear_requests();
    let e = fails(
        &env,
        "sn-insert",
        json!({"table": "incident", "fields": {"short_description": "VPN down"}}),
    )
    .await;
    assert!(
        matches!(
            e,
            PluginError::Upstream {
                status: Some(503),
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(env.sn.control().requests().len(), 1, "not sent twice");

    let created = ok(
        &env.inst,
        "sn-insert",
        json!({"table": "incident", "fields": {"short_description": "VPN down"}}),
    )
    .await;
    let id = created["sys_id"].as_str().unwrap();
    let row = env.sn.record("incident", id).unwrap();
    assert_eq!(row["short_description"], "VPN down");
    ok(
        &env.inst,
        "sn-update",
        json!({"table": "incident", "sys_id": id, "fields": {"state": "2"}}),
    )
    .await;
    assert_eq!(env.sn.record("incident", id).unwrap()["state"], "2");

    let number = row["number"].as_str().unwrap().to_owned();
    let out = ok(
        &env.inst,
        "sn-work-note",
        json!({"task": number, "note": "looked at"}),
    )
    .await;
    assert_eq!(out["table"], "incident", "{out}");
    assert_eq!(env.sn.work_notes("incident", id), ["looked at"]);
    // By sys_id too; and a key that is neither finds nothing, asking
    // nothing.
    ok(
        &env.inst,
        "sn-work-note",
        json!({"task": id, "note": "again"}),
    )
    .await;
    assert_eq!(env.sn.work_notes("incident", id).len(), 2);
    env.sn.control().clear_requests();
    let out = ok(
        &env.inst,
        "sn-work-note",
        json!({"task": "INC1^ORactive=true", "note": "x"}),
    )
    .await;
    assert_eq!(out["found"], false);
    assert!(env.sn.control().requests().is_empty());
}

/// Tags: created once in a group, devices added and removed (a device UEM
/// does not know is reported, not fatal), and read back per device.
#[tokio::test]
async fn uem_tags_are_created_once_and_hold_devices() {
    let env = setup(1).await;
    let devices = env.uem.devices();
    let (a, b) = (devices[0].id, devices[1].id);
    let out = ok(
        &env.inst,
        "uem-tags",
        json!({"name": "CHKP_Risk_High", "group": 570, "add": [a, b, 999_999],
               "device": {"id": a}}),
    )
    .await;
    assert_eq!(out["tag"], out["again"], "found, not created twice");
    assert_eq!(out["added"]["accepted"], 2, "{out}");
    let fault = &out["added"]["failed"][0];
    assert_eq!(
        (&fault["item"], &fault["code"]),
        (&json!("999999"), &json!(5061)),
        "{out}"
    );
    assert_eq!(out["device_tags"][0]["name"], "CHKP_Risk_High", "{out}");
    let tags = env.uem.tags();
    assert_eq!(tags.len(), 1);
    assert_eq!(tags[0].group, 570);
    assert_eq!(tags[0].devices, [a, b]);

    let out = ok(
        &env.inst,
        "uem-tags",
        json!({"name": "CHKP_Risk_High", "group": 570, "remove": [a],
               "device": {"serial": devices[0].serial}}),
    )
    .await;
    assert_eq!(out["device_tags"], json!([]), "{out}");
    assert_eq!(env.uem.tags()[0].devices, [b]);

    // A group UEM does not have: UEM's 400, as invalid input.
    let e = fails(
        &env,
        "uem-tags",
        json!({"name": "x", "group": 1, "device": {"id": a}}),
    )
    .await;
    assert!(
        matches!(&e, PluginError::InvalidInput { message } if message.contains("does not exist")),
        "{e:?}"
    );
}

/// Organization and smart groups, smart-group members, devices by every
/// kind of selector, and a user's devices over the paged search.
#[tokio::test]
async fn uem_groups_and_devices_are_found() {
    let env = setup(1).await;
    let out = ok(&env.inst, "uem-groups", json!({"name": ""})).await;
    let org = out["org"].as_array().unwrap();
    assert_eq!(org.len(), env.uem.groups().len());
    assert!(
        org.iter()
            .any(|g| g["id"] == 570 && g["parent"].is_null() && g["name"] == "Acme")
    );
    assert!(org.iter().any(|g| g["parent"] == 570));
    let smart = env.uem.smart_groups();
    assert_eq!(out["smart"].as_array().unwrap().len(), smart.len());
    assert_eq!(out["first_smart_members"], smart[0].devices.len());

    let d = &env.uem.devices()[3];
    for selector in [
        json!({"id": d.id}),
        json!({"id": d.id.to_string()}),
        json!({"serial": d.serial}),
        json!({"udid": d.udid}),
    ] {
        let out = ok(&env.inst, "uem-resolve", json!({"device": selector})).await;
        assert_eq!(out["id"], d.id, "{selector}");
        assert_eq!(out["serial"], d.serial.as_str());
    }
    let e = fails(
        &env,
        "uem-resolve",
        json!({"device": {"serial": "NO-SUCH-SERIAL"}}),
    )
    .await;
    assert!(matches!(e, PluginError::NotFound { .. }), "{e:?}");

    // The simulator gives each user two devices: by email, both match.
    let owned = env
        .uem
        .devices()
        .iter()
        .filter(|x| x.user_email == d.user_email)
        .count();
    assert!(owned > 1);
    let e = fails(
        &env,
        "uem-resolve",
        json!({"device": {"email": d.user_email}}),
    )
    .await;
    assert!(
        matches!(&e, PluginError::Conflict { message } if message.contains("name one by id")),
        "{e:?}"
    );
    let out = ok(&env.inst, "uem-devices-of", json!({"name": d.user_email})).await;
    assert_eq!(out["count"], owned);
}

/// UEM's 0-based search paging reads every page (500 devices each), and
/// the host tells the component what is left of its request budget and
/// deadline.
#[tokio::test]
async fn uem_searches_page_and_the_invocation_knows_its_limits() {
    let env = setup_with(1, 1_200).await;
    env.uem.control().clear_requests();
    let out = ok(&env.inst, "uem-search-all", json!({})).await;
    assert_eq!(out["count"], 1_200);
    let pages: Vec<String> = env
        .uem
        .control()
        .requests_to("/api/mdm/devices/search")
        .iter()
        .map(|r| r.param("page").unwrap_or_default())
        .collect();
    assert_eq!(pages, ["0", "1", "2"]);

    let out = ok(&env.inst, "limits", json!({})).await;
    assert_eq!(out["requests_before"], 200, "{out}");
    assert_eq!(out["requests_after"], 199, "{out}");
    let ms = out["remaining_ms"].as_u64().unwrap();
    assert!(ms > 0 && ms <= 30_000, "{out}");
}
