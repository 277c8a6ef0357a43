//! The scheduling decisions as a plain synchronous struct: who is admitted, who waits, who runs
//! next on which permit. No clock, no locks, no async: the shell passes `now` in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ray_core::wire::Lane;

use crate::settings::SchedulerSettings;

/// What a job asks of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobSpec {
    /// Tokens the job reserves: prompt tokens plus its `maxTokens`.
    pub cost: u32,
    /// The lane it waits in.
    pub lane: Lane,
    /// Its affinity key (the prompt family); jobs of one family prefer the permit that last
    /// served that family, whose backend slot still holds the family's prompt in cache.
    pub affinity: Option<u64>,
}

/// Why a job was refused at submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// The job alone costs more than a token budget, so it could never run.
    TokenBudget {
        /// The job's cost.
        cost: u32,
        /// The budget it exceeds.
        budget: u32,
        /// `maxInflightTokens` or `maxQueuedTokens`.
        which: BudgetKind,
    },
    /// The queue holds `maxQueue` jobs already.
    QueueDepth {
        /// Jobs waiting.
        depth: u32,
    },
    /// Waiting jobs already reserve so many tokens that this one does not fit.
    QueuedTokens {
        /// Tokens reserved by waiting jobs.
        queued_tokens: u32,
        /// The job's cost.
        cost: u32,
    },
}

/// The two token budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetKind {
    /// `scheduler.maxInflightTokens`.
    Inflight,
    /// `scheduler.maxQueuedTokens`.
    Queued,
}

impl BudgetKind {
    /// The config field name.
    pub fn field(self) -> &'static str {
        match self {
            BudgetKind::Inflight => "scheduler.maxInflightTokens",
            BudgetKind::Queued => "scheduler.maxQueuedTokens",
        }
    }
}

/// A waiting job chosen to run on a permit.
#[derive(Debug)]
pub struct Assignment<T> {
    /// The job's id.
    pub id: u64,
    /// The permit (slot) index it runs on, `0..concurrency`.
    pub slot: u32,
    /// Its token cost, now counted as in flight.
    pub cost: u32,
    /// Its lane.
    pub lane: Lane,
    /// Its affinity key.
    pub affinity: Option<u64>,
    /// Whether the permit's last job had the same affinity (its backend slot is warm).
    pub warm: bool,
    /// How long it waited.
    pub waited: Duration,
    /// Whatever the shell attached to the job (a channel to hand it its permit).
    pub payload: Option<T>,
}

#[derive(Debug)]
struct Waiting<T> {
    id: u64,
    spec: JobSpec,
    enqueued_at: Instant,
    /// How many later jobs of its lane started before it.
    overtaken: u32,
    payload: Option<T>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    busy: bool,
    /// Affinity of the last job that ran here.
    warm: Option<u64>,
    /// Held for a job of `warm`'s family until this instant.
    hold_until: Option<Instant>,
    /// Order in which slots became free (higher is more recent).
    freed_seq: u64,
}

/// Counters of what the scheduler did, for metrics and health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Jobs accepted into the queue.
    pub submitted: u64,
    /// Jobs that started.
    pub dispatched: u64,
    /// Jobs that started on the permit whose last job had the same affinity.
    pub affinity_hits: u64,
    /// Jobs refused: token budget.
    pub rejected_token_budget: u64,
    /// Jobs refused: queue depth.
    pub rejected_queue_depth: u64,
    /// Jobs refused: queued tokens.
    pub rejected_queued_tokens: u64,
    /// Waiting jobs that left (timeout or caller gone).
    pub cancelled: u64,
    /// Permits held by the batch window.
    pub holds: u64,
}

