//! Adaptive output caps (`adaptiveTuning`): a reduction of `maxTokens` when recent executions
//! waited long in the queue or generated slowly, and learned per-family caps from the
//! completion lengths a prompt family really produces.
//!
//! Both only ever lower `maxTokens`. Memory is bounded: `sampleSize` recent executions (at
//! most 512), and at most [`MAX_FAMILIES`] families of at most `familyHistorySize` (at most
//! 1024) completion lengths each, kept as `u16` (outputs are at most 2048 tokens), so at
//! most 1 MiB of samples however many families clients invent. The family table is an
//! S3-FIFO cache ([`ray_cache`]): a family seen once passes through its small queue and
//! leaves without evicting the families that recur, so a burst of one-off prompts cannot
//! flush what was learned.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ray_cache::{Cache, CacheBounds};
use ray_core::config::AdaptiveTuningConfig;
use ray_core::wire::{
    AdaptiveHealth, AdaptiveTuningDiagnostics, Lane, LearnedCapDiagnostics, OrderedF64,
};

use crate::metrics::MetricsSnapshot;

/// Prompt families whose completion lengths are remembered at most.
pub(crate) const MAX_FAMILIES: usize = 512;

/// Learns from completed executions and lowers `maxTokens` from what it learned.
pub(crate) struct Tuner {
    config: AdaptiveTuningConfig,
    recent: Mutex<VecDeque<Sample>>,
    families: Mutex<Cache<u64, Arc<Mutex<History>>>>,
    reductions: AtomicU64,
    caps_applied: AtomicU64,
    /// `applied / requested` of the last learned-cap decision, as `f64` bits.
    last_cap_ratio: AtomicU64,
    /// `applied / requested` of the last adaptive decision, as `f64` bits.
    last_reduction_ratio: AtomicU64,
}

impl std::fmt::Debug for Tuner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tuner")
            .field("enabled", &self.config.enabled)
            .field("samples", &self.recent.lock().len())
            .field("families", &self.families.lock().len())
            .finish()
    }
}

/// One completed execution.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    queue_ms: f64,
    /// Generation speed, when the backend timed it or reported its token count.
    tokens_per_second: Option<f64>,
}

/// A family's last completion lengths, a ring of at most `capacity`.
#[derive(Debug)]
struct History {
    tokens: Vec<u16>,
    next: usize,
    capacity: usize,
}

impl History {
    fn new(capacity: usize) -> History {
        History {
            tokens: Vec::with_capacity(capacity.min(16)),
            next: 0,
            capacity: capacity.max(1),
        }
    }

    fn push(&mut self, tokens: u16) {
        if self.tokens.len() < self.capacity {
            self.tokens.push(tokens);
        } else {
            self.tokens[self.next] = tokens;
            self.next = (self.next + 1) % self.capacity;
        }
    }
}

/// What a finished execution teaches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Outcome {
    /// The request's prompt family.
    pub(crate) family: u64,
    /// Completion tokens (the backend's count, else output chars / 4).
    pub(crate) completion_tokens: u64,
    /// Time waited for a permit.
    pub(crate) queue_time: Duration,
    /// Generation speed, when known.
    pub(crate) tokens_per_second: Option<f64>,
}

impl Tuner {
    pub(crate) fn new(config: &AdaptiveTuningConfig) -> Tuner {
        let history_bytes = 64 + 2 * u64::from(config.family_history_size.max(1));
        let bounds = CacheBounds {
            max_entries: MAX_FAMILIES,
            max_bytes: history_bytes * MAX_FAMILIES as u64,
            ttl: None,
        };
        Tuner {
            config: config.clone(),
            recent: Mutex::new(VecDeque::with_capacity(config.sample_size as usize)),
            families: Mutex::new(Cache::new(bounds, move |_, _| history_bytes)),
            reductions: AtomicU64::new(0),
            caps_applied: AtomicU64::new(0),
            last_cap_ratio: AtomicU64::new(1f64.to_bits()),
            last_reduction_ratio: AtomicU64::new(1f64.to_bits()),
        }
    }

