//! The `uem-actions` plugin driven through the daemon's action endpoint
//! against the UEM and ServiceNow simulators: the exact requests UEM and
//! ServiceNow receive, the audit and work notes, and every refusal.

mod common;

use base64::Engine;
use common::*;
use serde_json::{Value, json};
use switchyard_sim::common::{Fault, FaultKind, person};
use switchyard_sim::servicenow::{ServiceNow, ServiceNowConfig};
use switchyard_sim::uem::{Device, Uem, UemConfig};

const BASE: &str = "/v1/tenants/acme/instances/uem/actions";

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn acme(uem: &Uem, sn: &ServiceNow) -> String {
    format!(
        r#"[roles]
"ITIL Agent" = ["standard"]
"Desk Lead" = ["advanced"]
"Locker" = ["lock-device"]
"Viewer" = ["console-viewer"]
"Integration Admin" = ["admin"]

[[instance]]
id = "uem"
plugin = "uem-actions"
egress = ["{uem}", "{sn}"]

[instance.config]
api_url = "{uem}"
servicenow_url = "{sn}"
console_url = "https://cn1.awmdm.example"
assist_url = "https://assist.acme.example"
email_exceptions = "kiosk@acme.example; shared@acme.example"

{uem_credential}
{sn_credential}"#,
        uem = uem.url(),
        sn = sn.url(),
        uem_credential = uem_basic_credential(uem),
        sn_credential = servicenow_basic_credential(sn),
    )
}

fn globex(uem: &Uem) -> String {
    format!(
        r#"[roles]
"Employee" = ["catalog-all"]
"Agent" = ["advanced"]
"Admin" = ["admin"]

[[instance]]
id = "uem"
plugin = "uem-actions"
egress = ["{uem}"]

[instance.config]
api_url = "{uem}"
actions = "lock-device, sync-device, find-devices, view-recovery-key, verify-oauth-token"
admin_actions = "verify-oauth-token, find-devices, view-configuration"

[instance.credentials.uem]
kind = "oauth2-client-credentials"
hosts = ["{uem}"]
token_url = "{token}"
client_id = "{id}"
client_secret = "secret:uem-client-secret"
"#,
        uem = uem.url(),
        token = uem.token_url(),
        id = uem.config().client_id,
    )
}

struct Env {
    uem: Uem,
    sn: ServiceNow,
    _dir: tempfile::TempDir,
    d: Daemon,
    acme: String,
    globex: String,
}

async fn setup() -> Env {
    setup_with(UemConfig::default()).await
}

async fn setup_with(uem_cfg: UemConfig) -> Env {
    let uem = Uem::start(uem_cfg, 11, 40).await.unwrap();
    let sn = ServiceNow::start(ServiceNowConfig::default(), 11, 20, 0)
        .await
        .unwrap();
    let dir = config_dir(
        "data_dir = \"data\"\n",
        &[("acme", &acme(&uem, &sn)), ("globex", &globex(&uem))],
    );
    let cfg = dir.path().to_str().unwrap();
    for (tenant, name, value) in [
        ("acme", "uem-password", uem.config().password.clone()),
        ("acme", "uem-tenant-code", uem.config().tenant_code.clone()),
        ("acme", "sn-password", sn.config().password.clone()),
        (
            "globex",
            "uem-client-secret",
            uem.config().client_secret.clone(),
        ),
    ] {
        cli(
            &["secret", "--config", cfg, "set", tenant, name],
            Some(&value),
        );
    }
    let acme = token(dir.path(), "acme");
    let globex = token(dir.path(), "globex");
    let d = start(dir.path());
    Env {
        uem,
        sn,
        _dir: dir,
        d,
        acme,
        globex,
    }
}

impl Env {
    async fn act(&self, action: &str, roles: &[&str], input: Value) -> (u16, Value) {
        act(
            &self.d,
            &self.acme,
            &format!("{BASE}/{action}"),
            roles,
            input,
        )
        .await
    }

    async fn act_globex(&self, action: &str, actor: Value, input: Value) -> (u16, Value) {
        let body = json!({"input": input, "actor": actor});
        post(
            &self.d,
            &format!("/v1/tenants/globex/instances/uem/actions/{action}"),
            Some(&self.globex),
            &[],
            &body.to_string(),
        )
        .await
    }

