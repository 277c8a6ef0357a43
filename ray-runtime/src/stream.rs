//! Streamed inference: the same path as a whole answer (plan, cache, gate, preparation,
//! admission), then the provider's token stream, handed on token by token.
//!
//! One execution is driven by a task of its own and fanned out to every stream that joined it:
//! identical concurrent streamed requests (the `dedupeKey`, else the cache key, as for whole
//! answers) share one backend generation, and a stream that joins late first receives the text
//! generated so far. When the last subscriber leaves, the task is aborted, which drops the
//! backend call and the permit. A completed stream's result is cached like a whole answer; a
//! cache hit is replayed as one delta followed by the final event.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use parking_lot::Mutex;
use ray_core::wire::{InferEvent, InferRequest, InferResponse, StreamDelta};
use ray_core::{ErrorCode, RayError};
use ray_models::{ProviderRequest, StreamEvent};
use ray_scheduler::JobSpec;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::plan::{Plan, PlanOptions};
use crate::runtime::{
    ExecResult, Facts, Front, ModelEntry, Ready, Runtime, Timing, finish_execution,
    provider_failure,
};
use crate::telemetry::inc;

/// The events of one streamed request: [`InferEvent::Delta`]s, then one [`InferEvent::Done`]
/// with the whole response; an error ends it early as an `Err` (never an
/// [`InferEvent::Error`], which is the wire form of that `Err`).
///
/// Dropping it leaves the stream: the backend generation stops when no other stream shares it.
pub struct InferStream {
    events: Pin<Box<dyn Stream<Item = Result<InferEvent, RayError>> + Send>>,
    tracker: Tracker,
}

impl std::fmt::Debug for InferStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferStream")
            .field("request_id", &self.tracker.request_id)
            .finish_non_exhaustive()
    }
}

impl InferStream {
    /// The request id (`req_…`) the final event will carry.
    pub fn request_id(&self) -> &str {
        &self.tracker.request_id
    }
}

impl Stream for InferStream {
    type Item = Result<InferEvent, RayError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = self.events.as_mut().poll_next(cx);
        if let Poll::Ready(Some(event)) = &item {
            match event {
                Ok(InferEvent::Done(response)) => {
                    let response = response.clone();
                    self.tracker.finish(Ok(&response));
                }
                Err(error) => self.tracker.finish(Err(error)),
                Ok(_) => {}
            }
        }
        item
    }
}

/// Counts a stream while it lives and records how it ended.
struct Tracker {
    runtime: Runtime,
    request_id: String,
    started: Instant,
    finished: bool,
}

impl Tracker {
    fn new(runtime: &Runtime, request_id: String, started: Instant) -> Tracker {
        let metrics = &runtime.inner.metrics;
        metrics.streams_active.fetch_add(1, Ordering::Relaxed);
        Tracker {
            runtime: runtime.clone(),
            request_id,
            started,
            finished: false,
        }
    }