    fn learns_caps(&self) -> bool {
        self.config.enabled && self.config.learned_family_cap_enabled
    }

    /// The learned cap for `family` applied to `max_tokens`, with its diagnostics.
    pub(crate) fn learned_cap(
        &self,
        family_key: &str,
        family: u64,
        lane: Lane,
        max_tokens: u32,
    ) -> LearnedCapDiagnostics {
        let percentile = match lane {
            Lane::Short => self.config.short_percentile,
            Lane::Draft => self.config.draft_percentile,
        };
        let mut diagnostics = LearnedCapDiagnostics {
            applied: false,
            family_key: family_key.to_string(),
            lane,
            requested_max_tokens: max_tokens,
            applied_max_tokens: max_tokens,
            sample_count: 0,
            percentile: OrderedF64(percentile),
            learned_cap_tokens: None,
        };
        if !self.learns_caps() {
            return diagnostics;
        }
        let history = self.families.lock().get(&family, Instant::now());
        let Some(history) = history else {
            return diagnostics;
        };
        let mut samples = history.lock().tokens.clone();
        diagnostics.sample_count = samples.len() as u32;
        if samples.len() < self.config.learned_cap_min_samples.max(1) as usize {
            return diagnostics;
        }
        let cap = percentile_cap(
            &mut samples,
            percentile,
            self.config.learned_cap_headroom_tokens,
        );
        let applied = apply_cap(max_tokens, cap, self.config.min_output_tokens);
        diagnostics.learned_cap_tokens = Some(cap);
        diagnostics.applied_max_tokens = applied;
        diagnostics.applied = applied < max_tokens;
        if diagnostics.applied {
            self.caps_applied.fetch_add(1, Ordering::Relaxed);
        }
        store_ratio(&self.last_cap_ratio, applied, max_tokens);
        diagnostics
    }

    /// The adaptive reduction applied to `max_tokens`, with its diagnostics.
    pub(crate) fn adaptive(&self, max_tokens: u32) -> AdaptiveTuningDiagnostics {
        let mut diagnostics = AdaptiveTuningDiagnostics {
            reduced: false,
            requested_max_tokens: max_tokens,
            applied_max_tokens: max_tokens,
            reduction_ratio: OrderedF64(0.0),
            reason: None,
        };
        if !self.config.enabled {
            return diagnostics;
        }
        let (ratio, reason) = self.current_reduction();
        let applied = apply_reduction(max_tokens, ratio, self.config.min_output_tokens);
        diagnostics.reduction_ratio = OrderedF64(ratio);
        diagnostics.reason = reason.map(String::from);
        diagnostics.applied_max_tokens = applied;
        diagnostics.reduced = applied < max_tokens;
        if diagnostics.reduced {
            self.reductions.fetch_add(1, Ordering::Relaxed);
        }
        store_ratio(&self.last_reduction_ratio, applied, max_tokens);
        diagnostics
    }

    /// The reduction a request gets now, from the recent samples.
    fn current_reduction(&self) -> (f64, Option<&'static str>) {
        let (avg_queue, avg_tps) = self.averages();
        reduction_for(avg_queue, avg_tps, &self.config)
    }

    /// Average queue time (ms) of the samples, and average speed of those that have one.
    fn averages(&self) -> (Option<f64>, Option<f64>) {
        let recent = self.recent.lock();
        if recent.is_empty() {
            return (None, None);
        }
        let queue = recent.iter().map(|s| s.queue_ms).sum::<f64>() / recent.len() as f64;
        let speeds: Vec<f64> = recent.iter().filter_map(|s| s.tokens_per_second).collect();
        let tps = (!speeds.is_empty()).then(|| speeds.iter().sum::<f64>() / speeds.len() as f64);
        (Some(queue), tps)
    }

