//! Streams through the whole runtime, with providers that pace, stall, count and notice being
//! cancelled: deltas then the final event, fan-out of identical streams, cancellation when the
//! last client leaves, the three stream deadlines, cache replay.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use ray_core::ErrorCode;
use ray_core::config::ConfigLoader;
use ray_core::wire::{InferEvent, InferRequest};
use ray_models::{
    Provider, ProviderError, ProviderOutput, ProviderRequest, StreamEvent, TokenStream,
};
use ray_runtime::Runtime;

/// Streams `words` words, `gap` apart, after `first` (and stalls forever at word `stall_at`).
#[derive(Debug, Default)]
struct Paced {
    first: Duration,
    gap: Duration,
    words: usize,
    stall_at: Option<usize>,
    calls: AtomicU32,
    dropped: Arc<AtomicU32>,
}

struct DropCount(Arc<AtomicU32>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Provider for Paced {
    fn kind(&self) -> &'static str {
        "paced"
    }

    async fn infer(&self, request: &ProviderRequest) -> Result<ProviderOutput, ProviderError> {
        let mut stream = self.stream(request).await?;
        while let Some(event) = stream.next().await {
            if let StreamEvent::Done(output) = event? {
                return Ok(*output);
            }
        }
        unreachable!("the stream ends with Done")
    }

    async fn stream(&self, _request: &ProviderRequest) -> Result<TokenStream, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (first, gap, words, stall_at) = (self.first, self.gap, self.words, self.stall_at);
        let guard = DropCount(self.dropped.clone());
        let stream = async_stream_words(first, gap, words, stall_at, guard);
        Ok(stream)
    }
}

fn async_stream_words(
    first: Duration,
    gap: Duration,
    words: usize,
    stall_at: Option<usize>,
    guard: DropCount,
) -> TokenStream {
    let state = (0usize, String::new(), guard);
    Box::pin(futures_util::stream::unfold(
        Some(state),
        move |state| async move {
            let (i, mut text, guard) = state?;
            if i == words {
                let output = ProviderOutput {
                    text,
                    completion_tokens: Some(words as u64),
                    ..ProviderOutput::default()
                };
                // Finishing normally is not a cancellation.
                std::mem::forget(guard);
                return Some((Ok(StreamEvent::Done(Box::new(output))), None));
            }
            if Some(i) == stall_at {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(if i == 0 { first } else { gap }).await;
            let word = format!("w{i} ");
            text.push_str(&word);
            Some((Ok(StreamEvent::Delta(word)), Some((i + 1, text, guard))))
        },
    ))
}

fn runtime(provider: Arc<Paced>, extra: &str) -> Runtime {
    let config = ConfigLoader::new()
        .with_json(
            "t",
            format!(r#"{{"profile":"tiny","scheduler":{{"concurrency":1}}{extra}}}"#),
        )
        .load()
        .unwrap()
        .config;
    Runtime::builder(config)
        .provider(provider)
        .pressure_sources(calm())
        .build()
        .unwrap()
}

async fn collect(
    runtime: &Runtime,
    request: InferRequest,
) -> (Vec<String>, Result<InferEvent, ErrorCode>) {
    let mut stream = runtime.infer_stream(request).await.unwrap();
    let mut deltas = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(InferEvent::Delta(delta)) => deltas.push(delta.text),
            Ok(done) => return (deltas, Ok(done)),
            Err(error) => return (deltas, Err(error.code())),
        }
    }
    panic!("the stream ended without a final event");
}

