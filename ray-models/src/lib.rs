//! Ray's model backends behind one trait.
//!
//! - [`Provider`] is the public extension point: infer, stream, health, warm-up, token
//!   counting and detected capabilities. The runtime owns queueing, caching, dedupe and
//!   deadlines; a provider only talks to its backend, and stops when its future is dropped.
//! - [`ProviderError`] says what went wrong with a backend and maps into Ray's stable error
//!   codes (`provider_timeout`, `provider_upstream_error`, ...).
//! - [`LlamaCppProvider`] talks to llama.cpp's `llama-server`: the OpenAI-compatible chat
//!   endpoint plus its native endpoints (`/props`, `/tokenize`, `/apply-template`,
//!   `/completion` with `cache_prompt` and `id_slot`, `/slots`, `/metrics`).
//! - [`OpenAiProvider`] talks to any server with the OpenAI chat completions API.
//! - [`MockProvider`] answers deterministically with no model, for development and tests.
//! - [`provider_from_config`] builds the one a config's adapter names.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use ray_models::{MockProvider, Provider, ProviderRequest};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let mock = MockProvider::new("tiny-dev", "tiny", None, Duration::ZERO);
//! let output = mock.infer(&ProviderRequest::new("req_1", "Hello", 16)).await?;
//! assert!(output.text.ends_with("Hello"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod build;
mod error;
pub mod http;
mod llama;
mod mock;
mod openai;
mod provider;
mod sse;
mod upstream;

pub use build::provider_from_config;
pub use error::{ProviderError, UPSTREAM_BODY_EXCERPT_BYTES};
pub use llama::{CAPABILITY_TTL, LlamaCppProvider, LlamaCppSettings};
pub use mock::MockProvider;
pub use openai::{OpenAiProvider, OpenAiSettings};
pub use provider::{
    PreparedPrompt, PromptFormat, Provider, ProviderHealthReport, ProviderOutput, ProviderRequest,
    StreamEvent, TemplateRef, TokenStream, sentinel,
};