    /// Learns from one finished execution.
    pub(crate) fn record(&self, outcome: Outcome) {
        if !self.config.enabled {
            return;
        }
        let capacity = self.config.sample_size.max(1) as usize;
        {
            let mut recent = self.recent.lock();
            while recent.len() >= capacity {
                recent.pop_front();
            }
            recent.push_back(Sample {
                queue_ms: outcome.queue_time.as_secs_f64() * 1_000.0,
                tokens_per_second: outcome
                    .tokens_per_second
                    .filter(|tps| tps.is_finite() && *tps > 0.0),
            });
        }
        if !self.learns_caps() {
            return;
        }
        let tokens = outcome.completion_tokens.min(u64::from(u16::MAX)) as u16;
        let now = Instant::now();
        let mut families = self.families.lock();
        let history = match families.get(&outcome.family, now) {
            Some(history) => history,
            None => {
                let history = Arc::new(Mutex::new(History::new(
                    self.config.family_history_size as usize,
                )));
                families.insert(outcome.family, history.clone(), now);
                history
            }
        };
        drop(families);
        history.lock().push(tokens);
    }

    /// The `/health` view.
    pub(crate) fn health(&self) -> AdaptiveHealth {
        let (avg_queue, avg_tps) = self.averages();
        let (ratio, reason) = if self.config.enabled {
            reduction_for(avg_queue, avg_tps, &self.config)
        } else {
            (0.0, None)
        };
        let samples = self.recent.lock().len() as u32;
        AdaptiveHealth {
            enabled: self.config.enabled,
            sample_size: self.config.sample_size,
            samples,
            avg_queue_time_ms: avg_queue.map(|q| round(q, 2)),
            queue_latency_threshold_ms: self.config.queue_latency_threshold_ms,
            avg_completion_tokens_per_second: avg_tps.map(|t| round(t, 2)),
            min_completion_tokens_per_second: self.config.min_completion_tokens_per_second,
            reduction_ratio: round(ratio, 4),
            max_output_reduction_ratio: self.config.max_output_reduction_ratio,
            reason: reason.map(String::from),
            reductions: self.reductions.load(Ordering::Relaxed),
            learned_family_cap_enabled: self.learns_caps(),
            learned_families: self.families.lock().len() as u32,
            max_learned_families: MAX_FAMILIES as u32,
            learned_caps_applied: self.caps_applied.load(Ordering::Relaxed),
        }
    }

    /// `applied / requested` of the last learned-cap decision (1 when none lowered anything).
    pub(crate) fn last_cap_ratio(&self) -> f64 {
        f64::from_bits(self.last_cap_ratio.load(Ordering::Relaxed))
    }

    /// `applied / requested` of the last adaptive decision.
    pub(crate) fn last_reduction_ratio(&self) -> f64 {
        f64::from_bits(self.last_reduction_ratio.load(Ordering::Relaxed))
    }

    /// The tuner's metrics.
    pub(crate) fn render(&self, m: &mut MetricsSnapshot) {
        let health = self.health();
        m.gauge(
            "ray_adaptive_reduction_ratio",
            "The share by which adaptive tuning lowers maxTokens for a request arriving now.",
            None,
            health.reduction_ratio,
        );
        m.gauge(
            "ray_adaptive_max_tokens_ratio",
            "maxTokens after / before adaptive tuning, for the last request.",
            Some("adaptive.max_tokens_ratio"),
            self.last_reduction_ratio(),
        );
        m.counter(
            "ray_adaptive_reductions_total",
            "Requests whose maxTokens adaptive tuning lowered.",
            None,
            health.reductions as f64,
        );
        m.gauge(
            "ray_adaptive_samples",
            "Recent executions adaptive tuning averages over.",
            None,
            f64::from(health.samples),
        );
        m.gauge(
            "ray_adaptive_sample_size",
            "adaptiveTuning.sampleSize.",
            None,
            f64::from(health.sample_size),
        );
        m.optional_gauge(
            "ray_adaptive_avg_queue_seconds",
            "Average queue time of those executions.",
            None,
            health.avg_queue_time_ms.map(|ms| ms / 1_000.0),
        );
        m.optional_gauge(
            "ray_adaptive_avg_completion_tokens_per_second",
            "Average generation speed of those executions the backend timed.",
            None,
            health.avg_completion_tokens_per_second,
        );
        m.gauge(
            "ray_learned_output_cap_families",
            "Prompt families with a learned completion history.",
            None,
            f64::from(health.learned_families),
        );
        m.gauge(
            "ray_learned_output_cap_max_families",
            "The most prompt families remembered (512).",
            None,
            f64::from(health.max_learned_families),
        );
        m.counter(
            "ray_learned_output_cap_applied_total",
            "Requests whose maxTokens a learned family cap lowered.",
            None,
            health.learned_caps_applied as f64,
        );
        m.gauge(
            "ray_learned_output_cap_max_tokens_ratio",
            "maxTokens after / before the learned cap, for the last request with one.",
            Some("learned_output_cap.max_tokens_ratio"),
            self.last_cap_ratio(),
        );
    }
}

