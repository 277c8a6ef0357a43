//! The history behind the status page: fixed rings of samples taken once a second from the
//! counters `/metrics` already exposes (`Runtime::metrics()` and the HTTP front's), so the
//! request path does no extra work.
//!
//! Three rings, all allocated once at start and never grown:
//! - 900 per-second samples (15 minutes) of gauges and counter deltas;
//! - 90 ten-second slots of histogram bucket deltas (queue wait and request duration), from
//!   which any window's percentiles are summed;
//! - 60 per-minute slots of refusals by error code (the last hour),
//!
//! plus the last [`RECENT_ERRORS`] error increases (time and code).

use std::collections::VecDeque;

use ray_core::ErrorCode;
use ray_runtime::{LATENCY_BUCKETS, MetricsSnapshot};

/// Seconds kept at one sample a second.
pub(crate) const SECONDS: usize = 900;
/// Seconds per histogram slot (and per chart point).
pub(crate) const STEP: usize = 10;
/// Histogram slots kept.
pub(crate) const SLOTS: usize = SECONDS / STEP;
/// Minutes of refusals kept.
pub(crate) const MINUTES: usize = 60;
/// Error increases kept for "recent errors".
pub(crate) const RECENT_ERRORS: usize = 10;
/// Buckets per histogram: the finite bounds and `+Inf`.
const BUCKETS: usize = LATENCY_BUCKETS.len() + 1;

/// One second.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Second {
    /// Unix seconds.
    pub(crate) at: u32,
    pub(crate) queue: u16,
    pub(crate) in_flight: u16,
    pub(crate) requests: u16,
    pub(crate) errors: u16,
    pub(crate) completion_tokens: u32,
}

/// Ten seconds of histogram bucket deltas (per bucket, not cumulative).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Slot {
    /// Unix seconds at the slot's end.
    pub(crate) at: u32,
    pub(crate) wait: [u32; BUCKETS],
    pub(crate) latency: [u32; BUCKETS],
}

/// One minute of refusals: (index in `ErrorCode::ALL`, count), only codes seen.
#[derive(Debug, Clone, Default)]
pub(crate) struct Minute {
    pub(crate) at: u32,
    pub(crate) codes: Vec<(u16, u32)>,
}

/// An increase of an error counter within one second.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecentError {
    /// Unix seconds.
    pub(crate) at: u32,
    pub(crate) code: ErrorCode,
    pub(crate) count: u32,
}

/// A ring of fixed capacity, oldest first.
#[derive(Debug)]
pub(crate) struct Ring<T> {
    items: Vec<T>,
    capacity: usize,
    next: usize,
}

impl<T> Ring<T> {
    fn new(capacity: usize) -> Ring<T> {
        Ring {
            items: Vec::with_capacity(capacity),
            capacity,
            next: 0,
        }
    }

    fn push(&mut self, item: T) {
        if self.items.len() < self.capacity {
            self.items.push(item);
        } else {
            self.items[self.next] = item;
        }
        self.next = (self.next + 1) % self.capacity;
    }

    /// Oldest to newest.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        let (newer, older) = if self.items.len() < self.capacity {
            (&self.items[..], &self.items[..0])
        } else {
            (&self.items[..self.next], &self.items[self.next..])
        };
        older.iter().chain(newer.iter())
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}

/// The cumulative counters of the previous sample.
#[derive(Debug, Clone, Default)]
struct Counters {
    wait: [u64; BUCKETS],
    latency: [u64; BUCKETS],
    requests: u64,
    completion_tokens: u64,
    codes: Vec<u64>,
}

/// The rings and what the sampler needs between two samples.
#[derive(Debug)]
pub(crate) struct History {
    pub(crate) seconds: Ring<Second>,
    pub(crate) slots: Ring<Slot>,
    pub(crate) minutes: Ring<Minute>,
    pub(crate) errors: VecDeque<RecentError>,
    last: Option<Counters>,
    slot: Slot,
    slot_seconds: usize,
    minute: Vec<u32>,
    minute_at: u32,
}

