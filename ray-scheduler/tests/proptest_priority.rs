//! Property tests of priority, aging, reserved permits and fair share in the decision core.
//!
//! The scheduler is driven by a discrete-event model: every job holds its permit for exactly
//! the service time `S`, so permits turn over as estimated once `S` was measured. Under that
//! premise the core promises that no admitted job starts later than its class bound, that
//! `batch` and `background` jobs never hold the reserved permits, and that nothing leaks when
//! waiting jobs are cancelled. A model may also start cold, with nothing measured: jobs
//! admitted before the first job finished are then either refused when it does (as admission
//! would have refused them, had the estimate been known) or start within their bound (or, the
//! first of them, at once if its bound passed before anything could be measured).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use ray_core::wire::{Lane, Priority, PriorityClass};
use ray_scheduler::{JobSpec, Reject, SchedulerSettings, SchedulerState};

#[derive(Debug, Clone)]
enum Op {
    Submit {
        class: u8,
        level: u8,
        sender: u8,
        short: bool,
        family: u8,
        gap_ms: u64,
    },
    Cancel {
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..3, 0u8..10, 0u8..4, any::<bool>(), 0u8..3, 0u64..60).prop_map(
            |(class, level, sender, short, family, gap_ms)| Op::Submit {
                class,
                level,
                sender,
                short,
                family,
                gap_ms,
            }
        ),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
    ]
}

#[derive(Debug, Clone)]
struct Setup {
    settings: SchedulerSettings,
    service: Duration,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        1u32..5,
        0u32..4,
        1u32..6,
        0u64..30,
        1u32..5,
        20u64..120,
        1u64..8,
    )
        .prop_map(
            |(concurrency, reserved, lookahead, window, burst, service_ms, factor)| {
                let interactive = service_ms * factor;
                Setup {
                    settings: SchedulerSettings {
                        concurrency,
                        max_queue: 64,
                        max_queued_tokens: 1_000_000,
                        max_inflight_tokens: 100_000,
                        affinity_lookahead: lookahead,
                        batch_window: Duration::from_millis(window),
                        short_burst: burst,
                        max_dedupe_waiters: 8,
                        class_max_wait: [
                            Duration::from_millis(interactive),
                            Duration::from_millis(interactive * 3),
                            Duration::from_millis(interactive * 6),
                        ],
                        reserved_interactive: reserved.min(concurrency - 1),
                    },
                    service: Duration::from_millis(service_ms),
                }
            },
        )
}

struct Waiting {
    enqueued: Instant,
    bound: Duration,
}

struct Running {
    slot: u32,
    class: PriorityClass,
    ends: Instant,
}

struct Model {
    settings: SchedulerSettings,
    service: Duration,
    state: SchedulerState<()>,
    now: Instant,
    next_id: u64,
    waiting: BTreeMap<u64, Waiting>,
    running: BTreeMap<u64, Running>,
    admitted: u64,
    /// Whether a service time has been measured (a cold model starts without one).
    measured: bool,
    /// When a cold model measured its first service time.
    first_measured: Option<Instant>,
}

fn bound(settings: &SchedulerSettings, priority: Priority) -> Duration {
    settings.max_wait(priority.class) * (10 - u32::from(priority.level)) / 10
}

impl Model {
    /// A scheduler that has measured one job of exactly `service`.
    fn new(setup: Setup) -> Model {
        Model::starting(setup, false)
    }

    /// A scheduler that has measured one job of exactly `service`, or, `cold`, nothing yet.
    fn starting(setup: Setup, cold: bool) -> Model {
        let mut state = SchedulerState::new(setup.settings.clone());
        let mut now = Instant::now();
        if !cold {
            state
                .submit(0, JobSpec::new(1, Lane::Short, None), now, None)
                .unwrap();
            let first = state.next(now).unwrap();
            now += setup.service;
            state.release(first.slot, first.cost, first.affinity, now);
            assert_eq!(state.snapshot(now).service_estimate, Some(setup.service));
        }
        Model {
            measured: !cold,
            first_measured: None,
            settings: setup.settings,
            service: setup.service,
            state,
            now,
            next_id: 1,
            waiting: BTreeMap::new(),
            running: BTreeMap::new(),
            admitted: 0,
        }
    }

