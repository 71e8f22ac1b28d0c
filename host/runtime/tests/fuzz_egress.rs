//! Property-based fuzzing of the egress policy: allowlist entries and
//! request URLs are what a tenant file and a plugin control.
//!
//! `PROPTEST_CASES=N cargo test -p switchyard-runtime --test fuzz_egress`
//! runs N cases per property (the default keeps each under a few seconds in
//! a debug build).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use proptest::prelude::*;
use switchyard_runtime::egress::{
    DestHost, Destination, EgressError, EgressPolicy, EgressRule, destination, is_restricted,
};
use url::Url;

/// `PROPTEST_CASES` when set, else `default`; failures are not written
/// next to the sources (the shrunk input is in the panic message).
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

fn dest_of(url: &str) -> Result<Destination, EgressError> {
    let url = Url::parse(url).map_err(|e| EgressError::Invalid(e.to_string()))?;
    destination(&url)
}

// ---------------------------------------------------------------------------
// Strategies

/// A DNS label from a small alphabet, so that generated hosts collide often.
fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("api".to_owned()),
        Just("x-1".to_owned()),
        "[a-z0-9]{1,4}",
    ]
}

/// `label(.label)*.tld`, sometimes upper-cased.
fn dns_name() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(label(), 0..3),
        prop_oneof![Just("test"), Just("com"), Just("example")],
    )
        .prop_map(|(labels, tld)| {
            let mut parts = labels;
            parts.push(tld.to_owned());
            parts.join(".")
        })
}

fn any_ipv4() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        any::<u32>().prop_map(Ipv4Addr::from),
        restricted_v4(),
        // A few public addresses.
        Just(Ipv4Addr::new(93, 184, 216, 34)),
        Just(Ipv4Addr::new(8, 8, 8, 8)),
    ]
}

fn any_ipv6() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        any::<u128>().prop_map(Ipv6Addr::from),
        Just(Ipv6Addr::LOCALHOST),
        any::<u128>().prop_map(|x| Ipv6Addr::from((0xfd00u128 << 112) | (x >> 16))),
        any::<u32>().prop_map(|x| Ipv4Addr::from(x).to_ipv6_mapped()),
        Just("2606:2800:220:1:248:1893:25c8:1946".parse().unwrap()),
    ]
}

/// Restricted IPv4 addresses: loopback, private, link-local (metadata).
fn restricted_v4() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        any::<u32>().prop_map(|x| Ipv4Addr::from((127 << 24) | (x & 0x00ff_ffff))),
        any::<u32>().prop_map(|x| Ipv4Addr::from((10 << 24) | (x & 0x00ff_ffff))),
        any::<u16>().prop_map(|x| Ipv4Addr::from((169 << 24) | (254 << 16) | u32::from(x))),
        any::<u32>().prop_map(|x| Ipv4Addr::from((172 << 24) | (16 << 16) | (x & 0x000f_ffff))),
        any::<u16>().prop_map(|x| Ipv4Addr::from((192 << 24) | (168 << 16) | u32::from(x))),
        Just(Ipv4Addr::LOCALHOST),
        Just(Ipv4Addr::new(169, 254, 169, 254)),
        Just(Ipv4Addr::UNSPECIFIED),
    ]
}

/// Text that looks like an allowlist entry, often is one, and often is
/// subtly not.
fn entry_text() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        Just("https://"),
        Just("http://"),
        Just("HTTPS://"),
        Just("hTtP://"),
        Just("ftp://"),
        Just("https:/"),
        Just(""),
    ];
    let host = prop_oneof![
        dns_name(),
        dns_name().prop_map(|n| format!("*.{n}")),
        dns_name().prop_map(|n| format!("{n}.")),
        any_ipv4().prop_map(|ip| ip.to_string()),
        any_ipv6().prop_map(|ip| format!("[{ip}]")),
        (any_ipv4(), 0u8..=33).prop_map(|(ip, l)| format!("{ip}/{l}")),
        (any_ipv6(), 0u8..=129).prop_map(|(ip, l)| format!("[{ip}/{l}]")),
        Just("0x7f.1".to_owned()),
        Just("2130706433".to_owned()),
        Just("a.*.com".to_owned()),
        Just("*.com".to_owned()),
        Just("[::1".to_owned()),
        "[a-z0-9.*:/@?#\\[\\]%-]{0,12}",
    ];
    let port = prop_oneof![
        Just(String::new()),
        Just(":*".to_owned()),
        (0u32..70000).prop_map(|p| format!(":{p}")),
        Just(":".to_owned()),
        "[:0-9a-z*/]{0,6}",
    ];
    (scheme, host, port).prop_map(|(s, h, p)| format!("{s}{h}{p}"))
}

