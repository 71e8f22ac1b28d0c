//! Bounds applied to every invocation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits for one instance's invocations. Every field bounds something a
/// guest controls, so that one plugin cannot hurt the daemon or its
/// neighbours; the defaults suit an integration that makes a few dozen
/// upstream calls per invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock deadline of one invocation, host calls included.
    #[serde(with = "millis")]
    pub deadline: Duration,
    /// Linear memory a Store may grow to, in bytes.
    pub memory_bytes: usize,
    /// Table elements a Store may grow to (function references).
    pub table_elements: usize,
    /// Host resources (WASI streams, pollables, …) live at once in a Store.
    pub resources: usize,
    /// Longest any single outbound request may take.
    #[serde(with = "millis")]
    pub http_timeout: Duration,
    /// Outbound requests per invocation.
    pub http_requests: u32,
    /// Largest outbound request body, in bytes.
    pub http_request_bytes: usize,
    /// Largest upstream response body, in bytes.
    pub http_response_bytes: usize,
    /// Log records per invocation; later ones are counted and dropped.
    pub log_records: u32,
    /// Largest webhook or action input accepted, in bytes.
    pub input_bytes: usize,
    /// Largest action output a plugin may return, in bytes.
    pub output_bytes: usize,
    /// Largest value one storage key may hold, in bytes.
    pub storage_value_bytes: usize,
    /// Key and value bytes the instance's storage may hold in all.
    pub storage_bytes: u64,
    /// Keys the instance's storage may hold.
    pub storage_keys: u64,
}

impl Limits {
    /// The storage quota these limits set.
    pub fn quota(&self) -> switchyard_store::Quota {
        switchyard_store::Quota {
            max_value_bytes: self.storage_value_bytes,
            max_total_bytes: self.storage_bytes,
            max_keys: self.storage_keys,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(30),
            memory_bytes: 64 << 20,
            table_elements: 20_000,
            resources: 1_000,
            http_timeout: Duration::from_secs(15),
            http_requests: 200,
            http_request_bytes: 8 << 20,
            http_response_bytes: 16 << 20,
            log_records: 1_000,
            input_bytes: 4 << 20,
            output_bytes: 8 << 20,
            storage_value_bytes: 1 << 20,
            storage_bytes: 64 << 20,
            storage_keys: 100_000,
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// A token bucket: `rate` units a second, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Units per second, sustained.
    pub per_sec: f64,
    /// Units at once (the bucket's size).
    pub burst: f64,
}

/// A token bucket shared by all of a tenant's invocations.
#[derive(Debug)]
pub struct RateBucket {
    rate: Rate,
    /// Tokens (may be negative: reserved ahead), and when they were counted.
    state: std::sync::Mutex<(f64, std::time::Instant)>,
}

impl RateBucket {
    /// A full bucket.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            state: std::sync::Mutex::new((rate.burst, std::time::Instant::now())),
        }
    }

    fn refill(
        &self,
        now: std::time::Instant,
    ) -> std::sync::MutexGuard<'_, (f64, std::time::Instant)> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * self.rate.per_sec).min(self.rate.burst);
        s.1 = now;
        s
    }

    /// Takes `n` tokens if there are that many; otherwise takes none.
    pub fn try_take(&self, n: f64, now: std::time::Instant) -> bool {
        let mut s = self.refill(now);
        if s.0 >= n {
            s.0 -= n;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens, borrowing ahead; returns how long the caller must
    /// wait for them to have been earned (zero when they were there).
    pub fn reserve(&self, n: f64, now: std::time::Instant) -> Duration {
        let mut s = self.refill(now);
        s.0 -= n;
        if s.0 >= 0.0 || self.rate.per_sec <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.0 / self.rate.per_sec)
        }
    }
}

