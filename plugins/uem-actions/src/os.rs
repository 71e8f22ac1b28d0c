//! Which actions apply to which OS family (the seed's gating).

use switchyard_uem::OsFamily;

/// Whether `action` applies to devices of `family`.
pub fn supports(family: OsFamily, action: &str) -> bool {
    use OsFamily::*;
    match action {
        "view-recovery-key" => matches!(family, MacOs | Windows),
        "find-device" => matches!(family, IOs | Android),
        "change-passcode" => matches!(family, Android | Windows | MacOs),
        "soft-reset" | "request-device-log" | "send-message" | "remote-assist" => family != Linux,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_keys_exist_on_mac_and_windows_only() {
        assert!(supports(OsFamily::MacOs, "view-recovery-key"));
        assert!(supports(OsFamily::Windows, "view-recovery-key"));
        assert!(!supports(OsFamily::IOs, "view-recovery-key"));
        assert!(!supports(OsFamily::Linux, "send-message"));
        assert!(supports(OsFamily::Linux, "lock-device"));
    }
}
