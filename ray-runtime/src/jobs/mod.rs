//! The durable async job queue: `POST /v1/jobs` and friends, run through the same runtime path
//! as `/v1/infer`, with callbacks, retries, pruning and crash recovery.
//!
//! A job is written durably before it is acknowledged. The queue keeps only a small index in
//! memory (status, attempts, times, callback state: a few hundred bytes per job); requests and
//! results live in the [`JobStore`] and are read when needed, so a full queue of large jobs
//! costs disk, not memory. Every change of a job's state is written before it takes effect, so
//! a crash at any moment loses nothing that was acknowledged: recovery at start queues
//! interrupted attempts again (counted against `maxAttempts`) and resumes pending callbacks.

mod address;
mod api;
mod callback;
mod claim;
mod events;
mod faults;
mod file_claims;
mod file_store;
mod index;
mod lease;
mod record;
mod report;
mod store;
mod worker;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use ray_core::config::AsyncQueueConfig;
use ray_core::time::{format_unix_millis, unix_millis_now};
use ray_core::wire::{
    CallbackStatus, InferRequest, JobAccepted, JobList, JobListQuery, JobRecord, JobStatus,
    JobSubmission, JobSummary, is_valid_job_id,
};
use ray_core::{ErrorCode, RayError};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::ids::IdSource;
use index::{Entry, State};

pub use address::is_public_address;
pub use callback::{IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
pub use claim::{ClaimError, ClaimState, Claims, Lease};
pub use file_store::FileJobStore;
pub use record::{JOB_RECOVERED, JOB_RECOVERY_ATTEMPTS_EXHAUSTED};
pub use store::{JobStore, ScanReport, SetAside, StoreError, Visit};
pub use worker::{MAX_RETRY_DELAY, retry_delay};

pub(crate) use address::SystemLookup;
pub(crate) use callback::CallbackClient;

/// Deliveries in progress at most.
pub const CALLBACK_CONCURRENCY: u32 = 4;
/// Share of `maxJobs` from which the queue reports pressure.
pub const JOBS_PRESSURE_THRESHOLD: f64 = 0.9;
/// How long shutdown waits for running jobs and deliveries before cutting them off (they are
/// queued again at the next start).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// The settings the queue runs with, from `asyncQueue`.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) max_jobs: u32,
    pub(crate) min_free_storage_mib: u64,
    pub(crate) completed_ttl: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) dispatch_concurrency: u32,
    pub(crate) max_attempts: u32,
    pub(crate) callback_timeout: Duration,
    pub(crate) max_callback_attempts: u32,
    pub(crate) max_record_bytes: u64,
}

impl Settings {
    pub(crate) fn from_config(config: &AsyncQueueConfig) -> Settings {
        Settings {
            max_jobs: config.max_jobs,
            min_free_storage_mib: config.min_free_storage_mib,
            completed_ttl: Duration::from_millis(config.completed_ttl_ms),
            poll_interval: Duration::from_millis(config.poll_interval_ms.max(1)),
            dispatch_concurrency: config.dispatch_concurrency.max(1),
            max_attempts: config.max_attempts.max(1),
            callback_timeout: Duration::from_millis(config.callback_timeout_ms.max(1)),
            max_callback_attempts: config.max_callback_attempts.max(1),
            max_record_bytes: config.max_record_bytes,
        }
    }
}

/// Counters since start.
#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) submitted: AtomicU64,
    pub(crate) rejected_full: AtomicU64,
    pub(crate) rejected_storage: AtomicU64,
    pub(crate) rejected_too_large: AtomicU64,
    pub(crate) attempts: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) deliveries: AtomicU64,
    pub(crate) deliveries_failed: AtomicU64,
    pub(crate) callbacks_delivered: AtomicU64,
    pub(crate) callbacks_failed: AtomicU64,
    pub(crate) pruned: AtomicU64,
    pub(crate) quarantined: AtomicU64,
    pub(crate) recovered: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) submit_duration: crate::metrics::Histogram,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            submitted: AtomicU64::new(0),
            rejected_full: AtomicU64::new(0),
            rejected_storage: AtomicU64::new(0),
            rejected_too_large: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            deliveries_failed: AtomicU64::new(0),
            callbacks_delivered: AtomicU64::new(0),
            callbacks_failed: AtomicU64::new(0),
            pruned: AtomicU64::new(0),
            quarantined: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            submit_duration: crate::metrics::Histogram::new(SUBMIT_BUCKETS),
        }
    }
}

