//! The UEM REST API as this plugin uses it, with UEM's errors mapped to the
//! plugin's typed errors.

use serde::Serialize;
use serde_json::{Value, json};
use switchyard_sdk::http::{Request, Response};
use switchyard_sdk::{Error, Result};

use crate::os::OsFamily;

/// Name of the credential slot for UEM.
pub const CREDENTIAL: &str = "uem";

/// A device as the plugin reports it.
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
}

impl Device {
    fn from_uem(v: &Value) -> Result<Self> {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let id = v["Id"]["Value"].as_i64().ok_or_else(|| Error::Upstream {
            status: None,
            message: "UEM sent a device without Id.Value".into(),
            retry_after_secs: None,
        })?;
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
        })
    }

    /// `Model, serial …1234` for notes.
    pub fn describe(&self) -> String {
        format!("{} {} (serial {})", self.id, self.model, self.serial)
    }
}

/// How the caller names a device.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Reads `{"id"|"serial"|"udid"|"email": …}`.
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

/// Percent-encodes a path segment or query value.
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A UEM client for one instance.
pub struct Uem {
    base: String,
}

/// Reads UEM's error body `{errorCode, message, activityId}`.
fn uem_message(r: &Response) -> String {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    match (v["errorCode"].as_i64(), v["message"].as_str()) {
        (Some(code), Some(m)) => format!(
            "{m} (errorCode {code}, activityId {})",
            v["activityId"].as_str().unwrap_or("-")
        ),
        (None, Some(m)) => m.to_owned(),
        _ => {
            let t: String = r.text().chars().take(200).collect();
            if t.is_empty() {
                "(empty body)".into()
            } else {
                t
            }
        }
    }
}

/// Maps a UEM answer that is not 2xx to a typed error.
pub fn check(r: Response, what: &str) -> Result<Response> {
    if r.is_success() {
        return Ok(r);
    }
    let message = uem_message(&r);
    Err(match r.status {
        400 | 422 => Error::invalid_input(format!("UEM refused {what}: {message}")),
        401 => Error::Upstream {
            status: Some(401),
            message: format!(
                "UEM rejected the API credentials while trying {what}: {message}; check the `uem` credential"
            ),
            retry_after_secs: None,
        },
        403 => Error::forbidden(format!(
            "UEM refused {what}: the API account lacks the permission, or the tenant code is wrong: {message}"
        )),
        404 => Error::not_found(format!("UEM found nothing for {what}: {message}")),
        429 => {
            let retry = r.retry_after_secs();
            Error::Upstream {
                status: Some(429),
                message: format!(
                    "UEM is rate limiting this tenant{}",
                    retry
                        .map(|s| format!("; retry in {s} s"))
                        .unwrap_or_default()
                ),
                retry_after_secs: retry,
            }
        }
        s => Error::Upstream {
            status: Some(s),
            message: format!("UEM failed {what}: {message}"),
            retry_after_secs: r.retry_after_secs(),
        },
    })
}

