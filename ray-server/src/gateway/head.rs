//! Checks on the request head, before routing: the header size and count limits, the
//! request-target form and the `Host` header.
//!
//! hyper's parser runs with higher ceilings than these limits so that the gateway, not the
//! parser, refuses an oversized head: the client gets Ray's JSON error and the request is
//! counted and logged like any other.

use hyper::header::{self, HeaderMap};
use hyper::{Method, Uri};
use ray_core::{ErrorCode, RayError};

/// Longest `Host` header accepted, in bytes.
pub(crate) const MAX_HOST_BYTES: usize = 512;

/// Refuses a head of more than `max_headers` fields or more than `max_bytes` bytes (the
/// request line and the header lines as sent, with their line ends) with
/// `request_headers_too_large`.
pub(crate) fn check_size(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    max_headers: u32,
    max_bytes: u32,
) -> Result<(), RayError> {
    if headers.len() > max_headers as usize {
        return Err(RayError::new(
            ErrorCode::RequestHeadersTooLarge,
            format!(
                "The request has {} header fields; at most {max_headers} are accepted",
                headers.len()
            ),
        ));
    }
    // "METHOD target HTTP/1.1\r\n", each "name: value\r\n", and the empty line.
    let request_line = method.as_str().len() + 1 + target_len(uri) + 1 + 8 + 2;
    let header_lines: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    let total = request_line + header_lines + 2;
    if total > max_bytes as usize {
        return Err(RayError::new(
            ErrorCode::RequestHeadersTooLarge,
            format!("The request head is {total} bytes; at most {max_bytes} are accepted"),
        ));
    }
    Ok(())
}

fn target_len(uri: &Uri) -> usize {
    let scheme = uri.scheme_str().map_or(0, |scheme| scheme.len() + 3);
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let path = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    scheme + authority + path
}

/// Checks the request target and `Host`, refusing with `invalid_request`:
///
/// - the target must be a path (`/…`, not `//…`) or an absolute `http:` URL whose authority
///   equals the `Host` header;
/// - at most one `Host` header, of at most 512 bytes, holding a DNS name, an IPv4 address or a
///   bracketed IPv6 address, with an optional port 1 to 65535. A request without `Host` (as
///   HTTP/1.0 allows) is accepted.
pub(crate) fn check_target_and_host(uri: &Uri, headers: &HeaderMap) -> Result<(), RayError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(invalid("The request has more than one Host header"));
    }
    let host = match host {
        Some(value) => {
            let text = value.to_str().ok().filter(|text| is_valid_host(text));
            match text {
                Some(text) => Some(text),
                None => {
                    let shown: String = String::from_utf8_lossy(value.as_bytes())
                        .chars()
                        .take(64)
                        .collect();
                    return Err(invalid(format!("The Host header {shown:?} is not valid")));
                }
            }
        }
        None => None,
    };
    match (uri.scheme_str(), uri.authority()) {
        // Origin form: a path.
        (None, None) => {
            let path = uri.path();
            if !path.starts_with('/') {
                return Err(invalid("The request target must be a path starting with /"));
            }
            if path.starts_with("//") {
                return Err(invalid("The request target must not start with //"));
            }
        }
        // Absolute form: only plain http, for the host the request is addressed to.
        (Some(scheme), Some(authority)) => {
            if !scheme.eq_ignore_ascii_case("http") {
                return Err(invalid(format!(
                    "Absolute request targets must use http, got {scheme:?}"
                )));
            }
            let authority = authority.as_str();
            if !is_valid_host(authority) {
                return Err(invalid(
                    "The request target's authority is not a valid host",
                ));
            }
            if host.is_some_and(|host| !host.eq_ignore_ascii_case(authority)) {
                return Err(invalid(
                    "The request target's authority does not match the Host header",
                ));
            }
            if uri.path().starts_with("//") {
                return Err(invalid("The request target's path must not start with //"));
            }
        }
        // Authority form (CONNECT) or a scheme without authority.
        _ => {
            return Err(invalid(
                "The request target must be a path or an absolute http URL",
            ));
        }
    }
    Ok(())
}

