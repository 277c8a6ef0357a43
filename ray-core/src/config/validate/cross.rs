//! Every rule between two fields, with its message, in one place. A failed rule carries a
//! [`CrossField`] so the loader can say which field to change when one came from the profile.
//!
//! [`model`] holds the rules inside one model (run for `model` and each entry of `models`);
//! [`config`] the rules between sections.

use std::net::IpAddr;

use super::address::{ParsedUrl, binds_overlap, is_loopback_host, same_host, unbracket, url_host};
use super::checker::{Checker, positive};
use super::diagnostic::CrossField;
use crate::config::types::*;

/// The rules between fields of one model, and between it and `server`.
pub(super) fn model(c: &mut Checker, model: &ModelConfig, server: &ServerConfig) {
    output_fits_context(c, model);
    let model_max = model.max_output_tokens;
    if let Some(warmups) = model.adapter.http().and_then(|http| http.warmup_requests) {
        for (i, warmup) in warmups.iter().enumerate() {
            if let Some(max_tokens) = warmup.max_tokens {
                c.at_most_field(
                    &format!("model.adapter.warmupRequests[{i}].maxTokens"),
                    max_tokens.into(),
                    positive(model_max),
                    "model.maxOutputTokens",
                );
            }
        }
    }
    if let AdapterConfig::LlamaCpp(llama) = &model.adapter {
        if let Some(v) = llama.slot_snapshot_timeout_ms {
            c.at_most_field(
                "model.adapter.slotSnapshotTimeoutMs",
                v,
                positive(llama.timeout_ms),
                "model.adapter.timeoutMs",
            );
        }
        if let Some(launch) = &llama.launch_profile {
            launch_profile(c, model, server, launch);
        }
    }
    if let Some(http) = model.adapter.http()
        && let Ok(url) = ParsedUrl::parse(http.base_url)
    {
        base_url(c, model, server, http.base_url, &url);
    }
}

/// `model.maxOutputTokens` <= `model.contextWindow`.
fn output_fits_context(c: &mut Checker, model: &ModelConfig) {
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
}

