//! Record and respond: what an execution produced, how it is checked, counted and cached
//! (step 9), and how each request that shared it gets its own response (step 10's input).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ray_core::ErrorCode;
use ray_core::RayError;
use ray_core::wire::{CountTriple, Diagnostics, InferResponse, SchedulerDiagnostics, Usage};
use ray_models::ProviderOutput;
use tokio::time::Instant;

use crate::outcome::{CachedResult, ExecPlan, ExecResult, Execution, Facts, Timing};
use crate::plan::Plan;
use crate::registry::ModelEntry;
use crate::runtime::Runtime;
use crate::state::Inner;
use crate::telemetry::{RuntimeMetrics, inc};
use crate::tuning::Outcome;

/// A provider error as a Ray error, counted, and telling the model's health and cooldown.
pub(crate) fn provider_failure(
    runtime: &Runtime,
    model: &ModelEntry,
    error: ray_models::ProviderError,
) -> RayError {
    let error = RayError::from(error);
    runtime.inner.metrics.provider_errors.add(error.code());
    model.health.note_failure(error.code());
    let live = runtime.live();
    let routing = &live.config.routing;
    model.note_failure(
        &error,
        routing.cooldown_after_failures,
        Duration::from_millis(routing.cooldown_ms),
    );
    error
}

/// Checks a backend's output, teaches the model's tuner, counts its tokens, stores it in the
/// cache.
pub(crate) fn finish_execution(
    inner: &Inner,
    model: &ModelEntry,
    output: ProviderOutput,
    timing: Timing,
    facts: Facts,
    plan: ExecPlan,
) -> ExecResult {
    check_output_length(&output, plan.max_tokens)?;
    model.note_success();
    model.counters.note_service(timing.call_time);
    model.tuner.record(outcome(&output, timing, facts.family));
    let execution = Execution {
        output,
        queue_time: timing.queue_time,
        prompt_tokens: facts.prompt_tokens,
        prompt_tokens_source: facts.prompt_tokens_source,
        cost: facts.cost,
        priority: timing.priority,
    };
    record_tokens(&inner.metrics, &execution);
    if let (Some(key), Some(cache)) = (plan.store, &inner.cache) {
        let cached = Arc::new(cached_result(&execution, plan.degraded));
        cache.insert(&mut std::iter::once((key, cached)));
    }
    Ok(Arc::new(execution))
}

impl Runtime {
    /// The response of one request that received `execution` (`deduplicated` when it joined
    /// an execution another request started).
    pub(crate) fn response(
        &self,
        request_id: &str,
        plan: Plan,
        execution: Arc<Execution>,
        deduplicated: bool,
        started: Instant,
    ) -> InferResponse {
        // Followers share the execution; the only holder can take the output without a copy.
        let (output, execution) = match Arc::try_unwrap(execution) {
            Ok(mut owned) => (
                std::mem::take(&mut owned.output),
                ExecutionFacts::of(&owned),
            ),
            Err(shared) => (shared.output.clone(), ExecutionFacts::of(&shared)),
        };
        let completion_chars = output.text.chars().count() as u64;
        let tokens = match (output.prompt_tokens, output.completion_tokens) {
            (None, None) if execution.prompt_tokens_source == "estimate" => None,
            (prompt, completion) => Some(CountTriple::new(
                prompt.unwrap_or(u64::from(execution.prompt_tokens)),
                completion.unwrap_or(0),
            )),
        };
        let scheduler = SchedulerDiagnostics {
            lane: plan.lane,
            prompt_tokens: execution.prompt_tokens,
            prompt_tokens_source: execution.prompt_tokens_source.into(),
            cost_tokens: execution.cost,
            priority: plan
                .admission
                .diagnostics(execution.priority, execution.queue_time.as_millis() as u64),
        };
        let prompt_chars = plan.prompt_chars;
        InferResponse {
            id: request_id.to_string(),
            model: plan.routing.model.clone(),
            output: output.text,
            usage: Usage {
                chars: CountTriple::new(prompt_chars, completion_chars),
                tokens,
            },
            cached: false,
            deduplicated,
            queue_time_ms: execution.queue_time.as_millis() as u64,
            latency_ms: started.elapsed().as_millis() as u64,
            degraded: plan.degraded,
            diagnostics: Box::new(Diagnostics {
                degradation: plan.degradation,
                prompt_compiler: plan.prompt_compiler,
                learned_output_cap: plan.learned_output_cap,
                adaptive_tuning: plan.adaptive_tuning,
                task_routing: plan.task_routing,
                scheduler: Some(scheduler),
                provider: Some(output.diagnostics),
                routing: Some(plan.routing),
                clamped: plan.clamped,
                detail: plan.detail,
            }),
            finish_reason: output.finish_reason,
            tool_calls: output.tool_calls,
            logprobs: output.logprobs,
            created_at: ray_core::time::now_rfc3339(),
        }
    }