impl Default for History {
    fn default() -> History {
        History {
            seconds: Ring::new(SECONDS),
            slots: Ring::new(SLOTS),
            minutes: Ring::new(MINUTES),
            errors: VecDeque::with_capacity(RECENT_ERRORS),
            last: None,
            slot: Slot::default(),
            slot_seconds: 0,
            minute: vec![0; ErrorCode::ALL.len()],
            minute_at: 0,
        }
    }
}

impl History {
    /// Bytes the history holds once full (its rings; the minute slots' code lists aside).
    pub(crate) fn footprint_bytes() -> usize {
        SECONDS * size_of::<Second>()
            + SLOTS * size_of::<Slot>()
            + MINUTES * size_of::<Minute>()
            + RECENT_ERRORS * size_of::<RecentError>()
            + size_of::<History>()
            + 2 * ErrorCode::ALL.len() * size_of::<u64>()
    }

    /// Records one sample from the metrics at unix second `now`.
    pub(crate) fn record(&mut self, now: u32, metrics: &MetricsSnapshot) {
        let counters = read_counters(metrics);
        // The counters start at zero with the process, as the history does.
        let previous = self.last.take().unwrap_or_else(|| Counters {
            codes: vec![0; counters.codes.len()],
            ..Counters::default()
        });
        let delta = |a: u64, b: u64| a.saturating_sub(b);
        let mut errors = 0u64;
        for (index, (now_count, before)) in counters.codes.iter().zip(&previous.codes).enumerate() {
            let increase = delta(*now_count, *before);
            if increase == 0 {
                continue;
            }
            errors += increase;
            self.minute[index] = self.minute[index].saturating_add(increase as u32);
            if self.errors.len() == RECENT_ERRORS {
                self.errors.pop_front();
            }
            self.errors.push_back(RecentError {
                at: now,
                code: ErrorCode::ALL[index],
                count: increase.min(u64::from(u32::MAX)) as u32,
            });
        }
        self.seconds.push(Second {
            at: now,
            queue: gauge(metrics, "ray_queue_waiting").min(f64::from(u16::MAX)) as u16,
            in_flight: gauge(metrics, "ray_inflight_requests").min(f64::from(u16::MAX)) as u16,
            requests: delta(counters.requests, previous.requests).min(u64::from(u16::MAX)) as u16,
            errors: errors.min(u64::from(u16::MAX)) as u16,
            completion_tokens: delta(counters.completion_tokens, previous.completion_tokens)
                .min(u64::from(u32::MAX)) as u32,
        });
        for i in 0..BUCKETS {
            let wait = delta(counters.wait[i], previous.wait[i]) as u32;
            let latency = delta(counters.latency[i], previous.latency[i]) as u32;
            self.slot.wait[i] = self.slot.wait[i].saturating_add(wait);
            self.slot.latency[i] = self.slot.latency[i].saturating_add(latency);
        }
        self.slot_seconds += 1;
        if self.slot_seconds == STEP {
            self.slot.at = now;
            self.slots.push(self.slot);
            self.slot = Slot::default();
            self.slot_seconds = 0;
        }
        if self.minute_at == 0 {
            self.minute_at = now;
        }
        if now.saturating_sub(self.minute_at) >= 60 {
            self.flush_minute(now);
        }
        self.last = Some(counters);
    }

