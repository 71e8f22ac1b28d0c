//! `uem-actions`: Workspace ONE UEM device actions for service desks.
//!
//! Helpdesk agents act on a caller's device from a ServiceNow incident, and
//! employees act on their own devices from the self-service catalog. The
//! host holds the UEM and ServiceNow credentials (OAuth2 client credentials,
//! or Basic with the `aw-tenant-code` header); this plugin never sees them.
//!
//! ## Actions
//! Every device action takes `{"device": {"id" | "serial" | "udid" | "email":
//! …}, "incident"?: {"sys_id"? , "number"?, "caller_email"?}, …}` and answers
//! `{"action", "device", "result", "audit_note", "work_note"}`. A device named
//! by email must be unique: a user with several devices gets 409 with the
//! list (pick one by id), or use `find-devices` first.
//!
//! | action | extra input | UEM call |
//! |---|---|---|
//! | `lock-device`, `soft-reset`, `sync-device` | | `POST /api/mdm/devices/{id}/commands?command=Lock\|SoftReset\|SyncDevice` |
//! | `device-wipe`, `enterprise-wipe` | `"confirm": true` | `…?command=DeviceWipe\|EnterpriseWipe` |
//! | `change-passcode` | `"passcode"` (4–16 characters) | `POST …/{id}/commands/changepasscode` |
//! | `find-device` | `"repetitions"?`, `"gap_secs"?` | `POST …/{id}/commands/finddevice` |
//! | `request-device-log` | `"source"?` (Agent/System/Network), `"duration_min"?` (≤ 720) | `POST …/commands/requestdevicelog?searchby=DeviceId&id=` |
//! | `send-message` | `"message"` | `POST …/messages/push?searchby=deviceid&id=` with the OS's channel |
//! | `view-recovery-key` | | FileVault key (macOS) or BitLocker recovery passwords (Windows) |
//! | `remote-assist` | | none: answers the Assist link of the device (`assist_url`) |
//! | `console-link` | | none: answers the UEM console URL of the device (`console_url`) |
//! | `add-device` | `"user_email"`, `"platform"`, `"serial"?`, `"friendly_name"?`, `"ownership"?` | `POST /api/system/users/{id}/registerdevice` |
//! | `find-devices` | `{"device": …}` | the matching devices |
//! | `verify-oauth-token` | | host obtains a token for the `uem` credential |
//! | `test-connection` | | `GET /api/system/info` → the UEM version |
//!
//! ## Policy (the seed's application defaults)
//! - Roles: see [`roles`] — standard, advanced, one per action,
//!   console-viewer, catalog roles (own devices only), admin.
//! - `actions` (config) lists the actions this tenant offers; others answer
//!   403 naming the setting.
//! - Caller-email validation (`validate_caller_email`, on by default): when
//!   an action comes from an incident, the incident caller's email (read
//!   from ServiceNow when it is configured, else `incident.caller_email`)
//!   must equal the device user's email, unless either address is in
//!   `email_exceptions` (semicolon-separated).
//! - Self-service (catalog roles): the device user's email must be the
//!   actor's.
//! - Actions that do not apply to the device's OS family (e.g. a recovery
//!   key on iOS) answer 409 naming the family.
//! - After each successful device action a note goes on the UEM device
//!   (`audit_note`, on by default): time, action, acting user, incident. With
//!   an incident and ServiceNow configured (`servicenow_url` and the
//!   `servicenow` credential), a work note records the action and its
//!   outcome, failures included. A note that cannot be written is reported
//!   in the answer; it does not undo the action.
//!
//! ## Choices where the fact sheet says [U]
//! Remote Assist has no documented UEM endpoint, so it answers a link built
//! from `assist_url` (`{assist_url}/devices/{udid}`) rather than calling
//! UEM; Add Device uses `registerdevice` with `{"LocationGroupId"?,
//! "FriendlyName", "Ownership", "PlatformId", "SerialNumber"?, "MessageType"}`.

mod os;
pub mod roles;
mod snow;
mod uem;