    fn drain(&mut self) {
        while let Some(assignment) = self.state.next(self.now) {
            let job = self.waiting.remove(&assignment.id).expect("a waiting job");
            let waited = self.now - job.enqueued;
            // A job that waited past its bound before anything could be measured starts when
            // the first service time is.
            let bound = match self.first_measured {
                Some(at) if job.enqueued < at => job.bound.max(at - job.enqueued),
                _ => job.bound,
            };
            assert!(
                waited <= bound,
                "a {} job waited {waited:?}, beyond its bound {:?}",
                assignment.priority,
                job.bound
            );
            assert!(!self.running.values().any(|r| r.slot == assignment.slot));
            self.running.insert(
                assignment.id,
                Running {
                    slot: assignment.slot,
                    class: assignment.priority.class,
                    ends: self.now + self.service,
                },
            );
            let lower = self
                .running
                .values()
                .filter(|r| r.class != PriorityClass::Interactive)
                .count() as u32;
            assert!(
                lower <= self.settings.concurrency - self.settings.reserved_interactive,
                "{lower} batch or background jobs hold permits, {} are reserved of {}",
                self.settings.reserved_interactive,
                self.settings.concurrency
            );
        }
    }

    /// Moves the clock to `until`, finishing every job whose service time ends on the way.
    fn advance(&mut self, until: Instant) {
        loop {
            let next_end = self
                .running
                .iter()
                .map(|(id, r)| (r.ends, *id))
                .min()
                .filter(|(ends, _)| *ends <= until);
            let next_wake = self.state.next_wakeup().filter(|at| *at <= until);
            match (next_end, next_wake) {
                (Some((ends, id)), wake) if wake.is_none_or(|w| ends <= w) => {
                    self.now = self.now.max(ends);
                    let job = self.running.remove(&id).unwrap();
                    self.state.release(job.slot, 1, None, self.now);
                    self.refused_on_release();
                }
                (_, Some(wake)) => self.now = self.now.max(wake),
                _ => break,
            }
            self.drain();
        }
        self.now = self.now.max(until);
        self.drain();
    }

