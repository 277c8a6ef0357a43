//! The scheduler's own settings: a small struct so the crate never parses config files.

use std::time::Duration;

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
        }
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
        }
    }
}
