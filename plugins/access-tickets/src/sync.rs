//! One run: tickets for the requests that need one, the identity system's
//! changes, and (ServiceNow master) the open tickets' changes reported back.
//!
//! Exactly one ticket per request: before a ticket is inserted, its
//! correlation id is looked up in ServiceNow, so a run that died between
//! the insert and the storage write (or lost the insert's answer) adopts
//! the ticket instead of creating another. An insert is never retried
//! within a run.
//!
//! One run at a time: a run (or a webhook notice) takes the `lock`
//! ([`switchyard_sdk::storage::Lease`]) until its own deadline, so two runs (a scheduled one
//! and a run-now, or one re-queued after a crash) never look the same
//! correlation id up at once and both insert. A run that finds the lock
//! held ends at once, saying until when; a lock left by a killed run lapses
//! at that run's deadline, when the host has stopped it for certain.
//!
//! Storage: `t/<request>` the ticket record, `o/<request>` while it is
//! open, `h/<request>` its history, `run` the run counter, `cursor` the
//! identity system's last change seen, `lock` the running invocation.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use switchyard_sdk::{Error, Result, invocation, log, storage};
use switchyard_servicenow::{Query, ServiceNow, SysId, field, is_safe_value};

use crate::idm::{AccessRequest, Identity, Reported};
use crate::settings::{Mode, Settings};

/// Tickets read per ServiceNow query (one encoded `IN` query per batch).
pub const BATCH: usize = 100;
/// Requests kept back for the rest of a run when creating tickets.
const RESERVE_REQUESTS: u32 = 12;
/// History entries kept per request (the oldest go first).
const HISTORY: usize = 200;
/// Closed requests are pruned every this many runs.
const PRUNE_EVERY: u64 = 24;

/// Deletes the record and history of requests closed more than `days`
/// ago (their last exchange), so that storage stays bounded however many
/// requests pass through; returns how many.
pub fn prune(days: u32) -> Result<usize> {
    let horizon = now() - i64::from(days) * 86_400;
    let mut pruned = 0;
    for key in storage::list("t/")? {
        let id = &key[2..];
        let Some(t) = ticket(id)? else { continue };
        if !t.closed {
            continue;
        }
        let last = history(id)?.last().map_or(0, |e| e.at);
        if last < horizon {
            storage::delete(&key)?;
            storage::delete(&format!("h/{id}"))?;
            pruned += 1;
        }
    }
    Ok(pruned)
}

/// What the plugin keeps of a request's ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The ticket.
    pub sys_id: SysId,
    /// Its number.
    pub number: String,
    /// Its table.
    pub table: String,
    /// Its state when last seen.
    pub state: String,
    /// The identity state last reported for it (ServiceNow master).
    #[serde(default)]
    pub reported: Option<String>,
    /// The last agent comment reported (its journal entry's sys_id).
    #[serde(default)]
    pub comment: Option<String>,
    /// The identity status last pushed to the ticket (identity master).
    #[serde(default)]
    pub pushed_status: Option<String>,
    /// The sequence number of the last identity comment pushed.
    #[serde(default)]
    pub pushed_comment_seq: u64,
    /// The run in which it last changed (polling backs off from it).
    pub changed_run: u64,
    /// Nothing more flows either way.
    #[serde(default)]
    pub closed: bool,
}

/// One exchange, for the request's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// Seconds since the epoch.
    pub at: i64,
    /// `to-servicenow` or `to-identity`.
    pub direction: String,
    /// What changed, e.g. `ticket created`, `state`.
    pub what: String,
    /// Old value.
    #[serde(default)]
    pub from: String,
    /// New value.
    #[serde(default)]
    pub to: String,
    /// The comment that went with it.
    #[serde(default)]
    pub comment: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Tickets created.
    pub created: usize,
    /// Tickets found in ServiceNow for requests the plugin had not
    /// recorded (a run that died after the insert).
    pub adopted: usize,
    /// Requests left for the next run (the request budget ran low).
    pub deferred: usize,
    /// Open tickets read.
    pub polled: usize,
    /// Open tickets not read this run (unchanged for long: backed off).
    pub backed_off: usize,
    /// Open tickets due but left for the next run (the request budget ran
    /// low).
    pub poll_deferred: usize,
    /// Updates sent to the identity system.
    pub reported: usize,
    /// Updates pushed to tickets (identity master).
    pub pushed: usize,
    /// Requests closed out this run.
    pub closed: usize,
    /// Requests that could not be handled this run (each logged).
    pub failed: usize,
    /// Closed requests whose record and history were pruned.
    pub pruned: usize,
}

