//! The queue's health snapshot (`/health` `asyncQueue`) and its metrics.

use std::sync::atomic::Ordering;

use ray_core::wire::{AsyncQueueHealth, CallbackStatus, JobStatus};
use tokio::time::Instant;

use super::{CALLBACK_CONCURRENCY, JOBS_PRESSURE_THRESHOLD, JobQueue, mib};
use crate::metrics::{MetricKind, MetricsSnapshot, Sample};

/// Counts taken from the index in one pass.
#[derive(Debug, Default)]
struct Counts {
    by_status: [u32; 5],
    callback_pending: u32,
    callback_delivered: u32,
    callback_failed: u32,
    job_retries: u32,
    callback_retries: u32,
    oldest_queued_ms: i64,
    total: u32,
    pending_admissions: u32,
    active_attempts: u32,
    active_deliveries: u32,
}

fn status_index(status: JobStatus) -> usize {
    JobStatus::ALL
        .iter()
        .position(|s| *s == status)
        .unwrap_or(0)
}

impl JobQueue {
    fn counts(&self) -> Counts {
        let now = Instant::now();
        let now_ms = ray_core::time::unix_millis_now() as i64;
        self.with_state(|state| {
            let mut counts = Counts {
                total: state.jobs.len() as u32,
                pending_admissions: state.pending_admissions,
                active_attempts: state.active_attempts,
                active_deliveries: state.active_deliveries,
                ..Counts::default()
            };
            let mut oldest: Option<i64> = None;
            for entry in state.jobs.values() {
                counts.by_status[status_index(entry.status)] += 1;
                if entry.status == JobStatus::Queued {
                    oldest = Some(oldest.map_or(entry.created_ms, |o| o.min(entry.created_ms)));
                    if entry.ready.is_some_and(|(at, _)| at > now) {
                        counts.job_retries += 1;
                    }
                }
                if let Some(callback) = entry.callback {
                    match callback.status {
                        CallbackStatus::Pending => {
                            counts.callback_pending += 1;
                            if callback.due.is_some_and(|(at, _)| at > now)
                                && entry.status.is_terminal()
                            {
                                counts.callback_retries += 1;
                            }
                        }
                        CallbackStatus::Delivered => counts.callback_delivered += 1,
                        CallbackStatus::Failed => counts.callback_failed += 1,
                    }
                }
            }
            counts.oldest_queued_ms = oldest.map_or(0, |o| (now_ms - o).max(0));
            counts
        })
    }

    /// The snapshot `/health` shows under `asyncQueue`.
    pub fn health(&self) -> AsyncQueueHealth {
        let counts = self.counts();
        let s = &self.settings;
        let jobs_ratio =
            f64::from(counts.total + counts.pending_admissions) / f64::from(s.max_jobs);
        let available = self.store.available_bytes();
        let reserved = u64::from(counts.pending_admissions).saturating_mul(s.max_record_bytes);
        let min_free = s.min_free_storage_mib as f64;
        let available_mib = available.map(mib);
        let effective_mib = available.map(|a| mib(a.saturating_sub(reserved)));
        let ratio = |minimum: f64, have: f64| {
            if have > 0.0 {
                minimum / have
            } else {
                f64::INFINITY
            }
        };
        let storage_low = available_mib.map(|a| a < min_free);
        let jobs_pressure = jobs_ratio >= JOBS_PRESSURE_THRESHOLD;
        let fault = self.store_health.fault();
        AsyncQueueHealth {
            enabled: true,
            degraded: jobs_pressure || storage_low == Some(true) || fault.is_some(),
            store_failing: fault.is_some(),
            store_error: fault.as_ref().map(|f| f.reason.clone()),
            store_error_kind: fault.as_ref().map(|f| f.kind.as_str().to_string()),
            store_failing_since: fault
                .as_ref()
                .map(|f| ray_core::time::format_unix_millis(f.since_ms)),
            store_failed_writes: fault.as_ref().map_or(0, |f| f.failed_writes),
            queued: counts.by_status[status_index(JobStatus::Queued)],
            running: counts.by_status[status_index(JobStatus::Running)],
            active_inference_jobs: counts.active_attempts,
            succeeded: counts.by_status[status_index(JobStatus::Succeeded)],
            failed: counts.by_status[status_index(JobStatus::Failed)],
            cancelled: counts.by_status[status_index(JobStatus::Cancelled)],
            callback_pending: counts.callback_pending,
            active_callback_deliveries: counts.active_deliveries,
            callback_delivered: counts.callback_delivered,
            callback_failed: counts.callback_failed,
            retry_scheduled: counts.job_retries + counts.callback_retries,
            job_retry_scheduled: counts.job_retries,
            callback_retry_scheduled: counts.callback_retries,
            total_jobs: counts.total,
            max_jobs: s.max_jobs,
            jobs_ratio,
            jobs_pressure,
            pressure_threshold: JOBS_PRESSURE_THRESHOLD,
            pending_admissions: counts.pending_admissions,
            available_storage_mib: available_mib,
            min_free_storage_mib: s.min_free_storage_mib,
            reserved_admission_mib: mib(reserved),
            effective_available_storage_mib: effective_mib,
            storage_reserve_ratio: available_mib.map(|a| ratio(min_free, a)),
            storage_low,
            storage_admission_reserve_ratio: effective_mib.map(|e| ratio(min_free, e)),
            storage_admission_low: effective_mib.map(|e| e < min_free),
            max_record_bytes: s.max_record_bytes,
            quarantined_files: self.stats.quarantined.load(Ordering::Relaxed),
            oldest_queued_age_ms: counts.oldest_queued_ms as u64,
            callback_signing: self.callbacks.signs(),
            completed_ttl_ms: s.completed_ttl.as_millis() as u64,
            poll_interval_ms: s.poll_interval.as_millis() as u64,
            dispatch_concurrency: s.dispatch_concurrency,
            callback_concurrency: CALLBACK_CONCURRENCY,
            max_attempts: s.max_attempts,
            callback_timeout_ms: s.callback_timeout.as_millis() as u64,
            max_callback_attempts: s.max_callback_attempts,
        }
    }

