//! Where guest code runs, so that a tenant whose guests compute for long
//! cannot slow the others down.
//!
//! A call starts on the caller's task (the HTTP handler's, the queue
//! worker's): most calls are short, and handing them to another thread
//! would cost more than they do. A guest still computing after a few epoch
//! ticks is a long runner: its whole call (Store, fiber and all) moves to
//! the long-runner pool and finishes there. The pool has fewer threads than
//! the machine has cores, so however many guests compute, a core stays for
//! short calls, the HTTP front end and host I/O; and its threads run at the
//! lowest scheduling priority (`nice` 19 on Linux), so that when every core
//! is busy the operating system runs everything else first. A tenant one of
//! whose guests ran long recently starts its calls on the pool.
//!
//! Host I/O of a call on the pool (outbound HTTP, OAuth2 token fetches,
//! storage) is handed back to the caller's runtime with [`on_host`]:
//! connections and database handles that every tenant shares must not be
//! driven or held by a low-priority thread (and a thread that a pool thread
//! starts, such as a blocking-pool thread, inherits its priority).
//!
//! ```text
//! let pool = LongRunners::start(1)?;
//! let moved = Arc::new(AtomicBool::new(false));
//! // The epoch callback sets `moved` once the guest runs long.
//! let out = run(pool.handle().clone(), false, moved, async { 42 }).await;
//! assert_eq!(out.ok(), Some(42));
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// The call could not finish: the runtime it was handed to has shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the host is shutting down")
    }
}

thread_local! {
    /// Whether this thread is one of the pool's workers (and lowered).
    static ON_POOL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

tokio::task_local! {
    /// The runtime of the call's caller, for [`on_host`]: it travels with
    /// the call to the pool.
    static HOST: Handle;
}

/// The long-runner pool: a tokio runtime whose worker threads lower their
/// priority.
pub(crate) struct LongRunners {
    rt: Option<tokio::runtime::Runtime>,
}

impl LongRunners {
    /// Starts `threads` worker threads.
    pub(crate) fn start(threads: usize) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("switchyard-long")
            .enable_all()
            .build()?;
        Ok(Self { rt: Some(rt) })
    }

    /// Where long runners are spawned (with [`run`]).
    pub(crate) fn handle(&self) -> &Handle {
        self.rt.as_ref().expect("running until dropped").handle()
    }
}

impl Drop for LongRunners {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside an async context;
        // calls still on the pool are cancelled (their Stores dropped).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A call on the pool: the worker thread that polls it is lowered first.
struct OnPool<T>(Call<T>);

impl<T> Future for OnPool<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        ON_POOL.with(|on| {
            if !on.get() {
                lower_priority();
                on.set(true);
            }
        });
        self.0.as_mut().poll(cx)
    }
}

/// Lowers the calling thread's scheduling priority as far as it goes. On
/// Linux the nice value belongs to the thread; elsewhere `setpriority`
/// would lower the whole process, so there the pool is only smaller.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority has no memory effects; on Linux, `who` 0
        // with PRIO_PROCESS is the calling thread.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
        if rc != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "could not lower the priority of a long-runner thread"
            );
        }
    }
}

/// A spawned task that is aborted when the awaiting side goes away (a
/// dropped call drops its Store, wherever it runs).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, Stopped>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| match r {
            Ok(v) => Ok(v),
            // A panic in the call is a host bug: it stays one.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Stopped),
        })
    }
}

type Call<T> = Pin<Box<dyn Future<Output = T> + Send>>;

enum Stage<T> {
    Here(Call<T>),
    There(AbortOnDrop<T>),
}

fn spawn<T: Send + 'static>(pool: &Handle, call: Call<T>) -> AbortOnDrop<T> {
    AbortOnDrop(pool.spawn(OnPool(call)))
}

