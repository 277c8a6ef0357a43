//! Several models on one node, over HTTP: routing by name, alias, task and rules, the unknown
//! model in both error shapes, `/v1/models`, per-model readiness, fallback from a dead backend
//! with its cooldown, per-model queues and metrics, and a one-model config written both ways.

#![allow(clippy::unwrap_used)]

mod util;

use std::time::Duration;

use ray_core::wire::InferRequest;
use util::{TestServer, metric_value, post, raw_request};

/// A free port nothing listens on: connections to it are refused.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn three_models(dead: u16) -> String {
    format!(
        r#"{{"profile":"tiny",
          "models":[
            {{"id":"drafter-1.5b","aliases":["drafter"],"role":"drafter",
              "adapter":{{"kind":"mock","latencyMs":0,"seed":"drafter"}}}},
            {{"id":"classifier-0.5b","aliases":["classifier"],"role":"classifier",
              "maxOutputTokens":32,"adapter":{{"kind":"mock","latencyMs":0,"seed":"classifier"}},
              "scheduler":{{"concurrency":1,"maxQueue":2}}}},
            {{"id":"dead-model","aliases":["dead"],"warmOnBoot":false,
              "adapter":{{"kind":"openai-compatible","baseUrl":"http://127.0.0.1:{dead}","timeoutMs":2000}},
              "fallback":["classifier"]}}
          ],
          "defaultModel":"drafter",
          "routing":{{"rules":[
            {{"name":"classify","tasks":["classify"],"model":"classifier"}},
            {{"name":"long","minPromptTokens":50,"model":"dead"}}
          ],"cooldownAfterFailures":2,"cooldownMs":60000}}}}"#
    )
}

async fn infer_json(server: &TestServer, body: &str) -> util::RawResponse {
    raw_request(server.addr, &post("/v1/infer", body)).await
}

