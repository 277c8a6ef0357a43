//! `Runtime::embed` through the whole runtime: the mock's vectors, the result cache, a provider
//! without the capability, backend failures, the deadline, and the permit released every time.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ray_core::ErrorCode;
use ray_core::config::ConfigLoader;
use ray_core::wire::embeddings::{EmbeddingsRequest, EncodingFormat};
use ray_models::{
    EmbeddingOutput, EmbeddingRequest, MockProvider, Provider, ProviderError, ProviderOutput,
    ProviderRequest,
};
use ray_runtime::Runtime;

fn config(json: &str) -> ray_core::config::ValidConfig {
    ConfigLoader::new()
        .with_json("t", json)
        .load()
        .unwrap()
        .config
}

fn calm() -> ray_runtime::PressureSources {
    ray_runtime::PressureSources::under(concat!(
        env!("CARGO_TARGET_TMPDIR"),
        "/no-pressure-signals"
    ))
}

fn runtime_with(json: &str, provider: Arc<dyn Provider>) -> Runtime {
    Runtime::builder(config(json))
        .provider(provider)
        .pressure_sources(calm())
        .build()
        .unwrap()
}

fn metric(runtime: &Runtime, name: &str) -> f64 {
    runtime
        .metrics()
        .families
        .iter()
        .find(|f| f.name == name)
        .map(|f| f.samples.iter().map(|s| s.value).sum())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

fn in_flight(runtime: &Runtime) -> f64 {
    metric(runtime, "ray_inflight_requests")
}

#[tokio::test]
async fn the_mock_embeds_and_the_cache_answers_repeats() {
    let mock = Arc::new(MockProvider::new("tiny-dev", "tiny", None, Duration::ZERO));
    let runtime = runtime_with(r#"{"profile":"tiny"}"#, mock.clone());
    let request = EmbeddingsRequest::many(["a queue", "a permit", "a queue"]);
    let first = runtime.embed(request.clone()).await.unwrap();
    assert_eq!(first.object, "list");
    assert_eq!(first.model, "tiny-dev");
    assert_eq!(first.data.len(), 3);
    let vectors: Vec<Vec<f32>> = first
        .data
        .iter()
        .map(|d| d.embedding.to_f32().unwrap())
        .collect();
    assert_eq!(vectors[0], vectors[2], "the same text, the same vector");
    assert_ne!(vectors[0], vectors[1]);
    assert_eq!(vectors[0].len(), 32);
    for (i, item) in first.data.iter().enumerate() {
        assert_eq!(item.index, i as u32);
        assert_eq!(item.object, "embedding");
    }
    assert!(first.usage.prompt_tokens > 0);
    assert_eq!(first.usage.total_tokens, first.usage.prompt_tokens);
    assert_eq!(mock.calls(), 1, "one backend call for the whole request");

    // A repeat comes from the cache: the same vectors and usage, no backend call.
    let again = runtime
        .embed(request.with_encoding(EncodingFormat::Base64))
        .await
        .unwrap();
    assert_eq!(mock.calls(), 1);
    let decoded: Vec<Vec<f32>> = again
        .data
        .iter()
        .map(|d| d.embedding.to_f32().unwrap())
        .collect();
    assert_eq!(decoded, vectors, "base64 decodes to the same floats");
    assert_eq!(again.usage, first.usage);
    assert_eq!(metric(&runtime, "ray_embeddings_requests_total"), 2.0);
    assert_eq!(metric(&runtime, "ray_embeddings_cache_hits_total"), 3.0);
    assert_eq!(metric(&runtime, "ray_embeddings_cache_misses_total"), 3.0);
    assert_eq!(metric(&runtime, "ray_embeddings_provider_calls_total"), 1.0);

    // A mix: only the new text goes to the backend.
    let mixed = runtime
        .embed(EmbeddingsRequest::many(["a permit", "a lane"]))
        .await
        .unwrap();
    assert_eq!(mock.calls(), 2);
    assert_eq!(mixed.data[0].embedding.to_f32().unwrap(), vectors[1]);
    assert_eq!(in_flight(&runtime), 0.0);
}

#[tokio::test]
async fn without_a_cache_every_request_reaches_the_backend() {
    let mock = Arc::new(MockProvider::new("m", "tiny", None, Duration::ZERO));
    let runtime = runtime_with(
        r#"{"profile":"tiny","cache":{"enabled":false}}"#,
        mock.clone(),
    );
    runtime.embed(EmbeddingsRequest::one("x")).await.unwrap();
    runtime.embed(EmbeddingsRequest::one("x")).await.unwrap();
    assert_eq!(mock.calls(), 2);
}

/// A provider that only generates text.
#[derive(Debug)]
struct TextOnly;

#[async_trait]
impl Provider for TextOnly {
    fn kind(&self) -> &'static str {
        "text-only"
    }

    async fn infer(&self, _request: &ProviderRequest) -> Result<ProviderOutput, ProviderError> {
        Ok(ProviderOutput::default())
    }
}

#[tokio::test]
async fn a_model_without_the_capability_is_a_clear_400() {
    let runtime = runtime_with(r#"{"profile":"tiny"}"#, Arc::new(TextOnly));
    let error = runtime
        .embed(EmbeddingsRequest::one("x"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::ModelCapabilityUnsupported);
    assert_eq!(error.status(), 400);
    assert!(error.message().contains("\"tiny-dev\""), "{error}");
    assert!(error.message().contains("text-only"), "{error}");
    assert_eq!(
        metric(&runtime, "ray_embeddings_requests_failed_total"),
        1.0
    );
    // Validation comes first and names the field.
    let error = runtime
        .embed(EmbeddingsRequest::many(Vec::<String>::new()))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidRequest);
    assert!(error.message().starts_with("input"), "{error}");
}

/// Embeds slowly, or fails, or claims the capability but refuses like a chat-only backend.
#[derive(Debug, Default)]
struct Embedder {
    delay_ms: u64,
    fail: bool,
    refuse: bool,
    calls: AtomicU32,
}

#[async_trait]
impl Provider for Embedder {
    fn kind(&self) -> &'static str {
        "embedder"
    }

    async fn infer(&self, _request: &ProviderRequest) -> Result<ProviderOutput, ProviderError> {
        Ok(ProviderOutput::default())
    }

    fn supports_embeddings(&self) -> bool {
        true
    }

    async fn embed(&self, request: &EmbeddingRequest) -> Result<EmbeddingOutput, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
        if self.refuse {
            return Err(ProviderError::CapabilityMissing {
                capability: "embeddings",
                reason: "start llama-server with --embeddings".into(),
            });
        }
        if self.fail {
            return Err(ProviderError::upstream(500, b"backend exploded"));
        }
        Ok(EmbeddingOutput {
            vectors: request.inputs.iter().map(|_| vec![1.0, 0.0]).collect(),
            prompt_tokens: Some(10),
        })
    }
}

