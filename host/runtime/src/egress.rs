//! Egress policy: where an instance may send HTTP requests.
//!
//! An allowlist entry is `scheme://host[:port]`:
//! - `host` is a DNS name (`api.example.com`), a wildcard (`*.example.com`,
//!   any depth of subdomain, not the apex), an IP literal (`10.1.2.3`,
//!   `[fd00::1]`) or a CIDR block (`10.0.0.0/8`, `[fd00::/8]`);
//! - `port` is a number or `*`; omitted means the scheme's default port.
//!
//! A URL is allowed when an entry matches its scheme, host and port. After
//! that, every address the host name resolves to must be a public address,
//! unless an IP/CIDR entry covers it: loopback, private, link-local,
//! cloud-metadata and other special-purpose ranges ([`is_restricted`]) are
//! reachable only when the tenant names them explicitly.
//!
//! Hosts are normalised by the WHATWG URL parser before matching, so decimal
//! (`2130706433`), octal (`0177.0.0.1`), hex (`0x7f.1`) and shortened IPv4
//! forms all become dotted quads, and IPv4-mapped IPv6 (`[::ffff:7f00:1]`) is
//! turned back into IPv4. URLs with user info are refused outright: besides
//! smuggling credentials, `https://allowed@evil` is the classic confusion.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::{Host, Url};

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRule {
    scheme: Scheme,
    host: HostPattern,
    port: PortPattern,
    text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "http" => Some(Self::Http),
            "https" => Some(Self::Https),
            _ => None,
        }
    }
    fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// A DNS name, lower-case, without a trailing dot.
    Exact(String),
    /// `*.suffix`: stores `.suffix`.
    Wildcard(String),
    /// An IP literal (a /32 or /128) or a CIDR block.
    Net(IpNet),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortPattern {
    Any,
    Exact(u16),
}

/// Why an allowlist entry could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("egress entry `{entry}`: {reason}")]
pub struct RuleError {
    entry: String,
    reason: String,
}

impl std::str::FromStr for EgressRule {
    type Err = RuleError;

    fn from_str(entry: &str) -> Result<Self, RuleError> {
        let err = |reason: &str| RuleError {
            entry: entry.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = entry
            .split_once("://")
            .ok_or_else(|| err("expected scheme://host[:port]"))?;
        let scheme = Scheme::parse(&scheme.to_ascii_lowercase())
            .ok_or_else(|| err("scheme must be http or https"))?;
        if rest.contains(['/', '@', '?', '#']) && !rest.starts_with('[') && !looks_like_cidr(rest) {
            return Err(err(
                "only scheme://host[:port] is allowed (no path, user info or query)",
            ));
        }
        let (host, port) = split_host_port(rest).map_err(|r| err(&r))?;
        let port = match port {
            None => PortPattern::Exact(scheme.default_port()),
            Some("*") => PortPattern::Any,
            Some(p) => PortPattern::Exact(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| err("port must be 1-65535 or *"))?,
            ),
        };
        let host = parse_host_pattern(host).map_err(|r| err(&r))?;
        Ok(Self {
            scheme,
            host,
            port,
            text: entry.to_owned(),
        })
    }
}

fn looks_like_cidr(rest: &str) -> bool {
    let host = rest.split(':').next().unwrap_or("");
    host.contains('/') && host.parse::<IpNet>().is_ok()
}

/// Splits `host[:port]`, `[v6][:port]` or `[v6/len][:port]`.
fn split_host_port(rest: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| "unclosed [ in IPv6 host".to_owned())?;
        return match after {
            "" => Ok((host, None)),
            _ => after
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or_else(|| "unexpected text after ]".to_owned()),
        };
    }
    Ok(match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    })
}