    fn flush_minute(&mut self, now: u32) {
        let codes = self
            .minute
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(index, count)| (index as u16, *count))
            .collect();
        self.minutes.push(Minute { at: now, codes });
        self.minute.iter_mut().for_each(|c| *c = 0);
        self.minute_at = now;
    }

    /// Refusals by code over the last hour (the minute ring and the minute in progress),
    /// most frequent first.
    pub(crate) fn refusals(&self) -> Vec<(ErrorCode, u64)> {
        let mut totals = vec![0u64; ErrorCode::ALL.len()];
        let since = self.minute_at.saturating_sub(3600);
        for minute in self.minutes.iter().filter(|m| m.at > since) {
            for (index, count) in &minute.codes {
                totals[*index as usize] += u64::from(*count);
            }
        }
        for (total, count) in totals.iter_mut().zip(&self.minute) {
            *total += u64::from(*count);
        }
        let mut out: Vec<(ErrorCode, u64)> = ErrorCode::ALL
            .iter()
            .copied()
            .zip(totals)
            .filter(|(_, count)| *count > 0)
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.as_str().cmp(b.0.as_str())));
        out
    }

    /// The charts' points, oldest first: each kept slot with its ten seconds (the slot in
    /// progress is not one yet: a partial sum would read as a drop). Every series is drawn
    /// from these, so the per-second series and the histogram series have the same points
    /// and the same boundaries.
    pub(crate) fn points(&self) -> Vec<(Vec<Second>, Slot)> {
        let seconds: Vec<Second> = self.seconds.iter().copied().collect();
        // The seconds of the slot in progress are left out.
        let done = &seconds[..seconds.len() - self.slot_seconds.min(seconds.len())];
        // `done` ends on a slot boundary; a shorter chunk at its start lost its oldest seconds
        // to the ring, and its slot has gone too.
        let groups: Vec<&[Second]> = done.rchunks_exact(STEP).rev().collect();
        let slots: Vec<Slot> = self.slots.iter().copied().collect();
        let kept = groups.len().min(slots.len());
        groups[groups.len() - kept..]
            .iter()
            .zip(&slots[slots.len() - kept..])
            .map(|(group, slot)| (group.to_vec(), *slot))
            .collect()
    }

    /// Queue wait and request duration bucket deltas over the last `seconds` (whole slots,
    /// plus the slot in progress).
    pub(crate) fn window(&self, seconds: usize) -> ([u64; BUCKETS], [u64; BUCKETS]) {
        let mut wait = [0u64; BUCKETS];
        let mut latency = [0u64; BUCKETS];
        let slots = std::iter::once(&self.slot).chain(self.slots.iter().rev().take(seconds / STEP));
        for slot in slots {
            for i in 0..BUCKETS {
                wait[i] += u64::from(slot.wait[i]);
                latency[i] += u64::from(slot.latency[i]);
            }
        }
        (wait, latency)
    }

    /// Completion tokens per second over the last `seconds`.
    pub(crate) fn tokens_per_second(&self, seconds: usize) -> f64 {
        let taken: Vec<&Second> = self.seconds.iter().rev().take(seconds).collect();
        if taken.is_empty() {
            return 0.0;
        }
        let tokens: u64 = taken.iter().map(|s| u64::from(s.completion_tokens)).sum();
        tokens as f64 / taken.len() as f64
    }
}

/// The quantile `q` (0 to 1) of per-bucket counts over [`LATENCY_BUCKETS`], in milliseconds,
/// interpolated within its bucket; `None` without observations. Observations past the last
/// bound count as the last bound.
pub(crate) fn quantile_ms(buckets: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (i, count) in buckets.iter().enumerate() {
        if *count == 0 {
            continue;
        }
        if (seen + count) as f64 >= rank {
            let upper = LATENCY_BUCKETS
                .get(i)
                .copied()
                .unwrap_or(LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1]);
            let lower = if i == 0 {
                0.0
            } else {
                LATENCY_BUCKETS[(i - 1).min(LATENCY_BUCKETS.len() - 1)]
            };
            if i >= LATENCY_BUCKETS.len() {
                return Some(upper * 1000.0);
            }
            let within = ((rank - seen as f64) / *count as f64).clamp(0.0, 1.0);
            return Some((lower + (upper - lower) * within) * 1000.0);
        }
        seen += count;
    }
    Some(LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1] * 1000.0)
}

/// The first sample of an unlabelled family, or 0.
pub(crate) fn gauge(metrics: &MetricsSnapshot, name: &str) -> f64 {
    family(metrics, name)
        .and_then(|f| f.samples.first())
        .map_or(0.0, |s| s.value)
}

/// The sum of a family's plain samples, or 0.
pub(crate) fn total(metrics: &MetricsSnapshot, name: &str) -> f64 {
    family(metrics, name).map_or(0.0, |f| {
        f.samples
            .iter()
            .filter(|s| s.suffix.is_empty())
            .map(|s| s.value)
            .sum()
    })
}

fn family<'a>(metrics: &'a MetricsSnapshot, name: &str) -> Option<&'a ray_runtime::MetricFamily> {
    metrics.families.iter().find(|f| f.name == name)
}

