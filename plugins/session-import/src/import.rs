//! Importing sessions: exactly one ServiceNow record per lsid, whatever
//! repeats (a re-run window, a duplicate event) or crashes.
//!
//! Each session has a marker in the instance's storage, keyed by the day
//! it ended and its lsid, moved only by compare-and-swap:
//!
//! ```text
//! (none) ──claim──▶ pending{at,by} ──record written──▶ created{sys_id} ──notes──▶ done{sys_id}
//! ```
//!
//! A run that finds `done` skips the session. One that finds `pending` or
//! `created` younger than the claim lease leaves it to the run holding it
//! (and says when to retry). An older one belonged to a run that died: the
//! new run takes it over, and, from `pending`, first asks ServiceNow whether
//! the record was written before the crash. So a record is inserted only by
//! the holder of a fresh claim, or after ServiceNow said there is none.
//! Markers older than [`RETENTION_DAYS`] are pruned; a session that old
//! with no marker is also checked in ServiceNow before it is inserted.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use switchyard_sdk::{Error, Result, log, storage};

use crate::bt::Site;
use crate::report::{Session, SessionEvent};
use crate::settings::Settings;
use switchyard_servicenow::{self as snow, ServiceNow, SysId, Task};

/// Days a session's marker is kept after it ended.
pub const RETENTION_DAYS: i64 = 30;
/// Largest event text put in one record, bytes; the rest is counted.
const MAX_EVENT_TEXT: usize = 64 * 1024;
/// Cached task and user lookups per run (bounded: a run may see thousands
/// of sessions, but few distinct reps and tasks).
const CACHE_ENTRIES: usize = 2_000;

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC), ServiceNow's date-time format.
pub fn glide_time(ts: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

/// The Unix time of ServiceNow's `YYYY-MM-DD HH:MM:SS` (UTC), if it is one.
pub fn parse_glide_time(text: &str) -> Option<i64> {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(text.trim(), &fmt)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

fn hms(secs: i64) -> String {
    let secs = secs.max(0);
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Marker {
    Pending { at: i64, by: String },
    Created { at: i64, sys_id: SysId },
    Done { sys_id: SysId, task: bool },
}

/// The storage key of a session's marker.
fn marker_key(s: &Session) -> String {
    format!("s/{:06}/{}", s.end.div_euclid(86_400).max(0), s.lsid)
}

/// Whether an lsid can be used as (part of) a storage key and a query value.
fn valid_lsid(lsid: &str) -> bool {
    !lsid.is_empty()
        && lsid.len() <= 128
        && lsid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// `map[key]`, fetched on a miss. The map is emptied when it is full, so
/// it stays bounded however many sessions a run sees.
fn cached<T: Clone>(
    map: &mut HashMap<String, T>,
    key: &str,
    fetch: impl FnOnce() -> Result<T>,
) -> Result<T> {
    if let Some(v) = map.get(key) {
        return Ok(v.clone());
    }
    let v = fetch()?;
    if map.len() >= CACHE_ENTRIES {
        map.clear();
    }
    map.insert(key.to_owned(), v.clone());
    Ok(v)
}

/// What became of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// A record was written (created, or completed after a crash).
    Written,
    /// It was imported before; nothing to do.
    Already,
    /// It was imported before without a task; the survey's task was added.
    Associated,
    /// Another run holds it; retry after this many seconds.
    Busy(u32),
    /// Started outside ServiceNow, and `import_external_sessions` is off.
    External,
}

/// Counts of one invocation's work.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    /// Records written.
    pub imported: usize,
    /// Sessions imported before.
    pub already: usize,
    /// Records taken over from a run that died.
    pub resumed: usize,
    /// Sessions associated with a task.
    pub associated: usize,
    /// Work notes written.
    pub work_notes: usize,
    /// Sessions another run was importing.
    pub busy: usize,
    /// Sessions skipped because their lsid is unusable.
    pub invalid: usize,
    /// Sessions started outside ServiceNow, not imported
    /// (`import_external_sessions` off).
    pub external_skipped: usize,
    /// Sessions with no marker here whose record ServiceNow already has
    /// (imported by another daemon, or before this data was restored).
    pub found_in_servicenow: usize,
}

/// The importer of one invocation.
pub struct Importer {
    /// The support site.
    pub bt: Site,
    /// ServiceNow.
    pub sn: ServiceNow,
    /// Configuration.
    pub settings: Settings,
    /// Counts so far.
    pub stats: Stats,
    request_id: String,
    tasks: HashMap<String, Option<Task>>,
    users: HashMap<String, Option<SysId>>,
    /// Sessions without a marker, looked up in ServiceNow by
    /// [`Importer::look_up`]: the record's sys_id, or None for none.
    in_servicenow: HashMap<String, Option<SysId>>,
}

impl Importer {
    /// An importer for one invocation (`request_id` marks its claims).
    pub fn new(settings: Settings, request_id: &str) -> Self {
        Self {
            bt: Site::new(&settings.site_url),
            sn: ServiceNow::new(&settings.servicenow_url),
            settings,
            stats: Stats::default(),
            request_id: request_id.to_owned(),
            tasks: HashMap::new(),
            users: HashMap::new(),
            in_servicenow: HashMap::new(),
        }
    }

    /// When the latest session in ServiceNow ended, if it has any: where
    /// a first pull starts, so that a new daemon (or data directory)
    /// pointed at an instance that already holds sessions goes on after
    /// them, as the seed has it, instead of reading them again.
    pub fn latest_in_servicenow(&self) -> Result<Option<i64>> {
        let table = &self.settings.session_table;
        let query = snow::Query::new()
            .is_not_empty("u_end_time")
            .order_by_desc("u_end_time");
        let rows = self.sn.query(table, &query, &["u_end_time"], 1)?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let text = snow::field(row, "u_end_time");
        parse_glide_time(&text).map(Some).ok_or_else(|| {
            Error::upstream(format!(
                "ServiceNow's latest {table} record has the end time `{}`, which is not a \
                 date and time (YYYY-MM-DD HH:MM:SS)",
                text.chars().take(40).collect::<String>()
            ))
        })
    }

    /// Looks up in ServiceNow, with one query, the records of those of
    /// `sessions` that have no marker here, so that [`Importer::import`]
    /// inserts none that exists already (a new data directory, a restored
    /// backup or a second daemon pointed at the same instance) without a
    /// query per session.
    pub fn look_up(&mut self, sessions: &[Session]) -> Result<()> {
        let mut unknown: Vec<&str> = Vec::new();
        for s in sessions {
            if valid_lsid(&s.lsid)
                && !self.in_servicenow.contains_key(&s.lsid)
                && !unknown.contains(&s.lsid.as_str())
                && storage::get(&marker_key(s))?.is_none()
            {
                unknown.push(&s.lsid);
            }
        }
        if unknown.is_empty() {
            return Ok(());
        }
        let table = self.settings.session_table.clone();
        let query = snow::Query::new().one_of("u_lsid", unknown.iter().copied());
        // Duplicates made before this check existed may answer twice.
        let rows = self
            .sn
            .query_all(&table, &query, &["sys_id", "u_lsid"], unknown.len() * 4)?;
        if self.in_servicenow.len() >= CACHE_ENTRIES {
            self.in_servicenow.clear();
        }
        for lsid in unknown {
            self.in_servicenow.insert(lsid.to_owned(), None);
        }
        for r in rows {
            let lsid = snow::field(&r, "u_lsid");
            if let (Some(slot @ None), Ok(id)) = (
                self.in_servicenow.get_mut(&lsid),
                SysId::parse(&snow::field(&r, "sys_id")),
            ) {
                *slot = Some(id);
            }
        }
        Ok(())
    }

    fn task(&mut self, key: &str) -> Result<Option<Task>> {
        cached(&mut self.tasks, key, || self.sn.find_task("task", key))
    }

    /// The sys_id of the ServiceNow user called `user_name`; None for a
    /// name that cannot be one (empty, or with `^`).
    fn user(&mut self, user_name: &str) -> Result<Option<SysId>> {
        if user_name.is_empty() || !snow::is_safe_value(user_name) {
            return Ok(None);
        }
        cached(&mut self.users, user_name, || {
            self.sn.find_by("sys_user", "user_name", user_name)
        })
    }

    /// The task a session belongs to: by its external key, else by the rep
    /// exit survey's `task_number` (a number or a sys_id).
    fn associate(
        &mut self,
        s: &Session,
        task_number: Option<&str>,
    ) -> Result<Option<(Task, &'static str)>> {
        if !s.external_key.is_empty() {
            if let Some(t) = self.task(&s.external_key)? {
                return Ok(Some((t, "external key")));
            }
            log::warn(format!(
                "session {}: external key `{}` matches no ServiceNow task",
                s.lsid, s.external_key
            ));
        }
        if let Some(n) = task_number.filter(|n| !n.trim().is_empty()) {
            if let Some(t) = self.task(n)? {
                return Ok(Some((t, "exit survey")));
            }
            log::warn(format!(
                "session {}: exit survey task_number `{n}` matches no ServiceNow task",
                s.lsid
            ));
        }
        Ok(None)
    }

    fn event_line(ev: &SessionEvent) -> String {
        let mut line = format!(
            "{} [{}] {}",
            glide_time(ev.timestamp),
            ev.event_type,
            ev.performed_by
        );
        if !ev.destination.is_empty() {
            line.push_str(" → ");
            line.push_str(&ev.destination);
        }
        if !ev.body.is_empty() {
            line.push_str(": ");
            line.push_str(&ev.body);
        }
        if !ev.data.is_empty() {
            let data: Vec<String> = ev.data.iter().map(|(k, v)| format!("{k}={v}")).collect();
            line.push_str(&format!(" {{{}}}", data.join(", ")));
        }
        line
    }

    /// The record's fields.
    fn record(
        &mut self,
        s: &Session,
        task: Option<&(Task, &'static str)>,
    ) -> Result<Map<String, Value>> {
        let primary_username = s
            .reps
            .iter()
            .find(|r| r.id == s.primary_rep.id)
            .map(|r| r.username.clone())
            .unwrap_or_default();
        let primary_user = if self.settings.associate_user && !primary_username.is_empty() {
            self.user(&primary_username)?
                .map(String::from)
                .unwrap_or_default()
        } else {
            String::new()
        };
        let mut events = String::new();
        let (mut kept, mut left_out) = (0usize, 0usize);
        for ev in s
            .events
            .iter()
            .filter(|e| self.settings.events.wants(&e.event_type))
        {
            let line = Self::event_line(ev);
            if events.len() + line.len() + 1 > MAX_EVENT_TEXT {
                left_out += 1;
                continue;
            }
            events.push_str(&line);
            events.push('\n');
            kept += 1;
        }
        if left_out > 0 {
            events.push_str(&format!("… {left_out} more event(s) not shown\n"));
        }
        let reps: Vec<String> = s
            .reps
            .iter()
            .map(|r| format!("{} ({})", r.display_name, r.username))
            .collect();
        Ok(snow::row(json!({
            "u_lsid": s.lsid,
            "u_start_time": glide_time(s.start),
            "u_end_time": glide_time(s.end),
            "u_duration": (s.end - s.start).max(0).to_string(),
            "u_external_key": s.external_key,
            "u_customer_initiated": s.external_key.is_empty().to_string(),
            "u_primary_rep_id": s.primary_rep.id,
            "u_primary_rep_name": s.primary_rep.display_name,
            "u_primary_rep_username": primary_username,
            "u_primary_rep": primary_user,
            "u_representatives": reps.join(", "),
            "u_customer_name": s.customer("name"),
            "u_customer_username": s.customer("username"),
            "u_customer_hostname": s.customer("hostname"),
            "u_customer_os": s.customer("os"),
            "u_customer_company": s.customer("company"),
            "u_issue": s.customer("issue"),
            "u_task": task.map_or("", |(t, _)| t.sys_id.as_str()),
            "u_association": task.map_or("", |(_, via)| *via),
            "u_event_count": kept.to_string(),
            "u_events": events,
        })))
    }

    /// The work note for the task, per the tenant's switches; None when
    /// nothing is to be logged.
    fn note(&self, s: &Session, via: &str, record: &str) -> Option<String> {
        let n = self.settings.notes;
        let customer_initiated = s.external_key.is_empty();
        if customer_initiated && !n.customer_initiated {
            return None;
        }
        let mut parts = Vec::new();
        if customer_initiated {
            parts.push(format!(
                "Customer-initiated remote support session {} associated through the {via}.",
                s.lsid
            ));
        }
        if n.session_end {
            parts.push(format!(
                "Remote support session {} ended {} UTC after {}. Representative: {}. \
                 Customer: {} ({}, {}). Record: {record}.",
                s.lsid,
                glide_time(s.end),
                hms(s.end - s.start),
                s.primary_rep.display_name,
                s.customer("name"),
                s.customer("hostname"),
                s.customer("os"),
            ));
        }
        if n.session_notes {
            for ev in s
                .events
                .iter()
                .filter(|e| e.event_type == "Session Note Added" && !e.body.is_empty())
            {
                parts.push(format!(
                    "Session note in {} by {} at {} UTC: {}",
                    s.lsid,
                    ev.performed_by,
                    glide_time(ev.timestamp),
                    ev.body
                ));
            }
        }
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }

    fn write_notes(
        &mut self,
        s: &Session,
        task: &(Task, &'static str),
        sys_id: &SysId,
    ) -> Result<()> {
        let record = format!("{} {sys_id}", self.settings.session_table);
        if let Some(note) = self.note(s, task.1, &record) {
            self.sn.work_note(&task.0.table, &task.0.sys_id, &note)?;
            self.stats.work_notes += 1;
        }
        Ok(())
    }

    /// Imports one session; `task_number` is its rep exit survey answer.
    pub fn import(&mut self, s: &Session, task_number: Option<&str>) -> Result<Imported> {
        if !valid_lsid(&s.lsid) {
            self.stats.invalid += 1;
            log::error(format!(
                "a session in the report has an unusable lsid `{}`; it was skipped",
                s.lsid.chars().take(140).collect::<String>()
            ));
            return Ok(Imported::Already);
        }
        // The seed's "Import External Sessions" switch: with it off, only
        // sessions a ServiceNow task claims are imported. Nothing is
        // stored for the others: if a task claims one later (a survey
        // answered late), a later pull imports it.
        if !self.settings.import_external
            && storage::get(&marker_key(s))?.is_none()
            && self.associate(s, task_number)?.is_none()
        {
            self.stats.external_skipped += 1;
            return Ok(Imported::External);
        }
        let key = marker_key(s);
        let now = now_secs();
        let lease = self.settings.claim_lease_secs;
        let mine = Marker::Pending {
            at: now,
            by: self.request_id.clone(),
        };
        // (known sys_id, whether to ask ServiceNow first)
        let mut claimed: Option<(Option<SysId>, bool)> = None;
        for _ in 0..3 {
            let cur = storage::get(&key)?;
            let marker = match &cur {
                None => None,
                Some(b) => Some(serde_json::from_slice::<Marker>(b).map_err(|e| {
                    Error::internal(format!(
                        "the marker of session {} is unreadable: {e}",
                        s.lsid
                    ))
                })?),
            };
            let (next, outcome) = match marker {
                None => match self.in_servicenow.get(&s.lsid) {
                    // ServiceNow has it: record that here and leave it.
                    // Its notes were written by whoever created it; only a
                    // task found later is still added (late association).
                    Some(Some(sys_id)) => (
                        Marker::Done {
                            sys_id: sys_id.clone(),
                            task: task_number.is_some(),
                        },
                        (Some(sys_id.clone()), false),
                    ),
                    Some(None) => (mine.clone(), (None, false)),
                    None => {
                        let old = s.end < now - RETENTION_DAYS * 86_400;
                        (mine.clone(), (None, old))
                    }
                },
                Some(Marker::Done { sys_id, task }) => {
                    return self.late_association(s, task_number, &key, cur, sys_id, task);
                }
                Some(Marker::Pending { at, .. } | Marker::Created { at, .. })
                    if now - at < lease =>
                {
                    self.stats.busy += 1;
                    return Ok(Imported::Busy(
                        (lease - (now - at)).clamp(1, 3600) as u32 + 1,
                    ));
                }
                Some(Marker::Pending { .. }) => (mine.clone(), (None, true)),
                Some(Marker::Created { sys_id, .. }) => (
                    Marker::Created {
                        at: now,
                        sys_id: sys_id.clone(),
                    },
                    (Some(sys_id), false),
                ),
            };
            let next_bytes = serde_json::to_vec(&next)?;
            if storage::compare_and_swap(&key, cur.as_deref(), Some(&next_bytes))? {
                claimed = Some(outcome);
                break;
            }
        }
        let Some((known, verify)) = claimed else {
            self.stats.busy += 1;
            return Ok(Imported::Busy(5));
        };
        if let Some(Some(_)) = self.in_servicenow.remove(&s.lsid) {
            self.stats.found_in_servicenow += 1;
            self.stats.already += 1;
            return Ok(Imported::Already);
        }
        let resumed = known.is_some() || verify;
        match self.write(s, task_number, &key, known, verify) {
            Ok(()) => {
                self.stats.imported += 1;
                if resumed {
                    self.stats.resumed += 1;
                }
                Ok(Imported::Written)
            }
            Err(e) => {
                // Hand the session to the next attempt at once rather than
                // after the lease. It is marked stale, not released: the
                // record may have been written before the failure, so the
                // next attempt asks ServiceNow first.
                if let Ok(Some(cur)) = storage::get(&key) {
                    let stale = match serde_json::from_slice::<Marker>(&cur) {
                        Ok(Marker::Pending { by, .. }) if by == self.request_id => {
                            Some(Marker::Pending { at: 0, by })
                        }
                        Ok(Marker::Created { sys_id, .. }) => {
                            Some(Marker::Created { at: 0, sys_id })
                        }
                        _ => None,
                    };
                    if let Some(m) = stale {
                        let _ = storage::compare_and_swap(
                            &key,
                            Some(&cur),
                            Some(&serde_json::to_vec(&m)?),
                        );
                    }
                }
                Err(e)
            }
        }
    }

    fn write(
        &mut self,
        s: &Session,
        task_number: Option<&str>,
        key: &str,
        known: Option<SysId>,
        verify: bool,
    ) -> Result<()> {
        let task = self.associate(s, task_number)?;
        let fields = self.record(s, task.as_ref())?;
        let table = self.settings.session_table.clone();
        let existing = match known {
            Some(id) => Some(id),
            None if verify => self.sn.find_by(&table, "u_lsid", &s.lsid)?,
            None => None,
        };
        let sys_id = match existing {
            Some(id) => {
                self.sn.update(&table, &id, &fields)?;
                id
            }
            None => self.sn.insert(&table, &fields)?,
        };
        storage::set(
            key,
            &serde_json::to_vec(&Marker::Created {
                at: now_secs(),
                sys_id: sys_id.clone(),
            })?,
        )?;
        if let Some(t) = &task {
            self.stats.associated += 1;
            self.write_notes(s, t, &sys_id)?;
        }
        storage::set(
            key,
            &serde_json::to_vec(&Marker::Done {
                sys_id,
                task: task.is_some(),
            })?,
        )?;
        Ok(())
    }

    /// A session imported without a task whose exit survey now names one
    /// (the survey can complete after the session-end event).
    fn late_association(
        &mut self,
        s: &Session,
        task_number: Option<&str>,
        key: &str,
        cur: Option<Vec<u8>>,
        sys_id: SysId,
        had_task: bool,
    ) -> Result<Imported> {
        self.stats.already += 1;
        if had_task || task_number.is_none_or(|t| t.trim().is_empty()) {
            return Ok(Imported::Already);
        }
        let Some(task) = self.associate(s, task_number)? else {
            return Ok(Imported::Already);
        };
        let done = serde_json::to_vec(&Marker::Done {
            sys_id: sys_id.clone(),
            task: true,
        })?;
        if !storage::compare_and_swap(key, cur.as_deref(), Some(&done))? {
            return Ok(Imported::Already);
        }
        let mut f = Map::new();
        f.insert("u_task".into(), json!(task.0.sys_id));
        f.insert("u_association".into(), json!(task.1));
        let table = self.settings.session_table.clone();
        let r = self
            .sn
            .update(&table, &sys_id, &f)
            .and_then(|()| self.write_notes(s, &task, &sys_id));
        if let Err(e) = r {
            let _ = storage::compare_and_swap(key, Some(&done), cur.as_deref());
            return Err(e);
        }
        self.stats.associated += 1;
        Ok(Imported::Associated)
    }

    /// Deletes markers of sessions that ended more than [`RETENTION_DAYS`]
    /// before `now`, at most `max` of them.
    pub fn prune(&self, now: i64, max: usize) -> Result<usize> {
        let horizon = format!("s/{:06}/", (now / 86_400 - RETENTION_DAYS).max(0));
        let mut deleted = 0;
        let (keys, _) = storage::list_page("s/", None, max.min(1000) as u32)?;
        for k in keys {
            if k.as_str() >= horizon.as_str() {
                break;
            }
            if storage::delete(&k)? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_sort_by_the_day_the_session_ended() {
        let s = |end: i64, lsid: &str| Session {
            lsid: lsid.into(),
            end,
            ..Session::default()
        };
        assert_eq!(marker_key(&s(86_400 * 3 + 5, "ab12")), "s/000003/ab12");
        assert!(marker_key(&s(86_400 * 9, "z")) < marker_key(&s(86_400 * 10, "a")));
    }

    #[test]
    fn lsids_must_be_safe_as_keys_and_query_values() {
        assert!(valid_lsid("4d2e7f0e8b8a4c5d9e0f1a2b3c4d5e6f"));
        for bad in ["", "a^ORsys_id!=x", "a/b", &"x".repeat(129)] {
            assert!(!valid_lsid(bad), "{bad}");
        }
    }

    #[test]
    fn markers_round_trip() {
        let id = "0123456789abcdef0123456789abcdef";
        let m = Marker::Done {
            sys_id: SysId::parse(id).unwrap(),
            task: true,
        };
        let b = serde_json::to_vec(&m).unwrap();
        assert_eq!(
            String::from_utf8(b.clone()).unwrap(),
            format!(r#"{{"state":"done","sys_id":"{id}","task":true}}"#)
        );
        assert_eq!(serde_json::from_slice::<Marker>(&b).unwrap(), m);
        // A marker whose sys_id is not one is unreadable, not used in a URL.
        assert!(
            serde_json::from_slice::<Marker>(br#"{"state":"done","sys_id":"../x","task":true}"#)
                .is_err()
        );
    }

    #[test]
    fn servicenow_times_read_back() {
        assert_eq!(
            parse_glide_time(&glide_time(1_700_000_123)),
            Some(1_700_000_123)
        );
        assert_eq!(parse_glide_time(" 1970-01-02 00:00:01 "), Some(86_401));
        for bad in [
            "",
            "2024-13-01 00:00:00",
            "yesterday",
            "2024-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_glide_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_are_in_servicenow_format() {
        assert_eq!(glide_time(0), "1970-01-01 00:00:00");
        assert_eq!(hms(3725), "01:02:05");
    }
}
