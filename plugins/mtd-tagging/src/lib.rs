//! `mtd-tagging`: a mobile threat defense (MTD) service kept in step with
//! Workspace ONE UEM, and UEM devices tagged with their MTD status, risk
//! level and threat factors, so that UEM compliance rules can act on them.
//!
//! - Job `device-sync` (every 60 minutes by default, 10 minutes to a day):
//!   the devices of the chosen organization and smart groups go to the MTD
//!   service (without names or emails when `import_pii` is off), devices
//!   that left are deleted after `delete_after_syncs` syncs — never more
//!   than `deletion_threshold_pct` of the inventory in one sync — and the
//!   tags are brought up to date with UEM's bulk calls. A sync larger than
//!   one invocation's request budget or deadline saves where it is and
//!   goes on in a run it asks for at once. See [`sync`] and [`table`].
//! - Job `app-sync` (every 60 minutes by default): the managed apps of the
//!   synced iOS devices go to the MTD service, continuing across runs when
//!   a run's request budget is spent.
//! - Webhook `risk-changed` (HMAC-verified by the host): the MTD service's
//!   notice moves that device's risk and threat tags at once; a notice for
//!   a device not synced yet is kept until it is.
//! - Actions `list-groups` (every organization and smart group the API
//!   account sees, for a setup screen) and `sync-status` (the last good
//!   sync, the tagging state, the last error).
//!
//! One sync or notice at a time (a [`switchyard_sdk::storage::Lease`]).

pub mod mtd;
pub mod settings;
pub mod sync;
pub mod table;

use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;
use switchyard_sdk::schemars::JsonSchema;

use switchyard_sdk::invocation;
use switchyard_sdk::storage::{self, Lease};
use switchyard_sdk::{
    ConfigSpec, Context, CredentialKind, CredentialSlot, Error, JobSpec, Manifest, Plugin, Result,
    WebhookRequest, WebhookResponse, WebhookSpec, config, log,
};
use switchyard_uem::Uem;

use settings::Settings;

/// The webhook route the MTD service posts risk changes to.
pub const RISK_ROUTE: &str = "risk-changed";

fn settings() -> Result<Settings> {
    Settings::read(config::get).map_err(|e| Error::invalid_input(format!("configuration: {e}")))
}

/// No input.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "switchyard_sdk::schemars")]
struct NoInput {}

switchyard_sdk::actions! {
    ListGroups = "list-groups", "Every organization group and smart group the UEM API account can see", role "admin"
        => |_ctx, _input: NoInput| -> Value {
        let uem = Uem::new(&config::require("api_url")?);
        Ok(json!({ "organization_groups": uem.org_groups("")?, "smart_groups": uem.smart_groups("")? }))
    }
    SyncStatus = "sync-status", "The server configuration, the last good device sync, tagging and the last error", role "viewer"
        => |_ctx, _input: NoInput| -> Value {
        let configured = settings();
        let last: Option<sync::Report> = storage::get_json("last_sync")?;
        let mut tags = std::collections::BTreeMap::<String, usize>::new();
        let mut devices = 0;
        if let Some(h) = table::Header::load()? {
            table::for_each_dev(&h, |table::Dev(_, mask, _)| {
                devices += 1;
                for name in h.names_of(mask) {
                    *tags.entry(name.to_owned()).or_default() += 1;
                }
                Ok(())
            })?;
        }
        let last_error: Option<Value> = storage::get_json("last_error")?;
        let pending = storage::list("pending/")?.len();
        let in_progress: Option<Value> = storage::get_json("run")?;
        Ok(json!({
            "configuration": match &configured {
                Ok(s) => json!({"ok": true, "groups": s.groups, "smart_groups": s.smart_groups,
                                "import_pii": s.import_pii, "tag_status": s.tag_status,
                                "tag_risk": s.tag_risk, "tag_threats": s.tag_threats}),
                Err(e) => json!({"ok": false, "error": e.to_string()}),
            },
            "last_sync": last,
            "synced_devices": devices,
            "tags": tags,
            "pending_risk_changes": pending,
            "sync_in_progress": in_progress.map(|r| json!({
                "started": r["started"], "step": r["step"], "report": r["report"],
            })),
            "last_error": last_error,
        }))
    }
}

struct MtdTagging;

