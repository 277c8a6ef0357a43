//! The ghost queue: hashes of keys recently dropped from the small queue.
//!
//! A key that comes back while its hash is still here skipped the small queue once too early,
//! so it is admitted straight to the main queue. Only 64-bit hashes are kept, never keys or
//! values; a collision merely admits one unrelated key to the main queue.

use std::collections::{HashMap, VecDeque};

/// Below this many stale records the order queue is never compacted.
const COMPACTION_FLOOR: usize = 16;

/// A bounded FIFO set of key hashes.
#[derive(Debug)]
pub(crate) struct Ghost {
    /// Hashes in the order they were remembered, each with the stamp it got then. A record is
    /// stale once `members` no longer maps its hash to its stamp.
    order: VecDeque<(u64, u64)>,
    /// The hashes remembered now, each with the stamp of its live record in `order`.
    members: HashMap<u64, u64>,
    /// At most this many hashes are remembered.
    capacity: usize,
    /// The stamp for the next remembered hash.
    next_stamp: u64,
}

// === impl Ghost ===

impl Ghost {
    /// An empty ghost that remembers at most `capacity` hashes.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            order: VecDeque::new(),
            members: HashMap::new(),
            capacity,
            next_stamp: 0,
        }
    }

    /// How many hashes are remembered.
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// Remembers a hash, forgetting the oldest ones beyond capacity.
    pub(crate) fn remember(&mut self, hash: u64) {
        if self.capacity == 0 {
            return;
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.members.insert(hash, stamp);
        self.order.push_back((hash, stamp));
        while self.members.len() > self.capacity {
            let Some((old, old_stamp)) = self.order.pop_front() else {
                break;
            };
            if self.members.get(&old) == Some(&old_stamp) {
                self.members.remove(&old);
            }
        }
        self.compact_if_needed();
    }

    /// Forgets a hash; returns whether it was remembered.
    pub(crate) fn take(&mut self, hash: u64) -> bool {
        if self.members.is_empty() {
            return false;
        }
        let found = self.members.remove(&hash).is_some();
        if found {
            self.compact_if_needed();
        }
        found
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.order.clear();
        self.members.clear();
    }

    /// Drops stale records once they outnumber live ones, so `order` stays O(capacity).
    fn compact_if_needed(&mut self) {
        let live = self.members.len();
        if self.order.len() - live > live.max(COMPACTION_FLOOR) {
            let members = &self.members;
            self.order
                .retain(|(hash, stamp)| members.get(hash) == Some(stamp));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_at_most_capacity_oldest_first_out() {
        let mut ghost = Ghost::new(3);
        for hash in 0..5 {
            ghost.remember(hash);
        }
        assert_eq!(ghost.len(), 3);
        assert!(!ghost.take(0));
        assert!(!ghost.take(1));
        assert!(ghost.take(2));
        assert!(!ghost.take(2), "a hash is taken once");
        assert!(ghost.take(4));
    }

    #[test]
    fn take_then_remember_keeps_memory_bounded() {
        let mut ghost = Ghost::new(8);
        for round in 0..1_000 {
            ghost.remember(round);
            assert!(ghost.take(round));
            assert!(ghost.order.len() <= 8 + COMPACTION_FLOOR + 1);
        }
    }

    #[test]
    fn re_remembering_refreshes_position() {
        let mut ghost = Ghost::new(2);
        ghost.remember(1);
        ghost.remember(2);
        ghost.remember(1);
        ghost.remember(3);
        assert!(ghost.take(1), "refreshed hash survives");
        assert!(!ghost.take(2), "oldest hash was forgotten");
    }
}
