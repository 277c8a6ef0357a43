//! The Ray runtime: everything a small inference box needs in front of its model backend,
//! as one object a Rust program can host in-process.
//!
//! [`Runtime`] wires the pieces together in the order a request meets them:
//!
//! 1. **Normalise**: defaults and limits from the config, built-in templates, the prompt
//!    compiler (whitespace, repeated lines) and the prompt family.
//! 2. **Degrade**: under queue, memory or CPU pressure, clamp the output and trim the prompt,
//!    and say so in the response diagnostics.
//! 3. **Cache**: a bounded result cache ([`ray_cache`]) answers repeated requests at once.
//! 4. **Dedupe**: identical concurrent requests share one backend execution.
//! 5. **Admit**: a bounded, token-aware queue ([`ray_scheduler`]) hands out permits.
//! 6. **Execute**: the [`Provider`](ray_models::Provider) call, under the permit, cancelled
//!    when the caller leaves or the deadline passes.
//!
//! [`Runtime::infer`] answers whole; [`Runtime::infer_stream`] hands the tokens on as they are
//! generated ([`InferStream`]), with identical concurrent streams sharing one generation.
//! [`Runtime::embed`] computes embedding vectors (OpenAI's shape) through the same cache and
//! scheduler, for a provider that implements [`Provider::embed`](ray_models::Provider::embed).
//!
//! Around that it keeps metrics ([`MetricsSnapshot`], renderable as Prometheus text), the
//! backend's health and readiness (probes cached for one second, combined with warm-up state),
//! and warm-up with retry in the background ([`Runtime::start`]).
//!
//! With `asyncQueue.enabled`, the runtime also holds a durable job queue ([`JobQueue`], see
//! [`jobs`]): [`Runtime::submit_job`] stores a job before it returns, the background work runs
//! it through [`Runtime::infer`] with retries and delivers its signed callback, and a restart
//! picks up where a crash left off. Records live behind the [`JobStore`] trait; the default is
//! [`FileJobStore`], one atomically written file per job.
//!
//! The `ray-server` binary is a thin HTTP front on this crate; an embedder gets the same
//! behaviour without a socket.
//!
//! # Example
//!
//! ```
//! use ray_core::config::{ConfigLoader, Profile};
//! use ray_core::wire::InferRequest;
//! use ray_runtime::Runtime;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // The tiny profile serves the built-in mock provider: no model needed.
//! let config = ConfigLoader::new()
//!     .with_json("inline", r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":0}}}"#)
//!     .load()?
//!     .config;
//! let runtime = Runtime::new(config)?;
//! let _background = runtime.start();
//!
//! let response = runtime.infer(InferRequest::new("Why do small models need queues?")).await?;
//! assert!(response.output.contains("small models"));
//! assert!(runtime.readiness().await.is_ready());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

pub mod backend;
mod builder;
mod condition;
mod context;
pub mod deadline;
mod degrade;
mod execute;
pub mod footprint;
mod front;

mod embed;
mod health;
pub mod hooks;
mod ids;
pub mod jobs;
pub mod lifecycle;
mod log_policy;
mod managed;
pub mod metrics;
mod model_health;
mod observe;
mod outcome;
mod plan;
mod pressure;
mod priority;
mod prompt;
mod registry;
pub mod reload;
mod respond;
mod routing;
mod runtime;
pub mod shared;
mod state;
mod stream;
mod telemetry;
pub mod templates;
mod tuning;
mod warmup;
mod watch;

pub use backend::BackendProcess;
pub use builder::RuntimeBuilder;
pub use condition::ModelCondition;
pub use context::RequestContext;
pub use ids::IdSource;
pub use jobs::{FileJobStore, JobQueue, JobStore};
pub use log_policy::{LogPolicy, SUMMARY_INTERVAL, access_scope};
pub use metrics::{LATENCY_BUCKETS, MetricFamily, MetricKind, MetricsSnapshot, Sample};
pub use model_health::{HEALTH_MONITOR_INTERVAL, PROVIDER_HEALTH_TTL, WarmState};
pub use plan::{DEFAULT_TEMPERATURE, DEFAULT_TOP_P};
pub use pressure::{
    PressureSignals, PressureSnapshot, PressureSources, SAMPLE_INTERVAL, parse_vm_rss,
    process_rss_bytes,
};
pub use prompt::{Compiled, Family, collapse_whitespace, compile, family, input_shape};
pub use reload::{ReloadError, ReloadReport};
pub use runtime::{Runtime, RuntimeError};
pub use shared::{RateLimiter, ResultStore};
pub use stream::InferStream;
pub use warmup::{Background, warmup_retry_delay};

/// Re-exported so embedders need not depend on the lower crates directly.
pub use ray_core;
pub use ray_models;

/// Property-test settings: `default_cases` cases, or as many as `PROPTEST_CASES` says, so the
/// same tests run briefly in `cargo test` and for hours as a fuzzing run.
#[cfg(test)]
pub(crate) fn fuzz_config(default_cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    proptest::test_runner::Config {
        cases,
        ..proptest::test_runner::Config::default()
    }
}
