//! `/readyz` and `/health`: readiness and the full health snapshot.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::infer::{CpuSignals, MemorySignals};

/// Overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Everything is within bounds.
    Ok,
    /// Serving, but some pressure or a warming backend changes behaviour.
    Degraded,
    /// Cannot serve (the backend is down).
    Unavailable,
}

/// State of the backend as Ray sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderStatus {
    /// Not checked yet.
    Unknown,
    /// Serving.
    Ready,
    /// Loading the model or running warm-up requests.
    Warming,
    /// Serving with reduced capacity (for example no free slot).
    Degraded,
    /// Down or failing.
    Unavailable,
}

impl ProviderStatus {
    /// The `/readyz` reason for this status, if it is not `ready`/`unknown`.
    pub const fn reason(self) -> Option<&'static str> {
        match self {
            ProviderStatus::Unavailable => Some("provider_unavailable"),
            ProviderStatus::Warming => Some("provider_warming"),
            ProviderStatus::Degraded => Some("provider_degraded"),
            ProviderStatus::Ready | ProviderStatus::Unknown => None,
        }
    }

    /// The gauge value: 1 ready, 0.5 degraded or warming, 0 otherwise.
    pub const fn gauge(self) -> f64 {
        match self {
            ProviderStatus::Ready => 1.0,
            ProviderStatus::Degraded | ProviderStatus::Warming => 0.5,
            ProviderStatus::Unknown | ProviderStatus::Unavailable => 0.0,
        }
    }
}

/// Which kinds of pressure are present (the `pressure` object of `/readyz`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PressureFlags {
    /// Queue depth at or above `gracefulDegradation.queueDepthThreshold`.
    pub queue: bool,
    /// Requests waiting to prepare their prompt.
    pub preparation: bool,
    /// Memory pressure from any source.
    pub memory: bool,
    /// Memory pressure is critical and new work is refused (`memory_pressure_critical`);
    /// `/readyz` answers 503 meanwhile.
    #[serde(default)]
    pub memory_critical: bool,
    /// CPU pressure from any source.
    pub cpu: bool,
    /// The job store is nearly full or storage is low.
    pub async_queue: bool,
    /// The rate-limit key table is at least 90% full.
    pub rate_limit: bool,
    /// HTTP connections are at least 90% of the cap.
    pub gateway_http: bool,
}

impl PressureFlags {
    /// The `/readyz` reasons for the flags that are set, in the documented order.
    pub fn reasons(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            (self.queue, "queue_pressure"),
            (self.preparation, "preparation_pressure"),
            (self.memory, "memory_pressure"),
            (self.memory_critical, "memory_critical"),
            (self.cpu, "cpu_pressure"),
            (self.async_queue, "async_queue_pressure"),
            (self.rate_limit, "rate_limit_pressure"),
            (self.gateway_http, "gateway_http_pressure"),
        ]
        .into_iter()
        .filter_map(|(set, reason)| set.then_some(reason))
    }
}

/// The body of `GET /readyz`: public, minimal, no secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    /// `ok`, `degraded` or `unavailable`.
    pub status: HealthStatus,
    /// `telemetry.serviceName`.
    pub service: String,
    /// The backend's state.
    pub provider_status: ProviderStatus,
    /// Requests waiting.
    pub queue_depth: u32,
    /// Requests executing.
    pub in_flight: u32,
    /// Pressure flags.
    pub pressure: PressureFlags,
    /// Reason codes, provider first, then pressures in a fixed order.
    pub reasons: Vec<String>,
    /// The backend reports serving another model than `modelRef` (`backend_model_mismatch`
    /// follows the provider's reason).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backend_model_mismatch: bool,
}