#[tokio::test]
async fn backend_refusals_and_failures_are_mapped_and_release_the_permit() {
    let refusing = Arc::new(Embedder {
        refuse: true,
        ..Embedder::default()
    });
    let runtime = runtime_with(r#"{"profile":"tiny"}"#, refusing);
    let error = runtime
        .embed(EmbeddingsRequest::one("x"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::ModelCapabilityUnsupported);
    assert!(error.message().contains("tiny-dev"), "{error}");
    assert!(error.message().contains("--embeddings"), "{error}");
    assert_eq!(in_flight(&runtime), 0.0);

    let failing = Arc::new(Embedder {
        fail: true,
        ..Embedder::default()
    });
    let runtime = runtime_with(r#"{"profile":"tiny"}"#, failing.clone());
    let error = runtime
        .embed(EmbeddingsRequest::one("x"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::ProviderUpstreamError);
    assert_eq!(in_flight(&runtime), 0.0);
    // A failure is not cached: the next request tries again.
    let _ = runtime.embed(EmbeddingsRequest::one("x")).await;
    assert_eq!(failing.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_request_deadline_bounds_a_slow_backend_and_frees_the_permit() {
    let slow = Arc::new(Embedder {
        delay_ms: 60_000,
        ..Embedder::default()
    });
    let runtime = runtime_with(
        r#"{"profile":"tiny","scheduler":{"requestTimeoutMs":2000,"concurrency":1}}"#,
        slow,
    );
    let started = tokio::time::Instant::now();
    let error = runtime
        .embed(EmbeddingsRequest::one("x"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::RequestTimeout);
    assert_eq!(started.elapsed(), Duration::from_millis(2000));
    assert_eq!(in_flight(&runtime), 0.0);
}

#[tokio::test(start_paused = true)]
async fn usage_is_the_backend_count_shared_over_the_inputs() {
    let embedder = Arc::new(Embedder::default());
    let runtime = runtime_with(r#"{"profile":"tiny"}"#, embedder);
    let both = runtime
        .embed(EmbeddingsRequest::many(["abcd", "abcdefgh"]))
        .await
        .unwrap();
    assert_eq!(both.usage.prompt_tokens, 10, "the backend's count");
    // The second text alone comes from the cache with its share (2/3 of 10, rounded up last).
    let one = runtime
        .embed(EmbeddingsRequest::one("abcdefgh"))
        .await
        .unwrap();
    assert_eq!(one.usage.prompt_tokens, 7);
}

#[tokio::test]
async fn a_request_too_costly_for_the_token_budget_is_refused_before_queueing() {
    let mock = Arc::new(MockProvider::new("m", "tiny", None, Duration::ZERO));
    let runtime = runtime_with(
        r#"{"profile":"tiny","scheduler":{"maxInflightTokens":256,"maxQueuedTokens":256}}"#,
        mock.clone(),
    );
    let texts = vec!["x".repeat(8_000); 4];
    let error = runtime
        .embed(EmbeddingsRequest::many(texts))
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        ErrorCode::RequestTokenBudgetExceeded,
        "{error}"
    );
    assert_eq!(mock.calls(), 0);
}
