//! Fixed-window rate limiting with a bounded key table.
//!
//! Each client key gets a window of `windowMs` that opens with its first request and allows
//! `maxRequests`. The table holds at most `maxKeys` live windows. When it is full, expired
//! windows are pruned; if it is still full, new clients share one overflow window with the same
//! allowance instead of getting a window each. Clients already in the table are never affected
//! by the table being full, memory stays bounded, and a flood of new addresses can exhaust
//! only the overflow window.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::header::HeaderMap;
use parking_lot::Mutex;
use ray_core::config::{RateLimitConfig, RateLimitKeyStrategy};
use ray_core::wire::RateLimitHealth;
use sha2::{Digest, Sha256};

/// Key-table fill ratio reported as pressure.
pub const PRESSURE_THRESHOLD: f64 = 0.9;

#[derive(Debug, Clone, Copy)]
struct Window {
    opened: Instant,
    count: u32,
}

/// The outcome of one check, with what the `X-RateLimit-*` headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// `maxRequests`.
    pub limit: u32,
    /// Requests left in the window.
    pub remaining: u32,
    /// When the window resets, in Unix seconds (rounded up).
    pub reset_epoch_secs: u64,
    /// Seconds until the window resets (at least 1).
    pub retry_after_secs: u32,
}

/// A fixed-window limiter.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    window: Duration,
    table: Mutex<Table>,
    rejected: AtomicU64,
    overflowed: AtomicU64,
}

#[derive(Debug, Default)]
struct Table {
    windows: HashMap<String, Window>,
    overflow: Option<Window>,
}

impl RateLimiter {
    /// A limiter for the `rateLimit` section.
    pub fn new(config: RateLimitConfig) -> RateLimiter {
        RateLimiter {
            window: Duration::from_millis(config.window_ms.max(1)),
            config,
            table: Mutex::new(Table::default()),
            rejected: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
        }
    }

    /// The client key for a request under the configured strategy.
    pub fn key(&self, client_ip: &str, token: Option<&str>) -> String {
        let ip = || format!("ip:{client_ip}");
        let hashed = |token: &str| {
            let digest = Sha256::digest(token.as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            format!("api-key-sha256:{hex}")
        };
        match (self.config.key_strategy, token) {
            (RateLimitKeyStrategy::Ip, _) | (_, None) => ip(),
            (RateLimitKeyStrategy::ApiKey, Some(token)) => hashed(token),
            (RateLimitKeyStrategy::IpApiKey, Some(token)) => {
                format!("{}:ip:{client_ip}", hashed(token))
            }
        }
    }

    /// Counts one request for `key`.
    pub fn check(&self, key: &str) -> Decision {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Decision {
        let max = self.config.max_requests;
        let max_keys = self.config.max_keys as usize;
        let window_length = self.window;
        let mut table = self.table.lock();
        let expired = |w: &Window| now.duration_since(w.opened) >= window_length;
        let known = table.windows.contains_key(key);
        if !known && table.windows.len() >= max_keys {
            table.windows.retain(|_, w| !expired(w));
        }
        let window = if known || table.windows.len() < max_keys {
            table.windows.entry(key.to_string()).or_insert(Window {
                opened: now,
                count: 0,
            })
        } else {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            table.overflow.get_or_insert(Window {
                opened: now,
                count: 0,
            })
        };
        if expired(window) {
            *window = Window {
                opened: now,
                count: 0,
            };
        }
        window.count = window.count.saturating_add(1);
        let count = window.count;
        let allowed = count <= max;
        let reset_in = window_length.saturating_sub(now.duration_since(window.opened));
        drop(table);
        if !allowed {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        let reset_epoch = SystemTime::now()
            .checked_add(reset_in)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
            .unwrap_or_default();
        Decision {
            allowed,
            limit: max,
            remaining: max.saturating_sub(count),
            reset_epoch_secs: reset_epoch,
            retry_after_secs: (reset_in.as_millis().div_ceil(1000) as u32).max(1),
        }
    }

    /// Requests refused since start.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Requests counted against the shared overflow window since start.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Windows currently tracked (expired ones included until pruned).
    pub fn active_keys(&self) -> usize {
        let now = Instant::now();
        let table = self.table.lock();
        table
            .windows
            .values()
            .filter(|w| now.duration_since(w.opened) < self.window)
            .count()
    }

    /// The `/health` view.
    pub fn health(&self) -> RateLimitHealth {
        let active = self.active_keys() as u32;
        let ratio = f64::from(active) / f64::from(self.config.max_keys.max(1));
        RateLimitHealth {
            enabled: self.config.enabled,
            degraded: ratio >= PRESSURE_THRESHOLD,
            active_keys: active,
            max_keys: self.config.max_keys,
            active_keys_ratio: ratio,
            pressure_threshold: PRESSURE_THRESHOLD,
            window_ms: self.config.window_ms,
            max_requests: self.config.max_requests,
            key_strategy: match self.config.key_strategy {
                RateLimitKeyStrategy::Ip => "ip",
                RateLimitKeyStrategy::ApiKey => "api-key",
                RateLimitKeyStrategy::IpApiKey => "ip+api-key",
            }
            .into(),
            trust_proxy_headers: self.config.trust_proxy_headers,
        }
    }
}

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

    fn limiter(max_requests: u32, max_keys: u32) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            enabled: true,
            window_ms: 1_000,
            max_requests,
            max_keys,
            key_strategy: RateLimitKeyStrategy::Ip,
            trust_proxy_headers: false,
        })
    }

    #[test]
    fn allows_max_requests_per_window() {
        let limiter = limiter(2, 10);
        let now = Instant::now();
        assert!(limiter.check_at("a", now).allowed);
        let second = limiter.check_at("a", now);
        assert!(second.allowed);
        assert_eq!(second.remaining, 0);
        let third = limiter.check_at("a", now);
        assert!(!third.allowed);
        assert_eq!(third.retry_after_secs, 1);
        assert!(limiter.check_at("b", now).allowed, "keys are independent");
        assert!(
            limiter.check_at("a", now + Duration::from_secs(1)).allowed,
            "window reset"
        );
    }

    #[test]
    fn a_full_table_sends_new_clients_to_the_overflow_window() {
        let limiter = limiter(1, 2);
        let now = Instant::now();
        assert!(limiter.check_at("a", now).allowed);
        assert!(limiter.check_at("b", now).allowed);
        assert!(limiter.check_at("c", now).allowed, "first overflow request");
        assert!(
            !limiter.check_at("d", now).allowed,
            "the overflow window is shared"
        );
        assert!(
            !limiter.check_at("a", now).allowed,
            "a's own window is unaffected"
        );
        assert_eq!(limiter.active_keys(), 2);
        assert_eq!(limiter.overflowed(), 2);
        // Once windows expire, new keys get their own again.
        assert!(limiter.check_at("e", now + Duration::from_secs(2)).allowed);
    }

    #[test]
    fn keys_follow_the_strategy() {
        let mut config = limiter(1, 1).config;
        config.key_strategy = RateLimitKeyStrategy::IpApiKey;
        let limiter = RateLimiter::new(config);
        assert_eq!(limiter.key("1.2.3.4", None), "ip:1.2.3.4");
        let key = limiter.key("1.2.3.4", Some("k"));
        assert!(key.starts_with("api-key-sha256:") && key.ends_with(":ip:1.2.3.4"));
        assert!(!key.contains(":k:"), "the token itself is never a key");
    }

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
