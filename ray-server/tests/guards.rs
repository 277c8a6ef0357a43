//! Auth, rate limiting and graceful shutdown over real loopback connections.
#![allow(clippy::unwrap_used)]

mod util;

use std::time::Duration;

use ray_core::ErrorCode;
use ray_core::wire::InferRequest;
use util::{TestServer, post};

const AUTH: &str = r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":0}},
                      "auth":{"enabled":true}}"#;

#[tokio::test]
async fn protected_routes_need_a_valid_key() {
    let server = TestServer::start_with_keys(AUTH, Some("key-one,key-two")).await;
    for path in ["/health", "/metrics", "/v1/config"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let missing = server.raw(request.as_bytes()).await;
        assert_eq!(missing.status, 401, "{path}");
        assert_eq!(missing.code(), "unauthorized");
        assert_eq!(
            missing.header("www-authenticate"),
            Some("Bearer realm=\"ray\"")
        );

        let wrong = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(server.raw(wrong.as_bytes()).await.status, 401, "{path}");

        let right = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-two\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(server.raw(right.as_bytes()).await.status, 200, "{path}");
    }
    // Inference, and jobs, are protected; the body is never read without a key.
    let infer = server.raw(&post("/v1/infer", r#"{"input":"x"}"#)).await;
    assert_eq!(infer.status, 401);
    assert_eq!(infer.header("connection"), Some("close"));
    assert_eq!(server.raw(&post("/v1/jobs", "{}")).await.status, 401);
    let error = server
        .client()
        .infer(&InferRequest::new("x"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Unauthorized));
    let ok = server
        .client_with_key("key-one")
        .infer(&InferRequest::new("x"))
        .await
        .unwrap();
    assert_eq!(ok.model, "tiny-dev");
    // Liveness and readiness stay public.
    assert!(server.client().live().await.unwrap());
    assert!(server.client().ready().await.unwrap().is_ready());
    let metrics = server
        .client_with_key("key-one")
        .metrics_text()
        .await
        .unwrap();
    assert_eq!(
        util::metric_value(&metrics, "ray_auth_rejected_total"),
        Some(9.0)
    );
    server.stop().await;
}

#[tokio::test]
async fn auth_without_keys_refuses_to_start() {
    let config = ray_core::config::ConfigLoader::new()
        .with_json("t", AUTH)
        .load()
        .unwrap()
        .config;
    let runtime = ray_runtime::Runtime::new(config).unwrap();
    let error = ray_server::App::with_keys(runtime, Some(" , ")).unwrap_err();
    assert!(error.to_string().contains("RAY_API_KEYS"), "{error}");
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_reset_headers() {
    let server = TestServer::start(
        r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":0}},
            "rateLimit":{"enabled":true,"maxRequests":2,"windowMs":60000}}"#,
    )
    .await;
    for expected_remaining in ["1", "0"] {
        let response = server.raw(&post("/v1/infer", r#"{"input":"x"}"#)).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-ratelimit-limit"), Some("2"));
        assert_eq!(
            response.header("x-ratelimit-remaining"),
            Some(expected_remaining)
        );
        let reset: u64 = response
            .header("x-ratelimit-reset")
            .unwrap()
            .parse()
            .unwrap();
        let now = ray_core::time::unix_millis_now() / 1000;
        assert!(reset > now && reset <= now + 61, "reset is epoch seconds");
    }
    let limited = server.raw(&post("/v1/infer", r#"{"input":"x"}"#)).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.code(), "rate_limited");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    // Health and readiness are not rate limited.
    assert!(server.client().live().await.unwrap());
    assert_eq!(server.metric("ray_rate_limited_total").await, 1.0);
    server.stop().await;
}

fn infer_with_token(token: &str) -> Vec<u8> {
    let body = r#"{"input":"x"}"#;
    format!(
        "POST /v1/infer HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn with_auth_off_made_up_tokens_do_not_escape_the_rate_limit() {
    for strategy in ["api-key", "ip+api-key"] {
        let server = TestServer::start(&format!(
            r#"{{"profile":"tiny","model":{{"adapter":{{"kind":"mock","latencyMs":0}}}},
                "rateLimit":{{"enabled":true,"maxRequests":2,"windowMs":60000,
                              "keyStrategy":"{strategy}"}}}}"#
        ))
        .await;
        // A client that sends a new made-up token with every request is still one client.
        let statuses: Vec<u16> = futures_util::future::join_all(
            (0..4).map(|n| server.raw_owned(infer_with_token(&format!("fake-{n}")))),
        )
        .await
        .iter()
        .map(|r| r.status)
        .collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            2,
            "{strategy}: {statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 429).count(),
            2,
            "{strategy}: {statuses:?}"
        );
        // And it fills one slot of the key table, not one per token.
        assert_eq!(server.metric("ray_rate_limit_active_keys").await, 1.0);
        server.stop().await;
    }
}

#[tokio::test]
async fn with_auth_on_each_key_has_its_own_window() {
    let server = TestServer::start_with_keys(
        r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":0}},
            "auth":{"enabled":true},
            "rateLimit":{"enabled":true,"maxRequests":1,"windowMs":60000,
                         "keyStrategy":"api-key"}}"#,
        Some("key-one,key-two"),
    )
    .await;
    assert_eq!(server.raw(&infer_with_token("key-one")).await.status, 200);
    assert_eq!(server.raw(&infer_with_token("key-one")).await.status, 429);
    assert_eq!(server.raw(&infer_with_token("key-two")).await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn job_lookups_check_the_queue_before_the_rate_limit() {
    let server = TestServer::start_with_keys(
        r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":0}},
            "auth":{"enabled":true},
            "rateLimit":{"enabled":true,"maxRequests":1,"windowMs":60000}}"#,
        Some("key-one"),
    )
    .await;
    let lookup = |key: Option<&str>| {
        let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
        format!(
            "GET /v1/jobs/job_0123456789abcdef HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
        )
        .into_bytes()
    };
    // Auth comes first.
    assert_eq!(server.raw(&lookup(None)).await.status, 401);
    // Then the queue check: probing a disabled queue costs no rate-limit budget.
    for _ in 0..3 {
        let response = server.raw(&lookup(Some("key-one"))).await;
        assert_eq!(response.status, 503);
        assert_eq!(response.code(), "async_queue_disabled");
        assert_eq!(response.header("x-ratelimit-remaining"), None);
    }
    assert_eq!(server.raw(&infer_with_token("key-one")).await.status, 200);
    // Submissions are rate limited before the queue check, as in the existing Ray.
    let submit = {
        let body = r#"{"input":"x"}"#;
        format!(
            "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-one\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let response = server.raw(submit.as_bytes()).await;
    assert_eq!(response.status, 429);
    let metrics = server
        .client_with_key("key-one")
        .metrics_text()
        .await
        .unwrap();
    assert_eq!(
        util::metric_value(&metrics, "ray_rate_limited_total"),
        Some(1.0)
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_lets_requests_in_progress_finish() {
    let mut server = TestServer::start(
        r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":500}}}"#,
    )
    .await;
    let client = server.client();
    let in_flight =
        tokio::spawn(async move { client.infer(&InferRequest::new("finish me")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = server.begin_shutdown();
    let response = in_flight.await.unwrap().unwrap();
    assert!(response.output.contains("finish me"));
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the server drained and stopped")
        .unwrap()
        .unwrap();
    // New connections are refused once it has stopped.
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}
