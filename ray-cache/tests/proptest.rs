//! Property tests: random operation sequences against random bounds, checked after every
//! operation against a shadow model of what the cache reported storing.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use ray_cache::{Cache, CacheBounds, InsertOutcome};

/// Keys are drawn from `0..KEYS`, so that keys are reused, replaced and removed often.
const KEYS: u8 = 16;

/// A stored value: a unique id (which insert it came from) and its weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Value {
    id: u64,
    weight: u64,
}

#[derive(Clone, Debug)]
enum Op {
    Insert { key: u8, weight: u64 },
    Get { key: u8 },
    Peek { key: u8 },
    Remove { key: u8 },
    Advance { millis: u64 },
    Purge,
    Clear,
}

/// What the model knows of a key: the latest value the cache said it stored, and when.
#[derive(Clone, Copy, Debug)]
struct Stored {
    value: Value,
    at: Instant,
}

fn bounds() -> impl Strategy<Value = CacheBounds> {
    let ttl = prop_oneof![
        1 => Just(None),
        1 => Just(Some(Duration::ZERO)),
        4 => (1..100u64).prop_map(|millis| Some(Duration::from_millis(millis))),
    ];
    (
        prop_oneof![1 => Just(0usize), 20 => 1..12usize],
        0..200u64,
        ttl,
    )
        .prop_map(|(max_entries, max_bytes, ttl)| CacheBounds {
            max_entries,
            max_bytes,
            ttl,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let weight = prop_oneof![8 => 0..60u64, 1 => 150..400u64];
    prop_oneof![
        8 => (0..KEYS, weight).prop_map(|(key, weight)| Op::Insert { key, weight }),
        8 => (0..KEYS).prop_map(|key| Op::Get { key }),
        2 => (0..KEYS).prop_map(|key| Op::Peek { key }),
        3 => (0..KEYS).prop_map(|key| Op::Remove { key }),
        4 => (0..40u64).prop_map(|millis| Op::Advance { millis }),
        1 => Just(Op::Purge),
        1 => Just(Op::Clear),
    ]
}

/// Runs one sequence, checking the cache after every operation.
struct Harness {
    cache: Cache<u8, Value>,
    bounds: CacheBounds,
    /// No entry expires at or before `base`: the clock starts a second after it, so
    /// `peek(key, base)` shows every entry held, expired or not.
    base: Instant,
    now: Instant,
    /// The latest `now` passed to a `&mut self` method, which `remove` judges expiry by.
    latest: Instant,
    model: HashMap<u8, Stored>,
    next_id: u64,
    evicted: u64,
    gets: u64,
    hits: u64,
    insertions: u64,
    replacements: u64,
    rejected: u64,
}

impl Harness {
    fn new(bounds: CacheBounds) -> Self {
        let base = Instant::now();
        let now = base + Duration::from_secs(1);
        Self {
            cache: Cache::new(bounds.clone(), |_key, value: &Value| value.weight),
            bounds,
            base,
            now,
            latest: now,
            model: HashMap::new(),
            next_id: 0,
            evicted: 0,
            gets: 0,
            hits: 0,
            insertions: 0,
            replacements: 0,
            rejected: 0,
        }
    }

    /// Whether the model's entry is still fresh at `at`.
    fn fresh(&self, stored: &Stored, at: Instant) -> bool {
        self.bounds.ttl.is_none_or(|ttl| at < stored.at + ttl)
    }

    /// Whether the cache holds the key at all, expired or not.
    fn held(&self, key: u8) -> bool {
        self.cache.peek(&key, self.base).is_some()
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Insert { key, weight } => self.insert(key, weight)?,
            Op::Get { key } => self.get(key)?,
            Op::Peek { key } => {
                let seen = self.cache.peek(&key, self.now).copied();
                if let Some(value) = seen {
                    let stored = self.model.get(&key).copied();
                    prop_assert_eq!(stored.map(|s| s.value), Some(value));
                    prop_assert!(stored.is_some_and(|s| self.fresh(&s, self.now)));
                }
            }
            Op::Remove { key } => self.remove(key)?,
            Op::Advance { millis } => self.now += Duration::from_millis(millis),
            Op::Purge => {
                let expired_before = (0..KEYS)
                    .filter(|&key| self.held(key))
                    .filter(|key| {
                        self.model
                            .get(key)
                            .is_some_and(|s| !self.fresh(s, self.now))
                    })
                    .count();
                let purged = self.cache.purge_expired(self.now);
                self.latest = self.now;
                prop_assert_eq!(purged, expired_before);
                for key in 0..KEYS {
                    if self.held(key) {
                        let stored = self.model.get(&key);
                        prop_assert!(stored.is_some_and(|s| self.fresh(s, self.now)));
                    }
                }
            }
            Op::Clear => {
                self.cache.clear();
                self.model.clear();
                prop_assert!(self.cache.is_empty());
            }
        }
        self.check_invariants()
    }

    fn insert(&mut self, key: u8, weight: u64) -> Result<(), TestCaseError> {
        let value = Value {
            id: self.next_id,
            weight,
        };
        self.next_id += 1;
        let replaces_live = self.held(key)
            && self
                .model
                .get(&key)
                .is_some_and(|s| self.fresh(s, self.now));
        let outcome = self.cache.insert(key, value, self.now);
        self.latest = self.now;
        if weight > self.bounds.max_bytes || self.bounds.max_entries == 0 {
            prop_assert_eq!(outcome, InsertOutcome::RejectedOversized);
            self.rejected += 1;
            self.model.remove(&key);
            prop_assert!(!self.held(key));
            return Ok(());
        }
        match outcome {
            InsertOutcome::Stored { evicted } => {
                prop_assert!(!replaces_live, "a live entry was replaced");
                self.insertions += 1;
                self.evicted += evicted as u64;
            }
            InsertOutcome::Replaced { evicted } => {
                prop_assert!(replaces_live, "nothing live was replaced");
                self.replacements += 1;
                self.evicted += evicted as u64;
            }
            other => prop_assert!(false, "unexpected outcome {:?}", other),
        }
        self.model.insert(
            key,
            Stored {
                value,
                at: self.now,
            },
        );
        prop_assert_eq!(self.cache.peek(&key, self.base), Some(&value));
        Ok(())
    }

    fn get(&mut self, key: u8) -> Result<(), TestCaseError> {
        let peeked = self.cache.peek(&key, self.now).copied();
        let fresh_and_held = self.held(key)
            && self
                .model
                .get(&key)
                .is_some_and(|s| self.fresh(s, self.now));
        let got = self.cache.get(&key, self.now);
        self.latest = self.now;
        self.gets += 1;
        prop_assert_eq!(got, peeked, "get and peek disagree");
        prop_assert_eq!(got.is_some(), fresh_and_held);
        if let Some(value) = got {
            self.hits += 1;
            prop_assert_eq!(self.model.get(&key).map(|s| s.value), Some(value));
        }
        Ok(())
    }

    fn remove(&mut self, key: u8) -> Result<(), TestCaseError> {
        let fresh_and_held = self.held(key)
            && self
                .model
                .get(&key)
                .is_some_and(|s| self.fresh(s, self.latest));
        let removed = self.cache.remove(&key);
        let stored = self.model.remove(&key);
        prop_assert_eq!(removed.is_some(), fresh_and_held);
        if let Some(value) = removed {
            prop_assert_eq!(stored.map(|s| s.value), Some(value));
        }
        prop_assert!(!self.held(key));
        Ok(())
    }

    fn check_invariants(&self) -> Result<(), TestCaseError> {
        let len = self.cache.len();
        let bytes = self.cache.bytes();
        prop_assert!(len <= self.bounds.max_entries, "{} entries", len);
        prop_assert!(bytes <= self.bounds.max_bytes, "{} bytes", bytes);
        prop_assert_eq!(self.cache.is_empty(), len == 0);

        // Everything held is exactly what the model says was stored last, and the weights of
        // what is held add up to `bytes()`.
        let mut held = 0;
        let mut weight = 0;
        for key in 0..KEYS {
            if let Some(value) = self.cache.peek(&key, self.base) {
                held += 1;
                weight += value.weight;
                prop_assert_eq!(self.model.get(&key).map(|s| s.value), Some(*value));
            }
        }
        prop_assert_eq!(held, len);
        prop_assert_eq!(weight, bytes);

        let stats = self.cache.stats();
        prop_assert_eq!(stats.entries, len as u64);
        prop_assert_eq!(stats.bytes, bytes);
        prop_assert_eq!(stats.hits, self.hits);
        prop_assert_eq!(stats.misses, self.gets - self.hits);
        prop_assert_eq!(stats.insertions, self.insertions);
        prop_assert_eq!(stats.replacements, self.replacements);
        prop_assert_eq!(stats.rejected_oversized, self.rejected);
        prop_assert_eq!(stats.evictions(), self.evicted);
        Ok(())
    }
}

/// `default`, or `PROPTEST_CASES` for a longer run (docs/testing.md).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    // A few thousand sequences of up to 200 operations: about four seconds in debug.
    #![proptest_config(ProptestConfig {
        cases: cases(2048),
        ..ProptestConfig::default()
    })]

    #[test]
    fn bounds_and_model_hold_after_every_operation(
        bounds in bounds(),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let mut harness = Harness::new(bounds);
        for op in &ops {
            harness.apply(op)?;
        }
    }

    #[test]
    fn large_caches_hold_their_bounds_under_long_churn(
        max_entries in 1..64usize,
        max_bytes in 1..2_000u64,
        weights in proptest::collection::vec(0..100u64, 200..1_000),
    ) {
        let bounds = CacheBounds { max_entries, max_bytes, ttl: None };
        let mut cache = Cache::new(bounds, |_key: &u32, weight: &u64| *weight);
        let now = Instant::now();
        let mut evicted = 0;
        for (key, weight) in (0u32..).zip(weights) {
            let key = key % 97;
            if cache.get(&key, now).is_none() {
                evicted += cache.insert(key, weight, now).evicted() as u64;
            }
            prop_assert!(cache.len() <= max_entries);
            prop_assert!(cache.bytes() <= max_bytes);
        }
        prop_assert_eq!(cache.stats().evictions(), evicted);
    }
}
