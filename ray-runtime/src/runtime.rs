//! `Runtime`: the one object an embedding program holds. It runs a request through
//! normalise, degrade, cache, dedupe, admit and provider, in that order.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use ray_cache::{Cache, CacheBounds};
use ray_core::config::ValidConfig;
use ray_core::wire::{
    CountTriple, Diagnostics, FinishReason, InferRequest, InferResponse, ProviderDiagnostics,
    SchedulerDiagnostics, Usage,
};
use ray_core::{ErrorCode, RayError};
use ray_models::{Provider, ProviderOutput, ProviderRequest};
use ray_scheduler::{InflightDedupe, JobSpec, Scheduler, SchedulerSettings};
use tokio::time::Instant;

use crate::health::HealthState;
use crate::ids::IdSource;
use crate::jobs::{FileJobStore, JobQueue, JobStore};
use crate::metrics::MetricsSnapshot;
use crate::plan::{Plan, PlanOptions, plan};
use crate::prepare::PrepGate;
use crate::pressure::{PressureMonitor, PressureSnapshot, PressureSources, process_rss_bytes};
use crate::stream::StreamFlights;
use crate::telemetry::{Gauges, RuntimeMetrics, inc};
use crate::tuning::{Outcome, Tuner};

/// Why a runtime could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The provider could not be built from the config.
    #[error("cannot build the {kind} provider: {message}")]
    Provider {
        /// The adapter kind.
        kind: String,
        /// What went wrong.
        message: String,
    },
    /// The async job queue could not be opened (its store cannot be created or listed, or the
    /// callback signing secret is unusable). Bad records never cause this: they are set aside.
    #[error("cannot open the async job queue: {0}")]
    Jobs(String),
}

/// The result of one backend execution, shared by every request that joined it.
#[derive(Debug)]
pub(crate) struct Execution {
    pub(crate) output: ProviderOutput,
    pub(crate) queue_time: Duration,
    pub(crate) prompt_tokens: u32,
    pub(crate) prompt_tokens_source: &'static str,
    pub(crate) cost: u32,
}

pub(crate) type ExecResult = Result<Arc<Execution>, RayError>;

/// A stored successful result.
#[derive(Debug)]
pub(crate) struct CachedResult {
    pub(crate) output: String,
    pub(crate) finish_reason: Option<FinishReason>,
    pub(crate) tokens: Option<CountTriple>,
    pub(crate) degraded: bool,
    pub(crate) provider: ProviderDiagnostics,
    pub(crate) weight: u64,
    /// An embedding vector (the embeddings path, under its own keys); `None` for text.
    pub(crate) embedding: Option<Arc<[f32]>>,
}

/// One model and the machinery in front of it. The runtime holds these in a registry keyed by
/// model id, so several models per node can arrive without reshaping `Runtime`.
pub(crate) struct ModelEntry {
    pub(crate) id: String,
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) scheduler: Scheduler,
    pub(crate) dedupe: InflightDedupe<u128, ExecResult>,
    pub(crate) streams: StreamFlights,
    pub(crate) prep: PrepGate,
}

impl fmt::Debug for ModelEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelEntry")
            .field("id", &self.id)
            .field("provider", &self.provider.kind())
            .finish()
    }
}

pub(crate) struct Inner {
    pub(crate) config: ValidConfig,
    pub(crate) models: Vec<Arc<ModelEntry>>,
    pub(crate) cache: Option<Mutex<Cache<u128, Arc<CachedResult>>>>,
    pub(crate) metrics: RuntimeMetrics,
    pub(crate) pressure: PressureMonitor,
    pub(crate) tuner: Tuner,
    pub(crate) ids: IdSource,
    pub(crate) started: Instant,
    pub(crate) health: HealthState,
    pub(crate) jobs: Option<Arc<JobQueue>>,
    pub(crate) embeddings: crate::embed::EmbedMetrics,
}

