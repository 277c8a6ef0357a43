//! The status page: `GET /status` (one self-contained HTML page, rendered on the server and
//! then refreshed by a little plain JavaScript) and `GET /status.json` (every figure it shows).
//!
//! The history behind the charts is sampled once a second by [`sample`] from the counters the
//! runtime and the HTTP front already keep (fixed rings, [`history_bytes`] once full); serving
//! the page reads it under a short lock and adds nothing to the request path.

use std::sync::Arc;
use std::time::Duration;

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use ray_core::wire::{Health, HealthStatus};
use serde_json::{Value, json};

use crate::gateway::app::App;
use crate::gateway::http::{self, Body};

pub(crate) mod history;
mod render;

use render::render;

use history::{History, STEP, gauge, quantile_ms, total};

/// How often the sampler reads the counters.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// The window of the percentiles shown as figures.
const PERCENTILE_WINDOW_SECS: usize = 300;

/// The window of the tokens-per-second figure.
const TOKENS_WINDOW_SECS: usize = 60;

/// Bytes the status history holds once full (allocated at start, never grown).
pub fn history_bytes() -> usize {
    History::footprint_bytes()
}

/// Samples the counters into the status history once a second, until the task is dropped.
pub async fn sample(app: Arc<App>) {
    let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        let mut metrics = app.runtime().metrics();
        metrics.extend(app.server_metrics());
        app.status.record(unix_now(), &metrics);
    }
}

fn unix_now() -> u32 {
    (ray_core::time::unix_millis_now() / 1000).min(u64::from(u32::MAX)) as u32
}

/// One figure: an id (the page's `data-field`), where it goes, its label, its value (a number
/// when it has one), its text and a one-line explanation.
struct Field {
    id: &'static str,
    section: &'static str,
    label: &'static str,
    value: Value,
    text: String,
    help: &'static str,
}

/// `GET /status.json`.
pub(crate) async fn json_response(app: &App) -> Response<Body> {
    let status = build(app).await;
    http::json(StatusCode::OK, &status)
}

/// `GET /status`, rendered with the figures.
pub(crate) async fn page_response(app: &App) -> Response<Body> {
    let status = build(app).await;
    html(StatusCode::OK, render(&status, false))
}

/// `GET /status` without a valid key (auth on): the page without any figure, which asks for
/// the key and then loads `/status.json` with it.
pub(crate) fn locked_response() -> Response<Body> {
    let mut response = html(StatusCode::UNAUTHORIZED, render(&Value::Null, true));
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ray\""),
    );
    response
}

fn html(status: StatusCode, body: String) -> Response<Body> {
    let mut response = http::text(status, "text/html; charset=utf-8", body);
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'",
        ),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Everything the page shows, as `/status.json` answers it.
