//! The async shell around [`SchedulerState`]: a mutex, one channel per waiting job, owned
//! permits that release on drop, deadlines, and one timer task for the batch window.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use ray_core::{ErrorCode, RayError};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::settings::SchedulerSettings;
use crate::state::{Assignment, JobSpec, Reject, SchedulerState, StateSnapshot};

/// Why a job was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdmitError {
    /// Refused at submission; see [`Reject`].
    #[error("{}", describe_reject(.0))]
    Rejected(Reject),
    /// The deadline passed while the job waited.
    #[error("request waited {waited:?} in the queue and reached its deadline")]
    Timeout {
        /// How long it waited.
        waited: Duration,
    },
    /// The scheduler is closed (the gateway is shutting down).
    #[error("the scheduler is closed")]
    Closed,
}

fn describe_reject(reject: &Reject) -> String {
    match reject {
        Reject::TokenBudget {
            cost,
            budget,
            which,
        } => format!(
            "request needs {cost} tokens (prompt plus maxTokens) but {} is {budget}",
            which.field()
        ),
        Reject::QueueDepth { depth } => {
            format!("the request queue is full ({depth} waiting)")
        }
        Reject::QueuedTokens {
            queued_tokens,
            cost,
        } => format!(
            "the request queue is full: waiting requests reserve {queued_tokens} tokens and this \
             one needs {cost} more"
        ),
        Reject::WaitExceedsDeadline {
            class,
            estimated_wait,
            allowed,
            ..
        } => format!(
            "the request would wait about {} ms for a permit (estimated from the work ahead of \
             it) but may wait at most {} ms (to finish by its deadline, or the {class} class's maxWaitMs)",
            estimated_wait.as_millis(),
            allowed.as_millis()
        ),
    }
}

impl AdmitError {
    /// The wire error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            AdmitError::Rejected(Reject::TokenBudget { .. }) => {
                ErrorCode::RequestTokenBudgetExceeded
            }
            AdmitError::Rejected(Reject::QueueDepth { .. } | Reject::QueuedTokens { .. }) => {
                ErrorCode::QueueFull
            }
            AdmitError::Rejected(Reject::WaitExceedsDeadline { .. }) => {
                ErrorCode::QueueWaitExceedsDeadline
            }
            AdmitError::Timeout { .. } => ErrorCode::RequestTimeout,
            AdmitError::Closed => ErrorCode::ShuttingDown,
        }
    }
}

impl From<AdmitError> for RayError {
    fn from(error: AdmitError) -> RayError {
        let details = match &error {
            AdmitError::Rejected(Reject::TokenBudget {
                cost,
                budget,
                which,
            }) => Some(serde_json::json!({
                "costTokens": cost, "budget": budget, "field": which.field(),
            })),
            AdmitError::Rejected(Reject::QueueDepth { depth }) => {
                Some(serde_json::json!({ "queueDepth": depth }))
            }
            AdmitError::Rejected(Reject::QueuedTokens {
                queued_tokens,
                cost,
            }) => Some(serde_json::json!({ "queuedTokens": queued_tokens, "costTokens": cost })),
            AdmitError::Rejected(Reject::WaitExceedsDeadline {
                class,
                estimated_wait,
                allowed,
                retry_after,
            }) => Some(serde_json::json!({
                "class": class.as_str(),
                "estimatedWaitMs": estimated_wait.as_millis() as u64,
                "allowedWaitMs": allowed.as_millis() as u64,
                "retryAfterMs": retry_after.as_millis() as u64,
            })),
            AdmitError::Timeout { waited } => Some(serde_json::json!({
                "phase": "queue", "waitedMs": waited.as_millis() as u64,
            })),
            AdmitError::Closed => None,
        };
        let message = match &error {
            AdmitError::Timeout { .. } => "The request timed out waiting in the queue".to_string(),
            other => {
                let mut text = other.to_string();
                if let Some(first) = text.get_mut(0..1) {
                    first.make_ascii_uppercase();
                }
                text
            }
        };
        let mut ray_error = RayError::new(error.code(), message);
        if let AdmitError::Rejected(Reject::WaitExceedsDeadline { retry_after, .. }) = &error {
            let seconds = retry_after.as_millis().div_ceil(1000).min(3_600) as u32;
            ray_error = ray_error.with_retry_after(seconds);
        }
        match details {
            Some(details) => ray_error.with_details(details),
            None => ray_error,
        }
    }
}