impl Readiness {
    /// Readiness from its parts: reasons are the provider's reason (if any) then the pressure
    /// reasons in their fixed order; the status is `unavailable` when the provider is, else
    /// `degraded` when there is any reason, else `ok`.
    pub fn new(
        service: impl Into<String>,
        provider_status: ProviderStatus,
        queue_depth: u32,
        in_flight: u32,
        pressure: PressureFlags,
    ) -> Readiness {
        let mut readiness = Readiness {
            status: HealthStatus::Ok,
            service: service.into(),
            provider_status,
            queue_depth,
            in_flight,
            pressure,
            reasons: Vec::new(),
            backend_model_mismatch: false,
        };
        readiness.refresh();
        readiness
    }

    /// Recomputes `reasons` and `status` after `pressure` or `provider_status` changed.
    pub fn refresh(&mut self) {
        self.reasons = self
            .provider_status
            .reason()
            .into_iter()
            .chain(
                self.backend_model_mismatch
                    .then_some(ModelIdentity::MISMATCH),
            )
            .chain(self.pressure.reasons())
            .map(String::from)
            .collect();
        self.status = overall_status(self.provider_status, !self.reasons.is_empty());
    }

    /// Whether `/readyz` answers 200: the provider is neither warming nor unavailable, the
    /// gateway as a whole is not unavailable, and new work is not being refused for critical
    /// memory pressure.
    pub fn is_ready(&self) -> bool {
        self.status != HealthStatus::Unavailable
            && !self.pressure.memory_critical
            && !matches!(
                self.provider_status,
                ProviderStatus::Warming | ProviderStatus::Unavailable
            )
    }
}

/// The overall status: `unavailable` when the provider is, `degraded` when anything else is
/// wrong (a warming or degraded provider, any pressure), else `ok`.
pub fn overall_status(provider: ProviderStatus, any_reason: bool) -> HealthStatus {
    match provider {
        ProviderStatus::Unavailable => HealthStatus::Unavailable,
        _ if any_reason => HealthStatus::Degraded,
        _ => HealthStatus::Ok,
    }
}

/// The body of `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Overall status; the route answers 503 only for `unavailable`.
    pub status: HealthStatus,
    /// Time since the runtime started.
    pub uptime_ms: u64,
    /// Requests waiting.
    pub queue_depth: u32,
    /// Requests executing.
    pub in_flight: u32,
    /// Result cache entries.
    pub cache_entries: u32,
    /// The active profile.
    pub profile: String,
    /// `model.id`.
    pub model_id: String,
    /// The backend.
    pub provider: ProviderHealth,
    /// Queue, cache, memory and CPU.
    pub runtime: RuntimeHealth,
    /// The durable job queue, when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_queue: Option<super::jobs::AsyncQueueHealth>,
    /// The rate limiter, when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitHealth>,
    /// The HTTP front door (filled in by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayHealth>,
    /// The cluster connection (`cluster` in the config); absent on a node that runs alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterHealth>,
    /// Every configured model, in config order (one entry for a one-model config). New in
    /// this version.
    #[serde(default)]
    pub models: Vec<ModelHealth>,
    /// The managed models' memory budget (`lifecycle` in the config); each model's own
    /// lifecycle is in `models`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleHealth>,
}

/// The memory budget of the managed models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleHealth {
    /// Memory the managed models may use together, in MiB.
    #[serde(rename = "budgetMiB")]
    pub budget_mib: u64,
    /// Where the budget came from (`lifecycle.memoryBudgetMiB`, the cgroup limit or the
    /// machine's memory, less `lifecycle.reserveMiB`).
    pub budget_source: String,
    /// MiB the managed models hold now.
    #[serde(rename = "committedMiB")]
    pub committed_mib: u64,
    /// Managed models loaded now (`ready` or `draining`).
    pub loaded: u32,
    /// Requests waiting for a model to load.
    pub waiting: u32,
}