/// The Ray runtime: admission, caching, dedupe, degradation, health and metrics in front of a
/// model backend, with no HTTP of its own.
///
/// Cloning is cheap and shares everything. Build it with [`Runtime::new`] or
/// [`Runtime::builder`], call [`Runtime::start`] once to run warm-up in the background, then
/// call [`Runtime::infer`] from any task.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("profile", &self.inner.config.profile)
            .field("models", &self.inner.models)
            .finish()
    }
}

/// Builds a [`Runtime`], optionally with a provider or a job store of your own.
pub struct RuntimeBuilder {
    config: ValidConfig,
    provider: Option<Arc<dyn Provider>>,
    job_store: Option<Arc<dyn JobStore>>,
    callback_secret: Option<Option<Vec<u8>>>,
    pressure_sources: PressureSources,
}

impl fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("profile", &self.config.profile)
            .field("custom_provider", &self.provider.is_some())
            .field("custom_job_store", &self.job_store.is_some())
            .field("pressure_sources", &self.pressure_sources)
            .finish()
    }
}

impl RuntimeBuilder {
    /// Serves the model with this provider instead of the one the config's adapter names.
    pub fn provider(mut self, provider: Arc<dyn Provider>) -> RuntimeBuilder {
        self.provider = Some(provider);
        self
    }

    /// Keeps job records in this store instead of the file store under
    /// `asyncQueue.storageDir` (only used when `asyncQueue.enabled` is true).
    pub fn job_store(mut self, store: Arc<dyn JobStore>) -> RuntimeBuilder {
        self.job_store = Some(store);
        self
    }

    /// Signs callbacks with this secret (`None`: unsigned) instead of the one in the variable
    /// named by `asyncQueue.callbackSigningSecretEnv`.
    pub fn callback_signing_secret(mut self, secret: Option<Vec<u8>>) -> RuntimeBuilder {
        self.callback_secret = Some(secret);
        self
    }

    /// Reads the pressure signals from `sources` instead of this machine's `/proc` and
    /// `/sys/fs/cgroup`: a fabricated directory in tests, or another view of the host.
    pub fn pressure_sources(mut self, sources: PressureSources) -> RuntimeBuilder {
        self.pressure_sources = sources;
        self
    }

    /// Builds the runtime. Needs no async context; call [`Runtime::start`] from one.
    ///
    /// With `asyncQueue.enabled`, this opens the job store and recovers it (records of
    /// interrupted attempts are rewritten, unusable entries set aside with a warning), so the
    /// queue is consistent before the first request arrives.
    pub fn build(self) -> Result<Runtime, RuntimeError> {
        let config = self.config;
        let jobs = if config.async_queue.enabled {
            Some(Arc::new(open_jobs(
                &config,
                self.job_store,
                self.callback_secret,
            )?))
        } else {
            None
        };
        let provider = match self.provider {
            Some(provider) => provider,
            None => provider_from_config(&config)?,
        };
        let scheduler = Scheduler::new(SchedulerSettings::from_config(&config.scheduler));
        let model = Arc::new(ModelEntry {
            id: config.model.id.clone(),
            provider,
            scheduler,
            dedupe: InflightDedupe::new(config.scheduler.max_dedupe_waiters as usize),
            streams: StreamFlights::default(),
            prep: PrepGate::new(config.scheduler.concurrency, config.scheduler.max_queue),
        });
        let cache = config.cache.enabled.then(|| {
            let bounds = CacheBounds {
                max_entries: config.cache.max_entries as usize,
                max_bytes: config.cache.max_bytes,
                ttl: (config.cache.ttl_ms > 0).then(|| Duration::from_millis(config.cache.ttl_ms)),
            };
            Mutex::new(Cache::<u128, Arc<CachedResult>>::new(
                bounds,
                |_key, value| 16 + value.weight,
            ))
        });
        let warm_pending = config.model.warm_on_boot;
        Ok(Runtime {
            inner: Arc::new(Inner {
                pressure: PressureMonitor::new(
                    config.graceful_degradation.clone(),
                    self.pressure_sources,
                ),
                tuner: Tuner::new(&config.adaptive_tuning),
                health: HealthState::new(warm_pending),
                config,
                models: vec![model],
                cache,
                metrics: RuntimeMetrics::default(),
                ids: IdSource::default(),
                started: Instant::now(),
                jobs,
                embeddings: Default::default(),
            }),
        })
    }
}