fn parse_host_pattern(host: &str) -> Result<HostPattern, String> {
    if host.is_empty() {
        return Err("host is empty".into());
    }
    if let Ok(net) = host.parse::<IpNet>() {
        return Ok(HostPattern::Net(normalise_net(net)));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(HostPattern::Net(IpNet::from(normalise_ip(ip))));
    }
    if let Some(suffix) = host.strip_prefix("*.") {
        let suffix = normalise_domain(suffix)?;
        if !suffix.contains('.') {
            return Err("a wildcard must cover a domain with at least two labels".into());
        }
        return Ok(HostPattern::Wildcard(format!(".{suffix}")));
    }
    if host.contains('*') {
        return Err("`*` is only allowed as the first label (`*.example.com`)".into());
    }
    // Names that the URL parser would read as IPv4 (`0x7f.1`, `2130706433`)
    // must be written as dotted quads so the entry means what it says.
    match Host::parse(host) {
        Ok(Host::Domain(_)) => Ok(HostPattern::Exact(normalise_domain(host)?)),
        Ok(_) => Err("write IP addresses as plain dotted quads or [v6]".into()),
        Err(e) => Err(format!("invalid host: {e}")),
    }
}

fn normalise_domain(name: &str) -> Result<String, String> {
    match Host::parse(name) {
        Ok(Host::Domain(d)) => Ok(d.trim_end_matches('.').to_owned()),
        Ok(_) => Err("expected a DNS name".into()),
        Err(e) => Err(format!("invalid host: {e}")),
    }
}

fn normalise_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn normalise_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => {
                IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).expect("prefix length in range")
            }
            None => net,
        },
        _ => net.trunc(),
    }
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The destination of a request, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The normalised host.
    pub host: DestHost,
    /// The effective port.
    pub port: u16,
}

/// A normalised host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestHost {
    /// A lower-case DNS name without a trailing dot.
    Domain(String),
    /// An IP address (IPv4-mapped IPv6 already turned into IPv4).
    Ip(IpAddr),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            DestHost::Domain(d) => write!(f, "{}://{d}:{}", self.scheme, self.port),
            DestHost::Ip(IpAddr::V4(ip)) => write!(f, "{}://{ip}:{}", self.scheme, self.port),
            DestHost::Ip(IpAddr::V6(ip)) => write!(f, "{}://[{ip}]:{}", self.scheme, self.port),
        }
    }
}

/// Why a URL may not be requested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// The URL itself is unacceptable (unparseable, wrong scheme, user info).
    #[error("{0}")]
    Invalid(String),
    /// The URL is well-formed but the policy refuses it.
    #[error("{0}")]
    Denied(String),
}

/// Parses and normalises a request URL into a [`Destination`].
pub fn destination(url: &Url) -> Result<Destination, EgressError> {
    let scheme = match url.scheme() {
        "http" => "http",
        "https" => "https",
        other => {
            return Err(EgressError::Invalid(format!(
                "scheme `{other}` is not allowed; use http or https"
            )));
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EgressError::Invalid(
            "URLs with user info (user:pass@) are refused; name a credential instead".into(),
        ));
    }
    let host = match url.host() {
        Some(Host::Domain(d)) => DestHost::Domain(d.trim_end_matches('.').to_ascii_lowercase()),
        Some(Host::Ipv4(ip)) => DestHost::Ip(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => DestHost::Ip(normalise_ip(IpAddr::V6(ip))),
        None => return Err(EgressError::Invalid("URL has no host".into())),
    };
    let port = url
        .port_or_known_default()
        .ok_or_else(|| EgressError::Invalid("URL has no port".into()))?;
    Ok(Destination { scheme, host, port })
}

/// An instance's egress allowlist: the tenant's entries, and — when the
/// plugin's manifest names fixed destinations only — those destinations
/// too. A request must pass both (declared and granted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    rules: Vec<EgressRule>,
    /// The plugin's declared destinations; None when the plugin takes its
    /// destinations from configuration (anything the tenant allows).
    declared: Option<Vec<EgressRule>>,
}

impl EgressPolicy {
    /// Builds a policy from allowlist entries.
    pub fn new(rules: Vec<EgressRule>) -> Self {
        Self {
            rules,
            declared: None,
        }
    }

