//! Validation of a merged [`RayConfig`]: every problem at once, each with its JSON path.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::types::*;

/// How serious a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The config cannot be used.
    Error,
    /// The config works but probably not the way the operator wants.
    Warning,
}

/// One problem found in a config, located by its JSON path (`scheduler.maxQueue`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// JSON path of the field, e.g. `model.adapter.launchProfile.port`; empty for the root.
    pub path: String,
    /// What is wrong and what the rule is.
    pub message: String,
    /// Where the offending value came from (`env RAY_SCHEDULER_MAX_QUEUE`, `override`), when not
    /// the file or the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Diagnostic {
    /// A fatal problem.
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
            source: None,
        }
    }

    /// A warning.
    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            path: path.into(),
            message: message.into(),
            source: None,
        }
    }

    /// Whether this is fatal.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)?;
        } else {
            write!(f, "{}: {}", self.path, self.message)?;
        }
        if let Some(source) = &self.source {
            write!(f, " (set by {source})")?;
        }
        Ok(())
    }
}

/// A field's value as the bound of another, or `None` when it is 0 and so invalid itself.
fn positive(value: impl Into<u64>) -> Option<u64> {
    let value = value.into();
    (value > 0).then_some(value)
}

/// Collects diagnostics with small helpers for the common range rules.
struct Checker {
    diagnostics: Vec<Diagnostic>,
}

impl Checker {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::error(path, message));
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::warning(path, message));
    }

    /// `min <= value <= max`, reported as "must be at least/at most".
    fn range(&mut self, path: &str, value: u64, min: u64, max: u64) {
        if value < min {
            self.error(path, format!("must be at least {min}, got {value}"));
        } else if value > max {
            self.error(path, format!("must be at most {max}, got {value}"));
        }
    }

    /// Like [`Checker::range`], but the upper bound is another field, named in the message.
    /// `max` is `None` when that field is invalid itself: its own error says so, and a bound
    /// made up from it would only mislead, so just the minimum is checked.
    fn at_most_field(
        &mut self,
        path: &str,
        value: u64,
        min: u64,
        max: Option<u64>,
        max_field: &str,
    ) {
        if value < min {
            self.error(path, format!("must be at least {min}, got {value}"));
        } else if let Some(max) = max
            && value > max
        {
            self.error(
                path,
                format!("must be at most {max_field} ({max}), got {value}"),
            );
        }
    }

    fn range_i64(&mut self, path: &str, value: i64, min: i64, max: i64) {
        if value < min {
            self.error(path, format!("must be at least {min}, got {value}"));
        } else if value > max {
            self.error(path, format!("must be at most {max}, got {value}"));
        }
    }

    /// `min < value <= max` (or `min <= value` when `min_inclusive`) for ratios and PSI values.
    fn range_f64(&mut self, path: &str, value: f64, min: f64, min_inclusive: bool, max: f64) {
        let low_ok = if min_inclusive {
            value >= min
        } else {
            value > min
        };
        if !value.is_finite() {
            self.error(path, format!("must be a finite number, got {value}"));
        } else if !low_ok {
            let rule = if min_inclusive {
                "at least"
            } else {
                "greater than"
            };
            self.error(path, format!("must be {rule} {min}, got {value}"));
        } else if value > max {
            self.error(path, format!("must be at most {max}, got {value}"));
        }
    }

    fn text(&mut self, path: &str, value: &str, max_chars: usize, allow_empty: bool) {
        if !allow_empty && value.trim().is_empty() {
            self.error(path, "must not be empty");
        }
        let chars = value.chars().count();
        if chars > max_chars {
            self.error(
                path,
                format!("must be at most {max_chars} chars, got {chars}"),
            );
        }
        if value.chars().any(char::is_control) {
            self.error(path, "must not contain control characters");
        }
    }
}

/// Flags `llama-server` options that Ray generates from the launch profile, with short aliases.
pub const GENERATED_LLAMA_FLAGS: &[&str] = &[
    "--model",
    "-m",
    "--alias",
    "-a",
    "--host",
    "--port",
    "--ctx-size",
    "-c",
    "--parallel",
    "-np",
    "--threads",
    "-t",
    "--threads-batch",
    "-tb",
    "--threads-http",
    "--batch-size",
    "-b",
    "--ubatch-size",
    "-ub",
    "--cache-prompt",
    "--no-cache-prompt",
    "--cache-reuse",
    "--cache-ram",
    "-cram",
    "--cont-batching",
    "-cb",
    "--no-cont-batching",
    "-nocb",
    "--metrics",
    "--slots",
    "--no-slots",
    "--warmup",
    "--no-warmup",
    "--kv-unified",
    "-kvu",
    "--no-kv-unified",
    "--cache-idle-slots",
    "--no-cache-idle-slots",
    "--context-shift",
    "--no-context-shift",
];

