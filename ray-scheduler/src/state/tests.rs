//! Unit tests of the decision core.

use std::time::{Duration, Instant};

use ray_core::wire::{Lane, Priority, PriorityClass};

use super::*;

fn settings() -> SchedulerSettings {
    SchedulerSettings {
        concurrency: 1,
        max_queue: 8,
        max_queued_tokens: 1_000,
        max_inflight_tokens: 500,
        affinity_lookahead: 4,
        batch_window: Duration::ZERO,
        short_burst: 4,
        max_dedupe_waiters: 16,
        ..SchedulerSettings::default()
    }
}

fn job(cost: u32, lane: Lane, affinity: Option<u64>) -> JobSpec {
    JobSpec {
        cost,
        lane,
        affinity,
        ..JobSpec::default()
    }
}

fn all_next(state: &mut SchedulerState<()>, now: Instant) -> Vec<u64> {
    std::iter::from_fn(|| state.next(now))
        .map(|a| a.id)
        .collect()
}

#[test]
fn a_job_runs_at_once_when_a_permit_is_free() {
    let now = Instant::now();
    let mut state = SchedulerState::<()>::new(settings());
    state
        .submit(1, job(100, Lane::Draft, None), now, None)
        .unwrap();
    let assignment = state.next(now).unwrap();
    assert_eq!((assignment.id, assignment.slot), (1, 0));
    assert_eq!(state.snapshot(now).in_flight_tokens, 100);
    assert_eq!(state.snapshot(now).queued_tokens, 0);
}

#[test]
fn a_job_larger_than_a_budget_is_refused_outright() {
    let now = Instant::now();
    let mut state = SchedulerState::<()>::new(settings());
    let reject = state
        .submit(1, job(501, Lane::Draft, None), now, None)
        .unwrap_err();
    assert_eq!(
        reject,
        Reject::TokenBudget {
            cost: 501,
            budget: 500,
            which: BudgetKind::Inflight
        }
    );
    assert_eq!(state.depth(), 0);
}

#[test]
fn the_queue_is_bounded_by_depth_and_tokens() {
    let now = Instant::now();
    let mut state = SchedulerState::<()>::new(settings());
    for id in 0..8 {
        state
            .submit(id, job(10, Lane::Draft, None), now, None)
            .unwrap();
    }
    assert_eq!(
        state.submit(8, job(10, Lane::Draft, None), now, None),
        Err(Reject::QueueDepth { depth: 8 })
    );
    let mut state = SchedulerState::<()>::new(settings());
    state
        .submit(1, job(400, Lane::Draft, None), now, None)
        .unwrap();
    state
        .submit(2, job(400, Lane::Draft, None), now, None)
        .unwrap();
    assert!(matches!(
        state.submit(3, job(400, Lane::Draft, None), now, None),
        Err(Reject::QueuedTokens { .. })
    ));
}

#[test]
fn short_jobs_go_first_but_drafts_get_a_turn() {
    let now = Instant::now();
    let mut state = SchedulerState::<()>::new(settings());
    // Hold the permit so everything queues.
    state
        .submit(0, job(10, Lane::Draft, None), now, None)
        .unwrap();
    let running = state.next(now).unwrap();
    state
        .submit(100, job(10, Lane::Draft, None), now, None)
        .unwrap();
    for id in 1..=6 {
        state
            .submit(id, job(10, Lane::Short, None), now, None)
            .unwrap();
    }
    state.release(running.slot, running.cost, None, now);
    let mut order = Vec::new();
    while let Some(a) = state.next(now) {
        order.push(a.id);
        state.release(a.slot, a.cost, None, now);
    }
    assert_eq!(order, vec![1, 2, 3, 4, 100, 5, 6]);
}

#[test]
fn a_warm_family_overtakes_within_the_lookahead() {
    let now = Instant::now();
    let mut state = SchedulerState::<()>::new(settings());
    state
        .submit(0, job(10, Lane::Draft, Some(7)), now, None)
        .unwrap();
    let running = state.next(now).unwrap();
    state
        .submit(1, job(10, Lane::Draft, Some(1)), now, None)
        .unwrap();
    state
        .submit(2, job(10, Lane::Draft, Some(2)), now, None)
        .unwrap();
    state
        .submit(3, job(10, Lane::Draft, Some(7)), now, None)
        .unwrap();
    state.release(running.slot, running.cost, Some(7), now);
    assert_eq!(state.next(now).unwrap().id, 3, "the warm family goes first");
    assert_eq!(state.snapshot(now).counters.affinity_hits, 1);
}

