//! The OpenAI door end to end against a real `llama-server` (the fixture in
//! `tools/llama-fixture`): tool calls (whole and streamed) through a tool-capable chat template,
//! the clear refusal of a template without tools, structured output checked against its JSON
//! schema, log probabilities, several choices, `GET /v1/models/{id}` and an out-of-range
//! `max_tokens`.
//!
//! The fixture's models have random weights, so these tests check shapes, grammars and
//! errors, never content. A forced tool call comes from `tool_choice: "required"` plus a
//! `logit_bias` on `{`: the fixture template writes a call as one bare JSON object, so once
//! the model opens one, `llama-server`'s grammar writes the rest.
//!
//! `#[ignore]`d like `llama_e2e`: `tools/e2e` runs them with `-- --ignored` after building the
//! fixture, and says SKIPPED when it cannot.

#![allow(clippy::unwrap_used)]

mod fixture;
mod util;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fixture::{Llama, free_port, ray_config};
use serde_json::{Value, json};
use util::TestServer;

/// The tool-capable chat template shipped with the fixture.
fn tools_template() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/llama-fixture/templates/tools.jinja")
}

/// Starts a ray-server for `config` and waits (up to 30 s) until it is ready.
async fn ready_server(config: &str) -> TestServer {
    let server = TestServer::start(config).await;
    let started = Instant::now();
    while !server.client().ready().await.unwrap().is_ready() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "ray never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
}

async fn post(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The `data:` payloads of a streamed answer, `[DONE]` excluded.
async fn stream(server: &TestServer, body: &Value) -> Vec<Value> {
    let text = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// The token id of `{` in the fixture's vocabulary.
async fn brace_token(llama: &Llama) -> u64 {
    let body: Value = reqwest::Client::new()
        .post(llama.url("/tokenize"))
        .json(&json!({ "content": "{" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["tokens"][0].as_u64().unwrap()
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "enum": ["Paris", "Rome"]}}, "required": ["city"]}}})
}

fn tool_request(brace: u64, stream: bool) -> Value {
    json!({
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [weather_tool()], "tool_choice": "required",
        "logit_bias": {brace.to_string(): 10}, "temperature": 0, "max_tokens": 48,
        "stream": stream,
    })
}