/// The launch profile against the model (`ctxSize`), itself (`ubatchSize`) and the gateway
/// (`port`).
fn launch_profile(
    c: &mut Checker,
    model: &ModelConfig,
    server: &ServerConfig,
    launch: &LaunchProfile,
) {
    const P: &str = "model.adapter.launchProfile";
    if launch.ctx_size > model.context_window {
        c.cross_error(
            &format!("{P}.ctxSize"),
            format!(
                "must be at most model.contextWindow ({}), got {}",
                model.context_window, launch.ctx_size
            ),
            CrossField::new(
                launch.ctx_size,
                format!("at most {}", model.context_window),
                "raise model.contextWindow",
                "model.contextWindow",
                model.context_window,
                format!(
                    "set it to at least {}, or lower {P}.ctxSize",
                    launch.ctx_size
                ),
            ),
        );
    }
    c.at_most_field(
        &format!("{P}.ubatchSize"),
        launch.ubatch_size.into(),
        positive(launch.batch_size),
        "launchProfile.batchSize",
    );
    // The gateway and llama-server must not fight over one port.
    if launch.port != 0 && launch.port == server.port && binds_overlap(&launch.host, &server.host) {
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

/// `model.adapter.baseUrl` against the gateway and the launch profile.
fn base_url(
    c: &mut Checker,
    model: &ModelConfig,
    server: &ServerConfig,
    base_url: &str,
    url: &ParsedUrl,
) {
    const P: &str = "model.adapter.baseUrl";
    // Recursion guard: the backend must not be the gateway itself.
    if url.port == server.port && binds_overlap(&url.host, &server.host) {
        c.cross_error(
            P,
            format!(
                "points at the gateway itself ({}:{}); it must name the backend",
                server.host, server.port
            ),
            CrossField::new(
                base_url,
                "the backend's address",
                "change server.port",
                "server.port",
                server.port,
                format!("set it to a port other than {}", url.port),
            ),
        );
    }
    if let Some(launch) = model.adapter.launch_profile() {
        // Each of these names the launch profile too: when it came from the profile, the
        // loader says so and how to change both.
        let launch_cross = |requirement: String| {
            CrossField::new(
                base_url,
                requirement,
                "change model.adapter.launchProfile to match",
                "model.adapter.launchProfile",
                format!("on {}:{}", url_host(&launch.host), launch.port),
                format!(
                    "it says llama-server listens on http://{}:{} (render, doctor and supervise \
                     read it): set model.adapter.launchProfile.host and .port to where baseUrl \
                     points, or point baseUrl there",
                    url_host(&launch.host),
                    launch.port
                ),
            )
        };
        let launch_url = format!("http://{}:{}", url_host(&launch.host), launch.port);
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
        // Port 0: Ray picks the port at each load and points the client there; baseUrl's
        // port is not used.
        if launch.port != 0 && url.port != launch.port {
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
        if unbracket(&launch.host).parse::<IpAddr>().is_ok() && !same_host(&url.host, &launch.host)
        {
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

/// The rules between sections, and between fields of one section.
pub(super) fn config(c: &mut Checker, config: &RayConfig) {
    scheduler(c, config);
    let st = &config.streaming;
    if st.first_token_timeout_ms > st.total_timeout_ms {
        c.warn(
            "streaming.firstTokenTimeoutMs",
            format!(
                "is longer than streaming.totalTimeoutMs ({}), which fires first",
                st.total_timeout_ms
            ),
        );
    }
    if config.cache.enabled && config.cache.ttl_ms == 0 {
        c.warn(
            "cache.ttlMs",
            "is 0: cached results never expire and leave only when the cache is full",
        );
    }
    graceful_degradation(c, config);
    adaptive_tuning(c, config);
    edge(c, config);
}

/// `scheduler` against itself, the model and the launch profile.
fn scheduler(c: &mut Checker, config: &RayConfig) {
    let s = &config.scheduler;
    let model_max = config.model.max_output_tokens;
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
                    if value > 1 {
                        format!("set it to at most {}, or raise {field}", value - 1)
                    } else {
                        format!("raise {field} to at least {}", u64::from(model_max) + 1)
                    },
                ),
            );
        }
    }
    let Some(launch) = config.model.adapter.launch_profile() else {
        return;
    };
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

/// `gracefulDegradation` against the scheduler, the model and itself.
fn graceful_degradation(c: &mut Checker, config: &RayConfig) {
    let g = &config.graceful_degradation;
    // Degradation starts below a full queue; with one queue place there is no such depth, and
    // without degradation the threshold is not used.
    let one_place = config.scheduler.max_queue == 1;
    c.at_most_field(
        "gracefulDegradation.queueDepthThreshold",
        g.queue_depth_threshold.into(),
        positive(config.scheduler.max_queue)
            .filter(|_| g.enabled && !one_place)
            .map(|max_queue| max_queue - 1),
        "scheduler.maxQueue - 1",
    );
    if g.enabled && one_place {
        c.error(
            "gracefulDegradation.queueDepthThreshold",
            "must be below scheduler.maxQueue, which is 1: raise scheduler.maxQueue to at least \
             2, or set gracefulDegradation.enabled to false",
        );
    }
    c.at_most_field(
        "gracefulDegradation.degradeToMaxTokens",
        g.degrade_to_max_tokens.into(),
        positive(config.model.max_output_tokens),
        "model.maxOutputTokens",
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
}

/// `adaptiveTuning` against the model and itself.
fn adaptive_tuning(c: &mut Checker, config: &RayConfig) {
    let a = &config.adaptive_tuning;
    let model_max = positive(config.model.max_output_tokens);
    c.at_most_field(
        "adaptiveTuning.minOutputTokens",
        a.min_output_tokens.into(),
        model_max,
        "model.maxOutputTokens",
    );
    c.at_most_field(
        "adaptiveTuning.learnedCapMinSamples",
        a.learned_cap_min_samples.into(),
        positive(a.family_history_size),
        "adaptiveTuning.familyHistorySize",
    );
    c.at_most_field(
        "adaptiveTuning.learnedCapHeadroomTokens",
        a.learned_cap_headroom_tokens.into(),
        model_max,
        "model.maxOutputTokens",
    );
}

/// `auth` and `rateLimit` against where the gateway listens.
fn edge(c: &mut Checker, config: &RayConfig) {
    let server = &config.server;
    let public_bind = !is_loopback_host(&server.host);
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
    let r = &config.rate_limit;
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
}