use serde_json::{Value, json};
use switchyard_sdk::{
    ActionSpec, ConfigSpec, Context, CredentialKind, CredentialSlot, Error, Manifest, Plugin,
    Result, config, credentials, log,
};

use roles::Grant;
use snow::{Incident, ServiceNow};
use uem::{Device, Selector, Uem};

/// The plugin.
pub struct UemActions;

const INPUT: &str = r#"{"type": "object", "required": ["device"], "properties": {
  "device": {"type": "object", "description": "id, serial, udid or email"},
  "incident": {"type": "object", "properties": {"sys_id": {"type": "string"}, "number": {"type": "string"}, "caller_email": {"type": "string"}}}
}}"#;

impl Plugin for UemActions {
    fn manifest() -> Manifest {
        let mut m = Manifest::new(
            "uem-actions",
            env!("CARGO_PKG_VERSION"),
            "Workspace ONE UEM device actions for service desks and self-service",
        );
        for (action, label) in roles::ACTIONS {
            let schema = match *action {
                "test-connection" | "verify-oauth-token" => json!({"type": "object"}),
                "add-device" => json!({"type": "object", "required": ["platform"], "properties": {
                    "user_email": {"type": "string"}, "platform": {"type": "string"},
                    "serial": {"type": "string"}, "friendly_name": {"type": "string"},
                    "ownership": {"enum": ["C", "E", "S"]}}}),
                _ => serde_json::from_str(INPUT).expect("static schema"),
            };
            // Roles are checked by the plugin (an action may be allowed by
            // several roles, and catalog roles only on own devices).
            m = m.action(ActionSpec::new(action, label).input_schema(schema));
        }
        m.config(ConfigSpec::required("api_url", "UEM REST API base URL, e.g. https://as1234.awmdm.com"))
            .config(ConfigSpec::optional("console_url", "UEM console base URL, for Console Link", ""))
            .config(ConfigSpec::optional("assist_url", "Workspace ONE Assist portal URL, for Remote Assist", ""))
            .config(ConfigSpec::optional("servicenow_url", "ServiceNow instance URL, for work notes and caller lookup", ""))
            .config(ConfigSpec::optional("actions", "Actions offered, comma-separated, or `all`", "all"))
            .config(ConfigSpec::optional("audit_note", "Write a note on the UEM device after each action (true/false)", "true"))
            .config(ConfigSpec::optional("validate_caller_email", "The incident caller must be the device's user (true/false)", "true"))
            .config(ConfigSpec::optional("email_exceptions", "Emails exempt from caller validation, semicolon-separated", ""))
            .credential(CredentialSlot::new(
                uem::CREDENTIAL,
                "Workspace ONE UEM API: OAuth2 client credentials, or Basic with the aw-tenant-code header",
                &[CredentialKind::Oauth2ClientCredentials, CredentialKind::Basic],
            ))
            .credential(
                CredentialSlot::new(
                    snow::CREDENTIAL,
                    "ServiceNow, for work notes on the incident",
                    &[CredentialKind::Basic, CredentialKind::Oauth2ClientCredentials],
                )
                .optional(),
            )
            .egress(None, "The UEM API host (config `api_url`) and token endpoint")
            .egress(None, "The ServiceNow instance (config `servicenow_url`), if used")
    }

    fn invoke(ctx: &Context, action: &str, input: Value) -> Result<Value> {
        if !roles::ACTIONS.iter().any(|(a, _)| *a == action) {
            return Err(Error::not_found(format!(
                "uem-actions has no action `{action}`"
            )));
        }
        if !enabled(action) {
            return Err(Error::forbidden(format!(
                "action `{action}` is not offered to this tenant (config `actions`)"
            )));
        }
        let actor = ctx.actor.as_ref();
        let roles: &[String] = actor.map_or(&[], |a| &a.roles);
        let Some(grant) = roles::authorize(action, roles) else {
            return Err(Error::forbidden(format!(
                "action `{action}` needs one of the roles allowed for it; the actor has [{}]",
                roles.join(", ")
            )));
        };
        let uem = Uem::new(&config::require("api_url")?);
        match action {
            "test-connection" => test_connection(&uem),
            "verify-oauth-token" => verify_token(),
            "find-devices" => find_devices(ctx, grant, &uem, &input),
            "add-device" => add_device(ctx, grant, &uem, &input),
            _ => device_action(ctx, grant, &uem, action, &input),
        }
    }
}

