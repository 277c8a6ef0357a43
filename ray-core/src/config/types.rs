//! The `RayConfig` tree: every field an operator can set, with the JSON names of the existing
//! Ray. Doc comments here become the descriptions of the generated JSON Schema.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::wire::DiagnosticsDetail;

mod adapter;
mod lifecycle;
mod routing;
mod secrets;

pub use adapter::*;
pub use routing::*;
pub use secrets::*;

/// The whole configuration of one Ray gateway.
///
/// A config file only needs the fields it changes: missing fields come from the selected
/// [`Profile`]. Unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Ray configuration")]
pub struct RayConfig {
    /// Optional JSON Schema reference for editors; ignored by Ray.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The profile whose defaults fill every field the file leaves out. When the file has no
    /// `profile`, the `RAY_PROFILE` environment variable decides, else `sub1b`. The JSON Schema
    /// cannot see the environment: it checks a file without `profile` against the `sub1b`
    /// defaults (the adapter kind, where `null` is allowed) whatever `RAY_PROFILE` says. Name
    /// the profile in the file to have the file checked against that profile.
    pub profile: Profile,
    /// The HTTP listener.
    pub server: ServerConfig,
    /// The model and the backend that serves it. With `models`, it is the template every entry
    /// of `models` takes its unset model fields from (family, quantization, context window,
    /// warm-up, output cap, operational hints), and it serves no requests of its own.
    pub model: ModelConfig,
    /// Several models on one node (at most 16): each entry has the fields of `model` plus
    /// `aliases`, `role`, `fallback` and per-model `scheduler` limits. Each entry needs an
    /// `id`; an entry's adapter without `kind` has the kind of `model.adapter`. Empty (the
    /// default): `model` is the only model. New in this version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelConfig>,
    /// The model (id or alias) for requests that name none and match no routing rule; default:
    /// the first entry of `models`, else `model.id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_model: Option<String>,
    /// Routing rules for requests that name no model or the virtual model `auto`, and the
    /// cooldown of failing backends.
    #[serde(default, skip_serializing_if = "RoutingConfig::is_default")]
    pub routing: RoutingConfig,
    /// Admission control: the bounded queue, token budgets, concurrency and deadlines.
    pub scheduler: SchedulerConfig,
    /// Request priority: classes with a bounded wait, permits kept for interactive requests,
    /// per-API-key ceilings and fairness weights. New in this version; files written for the
    /// existing Ray leave it out.
    #[serde(default)]
    pub priority: super::PriorityConfig,
    /// Deadlines of streamed responses (`"stream": true` and the OpenAI-compatible routes).
    /// New in this version; files written for the existing Ray leave it out.
    #[serde(default)]
    pub streaming: StreamingConfig,
    /// The durable async job queue (`/v1/jobs`).
    pub async_queue: AsyncQueueConfig,
    /// The in-memory result cache.
    pub cache: CacheConfig,
    /// Logs and metrics.
    pub telemetry: TelemetryConfig,
    /// What the gateway does under queue, memory and CPU pressure.
    pub graceful_degradation: GracefulDegradationConfig,
    /// Prompt normalisation before caching and scheduling.
    pub prompt_compiler: PromptCompilerConfig,
    /// Output caps learned from recent traffic.
    pub adaptive_tuning: AdaptiveTuningConfig,
    /// Bearer API keys.
    pub auth: AuthConfig,
    /// Fixed-window rate limiting.
    pub rate_limit: RateLimitConfig,
    /// Free-form labels (at most 64; keys up to 128 chars, values up to 4096). `modelRole` is
    /// read by the task-routing diagnostics.
    pub tags: BTreeMap<String, String>,
    /// Several nodes sharing a registry through NATS JetStream. Absent (the default): this node
    /// runs alone and opens no connection. New in this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<super::cluster::ClusterConfig>,
    /// Managed models loaded on demand within a memory budget. Absent (the default):
    /// supervised models run all the time. New in this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<super::lifecycle::LifecycleConfig>,
    /// Commands or URLs that receive events an operator should know about (a backend went
    /// down, memory went critical, a job failed for good). Empty (the default): none. New in
    /// this version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<super::hooks::HookConfig>,
    /// The host policy file the machine's owner controls (for example
    /// `/etc/ray/policy.json`): the loader clamps the config to it and says where it cut a
    /// value. `RAY_POLICY_FILE` wins over this field. A relative path resolves against the
    /// working directory. A file that is missing or not a valid policy is an error. Absent (the
    /// default): no policy, unless `RAY_POLICY_FILE` names one. New in this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_file: Option<String>,
    /// The host policy the config was clamped to (read from `policyFile` or `RAY_POLICY_FILE`);
    /// never read from or written to a config file.
    #[serde(skip)]
    #[schemars(skip)]
    pub policy: Option<super::policy::HostPolicy>,
}

