//! The `access-tickets` plugin driven through the daemon against the
//! identity and ServiceNow simulators, in both modes: requests become
//! tickets, agent updates and closures flow back, a deleted ticket and a
//! request closed on the identity side are closed out, a lost insert answer
//! makes no second ticket, polling is batched and backs off, the webhook
//! reads a ticket at once, and in identity-master mode approvals, comments
//! and withdrawals reach the ticket.

mod common;

use common::*;
use serde_json::{Value, json};
use switchyard_sim::common::{Fault, FaultKind};
use switchyard_sim::identity::{Identity, IdentityConfig};
use switchyard_sim::servicenow::{ServiceNow, ServiceNowConfig};

const TABLE: &str = "sc_req_item";
const BASE: &str = "/v1/tenants/acme/instances/tickets";

struct Env {
    idm: Identity,
    sn: ServiceNow,
    _dir: tempfile::TempDir,
    d: Daemon,
    token: String,
}

/// `requests` access requests waiting for a person, ServiceNow with their
/// requesters as users, and the plugin with `config` (extra config lines).
async fn setup(requests: usize, config: &str) -> Env {
    setup_with(requests, config, "").await
}

/// [`setup`] with extra `[instance.limits]` lines.
async fn setup_with(requests: usize, config: &str, limits: &str) -> Env {
    let idm = Identity::start(IdentityConfig::default(), 3, requests)
        .await
        .unwrap();
    let sn = ServiceNow::start(
        ServiceNowConfig {
            rate_limit_per_minute: u32::MAX,
            ..ServiceNowConfig::default()
        },
        3,
        requests.max(1),
        0,
    )
    .await
    .unwrap();
    let acme = format!(
        r#"[roles]
"Access Admin" = ["admin", "viewer"]

[[instance]]
id = "tickets"
plugin = "access-tickets"
egress = ["{sn}", "{idm}"]

[instance.config]
servicenow_url = "{sn}"
identity_url = "{idm}"
{config}

[instance.limits]
http_requests = 2000
{limits}

[instance.credentials.servicenow]
kind = "basic"
hosts = ["{sn}"]
username = "{sn_user}"
password = "secret:sn-password"

[instance.credentials.identity]
kind = "bearer"
hosts = ["{idm}"]
token = "secret:idm-token"

[instance.webhooks.ticket-changed]
token = "secret:hook-token"
"#,
        sn = sn.url(),
        idm = idm.url(),
        sn_user = sn.config().username,
    );
    let (dir, token) = acme_with_secrets(
        &acme,
        &[
            ("sn-password", sn.config().password.clone()),
            ("idm-token", idm.config().token.clone()),
            ("hook-token", "hook-t0ken".to_owned()),
        ],
    );
    let d = start(dir.path());
    Env {
        idm,
        sn,
        _dir: dir,
        d,
        token,
    }
}

impl Env {
    async fn act(&self, action: &str, input: Value) -> (u16, Value) {
        let path = format!("{BASE}/actions/{action}");
        act(&self.d, &self.token, &path, &["Access Admin"], input).await
    }

    /// Runs the `sync` job now, expecting it to succeed; its summary.
    async fn sync(&self) -> String {
        let job = self.run_sync().await;
        assert_eq!(job["last_outcome"], "ok", "{job}");
        job["last_summary"].as_str().unwrap().to_owned()
    }

    /// Runs the `sync` job now and waits for it; its statistics.
    async fn run_sync(&self) -> Value {
        run_job(&self.d, &self.token, BASE, "sync").await
    }

    /// The ticket of access request `id`; panics if there is not exactly one.
    fn ticket(&self, id: &str) -> Value {
        let mut found: Vec<Value> = self
            .sn
            .records(TABLE)
            .into_iter()
            .filter(|t| t["correlation_id"] == id)
            .collect();
        assert_eq!(found.len(), 1, "tickets of {id}: {found:?}");
        found.remove(0)
    }

    fn agent(&self, ticket: &Value, fields: &[(&str, &str)]) {
        assert!(
            self.sn
                .agent_update(TABLE, ticket["sys_id"].as_str().unwrap(), fields)
        );
    }
}