/// Buckets of the submission latency, in seconds (it is one or two `fsync`s).
const SUBMIT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Receives an event of the queue: its type and fields.
pub(crate) type EventSink =
    Arc<dyn Fn(&'static str, serde_json::Map<String, serde_json::Value>) + Send + Sync>;

/// The durable async job queue of a [`Runtime`](crate::Runtime).
///
/// Reach it with [`Runtime::jobs`](crate::Runtime::jobs); submit, look up, list and cancel
/// through the runtime ([`Runtime::submit_job`](crate::Runtime::submit_job) and friends). Its
/// background work (dispatch, callbacks, pruning) runs once [`Runtime::start`](crate::Runtime::start)
/// is called.
pub struct JobQueue {
    pub(crate) settings: Settings,
    store: Arc<dyn JobStore>,
    state: Mutex<State>,
    pub(crate) wake_dispatch: Notify,
    pub(crate) wake_callbacks: Notify,
    pub(crate) wake_sweep: Notify,
    pub(crate) wake_probe: Notify,
    pub(crate) store_health: faults::StoreHealth,
    pub(crate) stopping: AtomicBool,
    pub(crate) stats: Stats,
    pub(crate) callbacks: CallbackClient,
    /// Where the queue's events (`job_failed`, `callback_gave_up`) go: the event hooks, set
    /// once by the builder (the queue names nothing above it) through [`JobQueue::set_hooks`].
    pub(crate) hooks: std::sync::OnceLock<EventSink>,
    /// `job_failed` events of the recovery at open, sent once the hooks are set.
    recovered_failures: Mutex<Vec<serde_json::Map<String, serde_json::Value>>>,
    ids: IdSource,
    jitter: worker::Jitter,
}

impl fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("JobQueue")
            .field("store", &self.store)
            .field("jobs", &state.jobs.len())
            .finish()
    }
}

/// What a submission holds between admission and its durable write; dropping it gives the
/// place back, so an early return cannot leak one.
struct Admission<'a> {
    queue: &'a JobQueue,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        let mut state = self.queue.state.lock();
        state.pending_admissions = state.pending_admissions.saturating_sub(1);
    }
}

impl JobQueue {
    /// Opens the queue over `store`: scans it (setting aside what cannot be used, with a
    /// warning), applies the recovery rules and writes back the records they changed.
    pub(crate) fn open(
        config: &AsyncQueueConfig,
        store: Arc<dyn JobStore>,
        callbacks: CallbackClient,
    ) -> Result<JobQueue, StoreError> {
        let settings = Settings::from_config(config);
        let queue = JobQueue {
            settings,
            store,
            state: Mutex::new(State::default()),
            wake_dispatch: Notify::new(),
            wake_callbacks: Notify::new(),
            wake_sweep: Notify::new(),
            wake_probe: Notify::new(),
            store_health: faults::StoreHealth::default(),
            stopping: AtomicBool::new(false),
            stats: Stats::new(),
            callbacks,
            hooks: std::sync::OnceLock::new(),
            recovered_failures: Mutex::new(Vec::new()),
            ids: IdSource::default(),
            jitter: worker::Jitter::default(),
        };
        queue.recover()?;
        Ok(queue)
    }

