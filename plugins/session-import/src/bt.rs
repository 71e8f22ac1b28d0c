//! The BeyondTrust side: Reporting API (session reports and rep exit
//! surveys, by time window or lsid) and Command API (session keys, support
//! issues, API info). The host attaches the OAuth token of the `beyondtrust`
//! credential and caches it, so runs reuse one token instead of minting one
//! per call (the site keeps at most 30 live tokens per API account).

use std::collections::HashMap;

use switchyard_sdk::http::{self, Request, Response};
use switchyard_sdk::retry::Retry;
use switchyard_sdk::{Error, Result};

use crate::report::{self, Leaf};

/// Name of the credential slot.
pub const CREDENTIAL: &str = "beyondtrust";

/// The exit-survey question that names the task a session belongs to.
pub const TASK_QUESTION: &str = "task_number";

/// A generated session key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionKey {
    /// The 7-digit key.
    pub short_key: String,
    /// URL the customer opens.
    pub key_url: String,
    /// Expiry, Unix time (0 when the site did not say).
    pub expires: i64,
    /// Invitation mail subject.
    pub mail_subject: String,
    /// Invitation mail text.
    pub mail_body: String,
}

/// A support issue configured on the site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Issue id.
    pub id: String,
    /// Code name.
    pub code_name: String,
    /// Description.
    pub description: String,
    /// Name of the support team it belongs to.
    pub team: String,
}

/// The support site.
pub struct Site {
    base: String,
}

fn urlencode(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// A session key's expiry (Unix seconds): the `timestamp` attribute, or
/// the element's text as a number or an ISO 8601 date-time (sites differ).
fn expiry(l: &Leaf) -> Option<i64> {
    if let Some(ts) = l
        .attr_of("expires", "timestamp")
        .and_then(|v| v.trim().parse().ok())
    {
        return Some(ts);
    }
    let text = l.text.trim();
    text.parse().ok().or_else(|| {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|t| t.unix_timestamp())
    })
}

/// The text of the `<error>` document a failed call answered, if any.
fn error_text(r: &Response) -> String {
    report::leaves(&r.body)
        .ok()
        .and_then(|l| l.into_iter().find(|l| l.name() == "error"))
        .map(|l| l.text)
        .unwrap_or_else(|| r.text().chars().take(200).collect())
}

fn check(r: Response, what: &str) -> Result<Response> {
    if r.is_success() {
        return Ok(r);
    }
    let hint = match r.status {
        401 | 403 => " (check the API account of the `beyondtrust` credential and its permissions)",
        _ => "",
    };
    Err(Error::Upstream {
        status: Some(r.status),
        message: format!("BeyondTrust refused {what}: {}{hint}", error_text(&r)),
        retry_after_secs: r.retry_after_secs(),
    })
}

