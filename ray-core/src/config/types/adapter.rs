//! `model.adapter`: the backend adapter (mock, OpenAI-compatible, llama.cpp) and how
//! `llama-server` is launched.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The backend adapter, selected by `kind`.
// The config is built once per process; boxing the large variant would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind")]
pub enum AdapterConfig {
    /// A built-in deterministic provider that needs no model.
    #[serde(rename = "mock")]
    Mock(MockAdapterConfig),
    /// Any server speaking the OpenAI chat completions API.
    #[serde(rename = "openai-compatible")]
    OpenAiCompatible(OpenAiAdapterConfig),
    /// llama.cpp's `llama-server`: the OpenAI-compatible API plus its native endpoints.
    #[serde(rename = "llama.cpp")]
    LlamaCpp(LlamaCppAdapterConfig),
}

impl AdapterConfig {
    /// The `kind` as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            AdapterConfig::Mock(_) => "mock",
            AdapterConfig::OpenAiCompatible(_) => "openai-compatible",
            AdapterConfig::LlamaCpp(_) => "llama.cpp",
        }
    }

    /// The HTTP settings shared by the OpenAI-compatible and llama.cpp adapters.
    pub fn http(&self) -> Option<HttpAdapterView<'_>> {
        match self {
            AdapterConfig::Mock(_) => None,
            AdapterConfig::OpenAiCompatible(a) => Some(HttpAdapterView {
                base_url: &a.base_url,
                model_ref: &a.model_ref,
                api_key_env: a.api_key_env.as_deref(),
                timeout_ms: a.timeout_ms,
                headers: a.headers.as_ref(),
                warmup_requests: a.warmup_requests.as_deref(),
                require_backend_model_match: a.require_backend_model_match.unwrap_or(false),
            }),
            AdapterConfig::LlamaCpp(a) => Some(HttpAdapterView {
                base_url: &a.base_url,
                model_ref: &a.model_ref,
                api_key_env: a.api_key_env.as_deref(),
                timeout_ms: a.timeout_ms,
                headers: a.headers.as_ref(),
                warmup_requests: a.warmup_requests.as_deref(),
                require_backend_model_match: a.require_backend_model_match.unwrap_or(false),
            }),
        }
    }

    /// The llama.cpp launch profile, if the adapter is llama.cpp and has one.
    pub fn launch_profile(&self) -> Option<&LaunchProfile> {
        match self {
            AdapterConfig::LlamaCpp(a) => a.launch_profile.as_ref(),
            AdapterConfig::Mock(_) | AdapterConfig::OpenAiCompatible(_) => None,
        }
    }
}

/// A borrowed view of the settings every HTTP adapter has.
#[derive(Debug, Clone, Copy)]
pub struct HttpAdapterView<'a> {
    /// Backend base URL.
    pub base_url: &'a str,
    /// Model name sent to the backend.
    pub model_ref: &'a str,
    /// Name of the env variable holding the backend's API key.
    pub api_key_env: Option<&'a str>,
    /// Per-call timeout.
    pub timeout_ms: u64,
    /// Extra headers.
    pub headers: Option<&'a BTreeMap<String, String>>,
    /// Warm-up requests.
    pub warmup_requests: Option<&'a [WarmupRequest]>,
    /// Readiness depends on the backend serving `model_ref`.
    pub require_backend_model_match: bool,
}

/// The built-in mock provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MockAdapterConfig {
    /// Simulated generation time per request in milliseconds, 0 to 120000; the mock answers
    /// within a fraction of a millisecond of it (a stream spreads it over the words).
    pub latency_ms: u64,
    /// A string mixed into the output so different mocks are distinguishable (at most 512 chars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
}

/// An OpenAI-compatible backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenAiAdapterConfig {
    /// Backend base URL, e.g. `http://127.0.0.1:8081` (absolute http/https, no credentials,
    /// query or fragment, at most 2048 chars). Env: `RAY_MODEL_BASE_URL`.
    pub base_url: String,
    /// Model name sent to the backend (at most 256 chars). Env: `RAY_MODEL_REF`.
    pub model_ref: String,
    /// Name of the env variable holding the backend's API key, sent as a Bearer token.
    /// Env: `RAY_MODEL_API_KEY_ENV`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Timeout of one backend call in milliseconds, 1 to 120000. Env: `RAY_MODEL_TIMEOUT_MS`.
    pub timeout_ms: u64,
    /// Extra headers sent to the backend (at most 64; hop-by-hop names are refused). Values are
    /// redacted in `/v1/config` and `print-config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Requests run at warm-up (at most 8); default a single `{"input":"ping"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_requests: Option<Vec<WarmupRequest>>,
    /// Make readiness depend on the backend serving `modelRef`: when the backend reports
    /// another model (`llama-server` `/props`: its alias, else its model file), the provider
    /// counts as unavailable and `/readyz` answers 503 with `backend_model_mismatch`. Default
    /// false: `/health` and `/readyz` only report the mismatch (status `degraded`).
    /// Env: `RAY_MODEL_REQUIRE_BACKEND_MODEL_MATCH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_backend_model_match: Option<bool>,
}