fn check_weather_call(call: &Value) {
    assert_eq!(call["type"], "function", "{call}");
    assert_eq!(call["function"]["name"], "get_weather", "{call}");
    assert!(
        call["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{call}"
    );
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(
        arguments["city"] == "Paris" || arguments["city"] == "Rome",
        "{arguments}"
    );
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn tool_calls_come_back_whole_and_streamed_in_openai_shape() {
    let template = tools_template();
    let llama = Llama::start_with(
        free_port(),
        "tiny",
        &["--chat-template-file", template.to_str().unwrap()],
    );
    let server = ready_server(&ray_config(llama.port, "")).await;
    let health = server.client().health().await.unwrap();
    let caps = health.provider.detected_capabilities.unwrap();
    assert_eq!(caps.tools, ray_core::wire::Availability::Available);
    let brace = brace_token(&llama).await;

    let (status, body) = post(&server, "/v1/chat/completions", &tool_request(brace, false)).await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    check_weather_call(&choice["message"]["tool_calls"][0]);
    // A message that only calls tools has no text: `content` is null, as OpenAI sends it.
    assert_eq!(choice["message"]["content"], Value::Null, "{body}");

    let chunks = stream(&server, &tool_request(brace, true)).await;
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(calls.len(), 1, "{chunks:?}");
    assert_eq!(calls[0]["index"], 0);
    check_weather_call(calls[0]);
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("tool_calls")], "{chunks:?}");

    // The tool's result goes back: the conversation ends with a tool message and the model
    // answers it in text (`tool_choice: none`: with random weights an `auto` answer may start
    // a call that max_tokens cuts short, which llama-server fails to parse).
    let call = choice["message"]["tool_calls"][0].clone();
    let answer = json!({
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "{\"celsius\": 21}"},
        ],
        "tools": [weather_tool()], "tool_choice": "none", "max_tokens": 16,
    });
    let (status, body) = post(&server, "/v1/chat/completions", &answer).await;
    assert_eq!(status, 200, "{body}");
    let finish = body["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(["stop", "length"].contains(&finish), "{body}");
    assert!(
        body["usage"]["prompt_tokens"].as_u64().unwrap() > 20,
        "{body}"
    );
    let mut missing_id = answer.clone();
    missing_id["messages"][2]
        .as_object_mut()
        .unwrap()
        .remove("tool_call_id");
    let (status, body) = post(&server, "/v1/chat/completions", &missing_id).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "messages[2].tool_call_id");

    // Log probabilities with tools: llama-server cannot stream both, and Ray says so.
    let mut both = tool_request(brace, false);
    both["logprobs"] = json!(true);
    let (status, body) = post(&server, "/v1/chat/completions", &both).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "logprobs");
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn a_template_without_tools_is_a_clear_400_naming_the_model() {
    let llama = Llama::start("tiny");
    let server = ready_server(&ray_config(llama.port, "")).await;
    let caps = server
        .client()
        .health()
        .await
        .unwrap()
        .provider
        .detected_capabilities
        .unwrap();
    assert_eq!(caps.tools, ray_core::wire::Availability::Unavailable);
    let before = llama.tokens_predicted().await;
    let (status, body) = post(&server, "/v1/chat/completions", &tool_request(1, false)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "unsupported_parameter");
    assert_eq!(body["error"]["param"], "tools");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("ray-tiny"), "{message}");
    assert_eq!(
        llama.tokens_predicted().await,
        before,
        "refused before generating"
    );
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn structured_output_follows_its_schema_or_is_a_502() {
    let llama = Llama::start("tiny");
    let server = ready_server(&ray_config(llama.port, "")).await;
    let schema = json!({"type": "object", "properties": {
        "label": {"type": "string", "enum": ["spam", "ham"]},
        "score": {"type": "integer", "minimum": 0, "maximum": 9},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 2}},
        "required": ["label", "score", "tags"], "additionalProperties": false});
    let request = |max_tokens: u32, stream: bool| {
        json!({"messages": [{"role": "user", "content": "Classify: win a prize"}],
               "response_format": {"type": "json_schema",
                                   "json_schema": {"name": "verdict", "strict": true, "schema": schema}},
               "max_tokens": max_tokens, "temperature": 0, "stream": stream})
    };
    let (status, body) = post(&server, "/v1/chat/completions", &request(200, false)).await;
    assert_eq!(status, 200, "{body}");
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    let value: Value = serde_json::from_str(content).unwrap();
    assert!(
        ray_core::json_schema::validate(&schema, &value).is_ok(),
        "{value}"
    );
    // Cut short by max_tokens, the grammar cannot finish the object: never a 200.
    let (status, body) = post(&server, "/v1/chat/completions", &request(3, false)).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "structured_output_invalid");
    assert_eq!(body["error"]["param"], "response_format");
    // Streamed, the stream ends with the error instead of a finish reason (or, when nothing
    // had gone out yet, the answer is that 502).
    let response = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .json(&request(3, true))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    if status == 200 {
        let chunks: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let last = chunks.last().unwrap();
        assert_eq!(last["error"]["code"], "structured_output_invalid", "{text}");
        assert!(
            chunks
                .iter()
                .all(|c| c["choices"][0]["finish_reason"].is_null())
        );
        assert!(!text.contains("[DONE]"), "{text}");
    } else {
        assert_eq!(status, 502, "{text}");
        assert!(text.contains("structured_output_invalid"), "{text}");
    }
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn logprobs_n_models_and_limits_against_llama_server() {
    let llama = Llama::start("tiny");
    let server = ready_server(&ray_config(llama.port, "")).await;
    let (status, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6,
                "logprobs": true, "top_logprobs": 2, "presence_penalty": 0.5,
                "frequency_penalty": 0.5, "logit_bias": {"15": -100}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let content = body["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(content.len(), 6, "one entry per generated token: {body}");
    for entry in content {
        assert!(entry["token"].is_string() && entry["logprob"].as_f64().unwrap() <= 0.0);
        assert_eq!(
            entry["top_logprobs"].as_array().unwrap().len(),
            2,
            "{entry}"
        );
    }
    let chunks = stream(
        &server,
        &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
                "logprobs": true, "stream": true}),
    )
    .await;
    let streamed: usize = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array())
        .map(Vec::len)
        .sum();
    assert_eq!(streamed, 4, "{chunks:?}");

    let before = llama.tokens_predicted().await;
    let (status, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "n": 2}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"].as_array().unwrap().len(), 2);
    assert_eq!(body["usage"]["completion_tokens"], 10);
    assert_eq!(
        llama.tokens_predicted().await - before,
        10,
        "two generations ran"
    );

    let model: Value = reqwest::get(server.url("/v1/models/ray-tiny"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(model["id"], "ray-tiny");
    assert_eq!(model["object"], "model");

    let (status, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100000}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "max_tokens");
    assert!(body["error"]["message"].as_str().unwrap().contains("1024"));
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn a_backend_serving_another_model_is_reported_and_can_block_readiness() {
    let llama = Llama::start("tiny");
    // modelRef names another model than the backend's alias (ray-tiny).
    let config = ray_config(llama.port, "").replace(
        r#""modelRef":"ray-tiny""#,
        r#""modelRef":"qwen2.5-0.5b-instruct""#,
    );
    let server = ready_server(&config).await;
    let health: Value = reqwest::get(server.url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let identity = &health["provider"]["modelIdentity"];
    assert_eq!(identity["configured"], "qwen2.5-0.5b-instruct", "{health}");
    assert_eq!(identity["reported"], "ray-tiny");
    assert_eq!(identity["matches"], false);
    assert_eq!(identity["reason"], "backend_model_mismatch");
    assert_eq!(health["status"], "degraded");
    let ready = server.client().ready().await.unwrap();
    assert!(ready.is_ready(), "not required: still ready");
    assert!(
        ready
            .reasons
            .contains(&"backend_model_mismatch".to_string())
    );

    // doctor asks the running backend too.
    let dir = std::env::temp_dir().join(format!("ray-identity-{}", llama.port));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ray.json");
    std::fs::write(&file, &config).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ray-server"))
        .args(["doctor", "--json", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "backend_model")
        .unwrap()
        .clone();
    assert_eq!(finding["code"], "backend_model_mismatch", "{finding}");
    assert_eq!(finding["level"], "warn");
    assert!(finding["message"].as_str().unwrap().contains("ray-tiny"));
    server.stop().await;

    // Required: the backend counts as unavailable and /readyz says so.
    let required = config.replace(
        r#""modelRef":"qwen2.5-0.5b-instruct","#,
        r#""modelRef":"qwen2.5-0.5b-instruct","requireBackendModelMatch":true,"#,
    );
    let server = TestServer::start(&required).await;
    let started = Instant::now();
    loop {
        let ready = server.client().ready().await.unwrap();
        if ready
            .reasons
            .contains(&"backend_model_mismatch".to_string())
        {
            assert!(!ready.is_ready());
            assert!(ready.reasons.contains(&"provider_unavailable".to_string()));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{ready:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// `POST` straight to llama-server.
async fn post_llama(llama: &Llama, path: &str, body: &Value) -> Value {
    reqwest::Client::new()
        .post(llama.url(path))
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
#[ignore = "needs the llama.cpp fixture (tools/llama-fixture/setup.sh)"]
async fn legacy_completions_continue_the_prompt_as_written_and_json_mode_keeps_a_cut_off() {
    let llama = Llama::start("tiny");
    let server = ready_server(&ray_config(llama.port, r#""cache":{"enabled":false}"#)).await;

    // The prompt reaches llama-server as written (no chat template, whitespace kept): the
    // same prompt tokens and, greedy, the same text as llama-server's own /v1/completions.
    let prompt = "Once upon  a time,\n\n\nthere was ";
    let request = json!({"prompt": prompt, "max_tokens": 6, "temperature": 0, "seed": 7});
    let (status, body) = post(&server, "/v1/completions", &request).await;
    assert_eq!(status, 200, "{body}");
    let direct = post_llama(&llama, "/v1/completions", &request).await;
    assert_eq!(
        body["usage"]["prompt_tokens"], direct["usage"]["prompt_tokens"],
        "ray: {body}\nllama-server: {direct}"
    );
    assert_eq!(
        body["choices"][0]["text"], direct["choices"][0]["text"],
        "ray: {body}\nllama-server: {direct}"
    );

    // JSON mode cut off by max_tokens: the model's own text, `length`, and no more tokens
    // than asked for (no repair call replaces it).
    let request = json!({"messages": [{"role": "user", "content": "Describe a cat."}],
                         "max_tokens": 5, "temperature": 0,
                         "response_format": {"type": "json_object"}});
    let (status, body) = post(&server, "/v1/chat/completions", &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
    assert!(
        body["usage"]["completion_tokens"].as_u64().unwrap() <= 5,
        "{body}"
    );
    // The same text as llama-server's (Ray trims an answer's outer whitespace).
    let direct = post_llama(&llama, "/v1/chat/completions", &request).await;
    assert_eq!(
        body["choices"][0]["message"]["content"].as_str().unwrap(),
        direct["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .trim(),
        "ray: {body}\nllama-server: {direct}"
    );
}
