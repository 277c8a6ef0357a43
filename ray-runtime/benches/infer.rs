//! The runtime's own cost per request, with the mock provider at zero latency: everything
//! Ray does around a backend call (plan, cache, dedupe, admission, response), without HTTP.
//!
//! Also the prompt shape on hostile input (one long word of hex letters), which must stay
//! linear in the input.
//!
//! Run with `cargo bench -p ray-runtime --bench infer`.

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::Criterion;
use ray_core::config::ConfigLoader;
use ray_core::wire::InferRequest;
use ray_runtime::Runtime;

fn runtime(extra: &str) -> Runtime {
    let json = format!(
        r#"{{"profile":"tiny","model":{{"adapter":{{"kind":"mock","latencyMs":0}}}},
            "scheduler":{{"concurrency":8}}{extra}}}"#
    );
    let config = ConfigLoader::new()
        .with_json("bench", json)
        .load()
        .expect("config")
        .config;
    Runtime::new(config).expect("runtime")
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let counter = AtomicU64::new(0);

    let uncached = runtime(r#","cache":{"enabled":false}"#);
    c.bench_function("infer_uncached_distinct_prompts", |b| {
        b.iter(|| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let request = InferRequest::new(format!("benchmark prompt number {n}"));
            tokio.block_on(uncached.infer(request)).expect("ok")
        })
    });

    let cached = runtime("");
    tokio
        .block_on(cached.infer(InferRequest::new("the same prompt")))
        .expect("warm the cache");
    c.bench_function("infer_cache_hit", |b| {
        b.iter(|| {
            tokio
                .block_on(cached.infer(InferRequest::new("the same prompt")))
                .expect("ok")
        })
    });

    c.bench_function("serialize_response", |b| {
        let response = tokio
            .block_on(uncached.infer(InferRequest::new("serialise me")))
            .expect("ok");
        b.iter(|| serde_json::to_vec(&response).expect("json").len())
    });

    for (name, input) in [
        ("input_shape_200k_of_a", "a".repeat(200_000)),
        ("input_shape_200k_of_abcdef", "abcdef".repeat(200_000 / 6)),
        ("input_shape_200k_of_1ag", "1ag".repeat(200_000 / 3)),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| ray_runtime::input_shape(std::hint::black_box(&input)).len())
        });
    }
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
