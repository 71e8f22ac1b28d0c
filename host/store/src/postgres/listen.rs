//! Changes other daemons make, pushed with `LISTEN/NOTIFY`.
//!
//! Every daemon sharing the database keeps one extra connection (outside
//! the pool) that listens on the deployment's channel. New jobs send `jobs`
//! and a pause or resume sends `pauses`. Notifications are not
//! durable: while the connection is down they are lost, so each
//! (re)connection reports [`Change::Missed`] and the daemon re-reads what
//! it caches. The worker's polling stays as the fallback for jobs.

use std::time::Duration;

use tokio_postgres::{AsyncMessage, NoTls};

use super::{CONFIGS, JOBS, PAUSES, PgStore};
use crate::{Change, Watching};

const CLOSED: &str = "the server closed the connection";

/// The longest wait between two attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl PgStore {
    /// Starts the listener task: `on_change` is called for every change
    /// another process (or this one) announces, and with
    /// [`Change::Missed`] after each (re)connection.
    pub(super) fn listen(&self, on_change: Box<dyn Fn(Change) + Send + Sync>) -> Watching {
        let config = self.config.clone();
        let tls = self.tls.clone();
        let channel = self.channel.clone();
        let target = self.target.clone();
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                let mut listened = false;
                let e = session(&config, tls.as_ref(), &channel, &*on_change, &mut listened).await;
                if listened {
                    backoff = Duration::from_millis(500);
                }
                tracing::warn!(
                    server = %target,
                    error = %e,
                    retry_in_ms = backoff.as_millis() as u64,
                    "not listening for other daemons' changes; polling until reconnected"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
        Watching::new(task)
    }
}

/// One listening connection, until it fails (the result says why). Sets
/// `listened` once the `LISTEN` took effect.
async fn session(
    config: &tokio_postgres::Config,
    tls: Option<&tokio_postgres_rustls::MakeRustlsConnect>,
    channel: &str,
    on_change: &(dyn Fn(Change) + Send + Sync),
    listened: &mut bool,
) -> String {
    match tls {
        Some(tls) => match config.connect(tls.clone()).await {
            Ok((client, conn)) => listen_on(client, conn, channel, on_change, listened).await,
            Err(e) => super::pg_error(&e),
        },
        None => match config.connect(NoTls).await {
            Ok((client, conn)) => listen_on(client, conn, channel, on_change, listened).await,
            Err(e) => super::pg_error(&e),
        },
    }
}

/// [`session`] on an open connection, plain or encrypted.
async fn listen_on<S, T>(
    client: tokio_postgres::Client,
    mut conn: tokio_postgres::Connection<S, T>,
    channel: &str,
    on_change: &(dyn Fn(Change) + Send + Sync),
    listened: &mut bool,
) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let sql = format!("LISTEN \"{channel}\"");
    // The LISTEN is answered through the connection, which makes progress
    // only while it is polled.
    let mut listen = std::pin::pin!(client.batch_execute(&sql));
    loop {
        tokio::select! {
            r = &mut listen => match r {
                Ok(()) => break,
                Err(e) => return super::pg_error(&e),
            },
            m = std::future::poll_fn(|cx| conn.poll_message(cx)) => match m {
                Some(Err(e)) => return super::pg_error(&e),
                Some(Ok(_)) => {}
                None => return CLOSED.into(),
            },
        }
    }
    *listened = true;
    // Anything announced before now was not heard.
    on_change(Change::Missed);
    loop {
        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => match n.payload() {
                JOBS => on_change(Change::JobsQueued),
                PAUSES => on_change(Change::PausesChanged),
                CONFIGS => on_change(Change::ConfigsChanged),
                _ => {}
            },
            Some(Ok(_)) => {}
            Some(Err(e)) => return super::pg_error(&e),
            None => return CLOSED.into(),
        }
    }
}
