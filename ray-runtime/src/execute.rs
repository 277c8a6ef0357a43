//! The one execute path, steps 6 to 9 for whole answers and streams alike: join the execution
//! already in flight for the request's dedupe key, or start one; the execution waits for its
//! permit (admission), calls the backend under the permit with its deadlines (a whole answer,
//! or a stream whose text is published as it arrives), and records the result.
//!
//! An execution is driven by a task of its own and shared through the model's
//! [`ray_scheduler::Flights`]: a whole answer waits for the result, a stream reads the text as
//! it comes, and either kind can join an execution the other started. When the last request
//! sharing it leaves, the task is aborted, which drops the backend call and the permit.
//!
//! [`Runtime::run`] is the whole-answer pipeline with fallback: route, then for the chosen
//! model and each model of its fallback chain, front then execute, within the original
//! deadline.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use ray_core::wire::{InferRequest, InferResponse, RoutingDiagnostics};
use ray_core::{ErrorCode, RayError};
use ray_models::StreamEvent;
use ray_scheduler::{Joined, Publisher, Subscription};
use tokio::time::Instant;

use crate::context::RequestContext;
use crate::front::{Front, Ready};
use crate::outcome::{ExecResult, Timing};
use crate::plan::PlanOptions;
use crate::registry::{ModelEntry, backend_down};
use crate::respond::{finish_execution, provider_failure};
use crate::runtime::Runtime;
use crate::telemetry::inc;

/// The future that drives one execution to its result.
type Driver = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

/// An execution driven inline by its leader. Dropped before the end (the leader left or
/// timed out), it hands the rest of the execution to a task when other requests still wait
/// on it, and otherwise drops it, which cancels the backend call and frees the permit.
struct Inline<'a> {
    driver: Option<Driver>,
    subscription: &'a ExecSubscription,
}

impl Inline<'_> {
    async fn run(&mut self) {
        if let Some(driver) = self.driver.as_mut() {
            driver.await;
            self.driver = None;
        }
    }
}

impl Drop for Inline<'_> {
    fn drop(&mut self) {
        let Some(driver) = self.driver.take() else {
            return;
        };
        if self.subscription.subscribers() > 1
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let task = handle.spawn(driver);
            self.subscription.set_task(task.abort_handle());
        }
    }
}

/// How long past its deadline a request waits for its execution to report the timeout.
pub(crate) const DEADLINE_GRACE: Duration = Duration::from_millis(250);

/// A request's hold on its execution.
pub(crate) type ExecSubscription = Subscription<Arc<str>, ExecResult>;

impl Runtime {
    /// The whole-answer pipeline: route, then front and execute on the chosen model, falling
    /// back along its chain when its backend is down or refuses.
    pub(crate) async fn run(
        &self,
        request_id: &str,
        request: Box<InferRequest>,
        context: &RequestContext,
        mut options: PlanOptions,
        started: Instant,
    ) -> Result<InferResponse, RayError> {
        options.admission = crate::priority::decide(
            &self.live().config.priority,
            &request,
            context,
            ray_core::wire::PriorityClass::Interactive,
        )?;
        let route = self.route(&request, context)?;
        let mut attempts = Attempts::new(self, route.choice.chosen_by.clone(), started);
        // Each attempt but the last plans a copy; the last takes the request itself.
        let mut request = Some(request);
        // Whether any model of the chain was sent the request: only an answer no backend saw
        // keeps its `before_sending` mark.
        let mut sent = false;
        for (position, &index) in route.chain.iter().enumerate() {
            let attempt = if position + 1 == route.chain.len() {
                request.take()
            } else {
                request.clone()
            };
            let Some(attempt) = attempt else { break };
            let live = self.live();
            let model = live.registry.at(index).clone();
            let routing = attempts.routing(&model);
            let result = self
                .run_on(request_id, attempt, &model, routing, options, started)
                .await;
            match result {
                Err(error) if attempts.falls_back(&model, &error, &route.chain, index) => {
                    sent |= !error.is_before_sending();
                }
                Err(error) => {
                    model.counters.errors.add(error.code());
                    return Err(if sent { error.after_sending() } else { error });
                }
                ok => return ok,
            }
        }
        // Unreachable: the chain is never empty and its last model always answers.
        Err(lost())
    }

