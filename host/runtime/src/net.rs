//! Outbound connections, below the `http` interface and the credentials'
//! token requests alike: the daemon's clients (shared by CA set and by the
//! rules for restricted addresses), the resolver that checks every address
//! it connects to, error descriptions that never carry a URL, and capped
//! body reads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::egress::{EgressError, EgressPolicy};

/// How host names become addresses: the system resolver, or (in tests) a
/// function that answers for names no DNS knows. Whatever answers, the
/// egress policy checks every address it returns.
#[derive(Clone, Default)]
pub enum Lookup {
    /// `getaddrinfo`, through tokio.
    #[default]
    System,
    /// A fixed answer per name.
    Custom(Arc<LookupFn>),
}

/// A name lookup: the addresses of a host name.
pub type LookupFn = dyn Fn(&str) -> std::io::Result<Vec<std::net::IpAddr>> + Send + Sync;

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::System => "Lookup::System",
            Self::Custom(_) => "Lookup::Custom",
        })
    }
}

impl Lookup {
    async fn resolve(&self, host: &str) -> std::io::Result<Vec<SocketAddr>> {
        match self {
            Self::System => Ok(tokio::net::lookup_host((host, 0)).await?.collect()),
            Self::Custom(f) => Ok(f(host)?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect()),
        }
    }
}

/// What a client's connections depend on: instances whose clients agree on
/// these may share a client (and its connection pool and TLS roots).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    /// SHA-256 of the extra CA certificates (none: the empty digest).
    cas: [u8; 32],
    /// The egress entries that decide which restricted addresses a name may
    /// resolve to: empty when the policy has no IP/CIDR entry (no restricted
    /// address is ever allowed), else every entry. A connection opened for a
    /// tenant that may reach a private address is thereby never pooled with
    /// one of a tenant that may not.
    restricted: Vec<String>,
}

/// The daemon's HTTP clients, one per distinct [`ClientKey`]: the system's
/// root certificates are loaded once per CA set instead of once per
/// instance, and instances that resolve alike share connection pools.
#[derive(Default)]
pub struct Clients {
    lookup: Lookup,
    built: std::sync::Mutex<std::collections::HashMap<ClientKey, reqwest::Client>>,
}

impl Clients {
    /// Clients that resolve names with `lookup`.
    pub fn new(lookup: Lookup) -> Self {
        Self {
            lookup,
            built: Default::default(),
        }
    }

    /// The client for an instance with `policy` and `extra_ca_pem`.
    pub fn client(
        &self,
        policy: &EgressPolicy,
        extra_ca_pem: &[String],
    ) -> Result<reqwest::Client, String> {
        use sha2::{Digest, Sha256};
        let mut cas = Sha256::new();
        for pem in extra_ca_pem {
            cas.update((pem.len() as u64).to_le_bytes());
            cas.update(pem.as_bytes());
        }
        let restricted = if policy.has_ip_rules() {
            let mut r: Vec<String> = policy.rules().iter().map(ToString::to_string).collect();
            r.sort();
            r
        } else {
            Vec::new()
        };
        let key = ClientKey {
            cas: cas.finalize().into(),
            restricted,
        };
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = built.get(&key) {
            return Ok(c.clone());
        }
        let resolving = EgressPolicy::parse(&key.restricted).map_err(|e| format!("egress: {e}"))?;
        let client = build_client(resolving, extra_ca_pem, self.lookup.clone())?;
        built.insert(key, client.clone());
        Ok(client)
    }

    /// Distinct clients built so far.
    pub fn len(&self) -> usize {
        self.built.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none was built yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A client whose resolver keeps only addresses `resolving` allows, with no
/// proxy, no redirects, and `extra_ca_pem` trusted besides the system's
/// roots.
fn build_client(
    resolving: EgressPolicy,
    extra_ca_pem: &[String],
    lookup: Lookup,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(PolicyResolver {
            policy: Arc::new(resolving),
            lookup,
        }))
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")));
    for (i, pem) in extra_ca_pem.iter().enumerate() {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| format!("CA certificate #{}: {e}", i + 1))?;
        if certs.is_empty() {
            return Err(format!(
                "CA certificate #{}: no PEM certificate found",
                i + 1
            ));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// Resolves names and keeps only addresses the policy allows.
struct PolicyResolver {
    policy: Arc<EgressPolicy>,
    lookup: Lookup,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let lookup = self.lookup.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs = lookup.resolve(&host).await?;
            let mut allowed: Vec<SocketAddr> = Vec::new();
            let mut refusal = None;
            for addr in addrs {
                match policy.check_resolved(&host, addr.ip()) {
                    Ok(()) => allowed.push(addr),
                    Err(e) => refusal = Some(e),
                }
            }
            if allowed.is_empty() {
                let err = refusal.unwrap_or_else(|| {
                    EgressError::Denied(format!("{host} resolved to no address"))
                });
                let err = match err {
                    EgressError::Denied(m) => EgressError::Denied(format!("{host}: {m}")),
                    other => other,
                };
                return Err(Box::new(err) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Describes a reqwest error by its kind and innermost cause, without the
/// URL (which may carry a token in its query).
pub(crate) fn describe_reqwest_error(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let kind = if e.is_connect() {
        "connect failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "reading the body failed"
    } else {
        "request failed"
    };
    if std::ptr::addr_eq(cause, e as &dyn std::error::Error) {
        kind.to_owned()
    } else {
        format!("{kind}: {cause}")
    }
}

pub(crate) fn find_egress_denial(e: &reqwest::Error) -> Option<String> {
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        if let Some(EgressError::Denied(m)) = c.downcast_ref::<EgressError>() {
            return Some(m.clone());
        }
        cause = c.source();
    }
    None
}

/// Why reading a body stopped.
#[derive(Debug)]
pub(crate) enum ReadError {
    TooLarge(u64),
    Failed(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge(limit) => write!(f, "body exceeds {limit} bytes"),
            Self::Failed(m) => f.write_str(m),
        }
    }
}

/// Reads a response body, stopping as soon as it exceeds `limit` bytes.
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge(limit as u64));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ReadError::Failed(describe_reqwest_error(&e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge(limit as u64));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
