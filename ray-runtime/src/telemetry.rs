//! The runtime's own metrics: counters on the hot path (requests, embeddings) and the snapshot
//! that renders them. A leaf: it names no step of the path.

use std::sync::atomic::{AtomicU64, Ordering};

use ray_cache::CacheStats;
use ray_core::config::GracefulDegradationConfig;
use ray_core::wire::PreparationHealth;
use ray_scheduler::StateSnapshot;

use crate::pressure::PressureSignals;
use crate::tuning::Tuner;

use crate::metrics::{
    CodeCounters, Histogram, LATENCY_BUCKETS, MetricKind, MetricsSnapshot, Sample,
};

/// Counters and histograms updated while requests run.
#[derive(Debug)]
pub(crate) struct RuntimeMetrics {
    pub(crate) requests: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) errors: CodeCounters,
    pub(crate) degraded: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    pub(crate) deduplicated: AtomicU64,
    pub(crate) provider_calls: AtomicU64,
    pub(crate) provider_errors: CodeCounters,
    pub(crate) prompt_tokens: AtomicU64,
    pub(crate) completion_tokens: AtomicU64,
    pub(crate) chars_saved: AtomicU64,
    pub(crate) warmup_attempts: AtomicU64,
    pub(crate) warmup_failures: AtomicU64,
    pub(crate) request_duration: Histogram,
    pub(crate) queue_wait: Histogram,
    pub(crate) provider_duration: Histogram,
    pub(crate) last_latency_ms: AtomicU64,
    pub(crate) streams: AtomicU64,
    pub(crate) streams_active: AtomicU64,
    pub(crate) streams_cancelled: AtomicU64,
    /// Requests that moved from a model to its fallback.
    pub(crate) fallbacks: AtomicU64,
    pub(crate) stream_first_token: Histogram,
    /// Requests changed by a degradation clamp, by reason ([`DEGRADATION_REASONS`] order).
    pub(crate) degradation_reasons: [AtomicU64; 4],
    pub(crate) memory_critical_refusals: AtomicU64,
    /// The counts behind the log summaries (shared with the background flush).
    pub(crate) logs: std::sync::Arc<crate::log_policy::LogBook>,
}

/// The degradation reasons, in the order of [`RuntimeMetrics::degradation_reasons`].
pub(crate) const DEGRADATION_REASONS: [&str; 4] = [
    "prompt_length",
    "queue_depth",
    "memory_pressure",
    "cpu_pressure",
];

impl Default for RuntimeMetrics {
    fn default() -> RuntimeMetrics {
        RuntimeMetrics {
            requests: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            errors: CodeCounters::default(),
            degraded: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            deduplicated: AtomicU64::new(0),
            provider_calls: AtomicU64::new(0),
            provider_errors: CodeCounters::default(),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            chars_saved: AtomicU64::new(0),
            warmup_attempts: AtomicU64::new(0),
            warmup_failures: AtomicU64::new(0),
            request_duration: Histogram::new(LATENCY_BUCKETS),
            queue_wait: Histogram::new(LATENCY_BUCKETS),
            provider_duration: Histogram::new(LATENCY_BUCKETS),
            last_latency_ms: AtomicU64::new(0),
            streams: AtomicU64::new(0),
            streams_active: AtomicU64::new(0),
            streams_cancelled: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            stream_first_token: Histogram::new(LATENCY_BUCKETS),
            degradation_reasons: Default::default(),
            memory_critical_refusals: AtomicU64::new(0),
            logs: Default::default(),
        }
    }
}

impl RuntimeMetrics {
    /// Counts the reasons a request was degraded for.
    pub(crate) fn count_degradation(&self, reasons: &[String]) {
        for reason in reasons {
            if let Some(index) = DEGRADATION_REASONS.iter().position(|r| r == reason) {
                inc(&self.degradation_reasons[index]);
            }
        }
    }

    /// Requests degraded so far, by reason.
    pub(crate) fn degradation_counts(&self) -> std::collections::BTreeMap<String, u64> {
        DEGRADATION_REASONS
            .iter()
            .zip(&self.degradation_reasons)
            .map(|(reason, count)| ((*reason).to_string(), count.load(Ordering::Relaxed)))
            .collect()
    }
}

pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn load(counter: &AtomicU64) -> f64 {
    counter.load(Ordering::Relaxed) as f64
}

