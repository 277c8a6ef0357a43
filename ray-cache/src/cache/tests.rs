//! Unit tests for `Cache`: bounds, TTL, statistics and the S3-FIFO policy.

use std::collections::VecDeque;
use std::time::Duration;

use super::*;

const SECOND: Duration = Duration::from_secs(1);

/// A cache of `u32` keys whose values are their own weight.
fn cache(max_entries: usize, max_bytes: u64, ttl: Option<Duration>) -> Cache<u32, u64> {
    let bounds = CacheBounds {
        max_entries,
        max_bytes,
        ttl,
    };
    Cache::new(bounds, |_key, weight| *weight)
}

/// Which queue a key is in, if held.
fn queue_of(cache: &Cache<u32, u64>, key: u32) -> Option<QueueKind> {
    let index = *cache.index.get(&key)?;
    cache.slab.get(index).map(|entry| entry.queue)
}

/// Misses on a key and then inserts it, as a caller of a result cache does.
fn fetch(cache: &mut Cache<u32, u64>, key: u32, now: Instant) {
    if cache.get(&key, now).is_none() {
        cache.insert(key, 1, now);
    }
}

/// Checks that the stored weights add up to `bytes()` and the bounds hold.
fn assert_consistent(cache: &Cache<u32, u64>) {
    let sum: u64 = cache
        .index
        .values()
        .filter_map(|&index| cache.slab.get(index))
        .map(|entry| entry.weight)
        .sum();
    assert_eq!(sum, cache.bytes());
    assert!(cache.len() <= cache.bounds().max_entries);
    assert!(cache.bytes() <= cache.bounds().max_bytes);
    assert_eq!(cache.stats().entries, cache.len() as u64);
    assert_eq!(cache.stats().bytes, cache.bytes());
}

#[test]
fn insert_then_get_returns_the_value() {
    let mut cache = cache(10, 1_000, None);
    let now = Instant::now();
    assert_eq!(
        cache.insert(1, 7, now),
        InsertOutcome::Stored { evicted: 0 }
    );
    assert_eq!(cache.get(&1, now), Some(7));
    assert_eq!(cache.get(&2, now), None);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.insertions), (1, 1, 1));
    assert_eq!((stats.entries, stats.bytes), (1, 7));
}

#[test]
fn replacement_swaps_the_value_and_its_weight() {
    let mut cache = cache(10, 1_000, None);
    let now = Instant::now();
    cache.insert(1, 10, now);
    cache.insert(2, 20, now);
    assert_eq!(
        cache.insert(1, 30, now),
        InsertOutcome::Replaced { evicted: 0 }
    );
    assert_eq!(cache.get(&1, now), Some(30));
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.bytes(), 50);
    let stats = cache.stats();
    assert_eq!((stats.insertions, stats.replacements), (2, 1));
    assert_consistent(&cache);
}

#[test]
fn replacement_keeps_queue_and_reuse_count() {
    let mut cache = cache(10, 1_000, None);
    let now = Instant::now();
    cache.insert(1, 1, now);
    cache.get(&1, now);
    cache.insert(1, 2, now);
    let index = cache.index[&1];
    let entry = cache.slab.get(index).map(|e| (e.queue, e.frequency));
    assert_eq!(entry, Some((QueueKind::Small, 1)));
}

#[test]
fn ttl_boundary_is_exclusive() {
    let ttl = 10 * SECOND;
    let mut cache = cache(10, 1_000, Some(ttl));
    let start = Instant::now();
    cache.insert(1, 5, start);
    assert_eq!(
        cache.peek(&1, start + ttl - Duration::from_nanos(1)),
        Some(&5)
    );
    assert_eq!(
        cache.get(&1, start + ttl - Duration::from_nanos(1)),
        Some(5)
    );
    assert_eq!(
        cache.peek(&1, start + ttl),
        None,
        "now == t + ttl is expired"
    );
    assert_eq!(cache.len(), 1, "peek leaves expired entries in place");
    assert_eq!(cache.get(&1, start + ttl), None);
    assert_eq!(cache.len(), 0, "get drops an expired entry");
    assert_eq!(cache.bytes(), 0);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.expirations), (1, 1, 1));
}

#[test]
fn replacement_restarts_the_ttl() {
    let ttl = 10 * SECOND;
    let mut cache = cache(10, 1_000, Some(ttl));
    let start = Instant::now();
    cache.insert(1, 5, start);
    cache.insert(1, 6, start + 5 * SECOND);
    assert_eq!(cache.purge_expired(start + 12 * SECOND), 0);
    assert_eq!(cache.get(&1, start + 14 * SECOND), Some(6));
    assert_eq!(cache.get(&1, start + 15 * SECOND), None);
}

