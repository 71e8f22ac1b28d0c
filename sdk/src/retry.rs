//! Retrying upstream calls: rate limits (429), bad moments (5xx, timeouts,
//! dropped connections), `Retry-After`, and the invocation's limits.
//!
//! A request is retried a few times within the invocation, waiting as
//! `Retry-After` says or, without it, with exponential backoff and jitter
//! (so that many instances that failed together do not return together).
//! When the upstream asks for a longer wait than [`Retry::max_wait`], the
//! waits would add up to more than [`Retry::total_wait`], the wait would
//! leave less than two seconds of the invocation's deadline, or its request
//! budget is spent (see [`crate::invocation`]), the last answer goes back
//! to the caller at once: the host's queue retries the
//! whole delivery or job later, honouring the `retry_after_secs` of the
//! error, which is cheaper than holding an instance (and its deadline)
//! asleep.
//!
//! A call that is not idempotent (a `POST` or `PATCH`, unless told
//! otherwise) is retried only when the upstream refused it before doing
//! anything (429): a timeout, a dropped connection or a 5xx may come after
//! the write took effect, so it goes back to the caller, which can check
//! what exists before trying again.
//!
//! When the host refuses a request because the invocation's request budget
//! is spent, nothing is retried and [`budget_spent`] turns true, so a job
//! can stop cleanly and continue in its next run.
//!
//! ```no_run
//! use switchyard_sdk::http::Request;
//! use switchyard_sdk::retry::Retry;
//!
//! # fn main() -> switchyard_sdk::Result<()> {
//! let req = Request::get("https://api.example.com/items").credential("api");
//! let items = Retry::default().send(&req)?.error_for_status()?.text();
//! # let _ = items;
//! # Ok(()) }
//! ```

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::http::{self, Method, Request, Response};
use crate::invocation;

/// Time a retried request needs after its wait: a wait that would leave
/// less of the deadline is not taken.
const LEFT_AFTER_WAIT: Duration = Duration::from_secs(2);

/// What is left of the invocation: time before its deadline, requests in
/// its budget.
#[derive(Debug, Clone, Copy)]
struct Left {
    time: Duration,
    requests: u32,
}

thread_local! {
    /// Set once the host refused a request for the invocation's request
    /// budget. (A component has one thread; per thread, unit tests running
    /// side by side do not see each other's.)
    static BUDGET_SPENT: Cell<bool> = const { Cell::new(false) };
}

/// Whether the host has refused a request of this invocation because its
/// request budget is used up. Each invocation runs in a fresh instance, so
/// this starts false in every one.
pub fn budget_spent() -> bool {
    BUDGET_SPENT.get()
}

/// How to retry a request. [`Retry::default`] decides by the request's
/// method whether it is idempotent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    attempts: u32,
    base: Duration,
    max_wait: Duration,
    total_wait: Duration,
    idempotent: Option<bool>,
}

impl Default for Retry {
    /// Three attempts; backoff from 250 ms; a `Retry-After` of up to 5 s is
    /// waited for; at most 10 s of waiting per request.
    fn default() -> Self {
        Self {
            attempts: 3,
            base: Duration::from_millis(250),
            max_wait: Duration::from_secs(5),
            total_wait: Duration::from_secs(10),
            idempotent: None,
        }
    }
}

/// What to do after an attempt.
#[derive(Debug, PartialEq)]
enum Next {
    Done,
    Wait(Duration),
}