/// Header names an adapter may not set: hop-by-hop headers and those Ray computes itself.
pub const RESERVED_ADAPTER_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Validates a merged config. Returns every error and warning; the config is usable when no
/// diagnostic is an error.
pub fn validate(config: &RayConfig) -> Vec<Diagnostic> {
    let mut c = Checker {
        diagnostics: Vec::new(),
    };
    let model_max = config.model.max_output_tokens;

    // server
    let server = &config.server;
    c.text("server.host", &server.host, 253, false);
    c.range(
        "server.requestBodyLimitBytes",
        server.request_body_limit_bytes,
        1,
        1_048_576,
    );
    let public_bind = !is_loopback_host(&server.host);

    // model
    let model = &config.model;
    c.text("model.id", &model.id, 256, false);
    c.text("model.family", &model.family, 256, false);
    c.range(
        "model.contextWindow",
        model.context_window.into(),
        1,
        32_768,
    );
    c.range(
        "model.maxOutputTokens",
        model.max_output_tokens.into(),
        1,
        2_048,
    );
    if model.max_output_tokens > model.context_window {
        c.error(
            "model.maxOutputTokens",
            format!(
                "must be at most model.contextWindow ({}), got {}",
                model.context_window, model.max_output_tokens
            ),
        );
    }
    if let Some(op) = &model.operational {
        if let Some(v) = op.tokens_per_second_target {
            c.range(
                "model.operational.tokensPerSecondTarget",
                v.into(),
                1,
                1_000,
            );
        }
        if let Some(v) = op.memory_class_mib {
            c.range("model.operational.memoryClassMiB", v.into(), 1, 65_536);
        }
        if let Some(v) = op.preferred_ctx_size {
            c.range("model.operational.preferredCtxSize", v.into(), 1, 32_768);
        }
    }
    validate_adapter(&mut c, config);

    // scheduler
    let s = &config.scheduler;
    c.range("scheduler.concurrency", s.concurrency.into(), 1, 8);
    c.range("scheduler.maxQueue", s.max_queue.into(), 1, 512);
    c.range(
        "scheduler.maxQueuedTokens",
        s.max_queued_tokens.into(),
        1,
        262_144,
    );
    c.range(
        "scheduler.maxInflightTokens",
        s.max_inflight_tokens.into(),
        1,
        65_536,
    );
    c.range(
        "scheduler.requestTimeoutMs",
        s.request_timeout_ms,
        1,
        120_000,
    );
    c.range("scheduler.batchWindowMs", s.batch_window_ms, 0, 1_000);
    if s.batch_window_ms >= s.request_timeout_ms && s.request_timeout_ms > 0 {
        c.error(
            "scheduler.batchWindowMs",
            format!(
                "must be less than scheduler.requestTimeoutMs ({}), got {}",
                s.request_timeout_ms, s.batch_window_ms
            ),
        );
    }
    c.at_most_field(
        "scheduler.affinityLookahead",
        s.affinity_lookahead.into(),
        1,
        positive(s.max_queue),
        "scheduler.maxQueue",
    );
    c.range(
        "scheduler.maxDedupeWaiters",
        s.max_dedupe_waiters.into(),
        1,
        4_096,
    );
    c.range("scheduler.maxChoices", s.max_choices.into(), 1, 16);
    c.at_most_field(
        "scheduler.shortJobMaxTokens",
        s.short_job_max_tokens.into(),
        1,
        positive(model_max),
        "model.maxOutputTokens",
    );
    for (field, value) in [
        ("scheduler.maxInflightTokens", s.max_inflight_tokens),
        ("scheduler.maxQueuedTokens", s.max_queued_tokens),
    ] {
        if value <= model_max {
            c.error(
                field,
                format!(
                    "must be at least model.maxOutputTokens + 1 ({}) so a request of the largest \
                     output fits, got {value}",
                    u64::from(model_max) + 1
                ),
            );
        }
    }
    if let Some(launch) = config.model.adapter.launch_profile() {
        let capacity = u64::from(launch.ctx_size) * u64::from(launch.parallel);
        if u64::from(s.max_inflight_tokens) > capacity {
            c.error(
                "scheduler.maxInflightTokens",
                format!(
                    "must be at most launchProfile.ctxSize × parallel ({capacity}), got {}",
                    s.max_inflight_tokens
                ),
            );
        }
        if s.concurrency > launch.parallel {
            c.warn(
                "scheduler.concurrency",
                format!(
                    "is {} but llama-server has {} slot(s); the extra requests wait inside \
                     llama-server where Ray cannot see or time them",
                    s.concurrency, launch.parallel
                ),
            );
        }
    }

    // streaming
    let st = &config.streaming;
    c.range(
        "streaming.firstTokenTimeoutMs",
        st.first_token_timeout_ms,
        1,
        600_000,
    );
    c.range("streaming.idleTimeoutMs", st.idle_timeout_ms, 1, 600_000);
    c.range(
        "streaming.totalTimeoutMs",
        st.total_timeout_ms,
        1_000,
        3_600_000,
    );
    if st.first_token_timeout_ms > st.total_timeout_ms {
        c.warn(
            "streaming.firstTokenTimeoutMs",
            format!(
                "is longer than streaming.totalTimeoutMs ({}), which fires first",
                st.total_timeout_ms
            ),
        );
    }

    // asyncQueue
    let q = &config.async_queue;
    c.text("asyncQueue.storageDir", &q.storage_dir, 4_096, false);
    c.range("asyncQueue.maxJobs", q.max_jobs.into(), 1, 2_000);
    c.range(
        "asyncQueue.minFreeStorageMiB",
        q.min_free_storage_mib,
        1,
        1_048_576,
    );
    c.range(
        "asyncQueue.completedTtlMs",
        q.completed_ttl_ms,
        0,
        604_800_000,
    );
    c.range("asyncQueue.pollIntervalMs", q.poll_interval_ms, 1, 60_000);
    c.range(
        "asyncQueue.dispatchConcurrency",
        q.dispatch_concurrency.into(),
        1,
        8,
    );
    c.range("asyncQueue.maxAttempts", q.max_attempts.into(), 1, 100);
    c.range(
        "asyncQueue.callbackTimeoutMs",
        q.callback_timeout_ms,
        1,
        30_000,
    );
    c.range(
        "asyncQueue.maxCallbackAttempts",
        q.max_callback_attempts.into(),
        1,
        100,
    );
    if q.callback_allowed_hosts.len() > 64 {
        c.error(
            "asyncQueue.callbackAllowedHosts",
            format!(
                "must have at most 64 entries, got {}",
                q.callback_allowed_hosts.len()
            ),
        );
    }
    for (i, host) in q.callback_allowed_hosts.iter().enumerate() {
        if !is_allowed_host_pattern(host) {
            c.error(
                &format!("asyncQueue.callbackAllowedHosts[{i}]"),
                format!("must be a host name or *.suffix, got {host:?}"),
            );
        }
    }
    if !is_env_var_name(&q.callback_signing_secret_env) {
        c.error(
            "asyncQueue.callbackSigningSecretEnv",
            format!(
                "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*), got {:?}",
                q.callback_signing_secret_env
            ),
        );
    }
    c.range(
        "asyncQueue.maxRecordBytes",
        q.max_record_bytes,
        4_096,
        16_777_216,
    );

    // cache
    let cache = &config.cache;
    c.range("cache.maxEntries", cache.max_entries.into(), 1, 4_096);
    c.range("cache.maxBytes", cache.max_bytes, 1, 268_435_456);
    c.range("cache.ttlMs", cache.ttl_ms, 0, 86_400_000);
    if cache.enabled && cache.ttl_ms == 0 {
        c.warn(
            "cache.ttlMs",
            "is 0: cached results never expire and leave only when the cache is full",
        );
    }

    // telemetry
    let t = &config.telemetry;
    c.text("telemetry.serviceName", &t.service_name, 128, false);
    c.range(
        "telemetry.slowRequestThresholdMs",
        t.slow_request_threshold_ms,
        0,
        120_000,
    );

    // gracefulDegradation
    let g = &config.graceful_degradation;
    c.at_most_field(
        "gracefulDegradation.queueDepthThreshold",
        g.queue_depth_threshold.into(),
        1,
        positive(s.max_queue).map(|max_queue| max_queue - 1),
        "scheduler.maxQueue - 1",
    );
    c.range(
        "gracefulDegradation.maxPromptChars",
        g.max_prompt_chars.into(),
        1,
        65_536,
    );
    c.at_most_field(
        "gracefulDegradation.degradeToMaxTokens",
        g.degrade_to_max_tokens.into(),
        1,
        positive(model_max),
        "model.maxOutputTokens",
    );
    c.range(
        "gracefulDegradation.memoryRssThresholdMiB",
        g.memory_rss_threshold_mib.into(),
        1,
        65_536,
    );
    c.range_f64(
        "gracefulDegradation.memoryCgroupPressureRatioThreshold",
        g.memory_cgroup_pressure_ratio_threshold,
        0.0,
        false,
        1.0,
    );
    c.range_f64(
        "gracefulDegradation.cpuThrottledRatioThreshold",
        g.cpu_throttled_ratio_threshold,
        0.0,
        false,
        1.0,
    );
    for (path, value) in [
        (
            "gracefulDegradation.memoryPsiSomeAvg10Threshold",
            g.memory_psi_some_avg10_threshold,
        ),
        (
            "gracefulDegradation.memoryPsiFullAvg10Threshold",
            g.memory_psi_full_avg10_threshold,
        ),
        (
            "gracefulDegradation.cpuPsiSomeAvg10Threshold",
            g.cpu_psi_some_avg10_threshold,
        ),
        (
            "gracefulDegradation.cpuPsiFullAvg10Threshold",
            g.cpu_psi_full_avg10_threshold,
        ),
    ] {
        c.range_f64(path, value, 0.0, false, 100.0);
    }
    c.range_f64(
        "gracefulDegradation.criticalCgroupMemoryRatio",
        g.critical_cgroup_memory_ratio,
        0.0,
        false,
        1.0,
    );
    c.range_f64(
        "gracefulDegradation.criticalMemoryPsiFullAvg10",
        g.critical_memory_psi_full_avg10,
        0.0,
        false,
        100.0,
    );
    if g.refuse_on_critical_memory
        && g.critical_memory_psi_full_avg10 < g.memory_psi_full_avg10_threshold
    {
        c.warn(
            "gracefulDegradation.criticalMemoryPsiFullAvg10",
            format!(
                "is below gracefulDegradation.memoryPsiFullAvg10Threshold ({}): requests are refused \
                 before their output is clamped",
                g.memory_psi_full_avg10_threshold
            ),
        );
    }

    // promptCompiler
    let p = &config.prompt_compiler;
    if p.family_metadata_keys.len() > 16 {
        c.error(
            "promptCompiler.familyMetadataKeys",
            format!(
                "must have at most 16 entries, got {}",
                p.family_metadata_keys.len()
            ),
        );
    }
    for (i, key) in p.family_metadata_keys.iter().enumerate() {
        c.text(
            &format!("promptCompiler.familyMetadataKeys[{i}]"),
            key,
            128,
            false,
        );
    }

    // adaptiveTuning
    let a = &config.adaptive_tuning;
    c.range("adaptiveTuning.sampleSize", a.sample_size.into(), 1, 512);
    c.range(
        "adaptiveTuning.queueLatencyThresholdMs",
        a.queue_latency_threshold_ms,
        1,
        120_000,
    );
    c.range_f64(
        "adaptiveTuning.minCompletionTokensPerSecond",
        a.min_completion_tokens_per_second,
        0.0,
        false,
        1_000.0,
    );
    c.range_f64(
        "adaptiveTuning.maxOutputReductionRatio",
        a.max_output_reduction_ratio,
        0.0,
        true,
        1.0,
    );
    c.at_most_field(
        "adaptiveTuning.minOutputTokens",
        a.min_output_tokens.into(),
        1,
        positive(model_max),
        "model.maxOutputTokens",
    );
    c.range(
        "adaptiveTuning.familyHistorySize",
        a.family_history_size.into(),
        1,
        1_024,
    );
    c.at_most_field(
        "adaptiveTuning.learnedCapMinSamples",
        a.learned_cap_min_samples.into(),
        1,
        positive(a.family_history_size),
        "adaptiveTuning.familyHistorySize",
    );
    c.range_f64(
        "adaptiveTuning.draftPercentile",
        a.draft_percentile,
        0.0,
        true,
        1.0,
    );
    c.range_f64(
        "adaptiveTuning.shortPercentile",
        a.short_percentile,
        0.0,
        true,
        1.0,
    );
    c.at_most_field(
        "adaptiveTuning.learnedCapHeadroomTokens",
        a.learned_cap_headroom_tokens.into(),
        0,
        positive(model_max),
        "model.maxOutputTokens",
    );

    // auth
    if !is_env_var_name(&config.auth.api_key_env) {
        c.error(
            "auth.apiKeyEnv",
            format!(
                "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*), got {:?}",
                config.auth.api_key_env
            ),
        );
    }
    if !config.auth.enabled && public_bind {
        c.warn(
            "auth.enabled",
            format!(
                "is false while server.host {} accepts remote clients: anyone who can reach \
                 the port can run inference",
                server.host
            ),
        );
    }

    // rateLimit
    let r = &config.rate_limit;
    c.range("rateLimit.windowMs", r.window_ms, 1, 3_600_000);
    c.range("rateLimit.maxRequests", r.max_requests.into(), 1, 10_000);
    c.range("rateLimit.maxKeys", r.max_keys.into(), 1, 16_384);
    if r.enabled && r.key_strategy != RateLimitKeyStrategy::Ip && !config.auth.enabled {
        c.warn(
            "rateLimit.keyStrategy",
            "names the API key while auth is disabled: unverified tokens are ignored and \
             every client is limited by its IP",
        );
    }
    if r.enabled && r.trust_proxy_headers && public_bind {
        c.warn(
            "rateLimit.trustProxyHeaders",
            format!(
                "is true while server.host {} is reachable directly: only enable it behind a \
                 reverse proxy on the same box",
                server.host
            ),
        );
    }

    // tags
    if config.tags.len() > 64 {
        c.error(
            "tags",
            format!("must have at most 64 entries, got {}", config.tags.len()),
        );
    }
    for (key, value) in &config.tags {
        if key.is_empty() || key.chars().count() > 128 {
            c.error("tags", format!("key {key:?} must be 1 to 128 chars"));
        }
        c.text(&format!("tags.{key}"), value, 4_096, true);
    }

    c.diagnostics
}

