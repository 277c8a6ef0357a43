//! The scheduling decisions as a plain synchronous struct: who is admitted, who waits, who runs
//! next on which permit. No clock, no locks, no async: the shell passes `now` in.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use ray_core::wire::{Lane, Priority, PriorityClass};

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
    /// Its priority class and level.
    pub priority: Priority,
    /// Who sent it, for fair share (a hash of the API key, or of the client address); jobs of
    /// different senders at the same priority share the permits by `weight`.
    pub sender: u64,
    /// The sender's fairness weight, at least 1.
    pub weight: u32,
}

impl JobSpec {
    /// An `interactive` job of the anonymous sender with weight 1.
    pub const fn new(cost: u32, lane: Lane, affinity: Option<u64>) -> JobSpec {
        JobSpec {
            cost,
            lane,
            affinity,
            priority: Priority::of(PriorityClass::Interactive),
            sender: 0,
            weight: 1,
        }
    }
}

impl Default for JobSpec {
    fn default() -> JobSpec {
        JobSpec::new(0, Lane::Draft, None)
    }
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
    /// By the service-time estimate, the job could not start within its deadline or its
    /// class's `maxWaitMs`, or admitting it would make a waiting job miss its own bound.
    WaitExceedsDeadline {
        /// The job's class.
        class: PriorityClass,
        /// When it would start, from now, by the estimate.
        estimated_wait: Duration,
        /// The wait it was allowed: its deadline or its class bound, whichever is sooner.
        allowed: Duration,
        /// When to try again (at least the estimated wait, at least one service time).
        retry_after: Duration,
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
    /// Its priority.
    pub priority: Priority,
    /// True when the job started ahead of the preferred order because its wait bound required
    /// it (aging), false when it was the preferred choice.
    pub forced: bool,
}

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
    /// Jobs started, by class ([`PriorityClass::index`]).
    pub started_by_class: [u64; 3],
    /// Jobs started ahead of the preferred order because their wait bound required it.
    pub aged_starts: u64,
    /// Jobs refused because they could not start within their deadline or class bound, by
    /// class.
    pub rejected_wait_by_class: [u64; 3],
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
    /// Waiting jobs, by class.
    pub depth_by_class: [u32; 3],
    /// Executing jobs of the `batch` and `background` classes.
    pub lower_in_flight: u32,
    /// The running estimate of one job's service time (permit held), once a job finished.
    pub service_estimate: Option<Duration>,
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
///    [`Reject::QueuedTokens`]). Once a service time has been measured, a job whose estimated
///    start lies beyond its deadline or its class's `maxWaitMs`, or whose admission would push
///    a waiting job past its own bound, is refused at once ([`Reject::WaitExceedsDeadline`]).
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
    senders: HashMap<u64, SenderState>,
    virtual_clock: u64,
    estimate: Option<Duration>,
    counters: Counters,
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
            senders: HashMap::new(),
            virtual_clock: 0,
            estimate: None,
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

    /// Removes a waiting job (its caller left or its deadline passed), returning its place and
    /// token reservation at once. Returns its payload, or `None` if it was not waiting.
    pub fn cancel(&mut self, id: u64) -> Option<Option<T>> {
        for lane in [Lane::Short, Lane::Draft] {
            let queue = self.lane_mut(lane);
            if let Some(index) = queue.iter().position(|w| w.id == id) {
                let waiting = queue.remove(index)?;
                self.queued_tokens -= u64::from(waiting.spec.cost);
                self.counters.cancelled += 1;
                self.sender_left(waiting.spec.sender);
                return Some(waiting.payload);
            }
        }
        None
    }

    /// A job that ran on `slot` with `cost` and `affinity` finished; its permit and tokens are
    /// free again, and the time it held the permit updates the service-time estimate.
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
        if let Some(started) = started {
            let sample = now.saturating_duration_since(started);
            // An exponentially weighted mean (1/4 to the new sample): it follows a change of
            // model or prompt mix within a few jobs without jumping on one outlier.
            self.estimate = Some(match self.estimate {
                None => sample,
                Some(old) => (old * 3 + sample) / 4,
            });
        }
        // Hold the permit for its warm family only when there is contention to gain from, and
        // only when no waiting job would miss its bound for it.
        let warm = self.slots[slot as usize].warm;
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

