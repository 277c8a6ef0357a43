//! Validation of a merged [`RayConfig`]: every problem at once, each with its JSON path.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::limits::{Limit, limits_of};
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
    /// For a rule between two fields: what the loader needs to say which one to change when
    /// a value came from the profile.
    #[serde(skip)]
    pub(crate) cross: Option<Box<CrossField>>,
}

/// A failed rule between two fields, for the loader to explain when a value came from the
/// profile rather than the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CrossField {
    /// The offending field's value, as the message shows it.
    pub(crate) value: String,
    /// What the offending field must be, e.g. `at most 32`.
    pub(crate) requirement: String,
    /// The other way to satisfy the rule, e.g. `raise model.maxOutputTokens`.
    pub(crate) alternative: String,
    /// The full path of the other field of the rule.
    pub(crate) other: String,
    /// The other field's value.
    pub(crate) other_value: String,
    /// How to change the other field, e.g. `set it to at least 300`.
    pub(crate) other_fix: String,
}

impl CrossField {
    fn new(
        value: impl fmt::Display,
        requirement: impl Into<String>,
        alternative: impl Into<String>,
        other: impl Into<String>,
        other_value: impl fmt::Display,
        other_fix: impl Into<String>,
    ) -> CrossField {
        CrossField {
            value: value.to_string(),
            requirement: requirement.into(),
            alternative: alternative.into(),
            other: other.into(),
            other_value: other_value.to_string(),
            other_fix: other_fix.into(),
        }
    }
}

