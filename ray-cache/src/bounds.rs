//! The three bounds a cache holds at every moment.

use std::time::Duration;

/// The limits of a [`Cache`](crate::Cache), fixed when it is created.
///
/// After every public method returns, the cache holds at most `max_entries` entries whose
/// weights add up to at most `max_bytes`, and it never returns an entry older than `ttl`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheBounds {
    /// The most entries held at once. With `0`, nothing is ever stored: every insert is
    /// refused as [`InsertOutcome::RejectedOversized`](crate::InsertOutcome::RejectedOversized).
    pub max_entries: usize,
    /// The most total weight held at once, in the weigher's unit (bytes). An entry heavier
    /// than this on its own is refused.
    pub max_bytes: u64,
    /// How long an entry stays fresh after it was inserted: an entry inserted at `t` is live
    /// while `now < t + ttl`. `None` means entries never expire by time.
    pub ttl: Option<Duration>,
}
