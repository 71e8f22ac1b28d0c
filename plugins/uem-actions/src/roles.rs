//! The seed's role model. Roles here are plugin roles: the host has already
//! mapped the tenant's own role names onto them (`[roles]` in the tenant
//! file), so a tenant calls its agents "ITIL Agent" or anything else.
//!
//! | role | may |
//! |---|---|
//! | `advanced` | every device action |
//! | `standard` | every device action but the two wipes |
//! | `<action>` (e.g. `lock-device`) | that action |
//! | `console-viewer` | `console-link` |
//! | `catalog-all` | the self-service actions, on the actor's own devices |
//! | `catalog-<action>` | that self-service action, on the actor's own devices |
//! | `admin` | `test-connection`, `verify-oauth-token`, `view-configuration` (as does `advanced`) |
//!
//! Self-service actions: add-device, change-passcode, find-device,
//! lock-device, sync-device, view-recovery-key.

/// Whether an actor may act on any device or only on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// An agent: any device (subject to caller-email validation).
    Agent,
    /// Self-service: only devices whose user email is the actor's.
    OwnDevices,
}

/// Every action the plugin offers, with the label used in notes.
pub const ACTIONS: &[(&str, &str)] = &[
    ("change-passcode", "Change Passcode"),
    ("lock-device", "Lock Device"),
    ("remote-assist", "Remote Assist"),
    ("request-device-log", "Request Device Log"),
    ("send-message", "Send Message"),
    ("soft-reset", "Soft Reset"),
    ("sync-device", "Sync Device"),
    ("find-device", "Find Device"),
    ("view-recovery-key", "View Encryption Recovery Key"),
    ("add-device", "Add Device"),
    ("device-wipe", "Device Wipe"),
    ("enterprise-wipe", "Enterprise Wipe"),
    ("console-link", "Console Link"),
    ("verify-oauth-token", "Verify OAuth Token"),
    ("test-connection", "Test Connection"),
    ("view-configuration", "View Configuration"),
    ("find-devices", "Find Devices"),
];

const WIPES: &[&str] = &["device-wipe", "enterprise-wipe"];
const ADMIN: &[&str] = &[
    "test-connection",
    "verify-oauth-token",
    "view-configuration",
];
/// Actions employees may run on their own devices from the catalog.
pub const SELF_SERVICE: &[&str] = &[
    "add-device",
    "change-passcode",
    "find-device",
    "lock-device",
    "sync-device",
    "view-recovery-key",
];

/// The label of an action (`Lock Device`).
pub fn label(action: &str) -> &'static str {
    ACTIONS
        .iter()
        .find(|(a, _)| *a == action)
        .map_or("Unknown action", |(_, l)| l)
}

/// Decides what `roles` allow for `action`; `None` refuses.
pub fn authorize(action: &str, roles: &[String]) -> Option<Grant> {
    let has = |r: &str| roles.iter().any(|x| x == r);
    if ADMIN.contains(&action) {
        return (has("admin") || has("advanced")).then_some(Grant::Agent);
    }
    if action == "console-link" {
        return (has("console-viewer") || has("advanced") || has("standard"))
            .then_some(Grant::Agent);
    }
    if action == "find-devices" {
        // Looking devices up is part of every device action.
        let agent = ACTIONS.iter().any(|(a, _)| has(a) && !ADMIN.contains(a))
            || has("advanced")
            || has("standard")
            || has("console-viewer");
        if agent {
            return Some(Grant::Agent);
        }
        let catalog =
            has("catalog-all") || SELF_SERVICE.iter().any(|a| has(&format!("catalog-{a}")));
        return catalog.then_some(Grant::OwnDevices);
    }
    if has("advanced") || (has("standard") && !WIPES.contains(&action)) || has(action) {
        return Some(Grant::Agent);
    }
    if SELF_SERVICE.contains(&action) && (has("catalog-all") || has(&format!("catalog-{action}"))) {
        return Some(Grant::OwnDevices);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn standard_is_everything_but_the_wipes() {
        let standard = r(&["standard"]);
        for (action, _) in ACTIONS {
            let expected = !WIPES.contains(action) && !ADMIN.contains(action);
            assert_eq!(
                authorize(action, &standard) == Some(Grant::Agent),
                expected,
                "{action}"
            );
        }
    }

    #[test]
    fn advanced_is_everything() {
        for (action, _) in ACTIONS {
            assert_eq!(
                authorize(action, &r(&["advanced"])),
                Some(Grant::Agent),
                "{action}"
            );
        }
    }

    #[test]
    fn a_per_action_role_grants_that_action_only() {
        let lock = r(&["lock-device"]);
        assert_eq!(authorize("lock-device", &lock), Some(Grant::Agent));
        assert_eq!(authorize("device-wipe", &lock), None);
        assert_eq!(authorize("find-devices", &lock), Some(Grant::Agent));
        assert_eq!(
            authorize("device-wipe", &r(&["device-wipe"])),
            Some(Grant::Agent)
        );
        assert_eq!(
            authorize("console-link", &r(&["console-viewer"])),
            Some(Grant::Agent)
        );
        assert_eq!(authorize("lock-device", &r(&["console-viewer"])), None);
        assert_eq!(authorize("test-connection", &r(&["standard"])), None);
        assert_eq!(
            authorize("test-connection", &r(&["admin"])),
            Some(Grant::Agent)
        );
    }

    #[test]
    fn catalog_roles_grant_own_devices_for_self_service_actions_only() {
        let all = r(&["catalog-all"]);
        for a in SELF_SERVICE {
            assert_eq!(authorize(a, &all), Some(Grant::OwnDevices), "{a}");
        }
        assert_eq!(authorize("device-wipe", &all), None);
        assert_eq!(authorize("send-message", &all), None);
        assert_eq!(authorize("find-devices", &all), Some(Grant::OwnDevices));
        let lock = r(&["catalog-lock-device"]);
        assert_eq!(authorize("lock-device", &lock), Some(Grant::OwnDevices));
        assert_eq!(authorize("sync-device", &lock), None);
        // An agent role wins over a catalog role.
        assert_eq!(
            authorize("lock-device", &r(&["catalog-all", "standard"])),
            Some(Grant::Agent)
        );
        assert_eq!(authorize("lock-device", &[]), None);
    }
}