#[test]
fn no_job_is_overtaken_more_than_the_lookahead() {
    let now = Instant::now();
    let mut state = SchedulerState::<()>::new(SchedulerSettings {
        affinity_lookahead: 2,
        max_queue: 16,
        ..settings()
    });
    state
        .submit(0, job(10, Lane::Draft, Some(7)), now, None)
        .unwrap();
    let mut running = state.next(now).unwrap();
    state
        .submit(1, job(10, Lane::Draft, Some(1)), now, None)
        .unwrap();
    for id in 2..10 {
        state
            .submit(id, job(10, Lane::Draft, Some(7)), now, None)
            .unwrap();
    }
    let mut order = Vec::new();
    loop {
        state.release(running.slot, running.cost, Some(7), now);
        match state.next(now) {
            Some(next) => {
                order.push(next.id);
                running = next;
            }
            None => break,
        }
    }
    let position = order.iter().position(|&id| id == 1).unwrap();
    assert_eq!(position, 2, "job 1 was overtaken exactly twice: {order:?}");
}

#[test]
fn a_job_that_does_not_fit_the_token_budget_waits() {
    let now = Instant::now();
    let mut state = SchedulerState::<()>::new(SchedulerSettings {
        concurrency: 2,
        ..settings()
    });
    state
        .submit(1, job(400, Lane::Draft, None), now, None)
        .unwrap();
    state
        .submit(2, job(200, Lane::Draft, None), now, None)
        .unwrap();
    assert_eq!(all_next(&mut state, now), vec![1]);
    assert_eq!(
        state.in_flight(),
        1,
        "job 2 waits for tokens, not for a permit"
    );
    state.release(0, 400, None, now);
    assert_eq!(all_next(&mut state, now), vec![2]);
}

#[test]
fn cancel_returns_the_place_and_tokens() {
    let now = Instant::now();
    let mut state = SchedulerState::<()>::new(settings());
    state
        .submit(0, job(10, Lane::Draft, None), now, None)
        .unwrap();
    let _running = state.next(now).unwrap();
    state
        .submit(1, job(300, Lane::Draft, None), now, None)
        .unwrap();
    assert_eq!(state.snapshot(now).queued_tokens, 300);
    assert!(state.cancel(1).is_some());
    assert!(state.cancel(1).is_none());
    let snapshot = state.snapshot(now);
    assert_eq!((snapshot.queued_tokens, snapshot.depth()), (0, 0));
}

#[test]
fn the_batch_window_holds_a_freed_permit_only_under_contention() {
    let now = Instant::now();
    let window = Duration::from_millis(10);
    let mut state = SchedulerState::<()>::new(SchedulerSettings {
        batch_window: window,
        ..settings()
    });
    // No contention: nothing is held.
    state
        .submit(0, job(10, Lane::Draft, Some(7)), now, None)
        .unwrap();
    let a = state.next(now).unwrap();
    state.release(a.slot, a.cost, Some(7), now);
    assert_eq!(state.next_wakeup(), None);
    state
        .submit(1, job(10, Lane::Draft, Some(2)), now, None)
        .unwrap();
    assert_eq!(
        state.next(now).unwrap().id,
        1,
        "an idle permit is never held"
    );

    // Contention with no warm match: the permit waits for family 2 until the window ends.
    state
        .submit(2, job(10, Lane::Draft, Some(3)), now, None)
        .unwrap();
    state.release(0, 10, Some(2), now);
    assert!(state.next(now).is_none());
    assert_eq!(state.next_wakeup(), Some(now + window));
    let later = now + Duration::from_millis(4);
    state
        .submit(3, job(10, Lane::Draft, Some(2)), later, None)
        .unwrap();
    assert_eq!(
        state.next(later).unwrap().id,
        3,
        "a warm arrival takes the held permit"
    );
    state.release(0, 10, Some(2), later);
    let after = later + window;
    assert_eq!(state.next(after).unwrap().id, 2, "the window ended");
}

fn prioritised(class: PriorityClass, sender: u64) -> JobSpec {
    JobSpec {
        priority: Priority::of(class),
        sender,
        ..JobSpec::new(10, Lane::Short, None)
    }
}

