//! `ray-sdk` on its own: every method of `RayClient` against a live `ray-server` on loopback,
//! and every error code of `ray-core` mapped to the SDK's typed error, in Ray's shape and in
//! OpenAI's.

#![allow(clippy::unwrap_used)]

mod util;

use std::time::Duration;

use futures_util::StreamExt;
use ray_core::wire::openai::{ChatCompletionRequest, ChatMessage, CompletionRequest};
use ray_core::wire::{
    HealthStatus, InferEvent, InferRequest, JobListQuery, JobStatus, JobSubmission,
};
use ray_core::{ErrorCode, RayError};
use ray_sdk::embeddings::EmbeddingsRequest;
use ray_sdk::{RayClient, WaitOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use util::{TINY, TestServer};

const WAIT: WaitOptions = WaitOptions {
    timeout: Duration::from_secs(20),
    initial_interval: Duration::from_millis(10),
    max_interval: Duration::from_millis(100),
};

#[tokio::test]
async fn every_read_and_generation_method_answers_from_a_live_server() {
    let server = TestServer::start(TINY).await;
    let client = server.client();

    assert!(client.live().await.unwrap());
    let health = client.health().await.unwrap();
    assert_ne!(health.status, HealthStatus::Unavailable);
    let ready = client.ready().await.unwrap();
    assert_ne!(ready.status, HealthStatus::Unavailable);
    assert!(client.metrics_text().await.unwrap().contains("# TYPE"));
    let config = client.config().await.unwrap();
    assert_eq!(config["profile"], "tiny");

    let models = client.models().await.unwrap();
    assert_eq!(models.data[0].id, "tiny-dev");

    let response = client
        .infer(&InferRequest::new("a bounded queue"))
        .await
        .unwrap();
    assert!(!response.output.is_empty());

    let mut stream = client
        .infer_stream(&InferRequest::new("a bounded queue"))
        .await
        .unwrap();
    let mut text = String::new();
    let mut done = None;
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            InferEvent::Delta(delta) => text.push_str(&delta.text),
            InferEvent::Done(whole) => done = Some(whole),
            InferEvent::Error(body) => panic!("{body:?}"),
        }
    }
    assert_eq!(done.unwrap().output, text);

    let chat = ChatCompletionRequest {
        messages: vec![ChatMessage::new("user", "a bounded queue")],
        ..ChatCompletionRequest::default()
    };
    let whole = client.chat_completions(&chat).await.unwrap();
    assert_eq!(whole.object, "chat.completion");
    assert!(
        whole.choices[0]
            .message
            .content
            .as_deref()
            .is_some_and(|text| !text.is_empty())
    );
    let mut chunks = client.chat_completions_stream(&chat).await.unwrap();
    let mut streamed = String::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.unwrap();
        assert_eq!(chunk.object, "chat.completion.chunk");
        for choice in chunk.choices {
            streamed.push_str(choice.delta.content.as_deref().unwrap_or(""));
        }
    }
    assert!(!streamed.is_empty());

    let completion = client
        .completions(&CompletionRequest {
            prompt: "a bounded queue".into(),
            ..CompletionRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(completion.object, "text_completion");
    assert!(!completion.choices[0].text.is_empty());

    let embedded = client
        .embeddings(&EmbeddingsRequest::many(["a queue", "a permit"]))
        .await
        .unwrap();
    assert_eq!(embedded.data.len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn every_job_method_answers_from_a_live_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "profile": "tiny",
        "model": {"adapter": {"kind": "mock", "latencyMs": 400}},
        "asyncQueue": {"enabled": true, "storageDir": dir.path().display().to_string(),
                       "minFreeStorageMiB": 1, "pollIntervalMs": 20},
    });
    let server = TestServer::start(&config.to_string()).await;
    let client = server.client();

    let finished = client
        .submit_job(&JobSubmission::new(InferRequest::new("first")))
        .await
        .unwrap();
    let record = client.wait_for_job(&finished.id, WAIT).await.unwrap();
    assert_eq!(record.status, JobStatus::Succeeded);
    assert_eq!(client.job(&finished.id).await.unwrap().id, finished.id);

    let cancelled = client
        .submit_job(&JobSubmission::new(InferRequest::new("second")))
        .await
        .unwrap();
    let record = client.cancel_job(&cancelled.id).await.unwrap();
    assert_eq!(record.status, JobStatus::Cancelled);
    // Cancelling again is idempotent: the record stays cancelled.
    let again = client.cancel_job(&cancelled.id).await.unwrap();
    assert_eq!(again.status, JobStatus::Cancelled);

    let listed = client.list_jobs(&JobListQuery::default()).await.unwrap();
    let ids: Vec<&str> = listed.jobs.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(ids, vec![cancelled.id.as_str(), finished.id.as_str()]);

    let missing = client.job("job_0000000000000000").await.unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::JobNotFound));
    assert_eq!(missing.status(), Some(ErrorCode::JobNotFound.status()));
    server.stop().await;
}

