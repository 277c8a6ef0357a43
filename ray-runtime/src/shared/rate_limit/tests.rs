use super::*;

fn limiter(max_requests: u32, max_keys: u32) -> RateLimiter {
    RateLimiter::in_memory(RateLimitConfig {
        enabled: true,
        window_ms: 1_000,
        max_requests,
        max_keys,
        key_strategy: RateLimitKeyStrategy::Ip,
        trust_proxy_headers: false,
    })
}

#[tokio::test(start_paused = true)]
async fn allows_max_requests_per_window() {
    let limiter = limiter(2, 10);
    assert!(limiter.check("a").allowed);
    let second = limiter.check("a");
    assert!(second.allowed);
    assert_eq!(second.remaining, 0);
    let third = limiter.check("a");
    assert!(!third.allowed);
    assert_eq!(third.retry_after_secs, 1);
    assert_eq!(limiter.rejected(), 1);
    assert!(limiter.check("b").allowed, "keys are independent");
    tokio::time::advance(Duration::from_millis(999)).await;
    assert!(!limiter.check("a").allowed, "the window is still open");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(limiter.check("a").allowed, "window reset");
}

#[tokio::test(start_paused = true)]
async fn a_full_table_sends_new_clients_to_the_overflow_window() {
    let limiter = limiter(1, 2);
    assert!(limiter.check("a").allowed);
    assert!(limiter.check("b").allowed);
    assert!(limiter.check("c").allowed, "first overflow request");
    assert!(!limiter.check("d").allowed, "the overflow window is shared");
    assert!(!limiter.check("a").allowed, "a's own window is unaffected");
    assert_eq!(limiter.active_keys(), 2);
    assert_eq!(limiter.overflowed(), 2);
    assert!(limiter.health().degraded, "a full table is pressure");
    // Once windows expire, new keys get their own again.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(limiter.active_keys(), 0);
    assert!(limiter.check("e").allowed);
    assert_eq!(limiter.overflowed(), 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_counts_down_with_the_clock() {
    let limiter = limiter(1, 10);
    assert!(limiter.check("a").allowed);
    tokio::time::advance(Duration::from_millis(400)).await;
    let refused = limiter.check("a");
    assert!(!refused.allowed);
    assert_eq!(refused.retry_after_secs, 1, "600 ms left rounds up to 1 s");
}

#[test]
fn keys_follow_the_strategy() {
    let mut config = limiter(1, 1).config;
    config.key_strategy = RateLimitKeyStrategy::IpApiKey;
    let limiter = RateLimiter::in_memory(config);
    assert_eq!(limiter.key("1.2.3.4", None), "ip:1.2.3.4");
    let key = limiter.key("1.2.3.4", Some("k"));
    assert!(key.starts_with("api-key-sha256:") && key.ends_with(":ip:1.2.3.4"));
    assert!(!key.contains(":k:"), "the token itself is never a key");
}

/// A store of a cluster's own shape: the limiter keeps its rules over any store.
#[derive(Debug, Default)]
struct Counting(Mutex<HashMap<String, u32>>);

impl RateLimitStore for Counting {
    fn hit(&self, key: &str) -> WindowCount {
        let mut counts = self.0.lock();
        let count = counts.entry(key.to_string()).or_default();
        *count += 1;
        WindowCount {
            count: *count,
            reset_in: Duration::from_millis(2_500),
        }
    }
    fn active_keys(&self) -> usize {
        self.0.lock().len()
    }
    fn overflowed(&self) -> u64 {
        0
    }
}

#[test]
fn the_rules_hold_over_another_store() {
    let config = limiter(1, 4).config;
    let limiter = RateLimiter::new(config, Arc::new(Counting::default()));
    assert!(limiter.check("x").allowed);
    let refused = limiter.check("x");
    assert!(!refused.allowed);
    assert_eq!(refused.retry_after_secs, 3);
    assert_eq!(refused.remaining, 0);
    assert_eq!(limiter.health().active_keys, 1);
}