fn store_ratio(cell: &AtomicU64, applied: u32, requested: u32) {
    let ratio = if requested > 0 {
        f64::from(applied) / f64::from(requested)
    } else {
        1.0
    };
    cell.store(ratio.to_bits(), Ordering::Relaxed);
}

fn round(value: f64, places: i32) -> f64 {
    let factor = 10f64.powi(places);
    (value * factor).round() / factor
}

/// The learned cap: the `percentile` of the completion lengths (the value at index
/// `floor((n - 1) × percentile)` once sorted) plus `headroom`. `samples` must not be empty.
pub(crate) fn percentile_cap(samples: &mut [u16], percentile: f64, headroom: u32) -> u32 {
    samples.sort_unstable();
    let last = samples.len().saturating_sub(1);
    let index = ((last as f64) * percentile.clamp(0.0, 1.0)).floor() as usize;
    u32::from(samples[index.min(last)]).saturating_add(headroom)
}

/// `max_tokens` lowered to `cap`, but never below `min(min_output_tokens, max_tokens)`.
pub(crate) fn apply_cap(max_tokens: u32, cap: u32, min_output_tokens: u32) -> u32 {
    cap.clamp(min_output_tokens.min(max_tokens), max_tokens)
}

/// `floor(max_tokens × (1 − ratio))`, but never below `min(min_output_tokens, max_tokens)`.
pub(crate) fn apply_reduction(max_tokens: u32, ratio: f64, min_output_tokens: u32) -> u32 {
    let reduced = (f64::from(max_tokens) * (1.0 - ratio.clamp(0.0, 1.0))).floor() as u32;
    reduced.clamp(min_output_tokens.min(max_tokens), max_tokens)
}

/// The reduction for an average queue time and generation speed: `0.25 × (avg / threshold −
/// 1)` when queue time is above its threshold, `0.25 × (min / avg − 1)` when speed is below its
/// minimum, the larger of the two, at most `maxOutputReductionRatio`.
pub(crate) fn reduction_for(
    avg_queue_ms: Option<f64>,
    avg_tps: Option<f64>,
    config: &AdaptiveTuningConfig,
) -> (f64, Option<&'static str>) {
    let queue_threshold = config.queue_latency_threshold_ms as f64;
    let queue = avg_queue_ms
        .filter(|avg| queue_threshold > 0.0 && *avg > queue_threshold)
        .map(|avg| 0.25 * (avg / queue_threshold - 1.0));
    let min_tps = config.min_completion_tokens_per_second;
    let throughput = avg_tps
        .filter(|avg| *avg > 0.0 && *avg < min_tps)
        .map(|avg| 0.25 * (min_tps / avg - 1.0));
    let reason = match (queue, throughput) {
        (Some(_), Some(_)) => Some("queue_latency+throughput"),
        (Some(_), None) => Some("queue_latency"),
        (None, Some(_)) => Some("throughput"),
        (None, None) => None,
    };
    let ratio = queue
        .unwrap_or(0.0)
        .max(throughput.unwrap_or(0.0))
        .clamp(0.0, config.max_output_reduction_ratio.clamp(0.0, 1.0));
    (ratio, reason)
}

#[cfg(test)]
mod tests;
