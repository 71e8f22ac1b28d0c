//! The actions as types: each one's input (whose generated JSON Schema the
//! host enforces) and what it does.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard_sdk::schemars::JsonSchema;
use switchyard_sdk::{Context, Error, Result, config, log};
use switchyard_uem::{Device, OsFamily, Uem, segment};

use crate::incident::Incident;
use crate::roles::{self, Grant};
use crate::{actor_email, actor_name, admit, device_action, find_devices, same_email};

/// What every device action takes.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
pub struct Target {
    /// The device (by UEM, or by a ServiceNow configuration item).
    pub device: crate::ci::DeviceRef,
    /// The incident the action is taken from: its caller must be the
    /// device's user (unless exempt), and a work note records the action.
    // Not an Option: a schema of "Incident or null" would make a wrong
    // sys_id read "not valid under anyOf" instead of naming the field
    // (Incident's own schema admits null).
    #[serde(default, deserialize_with = "crate::incident::null_is_none")]
    pub incident: Incident,
}

/// A wipe: the target, and the confirmation that data is to be erased.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
pub struct WipeInput {
    #[serde(flatten)]
    target: Target,
    /// Must be true: the wipe erases data on the device.
    #[serde(default)]
    confirm: bool,
}

/// Change Passcode.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
pub struct PasscodeInput {
    #[serde(flatten)]
    target: Target,
    /// The new passcode.
    #[schemars(length(min = 4, max = 16))]
    passcode: String,
}

/// Find Device (sound on the device).
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
pub struct FindInput {
    #[serde(flatten)]
    target: Target,
    /// How many times the sound plays (default 3; 1 to 10, larger or
    /// smaller values are brought into range).
    #[serde(default = "three")]
    repetitions: u32,
    /// Seconds between repetitions (default 10; 1 to 60, brought into
    /// range).
    #[serde(default = "ten")]
    gap_secs: u32,
}

fn three() -> u32 {
    3
}

fn ten() -> u32 {
    10
}

/// Which log the device sends.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
pub enum LogSource {
    /// The Hub agent's log.
    #[default]
    Agent,
    /// The system log.
    System,
    /// The network log.
    Network,
}

/// Request Device Log.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
pub struct LogInput {
    #[serde(flatten)]
    target: Target,
    /// Which log (default Agent).
    #[serde(default)]
    source: LogSource,
    /// Minutes of logging (default 30).
    #[serde(default = "thirty")]
    #[schemars(range(min = 1, max = 720))]
    duration_min: u32,
}

fn thirty() -> u32 {
    30
}

/// Send Message.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
pub struct MessageInput {
    #[serde(flatten)]
    target: Target,
    /// The message shown on the device.
    #[schemars(length(min = 1))]
    message: String,
}

/// Device ownership in UEM.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
pub enum Ownership {
    /// Corporate-dedicated.
    #[default]
    C,
    /// Employee-owned.
    E,
    /// Corporate-shared.
    S,
}

/// Add Device.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
pub struct AddDeviceInput {
    /// Whose device (agents; self-service adds for the actor).
    #[serde(default)]
    user_email: Option<String>,
    /// iOS, Android, macOS or Windows.
    platform: String,
    /// Serial number, if known.
    #[serde(default)]
    serial: Option<String>,
    /// The name shown in UEM.
    #[serde(default)]
    friendly_name: Option<String>,
    /// Ownership (default C).
    #[serde(default)]
    ownership: Ownership,
}

/// Find Devices.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
pub struct FindDevicesInput {
    /// Which devices (agents: `id`, `serial`, `udid`, `email` or `ci`);
    /// self-service lists the actor's own whatever this says.
    #[serde(default)]
    device: Option<serde_json::Map<String, Value>>,
}

/// No input.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
pub struct NoInput {}

fn sent(command: &str) -> Value {
    json!({ "command": command, "status": "sent" })
}

