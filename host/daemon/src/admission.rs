//! Admission of synchronous invocations (actions, synchronous webhooks):
//! at most so many at once in the daemon, per tenant and per instance.
//!
//! A call that waits in a host call holds a wasm slot without using any
//! CPU, so without a share per tenant one tenant could hold every slot and
//! every other tenant would be turned away. With these limits a tenant over
//! its share is refused (429, its own doing) and the others keep theirs;
//! the daemon-wide limit is sized so that the wasm pool always has a slot
//! for each admitted call and for each queue worker.
//!
//! ```
//! use switchyard::admission::{Admission, Limits, Refused};
//! let adm = Admission::default();
//! let limits = Limits { total: 2, per_tenant: 1, per_instance: 1 };
//! let held = adm.try_enter("acme", "uem", &limits).unwrap();
//! assert_eq!(adm.try_enter("acme", "other", &limits).err(), Some(Refused::Tenant(1)));
//! assert!(adm.try_enter("globex", "uem", &limits).is_ok());
//! drop(held);
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The limits a call is admitted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Calls at once in the daemon.
    pub total: usize,
    /// Calls at once of the caller's tenant.
    pub per_tenant: usize,
    /// Calls at once of the instance.
    pub per_instance: usize,
}

/// Why a call was not admitted (each with the limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The daemon is at its limit.
    Total(usize),
    /// The tenant is.
    Tenant(usize),
    /// The instance is.
    Instance(usize),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Total(n) => write!(f, "the daemon is running {n} calls, its limit"),
            Self::Tenant(n) => write!(f, "this tenant is running {n} calls at once, its limit"),
            Self::Instance(n) => write!(f, "this instance is running {n} calls at once, its limit"),
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    tenants: HashMap<String, usize>,
    instances: HashMap<(String, String), usize>,
}

/// Counts of calls in flight. Shared across reloads.
#[derive(Default, Clone)]
pub struct Admission(Arc<Mutex<Counts>>);

/// A call in flight; dropping it lets the next one in.
pub struct Admitted {
    counts: Arc<Mutex<Counts>>,
    tenant: String,
    instance: String,
}

impl Admission {
    /// Admits a call of `instance` of `tenant`, or says which limit it is
    /// over. Never waits.
    pub fn try_enter(
        &self,
        tenant: &str,
        instance: &str,
        limits: &Limits,
    ) -> Result<Admitted, Refused> {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = (tenant.to_owned(), instance.to_owned());
        let in_instance = c.instances.get(&key).copied().unwrap_or(0);
        let in_tenant = c.tenants.get(tenant).copied().unwrap_or(0);
        // The caller's own limits first: a tenant over its share is told so
        // even when the daemon is busy too.
        if in_instance >= limits.per_instance {
            return Err(Refused::Instance(limits.per_instance));
        }
        if in_tenant >= limits.per_tenant {
            return Err(Refused::Tenant(limits.per_tenant));
        }
        if c.total >= limits.total {
            return Err(Refused::Total(limits.total));
        }
        c.total += 1;
        *c.tenants.entry(key.0.clone()).or_default() += 1;
        *c.instances.entry(key).or_default() += 1;
        Ok(Admitted {
            counts: self.0.clone(),
            tenant: tenant.to_owned(),
            instance: instance.to_owned(),
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total -= 1;
        // Zero counts are removed, so the maps hold only tenants with calls
        // in flight.
        if let Some(n) = c.tenants.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                c.tenants.remove(&self.tenant);
            }
        }
        let key = (
            std::mem::take(&mut self.tenant),
            std::mem::take(&mut self.instance),
        );
        if let Some(n) = c.instances.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                c.instances.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        total: 4,
        per_tenant: 2,
        per_instance: 1,
    };

    #[test]
    fn each_limit_holds_and_frees_on_drop() {
        let a = Admission::default();
        let x = a.try_enter("t", "i", &L).unwrap();
        assert_eq!(a.try_enter("t", "i", &L).err(), Some(Refused::Instance(1)));
        let y = a.try_enter("t", "j", &L).unwrap();
        assert_eq!(a.try_enter("t", "k", &L).err(), Some(Refused::Tenant(2)));
        let _u = a.try_enter("u", "i", &L).unwrap();
        let _v = a.try_enter("v", "i", &L).unwrap();
        assert_eq!(a.try_enter("w", "i", &L).err(), Some(Refused::Total(4)));
        drop(x);
        assert!(a.try_enter("w", "i", &L).is_ok());
        drop(y);
        let c = a.0.lock().unwrap();
        assert!(!c.tenants.contains_key("t"), "emptied counts are removed");
    }
}

/// Failed sign-ins one address may make per [`SIGN_IN_WINDOW`].
pub const SIGN_IN_FAILURES: usize = 5;
/// See [`SIGN_IN_FAILURES`].
pub const SIGN_IN_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// Recent failed console sign-ins by client address: a few failures per
/// window, then the address waits.
#[derive(Default)]
pub struct SignInLimiter(
    std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, Vec<std::time::Instant>>>,
);

impl SignInLimiter {
    /// Seconds until `ip` may try again, if it may not now.
    pub fn blocked(&self, ip: std::net::IpAddr, now: std::time::Instant) -> Option<u64> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let tries = map.entry(ip).or_default();
        tries.retain(|t| now.duration_since(*t) < SIGN_IN_WINDOW);
        (tries.len() >= SIGN_IN_FAILURES)
            .then(|| (SIGN_IN_WINDOW - now.duration_since(tries[0])).as_secs() + 1)
    }

    /// Records a failed sign-in of `ip`.
    pub fn failed(&self, ip: std::net::IpAddr, now: std::time::Instant) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: addresses with nothing recent are forgotten.
        if map.len() > 10_000 {
            map.retain(|_, v| v.iter().any(|t| now.duration_since(*t) < SIGN_IN_WINDOW));
        }
        map.entry(ip).or_default().push(now);
    }
}

#[cfg(test)]
mod sign_in_tests {
    use super::*;

    #[test]
    fn failed_sign_ins_make_an_address_wait_out_the_window() {
        let l = SignInLimiter::default();
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = std::time::Instant::now();
        for _ in 0..SIGN_IN_FAILURES {
            assert_eq!(l.blocked(a, t0), None);
            l.failed(a, t0);
        }
        let wait = l.blocked(a, t0).unwrap();
        assert!(wait > 0 && wait <= SIGN_IN_WINDOW.as_secs() + 1, "{wait}");
        // Another address is not affected; the window passes.
        assert_eq!(l.blocked(b, t0), None);
        assert_eq!(l.blocked(a, t0 + SIGN_IN_WINDOW), None);
    }
}
