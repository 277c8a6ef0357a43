//! What a node tells its peers about each of its models (`cluster` registry records): the
//! state, whether it serves now, its queue and an estimate of the wait a new request would see.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use crate::registry::ModelEntry;
use crate::runtime::Runtime;

/// One model's condition now, read without waiting (no probe is made).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModelCondition {
    /// The model's id.
    pub id: String,
    /// Its aliases.
    pub aliases: Vec<String>,
    /// `ready`, `degraded`, `loading`, `unavailable`, `unknown` or `cooldown`.
    pub state: &'static str,
    /// Whether a request would be admitted now (no cooldown, backend not known to be down or
    /// loading).
    pub ready: bool,
    /// Requests waiting for its permits.
    pub queue_depth: u32,
    /// Requests executing now.
    pub in_flight: u32,
    /// Its permits.
    pub concurrency: u32,
    /// The wait a new request would see before its backend call starts, in milliseconds: the
    /// requests ahead of it divided by the permits, times the model's recent time per
    /// execution. Before the first execution has finished, the time the oldest waiting request
    /// has waited so far stands in for the time per execution (0 while nothing waits).
    pub estimated_wait_ms: u64,
}

impl Runtime {
    /// The condition of every configured model, in config order.
    pub fn model_conditions(&self) -> Vec<ModelCondition> {
        let now = Instant::now();
        self.live()
            .registry
            .entries()
            .iter()
            .map(|model| condition(model, now))
            .collect()
    }

    /// The condition of the model `name` (an id or alias; `None`, `auto` or an unknown name:
    /// the default model).
    pub fn model_condition(&self, name: Option<&str>) -> ModelCondition {
        let live = self.live();
        let registry = &live.registry;
        let model = name
            .and_then(|n| registry.get(n))
            .unwrap_or_else(|| registry.default_entry());
        condition(model, Instant::now())
    }
}

fn condition(model: &ModelEntry, now: Instant) -> ModelCondition {
    let status = model.health.status_now(model.provider.has_health_probe());
    let snapshot = model.scheduler.snapshot();
    let concurrency = model.limits.concurrency.max(1);
    // Before the first execution has finished there is no measured time per execution. The
    // oldest waiting request's wait so far stands in for it: the executions ahead of it have
    // run about that long already, so a node that is busy from its start does not report a
    // wait of 0 (and overflows to peers) until its first request is done.
    let service_us = match model.counters.service_us.load(Ordering::Relaxed) {
        0 => snapshot.oldest_wait.as_micros().min(u128::from(u64::MAX)) as u64,
        measured => measured,
    };
    // Everything waiting goes first; a new request starts when enough permits turned over:
    // one round per `concurrency` requests ahead, plus one while all permits are busy.
    let busy = u64::from(snapshot.in_flight >= concurrency);
    let rounds = u64::from(snapshot.depth()).div_ceil(u64::from(concurrency)) + busy;
    ModelCondition {
        id: model.id.clone(),
        aliases: model.config.aliases.clone(),
        state: model.state(status, now),
        ready: model.refusal(now).is_none(),
        queue_depth: snapshot.depth(),
        in_flight: snapshot.in_flight,
        concurrency,
        estimated_wait_ms: rounds.saturating_mul(service_us) / 1_000,
    }
}