/// llama.cpp's `llama-server`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LlamaCppAdapterConfig {
    /// Backend base URL, e.g. `http://127.0.0.1:8081`. With a launch profile it must be plain
    /// http on loopback at the launch profile's port. Env: `RAY_MODEL_BASE_URL` or
    /// `RAY_LLAMA_CPP_BASE_URL`.
    pub base_url: String,
    /// Model name sent to the backend (at most 256 chars). Env: `RAY_MODEL_REF` or
    /// `RAY_LLAMA_CPP_MODEL_REF`.
    pub model_ref: String,
    /// Name of the env variable holding the backend's API key (`llama-server --api-key`).
    /// Env: `RAY_MODEL_API_KEY_ENV`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Timeout of one backend call in milliseconds, 1 to 120000. Env: `RAY_MODEL_TIMEOUT_MS`.
    pub timeout_ms: u64,
    /// Extra headers sent to the backend (at most 64; hop-by-hop names are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Requests run at warm-up (at most 8); default a single `{"input":"ping"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_requests: Option<Vec<WarmupRequest>>,
    /// Make readiness depend on the backend serving `modelRef`: when the backend reports
    /// another model (`llama-server` `/props`: its alias, else its model file), the provider
    /// counts as unavailable and `/readyz` answers 503 with `backend_model_mismatch`. Default
    /// false: `/health` and `/readyz` only report the mismatch (status `degraded`).
    /// Env: `RAY_MODEL_REQUIRE_BACKEND_MODEL_MATCH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_backend_model_match: Option<bool>,
    /// Ask llama.cpp to reuse the slot's prompt cache (`cache_prompt`); default true.
    /// Env: `RAY_LLAMA_CPP_CACHE_PROMPT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_prompt: Option<bool>,
    /// Pin every request to this slot id (0 or more) instead of routing by prompt family.
    /// Env: `RAY_LLAMA_CPP_SLOT_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_id: Option<u32>,
    /// How long a `/slots` snapshot is reused, 1 to 120000 ms.
    /// Env: `RAY_LLAMA_CPP_SLOT_STATE_TTL_MS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_state_ttl_ms: Option<u64>,
    /// Timeout of a `/slots` snapshot, 1 ms to `timeoutMs`.
    /// Env: `RAY_LLAMA_CPP_SLOT_SNAPSHOT_TIMEOUT_MS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_snapshot_timeout_ms: Option<u64>,
    /// Entries of the prompt scaffold cache, 1 to 4096.
    /// Env: `RAY_LLAMA_CPP_PROMPT_SCAFFOLD_CACHE_ENTRIES`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_scaffold_cache_entries: Option<u32>,
    /// How `llama-server` is launched on this box (systemd unit, doctor, supervised mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_profile: Option<LaunchProfile>,
}

/// A request run during warm-up. Text fields are limited to 8192 chars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmupRequest {
    /// Prompt text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// System prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Output tokens, at most `model.maxOutputTokens`; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Stop strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// Response format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<crate::wire::ResponseFormat>,
    /// A built-in template id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// Template variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_variables: Option<BTreeMap<String, crate::wire::TemplateValue>>,
}