    /// The response of a request the result cache answered.
    pub(crate) fn cached_response(
        &self,
        request_id: &str,
        plan: Plan,
        hit: &CachedResult,
        started: Instant,
    ) -> InferResponse {
        let prompt_chars = plan.prompt_chars;
        InferResponse {
            id: request_id.to_string(),
            model: plan.routing.model.clone(),
            output: hit.output.clone(),
            usage: Usage {
                chars: CountTriple::new(prompt_chars, hit.output.chars().count() as u64),
                tokens: hit.tokens,
            },
            cached: true,
            deduplicated: false,
            queue_time_ms: 0,
            latency_ms: started.elapsed().as_millis() as u64,
            degraded: hit.degraded,
            diagnostics: Box::new(Diagnostics {
                degradation: plan.degradation,
                prompt_compiler: plan.prompt_compiler,
                learned_output_cap: plan.learned_output_cap,
                adaptive_tuning: plan.adaptive_tuning,
                task_routing: plan.task_routing,
                scheduler: None,
                provider: Some(hit.provider.clone()),
                routing: Some(plan.routing),
                clamped: plan.clamped,
                detail: plan.detail,
            }),
            finish_reason: hit.finish_reason,
            // Requests with tools or logprobs are never cached.
            tool_calls: None,
            logprobs: None,
            created_at: ray_core::time::now_rfc3339(),
        }
    }

    /// Records how a request ended: duration, success or error counts, and the log line the
    /// log policy allows (see `log_policy.rs`).
    pub(crate) fn record_outcome(
        &self,
        request_id: &str,
        started: Instant,
        outcome: Result<&InferResponse, &RayError>,
    ) {
        let metrics = &self.inner.metrics;
        let elapsed = started.elapsed();
        metrics
            .last_latency_ms
            .store(elapsed.as_millis() as u64, Ordering::Relaxed);
        match outcome {
            Ok(response) => {
                // Answered requests only: a refusal answers in microseconds, and under an
                // overload would make the latency look best exactly when it is worst.
                metrics.request_duration.observe(elapsed);
                inc(&metrics.succeeded);
                if response.degraded {
                    inc(&metrics.degraded);
                }
                if response.deduplicated {
                    inc(&metrics.deduplicated);
                }
                if let Some(model) = self.live().registry.get(&response.model) {
                    model.counters.served.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(error) => metrics.errors.add(error.code()),
        }
        self.inner
            .metrics
            .logs
            .log_outcome(&self.live().config.telemetry, request_id, outcome);
    }

    /// `request_timeout`, naming the configured limit.
    pub(crate) fn request_timeout(&self) -> RayError {
        let live = self.live();
        let timeout = live.config.scheduler.request_timeout_ms;
        RayError::new(
            ErrorCode::RequestTimeout,
            format!("The request did not finish within scheduler.requestTimeoutMs ({timeout} ms)"),
        )
        .with_details(serde_json::json!({ "timeoutMs": timeout }))
    }
}

/// What an execution teaches the tuner: its completion length (the backend's count, else
/// chars / 4), queue time and generation speed (the backend's timing, else its token count
/// over the call's duration; unknown when the backend reports neither).
fn outcome(output: &ProviderOutput, timing: Timing, family: u64) -> Outcome {
    let completion_tokens = output
        .completion_tokens
        .unwrap_or_else(|| (output.text.chars().count() as u64).div_ceil(4));
    let timed = output
        .diagnostics
        .timings
        .as_ref()
        .and_then(|t| t.completion_tokens_per_second);
    let counted = output.completion_tokens.and_then(|tokens| {
        let seconds = timing.call_time.as_secs_f64();
        (tokens > 0 && seconds > 0.0).then(|| tokens as f64 / seconds)
    });
    Outcome {
        family,
        completion_tokens,
        queue_time: timing.queue_time,
        tokens_per_second: timed.or(counted),
    }
}

/// The scalar facts of an execution, copied out before its output is moved.
struct ExecutionFacts {
    queue_time: Duration,
    prompt_tokens: u32,
    prompt_tokens_source: &'static str,
    cost: u32,
    priority: ray_core::wire::Priority,
}

impl ExecutionFacts {
    fn of(execution: &Execution) -> ExecutionFacts {
        ExecutionFacts {
            queue_time: execution.queue_time,
            prompt_tokens: execution.prompt_tokens,
            prompt_tokens_source: execution.prompt_tokens_source,
            cost: execution.cost,
            priority: execution.priority,
        }
    }
}

/// Output far longer than `maxTokens` allows means a misbehaving backend.
fn check_output_length(output: &ProviderOutput, max_tokens: u32) -> Result<(), RayError> {
    let limit = (max_tokens as usize * 64).clamp(8_192, 262_144);
    let chars = output.text.chars().count();
    if chars > limit {
        return Err(RayError::new(
            ErrorCode::ProviderResultInvalid,
            format!(
                "The backend returned {chars} chars, more than the {limit} allowed for maxTokens {max_tokens}"
            ),
        ));
    }
    Ok(())
}

fn record_tokens(metrics: &RuntimeMetrics, execution: &Execution) {
    if let Some(prompt) = execution.output.prompt_tokens {
        metrics.prompt_tokens.fetch_add(prompt, Ordering::Relaxed);
    }
    if let Some(completion) = execution.output.completion_tokens {
        metrics
            .completion_tokens
            .fetch_add(completion, Ordering::Relaxed);
    }
}

fn cached_result(execution: &Execution, degraded: bool) -> CachedResult {
    let output = &execution.output;
    let tokens = match (output.prompt_tokens, output.completion_tokens) {
        (None, None) => None,
        (prompt, completion) => Some(CountTriple::new(
            prompt.unwrap_or(u64::from(execution.prompt_tokens)),
            completion.unwrap_or(0),
        )),
    };
    let diagnostics_bytes = serde_json::to_vec(&output.diagnostics)
        .map(|v| v.len())
        .unwrap_or(512) as u64;
    CachedResult {
        output: output.text.clone(),
        finish_reason: output.finish_reason,
        tokens,
        degraded,
        provider: output.diagnostics.clone(),
        weight: output.text.len() as u64 + diagnostics_bytes + 64,
        embedding: None,
    }
}
