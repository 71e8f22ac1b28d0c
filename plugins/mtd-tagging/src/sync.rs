//! Device sync and tagging, in steps that go on across invocations.
//!
//! A sync:
//! 1. **Devices**: reads the devices of every chosen group from UEM page by
//!    page (0-based pages; smart-group members) and stores each page in
//!    the MTD service with one bulk request. A device in two groups counts
//!    once (it is stored again with both groups).
//! 2. **Inventory**: reads the MTD inventory page by page. A device UEM no
//!    longer shows is counted missing; for the others the wanted tags are
//!    worked out (a risk change announced before the device was synced
//!    counts).
//! 3. **Deletion**: a device missing `delete_after_syncs` syncs in a row is
//!    deleted — unless the deletions of this sync are more than
//!    `deletion_threshold_pct` of the inventory (but one device is always
//!    allowed, so that a small fleet can lose one), when none is and the
//!    summary says why.
//! 4. **Tags**: each synced device gets its status tag, risk tag and
//!    threat-factor tags (as switched on) with UEM's bulk calls; tags that
//!    no longer apply, and those of devices that left, are removed. Only
//!    what UEM accepted is recorded.
//! 5. **Finish**: the new device table ([`crate::table`]) and the report.
//!
//! When an invocation's request budget or deadline runs low, the sync
//! saves where it is (`run` and its chunked lists), asks the host to run
//! it again at once (`invocation.run-again`) and goes on there, so any
//! number of devices is covered without raising the host's limits. A sync
//! that fails is taken up again from its last saved step by the next run;
//! nothing is deleted, and the last good sync's report stays, until its
//! inventory has been read whole. A saved sync older than a day, or one
//! for other groups, is dropped and started afresh.
//!
//! Risk notices (the `risk-changed` webhook) move one device's tags at
//! once. While a sync is in progress, or before the device is synced, a
//! notice is kept (`pending/<device>`, the newest wins) and the sync
//! applies it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard_sdk::{Error, Result, invocation, log, storage};
use switchyard_uem::{Device, Uem};

use crate::mtd::{self, Mtd, MtdDevice};
use crate::settings::Settings;
use crate::table::{self, Dev, DevRef, Header, Mask};

/// Devices per bulk tag call.
const BULK: usize = 500;

/// Devices per UEM search page.
const PAGE: usize = 500;

/// A saved sync older than this is started afresh.
const STALE_RUN_SECS: i64 = 24 * 3600;

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Refused by the MTD service (each logged).
    #[serde(default)]
    pub skipped: usize,
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
    /// Invocations the sync took.
    #[serde(default)]
    pub runs: u32,
}

impl Report {
    /// One line for the job status.
    pub fn summary(&self) -> String {
        let held = self
            .held_back
            .as_deref()
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        let skipped = if self.skipped > 0 {
            format!(", {} refused by the MTD service", self.skipped)
        } else {
            String::new()
        };
        format!(
            "{} devices from {} groups: {} added, {} updated{skipped}, {} missing, {} deleted{held}; tags: {} added, {} removed; {} pending risk changes applied; {} run(s)",
            self.devices,
            self.groups,
            self.added,
            self.updated,
            self.missing,
            self.deleted,
            self.tagged,
            self.untagged,
            self.pending_applied,
            self.runs,
        )
    }
}

/// How a sync invocation ended.
#[derive(Debug)]
pub enum Outcome {
    /// The sync finished.
    Done(Report),
    /// It saved where it is and goes on in the next run; what it is doing.
    Continues(String),
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

/// UEM tag ids by name, cached in storage (`tag_ids`).
struct TagIds(HashMap<String, i64>);

impl TagIds {
    fn load() -> Result<Self> {
        Ok(Self(storage::get_json("tag_ids")?.unwrap_or_default()))
    }

    /// The UEM id of tag `name`, found (or created) in the tag group.
    fn get(&mut self, s: &Settings, uem: &Uem, name: &str) -> Result<i64> {
        if let Some(id) = self.0.get(name) {
            return Ok(*id);
        }
        let id = uem.ensure_tag(name, tag_group(s, uem)?)?;
        self.0.insert(name.to_owned(), id);
        storage::set_json("tag_ids", &self.0)?;
        Ok(id)
    }