fn invalid(message: impl Into<std::borrow::Cow<'static, str>>) -> RayError {
    RayError::new(ErrorCode::InvalidRequest, message)
}

/// A `Host` value: a DNS name (labels of letters, digits, `-` and `_`, at most 63 bytes each
/// and 253 in all, an optional final dot), an IPv4 address or a bracketed IPv6 address, then
/// an optional `:port` from 1 to 65535. Nothing else: no user info, path, query, fragment,
/// backslash or whitespace.
pub(crate) fn is_valid_host(value: &str) -> bool {
    if value.is_empty() || value.len() > MAX_HOST_BYTES {
        return false;
    }
    let (name, port) = if let Some(rest) = value.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            return false;
        };
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match value.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (value, None),
        }
    };
    if let Some(port) = port
        && !is_port(port)
    {
        return false;
    }
    value.starts_with('[') || is_dns_name(name)
}

fn is_port(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && text
            .parse::<u32>()
            .is_ok_and(|port| (1..=65_535).contains(&port))
}

/// Also accepts dotted IPv4 addresses, whose labels are digits.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    // Labels of 1 to 63 letters, digits, `-` or `_`, between dots: one pass over the bytes.
    let mut label = 0;
    for byte in name.bytes() {
        if byte == b'.' {
            if label == 0 {
                return false;
            }
            label = 0;
        } else if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            label += 1;
            if label > 63 {
                return false;
            }
        } else {
            return false;
        }
    }
    label > 0
}

#[cfg(test)]
mod tests {
    use hyper::header::{self, HeaderValue};

    use super::*;

    #[test]
    fn hosts() {
        for good in [
            "localhost",
            "localhost:3000",
            "ray.example.com",
            "ray.example.com.",
            "my_host-1:65535",
            "127.0.0.1",
            "10.0.0.2:8080",
            "[::1]",
            "[2001:db8::1]:443",
        ] {
            assert!(is_valid_host(good), "{good}");
        }
        for bad in [
            "",
            "ev@il/x",
            "evil.com/x",
            "a b",
            "evil.com?x",
            "evil.com#x",
            "evil\\com",
            "host:0",
            "host:65536",
            "host:",
            "host:+80",
            ":80",
            "a..b",
            "[::1",
            "[nope]",
            "[::1]x",
            "::1",
            &"a".repeat(64),
            &format!("{}.com", "a.".repeat(200)),
        ] {
            assert!(!is_valid_host(bad), "{bad:?}");
        }
    }

    /// The split-based definition the one-pass check replaced.
    fn reference_dns_name(name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    }

    proptest::proptest! {
        #[test]
        fn dns_names_match_the_reference(name in "[a-c0-9._\\-é:]{0,70}|[a.]{60,140}|a{60,66}(\\.a{0,3}){0,2}") {
            proptest::prop_assert_eq!(is_dns_name(&name), reference_dns_name(&name));
        }
    }