    /// Front and execute on one model.
    async fn run_on(
        &self,
        request_id: &str,
        request: Box<InferRequest>,
        model: &Arc<ModelEntry>,
        routing: RoutingDiagnostics,
        options: PlanOptions,
        started: Instant,
    ) -> Result<InferResponse, RayError> {
        let (plan, ready) = match self
            .front(request_id, request, model, routing, options, started)
            .await?
        {
            Front::Cached(response) => return Ok(*response),
            Front::Ready(plan, ready) => (plan, ready),
        };
        let deadline = ready.deadline;
        // A whole answer's leader drives its execution inline (no task, no cross-thread
        // wake-up); if it leaves while followers still wait, the rest of the execution is
        // handed to a task (see `Inline`).
        let (mut subscription, driver) = self.join(ready, false)?;
        let follower = subscription.is_follower();
        let outcome = async {
            if let Some(driver) = driver {
                let mut inline = Inline {
                    driver: Some(driver),
                    subscription: &subscription,
                };
                inline.run().await;
            }
            subscription.outcome().await
        };
        // The execution enforces the deadline itself (and drops the backend call before it
        // answers); the grace only guards against an execution that never answers.
        let result = match crate::deadline::timeout_at(deadline + DEADLINE_GRACE, outcome).await {
            Ok(Some(result)) => result,
            Ok(None) => return Err(lost()),
            Err(_elapsed) => return Err(self.request_timeout()),
        };
        let execution = result?;
        Ok(self.response(request_id, *plan, execution, follower, started))
    }

    /// Joins the execution in flight for the request's dedupe key, or starts one driven by a
    /// task of its own (`stream`: the backend's token stream, published as it comes; else a
    /// whole answer).
    pub(crate) fn execute(
        &self,
        ready: Box<Ready>,
        stream: bool,
    ) -> Result<ExecSubscription, RayError> {
        let (subscription, driver) = self.join(ready, stream)?;
        if let Some(driver) = driver {
            let task = tokio::spawn(driver);
            subscription.set_task(task.abort_handle());
        }
        Ok(subscription)
    }

    /// Joins the execution in flight for the request's dedupe key, or starts one and returns
    /// its driver for the caller to run (inline, or as a task).
    fn join(
        &self,
        ready: Box<Ready>,
        stream: bool,
    ) -> Result<(ExecSubscription, Option<Driver>), RayError> {
        let model = ready.model.clone();
        let Joined {
            subscription,
            publisher,
        } = model.flights.join(ready.dedupe_key).map_err(|full| {
            RayError::new(
                ErrorCode::QueueFull,
                format!("The request queue is full: {full}"),
            )
            .with_details(serde_json::json!({
                "phase": "dedupe",
                "maxDedupeWaiters": model.limits.max_dedupe_waiters,
            }))
        })?;
        let driver = publisher
            .map(|publisher| -> Driver { Box::pin(self.clone().drive(publisher, ready, stream)) });
        Ok((subscription, driver))
    }

    async fn drive(
        self,
        publisher: Publisher<u128, Arc<str>, ExecResult>,
        ready: Box<Ready>,
        stream: bool,
    ) {
        let result = self.drive_inner(&publisher, ready, stream).await;
        publisher.finish(result);
    }

