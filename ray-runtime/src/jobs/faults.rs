//! The job store's health: whether writes succeed, why not, and the bounded log of a failing
//! store (one line when it starts failing, a summary at most every [`SUMMARY_INTERVAL`] while
//! it fails, one line when it recovers), however many jobs retry meanwhile.
//!
//! While the store fails, submissions are refused with `503` (`async_queue_unavailable`, or
//! `async_queue_storage_low` when the disk is full), the dispatcher and the callback loop
//! start nothing (their outcome could not be recorded), and a probe write every
//! [`PROBE_INTERVAL`] finds out when the store works again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use ray_core::time::{format_unix_millis, unix_millis_now};
use ray_core::{ErrorCode, RayError};
use tokio::time::Instant;

use super::{JobQueue, StoreError};

/// The longest pause between two log lines while the store keeps failing.
pub(crate) const SUMMARY_INTERVAL: Duration = Duration::from_secs(5);
/// How often a failing store is probed with a write.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// The longest a job waits before its failed write is tried again.
pub(crate) const MAX_STORE_RETRY_DELAY: Duration = Duration::from_secs(10);

/// Why a store write failed, as an operator would fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultKind {
    /// No space (or quota) left.
    Space,
    /// Permission denied or a read-only file system.
    Permission,
    /// Any other I/O error.
    Io,
}

impl FaultKind {
    pub(crate) fn of(error: &StoreError) -> FaultKind {
        let StoreError::Io { source, .. } = error else {
            return FaultKind::Io;
        };
        match source.raw_os_error() {
            Some(ENOSPC | EDQUOT) => FaultKind::Space,
            Some(EPERM | EACCES | EROFS) => FaultKind::Permission,
            _ if source.kind() == std::io::ErrorKind::PermissionDenied => FaultKind::Permission,
            _ => FaultKind::Io,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FaultKind::Space => "space",
            FaultKind::Permission => "permission",
            FaultKind::Io => "io",
        }
    }
}

// Linux error numbers.
const EPERM: i32 = 1;
const EACCES: i32 = 13;
const ENOSPC: i32 = 28;
const EROFS: i32 = 30;
const EDQUOT: i32 = 122;

/// A fault in progress.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub(crate) kind: FaultKind,
    pub(crate) reason: String,
    pub(crate) since: Instant,
    pub(crate) since_ms: i64,
    /// Writes that failed since the fault began.
    pub(crate) failed_writes: u64,
    failed_at_last_log: u64,
    last_log: Instant,
}

/// The store's health; cheap to ask while the store works.
#[derive(Debug, Default)]
pub(crate) struct StoreHealth {
    failing: AtomicBool,
    fault: Mutex<Option<Fault>>,
}

impl StoreHealth {
    /// Whether writes are failing now.
    pub(crate) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    /// The fault in progress, if any.
    pub(crate) fn fault(&self) -> Option<Fault> {
        if !self.is_failing() {
            return None;
        }
        self.fault.lock().clone()
    }

    /// Counts a failed write of `action`; logs only when the fault begins, or a summary when
    /// the last line is [`SUMMARY_INTERVAL`] old. `waiting` is the number of jobs not finished.
    pub(crate) fn failed(&self, action: &str, error: &StoreError, waiting: usize) {
        let kind = FaultKind::of(error);
        let now = Instant::now();
        let mut fault = self.fault.lock();
        match fault.as_mut() {
            None => {
                tracing::error!(
                    action,
                    error = %error,
                    kind = kind.as_str(),
                    waiting_jobs = waiting,
                    "the job store refuses writes; jobs wait and new ones are refused until a \
                     write succeeds again"
                );
                *fault = Some(Fault {
                    kind,
                    reason: error.to_string(),
                    since: now,
                    since_ms: unix_millis_now() as i64,
                    failed_writes: 1,
                    failed_at_last_log: 1,
                    last_log: now,
                });
                self.failing.store(true, Ordering::SeqCst);
            }
            Some(current) => {
                current.failed_writes += 1;
                current.kind = kind;
                current.reason = error.to_string();
                summarise(current, now, waiting);
            }
        }
    }

    /// A summary line if one is due (called by the probe loop, so a store that fails while
    /// nothing writes still reports every [`SUMMARY_INTERVAL`]).
    pub(crate) fn tick(&self, waiting: usize) {
        if let Some(fault) = self.fault.lock().as_mut() {
            summarise(fault, Instant::now(), waiting);
        }
    }

    /// A write succeeded; ends a fault with one line. Answers whether one ended.
    pub(crate) fn succeeded(&self) -> bool {
        if !self.is_failing() {
            return false;
        }
        let Some(fault) = self.fault.lock().take() else {
            return false;
        };
        self.failing.store(false, Ordering::SeqCst);
        // At warn, like the lines before it, so a log filtered to warnings shows the end too.
        tracing::warn!(
            failed_for_ms = fault.since.elapsed().as_millis() as u64,
            failed_writes = fault.failed_writes,
            "the job store accepts writes again; jobs resume"
        );
        true
    }

