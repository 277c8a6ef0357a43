//! The front of the pipeline, steps 3 to 7 up to admission, the same for whole answers and
//! streams: route the request to one model, plan it (defaults, templates, prompt compiler),
//! apply the degradation decision, look it up in the cache, refuse it when memory is critical
//! or the model cannot take work, prepare its prompt (the first phase of admission) and check
//! it fits the model's context and token budgets.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ray_core::config::{ModelRole, RouteKind};
use ray_core::wire::{InferRequest, InferResponse, ResponseFormatKind, RoutingDiagnostics};
use ray_core::{ErrorCode, RayError};
use ray_models::ProviderRequest;
use ray_scheduler::JobSpec;
use tokio::time::Instant;

use crate::context::RequestContext;
use crate::degrade::{decide, memory_critical};
use crate::outcome::{ExecPlan, Facts};
use crate::plan::{Plan, PlanOptions, plan};
use crate::pressure::PressureSnapshot;
use crate::registry::ModelEntry;
use crate::respond::provider_failure;
use crate::routing::{Choice, RouteFacts, choose};
use crate::runtime::Runtime;
use crate::telemetry::inc;

/// What [`Runtime::front`] decided.
pub(crate) enum Front {
    /// The result cache answered.
    Cached(Box<ray_core::wire::InferResponse>),
    /// The request is ready for admission: its plan (for the response) and what the execution
    /// needs. (Both boxed: they are large and move through several async layers.)
    Ready(Box<Plan>, Box<Ready>),
}

/// What the synchronous part of the front found: a cached answer, or the plan and its cache
/// key (when the result may be cached).
enum Looked {
    Cached(Box<ray_core::wire::InferResponse>),
    Miss(Box<Plan>, Option<u128>),
}

/// A request that passed everything before admission.
pub(crate) struct Ready {
    pub(crate) model: Arc<ModelEntry>,
    pub(crate) provider_request: ProviderRequest,
    pub(crate) spec: JobSpec,
    pub(crate) facts: Facts,
    pub(crate) exec: ExecPlan,
    pub(crate) dedupe_key: Option<u128>,
    /// When the request arrived.
    pub(crate) started: Instant,
    /// `scheduler.requestTimeoutMs` after arrival.
    pub(crate) deadline: Instant,
    /// A managed model's lease: it is loaded, and stays so while the lease lives.
    pub(crate) lease: Option<crate::lifecycle::Lease>,
}

/// The models a request may be served by: the chosen one, then its fallback chain.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) choice: Choice,
    pub(crate) chain: Vec<usize>,
}

