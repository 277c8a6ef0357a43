//! End to end against a real `llama-server` (the fixture in `tools/llama-fixture`): readiness,
//! inference with token usage and timings, JSON mode, slot affinity, exact token counts in
//! admission, backend death and restart, client disconnects, slow backends, streams; and the
//! deploy path against the real binary and models: supervised mode (kill the child, watch Ray
//! restart it and become ready again), doctor's `--help` flag check, staging, and the GGUF
//! reader.
//!
//! These tests are `#[ignore]`d: they need the fixture built (`tools/llama-fixture/setup.sh`).
//! `.ci/run` builds it and runs them with `cargo test -p ray-server --test llama_e2e --
//! --ignored`; when it cannot, it says why and they count as skipped.

#![allow(clippy::unwrap_used)]

mod deploy_tools;
mod fixture;
mod util;

use std::time::{Duration, Instant};

use fixture::{Llama, free_port, ray_config};
use ray_core::ErrorCode;
use ray_core::wire::InferRequest;
use util::TestServer;

/// Starts a ray-server for `config` and waits (up to 30 s) until it is ready.
async fn ready_server(config: &str) -> TestServer {
    let server = TestServer::start(config).await;
    wait_until(Duration::from_secs(30), || async {
        server.client().ready().await.unwrap().is_ready()
    })
    .await;
    server
}

