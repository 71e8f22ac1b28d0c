//! The scheduler: fires due job schedules into the queue. A paused
//! instance's schedule stays due and fires once on resume.

use std::sync::Arc;
use std::time::Duration;

use switchyard_store::Fired;

use crate::clock::now_ms;
use crate::state::Live;

/// How often due schedules are looked for.
const TICK: Duration = Duration::from_millis(500);

/// Fires due schedules of unpaused instances until `stop` is set.
pub async fn scheduler(live: Arc<Live>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let st = live.current();
        let db = st.db();
        match db.due_schedules(now_ms()).await {
            Ok(due) => {
                for s in due.iter().filter(|s| !st.is_paused(&s.tenant, &s.instance)) {
                    match db.fire_schedule(s, 3, now_ms()).await {
                        Ok(Fired::Queued(_)) => st.shared.wake_worker(),
                        Ok(Fired::StillPending(id)) => tracing::info!(
                            tenant = %s.tenant, instance = %s.instance, job = %s.job, pending = id,
                            "a scheduled run is skipped: the previous one has not finished"
                        ),
                        Ok(Fired::AlreadyFired) => {}
                        Err(e) => tracing::error!(error = %e, job = %s.job, "firing a schedule"),
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "reading schedules"),
        }
        st.shared.metrics.scheduler_pass();
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => return,
        }
    }
}