#[test]
fn purge_expired_drops_only_expired_entries_in_order() {
    let mut cache = cache(10, 1_000, Some(10 * SECOND));
    let start = Instant::now();
    for key in 0..5 {
        cache.insert(key, 1, start + SECOND * key);
    }
    assert_eq!(cache.purge_expired(start + 12 * SECOND), 3);
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.stats().expirations, 3);
    assert_eq!(cache.peek(&3, start + 12 * SECOND), Some(&1));
    assert_eq!(cache.purge_expired(start + 100 * SECOND), 2);
    assert!(cache.is_empty());
    assert_consistent(&cache);
}

#[test]
fn expired_entries_make_room_before_live_ones_are_evicted() {
    let ttl = 10 * SECOND;
    let mut cache = cache(100, 200, Some(ttl));
    let start = Instant::now();
    for key in 0..20 {
        cache.insert(key, 10, start);
    }
    assert_eq!(cache.bytes(), 200);
    let outcome = cache.insert(99, 200, start + ttl);
    assert_eq!(outcome, InsertOutcome::Stored { evicted: 0 });
    let stats = cache.stats();
    assert_eq!((stats.expirations, stats.evictions()), (20, 0));
    assert_consistent(&cache);
}

#[test]
fn remove_returns_fresh_values_only() {
    let mut cache = cache(10, 1_000, Some(10 * SECOND));
    let start = Instant::now();
    cache.insert(1, 1, start);
    cache.insert(2, 2, start + 5 * SECOND);
    assert_eq!(cache.remove(&2), Some(2));
    assert_eq!(cache.remove(&2), None);
    cache.get(&3, start + 10 * SECOND);
    assert_eq!(cache.remove(&1), None, "expired by the latest time seen");
    let stats = cache.stats();
    assert_eq!((stats.removals, stats.expirations), (1, 1));
    assert!(cache.is_empty());
    assert_consistent(&cache);
}

#[test]
fn clear_drops_everything_but_keeps_counting() {
    let mut cache = cache(10, 1_000, Some(10 * SECOND));
    let now = Instant::now();
    for key in 0..5 {
        cache.insert(key, 3, now);
    }
    cache.get(&0, now);
    cache.clear();
    assert!(cache.is_empty());
    assert_eq!(cache.bytes(), 0);
    assert_eq!(cache.get(&0, now), None);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.insertions), (1, 1, 5));
    cache.insert(0, 4, now);
    assert_eq!(cache.get(&0, now), Some(4));
    assert_consistent(&cache);
}

#[test]
fn oversized_values_are_refused_and_counted() {
    let mut cache = cache(10, 100, None);
    let now = Instant::now();
    cache.insert(1, 40, now);
    assert_eq!(cache.insert(2, 101, now), InsertOutcome::RejectedOversized);
    assert_eq!(
        cache.insert(3, 100, now),
        InsertOutcome::Stored { evicted: 1 }
    );
    assert_eq!(cache.insert(3, 500, now), InsertOutcome::RejectedOversized);
    assert_eq!(cache.get(&3, now), None, "the older value is not served");
    let stats = cache.stats();
    assert_eq!((stats.rejected_oversized, stats.removals), (2, 1));
    assert!(cache.is_empty());
    assert_consistent(&cache);
}

#[test]
fn zero_entries_stores_nothing() {
    let mut cache = cache(0, 100, None);
    let now = Instant::now();
    assert_eq!(cache.insert(1, 1, now), InsertOutcome::RejectedOversized);
    assert!(cache.is_empty());
}

#[test]
fn byte_bound_holds_with_mixed_sizes() {
    let mut cache = cache(1_000, 100, None);
    let now = Instant::now();
    let weights = [10, 30, 50, 40, 1, 99, 0, 25, 25, 25, 100, 3, 60, 7];
    for (key, weight) in (0..).zip(weights) {
        assert!(cache.insert(key, weight, now).is_stored());
        assert_eq!(
            cache.peek(&key, now),
            Some(&weight),
            "the new entry is kept"
        );
        assert_consistent(&cache);
    }
    let stats = cache.stats();
    assert!(stats.evictions_bytes > 0);
    assert_eq!(stats.evictions_entries, 0);
}

#[test]
fn evictions_are_counted_by_cause() {
    let now = Instant::now();
    let mut by_entries = cache(4, 1_000, None);
    for key in 0..10 {
        by_entries.insert(key, 1, now);
    }
    let stats = by_entries.stats();
    assert_eq!((stats.evictions_entries, stats.evictions_bytes), (6, 0));

    let mut by_bytes = cache(1_000, 40, None);
    for key in 0..10 {
        by_bytes.insert(key, 10, now);
    }
    let stats = by_bytes.stats();
    assert_eq!((stats.evictions_entries, stats.evictions_bytes), (0, 6));
    assert_eq!(stats.evictions(), 6);
}

/// A textbook LRU over key order alone, to contrast with S3-FIFO.
struct Lru {
    capacity: usize,
    /// Most recently used at the back.
    order: VecDeque<u32>,
}

impl Lru {
    fn fetch(&mut self, key: u32) {
        if let Some(at) = self.order.iter().position(|&k| k == key) {
            self.order.remove(at);
        } else if self.order.len() == self.capacity {
            self.order.pop_front();
        }
        self.order.push_back(key);
    }