    /// Parses every entry; the first bad one is reported.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, RuleError> {
        entries
            .iter()
            .map(|e| e.as_ref().trim().parse())
            .collect::<Result<_, _>>()
            .map(Self::new)
    }

    /// Restricts the policy to the destinations a plugin declares (see
    /// [`crate::grants::declared_destinations`]); None leaves it as is.
    pub fn within_declared(mut self, declared: Option<Vec<EgressRule>>) -> Self {
        self.declared = declared;
        self
    }

    /// The entries, as written.
    pub fn rules(&self) -> &[EgressRule] {
        &self.rules
    }

    /// Whether some entry is an IP address or CIDR block (only those let a
    /// name resolve to a restricted address).
    pub fn has_ip_rules(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.host, HostPattern::Net(_)))
    }

    /// Decides whether `dest` may be contacted, before any DNS lookup.
    ///
    /// An IP destination can only match an IP/CIDR entry, which names the
    /// address explicitly; so a restricted IP literal passes here only when
    /// the tenant allowed it, and needs no [`Self::check_resolved`].
    pub fn check(&self, dest: &Destination) -> Result<(), EgressError> {
        if !self.allows(dest) {
            return Err(EgressError::Denied(format!(
                "{dest} is not in this instance's egress allowlist"
            )));
        }
        match &self.declared {
            Some(declared) if !declared.iter().any(|r| r.matches(dest)) => {
                Err(EgressError::Denied(if declared.is_empty() {
                    format!(
                        "{dest}: the plugin's manifest declares no egress, so it may reach nothing"
                    )
                } else {
                    let names: Vec<&str> = declared.iter().map(|r| r.text.as_str()).collect();
                    format!(
                        "{dest} is not among the destinations the plugin's manifest declares ({})",
                        names.join(", ")
                    )
                }))
            }
            _ => Ok(()),
        }
    }

    /// Decides whether `name` may be connected to at the address it
    /// resolved to. Public addresses always may. A restricted one (loopback,
    /// private, link-local, metadata, …) only if IP/CIDR entries cover it
    /// for every scheme and port the name itself is allowed on: the
    /// resolver does not know which port the request is for, so an entry
    /// `http://127.0.0.1:19001` must not let `http://evil.test:19002` (a
    /// name that resolves to 127.0.0.1) reach port 19002.
    pub fn check_resolved(&self, name: &str, ip: IpAddr) -> Result<(), EgressError> {
        let ip = normalise_ip(ip);
        if !is_restricted(ip) {
            return Ok(());
        }
        let nets: Vec<&EgressRule> = self
            .rules
            .iter()
            .filter(|r| matches!(&r.host, HostPattern::Net(net) if net.contains(&ip)))
            .collect();
        if nets.is_empty() {
            return Err(EgressError::Denied(format!(
                "resolved address {ip} is in a restricted range (loopback, private, \
                 link-local or metadata); add it as an IP/CIDR egress entry to allow it"
            )));
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let by_name = self.rules.iter().filter(|r| r.host.matches_name(&name));
        let mut any = false;
        for r in by_name {
            any = true;
            if !nets
                .iter()
                .any(|n| n.scheme == r.scheme && n.port.covers(r.port))
            {
                return Err(EgressError::Denied(format!(
                    "resolved address {ip} is in a restricted range; the IP/CIDR entries \
                     covering it do not allow {} on {}, which `{r}` allows for {name}: \
                     add an IP/CIDR entry for that scheme and port",
                    r.scheme.name(),
                    r.port
                )));
            }
        }
        if any {
            Ok(())
        } else {
            Err(EgressError::Denied(format!(
                "{name} resolved to restricted address {ip} and matches no egress entry"
            )))
        }
    }

    /// Whether a credential bound to these patterns may be sent to `dest`.
    pub fn allows(&self, dest: &Destination) -> bool {
        self.rules.iter().any(|r| r.matches(dest))
    }

    /// Whether some entry allows everything `need` allows (used to warn when
    /// a tenant does not grant what a plugin declares).
    pub fn covers(&self, need: &EgressRule) -> bool {
        self.rules.iter().any(|r| r.covers(need))
    }
}