/// A named set of defaults for one class of machine and model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Profile {
    /// Mock provider, boots instantly; for development and tests.
    #[serde(rename = "tiny")]
    Tiny,
    /// A sub-1B quantized model on llama.cpp, 2 vCPU / 4 GB x86 (CX23 class).
    #[serde(rename = "sub1b")]
    Sub1b,
    /// A sub-1B model on llama.cpp on an ARM CAX11-class box: one slot.
    #[serde(rename = "sub1b-cax11")]
    Sub1bCax11,
    /// A 1B-class model on llama.cpp, 4 GB box, single slot.
    #[serde(rename = "1b")]
    OneB,
    /// A 1B-class model on llama.cpp, 8 GB box, two slots.
    #[serde(rename = "1b-8gb")]
    OneB8gb,
    /// A 3B-class model behind an OpenAI-compatible backend.
    #[serde(rename = "vps")]
    Vps,
    /// A 7B-class model behind an OpenAI-compatible backend, roomier limits.
    #[serde(rename = "balanced")]
    Balanced,
}

impl Profile {
    /// Every profile, in the order of the reference table.
    pub const ALL: [Profile; 7] = [
        Profile::Tiny,
        Profile::Sub1b,
        Profile::Sub1bCax11,
        Profile::OneB,
        Profile::OneB8gb,
        Profile::Vps,
        Profile::Balanced,
    ];

    /// The profile used when neither the file nor `RAY_PROFILE` names one.
    pub const DEFAULT: Profile = Profile::Sub1b;

    /// The wire name, e.g. `"sub1b-cax11"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Profile::Tiny => "tiny",
            Profile::Sub1b => "sub1b",
            Profile::Sub1bCax11 => "sub1b-cax11",
            Profile::OneB => "1b",
            Profile::OneB8gb => "1b-8gb",
            Profile::Vps => "vps",
            Profile::Balanced => "balanced",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The HTTP listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind: an IP address or a host name, at most 253 chars. Keep `127.0.0.1`
    /// behind Caddy. Env: `RAY_HOST`.
    pub host: String,
    /// TCP port, 1 to 65535; `0` asks the OS for a free port (tests). Env: `RAY_PORT`.
    pub port: u16,
    /// Largest accepted request body in bytes, 1 to 1048576. Env: `RAY_REQUEST_BODY_LIMIT_BYTES`.
    pub request_body_limit_bytes: u64,
}

/// The model and its backend adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelConfig {
    /// The model id Ray reports in responses (at most 256 chars). Env: `RAY_MODEL_ID`.
    pub id: String,
    /// Model family, e.g. `qwen2.5` (at most 256 chars). Env: `RAY_MODEL_FAMILY`.
    pub family: String,
    /// Quantization of the weights. Env: `RAY_MODEL_QUANTIZATION`.
    pub quantization: Quantization,
    /// Context window in tokens, 1 to 32768. Env: `RAY_MODEL_CONTEXT_WINDOW`.
    pub context_window: u32,
    /// Warm the backend up in the background right after the listener is bound.
    /// Env: `RAY_MODEL_WARM_ON_BOOT`.
    pub warm_on_boot: bool,
    /// Largest `maxTokens` a request may ask for, 1 to 2048 and at most `contextWindow`; also the
    /// default. Env: `RAY_MODEL_MAX_OUTPUT_TOKENS`.
    pub max_output_tokens: u32,
    /// Operational hints about the model on this class of machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operational: Option<ModelOperational>,
    /// The backend adapter.
    pub adapter: AdapterConfig,
    /// Other names requests may use for this model (at most 16, each 1 to 256 chars; unique
    /// across every id and alias; `auto` is reserved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// What the model is for; `embedding` models serve `/v1/embeddings`. Default `general`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<ModelRole>,
    /// Models (ids or aliases) that take this model's requests, in order, when its backend is
    /// down, in cooldown or refuses the work (never when the request itself is bad). Each model
    /// is tried at most once per request, within the request's deadline; cycles are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<String>,
    /// Per-model scheduler limits; unset fields come from the top-level `scheduler`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<ModelSchedulerLimits>,
    /// Free-form labels of this model (at most 64).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Pinned: with a `lifecycle` section, a managed model loaded at start (when it fits) and
    /// never unloaded when idle or to make room for another.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resident: bool,
    /// With a `lifecycle` section: never unloaded sooner than this after its load, in ms (0 to
    /// 86400000; default `lifecycle.minResidentMs`). Stops load/unload thrashing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 86_400_000))]
    pub min_resident_ms: Option<u64>,
    /// With a `lifecycle` section: unloaded after this long without a request, in ms (1000 to
    /// 604800000; default `lifecycle.idleUnloadMs`, else never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1_000, max = 604_800_000))]
    pub idle_unload_ms: Option<u64>,
}

