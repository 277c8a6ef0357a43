//! Fixed-window rate limiting with a bounded key table.
//!
//! Each client key gets a window of `windowMs` that opens with its first request and allows
//! `maxRequests`. The table holds at most `maxKeys` live windows. When it is full, expired
//! windows are pruned; if it is still full, new clients share one overflow window with the same
//! allowance instead of getting a window each. Clients already in the table are never affected
//! by the table being full, memory stays bounded, and a flood of new addresses can exhaust
//! only the overflow window.
//!
//! [`RateLimiter`] owns the rules every store shares (the client key, the allowance, the
//! headers' figures, the `/health` view); a [`RateLimitStore`] only counts requests in
//! windows. [`MemoryRateLimitStore`], the default, reads Tokio's clock, so a test that pauses
//! time (`#[tokio::test(start_paused = true)]`) moves windows by advancing it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use ray_core::config::{RateLimitConfig, RateLimitKeyStrategy};
use ray_core::wire::RateLimitHealth;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// Key-table fill ratio reported as pressure.
pub const PRESSURE_THRESHOLD: f64 = 0.9;

/// What a store answers for one counted request: the window's count including it, and how
/// long until the window resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCount {
    /// Requests counted in the window, this one included.
    pub count: u32,
    /// Time left until the window resets.
    pub reset_in: Duration,
}

/// Where the rate limiter's windows are kept.
///
/// One call per limited request; an implementation shared by several gateways counts every
/// gateway's requests in the same window.
pub trait RateLimitStore: Send + Sync + fmt::Debug + 'static {
    /// Counts one request for `key` in its window (opening one when it has none or its window
    /// has expired) and answers the window's count.
    fn hit(&self, key: &str) -> WindowCount;

    /// Keys with a live window now.
    fn active_keys(&self) -> usize;

    /// Requests counted against a shared overflow window since start (the key table was
    /// full); 0 for a store without one.
    fn overflowed(&self) -> u64;
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

/// The rate limiter of a [`Runtime`](crate::Runtime) (`rateLimit`), over a
/// [`RateLimitStore`]. Reach it with [`Runtime::rate_limiter`](crate::Runtime::rate_limiter).
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    store: Arc<dyn RateLimitStore>,
    rejected: AtomicU64,
}

impl RateLimiter {
    /// A limiter for the `rateLimit` section, counting in `store`.
    pub fn new(config: RateLimitConfig, store: Arc<dyn RateLimitStore>) -> RateLimiter {
        RateLimiter {
            config,
            store,
            rejected: AtomicU64::new(0),
        }
    }

    /// A limiter for the `rateLimit` section with the default in-memory store.
    pub fn in_memory(config: RateLimitConfig) -> RateLimiter {
        let store = Arc::new(MemoryRateLimitStore::new(&config));
        RateLimiter::new(config, store)
    }

    /// The client key for a request under the configured strategy: the client's address, the
    /// SHA-256 of its API key, or both. A token itself is never part of a key.
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
        let max = self.config.max_requests;
        let WindowCount { count, reset_in } = self.store.hit(key);
        let allowed = count <= max;
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
        self.store.overflowed()
    }

    /// Keys with a live window now.
    pub fn active_keys(&self) -> usize {
        self.store.active_keys()
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

#[derive(Debug, Clone, Copy)]
struct Window {
    opened: Instant,
    count: u32,
}

#[derive(Debug, Default)]
struct Table {
    windows: HashMap<String, Window>,
    overflow: Option<Window>,
}

/// The default [`RateLimitStore`]: a table of at most `maxKeys` windows in memory, one lock,
/// on Tokio's clock.
#[derive(Debug)]
pub struct MemoryRateLimitStore {
    window: Duration,
    max_keys: usize,
    table: Mutex<Table>,
    overflowed: AtomicU64,
}

impl MemoryRateLimitStore {
    /// A store with the window length and key-table bound of `config`.
    pub fn new(config: &RateLimitConfig) -> MemoryRateLimitStore {
        MemoryRateLimitStore {
            window: Duration::from_millis(config.window_ms.max(1)),
            max_keys: config.max_keys as usize,
            table: Mutex::new(Table::default()),
            overflowed: AtomicU64::new(0),
        }
    }

    fn hit_at(&self, key: &str, now: Instant) -> WindowCount {
        let window_length = self.window;
        let max_keys = self.max_keys;
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
        WindowCount {
            count: window.count,
            reset_in: window_length.saturating_sub(now.duration_since(window.opened)),
        }
    }
}

impl RateLimitStore for MemoryRateLimitStore {
    fn hit(&self, key: &str) -> WindowCount {
        self.hit_at(key, Instant::now())
    }

    fn active_keys(&self) -> usize {
        let now = Instant::now();
        let table = self.table.lock();
        table
            .windows
            .values()
            .filter(|w| now.duration_since(w.opened) < self.window)
            .count()
    }

    fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