    fn contains(&self, key: u32) -> bool {
        self.order.contains(&key)
    }
}

#[test]
fn frequently_hit_entry_survives_a_scan_that_flushes_lru() {
    const CAPACITY: usize = 100;
    const HOT: u32 = 0;
    let mut cache = cache(CAPACITY, u64::MAX, None);
    let mut lru = Lru {
        capacity: CAPACITY,
        order: VecDeque::new(),
    };
    let now = Instant::now();
    for _ in 0..5 {
        fetch(&mut cache, HOT, now);
        lru.fetch(HOT);
    }
    // A scan of unique one-hit keys, ten times the capacity.
    for key in 1..=(10 * CAPACITY as u32) {
        fetch(&mut cache, key, now);
        lru.fetch(key);
        assert_consistent(&cache);
    }
    assert!(!lru.contains(HOT), "the scan flushes an LRU");
    assert_eq!(queue_of(&cache, HOT), Some(QueueKind::Main));
    assert_eq!(cache.get(&HOT, now), Some(1), "S3-FIFO keeps the hot entry");
}

#[test]
fn repeatedly_used_entries_survive_interleaved_scans() {
    let mut cache = cache(50, u64::MAX, None);
    let now = Instant::now();
    let mut next_unique = 1_000;
    for _round in 0..200 {
        // Ten keys reused every round, each round followed by 25 unique keys.
        for key in 0..10 {
            fetch(&mut cache, key, now);
        }
        for _ in 0..25 {
            fetch(&mut cache, next_unique, now);
            next_unique += 1;
        }
    }
    let hits_before = cache.stats().hits;
    for key in 0..10 {
        fetch(&mut cache, key, now);
    }
    assert_eq!(
        cache.stats().hits - hits_before,
        10,
        "all reused keys still held"
    );
}

#[test]
fn ghost_key_is_readmitted_to_main() {
    let mut cache = cache(10, u64::MAX, None);
    let now = Instant::now();
    for key in 0..10 {
        cache.insert(key, 1, now);
    }
    // The small queue is over its share, so key 0 (never reused) is dropped into the ghost.
    assert_eq!(
        cache.insert(10, 1, now),
        InsertOutcome::Stored { evicted: 1 }
    );
    assert_eq!(cache.peek(&0, now), None);
    assert_eq!(cache.policy.ghost_len(), 1);
    cache.insert(0, 1, now);
    assert_eq!(queue_of(&cache, 0), Some(QueueKind::Main));
    // Key 0's ghost was consumed; key 1 was dropped into the ghost to make room.
    assert_eq!(cache.policy.ghost_len(), 1);
    // Back in the main queue, it outlives a scan even without being hit.
    for key in 100..200 {
        fetch(&mut cache, key, now);
    }
    assert_eq!(cache.peek(&0, now), Some(&1));
}

#[test]
fn reused_entry_is_promoted_from_small_to_main() {
    let mut cache = cache(10, u64::MAX, None);
    let now = Instant::now();
    for key in 0..10 {
        cache.insert(key, 1, now);
    }
    cache.get(&0, now);
    cache.insert(10, 1, now);
    assert_eq!(queue_of(&cache, 0), Some(QueueKind::Main));
    assert_eq!(
        cache.peek(&1, now),
        None,
        "the first unused key was dropped"
    );
}

#[test]
fn peek_neither_counts_nor_marks_reuse() {
    let mut cache = cache(10, 100, None);
    let now = Instant::now();
    cache.insert(1, 1, now);
    assert_eq!(cache.peek(&1, now), Some(&1));
    assert_eq!(cache.peek(&2, now), None);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (0, 0));
    let index = cache.index[&1];
    assert_eq!(cache.slab.get(index).map(|e| e.frequency), Some(0));
}

#[test]
fn memory_stays_bounded_under_churn() {
    const CAPACITY: usize = 64;
    let mut cache = cache(CAPACITY, u64::MAX, Some(5 * SECOND));
    let mut now = Instant::now();
    for round in 0..20_000u32 {
        let key = round % 300;
        match round % 7 {
            0 => {
                cache.remove(&key);
            }
            1 | 2 => {
                cache.get(&key, now);
            }
            3 => now += SECOND,
            _ => {
                cache.insert(key, 1, now);
            }
        }
        let (small, main) = cache.policy.held();
        assert!(small + main <= 2 * CAPACITY + 32, "{small} + {main}");
        assert!(cache.expiry.held() <= 2 * CAPACITY + 16);
        assert!(cache.slab.slots() <= CAPACITY);
        assert!(cache.policy.ghost_len() <= CAPACITY);
    }
}

#[test]
fn cache_can_be_shared_behind_a_lock() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Cache<String, std::sync::Arc<[u8]>>>();
    assert!(format!("{:?}", cache(1, 1, None)).starts_with("Cache {"));
}
