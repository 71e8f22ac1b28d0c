//! The device an action names: by UEM id, serial number, UDID or the
//! user's email, or by a ServiceNow configuration item (the seed launches
//! actions from a device or a configuration item record).
//!
//! A configuration item (`{"device": {"ci": "<cmdb_ci sys_id>"}}`) is read
//! from ServiceNow (`cmdb_ci`: `name`, `serial_number`, `os`) and resolved
//! to the UEM device with its serial number. When the item states its
//! operating system, that OS family decides which actions apply; a UEM
//! device of another family is refused (409) rather than acted on, since
//! the item's serial number then points at the wrong device.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_sdk::schemars::{self, JsonSchema};
use switchyard_sdk::{Error, Result};
use switchyard_servicenow::{ServiceNow, SysId, field};
use switchyard_uem::{Device, OsFamily, Selector, Uem};

/// How an action's input names the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRef {
    /// By what UEM knows.
    Uem(Selector),
    /// By a ServiceNow configuration item.
    Ci(SysId),
}

impl<'de> Deserialize<'de> for DeviceRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match v.get("ci") {
            Some(ci) => {
                let text = ci.as_str().map(str::trim).unwrap_or_default();
                SysId::parse(text).map(Self::Ci).map_err(|_| {
                    serde::de::Error::custom("`device.ci` must be a sys_id (32 hex digits)")
                })
            }
            None => Selector::deserialize(v)
                .map(Self::Uem)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for DeviceRef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DeviceRef".into()
    }
    fn inline_schema() -> bool {
        true
    }
    /// UEM's selector (the client's schema), plus `ci`.
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = Selector::json_schema(generator);
        schema.insert(
            "description".into(),
            "The device, by UEM id, serial number, UDID, the enrolled user's email, or a \
             ServiceNow configuration item"
                .into(),
        );
        if let Some(Value::Object(properties)) = schema.get_mut("properties") {
            properties.insert(
                "ci".into(),
                serde_json::json!({
                    "type": "string",
                    "pattern": "^\\s*[0-9a-fA-F]{32}\\s*$",
                    "description": "sys_id of a ServiceNow configuration item (cmdb_ci) whose serial number names the device",
                }),
            );
        }
        if let Some(Value::Array(any_of)) = schema.get_mut("anyOf") {
            any_of.push(serde_json::json!({"required": ["ci"]}));
        }
        schema
    }
}

/// The configuration item an action was launched from, as the answer
/// shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigurationItem {
    /// Its sys_id.
    pub sys_id: String,
    /// Its name.
    pub name: String,
    /// The OS family its operating-system field states, if any.
    pub os_family: Option<OsFamily>,
}

/// The device `r` names, and the configuration item it came from.
pub fn resolve(
    uem: &Uem,
    snow: Option<&ServiceNow>,
    r: &DeviceRef,
) -> Result<(Device, Option<ConfigurationItem>)> {
    let id = match r {
        DeviceRef::Uem(sel) => return Ok((uem.resolve_one(sel)?, None)),
        DeviceRef::Ci(id) => id,
    };
    let sn = snow.ok_or_else(|| {
        Error::invalid_input(
            "a configuration item (`device.ci`) is read from ServiceNow, which this instance \
             does not reach: set servicenow_url and the servicenow credential",
        )
    })?;
    let row = sn
        .get("cmdb_ci", id, &["sys_id", "name", "serial_number", "os"])?
        .ok_or_else(|| Error::not_found(format!("ServiceNow has no configuration item {id}")))?;
    let name = field(&row, "name");
    let serial = field(&row, "serial_number");
    if serial.trim().is_empty() {
        return Err(Error::conflict(format!(
            "configuration item {name} ({id}) has no serial number to find its device by"
        )));
    }
    let device = uem.resolve_one(&Selector::Serial(serial.trim().to_owned()))?;
    let ci = ConfigurationItem {
        sys_id: id.to_string(),
        name,
        os_family: OsFamily::detect(&field(&row, "os"), ""),
    };
    Ok((device, Some(ci)))
}

/// The OS family an action is judged by: the configuration item's when it
/// states one, else the device's; refused when the two disagree.
pub fn family(device: &Device, ci: Option<&ConfigurationItem>) -> Result<OsFamily> {
    match (
        ci.and_then(|c| c.os_family.map(|f| (c, f))),
        device.os_family,
    ) {
        (Some((c, f)), Some(d)) if f != d => Err(Error::conflict(format!(
            "configuration item {} says {} but UEM device {} with its serial number is {}: \
             the item's serial number may be wrong",
            c.name,
            f.name(),
            device.id,
            d.name()
        ))),
        (Some((_, f)), _) => Ok(f),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(Error::conflict(format!(
            "cannot tell the OS family of device {} (OperatingSystem `{}`, Platform `{}`)",
            device.id, device.os, device.platform
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_device_is_named_by_uem_or_by_a_configuration_item() {
        let ci: DeviceRef =
            serde_json::from_value(json!({"ci": " 0123456789abcdef0123456789abcdef "})).unwrap();
        assert!(
            matches!(ci, DeviceRef::Ci(id) if id.as_str() == "0123456789abcdef0123456789abcdef")
        );
        let id: DeviceRef = serde_json::from_value(json!({"id": 5})).unwrap();
        assert_eq!(id, DeviceRef::Uem(Selector::Id(5)));
        let bad = serde_json::from_value::<DeviceRef>(json!({"ci": "x^ORsys_id!=0"})).unwrap_err();
        assert!(bad.to_string().contains("device.ci"), "{bad}");
    }

    #[test]
    fn the_schema_is_the_selectors_plus_ci() {
        let schema = serde_json::to_value(
            schemars::SchemaGenerator::default().into_root_schema_for::<DeviceRef>(),
        )
        .unwrap();
        let names: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        assert_eq!(names, ["ci", "email", "id", "serial", "udid"]);
        assert_eq!(schema["anyOf"].as_array().unwrap().len(), 5);
        assert_eq!(schema["anyOf"][4], json!({"required": ["ci"]}));
    }
}