    /// Waiting jobs refused by a release: only by the first one, which measures the service
    /// time, and only jobs admitted before it.
    fn refused_on_release(&mut self) {
        let first = !std::mem::replace(&mut self.measured, true);
        if first {
            self.first_measured = Some(self.now);
        }
        for evicted in self.state.take_evicted() {
            assert!(first, "a job was refused by a later release: {evicted:?}");
            assert!(self.waiting.remove(&evicted.id).is_some(), "{evicted:?}");
            assert!(
                matches!(evicted.reject, Reject::WaitExceedsDeadline { retry_after, .. }
                    if retry_after >= self.service),
                "{evicted:?}"
            );
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Submit {
                class,
                level,
                sender,
                short,
                family,
                gap_ms,
            } => {
                self.advance(self.now + Duration::from_millis(gap_ms));
                let priority = Priority {
                    class: PriorityClass::ALL[class as usize],
                    level,
                };
                let spec = JobSpec {
                    priority,
                    sender: u64::from(sender),
                    weight: u32::from(sender) + 1,
                    ..JobSpec::new(
                        1,
                        if short { Lane::Short } else { Lane::Draft },
                        Some(u64::from(family)),
                    )
                };
                let id = self.next_id;
                self.next_id += 1;
                match self.state.submit(id, spec, self.now, None) {
                    Ok(()) => {
                        self.admitted += 1;
                        // Jobs refused to make room for this one: waiting, of another sender,
                        // of this class or lower.
                        for evicted in self.state.take_evicted() {
                            assert!(self.waiting.remove(&evicted.id).is_some(), "{evicted:?}");
                            assert!(matches!(
                                evicted.reject,
                                Reject::WaitExceedsDeadline { class, .. }
                                    if class.index() >= priority.class.index()
                            ));
                        }
                        self.waiting.insert(
                            id,
                            Waiting {
                                enqueued: self.now,
                                bound: bound(&self.settings, priority),
                            },
                        );
                    }
                    Err(Reject::WaitExceedsDeadline { retry_after, .. }) => {
                        assert!(retry_after >= self.service);
                    }
                    Err(other) => panic!("unexpected refusal {other:?}"),
                }
                self.drain();
            }
            Op::Cancel { pick } => {
                if !self.waiting.is_empty() {
                    let id = *self.waiting.keys().nth(pick % self.waiting.len()).unwrap();
                    self.waiting.remove(&id);
                    assert!(self.state.cancel(id).is_some());
                    self.drain();
                }
            }
        }
        let snapshot = self.state.snapshot(self.now);
        assert_eq!(snapshot.depth() as usize, self.waiting.len());
        assert_eq!(snapshot.in_flight as usize, self.running.len());
        assert!(self.state.tracked_senders() <= self.waiting.len());
    }
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(1_000),
        ..ProptestConfig::default()
    })]

    /// While permits turn over as estimated, every admitted job starts within its bound, the
    /// reserved permits never go to lower classes, and nothing is left behind.
    #[test]
    fn admitted_jobs_start_within_their_bound_and_nothing_leaks(
        setup in setup(),
        ops in prop::collection::vec(op(), 1..150),
        cold in any::<bool>(),
    ) {
        let mut model = Model::starting(setup, cold);
        for op in ops {
            model.apply(op);
        }
        // Let everything run to its end: every waiting job still starts within its bound.
        let far = model.now + Duration::from_secs(3_600);
        model.advance(far);
        prop_assert!(model.waiting.is_empty());
        prop_assert!(model.running.is_empty());
        let snapshot = model.state.snapshot(model.now);
        prop_assert_eq!(snapshot.depth(), 0);
        prop_assert_eq!(snapshot.in_flight, 0);
        prop_assert_eq!(snapshot.lower_in_flight, 0);
        prop_assert_eq!(snapshot.queued_tokens, 0);
        prop_assert_eq!(snapshot.in_flight_tokens, 0);
        prop_assert_eq!(model.state.tracked_senders(), 0);
    }

    /// Cancelling waiting jobs in any order returns their places, tokens and sender state.
    #[test]
    fn cancelling_every_waiting_job_leaves_nothing(
        setup in setup(),
        ops in prop::collection::vec(op(), 1..80),
        order in any::<u64>(),
    ) {
        let mut model = Model::new(setup);
        for op in ops {
            if let Op::Submit { .. } = op {
                model.apply(op);
            }
        }
        let mut ids: Vec<u64> = model.waiting.keys().copied().collect();
        let len = ids.len().max(1);
        ids.rotate_left((order as usize) % len);
        for id in ids {
            if model.waiting.remove(&id).is_some() {
                prop_assert!(model.state.cancel(id).is_some());
                prop_assert!(model.state.cancel(id).is_none());
                model.drain();
            }
        }
        for (_, job) in std::mem::take(&mut model.running) {
            model.state.release(job.slot, 1, None, job.ends.max(model.now));
        }
        model.drain();
        // Jobs that started while others were cancelled are run to their end too.
        model.advance(model.now + Duration::from_secs(3_600));
        let snapshot = model.state.snapshot(model.now);
        prop_assert_eq!(snapshot.depth(), 0);
        prop_assert_eq!(snapshot.in_flight, 0);
        prop_assert_eq!(snapshot.queued_tokens, 0);
        prop_assert_eq!(model.state.tracked_senders(), 0);
    }

    /// At equal priority, senders that keep work waiting are served in proportion to their
    /// weights.
    #[test]
    fn served_counts_follow_the_weights(
        weights in prop::collection::vec(1u32..6, 2..5),
        concurrency in 1u32..4,
        rounds in 200usize..400,
    ) {
        let settings = SchedulerSettings {
            concurrency,
            max_queue: 256,
            max_queued_tokens: 1_000_000,
            max_inflight_tokens: 100_000,
            ..SchedulerSettings::default()
        };
        let mut state = SchedulerState::<()>::new(settings);
        let now = Instant::now();
        let mut next_id = 0u64;
        let mut sender_of = BTreeMap::new();
        let mut submit = |state: &mut SchedulerState<()>, sender: usize, sender_of: &mut BTreeMap<u64, usize>| {
            let spec = JobSpec {
                sender: sender as u64 + 1,
                weight: weights[sender],
                ..JobSpec::new(1, Lane::Short, None)
            };
            state.submit(next_id, spec, now, None).unwrap();
            sender_of.insert(next_id, sender);
            next_id += 1;
        };
        // Every sender keeps 8 jobs waiting; each finished job is replaced by its sender.
        for sender in 0..weights.len() {
            for _ in 0..8 {
                submit(&mut state, sender, &mut sender_of);
            }
        }
        let mut served = vec![0u64; weights.len()];
        let mut running = Vec::new();
        for _ in 0..rounds {
            while let Some(a) = state.next(now) {
                let sender = sender_of[&a.id];
                served[sender] += 1;
                running.push((a.slot, sender));
            }
            let (slot, sender) = running.remove(0);
            state.release(slot, 1, None, now);
            submit(&mut state, sender, &mut sender_of);
        }
        let total: u64 = served.iter().sum();
        let weight_sum: u32 = weights.iter().sum();
        for (sender, count) in served.iter().enumerate() {
            let expected = total as f64 * f64::from(weights[sender]) / f64::from(weight_sum);
            prop_assert!(
                (*count as f64 - expected).abs() <= 2.0 + f64::from(concurrency),
                "sender {sender} (weight {}) served {count} of {total}, expected about {expected:.1} ({served:?}, weights {weights:?})",
                weights[sender]
            );
        }
    }
}