async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn readiness_follows_warm_up_and_the_backend() {
    fixture::require();
    let port = free_port();
    // Ray starts first: the backend is not there yet.
    let server = TestServer::start(&ray_config(port, "")).await;
    let ready = server.client().ready().await.unwrap();
    assert!(!ready.is_ready());
    assert!(
        ready.reasons[0] == "provider_unavailable" || ready.reasons[0] == "provider_warming",
        "{:?}",
        ready.reasons
    );
    // Requests are refused clearly meanwhile, with Retry-After.
    let error = server
        .client()
        .infer(&InferRequest::new("hello"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error.code(),
            Some(ErrorCode::ProviderUnavailable | ErrorCode::ProviderWarming)
        ),
        "{error}"
    );
    assert!(error.retry_after().is_some());
    // The backend comes up; warm-up retries and Ray turns ready by itself.
    let _llama = Llama::start_on(port, "tiny");
    let took = wait_until(Duration::from_secs(20), || async {
        server.client().ready().await.unwrap().is_ready()
    })
    .await;
    eprintln!("ready {took:?} after the backend came up");
    let health = server.client().health().await.unwrap();
    let caps = health.provider.detected_capabilities.unwrap();
    assert_eq!(caps.total_slots, Some(2));
    assert_eq!(caps.context_window, Some(2048));
    assert_eq!(
        caps.tokenize,
        ray_core::wire::Availability::Available,
        "{caps:?}"
    );
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn inference_reports_tokens_timings_and_exact_prompt_counts() {
    let llama = Llama::start("tiny");
    let server = ready_server(&ray_config(llama.port, "")).await;
    let request = InferRequest {
        system: Some("Be brief.".into()),
        max_tokens: Some(24),
        temperature: Some(0.0),
        ..InferRequest::new("Summarise why small models need queues.")
    };
    let response = server.client().infer(&request).await.unwrap();
    let tokens = response.usage.tokens.expect("token usage");
    assert_eq!(tokens.completion, 24);
    let provider = response.diagnostics.provider.clone().unwrap();
    assert_eq!(provider.request_shape, "llama.cpp-completion");
    assert_eq!(
        provider.prompt_format.as_deref(),
        Some("llama.cpp-template")
    );
    assert!(
        provider
            .timings
            .unwrap()
            .completion_tokens_per_second
            .is_some()
    );
    assert_eq!(provider.total_slots, Some(2));
    // Admission used the backend's exact count of the prompt it really sees.
    let prompt = llama
        .apply_template(Some("Be brief."), "Summarise why small models need queues.")
        .await;
    let exact = llama.token_count(&prompt).await as u32;
    let scheduler = response.diagnostics.scheduler.unwrap();
    assert_eq!(scheduler.prompt_tokens_source, "tokenizer");
    assert_eq!(scheduler.prompt_tokens, exact);
    assert_eq!(scheduler.cost_tokens, exact + 24);
    assert_eq!(tokens.prompt, u64::from(exact));
    // After a couple of prompts Ray renders the template from a checked scaffold instead of
    // asking the backend; the prompts it renders, and so their counts, stay exact.
    for (i, system) in [
        None,
        Some("Answer in one line."),
        None,
        Some("Be kind."),
        None,
        Some("x"),
    ]
    .into_iter()
    .enumerate()
    {
        let input = format!("Question number {i}: what  is a   queue?\n  ");
        let request = InferRequest {
            system: system.map(String::from),
            max_tokens: Some(4),
            cache: Some(false),
            ..InferRequest::new(input.clone())
        };
        let response = server.client().infer(&request).await.unwrap();
        let sent = response.diagnostics.scheduler.unwrap().prompt_tokens;
        // The prompt compiler collapses whitespace and trims before the template sees it.
        let compiled = format!("Question number {i}: what is a queue?");
        let exact = llama
            .token_count(&llama.apply_template(system, &compiled).await)
            .await as u32;
        assert_eq!(sent, exact, "prompt {i}");
        assert_eq!(
            response.usage.tokens.unwrap().prompt,
            u64::from(exact),
            "prompt {i}"
        );
    }
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn exact_counts_refuse_what_an_estimate_would_admit() {
    let llama = Llama::start("tiny");
    // The tiny tokenizer spends about one token per two characters of this text, twice what a
    // chars/4 estimate assumes: 1200 chars estimate to ~300 tokens but count ~600.
    let server = TestServer::start(&ray_config(
        llama.port,
        r#","scheduler":{"maxInflightTokens":1100,"maxQueuedTokens":24000,"concurrency":2}"#,
    ))
    .await;
    wait_until(Duration::from_secs(10), || async {
        server.client().ready().await.unwrap().is_ready()
    })
    .await;
    let input = "zq xv ".repeat(200);
    let estimate = (input.len() as u32).div_ceil(4);
    let request = InferRequest {
        max_tokens: Some(600),
        ..InferRequest::new(input.clone())
    };
    let error = server.client().infer(&request).await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(ErrorCode::RequestTokenBudgetExceeded),
        "{error}"
    );
    let cost = error.details().unwrap()["costTokens"].as_u64().unwrap() as u32;
    assert!(
        estimate + 600 <= 1100 && cost > 1100,
        "estimate {estimate}+600 would fit, the exact cost {cost} does not"
    );
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn json_mode_uses_the_chat_endpoint_and_repairs_once() {
    let llama = Llama::start("tiny");
    let server = ready_server(&ray_config(llama.port, "")).await;
    let request: InferRequest = serde_json::from_value(serde_json::json!({
        "templateId": "email.reply_classification.v1",
        "templateVariables": {"replyText": "Send pricing and implementation details."}
    }))
    .unwrap();
    let response = server.client().infer(&request).await.unwrap();
    let provider = response.diagnostics.provider.clone().unwrap();
    assert_eq!(provider.request_shape, "openai-chat");
    assert_eq!(provider.prompt_format.as_deref(), Some("openai-chat"));
    let parsed = serde_json::from_str::<serde_json::Value>(&response.output);
    // The random-weight model is constrained by llama.cpp's JSON grammar; when its output is
    // cut by maxTokens, Ray repairs it once and says so.
    match parsed {
        Ok(value) => assert!(value.is_object(), "{}", response.output),
        Err(_) => assert_eq!(provider.json_repair_attempted, Some(true)),
    }
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn a_prompt_family_keeps_its_slot_and_its_prompt_cache() {
    let llama = Llama::start("tiny");
    let server = ready_server(&ray_config(llama.port, "")).await;
    let ask = |suffix: &str| InferRequest {
        system: Some(
            "You summarise support tickets in one sentence for the on-call engineer.".into(),
        ),
        max_tokens: Some(8),
        cache: Some(false),
        metadata: Some([("promptFamily".to_string(), "support.summary".to_string())].into()),
        ..InferRequest::new(format!("Ticket: the nightly export failed again {suffix}"))
    };
    let first = server.client().infer(&ask("on Monday")).await.unwrap();
    let second = server.client().infer(&ask("on Tuesday")).await.unwrap();
    let first = first.diagnostics.provider.unwrap();
    let second = second.diagnostics.provider.unwrap();
    assert_eq!(
        second.slot_route_reason.as_deref(),
        Some("family_warm_permit")
    );
    assert_eq!(second.slot_id, first.slot_id, "same family, same slot");
    assert!(
        second.tokens_cached.unwrap_or(0) > 0,
        "the shared prefix came from the slot's prompt cache: {second:?}"
    );
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn the_backend_dies_and_comes_back() {
    let port = free_port();
    let mut llama = Llama::start_on(port, "large");
    let server = ready_server(&ray_config(port, "")).await;
    // The context window llama-server gives each of its two slots.
    let window = || async {
        let (status, models) = get_json(server.url("/v1/models")).await;
        assert_eq!(status, 200, "{models}");
        models["data"][0]["contextWindow"].as_u64().unwrap()
    };
    assert_eq!(window().await, 2048);
    // A long generation is in flight when the backend is killed.
    let in_flight = {
        let client = server.client();
        tokio::spawn(async move {
            client
                .infer(&InferRequest {
                    max_tokens: Some(1000),
                    cache: Some(false),
                    ..InferRequest::new("Write a long story about a lighthouse.")
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    llama.kill();
    let error = in_flight.await.unwrap().unwrap_err();
    assert!(
        matches!(error.status(), Some(502 | 503)),
        "a clear 502/503, got {error}"
    );
    let took = wait_until(Duration::from_secs(2), || async {
        let ready = server.client().ready().await.unwrap();
        !ready.is_ready()
            && ready.reasons.first().map(String::as_str) == Some("provider_unavailable")
    })
    .await;
    eprintln!("/readyz turned 503 provider_unavailable {took:?} after the kill");
    // While it is down, the window stays the one it reported, not the launch profile's whole
    // --ctx-size (tested with a backend that is probed while down in ray-models).
    assert_eq!(window().await, 2048);
    // Back on the same port: Ray turns ready by itself and serves again.
    let _llama = Llama::start_on(port, "large");
    wait_until(Duration::from_secs(15), || async {
        server.client().ready().await.unwrap().is_ready()
    })
    .await;
    let response = server
        .client()
        .infer(&InferRequest {
            max_tokens: Some(8),
            ..InferRequest::new("Are you back?")
        })
        .await
        .unwrap();
    assert_eq!(response.usage.tokens.unwrap().completion, 8);
    let health = server.client().health().await.unwrap();
    assert_eq!(health.runtime.queue.in_flight, 0, "no leaked permit");
    assert_eq!(health.runtime.queue.in_flight_tokens, 0);
    server.stop().await;
}

/// A long generation on the slowest fixture model: 1000 tokens take it several seconds, so a
/// generation that stops early was stopped, not finished.
const LONG: &str =
    r#"{"input":"Write a very long essay about queues.","maxTokens":1000,"cache":false}"#;

/// Asserts that `llama-server` stopped generating soon after Ray let go of the request, and
/// generated far fewer tokens than were asked for.
async fn assert_generation_stopped(llama: &Llama, predicted_before: u64, what: &str) {
    let took = llama.wait_idle(Duration::from_secs(2)).await;
    let generated = llama.tokens_predicted().await - predicted_before;
    eprintln!("{what}: llama-server stopped {took:?} later, after {generated} of 1000 tokens");
    assert!(
        generated < 600,
        "{what}: the generation ran on ({generated} tokens)"
    );
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn a_client_that_leaves_stops_the_generation() {
    let llama = Llama::start("xl");
    let server = ready_server(&ray_config(llama.port, "")).await;
    let before = llama.tokens_predicted().await;
    let url = server.url("/v1/infer");
    let leaving = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(LONG)
            .send()
            .await
    });
    wait_until(Duration::from_secs(5), || async {
        llama.busy_slots().await > 0
    })
    .await;
    leaving.abort();
    assert_generation_stopped(&llama, before, "client left").await;
    wait_until(Duration::from_secs(2), || async {
        server
            .client()
            .health()
            .await
            .unwrap()
            .runtime
            .queue
            .in_flight
            == 0
    })
    .await;
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn a_backend_slower_than_its_timeout_is_provider_timeout() {
    let llama = Llama::start("xl");
    // Warm-up would time out too (correctly): this test is about requests, so it skips it.
    let config = ray_config(llama.port, "")
        .replace(r#""timeoutMs":30000"#, r#""timeoutMs":500"#)
        .replace(
            r#""maxOutputTokens":1024"#,
            r#""maxOutputTokens":1024,"warmOnBoot":false"#,
        );
    let server = ready_server(&config).await;
    let before = llama.tokens_predicted().await;
    let request: InferRequest = serde_json::from_str(LONG).unwrap();
    let error = server.client().infer(&request).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::ProviderTimeout), "{error}");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(5)));
    assert_generation_stopped(&llama, before, "adapter timeout").await;
    assert_eq!(server.in_flight().await, 0);
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn the_request_deadline_aborts_the_backend_call() {
    let llama = Llama::start("xl");
    let config = ray_config(llama.port, "").replace(
        r#""requestTimeoutMs":60000"#,
        r#""requestTimeoutMs":800,"batchWindowMs":0"#,
    );
    let server = ready_server(&config).await;
    let before = llama.tokens_predicted().await;
    let request: InferRequest = serde_json::from_str(LONG).unwrap();
    let error = server.client().infer(&request).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::RequestTimeout), "{error}");
    assert_generation_stopped(&llama, before, "request deadline").await;
    assert_eq!(server.in_flight().await, 0);
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn the_openai_compatible_adapter_serves_from_llama_server_too() {
    let llama = Llama::start("tiny");
    let config = format!(
        r#"{{"profile":"vps","model":{{"id":"ray-test",
             "adapter":{{"kind":"openai-compatible","baseUrl":"http://127.0.0.1:{}","modelRef":"ray-tiny","timeoutMs":10000}}}},
             "rateLimit":{{"enabled":false}}}}"#,
        llama.port
    );
    let server = ready_server(&config).await;
    let response = server
        .client()
        .infer(&InferRequest {
            max_tokens: Some(12),
            ..InferRequest::new("hello")
        })
        .await
        .unwrap();
    assert_eq!(response.usage.tokens.unwrap().completion, 12);
    assert_eq!(
        response.diagnostics.provider.unwrap().request_shape,
        "openai-chat"
    );
    // A model the backend does not serve makes the provider unavailable, and says which it has.
    let wrong = config.replace(r#""modelRef":"ray-tiny""#, r#""modelRef":"nope""#);
    let server_wrong = TestServer::start(&wrong).await;
    // `/health` answers 503 while the provider is unavailable, with the same body.
    let response = reqwest::get(server_wrong.url("/health")).await.unwrap();
    assert_eq!(response.status(), 503);
    let health: ray_core::wire::Health = response.json().await.unwrap();
    assert_eq!(
        health.provider.status,
        ray_core::wire::ProviderStatus::Unavailable
    );
    assert_eq!(
        health.provider.details.unwrap()["availableModels"][0],
        "ray-tiny"
    );
    server.stop().await;
    server_wrong.stop().await;
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn a_backend_api_key_is_sent_and_a_wrong_one_is_a_clear_upstream_error() {
    // `cargo test` sets CARGO_PKG_NAME in the test's environment: it names the key.
    let key = std::env::var("CARGO_PKG_NAME").unwrap();
    let llama = Llama::start_with(free_port(), "tiny", &["--api-key", &key]);
    let openai = |adapter_extra: &str| {
        format!(
            r#"{{"profile":"sub1b","model":{{"id":"ray-test",
                 "adapter":{{"kind":"openai-compatible","baseUrl":"http://127.0.0.1:{}",
                             "modelRef":"ray-tiny","timeoutMs":10000{adapter_extra}}}}},
                 "cache":{{"enabled":false}},"rateLimit":{{"enabled":false}}}}"#,
            llama.port
        )
    };
    let configs = [
        ray_config(llama.port, "").replace(
            r#""timeoutMs":30000"#,
            r#""timeoutMs":30000,"apiKeyEnv":"CARGO_PKG_NAME""#,
        ),
        openai(r#","apiKeyEnv":"CARGO_PKG_NAME""#),
    ];
    for config in &configs {
        let server = TestServer::start(config).await;
        wait_until(Duration::from_secs(10), || async {
            server.client().ready().await.unwrap().is_ready()
        })
        .await;
        let response = server
            .client()
            .infer(&InferRequest {
                max_tokens: Some(4),
                ..InferRequest::new("hello")
            })
            .await
            .unwrap_or_else(|e| panic!("{config}: {e}"));
        assert_eq!(response.usage.tokens.unwrap().completion, 4, "{config}");
        server.stop().await;
    }
    // Without the key the backend refuses, and the client is told who refused and how: warm-up
    // fails and says why, and with no warm-up the request itself carries the upstream status.
    let server = TestServer::start(&openai("")).await;
    let error = wait_for_error(&server, ErrorCode::ProviderUnavailable).await;
    let warmup = error.details().unwrap()["warmupError"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(warmup.contains("401"), "{warmup}");
    server.stop().await;
    let config = openai("").replace(
        r#""id":"ray-test","#,
        r#""id":"ray-test","warmOnBoot":false,"#,
    );
    let server = TestServer::start(&config).await;
    let error = server
        .client()
        .infer(&InferRequest::new("hello"))
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Some(ErrorCode::ProviderUpstreamError),
        "{error}"
    );
    assert_eq!(error.status(), Some(502));
    assert_eq!(error.details().unwrap()["upstreamStatus"], 401, "{error}");
    server.stop().await;
}

/// Sends requests until one fails with `code` (warm-up runs in the background).
async fn wait_for_error(server: &TestServer, code: ErrorCode) -> ray_sdk::Error {
    let started = Instant::now();
    loop {
        let error = server
            .client()
            .infer(&InferRequest::new("hello"))
            .await
            .unwrap_err();
        if error.code() == Some(code) {
            return error;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "last error: {error}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn back_to_back_generations_never_meet_a_closing_connection() {
    // llama-server closes the connection after every streamed answer while advertising
    // keep-alive; a pooled connection reused at that moment fails the next request.
    let llama = Llama::start("tiny");
    let server = ready_server(&ray_config(llama.port, "")).await;
    // Two clients back to back, plus direct calls to the backend in between, as a busy box has.
    let direct = reqwest::Client::new();
    let mut clients = Vec::new();
    for client in 0..2 {
        let ray = server.client();
        clients.push(async move {
            for i in 0..40 {
                let request = InferRequest {
                    max_tokens: Some(4),
                    cache: Some(false),
                    ..InferRequest::new(format!("client {client} request {i}"))
                };
                ray.infer(&request)
                    .await
                    .unwrap_or_else(|e| panic!("client {client} request {i}: {e}"));
            }
        });
    }
    let poke = async {
        for _ in 0..40 {
            let _ = direct.get(llama.url("/health")).send().await;
        }
    };
    tokio::join!(futures_util::future::join_all(clients), poke);
    server.stop().await;
}

/// Reads a stream to its end: the deltas with their arrival times, and the final event or error.
async fn read_stream(
    mut stream: ray_sdk::EventStream<ray_sdk::InferEvent>,
) -> (
    Vec<(Instant, String)>,
    Result<Box<ray_core::wire::InferResponse>, ray_sdk::Error>,
) {
    use futures_util::StreamExt;
    let mut deltas = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(ray_sdk::InferEvent::Delta(delta)) => deltas.push((Instant::now(), delta.text)),
            Ok(ray_sdk::InferEvent::Done(response)) => return (deltas, Ok(response)),
            Ok(ray_sdk::InferEvent::Error(body)) => panic!("error events are Errs: {body:?}"),
            Err(error) => return (deltas, Err(error)),
        }
    }
    panic!("the stream ended without a final event");
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn streamed_tokens_arrive_while_the_backend_generates() {
    use futures_util::StreamExt;
    let llama = Llama::start("large");
    let server = ready_server(&ray_config(llama.port, "")).await;
    let before = llama.tokens_predicted().await;
    let request = InferRequest {
        max_tokens: Some(300),
        cache: Some(false),
        ..InferRequest::new("Tell a long story about a lighthouse.")
    };
    let mut stream = server.client().infer_stream(&request).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(matches!(first, ray_sdk::InferEvent::Delta(_)), "{first:?}");
    // The first token is here while the backend is still generating the rest.
    assert_eq!(
        llama.busy_slots().await,
        1,
        "tokens arrive during generation"
    );
    let (deltas, done) = read_stream(stream).await;
    let response = done.unwrap();
    assert!(deltas.len() > 50, "{} deltas", deltas.len());
    // Usage matches the backend's own count.
    let generated = llama.tokens_predicted().await - before;
    let usage = response.usage.tokens.unwrap();
    assert_eq!(usage.completion, generated, "usage {usage:?}");
    assert_eq!(usage.completion, 300);
    let provider = response.diagnostics.provider.as_ref().unwrap();
    assert!(provider.timings.is_some());
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn a_stream_whose_client_leaves_frees_the_slot_and_the_permit() {
    use futures_util::StreamExt;
    let llama = Llama::start("xl");
    let server = ready_server(&ray_config(llama.port, "")).await;
    let before = llama.tokens_predicted().await;
    let request: InferRequest = serde_json::from_str(LONG).unwrap();
    let mut stream = server.client().infer_stream(&request).await.unwrap();
    for _ in 0..3 {
        assert!(matches!(
            stream.next().await,
            Some(Ok(ray_sdk::InferEvent::Delta(_)))
        ));
    }
    assert_eq!(llama.busy_slots().await, 1);
    drop(stream);
    assert_generation_stopped(&llama, before, "stream client left").await;
    let left = Instant::now();
    wait_until(Duration::from_secs(1), || async {
        server
            .client()
            .health()
            .await
            .unwrap()
            .runtime
            .queue
            .in_flight
            == 0
    })
    .await;
    eprintln!("permit free {:?} after the slot went idle", left.elapsed());
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn each_stream_deadline_fires_with_its_code_and_stops_the_backend() {
    let llama = Llama::start("xl");
    let request: InferRequest = serde_json::from_str(LONG).unwrap();
    // First token: 1 ms is less than any prompt takes. Nothing was sent, so it is a 504.
    let config = ray_config(llama.port, r#","streaming":{"firstTokenTimeoutMs":1}"#);
    let server = ready_server(&config).await;
    let error = server.client().infer_stream(&request).await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(ErrorCode::StreamFirstTokenTimeout),
        "{error}"
    );
    assert_eq!(error.status(), Some(504));
    llama.wait_idle(Duration::from_secs(2)).await;
    server.stop().await;
    // Total: 1 s of a generation that needs several; ends with an error event.
    let config = ray_config(llama.port, r#","streaming":{"totalTimeoutMs":1000}"#);
    let server = ready_server(&config).await;
    let before = llama.tokens_predicted().await;
    let stream = server.client().infer_stream(&request).await.unwrap();
    let (deltas, done) = read_stream(stream).await;
    assert!(!deltas.is_empty());
    let error = done.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::StreamTotalTimeout), "{error}");
    assert_generation_stopped(&llama, before, "stream total deadline").await;
    server.stop().await;
    // Idle: 1 ms between tokens is less than this model needs, so it fires after a token.
    let config = ray_config(llama.port, r#","streaming":{"idleTimeoutMs":1}"#);
    let server = ready_server(&config).await;
    let before = llama.tokens_predicted().await;
    let stream = server.client().infer_stream(&request).await.unwrap();
    let (_deltas, done) = read_stream(stream).await;
    let error = done.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::StreamIdleTimeout), "{error}");
    assert_generation_stopped(&llama, before, "stream idle deadline").await;
    assert_eq!(server.in_flight().await, 0);
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn openai_chat_streams_from_llama_server_with_its_usage() {
    use futures_util::StreamExt;
    use ray_sdk::openai::{ChatCompletionRequest, ChatMessage, StreamOptions};
    let llama = Llama::start("tiny");
    let server = ready_server(&ray_config(llama.port, "")).await;
    let request = ChatCompletionRequest {
        messages: vec![
            ChatMessage::new("system", "You are terse."),
            ChatMessage::new("user", "Name a queue."),
            ChatMessage::new("assistant", "FIFO."),
            ChatMessage::new("user", "Another?"),
        ],
        max_tokens: Some(12),
        stream_options: Some(StreamOptions {
            include_usage: true,
        }),
        ..ChatCompletionRequest::default()
    };
    let before = llama.tokens_predicted().await;
    let chunks: Vec<_> = server
        .client()
        .chat_completions_stream(&request)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    let usage = chunks.last().unwrap().usage.unwrap();
    assert_eq!(usage.completion_tokens, 12);
    assert_eq!(
        usage.completion_tokens,
        llama.tokens_predicted().await - before
    );
    // The conversation reached the model's template: the prompt holds all four messages.
    let rendered = llama
        .apply_template(Some("You are terse."), "Another?")
        .await;
    assert!(usage.prompt_tokens > llama.token_count(&rendered).await as u64);
    server.stop().await;
}

// === The deploy path against the real llama-server ===

fn supervised_fixture_config(port: u16) -> serde_json::Value {
    serde_json::json!({
        "profile": "sub1b",
        "model": {
            "id": "ray-test", "contextWindow": 4096, "maxOutputTokens": 256,
            "adapter": {
                "kind": "llama.cpp",
                "baseUrl": format!("http://127.0.0.1:{port}"),
                "modelRef": "ray-tiny",
                "timeoutMs": 30000,
                "launchProfile": {
                    "binaryPath": fixture::binary().display().to_string(),
                    "modelPath": fixture::model("tiny").display().to_string(),
                    "alias": "ray-tiny",
                    "port": port, "ctxSize": 4096, "parallel": 2, "threads": 2,
                    "extraArgs": ["--no-ui"],
                    "supervise": true
                }
            }
        },
        "scheduler": { "concurrency": 2, "maxInflightTokens": 8192, "maxQueuedTokens": 24000,
                       "requestTimeoutMs": 60000 },
        "rateLimit": { "enabled": false }
    })
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn supervised_llama_server_is_restarted_after_a_crash_and_ray_recovers() {
    fixture::require();
    let dir = tempfile::tempdir().unwrap();
    let ray = deploy_tools::RayProcess::start(dir.path(), &supervised_fixture_config(free_port()));
    let limit = Duration::from_secs(60);
    let ready = || async {
        ray.get("/readyz")
            .await
            .is_some_and(|(status, _)| status == 200)
    };
    ray.wait_for("readiness", limit, ready).await;
    let first = ray.backend_process().await.unwrap();
    assert_eq!(first["state"], "running", "{first}");
    assert_eq!(first["restarts"], 0);
    let first_pid = first["pid"].as_u64().unwrap();
    let infer = || async {
        reqwest::Client::new()
            .post(ray.url("/v1/infer"))
            .json(
                &serde_json::json!({ "input": "Why do queues matter?", "maxTokens": 8,
                                       "cache": false }),
            )
            .send()
            .await
            .unwrap()
    };
    let response = infer().await;
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["usage"]["tokens"]["completion"], 8, "{body}");

    // A crash: SIGKILL, as the OOM killer would.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &first_pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Ray notices, says so on /readyz (the restart waits a second), restarts the child and
    // becomes ready again by itself.
    let saw_unavailable = std::cell::Cell::new(false);
    ray.wait_for("a restarted, ready backend", limit, || {
        let ray = &ray;
        let saw = &saw_unavailable;
        async move {
            let Some((status, body)) = ray.get("/readyz").await else {
                return false;
            };
            if status == 503 && body["reasons"][0] == "provider_unavailable" {
                saw.set(true);
            }
            let process = ray.backend_process().await.unwrap_or_default();
            status == 200 && process["state"] == "running" && process["restarts"] == 1
        }
    })
    .await;
    assert!(
        saw_unavailable.get(),
        "/readyz never said provider_unavailable while the child was down"
    );
    let second = ray.backend_process().await.unwrap();
    let second_pid = second["pid"].as_u64().unwrap();
    assert_ne!(second_pid, first_pid);
    assert!(
        !deploy_tools::process_exists(first_pid),
        "the killed child was not reaped"
    );
    assert_eq!(infer().await.status().as_u16(), 200);
    ray.wait_for("the exit in the log", limit, || async {
        ray.log().iter().any(|l| {
            l["message"] == "llama-server exited; restarting it"
                && l["exit"] == "killed by signal 9"
        })
    })
    .await;
    assert!(
        ray.log().iter().any(|l| l["source"] == "llama-server"),
        "llama-server's own output reaches the log"
    );
    assert!(ray.zombie_children().is_empty());

    // Shutdown stops the child too.
    let (code, log) = ray.terminate();
    assert_eq!(code, Some(0));
    assert!(
        !deploy_tools::process_exists(second_pid),
        "llama-server outlived the gateway"
    );
    assert!(log.iter().any(|l| l["message"] == "llama-server stopped"));
}

#[test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
fn the_real_llama_server_supports_every_flag_ray_generates() {
    fixture::require();
    // Doctor on a fabricated host whose llama-server is the real one.
    let vps = deploy_tools::FakeVps::healthy();
    deploy_tools::write_executable(
        &vps.path("/usr/local/bin/llama-server"),
        &format!("#!/bin/sh\nexec {} \"$@\"\n", fixture::binary().display()),
    );
    let report = ray_server::ops::doctor::diagnose(
        &ray_server::ops::host::Host::new(&vps.root),
        &vps.doctor_args(),
    );
    let finding = report.find("llama_binary_ok").unwrap_or_else(|| {
        panic!("{}", report.to_text());
    });
    assert!(
        finding.message.contains("supports all"),
        "{}",
        finding.message
    );
    // And stage-model accepts it as a binary to install.
    let output = deploy_tools::binary()
        .args(["stage-model", "--root"])
        .arg(&vps.root)
        .arg("--config")
        .arg(&vps.config)
        .arg("--binary-source")
        .arg(fixture::binary())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("lists all"), "{text}");
}

#[test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
fn the_gguf_reader_agrees_with_the_fixture_models() {
    fixture::require();
    for name in ["tiny", "large", "xl"] {
        let path = fixture::model(name);
        let info = ray_server::ops::gguf::read_header(&path).unwrap();
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(path.with_extension("gguf.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(info.architecture.as_deref(), Some("llama"), "{name}");
        assert_eq!(info.block_count, meta["n_layer"].as_u64(), "{name}");
        assert_eq!(info.embedding_length, meta["n_embd"].as_u64(), "{name}");
        assert_eq!(info.head_count, meta["n_head"].as_u64(), "{name}");
        assert_eq!(info.head_count_kv, meta["n_head_kv"].as_u64(), "{name}");
        assert_eq!(info.vocab_size, meta["n_vocab"].as_u64(), "{name}");
        assert_eq!(info.file_bytes, meta["bytes"].as_u64().unwrap(), "{name}");
        assert!(info.data_offset + info.tensor_data_bytes.unwrap() <= info.file_bytes);
        let head_dim = meta["n_embd"].as_u64().unwrap() / meta["n_head"].as_u64().unwrap();
        assert_eq!(
            info.kv_bytes_per_token(),
            Some(
                meta["n_layer"].as_u64().unwrap()
                    * meta["n_head_kv"].as_u64().unwrap()
                    * head_dim
                    * 2
                    * 2
            ),
            "{name}"
        );
    }
    // A copy cut short is caught.
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture::model("tiny")).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() * 3 / 4]).unwrap();
    assert!(matches!(
        ray_server::ops::gguf::read_header(&cut),
        Err(ray_server::ops::gguf::GgufError::DataTruncated { .. })
    ));
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn bench_measures_ray_and_the_backend_directly() {
    let llama = Llama::start("tiny");
    // This machine's signals: the report samples the gateway's RSS from /health.
    let server = TestServer::start_reading(
        &ray_config(llama.port, ""),
        None,
        ray_server::HttpLimits::default(),
        ray_runtime::PressureSources::system(),
    )
    .await;
    wait_until(Duration::from_secs(10), || async {
        server.client().ready().await.unwrap().is_ready()
    })
    .await;
    let workload = deploy_tools::repo_root().join("examples/workloads/short-prompts.jsonl");
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let output = deploy_tools::binary()
                .arg("bench")
                .args(args)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
        })
    };
    let common = |base: String| {
        vec![
            "--workload".to_string(),
            workload.display().to_string(),
            "--concurrency".into(),
            "2".into(),
            "--requests".into(),
            "16".into(),
            "--base-url".into(),
            base,
        ]
    };
    let through_ray = run(common(server.url(""))).await.unwrap();
    let summary = &through_ray["summary"];
    assert_eq!(summary["status"]["200"], 16, "{summary}");
    assert!(
        summary["serverLatencyMs"]["p95"].as_f64().is_some(),
        "{summary}"
    );
    assert!(
        summary["ttftMs"]["count"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(summary["completionTokensPerSecondAvg"].as_f64().unwrap() > 0.0);
    assert!(summary["outputTokensPerSecond"].as_f64().unwrap() > 0.0);
    // The second pass is answered by Ray's cache (or joins the first pass in flight).
    let reused =
        summary["responseCacheHitRate"].as_f64().unwrap() + summary["dedupeRate"].as_f64().unwrap();
    assert_eq!(reused, 50.0, "{summary}");
    assert!(
        summary["promptCacheHitRate"].as_f64().is_some(),
        "{summary}"
    );
    assert!(through_ray["gateway"]["rssMiBMax"].as_f64().unwrap() > 0.0);

    let mut direct_args = common(llama.url(""));
    direct_args.extend(["--direct".into(), "--model".into(), "ray-tiny".into()]);
    let direct = run(direct_args).await.unwrap();
    let summary = &direct["summary"];
    assert_eq!(direct["target"]["mode"], "direct");
    assert_eq!(summary["status"]["200"], 16, "{summary}");
    assert!(summary["serverLatencyMs"].is_null());
    assert!(
        summary["ttftMs"]["count"].as_u64().unwrap() == 16,
        "{summary}"
    );
    assert!(summary["completionTokensPerSecondAvg"].as_f64().unwrap() > 0.0);
    // Repeated prompts land on a slot that has them: llama.cpp reuses its prompt cache.
    assert!(
        summary["promptCacheHitRate"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
    assert!(direct["gateway"].is_null());
    server.stop().await;
}

/// The footprint estimate against the real child: each fixture model is started supervised
/// and pinned, with a lifecycle state directory; once it answers, its RSS after warm-up is kept in
/// `footprints.json`, and the estimate is within 25% of it.
#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn the_footprint_estimate_is_within_a_quarter_of_the_measured_rss() {
    fixture::require();
    for name in ["tiny", "large", "xl"] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut config = supervised_fixture_config(free_port());
        config["model"]["adapter"]["launchProfile"]["modelPath"] =
            serde_json::json!(fixture::model(name).display().to_string());
        config["lifecycle"] = serde_json::json!({ "stateDir": state.display().to_string() });
        // Pinned, so the lifecycle loads it at start rather than on the first request.
        config["model"]["resident"] = serde_json::json!(true);
        let ray = deploy_tools::RayProcess::start(dir.path(), &config);
        let limit = Duration::from_secs(60);
        let footprints = state.join("footprints.json");
        ray.wait_for("the measured footprint", limit, || async {
            std::fs::read(&footprints)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v["models"]["ray-test"]["loadMiB"].is_u64())
        })
        .await;
        // While the child runs, its pid file names it: that pid runs the recorded command.
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(state.join("children/ray-test.pid.json")).unwrap(),
        )
        .unwrap();
        let pid = record["pid"].as_u64().unwrap();
        let running: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap()
            .split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect();
        let recorded: Vec<String> = serde_json::from_value(record["cmdline"].clone()).unwrap();
        assert_eq!(running, recorded, "pid {pid}");
        let (_, health) = ray.get("/health").await.unwrap();
        assert_eq!(
            health["models"][0]["lifecycle"]["state"], "ready",
            "{health}"
        );
        let kept: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&footprints).unwrap()).unwrap();
        let measured = kept["models"]["ray-test"]["loadMiB"].as_u64().unwrap() as f64;
        let loaded = ray_core::config::ConfigLoader::new()
            .with_json("test", config.to_string())
            .load()
            .unwrap()
            .config;
        let launch = loaded.model.adapter.launch_profile().unwrap();
        let estimate = ray_runtime::footprint::LlamaEstimate::of_launch(launch)
            .unwrap()
            .load_mib();
        let ratio = estimate / measured;
        println!("{name}: estimated {estimate:.1} MiB, measured {measured} MiB (x{ratio:.2})");
        assert!(
            (0.75..=1.25).contains(&ratio),
            "{name}: estimated {estimate:.1} MiB against {measured} MiB measured"
        );
        let (code, _) = ray.terminate();
        assert_eq!(code, Some(0));
        assert!(
            !state.join("children/ray-test.pid.json").exists(),
            "the pid file goes with the child"
        );
    }
}

