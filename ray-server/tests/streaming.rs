//! Streaming `/v1/infer` and the OpenAI-compatible routes over loopback HTTP, on the mock
//! provider (which streams word by word, paced by `latencyMs`).

#![allow(clippy::unwrap_used)]

mod util;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ray_core::ErrorCode;
use ray_core::wire::InferRequest;
use ray_sdk::openai::{ChatCompletionRequest, ChatMessage, CompletionRequest};
use ray_sdk::{InferEvent, RayClient};
use util::{TINY, TestServer};

const PACED: &str = r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":400}},
                       "scheduler":{"concurrency":1}}"#;

async fn events(client: &RayClient, request: &InferRequest) -> (Vec<String>, InferEvent) {
    let mut stream = client.infer_stream(request).await.unwrap();
    let mut deltas = Vec::new();
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            InferEvent::Delta(delta) => deltas.push(delta.text),
            done => return (deltas, done),
        }
    }
    panic!("no final event");
}

#[tokio::test]
async fn a_streamed_infer_sends_deltas_then_the_whole_response() {
    let server = TestServer::start(PACED).await;
    // The headers a reverse proxy needs in order not to buffer.
    let response = reqwest::Client::new()
        .post(server.url("/v1/infer"))
        .header("content-type", "application/json")
        .body(r#"{"input":"one two three four five six","stream":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    drop(response);

    let client = server.client();
    let started = Instant::now();
    let mut stream = client
        .infer_stream(&InferRequest::new("alpha beta gamma delta epsilon zeta"))
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(matches!(first, InferEvent::Delta(_)), "{first:?}");
    let mut text = match first {
        InferEvent::Delta(delta) => delta.text,
        _ => unreachable!(),
    };
    let mut done = None;
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            InferEvent::Delta(delta) => text.push_str(&delta.text),
            InferEvent::Done(response) => done = Some((response, started.elapsed())),
            InferEvent::Error(error) => panic!("{error:?}"),
        }
    }
    let (response, done_at) = done.unwrap();
    assert_eq!(response.output, text);
    assert!(
        first_at < done_at,
        "the first token came before the end ({first_at:?} vs {done_at:?})"
    );
    // The final event has every field of the non-streamed answer.
    let whole = client
        .infer(&InferRequest {
            cache: Some(false),
            ..InferRequest::new("alpha beta gamma delta epsilon zeta")
        })
        .await
        .unwrap();
    assert_eq!(whole.output, response.output);
    assert_eq!(
        serde_json::to_value(&whole)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        serde_json::to_value(&*response)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>()
    );
    // A cached answer is replayed as a stream too.
    let (deltas, done) = events(
        &client,
        &InferRequest::new("alpha beta gamma delta epsilon zeta"),
    )
    .await;
    assert_eq!(deltas.len(), 1);
    let InferEvent::Done(replay) = done else {
        panic!("{done:?}")
    };
    assert!(replay.cached);
    assert_eq!(replay.output, response.output);
    server.stop().await;
}

#[tokio::test]
async fn errors_before_the_first_token_are_ordinary_error_responses() {
    let server = TestServer::start(TINY).await;
    let response = reqwest::Client::new()
        .post(server.url("/v1/infer"))
        .header("content-type", "application/json")
        .body(r#"{"input":"  ","stream":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
    // The first-token deadline passes before any byte: 504 with Retry-After.
    let slow = r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":2000}},
                   "streaming":{"firstTokenTimeoutMs":50}}"#;
    let server_slow = TestServer::start(slow).await;
    let error = server_slow
        .client()
        .infer_stream(&InferRequest::new("x"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::StreamFirstTokenTimeout));
    assert_eq!(error.status(), Some(504));
    assert_eq!(error.retry_after(), Some(Duration::from_secs(5)));
    server.stop().await;
    server_slow.stop().await;
}

