//! Entry storage: a slab of entries addressed by index, with generations for lazy deletion.
//!
//! Queue records name an entry by `(index, generation)`. A slot is reused after its entry
//! leaves, but every stored entry gets a fresh generation, so a record left behind by a
//! departed entry never matches the slot's new occupant.

use std::time::Instant;

/// The highest value of an entry's access counter (two bits).
pub(crate) const MAX_FREQUENCY: u8 = 3;

/// Which S3-FIFO queue an entry is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QueueKind {
    /// The small probationary queue that new keys enter.
    Small,
    /// The main queue for keys that proved themselves.
    Main,
}

/// A record in a queue: which slot, and which occupant of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    /// The slot in the slab.
    pub(crate) index: usize,
    /// The generation the entry had when the record was made.
    pub(crate) generation: u64,
}

/// One stored key and value with its bookkeeping.
#[derive(Debug)]
pub(crate) struct Entry<K, V> {
    /// The key, kept so that an evicted entry can be removed from the index.
    pub(crate) key: K,
    /// The stored value.
    pub(crate) value: V,
    /// What the weigher said the entry costs, fixed at insert.
    pub(crate) weight: u64,
    /// The first instant at which the entry is expired; `None` never expires.
    pub(crate) expires_at: Option<Instant>,
    /// Saturating access counter, `0..=MAX_FREQUENCY`.
    pub(crate) frequency: u8,
    /// The queue holding the entry's one live S3-FIFO record.
    pub(crate) queue: QueueKind,
    /// Unique per stored entry; records carry it to tell live from stale.
    pub(crate) generation: u64,
}

/// Slots of entries plus a free list of vacant slots.
#[derive(Debug)]
pub(crate) struct Slab<K, V> {
    /// Occupied and vacant slots. Never longer than the peak number of live entries.
    slots: Vec<Option<Entry<K, V>>>,
    /// Indexes of vacant slots in `slots`.
    free: Vec<usize>,
}

// === impl Entry ===

impl<K, V> Entry<K, V> {
    /// Whether the entry is expired at `now`: an entry expiring at `t` is live while `now < t`.
    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// Counts one access, saturating at [`MAX_FREQUENCY`].
    pub(crate) fn touch(&mut self) {
        if self.frequency < MAX_FREQUENCY {
            self.frequency += 1;
        }
    }
}

// === impl Slab ===

impl<K, V> Slab<K, V> {
    /// An empty slab.
    pub(crate) fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Stores an entry and returns its slot index.
    pub(crate) fn insert(&mut self, entry: Entry<K, V>) -> usize {
        match self.free.pop() {
            Some(index) => {
                self.slots[index] = Some(entry);
                index
            }
            None => {
                self.slots.push(Some(entry));
                self.slots.len() - 1
            }
        }
    }

    /// The entry in a slot, if occupied.
    pub(crate) fn get(&self, index: usize) -> Option<&Entry<K, V>> {
        self.slots.get(index).and_then(Option::as_ref)
    }

    /// The entry in a slot, if occupied, for update.
    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut Entry<K, V>> {
        self.slots.get_mut(index).and_then(Option::as_mut)
    }

    /// Takes the entry out of a slot, freeing the slot.
    pub(crate) fn remove(&mut self, index: usize) -> Option<Entry<K, V>> {
        let entry = self.slots.get_mut(index)?.take()?;
        self.free.push(index);
        Some(entry)
    }

    /// Whether a record still names the entry in its slot.
    pub(crate) fn is_live(&self, record: Record) -> bool {
        self.get(record.index)
            .is_some_and(|entry| entry.generation == record.generation)
    }

    /// The number of slots, occupied or not: what the slab costs in memory.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Drops every entry and slot.
    pub(crate) fn clear(&mut self) {
        self.slots.clear();
        self.free.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(generation: u64) -> Entry<u32, u32> {
        Entry {
            key: 1,
            value: 2,
            weight: 3,
            expires_at: None,
            frequency: 0,
            queue: QueueKind::Small,
            generation,
        }
    }

    #[test]
    fn reused_slot_does_not_revive_old_records() {
        let mut slab = Slab::new();
        let index = slab.insert(entry(1));
        let old = Record {
            index,
            generation: 1,
        };
        assert!(slab.is_live(old));
        assert!(slab.remove(index).is_some());
        let reused = slab.insert(entry(2));
        assert_eq!(reused, index, "the vacant slot is reused");
        assert!(!slab.is_live(old));
        assert_eq!(slab.slots(), 1);
    }

    #[test]
    fn touch_saturates_at_three() {
        let mut e = entry(1);
        for _ in 0..10 {
            e.touch();
        }
        assert_eq!(e.frequency, MAX_FREQUENCY);
    }
}
