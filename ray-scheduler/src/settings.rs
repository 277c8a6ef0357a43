//! The scheduler's own settings: a small struct so the crate never parses config files.

use std::time::Duration;

use ray_core::wire::PriorityClass;

/// How many short jobs may start in a row while a draft job waits; then one draft job goes.
pub const DEFAULT_SHORT_BURST: u32 = 4;

/// Settings of a [`Scheduler`](crate::Scheduler).
///
/// Build them from `ray_core::config::SchedulerConfig` with [`SchedulerSettings::from_config`],
/// or by hand for an embedded scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerSettings {
    /// Jobs executing at once (permits). At least 1.
    pub concurrency: u32,
    /// Jobs waiting at most, across both lanes. At least 1.
    pub max_queue: u32,
    /// Token budget of waiting jobs.
    pub max_queued_tokens: u32,
    /// Token budget of executing jobs.
    pub max_inflight_tokens: u32,
    /// How many queued jobs past a lane's head are considered when a permit frees, and how many
    /// times one waiting job may be overtaken by later jobs of its lane.
    pub affinity_lookahead: u32,
    /// When a permit frees while jobs wait and none of them (within the lookahead) shares the
    /// freed permit's warm affinity, the permit is held this long for such a job to arrive.
    /// Zero disables holding. Nothing is ever held when the queue is empty.
    pub batch_window: Duration,
    /// Short jobs that may start in a row while a draft job waits.
    pub short_burst: u32,
    /// Followers that may join one in-flight execution.
    pub max_dedupe_waiters: u32,
    /// The longest a request of each class (indexed by [`PriorityClass::index`]) may wait for a
    /// permit. A request that cannot start within it, by the scheduler's estimate, is refused
    /// at once; one that was admitted starts within it while permits turn over as estimated.
    pub class_max_wait: [Duration; 3],
    /// Permits `batch` and `background` work may never take, below `concurrency`.
    pub reserved_interactive: u32,
}

/// The default `maxWaitMs` of each class: interactive 2 s, batch 30 s, background 120 s.
pub const DEFAULT_CLASS_MAX_WAIT: [Duration; 3] = [
    Duration::from_secs(2),
    Duration::from_secs(30),
    Duration::from_secs(120),
];

/// The default of `reservedInteractive`: one permit where there are two or more, else none.
pub const fn default_reserved_interactive(concurrency: u32) -> u32 {
    if concurrency >= 2 { 1 } else { 0 }
}

impl SchedulerSettings {
    /// Settings from the `scheduler` section of a Ray config.
    pub fn from_config(config: &ray_core::config::SchedulerConfig) -> SchedulerSettings {
        SchedulerSettings {
            concurrency: config.concurrency.max(1),
            max_queue: config.max_queue.max(1),
            max_queued_tokens: config.max_queued_tokens,
            max_inflight_tokens: config.max_inflight_tokens,
            affinity_lookahead: config.affinity_lookahead.max(1),
            batch_window: Duration::from_millis(config.batch_window_ms),
            short_burst: DEFAULT_SHORT_BURST,
            max_dedupe_waiters: config.max_dedupe_waiters.max(1),
            class_max_wait: DEFAULT_CLASS_MAX_WAIT,
            reserved_interactive: default_reserved_interactive(config.concurrency.max(1)),
        }
    }

    /// These settings with the `priority` section of a Ray config applied: each class's
    /// `maxWaitMs` and `reservedInteractive` (its default depends on `concurrency`). The
    /// reservation is capped so lower classes keep at least one permit.
    pub fn with_priority(
        mut self,
        priority: &ray_core::config::PriorityConfig,
    ) -> SchedulerSettings {
        for class in PriorityClass::ALL {
            self.class_max_wait[class.index()] =
                Duration::from_millis(priority.classes.get(class).max_wait_ms);
        }
        self.reserved_interactive = priority
            .reserved_interactive
            .unwrap_or_else(|| default_reserved_interactive(self.concurrency))
            .min(self.concurrency.saturating_sub(1));
        self
    }

    /// The longest a request of `class` may wait for a permit.
    pub fn max_wait(&self, class: PriorityClass) -> Duration {
        self.class_max_wait[class.index()]
    }

    /// Permits `batch` and `background` work may hold at once.
    pub fn lower_class_permits(&self) -> u32 {
        self.concurrency
            .max(1)
            .saturating_sub(self.reserved_interactive)
            .max(1)
    }
}

impl Default for SchedulerSettings {
    /// One permit, a queue of 32 and generous token budgets: the `tiny` profile's shape.
    fn default() -> SchedulerSettings {
        SchedulerSettings {
            concurrency: 1,
            max_queue: 32,
            max_queued_tokens: 12_000,
            max_inflight_tokens: 2_500,
            affinity_lookahead: 8,
            batch_window: Duration::ZERO,
            short_burst: DEFAULT_SHORT_BURST,
            max_dedupe_waiters: 256,
            class_max_wait: DEFAULT_CLASS_MAX_WAIT,
            reserved_interactive: 0,
        }
    }
}
