//! The invocation in progress: how long it may still run and how many
//! outbound requests it may still send. [`crate::retry`] stays inside both;
//! a job that works through a backlog can check them to stop cleanly, keep
//! its cursor in storage and ask to [`run_again`] right away instead of
//! waiting for its next scheduled time.
//!
//! ```no_run
//! use std::time::Duration;
//! use switchyard_sdk::invocation;
//!
//! while invocation::remaining() > Duration::from_secs(5) && invocation::remaining_requests() > 2 {
//!     // … one more page of work …
//! #   break;
//! }
//! // Not finished: save the cursor, then
//! invocation::run_again(Duration::ZERO);
//! ```

use std::time::Duration;

use crate::bindings::switchyard::plugin::invocation as wit;

/// Time left before the host stops this invocation at its deadline.
pub fn remaining() -> Duration {
    Duration::from_millis(wit::remaining_ms())
}

/// Outbound requests this invocation may still send.
pub fn remaining_requests() -> u32 {
    wit::remaining_requests()
}

/// Asks the host to run this job again after `after` (whole seconds, at
/// most an hour; zero: as soon as a worker is free) instead of at its next
/// scheduled time, for work that goes on across invocations. It takes
/// effect only when the job then succeeds, and only for jobs (not actions
/// or webhooks); the last call wins. Needs a host of contract 0.1.3 or
/// later: an older host refuses to load a component that calls it.
pub fn run_again(after: Duration) {
    wit::run_again(u32::try_from(after.as_secs()).unwrap_or(u32::MAX));
}
