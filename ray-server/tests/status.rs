//! The status page over HTTP: `/status` is self-contained and every figure it shows is in
//! `/status.json`; both need the key when auth is on; the cost of one `/status.json`.
#![allow(clippy::unwrap_used)]

mod util;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use util::{TestServer, post};

const MOCK: &str = r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":5}},
    "cache":{"enabled":true}}"#;

fn get(path: &str, key: Option<&str>) -> Vec<u8> {
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
        .into_bytes()
}

/// The page's markup, without its script (which builds the same markup from the JSON).
fn markup(html: &str) -> &str {
    html.split("<script>").next().unwrap_or(html)
}

/// The values of `attribute="..."` in the markup of `html`.
fn attribute_values(html: &str, attribute: &str) -> BTreeSet<String> {
    let html = markup(html);
    let needle = format!("{attribute}=\"");
    html.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            rest.find('"').map(|end| rest[..end].to_string())
        })
        .collect()
}

/// Some traffic: answered requests, a cache hit, and one refused with `invalid_request`.
async fn traffic(server: &TestServer) {
    for i in 0..6 {
        let body = format!(r#"{{"input":"status page request {}"}}"#, i % 4);
        let response = server.raw(&post("/v1/infer", &body)).await;
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let refused = server.raw(&post("/v1/infer", r#"{"input":""}"#)).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_self_contained_and_the_json_carries_every_figure() {
    let server = TestServer::start(MOCK).await;
    traffic(&server).await;
    // Let the sampler see the traffic (one sample a second).
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    let page = server.raw(&get("/status", None)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = &page.body;
    assert!(html.len() < 50 * 1024, "{} bytes", html.len());
    // Self-contained: no address of another host, nothing loaded from anywhere.
    for needle in ["http://", "https://", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(needle), "the page contains {needle:?}");
    }
    assert!(page.header("content-security-policy").is_some_and(|csp| {
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'")
    }));

    let json = server.raw(&get("/status.json", None)).await;
    assert_eq!(json.status, 200, "{}", json.body);
    let status = json.json();
    let fields = status["fields"].as_object().unwrap();
    let ids = attribute_values(html, "data-field");
    assert!(ids.len() >= 20, "{ids:?}");
    for id in &ids {
        let field = fields
            .get(id)
            .unwrap_or_else(|| panic!("the page shows {id}, /status.json does not carry it"));
        assert!(
            field["help"].as_str().is_some_and(|h| h.len() > 10),
            "{id} has no explanation"
        );
        assert!(field["text"].is_string(), "{id}");
        // Shown on hover (title) and on tap (the hidden line the script opens).
        let help = field["help"].as_str().unwrap().replace('\'', "&#39;");
        assert!(html.contains(&format!("title=\"{help}\"")), "{id}: {help}");
        assert!(
            html.contains(&format!("<span class=\"h\">{help}</span>")),
            "{id}"
        );
    }
    // And the other way round: every figure of the JSON is on the page.
    for id in fields.keys() {
        assert!(ids.contains(id), "{id} is not on the page");
    }
    for chart in attribute_values(html, "data-chart") {
        assert!(status["charts"][&chart].is_object(), "chart {chart}");
    }
    // Every series has the same points (completed ten-second slots), so the page draws them
    // over the same times.
    let lengths: Vec<(String, usize)> = ["traffic", "wait", "latency", "tokens", "queue"]
        .iter()
        .flat_map(|chart| {
            status["charts"][*chart]
                .as_object()
                .unwrap()
                .iter()
                .map(move |(name, series)| {
                    (format!("{chart}.{name}"), series.as_array().unwrap().len())
                })
        })
        .collect();
    assert!(
        lengths.iter().all(|(_, n)| *n == lengths[0].1),
        "{lengths:?}"
    );
    for block in attribute_values(html, "data-block") {
        assert!(status[&block].is_array(), "block {block}");
    }

    // What the traffic left: requests counted, a cache hit, the refusal by code, a recent
    // error, one model ready, latency percentiles from the histogram deltas.
    assert_eq!(fields["requests.total"]["value"], 7.0);
    assert!(fields["cache.hitRatio"]["value"].as_f64().unwrap() > 0.0);
    assert_eq!(status["refusals"][0]["code"], "invalid_request");
    assert_eq!(status["refusals"][0]["count"], 1);
    assert_eq!(status["recentErrors"][0]["code"], "invalid_request");
    assert_eq!(status["recentErrors"][0]["status"], 400);
    assert_eq!(fields["refusals.lastHour"]["value"], 1.0);
    assert!(fields["latency.p50"]["value"].as_f64().unwrap() > 0.0);
    assert!(
        fields["latency.p99"]["value"].as_f64().unwrap()
            >= fields["latency.p50"]["value"].as_f64().unwrap()
    );
    assert_eq!(status["models"][0]["state"], "ready");
    assert_eq!(status["models"][0]["backend"], "mock");
    assert_eq!(fields["jobs.queued"]["text"], "off");
    assert!(status["history"]["samples"].as_u64().unwrap() >= 2);
    assert!(status["history"]["bytes"].as_u64().unwrap() < 64 * 1024);
    // The first render is the server's: the figures are in the HTML itself.
    assert!(html.contains(&format!(
        "data-field=\"queue.depth\">{}<",
        fields["queue.depth"]["text"].as_str().unwrap()
    )));
    assert!(html.contains("<td>invalid_request</td>"));

    // Counted per route like the others.
    let metrics = server.raw(&get("/metrics", None)).await.body;
    assert!(metrics.contains(r#"ray_http_requests_total{route="/status",status="200"} 1"#));
    assert!(metrics.contains(r#"ray_http_requests_total{route="/status.json",status="200"} 1"#));
    server.stop().await;
}

#[tokio::test]
async fn with_auth_on_the_page_and_its_json_need_the_key() {
    let server = TestServer::start_with_keys(
        r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":0}},
            "auth":{"enabled":true}}"#,
        Some("key-one"),
    )
    .await;
    let locked = server.raw(&get("/status", None)).await;
    assert_eq!(locked.status, 401);
    assert_eq!(
        locked.header("www-authenticate"),
        Some("Bearer realm=\"ray\"")
    );
    // The page without any figure: it asks for the key, keeps it in session storage and
    // sends it as a Bearer header.
    assert!(locked.body.contains("data-auth=\"required\""));
    assert!(!markup(&locked.body).contains("data-field"));
    assert!(locked.body.contains("sessionStorage"));
    assert!(locked.body.contains("\"Bearer \"+key"));
    let wrong = server.raw(&get("/status.json", Some("nope"))).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.code(), "unauthorized");
    assert_eq!(server.raw(&get("/status.json", None)).await.status, 401);

    let page = server.raw(&get("/status", Some("key-one"))).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("data-field=\"queue.depth\""));
    assert!(!page.body.contains("key-one"));
    let json = server.raw(&get("/status.json", Some("key-one"))).await;
    assert_eq!(json.status, 200);
    // The icon a browser asks for with the page: no icon, no key needed, no refusal.
    let icon = server.raw(&get("/favicon.ico", None)).await;
    assert_eq!(icon.status, 204, "{}", icon.body);
    assert!(icon.body.is_empty());
    assert_eq!(icon.header("cache-control"), Some("public, max-age=86400"));
    // The refused look-ups are counted as `unauthorized` refusals once sampled.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let json = server
        .raw(&get("/status.json", Some("key-one")))
        .await
        .json();
    assert_eq!(json["refusals"][0]["code"], "unauthorized");
    assert_eq!(json["refusals"][0]["count"], 3);
    server.stop().await;
}

/// The cost of one `/status.json` (and of one `/status`), measured over loopback with a
/// full history: printed, not asserted (docs/performance.md records it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cost_of_one_status_json() {
    let server = TestServer::start(MOCK).await;
    traffic(&server).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let mut connection = util::RawConnection::open(server.addr).await;
    let keep_alive =
        |path: &str| format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes();
    for (path, rounds) in [("/status.json", 300u32), ("/status", 300), ("/health", 300)] {
        let request = keep_alive(path);
        let mut bytes = 0;
        let started = Instant::now();
        for _ in 0..rounds {
            let response = connection.exchange(&request).await;
            assert_eq!(response.status, 200);
            bytes = response.body.len();
        }
        let each = started.elapsed() / rounds;
        println!(
            "{path}: {:.0} µs per request ({bytes} bytes, {rounds} sequential on one connection, {} build)",
            each.as_secs_f64() * 1e6,
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
    }
    println!(
        "history: {} bytes once full",
        ray_server::gateway::status::history_bytes()
    );
    server.stop().await;
}