fn validate_adapter(c: &mut Checker, config: &RayConfig) {
    let model_max = config.model.max_output_tokens;
    match &config.model.adapter {
        AdapterConfig::Mock(mock) => {
            c.range("model.adapter.latencyMs", mock.latency_ms, 0, 120_000);
            if let Some(seed) = &mock.seed {
                c.text("model.adapter.seed", seed, 512, true);
            }
        }
        AdapterConfig::OpenAiCompatible(_) | AdapterConfig::LlamaCpp(_) => {}
    }
    let Some(http) = config.model.adapter.http() else {
        return;
    };
    validate_base_url(c, config, http.base_url);
    c.text("model.adapter.modelRef", http.model_ref, 256, false);
    if let Some(env) = http.api_key_env
        && !is_env_var_name(env)
    {
        c.error(
            "model.adapter.apiKeyEnv",
            format!("must be an environment variable name, got {env:?}"),
        );
    }
    c.range("model.adapter.timeoutMs", http.timeout_ms, 1, 120_000);
    if let Some(headers) = http.headers {
        if headers.len() > 64 {
            c.error(
                "model.adapter.headers",
                format!("must have at most 64 entries, got {}", headers.len()),
            );
        }
        for (name, value) in headers {
            let lower = name.to_ascii_lowercase();
            if RESERVED_ADAPTER_HEADERS.contains(&lower.as_str()) {
                c.error(
                    "model.adapter.headers",
                    format!("{name:?} is a hop-by-hop or computed header and cannot be set"),
                );
            } else if !is_header_name(name) {
                c.error(
                    "model.adapter.headers",
                    format!("{name:?} is not a valid header name"),
                );
            }
            if value.chars().any(|ch| ch.is_control() && ch != '\t') || value.len() > 8_192 {
                c.error(
                    &format!("model.adapter.headers.{name}"),
                    "must be at most 8192 bytes with no control characters",
                );
            }
        }
    }
    if let Some(warmups) = http.warmup_requests {
        if warmups.len() > 8 {
            c.error(
                "model.adapter.warmupRequests",
                format!("must have at most 8 entries, got {}", warmups.len()),
            );
        }
        for (i, warmup) in warmups.iter().enumerate() {
            let path = format!("model.adapter.warmupRequests[{i}]");
            for (field, text) in [("input", &warmup.input), ("system", &warmup.system)] {
                if let Some(text) = text {
                    c.text(&format!("{path}.{field}"), text, 8_192, true);
                }
            }
            if warmup.input.is_none() && warmup.template_id.is_none() {
                c.error(&path, "needs input or templateId");
            }
            if let Some(max_tokens) = warmup.max_tokens {
                c.at_most_field(
                    &format!("{path}.maxTokens"),
                    max_tokens.into(),
                    1,
                    positive(model_max),
                    "model.maxOutputTokens",
                );
            }
        }
    }

    let AdapterConfig::LlamaCpp(llama) = &config.model.adapter else {
        return;
    };
    if let Some(v) = llama.slot_state_ttl_ms {
        c.range("model.adapter.slotStateTtlMs", v, 1, 120_000);
    }
    if let Some(v) = llama.slot_snapshot_timeout_ms {
        c.at_most_field(
            "model.adapter.slotSnapshotTimeoutMs",
            v,
            1,
            positive(llama.timeout_ms),
            "model.adapter.timeoutMs",
        );
    }
    if let Some(v) = llama.prompt_scaffold_cache_entries {
        c.range(
            "model.adapter.promptScaffoldCacheEntries",
            v.into(),
            1,
            4_096,
        );
    }
    if let Some(launch) = &llama.launch_profile {
        validate_launch_profile(c, config, launch);
    }
}