#[tokio::test]
async fn errors_of_a_live_server_arrive_typed() {
    let server = TestServer::start_with_keys(
        r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":0}},
            "auth":{"enabled":true}}"#,
        Some("a-key-long-enough-for-the-gateway-0001"),
    )
    .await;
    let anonymous = server.client();
    let refused = anonymous.infer(&InferRequest::new("x")).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Unauthorized));
    assert_eq!(refused.status(), Some(401));
    assert!(!refused.is_retryable());

    let client = server.client_with_key("a-key-long-enough-for-the-gateway-0001");
    let invalid = client.infer(&InferRequest::new("   ")).await.unwrap_err();
    assert_eq!(invalid.code(), Some(ErrorCode::InvalidRequest));
    assert_eq!(invalid.status(), Some(400));
    server.stop().await;

    // Nothing listens on a port just freed: a connect error, which may succeed later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = RayClient::new(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .health()
        .await
        .unwrap_err();
    assert!(gone.is_connect());
    assert!(gone.is_retryable());
    assert_eq!(gone.code(), None);
}

/// Answers every connection with one HTTP response, for error codes a live gateway cannot be
/// made to produce on demand (a backend crash, a full disk).
async fn answer_once(
    listener: &tokio::net::TcpListener,
    status: u16,
    body: &str,
    retry: Option<u32>,
) {
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let mut read = 0;
    while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf[read..]).await.unwrap();
        if n == 0 {
            break;
        }
        read += n;
    }
    let head = String::from_utf8_lossy(&buf[..read]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let body_start = head.find("\r\n\r\n").unwrap() + 4;
    let mut have = read - body_start;
    while have < length {
        have += socket.read(&mut buf[..]).await.unwrap();
    }
    let retry = retry.map_or(String::new(), |s| format!("retry-after: {s}\r\n"));
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry}connection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await.unwrap();
    socket.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_error_code_maps_to_its_typed_error_in_both_shapes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = RayClient::new(format!("http://{}", listener.local_addr().unwrap())).unwrap();
    for &code in ErrorCode::ALL {
        let error = RayError::new(code, format!("{code} happened"));
        let retry = code.retry_after_secs();
        let native = serde_json::to_string(&error.to_body()).unwrap();
        let openai = serde_json::json!({"error": {
            "message": format!("{code} happened"), "type": "ray_error",
            "param": null, "code": code.as_str()}})
        .to_string();
        for (shape, body) in [("ray", native), ("openai", openai)] {
            let request = InferRequest::new("x");
            let (typed, ()) = tokio::join!(
                client.infer(&request),
                answer_once(&listener, code.status(), &body, retry)
            );
            let typed = typed.unwrap_err();
            assert!(typed.is_api(), "{code} {shape}");
            assert_eq!(typed.code(), Some(code), "{code} {shape}");
            assert_eq!(typed.status(), Some(code.status()), "{code} {shape}");
            assert_eq!(
                typed.message(),
                format!("{code} happened"),
                "{code} {shape}"
            );
            assert_eq!(
                typed.retry_after(),
                retry.map(|s| Duration::from_secs(u64::from(s))),
                "{code} {shape}"
            );
            assert_eq!(typed.is_retryable(), retry.is_some(), "{code} {shape}");
            assert_eq!(
                typed.to_string(),
                format!("ray answered {} {code}: {code} happened", code.status()),
                "{code} {shape}"
            );
        }
    }
}