/// Opens the job queue: its store, the callback secret, recovery.
fn open_jobs(
    config: &ValidConfig,
    store: Option<Arc<dyn JobStore>>,
    secret: Option<Option<Vec<u8>>>,
) -> Result<JobQueue, RuntimeError> {
    let queue_config = &config.async_queue;
    let store: Arc<dyn JobStore> = match store {
        Some(store) => store,
        None => Arc::new(
            FileJobStore::open(&queue_config.storage_dir, queue_config.max_record_bytes)
                .map_err(|e| RuntimeError::Jobs(e.to_string()))?,
        ),
    };
    let secret = match secret {
        Some(secret) => secret,
        None => signing_secret_from_env(&queue_config.callback_signing_secret_env)?,
    };
    if let Some(secret) = &secret
        && secret.len() < MIN_SIGNING_SECRET_BYTES
    {
        return Err(RuntimeError::Jobs(format!(
            "the callback signing secret must be at least {MIN_SIGNING_SECRET_BYTES} bytes, got {}",
            secret.len()
        )));
    }
    let callbacks =
        crate::jobs::CallbackClient::new(queue_config, secret, Arc::new(crate::jobs::SystemLookup))
            .map_err(RuntimeError::Jobs)?;
    JobQueue::open(queue_config, store, callbacks).map_err(|e| RuntimeError::Jobs(e.to_string()))
}

/// Shortest callback signing secret accepted.
const MIN_SIGNING_SECRET_BYTES: usize = 16;

/// The secret in the variable `name`: unset or empty is `None` (callbacks go unsigned).
fn signing_secret_from_env(name: &str) -> Result<Option<Vec<u8>>, RuntimeError> {
    match std::env::var_os(name) {
        None => Ok(None),
        Some(value) if value.is_empty() => Ok(None),
        Some(value) => match value.into_string() {
            Ok(text) if text.len() >= MIN_SIGNING_SECRET_BYTES => Ok(Some(text.into_bytes())),
            Ok(text) => Err(RuntimeError::Jobs(format!(
                "{name} must hold at least {MIN_SIGNING_SECRET_BYTES} bytes, got {}",
                text.len()
            ))),
            Err(_) => Err(RuntimeError::Jobs(format!("{name} is not valid UTF-8"))),
        },
    }
}

fn provider_from_config(config: &ValidConfig) -> Result<Arc<dyn Provider>, RuntimeError> {
    ray_models::provider_from_config(config).map_err(|error| RuntimeError::Provider {
        kind: config.model.adapter.kind().into(),
        message: error.to_string(),
    })
}

impl Runtime {
    /// A runtime for a validated config, with the provider its adapter names.
    pub fn new(config: ValidConfig) -> Result<Runtime, RuntimeError> {
        Runtime::builder(config).build()
    }

    /// A builder, to plug in a provider of your own.
    pub fn builder(config: ValidConfig) -> RuntimeBuilder {
        RuntimeBuilder {
            config,
            provider: None,
            job_store: None,
            callback_secret: None,
            pressure_sources: PressureSources::system(),
        }
    }

    /// The effective config.
    pub fn config(&self) -> &ValidConfig {
        &self.inner.config
    }

    pub(crate) fn model(&self) -> &Arc<ModelEntry> {
        &self.inner.models[0]
    }