fn validate_launch_profile(c: &mut Checker, config: &RayConfig, launch: &LaunchProfile) {
    const P: &str = "model.adapter.launchProfile";
    c.text(
        &format!("{P}.binaryPath"),
        &launch.binary_path,
        4_096,
        false,
    );
    c.text(&format!("{P}.modelPath"), &launch.model_path, 4_096, false);
    if !is_loopback_host(&launch.host) {
        c.error(
            &format!("{P}.host"),
            format!(
                "must be a loopback address (llama-server has no auth of its own), got {:?}",
                launch.host
            ),
        );
    }
    if launch.port == 0 {
        c.error(&format!("{P}.port"), "must be at least 1, got 0");
    }
    if let Some(alias) = &launch.alias {
        c.text(&format!("{P}.alias"), alias, 256, false);
    }
    c.range(&format!("{P}.ctxSize"), launch.ctx_size.into(), 1, 32_768);
    if launch.ctx_size > config.model.context_window {
        c.error(
            &format!("{P}.ctxSize"),
            format!(
                "must be at most model.contextWindow ({}), got {}",
                config.model.context_window, launch.ctx_size
            ),
        );
    }
    c.range(&format!("{P}.parallel"), launch.parallel.into(), 1, 8);
    c.range(&format!("{P}.threads"), launch.threads.into(), 1, 32);
    if let Some(v) = launch.threads_batch {
        c.range(&format!("{P}.threadsBatch"), v.into(), 1, 32);
    }
    c.range(
        &format!("{P}.threadsHttp"),
        launch.threads_http.into(),
        1,
        16,
    );
    c.range(
        &format!("{P}.batchSize"),
        launch.batch_size.into(),
        1,
        4_096,
    );
    c.at_most_field(
        &format!("{P}.ubatchSize"),
        launch.ubatch_size.into(),
        1,
        positive(launch.batch_size),
        "launchProfile.batchSize",
    );
    c.range(
        &format!("{P}.cacheReuse"),
        launch.cache_reuse.into(),
        0,
        32_768,
    );
    if let Some(v) = launch.cache_ram_mib {
        c.range_i64(&format!("{P}.cacheRamMiB"), v.into(), -1, 8_192);
    }
    if let Some(args) = &launch.extra_args {
        if args.len() > 64 {
            c.error(
                &format!("{P}.extraArgs"),
                format!("must have at most 64 entries, got {}", args.len()),
            );
        }
        for (i, arg) in args.iter().enumerate() {
            let flag = arg.split('=').next().unwrap_or(arg);
            if GENERATED_LLAMA_FLAGS.contains(&flag) {
                c.error(
                    &format!("{P}.extraArgs[{i}]"),
                    format!("{flag} is generated from the launch profile; set the field instead"),
                );
            }
        }
    }
    // The gateway and llama-server must not fight over one port.
    let server = &config.server;
    if launch.port == server.port && binds_overlap(&launch.host, &server.host) {
        c.error(
            &format!("{P}.port"),
            format!(
                "{} is also server.port on an overlapping address; the gateway and llama-server \
                 need different ports",
                launch.port
            ),
        );
    }
}