impl ModelConfig {
    /// The role, `general` when unset.
    pub fn role(&self) -> ModelRole {
        self.role.unwrap_or(ModelRole::General)
    }
}

/// Scheduler limits of one model; each unset field comes from the top-level `scheduler`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelSchedulerLimits {
    /// Requests of this model executing at once, 1 to 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Requests of this model waiting at most, 1 to 512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue: Option<u32>,
    /// Token budget of this model's waiting requests, 1 to 262144.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued_tokens: Option<u32>,
    /// Token budget of this model's executing requests, 1 to 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_inflight_tokens: Option<u32>,
}

/// Quantization of the model weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Quantization {
    /// 4-bit, legacy.
    #[serde(rename = "q4_0")]
    Q4_0,
    /// 4-bit k-quant, medium.
    #[serde(rename = "q4_k_m")]
    Q4KM,
    /// 5-bit k-quant, medium.
    #[serde(rename = "q5_k_m")]
    Q5KM,
    /// 8-bit.
    #[serde(rename = "q8_0")]
    Q8_0,
    /// Half precision.
    Fp16,
    /// Not known.
    Unknown,
}

/// Operational hints about a model on this class of machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelOperational {
    /// The prompt format expected to work best with this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_prompt_format: Option<PromptFormatPreference>,
    /// Whether the model follows JSON mode reliably.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports_json_mode: Option<bool>,
    /// Expected generation speed, 1 to 1000 tokens/s. Env: `RAY_MODEL_TOKENS_PER_SECOND_TARGET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second_target: Option<u32>,
    /// Memory class of the machine in MiB, 1 to 65536; the deploy memory budget.
    /// Env: `RAY_MODEL_MEMORY_CLASS_MIB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "memoryClassMiB")]
    pub memory_class_mib: Option<u32>,
    /// Preferred llama.cpp context size in tokens. Env: `RAY_MODEL_PREFERRED_CTX_SIZE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_ctx_size: Option<u32>,
    /// Whether the model ships a chat template llama.cpp knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template_known: Option<bool>,
}

/// How a prompt is presented to llama.cpp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PromptFormatPreference {
    /// The model's own chat template, applied by llama.cpp.
    NativeTemplate,
    /// OpenAI-style chat messages.
    OpenaiChat,
    /// A plain completion prompt with no chat markup.
    PlainCompletion,
}