#[tokio::test]
async fn requests_route_by_name_alias_task_and_rule() {
    let server = TestServer::start(&three_models(dead_port())).await;

    // By id and by alias: the response names the model and says the request chose it.
    for name in ["classifier-0.5b", "classifier"] {
        let response = infer_json(&server, &format!(r#"{{"input":"hi","model":"{name}"}}"#)).await;
        assert_eq!(response.status, 200, "{}", response.body);
        let body = response.json();
        assert_eq!(body["model"], "classifier-0.5b");
        assert_eq!(body["diagnostics"]["routing"]["chosenBy"], "request");
    }
    // No name: the default.
    let body = infer_json(&server, r#"{"input":"hello there"}"#)
        .await
        .json();
    assert_eq!(body["model"], "drafter-1.5b");
    assert_eq!(body["diagnostics"]["routing"]["chosenBy"], "default");
    // A task rule, by field and for `auto`.
    let body = infer_json(&server, r#"{"input":"spam?","task":"classify"}"#)
        .await
        .json();
    assert_eq!(body["model"], "classifier-0.5b");
    assert_eq!(body["diagnostics"]["routing"]["chosenBy"], "rule:classify");
    let body = infer_json(
        &server,
        r#"{"input":"spam?","task":"classify","model":"auto"}"#,
    )
    .await
    .json();
    assert_eq!(body["model"], "classifier-0.5b");
    // The models' outputs differ (their mocks have different seeds), and so do their cache
    // entries: the same prompt on another model is not a cache hit.
    let a = infer_json(&server, r#"{"input":"same","model":"drafter"}"#)
        .await
        .json();
    let b = infer_json(&server, r#"{"input":"same","model":"classifier"}"#)
        .await
        .json();
    assert_ne!(a["output"], b["output"]);
    assert_eq!(b["cached"], false);
    let again = infer_json(&server, r#"{"input":"same","model":"classifier"}"#)
        .await
        .json();
    assert_eq!(again["cached"], true);
    assert_eq!(again["model"], "classifier-0.5b");

    // The OpenAI door: the model field routes, the task header too, and headers say so.
    let chat = |body: &str, task: Option<&str>| {
        let mut request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        if let Some(task) = task {
            request.push_str(&format!("X-Ray-Task: {task}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        request.into_bytes()
    };
    let response = raw_request(
        server.addr,
        &chat(
            r#"{"model":"drafter","messages":[{"role":"user","content":"hi"}]}"#,
            None,
        ),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["model"], "drafter-1.5b");
    assert_eq!(response.header("x-ray-model"), Some("drafter-1.5b"));
    assert_eq!(response.header("x-ray-route"), Some("request"));
    let response = raw_request(
        server.addr,
        &chat(
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
            Some("classify"),
        ),
    )
    .await;
    assert_eq!(response.header("x-ray-model"), Some("classifier-0.5b"));
    assert_eq!(response.header("x-ray-route"), Some("rule:classify"));

    // A stream on the OpenAI door carries the serving model in its chunks.
    let response = raw_request(
        server.addr,
        &chat(
            r#"{"model":"classifier","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
            None,
        ),
    )
    .await;
    assert_eq!(response.header("x-ray-model"), Some("classifier-0.5b"));
    assert!(
        response.body.contains(r#""model":"classifier-0.5b""#),
        "{}",
        response.body
    );
}

#[tokio::test]
async fn an_unknown_model_is_a_404_listing_the_names_in_both_shapes() {
    let server = TestServer::start(&three_models(dead_port())).await;
    let response = infer_json(&server, r#"{"input":"x","model":"gpt-4"}"#).await;
    assert_eq!(response.status, 404);
    let body = response.json();
    assert_eq!(body["error"]["code"], "model_not_found");
    let message = body["error"]["message"].as_str().unwrap();
    for name in [
        "drafter-1.5b",
        "drafter",
        "classifier-0.5b",
        "classifier",
        "dead-model",
    ] {
        assert!(message.contains(name), "{message}");
    }
    let response = raw_request(
        server.addr,
        &post(
            "/v1/chat/completions",
            r#"{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}"#,
        ),
    )
    .await;
    assert_eq!(response.status, 404);
    let body = response.json();
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["param"], "model");
    assert!(body["error"]["type"].is_string(), "OpenAI shape: {body}");
    // A job naming an unknown model is refused when it is submitted, never accepted.
    let readiness = raw_request(
        server.addr,
        b"GET /readyz?model=gpt-4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(readiness.status, 404);
    assert_eq!(readiness.code(), "model_not_found");
}

#[tokio::test]
async fn models_and_readiness_are_listed_per_model() {
    let server = TestServer::start(&three_models(dead_port())).await;
    let models = reqwest::get(server.url("/v1/models"))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let data = models["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["drafter-1.5b", "classifier-0.5b", "dead-model"]);
    assert_eq!(data[0]["aliases"], serde_json::json!(["drafter"]));
    assert_eq!(data[0]["role"], "drafter");
    assert_eq!(data[0]["default"], true);
    assert_eq!(data[1]["role"], "classifier");
    assert_eq!(data[1]["maxOutputTokens"], 32);
    assert!(data[1]["contextWindow"].as_u64().unwrap() > 0);
    assert_eq!(data[0]["state"], "ready");

    // The default model is ready, so /readyz is; the dead one is not, alone.
    assert_eq!(
        raw_request(
            server.addr,
            b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .await
        .status,
        200
    );
    let dead = raw_request(
        server.addr,
        b"GET /readyz?model=dead HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(dead.status, 503, "{}", dead.body);
    assert_eq!(dead.json()["providerStatus"], "unavailable");
    let ok = raw_request(
        server.addr,
        b"GET /readyz?model=classifier HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let health = server.client().health().await.unwrap();
    assert_eq!(health.models.len(), 3);
    assert_eq!(health.models[2].state, "unavailable");
    assert_eq!(health.models[1].concurrency, 1);
    assert_eq!(health.models[1].max_queue, 2);
}

#[tokio::test]
async fn a_dead_backend_falls_back_and_goes_into_cooldown() {
    let server = TestServer::start(&three_models(dead_port())).await;
    // Named directly: refused, falls back to its chain (the classifier), and says so.
    for attempt in 0..3 {
        let response = infer_json(
            &server,
            &format!(r#"{{"input":"x{attempt}","model":"dead"}}"#),
        )
        .await;
        assert_eq!(response.status, 200, "{}", response.body);
        let body = response.json();
        assert_eq!(body["model"], "classifier-0.5b");
        let routing = &body["diagnostics"]["routing"];
        assert_eq!(routing["fallbackFrom"], "dead-model");
        assert!(
            routing["skipped"][0]
                .as_str()
                .unwrap()
                .starts_with("dead-model: provider_"),
            "{routing}"
        );
    }
    // A rule that picks the dead model: the same.
    let long = "word ".repeat(60);
    let body = infer_json(&server, &format!(r#"{{"input":"{long}"}}"#))
        .await
        .json();
    assert_eq!(body["model"], "classifier-0.5b");
    assert_eq!(body["diagnostics"]["routing"]["chosenBy"], "rule:long");
    // After cooldownAfterFailures failures the model is in cooldown, visibly.
    let health = server.client().health().await.unwrap();
    let dead = health.models.iter().find(|m| m.id == "dead-model").unwrap();
    assert!(dead.failures >= 2, "{dead:?}");
    assert_eq!(dead.state, "cooldown", "{dead:?}");
    assert!(dead.cooldown_remaining_ms.unwrap() > 0);
    assert!(
        dead.last_failure
            .as_deref()
            .unwrap()
            .starts_with("provider_")
    );
    let metrics = server.client().metrics_text().await.unwrap();
    assert_eq!(
        metric_value(&metrics, r#"ray_model_cooldown{model="dead-model"}"#),
        Some(1.0)
    );
    assert!(
        metric_value(&metrics, r#"ray_model_fallbacks_total{model="dead-model"}"#).unwrap() >= 4.0
    );
    assert_eq!(
        metric_value(&metrics, r#"ray_model_cooldown{model="classifier-0.5b"}"#),
        Some(0.0)
    );
    assert!(metric_value(&metrics, "ray_fallbacks_total").unwrap() >= 4.0);
    // The other models are untouched.
    let ready = raw_request(
        server.addr,
        b"GET /readyz?model=drafter HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ready.status, 200);
}

#[tokio::test]
async fn a_model_without_fallback_fails_at_once_with_a_clear_code() {
    let dead = dead_port();
    let server = TestServer::start(&format!(
        r#"{{"profile":"tiny","models":[
            {{"id":"alive","adapter":{{"kind":"mock","latencyMs":0}}}},
            {{"id":"gone","warmOnBoot":false,
              "adapter":{{"kind":"openai-compatible","baseUrl":"http://127.0.0.1:{dead}","timeoutMs":2000}}}}]}}"#
    ))
    .await;
    // The first call finds the connection refused (502 provider_request_failed); once the
    // probe has seen it, requests are refused before any call (503 provider_unavailable, with
    // Retry-After). Both at once, never after a timeout.
    let started = std::time::Instant::now();
    let response = infer_json(&server, r#"{"input":"x","model":"gone"}"#).await;
    assert!(started.elapsed() < Duration::from_secs(1), "fails fast");
    assert!(
        matches!(
            (response.status, response.code().as_str()),
            (502, "provider_request_failed") | (503, "provider_unavailable")
        ),
        "{}",
        response.body
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let response = infer_json(&server, r#"{"input":"y","model":"gone"}"#).await;
    assert!(started.elapsed() < Duration::from_secs(1), "fails fast");
    assert_eq!(response.status, 503, "{}", response.body);
    assert_eq!(response.code(), "provider_unavailable");
    assert!(response.header("retry-after").is_some());
    // The other model serves meanwhile.
    let ok = infer_json(&server, r#"{"input":"x","model":"alive"}"#).await;
    assert_eq!(ok.status, 200);
    // Errors are counted against the model that failed, and only there.
    let metrics = server.client().metrics_text().await.unwrap();
    // (two requests failed: the first as a refused call or already refused, the second refused)
    let gone = |code: &str| {
        metric_value(
            &metrics,
            &format!(r#"ray_model_errors_total{{model="gone",code="{code}"}}"#),
        )
        .unwrap_or(0.0)
    };
    assert!(gone("provider_unavailable") >= 1.0, "{metrics}");
    assert_eq!(
        gone("provider_unavailable") + gone("provider_request_failed"),
        2.0
    );
    assert!(!metrics.contains(r#"ray_model_errors_total{model="alive""#));
    assert_eq!(
        metric_value(&metrics, r#"ray_model_served_total{model="alive"}"#),
        Some(1.0)
    );
    for family in [
        "ray_model_queued_tokens",
        "ray_model_in_flight_tokens",
        "ray_model_oldest_wait_seconds",
        "ray_model_queue_rejected_total",
        "ray_model_dedupe_flights",
        "ray_model_dedupe_followers_total",
    ] {
        for model in ["alive", "gone"] {
            assert_eq!(
                metric_value(&metrics, &format!(r#"{family}{{model="{model}"}}"#)),
                Some(0.0),
                "{family} {model}"
            );
        }
    }
}

#[tokio::test]
async fn each_model_has_its_own_queue() {
    // The classifier takes one request at a time with two waiting; a flood on it is refused
    // while the drafter keeps answering.
    let server = TestServer::start(
        r#"{"profile":"tiny","models":[
            {"id":"drafter","adapter":{"kind":"mock","latencyMs":0}},
            {"id":"classifier","adapter":{"kind":"mock","latencyMs":300},
             "scheduler":{"concurrency":1,"maxQueue":2}}],
          "scheduler":{"concurrency":4,"maxQueue":64}}"#,
    )
    .await;
    let mut flood = Vec::new();
    for i in 0..8 {
        let addr = server.addr;
        flood.push(tokio::spawn(async move {
            raw_request(
                addr,
                &post(
                    "/v1/infer",
                    &format!(r#"{{"input":"c{i}","model":"classifier","cache":false}}"#),
                ),
            )
            .await
            .status
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let drafter = infer_json(&server, r#"{"input":"d","model":"drafter"}"#).await;
    assert_eq!(drafter.status, 200);
    let mut statuses = Vec::new();
    for task in flood {
        statuses.push(task.await.unwrap());
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    let metrics = server.client().metrics_text().await.unwrap();
    assert_eq!(
        metric_value(&metrics, r#"ray_model_concurrency{model="classifier"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&metrics, r#"ray_model_concurrency{model="drafter"}"#),
        Some(4.0)
    );
}

#[tokio::test]
async fn model_and_a_one_entry_models_answer_alike() {
    let single = TestServer::start(
        r#"{"profile":"tiny","model":{"id":"m","aliases":["a"],"adapter":{"kind":"mock","latencyMs":0}}}"#,
    )
    .await;
    let listed = TestServer::start(
        r#"{"profile":"tiny","models":[{"id":"m","aliases":["a"],"adapter":{"kind":"mock","latencyMs":0}}]}"#,
    )
    .await;
    for body in [
        r#"{"input":"one"}"#,
        r#"{"input":"two","model":"a"}"#,
        r#"{"input":"three","model":"m","maxTokens":16}"#,
        r#"{"input":"four","model":"nope"}"#,
    ] {
        let a = infer_json(&single, body).await;
        let b = infer_json(&listed, body).await;
        assert_eq!(a.status, b.status, "{body}");
        let (a, b) = (a.json(), b.json());
        assert_eq!(a["output"], b["output"], "{body}");
        assert_eq!(a["model"], b["model"], "{body}");
        assert_eq!(a["error"], b["error"], "{body}");
    }
    let request = InferRequest::new("sdk");
    let a = single.client().infer(&request).await.unwrap();
    let b = listed.client().infer(&request).await.unwrap();
    assert_eq!(a.output, b.output);
}