impl Diagnostic {
    /// A fatal problem.
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
            source: None,
            cross: None,
        }
    }

    /// A warning.
    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            path: path.into(),
            message: message.into(),
            source: None,
            cross: None,
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

    /// An error of a rule between two fields.
    fn cross_error(&mut self, path: &str, message: impl Into<String>, cross: CrossField) {
        let mut diagnostic = Diagnostic::error(path, message);
        diagnostic.cross = Some(Box::new(cross));
        self.diagnostics.push(diagnostic);
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::warning(path, message));
    }

    /// The rule of `path` that `kind` accepts; an internal error when the table has none, so a
    /// check the schema would not carry cannot go unnoticed.
    fn limit(&mut self, path: &str, kind: impl Fn(&Limit) -> bool) -> Option<&'static Limit> {
        let found = limits_of(path).find(|limit| kind(limit));
        if found.is_none() {
            self.error(path, "internal: no rule for this field in FIELD_LIMITS");
        }
        found
    }

    /// A whole number within its [`Limit::Int`], reported as "must be at least/at most".
    fn int(&mut self, path: &str, value: i128) {
        let Some(&Limit::Int { min, max }) = self.limit(path, |l| matches!(l, Limit::Int { .. }))
        else {
            return;
        };
        if value < i128::from(min) {
            self.error(path, format!("must be at least {min}, got {value}"));
        } else if value > i128::from(max) {
            self.error(path, format!("must be at most {max}, got {value}"));
        }
    }

    /// A whole number whose lower bound is in [`FIELD_LIMITS`] and whose upper bound is another
    /// field, named in the message.
    /// `max` is `None` when that field is invalid itself: its own error says so, and a bound
    /// made up from it would only mislead, so just the minimum is checked.
    fn at_most_field(&mut self, path: &str, value: u64, max: Option<u64>, max_field: &str) {
        let Some(&Limit::AtLeast { min }) =
            self.limit(path, |l| matches!(l, Limit::AtLeast { .. }))
        else {
            return;
        };
        let min = u64::try_from(min).unwrap_or(0);
        if value < min {
            self.error(path, format!("must be at least {min}, got {value}"));
        } else if let Some(max) = max
            && value > max
        {
            // `max_field` is a path, a launch-profile path without its prefix, or `... - 1`.
            let (other, other_value, needed) = match max_field.strip_suffix(" - 1") {
                Some(other) => (other, max + 1, value + 1),
                None => (max_field, max, value),
            };
            let other = match other.strip_prefix("launchProfile.") {
                Some(field) => format!("model.adapter.launchProfile.{field}"),
                None => other.to_string(),
            };
            self.cross_error(
                path,
                format!("must be at most {max_field} ({max}), got {value}"),
                CrossField::new(
                    value,
                    format!("at most {max}"),
                    format!("raise {other}"),
                    other.clone(),
                    other_value,
                    format!("set it to at least {needed}, or lower {path}"),
                ),
            );
        }
    }

    /// A number within its [`Limit::Number`], for ratios and PSI values.
    fn number(&mut self, path: &str, value: f64) {
        let Some(&Limit::Number {
            min,
            min_inclusive,
            max,
        }) = self.limit(path, |l| matches!(l, Limit::Number { .. }))
        else {
            return;
        };
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

    /// Text within its [`Limit::Text`].
    fn text(&mut self, path: &str, value: &str) {
        let Some(&Limit::Text {
            max_chars,
            allow_empty,
        }) = self.limit(path, |l| matches!(l, Limit::Text { .. }))
        else {
            return;
        };
        if !allow_empty && value.trim().is_empty() {
            self.error(path, "must not be empty");
        }
        let chars = value.chars().count();
        if chars > max_chars as usize {
            self.error(
                path,
                format!("must be at most {max_chars} chars, got {chars}"),
            );
        }
        if value.chars().any(char::is_control) {
            self.error(path, "must not contain control characters");
        }
    }

    /// A list or object within its [`Limit::Entries`].
    fn entries(&mut self, path: &str, count: usize) {
        let Some(&Limit::Entries { max }) =
            self.limit(path, |l| matches!(l, Limit::Entries { .. }))
        else {
            return;
        };
        if count > max as usize {
            self.error(
                path,
                format!("must have at most {max} entries, got {count}"),
            );
        }
    }

    /// Whether `path` has the rule `limit` (which the caller then checks itself).
    fn has(&mut self, path: &str, limit: Limit) -> bool {
        self.limit(path, |l| *l == limit).is_some()
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
    c.text("server.host", &server.host);
    c.int(
        "server.requestBodyLimitBytes",
        i128::from(server.request_body_limit_bytes),
    );
    let public_bind = !is_loopback_host(&server.host);

    // model
    let model = &config.model;
    c.text("model.id", &model.id);
    c.text("model.family", &model.family);
    c.int("model.contextWindow", i128::from(model.context_window));
    c.int("model.maxOutputTokens", i128::from(model.max_output_tokens));
    if model.max_output_tokens > model.context_window {
        c.cross_error(
            "model.maxOutputTokens",
            format!(
                "must be at most model.contextWindow ({}), got {}",
                model.context_window, model.max_output_tokens
            ),
            CrossField::new(
                model.max_output_tokens,
                format!("at most {}", model.context_window),
                "raise model.contextWindow",
                "model.contextWindow",
                model.context_window,
                format!(
                    "set it to at least {}, or lower model.maxOutputTokens",
                    model.max_output_tokens
                ),
            ),
        );
    }
    if let Some(op) = &model.operational {
        if let Some(v) = op.tokens_per_second_target {
            c.int("model.operational.tokensPerSecondTarget", i128::from(v));
        }
        if let Some(v) = op.memory_class_mib {
            c.int("model.operational.memoryClassMiB", i128::from(v));
        }
        if let Some(v) = op.preferred_ctx_size {
            c.int("model.operational.preferredCtxSize", i128::from(v));
        }
    }
    validate_adapter(&mut c, config);

    // scheduler
    let s = &config.scheduler;
    c.int("scheduler.concurrency", i128::from(s.concurrency));
    c.int("scheduler.maxQueue", i128::from(s.max_queue));
    c.int("scheduler.maxQueuedTokens", i128::from(s.max_queued_tokens));
    c.int(
        "scheduler.maxInflightTokens",
        i128::from(s.max_inflight_tokens),
    );
    c.int(
        "scheduler.requestTimeoutMs",
        i128::from(s.request_timeout_ms),
    );
    c.int("scheduler.batchWindowMs", i128::from(s.batch_window_ms));
    if s.batch_window_ms >= s.request_timeout_ms && s.request_timeout_ms > 0 {
        c.cross_error(
            "scheduler.batchWindowMs",
            format!(
                "must be less than scheduler.requestTimeoutMs ({}), got {}",
                s.request_timeout_ms, s.batch_window_ms
            ),
            CrossField::new(
                s.batch_window_ms,
                format!("less than {}", s.request_timeout_ms),
                "raise scheduler.requestTimeoutMs",
                "scheduler.requestTimeoutMs",
                s.request_timeout_ms,
                format!(
                    "set it above {}, or lower scheduler.batchWindowMs",
                    s.batch_window_ms
                ),
            ),
        );
    }
    c.at_most_field(
        "scheduler.affinityLookahead",
        s.affinity_lookahead.into(),
        positive(s.max_queue),
        "scheduler.maxQueue",
    );
    c.int(
        "scheduler.maxDedupeWaiters",
        i128::from(s.max_dedupe_waiters),
    );
    c.int("scheduler.maxChoices", i128::from(s.max_choices));
    c.at_most_field(
        "scheduler.shortJobMaxTokens",
        s.short_job_max_tokens.into(),
        positive(model_max),
        "model.maxOutputTokens",
    );
    for (field, value) in [
        ("scheduler.maxInflightTokens", s.max_inflight_tokens),
        ("scheduler.maxQueuedTokens", s.max_queued_tokens),
    ] {
        if value <= model_max {
            c.cross_error(
                field,
                format!(
                    "must be at least model.maxOutputTokens + 1 ({}) so a request of the largest \
                     output fits, got {value}",
                    u64::from(model_max) + 1
                ),
                CrossField::new(
                    value,
                    format!("at least {}", u64::from(model_max) + 1),
                    "lower model.maxOutputTokens",
                    "model.maxOutputTokens",
                    model_max,
                    format!(
                        "set it to at most {}, or raise {field}",
                        value.saturating_sub(1)
                    ),
                ),
            );
        }
    }
    if let Some(launch) = config.model.adapter.launch_profile() {
        let capacity = u64::from(launch.ctx_size) * u64::from(launch.parallel);
        if u64::from(s.max_inflight_tokens) > capacity {
            c.cross_error(
                "scheduler.maxInflightTokens",
                format!(
                    "must be at most launchProfile.ctxSize × parallel ({capacity}), got {}",
                    s.max_inflight_tokens
                ),
                CrossField::new(
                    s.max_inflight_tokens,
                    format!("at most {capacity}"),
                    "raise model.adapter.launchProfile.ctxSize or parallel",
                    "model.adapter.launchProfile.ctxSize",
                    launch.ctx_size,
                    format!(
                        "raise it or parallel so ctxSize × parallel is at least {}, or lower \
                         scheduler.maxInflightTokens",
                        s.max_inflight_tokens
                    ),
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
    c.int(
        "streaming.firstTokenTimeoutMs",
        i128::from(st.first_token_timeout_ms),
    );
    c.int("streaming.idleTimeoutMs", i128::from(st.idle_timeout_ms));
    c.int("streaming.totalTimeoutMs", i128::from(st.total_timeout_ms));
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
    c.text("asyncQueue.storageDir", &q.storage_dir);
    c.int("asyncQueue.maxJobs", i128::from(q.max_jobs));
    c.int(
        "asyncQueue.minFreeStorageMiB",
        i128::from(q.min_free_storage_mib),
    );
    c.int("asyncQueue.completedTtlMs", i128::from(q.completed_ttl_ms));
    c.int("asyncQueue.pollIntervalMs", i128::from(q.poll_interval_ms));
    c.int(
        "asyncQueue.dispatchConcurrency",
        i128::from(q.dispatch_concurrency),
    );
    c.int("asyncQueue.maxAttempts", i128::from(q.max_attempts));
    c.int(
        "asyncQueue.callbackTimeoutMs",
        i128::from(q.callback_timeout_ms),
    );
    c.int(
        "asyncQueue.maxCallbackAttempts",
        i128::from(q.max_callback_attempts),
    );
    c.entries(
        "asyncQueue.callbackAllowedHosts",
        q.callback_allowed_hosts.len(),
    );
    for (i, host) in q.callback_allowed_hosts.iter().enumerate() {
        let path = format!("asyncQueue.callbackAllowedHosts[{i}]");
        if c.has(&path, Limit::HostPattern) && !is_allowed_host_pattern(host) {
            c.error(
                &path,
                format!("must be a host name or *.suffix, got {host:?}"),
            );
        }
    }
    if c.has("asyncQueue.callbackSigningSecretEnv", Limit::EnvVarName)
        && !is_env_var_name(&q.callback_signing_secret_env)
    {
        c.error(
            "asyncQueue.callbackSigningSecretEnv",
            format!(
                "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*), got {:?}",
                q.callback_signing_secret_env
            ),
        );
    }
    c.int("asyncQueue.maxRecordBytes", i128::from(q.max_record_bytes));

    // cache
    let cache = &config.cache;
    c.int("cache.maxEntries", i128::from(cache.max_entries));
    c.int("cache.maxBytes", i128::from(cache.max_bytes));
    c.int("cache.ttlMs", i128::from(cache.ttl_ms));
    if cache.enabled && cache.ttl_ms == 0 {
        c.warn(
            "cache.ttlMs",
            "is 0: cached results never expire and leave only when the cache is full",
        );
    }

    // telemetry
    let t = &config.telemetry;
    c.text("telemetry.serviceName", &t.service_name);
    c.int(
        "telemetry.slowRequestThresholdMs",
        i128::from(t.slow_request_threshold_ms),
    );
    c.int(
        "telemetry.accessLogSampleEvery",
        i128::from(t.access_log_sample_every),
    );

    // gracefulDegradation
    let g = &config.graceful_degradation;
    c.at_most_field(
        "gracefulDegradation.queueDepthThreshold",
        g.queue_depth_threshold.into(),
        positive(s.max_queue).map(|max_queue| max_queue - 1),
        "scheduler.maxQueue - 1",
    );
    c.int(
        "gracefulDegradation.maxPromptChars",
        i128::from(g.max_prompt_chars),
    );
    c.at_most_field(
        "gracefulDegradation.degradeToMaxTokens",
        g.degrade_to_max_tokens.into(),
        positive(model_max),
        "model.maxOutputTokens",
    );
    c.int(
        "gracefulDegradation.memoryRssThresholdMiB",
        i128::from(g.memory_rss_threshold_mib),
    );
    c.number(
        "gracefulDegradation.memoryCgroupPressureRatioThreshold",
        g.memory_cgroup_pressure_ratio_threshold,
    );
    c.number(
        "gracefulDegradation.cpuThrottledRatioThreshold",
        g.cpu_throttled_ratio_threshold,
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
        c.number(path, value);
    }
    c.number(
        "gracefulDegradation.criticalCgroupMemoryRatio",
        g.critical_cgroup_memory_ratio,
    );
    c.number(
        "gracefulDegradation.criticalMemoryPsiFullAvg10",
        g.critical_memory_psi_full_avg10,
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
    c.entries(
        "promptCompiler.familyMetadataKeys",
        p.family_metadata_keys.len(),
    );
    for (i, key) in p.family_metadata_keys.iter().enumerate() {
        c.text(&format!("promptCompiler.familyMetadataKeys[{i}]"), key);
    }

    // adaptiveTuning
    let a = &config.adaptive_tuning;
    c.int("adaptiveTuning.sampleSize", i128::from(a.sample_size));
    c.int(
        "adaptiveTuning.queueLatencyThresholdMs",
        i128::from(a.queue_latency_threshold_ms),
    );
    c.number(
        "adaptiveTuning.minCompletionTokensPerSecond",
        a.min_completion_tokens_per_second,
    );
    c.number(
        "adaptiveTuning.maxOutputReductionRatio",
        a.max_output_reduction_ratio,
    );
    c.at_most_field(
        "adaptiveTuning.minOutputTokens",
        a.min_output_tokens.into(),
        positive(model_max),
        "model.maxOutputTokens",
    );
    c.int(
        "adaptiveTuning.familyHistorySize",
        i128::from(a.family_history_size),
    );
    c.at_most_field(
        "adaptiveTuning.learnedCapMinSamples",
        a.learned_cap_min_samples.into(),
        positive(a.family_history_size),
        "adaptiveTuning.familyHistorySize",
    );
    c.number("adaptiveTuning.draftPercentile", a.draft_percentile);
    c.number("adaptiveTuning.shortPercentile", a.short_percentile);
    c.at_most_field(
        "adaptiveTuning.learnedCapHeadroomTokens",
        a.learned_cap_headroom_tokens.into(),
        positive(model_max),
        "model.maxOutputTokens",
    );

    // auth
    if c.has("auth.apiKeyEnv", Limit::EnvVarName) && !is_env_var_name(&config.auth.api_key_env) {
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
    c.int("rateLimit.windowMs", i128::from(r.window_ms));
    c.int("rateLimit.maxRequests", i128::from(r.max_requests));
    c.int("rateLimit.maxKeys", i128::from(r.max_keys));
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
    c.entries("tags", config.tags.len());
    for (key, value) in &config.tags {
        if let Some(&Limit::KeyLength { max_chars }) =
            c.limit("tags", |l| matches!(l, Limit::KeyLength { .. }))
            && (key.is_empty() || key.chars().count() > max_chars as usize)
        {
            c.error(
                "tags",
                format!("key {key:?} must be 1 to {max_chars} chars"),
            );
        }
        c.text(&format!("tags.{key}"), value);
    }

    let mut diagnostics = c.diagnostics;
    diagnostics.extend(super::validate_models::validate_models(config));
    diagnostics.extend(super::lifecycle::validate_lifecycle(config));
    if let Some(cluster) = &config.cluster {
        let names = config.model_names();
        diagnostics.extend(super::cluster::validate_cluster(cluster, &names));
    }
    diagnostics
}

fn validate_adapter(c: &mut Checker, config: &RayConfig) {
    let model_max = config.model.max_output_tokens;
    match &config.model.adapter {
        AdapterConfig::Mock(mock) => {
            c.int("model.adapter.latencyMs", i128::from(mock.latency_ms));
            if let Some(seed) = &mock.seed {
                c.text("model.adapter.seed", seed);
            }
        }
        AdapterConfig::OpenAiCompatible(_) | AdapterConfig::LlamaCpp(_) => {}
    }
    let Some(http) = config.model.adapter.http() else {
        return;
    };
    validate_base_url(c, config, http.base_url);
    c.text("model.adapter.modelRef", http.model_ref);
    if let Some(env) = http.api_key_env
        && c.has("model.adapter.apiKeyEnv", Limit::EnvVarName)
        && !is_env_var_name(env)
    {
        c.error(
            "model.adapter.apiKeyEnv",
            format!("must be an environment variable name, got {env:?}"),
        );
    }
    c.int("model.adapter.timeoutMs", i128::from(http.timeout_ms));
    if let Some(headers) = http.headers {
        c.entries("model.adapter.headers", headers.len());
        let check_names = c.has("model.adapter.headers", Limit::HeaderNames);
        for (name, value) in headers {
            let lower = name.to_ascii_lowercase();
            if !check_names {
                // The missing rule was reported; the value is still checked.
            } else if RESERVED_ADAPTER_HEADERS.contains(&lower.as_str()) {
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
            let path = format!("model.adapter.headers.{name}");
            if c.has(&path, Limit::HeaderValue)
                && (value.chars().any(|ch| ch.is_control() && ch != '\t') || value.len() > 8_192)
            {
                c.error(
                    &path,
                    "must be at most 8192 bytes with no control characters",
                );
            }
        }
    }
    if let Some(warmups) = http.warmup_requests {
        c.entries("model.adapter.warmupRequests", warmups.len());
        for (i, warmup) in warmups.iter().enumerate() {
            let path = format!("model.adapter.warmupRequests[{i}]");
            for (field, text) in [("input", &warmup.input), ("system", &warmup.system)] {
                if let Some(text) = text {
                    c.text(&format!("{path}.{field}"), text);
                }
            }
            if warmup.input.is_none() && warmup.template_id.is_none() {
                c.error(&path, "needs input or templateId");
            }
            if let Some(max_tokens) = warmup.max_tokens {
                c.at_most_field(
                    &format!("{path}.maxTokens"),
                    max_tokens.into(),
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
        c.int("model.adapter.slotStateTtlMs", i128::from(v));
    }
    if let Some(v) = llama.slot_snapshot_timeout_ms {
        c.at_most_field(
            "model.adapter.slotSnapshotTimeoutMs",
            v,
            positive(llama.timeout_ms),
            "model.adapter.timeoutMs",
        );
    }
    if let Some(v) = llama.prompt_scaffold_cache_entries {
        c.int("model.adapter.promptScaffoldCacheEntries", i128::from(v));
    }
    if let Some(launch) = &llama.launch_profile {
        validate_launch_profile(c, config, launch);
    }
}

fn validate_launch_profile(c: &mut Checker, config: &RayConfig, launch: &LaunchProfile) {
    const P: &str = "model.adapter.launchProfile";
    c.text(
        "model.adapter.launchProfile.binaryPath",
        &launch.binary_path,
    );
    c.text("model.adapter.launchProfile.modelPath", &launch.model_path);
    if c.has(&format!("{P}.host"), Limit::LoopbackHost) && !is_loopback_host(&launch.host) {
        c.error(
            &format!("{P}.host"),
            format!(
                "must be a loopback address (llama-server has no auth of its own), got {:?}",
                launch.host
            ),
        );
    }
    c.int(&format!("{P}.port"), i128::from(launch.port));
    if let Some(alias) = &launch.alias {
        c.text("model.adapter.launchProfile.alias", alias);
    }
    c.int(
        "model.adapter.launchProfile.ctxSize",
        i128::from(launch.ctx_size),
    );
    if launch.ctx_size > config.model.context_window {
        c.cross_error(
            &format!("{P}.ctxSize"),
            format!(
                "must be at most model.contextWindow ({}), got {}",
                config.model.context_window, launch.ctx_size
            ),
            CrossField::new(
                launch.ctx_size,
                format!("at most {}", config.model.context_window),
                "raise model.contextWindow",
                "model.contextWindow",
                config.model.context_window,
                format!(
                    "set it to at least {}, or lower {P}.ctxSize",
                    launch.ctx_size
                ),
            ),
        );
    }
    c.int(
        "model.adapter.launchProfile.parallel",
        i128::from(launch.parallel),
    );
    c.int(
        "model.adapter.launchProfile.threads",
        i128::from(launch.threads),
    );
    if let Some(v) = launch.threads_batch {
        c.int("model.adapter.launchProfile.threadsBatch", i128::from(v));
    }
    c.int(
        "model.adapter.launchProfile.threadsHttp",
        i128::from(launch.threads_http),
    );
    c.int(
        "model.adapter.launchProfile.batchSize",
        i128::from(launch.batch_size),
    );
    c.at_most_field(
        &format!("{P}.ubatchSize"),
        launch.ubatch_size.into(),
        positive(launch.batch_size),
        "launchProfile.batchSize",
    );
    c.int(
        "model.adapter.launchProfile.cacheReuse",
        i128::from(launch.cache_reuse),
    );
    if let Some(v) = launch.cache_ram_mib {
        c.int("model.adapter.launchProfile.cacheRamMiB", i128::from(v));
    }
    if let Some(args) = &launch.extra_args {
        c.entries("model.adapter.launchProfile.extraArgs", args.len());
        for (i, arg) in args.iter().enumerate() {
            let flag = arg.split('=').next().unwrap_or(arg);
            if c.has(&format!("{P}.extraArgs[{i}]"), Limit::NotGeneratedFlag)
                && GENERATED_LLAMA_FLAGS.contains(&flag)
            {
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
        c.cross_error(
            &format!("{P}.port"),
            format!(
                "{} is also server.port on an overlapping address; the gateway and llama-server \
                 need different ports",
                launch.port
            ),
            CrossField::new(
                launch.port,
                format!(
                    "a port other than {} (and model.adapter.baseUrl to match)",
                    server.port
                ),
                "change server.port",
                "server.port",
                server.port,
                format!("set it to a port other than {}", launch.port),
            ),
        );
    }
}

fn validate_base_url(c: &mut Checker, config: &RayConfig, base_url: &str) {
    const P: &str = "model.adapter.baseUrl";
    if !c.has(P, Limit::HttpUrl) {
        return;
    }
    let url = match ParsedUrl::parse(base_url) {
        Ok(url) => url,
        Err(problem) => {
            c.error(P, format!("{problem}, got {base_url:?}"));
            return;
        }
    };
    // Recursion guard: the backend must not be the gateway itself.
    if url.port == config.server.port && binds_overlap(&url.host, &config.server.host) {
        c.cross_error(
            P,
            format!(
                "points at the gateway itself ({}:{}); it must name the backend",
                config.server.host, config.server.port
            ),
            CrossField::new(
                base_url,
                "the backend's address",
                "change server.port",
                "server.port",
                config.server.port,
                format!("set it to a port other than {}", url.port),
            ),
        );
    }
    if let Some(launch) = config.model.adapter.launch_profile() {
        // Each of these names the launch profile too: when it came from the profile, the
        // loader says so and how to change both.
        let launch_cross = |requirement: String| {
            CrossField::new(
                base_url,
                requirement,
                "change model.adapter.launchProfile to match",
                "model.adapter.launchProfile",
                format!("on {}:{}", launch.host, launch.port),
                format!(
                    "it says llama-server listens on http://{}:{} (render, doctor and supervise \
                     read it): set model.adapter.launchProfile.host and .port to where baseUrl \
                     points, or point baseUrl there",
                    launch.host, launch.port
                ),
            )
        };
        let launch_url = format!("http://{}:{}", launch.host, launch.port);
        if url.scheme != "http" {
            c.cross_error(
                P,
                "must be plain http when a launchProfile is set (llama-server listens on loopback)",
                launch_cross(format!("plain http, e.g. {launch_url}")),
            );
        }
        if !is_loopback_host(&url.host) {
            c.cross_error(
                P,
                "must be a loopback address when a launchProfile is set",
                launch_cross(format!("a loopback address, e.g. {launch_url}")),
            );
        }
        if url.port != launch.port {
            c.cross_error(
                P,
                format!(
                    "port {} differs from launchProfile.port {}",
                    url.port, launch.port
                ),
                CrossField::new(
                    base_url,
                    format!("a URL on port {}, e.g. {launch_url}", launch.port),
                    format!("set model.adapter.launchProfile.port to {}", url.port),
                    "model.adapter.launchProfile.port",
                    launch.port,
                    format!(
                        "set it to {} as well, so the launch profile (render, doctor, supervise) \
                         runs llama-server where baseUrl points; or point baseUrl at port {}",
                        url.port, launch.port
                    ),
                ),
            );
        }
        if launch.host.parse::<IpAddr>().is_ok() && url.host != launch.host {
            c.cross_error(
                P,
                format!(
                    "host {} differs from launchProfile.host {}",
                    url.host, launch.host
                ),
                CrossField::new(
                    base_url,
                    format!("a URL on host {}, e.g. {launch_url}", launch.host),
                    format!("set model.adapter.launchProfile.host to {}", url.host),
                    "model.adapter.launchProfile.host",
                    &launch.host,
                    format!(
                        "set it to {} as well, so llama-server listens where baseUrl points; or \
                         point baseUrl at {}",
                        url.host, launch.host
                    ),
                ),
            );
        }
        if url.path != "/" && !url.path.is_empty() {
            c.cross_error(
                P,
                "must have no path when a launchProfile is set (llama-server serves at /)",
                launch_cross(format!("a URL with no path, e.g. {launch_url}")),
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
