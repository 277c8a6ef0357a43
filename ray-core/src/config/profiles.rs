//! The defaults of the seven profiles (the tables of `docs/configuration.md`).

use std::collections::BTreeMap;

use super::types::*;

/// One row of the per-profile tables: everything that differs between profiles.
struct Row {
    body_limit: u64,
    model_id: &'static str,
    family: &'static str,
    quantization: Quantization,
    warm_on_boot: bool,
    max_output_tokens: u32,
    adapter: AdapterRow,
    operational: Option<(u32, u32, u32)>,
    concurrency: u32,
    max_queue: u32,
    max_queued_tokens: u32,
    max_inflight_tokens: u32,
    request_timeout_ms: u64,
    /// 0 in every profile: in front of `llama-server` with its host prompt cache (the
    /// `cacheRamMiB` every llama.cpp profile launches with) a held permit bought no throughput
    /// and raised the p99 threefold under contention (`docs/performance.md`, the batch window).
    batch_window_ms: u64,
    affinity_lookahead: u32,
    max_jobs: u32,
    min_free_storage_mib: u64,
    poll_interval_ms: u64,
    dispatch_concurrency: u32,
    callback_timeout_ms: u64,
    cache: (u32, u64, u64),
    include_debug_metrics: bool,
    slow_request_threshold_ms: u64,
    degradation: (u32, u32, u32, u32),
    adaptive_enabled: bool,
    sample_size: u32,
    queue_latency_threshold_ms: u64,
    min_tps: f64,
    max_reduction: f64,
    min_output_tokens: u32,
    family_history: (u32, u32, u32),
    rate_limit_enabled: bool,
    max_requests: u32,
    max_keys: u32,
    trust_proxy_headers: bool,
    tags: &'static [(&'static str, &'static str)],
}

enum AdapterRow {
    Mock,
    Llama {
        model_ref: &'static str,
        timeout_ms: u64,
        slot_state_ttl_ms: u64,
        slot_snapshot_timeout_ms: u64,
        scaffold_entries: u32,
        launch: LaunchRow,
    },
    OpenAi {
        model_ref: &'static str,
        timeout_ms: u64,
    },
}

struct LaunchRow {
    preset: LaunchPreset,
    ctx: u32,
    parallel: u32,
    threads: u32,
    threads_batch: Option<u32>,
    threads_http: u32,
    batch: u32,
    ubatch: u32,
    cache_reuse: u32,
    cache_ram_mib: i32,
}

/// The default backend address of the HTTP adapters.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8081";
/// The default `llama-server` binary.
pub const DEFAULT_LLAMA_BINARY: &str = "/usr/local/bin/llama-server";
/// Where models live on a deployed box.
pub const DEFAULT_MODEL_DIR: &str = "/var/lib/ray/models";