impl HostPattern {
    fn matches_name(&self, name: &str) -> bool {
        match self {
            Self::Exact(n) => n == name,
            Self::Wildcard(suffix) => name.len() > suffix.len() && name.ends_with(suffix.as_str()),
            Self::Net(_) => false,
        }
    }
}

impl PortPattern {
    fn covers(self, other: PortPattern) -> bool {
        match (self, other) {
            (Self::Any, _) => true,
            (Self::Exact(a), Self::Exact(b)) => a == b,
            (Self::Exact(_), Self::Any) => false,
        }
    }
}

impl fmt::Display for PortPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any port"),
            Self::Exact(p) => write!(f, "port {p}"),
        }
    }
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

impl EgressRule {
    /// Whether this entry allows every destination `other` allows.
    fn covers(&self, other: &EgressRule) -> bool {
        let host = match (&self.host, &other.host) {
            (HostPattern::Exact(a), HostPattern::Exact(b)) => a == b,
            (HostPattern::Wildcard(_), HostPattern::Exact(b)) => self.host.matches_name(b),
            (HostPattern::Wildcard(a), HostPattern::Wildcard(b)) => b.ends_with(a.as_str()),
            (HostPattern::Net(a), HostPattern::Net(b)) => a.contains(b),
            _ => false,
        };
        host && self.scheme == other.scheme && self.port.covers(other.port)
    }

    fn matches(&self, dest: &Destination) -> bool {
        let scheme_ok = match self.scheme {
            Scheme::Http => dest.scheme == "http",
            Scheme::Https => dest.scheme == "https",
        };
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Exact(p) => p == dest.port,
        };
        let host_ok = match (&self.host, &dest.host) {
            (HostPattern::Exact(name), DestHost::Domain(d)) => name == d,
            (HostPattern::Wildcard(suffix), DestHost::Domain(d)) => {
                d.len() > suffix.len() && d.ends_with(suffix.as_str())
            }
            (HostPattern::Net(net), DestHost::Ip(ip)) => net.contains(ip),
            _ => false,
        };
        scheme_ok && port_ok && host_ok
    }
}

/// Whether `ip` is in a range a plugin must not reach by default: anything
/// that is not a globally routable unicast address, plus known cloud
/// metadata endpoints. IPv6 forms that embed an IPv4 address (mapped,
/// NAT64 well-known prefix, 6to4) are judged by the embedded address.
pub fn is_restricted(ip: IpAddr) -> bool {
    match normalise_ip(ip) {
        IpAddr::V4(v4) => is_restricted_v4(v4),
        IpAddr::V6(v6) => is_restricted_v6(v6),
    }
}

