//! The scheduling decisions as a plain synchronous struct: who is admitted, who waits, who runs
//! next on which permit. No clock, no locks, no async: the shell passes `now` in.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use ray_core::wire::{Lane, PriorityClass};

use crate::settings::SchedulerSettings;

mod choice;
mod values;
mod wait;

pub use values::{Assignment, BudgetKind, Counters, JobSpec, Reject, StateSnapshot};

#[derive(Debug)]
struct Waiting<T> {
    id: u64,
    spec: JobSpec,
    enqueued_at: Instant,
    /// The latest start its class bound and its deadline allow.
    start_by: Instant,
    /// How many later jobs of its lane started before it.
    overtaken: u32,
    payload: Option<T>,
}

/// Hashing of the senders map's keys. A sender is already a hash of a key id or a client
/// address, so a multiply with a per-process random seed spreads it well; SipHash, the
/// default, costs several times more on every admission and start.
#[derive(Debug, Clone, Copy)]
struct SenderHashing(u64);

impl SenderHashing {
    fn new() -> SenderHashing {
        use std::hash::{BuildHasher, Hasher};
        // The standard library's random keys, read once per scheduler.
        let mut seed = std::collections::hash_map::RandomState::new().build_hasher();
        seed.write_u64(0x5bd1_e995);
        SenderHashing(seed.finish() | 1)
    }
}

impl std::hash::BuildHasher for SenderHashing {
    type Hasher = SenderHasher;

    fn build_hasher(&self) -> SenderHasher {
        SenderHasher {
            seed: self.0,
            state: 0,
        }
    }
}

/// The hasher of [`SenderHashing`]: a seeded multiply of the `u64` key, folded.
#[derive(Debug)]
struct SenderHasher {
    seed: u64,
    state: u64,
}

