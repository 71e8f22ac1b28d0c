//! The invocation in progress: how long it may still run and how many
//! outbound requests it may still send. [`crate::retry`] stays inside both;
//! a job that works through a backlog can check them to stop cleanly and
//! continue in its next run.
//!
//! ```no_run
//! use std::time::Duration;
//! use switchyard_sdk::invocation;
//!
//! while invocation::remaining() > Duration::from_secs(5) && invocation::remaining_requests() > 2 {
//!     // … one more page of work …
//! #   break;
//! }
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