impl Report {
    /// A one-line summary for the job status.
    pub fn summary(&self) -> String {
        format!(
            "{} created, {} adopted, {} deferred; {} polled ({} backed off{}); {} reported, {} pushed, {} closed; {} failed",
            self.created,
            self.adopted,
            self.deferred,
            self.polled,
            self.backed_off,
            if self.poll_deferred > 0 {
                format!(", {} left for the next run", self.poll_deferred)
            } else {
                String::new()
            },
            self.reported,
            self.pushed,
            self.closed,
            self.failed
        )
    }
}

/// Seconds since the epoch (WASI's wall clock).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Whether `id` can be a request id here: safe in a storage key, a URL
/// path segment and an encoded `IN` list.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The ticket record of request `id`.
pub fn ticket(id: &str) -> Result<Option<Ticket>> {
    storage::get_json(&format!("t/{id}"))
}

fn save(id: &str, t: &Ticket) -> Result<()> {
    storage::set_json(&format!("t/{id}"), t)?;
    if t.closed {
        storage::delete(&format!("o/{id}"))?;
    } else {
        storage::set(&format!("o/{id}"), b"")?;
    }
    Ok(())
}

/// The history of request `id`, oldest first.
pub fn history(id: &str) -> Result<Vec<Exchange>> {
    Ok(storage::get_json(&format!("h/{id}"))?.unwrap_or_default())
}

fn record(id: &str, e: Exchange) -> Result<()> {
    let mut h = history(id)?;
    h.push(e);
    if h.len() > HISTORY {
        h.drain(..h.len() - HISTORY);
    }
    storage::set_json(&format!("h/{id}"), &h)
}

fn exchange(direction: &str, what: &str, from: &str, to: &str, comment: &str) -> Exchange {
    Exchange {
        at: now(),
        direction: direction.into(),
        what: what.into(),
        from: from.into(),
        to: to.into(),
        comment: comment.into(),
    }
}

/// The requests with open tickets.
pub fn open_requests() -> Result<Vec<String>> {
    Ok(storage::list("o/")?
        .into_iter()
        .filter_map(|k| k.strip_prefix("o/").map(str::to_owned))
        .collect())
}

/// One run's context.
pub struct Sync<'a> {
    /// The configuration.
    pub s: &'a Settings,
    /// ServiceNow.
    pub sn: ServiceNow,
    /// The identity system.
    pub idm: Identity,
    /// This run's number.
    pub run: u64,
    /// What it did.
    pub report: Report,
}

impl<'a> Sync<'a> {
    /// A run with the next run number.
    pub fn start(s: &'a Settings) -> Result<Self> {
        let run = storage::get_json::<u64>("run")?.unwrap_or(0) + 1;
        storage::set_json("run", &run)?;
        Ok(Self::at(s, run))
    }

    /// A notice's pass, in the current run (back-off counts job runs only).
    pub fn notice(s: &'a Settings) -> Result<Self> {
        let run = storage::get_json::<u64>("run")?.unwrap_or(0);
        Ok(Self::at(s, run))
    }

    fn at(s: &'a Settings, run: u64) -> Self {
        Self {
            s,
            sn: ServiceNow::new(&s.servicenow_url),
            idm: Identity::new(&s.identity_url),
            run,
            report: Report::default(),
        }
    }

    /// The whole run.
    pub fn run(mut self) -> Result<Report> {
        self.create_tickets()?;
        self.follow_identity()?;
        if self.s.mode == Mode::ServiceNowMaster {
            let open = open_requests()?;
            self.poll(&open, false)?;
        }
        if self.run.is_multiple_of(PRUNE_EVERY) {
            self.report.pruned = prune(self.s.history_days)?;
        }
        Ok(self.report)
    }

    fn fields(&self) -> [&str; 4] {
        [
            "sys_id",
            "number",
            "state",
            self.s.correlation_field.as_str(),
        ]
    }