fn validate_base_url(c: &mut Checker, config: &RayConfig, base_url: &str) {
    const P: &str = "model.adapter.baseUrl";
    let url = match ParsedUrl::parse(base_url) {
        Ok(url) => url,
        Err(problem) => {
            c.error(P, format!("{problem}, got {base_url:?}"));
            return;
        }
    };
    // Recursion guard: the backend must not be the gateway itself.
    if url.port == config.server.port && binds_overlap(&url.host, &config.server.host) {
        c.error(
            P,
            format!(
                "points at the gateway itself ({}:{}); it must name the backend",
                config.server.host, config.server.port
            ),
        );
    }
    if let Some(launch) = config.model.adapter.launch_profile() {
        if url.scheme != "http" {
            c.error(
                P,
                "must be plain http when a launchProfile is set (llama-server listens on loopback)",
            );
        }
        if !is_loopback_host(&url.host) {
            c.error(P, "must be a loopback address when a launchProfile is set");
        }
        if url.port != launch.port {
            c.error(
                P,
                format!(
                    "port {} differs from launchProfile.port {}",
                    url.port, launch.port
                ),
            );
        }
        if launch.host.parse::<IpAddr>().is_ok() && url.host != launch.host {
            c.error(
                P,
                format!(
                    "host {} differs from launchProfile.host {}",
                    url.host, launch.host
                ),
            );
        }
        if url.path != "/" && !url.path.is_empty() {
            c.error(
                P,
                "must have no path when a launchProfile is set (llama-server serves at /)",
            );
        }
    }
}

