//! Priority and fair admission over real HTTP against the mock backend (100 ms a request, two
//! permits): interactive requests of one key go before another key's flood of batch requests,
//! keys at the same priority share the permits by weight, and an overload is refused at once
//! with `Retry-After` instead of timing out in the queue. The assertions are about order and
//! counts; the latency figures are measured by `ray-server bench` (docs/performance.md).

#![allow(clippy::unwrap_used)]

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ray_core::ErrorCode;
use ray_core::wire::{InferRequest, Priority, PriorityClass};
use util::TestServer;

/// `printf %s key-flood-a | sha256sum | cut -c1-8`, and the same for `key-steady-b`.
const KEY_A: &str = "key-flood-a";
const KEY_B: &str = "key-steady-b";
const KEY_A_ID: &str = "e3b9f848";
const KEY_B_ID: &str = "af8b7cf0";

fn config(extra: &str) -> String {
    format!(
        r#"{{"profile":"tiny","model":{{"adapter":{{"kind":"mock","latencyMs":100}}}},
            "scheduler":{{"concurrency":2,"maxQueue":128,"maxQueuedTokens":262144,
                          "requestTimeoutMs":30000,"dedupeInflight":false}},
            "cache":{{"enabled":false}},
            "auth":{{"enabled":true}},
            "rateLimit":{{"enabled":false}},
            "telemetry":{{"logLevel":"warn"}},
            "priority":{{{extra}}}}}"#
    )
}

fn request(text: String, class: PriorityClass) -> InferRequest {
    InferRequest {
        max_tokens: Some(8),
        ..InferRequest::new(text)
    }
    .with_priority(Priority::of(class))
}