/// An entry of `models` for a managed fixture model on a port of its own. An entry takes no
/// launch profile from the profile: it starts from the one the one-model fixture config gets,
/// and changes what differs.
fn managed_entry(id: &str, model: &str, cache_ram: i64) -> serde_json::Value {
    let loaded = ray_core::config::ConfigLoader::new()
        .with_json("test", supervised_fixture_config(free_port()).to_string())
        .load()
        .unwrap()
        .config;
    let mut launch = serde_json::to_value(loaded.model.adapter.launch_profile().unwrap()).unwrap();
    let port = free_port();
    launch["modelPath"] = serde_json::json!(fixture::model(model).display().to_string());
    launch["alias"] = serde_json::json!(id);
    launch["port"] = serde_json::json!(port);
    launch["cacheRamMiB"] = serde_json::json!(cache_ram);
    serde_json::json!({
        "id": id, "contextWindow": 4096, "maxOutputTokens": 256,
        "adapter": {
            "kind": "llama.cpp",
            "baseUrl": format!("http://127.0.0.1:{port}"),
            "modelRef": id,
            "timeoutMs": 30000,
            "launchProfile": launch
        }
    })
}

/// The lifecycle's estimate of a `models` entry, in MiB.
fn lifecycle_footprint(model: &serde_json::Value) -> u64 {
    let mut config = supervised_fixture_config(free_port());
    config["model"] = model.clone();
    config["lifecycle"] = serde_json::json!({});
    let loaded = ray_core::config::ConfigLoader::new()
        .with_json("test", config.to_string())
        .load()
        .unwrap()
        .config;
    ray_runtime::footprint::LlamaEstimate::of_launch(loaded.model.adapter.launch_profile().unwrap())
        .unwrap()
        .lifecycle_mib(None)
}

