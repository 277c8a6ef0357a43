//! The table of `RAY_*` variables: each names the config field it sets, how its text is parsed
//! and when it applies. The names are those of the existing Ray (`RAY_HOST`, `RAY_STREAM_*`,
//! `RAY_DEGRADATION_*`), not a function of the serde names, so the table is kept by hand; the
//! test `ray-core/tests/env_coverage.rs` fails when a config field has no variable here and no
//! reason listed there.

/// How the text of a variable becomes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKind {
    /// `true/false/1/0/yes/no/on/off`, trimmed, case-insensitive.
    Bool,
    /// A whole number (range checks happen in validation).
    Int,
    /// A finite number.
    Number,
    /// Text as given.
    Text,
    /// A comma list; entries are trimmed and blanks dropped.
    List,
}

/// Where a variable applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvScope {
    /// Always.
    Always,
    /// Only when `model.operational` exists.
    Operational,
    /// Only for HTTP adapters (OpenAI-compatible and llama.cpp).
    HttpAdapter,
    /// Only for the llama.cpp adapter.
    LlamaAdapter,
    /// Only when the llama.cpp adapter has a launch profile.
    LaunchProfile,
}

/// One `RAY_*` variable.
#[derive(Debug, Clone, Copy)]
pub struct EnvVar {
    /// The variable name.
    pub name: &'static str,
    /// The JSON path it sets, dot separated, relative to the config root.
    pub path: &'static str,
    /// How its text is parsed.
    pub kind: EnvKind,
    /// When it applies.
    pub scope: EnvScope,
}

const fn var(name: &'static str, path: &'static str, kind: EnvKind) -> EnvVar {
    EnvVar {
        name,
        path,
        kind,
        scope: EnvScope::Always,
    }
}

const fn scoped(name: &'static str, path: &'static str, kind: EnvKind, scope: EnvScope) -> EnvVar {
    EnvVar {
        name,
        path,
        kind,
        scope,
    }
}

use EnvKind::{Bool, Int, List, Number, Text};
use EnvScope::{HttpAdapter, LaunchProfile, LlamaAdapter, Operational};

