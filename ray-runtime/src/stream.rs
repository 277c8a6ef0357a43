//! Streamed inference: the same pipeline as a whole answer (route, front, the one execute
//! path), with the execution's text handed on as it is generated.
//!
//! Identical concurrent requests share one execution (see [`crate::execute`]); a stream that
//! joins late first receives the text generated so far, and one that joins a whole-answer
//! execution receives the text at once when it is done. A cache hit is replayed as one delta
//! followed by the final event.
//!
//! Fallback: a stream moves to the next model of its chain when the chosen model refuses it
//! before admission, or when its execution fails before the first token (the server has not
//! committed to a status yet); after the first token an error ends the stream.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use ray_core::RayError;
use ray_core::wire::{InferEvent, InferRequest, InferResponse, RoutingDiagnostics, StreamDelta};
use ray_scheduler::FlightEvent;
use tokio::time::Instant;

use crate::context::RequestContext;
use crate::execute::{Attempts, DEADLINE_GRACE, ExecSubscription, lost};
use crate::front::Front;
use crate::plan::{Plan, PlanOptions};
use crate::runtime::Runtime;
use crate::telemetry::inc;

type Events = Pin<Box<dyn Stream<Item = Result<InferEvent, RayError>> + Send>>;

/// The events of one streamed request: [`InferEvent::Delta`]s, then one [`InferEvent::Done`]
/// with the whole response; an error ends it early as an `Err` (never an
/// [`InferEvent::Error`], which is the wire form of that `Err`).
///
/// Dropping it leaves the stream: the backend generation stops when no other request shares
/// it.
pub struct InferStream {
    events: Events,
    tracker: Tracker,
    routing: RoutingDiagnostics,
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

    /// The id of the model serving the stream.
    pub fn model(&self) -> &str {
        &self.routing.model
    }

