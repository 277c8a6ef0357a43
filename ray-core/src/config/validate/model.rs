//! The rules of one model, `model` or an entry of `models`: its own fields, its adapter and its
//! launch profile, then the rules between its fields (in [`super::cross`]). Paths are written
//! as `model.…`; [`super::models`] renames them for an entry of `models`.

use super::address::{ParsedUrl, is_env_var_name, is_header_name, is_loopback_host};
use super::checker::Checker;
use super::cross;
use crate::config::limits::{HEADER_VALUE_MAX_CHARS, Limit};
use crate::config::reserved::{GENERATED_LLAMA_FLAGS, RESERVED_ADAPTER_HEADERS};
use crate::config::types::*;

/// Every rule of one model; `server` is where the gateway listens, which the backend must not be.
pub(super) fn model(c: &mut Checker, model: &ModelConfig, server: &ServerConfig) {
    fields(c, model);
    adapter(c, &model.adapter);
    cross::model(c, model, server);
}

/// The model's own fields.
fn fields(c: &mut Checker, model: &ModelConfig) {
    c.text("model.id", &model.id);
    c.not_reserved("model.id", &model.id);
    c.entries("model.aliases", model.aliases.len());
    for (i, alias) in model.aliases.iter().enumerate() {
        let path = format!("model.aliases[{i}]");
        c.name(&path, alias);
        c.not_reserved(&path, alias);
    }
    c.text("model.family", &model.family);
    c.int("model.contextWindow", i128::from(model.context_window));
    c.int("model.maxOutputTokens", i128::from(model.max_output_tokens));
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
}

/// `model.adapter`: the mock's fields, then those of an HTTP adapter, then llama.cpp's.
fn adapter(c: &mut Checker, adapter: &AdapterConfig) {
    if let AdapterConfig::Mock(mock) = adapter {
        c.int("model.adapter.latencyMs", i128::from(mock.latency_ms));
        if let Some(seed) = &mock.seed {
            c.text("model.adapter.seed", seed);
        }
    }
    let Some(http) = adapter.http() else {
        return;
    };
    const URL: &str = "model.adapter.baseUrl";
    if c.has(URL, Limit::HttpUrl)
        && let Err(problem) = ParsedUrl::parse(http.base_url)
    {
        c.error(URL, format!("{problem}, got {:?}", http.base_url));
    }
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
            // Counted in chars, as the schema's `maxLength` counts them.
            if c.has(&path, Limit::HeaderValue)
                && (value.chars().any(|ch| ch.is_control() && ch != '\t')
                    || value.chars().count() > HEADER_VALUE_MAX_CHARS)
            {
                c.error(
                    &path,
                    format!(
                        "must be at most {HEADER_VALUE_MAX_CHARS} chars with no control characters"
                    ),
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
        }
    }
    let AdapterConfig::LlamaCpp(llama) = adapter else {
        return;
    };
    if let Some(v) = llama.slot_state_ttl_ms {
        c.int("model.adapter.slotStateTtlMs", i128::from(v));
    }
    if let Some(v) = llama.prompt_scaffold_cache_entries {
        c.int("model.adapter.promptScaffoldCacheEntries", i128::from(v));
    }
    if let Some(launch) = &llama.launch_profile {
        launch_profile(c, launch);
    }
}

/// `model.adapter.launchProfile`.
fn launch_profile(c: &mut Checker, launch: &LaunchProfile) {
    const P: &str = "model.adapter.launchProfile";
    c.text(&format!("{P}.binaryPath"), &launch.binary_path);
    c.text(&format!("{P}.modelPath"), &launch.model_path);
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
        c.text(&format!("{P}.alias"), alias);
    }
    for (field, value) in [
        ("ctxSize", launch.ctx_size),
        ("parallel", launch.parallel),
        ("threads", launch.threads),
        ("threadsHttp", launch.threads_http),
        ("batchSize", launch.batch_size),
        ("cacheReuse", launch.cache_reuse),
    ] {
        c.int(&format!("{P}.{field}"), i128::from(value));
    }
    if let Some(v) = launch.threads_batch {
        c.int(&format!("{P}.threadsBatch"), i128::from(v));
    }
    if let Some(v) = launch.cache_ram_mib {
        c.int(&format!("{P}.cacheRamMiB"), i128::from(v));
    }
    if let Some(dir) = &launch.slot_save_path {
        c.text(&format!("{P}.slotSavePath"), dir);
        if !dir.starts_with('/') {
            c.error(
                &format!("{P}.slotSavePath"),
                format!("must be an absolute directory path, got {dir:?}"),
            );
        }
        if let Some(i) = launch.extra_args.iter().flatten().position(|arg| {
            let flag = arg.split('=').next().unwrap_or(arg);
            flag == "--slot-save-path"
        }) {
            c.error(
                &format!("{P}.extraArgs[{i}]"),
                "--slot-save-path is generated from slotSavePath; set only one of them",
            );
        }
    }
    if let Some(args) = &launch.extra_args {
        c.entries(&format!("{P}.extraArgs"), args.len());
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
}
