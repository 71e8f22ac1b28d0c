//! Reading BeyondTrust Reporting API answers, one session at a time.
//!
//! Both reporting namespaces are accepted (elements are matched by local
//! name). A `SupportSession` report is read as a stream: each `<session>` is
//! handed to the caller as soon as it is complete, so the parsed form holds
//! one session at a time (the answer itself is bounded by asking for bounded
//! time windows).

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// A representative in the session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rep {
    /// Rep id.
    pub id: String,
    /// Login name.
    pub username: String,
    /// Display name.
    pub display_name: String,
}

/// One event of the session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionEvent {
    /// Unix time.
    pub timestamp: i64,
    /// `Chat Message`, `Session Note Added`, …
    pub event_type: String,
    /// Who did it.
    pub performed_by: String,
    /// To whom.
    pub destination: String,
    /// Text.
    pub body: String,
    /// `data/value[@name,@value]`.
    pub data: Vec<(String, String)>,
}

/// A finished support session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// Session id.
    pub lsid: String,
    /// Start, unix time.
    pub start: i64,
    /// End, unix time.
    pub end: i64,
    /// `HH:MM:SS` as reported.
    pub duration: String,
    /// External key (the task it was started from).
    pub external_key: String,
    /// Primary rep id and name.
    pub primary_rep: Rep,
    /// Every rep.
    pub reps: Vec<Rep>,
    /// Customer fields: username, hostname, os, name, company, issue.
    pub customer: Vec<(String, String)>,
    /// Events in report order.
    pub events: Vec<SessionEvent>,
}

impl Session {
    /// The customer field `key` (`name`, `hostname`, …), empty when absent.
    pub fn customer(&self, key: &str) -> &str {
        self.customer
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// What a report held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `<error>No archives found…</error>`: nothing in the window.
    NoArchives,
    /// This many sessions were handed over.
    Sessions(usize),
}

/// Why a report could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportError {
    /// Not well-formed XML (byte position and reason).
    Malformed(String),
    /// The API answered an `<error>` other than "no archives".
    Api(String),
    /// The document is XML but not a session report.
    Unexpected(String),
}

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(m) => write!(f, "the report is not well-formed XML: {m}"),
            Self::Api(m) => write!(f, "the Reporting API answered an error: {m}"),
            Self::Unexpected(m) => write!(f, "the answer is not a session report: {m}"),
        }
    }
}