/// Two permits, one reserved, and a measured service time of 100 ms.
fn measured() -> (SchedulerState<()>, Instant) {
    measured_with(SchedulerSettings {
        concurrency: 2,
        reserved_interactive: 1,
        ..settings()
    })
}

/// A scheduler with `settings` that has measured one job of 100 ms.
fn measured_with(settings: SchedulerSettings) -> (SchedulerState<()>, Instant) {
    let mut state = SchedulerState::<()>::new(settings);
    let now = Instant::now();
    state
        .submit(0, job(10, Lane::Short, None), now, None)
        .unwrap();
    let first = state.next(now).unwrap();
    let now = now + Duration::from_millis(100);
    state.release(first.slot, first.cost, None, now);
    (state, now)
}

#[test]
fn interactive_work_goes_before_a_flood_of_batch_work_and_keeps_its_permit() {
    let (mut state, now) = measured();
    for id in 1..=6 {
        state
            .submit(id, prioritised(PriorityClass::Batch, 1), now, None)
            .unwrap();
    }
    // Only one batch job runs: the other permit is reserved.
    assert_eq!(all_next(&mut state, now), vec![1]);
    assert_eq!(state.snapshot(now).lower_in_flight, 1);
    state
        .submit(7, prioritised(PriorityClass::Interactive, 2), now, None)
        .unwrap();
    assert_eq!(all_next(&mut state, now), vec![7]);
    let counters = state.snapshot(now).counters;
    assert_eq!(counters.started_by_class, [2, 1, 0]);
}

#[test]
fn a_job_that_cannot_start_in_time_is_refused_at_once_with_the_estimate() {
    let (mut state, now) = measured();
    // One batch permit, 100 ms a job, the first one running: a batch job due in 150 ms would
    // have to start within 50 ms to finish in time, and the permit frees in 100 ms at best (it
    // would go first, its latest start being the earliest).
    for id in 1..=5 {
        state
            .submit(id, prioritised(PriorityClass::Batch, 1), now, None)
            .unwrap();
    }
    all_next(&mut state, now);
    let deadline = now + Duration::from_millis(150);
    let reject = state
        .submit_until(
            9,
            prioritised(PriorityClass::Batch, 2),
            now,
            Some(deadline),
            None,
        )
        .unwrap_err();
    let Reject::WaitExceedsDeadline {
        class,
        estimated_wait,
        allowed,
        retry_after,
    } = reject
    else {
        panic!("{reject:?}");
    };
    assert_eq!(class, PriorityClass::Batch);
    assert_eq!(estimated_wait, Duration::from_millis(100));
    // 150 ms to the deadline less one 100 ms service time.
    assert_eq!(allowed, Duration::from_millis(50));
    assert_eq!(retry_after, Duration::from_millis(100));
    assert_eq!(state.depth(), 4, "the refused job took no place");
    assert_eq!(
        state.snapshot(now).counters.rejected_wait_by_class,
        [0, 1, 0]
    );
    // An interactive request still fits: it has the reserved permit.
    state
        .submit_until(
            10,
            prioritised(PriorityClass::Interactive, 3),
            now,
            Some(deadline),
            None,
        )
        .unwrap();
    let waits = state.estimated_waits(now).unwrap();
    assert!(waits[PriorityClass::Batch.index()] >= Duration::from_millis(400));
}

#[test]
fn a_waiting_job_near_its_bound_goes_before_the_preferred_class() {
    let mut state = SchedulerState::<()>::new(SchedulerSettings {
        class_max_wait: [
            Duration::from_millis(1_000),
            Duration::from_millis(300),
            Duration::from_millis(300),
        ],
        ..settings()
    });
    let mut now = Instant::now();
    let step = Duration::from_millis(100);
    state
        .submit(0, job(10, Lane::Short, None), now, None)
        .unwrap();
    let first = state.next(now).unwrap();
    now += step;
    state.release(first.slot, first.cost, None, now);

    // Job 1 runs; batch job 2 may wait 300 ms; interactive jobs 3 to 5 are preferred.
    state
        .submit(1, prioritised(PriorityClass::Interactive, 1), now, None)
        .unwrap();
    state
        .submit(2, prioritised(PriorityClass::Batch, 2), now, None)
        .unwrap();
    for id in 3..=5 {
        state
            .submit(id, prioritised(PriorityClass::Interactive, 1), now, None)
            .unwrap();
    }
    let mut order = all_next(&mut state, now);
    let mut forced = Vec::new();
    while state.in_flight() > 0 {
        now += step;
        state.release(0, 10, None, now);
        while let Some(a) = state.next(now) {
            order.push(a.id);
            if a.forced {
                forced.push(a.id);
            }
        }
    }
    // Jobs 3 and 4 go first; then job 5 would push job 2 past its bound, so job 2 goes.
    assert_eq!(order, vec![1, 3, 4, 2, 5]);
    assert_eq!(forced, vec![2]);
    assert_eq!(state.snapshot(now).counters.aged_starts, 1);
}