/// Writes an IPv4 address the way a URL parser may still read it: 1 to 4
/// parts, each decimal, octal or hex, maybe with a trailing dot.
fn odd_ipv4_text(ip: Ipv4Addr, parts: usize, radixes: [u8; 4], trailing_dot: bool) -> String {
    let [a, b, c, d] = ip.octets().map(u32::from);
    let values: Vec<u32> = match parts {
        1 => vec![u32::from(ip)],
        2 => vec![a, (b << 16) | (c << 8) | d],
        3 => vec![a, b, (c << 8) | d],
        _ => vec![a, b, c, d],
    };
    let mut out: Vec<String> = values
        .iter()
        .zip(radixes)
        .map(|(v, r)| match r % 6 {
            0 => v.to_string(),
            1 => format!("0x{v:x}"),
            2 => format!("0X{v:X}"),
            3 => format!("0x000{v:x}"),
            4 if *v == 0 => "0".to_owned(),
            4 => format!("0{v:o}"),
            _ => format!("000{v:o}"),
        })
        .collect();
    if trailing_dot {
        out.push(String::new());
    }
    out.join(".")
}

/// Full-width forms that IDNA mapping turns back into ASCII.
fn widen(text: &str, mask: u64) -> String {
    text.chars()
        .enumerate()
        .map(|(i, ch)| {
            if (mask >> (i % 64)) & 1 == 0 {
                return ch.to_string();
            }
            match ch {
                '0'..='9' => char::from_u32(0xff10 + (ch as u32 - '0' as u32))
                    .unwrap()
                    .to_string(),
                '.' => "\u{3002}".to_owned(),
                'x' => "\u{ff58}".to_owned(),
                c => c.to_string(),
            }
        })
        .collect()
}