    fn finish(&mut self, outcome: Result<&InferResponse, &RayError>) {
        if !self.finished {
            self.finished = true;
            self.runtime
                .record_outcome(&self.request_id, self.started, outcome);
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let metrics = &self.runtime.inner.metrics;
        metrics.streams_active.fetch_sub(1, Ordering::Relaxed);
        if !self.finished {
            inc(&metrics.streams_cancelled);
            tracing::info!(request_id = %self.request_id, "stream cancelled by the client");
        }
    }
}

/// One execution shared by the streams that joined it.
pub(crate) struct Shared {
    state: Mutex<SharedState>,
    notify: Notify,
}

struct SharedState {
    deltas: Vec<Arc<str>>,
    done: Option<ExecResult>,
    subscribers: usize,
    task: Option<AbortHandle>,
}

/// The streams in flight for one model, by dedupe key.
pub(crate) type StreamFlights = Mutex<HashMap<u128, Weak<Shared>>>;

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(SharedState {
                deltas: Vec::new(),
                done: None,
                subscribers: 1,
                task: None,
            }),
            notify: Notify::new(),
        })
    }

    /// Joins as one more subscriber, unless the execution is over or has `max` already.
    fn join(&self, max: usize) -> Result<bool, RayError> {
        let mut state = self.state.lock();
        if state.done.is_some() {
            return Ok(false);
        }
        if state.subscribers > max {
            return Err(RayError::new(
                ErrorCode::QueueFull,
                "The request queue is full: too many identical streams wait on one execution",
            )
            .with_details(serde_json::json!({ "phase": "dedupe", "maxDedupeWaiters": max })));
        }
        state.subscribers += 1;
        Ok(true)
    }

    fn push(&self, text: String) {
        self.state.lock().deltas.push(Arc::from(text));
        self.notify.notify_waiters();
    }

    fn finish(&self, result: ExecResult) {
        let mut state = self.state.lock();
        if state.done.is_none() {
            state.done = Some(result);
        }
        state.task = None;
        drop(state);
        self.notify.notify_waiters();
    }

    /// A subscriber left; the last one out stops the execution.
    fn leave(&self) {
        let mut state = self.state.lock();
        state.subscribers -= 1;
        if state.subscribers == 0 && state.done.is_none() {
            state.done = Some(Err(RayError::new(
                ErrorCode::RequestAborted,
                "Every client of this stream left",
            )));
            if let Some(task) = state.task.take() {
                task.abort();
            }
        }
    }
}

/// A subscriber's hold on a [`Shared`]; dropping it leaves.
struct Subscription {
    shared: Arc<Shared>,
    next: usize,
    respond: Option<Responder>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.leave();
    }
}

/// What a subscriber needs to build its final response.
struct Responder {
    runtime: Runtime,
    request_id: String,
    plan: Plan,
    started: Instant,
    follower: bool,
}

enum Next {
    Delta(Arc<str>),
    Done(ExecResult),
    Wait,
}

fn subscription_events(
    subscription: Subscription,
) -> Pin<Box<dyn Stream<Item = Result<InferEvent, RayError>> + Send>> {
    Box::pin(futures_util::stream::unfold(
        Some(subscription),
        |subscription| async move {
            let mut subscription = subscription?;
            loop {
                let shared = subscription.shared.clone();
                let notified = shared.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let next = {
                    let state = shared.state.lock();
                    if let Some(text) = state.deltas.get(subscription.next) {
                        Next::Delta(text.clone())
                    } else if let Some(done) = &state.done {
                        Next::Done(done.clone())
                    } else {
                        Next::Wait
                    }
                };
                match next {
                    Next::Delta(text) => {
                        subscription.next += 1;
                        let event = InferEvent::Delta(StreamDelta {
                            text: text.to_string(),
                        });
                        return Some((Ok(event), Some(subscription)));
                    }
                    Next::Done(Ok(execution)) => {
                        let respond = subscription.respond.take()?;
                        let response = respond.runtime.response(
                            &respond.request_id,
                            respond.plan,
                            execution,
                            respond.follower,
                            respond.started,
                        );
                        return Some((Ok(InferEvent::Done(Box::new(response))), None));
                    }
                    Next::Done(Err(error)) => return Some((Err(error), None)),
                    Next::Wait => notified.await,
                }
            }
        },
    ))
}

/// What the driving task needs.
struct Drive {
    model: Arc<ModelEntry>,
    provider_request: ProviderRequest,
    spec: JobSpec,
    facts: Facts,
    store: Option<u128>,
    degraded: bool,
    max_tokens: u32,
    deadline: Instant,
    started: Instant,
}

