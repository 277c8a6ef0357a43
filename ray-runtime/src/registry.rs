//! The model registry: every configured model with the machinery in front of it (provider,
//! scheduler, in-flight sharing, health, learned caps, cooldown), keyed by id and alias.
//!
//! A request is resolved to exactly one entry at the normalise step ([`crate::routing`]) and
//! carries its `Arc<ModelEntry>` through every later step, so no step reaches for "the" model.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use ray_core::config::{ModelConfig, RayConfig, SchedulerConfig};
use ray_core::wire::ProviderStatus;
use ray_core::{ErrorCode, RayError};
use ray_models::Provider;
use ray_scheduler::{Flights, Scheduler, SchedulerSettings};
use tokio::time::Instant;

use crate::metrics::CodeCounters;
use crate::model_health::HealthState;
use crate::outcome::ExecResult;
use crate::tuning::Tuner;

/// Identical requests in flight for one model: keyed by the dedupe key, with the stream's text
/// as progress and the execution as the result.
pub(crate) type ModelFlights = Flights<u128, Arc<str>, ExecResult>;

/// One model and the machinery in front of it.
pub(crate) struct ModelEntry {
    pub(crate) id: String,
    /// The entry's config (for a one-model config, `model`).
    pub(crate) config: ModelConfig,
    /// The scheduler limits in force for this model (its own, else the top-level ones).
    pub(crate) limits: SchedulerConfig,
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) scheduler: Scheduler,
    pub(crate) flights: Arc<ModelFlights>,
    pub(crate) health: HealthState,
    pub(crate) tuner: Tuner,
    pub(crate) cooldown: Mutex<Cooldown>,
    /// Whether `cooldown` counts any failure (set and cleared under its lock): while it does
    /// not, a request neither checks nor resets the cooldown under the lock.
    failing: std::sync::atomic::AtomicBool,
    pub(crate) counters: ModelCounters,
    /// Its index in the lifecycle, when it is a managed model under the `lifecycle` section.
    pub(crate) lifecycle: Option<usize>,
}

impl fmt::Debug for ModelEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelEntry")
            .field("id", &self.id)
            .field("provider", &self.provider.kind())
            .finish()
    }
}

/// Per-model request counters (labelled `model` in `/metrics`).
#[derive(Debug, Default)]
pub(crate) struct ModelCounters {
    /// Requests this model was chosen for (before any fallback).
    pub(crate) routed: AtomicU64,
    /// Requests this model answered (cache hits included).
    pub(crate) served: AtomicU64,
    /// Requests that moved from this model to its fallback.
    pub(crate) fell_back: AtomicU64,
    /// Times the model went into cooldown.
    pub(crate) cooldowns: AtomicU64,
    /// Requests this model last tried that ended with an error, by code.
    pub(crate) errors: CodeCounters,
    /// A moving average of the backend's time per execution, in microseconds (0: none yet).
    pub(crate) service_us: AtomicU64,
    /// A managed model's load count when its provider last learned of a new process.
    pub(crate) loads_seen: AtomicU64,
}

impl ModelCounters {
    /// Folds one execution's backend time into the moving average (weight 1/8).
    pub(crate) fn note_service(&self, took: Duration) {
        let sample = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let _ = self
            .service_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    sample
                } else {
                    old - old / 8 + sample / 8
                })
            });
    }
}

impl ModelEntry {
    /// Builds the entry for `model` under `config`, served by `provider`.
    pub(crate) fn new(
        config: &RayConfig,
        model: &ModelConfig,
        provider: Arc<dyn Provider>,
    ) -> ModelEntry {
        let limits = effective_limits(&config.scheduler, model);
        ModelEntry {
            id: model.id.clone(),
            config: model.clone(),
            scheduler: Scheduler::new(
                SchedulerSettings::from_config(&limits).with_priority(&config.priority),
            ),
            flights: Arc::new(Flights::new(limits.max_dedupe_waiters as usize)),
            limits,
            provider,
            health: HealthState::new(model.warm_on_boot),
            tuner: Tuner::new(&config.adaptive_tuning),
            cooldown: Mutex::new(Cooldown::default()),
            failing: std::sync::atomic::AtomicBool::new(false),
            counters: ModelCounters::default(),
            lifecycle: None,
        }
    }

    /// The context window a request must fit: the backend's, else the launch profile's
    /// `ctxSize`, else `operational.preferredCtxSize`, else `contextWindow`.
    pub(crate) fn context_window(&self) -> u32 {
        let model = &self.config;
        self.provider
            .context_window()
            .or_else(|| model.adapter.launch_profile().map(|l| l.ctx_size))
            .or_else(|| {
                model
                    .operational
                    .as_ref()
                    .and_then(|o| o.preferred_ctx_size)
            })
            .unwrap_or(model.context_window)
    }

