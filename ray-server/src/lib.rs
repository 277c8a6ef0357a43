//! The Ray gateway: the HTTP front door and operator CLI over [`ray_runtime::Runtime`].
//!
//! The binary is a thin `main` over this library, so tests run the real server in-process:
//! bind a listener on `127.0.0.1:0`, build an [`App`] over a runtime, and call [`run`].
//!
//! - [`run`] serves an already-bound listener until a shutdown future completes, with a
//!   connection cap, hyper's header limits and timeouts, one JSON log line per request, and a
//!   graceful drain.
//! - [`App`] holds the runtime and the HTTP guards: Bearer API keys ([`gateway::auth`]), the
//!   runtime's fixed-window rate limiter ([`ray_runtime::RateLimiter`], keyed by
//!   [`gateway::client`]), the content rules and body limit
//!   ([`gateway::http`]); [`gateway`] is the whole HTTP side.
//! - [`cli`] is the command line: `serve`, `check-config`, `schema`, `print-config`, and the
//!   operator tools in [`ops`]: `render` (systemd units, Caddyfile, env file), `doctor` (host
//!   and config checks), `stage-model`, `swap-plan` and `bench`, which share `ops::deploy`,
//!   `ops::gguf` and `ops::fs`. The tools never import the gateway, nor the gateway the tools.
//! - [`logging`] writes `tracing` events as JSON lines.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use ray_core::config::{ConfigLoader, Profile};
//! use ray_runtime::Runtime;
//! use ray_server::{App, run};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ConfigLoader::new().with_override("profile", "tiny".into()).load()?.config;
//! let app = Arc::new(App::new(Runtime::new(config)?)?);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let _background = app.runtime().start();
//! run(listener, app, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod cli;
pub mod explain;
pub mod gateway;
pub mod logging;
pub mod ops;

pub use gateway::app::{App, AppError, HTTP_PRESSURE_THRESHOLD, HttpLimits, PROTECTED_ROUTES};
pub use gateway::server::run;

/// Property-test settings: `default_cases` cases, or as many as `PROPTEST_CASES` says, so the
/// same tests run briefly in `cargo test` and for hours as a fuzzing run (docs/testing.md).
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