/// One permit, 100 ms a job, bounds 1 s / 3 s / 6 s, measured.
fn one_permit() -> (SchedulerState<()>, Instant) {
    measured_with(SchedulerSettings {
        concurrency: 1,
        max_queue: 64,
        class_max_wait: [
            Duration::from_millis(1_000),
            Duration::from_millis(3_000),
            Duration::from_millis(6_000),
        ],
        ..settings()
    })
}

/// Runs the permit for `steps` of 50 ms, each job holding it 100 ms, while sender 1 submits one
/// job of `class` every step (twice what the permit serves). Returns the next job id and the
/// job that holds the permit at the end.
fn flood(
    state: &mut SchedulerState<()>,
    now: &mut Instant,
    class: PriorityClass,
    steps: u32,
    mut id: u64,
) -> (u64, Option<Assignment<()>>) {
    let mut running: Option<(Assignment<()>, Instant)> = None;
    for _ in 0..steps {
        let _ = state.submit(id, prioritised(class, 1), *now, None);
        id += 1;
        if let Some((job, ends)) = running.take() {
            if ends <= *now {
                state.release(job.slot, job.cost, None, *now);
            } else {
                running = Some((job, ends));
            }
        }
        if running.is_none()
            && let Some(job) = state.next(*now)
        {
            running = Some((job, *now + Duration::from_millis(100)));
        }
        *now += Duration::from_millis(50);
    }
    (id, running.map(|(job, _)| job))
}

#[test]
fn a_flood_at_its_bound_gives_way_to_another_senders_single_request() {
    let (mut state, mut now) = one_permit();
    let (id, running) = flood(&mut state, &mut now, PriorityClass::Interactive, 60, 1);
    let refused = (0..3).any(|k| {
        state
            .submit(
                id + k,
                prioritised(PriorityClass::Interactive, 1),
                now,
                None,
            )
            .is_err()
    });
    assert!(refused, "the flood is at its bound");
    assert!(
        state.take_evicted().is_empty(),
        "one sender never evicts itself"
    );
    // Another sender's single request is admitted: the flood's youngest job makes room.
    let depth = state.depth();
    state
        .submit(
            10_000,
            prioritised(PriorityClass::Interactive, 2),
            now,
            None,
        )
        .unwrap();
    let evicted = state.take_evicted();
    assert_eq!(evicted.len(), 1, "{evicted:?}");
    assert!(matches!(
        evicted[0].reject,
        Reject::WaitExceedsDeadline {
            class: PriorityClass::Interactive,
            ..
        }
    ));
    assert_eq!(state.depth(), depth, "one in, one out");
    // It starts within its bound (the flood's older jobs, due first, may go before it).
    let running = running.unwrap();
    state.release(running.slot, running.cost, None, now);
    let mut at = now;
    loop {
        let started = state.next(at).expect("a job starts");
        if started.id == 10_000 {
            break;
        }
        at += Duration::from_millis(100);
        state.release(started.slot, started.cost, None, at);
    }
    assert!(at.duration_since(now) <= Duration::from_millis(1_000));
}

#[test]
fn a_batch_flood_at_its_bound_gives_way_to_an_interactive_request_on_one_permit() {
    let (mut state, mut now) = one_permit();
    let (id, _) = flood(&mut state, &mut now, PriorityClass::Batch, 120, 1);
    let refused = (0..3).any(|k| {
        state
            .submit(id + k, prioritised(PriorityClass::Batch, 1), now, None)
            .is_err()
    });
    assert!(
        refused,
        "the batch flood was refused once the queue was full"
    );
    assert!(state.take_evicted().is_empty());
    // The flood left room for an interactive request, from the same sender even: it is
    // admitted, and it starts within its bound.
    state
        .submit(
            10_000,
            prioritised(PriorityClass::Interactive, 1),
            now,
            None,
        )
        .unwrap();
    let counters = state.snapshot(now).counters;
    assert!(counters.rejected_wait_by_class[1] > 0, "{counters:?}");
}

