//! `session-import`: BeyondTrust Remote Support session reports into
//! ServiceNow (issue 6).
//!
//! In progress. What exists: [`report`], the streaming reader of the
//! Reporting API's XML (both namespaces, "no archives", malformed answers,
//! rep exit surveys), built so an import holds one session in memory at a
//! time. The plugin's entry points (scheduled pull, outbound-event webhook,
//! actions) come next; nothing bundles this crate until they do.

pub mod report;