impl Runtime {
    /// Runs one inference request as a stream of events: the same path as
    /// [`Runtime::infer`] (normalise, degrade, cache, gate, prepare, dedupe, admit), then the
    /// provider's tokens as they come.
    ///
    /// Errors found before admission are returned here; later ones (queue timeout, the
    /// backend failing, the stream deadlines of the `streaming` config) arrive as the stream's
    /// `Err` item, possibly after some deltas. The first item tells whether the request
    /// started: a server can wait for it before committing to a success status. Identical
    /// concurrent streams share one execution; dropping the stream leaves it.
    pub async fn infer_stream(&self, request: InferRequest) -> Result<InferStream, RayError> {
        let started = Instant::now();
        let metrics = &self.inner.metrics;
        inc(&metrics.requests);
        inc(&metrics.streams);
        let request_id = self.inner.ids.next("req_");
        let front = self
            .front(&request_id, request, PlanOptions::default(), started)
            .await;
        let ready = match front {
            Ok(Front::Ready(ready)) => *ready,
            Ok(Front::Cached(response)) => {
                let mut events = Vec::with_capacity(2);
                if !response.output.is_empty() {
                    events.push(Ok(InferEvent::Delta(StreamDelta {
                        text: response.output.clone(),
                    })));
                }
                events.push(Ok(InferEvent::Done(response)));
                return Ok(InferStream {
                    events: Box::pin(futures_util::stream::iter(events)),
                    tracker: Tracker::new(self, request_id, started),
                });
            }
            Err(error) => {
                self.record_outcome(&request_id, started, Err(&error));
                return Err(error);
            }
        };
        let Ready {
            plan,
            model,
            provider_request,
            spec,
            facts,
            store,
            dedupe_key,
            deadline,
        } = ready;
        let max_waiters = self.inner.config.scheduler.max_dedupe_waiters as usize;
        let joined = match dedupe_key {
            Some(key) => {
                let existing = model.streams.lock().get(&key).and_then(Weak::upgrade);
                match existing {
                    Some(shared) => match shared.join(max_waiters) {
                        Ok(true) => Some(shared),
                        Ok(false) => None,
                        Err(error) => {
                            self.record_outcome(&request_id, started, Err(&error));
                            return Err(error);
                        }
                    },
                    None => None,
                }
            }
            None => None,
        };
        let follower = joined.is_some();
        let shared = match joined {
            Some(shared) => shared,
            None => {
                let shared = Shared::new();
                if let Some(key) = dedupe_key {
                    model.streams.lock().insert(key, Arc::downgrade(&shared));
                }
                let drive = Drive {
                    model: model.clone(),
                    provider_request,
                    spec,
                    facts,
                    store,
                    degraded: plan.degraded,
                    max_tokens: plan.max_tokens,
                    deadline,
                    started,
                };
                let task = tokio::spawn(self.clone().drive(shared.clone(), drive, dedupe_key));
                let mut state = shared.state.lock();
                if state.done.is_none() {
                    state.task = Some(task.abort_handle());
                }
                drop(state);
                shared
            }
        };
        let subscription = Subscription {
            shared,
            next: 0,
            respond: Some(Responder {
                runtime: self.clone(),
                request_id: request_id.clone(),
                plan,
                started,
                follower,
            }),
        };
        Ok(InferStream {
            events: subscription_events(subscription),
            tracker: Tracker::new(self, request_id, started),
        })
    }

    /// Drives one execution: admission, the provider's stream under the permit, the stream
    /// deadlines, then the result (cached when it may be).
    async fn drive(self, shared: Arc<Shared>, drive: Drive, key: Option<u128>) {
        let result = self.drive_inner(&shared, drive).await;
        shared.finish(result);
        if let Some(key) = key {
            let model = self.model();
            let mut flights = model.streams.lock();
            if flights
                .get(&key)
                .is_some_and(|weak| std::ptr::eq(weak.as_ptr(), Arc::as_ptr(&shared)))
            {
                flights.remove(&key);
            }
        }
    }