/// Admission control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Requests executing at once (permits), 1 to 8. Env: `RAY_SCHEDULER_CONCURRENCY`.
    pub concurrency: u32,
    /// Requests waiting at most (both lanes), 1 to 512; more are refused with `queue_full`.
    /// Env: `RAY_SCHEDULER_MAX_QUEUE`.
    pub max_queue: u32,
    /// Token budget of waiting requests, 1 to 262144. Env: `RAY_SCHEDULER_MAX_QUEUED_TOKENS`.
    pub max_queued_tokens: u32,
    /// Token budget of executing requests, 1 to 65536. Env: `RAY_SCHEDULER_MAX_INFLIGHT_TOKENS`.
    pub max_inflight_tokens: u32,
    /// Deadline of one request (queue wait plus execution) in ms, 1 to 120000.
    /// Env: `RAY_SCHEDULER_REQUEST_TIMEOUT_MS`.
    pub request_timeout_ms: u64,
    /// Share one backend call between identical concurrent requests.
    /// Env: `RAY_SCHEDULER_DEDUPE_INFLIGHT`.
    pub dedupe_inflight: bool,
    /// How long a freed permit may wait for a better-matching request when others are queued,
    /// 0 to 1000 ms and less than `requestTimeoutMs`. Never delays a request when the queue is
    /// empty. Off (0) in every profile: `llama-server`'s own prompt cache (`--cache-ram`, on
    /// unless it is 0; every llama.cpp profile sets `launchProfile.cacheRamMiB`) already
    /// restores a client's prefix on any slot, and with it a held permit gave no more
    /// throughput and a p99 three times higher at 8 clients. Worth 10 ms only in front of a
    /// backend without such a cache (`cacheRamMiB: 0`), where it doubled throughput under
    /// contention at a higher p99 (see `docs/performance.md`).
    /// Env: `RAY_SCHEDULER_BATCH_WINDOW_MS`.
    pub batch_window_ms: u64,
    /// How many queued requests past the head are considered for slot affinity, 1 to `maxQueue`.
    /// Env: `RAY_SCHEDULER_AFFINITY_LOOKAHEAD`.
    pub affinity_lookahead: u32,
    /// Requests with `maxTokens` at or below this go to the short lane, 1 to
    /// `model.maxOutputTokens`. Env: `RAY_SCHEDULER_SHORT_JOB_MAX_TOKENS`.
    pub short_job_max_tokens: u32,
    /// Identical requests that may wait on one in-flight execution, 1 to 4096. A follower takes
    /// no queue place and no tokens, so this bounds memory rather than backend work; more
    /// followers are refused with `queue_full`. Env: `RAY_SCHEDULER_MAX_DEDUPE_WAITERS`.
    #[serde(default = "default_max_dedupe_waiters")]
    pub max_dedupe_waiters: u32,
    /// The most choices one OpenAI-compatible request may ask for (`n`), 1 to 16. Each choice
    /// is a generation of its own, admitted through the scheduler like any request, so a
    /// request costs `n` times its tokens; `n` above this is refused with 400.
    /// Env: `RAY_SCHEDULER_MAX_CHOICES`.
    #[serde(default = "default_max_choices")]
    pub max_choices: u32,
}

fn default_max_choices() -> u32 {
    4
}

fn default_max_dedupe_waiters() -> u32 {
    256
}

/// The durable async job queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AsyncQueueConfig {
    /// Serve `/v1/jobs`. Env: `RAY_ASYNC_QUEUE_ENABLED`.
    pub enabled: bool,
    /// Where job records live; relative paths resolve against the working directory.
    /// Env: `RAY_ASYNC_QUEUE_STORAGE_DIR`.
    pub storage_dir: String,
    /// Jobs retained at most (queued, running and finished), 1 to 2000.
    /// Env: `RAY_ASYNC_QUEUE_MAX_JOBS`.
    pub max_jobs: u32,
    /// Refuse new jobs when free space under `storageDir` drops below this, 1 to 1048576 MiB.
    /// Env: `RAY_ASYNC_QUEUE_MIN_FREE_STORAGE_MIB`.
    #[serde(rename = "minFreeStorageMiB")]
    pub min_free_storage_mib: u64,
    /// How long finished jobs are kept, 0 to 604800000 ms. Env: `RAY_ASYNC_QUEUE_COMPLETED_TTL_MS`.
    pub completed_ttl_ms: u64,
    /// Base delay of job and callback retries, 1 to 60000 ms. Env: `RAY_ASYNC_QUEUE_POLL_INTERVAL_MS`.
    pub poll_interval_ms: u64,
    /// Jobs executing at once, 1 to 8. Env: `RAY_ASYNC_QUEUE_DISPATCH_CONCURRENCY`.
    pub dispatch_concurrency: u32,
    /// Attempts per job, 1 to 100. Env: `RAY_ASYNC_QUEUE_MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// Timeout of one callback delivery, 1 to 30000 ms. Env: `RAY_ASYNC_QUEUE_CALLBACK_TIMEOUT_MS`.
    pub callback_timeout_ms: u64,
    /// Delivery attempts per callback, 1 to 100. Env: `RAY_ASYNC_QUEUE_MAX_CALLBACK_ATTEMPTS`.
    pub max_callback_attempts: u32,
    /// Allow callbacks to private, loopback and link-local addresses.
    /// Env: `RAY_ASYNC_QUEUE_CALLBACK_ALLOW_PRIVATE_NETWORK`.
    pub callback_allow_private_network: bool,
    /// Hosts callbacks may go to without the address check: exact names or `*.suffix`
    /// (at most 64). Env: `RAY_ASYNC_QUEUE_CALLBACK_ALLOWED_HOSTS` (comma list).
    pub callback_allowed_hosts: Vec<String>,
    /// The environment variable holding the secret that signs callbacks (HMAC-SHA256 in the
    /// `x-ray-signature` header, at least 16 bytes). Unset variable: callbacks go unsigned and
    /// the gateway warns at start. Env: `RAY_ASYNC_QUEUE_CALLBACK_SIGNING_SECRET_ENV`.
    #[serde(default = "default_callback_signing_secret_env")]
    pub callback_signing_secret_env: String,
    /// Largest job record (request, result and bookkeeping) in bytes, 4096 to 16777216. A
    /// submission whose record would be larger is refused with `async_job_record_too_large`; a
    /// result that would make it larger fails the job with that code.
    /// Env: `RAY_ASYNC_QUEUE_MAX_RECORD_BYTES`.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: u64,
}