    /// The provider serving the default model.
    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.model().provider
    }

    /// Time since the runtime was built.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Runs one inference request: normalise, degrade, cache, dedupe, admit, provider.
    ///
    /// Dropping the returned future (the client left) cancels the request: its queue place,
    /// permit and backend call are released, unless identical requests still wait on the same
    /// execution.
    pub async fn infer(&self, request: InferRequest) -> Result<InferResponse, RayError> {
        self.infer_with(request, PlanOptions::default(), true).await
    }

    pub(crate) async fn infer_with(
        &self,
        request: InferRequest,
        options: PlanOptions,
        counted: bool,
    ) -> Result<InferResponse, RayError> {
        let started = Instant::now();
        let metrics = &self.inner.metrics;
        if counted {
            inc(&metrics.requests);
        }
        let request_id = self.inner.ids.next("req_");
        let result = self.run(&request_id, request, options, started).await;
        if counted {
            self.record_outcome(&request_id, started, result.as_ref());
        }
        result
    }

    /// Records how a request ended: duration, success or error counts, the slow-request and
    /// failure log lines.
    pub(crate) fn record_outcome(
        &self,
        request_id: &str,
        started: Instant,
        outcome: Result<&InferResponse, &RayError>,
    ) {
        let metrics = &self.inner.metrics;
        let elapsed = started.elapsed();
        metrics.request_duration.observe(elapsed);
        metrics.last_latency_ms.store(
            elapsed.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        match outcome {
            Ok(response) => {
                inc(&metrics.succeeded);
                if response.degraded {
                    inc(&metrics.degraded);
                }
                if response.deduplicated {
                    inc(&metrics.deduplicated);
                }
                let threshold = self.inner.config.telemetry.slow_request_threshold_ms;
                if threshold > 0 && response.latency_ms >= threshold {
                    tracing::warn!(
                        request_id = %response.id,
                        latency_ms = response.latency_ms,
                        queue_time_ms = response.queue_time_ms,
                        model_id = %response.model,
                        "slow inference request"
                    );
                }
            }
            Err(error) => {
                metrics.errors.add(error.code());
                if error.code().is_rejection() {
                    tracing::warn!(request_id = %request_id, code = %error.code(), error = error.message(), "inference rejected");
                } else {
                    tracing::error!(request_id = %request_id, code = %error.code(), error = error.message(), "inference failed");
                }
            }
        }
    }

    async fn run(
        &self,
        request_id: &str,
        request: InferRequest,
        options: PlanOptions,
        started: Instant,
    ) -> Result<InferResponse, RayError> {
        let ready = match self.front(request_id, request, options, started).await? {
            Front::Cached(response) => return Ok(response),
            Front::Ready(ready) => *ready,
        };
        let inner = &self.inner;
        let config = &inner.config;
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

        let execute = {
            let inner = self.inner.clone();
            let model = model.clone();
            let degraded = plan.degraded;
            let max_tokens = plan.max_tokens;
            move || -> BoxFuture<'static, ExecResult> {
                async move {
                    let mut provider_request = provider_request;
                    let permit = model.scheduler.admit(spec, deadline).await?;
                    let queue_time = permit.waited();
                    inner.metrics.queue_wait.observe(queue_time);
                    provider_request.slot_hint = Some(permit.slot());
                    provider_request.slot_warm = permit.warm();
                    inc(&inner.metrics.provider_calls);
                    let call_started = Instant::now();
                    let result = model.provider.infer(&provider_request).await;
                    let call_time = call_started.elapsed();
                    inner.metrics.provider_duration.observe(call_time);
                    drop(permit);
                    let output = result.map_err(|error| provider_failure(&inner, error))?;
                    finish_execution(
                        &inner,
                        output,
                        Timing {
                            queue_time,
                            call_time,
                        },
                        facts,
                        max_tokens,
                        store,
                        degraded,
                    )
                }
                .boxed()
            }
        };

        let shared = async {
            match dedupe_key {
                Some(key) => model.dedupe.run(key, execute).await.map_err(|full| {
                    RayError::new(
                        ErrorCode::QueueFull,
                        format!("The request queue is full: {full}"),
                    )
                    .with_details(serde_json::json!({
                        "phase": "dedupe",
                        "maxDedupeWaiters": config.scheduler.max_dedupe_waiters,
                    }))
                }),
                None => Ok((execute().await, false)),
            }
        };
        let (result, deduplicated) = match tokio::time::timeout_at(deadline, shared).await {
            Ok(outcome) => outcome?,
            Err(_elapsed) => return Err(self.request_timeout()),
        };
        let execution = result?;
        Ok(self.response(request_id, plan, execution, deduplicated, started))
    }

    /// `request_timeout`, naming the configured limit.
    pub(crate) fn request_timeout(&self) -> RayError {
        let timeout = self.inner.config.scheduler.request_timeout_ms;
        RayError::new(
            ErrorCode::RequestTimeout,
            format!("The request did not finish within scheduler.requestTimeoutMs ({timeout} ms)"),
        )
        .with_details(serde_json::json!({ "timeoutMs": timeout }))
    }

    /// Everything before admission: plan, cache, the backend gate, preparation, the budget
    /// checks. Shared by whole answers and streams.
    pub(crate) async fn front(
        &self,
        request_id: &str,
        request: InferRequest,
        options: PlanOptions,
        started: Instant,
    ) -> Result<Front, RayError> {
        let inner = &self.inner;
        let config = &inner.config;
        let model = self.model().clone();
        let timeout = Duration::from_millis(config.scheduler.request_timeout_ms);
        let deadline = started + timeout;
        let pressure = self.pressure_snapshot();
        let plan = plan(config, request, &pressure, &inner.tuner, options)?;
        inner.metrics.chars_saved.fetch_add(
            plan.prompt_compiler.chars_saved,
            std::sync::atomic::Ordering::Relaxed,
        );
        inner.metrics.count_degradation(&plan.degradation.reasons);

        // Cache.
        let cache_key = plan.cache_key(&model.id, config.cache.key_strategy);
        let cacheable = plan.use_cache && inner.cache.is_some();
        if cacheable && let Some(cache) = &inner.cache {
            let unclamped = plan.unclamped_cache_key(&model.id, config.cache.key_strategy);
            let hit = {
                let mut cache = cache.lock();
                let now = Instant::now().into_std();
                cache
                    .get(&cache_key, now)
                    .or_else(|| unclamped.and_then(|key| cache.get(&key, now)))
            };
            match hit {
                Some(hit) => {
                    inc(&inner.metrics.cache_hits);
                    return Ok(Front::Cached(
                        self.cached_response(request_id, plan, &hit, started),
                    ));
                }
                None => inc(&inner.metrics.cache_misses),
            }
        }

        // The last resort: while memory pressure is critical, new work is refused before it
        // allocates anything, so the OOM killer never has to choose. The cache above still
        // answers and requests in progress finish.
        if !options.internal && inner.pressure.refuses(&pressure.signals) {
            inc(&inner.metrics.memory_critical_refusals);
            return Err(memory_critical(config, &pressure.signals.memory));
        }

        // A backend known to be down or loading is refused at once, with Retry-After; the
        // cache above still answers meanwhile. Warm-up requests pass.
        if !options.internal
            && let Some(refusal) = inner.health.refusal()
        {
            return Err(refusal);
        }

        // Preparation (template, exact token count), bounded like admission.
        let mut provider_request = plan.provider_request(request_id);
        let preparation = if model.provider.prepares_with_backend() {
            model
                .prep
                .run(deadline, model.provider.prepare(&provider_request))
                .await?
        } else {
            model.provider.prepare(&provider_request).await
        };
        let prepared = preparation.map_err(|error| provider_failure(inner, error))?;
        let (prompt_tokens, prompt_tokens_source) = match prepared.as_ref().and_then(|p| p.tokens) {
            Some(tokens) => (tokens, "tokenizer"),
            None => (plan.estimated_prompt_tokens(), "estimate"),
        };
        provider_request.prepared = prepared;
        let cost = prompt_tokens.saturating_add(plan.max_tokens);
        let context_window = self.context_window();
        if cost > context_window {
            return Err(RayError::new(
                ErrorCode::RequestContextWindowExceeded,
                format!(
                    "Prompt ({prompt_tokens} tokens) plus maxTokens ({}) exceed the context window of {context_window} tokens",
                    plan.max_tokens
                ),
            )
            .with_details(serde_json::json!({
                "promptTokens": prompt_tokens,
                "maxTokens": plan.max_tokens,
                "totalTokens": cost,
                "contextWindow": context_window,
            })));
        }
        model.scheduler.check_budget(cost)?;
        let spec = JobSpec {
            cost,
            lane: plan.lane,
            affinity: Some(plan.family.affinity),
        };
        let dedupe_key = config
            .scheduler
            .dedupe_inflight
            .then(|| plan.dedupe_key(cache_key, cacheable))
            .flatten();
        let family = plan.family.affinity;
        Ok(Front::Ready(Box::new(Ready {
            plan,
            model,
            provider_request,
            spec,
            facts: Facts {
                prompt_tokens,
                prompt_tokens_source,
                cost,
                family,
            },
            store: cacheable.then_some(cache_key),
            dedupe_key,
            deadline,
        })))
    }

    /// The context window a request must fit: the backend's, else the launch profile's
    /// `ctxSize`, else `operational.preferredCtxSize`, else `model.contextWindow`.
    pub(crate) fn context_window(&self) -> u32 {
        let config = &self.inner.config;
        self.model()
            .provider
            .context_window()
            .or_else(|| config.model.adapter.launch_profile().map(|l| l.ctx_size))
            .or_else(|| {
                config
                    .model
                    .operational
                    .as_ref()
                    .and_then(|o| o.preferred_ctx_size)
            })
            .unwrap_or(config.model.context_window)
    }

    pub(crate) fn pressure_snapshot(&self) -> PressureSnapshot {
        PressureSnapshot {
            queue_depth: self.model().scheduler.snapshot().depth(),
            signals: self.inner.pressure.sample(),
        }
    }

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
        };
        let prompt_chars = plan.prompt_chars();
        InferResponse {
            id: request_id.to_string(),
            model: self.model().id.clone(),
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
            }),
            finish_reason: output.finish_reason,
            created_at: ray_core::time::now_rfc3339(),
        }
    }

    pub(crate) fn cached_response(
        &self,
        request_id: &str,
        plan: Plan,
        hit: &CachedResult,
        started: Instant,
    ) -> InferResponse {
        let prompt_chars = plan.prompt_chars();
        InferResponse {
            id: request_id.to_string(),
            model: self.model().id.clone(),
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
            }),
            finish_reason: hit.finish_reason,
            created_at: ray_core::time::now_rfc3339(),
        }
    }

    /// Every runtime metric at this moment.
    pub fn metrics(&self) -> MetricsSnapshot {
        let inner = &self.inner;
        let config = &inner.config;
        let model = self.model();
        let scheduler = model.scheduler.snapshot();
        let cache = inner.cache.as_ref().map(|cache| {
            (
                cache.lock().stats(),
                config.cache.max_entries,
                config.cache.max_bytes,
            )
        });
        let provider_status = self
            .inner
            .health
            .status_now(self.provider().has_health_probe())
            .gauge();
        let mut snapshot = inner.metrics.snapshot(&Gauges {
            scheduler: &scheduler,
            max_queue: config.scheduler.max_queue,
            concurrency: config.scheduler.concurrency,
            max_queued_tokens: config.scheduler.max_queued_tokens,
            max_inflight_tokens: config.scheduler.max_inflight_tokens,
            cache,
            dedupe_flights: model.dedupe.flights(),
            dedupe_followers: model.dedupe.followers(),
            dedupe_followers_total: model.dedupe.followers_total(),
            provider_status,
            process_rss_bytes: process_rss_bytes(),
            uptime_seconds: self.uptime().as_secs_f64(),
            pressure: &inner.pressure.sample(),
            degradation: &config.graceful_degradation,
            tuner: &inner.tuner,
            preparation: &model.prep.health(),
        });
        if let Some(jobs) = &inner.jobs {
            snapshot.extend(jobs.metrics());
        }
        snapshot.extend(inner.embeddings.snapshot());
        snapshot
    }
}