/// ServiceNow is master: pending requests get one ticket each (requester
/// found by email), agent updates and comments flow back, closed complete
/// fulfils, closed incomplete rejects, a deleted ticket and a request
/// already closed on the identity side are closed out, and nothing more
/// flows for a closed ticket.
#[tokio::test]
async fn servicenow_master_round_trip() {
    let env = setup(4, "").await;
    let summary = env.sync().await;
    assert!(summary.starts_with("4 created"), "{summary}");
    let ids: Vec<String> = env.idm.requests().iter().map(|r| r.id.clone()).collect();
    for id in &ids {
        let t = env.ticket(id);
        let r = env.idm.request(id).unwrap();
        assert_eq!(r.status, "in_progress", "{r:?}");
        assert_eq!(r.ticket_number.as_deref(), t["number"].as_str());
        assert_eq!(r.ticket_state.as_deref(), Some("new"));
        // The requester, found in sys_user by email.
        let user = env
            .sn
            .record("sys_user", t["requested_for"].as_str().unwrap());
        assert_eq!(user.unwrap()["email"], r.requester_email.as_str());
        assert!(
            t["short_description"]
                .as_str()
                .unwrap()
                .contains(&r.resource)
        );
    }
    // A second run with nothing changed reports nothing and creates nothing.
    let summary = env.sync().await;
    assert!(
        summary.contains("0 created") && summary.contains("0 reported"),
        "{summary}"
    );

    // The agent works on the first, closes the second complete and the
    // third incomplete, and deletes the fourth's ticket; the fourth's
    // request was meanwhile fulfilled in the identity system.
    let t: Vec<Value> = ids.iter().map(|id| env.ticket(id)).collect();
    env.agent(&t[0], &[("state", "2"), ("comments", "Working on it")]);
    env.agent(&t[1], &[("state", "3"), ("comments", "Granted")]);
    env.agent(&t[2], &[("state", "4")]);
    assert!(env.idm.set_status(&ids[3], "fulfilled"));
    env.agent(&t[3], &[("state", "2")]);
    let summary = env.sync().await;
    assert!(summary.contains("3 reported"), "{summary}");
    let r0 = env.idm.request(&ids[0]).unwrap();
    assert_eq!(r0.ticket_state.as_deref(), Some("in_progress"));
    assert_eq!(r0.history.last().unwrap()["comment"], "Working on it");
    assert_eq!(env.idm.request(&ids[1]).unwrap().status, "fulfilled");
    assert_eq!(
        env.idm.request(&ids[1]).unwrap().history.last().unwrap()["comment"],
        "Granted"
    );
    assert_eq!(env.idm.request(&ids[2]).unwrap().status, "rejected");
    // The identity system refused the update (409): closed out, not failed.
    assert!(summary.contains("0 failed"), "{summary}");
    assert!(summary.contains("3 closed"), "{summary}");

    // Closed tickets are not read again; the open one still is.
    env.agent(&t[1], &[("comments", "Reopened by mistake")]);
    env.sn.control().clear_requests();
    env.sync().await;
    let reads = env
        .sn
        .control()
        .requests_to(&format!("/api/now/table/{TABLE}"));
    assert_eq!(reads.len(), 1, "one batch for the one open ticket");
    let q = reads[0].query.as_deref().unwrap_or_default();
    assert!(q.contains(t[0]["sys_id"].as_str().unwrap()), "{q}");
    assert!(!q.contains(t[1]["sys_id"].as_str().unwrap()), "{q}");
    assert_eq!(env.idm.request(&ids[1]).unwrap().history.len(), 2);

    // The deleted ticket: the request is closed out with a note.
    let (status, _) = env.act("history", json!({"request_id": ids[0]})).await;
    assert_eq!(status, 200);
    let gone = env.ticket(&ids[0]);
    let url = format!(
        "{}/api/now/table/{TABLE}/{}",
        env.sn.url(),
        gone["sys_id"].as_str().unwrap()
    );
    let deleted = reqwest::Client::new()
        .delete(url)
        .basic_auth(&env.sn.config().username, Some(&env.sn.config().password))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    env.sync().await;
    let r0 = env.idm.request(&ids[0]).unwrap();
    assert_eq!(r0.status, "rejected");
    assert!(
        r0.history.last().unwrap()["comment"]
            .as_str()
            .unwrap()
            .contains("was deleted"),
        "{r0:?}"
    );
    let (status, h) = env.act("history", json!({"request_id": ids[0]})).await;
    assert_eq!(status, 200, "{h}");
    let what: Vec<&str> = h["output"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        what,
        ["ticket created", "state", "state", "state", "closed"],
        "{h}"
    );
    let (status, list) = env.act("list", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(list["output"]["open"], json!([]), "{list}");
}

/// A lost insert answer: the ticket was written but the plugin never heard
/// so. The next run finds it by its correlation id and adopts it: one
/// ticket per request.
#[tokio::test]
async fn a_lost_insert_answer_makes_no_second_ticket() {
    let env = setup(2, "").await;
    env.sn.control().inject(
        Fault::on(format!("/api/now/table/{TABLE}"), FaultKind::LostAnswer)
            .method("POST")
            .times(1),
    );
    let summary = env.sync().await;
    assert!(summary.starts_with("1 created"), "{summary}");
    assert!(summary.contains("1 failed"), "{summary}");
    assert_eq!(env.sn.records(TABLE).len(), 2, "the lost one was written");
    let summary = env.sync().await;
    assert!(summary.starts_with("0 created, 1 adopted"), "{summary}");
    for r in env.idm.requests() {
        env.ticket(&r.id);
        assert_eq!(r.status, "in_progress");
    }
}

/// 2,000 open requests are read in batches of 100, two queries per batch
/// (40 ServiceNow requests in all), and tickets that stay quiet are read
/// less often.
#[tokio::test]
async fn polling_is_batched_and_backs_off() {
    // Quiet for six runs: read every fourth run only. A run makes up to
    // 2,000 requests; in a debug build on a loaded two-core machine that
    // once took longer than the default 30 s deadline, which this test is
    // not about.
    let env = setup_with(
        2_000,
        "backoff_after_runs = \"6\"\nbackoff_every = \"4\"",
        "deadline = 120000",
    )
    .await;
    // 2,000 inserts and 2,000 reports do not fit one run's 2,000 requests:
    // each run creates what it can and leaves the rest for the next.
    let first = env.sync().await;
    assert!(!first.contains(" 0 deferred"), "{first}");
    let mut runs = 1;
    while !env.sync().await.contains(" 0 deferred") {
        runs += 1;
        assert!(runs < 5, "still deferring after {runs} runs");
    }
    assert_eq!(env.sn.records(TABLE).len(), 2_000, "{first}");
    for r in env.idm.requests() {
        assert_eq!(r.status, "in_progress", "{r:?}");
    }
    env.sn.control().clear_requests();
    let summary = env.sync().await;
    assert!(summary.contains("2000 polled (0 backed off)"), "{summary}");
    let all = env.sn.control().requests();
    let tickets = env
        .sn
        .control()
        .requests_to(&format!("/api/now/table/{TABLE}"));
    let notes = env
        .sn
        .control()
        .requests_to("/api/now/table/sys_journal_field");
    assert_eq!(
        (tickets.len(), notes.len(), all.len()),
        (20, 20, 40),
        "{summary}"
    );

    // Once every cohort has been quiet for six runs, most are skipped in
    // each run, and every ticket is either read or backed off.
    let polled_in = |summary: &str| -> usize {
        summary
            .split("; ")
            .nth(1)
            .and_then(|p| p.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap()
    };
    let mut summary = env.sync().await;
    for _ in 0..6 {
        if polled_in(&summary) < 1_000 {
            break;
        }
        summary = env.sync().await;
    }
    let polled = polled_in(&summary);
    assert!(polled < 1_000, "{summary}");
    assert!(
        summary.contains(&format!("({} backed off)", 2_000 - polled)),
        "{summary}"
    );
}

/// The business rule's notice reads that one ticket at once, without
/// waiting for the job.
#[tokio::test]
async fn a_ticket_change_notice_is_handled_at_once() {
    let env = setup(1, "").await;
    env.sync().await;
    let id = env.idm.requests()[0].id.clone();
    let t = env.ticket(&id);
    env.agent(&t, &[("state", "3"), ("comments", "Done")]);
    let body = json!({"sys_id": t["sys_id"]}).to_string();
    let (status, r) = post(
        &env.d,
        "/hooks/acme/tickets/ticket-changed",
        None,
        &[("x-switchyard-token", "hook-t0ken")],
        &body,
    )
    .await;
    assert_eq!(status, 200, "{r}");
    eventually("the fulfilment", || async {
        (env.idm.request(&id).unwrap().status == "fulfilled").then_some(())
    })
    .await;
}

/// The identity system is master: only enabled categories get a ticket,
/// linked without changing the request; approvals, comments and a
/// withdrawal reach the ticket as states and work notes.
#[tokio::test]
async fn identity_master_pushes_changes_to_the_ticket() {
    let env = setup(0, "mode = \"identity-master\"\ncategories = \"finance\"").await;
    let fin = env.idm.add("finance", "pending_approval");
    let sales = env.idm.add("sales", "pending_approval");
    let summary = env.sync().await;
    assert!(summary.starts_with("1 created"), "{summary}");
    let t = env.ticket(&fin);
    assert!(
        env.sn
            .records(TABLE)
            .iter()
            .all(|r| r["correlation_id"] != sales.as_str())
    );
    let r = env.idm.request(&fin).unwrap();
    assert_eq!(r.status, "pending_approval", "linked, not changed");
    assert_eq!(r.ticket_number.as_deref(), t["number"].as_str());

    assert!(env.idm.set_status(&fin, "approved"));
    assert!(env.idm.comment(&fin, "lead.approver", "Approved for Q4"));
    let summary = env.sync().await;
    assert!(summary.contains("2 pushed"), "{summary}");
    let sys_id = t["sys_id"].as_str().unwrap();
    assert_eq!(env.sn.record(TABLE, sys_id).unwrap()["state"], "2");
    let notes = env.sn.work_notes(TABLE, sys_id);
    assert!(
        notes.iter().any(|n| n.contains("was approved")),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.contains("Approved for Q4")),
        "{notes:?}"
    );
    // Nothing new: nothing pushed twice.
    let summary = env.sync().await;
    assert!(summary.contains("0 pushed"), "{summary}");
    assert_eq!(env.sn.work_notes(TABLE, sys_id).len(), 2);

    assert!(env.idm.set_status(&fin, "withdrawn"));
    let summary = env.sync().await;
    assert!(
        summary.contains("1 pushed") && summary.contains("1 closed"),
        "{summary}"
    );
    assert_eq!(env.sn.record(TABLE, sys_id).unwrap()["state"], "7");
}

/// Outages: the identity system refusing for a while, then ServiceNow
/// failing a whole run. Each run ends with a clear account, and the next
/// good run brings both sides to agreement with nothing reported twice.
#[tokio::test]
async fn outages_are_reconciled_without_duplicates() {
    let env = setup(3, "").await;
    env.sync().await;
    let ids: Vec<String> = env.idm.requests().iter().map(|r| r.id.clone()).collect();
    let t0 = env.ticket(&ids[0]);
    env.agent(&t0, &[("state", "2"), ("comments", "On it")]);
    // The identity system is down for the reports (every retry too).
    env.idm.control().inject(
        Fault::on(
            "/api/access-requests/",
            FaultKind::Status {
                status: 503,
                message: None,
            },
        )
        .method("POST"),
    );
    let summary = env.sync().await;
    assert!(
        summary.contains("0 reported") && summary.contains("1 failed"),
        "{summary}"
    );
    assert_eq!(env.idm.request(&ids[0]).unwrap().history.len(), 1);
    env.idm.control().clear_faults();
    // A ServiceNow 429 in the middle is waited out within the run.
    env.sn.control().inject(
        Fault::on(
            format!("/api/now/table/{TABLE}"),
            FaultKind::RateLimit {
                retry_after_secs: 0,
            },
        )
        .method("GET")
        .times(1),
    );
    let summary = env.sync().await;
    assert!(
        summary.contains("1 reported") && summary.contains("0 failed"),
        "{summary}"
    );
    let r0 = env.idm.request(&ids[0]).unwrap();
    assert_eq!(r0.history.len(), 2, "reported once: {r0:?}");
    assert_eq!(r0.history[1]["comment"], "On it");

    // ServiceNow fails every read: the run fails, naming ServiceNow.
    env.agent(&t0, &[("state", "3")]);
    env.sn.control().inject(
        Fault::on(
            format!("/api/now/table/{TABLE}"),
            FaultKind::Status {
                status: 503,
                message: None,
            },
        )
        .method("GET"),
    );
    let failed = env.run_sync().await;
    assert_ne!(failed["last_outcome"], "ok", "{failed}");
    let error = failed["last_error"].to_string();
    assert!(error.contains("ServiceNow"), "{error}");
    env.sn.control().clear_faults();
    // The next run (a run-now is tried once; the schedule would bring the
    // next) catches up.
    let summary = env.sync().await;
    assert!(
        summary.contains("1 reported") && summary.contains("1 closed"),
        "{summary}"
    );
    let r0 = env.idm.request(&ids[0]).unwrap();
    assert_eq!(r0.status, "fulfilled");
    assert_eq!(r0.history.len(), 3, "{r0:?}");
}

/// A daemon killed in the middle of creating tickets: after a restart,
/// every request has exactly one ticket.
#[tokio::test]
async fn a_daemon_killed_mid_run_makes_no_duplicate_tickets() {
    // A short deadline: the killed run's lock lapses with it.
    let mut env = setup_with(60, "", "deadline = 4000").await;
    // ServiceNow answers inserts slowly, so the kill lands mid-run.
    env.sn.control().inject(
        Fault::on(
            format!("/api/now/table/{TABLE}"),
            FaultKind::Latency { ms: 40 },
        )
        .method("POST"),
    );
    start_job(&env.d, &env.token, BASE, "sync").await;
    eventually("part of the run", || async {
        (env.sn.records(TABLE).len() >= 10).then_some(())
    })
    .await;
    env.d.child.kill().unwrap();
    env.d.child.wait().unwrap();
    let before = env.sn.records(TABLE).len();
    assert!(before < 60, "the kill came too late to test anything");
    env.sn.control().clear_faults();

    // After the restart the re-queued run and this one may meet the dead
    // run's lock until its deadline; then one of them does the work.
    env.d = start(env._dir.path());
    eventually("a run that is not skipped", || async {
        let summary = env.sync().await;
        (!summary.starts_with("skipped")).then_some(())
    })
    .await;
    eventually("every request with its ticket", || async {
        (env.idm.requests().iter().all(|r| r.status == "in_progress")).then_some(())
    })
    .await;
    let mut seen = std::collections::HashSet::new();
    for t in env.sn.records(TABLE) {
        let id = t["correlation_id"].as_str().unwrap().to_owned();
        assert!(seen.insert(id.clone()), "two tickets for {id}");
    }
    assert_eq!(seen.len(), 60);
}

/// ServiceNow is master, and the requester withdraws the request in the
/// identity system: the ticket is closed (skipped) with a work note, and
/// nothing more flows for it. The field mapping is the tenant's.
#[tokio::test]
async fn a_withdrawn_request_closes_its_ticket() {
    let env = setup(
        2,
        "resource_field = \"u_resource\"\njustification_field = \"u_why\"",
    )
    .await;
    env.sync().await;
    let ids: Vec<String> = env.idm.requests().iter().map(|r| r.id.clone()).collect();
    let t = env.ticket(&ids[0]);
    assert!(
        t["u_resource"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Access request {}", ids[0]))
    );
    assert!(t["u_why"].as_str().unwrap().contains("quarter-end"));
    assert!(env.idm.set_status(&ids[0], "withdrawn"));
    let summary = env.sync().await;
    assert!(
        summary.contains("1 pushed") && summary.contains("1 closed"),
        "{summary}"
    );
    let sys_id = t["sys_id"].as_str().unwrap();
    assert_eq!(env.sn.record(TABLE, sys_id).unwrap()["state"], "7");
    let notes = env.sn.work_notes(TABLE, sys_id);
    assert!(
        notes.iter().any(|n| n.contains("was withdrawn")),
        "{notes:?}"
    );
    // The agent's later change goes nowhere: the request is closed out.
    env.agent(&t, &[("state", "2")]);
    let summary = env.sync().await;
    assert!(
        summary.contains("0 reported") && summary.contains("1 polled"),
        "{summary}"
    );
    assert_eq!(env.idm.request(&ids[0]).unwrap().status, "withdrawn");
}

/// Tickets as incidents: the caller is the requester, and a resolved
/// incident fulfils the request. `verify` reaches both systems.
#[tokio::test]
async fn incidents_work_as_tickets_and_verify_reaches_both_systems() {
    let env = setup(1, "ticket_table = \"incident\"").await;
    let (status, out) = env.act("verify", json!({})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["output"]["identity"]["pending_manual"], 1, "{out}");
    assert_eq!(out["output"]["servicenow"]["table"], "incident", "{out}");
    env.sync().await;
    let id = env.idm.requests()[0].id.clone();
    let inc = env
        .sn
        .records("incident")
        .into_iter()
        .find(|i| i["correlation_id"] == id.as_str())
        .expect("an incident for the request");
    let caller = env
        .sn
        .record("sys_user", inc["caller_id"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        caller["email"],
        env.idm.requests()[0].requester_email.as_str()
    );
    let (_, list) = env.act("list", json!({})).await;
    assert_eq!(list["output"]["open"][0]["ticket"], inc["number"], "{list}");
    assert!(
        list["output"]["open"][0]["last_exchange_at"]
            .as_i64()
            .unwrap()
            > 0,
        "{list}"
    );
    assert!(env.sn.agent_update(
        "incident",
        inc["sys_id"].as_str().unwrap(),
        &[("state", "6")]
    ));
    env.sync().await;
    assert_eq!(env.idm.request(&id).unwrap().status, "fulfilled");
}

/// Identity master: a push that fails (ServiceNow refusing one ticket) is
/// kept and finished in a later run without sending anything twice, and
/// it never holds up the other requests' changes.
#[tokio::test]
async fn a_failed_push_is_finished_later_and_holds_nothing_up() {
    let env = setup(0, "mode = \"identity-master\"\ncategories = \"finance\"").await;
    let a = env.idm.add("finance", "pending_approval");
    let b = env.idm.add("finance", "pending_approval");
    env.sync().await;
    let (ta, tb) = (env.ticket(&a), env.ticket(&b));
    let (sa, sb) = (
        ta["sys_id"].as_str().unwrap().to_owned(),
        tb["sys_id"].as_str().unwrap().to_owned(),
    );
    assert!(env.idm.set_status(&a, "approved"));
    assert!(env.idm.comment(&a, "lead", "Fine by me"));
    assert!(env.idm.set_status(&b, "approved"));
    env.sn.control().inject(
        Fault::on(
            format!("/api/now/table/{TABLE}/{sa}"),
            FaultKind::Status {
                status: 503,
                message: None,
            },
        )
        .method("PATCH"),
    );
    let summary = env.sync().await;
    assert!(
        summary.contains("1 pushed") && summary.contains("1 failed"),
        "{summary}"
    );
    assert_eq!(
        env.sn.record(TABLE, &sb).unwrap()["state"],
        "2",
        "b was not held up"
    );
    env.sn.control().clear_faults();
    let summary = env.sync().await;
    assert!(
        summary.contains("2 pushed") && summary.contains("0 failed"),
        "{summary}"
    );
    assert_eq!(env.sn.record(TABLE, &sa).unwrap()["state"], "2");
    let notes = env.sn.work_notes(TABLE, &sa);
    assert_eq!(notes.len(), 2, "one state note and one comment: {notes:?}");
    // Nothing left to do: nothing is sent again.
    let summary = env.sync().await;
    assert!(summary.contains("0 pushed"), "{summary}");
    assert_eq!(env.sn.work_notes(TABLE, &sb).len(), 1);
}