    /// The estimated wait of a new job of each class at level 0 arriving now (indexed by
    /// [`PriorityClass::index`]), or `None` before any job finished.
    pub fn estimated_waits(&self, now: Instant) -> Option<[Duration; 3]> {
        self.estimate?;
        let mut waits = [Duration::ZERO; 3];
        for class in PriorityClass::ALL {
            let extra = Extra {
                class,
                start_by: now + self.settings.max_wait(class),
            };
            let (_, start) = self.late_jobs(now, None, Some(extra));
            waits[class.index()] =
                start.map_or(Duration::ZERO, |s| s.saturating_duration_since(now));
        }
        Some(waits)
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

    /// The longest a job of this priority may wait: its class bound, a tenth shorter per level.
    fn bound(&self, priority: Priority) -> Duration {
        let base = self.settings.max_wait(priority.class);
        let level = u32::from(priority.level.min(ray_core::wire::MAX_PRIORITY_LEVEL));
        base * (10 - level) / 10
    }

    /// Refuses a job whose estimated start lies past its latest start (its bound, or too late to
    /// finish by its deadline), or whose admission
    /// would push a waiting job past its own bound.
    fn check_wait(&self, spec: JobSpec, now: Instant, start_by: Instant) -> Option<Reject> {
        let estimate = self.estimate?;
        let lower_ok = spec.priority.class == PriorityClass::Interactive
            || self.lower_in_flight < self.settings.lower_class_permits();
        let free = self.slots.iter().any(|s| !s.busy && s.hold_until.is_none());
        if self.depth() == 0 && free && lower_ok {
            return None;
        }
        let allowed_until = start_by;
        let extra = Extra {
            class: spec.priority.class,
            start_by,
        };
        let (late, start) = self.late_jobs(now, None, Some(extra));
        let start = start.unwrap_or(now);
        let own_late = start > allowed_until;
        let others_late = late - usize::from(start > start_by);
        let pushes_others = others_late > 0 && others_late > self.late_jobs(now, None, None).0;
        if !own_late && !pushes_others {
            return None;
        }
        let estimated_wait = start.saturating_duration_since(now);
        Some(Reject::WaitExceedsDeadline {
            class: spec.priority.class,
            estimated_wait,
            allowed: allowed_until.saturating_duration_since(now),
            retry_after: estimated_wait.max(estimate),
        })
    }

    /// Simulates the earliest-deadline-first order from `now` with the service-time estimate:
    /// `placed` starts now on its permit, `extra` is a job not yet queued. Returns how many
    /// jobs would start past their latest start, and when `extra` would start.
    fn late_jobs(
        &self,
        now: Instant,
        placed: Option<(u64, u32)>,
        extra: Option<Extra>,
    ) -> (usize, Option<Instant>) {
        let Some(estimate) = self.estimate else {
            return (0, extra.map(|_| now));
        };
        let mut free_at: Vec<Instant> = self
            .slots
            .iter()
            .map(|s| {
                if s.busy {
                    s.started.map_or(now, |t| (t + estimate).max(now))
                } else {
                    s.hold_until.unwrap_or(now).max(now)
                }
            })
            .collect();
        let lower_cap = self.settings.lower_class_permits() as usize;
        let mut lower_ends: Vec<Instant> = self
            .slots
            .iter()
            .filter(|s| s.busy && s.class != PriorityClass::Interactive)
            .map(|s| s.started.map_or(now, |t| (t + estimate).max(now)))
            .collect();
        let mut jobs: Vec<(Instant, u64, PriorityClass)> = self
            .short
            .iter()
            .chain(&self.draft)
            .filter_map(|w| {
                if let Some((id, slot)) = placed
                    && id == w.id
                {
                    free_at[slot as usize] = now + estimate;
                    if w.spec.priority.class != PriorityClass::Interactive {
                        lower_ends.push(now + estimate);
                    }
                    return None;
                }
                Some((w.start_by, w.id, w.spec.priority.class))
            })
            .collect();
        if let Some(extra) = extra {
            jobs.push((extra.start_by, u64::MAX, extra.class));
        }
        jobs.sort_unstable_by_key(|&(start_by, id, _)| (start_by, id));
        let mut late = 0;
        let mut extra_start = None;
        for (start_by, id, class) in jobs {
            let (index, mut at) = free_at
                .iter()
                .copied()
                .enumerate()
                .min_by_key(|&(_, t)| t)
                .unwrap_or((0, now));
            if class != PriorityClass::Interactive {
                if lower_ends.len() >= lower_cap {
                    let (earliest, end) = lower_ends
                        .iter()
                        .copied()
                        .enumerate()
                        .min_by_key(|&(_, t)| t)
                        .unwrap_or((0, now));
                    lower_ends.swap_remove(earliest);
                    at = at.max(end);
                }
                lower_ends.push(at + estimate);
            }
            free_at[index] = at + estimate;
            if at > start_by {
                late += 1;
            }
            if id == u64::MAX {
                extra_start = Some(at);
            }
        }
        (late, extra_start)
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

    /// The preferred job (rules 3 to 6) that can start now on a free permit.
    fn preferred(&self, lower_ok: bool) -> Option<Choice> {
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
    fn most_urgent(&self, lower_ok: bool) -> Option<Choice> {
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
    fn choose<'a>(
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

/// A job not yet queued, in a simulation.
#[derive(Debug, Clone, Copy)]
struct Extra {
    class: PriorityClass,
    start_by: Instant,
}

#[cfg(test)]
mod tests;