    /// Adds (or removes) `devices` to tag `name` in one bulk call; returns
    /// the devices that have (or no longer have) the tag. A refused one is
    /// logged and tried again next time, except a device UEM no longer
    /// knows when removing: it carries no tag any more.
    fn apply(
        &mut self,
        s: &Settings,
        uem: &Uem,
        name: &str,
        devices: &[i64],
        add: bool,
    ) -> Result<Vec<i64>> {
        let id = self.get(s, uem, name)?;
        let bulk = if add {
            match uem.add_to_tag(id, devices) {
                // A tag someone deleted in UEM: created again.
                Err(Error::NotFound(_)) => {
                    self.0.remove(name);
                    let id = self.get(s, uem, name)?;
                    uem.add_to_tag(id, devices)?
                }
                other => other?,
            }
        } else {
            match uem.remove_from_tag(id, devices) {
                // The tag is gone, and with it what it held.
                Err(Error::NotFound(_)) => switchyard_uem::Bulk::default(),
                other => other?,
            }
        };
        let verb = if add { "tag" } else { "untag" };
        let refused: HashSet<i64> = bulk
            .failed
            .iter()
            .filter(|f| add || !f.device_unknown())
            .filter_map(|f| {
                log::warn(format!(
                    "UEM did not {verb} device {} ({name}): {}",
                    f.item, f.message
                ));
                f.item.parse().ok()
            })
            .collect();
        Ok(devices
            .iter()
            .copied()
            .filter(|d| !refused.contains(d))
            .collect())
    }
}

/// When an invocation stops and saves: too few requests or too little
/// time left for one more step and the save. The time kept back is 5 s,
/// or a quarter of a shorter deadline; the first step of an invocation
/// always runs, so that every invocation gets on.
struct Budget {
    margin: Duration,
    stepped: bool,
}

impl Budget {
    fn new() -> Self {
        Self {
            margin: (invocation::remaining() / 4).min(Duration::from_secs(5)),
            stepped: false,
        }
    }

    /// Whether to stop before the next step (counted as taken if not).
    fn low(&mut self) -> bool {
        let low = self.stepped
            && (invocation::remaining_requests() < 8 || invocation::remaining() < self.margin);
        self.stepped = true;
        low
    }
}

/// A device of a sync in progress, as [`Sync::seen`] holds it under its
/// id: wanted and present tags (bits of [`Run::names`]), the UDID of an
/// iOS device, its group set (index into [`Run::sets`]) and flags
/// ([`GONE`], [`IN_INVENTORY`]). A sync holds one per device, so it is
/// kept small: 32 bytes and the UDID.
#[derive(Debug, Clone)]
struct Seen {
    want: Mask,
    have: Mask,
    udid: Option<Box<str>>,
    set: u32,
    flags: u8,
}

/// A [`Seen`] as a sync saves it between invocations:
/// `[id, set, want, have, udid, flags]`.
#[derive(Deserialize)]
struct SavedSeen(i64, u32, Mask, Mask, Option<String>, u8);

/// A [`SavedSeen`] to be written, borrowing its UDID.
#[derive(Serialize)]
struct SavingSeen<'a>(i64, u32, Mask, Mask, Option<&'a str>, u8);

/// In the last table but no longer in the chosen groups: its tags go.
const GONE: u8 = 1;
/// Found in the MTD inventory.
const IN_INVENTORY: u8 = 2;

/// Where a sync is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Step {
    /// Reading group `list` (index into [`Run::lists`]) at page `page`.
    Devices { list: usize, page: usize },
    /// Reading the MTD inventory at page `page`.
    Inventory { page: usize },
    /// Deleting the devices that are due.
    Delete,
    /// Moving tags.
    Tags,
    /// Saving the table.
    Finish,
}

/// A sync between its invocations (storage key `run`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Run {
    started: i64,
    step: Step,
    report: Report,
    /// The groups read: (`org` or `smart`, id), organization groups first.
    lists: Vec<(String, i64)>,
    /// What each of those is called in the MTD service.
    labels: Vec<String>,
    /// Whether each is an Android Enterprise group.
    android: Vec<bool>,
    /// Distinct sets of groups devices are in (indices into `lists`).
    sets: Vec<Vec<u16>>,
    /// Tag names, by bit of the masks of `seen`.
    names: Vec<String>,
    /// Generation of the saved lists (`run/<generation>/seen|missing`).
    generation: u64,
    seen_chunks: usize,
    missing_chunks: usize,
    /// Whether the last table's tags were merged into `seen`.
    merged: bool,
    /// Whether this sync may delete (decided once, when the inventory is read).
    delete_ok: Option<bool>,
    /// The MTD inventory's size.
    inventory: usize,
    /// Risk notices applied: (storage key, value as read), deleted when
    /// the table is saved unless a newer one replaced them.
    applied: Vec<(String, String)>,
    /// The table's generation when the sync started (0: none): a newer
    /// one means this sync saved its table already.
    #[serde(default)]
    base_generation: u64,
}

/// A sync loaded for one invocation.
struct Sync<'a> {
    s: &'a Settings,
    uem: Uem,
    mtd: Mtd,
    run: Run,
    seen: HashMap<i64, Seen>,
    /// (MTD id, syncs missed), for the inventory read so far.
    missing: Vec<(String, u32)>,
    /// The ids of `missing`, to find one without a walk of the list.
    missing_ids: HashSet<String>,
    budget: Budget,
}

fn lists_of(s: &Settings) -> Vec<(String, i64)> {
    let org = s.groups.iter().map(|g| ("org".to_owned(), *g));
    let smart = s.smart_groups.iter().map(|g| ("smart".to_owned(), *g));
    org.chain(smart).collect()
}