impl Uem {
    /// A client for the API at `base` (e.g. `https://as1234.awmdm.com`).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    fn req(&self, r: Request) -> Request {
        r.header("accept", "application/json")
            .credential(CREDENTIAL)
    }

    /// GET `path` (under `/api`), as JSON; `None` for 204 (nothing found).
    pub fn get(&self, path: &str, what: &str) -> Result<Option<Value>> {
        let r = check(
            self.req(Request::get(format!("{}/api{path}", self.base)))
                .send()?,
            what,
        )?;
        if r.status == 204 || r.body.is_empty() {
            return Ok(None);
        }
        r.json().map(Some)
    }

    /// POST `body` (JSON, or nothing) to `path` under `/api`.
    pub fn post(&self, path: &str, body: Option<&Value>, what: &str) -> Result<Response> {
        let mut r = self.req(Request::post(format!("{}/api{path}", self.base)));
        if let Some(b) = body {
            r = r.json(b)?;
        }
        check(r.send()?, what)
    }

    /// Devices the selector names (one, or several for an email).
    pub fn resolve(&self, sel: &Selector) -> Result<Vec<Device>> {
        let one = |path: String, what: String| -> Result<Vec<Device>> {
            match self.get(&path, &what)? {
                Some(v) => Ok(vec![Device::from_uem(&v)?]),
                None => Ok(Vec::new()),
            }
        };
        match sel {
            Selector::Id(id) => one(format!("/mdm/devices/{id}"), format!("device {id}")),
            Selector::Serial(s) => one(
                format!("/mdm/devices/serialnumber/{}", enc(s)),
                format!("the device with serial number {s}"),
            ),
            Selector::Udid(u) => one(
                format!("/mdm/devices/udid/{}", enc(u)),
                format!("the device with UDID {u}"),
            ),
            Selector::Email(email) => self.devices_of(email),
        }
    }

    /// The UEM users whose email is exactly `email`.
    pub fn users_with_email(&self, email: &str) -> Result<Vec<Value>> {
        let Some(users) = self.get(
            &format!("/system/users/search?email={}", enc(email)),
            &format!("the user {email}"),
        )?
        else {
            return Ok(Vec::new());
        };
        // The search matches substrings; only the exact address counts.
        Ok(users["Users"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|u| {
                u["Email"]
                    .as_str()
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
            })
            .cloned()
            .collect())
    }

    /// Every device enrolled by the user with `email`.
    pub fn devices_of(&self, email: &str) -> Result<Vec<Device>> {
        let mut out = Vec::new();
        for user in self.users_with_email(email)? {
            let name = user["UserName"].as_str().unwrap_or_default();
            let mut page = 0;
            while let Some(p) = self.get(
                &format!(
                    "/mdm/devices/search?user={}&page={page}&pagesize=500",
                    enc(name)
                ),
                &format!("the devices of {email}"),
            )? {
                let devices = p["Devices"].as_array().cloned().unwrap_or_default();
                for d in &devices {
                    out.push(Device::from_uem(d)?);
                }
                let total = p["Total"].as_u64().unwrap_or(0) as usize;
                page += 1;
                if devices.is_empty() || page * 500 >= total {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Sends `command` (`Lock`, `SyncDevice`, …) to a device.
    pub fn command(&self, device: &Device, command: &str) -> Result<()> {
        self.post(
            &format!("/mdm/devices/{}/commands?command={command}", device.id),
            None,
            &format!("the {command} command on device {}", device.id),
        )
        .map(drop)
    }

    /// Writes a note on a device; returns the note id.
    pub fn note(&self, device: &Device, text: &str) -> Result<Option<i64>> {
        let r = self.post(
            &format!("/mdm/devices/{}/notes", device.id),
            Some(&json!({"DeviceId": device.id, "Note": text})),
            &format!("writing a note on device {}", device.id),
        )?;
        Ok(r.json::<Value>().ok().and_then(|v| v["EntityId"].as_i64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str, headers: &[(&str, &str)]) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| switchyard_sdk::http::Header {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn uem_errors_become_typed_errors() {
        let body = r#"{"errorCode":5061,"message":"Device not found for this request.","activityId":"a1"}"#;
        match check(resp(404, body, &[]), "device 7") {
            Err(Error::NotFound(m)) => {
                assert!(m.contains("Device not found") && m.contains("5061"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check(resp(403, "{}", &[]), "x"),
            Err(Error::Forbidden(_))
        ));
        assert!(matches!(
            check(resp(401, "{}", &[]), "x"),
            Err(Error::Upstream {
                status: Some(401),
                ..
            })
        ));
        match check(resp(429, "{}", &[("retry-after", "12")]), "x") {
            Err(Error::Upstream {
                status: Some(429),
                retry_after_secs: Some(12),
                message,
            }) => {
                assert!(message.contains("12 s"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check(resp(503, "", &[]), "x"),
            Err(Error::Upstream {
                status: Some(503),
                ..
            })
        ));
        assert!(check(resp(202, "", &[]), "x").is_ok());
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
            Selector::parse(&json!({"email": "a@b"})).unwrap(),
            Selector::Email("a@b".into())
        );
        assert!(Selector::parse(&json!({"name": "x"})).is_err());
    }
}