/// The lifecycle through the gateway, with real children: two managed models whose budget
/// holds one at a time, several clients alternating between them over HTTP, a third that never
/// fits, a child killed mid-request, and the gateway killed with its children running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn the_gateway_loads_models_on_demand_and_swaps_them_within_the_budget() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    fixture::require();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let models = [
        managed_entry("large", "large", 0),
        managed_entry("xl", "xl", 0),
        managed_entry("xl-roomy", "xl", 4096),
    ];
    // Room for the larger of the two, not for both.
    let budget = lifecycle_footprint(&models[1]) + 16;
    assert!(lifecycle_footprint(&models[0]) + lifecycle_footprint(&models[1]) > budget);
    assert!(lifecycle_footprint(&models[2]) > budget);
    let mut config = supervised_fixture_config(free_port());
    config["model"] = models[0].clone();
    config["models"] = serde_json::json!(models);
    // The interactive wait bound is for a quiet machine; CI shares two cores.
    config["priority"] = serde_json::json!({ "classes": {
        "interactive": { "maxWaitMs": 60000 },
        "batch": { "maxWaitMs": 120000 },
        "background": { "maxWaitMs": 240000 } } });
    config["lifecycle"] = serde_json::json!({
        "memoryBudgetMiB": budget,
        "minResidentMs": 0,
        "stateDir": state.display().to_string(),
    });
    // The request cut below must still run when its process is killed: no cap lowers its
    // maxTokens on a busy machine.
    config["gracefulDegradation"] = serde_json::json!({ "enabled": false });
    config["adaptiveTuning"] = serde_json::json!({ "enabled": false });
    // Each transition is also an event hook: a command appends the events to a file.
    let events_file = dir.path().join("events.jsonl");
    config["hooks"] = serde_json::json!([{
        "events": ["model_lifecycle_changed"],
        "command": ["/bin/sh", "-c", format!("cat >> {}", events_file.display())],
    }]);
    let ray = deploy_tools::RayProcess::start(dir.path(), &config);
    let limit = Duration::from_secs(60);
    ray.wait_for("the gateway", limit, || async {
        ray.get("/livez").await.is_some()
    })
    .await;
    let (_, listed) = ray.get("/v1/models").await.unwrap();
    for model in listed["data"].as_array().unwrap() {
        assert_eq!(model["lifecycle"]["state"], "unloaded", "{model}");
        assert_eq!(model["lifecycle"]["residentMiB"], 0, "{model}");
    }
    // Unloaded models are ready (a request loads them), and so is the gateway's backend
    // gauge; a model that can never fit the budget is not.
    let (status, body) = ray.get("/readyz?model=large").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = ray.get("/readyz?model=xl-roomy").await.unwrap();
    assert_eq!(status, 503, "{body}");
    let metrics = reqwest::get(ray.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l == "ray_provider_status 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("provider_status"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The children's combined RSS, sampled while the clients run.
    let children_rss = {
        let state = state.clone();
        move || -> u64 {
            let Ok(entries) = std::fs::read_dir(state.join("children")) else {
                return 0;
            };
            entries
                .flatten()
                .filter_map(|e| std::fs::read(e.path()).ok())
                .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .filter_map(|r| r["pid"].as_u64())
                .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
                .filter_map(|s| ray_runtime::parse_vm_rss(&s))
                .map(|bytes| bytes >> 20)
                .sum()
        }
    };
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn({
        let peak = peak.clone();
        let children_rss = children_rss.clone();
        async move {
            loop {
                peak.fetch_max(children_rss(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let infer = {
        let url = ray.url("/v1/infer");
        move |model: &'static str, tokens: u32| {
            infer_with_retry(url.clone(), model, "Why do queues matter?", tokens)
        }
    };
    let mut clients = Vec::new();
    for client in 0..3usize {
        let infer = infer.clone();
        let lines = ray.lines.clone();
        clients.push(tokio::spawn(async move {
            for round in 0..4usize {
                let model = ["large", "xl"][(client + round) % 2];
                let (status, _, body) = infer(model, 8).await;
                assert_eq!(
                    status,
                    200,
                    "client {client} round {round}: {body}\nthe gateway's log:\n{}",
                    lines.lock().join("\n")
                );
                assert_eq!(body["diagnostics"]["routing"]["model"], model, "{body}");
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let metrics = reqwest::get(ray.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metric = |name: &str| {
        util::metric_value(&metrics, name).unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    println!(
        "after alternating: loads large {} xl {}, evictions large {} xl {}, peak RSS {} MiB of {budget}",
        metric("ray_model_loads_total{model=\"large\"}"),
        metric("ray_model_loads_total{model=\"xl\"}"),
        metric("ray_model_evictions_total{model=\"large\"}"),
        metric("ray_model_evictions_total{model=\"xl\"}"),
        peak.load(Ordering::Relaxed)
    );
    assert!(
        metric("ray_model_loads_total{model=\"large\"}") >= 2.0,
        "{metrics}"
    );
    assert!(
        metric("ray_model_loads_total{model=\"xl\"}") >= 2.0,
        "{metrics}"
    );
    assert!(
        metric("ray_model_evictions_total{model=\"large\"}")
            + metric("ray_model_evictions_total{model=\"xl\"}")
            >= 2.0,
        "{metrics}"
    );
    assert_eq!(metric("ray_lifecycle_budget_mib"), budget as f64);
    assert!(
        peak.load(Ordering::Relaxed) <= budget,
        "the children's RSS went over the {budget} MiB budget"
    );
    // Every transition was one JSON log line saying why.
    let transitions: Vec<serde_json::Value> = ray
        .log()
        .into_iter()
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .or(l["message"].as_str())
                .is_some_and(|m| m.starts_with("model lifecycle:"))
        })
        .collect();
    assert!(transitions.len() >= 8, "{transitions:?}");
    // An eviction names the model it made room for (an idle one at once, a busy one after
    // its turn: "draining to make room for ...").
    assert!(
        transitions
            .iter()
            .any(|l| l["reason"].as_str().is_some_and(|r| {
                r.contains("to make room for")
                    || (r.starts_with("evicted") && r.contains(" needs "))
            })),
        "{transitions:?}"
    );
    // The hook saw the same transitions: a load and an eviction of each model, with reasons.
    let events = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&events_file)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let seen = |model: &str, to: &str| {
        events()
            .iter()
            .any(|e| e["model"] == model && e["to"] == to && e["reason"].is_string())
    };
    ray.wait_for("the lifecycle's hook events", limit, || async {
        ["large", "xl"]
            .iter()
            .all(|m| seen(m, "loading") && seen(m, "ready") && seen(m, "unloading"))
    })
    .await;
    for event in events() {
        assert_eq!(event["type"], "model_lifecycle_changed", "{event}");
        assert!(
            event["from"].is_string() && event["to"].is_string(),
            "{event}"
        );
    }

    // A model that can never fit is refused at once with the reason, never loaded.
    let (status, retry, body) = infer("xl-roomy", 8).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "model_does_not_fit", "{body}");
    assert!(retry.is_none(), "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("MiB"),
        "{body}"
    );
    let (_, roomy) = ray.get("/v1/models/xl-roomy").await.unwrap();
    assert_eq!(roomy["lifecycle"]["loads"], 0, "{roomy}");

    // kill -9 the child mid-request: the request fails at once with a clear code, and the
    // next request loads the model again.
    let (status, _, body) = infer("large", 8).await;
    assert_eq!(status, 200, "{body}");
    let pid_file = state.join("children/large.pid.json");
    let pid = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&pid_file).unwrap())
        .unwrap()["pid"]
        .as_u64()
        .unwrap();
    let long = tokio::spawn({
        let url = ray.url("/v1/infer");
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .json(
                    &serde_json::json!({ "model": "large", "input": "Tell a long story.",
                                           "maxTokens": 256, "cache": false }),
                )
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    });
    ray.wait_for("the long request to run", limit, || async {
        let (_, model) = ray.get("/v1/models/large").await.unwrap();
        model["lifecycle"]["inFlight"] == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let (status, body) = long.await.unwrap();
    assert!(status >= 500, "the cut request fails: {status} {body}");
    let code = body["error"]["code"].as_str().unwrap().to_string();
    assert!(
        code.starts_with("provider_"),
        "a backend failure names the backend: {body}"
    );
    ray.wait_for("large to be failed", Duration::from_secs(10), || async {
        let (_, model) = ray.get("/v1/models/large").await.unwrap();
        model["lifecycle"]["state"] == "failed"
    })
    .await;
    tokio::time::sleep(ray_runtime::lifecycle::FAILED_RETRY).await;
    let (status, _, body) = infer("large", 8).await;
    assert_eq!(status, 200, "{body}");
    let (_, model) = ray.get("/v1/models/large").await.unwrap();
    assert_eq!(model["lifecycle"]["state"], "ready", "{model}");
    assert!(
        model["lifecycle"]["failures"].as_u64().unwrap() >= 1,
        "{model}"
    );
    sampler.abort();

    // kill -9 the gateway with a child running: no child survives it.
    let child = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&pid_file).unwrap())
        .unwrap()["pid"]
        .as_u64()
        .unwrap();
    assert!(deploy_tools::process_exists(child));
    let gateway = ray.child.id();
    std::process::Command::new("kill")
        .args(["-KILL", &gateway.to_string()])
        .status()
        .unwrap();
    let stopping = std::time::Instant::now();
    while deploy_tools::process_exists(child) && !deploy_tools::exited(child as u32) {
        assert!(
            stopping.elapsed() < Duration::from_secs(10),
            "llama-server {child} outlived the gateway"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(ray);
}

/// The prompt cache kept across a swap, with real children: `large` and `large-plain` are the
/// same model file, `large` with a `slotSavePath`; `xl` needs the whole budget, so loading it
/// unloads both. After the swap back, `large` finds the long system prompt in its restored
/// slot, `large-plain` processes it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn a_swapped_model_finds_its_prompt_cache_again() {
    fixture::require();
    let dir = tempfile::tempdir().unwrap();
    let slots = dir.path().join("slots");
    let mut kept = managed_entry("large", "large", 0);
    kept["adapter"]["launchProfile"]["slotSavePath"] =
        serde_json::json!(slots.display().to_string());
    let plain = managed_entry("large-plain", "large", 0);
    let evictor = managed_entry("xl", "xl", 0);
    let budget = lifecycle_footprint(&evictor) + 16;
    assert!(lifecycle_footprint(&kept) + lifecycle_footprint(&evictor) > budget);
    let mut config = supervised_fixture_config(free_port());
    config["model"] = kept.clone();
    config["models"] = serde_json::json!([kept, plain, evictor]);
    config["lifecycle"] = serde_json::json!({
        "memoryBudgetMiB": budget,
        "minResidentMs": 0,
        "stateDir": dir.path().join("state").display().to_string(),
    });
    let ray = deploy_tools::RayProcess::start(dir.path(), &config);
    let limit = Duration::from_secs(60);
    ray.wait_for("the gateway", limit, || async {
        ray.get("/livez").await.is_some()
    })
    .await;
    // About 700 tokens of system prompt, the same for every request.
    let system =
        "You answer questions about queues on small servers, briefly and exactly. ".repeat(50);
    let ask = |model: &'static str, question: &'static str| {
        let url = ray.url("/v1/infer");
        let system = system.clone();
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .json(&serde_json::json!({
                    "model": model, "system": system, "input": question, "maxTokens": 4,
                    "cache": false, "diagnostics": true,
                    "metadata": { "promptFamily": "swap.test" }
                }))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(status, 200, "{model}: {body}");
            body["diagnostics"]["provider"].clone()
        }
    };
    let cached = |provider: &serde_json::Value| provider["tokensCached"].as_u64().unwrap_or(0);
    let first_kept = ask("large", "What is a queue?").await;
    let first_plain = ask("large-plain", "What is a queue?").await;
    let evaluated = first_kept["tokensEvaluated"].as_u64().unwrap();
    assert!(evaluated > 400, "{first_kept}");
    // Loading xl unloads both: large's slots are saved first.
    let _ = ask("xl", "Hello").await;
    let (_, listed) = ray.get("/v1/models").await.unwrap();
    for model in listed["data"].as_array().unwrap() {
        if model["id"] != "xl" {
            assert_eq!(model["lifecycle"]["state"], "unloaded", "{model}");
        }
    }
    let saved: Vec<_> = std::fs::read_dir(&slots)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        saved
            .iter()
            .any(|n| n.starts_with("large.") && n.ends_with(".bin")),
        "{saved:?}"
    );
    assert!(
        !saved.iter().any(|n| n.starts_with("large-plain")),
        "{saved:?}"
    );
    // Back: large is restored and reuses the prompt; large-plain starts cold.
    let second_kept = ask("large", "Why do queues need bounds?").await;
    let second_plain = ask("large-plain", "Why do queues need bounds?").await;
    println!(
        "prompt of {evaluated} tokens after a swap: restored slots {} cached, prompt {} ms; \
         without {} cached, prompt {} ms; before the swap {} ms and {} ms",
        cached(&second_kept),
        second_kept["timings"]["promptMs"],
        cached(&second_plain),
        second_plain["timings"]["promptMs"],
        first_kept["timings"]["promptMs"],
        first_plain["timings"]["promptMs"],
    );
    assert!(
        cached(&second_kept) * 10 >= evaluated * 8,
        "the restored slot held the system prompt: {second_kept}"
    );
    assert!(
        cached(&second_plain) * 10 < evaluated,
        "a model without slotSavePath starts cold: {second_plain}"
    );
    let log = ray.log();
    let line = |message: &str| {
        log.iter()
            .find(|l| l["message"] == message && l["model"] == "large")
            .cloned()
            .unwrap_or_else(|| panic!("no {message:?} line in {log:?}"))
    };
    assert!(line("llama-server slots saved")["tokens"].as_u64().unwrap() > 400);
    assert!(
        line("llama-server slots restored")["tokens"]
            .as_u64()
            .unwrap()
            > 400
    );
    let (code, _) = ray.terminate();
    assert_eq!(code, Some(0));
}

/// A model swapped out and back, with real children: its first request after each load
/// prepares its prompt against the new process (the template of the model now
/// loaded), even when a health probe saw the old process a moment before, and never calls the
/// port of a process that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn a_model_swapped_back_prepares_its_prompt_against_the_new_process() {
    fixture::require();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // large runs on a port Ray picks at each load.
    let mut large = managed_entry("large", "large", 0);
    large["adapter"]["launchProfile"]["port"] = serde_json::json!(0);
    large["adapter"]["baseUrl"] = serde_json::json!("http://127.0.0.1");
    let xl = managed_entry("xl", "xl", 0);
    let config = room_for_xl_alone(dir.path(), [large, xl]);
    let ray = deploy_tools::RayProcess::start(dir.path(), &config);
    ray.wait_for("the gateway", Duration::from_secs(60), || async {
        ray.get("/livez").await.is_some()
    })
    .await;
    let ask = |model: &'static str| {
        let url = ray.url("/v1/infer");
        let lines = ray.lines.clone();
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .json(&serde_json::json!({
                    "model": model, "system": "Be brief.", "input": "What is a queue?",
                    "maxTokens": 4, "cache": false, "diagnostics": true,
                }))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(
                status,
                200,
                "{model}: {body}\nthe gateway's log:\n{}",
                lines.lock().join("\n")
            );
            // The template of the process now loaded was applied: its capabilities were
            // detected against it (a stale "unavailable" would give Ray's fallback framing,
            // a stale "available" a 502 from the stopped process's port).
            let diagnostics = &body["diagnostics"];
            assert_eq!(
                diagnostics["provider"]["promptFormat"], "llama.cpp-template",
                "{model}: {body}"
            );
        }
    };
    // Cold: the first load's request detects the backend it loaded (warm-up saw none).
    ask("large").await;
    let port_of = |cmdline: &[String]| -> u16 {
        let at = cmdline.iter().position(|a| a == "--port").unwrap();
        cmdline[at + 1].parse().unwrap()
    };
    let (first_pid, cmdline) = child_record(&state, "large").unwrap();
    assert_ne!(port_of(&cmdline), 0, "{cmdline:?}");
    let process = ray.backend_process().await.unwrap();
    assert_eq!(process["pid"], first_pid, "{process}");
    // A probe sees large up and keeps what it detected.
    ray.get("/health").await.unwrap();
    // xl needs the whole budget: large is unloaded.
    ask("xl").await;
    let (_, model) = ray.get("/v1/models/large").await.unwrap();
    assert_eq!(model["lifecycle"]["state"], "unloaded", "{model}");
    // Back to large: loaded first, then prepared against the new process.
    ask("large").await;
    let (_, model) = ray.get("/v1/models/large").await.unwrap();
    assert_eq!(model["lifecycle"]["loads"], 2, "{model}");
    // The new process (on the port picked for it) is the one /health names.
    let (second_pid, cmdline) = child_record(&state, "large").unwrap();
    assert_ne!(second_pid, first_pid);
    assert_ne!(port_of(&cmdline), 0, "{cmdline:?}");
    let process = ray.backend_process().await.unwrap();
    assert_eq!(process["state"], "running", "{process}");
    assert_eq!(process["pid"], second_pid, "{process}");
    assert_eq!(process["restarts"], 1, "{process}");
    drop(ray);
}

/// POSTs `body` as JSON to `url`; the status and the JSON answer.
/// One uncached `/v1/infer` for `model`: the status, the `Retry-After` in seconds and the body.
async fn infer_with_retry(
    url: String,
    model: &str,
    input: &str,
    tokens: u32,
) -> (u16, Option<u64>, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(url)
        .json(
            &serde_json::json!({ "model": model, "input": input, "maxTokens": tokens,
                                   "cache": false }),
        )
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (status, retry, response.json().await.unwrap())
}

async fn get_json(url: String) -> (u16, serde_json::Value) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn post_json(url: String, body: serde_json::Value) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The pid and command line of a managed model's running child, from its pid file.
fn child_record(state: &std::path::Path, model: &str) -> Option<(u64, Vec<String>)> {
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(state.join(format!("children/{model}.pid.json"))).ok()?,
    )
    .ok()?;
    let cmdline = record["cmdline"]
        .as_array()?
        .iter()
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    Some((record["pid"].as_u64()?, cmdline))
}

/// Managed models change live, with real children: a reload that changes one model's launch
/// profile and adds another lets the request in flight finish on the old process, then the
/// changed model loads again with its new flags; a second reload removes the added model, whose
/// process stops; a third adds it back pinned; a last one changes only settings
/// (`idleUnloadMs`, `resident`), which apply without a restart. No request is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn a_reload_restarts_a_changed_managed_model_and_adds_and_removes_others() {
    fixture::require();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let large = managed_entry("large", "large", 0);
    let xl = managed_entry("xl", "xl", 0);
    let budget = lifecycle_footprint(&large) + lifecycle_footprint(&xl) + 64;
    let mut config = supervised_fixture_config(free_port());
    config["model"] = large.clone();
    config["models"] = serde_json::json!([large]);
    config["lifecycle"] = serde_json::json!({
        "memoryBudgetMiB": budget,
        "minResidentMs": 0,
        "stateDir": state.display().to_string(),
    });
    let ray = deploy_tools::RayProcess::start(dir.path(), &config);
    let limit = Duration::from_secs(60);
    ray.wait_for("the gateway", limit, || async {
        ray.get("/livez").await.is_some()
    })
    .await;
    let infer = |model: &'static str, tokens: u32| {
        post_json(
            ray.url("/v1/infer"),
            serde_json::json!({ "model": model, "input": "Tell a story.",
                                "maxTokens": tokens, "cache": false }),
        )
    };
    let (status, body) = infer("large", 4).await;
    assert_eq!(status, 200, "{body}");
    let (old_pid, old_cmdline) = child_record(&state, "large").unwrap();
    assert!(
        old_cmdline.windows(2).any(|w| w == ["--threads", "2"]),
        "{old_cmdline:?}"
    );
    // /health names the managed model's process.
    let process = ray.backend_process().await.unwrap();
    assert_eq!(process["state"], "running", "{process}");
    assert_eq!(process["pid"], old_pid, "{process}");
    // A long request in flight on the old process.
    let long = tokio::spawn(infer("large", 200));
    ray.wait_for("the long request to run", limit, || async {
        let (_, model) = ray.get("/v1/models/large").await.unwrap();
        model["lifecycle"]["inFlight"] == 1
    })
    .await;

    // Reload: large gets another thread count, xl is added.
    let mut changed = large.clone();
    changed["adapter"]["launchProfile"]["threads"] = serde_json::json!(1);
    let mut next = config.clone();
    next["model"] = changed.clone();
    next["models"] = serde_json::json!([changed, xl]);
    next["server"] = serde_json::json!({ "port": ray.port });
    std::fs::write(dir.path().join("ray.json"), next.to_string()).unwrap();
    let reload = reqwest::Client::new()
        .post(ray.url("/v1/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status().as_u16(), 200);
    let report: serde_json::Value = reload.json().await.unwrap();
    assert_eq!(
        report["modelsChanged"],
        serde_json::json!(["large"]),
        "{report}"
    );
    assert_eq!(report["modelsAdded"], serde_json::json!(["xl"]), "{report}");
    assert_eq!(report["notApplied"], serde_json::json!([]), "{report}");
    // The old process drains: it takes nothing new and is still the one running.
    let (_, model) = ray.get("/v1/models/large").await.unwrap();
    assert_eq!(model["lifecycle"]["state"], "draining", "{model}");
    assert!(deploy_tools::process_exists(old_pid));
    let (_, added) = ray.get("/v1/models/xl").await.unwrap();
    assert_eq!(added["lifecycle"]["state"], "unloaded", "{added}");
    // The request in flight finishes whole on the old process.
    let (status, body) = long.await.unwrap();
    assert_eq!(status, 200, "{body}");
    // It ran to its token limit (which pressure may have lowered), not cut.
    assert_eq!(body["finishReason"], "length", "{body}");
    ray.wait_for("the old process to stop", limit, || async {
        !deploy_tools::process_exists(old_pid) || deploy_tools::exited(old_pid as u32)
    })
    .await;
    // The next request loads large again, with the new flags.
    let (status, body) = infer("large", 4).await;
    assert_eq!(status, 200, "{body}");
    let (new_pid, new_cmdline) = child_record(&state, "large").unwrap();
    assert_ne!(new_pid, old_pid);
    assert!(
        new_cmdline.windows(2).any(|w| w == ["--threads", "1"]),
        "{new_cmdline:?}"
    );
    let (_, model) = ray.get("/v1/models/large").await.unwrap();
    assert_eq!(model["lifecycle"]["state"], "ready", "{model}");
    assert_eq!(model["lifecycle"]["loads"], 2, "{model}");
    let (status, body) = infer("xl", 4).await;
    assert_eq!(status, 200, "{body}");
    let (xl_pid, _) = child_record(&state, "xl").unwrap();

    // Reload: xl is removed. Its process stops; requests for it are refused by name.
    next["models"] = serde_json::json!([next["models"][0].clone()]);
    std::fs::write(dir.path().join("ray.json"), next.to_string()).unwrap();
    let reload = reqwest::Client::new()
        .post(ray.url("/v1/admin/reload"))
        .send()
        .await
        .unwrap();
    let report: serde_json::Value = reload.json().await.unwrap();
    assert_eq!(
        report["modelsRemoved"],
        serde_json::json!(["xl"]),
        "{report}"
    );
    ray.wait_for("xl's process to stop", limit, || async {
        !deploy_tools::process_exists(xl_pid) || deploy_tools::exited(xl_pid as u32)
    })
    .await;
    let (status, body) = infer("xl", 4).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "model_not_found", "{body}");
    // large was not touched by the second reload.
    let (status, body) = infer("large", 4).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(child_record(&state, "large").unwrap().0, new_pid);
    let (_, metrics) = ray.get("/v1/models").await.unwrap();
    assert_eq!(metrics["data"].as_array().unwrap().len(), 1, "{metrics}");

    // Reload: xl is back, pinned this time. It takes its old place and loads at once.
    let mut pinned = xl.clone();
    pinned["resident"] = serde_json::json!(true);
    next["models"] = serde_json::json!([next["models"][0].clone(), pinned]);
    std::fs::write(dir.path().join("ray.json"), next.to_string()).unwrap();
    let reload = reqwest::Client::new()
        .post(ray.url("/v1/admin/reload"))
        .send()
        .await
        .unwrap();
    let report: serde_json::Value = reload.json().await.unwrap();
    assert_eq!(report["modelsAdded"], serde_json::json!(["xl"]), "{report}");
    ray.wait_for("the pinned xl to load", limit, || async {
        let (_, model) = ray.get("/v1/models/xl").await.unwrap();
        model["lifecycle"]["state"] == "ready"
    })
    .await;
    let (_, model) = ray.get("/v1/models/xl").await.unwrap();
    assert_eq!(model["lifecycle"]["pinned"], true, "{model}");
    assert!(child_record(&state, "xl").unwrap().0 != xl_pid);
    let (status, body) = infer("xl", 4).await;
    assert_eq!(status, 200, "{body}");

    // Reload: only settings change. large now unloads after 3 s idle, xl is no longer
    // pinned. Neither process restarts; the new idle rule applies at once.
    let xl_pid = child_record(&state, "xl").unwrap().0;
    let (status, body) = infer("large", 4).await;
    assert_eq!(status, 200, "{body}");
    let large_pid = child_record(&state, "large").unwrap().0;
    let (_, before) = ray.get("/v1/models/large").await.unwrap();
    let mut idle = next["models"][0].clone();
    idle["idleUnloadMs"] = serde_json::json!(3000);
    let mut unpinned = pinned.clone();
    unpinned["resident"] = serde_json::json!(false);
    next["model"] = idle.clone();
    next["models"] = serde_json::json!([idle, unpinned]);
    std::fs::write(dir.path().join("ray.json"), next.to_string()).unwrap();
    let reload = reqwest::Client::new()
        .post(ray.url("/v1/admin/reload"))
        .send()
        .await
        .unwrap();
    let report: serde_json::Value = reload.json().await.unwrap();
    assert_eq!(report["notApplied"], serde_json::json!([]), "{report}");
    let (_, model) = ray.get("/v1/models/xl").await.unwrap();
    assert_eq!(model["lifecycle"]["state"], "ready", "{model}");
    assert_eq!(model["lifecycle"]["pinned"], false, "{model}");
    assert_eq!(child_record(&state, "xl").unwrap().0, xl_pid);
    let (_, model) = ray.get("/v1/models/large").await.unwrap();
    assert_eq!(model["lifecycle"]["state"], "ready", "{model}");
    assert_eq!(child_record(&state, "large").unwrap().0, large_pid);
    // The reloaded entry serves from the process that kept running.
    let (status, body) = infer("xl", 4).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(child_record(&state, "xl").unwrap().0, xl_pid);
    ray.wait_for("large to unload when idle", limit, || async {
        let (_, model) = ray.get("/v1/models/large").await.unwrap();
        model["lifecycle"]["state"] == "unloaded"
    })
    .await;
    let (_, after) = ray.get("/v1/models/large").await.unwrap();
    assert_eq!(
        after["lifecycle"]["loads"], before["lifecycle"]["loads"],
        "large unloaded without loading again: {after}"
    );
    assert_eq!(
        after["lifecycle"]["unloads"].as_u64().unwrap(),
        before["lifecycle"]["unloads"].as_u64().unwrap() + 1,
        "{after}"
    );
    assert_eq!(child_record(&state, "xl").unwrap().0, xl_pid);
    drop(ray);
}