#[tokio::test]
async fn a_stall_after_the_first_token_ends_the_stream_with_an_error_event() {
    // One word a second: the idle deadline (300 ms) passes after the first.
    let config = r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":5000}},
                     "streaming":{"firstTokenTimeoutMs":2000,"idleTimeoutMs":300}}"#;
    let server = TestServer::start(config).await;
    let raw = reqwest::Client::new()
        .post(server.url("/v1/infer"))
        .header("content-type", "application/json")
        .body(r#"{"input":"a b c d","stream":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    let body = raw.text().await.unwrap();
    assert!(body.starts_with("event: delta\n"), "{body}");
    assert!(
        body.trim_end().ends_with(r#""code":"stream_idle_timeout","message":"No token for streaming.idleTimeoutMs (300 ms)","details":{"timeoutMs":300}}}"#),
        "{body}"
    );
    assert!(body.contains("event: error\n"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_frees_the_permit() {
    let server = TestServer::start(PACED).await;
    let client = server.client();
    let mut stream = client
        .infer_stream(&InferRequest::new("a b c d e f g h i j k l m n o p"))
        .await
        .unwrap();
    assert!(matches!(
        stream.next().await,
        Some(Ok(InferEvent::Delta(_)))
    ));
    assert_eq!(client.health().await.unwrap().runtime.queue.in_flight, 1);
    drop(stream);
    let left = Instant::now();
    loop {
        if client.health().await.unwrap().runtime.queue.in_flight == 0 {
            break;
        }
        assert!(
            left.elapsed() < Duration::from_secs(2),
            "the permit was not freed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("permit free {:?} after the client left", left.elapsed());
    let metrics = client.metrics_text().await.unwrap();
    util::exposition::check(&metrics).unwrap_or_else(|e| panic!("{e}\n{metrics}"));
    assert!(
        metrics.contains("ray_streams_cancelled_total 1"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn identical_concurrent_streams_share_one_generation() {
    let server = TestServer::start(PACED).await;
    let client = server.client();
    let request = InferRequest::new("shared words for two listeners");
    let ((a, a_done), (b, b_done)) =
        tokio::join!(events(&client, &request), events(&client, &request));
    let (InferEvent::Done(a_done), InferEvent::Done(b_done)) = (a_done, b_done) else {
        panic!("both streams end with done")
    };
    assert_eq!(a.concat(), b.concat());
    assert_eq!(a_done.output, b_done.output);
    assert!(
        a_done.deduplicated != b_done.deduplicated,
        "one leads, one follows"
    );
    server.stop().await;
}

#[tokio::test]
async fn openai_chat_completions_whole_and_streamed() {
    let server = TestServer::start(TINY).await;
    let client = server.client();
    let request = ChatCompletionRequest {
        model: Some("tiny-dev".into()),
        messages: vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hello"),
            ChatMessage::new("assistant", "Hi!"),
            ChatMessage::new("user", "How are queues bounded?"),
        ],
        max_tokens: Some(32),
        ..ChatCompletionRequest::default()
    };
    let whole = client.chat_completions(&request).await.unwrap();
    assert_eq!(whole.object, "chat.completion");
    assert!(whole.id.starts_with("chatcmpl-req_"));
    let text = whole.choices[0]
        .message
        .content
        .as_deref()
        .unwrap_or_default();
    assert!(text.ends_with("How are queues bounded?"), "{text}");
    assert_eq!(whole.choices[0].finish_reason.as_deref(), Some("stop"));
    assert!(whole.usage.prompt_tokens > 0 && whole.usage.completion_tokens > 0);

    let mut streamed = request.clone();
    streamed.messages[3] = ChatMessage::new("user", "A different question, streamed");
    streamed.stream_options = Some(ray_sdk::openai::StreamOptions {
        include_usage: true,
    });
    let chunks: Vec<_> = client
        .chat_completions_stream(&streamed)
        .await
        .unwrap()
        .collect()
        .await;
    let chunks: Vec<_> = chunks.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        chunks[0].choices[0].delta.role.as_deref(),
        Some("assistant")
    );
    let text: String = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .filter_map(|c| c.delta.content.clone())
        .collect();
    assert!(text.ends_with("A different question, streamed"), "{text}");
    let finish = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .find_map(|c| c.finish_reason.clone());
    assert_eq!(finish.as_deref(), Some("stop"));
    let usage = chunks.last().unwrap();
    assert!(usage.choices.is_empty());
    assert!(usage.usage.unwrap().total_tokens > 0);
    assert!(chunks.iter().all(|c| c.id == chunks[0].id));

    let completion = client
        .completions(&CompletionRequest {
            prompt: serde_json::json!("Once upon a time"),
            max_tokens: Some(8),
            ..CompletionRequest::default()
        })
        .await
        .unwrap();
    assert!(completion.choices[0].text.ends_with("Once upon a time"));
    let models = client.models().await.unwrap();
    assert_eq!(models.data[0].id, "tiny-dev");
    server.stop().await;
}

#[tokio::test]
async fn openai_routes_answer_errors_in_openai_shape_with_ray_statuses() {
    let config = r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":0}},
                     "rateLimit":{"enabled":true,"maxRequests":2,"windowMs":60000}}"#;
    let server = TestServer::start(config).await;
    let post = |body: &'static str| {
        let url = server.url("/v1/chat/completions");
        async move {
            reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let unsupported =
        post(r#"{"messages":[{"role":"user","content":"x"}],"functions":[{"name":"f"}]}"#).await;
    assert_eq!(unsupported.status(), 400);
    let body: serde_json::Value = unsupported.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "unsupported_parameter");
    assert_eq!(body["error"]["param"], "functions");
    let unknown = post(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}"#).await;
    assert_eq!(unknown.status(), 404);
    let body: serde_json::Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    // The rate limit: the third request in the window is refused, with Retry-After.
    let limited = post(r#"{"messages":[{"role":"user","content":"x"}]}"#).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["code"], "rate_limited");
    server.stop().await;

    let auth = r#"{"profile":"tiny","auth":{"enabled":true,"apiKeyEnv":"RAY_TEST_KEYS"},
                   "model":{"adapter":{"kind":"mock","latencyMs":0}}}"#;
    let server = TestServer::start_with_keys(auth, Some("sk-right")).await;
    let error = RayClient::builder(server.url(""))
        .api_key("sk-wrong")
        .build()
        .unwrap()
        .models()
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(401));
    assert_eq!(error.code(), Some(ErrorCode::Unauthorized));
    let models = server.client_with_key("sk-right").models().await.unwrap();
    assert_eq!(models.object, "list");
    server.stop().await;
}