    /// Why a request should not be sent to this model now: in cooldown, or its backend known
    /// to be down or loading.
    pub(crate) fn refusal(&self, now: Instant) -> Option<RayError> {
        self.cooldown_refusal(now).or_else(|| self.health.refusal())
    }

    /// `503 provider_unavailable` while the model is in cooldown.
    pub(crate) fn cooldown_refusal(&self, now: Instant) -> Option<RayError> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        let cooldown = self.cooldown.lock();
        if let Some(until) = cooldown.active_until(now) {
            let retry = until.saturating_duration_since(now);
            return Some(
                RayError::new(
                    ErrorCode::ProviderUnavailable,
                    format!(
                        "The model {:?} is in cooldown for another {} ms after {} failures in a \
                         row ({})",
                        self.id,
                        retry.as_millis(),
                        cooldown.failures,
                        cooldown.reason.as_deref().unwrap_or("backend failures"),
                    ),
                )
                .with_retry_after(retry.as_secs().max(1) as u32)
                .with_details(serde_json::json!({
                    "model": self.id,
                    "cooldownUntilMs": retry.as_millis() as u64,
                    "failures": cooldown.failures,
                })),
            );
        }
        None
    }

    /// A backend failure: counts towards cooldown when it says the backend is down.
    pub(crate) fn note_failure(&self, error: &RayError, threshold: u32, cooldown: Duration) {
        // A backend that is loading is not failing: warming never counts, and the lifecycle
        // keeps its own retry window for a managed model whose load failed.
        if !backend_down(error.code())
            || matches!(
                error.code(),
                ErrorCode::ProviderWarming | ErrorCode::ModelLoading | ErrorCode::ModelDoesNotFit
            )
        {
            return;
        }
        let entered = {
            let mut state = self.cooldown.lock();
            let entered = state.fail(
                Instant::now(),
                format!("{}: {}", error.code(), error.message()),
                threshold,
                cooldown,
            );
            self.failing.store(state.failures > 0, Ordering::Release);
            entered
        };
        if entered {
            self.counters.cooldowns.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                model = %self.id,
                code = %error.code(),
                cooldown_ms = cooldown.as_millis() as u64,
                "model in cooldown after repeated backend failures"
            );
        }
    }

    /// A success (a request, or a probe that found the backend up) ends any cooldown.
    pub(crate) fn note_success(&self) {
        if !self.failing.load(Ordering::Acquire) {
            return;
        }
        let mut cooldown = self.cooldown.lock();
        if cooldown.failures > 0 {
            let was = cooldown.until.is_some();
            *cooldown = Cooldown::default();
            self.failing.store(false, Ordering::Release);
            drop(cooldown);
            if was {
                tracing::info!(model = %self.id, "model out of cooldown: its backend answers again");
            }
        }
    }

    /// The model's state for `/health` and `/v1/models`: `cooldown` over the provider status.
    pub(crate) fn state(&self, status: ProviderStatus, now: Instant) -> &'static str {
        if self.cooldown.lock().active_until(now).is_some() {
            return "cooldown";
        }
        match status {
            ProviderStatus::Ready => "ready",
            ProviderStatus::Degraded => "degraded",
            ProviderStatus::Warming => "loading",
            ProviderStatus::Unavailable => "unavailable",
            ProviderStatus::Unknown => "unknown",
        }
    }
}

/// Error codes that say the backend is down or refusing work (as opposed to a bad request or
/// Ray's own limits): they count towards cooldown and move a request to its fallback.
pub(crate) fn backend_down(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::ProviderUnavailable
            | ErrorCode::ProviderWarming
            | ErrorCode::ProviderUpstreamError
            | ErrorCode::ProviderRequestFailed
            | ErrorCode::ProviderInvalidResponse
            | ErrorCode::ProviderTimeout
            | ErrorCode::ModelLoading
            | ErrorCode::ModelDoesNotFit
    )
}

/// Consecutive failures and, past the threshold, the end of the cooldown. A pure state
/// machine driven by events with their time, so it is tested without a clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cooldown {
    pub(crate) failures: u32,
    pub(crate) until: Option<Instant>,
    pub(crate) reason: Option<String>,
}

impl Cooldown {
    /// Records a failure at `now`; returns whether the model entered (or re-entered) cooldown.
    /// Each failure at or past the threshold starts a full new cooldown: a model that fails
    /// again right after its cooldown ended never gets a shorter one.
    pub(crate) fn fail(
        &mut self,
        now: Instant,
        reason: String,
        threshold: u32,
        length: Duration,
    ) -> bool {
        self.failures = self.failures.saturating_add(1);
        self.reason = Some(reason);
        if self.failures >= threshold.max(1) {
            let was_active = self.active_until(now).is_some();
            let until = now + length;
            self.until = Some(self.until.map_or(until, |u| u.max(until)));
            return !was_active;
        }
        false
    }

    /// The end of the cooldown, while it lasts.
    pub(crate) fn active_until(&self, now: Instant) -> Option<Instant> {
        self.until.filter(|until| *until > now)
    }
}

