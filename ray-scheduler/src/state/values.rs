//! What goes into the scheduler core and what comes out: a job's request ([`JobSpec`]), a
//! refusal ([`Reject`]), a start ([`Assignment`]), the counters and the snapshot.

use std::time::Duration;

use ray_core::wire::{Lane, Priority, PriorityClass};

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
