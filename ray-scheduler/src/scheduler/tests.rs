//! Tests of the async shell with paused time.

use std::time::Duration;

use ray_core::wire::Lane;
use tokio::time::Instant;

use super::*;

fn scheduler(concurrency: u32, max_queue: u32) -> Scheduler {
    Scheduler::new(SchedulerSettings {
        concurrency,
        max_queue,
        max_queued_tokens: 10_000,
        max_inflight_tokens: 10_000,
        affinity_lookahead: 4,
        batch_window: Duration::ZERO,
        short_burst: 4,
        max_dedupe_waiters: 16,
        ..SchedulerSettings::default()
    })
}

fn spec(cost: u32) -> JobSpec {
    JobSpec {
        cost,
        lane: Lane::Draft,
        affinity: None,
        ..JobSpec::default()
    }
}

fn after(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

#[tokio::test(start_paused = true)]
async fn dropping_a_permit_starts_the_next_job() {
    let scheduler = scheduler(1, 4);
    let first = scheduler.admit(spec(10), after(1_000)).await.unwrap();
    let waiting = tokio::spawn({
        let s = scheduler.clone();
        async move { s.admit(spec(10), after(1_000)).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(scheduler.snapshot().depth(), 1);
    tokio::time::sleep(Duration::from_millis(30)).await;
    drop(first);
    let second = waiting.await.unwrap().unwrap();
    assert_eq!(second.waited(), Duration::from_millis(30));
    assert_eq!(scheduler.snapshot().depth(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_job_times_out_and_returns_its_place() {
    let scheduler = scheduler(1, 4);
    let _running = scheduler.admit(spec(10), after(10_000)).await.unwrap();
    let error = scheduler.admit(spec(250), after(500)).await.unwrap_err();
    assert!(matches!(error, AdmitError::Timeout { .. }));
    assert_eq!(error.code(), ErrorCode::RequestTimeout);
    let snapshot = scheduler.snapshot();
    assert_eq!((snapshot.depth(), snapshot.queued_tokens), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_admit_future_leaves_the_queue() {
    let scheduler = scheduler(1, 4);
    let running = scheduler.admit(spec(10), after(10_000)).await.unwrap();
    let waiting = tokio::spawn({
        let s = scheduler.clone();
        async move { s.admit(spec(10), after(10_000)).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(scheduler.snapshot().depth(), 1);
    waiting.abort();
    let _ = waiting.await;
    assert_eq!(scheduler.snapshot().depth(), 0);
    drop(running);
    let snapshot = scheduler.snapshot();
    assert_eq!((snapshot.in_flight, snapshot.in_flight_tokens), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_with_queue_full() {
    let scheduler = scheduler(1, 1);
    let _running = scheduler.admit(spec(10), after(10_000)).await.unwrap();
    let _waiting = tokio::spawn({
        let s = scheduler.clone();
        async move { s.admit(spec(10), after(10_000)).await }
    });
    tokio::task::yield_now().await;
    let error = scheduler.admit(spec(10), after(10_000)).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::QueueFull);
    let ray_error = RayError::from(error);
    assert_eq!(ray_error.retry_after_secs(), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_held_permit_is_handed_out_when_the_window_ends() {
    let scheduler = Scheduler::new(SchedulerSettings {
        concurrency: 1,
        batch_window: Duration::from_millis(10),
        ..SchedulerSettings::default()
    });
    let warm = JobSpec {
        cost: 10,
        lane: Lane::Draft,
        affinity: Some(1),
        ..JobSpec::default()
    };
    let cold = JobSpec {
        affinity: Some(2),
        ..warm
    };
    let first = scheduler.admit(warm, after(10_000)).await.unwrap();
    let waiting = tokio::spawn({
        let s = scheduler.clone();
        async move { s.admit(cold, after(10_000)).await }
    });
    tokio::task::yield_now().await;
    drop(first);
    let permit = waiting.await.unwrap().unwrap();
    assert_eq!(
        permit.waited(),
        Duration::from_millis(10),
        "held for the window"
    );
}

#[tokio::test(start_paused = true)]
async fn closing_for_shutdown_refuses_the_waiting_jobs_and_keeps_the_running_one() {
    let scheduler = std::sync::Arc::new(scheduler(1, 4));
    let running = scheduler.admit(spec(10), after(60_000)).await.unwrap();
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let scheduler = scheduler.clone();
            tokio::spawn(async move { scheduler.admit(spec(10), after(60_000)).await })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(scheduler.depth(), 2);
    scheduler.close_and_refuse_waiting();
    for waiting in waiting {
        assert_eq!(waiting.await.unwrap().unwrap_err(), AdmitError::Closed);
    }
    assert_eq!(scheduler.depth(), 0);
    let snapshot = scheduler.snapshot();
    assert_eq!(snapshot.in_flight, 1, "the running job keeps its permit");
    assert_eq!(
        snapshot.queued_tokens, 0,
        "the waiting jobs' tokens are given back"
    );
    assert_eq!(
        scheduler.admit(spec(1), after(10)).await.unwrap_err(),
        AdmitError::Closed
    );
    drop(running);
    assert_eq!(scheduler.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_closed_scheduler_refuses_new_work() {
    let scheduler = scheduler(1, 4);
    scheduler.close();
    assert_eq!(
        scheduler.admit(spec(1), after(10)).await.unwrap_err(),
        AdmitError::Closed
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiting_job_refused_to_make_fair_room_is_told_why() {
    use ray_core::wire::{Priority, PriorityClass};
    let scheduler = Scheduler::new(SchedulerSettings {
        concurrency: 1,
        max_queue: 64,
        max_queued_tokens: 10_000,
        max_inflight_tokens: 10_000,
        batch_window: Duration::ZERO,
        class_max_wait: [
            Duration::from_millis(1_000),
            Duration::from_millis(3_000),
            Duration::from_millis(6_000),
        ],
        ..SchedulerSettings::default()
    });
    let from = |sender: u64| JobSpec {
        priority: Priority::of(PriorityClass::Interactive),
        sender,
        ..spec(10)
    };
    // A first job measures the service time: 100 ms.
    let first = scheduler.admit(from(1), after(60_000)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(first);
    // Sender 1 holds the permit and fills the queue up to its bound.
    let _running = scheduler.admit(from(1), after(60_000)).await.unwrap();
    let mut waiting = Vec::new();
    loop {
        let task = tokio::spawn({
            let scheduler = scheduler.clone();
            async move { scheduler.admit(from(1), after(60_000)).await }
        });
        tokio::task::yield_now().await;
        if task.is_finished() {
            let refused = task.await.unwrap().unwrap_err();
            assert!(matches!(
                refused,
                AdmitError::Rejected(Reject::WaitExceedsDeadline { .. })
            ));
            break;
        }
        waiting.push(task);
        assert!(waiting.len() < 64, "the flood is bounded");
    }
    // Sender 2's request is admitted; the flood's youngest waiting job is refused, with the
    // reason rather than as a closed scheduler.
    let single = tokio::spawn({
        let scheduler = scheduler.clone();
        async move { scheduler.admit(from(2), after(60_000)).await }
    });
    tokio::task::yield_now().await;
    let youngest = waiting.pop().unwrap();
    let refused = youngest.await.unwrap().unwrap_err();
    assert!(
        matches!(
            refused,
            AdmitError::Rejected(Reject::WaitExceedsDeadline { .. })
        ),
        "{refused:?}"
    );
    assert!(!single.is_finished(), "it waits for the permit, admitted");
    single.abort();
    for task in waiting {
        task.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn jobs_admitted_before_the_first_estimate_that_cannot_start_in_time_are_refused() {
    let scheduler = Scheduler::new(SchedulerSettings {
        class_max_wait: [
            Duration::from_millis(200),
            Duration::from_millis(400),
            Duration::from_millis(800),
        ],
        ..scheduler(1, 16).settings()
    });
    let first = scheduler.admit(spec(10), after(10_000)).await.unwrap();
    // Ten more before anything was measured: all admitted.
    let mut waiting = Vec::new();
    for _ in 0..10 {
        let s = scheduler.clone();
        waiting.push(tokio::spawn(async move {
            s.admit(spec(10), after(10_000)).await
        }));
    }
    tokio::task::yield_now().await;
    assert_eq!(scheduler.snapshot().depth(), 10);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // 50 ms a job, an interactive bound of 200 ms: the four that start by then (at 50, 100,
    // 150 and 200 ms) stay; the six others are told now.
    drop(first);
    let (mut ran, mut refused) = (0, 0);
    for task in waiting {
        match task.await.unwrap() {
            Ok(permit) => {
                assert!(permit.waited() <= Duration::from_millis(200), "{permit:?}");
                ran += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(permit);
            }
            Err(error) => {
                assert_eq!(error.code(), ErrorCode::QueueWaitExceedsDeadline, "{error}");
                refused += 1;
            }
        }
    }
    assert_eq!((ran, refused), (4, 6));
}