impl<'a> Sync<'a> {
    /// The saved sync, or a new one.
    fn load(s: &'a Settings) -> Result<Self> {
        let uem = Uem::new(&s.api_url);
        let mtd = Mtd::new(&s.mtd_url);
        if let Some(run) = storage::get_json::<Run>("run")? {
            if run.lists == lists_of(s) && now() - run.started < STALE_RUN_SECS {
                // Chunk by chunk into the map: a whole list beside the map
                // would double the memory a large fleet needs.
                let mut seen = HashMap::with_capacity(run.report.devices);
                table::for_each_in_list(
                    &format!("run/{}/seen", run.generation),
                    run.seen_chunks,
                    |SavedSeen(id, set, want, have, udid, flags)| {
                        let udid = udid.map(String::into_boxed_str);
                        seen.insert(
                            id,
                            Seen {
                                want,
                                have,
                                udid,
                                set,
                                flags,
                            },
                        );
                    },
                )?;
                let missing: Vec<(String, u32)> = table::load_list(
                    &format!("run/{}/missing", run.generation),
                    run.missing_chunks,
                )?;
                return Ok(Self {
                    s,
                    uem,
                    mtd,
                    run,
                    seen,
                    missing_ids: missing.iter().map(|(id, _)| id.clone()).collect(),
                    missing,
                    budget: Budget::new(),
                });
            }
            log::warn("a saved device sync is stale or for other groups: starting afresh");
            drop_run(&run)?;
        }
        migrate_v0()?;
        let lists = lists_of(s);
        let names: HashMap<i64, String> = uem
            .org_groups("")?
            .into_iter()
            .map(|g| (g.id, g.name))
            .collect();
        let smart_names: HashMap<i64, String> = if s.smart_groups.is_empty() {
            HashMap::new()
        } else {
            uem.smart_groups("")?
                .into_iter()
                .map(|g| (g.id, g.name))
                .collect()
        };
        // Without PII, groups are sent by id: a group's name can name people.
        let labels = lists
            .iter()
            .map(|(kind, g)| {
                let (known, word) = if kind == "org" {
                    (&names, "group")
                } else {
                    (&smart_names, "smart group")
                };
                match known.get(g) {
                    Some(n) if s.import_pii => n.clone(),
                    _ => format!("{word} {g}"),
                }
            })
            .collect();
        let android = lists
            .iter()
            .map(|(_, g)| s.android_enterprise.contains(g))
            .collect();
        let run = Run {
            started: now(),
            step: Step::Devices { list: 0, page: 0 },
            report: Report {
                groups: lists.len(),
                ..Report::default()
            },
            lists,
            labels,
            android,
            sets: Vec::new(),
            names: Vec::new(),
            generation: 0,
            seen_chunks: 0,
            missing_chunks: 0,
            merged: false,
            delete_ok: None,
            inventory: 0,
            applied: Vec::new(),
            base_generation: Header::load()?.map_or(0, |h| h.generation),
        };
        Ok(Self {
            s,
            uem,
            mtd,
            run,
            seen: HashMap::new(),
            missing: Vec::new(),
            missing_ids: HashSet::new(),
            budget: Budget::new(),
        })
    }

    /// Saves where the sync is: the lists of a new generation, then `run`
    /// (which makes them current), then the old generation goes.
    fn save(&mut self) -> Result<()> {
        let old = (
            self.run.generation,
            self.run.seen_chunks,
            self.run.missing_chunks,
        );
        let generation = old.0 + 1;
        // In id order, a chunk at a time: only the ids are sorted beside
        // the map (8 bytes a device, not a whole copy of the table).
        let mut ids: Vec<i64> = self.seen.keys().copied().collect();
        ids.sort_unstable();
        let seen = &self.seen;
        let chunks = ids.chunks(table::CHUNK).map(|ids| {
            ids.iter()
                .map(|id| {
                    let e = &seen[id];
                    SavingSeen(*id, e.set, e.want, e.have, e.udid.as_deref(), e.flags)
                })
                .collect::<Vec<_>>()
        });
        self.run.seen_chunks = table::save_chunks(&format!("run/{generation}/seen"), chunks)?;
        self.run.missing_chunks =
            table::save_list(&format!("run/{generation}/missing"), &self.missing)?;
        self.run.generation = generation;
        storage::set_json("run", &self.run)?;
        table::delete_list(&format!("run/{}/seen", old.0), old.1)?;
        table::delete_list(&format!("run/{}/missing", old.0), old.2)
    }

