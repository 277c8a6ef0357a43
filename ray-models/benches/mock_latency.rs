//! How close the mock's answer comes to its `latencyMs`, against a plain Tokio sleep (what the
//! mock did before). Prints the lateness of each for a few latencies, one request at a time and
//! sixteen at once.
//!
//! Run with `cargo bench -p ray-models --bench mock_latency` (options:
//! `RAY_BENCH_SAMPLES=400` per row).

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ray_models::{MockProvider, Provider, ProviderRequest};

/// Lateness in microseconds of each call, sorted.
async fn lateness<F, Fut>(latency: Duration, samples: usize, concurrent: usize, call: F) -> Vec<u64>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let mut late = Vec::with_capacity(samples);
    while late.len() < samples {
        let tasks: Vec<_> = (0..concurrent)
            .map(|_| {
                let call = call.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    call().await;
                    started.elapsed()
                })
            })
            .collect();
        for task in tasks {
            let took = task.await.unwrap();
            late.push(took.saturating_sub(latency).as_micros() as u64);
        }
    }
    late.sort_unstable();
    late
}

fn summary(late: &[u64]) -> String {
    let at = |q: f64| late[((late.len() - 1) as f64 * q) as usize];
    let mean = late.iter().sum::<u64>() / late.len() as u64;
    format!(
        "mean {mean:>5} µs, p50 {:>5} µs, p99 {:>5} µs, max {:>5} µs",
        at(0.5),
        at(0.99),
        late[late.len() - 1]
    )
}

fn main() {
    let samples: usize = std::env::var("RAY_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("lateness past latencyMs ({samples} calls per row)");
        for concurrent in [1, 16] {
            for ms in [1u64, 2, 5, 20] {
                let latency = Duration::from_millis(ms);
                let plain = lateness(latency, samples, concurrent, move || async move {
                    tokio::time::sleep(latency).await;
                })
                .await;
                let mock = Arc::new(MockProvider::new("m", "tiny", None, latency));
                let request = Arc::new(ProviderRequest::new("req_1", "a prompt", 8));
                let precise = lateness(latency, samples, concurrent, move || {
                    let mock = mock.clone();
                    let request = request.clone();
                    async move {
                        mock.infer(&request).await.unwrap();
                    }
                })
                .await;
                println!(
                    "{ms:>3} ms x{concurrent:<2} plain sleep: {}\n{ms:>3} ms x{concurrent:<2} mock:        {}",
                    summary(&plain),
                    summary(&precise)
                );
            }
        }
    });
}