fn attr(e: &BytesStart<'_>, name: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

fn local(e: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(e.local_name().as_ref()).into_owned()
}

/// Text of elements, with entity and character references resolved.
fn push_ref(text: &mut String, r: &quick_xml::events::BytesRef<'_>) {
    if let Ok(Some(c)) = r.resolve_char_ref() {
        text.push(c);
        return;
    }
    let name = r.decode().unwrap_or_default();
    text.push_str(match name.as_ref() {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        _ => "",
    });
}

/// Streams the sessions of a `SupportSession` report to `each`.
pub fn sessions<E>(
    xml: &[u8],
    mut each: impl FnMut(Session) -> Result<(), E>,
) -> Result<Result<Outcome, ReportError>, E> {
    let mut reader = Reader::from_reader(xml);
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut current: Option<Session> = None;
    let mut event: Option<SessionEvent> = None;
    let mut rep: Option<Rep> = None;
    let mut root: Option<String> = None;
    let mut count = 0;
    let malformed = |r: &Reader<&[u8]>, e: quick_xml::Error| {
        ReportError::Malformed(format!("at byte {}: {e}", r.buffer_position()))
    };
    loop {
        let ev = match reader.read_event() {
            Ok(ev) => ev,
            Err(e) => return Ok(Err(malformed(&reader, e))),
        };
        // Whether the event closes an element: an end tag, or an
        // empty-element tag (`<event .../>`), which is its own end tag.
        let closes = match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let name = local(e);
                if root.is_none() {
                    if name != "session_list" && name != "error" {
                        return Ok(Err(ReportError::Unexpected(format!(
                            "root element <{name}>"
                        ))));
                    }
                    root = Some(name.clone());
                }
                match name.as_str() {
                    "session" if path.len() == 1 => {
                        current = Some(Session {
                            lsid: attr(e, b"lsid").unwrap_or_default(),
                            ..Session::default()
                        });
                    }
                    "start_time" | "end_time" if path.len() == 2 => {
                        if let Some(s) = current.as_mut() {
                            let ts = attr(e, b"timestamp")
                                .and_then(|t| t.parse().ok())
                                .unwrap_or(0);
                            if name == "start_time" {
                                s.start = ts
                            } else {
                                s.end = ts
                            }
                        }
                    }
                    "primary_rep" if path.len() == 2 => {
                        if let Some(s) = current.as_mut() {
                            s.primary_rep.id = attr(e, b"id").unwrap_or_default();
                        }
                    }
                    "representative" => {
                        rep = Some(Rep {
                            id: attr(e, b"id").unwrap_or_default(),
                            ..Rep::default()
                        });
                    }
                    "event" => {
                        event = Some(SessionEvent {
                            timestamp: attr(e, b"timestamp")
                                .and_then(|t| t.parse().ok())
                                .unwrap_or(0),
                            event_type: attr(e, b"event_type").unwrap_or_default(),
                            ..SessionEvent::default()
                        });
                    }
                    "value" => {
                        if let Some(ev) = event.as_mut() {
                            ev.data.push((
                                attr(e, b"name").unwrap_or_default(),
                                attr(e, b"value").unwrap_or_default(),
                            ));
                        }
                    }
                    _ => {}
                }
                text.clear();
                path.push(name);
                matches!(ev, Event::Empty(_))
            }
            Event::Text(t) => {
                text.push_str(&t.decode().unwrap_or_default());
                false
            }
            Event::CData(t) => {
                text.push_str(&String::from_utf8_lossy(&t));
                false
            }
            Event::GeneralRef(r) => {
                push_ref(&mut text, &r);
                false
            }
            Event::End(_) => true,
            Event::Eof => break,
            _ => false,
        };
        if !closes {
            continue;
        }
        let Some(name) = path.pop() else { continue };
        let value = std::mem::take(&mut text).trim().to_owned();
        let parent = path.last().map(String::as_str).unwrap_or("");
        if root.as_deref() == Some("error") && path.is_empty() {
            if value.to_ascii_lowercase().contains("no archives found") {
                return Ok(Ok(Outcome::NoArchives));
            }
            return Ok(Err(ReportError::Api(value)));
        }
        if let Some(ev) = event.as_mut() {
            match name.as_str() {
                "performed_by" => ev.performed_by = value,
                "destination" => ev.destination = value,
                "body" => ev.body = value,
                "event" => {
                    let done = event.take().unwrap_or_default();
                    if let Some(s) = current.as_mut() {
                        s.events.push(done);
                    }
                }
                _ => {}
            }
            continue;
        }
        if let Some(r) = rep.as_mut() {
            match name.as_str() {
                "username" => r.username = value,
                "display_name" => r.display_name = value,
                "representative" => {
                    let done = rep.take().unwrap_or_default();
                    if let Some(s) = current.as_mut() {
                        s.reps.push(done);
                    }
                }
                _ => {}
            }
            continue;
        }
        let Some(s) = current.as_mut() else { continue };
        match (parent, name.as_str()) {
            ("session", "duration") => s.duration = value,
            ("session", "external_key") => s.external_key = value,
            ("session", "primary_rep") => s.primary_rep.display_name = value,
            ("customer", f @ ("username" | "hostname" | "os"))
            | ("info", f @ ("name" | "company" | "issue")) => {
                s.customer.push((f.to_owned(), value));
            }
            ("session_list", "session") => {
                count += 1;
                let done = current.take().unwrap_or_default();
                each(done)?;
            }
            _ => {}
        }
    }
    if !path.is_empty() {
        return Ok(Err(ReportError::Malformed(format!(
            "the document ends inside <{}>",
            path.join("/")
        ))));
    }
    match root {
        None => Ok(Err(ReportError::Malformed("the answer is empty".into()))),
        Some(_) => Ok(Ok(Outcome::Sessions(count))),
    }
}

/// A leaf element of a small XML answer (the Command API's): the path of
/// element names from the root, each with its attributes, and its text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leaf {
    /// `(local name, attributes)` from the root down to this element.
    pub path: Vec<(String, Vec<(String, String)>)>,
    /// Its text, entities resolved and trimmed.
    pub text: String,
}

impl Leaf {
    /// This element's local name.
    pub fn name(&self) -> &str {
        self.path.last().map_or("", |(n, _)| n.as_str())
    }

    /// Attribute `attr` of the nearest enclosing (or this) element called
    /// `element`.
    pub fn attr_of(&self, element: &str, attr: &str) -> Option<&str> {
        self.path
            .iter()
            .rev()
            .find(|(n, _)| n == element)
            .and_then(|(_, attrs)| attrs.iter().find(|(k, _)| k == attr))
            .map(|(_, v)| v.as_str())
    }
}