/// The config of a gateway whose managed models are `models`, large and xl (the first is the
/// default), with a memory budget that holds xl alone and the lifecycle's state in
/// `dir/state`.
fn room_for_xl_alone(dir: &std::path::Path, models: [serde_json::Value; 2]) -> serde_json::Value {
    let footprint = |id: &str| lifecycle_footprint(models.iter().find(|m| m["id"] == id).unwrap());
    let budget = footprint("xl") + 16;
    assert!(footprint("large") + footprint("xl") > budget);
    let mut config = supervised_fixture_config(free_port());
    config["model"] = models[0].clone();
    config["models"] = serde_json::json!(models);
    config["lifecycle"] = serde_json::json!({
        "memoryBudgetMiB": budget,
        "minResidentMs": 0,
        "stateDir": dir.join("state").display().to_string(),
    });
    config
}

/// A listening gateway with two managed models, xl and large, and room for xl alone (no
/// degradation or tuning, which would lower a request's maxTokens): `lifecycle` adds to the
/// lifecycle section, `extra`'s sections to the config. With the wait limit for its checks.
async fn xl_or_large(
    dir: &std::path::Path,
    lifecycle: serde_json::Value,
    extra: serde_json::Value,
) -> (deploy_tools::RayProcess, Duration) {
    let large = managed_entry("large", "large", 0);
    let xl = managed_entry("xl", "xl", 0);
    let mut config = room_for_xl_alone(dir, [xl, large]);
    for (key, value) in lifecycle.as_object().unwrap() {
        config["lifecycle"][key] = value.clone();
    }
    config["gracefulDegradation"] = serde_json::json!({ "enabled": false });
    config["adaptiveTuning"] = serde_json::json!({ "enabled": false });
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    let ray = deploy_tools::RayProcess::start(dir, &config);
    let limit = Duration::from_secs(60);
    ray.wait_for("the gateway", limit, || async {
        ray.get("/livez").await.is_some()
    })
    .await;
    (ray, limit)
}

