//! The incident an action comes from: its caller's email (for
//! caller-email validation) and the work note that records the action.

use serde::{Deserialize, Deserializer};
use switchyard_sdk::schemars::JsonSchema;
use switchyard_sdk::{Error, Result};
use switchyard_servicenow::{Query, ServiceNow, SysId, TaskNumber, field};

/// The incident named in an action's input. The sys_id and number are
/// typed, so a value that could address another record or widen a query
/// is refused (422) before the plugin runs. As ServiceNow UI actions and
/// flows send them, blank values (and `"incident": null`) mean "none", and
/// values may carry surrounding spaces.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars", extend("type" = ["object", "null"]))]
pub struct Incident {
    /// The incident's sys_id.
    #[serde(default, deserialize_with = "blank_is_none")]
    #[schemars(
        with = "Option<String>",
        regex(pattern = r"^\s*([0-9a-fA-F]{32})?\s*$")
    )]
    pub sys_id: Option<SysId>,
    /// The incident's number, e.g. INC0010001.
    #[serde(default, deserialize_with = "blank_is_none")]
    #[schemars(
        with = "Option<String>",
        regex(pattern = r"^\s*([A-Za-z0-9_.-]{1,40})?\s*$")
    )]
    pub number: Option<TaskNumber>,
    /// The caller's email; read from ServiceNow when it is configured.
    #[serde(default)]
    pub caller_email: Option<String>,
}

/// A blank or absent string is None; anything else is trimmed and must
/// parse as `T`.
fn blank_is_none<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<String, Error = String>,
{
    let v: Option<String> = Option::deserialize(d)?;
    match v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => T::try_from(s).map(Some).map_err(serde::de::Error::custom),
    }
}

/// `null` as the default incident (none).
pub fn null_is_none<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Incident, D::Error> {
    Ok(Option::<Incident>::deserialize(d)?.unwrap_or_default())
}

impl Incident {
    /// Whether it names an incident at all.
    pub fn is_named(&self) -> bool {
        self.sys_id.is_some() || self.number.is_some()
    }

    /// `INC0010001`, or the sys_id.
    pub fn name(&self) -> String {
        match (&self.number, &self.sys_id) {
            (Some(n), _) => n.to_string(),
            (None, Some(id)) => id.to_string(),
            (None, None) => String::new(),
        }
    }

    /// Fills in the sys_id, number and caller email from ServiceNow.
    pub fn load(&mut self, sn: &ServiceNow) -> Result<()> {
        let fields = ["sys_id", "number", "caller_id.email"];
        let row = match (&self.sys_id, &self.number) {
            (Some(id), _) => sn.get("incident", id, &fields)?,
            (None, Some(n)) => sn
                .query(
                    "incident",
                    &Query::new().eq("number", n.as_str()),
                    &fields,
                    1,
                )?
                .into_iter()
                .next(),
            (None, None) => return Ok(()),
        }
        .ok_or_else(|| Error::not_found(format!("ServiceNow has no incident {}", self.name())))?;
        if let Ok(id) = SysId::parse(&field(&row, "sys_id")) {
            self.sys_id = Some(id);
        }
        if let Ok(n) = TaskNumber::parse(&field(&row, "number")) {
            self.number = Some(n);
        }
        let email = field(&row, "caller_id.email");
        if !email.is_empty() {
            self.caller_email = Some(email);
        }
        Ok(())
    }

    /// Appends a work note to the incident.
    pub fn work_note(&self, sn: &ServiceNow, note: &str) -> Result<()> {
        let id = self
            .sys_id
            .as_ref()
            .ok_or_else(|| Error::internal("incident sys_id unknown"))?;
        sn.work_note("incident", id, note)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Issue 13, item 12: input that could address another record or widen
    /// a query is refused when it is read, before any request is made.
    #[test]
    fn incident_ids_that_are_not_ids_are_refused() {
        let ok = json!({"sys_id": "0123456789abcdef0123456789ABCDEF", "number": "INC0010001"});
        let inc: Incident = serde_json::from_value(ok).unwrap();
        assert_eq!(inc.name(), "INC0010001");
        assert!(
            !serde_json::from_value::<Incident>(json!({}))
                .unwrap()
                .is_named()
        );
        for bad in [
            json!({"sys_id": "../sys_user/0123456789abcdef0123456789abcdef"}),
            json!({"sys_id": "0123456789abcdef0123456789abcde?"}),
            json!({"sys_id": "abc"}),
            json!({"number": "INC0010001^ORnumber!=x"}),
            json!({"number": "INC0010001^active=true"}),
            json!({"number": "INC 1"}),
        ] {
            assert!(
                serde_json::from_value::<Incident>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