/// Per-bucket (not cumulative) counts of a histogram family.
fn buckets(metrics: &MetricsSnapshot, name: &str) -> [u64; BUCKETS] {
    let mut out = [0u64; BUCKETS];
    let Some(family) = family(metrics, name) else {
        return out;
    };
    let mut previous = 0u64;
    for (i, sample) in family
        .samples
        .iter()
        .filter(|s| s.suffix == "_bucket")
        .take(BUCKETS)
        .enumerate()
    {
        let cumulative = sample.value as u64;
        out[i] = cumulative.saturating_sub(previous);
        previous = cumulative;
    }
    out
}

fn read_counters(metrics: &MetricsSnapshot) -> Counters {
    let mut codes = vec![0u64; ErrorCode::ALL.len()];
    if let Some(family) = family(metrics, "ray_request_errors_total") {
        for sample in &family.samples {
            let code = sample
                .labels
                .iter()
                .find(|(key, _)| *key == "code")
                .map(|(_, value)| value.as_str());
            if let Some(index) =
                code.and_then(|c| ErrorCode::ALL.iter().position(|e| e.as_str() == c))
            {
                codes[index] += sample.value as u64;
            }
        }
    }
    // Refused by the HTTP front before the runtime saw them.
    for (name, code) in [
        ("ray_auth_rejected_total", ErrorCode::Unauthorized),
        ("ray_rate_limited_total", ErrorCode::RateLimited),
    ] {
        if let Some(index) = ErrorCode::ALL.iter().position(|e| *e == code) {
            codes[index] += total(metrics, name) as u64;
        }
    }
    Counters {
        wait: buckets(metrics, "ray_queue_wait_seconds"),
        latency: buckets(metrics, "ray_request_duration_seconds"),
        requests: total(metrics, "ray_requests_total") as u64,
        completion_tokens: total(metrics, "ray_completion_tokens_total") as u64,
        codes,
    }
}

/// The status page's history, shared by the sampler and the handlers.
#[derive(Debug, Default)]
pub(crate) struct StatusHistory {
    pub(super) inner: parking_lot::Mutex<History>,
}

