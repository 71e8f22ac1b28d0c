//! The `session-import` plugin driven through the daemon against the
//! BeyondTrust and ServiceNow simulators: the first pull (24 h back),
//! incremental pulls, the event filter, both association paths, the
//! work-note switches, session keys, lookup tables, outbound events (wrong
//! token, wrong address, duplicates), bad upstream answers, an insert whose
//! answer was lost, and a daemon killed in the middle of an import.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use switchyard_sim::beyondtrust::{BeyondTrust, BtConfig, NS_BEYONDTRUST, Session};
use switchyard_sim::common::{Fault, FaultKind};
use switchyard_sim::servicenow::{ServiceNow, ServiceNowConfig};

const TABLE: &str = "x_bmgr_support_session";
const BASE: &str = "/v1/tenants/acme/instances/sessions";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A tenant file with one `sessions` instance; `config` adds config keys,
/// `more` adds sections (jobs, webhooks, limits, more instances).
fn tenant(bt: &BeyondTrust, sn: &ServiceNow, config: &str, more: &str) -> String {
    format!(
        "[roles]\n\"ITIL Agent\" = [\"agent\"]\n\"Integration Admin\" = [\"admin\"]\n\n{}",
        session_import_instance(bt, sn, "sessions", config, more)
    )
}

struct Env {
    bt: BeyondTrust,
    sn: ServiceNow,
    dir: tempfile::TempDir,
    d: Daemon,
    token: String,
}

type Extra<'a> = Option<&'a dyn Fn(&BeyondTrust, &ServiceNow) -> String>;

async fn setup_with(bt: BeyondTrust, config: &str, more: &str, extra: Extra<'_>) -> Env {
    let sn = ServiceNow::start(ServiceNowConfig::default(), 6, 20, 20)
        .await
        .unwrap();
    // The reps' ServiceNow accounts, for auto-association by user name.
    for (user, name) in [("jrep", "Jane Rep"), ("mtech", "Max Tech")] {
        sn.insert("sys_user", &[("user_name", user), ("name", name)]);
    }
    let mut acme = tenant(&bt, &sn, config, more);
    if let Some(extra) = extra {
        acme.push('\n');
        acme.push_str(&extra(&bt, &sn));
    }
    let (dir, token) = acme_with_secrets(
        &acme,
        &[
            ("bt-secret", bt.config().client_secret.clone()),
            ("sn-password", sn.config().password.clone()),
            ("bt-event-token", "event-token-1".to_owned()),
        ],
    );
    let d = start(dir.path());
    Env {
        bt,
        sn,
        dir,
        d,
        token,
    }
}

async fn setup(sessions: usize, config: &str) -> Env {
    let bt = BeyondTrust::start(BtConfig::default(), 6, sessions)
        .await
        .unwrap();
    setup_with(bt, config, "", None).await
}

impl Env {
    async fn act(&self, action: &str, roles: &[&str], input: Value) -> (u16, Value) {
        let path = format!("{BASE}/actions/{action}");
        act(&self.d, &self.token, &path, roles, input).await
    }

    /// Generate Session Key as an agent.
    async fn generate_key(&self, input: Value) -> (u16, Value) {
        self.act("generate-session-key", &["ITIL Agent"], input)
            .await
    }

    /// A Pull Sessions Now that fails with 502; its error message.
    async fn failed_pull(&self) -> String {
        let (status, out) = self
            .act("pull-sessions-now", &["Integration Admin"], json!({}))
            .await;
        assert_eq!(status, 502, "{out}");
        out["error"]["message"].as_str().unwrap().to_owned()
    }

    async fn pull(&self) -> Value {
        let (status, out) = self
            .act("pull-sessions-now", &["Integration Admin"], json!({}))
            .await;
        assert_eq!(status, 200, "{out}");
        out["output"].clone()
    }