fn default_callback_signing_secret_env() -> String {
    "RAY_CALLBACK_SIGNING_SECRET".into()
}

fn default_max_record_bytes() -> u64 {
    2 * 1024 * 1024
}

/// The result cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheConfig {
    /// Cache successful results. Env: `RAY_CACHE_ENABLED`.
    pub enabled: bool,
    /// Entries at most, 1 to 4096. Env: `RAY_CACHE_MAX_ENTRIES`.
    pub max_entries: u32,
    /// Bytes at most, 1 to 268435456; a single larger result is not stored.
    /// Env: `RAY_CACHE_MAX_BYTES`.
    pub max_bytes: u64,
    /// Time to live in ms, 0 to 86400000; 0 means entries leave only by the size bounds.
    /// Env: `RAY_CACHE_TTL_MS`.
    pub ttl_ms: u64,
    /// Which request fields make up the cache key. Env: `RAY_CACHE_KEY_STRATEGY`.
    pub key_strategy: CacheKeyStrategy,
}

/// Which request fields make up the cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CacheKeyStrategy {
    /// Model, input, system, metadata, seed, stop and response format.
    #[serde(rename = "input")]
    Input,
    /// Everything in `input` plus `maxTokens`, `temperature` and `topP`.
    #[serde(rename = "input+params")]
    InputParams,
}

/// Logs and metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The `service` field of every log line (at most 128 chars).
    /// Env: `RAY_TELEMETRY_SERVICE_NAME`.
    pub service_name: String,
    /// Lowest level logged. Env: `RAY_LOG_LEVEL` or `RAY_TELEMETRY_LOG_LEVEL`.
    pub log_level: LogLevel,
    /// Add the `recent` block to `/metrics?format=json`.
    /// Env: `RAY_TELEMETRY_INCLUDE_DEBUG_METRICS`.
    pub include_debug_metrics: bool,
    /// Requests slower than this (ms, at most 120000) log a warning; 0 disables.
    /// Env: `RAY_TELEMETRY_SLOW_REQUEST_THRESHOLD_MS`.
    pub slow_request_threshold_ms: u64,
    /// Which requests write an access line: `all`, `errors` (failures only), `sampled` (one
    /// successful request in `accessLogSampleEvery`, and failures) or `off`. Refusals never
    /// write one line each: they are counted in metrics and summarised at most once a second
    /// per code. Env: `RAY_ACCESS_LOG` or `RAY_TELEMETRY_ACCESS_LOG`.
    #[serde(default)]
    pub access_log: AccessLog,
    /// With `accessLog: sampled`, one successful request in this many writes its line, 1 to
    /// 1000000. Env: `RAY_TELEMETRY_ACCESS_LOG_SAMPLE_EVERY`.
    #[serde(default = "default_access_log_sample_every")]
    pub access_log_sample_every: u32,
    /// How much of `diagnostics` a `/v1/infer` response carries when the request does not
    /// say (`"diagnostics": true` or `false`, or the `X-Ray-Diagnostics` header): `summary`
    /// (what Ray decided: clamps, lane, admission, routing) or `full` (every reading behind
    /// it). Env: `RAY_TELEMETRY_RESPONSE_DIAGNOSTICS`.
    #[serde(default = "default_response_diagnostics")]
    pub response_diagnostics: DiagnosticsDetail,
}