switchyard_sdk::actions! {
    ChangePasscode = "change-passcode", "Change Passcode" => |ctx, input: PasscodeInput| -> Value {
        device_action(ctx, Self::NAME, input.target, |uem, d, _| {
            uem.post(
                &format!("/mdm/devices/{}/commands/changepasscode", d.id),
                Some(&json!({ "Passcode": input.passcode })),
                &format!("changing the passcode of device {}", d.id),
            )?;
            Ok(sent("ChangePasscode"))
        })
    }
    LockDevice = "lock-device", "Lock Device" => |ctx, input: Target| -> Value {
        command(ctx, Self::NAME, input, "Lock")
    }
    RemoteAssist = "remote-assist", "Remote Assist" => |ctx, input: Target| -> Value {
        device_action(ctx, Self::NAME, input, |_, d, _| {
            let assist = configured_url("assist_url", "Remote Assist")?;
            Ok(json!({ "url": format!("{assist}/devices/{}", d.udid) }))
        })
    }
    RequestDeviceLog = "request-device-log", "Request Device Log" => |ctx, input: LogInput| -> Value {
        device_action(ctx, Self::NAME, input.target, |uem, d, _| {
            uem.post(
                &format!("/mdm/devices/commands/requestdevicelog?searchby=DeviceId&id={}", d.id),
                Some(&json!({"Source": input.source, "Level": "Debug", "Duration": input.duration_min})),
                &format!("requesting the log of device {}", d.id),
            )?;
            Ok(sent("RequestDeviceLog"))
        })
    }
    SendMessage = "send-message", "Send Message" => |ctx, input: MessageInput| -> Value {
        let message = input.message.trim().to_owned();
        if message.is_empty() {
            return Err(Error::invalid_input("`message` is required"));
        }
        device_action(ctx, Self::NAME, input.target, |uem, d, family| {
            let (app, kind) = family.message_channel().ok_or_else(|| {
                Error::conflict(format!("{} devices take no push messages", family.name()))
            })?;
            uem.post(
                &format!("/mdm/devices/messages/push?searchby=deviceid&id={}", d.id),
                Some(&json!({"MessageBody": message, "Application": app, "MessageType": kind})),
                &format!("sending a message to device {}", d.id),
            )?;
            Ok(json!({ "command": "SendMessage", "status": "sent", "channel": kind }))
        })
    }
    SoftReset = "soft-reset", "Soft Reset" => |ctx, input: Target| -> Value {
        command(ctx, Self::NAME, input, "SoftReset")
    }
    SyncDevice = "sync-device", "Sync Device" => |ctx, input: Target| -> Value {
        command(ctx, Self::NAME, input, "SyncDevice")
    }
    FindDevice = "find-device", "Find Device" => |ctx, input: FindInput| -> Value {
        device_action(ctx, Self::NAME, input.target, |uem, d, _| {
            uem.post(
                &format!("/mdm/devices/{}/commands/finddevice", d.id),
                Some(&json!({
                    "Platform": d.platform,
                    "NumberOfRepetitions": input.repetitions.clamp(1, 10),
                    "GapBetweenRepetitions": input.gap_secs.clamp(1, 60),
                })),
                &format!("finding device {}", d.id),
            )?;
            Ok(sent("FindDevice"))
        })
    }
    ViewRecoveryKey = "view-recovery-key", "View Encryption Recovery Key" => |ctx, input: Target| -> Value {
        device_action(ctx, Self::NAME, input, recovery_key)
    }
    AddDevice = "add-device", "Add Device" => |ctx, input: AddDeviceInput| -> Value {
        let (grant, uem) = admit(ctx, Self::NAME)?;
        add_device(ctx, grant, &uem, input)
    }
    DeviceWipe = "device-wipe", "Device Wipe" => |ctx, input: WipeInput| -> Value {
        wipe(ctx, Self::NAME, input, "DeviceWipe")
    }
    EnterpriseWipe = "enterprise-wipe", "Enterprise Wipe" => |ctx, input: WipeInput| -> Value {
        wipe(ctx, Self::NAME, input, "EnterpriseWipe")
    }
    ConsoleLink = "console-link", "Console Link" => |ctx, input: Target| -> Value {
        device_action(ctx, Self::NAME, input, |_, d, _| {
            let console = configured_url("console_url", "Console Link")?;
            Ok(json!({
                "url": format!("{console}/AirWatch/#/AirWatch/Device/Details/Summary/{}", d.id)
            }))
        })
    }
    VerifyOauthToken = "verify-oauth-token", "Verify OAuth Token" => |ctx, _input: NoInput| -> Value {
        admit(ctx, Self::NAME)?;
        crate::verify_token()
    }
    TestConnection = "test-connection", "Test Connection" => |ctx, _input: NoInput| -> Value {
        let (_, uem) = admit(ctx, Self::NAME)?;
        crate::test_connection(&uem)
    }
    ViewConfiguration = "view-configuration", "View Configuration" => |ctx, _input: NoInput| -> Value {
        admit(ctx, Self::NAME)?;
        Ok(crate::view_configuration())
    }
    FindDevices = "find-devices", "Find Devices" => |ctx, input: FindDevicesInput| -> Value {
        let (grant, uem) = admit(ctx, Self::NAME)?;
        let device = match (grant, input.device) {
            (Grant::Agent, Some(d)) => Some(
                serde_json::from_value::<crate::ci::DeviceRef>(Value::Object(d))
                    .map_err(|e| Error::invalid_input(e.to_string()))?,
            ),
            _ => None,
        };
        find_devices(ctx, grant, &uem, device.as_ref())
    }
}