/// An identical request for a managed model that joins an execution under way takes no lease
/// of its own: while the model drains to make room for another (new requests for it wait
/// until it loads again), the request still joins the generation running there and is
/// answered from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn a_request_that_joins_an_execution_needs_no_lease_of_its_own() {
    fixture::require();
    let dir = tempfile::tempdir().unwrap();
    // xl drains at once when large waits (swapBatchMs 0).
    let (ray, limit) = xl_or_large(
        dir.path(),
        serde_json::json!({ "swapBatchMs": 0 }),
        serde_json::json!({}),
    )
    .await;
    let infer = |model: &'static str, dedupe: bool| {
        let mut body = serde_json::json!({ "model": model, "input": "Tell a long story.",
                                           "maxTokens": 256, "cache": false });
        if dedupe {
            body["dedupeKey"] = serde_json::json!("one-story");
        }
        post_json(ray.url("/v1/infer"), body)
    };
    // The first request loads xl and leads the execution.
    let leader = tokio::spawn(infer("xl", true));
    ray.wait_for("the leader to run", limit, || async {
        let (_, model) = ray.get("/v1/models/xl").await.unwrap();
        model["lifecycle"]["inFlight"] == 1
    })
    .await;
    // A request for large waits for xl's memory: xl drains at once (swapBatchMs 0).
    let other = tokio::spawn(infer("large", false));
    ray.wait_for("xl to drain", limit, || async {
        let (_, model) = ray.get("/v1/models/xl").await.unwrap();
        model["lifecycle"]["state"] == "draining"
    })
    .await;
    let ran_alongside = !leader.is_finished();
    let joiner = infer("xl", true).await;
    let (status, led) = leader.await.unwrap();
    assert_eq!(status, 200, "{led}");
    assert!(
        ran_alongside,
        "the generation ended before the second request came: it proves nothing"
    );
    let (status, joined) = joiner;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["deduplicated"], true, "{joined}");
    assert_eq!(joined["output"], led["output"], "{joined}");
    let (status, body) = other.await.unwrap();
    assert_eq!(status, 200, "{body}");
    // xl was loaded once: the joined request did not load it again.
    let (_, model) = ray.get("/v1/models/xl").await.unwrap();
    assert_eq!(model["lifecycle"]["loads"], 1, "{model}");
    drop(ray);
}

