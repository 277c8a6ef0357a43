//! Addresses and names in a config: http(s) URLs, loopback and wildcard hosts, environment
//! variable names, header names and callback host patterns.

use std::net::IpAddr;

/// The parts of an absolute http(s) URL that validation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedUrl {
    /// `http` or `https`.
    pub scheme: String,
    /// Host without brackets, lower-cased.
    pub host: String,
    /// Port, defaulted from the scheme.
    pub port: u16,
    /// Path, `/` or empty when absent.
    pub path: String,
}

impl ParsedUrl {
    /// Parses an absolute http(s) URL with no credentials, query or fragment.
    pub fn parse(url: &str) -> Result<ParsedUrl, &'static str> {
        if url.len() > 2_048 {
            return Err("must be at most 2048 chars");
        }
        if url.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
            return Err("must not contain whitespace or control characters");
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("must be an absolute http or https URL")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err("must use http or https"),
        };
        if rest.contains('?') || rest.contains('#') {
            return Err("must not have a query or fragment");
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err("must not contain credentials");
        }
        if authority.is_empty() {
            return Err("must have a host");
        }
        let (host, port) = if let Some(after) = authority.strip_prefix('[') {
            let (host, tail) = after
                .split_once(']')
                .ok_or("has an unclosed IPv6 bracket")?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err("has something other than an IPv6 address in brackets");
            }
            let port = match tail.strip_prefix(':') {
                Some(p) => Some(p),
                None if tail.is_empty() => None,
                None => return Err("has garbage after the IPv6 address"),
            };
            (host.to_string(), port)
        } else {
            let (host, port) = match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            if host.contains([':', '[', ']']) {
                return Err("must put an IPv6 address in brackets");
            }
            (host.to_string(), port)
        };
        if host.is_empty() {
            return Err("must have a host");
        }
        // Digits only (no sign), 1 to 65535, as the schema's pattern says.
        let port = match port {
            Some(p) => Some(p)
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p > 0)
                .ok_or("has an invalid port (1 to 65535)")?,
            None => default_port,
        };
        Ok(ParsedUrl {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            path: path.to_string(),
        })
    }
}

/// Whether a host name or address is loopback (`localhost`, `127.0.0.0/8`, `::1`).
///
/// IPv6 loopback may be written in any hex form (`::1`, `0:0:0:0:0:0:0:1`, with or without
/// one pair of brackets), as the schema's pattern accepts it.
pub fn is_loopback_host(host: &str) -> bool {
    let host = unbracket(host);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        // The dotted tail (`::0.0.0.1`) is left out, as the schema leaves it out.
        Ok(IpAddr::V6(ip)) => ip.is_loopback() && !host.contains('.'),
        Err(_) => false,
    }
}

/// `host` without one enclosing pair of brackets (`[::1]` is `::1`).
pub(super) fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Whether two hosts name the same address: IP addresses compared as addresses (`::1` and
/// `0:0:0:0:0:0:0:1` are one), names case-insensitively.
pub(super) fn same_host(a: &str, b: &str) -> bool {
    let (a, b) = (unbracket(a), unbracket(b));
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.eq_ignore_ascii_case(b),
    }
}

/// `host` as written in a URL: an IPv6 address in brackets.
pub(super) fn url_host(host: &str) -> String {
    let host = unbracket(host);
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn is_wildcard(host: &str) -> bool {
    let host = unbracket(host);
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

/// Whether two bind addresses can collide on one port.
pub(super) fn binds_overlap(a: &str, b: &str) -> bool {
    if is_wildcard(a) || is_wildcard(b) {
        return true;
    }
    if is_loopback_host(a) && is_loopback_host(b) {
        // 127.0.0.1 and localhost are the same socket; 127.0.0.2 is another address, but
        // treating the whole range as one is the safe side for a single box.
        return true;
    }
    a.eq_ignore_ascii_case(b)
}

/// Whether `name` is a valid environment variable name.
pub fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
        && name.len() <= 256
}

pub(super) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `host` is an address to listen on ([`Limit::BindHost`]): an IPv4 address, an IPv6
/// address with or without one pair of brackets and no dotted tail, or a host name that is not
/// only digits and dots (`999.1.1.1` is a mistyped address, not a name).
///
/// [`Limit::BindHost`]: crate::config::Limit::BindHost
pub(super) fn is_bind_host(host: &str) -> bool {
    if host.len() > 253 {
        return false;
    }
    let bare = unbracket(host);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => bare.len() == host.len(),
        Ok(IpAddr::V6(_)) => !bare.contains('.'),
        Err(_) => {
            bare.len() == host.len()
                && is_host_name(host)
                && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        }
    }
}

/// Whether `pattern` is a host name or `*.suffix` with at least one dot-separated label.
pub fn is_allowed_host_pattern(pattern: &str) -> bool {
    is_host_name(pattern.strip_prefix("*.").unwrap_or(pattern))
}

/// Dot-separated labels of 1 to 63 letters, digits and inner hyphens, at most 253 chars.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}
