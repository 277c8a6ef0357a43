//! The rules of one field each, a short function per config section. Rules between two fields
//! are in [`super::cross`]; the model's own fields are in [`super::model`].

use super::address::{is_allowed_host_pattern, is_bind_host, is_env_var_name};
use super::checker::Checker;
use crate::config::limits::Limit;
use crate::config::types::*;

/// The message of a field that must name an environment variable.
fn env_var_message(value: &str) -> String {
    format!("must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*), got {value:?}")
}

/// `server`.
pub(super) fn server(c: &mut Checker, server: &ServerConfig) {
    if c.has("server.host", Limit::BindHost) && !is_bind_host(&server.host) {
        c.error(
            "server.host",
            format!(
                "must be an IP address (127.0.0.1, 0.0.0.0, ::1) or a host name (letters, \
                 digits, inner hyphens and dots), got {:?}",
                server.host
            ),
        );
    }
    c.int(
        "server.requestBodyLimitBytes",
        i128::from(server.request_body_limit_bytes),
    );
}

/// `scheduler`.
pub(super) fn scheduler(c: &mut Checker, s: &SchedulerConfig) {
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
    c.int(
        "scheduler.maxDedupeWaiters",
        i128::from(s.max_dedupe_waiters),
    );
    c.int("scheduler.maxChoices", i128::from(s.max_choices));
}

/// `streaming`.
pub(super) fn streaming(c: &mut Checker, st: &StreamingConfig) {
    c.int(
        "streaming.firstTokenTimeoutMs",
        i128::from(st.first_token_timeout_ms),
    );
    c.int("streaming.idleTimeoutMs", i128::from(st.idle_timeout_ms));
    c.int("streaming.totalTimeoutMs", i128::from(st.total_timeout_ms));
}

/// `asyncQueue`.
pub(super) fn async_queue(c: &mut Checker, q: &AsyncQueueConfig) {
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
            env_var_message(&q.callback_signing_secret_env),
        );
    }
    c.int("asyncQueue.maxRecordBytes", i128::from(q.max_record_bytes));
}

/// `cache`.
pub(super) fn cache(c: &mut Checker, cache: &CacheConfig) {
    c.int("cache.maxEntries", i128::from(cache.max_entries));
    c.int("cache.maxBytes", i128::from(cache.max_bytes));
    c.int("cache.ttlMs", i128::from(cache.ttl_ms));
}

/// `telemetry`.
pub(super) fn telemetry(c: &mut Checker, t: &TelemetryConfig) {
    c.text("telemetry.serviceName", &t.service_name);
    c.int(
        "telemetry.slowRequestThresholdMs",
        i128::from(t.slow_request_threshold_ms),
    );
    c.int(
        "telemetry.accessLogSampleEvery",
        i128::from(t.access_log_sample_every),
    );
}

/// `gracefulDegradation`.
pub(super) fn graceful_degradation(c: &mut Checker, g: &GracefulDegradationConfig) {
    c.int(
        "gracefulDegradation.maxPromptChars",
        i128::from(g.max_prompt_chars),
    );
    c.int(
        "gracefulDegradation.memoryRssThresholdMiB",
        i128::from(g.memory_rss_threshold_mib),
    );
    for (path, value) in [
        (
            "gracefulDegradation.memoryCgroupPressureRatioThreshold",
            g.memory_cgroup_pressure_ratio_threshold,
        ),
        (
            "gracefulDegradation.cpuThrottledRatioThreshold",
            g.cpu_throttled_ratio_threshold,
        ),
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
        (
            "gracefulDegradation.criticalCgroupMemoryRatio",
            g.critical_cgroup_memory_ratio,
        ),
        (
            "gracefulDegradation.criticalMemoryPsiFullAvg10",
            g.critical_memory_psi_full_avg10,
        ),
    ] {
        c.number(path, value);
    }
}

/// `promptCompiler`.
pub(super) fn prompt_compiler(c: &mut Checker, p: &PromptCompilerConfig) {
    c.entries(
        "promptCompiler.familyMetadataKeys",
        p.family_metadata_keys.len(),
    );
    for (i, key) in p.family_metadata_keys.iter().enumerate() {
        c.text(&format!("promptCompiler.familyMetadataKeys[{i}]"), key);
    }
}

/// `adaptiveTuning`.
pub(super) fn adaptive_tuning(c: &mut Checker, a: &AdaptiveTuningConfig) {
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
    c.int(
        "adaptiveTuning.familyHistorySize",
        i128::from(a.family_history_size),
    );
    c.number("adaptiveTuning.draftPercentile", a.draft_percentile);
    c.number("adaptiveTuning.shortPercentile", a.short_percentile);
}

/// `auth`.
pub(super) fn auth(c: &mut Checker, auth: &AuthConfig) {
    if c.has("auth.apiKeyEnv", Limit::EnvVarName) && !is_env_var_name(&auth.api_key_env) {
        c.error("auth.apiKeyEnv", env_var_message(&auth.api_key_env));
    }
}

/// `rateLimit`.
pub(super) fn rate_limit(c: &mut Checker, r: &RateLimitConfig) {
    c.int("rateLimit.windowMs", i128::from(r.window_ms));
    c.int("rateLimit.maxRequests", i128::from(r.max_requests));
    c.int("rateLimit.maxKeys", i128::from(r.max_keys));
}

/// `tags`.
pub(super) fn tags(c: &mut Checker, tags: &std::collections::BTreeMap<String, String>) {
    c.entries("tags", tags.len());
    for (key, value) in tags {
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
}