impl Plugin for MtdTagging {
    fn manifest() -> Manifest {
        let mut m = declare_actions(Manifest::new(
            "mtd-tagging",
            env!("CARGO_PKG_VERSION"),
            "Mobile threat defense and Workspace ONE UEM: device sync from chosen groups, careful deletion, risk and status tags",
        ))
        .job(JobSpec::new(
            "device-sync",
            "Store the chosen groups' devices in the MTD service, delete those that left (within the threshold), update the tags",
            600,
            3_600,
            86_400,
        )
        .interval_multiple_of(600))
        .job(JobSpec::new(
            "app-sync",
            "Send the managed apps of the synced iOS devices to the MTD service (continues where the last run stopped)",
            600,
            3_600,
            86_400,
        )
        .interval_multiple_of(600))
        .webhook(WebhookSpec::queued(
            RISK_ROUTE,
            "The MTD service's risk-change notices (JSON, HMAC-SHA256 in x-mtd-signature)",
        ))
        .config(ConfigSpec::required("api_url", "UEM REST API base URL, e.g. https://as1234.awmdm.com").url())
        .config(ConfigSpec::required("mtd_url", "The MTD service's API base URL").url());
        for (key, default, description) in settings::DEFAULTS {
            m = m.config(settings::spec(key, default, description));
        }
        m.credential(switchyard_uem::credential_slot(
            "Workspace ONE UEM API: OAuth2 client credentials (recommended), or Basic with the aw-tenant-code header",
        ))
        .credential(CredentialSlot::new(
            mtd::CREDENTIAL,
            "The MTD service's API key (x-api-key)",
            &[CredentialKind::ApiKey],
        ))
        .egress(None, "The UEM API host (config `api_url`) and its token endpoint")
        .egress(None, "The MTD service (config `mtd_url`)")
    }

    fn invoke(ctx: &Context, action: &str, input: Value) -> Result<Value> {
        dispatch_action(ctx, action, input)
    }

    fn handle_webhook(
        ctx: &Context,
        route: &str,
        request: WebhookRequest,
    ) -> Result<WebhookResponse> {
        if route != RISK_ROUTE {
            return Err(Error::not_found(format!(
                "mtd-tagging has no webhook route `{route}`"
            )));
        }
        let body: Value = serde_json::from_slice(&request.body)
            .map_err(|e| Error::invalid_input(format!("the notice is not JSON: {e}")))?;
        let device = body["device_id"]
            .as_str()
            .filter(|d| !d.is_empty() && d.len() <= 64)
            .ok_or_else(|| Error::invalid_input("the notice has no string `device_id`"))?;
        let risk = body["risk"]
            .as_str()
            .filter(|r| matches!(*r, "none" | "low" | "medium" | "high"))
            .ok_or_else(|| Error::invalid_input("`risk` must be none, low, medium or high"))?;
        let factors: Vec<String> = body["threat_factors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(str::to_owned))
            .collect();
        // The notice's own time orders notices that overtake each other.
        let notice = sync::notice(
            risk,
            &factors,
            body["timestamp"].as_i64().unwrap_or_else(sync::now),
        );
        let s = settings()?;
        let result = match Lease::take("lock", &ctx.request_id)? {
            Ok(lease) => {
                let result = sync::risk_changed(&s, device, &notice);
                lease.release()?;
                result
            }
            // The sync that holds the lock applies the notice when it
            // finishes: kept for it. A sync that goes on across
            // invocations then answers for it; otherwise (a one-run sync,
            // or one finishing now, which may have read its notices
            // already) the notice is also tried again once the lock is
            // free, and applying it twice changes nothing.
            Err(left) => {
                let kept = sync::keep_while_busy(device, &notice)?;
                if !sync::in_progress()? {
                    return Err(Error::Upstream {
                        status: None,
                        message: "a device sync holds the lock".into(),
                        retry_after_secs: Some(left.as_secs().clamp(1, 60) as u32),
                    }
                    .transient());
                }
                Ok(kept)
            }
        };
        Ok(WebhookResponse {
            status: 200,
            headers: Vec::new(),
            body: result?.into_bytes(),
        })
    }

    fn run_job(ctx: &Context, job: &str) -> Result<String> {
        if job != "device-sync" && job != "app-sync" {
            return Err(Error::not_found(format!("mtd-tagging has no job `{job}`")));
        }
        let s = settings()?;
        // The app sync touches only the apps field and no tags: it has its
        // own lock, so the two jobs never skip each other.
        let key = if job == "device-sync" {
            "lock"
        } else {
            "app-lock"
        };
        let lease = match Lease::take(key, &ctx.request_id)? {
            Ok(lease) => lease,
            Err(left) => {
                // A sync saved half-way must not wait for its schedule
                // because a notice held the lock for a moment.
                if job == "device-sync" && sync::in_progress()? {
                    invocation::run_again(left.max(Duration::from_secs(1)));
                }
                return Ok(format!(
                    "skipped: another {job} holds the lock for {} s more",
                    left.as_secs()
                ));
            }
        };
        let result = if job == "device-sync" {
            sync::device_sync(&s).map(|outcome| match outcome {
                sync::Outcome::Done(r) => r.summary(),
                sync::Outcome::Continues(what) => {
                    invocation::run_again(Duration::ZERO);
                    what
                }
            })
        } else {
            sync::app_sync(&s).map(|r| {
                if r.left > 0 {
                    invocation::run_again(Duration::ZERO);
                }
                r.summary()
            })
        };
        lease.release()?;
        result.inspect_err(|e| {
            // The previous good sync's counts stay; the error is shown
            // beside them.
            let _ = storage::set_json(
                "last_error",
                &json!({"at": sync::now(), "job": job, "error": e.to_string()}),
            );
            log::error(format!("{job} failed: {e}"));
        })
    }
}

switchyard_sdk::register!(MtdTagging);