/// What a tenant's plugins may use over time, whatever the number of their
/// instances and invocations: log records, bytes written to storage, and
/// linear memory grown past a component's initial size. Shared by the
/// tenant's instances and kept across reloads.
#[derive(Debug)]
pub struct TenantBudgets {
    /// Log records.
    pub log_records: RateBucket,
    /// Bytes written to storage (keys and values).
    pub storage_bytes: RateBucket,
    /// Bytes of linear memory grown by `memory.grow`.
    pub memory_bytes: RateBucket,
    /// When one of the tenant's guests last computed long enough to count
    /// as a long runner (see `instance::new_store`).
    ran_long: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The rates of [`TenantBudgets`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetRates {
    /// Log records: a burst of 1,000, then 100 a second.
    pub log_records: Rate,
    /// Storage writes: 32 MiB at once, then 8 MiB a second.
    pub storage_bytes: Rate,
    /// Memory growth: 256 MiB at once, then 256 MiB a second.
    pub memory_bytes: Rate,
}

impl Default for BudgetRates {
    fn default() -> Self {
        Self {
            log_records: Rate {
                per_sec: 100.0,
                burst: 1000.0,
            },
            storage_bytes: Rate {
                per_sec: (8 << 20) as f64,
                burst: (32 << 20) as f64,
            },
            memory_bytes: Rate {
                per_sec: (256 << 20) as f64,
                burst: (256 << 20) as f64,
            },
        }
    }
}

impl TenantBudgets {
    /// Full budgets at `rates`.
    pub fn new(rates: &BudgetRates) -> Self {
        Self {
            log_records: RateBucket::new(rates.log_records),
            storage_bytes: RateBucket::new(rates.storage_bytes),
            memory_bytes: RateBucket::new(rates.memory_bytes),
            ran_long: std::sync::Mutex::new(None),
        }
    }

    /// Notes that one of the tenant's guests is a long runner at `now`.
    pub(crate) fn mark_long_run(&self, now: std::time::Instant) {
        *self.ran_long.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
    }

    /// Whether one of the tenant's guests was a long runner within
    /// `window` before `now`.
    pub(crate) fn ran_long_within(&self, now: std::time::Instant, window: Duration) -> bool {
        self.ran_long
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| now.saturating_duration_since(t) < window)
    }
}

/// The Store's resource limiter. It records which limit was hit so that the
/// invocation's error says "memory limit of N bytes" rather than a bare trap.
pub(crate) struct Limiter {
    memory_bytes: usize,
    table_elements: usize,
    pub(crate) exceeded: Option<String>,
    /// The size the largest linear memory was allowed to reach, in bytes.
    pub(crate) memory_peak: usize,
    /// The tenant's memory growth budget (not for `manifest()`).
    growth: Option<std::sync::Arc<TenantBudgets>>,
}

impl Limiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements,
            exceeded: None,
            memory_peak: 0,
            growth: None,
        }
    }

    /// A limiter that also paces memory growth by the tenant's budget.
    pub(crate) fn with_budget(limits: &Limits, budgets: std::sync::Arc<TenantBudgets>) -> Self {
        Self {
            growth: Some(budgets),
            ..Self::new(limits)
        }
    }
}

#[async_trait::async_trait]
impl wasmtime::ResourceLimiterAsync for Limiter {
    async fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = wasmtime::ResourceLimiter::memory_growing(self, current, desired, maximum)?;
        // Growing costs the machine (page faults, zeroing, and on release a
        // TLB shootdown on every core), so a tenant that grows memory over
        // and over waits for its budget. A component's initial memory
        // (current 0) is not counted: instantiating is not growing.
        if allowed
            && current > 0
            && let Some(b) = &self.growth
        {
            let wait = b
                .memory_bytes
                .reserve((desired - current) as f64, std::time::Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        Ok(allowed)
    }

    async fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        wasmtime::ResourceLimiter::table_growing(self, current, desired, maximum)
    }
}

impl Limiter {
    /// Records `msg` and traps: trapping (rather than failing the grow)
    /// ends the invocation at once with a clear cause instead of a
    /// guest-side abort.
    fn exceed(&mut self, msg: String) -> wasmtime::Result<bool> {
        self.exceeded = Some(msg.clone());
        Err(wasmtime::Error::msg(msg))
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            return self.exceed(format!(
                "memory limit exceeded: the plugin asked for {desired} bytes of linear memory; \
                 the limit is {} bytes",
                self.memory_bytes
            ));
        }
        self.memory_peak = self.memory_peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return self.exceed(format!(
                "table limit exceeded: the plugin asked for {desired} table elements; \
                 the limit is {}",
                self.table_elements
            ));
        }
        Ok(true)
    }
}

/// Raised (as a trap) by a host call that stopped waiting because the
/// invocation's deadline passed, so the call ends as "deadline exceeded"
/// instead of handing the guest a timeout it could ignore.
#[derive(Debug)]
pub(crate) struct DeadlineReached;

impl std::fmt::Display for DeadlineReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the invocation's deadline passed during a host call")
    }
}

impl std::error::Error for DeadlineReached {}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn a_long_run_marks_the_tenant_for_a_window() {
        let b = TenantBudgets::new(&BudgetRates::default());
        let t0 = Instant::now();
        let window = Duration::from_secs(1);
        assert!(!b.ran_long_within(t0, window), "never ran long");
        b.mark_long_run(t0);
        assert!(b.ran_long_within(t0 + Duration::from_millis(999), window));
        assert!(
            !b.ran_long_within(t0 + window, window),
            "the window has passed"
        );
        b.mark_long_run(t0 + window);
        assert!(b.ran_long_within(t0 + window + Duration::from_millis(500), window));
    }

    #[test]
    fn a_bucket_lends_ahead_and_says_how_long_to_wait() {
        let b = RateBucket::new(Rate {
            per_sec: 10.0,
            burst: 5.0,
        });
        let t0 = Instant::now();
        assert_eq!(b.reserve(5.0, t0), Duration::ZERO);
        assert_eq!(b.reserve(10.0, t0), Duration::from_secs(1));
        assert!(!b.try_take(1.0, t0 + Duration::from_millis(500)));
        assert!(b.try_take(1.0, t0 + Duration::from_millis(1100)));
    }
}
