//! `POST /v1/embeddings` over HTTP on loopback: with the mock through `ray-sdk` (vectors,
//! base64, the cache, `models()`, metrics), errors in OpenAI's shape, auth and the rate limit;
//! and against a real `llama-server --embeddings` from the fixture (`tools/llama-fixture`),
//! which print SKIPPED with the reason when the fixture is not built.

#![allow(clippy::unwrap_used)]

mod fixture;
mod util;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ray_core::ErrorCode;
use ray_core::config::ConfigLoader;
use ray_runtime::Runtime;
use ray_runtime::ray_models::{Provider, ProviderError, ProviderOutput, ProviderRequest};
use ray_sdk::embeddings::{EmbeddingVector, EmbeddingsRequest, EncodingFormat};
use util::{TINY, TestServer, metric_value};

async fn post(server: &TestServer, body: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(server.url("/v1/embeddings"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn the_sdk_embeds_with_the_mock_in_both_encodings_and_lists_the_model() {
    let server = TestServer::start(TINY).await;
    let client = server.client();

    let models = client.models().await.unwrap();
    assert_eq!(models.object, "list");
    assert_eq!(models.data.len(), 1);
    assert_eq!(models.data[0].id, "tiny-dev");
    assert_eq!(models.data[0].object, "model");

    let request = EmbeddingsRequest {
        model: Some("tiny-dev".into()),
        ..EmbeddingsRequest::many(["a bounded queue", "a permit"])
    };
    let floats = client.embeddings(&request).await.unwrap();
    assert_eq!(floats.object, "list");
    assert_eq!(floats.model, "tiny-dev");
    assert_eq!(floats.data.len(), 2);
    assert!(matches!(
        floats.data[0].embedding,
        EmbeddingVector::Float(_)
    ));
    let vectors: Vec<Vec<f32>> = floats
        .data
        .iter()
        .map(|d| d.embedding.to_f32().unwrap())
        .collect();
    for vector in &vectors {
        assert_eq!(vector.len(), 32);
        let norm: f32 = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "unit vectors: {norm}");
    }
    assert!(floats.usage.prompt_tokens > 0);

    let base64 = client
        .embeddings(&request.clone().with_encoding(EncodingFormat::Base64))
        .await
        .unwrap();
    assert!(matches!(
        base64.data[0].embedding,
        EmbeddingVector::Base64(_)
    ));
    let decoded: Vec<Vec<f32>> = base64
        .data
        .iter()
        .map(|d| d.embedding.to_f32().unwrap())
        .collect();
    assert_eq!(decoded, vectors, "base64 carries exactly the same floats");

    // The second request came from the cache, and the metrics say so.
    let metrics = client.metrics_text().await.unwrap();
    assert_eq!(
        metric_value(&metrics, "ray_embeddings_requests_total"),
        Some(2.0)
    );
    assert_eq!(
        metric_value(&metrics, "ray_embeddings_cache_hits_total"),
        Some(2.0)
    );
    assert_eq!(
        metric_value(&metrics, "ray_embeddings_provider_calls_total"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&metrics, "ray_embeddings_duration_seconds_count"),
        Some(2.0)
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_answer_in_openai_shape_naming_the_field() {
    let server = TestServer::start(TINY).await;
    let cases: &[(&str, u16, &str, &str, &str)] = &[
        (
            r#"{"model":"tiny-dev"}"#,
            400,
            "invalid_request_error",
            "invalid_request",
            "input",
        ),
        (
            r#"{"input":[]}"#,
            400,
            "invalid_request_error",
            "invalid_request",
            "input",
        ),
        (
            r#"{"input":["ok",""]}"#,
            400,
            "invalid_request_error",
            "invalid_request",
            "input[1]",
        ),
        (
            r#"{"input":[[1,2]]}"#,
            400,
            "invalid_request_error",
            "unsupported_parameter",
            "input[0]",
        ),
        (
            r#"{"input":"x","dimensions":8}"#,
            400,
            "invalid_request_error",
            "unsupported_parameter",
            "dimensions",
        ),
        (
            r#"{"input":"x","encoding_format":"int8"}"#,
            400,
            "invalid_request_error",
            "invalid_request",
            "encoding_format",
        ),
        (
            r#"{"input":"x","model":"text-embedding-3-small"}"#,
            404,
            "not_found_error",
            "model_not_found",
            "model",
        ),
    ];
    for (body, status, kind, code, param) in cases {
        let (got, json) = post(&server, body).await;
        assert_eq!(got, *status, "{body}: {json}");
        assert_eq!(json["error"]["type"], *kind, "{body}: {json}");
        assert_eq!(json["error"]["code"], *code, "{body}: {json}");
        assert_eq!(json["error"]["param"], *param, "{body}: {json}");
        assert!(json["error"]["message"].as_str().unwrap().len() > 10);
    }
    let too_many = serde_json::json!({ "input": vec!["x"; 33] }).to_string();
    let (status, json) = post(&server, &too_many).await;
    assert_eq!(status, 400);
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 32"),
        "{json}"
    );
    let (status, json) = post(&server, "{not json").await;
    assert_eq!(status, 400);
    assert_eq!(json["error"]["code"], "invalid_json");
    // Nothing was admitted, so nothing is held.
    assert_eq!(server.in_flight().await, 0);
    server.stop().await;
}

#[tokio::test]
async fn the_route_is_behind_auth_and_the_rate_limit() {
    let config = r#"{"profile":"tiny","auth":{"enabled":true,"apiKeyEnv":"RAY_TEST_KEYS"},
                     "rateLimit":{"enabled":true,"maxRequests":2,"windowMs":60000},
                     "model":{"adapter":{"kind":"mock","latencyMs":0}}}"#;
    let server = TestServer::start_with_keys(config, Some("sk-right")).await;
    let request = EmbeddingsRequest::one("x");
    let error = server.client().embeddings(&request).await.unwrap_err();
    assert_eq!(error.status(), Some(401));
    assert_eq!(error.code(), Some(ErrorCode::Unauthorized));
    let client = server.client_with_key("sk-right");
    client.embeddings(&request).await.unwrap();
    client.embeddings(&request).await.unwrap();
    let error = client.embeddings(&request).await.unwrap_err();
    assert_eq!(error.status(), Some(429));
    assert_eq!(error.code(), Some(ErrorCode::RateLimited));
    assert!(error.retry_after().is_some());
    server.stop().await;
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
async fn a_model_without_the_capability_answers_400_naming_it() {
    let config = ConfigLoader::new()
        .with_json("t", r#"{"profile":"tiny"}"#)
        .load()
        .unwrap()
        .config;
    let runtime = Runtime::builder(config)
        .provider(Arc::new(TextOnly))
        .pressure_sources(util::no_pressure_signals())
        .build()
        .unwrap();
    let server = TestServer::start_runtime(runtime).await;
    let (status, json) = post(&server, r#"{"input":"x"}"#).await;
    assert_eq!(status, 400);
    assert_eq!(json["error"]["code"], "model_capability_unsupported");
    assert_eq!(json["error"]["type"], "invalid_request_error");
    assert_eq!(json["error"]["param"], "model");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"tiny-dev\"") && message.contains("embeddings"),
        "{message}"
    );
    let error = server
        .client()
        .embeddings(&EmbeddingsRequest::one("x"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::ModelCapabilityUnsupported));
    server.stop().await;
}

/// The fixture's binary and tiny model, or why they cannot be used.
fn llama_fixture() -> Result<(), String> {
    let missing: Vec<String> = [fixture::binary(), fixture::model("tiny")]
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the llama.cpp fixture is not built (missing {missing:?}); run tools/llama-fixture/setup.sh"
        ))
    }
}

