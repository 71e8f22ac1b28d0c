//! Retention: finished jobs, seen event ids and audit entries are deleted
//! once older than the configured ages (`[retention]`), in small batches,
//! at start and then every [`PERIOD`].

use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::config::RetentionConfig;
use crate::state::{Db, Live};

/// How often old rows are looked for.
pub const PERIOD: Duration = Duration::from_secs(3600);

const DAY_MS: i64 = 86_400_000;

/// Rows deleted by one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Finished jobs.
    pub jobs: u64,
    /// Seen event ids.
    pub events: u64,
    /// Audit entries.
    pub audit: u64,
}

/// Deletes what `retention` no longer keeps at `now_ms`, batch by batch,
/// yielding between batches so that other writers get the lock.
pub async fn prune(db: &Db, retention: &RetentionConfig, now_ms: i64) -> anyhow::Result<Pruned> {
    let age = |days: u32| now_ms - i64::from(days) * DAY_MS;
    let mut out = Pruned::default();
    loop {
        let n = db.prune_done_jobs(age(retention.done_jobs_days)).await?;
        out.jobs += n;
        if n == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    loop {
        let n = db
            .prune_seen_events(age(retention.seen_events_days))
            .await?;
        out.events += n;
        if n == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    loop {
        let n = db.prune_audit(age(retention.audit_days)).await?;
        out.audit += n;
        if n == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    Ok(out)
}

/// Prunes every [`PERIOD`] until `stop` is set.
pub async fn janitor(live: Arc<Live>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let st = live.current();
        match prune(st.db(), &st.retention, now_ms()).await {
            Ok(p) if p != Pruned::default() => tracing::info!(
                jobs = p.jobs,
                events = p.events,
                audit = p.audit,
                "deleted rows past their retention"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "pruning old rows"),
        }
        drop(st);
        tokio::select! {
            () = tokio::time::sleep(PERIOD) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_store::{NewJob, SqliteStore};

    /// Issue 13, item 10: with an injected clock, what is past its age goes
    /// and what is not stays.
    #[tokio::test]
    async fn retention_deletes_by_age() {
        let db: Db = Arc::new(SqliteStore::open_in_memory().unwrap());
        let day = DAY_MS;
        for at in [0, 6 * day] {
            let e = db
                .enqueue(
                    NewJob {
                        tenant: "t".into(),
                        instance: "i".into(),
                        kind: "job".into(),
                        name: "n".into(),
                        payload: vec![],
                        idempotency_key: None,
                        max_attempts: 1,
                    },
                    at,
                )
                .await
                .unwrap();
            let per = switchyard_store::TenantConcurrency::uniform(1);
            let skip = Default::default();
            let req = switchyard_store::LeaseRequest {
                owner: "w",
                lease_ms: 1000,
                limit: 1,
                per_tenant: &per,
                skip: &skip,
            };
            let j = db.lease(at, req).await.unwrap().remove(0);
            assert_eq!(j.id, e.id);
            db.complete_job(j.attempt("w"), at).await.unwrap();
        }
        let retention = RetentionConfig::default();
        // Eight days after the first: it is past 7 days, the second is not.
        let p = prune(&db, &retention, 8 * day).await.unwrap();
        assert_eq!(p.jobs, 1);
        assert_eq!(db.list_jobs("t", None, 10).await.unwrap().len(), 1);
        let p = prune(&db, &retention, 8 * day).await.unwrap();
        assert_eq!(p, Pruned::default());
    }
}
