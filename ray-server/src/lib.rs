//! The Ray gateway: the HTTP front door and operator CLI over [`ray_runtime::Runtime`].
//!
//! The binary is a thin `main` over this library, so tests run the real server in-process:
//! bind a listener on `127.0.0.1:0`, build an [`App`] over a runtime, and call [`run`].
//!
//! - [`run`] serves an already-bound listener until a shutdown future completes, with a
//!   connection cap, hyper's header limits and timeouts, one JSON log line per request, and a
//!   graceful drain.
//! - [`App`] holds the runtime and the HTTP guards: Bearer API keys ([`auth`]), the fixed-window
//!   rate limiter ([`rate_limit`]), the content rules and body limit ([`http`]).
//! - [`cli`] is the operator CLI: `serve`, `check-config`, `schema`, `print-config`, and the
//!   deploy subcommands: [`render`] (systemd units, Caddyfile, env file), [`doctor`] (host and
//!   config checks), [`stage`] (`stage-model`, `swap-plan`) and [`bench`](mod@bench).
//! - [`deploy`] and [`gguf`] hold what those share: paths, the `llama-server` command line, the
//!   memory split, and a GGUF header reader.
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

mod app;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod deploy;
pub mod doctor;
mod embeddings;
pub mod explain;
pub mod gguf;
mod head;
pub mod http;
mod idle;
pub mod logging;
mod openai;
pub mod rate_limit;
pub mod render;
mod server;
pub mod sse;
pub mod stage;
pub mod status;

pub use app::{App, AppError, HTTP_PRESSURE_THRESHOLD, HttpLimits, PROTECTED_ROUTES};
pub use server::run;

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
