//! Where callbacks may go: the URL rules, which addresses count as public, and a DNS resolver
//! for the callback client that checks every address it hands out, so the client connects only
//! to an address that passed the check (no window for DNS rebinding between check and connect).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use ray_core::RayError;
use ray_core::config::AsyncQueueConfig;
use ray_core::wire::jobs::limits::CALLBACK_URL_MAX_CHARS;
use reqwest::Url;

/// Resolves a host name to addresses. The system resolver in production; tests substitute one.
pub(crate) trait HostLookup: Send + Sync + fmt::Debug {
    /// The addresses of `host`.
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>>;
}

/// The system resolver (`getaddrinfo`, through tokio).
#[derive(Debug)]
pub(crate) struct SystemLookup;

impl HostLookup for SystemLookup {
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let addresses = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addresses.map(|a| a.ip()).collect())
        })
    }
}

/// The callback address rules of the config.
#[derive(Debug, Clone)]
pub(crate) struct CallbackPolicy {
    allow_private_network: bool,
    allowed_hosts: Vec<String>,
    lookup: Arc<dyn HostLookup>,
    resolve_timeout: Duration,
}

impl CallbackPolicy {
    pub(crate) fn new(config: &AsyncQueueConfig, lookup: Arc<dyn HostLookup>) -> CallbackPolicy {
        CallbackPolicy {
            allow_private_network: config.callback_allow_private_network,
            allowed_hosts: config
                .callback_allowed_hosts
                .iter()
                .map(|h| normalise_host(h))
                .collect(),
            lookup,
            // The reference's bound: the callback timeout, at most one second.
            resolve_timeout: Duration::from_millis(config.callback_timeout_ms.clamp(1, 1_000)),
        }
    }

    /// Whether `host` skips the address check: private networks are allowed, or the host is in
    /// `callbackAllowedHosts` (exactly, or under a `*.suffix` with at least one more label).
    pub(crate) fn is_trusted(&self, host: &str) -> bool {
        if self.allow_private_network {
            return true;
        }
        let host = normalise_host(host);
        self.allowed_hosts
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => host
                    .strip_suffix(suffix)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                None => *pattern == host,
            })
    }

    /// Checks a callback URL at submission: its form, then (unless the host is trusted) that
    /// every address it resolves to is public. The message names `callbackUrl` and the rule.
    pub(crate) async fn check(&self, raw: &str) -> Result<Url, RayError> {
        let url = parse_callback_url(raw)?;
        let host = url
            .host_str()
            .ok_or_else(|| refuse("must have a host"))?
            .to_string();
        if self.is_trusted(&host) {
            return Ok(url);
        }
        match literal_ip(&url) {
            Some(ip) => check_public(ip, &host)?,
            None => {
                self.resolve_checked(&host).await.map_err(|e| refuse(&e))?;
            }
        }
        Ok(url)
    }

    /// Resolves `host` and checks every address (unless the host is trusted). The error says
    /// which address was refused.
    pub(crate) async fn resolve_checked(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let lookup = self.lookup.lookup(host.to_string());
        let addresses = match tokio::time::timeout(self.resolve_timeout, lookup).await {
            Ok(Ok(addresses)) => addresses,
            Ok(Err(error)) => return Err(format!("cannot resolve {host}: {error}")),
            Err(_elapsed) => {
                return Err(format!(
                    "cannot resolve {host} within {} ms",
                    self.resolve_timeout.as_millis()
                ));
            }
        };
        if addresses.is_empty() {
            return Err(format!("{host} resolves to no address"));
        }
        if !self.is_trusted(host)
            && let Some(private) = addresses.iter().find(|ip| !is_public_address(**ip))
        {
            return Err(format!(
                "{host} resolves to {private}, which is not a public address \
                 (allow it with asyncQueue.callbackAllowedHosts or callbackAllowPrivateNetwork)"
            ));
        }
        Ok(addresses)
    }

    /// Checks a literal address in a URL at delivery (the resolver is not asked for those).
    pub(crate) fn check_literal(&self, url: &Url) -> Result<(), String> {
        let Some(host) = url.host_str() else {
            return Err("the callback URL has no host".into());
        };
        if self.is_trusted(host) {
            return Ok(());
        }
        let Some(ip) = literal_ip(url) else {
            return Ok(());
        };
        if is_public_address(ip) {
            Ok(())
        } else {
            Err(format!("{ip} is not a public address"))
        }
    }
}

