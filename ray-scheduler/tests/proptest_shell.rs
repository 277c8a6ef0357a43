//! Property tests of the async scheduler with paused tokio time: random jobs that wait, run,
//! time out or are abandoned mid-wait. Permits held never exceed `concurrency`, token budgets
//! hold, and afterwards every counter is back at zero: no leaked permit, place or token.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use ray_core::wire::Lane;
use ray_scheduler::{AdmitError, Flights, JobSpec, Joined, Scheduler, SchedulerSettings};
use tokio::time::Instant;

#[derive(Debug, Clone)]
struct Job {
    start_after_ms: u64,
    cost: u32,
    short: bool,
    family: u8,
    hold_ms: u64,
    deadline_ms: u64,
    /// Abandon the job (drop its future) this long after it starts waiting, if it still waits.
    abandon_after_ms: Option<u64>,
}

fn job() -> impl Strategy<Value = Job> {
    (
        0u64..200,
        1u32..500,
        any::<bool>(),
        0u8..3,
        0u64..80,
        10u64..400,
        prop::option::weighted(0.2, 0u64..150),
    )
        .prop_map(
            |(start_after_ms, cost, short, family, hold_ms, deadline_ms, abandon_after_ms)| Job {
                start_after_ms,
                cost,
                short,
                family,
                hold_ms,
                deadline_ms,
                abandon_after_ms,
            },
        )
}

#[derive(Debug, Default)]
struct Outcomes {
    ran: AtomicU32,
    refused: AtomicU32,
    timed_out: AtomicU32,
    abandoned: AtomicU32,
}

