//! `uem-actions`: Workspace ONE UEM device actions for service desks.
//!
//! Helpdesk agents act on a caller's device from a ServiceNow incident, and
//! employees act on their own devices from the self-service catalog. The
//! host holds the UEM and ServiceNow credentials (OAuth2 client credentials,
//! or Basic with the `aw-tenant-code` header); this plugin never sees them.
//!
//! ## Actions
//! Every device action takes `{"device": {"id" | "serial" | "udid" | "email"
//! | "ci": …}, "incident"?: {"sys_id"? , "number"?, "caller_email"?}, …}` and
//! answers `{"action", "device", "result", "audit_note", "work_note",
//! "configuration_item"?}`. A device named by email must be unique: a user
//! with several devices gets 409 with the list (pick one by id), or use
//! `find-devices` first. `ci` is the sys_id of a ServiceNow configuration
//! item (`cmdb_ci`), as the seed launches actions from a CI record: its
//! `serial_number` names the device, and its `os`, when set, the OS family
//! the action is judged by (a UEM device of another family is refused with
//! 409: the item's serial number would be wrong). See [`ci`].
//!
//! Each action's input is a type (see `actions.rs`): its JSON Schema is
//! generated into the manifest, and the host refuses input that does not
//! match it (422, naming where) before the plugin runs. UEM and ServiceNow
//! are reached through the shared `switchyard-uem` and
//! `switchyard-servicenow` clients.
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
//! | `test-connection` | | `GET /api/system/info` → the UEM version, compared with 21.07 |
//! | `view-configuration` | | none: the instance's settings and credential names, kinds and hosts (never a secret) |
//!
//! ## Policy (the seed's application defaults)
//! - Roles: see [`roles`] — standard, advanced, one per action,
//!   console-viewer, catalog roles (own devices only), admin.
//! - Two action lists, as in the seed: `admin_actions` for UEM
//!   administrators (actors holding `admin`) and `service_desk_actions`
//!   (older name `actions`) for everyone else; an action not in the
//!   actor's list answers 403 naming the setting.
//! - Caller-email validation (`validate_caller_email`, on by default): when
//!   an action comes from an incident, the incident caller's email (read
//!   from ServiceNow when it is configured, else `incident.caller_email`)
//!   must equal the device user's email, unless either address is in
//!   `email_exceptions` (semicolon-separated).
//! - Self-service (catalog roles): the device user's email must be the
//!   actor's.
//! - Actions that do not apply to the device's OS family (e.g. a recovery
//!   key on iOS) answer 409 naming the family.
//! - Actions run on enrolled devices only (the seed): a device whose
//!   `EnrollmentStatus` is not `Enrolled` answers 409 naming the status.
//!   `allow_unenrolled_lookups` lets the read-only actions (console-link,
//!   view-recovery-key) through; `find-devices` always lists.
//! - Test Connection compares UEM's version with the seed's minimum (2107,
//!   i.e. 21.07) and says `supported: false` with the reason when it is
//!   older; Assist (21.03+ when `assist_url` is set) reports no version
//!   through an API, so the answer says what to check.
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

mod actions;
mod ci;
mod incident;
mod os;
pub mod roles;

use serde_json::{Value, json};
use switchyard_sdk::{
    ConfigSpec, Context, CredentialKind, Error, Manifest, Plugin, Result, config, credentials, log,
};
use switchyard_servicenow::ServiceNow;
use switchyard_uem::{Device, OsFamily, Uem};

use incident::Incident;
use roles::Grant;

/// The plugin.
pub struct UemActions;