    /// Admission, the backend call under the permit with its deadlines, then the record.
    async fn drive_inner(
        &self,
        publisher: &Publisher<u128, Arc<str>, ExecResult>,
        ready: Box<Ready>,
        stream: bool,
    ) -> ExecResult {
        let inner = &self.inner;
        let live = self.live();
        let streaming = &live.config.streaming;
        let Ready {
            model,
            mut provider_request,
            spec,
            facts,
            exec,
            started,
            deadline,
            lease,
            ..
        } = *ready;
        // A stream also has its total deadline.
        let total_deadline = if stream {
            started + Duration::from_millis(streaming.total_timeout_ms)
        } else {
            deadline
        };

        // Step 7: admission. A managed model's lease, taken in front, keeps it loaded until
        // the execution ends; a request that meant to join an execution that ended
        // meanwhile leads this one, and takes its lease now.
        let _lease = match lease {
            Some(lease) => Some(lease),
            None => {
                let total = stream.then(|| {
                    let total = Duration::from_millis(streaming.total_timeout_ms);
                    (total_deadline, total)
                });
                self.lease_within(&model, deadline, total).await?
            }
        };
        let admitted = crate::deadline::timeout_at(
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
        let priority = permit.priority();
        inner.metrics.queue_wait.observe(queue_time);
        provider_request.slot_hint = Some(permit.slot());
        provider_request.slot_warm = permit.warm();
        inc(&inner.metrics.provider_calls);
        let call_started = Instant::now();

        // Step 8: the backend, under the permit.
        let output = if stream {
            self.stream_call(
                publisher,
                &model,
                &provider_request,
                started,
                total_deadline,
            )
            .await?
        } else {
            match crate::deadline::timeout_at(deadline, model.provider.infer(&provider_request))
                .await
            {
                Ok(result) => result.map_err(|error| provider_failure(self, &model, error))?,
                Err(_elapsed) => return Err(self.request_timeout()),
            }
        };
        let call_time = call_started.elapsed();
        inner.metrics.provider_duration.observe(call_time);
        drop(permit);

        // Step 9: record.
        finish_execution(
            inner,
            &model,
            output,
            Timing {
                queue_time,
                call_time,
                priority,
            },
            facts,
            exec,
        )
    }

    /// The backend's token stream with the `streaming` deadlines (first token, idle, total),
    /// each token published as it comes.
    async fn stream_call(
        &self,
        publisher: &Publisher<u128, Arc<str>, ExecResult>,
        model: &ModelEntry,
        provider_request: &ray_models::ProviderRequest,
        started: Instant,
        total_deadline: Instant,
    ) -> Result<ray_models::ProviderOutput, RayError> {
        let inner = &self.inner;
        let live = self.live();
        let streaming = &live.config.streaming;
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
            model.provider.stream(provider_request),
        )
        .await;
        let mut events = match opened {
            Ok(Ok(events)) => events,
            Ok(Err(error)) => return Err(provider_failure(self, model, error)),
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
                Ok(Some(Err(error))) => return Err(provider_failure(self, model, error)),
                Ok(Some(Ok(StreamEvent::Delta(text)))) => {
                    if text.is_empty() {
                        continue;
                    }
                    if !got_first {
                        got_first = true;
                        inner.metrics.stream_first_token.observe(started.elapsed());
                    }
                    publisher.publish(Arc::from(text));
                }
                Ok(Some(Ok(StreamEvent::Done(output)))) => return Ok(*output),
            }
        }
    }
}

impl Runtime {
    /// For a managed model under the `lifecycle` section: waits until it is loaded (starting
    /// or joining its load) within `deadline`, and holds it while the lease lives. `None` for
    /// any other model.
    pub(crate) async fn lease(
        &self,
        model: &ModelEntry,
        deadline: Instant,
    ) -> Result<Option<crate::lifecycle::Lease>, RayError> {
        let (Some(index), Some(managed)) = (model.lifecycle, self.inner.managed.as_ref()) else {
            return Ok(None);
        };
        match managed.shell.acquire_at(index, deadline).await {
            Ok(lease) => {
                self.follow_process(model);
                Ok(Some(lease))
            }
            Err(refusal) => Err(crate::managed::refusal_error(
                &model.id,
                refusal,
                managed.budget_source,
            )),
        }
    }

    /// The lease of [`Runtime::lease`] for a request whose deadline is `deadline` and, for a
    /// stream, whose total deadline is `total` (`streaming.totalTimeoutMs` from its arrival):
    /// the wait ends at the earlier of the two, and when that is the stream's, a wait that
    /// runs out is the stream's `stream_total_timeout`, as in admission.
    pub(crate) async fn lease_within(
        &self,
        model: &ModelEntry,
        deadline: Instant,
        total: Option<(Instant, Duration)>,
    ) -> Result<Option<crate::lifecycle::Lease>, RayError> {
        match total {
            Some((end, total)) if end < deadline => self.lease(model, end).await.map_err(|error| {
                if error.code() != ErrorCode::RequestTimeout {
                    return error;
                }
                let total_ms = total.as_millis() as u64;
                let timeout = RayError::new(
                    ErrorCode::StreamTotalTimeout,
                    format!(
                        "The stream's deadline (streaming.totalTimeoutMs, {total_ms} ms) \
                         passed while model {:?} was loading",
                        model.id
                    ),
                )
                .with_details(serde_json::json!({
                    "timeoutMs": total_ms,
                    "phase": "model_load",
                    "model": model.id,
                }));
                match error.retry_after_secs() {
                    Some(seconds) => timeout.with_retry_after(seconds),
                    None => timeout,
                }
            }),
            _ => self.lease(model, deadline).await,
        }
    }
}