/// The callback client's resolver: every name is resolved and checked at every connection, and
/// only checked addresses are returned, so the connection goes to an address that passed.
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    pub(crate) policy: CallbackPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addresses = policy.resolve_checked(&host).await?;
            let addresses: Vec<SocketAddr> = addresses
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The address in a URL whose host is an IP literal. The URL parser has already turned odd
/// IPv4 spellings (`0x7f.1`, `2130706433`) into dotted form.
fn literal_ip(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

fn refuse(reason: &str) -> RayError {
    RayError::invalid_request(format!("callbackUrl: {reason}"))
}

fn check_public(ip: IpAddr, host: &str) -> Result<(), RayError> {
    if is_public_address(ip) {
        Ok(())
    } else {
        Err(refuse(&format!(
            "{host} is not a public address (allow it with asyncQueue.callbackAllowedHosts or \
             callbackAllowPrivateNetwork)"
        )))
    }
}

/// Lower case without a trailing dot.
fn normalise_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The form rules of a callback URL: at most 2048 chars, no whitespace or control characters,
/// absolute `http` or `https` (https only in builds with the `tls` feature), a host, no
/// credentials, no fragment.
pub(crate) fn parse_callback_url(raw: &str) -> Result<Url, RayError> {
    if raw.chars().count() > CALLBACK_URL_MAX_CHARS {
        return Err(refuse(&format!(
            "must be at most {CALLBACK_URL_MAX_CHARS} chars"
        )));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refuse("must not contain whitespace or control characters"));
    }
    let url = Url::parse(raw).map_err(|e| refuse(&format!("not an absolute URL ({e})")))?;
    match url.scheme() {
        "http" => {}
        "https" if cfg!(feature = "tls") => {}
        "https" => {
            return Err(refuse(
                "https callbacks need a gateway built with the `tls` feature",
            ));
        }
        other => return Err(refuse(&format!("must be http or https, not {other}"))),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(refuse("must have a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("must not carry credentials"));
    }
    if url.fragment().is_some() {
        return Err(refuse("must not have a fragment"));
    }
    Ok(url)
}

/// Whether `ip` is a public unicast address a callback may go to. Refused: unspecified,
/// loopback, private (RFC 1918, unique local), shared (CGNAT), link-local, documentation and
/// benchmarking ranges, multicast, reserved and broadcast, and IPv6 forms that embed or tunnel
/// to IPv4 (mapped, compatible, NAT64, 6to4, Teredo) unless the embedded IPv4 address is public
/// itself (mapped and compatible only).
pub fn is_public_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => is_public_v6(ip),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let refused = a == 0                                  // "this network"
        || a == 10                                        // private
        || (a == 100 && (64..128).contains(&b))           // shared address space (CGNAT)
        || a == 127                                       // loopback
        || (a == 169 && b == 254)                         // link-local
        || (a == 172 && (16..32).contains(&b))            // private
        || (a == 192 && b == 0 && c == 0)                 // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)                 // TEST-NET-1
        || (a == 192 && b == 88 && c == 99)               // 6to4 relay anycast
        || (a == 192 && b == 168)                         // private
        || (a == 198 && (18..20).contains(&b))            // benchmarking
        || (a == 198 && b == 51 && c == 100)              // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)               // TEST-NET-3
        || a >= 224; // multicast, reserved, broadcast
    !refused
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d, deprecated); `::` and `::1` fall in here too.
    if segments[..6].iter().all(|s| *s == 0) {
        let v4 = Ipv4Addr::new(
            (segments[6] >> 8) as u8,
            segments[6] as u8,
            (segments[7] >> 8) as u8,
            segments[7] as u8,
        );
        return segments[6] != 0 && is_public_v4(v4);
    }
    let first = segments[0];
    let refused = (first == 0x0064 && segments[1] == 0xff9b)   // NAT64 (64:ff9b::/96, /48)
        || (first == 0x0100 && segments[1..4] == [0, 0, 0])    // discard-only 100::/64
        || (first == 0x2001 && segments[1] < 0x0200)           // IETF protocols: Teredo, ORCHID, benchmarking
        || (first == 0x2001 && segments[1] == 0x0db8)          // documentation
        || first == 0x2002                                     // 6to4
        || (first & 0xfff0) == 0x3ff0                          // documentation 3fff::/20
        || (first & 0xfe00) == 0xfc00                          // unique local
        || (first & 0xffc0) == 0xfe80                          // link-local
        || (first & 0xffc0) == 0xfec0                          // site-local (deprecated)
        || (first & 0xff00) == 0xff00; // multicast
    !refused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow_private: bool, hosts: &[&str], answers: &[(&str, &[&str])]) -> CallbackPolicy {
        #[derive(Debug)]
        struct Fixed(Vec<(String, Vec<IpAddr>)>);
        impl HostLookup for Fixed {
            fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
                let found = self
                    .0
                    .iter()
                    .find(|(h, _)| *h == host)
                    .map(|(_, a)| a.clone());
                Box::pin(async move { found.ok_or_else(|| std::io::Error::other("no such host")) })
            }
        }
        let mut config =
            ray_core::config::profile_defaults(ray_core::config::Profile::Tiny).async_queue;
        config.callback_allow_private_network = allow_private;
        config.callback_allowed_hosts = hosts.iter().map(|h| h.to_string()).collect();
        let answers = answers
            .iter()
            .map(|(h, a)| {
                (
                    h.to_string(),
                    a.iter().map(|ip| ip.parse().unwrap()).collect(),
                )
            })
            .collect();
        CallbackPolicy::new(&config, Arc::new(Fixed(answers)))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn public_and_private_addresses() {
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public_address(ip(public)), "{public} is public");
        }
        for private in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "2001:10::1",
            "2002:7f00:1::1",
            "3fff::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(!is_public_address(ip(private)), "{private} is not public");
        }
    }

    #[test]
    fn url_form_rules_name_the_problem() {
        for (url, problem) in [
            ("ftp://h.example/x", "http or https"),
            ("/relative", "absolute"),
            ("http://user:pw@h.example/", "credentials"),
            ("http://h.example/#frag", "fragment"),
            ("http://h.example/a b", "whitespace"),
            ("http://h.example/\u{7}", "whitespace or control"),
        ] {
            let error = parse_callback_url(url).unwrap_err();
            assert!(error.message().starts_with("callbackUrl:"), "{error}");
            assert!(error.message().contains(problem), "{url}: {error}");
        }
        let long = format!("http://h.example/{}", "a".repeat(2_100));
        assert!(
            parse_callback_url(&long)
                .unwrap_err()
                .message()
                .contains("2048")
        );
        assert!(parse_callback_url("http://h.example:8080/hook?x=1").is_ok());
        if !cfg!(feature = "tls") {
            let error = parse_callback_url("https://h.example/").unwrap_err();
            assert!(error.message().contains("tls"), "{error}");
        }
    }

    #[tokio::test]
    async fn private_targets_are_refused_unless_allowed() {
        let strict = policy(
            false,
            &["hooks.internal", "*.corp.example"],
            &[
                ("public.example", &["93.184.216.34"]),
                ("mixed.example", &["93.184.216.34", "10.0.0.5"]),
                ("hooks.internal", &["10.0.0.9"]),
                ("a.corp.example", &["192.168.0.2"]),
                ("corp.example", &["192.168.0.3"]),
            ],
        );
        assert!(strict.check("http://public.example/hook").await.is_ok());
        for (url, expect) in [
            ("http://127.0.0.1:9000/", "not a public address"),
            ("http://[::1]/", "not a public address"),
            ("http://0x7f.1/", "not a public address"),
            ("http://169.254.169.254/latest", "not a public address"),
            ("http://mixed.example/", "10.0.0.5"),
            ("http://corp.example/", "192.168.0.3"),
            ("http://unknown.example/", "cannot resolve"),
        ] {
            let error = strict.check(url).await.unwrap_err();
            assert!(error.message().contains(expect), "{url}: {error}");
        }
        // Allowed hosts skip the address check; `*.suffix` needs one more label.
        assert!(strict.check("http://hooks.internal/x").await.is_ok());
        assert!(strict.check("http://HOOKS.internal./x").await.is_ok());
        assert!(strict.check("http://a.corp.example/x").await.is_ok());

        let open = policy(true, &[], &[("mixed.example", &["10.0.0.5"])]);
        assert!(open.check("http://127.0.0.1:9000/").await.is_ok());
        assert!(open.check("http://mixed.example/").await.is_ok());
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_that_turned_private() {
        let strict = policy(false, &[], &[("rebind.example", &["127.0.0.1"])]);
        let resolver = GuardedResolver { policy: strict };
        let error = match reqwest::dns::Resolve::resolve(
            &resolver,
            "rebind.example".parse().unwrap(),
        )
        .await
        {
            Ok(_) => panic!("a private answer must be refused"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("127.0.0.1"), "{error}");
    }
}