/// The parts of an absolute http(s) URL that validation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedUrl {
    /// `http` or `https`.
    pub scheme: String,
    /// Host without brackets, lower-cased.
    pub host: String,
    /// Port, defaulted from the scheme.
    pub port: u16,
    /// Path, `/` or empty when absent.
    pub path: String,
}

impl ParsedUrl {
    /// Parses an absolute http(s) URL with no credentials, query or fragment.
    pub fn parse(url: &str) -> Result<ParsedUrl, &'static str> {
        if url.len() > 2_048 {
            return Err("must be at most 2048 chars");
        }
        if url.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
            return Err("must not contain whitespace or control characters");
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("must be an absolute http or https URL")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err("must use http or https"),
        };
        if rest.contains('?') || rest.contains('#') {
            return Err("must not have a query or fragment");
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err("must not contain credentials");
        }
        if authority.is_empty() {
            return Err("must have a host");
        }
        let (host, port) = if let Some(after) = authority.strip_prefix('[') {
            let (host, tail) = after
                .split_once(']')
                .ok_or("has an unclosed IPv6 bracket")?;
            let port = match tail.strip_prefix(':') {
                Some(p) => Some(p),
                None if tail.is_empty() => None,
                None => return Err("has garbage after the IPv6 address"),
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err("must have a host");
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or("has an invalid port")?,
            None => default_port,
        };
        Ok(ParsedUrl {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            path: path.to_string(),
        })
    }
}