impl Runtime {
    /// For a managed model: when a process started since its provider last looked (a swap,
    /// a crash and reload), the provider follows it to where it listens and drops what it
    /// detected and rendered against the old one. Before a request prepares its prompt, and
    /// before a probe.
    pub(crate) fn follow_process(&self, model: &ModelEntry) {
        let (Some(index), Some(managed)) = (model.lifecycle, self.inner.managed.as_ref()) else {
            return;
        };
        let loads = managed.shell.loads_at(index);
        if model.counters.loads_seen.load(Ordering::Acquire) != loads {
            // No process yet (its load was just decided): the next look follows it.
            let Some(base_url) = managed.driver.base_url(index) else {
                return;
            };
            model.provider.backend_replaced(Some(&base_url));
            model.counters.loads_seen.store(loads, Ordering::Release);
        }
    }
}

/// The models tried for one request, and why each did not serve it.
pub(crate) struct Attempts<'a> {
    runtime: &'a Runtime,
    chosen_by: Cow<'static, str>,
    /// The first model tried, once it fell back.
    first: Option<String>,
    skipped: Vec<String>,
    started: Instant,
}

impl<'a> Attempts<'a> {
    pub(crate) fn new(
        runtime: &'a Runtime,
        chosen_by: Cow<'static, str>,
        started: Instant,
    ) -> Attempts<'a> {
        Attempts {
            runtime,
            chosen_by,
            first: None,
            skipped: Vec::new(),
            started,
        }
    }

    /// The routing diagnostics of an attempt on `model`.
    pub(crate) fn routing(&self, model: &ModelEntry) -> RoutingDiagnostics {
        let fallback_from = self
            .first
            .as_ref()
            .filter(|first| **first != model.id)
            .cloned();
        RoutingDiagnostics {
            model: model.id.clone(),
            chosen_by: self.chosen_by.clone(),
            fallback_from,
            skipped: self.skipped.clone(),
        }
    }

    /// Whether the request moves on from `model` after `error`: the backend is down or
    /// refused, another model is left in the chain, and the deadline has not passed. Counts
    /// and logs the move.
    pub(crate) fn falls_back(
        &mut self,
        model: &ModelEntry,
        error: &RayError,
        chain: &[usize],
        index: usize,
    ) -> bool {
        let last = chain.last() == Some(&index);
        let timeout =
            Duration::from_millis(self.runtime.live().config.scheduler.request_timeout_ms);
        let in_time = self.started.elapsed() < timeout;
        // The last model's error is the answer (its fallbacks were tried and `skipped` says why).
        if last || !in_time || !backend_down(error.code()) {
            return false;
        }
        model.counters.fell_back.fetch_add(1, Ordering::Relaxed);
        inc(&self.runtime.inner.metrics.fallbacks);
        tracing::info!(
            model = %model.id,
            code = %error.code(),
            "model cannot take the request; trying its fallback"
        );
        self.skipped.push(format!("{}: {}", model.id, error.code()));
        if self.first.is_none() {
            self.first = Some(model.id.clone());
        }
        true
    }
}

/// An execution that ended without a result (its task panicked): an internal error.
pub(crate) fn lost() -> RayError {
    RayError::new(
        ErrorCode::GatewayError,
        "The execution ended without a result",
    )
}

pub(crate) fn total_timeout(total_ms: u64) -> RayError {
    RayError::new(
        ErrorCode::StreamTotalTimeout,
        format!("The stream ran longer than streaming.totalTimeoutMs ({total_ms} ms)"),
    )
    .with_details(serde_json::json!({ "timeoutMs": total_ms }))
}