fn ratio(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

/// Everything the snapshot needs besides the counters.
pub(crate) struct Gauges<'a> {
    pub(crate) scheduler: &'a StateSnapshot,
    pub(crate) max_queue: u32,
    pub(crate) concurrency: u32,
    pub(crate) max_queued_tokens: u32,
    pub(crate) max_inflight_tokens: u32,
    pub(crate) cache: Option<(CacheStats, u32, u64)>,
    pub(crate) dedupe_flights: usize,
    pub(crate) dedupe_followers: usize,
    pub(crate) dedupe_followers_total: u64,
    pub(crate) provider_status: f64,
    pub(crate) process_rss_bytes: Option<u64>,
    pub(crate) uptime_seconds: f64,
    pub(crate) pressure: &'a PressureSignals,
    pub(crate) degradation: &'a GracefulDegradationConfig,
    pub(crate) tuner: &'a Tuner,
    /// The backend preparation stage (rendering and counting prompts before admission).
    pub(crate) preparation: &'a PreparationHealth,
}

impl RuntimeMetrics {
    pub(crate) fn snapshot(&self, gauges: &Gauges<'_>) -> MetricsSnapshot {
        let mut m = MetricsSnapshot::default();
        let s = gauges.scheduler;
        m.gauge("ray_up", "1 while the runtime is running.", None, 1.0);
        m.gauge(
            "ray_uptime_seconds",
            "Seconds since the runtime started.",
            None,
            gauges.uptime_seconds,
        );
        m.counter(
            "ray_requests_total",
            "Inference requests that reached the runtime (including cache hits and rejections).",
            Some("requests.total"),
            load(&self.requests),
        );
        m.counter(
            "ray_requests_succeeded_total",
            "Inference requests answered successfully.",
            None,
            load(&self.succeeded),
        );
        m.counter(
            "ray_requests_failed_total",
            "Inference requests that ended with an error.",
            Some("requests.errors"),
            self.errors.total() as f64,
        );
        m.labelled(
            "ray_request_errors_total",
            "Inference errors by error code.",
            MetricKind::Counter,
            self.errors.samples(),
        );
        m.counter(
            "ray_requests_degraded_total",
            "Requests changed by a degradation clamp.",
            Some("requests.degraded"),
            load(&self.degraded),
        );
        m.counter(
            "ray_requests_deduplicated_total",
            "Requests answered by joining an identical request already in flight.",
            None,
            load(&self.deduplicated),
        );
        m.labelled(
            "ray_request_duration_seconds",
            "Time from arrival to answer of inference requests that succeeded (refusals and failures are counted in ray_request_errors_total).",
            MetricKind::Histogram,
            self.request_duration.samples(),
        );
        m.labelled(
            "ray_queue_wait_seconds",
            "Time requests waited for a permit.",
            MetricKind::Histogram,
            self.queue_wait.samples(),
        );

        // Streams.
        m.counter(
            "ray_streams_total",
            "Streamed inference requests (also counted in ray_requests_total).",
            None,
            load(&self.streams),
        );
        m.gauge(
            "ray_streams_active",
            "Streams being sent to clients now.",
            None,
            load(&self.streams_active),
        );
        m.counter(
            "ray_streams_cancelled_total",
            "Streams whose client left before the last event.",
            None,
            load(&self.streams_cancelled),
        );
        m.counter(
            "ray_fallbacks_total",
            "Requests that moved from a model whose backend was down or refused to its fallback.",
            None,
            load(&self.fallbacks),
        );
        m.labelled(
            "ray_stream_first_token_seconds",
            "Time from a streamed request's arrival to its first token (backend executions only, \
             not cache replays or joined streams).",
            MetricKind::Histogram,
            self.stream_first_token.samples(),
        );

        // Preparation: prompts rendered and counted by the backend before admission.
        let prep = gauges.preparation;
        m.gauge(
            "ray_preparation_active",
            "Prompts being prepared (rendered and counted by the backend) before admission.",
            Some("preparation.active"),
            prep.active.into(),
        );
        m.gauge(
            "ray_preparation_concurrency",
            "Preparations allowed at once (scheduler.concurrency).",
            Some("preparation.concurrency"),
            prep.concurrency.into(),
        );
        m.gauge(
            "ray_preparation_queued",
            "Requests waiting to be prepared.",
            Some("preparation.queued"),
            prep.queued.into(),
        );
        m.gauge(
            "ray_preparation_max_queue",
            "Requests allowed to wait for preparation (scheduler.maxQueue); more are refused.",
            Some("preparation.max_queue"),
            prep.max_queue.into(),
        );

        // Scheduler.
        let depth = s.depth();
        m.labelled(
            "ray_queue_depth",
            "Requests waiting for a permit, by lane.",
            MetricKind::Gauge,
            vec![
                lane_sample("short", s.short_depth),
                lane_sample("draft", s.draft_depth),
            ],
        );
        m.gauge(
            "ray_queue_waiting",
            "Requests waiting, both lanes.",
            Some("queue.depth"),
            depth.into(),
        );
        m.gauge(
            "ray_queue_short_depth",
            "Requests waiting in the short lane.",
            Some("queue.short_depth"),
            s.short_depth.into(),
        );
        m.gauge(
            "ray_queue_draft_depth",
            "Requests waiting in the draft lane.",
            Some("queue.draft_depth"),
            s.draft_depth.into(),
        );
        m.gauge(
            "ray_queue_max_depth",
            "scheduler.maxQueue.",
            Some("queue.max_depth"),
            gauges.max_queue.into(),
        );
        m.gauge(
            "ray_queue_depth_ratio",
            "Queue depth / scheduler.maxQueue.",
            Some("queue.depth_ratio"),
            ratio(depth.into(), gauges.max_queue.into()),
        );
        m.gauge(
            "ray_queue_tokens",
            "Tokens reserved by waiting requests.",
            Some("queue.tokens"),
            s.queued_tokens.into(),
        );
        m.gauge(
            "ray_queue_max_tokens",
            "scheduler.maxQueuedTokens.",
            Some("queue.max_tokens"),
            gauges.max_queued_tokens.into(),
        );
        m.gauge(
            "ray_queue_tokens_ratio",
            "Queued tokens / scheduler.maxQueuedTokens.",
            Some("queue.tokens_ratio"),
            ratio(s.queued_tokens.into(), gauges.max_queued_tokens.into()),
        );
        m.gauge(
            "ray_queue_oldest_wait_seconds",
            "How long the oldest waiting request has waited.",
            None,
            s.oldest_wait.as_secs_f64(),
        );
        m.gauge(
            "ray_inflight_requests",
            "Requests executing on the backend.",
            Some("inference.in_flight"),
            s.in_flight.into(),
        );
        m.gauge(
            "ray_concurrency",
            "scheduler.concurrency (permits).",
            Some("inference.concurrency"),
            gauges.concurrency.into(),
        );
        m.gauge(
            "ray_inflight_ratio",
            "Executing requests / scheduler.concurrency.",
            Some("inference.in_flight_ratio"),
            ratio(s.in_flight.into(), gauges.concurrency.into()),
        );
        m.gauge(
            "ray_inflight_tokens",
            "Tokens reserved by executing requests.",
            Some("inference.in_flight_tokens"),
            s.in_flight_tokens.into(),
        );
        m.gauge(
            "ray_max_inflight_tokens",
            "scheduler.maxInflightTokens.",
            Some("inference.max_inflight_tokens"),
            gauges.max_inflight_tokens.into(),
        );
        m.gauge(
            "ray_inflight_tokens_ratio",
            "In-flight tokens / scheduler.maxInflightTokens.",
            Some("inference.in_flight_tokens_ratio"),
            ratio(s.in_flight_tokens.into(), gauges.max_inflight_tokens.into()),
        );
        let c = &s.counters;
        m.labelled(
            "ray_queue_rejections_total",
            "Requests refused by the scheduler, by reason.",
            MetricKind::Counter,
            [
                ("token_budget", c.rejected_token_budget),
                ("queue_depth", c.rejected_queue_depth),
                ("queued_tokens", c.rejected_queued_tokens),
            ]
            .into_iter()
            .map(|(reason, value)| Sample {
                suffix: "",
                labels: vec![("reason", reason.into())],
                value: value as f64,
            })
            .collect(),
        );
        m.counter(
            "ray_scheduler_dispatched_total",
            "Requests that got a permit.",
            None,
            c.dispatched as f64,
        );
        m.counter(
            "ray_scheduler_affinity_hits_total",
            "Requests that started on the permit last used by their prompt family.",
            None,
            c.affinity_hits as f64,
        );
        m.counter(
            "ray_scheduler_cancelled_total",
            "Waiting requests that left the queue (timeout or caller gone).",
            None,
            c.cancelled as f64,
        );
        m.counter(
            "ray_scheduler_holds_total",
            "Permits held by the batch window.",
            None,
            c.holds as f64,
        );

        // Dedupe.
        m.gauge(
            "ray_dedupe_inflight_executions",
            "Executions that identical requests may join.",
            None,
            gauges.dedupe_flights as f64,
        );
        m.gauge(
            "ray_dedupe_waiting_followers",
            "Requests waiting on an identical request's execution.",
            None,
            gauges.dedupe_followers as f64,
        );
        m.counter(
            "ray_dedupe_followers_total",
            "Requests that joined an identical request's execution.",
            None,
            gauges.dedupe_followers_total as f64,
        );

        // Cache.
        m.counter(
            "ray_cache_hits_total",
            "Result cache hits.",
            Some("cache.hits"),
            load(&self.cache_hits),
        );
        m.counter(
            "ray_cache_misses_total",
            "Result cache misses.",
            Some("cache.misses"),
            load(&self.cache_misses),
        );
        if let Some((stats, max_entries, max_bytes)) = gauges.cache {
            m.gauge(
                "ray_cache_entries",
                "Entries in the result cache.",
                Some("cache.entries"),
                stats.entries as f64,
            );
            m.gauge(
                "ray_cache_max_entries",
                "cache.maxEntries.",
                Some("cache.max_entries"),
                max_entries.into(),
            );
            m.gauge(
                "ray_cache_entries_ratio",
                "Cache entries / cache.maxEntries.",
                Some("cache.entries_ratio"),
                ratio(stats.entries as f64, max_entries.into()),
            );
            m.gauge(
                "ray_cache_bytes",
                "Bytes held by the result cache.",
                Some("cache.bytes"),
                stats.bytes as f64,
            );
            m.gauge(
                "ray_cache_max_bytes",
                "cache.maxBytes.",
                Some("cache.max_bytes"),
                max_bytes as f64,
            );
            m.gauge(
                "ray_cache_bytes_ratio",
                "Cache bytes / cache.maxBytes.",
                Some("cache.bytes_ratio"),
                ratio(stats.bytes as f64, max_bytes as f64),
            );
            m.counter(
                "ray_cache_insertions_total",
                "Results stored in the cache.",
                None,
                stats.insertions as f64,
            );
            m.labelled_counter(
                "ray_cache_evictions_total",
                "Entries evicted to respect a bound, by bound.",
                "cache.evictions_total",
                vec![
                    Sample {
                        suffix: "",
                        labels: vec![("cause", "entries".into())],
                        value: stats.evictions_entries as f64,
                    },
                    Sample {
                        suffix: "",
                        labels: vec![("cause", "bytes".into())],
                        value: stats.evictions_bytes as f64,
                    },
                ],
            );
            m.counter(
                "ray_cache_expirations_total",
                "Entries dropped because their TTL passed.",
                Some("cache.expirations_total"),
                stats.expirations as f64,
            );
            m.counter(
                "ray_cache_rejected_oversized_total",
                "Results not stored because alone they exceed cache.maxBytes.",
                Some("cache.dropped_oversized_entries_total"),
                stats.rejected_oversized as f64,
            );
        }

        // Provider.
        m.gauge(
            "ray_provider_status",
            "Backend state: 1 ready, 0.5 degraded or warming, 0 unavailable or unknown.",
            Some("provider.health.status"),
            gauges.provider_status,
        );
        m.counter(
            "ray_provider_calls_total",
            "Calls made to the backend.",
            None,
            load(&self.provider_calls),
        );
        m.labelled(
            "ray_provider_errors_total",
            "Backend call failures by error code.",
            MetricKind::Counter,
            self.provider_errors.samples(),
        );
        m.labelled(
            "ray_provider_call_duration_seconds",
            "Duration of backend calls.",
            MetricKind::Histogram,
            self.provider_duration.samples(),
        );
        m.counter(
            "ray_prompt_tokens_total",
            "Prompt tokens reported by the backend.",
            None,
            load(&self.prompt_tokens),
        );
        m.counter(
            "ray_completion_tokens_total",
            "Completion tokens reported by the backend.",
            None,
            load(&self.completion_tokens),
        );
        m.counter(
            "ray_prompt_compiler_chars_saved_total",
            "Prompt characters removed by the prompt compiler.",
            Some("prompt.compiler.chars_saved"),
            load(&self.chars_saved),
        );
        m.counter(
            "ray_warmup_attempts_total",
            "Warm-up attempts.",
            Some("gateway.warmup.attempts"),
            load(&self.warmup_attempts),
        );
        m.counter(
            "ray_warmup_failures_total",
            "Failed warm-up attempts.",
            Some("gateway.warmup.failures"),
            load(&self.warmup_failures),
        );

        // Process.
        if let Some(rss) = gauges.process_rss_bytes {
            m.gauge(
                "process_resident_memory_bytes",
                "Resident memory of the gateway process.",
                None,
                rss as f64,
            );
            m.gauge(
                "ray_process_rss_mib",
                "Resident memory of the gateway process in MiB.",
                Some("process.memory.rss_mib"),
                rss as f64 / 1_048_576.0,
            );
        }

        // Pressure, degradation and adaptive tuning.
        crate::pressure::metrics::render(&mut m, gauges.pressure, gauges.degradation);
        m.labelled(
            "ray_degradation_decisions_total",
            "Requests changed by a degradation clamp, by reason (one request may have several).",
            MetricKind::Counter,
            DEGRADATION_REASONS
                .iter()
                .zip(&self.degradation_reasons)
                .map(|(reason, count)| Sample {
                    suffix: "",
                    labels: vec![("reason", (*reason).into())],
                    value: load(count),
                })
                .collect(),
        );
        m.counter(
            "ray_memory_critical_refusals_total",
            "Requests refused with memory_pressure_critical.",
            None,
            load(&self.memory_critical_refusals),
        );
        gauges.tuner.render(&mut m);
        m
    }
}