impl Plugin for UemActions {
    fn manifest() -> Manifest {
        let m = Manifest::new(
            "uem-actions",
            env!("CARGO_PKG_VERSION"),
            "Workspace ONE UEM device actions for service desks and self-service",
        );
        // Roles are checked by the plugin (an action may be allowed by
        // several roles, and catalog roles only on own devices).
        let m = actions::declare_actions(m);
        // The action lists name actions this plugin has, or `all`.
        let names: Vec<String> = m.actions.iter().map(|a| a.name.clone()).collect();
        let names: Vec<&str> = std::iter::once("all")
            .chain(names.iter().map(String::as_str))
            .collect();
        m.config(ConfigSpec::required("api_url", "UEM REST API base URL, e.g. https://as1234.awmdm.com").url())
            .config(ConfigSpec::optional("console_url", "UEM console base URL, for Console Link", "").url())
            .config(ConfigSpec::optional("assist_url", "Workspace ONE Assist portal URL, for Remote Assist", "").url())
            .config(ConfigSpec::optional("servicenow_url", "ServiceNow instance URL, for work notes and caller lookup", "").url())
            .config(ConfigSpec::optional("actions", "Actions offered to the service desk, comma-separated, or `all` (older name of service_desk_actions)", "all").list_of(&names))
            .config(ConfigSpec::optional(
                "service_desk_actions",
                "Actions offered to actors without the admin role, comma-separated, or `all`; empty: the `actions` setting",
                "",
            ).list_of(&names))
            .config(ConfigSpec::optional(
                "admin_actions",
                "Actions offered to UEM administrators (actors with the admin role), comma-separated, or `all`",
                "all",
            ).list_of(&names))
            .config(ConfigSpec::optional("audit_note", "Write a note on the UEM device after each action (true/false)", "true").boolean())
            .config(ConfigSpec::optional("validate_caller_email", "The incident caller must be the device's user (true/false)", "true").boolean())
            .config(ConfigSpec::optional("email_exceptions", "Emails exempt from caller validation, semicolon-separated", ""))
            .config(ConfigSpec::optional(
                "allow_unenrolled_lookups",
                "Allow the read-only actions (console-link, view-recovery-key) on devices that are not enrolled (true/false)",
                "false",
            ).boolean())
            .credential(switchyard_uem::credential_slot(
                "Workspace ONE UEM API: OAuth2 client credentials, or Basic with the aw-tenant-code header",
            ))
            .credential(
                switchyard_servicenow::credential_slot("ServiceNow, for work notes on the incident")
                    .optional(),
            )
            .egress(None, "The UEM API host (config `api_url`) and token endpoint")
            .egress(None, "The ServiceNow instance (config `servicenow_url`), if used")
    }

    fn invoke(ctx: &Context, action: &str, input: Value) -> Result<Value> {
        // Every action is offered and allowed first, before its input is
        // looked at: no action can skip the role check. (The host has
        // already checked the input's schema.)
        if roles::ACTIONS.iter().any(|(a, _)| *a == action) {
            admit(ctx, action)?;
        }
        actions::dispatch_action(ctx, action, input)
    }
}

switchyard_sdk::register!(UemActions);

/// Checks that the tenant offers `action` and the actor's roles allow it;
/// gives the grant and the UEM client.
fn admit(ctx: &Context, action: &str) -> Result<(Grant, Uem)> {
    let roles: &[String] = ctx.actor.as_ref().map_or(&[], |a| &a.roles);
    let (setting, list) = offered_list(roles);
    if !in_list(&list, action) {
        return Err(Error::forbidden(format!(
            "action `{action}` is not offered to {} (config `{setting}`)",
            if setting == "admin_actions" {
                "UEM administrators"
            } else {
                "the service desk"
            }
        )));
    }
    let Some(grant) = roles::authorize(action, roles) else {
        return Err(Error::forbidden(format!(
            "action `{action}` needs one of the roles allowed for it; the actor has [{}]",
            roles.join(", ")
        )));
    };
    Ok((grant, Uem::new(&config::require("api_url")?)))
}

fn flag(key: &str) -> bool {
    config::get(key).is_none_or(|v| !matches!(v.trim(), "false" | "no" | "0" | "off"))
}

/// A switch that is off unless set to true.
fn flag_on(key: &str) -> bool {
    config::get(key).is_some_and(|v| matches!(v.trim(), "true" | "yes" | "1" | "on"))
}

