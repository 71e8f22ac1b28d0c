//! OS family of a device, and what each family supports.

use serde::Serialize;

/// The OS families the seed distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OsFamily {
    /// Android.
    Android,
    /// iOS and iPadOS.
    #[serde(rename = "ios")]
    IOs,
    /// macOS.
    #[serde(rename = "macos")]
    MacOs,
    /// Linux.
    Linux,
    /// Windows.
    Windows,
}

impl OsFamily {
    /// The family from UEM's `OperatingSystem` value (the seed: it contains
    /// `android`, `iOS`, `mac`, `Linux` or `windows`), falling back to
    /// `Platform` (`Apple`, `AppleOsX`, `WinRT`, …) when that says nothing.
    pub fn detect(os: &str, platform: &str) -> Option<Self> {
        let from = |s: &str| {
            let s = s.to_ascii_lowercase();
            if s.contains("android") {
                Some(Self::Android)
            } else if s.contains("ios") || s.contains("ipad") || s.contains("iphone") {
                Some(Self::IOs)
            } else if s.contains("mac") || s.contains("osx") {
                Some(Self::MacOs)
            } else if s.contains("linux") {
                Some(Self::Linux)
            } else if s.contains("windows") || s.contains("winrt") {
                Some(Self::Windows)
            } else {
                None
            }
        };
        from(os).or_else(|| match platform {
            "Apple" => Some(Self::IOs),
            "AppleOsX" => Some(Self::MacOs),
            "WinRT" | "WindowsPc" | "WindowsMobile" => Some(Self::Windows),
            other => from(other),
        })
    }

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Android => "Android",
            Self::IOs => "iOS",
            Self::MacOs => "macOS",
            Self::Linux => "Linux",
            Self::Windows => "Windows",
        }
    }

    /// Whether `action` applies to this family.
    pub fn supports(self, action: &str) -> bool {
        use OsFamily::*;
        match action {
            "view-recovery-key" => matches!(self, MacOs | Windows),
            "find-device" => matches!(self, IOs | Android),
            "change-passcode" => matches!(self, Android | Windows | MacOs),
            "soft-reset" | "request-device-log" | "send-message" | "remote-assist" => self != Linux,
            _ => true,
        }
    }

    /// `(Application, MessageType)` of a push message for this family.
    pub fn message_channel(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::IOs => Some(("IntelligentHub", "Apns")),
            Self::Android => Some(("AirWatch Agent", "Push")),
            Self::Windows => Some(("com.airwatch.workspace.one", "wns")),
            Self::MacOs => Some(("com.airwatch.mac.agent", "awcm")),
            Self::Linux => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_come_from_the_os_value_then_the_platform() {
        let cases = [
            ("iOS 17.4", "Apple", OsFamily::IOs),
            ("Android 14", "Android", OsFamily::Android),
            ("macOS 14.5", "AppleOsX", OsFamily::MacOs),
            ("Windows 11 23H2", "WinRT", OsFamily::Windows),
            ("Linux Ubuntu 22.04", "Linux", OsFamily::Linux),
            ("17.4.1", "Apple", OsFamily::IOs),
            ("14.5", "AppleOsX", OsFamily::MacOs),
            ("10.0.22631", "WinRT", OsFamily::Windows),
        ];
        for (os, platform, want) in cases {
            assert_eq!(
                OsFamily::detect(os, platform),
                Some(want),
                "{os} / {platform}"
            );
        }
        assert_eq!(OsFamily::detect("17", "Unknown"), None);
    }

    #[test]
    fn recovery_keys_exist_on_mac_and_windows_only() {
        assert!(OsFamily::MacOs.supports("view-recovery-key"));
        assert!(OsFamily::Windows.supports("view-recovery-key"));
        assert!(!OsFamily::IOs.supports("view-recovery-key"));
        assert!(!OsFamily::Linux.supports("send-message"));
        assert!(OsFamily::Linux.supports("lock-device"));
    }
}
