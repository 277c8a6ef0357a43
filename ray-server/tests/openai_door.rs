//! The OpenAI door over loopback HTTP on the mock provider: the OpenAI error shape on every
//! OpenAI-family `/v1/*` path, `GET /v1/models/{id}`, and limits refused rather than clamped.

#![allow(clippy::unwrap_used)]

mod util;

use util::{TINY, TestServer};

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Every field of OpenAI's error object is there, `param` and `code` included (null or not).
fn assert_openai_error(body: &serde_json::Value, kind: &str, code: &str) {
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(error["type"], kind, "{body}");
    assert_eq!(error["code"], code, "{body}");
    assert!(error.as_object().unwrap().contains_key("param"), "{body}");
}

#[tokio::test]
async fn models_can_be_retrieved_by_id_or_model_ref() {
    let server = TestServer::start(TINY).await;
    let response = server.raw(&get("/v1/models/tiny-dev")).await;
    assert_eq!(response.status, 200);
    let model = response.json();
    assert_eq!(model["id"], "tiny-dev");
    assert_eq!(model["object"], "model");
    assert_eq!(model["owned_by"], "ray");
    assert!(model["created"].as_u64().unwrap() > 1_600_000_000);

    let missing = server.raw(&get("/v1/models/gpt-4o")).await;
    assert_eq!(missing.status, 404);
    assert_openai_error(&missing.json(), "not_found_error", "model_not_found");
    assert_eq!(missing.json()["error"]["param"], "model");
    server.stop().await;
}

#[tokio::test]
async fn unknown_openai_paths_are_404_in_openai_shape_and_native_paths_keep_rays() {
    let server = TestServer::start(TINY).await;
    for request in [
        get("/v1/embeddings"),
        get("/v1/files"),
        util::post("/v1/responses", r#"{"input":"x"}"#),
        get("/v1/chat/completions"),
        get("/v1/models/"),
    ] {
        let response = server.raw(&request).await;
        assert_eq!(
            response.status,
            404,
            "{}",
            String::from_utf8_lossy(&request)
        );
        let body = response.json();
        assert_openai_error(&body, "not_found_error", "not_found");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("/v1/"),
            "{body}"
        );
    }
    // Ray's own routes keep Ray's error body (no `type`).
    for request in [get("/v1/infer"), get("/nope")] {
        let response = server.raw(&request).await;
        assert_eq!(response.status, 404);
        assert_eq!(response.code(), "not_found");
        assert!(response.json()["error"].get("type").is_none());
    }
    server.stop().await;
}

async fn post_json(server: &TestServer, path: &str, body: &str) -> util::RawResponse {
    server.raw(&util::post(path, body)).await
}

#[tokio::test]
async fn values_out_of_range_are_refused_on_openai_routes_and_reported_on_infer() {
    let server = TestServer::start(TINY).await;
    let max = 192; // the tiny profile's model.maxOutputTokens
    for (path, body, param, limit) in [
        (
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":100000}"#,
            "max_tokens",
            format!("between 1 and {max}"),
        ),
        (
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
            "max_tokens",
            format!("between 1 and {max}"),
        ),
        (
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"x"}],"temperature":5}"#,
            "temperature",
            "between 0 and 2".to_string(),
        ),
        (
            "/v1/completions",
            r#"{"prompt":"x","top_p":0}"#,
            "top_p",
            "between 0.1 and 1".to_string(),
        ),
        (
            "/v1/completions",
            r#"{"prompt":"x","n":9}"#,
            "n",
            "between 1 and 4".to_string(),
        ),
        (
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"x"}],"frequency_penalty":-3}"#,
            "frequency_penalty",
            "between -2 and 2".to_string(),
        ),
    ] {
        let response = post_json(&server, path, body).await;
        assert_eq!(response.status, 400, "{body}: {}", response.body);
        let json = response.json();
        assert_openai_error(&json, "invalid_request_error", "invalid_request");
        assert_eq!(json["error"]["param"], param, "{body}");
        assert!(
            json["error"]["message"].as_str().unwrap().contains(&limit),
            "{body}: {json}"
        );
    }
    // /v1/infer keeps its documented clamps, and says so.
    let response = post_json(
        &server,
        "/v1/infer",
        r#"{"input":"x","maxTokens":100000,"temperature":5,"cache":false}"#,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let clamped = response.json()["diagnostics"]["clamped"].clone();
    assert_eq!(clamped[0]["param"], "maxTokens", "{clamped}");
    assert_eq!(clamped[0]["requested"], 100000.0);
    assert_eq!(clamped[0]["applied"], f64::from(max));
    assert!(
        clamped[0]["limit"]
            .as_str()
            .unwrap()
            .contains("maxOutputTokens")
    );
    assert_eq!(clamped[1]["param"], "temperature");
    assert_eq!(clamped[1]["applied"], 2.0);
    // Nothing clamped: no field.
    let plain = post_json(&server, "/v1/infer", r#"{"input":"x","maxTokens":8}"#).await;
    assert!(plain.json()["diagnostics"].get("clamped").is_none());
    server.stop().await;
}

#[tokio::test]
async fn n_choices_run_as_separate_generations() {
    let server = TestServer::start(TINY).await;
    let response = post_json(
        &server,
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"two please"}],"n":2,"max_tokens":8,"seed":1}"#,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json();
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i);
        assert!(
            choice["message"]["content"]
                .as_str()
                .unwrap()
                .contains("two please")
        );
    }
    // Each choice was a request of its own through the scheduler.
    assert_eq!(server.metric("ray_requests_total").await, 2.0);
    let legacy = post_json(
        &server,
        "/v1/completions",
        r#"{"prompt":"p","n":3,"max_tokens":4}"#,
    )
    .await;
    assert_eq!(legacy.status, 200, "{}", legacy.body);
    assert_eq!(legacy.json()["choices"].as_array().unwrap().len(), 3);

    let streamed = post_json(
        &server,
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"x"}],"n":2,"stream":true}"#,
    )
    .await;
    assert_eq!(streamed.status, 400);
    assert_openai_error(
        &streamed.json(),
        "invalid_request_error",
        "unsupported_parameter",
    );
    assert_eq!(streamed.json()["error"]["param"], "n");
    server.stop().await;
}