    /// How many queued outbound events the plugin has processed.
    async fn webhook_runs(&self) -> i64 {
        let (status, st) = get(&self.d, &format!("{BASE}/status"), Some(&self.token)).await;
        assert_eq!(status, 200, "{st}");
        st["invocations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == "webhook" && s["name"] == "outbound-events")
            .map_or(0, |s| s["runs"].as_i64().unwrap())
    }

    /// Session records by lsid; panics if an lsid has two.
    fn records(&self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for r in self.sn.records(TABLE) {
            let lsid = r["u_lsid"].as_str().unwrap().to_owned();
            assert!(
                out.insert(lsid.clone(), r).is_none(),
                "two records for session {lsid}"
            );
        }
        out
    }

    fn incident(&self, number: &str) -> Value {
        self.sn
            .records("incident")
            .into_iter()
            .find(|i| i["number"] == number)
            .unwrap_or_else(|| panic!("no incident {number}"))
    }
}

/// Sessions that ended in the last `secs` (with a minute's margin either
/// side of the boundary, which the test's clock and the plugin's differ by).
fn ended_within(bt: &BeyondTrust, secs: i64) -> (Vec<Session>, Vec<Session>) {
    let edge = now() - secs;
    let all = bt.sessions();
    (
        all.iter().filter(|s| s.end > edge + 60).cloned().collect(),
        all.iter().filter(|s| s.end < edge - 60).cloned().collect(),
    )
}

#[tokio::test]
async fn first_pull_reaches_back_a_day_then_pulls_only_new_sessions() {
    let env = setup(
        60,
        "associate_user = \"true\"\nnote_customer_initiated = \"true\"",
    )
    .await;
    let (recent, old) = ended_within(&env.bt, 86_400);
    assert!(recent.len() > 20 && old.len() > 20, "the seed spans 48 h");

    let out = env.pull().await;
    let records = env.records();
    for s in &recent {
        assert!(records.contains_key(&s.lsid), "session {} missing", s.lsid);
    }
    for s in &old {
        assert!(
            !records.contains_key(&s.lsid),
            "session {} is older than 24 h",
            s.lsid
        );
    }
    assert_eq!(out["stats"]["imported"], records.len(), "{out}");

    // One session's record, field by field.
    let s = &recent[0];
    let r = &records[&s.lsid];
    assert_eq!(r["u_duration"], (s.end - s.start).to_string());
    assert_eq!(r["u_primary_rep_name"], s.primary_rep.display_name);
    assert_eq!(r["u_primary_rep_username"], s.primary_rep.username);
    assert_eq!(r["u_customer_name"], s.customer["name"]);
    assert_eq!(r["u_customer_hostname"], s.customer["hostname"]);
    assert_eq!(r["u_issue"], s.customer["issue"]);
    assert_eq!(r["u_event_count"], s.events.len().to_string());
    for ev in &s.events {
        assert!(
            r["u_events"]
                .as_str()
                .unwrap()
                .contains(&format!("[{}]", ev.event_type)),
            "{r}"
        );
    }
    // Auto-association with the primary rep's ServiceNow user.
    let users = env.sn.records("sys_user");
    let jrep = users.iter().find(|u| u["user_name"] == "jrep").unwrap();
    let by_jrep = recent
        .iter()
        .find(|s| s.primary_rep.username == "jrep")
        .expect("a session of jrep");
    assert_eq!(records[&by_jrep.lsid]["u_primary_rep"], jrep["sys_id"]);
    let by_sdesk = recent.iter().find(|s| s.primary_rep.username == "sdesk");
    if let Some(s) = by_sdesk {
        assert_eq!(
            records[&s.lsid]["u_primary_rep"], "",
            "sdesk has no account"
        );
    }

    // Association by external key, with the session-end work note.
    let keyed = recent
        .iter()
        .find(|s| s.external_key.is_some())
        .expect("a session started from an incident");
    let inc = env.incident(keyed.external_key.as_deref().unwrap());
    let r = &records[&keyed.lsid];
    assert_eq!(r["u_task"], inc["sys_id"]);
    assert_eq!(r["u_association"], "external key");
    let notes = env
        .sn
        .work_notes("incident", inc["sys_id"].as_str().unwrap());
    assert!(
        notes
            .iter()
            .any(|n| n.contains(&format!("Remote support session {} ended", keyed.lsid))),
        "{notes:?}"
    );
    // Association by the rep exit survey's task number.
    let surveyed = recent
        .iter()
        .find(|s| s.external_key.is_none() && !s.rep_survey.is_empty())
        .expect("a customer-initiated session with a survey");
    let number = &surveyed.rep_survey[0].1;
    let inc = env.incident(number);
    let r = &records[&surveyed.lsid];
    assert_eq!(r["u_task"], inc["sys_id"]);
    assert_eq!(r["u_association"], "exit survey");
    assert_eq!(r["u_customer_initiated"], "true");
    let notes = env
        .sn
        .work_notes("incident", inc["sys_id"].as_str().unwrap());
    assert!(
        notes.iter().any(|n| n.contains(&format!(
            "Customer-initiated remote support session {} associated through the exit survey",
            surveyed.lsid
        ))),
        "{notes:?}"
    );
    // A session with neither is recorded without a task.
    if let Some(s) = recent
        .iter()
        .find(|s| s.external_key.is_none() && s.rep_survey.is_empty())
    {
        assert_eq!(records[&s.lsid]["u_task"], "");
    }
    let notes_before = env.sn.records("sys_journal_field").len();

    // The next pull finds nothing new: nothing is written twice.
    let out = env.pull().await;
    assert_eq!(out["stats"]["imported"], 0, "{out}");
    assert_eq!(env.records().len(), records.len());
    assert_eq!(env.sn.records("sys_journal_field").len(), notes_before);

    // A session that ends now is picked up by the next pull, alone.
    let inc = env.incident("INC0010005");
    let lsid = env.bt.complete_session(Some("INC0010005"), None);
    let out = env.pull().await;
    assert_eq!(out["stats"]["imported"], 1, "{out}");
    let records = env.records();
    assert_eq!(records[&lsid]["u_task"], inc["sys_id"]);

    // Every call reused one BeyondTrust token.
    assert_eq!(env.bt.live_tokens(), 1);
    assert_eq!(env.bt.control().requests_to("/oauth2/token").len(), 1);
}

#[tokio::test]
async fn event_filter_and_work_note_switches_decide_what_is_written() {
    let env = setup(
        40,
        "events_to_import = \"Chat Message; Session Note Added\"\n\
         note_session_end = \"false\"\n\
         note_customer_initiated = \"false\"",
    )
    .await;
    // Two sessions of our own, with known content: one from an incident
    // and one the customer started, both with session notes.
    env.pull().await;
    env.bt.complete_session(Some("INC0010003"), None);
    let customer = env.bt.complete_session(None, Some("INC0010004"));
    env.pull().await;
    let records = env.records();
    let sessions: BTreeMap<String, Session> = env
        .bt
        .sessions()
        .into_iter()
        .map(|s| (s.lsid.clone(), s))
        .collect();

    // Only the chosen event types are copied into records.
    for (lsid, r) in &records {
        let events = r["u_events"].as_str().unwrap();
        for line in events.lines() {
            assert!(
                line.contains("[Chat Message]") || line.contains("[Session Note Added]"),
                "{line}"
            );
        }
        let wanted = sessions[lsid]
            .events
            .iter()
            .filter(|e| e.event_type == "Chat Message" || e.event_type == "Session Note Added")
            .count();
        assert_eq!(r["u_event_count"], wanted.to_string(), "{lsid}");
    }

    // Session notes are logged, session ends are not, and customer-
    // initiated sessions leave no notes at all (though they are associated).
    let notes: Vec<String> = env
        .sn
        .records("sys_journal_field")
        .into_iter()
        .filter(|j| j["element"] == "work_notes")
        .map(|j| j["value"].as_str().unwrap().to_owned())
        .collect();
    assert!(notes.iter().all(|n| !n.contains("ended")), "{notes:?}");
    let expected: usize = records
        .iter()
        .filter(|(lsid, r)| r["u_task"] != "" && sessions[*lsid].external_key.is_some())
        .map(|(lsid, _)| {
            sessions[lsid]
                .events
                .iter()
                .filter(|e| e.event_type == "Session Note Added")
                .count()
        })
        .sum();
    assert!(
        expected > 0,
        "the seed has session notes in sessions from incidents"
    );
    let logged: usize = notes
        .iter()
        .map(|n| n.matches("Session note in ").count())
        .sum();
    assert_eq!(logged, expected, "{notes:?}");
    assert_eq!(
        records[&customer]["u_task"],
        env.incident("INC0010004")["sys_id"]
    );
    for (lsid, s) in &sessions {
        if s.external_key.is_none() {
            assert!(
                notes.iter().all(|n| !n.contains(lsid.as_str())),
                "{notes:?}"
            );
        }
    }

    // Loading the event types twice inserts nothing the second time.
    let (status, first) = env
        .act("load-event-types", &["Integration Admin"], json!({}))
        .await;
    assert_eq!(status, 200, "{first}");
    let rows = env.sn.records("x_bmgr_support_event_type");
    assert_eq!(first["output"]["added"], rows.len(), "{first}");
    let chat = rows.iter().find(|r| r["u_name"] == "Chat Message").unwrap();
    assert_eq!(chat["u_import"], "true");
    let transfer = rows
        .iter()
        .find(|r| r["u_name"] == "File Transfer")
        .unwrap();
    assert_eq!(transfer["u_import"], "false");
    let (_, second) = env
        .act("load-event-types", &["Integration Admin"], json!({}))
        .await;
    assert_eq!(second["output"]["added"], 0, "{second}");
    assert_eq!(second["output"]["updated"], 0, "{second}");
    assert_eq!(
        env.sn.records("x_bmgr_support_event_type").len(),
        rows.len()
    );

    // Load Issues: added, then unchanged; a changed row is updated.
    let (status, out) = env
        .act("load-issues", &["Integration Admin"], json!({}))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["output"]["added"], 3, "{out}");
    let issues = env.sn.records("x_bmgr_support_issue");
    let printer = issues
        .iter()
        .find(|i| i["u_code_name"] == "printer")
        .unwrap();
    assert_eq!(printer["u_team"], "Service Desk");
    env.sn.agent_update(
        "x_bmgr_support_issue",
        printer["sys_id"].as_str().unwrap(),
        &[("u_description", "edited by hand")],
    );
    let (_, out) = env
        .act("load-issues", &["Integration Admin"], json!({}))
        .await;
    assert_eq!(
        (
            &out["output"]["added"],
            &out["output"]["updated"],
            &out["output"]["unchanged"]
        ),
        (&json!(0), &json!(1), &json!(2)),
        "{out}"
    );
    // Admin actions need the admin role.
    let (status, _) = env.act("load-issues", &["ITIL Agent"], json!({})).await;
    assert_eq!(status, 403);

