//! Dedupe and cancellation through the whole runtime, with providers that count their calls,
//! notice being cancelled, or fail.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ray_core::ErrorCode;
use ray_core::config::ConfigLoader;
use ray_core::wire::InferRequest;
use ray_models::{Provider, ProviderError, ProviderOutput, ProviderRequest};
use ray_runtime::Runtime;

/// Sleeps, counts calls, counts calls dropped before they finished, optionally fails.
#[derive(Debug, Default)]
struct Probe {
    delay_ms: u64,
    fail: bool,
    calls: AtomicU32,
    cancelled: AtomicU32,
}

struct CancelGuard<'a>(&'a AtomicU32, bool);

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl Provider for Probe {
    fn kind(&self) -> &'static str {
        "probe"
    }

    async fn infer(&self, request: &ProviderRequest) -> Result<ProviderOutput, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut guard = CancelGuard(&self.cancelled, false);
        tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
        guard.1 = true;
        if self.fail {
            return Err(ProviderError::upstream(500, b"backend exploded"));
        }
        Ok(ProviderOutput {
            text: format!("answer to {}", request.input),
            ..ProviderOutput::default()
        })
    }
}

fn runtime(probe: Arc<Probe>) -> Runtime {
    let config = ConfigLoader::new()
        .with_json("t", r#"{"profile":"tiny","scheduler":{"concurrency":1}}"#)
        .load()
        .unwrap()
        .config;
    Runtime::builder(config)
        .provider(probe)
        .pressure_sources(calm())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_error_reaches_every_waiter() {
    let probe = Arc::new(Probe {
        delay_ms: 100,
        fail: true,
        ..Probe::default()
    });
    let runtime = runtime(probe.clone());
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let runtime = runtime.clone();
        tasks.push(tokio::spawn(async move {
            runtime.infer(InferRequest::new("same")).await
        }));
    }
    for task in tasks {
        let error = task.await.unwrap().unwrap_err();
        assert_eq!(error.code(), ErrorCode::ProviderUpstreamError);
        assert_eq!(error.details().unwrap()["upstreamStatus"], 500);
    }
    assert_eq!(
        probe.calls.load(Ordering::SeqCst),
        1,
        "one call for five requests"
    );
    // Errors are never cached: the next request calls the backend again.
    let _ = runtime.infer(InferRequest::new("same")).await;
    assert_eq!(probe.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_follower_leaving_does_not_disturb_the_others() {
    let probe = Arc::new(Probe {
        delay_ms: 100,
        ..Probe::default()
    });
    let runtime = runtime(probe.clone());
    let leader = {
        let runtime = runtime.clone();
        tokio::spawn(async move { runtime.infer(InferRequest::new("same")).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let leaving = {
        let runtime = runtime.clone();
        tokio::spawn(async move { runtime.infer(InferRequest::new("same")).await })
    };
    let staying = {
        let runtime = runtime.clone();
        tokio::spawn(async move { runtime.infer(InferRequest::new("same")).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    leader.abort();
    leaving.abort();
    let response = staying.await.unwrap().unwrap();
    assert!(response.deduplicated);
    assert_eq!(response.output, "answer to same");
    assert_eq!(probe.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        probe.cancelled.load(Ordering::SeqCst),
        0,
        "the call ran to the end"
    );
}

#[tokio::test(start_paused = true)]
async fn when_every_caller_leaves_the_backend_call_is_cancelled_and_the_permit_freed() {
    let probe = Arc::new(Probe {
        delay_ms: 10_000,
        ..Probe::default()
    });
    let runtime = runtime(probe.clone());
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let runtime = runtime.clone();
        tasks.push(tokio::spawn(async move {
            runtime.infer(InferRequest::new("same")).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(runtime.health().await.runtime.queue.in_flight, 1);
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    assert_eq!(
        probe.cancelled.load(Ordering::SeqCst),
        1,
        "the backend call was dropped"
    );
    let health = runtime.health().await;
    assert_eq!(health.runtime.queue.in_flight, 0);
    assert_eq!(health.runtime.queue.in_flight_tokens, 0);
    assert_eq!(health.runtime.queue.dedupe_followers, 0);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cancels_the_backend_call() {
    let probe = Arc::new(Probe {
        delay_ms: 60_000,
        ..Probe::default()
    });
    let runtime = runtime(probe.clone());
    let error = runtime.infer(InferRequest::new("slow")).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::RequestTimeout);
    assert_eq!(error.retry_after_secs(), Some(5));
    assert_eq!(probe.cancelled.load(Ordering::SeqCst), 1);
    assert_eq!(runtime.health().await.runtime.queue.in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn cache_false_runs_identical_requests_separately() {
    let probe = Arc::new(Probe {
        delay_ms: 100,
        ..Probe::default()
    });
    let runtime = runtime(probe.clone());
    let request = InferRequest {
        cache: Some(false),
        ..InferRequest::new("same")
    };
    let (a, b) = tokio::join!(runtime.infer(request.clone()), runtime.infer(request));
    assert!(!a.unwrap().deduplicated && !b.unwrap().deduplicated);
    assert_eq!(probe.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn with_the_cache_disabled_identical_requests_run_separately_unless_given_a_dedupe_key() {
    let probe = Arc::new(Probe {
        delay_ms: 100,
        ..Probe::default()
    });
    let config = ConfigLoader::new()
        .with_json(
            "t",
            r#"{"profile":"tiny","scheduler":{"concurrency":2},"cache":{"enabled":false}}"#,
        )
        .load()
        .unwrap()
        .config;
    let runtime = Runtime::builder(config)
        .provider(probe.clone())
        .pressure_sources(calm())
        .build()
        .unwrap();
    let request = InferRequest::new("same");
    let (a, b) = tokio::join!(runtime.infer(request.clone()), runtime.infer(request));
    assert!(!a.unwrap().deduplicated && !b.unwrap().deduplicated);
    assert_eq!(probe.calls.load(Ordering::SeqCst), 2);
    // An explicit dedupeKey still shares.
    let keyed = InferRequest {
        dedupe_key: Some("k".into()),
        ..InferRequest::new("same")
    };
    let (a, b) = tokio::join!(runtime.infer(keyed.clone()), runtime.infer(keyed));
    assert!(a.unwrap().deduplicated != b.unwrap().deduplicated);
    assert_eq!(probe.calls.load(Ordering::SeqCst), 3);
}

/// No pressure signals at all, so the host's load cannot change a request's clamps (and its
/// cache and dedupe keys) halfway through a test.
fn calm() -> ray_runtime::PressureSources {
    ray_runtime::PressureSources::under(concat!(
        env!("CARGO_TARGET_TMPDIR"),
        "/no-pressure-signals"
    ))
}