switchyard_sdk::register!(UemActions);

fn flag(key: &str) -> bool {
    config::get(key).is_none_or(|v| !matches!(v.trim(), "false" | "no" | "0" | "off"))
}

fn enabled(action: &str) -> bool {
    let list = config::get("actions").unwrap_or_else(|| "all".into());
    let list = list.trim();
    list.is_empty() || list == "all" || list.split([',', ';']).any(|a| a.trim() == action)
}

fn actor_name(ctx: &Context) -> String {
    ctx.actor
        .as_ref()
        .map(|a| a.email.clone().unwrap_or_else(|| a.id.clone()))
        .unwrap_or_else(|| "unknown".into())
}

fn actor_email(ctx: &Context) -> Result<String> {
    ctx.actor
        .as_ref()
        .and_then(|a| a.email.clone())
        .filter(|e| !e.is_empty())
        .ok_or_else(|| Error::forbidden("self-service actions need the actor's email"))
}

fn same_email(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

fn test_connection(uem: &Uem) -> Result<Value> {
    let info = uem
        .get("/system/info", "reading the system info")?
        .unwrap_or(Value::Null);
    let version = info["ProductVersion"]
        .as_str()
        .ok_or_else(|| Error::Upstream {
            status: None,
            message: "UEM's system info has no ProductVersion".into(),
            retry_after_secs: None,
        })?;
    Ok(json!({ "ok": true, "version": version }))
}

fn verify_token() -> Result<Value> {
    let v = credentials::verify(uem::CREDENTIAL)?;
    if v.kind != CredentialKind::Oauth2ClientCredentials {
        return Err(Error::conflict(
            "the `uem` credential is not OAuth2 client credentials; use Test Connection for Basic",
        ));
    }
    Ok(json!({ "ok": true, "expires_at_ms": v.expires_at_ms, "scope": v.scope }))
}

fn find_devices(ctx: &Context, grant: Grant, uem: &Uem, input: &Value) -> Result<Value> {
    let devices = match grant {
        // Employees see only their own devices, whatever they ask for.
        Grant::OwnDevices => uem.devices_of(&actor_email(ctx)?)?,
        Grant::Agent => uem.resolve(&Selector::parse(&input["device"])?)?,
    };
    Ok(json!({ "devices": devices }))
}

/// Resolves the one device an action targets.
fn one_device(uem: &Uem, input: &Value) -> Result<Device> {
    let sel = Selector::parse(&input["device"])?;
    let mut devices = uem.resolve(&sel)?;
    match devices.len() {
        0 => Err(Error::not_found(format!("UEM has no device for {sel:?}"))),
        1 => Ok(devices.remove(0)),
        n => {
            let list: Vec<String> = devices
                .iter()
                .map(|d| format!("{} ({} {})", d.id, d.model, d.os))
                .collect();
            Err(Error::conflict(format!(
                "{n} devices match; name one by id: {}",
                list.join(", ")
            )))
        }
    }
}

/// Applies the seed's policy: own devices for self-service, caller-email
/// validation for incident actions.
fn check_policy(
    ctx: &Context,
    grant: Grant,
    device: &Device,
    incident: Option<&Incident>,
) -> Result<()> {
    if grant == Grant::OwnDevices {
        let me = actor_email(ctx)?;
        if !same_email(&me, &device.email) {
            return Err(Error::forbidden(format!(
                "device {} is not enrolled to {me}; self-service acts on your own devices only",
                device.id
            )));
        }
        return Ok(());
    }
    let Some(inc) = incident else {
        return Ok(());
    };
    if !flag("validate_caller_email") {
        return Ok(());
    }
    let exceptions = config::get("email_exceptions").unwrap_or_default();
    let exempt = |e: &str| {
        exceptions
            .split(';')
            .any(|x| !x.trim().is_empty() && same_email(x, e))
    };
    let Some(caller) = inc.caller_email.as_deref() else {
        return Err(Error::invalid_input(format!(
            "incident {} has no caller email to validate against the device's user; \
             give incident.caller_email or configure ServiceNow",
            inc.name()
        )));
    };
    if same_email(caller, &device.email) || exempt(caller) || exempt(&device.email) {
        return Ok(());
    }
    Err(Error::forbidden(format!(
        "the caller of incident {} ({caller}) is not the user of device {} ({}); \
         add an exception in `email_exceptions` if this is expected",
        inc.name(),
        device.id,
        if device.email.is_empty() {
            "no email"
        } else {
            &device.email
        }
    )))
}

fn now_utc() -> String {
    time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
        ))
        .unwrap_or_else(|_| "unknown time".into())
}