pub(crate) async fn build(app: &App) -> Value {
    let health = app.full_health().await;
    let mut metrics = app.runtime().metrics();
    metrics.extend(app.server_metrics());
    let history = app.status.inner.lock();
    let fields = fields(app, &health, &metrics, &history);
    let mut field_map = serde_json::Map::new();
    for field in fields {
        field_map.insert(
            field.id.to_string(),
            json!({
                "section": field.section,
                "label": field.label,
                "value": field.value,
                "text": field.text,
                "help": field.help,
            }),
        );
    }
    let models: Vec<Value> = health
        .models
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "default": m.default,
                "state": m.state,
                "reason": m.reason,
                "backend": m.backend,
                "contextWindow": m.context_window,
                "queueDepth": m.queue_depth,
                "maxQueue": m.max_queue,
                "inFlight": m.in_flight,
                "concurrency": m.concurrency,
                "failures": m.failures,
                "cooldownRemainingMs": m.cooldown_remaining_ms,
            })
        })
        .collect();
    let refusals: Vec<Value> = history
        .refusals()
        .into_iter()
        .map(|(code, count)| json!({ "code": code.as_str(), "count": count }))
        .collect();
    let errors: Vec<Value> = history
        .errors
        .iter()
        .rev()
        .map(|e| {
            json!({
                "at": ray_core::time::format_unix_millis(i64::from(e.at) * 1000),
                "code": e.code.as_str(),
                "status": e.code.status(),
                "count": e.count,
            })
        })
        .collect();
    let charts = charts(&history);
    json!({
        "service": app.runtime().config().telemetry.service_name,
        "version": env!("CARGO_PKG_VERSION"),
        "generatedAt": ray_core::time::now_rfc3339(),
        "status": status_text(health.status),
        "fields": field_map,
        "models": models,
        "refusals": refusals,
        "recentErrors": errors,
        "charts": charts,
        "history": {
            "samples": history.seconds.len(),
            "capacitySeconds": history::SECONDS,
            "stepSeconds": STEP,
            "bytes": History::footprint_bytes(),
        },
        "help": {
            "models": "Each configured model: its backend's state, context window, requests waiting and executing against its permits, and backend failures in a row (cooldown after routing.cooldownAfterFailures).",
            "refusals": "Requests refused or failed over the last hour, by error code (ray_request_errors_total, ray_auth_rejected_total, ray_rate_limited_total).",
            "recentErrors": "The last error increases seen by the once-a-second sampler: when, which code, how many.",
            "charts": "The last 15 minutes, one point per 10 seconds.",
        },
    })
}

fn status_text(status: HealthStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{status:?}").to_lowercase())
}