struct Shared {
    /// The preparation phase's gate.
    prepare: crate::prepare::PrepGate,
    state: Mutex<Inner>,
    next_id: AtomicU64,
    /// Wakes the batch-window timer task: a held permit may have a new deadline.
    /// `notify_one` stores a wake-up when the task is not waiting, so none is lost, and it
    /// works from any thread, inside a runtime or not.
    timer_wake: Arc<Notify>,
    /// The batch-window timer task, started on first need. It lives as long as the scheduler
    /// (it holds only a weak reference to this struct and is aborted when the struct drops).
    timer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(handle) = self.timer.get_mut().take() {
            handle.abort();
        }
    }
}

impl Shared {
    /// Tells the timer task that a permit is held, starting the task if it does not run yet.
    fn arm_timer(self: &Arc<Shared>) {
        if self.state.lock().state.next_wakeup().is_none() {
            return;
        }
        self.ensure_timer_task();
        self.timer_wake.notify_one();
    }

    /// Starts the timer task unless it runs (it only stops when aborted, or when the runtime
    /// it ran on shut down). Outside a runtime nothing can be started; a task that runs
    /// already is woken through the `Notify` all the same.
    fn ensure_timer_task(self: &Arc<Shared>) {
        let mut timer = self.timer.lock();
        if timer.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            *timer = Some(handle.spawn(timer_task(Arc::downgrade(self), self.timer_wake.clone())));
        }
    }
}

struct Inner {
    state: SchedulerState<oneshot::Sender<Permit>>,
    closed: bool,
    /// Waiting jobs refused after they were admitted (to make room for a fairer one, or by the
    /// first service time measured), until their callers read why.
    evicted: HashMap<u64, Reject>,
}

impl Inner {
    /// Records why the core refused waiting jobs and returns their channels: dropped outside
    /// the lock, each wakes its caller, who reads the refusal here.
    fn take_evicted(&mut self) -> Vec<oneshot::Sender<Permit>> {
        let mut dropped = Vec::new();
        for evicted in self.state.take_evicted() {
            self.evicted.insert(evicted.id, evicted.reject);
            dropped.extend(evicted.payload);
        }
        dropped
    }
}