    // The command API refuses with `<error>` inside a 200: that is a
    // failure naming the site's words, not "0 issues".
    env.bt.control().inject(
        Fault::on(
            "/api/command",
            FaultKind::Status {
                status: 200,
                message: Some("Insufficient permissions to view support teams.".into()),
            },
        )
        .times(1),
    );
    let (status, out) = env
        .act("load-issues", &["Integration Admin"], json!({}))
        .await;
    assert_eq!(status, 502, "{out}");
    assert!(
        out.to_string()
            .contains("Insufficient permissions to view support teams."),
        "{out}"
    );
}

#[tokio::test]
async fn a_key_expiry_sent_as_element_text_is_read() {
    let bt = BeyondTrust::start(
        BtConfig {
            expiry_as_text: true,
            ..BtConfig::default()
        },
        6,
        0,
    )
    .await
    .unwrap();
    let env = setup_with(bt, "", "", None).await;
    let (status, out) = env.generate_key(json!({"incident": "INC0010002"})).await;
    assert_eq!(status, 200, "{out}");
    let expires = env.bt.session_keys()[0].expires;
    assert_eq!(out["output"]["expires"], expires, "{out}");
}

#[tokio::test]
async fn session_keys_come_from_open_incidents_only() {
    let env = setup(0, "").await;
    let inc = env.incident("INC0010002");
    let (status, out) = env.generate_key(json!({"incident": "INC0010002"})).await;
    assert_eq!(status, 200, "{out}");
    let out = &out["output"];
    let keys = env.bt.session_keys();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].external_key.as_deref(), Some("INC0010002"));
    assert_eq!(keys[0].queue_id, "general");
    assert_eq!(out["key_url"], keys[0].key_url);
    assert_eq!(out["short_key"], keys[0].short_key);
    assert!(
        out["mail_body"]
            .as_str()
            .unwrap()
            .contains(&keys[0].key_url),
        "{out}"
    );
    let notes = env
        .sn
        .work_notes("incident", inc["sys_id"].as_str().unwrap());
    assert!(
        notes.iter().any(|n| n.contains(&format!(
            "session key {} generated by agent.smith@acme.example",
            keys[0].short_key
        ))),
        "{notes:?}"
    );
    // The command went out as documented.
    let cmd = &env.bt.control().requests_to("/api/command")[0];
    assert_eq!(cmd.param("action").as_deref(), Some("generate_session_key"));
    assert_eq!(cmd.param("type").as_deref(), Some("support"));

    // By sys_id too; a resolved incident is refused; an unknown one is 404.
    let (status, out) = env
        .generate_key(json!({"incident": inc["sys_id"], "queue_id": "team:1"}))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(env.bt.session_keys()[1].queue_id, "team:1");
    env.sn.agent_update(
        "incident",
        inc["sys_id"].as_str().unwrap(),
        &[("state", "6")],
    );
    let (status, out) = env.generate_key(json!({"incident": "INC0010002"})).await;
    assert_eq!(status, 409, "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("resolved"),
        "{out}"
    );
    assert_eq!(
        env.bt.session_keys().len(),
        2,
        "no key for a resolved incident"
    );
    let (status, _) = env.generate_key(json!({"incident": "INC0099999"})).await;
    assert_eq!(status, 404);
    let (status, _) = env
        .act(
            "generate-session-key",
            &["Nobody"],
            json!({"incident": "INC0010002"}),
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn bad_upstream_answers_fail_clearly_and_keep_the_cursor() {
    let bt = BeyondTrust::start(
        BtConfig {
            namespace: NS_BEYONDTRUST,
            ..BtConfig::default()
        },
        9,
        30,
    )
    .await
    .unwrap();
    let env = setup_with(bt, "", "", None).await;
    // A report cut off in the middle: a clear error, nothing lost.
    env.bt
        .control()
        .inject(Fault::on("/api/reporting", FaultKind::Malformed).times(1));
    let msg = env.failed_pull().await;
    assert!(msg.contains("not well-formed"), "{msg}");
    assert!(msg.contains("the cursor stays"), "{msg}");
    // Rate limits and a 503 are waited out within the run.
    for kind in [
        FaultKind::RateLimit {
            retry_after_secs: 1,
        },
        FaultKind::Status {
            status: 503,
            message: None,
        },
    ] {
        env.bt
            .control()
            .inject(Fault::on("/api/reporting", kind).times(1));
    }
    let out = env.pull().await;
    let (recent, _) = ended_within(&env.bt, 86_400);
    let records = env.records();
    for s in &recent {
        assert!(records.contains_key(&s.lsid), "{out}");
    }
    // The newer namespace was read; a window with nothing in it is fine.
    let out = env.pull().await;
    assert_eq!(out["stats"]["imported"], 0, "{out}");
}

#[tokio::test]
async fn an_insert_whose_answer_was_lost_is_not_written_twice() {
    let env = setup(12, "").await;
    // ServiceNow writes the first record, but its answer never arrives: the
    // plugin cannot tell whether the insert took effect.
    env.sn.control().inject(
        Fault::on(format!("/api/now/table/{TABLE}"), FaultKind::LostAnswer)
            .method("POST")
            .times(1),
    );
    let msg = env.failed_pull().await;
    assert!(msg.contains("ServiceNow"), "{msg}");
    // The run stopped there; the insert is not repeated blindly.
    assert_eq!(env.records().len(), 1);
    // The next run asks ServiceNow first, finds the record and completes it.
    let out = env.pull().await;
    assert_eq!(out["stats"]["resumed"], 1, "{out}");
    let (recent, _) = ended_within(&env.bt, 86_400);
    let records = env.records();
    for s in &recent {
        assert!(records.contains_key(&s.lsid), "{} missing: {out}", s.lsid);
    }
    let inserts = env
        .sn
        .control()
        .requests_to(&format!("/api/now/table/{TABLE}"))
        .into_iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(inserts, records.len(), "one insert per record");
}

#[tokio::test]
async fn outbound_events_import_each_session_once_and_refuse_strangers() {
    let bt = BeyondTrust::start(
        BtConfig {
            retry_ms: 200,
            ..BtConfig::default()
        },
        7,
        0,
    )
    .await
    .unwrap();
    let hooks = r#"
[instance.webhooks.outbound-events]
token = "secret:bt-event-token"
token_param = "outbound_event_token"
allowed_ips = ["127.0.0.1"]
"#;
    // A second instance that accepts events only from 192.0.2.0/24.
    let strict = |bt: &BeyondTrust, sn: &ServiceNow| {
        session_import_instance(
            bt,
            sn,
            "strict",
            "",
            "[instance.webhooks.outbound-events]\ntoken = \"secret:bt-event-token\"\n\
             token_param = \"outbound_event_token\"\nallowed_ips = [\"192.0.2.0/24\"]\n",
        )
    };
    let env = setup_with(
        bt,
        "note_customer_initiated = \"true\"",
        hooks,
        Some(&strict),
    )
    .await;
    let url = format!("{}/hooks/acme/sessions/outbound-events", env.d.base);
    env.bt.set_outbound(&url, "event-token-1");

    // A session from an incident, and one associated by the exit survey.
    let keyed = env.bt.complete_session(Some("INC0010007"), None);
    let surveyed = env.bt.complete_session(None, Some("INC0010008"));
    let records = eventually("both sessions imported", || async {
        let r = env.records();
        let done = r.get(&surveyed).is_some_and(|x| x["u_task"] != "");
        (r.contains_key(&keyed) && done).then_some(r)
    })
    .await;
    assert_eq!(records.len(), 2);
    assert_eq!(records[&keyed]["u_association"], "external key");
    assert_eq!(records[&surveyed]["u_association"], "exit survey");
    assert_eq!(
        records[&surveyed]["u_task"],
        env.incident("INC0010008")["sys_id"]
    );
    for e in env.bt.delivered() {
        assert_eq!(e.statuses, [200], "every event was answered 200 at once");
    }

    // A duplicate event changes nothing. (The first event's work note is
    // written after its record: wait for it, so that it is not mistaken
    // for the duplicate's.)
    let inc = env.incident("INC0010007");
    let notes = eventually("the first event's work note", || async {
        let n = env
            .sn
            .work_notes("incident", inc["sys_id"].as_str().unwrap());
        (!n.is_empty()).then_some(n)
    })
    .await;
    env.bt
        .send_event("support_conference_end", &keyed, Some("INC0010007"));
    eventually("the duplicate delivered", || async {
        (env.bt.pending().is_empty() && env.bt.delivered().len() == 4).then_some(())
    })
    .await;
    // Every delivered event's queued job has run, the duplicate's too.
    eventually("the duplicate processed", || async {
        (env.webhook_runs().await == 4).then_some(())
    })
    .await;
    assert_eq!(env.records().len(), 2);
    assert_eq!(
        env.sn
            .work_notes("incident", inc["sys_id"].as_str().unwrap()),
        notes
    );

    // A wrong token is refused; nothing is imported while it is wrong, and
    // nothing is lost: the site holds the event until it is accepted.
    env.bt.set_outbound(&url, "wrong-token");
    let held = env.bt.complete_session(Some("INC0010009"), None);
    // The site has tried (and been refused) more than once.
    let pending = eventually("the event refused twice", || async {
        let p = env.bt.pending();
        (p.first().is_some_and(|e| e.statuses.len() >= 2)).then_some(p)
    })
    .await;
    assert!(
        pending[0].statuses.iter().all(|s| *s == 401),
        "{:?}",
        pending[0].statuses
    );
    assert!(!env.records().contains_key(&held));
    env.bt.set_outbound(&url, "event-token-1");
    eventually("the held session imported", || async {
        env.records().contains_key(&held).then_some(())
    })
    .await;

    // A wrong source address is refused (this instance accepts only
    // 192.0.2.0/24) and nothing is imported.
    let elsewhere = format!("{}/hooks/acme/strict/outbound-events", env.d.base);
    env.bt.set_outbound(&elsewhere, "event-token-1");
    let refused = env.bt.complete_session(Some("INC0010010"), None);
    let pending = eventually("the event refused twice", || async {
        let p = env.bt.pending();
        (p.first().is_some_and(|e| e.statuses.len() >= 2)).then_some(p)
    })
    .await;
    assert!(
        pending[0].statuses.iter().all(|s| *s == 403),
        "{:?}",
        pending[0].statuses
    );
    assert!(!env.records().contains_key(&refused));
    assert_eq!(env.records().len(), 3);
}

#[test]
fn a_tenant_cannot_set_up_both_the_pull_and_outbound_events() {
    let dir = config_dir(
        "data_dir = \"data\"\n",
        &[(
            "acme",
            r#"[[instance]]
id = "sessions"
plugin = "session-import"
egress = ["https://support.acme.example"]
config = { site_url = "https://support.acme.example", servicenow_url = "https://acme.service-now.com" }
[instance.jobs.pull]
[instance.webhooks.outbound-events]
allowed_ips = ["192.0.2.0/24"]
"#,
        )],
    );
    let out = bin()
        .args(["check", "--config", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("jobs.pull") && text.contains("not both"),
        "{text}"
    );
}

#[tokio::test]
async fn a_daemon_killed_mid_import_imports_every_session_exactly_once() {
    let bt = BeyondTrust::start(BtConfig::default(), 8, 0).await.unwrap();
    bt.add_sessions(8, 120, 20 * 3600);
    let limits = "\n[instance.limits]\ndeadline = 120000\nhttp_requests = 5000\n";
    let mut env = setup_with(
        bt,
        "claim_lease_secs = \"2\"\nrun_budget_secs = \"100\"",
        limits,
        None,
    )
    .await;
    // ServiceNow answers slowly, so the kill lands mid-import.
    env.sn.control().inject(
        Fault::on(
            format!("/api/now/table/{TABLE}"),
            FaultKind::Latency { ms: 40 },
        )
        .method("POST"),
    );
    let run = format!("{BASE}/jobs/pull/run");
    let (status, out) = post(&env.d, &run, Some(&env.token), &[], "{}").await;
    assert_eq!(status, 202, "{out}");
    eventually("part of the import", || async {
        (env.sn.records(TABLE).len() >= 20).then_some(())
    })
    .await;
    env.d.child.kill().unwrap();
    env.d.child.wait().unwrap();
    let before = env.records().len();
    assert!(before < 120, "the kill came too late to test anything");

    env.d = start(env.dir.path());
    let give_up = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, out) = post(&env.d, &run, Some(&env.token), &[], "{}").await;
        assert_eq!(status, 202, "{out}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let records = env.records();
        if records.len() == 120 {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "only {} of 120 imported",
            records.len()
        );
    }
    let want: HashSet<String> = env.bt.sessions().into_iter().map(|s| s.lsid).collect();
    let got: HashSet<String> = env.records().into_keys().collect();
    assert_eq!(got, want);
}

/// Copies the directory `from` to `to` (which must not exist).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

impl Env {
    /// Stops the daemon, runs `with_data` on its data directory, starts it
    /// again.
    fn restart(&mut self, with_data: impl FnOnce(&std::path::Path)) {
        self.d.child.kill().unwrap();
        self.d.child.wait().unwrap();
        with_data(&self.dir.path().join("data"));
        self.d = start(self.dir.path());
    }

    /// Lookups of sessions by lsid that ServiceNow has answered so far.
    fn lsid_lookups(&self) -> usize {
        self.sn
            .control()
            .requests_to(&format!("/api/now/table/{TABLE}"))
            .iter()
            .filter(|r| r.method == "GET" && r.query.as_deref().unwrap_or("").contains("u_lsidIN"))
            .count()
    }
}

/// Issue 19, session-import 2: idempotency holds against ServiceNow, not
/// only against this daemon's storage. A restored backup (markers and
/// cursor from before the last imports) and a new data directory (none
/// at all), each pointed at the same ServiceNow, import nothing twice,
/// and the lookup is one query per batch, not one per session.
#[tokio::test]
async fn a_restored_backup_or_a_new_data_directory_imports_nothing_twice() {
    let mut env = setup(0, "").await;
    let scratch = tempfile::tempdir().unwrap();
    let (fresh, backup) = (scratch.path().join("fresh"), scratch.path().join("backup"));
    // A daemon that has never pulled: its data directory as it is now.
    env.restart(|data| copy_dir(data, &fresh));
    let out = env.pull().await;
    assert_eq!(out["stats"]["imported"], 0, "{out}");
    // The backup: taken after that pull (a cursor, no markers).
    env.restart(|data| copy_dir(data, &backup));

    let lsids: HashSet<String> = env.bt.add_sessions(7, 20, 200).into_iter().collect();
    let out = env.pull().await;
    assert_eq!(out["stats"]["imported"], 20, "{out}");
    assert_eq!(env.records().into_keys().collect::<HashSet<_>>(), lsids);

    // Restored: the 20 sessions are read again, found with one lookup,
    // and left alone.
    env.restart(|data| {
        std::fs::remove_dir_all(data).unwrap();
        copy_dir(&backup, data);
    });
    let lookups = env.lsid_lookups();
    let out = env.pull().await;
    assert_eq!(out["stats"]["imported"], 0, "{out}");
    assert_eq!(out["stats"]["found_in_servicenow"], 20, "{out}");
    assert!(
        out["summary"]
            .as_str()
            .unwrap()
            .contains("20 found in ServiceNow without a marker here"),
        "{out}"
    );
    assert_eq!(env.lsid_lookups() - lookups, 1, "one lookup for the batch");
    assert_eq!(env.records().len(), 20);
    // A second pull finds the markers the first one left: no lookup.
    let lookups = env.lsid_lookups();
    let out = env.pull().await;
    assert_eq!(out["stats"]["found_in_servicenow"], 0, "{out}");
    assert_eq!(env.lsid_lookups(), lookups);

    // New: the first pull starts after the latest session ServiceNow
    // holds, instead of 24 hours back.
    env.restart(|data| {
        std::fs::remove_dir_all(data).unwrap();
        copy_dir(&fresh, data);
    });
    let latest = env.bt.sessions().iter().map(|s| s.end).max().unwrap();
    let out = env.pull().await;
    assert_eq!(out["stats"]["imported"], 0, "{out}");
    assert_eq!(out["report"]["after_servicenow"], latest, "{out}");
    assert_eq!(out["report"]["from"], latest, "{out}");
    assert!(
        out["summary"]
            .as_str()
            .unwrap()
            .contains("after the latest session already in ServiceNow"),
        "{out}"
    );
    assert_eq!(env.records().into_keys().collect::<HashSet<_>>(), lsids);
}

#[tokio::test]
async fn with_import_external_sessions_off_only_sessions_a_task_claims_are_imported() {
    let env = setup(60, "import_external_sessions = \"false\"").await;
    let (recent, _) = ended_within(&env.bt, 86_400);
    let out = env.pull().await;
    let records = env.records();
    let unclaimed: Vec<_> = recent
        .iter()
        .filter(|s| s.external_key.is_none() && s.rep_survey.is_empty())
        .collect();
    assert!(
        !unclaimed.is_empty(),
        "the seed has sessions no task claims"
    );
    for s in &recent {
        let claimed = s.external_key.is_some() || !s.rep_survey.is_empty();
        assert_eq!(records.contains_key(&s.lsid), claimed, "session {}", s.lsid);
    }
    assert_eq!(out["stats"]["external_skipped"], unclaimed.len(), "{out}");
    assert_eq!(out["stats"]["imported"], records.len(), "{out}");
    let summary = out["summary"].as_str().unwrap();
    assert!(summary.contains("import_external_sessions is off"), "{out}");
}

#[tokio::test]
async fn a_refused_survey_report_does_not_block_the_import_and_is_asked_for_again() {
    let env = setup(60, "").await;
    let (recent, _) = ended_within(&env.bt, 86_400);
    env.bt.refuse_surveys(true);
    let out = env.pull().await;
    let records = env.records();
    for s in &recent {
        assert!(records.contains_key(&s.lsid), "session {} missing", s.lsid);
    }
    let summary = out["summary"].as_str().unwrap();
    assert!(
        summary.contains("survey association unavailable")
            && summary.contains("does not have permission"),
        "{out}"
    );
    let surveyed: Vec<_> = recent
        .iter()
        .filter(|s| s.external_key.is_none() && !s.rep_survey.is_empty())
        .collect();
    assert!(!surveyed.is_empty(), "the seed has surveyed sessions");
    for s in &surveyed {
        assert_eq!(records[&s.lsid]["u_task"], "", "no survey, no task yet");
    }

    // Still refused: the windows stay owed, nothing is written twice.
    let out = env.pull().await;
    assert_eq!(out["stats"]["imported"], 0, "{out}");
    assert!(out["report"]["surveys_owed"].as_u64().unwrap() > 0, "{out}");

    // The survey comes back: the owed windows are read again and the
    // surveyed sessions get their task.
    env.bt.refuse_surveys(false);
    let mut rounds = 0;
    loop {
        let out = env.pull().await;
        rounds += 1;
        if out["report"]["surveys_owed"] == 0 {
            break;
        }
        assert!(rounds < 20, "the owed surveys never came: {out}");
    }
    // (records() refuses two records for one session.)
    let records = env.records();
    for s in &surveyed {
        let inc = env.incident(&s.rep_survey[0].1);
        assert_eq!(records[&s.lsid]["u_task"], inc["sys_id"], "{}", s.lsid);
        assert_eq!(records[&s.lsid]["u_association"], "exit survey");
    }
}
