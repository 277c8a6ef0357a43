//! What the runtime reports to `/metrics`: the snapshot of its counters, its default model's
//! gauges, one sample per model for the `ray_model_*` families, embeddings and jobs.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::lifecycle::ModelStatus;
use crate::metrics::{MetricKind, MetricsSnapshot, Sample};
use crate::pressure::process_rss_bytes;
use crate::registry::ModelEntry;
use crate::runtime::Runtime;
use crate::telemetry::Gauges;

impl Runtime {
    /// Every runtime metric at this moment. The queue, dedupe, preparation and adaptive
    /// families are the default model's; the `ray_model_*` families carry a `model` label, one
    /// value per configured model.
    pub fn metrics(&self) -> MetricsSnapshot {
        let inner = &self.inner;
        let live = self.live();
        let config = &live.config;
        let model = self.model();
        let scheduler = model.scheduler.snapshot();
        let cache = inner.cache.as_ref().map(|cache| {
            (
                cache.stats(),
                config.cache.max_entries,
                config.cache.max_bytes,
            )
        });
        let provider_status = self.status_now_of(&model).gauge();
        let mut snapshot = inner.metrics.snapshot(&Gauges {
            scheduler: &scheduler,
            max_queue: model.limits.max_queue,
            concurrency: model.limits.concurrency,
            max_queued_tokens: model.limits.max_queued_tokens,
            max_inflight_tokens: model.limits.max_inflight_tokens,
            cache,
            dedupe_flights: model.flights.flights(),
            dedupe_followers: model.flights.followers(),
            dedupe_followers_total: model.flights.followers_total(),
            provider_status,
            process_rss_bytes: process_rss_bytes(),
            uptime_seconds: self.uptime().as_secs_f64(),
            pressure: &inner.pressure.sample(),
            degradation: &config.graceful_degradation,
            tuner: &model.tuner,
            preparation: &model.scheduler.preparation(),
        });
        self.model_metrics(&mut snapshot);
        self.lifecycle_metrics(&mut snapshot);
        self.priority_metrics(&mut snapshot);
        snapshot.extend(inner.embeddings.snapshot());
        snapshot.extend(inner.hooks.metrics());
        if let Some(jobs) = &inner.jobs {
            snapshot.extend(jobs.metrics());
        }
        snapshot
    }

    /// The `ray_model_*` families: one sample per configured model.
    fn model_metrics(&self, m: &mut MetricsSnapshot) {
        let now = tokio::time::Instant::now();
        let live = self.live();
        let entries = live.registry.entries();
        let per_model = |value: &dyn Fn(&ModelEntry) -> f64| -> Vec<Sample> {
            entries
                .iter()
                .map(|entry| Sample {
                    suffix: "",
                    labels: vec![("model", entry.id.clone())],
                    value: value(entry),
                })
                .collect()
        };
        let counter = |value: &AtomicU64| value.load(Ordering::Relaxed) as f64;
        m.labelled(
            "ray_model_ready",
            "1 while the model's backend is ready (0 while loading, down or in cooldown).",
            MetricKind::Gauge,
            per_model(&|e| {
                let status = e.health.status_now(e.provider.has_health_probe());
                f64::from(u8::from(e.state(status, now) == "ready"))
            }),
        );
        m.labelled(
            "ray_model_cooldown",
            "1 while the model is in cooldown after repeated backend failures.",
            MetricKind::Gauge,
            per_model(&|e| f64::from(u8::from(e.cooldown.lock().active_until(now).is_some()))),
        );
        m.labelled(
            "ray_model_queue_waiting",
            "Requests waiting for the model's permits.",
            MetricKind::Gauge,
            per_model(&|e| f64::from(e.scheduler.depth())),
        );
        m.labelled(
            "ray_model_in_flight",
            "Requests of the model executing now.",
            MetricKind::Gauge,
            per_model(&|e| f64::from(e.scheduler.snapshot().in_flight)),
        );
        m.labelled(
            "ray_model_concurrency",
            "The model's permits.",
            MetricKind::Gauge,
            per_model(&|e| f64::from(e.limits.concurrency)),
        );
        m.labelled(
            "ray_model_routed_total",
            "Requests routed to the model (before any fallback).",
            MetricKind::Counter,
            per_model(&|e| counter(&e.counters.routed)),
        );
        m.labelled(
            "ray_model_served_total",
            "Requests the model answered (cache hits included).",
            MetricKind::Counter,
            per_model(&|e| counter(&e.counters.served)),
        );
        m.labelled(
            "ray_model_fallbacks_total",
            "Requests that moved from the model to its fallback.",
            MetricKind::Counter,
            per_model(&|e| counter(&e.counters.fell_back)),
        );
        m.labelled(
            "ray_model_cooldowns_total",
            "Times the model went into cooldown.",
            MetricKind::Counter,
            per_model(&|e| counter(&e.counters.cooldowns)),
        );
        m.labelled(
            "ray_model_queued_tokens",
            "Tokens reserved by the model's waiting requests.",
            MetricKind::Gauge,
            per_model(&|e| f64::from(e.scheduler.snapshot().queued_tokens)),
        );
        m.labelled(
            "ray_model_in_flight_tokens",
            "Tokens reserved by the model's executing requests.",
            MetricKind::Gauge,
            per_model(&|e| f64::from(e.scheduler.snapshot().in_flight_tokens)),
        );
        m.labelled(
            "ray_model_oldest_wait_seconds",
            "How long the model's oldest waiting request has waited.",
            MetricKind::Gauge,
            per_model(&|e| e.scheduler.snapshot().oldest_wait.as_secs_f64()),
        );
        m.labelled(
            "ray_model_queue_rejected_total",
            "Requests the model's scheduler refused (queue depth, queued tokens, token budget).",
            MetricKind::Counter,
            per_model(&|e| {
                let c = e.scheduler.snapshot().counters;
                (c.rejected_queue_depth + c.rejected_queued_tokens + c.rejected_token_budget) as f64
            }),
        );
        m.labelled(
            "ray_model_dedupe_flights",
            "Executions of the model that other requests may join now.",
            MetricKind::Gauge,
            per_model(&|e| e.flights.flights() as f64),
        );
        m.labelled(
            "ray_model_dedupe_followers_total",
            "Requests that joined an execution of the model already in flight.",
            MetricKind::Counter,
            per_model(&|e| e.flights.followers_total() as f64),
        );
        m.labelled(
            "ray_model_errors_total",
            "Requests that ended with an error on the model they last tried, by error code.",
            MetricKind::Counter,
            entries
                .iter()
                .flat_map(|entry| {
                    entry
                        .counters
                        .errors
                        .samples()
                        .into_iter()
                        .map(|mut sample| {
                            sample.labels.insert(0, ("model", entry.id.clone()));
                            sample
                        })
                })
                .collect(),
        );
    }