fn default_response_diagnostics() -> DiagnosticsDetail {
    DiagnosticsDetail::Summary
}

/// The default of `telemetry.accessLogSampleEvery`.
pub const DEFAULT_ACCESS_LOG_SAMPLE_EVERY: u32 = 100;

fn default_access_log_sample_every() -> u32 {
    DEFAULT_ACCESS_LOG_SAMPLE_EVERY
}

/// Which requests write an access log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccessLog {
    /// One line per successful or failed request.
    All,
    /// Failed requests only; successful ones are in metrics.
    #[default]
    Errors,
    /// Failed requests, and one successful request in `accessLogSampleEvery`.
    Sampled,
    /// No access lines; failures still log the runtime's `inference failed` line.
    Off,
}

impl AccessLog {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            AccessLog::All => "all",
            AccessLog::Errors => "errors",
            AccessLog::Sampled => "sampled",
            AccessLog::Off => "off",
        }
    }
}

/// Log levels.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything.
    Debug,
    /// Normal operation.
    Info,
    /// Rejections and anomalies.
    Warn,
    /// Failures only.
    Error,
}

impl LogLevel {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Graceful degradation thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GracefulDegradationConfig {
    /// Apply the clamps below. Env: `RAY_GRACEFUL_DEGRADATION_ENABLED`.
    pub enabled: bool,
    /// Queue depth at which output is clamped to `degradeToMaxTokens`; below `scheduler.maxQueue`.
    /// Env: `RAY_DEGRADATION_QUEUE_DEPTH_THRESHOLD`.
    pub queue_depth_threshold: u32,
    /// Prompts longer than this (input plus system, chars, at most 65536) are trimmed.
    /// Env: `RAY_DEGRADATION_MAX_PROMPT_CHARS`.
    pub max_prompt_chars: u32,
    /// `maxTokens` under pressure, at most `model.maxOutputTokens`.
    /// Env: `RAY_DEGRADATION_MAX_TOKENS`.
    pub degrade_to_max_tokens: u32,
    /// Gateway RSS in MiB (at most 65536) counted as memory pressure.
    /// Env: `RAY_DEGRADATION_MEMORY_RSS_THRESHOLD_MIB`.
    #[serde(rename = "memoryRssThresholdMiB")]
    pub memory_rss_threshold_mib: u32,
    /// cgroup memory use / limit ratio counted as pressure, in (0, 1].
    /// Env: `RAY_DEGRADATION_MEMORY_CGROUP_PRESSURE_RATIO_THRESHOLD`.
    pub memory_cgroup_pressure_ratio_threshold: f64,
    /// Share of cgroup CPU periods throttled counted as pressure, in (0, 1].
    /// Env: `RAY_DEGRADATION_CPU_THROTTLED_RATIO_THRESHOLD`.
    pub cpu_throttled_ratio_threshold: f64,
    /// Memory PSI `some avg10` counted as pressure, in (0, 100].
    /// Env: `RAY_DEGRADATION_MEMORY_PSI_SOME_AVG10_THRESHOLD`.
    pub memory_psi_some_avg10_threshold: f64,
    /// Memory PSI `full avg10` counted as pressure, in (0, 100].
    /// Env: `RAY_DEGRADATION_MEMORY_PSI_FULL_AVG10_THRESHOLD`.
    pub memory_psi_full_avg10_threshold: f64,
    /// CPU PSI `some avg10` counted as pressure, in (0, 100].
    /// Env: `RAY_DEGRADATION_CPU_PSI_SOME_AVG10_THRESHOLD`.
    pub cpu_psi_some_avg10_threshold: f64,
    /// CPU PSI `full avg10` counted as pressure, in (0, 100].
    /// Env: `RAY_DEGRADATION_CPU_PSI_FULL_AVG10_THRESHOLD`.
    pub cpu_psi_full_avg10_threshold: f64,
    /// The last resort: while memory pressure is critical (either threshold below), refuse new
    /// work with `503 memory_pressure_critical` and `Retry-After`, so the kernel's OOM killer
    /// never has to choose. Requests in progress finish and cache hits are still answered.
    /// Env: `RAY_DEGRADATION_REFUSE_ON_CRITICAL_MEMORY`.
    pub refuse_on_critical_memory: bool,
    /// The gateway cgroup's working set (`memory.current` minus reclaimable `inactive_file`;
    /// cgroup v1: usage minus `total_inactive_file`) over its hard limit (`memory.max`; v1:
    /// `memory.limit_in_bytes`) at which memory pressure is critical, in (0, 1]. Has no effect
    /// without a cgroup memory limit. Env: `RAY_DEGRADATION_CRITICAL_CGROUP_MEMORY_RATIO`.
    pub critical_cgroup_memory_ratio: f64,
    /// Memory PSI `full avg10` (host or the gateway's cgroup, whichever is higher) at which
    /// memory pressure is critical, in (0, 100]: the share of the last ten seconds in which
    /// every runnable task waited for memory. Env:
    /// `RAY_DEGRADATION_CRITICAL_MEMORY_PSI_FULL_AVG10`.
    pub critical_memory_psi_full_avg10: f64,
}

/// Deadlines of streamed responses. Queue wait is bounded by `scheduler.requestTimeoutMs`
/// like every request's; these bound what comes after admission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// Longest wait, from the moment the request starts running, for its first token (1 to
    /// 600000 ms). Past it the request fails with `504 stream_first_token_timeout` before any
    /// byte of the response is sent. Env: `RAY_STREAM_FIRST_TOKEN_TIMEOUT_MS`.
    pub first_token_timeout_ms: u64,
    /// Longest gap between two tokens (1 to 600000 ms). Past it the stream ends with a
    /// `stream_idle_timeout` error event. Env: `RAY_STREAM_IDLE_TIMEOUT_MS`.
    pub idle_timeout_ms: u64,
    /// Longest stream, from the request's arrival to its last event (1000 to 3600000 ms). Past
    /// it the stream ends with a `stream_total_timeout` error event (or the request fails with
    /// that code if nothing was sent yet). Env: `RAY_STREAM_TOTAL_TIMEOUT_MS`.
    pub total_timeout_ms: u64,
}