/// Percent-encodes the characters `mask` selects.
fn percent(text: &str, mask: u64) -> String {
    text.chars()
        .enumerate()
        .map(|(i, ch)| {
            if (mask >> (i % 64)) & 1 == 1 && ch.is_ascii() {
                format!("%{:02X}", ch as u32)
            } else {
                ch.to_string()
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
enum HostSpec {
    Exact(String),
    Wildcard(String),
    Net(IpNet),
}

#[derive(Debug, Clone)]
struct RuleSpec {
    https: bool,
    host: HostSpec,
    /// None: any port.
    port: Option<u16>,
    text: String,
}

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    let host = prop_oneof![
        3 => dns_name().prop_map(HostSpec::Exact),
        // Wildcards need two labels after the star.
        2 => (label(), prop_oneof![Just("test"), Just("com")])
            .prop_map(|(l, t)| HostSpec::Wildcard(format!("{l}.{t}"))),
        1 => (restricted_v4(), 8u8..=32)
            .prop_map(|(ip, l)| HostSpec::Net(IpNet::new(IpAddr::V4(ip), l).unwrap().trunc())),
        1 => (any_ipv4(), 16u8..=32)
            .prop_map(|(ip, l)| HostSpec::Net(IpNet::new(IpAddr::V4(ip), l).unwrap().trunc())),
        1 => (any_ipv6(), 8u8..=128).prop_map(|(ip, l)| {
            let net = IpNet::new(IpAddr::V6(ip), l).unwrap().trunc();
            // The parser turns IPv4-mapped nets into IPv4 ones; keep the
            // model simple by not generating them as v6.
            match ip.to_ipv4_mapped() {
                Some(v4) => IpNet::new(IpAddr::V4(v4), 32).unwrap(),
                None => net,
            }
        })
        .prop_map(HostSpec::Net),
    ];
    let port = prop_oneof![
        Just(None),
        Just(Some(80u16)),
        Just(Some(443u16)),
        Just(Some(8080u16)),
        (1u16..=65535).prop_map(Some),
    ];
    (any::<bool>(), host, port, any::<u8>()).prop_map(|(https, host, port, style)| {
        let scheme = if https { "https" } else { "http" };
        let host_text = match &host {
            HostSpec::Exact(n) => n.clone(),
            HostSpec::Wildcard(s) => format!("*.{s}"),
            HostSpec::Net(IpNet::V4(n)) if n.prefix_len() == 32 && style % 2 == 0 => {
                n.addr().to_string()
            }
            HostSpec::Net(IpNet::V6(n)) if n.prefix_len() == 128 && style % 2 == 0 => {
                format!("[{}]", n.addr())
            }
            HostSpec::Net(IpNet::V4(n)) => n.to_string(),
            HostSpec::Net(IpNet::V6(n)) => format!("[{n}]"),
        };
        let default = if https { 443 } else { 80 };
        let port_text = match port {
            None => ":*".to_owned(),
            // The default port may be written or left out.
            Some(p) if p == default && style % 3 == 0 => String::new(),
            Some(p) => format!(":{p}"),
        };
        RuleSpec {
            https,
            host,
            port,
            text: format!("{scheme}://{host_text}{port_text}"),
        }
    })
}

fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl RuleSpec {
    fn matches_name(&self, name: &str) -> bool {
        match &self.host {
            HostSpec::Exact(n) => n == name,
            HostSpec::Wildcard(s) => name.ends_with(&format!(".{s}")),
            HostSpec::Net(_) => false,
        }
    }

    fn covers_port(&self, other: Option<u16>) -> bool {
        match (self.port, other) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        }
    }

    /// The model of `EgressRule::matches`.
    fn matches(&self, d: &Destination) -> bool {
        let scheme = (d.scheme == "https") == self.https;
        let port = self.port.is_none_or(|p| p == d.port);
        let host = match (&self.host, &d.host) {
            (HostSpec::Net(net), DestHost::Ip(ip)) => net.contains(ip),
            (HostSpec::Net(_), DestHost::Domain(_)) | (_, DestHost::Ip(_)) => false,
            (_, DestHost::Domain(name)) => self.matches_name(name),
        };
        scheme && port && host
    }
}

fn policy_of(rules: &[RuleSpec]) -> EgressPolicy {
    let texts: Vec<&str> = rules.iter().map(|r| r.text.as_str()).collect();
    EgressPolicy::parse(&texts).unwrap_or_else(|e| panic!("generated entries must parse: {e}"))
}

/// A destination URL whose host is drawn from the same pools as the rules,
/// written with the variations a URL parser normalises away.
fn dest_url() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        4 => (dns_name(), any::<bool>(), any::<bool>()).prop_map(|(n, upper, dot)| {
            let n = if upper { n.to_ascii_uppercase() } else { n };
            if dot { format!("{n}.") } else { n }
        }),
        1 => any_ipv4().prop_map(|ip| ip.to_string()),
        1 => any_ipv6().prop_map(|ip| format!("[{ip}]")),
    ];
    let port = prop_oneof![
        Just(String::new()),
        Just(":80".to_owned()),
        Just(":443".to_owned()),
        Just(":8080".to_owned()),
        (1u16..=65535).prop_map(|p| format!(":{p}")),
    ];
    (
        prop_oneof![Just("http"), Just("https")],
        host,
        port,
        "[a-z/?=]{0,8}",
    )
        .prop_map(|(s, h, p, path)| format!("{s}://{h}{p}/{path}"))
}

