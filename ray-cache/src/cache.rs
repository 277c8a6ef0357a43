//! The cache: an index from key to slab slot, the S3-FIFO policy, and the expiry queue.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::time::Instant;

use crate::bounds::CacheBounds;
use crate::queue::RecordQueue;
use crate::s3fifo::S3Fifo;
use crate::slab::{Entry, QueueKind, Record, Slab};
use crate::stats::{CacheStats, InsertOutcome};

/// How many expired entries an insert purges before it looks for room. Purging the rest is
/// left to eviction (which drops expired entries before live ones) and to
/// [`Cache::purge_expired`], so an insert never does unbounded work on expiry.
const INSERT_PURGE_BUDGET: usize = 8;

/// The function that weighs an entry, boxed so that `Cache` has no extra type parameter.
type Weigher<K, V> = Box<dyn Fn(&K, &V) -> u64 + Send + Sync + 'static>;

/// A bounded in-memory cache with S3-FIFO eviction, a byte bound and a TTL.
///
/// A plain single-threaded data structure: every method that changes it takes `&mut self`,
/// and callers that share it wrap it in a lock. Time is never read from the clock; every
/// method that needs it takes `now`, which callers should pass in non-decreasing order.
///
/// Values are cloned out by [`get`](Cache::get), so make `V` cheap to clone (an `Arc`).
///
/// See the [crate docs](crate) for the policy and an example.
pub struct Cache<K, V> {
    /// The limits, fixed at creation.
    bounds: CacheBounds,
    /// Weighs an entry once, when it is inserted.
    weigher: Weigher<K, V>,
    /// Key to slot in `slab`, for every entry held (expired ones included until purged).
    index: HashMap<K, usize>,
    /// The entries themselves.
    slab: Slab<K, V>,
    /// Which entry to evict next.
    policy: S3Fifo,
    /// One record per entry that can expire, in insertion order, which is expiry order
    /// because every entry has the same TTL.
    expiry: RecordQueue<Deadline>,
    /// Total weight of the entries held. Always `<= bounds.max_bytes`.
    bytes: u64,
    /// The generation for the next stored entry.
    next_generation: u64,
    /// The latest `now` passed to a method that takes `&mut self`: `remove`, which takes no
    /// time, judges expiry by it.
    latest: Option<Instant>,
    /// Counters; `entries` and `bytes` are filled in by `stats()`.
    stats: CacheStats,
}

/// When an entry expires, and which entry.
#[derive(Clone, Copy, Debug)]
struct Deadline {
    /// The first instant at which the entry is expired.
    at: Instant,
    /// The entry.
    record: Record,
}

// === impl Cache ===

impl<K: Hash + Eq + Clone, V: Clone> Cache<K, V> {
    /// An empty cache that holds `bounds`, weighing each entry with `weigher`.
    ///
    /// The weigher returns what an entry costs in bytes (key plus value); it is called once
    /// per insert and its answer is kept, so it should be cheap and need not be exact.
    pub fn new(
        bounds: CacheBounds,
        weigher: impl Fn(&K, &V) -> u64 + Send + Sync + 'static,
    ) -> Self {
        Self {
            policy: S3Fifo::new(&bounds),
            bounds,
            weigher: Box::new(weigher),
            index: HashMap::new(),
            slab: Slab::new(),
            expiry: RecordQueue::new(),
            bytes: 0,
            next_generation: 0,
            latest: None,
            stats: CacheStats::default(),
        }
    }