/// Whether a host name or address is loopback (`localhost`, `127.0.0.0/8`, `::1`).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_wildcard(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

/// Whether two bind addresses can collide on one port.
fn binds_overlap(a: &str, b: &str) -> bool {
    if is_wildcard(a) || is_wildcard(b) {
        return true;
    }
    if is_loopback_host(a) && is_loopback_host(b) {
        // 127.0.0.1 and localhost are the same socket; 127.0.0.2 is another address, but
        // treating the whole range as one is the safe side for a single box.
        return true;
    }
    a.eq_ignore_ascii_case(b)
}

/// Whether `name` is a valid environment variable name.
pub fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
        && name.len() <= 256
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `pattern` is a host name or `*.suffix` with at least one dot-separated label.
pub fn is_allowed_host_pattern(pattern: &str) -> bool {
    let host = pattern.strip_prefix("*.").unwrap_or(pattern);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::profiles::profile_defaults;

    fn errors(config: &RayConfig) -> Vec<String> {
        validate(config)
            .into_iter()
            .filter(Diagnostic::is_error)
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn every_profile_default_is_valid() {
        for profile in Profile::ALL {
            let config = profile_defaults(profile);
            assert_eq!(errors(&config), Vec::<String>::new(), "{profile}");
        }
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let mut config = profile_defaults(Profile::Tiny);
        config.scheduler.max_queue = 0;
        config.cache.max_entries = 5_000;
        config.rate_limit.max_keys = 0;
        let errors = errors(&config);
        assert!(errors.contains(&"scheduler.maxQueue: must be at least 1, got 0".to_string()));
        assert!(errors.contains(&"cache.maxEntries: must be at most 4096, got 5000".to_string()));
        assert!(errors.contains(&"rateLimit.maxKeys: must be at least 1, got 0".to_string()));
    }

    #[test]
    fn an_invalid_bound_is_reported_once_not_as_a_made_up_bound_of_other_fields() {
        let mut config = profile_defaults(Profile::Sub1b);
        config.scheduler.max_queue = 0;
        assert_eq!(
            errors(&config),
            vec!["scheduler.maxQueue: must be at least 1, got 0".to_string()]
        );

        let mut config = profile_defaults(Profile::Sub1b);
        config.model.max_output_tokens = 0;
        let errors = errors(&config);
        assert!(
            errors.contains(&"model.maxOutputTokens: must be at least 1, got 0".to_string()),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .all(|e| !e.contains("model.maxOutputTokens (")),
            "{errors:?}"
        );

        // A bound the user gave, even out of its own range, is quoted as given.
        let mut config = profile_defaults(Profile::Sub1b);
        config.scheduler.max_queue = 1;
        assert!(errors_contain(
            &config,
            "gracefulDegradation.queueDepthThreshold: must be at most scheduler.maxQueue - 1 (0), \
             got 16"
        ));
    }

    #[test]
    fn critical_memory_thresholds_are_checked_and_a_refusal_before_the_clamp_warns() {
        let mut config = profile_defaults(Profile::Sub1b);
        config.graceful_degradation.critical_cgroup_memory_ratio = 1.5;
        config.graceful_degradation.critical_memory_psi_full_avg10 = 0.0;
        let errors = errors(&config);
        assert!(
            errors.contains(
                &"gracefulDegradation.criticalCgroupMemoryRatio: must be at most 1, got 1.5"
                    .to_string()
            )
        );
        assert!(
            errors.contains(
                &"gracefulDegradation.criticalMemoryPsiFullAvg10: must be greater than 0, got 0"
                    .to_string()
            )
        );

        let mut config = profile_defaults(Profile::Sub1b);
        config.graceful_degradation.critical_memory_psi_full_avg10 = 0.5;
        let warnings: Vec<String> = validate(&config)
            .into_iter()
            .filter(|d| !d.is_error())
            .map(|d| d.to_string())
            .collect();
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("gracefulDegradation.criticalMemoryPsiFullAvg10: is below")),
            "{warnings:?}"
        );
        // With the refusal off, the threshold does nothing and nothing is said.
        config.graceful_degradation.refuse_on_critical_memory = false;
        assert!(validate(&config).is_empty());
    }

    fn errors_contain(config: &RayConfig, message: &str) -> bool {
        errors(config).iter().any(|e| e == message)
    }

    #[test]
    fn an_api_key_strategy_without_auth_warns_that_the_ip_decides() {
        let mut config = profile_defaults(Profile::Sub1b);
        config.rate_limit.key_strategy = RateLimitKeyStrategy::IpApiKey;
        let warnings: Vec<String> = validate(&config)
            .into_iter()
            .filter(|d| !d.is_error() && d.path == "rateLimit.keyStrategy")
            .map(|d| d.message)
            .collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("limited by its IP"), "{warnings:?}");
        config.auth.enabled = true;
        assert!(
            validate(&config)
                .iter()
                .all(|d| d.path != "rateLimit.keyStrategy")
        );
    }

    #[test]
    fn base_url_may_not_point_at_the_gateway() {
        let mut config = profile_defaults(Profile::Vps);
        if let AdapterConfig::OpenAiCompatible(a) = &mut config.model.adapter {
            a.base_url = "http://localhost:3000".into();
        }
        assert!(
            errors(&config)
                .iter()
                .any(|e| e.contains("points at the gateway itself"))
        );
    }

    #[test]
    fn launch_profile_ties_base_url_to_its_port() {
        let mut config = profile_defaults(Profile::Sub1b);
        if let AdapterConfig::LlamaCpp(a) = &mut config.model.adapter {
            a.base_url = "http://127.0.0.1:9000".into();
        }
        assert!(
            errors(&config)
                .iter()
                .any(|e| e.contains("differs from launchProfile.port"))
        );
    }

    #[test]
    fn generated_flags_are_refused_in_extra_args() {
        let mut config = profile_defaults(Profile::Sub1b);
        if let AdapterConfig::LlamaCpp(a) = &mut config.model.adapter {
            a.launch_profile.as_mut().unwrap().extra_args =
                Some(vec!["--ctx-size=9".into(), "--mlock".into(), "-np".into()]);
        }
        let errors = errors(&config);
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn public_bind_without_auth_warns() {
        let mut config = profile_defaults(Profile::Tiny);
        config.server.host = "0.0.0.0".into();
        let diagnostics = validate(&config);
        assert!(
            diagnostics
                .iter()
                .any(|d| !d.is_error() && d.path == "auth.enabled")
        );
    }

    #[test]
    fn parses_urls() {
        let url = ParsedUrl::parse("http://[::1]:8081/").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 8081));
        assert!(ParsedUrl::parse("http://user:pw@host").is_err());
        assert!(ParsedUrl::parse("ftp://host").is_err());
        assert!(ParsedUrl::parse("http://host?x=1").is_err());
        assert!(ParsedUrl::parse("http://host:0").is_err());
        assert_eq!(ParsedUrl::parse("https://h").unwrap().port, 443);
    }

    #[test]
    fn host_patterns() {
        assert!(is_allowed_host_pattern("hooks.example.com"));
        assert!(is_allowed_host_pattern("*.example.com"));
        assert!(!is_allowed_host_pattern("*."));
        assert!(!is_allowed_host_pattern("bad host"));
    }
}
