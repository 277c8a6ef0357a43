//! A typed async client for the Ray inference gateway.
//!
//! [`RayClient`] has one method per route: [`RayClient::infer`] and
//! [`RayClient::infer_stream`] (a [`futures_util::Stream`] of [`InferEvent`]s),
//! [`RayClient::health`], [`RayClient::ready`], [`RayClient::live`],
//! [`RayClient::metrics_text`], [`RayClient::config`]; the OpenAI-compatible
//! [`RayClient::chat_completions`], [`RayClient::chat_completions_stream`],
//! [`RayClient::completions`] and [`RayClient::models`] with the types of [`openai`], and
//! [`RayClient::embeddings`] with the types of [`embeddings`]; and for
//! async jobs [`RayClient::submit_job`], [`RayClient::job`], [`RayClient::list_jobs`],
//! [`RayClient::cancel_job`] and [`RayClient::wait_for_job`] (polls until the job finishes or
//! a deadline passes). Request and response types come from [`ray_core::wire`], so they
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
    DEFAULT_RESPONSE_LIMIT_BYTES, DEFAULT_STREAM_TIMEOUT, DEFAULT_TIMEOUT, EventStream, RayClient,
    RayClientBuilder, WaitOptions,
};
pub use error::Error;
pub use ray_core::ErrorCode;
/// OpenAI-shaped embeddings request and response, for [`RayClient::embeddings`].
pub use ray_core::wire::embeddings;
/// OpenAI-shaped request and response types, for [`RayClient::chat_completions`] and friends.
pub use ray_core::wire::openai;
pub use ray_core::wire::{
    Health, InferEvent, InferRequest, InferResponse, JobAccepted, JobList, JobListQuery, JobRecord,
    JobStatus, JobSubmission, JobSummary, Readiness, StreamDelta,
};
