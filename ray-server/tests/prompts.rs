//! The prompt compiler and the built-in templates over real HTTP: what reaches the backend, the
//! diagnostics that explain it, and every limit on templates with the field it names.
#![allow(clippy::unwrap_used)]

mod util;

use util::{TINY, TestServer, post};

async fn infer(server: &TestServer, body: &str) -> util::RawResponse {
    server.raw(&post("/v1/infer", body)).await
}

#[tokio::test]
async fn whitespace_and_repeated_lines_are_removed_before_the_backend_sees_them() {
    let server = TestServer::start(TINY).await;
    let body = serde_json::json!({
        "system": "Answer in plain English, please.",
        "input": "  Summarise   this:\r\n\r\n\r\n\r\nline one\nLINE ONE\nanswer in plain english, please.\n",
        "cache": false,
    });
    let response = infer(&server, &body.to_string()).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let json = response.json();
    // The mock echoes what it was sent.
    let output = json["output"].as_str().unwrap();
    assert!(
        output.ends_with("Summarise this:\n\nline one"),
        "{output:?}"
    );
    // Counted after the surrounding whitespace is trimmed: 75 + 32 chars before, 25 + 32 after.
    let compiler = &json["diagnostics"]["promptCompiler"];
    assert_eq!(compiler["charsBefore"], 107);
    assert_eq!(compiler["charsAfter"], 57);
    assert_eq!(compiler["charsSaved"], 50);
    assert_eq!(json["usage"]["chars"]["prompt"], 57);
    assert_eq!(
        server.metric("ray_prompt_compiler_chars_saved_total").await,
        50.0
    );
    server.stop().await;
}

#[tokio::test]
async fn metadata_and_input_shapes_name_the_family() {
    let server = TestServer::start(TINY).await;
    let family = |body: serde_json::Value| {
        let server = &server;
        async move {
            infer(server, &body.to_string()).await.json()["diagnostics"]["promptCompiler"]
                ["familyKey"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let a = family(serde_json::json!({"input":"Order 1234 from a@b.io","cache":false})).await;
    let b = family(serde_json::json!({"input":"order 98 from z@y.org","cache":false})).await;
    assert_eq!(a, b, "one shape, one family");
    let c = family(
        serde_json::json!({"input":"anything","metadata":{"useCase":"billing"},"cache":false}),
    )
    .await;
    let d = family(
        serde_json::json!({"input":"else","metadata":{"promptFamily":"billing"},"cache":false}),
    )
    .await;
    assert_eq!(c, d, "the first non-empty family key names the family");
    assert_ne!(a, c);
    assert_eq!(a.len(), 16);
    server.stop().await;
}

#[tokio::test]
async fn a_template_renders_with_its_defaults_and_metadata() {
    let server = TestServer::start(TINY).await;
    let response = infer(
        &server,
        r#"{"templateId":"email.reply_classification.v1",
            "templateVariables":{"replyText":"Send pricing. {{replyText}}"},
            "metadata":{"promptFamily":"mine","promptLane":"draft"},"diagnostics":true}"#,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let json = response.json();
    let output = json["output"].as_str().unwrap();
    assert!(output.contains("system=You classify replies"), "{output}");
    // The value went in literally, once.
    assert!(
        output.ends_with("Reply: Send pricing. {{replyText}}"),
        "{output}"
    );
    assert_eq!(json["diagnostics"]["promptCompiler"]["lane"], "short");
    assert_eq!(json["diagnostics"]["degradation"]["requestedMaxTokens"], 80);
    assert_eq!(
        json["diagnostics"]["taskRouting"]["taskKind"],
        "classification"
    );
    // The request's own maxTokens beats the template's default.
    let response = infer(
        &server,
        r#"{"templateId":"email.reply_classification.v1","maxTokens":20,
            "templateVariables":{"replyText":"No thanks."}}"#,
    )
    .await;
    assert_eq!(
        response.json()["diagnostics"]["degradation"]["appliedMaxTokens"],
        20
    );
    server.stop().await;
}

#[tokio::test]
async fn template_limits_are_refused_naming_the_field() {
    let server = TestServer::start(TINY).await;
    let many: serde_json::Map<String, serde_json::Value> = (0..33)
        .map(|i| (format!("v{i}"), serde_json::Value::from("x")))
        .collect();
    let cases = [
        (
            serde_json::json!({"templateId": "email.follow_up.v1", "templateVariables": many}),
            "templateVariables: must have at most 32 entries, got 33",
        ),
        (
            serde_json::json!({"templateId": "email.reply_rewrite.v1",
                               "templateVariables": {"replyText": "x".repeat(16_385), "rewriteGoal": "y"}}),
            "templateVariables.replyText: must be at most 16384 chars",
        ),
        (
            serde_json::json!({"templateId": "email.reply_rewrite.v1",
                               "templateVariables": {"k".repeat(129): "x"}}),
            "is longer than 128 chars",
        ),
        (
            serde_json::json!({"templateId": "t".repeat(129)}),
            "templateId",
        ),
        (
            serde_json::json!({"templateId": "email.nope.v1"}),
            "templateId: unknown template \"email.nope.v1\"",
        ),
        (
            serde_json::json!({"templateId": "email.reply_rewrite.v1",
                               "templateVariables": {"replyText": "x"}}),
            "templateVariables: missing variable(s) rewriteGoal",
        ),
        (
            serde_json::json!({"templateId": "email.reply_rewrite.v1",
                               "templateVariables": {"replyText": "x", "rewriteGoal": "y", "tone": "z"}}),
            "templateVariables: unknown variable(s) tone",
        ),
        (
            serde_json::json!({"templateId": "email.reply_rewrite.v1", "input": "x"}),
            "templateId:",
        ),
        (
            serde_json::json!({"templateVariables": {"a": "b"}, "input": "x"}),
            "templateVariables: requires templateId",
        ),
        (
            serde_json::json!({"templateId": "email.reply_rewrite.v1",
                               "templateVariables": {"replyText": ["not", "a", "string"], "rewriteGoal": "y"}}),
            "templateVariables",
        ),
    ];
    for (body, expected) in cases {
        let response = infer(&server, &body.to_string()).await;
        assert_eq!(response.status, 400, "{body}");
        assert_eq!(response.code(), "invalid_request", "{body}");
        let message = response.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    }
    server.stop().await;
}
