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
//! - Embeddings: [`Provider::embed`] (with [`Provider::supports_embeddings`]) computes one
//!   vector per text; the HTTP adapters call the backend's `POST /v1/embeddings`
//!   (`llama-server --embeddings`), the mock derives normalised vectors from a hash of the text.
//! - [`provider_from_config`] builds the one a config's adapter names.
//! - [`http`] is the HTTP client the adapters share: one pooled connection set per backend,
//!   no redirects, request and response bodies capped at 1 MiB, per-call timeouts.
//!
//! Both HTTP adapters ask the backend to stream every generation, also when the caller wants
//! one output: `llama-server` notices a connection that closed only while it streams, so this
//! is what makes dropping a call stop the generation. [`Provider::infer`] assembles the stream;
//! [`Provider::stream`] hands it on.
//!
//! To host a backend of your own, implement [`Provider`] and pass it to
//! `ray_runtime::Runtime::builder(config).provider(...)`; `examples/custom_provider.rs` in the
//! repository is a runnable example.
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
mod embed;
mod error;
pub mod http;
mod llama;
mod mock;
mod openai;
mod provider;
mod sse;
mod upstream;

pub use build::{provider_for_model, provider_from_config};
pub use error::{ProviderError, UPSTREAM_BODY_EXCERPT_BYTES};
pub use llama::{CAPABILITY_TTL, LlamaCppProvider, LlamaCppSettings};
pub use mock::MockProvider;
pub use openai::{OpenAiProvider, OpenAiSettings};
pub use provider::{
    EmbeddingOutput, EmbeddingRequest, PreparedPrompt, PromptFormat, Provider,
    ProviderHealthReport, ProviderOutput, ProviderRequest, StreamEvent, TemplateRef, TokenStream,
    sentinel,
};