impl Retry {
    /// Attempts per request, the first included (at least 1).
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = n.max(1);
        self
    }

    /// The first backoff; each further one doubles (before jitter).
    pub fn backoff(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// The longest single wait. An upstream that asks for more with
    /// `Retry-After` gets its answer returned instead, so that the host's
    /// queue waits rather than the instance.
    pub fn max_wait(mut self, d: Duration) -> Self {
        self.max_wait = d;
        self
    }

    /// The most waiting for one request, all attempts together. Keep it
    /// well inside the invocation's deadline (30 s by default).
    pub fn total_wait(mut self, d: Duration) -> Self {
        self.total_wait = d;
        self
    }

    /// Says whether sending the request twice has the same effect as once
    /// (e.g. a `PATCH` that sets fields, or a `POST` the upstream
    /// deduplicates). Without this, `GET`, `HEAD`, `PUT`, `DELETE` and
    /// `OPTIONS` are idempotent and `POST` and `PATCH` are not.
    pub fn idempotent(mut self, yes: bool) -> Self {
        self.idempotent = Some(yes);
        self
    }

    /// Sends `req`, retrying as described in the [module docs](self). The
    /// last answer is returned whatever its status.
    pub fn send(&self, req: &Request) -> Result<Response, http::Error> {
        let idempotent = self
            .idempotent
            .unwrap_or(!matches!(req.method(), Method::Post | Method::Patch));
        self.run(
            idempotent,
            || req.send(),
            std::thread::sleep,
            jitter,
            || Left {
                time: invocation::remaining(),
                requests: invocation::remaining_requests(),
            },
        )
    }

    /// The loop, with the sending, sleeping, randomness and the
    /// invocation's limits passed in so that it can be tested without a
    /// host.
    fn run(
        &self,
        idempotent: bool,
        mut send: impl FnMut() -> Result<Response, http::Error>,
        mut sleep: impl FnMut(Duration),
        mut random: impl FnMut() -> f64,
        mut left: impl FnMut() -> Left,
    ) -> Result<Response, http::Error> {
        let mut waited = Duration::ZERO;
        let mut attempt = 1;
        loop {
            let result = send();
            if let Err(http::Error::LimitExceeded(_)) = &result {
                BUDGET_SPENT.set(true);
            }
            match self.next(attempt, idempotent, &result, waited, random()) {
                Next::Wait(d) if !left().allows(d) => {
                    // Out of requests: say so, as a refused send would, so
                    // that a job stops cleanly rather than fail.
                    if left().requests == 0 {
                        BUDGET_SPENT.set(true);
                    }
                    return result;
                }
                Next::Done => return result,
                Next::Wait(d) => {
                    sleep(d);
                    waited += d;
                    attempt += 1;
                }
            }
        }
    }

    fn next(
        &self,
        attempt: u32,
        idempotent: bool,
        result: &Result<Response, http::Error>,
        waited: Duration,
        random: f64,
    ) -> Next {
        if attempt >= self.attempts {
            return Next::Done;
        }
        let retry_after = match result {
            Ok(r) if r.status == 429 => r.retry_after_secs(),
            Ok(r) if idempotent && matches!(r.status, 408 | 500 | 502 | 503 | 504) => {
                r.retry_after_secs()
            }
            Err(http::Error::Timeout | http::Error::Connection(_)) if idempotent => None,
            _ => return Next::Done,
        };
        let wait = match retry_after {
            Some(secs) => Duration::from_secs(u64::from(secs)),
            None => {
                // Equal jitter: half the backoff, plus up to the other half.
                let backoff = self.base.saturating_mul(1 << (attempt - 1).min(16));
                backoff / 2 + backoff.mul_f64(random.clamp(0.0, 1.0) / 2.0)
            }
        };
        if wait > self.max_wait || waited + wait > self.total_wait {
            return Next::Done;
        }
        Next::Wait(wait)
    }
}

impl Left {
    /// Whether waiting `d` and sending once more fits what is left.
    fn allows(self, d: Duration) -> bool {
        self.requests > 0 && self.time.saturating_sub(d) >= LEFT_AFTER_WAIT
    }
}