fn device_action(
    ctx: &Context,
    grant: Grant,
    uem: &Uem,
    action: &str,
    input: &Value,
) -> Result<Value> {
    let label = roles::label(action);
    let mut incident = Incident::parse(&input["incident"])?;
    let snow = ServiceNow::configured(config::get("servicenow_url"));
    if let (Some(sn), Some(inc)) = (&snow, incident.as_mut()) {
        sn.load(inc)?;
    }
    let device = one_device(uem, input)?;
    check_policy(ctx, grant, &device, incident.as_ref())?;
    let family = device.os_family.ok_or_else(|| {
        Error::conflict(format!(
            "cannot tell the OS family of device {} (OperatingSystem `{}`, Platform `{}`)",
            device.id, device.os, device.platform
        ))
    })?;
    if !family.supports(action) {
        return Err(Error::conflict(format!(
            "{label} does not apply to {} devices (device {})",
            family.name(),
            device.id
        )));
    }

    let outcome = perform(uem, action, &device, family, input);
    let who = actor_name(ctx);
    let from = incident
        .as_ref()
        .map(|i| format!(" from incident {}", i.name()))
        .unwrap_or_default();
    let audit_note = match (&outcome, action) {
        (Ok(_), "console-link") => "not applicable".to_owned(),
        (Ok(_), _) if flag("audit_note") => {
            let text = format!("{}: {label} by {who}{from} (Switchyard)", now_utc());
            match uem.note(&device, &text) {
                Ok(_) => "written".into(),
                Err(e) => {
                    log::warn(format!("audit note on device {} failed: {e}", device.id));
                    format!("failed: {e}")
                }
            }
        }
        (Ok(_), _) => "disabled".into(),
        (Err(_), _) => "not written: the action failed".into(),
    };
    let work_note = match (&snow, &incident) {
        (Some(sn), Some(inc)) => {
            let result = match &outcome {
                Ok(_) => "succeeded".to_owned(),
                Err(e) => format!("failed: {e}"),
            };
            let text = format!(
                "Workspace ONE UEM: {label} on device {} for {} by {who} {result}.",
                device.describe(),
                if device.user.is_empty() {
                    "(no user)"
                } else {
                    &device.user
                },
            );
            match sn.work_note(inc, &text) {
                Ok(()) => "written".to_owned(),
                Err(e) => {
                    log::warn(format!("work note on {} failed: {e}", inc.name()));
                    format!("failed: {e}")
                }
            }
        }
        (None, Some(_)) => "skipped: ServiceNow is not configured".into(),
        _ => "skipped: no incident".into(),
    };
    let result = outcome?;
    Ok(json!({
        "action": action,
        "device": device,
        "result": result,
        "audit_note": audit_note,
        "work_note": work_note,
    }))
}

