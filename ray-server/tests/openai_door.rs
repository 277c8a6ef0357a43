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
        util::post("/v1/embeddings", r#"{"input":"x","model":"tiny-dev"}"#),
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