/// One model's state, as `/health` and `/v1/models` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelHealth {
    /// The model id.
    pub id: String,
    /// Its other names.
    pub aliases: Vec<String>,
    /// `general`, `classifier`, `drafter` or `embedding`.
    pub role: String,
    /// Whether it serves requests that name no model.
    pub default: bool,
    /// `ready`, `loading`, `degraded`, `unavailable`, `cooldown` or `unknown`; a managed model
    /// under the `lifecycle` section also `unloaded`, `draining`, `unloading` or `failed`.
    pub state: String,
    /// Why it is not ready, as a reason code, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The backend adapter kind.
    pub backend: String,
    /// The context window requests must fit, in tokens.
    pub context_window: u32,
    /// Largest output a request may ask for.
    pub max_output_tokens: u32,
    /// Requests waiting for this model.
    pub queue_depth: u32,
    /// Requests of this model executing.
    pub in_flight: u32,
    /// Its permits (`scheduler.concurrency`, or its own).
    pub concurrency: u32,
    /// Its queue bound.
    pub max_queue: u32,
    /// Consecutive backend failures.
    pub failures: u32,
    /// When in cooldown: milliseconds until it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_remaining_ms: Option<u64>,
    /// The last failure that counted towards cooldown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// Its fallback models, in order.
    pub fallback: Vec<String>,
    /// Its lifecycle, when the model is managed under the `lifecycle` section (loaded on
    /// demand within the memory budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<ModelLifecycle>,
}

/// A managed model's lifecycle: its state, the memory it holds and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelLifecycle {
    /// `unloaded`, `loading`, `ready`, `draining`, `unloading` or `failed`.
    pub state: String,
    /// Why it is `failed`, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// MiB it holds now (its footprint while loaded, else 0).
    #[serde(rename = "residentMiB")]
    pub resident_mib: u64,
    /// MiB it counts for against the budget when loaded.
    #[serde(rename = "footprintMiB")]
    pub footprint_mib: u64,
    /// Whether the footprint was measured from its process (else it is the estimate).
    pub footprint_measured: bool,
    /// Whether it is pinned (`resident: true`).
    pub pinned: bool,
    /// How long its last load took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_load_ms: Option<u64>,
    /// Loads started since the gateway started.
    pub loads: u64,
    /// Unloads started (idle, to make room, after a drain).
    pub unloads: u64,
    /// Unloads started to make room for another model.
    pub evictions: u64,
    /// Loads that failed and processes that died.
    pub failures: u64,
    /// Requests holding it (waiting for a permit or running).
    pub in_flight: u32,
    /// Requests waiting for it to load.
    pub waiting: u32,
}

/// The backend's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderHealth {
    /// Its state.
    pub status: ProviderStatus,
    /// When it was last checked (RFC 3339).
    pub checked_at: String,
    /// How long the last check took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// What the backend can do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_capabilities: Option<DetectedCapabilities>,
    /// Probe results, slot state, warm-up state and errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// Whether the backend serves the configured model, once it has said which it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_identity: Option<ModelIdentity>,
}

/// The configured model against the one the backend reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelIdentity {
    /// The adapter's `modelRef`.
    pub configured: String,
    /// What the backend reports (`llama-server` `/props`: its alias or model path).
    pub reported: String,
    /// Whether they name the same model (equal, or one is the other's file name or stem).
    pub matches: bool,
    /// `backend_model_mismatch` when they differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether readiness depends on the match (`model.adapter.requireBackendModelMatch`).
    pub required: bool,
}

impl ModelIdentity {
    /// The reason code of a mismatch.
    pub const MISMATCH: &'static str = "backend_model_mismatch";

    /// Compares the configured and the reported model.
    pub fn check(configured: &str, reported: &str, required: bool) -> ModelIdentity {
        let matches = model_names_match(configured, reported);
        ModelIdentity {
            configured: configured.to_string(),
            reported: reported.to_string(),
            matches,
            reason: (!matches).then(|| ModelIdentity::MISMATCH.to_string()),
            required,
        }
    }
}

/// Whether two model names name the same model: equal, or equal once each is reduced to its
/// file name and then to its stem without `.gguf` (`/models/qwen.gguf` names `qwen`).
pub fn model_names_match(a: &str, b: &str) -> bool {
    fn stem(name: &str) -> &str {
        let file = name.rsplit(['/', '\\']).next().unwrap_or(name);
        file.strip_suffix(".gguf").unwrap_or(file)
    }
    a == b || stem(a) == stem(b)
}