    /// The lifecycle families: listed always, with samples for the managed models under the
    /// `lifecycle` section (none without it).
    fn lifecycle_metrics(&self, m: &mut MetricsSnapshot) {
        let managed = self.inner.managed.as_ref();
        let statuses = managed.map(|m| m.shell.statuses()).unwrap_or_default();
        let per_model = |value: &dyn Fn(&ModelStatus) -> f64| -> Vec<Sample> {
            statuses
                .iter()
                .map(|status| Sample {
                    suffix: "",
                    labels: vec![("model", status.id.clone())],
                    value: value(status),
                })
                .collect()
        };
        m.optional_gauge(
            "ray_lifecycle_budget_mib",
            "Memory the managed models may use together (lifecycle.memoryBudgetMiB or its default).",
            None,
            managed.map(|m| m.shell.budget_mib() as f64),
        );
        m.optional_gauge(
            "ray_lifecycle_committed_mib",
            "Memory the managed models hold now (loading, ready, draining or unloading), by their footprints.",
            None,
            managed.map(|m| m.shell.committed_mib() as f64),
        );
        m.labelled(
            "ray_model_lifecycle_state",
            "1 for the managed model's lifecycle state (unloaded, loading, ready, draining, unloading, failed), 0 for the others.",
            MetricKind::Gauge,
            statuses
                .iter()
                .flat_map(|status| {
                    LIFECYCLE_STATES.iter().map(|&state| Sample {
                        suffix: "",
                        labels: vec![("model", status.id.clone()), ("state", state.into())],
                        value: f64::from(u8::from(status.state.name() == state)),
                    })
                })
                .collect(),
        );
        m.labelled(
            "ray_model_resident_mib",
            "MiB the managed model holds now (its footprint while loaded, else 0).",
            MetricKind::Gauge,
            per_model(&|s| s.resident_mib as f64),
        );
        m.labelled(
            "ray_model_footprint_mib",
            "MiB the managed model counts for when loaded (measured after its first load, else estimated).",
            MetricKind::Gauge,
            per_model(&|s| s.footprint_mib as f64),
        );
        m.labelled(
            "ray_model_last_load_seconds",
            "How long the managed model's last load took (0 before its first).",
            MetricKind::Gauge,
            per_model(&|s| s.last_load_ms.unwrap_or(0) as f64 / 1000.0),
        );
        m.labelled(
            "ray_model_lifecycle_waiting",
            "Requests waiting for the managed model to load.",
            MetricKind::Gauge,
            per_model(&|s| f64::from(s.waiting)),
        );
        m.labelled(
            "ray_model_loads_total",
            "Loads of the managed model started.",
            MetricKind::Counter,
            per_model(&|s| s.loads as f64),
        );
        m.labelled(
            "ray_model_unloads_total",
            "Unloads of the managed model started (idle, after a drain, to make room).",
            MetricKind::Counter,
            per_model(&|s| s.unloads as f64),
        );
        m.labelled(
            "ray_model_evictions_total",
            "Unloads and drains of the managed model started to make room for another model.",
            MetricKind::Counter,
            per_model(&|s| s.evictions as f64),
        );
        m.labelled(
            "ray_model_load_failures_total",
            "Loads of the managed model that failed, and its processes that died.",
            MetricKind::Counter,
            per_model(&|s| s.failures as f64),
        );
    }
}

/// Every lifecycle state, as `ray_model_lifecycle_state` labels them.
const LIFECYCLE_STATES: [&str; 6] = [
    "unloaded",
    "loading",
    "ready",
    "draining",
    "unloading",
    "failed",
];
