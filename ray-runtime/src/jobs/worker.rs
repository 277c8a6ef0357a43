//! The job loops: dispatch of queued jobs through the runtime (in the scheduler's `batch`
//! class unless the job asked for another, so interactive requests go first), retries with
//! exponential backoff and jitter, and pruning of finished jobs.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ray_core::ErrorCode;
use ray_core::RayError;
use ray_core::time::{format_unix_millis, now_rfc3339, unix_millis_now};
use ray_core::wire::{InferRequest, InferResponse, JobError, JobRecord, JobStatus};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::claim::ClaimError;
use super::{JobQueue, State, StoreError, bump, record};

/// What runs a job's request: the runtime, as the queue sees it. Its one implementation is
/// [`Runtime`](crate::Runtime)'s (in `jobs/api.rs`); the queue names nothing above it.
pub(crate) trait JobRunner: Clone + Send + Sync + 'static {
    /// Runs one request to its end, like [`Runtime::infer`](crate::Runtime::infer).
    fn infer(
        &self,
        request: InferRequest,
    ) -> impl Future<Output = Result<InferResponse, RayError>> + Send;

    /// Whether the health gate would refuse a job for `model` now (its backend is down,
    /// warming or in cooldown, and so is every fallback of its; `None`, or a name no model
    /// has such as `auto`: the default model, unless routing rules may choose another), so
    /// no attempt is spent on a refusal. Interactive traffic needs no check here:
    /// jobs run in the scheduler's `batch` class.
    fn backend_refuses(&self, model: Option<&str>) -> bool;
}

/// The longest delay between two attempts of a job or a callback.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// How often the dispatcher looks again while the backend is known to be down or warming.
const REFUSED_RECHECK: Duration = Duration::from_millis(200);