    /// The label set of group set `set`, as the MTD service gets it.
    fn group_labels(&self, set: u32) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for &i in &self.run.sets[set as usize] {
            out.insert(self.run.labels[i as usize].clone());
            if self.run.android[i as usize] {
                out.insert("Android Enterprise".into());
            }
        }
        out
    }

    /// The index of group set `groups`, added when new.
    fn intern(&mut self, groups: Vec<u16>) -> u32 {
        match self.run.sets.iter().position(|g| *g == groups) {
            Some(i) => i as u32,
            None => {
                self.run.sets.push(groups);
                (self.run.sets.len() - 1) as u32
            }
        }
    }

    /// One page of a group: each device new to this sync, or found in one
    /// more group, goes to the MTD service in one bulk request. Returns
    /// whether it was the group's last page.
    fn devices_page(&mut self, list: usize, page: usize) -> Result<bool> {
        let (kind, g) = self.run.lists[list].clone();
        // The page's devices, taken out of the answer (not copied).
        let devices = |v: &mut Value| match v.get_mut("Devices").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        let (items, last) = if kind == "org" {
            let mut v = self
                .uem
                .get(
                    &format!("/mdm/devices/search?lgid={g}&page={page}&pagesize={PAGE}"),
                    &format!("the devices of group {g}"),
                )?
                .unwrap_or(Value::Null);
            let items = devices(&mut v);
            let total = v["Total"].as_u64().unwrap_or(0) as usize;
            let last = items.len() < PAGE || (page + 1) * PAGE >= total;
            (items, last)
        } else {
            let mut v = self
                .uem
                .get(
                    &format!("/mdm/smartgroups/{g}/devices"),
                    &format!("the devices of smart group {g}"),
                )?
                .unwrap_or(Value::Null);
            (devices(&mut v), true)
        };
        let mut labels: HashMap<u32, BTreeSet<String>> = HashMap::new();
        let mut upserts = Vec::new();
        let mut first = HashSet::new();
        for v in &items {
            let d = Device::from_uem(v)?;
            let set = match self.seen.get(&d.id).map(|e| e.set) {
                None => {
                    first.insert(d.id);
                    self.intern(vec![list as u16])
                }
                Some(set) if self.run.sets[set as usize].contains(&(list as u16)) => continue,
                Some(set) => {
                    let mut groups = self.run.sets[set as usize].clone();
                    groups.push(list as u16);
                    self.intern(groups)
                }
            };
            let groups = labels.entry(set).or_insert_with(|| self.group_labels(set));
            let mut record = mtd_record(&d, groups, self.s.import_pii);
            record["id"] = json!(d.id.to_string());
            upserts.push(record);
            let ios = d.os_family == Some(switchyard_uem::OsFamily::IOs);
            let entry = self.seen.entry(d.id).or_insert(Seen {
                want: 0,
                have: 0,
                udid: None,
                set,
                flags: 0,
            });
            entry.set = set;
            entry.udid = ios.then(|| d.udid.as_str().into());
        }
        for chunk in upserts.chunks(mtd::BULK) {
            for r in self.mtd.bulk(chunk, &[])? {
                let Some(id) = r.id.as_deref().and_then(|i| i.parse::<i64>().ok()) else {
                    continue;
                };
                if !first.contains(&id) {
                    continue;
                }
                match r.status {
                    201 => self.run.report.added += 1,
                    200 => self.run.report.updated += 1,
                    status => {
                        log::warn(format!(
                            "the MTD service refused device {id} ({status}): {}",
                            r.error.as_deref().unwrap_or("no reason given")
                        ));
                        self.run.report.skipped += 1;
                    }
                }
            }
        }
        self.run.report.devices = self.seen.len();
        Ok(last)
    }

    /// One page of the MTD inventory; returns the next page's number.
    fn inventory_page(
        &mut self,
        page: usize,
        before: &HashMap<String, u32>,
        pending: &HashMap<String, (String, Value)>,
    ) -> Result<Option<usize>> {
        let (devices, next) = self.mtd.page(page)?;
        for mut m in devices {
            self.run.inventory += 1;
            let Some(id) =
                m.id.parse::<i64>()
                    .ok()
                    .filter(|n| self.seen.contains_key(n))
            else {
                // (A page that shifted between invocations may show a
                // device twice.)
                if self.missing_ids.insert(m.id.clone()) {
                    self.run.report.missing += 1;
                    let count = before.get(&m.id).copied().unwrap_or(0) + 1;
                    self.missing.push((m.id, count));
                }
                continue;
            };
            let key = format!("pending/{}", m.id);
            if let Some((raw, p)) = pending.get(&key) {
                if !self.run.applied.iter().any(|(k, _)| *k == key) {
                    self.run.applied.push((key, raw.clone()));
                    self.run.report.pending_applied += 1;
                }
                if let Some(risk) = p["risk"].as_str() {
                    m.risk = risk.to_owned();
                }
                m.threat_factors = factors(p);
            }
            let mut want = 0;
            for tag in desired(self.s, &m) {
                want |= table::bit_of(&mut self.run.names, &tag)?;
            }
            let e = self.seen.get_mut(&id).expect("checked above");
            e.want = want;
            e.flags |= IN_INVENTORY;
        }
        Ok(next)
    }

    /// Deletes the devices that are due, if the threshold allows; returns
    /// false when it stopped for lack of budget.
    fn delete(&mut self) -> Result<bool> {
        let s = self.s;
        let due = |missing: &[(String, u32)]| -> Vec<String> {
            missing
                .iter()
                .filter(|(_, n)| *n >= s.delete_after)
                .map(|(id, _)| id.clone())
                .collect()
        };
        if self.run.delete_ok.is_none() {
            let n = due(&self.missing).len();
            let total = self.run.inventory;
            // The threshold guards against a mass deletion; one device is
            // never one, or a fleet of four could never lose a device.
            let allowed = match s.threshold_pct {
                100.. => usize::MAX,
                0 => 0,
                pct => (total * pct as usize / 100).max(1),
            };
            let ok = n <= allowed;
            if !ok {
                let share = (n * 100).checked_div(total).unwrap_or(0);
                let why = format!(
                    "deletion held back: {n} of {total} devices ({share} %) is over the {} % threshold",
                    s.threshold_pct
                );
                log::warn(&why);
                self.run.report.held_back = Some(why);
            }
            self.run.delete_ok = Some(ok);
        }
        if self.run.delete_ok != Some(true) {
            return Ok(true);
        }
        let due = due(&self.missing);
        for chunk in due.chunks(mtd::BULK) {
            if self.budget.low() {
                return Ok(false);
            }
            let results = self.mtd.bulk(&[], chunk)?;
            let gone: HashSet<&str> = results
                .iter()
                .filter(|r| matches!(r.status, 204 | 404))
                .filter_map(|r| r.id.as_deref())
                .collect();
            self.run.report.deleted += results.iter().filter(|r| r.status == 204).count();
            for r in results.iter().filter(|r| !matches!(r.status, 204 | 404)) {
                log::warn(format!(
                    "the MTD service did not delete device {} ({}): {}",
                    r.id.as_deref().unwrap_or("?"),
                    r.status,
                    r.error.as_deref().unwrap_or("no reason given")
                ));
            }
            self.missing.retain(|(id, _)| !gone.contains(id.as_str()));
            self.missing_ids.retain(|id| !gone.contains(id.as_str()));
        }
        Ok(true)
    }

    /// Brings the last table's tags in: present tags of devices still here,
    /// and the devices that left (whose tags go), including those that
    /// left before and whose tags UEM did not let go of then.
    fn merge_table(&mut self, old: Option<&Header>) -> Result<()> {
        let Some(h) = old else {
            return Ok(());
        };
        let names = &mut self.run.names;
        let seen = &mut self.seen;
        let mut merge = |id: i64, mask: Mask| -> Result<()> {
            let mut have = 0;
            for name in h.names_of(mask) {
                have |= table::bit_of(names, name)?;
            }
            seen.entry(id)
                .and_modify(|e| e.have = have)
                .or_insert(Seen {
                    want: 0,
                    have,
                    udid: None,
                    set: u32::MAX,
                    flags: GONE,
                });
            Ok(())
        };
        table::for_each_dev(h, |Dev(id, mask, _)| merge(id, mask))?;
        for (id, mask) in table::load_departed(h)? {
            merge(id, mask)?;
        }
        Ok(())
    }

    /// Moves tags until every device has what it should; returns false
    /// when it stopped for lack of budget.
    fn tags(&mut self, ids: &mut TagIds) -> Result<bool> {
        for bit in 0..self.run.names.len() {
            let name = self.run.names[bit].clone();
            if !self.s.managed(&name) {
                continue;
            }
            let m: Mask = 1 << bit;
            for add in [true, false] {
                let mut todo: Vec<i64> = self
                    .seen
                    .iter()
                    // A device the inventory did not show (its pages moved
                    // between invocations) keeps its tags until next time;
                    // one that left loses them.
                    .filter(|(_, e)| e.flags & (IN_INVENTORY | GONE) != 0)
                    .filter(|(_, e)| {
                        let (want, have) = (e.want & m != 0, e.have & m != 0);
                        if add { want && !have } else { have && !want }
                    })
                    .map(|(id, _)| *id)
                    .collect();
                todo.sort_unstable();
                for chunk in todo.chunks(BULK) {
                    if self.budget.low() {
                        return Ok(false);
                    }
                    let done = ids.apply(self.s, &self.uem, &name, chunk, add)?;
                    for d in &done {
                        if let Some(e) = self.seen.get_mut(d) {
                            e.have = if add { e.have | m } else { e.have & !m };
                        }
                    }
                    if add {
                        self.run.report.tagged += done.len();
                    } else {
                        self.run.report.untagged += done.len();
                    }
                }
            }
        }
        Ok(true)
    }

    /// Saves the new table and the report, and forgets the run.
    fn finish(mut self, old: Option<&Header>) -> Result<Report> {
        let ids: Vec<i64> = self
            .seen
            .iter()
            .filter(|(_, e)| e.flags & GONE == 0)
            .map(|(id, _)| *id)
            .collect();
        let seen = &self.seen;
        let dev = |id| {
            let e = &seen[&id];
            DevRef(id, e.have, e.udid.as_deref())
        };
        // Devices that left but still carry a tag this plugin manages
        // (UEM refused to remove it): the next sync tries again.
        let managed: Mask = (0..self.run.names.len())
            .filter(|&bit| self.s.managed(&self.run.names[bit]))
            .fold(0, |m, bit| m | 1 << bit);
        let mut departed: Vec<(i64, Mask)> = self
            .seen
            .iter()
            .filter(|(_, e)| e.flags & GONE != 0 && e.have & managed != 0)
            .map(|(id, e)| (*id, e.have & managed))
            .collect();
        departed.sort_unstable();
        let mut header = table::save_table(
            old,
            self.run.names.clone(),
            ids,
            dev,
            &self.missing,
            &departed,
        )?;
        let report = wrap_up(&mut self.run)?;
        // Notices that came while the sync ran, for devices it synced.
        let uem = &self.uem;
        // (Listed after the run was dropped: a notice kept because the run
        // was there is listed here. A webhook that finds the lock held
        // keeps its notice too, so the list is read again until it has
        // nothing new; one kept after that is applied by its webhook's
        // retry.) Moving a device's tags takes a request or two.
        let mut tried: HashMap<String, Vec<u8>> = HashMap::new();
        'passes: loop {
            let mut fresh = 0;
            let listed = storage::list("pending/")?;
            for (i, key) in listed.iter().enumerate() {
                let Some(raw) = storage::get(key)? else {
                    continue;
                };
                if tried.get(key) == Some(&raw) {
                    continue;
                }
                if invocation::remaining_requests() < 4 {
                    log::warn(format!(
                        "{} risk notices wait for the next sync: this run's request budget is spent",
                        listed.len() - i
                    ));
                    break 'passes;
                }
                fresh += 1;
                tried.insert(key.clone(), raw.clone());
                let Ok(p) = serde_json::from_slice::<Value>(&raw) else {
                    continue;
                };
                let device = &key["pending/".len()..];
                // The sync is done: one notice's trouble is logged and the
                // notice stays for the next sync or notice.
                match apply_notice(self.s, uem, &mut header, device, &p) {
                    Ok(Some(message)) => {
                        storage::compare_and_swap(key, Some(&raw), None)?;
                        log::info(message);
                    }
                    Ok(None) => {}
                    Err(e) => log::warn(format!("risk notice for device {device}: {e}")),
                }
            }
            if fresh == 0 {
                break;
            }
        }
        Ok(report)
    }
}