/// One request so the scheduler has measured a service time.
async fn warm(server: &TestServer, key: &str) {
    server
        .client_with_key(key)
        .infer(&request("warm".into(), PriorityClass::Interactive))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_requests_go_before_another_keys_flood_of_batch_requests() {
    let server = TestServer::start_with_keys(
        &config(&format!(
            r#""apiKeys":[{{"id":"{KEY_A_ID}","maxClass":"batch"}},{{"id":"{KEY_B_ID}"}}]"#
        )),
        Some(&format!("{KEY_A},{KEY_B}")),
    )
    .await;
    let completed = Arc::new(AtomicU64::new(0));
    // Key A floods: 64 concurrent batch requests (it could not ask for more than batch).
    let mut flood = Vec::new();
    for i in 0..64 {
        let client = server.client_with_key(KEY_A);
        let completed = completed.clone();
        flood.push(tokio::spawn(async move {
            let result = client
                .infer(&request(format!("flood {i}"), PriorityClass::Interactive))
                .await;
            (result, completed.fetch_add(1, Ordering::SeqCst))
        }));
    }
    // Wait until most of the flood waits in the queue.
    let mut waiting = 0;
    for _ in 0..200 {
        let health = server.client_with_key(KEY_B).health().await;
        waiting = health.map(|h| h.runtime.queue.depth).unwrap_or(0);
        if waiting >= 32 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(waiting >= 32, "the flood never queued ({waiting} waiting)");
    // Key B sends one interactive request at a time.
    let b = server.client_with_key(KEY_B);
    let mut flood_done_before_b = 0;
    for i in 0..5 {
        let response = b
            .infer(&request(format!("steady {i}"), PriorityClass::Interactive))
            .await
            .unwrap();
        let priority = &response.diagnostics.scheduler.as_ref().unwrap().priority;
        assert_eq!(priority.class, PriorityClass::Interactive);
        flood_done_before_b = completed.load(Ordering::SeqCst);
    }
    // B's five requests, sent after A's 64, were all answered while most of A's still waited.
    assert!(
        flood_done_before_b < 32,
        "{flood_done_before_b} of the flood finished before B's five requests"
    );
    let mut ok = 0;
    for task in flood {
        let (result, _) = task.await.unwrap();
        match result {
            Ok(response) => {
                let priority = &response.diagnostics.scheduler.as_ref().unwrap().priority;
                assert_eq!(priority.class, PriorityClass::Batch);
                assert!(priority.clamped, "A asked for interactive and ran as batch");
                ok += 1;
            }
            Err(error) => panic!("a flood request failed: {error}"),
        }
    }
    // A still completes all of its work, none of it timing out in the queue.
    assert_eq!(ok, 64);
    let metrics = server.client_with_key(KEY_B).metrics_text().await.unwrap();
    let batch_started = metrics
        .lines()
        .find(|l| l.starts_with("ray_scheduler_started_total{") && l.contains(r#"class="batch""#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(batch_started, Some(64.0), "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_at_the_same_priority_share_the_permits_by_weight() {
    let server = TestServer::start_with_keys(
        &config(&format!(
            r#""classes":{{"interactive":{{"maxWaitMs":20000}},"batch":{{"maxWaitMs":30000}}}},
               "apiKeys":[{{"id":"{KEY_A_ID}","weight":1}},{{"id":"{KEY_B_ID}","weight":3}}]"#
        )),
        Some(&format!("{KEY_A},{KEY_B}")),
    )
    .await;
    warm(&server, KEY_A).await;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let mut workers = Vec::new();
    for (index, key) in [KEY_A, KEY_B].into_iter().enumerate() {
        for worker in 0..12 {
            let client = server.client_with_key(key);
            let stop = stop.clone();
            let served = served.clone();
            workers.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let text = format!("{key} {worker} {n}");
                    let result = client
                        .infer(&request(text, PriorityClass::Interactive))
                        .await;
                    if result.is_ok() && !stop.load(Ordering::SeqCst) {
                        let total = served[index].fetch_add(1, Ordering::SeqCst)
                            + served[1 - index].load(Ordering::SeqCst);
                        if total + 1 >= 120 {
                            stop.store(true, Ordering::SeqCst);
                        }
                    }
                }
            }));
        }
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let a = served[0].load(Ordering::SeqCst) as f64;
    let b = served[1].load(Ordering::SeqCst) as f64;
    let ratio = b / a.max(1.0);
    assert!(
        (2.0..=4.5).contains(&ratio),
        "weights 1:3 served {a}:{b} (ratio {ratio:.2})"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overload_is_refused_at_once_and_nothing_admitted_times_out_in_the_queue() {
    let server = TestServer::start_with_keys(
        &config(
            r#""classes":{"interactive":{"maxWaitMs":1000},"batch":{"maxWaitMs":1500},
                         "background":{"maxWaitMs":2000}}"#,
        ),
        Some(&format!("{KEY_A},{KEY_B}")),
    )
    .await;
    warm(&server, KEY_A).await;
    // Two permits at 100 ms serve about 20 requests a second; 200 at once is ten seconds of
    // work against bounds of one to two seconds.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = server.client_with_key(if i % 2 == 0 { KEY_A } else { KEY_B });
        let class = PriorityClass::ALL[i % 3];
        tasks.push(tokio::spawn(async move {
            client.infer(&request(format!("overload {i}"), class)).await
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(error) => {
                let code = error.code();
                assert!(
                    matches!(
                        code,
                        Some(ErrorCode::QueueWaitExceedsDeadline | ErrorCode::QueueFull)
                    ),
                    "an overloaded request failed with {code:?}: {error}"
                );
                assert_eq!(error.status(), Some(503));
                assert!(error.retry_after().is_some(), "no Retry-After: {error}");
                if code == Some(ErrorCode::QueueWaitExceedsDeadline) {
                    assert!(
                        error.message().contains("would wait about"),
                        "{}",
                        error.message()
                    );
                    let details = error.details().unwrap();
                    assert!(details["estimatedWaitMs"].as_u64().is_some(), "{details}");
                }
                refused += 1;
            }
        }
    }
    assert!(ok >= 10, "only {ok} requests were served");
    assert!(refused >= 100, "only {refused} of 200 were refused");
    // The estimate is exported.
    let health = server.client_with_key(KEY_B).health().await.unwrap();
    let priority = &health.runtime.queue.priority;
    assert!(priority.service_time_estimate_ms.is_some());
    assert_eq!(priority.estimated_wait_ms.len(), 3);
    assert!(priority.refused_wait.values().sum::<u64>() > 0);
    let metrics = server.client_with_key(KEY_B).metrics_text().await.unwrap();
    assert!(
        metrics.contains("ray_scheduler_estimated_wait_seconds{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ray_scheduler_refused_wait_total{"),
        "{metrics}"
    );
    server.stop().await;
}

/// A flood that arrives before the first request finished, when nothing can be estimated yet:
/// each request is admitted then, and once the first service time is measured the ones that
/// could not start within the batch bound (less the interactive room) are refused at once, so
/// none of those that stay waits past its 6 s bound. (Before, all 100 were kept and the last
/// waited about 10 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_before_the_first_estimate_keeps_only_what_starts_within_the_bound() {
    let server = TestServer::start_with_keys(
        &config(r#""classes":{"batch":{"maxWaitMs":6000}}"#),
        Some(&format!("{KEY_A},{KEY_B}")),
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let client = server.client_with_key(KEY_A);
        tasks.push(tokio::spawn(async move {
            let sent = std::time::Instant::now();
            let result = client
                .infer(&request(format!("cold flood {i}"), PriorityClass::Batch))
                .await;
            (result, sent.elapsed())
        }));
    }
    let (mut ok, mut refused, mut longest) = (0, 0, 0);
    for task in tasks {
        match task.await.unwrap() {
            (Ok(response), _) => {
                let priority = &response.diagnostics.scheduler.as_ref().unwrap().priority;
                assert_eq!(priority.class, PriorityClass::Batch);
                longest = longest.max(priority.queue_wait_ms);
                ok += 1;
            }
            (Err(error), took) => {
                assert_eq!(
                    error.code(),
                    Some(ErrorCode::QueueWaitExceedsDeadline),
                    "{error}"
                );
                assert!(error.retry_after().is_some(), "no Retry-After: {error}");
                // Told when the first request finished, not after waiting.
                assert!(
                    took < std::time::Duration::from_secs(3),
                    "refused after {took:?}"
                );
                refused += 1;
            }
        }
    }
    // One batch permit at 100 ms a request: about 40 start within 4 s.
    assert!(longest <= 6_000, "an admitted request waited {longest} ms");
    assert!((20..=60).contains(&ok), "{ok} served, {refused} refused");
    assert_eq!(ok + refused, 100);
    server.stop().await;
}