/// A stream's wait for its managed model to load is bounded by `streaming.totalTimeoutMs`
/// when that comes before `scheduler.requestTimeoutMs`, and ends with the stream's own code:
/// here large waits for memory that a busy xl keeps, and its stream gives up after 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn a_streams_wait_for_its_model_ends_at_its_total_deadline() {
    fixture::require();
    let dir = tempfile::tempdir().unwrap();
    let (ray, limit) = xl_or_large(
        dir.path(),
        // xl keeps its turn for the whole test.
        serde_json::json!({ "swapBatchMs": 600000, "swapBatchRequests": 10000 }),
        serde_json::json!({ "scheduler": { "requestTimeoutMs": 60000 },
                            "streaming": { "totalTimeoutMs": 1000 } }),
    )
    .await;
    let busy = tokio::spawn(post_json(
        ray.url("/v1/infer"),
        serde_json::json!({ "model": "xl", "input": "Tell a long story.",
                            "maxTokens": 256, "cache": false }),
    ));
    ray.wait_for("xl to run", limit, || async {
        let (_, model) = ray.get("/v1/models/xl").await.unwrap();
        model["lifecycle"]["inFlight"] == 1
    })
    .await;
    let client = ray_sdk::RayClient::new(ray.url("")).unwrap();
    let request = InferRequest {
        model: Some("large".into()),
        max_tokens: Some(16),
        cache: Some(false),
        ..InferRequest::new("Hello")
    };
    let result = client.infer_stream(&request).await;
    let still_busy = !busy.is_finished();
    let Err(error) = result else {
        panic!(
            "the stream started: large loaded (xl finished first: {})",
            !still_busy
        );
    };
    assert_eq!(error.code(), Some(ErrorCode::StreamTotalTimeout), "{error}");
    assert_eq!(error.status(), Some(504), "{error}");
    assert!(
        still_busy,
        "xl finished first, so large could load: it proves nothing"
    );
    let (status, body) = busy.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (_, model) = ray.get("/v1/models/large").await.unwrap();
    assert_eq!(model["lifecycle"]["waiting"], 0, "{model}");
    drop(ray);
}

