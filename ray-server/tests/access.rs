//! Auth on every protected route and the rate limiter under each key strategy, over real
//! loopback HTTP, with a well-behaved client whose requests must keep succeeding throughout.
#![allow(clippy::unwrap_used)]

mod util;

use ray_server::PROTECTED_ROUTES;
use util::{RawResponse, TestServer};

/// A request for `method path`, with an optional `Authorization` value and extra header lines.
fn request(method: &str, path: &str, authorization: Option<&str>, extra: &[&str]) -> Vec<u8> {
    let path = path.replace("{id}", "job_0123456789abcdef");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    if let Some(value) = authorization {
        head.push_str(&format!("Authorization: {value}\r\n"));
    }
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    let body = match path.as_str() {
        "/v1/chat/completions" => r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":8}"#,
        "/v1/completions" => r#"{"prompt":"hi","max_tokens":8}"#,
        "/v1/embeddings" => r#"{"input":"hi"}"#,
        _ if method == "POST" => r#"{"input":"hi","maxTokens":8}"#,
        _ => "",
    };
    if method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("Connection: close\r\n\r\n");
    head.push_str(body);
    head.into_bytes()
}

/// What a right key gets on each protected route (the async queue is off in these configs).
fn expected_with_a_key(path: &str) -> (u16, Option<&'static str>) {
    match path {
        "/v1/jobs" | "/v1/jobs/{id}" => (503, Some("async_queue_disabled")),
        // A job id is no model id.
        "/v1/models/{id}" => (404, Some("model_not_found")),
        // These configs have no cluster section.
        "/v1/cluster/nodes" => (404, Some("not_found")),
        // An app built in code has no config file to read again.
        "/v1/admin/reload" => (404, Some("not_found")),
        _ => (200, None),
    }
}

#[tokio::test]
async fn every_protected_route_needs_one_of_the_keys() {
    let server = TestServer::start_with_keys(
        r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":0}},
            "auth":{"enabled":true},
            "rateLimit":{"enabled":true,"maxRequests":1000,"windowMs":60000}}"#,
        Some("key-one,\nkey-two"),
    )
    .await;
    let wrong = [
        None,
        Some("Bearer nope"),
        Some("Bearer key-on"),
        Some("Bearer key-one2"),
        Some("Basic key-one"),
        Some("Bearer"),
        Some("Bearer "),
        Some("key-one"),
        Some("Bearer key-one key-two"),
    ];
    let mut rejected = 0.0;
    for (method, path) in PROTECTED_ROUTES {
        for authorization in wrong {
            let response = server.raw(&request(method, path, authorization, &[])).await;
            assert_eq!(
                response.status, 401,
                "{method} {path} with {authorization:?}"
            );
            if *path == "/status" {
                // The page itself, without any figure: it asks for the key.
                assert!(response.body.contains("<!doctype html>"), "{path}");
                let markup = response.body.split("<script>").next().unwrap_or("");
                assert!(!markup.contains("data-field"), "{path}");
            } else {
                assert_eq!(response.code(), "unauthorized", "{method} {path}");
            }
            assert_eq!(
                response.header("www-authenticate"),
                Some("Bearer realm=\"ray\""),
                "{method} {path}"
            );
            if *method == "POST" {
                // The body was never read, so the connection cannot be reused.
                assert_eq!(response.header("connection"), Some("close"));
            }
            rejected += 1.0;
        }
        // Two Authorization headers, even both right, are refused.
        let twice = server
            .raw(&request(
                method,
                path,
                Some("Bearer key-one"),
                &["Authorization: Bearer key-one"],
            ))
            .await;
        assert_eq!(twice.status, 401, "{method} {path} with two headers");
        rejected += 1.0;

        for key in ["Bearer key-one", "bearer key-two", "BEARER key-two"] {
            let response = server.raw(&request(method, path, Some(key), &[])).await;
            let (status, code) = expected_with_a_key(path);
            assert_eq!(
                response.status, status,
                "{method} {path}: {}",
                response.body
            );
            if let Some(code) = code {
                assert_eq!(response.code(), code);
            }
        }
    }
    // Liveness, readiness and the descriptor stay public.
    for path in ["/", "/livez", "/readyz"] {
        assert_eq!(
            server.raw(&request("GET", path, None, &[])).await.status,
            200
        );
    }
    let metrics = server
        .client_with_key("key-two")
        .metrics_text()
        .await
        .unwrap();
    assert_eq!(
        util::metric_value(&metrics, "ray_auth_rejected_total"),
        Some(rejected)
    );
    server.stop().await;
}

/// One request from a client named by its forwarded address and its key.
async fn from(server: &TestServer, address: &str, key: Option<&str>) -> RawResponse {
    let forwarded = format!("X-Forwarded-For: {address}");
    let authorization = key.map(|k| format!("Bearer {k}"));
    server
        .raw(&request(
            "POST",
            "/v1/infer",
            authorization.as_deref(),
            &[&forwarded],
        ))
        .await
}

