//! The S3-FIFO eviction policy: a small queue, a main queue and a ghost queue.
//!
//! This module decides *which* entry leaves; the cache does the removal and the accounting.
//! See the crate docs for why S3-FIFO and what it costs.

use crate::bounds::CacheBounds;
use crate::ghost::Ghost;
use crate::queue::RecordQueue;
use crate::slab::{QueueKind, Record, Slab};

/// The small queue's share of the cache, as a divisor: one tenth, as in the paper.
const SMALL_SHARE_DIVISOR: usize = 10;

/// The entry chosen for eviction. Its S3-FIFO record has already been removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Victim {
    /// The victim's slot in the slab.
    pub(crate) index: usize,
    /// The queue it was dropped from; only keys dropped from the small queue become ghosts.
    pub(crate) from: QueueKind,
}

/// The three queues and the small queue's share.
#[derive(Debug)]
pub(crate) struct S3Fifo {
    /// New keys, oldest first. Holds about a tenth of the cache.
    small: RecordQueue<Record>,
    /// Keys that were reused while in `small`, or came back from `ghost`.
    main: RecordQueue<Record>,
    /// Hashes of keys recently dropped from `small` without being reused.
    ghost: Ghost,
    /// Total weight of the live entries in `small`.
    small_bytes: u64,
    /// `small` is over its share once it holds this many live entries...
    small_max_entries: usize,
    /// ...or this many bytes.
    small_max_bytes: u64,
}

// === impl S3Fifo ===

impl S3Fifo {
    /// Empty queues sized for `bounds`.
    pub(crate) fn new(bounds: &CacheBounds) -> Self {
        let small_max_entries = (bounds.max_entries / SMALL_SHARE_DIVISOR).max(1);
        let ghost_capacity = bounds.max_entries.saturating_sub(small_max_entries).max(1);
        Self {
            small: RecordQueue::new(),
            main: RecordQueue::new(),
            ghost: Ghost::new(ghost_capacity),
            small_bytes: 0,
            small_max_entries,
            small_max_bytes: bounds.max_bytes / SMALL_SHARE_DIVISOR as u64,
        }
    }

    /// Appends a newly stored entry's record to a queue.
    pub(crate) fn push(&mut self, queue: QueueKind, record: Record, weight: u64) {
        match queue {
            QueueKind::Small => {
                self.small_bytes += weight;
                self.small.push_back(record);
            }
            QueueKind::Main => self.main.push_back(record),
        }
    }

    /// Notes that an entry left the cache other than by eviction, leaving a stale record.
    ///
    /// Call it after the entry has left the slab.
    pub(crate) fn forget<K, V>(&mut self, queue: QueueKind, weight: u64, slab: &Slab<K, V>) {
        let is_live = |record: &Record| slab.is_live(*record);
        match queue {
            QueueKind::Small => {
                self.small_bytes -= weight;
                self.small.mark_stale(is_live);
            }
            QueueKind::Main => self.main.mark_stale(is_live),
        }
    }

    /// Whether a key with this hash was recently dropped from the small queue; forgets it.
    pub(crate) fn take_ghost(&mut self, hash: u64) -> bool {
        self.ghost.take(hash)
    }

    /// Whether the ghost queue is empty, so that callers can skip hashing a key.
    pub(crate) fn ghost_is_empty(&self) -> bool {
        self.ghost.len() == 0
    }

    /// Remembers the hash of a key dropped from the small queue.
    pub(crate) fn remember_ghost(&mut self, hash: u64) {
        self.ghost.remember(hash);
    }

    /// Chooses the next entry to evict, promoting and demoting entries on the way.
    ///
    /// Returns `None` only if no entry is live.
    pub(crate) fn evict<K, V>(&mut self, slab: &mut Slab<K, V>) -> Option<Victim> {
        let mut from_small = self.small_is_over_share() || self.main.live() == 0;
        loop {
            if self.small.live() == 0 && self.main.live() == 0 {
                return None;
            }
            let queue = if from_small {
                &mut self.small
            } else {
                &mut self.main
            };
            let Some(record) = queue.pop_live(|record| slab.is_live(*record)) else {
                // This queue ran dry while the other still has live entries.
                from_small = !from_small;
                continue;
            };
            let entry = slab.get_mut(record.index)?;
            if from_small {
                self.small_bytes -= entry.weight;
                if entry.frequency > 0 {
                    // Reused while on probation: promote, and make it earn its keep again.
                    entry.frequency = 0;
                    entry.queue = QueueKind::Main;
                    self.main.push_back(record);
                } else {
                    return Some(Victim {
                        index: record.index,
                        from: QueueKind::Small,
                    });
                }
            } else if entry.frequency > 0 {
                // Reused since its last pass: one more lap around the main queue.
                entry.frequency -= 1;
                self.main.push_back(record);
            } else {
                return Some(Victim {
                    index: record.index,
                    from: QueueKind::Main,
                });
            }
        }
    }

    /// Drops every record and ghost.
    pub(crate) fn clear(&mut self) {
        self.small.clear();
        self.main.clear();
        self.ghost.clear();
        self.small_bytes = 0;
    }

    /// Whether the small queue holds more than its share, by entries or by bytes.
    fn small_is_over_share(&self) -> bool {
        self.small.live() > 0
            && (self.small.live() >= self.small_max_entries
                || self.small_bytes >= self.small_max_bytes)
    }
}

#[cfg(test)]
impl S3Fifo {
    /// How many records the small and main queues hold, live and stale.
    pub(crate) fn held(&self) -> (usize, usize) {
        (self.small.held(), self.main.held())
    }

    /// How many hashes the ghost queue remembers.
    pub(crate) fn ghost_len(&self) -> usize {
        self.ghost.len()
    }
}