/// The delay before the next attempt after `failures` failed ones: `base × 2^(failures − 1)`,
/// at most [`MAX_RETRY_DELAY`], of which the second half is scaled by `jitter` (in `[0, 1)`),
/// so retries of jobs that failed together spread out ("equal jitter").
pub fn retry_delay(base: Duration, failures: u32, jitter: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(24);
    let full = base
        .saturating_mul(1u32 << exponent)
        .min(MAX_RETRY_DELAY)
        .max(Duration::from_millis(1));
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// A cheap source of jitter in `[0, 1)`, seeded from the OS.
#[derive(Debug)]
pub(crate) struct Jitter {
    counter: AtomicU64,
    key: u64,
}

impl Default for Jitter {
    fn default() -> Jitter {
        Jitter {
            counter: AtomicU64::new(0),
            key: std::collections::hash_map::RandomState::new().hash_one(unix_millis_now()),
        }
    }
}

impl Jitter {
    pub(crate) fn next(&self) -> f64 {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        (crate::ids::splitmix64(n ^ self.key) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What the dispatcher should do next.
enum Next {
    /// The first due job, with the model it names: it starts if that model takes requests,
    /// else the first due job of another model.
    Now((String, Option<Box<str>>)),
    /// The earliest queued job may start then.
    At(Instant),
    /// Nothing is queued, or every dispatch place is taken.
    Wait,
}

/// Counts an attempt as active in the index until dropped (also when the task is aborted).
struct ActiveAttempt<'a>(&'a JobQueue);

impl Drop for ActiveAttempt<'_> {
    fn drop(&mut self) {
        self.0
            .with_state(|s| s.active_attempts = s.active_attempts.saturating_sub(1));
    }
}

impl JobQueue {
    /// Starts queued jobs, at most `dispatchConcurrency` at once, in the order they became
    /// ready. A job enters the scheduler in the `batch` class (or the class it asked for), so
    /// interactive requests go before it and the reserved permits stay theirs; no job starts
    /// while the backend is known to be down or warming, so no attempt is spent on a refusal.
    pub(crate) async fn dispatch_loop<R: JobRunner>(self: Arc<Self>, runtime: R) {
        let mut running: JoinSet<()> = JoinSet::new();
        loop {
            while let Some(done) = running.try_join_next() {
                if let Err(error) = done
                    && error.is_panic()
                {
                    tracing::error!("async queue task failed: a job attempt panicked");
                }
            }
            if self.stopping.load(Ordering::SeqCst) {
                if running.join_next().await.is_none() {
                    return;
                }
                continue;
            }
            let next = if running.len() < self.settings.dispatch_concurrency as usize {
                self.next_ready(Instant::now())
            } else {
                Next::Wait
            };
            match next {
                Next::Now(first) => {
                    // The first due job whose model's backend would take it: a job for a model
                    // that is down waits without holding back the jobs for other models. Each
                    // model is asked once per pass.
                    let mut refusing: Vec<Option<Box<str>>> = Vec::new();
                    let mut candidate = Some(first);
                    let mut chosen = None;
                    while let Some((id, model)) = candidate.take() {
                        if runtime.backend_refuses(model.as_deref()) {
                            refusing.push(model);
                            candidate = self.next_due_past(Instant::now(), &refusing);
                        } else {
                            chosen = Some(id);
                        }
                    }
                    let Some(id) = chosen else {
                        tokio::select! {
                            () = tokio::time::sleep(REFUSED_RECHECK) => {}
                            () = self.wake_dispatch.notified() => {}
                            Some(_) = running.join_next(), if !running.is_empty() => {}
                        }
                        continue;
                    };
                    if self.take_ready(&id) {
                        running.spawn(self.clone().run_attempt(runtime.clone(), id));
                    }
                }
                Next::At(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.wake_dispatch.notified() => {}
                        Some(_) = running.join_next(), if !running.is_empty() => {}
                    }
                }
                Next::Wait => {
                    tokio::select! {
                        () = self.wake_dispatch.notified() => {}
                        Some(_) = running.join_next(), if !running.is_empty() => {}
                    }
                }
            }
        }
    }

    fn next_ready(&self, now: Instant) -> Next {
        if self.store_health.is_failing() {
            // An attempt could not be recorded; the probe wakes the dispatcher on recovery.
            return Next::Wait;
        }
        self.with_state(|state| match state.ready.first_key_value() {
            Some(((at, _), id)) if *at <= now => {
                let model = state.jobs.get(id).and_then(|entry| entry.model.clone());
                Next::Now((id.clone(), model))
            }
            Some(((at, _), _)) => Next::At(*at),
            None => Next::Wait,
        })
    }

    /// The first job due at `now` whose model is not one of `refusing`, with its model.
    fn next_due_past(
        &self,
        now: Instant,
        refusing: &[Option<Box<str>>],
    ) -> Option<(String, Option<Box<str>>)> {
        self.with_state(|state| {
            state
                .ready
                .iter()
                .take_while(|((at, _), _)| *at <= now)
                .find_map(|(_, id)| {
                    let model = state.jobs.get(id).and_then(|entry| entry.model.as_deref());
                    let refused = refusing.iter().any(|r| r.as_deref() == model);
                    (!refused).then(|| (id.clone(), model.map(Box::from)))
                })
        })
    }

    /// Takes a ready job out of the ready order; false if it is no longer there.
    fn take_ready(&self, id: &str) -> bool {
        self.with_state(|state| {
            let Some(entry) = state.jobs.get_mut(id) else {
                return false;
            };
            let Some(slot) = entry.ready.take() else {
                return false;
            };
            entry.dispatched = true;
            state.ready.remove(&slot);
            true
        })
    }

    /// Gives a taken job back to the ready order, `delay` from now.
    fn give_back(&self, id: &str, delay: Duration) {
        self.with_state(|state| {
            let at = Instant::now() + delay;
            let slot = state.slot(at);
            if let Some(entry) = state.jobs.get_mut(id) {
                entry.dispatched = false;
                if entry.status == JobStatus::Queued && entry.ready.is_none() {
                    entry.ready = Some(slot);
                    state.ready.insert(slot, id.to_string());
                }
            }
        });
        self.wake_dispatch.notify_one();
    }

    /// Gives a taken job back after a failed store operation, later each time it fails in a
    /// row (at most [`MAX_STORE_RETRY_DELAY`](super::faults::MAX_STORE_RETRY_DELAY)).
    fn give_back_after_failure(&self, id: &str) {
        let failures = self.with_state(|s| {
            s.jobs.get_mut(id).map_or(1, |entry| {
                entry.store_failures = entry.store_failures.saturating_add(1);
                entry.store_failures
            })
        });
        self.give_back(id, self.store_retry_delay(failures));
    }

    /// Writes a job the recovery rules finished (its interrupted attempt was its last) and
    /// brings the index in line; gives it back for a later try if the write fails.
    async fn settle_recovered(&self, id: &str, record: JobRecord) {
        if let Err(error) = self.write(&record).await {
            self.store_failed("write a recovered job", &error);
            self.give_back_after_failure(id);
            return;
        }
        if record.status == JobStatus::Failed {
            bump(&self.stats.failed);
            tracing::warn!(job_id = %record.id, attempts = record.attempts, code = record.error.as_ref().map(|e| e.code.as_str()), "job failed");
            self.emit_failed(&record);
        }
        self.with_state(|s| {
            if let Some(entry) = s.jobs.get_mut(id) {
                entry.dispatched = false;
                entry.store_failures = 0;
            }
            s.apply(&record, Instant::now());
        });
        self.after_change(&record);
    }

    pub(crate) fn entry_lock(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
        self.with_state(|state| state.jobs.get(id).map(|e| e.lock.clone()))
    }

    pub(crate) fn status_of(&self, id: &str) -> Option<JobStatus> {
        self.with_state(|state| state.jobs.get(id).map(|e| e.status))
    }

    /// Runs one attempt: records it as running (durably, so it counts even if the process dies
    /// during it), runs the request through the runtime, and records the outcome.
    async fn run_attempt<R: JobRunner>(self: Arc<Self>, runtime: R, id: String) {
        let Some(lock) = self.entry_lock(&id) else {
            return;
        };
        let cancel = Arc::new(Notify::new());
        let (record, lease) = {
            let _guard = lock.lock().await;
            if self.status_of(&id) != Some(JobStatus::Queued) {
                // Cancelled between being taken and starting.
                self.with_state(|s| {
                    if let Some(entry) = s.jobs.get_mut(&id) {
                        entry.dispatched = false;
                    }
                });
                return;
            }
            let lease = match self.claim(&id).await {
                Ok(lease) => lease,
                Err(refused) => {
                    self.claim_refused(&id, &refused);
                    return;
                }
            };
            match self.start_attempt(&id, &cancel).await {
                Some(record) => (record, lease),
                None => {
                    self.end_claim(lease, false).await;
                    return;
                }
            }
        };
        bump(&self.stats.attempts);
        let outcome = {
            let _active = ActiveAttempt(&self);
            tokio::select! {
                result = runtime.infer(batch_request(&record.request)) => Some(result),
                () = cancel.notified() => None,
                lost = self.keep_lease(lease.clone()) => {
                    // Another dispatcher may run the job now: this attempt stops and leaves
                    // the record to it (the index follows the store when the job is next read).
                    tracing::warn!(job_id = %id, error = %lost, "a running job's lease was lost; the attempt is stopped");
                    let mut fallback = record.clone();
                    fallback.status = JobStatus::Queued;
                    self.with_state(|s| {
                        if let Some(entry) = s.jobs.get_mut(&id) {
                            entry.cancel = None;
                        }
                        s.apply(&fallback, Instant::now());
                    });
                    return;
                }
            }
        };
        // Cancelled: the cancellation wrote the record; dropping the call above stopped the
        // backend's work.
        let Some(result) = outcome else {
            self.end_claim(lease, true).await;
            return;
        };
        let _guard = lock.lock().await;
        if self.status_of(&id) != Some(JobStatus::Running) {
            self.end_claim(lease, true).await;
            return;
        }
        let finished = self.finish_attempt(record, result).await;
        self.end_claim(lease, finished).await;
    }

    /// Reads a claimed job's record and records the attempt as running; `None` when the job
    /// turned out not to be runnable (the index is brought in line) or the write failed (it
    /// is given back).
    async fn start_attempt(&self, id: &str, cancel: &Arc<Notify>) -> Option<JobRecord> {
        let mut record = match self.read(id).await {
            Ok(Some(record)) if record.status == JobStatus::Queued => record,
            Ok(Some(mut record)) if record.status == JobStatus::Running => {
                // The write that ended the last attempt (or the recovery at start) failed,
                // so the store still says running although nothing runs: apply the
                // recovery rules a restart would, then go on from there.
                record::recover(
                    &mut record,
                    self.settings.max_callback_attempts,
                    &now_rfc3339(),
                );
                if record.status != JobStatus::Queued {
                    self.settle_recovered(id, record).await;
                    return None;
                }
                record
            }
            Ok(Some(record)) => {
                self.with_state(|s| {
                    if let Some(entry) = s.jobs.get_mut(id) {
                        entry.dispatched = false;
                    }
                    s.apply(&record, Instant::now());
                });
                return None;
            }
            Ok(None) => {
                tracing::warn!(job_id = %id, "a queued job's record is missing from the store; the job is dropped");
                self.with_state(|s| s.remove(id));
                return None;
            }
            Err(StoreError::Damaged(reason)) => {
                tracing::error!(job_id = %id, error = %reason, "a queued job's record is damaged; the job is dropped and answered job_record_damaged");
                self.with_state(|s| {
                    s.remove(id);
                    s.damaged.insert(id.to_string());
                });
                return None;
            }
            Err(error) => {
                self.store_failed("read a queued job", &error);
                self.give_back_after_failure(id);
                return None;
            }
        };
        let now = now_rfc3339();
        record.status = JobStatus::Running;
        record.attempts += 1;
        record.started_at.get_or_insert_with(|| now.clone());
        record.updated_at = now;
        record.next_attempt_at = None;
        if let Err(error) = self.write(&record).await {
            self.store_failed("record a job attempt", &error);
            self.give_back_after_failure(id);
            return None;
        }
        self.with_state(|s| {
            if let Some(entry) = s.jobs.get_mut(id) {
                entry.dispatched = false;
                entry.cancel = Some(cancel.clone());
                entry.store_failures = 0;
            }
            s.active_attempts += 1;
            s.apply(&record, Instant::now());
        });
        Some(record)
    }

    /// Leaves a job whose claim was refused to its holder: it is looked at again when that
    /// lease ends (a completed job when its record is next read).
    fn claim_refused(&self, id: &str, refused: &ClaimError) {
        let delay = match refused {
            ClaimError::Held { expires_ms, .. } => {
                Duration::from_millis(expires_ms.saturating_sub(unix_millis_now()))
            }
            ClaimError::Store(error) => {
                self.store_failed("claim a job", error);
                return self.give_back_after_failure(id);
            }
            _ => self.settings.poll_interval,
        };
        tracing::debug!(job_id = %id, error = %refused, "a job is claimed elsewhere");
        self.give_back(id, delay.max(self.settings.poll_interval));
    }

    /// Records an attempt's outcome; answers whether the job is finished (its final record is
    /// stored).
    async fn finish_attempt(
        &self,
        mut record: JobRecord,
        result: Result<InferResponse, RayError>,
    ) -> bool {
        let now_ms = unix_millis_now() as i64;
        let now = format_unix_millis(now_ms);
        record.updated_at = now.clone();
        let mut given_back: Option<ErrorCode> = None;
        match result {
            Ok(response) => {
                record.status = JobStatus::Succeeded;
                record.result = Some(Box::new(response));
                record.error = None;
                record.completed_at = Some(now);
                if let Err(too_large) = record::encode(&record, self.settings.max_record_bytes) {
                    record.result = None;
                    record.status = JobStatus::Failed;
                    record.error = Some(JobError::from_ray(
                        &RayError::new(
                            ErrorCode::AsyncJobRecordTooLarge,
                            format!(
                                "The result makes the job record {} bytes, more than \
                                 asyncQueue.maxRecordBytes ({}); it was not kept",
                                too_large.bytes, too_large.limit
                            ),
                        )
                        .with_details(serde_json::json!({
                            "recordBytes": too_large.bytes,
                            "maxRecordBytes": too_large.limit,
                        })),
                    ));
                }
            }
            // Refused before it ran (the gateway shuts down, the scheduler had no room, or the
            // model it was routed to is known to be down and no backend was sent it): the
            // attempt is given back and the job runs later (after the restart) without losing
            // one.
            Err(error) if error.code().is_refused_before_running() || error.is_before_sending() => {
                given_back = Some(error.code());
                record.status = JobStatus::Queued;
                record.attempts = record.attempts.saturating_sub(1);
                if record.attempts == 0 {
                    record.started_at = None;
                }
                let delay = if error.code() == ErrorCode::ShuttingDown {
                    Duration::ZERO
                } else if error.is_before_sending() {
                    // As long as the refusal says: the backend will not be back sooner.
                    retry_delay(self.settings.poll_interval, 1, self.jitter()).max(
                        Duration::from_secs(u64::from(error.retry_after_secs().unwrap_or(0))),
                    )
                } else {
                    retry_delay(self.settings.poll_interval, 1, self.jitter())
                };
                record.next_attempt_at =
                    Some(format_unix_millis(now_ms + delay.as_millis() as i64));
            }
            Err(error) if error.code().is_retryable() && record.attempts < record.max_attempts => {
                let delay =
                    retry_delay(self.settings.poll_interval, record.attempts, self.jitter());
                record.status = JobStatus::Queued;
                record.error = Some(JobError::from_ray(&error));
                record.next_attempt_at =
                    Some(format_unix_millis(now_ms + delay.as_millis() as i64));
                bump(&self.stats.retries);
            }
            Err(error) => {
                record.status = JobStatus::Failed;
                record.error = Some(JobError::from_ray(&error));
                record.completed_at = Some(now);
            }
        }
        if self.write_patiently(&record).await.is_err() {
            // The store still says `running` with this attempt counted. The index must not
            // claim more than that: the job goes back to the dispatcher, which reads the
            // record once the store takes writes again and applies the recovery rules a
            // restart would (a retry, or a failure when no attempt is left).
            let failures = self.with_state(|s| {
                s.jobs.get_mut(&record.id).map_or(1, |entry| {
                    entry.store_failures = entry.store_failures.saturating_add(1);
                    entry.store_failures
                })
            });
            let delay = self.store_retry_delay(failures);
            tracing::warn!(
                job_id = %record.id,
                attempts = record.attempts,
                retry_in_ms = delay.as_millis() as u64,
                "the outcome of a job attempt could not be stored; the job runs again once the \
                 store takes writes"
            );
            let mut fallback = record.clone();
            fallback.status = JobStatus::Queued;
            fallback.result = None;
            fallback.completed_at = None;
            fallback.next_attempt_at = Some(format_unix_millis(now_ms + delay.as_millis() as i64));
            self.with_state(|s| {
                if let Some(entry) = s.jobs.get_mut(&fallback.id) {
                    entry.cancel = None;
                }
                s.apply(&fallback, Instant::now());
            });
            self.wake_dispatch.notify_one();
            return false;
        }
        let error_code = record.error.as_ref().map(|e| e.code.as_str());
        match record.status {
            JobStatus::Succeeded => {
                bump(&self.stats.succeeded);
                tracing::info!(job_id = %record.id, attempts = record.attempts, "job succeeded");
            }
            JobStatus::Failed => {
                bump(&self.stats.failed);
                tracing::warn!(job_id = %record.id, attempts = record.attempts, code = error_code, "job failed");
                self.emit_failed(&record);
            }
            JobStatus::Queued if given_back == Some(ErrorCode::ShuttingDown) => {
                tracing::info!(
                    job_id = %record.id,
                    attempts = record.attempts,
                    "job attempt given back: the gateway shuts down; it runs after the restart"
                );
            }
            JobStatus::Queued if given_back.is_some() => {
                tracing::debug!(
                    job_id = %record.id,
                    code = given_back.map(ErrorCode::as_str),
                    "job attempt given back: the scheduler had no room; it runs later"
                );
            }
            JobStatus::Queued => {
                tracing::warn!(
                    job_id = %record.id,
                    attempts = record.attempts,
                    code = error_code,
                    next_attempt_at = record.next_attempt_at.as_deref(),
                    "job attempt failed; retrying"
                );
            }
            JobStatus::Running | JobStatus::Cancelled => {}
        }
        self.with_state(|s| {
            if let Some(entry) = s.jobs.get_mut(&record.id) {
                entry.cancel = None;
                entry.store_failures = 0;
            }
            s.apply(&record, Instant::now());
        });
        self.after_change(&record);
        record.status.is_terminal()
    }

    /// Writes a record, trying again twice with short pauses before giving up (failures are
    /// counted in the store's health, which keeps the log bounded).
    pub(crate) async fn write_patiently(&self, record: &JobRecord) -> Result<(), ()> {
        for pause_ms in [50, 250, 0] {
            match self.write(record).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    self.store_failed("write a job record", &error);
                    if pause_ms == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                }
            }
        }
        Err(())
    }

    /// Removes finished jobs whose callback is settled once `completedTtlMs` has passed since,
    /// waking exactly when the next one expires (or when a job finishes).
    pub(crate) async fn sweep_loop(self: Arc<Self>) {
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let (expired, next) =
                self.with_state(|s| s.take_expired(Instant::now(), self.settings.completed_ttl));
            if !expired.is_empty() {
                let count = expired.len() as u64;
                self.stats.pruned.fetch_add(count, Ordering::Relaxed);
                let removed = self
                    .blocking(move |store| {
                        for id in &expired {
                            store.remove(id)?;
                        }
                        Ok(())
                    })
                    .await;
                if let Err(error) = removed {
                    // The next start prunes it again.
                    self.store_failed("remove a pruned job", &error);
                }
            }
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.wake_sweep.notified() => {}
                    }
                }
                None => self.wake_sweep.notified().await,
            }
        }
    }

    /// Stops dispatching and delivering; the loops end once their work in progress ends.
    pub(crate) fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake_dispatch.notify_one();
        self.wake_callbacks.notify_one();
        self.wake_sweep.notify_one();
    }
}

