//! A Workspace ONE UEM REST client for Switchyard plugins: devices (by id,
//! serial number, UDID or the user's email), commands, notes, tags,
//! organization and smart groups, 0-based search paging, retries through
//! [`switchyard_sdk::retry`], and UEM's error bodies
//! (`{errorCode, message, activityId}`) turned into the plugin's typed
//! errors.
//!
//! The host attaches the credential of the slot named [`CREDENTIAL`] (OAuth2
//! client credentials, or Basic with the `aw-tenant-code` header); the
//! plugin never sees it.
//!
//! ```no_run
//! use switchyard_uem::{Selector, Uem};
//!
//! # fn main() -> switchyard_sdk::Result<()> {
//! let uem = Uem::new("https://as1234.awmdm.com");
//! let device = uem.resolve_one(&Selector::Serial("C02XK1".into()))?;
//! uem.command(device.id, "SyncDevice")?;
//! let tag = uem.ensure_tag("CHKP_Risk_High", 570)?;
//! uem.add_to_tag(tag, &[device.id])?;
//! # Ok(()) }
//! ```

use serde::Serialize;
use serde_json::{Value, json};
use switchyard_sdk::http::{self, Request, Response};
use switchyard_sdk::retry::Retry;
use switchyard_sdk::{Error, Result};

mod device;

pub use device::{Device, OsFamily, Selector};

/// The usual name of the credential slot for UEM.
pub const CREDENTIAL: &str = "uem";

/// The manifest's credential slot [`CREDENTIAL`]: OAuth2 client
/// credentials or Basic (with the `aw-tenant-code` header), `purpose`
/// saying what the plugin uses UEM for.
pub fn credential_slot(purpose: &str) -> switchyard_sdk::CredentialSlot {
    use switchyard_sdk::CredentialKind;
    switchyard_sdk::CredentialSlot::new(
        CREDENTIAL,
        purpose,
        &[
            CredentialKind::Oauth2ClientCredentials,
            CredentialKind::Basic,
        ],
    )
}

/// The page size of UEM's searches (its default and maximum).
const PAGE: usize = 500;

/// Percent-encodes a query value (`a b` becomes `a+b`).
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `s` as one URL path segment: every byte but the unreserved ones
/// (`A-Z a-z 0-9 - . _ ~`) percent-encoded, so a value cannot add a
/// segment (`/`), a query (`?`) or a fragment. An empty value, `.` and
/// `..` are refused (`invalid-input`): URL parsing would remove or climb
/// them, encoded or not, and address another resource.
pub fn segment(what: &str, s: &str) -> Result<String> {
    if matches!(s, "" | "." | "..") {
        return Err(Error::invalid_input(format!(
            "{what} `{s}` cannot name a UEM resource"
        )));
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

/// What UEM's error body said: `{errorCode, message, activityId}`, or the
/// start of whatever else it sent.
pub fn error_message(r: &Response) -> String {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    match (v["errorCode"].as_i64(), v["message"].as_str()) {
        (Some(code), Some(m)) => format!(
            "{m} (errorCode {code}, activityId {})",
            v["activityId"].as_str().unwrap_or("-")
        ),
        (None, Some(m)) => m.to_owned(),
        _ => {
            let t: String = r.text().chars().take(200).collect();
            if t.trim().is_empty() {
                "(empty body)".into()
            } else {
                t
            }
        }
    }
}

/// Turns an answer that is not 2xx into a typed error; `what` says what
/// was being done ("the Lock command on device 7").
///
/// - 400, 422: `invalid-input` (UEM refused the values);
/// - 401: `upstream` (status kept) naming the credential to check;
/// - 403: `forbidden` (the API account lacks the permission, or the
///   tenant code is wrong);
/// - 404: `not-found`;
/// - 429 and 5xx: `upstream` with the status and `Retry-After`.
pub fn check(r: Response, what: &str) -> Result<Response> {
    if r.is_success() {
        return Ok(r);
    }
    let message = error_message(&r);
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

/// A tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tag {
    /// Tag id.
    pub id: i64,
    /// Name.
    pub name: String,
}

/// An organization group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrgGroup {
    /// Numeric id (`Id.Value`), what tags and searches take.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Group id (the short code users type at enrolment).
    pub group_id: String,
    /// UUID.
    pub uuid: String,
    /// The parent group's id; None for the top of the tree.
    pub parent: Option<i64>,
}

/// A smart group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmartGroup {
    /// `SmartGroupID`.
    pub id: i64,
    /// Name.
    pub name: String,
    /// How many devices it holds.
    pub devices: u64,
}