/// A point-in-time view of the scheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSnapshot {
    /// Waiting short jobs.
    pub short_depth: u32,
    /// Waiting draft jobs.
    pub draft_depth: u32,
    /// Tokens reserved by waiting jobs.
    pub queued_tokens: u32,
    /// Executing jobs.
    pub in_flight: u32,
    /// Tokens reserved by executing jobs.
    pub in_flight_tokens: u32,
    /// How long the oldest waiting job has waited.
    pub oldest_wait: Duration,
    /// Permits currently held by the batch window.
    pub held: u32,
    /// Counters since start.
    pub counters: Counters,
}

impl StateSnapshot {
    /// Waiting jobs in both lanes.
    pub fn depth(&self) -> u32 {
        self.short_depth + self.draft_depth
    }
}

/// The scheduler's decisions, with no clock, lock or runtime of its own.
///
/// The rules, in order:
///
/// 1. **Admission.** A job whose cost exceeds either token budget is refused outright
///    ([`Reject::TokenBudget`]); a job that would make the queue deeper than `maxQueue`, or its
///    reserved tokens larger than `maxQueuedTokens`, is refused ([`Reject::QueueDepth`],
///    [`Reject::QueuedTokens`]).
/// 2. **Turns.** The short lane goes first, but after `short_burst` short jobs have started in a
///    row while a draft job waited, the draft lane has the turn for one job. Only the lane whose
///    turn it is may start a job, so while a short job waits at most one draft job starts per
///    `short_burst` short jobs, and drafts are never starved.
/// 3. **Within a lane**, the head goes first unless a job within the first `affinityLookahead`
///    places matches the warm affinity of a free permit; such a job may overtake the ones before
///    it, but no job is overtaken more than `affinityLookahead` times. Jobs whose cost does not
///    fit the free in-flight token budget are skipped in the same bounded way, and when nothing
///    in the turn's lane fits, nothing starts until tokens free up.
/// 4. **Batch window.** When a permit frees while jobs wait and none of the eligible jobs
///    shares its warm affinity, it is held up to `batch_window` for such a job; other free
///    permits are used meanwhile. Nothing is held when the queue is empty.
#[derive(Debug)]
pub struct SchedulerState<T> {
    settings: SchedulerSettings,
    short: VecDeque<Waiting<T>>,
    draft: VecDeque<Waiting<T>>,
    slots: Vec<Slot>,
    queued_tokens: u64,
    in_flight_tokens: u64,
    in_flight: u32,
    short_streak: u32,
    freed_seq: u64,
    counters: Counters,
}

