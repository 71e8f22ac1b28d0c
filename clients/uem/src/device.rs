//! Devices as UEM describes them, how a caller names one, and their OS
//! family.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_sdk::schemars::{self, JsonSchema};
use switchyard_sdk::{Error, Result};

/// The OS families UEM's `OperatingSystem` and `Platform` values tell
/// apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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
    /// The family from UEM's `OperatingSystem` value (it contains
    /// `android`, `iOS`, `mac`, `Linux` or `windows`), falling back to
    /// `Platform` (`Apple`, `AppleOsX`, `WinRT`, …) when that says nothing
    /// (some versions report a bare version number).
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

    /// `(Application, MessageType)` of a push message to this family, for
    /// `POST /api/mdm/devices/messages/push`; None where UEM has none.
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

/// A device, from UEM's device JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    /// `Id.Value`.
    pub id: i64,
    /// `Uuid` (recovery keys and tags are addressed by it).
    pub uuid: String,
    /// Serial number.
    pub serial: String,
    /// UDID.
    pub udid: String,
    /// Friendly name.
    pub name: String,
    /// Model.
    pub model: String,
    /// `OperatingSystem`.
    pub os: String,
    /// UEM `Platform`.
    pub platform: String,
    /// Detected OS family.
    pub os_family: Option<OsFamily>,
    /// Enrolled user.
    pub user: String,
    /// The enrolled user's email.
    pub email: String,
    /// Last check-in.
    pub last_seen: String,
    /// Compliance.
    pub compliance: String,
    /// `EnrollmentStatus` (`Enrolled`, `Unenrolled`, …).
    pub enrollment: String,
}

impl Device {
    /// Reads UEM's device JSON; `upstream` when it has no `Id.Value`.
    pub fn from_uem(v: &Value) -> Result<Self> {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let id = v["Id"]["Value"]
            .as_i64()
            .ok_or_else(|| Error::upstream("UEM sent a device without Id.Value"))?;
        let (os, platform) = (s("OperatingSystem"), s("Platform"));
        Ok(Self {
            id,
            uuid: s("Uuid"),
            serial: s("SerialNumber"),
            udid: s("Udid"),
            name: s("DeviceFriendlyName"),
            model: s("Model"),
            os_family: OsFamily::detect(&os, &platform),
            os,
            platform,
            user: s("UserName"),
            email: s("UserEmailAddress"),
            last_seen: s("LastSeen"),
            compliance: s("ComplianceStatus"),
            enrollment: s("EnrollmentStatus"),
        })
    }

    /// `7 iPhone 15 (serial C02…)`, for notes.
    pub fn describe(&self) -> String {
        format!("{} {} (serial {})", self.id, self.model, self.serial)
    }
}

/// How a caller names a device: `{"id" | "serial" | "udid" | "email": …}`
/// in JSON (an id may be a number or a numeric string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Selector {
    /// UEM device id.
    Id(i64),
    /// Serial number.
    Serial(String),
    /// UDID.
    Udid(String),
    /// The enrolled user's email (may match several devices).
    Email(String),
}

impl Selector {
    /// Reads `{"id"|"serial"|"udid"|"email": …}`, the first present in that
    /// order.
    pub fn parse(v: &Value) -> Result<Self> {
        let text = |k: &str| v[k].as_str().map(str::trim).filter(|s| !s.is_empty());
        if let Some(id) = v["id"]
            .as_i64()
            .or_else(|| text("id").and_then(|s| s.parse().ok()))
        {
            return Ok(Self::Id(id));
        }
        if let Some(s) = text("serial") {
            return Ok(Self::Serial(s.to_owned()));
        }
        if let Some(s) = text("udid") {
            return Ok(Self::Udid(s.to_owned()));
        }
        if let Some(s) = text("email") {
            return Ok(Self::Email(s.to_owned()));
        }
        Err(Error::invalid_input(
            "`device` must name the device by `id`, `serial`, `udid` or `email`",
        ))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => write!(f, "id {id}"),
            Self::Serial(s) => write!(f, "serial number {s}"),
            Self::Udid(u) => write!(f, "UDID {u}"),
            Self::Email(e) => write!(f, "email {e}"),
        }
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Self::parse(&v).map_err(|e| match e {
            Error::InvalidInput(m) => serde::de::Error::custom(m),
            other => serde::de::Error::custom(other),
        })
    }
}

impl JsonSchema for Selector {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DeviceSelector".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "description": "The device, by UEM id, serial number, UDID or the enrolled user's email",
            "properties": {
                "id": {"type": ["integer", "string"], "description": "UEM device id"},
                "serial": {"type": "string", "description": "Serial number"},
                "udid": {"type": "string", "description": "UDID"},
                "email": {"type": "string", "description": "The enrolled user's email (must match one device)"},
            },
            "anyOf": [
                {"required": ["id"]},
                {"required": ["serial"]},
                {"required": ["udid"]},
                {"required": ["email"]},
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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
        assert_eq!(OsFamily::Linux.message_channel(), None);
    }

    #[test]
    fn selectors_read_every_identifier() {
        assert_eq!(Selector::parse(&json!({"id": 5})).unwrap(), Selector::Id(5));
        assert_eq!(
            Selector::parse(&json!({"id": "5"})).unwrap(),
            Selector::Id(5)
        );
        assert_eq!(
            Selector::parse(&json!({"serial": " C02 "})).unwrap(),
            Selector::Serial("C02".into())
        );
        assert_eq!(
            serde_json::from_value::<Selector>(json!({"email": "a@b"})).unwrap(),
            Selector::Email("a@b".into())
        );
        let err = serde_json::from_value::<Selector>(json!({"name": "x"})).unwrap_err();
        assert!(err.to_string().contains("by `id`, `serial`"), "{err}");
        assert_eq!(
            Selector::Serial("C02".into()).to_string(),
            "serial number C02"
        );
    }

    #[test]
    fn devices_read_uem_json() {
        let d = Device::from_uem(&json!({
            "Id": {"Value": 7}, "Uuid": "u-7", "SerialNumber": "C02", "Model": "iPhone 15",
            "OperatingSystem": "17.4", "Platform": "Apple", "UserEmailAddress": "a@b",
        }))
        .unwrap();
        assert_eq!((d.id, d.os_family), (7, Some(OsFamily::IOs)));
        assert_eq!(d.describe(), "7 iPhone 15 (serial C02)");
        assert!(matches!(
            Device::from_uem(&json!({"Uuid": "x"})),
            Err(Error::Upstream { .. })
        ));
    }
}