    /// A device of `platform` whose user has exactly one device.
    fn device(&self, platform: &str) -> Device {
        let all = self.uem.devices();
        all.iter()
            .find(|d| {
                d.platform == platform
                    && all.iter().filter(|x| x.user_email == d.user_email).count() == 1
            })
            .or_else(|| all.iter().find(|d| d.platform == platform))
            .unwrap_or_else(|| panic!("no {platform} device in the seed"))
            .clone()
    }

    /// An incident whose caller is the user with `email`.
    fn incident_for(&self, email: &str) -> (String, String) {
        let inc = self
            .sn
            .open_incident(email, "Device problem")
            .unwrap_or_else(|| panic!("no ServiceNow user {email}"));
        (
            inc["sys_id"].as_str().unwrap().to_owned(),
            inc["number"].as_str().unwrap().to_owned(),
        )
    }
}

#[tokio::test]
async fn agent_actions_from_an_incident_send_exact_requests_and_leave_notes() {
    let env = setup().await;
    let phone = env.device("Apple");
    let (sys_id, number) = env.incident_for(&phone.user_email);

    let (status, out) = env
        .act(
            "lock-device",
            &["ITIL Agent"],
            json!({"device": {"id": phone.id}, "incident": {"number": number}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let out = &out["output"];
    assert_eq!(out["result"]["command"], "Lock");
    assert_eq!(out["device"]["os_family"], "ios");
    assert_eq!(out["audit_note"], "written", "{out}");
    assert_eq!(out["work_note"], "written", "{out}");

    // UEM received exactly the command, with Basic auth and the tenant code.
    let commands = env.uem.control().requests_to("/commands");
    assert_eq!(commands.len(), 1);
    let c = &commands[0];
    assert_eq!(c.method, "POST");
    assert_eq!(c.path, format!("/api/mdm/devices/{}/commands", phone.id));
    assert_eq!(c.query.as_deref(), Some("command=Lock"));
    assert!(c.body.is_empty());
    let cfg = env.uem.config();
    assert_eq!(
        c.header("authorization"),
        Some(basic(&cfg.username, &cfg.password).as_str())
    );
    assert_eq!(c.header("aw-tenant-code"), Some(cfg.tenant_code.as_str()));
    assert!(c.header("accept").unwrap().contains("application/json"));
    assert_eq!(env.uem.commands().last().unwrap().command, "Lock");
    // The audit note on the device names the action, the agent and the incident.
    let note = &env.uem.device(phone.id).unwrap().notes[0];
    assert!(
        note.note
            .contains("Lock Device by agent.smith@acme.example"),
        "{}",
        note.note
    );
    assert!(note.note.contains(&number), "{}", note.note);
    let note_req = &env.uem.control().requests_to("/notes")[0];
    assert_eq!(note_req.json()["DeviceId"], phone.id);
    // The work note on the incident records the action and its outcome.
    let notes = env.sn.work_notes("incident", &sys_id);
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].contains(&format!("Lock Device on device {}", phone.id)),
        "{}",
        notes[0]
    );
    assert!(notes[0].ends_with("succeeded."), "{}", notes[0]);
    let patch = env
        .sn
        .control()
        .requests_to(&format!("/incident/{sys_id}"))
        .into_iter()
        .find(|r| r.method == "PATCH")
        .unwrap();
    let sn_cfg = env.sn.config();
    assert_eq!(
        patch.header("authorization"),
        Some(basic(&sn_cfg.username, &sn_cfg.password).as_str())
    );

    // Recovery keys: FileVault on a Mac, BitLocker on Windows.
    for platform in ["AppleOsX", "WinRT"] {
        let dev = env.device(platform);
        let (_, number) = env.incident_for(&dev.user_email);
        let (status, out) = env
            .act(
                "view-recovery-key",
                &["ITIL Agent"],
                json!({"device": {"serial": dev.serial}, "incident": {"number": number}}),
            )
            .await;
        assert_eq!(status, 200, "{out}");
        let key = out["output"]["result"]["keys"][0]["key"]
            .as_str()
            .unwrap()
            .to_owned();
        let expected = dev
            .filevault_key
            .clone()
            .unwrap_or_else(|| dev.bitlocker[0].1.clone());
        assert_eq!(key, expected);
        let kind = if platform == "AppleOsX" {
            "FileVault"
        } else {
            "BitLocker"
        };
        assert_eq!(out["output"]["result"]["type"], kind);
        // The key is for the agent; it is in no note.
        let notes = env.uem.device(dev.id).unwrap().notes;
        assert!(notes.iter().all(|n| !n.note.contains(&expected)));
        assert!(notes[0].note.contains("View Encryption Recovery Key"));
    }
    let keys = env.uem.control().requests_to("/security/recovery-key");
    assert_eq!(keys[0].method, "GET");

    // Send a message: the channel follows the OS family.
    let android = env.device("Android");
    let (status, out) = env
        .act(
            "send-message",
            &["ITIL Agent"],
            json!({"device": {"udid": android.udid}, "message": "Please call the desk"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let push = env
        .uem
        .control()
        .requests_to("/messages/push")
        .pop()
        .unwrap();
    assert_eq!(
        push.query.as_deref(),
        Some(format!("searchby=deviceid&id={}", android.id).as_str())
    );
    assert_eq!(
        push.json(),
        json!({"MessageBody": "Please call the desk", "Application": "AirWatch Agent", "MessageType": "Push"})
    );
    assert_eq!(out["output"]["work_note"], "skipped: no incident");

    // Change passcode, request device log, find device, soft reset, sync.
    let win = env.device("WinRT");
    let (status, out) = env
        .act(
            "change-passcode",
            &["ITIL Agent"],
            json!({"device": {"id": win.id}, "passcode": "482913"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let req = env
        .uem
        .control()
        .requests_to("/changepasscode")
        .pop()
        .unwrap();
    assert_eq!(
        req.path,
        format!("/api/mdm/devices/{}/commands/changepasscode", win.id)
    );
    assert_eq!(req.json(), json!({"Passcode": "482913"}));
    assert!(
        env.uem
            .device(win.id)
            .unwrap()
            .notes
            .iter()
            .all(|n| !n.note.contains("482913")),
        "the passcode is in no note"
    );
    let (status, _) = env
        .act(
            "request-device-log",
            &["ITIL Agent"],
            json!({"device": {"id": win.id}, "source": "System", "duration_min": 60}),
        )
        .await;
    assert_eq!(status, 200);
    let req = env
        .uem
        .control()
        .requests_to("/requestdevicelog")
        .pop()
        .unwrap();
    assert_eq!(
        req.query.as_deref(),
        Some(format!("searchby=DeviceId&id={}", win.id).as_str())
    );
    assert_eq!(
        req.json(),
        json!({"Source": "System", "Level": "Debug", "Duration": 60})
    );
    let (status, _) = env
        .act(
            "find-device",
            &["ITIL Agent"],
            json!({"device": {"id": phone.id}}),
        )
        .await;
    assert_eq!(status, 200);
    let req = env.uem.control().requests_to("/finddevice").pop().unwrap();
    assert_eq!(
        req.json(),
        json!({"Platform": "Apple", "NumberOfRepetitions": 3, "GapBetweenRepetitions": 10})
    );
    for (action, command) in [("soft-reset", "SoftReset"), ("sync-device", "SyncDevice")] {
        let (status, _) = env
            .act(action, &["ITIL Agent"], json!({"device": {"id": phone.id}}))
            .await;
        assert_eq!(status, 200);
        assert_eq!(env.uem.commands().last().unwrap().command, command);
    }

    // Console link and remote assist answer links; test connection the version.
    let (status, out) = env
        .act(
            "console-link",
            &["Viewer"],
            json!({"device": {"id": phone.id}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["output"]["result"]["url"],
        format!(
            "https://cn1.awmdm.example/AirWatch/#/AirWatch/Device/Details/Summary/{}",
            phone.id
        )
        .as_str()
    );
    let (status, out) = env
        .act(
            "remote-assist",
            &["ITIL Agent"],
            json!({"device": {"id": phone.id}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["output"]["result"]["url"],
        format!("https://assist.acme.example/devices/{}", phone.udid).as_str()
    );
    let notes = env.uem.device(phone.id).unwrap().notes;
    assert!(
        notes.last().unwrap().note.contains("Remote Assist by"),
        "{notes:?}"
    );
    let (status, out) = env
        .act("test-connection", &["Integration Admin"], json!({}))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["output"]["version"], "24.10.0.7");
    let (status, out) = env
        .act("verify-oauth-token", &["Integration Admin"], json!({}))
        .await;
    assert_eq!(status, 409, "acme uses Basic: {out}");

    // Add device: registered for the user found by email.
    let who = person(3);
    let (status, out) = env
        .act(
            "add-device",
            &["ITIL Agent"],
            json!({"user_email": who.email, "platform": "iOS", "serial": "F2LX1234"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let reg = env.uem.registrations().pop().unwrap();
    assert_eq!(reg.email, who.email);
    assert_eq!(reg.body["PlatformId"], 2);
    assert_eq!(reg.body["SerialNumber"], "F2LX1234");

    // Devices by email: the list.
    let (status, out) = env
        .act(
            "find-devices",
            &["ITIL Agent"],
            json!({"device": {"email": phone.user_email}}),
        )
        .await;
    assert_eq!(status, 200);
    let expected = env
        .uem
        .devices()
        .iter()
        .filter(|d| d.user_email == phone.user_email)
        .count();
    assert_eq!(out["output"]["devices"].as_array().unwrap().len(), expected);
}

#[tokio::test]
async fn refusals_roles_email_exceptions_os_and_wipes() {
    let env = setup().await;
    let phone = env.device("Apple");
    let sent = || env.uem.commands().len();

    // Roles: standard has no wipes; a per-action role has only its action.
    let wipe = json!({"device": {"id": phone.id}, "confirm": true});
    let (status, out) = env.act("device-wipe", &["ITIL Agent"], wipe.clone()).await;
    assert_eq!(status, 403, "{out}");
    assert_eq!(out["error"]["code"], "forbidden");
    let (status, _) = env
        .act(
            "lock-device",
            &["Locker"],
            json!({"device": {"id": phone.id}}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = env
        .act(
            "sync-device",
            &["Locker"],
            json!({"device": {"id": phone.id}}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = env
        .act(
            "lock-device",
            &["Viewer"],
            json!({"device": {"id": phone.id}}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = env
        .act("lock-device", &[], json!({"device": {"id": phone.id}}))
        .await;
    assert_eq!(status, 403);
    // Wipes need confirmation, then go out.
    let (status, out) = env
        .act(
            "enterprise-wipe",
            &["Desk Lead"],
            json!({"device": {"id": phone.id}}),
        )
        .await;
    assert_eq!(status, 422, "{out}");
    let before = sent();
    let (status, _) = env.act("device-wipe", &["Desk Lead"], wipe).await;
    assert_eq!(status, 200);
    assert_eq!(sent(), before + 1);
    assert_eq!(env.uem.commands().last().unwrap().command, "DeviceWipe");
    let (status, _) = env
        .act(
            "enterprise-wipe",
            &["Desk Lead"],
            json!({"device": {"id": phone.id}, "confirm": true}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(env.uem.commands().last().unwrap().command, "EnterpriseWipe");

    // Caller-email validation: the incident's caller is someone else.
    let other = env
        .uem
        .devices()
        .into_iter()
        .find(|d| d.user_email != phone.user_email)
        .unwrap();
    let (sys_id, number) = env.incident_for(&other.user_email);
    let before = sent();
    let (status, out) = env
        .act(
            "lock-device",
            &["ITIL Agent"],
            json!({"device": {"id": phone.id}, "incident": {"number": number}}),
        )
        .await;
    assert_eq!(status, 403, "{out}");
    let msg = out["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&other.user_email) && msg.contains(&phone.user_email),
        "{msg}"
    );
    assert_eq!(sent(), before, "nothing was sent to UEM");
    assert!(env.sn.work_notes("incident", &sys_id).is_empty());
    // ... unless the device's user is on the exception list.
    let mut kiosk = phone.clone();
    kiosk.id = 99_001;
    kiosk.serial = "KIOSK0001".into();
    kiosk.udid = "KIOSKUDID".into();
    kiosk.user_email = "kiosk@acme.example".into();
    env.uem.put_device(kiosk.clone());
    let (status, out) = env
        .act(
            "lock-device",
            &["ITIL Agent"],
            json!({"device": {"id": kiosk.id}, "incident": {"sys_id": sys_id}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");

    // The OS family decides what applies.
    let (status, out) = env
        .act(
            "view-recovery-key",
            &["ITIL Agent"],
            json!({"device": {"id": phone.id}}),
        )
        .await;
    assert_eq!(status, 409, "{out}");
    assert!(
        out["error"]["message"].as_str().unwrap().contains("iOS"),
        "{out}"
    );
    if let Some(linux) = env
        .uem
        .devices()
        .into_iter()
        .find(|d| d.platform == "Linux")
    {
        let (status, _) = env
            .act(
                "send-message",
                &["ITIL Agent"],
                json!({"device": {"id": linux.id}, "message": "hi"}),
            )
            .await;
        assert_eq!(status, 409);
    }

    // Not found, several devices, bad input.
    let (status, out) = env
        .act("lock-device", &["ITIL Agent"], json!({"device": {"id": 1}}))
        .await;
    assert_eq!(status, 404, "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Device not found"),
        "{out}"
    );
    let many = env
        .uem
        .devices()
        .into_iter()
        .find(|d| {
            env.uem
                .devices()
                .iter()
                .filter(|x| x.user_email == d.user_email)
                .count()
                > 1
        })
        .unwrap();
    let (status, out) = env
        .act(
            "lock-device",
            &["ITIL Agent"],
            json!({"device": {"email": many.user_email}}),
        )
        .await;
    assert_eq!(status, 409, "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("name one by id"),
        "{out}"
    );
    let (status, _) = env
        .act(
            "lock-device",
            &["ITIL Agent"],
            json!({"device": {"name": "x"}}),
        )
        .await;
    assert_eq!(status, 422);
    // Typed inputs (issue 14): the host checks each action's generated
    // schema and names where the input is wrong; the plugin never runs.
    let before = env.uem.control().requests().len();
    let (status, out) = env
        .act(
            "change-passcode",
            &["ITIL Agent"],
            json!({"device": {"id": many.id}, "passcode": "1"}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(out.to_string().contains("/passcode"), "{out}");
    let (status, out) = env
        .act(
            "lock-device",
            &["ITIL Agent"],
            json!({"device": {"id": many.id}, "incident": {"sys_id": "../sys_user/x"}}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(out.to_string().contains("/incident/sys_id"), "{out}");
    assert_eq!(
        env.uem.control().requests().len(),
        before,
        "no request reached UEM"
    );
    // What ServiceNow UI actions and flows send still works: blank incident
    // fields and a null incident mean "no incident".
    for incident in [json!({"sys_id": "", "number": " "}), Value::Null] {
        let (status, out) = env
            .act(
                "lock-device",
                &["ITIL Agent"],
                json!({"device": {"id": many.id}, "incident": incident}),
            )
            .await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["output"]["work_note"], "skipped: no incident", "{out}");
    }
}

#[tokio::test]
async fn uem_errors_map_to_clear_statuses_and_failures_are_noted() {
    let env = setup().await;
    let phone = env.device("Apple");
    let (sys_id, number) = env.incident_for(&phone.user_email);
    let lock = json!({"device": {"id": phone.id}, "incident": {"number": number}});

    env.uem.control().inject(
        Fault::on(
            "/api/mdm/devices",
            FaultKind::RateLimit {
                retry_after_secs: 9,
            },
        )
        .method("POST")
        .times(1),
    );
    let r = reqwest::Client::new()
        .post(format!("{}{BASE}/lock-device", env.d.base))
        .bearer_auth(&env.acme)
        .json(&json!({"input": lock, "actor": {"id": "a", "roles": ["ITIL Agent"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "9");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_failed");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retry in 9 s"),
        "{body}"
    );
    // The failure is on the incident too; no audit note on the device.
    let notes = env.sn.work_notes("incident", &sys_id);
    assert!(notes.last().unwrap().contains("failed"), "{notes:?}");
    assert!(env.uem.device(phone.id).unwrap().notes.is_empty());

    env.uem.control().inject(
        Fault::on(
            "/api/mdm/devices",
            FaultKind::Status {
                status: 403,
                message: Some("no permission".into()),
            },
        )
        .method("POST")
        .times(1),
    );
    let (status, out) = env.act("lock-device", &["ITIL Agent"], lock.clone()).await;
    assert_eq!(status, 403, "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lacks the permission"),
        "{out}"
    );

    env.uem.control().inject(
        Fault::on(
            "/api/mdm/devices",
            FaultKind::Status {
                status: 500,
                message: None,
            },
        )
        .method("POST")
        .times(1),
    );
    let (status, out) = env.act("lock-device", &["ITIL Agent"], lock.clone()).await;
    assert_eq!(status, 502, "{out}");

    env.uem.control().inject(
        Fault::on("/api/mdm/devices", FaultKind::Malformed)
            .method("GET")
            .times(1),
    );
    let (status, out) = env.act("lock-device", &["ITIL Agent"], lock.clone()).await;
    assert_eq!(status, 502, "{out}");
    assert!(
        out["error"]["message"].as_str().unwrap().contains("JSON"),
        "{out}"
    );

    // Bad credentials: UEM's 401 is named as such.
    env.uem.control().inject(
        Fault::on(
            "/api/",
            FaultKind::Status {
                status: 401,
                message: Some("User credentials are invalid.".into()),
            },
        )
        .times(1),
    );
    let (status, out) = env
        .act(
            "lock-device",
            &["ITIL Agent"],
            json!({"device": {"id": phone.id}}),
        )
        .await;
    assert_eq!(status, 502, "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rejected the API credentials"),
        "{out}"
    );

    // And after all that, it works.
    let (status, _) = env.act("lock-device", &["ITIL Agent"], lock).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn self_service_with_oauth_acts_on_own_devices_only() {
    let env = setup().await;
    let mac = env.device("AppleOsX");
    let me = json!({"id": "emp-1", "email": mac.user_email, "roles": ["Employee"]});

    let (status, out) = env
        .act_globex("lock-device", me.clone(), json!({"device": {"id": mac.id}}))
        .await;
    assert_eq!(status, 200, "{out}");
    let (status, out) = env
        .act_globex(
            "view-recovery-key",
            me.clone(),
            json!({"device": {"id": mac.id}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["output"]["result"]["keys"][0]["key"],
        mac.filevault_key.clone().unwrap().as_str()
    );
    // Someone else's device is refused before UEM is told anything.
    let other = env
        .uem
        .devices()
        .into_iter()
        .find(|d| d.user_email != mac.user_email)
        .unwrap();
    let before = env.uem.commands().len();
    let (status, out) = env
        .act_globex(
            "lock-device",
            me.clone(),
            json!({"device": {"id": other.id}}),
        )
        .await;
    assert_eq!(status, 403, "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("own devices"),
        "{out}"
    );
    assert_eq!(env.uem.commands().len(), before);
    // find-devices shows only mine, whatever is asked.
    let (status, out) = env
        .act_globex(
            "find-devices",
            me.clone(),
            json!({"device": {"email": other.user_email}}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        out["output"]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["email"] == mac.user_email.as_str())
    );
    // Catalog roles do not reach agent actions, and globex does not offer them.
    let (status, out) = env
        .act_globex(
            "send-message",
            json!({"id": "x", "roles": ["Agent"]}),
            json!({"device": {"id": mac.id}, "message": "x"}),
        )
        .await;
    assert_eq!(status, 403);
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not offered"),
        "{out}"
    );

    // OAuth: one token fetched, then Bearer on every call.
    let tokens = env.uem.control().requests_to("/connect/token");
    assert_eq!(tokens.len(), 1, "the host caches the token");
    let api = env.uem.control().requests_to("/commands").pop().unwrap();
    assert!(api.header("authorization").unwrap().starts_with("Bearer "));
    assert_eq!(api.header("aw-tenant-code"), None);
    let (status, out) = env
        .act_globex(
            "verify-oauth-token",
            json!({"id": "adm", "roles": ["Admin"]}),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert!(out["output"]["expires_at_ms"].as_u64().unwrap() > 0);
    // UEM administrators have their own list (admin_actions).
    let (status, out) = env
        .act_globex(
            "lock-device",
            json!({"id": "adm", "roles": ["Admin", "Agent"]}),
            json!({"device": {"id": mac.id}}),
        )
        .await;
    assert_eq!(status, 403, "{out}");
    assert!(out.to_string().contains("config `admin_actions`"), "{out}");
    // The read-only configuration view: settings and credential metadata.
    let (status, out) = env
        .act_globex(
            "view-configuration",
            json!({"id": "adm", "roles": ["Admin"]}),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["output"]["settings"]["api_url"], env.uem.url(), "{out}");
    assert_eq!(
        out["output"]["credentials"][0]["kind"],
        "oauth2-client-credentials"
    );
    assert!(!out.to_string().contains(&env.uem.config().client_secret));
    // An expired token is refreshed once and the call succeeds.
    env.uem.expire_tokens();
    let (status, out) = env
        .act_globex("lock-device", me, json!({"device": {"id": mac.id}}))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(env.uem.control().requests_to("/connect/token").len(), 2);
}

#[tokio::test]
async fn a_reload_rebuilds_only_changed_tenants_and_keeps_their_tokens() {
    let env = setup().await;
    let cfg = env._dir.path();
    let operator = operator_token(cfg);
    let mac = env.device("AppleOsX");
    let me = json!({"id": "emp-1", "email": mac.user_email, "roles": ["Employee"]});
    let lock = || env.act_globex("lock-device", me.clone(), json!({"device": {"id": mac.id}}));
    let tokens = || env.uem.control().requests_to("/connect/token").len();
    let reload = || async {
        let (status, body) = post(&env.d, "/v1/admin/reload", Some(&operator), &[], "").await;
        assert_eq!(status, 200, "{body}");
        body["reloaded"].as_str().unwrap().to_owned()
    };
    let (status, out) = lock().await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(tokens(), 1);

    // Another tenant's file changes: globex is kept, with its token.
    let acme = cfg.join("tenants/acme.toml");
    let text = std::fs::read_to_string(&acme).unwrap();
    std::fs::write(&acme, format!("# edited\n{text}")).unwrap();
    assert_eq!(
        reload().await,
        "2 tenant(s), 2 instance(s); 1 tenant(s) rebuilt"
    );
    let (status, out) = lock().await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(tokens(), 1, "globex's cached token survived the reload");

    // Nothing changed: nothing is rebuilt.
    assert_eq!(
        reload().await,
        "2 tenant(s), 2 instance(s); 0 tenant(s) rebuilt"
    );

    // One of globex's secrets is set again: globex is rebuilt and fetches a
    // new token with it.
    cli(
        &[
            "secret",
            "--config",
            cfg.to_str().unwrap(),
            "set",
            "globex",
            "uem-client-secret",
        ],
        Some(&env.uem.config().client_secret),
    );
    assert_eq!(
        reload().await,
        "2 tenant(s), 2 instance(s); 1 tenant(s) rebuilt"
    );
    let (status, out) = lock().await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(tokens(), 2, "the rebuilt instance fetched its own token");
}

#[tokio::test]
async fn unenrolled_devices_old_versions_and_unknown_answers_are_named() {
    let env = setup_with(UemConfig {
        product_version: "20.11.0.3".into(),
        recovery_key_field: "PersonalRecoveryKey".into(),
        ..UemConfig::default()
    })
    .await;

    // Test Connection compares the version with the seed's minimum.
    let (status, out) = env
        .act("test-connection", &["Integration Admin"], json!({}))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["output"]["ok"], false, "{out}");
    assert_eq!(out["output"]["supported"], false, "{out}");
    let message = out["output"]["message"].as_str().unwrap();
    assert!(
        message.contains("20.11.0.3") && message.contains("21.07"),
        "{out}"
    );
    assert!(out["output"]["assist"]["minimum"] == "21.03", "{out}");

    // A recovery-key answer in a shape the plugin does not know.
    let mac = env.device("AppleOsX");
    let (status, out) = env
        .act(
            "view-recovery-key",
            &["Desk Lead"],
            json!({"device": {"id": mac.id}}),
        )
        .await;
    assert_eq!(status, 502, "{out}");
    let text = out.to_string();
    assert!(
        text.contains("without a recovery key field") && text.contains("PersonalRecoveryKey"),
        "{out}"
    );

    // Actions run on enrolled devices only; lookups too unless allowed.
    let mut gone = env.device("Android");
    gone.enrollment = "Unenrolled".into();
    env.uem.put_device(gone.clone());
    for action in ["lock-device", "console-link"] {
        let (status, out) = env
            .act(action, &["Desk Lead"], json!({"device": {"id": gone.id}}))
            .await;
        assert_eq!(status, 409, "{action}: {out}");
        assert!(out.to_string().contains("`Unenrolled`"), "{out}");
    }
    assert!(env.uem.commands().is_empty(), "{:?}", env.uem.commands());
    let (status, out) = env
        .act(
            "find-devices",
            &["Desk Lead"],
            json!({"device": {"id": gone.id}}),
        )
        .await;
    assert_eq!(status, 200, "a lookup still finds it: {out}");
}

/// Issue 19, uem-actions 3: an action launched from a ServiceNow
/// configuration item finds the device by the item's serial number, is
/// judged by the item's OS, and says which item it came from; an item
/// without a serial number, an unknown item, an item whose OS contradicts
/// UEM, and an instance without ServiceNow are refused, each saying why.
#[tokio::test]
async fn a_configuration_item_names_the_device_by_its_serial_number() {
    let env = setup().await;
    let laptop = env.device("WinRT");
    let ci = |name: &str, serial: &str, os: &str| {
        env.sn.insert(
            "cmdb_ci",
            &[("name", name), ("serial_number", serial), ("os", os)],
        )["sys_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let item = ci("LAPTOP-7", &laptop.serial, "Windows 11 Enterprise");
    let (status, out) = env
        .act(
            "lock-device",
            &["ITIL Agent"],
            json!({"device": {"ci": item}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let out = &out["output"];
    assert_eq!(out["device"]["id"], laptop.id);
    assert_eq!(out["configuration_item"]["sys_id"], item.as_str());
    assert_eq!(out["configuration_item"]["name"], "LAPTOP-7");
    assert_eq!(out["configuration_item"]["os_family"], "windows");
    let commands = env.uem.control().requests_to("/commands");
    assert_eq!(
        commands.last().unwrap().path,
        format!("/api/mdm/devices/{}/commands", laptop.id)
    );
    // find-devices takes an item too.
    let (status, out) = env
        .act(
            "find-devices",
            &["ITIL Agent"],
            json!({"device": {"ci": item}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["output"]["devices"][0]["id"], laptop.id, "{out}");
    // The item's OS decides what applies: a recovery key for Windows.
    let (status, out) = env
        .act(
            "view-recovery-key",
            &["ITIL Agent"],
            json!({"device": {"ci": item}}),
        )
        .await;
    assert_ne!(status, 409, "{out}");

    let sent = env.uem.control().requests_to("/commands").len();
    let refusals = [
        (
            json!({"ci": ci("NO-SERIAL", "", "Windows 10")}),
            409,
            "has no serial number",
        ),
        (
            json!({"ci": "0123456789abcdef0123456789abcdef"}),
            404,
            "ServiceNow has no configuration item 0123456789abcdef0123456789abcdef",
        ),
        (
            json!({"ci": ci("WRONG-OS", &laptop.serial, "Mac OS X 14")}),
            409,
            "configuration item WRONG-OS says macOS but UEM device",
        ),
        (json!({"ci": "sys_id!=0"}), 422, "/device/ci"),
    ];
    for (device, want, needle) in refusals {
        let (status, out) = env
            .act("lock-device", &["ITIL Agent"], json!({"device": device}))
            .await;
        assert_eq!(status, want, "{device}: {out}");
        assert!(out.to_string().contains(needle), "{device}: {out}");
    }
    assert_eq!(
        env.uem.control().requests_to("/commands").len(),
        sent,
        "no refused item reached UEM"
    );
    // An instance that does not reach ServiceNow cannot read an item.
    let (status, out) = env
        .act_globex(
            "lock-device",
            json!({"id": "agent.smith", "roles": ["Agent"]}),
            json!({"device": {"ci": item}}),
        )
        .await;
    assert_eq!(status, 422, "{out}");
    assert!(out.to_string().contains("servicenow_url"), "{out}");
}