fn perform(
    uem: &Uem,
    action: &str,
    d: &Device,
    family: os::OsFamily,
    input: &Value,
) -> Result<Value> {
    let id = d.id;
    let sent = |command: &str| json!({ "command": command, "status": "sent" });
    match action {
        "lock-device" => uem.command(d, "Lock").map(|()| sent("Lock")),
        "soft-reset" => uem.command(d, "SoftReset").map(|()| sent("SoftReset")),
        "sync-device" => uem.command(d, "SyncDevice").map(|()| sent("SyncDevice")),
        "device-wipe" | "enterprise-wipe" => {
            if input["confirm"] != json!(true) {
                return Err(Error::invalid_input(format!(
                    "{} erases data on device {id}; repeat the request with \"confirm\": true",
                    roles::label(action)
                )));
            }
            let command = if action == "device-wipe" {
                "DeviceWipe"
            } else {
                "EnterpriseWipe"
            };
            uem.command(d, command).map(|()| sent(command))
        }
        "change-passcode" => {
            let passcode = input["passcode"].as_str().unwrap_or_default();
            if !(4..=16).contains(&passcode.chars().count()) {
                return Err(Error::invalid_input(
                    "`passcode` must be 4 to 16 characters",
                ));
            }
            uem.post(
                &format!("/mdm/devices/{id}/commands/changepasscode"),
                Some(&json!({ "Passcode": passcode })),
                &format!("changing the passcode of device {id}"),
            )?;
            Ok(sent("ChangePasscode"))
        }
        "find-device" => {
            let reps = input["repetitions"].as_u64().unwrap_or(3).clamp(1, 10);
            let gap = input["gap_secs"].as_u64().unwrap_or(10).clamp(1, 60);
            uem.post(
                &format!("/mdm/devices/{id}/commands/finddevice"),
                Some(&json!({"Platform": d.platform, "NumberOfRepetitions": reps, "GapBetweenRepetitions": gap})),
                &format!("finding device {id}"),
            )?;
            Ok(sent("FindDevice"))
        }
        "request-device-log" => {
            let source = input["source"].as_str().unwrap_or("Agent");
            if !matches!(source, "Agent" | "System" | "Network") {
                return Err(Error::invalid_input(
                    "`source` must be Agent, System or Network",
                ));
            }
            let minutes = input["duration_min"].as_u64().unwrap_or(30);
            if !(1..=720).contains(&minutes) {
                return Err(Error::invalid_input("`duration_min` must be 1 to 720"));
            }
            uem.post(
                &format!("/mdm/devices/commands/requestdevicelog?searchby=DeviceId&id={id}"),
                Some(&json!({"Source": source, "Level": "Debug", "Duration": minutes})),
                &format!("requesting the log of device {id}"),
            )?;
            Ok(sent("RequestDeviceLog"))
        }
        "send-message" => {
            let message = input["message"].as_str().map(str::trim).unwrap_or_default();
            if message.is_empty() {
                return Err(Error::invalid_input("`message` is required"));
            }
            let (app, kind) = family.message_channel().ok_or_else(|| {
                Error::conflict(format!("{} devices take no push messages", family.name()))
            })?;
            uem.post(
                &format!("/mdm/devices/messages/push?searchby=deviceid&id={id}"),
                Some(&json!({"MessageBody": message, "Application": app, "MessageType": kind})),
                &format!("sending a message to device {id}"),
            )?;
            Ok(json!({ "command": "SendMessage", "status": "sent", "channel": kind }))
        }
        "view-recovery-key" => recovery_key(uem, d, family),
        "console-link" => {
            let console = config::get("console_url").unwrap_or_default();
            if console.trim().is_empty() {
                return Err(Error::conflict(
                    "Console Link needs `console_url` in the configuration",
                ));
            }
            Ok(json!({
                "url": format!("{}/AirWatch/#/AirWatch/Device/Details/Summary/{id}", console.trim_end_matches('/'))
            }))
        }
        "remote-assist" => {
            let assist = config::get("assist_url").unwrap_or_default();
            if assist.trim().is_empty() {
                return Err(Error::conflict(
                    "Remote Assist needs `assist_url` in the configuration",
                ));
            }
            Ok(json!({
                "url": format!("{}/devices/{}", assist.trim_end_matches('/'), d.udid)
            }))
        }
        other => Err(Error::internal(format!("no handler for `{other}`"))),
    }
}

