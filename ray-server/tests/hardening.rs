//! HTTP hardening under attack, over real loopback sockets: header floods, oversized heads and
//! targets, trickled headers, more connections than the cap, oversized and mislabelled bodies.
//! Each gets its documented answer while a well-behaved client, connected before the attacks
//! and running all through them, keeps getting 200s.
#![allow(clippy::unwrap_used)]

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ray_server::HttpLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use util::{RawConnection, RawResponse, TestServer};

const CONFIG: &str = r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":2}}}"#;
const MAX_CONNECTIONS: u32 = 32;

fn limits() -> HttpLimits {
    HttpLimits {
        max_connections: MAX_CONNECTIONS,
        headers_timeout: Duration::from_secs(1),
        keep_alive_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_secs(2),
        ..HttpLimits::default()
    }
}

/// The well-behaved client: one kept-alive connection, opened before any attack, sending an
/// inference request and a health look in turn until told to stop. Returns every status.
fn well_behaved(server: &TestServer, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<u16>> {
    let addr = server.addr;
    tokio::spawn(async move {
        let mut connection = RawConnection::open(addr).await;
        let mut statuses = Vec::new();
        let mut n = 0u32;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let request = if n.is_multiple_of(2) {
                let body = format!(r#"{{"input":"steady request {n}","cache":false}}"#);
                format!(
                    "POST /v1/infer HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n".to_string()
            };
            let response = connection.exchange(request.as_bytes()).await;
            if n % 2 == 1 && response.status == 200 {
                let sockets = response.json()["gateway"]["http"]["sockets"]
                    .as_u64()
                    .unwrap();
                assert!(
                    sockets <= u64::from(MAX_CONNECTIONS),
                    "{sockets} open connections"
                );
            }
            statuses.push(response.status);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        statuses
    })
}

fn get_with(path: &str, headers: &[String]) -> Vec<u8> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
    for line in headers {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    request.into_bytes()
}

fn post_with(head: &str, body: &[u8]) -> Vec<u8> {
    let mut request =
        format!("POST /v1/infer HTTP/1.1\r\nHost: localhost\r\n{head}\r\n\r\n").into_bytes();
    request.extend_from_slice(body);
    request
}

async fn all(server: &TestServer, requests: Vec<Vec<u8>>) -> Vec<RawResponse> {
    futures_util::future::join_all(requests.into_iter().map(|r| server.raw_owned(r))).await
}

fn assert_refused(response: &RawResponse, status: u16, code: &str, what: &str) {
    assert_eq!(response.status, status, "{what}: {}", response.body);
    assert_eq!(response.code(), code, "{what}");
    assert_eq!(
        response.header("content-type"),
        Some("application/json; charset=utf-8"),
        "{what}"
    );
}

/// Sends a request head one byte at a time, `pause` apart, and reports whether the server
/// closed the connection before the head was complete (it never answers such a client).
async fn trickle(addr: std::net::SocketAddr, pause: Duration) -> bool {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET /livez HTTP/1.1\r\nHost: localhost\r\nX-Slow: {}\r\n\r\n",
        "s".repeat(400)
    );
    let mut buffer = [0u8; 256];
    for byte in head.bytes() {
        if stream.write_all(&[byte]).await.is_err() {
            return true;
        }
        tokio::select! {
            read = stream.read(&mut buffer) => {
                return match read {
                    // Closed, reset, or a bare error status from the parser: never a 200.
                    Ok(0) | Err(_) => true,
                    Ok(n) => !String::from_utf8_lossy(&buffer[..n]).contains(" 200 "),
                };
            }
            () = tokio::time::sleep(pause) => {}
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_get_their_documented_answers_and_a_steady_client_is_untouched() {
    let server = TestServer::start_with(CONFIG, None, limits()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let steady = well_behaved(&server, stop.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Header floods: more fields than the 64 allowed, and heads over 12,288 bytes.
    let fields: Vec<String> = (0..70).map(|i| format!("X-Flood-{i}: {i}")).collect();
    for response in all(
        &server,
        (0..30).map(|_| get_with("/livez", &fields)).collect(),
    )
    .await
    {
        assert_refused(
            &response,
            431,
            "request_headers_too_large",
            "70 header fields",
        );
        assert_eq!(response.header("connection"), Some("close"));
    }
    let big = vec![format!("X-Big: {}", "b".repeat(13_000))];
    for response in all(&server, (0..20).map(|_| get_with("/livez", &big)).collect()).await {
        assert_refused(
            &response,
            431,
            "request_headers_too_large",
            "a 13 KB header",
        );
    }
    let long_target = format!("/livez?{}", "q".repeat(9_000));
    let response = server.raw(&get_with(&long_target, &[])).await;
    assert_refused(&response, 414, "request_target_too_large", "a 9 KB target");

    // Mislabelled bodies.
    let json = br#"{"input":"x"}"#;
    let length = format!("Content-Length: {}", json.len());
    for (head, status, code) in [
        (
            format!("Content-Type: text/plain\r\n{length}"),
            415,
            "unsupported_media_type",
        ),
        (
            format!("Content-Type: application/x-www-form-urlencoded\r\n{length}"),
            415,
            "unsupported_media_type",
        ),
        (
            format!("Content-Type: application/json\r\nContent-Encoding: gzip\r\n{length}"),
            415,
            "unsupported_content_encoding",
        ),
        (
            format!("Content-Type: application/json\r\nExpect: 200-ok\r\n{length}"),
            417,
            "unsupported_expectation",
        ),
        (
            "Content-Type: application/json\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked"
                .to_string(),
            411,
            "length_required",
        ),
    ] {
        let body: &[u8] = if head.contains("chunked") {
            b"0\r\n\r\n"
        } else {
            json
        };
        let response = server.raw(&post_with(&head, body)).await;
        assert_refused(&response, status, code, &head);
        assert_eq!(response.header("connection"), Some("close"), "{head}");
    }
    let not_json = b"input=x&maxTokens=5";
    let response = server
        .raw(&post_with(
            &format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close",
                not_json.len()
            ),
            not_json,
        ))
        .await;
    assert_refused(&response, 400, "invalid_json", "a form body labelled JSON");

    // Oversized bodies: declared (refused before a byte of it is read) and streamed.
    let response = server
        .raw(&post_with(
            "Content-Type: application/json\r\nContent-Length: 10000000",
            b"{",
        ))
        .await;
    assert_refused(&response, 413, "body_too_large", "a declared 10 MB body");
    assert_eq!(response.header("connection"), Some("close"));
    let mut chunked = Vec::new();
    for _ in 0..40 {
        chunked.extend_from_slice(format!("{:x}\r\n{}\r\n", 1_000, "a".repeat(1_000)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let response = server
        .raw(&post_with(
            "Content-Type: application/json\r\nTransfer-Encoding: chunked",
            &chunked,
        ))
        .await;
    assert_refused(&response, 413, "body_too_large", "a streamed 40 KB body");

    // Slow headers: a byte every 100 ms would take 45 s; the 1 s header timeout drops them.
    let trickles = futures_util::future::join_all(
        (0..8).map(|_| tokio::spawn(trickle(server.addr, Duration::from_millis(100)))),
    )
    .await;
    for dropped in trickles {
        assert!(
            dropped.unwrap(),
            "a trickling client was dropped before its head was done"
        );
    }

    // More connections than the cap: the idle ones are closed, the rest wait in the backlog
    // until a slot frees, and none of it reaches the steady client's connection.
    let mut idle = Vec::new();
    for _ in 0..(MAX_CONNECTIONS + 16) {
        idle.push(RawConnection::open(server.addr).await);
    }
    for mut connection in idle {
        assert!(connection.closed_within(Duration::from_secs(20)).await);
    }

    stop.store(true, Ordering::Relaxed);
    let statuses = steady.await.unwrap();
    assert!(statuses.len() >= 20, "{} requests", statuses.len());
    assert!(
        statuses.iter().all(|s| *s == 200),
        "the steady client saw {statuses:?}"
    );
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |route: &str, status: u16| {
        util::metric_value(
            &text,
            &format!(r#"ray_http_requests_total{{route="{route}",status="{status}"}}"#),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(count("/livez", 431), 50.0);
    assert_eq!(count("/livez", 414), 1.0);
    assert_eq!(count("/v1/infer", 415), 3.0);
    assert_eq!(count("/v1/infer", 413), 2.0);
    assert_eq!(count("/v1/infer", 200) as usize, statuses.len() / 2);
    server.stop().await;
}