fn num(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

fn opt(value: Option<f64>) -> Value {
    value.map_or(Value::Null, num)
}

fn ms_text(value: Option<f64>) -> String {
    match value {
        None => "none yet".into(),
        Some(ms) if ms >= 10_000.0 => format!("{:.1} s", ms / 1000.0),
        Some(ms) if ms >= 100.0 => format!("{ms:.0} ms"),
        Some(ms) => format!("{ms:.1} ms"),
    }
}

fn pct(ratio: f64) -> String {
    format!("{:.0} %", ratio * 100.0)
}

fn fields(
    app: &App,
    health: &Health,
    metrics: &ray_runtime::MetricsSnapshot,
    history: &History,
) -> Vec<Field> {
    let queue = &health.runtime.queue;
    let http = app.http_health();
    let memory = &health.runtime.memory;
    let signals = &memory.signals;
    let cache = &health.runtime.cache;
    let (wait, latency) = history.window(PERCENTILE_WINDOW_SECS);
    let wait_p50 = quantile_ms(&wait, 0.5);
    let wait_p99 = quantile_ms(&wait, 0.99);
    let latency_p50 = quantile_ms(&latency, 0.5);
    let latency_p99 = quantile_ms(&latency, 0.99);
    let tokens_per_second = history.tokens_per_second(TOKENS_WINDOW_SECS);
    let lookups = cache.hits + cache.misses;
    let hit_ratio = (lookups > 0).then(|| cache.hits as f64 / lookups as f64);
    let refusals: u64 = history.refusals().iter().map(|(_, n)| n).sum();
    let decisions: u64 = health.runtime.degradation.decisions.values().sum();
    let mut out = vec![
        Field {
            id: "status",
            section: "Load",
            label: "Health",
            value: Value::String(status_text(health.status)),
            text: status_text(health.status),
            help: "ok, degraded or unavailable: the status /health reports.",
        },
        Field {
            id: "uptime",
            section: "Load",
            label: "Uptime",
            value: num(gauge(metrics, "ray_uptime_seconds").floor()),
            text: uptime_text(gauge(metrics, "ray_uptime_seconds")),
            help: "Seconds since the runtime started.",
        },
        Field {
            id: "queue.depth",
            section: "Load",
            label: "Queue",
            value: num(f64::from(queue.depth)),
            text: format!("{} / {}", queue.depth, queue.max_queue),
            help: "Requests waiting, both lanes / scheduler.maxQueue; at 1 new requests get queue_full.",
        },
        Field {
            id: "queue.inFlight",
            section: "Load",
            label: "In flight",
            value: num(f64::from(queue.in_flight)),
            text: format!("{} / {}", queue.in_flight, queue.concurrency),
            help: "Requests executing on the backend (permits in use) / scheduler.concurrency.",
        },
        Field {
            id: "queue.tokens",
            section: "Load",
            label: "Queued tokens",
            value: num(f64::from(queue.queued_tokens)),
            text: format!("{} / {}", queue.queued_tokens, queue.max_queued_tokens),
            help: "Tokens reserved by waiting requests / scheduler.maxQueuedTokens.",
        },
        Field {
            id: "queue.oldestWait",
            section: "Load",
            label: "Oldest wait",
            value: num(queue.oldest_wait_ms as f64),
            text: format!("{} ms", queue.oldest_wait_ms),
            help: "How long the oldest waiting request has waited.",
        },
        Field {
            id: "http.connections",
            section: "Load",
            label: "Connections",
            value: num(f64::from(http.sockets)),
            text: format!("{} / {}", http.sockets, http.max_connections),
            help: "Open client connections / the connection cap; at 0.9 readiness reports gateway_http_pressure.",
        },
        Field {
            id: "wait.p50",
            section: "Speed, last 5 minutes",
            label: "Queue wait p50",
            value: opt(wait_p50),
            text: ms_text(wait_p50),
            help: "Time requests waited for a permit (ray_queue_wait_seconds): median over the last 5 minutes.",
        },
        Field {
            id: "wait.p99",
            section: "Speed, last 5 minutes",
            label: "Queue wait p99",
            value: opt(wait_p99),
            text: ms_text(wait_p99),
            help: "Time requests waited for a permit (ray_queue_wait_seconds): 99th percentile over the last 5 minutes.",
        },
        Field {
            id: "latency.p50",
            section: "Speed, last 5 minutes",
            label: "Latency p50",
            value: opt(latency_p50),
            text: ms_text(latency_p50),
            help: "Arrival to answer of inference requests (ray_request_duration_seconds): median over the last 5 minutes.",
        },
        Field {
            id: "latency.p99",
            section: "Speed, last 5 minutes",
            label: "Latency p99",
            value: opt(latency_p99),
            text: ms_text(latency_p99),
            help: "Arrival to answer of inference requests (ray_request_duration_seconds): 99th percentile over the last 5 minutes.",
        },
        Field {
            id: "tokens.perSecond",
            section: "Speed, last 5 minutes",
            label: "Tokens / s",
            value: num((tokens_per_second * 10.0).round() / 10.0),
            text: format!("{tokens_per_second:.1}"),
            help: "Completion tokens reported by the backend (ray_completion_tokens_total) per second, over the last minute.",
        },
        Field {
            id: "requests.total",
            section: "Speed, last 5 minutes",
            label: "Requests",
            value: num(total(metrics, "ray_requests_total")),
            text: format!("{}", total(metrics, "ray_requests_total") as u64),
            help: "Inference requests that reached the runtime since start, cache hits and rejections included.",
        },
        Field {
            id: "cache.hitRatio",
            section: "Cache and dedupe",
            label: "Cache hits",
            value: opt(hit_ratio),
            text: match (cache.enabled, hit_ratio) {
                (false, _) => "off".into(),
                (true, None) => "no lookups yet".into(),
                (true, Some(r)) => format!("{} of {lookups}", pct(r)),
            },
            help: "Lookups answered from the cache (ray_cache_hits_total) / all lookups, since start.",
        },
        Field {
            id: "cache.entries",
            section: "Cache and dedupe",
            label: "Cache entries",
            value: num(f64::from(cache.entries)),
            text: format!("{} / {}", cache.entries, cache.max_entries),
            help: "Entries held / cache.maxEntries.",
        },
        Field {
            id: "dedupe.followers",
            section: "Cache and dedupe",
            label: "Deduplicated",
            value: num(total(metrics, "ray_dedupe_followers_total")),
            text: format!("{}", total(metrics, "ray_dedupe_followers_total") as u64),
            help: "Requests that joined an identical request's execution (ray_dedupe_followers_total).",
        },
        Field {
            id: "memory.state",
            section: "Memory and degradation",
            label: "Memory",
            value: Value::String(
                if memory.critical {
                    "critical"
                } else if memory.degraded {
                    "pressure"
                } else {
                    "normal"
                }
                .into(),
            ),
            text: if memory.critical {
                format!("critical ({})", memory.critical_sources.join(", "))
            } else if memory.degraded {
                format!("pressure ({})", memory.sources.join(", "))
            } else {
                "normal".into()
            },
            help: "Pressure while any memory source reports it: requests are clamped to gracefulDegradation.degradeToMaxTokens. Critical: with refuseOnCriticalMemory new work gets 503 memory_pressure_critical.",
        },
        Field {
            id: "memory.rss",
            section: "Memory and degradation",
            label: "Gateway RSS",
            value: opt(signals.process_rss_mib),
            text: match (signals.process_rss_mib, signals.memory_rss_threshold_mib) {
                (Some(rss), Some(limit)) => format!("{rss:.0} / {limit:.0} MiB"),
                (Some(rss), None) => format!("{rss:.0} MiB"),
                _ => "unknown".into(),
            },
            help: "Resident memory of the gateway / gracefulDegradation.memoryRssThresholdMiB; pressure at 1.",
        },
        Field {
            id: "memory.cgroup",
            section: "Memory and degradation",
            label: "Cgroup memory",
            value: opt(signals.cgroup_memory_pressure_ratio),
            text: match (
                signals.cgroup_memory_pressure_ratio,
                signals.cgroup_memory_pressure_ratio_threshold,
            ) {
                (Some(ratio), Some(threshold)) => format!("{} / {}", pct(ratio), pct(threshold)),
                (Some(ratio), None) => pct(ratio),
                _ => match signals.cgroup_memory_current_mib {
                    Some(current) => format!("{current:.0} MiB, no limit"),
                    None => "no cgroup".into(),
                },
            },
            help: "Current / memory.high (else memory.max) of the gateway's cgroup; pressure at gracefulDegradation.memoryCgroupPressureRatioThreshold.",
        },
        Field {
            id: "memory.psi",
            section: "Memory and degradation",
            label: "Memory PSI some",
            value: opt(signals.linux_memory_psi_some_avg10),
            text: match (
                signals.linux_memory_psi_some_avg10,
                signals.linux_memory_psi_some_avg10_threshold,
            ) {
                (Some(v), Some(t)) => format!("{v:.1} % / {t:.0} %"),
                (Some(v), None) => format!("{v:.1} %"),
                _ => "unavailable".into(),
            },
            help: "Share of the last 10 s some task stalled on memory, in percent (PSI avg10), against its threshold.",
        },
        Field {
            id: "cpu.state",
            section: "Memory and degradation",
            label: "CPU",
            value: Value::String(
                if health.runtime.cpu.degraded {
                    "pressure"
                } else {
                    "normal"
                }
                .into(),
            ),
            text: if health.runtime.cpu.degraded {
                format!("pressure ({})", health.runtime.cpu.sources.join(", "))
            } else {
                "normal".into()
            },
            help: "Pressure while any CPU source reports it (cgroup throttling, PSI); requests are clamped.",
        },
        Field {
            id: "degradation.decisions",
            section: "Memory and degradation",
            label: "Degradation steps",
            value: num(decisions as f64),
            text: format!("{decisions}"),
            help: "Degradation steps taken since start (prompt_length, queue_depth, memory_pressure, cpu_pressure): a request can take several, and a refused request counts too.",
        },
        Field {
            id: "refusals.lastHour",
            section: "Refusals, last hour",
            label: "Refused or failed",
            value: num(refusals as f64),
            text: format!("{refusals}"),
            help: "Requests refused or failed over the last hour, all codes together.",
        },
    ];
    let jobs = health.async_queue.as_ref().filter(|q| q.enabled);
    let job = |id, label, help, value: Option<u32>| Field {
        id,
        section: "Async jobs",
        label,
        value: value.map_or(Value::Null, |v| num(f64::from(v))),
        text: value.map_or_else(|| "off".to_string(), |v| v.to_string()),
        help,
    };
    out.push(job(
        "jobs.queued",
        "Queued",
        "Jobs waiting to run (first attempt or a retry).",
        jobs.map(|j| j.queued),
    ));
    out.push(job(
        "jobs.running",
        "Running",
        "Jobs with an attempt in progress.",
        jobs.map(|j| j.running),
    ));
    out.push(job(
        "jobs.succeeded",
        "Succeeded",
        "Jobs retained that succeeded.",
        jobs.map(|j| j.succeeded),
    ));
    out.push(job(
        "jobs.failed",
        "Failed",
        "Jobs retained that failed every attempt.",
        jobs.map(|j| j.failed),
    ));
    out
}

fn uptime_text(seconds: f64) -> String {
    let s = seconds as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s / 60 % 60),
        _ => format!("{} d {} h", s / 86_400, s / 3600 % 24),
    }
}