/// What [`Runtime::front`] decided.
pub(crate) enum Front {
    /// The result cache answered.
    Cached(InferResponse),
    /// The request is ready for admission.
    Ready(Box<Ready>),
}

/// A request that passed everything before admission.
pub(crate) struct Ready {
    pub(crate) plan: Plan,
    pub(crate) model: Arc<ModelEntry>,
    pub(crate) provider_request: ProviderRequest,
    pub(crate) spec: JobSpec,
    pub(crate) facts: Facts,
    /// The cache key to store the result under, when it is cacheable.
    pub(crate) store: Option<u128>,
    pub(crate) dedupe_key: Option<u128>,
    /// `scheduler.requestTimeoutMs` after arrival.
    pub(crate) deadline: Instant,
}

/// What admission charged a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    pub(crate) prompt_tokens: u32,
    pub(crate) prompt_tokens_source: &'static str,
    pub(crate) cost: u32,
    /// The prompt family, for the learned output caps.
    pub(crate) family: u64,
}

/// How long an execution waited for its permit and spent with the backend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) queue_time: Duration,
    pub(crate) call_time: Duration,
}

/// `503 memory_pressure_critical`, naming the signals that crossed their critical threshold.
pub(crate) fn memory_critical(
    config: &ValidConfig,
    memory: &ray_core::wire::MemoryHealth,
) -> RayError {
    let g = &config.graceful_degradation;
    RayError::new(
        ErrorCode::MemoryPressureCritical,
        format!(
            "Memory pressure is critical ({}); new work is refused until it eases",
            memory.critical_sources.join(", ")
        ),
    )
    .with_details(serde_json::json!({
        "criticalSources": memory.critical_sources,
        "cgroupMemoryWorkingSetRatio": memory.signals.cgroup_memory_working_set_ratio,
        "criticalCgroupMemoryRatio": g.critical_cgroup_memory_ratio,
        "memoryPsiFullAvg10": higher(
            memory.signals.linux_memory_psi_full_avg10,
            memory.signals.cgroup_memory_psi_full_avg10,
        ),
        "criticalMemoryPsiFullAvg10": g.critical_memory_psi_full_avg10,
    }))
}