    fn recover(&self) -> Result<(), StoreError> {
        let now_ms = unix_millis_now() as i64;
        let now = format_unix_millis(now_ms);
        let mut changed = Vec::new();
        let mut loaded = Vec::new();
        let max_callback_attempts = self.settings.max_callback_attempts;
        let report = self.store.scan(&mut |id, bytes| {
            let mut record = record::parse(id, bytes)?;
            if record::recover(&mut record, max_callback_attempts, &now) {
                changed.push(record.clone());
            }
            loaded.push(record);
            Ok(())
        })?;
        for entry in &report.set_aside {
            bump(&self.stats.quarantined);
            match &entry.moved_to {
                Some(moved_to) => tracing::warn!(
                    file = %entry.name,
                    reason = %entry.reason,
                    moved_to = %moved_to.display(),
                    "job store entry damaged; moved to quarantine"
                ),
                None => tracing::error!(
                    file = %entry.name,
                    reason = %entry.reason,
                    "job store entry damaged and could not be moved to quarantine; it is left \
                     in place and skipped (move or remove it by hand)"
                ),
            }
        }
        {
            let mut state = self.state.lock();
            let names = self
                .store
                .quarantined()
                .into_iter()
                .chain(report.set_aside.iter().map(|e| e.name.clone()));
            for name in names {
                if let Some(id) = damaged_id(&name)
                    && state.damaged.len() < MAX_DAMAGED_IDS
                {
                    state.damaged.insert(id.to_string());
                }
            }
        }
        for name in &report.ignored {
            tracing::warn!(file = %name, "job store entry ignored: not a job record");
        }
        for record in &changed {
            // A failed write here only means the same recovery happens again at the next
            // start; the in-memory state below is what this run uses.
            // The loops apply the same rules to what they read, so a job whose recovered record
            // could not be written is recovered again when it is next read.
            match record::encode(record, self.settings.max_record_bytes) {
                Ok(bytes) => match self.store.write(&record.id, &bytes) {
                    Ok(()) => self.store_succeeded(),
                    Err(error) => self.store_failed("write a recovered job", &error),
                },
                Err(too_large) => {
                    tracing::error!(job_id = %record.id, bytes = too_large.bytes, "a recovered job is larger than maxRecordBytes");
                }
            }
        }
        // A job the recovery failed for good (its attempts are spent) ended in this run: it is
        // counted and its `job_failed` event goes out once the hooks are set.
        for record in changed.iter().filter(|r| r.status == JobStatus::Failed) {
            bump(&self.stats.failed);
            tracing::warn!(job_id = %record.id, attempts = record.attempts, code = record.error.as_ref().map(|e| e.code.as_str()), "job failed");
            self.recovered_failures
                .lock()
                .push(events::failed_event(record));
        }
        // Ready in the order they became ready: the store is scanned in directory order, so
        // the jobs are indexed by creation (RFC 3339 in UTC sorts as it reads).
        loaded.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        let now = Instant::now();
        let mut state = self.state.lock();
        for record in &loaded {
            bump(&self.stats.recovered);
            let entry = Entry::new(record);
            state.order.insert((entry.created_ms, record.id.clone()));
            state.jobs.insert(record.id.clone(), entry);
            state.apply(record, now);
        }
        let total = state.jobs.len();
        let interrupted = changed
            .iter()
            .filter(|r| {
                r.error
                    .as_ref()
                    .is_some_and(|e| e.code.starts_with("job_recover"))
            })
            .count();
        drop(state);
        if total > 0 || !report.set_aside.is_empty() {
            tracing::info!(
                jobs = total,
                interrupted,
                set_aside = report.set_aside.len(),
                "job store recovered"
            );
        }
        if total > self.settings.max_jobs as usize {
            tracing::warn!(
                jobs = total,
                max_jobs = self.settings.max_jobs,
                "the job store holds more jobs than asyncQueue.maxJobs; all are kept, and new \
                 jobs are refused until finished ones are pruned"
            );
        }
        Ok(())
    }