impl Default for StreamingConfig {
    fn default() -> StreamingConfig {
        StreamingConfig {
            first_token_timeout_ms: 30_000,
            idle_timeout_ms: 15_000,
            total_timeout_ms: 300_000,
        }
    }
}

/// Prompt normalisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromptCompilerConfig {
    /// Normalise prompts. Env: `RAY_PROMPT_COMPILER_ENABLED`.
    pub enabled: bool,
    /// Trim lines, collapse runs of spaces and blank lines.
    /// Env: `RAY_PROMPT_COMPILER_COLLAPSE_WHITESPACE`.
    pub collapse_whitespace: bool,
    /// Drop repeated lines (case-insensitive). Env: `RAY_PROMPT_COMPILER_DEDUPE_REPEATED_LINES`.
    pub dedupe_repeated_lines: bool,
    /// Metadata keys whose first non-empty value names the prompt family (at most 16, each at
    /// most 128 chars). Env: `RAY_PROMPT_COMPILER_FAMILY_METADATA_KEYS` (comma list).
    pub family_metadata_keys: Vec<String>,
}

/// Adaptive output caps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdaptiveTuningConfig {
    /// Lower `maxTokens` when queue time or throughput degrade. Env: `RAY_ADAPTIVE_TUNING_ENABLED`.
    pub enabled: bool,
    /// Recent samples considered, 1 to 512. Env: `RAY_ADAPTIVE_SAMPLE_SIZE`.
    pub sample_size: u32,
    /// Average queue time (ms, 1 to 120000) above which output is reduced.
    /// Env: `RAY_ADAPTIVE_QUEUE_LATENCY_THRESHOLD_MS`.
    pub queue_latency_threshold_ms: u64,
    /// Average generation speed (tokens/s, at most 1000) below which output is reduced.
    /// Env: `RAY_ADAPTIVE_MIN_COMPLETION_TOKENS_PER_SECOND`.
    pub min_completion_tokens_per_second: f64,
    /// Largest reduction of `maxTokens`, 0 to 1. Env: `RAY_ADAPTIVE_MAX_OUTPUT_REDUCTION_RATIO`.
    pub max_output_reduction_ratio: f64,
    /// Reductions never go below this many tokens (at most `model.maxOutputTokens`).
    /// Env: `RAY_ADAPTIVE_MIN_OUTPUT_TOKENS`.
    pub min_output_tokens: u32,
    /// Learn per-family output caps from completed requests.
    /// Env: `RAY_ADAPTIVE_LEARNED_FAMILY_CAP_ENABLED`.
    pub learned_family_cap_enabled: bool,
    /// Completions remembered per family, 1 to 1024. Env: `RAY_ADAPTIVE_FAMILY_HISTORY_SIZE`.
    pub family_history_size: u32,
    /// Samples a family needs before its cap applies, 1 to `familyHistorySize`.
    /// Env: `RAY_ADAPTIVE_LEARNED_CAP_MIN_SAMPLES`.
    pub learned_cap_min_samples: u32,
    /// Percentile of completion length used for draft-lane caps, 0 to 1.
    /// Env: `RAY_ADAPTIVE_DRAFT_PERCENTILE`.
    pub draft_percentile: f64,
    /// Percentile of completion length used for short-lane caps, 0 to 1.
    /// Env: `RAY_ADAPTIVE_SHORT_PERCENTILE`.
    pub short_percentile: f64,
    /// Tokens added to a learned cap, at most `model.maxOutputTokens`.
    /// Env: `RAY_ADAPTIVE_LEARNED_CAP_HEADROOM_TOKENS`.
    pub learned_cap_headroom_tokens: u32,
}

