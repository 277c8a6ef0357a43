//! Making room in the budget: which models to unload (idle ones first) or drain so that a
//! waiting request's model can load, and the models to unload after a measurement larger
//! than the estimate.

use std::time::Duration;

use tokio::time::Instant;

use super::super::types::ModelState;
use super::{Lifecycle, Slot};

impl Lifecycle {
    /// After a measurement larger than the estimate, unloads idle models (least recently
    /// used first, never `keep`, never a pinned or busy one) until the budget holds again.
    pub(super) fn shed_excess(&mut self, keep: usize, now: Instant) {
        let budget = self.settings.budget_mib;
        let mut candidates: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                let s = &self.slots[i];
                i != keep
                    && s.state == ModelState::Ready
                    && !s.config.resident
                    && s.in_flight == 0
                    && s.waiting.is_empty()
            })
            .collect();
        candidates.sort_by_key(|&i| self.slots[i].last_used.unwrap_or(self.slots[i].since));
        for index in candidates {
            let holding: u64 = self
                .slots
                .iter()
                .filter(|s| s.state.holds_memory() && s.state != ModelState::Unloading)
                .map(Slot::footprint)
                .sum();
            if holding <= budget {
                return;
            }
            let reason = format!(
                "evicted: {:?} measured more than estimated and the models loaded need {holding} \
                 MiB of the {budget} MiB budget",
                self.slots[keep].config.id
            );
            self.begin_unload(index, now, reason, true);
        }
    }

    /// Unloads idle models (or drains busy ones) so that `need` MiB for model `for_model` will
    /// be free, choosing nothing unless the candidates can free enough together.
    pub(super) fn make_room(&mut self, for_model: usize, need: u64, now: Instant) {
        let free = self.free_mib();
        // Memory already on its way back.
        let pending: u64 = self
            .slots
            .iter()
            .filter(|s| matches!(s.state, ModelState::Unloading | ModelState::Draining))
            .map(Slot::footprint)
            .sum();
        if free + pending >= need {
            return;
        }
        let evictable = |s: &Slot| {
            s.state == ModelState::Ready
                && !s.config.resident
                && s.waiting.is_empty()
                && s.past_min_resident(now)
        };
        let order = |s: &Slot| {
            (
                s.last_used.unwrap_or(s.since),
                s.config.load_time.unwrap_or(Duration::MAX),
            )
        };
        let mut idle: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                i != for_model && evictable(&self.slots[i]) && self.slots[i].in_flight == 0
            })
            .collect();
        idle.sort_by_key(|&i| order(&self.slots[i]));
        let busy_candidates: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                let s = &self.slots[i];
                i != for_model
                    && evictable(s)
                    && s.in_flight > 0
                    && s.no_drain_until.is_none_or(|until| now >= until)
            })
            .collect();
        // Fair swapping: a busy model's turn starts when a request first waits for its memory,
        // and it drains only once the turn is over.
        for &index in &busy_candidates {
            let slot = &mut self.slots[index];
            if slot.contended_since.is_none() {
                slot.contended_since = Some(now);
                slot.served_in_turn = 0;
            }
        }
        let settings = &self.settings;
        let mut busy: Vec<usize> = busy_candidates
            .into_iter()
            .filter(|&i| self.slots[i].turn_over(settings, now))
            .collect();
        busy.sort_by_key(|&i| order(&self.slots[i]));
        let reachable: u64 = idle
            .iter()
            .chain(busy.iter())
            .map(|&i| self.slots[i].footprint())
            .sum();
        if free + pending + reachable < need {
            return;
        }
        let wanted = &self.slots[for_model].config.id.clone();
        let mut freed = free + pending;
        for index in idle {
            if freed >= need {
                return;
            }
            freed += self.slots[index].footprint();
            let reason = format!(
                "evicted: idle, least recently used; {wanted:?} needs {need} MiB and {} MiB \
                 are free of the {} MiB budget",
                free, self.settings.budget_mib
            );
            self.begin_unload(index, now, reason, true);
        }
        for index in busy {
            if freed >= need {
                return;
            }
            freed += self.slots[index].footprint();
            let timeout = self.settings.drain_timeout;
            let slot = &mut self.slots[index];
            slot.evictions += 1;
            slot.drain_until = Some(now + timeout);
            let reason = format!(
                "draining to make room for {wanted:?} ({need} MiB) after its turn ({} requests \
                 taken since {wanted:?} began to wait): {} requests in flight finish first (up \
                 to {} ms); new ones wait",
                slot.served_in_turn,
                slot.in_flight,
                timeout.as_millis()
            );
            self.transition(index, ModelState::Draining, now, reason);
        }
    }
}
