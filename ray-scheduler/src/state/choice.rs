//! Which waiting job starts next on which free permit (rules 3 to 6): class and level, the
//! lanes' turns, fair share between senders, bounded overtaking for a warm permit or a token
//! budget that does not fit.

use ray_core::wire::{Lane, PriorityClass};

use super::{Choice, SchedulerState, Waiting};

impl<T> SchedulerState<T> {
    /// The preferred job (rules 3 to 6) that can start now on a free permit.
    pub(super) fn preferred(&self, lower_ok: bool) -> Option<Choice> {
        let allowed =
            |w: &Waiting<T>| lower_ok || w.spec.priority.class == PriorityClass::Interactive;
        // Rule 3: the best class and level waiting.
        let band = self
            .short
            .iter()
            .chain(&self.draft)
            .filter(|w| allowed(w))
            .map(|w| {
                (
                    w.spec.priority.class,
                    std::cmp::Reverse(w.spec.priority.level),
                )
            })
            .min()?;
        let in_band = |w: &Waiting<T>| {
            allowed(w)
                && (
                    w.spec.priority.class,
                    std::cmp::Reverse(w.spec.priority.level),
                ) == band
        };
        // Rule 4: the lane whose turn it is, among those with jobs in the band.
        let short = self.short.iter().any(in_band);
        let draft = self.draft.iter().any(in_band);
        let lane = match (short, draft) {
            (false, false) => return None,
            (true, false) => Lane::Short,
            (false, true) => Lane::Draft,
            (true, true) if self.short_streak >= self.settings.short_burst => Lane::Draft,
            (true, true) => Lane::Short,
        };
        // Rule 5: the sender with the smallest virtual start, the oldest job breaking ties.
        let queue = self.lane(lane);
        let sender = queue
            .iter()
            .filter(|w| in_band(w))
            .map(|w| (self.virtual_start(w.spec.sender), w.id, w.spec.sender))
            .min()?
            .2;
        // Rule 6: affinity and token fit within that sender's jobs.
        let candidates = queue
            .iter()
            .enumerate()
            .filter(|(_, w)| in_band(w) && w.spec.sender == sender);
        let (index, slot, warm) = self.choose(candidates)?;
        Some((lane, index, slot, warm))
    }

    /// The waiting job with the earliest latest start that fits the free tokens, on a warm
    /// permit if one is free, else a cold one.
    pub(super) fn most_urgent(&self, lower_ok: bool) -> Option<Choice> {
        let free_tokens =
            u64::from(self.settings.max_inflight_tokens).saturating_sub(self.in_flight_tokens);
        let (lane, index, waiting) = [Lane::Short, Lane::Draft]
            .into_iter()
            .flat_map(|lane| {
                self.lane(lane)
                    .iter()
                    .enumerate()
                    .map(move |(i, w)| (lane, i, w))
            })
            .filter(|(_, _, w)| lower_ok || w.spec.priority.class == PriorityClass::Interactive)
            .filter(|(_, _, w)| u64::from(w.spec.cost) <= free_tokens)
            .min_by_key(|(_, _, w)| (w.start_by, w.id))?;
        if let Some(affinity) = waiting.spec.affinity
            && let Some(slot) = self.free_warm_slot(affinity)
        {
            return Some((lane, index, slot, true));
        }
        let slot = self.free_cold_slot()?;
        Some((lane, index, slot, false))
    }

    /// Picks (index in lane, slot, whether it matched the slot's warm affinity) among the
    /// candidates, in queue order.
    pub(super) fn choose<'a>(
        &self,
        candidates: impl Iterator<Item = (usize, &'a Waiting<T>)>,
    ) -> Option<(usize, u32, bool)>
    where
        T: 'a,
    {
        let free_tokens =
            u64::from(self.settings.max_inflight_tokens).saturating_sub(self.in_flight_tokens);
        let lookahead = self.settings.affinity_lookahead.max(1) as usize;
        let limit = self.settings.affinity_lookahead;
        let mut first_fit: Option<usize> = None;
        for (index, waiting) in candidates.take(lookahead) {
            let fits = u64::from(waiting.spec.cost) <= free_tokens;
            if fits {
                if let Some(affinity) = waiting.spec.affinity
                    && let Some(slot) = self.free_warm_slot(affinity)
                {
                    return Some((index, slot, true));
                }
                if first_fit.is_none() {
                    first_fit = Some(index);
                }
            }
            // Nobody may overtake a job that has been overtaken `limit` times already.
            if waiting.overtaken >= limit {
                break;
            }
        }
        let index = first_fit?;
        let slot = self.free_cold_slot()?;
        Some((index, slot, false))
    }

    /// A free permit whose last job had this affinity (held or not).
    pub(super) fn free_warm_slot(&self, affinity: u64) -> Option<u32> {
        self.slots
            .iter()
            .position(|s| !s.busy && s.warm == Some(affinity))
            .map(|i| i as u32)
    }

    /// A free permit that is not held: one never used, else the one free the longest.
    pub(super) fn free_cold_slot(&self) -> Option<u32> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.busy && s.hold_until.is_none())
            .min_by_key(|(_, s)| (s.warm.is_some(), s.freed_seq))
            .map(|(i, _)| i as u32)
    }
}