/// Actions that only read, allowed on unenrolled devices when
/// `allow_unenrolled_lookups` is on.
const LOOKUPS: &[&str] = &["console-link", "view-recovery-key"];

/// The seed: actions run on enrolled devices only. UEM's `EnrollmentStatus`
/// must say `Enrolled`; a device whose answer has no status at all (an
/// older API version) is not refused on that account.
fn check_enrolled(action: &str, device: &Device) -> Result<()> {
    let status = device.enrollment.trim();
    if status.is_empty() || status.eq_ignore_ascii_case("enrolled") {
        return Ok(());
    }
    if LOOKUPS.contains(&action) && flag_on("allow_unenrolled_lookups") {
        return Ok(());
    }
    Err(Error::conflict(format!(
        "device {} is not enrolled (UEM says `{status}`); actions run on enrolled devices only",
        device.id
    )))
}

/// The oldest UEM the seed supports: 2107 (21.07).
const MIN_UEM: (u32, u32) = (21, 7);

/// Whether UEM's `ProductVersion` (`24.10.0.7`; `2107`-style also read) is
/// at least [`MIN_UEM`]; None when it cannot be read.
fn uem_supported(version: &str) -> Option<bool> {
    let mut parts = version.trim().split('.');
    let first = parts.next()?.trim();
    let (major, minor) = if first.len() == 4 && !version.contains('.') {
        (first[..2].parse().ok()?, first[2..].parse().ok()?)
    } else {
        (first.parse().ok()?, parts.next()?.trim().parse().ok()?)
    };
    Some((major, minor) >= MIN_UEM)
}

/// The seed's two action lists: one for UEM administrators (actors holding
/// the `admin` role), one for the service desk (everyone else). Which
/// setting applies, and its value.
fn offered_list(roles: &[String]) -> (&'static str, String) {
    if roles.iter().any(|r| r == "admin") {
        return (
            "admin_actions",
            config::get("admin_actions").unwrap_or_else(|| "all".into()),
        );
    }
    match config::get("service_desk_actions").filter(|v| !v.trim().is_empty()) {
        Some(list) => ("service_desk_actions", list),
        None => (
            "actions",
            config::get("actions").unwrap_or_else(|| "all".into()),
        ),
    }
}

fn in_list(list: &str, action: &str) -> bool {
    let list = list.trim();
    list.is_empty() || list == "all" || list.split([',', ';']).any(|a| a.trim() == action)
}

/// The instance's settings and credential metadata, never a secret: the
/// seed's "Validate Connection" view for a setup screen.
fn view_configuration() -> Value {
    let settings: serde_json::Map<String, Value> = config::all()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let creds: Vec<Value> = credentials::list()
        .into_iter()
        .map(|c| {
            let kind = match c.kind {
                CredentialKind::Oauth2ClientCredentials => "oauth2-client-credentials",
                CredentialKind::Basic => "basic",
                CredentialKind::ApiKey => "api-key",
                CredentialKind::Bearer => "bearer",
            };
            json!({ "name": c.name, "kind": kind, "hosts": c.hosts })
        })
        .collect();
    json!({ "settings": settings, "credentials": creds })
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
    let version = uem.version()?;
    let min = format!("{}.{:02}", MIN_UEM.0, MIN_UEM.1);
    let (supported, message) = match uem_supported(&version) {
        Some(true) => (
            Some(true),
            format!("UEM {version} is supported ({min} or later)"),
        ),
        Some(false) => (
            Some(false),
            format!(
                "UEM {version} is older than {min} (2107), the oldest this integration supports"
            ),
        ),
        None => (
            None,
            format!("UEM reports version `{version}`, which cannot be compared with {min}"),
        ),
    };
    let mut out = json!({
        "ok": supported != Some(false),
        "version": version,
        "supported": supported,
        "message": message,
    });
    // Assist has no documented version API; say what the seed requires.
    if config::get("assist_url").is_some_and(|u| !u.trim().is_empty()) {
        out["assist"] = json!({
            "minimum": "21.03",
            "message": "Workspace ONE Assist reports no version through an API: check that it is 21.03 or later",
        });
    }
    Ok(out)
}

