//! Device sync and tagging.
//!
//! A sync reads the devices of every chosen group from UEM (0-based pages;
//! smart-group members), stores each in the MTD service once (a device in
//! two groups counts once), then reads the MTD inventory: devices UEM no
//! longer shows are counted, and one missing for `delete_after_syncs`
//! syncs in a row is deleted — unless the deletions of this sync would be
//! more than `deletion_threshold_pct` of the inventory, when none is and
//! the summary says why. Nothing is deleted, and the missing counts do not
//! move, unless every read and store before succeeded.
//!
//! Tags follow the MTD inventory: each synced device carries its status
//! tag, its risk tag and its threat-factor tags (as switched on), added
//! and removed with UEM's bulk calls. What the plugin tagged is kept in
//! storage (`tags`), so only changes are sent.
//!
//! Storage: `missing` (device id → syncs missed), `tags` (tag → device
//! ids), `tag_ids` (tag → UEM id), `synced` (device ids of the last sync),
//! `pending` (risk changes for devices not synced yet), `last_sync` (the
//! last good sync's report), `lock` (one sync or webhook at a time).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Value, json};
use switchyard_sdk::{Error, Result, log, storage};
use switchyard_uem::{Device, Uem};

use crate::mtd::{Mtd, MtdDevice};
use crate::settings::Settings;

/// Devices per bulk tag call.
const BULK: usize = 500;

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Report {
    /// Seconds since the epoch when it finished.
    pub at: i64,
    /// Groups read.
    pub groups: usize,
    /// Devices found in UEM (each once).
    pub devices: usize,
    /// New in the MTD service.
    pub added: usize,
    /// Updated there.
    pub updated: usize,
    /// In the MTD service but not in the chosen groups.
    pub missing: usize,
    /// Deleted from the MTD service.
    pub deleted: usize,
    /// Why deletions were held back, if they were.
    pub held_back: Option<String>,
    /// Devices added to tags.
    pub tagged: usize,
    /// Devices removed from tags.
    pub untagged: usize,
    /// Risk changes received before their device was synced, now applied.
    pub pending_applied: usize,
}