    /// Tickets for the requests that need one and have none recorded.
    fn create_tickets(&mut self) -> Result<()> {
        let wanted: Vec<AccessRequest> = match self.s.mode {
            Mode::ServiceNowMaster => self.idm.list(&[("status", "pending_manual")])?.0,
            Mode::IdentityMaster => {
                let mut all = Vec::new();
                for c in &self.s.categories {
                    let (requests, _) = self.idm.list(&[("category", c)])?;
                    all.extend(requests.into_iter().filter(|r| {
                        !matches!(r.status.as_str(), "fulfilled" | "rejected" | "withdrawn")
                    }));
                }
                all
            }
        };
        let mut missing = Vec::new();
        for r in wanted {
            if !valid_id(&r.id) {
                log::error(format!(
                    "access request id `{}` cannot be used safely; skipped",
                    r.id.chars().take(64).collect::<String>()
                ));
                self.report.failed += 1;
                continue;
            }
            match ticket(&r.id)? {
                // Recorded but not yet reported (the run died in between).
                Some(t) if self.s.mode == Mode::ServiceNowMaster && t.reported.is_none() => {
                    self.report_first(&r, t)?;
                }
                Some(_) => {}
                None => missing.push(r),
            }
        }
        let mut seen = BTreeSet::new();
        missing.retain(|r| seen.insert(r.id.clone()));
        for (i, chunk) in missing.chunks(BATCH).enumerate() {
            // Two lookups per chunk, then an insert and a report per
            // request: stop while the rest of the run can still go on.
            if invocation::remaining_requests() < RESERVE_REQUESTS + 2 {
                self.report.deferred += missing.len() - i * BATCH;
                break;
            }
            self.create_batch(chunk)?;
        }
        Ok(())
    }

