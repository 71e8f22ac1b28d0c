//! The scheduled pull: report windows from the cursor up to now.
//!
//! The cursor is the end time from which the next pull asks; it starts
//! `first_pull_hours` back and moves only past windows whose every session
//! is imported, so a malformed report, an upstream failure, a crash or a
//! run that ran out of time leaves it where it was and the next run asks
//! again (already-imported sessions are skipped by their markers). Windows
//! are bounded (`window_minutes`, halved when an answer exceeds the host's
//! response limit), so the answer held in memory at once is bounded too,
//! and the reader keeps a small batch of parsed sessions at a time.
//!
//! Idempotency holds against ServiceNow, not only this instance's storage:
//! the sessions of a batch that have no marker here are looked up in
//! ServiceNow with one query before any is inserted, and the very first
//! pull starts after the latest session ServiceNow already holds (within
//! `first_pull_hours`). A new data directory, a restored backup or a second
//! daemon pointed at the same instance imports nothing twice.
//!
//! The rep exit-survey report only associates sessions with tasks: when the
//! site refuses it (an API account without the permission, an older site,
//! an `<error>` answer) or fails, the window's sessions are imported
//! anyway, the summary says why survey association is unavailable, and the
//! window is kept in `survey-retry`. Each later run asks for the oldest
//! kept windows' surveys again and, when they come, reads those windows
//! once more so that the surveyed sessions get their task (the markers make
//! the second read cheap and write nothing twice).

use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_sdk::{Error, Result, log, storage};

use crate::import::{Imported, Importer, glide_time, now_secs};
use crate::report::{self, Outcome, Session};

/// Storage key of the cursor.
pub const CURSOR_KEY: &str = "cursor";
/// The cursor stays this far behind now: a session's archive can be
/// written a little after it ended, and the overlap is cheap (markers).
pub const SETTLE_SECS: i64 = 300;
/// Shortest window asked for before giving up on an oversized answer.
const MIN_WINDOW_SECS: i64 = 60;
/// Storage key of the windows whose survey report is still owed.
const SURVEY_RETRY_KEY: &str = "survey-retry";
/// Windows whose survey is asked for again per run.
const SURVEY_RETRIES_PER_RUN: usize = 4;
/// Windows kept for a survey retry at most (the oldest go first).
const SURVEY_RETRY_MAX: usize = 1000;
/// Sessions looked up in ServiceNow with one query: the URL stays well
/// under 4 KB (an lsid is at most 128 characters, usually 32).
const LOOKUP_BATCH: usize = 25;

/// What a pull did.
#[derive(Debug, Default, Serialize)]
pub struct PullReport {
    /// Where it started (Unix time).
    pub from: i64,
    /// Where the cursor is now.
    pub cursor: i64,
    /// Windows asked for.
    pub windows: usize,
    /// Sessions read from reports.
    pub sessions: usize,
    /// Whether work is left for the next run (out of time or budget, or a
    /// session held by another run).
    pub more: bool,
    /// Why it stopped early, if it did.
    pub stopped: Option<String>,
    /// Why survey association was unavailable in this run, if it was.
    pub survey_unavailable: Option<String>,
    /// Earlier windows whose survey came this run.
    pub surveys_recovered: usize,
    /// Windows whose survey is still owed.
    pub surveys_owed: usize,
    /// A first pull that started after the latest session already in
    /// ServiceNow: when that session ended.
    pub after_servicenow: Option<i64>,
}

impl PullReport {
    /// A one-line summary.
    pub fn summary(&self, imp: &Importer) -> String {
        let st = &imp.stats;
        let mut s = format!(
            "read {} session(s) in {} window(s) from {} UTC: imported {}, already imported {}, \
             associated {}, work notes {}",
            self.sessions,
            self.windows,
            glide_time(self.from),
            st.imported,
            st.already,
            st.associated,
            st.work_notes
        );
        if let Some(latest) = self.after_servicenow {
            s.push_str(&format!(
                " (the first pull: after the latest session already in ServiceNow, ended {} UTC)",
                glide_time(latest)
            ));
        }
        if st.found_in_servicenow > 0 {
            s.push_str(&format!(
                ", {} found in ServiceNow without a marker here (not imported again)",
                st.found_in_servicenow
            ));
        }
        if st.resumed > 0 {
            s.push_str(&format!(
                ", {} completed after an interrupted run",
                st.resumed
            ));
        }
        if st.invalid > 0 {
            s.push_str(&format!(", {} skipped (unusable lsid)", st.invalid));
        }
        if st.external_skipped > 0 {
            s.push_str(&format!(
                ", {} started outside ServiceNow not imported (import_external_sessions is off)",
                st.external_skipped
            ));
        }
        if let Some(why) = &self.survey_unavailable {
            s.push_str(&format!(
                "; survey association unavailable ({why}), {} window(s) to ask again",
                self.surveys_owed
            ));
        }
        if self.surveys_recovered > 0 {
            s.push_str(&format!(
                "; surveys of {} earlier window(s) came",
                self.surveys_recovered
            ));
        }
        s.push_str(&format!("; cursor {} UTC", glide_time(self.cursor)));
        if let Some(why) = &self.stopped {
            s.push_str(&format!("; stopped early ({why}), the next run continues"));
        }
        s
    }
}

