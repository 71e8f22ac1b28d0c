//! Host side of `switchyard:plugin/invocation`: what is left of the
//! invocation's deadline and request budget, and the plugin's word on
//! whether its error is worth retrying.
//!
//! The retry mark and a job's wish to run again are kept in the invocation's state and reported with the
//! result ([`crate::Report::retry`]); the daemon's queue applies it only
//! when the plugin returned an error (not to traps, deadlines or refused
//! input, which the host judges itself).

use std::time::Instant;

use wasmtime::component::{HasData, Linker};

use crate::bindings::invocation::{self, Host, Retry};
use crate::call::{CallState, RetryMark};

/// The longest delay `run-again` asks for: a longer wait is what the job's
/// schedule is for.
pub const MAX_RUN_AGAIN_SECS: u32 = 3_600;

/// What an `invocation` call sees: the invocation's state.
pub struct InvocationCtxView<'a> {
    /// Per-invocation state.
    pub call: &'a mut CallState,
}

/// Implemented by store data that can hand out an [`InvocationCtxView`].
pub trait InvocationView: Send {
    /// Borrows the invocation's state for one host call.
    fn invocation(&mut self) -> InvocationCtxView<'_>;
}

impl Host for InvocationCtxView<'_> {
    fn remaining_ms(&mut self) -> wasmtime::Result<u64> {
        let left = self.call.deadline.saturating_duration_since(Instant::now());
        Ok(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
    }

    fn remaining_requests(&mut self) -> wasmtime::Result<u32> {
        Ok(self
            .call
            .limits
            .http_requests
            .saturating_sub(self.call.http_requests))
    }

    fn mark_error(&mut self, retry: Retry) -> wasmtime::Result<()> {
        self.call.retry = Some(match retry {
            Retry::Permanent => RetryMark::Permanent,
            Retry::Transient => RetryMark::Transient,
        });
        Ok(())
    }

    fn run_again(&mut self, after_secs: u32) -> wasmtime::Result<()> {
        self.call.run_again = Some(after_secs.min(MAX_RUN_AGAIN_SECS));
        Ok(())
    }
}

struct HasInvocation;

impl HasData for HasInvocation {
    type Data<'a> = InvocationCtxView<'a>;
}

/// Adds `switchyard:plugin/invocation` to `linker`.
pub fn add_to_linker<T: InvocationView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    invocation::add_to_linker::<T, HasInvocation>(linker, T::invocation)
}