impl Report {
    /// One line for the job status.
    pub fn summary(&self) -> String {
        let held = self
            .held_back
            .as_deref()
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        format!(
            "{} devices from {} groups: {} added, {} updated, {} missing, {} deleted{held}; tags: {} added, {} removed; {} pending risk changes applied",
            self.devices,
            self.groups,
            self.added,
            self.updated,
            self.missing,
            self.deleted,
            self.tagged,
            self.untagged,
            self.pending_applied
        )
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A device as the MTD service gets it; without PII when `pii` is off.
pub fn mtd_record(d: &Device, groups: &BTreeSet<String>, pii: bool) -> Value {
    json!({
        "udid": d.udid,
        "serial": d.serial,
        "platform": d.platform,
        "os_version": d.os,
        "model": d.model,
        "name": if pii { d.name.clone() } else { String::new() },
        "owner_email": if pii { d.email.clone() } else { format!("UEMDevice{}@vendor.UEM", d.udid) },
        "groups": groups,
    })
}

/// The tags a device should carry, given what the MTD service says of it.
pub fn desired(s: &Settings, m: &MtdDevice) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if s.tag_status
        && let Some(t) = s.status_tag(&m.status)
    {
        out.insert(t.to_owned());
    }
    if s.tag_risk
        && let Some(t) = s.risk_tag(&m.risk)
    {
        out.insert(t.to_owned());
    }
    if s.tag_threats {
        out.extend(m.threat_factors.iter().filter_map(|f| s.threat_tag(f)));
    }
    out
}

/// The group whose devices' tags live in: the setting, or the top of the
/// organization tree.
fn tag_group(s: &Settings, uem: &Uem) -> Result<i64> {
    if let Some(g) = s.tag_group {
        return Ok(g);
    }
    uem.org_groups("")?
        .into_iter()
        .find(|g| g.parent.is_none())
        .map(|g| g.id)
        .ok_or_else(|| Error::upstream("UEM shows no top-level organization group to tag in"))
}

/// The UEM id of tag `name`, from the cache or found (or created) in the
/// tag group.
fn tag_id(s: &Settings, uem: &Uem, ids: &mut BTreeMap<String, i64>, name: &str) -> Result<i64> {
    if let Some(id) = ids.get(name) {
        return Ok(*id);
    }
    let id = uem.ensure_tag(name, tag_group(s, uem)?)?;
    ids.insert(name.to_owned(), id);
    storage::set_json("tag_ids", ids)?;
    Ok(id)
}

/// Moves devices in and out of managed tags so that `tags` (what the
/// plugin tagged) becomes `want`; returns (added, removed).
pub fn apply_tags(
    s: &Settings,
    uem: &Uem,
    tags: &mut BTreeMap<String, BTreeSet<i64>>,
    want: &BTreeMap<String, BTreeSet<i64>>,
    scope: Option<&BTreeSet<i64>>,
) -> Result<(usize, usize)> {
    let mut ids: BTreeMap<String, i64> = storage::get_json("tag_ids")?.unwrap_or_default();
    let names: BTreeSet<String> = tags.keys().chain(want.keys()).cloned().collect();
    let (mut added, mut removed) = (0, 0);
    let empty = BTreeSet::new();
    for name in names.into_iter().filter(|n| s.managed(n)) {
        let have = tags.get(&name).cloned().unwrap_or_default();
        let should = want.get(&name).unwrap_or(&empty);
        // Only devices in scope are judged (a webhook touches one).
        let in_scope = |d: &i64| scope.is_none_or(|sc| sc.contains(d));
        let add: Vec<i64> = should.difference(&have).copied().filter(in_scope).collect();
        let remove: Vec<i64> = have.difference(should).copied().filter(in_scope).collect();
        if add.is_empty() && remove.is_empty() {
            continue;
        }
        let mut id = tag_id(s, uem, &mut ids, &name)?;
        let entry = tags.entry(name.clone()).or_default();
        // Only what UEM accepted is recorded: a refused device is tried
        // again next time (and one UEM would not untag keeps its entry).
        let refused = |bulk: &switchyard_uem::Bulk, verb: &str| -> BTreeSet<i64> {
            bulk.failed
                .iter()
                .filter_map(|(device, why)| {
                    log::warn(format!(
                        "UEM did not {verb} device {device} ({name}): {why}"
                    ));
                    device.parse().ok()
                })
                .collect()
        };
        for chunk in add.chunks(BULK) {
            let bulk = match uem.add_to_tag(id, chunk) {
                // A tag someone deleted in UEM: created again.
                Err(Error::NotFound(_)) => {
                    ids.remove(&name);
                    id = tag_id(s, uem, &mut ids, &name)?;
                    uem.add_to_tag(id, chunk)?
                }
                other => other?,
            };
            let no = refused(&bulk, "tag");
            for d in chunk.iter().filter(|d| !no.contains(d)) {
                entry.insert(*d);
                added += 1;
            }
        }
        for chunk in remove.chunks(BULK) {
            let bulk = match uem.remove_from_tag(id, chunk) {
                // The tag is gone, and with it what it held.
                Err(Error::NotFound(_)) => switchyard_uem::Bulk::default(),
                other => other?,
            };
            let no = refused(&bulk, "untag");
            for d in chunk.iter().filter(|d| !no.contains(d)) {
                entry.remove(d);
                removed += 1;
            }
        }
    }
    tags.retain(|_, devices| !devices.is_empty());
    Ok((added, removed))
}

/// One device sync, then tagging.
pub fn device_sync(s: &Settings) -> Result<Report> {
    let uem = Uem::new(&s.api_url);
    let mtd = Mtd::new(&s.mtd_url);
    let mut report = Report {
        groups: s.groups.len() + s.smart_groups.len(),
        ..Report::default()
    };

    // 1. Every device of every chosen group, once, with its group names.
    let names: BTreeMap<i64, String> = uem
        .org_groups("")?
        .into_iter()
        .map(|g| (g.id, g.name))
        .collect();
    let smart_names: BTreeMap<i64, String> = if s.smart_groups.is_empty() {
        BTreeMap::new()
    } else {
        uem.smart_groups("")?
            .into_iter()
            .map(|g| (g.id, g.name))
            .collect()
    };
    let mut devices: BTreeMap<i64, (Device, BTreeSet<String>)> = BTreeMap::new();
    let mut add = |d: Device, group: String, ae: bool| {
        let entry = devices.entry(d.id).or_insert_with(|| (d, BTreeSet::new()));
        entry.1.insert(group);
        if ae {
            entry.1.insert("Android Enterprise".into());
        }
    };
    // Without PII, groups are sent by id: a group's name can name people.
    let label = |names: &BTreeMap<i64, String>, kind: &str, g: i64| -> String {
        match names.get(&g) {
            Some(n) if s.import_pii => n.clone(),
            _ => format!("{kind} {g}"),
        }
    };
    for g in &s.groups {
        let name = label(&names, "group", *g);
        let ae = s.android_enterprise.contains(g);
        for v in uem.search_all(
            &format!("/mdm/devices/search?lgid={g}"),
            "Devices",
            1_000_000,
            &format!("the devices of group {g}"),
        )? {
            add(Device::from_uem(&v)?, name.clone(), ae);
        }
    }
    for g in &s.smart_groups {
        let name = label(&smart_names, "smart group", *g);
        let ae = s.android_enterprise.contains(g);
        for d in uem.smart_group_devices(*g)? {
            add(d, name.clone(), ae);
        }
    }
    report.devices = devices.len();

    // 2. Each into the MTD service.
    let total = devices.len() as u64;
    for (i, (id, (d, groups))) in devices.iter().enumerate() {
        if mtd.upsert(*id, &mtd_record(d, groups, s.import_pii))? {
            report.added += 1;
        } else {
            report.updated += 1;
        }
        if i % 100 == 99 {
            log::progress(
                i as u64 + 1,
                Some(total),
                "storing devices in the MTD service",
            );
        }
    }

    // 3. The inventory: what is missing, and what may be deleted.
    let inventory = mtd.list()?;
    let mut missing: BTreeMap<String, u32> = storage::get_json("missing")?.unwrap_or_default();
    missing.retain(|id, _| id.parse::<i64>().is_ok_and(|n| !devices.contains_key(&n)));
    let mut due = Vec::new();
    for m in &inventory {
        if m.id.parse::<i64>().is_ok_and(|n| devices.contains_key(&n)) {
            continue;
        }
        report.missing += 1;
        let count = missing.entry(m.id.clone()).or_insert(0);
        *count += 1;
        if *count >= s.delete_after {
            due.push(m.id.clone());
        }
    }
    let share = if inventory.is_empty() {
        0
    } else {
        due.len() * 100 / inventory.len()
    };
    if !due.is_empty()
        && s.threshold_pct < 100
        && due.len() * 100 > s.threshold_pct as usize * inventory.len()
    {
        let why = format!(
            "deletion held back: {} of {} devices ({share} %) is over the {} % threshold",
            due.len(),
            inventory.len(),
            s.threshold_pct
        );
        log::warn(&why);
        report.held_back = Some(why);
    } else {
        for id in &due {
            mtd.delete(id)?;
            missing.remove(id);
            report.deleted += 1;
        }
    }
    storage::set_json("missing", &missing)?;

    // 4. Tags, from what the service says of each synced device; a risk
    // change announced before the device was synced is applied now.
    let mut pending: BTreeMap<String, Value> = storage::get_json("pending")?.unwrap_or_default();
    let mut want: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for m in &inventory {
        let Ok(id) = m.id.parse::<i64>() else {
            continue;
        };
        if !devices.contains_key(&id) {
            continue;
        }
        let mut m = m.clone();
        if let Some(p) = pending.remove(&m.id) {
            report.pending_applied += 1;
            if let Some(risk) = p["risk"].as_str() {
                m.risk = risk.to_owned();
            }
            m.threat_factors = p["threat_factors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect();
        }
        for tag in desired(s, &m) {
            want.entry(tag).or_default().insert(id);
        }
    }
    let mut tags: BTreeMap<String, BTreeSet<i64>> = storage::get_json("tags")?.unwrap_or_default();
    let (added, removed) = apply_tags(s, &uem, &mut tags, &want, None)?;
    storage::set_json("tags", &tags)?;
    report.tagged = added;
    report.untagged = removed;

    let synced: BTreeSet<i64> = devices.keys().copied().collect();
    // The iOS devices and their UDIDs, for the app sync.
    let ios: BTreeMap<i64, String> = devices
        .iter()
        .filter(|(_, (d, _))| d.os_family == Some(switchyard_uem::OsFamily::IOs))
        .map(|(id, (d, _))| (*id, d.udid.clone()))
        .collect();
    storage::set_json("ios", &ios)?;
    storage::set_json("pending", &pending)?;
    storage::set_json("synced", &synced)?;
    report.at = now();
    storage::set_json("last_sync", &report)?;
    Ok(report)
}

/// What an app sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AppReport {
    /// iOS devices whose apps were sent this run.
    pub devices: usize,
    /// Managed apps sent.
    pub apps: usize,
    /// iOS devices left for the next run (the request budget or the
    /// deadline ran low).
    pub left: usize,
    /// Devices whose apps could not be read or sent (each logged).
    pub failed: usize,
}

impl AppReport {
    /// One line for the job status.
    pub fn summary(&self) -> String {
        let rest = if self.left > 0 {
            format!("; {} devices left for the next run", self.left)
        } else {
            String::new()
        };
        let failed = if self.failed > 0 {
            format!("; {} failed", self.failed)
        } else {
            String::new()
        };
        format!(
            "apps of {} iOS devices sent ({} managed apps){rest}{failed}",
            self.devices, self.apps
        )
    }
}

/// The managed apps of each synced iOS device go to the MTD service. A run
/// that nears its request budget stops and the next one continues where
/// it stopped (`app_cursor`), so any number of devices is covered.
pub fn app_sync(s: &Settings) -> Result<AppReport> {
    let uem = Uem::new(&s.api_url);
    let mtd = Mtd::new(&s.mtd_url);
    let ios: BTreeMap<i64, String> = storage::get_json("ios")?.unwrap_or_default();
    let cursor: i64 = storage::get_json("app_cursor")?.unwrap_or(0);
    let mut report = AppReport::default();
    let todo: Vec<(&i64, &String)> = ios.range(cursor + 1..).collect();
    for (i, (id, udid)) in todo.iter().enumerate() {
        // Stop while there is room to record where: the next run goes on
        // from here.
        let out_of_time =
            switchyard_sdk::invocation::remaining() < std::time::Duration::from_secs(3);
        if switchyard_sdk::invocation::remaining_requests() < 4 || out_of_time {
            report.left = todo.len() - i;
            storage::set_json("app_cursor", &(**id - 1))?;
            return Ok(report);
        }
        let sent = uem
            .get(
                &format!("/mdm/devices/{id}/apps"),
                &format!("the apps of device {id}"),
            )
            .and_then(|apps| {
                let managed: Vec<Value> = apps.unwrap_or(Value::Null)["DeviceApps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|a| a["IsManaged"] == true)
                    .map(
                        |a| json!({"package": a["ApplicationIdentifier"], "version": a["Version"]}),
                    )
                    .collect();
                mtd.upsert(
                    **id,
                    &json!({"udid": udid, "platform": "Apple", "apps": managed}),
                )?;
                Ok(managed.len())
            });
        match sent {
            Ok(n) => {
                report.apps += n;
                report.devices += 1;
            }
            // One device's trouble does not stop the others.
            Err(e) => {
                log::warn(format!("apps of device {id}: {e}"));
                report.failed += 1;
            }
        }
        if i % 100 == 99 {
            log::progress(i as u64 + 1, Some(todo.len() as u64), "sending apps");
            storage::set_json("app_cursor", *id)?;
        }
    }
    storage::set_json("app_cursor", &0i64)?;
    Ok(report)
}

/// A risk change the service announced: the device's risk and threat tags
/// move now if it has been synced; otherwise it waits for the device.
pub fn risk_changed(s: &Settings, device: &str, risk: &str, factors: &[String]) -> Result<String> {
    let synced: BTreeSet<i64> = storage::get_json("synced")?.unwrap_or_default();
    let id = device.parse::<i64>().ok().filter(|n| synced.contains(n));
    let Some(id) = id else {
        let mut pending: BTreeMap<String, Value> =
            storage::get_json("pending")?.unwrap_or_default();
        pending.insert(
            device.to_owned(),
            json!({"risk": risk, "threat_factors": factors, "at": now()}),
        );
        storage::set_json("pending", &pending)?;
        return Ok(format!(
            "device {device} is not synced yet; its risk ({risk}) is kept until it is"
        ));
    };
    let uem = Uem::new(&s.api_url);
    let mut tags: BTreeMap<String, BTreeSet<i64>> = storage::get_json("tags")?.unwrap_or_default();
    // The status stays as it is: the notice is about risk.
    let status = s
        .status_tags
        .iter()
        .zip(["provisioned", "active", "inactive"])
        .find(|(t, _)| tags.get(*t).is_some_and(|d| d.contains(&id)))
        .map_or("", |(_, st)| st);
    let now_is = MtdDevice {
        id: device.to_owned(),
        status: status.to_owned(),
        risk: risk.to_owned(),
        threat_factors: factors.to_vec(),
    };
    let mut want: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for t in desired(s, &now_is) {
        want.entry(t).or_default().insert(id);
    }
    // Every other device keeps what it has.
    for (t, devices) in &tags {
        let others: BTreeSet<i64> = devices.iter().copied().filter(|d| *d != id).collect();
        want.entry(t.clone()).or_default().extend(others);
    }
    let scope = BTreeSet::from([id]);
    let (added, removed) = apply_tags(s, &uem, &mut tags, &want, Some(&scope))?;
    storage::set_json("tags", &tags)?;
    Ok(format!(
        "device {device}: risk {risk}; {added} tag(s) added, {removed} removed"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let mut all = pairs.to_vec();
        all.extend_from_slice(&[
            ("api_url", "https://uem.example"),
            ("mtd_url", "https://mtd.example"),
            ("groups", "570"),
        ]);
        Settings::read(|k| {
            all.iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| (*v).to_owned())
        })
        .unwrap()
    }

    #[test]
    fn tags_follow_status_risk_and_threats_as_switched() {
        let m = MtdDevice {
            id: "1".into(),
            status: "active".into(),
            risk: "high".into(),
            threat_factors: vec!["jailbreak".into(), "bad/name".into()],
        };
        let s = settings(&[]);
        assert_eq!(
            desired(&s, &m).into_iter().collect::<Vec<_>>(),
            ["CHKP_Risk_High", "CHKP_Status_Active"]
        );
        let s = settings(&[("tag_status", "false"), ("tag_threats", "true")]);
        assert_eq!(
            desired(&s, &m).into_iter().collect::<Vec<_>>(),
            ["CHKP_Risk_High", "CHKP_Threat_jailbreak"]
        );
    }

    #[test]
    fn without_pii_nothing_personal_is_sent() {
        let d = Device::from_uem(&json!({
            "Id": {"Value": 7}, "Udid": "U1", "SerialNumber": "S1", "DeviceFriendlyName": "Ada's iPhone",
            "UserEmailAddress": "ada@acme.example", "Platform": "Apple", "OperatingSystem": "17.4",
        }))
        .unwrap();
        let groups = BTreeSet::from(["Sales".to_owned()]);
        let r = mtd_record(&d, &groups, false);
        assert_eq!(r["owner_email"], "UEMDevice U1@vendor.UEM".replace(' ', ""));
        assert_eq!(r["name"], "");
        assert!(!r.to_string().contains("ada"));
        let r = mtd_record(&d, &groups, true);
        assert_eq!(r["owner_email"], "ada@acme.example");
    }
}
