//! Writing down what happened: every invocation is counted in the metrics
//! and the instance's run statistics, and its audit entries (the call, and
//! each egress request it made) are appended. Shared by the action API, the
//! webhook handler and the queue worker, so all three record alike.

use switchyard_runtime::Report;
use switchyard_store::AuditEntry;

use crate::clock::now_ms;
use crate::state::Shared;

/// Whom audit entries are about: tenant, instance, actor and request.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Tenant.
    pub tenant: &'a str,
    /// Instance, when the entry is about one.
    pub instance: Option<&'a str>,
    /// Who acted (actor id, source address); empty for the daemon itself.
    pub actor: &'a str,
    /// Request id.
    pub request_id: &'a str,
}

impl Subject<'_> {
    /// An audit entry about this subject; `seq` and `time` are set by the
    /// store.
    pub fn entry(
        &self,
        kind: &str,
        what: impl Into<String>,
        outcome: impl Into<String>,
        duration_ms: i64,
    ) -> AuditEntry {
        AuditEntry {
            seq: 0,
            time: 0,
            tenant: self.tenant.to_owned(),
            instance: self.instance.map(str::to_owned),
            actor: (!self.actor.is_empty()).then(|| self.actor.to_owned()),
            kind: kind.to_owned(),
            what: what.into(),
            outcome: outcome.into(),
            duration_ms,
            request_id: self.request_id.to_owned(),
        }
    }
}

/// Audit entries for what an invocation did besides its result: the
/// storage migration step it waited for, if one ran, and the egress
/// requests (one per itemised request, and one that counts the rest by
/// outcome).
pub fn report_audit(tenant: &str, instance: &str, actor: &str, report: &Report) -> Vec<AuditEntry> {
    let who = Subject {
        tenant,
        instance: Some(instance),
        actor,
        request_id: &report.request_id,
    };
    let migrated = report.migrated.iter().map(|m| {
        let from = m.from.as_deref().unwrap_or("an unrecorded version");
        let (said, outcome) = match &m.error {
            None => (&m.summary, "ok"),
            Some(e) => (e, "failed"),
        };
        who.entry(
            "migration",
            format!("storage from {from} to {}: {said}", m.to),
            outcome,
            m.duration_ms as i64,
        )
    });
    let mut out: Vec<AuditEntry> = migrated
        .chain(report.egress.iter().map(|e| {
            who.entry(
                "egress",
                format!("{} {}{}", e.method, e.destination, e.path),
                e.status
                    .map_or_else(|| e.outcome.clone(), |s| s.to_string()),
                e.duration_ms as i64,
            )
        }))
        .collect();
    if !report.egress_omitted.is_empty() {
        let total: u64 = report.egress_omitted.values().sum();
        let by_outcome: Vec<String> = report
            .egress_omitted
            .iter()
            .map(|(o, n)| format!("{o}: {n}"))
            .collect();
        out.push(who.entry(
            "egress",
            format!("{total} further requests (not itemised)"),
            by_outcome.join(", "),
            0,
        ));
    }
    out
}

/// Appends to the audit log; a failure is logged, not shown to the caller
/// (what is being recorded already happened).
pub async fn append_audit(shared: &Shared, entries: Vec<AuditEntry>, request_id: &str) {
    if let Err(e) = shared.db.append_audit(entries).await {
        tracing::error!(error = %e, request_id, "writing the audit log");
    }
}

/// One finished invocation, as the three entry points describe it.
pub struct Outcome<'a> {
    /// Tenant.
    pub tenant: &'a str,
    /// Instance.
    pub instance: &'a str,
    /// Plugin id.
    pub plugin: &'a str,
    /// `action`, `webhook` or `job`.
    pub kind: &'a str,
    /// Action, route or job name.
    pub name: &'a str,
    /// `ok` or an error code.
    pub outcome: &'a str,
    /// The failure's message, if it failed.
    pub error: Option<&'a str>,
    /// Who caused it (actor id, source address), for egress entries.
    pub actor: &'a str,
}

/// Counts one invocation in the metrics and the run statistics (shown by
/// the status endpoint), and appends `entries` plus its egress entries to
/// the audit log. Failures to store are logged: the invocation happened.
pub async fn record(
    shared: &Shared,
    o: Outcome<'_>,
    report: &Report,
    mut entries: Vec<AuditEntry>,
) {
    shared
        .metrics
        .record(o.tenant, o.instance, o.plugin, o.kind, o.outcome, report);
    entries.extend(report_audit(o.tenant, o.instance, o.actor, report));
    // Both at once, so that they share the writer's next commit: the
    // caller waits for one commit, not two in a row.
    let run = async {
        if let Err(e) = shared
            .db
            .record_run(
                o.tenant,
                o.instance,
                o.kind,
                o.name,
                o.outcome,
                o.error,
                now_ms(),
            )
            .await
        {
            tracing::error!(error = %e, "recording run statistics");
        }
    };
    tokio::join!(run, append_audit(shared, entries, &report.request_id));
}