fn recovery_key(uem: &Uem, d: &Device, family: os::OsFamily) -> Result<Value> {
    let what = format!("the recovery key of device {}", d.id);
    match family {
        os::OsFamily::MacOs => {
            let v = uem
                .get(
                    &format!("/mdm/devices/{}/security/recovery-key", d.uuid),
                    &what,
                )?
                .unwrap_or(Value::Null);
            let key = v["RecoveryKey"].as_str().ok_or_else(|| {
                Error::not_found(format!("no FileVault key is escrowed for device {}", d.id))
            })?;
            Ok(json!({ "type": "FileVault", "keys": [{ "volume": "/", "key": key }] }))
        }
        os::OsFamily::Windows => {
            let drives = uem
                .get(&format!("/mdm/devices/{}/bitlocker/drives", d.uuid), &what)?
                .unwrap_or(Value::Null);
            let mut keys = Vec::new();
            for drive in drives["Drives"].as_array().into_iter().flatten() {
                let Some(volume) = drive["VolumeId"].as_str() else {
                    continue;
                };
                let vol = uem::enc(volume);
                let p = uem
                    .get(
                        &format!("/mdm/devices/{}/bitlocker/drives/{vol}/protectors", d.uuid),
                        &what,
                    )?
                    .unwrap_or(Value::Null);
                for prot in p["Protectors"].as_array().into_iter().flatten() {
                    if let Some(k) = prot["RecoveryPassword"].as_str() {
                        keys.push(json!({ "volume": volume, "key": k, "protector": prot["Id"] }));
                    }
                }
            }
            if keys.is_empty() {
                return Err(Error::not_found(format!(
                    "no BitLocker recovery password is escrowed for device {}",
                    d.id
                )));
            }
            Ok(json!({ "type": "BitLocker", "keys": keys }))
        }
        other => Err(Error::conflict(format!(
            "{} devices have no encryption recovery key",
            other.name()
        ))),
    }
}

fn add_device(ctx: &Context, grant: Grant, uem: &Uem, input: &Value) -> Result<Value> {
    let email = match grant {
        Grant::OwnDevices => actor_email(ctx)?,
        Grant::Agent => input["user_email"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::invalid_input("`user_email` is required"))?,
    };
    if grant == Grant::OwnDevices
        && let Some(other) = input["user_email"].as_str()
        && !same_email(other, &email)
    {
        return Err(Error::forbidden(
            "self-service adds devices for yourself only",
        ));
    }
    let platform_id = match input["platform"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "ios" | "apple" => 2,
        "android" => 5,
        "macos" | "mac" => 10,
        "windows" => 12,
        other => {
            return Err(Error::invalid_input(format!(
                "`platform` must be iOS, Android, macOS or Windows, not `{other}`"
            )));
        }
    };
    let ownership = input["ownership"].as_str().unwrap_or("C");
    if !matches!(ownership, "C" | "E" | "S") {
        return Err(Error::invalid_input("`ownership` must be C, E or S"));
    }
    let user = uem
        .users_with_email(&email)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::not_found(format!("UEM has no user with email {email}")))?;
    let user_id = user["Id"]["Value"]
        .as_i64()
        .ok_or_else(|| Error::upstream("UEM sent a user without Id.Value"))?;
    let mut body = json!({
        "FriendlyName": input["friendly_name"].as_str().unwrap_or("Registered via Switchyard"),
        "Ownership": ownership,
        "PlatformId": platform_id,
        "MessageType": 0,
    });
    if let Some(serial) = input["serial"].as_str() {
        body["SerialNumber"] = json!(serial);
    }
    let r = uem.post(
        &format!("/system/users/{user_id}/registerdevice"),
        Some(&body),
        &format!("registering a device for {email}"),
    )?;
    let registration = r.json::<Value>().ok().and_then(|v| v["Value"].as_i64());
    log::info(format!(
        "device registered for {email} by {}",
        actor_name(ctx)
    ));
    Ok(json!({ "action": "add-device", "user": email, "registration": registration }))
}