/// How `llama-server` is launched. Every field maps to a `llama-server` flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LaunchProfile {
    /// The named preset these values started from.
    pub preset: LaunchPreset,
    /// Path of the `llama-server` binary. Env: `RAY_LLAMA_CPP_BINARY_PATH`.
    pub binary_path: String,
    /// Path of the GGUF model. Env: `RAY_MODEL_PATH` or `RAY_LLAMA_CPP_MODEL_PATH`.
    pub model_path: String,
    /// Bind address of `llama-server`; must be loopback. Env: `RAY_LLAMA_CPP_HOST`.
    pub host: String,
    /// Port of `llama-server`. `0` for a managed model (`supervise: true` under a `lifecycle`
    /// section): Ray picks a free port at each load and sends requests there (the port of
    /// `baseUrl` is then not used). Env: `RAY_LLAMA_CPP_PORT`.
    pub port: u16,
    /// Model alias `llama-server` reports (`--alias`). Env: `RAY_LLAMA_CPP_ALIAS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Total context size across slots (`--ctx-size`), at most 32768 and `model.contextWindow`.
    /// Env: `RAY_LLAMA_CPP_CTX_SIZE`.
    pub ctx_size: u32,
    /// Parallel slots (`--parallel`), 1 to 8. Env: `RAY_LLAMA_CPP_PARALLEL`.
    pub parallel: u32,
    /// Generation threads (`--threads`), 1 to 32. Env: `RAY_LLAMA_CPP_THREADS`.
    pub threads: u32,
    /// Prompt-processing threads (`--threads-batch`), 1 to 32. Env: `RAY_LLAMA_CPP_THREADS_BATCH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads_batch: Option<u32>,
    /// HTTP threads (`--threads-http`), 1 to 16. Env: `RAY_LLAMA_CPP_THREADS_HTTP`.
    pub threads_http: u32,
    /// Logical batch size (`--batch-size`), 1 to 4096. Env: `RAY_LLAMA_CPP_BATCH_SIZE`.
    pub batch_size: u32,
    /// Physical batch size (`--ubatch-size`), 1 to `batchSize`. Env: `RAY_LLAMA_CPP_UBATCH_SIZE`.
    pub ubatch_size: u32,
    /// Prompt cache (`--cache-prompt`). Env: `RAY_LLAMA_CPP_CACHE_PROMPT`.
    pub cache_prompt: bool,
    /// KV-shift chunk reuse (`--cache-reuse`), 0 to 32768. Env: `RAY_LLAMA_CPP_CACHE_REUSE`.
    pub cache_reuse: u32,
    /// Host-memory prompt cache in MiB (`--cache-ram`), -1 (unbounded) to 8192.
    /// Env: `RAY_LLAMA_CPP_CACHE_RAM_MIB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "cacheRamMiB")]
    pub cache_ram_mib: Option<i32>,
    /// Continuous batching (`--cont-batching`). Env: `RAY_LLAMA_CPP_CONTINUOUS_BATCHING`.
    pub continuous_batching: bool,
    /// Prometheus endpoint (`--metrics`). Env: `RAY_LLAMA_CPP_ENABLE_METRICS`.
    pub enable_metrics: bool,
    /// `/slots` endpoint (`--slots`). Env: `RAY_LLAMA_CPP_EXPOSE_SLOTS`.
    pub expose_slots: bool,
    /// Warm-up run at load (`--warmup`). Env: `RAY_LLAMA_CPP_WARMUP`.
    pub warmup: bool,
    /// Unified KV cache (`--kv-unified`). Env: `RAY_LLAMA_CPP_ENABLE_UNIFIED_KV`.
    pub enable_unified_kv: bool,
    /// Keep idle slots' prompts in the host cache (`--cache-idle-slots`).
    /// Env: `RAY_LLAMA_CPP_CACHE_IDLE_SLOTS`.
    pub cache_idle_slots: bool,
    /// Context shift when a slot fills (`--context-shift`). Env: `RAY_LLAMA_CPP_CONTEXT_SHIFT`.
    pub context_shift: bool,
    /// Directory where `llama-server` saves and restores its slots' KV cache
    /// (`--slot-save-path`); an absolute path the service may write. With a `lifecycle`
    /// section, Ray saves a managed model's slots there before it unloads the model and
    /// restores them after its next load, so the first request after a swap does not process
    /// its prompt again. Env: `RAY_LLAMA_CPP_SLOT_SAVE_PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_save_path: Option<String>,
    /// Extra `llama-server` flags (at most 64); flags Ray generates itself are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_args: Option<Vec<String>>,
    /// Let `ray-server` start `llama-server` itself with these settings, restart it with
    /// backoff when it dies, report `provider_warming` while it starts and stop it on shutdown,
    /// instead of a separate systemd unit. `ray-server render` then writes one unit. Default
    /// false. Env: `RAY_LLAMA_CPP_SUPERVISE`.
    #[serde(default)]
    pub supervise: bool,
}

/// Named llama.cpp launch presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LaunchPreset {
    /// Generic sub-1B single VPS.
    #[serde(rename = "single-vps-sub1b")]
    SingleVpsSub1b,
    /// Sub-1B on a CX23-class 2 vCPU / 4 GB x86 box.
    #[serde(rename = "single-vps-sub1b-cx23")]
    SingleVpsSub1bCx23,
    /// Sub-1B on a CAX11-class 2 vCPU / 4 GB ARM box.
    #[serde(rename = "single-vps-sub1b-cax11")]
    SingleVpsSub1bCax11,
    /// 1B-class on a CX23-class box.
    #[serde(rename = "single-vps-1b-cx23")]
    SingleVps1bCx23,
    /// 1B-class on an 8 GB box.
    #[serde(rename = "single-vps-1b-8gb")]
    SingleVps1b8gb,
    /// A roomier single node.
    #[serde(rename = "single-vps-balanced")]
    SingleVpsBalanced,
}