#[tokio::test(start_paused = true)]
async fn deltas_arrive_then_the_whole_response() {
    let provider = Arc::new(Paced {
        first: Duration::from_millis(50),
        gap: Duration::from_millis(10),
        words: 5,
        ..Paced::default()
    });
    let runtime = runtime(provider.clone(), "");
    let (deltas, done) = collect(&runtime, InferRequest::new("hello")).await;
    assert_eq!(deltas, ["w0 ", "w1 ", "w2 ", "w3 ", "w4 "]);
    let Ok(InferEvent::Done(response)) = done else {
        panic!("{done:?}")
    };
    assert_eq!(response.output, deltas.concat());
    assert_eq!(response.usage.tokens.unwrap().completion, 5);
    assert!(!response.cached && !response.deduplicated);
    // The same request again is replayed from the cache: one delta, then the response.
    let (deltas, done) = collect(&runtime, InferRequest::new("hello")).await;
    assert_eq!(deltas, ["w0 w1 w2 w3 w4 "]);
    let Ok(InferEvent::Done(response)) = done else {
        panic!("{done:?}")
    };
    assert!(response.cached);
    assert_eq!(provider.calls.load(Ordering::SeqCst), 1);
    let health = runtime.health().await;
    assert_eq!(health.runtime.queue.in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn identical_streams_share_one_generation_and_a_late_one_catches_up() {
    let provider = Arc::new(Paced {
        first: Duration::from_millis(10),
        gap: Duration::from_millis(10),
        words: 6,
        ..Paced::default()
    });
    let runtime = runtime(provider.clone(), "");
    let leader = runtime
        .infer_stream(InferRequest::new("same"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(35)).await;
    let late = runtime
        .infer_stream(InferRequest::new("same"))
        .await
        .unwrap();
    let gather = |stream: ray_runtime::InferStream| async move {
        let events: Vec<_> = stream.collect().await;
        let mut text = String::new();
        let mut response = None;
        for event in events {
            match event.unwrap() {
                InferEvent::Delta(d) => text.push_str(&d.text),
                InferEvent::Done(r) => response = Some(r),
                InferEvent::Error(e) => panic!("{e:?}"),
            }
        }
        (text, response.unwrap())
    };
    let ((a_text, a), (b_text, b)) = tokio::join!(gather(leader), gather(late));
    assert_eq!(
        a_text, b_text,
        "the late stream got the text generated before it joined"
    );
    assert_eq!(a.output, b.output);
    assert!(!a.deduplicated && b.deduplicated);
    assert_eq!(provider.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_last_client_leaving_cancels_the_generation_and_frees_the_permit() {
    let provider = Arc::new(Paced {
        first: Duration::from_millis(10),
        gap: Duration::from_millis(100),
        words: 100,
        ..Paced::default()
    });
    let runtime = runtime(provider.clone(), "");
    let mut a = runtime
        .infer_stream(InferRequest::new("long"))
        .await
        .unwrap();
    let mut b = runtime
        .infer_stream(InferRequest::new("long"))
        .await
        .unwrap();
    assert!(matches!(a.next().await, Some(Ok(InferEvent::Delta(_)))));
    assert!(matches!(b.next().await, Some(Ok(InferEvent::Delta(_)))));
    drop(a);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        provider.dropped.load(Ordering::SeqCst),
        0,
        "one client still reads"
    );
    assert!(matches!(b.next().await, Some(Ok(InferEvent::Delta(_)))));
    drop(b);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        provider.dropped.load(Ordering::SeqCst),
        1,
        "the generation was dropped"
    );
    assert_eq!(
        runtime.health().await.runtime.queue.in_flight,
        0,
        "the permit is free"
    );
    let metrics = runtime.metrics().to_prometheus_text();
    assert!(
        metrics.contains("ray_streams_cancelled_total 2"),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn each_stream_deadline_fires_with_its_own_code() {
    let streaming =
        r#","streaming":{"firstTokenTimeoutMs":200,"idleTimeoutMs":100,"totalTimeoutMs":1000}"#;
    // No first token in time: nothing was sent, the error comes first.
    let slow_start = Arc::new(Paced {
        first: Duration::from_millis(500),
        words: 3,
        ..Paced::default()
    });
    let (deltas, done) = collect(
        &runtime(slow_start.clone(), streaming),
        InferRequest::new("a"),
    )
    .await;
    assert!(deltas.is_empty());
    assert_eq!(done.unwrap_err(), ErrorCode::StreamFirstTokenTimeout);
    assert_eq!(slow_start.dropped.load(Ordering::SeqCst), 1);
    // A stall after some tokens.
    let stalls = Arc::new(Paced {
        first: Duration::from_millis(10),
        gap: Duration::from_millis(10),
        words: 10,
        stall_at: Some(3),
        ..Paced::default()
    });
    let (deltas, done) = collect(&runtime(stalls.clone(), streaming), InferRequest::new("b")).await;
    assert_eq!(deltas.len(), 3);
    assert_eq!(done.unwrap_err(), ErrorCode::StreamIdleTimeout);
    assert_eq!(stalls.dropped.load(Ordering::SeqCst), 1);
    // Steady but too long in total.
    let long = Arc::new(Paced {
        first: Duration::from_millis(10),
        gap: Duration::from_millis(50),
        words: 100,
        ..Paced::default()
    });
    let (deltas, done) = collect(&runtime(long.clone(), streaming), InferRequest::new("c")).await;
    assert!(deltas.len() > 10 && deltas.len() < 100, "{}", deltas.len());
    assert_eq!(done.unwrap_err(), ErrorCode::StreamTotalTimeout);
}

#[tokio::test(start_paused = true)]
async fn errors_before_admission_come_back_at_once() {
    let provider = Arc::new(Paced::default());
    let runtime = runtime(provider, "");
    let error = runtime
        .infer_stream(InferRequest::new("   "))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidRequest);
}

/// No pressure signals at all, so the host's load cannot change a request's clamps (and its
/// cache and dedupe keys) halfway through a test.
fn calm() -> ray_runtime::PressureSources {
    ray_runtime::PressureSources::under(concat!(
        env!("CARGO_TARGET_TMPDIR"),
        "/no-pressure-signals"
    ))
}