    fn check(target: &str, host: Option<&str>) -> Result<(), RayError> {
        let uri: Uri = target.parse().unwrap();
        let mut headers = HeaderMap::new();
        if let Some(host) = host {
            headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        check_target_and_host(&uri, &headers)
    }

    #[test]
    fn targets() {
        assert!(check("/v1/infer", Some("x")).is_ok());
        assert!(check("/livez", None).is_ok());
        assert!(check("http://ray.local/livez", Some("RAY.local")).is_ok());
        assert!(check("http://ray.local:3000/livez", None).is_ok());
        for (target, host) in [
            ("/livez", Some("ev@il/x")),
            ("//evil.com/x", Some("x")),
            ("http://other/livez", Some("ray.local")),
            ("https://ray.local/livez", Some("ray.local")),
            ("http://u@ray.local/livez", Some("ray.local")),
            ("ray.local:3000", Some("ray.local:3000")),
            ("*", Some("x")),
        ] {
            let error = check(target, host).unwrap_err();
            assert_eq!(error.code(), ErrorCode::InvalidRequest, "{target} {host:?}");
        }
    }

    mod fuzz {
        use hyper::header::{HeaderName, HeaderValue};
        use proptest::prelude::*;

        use super::*;

        fn header_map(fields: &[(String, Vec<u8>)]) -> HeaderMap {
            let mut headers = HeaderMap::new();
            for (name, value) in fields {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(value),
                ) {
                    headers.append(name, value);
                }
            }
            headers
        }

        proptest! {
            #![proptest_config(crate::fuzz_config(2_048))]

            #[test]
            fn any_host_value_is_judged_without_panicking(value in any::<String>()) {
                if is_valid_host(&value) {
                    prop_assert!(value.len() <= MAX_HOST_BYTES);
                    let forbidden = value.chars().any(|c| {
                        c.is_whitespace() || matches!(c, '@' | '/' | '?' | '#' | '\\')
                    });
                    prop_assert!(!forbidden, "{:?}", value);
                }
            }

            #[test]
            fn well_formed_hosts_are_accepted(
                labels in prop::collection::vec("[a-z0-9_]([a-z0-9_-]{0,20}[a-z0-9])?", 1..5),
                port in prop::option::of(1u32..=65_535),
            ) {
                let mut host = labels.join(".");
                if let Some(port) = port {
                    host.push_str(&format!(":{port}"));
                }
                prop_assert!(is_valid_host(&host), "{}", host);
            }

            #[test]
            fn any_target_and_headers_get_ok_or_invalid_request(
                target in any::<String>(),
                fields in prop::collection::vec(
                    ("(host|Host|x-[a-z]{1,4}|[!-~]{1,6})", prop::collection::vec(any::<u8>(), 0..40)),
                    0..6,
                ),
            ) {
                let Ok(uri) = target.parse::<Uri>() else { return Ok(()) };
                let headers = header_map(&fields);
                if let Err(error) = check_target_and_host(&uri, &headers) {
                    prop_assert_eq!(error.code(), ErrorCode::InvalidRequest);
                    prop_assert!(error.message().len() < 400, "messages stay short");
                }
            }

            #[test]
            fn the_head_size_is_the_size_on_the_wire(
                path in "/[a-z0-9/_.-]{0,60}",
                fields in prop::collection::vec(("x-[a-z]{1,10}", "[ -~]{0,80}"), 0..20),
            ) {
                let uri: Uri = path.parse().unwrap();
                let fields: Vec<(String, Vec<u8>)> = fields
                    .into_iter()
                    .map(|(n, v)| (n, v.trim().as_bytes().to_vec()))
                    .collect();
                let headers = header_map(&fields);
                let mut wire = format!("GET {path} HTTP/1.1\r\n");
                for (name, value) in &headers {
                    wire.push_str(&format!("{}: {}\r\n", name, value.to_str().unwrap()));
                }
                wire.push_str("\r\n");
                let exact = wire.len() as u32;
                prop_assert!(check_size(&Method::GET, &uri, &headers, 64, exact).is_ok());
                let error = check_size(&Method::GET, &uri, &headers, 64, exact - 1).unwrap_err();
                prop_assert_eq!(error.code(), ErrorCode::RequestHeadersTooLarge);
            }
        }
    }

    #[test]
    fn head_size_counts_the_request_line_and_every_header_line() {
        let uri: Uri = "/livez".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("x"));
        // "GET /livez HTTP/1.1\r\n" is 21 bytes, "host: x\r\n" 9, the empty line 2.
        assert!(check_size(&Method::GET, &uri, &headers, 64, 32).is_ok());
        let error = check_size(&Method::GET, &uri, &headers, 64, 31).unwrap_err();
        assert_eq!(error.code(), ErrorCode::RequestHeadersTooLarge);
        assert!(check_size(&Method::GET, &uri, &headers, 0, 1_000).is_err());
    }
}