enum Halt {
    Stop(String),
    Fail(Error),
}

/// Pulls sessions from the cursor to now, for at most the run budget.
pub fn pull(imp: &mut Importer) -> Result<PullReport> {
    let started = Instant::now();
    let budget = Duration::from_secs(imp.settings.run_budget_secs);
    let now = now_secs();
    let cursor: Option<i64> = storage::get_json(CURSOR_KEY)?;
    let mut after_servicenow = None;
    let mut cursor = match cursor {
        Some(c) => c,
        None => {
            // The first pull: after the latest session ServiceNow holds,
            // but never further back than first_pull_hours.
            let reach = now - imp.settings.lookback_secs;
            match imp.latest_in_servicenow()? {
                Some(latest) if latest > reach => {
                    after_servicenow = Some(latest);
                    latest.min(now)
                }
                _ => reach,
            }
        }
    };
    let horizon = now - SETTLE_SECS;
    let mut rep = PullReport {
        from: cursor,
        cursor,
        after_servicenow,
        ..PullReport::default()
    };
    let mut owed: Vec<(i64, i64)> = storage::get_json(SURVEY_RETRY_KEY)?.unwrap_or_default();
    retry_surveys(imp, &mut owed, &mut rep, started, budget)?;
    storage::set_json(SURVEY_RETRY_KEY, &owed)?;
    let total_secs = (now - cursor).max(1) as u64;
    let mut window = imp.settings.window_secs;
    while cursor < now {
        if started.elapsed() >= budget {
            rep.stopped = Some(format!(
                "run budget of {} s used",
                imp.settings.run_budget_secs
            ));
            break;
        }
        let secs = window.min(now - cursor);
        let Some(body) = imp.bt.sessions_in(cursor, secs)? else {
            if window <= MIN_WINDOW_SECS {
                return Err(Error::upstream(format!(
                    "BeyondTrust's report of the {MIN_WINDOW_SECS} s from {} UTC is larger than \
                     this instance's response limit; raise limits.http_response_bytes",
                    glide_time(cursor)
                )));
            }
            window = (window / 2).max(MIN_WINDOW_SECS);
            log::info(format!(
                "report window too large; asking for {window} s at a time"
            ));
            continue;
        };
        rep.windows += 1;
        let tasks = match imp.bt.task_numbers_in(cursor, secs) {
            Ok(t) => Some(t),
            Err(e) => {
                let why = e.message().to_owned();
                log::warn(format!(
                    "the rep exit survey report of {} UTC is unavailable ({why}); sessions are \
                     imported without survey association, and the survey is asked for again later",
                    glide_time(cursor)
                ));
                rep.survey_unavailable.get_or_insert(why);
                None
            }
        };
        let busy = match read_window(
            imp,
            &body,
            &tasks.clone().unwrap_or_default(),
            cursor,
            secs,
            &mut rep,
            started,
            budget,
        )? {
            WindowEnd::Stopped => break,
            WindowEnd::Done { busy } => busy,
        };
        if tasks.is_none() {
            owe_survey(&mut owed, cursor, secs);
        }
        if busy {
            rep.stopped = Some("a session is being imported by another run".into());
            break;
        }
        // The window is done: move past it, but not into the settling
        // margin (that part is asked for again next run).
        let next = (cursor + secs).min(horizon).max(cursor);
        // The owed survey is recorded before the cursor moves past it.
        storage::set_json(SURVEY_RETRY_KEY, &owed)?;
        if next > cursor {
            storage::set_json(CURSOR_KEY, &next)?;
            rep.cursor = next;
        }
        let done = (cursor + secs - rep.from).max(0) as u64;
        log::progress(
            done.min(total_secs),
            Some(total_secs),
            format!(
                "sessions to {} UTC: {} imported",
                glide_time(cursor + secs),
                imp.stats.imported
            ),
        );
        cursor += secs;
    }
    rep.more = rep.stopped.is_some();
    rep.surveys_owed = owed.len();
    if let Err(e) = imp.prune(now, 500) {
        log::warn(format!("pruning old session markers: {e}"));
    }
    Ok(rep)
}

/// How reading a window ended.
enum WindowEnd {
    /// Every session was read (`busy`: one was held by another run).
    Done { busy: bool },
    /// Out of time or budget: `rep.stopped` says why.
    Stopped,
}