impl Site {
    /// The site at `base` (`https://support.example.com`).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Response, http::Error> {
        let url = format!("{}{path}?{}", self.base, urlencode(query));
        Retry::default().send(
            &Request::get(url)
                .header("accept", "text/xml")
                .credential(CREDENTIAL),
        )
    }

    fn report(&self, query: &[(&str, &str)], what: &str) -> Result<Option<Vec<u8>>> {
        match self.get("/api/reporting", query) {
            // Larger than the host's response limit: the caller asks for a
            // shorter window.
            Err(http::Error::TooLarge(_)) => Ok(None),
            Err(e) => Err(http::error_from("BeyondTrust", e)),
            Ok(r) => Ok(Some(check(r, what)?.body)),
        }
    }

    /// The `SupportSession` report of sessions ending in
    /// `[from, from + secs)`; None when the answer is too large for the
    /// host's limit (ask for a shorter window).
    pub fn sessions_in(&self, from: i64, secs: i64) -> Result<Option<Vec<u8>>> {
        let (from, secs) = (from.to_string(), secs.to_string());
        self.report(
            &[
                ("generate_report", "SupportSession"),
                ("start_time", &from),
                ("duration", &secs),
            ],
            "the session report",
        )
    }

    /// The `SupportSession` report of one session.
    pub fn session(&self, lsid: &str) -> Result<Vec<u8>> {
        self.report(
            &[("generate_report", "SupportSession"), ("lsid", lsid)],
            "the session report",
        )?
        .ok_or_else(|| Error::upstream(format!("the report of session {lsid} is too large")))
    }

    fn task_numbers(&self, query: &[(&str, &str)]) -> Result<HashMap<String, String>> {
        let body = self
            .report(query, "the rep exit survey report")?
            .ok_or_else(|| Error::upstream("the rep exit survey report is too large"))?;
        let answers = report::survey_answers(&body)
            .map_err(|e| Error::upstream(format!("BeyondTrust rep exit survey report: {e}")))?;
        Ok(answers
            .into_iter()
            .filter(|(_, q, a)| q == TASK_QUESTION && !a.is_empty())
            .map(|(lsid, _, a)| (lsid, a))
            .collect())
    }

    /// `task_number` answers of rep exit surveys of sessions ending in the
    /// window, by lsid.
    pub fn task_numbers_in(&self, from: i64, secs: i64) -> Result<HashMap<String, String>> {
        let (from, secs) = (from.to_string(), secs.to_string());
        self.task_numbers(&[
            ("generate_report", "SupportRepExitSurvey"),
            ("start_time", &from),
            ("duration", &secs),
        ])
    }

    /// The `task_number` answer of one session's rep exit survey.
    pub fn task_number(&self, lsid: &str) -> Result<Option<String>> {
        Ok(self
            .task_numbers(&[("generate_report", "SupportRepExitSurvey"), ("lsid", lsid)])?
            .remove(lsid))
    }

    fn command(&self, query: &[(&str, &str)], what: &str) -> Result<Vec<Leaf>> {
        let r = self
            .get("/api/command", query)
            .map_err(|e| http::error_from("BeyondTrust", e))?;
        let r = check(r, what)?;
        let leaves = report::leaves(&r.body)
            .map_err(|e| Error::upstream(format!("BeyondTrust answered {what} with {e}")))?;
        // The command API also refuses with `<error>…</error>` inside a 200.
        if let Some(err) = leaves
            .iter()
            .find(|l| l.path.len() == 1 && l.name() == "error")
        {
            return Err(Error::Upstream {
                status: Some(r.status),
                message: format!("BeyondTrust refused {what}: {}", err.text),
                retry_after_secs: None,
            });
        }
        Ok(leaves)
    }

    /// The site's API version (`get_api_info`).
    pub fn api_version(&self) -> Result<String> {
        let leaves = self.command(&[("action", "get_api_info")], "the API info request")?;
        leaves
            .into_iter()
            .find(|l| l.name() == "api_version")
            .map(|l| l.text)
            .ok_or_else(|| Error::upstream("BeyondTrust's API info has no api_version"))
    }

    /// Generates a support session key for `queue_id` carrying
    /// `external_key` (the task the session belongs to).
    pub fn generate_session_key(&self, external_key: &str, queue_id: &str) -> Result<SessionKey> {
        let leaves = self.command(
            &[
                ("action", "generate_session_key"),
                ("type", "support"),
                ("queue_id", queue_id),
                ("external_key", external_key),
            ],
            "the session key request",
        )?;
        let text = |name: &str| {
            leaves
                .iter()
                .find(|l| l.name() == name)
                .map(|l| l.text.clone())
                .unwrap_or_default()
        };
        let key = SessionKey {
            short_key: text("short_key"),
            key_url: text("key_url"),
            expires: leaves
                .iter()
                .find(|l| l.name() == "expires")
                .and_then(expiry)
                .unwrap_or(0),
            mail_subject: text("mail_subject"),
            mail_body: text("mail_body"),
        };
        if key.short_key.is_empty() || key.key_url.is_empty() {
            return Err(Error::upstream(
                "BeyondTrust's session key answer has no short_key or key_url",
            ));
        }
        Ok(key)
    }

    /// Support issues of every team (`get_support_teams`).
    pub fn support_issues(&self) -> Result<Vec<Issue>> {
        let leaves = self.command(
            &[("action", "get_support_teams")],
            "the support teams request",
        )?;
        let mut teams: HashMap<String, String> = HashMap::new();
        let mut issues: Vec<Issue> = Vec::new();
        for l in &leaves {
            let team_id = l.attr_of("support_team", "id").unwrap_or("").to_owned();
            let in_issue = l.path.iter().any(|(n, _)| n == "issue");
            match (l.name(), in_issue) {
                ("name", false) => {
                    teams.insert(team_id, l.text.clone());
                }
                (field @ ("code_name" | "description"), true) => {
                    let id = l.attr_of("issue", "id").unwrap_or("").to_owned();
                    let pos = match issues.iter().position(|i| i.id == id && i.team == team_id) {
                        Some(p) => p,
                        None => {
                            issues.push(Issue {
                                id,
                                code_name: String::new(),
                                description: String::new(),
                                team: team_id,
                            });
                            issues.len() - 1
                        }
                    };
                    if field == "code_name" {
                        issues[pos].code_name = l.text.clone();
                    } else {
                        issues[pos].description = l.text.clone();
                    }
                }
                _ => {}
            }
        }
        // `team` held the team id while reading; name it now.
        for i in &mut issues {
            if let Some(name) = teams.get(&i.team) {
                i.team = name.clone();
            }
        }
        issues.retain(|i| !i.id.is_empty());
        Ok(issues)
    }
}