fn run_case(settings: SchedulerSettings, jobs: Vec<Job>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let scheduler = Scheduler::new(settings.clone());
        let holding = Arc::new(AtomicU32::new(0));
        let holding_tokens = Arc::new(AtomicU32::new(0));
        let max_holding = Arc::new(AtomicU32::new(0));
        let outcomes = Arc::new(Outcomes::default());
        // Tasks currently inside `admit`. The queue may never hold more: a job that timed out or
        // was abandoned must give its place back at once, not when it would have been served.
        let waiting = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for job in jobs {
            let scheduler = scheduler.clone();
            let holding = holding.clone();
            let holding_tokens = holding_tokens.clone();
            let max_holding = max_holding.clone();
            let outcomes = outcomes.clone();
            let settings = settings.clone();
            let waiting = waiting.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(job.start_after_ms)).await;
                let spec = JobSpec {
                    cost: job.cost,
                    lane: if job.short { Lane::Short } else { Lane::Draft },
                    affinity: Some(u64::from(job.family)),
                    ..JobSpec::default()
                };
                let deadline = Instant::now() + Duration::from_millis(job.deadline_ms);
                let admit = scheduler.admit(spec, deadline);
                waiting.fetch_add(1, Ordering::SeqCst);
                let check_places = |scheduler: &Scheduler| {
                    let left = waiting.fetch_sub(1, Ordering::SeqCst) - 1;
                    let depth = scheduler.snapshot().depth();
                    assert!(
                        depth <= left,
                        "{depth} queued but only {left} callers still wait"
                    );
                };
                let result = match job.abandon_after_ms {
                    Some(ms) => {
                        match tokio::time::timeout(Duration::from_millis(ms), admit).await {
                            Ok(result) => result,
                            Err(_) => {
                                check_places(&scheduler);
                                outcomes.abandoned.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                    None => admit.await,
                };
                check_places(&scheduler);
                match result {
                    Ok(permit) => {
                        let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                        let tokens =
                            holding_tokens.fetch_add(job.cost, Ordering::SeqCst) + job.cost;
                        max_holding.fetch_max(now, Ordering::SeqCst);
                        assert!(
                            tokens <= settings.max_inflight_tokens,
                            "in-flight tokens {tokens}"
                        );
                        tokio::time::sleep(Duration::from_millis(job.hold_ms)).await;
                        holding.fetch_sub(1, Ordering::SeqCst);
                        holding_tokens.fetch_sub(job.cost, Ordering::SeqCst);
                        drop(permit);
                        outcomes.ran.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(AdmitError::Rejected(_)) => {
                        outcomes.refused.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(AdmitError::Timeout { waited }) => {
                        assert!(waited >= Duration::from_millis(job.deadline_ms));
                        outcomes.timed_out.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(other) => panic!("unexpected {other}"),
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // Let any batch-window timer fire and settle.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let snapshot = scheduler.snapshot();
        prop_assert!(max_holding.load(Ordering::SeqCst) <= settings.concurrency);
        prop_assert_eq!(snapshot.in_flight, 0);
        prop_assert_eq!(snapshot.in_flight_tokens, 0);
        prop_assert_eq!(snapshot.depth(), 0);
        prop_assert_eq!(snapshot.queued_tokens, 0);
        // After all that, a fresh job still gets a permit at once.
        let permit = scheduler
            .admit(
                JobSpec {
                    cost: 1,
                    lane: Lane::Draft,
                    affinity: None,
                    ..JobSpec::default()
                },
                Instant::now() + Duration::from_millis(1),
            )
            .await;
        prop_assert!(permit.is_ok());
        Ok(())
    })
}

/// `default`, or `PROPTEST_CASES` for a longer run (docs/testing.md).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(300),
        ..ProptestConfig::default()
    })]

    #[test]
    fn permits_and_tokens_are_never_leaked(
        concurrency in 1u32..4,
        max_queue in 1u32..10,
        window in 0u64..15,
        jobs in prop::collection::vec(job(), 1..40),
    ) {
        let settings = SchedulerSettings {
            concurrency,
            max_queue,
            max_queued_tokens: 2_000,
            max_inflight_tokens: 1_000,
            affinity_lookahead: 3,
            batch_window: Duration::from_millis(window),
            short_burst: 2,
            max_dedupe_waiters: 8,
            ..SchedulerSettings::default()
        };
        run_case(settings, jobs)?;
    }

    #[test]
    fn dedupe_cancels_only_when_every_waiter_left(
        waiters in prop::collection::vec((0u64..50, prop::option::of(0u64..120)), 1..12),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let dedupe = Arc::new(Flights::<u8, (), u32>::new(64));
            let executions = Arc::new(AtomicU32::new(0));
            let completions = Arc::new(AtomicU32::new(0));
            let mut tasks = Vec::new();
            for (join_after, leave_after) in waiters.clone() {
                let dedupe = dedupe.clone();
                let executions = executions.clone();
                let completions = completions.clone();
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(join_after)).await;
                    let Joined { mut subscription, publisher } = dedupe.join(Some(1)).unwrap();
                    if let Some(publisher) = publisher {
                        let driver = tokio::spawn(async move {
                            executions.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            completions.fetch_add(1, Ordering::SeqCst);
                            publisher.finish(7);
                        });
                        subscription.set_task(driver.abort_handle());
                    }
                    let run = async move { subscription.outcome().await };
                    match leave_after {
                        Some(ms) => tokio::time::timeout(Duration::from_millis(ms), run)
                            .await
                            .ok()
                            .map(|r| r.unwrap()),
                        None => Some(run.await.unwrap()),
                    }
                }));
            }
            for task in tasks {
                if let Some(value) = task.await.unwrap() {
                    prop_assert_eq!(value, 7);
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            prop_assert_eq!(dedupe.flights(), 0, "no flight entry leaks");
            prop_assert_eq!(dedupe.followers(), 0);
            // Every execution that started either completed or was cancelled because all of
            // its waiters left; never more executions than waiters.
            prop_assert!(executions.load(Ordering::SeqCst) as usize <= waiters.len());
            prop_assert!(completions.load(Ordering::SeqCst) <= executions.load(Ordering::SeqCst));
            Ok(())
        })?;
    }
}