/// Every leaf element of `xml`, in document order. For the Command API's
/// answers, which are small; reports go through [`sessions`].
pub fn leaves(xml: &[u8]) -> Result<Vec<Leaf>, ReportError> {
    let mut reader = Reader::from_reader(xml);
    let mut path: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut text = String::new();
    let mut has_child = Vec::<bool>::new();
    let mut out = Vec::new();
    let attrs = |e: &BytesStart<'_>| -> Vec<(String, String)> {
        e.attributes()
            .flatten()
            .filter_map(|a| {
                Some((
                    String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned(),
                    a.unescape_value().ok()?.into_owned(),
                ))
            })
            .collect()
    };
    loop {
        let ev = reader.read_event().map_err(|e| {
            ReportError::Malformed(format!("at byte {}: {e}", reader.buffer_position()))
        })?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if let Some(parent) = has_child.last_mut() {
                    *parent = true;
                }
                path.push((local(e), attrs(e)));
                text.clear();
                if matches!(ev, Event::Empty(_)) {
                    out.push(Leaf {
                        path: path.clone(),
                        text: String::new(),
                    });
                    path.pop();
                } else {
                    has_child.push(false);
                }
            }
            Event::Text(t) => text.push_str(&t.decode().unwrap_or_default()),
            Event::CData(t) => text.push_str(&String::from_utf8_lossy(&t)),
            Event::GeneralRef(r) => push_ref(&mut text, &r),
            Event::End(_) => {
                if has_child.pop() == Some(false) {
                    out.push(Leaf {
                        path: path.clone(),
                        text: std::mem::take(&mut text).trim().to_owned(),
                    });
                }
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !path.is_empty() {
        return Err(ReportError::Malformed(
            "the document ends inside an element".into(),
        ));
    }
    if out.is_empty() {
        return Err(ReportError::Malformed("the answer is empty".into()));
    }
    Ok(out)
}