/// A number in [0, 1) from the WASI random source (std's hash keys are
/// seeded from it), so that backoffs spread.
fn jitter() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    fn answer(status: u16, retry_after: Option<&str>) -> Result<Response, http::Error> {
        let headers: Vec<(&str, &str)> = retry_after
            .map(|v| ("retry-after", v))
            .into_iter()
            .collect();
        Ok(Response::new(status, &headers, Vec::new()))
    }

    /// Plenty of time and requests.
    fn ample() -> Left {
        Left {
            time: Duration::from_secs(30),
            requests: 64,
        }
    }

    /// Runs `policy` over `answers` in order; returns the final status (or
    /// error) and the waits it slept.
    fn play(
        policy: Retry,
        idempotent: bool,
        answers: Vec<Result<Response, http::Error>>,
    ) -> (Result<u16, http::Error>, Vec<Duration>, usize) {
        play_within(policy, idempotent, answers, ample)
    }

    fn play_within(
        policy: Retry,
        idempotent: bool,
        answers: Vec<Result<Response, http::Error>>,
        left: impl FnMut() -> Left,
    ) -> (Result<u16, http::Error>, Vec<Duration>, usize) {
        let answers = RefCell::new(answers.into_iter());
        let sent = RefCell::new(0);
        let waits = RefCell::new(Vec::new());
        let out = policy.run(
            idempotent,
            || {
                *sent.borrow_mut() += 1;
                answers
                    .borrow_mut()
                    .next()
                    .expect("more attempts than answers")
            },
            |d| waits.borrow_mut().push(d),
            || 0.5,
            left,
        );
        (out.map(|r| r.status), waits.into_inner(), sent.into_inner())
    }

    #[test]
    fn retry_after_is_honoured_and_a_success_ends_the_loop() {
        let (out, waits, sent) = play(
            Retry::default(),
            true,
            vec![answer(429, Some("2")), answer(200, None)],
        );
        assert_eq!(out.unwrap(), 200);
        assert_eq!(waits, [Duration::from_secs(2)]);
        assert_eq!(sent, 2);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_attempts_are_bounded() {
        let (out, waits, sent) = play(
            Retry::default(),
            true,
            vec![answer(503, None), answer(502, None), answer(500, None)],
        );
        // The last answer comes back as it is.
        assert_eq!(out.unwrap(), 500);
        // 250 ms then 500 ms backoff; half of each plus half the rest.
        assert_eq!(
            waits,
            [
                Duration::from_micros(187_500),
                Duration::from_micros(375_000)
            ]
        );
        assert_eq!(sent, 3);
        let policy = Retry::default().attempts(1);
        let (_, waits, sent) = play(policy, true, vec![answer(503, None)]);
        assert!(waits.is_empty() && sent == 1);
    }

    #[test]
    fn a_long_retry_after_goes_back_to_the_queue_instead_of_waiting() {
        let (out, waits, sent) = play(Retry::default(), true, vec![answer(429, Some("600"))]);
        assert_eq!(out.unwrap(), 429);
        assert!(waits.is_empty());
        assert_eq!(sent, 1);
        // The total wait bounds the sum of the waits too.
        let policy = Retry::default()
            .attempts(5)
            .total_wait(Duration::from_secs(5));
        let (out, waits, _) = play(
            policy,
            true,
            vec![answer(429, Some("3")), answer(429, Some("3"))],
        );
        assert_eq!(out.unwrap(), 429);
        assert_eq!(waits, [Duration::from_secs(3)]);
    }

    #[test]
    fn a_non_idempotent_call_is_retried_only_when_refused_before_it_ran() {
        for failure in [
            answer(503, None),
            answer(500, None),
            Err(http::Error::Timeout),
            Err(http::Error::Connection("reset".into())),
        ] {
            let (_, waits, sent) = play(Retry::default(), false, vec![failure]);
            assert!(waits.is_empty() && sent == 1);
        }
        let (out, _, sent) = play(
            Retry::default(),
            false,
            vec![answer(429, Some("1")), answer(201, None)],
        );
        assert_eq!(out.unwrap(), 201);
        assert_eq!(sent, 2);
        // An idempotent call is retried after a timeout.
        let (out, _, sent) = play(
            Retry::default(),
            true,
            vec![Err(http::Error::Timeout), answer(200, None)],
        );
        assert_eq!(out.unwrap(), 200);
        assert_eq!(sent, 2);
    }

    #[test]
    fn client_errors_and_a_spent_budget_are_not_retried() {
        for status in [400, 401, 403, 404, 409, 422] {
            let (out, _, sent) = play(Retry::default(), true, vec![answer(status, None)]);
            assert_eq!(out.unwrap(), status);
            assert_eq!(sent, 1);
        }
        assert!(!budget_spent());
        let (out, _, sent) = play(
            Retry::default(),
            true,
            vec![Err(http::Error::LimitExceeded("64 requests".into()))],
        );
        assert!(matches!(out, Err(http::Error::LimitExceeded(_))));
        assert_eq!(sent, 1);
        assert!(budget_spent());
    }

    #[test]
    fn waits_stay_inside_the_deadline_and_the_request_budget() {
        // 3 s of Retry-After with 4 s left would leave 1 s: not waited.
        let (out, waits, sent) =
            play_within(Retry::default(), true, vec![answer(429, Some("3"))], || {
                Left {
                    time: Duration::from_secs(4),
                    requests: 10,
                }
            });
        assert_eq!(out.unwrap(), 429);
        assert!(waits.is_empty() && sent == 1);
        // With 6 s left it is.
        let (out, waits, _) = play_within(
            Retry::default(),
            true,
            vec![answer(429, Some("3")), answer(200, None)],
            || Left {
                time: Duration::from_secs(6),
                requests: 10,
            },
        );
        assert_eq!(out.unwrap(), 200);
        assert_eq!(waits, [Duration::from_secs(3)]);
        // No request left: no retry.
        let (_, waits, sent) =
            play_within(Retry::default(), true, vec![answer(503, None)], || Left {
                time: Duration::from_secs(30),
                requests: 0,
            });
        assert!(waits.is_empty() && sent == 1);
    }

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let draws: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(draws.windows(2).any(|w| w[0] != w[1]));
    }
}