impl StatusHistory {
    pub(super) fn record(&self, now: u32, metrics: &ray_runtime::MetricsSnapshot) {
        self.inner.lock().record(now, metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_in_order() {
        let mut ring = Ring::new(3);
        for i in 0..5 {
            ring.push(i);
        }
        assert_eq!(ring.iter().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(ring.len(), 3);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let mut buckets = [0u64; BUCKETS];
        assert_eq!(quantile_ms(&buckets, 0.5), None);
        // 100 observations in (10 ms, 25 ms].
        buckets[3] = 100;
        let p50 = quantile_ms(&buckets, 0.5).unwrap_or_default();
        assert!((p50 - 17.5).abs() < 1e-9, "{p50}");
        // One slow one past every bound counts as the last bound.
        buckets[BUCKETS - 1] = 1;
        assert_eq!(quantile_ms(&buckets, 1.0), Some(120_000.0));
    }

    /// A snapshot as the runtime reports it: request and queue-wait histograms, completion
    /// tokens and errors by code.
    fn snapshot(latencies_ms: &[u64], tokens: f64, errors: &[(&str, f64)]) -> MetricsSnapshot {
        // Cumulative `_bucket` samples, as `/metrics` has them.
        let histogram = |values: &[u64]| -> Vec<ray_runtime::Sample> {
            let mut samples: Vec<ray_runtime::Sample> = LATENCY_BUCKETS
                .iter()
                .map(|bound| ray_runtime::Sample {
                    suffix: "_bucket",
                    labels: vec![("le", bound.to_string())],
                    value: values
                        .iter()
                        .filter(|v| (**v as f64) / 1000.0 <= *bound)
                        .count() as f64,
                })
                .collect();
            samples.push(ray_runtime::Sample {
                suffix: "_bucket",
                labels: vec![("le", "+Inf".into())],
                value: values.len() as f64,
            });
            samples
        };
        let mut m = MetricsSnapshot::default();
        let kind = ray_runtime::MetricKind::Histogram;
        m.labelled(
            "ray_request_duration_seconds",
            "",
            kind,
            histogram(latencies_ms),
        );
        m.labelled(
            "ray_queue_wait_seconds",
            "",
            kind,
            histogram(&vec![1; latencies_ms.len()]),
        );
        m.counter("ray_requests_total", "", None, latencies_ms.len() as f64);
        m.counter("ray_completion_tokens_total", "", None, tokens);
        m.labelled(
            "ray_request_errors_total",
            "",
            ray_runtime::MetricKind::Counter,
            errors
                .iter()
                .map(|(code, n)| ray_runtime::Sample {
                    suffix: "",
                    labels: vec![("code", (*code).to_string())],
                    value: *n,
                })
                .collect(),
        );
        m
    }

    #[test]
    fn samples_turn_counters_into_windows() {
        let mut history = History::default();
        // Cumulative counters: 10 fast requests, then 10 slow ones a second later.
        history.record(1_000, &snapshot(&[20; 10], 100.0, &[("queue_full", 2.0)]));
        let mut both = vec![20u64; 10];
        both.extend([3_000u64; 10]);
        history.record(
            1_001,
            &snapshot(
                &both,
                300.0,
                &[("queue_full", 2.0), ("invalid_request", 1.0)],
            ),
        );
        let (wait, latency) = history.window(300);
        assert_eq!(wait.iter().sum::<u64>(), 20);
        assert_eq!(latency.iter().sum::<u64>(), 20);
        let p50 = quantile_ms(&latency, 0.5).unwrap_or_default();
        let p99 = quantile_ms(&latency, 0.99).unwrap_or_default();
        assert!((10.0..=25.0).contains(&p50), "{p50}");
        assert!((2_500.0..=5_000.0).contains(&p99), "{p99}");
        // 100 tokens in the first second (from zero), 200 in the second.
        assert_eq!(history.tokens_per_second(60), 150.0);
        assert_eq!(
            history.refusals(),
            vec![(ErrorCode::QueueFull, 2), (ErrorCode::InvalidRequest, 1)]
        );
        let recent: Vec<(u32, ErrorCode, u32)> = history
            .errors
            .iter()
            .map(|e| (e.at, e.code, e.count))
            .collect();
        assert_eq!(
            recent,
            vec![
                (1_000, ErrorCode::QueueFull, 2),
                (1_001, ErrorCode::InvalidRequest, 1)
            ]
        );
        // A full slot of ten seconds is pushed, the next one starts empty.
        for second in 1_002..1_010 {
            history.record(second, &snapshot(&both, 300.0, &[]));
        }
        assert_eq!(history.slots.len(), 1);
        assert_eq!(history.seconds.len(), 10);
    }

    /// Every chart series has one point per completed slot, on the same boundaries (the slot
    /// in progress is in none), and after the rings wrap the oldest points still pair a slot
    /// with its own seconds.
    #[test]
    fn chart_points_pair_each_slot_with_its_seconds() {
        let mut history = History::default();
        let mut latencies = Vec::new();
        for second in 0..25u32 {
            latencies.push(20);
            history.record(5_000 + second, &snapshot(&latencies, 0.0, &[]));
        }
        let points = history.points();
        let sizes: Vec<usize> = points.iter().map(|(seconds, _)| seconds.len()).collect();
        assert_eq!(sizes, [10, 10]);
        for (seconds, slot) in &points {
            // One request a second: a slot counts as many requests as its seconds.
            let requests: u32 = seconds.iter().map(|s| u32::from(s.requests)).sum();
            assert_eq!(slot.latency.iter().sum::<u32>(), requests);
        }
        assert_eq!(points[0].1.at, points[0].0.last().unwrap().at);
        // Past the rings' length: at most SLOTS points, still paired.
        for second in 25..(SECONDS as u32 + 37) {
            latencies.push(20);
            history.record(5_000 + second, &snapshot(&latencies, 0.0, &[]));
        }
        let points = history.points();
        // 900 seconds kept: 7 of them in the slot in progress, 89 whole slots before it.
        assert_eq!(points.len(), SLOTS - 1);
        for (seconds, slot) in &points {
            assert_eq!(seconds.len(), STEP);
            assert_eq!(slot.at, seconds.last().unwrap().at);
            assert_eq!(slot.latency.iter().sum::<u32>(), STEP as u32);
        }
    }

    #[test]
    fn the_history_is_small() {
        assert!(
            History::footprint_bytes() < 64 * 1024,
            "{}",
            History::footprint_bytes()
        );
    }
}