/// Runs `call` on the caller's task until `long` is set (by the epoch
/// callback, when the guest turns out to be a long runner), then on
/// `pool`; or on `pool` from the start.
pub(crate) async fn run<T: Send + 'static>(
    pool: Handle,
    start_on_pool: bool,
    long: Arc<AtomicBool>,
    call: impl Future<Output = T> + Send + 'static,
) -> Result<T, Stopped> {
    let call: Call<T> = match Handle::try_current() {
        Ok(host) => Box::pin(HOST.scope(host, call)),
        Err(_) => Box::pin(call),
    };
    let mut stage = Some(if start_on_pool {
        Stage::There(spawn(&pool, call))
    } else {
        Stage::Here(call)
    });
    std::future::poll_fn(move |cx| {
        loop {
            match stage.as_mut().expect("polled after completion") {
                Stage::Here(call) => {
                    if let Poll::Ready(v) = call.as_mut().poll(cx) {
                        return Poll::Ready(Ok(v));
                    }
                    if !long.load(Ordering::Acquire) {
                        return Poll::Pending;
                    }
                    // Between two polls the call is just a value: it moves
                    // to the pool as it is, mid-guest.
                    let Some(Stage::Here(call)) = stage.take() else {
                        unreachable!()
                    };
                    stage = Some(Stage::There(spawn(&pool, call)));
                }
                Stage::There(task) => return Pin::new(task).poll(cx),
            }
        }
    })
    .await
}

/// Runs host I/O on the caller's runtime when called from the long-runner
/// pool (inline anywhere else).
pub(crate) async fn on_host<F>(io: F) -> Result<F::Output, Stopped>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let host = if ON_POOL.with(std::cell::Cell::get) {
        HOST.try_with(Handle::clone).ok()
    } else {
        None
    };
    match host {
        Some(host) => AbortOnDrop(host.spawn(io)).await,
        None => Ok(io.await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn a_call_moves_to_the_pool_once_it_runs_long_and_its_io_comes_back() {
        let pool = LongRunners::start(1).unwrap();
        let long = Arc::new(AtomicBool::new(false));
        let flag = long.clone();
        let out = run(pool.handle().clone(), false, long, async move {
            let before = thread_name();
            flag.store(true, Ordering::Release);
            tokio::task::yield_now().await;
            let after = thread_name();
            let io = on_host(async { thread_name() }).await.unwrap();
            (before, after, io)
        })
        .await
        .unwrap();
        assert_ne!(out.0, "switchyard-long", "starts on the caller's task");
        assert_eq!(out.1, "switchyard-long", "moved after it ran long");
        assert_ne!(out.2, "switchyard-long", "its I/O runs on the host");
    }

    #[tokio::test]
    async fn a_short_call_stays_and_a_known_long_runner_starts_on_the_pool() {
        let pool = LongRunners::start(1).unwrap();
        let stays = run(pool.handle().clone(), false, Arc::default(), async {
            tokio::task::yield_now().await;
            thread_name()
        });
        assert_ne!(stays.await.unwrap(), "switchyard-long");
        let starts = run(pool.handle().clone(), true, Arc::default(), async {
            thread_name()
        });
        assert_eq!(starts.await.unwrap(), "switchyard-long");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn pool_workers_run_at_the_lowest_priority_and_host_io_does_not() {
        let pool = LongRunners::start(1).unwrap();
        // SAFETY: reads the calling thread's nice value.
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let (worker, io) = run(pool.handle().clone(), true, Arc::default(), async move {
            (nice(), on_host(async move { nice() }).await.unwrap())
        })
        .await
        .unwrap();
        assert_eq!(worker, 19);
        assert_eq!(io, 0, "host I/O keeps its priority");
        assert_eq!(nice(), 0, "the caller keeps its priority");
    }

    #[tokio::test]
    async fn dropping_the_caller_cancels_the_call_on_the_pool() {
        let pool = LongRunners::start(1).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let call = run(pool.handle().clone(), true, Arc::default(), async move {
            let _held = tx;
            let _ = started_tx.send(());
            std::future::pending::<()>().await
        });
        let waiting = tokio::spawn(call);
        started.await.unwrap();
        waiting.abort();
        // The call's state (and the sender it holds) is dropped.
        assert!(rx.await.is_err());
    }
}