fn row(profile: Profile) -> Row {
    match profile {
        Profile::Tiny => Row {
            body_limit: 32_000,
            model_id: "tiny-dev",
            family: "mock",
            quantization: Quantization::Unknown,
            warm_on_boot: false,
            max_output_tokens: 192,
            adapter: AdapterRow::Mock,
            operational: None,
            concurrency: 1,
            max_queue: 32,
            max_queued_tokens: 12_000,
            max_inflight_tokens: 2_500,
            request_timeout_ms: 8_000,
            batch_window_ms: 0,
            affinity_lookahead: 8,
            max_jobs: 32,
            min_free_storage_mib: 64,
            poll_interval_ms: 500,
            dispatch_concurrency: 1,
            callback_timeout_ms: 5_000,
            cache: (128, 1_048_576, 30_000),
            include_debug_metrics: false,
            slow_request_threshold_ms: 750,
            degradation: (8, 4_000, 96, 256),
            adaptive_enabled: false,
            sample_size: 24,
            queue_latency_threshold_ms: 250,
            min_tps: 18.0,
            max_reduction: 0.5,
            min_output_tokens: 48,
            family_history: (48, 6, 24),
            rate_limit_enabled: false,
            max_requests: 120,
            max_keys: 2_048,
            trust_proxy_headers: false,
            tags: &[("target", "tiny"), ("hosting", "cheap-vps")],
        },
        Profile::Sub1b => Row {
            body_limit: 48_000,
            model_id: "qwen2.5-0.5b-instruct-q4_k_m",
            family: "qwen2.5",
            quantization: Quantization::Q4KM,
            warm_on_boot: true,
            max_output_tokens: 256,
            adapter: AdapterRow::Llama {
                model_ref: "qwen2.5-0.5b-instruct-q4_k_m",
                timeout_ms: 18_000,
                slot_state_ttl_ms: 200,
                slot_snapshot_timeout_ms: 250,
                scaffold_entries: 256,
                launch: LaunchRow {
                    preset: LaunchPreset::SingleVpsSub1bCx23,
                    ctx: 3_072,
                    parallel: 2,
                    threads: 2,
                    threads_batch: None,
                    threads_http: 2,
                    batch: 256,
                    ubatch: 128,
                    cache_reuse: 256,
                    cache_ram_mib: 512,
                },
            },
            operational: Some((14, 4_096, 3_072)),
            concurrency: 2,
            max_queue: 64,
            max_queued_tokens: 24_000,
            max_inflight_tokens: 4_096,
            request_timeout_ms: 20_000,
            batch_window_ms: 0,
            affinity_lookahead: 24,
            max_jobs: 128,
            min_free_storage_mib: 256,
            poll_interval_ms: 1_000,
            dispatch_concurrency: 1,
            callback_timeout_ms: 5_000,
            cache: (256, 2_097_152, 90_000),
            include_debug_metrics: true,
            slow_request_threshold_ms: 1_200,
            degradation: (16, 6_000, 128, 512),
            adaptive_enabled: true,
            sample_size: 32,
            queue_latency_threshold_ms: 350,
            min_tps: 14.0,
            max_reduction: 0.5,
            min_output_tokens: 64,
            family_history: (64, 8, 24),
            rate_limit_enabled: true,
            max_requests: 120,
            max_keys: 4_096,
            trust_proxy_headers: true,
            tags: &[
                ("target", "sub1b"),
                ("hosting", "cheap-vps"),
                ("engine", "llama.cpp"),
                ("hardware", "hetzner-cx23-class"),
            ],
        },
        Profile::Sub1bCax11 => Row {
            adapter: AdapterRow::Llama {
                model_ref: "qwen2.5-0.5b-instruct-q4_k_m",
                timeout_ms: 18_000,
                slot_state_ttl_ms: 200,
                slot_snapshot_timeout_ms: 250,
                scaffold_entries: 256,
                launch: LaunchRow {
                    preset: LaunchPreset::SingleVpsSub1bCax11,
                    ctx: 3_072,
                    parallel: 1,
                    threads: 2,
                    threads_batch: None,
                    threads_http: 2,
                    batch: 192,
                    ubatch: 96,
                    cache_reuse: 256,
                    cache_ram_mib: 512,
                },
            },
            operational: Some((10, 4_096, 3_072)),
            concurrency: 1,
            max_queue: 48,
            max_queued_tokens: 18_000,
            max_inflight_tokens: 3_072,
            request_timeout_ms: 22_000,
            batch_window_ms: 0,
            affinity_lookahead: 16,
            slow_request_threshold_ms: 1_500,
            degradation: (12, 6_000, 128, 512),
            queue_latency_threshold_ms: 450,
            min_tps: 10.0,
            max_requests: 90,
            tags: &[
                ("target", "sub1b"),
                ("hosting", "cheap-vps"),
                ("engine", "llama.cpp"),
                ("hardware", "hetzner-cax11-class"),
            ],
            ..row(Profile::Sub1b)
        },
        Profile::OneB => Row {
            model_id: "qwen2.5-1.5b-instruct-q4_k_m",
            max_output_tokens: 192,
            adapter: AdapterRow::Llama {
                model_ref: "qwen2.5-1.5b-instruct-q4_k_m",
                timeout_ms: 28_000,
                slot_state_ttl_ms: 250,
                slot_snapshot_timeout_ms: 300,
                scaffold_entries: 384,
                launch: LaunchRow {
                    preset: LaunchPreset::SingleVps1bCx23,
                    ctx: 2_048,
                    parallel: 1,
                    threads: 2,
                    threads_batch: Some(2),
                    threads_http: 2,
                    batch: 192,
                    ubatch: 96,
                    cache_reuse: 192,
                    cache_ram_mib: 384,
                },
            },
            operational: Some((10, 4_096, 2_048)),
            concurrency: 1,
            max_queue: 40,
            max_queued_tokens: 18_000,
            max_inflight_tokens: 2_048,
            request_timeout_ms: 32_000,
            batch_window_ms: 0,
            affinity_lookahead: 12,
            cache: (256, 2_097_152, 120_000),
            slow_request_threshold_ms: 2_200,
            degradation: (10, 5_000, 128, 512),
            queue_latency_threshold_ms: 600,
            min_tps: 8.0,
            max_requests: 75,
            tags: &[
                ("target", "1b"),
                ("hosting", "cheap-vps"),
                ("engine", "llama.cpp"),
                ("hardware", "hetzner-cx23-class"),
            ],
            ..row(Profile::Sub1b)
        },
        Profile::OneB8gb => Row {
            body_limit: 64_000,
            model_id: "qwen2.5-1.5b-instruct-q4_k_m",
            max_output_tokens: 256,
            adapter: AdapterRow::Llama {
                model_ref: "qwen2.5-1.5b-instruct-q4_k_m",
                timeout_ms: 24_000,
                slot_state_ttl_ms: 250,
                slot_snapshot_timeout_ms: 300,
                scaffold_entries: 384,
                launch: LaunchRow {
                    preset: LaunchPreset::SingleVps1b8gb,
                    ctx: 4_096,
                    parallel: 2,
                    threads: 4,
                    threads_batch: Some(4),
                    threads_http: 2,
                    batch: 256,
                    ubatch: 128,
                    cache_reuse: 256,
                    cache_ram_mib: 768,
                },
            },
            operational: Some((18, 8_192, 4_096)),
            concurrency: 2,
            max_queue: 96,
            max_queued_tokens: 48_000,
            max_inflight_tokens: 6_144,
            request_timeout_ms: 28_000,
            batch_window_ms: 0,
            affinity_lookahead: 24,
            max_jobs: 256,
            min_free_storage_mib: 512,
            cache: (512, 4_194_304, 120_000),
            slow_request_threshold_ms: 1_800,
            degradation: (20, 8_000, 160, 768),
            queue_latency_threshold_ms: 450,
            min_tps: 14.0,
            max_requests: 150,
            max_keys: 8_192,
            // The reference lists only these two for 1b-8gb (its cax11 cell, by contrast,
            // marks inheritance with "…"), so the profile does not carry target or engine.
            tags: &[
                ("hosting", "single-node-8gb"),
                ("hardware", "8gb-vps-class"),
            ],
            ..row(Profile::Sub1b)
        },
        Profile::Vps => Row {
            body_limit: 64_000,
            model_id: "qwen2.5-3b-instruct-q4",
            max_output_tokens: 384,
            adapter: AdapterRow::OpenAi {
                model_ref: "qwen2.5-3b-instruct-q4_k_m",
                timeout_ms: 20_000,
            },
            operational: None,
            concurrency: 2,
            max_queue: 96,
            max_queued_tokens: 48_000,
            max_inflight_tokens: 8_000,
            request_timeout_ms: 24_000,
            batch_window_ms: 0,
            affinity_lookahead: 12,
            max_jobs: 256,
            min_free_storage_mib: 512,
            callback_timeout_ms: 7_500,
            cache: (512, 4_194_304, 120_000),
            slow_request_threshold_ms: 1_500,
            degradation: (24, 8_000, 192, 768),
            queue_latency_threshold_ms: 400,
            min_tps: 18.0,
            max_requests: 90,
            max_keys: 4_096,
            tags: &[("target", "vps"), ("hosting", "single-node")],
            ..row(Profile::Sub1b)
        },
        Profile::Balanced => Row {
            body_limit: 96_000,
            model_id: "mistral-7b-instruct-q4",
            family: "mistral",
            max_output_tokens: 512,
            adapter: AdapterRow::OpenAi {
                model_ref: "mistral-7b-instruct-q4_k_m",
                timeout_ms: 25_000,
            },
            operational: None,
            concurrency: 3,
            max_queue: 160,
            max_queued_tokens: 96_000,
            max_inflight_tokens: 16_000,
            request_timeout_ms: 30_000,
            batch_window_ms: 0,
            affinity_lookahead: 16,
            max_jobs: 512,
            min_free_storage_mib: 1_024,
            dispatch_concurrency: 2,
            callback_timeout_ms: 7_500,
            cache: (1_024, 8_388_608, 180_000),
            slow_request_threshold_ms: 2_000,
            degradation: (40, 12_000, 256, 1_024),
            sample_size: 48,
            queue_latency_threshold_ms: 500,
            min_tps: 18.0,
            max_reduction: 0.4,
            min_output_tokens: 96,
            family_history: (96, 10, 32),
            max_requests: 180,
            max_keys: 8_192,
            tags: &[("target", "balanced"), ("hosting", "single-node")],
            ..row(Profile::Sub1b)
        },
    }
}

