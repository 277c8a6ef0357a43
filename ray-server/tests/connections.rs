//! Connection-level behaviour over raw loopback sockets: the request-head limits, the request
//! target and `Host`, and the keep-alive idle timeout.
#![allow(clippy::unwrap_used)]

mod util;

use std::time::Duration;

use ray_server::HttpLimits;
use util::{RawConnection, TINY, TestServer};

fn get_with_headers(path: &str, extra: &[String]) -> Vec<u8> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
    for line in extra {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    request.into_bytes()
}

async fn livez_431_count(server: &TestServer) -> f64 {
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    util::metric_value(
        &text,
        r#"ray_http_requests_total{route="/livez",status="431"}"#,
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn too_many_header_fields_get_ray_s_json_431() {
    let server = TestServer::start(TINY).await;
    // Host, 62 more and Connection: 64 fields, the limit.
    let fields: Vec<String> = (0..62).map(|i| format!("X-Field-{i}: {i}")).collect();
    let ok = server.raw(&get_with_headers("/livez", &fields)).await;
    assert_eq!(ok.status, 200);

    let fields: Vec<String> = (0..63).map(|i| format!("X-Field-{i}: {i}")).collect();
    let refused = server.raw(&get_with_headers("/livez", &fields)).await;
    assert_eq!(refused.status, 431);
    assert_eq!(refused.code(), "request_headers_too_large");
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("64")
    );
    assert_eq!(refused.header("connection"), Some("close"));
    assert_eq!(
        refused.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    // Counted per route like any other response.
    assert_eq!(livez_431_count(&server).await, 1.0);
    server.stop().await;
}

#[tokio::test]
async fn a_head_over_12_kib_gets_ray_s_json_431() {
    let server = TestServer::start(TINY).await;
    let fits = vec![format!("X-Big: {}", "a".repeat(12_000))];
    assert_eq!(
        server.raw(&get_with_headers("/livez", &fits)).await.status,
        200
    );

    let one_big = vec![format!("X-Big: {}", "a".repeat(12_300))];
    let refused = server.raw(&get_with_headers("/livez", &one_big)).await;
    assert_eq!(refused.status, 431);
    assert_eq!(refused.code(), "request_headers_too_large");
    assert_eq!(refused.header("connection"), Some("close"));

    let many_small: Vec<String> = (0..10)
        .map(|i| format!("X-Part-{i}: {}", "b".repeat(1_300)))
        .collect();
    let refused = server.raw(&get_with_headers("/livez", &many_small)).await;
    assert_eq!(refused.status, 431);
    assert_eq!(refused.code(), "request_headers_too_large");
    assert_eq!(livez_431_count(&server).await, 2.0);
    server.stop().await;
}

#[tokio::test]
async fn past_the_parser_ceilings_the_431_has_no_body() {
    // Documented in docs/api.md: hyper refuses these before Ray sees a request.
    let server = TestServer::start(TINY).await;
    let fields: Vec<String> = (0..120).map(|i| format!("X-Field-{i}: {i}")).collect();
    let refused = server.raw(&get_with_headers("/livez", &fields)).await;
    assert_eq!(refused.status, 431);
    assert_eq!(refused.body, "");
    server.stop().await;
}

#[tokio::test]
async fn bad_hosts_and_request_targets_are_invalid_requests() {
    let server = TestServer::start(TINY).await;
    for request in [
        "GET /livez HTTP/1.1\r\nHost: ev@il/x\r\n\r\n",
        "GET /livez HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET /livez HTTP/1.1\r\nHost: localhost:99999\r\n\r\n",
        "GET /livez HTTP/1.1\r\nHost: one\r\nHost: two\r\n\r\n",
        "GET //evil.example/livez HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "GET http://other.example/livez HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "GET https://localhost/livez HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ] {
        let response = server.raw(request.as_bytes()).await;
        assert_eq!(response.status, 400, "{request:?}");
        assert_eq!(response.code(), "invalid_request", "{request:?}");
        assert_eq!(response.header("connection"), Some("close"), "{request:?}");
    }
    let host = format!("localhost:{}", server.addr.port());
    for request in [
        format!("GET /livez HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        format!("GET http://{host}/livez HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        "GET /livez HTTP/1.1\r\nHost: [::1]:3000\r\nConnection: close\r\n\r\n".to_string(),
        "GET /livez HTTP/1.0\r\n\r\n".to_string(),
    ] {
        let response = server.raw(request.as_bytes()).await;
        assert_eq!(response.status, 200, "{request:?}");
    }
    server.stop().await;
}

fn keep_alive_get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout() {
    let server = TestServer::start_with(
        TINY,
        None,
        HttpLimits {
            keep_alive_timeout: Duration::from_millis(300),
            ..HttpLimits::default()
        },
    )
    .await;
    let mut connection = RawConnection::open(server.addr).await;
    assert_eq!(
        connection.exchange(&keep_alive_get("/livez")).await.status,
        200
    );
    // Used again before the timeout, it is still there.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        connection.exchange(&keep_alive_get("/livez")).await.status,
        200
    );
    // Then left idle, the server closes it (hyper's header timeout alone would take 15 s).
    assert!(connection.closed_within(Duration::from_secs(5)).await);
    server.stop().await;
}

#[tokio::test]
async fn a_request_longer_than_the_keep_alive_timeout_is_not_cut_off() {
    let server = TestServer::start_with(
        r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":700}}}"#,
        None,
        HttpLimits {
            keep_alive_timeout: Duration::from_millis(200),
            ..HttpLimits::default()
        },
    )
    .await;
    let mut connection = RawConnection::open(server.addr).await;
    let body = r#"{"input":"take your time"}"#;
    let request = format!(
        "POST /v1/infer HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = connection.exchange(request.as_bytes()).await;
    assert_eq!(response.status, 200, "{}", response.body);
    // The connection outlived the request and is reusable right after it.
    assert_eq!(
        connection.exchange(&keep_alive_get("/livez")).await.status,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn the_default_keep_alive_timeout_is_5_s_and_health_says_so() {
    let server = TestServer::start(TINY).await;
    let health: serde_json::Value = reqwest::get(server.url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let http = &health["gateway"]["http"];
    assert_eq!(http["keepAliveTimeoutMs"], 5_000);
    assert_eq!(http["headersTimeoutMs"], 15_000);

    let mut connection = RawConnection::open(server.addr).await;
    assert_eq!(
        connection.exchange(&keep_alive_get("/livez")).await.status,
        200
    );
    // Closed well before hyper's 15 s header timeout would have closed it.
    assert!(connection.closed_within(Duration::from_secs(12)).await);
    server.stop().await;
}

#[tokio::test]
async fn a_connection_is_closed_after_its_request_cap() {
    let server = TestServer::start_with(
        TINY,
        None,
        HttpLimits {
            max_requests_per_connection: 3,
            ..HttpLimits::default()
        },
    )
    .await;
    let mut connection = RawConnection::open(server.addr).await;
    for n in 1..=3 {
        let response = connection.exchange(&keep_alive_get("/livez")).await;
        assert_eq!(response.status, 200, "request {n}");
        assert_eq!(
            response.header("connection"),
            (n == 3).then_some("close"),
            "request {n} of 3"
        );
    }
    assert!(
        connection.closed_within(Duration::from_secs(5)).await,
        "the server closes the connection after the third answer"
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_requests_still_running_after_the_grace() {
    let mut server = TestServer::start_with(
        r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":60000}},
            "scheduler":{"requestTimeoutMs":120000}}"#,
        None,
        HttpLimits {
            shutdown_grace: Duration::from_millis(300),
            ..HttpLimits::default()
        },
    )
    .await;
    let url = server.url("/v1/infer");
    let stuck = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .json(&serde_json::json!({"input": "a minute of work"}))
            .send()
            .await
    });
    let mut running = false;
    for _ in 0..500 {
        if server.in_flight().await == 1 {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(running, "the request never started");
    let started = std::time::Instant::now();
    let task = server.begin_shutdown();
    task.await.unwrap().unwrap();
    // Behaviour, not speed: the server stopped long before the 60 s request could end.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "shutdown waited for the request: {:?}",
        started.elapsed()
    );
    let outcome = stuck.await.unwrap();
    assert!(
        outcome.is_err(),
        "the request was cut off, not answered: {outcome:?}"
    );
}
