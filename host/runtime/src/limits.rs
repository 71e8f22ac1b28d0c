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

/// The Store's resource limiter. It records which limit was hit so that the
/// invocation's error says "memory limit of N bytes" rather than a bare trap.
pub(crate) struct Limiter {
    memory_bytes: usize,
    table_elements: usize,
    pub(crate) exceeded: Option<String>,
}

impl Limiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements,
            exceeded: None,
        }
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
