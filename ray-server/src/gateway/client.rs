//! The client's address, as the rate limiter and fair share key it: the peer, or behind a
//! trusted proxy the address it forwarded. The limiter itself is the runtime's
//! ([`ray_runtime::RateLimiter`], reached through `Runtime::rate_limiter`); the gateway checks
//! each limited route with it at the edge.

use std::net::IpAddr;

use hyper::header::HeaderMap;

/// The client address: the peer, or with `trust_proxy_headers` and a private, loopback,
/// link-local or CGNAT peer, the right-most public address of `X-Forwarded-For` (else its
/// right-most address).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trust_proxy_headers: bool) -> IpAddr {
    let peer = canonical(peer);
    if !trust_proxy_headers || !is_internal(peer) {
        return peer;
    }
    let values: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.len() <= 4_096)
        .collect();
    let start = values.len().saturating_sub(4);
    let addresses: Vec<IpAddr> = values[start..]
        .iter()
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.trim().parse::<IpAddr>().ok())
        .map(canonical)
        .collect();
    let addresses = &addresses[addresses.len().saturating_sub(32)..];
    addresses
        .iter()
        .rev()
        .find(|ip| !is_internal(**ip))
        .or(addresses.last())
        .copied()
        .unwrap_or(peer)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Private, loopback, link-local, CGNAT or unique-local.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_internal_peers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.7, 10.0.0.2"),
        );
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let public: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &headers, true),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(proxy, &headers, false), proxy);
        assert_eq!(client_ip(public, &headers, true), public);
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(client_ip(mapped, &HeaderMap::new(), true), proxy);
    }
}