/// Whether a backend feature is there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    /// Present.
    Available,
    /// Absent.
    Unavailable,
    /// Not probed yet, or the probe failed.
    #[default]
    Unknown,
}

/// Capabilities detected on the backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DetectedCapabilities {
    /// The model name Ray sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_ref: Option<String>,
    /// The model the backend reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_model: Option<String>,
    /// The launch preset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_preset: Option<String>,
    /// `/apply-template` works.
    pub apply_template: Availability,
    /// The backend has a chat template.
    pub chat_template: Availability,
    /// JSON mode produced a JSON object.
    pub json_mode: Availability,
    /// `/tokenize` works, so admission uses exact token counts.
    pub tokenize: Availability,
    /// `/slots` is exposed.
    pub slots: Availability,
    /// `/metrics` is exposed.
    pub metrics: Availability,
    /// Token streaming works.
    pub streaming: Availability,
    /// The chat template can present tools and the backend parses tool calls
    /// (`llama-server` `/props` `chat_template_caps.supports_tools`, which needs `--jinja`).
    #[serde(default)]
    pub tools: Availability,
    /// Context window per slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u32>,
    /// Slots of the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_slots: Option<u32>,
    /// The prompt format Ray will use, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_format_preference: Option<String>,
    /// Probe errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Queue, preparation, cache, memory and CPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeHealth {
    /// The scheduler.
    pub queue: QueueHealth,
    /// Prompt preparation (llama.cpp).
    pub preparation: PreparationHealth,
    /// The result cache.
    pub cache: CacheHealth,
    /// Memory pressure.
    pub memory: MemoryHealth,
    /// CPU pressure.
    pub cpu: CpuHealth,
    /// Degradation decisions so far.
    #[serde(default)]
    pub degradation: DegradationHealth,
    /// Adaptive output reduction and learned per-family caps.
    #[serde(default)]
    pub adaptive: AdaptiveHealth,
}

/// What the degradation policy has done since start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DegradationHealth {
    /// `gracefulDegradation.enabled`.
    pub enabled: bool,
    /// `gracefulDegradation.refuseOnCriticalMemory`.
    pub refuse_on_critical_memory: bool,
    /// Requests changed, by reason (`prompt_length`, `queue_depth`, `memory_pressure`,
    /// `cpu_pressure`); one request can count under several.
    pub decisions: std::collections::BTreeMap<String, u64>,
    /// Requests refused with `memory_pressure_critical`.
    pub memory_critical_refusals: u64,
}

/// Adaptive output reduction (from recent queue time and generation speed) and learned
/// per-family output caps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdaptiveHealth {
    /// `adaptiveTuning.enabled`.
    pub enabled: bool,
    /// `adaptiveTuning.sampleSize`: completed executions remembered.
    pub sample_size: u32,
    /// Executions remembered now.
    pub samples: u32,
    /// Average queue time of those samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_queue_time_ms: Option<f64>,
    /// `adaptiveTuning.queueLatencyThresholdMs`.
    pub queue_latency_threshold_ms: u64,
    /// Average generation speed of the samples the backend timed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_completion_tokens_per_second: Option<f64>,
    /// `adaptiveTuning.minCompletionTokensPerSecond`.
    pub min_completion_tokens_per_second: f64,
    /// The reduction a request arriving now gets, 0 to `maxOutputReductionRatio`.
    pub reduction_ratio: f64,
    /// `adaptiveTuning.maxOutputReductionRatio`.
    pub max_output_reduction_ratio: f64,
    /// Why: `queue_latency`, `throughput` or `queue_latency+throughput`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Requests whose `maxTokens` was reduced so far.
    pub reductions: u64,
    /// `adaptiveTuning.learnedFamilyCapEnabled` (and `enabled`).
    pub learned_family_cap_enabled: bool,
    /// Prompt families with a completion history.
    pub learned_families: u32,
    /// The most families remembered; the least recently useful one is forgotten first.
    pub max_learned_families: u32,
    /// Requests whose `maxTokens` a learned cap lowered so far.
    pub learned_caps_applied: u64,
}