async fn ready_server(config: &str) -> TestServer {
    let server = TestServer::start(config).await;
    let started = std::time::Instant::now();
    while !server.client().ready().await.unwrap().is_ready() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "ray-server did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_llama_server_with_embeddings_answers_through_ray() {
    if let Err(why) = llama_fixture() {
        eprintln!("SKIPPED a_real_llama_server_with_embeddings_answers_through_ray: {why}");
        return;
    }
    let port = fixture::free_port();
    let llama = fixture::Llama::start_with(port, "tiny", &["--embeddings", "--pooling", "mean"]);
    let server = ready_server(&fixture::ray_config(port, "")).await;
    let client = server.client();
    let texts = [
        "a bounded queue keeps a small box alive",
        "a permit",
        "une file d'attente bornée",
    ];

    // What llama-server answers directly.
    let direct: serde_json::Value = reqwest::Client::new()
        .post(llama.url("/v1/embeddings"))
        .json(&serde_json::json!({ "input": texts, "model": "ray-tiny" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let direct: Vec<Vec<f32>> = direct["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| serde_json::from_value(d["embedding"].clone()).unwrap())
        .collect();

    let started = std::time::Instant::now();
    let floats = client
        .embeddings(&EmbeddingsRequest::many(texts))
        .await
        .unwrap();
    let first_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(floats.model, "ray-test");
    let vectors: Vec<Vec<f32>> = floats
        .data
        .iter()
        .map(|d| d.embedding.to_f32().unwrap())
        .collect();
    assert_eq!(vectors.len(), 3);
    assert_eq!(vectors[0].len(), 64, "ray-tiny's n_embd");
    for (ours, theirs) in vectors.iter().zip(&direct) {
        let close = ours.iter().zip(theirs).all(|(a, b)| (a - b).abs() < 1e-5);
        assert!(close, "Ray hands on the backend's vectors");
    }
    assert!(floats.usage.prompt_tokens > 0, "the backend's token count");

    // base64 decodes back to the same floats (these come from the cache).
    let started = std::time::Instant::now();
    let base64 = client
        .embeddings(&EmbeddingsRequest::many(texts).with_encoding(EncodingFormat::Base64))
        .await
        .unwrap();
    let cached_ms = started.elapsed().as_secs_f64() * 1e3;
    let decoded: Vec<Vec<f32>> = base64
        .data
        .iter()
        .map(|d| d.embedding.to_f32().unwrap())
        .collect();
    assert_eq!(decoded, vectors);
    assert_eq!(base64.usage, floats.usage);
    eprintln!(
        "llama.cpp embeddings of 3 texts: {first_ms:.1} ms from the backend, {cached_ms:.1} ms from the cache"
    );

    // An uncached base64 request too: the backend's floats, encoded by Ray.
    let fresh = client
        .embeddings(&EmbeddingsRequest::one("something new").with_encoding(EncodingFormat::Base64))
        .await
        .unwrap();
    let EmbeddingVector::Base64(text) = &fresh.data[0].embedding else {
        panic!("base64 was asked for");
    };
    assert_eq!(text.len(), 344, "64 f32s are 256 bytes, 344 base64 chars");
    assert_eq!(fresh.data[0].embedding.to_f32().unwrap().len(), 64);

    let metrics = client.metrics_text().await.unwrap();
    assert_eq!(
        metric_value(&metrics, "ray_embeddings_provider_calls_total"),
        Some(2.0)
    );
    assert_eq!(server.in_flight().await, 0);
    server.stop().await;
    drop(llama);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_llama_server_without_embeddings_is_a_clear_400() {
    if let Err(why) = llama_fixture() {
        eprintln!("SKIPPED a_llama_server_without_embeddings_is_a_clear_400: {why}");
        return;
    }
    let port = fixture::free_port();
    let llama = fixture::Llama::start_with(port, "tiny", &[]);
    let server = ready_server(&fixture::ray_config(port, "")).await;
    let (status, json) = post(&server, r#"{"input":"x"}"#).await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(json["error"]["code"], "model_capability_unsupported");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(message.contains("ray-test"), "{message}");
    assert!(message.contains("--embeddings"), "{message}");
    // A refusal is the client's problem, not the backend's: Ray stays ready.
    assert!(server.client().ready().await.unwrap().is_ready());
    assert_eq!(server.in_flight().await, 0);
    server.stop().await;
    drop(llama);
}