fn higher(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// A provider error as a Ray error, counted, and telling health to look at the backend.
pub(crate) fn provider_failure(inner: &Inner, error: ray_models::ProviderError) -> RayError {
    let error = RayError::from(error);
    inner.metrics.provider_errors.add(error.code());
    inner.health.note_failure(error.code());
    error
}

/// Checks a backend's output, records its tokens, stores it in the cache.
pub(crate) fn finish_execution(
    inner: &Inner,
    output: ProviderOutput,
    timing: Timing,
    facts: Facts,
    max_tokens: u32,
    store: Option<u128>,
    degraded: bool,
) -> ExecResult {
    check_output_length(&output, max_tokens)?;
    inner.tuner.record(outcome(&output, timing, facts.family));
    let queue_time = timing.queue_time;
    let execution = Execution {
        output,
        queue_time,
        prompt_tokens: facts.prompt_tokens,
        prompt_tokens_source: facts.prompt_tokens_source,
        cost: facts.cost,
    };
    record_tokens(&inner.metrics, &execution);
    if let (Some(key), Some(cache)) = (store, &inner.cache) {
        let cached = Arc::new(cached_result(&execution, degraded));
        cache.lock().insert(key, cached, Instant::now().into_std());
    }
    Ok(Arc::new(execution))
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
}

impl ExecutionFacts {
    fn of(execution: &Execution) -> ExecutionFacts {
        ExecutionFacts {
            queue_time: execution.queue_time,
            prompt_tokens: execution.prompt_tokens,
            prompt_tokens_source: execution.prompt_tokens_source,
            cost: execution.cost,
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
    use std::sync::atomic::Ordering::Relaxed;
    if let Some(prompt) = execution.output.prompt_tokens {
        metrics.prompt_tokens.fetch_add(prompt, Relaxed);
    }
    if let Some(completion) = execution.output.completion_tokens {
        metrics.completion_tokens.fetch_add(completion, Relaxed);
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