fn lane_sample(lane: &'static str, value: u32) -> Sample {
    Sample {
        suffix: "",
        labels: vec![("lane", lane.into())],
        value: value.into(),
    }
}

/// Counters and histograms of the embeddings path.
#[derive(Debug)]
pub(crate) struct EmbedMetrics {
    pub(crate) requests: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) errors: CodeCounters,
    pub(crate) inputs: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    pub(crate) provider_calls: AtomicU64,
    pub(crate) prompt_tokens: AtomicU64,
    pub(crate) duration: Histogram,
    pub(crate) queue_wait: Histogram,
}

impl Default for EmbedMetrics {
    fn default() -> EmbedMetrics {
        EmbedMetrics {
            requests: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            errors: CodeCounters::default(),
            inputs: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            provider_calls: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            duration: Histogram::new(LATENCY_BUCKETS),
            queue_wait: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

impl EmbedMetrics {
    /// The `ray_embeddings_*` families.
    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let mut m = MetricsSnapshot::default();
        m.counter(
            "ray_embeddings_requests_total",
            "Embeddings requests that reached the runtime (cache hits and rejections included).",
            None,
            load(&self.requests),
        );
        m.counter(
            "ray_embeddings_requests_succeeded_total",
            "Embeddings requests answered successfully.",
            None,
            load(&self.succeeded),
        );
        m.counter(
            "ray_embeddings_requests_failed_total",
            "Embeddings requests that ended with an error.",
            None,
            self.errors.total() as f64,
        );
        m.labelled(
            "ray_embeddings_errors_total",
            "Embeddings errors by error code.",
            MetricKind::Counter,
            self.errors.samples(),
        );
        m.counter(
            "ray_embeddings_inputs_total",
            "Texts embedded (answered from the cache or by the backend).",
            None,
            load(&self.inputs),
        );
        m.counter(
            "ray_embeddings_cache_hits_total",
            "Texts whose vector came from the result cache.",
            None,
            load(&self.cache_hits),
        );
        m.counter(
            "ray_embeddings_cache_misses_total",
            "Texts looked up in the result cache and not found.",
            None,
            load(&self.cache_misses),
        );
        m.counter(
            "ray_embeddings_provider_calls_total",
            "Embeddings executions on the backend (one per request with cache misses).",
            None,
            load(&self.provider_calls),
        );
        m.counter(
            "ray_embeddings_prompt_tokens_total",
            "Tokens the backend read for embeddings (its count, else chars / 4).",
            None,
            load(&self.prompt_tokens),
        );
        m.labelled(
            "ray_embeddings_duration_seconds",
            "Time from arrival to answer of embeddings requests.",
            MetricKind::Histogram,
            self.duration.samples(),
        );
        m.labelled(
            "ray_embeddings_queue_wait_seconds",
            "Time embeddings requests waited for a permit.",
            MetricKind::Histogram,
            self.queue_wait.samples(),
        );
        m
    }
}