fn verify_token() -> Result<Value> {
    let v = credentials::verify(switchyard_uem::CREDENTIAL)?;
    if v.kind != CredentialKind::Oauth2ClientCredentials {
        return Err(Error::conflict(
            "the `uem` credential is not OAuth2 client credentials; use Test Connection for Basic",
        ));
    }
    Ok(json!({ "ok": true, "expires_at_ms": v.expires_at_ms, "scope": v.scope }))
}

fn find_devices(
    ctx: &Context,
    grant: Grant,
    uem: &Uem,
    device: Option<&ci::DeviceRef>,
) -> Result<Value> {
    let devices = match (grant, device) {
        // Employees see only their own devices, whatever they ask for.
        (Grant::OwnDevices, _) => uem.devices_of(&actor_email(ctx)?)?,
        (Grant::Agent, Some(ci::DeviceRef::Uem(sel))) => uem.resolve(sel)?,
        (Grant::Agent, Some(r @ ci::DeviceRef::Ci(_))) => {
            let snow = ServiceNow::configured(config::get("servicenow_url"));
            vec![ci::resolve(uem, snow.as_ref(), r)?.0]
        }
        (Grant::Agent, None) => {
            return Err(Error::invalid_input(
                "`device` must name the device by `id`, `serial`, `udid`, `email` or `ci`",
            ));
        }
    };
    Ok(json!({ "devices": devices }))
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

/// Runs a device action: resolves the device, applies the policy and the
/// OS-family gate, runs `perform`, and records the outcome in a note on
/// the device and a work note on the incident (failures included).
fn device_action(
    ctx: &Context,
    action: &str,
    target: actions::Target,
    perform: impl FnOnce(&Uem, &Device, OsFamily) -> Result<Value>,
) -> Result<Value> {
    let (grant, uem) = admit(ctx, action)?;
    let label = roles::label(action);
    let mut incident = Some(target.incident).filter(Incident::is_named);
    let snow = ServiceNow::configured(config::get("servicenow_url"));
    if let (Some(sn), Some(inc)) = (&snow, incident.as_mut()) {
        inc.load(sn)?;
    }
    let (device, item) = ci::resolve(&uem, snow.as_ref(), &target.device)?;
    check_policy(ctx, grant, &device, incident.as_ref())?;
    check_enrolled(action, &device)?;
    let family = ci::family(&device, item.as_ref())?;
    if !os::supports(family, action) {
        return Err(Error::conflict(format!(
            "{label} does not apply to {} devices (device {})",
            family.name(),
            device.id
        )));
    }

    let outcome = perform(&uem, &device, family);
    let who = actor_name(ctx);
    let from = incident
        .as_ref()
        .map(|i| format!(" from incident {}", i.name()))
        .unwrap_or_default();
    let audit_note = match (&outcome, action) {
        (Ok(_), "console-link") => "not applicable".to_owned(),
        (Ok(_), _) if flag("audit_note") => {
            let text = format!("{}: {label} by {who}{from} (Switchyard)", now_utc());
            match uem.note(device.id, &text) {
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
            match inc.work_note(sn, &text) {
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
    let mut answer = json!({
        "action": action,
        "device": device,
        "result": result,
        "audit_note": audit_note,
        "work_note": work_note,
    });
    if let Some(item) = item {
        answer["configuration_item"] = json!(item);
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::uem_supported;

    #[test]
    fn uem_versions_are_compared_with_2107() {
        assert_eq!(uem_supported("24.10.0.7"), Some(true));
        assert_eq!(uem_supported("21.07.0.1"), Some(true));
        assert_eq!(uem_supported("21.06"), Some(false));
        assert_eq!(uem_supported("20.11.0.3"), Some(false));
        assert_eq!(uem_supported("2107"), Some(true));
        assert_eq!(uem_supported("2011"), Some(false));
        assert_eq!(uem_supported("unknown"), None);
    }
}
