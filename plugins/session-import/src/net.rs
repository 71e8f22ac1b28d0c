//! Sending with back-off, and noticing when a run's request budget is spent.
//!
//! Both upstreams rate-limit (429) and have bad moments (5xx). A request is
//! retried a few times in the invocation, waiting as `Retry-After` says (up
//! to a cap, so one slow upstream cannot eat the invocation's deadline);
//! after that the failure goes back to the host with the wait, and the
//! host's queue retries the whole delivery or run later.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use switchyard_sdk::http::{self, Request, Response};
use switchyard_sdk::{Error, Result};

/// Attempts per request (the first included).
const ATTEMPTS: u32 = 3;
/// Longest wait between attempts, whatever `Retry-After` says.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// Set once the host refused a request because the invocation's request
/// budget is used up: the caller stops cleanly and the next run continues.
static BUDGET_SPENT: AtomicBool = AtomicBool::new(false);

/// Whether this invocation has used up its request budget.
pub fn budget_spent() -> bool {
    BUDGET_SPENT.load(Ordering::Relaxed)
}

/// Clears the budget flag at the start of an invocation (a component
/// instance serves one invocation, but tests call in-process).
pub fn reset_budget() {
    BUDGET_SPENT.store(false, Ordering::Relaxed);
}

/// Why a request got no usable answer.
#[derive(Debug)]
pub enum Failure {
    /// The answer was larger than the host's response limit (the limit).
    TooLarge(u64),
    /// Anything else, already worded for the user.
    Error(Error),
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::TooLarge(n) => {
                Error::upstream(format!("the answer was larger than the {n}-byte limit"))
            }
            Failure::Error(e) => e,
        }
    }
}

fn retryable(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

fn wait(attempt: u32, retry_after: Option<u32>) -> Duration {
    let backoff = Duration::from_millis(250 << attempt);
    retry_after
        .map(|s| Duration::from_secs(u64::from(s)))
        .unwrap_or(backoff)
        .min(MAX_WAIT)
}

/// Sends `req`, retrying 429, 5xx, timeouts and connection failures. The
/// last answer is returned whatever its status; `system` names the upstream
/// in errors.
pub fn send(req: &Request, system: &str) -> Result<Response, Failure> {
    send_with(req, system, true)
}

/// Sends a request that must not take effect twice (an insert). Only a 429
/// is retried: the upstream refused it before doing anything. A timeout, a
/// dropped connection or a 5xx may come after the write, so it goes back
/// to the caller, which checks what exists before trying again.
pub fn send_once(req: &Request, system: &str) -> Result<Response, Failure> {
    send_with(req, system, false)
}

fn send_with(req: &Request, system: &str, repeatable: bool) -> Result<Response, Failure> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last = attempt >= ATTEMPTS;
        match req.send() {
            Ok(r) if !last && (r.status == 429 || repeatable && retryable(r.status)) => {
                std::thread::sleep(wait(attempt, r.retry_after_secs()));
            }
            Ok(r) => return Ok(r),
            Err(http::Error::TooLarge(n)) => return Err(Failure::TooLarge(n)),
            Err(http::Error::LimitExceeded(m)) => {
                BUDGET_SPENT.store(true, Ordering::Relaxed);
                return Err(Failure::Error(Error::internal(format!(
                    "{system}: this run's request budget is used up ({m})"
                ))));
            }
            Err(http::Error::Timeout | http::Error::Connection(_)) if repeatable && !last => {
                std::thread::sleep(wait(attempt, None));
            }
            Err(e) => {
                let e: Error = e.into();
                return Err(Failure::Error(match e {
                    Error::Upstream {
                        status,
                        message,
                        retry_after_secs,
                    } => Error::Upstream {
                        status,
                        message: format!("{system}: {message}"),
                        retry_after_secs,
                    },
                    other => other,
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_follow_retry_after_up_to_the_cap() {
        assert_eq!(wait(1, Some(2)), Duration::from_secs(2));
        assert_eq!(wait(1, Some(600)), MAX_WAIT);
        assert_eq!(wait(1, None), Duration::from_millis(500));
        assert_eq!(wait(2, None), Duration::from_millis(1000));
        assert!(retryable(429) && retryable(503) && !retryable(404) && !retryable(200));
    }
}