/// The end of a sync once its table is saved: the notices it applied are
/// cleared (unless a newer one came), the report is kept, the run goes.
/// Safe to repeat: a run whose table was saved but which did not get this
/// far does only this on its next invocation.
fn wrap_up(run: &mut Run) -> Result<Report> {
    for (key, raw) in &run.applied {
        storage::compare_and_swap(key, Some(raw.as_bytes()), None)?;
    }
    run.report.at = now();
    storage::set_json("last_sync", &run.report)?;
    drop_run(run)?;
    Ok(run.report.clone())
}

/// Deletes a saved run and its lists.
fn drop_run(run: &Run) -> Result<()> {
    // `run` first: a crash after it leaves only unreferenced chunks, never
    // a run whose lists are gone.
    storage::delete("run")?;
    table::delete_list(&format!("run/{}/seen", run.generation), run.seen_chunks)?;
    table::delete_list(
        &format!("run/{}/missing", run.generation),
        run.missing_chunks,
    )
}

/// Risk notices kept so far, by key: (value as read, value).
fn pending_notices() -> Result<HashMap<String, (String, Value)>> {
    let mut out = HashMap::new();
    for key in storage::list("pending/")? {
        if let Some(raw) = storage::get(&key)? {
            let raw = String::from_utf8_lossy(&raw).into_owned();
            if let Ok(v) = serde_json::from_str(&raw) {
                out.insert(key, (raw, v));
            }
        }
    }
    Ok(out)
}

