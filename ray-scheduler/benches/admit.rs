//! Admission benchmarks: the cost of one admit + release with nothing else running, and with
//! 64 tasks competing for 2 permits on a 2-thread runtime.
//!
//! Run with `cargo bench -p ray-scheduler --bench admit`.

use std::time::Duration;

use criterion::{Criterion, criterion_main};
use ray_core::wire::Lane;
use std::sync::Arc;

use ray_scheduler::{Flights, JobSpec, Scheduler, SchedulerSettings, SchedulerState};

fn settings(concurrency: u32) -> SchedulerSettings {
    SchedulerSettings {
        concurrency,
        max_queue: 512,
        max_queued_tokens: 262_144,
        max_inflight_tokens: 65_536,
        affinity_lookahead: 8,
        batch_window: Duration::ZERO,
        ..SchedulerSettings::default()
    }
}

const SPEC: JobSpec = JobSpec::new(300, Lane::Draft, Some(7));

fn uncontended(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let scheduler = Scheduler::new(settings(2));
    c.bench_function("admit_release_uncontended", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                let permit = scheduler.admit(SPEC, deadline).await.expect("admitted");
                drop(permit);
            })
        })
    });

    let mut state = SchedulerState::<()>::new(settings(2));
    let now = std::time::Instant::now();
    let mut id = 0;
    c.bench_function("state_submit_next_release", |b| {
        b.iter(|| {
            id += 1;
            state.submit(id, SPEC, now, None).expect("admitted");
            let assignment = state.next(now).expect("started");
            state.release(assignment.slot, assignment.cost, SPEC.affinity, now);
        })
    });
}

fn contended(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    let scheduler = Scheduler::new(settings(2));
    let mut group = c.benchmark_group("admit_release_contended");
    group.throughput(criterion::Throughput::Elements(64 * 16));
    group.bench_function("64_tasks_x16_on_2_threads", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut tasks = Vec::with_capacity(64);
                for _ in 0..64 {
                    let scheduler = scheduler.clone();
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..16 {
                            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                            let permit = scheduler.admit(SPEC, deadline).await.expect("admitted");
                            tokio::task::yield_now().await;
                            drop(permit);
                        }
                    }));
                }
                for task in tasks {
                    task.await.expect("task");
                }
            })
        })
    });
    group.finish();
}

fn dedupe(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let dedupe = Arc::new(Flights::<u128, (), u64>::new(256));
    c.bench_function("dedupe_leader_uncontended", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut joined = dedupe.join(Some(42)).expect("joined");
                if let Some(publisher) = joined.publisher.take() {
                    publisher.finish(1);
                }
                joined.subscription.outcome().await.expect("finished")
            })
        })
    });
}

/// Runs every benchmark here (written out: `criterion_group!` generates an undocumented
/// `pub fn`, which the workspace's `missing_docs` lint refuses).
fn benches() {
    let mut criterion = Criterion::default().configure_from_args();
    uncontended(&mut criterion);
    contended(&mut criterion);
    dedupe(&mut criterion);
}

criterion_main!(benches);