#[tokio::test]
async fn a_backend_without_tools_logprobs_or_schemas_says_so_naming_the_model() {
    let server = TestServer::start(TINY).await;
    for (extra, param) in [
        (
            r#""tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]"#,
            "tools",
        ),
        (r#""logprobs":true,"top_logprobs":2"#, "logprobs"),
        (
            r#""response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"object"}}}"#,
            "response_format",
        ),
    ] {
        let body = format!(r#"{{"messages":[{{"role":"user","content":"x"}}],{extra}}}"#);
        let response = post_json(&server, "/v1/chat/completions", &body).await;
        assert_eq!(response.status, 400, "{body}: {}", response.body);
        let json = response.json();
        assert_openai_error(&json, "invalid_request_error", "unsupported_parameter");
        assert_eq!(json["error"]["param"], param);
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("tiny-dev"),
            "{json}"
        );
    }
    // Penalties and logit bias are accepted (an echo does not change with them).
    let response = post_json(
        &server,
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"x"}],"presence_penalty":0.5,"logit_bias":{"15":-100}}"#,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    server.stop().await;
}

#[tokio::test]
async fn each_refusal_names_its_parameter_in_openais_words() {
    let server = TestServer::start(TINY).await;
    let chat = |extra: &str| format!(r#"{{"messages":[{{"role":"user","content":"Hi"}}]{extra}}}"#);
    let tools = r#","tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]"#;
    for (path, body, code, param) in [
        // Wrong types, caught by the parser: the field is named.
        ("/v1/chat/completions", chat(r#","max_tokens":"5""#), "invalid_request", "max_tokens"),
        ("/v1/chat/completions", chat(r#","stop":5"#), "invalid_request", "stop"),
        ("/v1/chat/completions", "{}".to_string(), "invalid_request", "messages"),
        (
            "/v1/chat/completions",
            r#"{"messages":[{"content":"x"}]}"#.to_string(),
            "invalid_request",
            "messages[0].role",
        ),
        // A blank last message or prompt names OpenAI's field, not Ray's `input`.
        (
            "/v1/chat/completions",
            r#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"  "}]}"#
                .to_string(),
            "invalid_request",
            "messages[1].content",
        ),
        ("/v1/completions", r#"{"prompt":""}"#.to_string(), "invalid_request", "prompt"),
        // `user` must be a string; `logprobs` is refused on the legacy door as such.
        ("/v1/chat/completions", chat(r#","user":5"#), "invalid_request", "user"),
        (
            "/v1/completions",
            r#"{"prompt":"Once","logprobs":2}"#.to_string(),
            "unsupported_parameter",
            "logprobs",
        ),
        // A named tool choice must name one of the tools.
        (
            "/v1/chat/completions",
            chat(&format!(
                r#"{tools},"tool_choice":{{"type":"function","function":{{"name":"nope"}}}}"#
            )),
            "invalid_request",
            "tool_choice",
        ),
    ] {
        let response = post_json(&server, path, &body).await;
        assert_eq!(response.status, 400, "{body}: {}", response.body);
        let answer: serde_json::Value = serde_json::from_str(&response.body).unwrap();
        assert_openai_error(&answer, "invalid_request_error", code);
        assert_eq!(answer["error"]["param"], param, "{body}: {answer}");
        assert!(
            !answer["error"]["message"].as_str().unwrap().starts_with("input:"),
            "{answer}"
        );
    }
    // `user: null` is accepted like every other optional field.
    let response = post_json(&server, "/v1/chat/completions", &chat(r#","user":null"#)).await;
    assert_eq!(response.status, 200, "{}", response.body);
}

/// OpenAI's body has no `cache` field: `Cache-Control: no-cache` (or `no-store`) keeps a
/// request out of the result cache, which an identical request without it is served from.
#[tokio::test]
async fn cache_control_no_cache_keeps_an_openai_request_out_of_the_cache() {
    let server = TestServer::start(TINY).await;
    let body = r#"{"messages":[{"role":"user","content":"cache me once"}],"temperature":0.9}"#;
    let with_header = |value: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Cache-Control: {value}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    // Asked first with no-cache: generated, and not stored either.
    let fresh = server.raw(&with_header("no-cache")).await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    assert_eq!(fresh.header("x-ray-cached"), Some("false"));
    let first = post_json(&server, "/v1/chat/completions", body).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        first.header("x-ray-cached"),
        Some("false"),
        "a no-cache answer was stored"
    );
    let again = post_json(&server, "/v1/chat/completions", body).await;
    assert_eq!(again.header("x-ray-cached"), Some("true"), "{}", again.body);
    for value in ["no-cache", "max-age=0, No-Store"] {
        let fresh = server.raw(&with_header(value)).await;
        assert_eq!(fresh.status, 200, "{}", fresh.body);
        assert_eq!(fresh.header("x-ray-cached"), Some("false"), "{value}");
        assert_ne!(
            fresh.json()["id"],
            again.json()["id"],
            "a fresh generation has its own id"
        );
    }
    let unrelated = server.raw(&with_header("max-age=60")).await;
    assert_eq!(unrelated.header("x-ray-cached"), Some("true"));
    server.stop().await;
}