/// Admission control for one backend: a bounded, two-lane queue with token budgets and
/// concurrency permits.
///
/// Cloning is cheap and shares the queue. [`Scheduler::admit`] waits for a [`Permit`]; dropping
/// the permit frees the capacity and starts the next job. Dropping an `admit` future while it
/// waits returns its queue place and tokens at once.
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl Scheduler {
    /// A scheduler with the given settings.
    pub fn new(settings: SchedulerSettings) -> Scheduler {
        let prepare = crate::prepare::PrepGate::new(settings.concurrency, settings.max_queue);
        let shared = Arc::new(Shared {
            prepare,
            state: Mutex::new(Inner {
                evicted: HashMap::new(),
                state: SchedulerState::new(settings),
                closed: false,
            }),
            next_id: AtomicU64::new(1),
            timer_wake: Arc::new(Notify::new()),
            timer: Mutex::new(None),
        });
        Scheduler { shared }
    }

    /// The preparation phase of admission: runs `work` (prompt preparation that needs the
    /// backend) when one of `concurrency` preparation places is free, refuses it (`queue_full`)
    /// when `max_queue` already wait, and gives up (`request_timeout`) at `deadline`.
    pub async fn prepare<T>(
        &self,
        deadline: Instant,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, ray_core::RayError> {
        self.shared.prepare.run(deadline, work).await
    }

    /// How busy the preparation phase is.
    pub fn preparation(&self) -> ray_core::wire::PreparationHealth {
        self.shared.prepare.health()
    }

    /// The settings.
    pub fn settings(&self) -> SchedulerSettings {
        self.shared.state.lock().state.settings().clone()
    }

    /// Checks whether a job of `cost` tokens could ever run, without queueing it.
    pub fn check_budget(&self, cost: u32) -> Result<(), AdmitError> {
        self.shared
            .state
            .lock()
            .state
            .check_budget(cost)
            .map_err(AdmitError::Rejected)
    }

    /// Waits for a permit to run `spec`, until `deadline`.
    ///
    /// Fails at once when the job cannot be admitted (token budget, full queue), or with
    /// [`AdmitError::Timeout`] when the deadline passes first. Dropping the returned future
    /// while it waits removes the job from the queue.
    pub async fn admit(&self, spec: JobSpec, deadline: Instant) -> Result<Permit, AdmitError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let enqueued = Instant::now();
        let mut dropped = Vec::new();
        let (mine, others, receiver, windowed) = {
            let mut inner = self.shared.state.lock();
            if inner.closed {
                return Err(AdmitError::Closed);
            }
            let now = enqueued.into_std();
            inner
                .state
                .submit_until(id, spec, now, Some(deadline.into_std()), None)
                .map_err(AdmitError::Rejected)?;
            // Jobs refused to make room for this one: their callers learn why when their
            // channel closes (the senders are dropped below, outside the lock).
            dropped.extend(inner.take_evicted());
            let (mine, others) = drain(&mut inner.state, now, Some(id));
            let receiver = if mine.is_none() {
                let (sender, receiver) = oneshot::channel();
                inner.state.set_payload(id, sender);
                Some(receiver)
            } else {
                None
            };
            let windowed = !inner.state.settings().batch_window.is_zero();
            (mine, others, receiver, windowed)
        };
        drop(dropped);
        self.deliver(others);
        if let Some(assignment) = mine {
            return Ok(Permit::new(&self.shared, &assignment));
        }
        let Some(receiver) = receiver else {
            return Err(AdmitError::Closed);
        };
        // A waiting job can only be held up by a batch window; make sure the timer task
        // runs now, while on the runtime, so the permit that will be held can wake it from
        // wherever it is released.
        if windowed {
            self.shared.ensure_timer_task();
        }
        self.shared.arm_timer();
        let mut guard = WaitGuard {
            scheduler: self,
            id,
            armed: true,
        };
        let outcome = tokio::time::timeout_at(deadline, receiver).await;
        guard.armed = false;
        match outcome {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(self
                .shared
                .state
                .lock()
                .evicted
                .remove(&id)
                .map_or(AdmitError::Closed, AdmitError::Rejected)),
            Err(_elapsed) => {
                self.cancel(id);
                Err(AdmitError::Timeout {
                    waited: enqueued.elapsed(),
                })
            }
        }
    }

    /// The estimated wait of a new request of each class arriving now (indexed by
    /// [`ray_core::wire::PriorityClass::index`]), or `None` before any request finished.
    pub fn estimated_waits(&self) -> Option<[Duration; 3]> {
        self.shared
            .state
            .lock()
            .state
            .estimated_waits(Instant::now().into_std())
    }

    /// A point-in-time view of the queue.
    pub fn snapshot(&self) -> StateSnapshot {
        self.shared
            .state
            .lock()
            .state
            .snapshot(Instant::now().into_std())
    }

    /// Waiting jobs in both lanes: [`StateSnapshot::depth`] without the rest of the snapshot
    /// (which walks the queue), for a caller that asks on every request.
    pub fn depth(&self) -> u32 {
        self.shared.state.lock().state.depth()
    }

    /// Refuses new jobs from now on; waiting and running jobs are not disturbed.
    pub fn close(&self) {
        self.shared.state.lock().closed = true;
    }

    /// Refuses new jobs from now on and refuses the waiting ones at once
    /// ([`AdmitError::Closed`]); running jobs keep their permits. For a gateway that shuts
    /// down: work that has not started is answered now, not cut when the drain ends.
    pub fn close_and_refuse_waiting(&self) {
        let refused = {
            let mut inner = self.shared.state.lock();
            inner.closed = true;
            inner.state.cancel_all()
        };
        // Dropping their senders wakes each waiting caller with `Closed`.
        drop(refused);
    }

    /// Removes a waiting job; if it had started already, its permit (in the channel) is
    /// dropped with the receiver and released.
    fn cancel(&self, id: u64) {
        let others = {
            let mut inner = self.shared.state.lock();
            inner.evicted.remove(&id);
            if inner.state.cancel(id).is_none() {
                return;
            }
            let now = Instant::now().into_std();
            drain(&mut inner.state, now, None).1
        };
        self.deliver(others);
    }

    /// Hands permits to the jobs that were chosen. Runs outside the lock: a job whose caller
    /// left returns its permit, which is released (and may start another job).
    fn deliver(&self, mut assignments: Vec<Assignment<oneshot::Sender<Permit>>>) {
        deliver_all(&self.shared, &mut assignments);
        self.shared.arm_timer();
    }
}

