//! The batch-window timer under real threads: permits are released on several worker threads
//! while the timer task decides whether to keep running, and no held permit may be left
//! waiting for a wake-up that never comes.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use ray_core::wire::Lane;
use ray_scheduler::{AdmitError, JobSpec, Scheduler, SchedulerSettings};
use tokio::time::Instant;

/// Far longer than any wait the batch window can cause, so a job that reaches it was stranded.
const DEADLINE: Duration = Duration::from_secs(3);

fn settings() -> SchedulerSettings {
    SchedulerSettings {
        concurrency: 1,
        max_queue: 64,
        max_queued_tokens: 100_000,
        max_inflight_tokens: 100_000,
        affinity_lookahead: 4,
        batch_window: Duration::from_millis(1),
        ..SchedulerSettings::default()
    }
}

fn spec(family: u64) -> JobSpec {
    JobSpec {
        cost: 10,
        lane: Lane::Draft,
        affinity: Some(family),
        ..JobSpec::default()
    }
}

#[test]
fn every_job_is_admitted_while_permits_are_released_on_many_threads() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        for concurrency in [1, 2] {
            let scheduler = Arc::new(Scheduler::new(SchedulerSettings {
                concurrency,
                ..settings()
            }));
            // Rounds of jobs of different families: each release while others wait holds
            // the permit for a batch window, and the timer task that ends the window races
            // with releases and submissions on the other worker threads.
            for round in 0..300u64 {
                let jobs = 4 + round % 3;
                let mut tasks = Vec::new();
                for job in 0..jobs {
                    let scheduler = scheduler.clone();
                    tasks.push(tokio::spawn(async move {
                        let permit = scheduler
                            .admit(spec(round * 8 + job), Instant::now() + DEADLINE)
                            .await?;
                        // The first jobs keep their permits a moment for the rest to queue
                        // up, so there is contention; then every release happens on
                        // whichever worker runs the task, at once or after a yield.
                        let linger = Instant::now() + Duration::from_millis(2);
                        while job < u64::from(concurrency)
                            && scheduler.snapshot().depth() == 0
                            && Instant::now() < linger
                        {
                            tokio::task::yield_now().await;
                        }
                        if job % 2 == 0 {
                            tokio::task::yield_now().await;
                        }
                        drop(permit);
                        Ok::<(), AdmitError>(())
                    }));
                }
                for task in tasks {
                    if let Err(error) = task.await.unwrap() {
                        panic!(
                            "concurrency {concurrency}, round {round}: a job was stranded: {error}"
                        );
                    }
                }
            }
            let snapshot = scheduler.snapshot();
            assert_eq!((snapshot.depth(), snapshot.in_flight), (0, 0));
            assert!(
                snapshot.counters.holds > 0,
                "the batch window was exercised"
            );
        }
    });
}

#[test]
fn permits_released_outside_the_runtime_still_end_their_batch_window() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let scheduler = Arc::new(Scheduler::new(settings()));
        for round in 0..20u64 {
            // One job runs; two of other families wait behind it.
            let first = scheduler
                .admit(spec(round * 3), Instant::now() + DEADLINE)
                .await
                .unwrap();
            let waiting: Vec<_> = (1..3u64)
                .map(|job| {
                    let scheduler = scheduler.clone();
                    tokio::spawn(async move {
                        let permit = scheduler
                            .admit(spec(round * 3 + job), Instant::now() + DEADLINE)
                            .await?;
                        // Hand the permit to a plain thread, as an embedder finishing the work
                        // off the runtime would, and release it there.
                        std::thread::spawn(move || drop(permit)).join().unwrap();
                        Ok::<(), AdmitError>(())
                    })
                })
                .collect();
            while scheduler.snapshot().depth() < 2 {
                tokio::task::yield_now().await;
            }
            // Released off the runtime while the others wait: the permit is held for the
            // batch window, and something must end that window.
            std::thread::spawn(move || drop(first)).join().unwrap();
            for task in waiting {
                if let Err(error) = task.await.unwrap() {
                    panic!("round {round}: a job was stranded: {error}");
                }
            }
        }
    });
}