/// Bearer API keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    /// Require `Authorization: Bearer <key>` on protected routes. Env: `RAY_AUTH_ENABLED`.
    pub enabled: bool,
    /// Name of the env variable holding the keys (comma or newline separated).
    /// Env: `RAY_AUTH_API_KEY_ENV`.
    pub api_key_env: String,
}

/// Fixed-window rate limiting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Limit `/v1/infer` and `/v1/jobs`. Env: `RAY_RATE_LIMIT_ENABLED`.
    pub enabled: bool,
    /// Window length, 1 to 3600000 ms. Env: `RAY_RATE_LIMIT_WINDOW_MS`.
    pub window_ms: u64,
    /// Requests per key per window, 1 to 10000. Env: `RAY_RATE_LIMIT_MAX_REQUESTS`.
    pub max_requests: u32,
    /// Keys tracked at most, 1 to 16384. Env: `RAY_RATE_LIMIT_MAX_KEYS`.
    pub max_keys: u32,
    /// What identifies a client. Env: `RAY_RATE_LIMIT_KEY_STRATEGY`.
    pub key_strategy: RateLimitKeyStrategy,
    /// Believe `X-Forwarded-For` from private and loopback peers (a reverse proxy).
    /// Env: `RAY_RATE_LIMIT_TRUST_PROXY_HEADERS`.
    pub trust_proxy_headers: bool,
}

/// What identifies a client for rate limiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RateLimitKeyStrategy {
    /// The client IP.
    #[serde(rename = "ip")]
    Ip,
    /// The API key (falls back to the IP when no key is sent).
    #[serde(rename = "api-key")]
    ApiKey,
    /// The API key and the IP together.
    #[serde(rename = "ip+api-key")]
    IpApiKey,
}

impl RayConfig {
    /// The models this gateway serves: `models`, or `model` alone when `models` is empty.
    pub fn model_entries(&self) -> &[ModelConfig] {
        if self.models.is_empty() {
            std::slice::from_ref(&self.model)
        } else {
            &self.models
        }
    }

    /// The model `name` stands for (its id or one of its aliases), among
    /// [`RayConfig::model_entries`].
    pub fn find_model(&self, name: &str) -> Option<&ModelConfig> {
        self.model_entries()
            .iter()
            .find(|m| m.id == name || m.aliases.iter().any(|a| a == name))
    }

    /// Every id and alias of [`RayConfig::model_entries`], in config order.
    pub fn model_names(&self) -> Vec<&str> {
        self.model_entries()
            .iter()
            .flat_map(|m| {
                std::iter::once(m.id.as_str()).chain(m.aliases.iter().map(String::as_str))
            })
            .collect()
    }

    /// The id of the default model: `defaultModel` resolved through ids and aliases, else the
    /// first model.
    pub fn default_model_id(&self) -> &str {
        self.default_model
            .as_deref()
            .and_then(|name| self.find_model(name))
            .unwrap_or(&self.model_entries()[0])
            .id
            .as_str()
    }
}