impl Runtime {
    /// Step 3a: routes `request` to a model (by name, by rule or by default) and lists its
    /// fallback chain.
    pub(crate) fn route(
        &self,
        request: &InferRequest,
        context: &RequestContext,
    ) -> Result<Route, RayError> {
        let live = self.live();
        let registry = &live.registry;
        let default_max = registry.default_entry().config.max_output_tokens;
        let prompt_chars = request.input.as_deref().map_or(0, str::len)
            + request.system.as_deref().map_or(0, str::len)
            + request
                .history
                .as_deref()
                .map_or(0, |h| h.iter().map(|t| t.content.len()).sum());
        let json = request.response_format.as_ref().is_some_and(|f| {
            matches!(
                f.kind,
                ResponseFormatKind::JsonObject | ResponseFormatKind::JsonSchema
            )
        });
        let facts = RouteFacts {
            route: Some(context.route.unwrap_or(RouteKind::Infer)),
            model: request.model.clone(),
            task: request.task.clone().or_else(|| context.task.clone()),
            suggested_role: Some(suggested_role(request, json)),
            prompt_tokens: (prompt_chars as u64).div_ceil(4).min(u64::from(u32::MAX)) as u32,
            max_tokens: request.max_tokens.unwrap_or(default_max),
            tools: context.tools || request.tools.as_ref().is_some_and(|t| !t.is_empty()),
            json,
            api_key_id: context.api_key_id.clone(),
        };
        let choice = choose(&live.config.routing.rules, registry, &facts)?;
        let chosen = registry.at(choice.model);
        if chosen.config.role() == ModelRole::Embedding {
            return Err(RayError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "The model {:?} is an embedding model; send its requests to /v1/embeddings",
                    chosen.id
                ),
            )
            .with_details(serde_json::json!({ "param": "model", "model": chosen.id })));
        }
        chosen.counters.routed.fetch_add(1, Ordering::Relaxed);
        let chain = registry.fallback_chain(choice.model);
        Ok(Route { choice, chain })
    }

    /// Steps 3b to 7 for one model: plan, degrade, cache, refusals, preparation and the
    /// budget checks. Shared by whole answers and streams.
    pub(crate) async fn front(
        &self,
        request_id: &str,
        request: Box<InferRequest>,
        model: &Arc<ModelEntry>,
        routing: RoutingDiagnostics,
        options: PlanOptions,
        started: Instant,
    ) -> Result<Front, RayError> {
        let live = self.live();
        let config = &live.config;
        let timeout = Duration::from_millis(config.scheduler.request_timeout_ms);
        let deadline = started + timeout;
        let stream_total = options
            .stream
            .then(|| Duration::from_millis(config.streaming.total_timeout_ms));
        let (plan, cache_key) =
            match self.plan_and_look_up(request_id, request, model, routing, options, started)? {
                Looked::Cached(response) => return Ok(Front::Cached(response)),
                Looked::Miss(plan, cache_key) => (plan, cache_key),
            };

        let dedupe_key = config
            .scheduler
            .dedupe_inflight
            .then(|| plan.dedupe_key(cache_key))
            .flatten();
        // A managed model must be loaded (or load) before its backend prepares the prompt;
        // the lease keeps it loaded until the request's execution ends. A request that will
        // join an execution under way needs none: that execution's lease holds the model (if
        // the execution ends before it joins, it leads a new one and takes its lease then).
        let joins = || dedupe_key.is_some_and(|key| model.flights.is_running(&key));
        let lease = if model.lifecycle.is_none() || joins() {
            None
        } else {
            let total = stream_total.map(|total| (started + total, total));
            self.lease_within(model, deadline, total).await?
        };
        // Admission, phase 1: preparation (template, exact token count), bounded like the
        // queue.
        let mut plan = plan;
        let mut provider_request = plan.take_provider_request(request_id);
        let preparation = if model.provider.prepares_with_backend() {
            model
                .scheduler
                .prepare(deadline, model.provider.prepare(&provider_request))
                .await?
        } else {
            model.provider.prepare(&provider_request).await
        };
        let prepared = preparation.map_err(|error| provider_failure(self, model, error))?;
        let (prompt_tokens, prompt_tokens_source) = match prepared.as_ref().and_then(|p| p.tokens) {
            Some(tokens) => (tokens, "tokenizer"),
            None => (plan.estimated_prompt_tokens(), "estimate"),
        };
        provider_request.prepared = prepared;
        let cost = prompt_tokens.saturating_add(plan.max_tokens);
        let context_window = model.context_window();
        if cost > context_window {
            return Err(RayError::new(
                ErrorCode::RequestContextWindowExceeded,
                format!(
                    "Prompt ({prompt_tokens} tokens) plus maxTokens ({}) exceed the context window of {context_window} tokens of the model {:?}",
                    plan.max_tokens, model.id
                ),
            )
            .with_details(serde_json::json!({
                "promptTokens": prompt_tokens,
                "maxTokens": plan.max_tokens,
                "totalTokens": cost,
                "contextWindow": context_window,
                "model": model.id,
            })));
        }
        model.scheduler.check_budget(cost)?;
        let admission = plan.admission;
        let spec = JobSpec {
            priority: admission.priority,
            sender: admission.sender,
            weight: admission.weight,
            ..JobSpec::new(cost, plan.lane, Some(plan.family.affinity))
        };
        let family = plan.family.affinity;
        let exec = ExecPlan {
            max_tokens: plan.max_tokens,
            store: cache_key,
            degraded: plan.degraded,
        };
        Ok(Front::Ready(
            plan,
            Box::new(Ready {
                model: model.clone(),
                provider_request,
                spec,
                facts: Facts {
                    prompt_tokens,
                    prompt_tokens_source,
                    cost,
                    family,
                },
                exec,
                dedupe_key,
                started,
                deadline,
                lease,
            }),
        ))
    }

    /// Steps 3b to 6 up to preparation, without waiting: plan, degrade, the cache lookup and
    /// the refusals. (Kept out of [`Runtime::front`] so its locals do not live in that
    /// future.)
    fn plan_and_look_up(
        &self,
        request_id: &str,
        request: Box<InferRequest>,
        model: &Arc<ModelEntry>,
        routing: RoutingDiagnostics,
        options: PlanOptions,
        started: Instant,
    ) -> Result<Looked, RayError> {
        let inner = &self.inner;
        let live = self.live();
        let config = &live.config;
        // Normalise and degrade: one decision from the pressure now, applied by the plan.
        let pressure = self.pressure_snapshot(model);
        let critical = inner.pressure.refuses(&pressure.signals);
        let decision = decide(config, pressure, critical);
        let mut plan = plan(
            config,
            &model.config,
            *request,
            &decision,
            &model.tuner,
            options,
        )?;
        plan.routing = routing;
        inner.metrics.chars_saved.fetch_add(
            plan.prompt_compiler.chars_saved,
            std::sync::atomic::Ordering::Relaxed,
        );
        inner.metrics.count_degradation(&plan.degradation.reasons);

        // Cache: the model is part of the key.
        // Computed only when the result may be cached: with the cache off there is no key to
        // look up, store or dedupe on.
        let cacheable = plan.use_cache && inner.cache.is_some();
        let cache_key = cacheable.then(|| plan.cache_key(&model.id, config.cache.key_strategy));
        if let Some(cache_key) = cache_key
            && let Some(cache) = &inner.cache
        {
            let unclamped = plan.unclamped_cache_key(&model.id, config.cache.key_strategy);
            let hit = match unclamped {
                Some(unclamped) => cache.get_first(&[cache_key, unclamped]),
                None => cache.get_first(&[cache_key]),
            };
            match hit {
                Some(hit) => {
                    inc(&inner.metrics.cache_hits);
                    return Ok(Looked::Cached(Box::new(
                        self.cached_response(request_id, plan, &hit, started),
                    )));
                }
                None => inc(&inner.metrics.cache_misses),
            }
        }

        // The last resort: while memory pressure is critical, new work is refused before it
        // allocates anything, so the OOM killer never has to choose. The cache above still
        // answers and requests in progress finish.
        if !options.internal && decision.refuse {
            inc(&inner.metrics.memory_critical_refusals);
            return Err(memory_critical(config, &decision.pressure.signals.memory));
        }

        // A model in cooldown, or whose backend is known to be down or loading, is refused at
        // once, with Retry-After (its fallback may take the request). Warm-up requests pass.
        if !options.internal
            && let Some(refusal) = model.cooldown_refusal(Instant::now())
        {
            return Err(refusal.before_sending());
        }
        // A managed model's process is the lifecycle's business: the request waits for its
        // load, or is refused by the lifecycle with the reason.
        if !options.internal
            && model.lifecycle.is_none()
            && let Some(refusal) = model.health.refusal()
        {
            // A backend the probe found down counts towards cooldown like a failed call, so a
            // dead backend is seen as failing (state, count, until when), not only as down.
            let routing = &config.routing;
            model.note_failure(
                &refusal,
                routing.cooldown_after_failures,
                Duration::from_millis(routing.cooldown_ms),
            );
            return Err(refusal.before_sending());
        }

        Ok(Looked::Miss(Box::new(plan), cache_key))
    }

    /// The pressure one model's request sees: its queue, and the host's signals.
    pub(crate) fn pressure_snapshot(&self, model: &ModelEntry) -> PressureSnapshot {
        PressureSnapshot {
            queue_depth: model.scheduler.depth(),
            signals: self.inner.pressure.sample(),
        }
    }
}