/// The complete default configuration of a profile.
pub fn profile_defaults(profile: Profile) -> RayConfig {
    let r = row(profile);
    let adapter = match r.adapter {
        AdapterRow::Mock => AdapterConfig::Mock(MockAdapterConfig {
            latency_ms: 35,
            seed: Some("ray-tiny".into()),
        }),
        AdapterRow::OpenAi {
            model_ref,
            timeout_ms,
        } => AdapterConfig::OpenAiCompatible(OpenAiAdapterConfig {
            base_url: DEFAULT_BASE_URL.into(),
            model_ref: model_ref.into(),
            api_key_env: None,
            timeout_ms,
            headers: None,
            warmup_requests: None,
            require_backend_model_match: None,
        }),
        AdapterRow::Llama {
            model_ref,
            timeout_ms,
            slot_state_ttl_ms,
            slot_snapshot_timeout_ms,
            scaffold_entries,
            launch,
        } => AdapterConfig::LlamaCpp(LlamaCppAdapterConfig {
            base_url: DEFAULT_BASE_URL.into(),
            model_ref: model_ref.into(),
            api_key_env: None,
            timeout_ms,
            headers: None,
            warmup_requests: None,
            require_backend_model_match: None,
            cache_prompt: Some(true),
            slot_id: None,
            slot_state_ttl_ms: Some(slot_state_ttl_ms),
            slot_snapshot_timeout_ms: Some(slot_snapshot_timeout_ms),
            prompt_scaffold_cache_entries: Some(scaffold_entries),
            launch_profile: Some(LaunchProfile {
                preset: launch.preset,
                binary_path: DEFAULT_LLAMA_BINARY.into(),
                model_path: format!("{DEFAULT_MODEL_DIR}/{}.gguf", r.model_id),
                host: "127.0.0.1".into(),
                port: 8081,
                alias: Some(r.model_id.into()),
                ctx_size: launch.ctx,
                parallel: launch.parallel,
                threads: launch.threads,
                threads_batch: launch.threads_batch,
                threads_http: launch.threads_http,
                batch_size: launch.batch,
                ubatch_size: launch.ubatch,
                cache_prompt: true,
                cache_reuse: launch.cache_reuse,
                cache_ram_mib: Some(launch.cache_ram_mib),
                continuous_batching: true,
                enable_metrics: true,
                expose_slots: true,
                warmup: true,
                enable_unified_kv: true,
                cache_idle_slots: true,
                context_shift: true,
                slot_save_path: None,
                extra_args: None,
                supervise: false,
            }),
        }),
    };
    let operational = r
        .operational
        .map(|(tps, memory_class, ctx)| ModelOperational {
            recommended_prompt_format: Some(PromptFormatPreference::NativeTemplate),
            supports_json_mode: Some(true),
            tokens_per_second_target: Some(tps),
            memory_class_mib: Some(memory_class),
            preferred_ctx_size: Some(ctx),
            chat_template_known: Some(true),
        });
    let (queue_depth_threshold, max_prompt_chars, degrade_to_max_tokens, rss_threshold) =
        r.degradation;
    let (family_history_size, learned_cap_min_samples, headroom) = r.family_history;
    RayConfig {
        schema: None,
        profile,
        server: ServerConfig {
            host: "127.0.0.1".into(),
            port: 3000,
            request_body_limit_bytes: r.body_limit,
        },
        model: ModelConfig {
            id: r.model_id.into(),
            family: r.family.into(),
            quantization: r.quantization,
            context_window: if profile == Profile::Tiny {
                4_096
            } else {
                8_192
            },
            warm_on_boot: r.warm_on_boot,
            max_output_tokens: r.max_output_tokens,
            operational,
            adapter,
            aliases: Vec::new(),
            role: None,
            fallback: Vec::new(),
            scheduler: None,
            tags: BTreeMap::new(),
            resident: false,
            min_resident_ms: None,
            idle_unload_ms: None,
        },
        models: Vec::new(),
        default_model: None,
        routing: RoutingConfig::default(),
        priority: super::PriorityConfig::default(),
        scheduler: SchedulerConfig {
            concurrency: r.concurrency,
            max_queue: r.max_queue,
            max_queued_tokens: r.max_queued_tokens,
            max_inflight_tokens: r.max_inflight_tokens,
            request_timeout_ms: r.request_timeout_ms,
            dedupe_inflight: true,
            batch_window_ms: r.batch_window_ms,
            affinity_lookahead: r.affinity_lookahead,
            short_job_max_tokens: 96,
            max_dedupe_waiters: 256,
            max_choices: 4,
        },
        async_queue: AsyncQueueConfig {
            enabled: false,
            storage_dir: ".ray/async-queue".into(),
            max_jobs: r.max_jobs,
            min_free_storage_mib: r.min_free_storage_mib,
            completed_ttl_ms: 86_400_000,
            poll_interval_ms: r.poll_interval_ms,
            dispatch_concurrency: r.dispatch_concurrency,
            max_attempts: 3,
            callback_timeout_ms: r.callback_timeout_ms,
            max_callback_attempts: 5,
            callback_allow_private_network: false,
            callback_allowed_hosts: Vec::new(),
            callback_signing_secret_env: "RAY_CALLBACK_SIGNING_SECRET".into(),
            max_record_bytes: 2 * 1024 * 1024,
        },
        cache: CacheConfig {
            enabled: true,
            max_entries: r.cache.0,
            max_bytes: r.cache.1,
            ttl_ms: r.cache.2,
            key_strategy: CacheKeyStrategy::InputParams,
        },
        telemetry: TelemetryConfig {
            service_name: "ray-gateway".into(),
            log_level: LogLevel::Info,
            include_debug_metrics: r.include_debug_metrics,
            slow_request_threshold_ms: r.slow_request_threshold_ms,
            // The development profile shows every request; the VPS profiles keep the log to
            // what needs a reader, so an overload cannot fill the disk.
            access_log: match profile {
                Profile::Tiny => AccessLog::All,
                _ => AccessLog::Errors,
            },
            access_log_sample_every: DEFAULT_ACCESS_LOG_SAMPLE_EVERY,
            response_diagnostics: DiagnosticsDetail::Summary,
        },
        graceful_degradation: GracefulDegradationConfig {
            enabled: true,
            queue_depth_threshold,
            max_prompt_chars,
            degrade_to_max_tokens,
            memory_rss_threshold_mib: rss_threshold,
            memory_cgroup_pressure_ratio_threshold: 0.9,
            cpu_throttled_ratio_threshold: 0.2,
            memory_psi_some_avg10_threshold: 10.0,
            memory_psi_full_avg10_threshold: 1.0,
            cpu_psi_some_avg10_threshold: 50.0,
            cpu_psi_full_avg10_threshold: 5.0,
            refuse_on_critical_memory: true,
            critical_cgroup_memory_ratio: 0.97,
            critical_memory_psi_full_avg10: 25.0,
        },
        streaming: StreamingConfig::default(),
        prompt_compiler: PromptCompilerConfig {
            enabled: true,
            collapse_whitespace: true,
            dedupe_repeated_lines: true,
            family_metadata_keys: ["promptFamily", "taskTemplate", "template", "useCase"]
                .map(String::from)
                .to_vec(),
        },
        adaptive_tuning: AdaptiveTuningConfig {
            enabled: r.adaptive_enabled,
            sample_size: r.sample_size,
            queue_latency_threshold_ms: r.queue_latency_threshold_ms,
            min_completion_tokens_per_second: r.min_tps,
            max_output_reduction_ratio: r.max_reduction,
            min_output_tokens: r.min_output_tokens,
            learned_family_cap_enabled: true,
            family_history_size,
            learned_cap_min_samples,
            draft_percentile: 0.95,
            short_percentile: 0.9,
            learned_cap_headroom_tokens: headroom,
        },
        auth: AuthConfig {
            enabled: false,
            api_key_env: "RAY_API_KEYS".into(),
        },
        rate_limit: RateLimitConfig {
            enabled: r.rate_limit_enabled,
            window_ms: 60_000,
            max_requests: r.max_requests,
            max_keys: r.max_keys,
            key_strategy: RateLimitKeyStrategy::Ip,
            trust_proxy_headers: r.trust_proxy_headers,
        },
        tags: r
            .tags
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect::<BTreeMap<_, _>>(),
        cluster: None,
        lifecycle: None,
        hooks: Vec::new(),
        policy_file: None,
        policy: None,
    }
}