    /// Looks up a key, counting a hit or a miss, and marks the entry as reused.
    ///
    /// An entry whose TTL has passed at `now` is removed and counts as a miss and an
    /// expiration. O(1); a hit allocates nothing beyond cloning the value.
    pub fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        self.observe(now);
        let Some(&index) = self.index.get(key) else {
            self.stats.misses += 1;
            return None;
        };
        if let Some(entry) = self.slab.get_mut(index)
            && !entry.is_expired(now)
        {
            entry.touch();
            self.stats.hits += 1;
            return Some(entry.value.clone());
        }
        self.stats.misses += 1;
        self.index.remove(key);
        if self.detach(index).is_some() {
            self.stats.expirations += 1;
        }
        None
    }

    /// Looks up a key without counting it or marking the entry as reused.
    ///
    /// Returns nothing for an entry whose TTL has passed at `now`, but leaves it in place.
    pub fn peek(&self, key: &K, now: Instant) -> Option<&V> {
        let index = *self.index.get(key)?;
        let entry = self.slab.get(index)?;
        (!entry.is_expired(now)).then_some(&entry.value)
    }

    /// Stores a value under a key, replacing any value the key held, and evicts entries until
    /// it fits.
    ///
    /// Expired entries are dropped before any live entry is evicted. An entry that weighs
    /// more than `max_bytes` is refused, and any older entry for its key removed. A replaced
    /// entry keeps its S3-FIFO queue and reuse count but moves to that queue's tail, and its
    /// TTL restarts at `now`. O(1) amortized.
    pub fn insert(&mut self, key: K, value: V, now: Instant) -> InsertOutcome {
        self.observe(now);
        let weight = (self.weigher)(&key, &value);
        if weight > self.bounds.max_bytes || self.bounds.max_entries == 0 {
            if let Some(index) = self.index.remove(&key)
                && let Some(old) = self.detach(index)
            {
                self.count_departure(&old, now);
            }
            self.stats.rejected_oversized += 1;
            return InsertOutcome::RejectedOversized;
        }
        self.purge_some(now, INSERT_PURGE_BUDGET);

        let mut placement = None;
        if let Some(index) = self.index.remove(&key)
            && let Some(old) = self.detach(index)
        {
            if old.is_expired(now) {
                self.stats.expirations += 1;
            } else {
                placement = Some((old.queue, old.frequency));
            }
        }
        let replaced = placement.is_some();
        let evicted = self.make_room(weight, now);
        let (queue, frequency) = placement.unwrap_or_else(|| {
            if !self.policy.ghost_is_empty()
                && self.policy.take_ghost(self.index.hasher().hash_one(&key))
            {
                (QueueKind::Main, 0)
            } else {
                (QueueKind::Small, 0)
            }
        });

        let generation = self.next_generation;
        self.next_generation += 1;
        // A TTL too large to add to `now` can never pass, so such an entry never expires.
        let expires_at = self.bounds.ttl.and_then(|ttl| now.checked_add(ttl));
        let index = self.slab.insert(Entry {
            key: key.clone(),
            value,
            weight,
            expires_at,
            frequency,
            queue,
            generation,
        });
        let record = Record { index, generation };
        self.policy.push(queue, record, weight);
        if let Some(at) = expires_at {
            self.expiry.push_back(Deadline { at, record });
        }
        self.index.insert(key, index);
        self.bytes += weight;

        if replaced {
            self.stats.replacements += 1;
            InsertOutcome::Replaced { evicted }
        } else {
            self.stats.insertions += 1;
            InsertOutcome::Stored { evicted }
        }
    }

    /// Removes a key, returning its value if it was held and fresh.
    ///
    /// This takes no `now`: an entry whose TTL had passed by the latest `now` given to a
    /// `&mut self` method is removed but not returned, and counts as an expiration.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let index = self.index.remove(key)?;
        let entry = self.detach(index)?;
        let fresh = self.latest.is_none_or(|latest| !entry.is_expired(latest));
        if fresh {
            self.stats.removals += 1;
            Some(entry.value)
        } else {
            self.stats.expirations += 1;
            None
        }
    }

    /// Drops every entry whose TTL has passed at `now` and returns how many.
    ///
    /// O(1) amortized per dropped entry: it only looks at the front of the expiry queue.
    pub fn purge_expired(&mut self, now: Instant) -> usize {
        self.observe(now);
        self.purge_some(now, usize::MAX)
    }

    /// Drops every entry. The counters keep counting; nothing is counted for the drop.
    pub fn clear(&mut self) {
        self.index.clear();
        self.slab.clear();
        self.policy.clear();
        self.expiry.clear();
        self.bytes = 0;
    }

    /// How many entries are held, expired ones included until they are purged.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The total weight held, expired entries included until they are purged.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The bounds the cache was created with.
    pub fn bounds(&self) -> &CacheBounds {
        &self.bounds
    }

    /// A snapshot of the counters, with the current `entries` and `bytes`.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.index.len() as u64,
            bytes: self.bytes,
            ..self.stats
        }
    }

    /// Records the latest time seen.
    fn observe(&mut self, now: Instant) {
        if self.latest.is_none_or(|latest| now > latest) {
            self.latest = Some(now);
        }
    }

    /// Takes an entry out of the slab and the accounting, leaving stale queue records.
    ///
    /// The caller removes its key from `index` (if it has not already).
    fn detach(&mut self, index: usize) -> Option<Entry<K, V>> {
        let entry = self.slab.remove(index)?;
        self.bytes -= entry.weight;
        self.policy.forget(entry.queue, entry.weight, &self.slab);
        if entry.expires_at.is_some() {
            let slab = &self.slab;
            self.expiry
                .mark_stale(|deadline| slab.is_live(deadline.record));
        }
        Some(entry)
    }

    /// Counts an entry that left because a newer value for its key was refused.
    fn count_departure(&mut self, old: &Entry<K, V>, now: Instant) {
        if old.is_expired(now) {
            self.stats.expirations += 1;
        } else {
            self.stats.removals += 1;
        }
    }

    /// Drops up to `budget` expired entries from the front of the expiry queue.
    fn purge_some(&mut self, now: Instant, budget: usize) -> usize {
        let mut purged = 0;
        while purged < budget && self.expire_front(now) {
            purged += 1;
        }
        purged
    }

    /// Drops the entry at the front of the expiry queue if it is expired at `now`.
    fn expire_front(&mut self, now: Instant) -> bool {
        let slab = &self.slab;
        let Some(&deadline) = self
            .expiry
            .front_live(|deadline| slab.is_live(deadline.record))
        else {
            return false;
        };
        if deadline.at > now {
            return false;
        }
        // `detach` turns the front record stale; the next look at the front drops it.
        let Some(entry) = self.detach(deadline.record.index) else {
            return false;
        };
        self.index.remove(&entry.key);
        self.stats.expirations += 1;
        true
    }

    /// Drops expired entries, then evicts live ones, until an entry of `weight` fits.
    ///
    /// Returns how many live entries were evicted. Requires `weight <= max_bytes` and
    /// `max_entries > 0`, which `insert` checked.
    fn make_room(&mut self, weight: u64, now: Instant) -> usize {
        let byte_room = self.bounds.max_bytes - weight;
        let mut evicted = 0;
        loop {
            let over_entries = self.index.len() >= self.bounds.max_entries;
            let over_bytes = self.bytes > byte_room;
            if !over_entries && !over_bytes {
                return evicted;
            }
            if self.expire_front(now) {
                continue;
            }
            if !self.evict_one() {
                // Nothing is live, so both bounds hold; this is only a guard against a loop.
                return evicted;
            }
            evicted += 1;
            if over_entries {
                self.stats.evictions_entries += 1;
            } else {
                self.stats.evictions_bytes += 1;
            }
        }
    }

    /// Evicts the entry S3-FIFO chooses. Returns `false` if nothing could be evicted.
    fn evict_one(&mut self) -> bool {
        let Some(victim) = self.policy.evict(&mut self.slab) else {
            return false;
        };
        // The policy already dropped the victim's queue record, so no `forget` here.
        let Some(entry) = self.slab.remove(victim.index) else {
            return false;
        };
        self.bytes -= entry.weight;
        if entry.expires_at.is_some() {
            let slab = &self.slab;
            self.expiry
                .mark_stale(|deadline| slab.is_live(deadline.record));
        }
        self.index.remove(&entry.key);
        if victim.from == QueueKind::Small {
            let hash = self.index.hasher().hash_one(&entry.key);
            self.policy.remember_ghost(hash);
        }
        true
    }
}

impl<K, V> fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("bounds", &self.bounds)
            .field("entries", &self.index.len())
            .field("bytes", &self.bytes)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