    async fn drive_inner(&self, shared: &Shared, drive: Drive) -> ExecResult {
        let inner = &self.inner;
        let streaming = &inner.config.streaming;
        let Drive {
            model,
            mut provider_request,
            spec,
            facts,
            store,
            degraded,
            max_tokens,
            deadline,
            started,
        } = drive;
        let total_deadline = started + Duration::from_millis(streaming.total_timeout_ms);
        let admitted = tokio::time::timeout_at(
            deadline.min(total_deadline),
            model.scheduler.admit(spec, deadline),
        )
        .await;
        let permit = match admitted {
            Ok(permit) => permit?,
            Err(_) if total_deadline < deadline => {
                return Err(total_timeout(streaming.total_timeout_ms));
            }
            Err(_) => return Err(self.request_timeout()),
        };
        let queue_time = permit.waited();
        inner.metrics.queue_wait.observe(queue_time);
        provider_request.slot_hint = Some(permit.slot());
        provider_request.slot_warm = permit.warm();
        inc(&inner.metrics.provider_calls);
        let call_started = Instant::now();
        let first_deadline = call_started + Duration::from_millis(streaming.first_token_timeout_ms);
        let idle = Duration::from_millis(streaming.idle_timeout_ms);
        let timeout_error = |got_first: bool| {
            if Instant::now() >= total_deadline {
                total_timeout(streaming.total_timeout_ms)
            } else if got_first {
                RayError::new(
                    ErrorCode::StreamIdleTimeout,
                    format!(
                        "No token for streaming.idleTimeoutMs ({} ms)",
                        streaming.idle_timeout_ms
                    ),
                )
                .with_details(serde_json::json!({ "timeoutMs": streaming.idle_timeout_ms }))
            } else {
                RayError::new(
                    ErrorCode::StreamFirstTokenTimeout,
                    format!(
                        "No token within streaming.firstTokenTimeoutMs ({} ms) of starting",
                        streaming.first_token_timeout_ms
                    ),
                )
                .with_details(serde_json::json!({ "timeoutMs": streaming.first_token_timeout_ms }))
            }
        };
        let opened = tokio::time::timeout_at(
            first_deadline.min(total_deadline),
            model.provider.stream(&provider_request),
        )
        .await;
        let mut events = match opened {
            Ok(Ok(events)) => events,
            Ok(Err(error)) => return Err(provider_failure(inner, error)),
            Err(_) => return Err(timeout_error(false)),
        };
        let mut got_first = false;
        loop {
            let wait_until = if got_first {
                (Instant::now() + idle).min(total_deadline)
            } else {
                first_deadline.min(total_deadline)
            };
            match tokio::time::timeout_at(wait_until, events.next()).await {
                Err(_) => return Err(timeout_error(got_first)),
                Ok(None) => {
                    return Err(RayError::new(
                        ErrorCode::ProviderInvalidResponse,
                        "The backend's stream ended without a final result",
                    ));
                }
                Ok(Some(Err(error))) => return Err(provider_failure(inner, error)),
                Ok(Some(Ok(StreamEvent::Delta(text)))) => {
                    if text.is_empty() {
                        continue;
                    }
                    if !got_first {
                        got_first = true;
                        inner.metrics.stream_first_token.observe(started.elapsed());
                    }
                    shared.push(text);
                }
                Ok(Some(Ok(StreamEvent::Done(output)))) => {
                    let call_time = call_started.elapsed();
                    inner.metrics.provider_duration.observe(call_time);
                    drop(permit);
                    let timing = Timing {
                        queue_time,
                        call_time,
                    };
                    return finish_execution(
                        inner, *output, timing, facts, max_tokens, store, degraded,
                    );
                }
            }
        }
    }
}

fn total_timeout(total_ms: u64) -> RayError {
    RayError::new(
        ErrorCode::StreamTotalTimeout,
        format!("The stream ran longer than streaming.totalTimeoutMs ({total_ms} ms)"),
    )
    .with_details(serde_json::json!({ "timeoutMs": total_ms }))
}