fn assert_rate_headers(response: &RawResponse, limit: &str) {
    assert_eq!(response.header("x-ratelimit-limit"), Some(limit));
    assert!(response.header("x-ratelimit-remaining").is_some());
    let reset: u64 = response
        .header("x-ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    let now = ray_core::time::unix_millis_now() / 1000;
    assert!(
        reset > now && reset <= now + 61,
        "reset {reset} is epoch seconds"
    );
}

fn assert_limited(response: &RawResponse) {
    assert_eq!(response.status, 429, "{}", response.body);
    assert_eq!(response.code(), "rate_limited");
    let retry: u64 = response.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(response.header("x-ratelimit-remaining"), Some("0"));
}

/// The scenario every strategy must pass: `steady` (a client already in the table) keeps its
/// own window while more new clients than the table holds arrive; they share one overflow
/// window with the same allowance. `clients` are the newcomers, `steady` the well-behaved one.
async fn more_clients_than_keys(
    server: &TestServer,
    steady: (&str, Option<&str>),
    clients: &[(String, Option<String>)],
) {
    // maxKeys 4, maxRequests 2 per 60 s.
    let first = from(server, steady.0, steady.1).await;
    assert_eq!(first.status, 200);
    assert_rate_headers(&first, "2");
    assert_eq!(first.header("x-ratelimit-remaining"), Some("1"));
    let mut statuses = Vec::new();
    for (address, key) in clients {
        let response = from(server, address, key.as_deref()).await;
        assert_rate_headers(&response, "2");
        if response.status == 429 {
            assert_limited(&response);
        }
        statuses.push(response.status);
    }
    // Three newcomers fit in the table; of the seven sent to the shared overflow window,
    // two are allowed.
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 429, 429, 429, 429, 429],
        "{statuses:?}"
    );
    // The client that was there first is unaffected by the full table...
    let second = from(server, steady.0, steady.1).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.header("x-ratelimit-remaining"), Some("0"));
    // ... and limited only by its own window.
    assert_limited(&from(server, steady.0, steady.1).await);

    let metrics = reqwest::Client::new()
        .get(server.url("/metrics"))
        .header("authorization", "Bearer k0")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name| util::metric_value(&metrics, name);
    assert_eq!(value("ray_rate_limit_active_keys"), Some(4.0));
    assert_eq!(value("ray_rate_limit_max_keys"), Some(4.0));
    assert_eq!(value("ray_rate_limit_active_keys_ratio"), Some(1.0));
    assert_eq!(value("ray_rate_limit_overflow_total"), Some(7.0));
    assert_eq!(value("ray_rate_limited_total"), Some(6.0));
    let readiness = server.client().ready().await.unwrap();
    assert!(
        readiness.is_ready(),
        "a full key table does not stop serving"
    );
    assert!(
        readiness
            .reasons
            .contains(&"rate_limit_pressure".to_string())
    );
}

fn limited_config(strategy: &str, auth: bool) -> String {
    format!(
        r#"{{"profile":"tiny","model":{{"adapter":{{"kind":"mock","latencyMs":0}}}},
            "auth":{{"enabled":{auth}}},
            "rateLimit":{{"enabled":true,"maxRequests":2,"windowMs":60000,"maxKeys":4,
                         "keyStrategy":"{strategy}","trustProxyHeaders":true}}}}"#
    )
}

const KEYS: &str = "k0,k1,k2,k3,k4,k5,k6,k7,k8,k9,k10";

#[tokio::test]
async fn the_ip_strategy_with_more_clients_than_keys() {
    let server = TestServer::start_with_keys(&limited_config("ip", true), Some(KEYS)).await;
    let clients: Vec<(String, Option<String>)> = (1..=10)
        .map(|n| (format!("203.0.113.{n}"), Some("k1".to_string())))
        .collect();
    more_clients_than_keys(&server, ("198.51.100.7", Some("k1")), &clients).await;
    server.stop().await;
}

#[tokio::test]
async fn the_api_key_strategy_with_more_clients_than_keys() {
    let server = TestServer::start_with_keys(&limited_config("api-key", true), Some(KEYS)).await;
    // Every client behind one address; the keys tell them apart.
    let clients: Vec<(String, Option<String>)> = (1..=10)
        .map(|n| ("198.51.100.7".to_string(), Some(format!("k{n}"))))
        .collect();
    more_clients_than_keys(&server, ("198.51.100.7", Some("k0")), &clients).await;
    server.stop().await;
}

#[tokio::test]
async fn the_ip_and_api_key_strategy_with_more_clients_than_keys() {
    let server = TestServer::start_with_keys(&limited_config("ip+api-key", true), Some(KEYS)).await;
    // Two keys from five addresses: ten clients.
    let clients: Vec<(String, Option<String>)> = (1..=10)
        .map(|n| {
            (
                format!("203.0.113.{}", n % 5),
                Some(format!("k{}", 1 + n % 2)),
            )
        })
        .collect();
    more_clients_than_keys(&server, ("198.51.100.7", Some("k1")), &clients).await;
    server.stop().await;
}

#[tokio::test]
async fn forwarded_addresses_are_believed_only_when_configured() {
    let server = TestServer::start(
        r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":0}},
            "rateLimit":{"enabled":true,"maxRequests":2,"windowMs":60000,"maxKeys":4,
                         "trustProxyHeaders":false}}"#,
    )
    .await;
    // Made-up forwarded addresses do not make new clients: all of them are 127.0.0.1.
    let statuses: Vec<u16> = futures_util::future::join_all((1..=4).map(|n| {
        server.raw_owned(request(
            "POST",
            "/v1/infer",
            None,
            &[&format!("X-Forwarded-For: 203.0.113.{n}")],
        ))
    }))
    .await
    .iter()
    .map(|r| r.status)
    .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(server.metric("ray_rate_limit_active_keys").await, 1.0);
    server.stop().await;
}

#[tokio::test]
async fn the_right_most_public_forwarded_address_names_the_client() {
    let server = TestServer::start(&limited_config("ip", false)).await;
    // A client that prepends a made-up address is still named by the address the proxy saw.
    for spoofed in ["1.1.1.1", "8.8.8.8", "9.9.9.9"] {
        let response = from(&server, &format!("{spoofed}, 203.0.113.50, 10.0.0.2"), None).await;
        if spoofed == "9.9.9.9" {
            assert_limited(&response);
        } else {
            assert_eq!(response.status, 200);
        }
    }
    assert_eq!(server.metric("ray_rate_limit_active_keys").await, 1.0);
    server.stop().await;
}