    /// Submits a job whose request `validate` accepted: admission (`maxJobs`), free space,
    /// the callback URL, the record size cap, then a durable write. Answers only once the job
    /// survives a crash.
    pub(crate) async fn submit(
        &self,
        submission: JobSubmission,
        validate: impl FnOnce(&InferRequest) -> Result<(), RayError>,
    ) -> Result<JobAccepted, RayError> {
        let started = Instant::now();
        if submission.request.stream == Some(true) {
            return Err(RayError::new(
                ErrorCode::InvalidRequest,
                "stream: a job is not streamed; read its result with GET /v1/jobs/{id} or \
                 have it sent to callbackUrl",
            ));
        }
        validate(&submission.request)?;
        if let Some(refusal) = self.store_health.refusal() {
            bump(&self.stats.rejected_storage);
            return Err(refusal);
        }
        let admission = self.admit()?;
        self.check_storage()?;
        let callback_url = match &submission.callback_url {
            Some(url) => Some(self.callbacks.policy.check(url).await?.to_string()),
            None => None,
        };
        let now_ms = unix_millis_now() as i64;
        let now = format_unix_millis(now_ms);
        let id = self.ids.next("job_");
        let record = JobRecord::queued(
            id.clone(),
            submission.request,
            self.settings.max_attempts,
            callback_url,
            now.clone(),
        );
        let bytes = record::encode(&record, self.settings.max_record_bytes).map_err(|t| {
            bump(&self.stats.rejected_too_large);
            RayError::new(
                ErrorCode::AsyncJobRecordTooLarge,
                format!(
                    "The job record would be {} bytes, more than asyncQueue.maxRecordBytes ({})",
                    t.bytes, t.limit
                ),
            )
            .with_details(serde_json::json!({
                "recordBytes": t.bytes,
                "maxRecordBytes": t.limit,
            }))
        })?;
        self.write_bytes(id.clone(), bytes)
            .await
            .map_err(|e| self.store_failure("store a new job", &e))?;
        {
            let mut state = self.state.lock();
            let entry = Entry::new(&record);
            state.order.insert((entry.created_ms, id.clone()));
            state.jobs.insert(id.clone(), entry);
            state.apply(&record, Instant::now());
        }
        drop(admission);
        bump(&self.stats.submitted);
        self.stats.submit_duration.observe(started.elapsed());
        self.wake_dispatch.notify_one();
        Ok(JobAccepted {
            location: format!("/v1/jobs/{id}"),
            id,
            status: JobStatus::Queued,
            created_at: now,
        })
    }

