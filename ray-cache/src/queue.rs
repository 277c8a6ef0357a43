//! A FIFO of records with lazy deletion and compaction.
//!
//! The S3-FIFO queues and the expiry queue all hold records that point into the slab. When an
//! entry leaves the cache by another way (`remove`, expiry, replacement), its record is not
//! searched for; it goes *stale* and is dropped when it reaches the front. To keep memory
//! bounded by the number of live entries, a queue whose stale records outnumber its live ones
//! is compacted in one pass, which costs O(1) amortized per stale record.

use std::collections::VecDeque;

/// Below this many stale records a queue is never compacted: tiny queues would otherwise
/// compact on almost every removal for no gain.
const COMPACTION_FLOOR: usize = 16;

/// A FIFO of records, some of which may be stale.
#[derive(Debug)]
pub(crate) struct RecordQueue<R> {
    /// Live and stale records, oldest first.
    records: VecDeque<R>,
    /// How many of `records` are live. Always `<= records.len()`.
    live: usize,
}

// === impl RecordQueue ===

impl<R> RecordQueue<R> {
    /// An empty queue.
    pub(crate) fn new() -> Self {
        Self {
            records: VecDeque::new(),
            live: 0,
        }
    }

    /// The number of live records.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// The number of records held, live and stale: what the queue costs in memory.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.records.len()
    }

    /// Appends a live record.
    pub(crate) fn push_back(&mut self, record: R) {
        self.records.push_back(record);
        self.live += 1;
    }

    /// Removes and returns the oldest live record, dropping stale records on the way.
    pub(crate) fn pop_live(&mut self, mut is_live: impl FnMut(&R) -> bool) -> Option<R> {
        while let Some(record) = self.records.pop_front() {
            if is_live(&record) {
                self.live -= 1;
                return Some(record);
            }
        }
        None
    }

    /// The oldest live record, left in place; stale records in front of it are dropped.
    pub(crate) fn front_live(&mut self, mut is_live: impl FnMut(&R) -> bool) -> Option<&R> {
        while let Some(record) = self.records.front() {
            if is_live(record) {
                return self.records.front();
            }
            self.records.pop_front();
        }
        None
    }

    /// Notes that one live record has just gone stale (its entry left the cache), and
    /// compacts the queue if stale records now outnumber live ones.
    ///
    /// `is_live` must already report the departed entry's record as stale.
    pub(crate) fn mark_stale(&mut self, is_live: impl FnMut(&R) -> bool) {
        self.live = self.live.saturating_sub(1);
        let stale = self.records.len() - self.live;
        if stale > self.live.max(COMPACTION_FLOOR) {
            self.records.retain(is_live);
            debug_assert_eq!(self.records.len(), self.live, "live count drifted");
            self.live = self.records.len();
        }
    }

    /// Drops every record.
    pub(crate) fn clear(&mut self) {
        self.records.clear();
        self.live = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn pop_live_skips_stale_records() {
        let mut queue = RecordQueue::new();
        for n in 0..5 {
            queue.push_back(n);
        }
        let dead: HashSet<i32> = [0, 1, 3].into();
        queue.mark_stale(|n| !dead.contains(n));
        queue.mark_stale(|n| !dead.contains(n));
        queue.mark_stale(|n| !dead.contains(n));
        assert_eq!(queue.live(), 2);
        assert_eq!(queue.pop_live(|n| !dead.contains(n)), Some(2));
        assert_eq!(queue.front_live(|n| !dead.contains(n)), Some(&4));
        assert_eq!(queue.pop_live(|n| !dead.contains(n)), Some(4));
        assert_eq!(queue.pop_live(|n| !dead.contains(n)), None);
        assert_eq!(queue.live(), 0);
    }

    #[test]
    fn stale_records_never_outnumber_live_ones_past_the_floor() {
        let mut queue = RecordQueue::new();
        let mut dead = HashSet::new();
        for n in 0..1_000 {
            queue.push_back(n);
        }
        for n in 0..990 {
            dead.insert(n);
            queue.mark_stale(|n| !dead.contains(n));
            let stale = queue.held() - queue.live();
            assert!(stale <= queue.live().max(COMPACTION_FLOOR));
        }
        assert_eq!(queue.live(), 10);
        assert!(queue.held() <= 10 + COMPACTION_FLOOR);
    }
}
