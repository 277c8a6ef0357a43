//! A typed async client for the Ray inference gateway.
//!
//! [`RayClient`] has one method per route: [`RayClient::infer`], [`RayClient::health`],
//! [`RayClient::ready`], [`RayClient::live`], [`RayClient::metrics_text`],
//! [`RayClient::config`], and for async jobs [`RayClient::submit_job`], [`RayClient::job`],
//! [`RayClient::list_jobs`], [`RayClient::cancel_job`] and [`RayClient::wait_for_job`] (polls
//! until the job finishes or a deadline passes). Request and response types come from [`ray_core::wire`], so they
//! always match the server. Every failure is an [`Error`] that carries the server's error code
//! ([`Error::code`]), HTTP status and `Retry-After`, with predicates such as
//! [`Error::is_retryable`].
//!
//! The client speaks plain http by default; enable the `rustls` feature for https.
//!
//! # Example
//!
//! ```no_run
//! use ray_sdk::{ErrorCode, InferRequest, RayClient};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = RayClient::builder("http://127.0.0.1:3000").api_key("my-key").build()?;
//! match client.infer(&InferRequest::new("Summarise: ...")).await {
//!     Ok(response) => println!("{} (cached: {})", response.output, response.cached),
//!     Err(error) if error.code() == Some(ErrorCode::QueueFull) => {
//!         println!("busy, retry in {:?}", error.retry_after());
//!     }
//!     Err(error) => return Err(error.into()),
//! }
//! # Ok(()) }
//! ```

mod client;
mod error;

pub use client::{
    DEFAULT_RESPONSE_LIMIT_BYTES, DEFAULT_TIMEOUT, RayClient, RayClientBuilder, WaitOptions,
};
pub use error::Error;
pub use ray_core::ErrorCode;
pub use ray_core::wire::{
    Health, InferRequest, InferResponse, JobAccepted, JobList, JobListQuery, JobRecord, JobStatus,
    JobSubmission, JobSummary, Readiness,
};