/// What UEM did with a bulk request (tag membership): the devices it
/// refused, with why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Bulk {
    /// Items accepted.
    pub accepted: u64,
    /// Each refused item.
    pub failed: Vec<BulkFault>,
}

/// One item of a bulk request that UEM refused (an entry of its `Faults`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BulkFault {
    /// The item as UEM echoed it (a device id).
    pub item: String,
    /// UEM's error code, when it gave one.
    pub code: Option<i64>,
    /// UEM's message.
    pub message: String,
}

impl BulkFault {
    /// Whether UEM refused the item because it knows no such device
    /// (error 5061): a device that no longer exists carries no tags.
    pub fn device_unknown(&self) -> bool {
        self.code == Some(5061)
    }
}

fn id_value(v: &Value) -> Option<i64> {
    v["Id"]["Value"]
        .as_i64()
        .or_else(|| v["Id"].as_i64())
        .or_else(|| v["Value"].as_i64())
}

/// A UEM client for one instance.
#[derive(Debug, Clone)]
pub struct Uem {
    base: String,
    credential: String,
    retry: Retry,
}

impl Uem {
    /// A client for the API at `base` (e.g. `https://as1234.awmdm.com`),
    /// with the credential slot [`CREDENTIAL`].
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim().trim_end_matches('/').to_owned(),
            credential: CREDENTIAL.to_owned(),
            retry: Retry::default(),
        }
    }

    /// Uses the credential slot `name` instead of [`CREDENTIAL`].
    pub fn with_credential(mut self, name: &str) -> Self {
        self.credential = name.to_owned();
        self
    }

    /// Retries with `retry` instead of [`Retry::default`] (which retries a
    /// `POST` only after a 429).
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    fn send(&self, req: Request, what: &str) -> Result<Response> {
        let req = req
            .header("accept", "application/json")
            .credential(&self.credential);
        let r = self
            .retry
            .send(&req)
            .map_err(|e| http::error_from("UEM", e))?;
        check(r, what)
    }

    /// GET `path` (under `/api`) as JSON; None for 204 or an empty body
    /// (UEM's "nothing matched").
    pub fn get(&self, path: &str, what: &str) -> Result<Option<Value>> {
        let r = self.send(Request::get(format!("{}/api{path}", self.base)), what)?;
        if r.status == 204 || r.body.is_empty() {
            return Ok(None);
        }
        r.json()
            .map(Some)
            .map_err(|e| Error::upstream(format!("UEM's answer for {what} is not JSON: {e}")))
    }

    /// POST `body` (JSON, or nothing) to `path` under `/api`.
    pub fn post(&self, path: &str, body: Option<&Value>, what: &str) -> Result<Response> {
        let mut r = Request::post(format!("{}/api{path}", self.base));
        if let Some(b) = body {
            r = r.json(b)?;
        }
        self.send(r, what)
    }

    /// Every item under `key` of a 0-based paged search at `path` (which
    /// carries its own query, without `page`), page by page; refuses
    /// (`upstream`) more than `max` items rather than reading without end.
    pub fn search_all(&self, path: &str, key: &str, max: usize, what: &str) -> Result<Vec<Value>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut out = Vec::new();
        for page in 0.. {
            let Some(p) = self.get(&format!("{path}{sep}page={page}&pagesize={PAGE}"), what)?
            else {
                break;
            };
            let items = p[key].as_array().cloned().unwrap_or_default();
            let n = items.len();
            out.extend(items);
            if out.len() > max {
                return Err(Error::upstream(format!(
                    "UEM has more than {max} results for {what}"
                )));
            }
            let total = p["Total"].as_u64().unwrap_or(0) as usize;
            if n == 0 || out.len() >= total {
                break;
            }
        }
        Ok(out)
    }

    /// The version UEM reports (`GET /api/system/info`).
    pub fn version(&self) -> Result<String> {
        let info = self
            .get("/system/info", "reading the system info")?
            .unwrap_or(Value::Null);
        info["ProductVersion"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::upstream("UEM's system info has no ProductVersion"))
    }

    /// Devices the selector names (one, or several for an email).
    pub fn resolve(&self, sel: &Selector) -> Result<Vec<Device>> {
        let one = |path: String, what: String| -> Result<Vec<Device>> {
            match self.get(&path, &what) {
                Ok(Some(v)) => Ok(vec![Device::from_uem(&v)?]),
                // A 404 keeps UEM's own words ("Device not found…").
                Ok(None) => Ok(Vec::new()),
                Err(e) => Err(e),
            }
        };
        match sel {
            Selector::Id(id) => one(format!("/mdm/devices/{id}"), format!("device {id}")),
            Selector::Serial(s) => one(
                format!("/mdm/devices/serialnumber/{}", segment("serial number", s)?),
                format!("the device with serial number {s}"),
            ),
            Selector::Udid(u) => one(
                format!("/mdm/devices/udid/{}", segment("UDID", u)?),
                format!("the device with UDID {u}"),
            ),
            Selector::Email(email) => self.devices_of(email),
        }
    }

    /// The one device the selector names: `not-found` when none, `conflict`
    /// listing them when several (a user with several devices).
    pub fn resolve_one(&self, sel: &Selector) -> Result<Device> {
        let mut devices = self.resolve(sel)?;
        match devices.len() {
            0 => Err(Error::not_found(format!("UEM has no device for {sel}"))),
            1 => Ok(devices.remove(0)),
            n => {
                let list: Vec<String> = devices
                    .iter()
                    .map(|d| format!("{} ({} {})", d.id, d.model, d.os))
                    .collect();
                Err(Error::conflict(format!(
                    "{n} devices match {sel}; name one by id: {}",
                    list.join(", ")
                )))
            }
        }
    }

    /// The UEM users whose email is exactly `email` (the search matches
    /// substrings; only the exact address counts, ignoring case).
    pub fn users_with_email(&self, email: &str) -> Result<Vec<Value>> {
        let Some(users) = self.get(
            &format!("/system/users/search?email={}", enc(email)),
            &format!("the user {email}"),
        )?
        else {
            return Ok(Vec::new());
        };
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
            for d in self.search_all(
                &format!("/mdm/devices/search?user={}", enc(name)),
                "Devices",
                10_000,
                &format!("the devices of {email}"),
            )? {
                out.push(Device::from_uem(&d)?);
            }
        }
        Ok(out)
    }

    /// Sends `command` (`Lock`, `SyncDevice`, `DeviceWipe`, …) to the
    /// device with id `device`.
    pub fn command(&self, device: i64, command: &str) -> Result<()> {
        self.post(
            &format!("/mdm/devices/{device}/commands?command={}", enc(command)),
            None,
            &format!("the {command} command on device {device}"),
        )
        .map(drop)
    }

    /// Writes a note on a device; returns the note id when UEM says it.
    pub fn note(&self, device: i64, text: &str) -> Result<Option<i64>> {
        let r = self.post(
            &format!("/mdm/devices/{device}/notes"),
            Some(&json!({"DeviceId": device, "Note": text})),
            &format!("writing a note on device {device}"),
        )?;
        Ok(r.json::<Value>().ok().and_then(|v| v["EntityId"].as_i64()))
    }

    /// The tag called exactly `name` in organization group `group`.
    pub fn find_tag(&self, name: &str, group: i64) -> Result<Option<Tag>> {
        let tags = self.search_all(
            &format!(
                "/mdm/tags/search?name={}&organizationgroupid={group}",
                enc(name)
            ),
            "Tags",
            10_000,
            &format!("the tag {name}"),
        )?;
        Ok(tags.iter().find_map(|t| {
            let tag = Tag {
                id: id_value(t)?,
                name: t["TagName"].as_str()?.to_owned(),
            };
            (tag.name == name).then_some(tag)
        }))
    }

    /// The id of the tag `name` in group `group`, created if missing.
    pub fn ensure_tag(&self, name: &str, group: i64) -> Result<i64> {
        if let Some(t) = self.find_tag(name, group)? {
            return Ok(t.id);
        }
        let r = self.post(
            "/mdm/tags/addtag",
            Some(&json!({"TagName": name, "LocationGroupId": group})),
            &format!("creating the tag {name}"),
        )?;
        let v: Value = r.json()?;
        id_value(&v).ok_or_else(|| {
            Error::upstream(format!("UEM created the tag {name} but did not say its id"))
        })
    }

    fn tag_members(&self, tag: i64, op: &str, devices: &[i64]) -> Result<Bulk> {
        if devices.is_empty() {
            return Ok(Bulk::default());
        }
        let r = self.post(
            &format!("/mdm/tags/{tag}/{op}"),
            Some(&json!({"BulkValues": {"Value": devices}})),
            &format!("{op} on tag {tag}"),
        )?;
        let v: Value = r.json()?;
        let failed = v["Faults"]["Fault"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| BulkFault {
                item: match &f["ItemValue"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
                code: f["ErrorCode"].as_i64(),
                message: f["Message"].as_str().unwrap_or_default().to_owned(),
            })
            .collect();
        Ok(Bulk {
            accepted: v["AcceptedItems"].as_u64().unwrap_or(0),
            failed,
        })
    }

    /// Adds devices (by id) to a tag.
    pub fn add_to_tag(&self, tag: i64, devices: &[i64]) -> Result<Bulk> {
        self.tag_members(tag, "adddevices", devices)
    }

    /// Removes devices (by id) from a tag.
    pub fn remove_from_tag(&self, tag: i64, devices: &[i64]) -> Result<Bulk> {
        self.tag_members(tag, "removedevices", devices)
    }

    /// The tags of a device (addressed by its UUID).
    pub fn device_tags(&self, device: &Device) -> Result<Vec<Tag>> {
        let v = self
            .get(
                &format!(
                    "/mdm/devices/{}/tags",
                    segment("device UUID", &device.uuid)?
                ),
                &format!("the tags of device {}", device.id),
            )?
            .unwrap_or(Value::Null);
        Ok(v["Tag"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                Some(Tag {
                    id: t["TagId"]["Value"].as_i64().or_else(|| id_value(t))?,
                    name: t["TagName"].as_str()?.to_owned(),
                })
            })
            .collect())
    }

    /// Organization groups whose name contains `name` (all when empty).
    pub fn org_groups(&self, name: &str) -> Result<Vec<OrgGroup>> {
        let path = if name.is_empty() {
            "/system/groups/search".to_owned()
        } else {
            format!("/system/groups/search?name={}", enc(name))
        };
        let groups = self.search_all(&path, "LocationGroups", 10_000, "organization groups")?;
        Ok(groups
            .iter()
            .filter_map(|g| {
                Some(OrgGroup {
                    id: id_value(g)?,
                    name: g["Name"].as_str().unwrap_or_default().to_owned(),
                    group_id: g["GroupId"].as_str().unwrap_or_default().to_owned(),
                    uuid: g["Uuid"].as_str().unwrap_or_default().to_owned(),
                    parent: g["ParentLocationGroup"]["Id"]["Value"].as_i64(),
                })
            })
            .collect())
    }

    /// Smart groups whose name contains `name`.
    pub fn smart_groups(&self, name: &str) -> Result<Vec<SmartGroup>> {
        let v = self
            .get(
                &format!("/mdm/smartgroups/search?name={}", enc(name)),
                &format!("smart groups named {name}"),
            )?
            .unwrap_or(Value::Null);
        Ok(v["SmartGroups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| {
                Some(SmartGroup {
                    id: g["SmartGroupID"].as_i64()?,
                    name: g["Name"].as_str().unwrap_or_default().to_owned(),
                    devices: g["Devices"].as_u64().unwrap_or(0),
                })
            })
            .collect())
    }

    /// The devices in a smart group.
    pub fn smart_group_devices(&self, group: i64) -> Result<Vec<Device>> {
        let v = self
            .get(
                &format!("/mdm/smartgroups/{group}/devices"),
                &format!("the devices of smart group {group}"),
            )?
            .unwrap_or(Value::Null);
        v["Devices"]
            .as_array()
            .into_iter()
            .flatten()
            .map(Device::from_uem)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str, headers: &[(&str, &str)]) -> Response {
        Response::new(status, headers, body)
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
            check(resp(400, r#"{"message":"bad"}"#, &[]), "x"),
            Err(Error::InvalidInput(m)) if m.contains("bad")
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
            }) => assert!(message.contains("12 s"), "{message}"),
            other => panic!("{other:?}"),
        }
        match check(resp(503, "", &[]), "x") {
            Err(Error::Upstream {
                status: Some(503),
                message,
                ..
            }) => assert!(message.contains("(empty body)"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(check(resp(202, "", &[]), "x").is_ok());
    }

    #[test]
    fn ids_are_read_from_each_shape_uem_uses() {
        assert_eq!(id_value(&json!({"Id": {"Value": 5}})), Some(5));
        assert_eq!(id_value(&json!({"Value": 6})), Some(6));
        assert_eq!(id_value(&json!({"Id": 7})), Some(7));
        assert_eq!(id_value(&json!({"Name": "x"})), None);
        assert_eq!(enc("a b/c?d"), "a+b%2Fc%3Fd");
    }

    /// Issue 14 review: a value put into a path stays one segment, and
    /// dot segments are refused rather than climbed.
    #[test]
    fn path_segments_cannot_move_the_request() {
        assert_eq!(segment("x", "C02 X/1?a#b").unwrap(), "C02%20X%2F1%3Fa%23b");
        assert_eq!(segment("x", "4F3A-00.b_c~").unwrap(), "4F3A-00.b_c~");
        assert_eq!(segment("x", "%2e%2e").unwrap(), "%252e%252e");
        for bad in ["", ".", ".."] {
            assert!(
                matches!(segment("serial", bad), Err(Error::InvalidInput(_))),
                "{bad}"
            );
        }
    }
}