/// Every variable, in the order they are applied (a later entry for the same path wins).
pub const ENV_VARS: &[EnvVar] = &[
    // the host policy (the machine owner's environment wins over the file's `policyFile`)
    var("RAY_POLICY_FILE", "policyFile", Text),
    // server
    var("RAY_HOST", "server.host", Text),
    var("RAY_PORT", "server.port", Int),
    var(
        "RAY_REQUEST_BODY_LIMIT_BYTES",
        "server.requestBodyLimitBytes",
        Int,
    ),
    // model
    var("RAY_MODEL_ID", "model.id", Text),
    var("RAY_MODEL_FAMILY", "model.family", Text),
    var("RAY_MODEL_QUANTIZATION", "model.quantization", Text),
    var("RAY_MODEL_WARM_ON_BOOT", "model.warmOnBoot", Bool),
    var("RAY_MODEL_CONTEXT_WINDOW", "model.contextWindow", Int),
    var("RAY_MODEL_MAX_OUTPUT_TOKENS", "model.maxOutputTokens", Int),
    scoped(
        "RAY_MODEL_TOKENS_PER_SECOND_TARGET",
        "model.operational.tokensPerSecondTarget",
        Int,
        Operational,
    ),
    scoped(
        "RAY_MODEL_MEMORY_CLASS_MIB",
        "model.operational.memoryClassMiB",
        Int,
        Operational,
    ),
    scoped(
        "RAY_MODEL_PREFERRED_CTX_SIZE",
        "model.operational.preferredCtxSize",
        Int,
        Operational,
    ),
    // HTTP adapters
    scoped(
        "RAY_LLAMA_CPP_BASE_URL",
        "model.adapter.baseUrl",
        Text,
        LlamaAdapter,
    ),
    scoped(
        "RAY_MODEL_BASE_URL",
        "model.adapter.baseUrl",
        Text,
        HttpAdapter,
    ),
    scoped(
        "RAY_LLAMA_CPP_MODEL_REF",
        "model.adapter.modelRef",
        Text,
        LlamaAdapter,
    ),
    scoped("RAY_MODEL_REF", "model.adapter.modelRef", Text, HttpAdapter),
    scoped(
        "RAY_MODEL_REQUIRE_BACKEND_MODEL_MATCH",
        "model.adapter.requireBackendModelMatch",
        Bool,
        HttpAdapter,
    ),
    scoped(
        "RAY_MODEL_API_KEY_ENV",
        "model.adapter.apiKeyEnv",
        Text,
        HttpAdapter,
    ),
    scoped(
        "RAY_MODEL_TIMEOUT_MS",
        "model.adapter.timeoutMs",
        Int,
        HttpAdapter,
    ),
    // llama.cpp adapter
    scoped(
        "RAY_LLAMA_CPP_CACHE_PROMPT",
        "model.adapter.cachePrompt",
        Bool,
        LlamaAdapter,
    ),
    scoped(
        "RAY_LLAMA_CPP_SLOT_ID",
        "model.adapter.slotId",
        Int,
        LlamaAdapter,
    ),
    scoped(
        "RAY_LLAMA_CPP_SLOT_STATE_TTL_MS",
        "model.adapter.slotStateTtlMs",
        Int,
        LlamaAdapter,
    ),
    scoped(
        "RAY_LLAMA_CPP_SLOT_SNAPSHOT_TIMEOUT_MS",
        "model.adapter.slotSnapshotTimeoutMs",
        Int,
        LlamaAdapter,
    ),
    scoped(
        "RAY_LLAMA_CPP_PROMPT_SCAFFOLD_CACHE_ENTRIES",
        "model.adapter.promptScaffoldCacheEntries",
        Int,
        LlamaAdapter,
    ),
    // llama.cpp launch profile
    scoped(
        "RAY_LLAMA_CPP_MODEL_PATH",
        "model.adapter.launchProfile.modelPath",
        Text,
        LaunchProfile,
    ),
    scoped(
        "RAY_MODEL_PATH",
        "model.adapter.launchProfile.modelPath",
        Text,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_BINARY_PATH",
        "model.adapter.launchProfile.binaryPath",
        Text,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_ALIAS",
        "model.adapter.launchProfile.alias",
        Text,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_HOST",
        "model.adapter.launchProfile.host",
        Text,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_PORT",
        "model.adapter.launchProfile.port",
        Int,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_CTX_SIZE",
        "model.adapter.launchProfile.ctxSize",
        Int,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_PARALLEL",
        "model.adapter.launchProfile.parallel",
        Int,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_THREADS",
        "model.adapter.launchProfile.threads",
        Int,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_THREADS_BATCH",
        "model.adapter.launchProfile.threadsBatch",
        Int,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_THREADS_HTTP",
        "model.adapter.launchProfile.threadsHttp",
        Int,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_BATCH_SIZE",
        "model.adapter.launchProfile.batchSize",
        Int,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_UBATCH_SIZE",
        "model.adapter.launchProfile.ubatchSize",
        Int,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_CACHE_PROMPT",
        "model.adapter.launchProfile.cachePrompt",
        Bool,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_CACHE_REUSE",
        "model.adapter.launchProfile.cacheReuse",
        Int,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_CACHE_RAM_MIB",
        "model.adapter.launchProfile.cacheRamMiB",
        Int,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_CONTINUOUS_BATCHING",
        "model.adapter.launchProfile.continuousBatching",
        Bool,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_ENABLE_METRICS",
        "model.adapter.launchProfile.enableMetrics",
        Bool,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_EXPOSE_SLOTS",
        "model.adapter.launchProfile.exposeSlots",
        Bool,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_WARMUP",
        "model.adapter.launchProfile.warmup",
        Bool,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_ENABLE_UNIFIED_KV",
        "model.adapter.launchProfile.enableUnifiedKv",
        Bool,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_CACHE_IDLE_SLOTS",
        "model.adapter.launchProfile.cacheIdleSlots",
        Bool,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_CONTEXT_SHIFT",
        "model.adapter.launchProfile.contextShift",
        Bool,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_SLOT_SAVE_PATH",
        "model.adapter.launchProfile.slotSavePath",
        Text,
        LaunchProfile,
    ),
    scoped(
        "RAY_LLAMA_CPP_SUPERVISE",
        "model.adapter.launchProfile.supervise",
        Bool,
        LaunchProfile,
    ),
    // scheduler
    var("RAY_SCHEDULER_CONCURRENCY", "scheduler.concurrency", Int),
    var("RAY_SCHEDULER_MAX_QUEUE", "scheduler.maxQueue", Int),
    var(
        "RAY_SCHEDULER_MAX_QUEUED_TOKENS",
        "scheduler.maxQueuedTokens",
        Int,
    ),
    var(
        "RAY_SCHEDULER_MAX_INFLIGHT_TOKENS",
        "scheduler.maxInflightTokens",
        Int,
    ),
    var(
        "RAY_SCHEDULER_REQUEST_TIMEOUT_MS",
        "scheduler.requestTimeoutMs",
        Int,
    ),
    var(
        "RAY_SCHEDULER_DEDUPE_INFLIGHT",
        "scheduler.dedupeInflight",
        Bool,
    ),
    var(
        "RAY_SCHEDULER_BATCH_WINDOW_MS",
        "scheduler.batchWindowMs",
        Int,
    ),
    var(
        "RAY_SCHEDULER_AFFINITY_LOOKAHEAD",
        "scheduler.affinityLookahead",
        Int,
    ),
    var(
        "RAY_SCHEDULER_SHORT_JOB_MAX_TOKENS",
        "scheduler.shortJobMaxTokens",
        Int,
    ),
    var("RAY_SCHEDULER_MAX_CHOICES", "scheduler.maxChoices", Int),
    var(
        "RAY_SCHEDULER_MAX_DEDUPE_WAITERS",
        "scheduler.maxDedupeWaiters",
        Int,
    ),
    // asyncQueue
    var("RAY_ASYNC_QUEUE_ENABLED", "asyncQueue.enabled", Bool),
    var("RAY_ASYNC_QUEUE_STORAGE_DIR", "asyncQueue.storageDir", Text),
    var("RAY_ASYNC_QUEUE_MAX_JOBS", "asyncQueue.maxJobs", Int),
    var(
        "RAY_ASYNC_QUEUE_MIN_FREE_STORAGE_MIB",
        "asyncQueue.minFreeStorageMiB",
        Int,
    ),
    var(
        "RAY_ASYNC_QUEUE_COMPLETED_TTL_MS",
        "asyncQueue.completedTtlMs",
        Int,
    ),
    var(
        "RAY_ASYNC_QUEUE_POLL_INTERVAL_MS",
        "asyncQueue.pollIntervalMs",
        Int,
    ),
    var(
        "RAY_ASYNC_QUEUE_DISPATCH_CONCURRENCY",
        "asyncQueue.dispatchConcurrency",
        Int,
    ),
    var(
        "RAY_ASYNC_QUEUE_MAX_ATTEMPTS",
        "asyncQueue.maxAttempts",
        Int,
    ),
    var(
        "RAY_ASYNC_QUEUE_CALLBACK_TIMEOUT_MS",
        "asyncQueue.callbackTimeoutMs",
        Int,
    ),
    var(
        "RAY_ASYNC_QUEUE_MAX_CALLBACK_ATTEMPTS",
        "asyncQueue.maxCallbackAttempts",
        Int,
    ),
    var(
        "RAY_ASYNC_QUEUE_CALLBACK_ALLOW_PRIVATE_NETWORK",
        "asyncQueue.callbackAllowPrivateNetwork",
        Bool,
    ),
    var(
        "RAY_ASYNC_QUEUE_CALLBACK_ALLOWED_HOSTS",
        "asyncQueue.callbackAllowedHosts",
        List,
    ),
    var(
        "RAY_ASYNC_QUEUE_CALLBACK_SIGNING_SECRET_ENV",
        "asyncQueue.callbackSigningSecretEnv",
        Text,
    ),
    var(
        "RAY_ASYNC_QUEUE_MAX_RECORD_BYTES",
        "asyncQueue.maxRecordBytes",
        Int,
    ),
    // cache
    var("RAY_CACHE_ENABLED", "cache.enabled", Bool),
    var("RAY_CACHE_MAX_ENTRIES", "cache.maxEntries", Int),
    var("RAY_CACHE_MAX_BYTES", "cache.maxBytes", Int),
    var("RAY_CACHE_TTL_MS", "cache.ttlMs", Int),
    var("RAY_CACHE_KEY_STRATEGY", "cache.keyStrategy", Text),
    // telemetry
    var("RAY_TELEMETRY_SERVICE_NAME", "telemetry.serviceName", Text),
    var("RAY_TELEMETRY_LOG_LEVEL", "telemetry.logLevel", Text),
    var("RAY_LOG_LEVEL", "telemetry.logLevel", Text),
    var(
        "RAY_TELEMETRY_INCLUDE_DEBUG_METRICS",
        "telemetry.includeDebugMetrics",
        Bool,
    ),
    var(
        "RAY_TELEMETRY_SLOW_REQUEST_THRESHOLD_MS",
        "telemetry.slowRequestThresholdMs",
        Int,
    ),
    var("RAY_TELEMETRY_ACCESS_LOG", "telemetry.accessLog", Text),
    var("RAY_ACCESS_LOG", "telemetry.accessLog", Text),
    var(
        "RAY_TELEMETRY_ACCESS_LOG_SAMPLE_EVERY",
        "telemetry.accessLogSampleEvery",
        Int,
    ),
    var(
        "RAY_TELEMETRY_RESPONSE_DIAGNOSTICS",
        "telemetry.responseDiagnostics",
        Text,
    ),
    // gracefulDegradation
    var(
        "RAY_DEGRADATION_ENABLED",
        "gracefulDegradation.enabled",
        Bool,
    ),
    var(
        "RAY_GRACEFUL_DEGRADATION_ENABLED",
        "gracefulDegradation.enabled",
        Bool,
    ),
    var(
        "RAY_DEGRADATION_QUEUE_DEPTH_THRESHOLD",
        "gracefulDegradation.queueDepthThreshold",
        Int,
    ),
    var(
        "RAY_DEGRADATION_MAX_PROMPT_CHARS",
        "gracefulDegradation.maxPromptChars",
        Int,
    ),
    var(
        "RAY_DEGRADATION_DEGRADE_TO_MAX_TOKENS",
        "gracefulDegradation.degradeToMaxTokens",
        Int,
    ),
    var(
        "RAY_DEGRADATION_MAX_TOKENS",
        "gracefulDegradation.degradeToMaxTokens",
        Int,
    ),
    var(
        "RAY_DEGRADATION_MEMORY_RSS_THRESHOLD_MIB",
        "gracefulDegradation.memoryRssThresholdMiB",
        Int,
    ),
    var(
        "RAY_DEGRADATION_MEMORY_CGROUP_PRESSURE_RATIO_THRESHOLD",
        "gracefulDegradation.memoryCgroupPressureRatioThreshold",
        Number,
    ),
    var(
        "RAY_DEGRADATION_CPU_THROTTLED_RATIO_THRESHOLD",
        "gracefulDegradation.cpuThrottledRatioThreshold",
        Number,
    ),
    var(
        "RAY_DEGRADATION_MEMORY_PSI_SOME_AVG10_THRESHOLD",
        "gracefulDegradation.memoryPsiSomeAvg10Threshold",
        Number,
    ),
    var(
        "RAY_DEGRADATION_MEMORY_PSI_FULL_AVG10_THRESHOLD",
        "gracefulDegradation.memoryPsiFullAvg10Threshold",
        Number,
    ),
    var(
        "RAY_DEGRADATION_CPU_PSI_SOME_AVG10_THRESHOLD",
        "gracefulDegradation.cpuPsiSomeAvg10Threshold",
        Number,
    ),
    var(
        "RAY_DEGRADATION_CPU_PSI_FULL_AVG10_THRESHOLD",
        "gracefulDegradation.cpuPsiFullAvg10Threshold",
        Number,
    ),
    var(
        "RAY_DEGRADATION_REFUSE_ON_CRITICAL_MEMORY",
        "gracefulDegradation.refuseOnCriticalMemory",
        Bool,
    ),
    var(
        "RAY_DEGRADATION_CRITICAL_CGROUP_MEMORY_RATIO",
        "gracefulDegradation.criticalCgroupMemoryRatio",
        Number,
    ),
    var(
        "RAY_DEGRADATION_CRITICAL_MEMORY_PSI_FULL_AVG10",
        "gracefulDegradation.criticalMemoryPsiFullAvg10",
        Number,
    ),
    // streaming
    var(
        "RAY_STREAM_FIRST_TOKEN_TIMEOUT_MS",
        "streaming.firstTokenTimeoutMs",
        Int,
    ),
    var("RAY_STREAM_IDLE_TIMEOUT_MS", "streaming.idleTimeoutMs", Int),
    var(
        "RAY_STREAM_TOTAL_TIMEOUT_MS",
        "streaming.totalTimeoutMs",
        Int,
    ),
    // promptCompiler
    var(
        "RAY_PROMPT_COMPILER_ENABLED",
        "promptCompiler.enabled",
        Bool,
    ),
    var(
        "RAY_PROMPT_COMPILER_COLLAPSE_WHITESPACE",
        "promptCompiler.collapseWhitespace",
        Bool,
    ),
    var(
        "RAY_PROMPT_COMPILER_DEDUPE_REPEATED_LINES",
        "promptCompiler.dedupeRepeatedLines",
        Bool,
    ),
    var(
        "RAY_PROMPT_COMPILER_FAMILY_METADATA_KEYS",
        "promptCompiler.familyMetadataKeys",
        List,
    ),
    // adaptiveTuning
    var("RAY_ADAPTIVE_ENABLED", "adaptiveTuning.enabled", Bool),
    var(
        "RAY_ADAPTIVE_TUNING_ENABLED",
        "adaptiveTuning.enabled",
        Bool,
    ),
    var("RAY_ADAPTIVE_SAMPLE_SIZE", "adaptiveTuning.sampleSize", Int),
    var(
        "RAY_ADAPTIVE_QUEUE_LATENCY_THRESHOLD_MS",
        "adaptiveTuning.queueLatencyThresholdMs",
        Int,
    ),
    var(
        "RAY_ADAPTIVE_MIN_COMPLETION_TOKENS_PER_SECOND",
        "adaptiveTuning.minCompletionTokensPerSecond",
        Number,
    ),
    var(
        "RAY_ADAPTIVE_MAX_OUTPUT_REDUCTION_RATIO",
        "adaptiveTuning.maxOutputReductionRatio",
        Number,
    ),
    var(
        "RAY_ADAPTIVE_MIN_OUTPUT_TOKENS",
        "adaptiveTuning.minOutputTokens",
        Int,
    ),
    var(
        "RAY_ADAPTIVE_LEARNED_FAMILY_CAP_ENABLED",
        "adaptiveTuning.learnedFamilyCapEnabled",
        Bool,
    ),
    var(
        "RAY_ADAPTIVE_FAMILY_HISTORY_SIZE",
        "adaptiveTuning.familyHistorySize",
        Int,
    ),
    var(
        "RAY_ADAPTIVE_LEARNED_CAP_MIN_SAMPLES",
        "adaptiveTuning.learnedCapMinSamples",
        Int,
    ),
    var(
        "RAY_ADAPTIVE_DRAFT_PERCENTILE",
        "adaptiveTuning.draftPercentile",
        Number,
    ),
    var(
        "RAY_ADAPTIVE_SHORT_PERCENTILE",
        "adaptiveTuning.shortPercentile",
        Number,
    ),
    var(
        "RAY_ADAPTIVE_LEARNED_CAP_HEADROOM_TOKENS",
        "adaptiveTuning.learnedCapHeadroomTokens",
        Int,
    ),
    // auth
    var("RAY_AUTH_ENABLED", "auth.enabled", Bool),
    var("RAY_AUTH_API_KEY_ENV", "auth.apiKeyEnv", Text),
    // rateLimit
    var("RAY_RATE_LIMIT_ENABLED", "rateLimit.enabled", Bool),
    var("RAY_RATE_LIMIT_WINDOW_MS", "rateLimit.windowMs", Int),
    var("RAY_RATE_LIMIT_MAX_REQUESTS", "rateLimit.maxRequests", Int),
    var("RAY_RATE_LIMIT_MAX_KEYS", "rateLimit.maxKeys", Int),
    var("RAY_RATE_LIMIT_KEY_STRATEGY", "rateLimit.keyStrategy", Text),
    var(
        "RAY_RATE_LIMIT_TRUST_PROXY_HEADERS",
        "rateLimit.trustProxyHeaders",
        Bool,
    ),
];

/// `RAY_*` variables that are read elsewhere (not config fields), so they are not typos: the
/// profile and config file, the secrets, and `stage-model`'s sources and checksums.
pub const OTHER_RAY_VARS: &[&str] = &[
    "RAY_PROFILE",
    "RAY_CONFIG",
    "RAY_API_KEYS",
    "RAY_CALLBACK_SIGNING_SECRET",
    "RAY_MODEL_SOURCE_PATH",
    "RAY_MODEL_SHA256",
    "RAY_LLAMA_CPP_BINARY_SOURCE_PATH",
    "RAY_LLAMA_CPP_BINARY_SHA256",
];