    fn admit(&self) -> Result<Admission<'_>, RayError> {
        let mut state = self.state.lock();
        let retained = state.jobs.len() as u64 + u64::from(state.pending_admissions);
        if retained >= u64::from(self.settings.max_jobs) {
            drop(state);
            bump(&self.stats.rejected_full);
            return Err(RayError::new(
                ErrorCode::AsyncQueueFull,
                format!(
                    "The job queue is full: {retained} jobs are retained and asyncQueue.maxJobs is {}",
                    self.settings.max_jobs
                ),
            )
            .with_details(serde_json::json!({
                "retainedJobs": retained,
                "maxJobs": self.settings.max_jobs,
            })));
        }
        state.pending_admissions += 1;
        Ok(Admission { queue: self })
    }

    /// Free space minus what pending admissions may still write, against
    /// `minFreeStorageMiB`. A store that cannot tell its free space is not checked.
    fn check_storage(&self) -> Result<(), RayError> {
        let Some(available) = self.store.available_bytes() else {
            return Ok(());
        };
        let pending = u64::from(self.state.lock().pending_admissions);
        let reserved = pending.saturating_mul(self.settings.max_record_bytes);
        let effective = available.saturating_sub(reserved);
        let minimum = self
            .settings
            .min_free_storage_mib
            .saturating_mul(1024 * 1024);
        if effective < minimum {
            bump(&self.stats.rejected_storage);
            return Err(RayError::new(
                ErrorCode::AsyncQueueStorageLow,
                format!(
                    "Free space for jobs is {:.2} MiB ({:.2} MiB free, less {:.2} MiB reserved for \
                     submissions being written), below asyncQueue.minFreeStorageMiB ({} MiB)",
                    mib(effective),
                    mib(available),
                    mib(reserved),
                    self.settings.min_free_storage_mib
                ),
            )
            .with_details(serde_json::json!({
                "availableStorageMiB": mib(available),
                "reservedAdmissionMiB": mib(reserved),
                "minFreeStorageMiB": self.settings.min_free_storage_mib,
            })));
        }
        Ok(())
    }

    /// The record of job `id`.
    pub(crate) async fn get(&self, id: &str) -> Result<JobRecord, RayError> {
        check_id(id)?;
        let status = {
            let state = self.state.lock();
            match state.jobs.get(id) {
                Some(entry) => entry.status,
                None if state.damaged.contains(id) => return Err(damaged(id)),
                None => return Err(not_found(id)),
            }
        };
        match self.read(id).await {
            Ok(Some(mut record)) => {
                if record.status == JobStatus::Running && status != JobStatus::Running {
                    // The write that ended the attempt failed: the store still says running
                    // but no attempt is in flight. Show what the queue will make of it.
                    record::recover(
                        &mut record,
                        self.settings.max_callback_attempts,
                        &ray_core::time::now_rfc3339(),
                    );
                }
                Ok(record)
            }
            // Pruned between the look-up and the read.
            Ok(None) => Err(not_found(id)),
            Err(error) => Err(self.store_failure("read a job", &error)),
        }
    }

    /// A page of job summaries, newest first.
    pub(crate) fn list(&self, query: &JobListQuery) -> Result<JobList, RayError> {
        let limit = query
            .limit
            .unwrap_or(ray_core::wire::jobs::limits::DEFAULT_LIST_LIMIT)
            .clamp(1, ray_core::wire::jobs::limits::MAX_LIST_LIMIT) as usize;
        let after = query.cursor.as_deref().map(parse_cursor).transpose()?;
        let state = self.state.lock();
        let range = match &after {
            Some(key) => state.order.range(..key.clone()),
            None => state.order.range(..),
        };
        let mut jobs: Vec<JobSummary> = Vec::with_capacity(limit.min(state.jobs.len()));
        let mut last = None;
        let mut next_cursor = None;
        for (created_ms, id) in range.rev() {
            let Some(entry) = state.jobs.get(id) else {
                continue;
            };
            if !query.statuses.is_empty() && !query.statuses.contains(&entry.status) {
                continue;
            }
            if jobs.len() == limit {
                // One more matches: there is a next page, starting after the last one shown.
                next_cursor = last.map(|(created_ms, id)| cursor_for(created_ms, id));
                break;
            }
            jobs.push(entry.summary(id));
            last = Some((*created_ms, id.as_str()));
        }
        Ok(JobList { jobs, next_cursor })
    }

    /// Cancels a queued or running job (a running attempt is dropped, which stops the backend
    /// call). Cancelling a cancelled job answers its record again; a finished one is
    /// `job_not_cancellable`.
    pub(crate) async fn cancel(&self, id: &str) -> Result<JobRecord, RayError> {
        check_id(id)?;
        let lock = {
            let state = self.state.lock();
            match state.jobs.get(id) {
                Some(entry) => entry.lock.clone(),
                None if state.damaged.contains(id) => return Err(damaged(id)),
                None => return Err(not_found(id)),
            }
        };
        let _guard = lock.lock().await;
        let status = match self.state.lock().jobs.get(id) {
            Some(entry) => entry.status,
            None => return Err(not_found(id)),
        };
        match status {
            JobStatus::Cancelled => return self.get(id).await,
            JobStatus::Succeeded | JobStatus::Failed => {
                return Err(RayError::new(
                    ErrorCode::JobNotCancellable,
                    format!(
                        "Job {id} has already {} and cannot be cancelled",
                        status.as_str()
                    ),
                )
                .with_details(serde_json::json!({ "status": status })));
            }
            JobStatus::Queued | JobStatus::Running => {}
        }
        let mut record = match self.read(id).await {
            Ok(Some(record)) => record,
            Ok(None) => return Err(not_found(id)),
            Err(error) => return Err(self.store_failure("read the job", &error)),
        };
        let now = ray_core::time::now_rfc3339();
        record.status = JobStatus::Cancelled;
        record.next_attempt_at = None;
        record.completed_at = Some(now.clone());
        record.updated_at = now;
        self.write(&record)
            .await
            .map_err(|e| self.store_failure("store the cancellation", &e))?;
        let cancel = {
            let mut state = self.state.lock();
            let cancel = state.jobs.get_mut(id).and_then(|e| e.cancel.take());
            state.apply(&record, Instant::now());
            cancel
        };
        // Only now that the cancellation is durable is a running attempt stopped.
        if let Some(cancel) = cancel {
            cancel.notify_one();
        }
        bump(&self.stats.cancelled);
        self.after_change(&record);
        Ok(record)
    }

    /// Wakes the loops a change may concern.
    pub(crate) fn after_change(&self, record: &JobRecord) {
        if record.status.is_terminal() {
            if record
                .callback
                .as_ref()
                .is_some_and(|c| c.status == CallbackStatus::Pending)
            {
                self.wake_callbacks.notify_one();
            }
            self.wake_sweep.notify_one();
        } else {
            self.wake_dispatch.notify_one();
        }
    }

    /// Jobs retained now.
    pub fn len(&self) -> usize {
        self.state.lock().jobs.len()
    }

    /// Whether no job is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // === store access ===

    pub(crate) async fn read(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let key = id.to_string();
        let bytes = self.blocking(move |store| store.read(&key)).await?;
        match bytes {
            None => Ok(None),
            Some(bytes) => record::parse(id, &bytes)
                .map(Some)
                .map_err(StoreError::Damaged),
        }
    }

    /// Encodes and durably writes `record`. A record over the size cap is an error here; the
    /// callers that can grow a record check the cap first.
    pub(crate) async fn write(&self, record: &JobRecord) -> Result<(), StoreError> {
        let bytes = record::encode(record, self.settings.max_record_bytes).map_err(|t| {
            StoreError::Other(format!(
                "the record is {} bytes, more than asyncQueue.maxRecordBytes ({})",
                t.bytes, t.limit
            ))
        })?;
        self.write_bytes(record.id.clone(), bytes).await
    }

    /// Writes and keeps the store's health: a success ends a fault, a failure is counted
    /// (and logged, within bounds) by the caller through [`JobQueue::store_failed`].
    async fn write_bytes(&self, id: String, bytes: Vec<u8>) -> Result<(), StoreError> {
        let written = self.blocking(move |store| store.write(&id, &bytes)).await;
        if written.is_ok() {
            self.store_succeeded();
        }
        written
    }

    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&dyn JobStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(store.as_ref()))
            .await
            .map_err(|e| StoreError::Other(format!("the store task failed: {e}")))?
    }

    /// The answer to a request whose store operation failed: `job_record_damaged` for a
    /// record that cannot be parsed, else `503` (`async_queue_unavailable`, or
    /// `async_queue_storage_low` on a full disk) with `Retry-After`, never a 500: every store
    /// failure is something an operator can fix, and the queue recovers by itself.
    fn store_failure(&self, action: &str, error: &StoreError) -> RayError {
        if let StoreError::Damaged(_) | StoreError::TooLarge { .. } = error {
            let reason = match error {
                StoreError::Damaged(reason) => reason.clone(),
                other => other.to_string(),
            };
            tracing::error!(error = %reason, "cannot {action}: its record is damaged");
            return RayError::new(
                ErrorCode::JobRecordDamaged,
                format!("The job's stored record is damaged: {reason}"),
            );
        }
        self.store_failed(action, error);
        match self.store_health.fault() {
            Some(fault) => faults::refusal(&fault),
            None => RayError::new(
                ErrorCode::AsyncQueueUnavailable,
                format!("The job store failed: cannot {action}: {error}"),
            )
            .with_details(serde_json::json!({ "reason": error.to_string() })),
        }
    }

    // === index access for the loops ===

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock())
    }

    pub(crate) fn jitter(&self) -> f64 {
        self.jitter.next()
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn check_id(id: &str) -> Result<(), RayError> {
    if is_valid_job_id(id) {
        Ok(())
    } else {
        Err(RayError::invalid_request(
            "job id: must be 1 to 128 characters of A-Z, a-z, 0-9, _ and -",
        ))
    }
}

/// Job ids remembered as damaged at most (each a few dozen bytes).
const MAX_DAMAGED_IDS: usize = 10_000;

/// The job id in the name of a set-aside record (`<id>.json`, maybe followed by `.<suffix>`).
fn damaged_id(name: &str) -> Option<&str> {
    let (id, _) = name.split_once(".json")?;
    is_valid_job_id(id).then_some(id)
}

fn damaged(id: &str) -> RayError {
    RayError::new(
        ErrorCode::JobRecordDamaged,
        format!(
            "Job {id}'s stored record is damaged (it cannot be read as a job record) and was set \
             aside in quarantine/; its request and result cannot be served"
        ),
    )
    .with_details(serde_json::json!({ "id": id }))
}

fn not_found(id: &str) -> RayError {
    RayError::new(
        ErrorCode::JobNotFound,
        format!("No job {id} (it may have been pruned)"),
    )
}

fn cursor_for(created_ms: i64, id: &str) -> String {
    format!("{created_ms:x}.{id}")
}

fn parse_cursor(cursor: &str) -> Result<(i64, String), RayError> {
    let bad = || RayError::invalid_request("cursor: must be the nextCursor of a previous page");
    let (created, id) = cursor.split_once('.').ok_or_else(bad)?;
    let created = i64::from_str_radix(created, 16).map_err(|_| bad())?;
    if !is_valid_job_id(id) {
        return Err(bad());
    }
    Ok((created, id.to_string()))
}