fn is_restricted_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, includes 169.254.169.254 metadata
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // 100.64/10 shared (CGNAT)
        || (a == 100 && b == 100 && c == 100) // 100.100.100.200 Alibaba metadata
        || (a == 192 && b == 0 && c == 0) // 192.0.0/24 IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn is_restricted_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return true;
    }
    // NAT64 well-known prefix 64:ff9b::/96 embeds an IPv4 address.
    if seg[0..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        return is_restricted_v4(v4);
    }
    // 6to4 2002::/16 embeds an IPv4 address in bits 16..48.
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        );
        return is_restricted_v4(v4);
    }
    // IPv4-compatible (deprecated) ::a.b.c.d
    if seg[0..6] == [0; 6] {
        return true;
    }
    (seg[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local (includes fd00:ec2::254)
        || (seg[0] & 0xffc0) == 0xfe80 // fe80::/10 link-local
        || (seg[0] & 0xffc0) == 0xfec0 // fec0::/10 site-local (deprecated)
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] == 0x0100 && seg[1..4] == [0, 0, 0]) // 100::/64 discard
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> EgressPolicy {
        EgressPolicy::parse(entries).unwrap()
    }

    fn check(p: &EgressPolicy, url: &str) -> Result<(), EgressError> {
        let url = Url::parse(url).map_err(|e| EgressError::Invalid(e.to_string()))?;
        p.check(&destination(&url)?)
    }

    #[test]
    fn exact_host_and_default_port() {
        let p = policy(&["https://api.example.com"]);
        assert!(check(&p, "https://api.example.com/x?y").is_ok());
        assert!(check(&p, "https://API.Example.COM./x").is_ok());
        assert!(check(&p, "https://api.example.com:443/").is_ok());
        assert!(check(&p, "https://api.example.com:8443/").is_err());
        assert!(check(&p, "http://api.example.com/").is_err());
        assert!(check(&p, "https://example.com/").is_err());
        assert!(check(&p, "https://api.example.com.evil.net/").is_err());
    }

    #[test]
    fn explicit_and_any_port() {
        let p = policy(&["https://uem.example.com:8443", "http://sim.test:*"]);
        assert!(check(&p, "https://uem.example.com:8443/").is_ok());
        assert!(check(&p, "https://uem.example.com/").is_err());
        assert!(check(&p, "http://sim.test:1/").is_ok());
        assert!(check(&p, "http://sim.test/").is_ok());
        assert!(check(&p, "https://sim.test/").is_err());
    }

    #[test]
    fn wildcard_covers_subdomains_not_apex() {
        let p = policy(&["https://*.service-now.com"]);
        assert!(check(&p, "https://acme.service-now.com/").is_ok());
        assert!(check(&p, "https://a.b.service-now.com/").is_ok());
        assert!(check(&p, "https://service-now.com/").is_err());
        assert!(check(&p, "https://evilservice-now.com/").is_err());
    }

    #[test]
    fn ip_encodings_are_normalised_before_matching() {
        let p = policy(&["https://api.example.com"]);
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.0.0.1/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
        ] {
            let err = check(&p, url).unwrap_err();
            assert!(
                err.to_string().contains("127.0.0.1"),
                "{url} should normalise to 127.0.0.1: {err}"
            );
        }
        // And an explicit loopback entry matches every encoding.
        let p = policy(&["http://127.0.0.1:*"]);
        for url in [
            "http://2130706433/",
            "http://0x7f.1:9/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert!(check(&p, url).is_ok(), "{url}");
        }
    }

    #[test]
    fn user_info_is_refused() {
        let p = policy(&["https://evil.com", "https://allowed.com"]);
        for url in ["https://allowed.com@evil.com/", "https://u:p@allowed.com/"] {
            assert!(
                matches!(check(&p, url), Err(EgressError::Invalid(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn only_http_schemes() {
        let p = policy(&["https://api.example.com"]);
        for url in [
            "file:///etc/passwd",
            "ftp://api.example.com/",
            "gopher://api.example.com/",
        ] {
            assert!(
                matches!(check(&p, url), Err(EgressError::Invalid(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn cidr_entries() {
        let p = policy(&[
            "https://10.0.0.0/8:*",
            "http://[fd00::/8]:8080",
            "http://192.168.1.5",
        ]);
        assert!(check(&p, "https://10.20.30.40:9000/").is_ok());
        assert!(check(&p, "https://11.0.0.1/").is_err());
        assert!(check(&p, "http://[fd12::1]:8080/").is_ok());
        assert!(check(&p, "http://[fd12::1]:8081/").is_err());
        assert!(check(&p, "http://192.168.1.5/").is_ok());
        assert!(check(&p, "http://192.168.1.6/").is_err());
        // CIDR entries also license resolved addresses in their range.
        let p = policy(&["http://10.0.0.0/8:*", "http://internal.example:8080"]);
        assert!(
            p.check_resolved("internal.example", "10.1.1.1".parse().unwrap())
                .is_ok()
        );
        assert!(
            p.check_resolved("internal.example", "172.16.0.1".parse().unwrap())
                .is_err()
        );
    }

    #[test]
    fn resolved_addresses_in_restricted_ranges_are_refused() {
        let p = policy(&["https://api.example.com"]);
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.5.4",
            "192.168.0.1",
            "169.254.169.254",
            "100.100.100.200",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(
                p.check_resolved("api.example.com", ip).is_err(),
                "{ip} must be refused"
            );
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "64:ff9b::5db8:d822",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(
                p.check_resolved("api.example.com", ip).is_ok(),
                "{ip} is public"
            );
        }
    }

    /// Finding 6 of the tenant-isolation review: an IP entry for one port
    /// must not open other ports of that address through a name.
    #[test]
    fn a_restricted_address_reached_through_a_name_needs_an_entry_for_its_port() {
        let p = policy(&["http://127.0.0.1:19001", "http://evil.test:19002"]);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let err = p.check_resolved("evil.test", lo).unwrap_err().to_string();
        assert!(err.contains("port 19002"), "{err}");
        // With an entry for the name's port too, the tenant meant it.
        let p = policy(&[
            "http://127.0.0.1:19001",
            "http://127.0.0.1:19002",
            "http://evil.test:19002",
        ]);
        assert!(p.check_resolved("evil.test", lo).is_ok());
        // A scheme mismatch is refused the same way.
        let p = policy(&["https://127.0.0.1:19002", "http://evil.test:19002"]);
        assert!(p.check_resolved("evil.test", lo).is_err());
        // An any-port CIDR entry covers a name on any port.
        let p = policy(&["http://127.0.0.0/8:*", "http://evil.test:19002"]);
        assert!(p.check_resolved("evil.test", lo).is_ok());
        // A name the policy does not list gets nothing restricted.
        assert!(p.check_resolved("other.test", lo).is_err());
    }

    #[test]
    fn declared_destinations_narrow_the_tenant_list() {
        let tenant = policy(&["https://*.slack.com", "https://api.example.com"]);
        let only_slack = tenant
            .clone()
            .within_declared(Some(vec!["https://hooks.slack.com".parse().unwrap()]));
        assert!(check(&only_slack, "https://hooks.slack.com/x").is_ok());
        let err = check(&only_slack, "https://api.example.com/").unwrap_err();
        assert!(err.to_string().contains("declares"), "{err}");
        let nothing = tenant.clone().within_declared(Some(vec![]));
        let err = check(&nothing, "https://api.example.com/").unwrap_err();
        assert!(err.to_string().contains("declares no egress"), "{err}");
        // Open needs (destinations from configuration) leave the list as is.
        assert!(check(&tenant.within_declared(None), "https://api.example.com/").is_ok());
    }

    #[test]
    fn coverage_of_declared_destinations() {
        let tenant = policy(&["https://*.slack.com", "http://10.0.0.0/8:*"]);
        for (need, covered) in [
            ("https://hooks.slack.com", true),
            ("https://*.eu.slack.com", true),
            ("https://slack.com", false),
            ("http://hooks.slack.com", false),
            ("http://10.1.0.0/16:8080", true),
            ("http://11.0.0.0/8", false),
        ] {
            assert_eq!(tenant.covers(&need.parse().unwrap()), covered, "{need}");
        }
    }

    #[test]
    fn bad_entries_are_reported() {
        for (entry, needle) in [
            ("api.example.com", "scheme://"),
            ("ftp://x.com", "http or https"),
            ("https://x.com/path", "only scheme://host"),
            ("https://user@x.com", "only scheme://host"),
            ("https://x.com:0", "port"),
            ("https://x.com:99999", "port"),
            ("https://*.com", "two labels"),
            ("https://a.*.com", "first label"),
            ("https://0x7f.1", "dotted quads"),
            ("https://[::1", "unclosed"),
        ] {
            let err = entry.parse::<EgressRule>().unwrap_err().to_string();
            assert!(err.contains(needle), "{entry}: {err}");
            assert!(err.contains(entry), "error names the entry: {err}");
        }
    }

    #[test]
    fn empty_policy_denies_everything() {
        let err = check(&EgressPolicy::default(), "https://example.com/").unwrap_err();
        assert_eq!(
            err.to_string(),
            "https://example.com:443 is not in this instance's egress allowlist"
        );
    }
}
