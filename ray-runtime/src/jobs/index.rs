//! The queue's in-memory index: one small entry per job, and the orders the loops need
//! (ready jobs by start time, callbacks by due time, all jobs by creation for listings). It
//! follows the records: [`State::apply`] brings an entry in line with a record just written.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ray_core::time::{format_unix_millis, parse_rfc3339_millis, unix_millis_now};
use ray_core::wire::{CallbackStatus, JobRecord, JobStatus, JobSummary};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A place in a time-ordered set: when, then arrival order.
pub(super) type Slot = (Instant, u64);

/// What the index knows about a callback.
#[derive(Debug, Clone, Copy)]
pub(super) struct CallbackState {
    pub(super) status: CallbackStatus,
    pub(super) due: Option<Slot>,
    pub(super) delivering: bool,
}

/// The in-memory index entry of one job.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) status: JobStatus,
    pub(super) attempts: u32,
    pub(super) max_attempts: u32,
    pub(super) created_ms: i64,
    pub(super) updated_ms: i64,
    pub(super) error_code: Option<Box<str>>,
    pub(super) callback: Option<CallbackState>,
    /// The model the job's request names (id or alias), if any: the dispatcher holds a job
    /// back while that model's backend is known to refuse it.
    pub(super) model: Option<Box<str>>,
    /// The job's place in the ready set while it is queued.
    pub(super) ready: Option<Slot>,
    /// Finished with its callback settled: retention (`completedTtlMs`) counts from here.
    pub(super) settled: Option<Instant>,
    /// Serialises the writes of one job (worker, cancel, callback).
    pub(super) lock: Arc<tokio::sync::Mutex<()>>,
    /// Set while an attempt runs; notified to cancel it.
    pub(super) cancel: Option<Arc<Notify>>,
    /// The dispatcher took the job and its attempt is starting.
    pub(super) dispatched: bool,
    /// Writes of this job that failed in a row (the backoff of its next try).
    pub(super) store_failures: u32,
    /// A callback delivery's outcome the store did not take: written at the next turn
    /// instead of delivering again.
    pub(super) unwritten_callback: Option<Box<JobRecord>>,
}

/// The index: every job, and the orders the loops need.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) jobs: HashMap<String, Entry>,
    /// (createdAt ms, id): listings, newest first.
    pub(super) order: BTreeSet<(i64, String)>,
    /// Queued jobs by when they may start.
    pub(super) ready: BTreeMap<Slot, String>,
    /// Callbacks by when they are due.
    pub(super) due: BTreeMap<Slot, String>,
    pub(super) seq: u64,
    pub(super) pending_admissions: u32,
    pub(super) active_attempts: u32,
    pub(super) active_deliveries: u32,
    /// Ids of jobs whose records were found damaged and set aside (answered
    /// `job_record_damaged`).
    pub(super) damaged: HashSet<String>,
}

impl Entry {
    pub(super) fn new(record: &JobRecord) -> Entry {
        Entry {
            status: record.status,
            attempts: record.attempts,
            max_attempts: record.max_attempts,
            created_ms: parse_rfc3339_millis(&record.created_at).unwrap_or_default(),
            updated_ms: parse_rfc3339_millis(&record.updated_at).unwrap_or_default(),
            error_code: None,
            callback: None,
            model: record.request.model.as_deref().map(Box::from),
            ready: None,
            settled: None,
            lock: Arc::new(tokio::sync::Mutex::new(())),
            cancel: None,
            dispatched: false,
            store_failures: 0,
            unwritten_callback: None,
        }
    }

    pub(super) fn summary(&self, id: &str) -> JobSummary {
        JobSummary {
            id: id.to_string(),
            status: self.status,
            created_at: format_unix_millis(self.created_ms),
            updated_at: format_unix_millis(self.updated_ms),
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            error_code: self.error_code.as_deref().map(str::to_string),
            callback_status: self.callback.map(|c| c.status),
        }
    }
}

impl State {
    pub(super) fn slot(&mut self, at: Instant) -> Slot {
        self.seq += 1;
        (at, self.seq)
    }

    /// Brings the index entry of `record.id` in line with the record: status, counts, its
    /// place in the ready and callback orders, and when its retention started.
    pub(super) fn apply(&mut self, record: &JobRecord, now: Instant) {
        let Some(mut entry) = self.jobs.remove(&record.id) else {
            return;
        };
        let now_ms = unix_millis_now() as i64;
        let at = |rfc: Option<&String>| -> Instant {
            rfc.and_then(|t| parse_rfc3339_millis(t))
                .map_or(now, |ms| instant_at(now, now_ms, ms))
        };
        entry.status = record.status;
        entry.attempts = record.attempts;
        entry.max_attempts = record.max_attempts;
        entry.updated_ms = parse_rfc3339_millis(&record.updated_at).unwrap_or(now_ms);
        entry.error_code = record
            .error
            .as_ref()
            .map(|e| e.code.clone().into_boxed_str());
        if let Some(slot) = entry.ready.take() {
            self.ready.remove(&slot);
        }
        if record.status == JobStatus::Queued && !entry.dispatched {
            let slot = self.slot(at(record.next_attempt_at.as_ref()));
            self.ready.insert(slot, record.id.clone());
            entry.ready = Some(slot);
        }
        if let Some(due) = entry.callback.and_then(|c| c.due) {
            self.due.remove(&due);
        }
        let delivering = entry.callback.is_some_and(|c| c.delivering);
        entry.callback = record.callback.as_ref().map(|callback| CallbackState {
            status: callback.status,
            due: None,
            delivering,
        });
        let callback_pending = record
            .callback
            .as_ref()
            .is_some_and(|c| c.status == CallbackStatus::Pending);
        if record.status.is_terminal()
            && callback_pending
            && !delivering
            && let (Some(state), Some(callback)) = (entry.callback.as_mut(), &record.callback)
        {
            self.seq += 1;
            let slot = (at(callback.next_attempt_at.as_ref()), self.seq);
            self.due.insert(slot, record.id.clone());
            state.due = Some(slot);
        }
        entry.settled = (record.status.is_terminal() && !callback_pending).then(|| {
            entry
                .settled
                .unwrap_or_else(|| instant_at(now, now_ms, entry.updated_ms))
        });
        self.jobs.insert(record.id.clone(), entry);
    }

    /// Drops a job from the index.
    pub(super) fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.jobs.remove(id)?;
        self.order.remove(&(entry.created_ms, id.to_string()));
        if let Some(slot) = entry.ready {
            self.ready.remove(&slot);
        }
        if let Some(due) = entry.callback.and_then(|c| c.due) {
            self.due.remove(&due);
        }
        Some(entry)
    }
}

/// The tokio instant of a Unix time in ms, given the same moment on both clocks. Times more
/// than a day ahead (a record written by a badly set clock) count as a day ahead.
pub(super) fn instant_at(now: Instant, now_ms: i64, at_ms: i64) -> Instant {
    const MAX_AHEAD_MS: i64 = 86_400_000;
    let delta = at_ms.saturating_sub(now_ms);
    if delta >= 0 {
        now + Duration::from_millis(delta.min(MAX_AHEAD_MS) as u64)
    } else {
        now.checked_sub(Duration::from_millis(delta.unsigned_abs()))
            .unwrap_or(now)
    }
}
