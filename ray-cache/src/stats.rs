//! What an insert did, and the counters a cache keeps.

/// What [`Cache::insert`](crate::Cache::insert) did with an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InsertOutcome {
    /// The key was not in the cache (or only as an expired entry) and is now stored.
    Stored {
        /// Live entries evicted to make room. Expired entries purged on the way are not
        /// counted here; they show in [`CacheStats::expirations`].
        evicted: usize,
    },
    /// The key held a live entry, whose value was replaced.
    Replaced {
        /// Live entries evicted to make room, as for [`InsertOutcome::Stored`].
        evicted: usize,
    },
    /// The entry weighs more than `max_bytes` (or `max_entries` is `0`), so it can never fit
    /// and was not stored. Any older entry for the key was removed, so that a stale value is
    /// not served in place of the refused one.
    RejectedOversized,
}

/// Counters kept by a [`Cache`](crate::Cache), from [`Cache::stats`](crate::Cache::stats).
///
/// Every counter but `entries` and `bytes` only grows, including across
/// [`Cache::clear`](crate::Cache::clear).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups by `get` that returned a value.
    pub hits: u64,
    /// Lookups by `get` that returned nothing, expired entries included.
    pub misses: u64,
    /// Inserts that stored a key not held live before ([`InsertOutcome::Stored`]).
    pub insertions: u64,
    /// Inserts that replaced a live entry's value ([`InsertOutcome::Replaced`]).
    pub replacements: u64,
    /// Live entries evicted to stay within `max_entries`. When an insert needs room on both
    /// bounds at once, the eviction counts here.
    pub evictions_entries: u64,
    /// Live entries evicted to stay within `max_bytes` (and not also `max_entries`).
    pub evictions_bytes: u64,
    /// Entries dropped because their TTL had passed, however that was noticed.
    pub expirations: u64,
    /// Inserts refused because the entry could never fit.
    pub rejected_oversized: u64,
    /// Live entries taken out by `remove`, or dropped because a newer value for their key was
    /// refused as oversized.
    pub removals: u64,
    /// Entries held now, including expired ones not purged yet.
    pub entries: u64,
    /// Total weight held now, including expired entries not purged yet.
    pub bytes: u64,
}

// === impl InsertOutcome ===

impl InsertOutcome {
    /// Whether the entry is now in the cache.
    pub fn is_stored(&self) -> bool {
        matches!(self, Self::Stored { .. } | Self::Replaced { .. })
    }

    /// How many live entries the insert evicted.
    pub fn evicted(&self) -> usize {
        match *self {
            Self::Stored { evicted } | Self::Replaced { evicted } => evicted,
            Self::RejectedOversized => 0,
        }
    }
}

// === impl CacheStats ===

impl CacheStats {
    /// All evictions, whichever bound caused them.
    pub fn evictions(&self) -> u64 {
        self.evictions_entries + self.evictions_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evictions_sum_both_causes() {
        let stats = CacheStats {
            evictions_entries: 3,
            evictions_bytes: 4,
            ..CacheStats::default()
        };
        assert_eq!(stats.evictions(), 7);
    }

    #[test]
    fn outcome_helpers() {
        assert!(InsertOutcome::Stored { evicted: 2 }.is_stored());
        assert_eq!(InsertOutcome::Replaced { evicted: 1 }.evicted(), 1);
        assert!(!InsertOutcome::RejectedOversized.is_stored());
        assert_eq!(InsertOutcome::RejectedOversized.evicted(), 0);
    }
}