impl<T> SchedulerState<T> {
    /// An empty scheduler.
    pub fn new(settings: SchedulerSettings) -> SchedulerState<T> {
        let slots = vec![Slot::default(); settings.concurrency.max(1) as usize];
        SchedulerState {
            settings,
            short: VecDeque::new(),
            draft: VecDeque::new(),
            slots,
            queued_tokens: 0,
            in_flight_tokens: 0,
            in_flight: 0,
            short_streak: 0,
            freed_seq: 0,
            counters: Counters::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &SchedulerSettings {
        &self.settings
    }

    /// Checks whether a job could ever be admitted, without queueing it.
    pub fn check_budget(&self, cost: u32) -> Result<(), Reject> {
        let s = &self.settings;
        if cost > s.max_inflight_tokens {
            return Err(Reject::TokenBudget {
                cost,
                budget: s.max_inflight_tokens,
                which: BudgetKind::Inflight,
            });
        }
        if cost > s.max_queued_tokens {
            return Err(Reject::TokenBudget {
                cost,
                budget: s.max_queued_tokens,
                which: BudgetKind::Queued,
            });
        }
        Ok(())
    }

    /// Queues a job, or refuses it. Call [`SchedulerState::next`] afterwards to start whatever
    /// can start (possibly this job).
    pub fn submit(
        &mut self,
        id: u64,
        spec: JobSpec,
        now: Instant,
        payload: Option<T>,
    ) -> Result<(), Reject> {
        let rejection = self.check_budget(spec.cost).err().or_else(|| {
            let depth = self.depth();
            if depth >= self.settings.max_queue {
                Some(Reject::QueueDepth { depth })
            } else if self.queued_tokens + u64::from(spec.cost)
                > u64::from(self.settings.max_queued_tokens)
            {
                Some(Reject::QueuedTokens {
                    queued_tokens: self.queued_tokens as u32,
                    cost: spec.cost,
                })
            } else {
                None
            }
        });
        if let Some(reject) = rejection {
            match reject {
                Reject::TokenBudget { .. } => self.counters.rejected_token_budget += 1,
                Reject::QueueDepth { .. } => self.counters.rejected_queue_depth += 1,
                Reject::QueuedTokens { .. } => self.counters.rejected_queued_tokens += 1,
            }
            return Err(reject);
        }
        self.queued_tokens += u64::from(spec.cost);
        self.counters.submitted += 1;
        self.lane_mut(spec.lane).push_back(Waiting {
            id,
            spec,
            enqueued_at: now,
            overtaken: 0,
            payload,
        });
        Ok(())
    }

    /// Attaches a payload to a waiting job (the shell does this only when the job did not start
    /// at once, to keep the fast path free of channel allocation).
    pub fn set_payload(&mut self, id: u64, payload: T) -> bool {
        for lane in [&mut self.short, &mut self.draft] {
            if let Some(waiting) = lane.iter_mut().rev().find(|w| w.id == id) {
                waiting.payload = Some(payload);
                return true;
            }
        }
        false
    }

    /// Removes a waiting job (its caller left or its deadline passed), returning its place and
    /// token reservation at once. Returns its payload, or `None` if it was not waiting.
    pub fn cancel(&mut self, id: u64) -> Option<Option<T>> {
        for lane in [Lane::Short, Lane::Draft] {
            let queue = self.lane_mut(lane);
            if let Some(index) = queue.iter().position(|w| w.id == id) {
                let waiting = queue.remove(index)?;
                self.queued_tokens -= u64::from(waiting.spec.cost);
                self.counters.cancelled += 1;
                return Some(waiting.payload);
            }
        }
        None
    }

    /// A job that ran on `slot` with `cost` and `affinity` finished; its permit and tokens are
    /// free again.
    pub fn release(&mut self, slot: u32, cost: u32, affinity: Option<u64>, now: Instant) {
        let contention = !self.short.is_empty() || !self.draft.is_empty();
        let Some(state) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if !state.busy {
            return;
        }
        state.busy = false;
        if affinity.is_some() {
            state.warm = affinity;
        }
        self.freed_seq += 1;
        state.freed_seq = self.freed_seq;
        state.hold_until = None;
        self.in_flight -= 1;
        self.in_flight_tokens -= u64::from(cost);
        // Hold the permit for its warm family only when there is contention to gain from.
        if !self.settings.batch_window.is_zero() && state.warm.is_some() && contention {
            state.hold_until = Some(now + self.settings.batch_window);
            self.counters.holds += 1;
        }
    }

    /// Picks the next job to start, if any can start now.
    pub fn next(&mut self, now: Instant) -> Option<Assignment<T>> {
        if self.in_flight >= self.slots.len() as u32 {
            return None;
        }
        for slot in &mut self.slots {
            if slot.hold_until.is_some_and(|until| now >= until) {
                slot.hold_until = None;
            }
        }
        let lane = self.turn()?;
        let (index, slot, warm_match) = self.choose(lane)?;
        Some(self.start(lane, index, slot, warm_match, now))
    }

    /// When a held permit's window ends: the shell should call [`SchedulerState::next`] then.
    pub fn next_wakeup(&self) -> Option<Instant> {
        if self.depth() == 0 {
            return None;
        }
        self.slots
            .iter()
            .filter(|s| !s.busy)
            .filter_map(|s| s.hold_until)
            .min()
    }

    /// A point-in-time view.
    pub fn snapshot(&self, now: Instant) -> StateSnapshot {
        let oldest = [self.short.front(), self.draft.front()]
            .into_iter()
            .flatten()
            .map(|w| now.saturating_duration_since(w.enqueued_at))
            .max()
            .unwrap_or_default();
        StateSnapshot {
            short_depth: self.short.len() as u32,
            draft_depth: self.draft.len() as u32,
            queued_tokens: self.queued_tokens as u32,
            in_flight: self.in_flight,
            in_flight_tokens: self.in_flight_tokens as u32,
            oldest_wait: oldest,
            held: self
                .slots
                .iter()
                .filter(|s| !s.busy && s.hold_until.is_some())
                .count() as u32,
            counters: self.counters,
        }
    }

    /// Waiting jobs in both lanes.
    pub fn depth(&self) -> u32 {
        (self.short.len() + self.draft.len()) as u32
    }

    /// Executing jobs.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    fn lane_mut(&mut self, lane: Lane) -> &mut VecDeque<Waiting<T>> {
        match lane {
            Lane::Short => &mut self.short,
            Lane::Draft => &mut self.draft,
        }
    }

    fn lane(&self, lane: Lane) -> &VecDeque<Waiting<T>> {
        match lane {
            Lane::Short => &self.short,
            Lane::Draft => &self.draft,
        }
    }

    /// Whose turn it is, or `None` when nothing waits.
    fn turn(&self) -> Option<Lane> {
        match (self.short.is_empty(), self.draft.is_empty()) {
            (true, true) => None,
            (false, true) => Some(Lane::Short),
            (true, false) => Some(Lane::Draft),
            (false, false) if self.short_streak >= self.settings.short_burst => Some(Lane::Draft),
            (false, false) => Some(Lane::Short),
        }
    }

    /// Picks (index in lane, slot, whether it matched the slot's warm affinity).
    fn choose(&self, lane: Lane) -> Option<(usize, u32, bool)> {
        let queue = self.lane(lane);
        let free_tokens =
            u64::from(self.settings.max_inflight_tokens).saturating_sub(self.in_flight_tokens);
        let lookahead = self.settings.affinity_lookahead.max(1) as usize;
        let limit = self.settings.affinity_lookahead;
        let mut first_fit: Option<usize> = None;
        for (index, waiting) in queue.iter().enumerate().take(lookahead) {
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
    fn free_warm_slot(&self, affinity: u64) -> Option<u32> {
        self.slots
            .iter()
            .position(|s| !s.busy && s.warm == Some(affinity))
            .map(|i| i as u32)
    }

    /// A free permit that is not held: one never used, else the one free the longest.
    fn free_cold_slot(&self) -> Option<u32> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.busy && s.hold_until.is_none())
            .min_by_key(|(_, s)| (s.warm.is_some(), s.freed_seq))
            .map(|(i, _)| i as u32)
    }

    fn start(
        &mut self,
        lane: Lane,
        index: usize,
        slot: u32,
        warm_match: bool,
        now: Instant,
    ) -> Assignment<T> {
        let draft_waiting = !self.draft.is_empty();
        let queue = self.lane_mut(lane);
        for earlier in queue.iter_mut().take(index) {
            earlier.overtaken += 1;
        }
        let waiting = queue
            .remove(index)
            .expect("choose returned an index inside the lane");
        match lane {
            Lane::Short if draft_waiting => self.short_streak += 1,
            Lane::Short | Lane::Draft => self.short_streak = 0,
        }
        let cost = waiting.spec.cost;
        self.queued_tokens -= u64::from(cost);
        self.in_flight_tokens += u64::from(cost);
        self.in_flight += 1;
        let state = &mut self.slots[slot as usize];
        state.busy = true;
        state.hold_until = None;
        self.counters.dispatched += 1;
        if warm_match {
            self.counters.affinity_hits += 1;
        }
        Assignment {
            id: waiting.id,
            slot,
            cost,
            lane,
            affinity: waiting.spec.affinity,
            warm: warm_match,
            waited: now.saturating_duration_since(waiting.enqueued_at),
            payload: waiting.payload,
        }
    }
}

#[cfg(test)]
mod tests;
