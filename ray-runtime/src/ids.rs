//! Request and job ids: a prefix and 16 hex chars, unique per process and hard to guess.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Generates ids such as `req_3f9a1c2b7d4e5f60`.
#[derive(Debug)]
pub struct IdSource {
    counter: AtomicU64,
    key: u64,
}

impl Default for IdSource {
    fn default() -> IdSource {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        // RandomState is seeded from the OS, so two processes never share a sequence.
        let key = std::collections::hash_map::RandomState::new().hash_one(nanos);
        IdSource {
            counter: AtomicU64::new(nanos),
            key,
        }
    }
}

impl IdSource {
    /// The next id with `prefix` (`req_` or `job_`).
    pub fn next(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{:016x}", splitmix64(n ^ self.key))
    }
}

/// SplitMix64: a bijection on u64, so distinct counters give distinct ids.
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let ids = IdSource::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = ids.next("req_");
            assert_eq!(id.len(), 20);
            assert!(id[4..].bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(seen.insert(id));
        }
    }
}