/// The URL configured under `key` (without a trailing `/`), which the
/// action `label` needs: `conflict` naming the key when it is not set.
fn configured_url(key: &str, label: &str) -> Result<String> {
    let url = config::get(key).unwrap_or_default();
    let url = url.trim().trim_end_matches('/');
    if url.is_empty() {
        return Err(Error::conflict(format!(
            "{label} needs `{key}` in the configuration"
        )));
    }
    Ok(url.to_owned())
}

/// A device command with no body (`Lock`, `SoftReset`, `SyncDevice`).
fn command(ctx: &Context, action: &str, target: Target, command: &str) -> Result<Value> {
    device_action(ctx, action, target, |uem, d, _| {
        uem.command(d.id, command).map(|()| sent(command))
    })
}

fn wipe(ctx: &Context, action: &str, input: WipeInput, command: &str) -> Result<Value> {
    // Checked before anything is looked up: a wipe without confirmation
    // never reaches UEM. The error says how to confirm.
    if !input.confirm {
        admit(ctx, action)?;
        return Err(Error::invalid_input(format!(
            "{} erases data on the device; repeat the request with \"confirm\": true",
            roles::label(action)
        )));
    }
    device_action(ctx, action, input.target, |uem, d, _| {
        uem.command(d.id, command).map(|()| sent(command))
    })
}