/// Imports the sessions of one window's report `body`, with the survey's
/// task numbers `tasks`.
#[allow(clippy::too_many_arguments)]
fn read_window(
    imp: &mut Importer,
    body: &[u8],
    tasks: &std::collections::HashMap<String, String>,
    cursor: i64,
    secs: i64,
    rep: &mut PullReport,
    started: Instant,
    budget: Duration,
) -> Result<WindowEnd> {
    let mut busy = false;
    let mut sessions = 0;
    let mut batch: Vec<Session> = Vec::with_capacity(LOOKUP_BATCH);
    let mut read = report::sessions(body, |s| {
        sessions += 1;
        batch.push(s);
        if batch.len() < LOOKUP_BATCH {
            return Ok(());
        }
        import_batch(imp, &mut batch, tasks, &mut busy, started, budget)
    });
    if let Ok(Ok(_)) = &read
        && let Err(halt) = import_batch(imp, &mut batch, tasks, &mut busy, started, budget)
    {
        read = Err(halt);
    }
    rep.sessions += sessions;
    match read {
        Err(Halt::Fail(e)) => Err(e),
        Err(Halt::Stop(why)) => {
            rep.stopped = Some(why);
            Ok(WindowEnd::Stopped)
        }
        Ok(Err(e)) => Err(Error::upstream(format!(
            "BeyondTrust's report of sessions ending {} to {} UTC: {e}; the cursor stays \
             at {} UTC and the next run asks again",
            glide_time(cursor),
            glide_time(cursor + secs),
            glide_time(cursor)
        ))),
        Ok(Ok(Outcome::NoArchives | Outcome::Sessions(_))) => Ok(WindowEnd::Done { busy }),
    }
}

/// Imports `batch` (emptying it), after one ServiceNow lookup of those
/// of its sessions that have no marker here.
fn import_batch(
    imp: &mut Importer,
    batch: &mut Vec<Session>,
    tasks: &std::collections::HashMap<String, String>,
    busy: &mut bool,
    started: Instant,
    budget: Duration,
) -> std::result::Result<(), Halt> {
    let failed = |e: Error| {
        if switchyard_sdk::retry::budget_spent() {
            Halt::Stop("this run's request budget is used up".into())
        } else {
            Halt::Fail(e)
        }
    };
    if batch.is_empty() {
        return Ok(());
    }
    imp.look_up(batch).map_err(failed)?;
    for s in batch.drain(..) {
        if started.elapsed() >= budget || switchyard_sdk::retry::budget_spent() {
            return Err(Halt::Stop(format!(
                "run budget of {} s used",
                imp.settings.run_budget_secs
            )));
        }
        match imp.import(&s, tasks.get(&s.lsid).map(String::as_str)) {
            Ok(Imported::Busy(_)) => *busy = true,
            Ok(_) => {}
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(())
}

/// Adds a window to those whose survey is owed, dropping the oldest past
/// [`SURVEY_RETRY_MAX`].
fn owe_survey(owed: &mut Vec<(i64, i64)>, from: i64, secs: i64) {
    if !owed.contains(&(from, secs)) {
        owed.push((from, secs));
    }
    if owed.len() > SURVEY_RETRY_MAX {
        let dropped = owed.remove(0);
        log::warn(format!(
            "the survey of the window from {} UTC is no longer asked for (over {SURVEY_RETRY_MAX} are owed)",
            glide_time(dropped.0)
        ));
    }
}

/// Asks again for the surveys of the oldest owed windows; for each that
/// comes, reads the window's sessions once more so that surveyed sessions
/// get their task. Stops at the first survey still refused.
fn retry_surveys(
    imp: &mut Importer,
    owed: &mut Vec<(i64, i64)>,
    rep: &mut PullReport,
    started: Instant,
    budget: Duration,
) -> Result<()> {
    for _ in 0..SURVEY_RETRIES_PER_RUN {
        let Some(&(from, secs)) = owed.first() else {
            return Ok(());
        };
        let tasks = match imp.bt.task_numbers_in(from, secs) {
            Ok(t) => t,
            Err(e) => {
                rep.survey_unavailable.get_or_insert(e.message().to_owned());
                return Ok(());
            }
        };
        if !tasks.is_empty() {
            let Some(body) = imp.bt.sessions_in(from, secs)? else {
                // Too large at this size now: leave it to a later run.
                return Ok(());
            };
            match read_window(imp, &body, &tasks, from, secs, rep, started, budget)? {
                WindowEnd::Stopped => return Ok(()),
                WindowEnd::Done { busy: true } => return Ok(()),
                WindowEnd::Done { busy: false } => {}
            }
        }
        owed.remove(0);
        rep.surveys_recovered += 1;
    }
    Ok(())
}