/// Rep exit survey answers: `(lsid, question name, answer)`.
pub fn survey_answers(xml: &[u8]) -> Result<Vec<(String, String, String)>, ReportError> {
    let mut reader = Reader::from_reader(xml);
    let mut out = Vec::new();
    let (mut lsid, mut question, mut text) = (String::new(), String::new(), String::new());
    let mut root: Option<String> = None;
    let mut depth = 0usize;
    loop {
        match reader.read_event() {
            Err(e) => {
                return Err(ReportError::Malformed(format!(
                    "at byte {}: {e}",
                    reader.buffer_position()
                )));
            }
            Ok(Event::Start(e)) => {
                let name = local(&e);
                if root.is_none() {
                    if name != "exit_survey_list" && name != "error" {
                        return Err(ReportError::Unexpected(format!("root element <{name}>")));
                    }
                    root = Some(name.clone());
                }
                if name == "exit_survey" {
                    lsid = attr(&e, b"lsid").unwrap_or_default();
                }
                depth += 1;
                text.clear();
            }
            // An empty root (`<exit_survey_list/>`) holds no surveys.
            Ok(Event::Empty(e)) if root.is_none() => {
                let name = local(&e);
                if name != "exit_survey_list" {
                    return Err(ReportError::Unexpected(format!("root element <{name}>")));
                }
                root = Some(name);
            }
            Ok(Event::Text(t)) => text.push_str(&t.decode().unwrap_or_default()),
            Ok(Event::CData(t)) => text.push_str(&String::from_utf8_lossy(&t)),
            Ok(Event::GeneralRef(r)) => push_ref(&mut text, &r),
            Ok(Event::End(e)) => {
                depth = depth.saturating_sub(1);
                let value = std::mem::take(&mut text).trim().to_owned();
                match e.local_name().as_ref() {
                    b"name" => question = value,
                    b"answer" => out.push((lsid.clone(), question.clone(), value)),
                    b"error" if depth == 0 => {
                        if value.to_ascii_lowercase().contains("no archives found") {
                            return Ok(Vec::new());
                        }
                        return Err(ReportError::Api(value));
                    }
                    _ => {}
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
        }
    }
    if depth != 0 {
        return Err(ReportError::Malformed(
            "the document ends inside an element".into(),
        ));
    }
    // Nothing, or no element: not "no surveys" (that is an `<error>`).
    if root.is_none() {
        return Err(ReportError::Malformed("the answer is empty".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS_OLD: &str = "http://www.bomgar.com/namespaces/API/reporting";
    const NS_NEW: &str = "http://www.beyondtrust.com/sra/namespaces/API/reporting";

    fn report(ns: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<session_list xmlns="{ns}"><session lsid="abc123"><session_type>support</session_type>
<start_time timestamp="1700000000">2023-11-14T22:13:20+00:00</start_time><end_time timestamp="1700000600">x</end_time>
<duration>00:10:00</duration><external_key>INC0010001</external_key><primary_rep id="3">Jane Rep</primary_rep>
<customer_list><customer gsnumber="2"><username>ada</username><hostname>LT-1</hostname><os>Windows 11</os>
<info><name>Ada &amp; Co</name><company>Acme</company><issue>VPN</issue></info></customer></customer_list>
<rep_list><representative id="3"><username>jrep</username><display_name>Jane Rep</display_name></representative></rep_list>
<session_details><event timestamp="1700000100" event_type="Chat Message"><performed_by type="representative">Jane Rep</performed_by>
<destination type="customer">Ada</destination><body>Hello &#233;t&lt;e&gt;</body></event>
<event timestamp="1700000200" event_type="File Transfer"><performed_by>Jane Rep</performed_by><data><value name="Filename" value="a.zip"/></data></event>
</session_details></session><session lsid="def456"><end_time timestamp="1700000700"/></session></session_list>"#
        )
    }

    #[test]
    fn command_answers_read_as_leaves_with_their_ancestors() {
        let xml = br#"<?xml version="1.0"?><support_teams xmlns="http://www.bomgar.com/namespaces/API/command">
<support_team id="1"><name>Service &amp; Desk</name><issues><issue id="11"><code_name>printer</code_name>
<description>Printers</description></issue></issues></support_team><empty flag="y"/></support_teams>"#;
        let l = leaves(xml).unwrap();
        let names: Vec<&str> = l.iter().map(Leaf::name).collect();
        assert_eq!(names, ["name", "code_name", "description", "empty"]);
        assert_eq!(l[0].text, "Service & Desk");
        assert_eq!(l[1].attr_of("issue", "id"), Some("11"));
        assert_eq!(l[1].attr_of("support_team", "id"), Some("1"));
        assert_eq!(l[3].attr_of("empty", "flag"), Some("y"));
        assert!(matches!(
            leaves(b"<a><b>x</b>"),
            Err(ReportError::Malformed(_))
        ));
        assert!(matches!(leaves(b""), Err(ReportError::Malformed(_))));
    }

    #[test]
    fn both_namespaces_stream_sessions() {
        for ns in [NS_OLD, NS_NEW] {
            let mut got = Vec::new();
            let out = sessions::<()>(report(ns).as_bytes(), |s| {
                got.push(s);
                Ok(())
            })
            .unwrap()
            .unwrap();
            assert_eq!(out, Outcome::Sessions(2));
            let s = &got[0];
            assert_eq!(
                (s.lsid.as_str(), s.start, s.end),
                ("abc123", 1_700_000_000, 1_700_000_600)
            );
            assert_eq!(s.external_key, "INC0010001");
            assert_eq!(
                s.primary_rep,
                Rep {
                    id: "3".into(),
                    username: String::new(),
                    display_name: "Jane Rep".into()
                }
            );
            assert_eq!(s.reps[0].username, "jrep");
            assert!(s.customer.contains(&("name".into(), "Ada & Co".into())));
            assert_eq!(s.events.len(), 2);
            assert_eq!(s.events[0].body, "Hello ét<e>");
            assert_eq!(s.events[0].destination, "Ada");
            assert_eq!(
                s.events[1].data,
                [("Filename".to_owned(), "a.zip".to_owned())]
            );
            assert_eq!(got[1].end, 1_700_000_700);
        }
    }

    #[test]
    fn no_archives_errors_and_malformed_xml() {
        let none = format!(
            r#"<?xml version="1.0"?><error xmlns="{NS_OLD}">No archives found for the specified time range.</error>"#
        );
        assert_eq!(
            sessions::<()>(none.as_bytes(), |_| Ok(())).unwrap(),
            Ok(Outcome::NoArchives)
        );
        let err = r#"<error>Invalid start_time.</error>"#;
        assert_eq!(
            sessions::<()>(err.as_bytes(), |_| Ok(())).unwrap(),
            Err(ReportError::Api("Invalid start_time.".into()))
        );
        let cut = &report(NS_OLD)[..400];
        let mut n = 0;
        let r = sessions::<()>(cut.as_bytes(), |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert!(matches!(r, Err(ReportError::Malformed(_))), "{r:?}");
        assert_eq!(n, 0);
        assert!(matches!(
            sessions::<()>(b"<html>oops</html>", |_| Ok(())).unwrap(),
            Err(ReportError::Unexpected(_))
        ));
        assert!(matches!(
            sessions::<()>(b"", |_| Ok(())).unwrap(),
            Err(ReportError::Malformed(_))
        ));
        // The caller can stop the stream.
        let stopped = sessions(report(NS_NEW).as_bytes(), |_| Err("stop"));
        assert_eq!(stopped, Err("stop"));
    }

    #[test]
    fn survey_answers_are_read_per_session() {
        let xml = format!(
            r#"<exit_survey_list xmlns="{NS_NEW}"><exit_survey lsid="abc"><question_list><question id="1"><name>task_number</name><answer_list><answer>INC0010042</answer></answer_list></question></question_list></exit_survey></exit_survey_list>"#
        );
        assert_eq!(
            survey_answers(xml.as_bytes()).unwrap(),
            [(
                "abc".to_owned(),
                "task_number".to_owned(),
                "INC0010042".to_owned()
            )]
        );
        assert!(
            survey_answers(b"<error>No archives found</error>")
                .unwrap()
                .is_empty()
        );
    }
}