/// Faults of managed models, with real children: a port another process holds is refused
/// before a child starts (nothing else is taken for the model), a model that cannot load says
/// what llama-server said and waits longer after each failure in a row, and a pinned model
/// whose process died loads again by itself, so `/readyz` comes back without a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn managed_model_faults_are_named_and_a_pinned_model_comes_back_by_itself() {
    fixture::require();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut large = managed_entry("large", "large", 0);
    large["resident"] = serde_json::json!(true);
    let held = managed_entry("held", "tiny", 0);
    let mut bad = managed_entry("bad", "tiny", 0);
    bad["adapter"]["launchProfile"]["modelPath"] =
        serde_json::json!(dir.path().join("missing.gguf").display().to_string());
    // Something else listens on held's port (it accepts and never answers).
    let port = held["adapter"]["launchProfile"]["port"].as_u64().unwrap() as u16;
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let budget = lifecycle_footprint(&large) + lifecycle_footprint(&held) + 64;
    let mut config = supervised_fixture_config(free_port());
    config["model"] = large.clone();
    config["models"] = serde_json::json!([large, held, bad]);
    config["lifecycle"] = serde_json::json!({
        "memoryBudgetMiB": budget,
        "stateDir": state.display().to_string(),
    });
    let ray = deploy_tools::RayProcess::start(dir.path(), &config);
    let limit = Duration::from_secs(60);
    ray.wait_for("the pinned model to load", limit, || async {
        ray.get("/readyz")
            .await
            .is_some_and(|(status, _)| status == 200)
    })
    .await;
    let infer = |model: &'static str| infer_with_retry(ray.url("/v1/infer"), model, "Hi", 4);

    // The held port: refused with the reason, and no child was started.
    let (status, _, body) = infer("held").await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("port {port} on 127.0.0.1 is already in use")),
        "{body}"
    );
    assert!(!state.join("children/held.pid.json").exists());

    // A model file that does not exist: llama-server's own words, then a longer wait.
    let (status, retry, body) = infer("bad").await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("exited while loading")
            && message.contains("it said: gguf_init_from_file: failed to open GGUF file"),
        "{body}"
    );
    assert_eq!(retry, Some(2), "{body}");
    tokio::time::sleep(ray_runtime::lifecycle::FAILED_RETRY).await;
    let (status, retry, body) = infer("bad").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        retry,
        Some(4),
        "the second failure in a row waits twice as long: {body}"
    );

    // kill -9 the pinned model's child: it fails, then loads again with no request.
    let (pid, _) = child_record(&state, "large").unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    ray.wait_for("large to be failed", Duration::from_secs(10), || async {
        let (_, model) = ray.get("/v1/models/large").await.unwrap();
        model["lifecycle"]["state"] == "failed"
    })
    .await;
    ray.wait_for("large to load again by itself", limit, || async {
        let (_, model) = ray.get("/v1/models/large").await.unwrap();
        model["lifecycle"]["state"] == "ready"
    })
    .await;
    let (status, body) = ray.get("/readyz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (new_pid, _) = child_record(&state, "large").unwrap();
    assert_ne!(new_pid, pid);
    let (_, model) = ray.get("/v1/models/large").await.unwrap();
    assert_eq!(model["lifecycle"]["loads"], 2, "{model}");
    drop(ray);
}
