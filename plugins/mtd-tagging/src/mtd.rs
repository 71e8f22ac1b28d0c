//! The MTD service's device API (its simulator documents it): upsert and
//! delete, one by one or up to [`BULK`] in one request, and the inventory
//! page by page. Authentication is the `mtd` credential
//! (`x-api-key`), attached by the host.

use serde::Deserialize;
use serde_json::Value;
use switchyard_sdk::http::{self, Request, Response};
use switchyard_sdk::retry::Retry;
use switchyard_sdk::{Error, Result};

/// Name of the credential slot.
pub const CREDENTIAL: &str = "mtd";

/// Devices per page when listing (the service's maximum).
const PAGE: usize = 500;

/// Items per bulk request (the service's maximum).
pub const BULK: usize = 500;

/// What the service did with one item of a bulk request.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct BulkResult {
    /// The device id.
    #[serde(default)]
    pub id: Option<String>,
    /// `upsert` or `delete`.
    pub op: String,
    /// 201 created, 200 updated, 204 deleted, 404 not there, 400 refused.
    pub status: u16,
    /// Why it was refused.
    #[serde(default)]
    pub error: Option<String>,
}

/// What the service knows of a device.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct MtdDevice {
    /// The id the plugin gave it (the UEM device id).
    pub id: String,
    /// `provisioned`, `active` or `inactive`.
    #[serde(default)]
    pub status: String,
    /// `none`, `low`, `medium` or `high`.
    #[serde(default)]
    pub risk: String,
    /// Current threat factors.
    #[serde(default)]
    pub threat_factors: Vec<String>,
}

/// The MTD service at a base URL.
pub struct Mtd {
    base: String,
}

fn check(r: Response, what: &str) -> Result<Response> {
    if r.is_success() {
        return Ok(r);
    }
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let message = v["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| r.text().chars().take(200).collect());
    Err(Error::Upstream {
        status: Some(r.status),
        message: match r.status {
            401 | 403 => format!("the MTD service refused the `mtd` credential {what}: {message}"),
            _ => format!("the MTD service failed {what}: {message}"),
        },
        retry_after_secs: r.retry_after_secs(),
    })
}

impl Mtd {
    /// The service at `base`.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    fn send(&self, req: Request) -> std::result::Result<Response, Error> {
        // Upserts and deletes are idempotent: safe to retry.
        Retry::default()
            .idempotent(true)
            .send(
                &req.header("accept", "application/json")
                    .credential(CREDENTIAL),
            )
            .map_err(|e| http::error_from("MTD service", e))
    }

    /// Creates or replaces device `id`; true when it was new.
    pub fn upsert(&self, id: i64, device: &Value) -> Result<bool> {
        let what = format!("storing device {id}");
        let r =
            self.send(Request::put(format!("{}/api/v1/devices/{id}", self.base)).json(device)?)?;
        Ok(check(r, &what)?.status == 201)
    }

    /// Upserts (`{"id", …fields}`) and deletes, at most [`BULK`] in all, in
    /// one request; one result per item, upserts first.
    pub fn bulk(&self, upserts: &[Value], deletes: &[String]) -> Result<Vec<BulkResult>> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            upsert: &'a [Value],
            delete: &'a [String],
        }
        #[derive(Deserialize)]
        struct Answer {
            results: Vec<BulkResult>,
        }
        let n = upserts.len() + deletes.len();
        let body = Body {
            upsert: upserts,
            delete: deletes,
        };
        let r =
            self.send(Request::post(format!("{}/api/v1/devices/bulk", self.base)).json(&body)?)?;
        let r = check(r, &format!("storing or deleting {n} devices"))?;
        // Read straight into the results: a whole `Value` of the answer,
        // then a copy of its list, cost time and memory at every page.
        let results = serde_json::from_slice::<Answer>(&r.body)
            .map_err(|e| Error::upstream(format!("the MTD bulk answer is malformed: {e}")))?
            .results;
        if results.len() != n {
            return Err(Error::upstream(format!(
                "the MTD service answered {} results for {n} bulk items",
                results.len()
            )));
        }
        Ok(results)
    }

    /// Page `page` (from 0) of the inventory, and the next page's number.
    pub fn page(&self, page: usize) -> Result<(Vec<MtdDevice>, Option<usize>)> {
        let url = format!("{}/api/v1/devices?page={page}&page_size={PAGE}", self.base);
        #[derive(Deserialize)]
        struct Answer {
            devices: Vec<MtdDevice>,
            #[serde(default)]
            next_page: Option<u64>,
        }
        let r = check(self.send(Request::get(url))?, "listing devices")?;
        let Answer { devices, next_page } = serde_json::from_slice(&r.body)
            .map_err(|e| Error::upstream(format!("the MTD device list is malformed: {e}")))?;
        let next = match next_page {
            Some(next) if !devices.is_empty() && next as usize > page => Some(next as usize),
            _ => None,
        };
        Ok((devices, next))
    }
}