/// The scheduler's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueHealth {
    /// Depth at or above the degradation threshold.
    pub degraded: bool,
    /// Requests waiting.
    pub depth: u32,
    /// depth / maxQueue.
    pub depth_ratio: f64,
    /// Short-lane depth.
    pub short_depth: u32,
    /// Draft-lane depth.
    pub draft_depth: u32,
    /// `gracefulDegradation.queueDepthThreshold`.
    pub threshold: u32,
    /// `scheduler.maxQueue`.
    pub max_queue: u32,
    /// Requests executing.
    pub in_flight: u32,
    /// inFlight / concurrency.
    pub in_flight_ratio: f64,
    /// `scheduler.concurrency`.
    pub concurrency: u32,
    /// Tokens reserved by waiting requests.
    pub queued_tokens: u32,
    /// queuedTokens / maxQueuedTokens.
    pub queued_tokens_ratio: f64,
    /// `scheduler.maxQueuedTokens`.
    pub max_queued_tokens: u32,
    /// Tokens reserved by executing requests.
    pub in_flight_tokens: u32,
    /// inFlightTokens / maxInflightTokens.
    pub in_flight_tokens_ratio: f64,
    /// `scheduler.maxInflightTokens`.
    pub max_inflight_tokens: u32,
    /// How long the oldest waiting request has waited.
    pub oldest_wait_ms: u64,
    /// Identical requests currently sharing an execution.
    pub dedupe_followers: u32,
    /// Rejections since start, by reason code.
    pub rejections: std::collections::BTreeMap<String, u64>,
    /// Priority classes: reserved permits, the service-time and wait estimates, and counts by
    /// class.
    #[serde(default)]
    pub priority: super::PriorityHealth,
}

/// Prompt preparation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreparationHealth {
    /// Requests are waiting to prepare.
    pub degraded: bool,
    /// Preparations running.
    pub active: u32,
    /// Preparations allowed at once.
    pub concurrency: u32,
    /// active / concurrency.
    pub active_ratio: f64,
    /// Waiting to prepare.
    pub queued: u32,
    /// Waiters allowed.
    pub max_queue: u32,
    /// queued / maxQueue.
    pub queued_ratio: f64,
}

/// The result cache.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheHealth {
    /// `cache.enabled`.
    pub enabled: bool,
    /// Entries held.
    pub entries: u32,
    /// `cache.maxEntries`.
    pub max_entries: u32,
    /// entries / maxEntries.
    pub entries_ratio: f64,
    /// Bytes held.
    pub bytes: u64,
    /// `cache.maxBytes`.
    pub max_bytes: u64,
    /// bytes / maxBytes.
    pub bytes_ratio: f64,
    /// `cache.ttlMs`.
    pub ttl_ms: u64,
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Values stored.
    pub insertions: u64,
    /// Entries evicted to respect the bounds.
    pub evictions: u64,
    /// Entries dropped because their TTL passed.
    pub expirations: u64,
    /// Values refused because they alone exceed `cache.maxBytes`.
    pub dropped_oversized_entries: u64,
    /// Values that could not be measured (always 0; kept for compatibility).
    pub dropped_unmeasurable_entries: u64,
}

/// Memory pressure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryHealth {
    /// Any source reports pressure.
    pub degraded: bool,
    /// The sources that do.
    pub sources: Vec<String>,
    /// Memory pressure is critical: a critical threshold is crossed (see `criticalSources`).
    /// New work is refused meanwhile when `gracefulDegradation.refuseOnCriticalMemory` is on.
    #[serde(default)]
    pub critical: bool,
    /// The critical signals: `cgroup_working_set` and/or `linux_psi_full`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub critical_sources: Vec<String>,
    /// The cgroup hierarchy the signals come from (1 or 2), when one was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_version: Option<u8>,
    /// The gateway's cgroup (from `/proc/self/cgroup`), when one was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_path: Option<String>,
    /// The readings.
    #[serde(flatten)]
    pub signals: MemorySignals,
}

