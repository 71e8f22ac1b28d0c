//! `switchyard serve`: binds the listener and runs the API, the queue
//! worker, the scheduler and the janitor together until a shutdown signal;
//! SIGHUP reloads the configuration.
//!
//! Every connection is bounded: request headers must arrive within
//! [`HEADER_READ_TIMEOUT`] (a client that sends half its headers is cut
//! off), and on shutdown in-flight requests and running jobs get the
//! configured `drain_timeout_secs`, after which the daemon exits anyway;
//! unfinished jobs stay queued and run after the next start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tower_service::Service;

use crate::clock::now_ms;
use crate::state::Live;

/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Serves on `listener` with the worker, scheduler and janitor until
/// `shutdown` completes; then requests and running jobs drain (for at most
/// the drain timeout) and queued jobs stay.
pub async fn serve_on(
    live: Arc<Live>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = live.current();
    // The embedded store belongs to this process alone (the data directory
    // is locked): jobs a previous, crashed process left running are
    // re-queued now rather than after their lease.
    let reclaimed = state.db().reclaim_running_jobs(now_ms()).await?;
    if reclaimed > 0 {
        eprintln!("re-queued {reclaimed} job(s) left running by a previous process");
    }
    state
        .db()
        .sync_schedules(state.wanted_schedules(), now_ms())
        .await?;
    drop(state);
    let _following = live.follow_other_daemons();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(crate::worker::worker(live.clone(), stop_rx.clone()));
    let scheduler = tokio::spawn(crate::scheduler::scheduler(live.clone(), stop_rx.clone()));
    let janitor = tokio::spawn(crate::janitor::janitor(live.clone(), stop_rx));

    let router =
        crate::api::router(live.clone()).merge(crate::console::router().with_state(live.clone()));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause, go on.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                // A Router is ready at once, and cheap to clone per request.
                router.clone().call(req.map(axum::body::Body::new))
            });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(graceful.watch(conn));
    }
    drop(listener);
    // Requests and jobs drain together, each for at most the timeout.
    live.shared().stop();
    let _ = stop_tx.send(true);
    let drain = live.current().drain_timeout;
    let requests = async {
        if tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout_s = drain.as_secs(),
                "shutdown: connections still open after the drain timeout are closed"
            );
        }
    };
    let _ = tokio::join!(requests, worker, scheduler, janitor);
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