    fn create_batch(&mut self, requests: &[AccessRequest]) -> Result<()> {
        let ids: Vec<&str> = requests.iter().map(|r| r.id.as_str()).collect();
        let existing = self.sn.query(
            &self.s.table,
            &Query::new().one_of(&self.s.correlation_field, ids.iter().copied()),
            &self.fields(),
            BATCH * 2,
        )?;
        let by_request: HashMap<String, &Value> = existing
            .iter()
            .map(|row| (field(row, &self.s.correlation_field), row))
            .collect();
        let emails: Vec<&str> = requests
            .iter()
            .filter(|r| !by_request.contains_key(&r.id))
            .map(|r| r.requester_email.as_str())
            .filter(|e| !e.is_empty() && is_safe_value(e) && !e.contains(','))
            .collect();
        let users: HashMap<String, String> = if emails.is_empty() {
            HashMap::new()
        } else {
            self.sn
                .query(
                    "sys_user",
                    &Query::new().one_of("email", emails.iter().copied()),
                    &["sys_id", "email"],
                    BATCH * 2,
                )?
                .iter()
                .map(|u| (field(u, "email").to_ascii_lowercase(), field(u, "sys_id")))
                .collect()
        };
        for r in requests {
            // A report (or link) follows each ticket: keep room for it.
            let (t, adopted) = match by_request.get(&r.id) {
                Some(row) => (self.ticket_from(row)?, true),
                None => {
                    if invocation::remaining_requests() < RESERVE_REQUESTS + 2 {
                        self.report.deferred += 1;
                        continue;
                    }
                    let user = users.get(&r.requester_email.to_ascii_lowercase());
                    match self.insert(r, user.map(String::as_str)) {
                        Ok(t) => (t, false),
                        Err(e) => {
                            // Not retried now: the next run looks the
                            // correlation id up first, so a ticket that was
                            // written after all is adopted, not doubled.
                            log::warn(format!("ticket for {}: {e}", r.id));
                            self.report.failed += 1;
                            continue;
                        }
                    }
                }
            };
            save(&r.id, &t)?;
            let what = if adopted {
                "ticket adopted"
            } else {
                "ticket created"
            };
            record(
                &r.id,
                exchange("to-servicenow", what, "", &t.number, &r.resource),
            )?;
            if adopted {
                self.report.adopted += 1;
            } else {
                self.report.created += 1;
            }
            match self.s.mode {
                Mode::ServiceNowMaster => self.report_first(r, t)?,
                Mode::IdentityMaster => {
                    if self.idm.link_ticket(&r.id, &t.number)? == Reported::Closed {
                        self.close(&r.id, t, "the identity request is already closed")?;
                    } else if let Err(e) = self.push(r, t) {
                        // A status set before the ticket existed: pushed
                        // now, or retried next run.
                        log::warn(format!("{}: {e}", r.id));
                        let mut retry: BTreeSet<String> =
                            storage::get_json("retry")?.unwrap_or_default();
                        retry.insert(r.id.clone());
                        storage::set_json("retry", &retry)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn ticket_from(&self, row: &Value) -> Result<Ticket> {
        Ok(Ticket {
            sys_id: SysId::parse(&field(row, "sys_id"))
                .map_err(|_| Error::upstream("a ServiceNow ticket has no valid sys_id"))?,
            number: field(row, "number"),
            table: self.s.table.clone(),
            state: field(row, "state"),
            reported: None,
            comment: None,
            pushed_status: None,
            pushed_comment_seq: 0,
            changed_run: self.run,
            closed: false,
        })
    }

    fn insert(&self, r: &AccessRequest, user: Option<&str>) -> Result<Ticket> {
        let mut fields = Map::new();
        fields.insert(self.s.correlation_field.clone(), json!(r.id));
        fields.insert(
            self.s.resource_field.clone(),
            json!(format!("Access request {}: {}", r.id, r.resource)),
        );
        fields.insert(
            self.s.justification_field.clone(),
            json!(format!(
                "{}\n\nRequested by {} ({})",
                r.justification, r.requester_email, r.category
            )),
        );
        if let Some(u) = user {
            fields.insert(self.s.requester_field.clone(), json!(u));
        }
        let row = self.sn.insert_row(&self.s.table, &fields, &self.fields())?;
        self.ticket_from(&row)
    }

    /// Reports a new ticket to the identity system.
    fn report_first(&mut self, r: &AccessRequest, mut t: Ticket) -> Result<()> {
        let Some(state) = self.s.identity_state(&t.state).map(str::to_owned) else {
            log::warn(format!(
                "ticket {} has state `{}`, which state_map does not name",
                t.number, t.state
            ));
            return Ok(());
        };
        match self.idm.ticket_status(&r.id, &t.number, &state, "")? {
            Reported::Taken => {
                self.report.reported += 1;
                record(&r.id, exchange("to-identity", "state", "", &state, ""))?;
                t.reported = Some(state);
                if self.s.is_closed(&t.state) {
                    let why = format!("ticket {} was already closed", t.number);
                    return self.close(&r.id, t, &why);
                }
                save(&r.id, &t)
            }
            Reported::Closed => self.close(&r.id, t, "the identity request is already closed"),
        }
    }

    fn close(&mut self, id: &str, mut t: Ticket, why: &str) -> Result<()> {
        t.closed = true;
        save(id, &t)?;
        record(id, exchange("none", "closed", "", "", why))?;
        self.report.closed += 1;
        Ok(())
    }

    /// The identity system's changes since the last run: a withdrawal
    /// closes the ticket (both modes); in identity-master mode, status
    /// changes and comments go to the ticket.
    fn follow_identity(&mut self) -> Result<()> {
        let cursor = storage::get_json::<u64>("cursor")?.unwrap_or(0);
        let since = cursor.to_string();
        let (changed, latest) = self.idm.list(&[("changed_since", &since)])?;
        // Requests whose last push failed come first, read afresh; a
        // failure is kept for the next run and never holds up the others.
        let mut retry: BTreeSet<String> = storage::get_json("retry")?.unwrap_or_default();
        let mut todo: Vec<AccessRequest> = Vec::new();
        for id in std::mem::take(&mut retry) {
            match self.idm.get(&id) {
                Ok(r) => todo.push(r),
                Err(e) => {
                    log::warn(format!("{id}: {e}"));
                    retry.insert(id);
                }
            }
        }
        let retried: BTreeSet<String> = todo.iter().map(|r| r.id.clone()).collect();
        todo.extend(changed.into_iter().filter(|r| !retried.contains(&r.id)));
        for r in todo {
            if !valid_id(&r.id) {
                continue;
            }
            let Some(t) = ticket(&r.id)? else { continue };
            if t.closed {
                continue;
            }
            if let Err(e) = self.push(&r, t) {
                log::warn(format!("{}: {e}", r.id));
                self.report.failed += 1;
                retry.insert(r.id.clone());
            }
        }
        storage::set_json("retry", &retry)?;
        storage::set_json("cursor", &latest)
    }

    fn push(&mut self, r: &AccessRequest, mut t: Ticket) -> Result<()> {
        let status_changed = t.pushed_status.as_deref() != Some(r.status.as_str())
            && self.s.push_state_map.contains_key(&r.status);
        let push_status = match self.s.mode {
            Mode::IdentityMaster => status_changed,
            // ServiceNow decides; only a withdrawal is the identity
            // system's to report.
            Mode::ServiceNowMaster => r.status == "withdrawn" && status_changed,
        };
        if push_status {
            let state = self.s.push_state_map[&r.status].clone();
            let mut f = Map::new();
            f.insert("state".into(), json!(state));
            match self.sn.update(&t.table, &t.sys_id, &f) {
                // The ticket is gone: nothing more can be pushed to it.
                Err(Error::NotFound(_)) => {
                    let why = format!("the ServiceNow ticket {} was deleted", t.number);
                    return self.close(&r.id, t, &why);
                }
                other => other?,
            }
            // Saved at once, so that a failure further on does not send
            // this again.
            t.state = state.clone();
            t.pushed_status = Some(r.status.clone());
            t.changed_run = self.run;
            save(&r.id, &t)?;
            record(
                &r.id,
                exchange("to-servicenow", "state", "", &state, &r.status),
            )?;
            self.sn.work_note(
                &t.table,
                &t.sys_id,
                &format!(
                    "Access request {} was {} in the identity system.",
                    r.id, r.status
                ),
            )?;
            self.report.pushed += 1;
        }
        if self.s.mode == Mode::IdentityMaster {
            let pushed = t.pushed_comment_seq;
            for c in r.comments.iter().filter(|c| c.seq > pushed) {
                let note = format!("Comment by {} in the identity system: {}", c.by, c.text);
                self.sn.work_note(&t.table, &t.sys_id, &note)?;
                t.pushed_comment_seq = c.seq;
                t.changed_run = self.run;
                save(&r.id, &t)?;
                record(&r.id, exchange("to-servicenow", "comment", "", "", &c.text))?;
                self.report.pushed += 1;
            }
        }
        let terminal = matches!(r.status.as_str(), "fulfilled" | "rejected" | "withdrawn");
        if terminal && (push_status || self.s.mode == Mode::IdentityMaster) {
            let why = format!("the identity request was {}", r.status);
            return self.close(&r.id, t, &why);
        }
        save(&r.id, &t)
    }

    /// Reads the open tickets of `ids` that are due (all of them when
    /// `all`), in batches of [`BATCH`], and reports each change.
    pub fn poll(&mut self, ids: &[String], all: bool) -> Result<()> {
        let mut due = Vec::new();
        for id in ids {
            let Some(t) = ticket(id)? else { continue };
            if t.closed {
                continue;
            }
            let quiet = self.run.saturating_sub(t.changed_run);
            let backed_off = quiet >= u64::from(self.s.backoff_after_runs)
                && !(self.run + spread(id)).is_multiple_of(u64::from(self.s.backoff_every));
            if backed_off && !all {
                self.report.backed_off += 1;
            } else {
                due.push((id.clone(), t));
            }
        }
        // Batches of one table each; the start turns with the run, so that
        // a run that runs out of requests leaves a different tail each time.
        due.sort_by(|a, b| a.1.table.cmp(&b.1.table));
        if !due.is_empty() {
            let start = (self.run as usize * BATCH) % due.len();
            due.rotate_left(start);
        }
        let mut batches: Vec<Vec<(String, Ticket)>> = Vec::new();
        for item in due {
            match batches.last_mut() {
                Some(b) if b.len() < BATCH && b[0].1.table == item.1.table => b.push(item),
                _ => batches.push(vec![item]),
            }
        }
        for (i, chunk) in batches.iter().enumerate() {
            // Two reads per batch and up to one report per ticket.
            if invocation::remaining_requests() < 2 + chunk.len() as u32 {
                let left: usize = batches[i..].iter().map(Vec::len).sum();
                self.report.poll_deferred += left;
                break;
            }
            if let Err(e) = self.poll_batch(chunk) {
                log::warn(format!("reading tickets: {e}"));
                self.report.failed += chunk.len();
                return Err(e);
            }
        }
        Ok(())
    }

    fn poll_batch(&mut self, batch: &[(String, Ticket)]) -> Result<()> {
        let ids: Vec<&str> = batch.iter().map(|(_, t)| t.sys_id.as_str()).collect();
        let table = batch[0].1.table.clone();
        let rows = self.sn.query(
            &table,
            &Query::new().one_of("sys_id", ids.iter().copied()),
            &["sys_id", "number", "state"],
            BATCH * 2,
        )?;
        let rows: HashMap<String, &Value> = rows.iter().map(|r| (field(r, "sys_id"), r)).collect();
        // The latest customer-visible comment of each ticket, in one query.
        let notes = self.sn.query(
            "sys_journal_field",
            &Query::new()
                .one_of("element_id", ids.iter().copied())
                .eq("element", "comments")
                .order_by_desc("sys_created_on"),
            &["sys_id", "element_id", "value", "sys_created_on"],
            BATCH * 10,
        )?;
        let mut latest: BTreeMap<String, (&str, String)> = BTreeMap::new();
        for n in &notes {
            latest
                .entry(field(n, "element_id"))
                .or_insert_with(|| (n["sys_id"].as_str().unwrap_or_default(), field(n, "value")));
        }
        self.report.polled += batch.len();
        for (id, t) in batch {
            let id = id.as_str();
            let t = t.clone();
            let result = match rows.get(t.sys_id.as_str()) {
                // Not in the list: asked once more by sys_id before it is
                // taken for deleted (a list can miss a row an ACL hides).
                None => match self.sn.get(&t.table, &t.sys_id, &["sys_id", "state"]) {
                    Ok(None) => self.deleted(id, t),
                    Ok(Some(row)) => {
                        let comment = latest.get(t.sys_id.as_str()).cloned();
                        self.changed(id, t, &field(&row, "state"), comment)
                    }
                    Err(e) => Err(e),
                },
                Some(row) => {
                    let comment = latest.get(t.sys_id.as_str()).cloned();
                    self.changed(id, t, &field(row, "state"), comment)
                }
            };
            if let Err(e) = result {
                log::warn(format!("{id}: {e}"));
                self.report.failed += 1;
            }
        }
        Ok(())
    }

    /// The ticket is gone from ServiceNow: the request is closed out on
    /// the identity side with a note.
    fn deleted(&mut self, id: &str, t: Ticket) -> Result<()> {
        let note = format!("The ServiceNow ticket {} was deleted.", t.number);
        let outcome = self
            .idm
            .ticket_status(id, &t.number, "closed_incomplete", &note)?;
        if outcome == Reported::Taken {
            self.report.reported += 1;
            record(
                id,
                exchange(
                    "to-identity",
                    "state",
                    t.reported.as_deref().unwrap_or(""),
                    "closed_incomplete",
                    &note,
                ),
            )?;
        }
        self.close(id, t, &note)
    }

    fn changed(
        &mut self,
        id: &str,
        mut t: Ticket,
        state: &str,
        comment: Option<(&str, String)>,
    ) -> Result<()> {
        let Some(mapped) = self.s.identity_state(state).map(str::to_owned) else {
            log::warn(format!(
                "ticket {} has state `{state}`, which state_map does not name; not reported",
                t.number
            ));
            return Ok(());
        };
        let new_comment = comment
            .as_ref()
            .filter(|(sys_id, _)| t.comment.as_deref() != Some(*sys_id));
        if t.reported.as_deref() == Some(mapped.as_str()) && new_comment.is_none() {
            return Ok(());
        }
        let text = new_comment.map(|(_, text)| text.as_str()).unwrap_or("");
        let outcome = self.idm.ticket_status(id, &t.number, &mapped, text)?;
        let from = t.reported.clone().unwrap_or_default();
        t.state = state.to_owned();
        t.changed_run = self.run;
        if let Some((sys_id, _)) = new_comment {
            t.comment = Some((*sys_id).to_owned());
        }
        if outcome == Reported::Closed {
            return self.close(id, t, "the identity request is already closed");
        }
        self.report.reported += 1;
        record(id, exchange("to-identity", "state", &from, &mapped, text))?;
        t.reported = Some(mapped);
        if self.s.is_closed(state) {
            let why = format!("ticket {} closed in ServiceNow", t.number);
            return self.close(id, t, &why);
        }
        save(id, &t)
    }
}

/// A stable per-request offset, so that backed-off tickets are spread over
/// the runs rather than all read in the same one.
fn spread(id: &str) -> u64 {
    id.bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_safe_as_keys_paths_and_list_items() {
        assert!(valid_id("AR-01000"));
        for bad in ["", "a,b", "a^b", "a/b", "../x", &"x".repeat(129)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn summaries_name_every_count() {
        let r = Report {
            created: 2,
            polled: 5,
            backed_off: 1,
            ..Report::default()
        };
        assert_eq!(
            r.summary(),
            "2 created, 0 adopted, 0 deferred; 5 polled (1 backed off); 0 reported, 0 pushed, 0 closed; 0 failed"
        );
    }
}