/// CPU pressure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuHealth {
    /// Any source reports pressure.
    pub degraded: bool,
    /// The sources that do: `cgroup_throttling`, `linux_psi`.
    #[serde(default)]
    pub sources: Vec<String>,
    /// The readings.
    #[serde(flatten)]
    pub signals: CpuSignals,
}

/// The rate limiter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitHealth {
    /// `rateLimit.enabled`.
    pub enabled: bool,
    /// The key table is at least `pressureThreshold` full.
    pub degraded: bool,
    /// Keys tracked.
    pub active_keys: u32,
    /// `rateLimit.maxKeys`.
    pub max_keys: u32,
    /// activeKeys / maxKeys.
    pub active_keys_ratio: f64,
    /// 0.9.
    pub pressure_threshold: f64,
    /// `rateLimit.windowMs`.
    pub window_ms: u64,
    /// `rateLimit.maxRequests`.
    pub max_requests: u32,
    /// `rateLimit.keyStrategy`.
    pub key_strategy: String,
    /// `rateLimit.trustProxyHeaders`.
    pub trust_proxy_headers: bool,
}

/// The HTTP front door.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayHealth {
    /// Connections and limits.
    pub http: GatewayHttpHealth,
}

/// Connections and HTTP limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayHttpHealth {
    /// Connections are at least `pressureThreshold` of the cap.
    pub degraded: bool,
    /// Open connections.
    pub sockets: u32,
    /// Connections with a request in progress.
    pub active_sockets: u32,
    /// Idle keep-alive connections.
    pub idle_sockets: u32,
    /// Requests in progress.
    pub active_requests: u32,
    /// Connection cap.
    pub max_connections: u32,
    /// sockets / maxConnections.
    pub connection_ratio: f64,
    /// 0.9.
    pub pressure_threshold: f64,
    /// `server.requestBodyLimitBytes`.
    pub request_body_limit_bytes: u64,
    /// Header bytes cap.
    pub max_header_bytes: u32,
    /// Header count cap.
    pub max_headers_count: u32,
    /// Requests per connection before it is closed.
    pub max_requests_per_socket: u32,
    /// Time allowed to send the headers.
    pub headers_timeout_ms: u64,
    /// Time allowed to send the whole request.
    pub request_timeout_ms: u64,
    /// Idle keep-alive timeout.
    pub keep_alive_timeout_ms: u64,
}

/// A node's view of its cluster: the NATS connection, the registry and its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterHealth {
    /// `ok` while NATS is reachable, this node's record is current and no peer uses another
    /// cluster key, else `degraded` (the node keeps serving its own models).
    pub status: String,
    /// This node's id.
    pub node_id: String,
    /// `connecting`, `connected` or `disconnected`.
    pub connection: String,
    /// `ok` while heartbeats are written, `unavailable` while they fail.
    pub registry: String,
    /// Live peers seen at the last heartbeat, while that is more recent than the registry's
    /// expiry; 0 after (NATS away that long: the peers' records would have expired, and no
    /// request is forwarded to them).
    pub peers: u32,
    /// Live peers skipped now because their circuit breaker is open (a peer that left the
    /// registry is not counted).
    pub open_breakers: u32,
    /// Milliseconds since this node's record was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_ago_ms: Option<u64>,
    /// Heartbeats that failed since start.
    pub heartbeat_failures: u64,
    /// Requests this node forwarded to a peer.
    pub forwarded_out: u64,
    /// Requests peers forwarded to this node.
    pub forwarded_in: u64,
    /// Why the registry is unavailable, while it is; else what is wrong with the cluster's
    /// setup, when something is (a `heartbeatMs` that differs between nodes, the nodes whose
    /// cluster key differs from this node's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests;