// ---------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(config(5000))]

    /// Parsing any text never panics; an error names the entry as written;
    /// a rule's Display is its text, and that text parses to the same rule.
    #[test]
    fn entries_parse_or_name_themselves(
        text in prop_oneof![entry_text(), any::<String>(), "\\PC{0,30}"],
    ) {
        match text.parse::<EgressRule>() {
            Ok(rule) => {
                prop_assert_eq!(rule.to_string(), text.clone());
                prop_assert_eq!(rule.to_string().parse::<EgressRule>(), Ok(rule.clone()));
                // Every parsed rule covers itself.
                prop_assert!(EgressPolicy::new(vec![rule.clone()]).covers(&rule));
            }
            Err(e) => {
                let msg = e.to_string();
                let head = format!("egress entry `{text}`: ");
                prop_assert!(msg.starts_with(&head), "the error must name the entry: {}", msg);
                prop_assert!(msg.len() > head.len(), "no reason given: {}", msg);
            }
        }
        // The policy parser trims each entry and reports the first bad one.
        let padded = format!("  {text}\t");
        match EgressPolicy::parse(&["https://ok.example", padded.as_str()]) {
            Ok(p) => prop_assert_eq!(p.rules().len(), 2),
            Err(e) => {
                let named = format!("`{}`", text.trim());
                prop_assert!(e.to_string().contains(&named), "{}", e);
            }
        }
    }

    /// Any URL string: parsing and normalising never panics, and what
    /// comes out is a faithful, normalised view of the URL.
    #[test]
    fn urls_normalise_faithfully(
        text in prop_oneof![
            dest_url(),
            any::<String>(),
            "(https?|ftp|file|HTTP)://[a-zA-Z0-9.:@\\[\\]%/?#_~-]{0,30}",
            "https?://[a-z0-9]{0,5}(:[a-z0-9]{0,5})?@[a-z0-9.]{0,10}/",
        ],
    ) {
        let Ok(url) = Url::parse(&text) else { return Ok(()) };
        let policy = EgressPolicy::parse(&["https://api.example.com", "http://10.0.0.0/8:*"])
            .unwrap();
        match destination(&url) {
            Ok(d) => {
                prop_assert!(url.scheme() == "http" || url.scheme() == "https");
                prop_assert_eq!(d.scheme, url.scheme());
                prop_assert!(url.username().is_empty() && url.password().is_none());
                prop_assert_eq!(Some(d.port), url.port_or_known_default());
                // A name that the URL parser would not keep as a name (an
                // IPv4 literal such as `127.0.0.1` or `0`): see below.
                let odd_name = matches!(&d.host,
                    DestHost::Domain(n) if !matches!(url::Host::parse(n), Ok(url::Host::Domain(_))));
                match &d.host {
                    DestHost::Domain(name) => {
                        prop_assert!(!name.ends_with('.'));
                        prop_assert_eq!(name.clone(), name.to_ascii_lowercase());
                        if odd_name {
                            // Finding (egress.rs, `destination`): every
                            // trailing dot is trimmed, while the URL parser
                            // only ignores one, so `http://127.0.0.1../` (a
                            // DNS name for the URL parser) becomes the name
                            // `127.0.0.1` and `http://0../` the name `0`. It
                            // fails closed: such a name never matches an
                            // IP/CIDR entry, only an entry written the same
                            // odd way (`http://127.0.0.1..`, which the entry
                            // parser trims alike), and what it resolves to
                            // is still checked. Only two or more trailing
                            // dots get here, or the host `.` (the name ``).
                            let host = url.host_str().unwrap_or_default();
                            prop_assert!(host.ends_with("..") || host == ".", "{} -> {:?}", text, d);
                            let wide = EgressPolicy::parse(&[
                                "http://0.0.0.0/0:*", "https://0.0.0.0/0:*",
                                "http://[::/0]:*", "https://[::/0]:*",
                            ]).unwrap();
                            prop_assert!(wide.check(&d).is_err(), "{} allowed", text);
                            prop_assert!(policy.check(&d).is_err(), "{} allowed", text);
                        }
                    }
                    DestHost::Ip(IpAddr::V6(v6)) => {
                        prop_assert!(v6.to_ipv4_mapped().is_none(), "mapped v6 left as v6");
                    }
                    DestHost::Ip(IpAddr::V4(_)) => {}
                }
                // The destination's text is itself a URL with the same
                // destination (when its host is a proper, non-empty name).
                if !odd_name && !matches!(&d.host, DestHost::Domain(n) if n.is_empty()) {
                    prop_assert_eq!(dest_of(&d.to_string()), Ok(d.clone()), "{}", d);
                }
                // A refusal names the destination.
                if let Err(e) = policy.check(&d) {
                    prop_assert!(matches!(e, EgressError::Denied(_)));
                    prop_assert!(e.to_string().contains(&d.to_string()));
                }
            }
            Err(EgressError::Invalid(msg)) => {
                prop_assert!(!msg.is_empty());
                let user_info = !url.username().is_empty() || url.password().is_some();
                let scheme_ok = url.scheme() == "http" || url.scheme() == "https";
                prop_assert!(user_info || !scheme_ok || url.host().is_none(), "{}", msg);
            }
            Err(EgressError::Denied(msg)) => {
                prop_assert!(false, "destination() never denies: {msg}");
            }
        }
    }

    /// A restricted IPv4 address, however it is written, normalises to
    /// itself and is never allowed by a policy that lists only names.
    #[test]
    fn odd_ipv4_forms_of_restricted_addresses_are_refused(
        ip in restricted_v4(),
        parts in 1usize..=4,
        radixes in any::<[u8; 4]>(),
        trailing_dot in any::<bool>(),
        form in 0u8..6,
        mask in any::<u64>(),
        https in any::<bool>(),
        port in prop_oneof![Just(None), (1u16..=65535).prop_map(Some)],
    ) {
        let host = match form {
            0 | 1 => odd_ipv4_text(ip, parts, radixes, trailing_dot),
            2 => widen(&odd_ipv4_text(ip, parts, radixes, trailing_dot), mask),
            3 => percent(&odd_ipv4_text(ip, parts, radixes, false), mask),
            4 => format!("[::ffff:{ip}]"),
            _ => {
                let [a, b, c, d] = ip.octets();
                let upper = if mask & 1 == 1 { "FFFF" } else { "ffff" };
                let zeros = if mask & 2 == 2 { "0:0:0:0:0:" } else { "::" };
                format!("[{zeros}{upper}:{:x}:{:x}]",
                    u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]))
            }
        };
        let scheme = if https { "https" } else { "http" };
        let port_text = port.map(|p| format!(":{p}")).unwrap_or_default();
        let url = format!("{scheme}://{host}{port_text}/x");
        prop_assert!(is_restricted(IpAddr::V4(ip)));
        let d = dest_of(&url).map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?;
        prop_assert_eq!(&d.host, &DestHost::Ip(IpAddr::V4(ip)), "{}", url);
        for entries in [
            &["https://api.example.com"][..],
            &["https://api.example.com:*", "http://api.example.com:*"],
            &["https://*.example.com:*", "http://*.example.com:*"],
            &["http://localhost:*", "https://metadata.google.internal:*"],
        ] {
            let policy = EgressPolicy::parse(entries).unwrap();
            prop_assert!(policy.check(&d).is_err(), "{} passed {:?}", url, entries);
            // Nor may a listed name be used to reach it after resolving.
            prop_assert!(policy.check_resolved("api.example.com", IpAddr::V4(ip)).is_err());
            prop_assert!(
                policy.check_resolved("api.example.com", IpAddr::V6(ip.to_ipv6_mapped())).is_err()
            );
        }
    }

    /// A resolved address that is restricted is refused unless IP/CIDR
    /// entries cover it for every scheme and port the name is allowed on;
    /// a public one always passes.
    #[test]
    fn resolved_restricted_addresses_need_covering_entries(
        rules in prop::collection::vec(rule_spec(), 0..6),
        name in prop_oneof![dns_name(), dns_name().prop_map(|n| format!("{}.", n.to_ascii_uppercase()))],
        ip in prop_oneof![
            restricted_v4().prop_map(IpAddr::V4),
            restricted_v4().prop_map(|v4| IpAddr::V6(v4.to_ipv6_mapped())),
            any_ipv4().prop_map(IpAddr::V4),
            any_ipv6().prop_map(IpAddr::V6),
        ],
        pick in any::<prop::sample::Index>(),
    ) {
        // Half the time, make sure some entry covers the address.
        let mut rules = rules;
        if pick.index(2) == 0 && !rules.is_empty() {
            let i = pick.index(rules.len());
            let host = HostSpec::Net(IpNet::from(normalise(ip)));
            let text = match normalise(ip) {
                IpAddr::V4(v4) => format!("{}://{v4}:*", if rules[i].https { "https" } else { "http" }),
                IpAddr::V6(v6) => format!("{}://[{v6}]:*", if rules[i].https { "https" } else { "http" }),
            };
            rules[i] = RuleSpec { host, port: None, text, ..rules[i].clone() };
        }
        let policy = policy_of(&rules);
        let got = policy.check_resolved(&name, ip);
        prop_assert_eq!(is_restricted(ip), is_restricted(normalise(ip)));
        if !is_restricted(ip) {
            prop_assert_eq!(got, Ok(()));
            return Ok(());
        }
        let ip_n = normalise(ip);
        let nets: Vec<&RuleSpec> = rules
            .iter()
            .filter(|r| matches!(&r.host, HostSpec::Net(n) if n.contains(&ip_n)))
            .collect();
        let plain = name.trim_end_matches('.').to_ascii_lowercase();
        let by_name: Vec<&RuleSpec> = rules.iter().filter(|r| r.matches_name(&plain)).collect();
        let expected = !nets.is_empty()
            && !by_name.is_empty()
            && by_name.iter().all(|r| {
                nets.iter().any(|n| n.https == r.https && n.covers_port(r.port))
            });
        prop_assert_eq!(got.is_ok(), expected, "{:?} {} {}: {:?}", rules, name, ip, got);
        if nets.is_empty() {
            prop_assert!(got.is_err(), "restricted {} allowed without an IP/CIDR entry", ip);
        }
        if let Err(e) = got {
            prop_assert!(matches!(e, EgressError::Denied(_)));
            prop_assert!(e.to_string().contains(&ip_n.to_string()), "{}", e);
        }
    }

    /// The policy allows exactly what some entry matches (scheme, host and
    /// port), narrowed by the plugin's declared destinations: in particular
    /// never a host that differs from every entry.
    #[test]
    fn a_policy_allows_only_what_an_entry_names(
        rules in prop::collection::vec(rule_spec(), 0..6),
        declared in prop::option::of(prop::collection::vec(rule_spec(), 0..3)),
        url in dest_url(),
    ) {
        let d = dest_of(&url).map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?;
        let declared_rules = declared.as_ref().map(|rs| policy_of(rs).rules().to_vec());
        let policy = policy_of(&rules).within_declared(declared_rules);
        let granted = rules.iter().any(|r| r.matches(&d));
        let within = declared.as_ref().is_none_or(|ds| ds.iter().any(|r| r.matches(&d)));
        let got = policy.check(&d);
        prop_assert_eq!(got.is_ok(), granted && within, "{} {:?}: {:?}", url, rules, got);
        prop_assert_eq!(policy.allows(&d), granted);
        if got.is_ok() {
            // Some entry has this very host.
            let host_named = rules.iter().any(|r| match (&r.host, &d.host) {
                (HostSpec::Exact(n), DestHost::Domain(h)) => n == h,
                (HostSpec::Wildcard(s), DestHost::Domain(h)) => {
                    h.len() > s.len() + 1 && h.ends_with(&format!(".{s}"))
                }
                (HostSpec::Net(n), DestHost::Ip(ip)) => n.contains(ip),
                _ => false,
            });
            prop_assert!(host_named, "{} allowed by {:?}", url, rules);
        }
    }
}
