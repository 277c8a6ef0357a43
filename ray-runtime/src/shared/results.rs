//! The result store: where finished results (and embedding vectors) are kept for repeated
//! requests, by the 128-bit key the request path computes.

use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use ray_cache::{Cache, CacheBounds, CacheStats};
use tokio::time::Instant;

pub use crate::outcome::CachedResult;

/// Keeps results for repeated requests. The request path calls it once per look-up and once
/// per insert; an implementation reads its own clock (the default reads Tokio's, so tests that
/// pause time see entries expire on the paused clock).
pub trait ResultStore: Send + Sync + fmt::Debug + 'static {
    /// The result under the first of `keys` that holds a live one (the request path asks for
    /// its exact key, then the key without its output clamp).
    fn get_first(&self, keys: &[u128]) -> Option<Arc<CachedResult>>;

    /// For each of `keys` in order, the live result it holds (the embeddings path asks for one
    /// key per input at once).
    fn get_each(&self, keys: &[u128], found: &mut dyn FnMut(usize, Option<Arc<CachedResult>>));

    /// Keeps each `(key, result)`, replacing what a key held.
    fn insert(&self, entries: &mut dyn Iterator<Item = (u128, Arc<CachedResult>)>);

    /// What the store holds and has done, for `/health` and `/metrics`.
    fn stats(&self) -> CacheStats;
}

/// The default [`ResultStore`]: a bounded S3-FIFO cache ([`ray_cache::Cache`]) behind one
/// mutex, weighing each entry by its key and its result.
pub struct MemoryResultStore {
    cache: Mutex<Cache<u128, Arc<CachedResult>>>,
}

impl fmt::Debug for MemoryResultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryResultStore")
            .field("stats", &self.stats())
            .finish()
    }
}

impl MemoryResultStore {
    /// A store holding at most what `bounds` allow.
    pub fn new(bounds: CacheBounds) -> MemoryResultStore {
        MemoryResultStore {
            cache: Mutex::new(Cache::new(bounds, |_key, value: &Arc<CachedResult>| {
                16 + value.weight
            })),
        }
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl ResultStore for MemoryResultStore {
    fn get_first(&self, keys: &[u128]) -> Option<Arc<CachedResult>> {
        let now = now();
        let mut cache = self.cache.lock();
        keys.iter().find_map(|key| cache.get(key, now))
    }

    fn get_each(&self, keys: &[u128], found: &mut dyn FnMut(usize, Option<Arc<CachedResult>>)) {
        let now = now();
        let mut cache = self.cache.lock();
        for (index, key) in keys.iter().enumerate() {
            found(index, cache.get(key, now));
        }
    }

    fn insert(&self, entries: &mut dyn Iterator<Item = (u128, Arc<CachedResult>)>) {
        let now = now();
        let mut cache = self.cache.lock();
        for (key, value) in entries {
            cache.insert(key, value, now);
        }
    }

    fn stats(&self) -> CacheStats {
        self.cache.lock().stats()
    }
}