    /// The refusal a submission gets while the store fails.
    pub(crate) fn refusal(&self) -> Option<RayError> {
        self.fault().map(|fault| refusal(&fault))
    }
}

fn summarise(fault: &mut Fault, now: Instant, waiting: usize) {
    if now.duration_since(fault.last_log) < SUMMARY_INTERVAL {
        return;
    }
    let failed = fault.failed_writes - fault.failed_at_last_log;
    fault.last_log = now;
    fault.failed_at_last_log = fault.failed_writes;
    tracing::warn!(
        failed_writes = failed,
        failed_writes_total = fault.failed_writes,
        waiting_jobs = waiting,
        failing_for_ms = now.duration_since(fault.since).as_millis() as u64,
        error = %fault.reason,
        "the job store still refuses writes"
    );
}

/// `503 async_queue_storage_low` for a full disk, `503 async_queue_unavailable` otherwise.
pub(crate) fn refusal(fault: &Fault) -> RayError {
    let details = serde_json::json!({
        "reason": fault.reason,
        "kind": fault.kind.as_str(),
        "failingSince": format_unix_millis(fault.since_ms),
    });
    match fault.kind {
        FaultKind::Space => RayError::new(
            ErrorCode::AsyncQueueStorageLow,
            format!(
                "The job store is out of space and cannot take new jobs: {}",
                fault.reason
            ),
        ),
        FaultKind::Permission | FaultKind::Io => RayError::new(
            ErrorCode::AsyncQueueUnavailable,
            format!(
                "The job store refuses writes and cannot take new jobs: {}",
                fault.reason
            ),
        ),
    }
    .with_details(details)
}

impl JobQueue {
    /// Records a failed store operation in the store's health (bounded logging).
    pub(crate) fn store_failed(&self, action: &str, error: &StoreError) {
        super::bump(&self.stats.store_errors);
        let waiting =
            self.with_state(|s| s.jobs.values().filter(|e| !e.status.is_terminal()).count());
        self.store_health.failed(action, error, waiting);
    }

    /// Records a successful write; when it ends a fault, wakes the loops that paused.
    pub(crate) fn store_succeeded(&self) {
        if self.store_health.succeeded() {
            self.wake_dispatch.notify_one();
            self.wake_callbacks.notify_one();
            self.wake_sweep.notify_one();
        }
    }

    /// The delay before a job whose write failed `failures` times is tried again.
    pub(crate) fn store_retry_delay(&self, failures: u32) -> Duration {
        super::retry_delay(self.settings.poll_interval, failures, self.jitter())
            .min(MAX_STORE_RETRY_DELAY)
    }

    /// While the store fails, probes it every [`PROBE_INTERVAL`] and logs a summary when due;
    /// ends the fault (and wakes the loops) at the first probe that succeeds.
    pub(crate) async fn store_probe_loop(self: Arc<Self>) {
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
                () = self.wake_probe.notified() => {}
            }
            if !self.store_health.is_failing() {
                continue;
            }
            match self.blocking(|store| store.probe()).await {
                Ok(()) => self.store_succeeded(),
                Err(_) => {
                    let waiting = self.with_state(|s| {
                        s.jobs.values().filter(|e| !e.status.is_terminal()).count()
                    });
                    self.store_health.tick(waiting);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(code: i32) -> StoreError {
        StoreError::Io {
            action: "write",
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(code),
        }
    }

    #[test]
    fn faults_are_classified_as_an_operator_fixes_them() {
        assert_eq!(FaultKind::of(&io(28)), FaultKind::Space);
        assert_eq!(FaultKind::of(&io(13)), FaultKind::Permission);
        assert_eq!(FaultKind::of(&io(30)), FaultKind::Permission);
        assert_eq!(FaultKind::of(&io(5)), FaultKind::Io);
        assert_eq!(FaultKind::of(&StoreError::Other("x".into())), FaultKind::Io);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fault_is_counted_refused_and_ended_by_a_success() {
        let health = StoreHealth::default();
        assert!(health.refusal().is_none());
        health.failed("write", &io(13), 3);
        health.failed("write", &io(13), 3);
        let refusal = health.refusal().unwrap();
        assert_eq!(refusal.code(), ErrorCode::AsyncQueueUnavailable);
        assert_eq!(refusal.retry_after_secs(), Some(5));
        assert_eq!(health.fault().unwrap().failed_writes, 2);
        health.failed("write", &io(28), 3);
        assert_eq!(
            health.refusal().unwrap().code(),
            ErrorCode::AsyncQueueStorageLow
        );
        assert!(health.succeeded());
        assert!(!health.succeeded());
        assert!(health.refusal().is_none());
    }
}