impl State {
    /// Removes every job whose retention has ended and returns their ids, with the time the
    /// next one ends.
    fn take_expired(&mut self, now: Instant, ttl: Duration) -> (Vec<String>, Option<Instant>) {
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for (id, entry) in &self.jobs {
            if let Some(settled) = entry.settled {
                let ends = settled + ttl;
                if ends <= now {
                    expired.push(id.clone());
                } else {
                    next = Some(next.map_or(ends, |n| n.min(ends)));
                }
            }
        }
        for id in &expired {
            self.remove(id);
        }
        (expired, next)
    }
}

/// A job's request as it runs: in the `batch` class unless it asked for a class (which the
/// submission already lowered to the key's ceiling).
fn batch_request(request: &ray_core::wire::InferRequest) -> ray_core::wire::InferRequest {
    let mut request = request.clone();
    request
        .priority
        .get_or_insert_with(|| ray_core::wire::PriorityClass::Batch.as_str().to_string());
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_with_jitter_and_are_capped() {
        let base = Duration::from_millis(1_000);
        assert_eq!(retry_delay(base, 1, 0.0), Duration::from_millis(500));
        assert_eq!(retry_delay(base, 1, 1.0), Duration::from_millis(1_000));
        assert_eq!(retry_delay(base, 2, 0.0), Duration::from_millis(1_000));
        assert_eq!(retry_delay(base, 3, 0.5), Duration::from_millis(3_000));
        assert_eq!(retry_delay(base, 40, 1.0), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(base, 40, 0.0), MAX_RETRY_DELAY / 2);
        for failures in 1..12 {
            let low = retry_delay(base, failures, 0.0);
            let high = retry_delay(base, failures, 0.999);
            assert!(
                low <= high && high <= low * 2,
                "{failures}: {low:?} {high:?}"
            );
        }
    }

    #[test]
    fn jitter_is_spread_over_the_unit_interval() {
        let jitter = Jitter::default();
        let values: Vec<f64> = (0..1_000).map(|_| jitter.next()).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let low = values.iter().filter(|v| **v < 0.5).count();
        assert!((350..650).contains(&low), "{low} of 1000 below 0.5");
    }
}