fn factors(p: &Value) -> Vec<String> {
    p["threat_factors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect()
}

/// Storage of the first release (whole maps in single values: `tags`,
/// `synced`, `ios`, `missing`, `pending`) becomes the chunked table.
fn migrate_v0() -> Result<()> {
    use std::collections::BTreeMap;
    if Header::load()?.is_some() || storage::get("synced")?.is_none() {
        return Ok(());
    }
    let synced: BTreeSet<i64> = storage::get_json("synced")?.unwrap_or_default();
    let tags: BTreeMap<String, BTreeSet<i64>> = storage::get_json("tags")?.unwrap_or_default();
    let ios: BTreeMap<i64, String> = storage::get_json("ios")?.unwrap_or_default();
    let missing: BTreeMap<String, u32> = storage::get_json("missing")?.unwrap_or_default();
    let pending: BTreeMap<String, Value> = storage::get_json("pending")?.unwrap_or_default();
    let mut names = Vec::new();
    let mut masks: HashMap<i64, Mask> = HashMap::new();
    for (name, devices) in &tags {
        let bit = table::bit_of(&mut names, name)?;
        for d in devices {
            *masks.entry(*d).or_default() |= bit;
        }
    }
    let dev = |id| {
        DevRef(
            id,
            masks.get(&id).copied().unwrap_or(0),
            ios.get(&id).map(String::as_str),
        )
    };
    let missing: Vec<(String, u32)> = missing.into_iter().collect();
    // Notices first (a crash before the table is saved migrates again;
    // one after never loses them), without replacing newer ones.
    for (device, p) in pending {
        keep(&device, &p, "migrated")?;
    }
    table::save_table(
        None,
        names,
        synced.iter().copied().collect(),
        dev,
        &missing,
        &[],
    )?;
    for key in ["synced", "tags", "ios", "missing", "pending"] {
        storage::delete(key)?;
    }
    log::info("stored sync state moved to the chunked device table");
    Ok(())
}

/// One invocation's share of a device sync.
pub fn device_sync(s: &Settings) -> Result<Outcome> {
    let mut sync = Sync::load(s)?;
    sync.run.report.runs += 1;
    let old = Header::load()?;
    if old.as_ref().map_or(0, |h| h.generation) != sync.run.base_generation {
        // Stopped after saving its table: only the end is left.
        return wrap_up(&mut sync.run).map(Outcome::Done);
    }
    let mut pending: Option<HashMap<String, (String, Value)>> = None;
    let mut before: Option<HashMap<String, u32>> = None;
    let mut ids = TagIds::load()?;
    loop {
        let progress = match sync.run.step.clone() {
            Step::Devices { list, page } => {
                if list >= sync.run.lists.len() {
                    sync.run.step = Step::Inventory { page: 0 };
                    continue;
                }
                if sync.budget.low() {
                    None
                } else {
                    let last = sync.devices_page(list, page)?;
                    sync.run.step = if last {
                        Step::Devices {
                            list: list + 1,
                            page: 0,
                        }
                    } else {
                        Step::Devices {
                            list,
                            page: page + 1,
                        }
                    };
                    log::progress(
                        sync.seen.len() as u64,
                        None,
                        format!(
                            "devices read from UEM and stored (group {} of {})",
                            list + 1,
                            sync.run.lists.len()
                        ),
                    );
                    Some(())
                }
            }
            Step::Inventory { page } => {
                if sync.budget.low() {
                    None
                } else {
                    if before.is_none() {
                        before = Some(match &old {
                            Some(h) => table::load_missing(h)?.into_iter().collect(),
                            None => HashMap::new(),
                        });
                    }
                    if pending.is_none() {
                        pending = Some(pending_notices()?);
                    }
                    let next = sync.inventory_page(
                        page,
                        before.as_ref().expect("loaded above"),
                        pending.as_ref().expect("loaded above"),
                    )?;
                    sync.run.step = match next {
                        Some(p) => Step::Inventory { page: p },
                        None => Step::Delete,
                    };
                    log::progress(sync.run.inventory as u64, None, "MTD inventory read");
                    Some(())
                }
            }
            Step::Delete => {
                if sync.delete()? {
                    sync.run.step = Step::Tags;
                    Some(())
                } else {
                    None
                }
            }
            Step::Tags => {
                if !sync.run.merged {
                    sync.merge_table(old.as_ref())?;
                    sync.run.merged = true;
                }
                if sync.tags(&mut ids)? {
                    sync.run.step = Step::Finish;
                    Some(())
                } else {
                    None
                }
            }
            Step::Finish => {
                // Saving takes a few hundred storage calls and no requests:
                // only the time is short.
                if sync.budget.low() && invocation::remaining() < sync.budget.margin {
                    None
                } else {
                    return sync.finish(old.as_ref()).map(Outcome::Done);
                }
            }
        };
        if progress.is_none() {
            sync.save()?;
            let r = &sync.run.report;
            return Ok(Outcome::Continues(format!(
                "device sync in progress ({:?}): {} devices from UEM, {} added, {} updated, {} in the MTD inventory, tags {} added, {} removed; it goes on in the next run",
                sync.run.step,
                r.devices,
                r.added,
                r.updated,
                sync.run.inventory,
                r.tagged,
                r.untagged
            )));
        }
    }
}

/// Applies risk notice `p` to `device` if it is in the table (its tags
/// move now); None when it is not.
fn apply_notice(
    s: &Settings,
    uem: &Uem,
    header: &mut Header,
    device: &str,
    p: &Value,
) -> Result<Option<String>> {
    let Some(id) = device.parse::<i64>().ok() else {
        return Ok(None);
    };
    let b = table::bucket_of(id);
    let mut devs = table::load_bucket(header.generation, b)?;
    let Some(pos) = devs.iter().position(|d| d.0 == id) else {
        return Ok(None);
    };
    let have = devs[pos].1;
    let names_before = header.names.len();
    // The status stays as it is: the notice is about risk.
    let status = s
        .status_tags
        .iter()
        .zip(["provisioned", "active", "inactive"])
        .find(|(t, _)| header.names_of(have).any(|n| n == t.as_str()))
        .map_or("", |(_, st)| st);
    let risk = p["risk"].as_str().unwrap_or("none").to_owned();
    let now_is = MtdDevice {
        id: device.to_owned(),
        status: status.to_owned(),
        risk: risk.clone(),
        threat_factors: factors(p),
    };
    let mut want: Mask = 0;
    for t in desired(s, &now_is) {
        want |= header.bit(&t)?;
    }
    let mut ids = TagIds::load()?;
    let mut mask = have;
    let (mut added, mut removed) = (0, 0);
    for bit in 0..header.names.len() {
        let m: Mask = 1 << bit;
        let name = header.names[bit].clone();
        if !s.managed(&name) || (want & m != 0) == (have & m != 0) {
            continue;
        }
        let add = want & m != 0;
        if ids.apply(s, uem, &name, &[id], add)?.contains(&id) {
            if add {
                mask |= m;
                added += 1;
            } else {
                mask &= !m;
                removed += 1;
            }
        }
    }
    devs[pos].1 = mask;
    if header.names.len() != names_before {
        storage::set_json("devs", &header)?;
    }
    table::save_bucket(header.generation, b, &devs)?;
    Ok(Some(format!(
        "device {device}: risk {risk}; {added} tag(s) added, {removed} removed"
    )))
}

/// Keeps a notice for a device not synced yet (or while a sync runs),
/// unless a newer one is kept already.
fn keep(device: &str, p: &Value, why: &str) -> Result<String> {
    let key = format!("pending/{device}");
    let value = serde_json::to_vec(p)?;
    // Compare-and-swap: two notices for one device at once keep the newer.
    loop {
        let kept = storage::get(&key)?;
        let newer = kept.as_deref().is_some_and(|k| {
            serde_json::from_slice::<Value>(k).is_ok_and(|k| k["at"].as_i64() > p["at"].as_i64())
        });
        if newer || storage::compare_and_swap(&key, kept.as_deref(), Some(&value))? {
            break;
        }
    }
    Ok(format!(
        "device {device}: {why}; its risk ({}) is kept and applied by the sync",
        p["risk"].as_str().unwrap_or("?")
    ))
}

/// A risk change the service announced (`at`: the notice's time): the
/// device's risk and threat tags move now if it has been synced and no
/// sync is in progress; otherwise the notice is kept for the sync.
pub fn risk_changed(s: &Settings, device: &str, p: &Value) -> Result<String> {
    if in_progress()? {
        return keep(device, p, "a device sync is in progress");
    }
    let Some(header) = Header::load()? else {
        return keep(device, p, "no sync has finished yet");
    };
    let uem = Uem::new(&s.api_url);
    let mut header = header;
    match apply_notice(s, &uem, &mut header, device, p)? {
        Some(message) => {
            // An older notice kept while a sync ran is overtaken.
            let key = format!("pending/{device}");
            if let Some(raw) = storage::get(&key)?
                && serde_json::from_slice::<Value>(&raw)
                    .is_ok_and(|k| k["at"].as_i64() <= p["at"].as_i64())
            {
                storage::compare_and_swap(&key, Some(&raw), None)?;
            }
            Ok(message)
        }
        None => keep(device, p, "not synced yet"),
    }
}

/// Whether a device sync is saved half-way (it goes on in another run).
pub fn in_progress() -> Result<bool> {
    Ok(storage::get("run")?.is_some())
}

/// Keeps a notice that came while another sync or notice held the lock.
pub fn keep_while_busy(device: &str, p: &Value) -> Result<String> {
    keep(device, p, "a device sync is running")
}

/// A risk notice as it is applied and kept: the risk, the threat factors
/// and the notice's own time (`at`, which orders notices that overtake
/// each other).
pub fn notice(risk: &str, factors: &[String], at: i64) -> Value {
    json!({"risk": risk, "threat_factors": factors, "at": at})
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
/// that nears its request budget stops, and the next one (asked for at
/// once) continues where it stopped (`app_cursor`), so any number of
/// devices is covered.
pub fn app_sync(s: &Settings) -> Result<AppReport> {
    let uem = Uem::new(&s.api_url);
    let mtd = Mtd::new(&s.mtd_url);
    let mut ios: std::collections::BTreeMap<i64, String> = Default::default();
    if let Some(h) = Header::load()? {
        table::for_each_dev(&h, |Dev(id, _, udid)| {
            if let Some(udid) = udid {
                ios.insert(id, udid);
            }
            Ok(())
        })?;
    }
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
