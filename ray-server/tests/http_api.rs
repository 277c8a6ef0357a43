//! The HTTP API over real loopback connections: routes, shapes, and every kind of bad input.
#![allow(clippy::unwrap_used)]

mod util;

use ray_core::ErrorCode;
use ray_core::wire::InferRequest;
use util::{TINY, TestServer, post};

#[tokio::test]
async fn liveness_readiness_and_the_service_descriptor() {
    let server = TestServer::start(TINY).await;
    let live = server
        .raw(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(live.status, 200);
    assert_eq!(live.json()["status"], "ok");
    assert_eq!(live.json()["service"], "ray-gateway");
    assert_eq!(
        live.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert!(live.body.ends_with('\n'));

    let ready = server.client().ready().await.unwrap();
    assert!(ready.is_ready());
    assert_eq!(ready.reasons, Vec::<String>::new());

    let root = server
        .raw(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(root.json()["name"], "ray");
    assert_eq!(root.json()["profile"], "tiny");
    assert_eq!(root.json()["model"], "tiny-dev");
    assert!(root.json()["description"].is_string());
    assert!(root.json()["thesis"].is_string());
    // The existing Ray's `docs` object, with its three keys.
    for key in ["architecture", "roadmap", "principles"] {
        let link = root.json()["docs"][key].as_str().unwrap().to_string();
        assert!(link.starts_with("https://"), "{key}: {link}");
    }
    server.stop().await;
}

#[tokio::test]
async fn infer_returns_the_documented_shape() {
    let server = TestServer::start(TINY).await;
    let response = server
        .client()
        .infer(&InferRequest {
            system: Some("Be terse.".into()),
            max_tokens: Some(50),
            ..InferRequest::new("Summarise this ticket.")
        })
        .await
        .unwrap();
    assert!(response.id.starts_with("req_") && response.id.len() == 20);
    assert_eq!(response.model, "tiny-dev");
    assert!(response.output.contains("system=Be terse."));
    assert_eq!(response.usage.chars.prompt, 31);
    assert!(!response.cached && !response.deduplicated && !response.degraded);
    assert_eq!(response.diagnostics.degradation.applied_max_tokens, 50);
    assert_eq!(response.diagnostics.prompt_compiler.family_key.len(), 16);
    assert!(response.created_at.ends_with('Z'));

    // The same request again is a cache hit.
    let again = server
        .client()
        .infer(&InferRequest {
            system: Some("Be terse.".into()),
            max_tokens: Some(50),
            ..InferRequest::new("Summarise this ticket.")
        })
        .await
        .unwrap();
    assert!(again.cached);
    assert_eq!(again.queue_time_ms, 0);
    assert_eq!(again.output, response.output);

    // cache:false bypasses it.
    let bypass = server
        .client()
        .infer(&InferRequest {
            cache: Some(false),
            system: Some("Be terse.".into()),
            max_tokens: Some(50),
            ..InferRequest::new("Summarise this ticket.")
        })
        .await
        .unwrap();
    assert!(!bypass.cached);
    assert_eq!(server.metric("ray_cache_hits_total").await, 1.0);
    server.stop().await;
}

#[tokio::test]
async fn malformed_json_is_invalid_json() {
    let server = TestServer::start(TINY).await;
    let response = server.raw(&post("/v1/infer", "{\"input\": ")).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.code(), "invalid_json");
    server.stop().await;
}

#[tokio::test]
async fn wrong_content_type_is_415_with_the_supported_types() {
    let server = TestServer::start(TINY).await;
    let body = r#"{"input":"x"}"#;
    let request = format!(
        "POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = server.raw(request.as_bytes()).await;
    assert_eq!(response.status, 415);
    assert_eq!(response.code(), "unsupported_media_type");
    assert_eq!(
        response.json()["error"]["details"]["supported"][0],
        "application/json"
    );
    assert_eq!(response.header("connection"), Some("close"));

    let missing = format!(
        "POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(server.raw(missing.as_bytes()).await.status, 415);

    let gzip = format!(
        "POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = server.raw(gzip.as_bytes()).await;
    assert_eq!(response.status, 415);
    assert_eq!(response.code(), "unsupported_content_encoding");
    server.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused_declared_or_streamed() {
    let server = TestServer::start(TINY).await;
    // tiny's server.requestBodyLimitBytes is 32000.
    let declared = b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40000\r\n\r\n";
    let response = server.raw(declared).await;
    assert_eq!(response.status, 413);
    assert_eq!(response.code(), "body_too_large");
    assert_eq!(response.json()["error"]["details"]["limitBytes"], 32000);

    let mut chunked = b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..5 {
        chunked.extend_from_slice(format!("{:x}\r\n{}\r\n", 10_000, "a".repeat(10_000)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let response = server.raw(&chunked).await;
    assert_eq!(response.status, 413);
    assert_eq!(response.code(), "body_too_large");

    // The server is still fine afterwards.
    assert!(server.client().live().await.unwrap());
    server.stop().await;
}

#[tokio::test]
async fn unknown_and_out_of_range_fields_name_the_field() {
    let server = TestServer::start(TINY).await;
    for (body, needle) in [
        (r#"{"input":"x","maxTokenz":5}"#, "maxTokenz"),
        (r#"{"input":"x","temperature":"hot"}"#, "temperature"),
        (r#"{"input":"x","seed":1.5}"#, "seed"),
        (r#"{"input":"x","stop":[]}"#, "stop"),
        (
            r#"{"input":"x","responseFormat":{"type":"yaml"}}"#,
            "responseFormat",
        ),
        (
            r#"{"input":"x","metadata":{"promptLane":"fast"}}"#,
            "promptLane",
        ),
        (r#"{"templateId":"email.nope.v1"}"#, "templateId"),
        (
            r#"{"templateId":"email.reply_classification.v1"}"#,
            "replyText",
        ),
        (
            r#"{"input":"x","templateId":"email.reply_classification.v1"}"#,
            "templateId",
        ),
        (r#"[1,2,3]"#, "JSON object"),
    ] {
        let response = server.raw(&post("/v1/infer", body)).await;
        assert_eq!(response.status, 400, "{body}: {}", response.body);
        assert_eq!(response.code(), "invalid_request", "{body}");
        let message = response.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains(needle), "{body}: {message}");
    }
    server.stop().await;
}

#[tokio::test]
async fn empty_input_and_empty_body_are_invalid_requests() {
    let server = TestServer::start(TINY).await;
    for body in [r#"{"input":"   "}"#, "", "{}"] {
        let response = server.raw(&post("/v1/infer", body)).await;
        assert_eq!(response.status, 400, "{body:?}");
        assert_eq!(response.code(), "invalid_request");
        assert!(
            response.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("input must be a non-empty string")
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn expectations_follow_the_reference() {
    let server = TestServer::start(TINY).await;
    let response = server
        .raw(b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .await;
    assert_eq!(response.status, 411);
    assert_eq!(response.code(), "length_required");
    let response = server
        .raw(b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: magic\r\nContent-Length: 2\r\n\r\n{}")
        .await;
    assert_eq!(response.status, 417);
    assert_eq!(response.code(), "unsupported_expectation");
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_404() {
    let server = TestServer::start(TINY).await;
    for request in [
        &b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        b"GET /v1/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"DELETE /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let response = server.raw(request).await;
        assert_eq!(response.status, 404);
        assert_eq!(response.code(), "not_found");
        assert_eq!(response.json()["error"]["message"], "Route not found");
    }
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(9_000)
    );
    let response = server.raw(long.as_bytes()).await;
    assert_eq!(response.status, 414);
    assert_eq!(response.code(), "request_target_too_large");
    server.stop().await;
}

#[tokio::test]
async fn jobs_answer_disabled_without_retry_after() {
    let server = TestServer::start(TINY).await;
    let response = server.raw(&post("/v1/jobs", r#"{"input":"x"}"#)).await;
    assert_eq!(response.status, 503);
    assert_eq!(response.code(), "async_queue_disabled");
    assert_eq!(response.header("retry-after"), None);
    server.stop().await;
}

#[tokio::test]
async fn a_full_queue_is_503_with_retry_after() {
    let server = TestServer::start(
        r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":400}},
            "scheduler":{"concurrency":1,"maxQueue":2,"affinityLookahead":1},
            "gracefulDegradation":{"queueDepthThreshold":1},"cache":{"enabled":false}}"#,
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let client = server.client();
        tasks.push(tokio::spawn(async move {
            client
                .infer(&InferRequest::new(format!("distinct {i}")))
                .await
        }));
    }
    let mut ok = 0;
    let mut full = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(error) => {
                assert_eq!(error.code(), Some(ErrorCode::QueueFull), "{error}");
                assert_eq!(error.status(), Some(503));
                assert_eq!(error.retry_after(), Some(std::time::Duration::from_secs(1)));
                full += 1;
            }
        }
    }
    assert_eq!((ok, full), (3, 3), "one running, two queued, three refused");
    server.stop().await;
}

#[tokio::test]
async fn the_request_deadline_is_504_with_retry_after() {
    let server = TestServer::start(
        r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":2000}},
            "scheduler":{"requestTimeoutMs":300}}"#,
    )
    .await;
    let error = server
        .client()
        .infer(&InferRequest::new("slow"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::RequestTimeout));
    assert_eq!(error.status(), Some(504));
    assert_eq!(error.retry_after(), Some(std::time::Duration::from_secs(5)));
    // The permit came back.
    assert_eq!(server.metric("ray_inflight_requests").await, 0.0);
    server.stop().await;
}

#[tokio::test]
async fn a_request_larger_than_the_token_budget_is_413() {
    let server =
        TestServer::start(r#"{"profile":"tiny","gracefulDegradation":{"maxPromptChars":20000}}"#)
            .await;
    // About 3000 estimated prompt tokens: inside the 4096 window, over maxInflightTokens 2500.
    let request = InferRequest::new("word ".repeat(2_400));
    let error = server.client().infer(&request).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::RequestTokenBudgetExceeded));
    assert_eq!(error.status(), Some(413));
    assert_eq!(
        error.details().unwrap()["field"],
        "scheduler.maxInflightTokens"
    );
    assert_eq!(error.retry_after(), None);
    server.stop().await;
}

#[tokio::test]
async fn identical_concurrent_requests_share_one_provider_call() {
    let server = TestServer::start(
        r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":300}},
            "scheduler":{"concurrency":1}}"#,
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = server.client();
        tasks.push(tokio::spawn(async move {
            client
                .infer(&InferRequest::new("same prompt"))
                .await
                .unwrap()
        }));
    }
    let mut shared = 0;
    for task in tasks {
        shared += usize::from(task.await.unwrap().deduplicated);
    }
    assert_eq!(shared, 19, "every request but the leader was deduplicated");
    assert_eq!(server.metric("ray_provider_calls_total").await, 1.0);
    server.stop().await;
}

#[tokio::test]
async fn metrics_speak_prometheus_text_and_the_json_view() {
    let server = TestServer::start(TINY).await;
    server
        .client()
        .infer(&InferRequest::new("x"))
        .await
        .unwrap();
    let text = server.client().metrics_text().await.unwrap();
    let families = util::exposition::check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(families > 40, "{families} families");
    assert_eq!(util::metric_value(&text, "ray_requests_total"), Some(1.0));
    let json: serde_json::Value = reqwest::get(server.url("/metrics?format=json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["counters"]["requests.total"], 1.0);
    assert!(json["gauges"]["queue.max_depth"].is_number());
    server.stop().await;
}

#[tokio::test]
async fn health_and_config_views() {
    let server = TestServer::start(TINY).await;
    let config = server.client().config().await.unwrap();
    assert_eq!(config["profile"], "tiny");
    assert_eq!(config["capabilityHints"]["modelId"], "tiny-dev");
    assert_eq!(config["capabilityHints"]["contextWindow"], 4096);
    let health = server.client().health().await.unwrap();
    assert_eq!(health.profile, "tiny");
    assert_eq!(health.runtime.queue.max_queue, 32);
    assert!(health.runtime.cache.enabled);
    let http = health.gateway.unwrap().http;
    assert_eq!(http.max_connections, 256);
    assert!(http.sockets >= 1, "this very connection is counted");
    server.stop().await;
}

#[tokio::test]
async fn the_provider_status_gauge_is_right_without_anyone_reading_health() {
    let server = TestServer::start(TINY).await;
    // Only `/metrics` is scraped, as a Prometheus-only setup does.
    let text = server.client().metrics_text().await.unwrap();
    let status = text
        .lines()
        .find_map(|l| l.strip_prefix("ray_provider_status "))
        .unwrap();
    assert_eq!(status, "1", "a ready mock provider is 1 (ready)");
    server.stop().await;
}

#[test]
fn the_checker_refuses_what_promtool_refuses() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n\
                # HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n\
                h_sum 3\nh_count 2\n";
    assert_eq!(util::exposition::check(good), Ok(2));
    for bad in [
        "# HELP a_total A.\n# TYPE a_total gauge\na_total 1\n",
        "# HELP a A.\n# TYPE a counter\na 1\n",
        "# HELP a A.\n# TYPE a gauge\na 1\na 2\n",
        "# HELP a A.\n# TYPE a gauge\nb 1\n",
        "# HELP a A.\n# TYPE a gauge\na{x=1} 1\n",
        "# HELP a A.\n# TYPE a gauge\na one\n",
        "# HELP a A.\n# TYPE a gauge\na 1",
        "# TYPE a gauge\na 1\n",
        "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} 1\n# HELP b B.\n# TYPE b gauge\nb 1\na{x=\"2\"} 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 3\nh_count 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_sum 3\nh_count 2\n",
    ] {
        assert!(util::exposition::check(bad).is_err(), "accepted: {bad}");
    }
}

/// A POST to `/v1/infer` with `body` and an extra header line (`Name: value`) when given.
fn infer_with_header(body: &str, header: Option<&str>) -> Vec<u8> {
    let header = header.map_or(String::new(), |h| format!("{h}\r\n"));
    format!(
        "POST /v1/infer HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{header}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn diagnostics_are_a_summary_unless_asked_for_in_full() {
    let server = TestServer::start(TINY).await;
    let body = r#"{"input":"Summarise this ticket.","maxTokens":50,"temperature":9,"cache":false}"#;

    // By default: the summary, with the fields clients read.
    let summary = server.raw(&infer_with_header(body, None)).await;
    assert_eq!(summary.status, 200, "{}", summary.body);
    let json = summary.json();
    let d = &json["diagnostics"];
    assert_eq!(d["detail"], "summary");
    assert_eq!(d["degradation"]["applied"], false);
    assert_eq!(d["degradation"]["reasons"], serde_json::json!([]));
    assert_eq!(d["degradation"]["requestedMaxTokens"], 50);
    assert_eq!(d["degradation"]["appliedMaxTokens"], 50);
    assert!(d["degradation"].get("queueDepthThreshold").is_none());
    assert!(d["degradation"].get("queueDepth").is_none());
    assert_eq!(d["promptCompiler"]["familyKey"].as_str().unwrap().len(), 16);
    assert_eq!(d["promptCompiler"]["lane"], "short");
    assert_eq!(d["learnedOutputCap"]["appliedMaxTokens"], 50);
    assert!(d["learnedOutputCap"].get("percentile").is_none());
    assert_eq!(d["adaptiveTuning"]["reduced"], false);
    assert!(d.get("taskRouting").is_none());
    assert_eq!(d["scheduler"]["lane"], "short");
    assert_eq!(d["scheduler"]["promptTokensSource"], "estimate");
    assert_eq!(d["provider"], serde_json::json!({ "requestShape": "mock" }));
    assert_eq!(d["routing"]["model"], "tiny-dev");
    assert_eq!(d["routing"]["chosenBy"], "default");
    assert_eq!(d["clamped"][0]["param"], "temperature");
    // The SDK's types read a summary, with what it leaves out at the defaults.
    let typed: ray_core::wire::InferResponse = serde_json::from_str(&summary.body).unwrap();
    assert_eq!(
        typed.diagnostics.detail,
        ray_core::wire::DiagnosticsDetail::Summary
    );
    assert_eq!(typed.diagnostics.degradation.applied_max_tokens, 50);
    assert_eq!(typed.diagnostics.task_routing.task_kind, "");

    // Asked for in the body, or by the header: the full block.
    let with_body = r#"{"input":"Summarise this ticket.","maxTokens":50,"temperature":9,"cache":false,"diagnostics":true}"#;
    let by_body = server.raw(&infer_with_header(with_body, None)).await;
    let by_header = server
        .raw(&infer_with_header(body, Some("X-Ray-Diagnostics: full")))
        .await;
    for full in [&by_body, &by_header] {
        assert_eq!(full.status, 200, "{}", full.body);
        let json = full.json();
        let d = &json["diagnostics"];
        assert_eq!(d["detail"], "full");
        assert!(d["degradation"]["queueDepthThreshold"].is_u64());
        assert!(d["learnedOutputCap"]["percentile"].is_f64());
        assert_eq!(d["taskRouting"]["taskKind"], "unknown");
        assert!(d["provider"]["modelRef"].is_string());
        assert_eq!(d["routing"]["chosenBy"], "default");
        assert!(
            full.body.len() > summary.body.len(),
            "full {} bytes, summary {} bytes",
            full.body.len(),
            summary.body.len()
        );
    }
    // The body's field wins over the header.
    let no = r#"{"input":"Summarise this ticket.","cache":false,"diagnostics":false}"#;
    let response = server
        .raw(&infer_with_header(no, Some("X-Ray-Diagnostics: full")))
        .await;
    assert_eq!(response.json()["diagnostics"]["detail"], "summary");
    // A stream's `done` event follows the same rule.
    let stream = r#"{"input":"Summarise this ticket.","cache":false,"stream":true}"#;
    let summary = server.raw(&infer_with_header(stream, None)).await;
    assert_eq!(summary.status, 200, "{}", summary.body);
    assert!(summary.body.contains("event: done"), "{}", summary.body);
    assert!(
        summary.body.contains(r#""detail":"summary""#),
        "{}",
        summary.body
    );
    let full = server
        .raw(&infer_with_header(stream, Some("X-Ray-Diagnostics: full")))
        .await;
    assert!(full.body.contains(r#""detail":"full""#), "{}", full.body);
    assert!(full.body.contains(r#""taskRouting""#), "{}", full.body);
    // A header value that means nothing is refused, naming the header.
    let response = server
        .raw(&infer_with_header(
            body,
            Some("X-Ray-Diagnostics: everything"),
        ))
        .await;
    assert_eq!(response.status, 400, "{}", response.body);
    assert_eq!(response.json()["error"]["code"], "invalid_request");
    assert!(
        response.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Ray-Diagnostics")
    );
    server.stop().await;
}

#[tokio::test]
async fn the_config_can_make_full_diagnostics_the_default() {
    let config = TINY.replacen('{', r#"{"telemetry":{"responseDiagnostics":"full"},"#, 1);
    let server = TestServer::start(&config).await;
    let body = r#"{"input":"hello","cache":false}"#;
    let full = server.raw(&infer_with_header(body, None)).await;
    assert_eq!(full.status, 200, "{}", full.body);
    assert_eq!(full.json()["diagnostics"]["detail"], "full");
    assert!(full.json()["diagnostics"]["taskRouting"].is_object());
    // A request can still ask for the summary.
    let summary = server
        .raw(&infer_with_header(body, Some("X-Ray-Diagnostics: summary")))
        .await;
    assert_eq!(summary.json()["diagnostics"]["detail"], "summary");
    // Cached answers follow the same rule.
    let cached = r#"{"input":"cache me"}"#;
    server.raw(&infer_with_header(cached, None)).await;
    let hit = server.raw(&infer_with_header(cached, None)).await;
    assert_eq!(hit.json()["cached"], true);
    assert_eq!(hit.json()["diagnostics"]["detail"], "full");
    let hit = server
        .raw(&infer_with_header(
            cached,
            Some("X-Ray-Diagnostics: summary"),
        ))
        .await;
    assert_eq!(hit.json()["cached"], true);
    assert_eq!(hit.json()["diagnostics"]["detail"], "summary");
    server.stop().await;
}

#[tokio::test]
async fn the_request_duration_histogram_holds_the_requests_that_succeeded() {
    let server = TestServer::start(TINY).await;
    let client = server.client();
    client.infer(&InferRequest::new("x")).await.unwrap();
    // Refused at once: counted as an error, not as a latency.
    let refused = client.infer(&InferRequest::new("   ")).await.unwrap_err();
    assert_eq!(refused.status(), Some(400), "{refused}");
    let text = client.metrics_text().await.unwrap();
    assert_eq!(util::metric_value(&text, "ray_requests_total"), Some(2.0));
    assert_eq!(
        util::metric_value(&text, "ray_request_duration_seconds_count"),
        Some(1.0),
        "{text}"
    );
}