#[test]
fn a_full_queue_gives_a_place_to_another_senders_request() {
    // No estimate yet: only the queue's depth limits it.
    let mut state = SchedulerState::<()>::new(SchedulerSettings {
        max_queue: 4,
        ..settings()
    });
    let now = Instant::now();
    state
        .submit(0, prioritised(PriorityClass::Interactive, 1), now, None)
        .unwrap();
    state.next(now).unwrap();
    for id in 1..=4 {
        state
            .submit(id, prioritised(PriorityClass::Interactive, 1), now, None)
            .unwrap();
    }
    assert_eq!(
        state.submit(5, prioritised(PriorityClass::Interactive, 1), now, None),
        Err(Reject::QueueDepth { depth: 4 })
    );
    // Sender 2 gets the place of sender 1's youngest job; a third sender then gets another.
    state
        .submit(6, prioritised(PriorityClass::Interactive, 2), now, None)
        .unwrap();
    let evicted: Vec<u64> = state.take_evicted().into_iter().map(|e| e.id).collect();
    assert_eq!(evicted, vec![4]);
    assert_eq!(state.depth(), 4);
    state
        .submit(7, prioritised(PriorityClass::Interactive, 3), now, None)
        .unwrap();
    let evicted: Vec<u64> = state.take_evicted().into_iter().map(|e| e.id).collect();
    assert_eq!(evicted, vec![3]);
    // Sender 1 now has two waiting against one each: no sender is past its share by two.
    assert_eq!(
        state.submit(8, prioritised(PriorityClass::Interactive, 2), now, None),
        Err(Reject::QueueDepth { depth: 4 })
    );
    assert!(state.take_evicted().is_empty());
}

#[test]
fn jobs_admitted_before_any_estimate_are_admitted_again_by_the_first_one() {
    // One permit; batch may wait 1 s, less half of it kept for interactive requests.
    let mut state = SchedulerState::<()>::new(SchedulerSettings {
        max_queue: 32,
        class_max_wait: [
            Duration::from_secs(2),
            Duration::from_secs(1),
            Duration::from_secs(120),
        ],
        ..settings()
    });
    let t0 = Instant::now();
    // A flood before any job finished: nothing can be estimated, all twenty are admitted.
    for id in 0..20 {
        state
            .submit(id, prioritised(PriorityClass::Batch, 1), t0, None)
            .unwrap();
    }
    let first = state.next(t0).unwrap();
    assert_eq!(state.depth(), 19);
    // The first job took 100 ms: by that estimate the jobs waiting start 100 ms apart, so
    // the five that start by 500 ms stay and the fourteen others are refused now, not left to
    // wait up to 1.9 s against their 1 s bound.
    let now = t0 + Duration::from_millis(100);
    state.release(first.slot, first.cost, first.affinity, now);
    let evicted = state.take_evicted();
    let ids: Vec<u64> = evicted.iter().map(|e| e.id).collect();
    assert_eq!(ids, (6..20).collect::<Vec<_>>());
    assert_eq!(
        evicted[0].reject,
        Reject::WaitExceedsDeadline {
            class: PriorityClass::Batch,
            estimated_wait: Duration::from_millis(600),
            allowed: Duration::from_millis(500),
            retry_after: Duration::from_millis(500),
        }
    );
    let snapshot = state.snapshot(now);
    assert_eq!(snapshot.depth(), 5);
    assert_eq!(snapshot.queued_tokens, 50);
    assert_eq!(snapshot.counters.rejected_wait_by_class[1], 14);
    assert_eq!(state.tracked_senders(), 1);
    // The rest run in order, each within its bound.
    let mut now = now;
    for id in 1..=5 {
        let started = state.next(now).unwrap();
        assert_eq!(started.id, id);
        assert!(started.waited <= Duration::from_secs(1), "{started:?}");
        now += Duration::from_millis(100);
        state.release(started.slot, started.cost, started.affinity, now);
        assert!(state.take_evicted().is_empty());
    }
    assert_eq!(state.depth(), 0);
}