impl std::hash::Hasher for SenderHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed; bytes (never written) are folded in all the same.
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        let mixed = u128::from(self.state ^ value ^ self.seed) * 0x9e37_79b9_7f4a_7c15;
        self.state = (mixed as u64) ^ ((mixed >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

/// Fair-share state of one sender with waiting jobs (start-time fair queueing over jobs).
#[derive(Debug, Clone, Copy, Default)]
struct SenderState {
    /// Virtual finish of its last started job.
    finish: u64,
    /// Its waiting jobs.
    waiting: u32,
}

/// One started job in virtual time, for a weight of 1.
const FAIR_UNIT: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    busy: bool,
    /// The running job's class and when it started.
    class: PriorityClass,
    started: Option<Instant>,
    /// Affinity of the last job that ran here.
    warm: Option<u64>,
    /// Held for a job of `warm`'s family until this instant.
    hold_until: Option<Instant>,
    /// Order in which slots became free (higher is more recent).
    freed_seq: u64,
}

/// The scheduler's decisions, with no clock, lock or runtime of its own.
///
/// The rules, in order:
///
/// 1. **Admission.** A job whose cost exceeds either token budget is refused outright
///    ([`Reject::TokenBudget`]); a job that would make the queue deeper than `maxQueue`, or its
///    reserved tokens larger than `maxQueuedTokens`, is refused ([`Reject::QueueDepth`],
///    [`Reject::QueuedTokens`]). Once a service time has been measured, a job whose estimated
///    start lies beyond its deadline or its class's `maxWaitMs`, or whose admission would push
///    a waiting job past its own bound, is refused at once ([`Reject::WaitExceedsDeadline`]).
///    Before that nothing can be estimated and jobs are admitted on the other rules alone;
///    when the first service time is measured, the jobs still waiting are admitted again in
///    arrival order by the estimate, and those it refuses go to
///    [`SchedulerState::take_evicted`].
///    A `batch` or `background` job must start one interactive `maxWaitMs` before its class
///    bound ends (that room is kept for interactive jobs). When a job cannot be admitted, the
///    youngest waiting job of the sender with the most jobs waiting is refused instead if that
///    sender has at least two more waiting, or the job is of a lower class, and that makes room
///    ([`SchedulerState::take_evicted`]): a flood gives way to another sender's job.
/// 2. **Bound first (aging).** Every waiting job has a latest start: its arrival plus its
///    class's `maxWaitMs` (shortened by a tenth per level), or, if sooner, its deadline less one
///    estimated service time. When a permit frees, the preferred
///    job (rules 3 to 6) starts only if, by the service-time estimate, every other waiting job
///    can still start by its latest start in earliest-deadline order afterwards; otherwise the
///    waiting job with the earliest latest start goes. Waiting therefore raises a job to the
///    front, and while permits turn over as estimated no admitted job waits past its bound.
/// 3. **Class and level.** The preferred job is of the highest class waiting, then the highest
///    level. `batch` and `background` jobs never hold more than `concurrency −
///    reservedInteractive` permits.
/// 4. **Turns.** Within that class and level, the short lane goes first, but after
///    `short_burst` short jobs have started in a row while a draft job waited, the draft lane
///    has the turn for one job.
/// 5. **Fair share.** Within the lane, the sender (API key or client) with the smallest virtual
///    start goes (start-time fair queueing: each started job advances its sender by
///    `1 / weight`), so senders share the permits by weight and one sender's flood cannot
///    starve another. Only senders with waiting jobs are tracked.
/// 6. **Within the sender's jobs**, the head goes first unless a job within the first
///    `affinityLookahead` places matches the warm affinity of a free permit; such a job may
///    overtake the ones before it, but no job is overtaken more than `affinityLookahead` times.
///    Jobs whose cost does not fit the free in-flight token budget are skipped in the same
///    bounded way, and when nothing fits, nothing starts until tokens free up.
/// 7. **Batch window.** When a permit frees while jobs wait and none of the eligible jobs
///    shares its warm affinity, it is held up to `batch_window` for such a job, unless holding
///    it would push a waiting job past its bound; other free permits are used meanwhile.
///    Nothing is held when the queue is empty.
#[derive(Debug)]
pub struct SchedulerState<T> {
    settings: SchedulerSettings,
    short: VecDeque<Waiting<T>>,
    draft: VecDeque<Waiting<T>>,
    slots: Vec<Slot>,
    queued_tokens: u64,
    in_flight_tokens: u64,
    in_flight: u32,
    lower_in_flight: u32,
    short_streak: u32,
    freed_seq: u64,
    senders: HashMap<u64, SenderState, SenderHashing>,
    virtual_clock: u64,
    estimate: Option<Duration>,
    counters: Counters,
    /// Waiting jobs refused to make room for a fairer one (see [`SchedulerState::take_evicted`]).
    evicted: Vec<Evicted<T>>,
}

/// A waiting job refused so that a job of a sender under its fair share, or of a higher class,
/// could be admitted within every bound.
#[derive(Debug)]
pub struct Evicted<T> {
    /// The job's id.
    pub id: u64,
    /// What the shell attached to it.
    pub payload: Option<T>,
    /// The refusal its caller gets.
    pub reject: Reject,
}

/// The choice of a job to start: its lane, index in the lane, permit, and whether the permit
/// was warm for it.
type Choice = (Lane, usize, u32, bool);

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
            lower_in_flight: 0,
            short_streak: 0,
            freed_seq: 0,
            senders: HashMap::with_hasher(SenderHashing::new()),
            virtual_clock: 0,
            estimate: None,
            counters: Counters::default(),
            evicted: Vec::new(),
        }
    }

    /// The waiting jobs refused since the last call, to make room for fairer ones or, when the
    /// first service time was measured, because they could not start within their bound by
    /// it ([`SchedulerState::release`]): the shell answers each with its [`Reject`].
    pub fn take_evicted(&mut self) -> Vec<Evicted<T>> {
        std::mem::take(&mut self.evicted)
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

    /// Why a job within the budgets cannot join the queue now: the queue's depth, its tokens,
    /// or the wait bound ([`SchedulerState::check_wait`]).
    pub(crate) fn admission_problem(
        &self,
        spec: JobSpec,
        now: Instant,
        start_by: Instant,
    ) -> Option<Reject> {
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
            self.check_wait(spec, now, start_by)
        }
    }

    /// Removes the waiting job at `index` of `lane` and gives back its place, tokens and
    /// sender count (what [`SchedulerState::cancel`] and an eviction share).
    fn remove_waiting(&mut self, lane: Lane, index: usize) -> Option<Waiting<T>> {
        let waiting = self.lane_mut(lane).remove(index)?;
        self.queued_tokens -= u64::from(waiting.spec.cost);
        self.sender_left(waiting.spec.sender);
        Some(waiting)
    }

    /// Queues a job with no deadline of its own (its class bound still applies), or refuses
    /// it. Call [`SchedulerState::next`] afterwards to start whatever can start (possibly this
    /// job).
    pub fn submit(
        &mut self,
        id: u64,
        spec: JobSpec,
        now: Instant,
        payload: Option<T>,
    ) -> Result<(), Reject> {
        self.submit_until(id, spec, now, None, payload)
    }

    /// Queues a job that must start before `deadline`, or refuses it.
    pub fn submit_until(
        &mut self,
        id: u64,
        spec: JobSpec,
        now: Instant,
        deadline: Option<Instant>,
        payload: Option<T>,
    ) -> Result<(), Reject> {
        // The latest start: the class bound, or the last moment from which the job can still
        // finish by its deadline (by the estimate) when that comes first, so an admitted job
        // is not left to time out either.
        let bound = now + self.bound(spec.priority);
        let start_by = deadline.map_or(bound, |d| {
            let finish_by = d
                .checked_sub(self.estimate.unwrap_or_default())
                .unwrap_or(now)
                .max(now);
            finish_by.min(bound)
        });
        let rejection = self.check_budget(spec.cost).err().or_else(|| {
            self.admission_problem(spec, now, start_by)
                .filter(|_| !self.make_fair_room(&spec, now, start_by))
        });
        if let Some(reject) = rejection {
            match reject {
                Reject::TokenBudget { .. } => self.counters.rejected_token_budget += 1,
                Reject::QueueDepth { .. } => self.counters.rejected_queue_depth += 1,
                Reject::QueuedTokens { .. } => self.counters.rejected_queued_tokens += 1,
                Reject::WaitExceedsDeadline { class, .. } => {
                    self.counters.rejected_wait_by_class[class.index()] += 1
                }
            }
            return Err(reject);
        }
        self.queued_tokens += u64::from(spec.cost);
        self.counters.submitted += 1;
        let clock = self.virtual_clock;
        let sender = self.senders.entry(spec.sender).or_insert(SenderState {
            finish: clock,
            waiting: 0,
        });
        sender.waiting += 1;
        self.lane_mut(spec.lane).push_back(Waiting {
            id,
            spec,
            enqueued_at: now,
            start_by,
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

    /// Removes every waiting job (counted as cancelled) and returns their payloads: the
    /// scheduler shuts down and will not run them.
    pub fn cancel_all(&mut self) -> Vec<Option<T>> {
        let ids: Vec<u64> = self.short.iter().chain(&self.draft).map(|w| w.id).collect();
        ids.into_iter().filter_map(|id| self.cancel(id)).collect()
    }

    /// Removes a waiting job (its caller left or its deadline passed), returning its place and
    /// token reservation at once. Returns its payload, or `None` if it was not waiting.
    pub fn cancel(&mut self, id: u64) -> Option<Option<T>> {
        for lane in [Lane::Short, Lane::Draft] {
            let queue = self.lane_mut(lane);
            if let Some(index) = queue.iter().position(|w| w.id == id) {
                let waiting = self.remove_waiting(lane, index)?;
                self.counters.cancelled += 1;
                return Some(waiting.payload);
            }
        }
        None
    }

    /// A job that ran on `slot` with `cost` and `affinity` finished; its permit and tokens are
    /// free again, and the time it held the permit updates the service-time estimate. When
    /// this is the first service time measured, the waiting jobs (admitted without an
    /// estimate) are admitted again by it, and those it refuses go to
    /// [`SchedulerState::take_evicted`].
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
        let class = state.class;
        let started = state.started.take();
        self.in_flight -= 1;
        self.in_flight_tokens -= u64::from(cost);
        if class != PriorityClass::Interactive {
            self.lower_in_flight = self.lower_in_flight.saturating_sub(1);
        }
        let first_estimate = self.estimate.is_none();
        if let Some(started) = started {
            let sample = now.saturating_duration_since(started);
            // An exponentially weighted mean (1/4 to the new sample): it follows a change of
            // model or prompt mix within a few jobs without jumping on one outlier.
            self.estimate = Some(match self.estimate {
                None => sample,
                Some(old) => (old * 3 + sample) / 4,
            });
            if first_estimate {
                self.readmit_unestimated(now);
            }
        }
        // Hold the permit for its warm family only when there is contention to gain from, and
        // only when no waiting job would miss its bound for it.
        let warm = self.slots[slot as usize].warm;
        let contention = contention && self.depth() > 0;
        if !self.settings.batch_window.is_zero() && warm.is_some() && contention {
            let until = now + self.settings.batch_window;
            self.slots[slot as usize].hold_until = Some(until);
            if self.late_jobs(now, None, None).0 == 0 {
                self.counters.holds += 1;
            } else {
                self.slots[slot as usize].hold_until = None;
            }
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
        let lower_ok = self.lower_in_flight < self.settings.lower_class_permits();
        let preferred = self.preferred(lower_ok);
        // With no estimate yet, or one job waiting, there is no bound to protect.
        if self.estimate.is_none() || self.depth() <= 1 {
            let (lane, index, slot, warm) = preferred?;
            return Some(self.start(lane, index, slot, warm, false, now));
        }
        if let Some((lane, index, slot, warm)) = preferred {
            let id = self.lane(lane)[index].id;
            if self.late_jobs(now, Some((id, slot)), None).0 == 0 {
                return Some(self.start(lane, index, slot, warm, false, now));
            }
        }
        // Aging: the job whose latest start is earliest goes, if it fits; else the preferred.
        match self.most_urgent(lower_ok) {
            Some((lane, index, slot, warm)) => {
                let forced = preferred.is_none_or(|(l, i, _, _)| (l, i) != (lane, index));
                Some(self.start(lane, index, slot, warm, forced, now))
            }
            None => {
                let (lane, index, slot, warm) = preferred?;
                Some(self.start(lane, index, slot, warm, false, now))
            }
        }
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
        let mut depth_by_class = [0u32; 3];
        for waiting in self.short.iter().chain(&self.draft) {
            depth_by_class[waiting.spec.priority.class.index()] += 1;
        }
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
            depth_by_class,
            lower_in_flight: self.lower_in_flight,
            service_estimate: self.estimate,
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

    /// Senders with waiting jobs (never more than jobs wait).
    pub fn tracked_senders(&self) -> usize {
        self.senders.len()
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

    /// A sender's job left the queue (started or cancelled). A sender with nothing waiting is
    /// forgotten (it comes back at the virtual clock, with no credit and no debt), so the
    /// table never holds more senders than jobs wait.
    fn sender_left(&mut self, sender: u64) {
        if let Some(state) = self.senders.get_mut(&sender) {
            state.waiting = state.waiting.saturating_sub(1);
            if state.waiting == 0 {
                self.senders.remove(&sender);
            }
        }
    }

    /// The sender's virtual start: when its next job would start in virtual time.
    fn virtual_start(&self, sender: u64) -> u64 {
        self.senders
            .get(&sender)
            .map_or(self.virtual_clock, |s| s.finish.max(self.virtual_clock))
    }

    fn start(
        &mut self,
        lane: Lane,
        index: usize,
        slot: u32,
        warm_match: bool,
        forced: bool,
        now: Instant,
    ) -> Assignment<T> {
        let draft_waiting = !self.draft.is_empty();
        let queue = self.lane_mut(lane);
        let (sender, priority) = {
            let chosen = &queue[index];
            (chosen.spec.sender, chosen.spec.priority)
        };
        // Earlier jobs of the same lane, sender and priority were overtaken.
        for earlier in queue
            .iter_mut()
            .take(index)
            .filter(|w| w.spec.sender == sender && w.spec.priority == priority)
        {
            earlier.overtaken += 1;
        }
        let waiting = queue
            .remove(index)
            .expect("the choice is an index inside the lane");
        // A start forced by a wait bound is outside the turns and leaves them as they were.
        match lane {
            _ if forced => {}
            Lane::Short if draft_waiting => self.short_streak += 1,
            Lane::Short | Lane::Draft => self.short_streak = 0,
        }
        // Fair share: the sender's job starts at its virtual start and advances it by
        // 1 / weight; the clock never goes back.
        let virtual_start = self.virtual_start(sender);
        self.virtual_clock = self.virtual_clock.max(virtual_start);
        if let Some(state) = self.senders.get_mut(&sender) {
            state.finish = virtual_start + FAIR_UNIT / u64::from(waiting.spec.weight.max(1));
        }
        self.sender_left(sender);
        let cost = waiting.spec.cost;
        let class = waiting.spec.priority.class;
        self.queued_tokens -= u64::from(cost);
        self.in_flight_tokens += u64::from(cost);
        self.in_flight += 1;
        if class != PriorityClass::Interactive {
            self.lower_in_flight += 1;
        }
        let state = &mut self.slots[slot as usize];
        state.busy = true;
        state.hold_until = None;
        state.class = class;
        state.started = Some(now);
        self.counters.dispatched += 1;
        self.counters.started_by_class[class.index()] += 1;
        if forced {
            self.counters.aged_starts += 1;
        }
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
            priority: waiting.spec.priority,
            forced,
        }
    }
}

#[cfg(test)]
mod tests;