/// Sleeps until the earliest held permit's window ends, then starts whatever can start; with
/// nothing held, sleeps until woken. Holds only a weak reference between wake-ups.
///
/// A wake-up is registered before the state is read, so a hold set after the read always
/// wakes the task again: the decision to sleep and the decision to arm can never miss each
/// other.
async fn timer_task(shared: std::sync::Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let wakeup = match shared.upgrade() {
            Some(strong) => strong.state.lock().state.next_wakeup(),
            None => return,
        };
        let Some(at) = wakeup else {
            notified.await;
            continue;
        };
        tokio::select! {
            () = tokio::time::sleep_until(Instant::from_std(at)) => {}
            () = &mut notified => continue,
        }
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let mut assignments = {
            let mut inner = strong.state.lock();
            drain(&mut inner.state, Instant::now().into_std(), None).1
        };
        deliver_all(&strong, &mut assignments);
    }
}

/// Starts every job that can start. `mine` is the caller's own job, returned separately.
#[allow(clippy::type_complexity)]
fn drain(
    state: &mut SchedulerState<oneshot::Sender<Permit>>,
    now: std::time::Instant,
    mine: Option<u64>,
) -> (
    Option<Assignment<oneshot::Sender<Permit>>>,
    Vec<Assignment<oneshot::Sender<Permit>>>,
) {
    let mut own = None;
    let mut others = Vec::new();
    while let Some(assignment) = state.next(now) {
        if Some(assignment.id) == mine {
            own = Some(assignment);
        } else {
            others.push(assignment);
        }
    }
    (own, others)
}

fn deliver_all(shared: &Arc<Shared>, assignments: &mut Vec<Assignment<oneshot::Sender<Permit>>>) {
    // A worklist instead of recursion: a refused permit is released here, which may start more.
    while let Some(mut assignment) = assignments.pop() {
        let permit = Permit::new(shared, &assignment);
        let refused = match assignment.payload.take() {
            Some(sender) => sender.send(permit).err(),
            None => Some(permit),
        };
        if let Some(mut permit) = refused {
            let more = permit.release_inner();
            assignments.extend(more);
        }
    }
}

/// Removes the job from the queue if the `admit` future is dropped while it waits.
struct WaitGuard<'a> {
    scheduler: &'a Scheduler,
    id: u64,
    armed: bool,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.scheduler.cancel(self.id);
        }
    }
}

/// The right to run one job. Dropping it frees the permit and its tokens and starts the next
/// waiting job; it can live as long as a stream.
pub struct Permit {
    shared: Arc<Shared>,
    slot: u32,
    cost: u32,
    affinity: Option<u64>,
    warm: bool,
    waited: Duration,
    priority: ray_core::wire::Priority,
    aged: bool,
    /// False once released, so a permit can never free capacity twice.
    armed: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("slot", &self.slot)
            .field("cost", &self.cost)
            .field("waited", &self.waited)
            .finish()
    }
}

impl Permit {
    fn new<T>(shared: &Arc<Shared>, assignment: &Assignment<T>) -> Permit {
        Permit {
            shared: shared.clone(),
            slot: assignment.slot,
            cost: assignment.cost,
            affinity: assignment.affinity,
            warm: assignment.warm,
            waited: assignment.waited,
            priority: assignment.priority,
            aged: assignment.forced,
            armed: true,
        }
    }

    /// The permit's index, `0..concurrency`. Jobs of one affinity tend to get the same index,
    /// so a backend with as many slots as permits can map it to a slot and keep its prompt
    /// cache warm.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The priority the job ran with.
    pub fn priority(&self) -> ray_core::wire::Priority {
        self.priority
    }

    /// Whether the job started ahead of the preferred order because its wait bound required it.
    pub fn aged(&self) -> bool {
        self.aged
    }

    /// Whether the permit's previous job had this job's affinity, so a backend slot mapped to
    /// this permit probably still holds the prompt family in its cache.
    pub fn warm(&self) -> bool {
        self.warm
    }

    /// The tokens this job reserved.
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// How long the job waited in the queue.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    fn release_inner(&mut self) -> Vec<Assignment<oneshot::Sender<Permit>>> {
        if !std::mem::replace(&mut self.armed, false) {
            return Vec::new();
        }
        let (assignments, dropped) = {
            let mut inner = self.shared.state.lock();
            let now = Instant::now().into_std();
            inner
                .state
                .release(self.slot, self.cost, self.affinity, now);
            // The first measured service time may refuse jobs admitted without an estimate.
            let dropped = inner.take_evicted();
            (drain(&mut inner.state, now, None).1, dropped)
        };
        drop(dropped);
        assignments
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut assignments = self.release_inner();
        deliver_all(&self.shared, &mut assignments);
        self.shared.arm_timer();
    }
}

#[cfg(test)]
mod tests;