/// The scheduler section in force for `model`: its own limits over the top-level ones.
pub(crate) fn effective_limits(top: &SchedulerConfig, model: &ModelConfig) -> SchedulerConfig {
    let mut limits = top.clone();
    if let Some(own) = &model.scheduler {
        if let Some(v) = own.concurrency {
            limits.concurrency = v;
        }
        if let Some(v) = own.max_queue {
            limits.max_queue = v;
        }
        if let Some(v) = own.max_queued_tokens {
            limits.max_queued_tokens = v;
        }
        if let Some(v) = own.max_inflight_tokens {
            limits.max_inflight_tokens = v;
        }
        limits.affinity_lookahead = limits.affinity_lookahead.min(limits.max_queue);
    }
    limits
}

/// Every model, by id and alias, and the default.
pub(crate) struct Registry {
    entries: Vec<Arc<ModelEntry>>,
    names: HashMap<String, usize>,
    default: usize,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries.iter()).finish()
    }
}

impl Registry {
    /// The registry of `entries` (in config order) with `default_id` as the default.
    pub(crate) fn new(entries: Vec<Arc<ModelEntry>>, default_id: &str) -> Registry {
        let mut names = HashMap::new();
        for (index, entry) in entries.iter().enumerate() {
            names.insert(entry.id.clone(), index);
            for alias in &entry.config.aliases {
                names.entry(alias.clone()).or_insert(index);
            }
        }
        // The name the backend knows a model by (`modelRef`) is accepted too, below every id
        // and alias, as the existing Ray's OpenAI routes accepted it.
        for (index, entry) in entries.iter().enumerate() {
            if let Some(http) = entry.config.adapter.http() {
                names.entry(http.model_ref.to_string()).or_insert(index);
            }
        }
        let default = names.get(default_id).copied().unwrap_or(0);
        Registry {
            entries,
            names,
            default,
        }
    }

    /// Every entry, in config order.
    pub(crate) fn entries(&self) -> &[Arc<ModelEntry>] {
        &self.entries
    }

    /// The index of the model `name` (id or alias) stands for.
    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.names.get(name).copied()
    }

    /// The entry `name` (id or alias) stands for.
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<ModelEntry>> {
        self.index_of(name).map(|i| &self.entries[i])
    }

    /// The entry at `index`.
    pub(crate) fn at(&self, index: usize) -> &Arc<ModelEntry> {
        &self.entries[index]
    }

    /// The default model.
    pub(crate) fn default_entry(&self) -> &Arc<ModelEntry> {
        &self.entries[self.default]
    }

    /// The default model's index.
    pub(crate) fn default_index(&self) -> usize {
        self.default
    }

    /// `404 model_not_found` for `name`, listing the names that exist.
    pub(crate) fn not_found(&self, name: &str) -> RayError {
        let mut names: Vec<&str> = Vec::new();
        for entry in &self.entries {
            names.push(&entry.id);
            names.extend(entry.config.aliases.iter().map(String::as_str));
        }
        RayError::new(
            ErrorCode::ModelNotFound,
            format!(
                "The model {name:?} does not exist here; the models are {} (or \"auto\" to route \
                 by rules)",
                names.join(", ")
            ),
        )
        .with_details(serde_json::json!({ "param": "model", "available": names }))
    }

    /// The fallback order after `first`: its fallback models, then theirs, each model once.
    pub(crate) fn fallback_chain(&self, first: usize) -> Vec<usize> {
        let mut order = vec![first];
        let mut next = 0;
        while next < order.len() {
            let entry = &self.entries[order[next]];
            for name in &entry.config.fallback {
                if let Some(index) = self.index_of(name)
                    && !order.contains(&index)
                {
                    order.push(index);
                }
            }
            next += 1;
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooldown_starts_at_the_threshold_and_never_shortens() {
        let start = Instant::now();
        let mut c = Cooldown::default();
        let len = Duration::from_secs(10);
        assert!(!c.fail(start, "a".into(), 3, len));
        assert!(!c.fail(start, "b".into(), 3, len));
        assert!(c.active_until(start).is_none());
        assert!(
            c.fail(start, "c".into(), 3, len),
            "third failure enters cooldown"
        );
        assert_eq!(c.active_until(start), Some(start + len));
        // A failure during the cooldown extends it; it never shortens it.
        let later = start + Duration::from_secs(5);
        assert!(!c.fail(later, "d".into(), 3, len));
        assert_eq!(c.active_until(later), Some(later + len));
        // After it ends, one more failure starts a full new one.
        let after = later + len + Duration::from_millis(1);
        assert!(c.active_until(after).is_none());
        assert!(c.fail(after, "e".into(), 3, len));
        assert_eq!(c.active_until(after), Some(after + len));
        assert_eq!(c.reason.as_deref(), Some("e"));
    }
}