    /// How the model was chosen, and any fallback on the way.
    pub fn routing(&self) -> &RoutingDiagnostics {
        &self.routing
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
                Err(error) => {
                    if let Some(model) = self
                        .tracker
                        .runtime
                        .live()
                        .registry
                        .get(&self.routing.model)
                    {
                        model.counters.errors.add(error.code());
                    }
                    self.tracker.finish(Err(error));
                }
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

/// What a subscriber needs to turn its execution into events.
struct Reader {
    runtime: Runtime,
    subscription: ExecSubscription,
    request_id: String,
    plan: Option<Plan>,
    started: Instant,
    deadline: Instant,
    /// The whole text, owed to a subscriber that read no delta of it (it joined an execution
    /// that answered whole).
    owes_text: bool,
}

impl Reader {
    async fn next(&mut self) -> Option<Result<InferEvent, RayError>> {
        // No plan left: the final event (or an error) was sent.
        self.plan.as_ref()?;
        let event =
            match tokio::time::timeout_at(self.deadline + DEADLINE_GRACE, self.subscription.next())
                .await
            {
                Ok(event) => event,
                Err(_elapsed) => {
                    self.plan = None;
                    return Some(Err(self.runtime.request_timeout()));
                }
            };
        match event {
            FlightEvent::Progress(text) => Some(Ok(InferEvent::Delta(StreamDelta {
                text: text.to_string(),
            }))),
            FlightEvent::Done(Ok(execution)) => {
                if self.owes_text
                    && self.subscription.read() == 0
                    && !execution.output.text.is_empty()
                {
                    self.owes_text = false;
                    return Some(Ok(InferEvent::Delta(StreamDelta {
                        text: execution.output.text.clone(),
                    })));
                }
                let plan = self.plan.take()?;
                let follower = self.subscription.is_follower();
                let response = self.runtime.response(
                    &self.request_id,
                    plan,
                    execution,
                    follower,
                    self.started,
                );
                Some(Ok(InferEvent::Done(Box::new(response))))
            }
            FlightEvent::Done(Err(error)) => {
                self.plan = None;
                Some(Err(error))
            }
            FlightEvent::Lost => {
                self.plan = None;
                Some(Err(lost()))
            }
        }
    }
}

impl Runtime {
    /// Runs one inference request as a stream of events: the same path as
    /// [`Runtime::infer`] (route, normalise, degrade, cache, prepare, dedupe, admit), then the
    /// provider's tokens as they come.
    ///
    /// Errors found before the first event are returned here (after any fallback); later ones
    /// (the backend failing, the stream deadlines of the `streaming` config) arrive as the
    /// stream's `Err` item, after some deltas. Identical concurrent streams share one
    /// execution; dropping the stream leaves it.
    pub async fn infer_stream(&self, request: InferRequest) -> Result<InferStream, RayError> {
        self.infer_stream_in(request, &RequestContext::default())
            .await
    }

    /// [`Runtime::infer_stream`] for a request that arrived on `context`'s route, for the
    /// routing rules.
    pub async fn infer_stream_in(
        &self,
        request: InferRequest,
        context: &RequestContext,
    ) -> Result<InferStream, RayError> {
        let started = Instant::now();
        // One config and one set of models until the stream ends, whatever a reload does.
        let this = self.pinned();
        let metrics = &this.inner.metrics;
        inc(&metrics.requests);
        inc(&metrics.streams);
        let request_id = this.inner.ids.next("req_");
        // Counted from the start: a client that leaves before the first token cancelled it.
        let mut tracker = Tracker::new(&this, request_id.clone(), started);
        match this
            .open_stream(&request_id, request, context, started)
            .await
        {
            Ok((events, routing)) => Ok(InferStream {
                events,
                tracker,
                routing,
            }),
            Err(error) => {
                tracker.finish(Err(&error));
                Err(error)
            }
        }
    }

    /// Route, then front and execute on each model of the chain until one starts the
    /// stream: its first event is awaited here, so a model that fails before its first token
    /// hands the request to its fallback.
    async fn open_stream(
        &self,
        request_id: &str,
        request: InferRequest,
        context: &RequestContext,
        started: Instant,
    ) -> Result<(Events, RoutingDiagnostics), RayError> {
        let options = PlanOptions {
            admission: crate::priority::decide(
                &self.live().config.priority,
                &request,
                context,
                ray_core::wire::PriorityClass::Interactive,
            )?,
            stream: true,
            ..PlanOptions::default()
        };
        let route = self.route(&request, context)?;
        let mut attempts = Attempts::new(self, route.choice.chosen_by.clone(), started);
        for &index in &route.chain {
            let live = self.live();
            let model = live.registry.at(index).clone();
            let routing = attempts.routing(&model);
            let front = self
                .front(
                    request_id,
                    Box::new(request.clone()),
                    &model,
                    routing,
                    options,
                    started,
                )
                .await;
            let (plan, ready) = match front {
                Ok(Front::Ready(plan, ready)) => (plan, ready),
                Ok(Front::Cached(response)) => {
                    let routing = response.diagnostics.routing.clone().unwrap_or_default();
                    let mut events = Vec::with_capacity(2);
                    if !response.output.is_empty() {
                        events.push(Ok(InferEvent::Delta(StreamDelta {
                            text: response.output.clone(),
                        })));
                    }
                    events.push(Ok(InferEvent::Done(response)));
                    return Ok((Box::pin(futures_util::stream::iter(events)), routing));
                }
                Err(error) if attempts.falls_back(&model, &error, &route.chain, index) => continue,
                Err(error) => {
                    model.counters.errors.add(error.code());
                    return Err(error);
                }
            };
            // A stream's own limit is streaming.totalTimeoutMs (the execution enforces it).
            let total =
                std::time::Duration::from_millis(self.live().config.streaming.total_timeout_ms);
            let deadline = ready.deadline.max(started + total);
            let routing = plan.routing.clone();
            let subscription = self.execute(ready, true)?;
            let mut reader = Reader {
                runtime: self.clone(),
                subscription,
                request_id: request_id.to_string(),
                plan: Some(*plan),
                started,
                deadline,
                owes_text: true,
            };
            let first = reader.next().await;
            if let Some(Err(error)) = &first
                && attempts.falls_back(&model, error, &route.chain, index)
            {
                continue;
            }
            let rest = futures_util::stream::unfold(reader, |mut reader| async move {
                reader.next().await.map(|event| (event, reader))
            });
            return Ok((
                Box::pin(futures_util::stream::iter(first).chain(rest)),
                routing,
            ));
        }
        // Unreachable: the chain is never empty and its last model always answers.
        Err(lost())
    }
}
