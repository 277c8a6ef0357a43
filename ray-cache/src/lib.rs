//! A bounded in-memory result cache for Ray.
//!
//! `ray-cache` keeps recent results so that a repeated request is answered without running the
//! model again. It is generic over key and value and knows nothing about prompts, providers or
//! HTTP; `ray-runtime` decides what to key on and wraps the cache in a lock. It holds three
//! bounds after every method returns: at most `max_entries` entries, at most `max_bytes` of
//! total weight, and no entry returned once its TTL has passed.
//!
//! [`Cache`] is the cache: a plain single-threaded data structure whose methods take
//! `&mut self` and an explicit `now: Instant`, so that it never reads the clock and tests can
//! move time by hand. A weigher given at creation says what each entry costs in bytes.
//!
//! [`CacheBounds`] holds the three bounds. [`InsertOutcome`] says what an insert did: stored,
//! replaced, or refused because the value could never fit. [`CacheStats`] counts hits,
//! misses, evictions by cause, expirations and refusals, for metrics.
//!
//! # Eviction policy: S3-FIFO
//!
//! Entries are evicted by S3-FIFO (Yang et al., "FIFO queues are all you need for cache
//! eviction", SOSP 2023). New keys enter a small FIFO queue that holds about a tenth of the
//! cache. When the small queue is over its share, its oldest entry leaves: to the main FIFO
//! queue if it was read while on probation, otherwise out of the cache, with its key's hash
//! kept in a ghost queue. A key that returns while its ghost is remembered goes straight to the
//! main queue. The main queue evicts its oldest entry, unless that entry was read since its
//! last pass, in which case it goes round again with its two-bit reuse count lowered.
//!
//! The reason is the shape of an inference gateway's traffic. Most requests are unique
//! prompts that will never be asked again: one-hit wonders. Under LRU every one of them
//! enters at the head and pushes the oldest entry out, so a burst of unique requests one cache
//! long flushes everything, including results that are reused all day, such as a classifier
//! prompt asked again and again. Under S3-FIFO the one-hit wonders pass through the small
//! queue and leave without touching the main queue, where the reused results live. A hit only
//! bumps a counter, so reads need no list surgery.
//!
//! The cost is O(1) amortized per operation: each entry is promoted at most once and goes
//! round the main queue at most once per hit it received, and queue records left behind by
//! removed or expired entries are dropped lazily, with a compaction pass once they outnumber
//! the live ones. Memory stays O(`max_entries`).
//!
//! # Time to live
//!
//! Every entry has the same TTL, so insertion order is expiry order: an expiry FIFO finds
//! expired entries from its front. [`Cache::purge_expired`] drops them all; each insert drops
//! a few, and drops expired entries before it evicts a live one.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//!
//! use ray_cache::{Cache, CacheBounds, InsertOutcome};
//!
//! let bounds = CacheBounds {
//!     max_entries: 1_000,
//!     max_bytes: 4 << 20,
//!     ttl: Some(Duration::from_secs(300)),
//! };
//! // Weigh each entry by its key and its text.
//! let mut cache = Cache::<u64, Arc<str>>::new(bounds, |_key, text| 8 + text.len() as u64);
//!
//! let start = Instant::now();
//! let outcome = cache.insert(42, Arc::from("positive"), start);
//! assert_eq!(outcome, InsertOutcome::Stored { evicted: 0 });
//! assert_eq!(cache.get(&42, start).as_deref(), Some("positive"));
//!
//! // Once the TTL has passed, the entry is gone.
//! let later = start + Duration::from_secs(300);
//! assert_eq!(cache.get(&42, later), None);
//!
//! let stats = cache.stats();
//! assert_eq!((stats.hits, stats.misses, stats.expirations), (1, 1, 1));
//! assert_eq!(stats.entries, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use bounds::CacheBounds;
pub use cache::Cache;
pub use stats::{CacheStats, InsertOutcome};

mod bounds;
mod cache;
mod ghost;
mod queue;
mod s3fifo;
mod slab;
mod stats;

/// Compiles and runs the README's example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