/// The chart series: one point per completed slot, oldest first; every series has the same
/// points ([`History::points`]).
fn charts(history: &History) -> Value {
    let points = history.points();
    let per_slot = |q: f64, wait: bool| -> Vec<Value> {
        points
            .iter()
            .map(|(_, slot)| {
                let buckets = if wait { &slot.wait } else { &slot.latency };
                let mut fixed = [0u64; LATENCY_BUCKET_SLOTS];
                for (to, from) in fixed.iter_mut().zip(buckets) {
                    *to = u64::from(*from);
                }
                opt(quantile_ms(&fixed, q).map(|v| (v * 10.0).round() / 10.0))
            })
            .collect()
    };
    // Per-second gauges and deltas, over each point's seconds.
    let over = |f: &dyn Fn(&[history::Second]) -> f64| -> Vec<Value> {
        points.iter().map(|(seconds, _)| num(f(seconds))).collect()
    };
    let queue = over(&|g| f64::from(g.iter().map(|s| s.queue).max().unwrap_or(0)));
    let in_flight = over(&|g| f64::from(g.iter().map(|s| s.in_flight).max().unwrap_or(0)));
    let tokens = over(&|g| {
        let sum: u64 = g.iter().map(|s| u64::from(s.completion_tokens)).sum();
        (sum as f64 / g.len().max(1) as f64 * 10.0).round() / 10.0
    });
    let requests = over(&|g| g.iter().map(|s| f64::from(s.requests)).sum());
    let errors = over(&|g| g.iter().map(|s| f64::from(s.errors)).sum());
    let end = points
        .last()
        .and_then(|(seconds, _)| seconds.last())
        .map(|s| ray_core::time::format_unix_millis(i64::from(s.at) * 1000));
    json!({
        "stepSeconds": STEP,
        "end": end,
        "traffic": { "requests": requests, "errors": errors },
        "wait": { "p50": per_slot(0.5, true), "p99": per_slot(0.99, true) },
        "latency": { "p50": per_slot(0.5, false), "p99": per_slot(0.99, false) },
        "tokens": { "perSecond": tokens },
        "queue": { "waiting": queue, "inFlight": in_flight },
    })
}

const LATENCY_BUCKET_SLOTS: usize = ray_runtime::LATENCY_BUCKETS.len() + 1;

#[cfg(test)]
mod tests;
