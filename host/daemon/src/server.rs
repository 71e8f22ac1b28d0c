//! `switchyard serve`: binds the listener and runs the API, the queue
//! worker and the scheduler together until a shutdown signal; SIGHUP
//! reloads the configuration.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::clock::now_ms;
use crate::state::Live;

/// Serves until Ctrl-C or SIGTERM; in-flight requests finish first.
pub async fn serve(live: Arc<Live>, listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    // Tests and scripts read this line to find an ephemeral port.
    println!("switchyard listening on http://{}", listener.local_addr()?);
    use std::io::Write;
    std::io::stdout().flush()?;
    #[cfg(unix)]
    {
        // SIGHUP reloads the configuration; a bad one is refused and the
        // running configuration stays.
        let live = live.clone();
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while hup.recv().await.is_some() {
                match live.reload().await {
                    Ok(summary) => eprintln!("configuration reloaded: {summary}"),
                    Err(e) => eprintln!(
                        "configuration reload refused; the running configuration stays:\n{e}"
                    ),
                }
            }
        });
    }
    serve_on(live, listener, shutdown_signal()).await?;
    eprintln!("switchyard stopped");
    Ok(())
}

/// Serves on `listener` with the worker and scheduler until `shutdown`
/// completes; then requests drain, running jobs finish and queued ones stay.
pub async fn serve_on(
    live: Arc<Live>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = live.current();
    // The embedded store belongs to this process alone: jobs a previous,
    // crashed process left running are re-queued now rather than after
    // their lease.
    let reclaimed = state.db().reclaim_running_jobs(now_ms()).await?;
    if reclaimed > 0 {
        eprintln!("re-queued {reclaimed} job(s) left running by a previous process");
    }
    state
        .db()
        .sync_schedules(state.wanted_schedules(), now_ms())
        .await?;
    drop(state);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(crate::worker::worker(live.clone(), stop_rx.clone()));
    let scheduler = tokio::spawn(crate::scheduler::scheduler(live.clone(), stop_rx));
    axum::serve(
        listener,
        crate::api::router(live).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    let _ = stop_tx.send(true);
    let _ = tokio::join!(worker, scheduler);
    Ok(())
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