    /// Whether the queue reports pressure (`async_queue_pressure` in `/readyz`).
    pub fn is_degraded(&self) -> bool {
        self.health().degraded
    }

    /// The queue's metric families.
    pub fn metrics(&self) -> MetricsSnapshot {
        let health = self.health();
        let stats = &self.stats;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64;
        let mut m = MetricsSnapshot::default();
        m.labelled(
            "ray_jobs",
            "Jobs retained, by status.",
            MetricKind::Gauge,
            [
                (JobStatus::Queued, health.queued),
                (JobStatus::Running, health.running),
                (JobStatus::Succeeded, health.succeeded),
                (JobStatus::Failed, health.failed),
                (JobStatus::Cancelled, health.cancelled),
            ]
            .into_iter()
            .map(|(status, n)| Sample {
                suffix: "",
                labels: vec![("status", status.as_str().to_string())],
                value: f64::from(n),
            })
            .collect(),
        );
        m.gauge(
            "ray_jobs_queued",
            "Jobs waiting to run.",
            Some("async_queue.queued"),
            f64::from(health.queued),
        );
        m.gauge(
            "ray_jobs_running",
            "Jobs with an attempt in progress.",
            Some("async_queue.running"),
            f64::from(health.running),
        );
        m.gauge(
            "ray_jobs_active_attempts",
            "Job attempts executing in the runtime.",
            Some("async_queue.active_inference_jobs"),
            f64::from(health.active_inference_jobs),
        );
        m.gauge(
            "ray_jobs_retained",
            "Jobs retained in any state (counted against asyncQueue.maxJobs).",
            Some("async_queue.total_jobs"),
            f64::from(health.total_jobs),
        );
        m.gauge(
            "ray_jobs_max",
            "asyncQueue.maxJobs.",
            Some("async_queue.max_jobs"),
            f64::from(health.max_jobs),
        );
        m.gauge(
            "ray_jobs_ratio",
            "(Retained jobs + pending admissions) / asyncQueue.maxJobs; at 1 submissions get async_queue_full.",
            Some("async_queue.jobs_ratio"),
            health.jobs_ratio,
        );
        m.gauge(
            "ray_jobs_pending_admissions",
            "Submissions admitted and not yet written.",
            Some("async_queue.pending_admissions"),
            f64::from(health.pending_admissions),
        );
        m.gauge(
            "ray_jobs_retry_scheduled",
            "Queued jobs waiting for a retry.",
            Some("async_queue.job_retry_scheduled"),
            f64::from(health.job_retry_scheduled),
        );
        m.gauge(
            "ray_jobs_store_failing",
            "1 while the job store refuses writes (submissions get 503, no job starts).",
            Some("async_queue.store_failing"),
            if health.store_failing { 1.0 } else { 0.0 },
        );
        m.gauge(
            "ray_jobs_oldest_queued_seconds",
            "Age of the oldest queued job.",
            None,
            health.oldest_queued_age_ms as f64 / 1e3,
        );
        m.gauge(
            "ray_jobs_storage_available_bytes",
            "Free space under asyncQueue.storageDir (-1 when the store cannot tell).",
            None,
            health
                .available_storage_mib
                .map_or(-1.0, |a| (a * 1024.0 * 1024.0).round()),
        );
        m.gauge(
            "ray_jobs_storage_min_free_bytes",
            "asyncQueue.minFreeStorageMiB in bytes.",
            None,
            (health.min_free_storage_mib * 1024 * 1024) as f64,
        );
        m.gauge(
            "ray_jobs_storage_low",
            "1 while free space is below asyncQueue.minFreeStorageMiB (submissions get async_queue_storage_low).",
            Some("async_queue.storage_admission_low"),
            if health.storage_admission_low == Some(true) { 1.0 } else { 0.0 },
        );
        m.gauge(
            "ray_jobs_completed_ttl_seconds",
            "asyncQueue.completedTtlMs in seconds: finished jobs are pruned this long after they settle.",
            None,
            health.completed_ttl_ms as f64 / 1000.0,
        );
        m.gauge(
            "ray_jobs_max_record_bytes",
            "asyncQueue.maxRecordBytes.",
            Some("async_queue.max_record_bytes"),
            health.max_record_bytes as f64,
        );
        m.counter(
            "ray_jobs_submitted_total",
            "Jobs accepted (202).",
            None,
            load(&stats.submitted),
        );
        m.labelled(
            "ray_jobs_rejected_total",
            "Submissions refused by a queue limit: full (maxJobs), storage_low, record_too_large.",
            MetricKind::Counter,
            [
                ("full", load(&stats.rejected_full)),
                ("storage_low", load(&stats.rejected_storage)),
                ("record_too_large", load(&stats.rejected_too_large)),
            ]
            .into_iter()
            .map(|(reason, value)| Sample {
                suffix: "",
                labels: vec![("reason", reason.to_string())],
                value,
            })
            .collect(),
        );
        m.labelled(
            "ray_jobs_submit_duration_seconds",
            "Time to accept a job, durable write included.",
            MetricKind::Histogram,
            stats.submit_duration.samples(),
        );
        m.counter(
            "ray_jobs_attempts_total",
            "Job attempts started.",
            None,
            load(&stats.attempts),
        );
        m.counter(
            "ray_jobs_retries_total",
            "Failed attempts scheduled for a retry.",
            None,
            load(&stats.retries),
        );
        m.labelled(
            "ray_jobs_finished_total",
            "Jobs that finished, by outcome.",
            MetricKind::Counter,
            [
                ("succeeded", load(&stats.succeeded)),
                ("failed", load(&stats.failed)),
                ("cancelled", load(&stats.cancelled)),
            ]
            .into_iter()
            .map(|(status, value)| Sample {
                suffix: "",
                labels: vec![("status", status.to_string())],
                value,
            })
            .collect(),
        );
        m.counter(
            "ray_jobs_pruned_total",
            "Finished jobs removed after asyncQueue.completedTtlMs.",
            None,
            load(&stats.pruned),
        );
        m.counter(
            "ray_jobs_recovered_total",
            "Jobs loaded from the store at start.",
            None,
            load(&stats.recovered),
        );
        m.counter(
            "ray_jobs_quarantined_total",
            "Store entries set aside at start (stale temporary files, unreadable or invalid records).",
            Some("async_queue.quarantined_files"),
            load(&stats.quarantined),
        );
        m.counter(
            "ray_jobs_store_errors_total",
            "Job store operations that failed.",
            None,
            load(&stats.store_errors),
        );
        m.labelled(
            "ray_job_callbacks",
            "Callbacks of retained jobs, by status.",
            MetricKind::Gauge,
            [
                ("pending", health.callback_pending),
                ("delivered", health.callback_delivered),
                ("failed", health.callback_failed),
            ]
            .into_iter()
            .map(|(status, n)| Sample {
                suffix: "",
                labels: vec![("status", status.to_string())],
                value: f64::from(n),
            })
            .collect(),
        );
        m.gauge(
            "ray_job_callbacks_active",
            "Deliveries in progress.",
            Some("async_queue.active_callback_deliveries"),
            f64::from(health.active_callback_deliveries),
        );
        m.counter(
            "ray_job_callback_attempts_total",
            "Callback delivery attempts.",
            None,
            load(&stats.deliveries),
        );
        m.counter(
            "ray_job_callback_attempt_failures_total",
            "Delivery attempts that failed (non-2xx, refused address, timeout, network).",
            None,
            load(&stats.deliveries_failed),
        );
        m.counter(
            "ray_job_callbacks_failed_total",
            "Callbacks that failed every attempt.",
            None,
            load(&stats.callbacks_failed),
        );
        m
    }
}