fn recovery_key(uem: &Uem, d: &Device, family: OsFamily) -> Result<Value> {
    let what = format!("the recovery key of device {}", d.id);
    match family {
        OsFamily::MacOs => {
            let v = uem
                .get(
                    &format!(
                        "/mdm/devices/{}/security/recovery-key",
                        segment("device UUID", &d.uuid)?
                    ),
                    &what,
                )?
                .unwrap_or(Value::Null);
            // A shape this plugin does not know is not "no key": say what
            // UEM sent instead.
            let key = match &v["RecoveryKey"] {
                Value::String(k) if !k.is_empty() => k.clone(),
                Value::Null if v.get("RecoveryKey").is_some() || v.is_null() => {
                    return Err(Error::not_found(format!(
                        "no FileVault key is escrowed for device {}",
                        d.id
                    )));
                }
                Value::String(_) => {
                    return Err(Error::not_found(format!(
                        "no FileVault key is escrowed for device {}",
                        d.id
                    )));
                }
                _ => {
                    let fields: Vec<String> = v
                        .as_object()
                        .map(|o| o.keys().cloned().collect())
                        .unwrap_or_default();
                    return Err(Error::upstream(format!(
                        "UEM answered without a recovery key field (RecoveryKey) for device {}; \
                         its answer has: {}",
                        d.id,
                        if fields.is_empty() {
                            "no fields".to_owned()
                        } else {
                            fields.join(", ")
                        }
                    )));
                }
            };
            Ok(json!({ "type": "FileVault", "keys": [{ "volume": "/", "key": key }] }))
        }
        OsFamily::Windows => {
            let uuid = segment("device UUID", &d.uuid)?;
            let drives = uem
                .get(&format!("/mdm/devices/{uuid}/bitlocker/drives"), &what)?
                .unwrap_or(Value::Null);
            let mut keys = Vec::new();
            for drive in drives["Drives"].as_array().into_iter().flatten() {
                let Some(volume) = drive["VolumeId"].as_str() else {
                    continue;
                };
                let p = uem
                    .get(
                        &format!(
                            "/mdm/devices/{uuid}/bitlocker/drives/{}/protectors",
                            segment("BitLocker volume", volume)?
                        ),
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

fn add_device(ctx: &Context, grant: Grant, uem: &Uem, input: AddDeviceInput) -> Result<Value> {
    let email = match grant {
        Grant::OwnDevices => actor_email(ctx)?,
        Grant::Agent => input
            .user_email
            .clone()
            .ok_or_else(|| Error::invalid_input("`user_email` is required"))?,
    };
    if grant == Grant::OwnDevices
        && let Some(other) = &input.user_email
        && !same_email(other, &email)
    {
        return Err(Error::forbidden(
            "self-service adds devices for yourself only",
        ));
    }
    let platform_id = match input.platform.to_ascii_lowercase().as_str() {
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
    let user = uem
        .users_with_email(&email)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::not_found(format!("UEM has no user with email {email}")))?;
    let user_id = user["Id"]["Value"]
        .as_i64()
        .ok_or_else(|| Error::upstream("UEM sent a user without Id.Value"))?;
    let mut body = json!({
        "FriendlyName": input.friendly_name.as_deref().unwrap_or("Registered via Switchyard"),
        "Ownership": input.ownership,
        "PlatformId": platform_id,
        "MessageType": 0,
    });
    if let Some(serial) = &input.serial {
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

#[cfg(test)]
mod tests {
    use switchyard_uem::Selector;

    use super::*;

    /// The typed actions are exactly the actions the role model knows, with
    /// the same labels, so no action escapes the role check.
    #[test]
    fn every_action_is_declared_once_with_its_label() {
        assert_eq!(DECLARED_ACTIONS.len(), roles::ACTIONS.len());
        for (name, label) in roles::ACTIONS {
            assert!(DECLARED_ACTIONS.contains(&(*name, *label)), "{name}");
        }
    }

    #[test]
    fn inputs_are_typed_and_checked_by_their_schema() {
        let m = declare_actions(switchyard_sdk::Manifest::new("x", "0", "x"));
        let schema = |name: &str| -> Value {
            let a = m.actions.iter().find(|a| a.name == name).unwrap();
            serde_json::from_str(&a.input_schema).unwrap()
        };
        let passcode = schema("change-passcode");
        assert_eq!(
            passcode["properties"]["passcode"]["minLength"], 4,
            "{passcode}"
        );
        assert!(
            passcode["required"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "device"),
            "{passcode}"
        );
        let log = schema("request-device-log");
        assert_eq!(log["properties"]["duration_min"]["maximum"], 720, "{log}");
        let lock = schema("lock-device");
        // The incident's sys_id carries its pattern (in `$defs`).
        assert_eq!(
            lock["$defs"]["Incident"]["properties"]["sys_id"]["pattern"],
            r"^\s*([0-9a-fA-F]{32})?\s*$",
            "{lock}"
        );
        let wipe: WipeInput =
            serde_json::from_value(json!({"device": {"id": "5"}, "confirm": true})).unwrap();
        assert_eq!(
            wipe.target.device,
            crate::ci::DeviceRef::Uem(Selector::Id(5))
        );
        assert!(
            serde_json::from_value::<LogInput>(json!({"device": {"id": 1}, "source": "Kernel"}))
                .is_err()
        );
    }
}