/// The adapter a file's `model.adapter` is merged over when the file switches
/// `model.adapter.kind` away from its profile's.
///
/// As in the existing Ray, whose merge starts from the profile's adapter object whatever the
/// kind, the fields both HTTP adapters have (`baseUrl`, `modelRef`, `apiKeyEnv`, `timeoutMs`,
/// `headers`, `warmupRequests`) come from the profile's adapter when it is an HTTP adapter.
/// Fields the profile's adapter does not have are left unset, as they would be there. Unlike
/// there, fields the new kind does not accept are dropped instead of being refused. Starting
/// from the mock adapter, which shares nothing, an HTTP adapter gets the default base URL,
/// `model_id` as its `modelRef`, and a timeout of 20 s (OpenAI-compatible) or 18 s (llama.cpp).
pub fn adapter_defaults(kind: &str, model_id: &str, profile: Profile) -> Option<AdapterConfig> {
    let profile_adapter = profile_defaults(profile).model.adapter;
    if profile_adapter.kind() == kind {
        return Some(profile_adapter);
    }
    let shared = match &profile_adapter {
        AdapterConfig::Mock(_) => None,
        AdapterConfig::OpenAiCompatible(a) => Some(OpenAiAdapterConfig {
            base_url: a.base_url.clone(),
            model_ref: a.model_ref.clone(),
            api_key_env: a.api_key_env.clone(),
            timeout_ms: a.timeout_ms,
            headers: a.headers.clone(),
            warmup_requests: a.warmup_requests.clone(),
            require_backend_model_match: a.require_backend_model_match,
        }),
        AdapterConfig::LlamaCpp(a) => Some(OpenAiAdapterConfig {
            base_url: a.base_url.clone(),
            model_ref: a.model_ref.clone(),
            api_key_env: a.api_key_env.clone(),
            timeout_ms: a.timeout_ms,
            headers: a.headers.clone(),
            warmup_requests: a.warmup_requests.clone(),
            require_backend_model_match: a.require_backend_model_match,
        }),
    };
    let from_mock = |timeout_ms| OpenAiAdapterConfig {
        base_url: DEFAULT_BASE_URL.into(),
        model_ref: model_id.into(),
        api_key_env: None,
        timeout_ms,
        headers: None,
        warmup_requests: None,
        require_backend_model_match: None,
    };
    match kind {
        "mock" => Some(AdapterConfig::Mock(MockAdapterConfig {
            latency_ms: 35,
            seed: None,
        })),
        "openai-compatible" => Some(AdapterConfig::OpenAiCompatible(
            shared.unwrap_or_else(|| from_mock(20_000)),
        )),
        "llama.cpp" => {
            let http = shared.unwrap_or_else(|| from_mock(18_000));
            Some(AdapterConfig::LlamaCpp(LlamaCppAdapterConfig {
                base_url: http.base_url,
                model_ref: http.model_ref,
                api_key_env: http.api_key_env,
                timeout_ms: http.timeout_ms,
                headers: http.headers,
                warmup_requests: http.warmup_requests,
                require_backend_model_match: http.require_backend_model_match,
                cache_prompt: None,
                slot_id: None,
                slot_state_ttl_ms: None,
                slot_snapshot_timeout_ms: None,
                prompt_scaffold_cache_entries: None,
                launch_profile: None,
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