/// The model role a request's prompt suggests, as the task-routing diagnostics see it: JSON
/// output or a classification family suggests a classifier, rewrites and e-mail drafts a
/// drafter, anything else a general model. `metadata.modelRole` overrides it.
fn suggested_role(request: &InferRequest, json: bool) -> ModelRole {
    let metadata = request.metadata.as_ref();
    if let Some(role) = metadata.and_then(|m| m.get("modelRole")) {
        match role.as_str() {
            "classifier" => return ModelRole::Classifier,
            "drafter" => return ModelRole::Drafter,
            "general" => return ModelRole::General,
            _ => {}
        }
    }
    let family = metadata
        .and_then(|m| m.get("promptFamily"))
        .map(|f| f.to_lowercase())
        .or_else(|| request.template_id.as_ref().map(|t| t.to_lowercase()))
        .unwrap_or_default();
    if json || family.contains("classif") {
        ModelRole::Classifier
    } else if family.contains("rewrite")
        || family.contains("email")
        || request
            .input
            .as_deref()
            .is_some_and(|i| i.to_ascii_lowercase().contains("email"))
    {
        ModelRole::Drafter
    } else {
        ModelRole::General
    }
}

impl Runtime {
    /// Runs one inference request: route, normalise, degrade, cache, dedupe, admit, provider.
    ///
    /// Dropping the returned future (the client left) cancels the request: its queue place,
    /// permit and backend call are released, unless identical requests still wait on the same
    /// execution.
    pub async fn infer(&self, request: InferRequest) -> Result<InferResponse, RayError> {
        self.infer_in(request, &RequestContext::default()).await
    }

    /// [`Runtime::infer`] for a request that arrived on `context`'s route (for the routing
    /// rules: route, task header, API key, tools).
    ///
    /// (A plain function returning the pipeline's future, with the request boxed: every layer
    /// of that future would otherwise hold its own copy of the request, and a server moves
    /// the future at least once per request.)
    pub fn infer_in<'a>(
        &'a self,
        request: InferRequest,
        context: &'a RequestContext,
    ) -> impl Future<Output = Result<InferResponse, RayError>> + 'a {
        self.infer_with(Box::new(request), context, PlanOptions::default(), true)
    }

    pub(crate) async fn infer_with(
        &self,
        request: Box<InferRequest>,
        context: &RequestContext,
        options: PlanOptions,
        counted: bool,
    ) -> Result<InferResponse, RayError> {
        let started = Instant::now();
        // One config and one set of models from here to the answer, whatever a reload does.
        let this = self.pinned();
        let metrics = &this.inner.metrics;
        if counted {
            inc(&metrics.requests);
        }
        let request_id = this.inner.ids.next("req_");
        let result = this
            .run(&request_id, request, context, options, started)
            .await;
        if counted {
            this.record_outcome(&request_id, started, result.as_ref());
        }
        result
    }
}
